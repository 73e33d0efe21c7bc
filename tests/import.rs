//! `.npz` import of PyTorch-style weights (out × in) into `Network`.

use std::fs::File;
use std::path::{Path, PathBuf};

use blindspot::import::{DenseNames, NpzWeights, WeightLayout};
use blindspot::nn::{Activation, Architecture, Network};
use blindspot::{Classifier, Error};
use ndarray::{Array1, Array2};
use ndarray_npy::NpzWriter;

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("blindspot-import-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Entries of a PyTorch `state_dict` as numpy.savez writes them.
enum Entry {
    Matrix(Array2<f32>),
    Vector(Array1<f32>),
    Wide(Array2<f64>),
}

fn write<S: AsRef<str>>(path: &Path, entries: &[(S, Entry)]) {
    let mut npz = NpzWriter::new(File::create(path).unwrap());
    for (name, e) in entries {
        let name = name.as_ref();
        match e {
            Entry::Matrix(a) => npz.add_array(name, a).unwrap(),
            Entry::Vector(a) => npz.add_array(name, a).unwrap(),
            Entry::Wide(a) => npz.add_array(name, a).unwrap(),
        }
    }
    npz.finish().unwrap();
}

/// The `state_dict` PyTorch would have for `mlp` as `fc1`, `fc2`, …: weights out × in, 1-d biases.
fn torch_entries(mlp: &Network) -> Vec<(String, Entry)> {
    let mut out = Vec::new();
    for l in 0..mlp.num_dense() {
        let w = mlp.weights(l).unwrap().t().to_owned();
        let b = mlp.bias(l).unwrap().to_owned();
        out.push((format!("fc{}.weight", l + 1), Entry::Matrix(w)));
        out.push((format!("fc{}.bias", l + 1), Entry::Vector(b)));
    }
    out
}

fn write_torch(path: &Path, mlp: &Network) {
    write(path, &torch_entries(mlp));
}

fn layers(k: usize) -> Vec<DenseNames> {
    (1..=k)
        .map(|l| DenseNames::torch(&format!("fc{l}")))
        .collect()
}

fn probe_batch(m: usize) -> Array2<f32> {
    Array2::from_shape_fn((5, m), |(i, j)| ((i * 7 + j * 3) % 11) as f32 / 10.0)
}

#[test]
fn a_torch_state_dict_round_trips() {
    let arch = Architecture::parse("FC12-8-10", 20).unwrap();
    let original = Network::new(arch.clone(), 4);
    let path = temp("roundtrip.npz");
    write_torch(&path, &original);
    let weights = NpzWeights::open(&path).unwrap();
    let names: Vec<&str> = weights.names().collect();
    assert_eq!(names.len(), 6);
    let imported = weights.mlp(arch, &layers(3), WeightLayout::OutIn).unwrap();
    assert_eq!(imported, original);
    let x = probe_batch(20);
    assert_eq!(
        imported.logits(x.view()).unwrap(),
        original.logits(x.view()).unwrap()
    );
}

#[test]
fn in_out_layout_biasless_layers_and_f64_arrays_import() {
    let arch = Architecture::parse("FC6-3", 4)
        .unwrap()
        .with_activation(Activation::Relu);
    let w0 = Array2::from_shape_fn((4, 6), |(i, j)| (i as f64 - j as f64) / 10.0);
    let w1 = Array2::from_shape_fn((6, 3), |(i, j)| (i * j) as f32 / 20.0);
    let b1 = Array1::from(vec![0.1f32, -0.2, 0.3]);
    let path = temp("inout.npz");
    write(
        &path,
        &[
            ("dense/kernel", Entry::Wide(w0.clone())),
            ("out/kernel", Entry::Matrix(w1.clone())),
            ("out/bias", Entry::Vector(b1.clone())),
        ],
    );
    let weights = NpzWeights::open(&path).unwrap();
    let mlp = weights
        .mlp(
            arch.clone(),
            &[
                DenseNames::without_bias("dense/kernel"),
                DenseNames::new("out/kernel", "out/bias"),
            ],
            WeightLayout::InOut,
        )
        .unwrap();
    let expected = Network::from_params(
        arch,
        vec![
            w0.mapv(|v| v as f32),
            Array2::zeros((1, 6)),
            w1,
            b1.insert_axis(ndarray::Axis(0)),
        ],
    )
    .unwrap();
    assert_eq!(mlp, expected);
}

#[test]
fn a_missing_array_is_named() {
    let arch = Architecture::parse("FC12-10", 20).unwrap();
    let path = temp("missing.npz");
    write_torch(&path, &Network::new(arch.clone(), 1));
    let weights = NpzWeights::open(&path).unwrap();
    let err = weights
        .mlp(
            arch,
            &[DenseNames::torch("fc1"), DenseNames::torch("head")],
            WeightLayout::OutIn,
        )
        .unwrap_err();
    match &err {
        Error::ModelFile { path: p, problem } => {
            assert_eq!(p, &path);
            assert!(problem.contains("missing array `head.weight`"), "{problem}");
            assert!(
                problem.contains("fc2.weight"),
                "lists what is there: {problem}"
            );
        }
        other => panic!("expected ModelFile, got {other}"),
    }
}

#[test]
fn a_wrong_shape_is_named_with_both_shapes() {
    let arch = Architecture::parse("FC12-10", 20).unwrap();
    let mlp = Network::new(arch.clone(), 1);
    let path = temp("transposed.npz");
    // Saved in the crate's in × out layout but imported as PyTorch's out × in.
    write(
        &path,
        &[
            (
                "fc1.weight",
                Entry::Matrix(mlp.weights(0).unwrap().to_owned()),
            ),
            ("fc1.bias", Entry::Vector(mlp.bias(0).unwrap().to_owned())),
            (
                "fc2.weight",
                Entry::Matrix(mlp.weights(1).unwrap().to_owned()),
            ),
            ("fc2.bias", Entry::Vector(mlp.bias(1).unwrap().to_owned())),
        ],
    );
    let weights = NpzWeights::open(&path).unwrap();
    let err = weights
        .mlp(arch.clone(), &layers(2), WeightLayout::OutIn)
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::ModelFile { .. }), "{text}");
    assert!(text.contains("`fc1.weight`"), "{text}");
    assert!(
        text.contains("[20, 12]") && text.contains("[12, 20]"),
        "{text}"
    );

    // A bias of the wrong length.
    let path = temp("bias.npz");
    write(
        &path,
        &[
            ("fc1.weight", Entry::Matrix(Array2::zeros((12, 20)))),
            ("fc1.bias", Entry::Vector(Array1::zeros(11))),
        ],
    );
    let err = NpzWeights::open(&path)
        .unwrap()
        .dense(&DenseNames::torch("fc1"), 20, 12, WeightLayout::OutIn)
        .unwrap_err();
    assert!(err.to_string().contains("`fc1.bias`"), "{err}");
}

#[test]
fn wrong_layer_count_and_non_finite_weights_are_errors() {
    let arch = Architecture::parse("FC12-10", 20).unwrap();
    let path = temp("count.npz");
    write_torch(&path, &Network::new(arch.clone(), 1));
    let weights = NpzWeights::open(&path).unwrap();
    let err = weights
        .mlp(arch.clone(), &layers(3), WeightLayout::OutIn)
        .unwrap_err();
    assert!(matches!(
        err,
        Error::InvalidParameter { name: "layers", .. }
    ));

    let mut w = Array2::<f32>::zeros((10, 12));
    w[[3, 4]] = f32::NAN;
    let path = temp("nan.npz");
    write(&path, &[("fc2.weight", Entry::Matrix(w))]);
    let err = NpzWeights::open(&path)
        .unwrap()
        .dense(
            &DenseNames::without_bias("fc2.weight"),
            12,
            10,
            WeightLayout::OutIn,
        )
        .unwrap_err();
    assert!(err.to_string().contains("`fc2.weight`"), "{err}");
}

#[test]
fn unreadable_files_are_typed_errors() {
    let err = NpzWeights::open(temp("does-not-exist.npz")).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    let path = temp("garbage.npz");
    std::fs::write(&path, b"not a zip file").unwrap();
    let err = NpzWeights::open(&path).unwrap_err();
    assert!(matches!(err, Error::ModelFile { .. }), "{err}");
    // An integer array is neither f32 nor f64.
    let path = temp("ints.npz");
    let mut npz = NpzWriter::new(File::create(&path).unwrap());
    npz.add_array("fc1.weight", &Array2::<i32>::zeros((2, 2)))
        .unwrap();
    npz.finish().unwrap();
    let err = NpzWeights::open(&path).unwrap_err();
    assert!(err.to_string().contains("`fc1.weight`"), "{err}");
}

/// An npy header that claims a huge shape (the file stays a few hundred bytes) is a typed
/// error before anything is allocated from the claim: the import reads through the crate's
/// size-checked reader.
#[test]
fn a_header_claiming_a_huge_shape_is_an_error_not_an_allocation() {
    let path = temp("huge_claim.npz");
    {
        let mut npz = NpzWriter::new(File::create(&path).unwrap());
        npz.add_array("w", &Array2::<f32>::zeros((2, 3))).unwrap();
        npz.finish().unwrap();
    }
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes
        .windows(7)
        .position(|w| w == b"(2, 3)}")
        .expect("npy header in the stored member");
    let spaces = bytes[at + 7..].iter().take_while(|&&b| b == b' ').count();
    let claim = b"(4000000000, 4000000000)}";
    assert!(claim.len() <= 7 + spaces, "room in the header's padding");
    let mut patch = claim.to_vec();
    patch.resize(7 + spaces, b' ');
    bytes[at..at + 7 + spaces].copy_from_slice(&patch);
    std::fs::write(&path, &bytes).unwrap();
    let Err(e) = NpzWeights::open(&path) else {
        panic!("a header claiming 1.6e19 values was accepted")
    };
    assert!(matches!(e, Error::ModelFile { .. }), "{e}");
    assert!(e.to_string().contains('w'), "{e}");
}
