//! Issue 20, the convolution paths: random `CONV` names and settings checked against exact
//! integer arithmetic, then built, run, differentiated and saved; and one test per failure
//! class the issue found (each failed on the code before it: a panic, a wrong `Ok`, or an
//! allocation of gigabytes).
//!
//! The binary counts the largest single allocation (not the live total, which tests running
//! in parallel threads would add up): the big-kernel test asserts that no buffer anywhere
//! in the binary came near a gigabyte, and every other test here allocates a few megabytes
//! at most.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use blindspot::nn::{Activation, Architecture, ConvStage, Network, Trainable, MAX_SIZE};
use blindspot::probe::PreActivations;
use blindspot::{Classifier, Differentiable, Error, Representation};
use ndarray::{s, Array1, Array2, ShapeBuilder};
use proptest::prelude::*;

mod common;
use common::random_batch;

struct LargestAllocation;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to the system allocator with the caller's arguments, so
// its contract is the system allocator's; the counter only observes sizes.
unsafe impl GlobalAlloc for LargestAllocation {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged; the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: forwarded unchanged; the caller upholds `realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: LargestAllocation = LargestAllocation;

fn temp_dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "blindspot-conv-safety-{what}-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The shapes a stage sequence must have on an image, by exact arithmetic in u128 with the
/// documented rules (every setting in 1..=MAX_SIZE, padding in 0..kernel, the kernel within
/// the padded input, the pooling within the map, and the kernel, the output map and one
/// example's unfolded input each at most MAX_SIZE values), or `None` if it must be refused.
fn expected_shapes(
    image: (u128, u128, u128),
    stages: &[[u128; 5]],
) -> Option<Vec<(usize, usize, usize)>> {
    let max = MAX_SIZE as u128;
    let (mut h, mut w, mut c) = image;
    if h == 0 || w == 0 || c == 0 || h * w * c > max {
        return None;
    }
    let mut out = Vec::new();
    for &[d, k, st, p, q] in stages {
        if [d, k, st, q].iter().any(|&v| v == 0 || v > max) || p > max || p >= k {
            return None;
        }
        let (ph, pw) = (h + 2 * p, w + 2 * p);
        if k > ph || k > pw {
            return None;
        }
        let (ho, wo) = ((ph - k) / st + 1, (pw - k) / st + 1);
        if q > ho || q > wo {
            return None;
        }
        if k * k * c * d > max || ho * wo * d > max || ho * wo * k * k * c > max {
            return None;
        }
        (h, w, c) = (ho / q, wo / q, d);
        out.push((h as usize, w as usize, c as usize));
    }
    Some(out)
}

/// A setting: mostly small, sometimes at or past the limits (2^30, 2^31, 2^62, 2^63, 2^64−1).
fn setting() -> impl Strategy<Value = u64> {
    prop_oneof![
        12 => 0u64..7,
        1 => prop::sample::select(vec![
            MAX_SIZE as u64,
            MAX_SIZE as u64 + 1,
            1 << 31,
            1 << 62,
            1 << 63,
            u64::MAX,
        ]),
    ]
}

/// A stage token's parts: channels and options `(key, value)` in any order, repeated or
/// not (the last one of a key counts), or left to their defaults.
fn stage_strategy() -> impl Strategy<Value = (u64, Vec<(usize, u64)>)> {
    (
        prop_oneof![8 => 1u64..5, 1 => setting()],
        prop::collection::vec((0usize..4, setting()), 0..5),
    )
}

/// The name and `[channels, kernel, stride, padding, pool]` of each stage.
fn stage_name(channels: u64, options: &[(usize, u64)]) -> (String, [u128; 5]) {
    let mut text = channels.to_string();
    // Defaults of ConvStage::new: 5×5, stride 1, padding 2, 2×2 pooling.
    let mut values = [channels as u128, 5, 1, 2, 2];
    for &(key, v) in options {
        text.push(['k', 's', 'p', 'q'][key]);
        text.push_str(&v.to_string());
        values[key + 1] = v as u128;
    }
    (text, values)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    /// parse → shapes equal exact arithmetic → build → forward (contiguous and Fortran
    /// order alike) → input gradient → model file → the same network; refused names are
    /// `ModelName` errors. Never a panic.
    #[test]
    fn random_conv_names_parse_to_exact_shapes_and_run(
        image in (1u64..13, 1u64..13, 1u64..4),
        stages in prop::collection::vec(stage_strategy(), 1..3),
        hidden in prop::collection::vec(1usize..6, 0..2),
        classes in 2usize..5,
        decay in prop::sample::select(vec!["", "(0)", "(1e-4)", "(2.5e-3)"]),
        rows in 1usize..4,
        seed in 0u64..1000,
    ) {
        let (texts, settings): (Vec<String>, Vec<[u128; 5]>) =
            stages.iter().map(|(c, o)| stage_name(*c, o)).unzip();
        let dense: Vec<String> =
            hidden.iter().chain([&classes]).map(|v| v.to_string()).collect();
        let name = format!("CONV{}-FC{}{decay}", texts.join("-"), dense.join("-"));
        let img = (image.0 as usize, image.1 as usize, image.2 as usize);
        let want = expected_shapes(
            (image.0 as u128, image.1 as u128, image.2 as u128),
            &settings,
        );
        let got = Architecture::parse_image(&name, img);
        let arch = match (want, got) {
            (None, Err(Error::ModelName { .. })) => return Ok(()),
            (None, other) => panic!("{name} on {img:?}: must be refused, got {other:?}"),
            (Some(_), Err(e)) => panic!("{name} on {img:?}: must be accepted, got {e}"),
            (Some(want), Ok(a)) => {
                prop_assert_eq!(a.conv_shapes(), want, "{} on {:?}", name, img);
                a
            }
        };
        prop_assert_eq!(&Architecture::parse_image(&arch.to_string(), img).unwrap(), &arch);

        let net = Network::new(arch, seed);
        let (x, labels) = random_batch(rows, net.input_dim(), seed);
        let labels: Vec<usize> = labels.iter().map(|&l| l % classes).collect();
        let z = net.logits(x.view()).unwrap();
        let mut xf = Array2::zeros(x.raw_dim().f());
        xf.assign(&x);
        prop_assert_eq!(&net.logits(xf.view()).unwrap(), &z);
        let (losses, grad) = net.loss_and_input_grad(x.view(), &labels).unwrap();
        prop_assert!(losses.iter().chain(grad.iter()).all(|v| v.is_finite()));
        let (_, grad_f) = net.loss_and_input_grad(xf.view(), &labels).unwrap();
        prop_assert_eq!(&grad_f, &grad);

        let back = Network::from_model_file(net.to_model_file()).unwrap();
        prop_assert_eq!(&back, &net);
        if seed % 50 == 0 {
            // Now and then through a real file, as Network::load reads it.
            let dir = temp_dir("prop");
            let file = dir.join(format!("{seed}-{}.npz", rows));
            net.save(&file).unwrap();
            let loaded = Network::load(&file).unwrap();
            std::fs::remove_file(&file).ok();
            prop_assert_eq!(&loaded, &net);
            prop_assert_eq!(loaded.logits(x.view()).unwrap(), z);
        }
    }

    /// Arbitrary text (any characters, digits of other scripts, stray options) where a name
    /// is expected is an error or an architecture, never a panic.
    #[test]
    fn arbitrary_names_never_panic(
        name in "(CONV|FC)?[0-9kspq\\-é１٣(). FCONV]{0,24}",
        raw in "\\PC{0,16}",
        side in 1usize..30,
    ) {
        for n in [&name, &raw, &format!("CONV{raw}-FC2"), &format!("CONV1{raw}-FC2")] {
            let _ = Architecture::parse_image(n, (side, side, 1));
            let _ = Architecture::parse(n, side * side);
            let _ = Architecture::parse(n, usize::MAX);
        }
    }
}

/// A non-ASCII character where a stage option or value is expected (`é`, full-width or
/// Arabic-Indic digits) was sliced on a byte and panicked on a char boundary.
#[test]
fn non_ascii_names_are_errors_not_panics() {
    for name in [
        "CONV1é-FC2",
        "CONV1１-FC2",
        "CONV16k３-FC10",
        "CONV16k٣-FC10",
        "CONV１6-FC10",
        "CONVé-FC2",
        "CONV4kp-FC2",
        "CONV4-FCé",
        "CONV4k3é5-FC2",
        "CONV4-FC10(１e-4)",
    ] {
        match Architecture::parse(name, 784) {
            Err(Error::ModelName { name: n, reason }) => {
                assert_eq!(n, name);
                assert!(!reason.is_empty());
            }
            other => panic!("{name}: {other:?}"),
        }
    }
}

/// A padding of the kernel size or more was accepted, built and loaded, and the first
/// forward pass panicked in im2col ("range end index 2 out of range for slice of length 1").
#[test]
fn padding_not_below_the_kernel_is_refused_with_the_setting_named() {
    for name in [
        "CONV2k1p1-FC2",
        "CONV2k1-FC2",
        "CONV2k3p3-FC2",
        "CONV2k2p5q1-FC2",
    ] {
        let e = Architecture::parse(name, 25).unwrap_err();
        assert!(
            matches!(&e, Error::ModelName { reason, .. } if reason.contains("padding")),
            "{name}: {e}"
        );
    }
    let stage = ConvStage {
        channels: 2,
        kernel: 1,
        stride: 1,
        padding: 2,
        pool: 1,
    };
    let e = Architecture::new_conv((1, 1, 1), vec![stage], vec![], 2, Activation::Relu, 0.0)
        .unwrap_err();
    assert!(
        matches!(&e, Error::InvalidParameter { name: "padding", reason } if reason.contains("stage 0")),
        "{e}"
    );
    // Padding kernel − 1 is the largest accepted, and runs.
    let a = Architecture::parse_image("CONV2k3p2q1-FC2", (1, 1, 1)).unwrap();
    assert_eq!(a.conv_shapes(), vec![(3, 3, 2)]);
    let net = Network::new(a, 1);
    assert!(net.logits(Array2::ones((2, 1)).view()).is_ok());
}

/// `2·padding` wrapped for a padding ≥ 2^63, and such a name was accepted with wrong map
/// sizes; every huge setting is refused against the documented limit instead.
#[test]
fn huge_settings_are_refused_not_wrapped() {
    for name in [
        "CONV2k3p9223372036854775808-FC2",
        "CONV2k3p18446744073709551615-FC2",
        "CONV2k3p4611686018427387904-FC2",
        "CONV2k18446744073709551615-FC2",
        "CONV2k3s18446744073709551615-FC2",
        "CONV2k3p1q18446744073709551615-FC2",
        "CONV18446744073709551615k3p1-FC2",
        "CONV2k3p1073741824-FC2",
    ] {
        assert!(
            matches!(Architecture::parse(name, 784), Err(Error::ModelName { .. })),
            "{name}"
        );
    }
    let huge = ConvStage {
        channels: 1,
        kernel: usize::MAX,
        stride: 1,
        padding: usize::MAX / 2 + 1,
        pool: 1,
    };
    let e = Architecture::new_conv((4, 4, 1), vec![huge], vec![], 2, Activation::Relu, 0.0)
        .unwrap_err();
    assert!(
        matches!(&e, Error::InvalidParameter { name: "kernel", .. }),
        "{e}"
    );
    // A square input so large that side² overflows is an error, not an overflow panic.
    assert!(Architecture::parse("CONV2k3p1-FC2", usize::MAX).is_err());
}

fn conv_net(seed: u64) -> Network {
    let a = Architecture::parse_image("CONV3k3p1-4k3s2p1q1-FC5-3", (8, 6, 2)).unwrap();
    Network::new(a, seed)
}

/// A Fortran-order array or a column-strided view panicked with "workspace rows are
/// contiguous"; every path now gives the contiguous copy's answer, gradient buffers of any
/// layout included.
#[test]
fn fortran_and_strided_inputs_give_the_contiguous_answer() {
    let net = conv_net(3);
    let d = net.input_dim();
    let (x, labels) = random_batch(4, d, 5);
    let labels: Vec<usize> = labels.iter().map(|&l| l % 3).collect();
    let mut fortran = Array2::zeros((4, d).f());
    fortran.assign(&x);
    let mut wide = Array2::zeros((4, 2 * d));
    wide.slice_mut(s![.., ..;2]).assign(&x);
    let strided = wide.slice(s![.., ..;2]);
    let z = net.logits(x.view()).unwrap();
    let (l, g) = net.loss_and_input_grad(x.view(), &labels).unwrap();
    for (what, v) in [("Fortran", fortran.view()), ("strided", strided)] {
        assert!(v.as_slice().is_none(), "{what} is not contiguous");
        assert_eq!(net.logits(v).unwrap(), z, "{what}");
        let (lv, gv) = net.loss_and_input_grad(v, &labels).unwrap();
        assert_eq!((lv, gv), (l.clone(), g.clone()), "{what}");
        for k in 0..net.num_layers() {
            assert_eq!(
                net.representation(v, k).unwrap(),
                net.representation(x.view(), k).unwrap(),
                "{what} layer {k}"
            );
        }
        // Into a Fortran-order gradient buffer, too.
        let mut gf = Array2::zeros((4, d).f());
        let mut losses = Array1::zeros(4);
        let mut ws = net.workspace(4);
        net.loss_and_input_grad_into(v, &labels, &mut ws, losses.view_mut(), gf.view_mut())
            .unwrap();
        assert_eq!(gf, g, "{what} into a Fortran-order buffer");
        // Training on a strided batch gives the contiguous batch's gradients.
        let zeros = || -> Vec<Array2<f32>> {
            net.params()
                .iter()
                .map(|p| Array2::zeros(p.raw_dim()))
                .collect()
        };
        let (mut ga, mut gb) = (zeros(), zeros());
        let mut ws = Trainable::workspace(&net, 4);
        let la = net
            .accumulate_grad(x.view(), &labels, 0.25, &mut ga, &mut ws)
            .unwrap();
        let lb = net
            .accumulate_grad(v, &labels, 0.25, &mut gb, &mut ws)
            .unwrap();
        assert_eq!((la, ga), (lb, gb), "{what} parameter gradients");
    }
}

/// A 57×57 kernel padded by 28 on 28×28 images unfolds to 2.5 M values per image: 2.6 GB of
/// im2col for 256 rows, which aborted. In chunks of at most 64 MiB it completes, gives each
/// row's own answer, and no single allocation comes near a gigabyte.
#[test]
fn big_padded_kernel_on_256_rows_runs_in_bounded_chunks() {
    let a = Architecture::parse_image("CONV2k57p28q1-FC2", (28, 28, 1)).unwrap();
    let net = Network::new(a, 4);
    let (x, labels) = random_batch(256, 784, 6);
    let labels: Vec<usize> = labels.iter().map(|&l| l % 2).collect();
    let z = net.logits(x.view()).unwrap();
    for i in [0, 100, 255] {
        // One row alone is one chunk; the batch is about forty.
        let zi = net.logits(x.slice(s![i..i + 1, ..])).unwrap();
        for (u, v) in z.row(i).iter().zip(zi.row(0)) {
            assert!(
                (u - v).abs() <= 1e-4 * (1.0 + u.abs()),
                "row {i}: {u} vs {v}"
            );
        }
    }
    let (_, g) = net.loss_and_input_grad(x.view(), &labels).unwrap();
    let (_, g0) = net
        .loss_and_input_grad(x.slice(s![..1, ..]), &labels[..1])
        .unwrap();
    for (u, v) in g.row(0).iter().zip(g0.row(0)) {
        assert!(
            (u - v).abs() <= 1e-4 * (1.0 + u.abs()),
            "input gradient: {u} vs {v}"
        );
    }
    let mut grads: Vec<Array2<f32>> = net
        .params()
        .iter()
        .map(|p| Array2::zeros(p.raw_dim()))
        .collect();
    let mut ws = Trainable::workspace(&net, 256);
    net.accumulate_grad(x.view(), &labels, 1.0 / 256.0, &mut grads, &mut ws)
        .unwrap();
    assert!(grads.iter().all(|g| g.iter().all(|v| v.is_finite())));
    let largest = LARGEST.load(Ordering::Relaxed);
    assert!(
        largest <= 128 << 20,
        "largest single allocation {largest} bytes (im2col unchunked is 2.6 GB)"
    );
}

/// A network built for (8, 8, 1) images with no convolutional stage loaded back as
/// (1, 64, 1): the image shape is part of the architecture and round-trips.
#[test]
fn stageless_image_architecture_round_trips_through_a_file() {
    let a = Architecture::new_conv((8, 8, 1), vec![], vec![5], 3, Activation::Relu, 1e-4).unwrap();
    assert_eq!(a.image(), (8, 8, 1));
    let net = Network::new(a, 2);
    let dir = temp_dir("stageless");
    let path = dir.join("net.npz");
    net.save(&path).unwrap();
    let back = Network::load(&path).unwrap();
    assert_eq!(back.arch().image(), (8, 8, 1));
    assert_eq!(back, net);
    // A dense network keeps writing no image, and loads as before.
    let dense = Network::new(Architecture::parse("FC5-3", 64).unwrap(), 2);
    assert!(!dense.to_model_file().meta.contains_key("image"));
    dense.save(&path).unwrap();
    assert_eq!(Network::load(&path).unwrap(), dense);
    // An image that does not multiply to the input width is an error naming the file.
    let mut file = net.to_model_file();
    file.meta.insert("image".into(), "8,4,1".into());
    assert!(Network::from_model_file(file).is_err());
    std::fs::remove_dir_all(&dir).ok();
}

fn non_finite(r: Result<Array2<f32>, Error>, want: &str) {
    match r {
        Err(Error::NonFinite { what }) => assert!(what.contains(want), "{what}"),
        other => panic!("expected NonFinite naming {want}, got {other:?}"),
    }
}

/// Finite but huge pixels (3e38, `f32::MAX`) and huge weights gave NaN or ∞ inside `Ok`
/// from `representation`, the probe's pre-activations, a conv network's last
/// `layer_output` and the input gradient; each is `NonFinite` naming where.
#[test]
fn non_finite_results_are_errors_naming_where() {
    // inf − inf in the first layer's sum: NaN pre-activations and activations.
    let arch = Architecture::parse("FC2-2", 2).unwrap();
    let params = vec![
        Array2::from_shape_vec((2, 2), vec![1.5, 1.0, -1.5, 1.0]).unwrap(),
        Array2::zeros((1, 2)),
        Array2::eye(2),
        Array2::zeros((1, 2)),
    ];
    let fc = Network::from_params(arch, params).unwrap();
    let x = Array2::from_elem((1, 2), f32::MAX);
    non_finite(fc.representation(x.view(), 0), "representation of layer 0");
    non_finite(
        PreActivations(&fc).representation(x.view(), 0),
        "pre-activations of layer 0",
    );
    non_finite(fc.layer_output(x.view(), 0), "output of layer 0");
    let ok = Array2::from_elem((1, 2), 0.5f32);
    assert!(fc.representation(ok.view(), 0).is_ok());

    // A conv network with positive weights on 3e38 pixels: its last layer's output (the
    // logits) overflows.
    let mut conv = conv_net(7);
    for p in conv.params_mut() {
        p.fill(0.5);
    }
    let big = Array2::from_elem((2, conv.input_dim()), 3e38f32);
    let last = conv.layers().len() - 1;
    non_finite(
        conv.layer_output(big.view(), last),
        &format!("output of layer {last}"),
    );

    // Finite logits and loss, infinite gradient: (p − onehot)·Wᵀ = −3e38 − 3e38.
    let arch = Architecture::parse("FC2", 1).unwrap();
    let params = vec![
        Array2::from_shape_vec((1, 2), vec![3e38, -3e38]).unwrap(),
        Array2::from_shape_vec((1, 2), vec![0.0, 100.0]).unwrap(),
    ];
    let tiny = Network::from_params(arch, params).unwrap();
    let zero = Array2::zeros((1, 1));
    assert!(tiny
        .logits(zero.view())
        .unwrap()
        .iter()
        .all(|v| v.is_finite()));
    match tiny.loss_and_input_grad(zero.view(), &[0]) {
        Err(Error::NonFinite { what }) => assert!(what.contains("input gradient"), "{what}"),
        other => panic!("{other:?}"),
    }

    // A conv file with one kernel weight at f32::MAX.
    let conv = conv_net(8);
    let mut file = conv.to_model_file();
    file.arrays[0].1[[4, 0]] = f32::MAX;
    let loaded = Network::from_model_file(file).unwrap();
    let (x, labels) = random_batch(3, loaded.input_dim(), 9);
    let labels: Vec<usize> = labels.iter().map(|&l| l % 3).collect();
    match loaded.loss_and_input_grad(x.view(), &labels) {
        Ok((l, g)) => assert!(l.iter().chain(g.iter()).all(|v| v.is_finite())),
        Err(Error::NonFinite { .. }) => {}
        Err(e) => panic!("{e}"),
    }
}
