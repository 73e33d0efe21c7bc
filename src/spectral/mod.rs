//! Spectral stability bounds (paper §4.3).
//!
//! A dense layer `x ↦ σ(xW + b)` is Lipschitz in ℓ2 with constant at most `L_σ · ‖W‖₂`, where
//! `‖W‖₂` is the operator norm (largest singular value) and `L_σ` the activation's largest
//! slope (sigmoid 1/4, tanh 1, ReLU 1). The product over layers bounds how far the network's
//! output can move for an input perturbation `r`: `‖f(x + r) − f(x)‖ ≤ (Π_l L_l) ‖r‖`. Large
//! bounds are what make adversarial examples *possible*; they do not prove them.
//!
//! Here `f` is the network's pre-softmax output (the logits). The softmax itself is
//! 1-Lipschitz in ℓ2 (its Jacobian `diag(p) − ppᵀ` has norm at most 1/2), so the same product
//! also bounds the probabilities.
//!
//! # Example
//!
//! ```
//! use blindspot::spectral::{operator_norm, PowerIterationParams};
//! use blindspot::Check;
//! use ndarray::array;
//!
//! let w = array![[3.0f32, 0.0], [0.0, -5.0], [0.0, 0.0]];
//! let config = PowerIterationParams::new(1e-6, 1000).check()?;
//! let s = operator_norm(w.view(), &config)?;
//! assert!((s - 5.0).abs() < 1e-3);
//! # Ok::<(), blindspot::Error>(())
//! ```

use ndarray::{Array1, Array2, ArrayView2, Axis};
use ndarray_rand::rand_distr::StandardNormal;
use ndarray_rand::RandomExt;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::error::{check_count, check_positive, Error, Result};
use crate::model::{check_batch, check_finite, Classifier};
use crate::nn::{Activation, Layer, Network};
use crate::params::{Check, Checked};

pub mod conv;

pub use conv::{
    conv_operator_norm, conv_operator_norm_padded, conv_power_iteration, zero_padding_grid,
    ConvNorm, ConvNormEstimate, Padding, MAX_FOURIER_BYTES, MAX_FOURIER_WORK, MAX_ITERATION_WORK,
};

/// Default seed of the power iteration's start vector ([`PowerIterationParams::default`]).
pub const DEFAULT_SEED: u64 = 0x5eed;

/// Default relative tolerance of the power iterations ([`layer_bounds`]).
pub const DEFAULT_TOL: f64 = 1e-7;

/// Default iteration cap of the power iterations ([`layer_bounds`]).
pub const DEFAULT_MAX_ITER: usize = 10_000;

/// Largest iteration cap of a power iteration ([`PowerIterationParams::max_iter`]): with the
/// work of one iteration bounded (by the matrix given, or
/// [`conv::MAX_ITERATION_WORK`] for a convolution), this bounds the whole run.
pub const MAX_POWER_ITER: usize = 1_000_000;

/// Settings of a power iteration ([`power_iteration`], [`conv_power_iteration`],
/// [`layer_bounds_with`]) as given; [`PowerIterationParams::check`] turns them into a
/// [`PowerIterationConfig`]. `Default`: [`DEFAULT_TOL`], [`DEFAULT_MAX_ITER`],
/// [`DEFAULT_SEED`].
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct PowerIterationParams {
    /// Stop when the estimate changes by at most this much relative to itself between two
    /// iterations (finite, > 0).
    pub tol: f64,
    /// Iteration cap, in `1..=`[`MAX_POWER_ITER`]; not converging within it is an error.
    pub max_iter: usize,
    /// Seed of the Gaussian start vector.
    pub seed: u64,
}

impl Default for PowerIterationParams {
    fn default() -> Self {
        PowerIterationParams {
            tol: DEFAULT_TOL,
            max_iter: DEFAULT_MAX_ITER,
            seed: DEFAULT_SEED,
        }
    }
}

impl PowerIterationParams {
    /// A tolerance and an iteration cap, with the [`DEFAULT_SEED`].
    pub fn new(tol: f64, max_iter: usize) -> Self {
        PowerIterationParams {
            tol,
            max_iter,
            seed: DEFAULT_SEED,
        }
    }

    /// Sets the seed of the start vector.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
}

impl Check for PowerIterationParams {
    type Checked = PowerIterationConfig;

    /// Validates the values once; the result cannot be invalid.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] naming the bad value: `tol` if it is not finite and
    /// positive, `max_iter` if it is 0 or above [`MAX_POWER_ITER`].
    fn check(self) -> Result<PowerIterationConfig> {
        check_positive("tol", self.tol)?;
        check_count("max_iter", self.max_iter, MAX_POWER_ITER)?;
        Ok(Checked::assume_valid(self))
    }
}

/// Checked power-iteration settings (from [`PowerIterationParams::check`](Check::check)).
pub type PowerIterationConfig = Checked<PowerIterationParams>;

impl Default for Checked<PowerIterationParams> {
    /// The checked [`PowerIterationParams::default`] (whose values are valid constants, as a
    /// test checks).
    fn default() -> Self {
        Checked::assume_valid(PowerIterationParams::default())
    }
}

impl Checked<PowerIterationParams> {
    /// The same settings with another seed (every seed is valid).
    pub fn with_seed(self, seed: u64) -> Self {
        Checked::assume_valid(self.into_params().with_seed(seed))
    }
}

/// Result of a power iteration on `W` (`m × n`).
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct NormEstimate {
    /// Estimated largest singular value.
    pub value: f64,
    /// Iterations performed.
    pub iterations: usize,
    /// The matching left singular vector (length `m`, unit norm; zero if `W = 0`). For a
    /// layer computing `x W` on row vectors `x`, this is the input direction that `W`
    /// stretches most: `‖u W‖ = value`.
    pub left: Array1<f64>,
    /// The matching right singular vector (length `n`, unit norm): `W v = value · u`.
    pub right: Array1<f64>,
}

/// The largest singular value of `w` by power iteration on `WᵀW`, started from a Gaussian
/// vector drawn with the config's seed, stopping when the estimate changes by at most `tol`
/// relative to itself between two iterations.
///
/// Each iteration computes `u = W v`, `z = Wᵀ u`, `v ← z / ‖z‖` for a unit `v`; the estimate
/// `‖W v‖` never decreases and never exceeds `‖W‖₂`. Arithmetic is in f64 so that a tight
/// tolerance is meaningful for f32 weights. The stopping rule bounds the last change, not the
/// error: when the two largest singular values are close, convergence is slow and the remaining
/// error can exceed `tol`; the estimate is then still a lower bound of the true norm.
///
/// # Errors
///
/// [`Error::Shape`] if `w` has no rows or no columns; [`Error::NonFinite`] if an entry is NaN
/// or infinite; [`Error::NotConverged`] with the last estimate if the change is still above
/// `tol` after `max_iter` iterations.
pub fn power_iteration(
    w: ArrayView2<'_, f32>,
    config: &PowerIterationConfig,
) -> Result<NormEstimate> {
    let (tol, max_iter, seed) = (config.tol, config.max_iter, config.seed);
    let (m, n) = w.dim();
    if m == 0 || n == 0 {
        return Err(Error::shape(
            "matrix",
            "at least 1 × 1",
            format!("{m} × {n}"),
        ));
    }
    check_finite(w, "matrix for operator norm")?;
    let w = w.mapv(f64::from);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut v: Array1<f64> = Array1::random_using(n, StandardNormal, &mut rng);
    let norm = v.dot(&v).sqrt();
    if norm == 0.0 {
        // Never happens for a Gaussian draw; fall back to a constant vector.
        v.fill(1.0 / (n as f64).sqrt());
    } else {
        v /= norm;
    }
    let mut prev = 0.0;
    for it in 1..=max_iter {
        let u = w.dot(&v);
        let sigma = u.dot(&u).sqrt();
        let z = w.t().dot(&u);
        let zn = z.dot(&z).sqrt();
        if zn == 0.0 {
            // W v = 0 for a v with a component along every right singular vector (a Gaussian
            // start, or its images under WᵀW): then W itself is 0.
            return Ok(NormEstimate {
                value: 0.0,
                iterations: it,
                left: Array1::zeros(m),
                right: v,
            });
        }
        if it > 1 && (sigma - prev).abs() <= tol * sigma {
            return Ok(NormEstimate {
                value: sigma,
                iterations: it,
                left: u / sigma,
                right: v,
            });
        }
        prev = sigma;
        v = z / zn;
    }
    Err(Error::NotConverged {
        what: "power iteration",
        iterations: max_iter,
        tolerance: tol,
        last_estimate: prev,
    })
}

/// The operator norm `‖W‖₂` (largest singular value) of `w`, by [`power_iteration`]: its
/// value alone, in `f32`.
///
/// # Errors
///
/// As [`power_iteration`].
pub fn operator_norm(w: ArrayView2<'_, f32>, config: &PowerIterationConfig) -> Result<f32> {
    Ok(power_iteration(w, config)?.value as f32)
}

/// How a layer's operator norm was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum BoundMethod {
    /// Power iteration on a dense layer's weights (a lower estimate converging to `‖W‖₂`).
    PowerIteration,
    /// The paper's Fourier method for a convolution: exact for the circular convolution on the
    /// grid it reports, an upper bound for the zero-padded layer.
    Fourier,
    /// Max-pooling over disjoint windows, whose Lipschitz constant is 1.
    MaxPool,
    /// A diagonal map (an input normalisation): its norm `max |scale|`, exactly.
    Diagonal,
}

impl BoundMethod {
    /// The lower-case name: `"power iteration"`, `"fourier"`, `"max-pool"`, `"diagonal"`.
    pub fn name(self) -> &'static str {
        match self {
            BoundMethod::PowerIteration => "power iteration",
            BoundMethod::Fourier => "fourier",
            BoundMethod::MaxPool => "max-pool",
            BoundMethod::Diagonal => "diagonal",
        }
    }
}

/// The Lipschitz bound of one layer (the paper's Table 5, one row): a dense or convolution
/// layer together with the activation after it, or a max-pooling layer.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct LayerBound {
    /// Row index, first layer 0.
    pub layer: usize,
    /// `"dense"`, `"conv"` or `"max-pool"`.
    pub kind: &'static str,
    /// Input width (values per example).
    pub inputs: usize,
    /// Output width.
    pub outputs: usize,
    /// The layer's size as the paper's Table 5 gives it: `in×out` for a dense layer,
    /// `k×k×C×D` for a convolution, `q×q` for pooling.
    pub size: String,
    /// Stride (1 for dense layers).
    pub stride: usize,
    /// How the operator norm was computed.
    pub method: BoundMethod,
    /// The activation after the layer, or `None` (the final linear layer, pooling).
    pub activation: Option<Activation>,
    /// The layer's operator norm (largest singular value), or 1 for pooling.
    pub operator_norm: f64,
    /// Power iterations used (0 for the other methods).
    pub iterations: usize,
    /// Lipschitz constant of the activation (1 when there is none).
    pub activation_lipschitz: f64,
    /// `operator_norm × activation_lipschitz`: the layer's upper Lipschitz bound.
    pub bound: f64,
}

/// Per-layer upper Lipschitz bounds of `mlp`, first layer to last, with [`DEFAULT_TOL`] and
/// [`DEFAULT_MAX_ITER`]. Dense layers by power iteration, convolutions by the Fourier method
/// ([`conv_operator_norm_padded`] with the layer's zero padding), max-pooling 1; each dense or
/// convolution row includes the activation after it. The last row is the linear layer that
/// produces the logits (no activation; the softmax after it is 1-Lipschitz).
///
/// An autoencoder-initialised classifier such as AE400-10 is an [`Network`] too; its layer 0 is
/// the code layer.
///
/// # Errors
///
/// As [`power_iteration`] and [`conv_operator_norm_padded`].
pub fn layer_bounds(mlp: &Network) -> Result<Vec<LayerBound>> {
    layer_bounds_with(mlp, &PowerIterationConfig::default())
}

/// [`layer_bounds`] with chosen power-iteration settings; the `k`-th dense layer's start
/// vector is seeded with the config's seed plus `k`.
///
/// # Errors
///
/// As [`layer_bounds`].
pub fn layer_bounds_with(mlp: &Network, config: &PowerIterationConfig) -> Result<Vec<LayerBound>> {
    mlp.check_params()?;
    let layers = mlp.layers();
    let mut rows: Vec<LayerBound> = Vec::new();
    let mut dense = 0u64;
    for (i, layer) in layers.iter().enumerate() {
        let activation = match layers.get(i + 1) {
            Some(Layer::Activation(a)) => Some(*a),
            _ => None,
        };
        let lip = activation.map_or(1.0, |a| f64::from(a.lipschitz()));
        let row = |kind, inputs, outputs, size, stride, method, norm: f64, iterations| LayerBound {
            layer: rows.len(),
            kind,
            inputs,
            outputs,
            size,
            stride,
            method,
            activation,
            operator_norm: norm,
            iterations,
            activation_lipschitz: lip,
            bound: norm * lip,
        };
        let next = match layer {
            Layer::Dense(d) => {
                // Seeds as before the layer stack, so dense estimates are unchanged.
                let est = power_iteration(
                    d.weight(),
                    &config.with_seed(config.seed.wrapping_add(dense)),
                )?;
                dense += 1;
                row(
                    "dense",
                    d.inputs(),
                    d.outputs(),
                    format!("{}×{}", d.inputs(), d.outputs()),
                    1,
                    BoundMethod::PowerIteration,
                    est.value,
                    est.iterations,
                )
            }
            Layer::Conv2d(c) => {
                let (h, w, ch) = c.input_shape();
                let (k, stride, padding) = c.geometry();
                let (ho, wo, d) = c.output_shape();
                let norm = conv_operator_norm_padded(
                    c.kernel()?.view(),
                    h,
                    w,
                    stride,
                    Padding::Zero(padding),
                )?;
                row(
                    "conv",
                    h * w * ch,
                    ho * wo * d,
                    format!("{k}×{k}×{ch}×{d}"),
                    stride,
                    BoundMethod::Fourier,
                    norm.value,
                    0,
                )
            }
            Layer::MaxPool2d(p) => {
                let (h, w, ch) = p.input_shape();
                let (ho, wo, _) = p.output_shape();
                let q = p.size();
                row(
                    "max-pool",
                    h * w * ch,
                    ho * wo * ch,
                    format!("{q}×{q}"),
                    q,
                    BoundMethod::MaxPool,
                    1.0,
                    0,
                )
            }
            Layer::Affine(a) => row(
                "input affine",
                a.width(),
                a.width(),
                format!("{} channels", a.channels()),
                1,
                BoundMethod::Diagonal,
                f64::from(a.lipschitz()),
                0,
            ),
            // Folded into the row of the layer before it.
            Layer::Activation(_) => continue,
        };
        rows.push(next);
    }
    Ok(rows)
}

/// The whole network's upper Lipschitz bound: the product of the layers' bounds.
pub fn network_bound(layers: &[LayerBound]) -> f64 {
    layers.iter().map(|l| l.bound).product()
}

/// The ratios `‖f(x_i + r_i) − f(x_i)‖ / ‖r_i‖` for each row `i`, with `f` the model's logits.
///
/// Rows of `x` and `r` pair up, so any list of (example, perturbation) pairs can be fed in:
/// random noise, or the perturbations an attack found. Rows with `r_i = 0` give 0.
///
/// # Errors
///
/// [`Error::Shape`] if `x` and `r` differ in shape or do not match the model's input width;
/// [`Error::NonFinite`] for NaN or infinite entries; [`Error::EmptyInput`] if there are no
/// rows; any error of the model.
pub fn perturbation_ratios<C: Classifier + ?Sized>(
    model: &C,
    x: ArrayView2<'_, f32>,
    r: ArrayView2<'_, f32>,
) -> Result<Vec<f64>> {
    check_batch(x, model.input_dim(), "examples")?;
    check_batch(r, model.input_dim(), "perturbations")?;
    if x.nrows() != r.nrows() {
        return Err(Error::shape("perturbations", x.nrows(), r.nrows()));
    }
    if x.nrows() == 0 {
        return Err(Error::empty("no (example, perturbation) pairs"));
    }
    let moved: Array2<f32> = &x + &r;
    let f0 = model.logits(x)?;
    let f1 = model.logits(moved.view())?;
    // The denominator is the perturbation as realised in f32, `(x + r) − x`: for tiny r the
    // rounding of `x + r` can double or erase it, and the ratio must use what the model saw.
    Ok(f0
        .axis_iter(Axis(0))
        .zip(f1.axis_iter(Axis(0)))
        .zip(moved.axis_iter(Axis(0)).zip(x.axis_iter(Axis(0))))
        .map(|((a, b), (mi, xi))| {
            let num: f64 = a
                .iter()
                .zip(b)
                .map(|(&p, &q)| (f64::from(q) - f64::from(p)).powi(2))
                .sum::<f64>()
                .sqrt();
            let den: f64 = mi
                .iter()
                .zip(xi)
                .map(|(&m, &v)| (f64::from(m) - f64::from(v)).powi(2))
                .sum::<f64>()
                .sqrt();
            if den > 0.0 {
                num / den
            } else {
                0.0
            }
        })
        .collect())
}
