//! Solves the L-BFGS-B comparison problems and prints one JSON object per problem (final
//! cost, evaluations, iterations, median wall time). `scripts/compare_lbfgsb.py` runs this
//! next to SciPy's `minimize(method="L-BFGS-B")` on the same problems, starts and bounds.
//!
//! ```text
//! cargo run --release --example lbfgsb_compare -- [repetitions]
//! ```

use std::time::Instant;

use argmin::core::{CostFunction, Error, Executor, Gradient, State};
use blindspot::optim::LBfgsB;
use ndarray::Array1;

// The extended Rosenbrock problem of the tests and the benchmark (its bounds are those of
// scripts/compare_lbfgsb.py): one definition, so the comparison runs what the tests check.
#[path = "../tests/common/rosenbrock.rs"]
mod rosenbrock;
use rosenbrock::{rosenbrock_bounds, rosenbrock_start, Rosenbrock};

/// `½ xᵀAx − bᵀx` with `A = tridiag(−1, 3 + (i mod 10)/2, −1)`, `b_i = 10 sin(i + 1)`,
/// over `[−1, 1]ⁿ`.
struct Quadratic {
    diag: Vec<f64>,
    b: Vec<f64>,
}

impl Quadratic {
    fn new(n: usize) -> Self {
        Quadratic {
            diag: (0..n).map(|i| 3.0 + (i % 10) as f64 * 0.5).collect(),
            b: (0..n).map(|i| 10.0 * ((i + 1) as f64).sin()).collect(),
        }
    }
    fn ax(&self, x: &[f64], out: &mut [f64]) {
        let n = x.len();
        for i in 0..n {
            let mut v = self.diag[i] * x[i];
            if i > 0 {
                v -= x[i - 1];
            }
            if i + 1 < n {
                v -= x[i + 1];
            }
            out[i] = v;
        }
    }
}

impl CostFunction for Quadratic {
    type Param = Array1<f64>;
    type Output = f64;
    fn cost(&self, x: &Array1<f64>) -> Result<f64, Error> {
        let xs = x.as_slice().expect("contiguous");
        let mut ax = vec![0.0; xs.len()];
        self.ax(xs, &mut ax);
        Ok((0..xs.len())
            .map(|i| 0.5 * xs[i] * ax[i] - self.b[i] * xs[i])
            .sum())
    }
}

impl Gradient for Quadratic {
    type Param = Array1<f64>;
    type Gradient = Array1<f64>;
    fn gradient(&self, x: &Array1<f64>) -> Result<Array1<f64>, Error> {
        let xs = x.as_slice().expect("contiguous");
        let mut g = Array1::zeros(xs.len());
        let gs = g.as_slice_mut().expect("contiguous");
        self.ax(xs, gs);
        for (gi, bi) in gs.iter_mut().zip(&self.b) {
            *gi -= bi;
        }
        Ok(g)
    }
}

/// The printed line of one problem, read by `scripts/compare_lbfgsb.py`.
#[derive(serde::Serialize)]
struct Line {
    problem: &'static str,
    n: usize,
    #[serde(flatten)]
    outcome: Outcome,
    median_seconds: f64,
}

/// What the solver did on one problem: the `cost`, `evals`, `iters` and `reason` of a [`Line`].
#[derive(serde::Serialize)]
struct Outcome {
    cost: f64,
    evals: u64,
    iters: u64,
    reason: String,
}

fn solve<P>(problem: P, lower: &Array1<f64>, upper: &Array1<f64>, x0: &Array1<f64>) -> Outcome
where
    P: CostFunction<Param = Array1<f64>, Output = f64>
        + Gradient<Param = Array1<f64>, Gradient = Array1<f64>>,
{
    let solver = LBfgsB::new(lower.clone(), upper.clone()).expect("valid bounds");
    let res = Executor::new(problem, solver)
        .configure(|s| s.param(x0.clone()).max_iters(100_000))
        .run()
        .expect("solver runs");
    Outcome {
        cost: res.state().get_best_cost(),
        evals: res.problem.counts.get("cost_count").copied().unwrap_or(0),
        iters: res.state().get_iter(),
        reason: res
            .state()
            .get_termination_reason()
            .map(|r| r.text().to_string())
            .unwrap_or_default(),
    }
}

fn timed<P, F>(
    make: F,
    lower: &Array1<f64>,
    upper: &Array1<f64>,
    x0: &Array1<f64>,
    reps: usize,
) -> (Outcome, f64)
where
    P: CostFunction<Param = Array1<f64>, Output = f64>
        + Gradient<Param = Array1<f64>, Gradient = Array1<f64>>,
    F: Fn() -> P,
{
    let mut times = Vec::with_capacity(reps);
    let mut out = None;
    for _ in 0..reps {
        let problem = make();
        let t = Instant::now();
        let o = solve(problem, lower, upper, x0);
        times.push(t.elapsed().as_secs_f64());
        out = Some(o);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    (
        out.expect("at least one repetition"),
        times[times.len() / 2],
    )
}

fn main() {
    let reps: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5)
        .max(1);
    let mut rows = Vec::new();
    for n in [2usize, 100, 1000, 10_000] {
        let (l, u) = rosenbrock_bounds(n);
        let x0 = rosenbrock_start(n);
        let (o, t) = timed(|| Rosenbrock, &l, &u, &x0, reps);
        rows.push(("rosenbrock", n, o, t));
    }
    {
        // No bounds at all: the solver's plain L-BFGS path.
        let n = 1000;
        let l = Array1::from_elem(n, f64::NEG_INFINITY);
        let u = Array1::from_elem(n, f64::INFINITY);
        let (o, t) = timed(|| Rosenbrock, &l, &u, &rosenbrock_start(n), reps);
        rows.push(("rosenbrock-unbounded", n, o, t));
    }
    {
        let n = 1000;
        let l = Array1::from_elem(n, -1.0);
        let u = Array1::from_elem(n, 1.0);
        let x0 = Array1::zeros(n);
        let (o, t) = timed(|| Quadratic::new(n), &l, &u, &x0, reps);
        rows.push(("quadratic", n, o, t));
    }
    for (name, n, o, t) in rows {
        let v = Line {
            problem: name,
            n,
            outcome: o,
            median_seconds: t,
        };
        let v = serde_json::to_string(&v).expect("serialisable");
        println!("{v}");
    }
}
