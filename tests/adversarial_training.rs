//! Adversarial training: the network above a level, layer-wise pools that leave the lower
//! layers alone, dropout (seeded in training, absent at inference), FGSM, checked configs and
//! determinism under a seed.

use blindspot::adversarial_training::{
    refresh_count, train_with_fgsm, train_with_pools, AdversarialPool, AdversarialProgress,
    FgsmTrainParams, PoolTarget, PoolTrainParams, PoolUpdate, MAX_POOL_BATCH, MAX_POOL_SIZE,
};
use blindspot::attack::BoxLbfgsParams;
use blindspot::attack::{Attack, BoxLbfgs, Fgsm, Target};
use blindspot::data::Dataset;
use blindspot::nn::{train, Architecture, Network, Progress, TrainParams, Trainable};
use blindspot::Check;
use blindspot::{Classifier, Differentiable, Error, Representation};
use ndarray::{s, Array2, Axis};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

mod common;

fn small() -> Dataset {
    common::mnist().train.head(400).unwrap()
}

fn tiny_params(seed: u64) -> TrainParams {
    TrainParams {
        epochs: 3,
        batch_size: 20,
        learning_rate: 0.1,
        seed,
        ..TrainParams::default()
    }
}

fn quick_attack() -> BoxLbfgs {
    BoxLbfgsParams::default()
        .with_search_steps(0)
        .with_bracket_steps(2)
        .with_max_iters(15)
        .check()
        .unwrap()
}

fn net(seed: u64) -> Network {
    Network::new(Architecture::parse("FC30-20-10", 784).unwrap(), seed)
}

fn pools(levels: Vec<usize>, seed: u64) -> PoolTrainParams {
    PoolTrainParams::new(tiny_params(seed), levels)
        .with_pool_size(24)
        .with_refresh(5, 0.25)
        .with_warmup_epochs(1)
}

#[test]
fn the_network_above_a_level_computes_the_whole_networks_logits() {
    let model = net(3);
    let data = small();
    let x = data.images().slice(s![..7, ..]).to_owned();
    let want = model.logits(x.view()).unwrap();
    assert_eq!(model.levels(), 3);
    for level in 0..model.levels() {
        let upper = model.above(level).unwrap();
        let h = if level == 0 {
            x.clone()
        } else {
            model.representation(x.view(), level - 1).unwrap()
        };
        assert_eq!(upper.input_dim(), h.ncols());
        let got = upper.logits(h.view()).unwrap();
        for (a, b) in got.iter().zip(&want) {
            assert!(
                (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                "level {level}: {a} vs {b}"
            );
        }
        // Its parameters are the last ones of the whole network's.
        let all = model.params();
        let top = upper.params();
        assert_eq!(&all[all.len() - top.len()..], &top[..]);
    }
    assert!(matches!(
        model.above(3),
        Err(Error::InvalidParameter { .. })
    ));
}

#[test]
fn the_network_above_a_level_has_the_finite_difference_gradient() {
    let model = net(5);
    let data = small();
    let x = data.images().slice(s![..1, ..]).to_owned();
    let upper = model.above(1).unwrap();
    let h = model
        .representation(x.view(), 0)
        .unwrap()
        .mapv(|v| v as f64);
    let hf = h.mapv(|v| v as f32);
    let (_, g) = upper.loss_and_input_grad(hf.view(), &[4]).unwrap();
    let eps = 1e-2f32;
    for j in [0usize, 3, 11, 29] {
        let mut hp = hf.clone();
        hp[[0, j]] += eps;
        let mut hm = hf.clone();
        hm[[0, j]] -= eps;
        let lp = upper.loss_and_input_grad(hp.view(), &[4]).unwrap().0[0];
        let lm = upper.loss_and_input_grad(hm.view(), &[4]).unwrap().0[0];
        let fd = (lp - lm) / (2.0 * eps);
        assert!(
            (fd - g[[0, j]]).abs() <= 2e-3 * (1.0 + fd.abs()),
            "unit {j}: fd {fd} vs {}",
            g[[0, j]]
        );
    }
}

/// A pool step at level k (the step the trainer takes after each clean batch) changes the
/// layers above k and leaves the ones at and below k bit-identical.
#[test]
fn a_pool_at_level_k_leaves_the_layers_at_and_below_k_untouched() {
    let data = small();
    for level in [1usize, 2] {
        let mut model = net(7);
        let before = model.clone();
        let upper = model.above(level).unwrap();
        let h = model
            .representation(data.images().slice(s![..10, ..]), level - 1)
            .unwrap();
        let (pool, _) = AdversarialPool::generate(
            &upper,
            &quick_attack(),
            h.view(),
            &data.labels()[..10],
            PoolTarget::Random,
            &mut ChaCha8Rng::seed_from_u64(1),
        )
        .unwrap();
        blindspot::adversarial_training::step_above(
            &mut model,
            level,
            pool.examples(),
            pool.labels(),
            0.5,
        )
        .unwrap();
        let (pb, pa) = (before.params(), model.params());
        let lower = pb.len() - upper.params().len();
        for i in 0..pb.len() {
            if i < lower {
                assert_eq!(pb[i], pa[i], "level {level}: parameter {i} changed");
            } else {
                assert_ne!(pb[i], pa[i], "level {level}: parameter {i} did not change");
            }
        }
    }
}

#[test]
fn layerwise_training_is_deterministic_and_uses_every_level() {
    let data = small();
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut model = net(2);
            let config = pools(vec![0, 1, 2], 4).check().unwrap();
            let mut levels = Vec::new();
            let mut epochs = Vec::new();
            let r = train_with_pools(
                &mut model,
                &data,
                None,
                &quick_attack(),
                &config,
                |p| match p {
                    AdversarialProgress::Pool {
                        level, refresh: 0, ..
                    } => levels.push(*level),
                    AdversarialProgress::Train(Progress::Epoch(e)) => epochs.push(e.clone()),
                    _ => {}
                },
            )
            .unwrap();
            (model, r, levels, epochs)
        })
    };
    let (a, ra, levels, epochs) = run(1);
    let (b, rb, _, _) = run(2);
    assert_eq!(a, b);
    assert_eq!(ra.plain.train_error, rb.plain.train_error);
    assert_eq!(levels, vec![0, 1, 2]);
    // The report is plain training's, its epochs those the callback saw, with the attacks'
    // figures summed over them.
    assert_eq!(epochs, ra.plain.epochs);
    let last = &ra.plain.epochs[2].plain;
    assert!(ra.plain.train_error.is_some());
    assert_eq!(
        (ra.plain.train_error, ra.plain.test_error),
        (last.train_error, last.test_error)
    );
    let seconds: f64 = epochs.iter().map(|e| e.plain.seconds).sum();
    assert_eq!(ra.plain.seconds_per_epoch, seconds / 3.0);
    assert_eq!(
        ra.generated,
        epochs.iter().map(|e| e.generated).sum::<usize>()
    );
    // One pool step per clean batch after the warm-up epoch: 2 epochs of 20 batches.
    assert_eq!(
        ra.plain.epochs.iter().map(|e| e.pool_steps).sum::<usize>(),
        40
    );
    assert!(ra.generated >= 3 * 24);
}

#[test]
fn pool_every_sets_the_share_of_pool_steps() {
    let data = small();
    let count = |every: usize| {
        let mut model = net(2);
        let config = pools(vec![1], 4)
            .with_pool_schedule(every, 0.5)
            .check()
            .unwrap();
        let r =
            train_with_pools(&mut model, &data, None, &quick_attack(), &config, |_| {}).unwrap();
        r.plain
            .epochs
            .iter()
            .map(|e| e.pool_steps)
            .collect::<Vec<_>>()
    };
    // 20 clean batches an epoch; no pool steps in the warm-up epoch.
    assert_eq!(count(1), vec![0, 20, 20]);
    assert_eq!(count(3), vec![0, 6, 7]);
}

#[test]
fn mixed_pools_take_one_update_per_mixed_batch_and_are_deterministic() {
    let data = small();
    let run = |update: PoolUpdate, every: usize| {
        let mut model = net(2);
        let config = pools(vec![0, 2], 4)
            .with_pool_schedule(every, 1.0)
            .with_pool_update(update)
            .check()
            .unwrap();
        let r =
            train_with_pools(&mut model, &data, None, &quick_attack(), &config, |_| {}).unwrap();
        (model, r)
    };
    let (a, ra) = run(PoolUpdate::Mixed, 3);
    let (b, _) = run(PoolUpdate::Mixed, 3);
    assert_eq!(a, b);
    assert_eq!(
        ra.plain
            .epochs
            .iter()
            .map(|e| e.pool_steps)
            .collect::<Vec<_>>(),
        vec![0, 6, 7]
    );
    // Mixed batches move the weights elsewhere than separate pool steps do.
    let (sep, _) = run(PoolUpdate::Separate, 3);
    assert_ne!(a, sep);
}

#[test]
fn config_rejects_each_bad_value() {
    let bad = |p: PoolTrainParams, name: &str| match p.check() {
        Err(Error::InvalidParameter { name: n, .. }) => assert_eq!(n, name),
        other => panic!("{name}: {other:?}"),
    };
    let bad_fgsm = |p: FgsmTrainParams, name: &str| match p.check() {
        Err(Error::InvalidParameter { name: n, .. }) => assert_eq!(n, name),
        other => panic!("{name}: {other:?}"),
    };
    bad(pools(vec![], 1), "levels");
    bad(pools(vec![1, 1], 1), "levels");
    bad(pools(vec![0], 1).with_pool_size(0), "pool_size");
    bad(pools(vec![0], 1).with_refresh(0, 0.1), "refresh_every");
    bad(pools(vec![0], 1).with_refresh(5, 0.0), "refresh_fraction");
    bad(pools(vec![0], 1).with_pool_batch(0), "pool_batch");
    bad(pools(vec![0], 1).with_pool_schedule(0, 1.0), "pool_every");
    bad(pools(vec![0], 1).with_pool_schedule(2, 0.0), "pool_weight");
    bad(
        pools(vec![0], 1).with_pool_schedule(2, f32::NAN),
        "pool_weight",
    );
    bad(pools(vec![0], 1).with_pool_schedule(2, 1.5), "pool_weight");
    bad(pools(vec![0], 1).with_warmup_epochs(3), "warmup_epochs");
    bad(
        pools(vec![0], 1).with_pool_size(MAX_POOL_SIZE + 1),
        "pool_size",
    );
    bad(
        pools(vec![0], 1).with_pool_batch(MAX_POOL_BATCH + 1),
        "pool_batch",
    );
    bad(
        PoolTrainParams::new(tiny_params(0).with_epochs(0), vec![0]),
        "epochs",
    );
    let fgsm = |epsilon| FgsmTrainParams::new(tiny_params(1), epsilon);
    bad_fgsm(fgsm(f32::NAN), "epsilon");
    bad_fgsm(fgsm(0.0), "epsilon");
    bad_fgsm(fgsm(1.5), "epsilon");
    bad_fgsm(fgsm(0.1).with_warmup_epochs(3), "warmup_epochs");
    bad_fgsm(
        FgsmTrainParams::new(tiny_params(1).with_learning_rate(-1.0), 0.1),
        "learning_rate",
    );
    // FGSM has no pools, so it has no pool settings to get wrong; a good one checks.
    assert!(fgsm(1.0).with_warmup_epochs(2).check().is_ok());
    // A level past the last hidden layer, or pools above ReLU units, are typed errors.
    let data = small();
    let mut model = net(1);
    let config = pools(vec![3], 1).check().unwrap();
    assert!(matches!(
        train_with_pools(&mut model, &data, None, &quick_attack(), &config, |_| {}),
        Err(Error::InvalidParameter { .. })
    ));
    let mut relu = Network::new(
        Architecture::parse("FC30-20-10", 784)
            .unwrap()
            .with_activation(blindspot::nn::Activation::Relu),
        1,
    );
    let config = pools(vec![1], 1).check().unwrap();
    assert!(matches!(
        train_with_pools(&mut relu, &data, None, &quick_attack(), &config, |_| {}),
        Err(Error::InvalidParameter { .. })
    ));
    assert_eq!(refresh_count(24, 0.25), 6);
    assert_eq!(refresh_count(24, 0.001), 1);
}

#[test]
fn dropout_is_seeded_in_training_and_absent_at_inference() {
    let data = small();
    let fit = |rates: Vec<f32>, seed: u64| {
        let mut model = net(1);
        let config = tiny_params(seed).with_dropout(rates).check().unwrap();
        train(&mut model, &data, None, &config, |_| {}).unwrap();
        model
    };
    let a = fit(vec![0.3, 0.3], 1);
    assert_eq!(a, fit(vec![0.3, 0.3], 1), "same seed, same weights");
    assert_ne!(a, fit(vec![0.0, 0.0], 1), "dropout changes training");
    assert_eq!(
        fit(vec![0.0, 0.0], 1),
        fit(vec![], 1),
        "rate 0 is no dropout"
    );
    // Inference never drops: the same input gives the same logits.
    let x = data.images().slice(s![..5, ..]).to_owned();
    assert_eq!(a.logits(x.view()).unwrap(), a.logits(x.view()).unwrap());
    let mut ws = a.workspace(5);
    a.enable_dropout(&mut ws, &[0.5, 0.5], 9).unwrap();
    assert!(matches!(
        a.enable_dropout(&mut ws, &[0.5, 0.5, 0.5], 9),
        Err(Error::InvalidParameter { .. })
    ));
    assert!(matches!(
        tiny_params(1).with_dropout(vec![1.0]).check(),
        Err(Error::InvalidParameter { .. })
    ));
}

#[test]
fn dropout_gradient_matches_finite_differences_under_a_fixed_mask() {
    // With the same seed the same mask is drawn, so the loss is a smooth function of the
    // weights and its gradient can be checked.
    let model = net(4);
    let data = small();
    let x = data.images().slice(s![..3, ..]).to_owned();
    let y = &data.labels()[..3];
    let loss_at = |m: &Network| -> (f32, Vec<Array2<f32>>) {
        let mut ws = m.workspace(3);
        m.enable_dropout(&mut ws, &[0.4, 0.4], 11).unwrap();
        let mut g: Vec<Array2<f32>> = m
            .params()
            .iter()
            .map(|p| Array2::zeros(p.raw_dim()))
            .collect();
        let l = m
            .accumulate_grad(x.view(), y, 1.0, &mut g, &mut ws)
            .unwrap();
        (l, g)
    };
    let (_, g) = loss_at(&model);
    let eps = 1e-2f32;
    for (p, (i, j)) in [(0usize, (100usize, 3usize)), (2, (5, 7)), (4, (1, 2))] {
        let mut plus = model.clone();
        plus.params_mut()[p][[i, j]] += eps;
        let mut minus = model.clone();
        minus.params_mut()[p][[i, j]] -= eps;
        let fd = (loss_at(&plus).0 - loss_at(&minus).0) / (2.0 * eps);
        assert!(
            (fd - g[p][[i, j]]).abs() <= 3e-3 * (1.0 + fd.abs()),
            "param {p} ({i},{j}): fd {fd} vs {}",
            g[p][[i, j]]
        );
    }
}

#[test]
fn fgsm_matches_a_hand_computation_on_a_linear_model_and_stays_in_the_box() {
    // Softmax regression: ∇ₓJ(x, y) = W (p − e_y), so the step is ε·sign(W (p − e_y)).
    let model = Network::new(Architecture::parse("FC10", 784).unwrap(), 3);
    let data = small();
    let x = data.images().row(0).to_owned();
    // The model's own label, so that the input is not already adversarial (an untrained
    // model gets most inputs wrong, and those are returned unchanged, unsearched).
    let y = model.predict(x.view().insert_axis(Axis(0))).unwrap()[0];
    assert_ne!(y, data.labels()[0], "this seed's model misclassifies row 0");
    let wrong = Fgsm::new(0.05)
        .unwrap()
        .attack(&model, x.view(), data.labels()[0], Target::Untargeted)
        .unwrap();
    assert!(wrong.already_adversarial && wrong.success && wrong.evaluations == 1);
    assert_eq!(wrong.adversarial, x);
    let p = model.probabilities(x.view().insert_axis(Axis(0))).unwrap();
    let w = model.weights(0).unwrap();
    let mut d = p.row(0).to_owned();
    d[y] -= 1.0;
    let g = w.dot(&d);
    let eps = 0.05f32;
    let out = Fgsm::new(eps as f64)
        .unwrap()
        .attack(&model, x.view(), y, Target::Untargeted)
        .unwrap();
    for i in 0..784 {
        let want = (x[i] + eps * g[i].signum() * (g[i] != 0.0) as u8 as f32).clamp(0.0, 1.0);
        assert!((out.adversarial[i] - want).abs() < 1e-6, "pixel {i}");
    }
    assert!(out.adversarial.iter().all(|v| (0.0..=1.0).contains(v)));
    // Searched: the smallest ε along the sign that succeeds, at most the maximum.
    let s = Fgsm::searched(0.5, 20)
        .unwrap()
        .attack(&model, x.view(), y, Target::Untargeted)
        .unwrap();
    // Every pixel moved by at most the largest ε tried, and a success really changes the label.
    assert!(s.perturbation.iter().all(|r| r.abs() <= 0.5 + 1e-6));
    if s.success {
        assert_ne!(s.adversarial_label, y);
    }
    assert!(matches!(
        Fgsm::new(0.0),
        Err(Error::InvalidParameter { .. })
    ));
    assert!(matches!(
        Fgsm::searched(0.1, 65),
        Err(Error::InvalidParameter { .. })
    ));
}

#[test]
fn fgsm_training_runs_and_is_deterministic() {
    let data = small();
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let mut model = net(6);
        let params = TrainParams {
            epochs: 8,
            learning_rate: 0.5,
            ..tiny_params(2)
        };
        let config = FgsmTrainParams::new(params, 0.1)
            .with_warmup_epochs(0)
            .check()
            .unwrap();
        let r = pool
            .install(|| train_with_fgsm(&mut model, &data, None, &config, |_| {}))
            .unwrap();
        (model, r.plain.train_error.unwrap())
    };
    let (a, ea) = run(1);
    let (b, eb) = run(2);
    assert_eq!(a, b);
    assert_eq!(ea, eb);
    // An untrained net errs on ~90% of the images.
    assert!(ea < 0.7, "FGSM training still learns: train error {ea}");
}
