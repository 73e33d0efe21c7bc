//! Optimisers.
//!
//! [`LBfgsB`] is a bound-constrained limited-memory BFGS solver for `argmin`, used by the
//! crate's box-constrained adversarial search.

mod lbfgsb;

pub use lbfgsb::{LBfgsB, LbfgsbError};
