//! The attack: success inside the box, honest figures, typed errors, determinism.

use blindspot::attack::BoxLbfgsParams;
use blindspot::attack::{
    distortion, Attack, BoxLbfgs, GaussianNoise, OutcomeSummary, Penalty, Target,
};
use blindspot::Check;
use blindspot::{Classifier, Error};
use ndarray::{s, Array1};

mod common;
use common::small_mnist_model;

#[test]
fn targeted_attack_succeeds_inside_the_box_with_honest_figures() {
    let (m, data) = small_mnist_model();
    let atk = BoxLbfgs::default();
    for i in 0..4 {
        let x = data.images().row(i).to_owned();
        let y = data.labels()[i];
        let t = (y + 1) % 10;
        let out = atk.attack(m, x.view(), y, Target::Label(t)).unwrap();
        assert!(out.success, "image {i}: no adversarial example found");
        assert_eq!(out.adversarial_label, t);
        assert!(
            out.adversarial.iter().all(|&v| (0.0..=1.0).contains(&v)),
            "left the box"
        );
        // The reported label comes from the model, the distortion from the public function.
        let again = m
            .predict(out.adversarial.view().insert_axis(ndarray::Axis(0)))
            .unwrap()[0];
        assert_eq!(again, t);
        assert_eq!(
            out.distortion,
            distortion(x.view(), out.adversarial.view()).unwrap()
        );
        let r = &out.adversarial - &x;
        assert_eq!(out.perturbation, r);
        assert!(
            out.distortion > 0.0 && out.distortion < 0.3,
            "distortion {}",
            out.distortion
        );
        assert!(out.penalty_weight > 0.0 && out.evaluations > 0);
    }
}

#[test]
fn untargeted_is_no_larger_than_any_targeted_result() {
    let (m, data) = small_mnist_model();
    let atk = BoxLbfgsParams::default()
        .with_search_steps(3)
        .check()
        .unwrap();
    let x = data.images().row(0).to_owned();
    let y = data.labels()[0];
    let un = atk.attack(m, x.view(), y, Target::Untargeted).unwrap();
    assert!(un.success && un.adversarial_label != y && un.target.is_none());
    for t in (0..10).filter(|&t| t != y) {
        let o = atk.attack(m, x.view(), y, Target::Label(t)).unwrap();
        if o.success {
            assert!(
                un.distortion <= o.distortion + 1e-12,
                "target {t}: {} < {}",
                o.distortion,
                un.distortion
            );
        }
    }
}

#[test]
fn both_penalties_find_adversarial_examples() {
    let (m, data) = small_mnist_model();
    let x = data.images().row(1).to_owned();
    let y = data.labels()[1];
    for p in [Penalty::SquaredL2, Penalty::L2] {
        let o = BoxLbfgsParams::default()
            .with_penalty(p)
            .check()
            .unwrap()
            .attack(m, x.view(), y, Target::Label((y + 3) % 10))
            .unwrap();
        assert!(o.success, "{p:?}");
    }
}

#[test]
fn bad_requests_are_typed_errors() {
    let (m, data) = small_mnist_model();
    let atk = BoxLbfgs::default();
    let x = data.images().row(0).to_owned();
    let y = data.labels()[0];
    assert!(matches!(
        atk.attack(m, x.view(), y, Target::Label(y)),
        Err(Error::InvalidParameter { .. })
    ));
    assert!(matches!(
        atk.attack(m, x.slice(s![..700]), y, Target::Label((y + 1) % 10)),
        Err(Error::Shape { .. })
    ));
    let mut nan = x.clone();
    nan[5] = f32::NAN;
    assert!(matches!(
        atk.attack(m, nan.view(), y, Target::Untargeted),
        Err(Error::NonFinite { .. })
    ));
    assert!(matches!(
        atk.attack(m, x.view(), 10, Target::Untargeted),
        Err(Error::LabelOutOfRange { .. })
    ));
    assert!(matches!(
        atk.attack(m, x.view(), y, Target::Label(12)),
        Err(Error::LabelOutOfRange { .. })
    ));
    let mut outside = x.clone();
    outside[0] = 1.5;
    assert!(atk
        .attack(m, outside.view(), y, Target::Untargeted)
        .is_err());
    assert!(BoxLbfgsParams::default()
        .with_initial_c(0.0)
        .check()
        .is_err());
    assert!(BoxLbfgsParams::default().with_max_iters(0).check().is_err());
    assert!(GaussianNoise::new(-1.0).is_err());
}

#[test]
fn batch_equals_single_and_seeds_are_reproducible() {
    let (m, data) = small_mnist_model();
    let atk = BoxLbfgsParams::default()
        .with_search_steps(2)
        .check()
        .unwrap();
    let n = 4;
    let xs = data.images().slice(s![..n, ..]).to_owned();
    let labels = &data.labels()[..n];
    let targets: Vec<Target> = (0..n as u64)
        .map(|i| Target::Random { seed: 100 + i })
        .collect();
    let batch = atk.attack_batch(m, xs.view(), labels, &targets).unwrap();
    for i in 0..n {
        let single = atk.attack(m, xs.row(i), labels[i], targets[i]).unwrap();
        assert_eq!(batch[i], single, "image {i}");
        let resolved = targets[i].resolve(labels[i], 10).unwrap().unwrap();
        assert_ne!(resolved, labels[i]);
        assert_eq!(single.target, Some(resolved));
    }
    // The same seed draws the same target; the draw covers the other labels.
    let drawn: std::collections::BTreeSet<usize> = (0..200)
        .map(|s| Target::Random { seed: s }.resolve(3, 10).unwrap().unwrap())
        .collect();
    assert_eq!(drawn.len(), 9);
    assert!(!drawn.contains(&3));
    assert!(atk
        .attack_batch(m, xs.view(), &labels[..2], &targets)
        .is_err());
}

#[test]
fn inputs_already_adversarial_are_returned_unsearched_and_left_out_of_the_means() {
    let (m, data) = small_mnist_model();
    let atk = BoxLbfgsParams::default()
        .with_search_steps(2)
        .check()
        .unwrap();
    let n = 4;
    let xs = data.images().slice(s![..n, ..]).to_owned();
    let predicted = m.predict(xs.view()).unwrap();
    // Rows 0 and 2 are given a label the model does not give them: already misclassified
    // (untargeted). Row 1 is aimed at the label the model already gives it: already
    // adversarial (targeted). Row 3 is attacked as usual.
    let labels = [
        (predicted[0] + 1) % 10,
        (predicted[1] + 1) % 10,
        (predicted[2] + 3) % 10,
        predicted[3],
    ];
    let targets = [
        Target::Untargeted,
        Target::Label(predicted[1]),
        Target::Untargeted,
        Target::Label((predicted[3] + 1) % 10),
    ];
    let outs = atk.attack_batch(m, xs.view(), &labels, &targets).unwrap();
    for i in 0..3 {
        let o = &outs[i];
        assert!(o.success && o.already_adversarial, "row {i}");
        assert_eq!(o.adversarial, xs.row(i));
        assert_eq!(o.adversarial_label, predicted[i]);
        assert_eq!(
            (o.distortion, o.penalty_weight, o.evaluations),
            (0.0, 0.0, 1)
        );
        assert!(o.perturbation.iter().all(|&v| v == 0.0));
    }
    let searched = &outs[3];
    assert!(searched.success && !searched.already_adversarial);
    assert!(searched.distortion > 0.0 && searched.evaluations > 2);
    let s = OutcomeSummary::of(&outs);
    assert_eq!(
        (s.images, s.already_adversarial, s.searched, s.successes),
        (4, 3, 1, 1)
    );
    assert_eq!(s.success_rate, 1.0);
    assert_eq!(s.mean_distortion, searched.distortion);
    assert_eq!(s.evaluations_per_image, searched.evaluations as f64);
    // Nothing searched: rates and means are 0, not NaN.
    let none = OutcomeSummary::of(&outs[..3]);
    assert_eq!((none.searched, none.successes), (0, 0));
    assert_eq!(
        (
            none.success_rate,
            none.mean_distortion,
            none.evaluations_per_image
        ),
        (0.0, 0.0, 0.0)
    );
}

#[test]
fn gaussian_noise_matches_the_requested_distortion() {
    let (m, data) = small_mnist_model();
    let x = data.images().row(2).to_owned();
    for d in [0.05, 0.1, 0.3] {
        let noisy = GaussianNoise::matching(x.view(), d, 7).unwrap();
        assert!(noisy.iter().all(|&v| (0.0..=1.0).contains(&v)));
        let got = distortion(x.view(), noisy.view()).unwrap();
        assert!((got - d).abs() <= 1e-4 * d, "asked {d}, got {got}");
        assert_eq!(noisy, GaussianNoise::matching(x.view(), d, 7).unwrap());
    }
    let out = GaussianNoise::new(0.1)
        .unwrap()
        .attack(m, x.view(), data.labels()[2], Target::Random { seed: 1 })
        .unwrap();
    assert!(out.adversarial.iter().all(|&v| (0.0..=1.0).contains(&v)));
    assert_eq!(
        out.distortion,
        distortion(x.view(), out.adversarial.view()).unwrap()
    );
    assert_eq!(
        distortion(
            Array1::<f32>::zeros(3).view(),
            Array1::<f32>::ones(3).view()
        )
        .unwrap(),
        1.0
    );
    assert!(distortion(
        Array1::<f32>::zeros(3).view(),
        Array1::<f32>::ones(4).view()
    )
    .is_err());
}
