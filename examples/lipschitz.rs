//! Spectral stability of the paper's Table 1 models (§4.3, Table 5 form): per-layer upper
//! Lipschitz bounds `L_σ · ‖W‖₂` and their product, next to the largest measured ratio
//! `‖f(x + r) − f(x)‖ / ‖r‖` over perturbations of test images, where `f` is the network's
//! pre-softmax output (the logits).
//!
//! The perturbations are Gaussian noise of several scales for now; any list of (x, r) pairs
//! can be measured the same way (see [`PerturbationSet`]), e.g. the adversarial perturbations
//! an attack found.
//!
//! ```text
//! cargo run --release --example lipschitz -- --json out/lipschitz.json
//! ```

use std::path::{Path, PathBuf};

use blindspot::data::Mnist;
use blindspot::nn::{
    error_rate, train, train_ae_classifier, AeRecipe, Architecture, Mlp, TrainParams,
};
use blindspot::spectral::{layer_bounds, network_bound, perturbation_ratios, LayerBound};
use clap::Parser;
use ndarray::{s, Array2};
use ndarray_rand::rand_distr::StandardNormal;
use ndarray_rand::RandomExt;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

/// The six models of the paper's Table 1.
const TABLE1: &str = "FC10(1e-4),FC10(1e-2),FC10(1),FC100-100-10,FC200-200-10,AE400-10";

#[derive(Parser)]
#[command(about = "Per-layer Lipschitz upper bounds vs measured output/input ratios")]
struct Args {
    /// Comma-separated model names.
    #[arg(long, default_value = TABLE1)]
    models: String,
    /// Seed of the models.
    #[arg(long, default_value_t = 1)]
    model_seed: u64,
    /// Directory of cached models.
    #[arg(long, default_value = "out/models")]
    model_dir: PathBuf,
    /// Train (and cache) models missing from the cache instead of skipping them.
    #[arg(long)]
    train_missing: bool,
    /// Test images perturbed per noise scale.
    #[arg(long, default_value_t = 1000)]
    n: usize,
    /// Per-pixel standard deviations of the Gaussian perturbations.
    #[arg(long, value_delimiter = ',', default_value = "0.001,0.01,0.1,0.3")]
    sigmas: Vec<f32>,
    /// Seed of the perturbations.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// MNIST directory (default: $BLINDSPOT_MNIST or the crate's data/mnist).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Write the tables as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// A named batch of (example, perturbation) pairs: row `i` of `x` is perturbed by row `i`
/// of `r`. Random noise today; an attack's `(x, r_adv)` pairs slot in unchanged.
struct PerturbationSet {
    source: String,
    x: Array2<f32>,
    r: Array2<f32>,
}

/// The measured ratios of one set on one model.
struct Measured {
    source: String,
    n: usize,
    max: f64,
    mean: f64,
}

fn measure(model: &Mlp, sets: &[PerturbationSet]) -> blindspot::Result<Vec<Measured>> {
    sets.iter()
        .map(|set| {
            let ratios = perturbation_ratios(model, set.x.view(), set.r.view())?;
            Ok(Measured {
                source: set.source.clone(),
                n: ratios.len(),
                max: ratios.iter().copied().fold(0.0, f64::max),
                mean: ratios.iter().sum::<f64>() / ratios.len() as f64,
            })
        })
        .collect()
}

/// Gaussian noise `N(0, σ²)` per pixel on the first `n` test images, one set per σ. The noisy
/// images are not clipped to `[0, 1]`: the bound holds for every input, and clipping would
/// change `r`.
fn gaussian_sets(mnist: &Mnist, n: usize, sigmas: &[f32], seed: u64) -> Vec<PerturbationSet> {
    let n = n.min(mnist.test.len());
    let x = mnist.test.images().slice(s![..n, ..]).to_owned();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    sigmas
        .iter()
        .map(|&sigma| PerturbationSet {
            source: format!("gaussian σ={sigma}"),
            x: x.clone(),
            r: Array2::<f32>::random_using(x.raw_dim(), StandardNormal, &mut rng) * sigma,
        })
        .collect()
}

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

/// The model from the cache, or trained and cached when `train_missing`, else `None`.
fn obtain_model(
    name: &str,
    seed: u64,
    mnist: &Mnist,
    dir: &Path,
    train_missing: bool,
) -> blindspot::Result<Option<Mlp>> {
    let path = dir.join(format!("{}-seed{seed}.npz", file_stem(name)));
    if path.is_file() {
        return Mlp::load(&path).map(Some);
    }
    if !train_missing {
        eprintln!("{name}: not in {} (use --train-missing)", dir.display());
        return Ok(None);
    }
    eprintln!(
        "training {name} (seed {seed}); cached at {}",
        path.display()
    );
    let model = if name == "AE400-10" {
        train_ae_classifier(&mnist.train, &AeRecipe::paper(), seed, |_, _| {})?.0
    } else {
        let arch = Architecture::parse(name, mnist.train.input_dim())?;
        let config = TrainParams::for_arch(&arch).with_seed(seed).check()?;
        let mut m = Mlp::new(arch, seed);
        train(&mut m, &mnist.train, None, &config, |_| {})?;
        m
    };
    std::fs::create_dir_all(dir).map_err(|e| blindspot::Error::Io {
        path: dir.to_path_buf(),
        source: e,
    })?;
    model.save(&path)?;
    Ok(Some(model))
}

fn layer_json(b: &LayerBound) -> Value {
    json!({
        "layer": b.layer, "inputs": b.inputs, "outputs": b.outputs,
        "activation": b.activation.map_or("none (logits)".to_string(), |a| a.to_string()),
        "operator_norm": b.operator_norm, "iterations": b.iterations,
        "activation_lipschitz": b.activation_lipschitz, "bound": b.bound,
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let mnist = match &args.data {
        Some(dir) => Mnist::load(dir)?,
        None => Mnist::load_default()?,
    };
    let sets = gaussian_sets(&mnist, args.n, &args.sigmas, args.seed);
    let mut summary = Vec::new();
    let mut out = Vec::new();
    println!(
        "f = pre-softmax output (logits); layer bound = ‖W‖₂ (power iteration) × Lipschitz \
         constant of the activation after it (sigmoid 1/4; none on the last layer; the softmax \
         is 1-Lipschitz, so the product also bounds the probabilities).\n"
    );
    for name in args
        .models
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let Some(model) = obtain_model(
            name,
            args.model_seed,
            &mnist,
            &args.model_dir,
            args.train_missing,
        )?
        else {
            continue;
        };
        let bounds = layer_bounds(&model)?;
        let product = network_bound(&bounds);
        let measured = measure(&model, &sets)?;
        let test_error = error_rate(&model, &mnist.test)?;
        println!("### {name} (test error {:.2}%)\n", 100.0 * test_error);
        println!("| layer | size | activation | ‖W‖₂ | L(act) | upper bound |");
        println!("|---|---|---|---|---|---|");
        for b in &bounds {
            println!(
                "| {} | {}×{} | {} | {:.4} | {} | {:.4} |",
                b.layer,
                b.inputs,
                b.outputs,
                b.activation
                    .map_or("— (logits)".to_string(), |a| a.to_string()),
                b.operator_norm,
                b.activation_lipschitz,
                b.bound
            );
        }
        println!("| all | | | | | **{product:.4}** |\n");
        println!("| perturbations | pairs | max ratio | mean ratio | max / bound |");
        println!("|---|---|---|---|---|");
        for m in &measured {
            println!(
                "| {} | {} | {:.4} | {:.4} | {:.3} |",
                m.source,
                m.n,
                m.max,
                m.mean,
                m.max / product
            );
        }
        println!();
        let worst = measured.iter().map(|m| m.max).fold(0.0, f64::max);
        summary.push((name.to_string(), product, worst));
        out.push(json!({
            "model": name, "seed": args.model_seed, "test_error": test_error,
            "layers": bounds.iter().map(layer_json).collect::<Vec<_>>(),
            "network_bound": product,
            "measured": measured.iter().map(|m| json!({
                "source": m.source, "pairs": m.n, "max_ratio": m.max, "mean_ratio": m.mean,
            })).collect::<Vec<_>>(),
        }));
    }
    println!("### Summary\n");
    println!("| model | product bound | largest measured ratio | ratio / bound |");
    println!("|---|---|---|---|");
    for (name, bound, worst) in &summary {
        println!(
            "| {name} | {bound:.4} | {worst:.4} | {:.3} |",
            worst / bound
        );
    }
    if let Some(path) = &args.json {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let v = json!({
            "f": "pre-softmax output (logits)",
            "perturbations": "Gaussian N(0, σ²) per pixel on the first n test images, unclipped",
            "n": args.n.min(mnist.test.len()), "sigmas": args.sigmas, "seed": args.seed,
            "models": out,
        });
        std::fs::write(path, serde_json::to_string_pretty(&v)?)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
