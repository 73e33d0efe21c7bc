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

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Axis};
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
///
/// `success` says what the model does with `adversarial`, nothing more: its label from a
/// fresh forward pass, made after the search by [`Attack::attack_batch`] (not the search's own
/// view), is the target, or, untargeted, differs from the true label. It is true also for an
/// input the model already gets wrong (untargeted: labels other than the true one; targeted:
/// labels as the target): such an input is not searched at all and comes back unchanged, with
/// `success` and `already_adversarial` both true, distortion 0, penalty weight 0 and one
/// evaluation.
///
/// So a success rate or a mean over successes taken over all outcomes mixes perturbations the
/// attack found with inputs that needed none, and a mean distortion is pulled towards 0 by the
/// model's own error rate. [`OutcomeSummary::of`] gives the figures over the searched inputs
/// only, with the others counted apart; by hand, filter on `!o.already_adversarial` first. A
/// per-input minimal distortion of 0 for those inputs is still right where every input counts,
/// as in a robust-accuracy curve (such an input is not robust at any ε).
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
    /// Whether `adversarial_label`, from the confirming forward pass, is the target (or,
    /// untargeted, differs from the true label); true for an input `already_adversarial` too.
    pub success: bool,
    /// Whether the model already gave the unperturbed input a successful label, so that
    /// nothing was searched (the outcome is the input itself): leave these out of means over
    /// the attack's results, as [`OutcomeSummary`] does.
    #[cfg_attr(feature = "serde", serde(default))]
    pub already_adversarial: bool,
    /// The weight `c` of the distortion penalty in the attack's objective
    /// `c·penalty(r) + loss(x + r, l)` at the returned solution: `c·‖r‖²` with the default
    /// [`Penalty`], the squared L2 norm (0 for attacks without a penalty).
    pub penalty_weight: f64,
    /// [`distortion`] of the perturbation.
    pub distortion: f64,
    /// Rows the model evaluated for this input: the check of the unperturbed input, the
    /// search's forward-and-backward passes and label checks, and the confirming pass.
    pub evaluations: usize,
}

/// The figures of a batch of [`Outcome`]s, with the inputs already adversarial counted apart:
/// every rate and mean is over the searched inputs only (see [`Outcome`] for why).
///
/// ```
/// use blindspot::attack::{Attack, BoxLbfgs, OutcomeSummary, Target};
/// use blindspot::nn::{Architecture, Network};
/// use blindspot::Classifier;
/// use ndarray::Array2;
///
/// let model = Network::new(Architecture::parse("FC10", 4).unwrap(), 0);
/// let xs = Array2::from_shape_fn((2, 4), |(i, j)| 0.1 + 0.2 * (i + j) as f32);
/// let y = model.predict(xs.view())?;
/// // Row 0 gets its model's own label, row 1 another one: the model already gets row 1 wrong.
/// let labels = [y[0], (y[1] + 1) % 10];
/// let outs = BoxLbfgs::new().attack_batch(&model, xs.view(), &labels, &[Target::Untargeted; 2])?;
/// let s = OutcomeSummary::of(&outs);
/// assert_eq!((s.images, s.already_adversarial, s.searched), (2, 1, 1));
/// assert!(outs[1].success && outs[1].already_adversarial && outs[1].distortion == 0.0);
/// if outs[0].success {
///     assert_eq!(s.mean_distortion, outs[0].distortion); // row 1's 0 is left out
/// }
/// # Ok::<(), blindspot::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct OutcomeSummary {
    /// Outcomes summarised.
    pub images: usize,
    /// Of them, inputs the model already gave a successful label (untargeted: misclassified),
    /// returned unsearched ([`Outcome::already_adversarial`]).
    pub already_adversarial: usize,
    /// The others, which the attack searched: `images − already_adversarial`.
    pub searched: usize,
    /// Searched inputs whose outcome is a success.
    pub successes: usize,
    /// `successes / searched` (0 when nothing was searched).
    pub success_rate: f64,
    /// Mean [`Outcome::distortion`] over the successful searched inputs (0 when none).
    pub mean_distortion: f64,
    /// Mean [`Outcome::evaluations`] over the searched inputs (0 when none).
    pub evaluations_per_image: f64,
}

impl OutcomeSummary {
    /// The figures of `outcomes`.
    pub fn of(outcomes: &[Outcome]) -> OutcomeSummary {
        let searched: Vec<&Outcome> = outcomes.iter().filter(|o| !o.already_adversarial).collect();
        let ok: Vec<f64> = searched
            .iter()
            .filter(|o| o.success)
            .map(|o| o.distortion)
            .collect();
        let per = |k: usize| k.max(1) as f64;
        OutcomeSummary {
            images: outcomes.len(),
            already_adversarial: outcomes.len() - searched.len(),
            searched: searched.len(),
            successes: ok.len(),
            success_rate: ok.len() as f64 / per(searched.len()),
            mean_distortion: ok.iter().sum::<f64>() / per(ok.len()),
            evaluations_per_image: searched.iter().map(|o| o.evaluations).sum::<usize>() as f64
                / per(searched.len()),
        }
    }
}

/// What an attack's search found for one input, before [`Attack::attack_batch`] confirms it.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// The point to report, inside the box.
    pub adversarial: Array1<f32>,
    /// The penalty weight at that point (0 for attacks without a penalty).
    pub penalty_weight: f64,
    /// Rows the search evaluated for this input (forward passes, with or without a gradient).
    pub evaluations: usize,
}

/// Largest number of inputs one [`Attack::search`] call advances together. Larger batches are
/// split into groups of at most this many (fewer if the model asks for fewer, through
/// [`Differentiable::lockstep_rows`]; and into at least one group per rayon thread), so that
/// the solvers' buffers of a group stay in cache and both cores are used.
///
/// Why 32: a [`BoxLbfgs`] solver on a 784-pixel image keeps about 130 KB of vectors, so 32 of
/// them fill about 4 MB, past a 1 MiB L2 but well inside L3. On FC100-100-10 (200 images,
/// one thread, `attack_compare`), lockstep groups of 4, 8, 16 and 32 ran at 0.94, 0.91,
/// 0.88 and 0.86 times the one-at-a-time time, and a single group of 200 at 1.15 times: the
/// solvers' state, not the model, is what a native attack spends most of its time on.
/// 32 rows are also two of the candle adapter's 16-row chunks.
pub const MAX_GROUP: usize = 32;

/// An adversarial attack on a differentiable classifier, in the shape of Foolbox 3's: the
/// checks, the resolution of targets, the detection of inputs the model already gets wrong
/// and the final confirming forward pass are written once, in [`Attack::attack_batch`]; an
/// attack writes only its [`Attack::search`], on a batch whose images it may advance together.
pub trait Attack: Sync {
    /// The search on a batch: row `i` of `xs` (checked, in the box, not already adversarial)
    /// has true label `labels[i]`, aim `aims[i]` (from [`Attack::aim`]; `None` untargeted) and
    /// was requested as `requested[i]`. Returns one candidate per row.
    ///
    /// Each row's candidate must not depend on the other rows of the batch (the crate's models
    /// compute each row as if alone), so that results do not depend on how a batch is split.
    ///
    /// # Errors
    ///
    /// Any error of the model.
    fn search<M: Differentiable + ?Sized>(
        &self,
        model: &M,
        xs: ArrayView2<'_, f32>,
        labels: &[usize],
        aims: &[Option<usize>],
        requested: &[Target],
    ) -> Result<Vec<Candidate>>;

    /// The label the attack aims at for a request, `None` for "any label but the true one"
    /// (by default [`Target::resolve`]).
    ///
    /// # Errors
    ///
    /// As [`Target::resolve`].
    fn aim(&self, requested: Target, label: usize, classes: usize) -> Result<Option<usize>> {
        requested.resolve(label, classes)
    }

    /// Attacks one input `x` of true label `label`: a batch of one.
    ///
    /// # Errors
    ///
    /// As [`Attack::attack_batch`].
    fn attack<M: Differentiable + ?Sized>(
        &self,
        model: &M,
        x: ArrayView1<'_, f32>,
        label: usize,
        target: Target,
    ) -> Result<Outcome> {
        let mut out = self.attack_batch(model, x.insert_axis(Axis(0)), &[label], &[target])?;
        out.pop().ok_or(Error::Internal {
            what: "an attack of one row returned no outcome",
        })
    }

    /// Attacks every row of `xs`; row `i` has true label `labels[i]` and target `targets[i]`.
    ///
    /// One forward pass labels the unperturbed rows; those already adversarial come back
    /// unchanged (see [`Outcome`]). The rest are split into groups (at least one per rayon
    /// thread, at most [`MAX_GROUP`] rows each, or the model's [`Differentiable::lockstep_rows`]
    /// if fewer) searched in parallel, and one more forward
    /// pass confirms every candidate's label. Each row's outcome is the same, bit for bit,
    /// however the batch is split and on any number of threads, when the model computes each
    /// row as if alone (the crate's models and adapters do).
    ///
    /// # Errors
    ///
    /// [`Error::EmptyInput`] for a batch of no rows (the crate's one rule: a batch has at
    /// least one row); [`Error::Shape`] if `labels` or `targets` is not one per row, or a row
    /// is not the model's input width; [`Error::NonFinite`] or [`Error::InvalidParameter`] for
    /// a pixel that is not finite or outside `[0, 1]`; [`Error::LabelOutOfRange`] and the
    /// errors of [`Attack::aim`] for labels and targets; any error of the model.
    fn attack_batch<M: Differentiable + ?Sized>(
        &self,
        model: &M,
        xs: ArrayView2<'_, f32>,
        labels: &[usize],
        targets: &[Target],
    ) -> Result<Vec<Outcome>> {
        let n = xs.nrows();
        if n == 0 {
            return Err(Error::empty("attack batch has no rows"));
        }
        if labels.len() != n {
            return Err(Error::shape("labels", n, labels.len()));
        }
        if targets.len() != n {
            return Err(Error::shape("targets", n, targets.len()));
        }
        let classes = model.num_classes();
        let mut aims = Vec::with_capacity(n);
        for i in 0..n {
            check_input(model, xs.row(i), labels[i])?;
            aims.push(self.aim(targets[i], labels[i], classes)?);
        }
        let clean = checked_predict(model, xs)?;
        let reached = |i: usize, l: usize| match aims[i] {
            Some(t) => l == t,
            None => l != labels[i],
        };
        let todo: Vec<usize> = (0..n).filter(|&i| !reached(i, clean[i])).collect();
        let candidates = if todo.is_empty() {
            Vec::new()
        } else {
            let cap = model
                .lockstep_rows()
                .unwrap_or(MAX_GROUP)
                .clamp(1, MAX_GROUP);
            let groups = groups(todo.len(), cap);
            let found: Vec<Vec<Candidate>> = groups
                .into_par_iter()
                .map(|range| {
                    let rows = &todo[range];
                    let sub = xs.select(Axis(0), rows);
                    let l: Vec<usize> = rows.iter().map(|&i| labels[i]).collect();
                    let a: Vec<Option<usize>> = rows.iter().map(|&i| aims[i]).collect();
                    let r: Vec<Target> = rows.iter().map(|&i| targets[i]).collect();
                    let out = self.search(model, sub.view(), &l, &a, &r)?;
                    if out.len() != rows.len() {
                        return Err(Error::shape("search candidates", rows.len(), out.len()));
                    }
                    Ok(out)
                })
                .collect::<Result<_>>()?;
            found.into_iter().flatten().collect()
        };
        let confirmed = if candidates.is_empty() {
            Vec::new()
        } else {
            let mut advs = Array2::zeros((candidates.len(), xs.ncols()));
            for (mut row, c) in advs.outer_iter_mut().zip(&candidates) {
                if c.adversarial.len() != xs.ncols() {
                    return Err(Error::shape("candidate", xs.ncols(), c.adversarial.len()));
                }
                row.assign(&c.adversarial);
            }
            checked_predict(model, advs.view())?
        };
        let mut searched = todo.iter().zip(candidates.into_iter().zip(confirmed));
        let mut next = searched.next();
        let mut outcomes = Vec::with_capacity(n);
        for i in 0..n {
            let x = xs.row(i);
            let out = match next.take() {
                Some((&j, (cand, got))) if j == i => {
                    next = searched.next();
                    let perturbation = &cand.adversarial - &x;
                    Outcome {
                        distortion: distortion(x, cand.adversarial.view())?,
                        adversarial: cand.adversarial,
                        perturbation,
                        true_label: labels[i],
                        target: aims[i],
                        adversarial_label: got,
                        success: reached(i, got),
                        already_adversarial: false,
                        penalty_weight: cand.penalty_weight,
                        evaluations: cand.evaluations + 2,
                    }
                }
                other => {
                    next = other;
                    Outcome {
                        adversarial: x.to_owned(),
                        perturbation: Array1::zeros(x.len()),
                        true_label: labels[i],
                        target: aims[i],
                        adversarial_label: clean[i],
                        success: true,
                        already_adversarial: true,
                        penalty_weight: 0.0,
                        distortion: 0.0,
                        evaluations: 1,
                    }
                }
            };
            outcomes.push(out);
        }
        Ok(outcomes)
    }
}

/// Splits `k` rows into contiguous ranges: at least one per rayon thread (if there are as
/// many rows), at most `cap` rows each (`cap ≥ 1`), sizes differing by at most one.
fn groups(k: usize, cap: usize) -> Vec<std::ops::Range<usize>> {
    let count = rayon::current_num_threads()
        .max(k.div_ceil(cap))
        .clamp(1, k.max(1));
    let (base, extra) = (k / count, k % count);
    let mut start = 0;
    (0..count)
        .map(|g| {
            let len = base + usize::from(g < extra);
            let r = start..start + len;
            start += len;
            r
        })
        .collect()
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
        return Err(Error::empty("distortion of an empty vector"));
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
