//! Adversarial training (paper §4.1): FC100-100-10 trained from the same seed with and without a
//! pool of adversarial examples mixed into every mini-batch, compared on test error and on the
//! mean minimal distortion the untargeted box-constrained L-BFGS attack needs to fool it.
//!
//! ```text
//! cargo run --release --example adversarial_training -- --images 1000 --json out/advtrain.json
//! cargo run --release --example adversarial_training -- --epochs 10 --train-images 10000 --images 100
//! ```
//!
//! Both models use the crate's FC recipe (`TrainParams::for_arch`: batch 16, rate 0.05, cosine
//! schedule, momentum 0.9, 60 epochs unless `--epochs`), the same seed and the same
//! initialisation; the adversarial run additionally keeps a pool of examples made by a cheap
//! box L-BFGS (random target per example, `--attack-search-steps` bisection steps,
//! `--attack-iters` L-BFGS-B iterations per solve) and replaces a fraction of it every
//! `--refresh-every` batches. Per-epoch test errors are printed (the curve) and written to JSON.

use std::path::PathBuf;
use std::time::Instant;

use blindspot::attack::{Attack, BoxLbfgs, Target};
use blindspot::data::{Dataset, Mnist};
use blindspot::nn::{
    error_rate, train, train_adversarial, AdversarialParams, AdversarialProgress, Architecture,
    Mlp, PoolTarget, Progress, TrainParams,
};
use clap::Parser;
use serde_json::json;

#[derive(Parser)]
#[command(about = "Adversarial training of FC100-100-10 (Szegedy et al. 2013, §4.1)")]
struct Args {
    /// Model (any FC name).
    #[arg(long, default_value = "FC100-100-10")]
    model: String,
    /// Seed of initialisation, shuffling and the pool.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Epochs of both runs (default: the recipe's).
    #[arg(long)]
    epochs: Option<usize>,
    /// Train on the first N training images only (default: all 60,000).
    #[arg(long)]
    train_images: Option<usize>,
    /// Adversarial examples in the pool.
    #[arg(long, default_value_t = 6000)]
    pool_size: usize,
    /// Batches between pool refreshes.
    #[arg(long, default_value_t = 500)]
    refresh_every: usize,
    /// Fraction of the pool replaced at each refresh.
    #[arg(long, default_value_t = 0.1)]
    refresh_fraction: f32,
    /// Share of each mini-batch taken from the pool.
    #[arg(long, default_value_t = 0.25)]
    batch_share: f32,
    /// Clean epochs before the pool is built.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Bisection steps on c of the pool's attack.
    #[arg(long, default_value_t = 0)]
    attack_search_steps: usize,
    /// L-BFGS-B iterations per solve of the pool's attack.
    #[arg(long, default_value_t = 30)]
    attack_iters: u64,
    /// Test images attacked (untargeted, full-strength box L-BFGS) to measure the mean
    /// minimal distortion of each model.
    #[arg(long, default_value_t = 1000)]
    images: usize,
    /// Skip the plain run (e.g. when only tuning the adversarial one).
    #[arg(long)]
    skip_plain: bool,
    /// Write every figure as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Mean minimal distortion (over successes), success rate and seconds of the untargeted attack.
fn robustness(model: &Mlp, test: &Dataset, n: usize) -> blindspot::Result<(f64, f64, f64)> {
    let n = n.clamp(1, test.len());
    let xs = test.images().slice(ndarray::s![..n, ..]).to_owned();
    let labels = &test.labels()[..n];
    let t = Instant::now();
    let outs =
        BoxLbfgs::new().attack_batch(model, xs.view(), labels, &vec![Target::Untargeted; n])?;
    let ok: Vec<f64> = outs
        .iter()
        .filter(|o| o.success)
        .map(|o| o.distortion)
        .collect();
    Ok((
        ok.iter().sum::<f64>() / ok.len().max(1) as f64,
        ok.len() as f64 / n as f64,
        t.elapsed().as_secs_f64(),
    ))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let start = Instant::now();
    let mnist = Mnist::load_default()?;
    let data = match args.train_images {
        Some(n) => mnist.train.head(n.min(mnist.train.len()))?,
        None => mnist.train.clone(),
    };
    let arch = Architecture::parse(&args.model, data.input_dim())?;
    let mut params = TrainParams::for_arch(&arch).with_seed(args.seed);
    if let Some(e) = args.epochs {
        params = params.with_epochs(e);
    }
    params.eval_every_epoch = true;
    let adv_params = AdversarialParams::new(params.clone())
        .with_pool_size(args.pool_size.min(data.len()))
        .with_refresh(args.refresh_every, args.refresh_fraction)
        .with_batch_share(args.batch_share)
        .with_warmup_epochs(args.warmup)
        .with_target(PoolTarget::Random);
    let adv_config = adv_params.clone().check()?;
    let pool_attack = BoxLbfgs::new()
        .with_search_steps(args.attack_search_steps)
        .with_max_iters(args.attack_iters)?;
    println!(
        "# Adversarial training of {} ({} training images, {} epochs, seed {}, {} threads)\n",
        args.model,
        data.len(),
        params.epochs,
        args.seed,
        rayon::current_num_threads()
    );
    println!(
        "pool {} examples, {:.0}% ({} examples) replaced every {} batches, {} of each batch of {} from the pool, {} clean warm-up epoch(s); pool attack: box L-BFGS, random target, {} bisection steps, {} iterations per solve\n",
        adv_params.pool_size,
        100.0 * adv_params.refresh_fraction,
        adv_config.refresh_count(),
        adv_params.refresh_every,
        adv_config.adversarial_per_batch(),
        params.batch_size,
        adv_params.warmup_epochs,
        args.attack_search_steps,
        args.attack_iters
    );

    // Plain training.
    let mut plain_curve = Vec::new();
    let mut plain = Mlp::new(arch.clone(), args.seed);
    let mut plain_seconds = 0.0;
    if !args.skip_plain {
        let t = Instant::now();
        train(
            &mut plain,
            &data,
            Some(&mnist.test),
            &params.clone().check()?,
            |p| {
                if let Progress::Epoch(e) = p {
                    eprintln!(
                        "plain epoch {:>2}: loss {:.4}, test error {:.2}%",
                        e.epoch + 1,
                        e.loss,
                        100.0 * e.test_error.unwrap_or(f32::NAN)
                    );
                    plain_curve.push(e.test_error);
                }
            },
        )?;
        plain_seconds = t.elapsed().as_secs_f64();
    }

    // Adversarial training.
    let mut adv_curve = Vec::new();
    let mut adv = Mlp::new(arch, args.seed);
    let t = Instant::now();
    let report = train_adversarial(
        &mut adv,
        &data,
        Some(&mnist.test),
        &pool_attack,
        &adv_config,
        |p| match p {
            AdversarialProgress::Epoch(e) => {
                eprintln!(
                    "adversarial epoch {:>2}: loss {:.4}, test error {:.2}%, {} examples made in {:.1} s (success {:.0}%, distortion {:.3}), SGD {:.1} s",
                    e.epoch + 1,
                    e.loss,
                    100.0 * e.test_error.unwrap_or(f32::NAN),
                    e.generated,
                    e.attack_seconds,
                    100.0 * e.attack_success_rate.unwrap_or(0.0),
                    e.attack_mean_distortion.unwrap_or(0.0),
                    e.sgd_seconds
                );
                adv_curve.push(json!({
                    "epoch": e.epoch + 1,
                    "test_error": e.test_error,
                    "train_error": e.train_error,
                    "loss": e.loss,
                    "generated": e.generated,
                    "attack_seconds": e.attack_seconds,
                    "sgd_seconds": e.sgd_seconds,
                    "pool_attack_success": e.attack_success_rate,
                    "pool_attack_distortion": e.attack_mean_distortion,
                }));
            }
            AdversarialProgress::Pool {
                refresh: 0, stats, ..
            } => eprintln!(
                "pool generated: {} examples in {:.1} s, success {:.0}%",
                stats.generated,
                stats.seconds,
                100.0 * stats.success_rate
            ),
            _ => {}
        },
    )?;
    let adv_seconds = t.elapsed().as_secs_f64();

    // Evaluation.
    let adv_test = error_rate(&adv, &mnist.test)?;
    let (adv_dist, adv_succ, adv_atk_s) = robustness(&adv, &mnist.test, args.images)?;
    let plain_eval = if args.skip_plain {
        None
    } else {
        let e = error_rate(&plain, &mnist.test)?;
        let (d, s, secs) = robustness(&plain, &mnist.test, args.images)?;
        Some((e, d, s, secs))
    };
    let total = start.elapsed().as_secs_f64();

    println!("| training | test error | mean minimal distortion ({} test images) | attack success | training time |", args.images.min(mnist.test.len()));
    println!("|---|---|---|---|---|");
    if let Some((e, d, s, _)) = plain_eval {
        println!(
            "| plain | {:.2}% | {d:.4} | {:.1}% | {plain_seconds:.0} s |",
            100.0 * e,
            100.0 * s
        );
    }
    println!(
        "| adversarial | {:.2}% | {adv_dist:.4} | {:.1}% | {adv_seconds:.0} s ({:.0} s attacks, {:.0} s SGD) |",
        100.0 * adv_test,
        100.0 * adv_succ,
        report.attack_seconds,
        report.sgd_seconds
    );
    println!("\npaper: adversarial training brought a non-convolutional MNIST network below 1.2% test error.");
    println!(
        "adversarial examples generated during training: {}; total wall time {total:.0} s",
        report.generated
    );

    if let Some(path) = &args.json {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let out = json!({
            "model": args.model,
            "seed": args.seed,
            "train_images": data.len(),
            "epochs": params.epochs,
            "batch_size": params.batch_size,
            "learning_rate": params.learning_rate,
            "pool_size": adv_params.pool_size,
            "refresh_every_batches": adv_params.refresh_every,
            "refresh_fraction": adv_params.refresh_fraction,
            "batch_share": adv_params.batch_share,
            "adversarial_per_batch": adv_config.adversarial_per_batch(),
            "warmup_epochs": adv_params.warmup_epochs,
            "pool_attack": { "kind": "box L-BFGS, random target", "search_steps": args.attack_search_steps, "max_iters": args.attack_iters },
            "eval_images": args.images.min(mnist.test.len()),
            "plain": plain_eval.map(|(e, d, s, secs)| json!({
                "test_error": e, "mean_min_distortion": d, "attack_success": s,
                "eval_attack_seconds": secs, "train_seconds": plain_seconds,
                "test_error_curve": plain_curve,
            })),
            "adversarial": {
                "test_error": adv_test, "mean_min_distortion": adv_dist, "attack_success": adv_succ,
                "eval_attack_seconds": adv_atk_s, "train_seconds": adv_seconds,
                "attack_seconds": report.attack_seconds, "sgd_seconds": report.sgd_seconds,
                "generated": report.generated, "train_error": report.train_error,
                "curve": adv_curve,
            },
            "paper_test_error_below": 0.012,
            "wall_seconds": total,
            "threads": rayon::current_num_threads(),
        });
        std::fs::write(path, serde_json::to_string_pretty(&out)?)?;
    }
    Ok(())
}
