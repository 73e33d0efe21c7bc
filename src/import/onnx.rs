//! ONNX classifiers imported into the crate's own [`Network`], so attacks run on them at the
//! speed of the hand-written kernels.
//!
//! The graph must be a chain of the layers a feed-forward classifier is made of (see
//! [`SUPPORTED`]): input normalisation by constants (`Sub`/`Div`/`Mul`/`Add` at the input,
//! kept as an [`InputAffine`] so the attack's box stays the user's pixels), convolutions with
//! any stride and padding, max-pooling, one kind of activation, flattening, dense layers
//! (`Gemm`, or `MatMul` + `Add`), `BatchNormalization` (folded into the layer before it) and
//! `Dropout`/`Identity` (dropped). Images arrive as NCHW tensors and convolution kernels as
//! OIHW; the network takes channels-last rows (HWC, see [`Layer`](crate::nn::Layer)) and
//! holds `(k·k·C) × D` kernels, and the first dense layer after a flatten is permuted to
//! match, so the imported network computes the same function on the same pixels.
//!
//! When the file carries a reference batch (initializers `reference_inputs` and
//! `reference_logits`, written by `scripts/make_onnx_fixtures.py` and
//! `scripts/export_onnx.py`), the import is checked against it: a network that disagrees with
//! its framework is an [`Error::Disagreement`], not a silent mismatch.
//!
//! ```no_run
//! use blindspot::import::onnx;
//! use blindspot::Classifier;
//!
//! let model = onnx::load("convnet.onnx")?;
//! println!("{} inputs, verified: {:?}", model.network.input_dim(), model.verified);
//! # Ok::<(), blindspot::Error>(())
//! ```

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use ndarray::{Array2, ArrayView2};
use prost::Message;

use crate::error::{Error, Result};
use crate::import::onnx_proto::{dtype, AttributeProto, ModelProto, NodeProto, TensorProto};
use crate::import::{verify, Agreement};
use crate::nn::{Activation, Architecture, ConvStage, InputAffine, Network, MAX_SIZE};
use crate::params::{Check, Checked};

/// The operations an ONNX graph may use.
pub const SUPPORTED: &[&str] = &[
    "Gemm",
    "MatMul",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Conv",
    "MaxPool",
    "Relu",
    "Sigmoid",
    "Tanh",
    "Flatten",
    "Reshape",
    "BatchNormalization",
    "Dropout",
    "Identity",
    "Constant",
];

/// Largest file read (protobuf's own limit is 2 GiB).
const MAX_FILE: u64 = 1 << 31;

/// Names of the reference batch's initializers.
pub const REFERENCE_INPUTS: &str = "reference_inputs";
/// See [`REFERENCE_INPUTS`].
pub const REFERENCE_LOGITS: &str = "reference_logits";

/// Largest absolute logit difference an import may show on its reference batch, by default.
pub const DEFAULT_TOLERANCE: f32 = 1e-3;

/// How an import is checked against the file's reference batch, as given;
/// [`OnnxParams::check`](Check::check) validates it into an [`OnnxConfig`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OnnxParams {
    /// Largest absolute logit difference accepted.
    pub tolerance: f32,
    /// Skip the check even when the file has a reference batch.
    pub skip_verification: bool,
}

impl Default for OnnxParams {
    fn default() -> Self {
        OnnxParams {
            tolerance: DEFAULT_TOLERANCE,
            skip_verification: false,
        }
    }
}

impl OnnxParams {
    /// Sets [`OnnxParams::tolerance`].
    pub fn with_tolerance(mut self, tolerance: f32) -> Self {
        self.tolerance = tolerance;
        self
    }

    /// Sets [`OnnxParams::skip_verification`].
    pub fn with_skip_verification(mut self, skip: bool) -> Self {
        self.skip_verification = skip;
        self
    }
}

impl Check for OnnxParams {
    type Checked = OnnxConfig;

    /// Validates the tolerance once.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] named `tolerance` if it is negative or not finite.
    fn check(self) -> Result<OnnxConfig> {
        if !self.tolerance.is_finite() || self.tolerance < 0.0 {
            return Err(Error::param(
                "tolerance",
                format!("must be finite and non-negative, got {}", self.tolerance),
            ));
        }
        Ok(Checked::assume_valid(self))
    }
}

/// Checked [`OnnxParams`] (from [`OnnxParams::check`](Check::check)).
pub type OnnxConfig = Checked<OnnxParams>;

impl Default for Checked<OnnxParams> {
    /// The default settings (valid constants, as a test checks).
    fn default() -> Self {
        Checked::assume_valid(OnnxParams::default())
    }
}

/// An imported model.
#[derive(Debug, Clone)]
pub struct OnnxModel {
    /// The network, taking channels-last rows.
    pub network: Network,
    /// The input image `(height, width, channels)` when the model's input is an NCHW image.
    pub image: Option<(usize, usize, usize)>,
    /// The file's reference batch, inputs already as the network's rows, when it has one.
    pub reference: Option<(Array2<f32>, Array2<f32>)>,
    /// The agreement with the reference batch, when it was checked.
    pub verified: Option<Agreement>,
}

/// Imports `path` and checks it against its reference batch, if it has one, at
/// [`DEFAULT_TOLERANCE`].
///
/// # Errors
///
/// As [`load_with`].
pub fn load(path: impl AsRef<Path>) -> Result<OnnxModel> {
    load_with(path, &OnnxConfig::default())
}

/// Imports `path` with the given verification settings.
///
/// # Errors
///
/// [`Error::Io`] if unreadable; [`Error::NotRegularFile`] for a FIFO, device or directory;
/// [`Error::ModelFile`] if it is not an ONNX model (malformed
/// protobuf, missing graph, unreadable tensor); [`Error::UnsupportedOp`] naming the first
/// node outside [`SUPPORTED`] (or using one in a way the network cannot hold);
/// [`Error::ImportGraph`] naming the edge where the graph does not chain (dangling, cyclic or
/// branching edges, shapes that do not fit); [`Error::Disagreement`] if the network's logits
/// differ from the reference by more than the tolerance.
pub fn load_with(path: impl AsRef<Path>, params: &OnnxConfig) -> Result<OnnxModel> {
    use std::io::Read;
    let path = path.as_ref();
    // Only a regular file: a FIFO would block the read forever.
    let file = crate::io::open_regular(path)?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    if len > MAX_FILE {
        return Err(Error::ModelFile {
            path: path.to_path_buf(),
            problem: format!("{len} bytes is larger than an ONNX file can be"),
        });
    }
    // The length just checked bounds the read even if the file grows meanwhile.
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(MAX_FILE)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    from_bytes(&bytes, path, params)
}

/// Imports a model held in memory; `path` only names it in errors.
///
/// # Errors
///
/// As [`load_with`].
pub fn from_bytes(bytes: &[u8], path: &Path, params: &OnnxConfig) -> Result<OnnxModel> {
    let model = ModelProto::decode(bytes).map_err(|e| Error::ModelFile {
        path: path.to_path_buf(),
        problem: format!("not an ONNX model: {e}"),
    })?;
    from_proto(&model, path, params)
}

/// Imports a decoded model (the `.npz` road builds one), then verifies it as [`from_bytes`].
pub(crate) fn from_proto(
    model: &ModelProto,
    path: &Path,
    params: &OnnxConfig,
) -> Result<OnnxModel> {
    let mut model = Importer::new(path).import(model)?;
    if let (Some((x, z)), false) = (&model.reference, params.skip_verification) {
        model.verified = Some(verify(
            &model.network,
            x.view(),
            z.view(),
            params.tolerance,
        )?);
    }
    Ok(model)
}

/// The running tensor's shape, per example.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Shape {
    /// `C × H × W` (NCHW without the batch).
    Image(usize, usize, usize),
    /// A vector; `from` is the image it was flattened from (in CHW order).
    Flat(usize, Option<(usize, usize, usize)>),
}

impl Shape {
    fn width(self) -> usize {
        match self {
            Shape::Image(c, h, w) => c * h * w,
            Shape::Flat(d, _) => d,
        }
    }
}

/// One layer of the imported chain, in the crate's layouts.
#[derive(Debug, Clone)]
enum Op {
    Affine(Vec<f32>, Vec<f32>),
    Conv {
        weight: Array2<f32>,
        bias: Vec<f32>,
        stage: ConvStage,
    },
    Pool(usize),
    Act(Activation, String),
    Dense {
        weight: Array2<f32>,
        bias: Vec<f32>,
    },
}

/// A constant tensor: dims and values (floats converted to `f32`, integers kept).
#[derive(Debug, Clone)]
struct Tensor {
    dims: Vec<usize>,
    data: Data,
}

#[derive(Debug, Clone)]
enum Data {
    F32(Vec<f32>),
    I64(Vec<i64>),
    Other(i32),
}

struct Importer {
    path: PathBuf,
    consts: HashMap<String, Tensor>,
}

fn node_name(node: &NodeProto) -> String {
    match &node.name {
        Some(n) if !n.is_empty() => n.clone(),
        _ => node.output.first().cloned().unwrap_or_default(),
    }
}

fn attr<'a>(node: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    node.attribute
        .iter()
        .find(|a| a.name.as_deref() == Some(name))
}

fn attr_int(node: &NodeProto, name: &str, default: i64) -> i64 {
    attr(node, name).and_then(|a| a.i).unwrap_or(default)
}

fn attr_float(node: &NodeProto, name: &str, default: f32) -> f32 {
    attr(node, name).and_then(|a| a.f).unwrap_or(default)
}

fn attr_ints(node: &NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(node, name).map(|a| a.ints.clone())
}

fn is_act(op: &Op) -> bool {
    matches!(op, Op::Act(..))
}

impl Importer {
    fn new(path: &Path) -> Self {
        Importer {
            path: path.to_path_buf(),
            consts: HashMap::new(),
        }
    }

    fn file_error(&self, problem: String) -> Error {
        Error::ModelFile {
            path: self.path.clone(),
            problem,
        }
    }

    fn graph_error(&self, edge: &str, problem: impl Into<String>) -> Error {
        Error::ImportGraph {
            path: self.path.clone(),
            edge: edge.to_string(),
            problem: problem.into(),
        }
    }

    fn unsupported(&self, node: &NodeProto, why: &str) -> Error {
        let op = node.op_type.clone().unwrap_or_default();
        Error::UnsupportedOp {
            path: self.path.clone(),
            node: node_name(node),
            op: if why.is_empty() {
                op
            } else {
                format!("{op} ({why})")
            },
            supported: SUPPORTED.join(", "),
        }
    }

    /// Reads a tensor, checking its claimed dims against the data really there before
    /// allocating anything.
    fn tensor(&self, t: &TensorProto) -> Result<Tensor> {
        let name = t.name.clone().unwrap_or_default();
        let bad = |p: String| self.file_error(format!("tensor `{name}`: {p}"));
        if t.data_location == Some(1) {
            return Err(bad(
                "its data is in an external file, which is not read".into()
            ));
        }
        let mut count: usize = 1;
        let mut dims = Vec::with_capacity(t.dims.len());
        for &d in &t.dims {
            let d = usize::try_from(d).map_err(|_| bad(format!("negative dimension {d}")))?;
            count = count
                .checked_mul(d)
                .filter(|&c| c <= MAX_SIZE)
                .ok_or_else(|| bad(format!("dims {:?} are too large", t.dims)))?;
            dims.push(d);
        }
        let dt = t.data_type.unwrap_or(0);
        let raw = t.raw_data.as_deref();
        let width = match dt {
            dtype::FLOAT | dtype::INT32 => 4,
            dtype::INT64 | dtype::DOUBLE => 8,
            other => {
                return Ok(Tensor {
                    dims,
                    data: Data::Other(other),
                })
            }
        };
        let have = match raw {
            Some(r) => r.len() / width,
            None => match dt {
                dtype::FLOAT => t.float_data.len(),
                dtype::INT32 => t.int32_data.len(),
                dtype::INT64 => t.int64_data.len(),
                _ => t.double_data.len(),
            },
        };
        if have != count || raw.is_some_and(|r| r.len() % width != 0) {
            return Err(bad(format!(
                "dims {:?} claim {count} values, the data holds {have}",
                t.dims
            )));
        }
        let data = match (dt, raw) {
            (dtype::FLOAT, Some(r)) => Data::F32(
                r.chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
            ),
            (dtype::FLOAT, None) => Data::F32(t.float_data.clone()),
            (dtype::DOUBLE, Some(r)) => Data::F32(
                r.chunks_exact(8)
                    .map(|b| {
                        f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32
                    })
                    .collect(),
            ),
            (dtype::DOUBLE, None) => Data::F32(t.double_data.iter().map(|&v| v as f32).collect()),
            (dtype::INT64, Some(r)) => Data::I64(
                r.chunks_exact(8)
                    .map(|b| i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
                    .collect(),
            ),
            (dtype::INT64, None) => Data::I64(t.int64_data.clone()),
            (_, Some(r)) => Data::I64(
                r.chunks_exact(4)
                    .map(|b| i64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])))
                    .collect(),
            ),
            (_, None) => Data::I64(t.int32_data.iter().map(|&v| i64::from(v)).collect()),
        };
        Ok(Tensor { dims, data })
    }

    /// The float constant `name`, finite.
    fn floats(&self, node: &NodeProto, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let t = self.consts.get(name).ok_or_else(|| {
            self.graph_error(
                name,
                format!(
                    "node {:?} needs `{name}` to be a constant (an initializer)",
                    node_name(node)
                ),
            )
        })?;
        match &t.data {
            Data::F32(v) => {
                if v.iter().any(|x| !x.is_finite()) {
                    return Err(self.file_error(format!("tensor `{name}` holds a NaN or infinity")));
                }
                Ok((t.dims.clone(), v.clone()))
            }
            Data::I64(_) => Err(self.file_error(format!(
                "tensor `{name}` is an integer array where node {:?} needs floats",
                node_name(node)
            ))),
            Data::Other(dt) => Err(self.file_error(format!(
                "tensor `{name}` has ONNX data type {dt}; only float32, float64 and integers \
                 are read"
            ))),
        }
    }

    /// A constant operand of an element-wise op on a tensor of shape `shape`, reduced to one
    /// value per channel (per feature for vectors).
    fn per_channel(&self, node: &NodeProto, name: &str, shape: Shape) -> Result<Vec<f32>> {
        self.channel_values(node, name, shape, false)
    }

    /// As [`Importer::per_channel`]; with `vector`, a plain `[C]` vector is per channel too
    /// (BatchNormalization's parameters), where broadcasting would put it on the last axis.
    fn channel_values(
        &self,
        node: &NodeProto,
        name: &str,
        shape: Shape,
        vector: bool,
    ) -> Result<Vec<f32>> {
        let (dims, v) = self.floats(node, name)?;
        let (channels, spatial) = match shape {
            Shape::Image(c, h, w) => (c, h * w),
            Shape::Flat(d, _) => (d, 1),
        };
        let significant: Vec<usize> = dims.iter().copied().filter(|&d| d != 1).collect();
        let ok = match shape {
            _ if v.len() == 1 => true,
            Shape::Image(..) if vector => dims == [channels],
            Shape::Image(..) => {
                significant == [channels]
                    && (dims.len() < 3 || dims[dims.len() - 3] == channels)
                    && dims.len() >= 3
            }
            Shape::Flat(..) => significant == [channels] && dims.last() == Some(&channels),
        };
        if !ok {
            return Err(self.unsupported(
                node,
                &format!(
                    "constant `{name}` of shape {dims:?} is not one value per channel of a \
                     {channels}-channel tensor{}",
                    if spatial > 1 {
                        " (per-pixel constants are not)"
                    } else {
                        ""
                    }
                ),
            ));
        }
        Ok(if v.len() == 1 {
            vec![v[0]; channels]
        } else {
            v
        })
    }

    fn import(mut self, model: &ModelProto) -> Result<OnnxModel> {
        let graph = model
            .graph
            .as_ref()
            .ok_or_else(|| self.file_error("no graph".into()))?;
        for t in &graph.initializer {
            let name = t.name.clone().unwrap_or_default();
            let tensor = self.tensor(t)?;
            self.consts.insert(name, tensor);
        }
        // The one graph input that is not a constant is the image or vector.
        let inputs: Vec<_> = graph
            .input
            .iter()
            .filter(|i| !self.consts.contains_key(i.name.as_deref().unwrap_or("")))
            .collect();
        let [input] = inputs.as_slice() else {
            return Err(self.graph_error(
                "graph inputs",
                format!(
                    "{} non-constant inputs, the network takes one",
                    inputs.len()
                ),
            ));
        };
        let input_name = input.name.clone().unwrap_or_default();
        let dims: Vec<Option<usize>> = input
            .r#type
            .as_ref()
            .and_then(|t| t.tensor_type.as_ref())
            .and_then(|t| t.shape.as_ref())
            .map(|s| {
                s.dim
                    .iter()
                    .map(|d| d.dim_value.and_then(|v| usize::try_from(v).ok()))
                    .collect()
            })
            .unwrap_or_default();
        let known = |d: &Option<usize>| d.filter(|&v| v > 0 && v <= MAX_SIZE);
        let mut shape = match dims.as_slice() {
            [_, c, h, w] => match (known(c), known(h), known(w)) {
                (Some(c), Some(h), Some(w)) => Shape::Image(c, h, w),
                _ => {
                    return Err(self.graph_error(
                        &input_name,
                        format!("input dims {dims:?} are not all known"),
                    ))
                }
            },
            [_, d] => match known(d) {
                Some(d) => Shape::Flat(d, None),
                None => {
                    return Err(self.graph_error(
                        &input_name,
                        format!("input dims {dims:?} are not all known"),
                    ))
                }
            },
            _ => {
                return Err(self.graph_error(
                    &input_name,
                    format!(
                        "input of rank {} (N × C × H × W or N × D expected)",
                        dims.len()
                    ),
                ))
            }
        };
        if shape.width() > MAX_SIZE {
            return Err(self.graph_error(&input_name, "input is too large"));
        }
        let first_shape = shape;
        let mut current = input_name.clone();
        let mut seen: HashSet<String> = HashSet::from([input_name.clone()]);
        let mut ops: Vec<Op> = Vec::new();
        for node in &graph.node {
            let op_type = node.op_type.as_deref().unwrap_or("");
            if node
                .domain
                .as_deref()
                .is_some_and(|d| !d.is_empty() && d != "ai.onnx")
            {
                return Err(self.unsupported(node, "a custom domain"));
            }
            if op_type == "Constant" {
                let t = attr(node, "value")
                    .and_then(|a| a.t.as_ref())
                    .ok_or_else(|| self.unsupported(node, "only tensor-valued constants"))?;
                let t = self.tensor(t)?;
                for o in &node.output {
                    self.consts.insert(o.clone(), t.clone());
                }
                continue;
            }
            // Exactly one input must be the running tensor; the others constants.
            let mut main = None;
            for (k, name) in node.input.iter().enumerate() {
                if name.is_empty() || self.consts.contains_key(name) {
                    continue;
                }
                if *name != current {
                    let problem = if seen.contains(name) {
                        format!(
                            "node {:?} reads `{name}`, an earlier value than the last layer's \
                             output `{current}`: the graph branches, the network is a chain",
                            node_name(node)
                        )
                    } else {
                        format!(
                            "node {:?} reads `{name}`, which no earlier node or initializer \
                             produces (a dangling or cyclic edge)",
                            node_name(node)
                        )
                    };
                    return Err(self.graph_error(name, problem));
                }
                if main.is_some() {
                    return Err(self.unsupported(node, "reads the running tensor twice"));
                }
                main = Some(k);
            }
            let Some(main) = main else {
                return Err(self.unsupported(node, "computes on constants only"));
            };
            let out = node
                .output
                .first()
                .filter(|o| !o.is_empty())
                .ok_or_else(|| self.graph_error(&current, "a node without an output"))?
                .clone();
            if seen.contains(&out) || self.consts.contains_key(&out) {
                return Err(self.graph_error(&out, "written twice (a cycle or a reused name)"));
            }
            shape = self.node(node, op_type, main, shape, &mut ops)?;
            seen.insert(out.clone());
            current = out;
        }
        let output = graph
            .output
            .first()
            .and_then(|o| o.name.clone())
            .unwrap_or_default();
        if output != current {
            return Err(self.graph_error(
                &output,
                format!("the graph's output is not the end of the chain `{current}`"),
            ));
        }
        let network = self.assemble(first_shape, ops, &output)?;
        let image = match first_shape {
            Shape::Image(c, h, w) => Some((h, w, c)),
            Shape::Flat(..) => None,
        };
        let reference = self.reference(first_shape, &network)?;
        Ok(OnnxModel {
            network,
            image,
            reference,
            verified: None,
        })
    }

    /// The reference batch, inputs turned into the network's rows.
    fn reference(
        &self,
        shape: Shape,
        network: &Network,
    ) -> Result<Option<(Array2<f32>, Array2<f32>)>> {
        let (Some(x), Some(z)) = (
            self.consts.get(REFERENCE_INPUTS),
            self.consts.get(REFERENCE_LOGITS),
        ) else {
            return Ok(None);
        };
        let (Data::F32(xv), Data::F32(zv)) = (&x.data, &z.data) else {
            return Err(self.file_error("the reference batch is not float".into()));
        };
        let width = shape.width();
        let n = x.dims.first().copied().unwrap_or(0);
        let classes = crate::Classifier::num_classes(network);
        if n == 0 || xv.len() != n * width || zv.len() != n * classes {
            return Err(self.file_error(format!(
                "reference batch of dims {:?} and {:?} does not fit inputs of {width} values and \
                 {classes} classes",
                x.dims, z.dims
            )));
        }
        let xs = Array2::from_shape_vec((n, width), xv.clone()).expect("length checked");
        let zs = Array2::from_shape_vec((n, classes), zv.clone()).expect("length checked");
        let xs = match shape {
            Shape::Image(c, h, w) => nchw_to_rows(xs.view(), (c, h, w)),
            Shape::Flat(..) => xs,
        };
        Ok(Some((xs, zs)))
    }

    /// Applies one node to the chain, returning the new shape.
    fn node(
        &self,
        node: &NodeProto,
        op_type: &str,
        main: usize,
        shape: Shape,
        ops: &mut Vec<Op>,
    ) -> Result<Shape> {
        let input = |k: usize| node.input.get(k).map(String::as_str).unwrap_or("");
        match op_type {
            "Identity" | "Dropout" => Ok(shape),
            "Relu" | "Sigmoid" | "Tanh" => {
                let act = match op_type {
                    "Relu" => Activation::Relu,
                    "Sigmoid" => Activation::Sigmoid,
                    _ => Activation::Tanh,
                };
                ops.push(Op::Act(act, node_name(node)));
                Ok(shape)
            }
            "Flatten" => {
                if attr_int(node, "axis", 1) != 1 {
                    return Err(self.unsupported(node, "axis other than 1"));
                }
                Ok(flatten(shape))
            }
            "Reshape" => {
                let target = self.consts.get(input(1)).and_then(|t| match &t.data {
                    Data::I64(v) => Some(v.clone()),
                    _ => None,
                });
                let Some(target) = target else {
                    return Err(self.unsupported(node, "shape not a constant integer tensor"));
                };
                let width = shape.width() as i64;
                match target.as_slice() {
                    [_, d] if *d == width || *d == -1 => Ok(flatten(shape)),
                    [_, c, h, w] if matches!(shape, Shape::Flat(_, None)) && ops.is_empty() => {
                        let (c, h, w) = (*c, *h, *w);
                        if c == 1 && h > 0 && w > 0 && h * w == width {
                            Ok(Shape::Image(1, h as usize, w as usize))
                        } else {
                            Err(self
                                .unsupported(node, "reshape of the input other than to 1 × H × W"))
                        }
                    }
                    _ => Err(self.unsupported(
                        node,
                        &format!("reshape to {target:?}; only flattening to N × {width}"),
                    )),
                }
            }
            "Add" | "Sub" | "Mul" | "Div" => {
                let other = input(1 - main.min(1));
                let c = self.per_channel(node, other, shape)?;
                // y = x·a + b, per channel.
                let (a, b): (Vec<f32>, Vec<f32>) = match (op_type, main) {
                    ("Add", _) => (vec![1.0; c.len()], c),
                    ("Sub", 0) => (vec![1.0; c.len()], c.iter().map(|v| -v).collect()),
                    ("Sub", _) => (vec![-1.0; c.len()], c),
                    ("Mul", _) => (c.clone(), vec![0.0; c.len()]),
                    ("Div", 0) => (c.iter().map(|v| 1.0 / v).collect(), vec![0.0; c.len()]),
                    _ => return Err(self.unsupported(node, "division by the running tensor")),
                };
                self.affine(node, &a, &b, ops)?;
                Ok(shape)
            }
            "BatchNormalization" => {
                if attr_int(node, "training_mode", 0) != 0 {
                    return Err(self.unsupported(node, "training mode"));
                }
                let eps = attr_float(node, "epsilon", 1e-5);
                let mut vals = Vec::new();
                for k in 1..5 {
                    vals.push(self.channel_values(node, input(k), shape, true)?);
                }
                let (gamma, beta, mean, var) = (&vals[0], &vals[1], &vals[2], &vals[3]);
                let a: Vec<f32> = gamma
                    .iter()
                    .zip(var)
                    .map(|(g, v)| g / (v + eps).sqrt())
                    .collect();
                let b: Vec<f32> = beta
                    .iter()
                    .zip(mean)
                    .zip(&a)
                    .map(|((be, m), a)| be - m * a)
                    .collect();
                self.affine(node, &a, &b, ops)?;
                Ok(shape)
            }
            "Conv" => self.conv(node, shape, ops),
            "MaxPool" => {
                let Shape::Image(c, h, w) = shape else {
                    return Err(self.unsupported(node, "pooling a vector"));
                };
                let k = attr_ints(node, "kernel_shape").unwrap_or_default();
                let s = attr_ints(node, "strides").unwrap_or_else(|| vec![1, 1]);
                let pads = attr_ints(node, "pads").unwrap_or_default();
                let dil = attr_ints(node, "dilations").unwrap_or_default();
                let q = match k.as_slice() {
                    [a, b] if a == b && *a >= 1 && s == k => *a as usize,
                    _ => {
                        return Err(self.unsupported(
                            node,
                            "only square windows with stride equal to the window",
                        ))
                    }
                };
                if pads.iter().any(|&p| p != 0) || dil.iter().any(|&d| d != 1) {
                    return Err(self.unsupported(node, "padding or dilation"));
                }
                if attr_int(node, "ceil_mode", 0) != 0 && (h % q != 0 || w % q != 0) {
                    return Err(
                        self.unsupported(node, "ceil_mode on a map the window does not tile")
                    );
                }
                if q > h || q > w {
                    return Err(self.graph_error(
                        &node_name(node),
                        format!("a {q}×{q} window does not fit the {h}×{w} map"),
                    ));
                }
                ops.push(Op::Pool(q));
                Ok(Shape::Image(c, h / q, w / q))
            }
            "Gemm" | "MatMul" => self.dense(node, op_type, main, shape, ops),
            _ => Err(self.unsupported(node, "")),
        }
    }

    /// Folds `y = x·a + b` (per channel) into the layer before, or the input normalisation.
    fn affine(&self, node: &NodeProto, a: &[f32], b: &[f32], ops: &mut Vec<Op>) -> Result<()> {
        match ops.last_mut() {
            None => {
                ops.push(Op::Affine(a.to_vec(), b.to_vec()));
            }
            Some(Op::Affine(s, t)) if s.len() == a.len() => {
                for k in 0..a.len() {
                    s[k] *= a[k];
                    t[k] = t[k] * a[k] + b[k];
                }
            }
            Some(Op::Conv { weight, bias, .. }) | Some(Op::Dense { weight, bias })
                if bias.len() == a.len() =>
            {
                for (mut col, (&ak, (bk, &bb))) in weight
                    .columns_mut()
                    .into_iter()
                    .zip(a.iter().zip(bias.iter_mut().zip(b)))
                {
                    col.mapv_inplace(|w| w * ak);
                    *bk = *bk * ak + bb;
                }
            }
            Some(_) => {
                return Err(self.unsupported(
                    node,
                    "a per-channel affine that is neither at the input nor right after a \
                     convolution or dense layer",
                ))
            }
        }
        if a.iter().any(|v| !v.is_finite() || *v == 0.0) || b.iter().any(|v| !v.is_finite()) {
            return Err(self.unsupported(node, "a scale that is zero or not finite"));
        }
        Ok(())
    }

    fn conv(&self, node: &NodeProto, shape: Shape, ops: &mut Vec<Op>) -> Result<Shape> {
        let Shape::Image(c, h, w) = shape else {
            return Err(self.unsupported(node, "convolution of a vector"));
        };
        let wname = node.input.get(1).map(String::as_str).unwrap_or("");
        let (dims, kv) = self.floats(node, wname)?;
        let [d, ci, kh, kw] = dims.as_slice() else {
            return Err(
                self.graph_error(wname, format!("kernel dims {dims:?}, not O × I × kH × kW"))
            );
        };
        let (d, k) = (*d, *kh);
        if *ci != c || *kw != k || k == 0 || d == 0 {
            return Err(self.graph_error(
                wname,
                format!("kernel dims {dims:?} do not fit a {c}-channel input with a square kernel"),
            ));
        }
        if attr_int(node, "group", 1) != 1 {
            return Err(self.unsupported(node, "grouped convolution"));
        }
        if attr_ints(node, "dilations").is_some_and(|v| v.iter().any(|&x| x != 1)) {
            return Err(self.unsupported(node, "dilation"));
        }
        if attr(node, "auto_pad")
            .and_then(|a| a.s.as_deref())
            .is_some_and(|s| s != b"NOTSET")
        {
            return Err(self.unsupported(node, "auto_pad"));
        }
        let strides = attr_ints(node, "strides").unwrap_or_else(|| vec![1, 1]);
        let pads = attr_ints(node, "pads").unwrap_or_else(|| vec![0; 4]);
        let stride = match strides.as_slice() {
            [a, b] if a == b && *a >= 1 => *a as usize,
            _ => return Err(self.unsupported(node, "unequal or zero strides")),
        };
        let padding = match pads.as_slice() {
            [p, rest @ ..] if *p >= 0 && rest.len() == 3 && rest.iter().all(|q| q == p) => {
                *p as usize
            }
            _ => return Err(self.unsupported(node, "padding not equal on every side")),
        };
        let bias = match node.input.get(2).filter(|n| !n.is_empty()) {
            Some(b) => {
                let (bd, bv) = self.floats(node, b)?;
                if bv.len() != d {
                    return Err(
                        self.graph_error(b, format!("bias dims {bd:?}, {d} values expected"))
                    );
                }
                bv
            }
            None => vec![0.0; d],
        };
        let stage = ConvStage {
            channels: d,
            kernel: k,
            stride,
            padding,
            pool: 1,
        };
        let (ho, wo) = stage.conv_output((h, w)).ok_or_else(|| {
            self.graph_error(
                &node_name(node),
                format!("a {k}×{k} kernel with padding {padding} does not fit the {h}×{w} map"),
            )
        })?;
        // OIHW → rows (a, b, c), columns o.
        let weight = Array2::from_shape_fn((k * k * c, d), |(r, o)| {
            let (a, rem) = (r / (k * c), r % (k * c));
            let (b, i) = (rem / c, rem % c);
            kv[((o * c + i) * k + a) * k + b]
        });
        ops.push(Op::Conv {
            weight,
            bias,
            stage,
        });
        Ok(Shape::Image(d, ho, wo))
    }

    fn dense(
        &self,
        node: &NodeProto,
        op_type: &str,
        main: usize,
        shape: Shape,
        ops: &mut Vec<Op>,
    ) -> Result<Shape> {
        let Shape::Flat(n_in, from) = shape else {
            return Err(self.unsupported(node, "a matrix product on an image (flatten first)"));
        };
        if main != 0 {
            return Err(self.unsupported(node, "the running tensor as the right operand"));
        }
        let wname = node.input.get(1).map(String::as_str).unwrap_or("");
        let (dims, wv) = self.floats(node, wname)?;
        let trans_b = op_type == "Gemm" && attr_int(node, "transB", 0) != 0;
        if op_type == "Gemm" && attr_int(node, "transA", 0) != 0 {
            return Err(self.unsupported(node, "transA"));
        }
        let (rows, cols) = match dims.as_slice() {
            [r, c] => (*r, *c),
            _ => return Err(self.graph_error(wname, format!("weight dims {dims:?}, not a matrix"))),
        };
        let (fan_in, fan_out) = if trans_b { (cols, rows) } else { (rows, cols) };
        if fan_in != n_in || fan_out == 0 {
            return Err(self.graph_error(
                wname,
                format!("weight dims {dims:?} take {fan_in} inputs, the tensor before has {n_in}"),
            ));
        }
        let alpha = if op_type == "Gemm" {
            attr_float(node, "alpha", 1.0)
        } else {
            1.0
        };
        let beta = if op_type == "Gemm" {
            attr_float(node, "beta", 1.0)
        } else {
            1.0
        };
        let w_at = |i: usize, o: usize| {
            alpha
                * if trans_b {
                    wv[o * fan_in + i]
                } else {
                    wv[i * fan_out + o]
                }
        };
        // Rows of the network's input order: a flattened C × H × W map arrives channels last.
        let weight = match from {
            Some((c, h, w)) if c > 1 => Array2::from_shape_fn((fan_in, fan_out), |(r, o)| {
                let (pos, ch) = (r / c, r % c);
                w_at(ch * h * w + pos, o)
            }),
            _ => Array2::from_shape_fn((fan_in, fan_out), |(i, o)| w_at(i, o)),
        };
        let mut bias = vec![0.0; fan_out];
        if let Some(cname) = node.input.get(2).filter(|n| !n.is_empty()) {
            let c = self.per_channel(node, cname, Shape::Flat(fan_out, None))?;
            for (b, v) in bias.iter_mut().zip(c) {
                *b = beta * v;
            }
        }
        ops.push(Op::Dense { weight, bias });
        Ok(Shape::Flat(fan_out, None))
    }

    /// Lays the chain out as an [`Architecture`]: `[affine] (conv act [pool])* (dense act)*
    /// dense`, one activation throughout. A max-pool before its activation is swapped with
    /// it (both orders compute the same, the activations being monotone).
    fn assemble(&self, first: Shape, mut ops: Vec<Op>, output: &str) -> Result<Network> {
        for i in 1..ops.len() {
            if matches!(ops[i - 1], Op::Pool(_)) && is_act(&ops[i]) {
                ops.swap(i - 1, i);
            }
        }
        let mut it = ops.into_iter().peekable();
        let affine = match it.peek() {
            Some(Op::Affine(..)) => match it.next() {
                Some(Op::Affine(a, b)) => Some((a, b)),
                _ => None,
            },
            _ => None,
        };
        let mut act: Option<(Activation, String)> = None;
        let mut same_act = |a: Activation, name: String| -> Result<()> {
            match &act {
                Some((b, first)) if *b != a => Err(self.graph_error(
                    &name,
                    format!(
                        "activation {a} after {first:?}'s {b}: the network has one hidden \
                         activation"
                    ),
                )),
                Some(_) => Ok(()),
                None => {
                    act = Some((a, name));
                    Ok(())
                }
            }
        };
        let mut stages = Vec::new();
        let mut params = Vec::new();
        while let Some(Op::Conv { .. }) = it.peek() {
            let Some(Op::Conv {
                weight,
                bias,
                mut stage,
            }) = it.next()
            else {
                unreachable!("peeked");
            };
            match it.next() {
                Some(Op::Act(a, name)) => same_act(a, name)?,
                _ => {
                    return Err(
                        self.graph_error(output, "a convolution not followed by its activation")
                    )
                }
            }
            if let Some(Op::Pool(q)) = it.peek() {
                stage.pool = *q;
                it.next();
            }
            stages.push(stage);
            params.push(weight);
            params.push(Array2::from_shape_vec((1, bias.len()), bias).expect("one row"));
        }
        let mut widths = Vec::new();
        let mut dense = Vec::new();
        while let Some(op) = it.next() {
            let Op::Dense { weight, bias } = op else {
                return Err(self.graph_error(
                    output,
                    format!("{} where a dense layer was expected", describe(&op)),
                ));
            };
            widths.push(weight.ncols());
            dense.push(weight);
            dense.push(Array2::from_shape_vec((1, bias.len()), bias).expect("one row"));
            match it.next() {
                Some(Op::Act(a, name)) => {
                    same_act(a, name)?;
                    if it.peek().is_none() {
                        return Err(self.graph_error(
                            output,
                            "the graph ends in an activation; the network's last layer gives \
                             logits",
                        ));
                    }
                }
                None => break,
                Some(op) => {
                    return Err(self.graph_error(
                        output,
                        format!("{} right after a dense layer", describe(&op)),
                    ))
                }
            }
        }
        let Some(classes) = widths.pop() else {
            return Err(self.graph_error(output, "the graph does not end in a dense layer"));
        };
        let activation = act.map_or(Activation::Identity, |(a, _)| a);
        let arch = match first {
            Shape::Image(c, h, w) if !stages.is_empty() => {
                Architecture::new_conv((h, w, c), stages, widths, classes, activation, 0.0)
            }
            _ => Architecture::new(first.width(), widths, classes, activation, 0.0),
        }
        .map_err(|e| self.graph_error(output, e.to_string()))?;
        params.extend(dense);
        let mut net = Network::from_params(arch, params)
            .map_err(|e| self.graph_error(output, e.to_string()))?;
        if let Some((a, b)) = affine {
            let aff = InputAffine::new(a, b, first.width())
                .map_err(|e| self.graph_error(output, e.to_string()))?;
            net = net.try_with_input_affine(aff)?;
        }
        Ok(net)
    }
}

fn describe(op: &Op) -> String {
    match op {
        Op::Affine(..) => "a per-channel affine".into(),
        Op::Conv { .. } => "a convolution".into(),
        Op::Pool(q) => format!("a {q}×{q} max-pool"),
        Op::Act(a, name) => format!("activation {a} ({name:?})"),
        Op::Dense { .. } => "a dense layer".into(),
    }
}

fn flatten(shape: Shape) -> Shape {
    match shape {
        Shape::Image(c, h, w) => Shape::Flat(c * h * w, Some((c, h, w))),
        flat => flat,
    }
}

/// NCHW rows (`C·H·W` values each, channel-major) as the network's channels-last rows.
pub fn nchw_to_rows(x: ArrayView2<'_, f32>, (c, h, w): (usize, usize, usize)) -> Array2<f32> {
    if c == 1 {
        return x.to_owned();
    }
    Array2::from_shape_fn((x.nrows(), c * h * w), |(n, r)| {
        let (pos, ch) = (r / c, r % c);
        x[[n, ch * h * w + pos]]
    })
}
