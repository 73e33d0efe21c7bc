//! Adapters that bring a model from outside the crate to its trait API, so that the attack,
//! the transfer tables and the probe run on it unchanged.
//!
//! - [`FiniteDifference`]: any [`Classifier`](crate::Classifier) (a forward pass only) becomes
//!   [`Differentiable`](crate::Differentiable) by batched central differences. Slow, but exact
//!   enough for the attack.
//! - `CandleModel` (cargo feature `candle`): a [candle](https://docs.rs/candle-core) model,
//!   anything implementing `candle_core::Module`, with input gradients by candle's autograd,
//!   on any candle device.
//! - [`Counting`]: any model, unchanged, with counters of its calls and of the rows they
//!   evaluated, to see how an attack batches its work.
//!
//! Weights trained elsewhere (PyTorch, NumPy) can instead be loaded into the crate's own
//! [`Network`](crate::nn::Network): see [`import`](crate::import).

mod counting;
mod finite_diff;

pub use counting::{CallCounts, Counting};

pub use finite_diff::{
    FiniteDifference, FiniteDifferenceScratch, DEFAULT_CHUNK, DEFAULT_STEP, MAX_CHUNK, MAX_SCRATCH,
};

#[cfg(feature = "candle")]
mod candle;

#[cfg(feature = "candle")]
pub use self::candle::{array_from_tensor, tensor_from_array, CandleModel};
