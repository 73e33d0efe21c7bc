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
    /// if the kernel does not fit in the padded input (or the padded size overflows `usize`).
    pub fn conv_output(&self, (h, w): (usize, usize)) -> Option<(usize, usize)> {
        let pad = self.padding.checked_mul(2)?;
        let ph = h.checked_add(pad)?;
        let pw = w.checked_add(pad)?;
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

    /// The stage's shapes on an `input` of `(height, width, channels)`, every value checked:
    /// each setting in `1..=`[`MAX_SIZE`] (padding in `0..kernel`), the kernel within the
    /// padded input, the pooling within the map, and the kernel, the output map and one
    /// example's unfolded input (im2col) each at most [`MAX_SIZE`] values. `stage` is the
    /// stage's index, for the error.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] named after the setting that is wrong (`channels`,
    /// `kernel`, `stride`, `padding`, `pool`; `conv` for sizes that only together are too
    /// large), saying the stage, the value and the limit it breaks.
    fn shape(&self, stage: usize, input: (usize, usize, usize)) -> Result<StageShape> {
        let (h, w, c) = input;
        let at = |name: &'static str, reason: String| {
            Error::param(name, format!("stage {stage} ({self}): {reason}"))
        };
        for (name, v, min) in [
            ("channels", self.channels, 1),
            ("kernel", self.kernel, 1),
            ("stride", self.stride, 1),
            ("pool", self.pool, 1),
            ("padding", self.padding, 0),
        ] {
            if v < min || v > MAX_SIZE {
                return Err(at(
                    name,
                    format!("{name} {v} is outside {min}..={MAX_SIZE}"),
                ));
            }
        }
        // A padding of a whole kernel or more only adds output positions whose window lies
        // wholly in the zeros, and im2col's window arithmetic assumes that never happens.
        if self.padding >= self.kernel {
            return Err(at(
                "padding",
                format!(
                    "padding {} must be below the kernel size {}",
                    self.padding, self.kernel
                ),
            ));
        }
        // Settings and sides are at most MAX_SIZE, so this fits a 64-bit usize; checked for
        // narrower targets.
        let too_large = || at("conv", format!("{h}×{w}×{c} input: sizes overflow"));
        let pad = self.padding.checked_mul(2).ok_or_else(too_large)?;
        let (ph, pw) = (
            h.checked_add(pad).ok_or_else(too_large)?,
            w.checked_add(pad).ok_or_else(too_large)?,
        );
        if self.kernel > ph || self.kernel > pw {
            return Err(at(
                "kernel",
                format!(
                    "{k}×{k} kernel does not fit the {h}×{w} input padded by {p} ({ph}×{pw})",
                    k = self.kernel,
                    p = self.padding
                ),
            ));
        }
        let conv = (
            (ph - self.kernel) / self.stride + 1,
            (pw - self.kernel) / self.stride + 1,
        );
        if self.pool > conv.0 || self.pool > conv.1 {
            return Err(at(
                "pool",
                format!(
                    "{q}×{q} pooling does not fit the {}×{} map",
                    conv.0,
                    conv.1,
                    q = self.pool
                ),
            ));
        }
        let product = |vs: &[usize]| {
            vs.iter()
                .try_fold(1usize, |a, &v| a.checked_mul(v))
                .filter(|&v| v <= MAX_SIZE)
        };
        let (k, d) = (self.kernel, self.channels);
        for (what, vs) in [
            ("kernel", &[k, k, c, d][..]),
            ("output map", &[conv.0, conv.1, d]),
            ("unfolded input", &[conv.0, conv.1, k, k, c]),
        ] {
            if product(vs).is_none() {
                return Err(at(
                    "conv",
                    format!("its {what} has more than {MAX_SIZE} values"),
                ));
            }
        }
        Ok(StageShape {
            input,
            conv,
            output: (conv.0 / self.pool, conv.1 / self.pool, self.channels),
        })
    }
}

/// The checked shapes of one convolutional stage, computed once by [`Architecture::new_conv`]
/// so that nothing later recomputes (or trusts) them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StageShape {
    /// Input `(height, width, channels)`.
    pub(crate) input: (usize, usize, usize),
    /// The convolution's output `(height, width)`, before pooling.
    pub(crate) conv: (usize, usize),
    /// The stage's output `(height, width, channels)`, after pooling.
    pub(crate) output: (usize, usize, usize),
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
    /// Each stage's checked shapes, in order (derived from `image` and `conv`).
    shapes: Vec<StageShape>,
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
            shapes: Vec::new(),
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
    /// (zero stride, kernel larger than the padded input, padding not below the kernel size,
    /// pooling larger than the map), there are fewer than 2 classes, λ is negative or not
    /// finite, or a size exceeds [`MAX_SIZE`]; a stage's error is named after the setting
    /// that is wrong (`kernel`, `stride`, `padding`, `pool`, `channels`) and gives the stage.
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
        let mut shape = image;
        for (i, stage) in conv.iter().enumerate() {
            let s = stage.shape(i, shape)?;
            shape = s.output;
            a.shapes.push(s);
        }
        a.conv = conv;
        a.check_sizes()?;
        Ok(a)
    }

    /// Checks that every dense layer's parameter count and output width stay below
    /// [`MAX_SIZE`] (the stages' sizes are checked by [`ConvStage::shape`]).
    fn check_sizes(&self) -> Result<()> {
        let too_big = || {
            Error::param(
                "architecture",
                format!("more than {MAX_SIZE} parameters or values in one layer"),
            )
        };
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
            if side.checked_mul(side) != Some(input) {
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
    pub fn try_with_weight_decay(mut self, weight_decay: f32) -> Result<Self> {
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
        self.shapes.iter().map(|s| s.output).collect()
    }
    /// Each stage's checked shapes, first to last.
    pub(crate) fn stage_shapes(&self) -> &[StageShape] {
        &self.shapes
    }
    /// The same dense architecture on inputs that are `(height, width, channels)` images (a
    /// network with no convolutional stage keeps the image shape it was built with, so that
    /// a saved one loads back equal).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] (`image`) if the architecture has convolutional stages
    /// (whose shapes depend on the image) or `h·w·c` is not the input width.
    pub(crate) fn with_dense_image(mut self, image: (usize, usize, usize)) -> Result<Self> {
        let (h, w, c) = image;
        let size = h.checked_mul(w).and_then(|v| v.checked_mul(c));
        if self.is_conv() || size != Some(self.input) {
            return Err(Error::param(
                "image",
                format!(
                    "image {h} × {w} × {c} does not fit a dense architecture of input width {}",
                    self.input
                ),
            ));
        }
        self.image = image;
        Ok(self)
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
/// Walks characters, not bytes: a name is arbitrary text (a file's header, a user's typo with
/// `é` or a full-width digit), and only ASCII digits are digits here.
fn parse_stage(token: &str) -> std::result::Result<ConvStage, String> {
    let (channels, mut rest) = split_number(token);
    let channels: usize = channels
        .parse()
        .map_err(|_| "must start with a channel count".to_string())?;
    let mut stage = ConvStage::new(channels);
    while let Some(key) = rest.chars().next() {
        let (digits, after) = split_number(&rest[key.len_utf8()..]);
        let value: usize = digits
            .parse()
            .map_err(|_| format!("`{key}` needs a number"))?;
        match key {
            'k' => stage.kernel = value,
            's' => stage.stride = value,
            'p' => stage.padding = value,
            'q' => stage.pool = value,
            _ => return Err(format!("unknown option `{key}` (k, s, p, q)")),
        }
        rest = after;
    }
    Ok(stage)
}

/// The leading ASCII digits of `s` and the rest (split at a character boundary, since an
/// ASCII digit is one byte).
fn split_number(s: &str) -> (&str, &str) {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    s.split_at(end)
}
