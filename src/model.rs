//! The small trait API that models implement and that attacks and probes consume.
//!
//! Bring your own model by implementing [`Classifier`], then [`Differentiable`] to make it
//! attackable, and [`Representation`] to make it probeable. Inputs are row-major batches:
//! one example per row of an `n × input_dim` array of `f32`.
//!
//! One rule for empty batches across the crate: a batch has at least one row. Every function
//! that takes one (a model's `logits`, `predict` and gradients, an attack's `attack_batch`,
//! `transfer_error`, a probe) returns [`Error::EmptyInput`] for `n = 0`, as a
//! [`Dataset`](crate::data::Dataset) cannot be empty either ([`Error::EmptyDataset`]);
//! [`check_input_batch`] applies it for a model of your own.

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2, Axis};

use crate::error::{Error, Result};

/// A model that maps a batch of inputs to class scores.
pub trait Classifier: Sync {
    /// Length of one input vector (784 for MNIST).
    fn input_dim(&self) -> usize;

    /// Number of classes the model scores.
    fn num_classes(&self) -> usize;

    /// Unnormalised class scores (logits), `n × num_classes`, for a batch `n × input_dim`.
    fn logits(&self, x: ArrayView2<'_, f32>) -> Result<Array2<f32>>;

    /// The most likely class of each row of `x`.
    fn predict(&self, x: ArrayView2<'_, f32>) -> Result<Vec<usize>> {
        let z = self.logits(x)?;
        Ok(z.axis_iter(Axis(0))
            .map(|row| argmax(row.iter().copied()))
            .collect())
    }
}

/// A classifier whose loss can be differentiated with respect to its input: what an attack needs.
///
/// Implement [`Differentiable::loss_and_input_grad_with`]; it writes into caller-owned buffers
/// and may keep reusable buffers in `Scratch`, so that an attack's inner loop allocates nothing.
/// A model with nothing to reuse sets `type Scratch = ();`.
pub trait Differentiable: Classifier {
    /// Reusable per-caller buffers (one per thread in batch attacks).
    type Scratch: Default + Send;

    /// Per-example cross-entropy toward `labels` (length `n`) into `losses`, and its gradient
    /// with respect to each input row into `grad` (`n × input_dim`), in one forward and
    /// backward pass.
    fn loss_and_input_grad_with(
        &self,
        x: ArrayView2<'_, f32>,
        labels: &[usize],
        scratch: &mut Self::Scratch,
        losses: ArrayViewMut1<'_, f32>,
        grad: ArrayViewMut2<'_, f32>,
    ) -> Result<()>;

    /// The most inputs an attack should advance together against this model, if the model
    /// has a preference; `None` (the default) leaves it to the attack's own cap
    /// ([`MAX_GROUP`](crate::attack::MAX_GROUP)). A hint for speed only: a batch's outcomes
    /// are the same however it is grouped.
    fn lockstep_rows(&self) -> Option<usize> {
        None
    }

    /// The same, returning owned arrays.
    fn loss_and_input_grad(
        &self,
        x: ArrayView2<'_, f32>,
        labels: &[usize],
    ) -> Result<(Array1<f32>, Array2<f32>)> {
        let mut losses = Array1::zeros(x.nrows());
        let mut grad = Array2::zeros(x.raw_dim());
        self.loss_and_input_grad_with(
            x,
            labels,
            &mut Self::Scratch::default(),
            losses.view_mut(),
            grad.view_mut(),
        )?;
        Ok((losses, grad))
    }
}

/// A model whose hidden layers can be read out: what the probe needs.
pub trait Representation {
    /// Number of readable layers; layer indices run from 0 to `num_layers() - 1`.
    fn num_layers(&self) -> usize;

    /// Width of layer `k`.
    fn layer_dim(&self, k: usize) -> Result<usize>;

    /// Activations `phi_k(x)` of layer `k`, `n × layer_dim(k)`.
    fn representation(&self, x: ArrayView2<'_, f32>, k: usize) -> Result<Array2<f32>>;
}

/// Index of the largest value (first on ties); NaN never wins.
pub fn argmax(values: impl IntoIterator<Item = f32>) -> usize {
    let mut best = 0;
    let mut best_v = f32::NEG_INFINITY;
    for (i, v) in values.into_iter().enumerate() {
        if v > best_v {
            best = i;
            best_v = v;
        }
    }
    best
}

/// Checks that a batch has `dim` columns, at least one row, and only finite values.
pub fn check_batch(x: ArrayView2<'_, f32>, dim: usize, what: &str) -> Result<()> {
    if x.ncols() != dim {
        return Err(Error::shape(
            what,
            format!("n × {dim}"),
            format!("{} × {}", x.nrows(), x.ncols()),
        ));
    }
    let finite = match x.as_slice() {
        Some(s) => all_finite(s),
        None => x.iter().all(|v| v.is_finite()),
    };
    if !finite {
        return Err(Error::NonFinite { what: what.into() });
    }
    Ok(())
}

/// Whether no value is NaN or infinite. Checked on the exponent bits in chunks without an
/// early exit, so the compiler vectorises it: this runs on every input of every evaluation.
fn all_finite(s: &[f32]) -> bool {
    const EXP: u32 = 0x7f80_0000;
    let mut chunks = s.chunks_exact(16);
    for c in &mut chunks {
        let mut bad = false;
        for &v in c {
            bad |= v.to_bits() & EXP == EXP;
        }
        if bad {
            return false;
        }
    }
    chunks.remainder().iter().all(|v| v.is_finite())
}

/// [`check_batch`] of an input batch (named "input batch" in errors) that must also have at
/// least one row: what every model checks before a forward pass.
///
/// # Errors
///
/// As [`check_batch`]; [`Error::EmptyInput`] for no rows.
pub fn check_input_batch(x: ArrayView2<'_, f32>, dim: usize) -> Result<()> {
    check_batch(x, dim, "input batch")?;
    if x.nrows() == 0 {
        return Err(Error::empty("input batch has no rows"));
    }
    Ok(())
}

/// Checks the arguments of [`Differentiable::loss_and_input_grad_with`] for a model of input
/// width `dim` and `classes` classes: `x` as [`check_input_batch`], `labels` as
/// [`check_labels`], `losses` one entry per row and `grad` the shape of `x`. The crate's models
/// and adapters call it first; an implementation outside the crate can call it to fail the
/// same way.
///
/// # Errors
///
/// As [`check_input_batch`] and [`check_labels`]; [`Error::Shape`] naming `losses` or
/// `input gradient` for a buffer of the wrong size.
pub fn check_loss_and_grad_args(
    x: ArrayView2<'_, f32>,
    dim: usize,
    labels: &[usize],
    classes: usize,
    losses: ArrayView1<'_, f32>,
    grad: ArrayView2<'_, f32>,
) -> Result<()> {
    check_input_batch(x, dim)?;
    let (n, m) = x.dim();
    check_labels(labels, n, classes)?;
    if losses.len() != n {
        return Err(Error::shape("losses", n, losses.len()));
    }
    if grad.dim() != (n, m) {
        return Err(Error::shape(
            "input gradient",
            format!("{n} × {m}"),
            format!("{} × {}", grad.nrows(), grad.ncols()),
        ));
    }
    Ok(())
}

/// Checks an array a model returned (logits, an input gradient): `rows × cols` and finite,
/// so that a faulty model is a typed error naming `what` instead of an index out of range or
/// a NaN passed along.
///
/// # Errors
///
/// [`Error::Shape`] for another shape, [`Error::NonFinite`] for a NaN or infinite value.
pub fn check_model_output(
    a: ArrayView2<'_, f32>,
    rows: usize,
    cols: usize,
    what: &str,
) -> Result<()> {
    if a.dim() != (rows, cols) {
        return Err(Error::shape(
            what,
            format!("{rows} × {cols}"),
            format!("{} × {}", a.nrows(), a.ncols()),
        ));
    }
    check_finite(a, what)
}

/// Checks that `labels` has one entry per row and every label is below `classes`.
pub fn check_labels(labels: &[usize], n: usize, classes: usize) -> Result<()> {
    if labels.len() != n {
        return Err(Error::shape("labels", n, labels.len()));
    }
    if let Some((i, &label)) = labels.iter().enumerate().find(|&(_, &l)| l >= classes) {
        return Err(Error::label(format!("label of row {i}"), label, classes));
    }
    Ok(())
}

/// The logits of `model` for `x`, checked: `x.nrows() × num_classes()` and finite.
///
/// What this crate calls wherever it consumes a model's output (attacks, noise, transfer),
/// so that a faulty [`Classifier`] implementation is a typed error instead of an index out
/// of range or a NaN passed along.
///
/// # Errors
///
/// Any error of [`Classifier::logits`]; [`Error::Shape`] if the logits have the wrong shape;
/// [`Error::NonFinite`] if one is NaN or infinite.
pub fn checked_logits<C: Classifier + ?Sized>(
    model: &C,
    x: ArrayView2<'_, f32>,
) -> Result<Array2<f32>> {
    let z = model.logits(x)?;
    check_model_output(z.view(), x.nrows(), model.num_classes(), "model logits")?;
    Ok(z)
}

/// The labels of the rows of `x` (the argmax of [`checked_logits`]): one label per row, each
/// below `num_classes()`.
///
/// # Errors
///
/// As [`checked_logits`]; [`Error::InvalidParameter`] if the model has no classes.
pub fn checked_predict<C: Classifier + ?Sized>(
    model: &C,
    x: ArrayView2<'_, f32>,
) -> Result<Vec<usize>> {
    if model.num_classes() == 0 {
        return Err(Error::param("num_classes", "the model has no classes"));
    }
    let z = checked_logits(model, x)?;
    Ok(z.axis_iter(Axis(0))
        .map(|row| argmax(row.iter().copied()))
        .collect())
}

/// Checks that every value of `v` is finite.
///
/// # Errors
///
/// [`Error::NonFinite`] naming `what`.
pub fn check_finite<D: ndarray::Dimension>(
    v: ndarray::ArrayView<'_, f32, D>,
    what: &str,
) -> Result<()> {
    let finite = match v.as_slice() {
        Some(s) => all_finite(s),
        None => v.iter().all(|x| x.is_finite()),
    };
    if finite {
        Ok(())
    } else {
        Err(Error::NonFinite { what: what.into() })
    }
}
