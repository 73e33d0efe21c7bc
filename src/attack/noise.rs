//! The random baseline: Gaussian noise clipped to the pixel box.

use ndarray::{Array1, ArrayView1, ArrayView2};
use ndarray_rand::rand_distr::Normal;
use ndarray_rand::RandomExt;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::{distortion, Attack, Candidate, Target};
use crate::error::{check_non_negative, Error, Result};
use crate::model::Differentiable;

/// Adds `N(0, stddev²)` noise to every pixel and clips to `[0, 1]`; the paper's baseline for
/// how much a *random* perturbation of a given size changes a decision.
///
/// As an [`Attack`] it draws a different noise for every input ([`GaussianNoise::seed_for`]:
/// the seed of a [`Target::Random`], 0 otherwise, mixed with the input's pixels) and reports
/// success when the label changes (or reaches the given target). [`GaussianNoise::matching`] instead
/// scales the noise so that its measured distortion, after clipping, equals a given value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GaussianNoise {
    stddev: f64,
}

impl GaussianNoise {
    /// Noise of standard deviation `stddev` (finite, >= 0).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] if `stddev` is negative or not finite.
    pub fn new(stddev: f64) -> Result<Self> {
        check_non_negative("stddev", stddev)?;
        Ok(GaussianNoise { stddev })
    }

    /// The standard deviation.
    pub fn stddev(&self) -> f64 {
        self.stddev
    }

    /// `x` plus clipped noise drawn from a generator seeded with `seed`.
    ///
    /// # Errors
    ///
    /// [`Error::NonFinite`] if a pixel of `x` is NaN or infinite (clipping would pass a NaN
    /// through).
    pub fn perturb(&self, x: ArrayView1<'_, f32>, seed: u64) -> Result<Array1<f32>> {
        check_pixels(x)?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let noise = Array1::random_using(
            x.len(),
            Normal::new(0.0, self.stddev).expect("stddev checked"),
            &mut rng,
        );
        Ok(ndarray::Zip::from(&x)
            .and(&noise)
            .map_collect(|&xi, &n: &f64| (xi as f64 + n).clamp(0.0, 1.0) as f32))
    }

    /// Clipped noise whose measured [`distortion`] is `target` (to 1e-4 relative): clipping
    /// removes part of the noise, so the scale is found by bisection on one fixed noise draw.
    ///
    /// # Errors
    ///
    /// [`Error::NonFinite`] for a NaN or infinite pixel; [`Error::EmptyInput`] for an
    /// empty `x` (with a target above 0); [`Error::InvalidParameter`] if `target` is negative,
    /// not finite, or more than clipped noise can reach.
    pub fn matching(x: ArrayView1<'_, f32>, target: f64, seed: u64) -> Result<Array1<f32>> {
        check_pixels(x)?;
        check_non_negative("distortion", target)?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let noise: Array1<f64> = Array1::random_using(
            x.len(),
            Normal::new(0.0, 1.0).expect("unit normal"),
            &mut rng,
        );
        let apply = |s: f64| -> Array1<f32> {
            ndarray::Zip::from(&x)
                .and(&noise)
                .map_collect(|&xi, &n| (xi as f64 + s * n).clamp(0.0, 1.0) as f32)
        };
        if target == 0.0 {
            return Ok(x.to_owned());
        }
        // Distortion grows monotonically with the scale and saturates when every pixel is clipped.
        let (mut lo, mut hi) = (0.0, target);
        while distortion(x, apply(hi).view())? < target {
            hi *= 2.0;
            if hi > 1e6 {
                return Err(Error::param(
                    "distortion",
                    format!("{target} is more than clipped noise can reach"),
                ));
            }
        }
        for _ in 0..60 {
            let mid = 0.5 * (lo + hi);
            if distortion(x, apply(mid).view())? < target {
                lo = mid;
            } else {
                hi = mid;
            }
            if hi - lo <= 1e-6 * hi {
                break;
            }
        }
        Ok(apply(hi))
    }
}

impl GaussianNoise {
    /// The seed of the noise for input `x` under request `target`: the seed of a
    /// [`Target::Random`] (0 otherwise) mixed with a hash of the input's pixels, so that every
    /// image of a batch gets its own noise, and the same image the same noise wherever it
    /// stands in a batch.
    pub fn seed_for(x: ArrayView1<'_, f32>, target: Target) -> u64 {
        let base = match target {
            Target::Random { seed } => seed,
            _ => 0,
        };
        // FNV-1a over the pixels' bits, then a SplitMix64 finaliser to spread it.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for v in x.iter() {
            h = (h ^ u64::from(v.to_bits())).wrapping_mul(0x0000_0100_0000_01b3);
        }
        let mut z = base ^ h;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

impl Attack for GaussianNoise {
    /// Noise cannot aim: a random target only supplies the seed and success means the label
    /// changed; a given label is still honoured as the success criterion.
    fn aim(&self, requested: Target, label: usize, classes: usize) -> Result<Option<usize>> {
        let resolved = requested.resolve(label, classes)?;
        Ok(if matches!(requested, Target::Label(_)) {
            resolved
        } else {
            None
        })
    }

    /// One draw per input, seeded by [`GaussianNoise::seed_for`]; no model call (the
    /// confirming pass labels all draws at once).
    fn search<M: Differentiable + ?Sized>(
        &self,
        _model: &M,
        xs: ArrayView2<'_, f32>,
        _labels: &[usize],
        _aims: &[Option<usize>],
        requested: &[Target],
    ) -> Result<Vec<Candidate>> {
        xs.outer_iter()
            .zip(requested)
            .map(|(x, &t)| {
                Ok(Candidate {
                    adversarial: self.perturb(x, Self::seed_for(x, t))?,
                    penalty_weight: 0.0,
                    evaluations: 0,
                })
            })
            .collect()
    }
}

fn check_pixels(x: ArrayView1<'_, f32>) -> Result<()> {
    if let Some(i) = x.iter().position(|v| !v.is_finite()) {
        return Err(Error::NonFinite {
            what: format!("input pixel {i}"),
        });
    }
    Ok(())
}
