//! Adversarial training (paper §4.1–4.2): SGD that also learns from adversarial examples of
//! the model being trained, either from pools of examples made for each chosen layer's output
//! (the paper's method) or from a one-step signed-gradient perturbation of every batch
//! (Goodfellow et al. 2015, the modern contrast).
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

use std::cell::RefCell;
use std::time::Instant;

use ndarray::{s, Array1, Array2, ArrayView2, Axis};
use rand::seq::index::sample;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::attack::{Attack, Target};
use crate::data::Dataset;
use crate::error::{check_nonzero, Error, Result};
use crate::model::{Classifier, Differentiable, Representation};
use crate::nn::{error_rate, Activation, Network, Progress, TrainConfig, TrainParams, Trainable};
use crate::nn::{fit_loop, SgdStep, Steps};

/// Which label the attacks that fill a pool aim at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PoolTarget {
    /// A label drawn per example from the pool's generator: one c-search per example.
    #[default]
    Random,
    /// The smallest perturbation over all other labels, nine times the cost on ten classes.
    Untargeted,
}

/// How adversarial examples enter training.
#[derive(Debug, Clone, PartialEq)]
pub enum Regime {
    /// A pool of attacked examples for each listed level (0 = the input, `k` = hidden layer
    /// `k − 1`'s output), each training the layers above its level.
    Pools(Vec<usize>),
    /// One-step adversarial training: every batch `x` is trained on with its perturbation
    /// `x + ε·sign ∇ₓJ(x, y)` (clipped to the box), the objective `½J(x, y) + ½J(x', y)`.
    Fgsm {
        /// The step ε.
        epsilon: f32,
    },
}

/// Adversarial-training hyperparameters as given; [`AdversarialParams::check`] validates them.
#[derive(Debug, Clone, PartialEq)]
pub struct AdversarialParams {
    /// The SGD settings (epochs, batch, rate, schedule, seed, dropout) shared with plain
    /// training.
    pub train: TrainParams,
    /// Pools (and at which levels) or one-step perturbations.
    pub regime: Regime,
    /// Examples in each pool.
    pub pool_size: usize,
    /// Clean batches between refreshes (>= 1).
    pub refresh_every: usize,
    /// Fraction of each pool replaced at a refresh, in (0, 1].
    pub refresh_fraction: f32,
    /// Rows of each pool step (>= 1).
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
}

impl AdversarialParams {
    /// Defaults around `train` and `regime`: pools of 5,000 examples, a tenth of each
    /// replaced every 500 batches, pool steps of the clean batch size, one warm-up epoch,
    /// random targets.
    pub fn new(train: TrainParams, regime: Regime) -> Self {
        let pool_batch = train.batch_size;
        AdversarialParams {
            train,
            regime,
            pool_size: 5_000,
            refresh_every: 500,
            refresh_fraction: 0.1,
            pool_batch,
            pool_every: 1,
            pool_weight: 1.0,
            warmup_epochs: 1,
            target: PoolTarget::Random,
        }
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

    /// Validates every value once; the result cannot be invalid.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] naming the first bad value (including those of
    /// [`TrainParams::check`]).
    pub fn check(self) -> Result<AdversarialConfig> {
        let train = self.train.clone().check()?;
        match &self.regime {
            Regime::Pools(levels) => {
                if levels.is_empty() {
                    return Err(Error::param("levels", "name at least one level"));
                }
                let mut sorted = levels.clone();
                sorted.sort_unstable();
                sorted.dedup();
                if sorted.len() != levels.len() {
                    return Err(Error::param("levels", "a level is named twice"));
                }
            }
            Regime::Fgsm { epsilon } => {
                if !(epsilon.is_finite() && *epsilon > 0.0 && *epsilon <= 1.0) {
                    return Err(Error::param(
                        "epsilon",
                        format!("must be in (0, 1], got {epsilon}"),
                    ));
                }
            }
        }
        check_nonzero("pool_size", self.pool_size)?;
        if !(self.refresh_fraction > 0.0 && self.refresh_fraction <= 1.0) {
            return Err(Error::param(
                "refresh_fraction",
                format!("must be in (0, 1], got {}", self.refresh_fraction),
            ));
        }
        if self.refresh_every == 0 {
            return Err(Error::param("refresh_every", "must be at least 1 batch"));
        }
        if self.pool_batch == 0 || self.pool_batch > 1_000_000 {
            return Err(Error::param(
                "pool_batch",
                format!("must be in 1..=1000000, got {}", self.pool_batch),
            ));
        }
        check_nonzero("pool_every", self.pool_every)?;
        if !(self.pool_weight > 0.0 && self.pool_weight <= 1.0) {
            return Err(Error::param(
                "pool_weight",
                format!("must be in (0, 1], got {}", self.pool_weight),
            ));
        }
        if self.warmup_epochs >= self.train.epochs {
            return Err(Error::param(
                "warmup_epochs",
                format!(
                    "{} warm-up epochs leave no adversarial epoch out of {}",
                    self.warmup_epochs, self.train.epochs
                ),
            ));
        }
        Ok(AdversarialConfig {
            params: self,
            train,
        })
    }
}

/// Checked adversarial-training hyperparameters.
#[derive(Debug, Clone, PartialEq)]
pub struct AdversarialConfig {
    params: AdversarialParams,
    train: TrainConfig,
}

impl AdversarialConfig {
    /// The validated values.
    pub fn params(&self) -> &AdversarialParams {
        &self.params
    }

    /// The validated SGD settings.
    pub fn train_config(&self) -> &TrainConfig {
        &self.train
    }
}

/// Slots replaced per refresh of a pool of `size` (at least one).
pub fn refresh_count(size: usize, fraction: f32) -> usize {
    ((fraction as f64 * size as f64).round() as usize).clamp(1, size.max(1))
}

/// What one generation or refresh of a pool did.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolStats {
    /// Examples generated (and slots replaced).
    pub generated: usize,
    /// Fraction of them the model misclassified when they were made.
    pub success_rate: f32,
    /// Mean distortion of the successful ones (0 if none), in the level's own units.
    pub mean_distortion: f64,
    /// Model evaluations the attacks used.
    pub evaluations: usize,
    /// Wall time.
    pub seconds: f64,
}

/// A fixed-size pool of adversarial examples (inputs or hidden representations) with the true
/// labels of the images they came from.
#[derive(Debug, Clone, PartialEq)]
pub struct AdversarialPool {
    examples: Array2<f32>,
    labels: Vec<usize>,
    born: Vec<usize>,
    refreshes: usize,
}

impl AdversarialPool {
    /// A pool made by `attack` against `model` from every row of `inputs` (true labels
    /// `labels`), targets drawn with `rng`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] for no rows; [`Error::Shape`] for a label count that does
    /// not match; attack errors.
    pub fn generate<M, A>(
        model: &M,
        attack: &A,
        inputs: ArrayView2<'_, f32>,
        labels: &[usize],
        target: PoolTarget,
        rng: &mut ChaCha8Rng,
    ) -> Result<(Self, PoolStats)>
    where
        M: Differentiable + ?Sized,
        A: Attack,
    {
        check_nonzero("pool_size", inputs.nrows())?;
        let start = Instant::now();
        let (examples, evaluations, ok, dist) = make(model, attack, inputs, labels, target, rng)?;
        let n = labels.len();
        let pool = AdversarialPool {
            examples,
            labels: labels.to_vec(),
            born: vec![0; n],
            refreshes: 0,
        };
        Ok((pool, stats(n, ok, dist, evaluations, start)))
    }

    /// Replaces `inputs.nrows()` slots (at most the pool's size), chosen with `rng`, by
    /// examples made against `model` from `inputs`; the size is kept.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] for more rows than slots; attack errors (the pool is then
    /// unchanged).
    pub fn refresh<M, A>(
        &mut self,
        model: &M,
        attack: &A,
        inputs: ArrayView2<'_, f32>,
        labels: &[usize],
        target: PoolTarget,
        rng: &mut ChaCha8Rng,
    ) -> Result<PoolStats>
    where
        M: Differentiable + ?Sized,
        A: Attack,
    {
        if inputs.nrows() > self.len() {
            return Err(Error::param(
                "refresh",
                format!("{} rows for a pool of {}", inputs.nrows(), self.len()),
            ));
        }
        let start = Instant::now();
        let slots = sample(rng, self.len(), inputs.nrows()).into_vec();
        let (examples, evaluations, ok, dist) = make(model, attack, inputs, labels, target, rng)?;
        self.refreshes += 1;
        for (j, &slot) in slots.iter().enumerate() {
            self.examples.row_mut(slot).assign(&examples.row(j));
            self.labels[slot] = labels[j];
            self.born[slot] = self.refreshes;
        }
        Ok(stats(slots.len(), ok, dist, evaluations, start))
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Always `false`: a pool has at least one example.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The adversarial examples, one per row.
    pub fn examples(&self) -> ArrayView2<'_, f32> {
        self.examples.view()
    }

    /// The true labels of the images they were made from.
    pub fn labels(&self) -> &[usize] {
        &self.labels
    }

    /// For each slot, the refresh that wrote it (0 for the initial generation).
    pub fn born(&self) -> &[usize] {
        &self.born
    }

    /// Refreshes done so far.
    pub fn refreshes(&self) -> usize {
        self.refreshes
    }
}

/// Attacks every row of `inputs` in parallel; returns the adversarial rows, the evaluations,
/// the successes and the summed distortion of the successes.
fn make<M, A>(
    model: &M,
    attack: &A,
    inputs: ArrayView2<'_, f32>,
    labels: &[usize],
    target: PoolTarget,
    rng: &mut ChaCha8Rng,
) -> Result<(Array2<f32>, usize, usize, f64)>
where
    M: Differentiable + ?Sized,
    A: Attack,
{
    // Seeds are drawn here, in order, so the targets do not depend on rayon's scheduling.
    let targets: Vec<Target> = labels
        .iter()
        .map(|_| match target {
            PoolTarget::Random => Target::Random { seed: rng.gen() },
            PoolTarget::Untargeted => Target::Untargeted,
        })
        .collect();
    let outs = attack.attack_batch(model, inputs, labels, &targets)?;
    let mut examples = Array2::zeros(inputs.raw_dim());
    let (mut evals, mut ok, mut dist) = (0, 0, 0.0);
    for (mut row, o) in examples.rows_mut().into_iter().zip(&outs) {
        row.assign(&o.adversarial);
        evals += o.evaluations;
        if o.success {
            ok += 1;
            dist += o.distortion;
        }
    }
    Ok((examples, evals, ok, dist))
}

fn stats(n: usize, ok: usize, dist: f64, evaluations: usize, start: Instant) -> PoolStats {
    PoolStats {
        generated: n,
        success_rate: ok as f32 / n.max(1) as f32,
        mean_distortion: if ok > 0 { dist / ok as f64 } else { 0.0 },
        evaluations,
        seconds: start.elapsed().as_secs_f64(),
    }
}

/// Figures of one finished epoch of adversarial training.
#[derive(Debug, Clone, PartialEq)]
pub struct AdversarialEpoch {
    /// 0-based epoch index.
    pub epoch: usize,
    /// Mean objective of the epoch's clean steps (with FGSM: of the clean and perturbed
    /// halves together).
    pub loss: f32,
    /// Learning rate used.
    pub learning_rate: f32,
    /// Wall time of the epoch (attacks included, evaluation excluded).
    pub seconds: f64,
    /// Wall time spent making pool examples.
    pub attack_seconds: f64,
    /// Pool examples made during the epoch.
    pub generated: usize,
    /// Pool steps taken.
    pub pool_steps: usize,
    /// Training-set error after the epoch, when evaluated.
    pub train_error: Option<f32>,
    /// Test-set error after the epoch, when evaluated.
    pub test_error: Option<f32>,
}

/// Progress events of [`train_adversarial`].
#[derive(Debug, Clone, PartialEq)]
pub enum AdversarialProgress {
    /// A clean mini-batch (and its pool step) finished.
    Batch {
        /// Epoch index.
        epoch: usize,
        /// Batch index within the epoch.
        batch: usize,
        /// Batches per epoch.
        batches: usize,
    },
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
    /// An epoch finished.
    Epoch(AdversarialEpoch),
}

/// What adversarial training did.
#[derive(Debug, Clone, PartialEq)]
pub struct AdversarialReport {
    /// Per-epoch figures.
    pub epochs: Vec<AdversarialEpoch>,
    /// Final error on the clean training set.
    pub train_error: f32,
    /// Final error on the test set, when one was given.
    pub test_error: Option<f32>,
    /// Pool examples made in all.
    pub generated: usize,
    /// Total wall time (attacks included, evaluation excluded).
    pub seconds: f64,
    /// Total wall time of attacks.
    pub attack_seconds: f64,
}

/// Stream of the pools' generator, apart from the shuffling generator so that the clean batch
/// order is that of plain training from the same seed.
const POOL_STREAM: u64 = 0x6164_765f_706f_6f6c;

/// Per-epoch tallies the steps leave for the progress callback.
#[derive(Default)]
struct Tally {
    attack_seconds: f64,
    generated: usize,
    pool_steps: usize,
    events: Vec<AdversarialProgress>,
}

/// One pool: its level, the network above that level (its weights copied in before each pool
/// step, so the step allocates nothing), and the SGD buffers of a step on it.
struct LevelPool {
    level: usize,
    pool: Option<AdversarialPool>,
    upper: Network,
    sgd: SgdStep<Network>,
}

struct PoolSteps<'a, A: Attack> {
    data: &'a Dataset,
    attack: &'a A,
    params: &'a AdversarialParams,
    pools: Vec<LevelPool>,
    rng: ChaCha8Rng,
    round: usize,
    clean_steps: usize,
    epoch: usize,
    xb: Array2<f32>,
    yb: Vec<usize>,
    tally: &'a RefCell<Tally>,
}

impl<A: Attack> PoolSteps<'_, A> {
    /// The level's inputs for training images `sources`: the images themselves at level 0,
    /// else hidden layer `level − 1`'s output.
    fn inputs(&self, model: &Network, level: usize, sources: &[usize]) -> Result<Array2<f32>> {
        let x = self.data.images().select(Axis(0), sources);
        if level == 0 {
            Ok(x)
        } else {
            model.representation(x.view(), level - 1)
        }
    }

    fn fill(&mut self, model: &Network, refresh: bool) -> Result<()> {
        let p = self.params;
        for i in 0..self.pools.len() {
            let level = self.pools[i].level;
            let count = if refresh {
                refresh_count(p.pool_size, p.refresh_fraction)
            } else {
                p.pool_size
            };
            let sources = sample(&mut self.rng, self.data.len(), count).into_vec();
            let labels: Vec<usize> = sources.iter().map(|&s| self.data.labels()[s]).collect();
            let inputs = self.inputs(model, level, &sources)?;
            let upper = model.above(level)?;
            let lp = &mut self.pools[i];
            let stats = match lp.pool.as_mut() {
                Some(pool) => pool.refresh(
                    &upper,
                    self.attack,
                    inputs.view(),
                    &labels,
                    p.target,
                    &mut self.rng,
                )?,
                None => {
                    let (pool, st) = AdversarialPool::generate(
                        &upper,
                        self.attack,
                        inputs.view(),
                        &labels,
                        p.target,
                        &mut self.rng,
                    )?;
                    lp.pool = Some(pool);
                    st
                }
            };
            let mut t = self.tally.borrow_mut();
            t.attack_seconds += stats.seconds;
            t.generated += stats.generated;
            t.events.push(AdversarialProgress::Pool {
                epoch: self.epoch,
                level,
                refresh: lp.pool.as_ref().map_or(0, |q| q.refreshes()),
                stats,
            });
        }
        Ok(())
    }

    /// One SGD step on the layers above the next level in turn, from its pool.
    fn pool_step(
        &mut self,
        model: &mut Network,
        sgd: &mut SgdStep<Network>,
        lr: f32,
        momentum: f32,
    ) -> Result<()> {
        let i = self.round % self.pools.len();
        self.round += 1;
        let lp = &mut self.pools[i];
        let Some(pool) = lp.pool.as_ref() else {
            return Ok(());
        };
        let rows = self.params.pool_batch.min(pool.len());
        self.yb.clear();
        for r in 0..rows {
            let slot = self.rng.gen_range(0..pool.len());
            self.xb
                .slice_mut(s![r, ..pool.examples.ncols()])
                .assign(&pool.examples.row(slot));
            self.yb.push(pool.labels[slot]);
        }
        let params = model.params();
        let skip = params.len() - lp.upper.params().len();
        for (dst, src) in lp.upper.params_mut().into_iter().zip(&params[skip..]) {
            dst.assign(*src);
        }
        let x = self.xb.slice(s![..rows, ..pool.examples.ncols()]);
        lp.sgd.gradient(&lp.upper, x, &self.yb)?;
        sgd.update_suffix(model.params_mut(), lp.sgd.grads(), lr, momentum)?;
        self.tally.borrow_mut().pool_steps += 1;
        Ok(())
    }
}

impl<A: Attack> Steps<Network> for PoolSteps<'_, A> {
    fn epoch_start(&mut self, model: &Network, epoch: usize) -> Result<()> {
        self.epoch = epoch;
        if epoch == self.params.warmup_epochs {
            self.fill(model, false)?;
        }
        Ok(())
    }

    fn step(
        &mut self,
        model: &mut Network,
        sgd: &mut SgdStep<Network>,
        x: ArrayView2<'_, f32>,
        y: &[usize],
        lr: f32,
        momentum: f32,
        batch: usize,
    ) -> Result<f32> {
        let loss = sgd.step(model, x, y, lr, momentum)?;
        if self.pools[0].pool.is_some() {
            if batch > 0 && batch % self.params.refresh_every == 0 {
                self.fill(model, true)?;
            }
            self.clean_steps += 1;
            if self.clean_steps % self.params.pool_every == 0 {
                self.pool_step(model, sgd, lr * self.params.pool_weight, momentum)?;
            }
        }
        Ok(loss)
    }
}

/// One-step adversarial training: each batch is doubled with its signed-gradient perturbation.
struct FgsmSteps {
    epsilon: f32,
    warmup: usize,
    epoch: usize,
    ws: crate::nn::Workspace,
    losses: Array1<f32>,
    grad: Array2<f32>,
    xx: Array2<f32>,
    yy: Vec<usize>,
}

impl Steps<Network> for FgsmSteps {
    fn capacity(&self, batch: usize) -> usize {
        2 * batch
    }

    fn epoch_start(&mut self, _: &Network, epoch: usize) -> Result<()> {
        self.epoch = epoch;
        Ok(())
    }

    fn step(
        &mut self,
        model: &mut Network,
        sgd: &mut SgdStep<Network>,
        x: ArrayView2<'_, f32>,
        y: &[usize],
        lr: f32,
        momentum: f32,
        _: usize,
    ) -> Result<f32> {
        if self.epoch < self.warmup {
            return sgd.step(model, x, y, lr, momentum);
        }
        let m = x.nrows();
        let (losses, grad) = (
            self.losses.slice_mut(s![..m]),
            self.grad.slice_mut(s![..m, ..]),
        );
        model.loss_and_input_grad_into(x, y, &mut self.ws, losses, grad)?;
        self.xx.slice_mut(s![..m, ..]).assign(&x);
        let eps = self.epsilon;
        ndarray::Zip::from(self.xx.slice_mut(s![m..2 * m, ..]))
            .and(&x)
            .and(self.grad.slice(s![..m, ..]))
            .for_each(|o, &xi, &g| {
                let step = if g > 0.0 {
                    eps
                } else if g < 0.0 {
                    -eps
                } else {
                    0.0
                };
                *o = (xi + step).clamp(0.0, 1.0);
            });
        self.yy.clear();
        self.yy.extend_from_slice(y);
        self.yy.extend_from_slice(y);
        sgd.step(
            model,
            self.xx.slice(s![..2 * m, ..]),
            &self.yy,
            lr,
            momentum,
        )
    }
}

/// One plain SGD step (no momentum, the objective's mean over the rows) on the layers of
/// `model` above `level`, from examples of that level (`inputs`, one per row, labels
/// `labels`): the update a pool step makes, the layers at and below `level` left untouched.
/// Returns the objective before the step.
///
/// # Errors
///
/// As [`Network::above`]; [`Error::Shape`] for inputs that are not the level's width or a
/// label count that does not match; [`Error::NonFinite`] if the objective is not finite.
pub fn step_above(
    model: &mut Network,
    level: usize,
    inputs: ArrayView2<'_, f32>,
    labels: &[usize],
    learning_rate: f32,
) -> Result<f32> {
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
    Ok(objective)
}

/// Trains `model` in place with adversarial examples as `config` says (see the module docs for
/// the schedule), the pools filled by `attack`; measures the final train and test errors (and
/// every epoch's if `eval_every_epoch` is set). The same seed gives the same weights whatever
/// the number of threads.
///
/// # Errors
///
/// [`Error::Shape`] if the data do not fit the model; [`Error::InvalidParameter`] for a pool
/// larger than the training set, a level past the last hidden layer, a level whose
/// activation's range is not the attack's box `[0, 1]` (only sigmoid units), or a level with
/// convolutions above it; [`Error::NonFinite`] if the loss diverges; attack errors.
pub fn train_adversarial<A: Attack>(
    model: &mut Network,
    train: &Dataset,
    test: Option<&Dataset>,
    attack: &A,
    config: &AdversarialConfig,
    mut on_progress: impl FnMut(&AdversarialProgress),
) -> Result<AdversarialReport> {
    let ap = config.params();
    if train.input_dim() != model.input_dim() {
        return Err(Error::shape(
            "training images",
            model.input_dim(),
            train.input_dim(),
        ));
    }
    if train.num_classes() > model.num_classes() {
        return Err(Error::LabelOutOfRange {
            label: train.num_classes() - 1,
            classes: model.num_classes(),
        });
    }
    let tally = RefCell::new(Tally::default());
    let mut pool_rng = ChaCha8Rng::seed_from_u64(ap.train.seed);
    pool_rng.set_stream(POOL_STREAM);
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
            } => on_progress(&AdversarialProgress::Batch {
                epoch: *epoch,
                batch: *batch,
                batches: *batches,
            }),
            Progress::Epoch(e) => {
                let a = AdversarialEpoch {
                    epoch: e.epoch,
                    loss: e.loss,
                    learning_rate: e.learning_rate,
                    seconds: e.seconds,
                    attack_seconds: t.attack_seconds,
                    generated: t.generated,
                    pool_steps: t.pool_steps,
                    train_error: e.train_error,
                    test_error: e.test_error,
                };
                t.attack_seconds = 0.0;
                t.generated = 0;
                t.pool_steps = 0;
                on_progress(&AdversarialProgress::Epoch(a.clone()));
                epochs.push(a);
            }
        }
    };
    let report = match &ap.regime {
        Regime::Pools(levels) => {
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
            let mut pools = Vec::with_capacity(levels.len());
            let mut widest = 0;
            for &level in levels {
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
                    sgd: SgdStep::new(&upper, ap.pool_batch),
                    upper,
                });
            }
            let mut steps = PoolSteps {
                data: train,
                attack,
                params: ap,
                pools,
                rng: pool_rng,
                round: 0,
                clean_steps: 0,
                epoch: 0,
                xb: Array2::zeros((ap.pool_batch, widest)),
                yb: Vec::with_capacity(ap.pool_batch),
                tally: &tally,
            };
            fit_loop(
                model,
                train,
                config.train_config(),
                evaluate,
                &mut forward,
                &mut steps,
            )?
        }
        Regime::Fgsm { epsilon } => {
            let bs = ap.train.batch_size.min(train.len());
            let d = train.input_dim();
            let mut steps = FgsmSteps {
                epsilon: *epsilon,
                warmup: ap.warmup_epochs,
                epoch: 0,
                ws: model.workspace(bs),
                losses: Array1::zeros(bs),
                grad: Array2::zeros((bs, d)),
                xx: Array2::zeros((2 * bs, d)),
                yy: Vec::with_capacity(2 * bs),
            };
            fit_loop(
                model,
                train,
                config.train_config(),
                evaluate,
                &mut forward,
                &mut steps,
            )?
        }
    };
    let last = report.epochs.last().expect("epochs >= 1");
    let (train_error, test_error) = (last.train_error, last.test_error);
    Ok(AdversarialReport {
        train_error: train_error.expect("last epoch evaluated"),
        test_error,
        generated: epochs.iter().map(|e| e.generated).sum(),
        seconds: epochs.iter().map(|e| e.seconds).sum(),
        attack_seconds: epochs.iter().map(|e| e.attack_seconds).sum(),
        epochs,
    })
}
