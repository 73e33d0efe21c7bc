//! Bring your own model: a small convnet defined and trained in candle, then attacked, transferred
//! and probed by the crate's tools through the trait API (cargo feature `candle`).
//!
//! ```text
//! cargo run --release --features candle --example candle_model -- --json out/candle/candle.json
//! ```
//!
//! 1. Trains a convnet (conv5×5·8 → pool → conv5×5·16 → pool → dense 100 → 10, ReLU) with
//!    candle's AdamW on MNIST for `--epochs` (about a minute per epoch on 2 cores).
//! 2. Freezes its weights (detached tensors: the attack's backward pass then computes only the
//!    input gradient) and wraps it in [`CandleModel`], with its dense hidden layer `fc1` readable.
//! 3. Table 1-style row: box-constrained L-BFGS, untargeted, on the first `--images` training
//!    images: success rate, mean distortion, ms per image. As in Table 1, the images the model
//!    already misclassifies are not searched: every attack run counts them
//!    (`already_misclassified`) and its success rate, mean distortion, ms and evaluations per
//!    image are over the other images (transfer errors are over all of them).
//! 4. Transfer against the zoo's FC100-100-10 (trained and cached on first use) in both
//!    directions, as made and magnified to distortion 0.1.
//! 5. The cost of the framework boundary: the same FC100-100-10 weights attacked through candle
//!    and as the crate's own `Network`, and through [`FiniteDifference`] on `--fd-images` images.
//! 6. The §3 probe (unit vs random directions) on `fc1`, with the test set as the pool.

use blindspot::Check;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

#[path = "common/probe_json.rs"]
mod probe_json;
use probe_json::{DiffJson, Group};

use blindspot::adapters::{tensor_from_array, CandleModel, FiniteDifference};
use blindspot::attack::{
    magnify, transfer_error, Attack, BoxLbfgsParams, Outcome, OutcomeSummary, Target,
};
use blindspot::data::Mnist;
use blindspot::nn::{error_rate, Network};
use blindspot::probe::{study, ProbeParams, ProbeReport};
use blindspot::zoo::Zoo;
use blindspot::{Differentiable, Representation};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Conv2d, Linear, Optimizer, VarBuilder, VarMap};
use clap::Parser;
use ndarray::{s, Array2, ArrayView2};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

#[derive(Parser)]
#[command(about = "Train a candle convnet on MNIST, then attack, transfer and probe it")]
struct Args {
    /// Training epochs over `--train-images`.
    #[arg(long, default_value_t = 1)]
    epochs: usize,
    /// Training images (the first N of the training set).
    #[arg(long, default_value_t = 60_000)]
    train_images: usize,
    /// Minibatch size.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// AdamW learning rate.
    #[arg(long, default_value_t = 2e-3)]
    lr: f64,
    /// Seed of the initial weights and the minibatch order.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Training images attacked (the first N).
    #[arg(long, default_value_t = 100)]
    images: usize,
    /// Bisection steps of the attack's search over c.
    #[arg(long, default_value_t = 5)]
    search_steps: usize,
    /// Images attacked through the finite-difference adapter (slow: seconds per image).
    #[arg(long, default_value_t = 4)]
    fd_images: usize,
    /// Difference step of the finite-difference adapter.
    #[arg(long, default_value_t = blindspot::adapters::DEFAULT_STEP)]
    fd_step: f32,
    /// Distortion the transferred examples are magnified to (paper's Table 4 uses 0.1).
    #[arg(long, default_value_t = 0.1)]
    magnify_to: f64,
    /// Write every figure as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// conv5×5(1→8) → ReLU → max-pool 2 → conv5×5(8→16) → ReLU → max-pool 2 → dense 256→100 →
/// ReLU (`fc1`, the probed layer) → dense 100→10.
struct ConvNet {
    conv1: Conv2d,
    conv2: Conv2d,
    fc1: Linear,
    fc2: Linear,
}

impl ConvNet {
    const NAME: &'static str = "conv5x5x8-pool-conv5x5x16-pool-fc100-10 (ReLU)";

    fn new(vb: VarBuilder) -> candle_core::Result<Self> {
        let cfg = Default::default();
        Ok(ConvNet {
            conv1: candle_nn::conv2d(1, 8, 5, cfg, vb.pp("conv1"))?,
            conv2: candle_nn::conv2d(8, 16, 5, cfg, vb.pp("conv2"))?,
            fc1: candle_nn::linear(16 * 4 * 4, 100, vb.pp("fc1"))?,
            fc2: candle_nn::linear(100, 10, vb.pp("fc2"))?,
        })
    }

    /// The `fc1` activations for a batch `[n, 1, 28, 28]`.
    fn hidden(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let x = self.conv1.forward(x)?.relu()?.max_pool2d(2)?;
        let x = self.conv2.forward(&x)?.relu()?.max_pool2d(2)?;
        self.fc1.forward(&x.flatten_from(1)?)?.relu()
    }
}

impl Module for ConvNet {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.fc2.forward(&self.hidden(x)?)
    }
}

/// He-uniform weights and zero biases from a seeded generator (candle's CPU generator cannot be
/// seeded), set in name order so that a seed gives the same network.
fn seed_weights(varmap: &mut VarMap, seed: u64, dev: &Device) -> candle_core::Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut vars: Vec<(String, Vec<usize>)> = varmap
        .data()
        .lock()
        .expect("VarMap lock")
        .iter()
        .map(|(k, v)| (k.clone(), v.dims().to_vec()))
        .collect();
    vars.sort();
    for (name, dims) in vars {
        let count: usize = dims.iter().product();
        let values: Vec<f32> = if dims.len() == 1 {
            vec![0.0; count]
        } else {
            let fan_in = count / dims[0];
            let bound = (6.0 / fan_in as f32).sqrt();
            (0..count).map(|_| rng.gen_range(-bound..bound)).collect()
        };
        varmap.set_one(&name, Tensor::from_vec(values, dims, dev)?)?;
    }
    Ok(())
}

/// Trains the convnet with AdamW; returns the trained variables and the seconds it took.
fn train(
    args: &Args,
    images: ArrayView2<'_, f32>,
    labels: &[usize],
    dev: &Device,
) -> Result<(VarMap, f64), Box<dyn std::error::Error>> {
    let mut varmap = VarMap::new();
    let net = ConvNet::new(VarBuilder::from_varmap(&varmap, DType::F32, dev))?;
    seed_weights(&mut varmap, args.seed, dev)?;
    let mut opt = candle_nn::AdamW::new(
        varmap.all_vars(),
        candle_nn::ParamsAdamW {
            lr: args.lr,
            weight_decay: 0.0,
            ..Default::default()
        },
    )?;
    let n = images.nrows();
    let xs = tensor_from_array(images, dev)?.reshape((n, 1, 28, 28))?;
    let ys = Tensor::from_vec(labels.iter().map(|&l| l as u32).collect::<Vec<_>>(), n, dev)?;
    let mut order: Vec<u32> = (0..n as u32).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed ^ 0x5eed);
    let start = Instant::now();
    for epoch in 0..args.epochs {
        order.shuffle(&mut rng);
        let (mut sum, mut batches) = (0.0, 0);
        for chunk in order.chunks(args.batch) {
            let idx = Tensor::from_slice(chunk, chunk.len(), dev)?;
            let logits = net.forward(&xs.index_select(&idx, 0)?)?;
            let loss = candle_nn::loss::cross_entropy(&logits, &ys.index_select(&idx, 0)?)?;
            opt.backward_step(&loss)?;
            sum += loss.to_scalar::<f32>()? as f64;
            batches += 1;
        }
        eprintln!(
            "epoch {}: mean training loss {:.4} ({:.1} s)",
            epoch + 1,
            sum / batches as f64,
            start.elapsed().as_secs_f64()
        );
    }
    Ok((varmap, start.elapsed().as_secs_f64()))
}

/// The trained network rebuilt from detached copies of its weights: nothing in it is a
/// tracked variable, so a backward pass computes the input gradient only.
fn frozen(varmap: &VarMap, dev: &Device) -> candle_core::Result<ConvNet> {
    let tensors: HashMap<String, Tensor> = varmap
        .data()
        .lock()
        .expect("VarMap lock")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
        .collect();
    ConvNet::new(VarBuilder::from_tensors(tensors, DType::F32, dev))
}

/// The crate's sigmoid `Network` rebuilt in candle (weights `out × in`, as `candle_nn::Linear` and
/// PyTorch store them), to measure what the framework boundary costs on identical weights.
struct CandleFc {
    layers: Vec<Linear>,
}

impl CandleFc {
    fn from_mlp(mlp: &Network, dev: &Device) -> blindspot::Result<Self> {
        let layers = (0..mlp.num_dense())
            .map(|l| {
                let w = mlp.weights(l).expect("layer exists").t().to_owned();
                let b = mlp
                    .bias(l)
                    .expect("layer exists")
                    .insert_axis(ndarray::Axis(0));
                let b = tensor_from_array(b, dev)?
                    .flatten_all()
                    .expect("flatten a 1 × n tensor");
                Ok(Linear::new(tensor_from_array(w.view(), dev)?, Some(b)))
            })
            .collect::<blindspot::Result<_>>()?;
        Ok(CandleFc { layers })
    }
}

impl Module for CandleFc {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut a = x.clone();
        for (l, layer) in self.layers.iter().enumerate() {
            a = layer.forward(&a)?;
            if l + 1 < self.layers.len() {
                a = candle_nn::ops::sigmoid(&a)?;
            }
        }
        Ok(a)
    }
}

/// One attack run's figures.
struct Run {
    outs: Vec<Outcome>,
    seconds: f64,
}

impl Run {
    fn new<M: Differentiable + ?Sized>(
        model: &M,
        xs: ArrayView2<'_, f32>,
        labels: &[usize],
        search_steps: usize,
    ) -> blindspot::Result<Run> {
        let attack = BoxLbfgsParams::default()
            .with_search_steps(search_steps)
            .check()?;
        let targets = vec![Target::Untargeted; xs.nrows()];
        let t = Instant::now();
        let outs = attack.attack_batch(model, xs, labels, &targets)?;
        Ok(Run {
            outs,
            seconds: t.elapsed().as_secs_f64(),
        })
    }

    /// The figures over the searched images, those already misclassified counted apart.
    fn summary(&self) -> OutcomeSummary {
        OutcomeSummary::of(&self.outs)
    }

    fn success_rate(&self) -> f64 {
        self.summary().success_rate
    }

    fn mean_distortion(&self) -> f64 {
        self.summary().mean_distortion
    }

    /// Per searched image.
    fn ms_per_image(&self) -> f64 {
        1e3 * self.seconds / self.summary().searched.max(1) as f64
    }

    fn evaluations_per_image(&self) -> f64 {
        self.summary().evaluations_per_image
    }

    fn adversarial(&self) -> Array2<f32> {
        let m = self.outs[0].adversarial.len();
        let mut adv = Array2::zeros((self.outs.len(), m));
        for (mut row, o) in adv.rows_mut().into_iter().zip(&self.outs) {
            row.assign(&o.adversarial);
        }
        adv
    }

    /// The adversarial examples magnified to `target` distortion; an example that cannot reach
    /// it (the perturbation saturates the box first, or is zero because the model already
    /// misclassified the image) is kept as it is, and counted.
    fn magnified(&self, xs: ArrayView2<'_, f32>, target: f64) -> (Array2<f32>, usize) {
        let mut adv = self.adversarial();
        let mut kept = 0;
        for (i, mut row) in adv.rows_mut().into_iter().enumerate() {
            match magnify(xs.row(i), row.view(), target) {
                Ok(m) => row.assign(&m),
                Err(_) => kept += 1,
            }
        }
        (adv, kept)
    }

    fn figures(&self) -> RunJson {
        RunJson {
            images: self.outs.len(),
            already_misclassified: self.summary().already_adversarial,
            success_rate: self.success_rate(),
            mean_distortion: self.mean_distortion(),
            ms_per_image: self.ms_per_image(),
            evaluations_per_image: self.evaluations_per_image(),
            seconds: self.seconds,
        }
    }
}

/// The `--json` output (also printed).
#[derive(Serialize)]
struct Report {
    model: ModelJson,
    attack: AttackJson,
    transfer: TransferJson,
    boundary: BoundaryJson,
    probe: ProbeJson,
    wall_seconds: f64,
}

/// The candle convnet and its training.
#[derive(Serialize)]
struct ModelJson {
    architecture: &'static str,
    framework: &'static str,
    epochs: usize,
    train_images: usize,
    batch: usize,
    lr: f64,
    seed: u64,
    train_seconds: f64,
    train_error: f32,
    test_error: f32,
}

/// One attack run's figures: over the searched images, those already misclassified counted
/// apart.
#[derive(Serialize)]
struct RunJson {
    images: usize,
    already_misclassified: usize,
    success_rate: f64,
    mean_distortion: f64,
    ms_per_image: f64,
    evaluations_per_image: f64,
    seconds: f64,
}

/// The attack on the convnet through candle's autograd.
#[derive(Serialize)]
struct AttackJson {
    set: &'static str,
    target: &'static str,
    search_steps: usize,
    #[serde(flatten)]
    run: RunJson,
}

/// Transfer between the convnet and the zoo's FC100-100-10.
#[derive(Serialize)]
struct TransferJson {
    fc_model: &'static str,
    fc_train_seconds: f64,
    fc_from_cache: bool,
    fc_test_error: f32,
    fc_attack: RunJson,
    clean_error: CleanError,
    convnet_to_fc: Transfer,
    fc_to_convnet: Transfer,
}

/// Each model's error on the clean attacked images.
#[derive(Serialize)]
struct CleanError {
    convnet: f32,
    fc: f32,
}

/// One direction of transfer: both models' errors on the examples made for one of them, as
/// they are and magnified.
#[derive(Serialize)]
struct Transfer {
    convnet_error: f32,
    fc_error: f32,
    /// Over the successful searched images (those the source model already misclassifies,
    /// with their zero perturbation, count in the errors but not here).
    mean_distortion: f64,
    magnified_to: f64,
    magnified_fc_error: f32,
    magnified_convnet_error: f32,
    /// Examples kept as they were: among them those already misclassified, whose zero
    /// perturbation has no direction.
    not_magnifiable: usize,
}

/// The framework boundary on identical weights: the crate's network, candle, finite differences.
#[derive(Serialize)]
struct BoundaryJson {
    model: &'static str,
    mlp: RunJson,
    candle: RunJson,
    candle_over_mlp_time: f64,
    finite_difference: FiniteDifferenceJson,
}

/// The attack through the finite-difference adapter, and the exact one on the same images.
#[derive(Serialize)]
struct FiniteDifferenceJson {
    step: f32,
    run: RunJson,
    mlp_same_images: RunJson,
    fd_over_mlp_time: f64,
}

/// The probe of the convnet's hidden layer, intervals as `[lo, hi]` pairs.
#[derive(Serialize)]
struct ProbeJson {
    layer: &'static str,
    layer_dim: usize,
    k: usize,
    heldout: usize,
    unit: Group,
    random: Group,
    baseline_purity_mean: f64,
    purity_difference_unit_minus_random: DiffJson,
    spread_difference_unit_minus_random: DiffJson,
}

impl ProbeJson {
    fn new(r: &ProbeReport) -> Self {
        ProbeJson {
            layer: "fc1",
            layer_dim: r.layer_dim,
            k: r.k,
            heldout: r.heldout,
            unit: (&r.unit).into(),
            random: (&r.random).into(),
            baseline_purity_mean: r.baseline.purity_mean,
            purity_difference_unit_minus_random: (&r.purity_difference).into(),
            spread_difference_unit_minus_random: (&r.spread_difference).into(),
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let start_all = Instant::now();
    let dev = Device::Cpu;
    let mnist = Mnist::load_default()?;
    let n_train = args.train_images.clamp(1, mnist.train.len());
    let n = args.images.clamp(1, mnist.train.len());
    let xs = mnist.train.images().slice(s![..n, ..]).to_owned();
    let labels = &mnist.train.labels()[..n];

    // 1–2. Train in candle, freeze, wrap.
    let (varmap, train_seconds) = train(
        &args,
        mnist.train.images().slice(s![..n_train, ..]),
        &mnist.train.labels()[..n_train],
        &dev,
    )?;
    let net = CandleModel::on_device(frozen(&varmap, &dev)?, &[1, 28, 28], 10, dev.clone())?
        .try_with_hidden("fc1", |net: &ConvNet, x| net.hidden(x))?;
    let conv_train_error = error_rate(&net, &mnist.train)?;
    let conv_test_error = error_rate(&net, &mnist.test)?;
    eprintln!(
        "convnet: trained in {train_seconds:.1} s; error {:.2}% train, {:.2}% test",
        100.0 * conv_train_error,
        100.0 * conv_test_error
    );

    // 3. The attack through candle's autograd.
    let conv_run = Run::new(&net, xs.view(), labels, args.search_steps)?;
    eprintln!(
        "convnet attack: {} of {n} images already misclassified; over the others success {:.3}, mean distortion {:.4}, {:.1} ms/image, {:.0} evaluations/image",
        conv_run.summary().already_adversarial,
        conv_run.success_rate(),
        conv_run.mean_distortion(),
        conv_run.ms_per_image(),
        conv_run.evaluations_per_image()
    );

    // 4. Transfer against the zoo's FC100-100-10.
    let entry = Zoo::new().model("FC100-100-10", 1, &mnist.train, "mnist-train")?;
    let fc = entry.model;
    let fc_test_error = error_rate(&fc, &mnist.test)?;
    let fc_run = Run::new(&fc, xs.view(), labels, args.search_steps)?;
    let conv_adv = conv_run.adversarial();
    let fc_adv = fc_run.adversarial();
    let (conv_big, conv_kept) = conv_run.magnified(xs.view(), args.magnify_to);
    let (fc_big, fc_kept) = fc_run.magnified(xs.view(), args.magnify_to);
    let transfer = TransferJson {
        fc_model: "FC100-100-10",
        fc_train_seconds: entry.train_seconds,
        fc_from_cache: entry.from_cache,
        fc_test_error,
        fc_attack: fc_run.figures(),
        clean_error: CleanError {
            convnet: transfer_error(&net, xs.view(), labels)?,
            fc: transfer_error(&fc, xs.view(), labels)?,
        },
        convnet_to_fc: Transfer {
            convnet_error: transfer_error(&net, conv_adv.view(), labels)?,
            fc_error: transfer_error(&fc, conv_adv.view(), labels)?,
            mean_distortion: conv_run.mean_distortion(),
            magnified_to: args.magnify_to,
            magnified_fc_error: transfer_error(&fc, conv_big.view(), labels)?,
            magnified_convnet_error: transfer_error(&net, conv_big.view(), labels)?,
            not_magnifiable: conv_kept,
        },
        fc_to_convnet: Transfer {
            fc_error: transfer_error(&fc, fc_adv.view(), labels)?,
            convnet_error: transfer_error(&net, fc_adv.view(), labels)?,
            mean_distortion: fc_run.mean_distortion(),
            magnified_to: args.magnify_to,
            magnified_convnet_error: transfer_error(&net, fc_big.view(), labels)?,
            magnified_fc_error: transfer_error(&fc, fc_big.view(), labels)?,
            not_magnifiable: fc_kept,
        },
    };
    eprintln!("transfer: {}", serde_json::to_string_pretty(&transfer)?);

    // 5. The framework boundary on identical weights: Network, candle, finite differences.
    let fc_candle = CandleModel::on_device(CandleFc::from_mlp(&fc, &dev)?, &[784], 10, dev)?;
    let candle_run = Run::new(&fc_candle, xs.view(), labels, args.search_steps)?;
    let k = args.fd_images.clamp(1, n);
    let fd = FiniteDifference::new(fc.clone(), args.fd_step)?;
    let fd_run = Run::new(&fd, xs.slice(s![..k, ..]), &labels[..k], args.search_steps)?;
    let exact_k = Run::new(&fc, xs.slice(s![..k, ..]), &labels[..k], args.search_steps)?;
    let boundary = BoundaryJson {
        model: "FC100-100-10 (zoo weights)",
        mlp: fc_run.figures(),
        candle: candle_run.figures(),
        candle_over_mlp_time: candle_run.seconds / fc_run.seconds,
        finite_difference: FiniteDifferenceJson {
            step: args.fd_step,
            run: fd_run.figures(),
            mlp_same_images: exact_k.figures(),
            fd_over_mlp_time: fd_run.seconds / exact_k.seconds,
        },
    };
    eprintln!("boundary: {}", serde_json::to_string_pretty(&boundary)?);

    // 6. The probe on the convnet's hidden layer.
    let layer = net.layer_index("fc1").expect("fc1 was added");
    let t = Instant::now();
    let report = study(&net, &mnist.test, layer, &ProbeParams::default().check()?)?;
    let probe = ProbeJson::new(&report);
    eprintln!(
        "probe fc1 ({} units, {:.1} s): unit purity {:.3}, random purity {:.3}, difference p = {:.3}",
        net.layer_dim(layer)?,
        t.elapsed().as_secs_f64(),
        report.unit.purity.mean,
        report.random.purity.mean,
        report.purity_difference.p_value
    );

    let result = Report {
        model: ModelJson {
            architecture: ConvNet::NAME,
            framework: "candle 0.11 (CPU)",
            epochs: args.epochs,
            train_images: n_train,
            batch: args.batch,
            lr: args.lr,
            seed: args.seed,
            train_seconds,
            train_error: conv_train_error,
            test_error: conv_test_error,
        },
        attack: AttackJson {
            set: "train",
            target: "untargeted",
            search_steps: args.search_steps,
            run: conv_run.figures(),
        },
        transfer,
        boundary,
        probe,
        wall_seconds: start_all.elapsed().as_secs_f64(),
    };
    let out = serde_json::to_string_pretty(&result)?;
    println!("{out}");
    if let Some(path) = &args.json {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, &out)?;
    }
    Ok(())
}
