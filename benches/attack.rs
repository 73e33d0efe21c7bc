//! One targeted box-constrained L-BFGS attack on FC100-100-10; the same attack on 20 images,
//! one at a time and in one `attack_batch` call, both on one thread (time per 20 images, so
//! the two compare directly); and one model evaluation (the single-example loss and input
//! gradient that each L-BFGS-B step costs) of FC100-100-10 and of the zoo's convnet
//! CONV16-32-FC128-10.

use blindspot::attack::Outcome;
use blindspot::attack::{Attack, BoxLbfgs, Target};
use blindspot::data::Mnist;
use blindspot::nn::{train, Architecture, Network, TrainParams};
use blindspot::Check;
use blindspot::{Classifier, Differentiable};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
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

    // Twenty images, each aimed at the next label; on one thread, so that batching is measured
    // rather than attack_batch's parallelism across images.
    const BATCH: usize = 20;
    let xs = images.slice(s![..BATCH, ..]);
    let ys = &labels[..BATCH];
    let targets: Vec<Target> = ys.iter().map(|&y| Target::Label((y + 1) % 10)).collect();
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let mut g = c.benchmark_group("attack FC100-100-10, 20 images, one thread");
    g.sample_size(10);
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("one at a time (attack)", |b| {
        b.iter(|| {
            one.install(|| {
                (0..BATCH)
                    .map(|i| attack.attack(&model, xs.row(i), ys[i], targets[i]).unwrap())
                    .collect::<Vec<Outcome>>()
            })
        })
    });
    g.bench_function("attack_batch", |b| {
        b.iter(|| one.install(|| attack.attack_batch(&model, xs, ys, &targets).unwrap()))
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
