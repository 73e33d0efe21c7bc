//! The Fourier (§4.3) operator norm of convolutions against power iteration on the explicit
//! operator, known optima, values recorded from earlier versions, and typed errors. Run with
//! `--nocapture` to see the tables.

use blindspot::nn::{Architecture, Layer, Network};
use blindspot::spectral::{
    conv_operator_norm, conv_operator_norm_padded, conv_power_iteration, layer_bounds,
    power_iteration, zero_padding_grid, Padding, PowerIterationConfig, PowerIterationParams,
};
use blindspot::Check;
use blindspot::Error;
use ndarray::{array, Array2, Array4};
use ndarray_rand::rand_distr::StandardNormal;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const TOL: f64 = 1e-12;

/// Checked power-iteration settings for a test.
fn power_config(tol: f64, max_iter: usize, seed: u64) -> PowerIterationConfig {
    PowerIterationParams::new(tol, max_iter)
        .with_seed(seed)
        .check()
        .unwrap()
}
const MAX_ITER: usize = 500_000;

/// A `(kh, kw, C, D)` kernel of standard normal entries.
fn gaussian_kernel(shape: (usize, usize, usize, usize), seed: u64) -> Array4<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Array4::from_shape_simple_fn(shape, || rng.sample::<f32, _>(StandardNormal))
}

/// (D, C, k, H, W, stride)
const CIRCULAR_CASES: &[(usize, usize, usize, usize, usize, usize)] = &[
    (1, 1, 3, 8, 8, 1),
    (4, 3, 3, 8, 8, 1),
    (2, 5, 3, 6, 10, 1),
    (6, 2, 5, 8, 8, 1),
    (2, 3, 2, 7, 5, 1),
    (3, 2, 3, 8, 8, 2),
    (8, 1, 3, 8, 6, 2),
    (4, 3, 5, 12, 10, 2),
    // Kernel larger than the 2 × 2 polyphase grid: taps wrap around.
    (2, 2, 5, 4, 4, 2),
    (3, 2, 4, 9, 6, 3),
];

#[test]
fn fourier_equals_circular_power_iteration() {
    println!(
        "{:>2} {:>2} {:>2} {:>3} {:>3} {:>2} | {:>14} {:>14} {:>9} {:>6}",
        "D", "C", "k", "H", "W", "s", "fourier", "power iter", "rel diff", "iters"
    );
    for (i, &(d, c, k, h, w, s)) in CIRCULAR_CASES.iter().enumerate() {
        let kernel = gaussian_kernel((k, k, c, d), 100 + i as u64);
        let f = conv_operator_norm(kernel.view(), h, w, s).unwrap();
        assert_eq!(f.method, "fourier");
        assert_eq!(f.phase_grid, (h / s, w / s));
        assert_eq!(f.matrix_shape, (d, c * s * s));
        let p = conv_power_iteration(
            kernel.view(),
            h,
            w,
            s,
            Padding::Circular,
            &power_config(TOL, MAX_ITER, 7 + i as u64),
        )
        .unwrap();
        let rel = (f.value - p.value).abs() / f.value;
        println!(
            "{d:>2} {c:>2} {k:>2} {h:>3} {w:>3} {s:>2} | {:>14.9} {:>14.9} {rel:>9.2e} {:>6}",
            f.value, p.value, p.iterations
        );
        assert!(
            rel <= 1e-4,
            "case {:?}: fourier {} vs power iteration {}",
            CIRCULAR_CASES[i],
            f.value,
            p.value
        );
        assert_eq!(p.input.dim(), (h, w, c));
        assert_eq!(p.output.dim(), (h / s, w / s, d));
    }
}

/// (D, C, k, H, W, stride, padding)
const PADDED_CASES: &[(usize, usize, usize, usize, usize, usize, usize)] = &[
    (1, 1, 3, 8, 8, 1, 1),
    (1, 1, 3, 8, 8, 1, 0),
    (4, 3, 3, 8, 8, 1, 1),
    (4, 3, 3, 8, 8, 1, 0),
    (3, 5, 5, 7, 9, 1, 2),
    (3, 5, 5, 7, 9, 1, 0),
    (3, 2, 3, 8, 8, 2, 1),
    (3, 2, 3, 8, 8, 2, 0),
    (5, 2, 5, 9, 7, 2, 2),
    (5, 2, 5, 9, 7, 2, 0),
    (2, 2, 3, 5, 5, 1, 4),
];

#[test]
fn fourier_bounds_zero_padded_power_iteration() {
    println!(
        "{:>2} {:>2} {:>2} {:>3} {:>3} {:>2} {:>2} | {:>7} {:>12} {:>12} {:>12}",
        "D", "C", "k", "H", "W", "s", "p", "grid", "fourier", "H+2p grid", "power iter"
    );
    for (i, &(d, c, k, h, w, s, pad)) in PADDED_CASES.iter().enumerate() {
        let kernel = gaussian_kernel((k, k, c, d), 200 + i as u64);
        let bound = conv_operator_norm_padded(kernel.view(), h, w, s, Padding::Zero(pad)).unwrap();
        assert_eq!(bound.grid, zero_padding_grid((k, k), h, w, s, pad).unwrap());
        // The looser grid suggested by "H + 2p", rounded up to the stride, is valid too.
        let wide = conv_operator_norm(
            kernel.view(),
            (h + 2 * pad).div_ceil(s) * s,
            (w + 2 * pad).div_ceil(s) * s,
            s,
        )
        .unwrap();
        let p = conv_power_iteration(
            kernel.view(),
            h,
            w,
            s,
            Padding::Zero(pad),
            &power_config(TOL, MAX_ITER, 31 + i as u64),
        )
        .unwrap();
        println!(
            "{d:>2} {c:>2} {k:>2} {h:>3} {w:>3} {s:>2} {pad:>2} | {:>3}x{:<3} {:>12.6} {:>12.6} {:>12.6}",
            bound.grid.0, bound.grid.1, bound.value, wide.value, p.value
        );
        for (name, b) in [("tight grid", bound.value), ("H+2p grid", wide.value)] {
            assert!(
                b >= p.value * (1.0 - 1e-6),
                "case {:?}: {name} bound {b} < zero-padded norm {}",
                PADDED_CASES[i],
                p.value
            );
        }
        let out = |n: usize| (n + 2 * pad - k) / s + 1;
        assert_eq!(p.output.dim(), (out(h), out(w), d));
    }
}

#[test]
fn circular_padding_helper_is_the_plain_method() {
    let kernel = gaussian_kernel((3, 3, 2, 3), 5);
    let a = conv_operator_norm(kernel.view(), 8, 6, 2).unwrap();
    let b = conv_operator_norm_padded(kernel.view(), 8, 6, 2, Padding::Circular).unwrap();
    assert_eq!(a, b);
}

#[test]
fn one_by_one_kernel_gives_largest_singular_value_of_the_matrix() {
    // A 1 × 1 kernel is a C × D matrix applied to every pixel, as a dense layer's `in × out`
    // weights are. Known values: diag(3, −5) padded with a zero row.
    let m = array![[3.0f32, 0.0], [0.0, -5.0], [0.0, 0.0]];
    let kernel = m.clone().into_shape_with_order((1, 1, 3, 2)).unwrap();
    for s in [1, 2] {
        let f = conv_operator_norm(kernel.view(), 6, 4, s).unwrap();
        assert!((f.value - 5.0).abs() < 1e-12, "stride {s}: {}", f.value);
    }
    // A random 5 × 3 matrix against the dense power iteration.
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let m = Array2::from_shape_simple_fn((5, 3), || rng.sample::<f32, _>(StandardNormal));
    let dense = power_iteration(m.view(), &power_config(1e-14, 1_000_000, 1))
        .unwrap()
        .value;
    let kernel = m.into_shape_with_order((1, 1, 5, 3)).unwrap();
    for s in [1, 2] {
        let f = conv_operator_norm(kernel.view(), 4, 6, s).unwrap();
        assert!(
            (f.value - dense).abs() <= 1e-9 * dense,
            "{} vs {dense}",
            f.value
        );
    }
}

#[test]
fn delta_kernel_has_norm_one() {
    for (k, a, b) in [(1, 0, 0), (3, 1, 1), (3, 0, 2), (5, 4, 3)] {
        let mut kernel = Array4::<f32>::zeros((k, k, 1, 1));
        kernel[[a, b, 0, 0]] = 1.0;
        for s in [1, 2] {
            let f = conv_operator_norm(kernel.view(), 8, 8, s).unwrap();
            assert!(
                (f.value - 1.0).abs() < 1e-12,
                "k {k} tap ({a},{b}) s {s}: {}",
                f.value
            );
        }
    }
}

#[test]
fn constant_kernel_has_norm_abs_a_times_k_squared() {
    for (k, a) in [(3usize, -0.7f32), (5, 0.25), (2, 3.0)] {
        let kernel = Array4::<f32>::from_elem((k, k, 1, 1), a);
        let f = conv_operator_norm(kernel.view(), 10, 10, 1).unwrap();
        let want = f64::from(a).abs() * (k * k) as f64;
        assert!(
            (f.value - want).abs() <= 1e-12 * want,
            "{} vs {want}",
            f.value
        );
        assert_eq!(f.argmax, (0, 0));
    }
    // A zero kernel has norm 0 (not an error).
    let zero = Array4::<f32>::zeros((3, 3, 3, 2));
    assert_eq!(conv_operator_norm(zero.view(), 4, 4, 1).unwrap().value, 0.0);
    let p = conv_power_iteration(
        zero.view(),
        4,
        4,
        1,
        Padding::Zero(1),
        &power_config(TOL, 10, 0),
    )
    .unwrap();
    assert_eq!(p.value, 0.0);
}

fn assert_shape<T: std::fmt::Debug>(r: Result<T, Error>) {
    assert!(matches!(r, Err(Error::Shape { .. })), "{r:?}");
}

fn assert_param<T: std::fmt::Debug>(r: Result<T, Error>, want: &str) {
    match r {
        Err(Error::InvalidParameter { name, .. }) => assert_eq!(name, want),
        other => panic!("expected InvalidParameter({want}), got {other:?}"),
    }
}

fn pi(
    k: &Array4<f32>,
    h: usize,
    w: usize,
    s: usize,
    pad: Padding,
) -> Result<blindspot::spectral::ConvNormEstimate, Error> {
    conv_power_iteration(k.view(), h, w, s, pad, &power_config(1e-6, 100, 0))
}

#[test]
fn empty_kernels_are_shape_errors() {
    for shape in [(3, 3, 1, 0), (3, 3, 0, 1), (0, 3, 1, 1), (3, 0, 1, 1)] {
        let k = Array4::<f32>::zeros(shape);
        assert_shape(conv_operator_norm(k.view(), 8, 8, 1));
        assert_shape(conv_operator_norm_padded(
            k.view(),
            8,
            8,
            1,
            Padding::Zero(1),
        ));
        assert_shape(pi(&k, 8, 8, 1, Padding::Circular));
        assert_shape(pi(&k, 8, 8, 1, Padding::Zero(1)));
    }
}

#[test]
fn empty_inputs_are_shape_errors() {
    let k = Array4::<f32>::ones((1, 1, 1, 1));
    assert_shape(conv_operator_norm(k.view(), 0, 8, 1));
    assert_shape(conv_operator_norm(k.view(), 8, 0, 1));
    assert_shape(pi(&k, 0, 8, 1, Padding::Zero(1)));
    assert_shape(zero_padding_grid((1, 1), 8, 0, 1, 0));
}

#[test]
fn zero_stride_is_a_parameter_error() {
    let k = Array4::<f32>::ones((3, 3, 1, 1));
    assert_param(conv_operator_norm(k.view(), 8, 8, 0), "stride");
    assert_param(
        conv_operator_norm_padded(k.view(), 8, 8, 0, Padding::Zero(1)),
        "stride",
    );
    assert_param(pi(&k, 8, 8, 0, Padding::Circular), "stride");
    assert_param(pi(&k, 8, 8, 0, Padding::Zero(1)), "stride");
}

#[test]
fn kernel_larger_than_padded_input_is_a_shape_error() {
    let k = Array4::<f32>::ones((5, 3, 1, 1));
    assert_shape(pi(&k, 4, 8, 1, Padding::Zero(0)));
    assert_shape(conv_operator_norm_padded(
        k.view(),
        4,
        8,
        1,
        Padding::Zero(0),
    ));
    assert_shape(zero_padding_grid((5, 3), 4, 8, 1, 0));
    let k = Array4::<f32>::ones((3, 7, 1, 1));
    assert_shape(pi(&k, 8, 4, 1, Padding::Zero(1)));
    // With enough padding it fits: 4 + 2·2 ≥ 7.
    assert!(pi(&k, 8, 4, 1, Padding::Zero(2)).is_ok());
    // The circular method wraps large kernels around instead (documented), no error.
    assert!(conv_operator_norm(k.view(), 4, 4, 1).is_ok());
}

#[test]
fn non_finite_kernels_are_rejected() {
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut k = Array4::<f32>::ones((3, 3, 2, 2));
        k[[2, 1, 0, 1]] = bad;
        let nonfinite = |r: Result<(), Error>| assert!(matches!(r, Err(Error::NonFinite { .. })));
        nonfinite(conv_operator_norm(k.view(), 8, 8, 1).map(|_| ()));
        nonfinite(conv_operator_norm_padded(k.view(), 8, 8, 1, Padding::Zero(1)).map(|_| ()));
        nonfinite(pi(&k, 8, 8, 1, Padding::Circular).map(|_| ()));
        nonfinite(pi(&k, 8, 8, 1, Padding::Zero(1)).map(|_| ()));
    }
}

#[test]
fn grid_not_a_multiple_of_the_stride_is_a_shape_error() {
    let k = Array4::<f32>::ones((3, 3, 1, 1));
    assert_shape(conv_operator_norm(k.view(), 7, 8, 2));
    assert_shape(conv_operator_norm(k.view(), 9, 9, 2));
    assert_shape(conv_operator_norm(k.view(), 6, 8, 3));
    assert_shape(pi(&k, 7, 8, 2, Padding::Circular));
    // Zero padding has no such restriction: the bound's grid is rounded up to the stride.
    let b = conv_operator_norm_padded(k.view(), 7, 9, 2, Padding::Zero(1)).unwrap();
    assert_eq!(b.grid, (8, 10));
    assert!(pi(&k, 7, 9, 2, Padding::Zero(1)).is_ok());
}

#[test]
fn absurd_sizes_are_errors_not_allocations() {
    let k = Array4::<f32>::ones((1, 1, 1, 1));
    assert_param(conv_operator_norm(k.view(), usize::MAX, 2, 1), "size");
    assert_param(conv_operator_norm(k.view(), 1 << 15, 1 << 14, 1), "size");
    assert_param(pi(&k, 1 << 15, 1 << 14, 1, Padding::Circular), "size");
    assert_param(pi(&k, 1 << 15, 1 << 14, 1, Padding::Zero(0)), "size");
    assert_param(pi(&k, 8, 8, 1, Padding::Zero(usize::MAX / 2 + 1)), "size");
    assert_param(zero_padding_grid((1, 1), usize::MAX, 8, 1, 1), "size");
    assert_param(
        conv_operator_norm_padded(k.view(), 8, 8, 1, Padding::Zero(usize::MAX)),
        "size",
    );
    // Input within the cap (2^27) but the spectra D·C·H·W = 2^29 are not.
    let k4 = Array4::<f32>::ones((1, 1, 1, 4));
    assert_param(conv_operator_norm(k4.view(), 1 << 13, 1 << 14, 1), "size");
    // The output D·H_out·W_out is capped too.
    let big = Array4::<f32>::ones((1, 1, 1, 1 << 20));
    assert_param(pi(&big, 1 << 5, 1 << 5, 1, Padding::Circular), "size");
    // Huge grids (with huge strides) overflow.
    assert!(conv_operator_norm(k.view(), 1 << 40, 1 << 40, 1 << 40).is_err());
}

/// Issue 20: sizes within the element cap can still ask for too much work; the budgets are
/// checked before any of it is done.
#[test]
fn too_much_work_is_a_parameter_error_before_it_starts() {
    // 512 × 512 channels on an 8 × 8 grid: ~10^11 flops of 1024 × 1024 eigenvalue problems.
    let k = Array4::<f32>::ones((3, 3, 512, 512));
    assert_param(conv_operator_norm(k.view(), 8, 8, 1), "work");
    // One power iteration of 64 × 64 channels, 5 × 5 taps, on 128² would be 3.4·10^9
    // multiply-adds (and 100 of them are asked for).
    let k = Array4::<f32>::ones((5, 5, 64, 64));
    assert_param(pi(&k, 128, 128, 1, Padding::Zero(2)), "work");
    assert_param(pi(&k, 128, 128, 1, Padding::Circular), "work");
    // The iteration cap is bounded too.
    assert_param(
        PowerIterationParams::new(1e-6, usize::MAX).check(),
        "max_iter",
    );
    assert!(
        PowerIterationParams::new(1e-6, blindspot::spectral::MAX_POWER_ITER)
            .check()
            .is_ok()
    );
    // Within the budgets, the same shapes on smaller grids still run.
    let k = Array4::<f32>::ones((3, 3, 8, 8));
    assert!(conv_operator_norm(k.view(), 16, 16, 1).is_ok());
}

#[test]
fn bad_power_iteration_settings_are_errors() {
    let k = gaussian_kernel((3, 3, 2, 2), 1);
    for tol in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        assert_param(PowerIterationParams::new(tol, 10).check(), "tol");
    }
    assert_param(PowerIterationParams::new(1e-6, 0).check(), "max_iter");
    let r = conv_power_iteration(
        k.view(),
        6,
        6,
        1,
        Padding::Circular,
        &power_config(1e-15, 1, 0),
    );
    // One iteration cannot meet any tolerance (it needs two estimates to compare); the error
    // keeps the first estimate, a lower bound of the converged one.
    let converged = conv_power_iteration(
        k.view(),
        6,
        6,
        1,
        Padding::Circular,
        &power_config(1e-10, 10_000, 0),
    )
    .unwrap()
    .value;
    assert!(
        matches!(
            r,
            Err(Error::NotConverged {
                what: "convolution power iteration",
                iterations: 1,
                tolerance,
                last_estimate,
            }) if tolerance == 1e-15 && last_estimate > 0.0 && last_estimate <= converged * (1.0 + 1e-9)
        ),
        "{r:?}"
    );
}

/// A `(kh, kw, C, D)` kernel whose entries are standard normal draws taken in `(D, C, kh, kw)`
/// order, the order the values recorded below were drawn in (before issue 23, when these
/// functions took `(D, C, kh, kw)` kernels).
fn recorded_kernel((d, c, kh, kw): (usize, usize, usize, usize), seed: u64) -> Array4<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let v: Vec<f32> = (0..d * c * kh * kw)
        .map(|_| rng.sample::<f32, _>(StandardNormal))
        .collect();
    Array4::from_shape_fn((kh, kw, c, d), |(a, b, cc, dd)| {
        v[((dd * c + cc) * kh + a) * kw + b]
    })
}

/// Known answers, recorded from the implementation before issue 23 (which must not change any
/// figure): C ≠ D, kernels 2 to 5 (one not square), strides 1 to 3, circular (`c`) and zero
/// padding. Per kernel of [`recorded_kernel`]: the bits of the Fourier value, and the seed of
/// power iteration (tolerance 1e-10) with the bits and iterations it gave.
const RECORDED: &str = "
    # D C kh kw seed  H  W s pad fourier          seed power            iterations
    2 5 5 5 1001 10 12 1 c   40343fc57e52deee 4    40343fc57e4747f4 41
    4 3 3 3 1002  8  8 2 c   401bf96159e86175 5    401bf961594e2cb4 226
    2 3 3 2 1004  9  6 3 c   40130a4ddf5b6d06 7    40130a4ddf5943cc 24
    5 2 5 5 2002  9  7 2 2   4028a64bf7c98834 7    4026e2abe3dc6425 766
    3 2 3 3 2003  8  8 2 0   401b69cecb35c515 8    40195c62a033002b 60
    3 4 3 5 2006  7  8 2 1   4025d41dffb13ee6 11   402542ad6901824d 171
";

/// The same for seeded networks (strides 1 and 2, padding 0 to 2, kernels 3 and 5, C ≠ D):
/// `row:bits` of the operator norm of each conv row of [`layer_bounds`], then the bits and
/// iterations of power iteration (tolerance 1e-9, seed 1) on the first layer's zero-padded
/// kernel, as `examples/lipschitz.rs` runs it.
const RECORDED_NETWORKS: &str = "
    # name                       H  W  C seed conv rows                                power            iterations
    CONV4-8-FC16-10              28 28 1 1    0:401428a8b10b0f0b 2:400f674c037ec998 4013e726074c8f93 4342
    CONV5k3s2p1-7k5p2q1-FC12-10  12 12 3 2    0:4003e3832c6d1144 2:4007b308a9560118 40039dc77264ed74 153
    CONV6k3p0q1-4s2k5p1-FC8-10   11 13 2 3    0:400dddcc5c360f37 1:4000736fce3d00a8 400ca1b4944ee345 7132
";

/// The rows of a whitespace-separated table, without blank and `#` lines.
fn table(text: &str) -> impl Iterator<Item = Vec<&str>> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split_whitespace().collect())
}

fn num(s: &str) -> usize {
    s.parse().unwrap()
}

fn bits(s: &str) -> u64 {
    u64::from_str_radix(s, 16).unwrap()
}

#[test]
fn norms_keep_the_bits_recorded_before_the_layout_change() {
    for row in table(RECORDED) {
        let dims = (num(row[0]), num(row[1]), num(row[2]), num(row[3]));
        let kernel = recorded_kernel(dims, num(row[4]) as u64);
        let (h, w, s) = (num(row[5]), num(row[6]), num(row[7]));
        let padding = match row[8] {
            "c" => Padding::Circular,
            p => Padding::Zero(num(p)),
        };
        let f = conv_operator_norm_padded(kernel.view(), h, w, s, padding).unwrap();
        assert_eq!(
            f.value.to_bits(),
            bits(row[9]),
            "{dims:?} Fourier: {}",
            f.value
        );
        let config = power_config(1e-10, 200_000, num(row[10]) as u64);
        let p = conv_power_iteration(kernel.view(), h, w, s, padding, &config).unwrap();
        assert_eq!(
            (p.value.to_bits(), p.iterations),
            (bits(row[11]), num(row[12])),
            "{dims:?} power iteration: {}",
            p.value
        );
    }
}

#[test]
fn layer_bounds_keep_the_bits_recorded_before_the_layout_change() {
    for row in table(RECORDED_NETWORKS) {
        let (name, n) = (row[0], row.len());
        let image = (num(row[1]), num(row[2]), num(row[3]));
        let net = Network::new(
            Architecture::parse_image(name, image).unwrap(),
            num(row[4]) as u64,
        );
        let bounds = layer_bounds(&net).unwrap();
        for conv in &row[5..n - 2] {
            let (i, want) = conv.split_once(':').unwrap();
            let b = &bounds[num(i)];
            assert_eq!(b.kind, "conv");
            assert_eq!(
                b.operator_norm.to_bits(),
                bits(want),
                "{name} row {i}: {}",
                b.operator_norm
            );
        }
        let Layer::Conv2d(c) = &net.layers()[0] else {
            panic!("{name} starts with a convolution")
        };
        let (h, w, _) = c.input_shape();
        let (_, stride, padding) = c.geometry();
        let config = power_config(1e-9, 100_000, 1);
        let p = conv_power_iteration(
            c.kernel().unwrap().view(),
            h,
            w,
            stride,
            Padding::Zero(padding),
            &config,
        )
        .unwrap();
        assert_eq!(
            (p.value.to_bits(), p.iterations),
            (bits(row[n - 2]), num(row[n - 1])),
            "{name}: {}",
            p.value
        );
    }
}
