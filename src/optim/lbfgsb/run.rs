//! The solver in reverse communication: one run as a state machine that hands out the points it
//! needs evaluated ([`LBfgsB::ask`]) and takes their cost and gradient back
//! ([`LBfgsB::tell`]), the shape of the reference code's `task` loop and of
//! [`dcsrch`](super::dcsrch). The caller owns the objective, so it can evaluate the points of
//! many runs together; the `argmin` solver in the parent module is a driver over this.

use ndarray::{Array1, ArrayView1};

use super::dense::dot;
use super::error::LbfgsbError;
use super::line_search::{LineSearch, LineSearchSetup, Next};
use super::workspace::{self, Workspace};
use super::LBfgsB;

/// What [`LBfgsB::ask`] wants from the caller.
#[derive(Debug, Clone, PartialEq)]
pub enum Step<'a> {
    /// Evaluate the cost and gradient at this point (always inside the box) and pass them to
    /// [`LBfgsB::tell`].
    Evaluate(ArrayView1<'a, f64>),
    /// The run is over, for this reason; [`LBfgsB::point`] is its answer.
    Done(Stop),
}

/// Why a run driven by [`LBfgsB::ask`]/[`LBfgsB::tell`] ended.
///
/// The `argmin` solver reports the same ends through its termination status (see
/// [`LBfgsB`]'s documentation, section *Termination*).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Stop {
    /// No run was started, or the last [`LBfgsB::start`] failed.
    NotStarted,
    /// The infinity norm of the projected gradient is at most `pgtol`.
    Converged,
    /// The relative reduction of the last iteration was at most `ftol` (the normal stop on
    /// stalled progress).
    RelativeReduction,
    /// No acceptable step even right after the memory was reset.
    LineSearchFailed,
    /// A cost or gradient told during the run was NaN or infinite; the point is the last
    /// finite one.
    NonFinite,
    /// The cost or gradient at the starting point was NaN or infinite.
    NonFiniteStart,
}

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Phase {
    /// Waiting for the values at the starting point `x`.
    Start,
    /// An iteration is due: the next `ask` computes its direction and first trial.
    Propose,
    /// A line search waits for the values at the trial point `xt`.
    Search,
    Done(Stop),
}

/// Everything one run changes, apart from the curvature memory in the [`Workspace`]. The
/// buffers are kept between runs of the same dimension.
#[derive(Debug, Clone)]
pub(super) struct Run {
    pub(super) phase: Phase,
    /// `ask` handed out the pending point and no `tell` has answered it yet.
    asked: bool,
    /// Current point, its gradient and cost.
    pub(super) x: Array1<f64>,
    pub(super) g: Array1<f64>,
    pub(super) f: f64,
    /// Trial point of the line search and the gradient told for it.
    xt: Array1<f64>,
    gt: Array1<f64>,
    search: LineSearch,
    /// Completed iterations.
    pub(super) iter: u64,
    /// Evaluations told.
    evals: u64,
    /// Infinity norm of the projected gradient at `x`.
    pub(super) pg_norm: f64,
    /// Step of the last accepted line search, along `z − x`.
    pub(super) last_step: f64,
}

impl Default for Run {
    fn default() -> Self {
        Run {
            phase: Phase::Done(Stop::NotStarted),
            asked: false,
            x: Array1::zeros(0),
            g: Array1::zeros(0),
            f: f64::NAN,
            xt: Array1::zeros(0),
            gt: Array1::zeros(0),
            search: LineSearch::default(),
            iter: 0,
            evals: 0,
            pg_norm: f64::INFINITY,
            last_step: 0.0,
        }
    }
}

impl Run {
    /// The point whose values the run waits for, if any.
    pub(super) fn pending(&self) -> Option<&Array1<f64>> {
        match self.phase {
            Phase::Start => Some(&self.x),
            Phase::Search => Some(&self.xt),
            Phase::Propose | Phase::Done(_) => None,
        }
    }
}

/// First non-finite component of `g`, for the error message.
fn first_non_finite(g: &[f64]) -> Option<usize> {
    g.iter().position(|v| !v.is_finite())
}

impl LBfgsB {
    /// Starts a run from `x0` for the reverse-communication interface: [`ask`](Self::ask)
    /// then hands out the points to evaluate and [`tell`](Self::tell) takes their cost and
    /// gradient, so the caller, not the solver, owns the objective. Several solvers can be
    /// advanced side by side, their points evaluated in one batch.
    ///
    /// `x0` is projected into the box first. A run driven this way takes exactly the steps,
    /// and asks for exactly the points, that the `argmin` solver would (which is a driver
    /// over the same machine). As there, the workspace is reused between runs and, with
    /// [`with_warm_memory`](Self::with_warm_memory), the curvature pairs too.
    ///
    /// There is no iteration limit here: stop asking once [`iterations`](Self::iterations)
    /// reaches yours. Nothing is computed ahead of an `ask`, so a run left unfinished leaves
    /// the memory as the last completed iteration did.
    ///
    /// # Errors
    /// [`LbfgsbError::Shape`] if `x0` does not have the box's length,
    /// [`LbfgsbError::NonFinite`] if a component of `x0` is NaN or its projection is not
    /// finite, [`LbfgsbError::InvalidParameter`] (`memory`) if the workspace would exceed
    /// [`MAX_WORKSPACE`](Self::MAX_WORKSPACE). After an error no run is under way.
    ///
    /// # Example
    ///
    /// ```
    /// use blindspot::optim::{LBfgsB, Step, Stop};
    /// use ndarray::{array, Array1};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// // (x0 - 3)² + (x1 + 1)² over x0 ≤ 1, x1 ≥ 0: the answer is the corner (1, 0).
    /// let mut solver = LBfgsB::new(array![f64::NEG_INFINITY, 0.0], array![1.0, f64::INFINITY])?
    ///     .try_with_pgtol(1e-8)?;
    /// solver.start(array![-5.0, 5.0].view())?;
    /// let mut grad = Array1::zeros(2);
    /// let stop = loop {
    ///     let cost = match solver.ask() {
    ///         Step::Evaluate(x) => {
    ///             grad[0] = 2.0 * (x[0] - 3.0);
    ///             grad[1] = 2.0 * (x[1] + 1.0);
    ///             (x[0] - 3.0).powi(2) + (x[1] + 1.0).powi(2)
    ///         }
    ///         Step::Done(stop) => break stop,
    ///     };
    ///     solver.tell(cost, grad.view())?;
    /// };
    /// assert_eq!(stop, Stop::Converged);
    /// let x = solver.point();
    /// assert!((x[0] - 1.0).abs() < 1e-10 && x[1].abs() < 1e-10);
    /// assert!((solver.cost() - 5.0).abs() < 1e-9);
    /// # Ok(())
    /// # }
    /// ```
    pub fn start(&mut self, x0: ArrayView1<'_, f64>) -> Result<(), LbfgsbError> {
        let run = &mut self.run;
        run.phase = Phase::Done(Stop::NotStarted);
        run.asked = false;
        let n = self.bounds.len();
        if x0.len() != n {
            return Err(LbfgsbError::Shape {
                what: "starting point",
                expected: n,
                got: x0.len(),
            });
        }
        if run.x.len() != n {
            run.x = Array1::zeros(n);
            run.g = Array1::zeros(n);
            run.xt = Array1::zeros(n);
            run.gt = Array1::zeros(n);
        }
        for (i, (xi, &v)) in run.x.iter_mut().zip(x0.iter()).enumerate() {
            *xi = v.max(self.bounds.lower()[i]).min(self.bounds.upper()[i]);
            if v.is_nan() || !xi.is_finite() {
                return Err(LbfgsbError::NonFinite {
                    what: format!("starting point, variable {i}"),
                });
            }
        }
        match &self.work {
            Some(w) if w.fits(n, self.m) => {}
            _ => {
                workspace::check_size(n, self.m)?;
                self.work = Some(Workspace::new(n, self.m));
            }
        }
        let w = self.work.as_mut().expect("allocated above");
        if self.warm_memory {
            w.restart(&self.bounds);
        } else {
            w.start(&self.bounds);
        }
        run.f = f64::NAN;
        run.iter = 0;
        run.evals = 0;
        run.pg_norm = f64::INFINITY;
        run.last_step = 0.0;
        run.phase = Phase::Start;
        Ok(())
    }

    /// What the run needs next: the values at a point, or nothing more because it is over.
    ///
    /// Asking again before telling hands out the same point. When an iteration is due, this
    /// is where its direction is computed (the Cauchy point and the subspace step), so an
    /// `ask` may take as long as an iteration of the solver, and a `tell` only as long as the
    /// line search's bookkeeping. Before any [`start`](Self::start) the answer is
    /// `Done(Stop::NotStarted)`.
    pub fn ask(&mut self) -> Step<'_> {
        match self.advance() {
            Some(stop) => Step::Done(stop),
            None => {
                self.run.asked = true;
                Step::Evaluate(self.run.pending().expect("advance leaves a point").view())
            }
        }
    }

    /// Takes the cost and gradient at the point the last [`ask`](Self::ask) handed out.
    ///
    /// The gradient is copied; its layout does not matter.
    ///
    /// # Errors
    /// * [`LbfgsbError::Shape`] if `gradient` does not have the box's length; nothing changes,
    ///   so the values may be told again;
    /// * [`LbfgsbError::NonFinite`] if the cost or a gradient component is NaN or infinite
    ///   (or `gᵀd` overflows): the run ends there with [`Stop::NonFinite`] (or
    ///   [`Stop::NonFiniteStart`] at the starting point), at the last finite point;
    /// * [`LbfgsbError::NotAsked`] if no point is waiting for its values: before a run was
    ///   started, after it ended, or a second time for the same `ask`.
    pub fn tell(&mut self, cost: f64, gradient: ArrayView1<'_, f64>) -> Result<(), LbfgsbError> {
        let slot = self.told_slot(gradient.len())?;
        slot.assign(&gradient);
        self.told(cost)
    }

    /// [`tell`](Self::tell) with an owned gradient, moved in instead of copied (the `argmin`
    /// driver gets one from the problem for every evaluation). A non-contiguous one is
    /// copied into standard layout, which the kernels need.
    pub(super) fn tell_owned(
        &mut self,
        cost: f64,
        gradient: Array1<f64>,
    ) -> Result<(), LbfgsbError> {
        let slot = self.told_slot(gradient.len())?;
        if gradient.as_slice().is_some() {
            *slot = gradient;
        } else {
            slot.assign(&gradient);
        }
        self.told(cost)
    }

    /// The buffer the told gradient goes to, after checking that a tell is expected and the
    /// gradient's length.
    fn told_slot(&mut self, len: usize) -> Result<&mut Array1<f64>, LbfgsbError> {
        let run = &mut self.run;
        let slot = match (run.asked, run.phase) {
            (true, Phase::Start) => &mut run.g,
            (true, Phase::Search) => &mut run.gt,
            (_, Phase::Done(stop)) => {
                return Err(LbfgsbError::NotAsked(match stop {
                    Stop::NotStarted => "no run was started",
                    _ => "the run has ended",
                }))
            }
            _ => {
                return Err(LbfgsbError::NotAsked(
                    "ask for the point before telling its values",
                ))
            }
        };
        if len != slot.len() {
            return Err(LbfgsbError::Shape {
                what: "gradient",
                expected: slot.len(),
                got: len,
            });
        }
        Ok(slot)
    }

    /// Moves the run on to the point it needs evaluated (None) or to its end.
    pub(super) fn advance(&mut self) -> Option<Stop> {
        let LBfgsB {
            bounds,
            max_line_search,
            line_search: constants,
            work,
            run,
            ..
        } = self;
        loop {
            match run.phase {
                Phase::Start | Phase::Search => return None,
                Phase::Done(stop) => return Some(stop),
                Phase::Propose => {}
            }
            let w = work.as_mut().expect("a started run has a workspace");
            let xs = run.x.as_slice().expect("the run's buffers are contiguous");
            let gs = run.g.as_slice().expect("the run's buffers are contiguous");
            let first_iteration = run.iter == 0;
            if w.propose(bounds, xs, gs, run.pg_norm, first_iteration)
                .is_err()
            {
                w.reset_memory();
                continue;
            }
            let setup = LineSearchSetup {
                bounds,
                constants: *constants,
                first_iteration,
                max_evals: *max_line_search,
            };
            let xt = run.xt.as_slice_mut().expect("contiguous");
            let (search, next) =
                LineSearch::start(&setup, w.direction(), w.target(), xs, run.f, gs, xt);
            run.search = search;
            match next {
                Next::Evaluate => run.phase = Phase::Search,
                // The model may be poor: drop the memory and retry from a gradient step.
                Next::Failed if w.memory_len() > 0 => w.reset_memory(),
                // A search only accepts a step it has evaluated.
                Next::Failed | Next::Accepted { .. } => {
                    run.phase = Phase::Done(Stop::LineSearchFailed)
                }
            }
        }
    }

    /// Takes the cost at the pending point, whose gradient is already in its slot.
    fn told(&mut self, f: f64) -> Result<(), LbfgsbError> {
        let LBfgsB {
            bounds,
            pgtol,
            ftol,
            work,
            run,
            ..
        } = self;
        run.asked = false;
        run.evals += 1;
        if run.phase == Phase::Start {
            let g = run.g.as_slice().expect("contiguous");
            let bad = if !f.is_finite() {
                Some("cost at the starting point".to_string())
            } else {
                first_non_finite(g).map(|i| format!("gradient at the starting point, variable {i}"))
            };
            if let Some(what) = bad {
                run.phase = Phase::Done(Stop::NonFiniteStart);
                run.f = f;
                return Err(LbfgsbError::NonFinite { what });
            }
            run.f = f;
            run.pg_norm = bounds.projected_gradient_norm(run.x.as_slice().expect("contiguous"), g);
            run.phase = if run.pg_norm <= *pgtol {
                Phase::Done(Stop::Converged)
            } else {
                Phase::Propose
            };
            return Ok(());
        }

        let w = work.as_mut().expect("a started run has a workspace");
        let gt = run.gt.as_slice().expect("contiguous");
        let slope_new = dot(gt, w.direction());
        // A NaN or infinite gradient component always makes gᵀd non-finite.
        if !f.is_finite() || !slope_new.is_finite() {
            let what = if !f.is_finite() {
                "cost".to_string()
            } else if let Some(i) = first_non_finite(gt) {
                format!("gradient, variable {i}")
            } else {
                "directional derivative gᵀd (overflow)".to_string()
            };
            run.phase = Phase::Done(Stop::NonFinite);
            return Err(LbfgsbError::NonFinite { what });
        }
        let next = run.search.told(
            f,
            slope_new,
            bounds,
            w.direction(),
            w.target(),
            run.x.as_slice().expect("contiguous"),
            run.xt.as_slice_mut().expect("contiguous"),
        );
        match next {
            Next::Evaluate => {}
            Next::Failed if w.memory_len() > 0 => {
                w.reset_memory();
                run.phase = Phase::Propose;
            }
            Next::Failed => run.phase = Phase::Done(Stop::LineSearchFailed),
            Next::Accepted {
                stp,
                f: f_new,
                slope_new,
                slope_old,
                d_norm2,
            } => {
                let previous_cost = run.f;
                run.iter += 1;
                run.pg_norm = bounds.projected_gradient_norm(
                    run.xt.as_slice().expect("contiguous"),
                    run.gt.as_slice().expect("contiguous"),
                );
                w.update_pairs(
                    run.g.as_slice().expect("contiguous"),
                    run.gt.as_slice().expect("contiguous"),
                    stp,
                    slope_new,
                    slope_old,
                    d_norm2,
                );
                std::mem::swap(&mut run.x, &mut run.xt);
                std::mem::swap(&mut run.g, &mut run.gt);
                run.f = f_new;
                run.last_step = stp;
                // The stopping tests in the order the argmin executor made them before an
                // iteration: projected gradient, then relative reduction.
                let scale = previous_cost.abs().max(f_new.abs()).max(1.0);
                run.phase = if run.pg_norm <= *pgtol {
                    Phase::Done(Stop::Converged)
                } else if previous_cost - f_new <= *ftol * scale {
                    Phase::Done(Stop::RelativeReduction)
                } else {
                    Phase::Propose
                };
            }
        }
        Ok(())
    }

    /// The current point: the start (projected into the box) until an iteration is complete,
    /// then the last accepted iterate; the answer once the run is over. Empty before the first
    /// [`start`](Self::start).
    pub fn point(&self) -> ArrayView1<'_, f64> {
        self.run.x.view()
    }

    /// The cost at [`point`](Self::point) (NaN until it has been told).
    pub fn cost(&self) -> f64 {
        self.run.f
    }

    /// The gradient at [`point`](Self::point) (meaningless until it has been told).
    pub fn gradient(&self) -> ArrayView1<'_, f64> {
        self.run.g.view()
    }

    /// Iterations (accepted steps) of the current run.
    pub fn iterations(&self) -> u64 {
        self.run.iter
    }

    /// Evaluations told in the current run, including the starting point's.
    pub fn evaluations(&self) -> u64 {
        self.run.evals
    }

    /// Infinity norm of the projected gradient at [`point`](Self::point).
    pub fn projected_gradient_norm(&self) -> f64 {
        self.run.pg_norm
    }

    /// Why the run ended, or None while it goes on.
    pub fn stop(&self) -> Option<Stop> {
        match self.run.phase {
            Phase::Done(stop) => Some(stop),
            _ => None,
        }
    }
}
