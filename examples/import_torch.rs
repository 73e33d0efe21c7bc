//! Weights trained in PyTorch, attacked by the crate: import a `state_dict` saved with
//! `numpy.savez` (by `scripts/export_torch.py`) into an `Network`, check it on the MNIST test set,
//! and run the paper's attack on it.
//!
//! ```text
//! python3 scripts/export_torch.py --out out/torch_fc100.npz
//! cargo run --release --example import_torch -- --npz out/torch_fc100.npz \
//!     --arch FC100-100-10 --layers 0,2,4 --activation sigmoid
//! ```
//!
//! Without `--npz` (no PyTorch at hand) the example makes such a file itself: it writes the
//! zoo's FC100-100-10 the way PyTorch's `nn.Sequential` stores it (arrays `0.weight`,
//! `0.bias`, `2.weight`, …, weights `out × in`, biases 1-d), imports that, and checks that the
//! imported model's logits equal the original's.

use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;
use std::time::Instant;

use blindspot::attack::{Attack, BoxLbfgs, OutcomeSummary, Target};
use blindspot::data::Mnist;
use blindspot::import::{DenseNames, NpzWeights, WeightLayout};
use blindspot::nn::{error_rate, Activation, Architecture};
use blindspot::zoo::Zoo;
use blindspot::Classifier;
use clap::Parser;
use ndarray::s;
use ndarray_npy::NpzWriter;

#[derive(Parser)]
#[command(about = "Import PyTorch weights (.npz of a state_dict) into a Network and attack it")]
struct Args {
    /// The .npz to import (default: write one from the zoo's FC100-100-10 in PyTorch layout).
    #[arg(long)]
    npz: Option<PathBuf>,
    /// Architecture, in the paper's naming.
    #[arg(long, default_value = "FC100-100-10")]
    arch: String,
    /// Hidden activation of the exported model (sigmoid, tanh, relu, identity).
    #[arg(long, default_value = "sigmoid")]
    activation: Activation,
    /// Comma-separated module names of the dense layers, first to last: layer `p` is read from
    /// arrays `p.weight` (out × in) and `p.bias`.
    #[arg(long, default_value = "0,2,4")]
    layers: String,
    /// Training images attacked (the first N).
    #[arg(long, default_value_t = 100)]
    images: usize,
    /// Fail unless the imported model's test error is within 0.05% of this (PyTorch's figure).
    #[arg(long)]
    expect_test_error: Option<f32>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let mnist = Mnist::load_default()?;
    let arch =
        Architecture::parse(&args.arch, mnist.train.input_dim())?.with_activation(args.activation);
    let layers: Vec<DenseNames> = args
        .layers
        .split(',')
        .map(|p| DenseNames::torch(p.trim()))
        .collect();

    let (path, original) = match &args.npz {
        Some(p) => (p.clone(), None),
        None => {
            // Stand-in for PyTorch: the zoo model written as nn.Sequential's state_dict.
            let fc = Zoo::new()
                .model("FC100-100-10", 1, &mnist.train, "mnist-train")?
                .model;
            std::fs::create_dir_all("out/import_torch")?;
            let path = PathBuf::from("out/import_torch/sequential_state_dict.npz");
            let mut npz = NpzWriter::new(BufWriter::new(File::create(&path)?));
            for (l, name) in ["0", "2", "4"].iter().enumerate() {
                let w = fc.weights(l).expect("3 layers").t().to_owned();
                let b = fc.bias(l).expect("3 layers").to_owned();
                npz.add_array(format!("{name}.weight"), &w)?;
                npz.add_array(format!("{name}.bias"), &b)?;
            }
            npz.finish()?;
            eprintln!("wrote {} (PyTorch layout)", path.display());
            (path, Some(fc))
        }
    };

    let weights = NpzWeights::open(&path)?;
    eprintln!(
        "{}: arrays {}",
        path.display(),
        weights.names().collect::<Vec<_>>().join(", ")
    );
    let mlp = weights.mlp(arch, &layers, WeightLayout::OutIn)?;
    let test_error = error_rate(&mlp, &mnist.test)?;
    println!(
        "imported {}: test error {:.2}%",
        mlp.arch(),
        100.0 * test_error
    );
    if let Some(orig) = &original {
        let test = mnist.test.images();
        let x = test.slice(s![..1000, ..]);
        let same = mlp.logits(x)? == orig.logits(x)?;
        println!("logits identical to the original on 1000 test images: {same}");
        if !same {
            return Err("imported logits differ from the original".into());
        }
    }
    if let Some(expected) = args.expect_test_error {
        if (test_error - expected).abs() > 5e-4 {
            return Err(format!(
                "test error {test_error} differs from the expected {expected}: wrong layer \
                 names, activation or input scaling?"
            )
            .into());
        }
    }

    let n = args.images.clamp(1, mnist.train.len());
    let xs = mnist.train.images().slice(s![..n, ..]).to_owned();
    let labels = &mnist.train.labels()[..n];
    let t = Instant::now();
    let outs =
        BoxLbfgs::new().attack_batch(&mlp, xs.view(), labels, &vec![Target::Untargeted; n])?;
    let seconds = t.elapsed().as_secs_f64();
    // Images the model already misclassifies are not searched: counted, and left out of the
    // figures.
    let s = OutcomeSummary::of(&outs);
    println!(
        "attack on {n} training images, {} already misclassified; over the others: success rate \
         {:.3}, mean distortion {:.4}, {:.1} ms/image",
        s.already_adversarial,
        s.success_rate,
        s.mean_distortion,
        1e3 * seconds / s.searched.max(1) as f64
    );
    Ok(())
}
