//! The README's first command: train a small network on the shipped MNIST (or load it from a
//! previous run), attack ten test images with the paper's box-constrained L-BFGS, save a picture
//! of the results, and print each distortion. Well under a minute.
//!
//! ```text
//! cargo run --release --example quickstart
//! ```

use blindspot::Check;
use std::path::Path;

use blindspot::attack::{Attack, BoxLbfgs, Target};
use blindspot::data::Mnist;
use blindspot::image::Grid;
use blindspot::nn::{error_rate, train, Architecture, Network};
use blindspot::zoo;
use blindspot::Classifier;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mnist = Mnist::load_default()?;
    println!(
        "MNIST: {} training and {} test images",
        mnist.train.len(),
        mnist.test.len()
    );

    let cache = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/quickstart-FC100-100-10.npz");
    let model = match Network::load(&cache) {
        Ok(m) => {
            println!("loaded {}", cache.display());
            m
        }
        Err(_) => {
            let arch = Architecture::parse("FC100-100-10", mnist.train.input_dim())?;
            let mut model = Network::new(arch.clone(), 1);
            // A short version of the zoo's recipe: a few epochs reach about 2-3% error.
            let config = zoo::train_params(&arch)
                .with_epochs(5)
                .with_seed(1)
                .check()?;
            let report = train(&mut model, &mnist.train, None, &config, |_| {})?;
            println!(
                "trained {arch}: {} epochs, {:.2} s/epoch",
                report.epochs.len(),
                report.seconds_per_epoch
            );
            if let Some(dir) = cache.parent() {
                std::fs::create_dir_all(dir)?;
            }
            model.save(&cache)?;
            model
        }
    };
    println!(
        "test error {:.2}%",
        100.0 * error_rate(&model, &mnist.test)?
    );

    // Adversarial examples for the first ten test images the model gets right, each pushed to
    // the next label, (y + 1) mod 10. An image it already gets wrong needs no perturbation (the
    // attack would return it unsearched, `already_adversarial`), so those are skipped, and
    // counted.
    let attack = BoxLbfgs::new();
    let images = mnist.test.images();
    let predicted = model.predict(images)?;
    let correct: Vec<usize> = (0..mnist.test.len())
        .filter(|&i| predicted[i] == mnist.test.labels()[i])
        .take(10)
        .collect();
    let seen = correct.last().map_or(0, |&i| i + 1);
    println!(
        "the first {} test images the model gets right ({} misclassified among the first {seen} skipped)",
        correct.len(),
        seen - correct.len()
    );
    let mut grid = Grid::new(28, 28, 3)?.try_with_scale(3)?;
    println!("image  label -> adversarial  distortion  evaluations");
    for i in correct {
        let (x, y) = (images.row(i), mnist.test.labels()[i]);
        let out = attack.attack(&model, x, y, Target::Label((y + 1) % 10))?;
        println!(
            "{i:>5}  {y:>5} -> {:<11}  {:>10.4}  {:>11}{}",
            out.adversarial_label,
            out.distortion,
            out.evaluations,
            if out.success { "" } else { "  (failed)" }
        );
        grid.push(x)?;
        grid.push(out.adversarial.view())?;
        grid.push_perturbation(out.perturbation.view())?;
    }
    let png = Path::new("out/quickstart.png");
    std::fs::create_dir_all("out")?;
    grid.save(png)?;
    println!(
        "saved {} (original | adversarial | perturbation, magnified)",
        png.display()
    );
    Ok(())
}
