//! Adversarial training as the paper did it (§4.1–4.2), beside its comparison points, on
//! FC100-100-10: each method trained from seeds 1..=N, then measured on test error and on the
//! mean minimal distortion the untargeted box-constrained L-BFGS attack needs to fool it.
//!
//! ```text
//! cargo run --release --example adversarial_training -- --json out/advtrain.json
//! cargo run --release --example adversarial_training -- --methods weight_decay,layerwise --seeds 1 --epochs 5
//! ```
//!
//! Methods (all with the crate's FC recipe and the model's weight decay, same seeds):
//! - `weight_decay`: plain training, the paper's 1.6% baseline;
//! - `dropout`: inverted dropout on both hidden layers (`--dropout`), the paper's ~1.3%;
//! - `input_pool`: a pool of adversarial inputs (level 0), training the whole network;
//! - `pool_hidden1`, `pool_hidden2`: one pool at the output of hidden layer 1 or 2, training
//!   the layers above it;
//! - `layerwise`: pools at every level (the input and both hidden layers), the paper's method
//!   (its < 1.2%);
//! - `layerwise_mixed`: the same pools, their rows mixed into the clean batch under one
//!   momentum update (`PoolUpdate::Mixed`) instead of a pool step of their own;
//! - `fgsm`: one-step adversarial training, ½J(x) + ½J(x + ε sign ∇J) (`--fgsm-epsilon`);
//! - `fgsm_dropout`: `fgsm` with `dropout`'s rates on the hidden layers (the two regularisers
//!   that helped, together).
//!
//! The pools' schedule is `blindspot::adversarial_training`'s: after every clean batch one
//! pool batch, levels in turn; pools refreshed every `--refresh-every` batches.
//!
//! The test images a trained model already misclassifies are not searched (the attack returns
//! them unchanged, `Outcome::already_adversarial`): each run counts them
//! (`already_misclassified`, their indices in `already_misclassified_images`), and its mean
//! minimal distortion and success rate are over the other images. Its `min_distortions` keep
//! every image, 0 for those, so that the robust-accuracy curves start at the clean accuracy.

use blindspot::attack::BoxLbfgsParams;
use blindspot::Check;
use std::path::PathBuf;
use std::time::Instant;

use blindspot::adversarial_training::{
    train_with_fgsm, train_with_pools, AdversarialProgress, AdversarialReport, FgsmTrainParams,
    PoolTarget, PoolTrainParams, PoolUpdate,
};
use blindspot::attack::{Attack, BoxLbfgs, OutcomeSummary, Target};
use blindspot::data::{Dataset, Mnist};
use blindspot::nn::{train, Architecture, Network};
use clap::Parser;

const METHODS: [&str; 9] = [
    "weight_decay",
    "dropout",
    "input_pool",
    "pool_hidden1",
    "pool_hidden2",
    "layerwise",
    "layerwise_mixed",
    "fgsm",
    "fgsm_dropout",
];

#[derive(Parser)]
#[command(
    about = "Adversarial training of FC100-100-10 against its comparison points (Szegedy et al. 2013, §4.1-4.2)"
)]
struct Args {
    /// Model (an FC name with sigmoid units).
    #[arg(long, default_value = "FC100-100-10")]
    model: String,
    /// Methods, comma-separated (default: all).
    #[arg(long, value_delimiter = ',')]
    methods: Option<Vec<String>>,
    /// Seeds 1..=N for every method.
    #[arg(long, default_value_t = 3)]
    seeds: u64,
    /// Epochs of every run (default: the recipe's).
    #[arg(long)]
    epochs: Option<usize>,
    /// Train on the first N training images only (default: all 60,000).
    #[arg(long)]
    train_images: Option<usize>,
    /// Examples in each pool.
    #[arg(long, default_value_t = 6000)]
    pool_size: usize,
    /// Clean batches between pool refreshes (fresher pools hurt in results/adversarial_training).
    #[arg(long, default_value_t = 2000)]
    refresh_every: usize,
    /// Fraction of each pool replaced at each refresh.
    #[arg(long, default_value_t = 0.1)]
    refresh_fraction: f32,
    /// Clean steps per pool step.
    #[arg(long, default_value_t = 1)]
    pool_every: usize,
    /// Factor on the learning rate of pool steps, in (0, 1].
    #[arg(long, default_value_t = 1.0)]
    pool_weight: f32,
    /// Clean epochs before the pools are made (and before FGSM starts).
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// L-BFGS-B iterations per solve of the pools' attack.
    #[arg(long, default_value_t = 30)]
    attack_iters: u64,
    /// Bisection steps on c of the pools' attack (0: one solve at the initial c; more make the
    /// examples closer to minimal, at that many times the cost).
    #[arg(long, default_value_t = 5)]
    attack_search_steps: usize,
    /// Dropout rate of each hidden layer for `dropout`.
    #[arg(long, default_value_t = 0.2)]
    dropout: f32,
    /// ε of `fgsm` (pixels in [0, 1]).
    #[arg(long, default_value_t = 0.1)]
    fgsm_epsilon: f32,
    /// Test images attacked (untargeted, full-strength box L-BFGS) for the mean minimal
    /// distortion.
    #[arg(long, default_value_t = 1000)]
    images: usize,
    /// Write every figure as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Draw the learning curves and robust-accuracy curves (SVG and PNG) into this directory
    /// (needs `--features plot`).
    #[arg(long)]
    plots: Option<PathBuf>,
    /// Draw the figures from JSON files this example wrote (comma-separated, their rows
    /// pooled), with `--plots`, without training.
    #[arg(long, value_delimiter = ',')]
    replot: Option<Vec<PathBuf>>,
}

/// Learning curves (test error per epoch, mean ± sd over seeds) and robust-accuracy curves
/// (from each run's per-image minimal distortions, seeds pooled) of `rows`, into `dir`.
#[cfg(feature = "plot")]
fn plots(rows: &[Run], dir: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    use blindspot::plot::{learning_curves, robust_accuracy};
    let methods = methods_of(rows);
    fn of<'a>(rows: &'a [Run], m: &'a str) -> impl Iterator<Item = &'a Run> {
        rows.iter().filter(move |r| r.method == m)
    }
    let curves: Vec<(String, Vec<Vec<f64>>)> = methods
        .iter()
        .map(|m| {
            let runs = of(rows, m)
                .map(|r| {
                    r.test_error_per_epoch
                        .iter()
                        .map(|&e| f64::from(e))
                        .collect()
                })
                .filter(|c: &Vec<f64>| !c.is_empty())
                .collect();
            (m.clone(), runs)
        })
        .collect();
    learning_curves(
        "FC100-100-10: test error per epoch (mean ± sd over seeds)",
        &curves,
    )?
    .save(dir, "learning_curves")?;
    let robust: Vec<(String, Vec<f64>)> = methods
        .iter()
        .map(|m| {
            let d: Vec<f64> = of(rows, m)
                .flat_map(|r| r.min_distortions.iter().map(|d| d.unwrap_or(f64::INFINITY)))
                .collect();
            (m.clone(), d)
        })
        .filter(|(_, d)| !d.is_empty())
        .collect();
    if !robust.is_empty() {
        robust_accuracy(
            "FC100-100-10 by training method: test accuracy under the untargeted attack",
            &robust,
            0.12,
            120,
        )?
        .save(dir, "robust_accuracy")?;
    }
    println!("figures written to {}", dir.display());
    Ok(())
}

#[cfg(not(feature = "plot"))]
fn plots(_: &[Run], _: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    Err("--plots needs the plot feature: cargo run --release --features plot --example adversarial_training".into())
}

/// The untargeted attack on the first `n` test images: each image's minimal distortion
/// (`None` where it failed, 0 where the model already misclassified it), the indices of the
/// images already misclassified, and the figures over the others.
struct Robustness {
    per_image: Vec<Option<f64>>,
    already: Vec<usize>,
    summary: OutcomeSummary,
}

fn robustness(model: &Network, test: &Dataset, n: usize) -> blindspot::Result<Robustness> {
    let n = n.clamp(1, test.len());
    let xs = test.images().slice(ndarray::s![..n, ..]).to_owned();
    let labels = &test.labels()[..n];
    let outs =
        BoxLbfgs::new().attack_batch(model, xs.view(), labels, &vec![Target::Untargeted; n])?;
    Ok(Robustness {
        per_image: outs
            .iter()
            .map(|o| o.success.then_some(o.distortion))
            .collect(),
        already: (0..n).filter(|&i| outs[i].already_adversarial).collect(),
        summary: OutcomeSummary::of(&outs),
    })
}

fn mean_sd(v: &[f64]) -> (f64, f64) {
    let m = v.iter().sum::<f64>() / v.len() as f64;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (v.len() - 1) as f64
    } else {
        0.0
    };
    (m, var.sqrt())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if let Some(paths) = &args.replot {
        let dir = args.plots.as_ref().ok_or("--replot needs --plots DIR")?;
        let mut rows = Vec::new();
        for path in paths {
            let file: RunsFile = serde_json::from_slice(&std::fs::read(path)?)?;
            rows.extend(file.rows);
        }
        return plots(&rows, dir);
    }
    if args.plots.is_some() && !cfg!(feature = "plot") {
        return Err("--plots needs the plot feature: add --features plot".into());
    }
    let mnist = Mnist::load_default()?;
    let data = match args.train_images {
        Some(n) => mnist.train.head(n.min(mnist.train.len()))?,
        None => mnist.train.clone(),
    };
    let arch = Architecture::parse(&args.model, data.input_dim())?;
    let methods: Vec<String> = args
        .methods
        .clone()
        .unwrap_or_else(|| METHODS.iter().map(|s| s.to_string()).collect());
    if let Some(m) = methods.iter().find(|m| !METHODS.contains(&m.as_str())) {
        return Err(format!("unknown method {m}; known: {}", METHODS.join(", ")).into());
    }
    let pool_attack = BoxLbfgsParams::default()
        .with_search_steps(args.attack_search_steps)
        .with_max_iters(args.attack_iters)
        .check()?;
    let hidden = arch.hidden().len();
    let epochs = args
        .epochs
        .unwrap_or(blindspot::zoo::train_params(&arch).epochs);
    println!(
        "# Adversarial training of {} ({} training images, {} epochs, seeds 1..={}, {} threads)\n",
        args.model,
        data.len(),
        epochs,
        args.seeds,
        rayon::current_num_threads()
    );
    println!(
        "pools of {} examples, {:.0}% replaced every {} clean batches, one pool batch (rate × {}) after every {} clean batch(es) (levels in turn), {} warm-up epoch(s); pool attack: box L-BFGS, random target, {} bisection steps, {} iterations per solve; dropout {}; FGSM ε {}\n",
        args.pool_size,
        100.0 * args.refresh_fraction,
        args.refresh_every,
        args.pool_weight,
        args.pool_every,
        args.warmup,
        args.attack_search_steps,
        args.attack_iters,
        args.dropout,
        args.fgsm_epsilon
    );
    let mut rows = Vec::new();
    for method in &methods {
        for seed in 1..=args.seeds {
            let mut params = blindspot::zoo::train_params(&arch)
                .with_seed(seed)
                .with_epochs(epochs);
            let mut model = Network::new(arch.clone(), seed);
            let start = Instant::now();
            let levels: Option<Vec<usize>> = match method.as_str() {
                "input_pool" => Some(vec![0]),
                "pool_hidden1" => Some(vec![1]),
                "pool_hidden2" => Some(vec![2]),
                "layerwise" | "layerwise_mixed" => Some((0..=hidden).collect()),
                _ => None,
            };
            let fgsm = method == "fgsm" || method == "fgsm_dropout";
            if method == "dropout" || method == "fgsm_dropout" {
                params = params.with_dropout(vec![args.dropout; hidden]);
            }
            params.eval_every_epoch = true;
            // The test error, the attacks' seconds and the test error per epoch.
            let adversarial = |r: AdversarialReport| {
                let curve: Vec<f32> = r
                    .plain
                    .epochs
                    .iter()
                    .filter_map(|e| e.plain.test_error)
                    .collect();
                let test_error = r.plain.test_error.expect("test set given");
                (test_error, r.attack_seconds, curve)
            };
            let (test_error, attack_seconds, curve) = match levels {
                None if fgsm => {
                    let config = FgsmTrainParams::new(params, args.fgsm_epsilon)
                        .with_warmup_epochs(args.warmup)
                        .check()?;
                    adversarial(train_with_fgsm(
                        &mut model,
                        &data,
                        Some(&mnist.test),
                        &config,
                        |_| {},
                    )?)
                }
                None => {
                    let r = train(
                        &mut model,
                        &data,
                        Some(&mnist.test),
                        &params.check()?,
                        |_| {},
                    )?;
                    let curve: Vec<f32> = r.epochs.iter().filter_map(|e| e.test_error).collect();
                    (r.test_error.expect("test set given"), 0.0, curve)
                }
                Some(levels) => {
                    let config = PoolTrainParams::new(params, levels)
                        .with_pool_size(args.pool_size.min(data.len()))
                        .with_refresh(args.refresh_every, args.refresh_fraction)
                        .with_warmup_epochs(args.warmup)
                        .with_pool_schedule(args.pool_every, args.pool_weight)
                        .with_target(PoolTarget::Random)
                        .with_pool_update(if method.ends_with("_mixed") {
                            PoolUpdate::Mixed
                        } else {
                            PoolUpdate::Separate
                        })
                        .check()?;
                    let r = train_with_pools(
                        &mut model,
                        &data,
                        Some(&mnist.test),
                        &pool_attack,
                        &config,
                        |p| {
                            if let AdversarialProgress::Pool {
                                level,
                                refresh: 0,
                                stats,
                                ..
                            } = p
                            {
                                eprintln!(
                                    "  {method} seed {seed}: pool at level {level}: {} examples in {:.1} s ({} already adversarial), over the others success {:.0}%, mean distortion {:.4}",
                                    stats.generated,
                                    stats.seconds,
                                    stats.already_adversarial,
                                    100.0 * stats.success_rate,
                                    stats.mean_distortion
                                );
                            }
                        },
                    )?;
                    adversarial(r)
                }
            };
            let seconds = start.elapsed().as_secs_f64();
            let robust = robustness(&model, &mnist.test, args.images)?;
            let (distortion, success) =
                (robust.summary.mean_distortion, robust.summary.success_rate);
            println!(
                "{method} seed {seed}: test error {:.2}%, {} of {} attacked images already misclassified, over the others mean minimal distortion {distortion:.4} (success {:.1}%), {seconds:.0} s ({attack_seconds:.0} s attacks)",
                100.0 * test_error,
                robust.summary.already_adversarial,
                robust.summary.images,
                100.0 * success
            );
            rows.push(Run {
                method: method.to_string(),
                seed,
                test_error,
                mean_min_distortion: distortion,
                attack_success_rate: success,
                already_misclassified: Some(robust.summary.already_adversarial),
                seconds,
                attack_seconds,
                test_error_per_epoch: curve,
                min_distortions: robust.per_image,
                already_misclassified_images: robust.already,
            });
            // Written after every run, so that a stopped sweep keeps what it finished.
            if let Some(path) = &args.json {
                write_json(path, &args, epochs, data.len(), &rows)?;
            }
        }
    }
    if let Some(dir) = &args.plots {
        plots(&rows, dir)?;
    }
    println!(
        "\n| method | test error (mean ± sd) | mean minimal distortion (images not already misclassified) | seconds per run | paper |"
    );
    println!("|---|---|---|---|---|");
    for method in &methods {
        let pick = |key: fn(&Run) -> f64| -> Vec<f64> {
            rows.iter()
                .filter(|r| r.method == *method)
                .map(key)
                .collect()
        };
        let (e, es) = mean_sd(&pick(|r| f64::from(r.test_error)));
        let (d, ds) = mean_sd(&pick(|r| r.mean_min_distortion));
        let (t, _) = mean_sd(&pick(|r| r.seconds));
        let paper = match method.as_str() {
            "weight_decay" => "1.6%",
            "dropout" => "~1.3%",
            "layerwise" | "layerwise_mixed" => "< 1.2%",
            _ => "-",
        };
        println!(
            "| {method} | {:.2}% ± {:.2} | {d:.4} ± {ds:.4} | {t:.0} | {paper} |",
            100.0 * e,
            100.0 * es
        );
    }
    Ok(())
}

/// One training run's figures: a row of the `--json` output, read back by `--replot`.
#[derive(serde::Serialize, serde::Deserialize)]
struct Run {
    method: String,
    seed: u64,
    test_error: f32,
    /// Over the attacked images the model did not already misclassify (in files written
    /// before they were counted, `already_misclassified` absent: over all of them).
    mean_min_distortion: f64,
    /// Over the same images as `mean_min_distortion`.
    attack_success_rate: f64,
    /// Attacked images the model already misclassified, returned unsearched (`null` in files
    /// written before they were counted).
    #[serde(default)]
    already_misclassified: Option<usize>,
    seconds: f64,
    attack_seconds: f64,
    /// Absent from files written before the curves were kept.
    #[serde(default)]
    test_error_per_epoch: Vec<f32>,
    /// Each attacked image's minimal distortion, `null` where the attack failed, 0 where the
    /// image was already misclassified.
    #[serde(default)]
    min_distortions: Vec<Option<f64>>,
    /// Indices (into the attacked images) of those already misclassified.
    #[serde(default)]
    already_misclassified_images: Vec<usize>,
}

/// The `--json` output: the settings of the comparison and its runs so far.
#[derive(serde::Serialize)]
struct Settings<'a> {
    model: &'a str,
    epochs: usize,
    train_images: usize,
    pool_size: usize,
    refresh_every: usize,
    refresh_fraction: f32,
    pool_every: usize,
    pool_weight: f32,
    warmup_epochs: usize,
    attack_iters: u64,
    attack_search_steps: usize,
    dropout: f32,
    fgsm_epsilon: f32,
    distortion_images: usize,
    rows: &'a [Run],
}

/// What `--replot` reads of a `--json` file.
#[derive(serde::Deserialize)]
struct RunsFile {
    rows: Vec<Run>,
}

/// The methods of `rows` in first-seen order.
#[cfg(feature = "plot")]
fn methods_of(rows: &[Run]) -> Vec<String> {
    let mut methods: Vec<String> = Vec::new();
    for r in rows {
        if !methods.contains(&r.method) {
            methods.push(r.method.clone());
        }
    }
    methods
}

/// Writes the settings and the rows so far to `path` through a temporary file and a rename, so
/// that the file is never half written.
fn write_json(
    path: &std::path::Path,
    args: &Args,
    epochs: usize,
    train_images: usize,
    rows: &[Run],
) -> Result<(), Box<dyn std::error::Error>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let out = Settings {
        model: &args.model,
        epochs,
        train_images,
        pool_size: args.pool_size,
        refresh_every: args.refresh_every,
        refresh_fraction: args.refresh_fraction,
        pool_every: args.pool_every,
        pool_weight: args.pool_weight,
        warmup_epochs: args.warmup,
        attack_iters: args.attack_iters,
        attack_search_steps: args.attack_search_steps,
        dropout: args.dropout,
        fgsm_epsilon: args.fgsm_epsilon,
        distortion_images: args.images,
        rows,
    };
    let tmp = path.with_extension(format!("json.tmp{}", std::process::id()));
    std::fs::write(&tmp, serde_json::to_string_pretty(&out)?)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}
