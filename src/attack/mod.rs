//! Adversarial examples (paper §4): attacks that find a small perturbation `r` with
//! `f(x + r) = l ≠ y` and `x + r` inside the pixel box `[0, 1]^m`.
//!
//! [`BoxLbfgs`] is the paper's method; [`Fgsm`] the one-step modern contrast; [`GaussianNoise`]
//! is the random baseline. All work on any
//! [`Differentiable`] model, so a model of your own can be attacked unchanged.

mod box_lbfgs;
mod c_search;
mod fgsm;
mod noise;
pub mod transfer;

pub use box_lbfgs::{BoxLbfgs, BoxLbfgsParams, Penalty};
pub use fgsm::Fgsm;
pub use noise::GaussianNoise;
pub use transfer::{magnify, transfer_error, MAGNIFY_TOLERANCE};

use ndarray::{Array1, ArrayView1, ArrayView2};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::model::{checked_predict, Differentiable};

/// Which label the attack should reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Target {
    /// A given label, different from the true one.
    Label(usize),
    /// Any label but the true one: the smallest perturbation over all of them.
    Untargeted,
    /// A label drawn uniformly from the other labels by a generator seeded with `seed`.
    Random {
        /// Seed of the draw.
        seed: u64,
    },
}

impl Target {
    /// The concrete target label for an input of label `label` among `classes`, or `None` for
    /// [`Target::Untargeted`].
    ///
    /// # Errors
    ///
    /// [`Error::LabelOutOfRange`] for a label or target `>= classes`;
    /// [`Error::InvalidParameter`] for a target equal to the true label, or a random or
    /// untargeted target with fewer than 2 classes (there is no other label to reach).
    pub fn resolve(self, label: usize, classes: usize) -> Result<Option<usize>> {
        if label >= classes {
            return Err(Error::label("true label", label, classes));
        }
        match self {
            Target::Label(l) if l >= classes => Err(Error::label("target label", l, classes)),
            Target::Label(l) if l == label => Err(Error::param(
                "target",
                format!("target label {l} equals the true label: nothing to attack"),
            )),
            Target::Label(l) => Ok(Some(l)),
            Target::Untargeted if classes < 2 => Err(Error::param(
                "target",
                "an untargeted attack needs at least 2 classes",
            )),
            Target::Untargeted => Ok(None),
            Target::Random { seed } => {
                if classes < 2 {
                    return Err(Error::param(
                        "target",
                        "a random target needs at least 2 classes",
                    ));
                }
                let k = ChaCha8Rng::seed_from_u64(seed).gen_range(0..classes - 1);
                Ok(Some(if k >= label { k + 1 } else { k }))
            }
        }
    }
}

/// What an attack on one input produced.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Outcome {
    /// The adversarial input `x + r`, inside the box.
    pub adversarial: Array1<f32>,
    /// The perturbation `r = adversarial − x`.
    pub perturbation: Array1<f32>,
    /// The input's true label.
    pub true_label: usize,
    /// The label that was aimed at (`None` for an untargeted attack).
    pub target: Option<usize>,
    /// The label the model gives the adversarial input, from a fresh forward pass.
    pub adversarial_label: usize,
    /// Whether `adversarial_label` is the target (or, untargeted, differs from the true
    /// label).
    pub success: bool,
    /// The weight `c` of the distortion penalty in the attack's objective
    /// `c·penalty(r) + loss(x + r, l)` at the returned solution: `c·‖r‖²` with the default
    /// [`Penalty`], the squared L2 norm (0 for attacks without a penalty).
    pub penalty_weight: f64,
    /// [`distortion`] of the perturbation.
    pub distortion: f64,
    /// Forward-and-backward passes of the model the attack used.
    pub evaluations: usize,
}

/// An adversarial attack on a differentiable classifier.
pub trait Attack: Sync {
    /// Attacks one input `x` of true label `label`.
    fn attack<M: Differentiable + ?Sized>(
        &self,
        model: &M,
        x: ArrayView1<'_, f32>,
        label: usize,
        target: Target,
    ) -> Result<Outcome>;

    /// Attacks every row of `xs` in parallel (rayon); row `i` has true label `labels[i]` and
    /// target `targets[i]`. Each input is attacked independently and deterministically, so the
    /// results do not depend on the number of threads.
    ///
    /// # Errors
    ///
    /// [`Error::EmptyDataset`] for a batch of no rows (the crate's one rule: a batch has at
    /// least one row); [`Error::Shape`] if `labels` or `targets` is not one per row; the first
    /// error of any row's [`Attack::attack`].
    fn attack_batch<M: Differentiable + ?Sized>(
        &self,
        model: &M,
        xs: ArrayView2<'_, f32>,
        labels: &[usize],
        targets: &[Target],
    ) -> Result<Vec<Outcome>> {
        if xs.nrows() == 0 {
            return Err(Error::EmptyDataset("attack batch has no rows".into()));
        }
        if labels.len() != xs.nrows() {
            return Err(Error::shape("labels", xs.nrows(), labels.len()));
        }
        if targets.len() != xs.nrows() {
            return Err(Error::shape("targets", xs.nrows(), targets.len()));
        }
        (0..xs.nrows())
            .into_par_iter()
            .map(|i| self.attack(model, xs.row(i), labels[i], targets[i]))
            .collect()
    }
}

/// The paper's distortion measure `sqrt(Σ (x'−x)² / n)`: the root-mean-square pixel change.
///
/// ```
/// use ndarray::array;
/// let d = blindspot::attack::distortion(array![0.0f32, 0.5].view(), array![0.0f32, 0.3].view()).unwrap();
/// assert!((d - (0.04f64 / 2.0).sqrt()).abs() < 1e-6);
/// ```
pub fn distortion(x: ArrayView1<'_, f32>, x_adv: ArrayView1<'_, f32>) -> Result<f64> {
    if x.len() != x_adv.len() {
        return Err(Error::shape("adversarial input", x.len(), x_adv.len()));
    }
    if x.is_empty() {
        return Err(Error::EmptyDataset("distortion of an empty vector".into()));
    }
    let sum: f64 = x
        .iter()
        .zip(x_adv.iter())
        .map(|(&a, &b)| {
            let d = b as f64 - a as f64;
            d * d
        })
        .sum();
    if !sum.is_finite() {
        return Err(Error::NonFinite {
            what: "distortion inputs".into(),
        });
    }
    Ok((sum / x.len() as f64).sqrt())
}

/// Checks one input against a model: its length, finiteness, the box, and the label.
pub(crate) fn check_input<M: Differentiable + ?Sized>(
    model: &M,
    x: ArrayView1<'_, f32>,
    label: usize,
) -> Result<()> {
    if x.len() != model.input_dim() {
        return Err(Error::shape("input", model.input_dim(), x.len()));
    }
    if let Some(i) = x.iter().position(|v| !v.is_finite()) {
        return Err(Error::NonFinite {
            what: format!("input pixel {i}"),
        });
    }
    if let Some(i) = x.iter().position(|&v| !(0.0..=1.0).contains(&v)) {
        return Err(Error::param(
            "input",
            format!("pixel {i} is {}, outside the box [0, 1]", x[i]),
        ));
    }
    if label >= model.num_classes() {
        return Err(Error::label("true label", label, model.num_classes()));
    }
    Ok(())
}

/// Builds the outcome for a candidate `adv`, re-checking its label with a fresh forward pass
/// (whose logits are checked for shape and finiteness: a faulty model is an error).
pub(crate) fn outcome<M: Differentiable + ?Sized>(
    model: &M,
    x: ArrayView1<'_, f32>,
    adv: Array1<f32>,
    true_label: usize,
    target: Option<usize>,
    c: f64,
    evaluations: usize,
) -> Result<Outcome> {
    let label = checked_predict(model, adv.view().insert_axis(ndarray::Axis(0)))?[0];
    let success = match target {
        Some(t) => label == t,
        None => label != true_label,
    };
    let perturbation = &adv - &x;
    Ok(Outcome {
        distortion: distortion(x, adv.view())?,
        adversarial: adv,
        perturbation,
        true_label,
        target,
        adversarial_label: label,
        success,
        penalty_weight: c,
        evaluations,
    })
}
