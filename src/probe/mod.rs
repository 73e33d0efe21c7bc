//! Probing what directions in a hidden layer "mean" (paper §3).
//!
//! Szegedy et al. show, for a unit vector `v`, the held-out images that maximise
//! `⟨φ(x), v⟩`, and claim that natural-basis directions (single units, `v = e_i`) and random
//! directions look equally "semantic". This module finds those images for any
//! [`Representation`] and turns the visual claim into numbers: the label purity of each
//! direction's top-k images and a label-free spread statistic, compared between the two kinds
//! of direction with bootstrap intervals and a permutation test.
//!
//! # Example
//!
//! ```
//! use blindspot::nn::{Architecture, Network};
//! use blindspot::probe::{top_k, Direction};
//! use ndarray::Array2;
//!
//! let mlp = Network::new(Architecture::parse("FC20-10", 6).unwrap(), 1);
//! let x = Array2::from_shape_fn((30, 6), |(i, j)| ((i * 7 + j * 3) % 11) as f32 / 10.0);
//! let tops = top_k(&mlp, x.view(), 0, &[Direction::Unit(3), Direction::Random { seed: 9 }], 5)?;
//! assert_eq!(tops.len(), 2);
//! assert_eq!(tops[0].indices.len(), 5);
//! assert!(tops[0].scores.windows(2).all(|w| w[0] >= w[1]));
//! # Ok::<(), blindspot::Error>(())
//! ```

use ndarray::{Array1, Array2, ArrayView2};
use ndarray_rand::rand_distr::StandardNormal;
use ndarray_rand::RandomExt;
use rand::seq::index::sample;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

mod stats;
mod top_k;

use stats::*;
pub use stats::{
    bootstrap_mean, compare_means, Difference, Interval, MeanCi, MAX_RESAMPLED_VALUES,
    MAX_RESAMPLES,
};
use top_k::*;
pub use top_k::{
    direction_matrix, label_purity, layer_activations, mean_pairwise_distance, top_k,
    top_k_from_activations, TopK,
};

use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::model::Representation;
use crate::nn::{Layer, Network};
use crate::params::{Check, Checked};

/// A direction in a layer's activation space.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Direction {
    /// The natural basis vector `e_i`: the activation of unit `i`.
    Unit(usize),
    /// A Gaussian random vector, normalised to length 1, drawn from a ChaCha8 generator seeded
    /// with `seed` (the same seed and layer width give the same vector).
    Random {
        /// Seed of the generator.
        seed: u64,
    },
    /// A given vector; it is normalised to length 1 (ranking does not depend on its length,
    /// but reported scores are then projections on a unit vector).
    Custom(Array1<f32>),
}

impl Direction {
    /// The unit vector of this direction in a layer of width `dim`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] if `dim` is 0, a unit index is `>= dim`, or a custom vector
    /// is zero; [`Error::Shape`] if a custom vector's length is not `dim`;
    /// [`Error::NonFinite`] if it has a NaN or infinite entry.
    pub fn vector(&self, dim: usize) -> Result<Array1<f32>> {
        if dim == 0 {
            return Err(Error::param("layer_dim", "the layer has width 0"));
        }
        match self {
            Direction::Unit(i) => {
                if *i >= dim {
                    return Err(Error::param(
                        "direction",
                        format!("unit {i} out of range for a layer of width {dim}"),
                    ));
                }
                let mut v = Array1::zeros(dim);
                v[*i] = 1.0;
                Ok(v)
            }
            Direction::Random { seed } => {
                let mut rng = ChaCha8Rng::seed_from_u64(*seed);
                // A Gaussian vector has norm > 0 with probability 1; retry on the (never seen)
                // all-zero draw rather than divide by zero.
                loop {
                    let v: Array1<f32> = Array1::random_using(dim, StandardNormal, &mut rng);
                    let norm = v.dot(&v).sqrt();
                    if norm > 0.0 {
                        return Ok(v / norm);
                    }
                }
            }
            Direction::Custom(v) => {
                if v.len() != dim {
                    return Err(Error::shape("custom direction", dim, v.len()));
                }
                if v.iter().any(|x| !x.is_finite()) {
                    return Err(Error::NonFinite {
                        what: "custom direction".into(),
                    });
                }
                // Accumulate in f64: the squares of tiny f32 entries could underflow to 0.
                let norm = v
                    .iter()
                    .map(|&x| (x as f64) * (x as f64))
                    .sum::<f64>()
                    .sqrt();
                if norm == 0.0 {
                    return Err(Error::param(
                        "direction",
                        "a custom direction must not be the zero vector",
                    ));
                }
                Ok(v.mapv(|x| (x as f64 / norm) as f32))
            }
        }
    }

    /// Whether this is a natural-basis direction.
    pub fn is_unit(&self) -> bool {
        matches!(self, Direction::Unit(_))
    }
}

/// Largest [`ProbeParams::n_random`] accepted.
pub const MAX_DIRECTIONS: usize = 100_000;

/// Largest work a [`study`] may be asked for (`2^35` units, a few seconds): each setting has
/// its own maximum, but their product is what takes time, and at the separate maxima a study
/// would run for hours. With `n` held-out images of `input_dim` values, a layer of width
/// `dim` and `N = n_unit + n_random` directions, the work counted is
///
/// - the projections, `n·dim·N` multiply-adds of one matrix product (and the drawing of the
///   random directions, `dim·N`), 1 unit each;
/// - the selection of every direction's top k from its `n` scores, 1024 units per score
///   (each read of a column of the score matrix is a cache miss);
/// - the pairwise distances of the baseline sets and of every top k,
///   `(baseline_sets + N)·k(k − 1)/2·input_dim` terms, 32 units each;
/// - the bootstrap and permutation draws, `6·resamples·N`, 128 units each.
///
/// The weights are the parts' measured relative costs (a unit is about 0.2 ns on a loaded
/// two-core machine), so the limit bounds the time whichever part dominates; it also bounds
/// the score matrix to `n·N ≤ 2^25` values (128 MiB). The model's own forward pass over the
/// held-out images is not counted: its cost is the data's.
pub const MAX_STUDY_WORK: f64 = (1u64 << 35) as f64;

/// Settings of a probe study ([`study`]) as given; [`ProbeParams::check`](Check::check) turns them
/// into a [`ProbeConfig`]. `Default` gives the example's values.
///
/// ```
/// use blindspot::probe::ProbeParams;
/// use blindspot::Check;
///
/// let config = ProbeParams::default().with_k(5).with_seed(3).check()?;
/// assert_eq!(config.k, 5);
/// assert!(ProbeParams::default().with_resamples(0).check().is_err());
/// # Ok::<(), blindspot::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ProbeParams {
    /// Images per direction.
    pub k: usize,
    /// Number of natural-basis directions (distinct units drawn at random with the seed).
    pub n_unit: usize,
    /// Number of random directions.
    pub n_random: usize,
    /// Number of random k-subsets of the held-out set for the baseline.
    pub baseline_sets: usize,
    /// Bootstrap resamples (and permutations).
    pub resamples: usize,
    /// Seed of everything random: units chosen, random directions, baseline sets, bootstrap.
    pub seed: u64,
}

impl Default for ProbeParams {
    fn default() -> Self {
        ProbeParams {
            k: 8,
            n_unit: 50,
            n_random: 50,
            baseline_sets: 2000,
            resamples: 2000,
            seed: 0,
        }
    }
}

impl ProbeParams {
    /// Sets the images per direction.
    pub fn with_k(mut self, k: usize) -> Self {
        self.k = k;
        self
    }

    /// Sets the numbers of unit and random directions.
    pub fn with_directions(mut self, n_unit: usize, n_random: usize) -> Self {
        self.n_unit = n_unit;
        self.n_random = n_random;
        self
    }

    /// Sets the number of random k-subsets of the baseline.
    pub fn with_baseline_sets(mut self, sets: usize) -> Self {
        self.baseline_sets = sets;
        self
    }

    /// Sets the bootstrap resamples (and permutations).
    pub fn with_resamples(mut self, resamples: usize) -> Self {
        self.resamples = resamples;
        self
    }

    /// Sets the seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
}

impl Check for ProbeParams {
    type Checked = ProbeConfig;

    /// Validates every value once; the result cannot be invalid. What depends on the data
    /// (`k` at most the held-out size, `n_unit` at most the layer's width, the total work
    /// within [`MAX_STUDY_WORK`]) is checked by [`study`].
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] naming the first bad value: `k`, `n_unit` or `n_random` if
    /// 0, `n_random` above [`MAX_DIRECTIONS`], `baseline_sets` or `resamples` outside
    /// `1..=`[`MAX_RESAMPLES`].
    fn check(self) -> Result<ProbeConfig> {
        for (name, value) in [("k", self.k), ("n_unit", self.n_unit)] {
            if value == 0 {
                return Err(Error::param(name, "must be at least 1"));
            }
        }
        if self.n_random == 0 || self.n_random > MAX_DIRECTIONS {
            return Err(Error::param(
                "n_random",
                format!("must be in 1..={MAX_DIRECTIONS}, got {}", self.n_random),
            ));
        }
        check_resamples("baseline_sets", self.baseline_sets)?;
        check_resamples("resamples", self.resamples)?;
        Ok(Checked::assume_valid(self))
    }
}

/// Checked settings of a probe study (from [`ProbeParams::check`](Check::check)).
pub type ProbeConfig = Checked<ProbeParams>;

/// Purity and spread of one direction's top-k.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct DirectionResult {
    /// The direction and its top-k images.
    pub top: TopK,
    /// Share of the most common label in the top-k.
    pub purity: f64,
    /// Mean pairwise input-space distance of the top-k, divided by that of random k-sets.
    pub spread: f64,
}

/// Summary of one group of directions (unit or random).
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct GroupSummary {
    /// Number of directions.
    pub n: usize,
    /// Label purity: mean and bootstrap 95% interval over directions.
    pub purity: MeanCi,
    /// Relative spread (label-free; < 1 means tighter than random images): mean and interval.
    pub spread: MeanCi,
    /// Directions whose top-k set was decided by the index tie-break
    /// ([`TopK::boundary_ties`] > 0).
    pub tied: usize,
}

/// What random k-subsets of the held-out set look like: the chance level.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Baseline {
    /// Number of random k-sets drawn.
    pub sets: usize,
    /// Mean label purity of a random k-set.
    pub purity_mean: f64,
    /// 2.5% and 97.5% percentiles of a single random k-set's purity.
    pub purity_range95: Interval,
    /// Mean pairwise distance within a random k-set, averaged over sets: the spread unit.
    pub pairwise_distance: f64,
    /// 2.5% and 97.5% percentiles of a single random k-set's relative spread.
    pub spread_range95: Interval,
}

/// The measured version of the paper's §3 claim for one layer.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ProbeReport {
    /// Layer probed.
    pub layer: usize,
    /// Its width.
    pub layer_dim: usize,
    /// Images per direction.
    pub k: usize,
    /// Size of the held-out set.
    pub heldout: usize,
    /// Natural-basis directions.
    pub unit: GroupSummary,
    /// Random directions.
    pub random: GroupSummary,
    /// Random k-sets of images (no direction at all).
    pub baseline: Baseline,
    /// Purity, unit minus random.
    pub purity_difference: Difference,
    /// Relative spread, unit minus random.
    pub spread_difference: Difference,
    /// Per-direction results, unit directions first, then random ones.
    pub directions: Vec<DirectionResult>,
}

impl ProbeReport {
    /// The unit-direction results.
    pub fn unit_results(&self) -> impl Iterator<Item = &DirectionResult> {
        self.directions.iter().filter(|d| d.top.direction.is_unit())
    }

    /// The random-direction results.
    pub fn random_results(&self) -> impl Iterator<Item = &DirectionResult> {
        self.directions
            .iter()
            .filter(|d| !d.top.direction.is_unit())
    }
}

/// Independent, reproducible random streams for the parts of a study, so that changing one
/// setting (say, the number of baseline sets) does not change the others' draws.
fn stream(seed: u64, id: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(id);
    rng
}

impl Checked<ProbeParams> {
    /// The checks that depend on the data: `k` at most the held-out size `n`, `n_unit` at
    /// most the layer's width `dim`, and the work of a study of `n` images of `input_dim`
    /// values within [`MAX_STUDY_WORK`].
    fn check_data(&self, dim: usize, n: usize, input_dim: usize) -> Result<()> {
        check_k(self.k, n)?;
        check_n_unit(self.n_unit, dim)?;
        self.check_work(n, dim, input_dim)
    }

    /// [`Error::InvalidParameter`] naming the setting whose part of the work is largest if
    /// the study's work (see [`MAX_STUDY_WORK`]) is over the limit.
    fn check_work(&self, n: usize, dim: usize, input_dim: usize) -> Result<()> {
        let dirs = (self.n_unit as f64) + (self.n_random as f64);
        let (n, dim, input_dim, k) = (n as f64, dim as f64, input_dim as f64, self.k as f64);
        let terms = k * (k - 1.0) / 2.0 * input_dim;
        let parts = [
            ("n_random", n * dim * dirs + 1024.0 * n * dirs),
            ("baseline_sets", 32.0 * self.baseline_sets as f64 * terms),
            ("k", 32.0 * dirs * terms),
            ("resamples", 128.0 * 6.0 * self.resamples as f64 * dirs),
        ];
        let work: f64 = parts.iter().map(|p| p.1).sum();
        if work > MAX_STUDY_WORK {
            let (name, _) =
                parts.iter().copied().fold(
                    ("", f64::NEG_INFINITY),
                    |a, b| if b.1 > a.1 { b } else { a },
                );
            return Err(Error::param(
                name,
                format!(
                    "the study would take about {work:.3e} units of work (projections and \
                     selection {:.3e}, baseline distances {:.3e}, top-k distances {:.3e}, \
                     resampling {:.3e}), more than {MAX_STUDY_WORK:.3e}",
                    parts[0].1, parts[1].1, parts[2].1, parts[3].1
                ),
            ));
        }
        Ok(())
    }

    /// The study's directions: `n_unit` distinct units (ascending) then `n_random` random
    /// directions, all determined by `seed`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] (`n_unit`) if `n_unit > dim`.
    pub fn directions(&self, dim: usize) -> Result<Vec<Direction>> {
        check_n_unit(self.n_unit, dim)?;
        let mut rng = stream(self.seed, 1);
        let mut units = sample(&mut rng, dim, self.n_unit).into_vec();
        units.sort_unstable();
        let mut dirs: Vec<Direction> = units.into_iter().map(Direction::Unit).collect();
        let mut rng = stream(self.seed, 2);
        dirs.extend((0..self.n_random).map(|_| Direction::Random { seed: rng.gen() }));
        Ok(dirs)
    }
}

fn check_n_unit(n_unit: usize, dim: usize) -> Result<()> {
    if n_unit > dim {
        return Err(Error::param(
            "n_unit",
            format!("{n_unit} unit directions asked of a layer of width {dim}"),
        ));
    }
    Ok(())
}

/// Runs the §3 experiment on layer `layer` of `model` with `heldout` as the image pool:
/// top-k images of `n_unit` unit and `n_random` random directions, their label purity and
/// relative spread, the random-k-set baseline, and the unit-vs-random comparison.
///
/// # Errors
///
/// [`Error::InvalidParameter`] for a layer out of range, `k` larger than the held-out set
/// (`k`), more unit directions than units (`n_unit`), or more work than [`MAX_STUDY_WORK`]
/// allows (naming the setting with the largest share); as
/// [`layer_activations`] for model failures.
pub fn study<R: Representation + ?Sized>(
    model: &R,
    heldout: &Dataset,
    layer: usize,
    config: &ProbeConfig,
) -> Result<ProbeReport> {
    let n = heldout.len();
    let dim = checked_layer_dim(model, layer)?;
    config.check_data(dim, n, heldout.input_dim())?;
    let directions = config.directions(dim)?;
    let images = heldout.images();
    let labels = heldout.labels();
    let acts = layer_activations(model, images, layer)?;
    let tops = top_k_from_activations(acts.view(), &directions, config.k)?;

    // Chance level: k images drawn without replacement, no direction involved.
    let mut rng = stream(config.seed, 3);
    let mut base_purity = Vec::with_capacity(config.baseline_sets);
    let mut base_dist = Vec::with_capacity(config.baseline_sets);
    for _ in 0..config.baseline_sets {
        let idx = sample(&mut rng, n, config.k).into_vec();
        base_purity.push(label_purity(labels, &idx)?);
        base_dist.push(mean_pairwise_distance(images, &idx)?);
    }
    let unit_dist = mean(&base_dist);
    // All images identical would make every spread 0/0; report 1 (as spread as chance) then.
    let relative = |d: f64| if unit_dist > 0.0 { d / unit_dist } else { 1.0 };
    let mut base_spread: Vec<f64> = base_dist.iter().map(|&d| relative(d)).collect();
    let baseline = Baseline {
        sets: config.baseline_sets,
        purity_mean: mean(&base_purity),
        purity_range95: percentile_interval(&mut base_purity),
        pairwise_distance: unit_dist,
        spread_range95: percentile_interval(&mut base_spread),
    };

    let results: Vec<DirectionResult> = tops
        .into_iter()
        .map(|top| {
            Ok(DirectionResult {
                purity: label_purity(labels, &top.indices)?,
                spread: relative(mean_pairwise_distance(images, &top.indices)?),
                top,
            })
        })
        .collect::<Result<_>>()?;
    let split = |f: fn(&DirectionResult) -> f64| -> (Vec<f64>, Vec<f64>) {
        let unit = results
            .iter()
            .filter(|r| r.top.direction.is_unit())
            .map(f)
            .collect();
        let random = results
            .iter()
            .filter(|r| !r.top.direction.is_unit())
            .map(f)
            .collect();
        (unit, random)
    };
    let (unit_purity, random_purity) = split(|r| r.purity);
    let (unit_spread, random_spread) = split(|r| r.spread);
    // Distinct seeds per statistic, derived from the study seed, keep every interval
    // reproducible and independent of the others.
    let bs = |id: u64| stream(config.seed, 10 + id).gen::<u64>();
    let group = |purity: &[f64], spread: &[f64], unit: bool, id: u64| -> Result<GroupSummary> {
        Ok(GroupSummary {
            n: purity.len(),
            tied: results
                .iter()
                .filter(|r| r.top.direction.is_unit() == unit && r.top.boundary_ties > 0)
                .count(),
            purity: bootstrap_mean(purity, config.resamples, bs(id))?,
            spread: bootstrap_mean(spread, config.resamples, bs(id + 1))?,
        })
    };
    Ok(ProbeReport {
        layer,
        layer_dim: dim,
        k: config.k,
        heldout: n,
        unit: group(&unit_purity, &unit_spread, true, 0)?,
        random: group(&random_purity, &random_spread, false, 2)?,
        baseline,
        purity_difference: compare_means(&unit_purity, &random_purity, config.resamples, bs(4))?,
        spread_difference: compare_means(&unit_spread, &random_spread, config.resamples, bs(5))?,
        directions: results,
    })
}

/// The hidden-layer *pre-activations* of an [`Network`], as a [`Representation`]: layer `k` is
/// the same layer as the network's own representation layer `k`, read before its
/// nonlinearity (`z_k = φ_{k-1}(x) W_k + b_k` for a dense layer).
///
/// Why: a sigmoid unit's f32 activation rounds to exactly 1 for every `z ≳ 17`, so a
/// strongly driven unit ties on hundreds of images and its "top-k" is decided by the index
/// tie-break. The activation is monotone in `z`, so ranking single units by `z` gives the
/// ranking exact arithmetic would give for `σ(z)`. (For random directions the two spaces
/// differ: `⟨z, v⟩` is a direction in pre-activation space.) A convolutional stage that ends
/// in max-pooling has no single pre-activation map; asking for one is an error.
#[derive(Debug, Clone, Copy)]
pub struct PreActivations<'a>(pub &'a Network);

impl Representation for PreActivations<'_> {
    fn num_layers(&self) -> usize {
        self.0.num_layers()
    }

    fn layer_dim(&self, k: usize) -> Result<usize> {
        self.0.layer_dim(k)
    }

    /// # Errors
    ///
    /// As [`Network::layer_output`]; [`Error::InvalidParameter`] for a layer that ends in
    /// pooling; [`Error::NonFinite`] naming the pre-activations of layer `k` for a NaN or
    /// infinite value.
    fn representation(&self, x: ArrayView2<'_, f32>, k: usize) -> Result<Array2<f32>> {
        self.layer_dim(k)?;
        let i = self
            .0
            .readable_layer(k)
            .ok_or_else(|| Error::param("layer", format!("layer {k} out of range")))?;
        match (
            i.checked_sub(1).map(|p| &self.0.layers()[p]),
            &self.0.layers()[i],
        ) {
            (Some(Layer::Dense(_) | Layer::Conv2d(_)), Layer::Activation(_)) => {
                self.0.layer_output(x, i - 1).map_err(|e| match e {
                    Error::NonFinite { .. } => Error::NonFinite {
                        what: format!(
                            "pre-activations of layer {k} (the input is too large for finite \
                             values)"
                        ),
                    },
                    other => other,
                })
            }
            _ => Err(Error::param(
                "layer",
                format!("layer {k} ends in pooling and has no pre-activation map"),
            )),
        }
    }
}
