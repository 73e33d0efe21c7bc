//! The candle adapter against finite differences and against the crate's own `Network`.
#![cfg(feature = "candle")]

use blindspot::adapters::{array_from_tensor, tensor_from_array, CandleModel};
use blindspot::attack::BoxLbfgsParams;
use blindspot::attack::{Attack, BoxLbfgs, Target};
use blindspot::nn::{Architecture, Network};
use blindspot::Check;
use blindspot::{Classifier, Differentiable, Error, Representation};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::Linear;
use ndarray::{s, Array2, ArrayView2};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

mod common;

/// The crate's `Network` rebuilt in candle: `Linear` layers (weights out × in) with sigmoids.
struct CandleFc {
    layers: Vec<Linear>,
}

impl CandleFc {
    fn from_mlp(mlp: &Network, dtype: DType) -> CandleFc {
        let layers = (0..mlp.num_dense())
            .map(|l| {
                let w = mlp.weights(l).unwrap().t().to_owned();
                let b = mlp
                    .bias(l)
                    .unwrap()
                    .to_owned()
                    .insert_axis(ndarray::Axis(0));
                let w = tensor_from_array(w.view(), &Device::Cpu)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap();
                let b = tensor_from_array(b.view(), &Device::Cpu)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap();
                Linear::new(w, Some(b))
            })
            .collect();
        CandleFc { layers }
    }

    /// Output of layer `upto` (sigmoid after every hidden layer, raw logits at the end).
    fn forward_to(&self, x: &Tensor, upto: usize) -> candle_core::Result<Tensor> {
        let mut a = x.to_dtype(self.layers[0].weight().dtype())?;
        for (l, layer) in self.layers.iter().enumerate().take(upto + 1) {
            a = layer.forward(&a)?;
            if l + 1 < self.layers.len() {
                a = candle_nn::ops::sigmoid(&a)?;
            }
        }
        Ok(a)
    }
}

impl Module for CandleFc {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.forward_to(x, self.layers.len() - 1)
    }
}

fn pixels(n: usize, m: usize, seed: u64) -> Array2<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Array2::from_shape_fn((n, m), |_| rng.gen_range(0.0..1.0))
}

/// max |a − b| / max |b|.
fn rel_err(a: ArrayView2<'_, f32>, b: ArrayView2<'_, f32>) -> f64 {
    let scale = b.iter().fold(0f64, |m, &v| m.max(v.abs() as f64));
    let diff = a
        .iter()
        .zip(b.iter())
        .fold(0f64, |m, (&x, &y)| m.max((x as f64 - y as f64).abs()));
    diff / scale
}

fn pair(seed: u64) -> (Network, CandleModel<CandleFc>) {
    let mlp = Network::new(Architecture::parse("FC30-20-10", 40).unwrap(), seed);
    let candle = CandleModel::new(CandleFc::from_mlp(&mlp, DType::F32), &[40], 10)
        .unwrap()
        .try_with_hidden("h1", |m: &CandleFc, x| m.forward_to(x, 0))
        .unwrap()
        .try_with_hidden("h2", |m: &CandleFc, x| m.forward_to(x, 1))
        .unwrap();
    (mlp, candle)
}

#[test]
fn gradient_and_losses_equal_the_mlp_with_the_same_weights() {
    let (mlp, candle) = pair(1);
    let x = pixels(6, 40, 2);
    let labels = [0, 1, 2, 3, 8, 9];
    let (l_mlp, g_mlp) = mlp.loss_and_input_grad(x.view(), &labels).unwrap();
    let (l_c, g_c) = candle.loss_and_input_grad(x.view(), &labels).unwrap();
    for (a, b) in l_c.iter().zip(l_mlp.iter()) {
        assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "loss {a} vs {b}");
    }
    let e = rel_err(g_c.view(), g_mlp.view());
    assert!(e <= 1e-4, "gradient relative error {e}");
    let e = rel_err(
        candle.logits(x.view()).unwrap().view(),
        mlp.logits(x.view()).unwrap().view(),
    );
    assert!(e <= 1e-5, "logits relative error {e}");
}

#[test]
fn gradient_equals_finite_differences() {
    // The network in f64 (the adapter's input stays f32), so that central differences of the
    // loss are accurate far below the 1e-4 tolerance.
    let mlp = Network::new(Architecture::parse("FC30-20-10", 40).unwrap(), 7);
    let net = CandleFc::from_mlp(&mlp, DType::F64);
    let x = pixels(3, 40, 3);
    let labels = [4, 5, 6];
    let candle = CandleModel::new(CandleFc::from_mlp(&mlp, DType::F64), &[40], 10).unwrap();
    let (_, grad) = candle.loss_and_input_grad(x.view(), &labels).unwrap();
    let loss64 = |row: &[f64], y: usize| -> f64 {
        let t = Tensor::from_slice(row, (1, row.len()), &Device::Cpu).unwrap();
        let z: Vec<f64> = net
            .forward(&t)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        z.iter().map(|v| (v - m).exp()).sum::<f64>().ln() + m - z[y]
    };
    let h = 1e-4;
    let mut fd = Array2::<f32>::zeros(x.raw_dim());
    for i in 0..3 {
        let base: Vec<f64> = x.row(i).iter().map(|&v| v as f64).collect();
        for j in 0..40 {
            let mut up = base.clone();
            up[j] += h;
            let mut down = base.clone();
            down[j] -= h;
            fd[[i, j]] = ((loss64(&up, labels[i]) - loss64(&down, labels[i])) / (2.0 * h)) as f32;
        }
    }
    let e = rel_err(grad.view(), fd.view());
    assert!(e <= 1e-4, "relative error against finite differences {e}");
}

#[test]
fn batch_and_single_results_are_equal() {
    let (_, candle) = pair(2);
    let x = pixels(4, 40, 4);
    let labels = [3, 1, 4, 1];
    let (losses, grad) = candle.loss_and_input_grad(x.view(), &labels).unwrap();
    let logits = candle.logits(x.view()).unwrap();
    for i in 0..4 {
        let row = x.slice(s![i..i + 1, ..]);
        let (l, g) = candle.loss_and_input_grad(row, &labels[i..i + 1]).unwrap();
        assert!((l[0] - losses[i]).abs() <= 1e-6 * losses[i].abs().max(1.0));
        assert!(rel_err(g.view(), grad.slice(s![i..i + 1, ..])) <= 1e-5);
        let z = candle.logits(row).unwrap();
        assert!(rel_err(z.view(), logits.slice(s![i..i + 1, ..])) <= 1e-5);
    }
}

#[test]
fn non_contiguous_batches_are_accepted() {
    let (mlp, candle) = pair(3);
    let x = pixels(40, 5, 5);
    let xt = x.t(); // 5 × 40, column-major
    let e = rel_err(
        candle.logits(xt).unwrap().view(),
        mlp.logits(xt).unwrap().view(),
    );
    assert!(e <= 1e-5);
}

#[test]
fn hidden_layers_are_the_mlps_representation() {
    let (mlp, candle) = pair(4);
    let x = pixels(5, 40, 6);
    assert_eq!(candle.num_layers(), 2);
    assert_eq!(candle.layer_dim(0).unwrap(), 30);
    assert_eq!(candle.layer_dim(1).unwrap(), 20);
    assert_eq!(candle.layer_index("h2"), Some(1));
    for k in 0..2 {
        let e = rel_err(
            candle.representation(x.view(), k).unwrap().view(),
            mlp.representation(x.view(), k).unwrap().view(),
        );
        assert!(e <= 1e-5, "layer {k}: {e}");
    }
    assert!(matches!(
        candle.layer_dim(2),
        Err(Error::InvalidParameter { name: "layer", .. })
    ));
    let again = pair(4)
        .1
        .try_with_hidden("h1", |m: &CandleFc, x| m.forward_to(x, 0));
    assert!(again.is_err());
}

#[test]
fn output_not_n_by_classes_is_a_shape_error() {
    // Logits of 3 classes where 10 are declared.
    let w = Tensor::zeros((4, 3), DType::F32, &Device::Cpu).unwrap();
    let err = CandleModel::new(move |x: &Tensor| x.matmul(&w), &[4], 10).unwrap_err();
    assert!(matches!(err, Error::Shape { .. }), "{err}");
    // One row for the whole batch.
    let w = Tensor::zeros((4, 10), DType::F32, &Device::Cpu).unwrap();
    let err =
        CandleModel::new(move |x: &Tensor| x.matmul(&w)?.sum_keepdim(0), &[4], 10).unwrap_err();
    assert!(matches!(err, Error::Shape { .. }), "{err}");
    // A module that only goes wrong on some inputs is caught at call time. (It cannot be
    // some batch sizes: the adapter always evaluates chunks of one fixed size.)
    let w = Tensor::zeros((4, 10), DType::F32, &Device::Cpu).unwrap();
    let odd = CandleModel::new(
        move |x: &Tensor| {
            let z = x.matmul(&w)?;
            if x.sum_all()?.to_scalar::<f32>()? != 0.0 {
                z.narrow(1, 0, 9)
            } else {
                Ok(z)
            }
        },
        &[4],
        10,
    )
    .unwrap();
    let x = Array2::<f32>::ones((3, 4));
    assert!(matches!(odd.logits(x.view()), Err(Error::Shape { .. })));
    assert!(matches!(
        odd.loss_and_input_grad(x.view(), &[0, 1, 2]),
        Err(Error::Shape { .. })
    ));
}

#[test]
fn wrong_inputs_and_failures_are_typed_errors() {
    let (_, candle) = pair(5);
    let x = Array2::<f32>::zeros((2, 39));
    assert!(matches!(candle.logits(x.view()), Err(Error::Shape { .. })));
    assert!(matches!(
        candle.loss_and_input_grad(x.view(), &[0, 1]),
        Err(Error::Shape { .. })
    ));
    let mut x = Array2::<f32>::zeros((2, 40));
    x[[0, 3]] = f32::INFINITY;
    assert!(matches!(
        candle.logits(x.view()),
        Err(Error::NonFinite { .. })
    ));
    let x = Array2::<f32>::zeros((2, 40));
    assert!(matches!(
        candle.loss_and_input_grad(x.view(), &[0, 10]),
        Err(Error::LabelOutOfRange { .. })
    ));
    assert!(matches!(
        candle.logits(Array2::<f32>::zeros((0, 40)).view()),
        Err(Error::EmptyInput { .. })
    ));
    // A module that cannot take the declared input shape.
    let w = Tensor::zeros((5, 10), DType::F32, &Device::Cpu).unwrap();
    let err = CandleModel::new(move |x: &Tensor| x.matmul(&w), &[4], 10).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Framework {
                framework: "candle",
                during: "the forward pass",
                ..
            }
        ),
        "{err}"
    );
    assert!(CandleModel::new(|x: &Tensor| Ok(x.clone()), &[], 10).is_err());
    assert!(CandleModel::new(|x: &Tensor| Ok(x.clone()), &[2, 0], 10).is_err());
}

#[test]
fn failures_inside_candle_keep_candle_error_as_the_source() {
    // Accepted at construction (a zero batch), then failing on a batch with a pixel above one
    // half, as a module with checks of its own would.
    let model = CandleModel::new(
        |x: &Tensor| {
            if x.max_all()?.to_scalar::<f32>()? > 0.5 {
                candle_core::bail!("pixel above one half");
            }
            x.matmul(&Tensor::ones((3, 2), DType::F32, x.device())?)
        },
        &[3],
        2,
    )
    .unwrap();
    let x = Array2::from_elem((2, 3), 0.9f32);
    for err in [
        model.logits(x.view()).unwrap_err(),
        model.loss_and_input_grad(x.view(), &[0, 1]).unwrap_err(),
    ] {
        assert!(
            matches!(
                err,
                Error::Framework {
                    framework: "candle",
                    during: "the forward pass",
                    ..
                }
            ),
            "{err:?}"
        );
        let source = std::error::Error::source(&err).expect("candle's error is the source");
        assert!(
            source.downcast_ref::<candle_core::Error>().is_some(),
            "{source:?}"
        );
        assert!(
            source.to_string().contains("pixel above one half"),
            "{source}"
        );
        assert!(
            err.to_string()
                .starts_with("candle failed during the forward pass"),
            "{err}"
        );
    }
    // A hidden-layer function that asks for more columns than the input has.
    let err = model
        .try_with_hidden("too wide", |_, x: &Tensor| x.narrow(1, 0, 10))
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Framework {
                framework: "candle",
                during: "a hidden-layer function",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(std::error::Error::source(&err).is_some());
}

#[test]
fn non_finite_logits_are_an_error() {
    // Logits that overflow to infinity for inputs above 0.5.
    let model = CandleModel::new(|x: &Tensor| (x.affine(2000.0, -1000.0)?).exp(), &[3], 3).unwrap();
    let x = Array2::from_elem((1, 3), 0.9f32);
    assert!(matches!(
        model.logits(x.view()),
        Err(Error::NonFinite { .. })
    ));
    assert!(matches!(
        model.loss_and_input_grad(x.view(), &[0]),
        Err(Error::NonFinite { .. })
    ));
}

#[test]
fn input_shape_reshapes_rows_for_the_module() {
    // The module sees [n, 2, 3] and returns the sum over its middle axis: [n, 3].
    let model = CandleModel::new(|x: &Tensor| x.sum(1), &[2, 3], 3).unwrap();
    assert_eq!(model.input_dim(), 6);
    let x = Array2::from_shape_vec((1, 6), vec![1.0f32, 2.0, 3.0, 10.0, 20.0, 30.0]).unwrap();
    let z = model.logits(x.view()).unwrap();
    assert_eq!(z.row(0).to_vec(), vec![11.0, 22.0, 33.0]);
    // d(logsumexp(z) − z0)/dx is the same for both rows of the input.
    let (_, g) = model.loss_and_input_grad(x.view(), &[0]).unwrap();
    assert_eq!(g[[0, 0]], g[[0, 3]]);
}

#[test]
fn conversions_round_trip() {
    let a = pixels(3, 5, 9);
    let t = tensor_from_array(a.view(), &Device::Cpu).unwrap();
    assert_eq!(t.dims(), &[3, 5]);
    assert_eq!(array_from_tensor(&t).unwrap(), a);
    let t4 = t.reshape((3, 1, 5, 1)).unwrap();
    assert_eq!(array_from_tensor(&t4).unwrap(), a);
}

#[test]
fn the_attack_through_candle_matches_the_attack_on_the_mlp() {
    let (mlp, candle) = pair(6);
    let x = pixels(1, 40, 8);
    let label = mlp.predict(x.view()).unwrap()[0];
    let target = Target::Untargeted;
    let attack = BoxLbfgsParams::default()
        .with_search_steps(3)
        .check()
        .unwrap();
    let a = attack.attack(&mlp, x.row(0), label, target).unwrap();
    let b = attack.attack(&candle, x.row(0), label, target).unwrap();
    assert!(a.success && b.success);
    assert_eq!(a.adversarial_label, b.adversarial_label);
    assert!(
        (a.distortion - b.distortion).abs() <= 0.01 * a.distortion,
        "{} vs {}",
        a.distortion,
        b.distortion
    );
}

#[test]
fn bad_gradient_arguments_are_the_same_typed_errors_as_for_the_mlp() {
    let (mlp, candle) = pair(4);
    common::assert_gradient_arguments_are_checked(&mlp);
    common::assert_gradient_arguments_are_checked(&candle);
}

/// Issue 25 through the adapter (tests/lockstep.rs for the crate's own network): the candle
/// adapter evaluates every batch in fixed 16-row chunks, so a row's loss, gradient and logits
/// do not depend on the rows around it, and each image's outcome is the same, bit for bit,
/// alone, in one batch of 20 (on one thread one group: a chunk of 16 rows and a padded one)
/// or in batches of 7, on one or two rayon threads.
#[test]
fn lockstep_outcomes_are_the_same_alone_and_in_batches() {
    use common::lockstep::{assert_split_invariant, Images, Split};
    let (network, _) = common::small_mnist_model();
    let model = CandleModel::new(CandleFc::from_mlp(network, DType::F32), &[784], 10).unwrap();
    let images = Images::mnist(network, 20);
    let outcomes = assert_split_invariant(
        &BoxLbfgs::default(),
        &model,
        images.xs.view(),
        &images.labels,
        &images.next_label_targets(),
        &[Split::Alone, Split::Batches(20), Split::Batches(7)],
        &[1, 2],
    );
    assert!(outcomes[images.wrong].already_adversarial);
    assert!(outcomes.iter().enumerate().all(|(i, o)| o.success
        && (i == images.wrong || (!o.already_adversarial && o.evaluations >= 20))));
}
