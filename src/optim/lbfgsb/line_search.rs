//! The line search of one iteration: along `d = z − x` from the current point, with the step
//! capped where the box stops it, Moré–Thuente ([`dcsrch`](super::dcsrch)) choosing the
//! trial steps, and the problem evaluated at each of them.

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

/// Outcome of one line search.
pub(super) enum Search {
    Accepted {
        stp: f64,
        f: f64,
        g: Array1<f64>,
        slope_new: f64,
        slope_old: f64,
        d_norm2: f64,
    },
    Failed,
    NonFinite,
}

/// Settings the line search needs, split off so the workspace can be borrowed alongside.
pub(super) struct LineSearchSetup<'a> {
    pub(super) bounds: &'a Bounds,
    pub(super) constants: LineSearchConstants,
    pub(super) first_iteration: bool,
    pub(super) max_evals: usize,
}

/// Line search from `x` along `d = z − x`, trial points written to `xt` (the unit step is
/// `z` itself, copied rather than recomputed so that it is the subspace step's point).
#[allow(clippy::too_many_arguments)]
pub(super) fn line_search<O>(
    problem: &mut Problem<O>,
    setup: &LineSearchSetup,
    d: &[f64],
    z: &[f64],
    x: &[f64],
    f0: f64,
    g0: &[f64],
    xt: &mut Array1<f64>,
) -> Result<Search, argmin::core::Error>
where
    O: CostFunction<Param = Array1<f64>, Output = f64>
        + Gradient<Param = Array1<f64>, Gradient = Array1<f64>>,
{
    let b = setup.bounds;
    let d_norm2 = dot(d, d);
    let dnorm = d_norm2.sqrt();

    // Largest step that keeps x + stp d in the box. The first iteration is capped at the unit
    // step because d then comes from an unscaled gradient.
    let step_cap = if !b.is_constrained() {
        BIG_STEP
    } else if setup.first_iteration {
        1.0
    } else {
        b.max_step(x, d)
    };
    let mut stp = if setup.first_iteration && !b.is_boxed() {
        (1.0 / dnorm).min(step_cap)
    } else {
        1.0
    };

    let slope_old = dot(g0, d);
    if slope_old >= 0.0 || slope_old.is_nan() {
        // Not a descent direction (rounding, or a stale model).
        return Ok(Search::Failed);
    }
    let (mut ls, mut verdict) = Dcsrch::start(
        f0,
        slope_old,
        stp,
        setup.constants.ftol,
        setup.constants.gtol,
        setup.constants.xtol,
        0.0,
        step_cap,
    );
    let mut evals = 0;
    let mut last: Option<(f64, Array1<f64>, f64)> = None;
    loop {
        match verdict {
            Verdict::Evaluate => {
                if evals >= setup.max_evals {
                    return Ok(Search::Failed);
                }
                {
                    let xt = xt.as_slice_mut().expect("trial buffer is contiguous");
                    if stp == 1.0 {
                        xt.copy_from_slice(z);
                    } else {
                        for ((t, &xi), &di) in xt.iter_mut().zip(x).zip(d) {
                            *t = xi + stp * di;
                        }
                    }
                    // Rounding in x + stp d must not put a trial outside the box.
                    if b.is_constrained() {
                        b.clamp(xt);
                    }
                }
                let (f, g) = evaluate(problem, xt)?;
                evals += 1;
                let slope_new = dot(g.as_slice().expect("contiguous"), d);
                // A NaN or infinite gradient component always makes gᵀd non-finite.
                if !f.is_finite() || !slope_new.is_finite() {
                    return Ok(Search::NonFinite);
                }
                verdict = ls.step(f, slope_new, &mut stp);
                last = Some((f, g, slope_new));
            }
            Verdict::Converged | Verdict::Warning => {
                let Some((f, g, slope_new)) = last else {
                    return Ok(Search::Failed);
                };
                // A warning can hand back a step that went uphill; never accept it.
                if f > f0 {
                    return Ok(Search::Failed);
                }
                return Ok(Search::Accepted {
                    stp,
                    f,
                    g,
                    slope_new,
                    slope_old,
                    d_norm2,
                });
            }
            Verdict::Error => return Ok(Search::Failed),
        }
    }
}
