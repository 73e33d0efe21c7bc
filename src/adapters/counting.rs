//! A model wrapper that counts how often, and on how many rows, the model is evaluated.

use std::sync::atomic::{AtomicU64, Ordering};

use ndarray::{Array2, ArrayView2, ArrayViewMut1, ArrayViewMut2};

use crate::error::Result;
use crate::model::{Classifier, Differentiable, Representation};

/// Any model, unchanged, with counters of its batched evaluations.
///
/// Every call of [`Classifier::logits`] or [`Classifier::predict`] counts as one *forward*
/// call, every call of [`Differentiable::loss_and_input_grad_with`] (which the owned
/// [`Differentiable::loss_and_input_grad`] goes through) as one *gradient* call; each counter
/// also sums the rows of the batches it saw. Everything else, the `Scratch` type included,
/// is the wrapped model's, so an attack on the wrapper does exactly what it does on the model.
///
/// What it is for: the cost of an attack on a model whose every call has a fixed overhead
/// (a framework boundary, a device transfer, an RPC) is the number of calls more than the
/// number of rows. `calls()` and `rows()` after a run say how an attack batched its work,
/// e.g. the mean rows per call of `attack` one image at a time against `attack_batch`.
///
/// Counters are relaxed atomics: exact once the calls counted have returned (the attack's
/// threads have joined), and shared by every thread that evaluates through the wrapper.
/// Calls are counted whether or not they succeed.
///
/// ```
/// use blindspot::adapters::Counting;
/// use blindspot::nn::{Architecture, Network};
/// use blindspot::{Classifier, Differentiable};
/// use ndarray::Array2;
///
/// let model = Counting::new(Network::new(Architecture::parse("FC10", 6).unwrap(), 0));
/// let x = Array2::from_elem((3, 6), 0.5f32);
/// model.logits(x.view())?;
/// model.loss_and_input_grad(x.view(), &[0, 1, 2])?;
/// assert_eq!((model.forward_calls(), model.gradient_calls()), (1, 1));
/// assert_eq!((model.calls(), model.rows()), (2, 6));
/// # Ok::<(), blindspot::Error>(())
/// ```
#[derive(Debug, Default)]
pub struct Counting<M> {
    model: M,
    forward_calls: AtomicU64,
    forward_rows: AtomicU64,
    gradient_calls: AtomicU64,
    gradient_rows: AtomicU64,
}

/// The counters at one moment, as returned by [`Counting::counts`]; differences of two
/// snapshots measure one run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct CallCounts {
    /// Calls of `logits` or `predict`.
    pub forward_calls: u64,
    /// Rows of those calls' batches.
    pub forward_rows: u64,
    /// Calls of `loss_and_input_grad_with`.
    pub gradient_calls: u64,
    /// Rows of those calls' batches.
    pub gradient_rows: u64,
}

impl CallCounts {
    /// All calls, forward and gradient.
    pub fn calls(&self) -> u64 {
        self.forward_calls + self.gradient_calls
    }

    /// All rows, forward and gradient.
    pub fn rows(&self) -> u64 {
        self.forward_rows + self.gradient_rows
    }

    /// The counts since `earlier`, a snapshot of the same counters taken before (saturating at
    /// 0 if the counters were reset in between).
    pub fn since(&self, earlier: &CallCounts) -> CallCounts {
        CallCounts {
            forward_calls: self.forward_calls.saturating_sub(earlier.forward_calls),
            forward_rows: self.forward_rows.saturating_sub(earlier.forward_rows),
            gradient_calls: self.gradient_calls.saturating_sub(earlier.gradient_calls),
            gradient_rows: self.gradient_rows.saturating_sub(earlier.gradient_rows),
        }
    }
}

impl<M> Counting<M> {
    /// Wraps `model` with all counters at 0.
    pub fn new(model: M) -> Self {
        Counting {
            model,
            forward_calls: AtomicU64::new(0),
            forward_rows: AtomicU64::new(0),
            gradient_calls: AtomicU64::new(0),
            gradient_rows: AtomicU64::new(0),
        }
    }

    /// The wrapped model.
    pub fn model(&self) -> &M {
        &self.model
    }

    /// Unwraps the model.
    pub fn into_inner(self) -> M {
        self.model
    }

    /// All four counters.
    pub fn counts(&self) -> CallCounts {
        CallCounts {
            forward_calls: self.forward_calls.load(Ordering::Relaxed),
            forward_rows: self.forward_rows.load(Ordering::Relaxed),
            gradient_calls: self.gradient_calls.load(Ordering::Relaxed),
            gradient_rows: self.gradient_rows.load(Ordering::Relaxed),
        }
    }

    /// Calls of `logits` or `predict`.
    pub fn forward_calls(&self) -> u64 {
        self.forward_calls.load(Ordering::Relaxed)
    }

    /// Calls of `loss_and_input_grad_with`.
    pub fn gradient_calls(&self) -> u64 {
        self.gradient_calls.load(Ordering::Relaxed)
    }

    /// All calls, forward and gradient.
    pub fn calls(&self) -> u64 {
        self.counts().calls()
    }

    /// All rows evaluated, forward and gradient.
    pub fn rows(&self) -> u64 {
        self.counts().rows()
    }

    /// Sets every counter back to 0.
    pub fn reset(&self) {
        for c in [
            &self.forward_calls,
            &self.forward_rows,
            &self.gradient_calls,
            &self.gradient_rows,
        ] {
            c.store(0, Ordering::Relaxed);
        }
    }

    fn count_forward(&self, rows: usize) {
        self.forward_calls.fetch_add(1, Ordering::Relaxed);
        self.forward_rows.fetch_add(rows as u64, Ordering::Relaxed);
    }
}

impl<M: Classifier> Classifier for Counting<M> {
    fn input_dim(&self) -> usize {
        self.model.input_dim()
    }

    fn num_classes(&self) -> usize {
        self.model.num_classes()
    }

    fn logits(&self, x: ArrayView2<'_, f32>) -> Result<Array2<f32>> {
        self.count_forward(x.nrows());
        self.model.logits(x)
    }

    /// The model's own `predict` (which may be cheaper than its logits), counted as one
    /// forward call.
    fn predict(&self, x: ArrayView2<'_, f32>) -> Result<Vec<usize>> {
        self.count_forward(x.nrows());
        self.model.predict(x)
    }
}

impl<M: Differentiable> Differentiable for Counting<M> {
    type Scratch = M::Scratch;

    fn loss_and_input_grad_with(
        &self,
        x: ArrayView2<'_, f32>,
        labels: &[usize],
        scratch: &mut M::Scratch,
        losses: ArrayViewMut1<'_, f32>,
        grad: ArrayViewMut2<'_, f32>,
    ) -> Result<()> {
        self.gradient_calls.fetch_add(1, Ordering::Relaxed);
        self.gradient_rows
            .fetch_add(x.nrows() as u64, Ordering::Relaxed);
        self.model
            .loss_and_input_grad_with(x, labels, scratch, losses, grad)
    }

    fn lockstep_rows(&self) -> Option<usize> {
        self.model.lockstep_rows()
    }
}

/// Hidden layers are read from the wrapped model, uncounted.
impl<M: Representation> Representation for Counting<M> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attack::{Attack, BoxLbfgs, Target};
    use crate::nn::{Architecture, Network};

    fn mlp() -> Network {
        Network::new(Architecture::parse("FC8-3", 5).unwrap(), 2)
    }

    #[test]
    fn counts_calls_and_rows_and_forwards_results() {
        let net = mlp();
        let model = Counting::new(net.clone());
        let x = ndarray::Array2::from_shape_fn((4, 5), |(i, j)| (i * 5 + j) as f32 / 20.0);
        assert_eq!(
            model.logits(x.view()).unwrap(),
            net.logits(x.view()).unwrap()
        );
        assert_eq!(
            model.predict(x.view()).unwrap(),
            net.predict(x.view()).unwrap()
        );
        let labels = [0, 1, 2, 0];
        assert_eq!(
            model.loss_and_input_grad(x.view(), &labels).unwrap(),
            net.loss_and_input_grad(x.view(), &labels).unwrap()
        );
        let before = model.counts();
        assert_eq!(
            before,
            CallCounts {
                forward_calls: 2,
                forward_rows: 8,
                gradient_calls: 1,
                gradient_rows: 4,
            }
        );
        // A failing call is counted too: it reached the model.
        assert!(model.logits(ndarray::Array2::zeros((1, 4)).view()).is_err());
        assert_eq!(model.counts().since(&before).forward_calls, 1);
        model.reset();
        assert_eq!(model.counts(), CallCounts::default());
        assert_eq!(model.num_layers(), net.num_layers());
    }

    #[test]
    fn an_attack_through_the_wrapper_is_the_attack_on_the_model() {
        let net = mlp();
        let model = Counting::new(net.clone());
        let x = ndarray::Array1::from_elem(5, 0.5f32);
        let attack = BoxLbfgs::new();
        let direct = attack.attack(&net, x.view(), 0, Target::Label(1)).unwrap();
        let counted = attack
            .attack(&model, x.view(), 0, Target::Label(1))
            .unwrap();
        assert_eq!(direct, counted);
        // One image: every call the attack made was on a batch of one row.
        let c = model.counts();
        assert!(c.gradient_calls >= 1);
        assert_eq!(c.rows(), c.calls());
        assert!(
            c.forward_calls >= 1,
            "the outcome's label is checked by a forward pass"
        );
    }
}
