//! The one forward/backward engine: a sequence of [`Layer`]s run over a batch into a
//! preallocated [`Workspace`]. Classifiers ([`Network`](crate::nn::Network)) and the
//! [`Autoencoder`](crate::nn::Autoencoder) differ only in the loss put on top of it.

use ndarray::{s, Array1, Array2, ArrayView2, ArrayViewMut2, Zip};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};
use crate::nn::activation::Activation;
use crate::nn::arch::MAX_SIZE;
use crate::nn::layer::{activate, activate_backward, Layer, LayerScratch};

/// A sequence of layers and the plan of which buffer each one reads and writes.
///
/// Buffers ("slots") hold one batch of a layer's outputs; slot 0 is the caller's input.
/// Activations run in place on their input's slot, so a dense layer and its activation share
/// one buffer, and backpropagation through an activation needs only its output.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Stack {
    layers: Vec<Layer>,
    slot_in: Vec<usize>,
    slot_out: Vec<usize>,
    /// Width of each slot; `widths[0]` is the input width.
    widths: Vec<usize>,
    /// Per layer: its input comes from a ReLU through max-pooling layers only, so the
    /// gradient at an input that is zero dies at that ReLU whatever its value.
    dead_at_zero: Vec<bool>,
}

/// Preallocated buffers for forward and backward passes over batches of up to a fixed number
/// of rows: every slot's values and gradients, each layer's own scratch, and per-example
/// losses. Made for one network; given to another, it is rebuilt rather than misused.
#[derive(Debug, Clone, Default)]
pub struct Workspace {
    rows: usize,
    widths: Vec<usize>,
    pub(crate) acts: Vec<Array2<f32>>,
    pub(crate) deltas: Vec<Array2<f32>>,
    scratch: Vec<LayerScratch>,
    pub(crate) losses: Array1<f32>,
    /// Training-time dropout, when the trainer turned it on for this workspace.
    dropout: Option<Dropout>,
}

/// Inverted dropout on the outputs of some layers: during a forward pass each value is kept
/// with probability `1 − rate` and scaled by `1 / (1 − rate)`, else zeroed; the backward pass
/// masks the gradient the same way and restores the undropped values, which the layer's own
/// backward pass (an activation's derivative) needs.
#[derive(Debug, Clone)]
struct Dropout {
    /// Rate for each layer index (0 for layers whose outputs are kept whole).
    rates: Vec<f32>,
    masks: Vec<Array2<f32>>,
    saved: Vec<Array2<f32>>,
    rng: ChaCha8Rng,
}

impl Dropout {
    fn apply(&mut self, i: usize, mut y: ArrayViewMut2<'_, f32>) {
        let rate = self.rates[i];
        let keep = 1.0 / (1.0 - rate);
        let rng = &mut self.rng;
        let mask = &mut self.masks[i];
        if mask.dim() != y.dim() {
            *mask = Array2::zeros(y.dim());
            self.saved[i] = Array2::zeros(y.dim());
        }
        self.saved[i].assign(&y);
        mask.mapv_inplace(|_| if rng.gen::<f32>() < rate { 0.0 } else { keep });
        y *= &*mask;
    }

    fn unapply(&self, i: usize, mut y: ArrayViewMut2<'_, f32>, mut dy: ArrayViewMut2<'_, f32>) {
        Zip::from(&mut dy)
            .and(&self.masks[i])
            .for_each(|d, &m| *d *= m);
        y.assign(&self.saved[i]);
    }
}

impl Stack {
    /// Plans the buffers of `layers` for inputs of width `input`. Layers must chain (each
    /// one's input width the previous output width) and the first must not be an activation;
    /// the network constructors guarantee both.
    pub(crate) fn new(layers: Vec<Layer>, input: usize) -> Stack {
        let mut widths = vec![input];
        let mut slot_in = Vec::with_capacity(layers.len());
        let mut slot_out = Vec::with_capacity(layers.len());
        let mut current = 0;
        for layer in &layers {
            let width = layer.output_dim(widths[current]);
            slot_in.push(current);
            if !(matches!(layer, Layer::Activation(_)) && current > 0) {
                widths.push(width);
                current = widths.len() - 1;
            }
            slot_out.push(current);
        }
        let dead_at_zero = (0..layers.len())
            .map(|i| {
                let before = layers[..i]
                    .iter()
                    .rev()
                    .find(|l| !matches!(l, Layer::MaxPool2d(_)));
                matches!(before, Some(Layer::Activation(Activation::Relu)))
            })
            .collect();
        Stack {
            layers,
            slot_in,
            slot_out,
            widths,
            dead_at_zero,
        }
    }

    /// Computes every input gradient in full, as if no layer's zero inputs were dead (to
    /// check that skipping them changes nothing).
    #[cfg(test)]
    pub(crate) fn keep_dead_gradients(&mut self) -> usize {
        let skipped = self.dead_at_zero.iter().filter(|&&d| d).count();
        self.dead_at_zero.iter_mut().for_each(|d| *d = false);
        skipped
    }

    pub(crate) fn layers(&self) -> &[Layer] {
        &self.layers
    }

    pub(crate) fn input_dim(&self) -> usize {
        self.widths[0]
    }

    /// Width of layer `i`'s output.
    pub(crate) fn width_after(&self, i: usize) -> usize {
        self.widths[self.slot_out[i]]
    }

    /// `Ok` if every parameter still has the shape the network was built with.
    /// [`Trainable::params_mut`](crate::nn::Trainable::params_mut) hands out the arrays
    /// themselves, so a caller can put an array of another shape in their place, which the
    /// kernels would read out of bounds or refuse with a panic; each evaluation checks first
    /// (a few comparisons per layer).
    ///
    /// # Errors
    ///
    /// [`Error::Shape`] naming the first parameter (in [`Self::params`] order) of the wrong
    /// shape.
    pub(crate) fn check_params(&self) -> Result<()> {
        let mut index = 0;
        for (i, layer) in self.layers.iter().enumerate() {
            let (input, output) = (self.widths[self.slot_in[i]], self.widths[self.slot_out[i]]);
            let (weight, bias, expected) = match layer {
                Layer::Dense(d) => (&d.weight, &d.bias, (input, output)),
                Layer::Conv2d(c) => {
                    let channels = output / c.positions().max(1);
                    (&c.weight, &c.bias, (c.patch(), channels))
                }
                _ => continue,
            };
            for (array, shape, what) in [
                (weight, expected, "weight"),
                (bias, (1, expected.1), "bias"),
            ] {
                if array.dim() != shape {
                    return Err(Error::shape(
                        format!("parameter {index} (layer {i} {what})"),
                        format!("{shape:?}, the shape it was built with"),
                        format!("{:?}", array.dim()),
                    ));
                }
                index += 1;
            }
        }
        Ok(())
    }

    pub(crate) fn params(&self) -> Vec<&Array2<f32>> {
        self.layers.iter().flat_map(|l| l.params()).collect()
    }

    pub(crate) fn params_mut(&mut self) -> Vec<&mut Array2<f32>> {
        self.layers
            .iter_mut()
            .flat_map(|l| l.params_mut())
            .collect()
    }

    /// Buffers for batches of up to `rows` rows; if that many would exceed [`MAX_SIZE`]
    /// values in one buffer, an empty workspace that [`Stack::prepare`] grows (or refuses) for
    /// the batches that really come.
    pub(crate) fn workspace(&self, rows: usize) -> Workspace {
        let fits = self
            .widths
            .iter()
            .all(|&w| rows.checked_mul(w).is_some_and(|v| v <= MAX_SIZE));
        let rows = if fits { rows } else { 0 };
        let buffers = || -> Vec<Array2<f32>> {
            self.widths[1..]
                .iter()
                .map(|&w| Array2::zeros((rows, w)))
                .collect()
        };
        Workspace {
            rows,
            widths: self.widths.clone(),
            acts: buffers(),
            deltas: buffers(),
            scratch: vec![LayerScratch::default(); self.layers.len()],
            losses: Array1::zeros(rows),
            dropout: None,
        }
    }

    /// Turns on dropout in `ws` for the outputs of the layers `(index, rate)` (the network
    /// checks the indices and rates), masks drawn from a generator seeded with `seed`.
    pub(crate) fn enable_dropout(&self, ws: &mut Workspace, layers: &[(usize, f32)], seed: u64) {
        let mut rates = vec![0.0; self.layers.len()];
        for &(i, r) in layers {
            rates[i] = r;
        }
        ws.dropout = rates.iter().any(|&r| r > 0.0).then(|| Dropout {
            rates,
            masks: vec![Array2::zeros((0, 0)); self.layers.len()],
            saved: vec![Array2::zeros((0, 0)); self.layers.len()],
            rng: ChaCha8Rng::seed_from_u64(seed),
        });
    }

    /// Makes `ws` fit this stack and `n` rows, rebuilding it if it was made for another
    /// network or fewer rows.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] if `n` rows would need a buffer of more than [`MAX_SIZE`]
    /// values.
    pub(crate) fn prepare(&self, ws: &mut Workspace, n: usize) -> Result<()> {
        if ws.rows >= n && ws.widths == self.widths && ws.scratch.len() == self.layers.len() {
            return Ok(());
        }
        if self
            .widths
            .iter()
            .any(|&w| n.checked_mul(w).is_none_or(|v| v > MAX_SIZE))
        {
            return Err(Error::param(
                "batch",
                format!("{n} rows would need a buffer of more than {MAX_SIZE} values"),
            ));
        }
        let dropout = ws.dropout.take();
        *ws = self.workspace(n);
        ws.dropout = dropout;
        Ok(())
    }

    /// Runs layers `0..upto` on `x` (`n` rows, `n` at most the workspace's rows). With
    /// `single` (the attack's path), every row takes the one-row vector kernels, so that a
    /// row's values do not depend on the other rows of the batch or on its size.
    pub(crate) fn forward(
        &self,
        x: ArrayView2<'_, f32>,
        ws: &mut Workspace,
        upto: usize,
        single: bool,
    ) {
        let n = x.nrows();
        let Workspace {
            acts,
            scratch,
            dropout,
            ..
        } = ws;
        for (i, layer) in self.layers[..upto].iter().enumerate() {
            let (a, b) = (self.slot_in[i], self.slot_out[i]);
            if let Some(d) = dropout.as_mut().filter(|_| i > 0) {
                // Dropping layer i − 1's output now that every layer writing it has run.
                if d.rates[i - 1] > 0.0 {
                    d.apply(i - 1, acts[self.slot_out[i - 1] - 1].slice_mut(s![..n, ..]));
                }
            }
            if let Layer::Activation(act) = layer {
                if a == b {
                    activate(*act, acts[b - 1].slice_mut(s![..n, ..]), single);
                    continue;
                }
            }
            let (lo, hi) = acts.split_at_mut(b - 1);
            let input = if a == 0 {
                x.view()
            } else {
                lo[a - 1].slice(s![..n, ..])
            };
            let mut out = hi[0].slice_mut(s![..n, ..]);
            match layer {
                Layer::Activation(act) => {
                    out.assign(&input);
                    activate(*act, out, single);
                }
                _ => layer.forward(input, out, &mut scratch[i], single),
            }
        }
    }

    /// The output of layer `i` after [`Stack::forward`] over at least `i + 1` layers.
    pub(crate) fn output<'w>(&self, ws: &'w Workspace, i: usize, n: usize) -> ArrayView2<'w, f32> {
        ws.acts[self.slot_out[i] - 1].slice(s![..n, ..])
    }

    /// The last layer's output buffer (where a loss head turns logits into probabilities).
    pub(crate) fn last_slot(&self) -> usize {
        self.slot_out.last().copied().unwrap_or(0) - 1
    }

    /// Back-propagates from the gradient the loss head left in the last slot's delta buffer
    /// (after a full [`Stack::forward`]). Adds parameter gradients into `grads` (one array per
    /// parameter, in order) when given, and writes the input gradient when given; the input
    /// gradient of the first layer is skipped when nobody needs it.
    pub(crate) fn backward(
        &self,
        x: ArrayView2<'_, f32>,
        ws: &mut Workspace,
        mut grads: Option<&mut [Array2<f32>]>,
        mut input_grad: Option<ArrayViewMut2<'_, f32>>,
        single: bool,
    ) {
        let n = x.nrows();
        let Workspace {
            acts,
            deltas,
            scratch,
            dropout,
            ..
        } = ws;
        let mut param_end: usize = self.layers.iter().map(Layer::num_params).sum();
        for (i, layer) in self.layers.iter().enumerate().rev() {
            let (a, b) = (self.slot_in[i], self.slot_out[i]);
            if let Some(d) = dropout.as_ref().filter(|d| d.rates[i] > 0.0) {
                d.unapply(
                    i,
                    acts[b - 1].slice_mut(s![..n, ..]),
                    deltas[b - 1].slice_mut(s![..n, ..]),
                );
            }
            let count = layer.num_params();
            let param_start = param_end - count;
            if let Layer::Activation(act) = layer {
                let out = acts[b - 1].slice(s![..n, ..]);
                if a == b {
                    activate_backward(*act, out, deltas[b - 1].slice_mut(s![..n, ..]));
                } else if let Some(gx) = input_grad.as_mut() {
                    gx.assign(&deltas[b - 1].slice(s![..n, ..]));
                    activate_backward(*act, out, gx.view_mut());
                }
                continue;
            }
            let input = if a == 0 {
                x.view()
            } else {
                acts[a - 1].slice(s![..n, ..])
            };
            let (lo, hi) = deltas.split_at_mut(b - 1);
            let dy = hi[0].slice(s![..n, ..]);
            let dx = if a == 0 {
                input_grad.as_mut().map(|g| g.view_mut())
            } else {
                Some(lo[a - 1].slice_mut(s![..n, ..]))
            };
            let g = grads.as_deref_mut().map(|g| &mut g[param_start..param_end]);
            layer.backward(
                input,
                dy,
                dx,
                g,
                &mut scratch[i],
                single,
                self.dead_at_zero[i],
            );
            param_end = param_start;
        }
    }
}

/// Checks that `grads` has one buffer per parameter with the parameter's shape.
pub(crate) fn check_grads(params: &[&Array2<f32>], grads: &[Array2<f32>]) -> Result<()> {
    if grads.len() != params.len() || grads.iter().zip(params).any(|(g, p)| g.dim() != p.dim()) {
        return Err(Error::shape(
            "gradient buffers",
            format!("{} arrays with the parameters' shapes", params.len()),
            format!(
                "{} arrays of shapes {:?}",
                grads.len(),
                grads.iter().map(|g| g.dim()).collect::<Vec<_>>()
            ),
        ));
    }
    Ok(())
}
