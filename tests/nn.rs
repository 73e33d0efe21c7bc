//! Properties of the MLP: exact gradients, name parsing, persistence, determinism, typed errors.

use blindspot::data::Dataset;
use blindspot::io::ModelFile;
use blindspot::nn::{train, Activation, Architecture, Network, TrainParams, Trainable};
use blindspot::Check;
use blindspot::{Classifier, Differentiable, Error, Representation};
use ndarray::Array2;

mod common;
use common::{close, objective, random_batch};

#[test]
fn parameter_gradients_match_finite_differences() {
    for act in [
        Activation::Sigmoid,
        Activation::Tanh,
        Activation::Relu,
        Activation::Identity,
    ] {
        let arch = Architecture::new(6, vec![5, 4], 4, act, 0.05).unwrap();
        let mut m = Network::new(arch, 3);
        let (x, y) = random_batch(7, 6, 11);
        let mut grads: Vec<Array2<f32>> = m
            .params()
            .iter()
            .map(|p| Array2::zeros(p.raw_dim()))
            .collect();
        let mut ws = Trainable::workspace(&m, 7);
        m.accumulate_grad(x.view(), &y, 1.0 / 7.0, &mut grads, &mut ws)
            .unwrap();
        m.regularize(&mut grads);
        let h = 1e-3f32;
        let mut checked = 0;
        #[allow(clippy::needless_range_loop)] // p indexes both the gradients and the model
        for p in 0..grads.len() {
            for idx in 0..grads[p].len() {
                let (r, c) = (idx / grads[p].ncols(), idx % grads[p].ncols());
                let orig = m.params()[p][[r, c]];
                m.params_mut()[p][[r, c]] = orig + h;
                let up = objective(&m, x.view(), &y);
                m.params_mut()[p][[r, c]] = orig - h;
                let down = objective(&m, x.view(), &y);
                m.params_mut()[p][[r, c]] = orig;
                let fd = (up - down) / (2.0 * h as f64);
                let g = grads[p][[r, c]] as f64;
                assert!(
                    close(fd, g),
                    "{act:?} param {p} [{r},{c}]: fd {fd} vs backprop {g}"
                );
                checked += 1;
            }
        }
        assert_eq!(checked, 6 * 5 + 5 + 5 * 4 + 4 + 4 * 4 + 4);
    }
}

#[test]
fn input_gradient_matches_finite_differences() {
    let arch = Architecture::new(6, vec![5, 4], 4, Activation::Sigmoid, 0.0).unwrap();
    let m = Network::new(arch, 5);
    let (x, y) = random_batch(3, 6, 2);
    let (losses, grad) = m.loss_and_input_grad(x.view(), &y).unwrap();
    assert_eq!(grad.dim(), (3, 6));
    let h = 1e-3f32;
    for i in 0..3 {
        for j in 0..6 {
            let mut xp = x.clone();
            xp[[i, j]] += h;
            let up = m.loss_and_input_grad(xp.view(), &y).unwrap().0[i] as f64;
            xp[[i, j]] -= 2.0 * h;
            let down = m.loss_and_input_grad(xp.view(), &y).unwrap().0[i] as f64;
            let fd = (up - down) / (2.0 * h as f64);
            assert!(
                close(fd, grad[[i, j]] as f64),
                "x[{i},{j}]: fd {fd} vs {}",
                grad[[i, j]]
            );
        }
        // The loss really is the cross-entropy of the softmax of the logits.
        let z = m.logits(x.slice(ndarray::s![i..i + 1, ..])).unwrap();
        let lse = z
            .row(0)
            .iter()
            .map(|v| (v - z[[0, y[i]]]).exp())
            .sum::<f32>()
            .ln();
        assert!((lse - losses[i]).abs() < 1e-5);
    }
}

#[test]
fn probabilities_and_representation_are_consistent() {
    let arch = Architecture::parse("FC8-6-3", 5).unwrap();
    let m = Network::new(arch, 1);
    let (x, _) = random_batch(4, 5, 9);
    let p = m.probabilities(x.view()).unwrap();
    for row in p.rows() {
        assert!((row.sum() - 1.0).abs() < 1e-6);
    }
    assert_eq!(m.num_layers(), 2);
    assert_eq!(m.representation(x.view(), 1).unwrap().dim(), (4, 6));
    assert!(m.representation(x.view(), 2).is_err());
    assert_eq!(m.predict(x.view()).unwrap().len(), 4);
}

#[test]
fn paper_names_parse_and_print_back() {
    let a = Architecture::parse("FC10(1e-4)", 784).unwrap();
    assert_eq!(
        (a.hidden(), a.classes(), a.weight_decay()),
        (&[][..], 10, 1e-4)
    );
    let b = Architecture::parse("FC100-100-10", 784).unwrap();
    assert_eq!(
        (b.hidden(), b.weight_decay(), b.activation()),
        (&[100, 100][..], 1e-5, Activation::Sigmoid)
    );
    let c = Architecture::parse("FC123-456-10", 784).unwrap();
    assert_eq!(c.hidden(), &[123, 456]);
    assert_eq!(
        Architecture::parse("FC10(1)", 784).unwrap().weight_decay(),
        1.0
    );
    for name in ["FC10(1e-4)", "FC200-200-10", "FC123-456-10(0.5)"] {
        let a = Architecture::parse(name, 784).unwrap();
        assert_eq!(Architecture::parse(&a.to_string(), 784).unwrap(), a);
    }
    for bad in [
        "", "FC", "CNN10", "FC10(", "FC10(x)", "FC10(-1)", "FC0-10", "FC100-1", "FC-10", "FC10(1)x",
    ] {
        assert!(
            matches!(Architecture::parse(bad, 784), Err(Error::ModelName { .. })),
            "{bad:?} parsed"
        );
    }
}

#[test]
fn bad_inputs_are_typed_errors() {
    let m = Network::new(Architecture::parse("FC4-3", 5).unwrap(), 0);
    let wrong = Array2::<f32>::zeros((2, 6));
    assert!(matches!(m.logits(wrong.view()), Err(Error::Shape { .. })));
    let mut nan = Array2::<f32>::zeros((2, 5));
    nan[[1, 2]] = f32::NAN;
    assert!(matches!(m.logits(nan.view()), Err(Error::NonFinite { .. })));
    let x = Array2::<f32>::zeros((2, 5));
    assert!(matches!(
        m.loss_and_input_grad(x.view(), &[0, 3]),
        Err(Error::LabelOutOfRange {
            label: 3,
            classes: 3,
            ..
        })
    ));
    assert!(matches!(
        m.loss_and_input_grad(x.view(), &[0]),
        Err(Error::Shape { .. })
    ));
    assert!(matches!(
        m.logits(Array2::<f32>::zeros((0, 5)).view()),
        Err(Error::EmptyInput { .. })
    ));
    assert!(TrainParams {
        momentum: 1.0,
        ..TrainParams::default()
    }
    .check()
    .is_err());
    assert!(TrainParams {
        learning_rate: f32::NAN,
        ..TrainParams::default()
    }
    .check()
    .is_err());
    assert!(TrainParams::default().with_epochs(0).check().is_err());
}

#[test]
fn npz_round_trip_and_mismatched_shapes() {
    let dir = std::env::temp_dir().join(format!("blindspot-nn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let m = Network::new(
        Architecture::parse("FC7-5-3(0.01)", 4)
            .unwrap()
            .with_activation(Activation::Tanh),
        9,
    );
    let path = dir.join("m.npz");
    m.save(&path).unwrap();
    let back = Network::load(&path).unwrap();
    assert_eq!(back, m);
    assert!(std::fs::read_dir(&dir).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .contains(".tmp")));

    // The header says FC7-5-3 but W1 is stored with the wrong shape.
    let mut file = ModelFile::load(&path).unwrap();
    file.arrays.iter_mut().find(|(n, _)| n == "W1").unwrap().1 = Array2::zeros((7, 4));
    let bad = dir.join("bad.npz");
    file.save(&bad).unwrap();
    let err = Network::load(&bad).unwrap_err();
    assert!(matches!(err, Error::ModelFile { .. }), "{err}");
    assert!(err.to_string().contains("W1"), "{err}");

    let mut file = ModelFile::load(&path).unwrap();
    file.arrays.retain(|(n, _)| n != "b0");
    file.save(&bad).unwrap();
    assert!(Network::load(&bad).unwrap_err().to_string().contains("b0"));

    std::fs::write(&bad, b"not a zip at all").unwrap();
    assert!(matches!(Network::load(&bad), Err(Error::ModelFile { .. })));
    assert!(matches!(
        Network::load(dir.join("missing.npz")),
        Err(Error::Io { .. })
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}

fn toy_dataset() -> Dataset {
    // Two classes separated by the mean brightness of the left vs right half.
    let (mut x, _) = random_batch(200, 16, 4);
    let mut y = Vec::new();
    for (i, mut row) in x.rows_mut().into_iter().enumerate() {
        let label = i % 2;
        for j in 0..8 {
            row[j + 8 * label] *= 0.3;
        }
        y.push(1 - label);
    }
    Dataset::new(x, y, (4, 4), 2).unwrap()
}

#[test]
fn training_is_deterministic_and_learns() {
    let data = toy_dataset();
    let arch = Architecture::parse("FC8-2", 16).unwrap();
    let cfg = TrainParams {
        epochs: 15,
        batch_size: 16,
        learning_rate: 0.5,
        ..TrainParams::default()
    }
    .with_seed(3)
    .check()
    .unwrap();
    let run = |seed| {
        let mut m = Network::new(arch.clone(), seed);
        let r = train(&mut m, &data, None, &cfg, |_| {}).unwrap();
        (m, r)
    };
    let (a, ra) = run(1);
    let (b, _) = run(1);
    let (c, _) = run(2);
    assert_eq!(a, b, "same seed, same weights");
    assert_ne!(a, c);
    let losses = ra.loss_per_epoch();
    assert!(losses.last().unwrap() < &(0.5 * losses[0]), "{losses:?}");
    assert!(
        ra.train_error.unwrap() < 0.05,
        "train error {:?}",
        ra.train_error
    );
}

#[test]
fn single_example_kernel_matches_batch_path() {
    for act in [Activation::Sigmoid, Activation::Relu] {
        let arch = Architecture::new(30, vec![17, 9], 5, act, 0.0).unwrap();
        let m = Network::new(arch, 8);
        let (mut x, _) = random_batch(4, 30, 6);
        x[[2, 3]] = 0.0; // zero pixels take the kernel's skip branch
        let y = [4, 0, 2, 1];
        let (batch_loss, batch_grad) = m.loss_and_input_grad(x.view(), &y).unwrap();
        let mut scratch = Default::default();
        for i in 0..4 {
            let xi = x.slice(ndarray::s![i..i + 1, ..]);
            let mut loss = ndarray::Array1::zeros(1);
            let mut grad = Array2::zeros((1, 30));
            m.loss_and_input_grad_with(
                xi,
                &y[i..i + 1],
                &mut scratch,
                loss.view_mut(),
                grad.view_mut(),
            )
            .unwrap();
            assert!((loss[0] - batch_loss[i]).abs() < 1e-5);
            let (one, all) = (m.logits(xi).unwrap(), m.logits(x.view()).unwrap());
            for k in 0..5 {
                assert!((one[[0, k]] - all[[i, k]]).abs() < 1e-5, "logits row {i}");
            }
            for j in 0..30 {
                assert!(
                    (grad[[0, j]] - batch_grad[[i, j]]).abs() < 1e-5,
                    "{act:?} row {i} col {j}"
                );
            }
        }
    }
}
