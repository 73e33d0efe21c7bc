//! # blindspot
//!
//! Find and study the blind spots of neural networks, after Szegedy et al., *Intriguing
//! properties of neural networks* (2013): adversarial examples found by box-constrained
//! L-BFGS, what single hidden units encode compared with random directions, and per-layer
//! stability bounds.
//!
//! The modules, one line each, in the order data flows through them: each uses only those
//! above it, and [`optim`] none of them (only [`error`] reaches into it, to keep its error as a
//! source). The README's "newcomer's map" says where each concept's files are.
//! - [`error`]: the crate's [`Error`] and [`Result`].
//! - [`io`]: files written atomically, read only if regular, and hardened `.npz` reading
//!   ([`io::ModelFile`]: a saved model's named arrays and header).
//! - [`params`]: the one shape of settings: [`Check`] turns settings as given into
//!   [`Checked`] ones that cannot be invalid.
//! - [`data`]: IDX files (raw or gzip), [`data::Dataset`] with seeded batches, [`data::Mnist`]
//!   (and, with the `download` feature, fetched from mirrors with checked digests).
//! - [`model`]: the trait API. [`Classifier`] (logits, predict), [`Differentiable`] (loss toward
//!   a label and its input gradient: what attacks need), [`Representation`] (hidden
//!   activations: what probes need). Implement them and the modules below take your model.
//! - [`nn`]: [`nn::Network`], stacks of dense, convolution, max-pooling and activation layers
//!   with one hand-written backpropagation engine, named as in the paper (`"FC100-100-10"`,
//!   `"CONV16-32-FC128-10"`), the autoencoder, a seeded SGD trainer and `.npz` persistence.
//! - [`import`]: weights trained elsewhere (a PyTorch `state_dict` as `.npz`, or ONNX) into a
//!   network.
//! - [`attack`]: [`attack::BoxLbfgs`] (the paper's method), [`attack::Fgsm`],
//!   [`attack::GaussianNoise`], the paper's distortion and transfer between models.
//! - [`adapters`]: models from elsewhere behind the traits: a forward pass only
//!   ([`adapters::FiniteDifference`]), a call counter, or a candle model (feature `candle`).
//! - [`probe`]: §3, what single units encode against random directions, measured.
//! - [`spectral`]: §4.3, per-layer upper Lipschitz bounds (power iteration, Fourier for
//!   convolutions).
//! - [`image`]: PNG grids of images and magnified perturbations.
//! - [`adversarial_training`]: §4.2, training on adversarial examples (pools per layer, or
//!   one-step FGSM).
//! - [`zoo`]: the paper's models with their training recipes, trained once and cached.
//! - `plot` (feature `plot`): learning curves, robust-accuracy curves and distortion
//!   histograms as SVG or PNG.
//! - [`optim`]: [`optim::LBfgsB`], L-BFGS-B for argmin and as an ask/tell state machine.
//!
//! Every fallible function returns [`Result`] with a typed [`Error`]; bad input (a wrong
//! shape, NaN, a label out of range, a corrupt file) is an error, never a panic.
//!
//! That includes hostile input: sizes a file or a caller can set are checked before anything
//! is allocated from them (an IDX header against its file and gzip ratio, an npy header
//! against its zip member), settings are bounded from above as well as below, and a user
//! model's outputs are checked where the crate consumes them (see
//! [`model::checked_logits`]). The fuzz targets in `fuzz/` (run with `scripts/fuzz.sh`)
//! exercise the file readers and model construction.
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs)]
pub mod adapters;
pub mod adversarial_training;
pub mod attack;
pub mod data;
pub mod error;
pub mod image;
pub mod import;
pub mod io;
pub mod model;
pub mod nn;
pub mod optim;
pub mod params;
#[cfg(feature = "plot")]
pub mod plot;
pub mod probe;
pub mod spectral;
pub mod zoo;

pub use error::{Error, Result};
pub use model::{Classifier, Differentiable, Representation};
pub use params::{Check, Checked};

/// The ndarray this crate's API speaks (its arrays and views in every signature). Use it
/// through this path so that your arrays are the crate's version: a different major version
/// added to your own `Cargo.toml` is a different type.
pub use ndarray;

/// The candle this crate's [`adapters::CandleModel`] adapts (cargo feature `candle`).
#[cfg(feature = "candle")]
pub use candle_core;
/// candle's layers, of the version [`adapters::CandleModel`] was built against (cargo feature
/// `candle`).
#[cfg(feature = "candle")]
pub use candle_nn;

/// The README's example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctest;
