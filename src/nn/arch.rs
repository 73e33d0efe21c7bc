//! Network architectures and the paper's model names (`"FC100-100-10"`, `"FC10(1e-4)"`).

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::nn::Activation;

/// Weight decay used when a name gives none; the paper's deeper FC networks use 1e-5.
pub const DEFAULT_WEIGHT_DECAY: f32 = 1e-5;

/// The shape of a fully connected classifier: input width, hidden widths, classes, hidden
/// activation and L2 weight decay λ. Validated on construction, so a value is always usable.
#[derive(Debug, Clone, PartialEq)]
pub struct Architecture {
    input: usize,
    hidden: Vec<usize>,
    classes: usize,
    activation: Activation,
    weight_decay: f32,
}

impl Architecture {
    /// A checked architecture; every width must be at least 1 (classes at least 2) and λ finite
    /// and non-negative.
    pub fn new(
        input: usize,
        hidden: Vec<usize>,
        classes: usize,
        activation: Activation,
        weight_decay: f32,
    ) -> Result<Self> {
        if input == 0 {
            return Err(Error::param("input", "input width must be at least 1"));
        }
        if let Some(i) = hidden.iter().position(|&h| h == 0) {
            return Err(Error::param(
                "hidden",
                format!("hidden layer {i} has width 0"),
            ));
        }
        if classes < 2 {
            return Err(Error::param(
                "classes",
                format!("need at least 2 classes, got {classes}"),
            ));
        }
        if !(weight_decay.is_finite() && weight_decay >= 0.0) {
            return Err(Error::param(
                "weight_decay",
                format!("must be finite and >= 0, got {weight_decay}"),
            ));
        }
        Ok(Architecture {
            input,
            hidden,
            classes,
            activation,
            weight_decay,
        })
    }

    /// Parses a paper-style name for inputs of width `input`: `FC` then hidden widths and the
    /// class count joined by `-`, then an optional `(λ)`. Hidden layers are sigmoid, as in the
    /// paper; λ defaults to [`DEFAULT_WEIGHT_DECAY`].
    ///
    /// ```
    /// use blindspot::nn::Architecture;
    /// let a = Architecture::parse("FC100-100-10", 784).unwrap();
    /// assert_eq!(a.hidden(), &[100, 100]);
    /// assert_eq!(a.classes(), 10);
    /// let b = Architecture::parse("FC10(1e-4)", 784).unwrap();
    /// assert!(b.hidden().is_empty());
    /// assert_eq!(b.weight_decay(), 1e-4);
    /// ```
    pub fn parse(name: &str, input: usize) -> Result<Self> {
        let err = |reason: &str| Error::ModelName {
            name: name.to_string(),
            reason: reason.to_string(),
        };
        let trimmed = name.trim();
        let body = trimmed
            .strip_prefix("FC")
            .ok_or_else(|| err("must start with \"FC\""))?;
        let (sizes, lambda) = match body.find('(') {
            Some(open) => {
                let close = body
                    .strip_suffix(')')
                    .ok_or_else(|| err("weight decay must be closed by ')' at the end"))?;
                let text = &close[open + 1..];
                let lambda: f32 = text
                    .trim()
                    .parse()
                    .map_err(|_| err(&format!("weight decay {text:?} is not a number")))?;
                (&body[..open], lambda)
            }
            None => (body, DEFAULT_WEIGHT_DECAY),
        };
        let widths: Vec<usize> = sizes
            .split('-')
            .map(|s| {
                s.trim()
                    .parse::<usize>()
                    .map_err(|_| err(&format!("layer width {s:?} is not a positive integer")))
            })
            .collect::<Result<_>>()?;
        let (&classes, hidden) = widths.split_last().ok_or_else(|| err("no layer widths"))?;
        Architecture::new(input, hidden.to_vec(), classes, Activation::Sigmoid, lambda).map_err(
            |e| Error::ModelName {
                name: name.to_string(),
                reason: e.to_string(),
            },
        )
    }

    /// The same architecture with another hidden activation.
    pub fn with_activation(mut self, activation: Activation) -> Self {
        self.activation = activation;
        self
    }

    /// Input width.
    pub fn input(&self) -> usize {
        self.input
    }
    /// Hidden layer widths, first to last.
    pub fn hidden(&self) -> &[usize] {
        &self.hidden
    }
    /// Number of classes (width of the softmax layer).
    pub fn classes(&self) -> usize {
        self.classes
    }
    /// Hidden activation.
    pub fn activation(&self) -> Activation {
        self.activation
    }
    /// L2 weight decay λ: the objective adds `λ/2 · Σ θ²` over every parameter θ (weights and
    /// biases), so SGD shrinks each parameter by `lr·λ·θ` per step.
    pub fn weight_decay(&self) -> f32 {
        self.weight_decay
    }
    /// All layer widths including input and output: `[input, hidden.., classes]`.
    pub fn widths(&self) -> Vec<usize> {
        let mut w = Vec::with_capacity(self.hidden.len() + 2);
        w.push(self.input);
        w.extend_from_slice(&self.hidden);
        w.push(self.classes);
        w
    }
}

impl fmt::Display for Architecture {
    /// The paper's name with λ always given, e.g. `FC100-100-10(1e-5)`; it parses back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FC")?;
        for h in &self.hidden {
            write!(f, "{h}-")?;
        }
        write!(f, "{}({:e})", self.classes, self.weight_decay)
    }
}

impl FromStr for Architecture {
    type Err = Error;
    /// Parses a name for MNIST-sized inputs (784).
    fn from_str(s: &str) -> Result<Self> {
        Architecture::parse(s, 784)
    }
}
