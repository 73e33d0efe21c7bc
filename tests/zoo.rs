//! The model zoo: names and recipes, cache hits, invalidation on a recipe or data change, and
//! corrupt or foreign cache files being retrained rather than used.

use blindspot::Check;
use std::path::PathBuf;

use blindspot::data::{Dataset, Mnist};
use blindspot::io::ModelFile;
use blindspot::nn::{Activation, AeParams, Architecture, Schedule, TrainParams};
use blindspot::zoo::{self, Recipe, Stage, Zoo, MODELS, TABLE1};
use blindspot::{Classifier, Error};
use ndarray::Array2;
use ndarray_rand::rand_distr::Uniform;
use ndarray_rand::RandomExt;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// A fresh cache directory per test (tests run in parallel within one process).
fn temp_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("blindspot-zoo-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// 4 classes of noisy 4×4 prototypes; `shift` changes the labels (same length, other data).
fn toy_dataset(n: usize, shift: usize) -> Dataset {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let protos = Array2::random_using((4, 16), Uniform::new(0.0f32, 1.0), &mut rng);
    let noise = Array2::random_using((n, 16), Uniform::new(0.0f32, 1.0), &mut rng);
    let labels: Vec<usize> = (0..n).map(|i| (i * 7 + 1 + shift) % 4).collect();
    let x = Array2::from_shape_fn((n, 16), |(i, j)| {
        (0.8 * protos[[labels[i], j]] + 0.2 * noise[[i, j]]).clamp(0.0, 1.0)
    });
    Dataset::new(x, labels, (4, 4), 4).unwrap()
}

fn tiny_sgd(epochs: usize) -> TrainParams {
    TrainParams {
        epochs,
        batch_size: 20,
        learning_rate: 0.5,
        momentum: 0.9,
        schedule: Schedule::Constant,
        seed: 0,
        ..TrainParams::default()
    }
}

fn tiny_fc(epochs: usize) -> Recipe {
    Recipe::Fc {
        arch: Architecture::new(16, vec![5], 4, Activation::Sigmoid, 1e-4).unwrap(),
        train: tiny_sgd(epochs).check().unwrap(),
    }
}

#[test]
fn every_zoo_name_has_a_recipe_and_unknown_names_are_typed_errors() {
    assert_eq!(&MODELS[..6], &TABLE1[..]);
    for name in MODELS {
        let r = zoo::recipe(name).unwrap();
        let arch = r.architecture(784, 10).unwrap();
        assert_eq!(arch.input(), 784);
        assert_eq!(arch.classes(), 10);
        assert_eq!(r.version().len(), 16);
    }
    for name in TABLE1 {
        assert!(zoo::paper_errors(name).is_some());
    }
    // FC models train with their family's SGD settings, AE400-10 with the autoencoder
    // recipe with λ = 1e-6.
    match zoo::recipe("FC100-100-10").unwrap() {
        Recipe::Fc { arch, train } => {
            assert_eq!(arch.hidden(), &[100, 100]);
            assert_eq!(arch.weight_decay(), 1e-5);
            assert_eq!(arch.activation(), Activation::Sigmoid);
            assert_eq!(train.params(), &zoo::train_params(&arch));
        }
        other => panic!("{other:?}"),
    }
    match zoo::recipe("AE400-10").unwrap() {
        Recipe::Ae(r) => {
            assert_eq!(r.code, 400);
            assert_eq!(r.weight_decay, 1e-6);
            assert!(r.finetune.is_some());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        zoo::recipe("FC10(1)")
            .unwrap()
            .architecture(784, 10)
            .unwrap()
            .weight_decay(),
        1.0
    );
    assert!(matches!(
        zoo::recipe("FC7-10"),
        Err(Error::ModelName { .. })
    ));
    assert!(matches!(
        zoo::recipe("AE10-10"),
        Err(Error::ModelName { .. })
    ));
    let data = toy_dataset(20, 0);
    let zoo = Zoo::in_dir(temp_dir("names"));
    assert!(matches!(
        zoo.model("VGG16", 1, &data, "toy"),
        Err(Error::ModelName { .. })
    ));
    assert!(matches!(
        zoo.model_with_recipe("x", &tiny_fc(1), 1, &data, " ", |_, _| {}),
        Err(Error::InvalidParameter { .. })
    ));
}

/// Every zoo model's recipe version, as written into the cache files of the trained models:
/// a refactor of how recipes are stored must leave them unchanged, or every cached model
/// would be retrained. Change a value here only with a deliberate change of a recipe.
#[test]
fn zoo_recipe_versions_are_pinned() {
    let pinned = [
        ("FC10(1e-4)", "fa27b1d51e974e36", 1e-4),
        ("FC10(1e-2)", "28af4dca795e9c1c", 1e-2),
        ("FC10(1)", "a21313f1841140df", 1.0),
        ("FC100-100-10", "7bee2dcafa1b5fbd", 1e-5),
        ("FC200-200-10", "c115d41accadf8ef", 1e-5),
        ("AE400-10", "7b25dc1a10e4e0f4", 1e-6),
        ("FC123-456-10", "5df7687184062724", 1e-5),
        ("CONV16-32-FC128-10", "a0a8a05da2d427d9", 1e-5),
    ];
    assert_eq!(pinned.map(|p| p.0), MODELS);
    for (name, version, lambda) in pinned {
        let r = zoo::recipe(name).unwrap();
        assert_eq!(r.version(), version, "{name}: {}", r.describe());
        assert_eq!(r.weight_decay(), lambda, "{name}");
        // The explicit λ agrees with the one the paper's name writes (or the default).
        if name != "AE400-10" {
            assert_eq!(
                Architecture::parse(name, 784).unwrap().weight_decay(),
                lambda
            );
        }
    }
}

/// The cache file name of every zoo model trained from seed 1 on the full MNIST training set
/// (tag `"mnist-train"`, 60000 images), as the examples ask for them: a refactor of the zoo
/// must leave them unchanged, or every cached model would be orphaned and retrained.
#[test]
fn zoo_cache_file_names_are_pinned() {
    let pinned = [
        "FC10_1e-4__s1_mnist-train_n60000_8d3ecb87.npz",
        "FC10_1e-2__s1_mnist-train_n60000_aa323c69.npz",
        "FC10_1__s1_mnist-train_n60000_f833bbad.npz",
        "FC100-100-10_s1_mnist-train_n60000_e50a7019.npz",
        "FC200-200-10_s1_mnist-train_n60000_b91856c9.npz",
        "AE400-10_s1_mnist-train_n60000_581796ff.npz",
        "FC123-456-10_s1_mnist-train_n60000_1418cf50.npz",
        "CONV16-32-FC128-10_s1_mnist-train_n60000_e5f43ca1.npz",
    ];
    let dir = PathBuf::from("cache");
    let zoo = Zoo::in_dir(&dir);
    for (name, file) in MODELS.into_iter().zip(pinned) {
        assert_eq!(
            zoo.cache_path(name, 1, "mnist-train", 60_000),
            dir.join(file),
            "{name}"
        );
    }
}

#[test]
fn recipe_version_tracks_every_hyperparameter_but_not_the_seed() {
    let base = tiny_fc(3);
    let with_train = |p: TrainParams| match &base {
        Recipe::Fc { arch, .. } => Recipe::Fc {
            arch: arch.clone(),
            train: p.check().unwrap(),
        },
        other => panic!("{other:?}"),
    };
    let other_seed = with_train(TrainParams {
        seed: 42,
        eval_every_epoch: true,
        ..tiny_sgd(3)
    });
    assert_eq!(base.version(), other_seed.version());
    assert_ne!(base.version(), tiny_fc(4).version());
    let lr = with_train(TrainParams {
        learning_rate: 0.25,
        ..tiny_sgd(3)
    });
    assert_ne!(base.version(), lr.version());
    let ae = |finetune| {
        Recipe::Ae(
            AeParams {
                code: 9,
                ae_weight_decay: 1e-6,
                weight_decay: 1e-6,
                pretrain: tiny_sgd(3),
                softmax: tiny_sgd(3),
                finetune,
            }
            .check()
            .unwrap(),
        )
    };
    assert_ne!(ae(Some(tiny_sgd(2))).version(), ae(None).version());
}

#[test]
fn second_call_loads_the_same_weights_from_the_cache() {
    let dir = temp_dir("hit");
    let zoo = Zoo::in_dir(&dir);
    let data = toy_dataset(100, 0);
    let mut events = 0;
    let first = zoo
        .model_with_recipe("tiny", &tiny_fc(3), 7, &data, "toy", |s, _| {
            assert_eq!(s, Stage::Fc);
            events += 1;
        })
        .unwrap();
    assert!(!first.from_cache);
    assert!(events > 0);
    assert_eq!(first.cache_miss.as_deref(), Some("no cache file"));
    assert!(first.path.starts_with(&dir) && first.path.exists());
    assert!(first.train_error.is_some());
    let second = zoo
        .model_with_recipe("tiny", &tiny_fc(3), 7, &data, "toy", |_, _| {
            panic!("a cache hit must not train")
        })
        .unwrap();
    assert!(second.from_cache);
    assert_eq!(second.cache_miss, None);
    assert_eq!(second.model, first.model);
    assert_eq!(second.key, first.key);
    assert_eq!(second.train_error, first.train_error);
    assert!((second.train_seconds - first.train_seconds).abs() < 1e-9);
    // The key is in the file's header.
    let file = ModelFile::load(&first.path).unwrap();
    assert_eq!(file.meta["zoo_key"], first.key);
    // Another seed is another model in another file; the same seed retrained gives the
    // same weights (training is reproducible, so a cache hit changes nothing).
    let other = zoo
        .model_with_recipe("tiny", &tiny_fc(3), 8, &data, "toy", |_, _| {})
        .unwrap();
    assert!(!other.from_cache);
    assert_ne!(other.path, first.path);
    assert_ne!(other.model, first.model);
    let fresh = Zoo::in_dir(temp_dir("hit-fresh"))
        .model_with_recipe("tiny", &tiny_fc(3), 7, &data, "toy", |_, _| {})
        .unwrap();
    assert_eq!(fresh.model, first.model);
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::remove_dir_all(fresh.path.parent().unwrap()).unwrap();
}

#[test]
fn recipe_or_data_change_invalidates_the_cache() {
    let dir = temp_dir("stale");
    let zoo = Zoo::in_dir(&dir);
    let data = toy_dataset(100, 0);
    let old = zoo
        .model_with_recipe("tiny", &tiny_fc(2), 1, &data, "toy", |_, _| {})
        .unwrap();
    let new = zoo
        .model_with_recipe("tiny", &tiny_fc(3), 1, &data, "toy", |_, _| {})
        .unwrap();
    assert!(!new.from_cache);
    assert!(
        new.cache_miss.as_deref().unwrap().starts_with("stale"),
        "{:?}",
        new.cache_miss
    );
    // Same file, overwritten with the new recipe's model.
    assert_eq!(new.path, old.path);
    assert_ne!(new.model, old.model);
    let again = zoo
        .model_with_recipe("tiny", &tiny_fc(3), 1, &data, "toy", |_, _| {})
        .unwrap();
    assert!(again.from_cache);
    assert_eq!(again.model, new.model);
    // Different data under the same tag and length: detected by the labels' fingerprint.
    let other_data = toy_dataset(100, 1);
    let retrained = zoo
        .model_with_recipe("tiny", &tiny_fc(3), 1, &other_data, "toy", |_, _| {})
        .unwrap();
    assert!(!retrained.from_cache);
    assert!(retrained.cache_miss.unwrap().starts_with("stale"));
    // Only the one file: no temporaries left behind, stale files replaced, not piled up.
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn corrupt_or_foreign_cache_files_are_retrained_not_used() {
    let dir = temp_dir("corrupt");
    let zoo = Zoo::in_dir(&dir);
    let data = toy_dataset(100, 0);
    let good = zoo
        .model_with_recipe("tiny", &tiny_fc(2), 3, &data, "toy", |_, _| {})
        .unwrap();

    // Garbage bytes.
    std::fs::write(&good.path, b"definitely not an npz archive").unwrap();
    let e = zoo
        .model_with_recipe("tiny", &tiny_fc(2), 3, &data, "toy", |_, _| {})
        .unwrap();
    assert!(!e.from_cache);
    assert!(e.cache_miss.unwrap().starts_with("unreadable"));
    assert_eq!(e.model, good.model);

    // Truncated archive.
    let bytes = std::fs::read(&good.path).unwrap();
    std::fs::write(&good.path, &bytes[..bytes.len() / 2]).unwrap();
    let e = zoo
        .model_with_recipe("tiny", &tiny_fc(2), 3, &data, "toy", |_, _| {})
        .unwrap();
    assert!(!e.from_cache);
    assert_eq!(e.model, good.model);

    // A valid model file with another key and altered weights: must not be used.
    let mut file = ModelFile::load(&good.path).unwrap();
    file.meta.insert("zoo_key".into(), "something else".into());
    file.arrays[0].1.fill(0.0);
    file.save(&good.path).unwrap();
    let e = zoo
        .model_with_recipe("tiny", &tiny_fc(2), 3, &data, "toy", |_, _| {})
        .unwrap();
    assert!(!e.from_cache);
    assert!(e.cache_miss.unwrap().starts_with("stale"));
    assert_eq!(e.model, good.model);

    // The right key but the wrong weights' shapes (e.g. a hand-edited file): retrained.
    let mut file = ModelFile::load(&good.path).unwrap();
    file.arrays[0].1 = Array2::zeros((3, 3));
    file.save(&good.path).unwrap();
    let e = zoo
        .model_with_recipe("tiny", &tiny_fc(2), 3, &data, "toy", |_, _| {})
        .unwrap();
    assert!(!e.from_cache);
    assert_eq!(e.model, good.model);

    // No header key at all.
    let mut file = ModelFile::load(&good.path).unwrap();
    file.meta.remove("zoo_key");
    file.save(&good.path).unwrap();
    let e = zoo
        .model_with_recipe("tiny", &tiny_fc(2), 3, &data, "toy", |_, _| {})
        .unwrap();
    assert!(!e.from_cache);

    // After all that the cache is healthy again.
    let e = zoo
        .model_with_recipe("tiny", &tiny_fc(2), 3, &data, "toy", |_, _| {})
        .unwrap();
    assert!(e.from_cache);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn autoencoder_recipe_is_cached_too() {
    let dir = temp_dir("ae");
    let zoo = Zoo::in_dir(&dir);
    let data = toy_dataset(100, 0);
    let sgd = |epochs, lr| TrainParams {
        epochs,
        batch_size: 20,
        learning_rate: lr,
        momentum: 0.9,
        schedule: Schedule::Constant,
        seed: 0,
        ..TrainParams::default()
    };
    let recipe = Recipe::Ae(
        AeParams {
            code: 9,
            ae_weight_decay: 1e-6,
            weight_decay: 1e-6,
            pretrain: sgd(3, 0.05),
            softmax: sgd(3, 0.5),
            finetune: Some(sgd(2, 0.1)),
        }
        .check()
        .unwrap(),
    );
    let mut stages = Vec::new();
    let first = zoo
        .model_with_recipe("tiny-ae", &recipe, 2, &data, "toy", |s, _| {
            if stages.last() != Some(&s) {
                stages.push(s);
            }
        })
        .unwrap();
    assert_eq!(stages.len(), 3);
    assert_eq!(first.model.arch().hidden(), &[9]);
    let second = zoo
        .model_with_recipe("tiny-ae", &recipe, 2, &data, "toy", |_, _| {})
        .unwrap();
    assert!(second.from_cache);
    assert_eq!(second.model, first.model);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn paper_model_by_name_on_a_small_mnist_subset() {
    let mnist = Mnist::load_default().unwrap();
    let data = mnist.train.head(300).unwrap();
    let dir = temp_dir("mnist");
    let zoo = Zoo::in_dir(&dir);
    assert_eq!(zoo.dir(), dir.as_path());
    let a = zoo.model("FC10(1e-2)", 1, &data, "mnist-head300").unwrap();
    assert!(!a.from_cache);
    assert_eq!(a.name, "FC10(1e-2)");
    let b = zoo
        .model(" FC10(1e-2) ", 1, &data, "mnist-head300")
        .unwrap();
    assert!(b.from_cache);
    assert_eq!(a.model, b.model);
    // A linear model on 300 examples is still far better than chance on the test set.
    let err = blindspot::nn::error_rate(&b.model, &mnist.test).unwrap();
    assert!(err < 0.3, "test error {err}");
    assert_eq!(b.model.input_dim(), 784);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn stale_temporaries_are_removed_when_the_zoo_writes_and_fresh_ones_kept() {
    let dir = temp_dir("stale");
    std::fs::create_dir_all(&dir).unwrap();
    let zoo = Zoo::in_dir(&dir);
    let data = toy_dataset(40, 0);
    let target = zoo.cache_path("tiny", 7, "toy", data.len());
    let name = target.file_name().unwrap().to_str().unwrap().to_string();
    // Left by a crashed save an hour ago (both naming forms), and one being written now.
    let stale = [
        dir.join(format!(".{name}.999.3.0.tmp")),
        dir.join(format!("{name}.tmp999")),
    ];
    let fresh = dir.join(format!(".{name}.998.2.5.tmp"));
    let unrelated = dir.join("notes.tmp");
    let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    for p in stale.iter().chain([&fresh, &unrelated]) {
        let f = std::fs::File::create(p).unwrap();
        if p != &fresh {
            f.set_modified(hour_ago).unwrap();
        }
    }
    let entry = zoo
        .model_with_recipe("tiny", &tiny_fc(1), 7, &data, "toy", |_, _| {})
        .unwrap();
    assert!(!entry.from_cache);
    for p in &stale {
        assert!(!p.exists(), "{} not removed", p.display());
    }
    assert!(fresh.exists() && unrelated.exists() && target.exists());
    // A cache hit ignores temporaries.
    assert!(
        zoo.model_with_recipe("tiny", &tiny_fc(1), 7, &data, "toy", |_, _| {})
            .unwrap()
            .from_cache
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn default_cache_dir_is_never_the_crate_source() {
    // The only test in this binary that reads these variables.
    let saved = (
        std::env::var_os("BLINDSPOT_ZOO"),
        std::env::var_os("XDG_CACHE_HOME"),
    );
    std::env::remove_var("BLINDSPOT_ZOO");
    std::env::set_var("XDG_CACHE_HOME", "/var/cache-test");
    assert_eq!(
        Zoo::default_dir(),
        PathBuf::from("/var/cache-test/blindspot/zoo")
    );
    std::env::set_var("BLINDSPOT_ZOO", "/elsewhere");
    assert_eq!(Zoo::default_dir(), PathBuf::from("/elsewhere"));
    std::env::remove_var("BLINDSPOT_ZOO");
    std::env::remove_var("XDG_CACHE_HOME");
    let dir = Zoo::default_dir();
    assert!(
        !dir.starts_with(env!("CARGO_MANIFEST_DIR")),
        "{}",
        dir.display()
    );
    for (k, v) in [("BLINDSPOT_ZOO", saved.0), ("XDG_CACHE_HOME", saved.1)] {
        match v {
            Some(v) => std::env::set_var(k, v),
            None => std::env::remove_var(k),
        }
    }
}
