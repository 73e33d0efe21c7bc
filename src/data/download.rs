//! Fetching MNIST for a program that has no copy (cargo feature `download`): the four
//! original IDX files, gzipped, from a list of mirrors, each checked against its published
//! SHA-256 before it is written, atomically, into the directory [`Mnist::load`] reads.
//!
//! The digest checked is that of the file's *content* (the decompressed IDX bytes), so a
//! mirror serving the original `.gz` files and one serving the same data gzipped again (as
//! this repository's `data/mnist` does: same content, other gzip headers) are both accepted,
//! and nothing else is. The content digests are the published ones, and the original `.gz`
//! files' published digests are kept beside them in [`MNIST_FILES`] for reference.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use flate2::read::GzDecoder;
use sha2::{Digest, Sha256};

use super::mnist::Mnist;
use crate::error::{check_count, check_positive, Error, Result};
use crate::io::write_atomic;
use crate::params::{Check, Checked};

/// One of the four MNIST files: its name and what it must hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MnistFile {
    /// The file name on the mirrors and on disk, e.g. `train-images-idx3-ubyte.gz`.
    pub name: &'static str,
    /// Size of the decompressed IDX content in bytes.
    pub content_len: u64,
    /// Published SHA-256 of the decompressed IDX content, in hex: what is checked.
    pub content_sha256: &'static str,
    /// Published SHA-256 of the original `.gz` file as the mirrors serve it, in hex (for
    /// reference: a re-gzipped copy of the same content has another).
    pub gz_sha256: &'static str,
}

/// The four files, with their published digests. The content digests were computed from
/// this repository's `data/mnist` files and agree with the published ones (and their MD5s
/// with the MD5s published for the original files, see `data/mnist/README.md`).
pub const MNIST_FILES: [MnistFile; 4] = [
    MnistFile {
        name: "train-images-idx3-ubyte.gz",
        content_len: 47_040_016,
        content_sha256: "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        gz_sha256: "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    },
    MnistFile {
        name: "train-labels-idx1-ubyte.gz",
        content_len: 60_008,
        content_sha256: "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        gz_sha256: "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    },
    MnistFile {
        name: "t10k-images-idx3-ubyte.gz",
        content_len: 7_840_016,
        content_sha256: "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        gz_sha256: "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    },
    MnistFile {
        name: "t10k-labels-idx1-ubyte.gz",
        content_len: 10_008,
        content_sha256: "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        gz_sha256: "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    },
];

/// The mirrors tried by default, in order: the copies PyTorch's and TensorFlow's dataset
/// loaders use (the original site has required a login at times).
pub const DEFAULT_MIRRORS: [&str; 2] = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
];

/// Most mirrors a download tries.
const MAX_MIRRORS: usize = 64;

/// Download settings as given; [`DownloadParams::check`](Check::check) validates them.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct DownloadParams {
    /// Base URLs tried in order for each file (the file name is appended), `http://` or
    /// `https://`. Default [`DEFAULT_MIRRORS`].
    pub mirrors: Vec<String>,
    /// Seconds one request may take in all (connecting, waiting, reading) before the mirror
    /// is given up. Default 300.
    pub timeout_secs: f64,
}

impl Default for DownloadParams {
    fn default() -> Self {
        DownloadParams {
            mirrors: DEFAULT_MIRRORS.iter().map(|m| m.to_string()).collect(),
            timeout_secs: 300.0,
        }
    }
}

impl DownloadParams {
    /// Sets the mirrors, tried in order.
    pub fn with_mirrors<S: Into<String>>(mut self, mirrors: impl IntoIterator<Item = S>) -> Self {
        self.mirrors = mirrors.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the timeout of one request, in seconds.
    pub fn with_timeout_secs(mut self, secs: f64) -> Self {
        self.timeout_secs = secs;
        self
    }
}

impl Check for DownloadParams {
    type Checked = DownloadConfig;

    /// Validates the settings.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] named `mirrors` for no mirror, more than 64, or one that
    /// is not an `http://` or `https://` URL; named `timeout_secs` for a timeout that is not
    /// finite and > 0 or is above a day.
    fn check(self) -> Result<DownloadConfig> {
        check_count("mirrors", self.mirrors.len(), MAX_MIRRORS)?;
        if let Some(m) = self
            .mirrors
            .iter()
            .find(|m| !(m.starts_with("http://") || m.starts_with("https://")))
        {
            return Err(Error::param(
                "mirrors",
                format!("{m:?} is not an http:// or https:// URL"),
            ));
        }
        check_positive("timeout_secs", self.timeout_secs)?;
        if self.timeout_secs > 86_400.0 {
            return Err(Error::param(
                "timeout_secs",
                format!("must be at most a day (86400), got {}", self.timeout_secs),
            ));
        }
        Ok(Checked::assume_valid(self))
    }
}

/// Checked [`DownloadParams`] (from [`DownloadParams::check`](Check::check)).
pub type DownloadConfig = Checked<DownloadParams>;

impl Default for Checked<DownloadParams> {
    /// The default settings, which are valid (a test checks it).
    fn default() -> Self {
        Checked::assume_valid(DownloadParams::default())
    }
}

impl Mnist {
    /// Downloads the four MNIST files into `dir` (created if missing) from the default
    /// mirrors, skipping any already there with the right content, then loads them.
    ///
    /// ```no_run
    /// # fn main() -> blindspot::Result<()> {
    /// let mnist = blindspot::data::Mnist::download("data/mnist")?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Mnist::download_with`].
    pub fn download(dir: impl AsRef<Path>) -> Result<Mnist> {
        Mnist::download_with(dir, &DownloadConfig::default())
    }

    /// [`Mnist::download`] from the mirrors and with the timeout of `config`.
    ///
    /// # Errors
    ///
    /// [`Error::Download`] naming the file, the URL and what went wrong (an HTTP error
    /// status, a failed or timed-out connection, a body cut short, bytes that are not gzip,
    /// content of the wrong size or SHA-256) when no mirror gave a good copy of a file;
    /// [`Error::Io`] if `dir` or a file in it cannot be written; as [`Mnist::load`] after.
    pub fn download_with(dir: impl AsRef<Path>, config: &DownloadConfig) -> Result<Mnist> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let agent = agent(config.params().timeout_secs);
        for file in &MNIST_FILES {
            let path = dir.join(file.name);
            if std::fs::read(&path).is_ok_and(|bytes| verify(file, &bytes).is_ok()) {
                continue;
            }
            let bytes = fetch(&agent, file, &config.params().mirrors)?;
            write_atomic(&path, |w| std::io::Write::write_all(w, &bytes))?;
        }
        Mnist::load(dir)
    }

    /// Loads MNIST from `dir` if it holds the four files, else downloads them there first
    /// (from the default mirrors) and loads them.
    ///
    /// # Errors
    ///
    /// As [`Mnist::load`] for files that are there but malformed; as [`Mnist::download`].
    pub fn load_or_download(dir: impl AsRef<Path>) -> Result<Mnist> {
        let dir = dir.as_ref();
        match Mnist::load(dir) {
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                Mnist::download(dir)
            }
            other => other,
        }
    }
}

/// A blocking client whose every request ends within `timeout_secs`, and which hands back
/// error statuses as responses so that their code can be reported.
fn agent(timeout_secs: f64) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs_f64(timeout_secs)))
        .http_status_as_error(false)
        .build()
        .into()
}

/// The bytes of `file` from the first mirror that gives a copy with the right content.
fn fetch(agent: &ureq::Agent, file: &MnistFile, mirrors: &[String]) -> Result<Vec<u8>> {
    let mut failures = Vec::new();
    for mirror in mirrors {
        let url = format!("{}{}", with_slash(mirror), file.name);
        match get(agent, &url, file).and_then(|bytes| verify(file, &bytes).map(|()| bytes)) {
            Ok(bytes) => return Ok(bytes),
            Err(problem) => failures.push((url, problem)),
        }
    }
    // `check` allows no empty mirror list, so there is a last failure.
    let (url, mut problem) = failures.pop().unwrap_or_default();
    if !failures.is_empty() {
        let others: Vec<String> = failures.iter().map(|(u, p)| format!("{u}: {p}")).collect();
        problem = format!("{problem} (and before: {})", others.join("; "));
    }
    Err(Error::Download {
        file: file.name.to_string(),
        url,
        problem,
    })
}

fn with_slash(mirror: &str) -> String {
    if mirror.ends_with('/') {
        mirror.to_string()
    } else {
        format!("{mirror}/")
    }
}

/// One GET of `url`, its body read in full (a gzip of MNIST is smaller than its content, so
/// a body longer than the content is refused before it is read whole).
fn get(agent: &ureq::Agent, url: &str, file: &MnistFile) -> std::result::Result<Vec<u8>, String> {
    let mut response = agent.get(url).call().map_err(describe)?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("server answered HTTP {status}"));
    }
    response
        .body_mut()
        .with_config()
        .limit(file.content_len)
        .read_to_vec()
        .map_err(describe)
}

fn describe(e: ureq::Error) -> String {
    match e {
        ureq::Error::Timeout(what) => format!("timed out ({what})"),
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            format!("body cut short: {io}")
        }
        other => other.to_string(),
    }
}

/// `Ok` if `bytes` is a gzip whose content has `file`'s size and SHA-256.
fn verify(file: &MnistFile, bytes: &[u8]) -> std::result::Result<(), String> {
    let mut content = Vec::new();
    // One byte past the size tells "too long" from "right", without inflating a bomb.
    GzDecoder::new(bytes)
        .take(file.content_len + 1)
        .read_to_end(&mut content)
        .map_err(|e| format!("not a whole gzip file ({e})"))?;
    if content.len() as u64 != file.content_len {
        return Err(format!(
            "content is {}{} bytes, expected {}",
            content.len(),
            if content.len() as u64 > file.content_len {
                "+"
            } else {
                ""
            },
            file.content_len
        ));
    }
    let digest = hex(&Sha256::digest(&content));
    if digest != file.content_sha256 {
        return Err(format!(
            "SHA-256 of the content is {digest}, expected the published {}",
            file.content_sha256
        ));
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
