//! A classifier as a stack of layers ending in softmax: the paper's fully connected networks,
//! `AE400-10`, and convolutional networks, all through one forward/backward engine.

use std::path::Path;

use ndarray::{s, Array1, Array2, ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2, Axis};
use ndarray_rand::rand_distr::Uniform;
use ndarray_rand::RandomExt;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};
use crate::io::ModelFile;
use crate::model::{
    check_finite, check_input_batch, check_labels, check_loss_and_grad_args, Classifier,
    Differentiable, Representation,
};
use crate::nn::layer::{weight_decay, Conv2d, Dense, Layer, MaxPool2d};
use crate::nn::persist;
use crate::nn::stack::{check_grads, Stack, Workspace};
use crate::nn::{Activation, Architecture, InputAffine, Trainable};

/// A classifier: convolutional stages (convolution, activation, max-pooling), dense hidden
/// layers with an activation, and a final dense layer whose outputs (logits) feed a softmax.
///
/// Built from an [`Architecture`], so the paper's names work directly:
///
/// ```
/// use blindspot::nn::{Architecture, Network};
/// use blindspot::Classifier;
/// use ndarray::Array2;
///
/// let fc = Network::new(Architecture::parse("FC20-10", 784).unwrap(), 7);
/// let conv = Network::new(Architecture::parse("CONV4-8-FC16-10", 784).unwrap(), 7);
/// let x = Array2::<f32>::zeros((3, 784));
/// assert_eq!(fc.logits(x.view()).unwrap().dim(), (3, 10));
/// assert_eq!(conv.logits(x.view()).unwrap().dim(), (3, 10));
/// ```
///
/// Parameters are visited layer by layer, weight then bias: `[W0, b0, W1, b1, …]`, with dense
/// weights `in × out`, convolution kernels `(k·k·C) × D` (see [`Conv2d`]) and biases `1 × out`
/// rows, so the generic trainer updates every model the same way.
#[derive(Debug, Clone, PartialEq)]
pub struct Network {
    arch: Architecture,
    stack: Stack,
    /// Indices of the layers whose outputs [`Representation`] exposes.
    readable: Vec<usize>,
}

/// The name the paper's fully connected networks had in this crate before 0.2: one type, one
/// name now ([`Network`] holds dense and convolutional stacks alike).
#[deprecated(note = "renamed to `Network`")]
pub type Mlp = Network;

/// The old name of a [`Network`]'s buffers.
#[deprecated(note = "renamed to `Workspace`")]
pub type MlpWorkspace = Workspace;

/// Rows per pass when a convolutional network evaluates a large batch: bounds the unfolded
/// input (im2col) to a few megabytes whatever the batch size.
const CONV_CHUNK: usize = 256;

impl Network {
    /// A freshly initialised network: Glorot-uniform weights (He-uniform for ReLU, as the
    /// convolutions always are), zero biases, drawn from a ChaCha8 generator seeded with
    /// `seed`, so the same seed gives the same net. Convolution kernels are drawn first, then
    /// the dense layers in order.
    pub fn new(arch: Architecture, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut params = Vec::new();
        let mut channels = arch.image().2;
        for stage in arch.conv_stages() {
            let fan_in = stage.kernel * stage.kernel * channels;
            let limit = (6.0 / fan_in as f32).sqrt();
            params.push(Array2::random_using(
                (fan_in, stage.channels),
                Uniform::new_inclusive(-limit, limit),
                &mut rng,
            ));
            params.push(Array2::zeros((1, stage.channels)));
            channels = stage.channels;
        }
        for pair in arch.widths().windows(2) {
            let (fan_in, fan_out) = (pair[0], pair[1]);
            let limit = match arch.activation() {
                Activation::Relu => (6.0 / fan_in as f32).sqrt(),
                _ => (6.0 / (fan_in + fan_out) as f32).sqrt(),
            };
            params.push(Array2::random_using(
                (fan_in, fan_out),
                Uniform::new_inclusive(-limit, limit),
                &mut rng,
            ));
            params.push(Array2::zeros((1, fan_out)));
        }
        Network::assemble(arch, params)
    }

    /// The shapes of the parameter arrays of `arch`, with their file names, in order.
    pub(super) fn param_shapes(arch: &Architecture) -> Vec<(String, (usize, usize))> {
        let mut shapes = Vec::new();
        let mut channels = arch.image().2;
        for (j, stage) in arch.conv_stages().iter().enumerate() {
            let patch = stage.kernel * stage.kernel * channels;
            shapes.push((format!("K{j}"), (patch, stage.channels)));
            shapes.push((format!("c{j}"), (1, stage.channels)));
            channels = stage.channels;
        }
        for (l, pair) in arch.widths().windows(2).enumerate() {
            shapes.push((format!("W{l}"), (pair[0], pair[1])));
            shapes.push((format!("b{l}"), (1, pair[1])));
        }
        shapes
    }

    /// Builds a network from given parameters in the order of [`Network::new`] (kernels and
    /// biases of each convolution, then `[W0, b0, …]` of the dense layers), checking every
    /// shape against `arch`.
    ///
    /// # Errors
    ///
    /// [`Error::Shape`] naming the first array of the wrong shape (or a wrong count);
    /// [`Error::NonFinite`] for a NaN or infinite parameter.
    pub fn from_params(arch: Architecture, params: Vec<Array2<f32>>) -> Result<Self> {
        let shapes = Network::param_shapes(&arch);
        if params.len() != shapes.len() {
            return Err(Error::shape(
                "parameter list",
                format!("{} arrays", shapes.len()),
                params.len(),
            ));
        }
        for ((name, shape), p) in shapes.iter().zip(&params) {
            if p.dim() != *shape {
                return Err(Error::shape(
                    name.clone(),
                    format!("{shape:?}"),
                    format!("{:?}", p.dim()),
                ));
            }
            check_finite(p.view(), &format!("parameter {name}"))?;
        }
        // The single-example kernels read parameters as contiguous row-major slices.
        let params = params
            .into_iter()
            .map(|p| {
                if p.is_standard_layout() {
                    p
                } else {
                    p.as_standard_layout().into_owned()
                }
            })
            .collect();
        Ok(Network::assemble(arch, params))
    }

    /// Lays out the layers of `arch` around parameters of the right shapes.
    fn assemble(arch: Architecture, params: Vec<Array2<f32>>) -> Self {
        let mut params = params.into_iter();
        let mut next = || params.next().expect("one array per parameter, checked");
        let act = arch.activation();
        let mut layers = Vec::new();
        let mut readable = Vec::new();
        for (stage, shape) in arch.conv_stages().iter().zip(arch.stage_shapes()) {
            layers.push(Layer::Conv2d(Conv2d {
                weight: next(),
                bias: next(),
                input: shape.input,
                kernel: stage.kernel,
                stride: stage.stride,
                padding: stage.padding,
                output: shape.conv,
                transposed: Default::default(),
            }));
            layers.push(Layer::Activation(act));
            if stage.pool > 1 {
                layers.push(Layer::MaxPool2d(MaxPool2d {
                    input: (shape.conv.0, shape.conv.1, stage.channels),
                    size: stage.pool,
                }));
            }
            readable.push(layers.len() - 1);
        }
        let dense = arch.widths().len() - 1;
        for l in 0..dense {
            layers.push(Layer::Dense(Dense {
                weight: next(),
                bias: next(),
            }));
            if l + 1 < dense {
                layers.push(Layer::Activation(act));
                readable.push(layers.len() - 1);
            }
        }
        let stack = Stack::new(layers, arch.input());
        Network {
            arch,
            stack,
            readable,
        }
    }

    /// The network with the fixed map `affine` applied to every input first (an imported
    /// model's input normalisation; see [`InputAffine`]), replacing any it had. Inputs, and
    /// so an attack's box, stay in the caller's units; the map has no trainable parameters.
    ///
    /// # Errors
    ///
    /// [`Error::Shape`] if the map's width is not the network's input width.
    pub fn try_with_input_affine(mut self, affine: InputAffine) -> Result<Network> {
        let input = self.arch.input();
        if affine.width() != input {
            return Err(Error::shape("input affine width", input, affine.width()));
        }
        let mut layers = self.stack.layers().to_vec();
        if matches!(layers.first(), Some(Layer::Affine(_))) {
            layers[0] = Layer::Affine(affine);
        } else {
            layers.insert(0, Layer::Affine(affine));
            self.readable.iter_mut().for_each(|i| *i += 1);
        }
        self.stack = Stack::new(layers, input);
        Ok(self)
    }

    /// The input normalisation set by [`Network::try_with_input_affine`], if any.
    pub fn input_affine(&self) -> Option<&InputAffine> {
        match self.layers().first() {
            Some(Layer::Affine(a)) => Some(a),
            _ => None,
        }
    }

    /// The architecture.
    pub fn arch(&self) -> &Architecture {
        &self.arch
    }

    /// The layers, input to logits.
    pub fn layers(&self) -> &[Layer] {
        self.stack.layers()
    }

    /// Number of dense layers (hidden layers plus the softmax layer).
    pub fn num_dense(&self) -> usize {
        self.dense_layers().count()
    }

    fn dense_layers(&self) -> impl Iterator<Item = &Dense> {
        self.layers().iter().filter_map(|l| match l {
            Layer::Dense(d) => Some(d),
            _ => None,
        })
    }

    /// Weights of dense layer `l`, `in × out`.
    pub fn weights(&self, l: usize) -> Option<ArrayView2<'_, f32>> {
        self.dense_layers().nth(l).map(|d| d.weight())
    }

    /// Bias of dense layer `l`.
    pub fn bias(&self, l: usize) -> Option<ArrayView1<'_, f32>> {
        self.dense_layers().nth(l).map(|d| d.bias.row(0))
    }

    /// Buffers for batches of up to `batch` rows (grown on demand for larger batches).
    pub fn workspace(&self, batch: usize) -> Workspace {
        self.stack.workspace(batch)
    }

    /// `Ok` if every parameter still has the shape the network was built with (see
    /// [`Trainable::params_mut`]).
    pub(crate) fn check_params(&self) -> Result<()> {
        self.stack.check_params()
    }

    fn check_input(&self, x: ArrayView2<'_, f32>) -> Result<()> {
        self.stack.check_params()?;
        check_input_batch(x, self.arch.input())
    }

    /// Forward pass with the softmax head: probabilities in the last slot and, with labels,
    /// per-example cross-entropy in `ws.losses`.
    fn forward_softmax(
        &self,
        x: ArrayView2<'_, f32>,
        labels: Option<&[usize]>,
        ws: &mut Workspace,
        single: bool,
    ) {
        let n = x.nrows();
        self.stack.forward(x, ws, self.layers().len(), single);
        let last = self.stack.last_slot();
        softmax_xent_rows(
            ws.acts[last].slice_mut(s![..n, ..]),
            labels,
            ws.losses.slice_mut(s![..n]),
        );
    }

    /// Puts `scale · (p − onehot(y))`, the gradient of `scale · Σ loss_i` with respect to the
    /// logits, into the last slot's delta buffer.
    fn softmax_delta(&self, labels: &[usize], scale: f32, ws: &mut Workspace) {
        let n = labels.len();
        let last = self.stack.last_slot();
        let mut d = ws.deltas[last].slice_mut(s![..n, ..]);
        d.assign(&ws.acts[last].slice(s![..n, ..]));
        for (mut row, &y) in d.axis_iter_mut(Axis(0)).zip(labels) {
            row[y] -= 1.0;
            if scale != 1.0 {
                row.mapv_inplace(|v| v * scale);
            }
        }
    }

    /// Per-example loss and input gradient into caller-owned buffers: the allocation-free form
    /// of [`Differentiable::loss_and_input_grad`] for hot loops such as attacks. A workspace
    /// made for another network or fewer rows is rebuilt.
    ///
    /// # Errors
    ///
    /// [`Error::Shape`] for a wrong input width or wrong buffer sizes, [`Error::EmptyInput`]
    /// for no rows, [`Error::NonFinite`] for a NaN or infinite input, a loss that overflows
    /// (inputs so large that the logits are no longer finite) or an input gradient that does
    /// (`grad` then holds it, not to be used), [`Error::LabelOutOfRange`].
    pub fn loss_and_input_grad_into(
        &self,
        x: ArrayView2<'_, f32>,
        labels: &[usize],
        ws: &mut Workspace,
        mut losses: ArrayViewMut1<'_, f32>,
        grad: ArrayViewMut2<'_, f32>,
    ) -> Result<()> {
        check_loss_and_grad_args(
            x,
            self.arch.input(),
            labels,
            self.arch.classes(),
            losses.view(),
            grad.view(),
        )?;
        self.stack.check_params()?;
        let n = x.nrows();
        self.stack.prepare(ws, n)?;
        self.forward_softmax(x, Some(labels), ws, true);
        let l = ws.losses.slice(s![..n]);
        check_finite(l, "loss (the input is too large for finite logits)")?;
        losses.assign(&l);
        self.softmax_delta(labels, 1.0, ws);
        let mut grad = grad;
        self.stack
            .backward(x, ws, None, Some(grad.view_mut()), true);
        // Finite losses do not make a finite gradient: weights of 1e30 give an infinite
        // one, which must not reach an attack as a search direction.
        check_finite(
            grad.view(),
            "input gradient (the weights or the input are too large for a finite gradient)",
        )?;
        Ok(())
    }

    /// The output of layer `upto` for a batch, in chunks for convolutional networks.
    fn forward_to(&self, x: ArrayView2<'_, f32>, upto: usize) -> Result<Array2<f32>> {
        let n = x.nrows();
        let width = self.stack.width_after(upto);
        let chunk = if self.arch.is_conv() { CONV_CHUNK } else { n };
        if chunk >= n {
            let mut ws = Workspace::default();
            self.stack.prepare(&mut ws, n)?;
            self.stack.forward(x, &mut ws, upto + 1, true);
            return Ok(self.stack.output(&ws, upto, n).to_owned());
        }
        let mut out = Array2::zeros((n, width));
        let mut ws = Workspace::default();
        self.stack.prepare(&mut ws, chunk)?;
        for lo in (0..n).step_by(chunk) {
            let hi = (lo + chunk).min(n);
            self.stack
                .forward(x.slice(s![lo..hi, ..]), &mut ws, upto + 1, true);
            out.slice_mut(s![lo..hi, ..])
                .assign(&self.stack.output(&ws, upto, hi - lo));
        }
        Ok(out)
    }

    /// Softmax probabilities for a batch.
    ///
    /// # Errors
    ///
    /// As [`Classifier::logits`].
    pub fn probabilities(&self, x: ArrayView2<'_, f32>) -> Result<Array2<f32>> {
        let mut z = self.logits(x)?;
        let mut unused = Array1::zeros(z.nrows());
        softmax_xent_rows(z.view_mut(), None, unused.view_mut());
        Ok(z)
    }

    /// The output of layer `i` of [`Network::layers`] for a batch (for an activation layer,
    /// after the activation; for the layer before it, the pre-activation).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] if `i` is not a layer index; [`Error::NonFinite`] naming
    /// the layer if an output is NaN or infinite (inputs or weights too large for it);
    /// otherwise as [`Classifier::logits`].
    pub fn layer_output(&self, x: ArrayView2<'_, f32>, i: usize) -> Result<Array2<f32>> {
        if i >= self.layers().len() {
            return Err(Error::param(
                "layer",
                format!(
                    "layer {i} out of range: the network has {}",
                    self.layers().len()
                ),
            ));
        }
        self.check_input(x)?;
        let out = self.forward_to(x, i)?;
        check_finite(
            out.view(),
            &format!("output of layer {i} (the input is too large for finite values)"),
        )?;
        Ok(out)
    }

    /// Index (into [`Network::layers`]) of the layer whose output is representation layer `k`.
    pub fn readable_layer(&self, k: usize) -> Option<usize> {
        self.readable.get(k).copied()
    }

    /// The part of the network above level `level` as a network of its own: level 0 is the
    /// input (the whole network), level `k ≥ 1` the output of hidden layer `k − 1` (see
    /// [`Representation`]). Its input is that layer's output `φ(x)`, and its logits on `φ(x)`
    /// are the whole network's logits on `x`; its parameters are copies, in the order of the
    /// last ones of [`Trainable::params`], and its weight decay is the network's.
    ///
    /// This is what the paper's layer-wise adversarial examples attack: any [`Attack`](crate::attack::Attack)
    /// takes it unchanged.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] if `level` is past the last hidden layer, or if the layers
    /// above it include a convolution or pooling (only dense tops can stand alone).
    pub fn above(&self, level: usize) -> Result<Network> {
        if level == 0 {
            return Ok(self.clone());
        }
        let Some(&i) = self.readable.get(level - 1) else {
            return Err(Error::param(
                "level",
                format!(
                    "level {level} out of range: the network has levels 0..={}",
                    self.readable.len()
                ),
            ));
        };
        let upper = &self.layers()[i + 1..];
        if upper
            .iter()
            .any(|l| matches!(l, Layer::Conv2d(_) | Layer::MaxPool2d(_)))
        {
            return Err(Error::param(
                "level",
                format!("the layers above level {level} include convolutions or pooling"),
            ));
        }
        let input = self.stack.width_after(i);
        let dense: Vec<&Dense> = upper
            .iter()
            .filter_map(|l| match l {
                Layer::Dense(d) => Some(d),
                _ => None,
            })
            .collect();
        let hidden: Vec<usize> = dense[..dense.len() - 1]
            .iter()
            .map(|d| d.outputs())
            .collect();
        let arch = Architecture::new(
            input,
            hidden,
            self.arch.classes(),
            self.arch.activation(),
            self.arch.weight_decay(),
        )?;
        let params = dense
            .iter()
            .flat_map(|d| [d.weight.clone(), d.bias.clone()])
            .collect();
        Ok(Network::assemble(arch, params))
    }

    /// Levels [`Network::above`] accepts: the input and each hidden layer.
    pub fn levels(&self) -> usize {
        self.readable.len() + 1
    }
}

/// Softmax of each row in place, and (with labels) each row's cross-entropy `-log p[y]`,
/// computed from the logits via log-sum-exp so that it never takes `log(0)`.
pub(crate) fn softmax_xent_rows(
    mut z: ArrayViewMut2<'_, f32>,
    labels: Option<&[usize]>,
    mut losses: ArrayViewMut1<'_, f32>,
) {
    for (i, mut row) in z.axis_iter_mut(Axis(0)).enumerate() {
        let m = row.fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        let zy = labels.map(|l| row[l[i]]);
        let mut sum = 0.0;
        row.mapv_inplace(|v| {
            let e = (v - m).exp();
            sum += e;
            e
        });
        let inv = 1.0 / sum;
        row.mapv_inplace(|v| v * inv);
        if let Some(zy) = zy {
            losses[i] = sum.ln() + m - zy;
        }
    }
}

impl Classifier for Network {
    fn input_dim(&self) -> usize {
        self.arch.input()
    }

    fn num_classes(&self) -> usize {
        self.arch.classes()
    }

    /// # Errors
    ///
    /// As [`Network::loss_and_input_grad_into`]; logits that overflow (inputs far outside
    /// any image's range) are [`Error::NonFinite`], never returned.
    fn logits(&self, x: ArrayView2<'_, f32>) -> Result<Array2<f32>> {
        self.check_input(x)?;
        let z = self.forward_to(x, self.layers().len() - 1)?;
        check_finite(
            z.view(),
            "logits (the input is too large for finite logits)",
        )?;
        Ok(z)
    }
}

impl Differentiable for Network {
    type Scratch = Workspace;

    fn loss_and_input_grad_with(
        &self,
        x: ArrayView2<'_, f32>,
        labels: &[usize],
        scratch: &mut Workspace,
        losses: ArrayViewMut1<'_, f32>,
        grad: ArrayViewMut2<'_, f32>,
    ) -> Result<()> {
        self.loss_and_input_grad_into(x, labels, scratch, losses, grad)
    }

    /// [`CONV_LOCKSTEP_ROWS`] for a convolutional network; dense ones leave it to the attack.
    fn lockstep_rows(&self) -> Option<usize> {
        self.arch.is_conv().then_some(CONV_LOCKSTEP_ROWS)
    }
}

/// The most images an attack advances together against a convolutional [`Network`]. Its
/// attack passes compute each image on its own (the kernels skip each image's zeros), so a
/// batch saves no model work, and a large group's feature maps and solver buffers crowd the
/// cache: on the zoo convnet (32 images, one thread, `attack_compare --batch N`), groups of 2,
/// 4, 8 and 16 took 1.01 and 0.99, 1.03 and 0.97, 1.09 and 1.06, 1.14 and 1.14 times the
/// one-at-a-time time in two runs, and one group of 100 about 1.2 times.
pub const CONV_LOCKSTEP_ROWS: usize = 4;

impl Representation for Network {
    /// The hidden layers: each convolutional stage's output (after pooling), then each hidden
    /// dense layer's output (after the activation). For a dense network, layer `k` is hidden
    /// layer `k`.
    fn num_layers(&self) -> usize {
        self.readable.len()
    }

    fn layer_dim(&self, k: usize) -> Result<usize> {
        self.readable
            .get(k)
            .map(|&i| self.stack.width_after(i))
            .ok_or_else(|| {
                Error::param(
                    "layer",
                    format!(
                        "layer {k} out of range: the model has {} hidden layers",
                        self.num_layers()
                    ),
                )
            })
    }

    /// # Errors
    ///
    /// [`Error::InvalidParameter`] if `k` is not a hidden layer, [`Error::Shape`] or
    /// [`Error::EmptyInput`] for a bad batch, [`Error::NonFinite`] naming the layer if a
    /// value is NaN or infinite (finite but huge inputs can overflow it).
    fn representation(&self, x: ArrayView2<'_, f32>, k: usize) -> Result<Array2<f32>> {
        self.layer_dim(k)?;
        self.check_input(x)?;
        let out = self.forward_to(x, self.readable[k])?;
        check_finite(
            out.view(),
            &format!("representation of layer {k} (the input is too large for finite values)"),
        )?;
        Ok(out)
    }
}

impl Trainable for Network {
    type Workspace = Workspace;

    fn workspace(&self, batch: usize) -> Workspace {
        Network::workspace(self, batch)
    }

    fn params(&self) -> Vec<&Array2<f32>> {
        self.stack.params()
    }

    fn params_mut(&mut self) -> Vec<&mut Array2<f32>> {
        self.stack.params_mut()
    }

    fn accumulate_grad(
        &self,
        x: ArrayView2<'_, f32>,
        y: &[usize],
        scale: f32,
        grads: &mut [Array2<f32>],
        ws: &mut Workspace,
    ) -> Result<f32> {
        // Shapes only: scanning every batch for NaN would cost 3% of an epoch, and a NaN input
        // cannot cause a panic here; it makes the objective non-finite, which the trainer
        // reports as an error before any parameter changes.
        if x.ncols() != self.arch.input() || x.nrows() == 0 {
            return Err(Error::shape(
                "input batch",
                format!("n × {} with n >= 1", self.arch.input()),
                format!("{} × {}", x.nrows(), x.ncols()),
            ));
        }
        check_labels(y, x.nrows(), self.arch.classes())?;
        self.stack.check_params()?;
        check_grads(&self.stack.params(), grads)?;
        self.stack.prepare(ws, x.nrows())?;
        self.forward_softmax(x, Some(y), ws, false);
        let loss = ws.losses.slice(s![..x.nrows()]).sum();
        self.softmax_delta(y, scale, ws);
        self.stack.backward(x, ws, Some(grads), None, false);
        Ok(loss)
    }

    /// `rates[k]` drops units of hidden layer `k`'s output (after its activation, or after a
    /// convolutional stage's pooling): the layers [`Representation`] exposes.
    fn enable_dropout(&self, ws: &mut Workspace, rates: &[f32], seed: u64) -> Result<()> {
        if rates.len() > self.readable.len() {
            return Err(Error::param(
                "dropout",
                format!(
                    "{} rates for a network with {} hidden layers",
                    rates.len(),
                    self.readable.len()
                ),
            ));
        }
        if let Some(r) = rates.iter().find(|r| !(0.0..1.0).contains(*r)) {
            return Err(Error::param(
                "dropout",
                format!("rates must be in [0, 1), got {r}"),
            ));
        }
        let layers: Vec<(usize, f32)> = self
            .readable
            .iter()
            .copied()
            .zip(rates.iter().copied())
            .collect();
        self.stack.enable_dropout(ws, &layers, seed);
        Ok(())
    }

    /// Every parameter is decayed, biases included, as SGD weight decay does. It matters only
    /// for strong decay: FC10(1) reaches 19.9% test error this way (the paper: 20%) but
    /// 21.3–21.8% with the biases left free.
    fn regularize(&self, grads: &mut [Array2<f32>]) -> f32 {
        weight_decay(self.arch.weight_decay(), &self.stack.params(), grads)
    }
}

impl Network {
    /// Saves the network as `.npz` (arrays `K0, c0, …` for convolutions, `W0, b0, …` for
    /// dense layers, and a header with the architecture), atomically.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] or [`Error::ModelFile`] if the file cannot be written.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        persist::save(self, path.as_ref())
    }

    /// The arrays and header that [`Network::save`] writes; callers may add header keys (the
    /// zoo records its cache key there) before saving.
    pub fn to_model_file(&self) -> ModelFile {
        persist::to_file(self)
    }

    /// Loads a network saved by [`Network::save`], checking the header and every array's shape.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if unreadable; [`Error::ModelFile`] naming the file if it is not a
    /// network file, its header is inconsistent, or an array is missing or misshapen.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        persist::load(path.as_ref())
    }

    /// Rebuilds a network from a model file (its [`ModelFile::path`] named in errors).
    ///
    /// # Errors
    ///
    /// As [`Network::load`].
    pub fn from_model_file(file: ModelFile) -> Result<Self> {
        persist::from_file(file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Differentiable;

    /// The attack path leaves zero the input gradient of a dense layer's zero inputs when a
    /// ReLU (through max-pooling or not) produced them; since that ReLU discards the gradient
    /// there anyway, the network's loss and input gradient keep every bit.
    #[test]
    fn leaving_dead_gradients_zero_changes_no_bit() {
        let conv = Architecture::parse_image("CONV8-16-FC32-10", (12, 12, 1)).unwrap();
        let dense = Architecture::parse("FC40-30-10", 64)
            .unwrap()
            .with_activation(Activation::Relu);
        for arch in [conv, dense] {
            let net = Network::new(arch.clone(), 7);
            let mut full = net.clone();
            // The convnet's first dense layer and the FC net's second and third.
            assert!(full.stack.keep_dead_gradients() >= 1, "{arch:?}");
            let n = 5;
            let x = Array2::random_using(
                (n, arch.input()),
                Uniform::new(0.0f32, 1.0),
                &mut ChaCha8Rng::seed_from_u64(3),
            );
            let labels: Vec<usize> = (0..n).map(|i| (i * 3) % 10).collect();
            let (l1, g1) = net.loss_and_input_grad(x.view(), &labels).unwrap();
            let (l2, g2) = full.loss_and_input_grad(x.view(), &labels).unwrap();
            assert_eq!(l1, l2);
            assert_eq!(g1, g2);
            assert!(g1.iter().any(|&v| v != 0.0));
        }
    }
}
