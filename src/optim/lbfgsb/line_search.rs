//! The line search of one iteration: along `d = z − x` from the current point, with the step
//! capped where the box stops it, Moré–Thuente ([`dcsrch`](super::dcsrch)) choosing the
//! trial steps, and the caller evaluating each of them.

use argmin::core::{CostFunction, Gradient, Problem};
use ndarray::Array1;

use super::bounds::{Bounds, BIG_STEP};
use super::dcsrch::{Dcsrch, Verdict};
use super::dense::dot;
use super::error::LbfgsbError;

/// The constants of the Moré–Thuente search (see [`LBfgsB::with_line_search`]).
///
/// [`LBfgsB::with_line_search`]: super::LBfgsB::with_line_search
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct LineSearchConstants {
    /// Sufficient decrease: `f(t) ≤ f(0) + ftol·t·f'(0)`.
    pub(super) ftol: f64,
    /// Curvature: `|f'(t)| ≤ gtol·|f'(0)|`.
    pub(super) gtol: f64,
    /// Relative width below which a bracketing interval is too small to go on.
    pub(super) xtol: f64,
}

impl Default for LineSearchConstants {
    /// The reference implementation's values: a loose sufficient-decrease test and a
    /// curvature test that accepts most steps, so the unit quasi-Newton step is usually
    /// taken.
    fn default() -> Self {
        LineSearchConstants {
            ftol: 1e-3,
            gtol: 0.9,
            xtol: 0.1,
        }
    }
}

impl LineSearchConstants {
    /// Checks `0 < ftol < gtol < 1` (the conditions under which a step satisfying both
    /// strong Wolfe tests exists and Moré–Thuente finds it) and `0 ≤ xtol < 1`.
    pub(super) fn new(ftol: f64, gtol: f64, xtol: f64) -> Result<Self, LbfgsbError> {
        if !(ftol > 0.0 && ftol < 1.0) {
            return Err(LbfgsbError::param(
                "line_search_ftol",
                format!("must be in (0, 1), got {ftol}"),
            ));
        }
        if !(gtol > ftol && gtol < 1.0) {
            return Err(LbfgsbError::param(
                "line_search_gtol",
                format!("must be in (ftol, 1) = ({ftol}, 1), got {gtol}"),
            ));
        }
        if !(0.0..1.0).contains(&xtol) {
            return Err(LbfgsbError::param(
                "line_search_xtol",
                format!("must be in [0, 1), got {xtol}"),
            ));
        }
        Ok(LineSearchConstants { ftol, gtol, xtol })
    }
}

/// Evaluates cost then gradient at the same point.
pub(super) fn evaluate<O>(
    problem: &mut Problem<O>,
    x: &Array1<f64>,
) -> Result<(f64, Array1<f64>), argmin::core::Error>
where
    O: CostFunction<Param = Array1<f64>, Output = f64>
        + Gradient<Param = Array1<f64>, Gradient = Array1<f64>>,
{
    let f = problem.cost(x)?;
    let g = problem.gradient(x)?;
    if g.len() != x.len() {
        return Err(LbfgsbError::Shape {
            what: "gradient",
            expected: x.len(),
            got: g.len(),
        }
        .into());
    }
    // The kernels work on contiguous slices.
    let g = if g.as_slice().is_some() {
        g
    } else {
        g.as_standard_layout().into_owned()
    };
    Ok((f, g))
}

/// What the line search wants after it was started or told the values at its trial.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Next {
    /// Evaluate cost and gradient at the trial point, which has been written.
    Evaluate,
    /// The step just evaluated is taken; the new gradient is the one of that trial.
    Accepted {
        stp: f64,
        f: f64,
        slope_new: f64,
        slope_old: f64,
        d_norm2: f64,
    },
    /// No acceptable step: the evaluation budget ran out, the direction was not downhill, or
    /// the search gave up uphill.
    Failed,
}

/// Settings the line search needs, split off so the workspace can be borrowed alongside.
pub(super) struct LineSearchSetup<'a> {
    pub(super) bounds: &'a Bounds,
    pub(super) constants: LineSearchConstants,
    pub(super) first_iteration: bool,
    pub(super) max_evals: usize,
}

/// One line search from `x` along `d = z − x`, in reverse communication like the
/// Moré–Thuente machine it drives: the caller evaluates each trial point and reports back
/// through [`told`](Self::told), so that the solver can hand the point to whoever owns the
/// objective.
#[derive(Debug, Clone, Default)]
pub(super) struct LineSearch {
    dcsrch: Dcsrch,
    stp: f64,
    f0: f64,
    slope_old: f64,
    d_norm2: f64,
    evals: usize,
    max_evals: usize,
    /// Cost and slope at the last trial, the candidate a verdict accepts.
    last: Option<(f64, f64)>,
}

impl LineSearch {
    /// Starts the search from `x` (cost `f0`, gradient `g0`) along `d` towards `z`, writing the
    /// first trial point to `xt`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn start(
        setup: &LineSearchSetup,
        d: &[f64],
        z: &[f64],
        x: &[f64],
        f0: f64,
        g0: &[f64],
        xt: &mut [f64],
    ) -> (Self, Next) {
        let b = setup.bounds;
        let d_norm2 = dot(d, d);
        let dnorm = d_norm2.sqrt();

        // Largest step that keeps x + stp d in the box. The first iteration is capped at the
        // unit step because d then comes from an unscaled gradient.
        let step_cap = if !b.is_constrained() {
            BIG_STEP
        } else if setup.first_iteration {
            1.0
        } else {
            b.max_step(x, d)
        };
        let stp = if setup.first_iteration && !b.is_boxed() {
            (1.0 / dnorm).min(step_cap)
        } else {
            1.0
        };
        let mut search = LineSearch {
            stp,
            f0,
            d_norm2,
            max_evals: setup.max_evals,
            ..Default::default()
        };
        search.slope_old = dot(g0, d);
        if search.slope_old >= 0.0 || search.slope_old.is_nan() {
            // Not a descent direction (rounding, or a stale model).
            return (search, Next::Failed);
        }
        let (dcsrch, verdict) = Dcsrch::start(
            f0,
            search.slope_old,
            stp,
            setup.constants.ftol,
            setup.constants.gtol,
            setup.constants.xtol,
            0.0,
            step_cap,
        );
        search.dcsrch = dcsrch;
        let next = search.resolve(verdict, b, d, z, x, xt);
        (search, next)
    }

    /// Takes the cost `f` and slope `slope_new = gᵀd` at the trial point last written, both
    /// finite; on [`Next::Evaluate`] the next trial is in `xt`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn told(
        &mut self,
        f: f64,
        slope_new: f64,
        b: &Bounds,
        d: &[f64],
        z: &[f64],
        x: &[f64],
        xt: &mut [f64],
    ) -> Next {
        self.evals += 1;
        let verdict = self.dcsrch.step(f, slope_new, &mut self.stp);
        self.last = Some((f, slope_new));
        self.resolve(verdict, b, d, z, x, xt)
    }

    fn resolve(
        &mut self,
        verdict: Verdict,
        b: &Bounds,
        d: &[f64],
        z: &[f64],
        x: &[f64],
        xt: &mut [f64],
    ) -> Next {
        match verdict {
            Verdict::Evaluate => {
                if self.evals >= self.max_evals {
                    return Next::Failed;
                }
                if self.stp == 1.0 {
                    // The unit step is z itself, copied rather than recomputed so that it is
                    // the subspace step's point.
                    xt.copy_from_slice(z);
                } else {
                    for ((t, &xi), &di) in xt.iter_mut().zip(x).zip(d) {
                        *t = xi + self.stp * di;
                    }
                }
                // Rounding in x + stp d must not put a trial outside the box.
                if b.is_constrained() {
                    b.clamp(xt);
                }
                Next::Evaluate
            }
            Verdict::Converged | Verdict::Warning => {
                let Some((f, slope_new)) = self.last else {
                    return Next::Failed;
                };
                // A warning can hand back a step that went uphill; never accept it.
                if f > self.f0 {
                    return Next::Failed;
                }
                Next::Accepted {
                    stp: self.stp,
                    f,
                    slope_new,
                    slope_old: self.slope_old,
                    d_norm2: self.d_norm2,
                }
            }
            Verdict::Error => Next::Failed,
        }
    }
}
