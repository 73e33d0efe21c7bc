//! Adversarial training: checked config, the pool's refresh, determinism under a seed, and
//! equality with plain training when no pool example enters the batches.

use blindspot::attack::{BoxLbfgs, GaussianNoise};
use blindspot::data::{Dataset, Mnist};
use blindspot::nn::{
    refresh_count, train, train_adversarial, AdversarialParams, AdversarialPool, Architecture, Mlp,
    PoolTarget, TrainParams, Trainable,
};
use blindspot::Error;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn small() -> Dataset {
    Mnist::load_default().unwrap().train.head(400).unwrap()
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

/// A cheap attack: one L-BFGS-B solve per c, no bisection, short solves.
fn quick_attack() -> BoxLbfgs {
    BoxLbfgs::new()
        .with_search_steps(0)
        .with_bracket_steps(2)
        .with_max_iters(15)
        .unwrap()
}

fn adv_params(seed: u64) -> AdversarialParams {
    AdversarialParams::new(tiny_params(seed))
        .with_pool_size(24)
        .with_refresh(5, 0.25)
        .with_batch_share(0.25)
        .with_warmup_epochs(1)
}

#[test]
fn config_rejects_each_bad_value() {
    let ok = adv_params(1);
    assert!(ok.clone().check().is_ok());
    let bad = [
        ok.clone().with_pool_size(0),
        ok.clone().with_refresh(0, 0.5),
        ok.clone().with_refresh(5, 0.0),
        ok.clone().with_refresh(5, 1.5),
        ok.clone().with_batch_share(1.0),
        ok.clone().with_batch_share(-0.1),
        ok.clone().with_batch_share(0.99), // 20 rows: no clean example left
        ok.clone().with_warmup_epochs(3),
        AdversarialParams::new(TrainParams {
            epochs: 0,
            ..tiny_params(1)
        }),
    ];
    for (i, p) in bad.into_iter().enumerate() {
        assert!(
            matches!(p.check(), Err(Error::InvalidParameter { .. })),
            "case {i} accepted"
        );
    }
    let cfg = ok.check().unwrap();
    assert_eq!(cfg.adversarial_per_batch(), 5);
    assert_eq!(cfg.refresh_count(), 6);
    assert_eq!(
        refresh_count(10, 0.01),
        1,
        "a refresh replaces at least one slot"
    );
    assert_eq!(refresh_count(10, 1.0), 10);
}

#[test]
fn pool_refresh_keeps_the_size_and_replaces_the_stated_fraction() {
    let data = small();
    let model = Mlp::new(Architecture::parse("FC10", 784).unwrap(), 1);
    let attack = GaussianNoise::new(0.2).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let (mut pool, st) =
        AdversarialPool::generate(&model, &attack, &data, 40, PoolTarget::Random, &mut rng)
            .unwrap();
    assert_eq!((pool.len(), st.generated, pool.refreshes()), (40, 40, 0));
    assert!(pool.born().iter().all(|&b| b == 0));
    for (fraction, expect) in [(0.25f32, 10usize), (0.5, 20), (0.01, 1), (1.0, 40)] {
        let before = pool.clone();
        let st = pool
            .refresh(
                &model,
                &attack,
                &data,
                fraction,
                PoolTarget::Random,
                &mut rng,
            )
            .unwrap();
        assert_eq!(pool.len(), 40, "size changed");
        assert_eq!(st.generated, expect);
        let r = pool.refreshes();
        let fresh: Vec<usize> = (0..40).filter(|&i| pool.born()[i] == r).collect();
        assert_eq!(fresh.len(), expect, "fraction {fraction}");
        for i in 0..40 {
            // Labels always belong to the source image; untouched slots are unchanged.
            assert_eq!(pool.labels()[i], data.labels()[pool.sources()[i]]);
            if pool.born()[i] != r {
                assert_eq!(pool.images().row(i), before.images().row(i));
                assert_eq!(pool.sources()[i], before.sources()[i]);
            }
        }
        assert!(pool.images().iter().all(|&v| (0.0..=1.0).contains(&v)));
    }
    assert!(matches!(
        pool.refresh(&model, &attack, &data, 0.0, PoolTarget::Random, &mut rng),
        Err(Error::InvalidParameter { .. })
    ));
    assert!(
        AdversarialPool::generate(&model, &attack, &data, 401, PoolTarget::Random, &mut rng)
            .is_err()
    );
}

#[test]
fn pool_of_box_lbfgs_examples_fools_the_model_it_was_made_for() {
    let data = small();
    let arch = Architecture::parse("FC10", 784).unwrap();
    let mut model = Mlp::new(arch, 1);
    let cfg = tiny_params(1).check().unwrap();
    train(&mut model, &data, None, &cfg, |_| {}).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let (pool, st) = AdversarialPool::generate(
        &model,
        &quick_attack(),
        &data,
        12,
        PoolTarget::Random,
        &mut rng,
    )
    .unwrap();
    assert!(st.success_rate >= 0.75, "success {}", st.success_rate);
    assert!(st.mean_distortion > 0.0 && st.mean_distortion < 0.3);
    let err = blindspot::attack::transfer_error(&model, pool.images(), pool.labels()).unwrap();
    assert!((err - st.success_rate).abs() < 1e-6);
}

fn run(seed: u64, threads: usize) -> (Vec<ndarray::Array2<f32>>, f32, usize) {
    let data = small();
    let arch = Architecture::parse("FC16-10", 784).unwrap();
    let mut model = Mlp::new(arch, seed);
    let cfg = adv_params(seed).check().unwrap();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    let report = pool
        .install(|| train_adversarial(&mut model, &data, None, &quick_attack(), &cfg, |_| {}))
        .unwrap();
    (
        model.params().into_iter().cloned().collect(),
        report.train_error,
        report.generated,
    )
}

#[test]
fn adversarial_training_is_deterministic_under_a_seed() {
    let a = run(4, 2);
    let b = run(4, 1);
    assert_eq!(a, b, "weights depend on the thread count or on chance");
    // 400 images in batches of 15 clean + 5 pool: 27 batches per adversarial epoch, a refresh
    // every 5 batches (5 per epoch) of 6 slots, two adversarial epochs, plus the initial 24.
    assert_eq!(a.2, 24 + 2 * 5 * 6);
    let c = run(5, 2);
    assert_ne!(a.0, c.0, "another seed gave the same weights");
}

#[test]
fn without_pool_examples_in_the_batches_it_is_plain_training() {
    let data = small();
    let arch = Architecture::parse("FC16-10", 784).unwrap();
    let mut plain = Mlp::new(arch.clone(), 2);
    train(
        &mut plain,
        &data,
        None,
        &tiny_params(2).check().unwrap(),
        |_| {},
    )
    .unwrap();
    let mut adv = Mlp::new(arch, 2);
    let cfg = adv_params(2).with_batch_share(0.0).check().unwrap();
    let attack = GaussianNoise::new(0.1).unwrap();
    let report = train_adversarial(&mut adv, &data, None, &attack, &cfg, |_| {}).unwrap();
    assert_eq!(plain.params(), adv.params());
    assert!(report.generated > 0, "the pool was still kept up to date");
}
