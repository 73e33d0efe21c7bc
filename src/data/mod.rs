//! Datasets: the IDX file format, an in-memory labelled image [`Dataset`] with seeded
//! splitting and batching, and the [`Mnist`] loader.

pub mod dataset;
#[cfg(feature = "download")]
pub mod download;
pub mod idx;
pub mod mnist;

pub use dataset::{Batches, Dataset};
#[cfg(feature = "download")]
pub use download::{DownloadConfig, DownloadParams};
pub use idx::{parse_idx_bytes, read_idx, write_idx, Idx};
pub use mnist::Mnist;
