//! Convolutional networks: the convolution against a direct loop, the spectral norms of a
//! layer's own kernel against its forward pass, finite-difference checks of
//! every convolution and pooling gradient (kernels, biases, input; stride 1 and 2; padding),
//! typed errors for bad shapes, and persistence.

use blindspot::nn::{Activation, Architecture, Conv2d, ConvStage, Layer, Network, Trainable};
use blindspot::spectral::{
    conv_power_iteration, layer_bounds, power_iteration, Padding, PowerIterationParams,
};
use blindspot::Check;
use blindspot::{Classifier, Differentiable, Error, Representation};
use ndarray::Array2;
use ndarray_rand::rand_distr::Uniform;
use ndarray_rand::RandomExt;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

mod common;
use common::{objective, random_batch};

fn stage(channels: usize, kernel: usize, stride: usize, padding: usize, pool: usize) -> ConvStage {
    ConvStage {
        channels,
        kernel,
        stride,
        padding,
        pool,
    }
}

/// A small convnet on `(h, w, c)` images with perturbed biases (zero biases would hide their
/// gradients' errors behind symmetric activations).
fn net(
    image: (usize, usize, usize),
    stages: Vec<ConvStage>,
    act: Activation,
    seed: u64,
) -> Network {
    let arch = Architecture::new_conv(image, stages, vec![5], 4, act, 0.01).unwrap();
    let mut m = Network::new(arch, seed);
    let mut rng = ChaCha8Rng::seed_from_u64(seed + 100);
    for p in m.params_mut() {
        if p.nrows() == 1 {
            p.assign(&Array2::random_using(
                p.raw_dim(),
                Uniform::new(-0.3f32, 0.3),
                &mut rng,
            ));
        }
    }
    m
}

/// Central differences, with kinks accounted for: where a ReLU or a max-pooling switch lies
/// inside the step, the central difference averages two slopes, and backprop (which follows
/// the branch at the unperturbed point) must then equal one of the one-sided slopes instead.
/// Smooth points: |fd − g| <= 2e-2·max(|fd|, |g|) + 3e-4 (f32 rounding at step 1e-3 on losses
/// of order 1); one-sided slopes carry an extra h·f'' error, hence 2e-3 for them.
fn check(f: impl Fn(f32) -> f64, g: f64, what: &str, kinks: &mut usize) {
    let h = 1e-3f32;
    let (up, mid, down) = (f(h), f(0.0), f(-h));
    let fd = (up - down) / (2.0 * h as f64);
    if (fd - g).abs() <= 2e-2 * fd.abs().max(g.abs()) + 3e-4 {
        return;
    }
    let (right, left) = ((up - mid) / h as f64, (mid - down) / h as f64);
    let near = |s: f64| (s - g).abs() <= 2e-2 * s.abs().max(g.abs()) + 2e-3;
    assert!(
        near(right) || near(left),
        "{what}: backprop {g} vs finite differences {fd} (one-sided {left}, {right})"
    );
    *kinks += 1;
}

fn check_param_grads(m: &mut Network, n: usize) {
    let (x, y) = random_batch(n, m.input_dim(), 11);
    let mut grads: Vec<Array2<f32>> = m
        .params()
        .iter()
        .map(|p| Array2::zeros(p.raw_dim()))
        .collect();
    let mut ws = Trainable::workspace(&*m, n);
    m.accumulate_grad(x.view(), &y, 1.0 / n as f32, &mut grads, &mut ws)
        .unwrap();
    m.regularize(&mut grads);
    let (mut checked, mut skipped) = (0, 0);
    #[allow(clippy::needless_range_loop)] // p indexes both the gradients and the model
    for p in 0..grads.len() {
        for idx in 0..grads[p].len() {
            let (r, c) = (idx / grads[p].ncols(), idx % grads[p].ncols());
            let orig = m.params()[p][[r, c]];
            let f = |d: f32| {
                let mut m2 = m.clone();
                m2.params_mut()[p][[r, c]] = orig + d;
                objective(&m2, x.view(), &y)
            };
            check(
                f,
                grads[p][[r, c]] as f64,
                &format!("param {p} [{r},{c}]"),
                &mut skipped,
            );
            checked += 1;
        }
    }
    // One near-tie in a pooling window puts every pixel of two receptive fields on a kink.
    assert!(
        skipped * 4 <= checked,
        "{skipped} of {checked} parameters sat on a kink"
    );
}

fn check_input_grad(m: &Network, n: usize) {
    let (x, y) = random_batch(n, m.input_dim(), 12);
    let (losses, grad) = m.loss_and_input_grad(x.view(), &y).unwrap();
    let (mut checked, mut skipped) = (0, 0);
    for i in 0..n {
        for j in 0..m.input_dim() {
            let f = |d: f32| {
                let mut x2 = x.row(i).to_owned().insert_axis(ndarray::Axis(0));
                x2[[0, j]] += d;
                m.loss_and_input_grad(x2.view(), &y[i..=i]).unwrap().0[0] as f64
            };
            assert!((f(0.0) - losses[i] as f64).abs() < 1e-4 * (1.0 + losses[i].abs() as f64));
            check(
                f,
                grad[[i, j]] as f64,
                &format!("input [{i},{j}]"),
                &mut skipped,
            );
            checked += 1;
        }
    }
    assert!(
        skipped * 4 <= checked,
        "{skipped} of {checked} inputs sat on a kink"
    );
}

/// `(H, W, C, D)` of [`one_conv`].
const ONE_CONV: (usize, usize, usize, usize) = (7, 6, 2, 3);

/// A network whose representation 0 is one `k × k` convolution (stride `s`, padding `p`) of
/// [`ONE_CONV`]'s shape: identity activation, no pooling.
fn one_conv(k: usize, s: usize, p: usize, seed: u64) -> Network {
    let (h, w, c, d) = ONE_CONV;
    net(
        (h, w, c),
        vec![stage(d, k, s, p, 1)],
        Activation::Identity,
        seed,
    )
}

fn first_conv(m: &Network) -> &Conv2d {
    let Layer::Conv2d(conv) = &m.layers()[0] else {
        panic!("first layer is the convolution")
    };
    conv
}

#[test]
fn convolution_equals_a_direct_loop() {
    for (k, s, p) in [(3, 1, 1), (3, 2, 0), (5, 2, 2), (2, 1, 0)] {
        let (h, w, c, d) = ONE_CONV;
        let m = one_conv(k, s, p, 5);
        let conv = first_conv(&m);
        let kernel = conv.kernel().unwrap();
        let bias = conv.bias();
        let (x, _) = random_batch(2, h * w * c, 3);
        let got = m.representation(x.view(), 0).unwrap();
        let (ho, wo) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
        assert_eq!(got.ncols(), ho * wo * d);
        for e in 0..2 {
            for i in 0..ho {
                for j in 0..wo {
                    for o in 0..d {
                        let mut v = bias[[0, o]] as f64;
                        for a in 0..k {
                            for b in 0..k {
                                let (ii, jj) = (
                                    (i * s + a) as isize - p as isize,
                                    (j * s + b) as isize - p as isize,
                                );
                                if ii < 0 || jj < 0 || ii >= h as isize || jj >= w as isize {
                                    continue;
                                }
                                for ci in 0..c {
                                    let xv = x[[e, (ii as usize * w + jj as usize) * c + ci]];
                                    v += (kernel[[a, b, ci, o]] * xv) as f64;
                                }
                            }
                        }
                        let g = got[[e, (i * wo + j) * d + o]] as f64;
                        assert!(
                            (g - v).abs() < 1e-5,
                            "k{k} s{s} p{p} ({e},{i},{j},{o}): {g} vs {v}"
                        );
                    }
                }
            }
        }
    }
}

/// `spectral::conv` reads a layer's kernel, input and output in the network's own layout: the
/// direction power iteration finds (an `(H, W, C)` array) is stretched by the network's own
/// convolution exactly as much as power iteration says, into the `(H_out, W_out, D)` output it
/// reports; that norm is the largest singular value of the network's map written out as a
/// dense matrix; and the layer's Fourier bound is at least that norm.
#[test]
fn spectral_norms_of_the_layers_own_kernel_match_its_forward_pass() {
    for (k, s, p) in [(3, 1, 1), (3, 2, 0), (5, 2, 2)] {
        let (h, w, c, d) = ONE_CONV;
        let m = one_conv(k, s, p, 9);
        let conv = first_conv(&m);
        // The layer's linear part: its output less the bias (its output at 0).
        let linear = |x: &Array2<f32>| {
            let zero = Array2::<f32>::zeros((1, h * w * c));
            let bias = m.representation(zero.view(), 0).unwrap();
            m.representation(x.view(), 0).unwrap() - &bias
        };
        let config = PowerIterationParams::new(1e-10, 200_000)
            .with_seed(3)
            .check()
            .unwrap();
        let est = conv_power_iteration(
            conv.kernel().unwrap().view(),
            h,
            w,
            s,
            Padding::Zero(p),
            &config,
        )
        .unwrap();
        let (ho, wo, _) = conv.output_shape();
        assert_eq!(est.input.dim(), (h, w, c));
        assert_eq!(est.output.dim(), (ho, wo, d));
        let v = Array2::from_shape_fn((1, h * w * c), |(_, j)| {
            est.input.as_slice().unwrap()[j] as f32
        });
        let y = linear(&v);
        let stretch = y.iter().map(|&e| f64::from(e).powi(2)).sum::<f64>().sqrt();
        let close = |a: f64, b: f64, what: &str| {
            assert!(
                (a - b).abs() <= 1e-4 * b.abs().max(1.0),
                "k{k} s{s} p{p} {what}: {a} vs {b}"
            )
        };
        close(stretch, est.value, "‖conv(v)‖");
        for (got, want) in y.iter().zip(est.output.iter()) {
            close(f64::from(*got) / est.value, *want, "output direction");
        }
        // The network's map as a dense `in × out` matrix, one basis vector per row.
        let eye = Array2::<f32>::eye(h * w * c);
        let dense = linear(&eye);
        let sigma = power_iteration(dense.view(), &config).unwrap().value;
        close(sigma, est.value, "dense matrix norm");
        let bound = layer_bounds(&m).unwrap()[0].operator_norm;
        assert!(
            bound >= sigma * (1.0 - 1e-6),
            "k{k} s{s} p{p}: bound {bound} < norm {sigma}"
        );
    }
}

#[test]
fn max_pooling_takes_window_maxima() {
    let m = net(
        (4, 4, 1),
        vec![stage(1, 1, 1, 0, 2)],
        Activation::Identity,
        1,
    );
    let conv = first_conv(&m);
    let (wk, b) = (conv.weight()[[0, 0]], conv.bias()[[0, 0]]);
    let x = Array2::from_shape_fn((1, 16), |(_, i)| ((i * 7) % 16) as f32 / 16.0);
    let got = m.representation(x.view(), 0).unwrap();
    for (o, (i0, j0)) in [(0, 0), (0, 2), (2, 0), (2, 2)].into_iter().enumerate() {
        let window = [(i0, j0), (i0, j0 + 1), (i0 + 1, j0), (i0 + 1, j0 + 1)];
        let want = window
            .iter()
            .map(|&(i, j)| wk * x[[0, i * 4 + j]] + b)
            .fold(f32::NEG_INFINITY, f32::max);
        assert!((got[[0, o]] - want).abs() < 1e-6);
    }
}

#[test]
fn convolution_and_pooling_gradients_match_finite_differences() {
    let cases = [
        (
            "stride 1, padding 1, pool 2",
            vec![stage(3, 3, 1, 1, 2)],
            (6, 6, 2),
        ),
        (
            "stride 2, no padding, no pool",
            vec![stage(3, 3, 2, 0, 1)],
            (7, 7, 2),
        ),
        (
            "stride 2, padding 2, pool 2",
            vec![stage(2, 5, 2, 2, 2)],
            (8, 8, 1),
        ),
        (
            "two stages",
            vec![stage(3, 3, 1, 1, 2), stage(4, 3, 1, 1, 2)],
            (8, 8, 1),
        ),
    ];
    for act in [Activation::Tanh, Activation::Relu] {
        for (what, stages, image) in &cases {
            let mut m = net(*image, stages.clone(), act, 3);
            check_param_grads(&mut m, 3);
            check_input_grad(&m, 2);
            eprintln!("{act:?} {what}: ok");
        }
    }
}

#[test]
fn bad_convolution_shapes_are_typed_errors() {
    let bad = |image, stages: Vec<ConvStage>| {
        Architecture::new_conv(image, stages, vec![4], 3, Activation::Relu, 0.0).unwrap_err()
    };
    for e in [
        bad((5, 5, 1), vec![stage(2, 7, 1, 0, 1)]), // kernel larger than the input
        bad((5, 5, 1), vec![stage(2, 3, 0, 1, 1)]), // zero stride
        bad((5, 5, 1), vec![stage(0, 3, 1, 1, 1)]), // no channels
        bad((4, 4, 1), vec![stage(2, 3, 1, 1, 8)]), // pooling larger than the map
        bad((0, 5, 1), vec![stage(2, 3, 1, 1, 1)]), // empty image
        bad((1 << 20, 1 << 20, 1), vec![stage(2, 3, 1, 1, 1)]), // absurd size
    ] {
        assert!(matches!(e, Error::InvalidParameter { .. }), "{e}");
    }
    for name in [
        "CONV",
        "CONV16-32",
        "CONVx-FC10",
        "CONV16z3-FC10",
        "CONV16k99-FC10",
    ] {
        let e = Architecture::parse(name, 784).unwrap_err();
        assert!(matches!(e, Error::ModelName { .. }), "{name}: {e}");
    }
    // 785 is not a square image.
    assert!(Architecture::parse("CONV4-FC10", 785).is_err());
    let m = Network::new(Architecture::parse("CONV2-FC10", 784).unwrap(), 1);
    let x = Array2::<f32>::zeros((2, 783));
    assert!(matches!(m.logits(x.view()), Err(Error::Shape { .. })));
}

#[test]
fn names_round_trip_and_describe_the_stack() {
    let a = Architecture::parse("CONV16-32k3p1q1-FC128-10(1e-4)", 784).unwrap();
    assert_eq!(a.to_string(), "CONV16-32k3p1q1-FC128-10(1e-4)");
    assert_eq!(Architecture::parse(&a.to_string(), 784).unwrap(), a);
    assert_eq!(a.conv_shapes(), vec![(14, 14, 16), (14, 14, 32)]);
    assert_eq!(a.activation(), Activation::Relu);
    let m = Network::new(a, 1);
    // conv, relu, pool, conv, relu, dense, relu, dense; readable: pool, relu, relu.
    assert_eq!(m.layers().len(), 8);
    assert_eq!(m.num_layers(), 3);
    assert_eq!(m.layer_dim(0).unwrap(), 14 * 14 * 16);
    assert_eq!(m.layer_dim(2).unwrap(), 128);
    assert_eq!(m.num_dense(), 2);
}

#[test]
fn conv_network_round_trips_through_a_file_and_corrupt_files_are_errors() {
    let dir = std::env::temp_dir().join(format!("blindspot-conv-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("conv.npz");
    let arch = Architecture::new_conv(
        (9, 7, 2),
        vec![stage(3, 3, 2, 1, 1)],
        vec![6],
        4,
        Activation::Relu,
        1e-3,
    )
    .unwrap();
    let m = net(
        arch.image(),
        arch.conv_stages().to_vec(),
        Activation::Relu,
        9,
    );
    m.save(&path).unwrap();
    let back = Network::load(&path).unwrap();
    assert_eq!(back, m);
    let (x, _) = random_batch(3, m.input_dim(), 1);
    assert_eq!(back.logits(x.view()).unwrap(), m.logits(x.view()).unwrap());

    // A kernel of the wrong shape is named.
    let mut file = m.to_model_file();
    file.arrays[0].1 = Array2::zeros((5, 3));
    file.save(&path).unwrap();
    let e = Network::load(&path).unwrap_err().to_string();
    assert!(e.contains("K0"), "{e}");
    // A truncated file is an error, not a panic.
    m.save(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    assert!(Network::load(&path).is_err());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn training_is_deterministic_and_batch_equals_single() {
    let m = net((8, 8, 1), vec![stage(3, 3, 1, 1, 2)], Activation::Relu, 2);
    let (x, y) = random_batch(5, 64, 4);
    let (l, g) = m.loss_and_input_grad(x.view(), &y).unwrap();
    for i in 0..5 {
        let xi = x.row(i).insert_axis(ndarray::Axis(0));
        let (li, gi) = m.loss_and_input_grad(xi, &y[i..=i]).unwrap();
        assert!((li[0] - l[i]).abs() < 1e-5);
        for (a, b) in gi.row(0).iter().zip(g.row(i)) {
            assert!((a - b).abs() < 1e-5);
        }
    }
    let z = m.logits(x.view()).unwrap();
    assert_eq!(z.dim(), (5, 4));
    assert_eq!(
        Network::new(m.arch().clone(), 2).params(),
        Network::new(m.arch().clone(), 2).params()
    );
}

/// The input gradient reads a transpose of each kernel made on first use: changing the
/// weights through `Trainable::params_mut` after an evaluation must not leave it stale. A
/// network evaluated, then given another network's weights, must answer as that network does.
#[test]
fn weights_changed_after_an_evaluation_are_used() {
    let arch = Architecture::parse("CONV4-6-FC8-4", 64).unwrap();
    let mut a = Network::new(arch.clone(), 1);
    let b = Network::new(arch, 2);
    let (x, labels) = random_batch(3, 64, 5);
    let (_, before) = a.loss_and_input_grad(x.view(), &labels).unwrap();
    for (dst, src) in a.params_mut().into_iter().zip(b.params()) {
        dst.assign(src);
    }
    let (la, ga) = a.loss_and_input_grad(x.view(), &labels).unwrap();
    let (lb, gb) = b.loss_and_input_grad(x.view(), &labels).unwrap();
    assert_ne!(
        before, gb,
        "the two initialisations must differ for this test to mean anything"
    );
    assert_eq!(la, lb);
    assert_eq!(ga, gb);
}

/// `Trainable::params_mut` hands out the parameter arrays themselves: one replaced by an
/// array of another shape is a typed error at every evaluation, training step, bound and
/// kernel view, never a panic or a silent answer from misread weights.
#[test]
fn parameters_replaced_with_another_shape_are_errors() {
    use blindspot::nn::{train, TrainParams};
    for name in ["FC10-4", "CONV4-6-FC8-4"] {
        let arch = Architecture::parse(name, 64).unwrap();
        let count = Network::new(arch.clone(), 1).params().len();
        for k in 0..count {
            let mut net = Network::new(arch.clone(), 1);
            let shape = net.params()[k].dim();
            *net.params_mut()[k] = Array2::zeros((shape.0 + 1, shape.1));
            let (x, labels) = random_batch(2, 64, 3);
            let shape_error = |r: Result<(), Error>, what: &str| match r {
                Err(Error::Shape { what: w, .. }) => {
                    assert!(w.contains(&format!("parameter {k}")), "{name} {what}: {w}")
                }
                other => panic!("{name}, parameter {k}, {what}: {other:?}"),
            };
            shape_error(net.logits(x.view()).map(|_| ()), "logits");
            shape_error(net.predict(x.view()).map(|_| ()), "predict");
            shape_error(
                net.loss_and_input_grad(x.view(), &labels).map(|_| ()),
                "input gradient",
            );
            shape_error(
                net.representation(x.view(), 0).map(|_| ()),
                "representation",
            );
            shape_error(layer_bounds(&net).map(|_| ()), "layer bounds");
            let config = TrainParams::default().with_epochs(1).check().unwrap();
            let data = blindspot::data::Dataset::new(x.clone(), labels.clone(), (8, 8), 4).unwrap();
            let trained = train(&mut net, &data, None, &config, |_| {});
            assert!(trained.is_err(), "{name}, parameter {k}: training ran");
            if let Some(Layer::Conv2d(c)) = net.layers().first() {
                if k == 0 {
                    assert!(matches!(c.kernel(), Err(Error::Shape { .. })));
                }
            }
        }
    }
}
