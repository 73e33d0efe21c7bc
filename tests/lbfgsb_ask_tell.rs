//! The reverse-communication interface of `blindspot::optim::LBfgsB` (`start`/`ask`/`tell`):
//! driven by hand it must take bit for bit the steps of the `argmin` driver, runs advanced in
//! lockstep must not see each other, and bad values are typed errors.

use std::cell::RefCell;

use argmin::core::{CostFunction, Error as ArgminError, Executor, Gradient, State};
use blindspot::optim::{LBfgsB, LbfgsbError, Step, Stop};
use ndarray::{Array1, Array2};

mod common;
use common::rosenbrock::{rosenbrock_bounds, rosenbrock_start, Rosenbrock};

type Vector = Array1<f64>;

/// `½ xᵀAx − bᵀx` with a dense symmetric positive definite `A`.
#[derive(Clone)]
struct Quadratic {
    a: Array2<f64>,
    b: Vector,
}

impl Quadratic {
    fn new(n: usize, seed: u64) -> Self {
        // A fixed, well-spread SPD matrix: no random crate needed.
        let r = Array2::from_shape_fn((n, n), |(i, j)| {
            (((i * 31 + j * 17) as u64 ^ seed) as f64 * 0.37).sin()
        });
        let a = r.t().dot(&r) + Array2::<f64>::eye(n) * 0.1;
        let b = Vector::from_shape_fn(n, |i| 4.0 * ((i as u64 + seed) as f64).cos());
        Quadratic { a, b }
    }
}

impl CostFunction for Quadratic {
    type Param = Vector;
    type Output = f64;
    fn cost(&self, x: &Vector) -> Result<f64, ArgminError> {
        Ok(0.5 * x.dot(&self.a.dot(x)) - self.b.dot(x))
    }
}

impl Gradient for Quadratic {
    type Param = Vector;
    type Gradient = Vector;
    fn gradient(&self, x: &Vector) -> Result<Vector, ArgminError> {
        Ok(self.a.dot(x) - &self.b)
    }
}

/// Records the points the `argmin` driver evaluates (cost calls only: the gradient is asked
/// at the same point).
struct Recording<P> {
    inner: P,
    points: RefCell<Vec<Vector>>,
}

impl<P: CostFunction<Param = Vector, Output = f64>> CostFunction for Recording<P> {
    type Param = Vector;
    type Output = f64;
    fn cost(&self, x: &Vector) -> Result<f64, ArgminError> {
        self.points.borrow_mut().push(x.clone());
        self.inner.cost(x)
    }
}

impl<P: Gradient<Param = Vector, Gradient = Vector>> Gradient for Recording<P> {
    type Param = Vector;
    type Gradient = Vector;
    fn gradient(&self, x: &Vector) -> Result<Vector, ArgminError> {
        self.inner.gradient(x)
    }
}

/// What a run produced: every evaluated point in order, the final point, cost, iterations.
#[derive(Debug, PartialEq)]
struct Trace {
    points: Vec<Vector>,
    x: Vector,
    f: f64,
    iters: u64,
    reason: String,
}

fn reason_text(stop: Stop) -> String {
    match stop {
        Stop::Converged => "SolverConverged".into(),
        Stop::RelativeReduction => "relative reduction below ftol".into(),
        Stop::LineSearchFailed => "line search failed".into(),
        Stop::NonFinite => "non-finite cost or gradient".into(),
        other => format!("{other:?}"),
    }
}

fn by_argmin<P>(problem: P, solver: LBfgsB, x0: &Vector) -> Trace
where
    P: CostFunction<Param = Vector, Output = f64> + Gradient<Param = Vector, Gradient = Vector>,
{
    let rec = Recording {
        inner: problem,
        points: RefCell::new(Vec::new()),
    };
    let mut res = Executor::new(rec, solver)
        .configure(|s| s.param(x0.clone()).max_iters(100_000))
        .run()
        .unwrap();
    let state = res.state();
    let reason = match state.get_termination_status() {
        argmin::core::TerminationStatus::Terminated(
            argmin::core::TerminationReason::SolverExit(s),
        ) => s.clone(),
        other => match other {
            argmin::core::TerminationStatus::Terminated(r) => format!("{r:?}"),
            o => format!("{o:?}"),
        },
    };
    let (x, f, iters) = (
        state.get_param().unwrap().clone(),
        state.get_cost(),
        state.get_iter(),
    );
    let counts = res.problem.counts.clone();
    let points = res.problem.take_problem().unwrap().points.into_inner();
    assert_eq!(counts["cost_count"] as usize, points.len());
    Trace {
        points,
        x,
        f,
        iters,
        reason,
    }
}

/// One solver run in reverse communication, with its trace so far.
struct Driven<P> {
    problem: P,
    solver: LBfgsB,
    points: Vec<Vector>,
}

impl<P> Driven<P>
where
    P: CostFunction<Param = Vector, Output = f64> + Gradient<Param = Vector, Gradient = Vector>,
{
    fn new(problem: P, mut solver: LBfgsB, x0: &Vector) -> Self {
        solver.start(x0.view()).unwrap();
        Driven {
            problem,
            solver,
            points: Vec::new(),
        }
    }

    /// One `ask` and, if a point is wanted, one `tell`; false once the run is over.
    fn round(&mut self) -> bool {
        let x = match self.solver.ask() {
            Step::Evaluate(x) => x.to_owned(),
            Step::Done(_) => return false,
        };
        let f = self.problem.cost(&x).unwrap();
        let g = self.problem.gradient(&x).unwrap();
        self.points.push(x);
        // A NaN/∞ ends the run with a typed error, which the trace records through `stop`.
        let _ = self.solver.tell(f, g.view());
        true
    }

    fn trace(self) -> Trace {
        let stop = self.solver.stop().expect("run over");
        assert_eq!(self.solver.evaluations() as usize, self.points.len());
        Trace {
            points: self.points,
            x: self.solver.point().to_owned(),
            f: self.solver.cost(),
            iters: self.solver.iterations(),
            reason: reason_text(stop),
        }
    }
}

fn by_hand<P>(problem: P, solver: LBfgsB, x0: &Vector) -> Trace
where
    P: CostFunction<Param = Vector, Output = f64> + Gradient<Param = Vector, Gradient = Vector>,
{
    let mut d = Driven::new(problem, solver, x0);
    while d.round() {}
    d.trace()
}

/// A test problem with its solver settings and start.
type Case = (&'static str, Problem, LBfgsB, Vector);

fn cases() -> Vec<Case> {
    let mut out: Vec<Case> = Vec::new();
    // A quadratic whose minimiser lies outside the box: several bounds end active.
    let n = 12;
    let q = Quadratic::new(n, 3);
    out.push((
        "quadratic with active bounds",
        Problem::Q(q),
        LBfgsB::new(Vector::from_elem(n, -0.3), Vector::from_elem(n, 0.4))
            .unwrap()
            .try_with_memory(4)
            .unwrap()
            .try_with_pgtol(1e-10)
            .unwrap()
            .try_with_ftol(0.0)
            .unwrap(),
        Vector::from_shape_fn(n, |i| if i % 2 == 0 { 0.9 } else { -0.9 }),
    ));
    // Rosenbrock in a box, default tolerances (stops on ftol) and tight ones (on pgtol).
    for (n, tight) in [(2usize, false), (40, false), (100, true)] {
        let (l, u) = rosenbrock_bounds(n);
        let mut s = LBfgsB::new(l, u).unwrap();
        if tight {
            s = s.try_with_pgtol(1e-7).unwrap().try_with_ftol(0.0).unwrap();
        }
        out.push((
            "rosenbrock in a box",
            Problem::R(Rosenbrock),
            s,
            rosenbrock_start(n),
        ));
    }
    // Unbounded Rosenbrock (the plain L-BFGS path of the existing tests).
    let n = 30;
    out.push((
        "rosenbrock unbounded",
        Problem::R(Rosenbrock),
        LBfgsB::new(
            Vector::from_elem(n, f64::NEG_INFINITY),
            Vector::from_elem(n, f64::INFINITY),
        )
        .unwrap(),
        rosenbrock_start(n),
    ));
    out
}

#[derive(Clone)]
enum Problem {
    Q(Quadratic),
    R(Rosenbrock),
}

impl CostFunction for Problem {
    type Param = Vector;
    type Output = f64;
    fn cost(&self, x: &Vector) -> Result<f64, ArgminError> {
        match self {
            Problem::Q(q) => q.cost(x),
            Problem::R(r) => r.cost(x),
        }
    }
}

impl Gradient for Problem {
    type Param = Vector;
    type Gradient = Vector;
    fn gradient(&self, x: &Vector) -> Result<Vector, ArgminError> {
        match self {
            Problem::Q(q) => q.gradient(x),
            Problem::R(r) => r.gradient(x),
        }
    }
}

#[test]
fn ask_tell_by_hand_matches_the_argmin_driver_bit_for_bit() {
    for (name, problem, solver, x0) in cases() {
        let a = by_argmin(problem.clone(), solver.clone(), &x0);
        let h = by_hand(problem, solver, &x0);
        assert!(a.iters > 0, "{name}");
        assert_eq!(a.points.len(), h.points.len(), "{name}: evaluations");
        for (k, (p, q)) in a.points.iter().zip(&h.points).enumerate() {
            assert_eq!(p, q, "{name}: evaluated point {k}");
        }
        assert_eq!(a.x, h.x, "{name}: final point");
        assert_eq!(a.f.to_bits(), h.f.to_bits(), "{name}: final cost");
        assert_eq!(a.iters, h.iters, "{name}: iterations");
        assert_eq!(a.reason, h.reason, "{name}: termination");
    }
}

#[test]
fn runs_in_lockstep_equal_runs_alone() {
    let alone: Vec<Trace> = cases()
        .into_iter()
        .map(|(_, p, s, x0)| by_hand(p, s, &x0))
        .collect();
    // Round-robin, one ask/tell per run per round, as a batched attack would; the solvers
    // are clones of the same settings, so any shared state would show.
    let mut runs: Vec<Driven<Problem>> = cases()
        .into_iter()
        .map(|(_, p, s, x0)| Driven::new(p, s, &x0))
        .collect();
    let mut active = vec![true; runs.len()];
    while active.iter().any(|&a| a) {
        for (run, act) in runs.iter_mut().zip(active.iter_mut()) {
            if *act {
                *act = run.round();
            }
        }
    }
    let together: Vec<Trace> = runs.into_iter().map(Driven::trace).collect();
    assert_eq!(alone.len(), together.len());
    for (k, (a, t)) in alone.iter().zip(&together).enumerate() {
        assert_eq!(a, t, "run {k}");
        assert_eq!(a.f.to_bits(), t.f.to_bits(), "run {k}");
    }
}

/// Five solves of the same quadratic, each run's solver advanced one round at a time with the
/// others in between, ending with warm memory reused: still the runs alone.
#[test]
fn warm_memory_runs_in_lockstep_equal_runs_alone() {
    let n = 20;
    let l = Vector::from_elem(n, -1.0);
    let u = Vector::from_elem(n, 1.0);
    let solver = || {
        LBfgsB::new(l.clone(), u.clone())
            .unwrap()
            .try_with_memory(3)
            .unwrap()
            .with_warm_memory(true)
    };
    let seeds = [1u64, 2, 3];
    let solve_twice = |s: LBfgsB, seed: u64| {
        let mut d = Driven::new(Quadratic::new(n, seed), s, &Vector::zeros(n));
        while d.round() {}
        let x = d.solver.point().to_owned();
        let first = (d.points.clone(), x.clone());
        let mut s = d.solver;
        s.start(x.view()).unwrap();
        let mut d = Driven {
            problem: Quadratic::new(n, seed + 10),
            solver: s,
            points: Vec::new(),
        };
        while d.round() {}
        (first, d.trace())
    };
    let alone: Vec<_> = seeds.iter().map(|&s| solve_twice(solver(), s)).collect();
    // Lockstep of the first solves, then of the second ones.
    let mut runs: Vec<Driven<Quadratic>> = seeds
        .iter()
        .map(|&s| Driven::new(Quadratic::new(n, s), solver(), &Vector::zeros(n)))
        .collect();
    while runs.iter_mut().fold(false, |any, r| r.round() | any) {}
    let mut second: Vec<Driven<Quadratic>> = Vec::new();
    for (r, &seed) in runs.into_iter().zip(&seeds) {
        let x = r.solver.point().to_owned();
        let k = second.len();
        assert_eq!(r.points, alone[k].0 .0, "first solve {k}");
        assert_eq!(x, alone[k].0 .1, "first solve {k}");
        let mut s = r.solver;
        s.start(x.view()).unwrap();
        second.push(Driven {
            problem: Quadratic::new(n, seed + 10),
            solver: s,
            points: Vec::new(),
        });
    }
    while second.iter_mut().fold(false, |any, r| r.round() | any) {}
    for (k, r) in second.into_iter().enumerate() {
        assert_eq!(r.trace(), alone[k].1, "second solve {k}");
    }
}

#[test]
fn wrong_gradient_length_is_a_typed_error_and_can_be_told_again() {
    let mut s = LBfgsB::new(Vector::zeros(3), Vector::ones(3)).unwrap();
    s.start(Vector::from_elem(3, 0.5).view()).unwrap();
    assert!(matches!(s.ask(), Step::Evaluate(_)));
    let err = s.tell(1.0, Vector::zeros(4).view()).unwrap_err();
    assert_eq!(
        err,
        LbfgsbError::Shape {
            what: "gradient",
            expected: 3,
            got: 4
        }
    );
    // Nothing changed: the right values are still welcome.
    assert_eq!(s.evaluations(), 0);
    s.tell(1.0, Vector::from_elem(3, 0.1).view()).unwrap();
    assert_eq!(s.evaluations(), 1);
}

#[test]
fn nan_cost_and_infinite_gradient_are_typed_errors_that_end_the_run() {
    let inf = f64::INFINITY;
    // At the start.
    let mut s = LBfgsB::new(Vector::from_elem(2, -inf), Vector::from_elem(2, inf)).unwrap();
    s.start(Vector::zeros(2).view()).unwrap();
    let _ = s.ask();
    let err = s.tell(f64::NAN, Vector::zeros(2).view()).unwrap_err();
    assert!(matches!(err, LbfgsbError::NonFinite { .. }), "{err:?}");
    assert_eq!(s.stop(), Some(Stop::NonFiniteStart));
    assert_eq!(s.ask(), Step::Done(Stop::NonFiniteStart));

    // During the line search: the run keeps the last finite point.
    for bad_cost in [true, false] {
        s.start(Vector::from_vec(vec![0.0, 1.0]).view()).unwrap();
        let bowl = |x: &Vector| {
            (
                (x[0] - 3.0).powi(2) + x[1].powi(2),
                Vector::from_vec(vec![2.0 * (x[0] - 3.0), 2.0 * x[1]]),
            )
        };
        let mut last_told = None;
        loop {
            let x = match s.ask() {
                Step::Evaluate(x) => x.to_owned(),
                Step::Done(stop) => panic!("ended with {stop:?} before a bad value"),
            };
            let (f, g) = bowl(&x);
            if last_told.is_some() {
                let err = if bad_cost {
                    s.tell(f64::NAN, g.view())
                } else {
                    s.tell(f, Vector::from_vec(vec![inf, 0.0]).view())
                }
                .unwrap_err();
                assert!(matches!(err, LbfgsbError::NonFinite { .. }), "{err:?}");
                break;
            }
            s.tell(f, g.view()).unwrap();
            last_told = Some((x, f));
        }
        assert_eq!(s.stop(), Some(Stop::NonFinite));
        let (x0, f0) = last_told.unwrap();
        assert_eq!(s.point(), x0.view());
        assert_eq!(s.cost(), f0);
        // Telling after the end is an error too, not a panic.
        assert!(matches!(
            s.tell(0.0, Vector::zeros(2).view()),
            Err(LbfgsbError::NotAsked(_))
        ));
    }
}

#[test]
fn telling_without_asking_is_a_typed_error() {
    let mut s = LBfgsB::new(Vector::zeros(2), Vector::ones(2)).unwrap();
    assert_eq!(s.ask(), Step::Done(Stop::NotStarted));
    assert!(matches!(
        s.tell(0.0, Vector::zeros(2).view()),
        Err(LbfgsbError::NotAsked(_))
    ));
    s.start(Vector::zeros(2).view()).unwrap();
    assert!(matches!(
        s.tell(0.0, Vector::zeros(2).view()),
        Err(LbfgsbError::NotAsked(_))
    ));
    let _ = s.ask();
    s.tell(0.0, Vector::from_elem(2, -1.0).view()).unwrap();
    // A second tell for the same ask.
    assert!(matches!(
        s.tell(0.0, Vector::zeros(2).view()),
        Err(LbfgsbError::NotAsked(_))
    ));
    // Through `?`, the crate's error says what happened and keeps the solver's as its source.
    let tell_again = |s: &mut LBfgsB| -> blindspot::Result<()> {
        s.tell(0.0, Vector::zeros(2).view())?;
        Ok(())
    };
    let e = tell_again(&mut s).unwrap_err();
    assert!(
        matches!(
            e,
            blindspot::Error::Solver {
                source: LbfgsbError::NotAsked(_),
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("nothing to tell"), "{e}");
    let source = std::error::Error::source(&e).expect("the solver's error is the source");
    assert!(matches!(
        source.downcast_ref::<LbfgsbError>(),
        Some(LbfgsbError::NotAsked(_))
    ));
    // A bad start is an error and leaves no run.
    assert!(matches!(
        s.start(Vector::zeros(3).view()),
        Err(LbfgsbError::Shape { .. })
    ));
    assert_eq!(s.ask(), Step::Done(Stop::NotStarted));
    assert!(matches!(
        s.start(Vector::from_vec(vec![f64::NAN, 0.0]).view()),
        Err(LbfgsbError::NonFinite { .. })
    ));
}
