//! The random baseline: Gaussian noise clipped to the pixel box.

use ndarray::{Array1, ArrayView1};
use ndarray_rand::rand_distr::Normal;
use ndarray_rand::RandomExt;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::{check_input, distortion, outcome, Attack, Outcome, Target};
use crate::error::{check_non_negative, Error, Result};
use crate::model::Differentiable;

/// Adds `N(0, stddev²)` noise to every pixel and clips to `[0, 1]`; the paper's baseline for
/// how much a *random* perturbation of a given size changes a decision.
///
/// As an [`Attack`] it uses the seed of a [`Target::Random`] (0 otherwise) and reports success
/// when the label changes (or reaches the given target). [`GaussianNoise::matching`] instead
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
    /// [`Error::NonFinite`] for a NaN or infinite pixel; [`Error::EmptyDataset`] for an
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

impl Attack for GaussianNoise {
    fn attack<M: Differentiable + ?Sized>(
        &self,
        model: &M,
        x: ArrayView1<'_, f32>,
        label: usize,
        target: Target,
    ) -> Result<Outcome> {
        check_input(model, x, label)?;
        // Noise cannot aim: a random target only supplies the seed, and success means the
        // label changed; a given label is still honoured as the success criterion.
        let resolved = target.resolve(label, model.num_classes())?;
        let resolved = if matches!(target, Target::Label(_)) {
            resolved
        } else {
            None
        };
        let seed = match target {
            Target::Random { seed } => seed,
            _ => 0,
        };
        let adv = self.perturb(x, seed)?;
        outcome(model, x, adv, label, resolved, 0.0, 1)
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
