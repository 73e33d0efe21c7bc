//! A first user of blindspot, through its public API only: load MNIST from the directory in
//! `BLINDSPOT_MNIST`, train for one epoch on a subset, attack a few test images, save the
//! model and load it back. Every array type comes from `blindspot::ndarray`, so this crate
//! has no ndarray dependency of its own to disagree with.

use blindspot::attack::{Attack, BoxLbfgs, Target};
use blindspot::data::Mnist;
use blindspot::ndarray::{s, Axis};
use blindspot::nn::{error_rate, train, Architecture, Network};
use blindspot::{zoo, Check, Classifier};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::var_os("BLINDSPOT_MNIST")
        .ok_or("set BLINDSPOT_MNIST to the directory holding the four MNIST files")?;
    let mnist = Mnist::load(&dir)?;
    println!(
        "loaded MNIST from {}: {} training, {} test images",
        std::path::Path::new(&dir).display(),
        mnist.train.len(),
        mnist.test.len()
    );

    let subset = mnist.train.head(2_000)?;
    let arch = Architecture::parse("FC100-100-10", subset.input_dim())?;
    let mut model = Network::new(arch.clone(), 1);
    let config = zoo::train_params(&arch)
        .with_epochs(1)
        .with_seed(1)
        .check()?;
    let report = train(&mut model, &subset, Some(&mnist.test), &config, |_| {})?;
    let test_error = report.test_error.ok_or("no test error in the report")?;
    println!(
        "trained {arch} for {} epoch on {} images: test error {:.2}%",
        report.epochs.len(),
        subset.len(),
        100.0 * test_error
    );
    // Chance is 90%; one epoch on 2,000 images is far better than that.
    if test_error >= 0.5 {
        return Err(
            format!("test error {test_error} after one epoch: training did not learn").into(),
        );
    }

    let images = mnist.test.images().slice_move(s![..3, ..]);
    let labels = &mnist.test.labels()[..3];
    let targets: Vec<Target> = labels
        .iter()
        .map(|&y| Target::Label((y + 1) % 10))
        .collect();
    let outcomes = BoxLbfgs::new().attack_batch(&model, images.view(), labels, &targets)?;
    for (i, out) in outcomes.iter().enumerate() {
        let again = model.predict(out.adversarial.view().insert_axis(Axis(0)))?[0];
        println!(
            "image {i}: label {} -> {} (target {:?}), distortion {:.4}, {} evaluations",
            out.true_label, out.adversarial_label, out.target, out.distortion, out.evaluations
        );
        if again != out.adversarial_label
            || !out.adversarial.iter().all(|v| (0.0..=1.0).contains(v))
        {
            return Err(
                format!("image {i}: outcome disagrees with the model or leaves the box").into(),
            );
        }
    }
    // An image the model already labels as the target comes back unsearched: not a reach.
    let already = outcomes.iter().filter(|o| o.already_adversarial).count();
    let reached = outcomes
        .iter()
        .filter(|o| o.success && !o.already_adversarial)
        .count();
    println!(
        "{reached} of {} targeted attacks reached their target ({already} already there)",
        outcomes.len() - already
    );
    if reached == 0 {
        return Err("no attack reached its target".into());
    }

    let path = std::env::temp_dir().join(format!("blindspot-dependent-{}.npz", std::process::id()));
    model.save(&path)?;
    let loaded = Network::load(&path)?;
    std::fs::remove_file(&path)?;
    let (before, after) = (
        error_rate(&model, &mnist.test)?,
        error_rate(&loaded, &mnist.test)?,
    );
    if before != after {
        return Err(format!("saved model's test error {after} differs from {before}").into());
    }
    println!(
        "saved and reloaded the model: same test error {:.2}%",
        100.0 * after
    );
    Ok(())
}
