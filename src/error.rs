//! The crate's error type: every failure on bad input is one of these, never a panic.

use std::fmt::Display;
use std::path::PathBuf;

/// Everything that can go wrong in `blindspot`, with enough context to say what was wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An array had the wrong shape or length.
    #[error("shape mismatch in {what}: expected {expected}, got {got}")]
    Shape {
        /// Which argument or array.
        what: String,
        /// The shape that was required.
        expected: String,
        /// The shape that was given.
        got: String,
    },
    /// A value that must be finite was NaN or infinite.
    #[error("non-finite value in {what}")]
    NonFinite {
        /// Where the value was found.
        what: String,
    },
    /// A class label was not below the number of classes.
    #[error("{what} is {label}, out of range 0..{classes} for {classes} classes")]
    LabelOutOfRange {
        /// Which label: `"true label"`, `"target label"`, `"label of row 3"`, ….
        what: String,
        /// The offending label.
        label: usize,
        /// The number of classes of the model or dataset.
        classes: usize,
    },
    /// A dataset declares more classes than the model it trains has outputs.
    #[error(
        "the training set declares {dataset} classes but the model has {model} outputs \
         (its largest label is {largest_label}): declare the dataset with the model's number \
         of classes, or build a model with {dataset} outputs"
    )]
    ClassCount {
        /// The classes the dataset declares ([`Dataset::num_classes`](crate::data::Dataset::num_classes)).
        dataset: usize,
        /// The model's outputs ([`Classifier::num_classes`](crate::Classifier::num_classes)).
        model: usize,
        /// The largest label the dataset really holds.
        largest_label: usize,
    },
    /// A hyperparameter or option was outside its valid range.
    #[error("invalid parameter `{name}`: {reason}")]
    InvalidParameter {
        /// The parameter's name.
        name: &'static str,
        /// Why the value is invalid.
        reason: String,
    },
    /// Box constraints were inconsistent (NaN, lower > upper, lengths differ).
    #[error("invalid bounds: {0}")]
    InvalidBounds(String),
    /// A data file was malformed: wrong magic, truncated, inconsistent.
    #[error("data file {}: {problem}", path.display())]
    DataFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// A dataset (or subset) with no examples where some are needed.
    #[error("empty dataset: {0}")]
    EmptyDataset(String),
    /// An input that must hold at least one element was empty: a batch of no rows, a vector
    /// of no entries, a sample of no values, a chart of no points.
    #[error("empty input: {what}")]
    EmptyInput {
        /// Which input was empty, and of what: `"input batch has no rows"`,
        /// `"bootstrap of no values"`, ….
        what: String,
    },
    /// A saved model could not be read back: missing array, wrong shape, bad architecture.
    #[error("model file {}: {problem}", path.display())]
    ModelFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// A model name such as `"FC100-100-10"` could not be parsed.
    #[error("cannot parse model name {name:?}: {reason}")]
    ModelName {
        /// The name as given.
        name: String,
        /// Why it does not parse.
        reason: String,
    },
    /// A file could not be downloaded (cargo feature `download`): the server answered with an
    /// error, the connection failed or timed out, the body was cut short, or its content did
    /// not match the published SHA-256.
    #[error("download of {file} from {url}: {problem}")]
    Download {
        /// The file's name, as in `train-images-idx3-ubyte.gz`.
        file: String,
        /// The URL tried last.
        url: String,
        /// What went wrong there (and, with several mirrors, at the others).
        problem: String,
    },
    /// An operating-system I/O error on a path.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A path to be read is not a regular file (a FIFO, a device, a directory, a socket):
    /// refused before reading, since a FIFO without a writer would block forever and a device
    /// such as `/dev/zero` never ends.
    #[error("{} is not a regular file ({kind}); only regular files are read", path.display())]
    NotRegularFile {
        /// The path.
        path: PathBuf,
        /// What it is instead: "a FIFO", "a directory", "a character device", …
        kind: &'static str,
    },
    /// An iterative method used up its iteration budget without meeting its tolerance.
    #[error(
        "{what} did not reach relative tolerance {tolerance} in {iterations} iterations \
         (last estimate {last_estimate})"
    )]
    NotConverged {
        /// The method: `"power iteration"`, `"convolution power iteration"`.
        what: &'static str,
        /// The iterations run: the whole budget.
        iterations: usize,
        /// The relative tolerance the change between two iterations had to meet.
        tolerance: f64,
        /// The estimate after the last iteration, not to be trusted to the tolerance.
        last_estimate: f64,
    },
    /// The L-BFGS-B solver refused a call: the values of a point were told when none was
    /// waiting for them. (Its errors about settings, bounds, shapes and non-finite values
    /// become [`Error::InvalidParameter`], [`Error::InvalidBounds`], [`Error::Shape`] and
    /// [`Error::NonFinite`].)
    #[error("L-BFGS-B solver, {context}: {source}")]
    Solver {
        /// What the crate was doing with the solver.
        context: &'static str,
        /// The solver's error.
        #[source]
        source: crate::optim::LbfgsbError,
    },
    /// A model from another framework (cargo feature `candle`) failed inside that
    /// framework: a module that rejects the input shape, a device or dtype error.
    #[error("{framework} failed during {during}: {source}")]
    Framework {
        /// The framework: `"candle"`.
        framework: &'static str,
        /// What the crate asked of it: `"the forward pass"`, `"the backward pass"`, ….
        during: &'static str,
        /// The framework's own error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A broken internal invariant: a bug in `blindspot`, never a consequence of the input.
    /// Please report it.
    #[error("internal error (a bug in blindspot): {what}")]
    Internal {
        /// The invariant that did not hold.
        what: &'static str,
    },
    /// Drawing a figure failed (cargo feature `plot`).
    #[error("plot failed: {reason}")]
    Plot {
        /// What the plotting library or the PNG encoder reported.
        reason: String,
    },
    /// An imported model uses an operation the crate's network does not have.
    #[error(
        "model file {}: node {node:?} is a {op}, which cannot be imported (supported: {supported})",
        path.display()
    )]
    UnsupportedOp {
        /// The file.
        path: PathBuf,
        /// The node's name (or its first output's, for an unnamed node).
        node: String,
        /// Its operation type.
        op: String,
        /// The operations that can be imported.
        supported: String,
    },
    /// An imported model's graph does not chain into a network: a dangling, cyclic or branching
    /// edge, shapes that do not fit, or layers in an order the network cannot hold.
    #[error("model file {}: at {edge}: {problem}", path.display())]
    ImportGraph {
        /// The file.
        path: PathBuf,
        /// The edge (value name) or node where the problem was found.
        edge: String,
        /// What is wrong.
        problem: String,
    },
    /// An imported model's logits differ from the reference logits saved by its framework.
    #[error(
        "imported model disagrees with the reference: {agree}/{checked} inputs get the same \
         class, largest logit difference {max_logit_diff:e} exceeds the tolerance {tolerance:e}"
    )]
    Disagreement {
        /// Inputs whose predicted class is the same.
        agree: usize,
        /// Inputs compared.
        checked: usize,
        /// Largest absolute difference between the two logits (NaN counts as infinite).
        max_logit_diff: f32,
        /// The tolerance it was held to.
        tolerance: f32,
    },
}

/// The solver's errors become the crate's variants of the same name and message, so `?` on
/// an [`LBfgsB`](crate::optim::LBfgsB) setting works in functions returning [`Result`];
/// `NotAsked`, which has no such variant, becomes [`Error::Solver`] keeping it as its source.
impl From<crate::optim::LbfgsbError> for Error {
    fn from(e: crate::optim::LbfgsbError) -> Self {
        use crate::optim::LbfgsbError as E;
        match e {
            E::InvalidBounds(msg) => Error::InvalidBounds(msg),
            E::InvalidParameter { name, reason } => Error::InvalidParameter { name, reason },
            E::Shape {
                what,
                expected,
                got,
            } => Error::shape(what, expected, got),
            E::NonFinite { what } => Error::NonFinite { what },
            e @ E::NotAsked(_) => Error::Solver {
                context: "telling a point's values",
                source: e,
            },
        }
    }
}

/// `Result` with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn shape(
        what: impl Into<String>,
        expected: impl ToString,
        got: impl ToString,
    ) -> Self {
        Error::Shape {
            what: what.into(),
            expected: expected.to_string(),
            got: got.to_string(),
        }
    }

    pub(crate) fn label(what: impl Into<String>, label: usize, classes: usize) -> Self {
        Error::LabelOutOfRange {
            what: what.into(),
            label,
            classes,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn empty(what: impl Into<String>) -> Self {
        Error::EmptyInput { what: what.into() }
    }

    pub(crate) fn param(name: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidParameter {
            name,
            reason: reason.into(),
        }
    }
}

/// `Ok` if the setting `name` is finite and > 0, else [`Error::InvalidParameter`] giving `v`:
/// one wording for the many settings that must be positive.
pub(crate) fn check_positive<T: Copy + Into<f64> + Display>(
    name: &'static str,
    v: T,
) -> Result<()> {
    let f: f64 = v.into();
    if f.is_finite() && f > 0.0 {
        Ok(())
    } else {
        Err(Error::param(
            name,
            format!("must be finite and > 0, got {v}"),
        ))
    }
}

/// `Ok` if the setting `name` is finite and >= 0, else [`Error::InvalidParameter`] giving `v`.
pub(crate) fn check_non_negative<T: Copy + Into<f64> + Display>(
    name: &'static str,
    v: T,
) -> Result<()> {
    let f: f64 = v.into();
    if f.is_finite() && f >= 0.0 {
        Ok(())
    } else {
        Err(Error::param(
            name,
            format!("must be finite and >= 0, got {v}"),
        ))
    }
}

/// `Ok` if the count `name` is in `1..=max`, else [`Error::InvalidParameter`] saying so.
pub(crate) fn check_count<T>(name: &'static str, n: T, max: T) -> Result<()>
where
    T: Copy + PartialOrd + Display + From<u8>,
{
    if n < T::from(1) || n > max {
        Err(Error::param(name, format!("must be in 1..={max}, got {n}")))
    } else {
        Ok(())
    }
}

/// `Ok` if the count `name` is at least 1, else [`Error::InvalidParameter`].
pub(crate) fn check_nonzero(name: &'static str, n: usize) -> Result<()> {
    if n == 0 {
        Err(Error::param(name, "must be at least 1"))
    } else {
        Ok(())
    }
}
