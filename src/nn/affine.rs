//! A fixed per-channel affine map at a network's input, `y = x·scale[c] + shift[c]`: the
//! normalisation (`(x − mean) / std`) that imported models apply inside `forward`.
//!
//! Keeping it as a layer, rather than folding it into the first convolution, keeps imports
//! exact (a zero-padded convolution of normalised pixels is not a convolution of raw ones at
//! the border) and keeps the attack's box the user's own `[0, 1]` pixels.

use ndarray::{ArrayView2, ArrayViewMut2, Axis, Zip};

use crate::error::{Error, Result};

/// `y[…, c] = x[…, c] · scale[c] + shift[c]` on channels-last rows (see the
/// [`layer`](crate::nn::Layer) layout): channel `c` of a row is every value at a column
/// `≡ c (mod channels)`. It has no trainable parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct InputAffine {
    scale: Vec<f32>,
    shift: Vec<f32>,
    width: usize,
}

impl InputAffine {
    /// The map on rows of `width` values with one `scale` and `shift` per channel (one value
    /// each for a single-channel or flat input).
    ///
    /// # Errors
    ///
    /// [`Error::Shape`] if `scale` and `shift` differ in length or are empty, or `width` is
    /// not a positive multiple of their length; [`Error::NonFinite`] for a NaN or infinite
    /// value; [`Error::InvalidParameter`] for a zero scale (the map must be invertible, or the
    /// attack's input gradient would vanish on that channel).
    pub fn new(scale: Vec<f32>, shift: Vec<f32>, width: usize) -> Result<Self> {
        let c = scale.len();
        if c == 0 || shift.len() != c {
            return Err(Error::shape(
                "input affine shift",
                format!("{c} values (one per channel, at least one)"),
                shift.len(),
            ));
        }
        if width == 0 || width % c != 0 {
            return Err(Error::shape(
                "input affine width",
                format!("a positive multiple of {c} channels"),
                width,
            ));
        }
        if scale.iter().chain(&shift).any(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                what: "input affine scale or shift".into(),
            });
        }
        if scale.contains(&0.0) {
            return Err(Error::param(
                "scale",
                "an input scale of 0 erases that channel",
            ));
        }
        Ok(InputAffine {
            scale,
            shift,
            width,
        })
    }

    /// Per-channel scales.
    pub fn scale(&self) -> &[f32] {
        &self.scale
    }

    /// Per-channel shifts.
    pub fn shift(&self) -> &[f32] {
        &self.shift
    }

    /// Number of channels.
    pub fn channels(&self) -> usize {
        self.scale.len()
    }

    /// Width of one example (input and output).
    pub fn width(&self) -> usize {
        self.width
    }

    /// The map's Lipschitz constant in the Euclidean norm, `max |scale|` (it is diagonal).
    pub fn lipschitz(&self) -> f32 {
        self.scale.iter().fold(0.0, |m, s| m.max(s.abs()))
    }

    pub(crate) fn forward(&self, x: ArrayView2<'_, f32>, mut y: ArrayViewMut2<'_, f32>) {
        let c = self.channels();
        Zip::from(x.axis_iter(Axis(0)))
            .and(y.axis_iter_mut(Axis(0)))
            .for_each(|xr, mut yr| {
                for (i, (o, &v)) in yr.iter_mut().zip(xr.iter()).enumerate() {
                    let k = i % c;
                    *o = v * self.scale[k] + self.shift[k];
                }
            });
    }

    pub(crate) fn backward(&self, dy: ArrayView2<'_, f32>, mut dx: ArrayViewMut2<'_, f32>) {
        let c = self.channels();
        Zip::from(dy.axis_iter(Axis(0)))
            .and(dx.axis_iter_mut(Axis(0)))
            .for_each(|dr, mut xr| {
                for (i, (o, &g)) in xr.iter_mut().zip(dr.iter()).enumerate() {
                    *o = g * self.scale[i % c];
                }
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{array, Array2};

    #[test]
    fn maps_each_channel_and_back_propagates_its_scale() {
        let a = InputAffine::new(vec![2.0, -1.0], vec![0.5, 1.0], 4).unwrap();
        let x = array![[1.0f32, 2.0, 3.0, 4.0]];
        let mut y = Array2::zeros((1, 4));
        a.forward(x.view(), y.view_mut());
        assert_eq!(y, array![[2.5, -1.0, 6.5, -3.0]]);
        let mut dx = Array2::zeros((1, 4));
        a.backward(array![[1.0f32, 1.0, 3.0, 3.0]].view(), dx.view_mut());
        assert_eq!(dx, array![[2.0, -1.0, 6.0, -3.0]]);
        assert_eq!(a.lipschitz(), 2.0);
    }

    #[test]
    fn rejects_bad_shapes_and_values() {
        assert!(InputAffine::new(vec![], vec![], 4).is_err());
        assert!(InputAffine::new(vec![1.0, 1.0], vec![0.0], 4).is_err());
        assert!(InputAffine::new(vec![1.0, 1.0, 1.0], vec![0.0; 3], 4).is_err());
        assert!(InputAffine::new(vec![f32::NAN], vec![0.0], 4).is_err());
        assert!(InputAffine::new(vec![0.0], vec![0.0], 4).is_err());
    }
}
