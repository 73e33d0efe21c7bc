//! PyTorch models from a plain `.npz` that says what they are: `scripts/export_torch.py`
//! writes an `nn.Sequential`'s (or any module's `children()`) weights under their
//! `state_dict` names, the layer list as the `u8` text array `blindspot_layers`, and a
//! reference batch (`reference_inputs`, `reference_logits`). Nothing is restated on the Rust
//! side: the layers are read from the file, built by the same importer as ONNX graphs (the
//! same layer set, layouts and typed errors), and checked against the reference batch.
//!
//! The layer list has one line per layer, `index kind key=value …`, after a first line
//! `input C,H,W` (or `input D`):
//!
//! ```text
//! input 1,28,28
//! 0 Normalize
//! 1 Conv2d stride=1 padding=2
//! 2 BatchNorm2d eps=1e-05
//! 3 ReLU
//! 4 MaxPool2d kernel=2 stride=2 padding=0
//! 5 Flatten
//! 6 Linear
//! ```
//!
//! `Normalize` is a module holding `mean` and `std` buffers (`(x − mean) / std`); `Linear`,
//! `Conv2d` and the batch norms read `{index}.weight`, `{index}.bias`, `{index}.running_mean`
//! and `{index}.running_var` (`num_batches_tracked`, an integer, is not needed and ignored).

use std::path::Path;

use ndarray::ArrayD;

use crate::error::{Error, Result};
use crate::import::onnx::{self, OnnxConfig, OnnxModel};
use crate::import::onnx_proto::{
    dtype, AttributeProto, Dimension, GraphProto, ModelProto, NodeProto, TensorProto,
    TensorShapeProto, TensorTypeProto, TypeProto, ValueInfoProto,
};
use crate::import::NpzWeights;

/// Name of the layer list in the file.
pub const LAYERS: &str = "blindspot_layers";

/// The layer kinds the layer list may name.
pub const SUPPORTED: &[&str] = &[
    "Normalize",
    "Linear",
    "Conv2d",
    "MaxPool2d",
    "BatchNorm1d",
    "BatchNorm2d",
    "ReLU",
    "Sigmoid",
    "Tanh",
    "Flatten",
    "Dropout",
    "Identity",
];

/// Imports the model of an `.npz` written by `scripts/export_torch.py` and checks it against
/// the file's reference batch, if it has one, at [`onnx::DEFAULT_TOLERANCE`].
///
/// # Errors
///
/// As [`load_with`].
pub fn load(path: impl AsRef<Path>) -> Result<OnnxModel> {
    load_with(path, &OnnxConfig::default())
}

/// Imports with the given verification settings.
///
/// # Errors
///
/// [`Error::Io`] if unreadable; [`Error::ModelFile`] if the file is not such an `.npz` (no
/// or a malformed layer list, a missing array); [`Error::UnsupportedOp`] naming the first
/// layer of a kind outside [`SUPPORTED`]; otherwise as [`onnx::load_with`]: shapes that do
/// not chain, a disagreement with the reference batch.
pub fn load_with(path: impl AsRef<Path>, params: &OnnxConfig) -> Result<OnnxModel> {
    let path = path.as_ref();
    let weights = NpzWeights::open(path)?;
    let model = to_proto(&weights, path)?;
    onnx::from_proto(&model, path, params)
}

fn tensor(name: &str, a: &ArrayD<f32>) -> TensorProto {
    TensorProto {
        dims: a.shape().iter().map(|&d| d as i64).collect(),
        data_type: Some(dtype::FLOAT),
        float_data: a.iter().copied().collect(),
        name: Some(name.to_string()),
        ..Default::default()
    }
}

fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        ints: v.to_vec(),
        ..Default::default()
    }
}

fn node(op: &str, name: &str, inputs: &[String], output: &str) -> NodeProto {
    NodeProto {
        input: inputs.to_vec(),
        output: vec![output.to_string()],
        name: Some(name.to_string()),
        op_type: Some(op.to_string()),
        ..Default::default()
    }
}

/// The layer list and arrays as the ONNX graph `torch.onnx.export` would write for them.
fn to_proto(weights: &NpzWeights, path: &Path) -> Result<ModelProto> {
    let bad = |problem: String| Error::ModelFile {
        path: path.to_path_buf(),
        problem,
    };
    let spec = weights.get(LAYERS)?;
    let text: Vec<u8> = spec
        .iter()
        .map(|&v| {
            if (0.0..=255.0).contains(&v) && v.fract() == 0.0 {
                Ok(v as u8)
            } else {
                Err(bad(format!("`{LAYERS}` is not a byte string")))
            }
        })
        .collect::<Result<_>>()?;
    let text = String::from_utf8(text).map_err(|_| bad(format!("`{LAYERS}` is not UTF-8")))?;
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let first = lines.next().unwrap_or("");
    let dims: Vec<i64> = first
        .strip_prefix("input ")
        .map(|d| d.split(',').map(|v| v.trim().parse::<i64>()).collect())
        .unwrap_or(Ok(Vec::new()))
        .map_err(|_| {
            bad(format!(
                "first line {first:?} is not `input C,H,W` or `input D`"
            ))
        })?;
    if dims.is_empty() || dims.len() == 2 || dims.len() > 3 || dims.iter().any(|&d| d < 1) {
        return Err(bad(format!(
            "first line {first:?} is not `input C,H,W` or `input D`"
        )));
    }
    let mut initializer = Vec::new();
    let mut add = |name: &str| -> Result<String> {
        initializer.push(tensor(name, weights.get(name)?));
        Ok(name.to_string())
    };
    let mut nodes = Vec::new();
    let mut current = "input".to_string();
    for line in lines {
        let mut words = line.split_whitespace();
        let (Some(index), Some(kind)) = (words.next(), words.next()) else {
            return Err(bad(format!("layer line {line:?} is not `index kind …`")));
        };
        let opts: Vec<(&str, &str)> = words.filter_map(|w| w.split_once('=')).collect();
        let opt = |k: &str| opts.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
        let int = |k: &str, default: i64| -> Result<i64> {
            opt(k)
                .map(|v| {
                    v.parse()
                        .map_err(|_| bad(format!("layer {index}: {k}={v}")))
                })
                .unwrap_or(Ok(default))
        };
        let out = format!("/{index}/output");
        let p = |s: &str| format!("{index}.{s}");
        let mut push = |op: &str, inputs: Vec<String>, attrs: Vec<AttributeProto>| {
            let mut n = node(op, &format!("/{index}/{kind}"), &inputs, &out);
            n.attribute = attrs;
            nodes.push(n);
        };
        match kind {
            "Normalize" => {
                let mid = format!("/{index}/centred");
                let mean = add(&p("mean"))?;
                let std = add(&p("std"))?;
                nodes.push(node(
                    "Sub",
                    &format!("/{index}/Sub"),
                    &[current.clone(), mean],
                    &mid,
                ));
                nodes.push(node("Div", &format!("/{index}/Div"), &[mid, std], &out));
            }
            "Linear" => {
                let mut inputs = vec![current.clone(), add(&p("weight"))?];
                if weights.get(&p("bias")).is_ok() {
                    inputs.push(add(&p("bias"))?);
                }
                let t = AttributeProto {
                    name: Some("transB".into()),
                    i: Some(1),
                    ..Default::default()
                };
                push("Gemm", inputs, vec![t]);
            }
            "Conv2d" => {
                let mut inputs = vec![current.clone(), add(&p("weight"))?];
                if weights.get(&p("bias")).is_ok() {
                    inputs.push(add(&p("bias"))?);
                }
                let (s, q) = (int("stride", 1)?, int("padding", 0)?);
                let attrs = vec![
                    ints("strides", &[s, s]),
                    ints("pads", &[q, q, q, q]),
                    ints("dilations", &[int("dilation", 1)?; 2]),
                    AttributeProto {
                        name: Some("group".into()),
                        i: Some(int("groups", 1)?),
                        ..Default::default()
                    },
                ];
                push("Conv", inputs, attrs);
            }
            "MaxPool2d" => {
                let k = int("kernel", 0)?;
                let s = int("stride", k)?;
                let q = int("padding", 0)?;
                let attrs = vec![
                    ints("kernel_shape", &[k, k]),
                    ints("strides", &[s, s]),
                    ints("pads", &[q, q, q, q]),
                ];
                push("MaxPool", vec![current.clone()], attrs);
            }
            "BatchNorm1d" | "BatchNorm2d" => {
                let inputs = vec![
                    current.clone(),
                    add(&p("weight"))?,
                    add(&p("bias"))?,
                    add(&p("running_mean"))?,
                    add(&p("running_var"))?,
                ];
                let eps: f32 = opt("eps")
                    .map(|v| {
                        v.parse()
                            .map_err(|_| bad(format!("layer {index}: eps={v}")))
                    })
                    .unwrap_or(Ok(1e-5))?;
                let e = AttributeProto {
                    name: Some("epsilon".into()),
                    f: Some(eps),
                    ..Default::default()
                };
                push("BatchNormalization", inputs, vec![e]);
            }
            "ReLU" => push("Relu", vec![current.clone()], vec![]),
            "Sigmoid" | "Tanh" | "Flatten" | "Dropout" | "Identity" => {
                push(kind, vec![current.clone()], vec![])
            }
            other => {
                return Err(Error::UnsupportedOp {
                    path: path.to_path_buf(),
                    node: format!("layer {index}"),
                    op: other.to_string(),
                    supported: SUPPORTED.join(", "),
                })
            }
        }
        current = out;
    }
    for name in [onnx::REFERENCE_INPUTS, onnx::REFERENCE_LOGITS] {
        if weights.get(name).is_ok() {
            add(name)?;
        }
    }
    let shape = |d: &[i64]| TensorShapeProto {
        dim: std::iter::once(Dimension {
            dim_param: Some("N".into()),
            ..Default::default()
        })
        .chain(d.iter().map(|&v| Dimension {
            dim_value: Some(v),
            ..Default::default()
        }))
        .collect(),
    };
    let value = |name: &str, d: &[i64]| ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            tensor_type: Some(TensorTypeProto {
                elem_type: Some(dtype::FLOAT),
                shape: Some(shape(d)),
            }),
        }),
    };
    Ok(ModelProto {
        ir_version: Some(8),
        producer_name: Some("blindspot npz".into()),
        graph: Some(GraphProto {
            node: nodes,
            name: Some("torch".into()),
            initializer,
            input: vec![value("input", &dims)],
            output: vec![value(&current, &[])],
        }),
        opset_import: Vec::new(),
    })
}
