//! A one-hidden-layer sigmoid autoencoder with hand-written backprop, and the paper's
//! `AE400-10` classifier built on its code.
//!
//! The autoencoder maps `x ↦ h = σ(x·W_enc + b_enc) ↦ x̂ = σ(h·W_dec + b_dec)`. Its
//! reconstruction loss is the per-pixel binary cross-entropy summed over the pixels,
//!
//! ```text
//! L(x) = −Σ_j [ x_j·ln x̂_j + (1 − x_j)·ln(1 − x̂_j) ]
//! ```
//!
//! which is the standard choice for MNIST autoencoders: pixels lie in `[0, 1]` so they can be
//! read as Bernoulli means, and paired with the sigmoid output the gradient with respect to
//! the output pre-activation is simply `x̂ − x` (no vanishing `σ'` factor as with squared
//! error). It is computed from the pre-activation `z` as `Σ softplus(z) − x·z`, so it never
//! takes `ln 0` even when the output saturates.

use ndarray::{s, Array1, Array2, ArrayView2, Axis, Zip};
use ndarray_rand::rand_distr::Uniform;
use ndarray_rand::RandomExt;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::data::Dataset;
use crate::error::{check_non_negative, Error, Result};
use crate::io::ModelFile;
use crate::model::check_input_batch;
use crate::nn::layer::{weight_decay, Dense, Layer};
use crate::nn::persist;
use crate::nn::stack::{check_grads, Stack, Workspace};
use crate::nn::{sigmoid, Activation, Trainable};

mod train;

pub use train::{train_ae_classifier, AeConfig, AeParams, AeReport, AeStage};

/// A sigmoid autoencoder `input → code → input` with untied encoder and decoder weights.
///
/// It is the layer stack `Dense → sigmoid → Dense` with a sigmoid cross-entropy loss on top,
/// run by the same engine as [`Network`]. Parameters are `[W_enc, b_enc, W_dec, b_dec]` (weights
/// `in × out`, biases `1 × out`), the same layout as [`Network`], so the generic trainer ([`fit`])
/// trains it and the encoder can be lifted into an `Network` unchanged. The objective is the mean
/// over a batch of the summed binary cross-entropy (see the module docs) plus `λ/2 · Σ θ²`
/// over every parameter, the same weight-decay convention as [`Network`].
///
/// ```
/// use blindspot::nn::Autoencoder;
/// use ndarray::Array2;
///
/// let ae = Autoencoder::new(16, 4, 1e-6, 7).unwrap();
/// let x = Array2::<f32>::from_elem((3, 16), 0.5);
/// assert_eq!(ae.encode(x.view()).unwrap().dim(), (3, 4));
/// assert_eq!(ae.reconstruct(x.view()).unwrap().dim(), (3, 16));
/// ```
///
/// [`Network`]: crate::nn::Network
/// [`fit`]: crate::nn::fit
#[derive(Debug, Clone, PartialEq)]
pub struct Autoencoder {
    weight_decay: f32,
    stack: Stack,
}

/// Buffers of an [`Autoencoder`]'s passes (see [`Workspace`]).
pub type AutoencoderWorkspace = Workspace;

/// The encoder's layers: the dense layer and its sigmoid.
const ENCODER: usize = 2;

/// `ln(1 + e^z)` without overflow for large `z` or loss of precision for very negative `z`.
#[inline]
fn softplus(z: f32) -> f32 {
    if z > 0.0 {
        z + (-z).exp().ln_1p()
    } else {
        z.exp().ln_1p()
    }
}

impl Autoencoder {
    /// A fresh autoencoder for inputs of width `input` with a `code`-unit hidden layer and
    /// weight decay `weight_decay`: Glorot-uniform weights and zero biases from a ChaCha8
    /// generator seeded with `seed` (the same seed gives the same autoencoder).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] if a width is 0, a weight matrix would have more than
    /// [`MAX_SIZE`](crate::nn::MAX_SIZE) entries, or λ is negative or not finite.
    pub fn new(input: usize, code: usize, weight_decay: f32, seed: u64) -> Result<Self> {
        if input == 0 || code == 0 {
            return Err(Error::param(
                "widths",
                format!("input and code widths must be at least 1, got {input} and {code}"),
            ));
        }
        if input
            .checked_mul(code)
            .is_none_or(|v| v > crate::nn::MAX_SIZE)
        {
            return Err(Error::param(
                "widths",
                format!("{input} × {code} weights are more than the crate's size limit"),
            ));
        }
        check_decay(weight_decay)?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        // Glorot: keeps the sigmoid pre-activations in the unsaturated range at the start.
        let limit = (6.0 / (input + code) as f32).sqrt();
        let dist = Uniform::new_inclusive(-limit, limit);
        let w_enc = Array2::random_using((input, code), dist, &mut rng);
        let w_dec = Array2::random_using((code, input), dist, &mut rng);
        Ok(Autoencoder::assemble(
            weight_decay,
            vec![
                w_enc,
                Array2::zeros((1, code)),
                w_dec,
                Array2::zeros((1, input)),
            ],
        ))
    }

    fn assemble(weight_decay: f32, params: Vec<Array2<f32>>) -> Self {
        let input = params[0].nrows();
        let mut p = params.into_iter();
        let mut dense = || {
            Layer::Dense(Dense {
                weight: p.next().expect("four arrays"),
                bias: p.next().expect("four arrays"),
            })
        };
        let enc = dense();
        let dec = dense();
        Autoencoder {
            weight_decay,
            stack: Stack::new(
                vec![enc, Layer::Activation(Activation::Sigmoid), dec],
                input,
            ),
        }
    }

    /// Builds an autoencoder from `[W_enc, b_enc, W_dec, b_dec]`, checking shapes and values.
    ///
    /// # Errors
    ///
    /// [`Error::Shape`] if the list or an array has the wrong shape, [`Error::NonFinite`] for
    /// a NaN or infinite parameter, [`Error::InvalidParameter`] for a bad λ.
    pub fn from_params(params: Vec<Array2<f32>>, weight_decay: f32) -> Result<Self> {
        check_decay(weight_decay)?;
        if params.len() != 4 {
            return Err(Error::shape("parameter list", "4 arrays", params.len()));
        }
        let (input, code) = params[0].dim();
        let expected = [(input, code), (1, code), (code, input), (1, input)];
        for (i, (p, want)) in params.iter().zip(expected).enumerate() {
            if p.dim() != want || p.is_empty() {
                return Err(Error::shape(
                    PARAM_NAMES[i],
                    format!("{want:?}"),
                    format!("{:?}", p.dim()),
                ));
            }
            if p.iter().any(|v| !v.is_finite()) {
                return Err(Error::NonFinite {
                    what: format!("autoencoder parameter {}", PARAM_NAMES[i]),
                });
            }
        }
        let params = params
            .into_iter()
            .map(|p| p.as_standard_layout().into_owned())
            .collect();
        Ok(Autoencoder::assemble(weight_decay, params))
    }

    fn dense(&self, i: usize) -> &Dense {
        match &self.stack.layers()[i] {
            Layer::Dense(d) => d,
            _ => unreachable!("layers 0 and 2 are dense"),
        }
    }

    /// Input (and output) width.
    pub fn input_dim(&self) -> usize {
        self.stack.input_dim()
    }

    /// Width of the code layer.
    pub fn code_dim(&self) -> usize {
        self.dense(0).outputs()
    }

    /// Weight decay λ.
    pub fn weight_decay(&self) -> f32 {
        self.weight_decay
    }

    /// The encoder's weights `input × code` and bias `1 × code`.
    pub fn encoder(&self) -> (&Array2<f32>, &Array2<f32>) {
        let d = self.dense(0);
        (&d.weight, &d.bias)
    }

    /// The decoder's weights `code × input` and bias `1 × input`.
    pub fn decoder(&self) -> (&Array2<f32>, &Array2<f32>) {
        let d = self.dense(2);
        (&d.weight, &d.bias)
    }

    /// Buffers for batches of up to `batch` rows.
    pub fn workspace(&self, batch: usize) -> AutoencoderWorkspace {
        self.stack.workspace(batch)
    }

    fn check_input(&self, x: ArrayView2<'_, f32>) -> Result<()> {
        self.stack.check_params()?;
        check_input_batch(x, self.input_dim())
    }

    /// Forward pass into the workspace: the code, the reconstruction `x̂` in the last slot,
    /// and each example's summed cross-entropy in `ws.losses`.
    fn forward_ws(&self, x: ArrayView2<'_, f32>, ws: &mut Workspace) -> Result<()> {
        let n = x.nrows();
        self.stack.prepare(ws, n)?;
        self.stack.forward(x, ws, self.stack.layers().len(), false);
        let last = self.stack.last_slot();
        let mut out = ws.acts[last].slice_mut(s![..n, ..]);
        // Loss from the pre-activation z (Σ softplus(z) − x·z), then z ← σ(z) in place.
        for ((mut z_row, x_row), loss) in out
            .axis_iter_mut(Axis(0))
            .zip(x.axis_iter(Axis(0)))
            .zip(ws.losses.iter_mut())
        {
            let mut sum = 0.0f32;
            Zip::from(&mut z_row).and(&x_row).for_each(|z, &xv| {
                sum += softplus(*z) - xv * *z;
                *z = sigmoid(*z);
            });
            *loss = sum;
        }
        Ok(())
    }

    /// The codes of a batch without checks, into a fresh array.
    fn encode_unchecked(&self, x: ArrayView2<'_, f32>) -> Result<Array2<f32>> {
        let mut ws = Workspace::default();
        self.stack.prepare(&mut ws, x.nrows())?;
        self.stack.forward(x, &mut ws, ENCODER, false);
        Ok(self.stack.output(&ws, ENCODER - 1, x.nrows()).to_owned())
    }

    /// The codes `σ(x·W_enc + b_enc)` of a batch `n × input_dim`, `n × code_dim`.
    ///
    /// # Errors
    ///
    /// [`Error::Shape`] for a wrong width, [`Error::EmptyInput`] for no rows,
    /// [`Error::NonFinite`] for NaN or infinite inputs.
    pub fn encode(&self, x: ArrayView2<'_, f32>) -> Result<Array2<f32>> {
        self.check_input(x)?;
        self.encode_unchecked(x)
    }

    /// The reconstructions `x̂` of a batch, each value in `(0, 1)`.
    ///
    /// # Errors
    ///
    /// As [`Autoencoder::encode`].
    pub fn reconstruct(&self, x: ArrayView2<'_, f32>) -> Result<Array2<f32>> {
        self.check_input(x)?;
        let mut ws = Workspace::default();
        self.forward_ws(x, &mut ws)?;
        let last = self.stack.last_slot();
        Ok(std::mem::take(&mut ws.acts[last]))
    }

    /// Per-example reconstruction losses (cross-entropy summed over pixels) of a batch.
    ///
    /// # Errors
    ///
    /// As [`Autoencoder::encode`].
    pub fn reconstruction_losses(&self, x: ArrayView2<'_, f32>) -> Result<Array1<f32>> {
        self.check_input(x)?;
        let mut ws = Workspace::default();
        self.forward_ws(x, &mut ws)?;
        Ok(ws.losses)
    }

    /// The reconstruction error on a dataset: the mean over examples of the cross-entropy
    /// summed over pixels (the training objective without weight decay), in nats per image.
    /// Computed in parallel chunks.
    ///
    /// # Errors
    ///
    /// [`Error::Shape`] if the dataset's images are not `input_dim` wide.
    pub fn reconstruction_error(&self, data: &Dataset) -> Result<f32> {
        if data.input_dim() != self.input_dim() {
            return Err(Error::shape(
                "dataset images",
                self.input_dim(),
                data.input_dim(),
            ));
        }
        let sums = data.map_chunks(|_, images, _| {
            let l = self.reconstruction_losses(images)?;
            Ok(l.iter().map(|&v| v as f64).sum::<f64>())
        })?;
        Ok((sums.iter().sum::<f64>() / data.len() as f64) as f32)
    }

    /// The dataset re-expressed by its codes: same labels, images replaced by the
    /// `code_dim`-wide codes (in `(0, 1)`, so they form a valid [`Dataset`]). The image shape
    /// is `(s, s)` when `code_dim = s²` (20 × 20 for 400 units), else `(1, code_dim)`.
    ///
    /// # Errors
    ///
    /// [`Error::Shape`] if the dataset's images are not `input_dim` wide.
    pub fn encode_dataset(&self, data: &Dataset) -> Result<Dataset> {
        if data.input_dim() != self.input_dim() {
            return Err(Error::shape(
                "dataset images",
                self.input_dim(),
                data.input_dim(),
            ));
        }
        // ndarray's own rayon support is not enabled, so chunks are encoded in parallel into
        // separate arrays and copied into place.
        let parts = data.map_chunks(|lo, images, _| Ok((lo, self.encode_unchecked(images)?)))?;
        let mut codes = Array2::zeros((data.len(), self.code_dim()));
        for (lo, part) in &parts {
            codes
                .slice_mut(s![*lo..*lo + part.nrows(), ..])
                .assign(part);
        }
        // σ can round to exactly 0 or 1 in f32, which Dataset accepts; never outside.
        Dataset::new(
            codes,
            data.labels().to_vec(),
            code_shape(self.code_dim()),
            data.num_classes(),
        )
    }

    /// Saves the autoencoder as `.npz` (arrays `W_enc, b_enc, W_dec, b_dec` and a header),
    /// atomically.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] or [`Error::ModelFile`] if the file cannot be written.
    pub fn save(&self, path: impl AsRef<std::path::Path>) -> Result<()> {
        persist::save(self, path.as_ref())
    }

    /// The arrays and header that [`Autoencoder::save`] writes.
    pub fn to_model_file(&self) -> ModelFile {
        persist::to_file(self)
    }

    /// Loads an autoencoder saved by [`Autoencoder::save`], checking header and shapes.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if unreadable, [`Error::ModelFile`] naming the file if it is not an
    /// autoencoder file or an array is missing or misshapen.
    pub fn load(path: impl AsRef<std::path::Path>) -> Result<Self> {
        persist::load(path.as_ref())
    }

    /// Rebuilds an autoencoder from a model file (its [`ModelFile::path`] named in errors).
    ///
    /// # Errors
    ///
    /// As [`Autoencoder::load`].
    pub fn from_model_file(file: ModelFile) -> Result<Self> {
        persist::from_file(file)
    }
}

/// The parameters' names, in order (also their array names in a saved autoencoder).
pub(super) const PARAM_NAMES: [&str; 4] = ["W_enc", "b_enc", "W_dec", "b_dec"];

fn check_decay(weight_decay: f32) -> Result<()> {
    check_named_decay("weight_decay", weight_decay)
}

/// A weight decay must be finite and non-negative; `name` is the setting's name in the error.
fn check_named_decay(name: &'static str, weight_decay: f32) -> Result<()> {
    check_non_negative(name, weight_decay)
}

/// `(s, s)` for a square code width, else `(1, width)`: how a code is shown as an image.
fn code_shape(width: usize) -> (usize, usize) {
    let s = (width as f64).sqrt().round() as usize;
    if s * s == width {
        (s, s)
    } else {
        (1, width)
    }
}

impl Trainable for Autoencoder {
    type Workspace = AutoencoderWorkspace;

    fn workspace(&self, batch: usize) -> AutoencoderWorkspace {
        Autoencoder::workspace(self, batch)
    }

    fn params(&self) -> Vec<&Array2<f32>> {
        self.stack.params()
    }

    fn params_mut(&mut self) -> Vec<&mut Array2<f32>> {
        self.stack.params_mut()
    }

    /// Unsupervised: the labels `y` are ignored.
    fn accumulate_grad(
        &self,
        x: ArrayView2<'_, f32>,
        _y: &[usize],
        scale: f32,
        grads: &mut [Array2<f32>],
        ws: &mut AutoencoderWorkspace,
    ) -> Result<f32> {
        self.check_input(x)?;
        check_grads(&self.stack.params(), grads)?;
        let n = x.nrows();
        self.forward_ws(x, ws)?;
        let loss = ws.losses.slice(s![..n]).sum();
        // Output error: d(scale·L)/dz = scale·(x̂ − x), the reason for pairing BCE with σ.
        let last = self.stack.last_slot();
        let mut d_out = ws.deltas[last].slice_mut(s![..n, ..]);
        Zip::from(&mut d_out)
            .and(&ws.acts[last].slice(s![..n, ..]))
            .and(&x)
            .for_each(|d, &xh, &xv| *d = scale * (xh - xv));
        self.stack.backward(x, ws, Some(grads), None, false);
        Ok(loss)
    }

    fn regularize(&self, grads: &mut [Array2<f32>]) -> f32 {
        // Every parameter, biases included, as in the Network.
        weight_decay(self.weight_decay, &self.stack.params(), grads)
    }
}
