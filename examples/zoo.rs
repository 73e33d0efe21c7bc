//! Trains (or loads from the cache) the paper's Table 1 models on the full MNIST training set
//! and prints their train and test errors beside the paper's.
//!
//! ```text
//! cargo run --release --example zoo -- --json out/zoo.json
//! cargo run --release --example zoo -- --models "FC10(1e-4),AE400-10" --seed 2 --cache /tmp/zoo
//! ```

use std::path::PathBuf;
use std::time::Instant;

use blindspot::data::Mnist;
use blindspot::nn::{error_rate, Progress};
use blindspot::zoo::{paper_errors, Zoo, TABLE1_AND_CONV};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Parser)]
#[command(about = "Train or load the paper's Table 1 models and compare their errors")]
struct Args {
    /// Seed of every model.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Comma-separated zoo names (default: the six Table 1 models).
    #[arg(long, value_delimiter = ',')]
    models: Option<Vec<String>>,
    /// Cache directory (default: $BLINDSPOT_ZOO, else the user cache directory; see Zoo::default_dir).
    #[arg(long)]
    cache: Option<PathBuf>,
    /// Write the table as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn pct(v: Option<f32>) -> String {
    v.map_or("–".to_string(), |v| format!("{:.2}%", 100.0 * v))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let mnist = Mnist::load_default()?;
    let zoo = match &args.cache {
        Some(dir) => Zoo::in_dir(dir),
        None => Zoo::new(),
    };
    let names: Vec<String> = match &args.models {
        Some(m) => m.iter().map(|s| s.trim().to_string()).collect(),
        None => TABLE1_AND_CONV.iter().map(|s| s.to_string()).collect(),
    };
    eprintln!("zoo cache: {}", zoo.dir().display());
    let mut rows = Vec::new();
    let mut table = String::from(
        "| model | train error | paper train | test error | paper test | seconds | from cache |\n\
         |---|---|---|---|---|---|---|\n",
    );
    let total = Instant::now();
    for name in &names {
        let bar = ProgressBar::new(0);
        bar.set_style(ProgressStyle::with_template(
            "{prefix} {bar:30} {pos}/{len} batches {msg} [{elapsed}]",
        )?);
        bar.set_prefix(name.clone());
        let entry = zoo.model_with_progress(name, args.seed, &mnist.train, "mnist-train", {
            let bar = bar.clone();
            move |stage, p| match p {
                Progress::Batch {
                    epoch,
                    batch,
                    batches,
                } => {
                    if *epoch == 0 && *batch == 0 {
                        bar.set_position(0);
                    }
                    bar.set_length(*batches as u64);
                    bar.set_position(*batch as u64 + 1);
                }
                Progress::Epoch(e) => {
                    bar.set_message(format!(
                        "{stage:?} epoch {} loss {:.4}",
                        e.epoch + 1,
                        e.loss
                    ));
                }
            }
        })?;
        bar.finish_and_clear();
        let train_error = error_rate(&entry.model, &mnist.train)?;
        let test_error = error_rate(&entry.model, &mnist.test)?;
        let paper = paper_errors(name);
        // A cache hit reports this call's (loading) time; a fresh model its training time.
        let seconds = if entry.from_cache {
            entry.seconds
        } else {
            entry.train_seconds
        };
        eprintln!(
            "{name}: train {:.2}% test {:.2}% in {seconds:.3} s{}",
            100.0 * train_error,
            100.0 * test_error,
            if entry.from_cache {
                format!(" (cache; trained in {:.0} s)", entry.train_seconds)
            } else {
                format!(" ({})", entry.cache_miss.as_deref().unwrap_or("trained"))
            }
        );
        // Cache loads take milliseconds: show them with enough digits to be seen.
        let shown = if seconds < 1.0 {
            format!("{seconds:.3}")
        } else {
            format!("{seconds:.1}")
        };
        table += &format!(
            "| {name} | {} | {} | {} | {} | {shown} | {} |\n",
            pct(Some(train_error)),
            pct(paper.map(|p| p.0)),
            pct(Some(test_error)),
            pct(paper.map(|p| p.1)),
            if entry.from_cache { "yes" } else { "no" },
        );
        rows.push(Row {
            model: name,
            train_error,
            test_error,
            seconds,
            from_cache: entry.from_cache,
            train_seconds: entry.train_seconds,
            paper_train_error: paper.map(|p| p.0),
            paper_test_error: paper.map(|p| p.1),
            seed: args.seed,
            key: entry.key.clone(),
        });
    }
    println!("{table}");
    println!("total {:.1} s", total.elapsed().as_secs_f64());
    if let Some(path) = &args.json {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let json = ZooFile { rows: &rows };
        std::fs::write(path, serde_json::to_string_pretty(&json)?)?;
    }
    Ok(())
}

/// The `--json` output.
#[derive(serde::Serialize)]
struct ZooFile<'a> {
    rows: &'a [Row<'a>],
}

/// One model's row of the `--json` output.
#[derive(serde::Serialize)]
struct Row<'a> {
    model: &'a str,
    train_error: f32,
    test_error: f32,
    seconds: f64,
    from_cache: bool,
    train_seconds: f64,
    paper_train_error: Option<f32>,
    paper_test_error: Option<f32>,
    seed: u64,
    key: String,
}
