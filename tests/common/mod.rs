//! Helpers shared by several test files: each test file that needs them says `mod common;`.
//! A binary uses only some of them, hence `dead_code` is allowed.
#![allow(dead_code)]

pub mod fuzz_harness;
pub mod lockstep;
pub mod rosenbrock;

use blindspot::Check;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use blindspot::data::{Dataset, Mnist};
use blindspot::nn::{train, Architecture, Network, TrainParams, Trainable};
use blindspot::{Classifier, Differentiable, Error};
use ndarray::{Array1, Array2, ArrayView2};
use ndarray_rand::rand_distr::Uniform;
use ndarray_rand::RandomExt;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// MNIST (`BLINDSPOT_MNIST` or data/mnist), read once per test binary: parsing 70,000 images
/// for every test that needs a few of them is most of those tests' time.
pub fn mnist() -> &'static Mnist {
    static MNIST: OnceLock<Mnist> = OnceLock::new();
    MNIST.get_or_init(|| Mnist::load_default().unwrap())
}

/// A small sigmoid network (FC32-10) trained briefly on 3,000 MNIST images, and up to 8
/// held-out images it classifies correctly. Trained once per test binary (about a second of
/// training that every attack test would otherwise repeat); tests only read it.
pub fn small_mnist_model() -> (&'static Network, &'static Dataset) {
    static MODEL: OnceLock<(Network, Dataset)> = OnceLock::new();
    let (m, data) = MODEL.get_or_init(|| {
        let mnist = mnist();
        let arch = Architecture::parse("FC32-10", 784).unwrap();
        let mut m = Network::new(arch, 2);
        let cfg = TrainParams {
            epochs: 4,
            batch_size: 32,
            learning_rate: 0.1,
            ..TrainParams::default()
        }
        .check()
        .unwrap();
        train(&mut m, &mnist.train.head(3000).unwrap(), None, &cfg, |_| {}).unwrap();
        let test = mnist.test.head(200).unwrap();
        let pred = m.predict(test.images()).unwrap();
        let right: Vec<usize> = (0..test.len())
            .filter(|&i| pred[i] == test.labels()[i])
            .take(8)
            .collect();
        let data = test.subset(&right).unwrap();
        (m, data)
    });
    (m, data)
}

/// `n` random inputs of width `d`, uniform in `[0, 1)`, drawn from `seed`.
pub fn random_inputs(n: usize, d: usize, seed: u64) -> Array2<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Array2::random_using((n, d), Uniform::new(0.0f32, 1.0), &mut rng)
}

/// [`random_inputs`] with labels in `0..4` that cycle through every class: the batch of the
/// gradient checks.
pub fn random_batch(n: usize, d: usize, seed: u64) -> (Array2<f32>, Vec<usize>) {
    let y = (0..n).map(|i| (i * 7 + 3) % 4).collect();
    (random_inputs(n, d, seed), y)
}

/// The training objective of any [`Trainable`] model: mean loss over the batch plus the
/// regulariser, in `f64`, which the finite-difference checks difference.
pub fn objective<T: Trainable>(m: &T, x: ArrayView2<f32>, y: &[usize]) -> f64 {
    let mut g: Vec<Array2<f32>> = m
        .params()
        .iter()
        .map(|p| Array2::zeros(p.raw_dim()))
        .collect();
    let mut ws = m.workspace(x.nrows());
    let loss = m.accumulate_grad(x, y, 1.0, &mut g, &mut ws).unwrap() as f64;
    loss / x.nrows() as f64 + m.regularize(&mut g) as f64
}

/// Whether a central difference `fd` and a gradient `g` agree. Central differences on f32
/// parameters: step 1e-3 gives truncation error ~1e-6 and rounding error ~1e-4 on losses of
/// order 1, hence the bound |fd − g| <= 2e-2·max(|fd|, |g|) + 2e-4.
pub fn close(fd: f64, g: f64) -> bool {
    (fd - g).abs() <= 2e-2 * fd.abs().max(g.abs()) + 2e-4
}

/// Asserts that `model`'s gradient call rejects each kind of bad argument with the crate's
/// typed error (the check every model shares, `blindspot::model::check_loss_and_grad_args`),
/// and accepts good ones. Needs a model with at least one input and two classes.
pub fn assert_gradient_arguments_are_checked<M: Differentiable>(model: &M) {
    let (n, m, k) = (2, model.input_dim(), model.num_classes());
    let x = Array2::from_elem((n, m), 0.5f32);
    let labels = vec![1; n];
    let mut scratch = M::Scratch::default();
    let mut call = |x: ArrayView2<f32>, labels: &[usize], losses: usize, grad: (usize, usize)| {
        let mut l = Array1::zeros(losses);
        let mut g = Array2::zeros(grad);
        model.loss_and_input_grad_with(x, labels, &mut scratch, l.view_mut(), g.view_mut())
    };
    call(x.view(), &labels, n, (n, m)).unwrap();
    let shape = |r: Result<(), Error>| match r {
        Err(Error::Shape {
            what,
            expected,
            got,
        }) => (what, expected, got),
        other => panic!("expected a shape error, got {other:?}"),
    };
    let (what, expected, got) = shape(call(x.view(), &labels, n + 1, (n, m)));
    assert_eq!(
        (what.as_str(), expected, got),
        ("losses", n.to_string(), (n + 1).to_string())
    );
    let (what, expected, got) = shape(call(x.view(), &labels, n, (n, m + 1)));
    assert_eq!(
        (what.as_str(), expected, got),
        (
            "input gradient",
            format!("{n} × {m}"),
            format!("{n} × {}", m + 1)
        )
    );
    let (what, ..) = shape(call(x.view(), &labels[..1], n, (n, m)));
    assert_eq!(what, "labels");
    let wide = Array2::from_elem((n, m + 1), 0.5f32);
    let (what, ..) = shape(call(wide.view(), &labels, n, (n, m + 1)));
    assert_eq!(what, "input batch");
    assert!(matches!(
        call(x.view(), &[0, k], n, (n, m)),
        Err(Error::LabelOutOfRange { label, classes, .. }) if label == k && classes == k
    ));
    let empty = Array2::zeros((0, m));
    assert!(matches!(
        call(empty.view(), &[], 0, (0, m)),
        Err(Error::EmptyInput { .. })
    ));
    let mut nan = x.clone();
    nan[[1, m - 1]] = f32::NAN;
    assert!(matches!(
        call(nan.view(), &labels, n, (n, m)),
        Err(Error::NonFinite { .. })
    ));
}

/// A fresh directory under the system temp dir, removed when dropped (the crate has no
/// `tempfile` dev-dependency). The process id and a counter keep parallel tests and
/// concurrent test binaries apart.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// `blindspot-{tag}-{pid}-{n}` under the temp dir, created empty.
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "blindspot-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    /// A path inside the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
