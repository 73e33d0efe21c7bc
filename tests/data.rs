//! IDX reading and writing, the MNIST loader and `Dataset` invariants.

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;

use blindspot::data::{read_idx, write_idx, Dataset, Mnist};
use blindspot::Error;
use flate2::write::GzEncoder;
use flate2::Compression;
use ndarray::{array, Array2};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

mod common;
use common::TempDir;

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// A raw IDX file image: header for `dims` followed by `payload` (which may deliberately
/// not match).
fn idx_bytes(type_code: u8, dims: &[u32], payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, type_code, dims.len() as u8];
    for d in dims {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend_from_slice(payload);
    v
}

/// Asserts `err` is a `DataFile` error about `path` whose message contains every needle.
fn assert_data_file(err: Error, path: &Path, needles: &[&str]) {
    let msg = err.to_string();
    match &err {
        Error::DataFile { path: p, .. } => assert_eq!(p, path, "{msg}"),
        other => panic!("expected DataFile error, got {other:?}"),
    }
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    for n in needles {
        assert!(msg.contains(n), "message {msg:?} lacks {n:?}");
    }
}

// ---------------------------------------------------------------- IDX

#[test]
fn idx_round_trip_raw_and_gzip() {
    let dir = TempDir::new("data-roundtrip");
    let data: Vec<u8> = (0..2 * 3 * 4).map(|i| (i * 7 % 256) as u8).collect();
    for (gz, name) in [(false, "a.idx"), (true, "a.idx.gz")] {
        let p = dir.path(name);
        write_idx(&p, &[2, 3, 4], &data, gz).unwrap();
        let raw = std::fs::read(&p).unwrap();
        assert_eq!(raw.starts_with(&[0x1f, 0x8b]), gz);
        let idx = read_idx(&p).unwrap();
        assert_eq!(idx.dims, vec![2, 3, 4]);
        assert_eq!(idx.data, data);
    }
    // Gzip is detected by content, not by the name.
    let p = dir.path("gzipped-without-suffix");
    write_idx(&p, &[5], &[1, 2, 3, 4, 5], true).unwrap();
    assert_eq!(read_idx(&p).unwrap().data, vec![1, 2, 3, 4, 5]);
    // No temporary files are left behind.
    let names: Vec<_> = std::fs::read_dir(&dir.0).unwrap().collect();
    assert_eq!(names.len(), 3);
}

#[test]
fn write_idx_rejects_inconsistent_input() {
    let dir = TempDir::new("data-writebad");
    let p = dir.path("x.idx");
    assert!(matches!(
        write_idx(&p, &[2, 2], &[0; 3], false),
        Err(Error::Shape { .. })
    ));
    assert!(matches!(
        write_idx(&p, &[], &[], false),
        Err(Error::InvalidParameter { .. })
    ));
    assert!(matches!(
        write_idx(&p, &[1, 1, 1, 1, 1], &[0], false),
        Err(Error::InvalidParameter { .. })
    ));
    assert!(!p.exists());
}

#[test]
fn idx_bad_files_are_typed_errors_naming_the_file() {
    let dir = TempDir::new("data-badidx");
    let ok = idx_bytes(8, &[2, 3], &[0; 6]);
    let cases: Vec<(&str, Vec<u8>, Vec<&str>)> = vec![
        ("empty", vec![], vec!["empty"]),
        ("short-header", vec![0, 0, 8], vec!["truncated"]),
        (
            "wrong-magic",
            idx_bytes(8, &[6], &[0; 6])
                .iter()
                .enumerate()
                .map(|(i, &b)| if i == 0 { 0x42 } else { b })
                .collect(),
            vec!["magic"],
        ),
        (
            "unsupported-type",
            idx_bytes(0x0d, &[2], &[0; 8]),
            vec!["unsupported IDX type code 0x0d"],
        ),
        ("zero-dims", idx_bytes(8, &[], &[]), vec!["dimensions"]),
        (
            "five-dims",
            idx_bytes(8, &[1, 1, 1, 1, 1], &[0]),
            vec!["dimensions"],
        ),
        ("header-truncated", ok[..9].to_vec(), vec!["truncated"]),
        (
            "truncated",
            ok[..ok.len() - 1].to_vec(),
            vec!["truncated payload", "expected 6", "got 5"],
        ),
        (
            "trailing",
            [ok.clone(), vec![9]].concat(),
            vec!["trailing", "expected 6", "got 7"],
        ),
        (
            "truncated-gz",
            gzip(&ok[..ok.len() - 2]),
            vec!["truncated payload", "expected 6", "got 4"],
        ),
        (
            "trailing-gz",
            gzip(&[ok.clone(), vec![1, 2]].concat()),
            vec!["trailing", "expected 6", "got 8"],
        ),
    ];
    for (name, bytes, needles) in cases {
        let p = dir.path(name);
        std::fs::write(&p, &bytes).unwrap();
        let err = read_idx(&p).expect_err(name);
        assert_data_file(err, &p, &needles);
    }
}

#[test]
fn corrupt_gzip_is_a_data_file_error() {
    let dir = TempDir::new("data-corruptgz");
    let good = gzip(&idx_bytes(8, &[100], &[7; 100]));
    // Cut the stream short.
    let p = dir.path("cut.gz");
    std::fs::write(&p, &good[..good.len() / 2]).unwrap();
    assert_data_file(read_idx(&p).unwrap_err(), &p, &["gzip"]);
    // Garbage after a valid gzip header.
    let p = dir.path("garbage.gz");
    let mut bytes = good[..10].to_vec();
    bytes.extend_from_slice(&[0xff; 40]);
    std::fs::write(&p, &bytes).unwrap();
    assert_data_file(read_idx(&p).unwrap_err(), &p, &["gzip"]);
    // A flipped byte caught by the CRC.
    let p = dir.path("crc.gz");
    let mut bytes = good.clone();
    let n = bytes.len();
    bytes[n - 6] ^= 0xff;
    std::fs::write(&p, &bytes).unwrap();
    assert_data_file(read_idx(&p).unwrap_err(), &p, &["gzip"]);
}

#[test]
fn missing_idx_file_is_an_io_error() {
    let dir = TempDir::new("data-missing");
    let p = dir.path("nope");
    match read_idx(&p) {
        Err(Error::Io { path, source }) => {
            assert_eq!(path, p);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected Io error, got {other:?}"),
    }
}

// ---------------------------------------------------------------- MNIST loader

/// Writes a small synthetic MNIST directory: `n_train`/`n_test` 4×3 images with the given
/// labels; gzipped or raw.
fn write_fake_mnist(dir: &Path, train_labels: &[u8], n_train_images: usize, gz: bool) {
    let suffix = if gz { ".gz" } else { "" };
    let img = |n: usize| -> Vec<u8> { (0..n * 12).map(|i| (i % 256) as u8).collect() };
    let w = |name: &str, dims: &[usize], data: &[u8]| {
        write_idx(&dir.join(format!("{name}{suffix}")), dims, data, gz).unwrap();
    };
    w(
        "train-images-idx3-ubyte",
        &[n_train_images, 4, 3],
        &img(n_train_images),
    );
    w(
        "train-labels-idx1-ubyte",
        &[train_labels.len()],
        train_labels,
    );
    w("t10k-images-idx3-ubyte", &[2, 4, 3], &img(2));
    w("t10k-labels-idx1-ubyte", &[2], &[9, 0]);
}

#[test]
fn mnist_loads_small_synthetic_files_raw_and_gzip() {
    for gz in [false, true] {
        let dir = TempDir::new("data-fakemnist");
        write_fake_mnist(&dir.0, &[3, 1, 4], 3, gz);
        let m = Mnist::load(&dir.0).unwrap();
        assert_eq!(m.train.len(), 3);
        assert_eq!(m.test.len(), 2);
        assert_eq!(m.train.image_shape(), (4, 3));
        assert_eq!(m.train.num_classes(), 10);
        assert_eq!(m.train.labels(), &[3, 1, 4]);
        assert_eq!(m.test.labels(), &[9, 0]);
        // Pixel byte b becomes b / 255.
        let img1 = m.train.image(1).unwrap();
        assert_eq!(img1[0], 12.0 / 255.0);
        assert_eq!(m.train.image(0).unwrap()[0], 0.0);
    }
}

#[test]
fn mnist_prefers_gz_over_raw() {
    let dir = TempDir::new("data-prefergz");
    write_fake_mnist(&dir.0, &[3, 1, 4], 3, false);
    write_fake_mnist(&dir.0, &[7, 7, 7], 3, true);
    assert_eq!(Mnist::load(&dir.0).unwrap().train.labels(), &[7, 7, 7]);
}

#[test]
fn mnist_label_out_of_range_names_file_index_and_label() {
    let dir = TempDir::new("data-label10");
    write_fake_mnist(&dir.0, &[3, 10, 4], 3, true);
    let p = dir.0.join("train-labels-idx1-ubyte.gz");
    assert_data_file(
        Mnist::load(&dir.0).unwrap_err(),
        &p,
        &["label 10", "index 1"],
    );
}

#[test]
fn mnist_count_mismatch_names_both_files_and_counts() {
    let dir = TempDir::new("data-mismatch");
    write_fake_mnist(&dir.0, &[3, 1], 3, false);
    let err = Mnist::load(&dir.0).unwrap_err();
    let img = dir.0.join("train-images-idx3-ubyte");
    let lab = dir.0.join("train-labels-idx1-ubyte");
    assert_data_file(
        err,
        &img,
        &["3 images", "2 labels", &lab.display().to_string()],
    );
}

#[test]
fn mnist_wrong_rank_and_missing_files() {
    let dir = TempDir::new("data-rank");
    write_fake_mnist(&dir.0, &[3, 1, 4], 3, false);
    let img = dir.0.join("t10k-images-idx3-ubyte");
    write_idx(&img, &[2, 12], &[0; 24], false).unwrap();
    assert_data_file(Mnist::load(&dir.0).unwrap_err(), &img, &["3 dimensions"]);

    write_fake_mnist(&dir.0, &[3, 1, 4], 3, false);
    let lab = dir.0.join("t10k-labels-idx1-ubyte");
    write_idx(&lab, &[2, 1], &[0; 2], false).unwrap();
    assert_data_file(Mnist::load(&dir.0).unwrap_err(), &lab, &["1 dimension"]);

    std::fs::remove_file(&lab).unwrap();
    match Mnist::load(&dir.0).unwrap_err() {
        err @ Error::Io { .. } => {
            assert!(err.to_string().contains("t10k-labels-idx1-ubyte"), "{err}")
        }
        other => panic!("expected Io error, got {other:?}"),
    }
}

#[test]
fn mnist_real_data() {
    let m = Mnist::load_default().expect("shipped MNIST in data/mnist");
    assert_eq!(m.train.len(), 60_000);
    assert_eq!(m.test.len(), 10_000);
    for ds in [&m.train, &m.test] {
        assert_eq!(ds.image_shape(), (28, 28));
        assert_eq!(ds.input_dim(), 784);
        assert_eq!(ds.num_classes(), 10);
        let counts = ds.label_counts();
        assert_eq!(counts.len(), 10);
        assert_eq!(counts.iter().sum::<usize>(), ds.len());
        assert!(counts.iter().all(|&c| c > 0));
        let (lo, hi) = ds
            .images()
            .iter()
            .fold((f32::MAX, f32::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        assert_eq!((lo, hi), (0.0, 1.0));
    }
    assert_eq!(m.train.labels()[0], 5);
    assert_eq!(m.test.labels()[0], 7);
    // Published class frequencies of the training set.
    assert_eq!(m.train.label_counts()[1], 6742);
    assert_eq!(m.test.label_counts()[5], 892);
}

// ---------------------------------------------------------------- Dataset

/// `n` one-pixel images whose pixel encodes the example's index (`i / (n - 1)`), so that
/// the index can be recovered from any derived dataset or batch.
fn indexed(n: usize) -> Dataset {
    assert!(n <= 1000);
    let x = Array2::from_shape_fn((n, 1), |(i, _)| i as f32 / 1000.0);
    Dataset::new(x, (0..n).map(|i| i % 3).collect(), (1, 1), 3).unwrap()
}

fn ids(x: ndarray::ArrayView2<'_, f32>) -> Vec<usize> {
    x.column(0)
        .iter()
        .map(|&v| (v * 1000.0).round() as usize)
        .collect()
}

#[test]
fn dataset_new_rejects_each_bad_input() {
    let ok = || array![[0.0f32, 0.5], [1.0, 0.25]];
    assert!(Dataset::new(ok(), vec![0, 1], (1, 2), 2).is_ok());
    assert!(Dataset::new(ok(), vec![0, 1], (2, 1), 2).is_ok());
    let cases: Vec<(Result<Dataset, Error>, &str)> = vec![
        (Dataset::new(ok(), vec![0], (1, 2), 2), "Shape"),
        (Dataset::new(ok(), vec![0, 1], (1, 3), 2), "Shape"),
        (Dataset::new(ok(), vec![0, 2], (1, 2), 2), "LabelOutOfRange"),
        (
            Dataset::new(ok(), vec![0, 0], (1, 2), 0),
            "InvalidParameter",
        ),
        (
            Dataset::new(ok(), vec![0, 0], (0, 2), 1),
            "InvalidParameter",
        ),
        (
            Dataset::new(array![[0.0, -0.1], [1.0, 0.0]], vec![0, 1], (1, 2), 2),
            "InvalidParameter",
        ),
        (
            Dataset::new(array![[0.0, 1.01], [1.0, 0.0]], vec![0, 1], (1, 2), 2),
            "InvalidParameter",
        ),
        (
            Dataset::new(array![[0.0, f32::NAN], [1.0, 0.0]], vec![0, 1], (1, 2), 2),
            "NonFinite",
        ),
        (
            Dataset::new(
                array![[0.0, f32::INFINITY], [1.0, 0.0]],
                vec![0, 1],
                (1, 2),
                2,
            ),
            "NonFinite",
        ),
        (
            Dataset::new(Array2::zeros((0, 2)), vec![], (1, 2), 2),
            "EmptyDataset",
        ),
    ];
    for (i, (res, want)) in cases.into_iter().enumerate() {
        let err = res.expect_err(&format!("case {i}"));
        assert!(format!("{err:?}").starts_with(want), "case {i}: {err:?}");
    }
}

#[test]
fn dataset_accessors_subset_and_head() {
    let ds = indexed(10);
    assert_eq!(ds.len(), 10);
    assert!(!ds.is_empty());
    assert!(ds.image(9).is_some());
    assert!(ds.image(10).is_none());
    assert_eq!(ds.label_counts(), vec![4, 3, 3]);

    let sub = ds.subset(&[7, 2, 7]).unwrap();
    assert_eq!(ids(sub.images()), vec![7, 2, 7]);
    assert_eq!(sub.labels(), &[1, 2, 1]);
    assert_eq!(sub.num_classes(), 3);
    assert!(matches!(ds.subset(&[]), Err(Error::EmptyDataset(_))));
    assert!(matches!(
        ds.subset(&[3, 10]),
        Err(Error::InvalidParameter { .. })
    ));

    let head = ds.head(4).unwrap();
    assert_eq!(ids(head.images()), vec![0, 1, 2, 3]);
    assert_eq!(head.labels(), &[0, 1, 2, 0]);
    assert!(ds.head(10).is_ok());
    assert!(matches!(ds.head(11), Err(Error::InvalidParameter { .. })));
    assert!(matches!(ds.head(0), Err(Error::EmptyDataset(_))));
}

#[test]
fn split_is_disjoint_covering_and_seeded() {
    let ds = indexed(100);
    let (a, b) = ds.split(70, 42).unwrap();
    assert_eq!((a.len(), b.len()), (70, 30));
    let (ia, ib) = (ids(a.images()), ids(b.images()));
    let sa: HashSet<_> = ia.iter().copied().collect();
    let sb: HashSet<_> = ib.iter().copied().collect();
    assert_eq!(sa.len(), 70, "no repeats within a part");
    assert!(sa.is_disjoint(&sb));
    assert_eq!(sa.union(&sb).count(), 100);
    // Labels travel with their images.
    for (i, &l) in ia.iter().zip(a.labels()) {
        assert_eq!(l, i % 3);
    }

    let (a2, b2) = ds.split(70, 42).unwrap();
    assert_eq!(ids(a2.images()), ia);
    assert_eq!(ids(b2.images()), ib);
    let (a3, _) = ds.split(70, 43).unwrap();
    assert_ne!(ids(a3.images()), ia);
    // Not simply the first 70.
    assert_ne!(ia, (0..70).collect::<Vec<_>>());

    for bad in [0, 100, 101] {
        assert!(matches!(
            ds.split(bad, 1),
            Err(Error::InvalidParameter { .. })
        ));
    }
}

#[test]
fn batches_cover_every_example_once_and_are_deterministic() {
    let ds = indexed(103);
    let epoch = |seed| -> Vec<(Vec<usize>, Vec<usize>)> {
        ds.batches(10, seed)
            .unwrap()
            .map(|(x, y)| (ids(x.view()), y))
            .collect()
    };
    let e1 = epoch(5);
    assert_eq!(ds.batches(10, 5).unwrap().len(), 11);
    assert_eq!(e1.len(), 11);
    assert!(e1[..10].iter().all(|(ids, _)| ids.len() == 10));
    assert_eq!(e1[10].0.len(), 3);
    let mut all: Vec<usize> = e1.iter().flat_map(|(ids, _)| ids.clone()).collect();
    assert_ne!(all, (0..103).collect::<Vec<_>>(), "shuffled");
    all.sort_unstable();
    assert_eq!(all, (0..103).collect::<Vec<_>>());
    for (ids, labels) in &e1 {
        assert_eq!(labels, &ids.iter().map(|i| i % 3).collect::<Vec<_>>());
    }
    assert_eq!(epoch(5), e1);
    assert_ne!(epoch(6), e1);
    // Batch size larger than the dataset: one batch of everything.
    assert_eq!(ds.batches(1000, 0).unwrap().count(), 1);
    assert!(matches!(
        ds.batches(0, 0),
        Err(Error::InvalidParameter { .. })
    ));
}

#[test]
fn shuffled_indices_and_gather_into() {
    let ds = indexed(20);
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let perm = ds.shuffled_indices(&mut rng);
    let mut sorted = perm.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..20).collect::<Vec<_>>());

    let mut x = Array2::from_elem((4, 1), -1.0f32);
    let mut y = vec![99; 7];
    ds.gather_into(&perm[..4], &mut x, &mut y).unwrap();
    assert_eq!(ids(x.view()), perm[..4].to_vec());
    assert_eq!(y, perm[..4].iter().map(|i| i % 3).collect::<Vec<_>>());

    let mut wrong_rows = Array2::zeros((3, 1));
    assert!(matches!(
        ds.gather_into(&perm[..4], &mut wrong_rows, &mut y),
        Err(Error::Shape { .. })
    ));
    let mut wrong_cols = Array2::zeros((4, 2));
    assert!(matches!(
        ds.gather_into(&perm[..4], &mut wrong_cols, &mut y),
        Err(Error::Shape { .. })
    ));
    let before = x.clone();
    assert!(matches!(
        ds.gather_into(&[0, 1, 2, 20], &mut x, &mut y),
        Err(Error::InvalidParameter { .. })
    ));
    assert_eq!(x, before, "buffer untouched on error");
}
