//! candle models behind the crate's traits (cargo feature `candle`).

use std::fmt;

use candle_core::{DType, Device, Module, Tensor, Var};
use ndarray::{s, Array1, Array2, ArrayView2, ArrayViewMut1, ArrayViewMut2};

use crate::error::{Error, Result};
use crate::model::{
    check_finite, check_input_batch, check_loss_and_grad_args, check_model_output, Classifier,
    Differentiable, Representation,
};

/// A hidden output: computed from the wrapped module and the input batch tensor.
type HiddenFn<M> = Box<dyn Fn(&M, &Tensor) -> candle_core::Result<Tensor> + Send + Sync>;

struct Hidden<M> {
    name: String,
    dim: usize,
    f: HiddenFn<M>,
}

/// A candle model as a [`Classifier`] + [`Differentiable`] (+ [`Representation`] for the hidden
/// outputs given with [`CandleModel::try_with_hidden`]).
///
/// The module is anything implementing [`candle_core::Module`] — a `candle_nn` network, a
/// struct of yours, or a closure `Fn(&Tensor) -> candle_core::Result<Tensor>` — mapping a batch
/// `n × input_shape` to logits `n × classes`. The crate's batches are rows of `n × input_dim`
/// `f32`; the adapter copies them into one tensor (from the contiguous slice, no per-element
/// loop) and reshapes it to `[n, input_shape…]`, e.g. `[n, 1, 28, 28]` for a convnet.
///
/// **Gradients**: [`Differentiable::loss_and_input_grad_with`] makes the input a candle
/// [`Var`], runs the forward pass, computes the per-example cross-entropy
/// `logsumexp(z_i) − z_i[y_i]` from the logits exactly as the crate's own models do (in `f32`,
/// log-sum-exp), and back-propagates `∂L/∂z = softmax(z) − onehot(y)` through candle's autograd
/// to the input. Examples must not interact in the forward pass (no batch norm in training mode),
/// which holds for any model in inference mode.
///
/// **Speed**: candle also computes gradients for every tracked parameter (`Var`) the output
/// depends on. Build the model for attacking from *detached* weights (e.g.
/// `VarBuilder::from_tensors` with `var.as_tensor().detach()`, as `examples/candle_model.rs`
/// does) so that only the input gradient is computed.
///
/// **Batches**: the module always sees chunks of 16 rows (the last padded by repeating a
/// row), so that a row's logits, loss and gradient are the same bits whatever batch it came
/// in; a one-row call therefore costs a 16-row evaluation.
///
/// **Device**: [`CandleModel::new`] runs on the CPU; [`CandleModel::on_device`] takes any
/// candle [`Device`] (CUDA, Metal with candle's features), on which the module's weights must
/// live.
///
/// Failures inside candle (a module that rejects the input shape, a device error) are
/// [`Error::Framework`], with candle's error as their source. A module whose output is
/// not `n × classes` is an [`Error::Shape`]; non-finite logits or gradients are
/// [`Error::NonFinite`].
///
/// ```
/// use blindspot::adapters::CandleModel;
/// use blindspot::{Classifier, Differentiable};
/// use candle_core::{Device, Tensor};
/// use ndarray::Array2;
///
/// // A linear model 4 → 3 as a closure.
/// let w = Tensor::arange(0f32, 12.0, &Device::Cpu)?.reshape((4, 3))?;
/// let model = CandleModel::new(move |x: &Tensor| x.matmul(&w), &[4], 3)?;
/// let x = Array2::from_elem((2, 4), 0.1f32);
/// assert_eq!(model.logits(x.view())?.dim(), (2, 3));
/// let (loss, grad) = model.loss_and_input_grad(x.view(), &[0, 2])?;
/// assert!(loss[0] > loss[1]);
/// assert_eq!(grad.dim(), (2, 4));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct CandleModel<M> {
    module: M,
    device: Device,
    input_shape: Vec<usize>,
    input_dim: usize,
    classes: usize,
    hidden: Vec<Hidden<M>>,
}

impl<M> fmt::Debug for CandleModel<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CandleModel")
            .field("device", &self.device)
            .field("input_shape", &self.input_shape)
            .field("classes", &self.classes)
            .field(
                "hidden",
                &self
                    .hidden
                    .iter()
                    .map(|h| (h.name.as_str(), h.dim))
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// Rows per candle evaluation: every batch is evaluated in chunks of exactly this many rows,
/// the last one padded by repeating its last row (the padded rows' outputs are dropped).
///
/// candle's CPU matrix product (the `gemm` crate) chooses its blocking from the matrix sizes,
/// so a row's logits and gradient change in the last bits with the number of rows evaluated
/// with it; a lockstep batch of attacks would then not give each image the result it gets
/// alone. With one fixed size the products always have the same shape, and rows do not
/// interact, so a row's values depend on the row alone (tests/batch_rows.rs checks it).
///
/// The size is a trade. On the CPU a candle call costs about a millisecond whatever its
/// rows up to a few dozen (graph building, autograd, thread wake-ups), so a one-row call
/// padded to 16 rows costs about 30% more than before (FC100-100-10: 1.3 ms against 1.0 ms,
/// on a busy 2-core machine), and a batch of 50 takes four calls instead of one (109 µs per
/// row against 44). 32 rows would halve the latter and double the former's extra cost.
const ROW_CHUNK: usize = 16;

/// `x` in chunks of [`ROW_CHUNK`] contiguous rows, each with the index of its first row; the
/// last chunk is padded by repeating the batch's last row.
fn padded_chunks(x: ArrayView2<'_, f32>) -> impl Iterator<Item = (usize, Array2<f32>)> + '_ {
    let n = x.nrows();
    (0..n).step_by(ROW_CHUNK).map(move |lo| {
        let chunk =
            Array2::from_shape_fn((ROW_CHUNK, x.ncols()), |(i, j)| x[[(lo + i).min(n - 1), j]]);
        (lo, chunk)
    })
}

/// A candle failure as the crate's error, saying what the adapter was doing.
fn candle_error(during: &'static str) -> impl Fn(candle_core::Error) -> Error {
    move |e| Error::Framework {
        framework: "candle",
        during,
        source: Box::new(e),
    }
}

/// A batch `n × m` as an `n × m` `f32` tensor on `device`, copied from the contiguous slice
/// (a non-contiguous view is first made contiguous).
///
/// # Errors
///
/// [`Error::Framework`] if candle cannot allocate the tensor on the device.
pub fn tensor_from_array(x: ArrayView2<'_, f32>, device: &Device) -> Result<Tensor> {
    let x = x.as_standard_layout();
    let data = x.as_slice().expect("standard layout is contiguous");
    Tensor::from_slice(data, x.dim(), device).map_err(candle_error("tensor_from_array"))
}

/// A tensor of any shape `[n, …]` (any float dtype, any device) as an `n × rest` `f32` array.
///
/// # Errors
///
/// [`Error::Shape`] for a tensor of rank 0; [`Error::Framework`] if candle cannot read it.
pub fn array_from_tensor(t: &Tensor) -> Result<Array2<f32>> {
    let dims = t.dims();
    let n = *dims
        .first()
        .ok_or_else(|| Error::shape("tensor", "rank ≥ 1", "a scalar"))?;
    let rest: usize = dims[1..].iter().product();
    let data = t
        .flatten_all()
        .and_then(|t| t.to_dtype(DType::F32))
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(candle_error("array_from_tensor"))?;
    Ok(Array2::from_shape_vec((n, rest), data).expect("length is the tensor's element count"))
}

impl<M: Module> CandleModel<M> {
    /// Wraps `module` on the CPU. `input_shape` is the shape of one example as the module
    /// expects it (`[784]` for a flat MLP, `[1, 28, 28]` for a convnet); its product is
    /// [`Classifier::input_dim`]. One forward pass on a zero batch checks that the module
    /// accepts that shape and returns `n × classes`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] for an empty or zero-sized shape or fewer than 2 classes;
    /// [`Error::Framework`] for a module that fails on the shape; [`Error::Shape`] if its
    /// output is not `n × classes`.
    pub fn new(module: M, input_shape: &[usize], classes: usize) -> Result<Self> {
        Self::on_device(module, input_shape, classes, Device::Cpu)
    }

    /// As [`CandleModel::new`], with the input tensors created on `device`.
    ///
    /// # Errors
    ///
    /// As [`CandleModel::new`].
    pub fn on_device(
        module: M,
        input_shape: &[usize],
        classes: usize,
        device: Device,
    ) -> Result<Self> {
        if input_shape.is_empty() || input_shape.contains(&0) {
            return Err(Error::param(
                "input_shape",
                format!("must be non-empty with no zero dimension, got {input_shape:?}"),
            ));
        }
        if classes < 2 {
            return Err(Error::param(
                "classes",
                format!("need at least 2 classes, got {classes}"),
            ));
        }
        let model = CandleModel {
            module,
            device,
            input_dim: input_shape.iter().product(),
            input_shape: input_shape.to_vec(),
            classes,
            hidden: Vec::new(),
        };
        // Several rows (a chunk), so that a module that mixes or drops the batch dimension
        // shows up here.
        model.checked_logits(Array2::zeros((2, model.input_dim)).view())?;
        Ok(model)
    }

    /// Adds a readable hidden layer for [`Representation`]: `f(module, x)` returns its output
    /// for the input batch tensor `x` (already shaped `[n, input_shape…]`), of any shape
    /// `[n, …]`, flattened to `n × dim` when read. Layers are numbered in the order added;
    /// [`CandleModel::layer_index`] finds one by name. The width is found by one forward pass.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] for a name already used; [`Error::Framework`] for a
    /// function that fails on a zero batch; [`Error::Shape`] if its output does not have one
    /// row per example.
    pub fn try_with_hidden<F>(mut self, name: impl Into<String>, f: F) -> Result<Self>
    where
        F: Fn(&M, &Tensor) -> candle_core::Result<Tensor> + Send + Sync + 'static,
    {
        let name = name.into();
        if self.layer_index(&name).is_some() {
            return Err(Error::param(
                "name",
                format!("hidden layer `{name}` is already defined"),
            ));
        }
        let x = self.input_tensor(Array2::zeros((2, self.input_dim)).view())?;
        let out = f(&self.module, &x).map_err(candle_error("a hidden-layer function"))?;
        let a = array_from_tensor(&out)?;
        if a.nrows() != 2 || a.ncols() == 0 {
            return Err(Error::shape(
                format!("hidden layer `{name}`"),
                "2 × (at least 1) for a batch of 2",
                format!("{:?}", out.dims()),
            ));
        }
        self.hidden.push(Hidden {
            name,
            dim: a.ncols(),
            f: Box::new(f),
        });
        Ok(self)
    }

    /// The wrapped module.
    pub fn module(&self) -> &M {
        &self.module
    }

    /// The device input tensors are created on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The shape of one example as the module sees it.
    pub fn input_shape(&self) -> &[usize] {
        &self.input_shape
    }

    /// Names of the hidden layers, in layer-index order.
    pub fn hidden_names(&self) -> impl Iterator<Item = &str> {
        self.hidden.iter().map(|h| h.name.as_str())
    }

    /// Layer index of the hidden layer called `name`.
    pub fn layer_index(&self, name: &str) -> Option<usize> {
        self.hidden.iter().position(|h| h.name == name)
    }

    /// Checks a batch and copies it into a tensor `[n, input_shape…]`.
    fn input_tensor(&self, x: ArrayView2<'_, f32>) -> Result<Tensor> {
        self.check_input(x)?;
        tensor_from_array(x, &self.device)?
            .reshape(self.batch_shape(x.nrows()))
            .map_err(candle_error("reshaping the input"))
    }

    fn check_input(&self, x: ArrayView2<'_, f32>) -> Result<()> {
        check_input_batch(x, self.input_dim)
    }

    fn batch_shape(&self, n: usize) -> Vec<usize> {
        let mut shape = Vec::with_capacity(1 + self.input_shape.len());
        shape.push(n);
        shape.extend_from_slice(&self.input_shape);
        shape
    }

    /// Runs the module on `x` and checks that the output is `n × classes`.
    fn forward(&self, x: &Tensor, n: usize) -> Result<Tensor> {
        let z = self
            .module
            .forward(x)
            .map_err(candle_error("the forward pass"))?;
        if z.dims() != [n, self.classes] {
            return Err(Error::shape(
                "candle model output",
                format!("[{n}, {}] (n × classes)", self.classes),
                format!("{:?}", z.dims()),
            ));
        }
        Ok(z)
    }

    /// The module's logits for a batch, checked to be `n × classes` and finite, evaluated in
    /// chunks of [`ROW_CHUNK`] rows.
    fn checked_logits(&self, x: ArrayView2<'_, f32>) -> Result<Array2<f32>> {
        self.check_input(x)?;
        let mut out = Array2::zeros((x.nrows(), self.classes));
        for (lo, chunk) in padded_chunks(x) {
            let t = self.input_tensor(chunk.view())?;
            let z = Self::logits_array(&self.forward(&t, ROW_CHUNK)?)?;
            let hi = (lo + ROW_CHUNK).min(x.nrows());
            out.slice_mut(s![lo..hi, ..])
                .assign(&z.slice(s![..hi - lo, ..]));
        }
        Ok(out)
    }

    /// Logits as an array, checked finite.
    fn logits_array(z: &Tensor) -> Result<Array2<f32>> {
        let z = array_from_tensor(z)?;
        check_finite(z.view(), "candle model logits")?;
        Ok(z)
    }
}

impl<M: Module + Sync> Classifier for CandleModel<M> {
    fn input_dim(&self) -> usize {
        self.input_dim
    }

    fn num_classes(&self) -> usize {
        self.classes
    }

    fn logits(&self, x: ArrayView2<'_, f32>) -> Result<Array2<f32>> {
        self.checked_logits(x)
    }
}

impl<M: Module + Sync> Differentiable for CandleModel<M> {
    type Scratch = ();

    fn loss_and_input_grad_with(
        &self,
        x: ArrayView2<'_, f32>,
        labels: &[usize],
        _scratch: &mut (),
        mut losses: ArrayViewMut1<'_, f32>,
        mut grad: ArrayViewMut2<'_, f32>,
    ) -> Result<()> {
        check_loss_and_grad_args(
            x,
            self.input_dim,
            labels,
            self.classes,
            losses.view(),
            grad.view(),
        )?;
        let n = x.nrows();
        let padded_labels: Vec<usize> = (0..n.div_ceil(ROW_CHUNK) * ROW_CHUNK)
            .map(|i| labels[i.min(n - 1)])
            .collect();
        let mut chunk_losses = Array1::zeros(ROW_CHUNK);
        let mut chunk_grad = Array2::zeros((ROW_CHUNK, self.input_dim));
        for (lo, chunk) in padded_chunks(x) {
            let hi = (lo + ROW_CHUNK).min(n);
            self.loss_and_grad_chunk(
                chunk.view(),
                &padded_labels[lo..lo + ROW_CHUNK],
                chunk_losses.view_mut(),
                chunk_grad.view_mut(),
            )?;
            losses
                .slice_mut(s![lo..hi])
                .assign(&chunk_losses.slice(s![..hi - lo]));
            grad.slice_mut(s![lo..hi, ..])
                .assign(&chunk_grad.slice(s![..hi - lo, ..]));
        }
        Ok(())
    }
}

impl<M: Module> CandleModel<M> {
    /// Per-row loss and input gradient of one contiguous chunk of [`ROW_CHUNK`] rows.
    fn loss_and_grad_chunk(
        &self,
        x: ArrayView2<'_, f32>,
        labels: &[usize],
        mut losses: ArrayViewMut1<'_, f32>,
        mut grad: ArrayViewMut2<'_, f32>,
    ) -> Result<()> {
        let (n, m) = x.dim();
        let x_std = x.as_standard_layout();
        let input = Var::from_slice(
            x_std.as_slice().expect("standard layout is contiguous"),
            (n, m),
            &self.device,
        )
        .map_err(candle_error("creating the input variable"))?;
        let shaped = input
            .as_tensor()
            .reshape(self.batch_shape(n))
            .map_err(candle_error("reshaping the input"))?;
        let z = self.forward(&shaped, n)?;
        let mut dz = Self::logits_array(&z)?;
        // The crate's cross-entropy: softmax in place, loss by log-sum-exp, then ∂L/∂z.
        for (i, mut row) in dz.outer_iter_mut().enumerate() {
            let mx = row.fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            let zy = row[labels[i]];
            let mut sum = 0.0;
            row.mapv_inplace(|v| {
                let e = (v - mx).exp();
                sum += e;
                e
            });
            let inv = 1.0 / sum;
            row.mapv_inplace(|v| v * inv);
            losses[i] = sum.ln() + mx - zy;
            row[labels[i]] -= 1.0;
        }
        // Σ_i ⟨z_i, ∂L/∂z_i⟩ with ∂L/∂z held constant: its input gradient is each row's
        // ∂L_i/∂x_i.
        let seed = tensor_from_array(dz.view(), &self.device)?
            .to_dtype(z.dtype())
            .map_err(candle_error("the backward seed"))?;
        let grads = z
            .mul(&seed)
            .and_then(|p| p.sum_all())
            .and_then(|s| s.backward())
            .map_err(candle_error("the backward pass"))?;
        match grads.get(input.as_tensor()) {
            Some(g) => {
                let g = array_from_tensor(g)?;
                check_model_output(g.view(), n, m, "candle input gradient")?;
                grad.assign(&g);
            }
            // The logits do not depend on the input at all.
            None => grad.fill(0.0),
        }
        Ok(())
    }
}

/// The hidden layers given with [`CandleModel::try_with_hidden`], in the order added.
impl<M: Module + Sync> Representation for CandleModel<M> {
    fn num_layers(&self) -> usize {
        self.hidden.len()
    }

    fn layer_dim(&self, k: usize) -> Result<usize> {
        self.hidden.get(k).map(|h| h.dim).ok_or_else(|| {
            Error::param(
                "layer",
                format!(
                    "layer {k} out of range: the model has {} hidden layers",
                    self.hidden.len()
                ),
            )
        })
    }

    fn representation(&self, x: ArrayView2<'_, f32>, k: usize) -> Result<Array2<f32>> {
        let dim = self.layer_dim(k)?;
        let h = &self.hidden[k];
        let t = self.input_tensor(x)?;
        let out = (h.f)(&self.module, &t).map_err(candle_error("a hidden-layer function"))?;
        let a = array_from_tensor(&out)?;
        if a.dim() != (x.nrows(), dim) {
            return Err(Error::shape(
                format!("hidden layer `{}`", h.name),
                format!("{} × {dim}", x.nrows()),
                format!("{:?}", out.dims()),
            ));
        }
        Ok(a)
    }
}
