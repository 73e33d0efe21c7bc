//! The fast gradient sign method (Goodfellow, Shlens and Szegedy, 2015): one step along the
//! sign of the input gradient, clipped to the box.

use ndarray::{s, Array2, ArrayView1, ArrayView2, ArrayViewMut1};

use super::{Attack, Candidate, Target};
use crate::error::{check_positive, Error, Result};
use crate::model::{check_model_output, checked_predict, Differentiable};

/// One signed-gradient step: `x' = clip(x + ε·sign ∇ₓ J(x, y))` for an untargeted attack
/// (away from the true label `y`), `x' = clip(x − ε·sign ∇ₓ J(x, t))` towards a target `t`,
/// with `J` the model's cross-entropy and the clip to the box `[0, 1]`.
///
/// The step is the modern cheap contrast to the paper's box-constrained L-BFGS: one gradient
/// instead of hundreds, but a perturbation of the same size in every pixel, so its distortion
/// for a given success rate is larger. With a fixed ε ([`Fgsm::new`]) it is what one-step
/// adversarial training uses; [`Fgsm::searched`] instead finds, along the same direction, the
/// smallest ε that succeeds, so the attack reports a minimal distortion of its own (Table 1).
///
/// ```
/// use blindspot::attack::{Attack, Fgsm, Target};
/// use blindspot::nn::{Architecture, Network};
/// use ndarray::Array1;
///
/// let model = Network::new(Architecture::parse("FC10", 784)?, 1);
/// let x = Array1::<f32>::from_elem(784, 0.5);
/// let out = Fgsm::new(0.1)?.attack(&model, x.view(), 3, Target::Untargeted)?;
/// assert!(out.adversarial.iter().all(|&v| (0.0..=1.0).contains(&v)));
/// # Ok::<(), blindspot::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fgsm {
    epsilon: f64,
    search_steps: usize,
}

impl Fgsm {
    /// A step of size `epsilon` (finite, > 0).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] for an `epsilon` that is not finite and positive.
    pub fn new(epsilon: f64) -> Result<Self> {
        check_epsilon(epsilon)?;
        Ok(Fgsm {
            epsilon,
            search_steps: 0,
        })
    }

    /// The smallest step up to `max_epsilon` that succeeds, found by `steps` bisections on
    /// `[0, max_epsilon]` along the one gradient sign (success is checked at `max_epsilon`
    /// first; if it fails there the attack fails). 20 steps resolve ε to `max_epsilon / 10⁶`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] for a `max_epsilon` that is not finite and positive, or
    /// more than 64 steps.
    pub fn searched(max_epsilon: f64, steps: usize) -> Result<Self> {
        check_epsilon(max_epsilon)?;
        if steps > 64 {
            return Err(Error::param(
                "search_steps",
                format!("at most 64 bisection steps, got {steps}"),
            ));
        }
        Ok(Fgsm {
            epsilon: max_epsilon,
            search_steps: steps,
        })
    }

    /// The step size (the largest tried, when searched).
    pub fn epsilon(&self) -> f64 {
        self.epsilon
    }
}

fn check_epsilon(epsilon: f64) -> Result<()> {
    check_positive("epsilon", epsilon)
}

/// `clip(x + step·s)` into `out`.
fn step_into(
    x: ArrayView1<'_, f32>,
    s: ArrayView1<'_, f32>,
    step: f64,
    out: ArrayViewMut1<'_, f32>,
) {
    ndarray::Zip::from(out)
        .and(&x)
        .and(&s)
        .for_each(|o, &xi, &si| *o = (xi as f64 + step * si as f64).clamp(0.0, 1.0) as f32);
}

impl Attack for Fgsm {
    /// One input-gradient call for the whole batch (towards each row's target, or away from
    /// its true label), then, when searched, one label call per bisection step for the rows
    /// that succeed at the largest step.
    fn search<M: Differentiable + ?Sized>(
        &self,
        model: &M,
        xs: ArrayView2<'_, f32>,
        labels: &[usize],
        aims: &[Option<usize>],
        _requested: &[Target],
    ) -> Result<Vec<Candidate>> {
        let (n, m) = xs.dim();
        let towards: Vec<usize> = (0..n).map(|i| aims[i].unwrap_or(labels[i])).collect();
        let (_, grad) = model.loss_and_input_grad(xs, &towards)?;
        check_model_output(grad.view(), n, m, "model input gradient")?;
        // Descend the target's loss, ascend the true label's; sign(0) = 0: pixels the loss
        // does not depend on stay put.
        let mut dir = grad;
        for (i, mut row) in dir.outer_iter_mut().enumerate() {
            let sign = if aims[i].is_some() { -1.0f32 } else { 1.0 };
            row.mapv_inplace(|g| {
                if g > 0.0 {
                    sign
                } else if g < 0.0 {
                    -sign
                } else {
                    0.0
                }
            });
        }
        let mut adv = Array2::zeros((n, m));
        for i in 0..n {
            step_into(xs.row(i), dir.row(i), self.epsilon, adv.row_mut(i));
        }
        let mut evaluations = vec![1; n];
        if self.search_steps > 0 {
            let reached = |i: usize, l: usize| match aims[i] {
                Some(t) => l == t,
                None => l != labels[i],
            };
            let at_max = checked_predict(model, adv.view())?;
            let open: Vec<usize> = (0..n).filter(|&i| reached(i, at_max[i])).collect();
            evaluations.iter_mut().for_each(|e| *e += 1);
            let mut lo = vec![0.0; n];
            let mut hi = vec![self.epsilon; n];
            let mut trial = Array2::zeros((open.len(), m));
            for _ in 0..self.search_steps {
                if open.is_empty() {
                    break;
                }
                for (k, &i) in open.iter().enumerate() {
                    step_into(
                        xs.row(i),
                        dir.row(i),
                        0.5 * (lo[i] + hi[i]),
                        trial.row_mut(k),
                    );
                }
                let got = checked_predict(model, trial.slice(s![..open.len(), ..]))?;
                for (k, &i) in open.iter().enumerate() {
                    let mid = 0.5 * (lo[i] + hi[i]);
                    evaluations[i] += 1;
                    if reached(i, got[k]) {
                        hi[i] = mid;
                        adv.row_mut(i).assign(&trial.row(k));
                    } else {
                        lo[i] = mid;
                    }
                }
            }
        }
        Ok(adv
            .outer_iter()
            .zip(evaluations)
            .map(|(a, evaluations)| Candidate {
                adversarial: a.to_owned(),
                penalty_weight: 0.0,
                evaluations,
            })
            .collect())
    }
}
