//! The solver's own error type, so that `optim` depends on nothing else in the crate.

/// What can be wrong with the settings of an [`LBfgsB`](super::LBfgsB), with the starting
/// point it is given, or with the values told to it.
///
/// The messages are those of the crate's `Error` variants of the same names, into which
/// each of these converts (`NotAsked`, a mistake in the calling code, becomes
/// `Error::Solver`, keeping it as its source).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum LbfgsbError {
    /// The box was inconsistent: lengths differ, a bound is NaN, a lower bound is `+∞`, an
    /// upper bound is `−∞`, or a lower bound is above its upper bound.
    #[error("invalid bounds: {0}")]
    InvalidBounds(String),
    /// A setting was outside its valid range.
    #[error("invalid parameter `{name}`: {reason}")]
    InvalidParameter {
        /// The setting's name.
        name: &'static str,
        /// Why the value is invalid.
        reason: String,
    },
    /// A vector had the wrong length.
    #[error("shape mismatch in {what}: expected {expected}, got {got}")]
    Shape {
        /// Which vector.
        what: &'static str,
        /// The length the box requires.
        expected: usize,
        /// The length given.
        got: usize,
    },
    /// A value that must be finite was NaN or infinite.
    #[error("non-finite value in {what}")]
    NonFinite {
        /// Where the value was found.
        what: String,
    },
    /// [`LBfgsB::tell`](super::LBfgsB::tell) was called when no point was waiting for its
    /// values: before a run was started, after it ended, or twice for one
    /// [`ask`](super::LBfgsB::ask).
    #[error("nothing to tell: {0}")]
    NotAsked(&'static str),
}

impl LbfgsbError {
    pub(super) fn param(name: &'static str, reason: impl Into<String>) -> Self {
        LbfgsbError::InvalidParameter {
            name,
            reason: reason.into(),
        }
    }
}
