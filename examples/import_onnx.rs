//! Your model at native speed: import an ONNX classifier into the crate's own network, check
//! that it computes what its framework computed, and attack it.
//!
//! ```text
//! python3 scripts/train_torch_convnet.py target/onnx/torch_convnet.onnx
//! cargo run --release --example import_onnx -- --onnx target/onnx/torch_convnet.onnx \
//!     --images 100 --json target/onnx/import.json [--compare CONV16-32-FC128-10]
//! ```
//!
//! The import is verified against the reference batch stored in the file (by
//! `scripts/export_onnx.py`) or given with `--reference FILE.npz` (arrays `inputs`, NCHW or
//! `N × D`, and `logits`); a disagreement beyond `--tolerance` stops the run. With 784 inputs
//! the MNIST test error is reported, and the first `--images` test images are attacked
//! (untargeted box-constrained L-BFGS). `--compare NAME` attacks the zoo model `NAME` on the
//! same images too, alternating image by image (so a noisy machine slows both alike), and
//! reports the per-image medians and their ratio. JSON fields: `agreement`, `checked`,
//! `max_logit_diff`, `test_error`, `already_misclassified`, `success_rate`, `mean_distortion`,
//! `ms_per_image` (and, with `--compare`, the other model's figures). The test images a model
//! already misclassifies are not searched: `already_misclassified` counts them, and the
//! success rate, mean distortion and timings are over the other images.

use blindspot::Check;
use std::path::PathBuf;
use std::time::Instant;

use blindspot::attack::{Attack, BoxLbfgs, Outcome, OutcomeSummary, Target};
use blindspot::data::Mnist;
use blindspot::import::onnx::{self, nchw_to_rows, OnnxParams};
use blindspot::import::{verify, Agreement, NpzWeights};
use blindspot::nn::{error_rate, Network, Trainable};
use blindspot::zoo::Zoo;
use blindspot::{Classifier, Differentiable};
use clap::Parser;
use ndarray::{s, Array2, Ix2};
use serde::Serialize;

#[derive(Parser)]
#[command(about = "Import an ONNX classifier into the crate's network, verify it, attack it")]
struct Args {
    /// The ONNX file.
    #[arg(long)]
    onnx: PathBuf,
    /// A reference batch (.npz with `inputs` and `logits`) to verify against instead of the
    /// file's own.
    #[arg(long)]
    reference: Option<PathBuf>,
    /// Largest absolute logit difference accepted.
    #[arg(long, default_value_t = onnx::DEFAULT_TOLERANCE)]
    tolerance: f32,
    /// Import without checking against any reference batch.
    #[arg(long)]
    skip_verification: bool,
    /// MNIST test images attacked (the first N); 0 for none.
    #[arg(long, default_value_t = 100)]
    images: usize,
    /// A model attacked on the same images, alternating, for a cost ratio: a zoo model's name,
    /// or `folded` for the crate's own network of the same architecture with the input
    /// normalisation folded into the first layer (no `InputAffine`; at a zero-padded
    /// convolution's border the fold is approximate, elsewhere exact).
    #[arg(long)]
    compare: Option<String>,
    /// Seed of the zoo model.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where to write the JSON summary.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        0.5 * (v[m - 1] + v[m])
    }
}

/// Attacks one image, returning the outcome and the milliseconds it took.
fn timed<M: Differentiable>(
    model: &M,
    x: ndarray::ArrayView1<'_, f32>,
    y: usize,
) -> (Outcome, f64) {
    let t = Instant::now();
    let o = BoxLbfgs::new()
        .attack(model, x, y, Target::Untargeted)
        .expect("attack on a checked model and input");
    (o, 1e3 * t.elapsed().as_secs_f64())
}

/// One model's attack figures over the images it did not already misclassify (times and
/// evaluations of the searched images only), and the count of the others.
struct Summary {
    already_misclassified: usize,
    success_rate: f64,
    mean_distortion: f64,
    ms: Vec<f64>,
    evaluations: Vec<f64>,
}

impl Summary {
    fn new(outs: &[Outcome], ms: Vec<f64>) -> Self {
        let s = OutcomeSummary::of(outs);
        let searched = |i: &usize| !outs[*i].already_adversarial;
        Summary {
            already_misclassified: s.already_adversarial,
            success_rate: s.success_rate,
            mean_distortion: s.mean_distortion,
            evaluations: (0..outs.len())
                .filter(searched)
                .map(|i| outs[i].evaluations as f64)
                .collect(),
            ms: (0..outs.len()).filter(searched).map(|i| ms[i]).collect(),
        }
    }

    fn ms_per_image(&self) -> f64 {
        self.ms.iter().sum::<f64>() / self.ms.len().max(1) as f64
    }

    fn ms_per_evaluation(&self) -> Vec<f64> {
        self.ms
            .iter()
            .zip(&self.evaluations)
            .map(|(m, e)| m / e.max(1.0))
            .collect()
    }
}

/// The `--json` summary.
#[derive(Serialize)]
struct Report {
    onnx: String,
    /// `null` when the import was not verified (nor `checked`, `max_logit_diff`).
    agreement: Option<usize>,
    checked: Option<usize>,
    max_logit_diff: Option<f32>,
    /// `null` unless the model takes MNIST images (784 inputs).
    test_error: Option<f32>,
    /// The attack's figures, when images were attacked.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    attack: Option<AttackFigures>,
    #[serde(skip_serializing_if = "Option::is_none")]
    compare: Option<Compare>,
}

/// The attack on the imported model.
#[derive(Serialize)]
struct AttackFigures {
    already_misclassified: usize,
    success_rate: f64,
    mean_distortion: f64,
    ms_per_image: f64,
    median_ms_per_image: f64,
    median_ms_per_evaluation: f64,
    images: usize,
}

/// The attack on the `--compare` model, and the imported model's cost relative to it.
#[derive(Serialize)]
struct Compare {
    model: String,
    already_misclassified: usize,
    success_rate: f64,
    mean_distortion: f64,
    ms_per_image: f64,
    median_ms_per_image: f64,
    median_ms_per_evaluation: f64,
    ratio_median_ms_per_image: f64,
    ratio_median_ms_per_evaluation: f64,
}

/// `net` without its input normalisation, folded into the first layer's weights and bias.
fn folded(net: &Network) -> blindspot::Result<Network> {
    let mut params: Vec<Array2<f32>> = net.params().into_iter().cloned().collect();
    if let Some(a) = net.input_affine() {
        let c = a.channels();
        let (w, b) = params.split_at_mut(1);
        for (r, mut row) in w[0].outer_iter_mut().enumerate() {
            let (scale, shift) = (a.scale()[r % c], a.shift()[r % c]);
            for (o, v) in row.iter_mut().enumerate() {
                b[0][[0, o]] += *v * shift;
                *v *= scale;
            }
        }
    }
    Network::from_params(net.arch().clone(), params)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let params = OnnxParams::default()
        .with_tolerance(args.tolerance)
        .with_skip_verification(args.skip_verification || args.reference.is_some())
        .check()?;
    let model = onnx::load_with(&args.onnx, &params)?;
    let net = &model.network;
    eprintln!(
        "imported {}: {} → {} classes, {} layers, input normalisation: {}",
        args.onnx.display(),
        net.input_dim(),
        net.num_classes(),
        net.layers().len(),
        net.input_affine().is_some()
    );
    let agreement: Option<Agreement> = match (&args.reference, args.skip_verification) {
        (_, true) => None,
        (Some(path), false) => {
            let npz = NpzWeights::open(path)?;
            let x = npz.get("inputs")?;
            let z = npz
                .get("logits")?
                .view()
                .into_dimensionality::<Ix2>()?
                .to_owned();
            let n = x.shape().first().copied().unwrap_or(0);
            let x = Array2::from_shape_vec((n, x.len() / n.max(1)), x.iter().copied().collect())?;
            let x = match model.image {
                Some((h, w, c)) => nchw_to_rows(x.view(), (c, h, w)),
                None => x,
            };
            Some(verify(net, x.view(), z.view(), args.tolerance)?)
        }
        (None, false) => model.verified,
    };
    match &agreement {
        Some(a) => println!(
            "verified: {}/{} same class, largest logit difference {:.2e}",
            a.agree, a.checked, a.max_logit_diff
        ),
        None => println!("not verified (no reference batch, or skipped)"),
    }

    let mnist = if net.input_dim() == 784 {
        Some(Mnist::load_default()?)
    } else {
        None
    };
    let test_error = match &mnist {
        Some(m) => Some(error_rate(net, &m.test)?),
        None => None,
    };
    if let Some(e) = test_error {
        println!("MNIST test error {:.2}%", 100.0 * e);
    }

    let mut report = Report {
        onnx: args.onnx.display().to_string(),
        agreement: agreement.map(|a| a.agree),
        checked: agreement.map(|a| a.checked),
        max_logit_diff: agreement.map(|a| a.max_logit_diff),
        test_error,
        attack: None,
        compare: None,
    };
    if let (Some(mnist), true) = (&mnist, args.images > 0) {
        let n = args.images.min(mnist.test.len());
        let xs = mnist.test.images().slice(s![..n, ..]).to_owned();
        let ys = &mnist.test.labels()[..n];
        let other: Option<Network> = match args.compare.as_deref() {
            Some("folded") => Some(folded(net)?),
            Some(name) => Some(
                Zoo::new()
                    .model(name, args.seed, &mnist.train, "mnist-train")?
                    .model,
            ),
            None => None,
        };
        let (mut ours, mut ours_ms, mut theirs, mut theirs_ms) = (vec![], vec![], vec![], vec![]);
        for (i, (x, &y)) in xs.outer_iter().zip(ys).enumerate() {
            // Alternating which model goes first, image by image.
            let run_other = |theirs: &mut Vec<Outcome>, theirs_ms: &mut Vec<f64>| {
                if let Some(o) = &other {
                    let (out, ms) = timed(o, x, y);
                    theirs.push(out);
                    theirs_ms.push(ms);
                }
            };
            if i % 2 == 1 {
                run_other(&mut theirs, &mut theirs_ms);
            }
            let (out, ms) = timed(net, x, y);
            ours.push(out);
            ours_ms.push(ms);
            if i % 2 == 0 {
                run_other(&mut theirs, &mut theirs_ms);
            }
            eprintln!(
                "image {i}: imported {ms:.0} ms ({} evaluations){}",
                ours[i].evaluations,
                theirs
                    .get(i)
                    .map(|o| format!(
                        ", compared {:.0} ms ({} evaluations)",
                        theirs_ms[i], o.evaluations
                    ))
                    .unwrap_or_default()
            );
        }
        let a = Summary::new(&ours, ours_ms);
        println!(
            "attack on {n} test images, {} already misclassified; over the others: success rate \
             {:.3}, mean distortion {:.4}, {:.1} ms/image (median {:.1}), median {:.3} \
             ms/evaluation",
            a.already_misclassified,
            a.success_rate,
            a.mean_distortion,
            a.ms_per_image(),
            median(&mut a.ms.clone()),
            median(&mut a.ms_per_evaluation())
        );
        report.attack = Some(AttackFigures {
            already_misclassified: a.already_misclassified,
            success_rate: a.success_rate,
            mean_distortion: a.mean_distortion,
            ms_per_image: a.ms_per_image(),
            median_ms_per_image: median(&mut a.ms.clone()),
            median_ms_per_evaluation: median(&mut a.ms_per_evaluation()),
            images: n,
        });
        if let Some(name) = &args.compare {
            let b = Summary::new(&theirs, theirs_ms);
            let ratio = median(&mut a.ms.clone()) / median(&mut b.ms.clone());
            let ratio_eval =
                median(&mut a.ms_per_evaluation()) / median(&mut b.ms_per_evaluation());
            println!(
                "{name}: {} already misclassified; over the others: success rate {:.3}, mean \
                 distortion {:.4}, {:.1} ms/image (median {:.1}), median {:.3} ms/evaluation; \
                 imported / {name}: {:.2}× per image, {:.2}× per evaluation (medians)",
                b.already_misclassified,
                b.success_rate,
                b.mean_distortion,
                b.ms_per_image(),
                median(&mut b.ms.clone()),
                median(&mut b.ms_per_evaluation()),
                ratio,
                ratio_eval
            );
            report.compare = Some(Compare {
                model: name.clone(),
                already_misclassified: b.already_misclassified,
                success_rate: b.success_rate,
                mean_distortion: b.mean_distortion,
                ms_per_image: b.ms_per_image(),
                median_ms_per_image: median(&mut b.ms.clone()),
                median_ms_per_evaluation: median(&mut b.ms_per_evaluation()),
                ratio_median_ms_per_image: ratio,
                ratio_median_ms_per_evaluation: ratio_eval,
            });
        }
    }
    if let Some(path) = &args.json {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
