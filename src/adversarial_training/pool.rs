//! The pools: fixed-size sets of adversarial examples (inputs or hidden representations) with
//! the true labels of the images they came from, made and refreshed by any [`Attack`].

use std::time::Instant;

use ndarray::{Array2, ArrayView2};
use rand::seq::index::sample;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::attack::{Attack, OutcomeSummary, Target};
use crate::error::{check_nonzero, Error, Result};
use crate::model::Differentiable;

/// Which label the attacks that fill a pool aim at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum PoolTarget {
    /// A label drawn per example from the pool's generator: one c-search per example.
    #[default]
    Random,
    /// The smallest perturbation over all other labels, nine times the cost on ten classes.
    Untargeted,
}

/// Slots replaced per refresh of a pool of `size` (at least one).
pub fn refresh_count(size: usize, fraction: f32) -> usize {
    ((fraction as f64 * size as f64).round() as usize).clamp(1, size.max(1))
}

/// What one generation or refresh of a pool did.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct PoolStats {
    /// Examples generated (and slots replaced).
    pub generated: usize,
    /// Of them, inputs the model already gave the attack's target (or, untargeted, got wrong)
    /// before any perturbation: kept unchanged in the pool, and left out of `success_rate`
    /// and `mean_distortion` (see [`attack::Outcome`](crate::attack::Outcome)).
    #[cfg_attr(feature = "serde", serde(default))]
    pub already_adversarial: usize,
    /// Fraction of the others (the searched ones) that the model misclassified as aimed when
    /// they were made (0 if none was searched).
    pub success_rate: f32,
    /// Mean distortion of the successful searched ones (0 if none), in the level's own units.
    pub mean_distortion: f64,
    /// Model evaluations the attacks used (all examples).
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
        let (examples, summary, evaluations) = make(model, attack, inputs, labels, target, rng)?;
        let n = labels.len();
        let pool = AdversarialPool {
            examples,
            labels: labels.to_vec(),
            born: vec![0; n],
            refreshes: 0,
        };
        Ok((pool, stats(&summary, evaluations, start)))
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
        let (examples, summary, evaluations) = make(model, attack, inputs, labels, target, rng)?;
        self.refreshes += 1;
        for (j, &slot) in slots.iter().enumerate() {
            self.examples.row_mut(slot).assign(&examples.row(j));
            self.labels[slot] = labels[j];
            self.born[slot] = self.refreshes;
        }
        Ok(stats(&summary, evaluations, start))
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

/// Attacks every row of `inputs` in parallel; returns the adversarial rows, their
/// figures and the evaluations of all of them.
fn make<M, A>(
    model: &M,
    attack: &A,
    inputs: ArrayView2<'_, f32>,
    labels: &[usize],
    target: PoolTarget,
    rng: &mut ChaCha8Rng,
) -> Result<(Array2<f32>, OutcomeSummary, usize)>
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
    for (mut row, o) in examples.rows_mut().into_iter().zip(&outs) {
        row.assign(&o.adversarial);
    }
    let evaluations = outs.iter().map(|o| o.evaluations).sum();
    Ok((examples, OutcomeSummary::of(&outs), evaluations))
}

fn stats(s: &OutcomeSummary, evaluations: usize, start: Instant) -> PoolStats {
    PoolStats {
        generated: s.images,
        already_adversarial: s.already_adversarial,
        success_rate: s.success_rate as f32,
        mean_distortion: s.mean_distortion,
        evaluations,
        seconds: start.elapsed().as_secs_f64(),
    }
}
