//! Tests of `blindspot::optim::LBfgsB`, each checked from first principles: KKT conditions,
//! an independent solver, or an invariant observed at every evaluated point.

use std::cell::RefCell;

use argmin::core::{
    CostFunction, Error as ArgminError, Executor, Gradient, State, TerminationReason,
    TerminationStatus,
};
use argmin::solver::linesearch::MoreThuenteLineSearch;
use argmin::solver::quasinewton::LBFGS;
use blindspot::optim::{LBfgsB, LbfgsbError};
use blindspot::Error;
use ndarray::{Array1, Array2};
use proptest::prelude::*;

mod common;
use common::rosenbrock::{rosenbrock_bounds, rosenbrock_solution, rosenbrock_start, Rosenbrock};

type Vector = Array1<f64>;

// ---------------------------------------------------------------------------------------------
// Problems

/// `½ xᵀAx − bᵀx` with a dense symmetric positive definite `A`.
#[derive(Clone)]
struct DenseQuadratic {
    a: Array2<f64>,
    b: Vector,
}

impl CostFunction for DenseQuadratic {
    type Param = Vector;
    type Output = f64;
    fn cost(&self, x: &Vector) -> Result<f64, ArgminError> {
        Ok(0.5 * x.dot(&self.a.dot(x)) - self.b.dot(x))
    }
}

impl Gradient for DenseQuadratic {
    type Param = Vector;
    type Gradient = Vector;
    fn gradient(&self, x: &Vector) -> Result<Vector, ArgminError> {
        Ok(self.a.dot(x) - &self.b)
    }
}

/// `½ xᵀAx − bᵀx` with `A = tridiag(−1, 3 + (i mod 10)/2, −1)` and `b_i = 10 sin(i + 1)`.
#[derive(Clone)]
struct TridiagonalQuadratic {
    diag: Vec<f64>,
    b: Vec<f64>,
}

impl TridiagonalQuadratic {
    fn new(n: usize) -> Self {
        TridiagonalQuadratic {
            diag: (0..n).map(|i| 3.0 + (i % 10) as f64 * 0.5).collect(),
            b: (0..n).map(|i| 10.0 * ((i + 1) as f64).sin()).collect(),
        }
    }
    fn grad_i(&self, x: &Vector, i: usize) -> f64 {
        let mut v = self.diag[i] * x[i] - self.b[i];
        if i > 0 {
            v -= x[i - 1];
        }
        if i + 1 < x.len() {
            v -= x[i + 1];
        }
        v
    }
    /// Projected Gauss–Seidel: exact minimisation over one coordinate at a time, clipped to the
    /// box. Converges for any SPD matrix; run to a tiny step as an independent reference.
    fn reference_solution(&self, l: &Vector, u: &Vector) -> Vector {
        let n = self.diag.len();
        let mut x = Vector::zeros(n);
        for _sweep in 0..10_000 {
            let mut change: f64 = 0.0;
            for i in 0..n {
                let g = self.grad_i(&x, i);
                let new = (x[i] - g / self.diag[i]).clamp(l[i], u[i]);
                change = change.max((new - x[i]).abs());
                x[i] = new;
            }
            if change < 1e-15 {
                break;
            }
        }
        x
    }
}

impl CostFunction for TridiagonalQuadratic {
    type Param = Vector;
    type Output = f64;
    fn cost(&self, x: &Vector) -> Result<f64, ArgminError> {
        Ok((0..x.len())
            .map(|i| 0.5 * x[i] * (self.grad_i(x, i) + self.b[i]) - self.b[i] * x[i])
            .sum())
    }
}

impl Gradient for TridiagonalQuadratic {
    type Param = Vector;
    type Gradient = Vector;
    fn gradient(&self, x: &Vector) -> Result<Vector, ArgminError> {
        Ok(Vector::from_shape_fn(x.len(), |i| self.grad_i(x, i)))
    }
}

/// Wraps a problem and records every point it is asked about, in order, tagged with whether
/// it was a cost (`true`) or gradient (`false`) call.
struct Recording<P> {
    inner: P,
    calls: RefCell<Vec<(bool, Vector)>>,
}

impl<P> Recording<P> {
    fn new(inner: P) -> Self {
        Recording {
            inner,
            calls: RefCell::new(Vec::new()),
        }
    }
}

impl<P: CostFunction<Param = Vector, Output = f64>> CostFunction for Recording<P> {
    type Param = Vector;
    type Output = f64;
    fn cost(&self, x: &Vector) -> Result<f64, ArgminError> {
        self.calls.borrow_mut().push((true, x.clone()));
        self.inner.cost(x)
    }
}

impl<P: Gradient<Param = Vector, Gradient = Vector>> Gradient for Recording<P> {
    type Param = Vector;
    type Gradient = Vector;
    fn gradient(&self, x: &Vector) -> Result<Vector, ArgminError> {
        self.calls.borrow_mut().push((false, x.clone()));
        self.inner.gradient(x)
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers

struct Solved {
    x: Vector,
    f: f64,
    status: TerminationStatus,
    iters: u64,
    cost_count: u64,
    gradient_count: u64,
}

fn run<P>(problem: P, solver: LBfgsB, x0: Vector, max_iters: u64) -> (Solved, P)
where
    P: CostFunction<Param = Vector, Output = f64> + Gradient<Param = Vector, Gradient = Vector>,
{
    let mut res = Executor::new(problem, solver)
        .configure(|s| s.param(x0).max_iters(max_iters))
        .run()
        .expect("run succeeds");
    let counts = res.problem.counts.clone();
    let state = res.state();
    // The final iterate is the answer: the solver never accepts a step that raises the cost,
    // and unlike `best_param` (updated on strict decrease only) it is where the stopping test
    // was made.
    assert!(state.get_cost() <= state.get_best_cost());
    let solved = Solved {
        x: state.get_param().expect("final point").clone(),
        f: state.get_cost(),
        status: state.get_termination_status().clone(),
        iters: state.get_iter(),
        cost_count: counts.get("cost_count").copied().unwrap_or(0),
        gradient_count: counts.get("gradient_count").copied().unwrap_or(0),
    };
    (
        solved,
        res.problem.take_problem().expect("problem returned"),
    )
}

/// First-order optimality for `min f` over the box: free variables have a small gradient,
/// variables at a lower bound a gradient ≥ −tol, at an upper bound ≤ tol.
fn assert_kkt(x: &Vector, g: &Vector, l: &Vector, u: &Vector, tol: f64) {
    for i in 0..x.len() {
        assert!(
            x[i] >= l[i] && x[i] <= u[i],
            "x[{i}] = {} outside [{}, {}]",
            x[i],
            l[i],
            u[i]
        );
        let at_lower = x[i] == l[i];
        let at_upper = x[i] == u[i];
        match (at_lower, at_upper) {
            (true, true) => {} // fixed variable: any gradient is fine
            (true, false) => assert!(g[i] >= -tol, "at lower bound {i}: gradient {} < 0", g[i]),
            (false, true) => assert!(g[i] <= tol, "at upper bound {i}: gradient {} > 0", g[i]),
            (false, false) => assert!(g[i].abs() <= tol, "free {i}: |gradient| {} > {tol}", g[i]),
        }
    }
}

fn projected_gradient_norm(x: &Vector, g: &Vector, l: &Vector, u: &Vector) -> f64 {
    (0..x.len())
        .map(|i| ((x[i] - g[i]).clamp(l[i], u[i]) - x[i]).abs())
        .fold(0.0, f64::max)
}

fn converged(status: &TerminationStatus) -> bool {
    *status == TerminationStatus::Terminated(TerminationReason::SolverConverged)
}

/// With `ftol = 0` a run ends either on `pgtol` or when the cost stops decreasing at all
/// (the limit of double precision); both are normal ends.
fn normal_end(status: &TerminationStatus) -> bool {
    converged(status) || exit_text(status) == "relative reduction below ftol"
}

fn exit_text(status: &TerminationStatus) -> String {
    match status {
        TerminationStatus::Terminated(TerminationReason::SolverExit(s)) => s.clone(),
        other => format!("{other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Bound-constrained Rosenbrock

fn rosenbrock_kkt(n: usize) {
    let (l, u) = rosenbrock_bounds(n);
    let solver = LBfgsB::new(l.clone(), u.clone())
        .unwrap()
        .try_with_pgtol(1e-7)
        .unwrap()
        .try_with_ftol(0.0)
        .unwrap();
    let (s, p) = run(Rosenbrock, solver, rosenbrock_start(n), 10_000);
    assert!(normal_end(&s.status), "n = {n}: {:?}", s.status);
    let g = p.gradient(&s.x).unwrap();
    let pg = projected_gradient_norm(&s.x, &g, &l, &u);
    assert!(pg <= 1e-6, "n = {n}: projected gradient {pg}");
    assert_kkt(&s.x, &g, &l, &u, 1e-6);
    // The bounds that should be active are, exactly.
    for k in 0..n / 2 {
        match k % 3 {
            0 => assert_eq!(s.x[2 * k], 0.5),
            1 => assert_eq!(s.x[2 * k], 1.2),
            _ => {}
        }
    }
    let xs = rosenbrock_solution(n);
    let err = (&s.x - &xs).mapv(f64::abs).fold(0.0, |a: f64, &b| a.max(b));
    assert!(err < 1e-5, "n = {n}: max error {err}");
    assert_eq!(s.cost_count, s.gradient_count);
}

#[test]
fn rosenbrock_with_active_bounds_n2() {
    rosenbrock_kkt(2);
}

#[test]
fn rosenbrock_with_active_bounds_n100() {
    rosenbrock_kkt(100);
}

#[test]
fn rosenbrock_with_active_bounds_n1000() {
    rosenbrock_kkt(1000);
}

#[test]
fn default_tolerances_stop_by_ftol_near_the_solution() {
    let n = 100;
    let (l, u) = rosenbrock_bounds(n);
    let (s, p) = run(
        Rosenbrock,
        LBfgsB::new(l.clone(), u.clone()).unwrap(),
        rosenbrock_start(n),
        10_000,
    );
    let g = p.gradient(&s.x).unwrap();
    let pg = projected_gradient_norm(&s.x, &g, &l, &u);
    match &s.status {
        TerminationStatus::Terminated(TerminationReason::SolverConverged) => assert!(pg <= 1e-5),
        TerminationStatus::Terminated(TerminationReason::SolverExit(t)) => {
            assert_eq!(t, "relative reduction below ftol")
        }
        other => panic!("unexpected stop {other:?}"),
    }
    let fstar = Rosenbrock.cost(&rosenbrock_solution(n)).unwrap();
    assert!((s.f - fstar).abs() <= 1e-7 * fstar);
}

// ---------------------------------------------------------------------------------------------
// Convex quadratic, checked against projected Gauss–Seidel

#[test]
fn box_constrained_quadratic_n1000_matches_projected_gauss_seidel() {
    let n = 1000;
    let q = TridiagonalQuadratic::new(n);
    let l = Vector::from_elem(n, -1.0);
    let u = Vector::from_elem(n, 1.0);
    let reference = q.reference_solution(&l, &u);
    let solver = LBfgsB::new(l.clone(), u.clone())
        .unwrap()
        .try_with_pgtol(1e-9)
        .unwrap()
        .try_with_ftol(0.0)
        .unwrap();
    let (s, q) = run(q, solver, Vector::zeros(n), 1000);
    assert!(normal_end(&s.status), "{:?}", s.status);
    let g = q.gradient(&s.x).unwrap();
    assert_kkt(&s.x, &g, &l, &u, 1e-6);
    // λ_min(A) ≥ 1, so a projected gradient of 1e-6 bounds the distance to the solution.
    let err = (&s.x - &reference)
        .mapv(f64::abs)
        .fold(0.0, |a: f64, &b| a.max(b));
    assert!(
        err < 1e-6,
        "max difference from projected Gauss–Seidel {err}"
    );
    let active = s.x.iter().filter(|v| v.abs() == 1.0).count();
    assert!(
        active > 100 && active < n - 100,
        "{active} active bounds: test not informative"
    );
}

// ---------------------------------------------------------------------------------------------
// Feasibility of every evaluated point

fn random_spd(n: usize, seed: &[f64]) -> Array2<f64> {
    // A = RᵀR + I with R from the seed values: symmetric positive definite.
    let r = Array2::from_shape_fn((n, n), |(i, j)| seed[(i * n + j) % seed.len()]);
    r.t().dot(&r) + Array2::<f64>::eye(n)
}

proptest! {
    // A fixed seed: the same cases on every run, so a failure is reproducible and CI
    // cannot turn red by drawing a new case.
    #![proptest_config(ProptestConfig {
        rng_seed: proptest::test_runner::RngSeed::Fixed(12),
        ..ProptestConfig::with_cases(64)
    })]

    #[test]
    fn every_evaluated_point_is_in_the_box(
        n in 2usize..24,
        seed in proptest::collection::vec(-2.0f64..2.0, 16..64),
        centre in proptest::collection::vec(-3.0f64..3.0, 24),
        lo in proptest::collection::vec(-2.0f64..0.5, 24),
        width in proptest::collection::vec(0.0f64..2.0, 24),
        kinds in proptest::collection::vec(0u8..5, 24),
        start in proptest::collection::vec(-5.0f64..5.0, 24),
    ) {
        let a = random_spd(n, &seed);
        // b = A c puts the unconstrained minimiser at c, often outside the box.
        let c = Vector::from_shape_fn(n, |i| centre[i]);
        let b = a.dot(&c);
        let mut l = Vector::from_elem(n, f64::NEG_INFINITY);
        let mut u = Vector::from_elem(n, f64::INFINITY);
        for i in 0..n {
            match kinds[i] {
                0 => {}
                1 => l[i] = lo[i],
                2 => u[i] = lo[i] + width[i],
                3 => { l[i] = lo[i]; u[i] = lo[i] + width[i]; }
                _ => { l[i] = lo[i]; u[i] = lo[i]; }
            }
        }
        let x0 = Vector::from_shape_fn(n, |i| start[i]);
        let solver = LBfgsB::new(l.clone(), u.clone()).unwrap().try_with_pgtol(1e-9).unwrap().try_with_ftol(0.0).unwrap();
        let (s, rec) = run(Recording::new(DenseQuadratic { a, b }), solver, x0, 2000);
        for (_, x) in rec.calls.borrow().iter() {
            for i in 0..n {
                prop_assert!(x[i] >= l[i] && x[i] <= u[i], "evaluated x[{}] = {} outside [{}, {}]", i, x[i], l[i], u[i]);
            }
        }
        // And the answer is the constrained minimiser (strictly convex: unique KKT point).
        let g = rec.inner.gradient(&s.x).unwrap();
        let scale = 1.0 + rec.inner.b.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        prop_assert!(projected_gradient_norm(&s.x, &g, &l, &u) <= 1e-6 * scale,
            "status {:?}, projected gradient {}", s.status, projected_gradient_norm(&s.x, &g, &l, &u));
    }
}

// ---------------------------------------------------------------------------------------------
// Without bounds it is L-BFGS: same minimiser as argmin's own solver

fn argmin_lbfgs<P>(problem: P, x0: Vector) -> Vector
where
    P: CostFunction<Param = Vector, Output = f64> + Gradient<Param = Vector, Gradient = Vector>,
{
    let solver = LBFGS::new(MoreThuenteLineSearch::new(), 10)
        .with_tolerance_grad(1e-10)
        .unwrap();
    let res = Executor::new(problem, solver)
        .configure(|s| s.param(x0).max_iters(1000))
        .run()
        .unwrap();
    res.state().get_best_param().unwrap().clone()
}

#[test]
fn unbounded_problems_reach_the_same_minimiser_as_argmin_lbfgs() {
    let inf = f64::INFINITY;
    for n in [2usize, 50] {
        let x0 = rosenbrock_start(n);
        let theirs = argmin_lbfgs(Rosenbrock, x0.clone());
        let solver = LBfgsB::new(Vector::from_elem(n, -inf), Vector::from_elem(n, inf))
            .unwrap()
            .try_with_pgtol(1e-10)
            .unwrap()
            .try_with_ftol(0.0)
            .unwrap();
        let (ours, _) = run(Rosenbrock, solver, x0, 5000);
        assert!(converged(&ours.status), "{:?}", ours.status);
        let diff = (&ours.x - &theirs)
            .mapv(f64::abs)
            .fold(0.0, |a: f64, &b| a.max(b));
        assert!(diff < 1e-6, "n = {n}: max difference {diff}");
        assert!((&ours.x - 1.0).iter().all(|v| v.abs() < 1e-6));
    }
    // A dense quadratic with its minimiser away from the origin.
    let n = 30;
    let seed: Vec<f64> = (0..97)
        .map(|i| ((i * 37 % 101) as f64 / 50.0) - 1.0)
        .collect();
    let a = random_spd(n, &seed);
    let c = Vector::from_shape_fn(n, |i| (i as f64).cos() * 3.0);
    let q = DenseQuadratic { b: a.dot(&c), a };
    let theirs = argmin_lbfgs(q.clone(), Vector::zeros(n));
    let solver = LBfgsB::new(Vector::from_elem(n, -inf), Vector::from_elem(n, inf))
        .unwrap()
        .try_with_pgtol(1e-10)
        .unwrap()
        .try_with_ftol(0.0)
        .unwrap();
    let (ours, _) = run(q, solver, Vector::zeros(n), 5000);
    // λ_min(A) ≥ 1: both stop with gradients far below 1e-6, so both are that close to c.
    let diff = (&ours.x - &theirs)
        .mapv(f64::abs)
        .fold(0.0, |a: f64, &b| a.max(b));
    assert!(diff < 1e-6, "quadratic: max difference {diff}");
    assert!((&ours.x - &c).iter().all(|v| v.abs() < 1e-6));
    assert!((&theirs - &c).iter().all(|v| v.abs() < 1e-6));
}

// ---------------------------------------------------------------------------------------------
// Fixed variables, infeasible start, evaluation protocol

#[test]
fn fixed_variables_never_move() {
    let n = 20;
    let (mut l, mut u) = rosenbrock_bounds(n);
    // Fix a few variables, including one whose pair partner is free.
    for &(i, v) in &[(1usize, 0.3), (6, -0.7), (13, 2.0)] {
        l[i] = v;
        u[i] = v;
    }
    let solver = LBfgsB::new(l.clone(), u.clone())
        .unwrap()
        .try_with_pgtol(1e-8)
        .unwrap()
        .try_with_ftol(0.0)
        .unwrap();
    let (s, rec) = run(
        Recording::new(Rosenbrock),
        solver,
        rosenbrock_start(n),
        5000,
    );
    assert!(normal_end(&s.status), "{:?}", s.status);
    for (_, x) in rec.calls.borrow().iter() {
        assert_eq!((x[1], x[6], x[13]), (0.3, -0.7, 2.0));
    }
    let g = Rosenbrock.gradient(&s.x).unwrap();
    assert_kkt(&s.x, &g, &l, &u, 1e-6);
}

#[test]
fn infeasible_start_is_projected_first() {
    let n = 6;
    let (l, u) = rosenbrock_bounds(n);
    let x0 = Vector::from_elem(n, 10.0);
    let (s, rec) = run(
        Recording::new(Rosenbrock),
        LBfgsB::new(l.clone(), u.clone()).unwrap(),
        x0.clone(),
        1000,
    );
    let calls = rec.calls.borrow();
    let first = &calls[0].1;
    let projected = Vector::from_shape_fn(n, |i| x0[i].clamp(l[i], u[i]));
    assert_eq!(first, &projected);
    let fstar = Rosenbrock.cost(&rosenbrock_solution(n)).unwrap();
    assert!((s.f - fstar).abs() < 1e-6, "{} vs {fstar}", s.f);
}

#[test]
fn cost_and_gradient_are_requested_at_the_same_points() {
    let n = 40;
    let (l, u) = rosenbrock_bounds(n);
    let (s, rec) = run(
        Recording::new(Rosenbrock),
        LBfgsB::new(l, u).unwrap(),
        rosenbrock_start(n),
        1000,
    );
    let calls = rec.calls.borrow();
    assert_eq!(calls.len() % 2, 0);
    for pair in calls.chunks(2) {
        assert!(pair[0].0 && !pair[1].0, "cost then gradient");
        assert_eq!(pair[0].1, pair[1].1, "same point");
    }
    assert_eq!(s.cost_count as usize, calls.len() / 2);
    assert_eq!(s.gradient_count, s.cost_count);
    assert!(s.iters > 0);
}

#[test]
fn max_iters_is_honoured() {
    let n = 100;
    let (l, u) = rosenbrock_bounds(n);
    let (s, _) = run(
        Rosenbrock,
        LBfgsB::new(l, u).unwrap(),
        rosenbrock_start(n),
        5,
    );
    assert_eq!(s.iters, 5);
    assert_eq!(
        s.status,
        TerminationStatus::Terminated(TerminationReason::MaxItersReached)
    );
}

#[test]
fn solver_can_be_reused_for_several_runs() {
    let n = 10;
    let (l, u) = rosenbrock_bounds(n);
    let solver = LBfgsB::new(l, u).unwrap().try_with_memory(5).unwrap();
    let (a, _) = run(Rosenbrock, solver.clone(), rosenbrock_start(n), 1000);
    let (b, _) = run(Rosenbrock, solver, rosenbrock_start(n), 1000);
    assert_eq!(a.x, b.x);
    assert_eq!(a.cost_count, b.cost_count);
}

// ---------------------------------------------------------------------------------------------
// Non-finite values

/// A bowl whose cost turns NaN (or the gradient infinite) beyond `x0 > 1`, where the
/// unconstrained minimiser of the bowl lies.
struct Poisoned {
    nan_cost: bool,
}

impl CostFunction for Poisoned {
    type Param = Vector;
    type Output = f64;
    fn cost(&self, x: &Vector) -> Result<f64, ArgminError> {
        if self.nan_cost && x[0] > 1.0 {
            return Ok(f64::NAN);
        }
        Ok((x[0] - 3.0).powi(2) + x[1].powi(2))
    }
}

impl Gradient for Poisoned {
    type Param = Vector;
    type Gradient = Vector;
    fn gradient(&self, x: &Vector) -> Result<Vector, ArgminError> {
        if !self.nan_cost && x[0] > 1.0 {
            return Ok(Vector::from_vec(vec![f64::INFINITY, 0.0]));
        }
        Ok(Vector::from_vec(vec![2.0 * (x[0] - 3.0), 2.0 * x[1]]))
    }
}

#[test]
fn nan_cost_ends_the_run_with_a_reason() {
    for nan_cost in [true, false] {
        let inf = f64::INFINITY;
        let solver = LBfgsB::new(Vector::from_elem(2, -inf), Vector::from_elem(2, inf)).unwrap();
        let (s, _) = run(
            Poisoned { nan_cost },
            solver,
            Vector::from_vec(vec![0.0, 1.0]),
            100,
        );
        assert_eq!(exit_text(&s.status), "non-finite cost or gradient");
        // The reported best point is one where everything was finite.
        assert!(s.f.is_finite() && s.x[0] <= 1.0);
    }
}

#[test]
fn nan_at_the_start_is_reported() {
    let inf = f64::INFINITY;
    let solver = LBfgsB::new(Vector::from_elem(2, -inf), Vector::from_elem(2, inf)).unwrap();
    let res = Executor::new(Poisoned { nan_cost: true }, solver)
        .configure(|s| s.param(Vector::from_vec(vec![2.0, 0.0])).max_iters(10))
        .run()
        .unwrap();
    assert_eq!(
        exit_text(res.state().get_termination_status()),
        "non-finite cost or gradient at the starting point"
    );
    assert_eq!(res.state().get_iter(), 0);
}

// ---------------------------------------------------------------------------------------------
// Invalid input

fn bounds_error(l: Vec<f64>, u: Vec<f64>) -> String {
    match LBfgsB::new(Vector::from_vec(l), Vector::from_vec(u)) {
        Err(LbfgsbError::InvalidBounds(msg)) => msg,
        Err(other) => panic!("wrong error {other:?}"),
        Ok(_) => panic!("accepted invalid bounds"),
    }
}

#[test]
fn invalid_bounds_are_rejected_with_the_offending_index() {
    let inf = f64::INFINITY;
    assert!(bounds_error(vec![0.0, 0.0], vec![1.0]).contains("lower has 2"));
    let m = bounds_error(vec![0.0, f64::NAN], vec![1.0, 1.0]);
    assert!(m.contains("variable 1") && m.contains("NaN"), "{m}");
    let m = bounds_error(vec![0.0, 0.0, 0.0], vec![1.0, 1.0, f64::NAN]);
    assert!(m.contains("variable 2") && m.contains("NaN"), "{m}");
    let m = bounds_error(vec![0.0, 2.0], vec![1.0, 1.0]);
    assert!(m.contains("variable 1") && m.contains("above"), "{m}");
    let m = bounds_error(vec![inf], vec![inf]);
    assert!(m.contains("variable 0") && m.contains("+inf"), "{m}");
    let m = bounds_error(vec![-inf], vec![-inf]);
    assert!(m.contains("variable 0") && m.contains("-inf"), "{m}");
    // Equal bounds are fine: they fix the variable.
    assert!(LBfgsB::new(Vector::from_vec(vec![1.0]), Vector::from_vec(vec![1.0])).is_ok());
}

#[test]
fn invalid_options_are_rejected() {
    let solver = || LBfgsB::new(Vector::zeros(2), Vector::ones(2)).unwrap();
    let is_param = |r: Result<LBfgsB, LbfgsbError>, name: &str| matches!(r, Err(LbfgsbError::InvalidParameter { name: n, .. }) if n == name);
    assert!(is_param(solver().try_with_memory(0), "memory"));
    assert!(is_param(solver().try_with_pgtol(-1e-3), "pgtol"));
    assert!(is_param(solver().try_with_pgtol(f64::NAN), "pgtol"));
    assert!(is_param(solver().try_with_ftol(-1.0), "ftol"));
    assert!(is_param(solver().try_with_ftol(f64::INFINITY), "ftol"));
    assert!(is_param(
        solver().try_with_max_line_search(0),
        "max_line_search"
    ));
    assert!(solver()
        .try_with_memory(3)
        .and_then(|s| s.try_with_pgtol(0.0))
        .is_ok());
    let ls = |ftol, gtol, xtol| solver().with_line_search(ftol, gtol, xtol);
    assert!(is_param(ls(0.0, 0.9, 0.1), "line_search_ftol"));
    assert!(is_param(ls(1.0, 0.9, 0.1), "line_search_ftol"));
    assert!(is_param(ls(f64::NAN, 0.9, 0.1), "line_search_ftol"));
    assert!(is_param(ls(1e-3, 1e-4, 0.1), "line_search_gtol"));
    assert!(is_param(ls(1e-3, 1.0, 0.1), "line_search_gtol"));
    assert!(is_param(ls(1e-3, f64::NAN, 0.1), "line_search_gtol"));
    assert!(is_param(ls(1e-3, 0.9, -0.1), "line_search_xtol"));
    assert!(is_param(ls(1e-3, 0.9, 1.0), "line_search_xtol"));
    assert!(ls(1e-4, 0.1, 0.0).is_ok());
}

/// The documented defaults of `with_line_search` are the defaults: setting them explicitly
/// changes nothing, while a strict curvature test changes the run.
#[test]
fn line_search_constants_default_to_the_reference_values() {
    let run = |solver: LBfgsB| {
        let res = Executor::new(Rosenbrock, solver)
            .configure(|s| s.param(Vector::from_elem(10, -1.2)).max_iters(200))
            .run()
            .unwrap();
        let evals = res.problem.counts["cost_count"];
        (
            res.state().get_cost().to_bits(),
            res.state().get_iter(),
            evals,
        )
    };
    let base = || LBfgsB::new(Vector::from_elem(10, -2.0), Vector::from_elem(10, 2.0)).unwrap();
    let default = run(base());
    assert_eq!(
        run(base().with_line_search(1e-3, 0.9, 0.1).unwrap()),
        default
    );
    assert_ne!(
        run(base().with_line_search(1e-4, 0.1, 0.1).unwrap()),
        default
    );
}

/// `?` in a function returning the crate's `Result` turns the solver's errors into the crate's
/// variants of the same name, message unchanged.
#[test]
fn solver_errors_convert_to_the_crate_error() {
    fn build(memory: usize) -> blindspot::Result<LBfgsB> {
        Ok(LBfgsB::new(Vector::zeros(2), Vector::ones(2))?.try_with_memory(memory)?)
    }
    let Err(err) = build(0) else {
        panic!("memory 0 is accepted")
    };
    let text = err.to_string();
    assert!(
        matches!(err, Error::InvalidParameter { name: "memory", .. }),
        "{err:?}"
    );
    assert_eq!(
        text,
        LbfgsbError::InvalidParameter {
            name: "memory",
            reason: "must be at least 1".into()
        }
        .to_string()
    );
    let err = Error::from(LbfgsbError::InvalidBounds("x".into()));
    assert!(
        matches!(err, Error::InvalidBounds(ref m) if m == "x"),
        "{err:?}"
    );
}

#[test]
fn starting_point_of_the_wrong_length_is_an_error() {
    let solver = LBfgsB::new(Vector::zeros(3), Vector::ones(3)).unwrap();
    let res = Executor::new(Rosenbrock, solver)
        .configure(|s| s.param(Vector::zeros(4)).max_iters(10))
        .run();
    let err = res.err().expect("length mismatch is an error");
    assert!(
        matches!(
            err.downcast_ref::<LbfgsbError>(),
            Some(LbfgsbError::Shape { .. })
        ),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// Warm memory across a sequence of problems

/// The tridiagonal quadratic plus `c/2·‖x‖²`.
struct Shifted {
    q: TridiagonalQuadratic,
    c: f64,
}

impl CostFunction for Shifted {
    type Param = Vector;
    type Output = f64;
    fn cost(&self, x: &Vector) -> Result<f64, ArgminError> {
        Ok(self.q.cost(x)? + 0.5 * self.c * x.dot(x))
    }
}

impl Gradient for Shifted {
    type Param = Vector;
    type Gradient = Vector;
    fn gradient(&self, x: &Vector) -> Result<Vector, ArgminError> {
        Ok(self.q.gradient(x)? + &(x * self.c))
    }
}

/// A search over a penalty weight, solved once with a fresh memory per run and once with the
/// pairs carried over and shifted exactly: both must end at the KKT point of every problem,
/// and carrying the pairs must not cost more evaluations in total.
#[test]
fn warm_memory_with_shifted_pairs_solves_a_penalty_sequence() {
    let n = 300;
    let l = Vector::from_elem(n, -1.0);
    let u = Vector::from_elem(n, 1.0);
    let solver = || {
        LBfgsB::new(l.clone(), u.clone())
            .unwrap()
            .try_with_memory(5)
            .unwrap()
            .try_with_pgtol(1e-6)
            .unwrap()
            .try_with_ftol(0.0)
            .unwrap()
    };
    let weights = [0.0, 5.0, 0.5, 2.0, 1.0];
    let (mut cold_evals, mut warm_evals) = (0, 0);
    let mut warm = solver().with_warm_memory(true);
    let mut last_c: Option<f64> = None;
    let mut x_warm = Vector::zeros(n);
    for &c in &weights {
        let problem = || Shifted {
            q: TridiagonalQuadratic::new(n),
            c,
        };
        let (cold, p) = run(problem(), solver(), Vector::zeros(n), 500);
        assert!(normal_end(&cold.status), "{:?}", cold.status);
        assert_kkt(&cold.x, &p.gradient(&cold.x).unwrap(), &l, &u, 1e-5);
        cold_evals += cold.cost_count;

        if let Some(prev) = last_c {
            let kept = warm.shift_curvature(c - prev);
            assert!(kept > 0, "pairs dropped when moving from c = {prev} to {c}");
        }
        last_c = Some(c);
        let mut res = Executor::new(problem(), warm)
            .configure(|s| s.param(x_warm.clone()).max_iters(500))
            .run()
            .unwrap();
        let state = res.state();
        assert!(
            normal_end(state.get_termination_status()),
            "c = {c}: {:?} after {} iterations, pg {}",
            state.get_termination_status(),
            state.get_iter(),
            projected_gradient_norm(
                state.get_param().unwrap(),
                state.get_gradient().unwrap(),
                &l,
                &u
            )
        );
        x_warm = state.get_param().unwrap().clone();
        let p = res.problem.take_problem().unwrap();
        assert_kkt(&x_warm, &p.gradient(&x_warm).unwrap(), &l, &u, 1e-5);
        let diff = (&x_warm - &cold.x)
            .mapv(f64::abs)
            .fold(0.0, |a: f64, &b| a.max(b));
        assert!(
            diff < 1e-5,
            "c = {c}: warm and cold answers differ by {diff}"
        );
        warm_evals += res.problem.counts["cost_count"];
        warm = res.solver;
    }
    assert!(
        warm_evals <= cold_evals,
        "warm memory {warm_evals} evaluations, cold {cold_evals}"
    );
    // Clearing the memory makes the next run identical to a fresh solver's.
    warm.clear_memory();
    let (fresh, _) = run(
        Shifted {
            q: TridiagonalQuadratic::new(n),
            c: 1.0,
        },
        solver(),
        x_warm.clone(),
        500,
    );
    let res = Executor::new(
        Shifted {
            q: TridiagonalQuadratic::new(n),
            c: 1.0,
        },
        warm,
    )
    .configure(|s| s.param(x_warm.clone()).max_iters(500))
    .run()
    .unwrap();
    assert_eq!(res.state().get_param().unwrap(), &fresh.x);
}
