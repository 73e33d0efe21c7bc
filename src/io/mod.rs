//! Files, at the bottom of the crate: every file the crate writes is written atomically
//! (a temporary sibling renamed over the target), every file it reads is opened only if it
//! is a regular file, and `.npz` archives are read without trusting their sizes.
//!
//! [`ModelFile`] is the public part: the named arrays and header of a saved model, which
//! [`crate::nn::Network`] and [`crate::nn::Autoencoder`] convert to and from. The rest serves
//! the crate's own readers and writers (IDX, models, images, plots, imports, the zoo's cache).
mod atomic;
mod npz;
mod regular;

pub(crate) use atomic::{temp_target, write_atomic};
pub(crate) use npz::read_named_arrays;
pub use npz::ModelFile;
pub(crate) use regular::open_regular;
