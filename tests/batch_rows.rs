//! Row independence: a row's loss, input gradient and logits are the same bit for bit whether
//! it is evaluated alone, in a batch of 50 or in batches of 7 or 2, so that lockstep attacks
//! (many images' solvers advancing together, one model call per round) give every image the
//! result it gets when attacked alone. CI runs this file again with `BLINDSPOT_PORTABLE=1`,
//! which checks the portable kernels the same way.

use blindspot::nn::{Activation, Architecture, Network, Trainable};
use blindspot::Differentiable;
use ndarray::{s, Array1, Array2, ArrayView2};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const ROWS: usize = 50;

/// MNIST-like rows: most pixels exactly 0, a few exactly 1, the rest uniform in (0, 1).
fn images(rng: &mut ChaCha8Rng, n: usize, d: usize) -> Array2<f32> {
    Array2::from_shape_fn((n, d), |_| {
        let u: f32 = rng.gen();
        if u < 0.6 {
            0.0
        } else if u < 0.7 {
            1.0
        } else {
            rng.gen()
        }
    })
}

/// A network with random nonzero biases (fresh networks have zero ones).
fn network(arch: Architecture, seed: u64) -> Network {
    let mut m = Network::new(arch, seed);
    let mut rng = ChaCha8Rng::seed_from_u64(seed + 1);
    for p in m.params_mut() {
        if p.nrows() == 1 {
            p.mapv_inplace(|_| rng.gen_range(-0.5..0.5));
        }
    }
    m
}

/// Per-row losses, gradients and logits of `x` evaluated in consecutive batches of the given
/// sizes, with one scratch reused across the calls (as a lockstep attack reuses its own).
fn in_batches<M: Differentiable>(
    model: &M,
    x: ArrayView2<'_, f32>,
    labels: &[usize],
    sizes: &[usize],
) -> (Array1<f32>, Array2<f32>, Array2<f32>) {
    let n = x.nrows();
    let mut losses = Array1::zeros(n);
    let mut grad = Array2::zeros(x.raw_dim());
    let mut logits = Array2::zeros((n, model.num_classes()));
    let mut scratch = M::Scratch::default();
    let mut lo = 0;
    for &size in sizes.iter().cycle() {
        if lo >= n {
            break;
        }
        let hi = (lo + size).min(n);
        model
            .loss_and_input_grad_with(
                x.slice(s![lo..hi, ..]),
                &labels[lo..hi],
                &mut scratch,
                losses.slice_mut(s![lo..hi]),
                grad.slice_mut(s![lo..hi, ..]),
            )
            .unwrap();
        logits
            .slice_mut(s![lo..hi, ..])
            .assign(&model.logits(x.slice(s![lo..hi, ..])).unwrap());
        lo = hi;
    }
    (losses, grad, logits)
}

fn bits<'a>(v: impl IntoIterator<Item = &'a f32>) -> Vec<u32> {
    v.into_iter().map(|x| x.to_bits()).collect()
}

/// Every row of `x` gives the same bits alone and in batches of 50, 7 (then 1), 2, and 3 then 7.
fn assert_rows_independent<M: Differentiable>(name: &str, model: &M, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let x = images(&mut rng, ROWS, model.input_dim());
    let labels: Vec<usize> = (0..ROWS)
        .map(|_| rng.gen_range(0..model.num_classes()))
        .collect();
    let alone = in_batches(model, x.view(), &labels, &[1]);
    assert!(alone.0.iter().all(|l| l.is_finite() && *l > 0.0), "{name}");
    assert!(
        alone.1.iter().any(|&g| g != 0.0),
        "{name}: a zero gradient would test nothing"
    );
    for sizes in [&[ROWS][..], &[7], &[2], &[3, 7]] {
        let batch = in_batches(model, x.view(), &labels, sizes);
        for i in 0..ROWS {
            let what = format!("{name}, row {i}, batches of {sizes:?}");
            same(&[batch.0[i]], &[alone.0[i]], &format!("{what}: loss"));
            same(batch.1.row(i), alone.1.row(i), &format!("{what}: gradient"));
            same(batch.2.row(i), alone.2.row(i), &format!("{what}: logits"));
        }
    }
}

/// Equal bit for bit, or a failure naming the first column that differs.
fn same<'a>(
    a: impl IntoIterator<Item = &'a f32>,
    b: impl IntoIterator<Item = &'a f32>,
    what: &str,
) {
    let (a, b) = (bits(a), bits(b));
    if let Some(j) = (0..a.len()).find(|&j| a[j] != b[j]) {
        panic!(
            "{what}: column {j} is {} in the batch but {} alone",
            f32::from_bits(a[j]),
            f32::from_bits(b[j])
        );
    }
    assert_eq!(a.len(), b.len(), "{what}");
}

#[test]
fn fully_connected_rows_are_independent_of_the_batch() {
    let fc = |name: &str| Architecture::parse(name, 784).unwrap();
    // The paper's sigmoid net (hidden widths of 100: 12 whole vector registers and a tail);
    // widths below one register (the kernels' scalar paths); ReLU and tanh hidden layers.
    assert_rows_independent("FC100-100-10", &network(fc("FC100-100-10"), 1), 11);
    assert_rows_independent("FC13-5-3", &network(fc("FC13-5-3"), 2), 12);
    assert_rows_independent(
        "FC64-10 relu",
        &network(fc("FC64-10").with_activation(Activation::Relu), 3),
        13,
    );
    assert_rows_independent(
        "FC200-10 tanh",
        &network(fc("FC200-10").with_activation(Activation::Tanh), 4),
        14,
    );
    // A dense net on a small input, so every width is below the 1024-input gather chunk and
    // the whole row is dense after the first layer.
    assert_rows_independent(
        "FC16-10 on 20",
        &network(Architecture::parse("FC16-10", 20).unwrap(), 5),
        15,
    );
}

#[test]
fn convolutional_rows_are_independent_of_the_batch() {
    let arch = Architecture::parse("CONV4-8-FC16-10", 784).unwrap();
    assert_rows_independent("CONV4-8-FC16-10", &network(arch, 6), 16);
}

#[cfg(feature = "candle")]
mod candle {
    use super::*;
    use blindspot::adapters::{tensor_from_array, CandleModel};
    use candle_core::{Device, Module, Tensor};
    use candle_nn::Linear;

    /// `net`'s dense layers as candle `Linear`s with sigmoids between them.
    struct CandleFc(Vec<Linear>);

    impl Module for CandleFc {
        fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
            let mut a = x.clone();
            for (l, layer) in self.0.iter().enumerate() {
                a = layer.forward(&a)?;
                if l + 1 < self.0.len() {
                    a = candle_nn::ops::sigmoid(&a)?;
                }
            }
            Ok(a)
        }
    }

    fn candle_fc(net: &Network) -> CandleFc {
        CandleFc(
            (0..net.num_dense())
                .map(|l| {
                    let w = net.weights(l).unwrap().t().to_owned();
                    let b = net
                        .bias(l)
                        .unwrap()
                        .to_owned()
                        .insert_axis(ndarray::Axis(0));
                    let w = tensor_from_array(w.view(), &Device::Cpu).unwrap();
                    let b = tensor_from_array(b.view(), &Device::Cpu)
                        .unwrap()
                        .flatten_all()
                        .unwrap();
                    Linear::new(w, Some(b))
                })
                .collect(),
        )
    }

    #[test]
    fn candle_rows_are_independent_of_the_batch() {
        let net = network(Architecture::parse("FC100-100-10", 784).unwrap(), 7);
        let model = CandleModel::new(candle_fc(&net), &[784], 10).unwrap();
        assert_rows_independent("candle FC100-100-10", &model, 17);
    }
}
