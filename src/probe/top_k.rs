//! Ranking held-out images along directions of a layer: the `k` images that maximise
//! `⟨φ(x), v⟩` for each direction `v`, and two measures of how alike they are.

use std::cmp::Ordering;

use ndarray::{s, Array2, ArrayView1, ArrayView2};

use super::Direction;
use crate::error::{Error, Result};
use crate::model::Representation;

/// Rows per call to [`Representation::representation`]: bounds the memory a model needs for
/// intermediate layers while keeping each call a reasonably large matrix product.
const CHUNK: usize = 1000;

/// The `k` held-out examples with the largest projection on one direction.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct TopK {
    /// The direction.
    pub direction: Direction,
    /// Row indices into the held-out set, best first (ties broken by the smaller index).
    pub indices: Vec<usize>,
    /// The projections `⟨φ(x), v⟩` of those rows, non-increasing.
    pub scores: Vec<f32>,
    /// Rows outside the top k whose score equals the k-th score: when > 0 the top-k *set* is
    /// not determined by the scores and the index tie-break chose. This happens with
    /// saturated sigmoid units, whose f32 activation is exactly 1 on many images (see
    /// [`PreActivations`](super::PreActivations) for a tie-free ranking of single units).
    pub boundary_ties: usize,
}

/// Activations of layer `layer` for every row of `x`, computed in chunks of rows.
///
/// # Errors
///
/// [`Error::InvalidParameter`] if `layer >= model.num_layers()`; [`Error::EmptyInput`] if
/// `x` has no rows; [`Error::Shape`] if the model returns a batch of the wrong shape;
/// [`Error::NonFinite`] if an activation is NaN or infinite; any error of the model.
pub fn layer_activations<R: Representation + ?Sized>(
    model: &R,
    x: ArrayView2<'_, f32>,
    layer: usize,
) -> Result<Array2<f32>> {
    let dim = checked_layer_dim(model, layer)?;
    let n = x.nrows();
    if n == 0 {
        return Err(Error::empty("probe input has no rows"));
    }
    // Allocated only after the first chunk has shown that the model's claimed width is real:
    // a model reporting an absurd `layer_dim` gets a shape error, not a huge allocation.
    let mut acts: Option<Array2<f32>> = None;
    for lo in (0..n).step_by(CHUNK) {
        let hi = (lo + CHUNK).min(n);
        let a = model.representation(x.slice(s![lo..hi, ..]), layer)?;
        if a.dim() != (hi - lo, dim) {
            return Err(Error::shape(
                format!("representation of layer {layer}"),
                format!("{} × {dim}", hi - lo),
                format!("{} × {}", a.nrows(), a.ncols()),
            ));
        }
        acts.get_or_insert_with(|| Array2::zeros((n, dim)))
            .slice_mut(s![lo..hi, ..])
            .assign(&a);
    }
    let acts = acts.ok_or(Error::Internal {
        what: "a probe input of at least one row gave no chunk",
    })?;
    if acts.iter().any(|v| !v.is_finite()) {
        return Err(Error::NonFinite {
            what: format!("activations of layer {layer}"),
        });
    }
    Ok(acts)
}

/// Width of `layer`, after checking the index against `num_layers` (a hand-written
/// [`Representation`] might not check it itself).
pub(super) fn checked_layer_dim<R: Representation + ?Sized>(
    model: &R,
    layer: usize,
) -> Result<usize> {
    let layers = model.num_layers();
    if layer >= layers {
        return Err(Error::param(
            "layer",
            format!("layer {layer} out of range: the model has {layers} readable layers"),
        ));
    }
    model.layer_dim(layer)
}

/// The directions as the columns of a `dim × N` matrix.
///
/// # Errors
///
/// As [`Direction::vector`], for the first invalid direction; [`Error::InvalidParameter`] if
/// the matrix would not fit in memory's address space.
pub fn direction_matrix(directions: &[Direction], dim: usize) -> Result<Array2<f32>> {
    if dim
        .checked_mul(directions.len())
        .is_none_or(|n| n > isize::MAX as usize / 4)
    {
        return Err(Error::param(
            "layer_dim",
            format!("{dim} × {} directions is too large", directions.len()),
        ));
    }
    let mut v = Array2::zeros((dim, directions.len()));
    for (j, d) in directions.iter().enumerate() {
        v.column_mut(j).assign(&d.vector(dim)?);
    }
    Ok(v)
}

/// Top `k` rows of precomputed activations (`n × d`) for each direction.
///
/// All projections are one matrix product `(n × d)·(d × N)`; each column is then partially
/// sorted (`select_nth_unstable_by`, O(n)) and only its `k` winners are fully sorted, since
/// `k ≪ n`.
///
/// # Errors
///
/// [`Error::InvalidParameter`] if `k` is 0 or larger than `n`, or `directions` is empty;
/// [`Error::NonFinite`] if an activation is NaN or infinite; as [`Direction::vector`] for
/// invalid directions.
pub fn top_k_from_activations(
    acts: ArrayView2<'_, f32>,
    directions: &[Direction],
    k: usize,
) -> Result<Vec<TopK>> {
    let (n, dim) = acts.dim();
    check_k(k, n)?;
    if directions.is_empty() {
        return Err(Error::param("directions", "need at least one direction"));
    }
    if acts.iter().any(|v| !v.is_finite()) {
        return Err(Error::NonFinite {
            what: "activations".into(),
        });
    }
    let v = direction_matrix(directions, dim)?;
    let scores = acts.dot(&v);
    let mut order: Vec<usize> = Vec::with_capacity(n);
    Ok(directions
        .iter()
        .enumerate()
        .map(|(j, d)| {
            let col = scores.column(j);
            let indices = top_indices(col, k, &mut order);
            let kth = col[indices[k - 1]];
            // After the selection, `order[k..]` holds exactly the rows outside the top k.
            let boundary_ties = order[k..].iter().filter(|&&i| col[i] == kth).count();
            TopK {
                direction: d.clone(),
                scores: indices.iter().map(|&i| col[i]).collect(),
                indices,
                boundary_ties,
            }
        })
        .collect())
}

/// Descending score, then ascending index: a total order, so results are deterministic.
pub(super) fn by_score_desc(col: &ArrayView1<'_, f32>, a: usize, b: usize) -> Ordering {
    col[b].total_cmp(&col[a]).then(a.cmp(&b))
}

/// The `k` best indices of `col`, best first; `order` is reused scratch space.
pub(super) fn top_indices(
    col: ArrayView1<'_, f32>,
    k: usize,
    order: &mut Vec<usize>,
) -> Vec<usize> {
    order.clear();
    order.extend(0..col.len());
    let cmp = |a: &usize, b: &usize| by_score_desc(&col, *a, *b);
    if k < order.len() {
        order.select_nth_unstable_by(k - 1, cmp);
    }
    let mut top = order[..k].to_vec();
    top.sort_unstable_by(cmp);
    top
}

pub(super) fn check_k(k: usize, n: usize) -> Result<()> {
    if k == 0 || k > n {
        return Err(Error::param(
            "k",
            format!("must be in 1..={n} (the number of held-out examples), got {k}"),
        ));
    }
    Ok(())
}

/// The `k` rows of `x` that maximise `⟨φ_layer(x), v⟩` for each direction `v`: activations
/// are computed once (see [`layer_activations`]), then [`top_k_from_activations`].
///
/// # Errors
///
/// As [`layer_activations`] and [`top_k_from_activations`]; `k` is checked before the model
/// runs.
pub fn top_k<R: Representation + ?Sized>(
    model: &R,
    x: ArrayView2<'_, f32>,
    layer: usize,
    directions: &[Direction],
    k: usize,
) -> Result<Vec<TopK>> {
    check_k(k, x.nrows())?;
    let dim = checked_layer_dim(model, layer)?;
    // Validate directions before the (possibly slow) forward pass, without allocating from
    // `dim`: the model's claimed width is only trusted once its activations have that width.
    for d in directions {
        match d {
            Direction::Unit(i) if *i >= dim => {
                return Err(Error::param(
                    "direction",
                    format!("unit {i} out of range for a layer of width {dim}"),
                ))
            }
            Direction::Custom(v) => {
                d.vector(v.len())?;
                if v.len() != dim {
                    return Err(Error::shape("custom direction", dim, v.len()));
                }
            }
            _ => {}
        }
    }
    let acts = layer_activations(model, x, layer)?;
    top_k_from_activations(acts.view(), directions, k)
}

/// Share of the most common label among `labels[i]` for `i` in `indices` (1 means all equal).
/// Returns 0 for an empty `indices`.
///
/// # Errors
///
/// [`Error::InvalidParameter`] if an index is not below `labels.len()`.
pub fn label_purity(labels: &[usize], indices: &[usize]) -> Result<f64> {
    check_indices(indices, labels.len(), "labels")?;
    if indices.is_empty() {
        return Ok(0.0);
    }
    let mut counts = std::collections::HashMap::new();
    for &i in indices {
        *counts.entry(labels[i]).or_insert(0usize) += 1;
    }
    let max = counts.values().copied().max().unwrap_or(0);
    Ok(max as f64 / indices.len() as f64)
}

/// Mean Euclidean distance over all pairs of the rows `indices` of `x` (0 for fewer than two).
///
/// # Errors
///
/// [`Error::InvalidParameter`] if an index is not below `x.nrows()`; [`Error::NonFinite`] if
/// a selected row has a NaN or infinite value, or the distances overflow.
pub fn mean_pairwise_distance(x: ArrayView2<'_, f32>, indices: &[usize]) -> Result<f64> {
    check_indices(indices, x.nrows(), "rows")?;
    let m = indices.len();
    if m < 2 {
        return Ok(0.0);
    }
    let mut total = 0.0;
    for (a, &i) in indices.iter().enumerate() {
        let xi = x.row(i);
        for &j in &indices[a + 1..] {
            let d2: f64 = xi
                .iter()
                .zip(x.row(j))
                .map(|(&p, &q)| {
                    let d = p as f64 - q as f64;
                    d * d
                })
                .sum();
            total += d2.sqrt();
        }
    }
    // m · (m − 1) / 2 pairs, in f64: the product could overflow usize for huge index lists.
    let mean = total / (m as f64 * (m as f64 - 1.0) / 2.0);
    if !mean.is_finite() {
        return Err(Error::NonFinite {
            what: "pairwise distances".into(),
        });
    }
    Ok(mean)
}

pub(super) fn check_indices(indices: &[usize], n: usize, what: &str) -> Result<()> {
    match indices.iter().find(|&&i| i >= n) {
        Some(&i) => Err(Error::param(
            "indices",
            format!("index {i} out of range for {n} {what}"),
        )),
        None => Ok(()),
    }
}
