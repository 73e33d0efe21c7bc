//! Input gradients by central finite differences: any [`Classifier`] becomes [`Differentiable`].

use ndarray::{Array2, ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2, Axis};

use crate::error::{check_count, Error, Result};
use crate::model::{
    check_loss_and_grad_args, checked_logits, Classifier, Differentiable, Representation,
};

/// Default step `h` of the central difference, in input units (pixels in `[0, 1]`).
///
/// The error of `(L(x + h e_j) − L(x − h e_j)) / 2h` is a truncation term of order `h²` plus the
/// `f32` rounding of the two forward passes divided by `h`; for pixel inputs and logits of
/// order 10, `1e-2` balances them (a few parts in a thousand of the gradient's norm).
pub const DEFAULT_STEP: f32 = 1e-2;

/// Default number of coordinates differenced per [`Classifier::logits`] call (each costs two
/// rows): 2048 coordinates make batches of 4096 rows, about 13 MB of MNIST inputs, so that one
/// call holds the perturbed rows of more than two MNIST images. A lockstep attack evaluates
/// the gradients of a whole group of images in one call to this adapter, and the forward
/// model then sees a few large calls instead of two per image (512, the default before, gave
/// two calls per MNIST gradient however many images were batched).
pub const DEFAULT_CHUNK: usize = 2048;

/// Largest [`FiniteDifference::try_with_chunk`]: 65,536 coordinates, `2^17` rows per call.
pub const MAX_CHUNK: usize = 1 << 16;

/// Largest buffer of perturbed inputs, in `f32` values (`2^24`, 64 MiB). When `2·chunk` rows
/// of the input's width would exceed it, fewer coordinates go to each call (at least one);
/// the estimates are the same, only the batching differs.
pub const MAX_SCRATCH: usize = 1 << 24;

/// A forward-only model made differentiable by central finite differences.
///
/// For a model that only has a forward pass (an ONNX runtime, a model behind a foreign
/// function interface, a framework without autograd), the attack still needs
/// `∂ loss / ∂ x`. This adapter estimates every coordinate `j` of it as
/// `(L(x + h e_j) − L(x − h e_j)) / 2h`, where `L = logsumexp(z) − z[y]` is the same
/// cross-entropy the crate's own models use, evaluated in `f64` from the model's `f32` logits.
///
/// **Slow**: one gradient of an input of width `m` costs `2m` forward passes (1568 for MNIST)
/// instead of one backward pass. They are batched — the perturbed copies of up to `chunk`
/// coordinates (`2·chunk` rows, spanning examples) go to the model in one `logits` call — so the
/// cost is that of a few large forward batches per gradient, which is still hundreds of times
/// an analytic gradient. **Exact enough for the attack**: with the default step the estimate
/// agrees with the analytic gradient to a few parts in a thousand, and box-constrained L-BFGS
/// tolerates that; the examples it finds are verified by a fresh forward pass, as always.
///
/// The model is queried slightly outside the box `[0, 1]` (at `x ± h`), which any classifier
/// accepts.
///
/// **A step too small to move the input is raised, per coordinate**: `f32` cannot represent
/// `x ± h` for `h` below about half the spacing of `f32` values at `x` (`1e-8` at `x = 0.5`,
/// `1e-2` at `x = 10⁶`), which would make the two evaluations equal and the estimate `0/0`.
/// Coordinate `j` is therefore differenced with `max(h, spacing(x_j))`, the smallest step that
/// moves it; the quotient always divides by the step actually taken. For pixels in `[0, 1]` and
/// the default step this never applies. A gradient or loss that still comes out NaN or infinite
/// (a model whose logits jump across a tiny step) is [`Error::NonFinite`], never `Ok`.
///
/// ```
/// use blindspot::adapters::FiniteDifference;
/// use blindspot::nn::{Architecture, Network};
/// use blindspot::Differentiable;
/// use ndarray::Array2;
///
/// let mlp = Network::new(Architecture::parse("FC10", 6).unwrap(), 0);
/// let x = Array2::from_elem((2, 6), 0.5f32);
/// let (_, exact) = mlp.loss_and_input_grad(x.view(), &[1, 2])?;
/// // Pretend the model had only a forward pass:
/// let fd = FiniteDifference::new(mlp, 1e-2)?;
/// let (_, estimate) = fd.loss_and_input_grad(x.view(), &[1, 2])?;
/// assert!((&estimate - &exact).iter().all(|e| e.abs() < 1e-3));
/// # Ok::<(), blindspot::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct FiniteDifference<C> {
    model: C,
    step: f32,
    chunk: usize,
}

/// Reusable buffer of perturbed inputs for [`FiniteDifference`].
#[derive(Debug, Default)]
pub struct FiniteDifferenceScratch {
    rows: Array2<f32>,
}

impl<C: Classifier> FiniteDifference<C> {
    /// Wraps `model` with difference step `step` (input units); see [`DEFAULT_STEP`]. A step
    /// too small to move a coordinate in `f32` is raised for that coordinate (see the type's
    /// docs), so no step in `(0, 1]` gives `0/0`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] unless `step` is finite and in `(0, 1]`.
    pub fn new(model: C, step: f32) -> Result<Self> {
        if !(step.is_finite() && step > 0.0 && step <= 1.0) {
            return Err(Error::param(
                "step",
                format!("the difference step must be finite and in (0, 1], got {step}"),
            ));
        }
        Ok(FiniteDifference {
            model,
            step,
            chunk: DEFAULT_CHUNK,
        })
    }

    /// Coordinates differenced per `logits` call (`2·chunk` rows); see [`DEFAULT_CHUNK`].
    /// Fewer are sent when the rows would exceed [`MAX_SCRATCH`] values.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] unless `chunk` is in `1..=`[`MAX_CHUNK`].
    pub fn try_with_chunk(mut self, chunk: usize) -> Result<Self> {
        check_count("chunk", chunk, MAX_CHUNK)?;
        self.chunk = chunk;
        Ok(self)
    }

    /// The difference step.
    pub fn step(&self) -> f32 {
        self.step
    }

    /// Coordinates per `logits` call.
    pub fn chunk(&self) -> usize {
        self.chunk
    }

    /// The wrapped model.
    pub fn model(&self) -> &C {
        &self.model
    }

    /// Unwraps the model.
    pub fn into_inner(self) -> C {
        self.model
    }
}

/// The spacing of `f32` values just above `|v|`: the smallest step that moves `v` either way
/// (below a power of two the spacing is half as large, so `v − spacing` is exact too).
/// Infinite for `|v| = f32::MAX`.
fn spacing(v: f32) -> f32 {
    let a = v.abs();
    f32::from_bits(a.to_bits() + 1) - a
}

/// The crate's per-example cross-entropy `logsumexp(z) − z[y]`, in `f64`.
fn xent(z: ArrayView1<'_, f32>, label: usize) -> f64 {
    let m = z.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b as f64));
    let sum: f64 = z.iter().map(|&v| (v as f64 - m).exp()).sum();
    sum.ln() + m - z[label] as f64
}

impl<C: Classifier> Classifier for FiniteDifference<C> {
    fn input_dim(&self) -> usize {
        self.model.input_dim()
    }

    fn num_classes(&self) -> usize {
        self.model.num_classes()
    }

    fn logits(&self, x: ArrayView2<'_, f32>) -> Result<Array2<f32>> {
        self.model.logits(x)
    }

    fn predict(&self, x: ArrayView2<'_, f32>) -> Result<Vec<usize>> {
        self.model.predict(x)
    }
}

impl<C: Classifier> Differentiable for FiniteDifference<C> {
    type Scratch = FiniteDifferenceScratch;

    fn loss_and_input_grad_with(
        &self,
        x: ArrayView2<'_, f32>,
        labels: &[usize],
        scratch: &mut FiniteDifferenceScratch,
        mut losses: ArrayViewMut1<'_, f32>,
        mut grad: ArrayViewMut2<'_, f32>,
    ) -> Result<()> {
        check_loss_and_grad_args(
            x,
            self.input_dim(),
            labels,
            self.num_classes(),
            losses.view(),
            grad.view(),
        )?;
        let (n, m) = x.dim();
        let z = checked_logits(&self.model, x)?;
        for (i, row) in z.axis_iter(Axis(0)).enumerate() {
            losses[i] = xent(row, labels[i]) as f32;
            if !losses[i].is_finite() {
                return Err(Error::NonFinite {
                    what: format!("finite-difference loss of example {i}"),
                });
            }
        }
        // Coordinates (example i, pixel j) in row-major order, `chunk` of them per call, and
        // never more rows than MAX_SCRATCH values hold. `total` cannot overflow: x holds it.
        let total = n * m;
        let chunk = self
            .chunk
            .min(total)
            .min((MAX_SCRATCH / (2 * m.max(1))).max(1));
        if scratch.rows.dim() != (2 * chunk, m) {
            scratch.rows = Array2::zeros((2 * chunk, m));
        }
        // The step of coordinate (i, j): the setting, or the smallest that moves x[i, j].
        let step = |v: f32| self.step.max(spacing(v));
        let mut start = 0;
        while start < total {
            let len = chunk.min(total - start);
            let mut rows = scratch.rows.slice_mut(ndarray::s![..2 * len, ..]);
            for k in 0..len {
                let (i, j) = ((start + k) / m, (start + k) % m);
                let xi = x.row(i);
                let h = step(xi[j]);
                let mut plus = rows.row_mut(2 * k);
                plus.assign(&xi);
                plus[j] += h;
                let mut minus = rows.row_mut(2 * k + 1);
                minus.assign(&xi);
                minus[j] -= h;
            }
            let z = checked_logits(&self.model, rows.view())?;
            for k in 0..len {
                let (i, j) = ((start + k) / m, (start + k) % m);
                // The step actually taken, after f32 rounding of x ± h (never 0, see `step`).
                let h = step(x[[i, j]]);
                let span = (x[[i, j]] + h) as f64 - (x[[i, j]] - h) as f64;
                let up = xent(z.row(2 * k), labels[i]);
                let down = xent(z.row(2 * k + 1), labels[i]);
                let g = ((up - down) / span) as f32;
                if !g.is_finite() {
                    return Err(Error::NonFinite {
                        what: format!(
                            "finite-difference gradient of example {i}, coordinate {j} (step \
                             {h} at {})",
                            x[[i, j]]
                        ),
                    });
                }
                grad[[i, j]] = g;
            }
            start += len;
        }
        Ok(())
    }
}

/// Hidden layers are read from the wrapped model unchanged.
impl<C: Classifier + Representation> Representation for FiniteDifference<C> {
    fn num_layers(&self) -> usize {
        self.model.num_layers()
    }

    fn layer_dim(&self, k: usize) -> Result<usize> {
        self.model.layer_dim(k)
    }

    fn representation(&self, x: ArrayView2<'_, f32>, k: usize) -> Result<Array2<f32>> {
        self.model.representation(x, k)
    }
}
