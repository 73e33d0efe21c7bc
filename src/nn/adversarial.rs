//! Adversarial training (paper §4.1): see [`train_adversarial`].

use std::time::Instant;

use ndarray::{s, Array2};
use rand::seq::index::sample;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::attack::{Attack, Target};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::model::Differentiable;
use crate::nn::train::SgdStep;
use crate::nn::{error_rate, TrainConfig, TrainParams, Trainable};

/// Which label the attacks that fill the pool aim at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PoolTarget {
    /// A label drawn per example from the pool's generator: one c-search per example.
    #[default]
    Random,
    /// The smallest perturbation over all other labels (the paper's minimal distortion), nine
    /// times the cost on ten classes.
    Untargeted,
}

/// Adversarial-training hyperparameters as given; [`AdversarialParams::check`] validates them.
#[derive(Debug, Clone, PartialEq)]
pub struct AdversarialParams {
    /// The SGD settings (epochs, batch size, rate, schedule, seed) shared with plain training.
    pub train: TrainParams,
    /// Adversarial examples kept in the pool (>= 1).
    pub pool_size: usize,
    /// Fraction of the pool's slots replaced at each refresh, in (0, 1].
    pub refresh_fraction: f32,
    /// Mini-batches between refreshes (>= 1).
    pub refresh_every: usize,
    /// Fraction of each mini-batch drawn from the pool, in [0, 1); must leave at least one
    /// clean example per batch.
    pub batch_share: f32,
    /// Clean epochs before the pool is first generated (< epochs).
    pub warmup_epochs: usize,
    /// Which label the pool's attacks aim at.
    pub target: PoolTarget,
}

impl AdversarialParams {
    /// Defaults around `train`: a pool of 5,000 examples, 10% of it replaced every 500
    /// batches, a quarter of each batch adversarial, one clean warm-up epoch, random targets.
    pub fn new(train: TrainParams) -> Self {
        AdversarialParams {
            train,
            pool_size: 5_000,
            refresh_fraction: 0.1,
            refresh_every: 500,
            batch_share: 0.25,
            warmup_epochs: 1,
            target: PoolTarget::Random,
        }
    }

    /// Sets the pool size.
    pub fn with_pool_size(mut self, n: usize) -> Self {
        self.pool_size = n;
        self
    }

    /// Sets how often (in batches) and how much (a fraction) of the pool is replaced.
    pub fn with_refresh(mut self, every: usize, fraction: f32) -> Self {
        self.refresh_every = every;
        self.refresh_fraction = fraction;
        self
    }

    /// Sets the adversarial share of each mini-batch.
    pub fn with_batch_share(mut self, share: f32) -> Self {
        self.batch_share = share;
        self
    }

    /// Sets the clean warm-up epochs.
    pub fn with_warmup_epochs(mut self, epochs: usize) -> Self {
        self.warmup_epochs = epochs;
        self
    }

    /// Sets the pool's attack target.
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
        let p = &self;
        if p.pool_size == 0 {
            return Err(Error::param("pool_size", "must be at least 1"));
        }
        if !(p.refresh_fraction > 0.0 && p.refresh_fraction <= 1.0) {
            return Err(Error::param(
                "refresh_fraction",
                format!("must be in (0, 1], got {}", p.refresh_fraction),
            ));
        }
        if p.refresh_every == 0 {
            return Err(Error::param("refresh_every", "must be at least 1 batch"));
        }
        if !(0.0..1.0).contains(&p.batch_share) {
            return Err(Error::param(
                "batch_share",
                format!("must be in [0, 1), got {}", p.batch_share),
            ));
        }
        if adversarial_per_batch(p.batch_share, p.train.batch_size) >= p.train.batch_size {
            return Err(Error::param(
                "batch_share",
                format!(
                    "{} of a batch of {} leaves no clean example",
                    p.batch_share, p.train.batch_size
                ),
            ));
        }
        if p.warmup_epochs >= p.train.epochs {
            return Err(Error::param(
                "warmup_epochs",
                format!(
                    "{} warm-up epochs leave no adversarial epoch out of {}",
                    p.warmup_epochs, p.train.epochs
                ),
            ));
        }
        Ok(AdversarialConfig {
            params: self,
            train,
        })
    }
}

/// Pool examples in a batch of `batch` rows.
fn adversarial_per_batch(share: f32, batch: usize) -> usize {
    (share as f64 * batch as f64).round() as usize
}

/// Slots replaced per refresh of a pool of `size` (at least one, so that a refresh always
/// refreshes something).
pub fn refresh_count(size: usize, fraction: f32) -> usize {
    ((fraction as f64 * size as f64).round() as usize).clamp(1, size.max(1))
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

    /// The validated SGD settings (learning-rate schedule included).
    pub fn train_config(&self) -> &TrainConfig {
        &self.train
    }

    /// Adversarial examples in each full mini-batch once the pool exists.
    pub fn adversarial_per_batch(&self) -> usize {
        adversarial_per_batch(self.params.batch_share, self.params.train.batch_size)
    }

    /// Slots replaced at each refresh.
    pub fn refresh_count(&self) -> usize {
        refresh_count(self.params.pool_size, self.params.refresh_fraction)
    }
}

/// What one generation or refresh of the pool did.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolStats {
    /// Examples generated (and slots replaced).
    pub generated: usize,
    /// Fraction of them the model misclassified when they were made.
    pub success_rate: f32,
    /// Mean distortion of the successful ones (0 if none).
    pub mean_distortion: f64,
    /// Model evaluations the attacks used.
    pub evaluations: usize,
    /// Wall time.
    pub seconds: f64,
}

/// A fixed-size pool of adversarial examples with their true labels.
#[derive(Debug, Clone, PartialEq)]
pub struct AdversarialPool {
    images: Array2<f32>,
    labels: Vec<usize>,
    sources: Vec<usize>,
    born: Vec<usize>,
    refreshes: usize,
}

impl AdversarialPool {
    /// A pool of `size` examples made by `attack` against `model` from distinct training images
    /// of `data` drawn with `rng` (so `size <= data.len()`).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] if `size` is 0 or larger than the data; attack errors.
    pub fn generate<M, A>(
        model: &M,
        attack: &A,
        data: &Dataset,
        size: usize,
        target: PoolTarget,
        rng: &mut ChaCha8Rng,
    ) -> Result<(Self, PoolStats)>
    where
        M: Differentiable + ?Sized,
        A: Attack,
    {
        if size == 0 || size > data.len() {
            return Err(Error::param(
                "pool_size",
                format!(
                    "must be in 1..={} (the data's size), got {size}",
                    data.len()
                ),
            ));
        }
        let start = Instant::now();
        let sources = sample(rng, data.len(), size).into_vec();
        let (images, evaluations, ok, dist) = make(model, attack, data, &sources, target, rng)?;
        let pool = AdversarialPool {
            images,
            labels: sources.iter().map(|&i| data.labels()[i]).collect(),
            sources,
            born: vec![0; size],
            refreshes: 0,
        };
        Ok((pool, stats(size, ok, dist, evaluations, start)))
    }

    /// Replaces `refresh_count(len, fraction)` slots, chosen uniformly at random with `rng`,
    /// by examples newly made against `model` from random images of `data`; the size is kept.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] for a fraction outside (0, 1]; attack errors (the pool is
    /// then unchanged).
    pub fn refresh<M, A>(
        &mut self,
        model: &M,
        attack: &A,
        data: &Dataset,
        fraction: f32,
        target: PoolTarget,
        rng: &mut ChaCha8Rng,
    ) -> Result<PoolStats>
    where
        M: Differentiable + ?Sized,
        A: Attack,
    {
        if !(fraction > 0.0 && fraction <= 1.0) {
            return Err(Error::param(
                "refresh_fraction",
                format!("must be in (0, 1], got {fraction}"),
            ));
        }
        let start = Instant::now();
        let k = refresh_count(self.len(), fraction);
        let slots = sample(rng, self.len(), k).into_vec();
        // Distinct images within one refresh; repeats across refreshes are allowed.
        let sources = sample(rng, data.len(), k.min(data.len())).into_vec();
        let (images, evaluations, ok, dist) = make(model, attack, data, &sources, target, rng)?;
        self.refreshes += 1;
        for (j, (&slot, &src)) in slots.iter().zip(&sources).enumerate() {
            self.images.row_mut(slot).assign(&images.row(j));
            self.labels[slot] = data.labels()[src];
            self.sources[slot] = src;
            self.born[slot] = self.refreshes;
        }
        Ok(stats(sources.len(), ok, dist, evaluations, start))
    }

    /// Number of examples (fixed at generation).
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Always `false`: a pool has at least one example.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The adversarial images, one per row.
    pub fn images(&self) -> ndarray::ArrayView2<'_, f32> {
        self.images.view()
    }

    /// The true labels of the images they were made from.
    pub fn labels(&self) -> &[usize] {
        &self.labels
    }

    /// Index in the training data of the image each slot was made from.
    pub fn sources(&self) -> &[usize] {
        &self.sources
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

/// Attacks the images `sources` of `data` in parallel; returns the adversarial rows, the
/// evaluations, the successes and the summed distortion of the successes.
fn make<M, A>(
    model: &M,
    attack: &A,
    data: &Dataset,
    sources: &[usize],
    target: PoolTarget,
    rng: &mut ChaCha8Rng,
) -> Result<(Array2<f32>, usize, usize, f64)>
where
    M: Differentiable + ?Sized,
    A: Attack,
{
    let xs = data.images().select(ndarray::Axis(0), sources);
    let labels: Vec<usize> = sources.iter().map(|&i| data.labels()[i]).collect();
    // Seeds are drawn here, in order, so the targets do not depend on rayon's scheduling.
    let targets: Vec<Target> = sources
        .iter()
        .map(|_| match target {
            PoolTarget::Random => Target::Random { seed: rng.gen() },
            PoolTarget::Untargeted => Target::Untargeted,
        })
        .collect();
    let outs = attack.attack_batch(model, xs.view(), &labels, &targets)?;
    let mut images = Array2::zeros(xs.raw_dim());
    let (mut evals, mut ok, mut dist) = (0, 0, 0.0);
    for (mut row, o) in images.rows_mut().into_iter().zip(&outs) {
        row.assign(&o.adversarial);
        evals += o.evaluations;
        if o.success {
            ok += 1;
            dist += o.distortion;
        }
    }
    Ok((images, evals, ok, dist))
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
    /// Mean training objective over the epoch's batches (clean and pool examples together).
    pub loss: f32,
    /// Learning rate used.
    pub learning_rate: f32,
    /// Wall time of the SGD updates.
    pub sgd_seconds: f64,
    /// Wall time spent generating adversarial examples.
    pub attack_seconds: f64,
    /// Adversarial examples generated during the epoch.
    pub generated: usize,
    /// Success rate of the attacks of the epoch (`None` if none ran).
    pub attack_success_rate: Option<f32>,
    /// Mean distortion of the epoch's successful attacks (`None` if none).
    pub attack_mean_distortion: Option<f64>,
    /// Training-set error after the epoch, when evaluated.
    pub train_error: Option<f32>,
    /// Test-set error after the epoch, when evaluated.
    pub test_error: Option<f32>,
}

/// Progress events of [`train_adversarial`].
#[derive(Debug, Clone, PartialEq)]
pub enum AdversarialProgress {
    /// A mini-batch finished.
    Batch {
        /// Epoch index.
        epoch: usize,
        /// Batch index within the epoch.
        batch: usize,
        /// Batches in this epoch.
        batches: usize,
    },
    /// The pool was generated (`refresh == 0`) or refreshed.
    Pool {
        /// Epoch index.
        epoch: usize,
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
    /// Adversarial examples generated in all.
    pub generated: usize,
    /// Total wall time of SGD updates.
    pub sgd_seconds: f64,
    /// Total wall time of attacks.
    pub attack_seconds: f64,
}

/// Stream of the pool's generator, kept apart from the shuffling generator so that the clean
/// example order is that of plain training from the same seed.
const POOL_STREAM: u64 = 0x6164_765f_706f_6f6c;

/// Trains `model` in place with adversarial training on `train`, generating the pool's
/// examples with `attack`; measures the final train and test errors (and every epoch's if
/// `eval_every_epoch` is set).
///
/// Adversarial training (paper §4.1) is SGD on mini-batches that mix clean examples with
/// adversarial examples of the model being trained.
///
/// The paper reports a non-convolutional MNIST network below 1.2% test error "by keeping a pool
/// of adversarial examples a random subset of which is continuously replaced by newly generated
/// adversarial examples and which is mixed into the original training set all the time". Here:
///
/// - after `warmup_epochs` clean epochs an [`AdversarialPool`] of `pool_size` adversarial
///   examples is generated for the current model from random training images (the attack
///   starts from a model that classifies something, so its examples are meaningful);
/// - every `refresh_every` mini-batches a random `refresh_fraction` of the pool's slots is
///   replaced by examples newly generated against the current weights, so the pool follows the
///   model as it changes;
/// - every mini-batch then holds `round(batch_share · batch_size)` examples drawn uniformly
///   from the pool, with their true labels, and the rest from the clean data; an epoch is one
///   pass over the clean data, so it has `n / (batch_size − k)` batches.
///
/// The attack is any [`Attack`]; the pool stores whatever it returns, successful or not (a
/// failed search still ends near the decision boundary, which is where the example is useful).
/// Everything is drawn from generators seeded with the configured seed, mini-batch gradients
/// are summed in a fixed order, and each attack is deterministic, so the same seed gives the
/// same weights whatever the number of threads.
///
/// During the warm-up epochs the batches are exactly those of [`crate::nn::train`] from the
/// same seed.
///
/// # Errors
///
/// [`Error::Shape`] if the data do not fit the model; [`Error::InvalidParameter`] if the pool
/// is larger than the training set; [`Error::NonFinite`] if the loss diverges; attack errors.
pub fn train_adversarial<M, A>(
    model: &mut M,
    train: &Dataset,
    test: Option<&Dataset>,
    attack: &A,
    config: &AdversarialConfig,
    mut on_progress: impl FnMut(&AdversarialProgress),
) -> Result<AdversarialReport>
where
    M: Trainable + Differentiable,
    A: Attack,
{
    let ap = config.params();
    let p = &ap.train;
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
    let n = train.len();
    let bs = p.batch_size.min(n);
    let k_adv = config.adversarial_per_batch().min(bs - 1);
    let mut rng = ChaCha8Rng::seed_from_u64(p.seed);
    let mut pool_rng = ChaCha8Rng::seed_from_u64(p.seed);
    pool_rng.set_stream(POOL_STREAM);

    let mut sgd = SgdStep::new(&*model, bs);
    let mut xb = Array2::<f32>::zeros((bs, train.input_dim()));
    let mut yb: Vec<usize> = Vec::with_capacity(bs);
    let mut pool: Option<AdversarialPool> = None;
    let mut epochs = Vec::with_capacity(p.epochs);
    let (mut generated_all, mut sgd_all, mut attack_all) = (0usize, 0.0f64, 0.0f64);

    for epoch in 0..p.epochs {
        let lr = config.train_config().learning_rate_at(epoch);
        let (mut attack_seconds, mut generated, mut ok, mut dist) = (0.0, 0usize, 0.0f64, 0.0f64);
        let mut note = |s: &PoolStats, generated: &mut usize, attack_seconds: &mut f64| {
            *generated += s.generated;
            *attack_seconds += s.seconds;
            ok += s.success_rate as f64 * s.generated as f64;
            dist += s.mean_distortion * s.success_rate as f64 * s.generated as f64;
        };
        if epoch == ap.warmup_epochs {
            let (fresh, st) = AdversarialPool::generate(
                &*model,
                attack,
                train,
                ap.pool_size,
                ap.target,
                &mut pool_rng,
            )?;
            note(&st, &mut generated, &mut attack_seconds);
            on_progress(&AdversarialProgress::Pool {
                epoch,
                refresh: 0,
                stats: st,
            });
            pool = Some(fresh);
        }
        let k = if pool.is_some() { k_adv } else { 0 };
        let clean = bs - k;
        let order = train.shuffled_indices(&mut rng);
        let batches = n.div_ceil(clean);
        let mut total = 0.0f64;
        let mut sgd_seconds = 0.0;
        for (b, idx) in order.chunks(clean).enumerate() {
            if let Some(pool) = pool.as_mut() {
                if b > 0 && b % ap.refresh_every == 0 {
                    let st = pool.refresh(
                        &*model,
                        attack,
                        train,
                        ap.refresh_fraction,
                        ap.target,
                        &mut pool_rng,
                    )?;
                    note(&st, &mut generated, &mut attack_seconds);
                    on_progress(&AdversarialProgress::Pool {
                        epoch,
                        refresh: pool.refreshes(),
                        stats: st,
                    });
                }
            }
            let t = Instant::now();
            let c = idx.len();
            yb.clear();
            for (mut row, &i) in xb.rows_mut().into_iter().zip(idx) {
                row.assign(&train.images().row(i));
                yb.push(train.labels()[i]);
            }
            let m = match pool.as_ref() {
                Some(pool) if k > 0 => {
                    for j in 0..k {
                        let slot = pool_rng.gen_range(0..pool.len());
                        xb.row_mut(c + j).assign(&pool.images.row(slot));
                        yb.push(pool.labels[slot]);
                    }
                    c + k
                }
                _ => c,
            };
            let loss = sgd
                .step(model, xb.slice(s![..m, ..]), &yb, lr, p.momentum)
                .map_err(|e| match e {
                    Error::NonFinite { what } => Error::NonFinite {
                        what: format!("adversarial {what} at epoch {epoch}, batch {b}"),
                    },
                    other => other,
                })?;
            total += loss as f64;
            sgd_seconds += t.elapsed().as_secs_f64();
            on_progress(&AdversarialProgress::Batch {
                epoch,
                batch: b,
                batches,
            });
        }
        let (train_error, test_error) = if p.eval_every_epoch || epoch + 1 == p.epochs {
            (
                Some(error_rate(&*model, train)?),
                test.map(|t| error_rate(&*model, t)).transpose()?,
            )
        } else {
            (None, None)
        };
        let e = AdversarialEpoch {
            epoch,
            loss: (total / batches as f64) as f32,
            learning_rate: lr,
            sgd_seconds,
            attack_seconds,
            generated,
            attack_success_rate: (generated > 0).then(|| (ok / generated as f64) as f32),
            attack_mean_distortion: (ok > 0.5).then(|| dist / ok),
            train_error,
            test_error,
        };
        generated_all += generated;
        sgd_all += sgd_seconds;
        attack_all += attack_seconds;
        on_progress(&AdversarialProgress::Epoch(e.clone()));
        epochs.push(e);
    }
    let last = epochs.last().expect("epochs >= 1");
    Ok(AdversarialReport {
        train_error: last.train_error.expect("last epoch evaluated"),
        test_error: last.test_error,
        epochs,
        generated: generated_all,
        sgd_seconds: sgd_all,
        attack_seconds: attack_all,
    })
}
