//! An in-memory labelled image dataset.

use std::fmt;

use ndarray::{s, Array2, ArrayView1, ArrayView2, Axis};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::error::{check_nonzero, Error, Result};

/// Labelled grayscale images, one flattened image per row, pixel values in `[0, 1]`.
///
/// The invariants (matching lengths, labels below `num_classes`, finite pixels in `[0, 1]`,
/// at least one example) are checked once in [`Dataset::new`], so code downstream never
/// re-validates.
#[derive(Clone)]
pub struct Dataset {
    images: Array2<f32>,
    labels: Vec<usize>,
    image_shape: (usize, usize),
    num_classes: usize,
}

impl fmt::Debug for Dataset {
    // The derived impl would print tens of millions of pixels.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dataset")
            .field("len", &self.len())
            .field("image_shape", &self.image_shape)
            .field("num_classes", &self.num_classes)
            .finish_non_exhaustive()
    }
}

impl Dataset {
    /// Builds a dataset from `n × d` images with `d = rows * cols`, `n` labels, the image
    /// shape `(rows, cols)` and the number of classes.
    ///
    /// Images in a non-standard (e.g. transposed) memory layout are copied to row-major,
    /// so that each image is contiguous in memory when batches are gathered.
    ///
    /// # Example
    ///
    /// ```
    /// use blindspot::data::Dataset;
    /// use ndarray::array;
    ///
    /// // Two 1×2 "images" of two classes.
    /// let ds = Dataset::new(array![[0.0, 0.5], [1.0, 0.25]], vec![1, 0], (1, 2), 2)?;
    /// assert_eq!(ds.len(), 2);
    /// assert_eq!(ds.input_dim(), 2);
    /// assert_eq!(ds.label_counts(), vec![1, 1]);
    /// assert!(Dataset::new(array![[0.0, 1.5]], vec![0], (1, 2), 2).is_err());
    /// # Ok::<(), blindspot::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] if `num_classes` is 0, `image_shape` has a zero side, or
    /// a pixel is outside `[0, 1]`;
    /// [`Error::EmptyDataset`] if there are no images; [`Error::Shape`] if the number of
    /// labels differs from the number of rows or `d != rows * cols`;
    /// [`Error::LabelOutOfRange`] if a label is `>= num_classes`; [`Error::NonFinite`] if a
    /// pixel is NaN or infinite.
    pub fn new(
        images: Array2<f32>,
        labels: Vec<usize>,
        image_shape: (usize, usize),
        num_classes: usize,
    ) -> Result<Dataset> {
        check_nonzero("num_classes", num_classes)?;
        let (n, d) = images.dim();
        if n == 0 {
            return Err(Error::EmptyDataset("Dataset::new given 0 images".into()));
        }
        if labels.len() != n {
            return Err(Error::shape("labels", n, labels.len()));
        }
        let (rows, cols) = image_shape;
        if rows == 0 || cols == 0 {
            return Err(Error::param(
                "image_shape",
                format!("images need at least one pixel, got {rows} × {cols}"),
            ));
        }
        if rows.checked_mul(cols) != Some(d) {
            return Err(Error::shape(
                "images",
                format!("n × {rows}·{cols} (image shape {rows} × {cols})"),
                format!("{n} × {d}"),
            ));
        }
        if let Some((i, &label)) = labels.iter().enumerate().find(|&(_, &l)| l >= num_classes) {
            return Err(Error::label(
                format!("label of example {i}"),
                label,
                num_classes,
            ));
        }
        if !all_in_unit_interval(&images) {
            return Err(first_bad_pixel(&images));
        }
        let images = if images.is_standard_layout() {
            images
        } else {
            images.as_standard_layout().into_owned()
        };
        Ok(Dataset {
            images,
            labels,
            image_shape,
            num_classes,
        })
    }

    /// Number of examples (never 0).
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Always `false`: [`Dataset::new`] rejects empty datasets. Present for API symmetry
    /// with [`Dataset::len`].
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// All images, `len() × input_dim()`, one flattened row-major image per row.
    pub fn images(&self) -> ArrayView2<'_, f32> {
        self.images.view()
    }

    /// The class label of each example.
    pub fn labels(&self) -> &[usize] {
        &self.labels
    }

    /// Shape `(rows, cols)` of one image.
    pub fn image_shape(&self) -> (usize, usize) {
        self.image_shape
    }

    /// Number of classes; every label is below it.
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// Length of one flattened image, `rows * cols`.
    pub fn input_dim(&self) -> usize {
        self.images.ncols()
    }

    /// Image `i` as a flat vector, or `None` if `i >= len()`.
    pub fn image(&self, i: usize) -> Option<ArrayView1<'_, f32>> {
        (i < self.len()).then(|| self.images.row(i))
    }

    /// A new dataset of the examples at `indices`, in that order (repeats allowed).
    ///
    /// # Errors
    ///
    /// [`Error::EmptyDataset`] if `indices` is empty; [`Error::InvalidParameter`] if an
    /// index is `>= len()`.
    pub fn subset(&self, indices: &[usize]) -> Result<Dataset> {
        if indices.is_empty() {
            return Err(Error::EmptyDataset("subset of no indices".into()));
        }
        self.check_indices(indices)?;
        Ok(Dataset {
            images: self.images.select(Axis(0), indices),
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            image_shape: self.image_shape,
            num_classes: self.num_classes,
        })
    }

    /// The first `n` examples.
    ///
    /// # Errors
    ///
    /// [`Error::EmptyDataset`] if `n == 0`; [`Error::InvalidParameter`] if `n > len()`
    /// (silently returning fewer examples than asked for would skew experiments).
    pub fn head(&self, n: usize) -> Result<Dataset> {
        if n == 0 {
            return Err(Error::EmptyDataset("head(0)".into()));
        }
        if n > self.len() {
            return Err(Error::param(
                "n",
                format!("head({n}) of a dataset of {} examples", self.len()),
            ));
        }
        Ok(Dataset {
            images: self.images.slice(ndarray::s![..n, ..]).to_owned(),
            labels: self.labels[..n].to_vec(),
            image_shape: self.image_shape,
            num_classes: self.num_classes,
        })
    }

    /// Splits the examples into two disjoint datasets of `first_len` and
    /// `len() - first_len` examples, chosen by a random permutation seeded with `seed`
    /// (`ChaCha8Rng::seed_from_u64`), so the split is reproducible across runs and
    /// platforms. Within each part the examples keep their original relative order.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] unless `0 < first_len < len()`, i.e. unless both parts
    /// are non-empty.
    pub fn split(&self, first_len: usize, seed: u64) -> Result<(Dataset, Dataset)> {
        if first_len == 0 || first_len >= self.len() {
            return Err(Error::param(
                "first_len",
                format!(
                    "both parts of a split must be non-empty: need 0 < first_len < {}, got {first_len}",
                    self.len()
                ),
            ));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let perm = self.shuffled_indices(&mut rng);
        let (a, b) = perm.split_at(first_len);
        // Sorting keeps memory access sequential when copying and keeps each part in the
        // source order, which makes the parts easier to inspect.
        let (mut a, mut b) = (a.to_vec(), b.to_vec());
        a.sort_unstable();
        b.sort_unstable();
        Ok((self.subset(&a)?, self.subset(&b)?))
    }

    /// A uniformly random permutation of `0..len()` drawn from `rng`.
    pub fn shuffled_indices(&self, rng: &mut impl Rng) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..self.len()).collect();
        idx.shuffle(rng);
        idx
    }

    /// Copies the images at `indices` into the rows of `x` and their labels into `y`
    /// (cleared first), so a training loop can reuse one buffer for every mini-batch
    /// instead of allocating.
    ///
    /// # Errors
    ///
    /// [`Error::Shape`] if `x` is not `indices.len() × input_dim()`;
    /// [`Error::InvalidParameter`] if an index is `>= len()`. On error `x` and `y` are left
    /// unchanged.
    pub fn gather_into(
        &self,
        indices: &[usize],
        x: &mut Array2<f32>,
        y: &mut Vec<usize>,
    ) -> Result<()> {
        let d = self.input_dim();
        if x.dim() != (indices.len(), d) {
            return Err(Error::shape(
                "gather_into buffer",
                format!("{} × {d}", indices.len()),
                format!("{} × {}", x.nrows(), x.ncols()),
            ));
        }
        self.check_indices(indices)?;
        y.clear();
        y.reserve(indices.len());
        for (mut dst, &i) in x.rows_mut().into_iter().zip(indices) {
            dst.assign(&self.images.row(i));
            y.push(self.labels[i]);
        }
        Ok(())
    }

    /// Iterates over mini-batches `(images, labels)` of `batch_size` examples in an order
    /// shuffled with `ChaCha8Rng::seed_from_u64(seed)`. Every example appears exactly once;
    /// the last batch holds the remaining `len() % batch_size` examples if that is non-zero.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] if `batch_size == 0`.
    pub fn batches(&self, batch_size: usize, seed: u64) -> Result<Batches<'_>> {
        check_nonzero("batch_size", batch_size)?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        Ok(Batches {
            dataset: self,
            order: self.shuffled_indices(&mut rng),
            pos: 0,
            batch_size,
        })
    }

    /// Applies `f` to consecutive chunks of at most 1,000 examples in parallel (rayon) and
    /// returns the results in chunk order; `f` gets the index of the chunk's first example and
    /// the chunk's images and labels. Whole-dataset evaluations (errors, codes, losses) use it.
    pub fn map_chunks<T, F>(&self, f: F) -> Result<Vec<T>>
    where
        T: Send,
        F: Fn(usize, ArrayView2<'_, f32>, &[usize]) -> Result<T> + Sync,
    {
        const CHUNK: usize = 1000;
        (0..self.len().div_ceil(CHUNK))
            .into_par_iter()
            .map(|c| {
                let lo = c * CHUNK;
                let hi = (lo + CHUNK).min(self.len());
                f(lo, self.images.slice(s![lo..hi, ..]), &self.labels[lo..hi])
            })
            .collect()
    }

    /// Number of examples of each class, indexed by label (length `num_classes()`).
    pub fn label_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.num_classes];
        for &l in &self.labels {
            counts[l] += 1;
        }
        counts
    }

    fn check_indices(&self, indices: &[usize]) -> Result<()> {
        match indices.iter().find(|&&i| i >= self.len()) {
            Some(&i) => Err(Error::param(
                "indices",
                format!(
                    "index {i} out of range for a dataset of {} examples",
                    self.len()
                ),
            )),
            None => Ok(()),
        }
    }
}

/// Iterator over shuffled mini-batches of a [`Dataset`], made by [`Dataset::batches`].
#[derive(Debug, Clone)]
pub struct Batches<'a> {
    dataset: &'a Dataset,
    order: Vec<usize>,
    pos: usize,
    batch_size: usize,
}

impl Iterator for Batches<'_> {
    type Item = (Array2<f32>, Vec<usize>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.order.len() {
            return None;
        }
        let end = (self.pos + self.batch_size).min(self.order.len());
        let idx = &self.order[self.pos..end];
        self.pos = end;
        let ds = self.dataset;
        Some((
            ds.images.select(Axis(0), idx),
            idx.iter().map(|&i| ds.labels[i]).collect(),
        ))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = (self.order.len() - self.pos).div_ceil(self.batch_size);
        (left, Some(left))
    }
}

impl ExactSizeIterator for Batches<'_> {}

impl std::iter::FusedIterator for Batches<'_> {}

/// Whether every value is in `[0, 1]` (so also finite). Written as a branch-free fold over
/// contiguous memory so that it vectorises: validating all of MNIST this way takes a few
/// milliseconds rather than the ~50 ms of an early-exit, index-tracking loop.
fn all_in_unit_interval(images: &Array2<f32>) -> bool {
    let in_range = |ok: bool, v: &f32| ok & (0.0..=1.0).contains(v);
    match images.as_slice_memory_order() {
        Some(s) => s.chunks(1 << 14).all(|c| c.iter().fold(true, in_range)),
        None => images.iter().fold(true, in_range),
    }
}

/// The error for the first pixel that is not a finite value in `[0, 1]`; only called once
/// [`all_in_unit_interval`] has failed, so speed does not matter here.
fn first_bad_pixel(images: &Array2<f32>) -> Error {
    for ((i, j), &v) in images.indexed_iter() {
        if !v.is_finite() {
            return Error::NonFinite {
                what: format!("dataset image {i}, pixel {j}"),
            };
        }
        if !(0.0..=1.0).contains(&v) {
            return Error::param(
                "images",
                format!("pixel values must be in [0, 1]; image {i}, pixel {j} is {v}"),
            );
        }
    }
    // Unreachable when called as documented; a generic error beats a panic.
    Error::param("images", "pixel values must be finite and in [0, 1]")
}
