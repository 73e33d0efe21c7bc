//! Optimisers.
//!
//! [`LBfgsB`] is a bound-constrained limited-memory BFGS solver for `argmin`, used by the
//! crate's box-constrained adversarial search. It can also be driven without `argmin`, in
//! reverse communication ([`LBfgsB::start`], [`LBfgsB::ask`] giving a [`Step`],
//! [`LBfgsB::tell`]; [`Stop`] says why a run ended), so that the caller evaluates the points
//! of many runs together. [`LbfgsbError`] is its error type; the crate's
//! `Error` converts from it, so `?` works in functions returning the crate's `Result`.
//!
//! This module depends on nothing else in the crate, so it can be read (or moved out) on its
//! own.

mod lbfgsb;

pub use lbfgsb::{LBfgsB, LbfgsbError, Step, Stop};
