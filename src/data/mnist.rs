//! The MNIST handwritten digits, loaded from the four original IDX files.

use std::path::{Path, PathBuf};

use ndarray::Array2;

use super::dataset::Dataset;
use super::idx::{read_idx, Idx};
use crate::error::{Error, Result};

/// Number of MNIST classes (the digits 0 to 9).
const NUM_CLASSES: usize = 10;

/// Environment variable that overrides [`Mnist::default_dir`].
pub const MNIST_DIR_ENV: &str = "BLINDSPOT_MNIST";

/// The MNIST training (60,000) and test (10,000) sets, 28 × 28 pixels scaled to `[0, 1]`.
#[derive(Debug, Clone)]
pub struct Mnist {
    /// The 60,000 training examples.
    pub train: Dataset,
    /// The 10,000 test examples.
    pub test: Dataset,
}

impl Mnist {
    /// Loads MNIST from `dir`, which must hold `train-images-idx3-ubyte`,
    /// `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte` and `t10k-labels-idx1-ubyte`,
    /// each either gzipped (with a `.gz` suffix, preferred) or raw. Pixels are divided by
    /// 255.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] naming the file if one is missing or unreadable; [`Error::DataFile`]
    /// naming the file if one is malformed (see [`read_idx`]), if images are not 3-d or
    /// labels not 1-d, if the numbers of images and labels differ (naming both files), if a
    /// label is above 9 (naming its index), or if the test images have a different size
    /// than the training images.
    ///
    /// # Example
    ///
    /// ```no_run
    /// use blindspot::data::Mnist;
    /// let mnist = Mnist::load("data/mnist")?;
    /// assert_eq!(mnist.train.len(), 60_000);
    /// # Ok::<(), blindspot::Error>(())
    /// ```
    pub fn load(dir: impl AsRef<Path>) -> Result<Mnist> {
        let dir = dir.as_ref();
        // Loading is dominated by gzip inflation, which is sequential within a file, so the
        // two splits are decoded on two threads.
        let (train, test) = std::thread::scope(|s| {
            let train = s.spawn(|| load_split(dir, "train"));
            let test = load_split(dir, "t10k");
            // A panic in the loader would be a bug; propagate it rather than hide it.
            let train = train
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p));
            (train, test)
        });
        let (train, test) = (train?, test?);
        if test.image_shape() != train.image_shape() {
            let (tr, tc) = train.image_shape();
            let (er, ec) = test.image_shape();
            return Err(Error::DataFile {
                path: find_file(dir, "t10k-images-idx3-ubyte")?,
                problem: format!("test images are {er} × {ec} but training images are {tr} × {tc}"),
            });
        }
        Ok(Mnist { train, test })
    }

    /// The directory [`Mnist::load_default`] reads, chosen at run time:
    ///
    /// 1. the `BLINDSPOT_MNIST` environment variable, if set and non-empty;
    /// 2. else `data/mnist` under the current directory, if it exists (the project's own
    ///    copy when run by cargo from the project's root);
    /// 3. else the `data/mnist` folder of this crate's source tree, if it exists: it does in
    ///    a clone of the repository, but not in the published package (whose `exclude` keeps
    ///    the data out), so a dependent never reads from the registry's source folder;
    /// 4. else `data/mnist` under the current directory (which does not exist: loading then
    ///    fails with an error saying where it looked and how to point elsewhere).
    pub fn default_dir() -> PathBuf {
        if let Some(dir) = std::env::var_os(MNIST_DIR_ENV).filter(|d| !d.is_empty()) {
            return PathBuf::from(dir);
        }
        let local = PathBuf::from("data").join("mnist");
        if local.is_dir() {
            return local;
        }
        let source = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist"));
        if source.is_dir() {
            return source;
        }
        local
    }

    /// Loads MNIST from [`Mnist::default_dir`].
    ///
    /// # Errors
    ///
    /// As [`Mnist::load`]; a missing file is an [`Error::DataFile`] that names the directory
    /// looked in (and, for a relative one, the current directory), says how it was chosen,
    /// and says to set `BLINDSPOT_MNIST` or call [`Mnist::load`] to point elsewhere.
    pub fn load_default() -> Result<Mnist> {
        let dir = Mnist::default_dir();
        Mnist::load(&dir).map_err(|e| match e {
            Error::Io { path, source } if source.kind() == std::io::ErrorKind::NotFound => {
                let shown = match std::env::current_dir() {
                    Ok(cwd) if dir.is_relative() => {
                        format!("{} (in {})", dir.display(), cwd.display())
                    }
                    _ => dir.display().to_string(),
                };
                let how = if std::env::var_os(MNIST_DIR_ENV).is_some_and(|d| !d.is_empty()) {
                    format!("{MNIST_DIR_ENV} is set to this directory")
                } else {
                    format!(
                        "{MNIST_DIR_ENV} is not set, and neither ./data/mnist nor the crate's \
                         source copy exists"
                    )
                };
                Error::DataFile {
                    path,
                    problem: format!(
                        "MNIST not found: looked in {shown}; {how}. Put the four IDX files \
                         (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, \
                         t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz) there, set \
                         {MNIST_DIR_ENV} to the directory holding them, or call Mnist::load \
                         with it ({source})"
                    ),
                }
            }
            other => other,
        })
    }
}

/// The path of `dir/name.gz` if it exists, else of `dir/name` if that exists.
fn find_file(dir: &Path, name: &str) -> Result<PathBuf> {
    let gz = dir.join(format!("{name}.gz"));
    if gz.is_file() {
        return Ok(gz);
    }
    let raw = dir.join(name);
    if raw.is_file() {
        return Ok(raw);
    }
    Err(Error::io(
        raw,
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("MNIST file not found (looked for {name}.gz and {name})"),
        ),
    ))
}

/// Loads one of the two splits, `"train"` or `"t10k"`.
fn load_split(dir: &Path, prefix: &str) -> Result<Dataset> {
    let images_path = find_file(dir, &format!("{prefix}-images-idx3-ubyte"))?;
    let labels_path = find_file(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
    let images = read_idx(&images_path)?;
    let labels = read_idx(&labels_path)?;

    let Idx { dims, data } = images;
    let &[n, rows, cols] = dims.as_slice() else {
        return Err(Error::DataFile {
            path: images_path,
            problem: format!(
                "expected 3 dimensions (images × rows × cols), got {} ({dims:?})",
                dims.len()
            ),
        });
    };
    if n == 0 || rows == 0 || cols == 0 {
        return Err(Error::DataFile {
            path: images_path,
            problem: format!("no pixels: dimensions {n} × {rows} × {cols}"),
        });
    }
    let &[n_labels] = labels.dims.as_slice() else {
        return Err(Error::DataFile {
            path: labels_path,
            problem: format!(
                "expected 1 dimension (labels), got {} ({:?})",
                labels.dims.len(),
                labels.dims
            ),
        });
    };
    if n_labels != n {
        return Err(Error::DataFile {
            path: images_path.clone(),
            problem: format!(
                "holds {n} images but {} holds {n_labels} labels",
                labels_path.display()
            ),
        });
    }
    if let Some((i, &l)) = labels
        .data
        .iter()
        .enumerate()
        .find(|&(_, &l)| l as usize >= NUM_CLASSES)
    {
        return Err(Error::DataFile {
            path: labels_path,
            problem: format!("label {l} at index {i} is not a digit 0 to 9"),
        });
    }

    // A lookup table makes the conversion one load per pixel and gives exactly 0.0 and 1.0
    // at the ends, which the [0, 1] invariant relies on.
    let lut: [f32; 256] = std::array::from_fn(|b| b as f32 / 255.0);
    let pixels: Vec<f32> = data.iter().map(|&b| lut[b as usize]).collect();
    drop(data);
    let images = Array2::from_shape_vec((n, rows * cols), pixels).map_err(|e| Error::DataFile {
        path: images_path.clone(),
        problem: format!("cannot shape pixels: {e}"),
    })?;
    let labels: Vec<usize> = labels.data.iter().map(|&l| l as usize).collect();
    Dataset::new(images, labels, (rows, cols), NUM_CLASSES)
}
