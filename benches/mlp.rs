//! Forward and backward passes of the paper's FC100-100-10 and of the zoo's convnet, one
//! epoch of training, and the attack path's loss and input gradient for one row against a
//! lockstep batch of 50 rows (reported per row).

use blindspot::data::Mnist;
use blindspot::nn::{train, Architecture, Network, TrainParams, Trainable};
use blindspot::Check;
use blindspot::{Classifier, Differentiable};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ndarray::{s, Array1, Array2};

fn flops_per_example(widths: &[usize]) -> u64 {
    // Forward: one multiply-add per weight. Backward: weight gradients for every layer and
    // error propagation for all but the first.
    let macs: Vec<u64> = widths.windows(2).map(|w| (w[0] * w[1]) as u64).collect();
    let fwd: u64 = macs.iter().sum();
    let bwd: u64 = fwd + macs[1..].iter().sum::<u64>();
    2 * (fwd + bwd)
}

fn bench(c: &mut Criterion) {
    let mnist = Mnist::load_default().expect("MNIST in data/mnist or $BLINDSPOT_MNIST");
    let arch = Architecture::parse("FC100-100-10", 784).unwrap();
    let model = Network::new(arch.clone(), 1);
    let batch = mnist.train.images().slice(s![..128, ..]).to_owned();
    let labels = mnist.train.labels()[..128].to_vec();
    let widths = arch.widths();

    let mut g = c.benchmark_group("FC100-100-10 batch 128");
    g.throughput(Throughput::Elements(128));
    g.bench_function("forward (logits)", |b| {
        b.iter(|| model.logits(batch.view()).unwrap())
    });
    let mut grads: Vec<Array2<f32>> = model
        .params()
        .iter()
        .map(|p| Array2::zeros(p.raw_dim()))
        .collect();
    let mut ws = Trainable::workspace(&model, 128);
    g.bench_function("forward+backward", |b| {
        b.iter(|| {
            model
                .accumulate_grad(batch.view(), &labels, 1.0 / 128.0, &mut grads, &mut ws)
                .unwrap()
        })
    });
    g.finish();

    eprintln!(
        "forward+backward: {} FLOP per batch of 128 (divide by the median time for GFLOP/s)",
        128 * flops_per_example(&widths)
    );

    // The attack path: a lockstep batch of n images makes one call per round, which should
    // cost less per row than n one-row calls. Throughput is rows, so criterion's rate is per
    // row; the median divided by n is the time per row.
    let mut g = c.benchmark_group("FC100-100-10 loss and input gradient");
    let mut scratch = Default::default();
    for n in [1usize, 50] {
        let x = batch.slice(s![..n, ..]);
        let targets: Vec<usize> = labels[..n].iter().map(|&y| (y + 1) % 10).collect();
        let mut loss = Array1::zeros(n);
        let mut grad = Array2::zeros((n, 784));
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(format!("{n} rows"), |b| {
            b.iter(|| {
                model
                    .loss_and_input_grad_with(
                        x,
                        &targets,
                        &mut scratch,
                        loss.view_mut(),
                        grad.view_mut(),
                    )
                    .unwrap()
            })
        });
    }
    g.finish();

    // The convnet at the zoo recipe's batch of 64: one SGD step's gradient work.
    let conv = Network::new(Architecture::parse("CONV16-32-FC128-10", 784).unwrap(), 1);
    let mut conv_grads: Vec<Array2<f32>> = conv
        .params()
        .iter()
        .map(|p| Array2::zeros(p.raw_dim()))
        .collect();
    let mut conv_ws = Trainable::workspace(&conv, 64);
    let mut g = c.benchmark_group("CONV16-32-FC128-10 batch 64");
    g.throughput(Throughput::Elements(64));
    g.bench_function("forward+backward", |b| {
        b.iter(|| {
            conv.accumulate_grad(
                batch.slice(s![..64, ..]),
                &labels[..64],
                1.0 / 64.0,
                &mut conv_grads,
                &mut conv_ws,
            )
            .unwrap()
        })
    });
    g.finish();

    let subset = mnist.train.head(10_000).unwrap();
    let config = TrainParams {
        batch_size: 128,
        ..blindspot::zoo::train_params(&arch)
            .with_epochs(1)
            .with_seed(1)
    }
    .check()
    .unwrap();
    let mut e = c.benchmark_group("training");
    e.sample_size(10);
    e.bench_function("one epoch FC100-100-10, 10k examples, batch 128", |b| {
        b.iter(|| {
            let mut m = Network::new(arch.clone(), 1);
            train(&mut m, &subset, None, &config, |_| {}).unwrap()
        })
    });
    e.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
