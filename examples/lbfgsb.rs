//! Minimise the Rosenbrock function over a box that excludes its unconstrained minimiser
//! (1, 1), with blindspot's L-BFGS-B solver for argmin.
//!
//! ```text
//! cargo run --release --example lbfgsb
//! ```

use argmin::core::{CostFunction, Error, Executor, Gradient, State};
use blindspot::optim::LBfgsB;
use ndarray::{array, Array1};

/// f(a, b) = 100 (b − a²)² + (1 − a)².
struct Rosenbrock;

impl CostFunction for Rosenbrock {
    type Param = Array1<f64>;
    type Output = f64;
    fn cost(&self, x: &Array1<f64>) -> Result<f64, Error> {
        Ok(100.0 * (x[1] - x[0] * x[0]).powi(2) + (1.0 - x[0]).powi(2))
    }
}

impl Gradient for Rosenbrock {
    type Param = Array1<f64>;
    type Gradient = Array1<f64>;
    fn gradient(&self, x: &Array1<f64>) -> Result<Array1<f64>, Error> {
        let t = x[1] - x[0] * x[0];
        Ok(array![-400.0 * x[0] * t - 2.0 * (1.0 - x[0]), 200.0 * t])
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // a in [-1.5, 0.8], b only bounded below: the solution sits on a = 0.8 with b = a².
    let solver = LBfgsB::new(array![-1.5, -0.5], array![0.8, f64::INFINITY])?
        .try_with_memory(5)?
        .try_with_pgtol(1e-8)?;
    // The start lies outside the box; the solver projects it first.
    let res = Executor::new(Rosenbrock, solver)
        .configure(|state| state.param(array![-3.0, 2.0]).max_iters(200))
        .run()?;

    let state = res.state();
    let x = state.get_param().expect("solution");
    println!(
        "x = [{:.10}, {:.10}], f = {:.3e}",
        x[0],
        x[1],
        state.get_cost()
    );
    println!(
        "{} iterations, {} evaluations, stopped: {}",
        state.get_iter(),
        res.problem.counts["cost_count"],
        state
            .get_termination_reason()
            .map_or("running", |r| r.text())
    );
    Ok(())
}
