//! The paper's §3 experiment, measured: do single units and random directions of a hidden layer
//! pick out equally "semantic" images?
//!
//! For FC100-100-10 (both hidden layers), AE400-10 (its code layer) and the zoo's convnet
//! (its last hidden layer, as in the paper's own experiment), on the full MNIST test
//! set as the held-out pool, finds the top-k images of `--n-unit` unit directions and
//! `--n-random` random directions, draws the first `--show` of each kind as PNG grids (one row
//! per direction: unit rows, then random rows, as in the paper's Figures 1–4) and prints the
//! purity / spread statistics as a markdown table.
//!
//! Each layer is probed twice: in activation space (the paper's `φ(x)`) and in pre-activation
//! space (`z`, before the sigmoid). Saturated sigmoid units are exactly 1 in f32 on many
//! images, which makes their activation top-k partly an index tie-break; ranking a unit by `z`
//! is what exact arithmetic would give for `σ(z)`.
//!
//! ```text
//! cargo run --release --example probe -- --k 8 --n-unit 50 --n-random 50 --json out/probe/probe.json
//! ```

use blindspot::Check;
use std::path::{Path, PathBuf};

#[path = "common/probe_json.rs"]
mod probe_json;
use probe_json::{pair, DiffJson, Group};

use blindspot::data::{Dataset, Mnist};
use blindspot::image::Grid;
use blindspot::probe::{
    study, Difference, Direction, MeanCi, PreActivations, ProbeParams, ProbeReport,
};
use blindspot::zoo::Zoo;
use clap::Parser;
use serde::Serialize;

#[derive(Parser)]
#[command(about = "Unit vs random directions in hidden layers (Szegedy et al. §3), measured")]
struct Args {
    /// Images per direction.
    #[arg(long, default_value_t = 8)]
    k: usize,
    /// Unit (natural-basis) directions per layer.
    #[arg(long, default_value_t = 50)]
    n_unit: usize,
    /// Random directions per layer.
    #[arg(long, default_value_t = 50)]
    n_random: usize,
    /// Directions of each kind drawn in the PNG grids.
    #[arg(long, default_value_t = 10)]
    show: usize,
    /// Bootstrap resamples and permutations.
    #[arg(long, default_value_t = 2000)]
    resamples: usize,
    /// Random k-sets in the chance baseline.
    #[arg(long, default_value_t = 2000)]
    baseline_sets: usize,
    /// Seed of the probe (directions, baseline, bootstrap).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Seed of the models.
    #[arg(long, default_value_t = 1)]
    model_seed: u64,
    /// Directory of the PNG grids.
    #[arg(long, default_value = "out/probe")]
    out: PathBuf,
    /// Zoo cache directory (default: $BLINDSPOT_ZOO, else the user cache directory; see Zoo::default_dir); models missing
    /// from it are trained with the zoo's recipe and cached.
    #[arg(long)]
    cache: Option<PathBuf>,
    /// MNIST directory (default: $BLINDSPOT_MNIST or the crate's data/mnist).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Write the statistics as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Only these of the planned models (comma-separated; default all three).
    #[arg(long, value_delimiter = ',')]
    models: Option<Vec<String>>,
}

/// A file-name-safe form of a model name: `FC10(1e-4)` → `FC10_1e-4_`.
fn file_stem(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn fmt_ci(m: &MeanCi) -> String {
    format!("{:.3} [{:.3}, {:.3}]", m.mean, m.ci95.lo, m.ci95.hi)
}

fn fmt_diff(d: &Difference) -> String {
    format!(
        "{:+.3} [{:+.3}, {:+.3}], p = {:.3}{}",
        d.mean,
        d.ci95.lo,
        d.ci95.hi,
        d.p_value,
        if d.differs {
            " **differ**"
        } else {
            " (no difference)"
        }
    )
}

/// The `--json` output.
#[derive(Serialize)]
struct ProbeFile<'a> {
    config: Config,
    layers: Vec<LayerReport<'a>>,
}

/// The settings of the study, in the JSON.
#[derive(Serialize)]
struct Config {
    k: usize,
    n_unit: usize,
    n_random: usize,
    resamples: usize,
    baseline_sets: usize,
    seed: u64,
    model_seed: u64,
    heldout: &'static str,
    decision: &'static str,
}

/// One probed layer in one space: a [`ProbeReport`] with intervals as `[lo, hi]` pairs.
#[derive(Serialize)]
struct LayerReport<'a> {
    model: &'a str,
    space: &'a str,
    layer: usize,
    layer_dim: usize,
    k: usize,
    heldout: usize,
    unit: Group,
    random: Group,
    baseline: BaselineJson,
    purity_difference_unit_minus_random: DiffJson,
    spread_difference_unit_minus_random: DiffJson,
    directions: Vec<DirectionJson<'a>>,
}

impl<'a> LayerReport<'a> {
    fn new(model: &'a str, space: &'a str, r: &'a ProbeReport) -> Self {
        LayerReport {
            model,
            space,
            layer: r.layer,
            layer_dim: r.layer_dim,
            k: r.k,
            heldout: r.heldout,
            unit: (&r.unit).into(),
            random: (&r.random).into(),
            baseline: BaselineJson {
                sets: r.baseline.sets,
                purity_mean: r.baseline.purity_mean,
                purity_range95: pair(r.baseline.purity_range95),
                pairwise_distance: r.baseline.pairwise_distance,
                spread_range95: pair(r.baseline.spread_range95),
            },
            purity_difference_unit_minus_random: (&r.purity_difference).into(),
            spread_difference_unit_minus_random: (&r.spread_difference).into(),
            directions: r
                .directions
                .iter()
                .map(|d| DirectionJson {
                    direction: match &d.top.direction {
                        Direction::Unit(i) => DirectionName::Unit { unit: *i },
                        Direction::Random { seed } => DirectionName::Random { random_seed: *seed },
                        Direction::Custom(_) => DirectionName::Custom("custom"),
                    },
                    indices: &d.top.indices,
                    scores: &d.top.scores,
                    purity: d.purity,
                    spread: d.spread,
                    boundary_ties: d.top.boundary_ties,
                })
                .collect(),
        }
    }
}

/// The chance baseline of random k-sets.
#[derive(Serialize)]
struct BaselineJson {
    sets: usize,
    purity_mean: f64,
    purity_range95: [f64; 2],
    pairwise_distance: f64,
    spread_range95: [f64; 2],
}

/// One direction's top-k images and their statistics.
#[derive(Serialize)]
struct DirectionJson<'a> {
    direction: DirectionName,
    indices: &'a [usize],
    scores: &'a [f32],
    purity: f64,
    spread: f64,
    boundary_ties: usize,
}

/// A direction as the JSON names it: `{"unit": i}`, `{"random_seed": s}` or `"custom"`.
#[derive(Serialize)]
#[serde(untagged)]
enum DirectionName {
    Unit { unit: usize },
    Random { random_seed: u64 },
    Custom(&'static str),
}

/// One row of k images per direction: the first `show` unit rows, then `show` random rows.
fn save_grid(r: &ProbeReport, data: &Dataset, show: usize, path: &Path) -> blindspot::Result<()> {
    let (rows, cols) = data.image_shape();
    let mut grid = Grid::new(rows, cols, r.k)?
        .try_with_scale(2)?
        .with_separator(128);
    let images = data.images();
    for d in r
        .unit_results()
        .take(show)
        .chain(r.random_results().take(show))
    {
        for &i in &d.top.indices {
            grid.push(images.row(i))?;
        }
    }
    grid.save(path)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let mnist = match &args.data {
        Some(dir) => Mnist::load(dir)?,
        None => Mnist::load_default()?,
    };
    let config = ProbeParams {
        k: args.k,
        n_unit: args.n_unit,
        n_random: args.n_random,
        baseline_sets: args.baseline_sets,
        resamples: args.resamples,
        seed: args.seed,
    }
    .check()?;
    std::fs::create_dir_all(&args.out)?;
    let zoo = match &args.cache {
        Some(dir) => Zoo::in_dir(dir),
        None => Zoo::new(),
    };
    // The convnet's last hidden layer (layer 2: after two pooled stages) is the paper's own
    // §3 experiment; the pre-activation space is that of its dense ReLU units.
    let plan: [(&str, &[usize]); 3] = [
        ("FC100-100-10", &[0, 1]),
        ("AE400-10", &[0]),
        (blindspot::zoo::CONVNET, &[2]),
    ];
    let mut reports = Vec::new();
    for (name, layers) in plan {
        if let Some(only) = &args.models {
            if !only.iter().any(|m| m.trim() == name) {
                continue;
            }
        }
        let entry = zoo.model(name, args.model_seed, &mnist.train, "mnist-train")?;
        eprintln!(
            "{name}: {} ({})",
            if entry.from_cache {
                "loaded"
            } else {
                "trained"
            },
            entry.path.display()
        );
        let model = entry.model;
        for &layer in layers {
            for space in ["activation", "pre-activation"] {
                let t = std::time::Instant::now();
                let r = if space == "activation" {
                    study(&model, &mnist.test, layer, &config)?
                } else {
                    study(&PreActivations(&model), &mnist.test, layer, &config)?
                };
                eprintln!(
                    "{name} layer {layer} ({space}): {:.1}s",
                    t.elapsed().as_secs_f64()
                );
                let suffix = if space == "activation" { "" } else { "-pre" };
                let png = args
                    .out
                    .join(format!("{}-layer{layer}{suffix}.png", file_stem(name)));
                save_grid(&r, &mnist.test, args.show, &png)?;
                eprintln!("wrote {}", png.display());
                reports.push((name, space, r));
            }
        }
    }

    println!(
        "Top-{} test images (n = {}) per direction; purity = share of the most common label; \
         spread = mean pairwise pixel distance / that of random {}-sets (label-free, < 1 = \
         tighter). Means with percentile-bootstrap 95% CIs ({} resamples); groups differ when \
         the CI of the difference excludes 0 (permutation p-value alongside). \"tied\": \
         directions whose top-k set was decided by the index tie-break (saturated units).\n",
        args.k,
        mnist.test.len(),
        args.k,
        args.resamples
    );
    println!("| model | layer (width) | space | directions | purity | spread |");
    println!("|---|---|---|---|---|---|");
    for (name, space, r) in &reports {
        let head = format!("| {name} | {} ({}) | {space}", r.layer, r.layer_dim);
        println!(
            "{head} | unit ({}; {} tied) | {} | {} |",
            r.unit.n,
            r.unit.tied,
            fmt_ci(&r.unit.purity),
            fmt_ci(&r.unit.spread)
        );
        println!(
            "{head} | random ({}; {} tied) | {} | {} |",
            r.random.n,
            r.random.tied,
            fmt_ci(&r.random.purity),
            fmt_ci(&r.random.spread)
        );
        println!(
            "{head} | chance: random {}-sets ({}) | {:.3} (95% range {:.3}–{:.3}) | 1 (95% range {:.3}–{:.3}) |",
            r.k,
            r.baseline.sets,
            r.baseline.purity_mean,
            r.baseline.purity_range95.lo,
            r.baseline.purity_range95.hi,
            r.baseline.spread_range95.lo,
            r.baseline.spread_range95.hi
        );
        println!(
            "{head} | unit − random | {} | {} |",
            fmt_diff(&r.purity_difference),
            fmt_diff(&r.spread_difference)
        );
    }

    if let Some(path) = &args.json {
        let v = ProbeFile {
            config: Config {
                k: args.k,
                n_unit: args.n_unit,
                n_random: args.n_random,
                resamples: args.resamples,
                baseline_sets: args.baseline_sets,
                seed: args.seed,
                model_seed: args.model_seed,
                heldout: "MNIST test set",
                decision: "bootstrap 95% CI of the difference of means excludes 0",
            },
            layers: reports
                .iter()
                .map(|(n, sp, r)| LayerReport::new(n, sp, r))
                .collect(),
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, serde_json::to_string_pretty(&v)?)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
