//! The README's first command: train a small network on the shipped MNIST and report its
//! test error, in well under a minute.
//!
//! ```text
//! cargo run --release --example quickstart
//! ```

use blindspot::data::Mnist;
use blindspot::nn::{error_rate, train, Architecture, Mlp, TrainParams};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mnist = Mnist::load_default()?;
    println!(
        "MNIST: {} training and {} test images",
        mnist.train.len(),
        mnist.test.len()
    );

    let arch = Architecture::parse("FC100-100-10", mnist.train.input_dim())?;
    let mut model = Mlp::new(arch.clone(), 1);
    // A short version of the library's recipe: a handful of epochs is enough for ~2.5% error.
    let config = TrainParams::for_arch(&arch)
        .with_epochs(8)
        .with_seed(1)
        .check()?;
    let report = train(&mut model, &mnist.train, Some(&mnist.test), &config, |_| {})?;
    println!(
        "{arch}: test error {:.2}% after {} epochs ({:.2} s/epoch)",
        100.0 * error_rate(&model, &mnist.test)?,
        report.epochs.len(),
        report.seconds_per_epoch
    );
    Ok(())
}
