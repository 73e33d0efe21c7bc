//! Network architectures and the paper's model names (`"FC100-100-10"`, `"FC10(1e-4)"`).

use std::fmt;
use std::str::FromStr;

use crate::error::{check_non_negative, Error, Result};
use crate::nn::Activation;

/// Weight decay used when a name gives none; the paper's deeper FC networks use 1e-5.
pub const DEFAULT_WEIGHT_DECAY: f32 = 1e-5;

/// Largest number of parameters, or of values in one example's layer outputs, an architecture
/// may have: 2³⁰ (4 GiB of f32). Anything larger is a typo or a hostile file, not a model this
/// crate could train, and refusing it up front keeps every later allocation bounded.
pub const MAX_SIZE: usize = 1 << 30;

/// One convolutional stage: a 2-D convolution with `channels` output channels, a square
/// `kernel × kernel` window, `stride` and zero `padding`, then the hidden activation, then
/// (if `pool > 1`) a `pool × pool` max-pooling with stride `pool`.
///
/// Name syntax (in `CONV…` names): the channel count, optionally followed by `k<kernel>`,
/// `s<stride>`, `p<padding>`, `q<pool>`; omitted values are the defaults of
/// [`ConvStage::new`] (5×5, stride 1, padding 2, 2×2 pooling), e.g. `32` or `32k3p1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvStage {
    /// Output channels.
    pub channels: usize,
    /// Kernel height and width.
    pub kernel: usize,
    /// Stride of the convolution.
    pub stride: usize,
    /// Zero padding on each side.
    pub padding: usize,
    /// Max-pooling window and stride (1: no pooling).
    pub pool: usize,
}

impl ConvStage {
    /// The default stage with `channels` outputs: 5×5 kernel, stride 1, padding 2 (so the
    /// convolution keeps the image size), then 2×2 max-pooling.
    pub fn new(channels: usize) -> Self {
        ConvStage {
            channels,
            kernel: 5,
            stride: 1,
            padding: 2,
            pool: 2,
        }
    }

    /// The output `(height, width)` of the convolution on a `(height, width)` input, or `None`
    /// if the kernel does not fit in the padded input.
    pub fn conv_output(&self, (h, w): (usize, usize)) -> Option<(usize, usize)> {
        let ph = h.checked_add(2 * self.padding)?;
        let pw = w.checked_add(2 * self.padding)?;
        if self.kernel == 0 || self.stride == 0 || self.kernel > ph || self.kernel > pw {
            return None;
        }
        Some((
            (ph - self.kernel) / self.stride + 1,
            (pw - self.kernel) / self.stride + 1,
        ))
    }

    /// The stage's output `(height, width)` after pooling, or `None` if it would be empty.
    pub fn output(&self, input: (usize, usize)) -> Option<(usize, usize)> {
        let (h, w) = self.conv_output(input)?;
        if self.pool == 0 || self.pool > h || self.pool > w {
            return None;
        }
        Some((h / self.pool, w / self.pool))
    }
}

impl fmt::Display for ConvStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = ConvStage::new(self.channels);
        write!(f, "{}", self.channels)?;
        if self.kernel != d.kernel {
            write!(f, "k{}", self.kernel)?;
        }
        if self.stride != d.stride {
            write!(f, "s{}", self.stride)?;
        }
        if self.padding != d.padding {
            write!(f, "p{}", self.padding)?;
        }
        if self.pool != d.pool {
            write!(f, "q{}", self.pool)?;
        }
        Ok(())
    }
}

/// The shape of a classifier: input width (and, with convolutional stages, the input image's
/// `(height, width, channels)`), convolutional stages, hidden dense widths, classes, hidden
/// activation and L2 weight decay λ. Validated on construction, so a value is always usable,
/// and bounded by [`MAX_SIZE`], so building its network cannot exhaust memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Architecture {
    input: usize,
    image: (usize, usize, usize),
    conv: Vec<ConvStage>,
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
        check_weight_decay(weight_decay)?;
        let a = Architecture {
            input,
            image: (1, input, 1),
            conv: Vec::new(),
            hidden,
            classes,
            activation,
            weight_decay,
        };
        a.check_sizes()?;
        Ok(a)
    }

    /// A convolutional classifier on `(height, width, channels)` images: the stages in order,
    /// then dense hidden layers of widths `hidden`, then a softmax layer of `classes`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] if a size is 0, a stage's kernel does not fit its input
    /// (zero stride, kernel larger than the padded input, pooling larger than the map), there
    /// are fewer than 2 classes, λ is negative or not finite, or a size exceeds [`MAX_SIZE`].
    pub fn new_conv(
        image: (usize, usize, usize),
        conv: Vec<ConvStage>,
        hidden: Vec<usize>,
        classes: usize,
        activation: Activation,
        weight_decay: f32,
    ) -> Result<Self> {
        let (h, w, c) = image;
        if h == 0 || w == 0 || c == 0 {
            return Err(Error::param(
                "image",
                format!("image sizes must be at least 1, got {h} × {w} × {c}"),
            ));
        }
        let input = h
            .checked_mul(w)
            .and_then(|v| v.checked_mul(c))
            .filter(|&v| v <= MAX_SIZE)
            .ok_or_else(|| Error::param("image", format!("{h} × {w} × {c} is too large")))?;
        let mut a = Architecture::new(input, hidden, classes, activation, weight_decay)?;
        a.image = image;
        let mut size = (h, w);
        for (i, stage) in conv.iter().enumerate() {
            if stage.channels == 0 {
                return Err(Error::param("conv", format!("stage {i} has 0 channels")));
            }
            if stage.stride == 0 {
                return Err(Error::param("conv", format!("stage {i} has stride 0")));
            }
            size = stage.output(size).ok_or_else(|| {
                Error::param(
                    "conv",
                    format!(
                        "stage {i} ({}×{} kernel, padding {}, pooling {}) does not fit its \
                         {}×{} input",
                        stage.kernel, stage.kernel, stage.padding, stage.pool, size.0, size.1
                    ),
                )
            })?;
        }
        a.conv = conv;
        a.check_sizes()?;
        Ok(a)
    }

    /// Checks that every layer's parameter count and output width stay below [`MAX_SIZE`].
    fn check_sizes(&self) -> Result<()> {
        let too_big = || {
            Error::param(
                "architecture",
                format!("more than {MAX_SIZE} parameters or values in one layer"),
            )
        };
        let mut size = (self.image.0, self.image.1);
        let mut channels = self.image.2;
        for stage in &self.conv {
            let (ch, cw) = stage.conv_output(size).ok_or_else(too_big)?;
            let params = stage
                .kernel
                .checked_mul(stage.kernel)
                .and_then(|v| v.checked_mul(channels))
                .and_then(|v| v.checked_mul(stage.channels));
            let outputs = ch
                .checked_mul(cw)
                .and_then(|v| v.checked_mul(stage.channels));
            let cols = ch
                .checked_mul(cw)
                .and_then(|v| v.checked_mul(stage.kernel * stage.kernel))
                .and_then(|v| v.checked_mul(channels));
            for v in [params, outputs, cols] {
                if v.is_none_or(|v| v > MAX_SIZE) {
                    return Err(too_big());
                }
            }
            size = stage.output(size).ok_or_else(too_big)?;
            channels = stage.channels;
        }
        for pair in self.widths().windows(2) {
            if pair[0].checked_mul(pair[1]).is_none_or(|v| v > MAX_SIZE) || pair[1] > MAX_SIZE {
                return Err(too_big());
            }
        }
        Ok(())
    }

    /// Parses a paper-style name for inputs of width `input`: `FC` then hidden widths and the
    /// class count joined by `-`, then an optional `(λ)`. Hidden layers are sigmoid, as in the
    /// paper; λ defaults to [`DEFAULT_WEIGHT_DECAY`].
    ///
    /// `CONV` names put convolutional stages (see [`ConvStage`]) before the dense part:
    /// `CONV16-32-FC128-10` is two 5×5 convolution + ReLU + 2×2 max-pooling stages of 16 and 32
    /// channels, a dense ReLU layer of 128 units and 10 classes; the input must then be a
    /// square single-channel image (784 = 28²; see [`Architecture::parse_image`] otherwise).
    ///
    /// ```
    /// use blindspot::nn::Architecture;
    /// let c = Architecture::parse("CONV16-32-FC128-10", 784).unwrap();
    /// assert_eq!(c.conv_shapes(), vec![(14, 14, 16), (7, 7, 32)]);
    /// assert_eq!(c.to_string(), "CONV16-32-FC128-10(1e-5)");
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
        if let Some(rest) = trimmed.strip_prefix("CONV") {
            let side = (input as f64).sqrt().round() as usize;
            if side * side != input {
                return Err(err(&format!(
                    "CONV names need a square single-channel input, and {input} is not a square \
                     (give the image shape with Architecture::parse_image)"
                )));
            }
            return Architecture::parse_conv(name, rest, (side, side, 1));
        }
        let body = trimmed
            .strip_prefix("FC")
            .ok_or_else(|| err("must start with \"FC\" or \"CONV\""))?;
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

    /// Parses a name for inputs that are `(height, width, channels)` images: as
    /// [`Architecture::parse`], but a `CONV` name may have any image shape.
    ///
    /// ```
    /// use blindspot::nn::Architecture;
    /// let a = Architecture::parse_image("CONV8-16k3p1-FC32-10", (32, 32, 3)).unwrap();
    /// assert_eq!(a.input(), 3072);
    /// assert_eq!(a.conv_shapes(), vec![(16, 16, 8), (8, 8, 16)]);
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Architecture::parse`].
    pub fn parse_image(name: &str, image: (usize, usize, usize)) -> Result<Self> {
        let trimmed = name.trim();
        match trimmed.strip_prefix("CONV") {
            Some(rest) => Architecture::parse_conv(name, rest, image),
            None => {
                let input = image
                    .0
                    .checked_mul(image.1)
                    .and_then(|v| v.checked_mul(image.2))
                    .ok_or_else(|| Error::ModelName {
                        name: name.to_string(),
                        reason: format!("image {image:?} is too large"),
                    })?;
                Architecture::parse(name, input)
            }
        }
    }

    /// `CONV` names: convolutional stages joined by `-`, then `FC` and the dense part as in an
    /// `FC` name, e.g. `CONV16-32-FC128-10(1e-5)`; hidden units are ReLU.
    fn parse_conv(name: &str, rest: &str, image: (usize, usize, usize)) -> Result<Self> {
        let err = |reason: String| Error::ModelName {
            name: name.to_string(),
            reason,
        };
        let (stages, dense) = rest
            .split_once("-FC")
            .ok_or_else(|| err("a CONV name continues with \"-FC\" and the dense widths".into()))?;
        let conv = stages
            .split('-')
            .map(|t| parse_stage(t.trim()).map_err(|r| err(format!("stage {t:?}: {r}"))))
            .collect::<Result<Vec<_>>>()?;
        let fc = Architecture::parse(&format!("FC{dense}"), 1).map_err(|e| match e {
            Error::ModelName { reason, .. } => err(reason),
            other => other,
        })?;
        Architecture::new_conv(
            image,
            conv,
            fc.hidden,
            fc.classes,
            Activation::Relu,
            fc.weight_decay,
        )
        .map_err(|e| err(e.to_string()))
    }

    /// The same architecture with another hidden activation.
    pub fn with_activation(mut self, activation: Activation) -> Self {
        self.activation = activation;
        self
    }

    /// The same architecture with weight decay λ = `weight_decay`: how a recipe that carries
    /// its λ as data (the zoo's) sets it instead of writing it into the name.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] (`weight_decay`) if λ is negative or not finite.
    pub fn with_weight_decay(mut self, weight_decay: f32) -> Result<Self> {
        check_weight_decay(weight_decay)?;
        self.weight_decay = weight_decay;
        Ok(self)
    }

    /// Input width.
    pub fn input(&self) -> usize {
        self.input
    }
    /// The input image `(height, width, channels)`; `(1, input, 1)` for a dense network.
    pub fn image(&self) -> (usize, usize, usize) {
        self.image
    }
    /// The convolutional stages, first to last (empty for a dense network).
    pub fn conv_stages(&self) -> &[ConvStage] {
        &self.conv
    }
    /// Whether the network has convolutional stages.
    pub fn is_conv(&self) -> bool {
        !self.conv.is_empty()
    }
    /// The `(height, width, channels)` of each convolutional stage's output, first to last.
    pub fn conv_shapes(&self) -> Vec<(usize, usize, usize)> {
        let mut size = (self.image.0, self.image.1);
        self.conv
            .iter()
            .map(|s| {
                // Checked at construction: every stage fits.
                size = s.output(size).unwrap_or((0, 0));
                (size.0, size.1, s.channels)
            })
            .collect()
    }
    /// Width of the dense part's input: the input width, or the flattened last stage output.
    pub fn dense_input(&self) -> usize {
        match self.conv_shapes().last() {
            Some(&(h, w, c)) => h * w * c,
            None => self.input,
        }
    }
    /// Hidden dense layer widths, first to last.
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
    /// The dense layers' widths including their input and the output:
    /// `[dense_input, hidden.., classes]` (`dense_input` is the input width of a dense network).
    pub fn widths(&self) -> Vec<usize> {
        let mut w = Vec::with_capacity(self.hidden.len() + 2);
        w.push(self.dense_input());
        w.extend_from_slice(&self.hidden);
        w.push(self.classes);
        w
    }
}

impl fmt::Display for Architecture {
    /// The paper's name with λ always given, e.g. `FC100-100-10(1e-5)`; it parses back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.conv.is_empty() {
            write!(f, "CONV")?;
            for s in &self.conv {
                write!(f, "{s}-")?;
            }
        }
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

/// λ must be finite and non-negative.
fn check_weight_decay(weight_decay: f32) -> Result<()> {
    check_non_negative("weight_decay", weight_decay)
}

/// One stage token of a `CONV` name: channels, then optional `k`, `s`, `p`, `q` values.
fn parse_stage(token: &str) -> std::result::Result<ConvStage, String> {
    let digits = token
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(token.len());
    let channels: usize = token[..digits]
        .parse()
        .map_err(|_| "must start with a channel count".to_string())?;
    let mut stage = ConvStage::new(channels);
    let mut rest = &token[digits..];
    while let Some(key) = rest.chars().next() {
        let body = &rest[1..];
        let end = body
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(body.len());
        let value: usize = body[..end]
            .parse()
            .map_err(|_| format!("`{key}` needs a number"))?;
        match key {
            'k' => stage.kernel = value,
            's' => stage.stride = value,
            'p' => stage.padding = value,
            'q' => stage.pool = value,
            _ => return Err(format!("unknown option `{key}` (k, s, p, q)")),
        }
        rest = &body[end..];
    }
    Ok(stage)
}
