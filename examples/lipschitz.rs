//! Spectral stability of the paper's Table 1 models (§4.3, Table 5 form): per-layer upper
//! Lipschitz bounds `L_σ · ‖W‖₂` and their product, next to the largest measured ratio
//! `‖f(x + r) − f(x)‖ / ‖r‖` over perturbations of test images, where `f` is the network's
//! pre-softmax output (the logits).
//!
//! The perturbations: Gaussian noise of several scales, a step along the first layer's most
//! stretched input direction, and the adversarial perturbations that the box-constrained
//! L-BFGS attack finds (untargeted, on the first `--adversarial` test images).
//!
//! ```text
//! cargo run --release --example lipschitz -- --json out/lipschitz.json
//! ```

use blindspot::Check;
use std::path::PathBuf;

use blindspot::attack::{Attack, BoxLbfgs, Target};
use blindspot::data::Mnist;
use blindspot::nn::{error_rate, Layer, Network};
use blindspot::spectral::{
    conv_operator_norm, conv_power_iteration, layer_bounds, network_bound, perturbation_ratios,
    power_iteration, LayerBound, Padding, PowerIterationConfig, PowerIterationParams,
};
use blindspot::zoo::{Zoo, TABLE1_AND_CONV};
use clap::Parser;
use ndarray::{s, Array2};
use ndarray_rand::rand_distr::StandardNormal;
use ndarray_rand::RandomExt;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

#[derive(Parser)]
#[command(about = "Per-layer Lipschitz upper bounds vs measured output/input ratios")]
struct Args {
    /// Comma-separated zoo names (default: the six Table 1 models and the convnet).
    #[arg(long, value_delimiter = ',')]
    models: Option<Vec<String>>,
    /// Seed of the models.
    #[arg(long, default_value_t = 1)]
    model_seed: u64,
    /// Zoo cache directory (default: $BLINDSPOT_ZOO, else the user cache directory; see Zoo::default_dir).
    #[arg(long)]
    cache: Option<PathBuf>,
    /// Skip models not in the cache instead of training them.
    #[arg(long)]
    cached_only: bool,
    /// Test images perturbed per noise scale.
    #[arg(long, default_value_t = 1000)]
    n: usize,
    /// Per-pixel standard deviations of the Gaussian perturbations.
    #[arg(long, value_delimiter = ',', default_value = "0.001,0.01,0.1,0.3")]
    sigmas: Vec<f32>,
    /// Seed of the perturbations.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Test images attacked (untargeted BoxLbfgs) for the adversarial perturbations; 0 skips.
    #[arg(long, default_value_t = 200)]
    adversarial: usize,
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

/// The measured ratios of one set on one model (an entry of a model's `measured` in the JSON).
#[derive(Serialize)]
struct Measured {
    source: String,
    #[serde(rename = "pairs")]
    n: usize,
    #[serde(rename = "max_ratio")]
    max: f64,
    #[serde(rename = "mean_ratio")]
    mean: f64,
}

/// The `--json` output.
#[derive(Serialize)]
struct Report<'a> {
    f: &'static str,
    perturbations: &'static str,
    adversarial: usize,
    n: usize,
    sigmas: &'a [f32],
    seed: u64,
    models: Vec<ModelReport<'a>>,
}

/// One model's bounds, checks and measured ratios.
#[derive(Serialize)]
struct ModelReport<'a> {
    model: &'a str,
    seed: u64,
    test_error: f32,
    layers: Vec<LayerRow>,
    network_bound: f64,
    fourier_checks: Vec<FourierCheck>,
    c_bound_above_every_ratio: BoundCheck,
    measured: Vec<Measured>,
}

/// A layer's bound as the JSON gives it: the method by name and the activation in words.
#[derive(Serialize)]
struct LayerRow {
    layer: usize,
    kind: &'static str,
    size: String,
    stride: usize,
    method: &'static str,
    inputs: usize,
    outputs: usize,
    activation: String,
    operator_norm: f64,
    iterations: usize,
    activation_lipschitz: f64,
    bound: f64,
}

impl From<&LayerBound> for LayerRow {
    fn from(b: &LayerBound) -> Self {
        LayerRow {
            layer: b.layer,
            kind: b.kind,
            size: b.size.clone(),
            stride: b.stride,
            method: b.method.name(),
            inputs: b.inputs,
            outputs: b.outputs,
            activation: b.activation.map_or(
                if b.kind == "max-pool" {
                    "none"
                } else {
                    "none (logits)"
                }
                .to_string(),
                |a| a.to_string(),
            ),
            operator_norm: b.operator_norm,
            iterations: b.iterations,
            activation_lipschitz: b.activation_lipschitz,
            bound: b.bound,
        }
    }
}

/// The §4.3 checks (a) and (b) of the Fourier method on one convolution layer.
#[derive(Serialize)]
struct FourierCheck {
    layer: usize,
    a_circular_fourier: f64,
    a_circular_power_iteration: f64,
    a_relative_difference: f64,
    a_pass: bool,
    b_padded_fourier_bound: f64,
    b_padded_power_iteration: f64,
    b_pass: bool,
}

/// Check (c): the product bound is at least the largest measured ratio.
#[derive(Serialize)]
struct BoundCheck {
    largest_ratio: f64,
    pass: bool,
}

fn measure(model: &Network, sets: &[PerturbationSet]) -> blindspot::Result<Vec<Measured>> {
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

/// The input direction the first layer stretches most (its weights' top left singular vector
/// `u`, or for a convolution the top input direction of the zero-padded operator), as
/// `r = ε u` on the same test images for each `ε`. For a one-layer model (FC10) this attains
/// the bound exactly; for deeper ones it shows how much of the first layer's worst case
/// survives the rest of the network.
fn singular_sets(
    model: &Network,
    x: &Array2<f32>,
    eps: &[f32],
) -> blindspot::Result<Vec<PerturbationSet>> {
    let u: Vec<f32> = match &model.layers()[0] {
        Layer::Conv2d(c) => {
            let (h, w, _) = c.input_shape();
            let (_, stride, padding) = c.geometry();
            let est = conv_power_iteration(
                c.kernel()?.view(),
                h,
                w,
                stride,
                Padding::Zero(padding),
                &PowerIterationParams::new(1e-9, 100_000)
                    .with_seed(1)
                    .check()?,
            )?;
            est.input.iter().map(|&e| e as f32).collect()
        }
        _ => {
            let w0 = model.weights(0).expect("a Network has at least one layer");
            power_iteration(w0, &PowerIterationConfig::default().with_seed(1))?
                .left
                .iter()
                .map(|&v| v as f32)
                .collect()
        }
    };
    Ok(eps
        .iter()
        .map(|&e| PerturbationSet {
            source: format!("top singular direction of layer 0, ‖r‖={e}"),
            x: x.clone(),
            r: Array2::from_shape_fn(x.raw_dim(), |(_, j)| e * u[j]),
        })
        .collect())
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

/// The perturbations `r = x' − x` of the adversarial examples the paper's attack finds for
/// `model` on the first `n` test images (successful searches of distortion at least 1e-4; the
/// images the model already misclassifies have no perturbation and are left out, and counted).
fn adversarial_set(model: &Network, mnist: &Mnist, n: usize) -> blindspot::Result<PerturbationSet> {
    let n = n.min(mnist.test.len());
    let x = mnist.test.images().slice(s![..n, ..]).to_owned();
    let labels = &mnist.test.labels()[..n];
    let outs =
        BoxLbfgs::new().attack_batch(model, x.view(), labels, &vec![Target::Untargeted; n])?;
    // Images that lie on a decision boundary need almost no perturbation; below a distortion
    // of 1e-4 the f32 rounding of the logits (about 1e-6 of their size) outweighs the change
    // that r causes, and the measured ratio would be noise.
    let keep: Vec<usize> = (0..n)
        .filter(|&i| !outs[i].already_adversarial && outs[i].success && outs[i].distortion >= 1e-4)
        .collect();
    let already = outs.iter().filter(|o| o.already_adversarial).count();
    let xs = Array2::from_shape_fn((keep.len(), x.ncols()), |(i, j)| x[[keep[i], j]]);
    let rs = Array2::from_shape_fn((keep.len(), x.ncols()), |(i, j)| {
        outs[keep[i]].perturbation[j]
    });
    Ok(PerturbationSet {
        source: format!(
            "adversarial (BoxLbfgs, untargeted), {} of {n} images ({already} already misclassified)",
            keep.len()
        ),
        x: xs,
        r: rs,
    })
}

/// The §4.3 checks of the Fourier method on a model's convolutions, with their numbers:
/// (a) on the layer's own kernel, the Fourier norm of the circular convolution equals power
/// iteration on the circular operator (forward and adjoint) to 1e-4 relative; (b) the Fourier
/// bound of the zero-padded layer is at least power iteration's norm of the zero-padded
/// operator.
fn conv_checks(model: &Network) -> blindspot::Result<Vec<FourierCheck>> {
    let mut out = Vec::new();
    for (i, layer) in model.layers().iter().enumerate() {
        let Layer::Conv2d(c) = layer else { continue };
        let kernel = c.kernel()?;
        let (h, w, _) = c.input_shape();
        let (_, stride, padding) = c.geometry();
        let fourier = conv_operator_norm(kernel.view(), h, w, stride)?;
        let circular = conv_power_iteration(
            kernel.view(),
            h,
            w,
            stride,
            Padding::Circular,
            &PowerIterationParams::new(1e-12, 200_000)
                .with_seed(7)
                .check()?,
        )?;
        let rel = (fourier.value - circular.value).abs() / fourier.value;
        let bound = layer_bounds(model)?
            .into_iter()
            .filter(|b| b.kind == "conv")
            .nth(out.len())
            .map_or(f64::NAN, |b| b.operator_norm);
        let padded = conv_power_iteration(
            kernel.view(),
            h,
            w,
            stride,
            Padding::Zero(padding),
            &PowerIterationParams::new(1e-10, 50_000)
                .with_seed(7)
                .check()?,
        )?;
        println!(
            "- conv layer {i}: (a) circular {h}×{w} grid: Fourier {:.6} vs power iteration {:.6} \
             (relative difference {rel:.2e}) {}; (b) zero-padded bound {bound:.6} ≥ power \
             iteration {:.6}: {}",
            fourier.value,
            circular.value,
            if rel <= 1e-4 { "PASS" } else { "FAIL" },
            padded.value,
            if bound >= padded.value * (1.0 - 1e-9) {
                "PASS"
            } else {
                "FAIL"
            },
        );
        out.push(FourierCheck {
            layer: i,
            a_circular_fourier: fourier.value,
            a_circular_power_iteration: circular.value,
            a_relative_difference: rel,
            a_pass: rel <= 1e-4,
            b_padded_fourier_bound: bound,
            b_padded_power_iteration: padded.value,
            b_pass: bound >= padded.value * (1.0 - 1e-9),
        });
    }
    Ok(out)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let mnist = match &args.data {
        Some(dir) => Mnist::load(dir)?,
        None => Mnist::load_default()?,
    };
    if args.sigmas.is_empty() {
        return Err("need at least one --sigmas value".into());
    }
    let sets = gaussian_sets(&mnist, args.n, &args.sigmas, args.seed);
    let mut summary = Vec::new();
    let mut out = Vec::new();
    println!(
        "f = pre-softmax output (logits); layer bound = ‖W‖₂ (power iteration) × Lipschitz \
         constant of the activation after it (sigmoid 1/4; none on the last layer; the softmax \
         is 1-Lipschitz, so the product also bounds the probabilities).\n"
    );
    let zoo = match &args.cache {
        Some(dir) => Zoo::in_dir(dir),
        None => Zoo::new(),
    };
    let names: Vec<String> = match &args.models {
        Some(m) => m.iter().map(|s| s.trim().to_string()).collect(),
        None => TABLE1_AND_CONV.iter().map(|s| s.to_string()).collect(),
    };
    for name in names.iter().map(String::as_str) {
        let path = zoo.cache_path(name, args.model_seed, "mnist-train", mnist.train.len());
        if args.cached_only && !path.is_file() {
            eprintln!("{name}: not cached at {} (skipped)", path.display());
            continue;
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
        let model: Network = entry.model;
        let bounds = layer_bounds(&model)?;
        let product = network_bound(&bounds);
        let mut model_sets = singular_sets(&model, &sets[0].x, &[0.1, 1.0])?;
        model_sets.extend(sets.iter().map(|s| PerturbationSet {
            source: s.source.clone(),
            x: s.x.clone(),
            r: s.r.clone(),
        }));
        if args.adversarial > 0 {
            model_sets.push(adversarial_set(&model, &mnist, args.adversarial)?);
        }
        let measured = measure(&model, &model_sets)?;
        let test_error = error_rate(&model, &mnist.test)?;
        println!("### {name} (test error {:.2}%)\n", 100.0 * test_error);
        println!(
            "| layer | kind | size | stride | method | activation | ‖W‖₂ | L(act) | upper bound |"
        );
        println!("|---|---|---|---|---|---|---|---|---|");
        for b in &bounds {
            println!(
                "| {} | {} | {} | {} | {} | {} | {:.4} | {} | {:.4} |",
                b.layer,
                b.kind,
                b.size,
                b.stride,
                b.method.name(),
                b.activation.map_or(
                    if b.kind == "max-pool" {
                        "—"
                    } else {
                        "— (logits)"
                    }
                    .to_string(),
                    |a| a.to_string()
                ),
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
        let checks = conv_checks(&model)?;
        let max_ratio = measured.iter().map(|m| m.max).fold(0.0, f64::max);
        let c_pass = max_ratio <= product;
        println!(
            "- (c) product bound {product:.4} ≥ every measured ratio (largest {max_ratio:.4}): {}\n",
            if c_pass { "PASS" } else { "FAIL" }
        );
        let worst = |prefix: &str| {
            measured
                .iter()
                .filter(|m| m.source.starts_with(prefix))
                .map(|m| m.max)
                .fold(0.0, f64::max)
        };
        summary.push((
            name.to_string(),
            product,
            worst("gaussian"),
            worst("top singular"),
            worst("adversarial"),
        ));
        let m = ModelReport {
            model: name,
            seed: args.model_seed,
            test_error,
            layers: bounds.iter().map(LayerRow::from).collect(),
            network_bound: product,
            fourier_checks: checks,
            c_bound_above_every_ratio: BoundCheck {
                largest_ratio: max_ratio,
                pass: c_pass,
            },
            measured,
        };
        out.push(m);
    }
    println!("### Summary\n");
    println!(
        "| model | product bound | max ratio, Gaussian | / bound | max ratio, W0 top direction | / bound | max ratio, adversarial | / bound |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (name, bound, gauss, top, adv) in &summary {
        println!(
            "| {name} | {bound:.4} | {gauss:.4} | {:.3} | {top:.4} | {:.3} | {adv:.4} | {:.3} |",
            gauss / bound,
            top / bound,
            adv / bound
        );
    }
    if let Some(path) = &args.json {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let v = Report {
            f: "pre-softmax output (logits)",
            perturbations: "Gaussian N(0, σ²) per pixel on the first n test images, unclipped; \
                ε·(top left singular vector of W0) on the same images; adversarial perturbations \
                of untargeted BoxLbfgs on the first `adversarial` test images",
            adversarial: args.adversarial,
            n: args.n.min(mnist.test.len()),
            sigmas: &args.sigmas,
            seed: args.seed,
            models: out,
        };
        std::fs::write(path, serde_json::to_string_pretty(&v)?)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
