//! Moré–Thuente line search (the MINPACK-2 `dcsrch`/`dcstep` pair that L-BFGS-B uses).
//!
//! The search is written as a reverse-communication state machine because the caller, not the
//! search, owns the objective: each call hands in the cost and directional derivative at the
//! current trial step and gets back either a new step to evaluate or a verdict.
//!
//! Reference: J. J. Moré and D. J. Thuente, *Line search algorithms with guaranteed sufficient
//! decrease*, ACM TOMS 20 (1994) 286–307.

/// What the line search wants next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Evaluate cost and directional derivative at the (updated) step.
    Evaluate,
    /// Strong Wolfe conditions hold at the step just evaluated.
    Converged,
    /// The search cannot make progress (rounding, interval collapse, or a step bound hit);
    /// the step just evaluated is the best it can offer.
    Warning,
    /// The inputs were inconsistent (for instance an ascent direction).
    Error,
}

// Extrapolation factors of the unbracketed phase: the next trial lies in
// [stp + XTRAPL (stp - stx), stp + XTRAPU (stp - stx)].
const XTRAPL: f64 = 1.1;
const XTRAPU: f64 = 4.0;

/// State of one line search.
#[derive(Debug, Clone, Default)]
pub(crate) struct Dcsrch {
    gtol: f64,
    xtol: f64,
    stpmin: f64,
    stpmax: f64,
    brackt: bool,
    // Stage 1 runs on the auxiliary function psi(stp) = f(stp) - f(0) - ftol stp f'(0) until a
    // step with psi <= 0 and f' >= 0 is seen; this keeps the iterates from converging to a
    // point that does not give sufficient decrease.
    stage1: bool,
    ginit: f64,
    gtest: f64,
    finit: f64,
    stx: f64,
    fx: f64,
    gx: f64,
    sty: f64,
    fy: f64,
    gy: f64,
    stmin: f64,
    stmax: f64,
    width: f64,
    width1: f64,
}

impl Dcsrch {
    /// Starts a search from cost `f` and slope `g` at step 0 with first trial `stp`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start(
        f: f64,
        g: f64,
        stp: f64,
        ftol: f64,
        gtol: f64,
        xtol: f64,
        stpmin: f64,
        stpmax: f64,
    ) -> (Self, Verdict) {
        let mut s = Dcsrch {
            gtol,
            xtol,
            stpmin,
            stpmax,
            ..Default::default()
        };
        if stp < stpmin || stp > stpmax || g >= 0.0 || stpmax < stpmin || !(f.is_finite()) {
            return (s, Verdict::Error);
        }
        s.brackt = false;
        s.stage1 = true;
        s.finit = f;
        s.ginit = g;
        s.gtest = ftol * g;
        s.width = stpmax - stpmin;
        s.width1 = s.width / 0.5;
        s.stx = 0.0;
        s.fx = f;
        s.gx = g;
        s.sty = 0.0;
        s.fy = f;
        s.gy = g;
        s.stmin = 0.0;
        s.stmax = stp + XTRAPU * stp;
        (s, Verdict::Evaluate)
    }

    /// Feeds the cost `f` and slope `g` at the current `stp`; on [`Verdict::Evaluate`] `stp`
    /// has been replaced by the next trial step.
    pub(crate) fn step(&mut self, f: f64, g: f64, stp: &mut f64) -> Verdict {
        let ftest = self.finit + *stp * self.gtest;
        if self.stage1 && f <= ftest && g >= 0.0 {
            self.stage1 = false;
        }

        // Exits that give up: the caller accepts the current trial as is.
        if self.brackt && (*stp <= self.stmin || *stp >= self.stmax) {
            return Verdict::Warning;
        }
        if self.brackt && self.stmax - self.stmin <= self.xtol * self.stmax {
            return Verdict::Warning;
        }
        if *stp == self.stpmax && f <= ftest && g <= self.gtest {
            return Verdict::Warning;
        }
        if *stp == self.stpmin && (f > ftest || g >= self.gtest) {
            return Verdict::Warning;
        }
        // Strong Wolfe: sufficient decrease and small |slope|.
        if f <= ftest && g.abs() <= self.gtol * (-self.ginit) {
            return Verdict::Converged;
        }

        if self.stage1 && f <= self.fx && f > ftest {
            // Work on psi: its minimiser is a point of sufficient decrease for f.
            let fm = f - *stp * self.gtest;
            let mut fxm = self.fx - self.stx * self.gtest;
            let mut fym = self.fy - self.sty * self.gtest;
            let gm = g - self.gtest;
            let mut gxm = self.gx - self.gtest;
            let mut gym = self.gy - self.gtest;
            dcstep(
                &mut self.stx,
                &mut fxm,
                &mut gxm,
                &mut self.sty,
                &mut fym,
                &mut gym,
                stp,
                fm,
                gm,
                &mut self.brackt,
                self.stmin,
                self.stmax,
            );
            self.fx = fxm + self.stx * self.gtest;
            self.fy = fym + self.sty * self.gtest;
            self.gx = gxm + self.gtest;
            self.gy = gym + self.gtest;
        } else {
            dcstep(
                &mut self.stx,
                &mut self.fx,
                &mut self.gx,
                &mut self.sty,
                &mut self.fy,
                &mut self.gy,
                stp,
                f,
                g,
                &mut self.brackt,
                self.stmin,
                self.stmax,
            );
        }

        // Force enough shrinkage of the bracket: bisect if two steps did not halve it.
        if self.brackt {
            if (self.sty - self.stx).abs() >= 0.66 * self.width1 {
                *stp = self.stx + 0.5 * (self.sty - self.stx);
            }
            self.width1 = self.width;
            self.width = (self.sty - self.stx).abs();
        }
        if self.brackt {
            self.stmin = self.stx.min(self.sty);
            self.stmax = self.stx.max(self.sty);
        } else {
            self.stmin = *stp + XTRAPL * (*stp - self.stx);
            self.stmax = *stp + XTRAPU * (*stp - self.stx);
        }
        *stp = stp.max(self.stpmin).min(self.stpmax);

        // If no further progress is possible, fall back to the best step so far.
        if self.brackt
            && (*stp <= self.stmin
                || *stp >= self.stmax
                || self.stmax - self.stmin <= self.xtol * self.stmax)
        {
            *stp = self.stx;
        }
        Verdict::Evaluate
    }
}

/// One safeguarded step of the Moré–Thuente interval update.
///
/// `(stx, fx, dx)` is the best step so far, `(sty, fy, dy)` the other end of the interval and
/// `(stp, fp, dp)` the trial just evaluated. The new trial is chosen by cubic or quadratic
/// interpolation, safeguarded to lie in `[stpmin, stpmax]` and to shrink the bracket.
#[allow(clippy::too_many_arguments)]
fn dcstep(
    stx: &mut f64,
    fx: &mut f64,
    dx: &mut f64,
    sty: &mut f64,
    fy: &mut f64,
    dy: &mut f64,
    stp: &mut f64,
    fp: f64,
    dp: f64,
    brackt: &mut bool,
    stpmin: f64,
    stpmax: f64,
) {
    let sgnd = dp * (*dx / dx.abs());
    let stpf;
    if fp > *fx {
        // Higher function value: the minimum is bracketed. Take the cubic step if it is
        // closer to stx, else the average of cubic and quadratic.
        let theta = 3.0 * (*fx - fp) / (*stp - *stx) + *dx + dp;
        let s = theta.abs().max(dx.abs()).max(dp.abs());
        let mut gamma = s * ((theta / s).powi(2) - (*dx / s) * (dp / s)).sqrt();
        if *stp < *stx {
            gamma = -gamma;
        }
        let p = (gamma - *dx) + theta;
        let q = ((gamma - *dx) + gamma) + dp;
        let r = p / q;
        let stpc = *stx + r * (*stp - *stx);
        let stpq = *stx + ((*dx / ((*fx - fp) / (*stp - *stx) + *dx)) / 2.0) * (*stp - *stx);
        stpf = if (stpc - *stx).abs() < (stpq - *stx).abs() {
            stpc
        } else {
            stpc + (stpq - stpc) / 2.0
        };
        *brackt = true;
    } else if sgnd < 0.0 {
        // Derivatives of opposite sign: bracketed; take the step farther from stp.
        let theta = 3.0 * (*fx - fp) / (*stp - *stx) + *dx + dp;
        let s = theta.abs().max(dx.abs()).max(dp.abs());
        let mut gamma = s * ((theta / s).powi(2) - (*dx / s) * (dp / s)).sqrt();
        if *stp > *stx {
            gamma = -gamma;
        }
        let p = (gamma - dp) + theta;
        let q = ((gamma - dp) + gamma) + *dx;
        let r = p / q;
        let stpc = *stp + r * (*stx - *stp);
        let stpq = *stp + (dp / (dp - *dx)) * (*stx - *stp);
        stpf = if (stpc - *stp).abs() > (stpq - *stp).abs() {
            stpc
        } else {
            stpq
        };
        *brackt = true;
    } else if dp.abs() < dx.abs() {
        // Same sign, decreasing magnitude: the cubic may not have a minimiser in the right
        // direction, so fall back to the step bound when it does not.
        let theta = 3.0 * (*fx - fp) / (*stp - *stx) + *dx + dp;
        let s = theta.abs().max(dx.abs()).max(dp.abs());
        let mut gamma = s * (0.0f64.max((theta / s).powi(2) - (*dx / s) * (dp / s))).sqrt();
        if *stp > *stx {
            gamma = -gamma;
        }
        let p = (gamma - dp) + theta;
        let q = (gamma + (*dx - dp)) + gamma;
        let r = p / q;
        let stpc = if r < 0.0 && gamma != 0.0 {
            *stp + r * (*stx - *stp)
        } else if *stp > *stx {
            stpmax
        } else {
            stpmin
        };
        let stpq = *stp + (dp / (dp - *dx)) * (*stx - *stp);
        if *brackt {
            let mut f = if (stpc - *stp).abs() < (stpq - *stp).abs() {
                stpc
            } else {
                stpq
            };
            f = if *stp > *stx {
                f.min(*stp + 0.66 * (*sty - *stp))
            } else {
                f.max(*stp + 0.66 * (*sty - *stp))
            };
            stpf = f;
        } else {
            let f = if (stpc - *stp).abs() > (stpq - *stp).abs() {
                stpc
            } else {
                stpq
            };
            stpf = f.min(stpmax).max(stpmin);
        }
    } else {
        // Same sign, no decrease in magnitude: extrapolate to the far end or use the cubic
        // through the bracket ends.
        stpf = if *brackt {
            let theta = 3.0 * (fp - *fy) / (*sty - *stp) + *dy + dp;
            let s = theta.abs().max(dy.abs()).max(dp.abs());
            let mut gamma = s * ((theta / s).powi(2) - (*dy / s) * (dp / s)).sqrt();
            if *stp > *sty {
                gamma = -gamma;
            }
            let p = (gamma - dp) + theta;
            let q = ((gamma - dp) + gamma) + *dy;
            let r = p / q;
            *stp + r * (*sty - *stp)
        } else if *stp > *stx {
            stpmax
        } else {
            stpmin
        };
    }

    // Update the interval that contains a minimiser.
    if fp > *fx {
        *sty = *stp;
        *fy = fp;
        *dy = dp;
    } else {
        if sgnd < 0.0 {
            *sty = *stx;
            *fy = *fx;
            *dy = *dx;
        }
        *stx = *stp;
        *fx = fp;
        *dx = dp;
    }
    *stp = stpf;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the search on a 1-D function and returns the accepted step.
    fn run(phi: impl Fn(f64) -> (f64, f64), stp0: f64, stpmax: f64) -> (f64, Verdict, usize) {
        let (f0, g0) = phi(0.0);
        let mut stp = stp0;
        let (mut s, mut v) = Dcsrch::start(f0, g0, stp, 1e-3, 0.9, 0.1, 0.0, stpmax);
        let mut evals = 0;
        while v == Verdict::Evaluate && evals < 50 {
            let (f, g) = phi(stp);
            evals += 1;
            v = s.step(f, g, &mut stp);
        }
        (stp, v, evals)
    }

    #[test]
    fn quadratic_takes_the_exact_step() {
        // phi(a) = (a - 2)^2: the unit step satisfies the Wolfe conditions.
        let (stp, v, evals) = run(|a| ((a - 2.0).powi(2), 2.0 * (a - 2.0)), 1.0, 1e10);
        assert_eq!(v, Verdict::Converged);
        assert_eq!(stp, 1.0);
        assert_eq!(evals, 1);
    }

    #[test]
    fn strong_wolfe_holds_after_extrapolation_and_bracketing() {
        for &(c, stp0) in &[(10.0, 1e-3), (0.01, 5.0), (3.0, 100.0)] {
            let phi = move |a: f64| {
                let t = a - c;
                (t * t * t * t / 4.0 - c.powi(4) / 4.0 + 0.0 * a, t * t * t)
            };
            let (f0, g0) = phi(0.0);
            let (stp, v, _) = run(phi, stp0, 1e10);
            assert_eq!(v, Verdict::Converged, "c = {c}");
            let (f, g) = phi(stp);
            assert!(f <= f0 + 1e-3 * stp * g0);
            assert!(g.abs() <= 0.9 * g0.abs());
        }
    }

    #[test]
    fn ascent_direction_is_an_error() {
        let (_, v) = Dcsrch::start(0.0, 1.0, 1.0, 1e-3, 0.9, 0.1, 0.0, 10.0);
        assert_eq!(v, Verdict::Error);
    }

    #[test]
    fn step_bound_is_respected() {
        // Unbounded-below linear function: the search must stop at stpmax.
        let (stp, v, _) = run(|a| (-a, -1.0), 1.0, 8.0);
        assert_eq!(v, Verdict::Warning);
        assert_eq!(stp, 8.0);
    }
}
