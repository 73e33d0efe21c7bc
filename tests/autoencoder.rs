//! The autoencoder: exact gradients, training lowers the reconstruction error, persistence,
//! typed errors, and the AE400-10 construction (stacked `Network` whose input gradient is exact).

use blindspot::data::Dataset;
use blindspot::nn::{
    fit, train_ae_classifier, AeConfig, AeParams, AeStage, Autoencoder, Schedule, TrainParams,
    Trainable,
};
use blindspot::Check;
use blindspot::{Classifier, Differentiable, Error, Representation};
use ndarray::Array2;

mod common;
use common::{close, objective, random_inputs};

/// A small structured dataset: 4 classes of 4×4 "images", each a noisy copy of a class
/// prototype, so an autoencoder can learn to compress it and a classifier to separate it.
fn toy_dataset(n: usize, seed: u64) -> Dataset {
    let protos = random_inputs(4, 16, 99).mapv(|v| if v > 0.5 { 0.9 } else { 0.1 });
    let noise = random_inputs(n, 16, seed);
    let labels: Vec<usize> = (0..n).map(|i| (i * 7 + 1) % 4).collect();
    let mut x = Array2::zeros((n, 16));
    for i in 0..n {
        for j in 0..16 {
            x[[i, j]] = (protos[[labels[i], j]] + 0.2 * (noise[[i, j]] - 0.5)).clamp(0.0, 1.0);
        }
    }
    Dataset::new(x, labels, (4, 4), 4).unwrap()
}

#[test]
fn parameter_gradients_match_finite_differences() {
    // Six pixels keep the summed loss of order 1, where the f32 bound of `common::close` is meaningful.
    let (d, h, n) = (6, 4, 5);
    let mut m = Autoencoder::new(d, h, 0.05, 3).unwrap();
    // Non-zero biases so that their gradients are exercised away from the symmetric start.
    m.params_mut()[1].mapv_inplace(|_| 0.3);
    m.params_mut()[3].mapv_inplace(|_| -0.2);
    let x = random_inputs(n, d, 11);
    let mut grads: Vec<Array2<f32>> = m
        .params()
        .iter()
        .map(|p| Array2::zeros(p.raw_dim()))
        .collect();
    let mut ws = Trainable::workspace(&m, n);
    let y = vec![0; n];
    m.accumulate_grad(x.view(), &y, 1.0 / n as f32, &mut grads, &mut ws)
        .unwrap();
    m.regularize(&mut grads);
    let step = 1e-3f32;
    let mut checked = 0;
    for (p, gp) in grads.iter().enumerate() {
        for ((r, c), &g) in gp.indexed_iter() {
            let orig = m.params()[p][[r, c]];
            m.params_mut()[p][[r, c]] = orig + step;
            let up = objective(&m, x.view(), &y);
            m.params_mut()[p][[r, c]] = orig - step;
            let down = objective(&m, x.view(), &y);
            m.params_mut()[p][[r, c]] = orig;
            let fd = (up - down) / (2.0 * step as f64);
            let g = g as f64;
            assert!(close(fd, g), "param {p} [{r},{c}]: fd {fd} vs backprop {g}");
            checked += 1;
        }
    }
    assert_eq!(checked, d * h + h + h * d + d);
}

#[test]
fn loss_is_binary_cross_entropy_summed_over_pixels() {
    let m = Autoencoder::new(5, 3, 0.0, 1).unwrap();
    let x = random_inputs(4, 5, 2);
    let xh = m.reconstruct(x.view()).unwrap();
    let losses = m.reconstruction_losses(x.view()).unwrap();
    for i in 0..4 {
        let want: f64 = (0..5)
            .map(|j| {
                let (t, p) = (x[[i, j]] as f64, xh[[i, j]] as f64);
                -(t * p.ln() + (1.0 - t) * (1.0 - p).ln())
            })
            .sum();
        assert!(
            (losses[i] as f64 - want).abs() < 1e-4,
            "{} vs {want}",
            losses[i]
        );
    }
}

#[test]
fn reconstruction_error_falls_during_training() {
    let data = toy_dataset(200, 5);
    let mut ae = Autoencoder::new(16, 6, 1e-6, 4).unwrap();
    let before = ae.reconstruction_error(&data).unwrap();
    let params = TrainParams {
        epochs: 15,
        batch_size: 20,
        learning_rate: 0.05,
        momentum: 0.9,
        schedule: Schedule::Constant,
        seed: 1,
        ..TrainParams::default()
    };
    let report = fit(&mut ae, &data, &params.check().unwrap(), |_| {}).unwrap();
    let after = ae.reconstruction_error(&data).unwrap();
    let losses = report.loss_per_epoch();
    assert!(
        after < 0.8 * before,
        "reconstruction error {before} -> {after}"
    );
    assert!(
        losses.last().unwrap() < losses.first().unwrap(),
        "{losses:?}"
    );
    // Reconstructions are probabilities.
    let xh = ae.reconstruct(data.images()).unwrap();
    assert!(xh.iter().all(|&v| (0.0..=1.0).contains(&v)));
}

#[test]
fn same_seed_same_autoencoder_and_save_load_round_trip() {
    let a = Autoencoder::new(16, 5, 1e-4, 9).unwrap();
    assert_eq!(a, Autoencoder::new(16, 5, 1e-4, 9).unwrap());
    assert_ne!(a, Autoencoder::new(16, 5, 1e-4, 10).unwrap());
    let dir = std::env::temp_dir().join(format!("blindspot-ae-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ae.npz");
    a.save(&path).unwrap();
    let b = Autoencoder::load(&path).unwrap();
    assert_eq!(a, b);
    // A Network file is not an autoencoder file.
    let mlp = blindspot::nn::Network::new("FC3-10".parse().unwrap(), 1);
    mlp.save(&path).unwrap();
    assert!(matches!(
        Autoencoder::load(&path),
        Err(Error::ModelFile { .. })
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_inputs_are_typed_errors() {
    assert!(matches!(
        Autoencoder::new(0, 3, 0.0, 1),
        Err(Error::InvalidParameter { .. })
    ));
    assert!(matches!(
        Autoencoder::new(4, 3, -1.0, 1),
        Err(Error::InvalidParameter { .. })
    ));
    let m = Autoencoder::new(4, 3, 0.0, 1).unwrap();
    assert!(matches!(
        m.encode(Array2::zeros((2, 5)).view()),
        Err(Error::Shape { .. })
    ));
    assert!(matches!(
        m.encode(Array2::from_elem((1, 4), f32::NAN).view()),
        Err(Error::NonFinite { .. })
    ));
    assert!(matches!(
        Autoencoder::from_params(vec![Array2::zeros((4, 3))], 0.0),
        Err(Error::Shape { .. })
    ));
}

/// A recipe small enough for a test: few epochs of each stage on the toy data.
fn tiny_params(code: usize) -> AeParams {
    let sgd = |epochs, lr| TrainParams {
        epochs,
        batch_size: 20,
        learning_rate: lr,
        momentum: 0.9,
        schedule: Schedule::Constant,
        seed: 0,
        ..TrainParams::default()
    };
    AeParams {
        code,
        ae_weight_decay: 1e-6,
        weight_decay: 1e-6,
        pretrain: sgd(10, 0.05),
        softmax: sgd(20, 0.5),
        finetune: Some(sgd(5, 0.1)),
    }
}

fn tiny_recipe(code: usize) -> AeConfig {
    tiny_params(code).check().unwrap()
}

#[test]
fn ae_classifier_stacks_encoder_and_softmax() {
    let data = toy_dataset(200, 6);
    let mut stages = Vec::new();
    let (mlp, report) = train_ae_classifier(&data, &tiny_recipe(9), 3, |s, _| {
        if stages.last() != Some(&s) {
            stages.push(s);
        }
    })
    .unwrap();
    assert_eq!(
        stages,
        vec![AeStage::Pretrain, AeStage::Softmax, AeStage::Finetune]
    );
    assert!(report.reconstruction_after < report.reconstruction_before);
    // A separable toy problem: the fine-tuned stack classifies it.
    assert!(report.finetune.as_ref().unwrap().train_error.unwrap() < 0.05);
    assert_eq!(mlp.input_dim(), 16);
    assert_eq!(mlp.num_layers(), 1);
    assert_eq!(mlp.layer_dim(0).unwrap(), 9);
    assert_eq!(mlp.arch().weight_decay(), 1e-6);

    // Without fine-tuning, layer 0 of the stack is exactly the autoencoder's code.
    let frozen = tiny_params(9).with_finetune(None).check().unwrap();
    let (mlp, report) = train_ae_classifier(&data, &frozen, 3, |_, _| {}).unwrap();
    let code = report.autoencoder.encode(data.images()).unwrap();
    let rep = mlp.representation(data.images(), 0).unwrap();
    assert!(code
        .iter()
        .zip(rep.iter())
        .all(|(a, b)| (a - b).abs() < 1e-6));
    // Same seed, same stack.
    let (again, _) = train_ae_classifier(&data, &frozen, 3, |_, _| {}).unwrap();
    assert_eq!(mlp, again);
}

#[test]
fn stacked_input_gradient_matches_finite_differences() {
    let data = toy_dataset(100, 8);
    let (mlp, _) = train_ae_classifier(&data, &tiny_recipe(5), 2, |_, _| {}).unwrap();
    let x = data.images().slice(ndarray::s![..3, ..]).to_owned();
    let y = vec![0, 2, 3];
    let (_, grad) = mlp.loss_and_input_grad(x.view(), &y).unwrap();
    let step = 1e-3f32;
    let mut xp = x.clone();
    for i in 0..3 {
        for j in 0..16 {
            let orig = xp[[i, j]];
            xp[[i, j]] = orig + step;
            let up = mlp.loss_and_input_grad(xp.view(), &y).unwrap().0[i] as f64;
            xp[[i, j]] = orig - step;
            let down = mlp.loss_and_input_grad(xp.view(), &y).unwrap().0[i] as f64;
            xp[[i, j]] = orig;
            let fd = (up - down) / (2.0 * step as f64);
            let g = grad[[i, j]] as f64;
            assert!(close(fd, g), "x[{i},{j}]: fd {fd} vs backprop {g}");
        }
    }
}

#[test]
fn ae_params_name_each_bad_value() {
    let name = |p: AeParams| match p.check() {
        Err(Error::InvalidParameter { name, .. }) => name,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        name(AeParams {
            code: 0,
            ..tiny_params(9)
        }),
        "code"
    );
    assert_eq!(
        name(AeParams {
            ae_weight_decay: -1.0,
            ..tiny_params(9)
        }),
        "ae_weight_decay"
    );
    assert_eq!(
        name(AeParams {
            weight_decay: f32::NAN,
            ..tiny_params(9)
        }),
        "weight_decay"
    );
    let mut bad_stage = tiny_params(9);
    bad_stage.softmax.learning_rate = 0.0;
    assert_eq!(name(bad_stage), "learning_rate");
    let bad_finetune = tiny_params(9).with_finetune(Some(TrainParams {
        epochs: 0,
        ..TrainParams::default()
    }));
    assert_eq!(name(bad_finetune), "epochs");
    let ok = tiny_params(9).check().unwrap();
    assert_eq!(ok.code, 9);
    assert_eq!(ok.finetune.as_ref().unwrap().epochs, 5);
}
