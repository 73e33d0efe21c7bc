//! The on-disk cache of trained zoo models: [`Zoo`] (a cache directory), the cache files'
//! names and keys, and loading a cached model or training and saving it.

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::recipes::{recipe_for, Recipe};
use super::{fnv1a, ZOO_FORMAT};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::io::ModelFile;
use crate::nn::{train, train_ae_classifier, AeStage, Architecture, Network, Progress};

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
    pub fn in_dir(dir: impl Into<PathBuf>) -> Self {
        Zoo { dir: dir.into() }
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
    /// cache if a valid file is there, else trained with the model's [`recipe`](super::recipe)
    /// and cached.
    ///
    /// # Errors
    ///
    /// [`Error::ModelName`] for a name not in [`MODELS`](super::MODELS); training errors;
    /// [`Error::Io`] or [`Error::ModelFile`] if the trained model cannot be saved. A bad cache
    /// file is never an error: it is retrained.
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
