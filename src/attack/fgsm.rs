//! The fast gradient sign method (Goodfellow, Shlens and Szegedy, 2015): one step along the
//! sign of the input gradient, clipped to the box.

use ndarray::{Array1, ArrayView1, Axis};

use super::{check_input, outcome, Attack, Outcome, Target};
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
fn step_into(x: ArrayView1<'_, f32>, s: &Array1<f32>, step: f64, out: &mut Array1<f32>) {
    ndarray::Zip::from(out)
        .and(&x)
        .and(s)
        .for_each(|o, &xi, &si| *o = (xi as f64 + step * si as f64).clamp(0.0, 1.0) as f32);
}

impl Attack for Fgsm {
    fn attack<M: Differentiable + ?Sized>(
        &self,
        model: &M,
        x: ArrayView1<'_, f32>,
        label: usize,
        target: Target,
    ) -> Result<Outcome> {
        check_input(model, x, label)?;
        let resolved = target.resolve(label, model.num_classes())?;
        let (aim, sign) = match resolved {
            Some(t) => (t, -1.0f32),
            None => (label, 1.0f32),
        };
        let (_, grad) = model.loss_and_input_grad(x.insert_axis(Axis(0)), &[aim])?;
        check_model_output(grad.view(), 1, x.len(), "model input gradient")?;
        // sign(0) = 0: pixels the loss does not depend on stay put.
        let s: Array1<f32> = grad.row(0).mapv(|g| {
            if g > 0.0 {
                sign
            } else if g < 0.0 {
                -sign
            } else {
                0.0
            }
        });
        let mut adv = Array1::zeros(x.len());
        step_into(x, &s, self.epsilon, &mut adv);
        let mut evaluations = 1;
        if self.search_steps > 0 {
            let reached = |v: &Array1<f32>| -> Result<bool> {
                let l = checked_predict(model, v.view().insert_axis(Axis(0)))?[0];
                Ok(match resolved {
                    Some(t) => l == t,
                    None => l != label,
                })
            };
            evaluations += 1;
            if reached(&adv)? {
                let (mut lo, mut hi) = (0.0, self.epsilon);
                let mut trial = Array1::zeros(x.len());
                for _ in 0..self.search_steps {
                    let mid = 0.5 * (lo + hi);
                    step_into(x, &s, mid, &mut trial);
                    evaluations += 1;
                    if reached(&trial)? {
                        hi = mid;
                        std::mem::swap(&mut adv, &mut trial);
                    } else {
                        lo = mid;
                    }
                }
            }
        }
        outcome(model, x, adv, label, resolved, 0.0, evaluations)
    }
}
