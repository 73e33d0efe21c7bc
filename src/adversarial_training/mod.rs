//! Adversarial training (paper §4.1–4.2): SGD that also learns from adversarial examples of
//! the model being trained, either from pools of examples made for each chosen layer's output
//! (the paper's method) or from a one-step signed-gradient perturbation of every batch
//! (Goodfellow et al. 2015, the modern contrast): [`train_with_pools`] with an attack and
//! [`PoolTrainParams`], or [`train_with_fgsm`] with [`FgsmTrainParams`], each around the
//! [`TrainParams`] of plain training and reporting what it does (an
//! [`AdversarialReport`]) as plain training's report with the attacks' figures added.
//!
//! It sits on top of [`crate::nn`] (the one SGD loop, [`Network::above`]) and
//! [`crate::attack`] (the attacks that fill the pools), so that `nn` needs no attack.
//!
//! # The paper's layer-wise scheme, as built here
//!
//! The paper reached below 1.2% test error on a 100-100-10 network only with "adversarial
//! examples generated for each layer output … used to train the layers above", "in an
//! alternating fashion, maintaining and updating a pool of adversarial examples for each layer
//! separately in addition to the original training set". It gives no schedule; this one is:
//!
//! - A *level* is where an example lives: level 0 the input, level `k ≥ 1` the output of hidden
//!   layer `k − 1`. For level `k` the network above it ([`Network::above`]) is a classifier of
//!   `φ_k(x)`; the attack on it (inside the box `[0, 1]`, the range of the paper's sigmoid
//!   units and of pixels) turns `φ_k(x)` into an adversarial representation.
//! - The clean mini-batches are those of [`crate::nn::train`] from the same seed: one SGD step
//!   each, all layers. After `warmup_epochs` clean epochs a pool of `pool_size` examples is made
//!   for every chosen level from random training images.
//! - After every `pool_every`-th clean step comes one pool step: `pool_batch` examples drawn
//!   from the pool of the next level in turn (round robin), one SGD step (the clean step's rate
//!   times `pool_weight`, same momentum) on the layers above that level only; the layers at
//!   and below it are not touched.
//! - Every `refresh_every` clean batches, `refresh_fraction` of every pool is replaced by
//!   examples made against the current weights.
//! - With [`PoolUpdate::Mixed`] the pool rows join the clean batch instead: every
//!   `pool_every`-th clean step draws `pool_batch` rows from the next level's pool and takes
//!   **one** momentum step on the objective of both together (see [`PoolUpdate`]), rather
//!   than a clean step followed by a separate pool step.

mod pool;
mod steps;

use std::cell::RefCell;

use ndarray::{Array1, Array2, ArrayView2};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

pub use pool::{refresh_count, AdversarialPool, PoolStats, PoolTarget};

use steps::{FgsmSteps, LevelPool, PoolSteps, Tally, POOL_STREAM};

use crate::attack::Attack;
use crate::data::Dataset;
use crate::error::{check_count, check_nonzero, check_positive, Error, Result};
use crate::model::Classifier;
use crate::nn::{check_class_count, fit_loop, SgdStep, Steps};
use crate::nn::{
    error_rate, Activation, EpochStats, Network, Progress, TrainConfig, TrainParams, TrainReport,
    Trainable,
};
use crate::params::{Check, Checked};

/// Largest [`PoolTrainParams::pool_size`]. A pool also holds no more examples than the
/// training set has images ([`train_with_pools`] checks that before allocating), so its memory
/// is at most the training images' (times the level's width over the input's).
pub const MAX_POOL_SIZE: usize = 1_000_000;

/// Largest [`PoolTrainParams::pool_batch`]. A pool step takes at most the pool's size in
/// rows, and only that many are allocated, so a larger setting costs nothing more.
pub const MAX_POOL_BATCH: usize = 1_000_000;

/// How a pool's examples update the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum PoolUpdate {
    /// A pool step of its own after the clean step: a second momentum update, on the layers
    /// above the pool's level only (the schedule in the module docs).
    #[default]
    Separate,
    /// The pool rows join the clean batch under one momentum update. With `m` clean rows and
    /// `p` pool rows the step follows the gradient of
    /// `(m·J̄_clean + w·p·J̄_pool) / (m + p) + R` (`w` = `pool_weight`, `R` the weight decay
    /// counted once), where the pool term reaches only the layers above the pool's level: at
    /// level 0 and `w = 1` exactly one SGD step on the concatenated batch.
    Mixed,
}

/// Settings of training with pools of attacked examples (the paper's method, the schedule in
/// the module docs) as given; [`PoolTrainParams::check`](Check::check) turns them into a
/// [`PoolTrainConfig`] for [`train_with_pools`].
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct PoolTrainParams {
    /// The SGD settings (epochs, batch, rate, schedule, seed, dropout) shared with plain
    /// training.
    pub train: TrainParams,
    /// The levels that get a pool (0 = the input, `k` = hidden layer `k − 1`'s output), each
    /// training the layers above it: at least one, none named twice.
    pub levels: Vec<usize>,
    /// Examples in each pool, in `1..=`[`MAX_POOL_SIZE`] and at most the training images.
    pub pool_size: usize,
    /// Clean batches between refreshes (>= 1).
    pub refresh_every: usize,
    /// Fraction of each pool replaced at a refresh, in (0, 1].
    pub refresh_fraction: f32,
    /// Rows of each pool step, in `1..=`[`MAX_POOL_BATCH`]; a step takes at most `pool_size`.
    pub pool_batch: usize,
    /// Clean steps per pool step (>= 1): 1 puts a pool step after every clean step.
    pub pool_every: usize,
    /// Factor on the learning rate of pool steps, in (0, 1]: the weight of the pools'
    /// objective against the clean one.
    pub pool_weight: f32,
    /// Clean epochs before the pools are made (< epochs).
    pub warmup_epochs: usize,
    /// Which label the pools' attacks aim at.
    pub target: PoolTarget,
    /// A separate pool step, or the pool rows mixed into the clean batch.
    pub pool_update: PoolUpdate,
}

impl PoolTrainParams {
    /// Defaults around `train` and `levels`: pools of 5,000 examples, a tenth of each
    /// replaced every 500 batches, pool steps of the clean batch size, one warm-up epoch,
    /// random targets.
    pub fn new(train: TrainParams, levels: Vec<usize>) -> Self {
        let pool_batch = train.batch_size;
        PoolTrainParams {
            train,
            levels,
            pool_size: 5_000,
            refresh_every: 500,
            refresh_fraction: 0.1,
            pool_batch,
            pool_every: 1,
            pool_weight: 1.0,
            warmup_epochs: 1,
            target: PoolTarget::Random,
            pool_update: PoolUpdate::Separate,
        }
    }

    /// Sets how pool examples update the network.
    pub fn with_pool_update(mut self, update: PoolUpdate) -> Self {
        self.pool_update = update;
        self
    }

    /// Sets the pool size.
    pub fn with_pool_size(mut self, n: usize) -> Self {
        self.pool_size = n;
        self
    }

    /// Sets how often (in clean batches) and how much (a fraction) of each pool is replaced.
    pub fn with_refresh(mut self, every: usize, fraction: f32) -> Self {
        self.refresh_every = every;
        self.refresh_fraction = fraction;
        self
    }

    /// Sets the rows of each pool step.
    pub fn with_pool_batch(mut self, rows: usize) -> Self {
        self.pool_batch = rows;
        self
    }

    /// Sets how many clean steps come per pool step and the pool steps' learning-rate factor.
    pub fn with_pool_schedule(mut self, every: usize, weight: f32) -> Self {
        self.pool_every = every;
        self.pool_weight = weight;
        self
    }

    /// Sets the clean warm-up epochs.
    pub fn with_warmup_epochs(mut self, epochs: usize) -> Self {
        self.warmup_epochs = epochs;
        self
    }

    /// Sets the pools' attack target.
    pub fn with_target(mut self, target: PoolTarget) -> Self {
        self.target = target;
        self
    }
}

impl Check for PoolTrainParams {
    type Checked = PoolTrainConfig;

    /// Validates every value once; the result cannot be invalid.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] naming the first bad value: those of
    /// [`TrainParams`]'s check, then `levels` (none, or one named twice), and each setting
    /// outside the bounds its field documents.
    fn check(self) -> Result<PoolTrainConfig> {
        self.train.clone().check()?;
        if self.levels.is_empty() {
            return Err(Error::param("levels", "name at least one level"));
        }
        let mut sorted = self.levels.clone();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != self.levels.len() {
            return Err(Error::param("levels", "a level is named twice"));
        }
        check_count("pool_size", self.pool_size, MAX_POOL_SIZE)?;
        if !(self.refresh_fraction > 0.0 && self.refresh_fraction <= 1.0) {
            return Err(Error::param(
                "refresh_fraction",
                format!("must be in (0, 1], got {}", self.refresh_fraction),
            ));
        }
        if self.refresh_every == 0 {
            return Err(Error::param("refresh_every", "must be at least 1 batch"));
        }
        check_count("pool_batch", self.pool_batch, MAX_POOL_BATCH)?;
        check_nonzero("pool_every", self.pool_every)?;
        if !(self.pool_weight > 0.0 && self.pool_weight <= 1.0) {
            return Err(Error::param(
                "pool_weight",
                format!("must be in (0, 1], got {}", self.pool_weight),
            ));
        }
        check_warmup(self.warmup_epochs, self.train.epochs)?;
        Ok(Checked::assume_valid(self))
    }
}

/// Checked pool-training settings (from [`PoolTrainParams::check`](Check::check)).
pub type PoolTrainConfig = Checked<PoolTrainParams>;

impl Checked<PoolTrainParams> {
    /// The SGD settings, checked with the rest.
    pub fn train_config(&self) -> TrainConfig {
        Checked::assume_valid(self.train.clone())
    }
}

/// Settings of one-step adversarial training (Goodfellow et al. 2015) as given: every batch
/// `x` is trained on with its perturbation `x' = x + ε·sign ∇ₓJ(x, y)` (clipped to the box),
/// the objective `½J(x, y) + ½J(x', y)`. [`FgsmTrainParams::check`](Check::check) turns them
/// into a [`FgsmTrainConfig`] for [`train_with_fgsm`].
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct FgsmTrainParams {
    /// The SGD settings (epochs, batch, rate, schedule, seed, dropout) shared with plain
    /// training.
    pub train: TrainParams,
    /// The step ε, in (0, 1] (pixels are in [0, 1]).
    pub epsilon: f32,
    /// Clean epochs before the perturbed ones (< epochs).
    pub warmup_epochs: usize,
}

impl FgsmTrainParams {
    /// Steps of `epsilon` around `train`, after one clean warm-up epoch.
    pub fn new(train: TrainParams, epsilon: f32) -> Self {
        FgsmTrainParams {
            train,
            epsilon,
            warmup_epochs: 1,
        }
    }

    /// Sets the clean warm-up epochs.
    pub fn with_warmup_epochs(mut self, epochs: usize) -> Self {
        self.warmup_epochs = epochs;
        self
    }
}

impl Check for FgsmTrainParams {
    type Checked = FgsmTrainConfig;

    /// Validates every value once; the result cannot be invalid.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] naming the first bad value: those of
    /// [`TrainParams`]'s check, then `epsilon` outside (0, 1], `warmup_epochs` not below the
    /// epochs.
    fn check(self) -> Result<FgsmTrainConfig> {
        self.train.clone().check()?;
        if !(self.epsilon.is_finite() && self.epsilon > 0.0 && self.epsilon <= 1.0) {
            return Err(Error::param(
                "epsilon",
                format!("must be in (0, 1], got {}", self.epsilon),
            ));
        }
        check_warmup(self.warmup_epochs, self.train.epochs)?;
        Ok(Checked::assume_valid(self))
    }
}

/// Checked one-step adversarial-training settings (from
/// [`FgsmTrainParams::check`](Check::check)).
pub type FgsmTrainConfig = Checked<FgsmTrainParams>;

impl Checked<FgsmTrainParams> {
    /// The SGD settings, checked with the rest.
    pub fn train_config(&self) -> TrainConfig {
        Checked::assume_valid(self.train.clone())
    }
}

/// Both regimes make adversarial examples only after `warmup` clean epochs: at least one epoch
/// must be left for them.
fn check_warmup(warmup: usize, epochs: usize) -> Result<()> {
    if warmup >= epochs {
        return Err(Error::param(
            "warmup_epochs",
            format!("{warmup} warm-up epochs leave no adversarial epoch out of {epochs}"),
        ));
    }
    Ok(())
}

/// Figures of one finished epoch of adversarial training: plain training's, and the attacks'.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct AdversarialEpoch {
    /// What plain training reports of an epoch. Its `loss` is the mean objective of the clean
    /// steps (with FGSM: of the clean and perturbed halves together), its `seconds` include
    /// the attacks.
    #[cfg_attr(feature = "serde", serde(flatten))]
    pub plain: EpochStats,
    /// Wall time spent making pool examples.
    pub attack_seconds: f64,
    /// Pool examples made during the epoch.
    pub generated: usize,
    /// Pool steps taken.
    pub pool_steps: usize,
}

/// Progress events of [`train_with_pools`] and [`train_with_fgsm`].
#[derive(Debug, Clone, PartialEq)]
pub enum AdversarialProgress {
    /// The events of plain training's loop: a clean mini-batch (and its pool step) finished,
    /// or an epoch did, with its adversarial figures.
    Train(Progress<AdversarialEpoch>),
    /// A pool was made (`refresh == 0`) or refreshed.
    Pool {
        /// Epoch index.
        epoch: usize,
        /// The pool's level.
        level: usize,
        /// Refresh number (0 = initial generation).
        refresh: usize,
        /// What it did.
        stats: PoolStats,
    },
}

/// What adversarial training did.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct AdversarialReport {
    /// What plain training reports, each epoch with its adversarial figures. The final
    /// `train_error` is always measured, and `seconds_per_epoch` includes the attacks.
    #[cfg_attr(feature = "serde", serde(flatten))]
    pub plain: TrainReport<AdversarialEpoch>,
    /// Pool examples made in all.
    pub generated: usize,
    /// Total wall time of attacks.
    pub attack_seconds: f64,
}

/// One plain SGD step (no momentum, the objective's mean over the rows) on the layers of
/// `model` above `level`, from examples of that level (`inputs`, one per row, labels
/// `labels`): the update a pool step makes, the layers at and below `level` left untouched.
/// Returns the objective before the step.
///
/// # Errors
///
/// As [`Network::above`]; [`Error::InvalidParameter`] (`learning_rate`) unless the rate is
/// finite and > 0; [`Error::Shape`] for inputs that are not the level's width or a label count
/// that does not match; [`Error::NonFinite`] if the objective or the gradient is not finite,
/// or if the step overflowed a parameter (the model is then left with the overflowed values:
/// discard it).
pub fn step_above(
    model: &mut Network,
    level: usize,
    inputs: ArrayView2<'_, f32>,
    labels: &[usize],
    learning_rate: f32,
) -> Result<f32> {
    check_positive("learning_rate", learning_rate)?;
    let upper = model.above(level)?;
    if inputs.ncols() != upper.input_dim() {
        return Err(Error::shape(
            "level inputs",
            upper.input_dim(),
            inputs.ncols(),
        ));
    }
    if labels.len() != inputs.nrows() {
        return Err(Error::shape("labels", inputs.nrows(), labels.len()));
    }
    let mut upper_sgd = SgdStep::new(&upper, inputs.nrows());
    let objective = upper_sgd.gradient(&upper, inputs, labels)?;
    let mut sgd = SgdStep::new(&*model, 1);
    sgd.update_suffix(model.params_mut(), upper_sgd.grads(), learning_rate, 0.0)?;
    check_suffix_finite(
        model,
        upper_sgd.grads().len(),
        "parameters after a pool step",
    )?;
    Ok(objective)
}

/// [`Error::NonFinite`] naming `what` if any of the last `count` parameter arrays of `model`
/// (those a pool step updates) has a NaN or infinite entry: a finite gradient times a finite
/// rate can still overflow `f32`. One pass over the parameters, cheaper than the update.
pub(crate) fn check_suffix_finite(model: &Network, count: usize, what: &str) -> Result<()> {
    let params = model.params();
    let skip = params.len().saturating_sub(count);
    if params[skip..]
        .iter()
        .all(|p| p.iter().all(|v| v.is_finite()))
    {
        Ok(())
    } else {
        Err(Error::NonFinite { what: what.into() })
    }
}

/// Trains `model` in place with pools of adversarial examples as `config` says (see the module
/// docs for the schedule), the pools filled by `attack`; measures the final train and test
/// errors (and every epoch's if `eval_every_epoch` is set). The same seed gives the same
/// weights whatever the number of threads.
///
/// # Errors
///
/// [`Error::Shape`] if the data do not fit the model; [`Error::LabelOutOfRange`] or
/// [`Error::ClassCount`] as [`train`](crate::nn::train); [`Error::InvalidParameter`] for a pool
/// larger than the training set, a level past the last hidden layer, a level whose
/// activation's range is not the attack's box `[0, 1]` (only sigmoid units), or a level with
/// convolutions above it; [`Error::NonFinite`] if the loss diverges or a step overflows a
/// parameter; attack errors.
pub fn train_with_pools<A: Attack>(
    model: &mut Network,
    train: &Dataset,
    test: Option<&Dataset>,
    attack: &A,
    config: &PoolTrainConfig,
    on_progress: impl FnMut(&AdversarialProgress),
) -> Result<AdversarialReport> {
    let ap = config.params();
    check_data(model, train)?;
    if ap.pool_size > train.len() {
        return Err(Error::param(
            "pool_size",
            format!(
                "{} is more than the {} training images",
                ap.pool_size,
                train.len()
            ),
        ));
    }
    // A pool step draws at most the pool's size in rows: allocate no more.
    let pool_rows = ap.pool_batch.min(ap.pool_size);
    let mut pools = Vec::with_capacity(ap.levels.len());
    let mut widest = 0;
    for &level in &ap.levels {
        if level > 0 && model.arch().activation() != Activation::Sigmoid {
            return Err(Error::param(
                "levels",
                "hidden-layer pools need sigmoid units: the attack's box is [0, 1]",
            ));
        }
        let upper = model.above(level)?;
        widest = widest.max(upper.input_dim());
        pools.push(LevelPool {
            level,
            pool: None,
            sgd: SgdStep::new(&upper, pool_rows),
            upper,
        });
    }
    let tally = RefCell::new(Tally::default());
    let mut rng = ChaCha8Rng::seed_from_u64(ap.train.seed);
    rng.set_stream(POOL_STREAM);
    let mut steps = PoolSteps {
        data: train,
        attack,
        params: ap,
        pools,
        rng,
        round: 0,
        clean_steps: 0,
        epoch: 0,
        xb: Array2::zeros((pool_rows, widest)),
        yb: Vec::with_capacity(pool_rows),
        reg: steps::zeros_like(model),
        tally: &tally,
    };
    let sgd = config.train_config();
    run(model, train, test, &sgd, &tally, &mut steps, on_progress)
}

/// Trains `model` in place with one-step adversarial examples of every batch as `config` says
/// (see [`FgsmTrainParams`]); measures the final train and test errors (and every epoch's if
/// `eval_every_epoch` is set). The same seed gives the same weights whatever the number of
/// threads.
///
/// # Errors
///
/// [`Error::Shape`] if the data do not fit the model; [`Error::LabelOutOfRange`] or
/// [`Error::ClassCount`] as [`train`](crate::nn::train); [`Error::NonFinite`] if the loss
/// diverges.
pub fn train_with_fgsm(
    model: &mut Network,
    train: &Dataset,
    test: Option<&Dataset>,
    config: &FgsmTrainConfig,
    on_progress: impl FnMut(&AdversarialProgress),
) -> Result<AdversarialReport> {
    let fp = config.params();
    check_data(model, train)?;
    let bs = fp.train.batch_size.min(train.len());
    let d = train.input_dim();
    let mut steps = FgsmSteps {
        epsilon: fp.epsilon,
        warmup: fp.warmup_epochs,
        epoch: 0,
        ws: model.workspace(bs),
        losses: Array1::zeros(bs),
        grad: Array2::zeros((bs, d)),
        xx: Array2::zeros((2 * bs, d)),
        yy: Vec::with_capacity(2 * bs),
    };
    let tally = RefCell::new(Tally::default());
    let sgd = config.train_config();
    run(model, train, test, &sgd, &tally, &mut steps, on_progress)
}

/// The checks plain training makes of the data, before anything is allocated for them.
fn check_data(model: &Network, train: &Dataset) -> Result<()> {
    if train.input_dim() != model.input_dim() {
        return Err(Error::shape(
            "training images",
            model.input_dim(),
            train.input_dim(),
        ));
    }
    check_class_count(train, model.num_classes())
}

/// The one SGD loop with `steps`, its events and figures extended by the attacks' tallies.
fn run<S: Steps<Network>>(
    model: &mut Network,
    train: &Dataset,
    test: Option<&Dataset>,
    config: &TrainConfig,
    tally: &RefCell<Tally>,
    steps: &mut S,
    mut on_progress: impl FnMut(&AdversarialProgress),
) -> Result<AdversarialReport> {
    let evaluate = |m: &Network| -> Result<(Option<f32>, Option<f32>)> {
        Ok((
            Some(error_rate(m, train)?),
            test.map(|t| error_rate(m, t)).transpose()?,
        ))
    };
    let mut epochs = Vec::new();
    let mut forward = |p: &Progress| {
        let mut t = tally.borrow_mut();
        for e in t.events.drain(..) {
            on_progress(&e);
        }
        match p {
            Progress::Batch {
                epoch,
                batch,
                batches,
            } => on_progress(&AdversarialProgress::Train(Progress::Batch {
                epoch: *epoch,
                batch: *batch,
                batches: *batches,
            })),
            Progress::Epoch(e) => {
                let a = AdversarialEpoch {
                    plain: e.clone(),
                    attack_seconds: t.attack_seconds,
                    generated: t.generated,
                    pool_steps: t.pool_steps,
                };
                t.attack_seconds = 0.0;
                t.generated = 0;
                t.pool_steps = 0;
                on_progress(&AdversarialProgress::Train(Progress::Epoch(a.clone())));
                epochs.push(a);
            }
        }
    };
    let report = fit_loop(model, train, config, evaluate, &mut forward, steps)?;
    let last = report.epochs.last().expect("epochs >= 1");
    Ok(AdversarialReport {
        generated: epochs.iter().map(|e| e.generated).sum(),
        attack_seconds: epochs.iter().map(|e| e.attack_seconds).sum(),
        plain: TrainReport {
            train_error: last.train_error,
            test_error: last.test_error,
            seconds_per_epoch: report.seconds_per_epoch,
            epochs,
        },
    })
}
