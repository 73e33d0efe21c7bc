//! Mini-batch SGD with momentum, weight decay and a learning-rate schedule, for any
//! [`Trainable`] model, reproducible from a seed.

use std::time::Instant;

use ndarray::{s, Array2, ArrayView2, Zip};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::data::Dataset;
use crate::error::{check_count, check_positive, Error, Result};
use crate::model::Classifier;
use crate::params::{Check, Checked};

/// A model the generic trainer can fit: its parameter arrays, visited in a fixed order, and the
/// gradient of a summed per-example loss on a batch.
pub trait Trainable: Sync {
    /// Scratch buffers for one batch, reused across batches.
    type Workspace: Send;

    /// Buffers for batches of up to `batch` rows.
    fn workspace(&self, batch: usize) -> Self::Workspace;

    /// The parameters, as 2-d arrays (biases as `1 × k` rows), layer by layer.
    fn params(&self) -> Vec<&Array2<f32>>;

    /// Mutable parameters, same order and shapes as [`Trainable::params`].
    ///
    /// Values may be changed freely; the shapes must stay. The crate's models check them at
    /// every evaluation and training step, so an array replaced by one of another shape is an
    /// [`Error::Shape`](crate::Error::Shape) naming it, not a panic.
    fn params_mut(&mut self) -> Vec<&mut Array2<f32>>;

    /// Adds `scale · ∇ Σ_i loss_i` over the batch into `grads` (same shapes as the parameters)
    /// and returns the unscaled `Σ_i loss_i`.
    fn accumulate_grad(
        &self,
        x: ArrayView2<'_, f32>,
        y: &[usize],
        scale: f32,
        grads: &mut [Array2<f32>],
        ws: &mut Self::Workspace,
    ) -> Result<f32>;

    /// Adds the regulariser's gradient into `grads` and returns its value.
    fn regularize(&self, grads: &mut [Array2<f32>]) -> f32;

    /// Turns on inverted dropout in a training workspace: `rates[k]` for the output of hidden
    /// layer `k`, masks drawn from a generator seeded with `seed`. Only
    /// [`Trainable::accumulate_grad`] with that workspace drops units; inference never does.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] if the model has no such layers (the default: models
    /// without hidden layers to drop).
    fn enable_dropout(&self, ws: &mut Self::Workspace, rates: &[f32], seed: u64) -> Result<()> {
        let _ = (ws, seed);
        if rates.iter().all(|&r| r == 0.0) {
            return Ok(());
        }
        Err(Error::param(
            "dropout",
            "this model does not support dropout",
        ))
    }
}

/// How the learning rate changes over epochs.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Schedule {
    /// The same rate throughout.
    Constant,
    /// Multiplied by `factor` every `every` epochs.
    Step {
        /// Epochs between reductions.
        every: usize,
        /// Multiplier at each reduction, in (0, 1].
        factor: f32,
    },
    /// Cosine decay from the initial rate to `final_fraction` of it at the last epoch.
    Cosine {
        /// The last epoch's rate as a fraction of the first's, in [0, 1].
        final_fraction: f32,
    },
}

/// Training hyperparameters as given; [`TrainParams::check`] turns them into a [`TrainConfig`].
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct TrainParams {
    /// Passes over the training set.
    pub epochs: usize,
    /// Examples per mini-batch.
    pub batch_size: usize,
    /// Initial learning rate.
    pub learning_rate: f32,
    /// Momentum coefficient in [0, 1).
    pub momentum: f32,
    /// Learning-rate schedule.
    pub schedule: Schedule,
    /// Seed of the shuffling generator.
    pub seed: u64,
    /// Compute train and test error after every epoch (costs a pass over both sets).
    pub eval_every_epoch: bool,
    /// Inverted-dropout rate of each hidden layer's output during training, in `[0, 1)`
    /// (empty: no dropout; missing layers: 0). Inference never drops units.
    pub dropout: Vec<f32>,
}

impl Default for TrainParams {
    fn default() -> Self {
        TrainParams {
            epochs: 30,
            batch_size: 128,
            learning_rate: 0.1,
            momentum: 0.9,
            schedule: Schedule::Cosine {
                final_fraction: 0.0,
            },
            seed: 0,
            eval_every_epoch: false,
            dropout: Vec::new(),
        }
    }
}

impl TrainParams {
    /// [`TrainParams::default`] with the three values a training recipe usually sets: the
    /// number of epochs, the mini-batch size and the initial learning rate. The recipes of the
    /// zoo's models are built this way (see `crate::zoo`).
    pub fn new(epochs: usize, batch_size: usize, learning_rate: f32) -> Self {
        TrainParams {
            epochs,
            batch_size,
            learning_rate,
            ..TrainParams::default()
        }
    }

    /// Sets the seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Sets the number of epochs.
    pub fn with_epochs(mut self, epochs: usize) -> Self {
        self.epochs = epochs;
        self
    }

    /// Sets the initial learning rate.
    pub fn with_learning_rate(mut self, lr: f32) -> Self {
        self.learning_rate = lr;
        self
    }

    /// Sets the dropout rate of each hidden layer's output (see [`TrainParams::dropout`]).
    pub fn with_dropout(mut self, rates: Vec<f32>) -> Self {
        self.dropout = rates;
        self
    }
}

impl Check for TrainParams {
    type Checked = TrainConfig;

    /// Validates the values once; the result cannot be invalid.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] if `epochs` is outside `1..=1_000_000` or `batch_size`
    /// outside `1..=1_000_000` (upper bounds so that a typo such as `usize::MAX` is an error
    /// rather than a hang or an allocation failure), the learning rate is not finite and
    /// positive, the momentum is outside `[0, 1)`, a dropout rate is outside `[0, 1)`, or the
    /// schedule's values are invalid.
    fn check(self) -> Result<TrainConfig> {
        const MAX_EPOCHS: usize = 1_000_000;
        const MAX_BATCH: usize = 1_000_000;
        check_count("epochs", self.epochs, MAX_EPOCHS)?;
        check_count("batch_size", self.batch_size, MAX_BATCH)?;
        check_positive("learning_rate", self.learning_rate)?;
        if !(0.0..1.0).contains(&self.momentum) {
            return Err(Error::param(
                "momentum",
                format!("must be in [0, 1), got {}", self.momentum),
            ));
        }
        if let Some(r) = self.dropout.iter().find(|r| !(0.0..1.0).contains(*r)) {
            return Err(Error::param(
                "dropout",
                format!("rates must be in [0, 1), got {r}"),
            ));
        }
        match self.schedule {
            Schedule::Step { every, factor } => {
                if every == 0 || !(factor > 0.0 && factor <= 1.0) {
                    return Err(Error::param(
                        "schedule",
                        "step needs every >= 1 and factor in (0, 1]",
                    ));
                }
            }
            Schedule::Cosine { final_fraction } => {
                if !(0.0..=1.0).contains(&final_fraction) {
                    return Err(Error::param(
                        "schedule",
                        "cosine final_fraction must be in [0, 1]",
                    ));
                }
            }
            Schedule::Constant => {}
        }
        Ok(Checked::assume_valid(self))
    }
}

/// Checked training hyperparameters (from [`TrainParams::check`](Check::check)).
pub type TrainConfig = Checked<TrainParams>;

impl Checked<TrainParams> {
    /// The same settings with another shuffling seed (every seed is valid): how one recipe
    /// trains many seeds without being checked again.
    pub fn with_seed(self, seed: u64) -> Self {
        let mut p = self.into_params();
        p.seed = seed;
        Checked::assume_valid(p)
    }

    /// The learning rate during epoch `epoch` (0-based).
    pub fn learning_rate_at(&self, epoch: usize) -> f32 {
        let p = self.params();
        match p.schedule {
            Schedule::Constant => p.learning_rate,
            Schedule::Step { every, factor } => {
                p.learning_rate * factor.powi((epoch / every) as i32)
            }
            Schedule::Cosine { final_fraction } => {
                let t = if p.epochs > 1 {
                    epoch as f32 / (p.epochs - 1) as f32
                } else {
                    0.0
                };
                let cos = 0.5 * (1.0 + (std::f32::consts::PI * t).cos());
                p.learning_rate * (final_fraction + (1.0 - final_fraction) * cos)
            }
        }
    }
}

/// Figures of one finished epoch.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct EpochStats {
    /// 0-based epoch index.
    pub epoch: usize,
    /// Mean training objective (data loss plus regulariser) over the epoch's batches.
    pub loss: f32,
    /// Learning rate used.
    pub learning_rate: f32,
    /// Wall time of the epoch's updates (evaluation excluded).
    pub seconds: f64,
    /// Training-set error after the epoch, when evaluated.
    pub train_error: Option<f32>,
    /// Test-set error after the epoch, when evaluated.
    pub test_error: Option<f32>,
}

/// Progress events passed to the training callback. `E` is what a finished epoch reports:
/// [`EpochStats`] here, a type that embeds them where a trainer built on this loop adds figures
/// of its own.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress<E = EpochStats> {
    /// A mini-batch finished.
    Batch {
        /// Epoch index.
        epoch: usize,
        /// Batch index within the epoch.
        batch: usize,
        /// Batches per epoch.
        batches: usize,
    },
    /// An epoch finished.
    Epoch(E),
}

/// What training did. `E` is each epoch's figures, as in [`Progress`].
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct TrainReport<E = EpochStats> {
    /// Per-epoch figures.
    pub epochs: Vec<E>,
    /// Final error on the training set (`None` from [`fit`], which does not measure it).
    pub train_error: Option<f32>,
    /// Final error on the test set, when one was given.
    pub test_error: Option<f32>,
    /// Mean wall time per epoch of updates.
    pub seconds_per_epoch: f64,
}

impl TrainReport {
    /// The mean objective of each epoch.
    pub fn loss_per_epoch(&self) -> Vec<f32> {
        self.epochs.iter().map(|e| e.loss).collect()
    }
}

/// Each mini-batch is split into this many fixed parts whose gradients are summed in a fixed
/// order, so the result does not depend on how many threads rayon has.
const PARTS: usize = 2;

/// Trains a classifier in place with mini-batch SGD and momentum on `train`, reporting progress
/// to `on_progress`, and measures its train and test error. The same model, data and config give
/// the same weights.
///
/// # Errors
///
/// [`Error::Shape`] if the images do not fit the model; [`Error::LabelOutOfRange`] naming the
/// example whose label has no output, or [`Error::ClassCount`] if `train` only declares more
/// classes than the model has outputs; [`Error::NonFinite`] if the loss diverges.
pub fn train<M>(
    model: &mut M,
    train: &Dataset,
    test: Option<&Dataset>,
    config: &TrainConfig,
    on_progress: impl FnMut(&Progress),
) -> Result<TrainReport>
where
    M: Trainable + Classifier,
{
    if train.input_dim() != model.input_dim() {
        return Err(Error::shape(
            "training images",
            model.input_dim(),
            train.input_dim(),
        ));
    }
    check_class_count(train, model.num_classes())?;
    let mut report = fit_with(
        model,
        train,
        config,
        |m: &M| {
            Ok((
                Some(error_rate(m, train)?),
                test.map(|t| error_rate(m, t)).transpose()?,
            ))
        },
        on_progress,
    )?;
    let last = report.epochs.last().expect("epochs >= 1");
    report.train_error = last.train_error;
    report.test_error = last.test_error;
    Ok(report)
}

/// Fits any [`Trainable`] model (a classifier, or an autoencoder that ignores the labels) with
/// the same SGD loop as [`train`], without measuring errors.
pub fn fit<M: Trainable>(
    model: &mut M,
    train: &Dataset,
    config: &TrainConfig,
    on_progress: impl FnMut(&Progress),
) -> Result<TrainReport> {
    fit_with(model, train, config, |_: &M| Ok((None, None)), on_progress)
}

/// What happens around and in each mini-batch of the SGD loop. Plain training takes one SGD
/// step per batch; the adversarial trainer (`crate::adversarial_training`) refreshes its pools
/// at epoch starts and adds its own steps, on the same loop.
pub(crate) trait Steps<M: Trainable> {
    /// Rows the SGD buffers must hold for a clean batch of `batch` rows.
    fn capacity(&self, batch: usize) -> usize {
        batch
    }

    /// Called before each epoch's batches.
    fn epoch_start(&mut self, model: &M, epoch: usize) -> Result<()> {
        let _ = (model, epoch);
        Ok(())
    }

    /// The update for one clean mini-batch; returns the objective to average into the epoch's
    /// loss.
    fn step(&mut self, model: &mut M, sgd: &mut SgdStep<M>, batch: Batch<'_>) -> Result<f32> {
        sgd.step(model, batch.x, batch.y, batch.lr, batch.momentum)
    }
}

/// One clean mini-batch as the SGD loop hands it to [`Steps::step`], with its update's rates.
#[derive(Clone, Copy)]
pub(crate) struct Batch<'a> {
    pub(crate) x: ArrayView2<'a, f32>,
    pub(crate) y: &'a [usize],
    pub(crate) lr: f32,
    pub(crate) momentum: f32,
    /// Within the epoch: what schedules by batch (the pools' refreshes) count.
    pub(crate) index: usize,
}

/// One SGD step per batch.
struct Plain;

impl<M: Trainable> Steps<M> for Plain {}

/// The SGD loop of [`fit`]; `evaluate` gives (train error, test error) after an epoch when
/// asked.
fn fit_with<M: Trainable>(
    model: &mut M,
    train: &Dataset,
    config: &TrainConfig,
    evaluate: impl FnMut(&M) -> Result<(Option<f32>, Option<f32>)>,
    on_progress: impl FnMut(&Progress),
) -> Result<TrainReport> {
    fit_loop(model, train, config, evaluate, on_progress, &mut Plain)
}

/// The one SGD loop: shuffling, gathering, the epoch bookkeeping and the error context, with
/// the updates themselves given by `steps`.
pub(crate) fn fit_loop<M: Trainable, S: Steps<M>>(
    model: &mut M,
    train: &Dataset,
    config: &TrainConfig,
    mut evaluate: impl FnMut(&M) -> Result<(Option<f32>, Option<f32>)>,
    mut on_progress: impl FnMut(&Progress),
    steps: &mut S,
) -> Result<TrainReport> {
    let p = config.params();
    let n = train.len();
    let bs = p.batch_size.min(n);
    let mut rng = ChaCha8Rng::seed_from_u64(p.seed);
    let mut sgd = SgdStep::new(&*model, steps.capacity(bs));
    if p.dropout.iter().any(|&r| r > 0.0) {
        sgd.enable_dropout(&*model, &p.dropout, p.seed)?;
    }
    let mut xb = Array2::<f32>::zeros((bs, train.input_dim()));
    let mut yb: Vec<usize> = Vec::with_capacity(bs);
    let batches = n.div_ceil(bs);
    let mut stats = Vec::with_capacity(p.epochs);
    for epoch in 0..p.epochs {
        let lr = config.learning_rate_at(epoch);
        let start = Instant::now();
        steps.epoch_start(&*model, epoch)?;
        let order = train.shuffled_indices(&mut rng);
        let mut total = 0.0f64;
        for (b, idx) in order.chunks(bs).enumerate() {
            let m = idx.len();
            let mut xv = xb.slice_mut(s![..m, ..]);
            gather(train, idx, &mut xv, &mut yb);
            let batch = Batch {
                x: xb.slice(s![..m, ..]),
                y: &yb,
                lr,
                momentum: p.momentum,
                index: b,
            };
            let loss = steps.step(model, &mut sgd, batch).map_err(|e| match e {
                Error::NonFinite { what } => Error::NonFinite {
                    what: format!("{what} at epoch {epoch}, batch {b}"),
                },
                other => other,
            })?;
            total += loss as f64;
            on_progress(&Progress::Batch {
                epoch,
                batch: b,
                batches,
            });
        }
        let seconds = start.elapsed().as_secs_f64();
        let (train_error, test_error) = if p.eval_every_epoch || epoch + 1 == p.epochs {
            evaluate(&*model)?
        } else {
            (None, None)
        };
        let e = EpochStats {
            epoch,
            loss: (total / batches as f64) as f32,
            learning_rate: lr,
            seconds,
            train_error,
            test_error,
        };
        on_progress(&Progress::Epoch(e.clone()));
        stats.push(e);
    }
    Ok(TrainReport {
        train_error: None,
        test_error: None,
        seconds_per_epoch: stats.iter().map(|e| e.seconds).sum::<f64>() / stats.len() as f64,
        epochs: stats,
    })
}

/// One momentum-SGD update on a mini-batch, with the buffers it needs kept between batches:
/// the velocity, a gradient and a workspace per part of the batch. Shared by [`train`] and the
/// adversarial trainer so both update the same way.
pub(crate) struct SgdStep<M: Trainable> {
    velocity: Vec<Array2<f32>>,
    part_grads: Vec<Vec<Array2<f32>>>,
    workspaces: Vec<M::Workspace>,
    part: usize,
}

impl<M: Trainable> SgdStep<M> {
    /// Buffers for `model` and mini-batches of up to `batch` rows.
    pub(crate) fn new(model: &M, batch: usize) -> Self {
        let part = batch.div_ceil(PARTS).max(1);
        let zeros = || -> Vec<Array2<f32>> {
            model
                .params()
                .iter()
                .map(|a| Array2::zeros(a.raw_dim()))
                .collect()
        };
        SgdStep {
            velocity: zeros(),
            part_grads: (0..PARTS).map(|_| zeros()).collect(),
            workspaces: (0..PARTS).map(|_| model.workspace(part)).collect(),
            part,
        }
    }

    /// Turns on dropout in every part's workspace, each part with its own generator stream
    /// (so the masks do not depend on the number of threads).
    pub(crate) fn enable_dropout(&mut self, model: &M, rates: &[f32], seed: u64) -> Result<()> {
        for (k, ws) in self.workspaces.iter_mut().enumerate() {
            model.enable_dropout(ws, rates, seed ^ (0x6472_6f70 + k as u64))?;
        }
        Ok(())
    }

    /// Computes the mean-loss gradient plus the regulariser on `(x, y)` (at most the batch
    /// size given to [`SgdStep::new`] rows), updates the parameters, and returns the
    /// objective's value before the update.
    pub(crate) fn step(
        &mut self,
        model: &mut M,
        x: ArrayView2<'_, f32>,
        y: &[usize],
        lr: f32,
        momentum: f32,
    ) -> Result<f32> {
        let objective = self.gradient(model, x, y)?;
        self.apply(model, lr, momentum);
        Ok(objective)
    }

    /// Momentum update of every parameter from the gradient in the buffers: what
    /// [`SgdStep::step`] does after [`SgdStep::gradient`], for callers that first combine
    /// another gradient into [`SgdStep::grads_mut`] (a pool mixed into the clean batch).
    pub(crate) fn apply(&mut self, model: &mut M, lr: f32, momentum: f32) {
        update(
            model.params_mut(),
            &self.part_grads[0],
            &mut self.velocity,
            lr,
            momentum,
        );
    }

    /// The objective's gradient on `(x, y)` into the first part's buffers (see
    /// [`SgdStep::grads`]); returns the objective. Nothing is updated.
    pub(crate) fn gradient(
        &mut self,
        model: &M,
        x: ArrayView2<'_, f32>,
        y: &[usize],
    ) -> Result<f32> {
        let m = x.nrows();
        if m == 0 || m > PARTS * self.part {
            return Err(Error::shape(
                "mini-batch",
                format!("1..={} rows", PARTS * self.part),
                m,
            ));
        }
        let scale = 1.0 / m as f32;
        let part = self.part;
        let losses: Vec<Result<f32>> = self
            .part_grads
            .par_iter_mut()
            .zip(self.workspaces.par_iter_mut())
            .enumerate()
            .map(|(k, (g, ws))| {
                for a in g.iter_mut() {
                    a.fill(0.0);
                }
                let lo = (k * part).min(m);
                let hi = ((k + 1) * part).min(m);
                if lo == hi {
                    return Ok(0.0);
                }
                model.accumulate_grad(x.slice(s![lo..hi, ..]), &y[lo..hi], scale, g, ws)
            })
            .collect();
        let mut loss = 0.0;
        for l in losses {
            loss += l?;
        }
        let (first, rest) = self.part_grads.split_at_mut(1);
        for other in rest.iter() {
            for (a, b) in first[0].iter_mut().zip(other) {
                *a += b;
            }
        }
        let reg = model.regularize(&mut first[0]);
        let objective = loss * scale + reg;
        // A diverged step must not reach the parameters.
        if !objective.is_finite() || first[0].iter().any(|g| g.iter().any(|v| !v.is_finite())) {
            return Err(Error::NonFinite {
                what: "training objective or gradient (learning rate too high?)".into(),
            });
        }
        Ok(objective)
    }

    /// The gradient left by [`SgdStep::gradient`].
    pub(crate) fn grads(&self) -> &[Array2<f32>] {
        &self.part_grads[0]
    }

    /// The gradient left by [`SgdStep::gradient`], to combine in place before
    /// [`SgdStep::apply`].
    pub(crate) fn grads_mut(&mut self) -> &mut [Array2<f32>] {
        &mut self.part_grads[0]
    }

    /// Momentum update of the last `grads.len()` parameters of `params` (the velocity of the
    /// same parameters is used and kept), the earlier ones left untouched: how a step on
    /// examples of a hidden layer's pool updates only the layers above it.
    pub(crate) fn update_suffix(
        &mut self,
        params: Vec<&mut Array2<f32>>,
        grads: &[Array2<f32>],
        lr: f32,
        momentum: f32,
    ) -> Result<()> {
        let skip = params
            .len()
            .checked_sub(grads.len())
            .ok_or_else(|| Error::shape("suffix gradients", params.len(), grads.len()))?;
        let tail: Vec<&mut Array2<f32>> = params.into_iter().skip(skip).collect();
        if tail.iter().zip(grads).any(|(p, g)| p.dim() != g.dim()) {
            return Err(Error::shape(
                "suffix gradients",
                "the shapes of the last parameters",
                "other shapes",
            ));
        }
        update(tail, grads, &mut self.velocity[skip..], lr, momentum);
        Ok(())
    }
}

fn update(
    params: Vec<&mut Array2<f32>>,
    grads: &[Array2<f32>],
    velocity: &mut [Array2<f32>],
    lr: f32,
    momentum: f32,
) {
    for ((param, g), v) in params.into_iter().zip(grads).zip(velocity) {
        Zip::from(param).and(v).and(g).for_each(|w, v, &g| {
            *v = momentum * *v - lr * g;
            *w += *v;
        });
    }
}

fn gather(
    data: &Dataset,
    idx: &[usize],
    x: &mut ndarray::ArrayViewMut2<'_, f32>,
    y: &mut Vec<usize>,
) {
    let images = data.images();
    let labels = data.labels();
    y.clear();
    for (mut row, &i) in x.rows_mut().into_iter().zip(idx) {
        row.assign(&images.row(i));
        y.push(labels[i]);
    }
}

/// Fraction of `data` that `model` misclassifies, computed in parallel chunks.
pub fn error_rate<C: Classifier + ?Sized>(model: &C, data: &Dataset) -> Result<f32> {
    if data.input_dim() != model.input_dim() {
        return Err(Error::shape(
            "dataset images",
            model.input_dim(),
            data.input_dim(),
        ));
    }
    let wrong = data.map_chunks(|_, images, labels| {
        let pred = model.predict(images)?;
        Ok(pred.iter().zip(labels).filter(|(p, l)| p != l).count())
    })?;
    Ok(wrong.iter().sum::<usize>() as f32 / data.len() as f32)
}

/// Checks that `train` declares no more classes than the model's `classes` outputs, so that
/// every label it may hold has an output.
///
/// # Errors
///
/// [`Error::LabelOutOfRange`] naming the example if a label is `>= classes` (the dataset's
/// real problem), else [`Error::ClassCount`] if the dataset only declares too many classes.
pub(crate) fn check_class_count(train: &Dataset, classes: usize) -> Result<()> {
    if train.num_classes() <= classes {
        return Ok(());
    }
    let labels = train.labels();
    if let Some((i, &label)) = labels.iter().enumerate().find(|&(_, &l)| l >= classes) {
        return Err(Error::label(
            format!("label of training example {i}"),
            label,
            classes,
        ));
    }
    Err(Error::ClassCount {
        dataset: train.num_classes(),
        model: classes,
        largest_label: labels.iter().copied().max().unwrap_or(0),
    })
}
