//! The extended Rosenbrock function and the bounded problem built on it: shared by the
//! L-BFGS-B tests (tests/lbfgsb.rs), its benchmark (benches/lbfgsb.rs) and the SciPy comparison
//! (examples/lbfgsb_compare.rs, mirrored in scripts/compare_lbfgsb.py). The bench and the
//! example include this file by `#[path]`, so it uses nothing else from tests/common.
#![allow(dead_code)]

use argmin::core::{CostFunction, Error, Gradient};
use ndarray::Array1;

/// Extended Rosenbrock: `Σ_k 100 (x_{2k+1} − x_{2k}²)² + (1 − x_{2k})²` over the pairs
/// `(x_{2k}, x_{2k+1})`; a last unpaired coordinate (odd length) is ignored. Evaluated on the
/// contiguous slice: the benchmark times solves at n = 100,000, where an indexed loop's bounds
/// checks would show.
#[derive(Clone, Copy, Debug)]
pub struct Rosenbrock;

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

/// Bounds by pair `k = i / 2`: `x_{2k} ≤ 0.5` for `k ≡ 0 (mod 3)` (active, solution
/// `(0.5, 0.25)`), `x_{2k} ≥ 1.2` for `k ≡ 1 (mod 3)` (active, solution `(1.2, 1.44)`), both
/// variables in `[−2, 2]` for `k ≡ 2 (mod 3)` with `k ≡ 2 (mod 5)` (inactive), no bounds
/// otherwise. Each pair then has a single KKT point, so every solver must reach the same
/// minimiser, [`rosenbrock_solution`].
pub fn rosenbrock_bounds(n: usize) -> (Array1<f64>, Array1<f64>) {
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

/// Minimiser of each bounded pair, worked out by hand: with `x_{2k}` pinned at `a` the best
/// `x_{2k+1}` is `a²`, and `(1 − a)²` is monotone on each side of 1.
pub fn rosenbrock_solution(n: usize) -> Array1<f64> {
    let mut x = Array1::ones(n);
    for k in 0..n / 2 {
        let a = match k % 3 {
            0 => 0.5,
            1 => 1.2,
            _ => 1.0,
        };
        x[2 * k] = a;
        x[2 * k + 1] = a * a;
    }
    x
}

/// The classic start `(−1.2, 1, −1.2, 1, …)`.
pub fn rosenbrock_start(n: usize) -> Array1<f64> {
    Array1::from_shape_fn(n, |i| if i % 2 == 0 { -1.2 } else { 1.0 })
}
