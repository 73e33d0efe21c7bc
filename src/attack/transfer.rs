//! Transfer of adversarial examples between models (paper §4.2, Tables 2–4): how often a model
//! misclassifies inputs made adversarial for another one, and perturbations rescaled to a common
//! distortion so that models and noise can be compared at equal size.

use ndarray::{Array1, ArrayView1, ArrayView2, Zip};

use super::distortion;
use crate::error::{check_non_negative, Error, Result};
use crate::model::{check_batch, check_finite, check_labels, checked_predict, Classifier};

/// Relative tolerance of [`magnify`]: the returned input's distortion is within
/// `MAGNIFY_TOLERANCE · target` of `target`.
pub const MAGNIFY_TOLERANCE: f64 = 1e-4;

/// Rescales the perturbation `x_adv − x` so that, after clipping to the pixel box `[0, 1]`, its
/// [`distortion`] equals `target_distortion` (to [`MAGNIFY_TOLERANCE`] relative).
///
/// This is the paper's "magnified to stddev 0.1" of Table 4. The scale is found by bisection
/// (as [`GaussianNoise::matching`](super::GaussianNoise::matching) does for noise) because
/// clipping removes part of a scaled perturbation, so the distortion is not linear in the
/// scale; it is, however, non-decreasing in it, which is what bisection needs. The direction
/// of every pixel's change is kept; a perturbation larger than the target is shrunk.
///
/// ```
/// use blindspot::attack::{distortion, magnify};
/// use ndarray::array;
///
/// let x = array![0.2f32, 0.5, 0.9, 0.0];
/// let adv = array![0.25f32, 0.45, 0.95, 0.0];
/// let big = magnify(x.view(), adv.view(), 0.1)?;
/// assert!((distortion(x.view(), big.view())? - 0.1).abs() < 1e-4 * 0.1);
/// assert!(big.iter().all(|&v| (0.0..=1.0).contains(&v)));
/// # Ok::<(), blindspot::Error>(())
/// ```
///
/// # Errors
///
/// [`Error::Shape`] if the lengths differ or are 0; [`Error::NonFinite`] for a non-finite
/// pixel; [`Error::InvalidParameter`] if `x` leaves the box, the target is negative or not
/// finite, the perturbation is zero while the target is not, or the target is larger than
/// the clipped perturbation can reach (every pixel it moves driven to 0 or 1).
pub fn magnify(
    x: ArrayView1<'_, f32>,
    x_adv: ArrayView1<'_, f32>,
    target_distortion: f64,
) -> Result<Array1<f32>> {
    if x.len() != x_adv.len() {
        return Err(Error::shape("adversarial input", x.len(), x_adv.len()));
    }
    if x.is_empty() {
        return Err(Error::shape("input", "at least one pixel", 0));
    }
    check_finite(x, "magnify inputs")?;
    check_finite(x_adv, "magnify inputs")?;
    if let Some(i) = x.iter().position(|&v| !(0.0..=1.0).contains(&v)) {
        return Err(Error::param(
            "x",
            format!("pixel {i} is {}, outside the box [0, 1]", x[i]),
        ));
    }
    check_non_negative("target_distortion", target_distortion)?;
    if target_distortion == 0.0 {
        return Ok(x.to_owned());
    }
    let r: Array1<f64> = Zip::from(&x_adv)
        .and(&x)
        .map_collect(|&a, &b| a as f64 - b as f64);
    if r.iter().all(|&v| v == 0.0) {
        return Err(Error::param(
            "x_adv",
            "the perturbation is zero: there is no direction to magnify",
        ));
    }
    let apply = |s: f64| -> Array1<f32> {
        Zip::from(&x)
            .and(&r)
            .map_collect(|&xi, &ri| (xi as f64 + s * ri).clamp(0.0, 1.0) as f32)
    };
    // The largest distortion any scale can give: every moved pixel pushed to the bound it moves
    // toward. Checking it first turns an impossible target into an error instead of a loop.
    let saturated: f64 = Zip::from(&x).and(&r).fold(0.0, |acc, &xi, &ri| {
        let d = if ri > 0.0 {
            1.0 - xi as f64
        } else if ri < 0.0 {
            xi as f64
        } else {
            0.0
        };
        acc + d * d
    });
    let max_distortion = (saturated / x.len() as f64).sqrt();
    if target_distortion > max_distortion * (1.0 - MAGNIFY_TOLERANCE) {
        return Err(Error::param(
            "target_distortion",
            format!(
                "{target_distortion} is more than this perturbation can reach after clipping \
                 ({max_distortion})"
            ),
        ));
    }
    let dist = |s: f64| distortion(x, apply(s).view());
    // Bracket the scale: the unclipped distortion is linear in s, so the first guess is the
    // exact answer when nothing clips.
    let d1 = dist(1.0)?;
    let guess = target_distortion / d1.max(f64::MIN_POSITIVE);
    let (mut lo, mut hi) = (0.0, guess.max(f64::MIN_POSITIVE));
    while dist(hi)? < target_distortion {
        lo = hi;
        hi *= 2.0;
    }
    let mut best = apply(hi);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        let out = apply(mid);
        let d = distortion(x, out.view())?;
        if (d - target_distortion).abs() <= 0.25 * MAGNIFY_TOLERANCE * target_distortion {
            return Ok(out);
        }
        if d < target_distortion {
            lo = mid;
        } else {
            hi = mid;
            best = out;
        }
        if hi - lo <= 1e-12 * hi {
            break;
        }
    }
    // f32 rounding of the pixels can leave the bisection a hair away; `hi` is the closest
    // point from above.
    Ok(best)
}

/// The fraction of the rows of `xs` that `model` does not label with `labels` (the true
/// labels of the clean inputs they were made from): the error rate of Tables 2 and 4.
///
/// ```
/// use blindspot::attack::transfer_error;
/// use blindspot::nn::{Architecture, Network};
/// use blindspot::Classifier;
/// use ndarray::Array2;
///
/// let model = Network::new(Architecture::parse("FC10", 4).unwrap(), 0);
/// let xs = Array2::from_elem((2, 4), 0.5f32);
/// let y = model.predict(xs.view())?;
/// assert_eq!(transfer_error(&model, xs.view(), &y)?, 0.0);
/// # Ok::<(), blindspot::Error>(())
/// ```
///
/// # Errors
///
/// [`Error::EmptyInput`] for no rows; [`Error::Shape`] for a wrong width or number of labels;
/// [`Error::LabelOutOfRange`]; [`Error::NonFinite`] for a non-finite pixel; as
/// [`checked_predict`] if the model returns logits of the wrong
/// shape or non-finite ones.
pub fn transfer_error<C: Classifier + ?Sized>(
    model: &C,
    xs: ArrayView2<'_, f32>,
    labels: &[usize],
) -> Result<f32> {
    if xs.nrows() == 0 {
        return Err(Error::empty("transfer_error of no adversarial examples"));
    }
    check_batch(xs, model.input_dim(), "adversarial examples")?;
    check_labels(labels, xs.nrows(), model.num_classes())?;
    // Chunks bound the memory of the forward pass on large sets.
    let mut wrong = 0usize;
    for (chunk, lab) in xs
        .axis_chunks_iter(ndarray::Axis(0), 1000)
        .zip(labels.chunks(1000))
    {
        let pred = checked_predict(model, chunk)?;
        wrong += pred.iter().zip(lab).filter(|(p, l)| p != l).count();
    }
    Ok(wrong as f32 / xs.nrows() as f32)
}
