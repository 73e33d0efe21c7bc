//! Settings as given, and settings checked: the one shape every configurable part of the
//! crate follows (after linfa's `ParamGuard`).
//!
//! A settings type `XParams` has public fields, a `Default` and infallible `with_…` setters; it
//! may hold any value. [`Check::check`] validates every value once and returns a
//! [`Checked<XParams>`], which cannot be built any other way outside the crate and cannot be
//! changed afterwards, so the code that runs with it never checks again. Each module names its
//! checked type (`TrainConfig = Checked<TrainParams>`, `BoxLbfgs = Checked<BoxLbfgsParams>`, …).
//!
//! ```
//! use blindspot::nn::TrainParams;
//! use blindspot::Check;
//!
//! let config = TrainParams::new(5, 64, 0.1).check()?;
//! assert_eq!(config.epochs, 5); // the checked values, read through `Deref`
//! assert!(TrainParams::new(0, 64, 0.1).check().is_err());
//! # Ok::<(), blindspot::Error>(())
//! ```

use std::ops::Deref;

use crate::error::Result;

/// Settings that validate themselves into a form that cannot be invalid.
pub trait Check {
    /// The validated settings (in this crate always a [`Checked`] of `Self`).
    type Checked;

    /// Validates every value once.
    ///
    /// # Errors
    ///
    /// [`crate::Error::InvalidParameter`] naming the first bad value (each implementation
    /// lists its bounds).
    fn check(self) -> Result<Self::Checked>;
}

/// Settings that passed [`Check::check`]: read-only (through [`Deref`] or
/// [`Checked::params`]), and only the crate's `check` implementations make one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Checked<P>(P);

impl<P> Checked<P> {
    /// Wraps settings the caller has just validated (or valid constants).
    pub(crate) const fn assume_valid(params: P) -> Self {
        Checked(params)
    }

    /// The validated values.
    pub fn params(&self) -> &P {
        &self.0
    }

    /// The values, to change and check again.
    pub fn into_params(self) -> P {
        self.0
    }
}

impl<P> Deref for Checked<P> {
    type Target = P;

    fn deref(&self) -> &P {
        &self.0
    }
}
