//! Elementwise activation functions, applied in place on batches.

use std::fmt;
use std::str::FromStr;

use ndarray::{ArrayView2, ArrayViewMut2, Zip};

use crate::error::Error;

/// A hidden-layer nonlinearity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Activation {
    /// The logistic function `1 / (1 + e^-z)`; the paper's FC networks use it.
    Sigmoid,
    /// Hyperbolic tangent.
    Tanh,
    /// Rectified linear unit `max(0, z)`.
    Relu,
    /// No nonlinearity.
    Identity,
}

impl Activation {
    /// Replaces pre-activations `z` by activations `f(z)`.
    pub fn apply(self, mut z: ArrayViewMut2<'_, f32>) {
        match self {
            Activation::Sigmoid => z.mapv_inplace(sigmoid),
            Activation::Tanh => z.mapv_inplace(f32::tanh),
            Activation::Relu => z.mapv_inplace(|v| v.max(0.0)),
            Activation::Identity => {}
        }
    }

    /// Multiplies `grad` (dL/da) by `f'(z)`, written in terms of the output `a = f(z)`, which is
    /// what the forward pass keeps: this avoids storing pre-activations.
    pub fn backprop(self, a: ArrayView2<'_, f32>, grad: ArrayViewMut2<'_, f32>) {
        match self {
            Activation::Sigmoid => Zip::from(grad).and(a).for_each(|g, &a| *g *= a * (1.0 - a)),
            Activation::Tanh => Zip::from(grad).and(a).for_each(|g, &a| *g *= 1.0 - a * a),
            // A select rather than a branch, so the loop vectorizes (a NaN activation keeps
            // its gradient, as before).
            Activation::Relu => Zip::from(grad)
                .and(a)
                .for_each(|g, &a| *g = if a <= 0.0 { 0.0 } else { *g }),
            Activation::Identity => {}
        }
    }

    /// The Lipschitz constant of the function (the largest slope), used by stability bounds.
    pub fn lipschitz(self) -> f32 {
        match self {
            Activation::Sigmoid => 0.25,
            _ => 1.0,
        }
    }

    /// The lower-case name, as used in saved models.
    pub fn name(self) -> &'static str {
        match self {
            Activation::Sigmoid => "sigmoid",
            Activation::Tanh => "tanh",
            Activation::Relu => "relu",
            Activation::Identity => "identity",
        }
    }
}

impl fmt::Display for Activation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Activation {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s.to_ascii_lowercase().as_str() {
            "sigmoid" => Ok(Activation::Sigmoid),
            "tanh" => Ok(Activation::Tanh),
            "relu" => Ok(Activation::Relu),
            "identity" | "linear" => Ok(Activation::Identity),
            other => Err(Error::param(
                "activation",
                format!("unknown activation {other:?} (sigmoid, tanh, relu, identity)"),
            )),
        }
    }
}

/// Numerically safe logistic function.
#[inline]
pub fn sigmoid(z: f32) -> f32 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}
