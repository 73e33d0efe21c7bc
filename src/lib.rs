//! # blindspot
//!
//! Find and study the blind spots of neural networks, after Szegedy et al., *Intriguing
//! properties of neural networks* (2013).
pub mod attack;
pub mod data;
pub mod error;
pub mod image;
pub mod model;
pub mod nn;
pub mod optim;
pub mod probe;
pub mod spectral;

pub use error::{Error, Result};
pub use model::{Classifier, Differentiable, Representation};

/// The README's example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctest;
