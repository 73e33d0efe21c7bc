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

    /// The directory [`Mnist::load_default`] reads: the `BLINDSPOT_MNIST` environment
    /// variable if set, else the `data/mnist` directory shipped in this crate's source tree.
    pub fn default_dir() -> PathBuf {
        match std::env::var_os(MNIST_DIR_ENV) {
            Some(dir) if !dir.is_empty() => PathBuf::from(dir),
            _ => PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist")),
        }
    }

    /// Loads MNIST from [`Mnist::default_dir`].
    ///
    /// # Errors
    ///
    /// As [`Mnist::load`].
    pub fn load_default() -> Result<Mnist> {
        Mnist::load(Mnist::default_dir())
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
