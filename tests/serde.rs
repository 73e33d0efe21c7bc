//! Every serialisable type (cargo feature `serde`, on for the crate's own tests and examples)
//! survives a JSON round trip unchanged: settings, reports from real runs, attack outcomes.

use blindspot::Check;
use std::fmt::Debug;

use blindspot::adversarial_training::{
    train_with_fgsm, train_with_pools, FgsmTrainParams, PoolStats, PoolTarget, PoolTrainParams,
    PoolUpdate,
};
use blindspot::attack::{Attack, BoxLbfgs, BoxLbfgsParams, Fgsm, OutcomeSummary, Penalty, Target};
use blindspot::data::Dataset;
use blindspot::ndarray::{Array1, Array2, Array4};
use blindspot::nn::{
    train, Activation, AeParams, AeStage, Architecture, Network, Schedule, TrainParams,
};
use blindspot::probe::{study, Direction, ProbeParams};
use blindspot::spectral::{
    conv_operator_norm, conv_power_iteration, layer_bounds, power_iteration, BoundMethod, Padding,
    PowerIterationParams,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// `value` to JSON and back gives `value`.
fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(value: &T) {
    let json = serde_json::to_string(value).unwrap();
    let back: T = serde_json::from_str(&json).unwrap();
    assert_eq!(&back, value, "{json}");
}

/// The same for a type with `&'static str` fields (names the crate fixes, such as a bound's
/// layer kind), which deserialise only from `'static` text.
fn round_trip_static<T: Serialize + Deserialize<'static> + PartialEq + Debug>(value: &T) {
    let json: &'static str = Box::leak(serde_json::to_string(value).unwrap().into_boxed_str());
    let back: T = serde_json::from_str(json).unwrap();
    assert_eq!(&back, value, "{json}");
}

fn tiny() -> (Network, Dataset) {
    let n = 60;
    let images = Array2::from_shape_fn((n, 4), |(i, j)| ((i * 7 + j * 3) % 11) as f32 / 10.0);
    let labels = (0..n).map(|i| (i * 7 % 11) % 3).collect();
    let data = Dataset::new(images, labels, (2, 2), 3).unwrap();
    let model = Network::new(Architecture::parse("FC8-3", 4).unwrap(), 1);
    (model, data)
}

#[test]
fn settings_round_trip() {
    round_trip(&TrainParams::default());
    round_trip(&TrainParams {
        schedule: Schedule::Step {
            every: 2,
            factor: 0.5,
        },
        ..TrainParams::new(3, 10, 0.1)
            .with_seed(7)
            .with_dropout(vec![0.2, 0.5])
    });
    round_trip(&Schedule::Cosine {
        final_fraction: 0.01,
    });
    round_trip(&Schedule::Constant);
    round_trip(&BoxLbfgsParams::default());
    round_trip(
        &BoxLbfgsParams::default()
            .with_penalty(Penalty::L2)
            .with_search_steps(3),
    );
    round_trip(&ProbeParams::default());
    round_trip(&PowerIterationParams::default());
    #[cfg(feature = "download")]
    round_trip(&blindspot::data::DownloadParams::default());
    round_trip(&AeParams {
        code: 10,
        ae_weight_decay: 1e-6,
        weight_decay: 1e-5,
        pretrain: TrainParams::default(),
        softmax: TrainParams::new(5, 10, 0.1),
        finetune: Some(TrainParams::new(2, 10, 0.01)),
    });
    round_trip(&PoolTrainParams::new(TrainParams::default(), vec![0, 2]));
    round_trip(
        &PoolTrainParams::new(TrainParams::default(), vec![1])
            .with_target(PoolTarget::Untargeted)
            .with_pool_update(PoolUpdate::Mixed),
    );
    round_trip(&FgsmTrainParams::new(TrainParams::default(), 0.1).with_warmup_epochs(0));
    for stage in [AeStage::Pretrain, AeStage::Softmax, AeStage::Finetune] {
        round_trip(&stage);
    }
    for a in [Activation::Sigmoid, Activation::Relu] {
        round_trip(&a);
    }
    for t in [
        Target::Label(3),
        Target::Untargeted,
        Target::Random { seed: 9 },
    ] {
        round_trip(&t);
    }
    for d in [
        Direction::Unit(2),
        Direction::Random { seed: 4 },
        Direction::Custom(Array1::from(vec![0.5, -1.0])),
    ] {
        round_trip(&d);
    }
    for m in [
        BoundMethod::PowerIteration,
        BoundMethod::Fourier,
        BoundMethod::MaxPool,
    ] {
        round_trip(&m);
    }
    round_trip(&Padding::Circular);
    round_trip(&Padding::Zero(2));
}

#[test]
fn reports_of_real_runs_round_trip() {
    let (mut model, data) = tiny();
    let config = TrainParams::new(2, 10, 0.1).check().unwrap();
    let report = train(&mut model, &data, Some(&data), &config, |_| {}).unwrap();
    assert_eq!(report.epochs.len(), 2);
    round_trip(&report);
    round_trip(&report.epochs[0]);

    let adv = FgsmTrainParams::new(TrainParams::new(2, 10, 0.1), 0.1)
        .with_warmup_epochs(0)
        .check()
        .unwrap();
    let (mut model2, _) = tiny();
    let report = train_with_fgsm(&mut model2, &data, Some(&data), &adv, |_| {}).unwrap();
    round_trip(&report);
    round_trip(&report.plain.epochs[0]);
    let adv = PoolTrainParams::new(TrainParams::new(2, 10, 0.1), vec![0])
        .with_pool_size(6)
        .check()
        .unwrap();
    let attack = BoxLbfgsParams::default().with_max_iters(5).check().unwrap();
    let (mut model3, _) = tiny();
    let report = train_with_pools(&mut model3, &data, None, &attack, &adv, |_| {}).unwrap();
    assert!(report.generated > 0);
    round_trip(&report);
    // The plain figures are flattened into the adversarial ones: one level of keys, plain
    // training's names.
    let json = serde_json::to_value(&report).unwrap();
    let keys = |v: &serde_json::Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(
        keys(&json),
        [
            "attack_seconds",
            "epochs",
            "generated",
            "seconds_per_epoch",
            "test_error",
            "train_error"
        ]
    );
    assert_eq!(
        keys(&json["epochs"][1]),
        [
            "attack_seconds",
            "epoch",
            "generated",
            "learning_rate",
            "loss",
            "pool_steps",
            "seconds",
            "test_error",
            "train_error"
        ]
    );
    round_trip(&PoolStats {
        generated: 10,
        already_adversarial: 1,
        success_rate: 0.9,
        mean_distortion: 0.05,
        evaluations: 1234,
        seconds: 0.25,
    });

    let probe = ProbeParams::default()
        .with_k(5)
        .with_directions(4, 4)
        .with_baseline_sets(10)
        .with_resamples(10)
        .check()
        .unwrap();
    let report = study(&model, &data, 0, &probe).unwrap();
    round_trip(&report);

    let power = PowerIterationParams::default().check().unwrap();
    let w = Array2::from_shape_fn((5, 3), |(i, j)| (i as f32 - j as f32) / 4.0);
    round_trip(&power_iteration(w.view(), &power).unwrap());
    for bound in layer_bounds(&model).unwrap() {
        round_trip_static(&bound);
    }
    let kernel = Array4::from_shape_fn((3, 3, 1, 2), |(i, j, _, o)| (o + i * 3 + j) as f32 / 9.0);
    round_trip_static(&conv_operator_norm(kernel.view(), 6, 6, 1).unwrap());
    round_trip(&conv_power_iteration(kernel.view(), 6, 6, 1, Padding::Zero(1), &power).unwrap());
}

#[test]
fn outcomes_round_trip() {
    let (mut model, data) = tiny();
    let config = TrainParams::new(2, 10, 0.1).check().unwrap();
    train(&mut model, &data, None, &config, |_| {}).unwrap();
    let x = data.images();
    let y = data.labels()[0];
    let targets = [Target::Untargeted, Target::Label((y + 1) % 3)];
    for target in targets {
        let out = BoxLbfgs::new().attack(&model, x.row(0), y, target).unwrap();
        round_trip(&out);
        round_trip(&OutcomeSummary::of(&[out]));
        round_trip(
            &Fgsm::new(0.2)
                .unwrap()
                .attack(&model, x.row(0), y, target)
                .unwrap(),
        );
    }
}
