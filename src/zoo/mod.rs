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
// Two concerns, one file each: `recipes` says how every model is trained (the one table of
// zoo models, from which the public name lists are derived); `cache` keys, stores and loads
// the trained models. The hash and format number below are shared: a recipe's version and a
// cache file's name and key are both built from them.
mod cache;
mod recipes;

pub use cache::{Stage, Zoo, ZooEntry, ZOO_DIR_ENV};
pub use recipes::{
    paper_errors, recipe, recipe_for, train_params, Recipe, CONVNET, MODELS, TABLE1,
    TABLE1_AND_CONV,
};

/// Bumped whenever the meaning of a recipe or the cache layout changes in a way the recipe's
/// own fields do not capture, so that old cache files stop matching.
const ZOO_FORMAT: &str = "2";

/// 64-bit FNV-1a: tiny, and stable across platforms and Rust versions.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}
