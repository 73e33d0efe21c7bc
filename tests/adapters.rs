//! The forward-only adapter: finite-difference gradients against the analytic ones of an `Network`.

use blindspot::adapters::FiniteDifference;
use blindspot::attack::{Attack, BoxLbfgsParams, Target};
use blindspot::nn::{Architecture, Network};
use blindspot::Check;
use blindspot::{Classifier, Differentiable, Error, Representation};
use ndarray::{Array2, ArrayView2};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

mod common;

fn mlp(name: &str, input: usize, seed: u64) -> Network {
    Network::new(Architecture::parse(name, input).unwrap(), seed)
}

fn pixels(n: usize, m: usize, seed: u64) -> Array2<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Array2::from_shape_fn((n, m), |_| rng.gen_range(0.0..1.0))
}

/// max |a − b| / max |b|.
fn rel_err(a: ArrayView2<'_, f32>, b: ArrayView2<'_, f32>) -> f32 {
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    let diff = a
        .iter()
        .zip(b.iter())
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    diff / scale
}

#[test]
fn finite_difference_gradient_matches_the_analytic_one() {
    let model = mlp("FC30-20-10", 50, 3);
    let x = pixels(4, 50, 1);
    let labels = [0, 3, 7, 9];
    let (loss, exact) = model.loss_and_input_grad(x.view(), &labels).unwrap();
    let fd = FiniteDifference::new(model, 1e-2).unwrap();
    let (fd_loss, estimate) = fd.loss_and_input_grad(x.view(), &labels).unwrap();
    for (a, b) in fd_loss.iter().zip(loss.iter()) {
        assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "{a} vs {b}");
    }
    let e = rel_err(estimate.view(), exact.view());
    assert!(e < 5e-3, "relative error {e}");
}

#[test]
fn chunking_does_not_change_the_gradient() {
    let model = mlp("FC20-10", 30, 5);
    let x = pixels(3, 30, 2);
    let labels = [1, 2, 3];
    let whole = FiniteDifference::new(model.clone(), 1e-2).unwrap();
    let (_, g_whole) = whole.loss_and_input_grad(x.view(), &labels).unwrap();
    // 7 coordinates per call: chunks straddle examples.
    let small = FiniteDifference::new(model, 1e-2)
        .unwrap()
        .try_with_chunk(7)
        .unwrap();
    let (_, g_small) = small.loss_and_input_grad(x.view(), &labels).unwrap();
    assert_eq!(g_whole, g_small);
}

#[test]
fn batch_and_single_examples_agree() {
    let fd = FiniteDifference::new(mlp("FC20-10", 30, 6), 1e-2).unwrap();
    let x = pixels(3, 30, 3);
    let labels = [4, 5, 6];
    let (losses, grad) = fd.loss_and_input_grad(x.view(), &labels).unwrap();
    for i in 0..3 {
        let row = x.slice(ndarray::s![i..i + 1, ..]);
        let (l, g) = fd.loss_and_input_grad(row, &labels[i..i + 1]).unwrap();
        assert_eq!(l[0], losses[i]);
        assert_eq!(g.row(0), grad.row(i));
    }
}

#[test]
fn step_and_chunk_are_checked() {
    for step in [0.0, -1e-3, f32::NAN, f32::INFINITY, 2.0] {
        let err = FiniteDifference::new(mlp("FC10", 4, 0), step).unwrap_err();
        assert!(
            matches!(err, Error::InvalidParameter { name: "step", .. }),
            "{err}"
        );
    }
    let err = FiniteDifference::new(mlp("FC10", 4, 0), 1e-2)
        .unwrap()
        .try_with_chunk(0)
        .unwrap_err();
    assert!(matches!(err, Error::InvalidParameter { name: "chunk", .. }));
}

#[test]
fn bad_inputs_are_typed_errors() {
    let fd = FiniteDifference::new(mlp("FC10", 4, 0), 1e-2).unwrap();
    let x = Array2::from_elem((2, 5), 0.5f32);
    assert!(matches!(
        fd.loss_and_input_grad(x.view(), &[0, 1]),
        Err(Error::Shape { .. })
    ));
    let x = Array2::from_elem((2, 4), 0.5f32);
    assert!(matches!(
        fd.loss_and_input_grad(x.view(), &[0, 10]),
        Err(Error::LabelOutOfRange { .. })
    ));
    let mut x = Array2::from_elem((2, 4), 0.5f32);
    x[[1, 2]] = f32::NAN;
    assert!(matches!(
        fd.loss_and_input_grad(x.view(), &[0, 1]),
        Err(Error::NonFinite { .. })
    ));
}

/// A forward-only classifier that breaks its contract: the wrong number of logit columns.
struct Wrong;

impl Classifier for Wrong {
    fn input_dim(&self) -> usize {
        3
    }
    fn num_classes(&self) -> usize {
        4
    }
    fn logits(&self, x: ArrayView2<'_, f32>) -> blindspot::Result<Array2<f32>> {
        Ok(Array2::zeros((x.nrows(), 2)))
    }
}

#[test]
fn logits_of_the_wrong_shape_are_a_shape_error() {
    let fd = FiniteDifference::new(Wrong, 1e-2).unwrap();
    let x = Array2::from_elem((1, 3), 0.5f32);
    let err = fd.loss_and_input_grad(x.view(), &[0]).unwrap_err();
    assert!(matches!(err, Error::Shape { .. }), "{err}");
}

#[test]
fn representation_and_logits_are_the_models() {
    let model = mlp("FC8-10", 12, 9);
    let x = pixels(2, 12, 4);
    let fd = FiniteDifference::new(model.clone(), 1e-2).unwrap();
    assert_eq!(
        fd.logits(x.view()).unwrap(),
        model.logits(x.view()).unwrap()
    );
    assert_eq!(fd.num_layers(), 1);
    assert_eq!(
        fd.representation(x.view(), 0).unwrap(),
        model.representation(x.view(), 0).unwrap()
    );
}

#[test]
fn the_attack_runs_on_finite_differences() {
    let model = mlp("FC16-10", 20, 11);
    let x = pixels(1, 20, 5);
    let label = model.predict(x.view()).unwrap()[0];
    let attack = BoxLbfgsParams::default()
        .with_search_steps(3)
        .check()
        .unwrap();
    let exact = attack
        .attack(&model, x.row(0), label, Target::Untargeted)
        .unwrap();
    assert!(exact.success);
    let fd = FiniteDifference::new(model.clone(), 1e-2).unwrap();
    let out = attack
        .attack(&fd, x.row(0), label, Target::Untargeted)
        .unwrap();
    assert!(out.success);
    let adv = out.adversarial.view().insert_axis(ndarray::Axis(0));
    assert_ne!(model.predict(adv).unwrap()[0], label);
    // About the same perturbation as the attack with analytic gradients.
    assert!(
        (out.distortion - exact.distortion).abs() <= 0.1 * exact.distortion,
        "{} vs {}",
        out.distortion,
        exact.distortion
    );
}

#[test]
fn bad_gradient_arguments_are_the_same_typed_errors_for_the_mlp_and_the_adapter() {
    let model = mlp("FC6-4", 5, 1);
    common::assert_gradient_arguments_are_checked(&model);
    common::assert_gradient_arguments_are_checked(&FiniteDifference::new(model, 1e-2).unwrap());
}
