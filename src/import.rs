//! Weights trained elsewhere, loaded into the crate's models: a plain `.npz` of named arrays, as
//! `numpy.savez(path, **{k: v.numpy() for k, v in model.state_dict().items()})` writes it from
//! PyTorch (`scripts/export_torch.py` does exactly that).
//!
//! Nothing is guessed: the caller names, for every dense layer, the array holding its weights
//! and the one holding its bias ([`DenseNames`]), and says how the weights are laid out
//! ([`WeightLayout`]: PyTorch's `nn.Linear` stores `out × in`, the crate `in × out`). An array
//! that is missing or does not fit is an [`Error::ModelFile`] naming it.
//!
//! ```no_run
//! use blindspot::import::{DenseNames, NpzWeights, WeightLayout};
//! use blindspot::nn::Architecture;
//!
//! // A PyTorch nn.Sequential(Linear(784, 100), Sigmoid(), Linear(100, 100), Sigmoid(),
//! // Linear(100, 10)) saved with numpy.savez: arrays "0.weight", "0.bias", "2.weight", …
//! let arch = Architecture::parse("FC100-100-10", 784)?;
//! let weights = NpzWeights::open("torch_fc100.npz")?;
//! let layers = [DenseNames::torch("0"), DenseNames::torch("2"), DenseNames::torch("4")];
//! let mlp = weights.mlp(arch, &layers, WeightLayout::OutIn)?;
//! # Ok::<(), blindspot::Error>(())
//! ```

use std::path::{Path, PathBuf};

use ndarray::{Array2, ArrayD, ArrayView2, Axis, Ix2};

use crate::error::{Error, Result};
use crate::model::{check_input_batch, Classifier};
use crate::nn::{Architecture, Network};

pub mod onnx;
mod onnx_proto;
pub mod torch;

/// How an imported model's logits compare with its framework's on a reference batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Agreement {
    /// Inputs whose predicted class (the largest logit) is the same.
    pub agree: usize,
    /// Inputs compared.
    pub checked: usize,
    /// Largest absolute difference between corresponding logits.
    pub max_logit_diff: f32,
}

/// Checks `model` against logits computed by the framework it came from: `inputs` (`n × d`,
/// the model's input layout) and the framework's `logits` (`n × classes`). Returns the
/// agreement when every logit is within `tolerance` of the reference.
///
/// # Errors
///
/// [`Error::Disagreement`] with the agreement count and the largest logit difference when it
/// exceeds `tolerance` (or a logit is NaN); [`Error::Shape`] if the inputs do not fit the
/// model or the logits are not `n × classes`; [`Error::EmptyInput`] for no rows;
/// [`Error::InvalidParameter`] for a negative or non-finite tolerance; the model's own errors.
pub fn verify<M: Classifier + ?Sized>(
    model: &M,
    inputs: ArrayView2<'_, f32>,
    logits: ArrayView2<'_, f32>,
    tolerance: f32,
) -> Result<Agreement> {
    if !tolerance.is_finite() || tolerance < 0.0 {
        return Err(Error::param(
            "tolerance",
            format!("must be finite and non-negative, got {tolerance}"),
        ));
    }
    check_input_batch(inputs, model.input_dim())?;
    let classes = model.num_classes();
    if logits.dim() != (inputs.nrows(), classes) {
        return Err(Error::shape(
            "reference logits",
            format!("{} × {classes}", inputs.nrows()),
            format!("{} × {}", logits.nrows(), logits.ncols()),
        ));
    }
    let ours = model.logits(inputs)?;
    let argmax = |r: ndarray::ArrayView1<'_, f32>| {
        r.iter()
            .enumerate()
            .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &v)| {
                if v > bv {
                    (i, v)
                } else {
                    (bi, bv)
                }
            })
            .0
    };
    let agree = ours
        .axis_iter(Axis(0))
        .zip(logits.axis_iter(Axis(0)))
        .filter(|(a, b)| argmax(a.view()) == argmax(b.view()))
        .count();
    let max_logit_diff = ours.iter().zip(logits.iter()).fold(0.0f32, |m, (a, b)| {
        let d = (a - b).abs();
        if d.is_nan() {
            f32::INFINITY
        } else {
            m.max(d)
        }
    });
    let a = Agreement {
        agree,
        checked: inputs.nrows(),
        max_logit_diff,
    };
    if max_logit_diff > tolerance {
        return Err(Error::Disagreement {
            agree,
            checked: a.checked,
            max_logit_diff,
            tolerance,
        });
    }
    Ok(a)
}

/// How a dense layer's weight matrix is stored in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightLayout {
    /// `out × in`: PyTorch's `nn.Linear.weight` (and candle's `Linear`). Transposed on import.
    OutIn,
    /// `in × out`: the crate's own layout (and Keras / JAX / Flax kernels). Taken as is.
    InOut,
}

/// The names of one dense layer's arrays in the file (not a layer: [`crate::nn::Dense`] is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DenseNames {
    /// The weight matrix's name, e.g. `"fc1.weight"`.
    pub weight: String,
    /// The bias vector's name, e.g. `"fc1.bias"`; `None` for a layer without bias (zeros).
    pub bias: Option<String>,
}

/// The former name of [`DenseNames`], which read as the layer [`crate::nn::Dense`].
#[deprecated(
    since = "0.1.1",
    note = "renamed DenseNames: it holds a layer's array names"
)]
pub type Dense = DenseNames;

impl DenseNames {
    /// A layer whose arrays are called `weight` and `bias`.
    pub fn new(weight: impl Into<String>, bias: impl Into<String>) -> Self {
        DenseNames {
            weight: weight.into(),
            bias: Some(bias.into()),
        }
    }

    /// A layer without a bias (PyTorch's `bias=False`): the bias is zero.
    pub fn without_bias(weight: impl Into<String>) -> Self {
        DenseNames {
            weight: weight.into(),
            bias: None,
        }
    }

    /// PyTorch's naming for module `prefix`: `"{prefix}.weight"` and `"{prefix}.bias"`
    /// (`DenseNames::torch("fc1")`, or `DenseNames::torch("net.0")` inside an `nn.Sequential`).
    pub fn torch(prefix: &str) -> Self {
        DenseNames::new(format!("{prefix}.weight"), format!("{prefix}.bias"))
    }
}

/// The named `f32` arrays of an `.npz` file, for building models from.
#[derive(Debug, Clone)]
pub struct NpzWeights {
    path: PathBuf,
    arrays: Vec<(String, ArrayD<f32>)>,
}

impl NpzWeights {
    /// Reads every array of the file (`f32`, or `f64`, `i64`, `u8` converted to `f32`; any
    /// shape).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the file cannot be opened; [`Error::NotRegularFile`] if the path is a
    /// FIFO, device, directory or socket; [`Error::ModelFile`] if it is not an
    /// uncompressed `.npz` (`numpy.savez`, not `savez_compressed`) or an array is not
    /// `f32`, `f64`, `i64` or `u8` (all read as `f32`).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let arrays = read_npz(path)?;
        Ok(NpzWeights {
            path: path.to_path_buf(),
            arrays,
        })
    }

    /// Arrays given directly (named as they would be in a file), e.g. from another reader.
    /// `path` is only used in error messages.
    pub fn from_arrays(path: impl Into<PathBuf>, arrays: Vec<(String, ArrayD<f32>)>) -> Self {
        NpzWeights {
            path: path.into(),
            arrays,
        }
    }

    /// The file's array names, in file order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.arrays.iter().map(|(n, _)| n.as_str())
    }

    /// The array called `name`.
    ///
    /// # Errors
    ///
    /// [`Error::ModelFile`] naming `name` and listing the names the file has.
    pub fn get(&self, name: &str) -> Result<&ArrayD<f32>> {
        self.arrays
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| a)
            .ok_or_else(|| {
                let have: Vec<&str> = self.names().collect();
                self.error(format!(
                    "missing array `{name}` (the file has: {})",
                    have.join(", ")
                ))
            })
    }

    /// One dense layer `fan_in → fan_out` in the crate's layout: weights `fan_in × fan_out`
    /// (transposed from [`WeightLayout::OutIn`]) and the bias as a `1 × fan_out` row. The bias
    /// may be stored as a vector of `fan_out` or a `1 × fan_out` matrix.
    ///
    /// # Errors
    ///
    /// [`Error::ModelFile`] naming the array that is missing, has the wrong shape (with the
    /// expected and actual shapes), or holds a NaN or infinity.
    pub fn dense(
        &self,
        layer: &DenseNames,
        fan_in: usize,
        fan_out: usize,
        layout: WeightLayout,
    ) -> Result<(Array2<f32>, Array2<f32>)> {
        let w = self.get(&layer.weight)?;
        let (rows, cols, what) = match layout {
            WeightLayout::OutIn => (fan_out, fan_in, "out × in"),
            WeightLayout::InOut => (fan_in, fan_out, "in × out"),
        };
        if w.shape() != [rows, cols] {
            return Err(self.error(format!(
                "array `{}` has shape {:?}, expected [{rows}, {cols}] ({what}, for a layer \
                 {fan_in} → {fan_out})",
                layer.weight,
                w.shape()
            )));
        }
        self.check_finite(&layer.weight, w)?;
        let w = w
            .view()
            .into_dimensionality::<Ix2>()
            .expect("shape checked above");
        let w = match layout {
            WeightLayout::OutIn => w.t().as_standard_layout().into_owned(),
            WeightLayout::InOut => w.as_standard_layout().into_owned(),
        };
        let b = match &layer.bias {
            None => Array2::zeros((1, fan_out)),
            Some(name) => {
                let b = self.get(name)?;
                if b.shape() != [fan_out] && b.shape() != [1, fan_out] {
                    return Err(self.error(format!(
                        "array `{name}` has shape {:?}, expected [{fan_out}] (the bias of a \
                         layer {fan_in} → {fan_out})",
                        b.shape()
                    )));
                }
                self.check_finite(name, b)?;
                Array2::from_shape_vec((1, fan_out), b.iter().copied().collect())
                    .expect("length checked above")
            }
        };
        Ok((w, b))
    }

    /// An [`Network`] of architecture `arch` from `layers`, one [`DenseNames`] per dense layer, first to
    /// last (the hidden activation is the architecture's: set it with
    /// [`Architecture::with_activation`] to match the exported model).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] if `layers` does not have one entry per dense layer of
    /// `arch`; otherwise as [`NpzWeights::dense`].
    pub fn mlp(
        &self,
        arch: Architecture,
        layers: &[DenseNames],
        layout: WeightLayout,
    ) -> Result<Network> {
        let widths = arch.widths();
        if layers.len() != widths.len() - 1 {
            return Err(Error::param(
                "layers",
                format!(
                    "{} has {} dense layers, {} were named",
                    arch,
                    widths.len() - 1,
                    layers.len()
                ),
            ));
        }
        let mut params = Vec::with_capacity(2 * layers.len());
        for (layer, pair) in layers.iter().zip(widths.windows(2)) {
            let (w, b) = self.dense(layer, pair[0], pair[1], layout)?;
            params.push(w);
            params.push(b);
        }
        Network::from_params(arch, params)
    }

    fn check_finite(&self, name: &str, a: &ArrayD<f32>) -> Result<()> {
        if a.iter().all(|v| v.is_finite()) {
            Ok(())
        } else {
            Err(self.error(format!("array `{name}` holds a NaN or infinite value")))
        }
    }

    fn error(&self, problem: String) -> Error {
        Error::ModelFile {
            path: self.path.clone(),
            problem,
        }
    }
}

/// Reads all arrays of an `.npz` file by name, as `f32` (an `f64` array is converted).
///
fn read_npz(path: &Path) -> Result<Vec<(String, ArrayD<f32>)>> {
    // The size-checked reader of model files: an npy header's claimed shape is checked
    // against its member's real size before anything is allocated.
    crate::io::read_named_arrays(path)
}
