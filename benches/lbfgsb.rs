//! Full L-BFGS-B solves of the extended Rosenbrock function with active bounds, n = 1,000 and
//! 100,000 (the sizes of the crate's attack and of a large problem), default tolerances.
//!
//! ```text
//! cargo bench --bench lbfgsb
//! ```

use std::time::Duration;

use argmin::core::Executor;
use blindspot::optim::LBfgsB;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

// The problem the tests solve: one definition, so the bench times what the tests check.
#[path = "../tests/common/rosenbrock.rs"]
mod rosenbrock;
use rosenbrock::{rosenbrock_bounds, rosenbrock_start, Rosenbrock};

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("lbfgsb extended Rosenbrock (bounded)");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(8));
    for n in [1_000usize, 100_000] {
        let (l, u) = rosenbrock_bounds(n);
        let x0 = rosenbrock_start(n);
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
