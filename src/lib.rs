//! # blindspot
//!
//! Find and study the blind spots of neural networks, after Szegedy et al., *Intriguing
//! properties of neural networks* (2013): adversarial examples found by box-constrained
//! L-BFGS, what single hidden units encode compared with random directions, and per-layer
//! stability bounds.
//!
//! The pieces:
//! - [`model`]: the trait API. [`Classifier`] (logits, predict), [`Differentiable`] (loss
//!   toward a label and its gradient with respect to the input: what attacks need) and
//!   [`Representation`] (hidden activations: what probes need). Implement them for your own
//!   model and the rest of the crate takes it unchanged.
//! - [`nn`]: networks as stacks of layers (dense, convolution, max-pooling, activation) and an
//!   autoencoder in pure ndarray with one hand-written backpropagation engine, named as in the
//!   paper (`"FC100-100-10"`, `"FC10(1e-4)"`, `"CONV16-32-FC128-10"`), a seeded SGD trainer,
//!   and `.npz` persistence.
//! - [`data`]: IDX files (raw or gzip), [`data::Dataset`] and [`data::Mnist`].
//! - [`optim`]: [`optim::LBfgsB`], L-BFGS-B for argmin.
//! - [`attack`]: [`attack::BoxLbfgs`] (the paper's method), [`attack::Fgsm`] (one
//!   signed-gradient step), [`attack::GaussianNoise`], and the paper's distortion measure.
//! - [`adversarial_training`]: training on adversarial examples, with a pool per layer feeding
//!   the layers above it as the paper did (§4.2), or one-step FGSM perturbations.
//! - [`image`]: PNG grids of images and magnified perturbations.
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
pub mod model;
pub mod nn;
pub mod optim;
pub mod probe;
pub mod spectral;
pub mod zoo;

pub use error::{Error, Result};
pub use model::{Classifier, Differentiable, Representation};

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
