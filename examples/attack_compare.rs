//! Our side of `scripts/compare_attack.py`: the targeted attack (target = (y+1) mod 10) on the
//! first N training images with a saved model, timed on one thread, printed as JSON.
//!
//! ```text
//! cargo run --release --example attack_compare -- --model m.npz --images 200 --memory 15 --max-iters 150
//! cargo run --release --example attack_compare -- --model m.npz --images 20 --batch 0 --via native
//! cargo run --release --example attack_compare --features candle -- --model m.npz --via candle
//! ```
//!
//! One invocation attacks the same images three times, so that the ratios between the runs
//! come from one process on one machine state (timings on a shared machine are noisy between
//! invocations):
//!
//! 1. one image at a time with `Attack::attack`, on a one-thread rayon pool: `ms_per_image_mean`,
//!    `ms_per_image_median`, `success_rate`, `mean_distortion`, `evaluations_per_image`,
//!    `model_calls`;
//! 2. the batched run, also on one thread: `--batch 0` (the default) passes all images to one
//!    `Attack::attack_batch` call, `--batch N` passes chunks of N rows, `--batch 1` attacks
//!    one image at a time with `Attack::attack`. Its figures end in `_batch`
//!    (`ms_per_image_batch`, `success_rate_batch`, `model_calls_batch`, …);
//! 3. all images in one `attack_batch` call on all cores, as before:
//!    `ms_per_image_batch_all_cores`, with `threads`.
//!
//! An image the model already labels as the target (untargeted: already misclassifies) is not
//! searched (`Outcome::already_adversarial`): `already_misclassified` counts them, and
//! `success_rate`, `mean_distortion` and `evaluations_per_image` (and their `_batch` twins) are
//! over the other images; the timings are over all of them. On the zoo's trained models there
//! are usually none.
//!
//! `--via` picks the model the attack sees, all with the loaded weights: `native` (the
//! `Network` itself), `candle` (the same MLP rebuilt in candle behind `CandleModel`; needs
//! `--features candle`) or `finite-difference` (the `Network` behind `FiniteDifference` with its
//! default step, a forward pass only: slow, use few images). Every run goes through
//! `adapters::Counting`, so `model_calls` counts the calls of the model's batched evaluation
//! (`loss_and_input_grad_with`, `logits` and `predict`) the attack made, and
//! `rows_per_model_call` the mean batch size the model saw. Behind finite differences they
//! count the forward model's `logits` calls inside the adapter instead (2·784 perturbed rows
//! per gradient), and `fd_floor_ms_per_image` is the time those forward rows alone take.

use blindspot::attack::BoxLbfgsParams;
use blindspot::Check;
use std::path::PathBuf;
use std::time::Instant;

use blindspot::adapters::{CallCounts, Counting, FiniteDifference, DEFAULT_STEP};
use blindspot::attack::{Attack, BoxLbfgs, Outcome, OutcomeSummary, Target};
use blindspot::data::Mnist;
use blindspot::nn::Network;
use blindspot::Differentiable;
use clap::{Parser, ValueEnum};
use ndarray::{s, ArrayView2};

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
    /// The model the attack sees: the network itself, the same weights in candle, or the
    /// network behind finite differences.
    #[arg(long, value_enum, default_value_t = Via::Native)]
    via: Via,
    /// Rows per `attack_batch` call in the batched run: 0 = all images in one call, 1 = one
    /// image at a time with `attack`.
    #[arg(long, default_value_t = 0)]
    batch: usize,
}

#[derive(Clone, Copy, ValueEnum)]
enum Via {
    Native,
    Candle,
    FiniteDifference,
}

impl Via {
    fn name(self) -> &'static str {
        match self {
            Via::Native => "native",
            Via::Candle => "candle",
            Via::FiniteDifference => "finite-difference",
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let network = Network::load(&args.model)?;
    let mnist = Mnist::load_default()?;
    let summary = match args.via {
        Via::Native => measure(&args, &mnist, network, Counting::counts)?,
        // The calls counted are the forward model's `logits` calls, which the adapter makes
        // for the 2·784 perturbed rows of every gradient.
        Via::FiniteDifference => {
            let fd = FiniteDifference::new(Counting::new(network), DEFAULT_STEP)?;
            let mut summary = measure(&args, &mnist, fd, |m: &Counting<FdNet>| {
                m.model().model().counts()
            })?;
            summary.fd_floor_ms_per_image = Some(fd_floor(&mnist, &args, &summary)?);
            summary
        }
        Via::Candle => via_candle(&args, &mnist, network)?,
    };
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}

#[cfg(feature = "candle")]
fn via_candle(
    args: &Args,
    mnist: &Mnist,
    network: Network,
) -> Result<Summary, Box<dyn std::error::Error>> {
    let model = candle_mlp::CandleMlp::from_network(&network)?;
    let arch = network.arch();
    let model = blindspot::adapters::CandleModel::new(model, &[arch.input()], arch.classes())?;
    measure(args, mnist, model, Counting::counts)
}

#[cfg(not(feature = "candle"))]
fn via_candle(
    _args: &Args,
    _mnist: &Mnist,
    _network: Network,
) -> Result<Summary, Box<dyn std::error::Error>> {
    Err(
        "--via candle needs the candle adapter: run with `--features candle`, e.g. \
         `cargo run --release --example attack_compare --features candle -- --via candle …`"
            .into(),
    )
}

type FdNet = FiniteDifference<Counting<Network>>;

/// The floor of a finite-difference attack: the time of the forward passes alone, 2·784 rows
/// per gradient at the batched run's evaluations per image, timed as one `logits` call on
/// 2·784 rows (median of 21) on one thread.
fn fd_floor(
    mnist: &Mnist,
    args: &Args,
    summary: &Summary,
) -> Result<f64, Box<dyn std::error::Error>> {
    use blindspot::Classifier;
    let network = Network::load(&args.model)?;
    let x = mnist.train.images().row(0).to_owned();
    let rows = ndarray::Array2::from_shape_fn((2 * x.len(), x.len()), |(_, j)| x[j]);
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build()?;
    let mut times = one.install(|| -> blindspot::Result<Vec<f64>> {
        (0..21)
            .map(|_| {
                let start = Instant::now();
                network.logits(rows.view())?;
                Ok(start.elapsed().as_secs_f64())
            })
            .collect()
    })?;
    times.sort_by(f64::total_cmp);
    Ok(1e3 * times[times.len() / 2] * summary.evaluations_per_image_batch)
}

/// The three runs of the module docs on `model`, with `counts` reading the calls counted so far
/// (the attacked model's, or for finite differences the forward model's inside it).
fn measure<M: Differentiable>(
    args: &Args,
    mnist: &Mnist,
    model: M,
    counts: impl Fn(&Counting<M>) -> CallCounts,
) -> Result<Summary, Box<dyn std::error::Error>> {
    let model = Counting::new(model);
    let attack = BoxLbfgsParams::default()
        .with_memory(args.memory)
        .with_max_iters(args.max_iters)
        .with_tolerances(args.pgtol, args.ftol)
        .with_search_steps(args.search_steps)
        .with_warm_memory(!args.cold_memory)
        .check()?;
    let n = args.images.min(mnist.train.len());
    if n == 0 {
        return Err("--images must be at least 1".into());
    }
    let images = mnist.train.images();
    let xs = images.slice(s![..n, ..]);
    let labels = &mnist.train.labels()[..n];
    let targets: Vec<Target> = labels
        .iter()
        .map(|&y| {
            if args.untargeted {
                Target::Untargeted
            } else {
                Target::Label((y + 1) % 10)
            }
        })
        .collect();
    // One thread for runs 1 and 2: attack_batch's rayon loop runs sequentially in it, and so
    // does any rayon parallelism inside the model (candle's CPU kernels).
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build()?;

    // 1. One image at a time, each timed.
    let before = counts(&model);
    let mut times = Vec::with_capacity(n);
    let mut single = Vec::with_capacity(n);
    one.install(|| -> blindspot::Result<()> {
        for i in 0..n {
            let start = Instant::now();
            single.push(attack.attack(&model, xs.row(i), labels[i], targets[i])?);
            times.push(start.elapsed().as_secs_f64());
        }
        Ok(())
    })?;
    let single_calls = counts(&model).since(&before);
    let total: f64 = times.iter().sum();
    times.sort_by(|a, b| a.total_cmp(b));

    // 2. Batched, in chunks of `--batch` rows.
    let chunk = if args.batch == 0 {
        n
    } else {
        args.batch.min(n)
    };
    let before = counts(&model);
    let start = Instant::now();
    let batched = one.install(|| batched_run(&attack, &model, xs, labels, &targets, chunk))?;
    let batch_seconds = start.elapsed().as_secs_f64();
    let batch_calls = counts(&model).since(&before);

    // 3. All images in one attack_batch call, on all cores.
    let start = Instant::now();
    attack.attack_batch(&model, xs, labels, &targets)?;
    let all_cores = start.elapsed().as_secs_f64();

    let (s1, sb) = (OutcomeSummary::of(&single), OutcomeSummary::of(&batched));
    let ms_per_image_mean = 1e3 * total / n as f64;
    let ms_per_image_batch = 1e3 * batch_seconds / n as f64;
    Ok(Summary {
        images: n,
        already_misclassified: s1.already_adversarial,
        success_rate: s1.success_rate,
        mean_distortion: s1.mean_distortion,
        evaluations_per_image: s1.evaluations_per_image,
        ms_per_image_mean,
        ms_per_image_median: 1e3 * times[n / 2],
        ms_per_image_batch_all_cores: 1e3 * all_cores / n as f64,
        threads: rayon::current_num_threads(),
        via: args.via.name(),
        model_calls: single_calls.calls(),
        model_calls_per_image: single_calls.calls() as f64 / n as f64,
        rows_per_model_call: rows_per_call(&single_calls),
        calls: single_calls,
        batch: chunk,
        ms_per_image_batch,
        success_rate_batch: sb.success_rate,
        mean_distortion_batch: sb.mean_distortion,
        evaluations_per_image_batch: sb.evaluations_per_image,
        model_calls_batch: batch_calls.calls(),
        model_calls_per_image_batch: batch_calls.calls() as f64 / n as f64,
        rows_per_model_call_batch: rows_per_call(&batch_calls),
        calls_batch: batch_calls,
        batch_over_single_time: ms_per_image_batch / ms_per_image_mean,
        same_outcomes: single == batched,
        fd_floor_ms_per_image: None,
    })
}

/// The attack on all rows, `chunk` rows per `attack_batch` call (`attack` per row for 1).
fn batched_run<M: Differentiable>(
    attack: &BoxLbfgs,
    model: &M,
    xs: ArrayView2<'_, f32>,
    labels: &[usize],
    targets: &[Target],
    chunk: usize,
) -> blindspot::Result<Vec<Outcome>> {
    let mut outs = Vec::with_capacity(xs.nrows());
    for start in (0..xs.nrows()).step_by(chunk) {
        let end = (start + chunk).min(xs.nrows());
        if chunk == 1 {
            outs.push(attack.attack(model, xs.row(start), labels[start], targets[start])?);
        } else {
            outs.extend(attack.attack_batch(
                model,
                xs.slice(s![start..end, ..]),
                &labels[start..end],
                &targets[start..end],
            )?);
        }
    }
    Ok(outs)
}

fn rows_per_call(c: &CallCounts) -> f64 {
    c.rows() as f64 / c.calls().max(1) as f64
}

/// The printed result, read by `scripts/compare_attack.py`. Unsuffixed figures are run 1
/// (one image at a time), `_batch` ones run 2, `_all_cores` run 3 (see the module docs).
#[derive(serde::Serialize)]
struct Summary {
    images: usize,
    /// Images already labelled as the target (untargeted: misclassified), not searched and
    /// left out of the success rates, mean distortions and evaluations per image.
    already_misclassified: usize,
    /// Over the searched images.
    success_rate: f64,
    /// Over the successful searched images.
    mean_distortion: f64,
    /// Over the searched images.
    evaluations_per_image: f64,
    ms_per_image_mean: f64,
    ms_per_image_median: f64,
    ms_per_image_batch_all_cores: f64,
    threads: usize,
    /// The model the attack saw: native, candle or finite-difference.
    via: &'static str,
    /// Calls of the model's batched evaluation (gradient, logits and predict) in run 1.
    model_calls: u64,
    model_calls_per_image: f64,
    /// Mean rows per model call in run 1.
    rows_per_model_call: f64,
    /// Run 1's calls and rows, forward and gradient apart.
    calls: CallCounts,
    /// Rows per `attack_batch` call in run 2 (`--batch`, 0 resolved to all images).
    batch: usize,
    ms_per_image_batch: f64,
    success_rate_batch: f64,
    mean_distortion_batch: f64,
    evaluations_per_image_batch: f64,
    model_calls_batch: u64,
    model_calls_per_image_batch: f64,
    rows_per_model_call_batch: f64,
    calls_batch: CallCounts,
    /// `ms_per_image_batch / ms_per_image_mean`, both from this run.
    batch_over_single_time: f64,
    /// Whether runs 1 and 2 returned identical outcomes.
    same_outcomes: bool,
    /// `--via finite-difference` only: the forward passes' share of a gradient-free attack,
    /// 2·784 forward rows per evaluation at run 2's evaluations per image, in ms per image.
    #[serde(skip_serializing_if = "Option::is_none")]
    fd_floor_ms_per_image: Option<f64>,
}

/// The loaded network's dense layers rebuilt in candle from its weights.
#[cfg(feature = "candle")]
mod candle_mlp {
    use blindspot::adapters::tensor_from_array;
    use blindspot::nn::{Activation, Network};
    use candle_core::{Device, Module, Tensor};
    use candle_nn::Linear;

    pub struct CandleMlp {
        layers: Vec<Linear>,
        activation: Activation,
    }

    impl CandleMlp {
        /// The MLP with `network`'s weights (candle's `Linear` stores them `out × in`).
        /// Convolutional networks and input normalisation are not rebuilt: an error.
        pub fn from_network(network: &Network) -> Result<Self, Box<dyn std::error::Error>> {
            if network.arch().is_conv() || network.input_affine().is_some() {
                return Err(format!(
                    "--via candle rebuilds dense networks only; {} has convolutions or an \
                     input normalisation",
                    network.arch()
                )
                .into());
            }
            let dev = Device::Cpu;
            let layers = (0..network.num_dense())
                .map(|l| {
                    let (w, b) = match (network.weights(l), network.bias(l)) {
                        (Some(w), Some(b)) => (w, b),
                        _ => return Err(format!("dense layer {l} is missing").into()),
                    };
                    let w = tensor_from_array(w.t(), &dev)?;
                    let b =
                        tensor_from_array(b.insert_axis(ndarray::Axis(0)), &dev)?.flatten_all()?;
                    Ok(Linear::new(w, Some(b)))
                })
                .collect::<Result<_, Box<dyn std::error::Error>>>()?;
            Ok(CandleMlp {
                layers,
                activation: network.arch().activation(),
            })
        }
    }

    impl Module for CandleMlp {
        fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
            let mut a = x.clone();
            for (l, layer) in self.layers.iter().enumerate() {
                a = layer.forward(&a)?;
                if l + 1 < self.layers.len() {
                    a = match self.activation {
                        Activation::Sigmoid => candle_nn::ops::sigmoid(&a)?,
                        Activation::Tanh => a.tanh()?,
                        Activation::Relu => a.relu()?,
                        Activation::Identity => a,
                    };
                }
            }
            Ok(a)
        }
    }
}
