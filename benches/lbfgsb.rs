//! Full L-BFGS-B solves of the extended Rosenbrock function with active bounds, n = 1,000 and
//! 100,000 (the sizes of the crate's attack and of a large problem), default tolerances.
//!
//! ```text
//! cargo bench --bench lbfgsb
//! ```

use std::time::Duration;

use argmin::core::{CostFunction, Error, Executor, Gradient};
use blindspot::optim::LBfgsB;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use ndarray::Array1;

/// Extended Rosenbrock: `Σ_k 100 (x_{2k+1} − x_{2k}²)² + (1 − x_{2k})²`.
struct Rosenbrock;

impl CostFunction for Rosenbrock {
    type Param = Array1<f64>;
    type Output = f64;
    fn cost(&self, x: &Array1<f64>) -> Result<f64, Error> {
        let x = x.as_slice().expect("contiguous");
        Ok(x.chunks_exact(2)
            .map(|p| 100.0 * (p[1] - p[0] * p[0]).powi(2) + (1.0 - p[0]).powi(2))
            .sum())
    }
}

impl Gradient for Rosenbrock {
    type Param = Array1<f64>;
    type Gradient = Array1<f64>;
    fn gradient(&self, x: &Array1<f64>) -> Result<Array1<f64>, Error> {
        let xs = x.as_slice().expect("contiguous");
        let mut g = Array1::zeros(xs.len());
        let gs = g.as_slice_mut().expect("contiguous");
        for (p, q) in xs.chunks_exact(2).zip(gs.chunks_exact_mut(2)) {
            let t = p[1] - p[0] * p[0];
            q[0] = -400.0 * p[0] * t - 2.0 * (1.0 - p[0]);
            q[1] = 200.0 * t;
        }
        Ok(g)
    }
}

/// Same bounds as the tests and the SciPy comparison: by pair `k`, `x_{2k} ≤ 0.5`
/// (k ≡ 0 mod 3) or `x_{2k} ≥ 1.2` (k ≡ 1 mod 3), both active at the solution.
fn bounds(n: usize) -> (Array1<f64>, Array1<f64>) {
    let mut l = Array1::from_elem(n, f64::NEG_INFINITY);
    let mut u = Array1::from_elem(n, f64::INFINITY);
    for k in 0..n / 2 {
        match k % 3 {
            0 => u[2 * k] = 0.5,
            1 => l[2 * k] = 1.2,
            _ if k % 5 == 2 => {
                for i in [2 * k, 2 * k + 1] {
                    l[i] = -2.0;
                    u[i] = 2.0;
                }
            }
            _ => {}
        }
    }
    (l, u)
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("lbfgsb extended Rosenbrock (bounded)");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(8));
    for n in [1_000usize, 100_000] {
        let (l, u) = bounds(n);
        let x0 = Array1::from_shape_fn(n, |i| if i % 2 == 0 { -1.2 } else { 1.0 });
        let solver = LBfgsB::new(l, u).expect("valid bounds");
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                let res = Executor::new(Rosenbrock, solver.clone())
                    .configure(|s| s.param(x0.clone()).max_iters(10_000))
                    .run()
                    .expect("solve");
                assert!(res.state.best_cost.is_finite());
                res
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
