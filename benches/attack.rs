//! One targeted box-constrained L-BFGS attack on FC100-100-10, and one model evaluation (the
//! single-example loss and input gradient that each L-BFGS-B step costs) of FC100-100-10 and of
//! the zoo's convnet CONV16-32-FC128-10.

use blindspot::attack::{Attack, BoxLbfgs, Target};
use blindspot::data::Mnist;
use blindspot::nn::{train, Architecture, Network, TrainParams};
use blindspot::{Classifier, Differentiable};
use criterion::{criterion_group, criterion_main, Criterion};
use ndarray::{s, Array1, Array2};

fn bench(c: &mut Criterion) {
    let mnist = Mnist::load_default().expect("MNIST in data/mnist or $BLINDSPOT_MNIST");
    // A briefly trained FC100-100-10: the attack's cost depends on the weights only through
    // the number of L-BFGS-B steps, which a few epochs already make typical.
    let arch = Architecture::parse("FC100-100-10", 784).unwrap();
    let mut model = Network::new(arch.clone(), 1);
    let config = TrainParams {
        batch_size: 128,
        learning_rate: 0.5,
        ..blindspot::zoo::train_params(&arch)
            .with_epochs(3)
            .with_seed(1)
    }
    .check()
    .unwrap();
    train(&mut model, &mnist.train, None, &config, |_| {}).unwrap();
    let images = mnist.train.images();
    let labels = mnist.train.labels();
    let i = (0..100)
        .find(|&i| model.predict(images.slice(s![i..i + 1, ..])).unwrap()[0] == labels[i])
        .unwrap();
    let (x, y) = (images.row(i).to_owned(), labels[i]);

    let attack = BoxLbfgs::new();
    let mut g = c.benchmark_group("attack FC100-100-10");
    g.sample_size(20);
    g.bench_function("targeted BoxLbfgs, one image", |b| {
        b.iter(|| {
            attack
                .attack(&model, x.view(), y, Target::Label((y + 1) % 10))
                .unwrap()
        })
    });
    g.finish();

    let mut scratch = Default::default();
    let xb = x.view().insert_axis(ndarray::Axis(0)).to_owned();
    let mut loss = Array1::zeros(1);
    let mut grad = Array2::zeros((1, 784));
    c.bench_function("loss and input gradient, one image", |b| {
        b.iter(|| {
            model
                .loss_and_input_grad_with(
                    xb.view(),
                    &[(y + 1) % 10],
                    &mut scratch,
                    loss.view_mut(),
                    grad.view_mut(),
                )
                .unwrap()
        })
    });

    // The convnet's evaluation costs the same whatever its weights, so a freshly initialised
    // one stands in for the trained zoo model (whose training would take minutes here).
    let conv = Network::new(Architecture::parse("CONV16-32-FC128-10", 784).unwrap(), 1);
    let mut scratch = Default::default();
    c.bench_function(
        "CONV16-32-FC128-10 loss and input gradient, one image",
        |b| {
            b.iter(|| {
                conv.loss_and_input_grad_with(
                    xb.view(),
                    &[(y + 1) % 10],
                    &mut scratch,
                    loss.view_mut(),
                    grad.view_mut(),
                )
                .unwrap()
            })
        },
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
