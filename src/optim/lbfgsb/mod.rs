//! L-BFGS-B: limited-memory BFGS for bound-constrained problems, as an `argmin` solver.
//!
//! The algorithm is that of Byrd, Lu, Nocedal & Zhu (1995) with the subspace step corrected by
//! Morales & Nocedal (2011), i.e. L-BFGS-B 3.0 as used by SciPy:
//!
//! 1. the *generalized Cauchy point* along the projected steepest-descent path of the
//!    quadratic model built from the compact limited-memory BFGS matrix (`cauchy`, with the
//!    breakpoint machinery in `breakpoints`);
//! 2. minimisation of the model over the variables that are free at that point (direct primal
//!    method), projected back into the box or truncated when projection is not downhill
//!    (`subspace`, with the free set in `free_set` and the matrix `K` in `subspace_matrix`);
//! 3. a Moré–Thuente line search for the strong Wolfe conditions along the resulting feasible
//!    direction, with the step capped at the boundary of the box (`line_search` driving the
//!    state machine in `dcsrch`).
//!
//! The model itself, the pairs `(sᵢ, yᵢ)` and the compact form `B = θI − WMWᵀ`, is in `pairs`;
//! the box in `bounds`; `workspace` holds all of the state kept between iterations and runs
//! steps 1–2; `dense` and `rows` are the small linear-algebra kernels. `run` is the iteration
//! loop and the stopping tests as a reverse-communication state machine (`start`/`ask`/`tell`,
//! the shape of the reference code's `task` loop), which the caller drives with its own
//! evaluations. This file holds the settings and the `argmin` solver, a driver that answers
//! each `ask` by evaluating the argmin problem.
//!
//! # Glossary
//!
//! Names here against those of the paper and of the reference Fortran (`lbfgsb.f` 3.0, as
//! shipped with SciPy), for reading the two side by side:
//!
//! | here | reference | what |
//! |---|---|---|
//! | `BoundKind` (`Unbounded`, `LowerOnly`, `Both`, `UpperOnly`) | `nbd` = 0, 1, 2, 3 | which bounds of a variable are finite |
//! | `Status` (`FREE`, `AT_LOWER`, …) | `iwhere` | where a variable stands at the Cauchy point |
//! | `pg_norm`, `Bounds::projected_gradient_norm` | `sbgnrm`, `projgr` | `‖P(x − g) − x‖∞` |
//! | `previous_cost` | `fold` | cost before the last iteration |
//! | `PairMemory` | `ws`, `wy`, `sy`, `ss`, `wt` | pairs, `SᵀY`, `SᵀS`, Cholesky factor of `T` |
//! | `len`, `head`, `tail`, `pushes` | `col`, `head`, `itail`, `iupdat` | ring of pairs |
//! | `middle_times`, `push`, `factor_t` | `bmv`, `matupd`, `formt` | `M·v`; store a pair; factor `T` |
//! | `CauchySearch::compute` | `cauchy` | generalized Cauchy point |
//! | `brk`, `order`, `w_row` | `t`, `iorder`, `wbp` | breakpoints, their variables, row of `W` |
//! | `f1`, `f2`, `dt_min`, `t_total`, `var` | `f1`, `f2`, `dtm`, `tsum`, `ibp` | slope, curvature, segment minimiser, path length, variable at the breakpoint |
//! | `FreeSet` (`order`, `n_free`, `changed`, `n_entering`, `leaving_start`) | `index`, `nfree`, `indx2`, `nenter`, `ileave` (`freev`) | free/active partition and its changes |
//! | `SubspaceMatrix` (`k_factor`, `inner`) | `wn`, `wn1` (`formk`) | `K` and the inner products it is built from |
//! | `needs_forming`, `new_pair`, `mark_stale` | `wrk`, `updatd` | `K` must be formed again |
//! | `SubspaceStep::reduced_gradient`, `step` | `cmprlb`, `subsm` | reduced gradient; Newton step, projected or truncated |
//! | `step_cap`, `LineSearchConstants` | `stpmx`, `ftol`/`gtol`/`xtol` (`lnsrlb`) | largest feasible step; Moré–Thuente constants |
//! | `slope_old`, `slope_new`, `d_norm2` | `gdold`, `gd`, `dtd` | `gᵀd` before and after the step, `dᵀd` |
//! | `yty`, `sty`, `descent` | `rr`, `dr`, `ddum` | `yᵀy`, `sᵀy`, `−gᵀs` of a new pair |
//!
//! Deliberate differences from the reference code, all in degenerate situations: trial points
//! are clipped to the box so rounding in `x + stp·d` cannot leave it; a line search that gives
//! up (a MINPACK "warning") with a cost above the starting one counts as a failure rather than
//! an accepted step; a pair is also skipped when `sᵀy ≤ ε·yᵀy` (besides the reference's
//! `sᵀy ≤ −ε·gᵀs`); NaN or infinite values end the run instead of entering the model; and the
//! inner products behind the subspace matrix are recomputed in full when an iteration with no
//! free variable left them out of date.

mod bounds;
mod breakpoints;
mod cauchy;
mod dcsrch;
mod dense;
mod error;
mod free_set;
mod line_search;
mod pairs;
mod rows;
mod run;
mod simd;
mod subspace;
mod subspace_matrix;
mod workspace;

use argmin::core::{
    ArgminError, CostFunction, Gradient, IterState, Problem, Solver, State, TerminationReason,
    TerminationStatus, KV,
};
use ndarray::Array1;

use bounds::Bounds;
pub use error::LbfgsbError;
use line_search::{evaluate, LineSearchConstants};
use run::{Phase, Run};
pub use run::{Step, Stop};
use workspace::Workspace;

/// The `argmin` state type [`LBfgsB`] works on.
type LState = IterState<Array1<f64>, Array1<f64>, (), (), (), f64>;

/// Text of the termination reasons [`LBfgsB`] reports through `SolverExit`.
const REASON_FTOL: &str = "relative reduction below ftol";
const REASON_LINE_SEARCH: &str = "line search failed";
const REASON_NON_FINITE: &str = "non-finite cost or gradient";
const REASON_NON_FINITE_START: &str = "non-finite cost or gradient at the starting point";

/// L-BFGS-B, the limited-memory BFGS method for problems with bounds `lower ≤ x ≤ upper`.
///
/// This is the algorithm of Byrd, Lu, Nocedal & Zhu (1995) with the Morales & Nocedal (2011)
/// subspace correction, the method behind SciPy's `minimize(method="L-BFGS-B")`: generalized
/// Cauchy point on the compact limited-memory BFGS model, direct primal subspace minimisation
/// over the free variables, and a Moré–Thuente strong-Wolfe line search that never leaves the
/// box. Every point at which the problem is evaluated lies inside the box.
///
/// Works on any problem implementing [`CostFunction`] and [`Gradient`] over
/// `Array1<f64>`. At every evaluated point the solver calls `cost(x)` and then
/// `gradient(x)` with the same `x`, so a problem may compute both in one pass and cache.
///
/// # Termination
///
/// The reason is in the final state's `termination_status`:
/// * `Terminated(SolverConverged)`: the infinity norm of the projected gradient is at most
///   `pgtol` (first-order optimality within tolerance);
/// * `Terminated(SolverExit("relative reduction below ftol"))`: the normal stop on stalled
///   progress, `(f_k − f_{k+1}) / max(|f_k|, |f_{k+1}|, 1) ≤ ftol`;
/// * `Terminated(SolverExit("line search failed"))`: no acceptable step even right after the
///   memory was reset; the state holds the last accepted point;
/// * `Terminated(SolverExit("non-finite cost or gradient"))` (or `"… at the starting point"`):
///   the problem returned NaN or ±∞; the state holds the last finite point;
/// * `MaxItersReached` as set by the executor.
///
/// The state's final `param`/`cost` is the solver's answer: the solver never accepts a step
/// that raises the cost, and that is the point the stopping test was made at. `best_param`
/// (argmin's record of the lowest cost, updated on strict decrease only) is the same point or
/// an earlier one with equal cost.
///
/// Observers receive, per iteration, `step` (line-search step along `z − x`), `free` (free
/// variables at the Cauchy point), `memory` (stored pairs), `theta` (BFGS scaling) and
/// `proj_grad_norm`.
///
/// Without `argmin`, the same solver can be driven in reverse communication: see
/// [`start`](Self::start), [`ask`](Self::ask) and [`tell`](Self::tell). Both ways take the
/// same steps and evaluate the same points.
///
/// Function counts are in the result's `problem.counts` (`"cost_count"`, `"gradient_count"`,
/// always equal), and in the state when the executor is configured with `counting(true)`.
///
/// # Example
///
/// ```
/// use argmin::core::{CostFunction, Error, Executor, Gradient, State, TerminationReason,
///     TerminationStatus};
/// use blindspot::optim::LBfgsB;
/// use ndarray::{array, Array1};
///
/// /// (x0 - 3)² + (x1 + 1)², minimised over x0 ≤ 1, x1 ≥ 0.
/// struct Bowl;
/// impl CostFunction for Bowl {
///     type Param = Array1<f64>;
///     type Output = f64;
///     fn cost(&self, x: &Array1<f64>) -> Result<f64, Error> {
///         Ok((x[0] - 3.0).powi(2) + (x[1] + 1.0).powi(2))
///     }
/// }
/// impl Gradient for Bowl {
///     type Param = Array1<f64>;
///     type Gradient = Array1<f64>;
///     fn gradient(&self, x: &Array1<f64>) -> Result<Array1<f64>, Error> {
///         Ok(array![2.0 * (x[0] - 3.0), 2.0 * (x[1] + 1.0)])
///     }
/// }
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let solver = LBfgsB::new(array![f64::NEG_INFINITY, 0.0], array![1.0, f64::INFINITY])?
///     .try_with_pgtol(1e-8)?;
/// let res = Executor::new(Bowl, solver)
///     .configure(|s| s.param(array![-5.0, 5.0]).max_iters(100))
///     .run()?;
/// let x = res.state().get_best_param().unwrap();
/// assert!((x[0] - 1.0).abs() < 1e-10 && x[1].abs() < 1e-10);
/// assert_eq!(
///     res.state().get_termination_status(),
///     &TerminationStatus::Terminated(TerminationReason::SolverConverged)
/// );
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct LBfgsB {
    bounds: Bounds,
    m: usize,
    pgtol: f64,
    ftol: f64,
    max_line_search: usize,
    line_search: LineSearchConstants,
    warm_memory: bool,
    work: Option<Workspace>,
    run: Run,
}

impl LBfgsB {
    /// Creates the solver for the box `lower ≤ x ≤ upper`.
    ///
    /// Each variable may have no bound, one or two (use `f64::NEG_INFINITY` /
    /// `f64::INFINITY` for a missing one); `lower[i] == upper[i]` fixes variable `i`.
    ///
    /// # Errors
    /// [`LbfgsbError::InvalidBounds`] when the lengths differ, a bound is NaN, a lower bound is
    /// `+∞`, an upper bound is `−∞`, or `lower[i] > upper[i]`.
    pub fn new(lower: Array1<f64>, upper: Array1<f64>) -> Result<LBfgsB, LbfgsbError> {
        let bounds = Bounds::new(lower.to_vec(), upper.to_vec())?;
        Ok(LBfgsB {
            bounds,
            m: 10,
            pgtol: 1e-5,
            ftol: 2.2e-9,
            max_line_search: 20,
            line_search: LineSearchConstants::default(),
            warm_memory: false,
            work: None,
            run: Run::default(),
        })
    }

    /// Largest number of curvature pairs ([`try_with_memory`](Self::try_with_memory)): far more than
    /// a quasi-Newton model uses (SciPy's default is 10; the attack's cap is the same 1000).
    pub const MAX_MEMORY: usize = workspace::MAX_MEMORY;

    /// Largest workspace in 8-byte words (`2^27`, 1 GiB), checked before it is allocated: the
    /// solver keeps `2·m` vectors of the `n` variables plus `17·m²` words of small matrices,
    /// so `m·n` may be at most about `2^26`. The default memory (10) is checked when a run
    /// starts: `init` then fails with the same error for a box of more than about 4.4 million
    /// variables.
    pub const MAX_WORKSPACE: usize = workspace::MAX_WORKSPACE;

    /// Number of curvature pairs kept (default 10).
    ///
    /// # Errors
    /// [`LbfgsbError::InvalidParameter`] (`memory`) unless `1 ≤ m ≤` [`MAX_MEMORY`](Self::MAX_MEMORY)
    /// and the workspace for `m` pairs of the box's dimension fits in
    /// [`MAX_WORKSPACE`](Self::MAX_WORKSPACE) words.
    pub fn try_with_memory(mut self, m: usize) -> Result<Self, LbfgsbError> {
        workspace::check_size(self.bounds.len(), m)?;
        self.m = m;
        self.work = None;
        Ok(self)
    }

    /// Stop when the infinity norm of the projected gradient is at most `pgtol`
    /// (default 1e-5).
    ///
    /// # Errors
    /// [`LbfgsbError::InvalidParameter`] if `pgtol` is negative or not finite.
    pub fn try_with_pgtol(mut self, pgtol: f64) -> Result<Self, LbfgsbError> {
        if !(pgtol >= 0.0 && pgtol.is_finite()) {
            return Err(LbfgsbError::param(
                "pgtol",
                format!("must be finite and >= 0, got {pgtol}"),
            ));
        }
        self.pgtol = pgtol;
        Ok(self)
    }

    /// Stop when `(f_k − f_{k+1}) / max(|f_k|, |f_{k+1}|, 1) ≤ ftol` (default 2.2e-9, SciPy's
    /// `ftol`, i.e. `factr · ε` with `factr = 1e7`).
    ///
    /// # Errors
    /// [`LbfgsbError::InvalidParameter`] if `ftol` is negative or not finite.
    pub fn try_with_ftol(mut self, ftol: f64) -> Result<Self, LbfgsbError> {
        if !(ftol >= 0.0 && ftol.is_finite()) {
            return Err(LbfgsbError::param(
                "ftol",
                format!("must be finite and >= 0, got {ftol}"),
            ));
        }
        self.ftol = ftol;
        Ok(self)
    }

    /// Maximum number of evaluations in one line search (default 20).
    ///
    /// # Errors
    /// [`LbfgsbError::InvalidParameter`] if `n` is 0.
    pub fn try_with_max_line_search(mut self, n: usize) -> Result<Self, LbfgsbError> {
        if n == 0 {
            return Err(LbfgsbError::param("max_line_search", "must be at least 1"));
        }
        self.max_line_search = n;
        Ok(self)
    }

    /// Constants of the Moré–Thuente line search (defaults `ftol = 1e-3`, `gtol = 0.9`,
    /// `xtol = 0.1`, those of the reference implementation and SciPy):
    ///
    /// * `ftol`: sufficient decrease, a step `t` must give `f(t) ≤ f(0) + ftol·t·f'(0)`;
    /// * `gtol`: curvature, `|f'(t)| ≤ gtol·|f'(0)|` (strong Wolfe); close to 1 accepts most
    ///   steps, so the unit quasi-Newton step is usually taken;
    /// * `xtol`: the search gives up (and takes its best step) once the interval that brackets
    ///   an acceptable step is narrower than `xtol` times its upper end.
    ///
    /// The search's other inputs are not settings: the smallest step is 0 and the largest is
    /// where `x + t·d` leaves the box (at most 1e10, and 1 in the first iteration). Its number
    /// of evaluations is capped by [`try_with_max_line_search`](Self::try_with_max_line_search).
    ///
    /// # Errors
    /// [`LbfgsbError::InvalidParameter`] unless `0 < ftol < gtol < 1` and `0 ≤ xtol < 1`
    /// (named `line_search_ftol`, `line_search_gtol`, `line_search_xtol`).
    pub fn with_line_search(
        mut self,
        ftol: f64,
        gtol: f64,
        xtol: f64,
    ) -> Result<Self, LbfgsbError> {
        self.line_search = LineSearchConstants::new(ftol, gtol, xtol)?;
        Ok(self)
    }

    /// Start each run from the curvature pairs the previous run on this solver left behind,
    /// instead of from an empty memory (default false).
    ///
    /// Useful when a sequence of closely related problems is solved one after another from
    /// nearby starting points, as in a search over a penalty weight: the first steps are then
    /// quasi-Newton steps rather than scaled gradient steps. If the objective changed by a
    /// multiple of `½‖x‖²` between runs, say so with
    /// [`shift_curvature`](Self::shift_curvature) so the pairs stay exact. The memory is
    /// still kept only if the new run has the same dimension and memory size.
    pub fn with_warm_memory(mut self, on: bool) -> Self {
        self.warm_memory = on;
        self
    }

    /// Adjusts the stored curvature pairs for an objective that gained `δ/2·‖x‖²` (any
    /// constant or linear change may come with it): every gradient difference `y` becomes
    /// `y + δ·s`, which is exact. Pairs that would lose positive curvature (possible for
    /// `δ < 0`) empty the memory. Has an effect only with
    /// [`with_warm_memory`](Self::with_warm_memory). Returns the number of pairs kept.
    pub fn shift_curvature(&mut self, delta: f64) -> usize {
        let Some(w) = self.work.as_mut().filter(|_| self.warm_memory) else {
            return 0;
        };
        if w.shift_curvature(delta) {
            w.memory_len()
        } else {
            0
        }
    }

    /// Forgets the stored curvature pairs, so the next run starts from an empty memory even
    /// with [`with_warm_memory`](Self::with_warm_memory).
    pub fn clear_memory(&mut self) {
        if let Some(w) = self.work.as_mut() {
            w.reset_memory();
        }
    }
}

impl<O> Solver<O, LState> for LBfgsB
where
    O: CostFunction<Param = Array1<f64>, Output = f64>
        + Gradient<Param = Array1<f64>, Gradient = Array1<f64>>,
{
    fn name(&self) -> &str {
        "L-BFGS-B"
    }

    fn init(
        &mut self,
        problem: &mut Problem<O>,
        mut state: LState,
    ) -> Result<(LState, Option<KV>), argmin::core::Error> {
        let x0 = state
            .take_param()
            .ok_or_else(|| ArgminError::NotInitialized {
                text: "L-BFGS-B needs a starting point: configure the executor with `param(x0)`"
                    .into(),
            })?;
        self.start(x0.view())?;
        let n = x0.len();
        let moved = self.run.x != x0;
        // The run now waits for the values at the (projected) start.
        let _ = self.ask();
        // Reuse a cost and gradient supplied with the start only if they belong to it.
        let given_cost = state.get_cost();
        let given_grad = state.take_gradient();
        let (f, g) = match given_grad {
            Some(g)
                if !moved && given_cost.is_finite() && g.len() == n && g.as_slice().is_some() =>
            {
                (given_cost, g)
            }
            _ => evaluate(problem, &self.run.x)?,
        };
        let state = state.param(self.run.x.clone()).cost(f).gradient(g.clone());
        match self.tell_owned(f, g) {
            Ok(()) => Ok((state, None)),
            Err(LbfgsbError::NonFinite { .. }) => Ok((
                state.terminate_with(TerminationReason::SolverExit(
                    REASON_NON_FINITE_START.into(),
                )),
                None,
            )),
            Err(e) => Err(e.into()),
        }
    }

    fn next_iter(
        &mut self,
        problem: &mut Problem<O>,
        mut state: LState,
    ) -> Result<(LState, Option<KV>), argmin::core::Error> {
        if self.stop() == Some(Stop::NotStarted) {
            return Err(ArgminError::PotentialBug {
                text: "L-BFGS-B: next_iter before init".into(),
            }
            .into());
        }
        let iter = self.run.iter;
        loop {
            if let Step::Done(_) = self.ask() {
                break;
            }
            let x = self.run.pending().expect("ask handed out a point");
            let (f, g) = evaluate(problem, x)?;
            match self.tell_owned(f, g) {
                Ok(()) | Err(LbfgsbError::NonFinite { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            if self.run.iter > iter {
                break;
            }
        }
        match self.run.phase {
            Phase::Done(Stop::LineSearchFailed) => {
                return Ok((
                    state.terminate_with(TerminationReason::SolverExit(REASON_LINE_SEARCH.into())),
                    None,
                ))
            }
            Phase::Done(Stop::NonFinite) => {
                return Ok((
                    state.terminate_with(TerminationReason::SolverExit(REASON_NON_FINITE.into())),
                    None,
                ))
            }
            _ => {}
        }
        // The state gets copies of the new point and gradient, in the buffers of the ones two
        // iterations old, so that a run allocates nothing per iteration.
        let n = self.run.x.len();
        let recycle = |a: Option<Array1<f64>>| {
            a.filter(|a| a.len() == n)
                .unwrap_or_else(|| Array1::zeros(n))
        };
        let mut x = recycle(state.take_prev_param());
        x.assign(&self.run.x);
        let mut g = recycle(state.take_prev_gradient());
        g.assign(&self.run.g);
        let w = self.work.as_ref().expect("a started run has a workspace");
        let kv = argmin::kv!(
            "step" => self.run.last_step;
            "free" => w.n_free() as u64;
            "memory" => w.memory_len() as u64;
            "theta" => w.theta();
            "proj_grad_norm" => self.run.pg_norm;
        );
        Ok((state.param(x).gradient(g).cost(self.run.f), Some(kv)))
    }

    fn terminate(&mut self, _state: &LState) -> TerminationStatus {
        match self.stop() {
            Some(Stop::Converged) => {
                TerminationStatus::Terminated(TerminationReason::SolverConverged)
            }
            Some(Stop::RelativeReduction) => {
                TerminationStatus::Terminated(TerminationReason::SolverExit(REASON_FTOL.into()))
            }
            _ => TerminationStatus::NotTerminated,
        }
    }
}

#[cfg(test)]
mod tests;
