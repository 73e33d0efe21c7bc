//! ONNX import: the fixtures of `scripts/make_onnx_fixtures.py` (PyTorch models with their
//! reference logits) and hand-built hostile graphs.

use blindspot::Check;
use std::path::{Path, PathBuf};

use blindspot::import::onnx::{self, OnnxParams};
use blindspot::import::verify;
use blindspot::nn::{Layer, Network};
use blindspot::{Classifier, Differentiable, Error};
use ndarray::Array2;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("blindspot-onnx-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

const MODELS: [&str; 3] = ["mlp_norm.onnx", "conv_bn.onnx", "mlp_sigmoid.onnx"];

#[test]
fn fixtures_agree_with_pytorch_to_1e4() {
    for name in MODELS {
        let m = onnx::load(fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let a = m.verified.expect("the fixtures carry a reference batch");
        let (x, _) = m.reference.as_ref().unwrap();
        assert_eq!(a.checked, x.nrows(), "{name}");
        assert_eq!(a.agree, a.checked, "{name}");
        assert!(a.max_logit_diff <= 1e-4, "{name}: {}", a.max_logit_diff);
    }
}

#[test]
fn layers_are_read_from_the_file() {
    let conv = onnx::load(fixture("conv_bn.onnx")).unwrap();
    assert_eq!(conv.image, Some((12, 12, 3)));
    let affine = conv
        .network
        .input_affine()
        .expect("normalisation kept as a layer");
    assert_eq!(affine.channels(), 3);
    // (x − 0.5) / 0.2 on channel 0: scale 5, shift −2.5.
    assert!((affine.scale()[0] - 5.0).abs() < 1e-5);
    assert!((affine.shift()[0] + 2.5).abs() < 1e-5);
    let convs = conv
        .network
        .layers()
        .iter()
        .filter(|l| matches!(l, Layer::Conv2d(_)))
        .count();
    assert_eq!(convs, 2);
    let sig = onnx::load(fixture("mlp_sigmoid.onnx")).unwrap();
    assert_eq!(
        sig.network.arch().activation(),
        blindspot::nn::Activation::Sigmoid
    );
    assert!(sig.network.input_affine().is_none());
}

#[test]
fn imported_input_gradients_match_finite_differences() {
    for name in MODELS {
        let m = onnx::load(fixture(name)).unwrap();
        let net = &m.network;
        let (x, _) = m.reference.as_ref().unwrap();
        let x = x.slice(ndarray::s![..2, ..]).to_owned();
        let labels = [1usize, 2];
        let (_, g) = net.loss_and_input_grad(x.view(), &labels).unwrap();
        let h = 1e-2f32;
        let d = x.ncols();
        for j in (0..d).step_by((d / 23).max(1)) {
            let mut xp = x.clone();
            let mut xm = x.clone();
            xp.column_mut(j).mapv_inplace(|v| v + h);
            xm.column_mut(j).mapv_inplace(|v| v - h);
            let (lp, _) = net.loss_and_input_grad(xp.view(), &labels).unwrap();
            let (lm, _) = net.loss_and_input_grad(xm.view(), &labels).unwrap();
            for r in 0..2 {
                let fd = (lp[r] - lm[r]) / (2.0 * h);
                let err = (fd - g[[r, j]]).abs();
                assert!(
                    err <= 2e-2 * (1.0 + fd.abs()),
                    "{name} row {r} column {j}: fd {fd}, analytic {}",
                    g[[r, j]]
                );
            }
        }
    }
}

#[test]
fn imported_network_with_normalisation_saves_and_loads() {
    let m = onnx::load(fixture("conv_bn.onnx")).unwrap();
    let path = temp("conv_bn.npz");
    m.network.save(&path).unwrap();
    let back = Network::load(&path).unwrap();
    assert_eq!(back, m.network);
    let (x, _) = m.reference.as_ref().unwrap();
    assert_eq!(
        back.logits(x.view()).unwrap(),
        m.network.logits(x.view()).unwrap()
    );
}

#[test]
fn unsupported_op_names_node_op_and_supported_list() {
    match onnx::load(fixture("unsupported.onnx")) {
        Err(Error::UnsupportedOp {
            node,
            op,
            supported,
            ..
        }) => {
            assert_eq!(op, "Erf");
            assert!(node.contains("Erf"), "{node}");
            assert!(supported.contains("Conv") && supported.contains("Gemm"));
        }
        other => panic!("expected UnsupportedOp, got {other:?}"),
    }
}

#[test]
fn disagreement_is_a_typed_error_with_counts() {
    let m = onnx::load(fixture("mlp_norm.onnx")).unwrap();
    let (x, z) = m.reference.clone().unwrap();
    let mut wrong = z.clone();
    // Make row 0 predict another class and push every logit off by 0.5.
    let argmax = |r: ndarray::ArrayView1<f32>| {
        r.iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap()
            .0
    };
    let top = argmax(wrong.row(0));
    wrong[[0, (top + 1) % 10]] += 100.0;
    wrong += 0.5;
    match verify(&m.network, x.view(), wrong.view(), 1e-3) {
        Err(Error::Disagreement {
            agree,
            checked,
            max_logit_diff,
            ..
        }) => {
            assert_eq!(checked, x.nrows());
            assert_eq!(agree, checked - 1);
            assert!((max_logit_diff - 100.5).abs() < 1e-2, "{max_logit_diff}");
        }
        other => panic!("expected Disagreement, got {other:?}"),
    }
    let ok = verify(&m.network, x.view(), z.view(), 1e-3).unwrap();
    assert_eq!(ok.agree, ok.checked);
    // A wrong shape of logits is a shape error, not a disagreement.
    assert!(matches!(
        verify(&m.network, x.view(), Array2::zeros((1, 10)).view(), 1e-3),
        Err(Error::Shape { .. })
    ));
}

#[test]
fn skip_verification_is_explicit() {
    let bytes = std::fs::read(fixture("mlp_norm.onnx")).unwrap();
    let path = Path::new("mlp_norm.onnx");
    // A zero tolerance is (almost surely) failed by float rounding, unless skipped.
    let strict = OnnxParams::default().with_tolerance(0.0);
    let skipped = strict.with_skip_verification(true).check().unwrap();
    let m = onnx::from_bytes(&bytes, path, &skipped).unwrap();
    assert!(m.verified.is_none());
    assert!(matches!(
        OnnxParams::default().with_tolerance(-1.0).check(),
        Err(blindspot::Error::InvalidParameter {
            name: "tolerance",
            ..
        })
    ));
    assert!(OnnxParams::default()
        .with_tolerance(f32::NAN)
        .check()
        .is_err());
    assert_eq!(
        OnnxParams::default().check().unwrap(),
        onnx::OnnxConfig::default()
    );
}

#[test]
fn hostile_graphs_are_typed_errors() {
    let graph = |name: &str| match onnx::load(fixture(name)) {
        Err(Error::ImportGraph { edge, problem, .. }) => (edge, problem),
        other => panic!("{name}: expected ImportGraph, got {other:?}"),
    };
    let (edge, _) = graph("hostile_cyclic.onnx");
    assert_eq!(edge, "h");
    let (edge, problem) = graph("hostile_dangling.onnx");
    assert_eq!(edge, "g");
    assert!(problem.contains("dangling"), "{problem}");
    let (edge, problem) = graph("hostile_branching.onnx");
    assert_eq!(edge, "x");
    assert!(problem.contains("branches"), "{problem}");
    let (_, problem) = graph("hostile_mixed_activations.onnx");
    assert!(problem.contains("one hidden activation"), "{problem}");
    let (edge, problem) = graph("hostile_shapes.onnx");
    assert_eq!(edge, "w3");
    assert!(problem.contains("5"), "{problem}");
    match onnx::load(fixture("hostile_huge_dims.onnx")) {
        Err(Error::ModelFile { problem, .. }) => {
            assert!(problem.contains("too large"), "{problem}")
        }
        other => panic!("expected ModelFile, got {other:?}"),
    }
}

#[test]
fn truncated_and_corrupted_files_never_panic() {
    for name in ["conv_bn.onnx", "mlp_sigmoid.onnx"] {
        let bytes = std::fs::read(fixture(name)).unwrap();
        let path = Path::new(name);
        let params = onnx::OnnxConfig::default();
        let step = (bytes.len() / 97).max(1);
        let full = onnx::from_bytes(&bytes, path, &params).unwrap();
        for cut in (0..bytes.len()).step_by(step) {
            // A prefix ending exactly after the graph is still a whole model; any other is
            // an error.
            if let Ok(m) = onnx::from_bytes(&bytes[..cut], path, &params) {
                assert_eq!(m.network, full.network, "{name} cut at {cut}");
            }
        }
        // Flipped bytes: any outcome but a panic (a flip inside a weight still imports, and
        // then the reference check catches it or the change is below the tolerance).
        for i in (0..bytes.len()).step_by(step) {
            let mut b = bytes.clone();
            b[i] ^= 0x5a;
            let _ = onnx::from_bytes(&b, path, &params);
        }
    }
    assert!(matches!(
        onnx::load(fixture("no_such_file.onnx")),
        Err(Error::Io { .. })
    ));
}

#[test]
fn npz_road_rebuilds_the_same_network_from_the_file_alone() {
    let m = blindspot::import::torch::load(fixture("torch_conv_bn.npz")).unwrap();
    let a = m
        .verified
        .expect("export_torch.py writes a reference batch");
    assert_eq!(a.agree, a.checked);
    assert!(a.max_logit_diff <= 1e-4, "{}", a.max_logit_diff);
    // The same PyTorch model exported to ONNX: the same network, up to float rounding.
    let o = onnx::load(fixture("conv_bn.onnx")).unwrap();
    let (x, _) = o.reference.as_ref().unwrap();
    let d = (&m.network.logits(x.view()).unwrap() - &o.network.logits(x.view()).unwrap())
        .iter()
        .fold(0.0f32, |m, v| m.max(v.abs()));
    assert!(d <= 1e-4, "{d}");
    assert_eq!(m.network.layers().len(), o.network.layers().len());
}

#[test]
fn npz_road_names_an_unsupported_layer() {
    match blindspot::import::torch::load(fixture("torch_unsupported.npz")) {
        Err(Error::UnsupportedOp {
            node,
            op,
            supported,
            ..
        }) => {
            assert_eq!(op, "GELU");
            assert_eq!(node, "layer 2");
            assert!(supported.contains("Conv2d"));
        }
        other => panic!("expected UnsupportedOp, got {other:?}"),
    }
}
