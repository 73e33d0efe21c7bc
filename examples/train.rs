//! Trains one of the paper's models on MNIST and reports its errors.
//!
//! ```text
//! cargo run --release --example train -- --model "FC100-100-10" --seed 1 --json out.json --out m.npz
//! ```

use blindspot::Check;
use std::path::PathBuf;

use blindspot::data::Mnist;
use blindspot::nn::{train, Architecture, Network, Progress};
use blindspot::nn::{TrainParams, TrainReport};
use blindspot::zoo;
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

#[derive(Parser)]
#[command(about = "Train a paper model (e.g. FC100-100-10, FC10(1e-4)) on MNIST")]
struct Args {
    /// Model name as in the paper.
    #[arg(long, default_value = "FC100-100-10")]
    model: String,
    /// Seed for initialisation and shuffling.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Override the recipe's number of epochs.
    #[arg(long)]
    epochs: Option<usize>,
    /// Override the recipe's learning rate.
    #[arg(long)]
    lr: Option<f32>,
    /// Override the recipe's mini-batch size.
    #[arg(long)]
    batch: Option<usize>,
    /// Override the recipe's momentum.
    #[arg(long)]
    momentum: Option<f32>,
    /// MNIST directory (default: $BLINDSPOT_MNIST or the crate's data/mnist).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Write a JSON report here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Save the trained model (.npz) here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Evaluate train/test error after every epoch.
    #[arg(long)]
    verbose: bool,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let mnist = match &args.data {
        Some(dir) => Mnist::load(dir)?,
        None => Mnist::load_default()?,
    };
    let arch = Architecture::parse(&args.model, mnist.train.input_dim())?;
    let mut params = zoo::train_params(&arch).with_seed(args.seed);
    if let Some(e) = args.epochs {
        params = params.with_epochs(e);
    }
    if let Some(lr) = args.lr {
        params = params.with_learning_rate(lr);
    }
    if let Some(b) = args.batch {
        params.batch_size = b;
    }
    if let Some(m) = args.momentum {
        params.momentum = m;
    }
    params.eval_every_epoch = args.verbose;
    let config = params.clone().check()?;
    let mut model = Network::new(arch.clone(), args.seed);
    let bar =
        ProgressBar::new((params.epochs * mnist.train.len().div_ceil(params.batch_size)) as u64);
    bar.set_style(ProgressStyle::with_template(
        "{bar:40} {pos}/{len} batches {msg} [{elapsed} < {eta}]",
    )?);
    let report = train(
        &mut model,
        &mnist.train,
        Some(&mnist.test),
        &config,
        |p| match p {
            Progress::Batch { .. } => bar.inc(1),
            Progress::Epoch(e) => {
                let mut msg = format!("epoch {} loss {:.4}", e.epoch + 1, e.loss);
                if let (Some(tr), Some(te)) = (e.train_error, e.test_error) {
                    msg += &format!(" train {:.2}% test {:.2}%", 100.0 * tr, 100.0 * te);
                    bar.suspend(|| eprintln!("{msg}"));
                }
                bar.set_message(msg);
            }
        },
    )?;
    bar.finish_and_clear();
    let test_error = report.test_error.unwrap_or(f32::NAN);
    println!(
        "{}: train error {:.2}%, test error {:.2}%, {} epochs, {:.3} s/epoch",
        arch,
        100.0 * report.train_error.unwrap_or(f32::NAN),
        100.0 * test_error,
        params.epochs,
        report.seconds_per_epoch
    );
    if let Some(path) = &args.out {
        model.save(path)?;
        println!("saved {}", path.display());
    }
    if let Some(path) = &args.json {
        let json = Record {
            model: &args.model,
            architecture: arch.to_string(),
            seed: args.seed,
            train_error: report.train_error,
            test_error: report.test_error,
            epochs: params.epochs,
            learning_rate: params.learning_rate,
            batch_size: params.batch_size,
            seconds_per_epoch: report.seconds_per_epoch,
            loss_per_epoch: report.loss_per_epoch(),
            epoch_seconds: report.epochs.iter().map(|e| e.seconds).collect(),
            params: &params,
            report: &report,
        };
        std::fs::write(path, serde_json::to_string_pretty(&json)?)?;
    }
    Ok(())
}

/// The `--json` record: the flat keys earlier runs wrote (kept for the scripts that read
/// them), then the settings and the report in full, through the crate's serde feature.
#[derive(Serialize)]
struct Record<'a> {
    model: &'a str,
    architecture: String,
    seed: u64,
    train_error: Option<f32>,
    test_error: Option<f32>,
    epochs: usize,
    learning_rate: f32,
    batch_size: usize,
    seconds_per_epoch: f64,
    loss_per_epoch: Vec<f32>,
    epoch_seconds: Vec<f64>,
    params: &'a TrainParams,
    report: &'a TrainReport,
}
