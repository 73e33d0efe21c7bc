//! The statistics of a probe study: bootstrap intervals of a mean and of a difference of
//! means, seeded so that a study's figures repeat.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};

/// Largest number of bootstrap resamples, permutations or baseline sets accepted: far more
/// than a 95% interval needs, and small enough that a typo cannot run for hours.
pub const MAX_RESAMPLES: usize = 1_000_000;

/// Largest number of values drawn in all the resamples of one [`bootstrap_mean`] or
/// [`compare_means`] (`resamples` times the values; `2^26`, a second or so): the separate
/// maxima allow far more.
pub const MAX_RESAMPLED_VALUES: usize = 1 << 26;

/// `Ok` if `resamples` resamples of `len` values each are within [`MAX_RESAMPLED_VALUES`].
fn check_resampled_values(resamples: usize, len: usize) -> Result<()> {
    match resamples.checked_mul(len) {
        Some(v) if v <= MAX_RESAMPLED_VALUES => Ok(()),
        _ => Err(Error::param(
            "resamples",
            format!(
                "{resamples} resamples of {len} values draw more than {MAX_RESAMPLED_VALUES} \
                 values"
            ),
        )),
    }
}

pub(super) fn check_resamples(name: &'static str, n: usize) -> Result<()> {
    if n == 0 || n > MAX_RESAMPLES {
        return Err(Error::param(
            name,
            format!("must be in 1..={MAX_RESAMPLES}, got {n}"),
        ));
    }
    Ok(())
}

/// Values near `f64::MAX` are finite but their resampled sums can overflow: an error, not
/// an infinite interval.
pub(super) fn check_interval(ci: Interval, what: &str) -> Result<()> {
    if ci.lo.is_finite() && ci.hi.is_finite() {
        Ok(())
    } else {
        Err(Error::NonFinite {
            what: format!("{what} (the values are too large for f64 sums)"),
        })
    }
}

pub(super) fn check_values(v: &[f64], what: &str) -> Result<()> {
    if v.iter().any(|x| !x.is_finite()) {
        return Err(Error::NonFinite { what: what.into() });
    }
    Ok(())
}

/// A two-sided interval.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Interval {
    /// Lower end.
    pub lo: f64,
    /// Upper end.
    pub hi: f64,
}

impl Interval {
    /// Whether `v` lies in `[lo, hi]`.
    pub fn contains(&self, v: f64) -> bool {
        self.lo <= v && v <= self.hi
    }
}

/// The mean of `values` and a percentile-bootstrap 95% interval for it.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct MeanCi {
    /// Sample mean.
    pub mean: f64,
    /// Percentile bootstrap 95% interval of the mean.
    pub ci95: Interval,
}

pub(super) fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// The 2.5% and 97.5% percentiles of `stats` (sorted in place), by the nearest-rank rule.
pub(super) fn percentile_interval(stats: &mut [f64]) -> Interval {
    stats.sort_unstable_by(f64::total_cmp);
    let b = stats.len();
    let lo = ((0.025 * b as f64).ceil() as usize).clamp(1, b) - 1;
    let hi = ((0.975 * b as f64).ceil() as usize).clamp(1, b) - 1;
    Interval {
        lo: stats[lo],
        hi: stats[hi],
    }
}

pub(super) fn resample_mean(v: &[f64], rng: &mut impl Rng) -> f64 {
    (0..v.len())
        .map(|_| v[rng.gen_range(0..v.len())])
        .sum::<f64>()
        / v.len() as f64
}

/// Mean of `values` with a percentile-bootstrap 95% interval from `resamples` resamples drawn
/// by a ChaCha8 generator seeded with `seed`.
///
/// # Errors
///
/// [`Error::EmptyInput`] if `values` is empty; [`Error::NonFinite`] if a value is NaN or
/// infinite, or values so large that their sums overflow; [`Error::InvalidParameter`] if
/// `resamples` is 0 or above [`MAX_RESAMPLES`], or `resamples · values.len()` is above
/// [`MAX_RESAMPLED_VALUES`].
pub fn bootstrap_mean(values: &[f64], resamples: usize, seed: u64) -> Result<MeanCi> {
    if values.is_empty() {
        return Err(Error::empty("bootstrap of no values"));
    }
    check_values(values, "bootstrap values")?;
    check_resamples("resamples", resamples)?;
    check_resampled_values(resamples, values.len())?;
    if !mean(values).is_finite() {
        return Err(Error::NonFinite {
            what: "mean of the bootstrap values".into(),
        });
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut stats: Vec<f64> = (0..resamples)
        .map(|_| resample_mean(values, &mut rng))
        .collect();
    let ci95 = percentile_interval(&mut stats);
    check_interval(ci95, "bootstrap interval")?;
    Ok(MeanCi {
        mean: mean(values),
        ci95,
    })
}

/// The difference of two groups' means (`a − b`) and how sure we are that it is not 0.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Difference {
    /// `mean(a) − mean(b)`.
    pub mean: f64,
    /// Percentile-bootstrap 95% interval of the difference (each group resampled separately).
    pub ci95: Interval,
    /// Two-sided permutation-test p-value of `|mean(a) − mean(b)|` under exchangeable labels,
    /// `(1 + #{|perm diff| >= |observed|}) / (1 + permutations)`.
    pub p_value: f64,
    /// The decision rule used throughout: the groups differ when the bootstrap interval
    /// excludes 0. (The p-value is reported alongside; the two agree except near the edge.)
    pub differs: bool,
}

/// Compares the means of `a` and `b` by bootstrap (`resamples` draws) and permutation test
/// (the same number of permutations), seeded.
///
/// # Errors
///
/// [`Error::EmptyInput`] if a group is empty; [`Error::NonFinite`] if a value is NaN or
/// infinite (or the means overflow); [`Error::InvalidParameter`] if `resamples` is 0 or above
/// [`MAX_RESAMPLES`], or `resamples` times the values of both groups is above
/// [`MAX_RESAMPLED_VALUES`].
pub fn compare_means(a: &[f64], b: &[f64], resamples: usize, seed: u64) -> Result<Difference> {
    if a.is_empty() || b.is_empty() {
        return Err(Error::empty("comparison of an empty group"));
    }
    check_values(a, "first group")?;
    check_values(b, "second group")?;
    check_resamples("resamples", resamples)?;
    check_resampled_values(resamples, a.len().saturating_add(b.len()))?;
    let observed = mean(a) - mean(b);
    if !observed.is_finite() {
        return Err(Error::NonFinite {
            what: "difference of the means".into(),
        });
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut stats: Vec<f64> = (0..resamples)
        .map(|_| resample_mean(a, &mut rng) - resample_mean(b, &mut rng))
        .collect();
    let ci95 = percentile_interval(&mut stats);
    check_interval(ci95, "bootstrap interval of the difference")?;
    let mut pooled: Vec<f64> = a.iter().chain(b).copied().collect();
    // Compare with a little slack so that permutations equal to the observed split (up to
    // rounding of the sums) count as "at least as extreme".
    let threshold = observed.abs() * (1.0 - 1e-12);
    let mut extreme = 0usize;
    for _ in 0..resamples {
        rand::seq::SliceRandom::shuffle(pooled.as_mut_slice(), &mut rng);
        let d = mean(&pooled[..a.len()]) - mean(&pooled[a.len()..]);
        if d.abs() >= threshold {
            extreme += 1;
        }
    }
    Ok(Difference {
        mean: observed,
        ci95,
        p_value: (1 + extreme) as f64 / (1 + resamples) as f64,
        differs: !ci95.contains(0.0),
    })
}
