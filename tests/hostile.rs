//! Hostile input, issue 13: misbehaving user models, out-of-range indices, oversized
//! settings, and concurrent saves. Every case is a typed error (or a correct result), never a
//! panic.

use blindspot::attack::BoxLbfgsParams;
use blindspot::Check;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use blindspot::attack::{transfer_error, Attack, BoxLbfgs, GaussianNoise, Target};
use blindspot::data::Mnist;
use blindspot::image::Grid;
use blindspot::io::ModelFile;
use blindspot::nn::{Architecture, Network, TrainParams};
use blindspot::probe::{
    bootstrap_mean, compare_means, label_purity, mean_pairwise_distance, MAX_RESAMPLES,
};
use blindspot::{Classifier, Differentiable, Error, Result};
use ndarray::{Array1, Array2, ArrayView2, ArrayViewMut1, ArrayViewMut2};

/// How the fake model misbehaves.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    /// Correct outputs: a linear model.
    None,
    /// `logits` returns one row too many.
    ExtraRow,
    /// `logits` returns no rows.
    NoRows,
    /// `logits` returns the wrong number of columns.
    WrongColumns,
    /// `logits` returns NaN.
    NanLogits,
    /// The loss is NaN.
    NanLoss,
    /// The input gradient is infinite.
    InfGrad,
}

/// A tiny linear classifier over 4 inputs that can be told to misbehave.
struct Fake {
    classes: usize,
    fault: Fault,
}

impl Fake {
    fn new(classes: usize, fault: Fault) -> Self {
        Fake { classes, fault }
    }

    fn scores(&self, x: ArrayView2<'_, f32>) -> Array2<f32> {
        Array2::from_shape_fn((x.nrows(), self.classes), |(i, c)| {
            x.row(i)
                .iter()
                .enumerate()
                .map(|(j, &v)| v * (((j + 2 * c) % 5) as f32 - 2.0))
                .sum()
        })
    }
}

impl Classifier for Fake {
    fn input_dim(&self) -> usize {
        4
    }

    fn num_classes(&self) -> usize {
        self.classes
    }

    fn logits(&self, x: ArrayView2<'_, f32>) -> Result<Array2<f32>> {
        let z = self.scores(x);
        Ok(match self.fault {
            Fault::ExtraRow => Array2::zeros((x.nrows() + 1, self.classes)),
            Fault::NoRows => Array2::zeros((0, self.classes)),
            Fault::WrongColumns => Array2::zeros((x.nrows(), self.classes + 3)),
            Fault::NanLogits => z.mapv(|_| f32::NAN),
            _ => z,
        })
    }
}

impl Differentiable for Fake {
    type Scratch = ();

    fn loss_and_input_grad_with(
        &self,
        x: ArrayView2<'_, f32>,
        labels: &[usize],
        _scratch: &mut (),
        mut losses: ArrayViewMut1<'_, f32>,
        mut grad: ArrayViewMut2<'_, f32>,
    ) -> Result<()> {
        // A smooth stand-in for cross-entropy: distance of the input to a label-dependent
        // corner of the box.
        for (i, &l) in labels.iter().enumerate() {
            let mut loss = 0.0;
            for j in 0..x.ncols() {
                let t = if (j + l) % 2 == 0 { 1.0 } else { 0.0 };
                let d = x[[i, j]] - t;
                loss += d * d;
                grad[[i, j]] = 2.0 * d;
            }
            losses[i] = loss;
        }
        match self.fault {
            Fault::NanLoss => losses.fill(f32::NAN),
            Fault::InfGrad => grad.fill(f32::INFINITY),
            _ => {}
        }
        Ok(())
    }
}

fn x0() -> Array1<f32> {
    Array1::from(vec![0.2, 0.4, 0.6, 0.8])
}

fn fast_attack() -> BoxLbfgs {
    BoxLbfgsParams::default()
        .with_search_steps(1)
        .with_bracket_steps(2)
        .check()
        .unwrap()
}

#[test]
fn a_well_behaved_fake_model_is_attacked() {
    let m = Fake::new(3, Fault::None);
    let out = fast_attack()
        .attack(&m, x0().view(), 0, Target::Label(1))
        .unwrap();
    assert!(out.adversarial.iter().all(|v| (0.0..=1.0).contains(v)));
    GaussianNoise::new(0.1)
        .unwrap()
        .attack(&m, x0().view(), 0, Target::Untargeted)
        .unwrap();
}

#[test]
fn faulty_logits_are_typed_errors_in_attacks_noise_and_transfer() {
    let noise = GaussianNoise::new(0.1).unwrap();
    let xs = Array2::from_shape_fn((3, 4), |(i, j)| ((i + j) % 3) as f32 / 2.0);
    for fault in [
        Fault::ExtraRow,
        Fault::NoRows,
        Fault::WrongColumns,
        Fault::NanLogits,
    ] {
        let m = Fake::new(3, fault);
        let want_shape = fault != Fault::NanLogits;
        let check = |r: Result<_>, what: &str| match r {
            Err(Error::Shape { .. }) if want_shape => {}
            Err(Error::NonFinite { .. }) if !want_shape => {}
            other => panic!("{fault:?} {what}: {:?}", other.map(|_| ())),
        };
        check(
            fast_attack()
                .attack(&m, x0().view(), 0, Target::Label(2))
                .map(|_| ()),
            "box-lbfgs",
        );
        check(
            fast_attack()
                .attack(&m, x0().view(), 0, Target::Untargeted)
                .map(|_| ()),
            "untargeted",
        );
        check(
            noise
                .attack(&m, x0().view(), 0, Target::Random { seed: 3 })
                .map(|_| ()),
            "noise",
        );
        check(
            transfer_error(&m, xs.view(), &[0, 1, 2]).map(|_| ()),
            "transfer",
        );
    }
}

#[test]
fn non_finite_losses_and_gradients_are_typed_errors() {
    for fault in [Fault::NanLoss, Fault::InfGrad] {
        let m = Fake::new(3, fault);
        let r = fast_attack().attack(&m, x0().view(), 0, Target::Label(1));
        // The objective's error comes out of argmin as itself, not as an optimisation failure.
        match r {
            Err(Error::NonFinite { .. }) => {}
            other => panic!("{fault:?}: {:?}", other.map(|_| ())),
        }
    }
}

/// The well-behaved fake model, except that its `nth` loss-and-gradient call (counting from
/// 1) returns the error `fail` makes.
struct FailsOnCall {
    inner: Fake,
    nth: usize,
    calls: AtomicUsize,
    fail: fn() -> Error,
}

impl FailsOnCall {
    fn new(nth: usize, fail: fn() -> Error) -> Self {
        FailsOnCall {
            inner: Fake::new(3, Fault::None),
            nth,
            calls: AtomicUsize::new(0),
            fail,
        }
    }
}

impl Classifier for FailsOnCall {
    fn input_dim(&self) -> usize {
        self.inner.input_dim()
    }

    fn num_classes(&self) -> usize {
        self.inner.num_classes()
    }

    fn logits(&self, x: ArrayView2<'_, f32>) -> Result<Array2<f32>> {
        self.inner.logits(x)
    }
}

impl Differentiable for FailsOnCall {
    type Scratch = ();

    fn loss_and_input_grad_with(
        &self,
        x: ArrayView2<'_, f32>,
        labels: &[usize],
        scratch: &mut (),
        losses: ArrayViewMut1<'_, f32>,
        grad: ArrayViewMut2<'_, f32>,
    ) -> Result<()> {
        if self.calls.fetch_add(1, Ordering::SeqCst) + 1 == self.nth {
            return Err((self.fail)());
        }
        self.inner
            .loss_and_input_grad_with(x, labels, scratch, losses, grad)
    }
}

#[test]
fn a_model_error_inside_the_solver_comes_out_as_itself() {
    fn shape() -> Error {
        Error::Shape {
            what: "fake model input".into(),
            expected: "4".into(),
            got: "5".into(),
        }
    }
    fn non_finite() -> Error {
        Error::NonFinite {
            what: "fake model activations".into(),
        }
    }
    for target in [Target::Label(1), Target::Untargeted] {
        // Failing on the first call, on one midway, and on the last call the healthy model
        // sees: the later ones after the c-search has moved on to other solves.
        let healthy = FailsOnCall::new(usize::MAX, shape);
        let out = fast_attack()
            .attack(&healthy, x0().view(), 0, target)
            .unwrap();
        let calls = healthy.calls.load(Ordering::SeqCst);
        assert!(calls >= 4, "{target:?}: only {calls} gradient calls");
        assert!(out.evaluations > calls, "label checks count too");
        for nth in [1, calls / 2, calls] {
            let m = FailsOnCall::new(nth, shape);
            match fast_attack().attack(&m, x0().view(), 0, target) {
                Err(Error::Shape {
                    what,
                    expected,
                    got,
                }) => assert_eq!(
                    (what.as_str(), expected.as_str(), got.as_str()),
                    ("fake model input", "4", "5")
                ),
                other => panic!("call {nth}, {target:?}: {:?}", other.map(|_| ())),
            }
            assert_eq!(m.calls.load(Ordering::SeqCst), nth, "the attack went on");
            let m = FailsOnCall::new(nth, non_finite);
            match fast_attack().attack(&m, x0().view(), 0, target) {
                Err(Error::NonFinite { what }) => assert_eq!(what, "fake model activations"),
                other => panic!("call {nth}, {target:?}: {:?}", other.map(|_| ())),
            }
        }
    }
}

#[test]
fn untargeted_attack_on_a_one_class_model_is_a_typed_error() {
    let m = Fake::new(1, Fault::None);
    for target in [
        Target::Untargeted,
        Target::Random { seed: 1 },
        Target::Label(0),
    ] {
        let r = BoxLbfgs::new().attack(&m, x0().view(), 0, target);
        assert!(
            matches!(r, Err(Error::InvalidParameter { .. })),
            "{target:?}: {:?}",
            r.map(|_| ())
        );
    }
    let r = GaussianNoise::new(0.1)
        .unwrap()
        .attack(&m, x0().view(), 0, Target::Untargeted);
    assert!(r.is_err());
    // No classes at all.
    let m = Fake::new(0, Fault::None);
    assert!(BoxLbfgs::new()
        .attack(&m, x0().view(), 0, Target::Untargeted)
        .is_err());
}

#[test]
fn oversized_attack_settings_are_typed_errors() {
    for (params, name) in [
        (
            BoxLbfgsParams::default().with_bracket_steps(usize::MAX),
            "bracket_steps",
        ),
        (
            BoxLbfgsParams::default().with_search_steps(usize::MAX),
            "search_steps",
        ),
        (BoxLbfgsParams::default().with_memory(usize::MAX), "memory"),
        (
            BoxLbfgsParams::default().with_max_iters(u64::MAX),
            "max_iters",
        ),
        (
            BoxLbfgsParams::default().with_initial_c(f64::INFINITY),
            "initial_c",
        ),
        (
            BoxLbfgsParams::default().with_tolerances(f64::NAN, 1e-6),
            "pgtol",
        ),
        (
            BoxLbfgsParams::default().with_tolerances(1e-5, -1.0),
            "ftol",
        ),
    ] {
        match params.check() {
            Err(Error::InvalidParameter { name: n, .. }) => assert_eq!(n, name),
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[test]
fn gaussian_noise_rejects_nan_pixels() {
    let noise = GaussianNoise::new(0.1).unwrap();
    let x = Array1::from(vec![0.5, f32::NAN, 0.1]);
    assert!(matches!(
        noise.perturb(x.view(), 1),
        Err(Error::NonFinite { .. })
    ));
    assert!(matches!(
        GaussianNoise::matching(x.view(), 0.1, 1),
        Err(Error::NonFinite { .. })
    ));
    let x = Array1::from(vec![0.5, f32::INFINITY]);
    assert!(noise.perturb(x.view(), 1).is_err());
}

#[test]
fn probe_statistics_reject_bad_indices_nan_and_oversized_counts() {
    let labels = [0, 1, 1];
    assert!(matches!(
        label_purity(&labels, &[0, 3]),
        Err(Error::InvalidParameter { .. })
    ));
    assert!(label_purity(&labels, &[usize::MAX]).is_err());
    let x = Array2::<f32>::zeros((3, 2));
    assert!(mean_pairwise_distance(x.view(), &[0, 7]).is_err());
    let mut y = x.clone();
    y[[1, 1]] = f32::NAN;
    assert!(matches!(
        mean_pairwise_distance(y.view(), &[0, 1]),
        Err(Error::NonFinite { .. })
    ));
    assert!(matches!(
        bootstrap_mean(&[1.0, f64::NAN], 10, 0),
        Err(Error::NonFinite { .. })
    ));
    assert!(compare_means(&[1.0], &[f64::INFINITY], 10, 0).is_err());
    assert!(compare_means(&[f64::MAX, f64::MAX], &[0.0], 10, 0).is_err());
    assert!(bootstrap_mean(&[1.0], MAX_RESAMPLES + 1, 0).is_err());
    assert!(compare_means(&[1.0], &[2.0], usize::MAX, 0).is_err());
}

#[test]
fn grid_sizes_that_overflow_are_typed_errors() {
    let g = Grid::new(28, 28, 10).unwrap();
    assert!(g.clone().try_with_scale(usize::MAX / 2).is_err());
    assert!(g.clone().try_with_scale(1 << 20).is_err());
    assert!(Grid::new(usize::MAX, 2, 1).is_err());
    assert!(Grid::new(1 << 20, 1 << 20, 1).is_err());
    // Many tiles at a large scale: too big to render, and an error rather than a wrap.
    let mut g = Grid::new(1, 1, usize::MAX)
        .unwrap()
        .try_with_scale(8000)
        .unwrap();
    for _ in 0..8 {
        g.push(Array1::from(vec![0.5f32]).view()).unwrap();
    }
    assert!(matches!(g.render(), Err(Error::InvalidParameter { .. })));
}

#[test]
fn training_settings_are_bounded_above() {
    let p = TrainParams::default();
    assert!(p.clone().with_epochs(usize::MAX).check().is_err());
    assert!(TrainParams {
        batch_size: usize::MAX,
        ..p
    }
    .check()
    .is_err());
}

fn temp_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("blindspot-hostile-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn concurrent_saves_all_succeed_and_loads_never_see_half_a_file() {
    let dir = temp_dir("concurrent");
    let path = dir.join("model.npz");
    let arch = Architecture::parse("FC30-10", 64).unwrap();
    let models: Vec<Network> = (0..4).map(|s| Network::new(arch.clone(), s)).collect();
    models[0].save(&path).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    std::thread::scope(|s| {
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (path, done, models) = (&path, done.clone(), &models);
                s.spawn(move || {
                    let mut loads = 0;
                    while !done.load(Ordering::Relaxed) || loads == 0 {
                        let m = Network::load(path).expect("a load during saves");
                        assert!(models.contains(&m), "a load saw a model nobody saved");
                        loads += 1;
                    }
                    loads
                })
            })
            .collect();
        let writers: Vec<_> = (0..8)
            .map(|t| {
                let (path, models) = (&path, &models);
                s.spawn(move || {
                    for i in 0..15 {
                        models[(t + i) % models.len()]
                            .save(path)
                            .expect("a concurrent save");
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        done.store(true, Ordering::Relaxed);
        for r in readers {
            assert!(r.join().unwrap() > 0);
        }
    });
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        left,
        vec![std::ffi::OsString::from("model.npz")],
        "temporaries left behind"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_failed_save_leaves_no_temporary_file() {
    let dir = temp_dir("failed-save");
    // The target is a directory, so the final rename fails after the temporary is written.
    let path = dir.join("occupied.npz");
    std::fs::create_dir(&path).unwrap();
    std::fs::write(path.join("x"), b"x").unwrap();
    let m = Network::new(Architecture::parse("FC10", 4).unwrap(), 0);
    assert!(m.save(&path).is_err());
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("occupied.npz")]);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn model_files_written_by_save_round_trip_through_the_new_reader() {
    let dir = temp_dir("roundtrip");
    let path = dir.join("m.npz");
    let m = Network::new(Architecture::parse("FC7-5-3", 6).unwrap(), 9);
    m.save(&path).unwrap();
    assert_eq!(Network::load(&path).unwrap(), m);
    let bytes = std::fs::read(&path).unwrap();
    let f = ModelFile::from_bytes(&bytes, &path).unwrap();
    assert_eq!(f, m.to_model_file());
    // Any single flipped byte is an error or the same model, never a panic or other weights.
    for i in (0..bytes.len()).step_by(7) {
        let mut b = bytes.clone();
        b[i] ^= 0x5a;
        if let Ok(f) = ModelFile::from_bytes(&b, &path) {
            if let Ok(m2) = Network::from_model_file(f) {
                assert_eq!(m2, m, "byte {i} flipped gave other weights");
            }
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn mnist_load_default_error_names_the_directory_and_the_variable() {
    // Point the default elsewhere through the variable (this test binary's only use of it).
    let dir = temp_dir("no-mnist");
    std::env::set_var("BLINDSPOT_MNIST", &dir);
    let err = Mnist::load_default().unwrap_err();
    std::env::remove_var("BLINDSPOT_MNIST");
    let msg = err.to_string();
    assert!(msg.contains(&dir.display().to_string()), "{msg}");
    assert!(msg.contains("BLINDSPOT_MNIST"), "{msg}");
    std::fs::remove_dir_all(&dir).ok();
}

/// A representation that claims an absurd width but returns a small one.
struct Liar;

impl blindspot::Representation for Liar {
    fn num_layers(&self) -> usize {
        1
    }

    fn layer_dim(&self, _k: usize) -> Result<usize> {
        Ok(usize::MAX / 2)
    }

    fn representation(&self, x: ArrayView2<'_, f32>, _k: usize) -> Result<Array2<f32>> {
        Ok(Array2::zeros((x.nrows(), 3)))
    }
}

#[test]
fn a_representation_claiming_an_absurd_width_is_a_shape_error() {
    let x = Array2::<f32>::zeros((5, 2));
    let r = blindspot::probe::layer_activations(&Liar, x.view(), 0);
    assert!(matches!(r, Err(Error::Shape { .. })), "{:?}", r.map(|_| ()));
    let r = blindspot::probe::top_k(
        &Liar,
        x.view(),
        0,
        &[blindspot::probe::Direction::Unit(0)],
        2,
    );
    assert!(r.is_err());
}

#[test]
fn absurd_widths_are_typed_errors_not_allocations() {
    use blindspot::nn::{Activation, Autoencoder, ConvStage};
    for hidden in [vec![1usize << 40], vec![1 << 16, 1 << 16], vec![usize::MAX]] {
        let e = Architecture::new(784, hidden, 10, Activation::Sigmoid, 0.0).unwrap_err();
        assert!(matches!(e, Error::InvalidParameter { .. }), "{e}");
    }
    assert!(Architecture::parse("FC99999999999-10", 784).is_err());
    assert!(Autoencoder::new(1 << 20, 1 << 20, 0.0, 1).is_err());
    assert!(Autoencoder::new(usize::MAX, 2, 0.0, 1).is_err());
    let wide = ConvStage {
        channels: 1 << 20,
        ..ConvStage::new(1)
    };
    assert!(
        Architecture::new_conv((28, 28, 1), vec![wide], vec![], 10, Activation::Relu, 0.0).is_err()
    );
    // A workspace for an absurd batch is not allocated up front; a real batch still works.
    let m = Network::new(Architecture::parse("FC7-3", 5).unwrap(), 1);
    let mut ws = m.workspace(usize::MAX);
    let x = Array2::<f32>::from_elem((2, 5), 0.5);
    let mut grad = Array2::zeros((2, 5));
    m.loss_and_input_grad_into(
        x.view(),
        &[0, 1],
        &mut ws,
        Array1::zeros(2).view_mut(),
        grad.view_mut(),
    )
    .unwrap();
}

#[test]
fn a_workspace_made_for_another_network_is_rebuilt_not_misused() {
    use blindspot::nn::Trainable;
    let a = Network::new(Architecture::parse("FC7-3", 5).unwrap(), 1);
    // Same first width, different depth and second width: only a full comparison catches it.
    let b = Network::new(Architecture::parse("FC7-9-3", 5).unwrap(), 2);
    let x = Array2::<f32>::from_shape_fn((3, 5), |(i, j)| ((i * 5 + j) % 7) as f32 / 7.0);
    let y = [0, 1, 2];
    let (want_l, want_g) = a.loss_and_input_grad(x.view(), &y).unwrap();
    let mut foreign = b.workspace(3);
    let mut l = Array1::zeros(3);
    let mut g = Array2::zeros((3, 5));
    a.loss_and_input_grad_into(x.view(), &y, &mut foreign, l.view_mut(), g.view_mut())
        .unwrap();
    assert_eq!(l, want_l);
    assert_eq!(g, want_g);
    let zeros = |m: &Network| -> Vec<Array2<f32>> {
        m.params()
            .iter()
            .map(|p| Array2::zeros(p.raw_dim()))
            .collect()
    };
    let (mut g1, mut g2) = (zeros(&a), zeros(&a));
    let mut own = Trainable::workspace(&a, 3);
    let mut foreign = Trainable::workspace(&b, 1);
    let l1 = a
        .accumulate_grad(x.view(), &y, 1.0, &mut g1, &mut own)
        .unwrap();
    let l2 = a
        .accumulate_grad(x.view(), &y, 1.0, &mut g2, &mut foreign)
        .unwrap();
    assert_eq!((l1, &g1), (l2, &g2));
    // Gradient buffers of another network are a typed error.
    let mut wrong = zeros(&b);
    assert!(matches!(
        a.accumulate_grad(x.view(), &y, 1.0, &mut wrong, &mut own),
        Err(Error::Shape { .. })
    ));
}

#[test]
fn huge_finite_inputs_give_finite_results_or_typed_errors() {
    let m = Network::new(Architecture::parse("FC7-3", 5).unwrap(), 1);
    let conv = Network::new(Architecture::parse("CONV2-FC4-3", 16).unwrap(), 1);
    for model in [&m, &conv] {
        let d = model.input_dim();
        // Either finite results (a saturated sigmoid stays finite) or a NonFinite error:
        // never NaN returned as Ok.
        let x = Array2::<f32>::from_shape_fn(
            (2, d),
            |(i, j)| {
                if (i + j) % 3 == 0 {
                    -3e38
                } else {
                    3e38
                }
            },
        );
        match model.logits(x.view()) {
            Ok(z) => assert!(z.iter().all(|v| v.is_finite())),
            Err(e) => assert!(matches!(e, Error::NonFinite { .. }), "{e}"),
        }
        match model.loss_and_input_grad(x.view(), &[0, 1]) {
            Ok((l, g)) => assert!(l.iter().chain(g.iter()).all(|v| v.is_finite())),
            Err(e) => assert!(matches!(e, Error::NonFinite { .. }), "{e}"),
        }
        // Large but representable inputs give finite results.
        let x = Array2::<f32>::from_elem((2, d), 1e3);
        assert!(model
            .logits(x.view())
            .unwrap()
            .iter()
            .all(|v| v.is_finite()));
    }
}

// --- Issue 20: budgets, finiteness, and regular files only.

/// Runs `read` on a thread; if it has not returned after a generous wait it is blocked in
/// `open` on the FIFO `fifo`: give it a writer so that the thread ends, then fail.
#[cfg(unix)]
fn without_blocking<T: Send + 'static>(
    fifo: &std::path::Path,
    read: impl FnOnce() -> T + Send + 'static,
) -> T {
    use std::os::unix::fs::OpenOptionsExt;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(read());
    });
    match rx.recv_timeout(std::time::Duration::from_secs(20)) {
        Ok(v) => v,
        Err(_) => {
            let _ = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(fifo);
            panic!("reading {} blocked", fifo.display());
        }
    }
}

#[cfg(unix)]
#[test]
fn fifos_devices_and_directories_are_refused_not_read() {
    use blindspot::data::read_idx;
    use blindspot::import::NpzWeights;
    use blindspot::nn::{Autoencoder, Network};

    let dir = temp_dir("fifo");
    let fifo = dir.join("pipe.npz");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    type Reader = fn(&std::path::Path) -> Option<Error>;
    let readers: [(&str, Reader); 6] = [
        ("read_idx", |p| read_idx(p).err()),
        ("ModelFile::load", |p| ModelFile::load(p).err()),
        ("Network::load", |p| Network::load(p).err()),
        ("Network::load", |p| Network::load(p).err()),
        ("Autoencoder::load", |p| Autoencoder::load(p).err()),
        ("NpzWeights::open", |p| NpzWeights::open(p).err()),
    ];
    let dev_null = std::path::PathBuf::from("/dev/null");
    for (name, read) in readers {
        let path = fifo.clone();
        let err = without_blocking(&fifo, move || read(&path));
        match err {
            Some(Error::NotRegularFile { path, kind }) => {
                assert_eq!(path, fifo, "{name}");
                assert_eq!(kind, "a FIFO", "{name}");
            }
            other => panic!("{name} on a FIFO: {other:?}"),
        }
        for (other, kind) in [(&dev_null, "a character device"), (&dir, "a directory")] {
            match read(other) {
                Some(Error::NotRegularFile { path, kind: k }) => {
                    assert_eq!(&path, other, "{name}");
                    assert_eq!(k, kind, "{name}");
                }
                e => panic!("{name} on {}: {e:?}", other.display()),
            }
        }
    }
    // Regular files still load, and a missing one is still an I/O error.
    let mlp = Network::new(Architecture::parse("FC3", 4).unwrap(), 0);
    let file = dir.join("m.npz");
    mlp.save(&file).unwrap();
    assert_eq!(Network::load(&file).unwrap(), mlp);
    assert!(matches!(
        read_idx(&dir.join("missing")),
        Err(Error::Io { .. })
    ));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_finite_difference_step_too_small_for_f32_is_raised_to_one_that_moves_the_input() {
    use blindspot::adapters::FiniteDifference;

    let mlp = Network::new(Architecture::parse("FC10", 6).unwrap(), 0);
    // Pixels, and coordinates large enough that even the default step does not move them.
    let x = Array2::from_shape_fn((3, 6), |(i, j)| {
        [0.5f32, 0.0, 1.0, 0.25, 3.0, 1e6][(i + j) % 6]
    });
    let labels = [1, 2, 3];
    for step in [1e-8f32, 1e-30, 1e-2] {
        let fd = FiniteDifference::new(mlp.clone(), step).unwrap();
        let (loss, grad) = fd.loss_and_input_grad(x.view(), &labels).unwrap();
        assert!(loss.iter().all(|v| v.is_finite()), "step {step}: {loss}");
        assert!(grad.iter().all(|v| v.is_finite()), "step {step}: {grad}");
    }
    // Raised, not guessed: at x = 0.5 every step below the f32 spacing there (2^-24) is the
    // spacing itself.
    let half = Array2::from_elem((2, 6), 0.5f32);
    let spacing = 2f32.powi(-24);
    let at = |step: f32| {
        FiniteDifference::new(mlp.clone(), step)
            .unwrap()
            .loss_and_input_grad(half.view(), &[0, 4])
            .unwrap()
            .1
    };
    let reference = at(spacing);
    assert!(reference.iter().all(|v| v.is_finite()));
    assert_eq!(at(1e-8), reference);
    assert_eq!(at(1e-30), reference);
    assert_eq!(at(f32::MIN_POSITIVE), reference);
}

#[test]
fn a_pool_step_with_a_bad_rate_or_an_overflow_is_an_error_not_nan_weights() {
    use blindspot::adversarial_training::step_above;

    let x = Array2::from_elem((2, 4), 0.5f32);
    for lr in [f32::NAN, f32::INFINITY, -1.0, 0.0] {
        let mut model = Network::new(Architecture::parse("FC5-3", 4).unwrap(), 1);
        let before = model.clone();
        match step_above(&mut model, 0, x.view(), &[0, 1], lr) {
            Err(Error::InvalidParameter { name, .. }) => assert_eq!(name, "learning_rate"),
            other => panic!("rate {lr}: {other:?}"),
        }
        assert_eq!(model, before, "rate {lr}: the model changed");
    }
    // A finite rate times a finite gradient can overflow f32: not Ok with infinite weights.
    let mut model = Network::new(Architecture::parse("FC3", 4).unwrap(), 1);
    let big = Array2::from_elem((2, 4), 1000f32);
    let res = step_above(&mut model, 0, big.view(), &[0, 1], f32::MAX);
    assert!(matches!(res, Err(Error::NonFinite { .. })), "{res:?}");
}

#[test]
fn a_probe_study_at_the_separate_maxima_is_refused_before_it_starts() {
    use blindspot::data::Dataset;
    use blindspot::probe::{study, ProbeParams, MAX_DIRECTIONS, MAX_RESAMPLED_VALUES};

    let n = 20;
    let images = Array2::from_shape_fn((n, 16), |(i, j)| ((i * 5 + j * 3) % 7) as f32 / 7.0);
    let data = Dataset::new(images, (0..n).map(|i| i % 4).collect(), (4, 4), 4).unwrap();
    let mlp = Network::new(Architecture::parse("FC10-4", 16).unwrap(), 0);
    // Each setting at its own documented maximum: hours of work.
    let config = ProbeParams::default()
        .with_directions(5, MAX_DIRECTIONS)
        .with_baseline_sets(MAX_RESAMPLES)
        .with_resamples(MAX_RESAMPLES)
        .check()
        .unwrap();
    match study(&mlp, &data, 0, &config) {
        Err(Error::InvalidParameter { name, .. }) => assert_eq!(name, "resamples"),
        other => panic!("{other:?}"),
    }
    // Only the baseline too large: named as the culprit.
    let config = ProbeParams::default()
        .with_baseline_sets(MAX_RESAMPLES)
        .with_directions(5, 5)
        .check()
        .unwrap();
    let data_wide = Dataset::new(
        Array2::from_elem((n, 784), 0.5),
        (0..n).map(|i| i % 4).collect(),
        (28, 28),
        4,
    )
    .unwrap();
    let wide = Network::new(Architecture::parse("FC10-4", 784).unwrap(), 0);
    match study(&wide, &data_wide, 0, &config) {
        Err(Error::InvalidParameter { name, .. }) => assert_eq!(name, "baseline_sets"),
        other => panic!("{other:?}"),
    }
    // The default settings are well within the budget.
    let config = ProbeParams::default()
        .with_directions(5, 50)
        .check()
        .unwrap();
    assert!(study(&mlp, &data, 0, &config).is_ok());
    // The standalone statistics bound resamples × values the same way.
    let values = vec![1.0; 1000];
    assert!(MAX_RESAMPLES * values.len() > MAX_RESAMPLED_VALUES);
    for res in [
        bootstrap_mean(&values, MAX_RESAMPLES, 0).map(|_| ()),
        compare_means(&values, &values, MAX_RESAMPLES, 0).map(|_| ()),
    ] {
        match res {
            Err(Error::InvalidParameter { name, .. }) => assert_eq!(name, "resamples"),
            other => panic!("{other:?}"),
        }
    }
}
