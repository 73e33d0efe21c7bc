//! Our side of `scripts/compare_attack.py`: the targeted attack (target = (y+1) mod 10) on the
//! first N training images with a saved model, timed per image on one thread, printed as JSON.
//!
//! ```text
//! cargo run --release --example attack_compare -- --model m.npz --images 200 --memory 15 --max-iters 150
//! ```

use std::path::PathBuf;
use std::time::Instant;

use blindspot::attack::{Attack, BoxLbfgs, Target};
use blindspot::data::Mnist;
use blindspot::nn::Network;
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Saved model (.npz).
    #[arg(long)]
    model: PathBuf,
    /// Number of training images attacked.
    #[arg(long, default_value_t = 200)]
    images: usize,
    /// L-BFGS-B memory.
    #[arg(long, default_value_t = 5)]
    memory: usize,
    /// Iteration limit per solve.
    #[arg(long, default_value_t = 150)]
    max_iters: u64,
    /// L-BFGS-B projected-gradient tolerance.
    #[arg(long, default_value_t = 1e-5)]
    pgtol: f64,
    /// L-BFGS-B relative-reduction tolerance.
    #[arg(long, default_value_t = 3e-6)]
    ftol: f64,
    /// Attack untargeted (smallest perturbation over all other labels) instead of y+1.
    #[arg(long)]
    untargeted: bool,
    /// Start every solve with an empty L-BFGS-B memory.
    #[arg(long)]
    cold_memory: bool,
    /// Bisection steps on c.
    #[arg(long, default_value_t = 5)]
    search_steps: usize,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let model = Network::load(&args.model)?;
    let mnist = Mnist::load_default()?;
    let attack = BoxLbfgs::params()
        .with_memory(args.memory)
        .with_max_iters(args.max_iters)
        .with_tolerances(args.pgtol, args.ftol)
        .with_search_steps(args.search_steps)
        .with_warm_memory(!args.cold_memory)
        .check()?;
    let images = mnist.train.images();
    let labels = mnist.train.labels();
    let n = args.images.min(mnist.train.len());
    let mut times = Vec::with_capacity(n);
    let (mut evals, mut successes, mut dist) = (0usize, 0usize, 0.0f64);
    for (i, &y) in labels[..n].iter().enumerate() {
        let start = Instant::now();
        let target = if args.untargeted {
            Target::Untargeted
        } else {
            Target::Label((y + 1) % 10)
        };
        let out = attack.attack(&model, images.row(i), y, target)?;
        times.push(start.elapsed().as_secs_f64());
        evals += out.evaluations;
        if out.success {
            successes += 1;
            dist += out.distortion;
        }
    }
    let total: f64 = times.iter().sum();
    times.sort_by(|a, b| a.total_cmp(b));
    // The same images attacked in parallel (rayon, all cores).
    let xs = images.slice(ndarray::s![..n, ..]);
    let targets: Vec<Target> = labels[..n]
        .iter()
        .map(|&y| {
            if args.untargeted {
                Target::Untargeted
            } else {
                Target::Label((y + 1) % 10)
            }
        })
        .collect();
    let start = Instant::now();
    attack.attack_batch(&model, xs, &labels[..n], &targets)?;
    let batch = start.elapsed().as_secs_f64();
    let summary = Summary {
        images: n,
        success_rate: successes as f64 / n as f64,
        mean_distortion: dist / successes.max(1) as f64,
        evaluations_per_image: evals as f64 / n as f64,
        ms_per_image_mean: 1e3 * total / n as f64,
        ms_per_image_median: 1e3 * times[n / 2],
        ms_per_image_batch_all_cores: 1e3 * batch / n as f64,
        threads: rayon::current_num_threads(),
    };
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}

/// The printed result, read by `scripts/compare_attack.py`.
#[derive(serde::Serialize)]
struct Summary {
    images: usize,
    success_rate: f64,
    /// Over the successful attacks.
    mean_distortion: f64,
    evaluations_per_image: f64,
    ms_per_image_mean: f64,
    ms_per_image_median: f64,
    ms_per_image_batch_all_cores: f64,
    threads: usize,
}
