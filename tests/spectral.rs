//! Operator norms against known answers, and the Lipschitz bound against measured ratios.

use blindspot::nn::{Activation, Architecture, Network};
use blindspot::spectral::{
    layer_bounds, layer_bounds_with, network_bound, operator_norm, perturbation_ratios,
    power_iteration, PowerIterationConfig, PowerIterationParams, DEFAULT_SEED,
};
use blindspot::Check;
use blindspot::Error;
use ndarray::{Array2, Axis};
use ndarray_rand::rand_distr::StandardNormal;
use ndarray_rand::RandomExt;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

mod common;
use common::random_inputs;

const TOL: f64 = 1e-9;

/// Checked power-iteration settings for a test.
fn power_config(tol: f64, max_iter: usize, seed: u64) -> PowerIterationConfig {
    PowerIterationParams::new(tol, max_iter)
        .with_seed(seed)
        .check()
        .unwrap()
}

/// A random `n × n` orthogonal matrix: Gram–Schmidt (twice, for f64 accuracy) on a Gaussian one.
fn random_orthogonal(n: usize, rng: &mut ChaCha8Rng) -> Array2<f64> {
    let mut q: Array2<f64> = Array2::random_using((n, n), StandardNormal, rng);
    for j in 0..n {
        for _ in 0..2 {
            for i in 0..j {
                let qi = q.column(i).to_owned();
                let proj = qi.dot(&q.column(j));
                q.column_mut(j).scaled_add(-proj, &qi);
            }
        }
        let norm = q.column(j).dot(&q.column(j)).sqrt();
        q.column_mut(j).mapv_inplace(|v| v / norm);
    }
    q
}

/// `Q1 · diag(s) · Q2ᵀ` (`m × n`) with random orthogonal `Q1`, `Q2`: singular values exactly `s`.
fn with_singular_values(m: usize, n: usize, s: &[f64], seed: u64) -> Array2<f32> {
    assert!(s.len() <= m.min(n));
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let q1 = random_orthogonal(m, &mut rng);
    let q2 = random_orthogonal(n, &mut rng);
    let mut d = Array2::<f64>::zeros((m, n));
    for (i, &v) in s.iter().enumerate() {
        d[[i, i]] = v;
    }
    q1.dot(&d).dot(&q2.t()).mapv(|v| v as f32)
}

#[test]
fn diagonal_matrices_give_their_largest_absolute_entry() {
    let cases: &[(usize, usize, &[f32])] = &[
        (1, 1, &[2.5]),
        (3, 3, &[1.0, -4.0, 2.0]),
        (5, 3, &[0.5, 0.25, 3.0]),
        (2, 6, &[-7.0, 6.9]),
        (4, 4, &[1.0, 1.0, 1.0, 1.0]),
    ];
    for &(m, n, diag) in cases {
        let mut w = Array2::<f32>::zeros((m, n));
        for (i, &v) in diag.iter().enumerate() {
            w[[i, i]] = v;
        }
        let expected = diag.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        let got = operator_norm(w.view(), &power_config(TOL, 100_000, DEFAULT_SEED)).unwrap();
        assert!(
            (got - expected).abs() <= 1e-5 * expected,
            "{m}×{n} diag {diag:?}: got {got}, expected {expected}"
        );
    }
}

#[test]
fn rotated_matrices_give_their_chosen_singular_value() {
    // Gaps from wide (fast convergence) to 2% (slow): the tolerance bounds the last change,
    // and with these gaps the remaining error stays below 1e-5 relative (f32 input rounding
    // contributes ~1e-7).
    let cases: &[(usize, usize, &[f64])] = &[
        (10, 10, &[5.0, 3.0, 1.0, 0.5]),
        (30, 12, &[2.0, 1.9, 1.5, 0.1]),
        (8, 40, &[0.3, 0.1]),
        (50, 50, &[10.0, 9.8, 9.0, 1.0, 1.0]),
        (300, 100, &[17.0, 12.0, 3.0]),
    ];
    for (seed, &(m, n, s)) in cases.iter().enumerate() {
        let w = with_singular_values(m, n, s, seed as u64);
        let est = power_iteration(w.view(), &power_config(TOL, 100_000, 3)).unwrap();
        let rel = (est.value - s[0]).abs() / s[0];
        assert!(
            rel <= 1e-5,
            "{m}×{n} σ = {s:?}: got {} after {} iterations",
            est.value,
            est.iterations
        );
        // The Rayleigh-quotient estimate approaches from below (up to f32 rounding of W).
        assert!(est.value <= s[0] * (1.0 + 1e-6));
        // The singular vectors are the first columns of Q1 and Q2 (up to a common sign), when
        // the top singular value is well separated (the 2% gap converges too slowly in angle).
        if s[1] / s[0] < 0.9 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed as u64);
            let q1 = random_orthogonal(m, &mut rng);
            let q2 = random_orthogonal(n, &mut rng);
            let cu = est.left.dot(&q1.column(0));
            let cv = est.right.dot(&q2.column(0));
            assert!(cu.abs() > 1.0 - 1e-4 && cv.abs() > 1.0 - 1e-4, "{cu} {cv}");
            assert!(cu * cv > 0.0);
        }
        // The transpose has the same norm.
        let t = operator_norm(w.t(), &power_config(TOL, 100_000, DEFAULT_SEED)).unwrap() as f64;
        assert!((t - s[0]).abs() / s[0] <= 1e-5);
    }
}

#[test]
fn zero_matrix_has_norm_zero_and_bad_inputs_are_typed_errors() {
    let z = Array2::<f32>::zeros((3, 4));
    assert_eq!(
        operator_norm(z.view(), &power_config(TOL, 10, DEFAULT_SEED)).unwrap(),
        0.0
    );
    let empty = Array2::<f32>::zeros((0, 4));
    assert!(matches!(
        operator_norm(empty.view(), &power_config(TOL, 10, DEFAULT_SEED)),
        Err(Error::Shape { .. })
    ));
    let mut nan = Array2::<f32>::eye(3);
    nan[[1, 2]] = f32::NAN;
    assert!(matches!(
        operator_norm(nan.view(), &power_config(TOL, 10, DEFAULT_SEED)),
        Err(Error::NonFinite { .. })
    ));
    for tol in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        assert!(matches!(
            PowerIterationParams::new(tol, 10).check(),
            Err(Error::InvalidParameter { name: "tol", .. })
        ));
    }
    assert!(matches!(
        PowerIterationParams::new(TOL, 0).check(),
        Err(Error::InvalidParameter {
            name: "max_iter",
            ..
        })
    ));
    assert_eq!(
        PowerIterationParams::default().check().unwrap(),
        PowerIterationConfig::default()
    );
    // Nearly equal top singular values converge slowly: two iterations are not enough. The
    // error says so, with the estimate reached: a lower bound of the norm, 1.
    let close = with_singular_values(20, 20, &[1.0, 0.999, 0.5], 9);
    let err = power_iteration(close.view(), &power_config(1e-12, 2, 1)).unwrap_err();
    assert!(
        matches!(
            err,
            Error::NotConverged {
                what: "power iteration",
                iterations: 2,
                tolerance,
                last_estimate,
            } if tolerance == 1e-12 && last_estimate > 0.5 && last_estimate <= 1.0 + 1e-6
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("in 2 iterations"), "{err}");
}

#[test]
fn measured_ratio_never_exceeds_the_bound() {
    for (i, act) in [
        Activation::Sigmoid,
        Activation::Tanh,
        Activation::Relu,
        Activation::Identity,
    ]
    .into_iter()
    .enumerate()
    {
        let arch = Architecture::new(12, vec![9, 7], 4, act, 0.0).unwrap();
        let mlp = Network::new(arch, 100 + i as u64);
        let bounds = layer_bounds(&mlp).unwrap();
        assert_eq!(bounds.len(), 3);
        assert_eq!(bounds[0].activation, Some(act));
        assert_eq!(bounds[2].activation, None);
        assert_eq!(bounds[2].activation_lipschitz, 1.0);
        assert_eq!(
            bounds[0].activation_lipschitz,
            f64::from(act.lipschitz()),
            "{act}"
        );
        let bound = network_bound(&bounds);
        assert!(bound > 0.0);
        let x = random_inputs(200, 12, 7 + i as u64);
        let mut rng = ChaCha8Rng::seed_from_u64(11 + i as u64);
        let mut worst: f64 = 0.0;
        for scale in [1e-2f32, 1e-1, 1.0, 10.0] {
            let r = Array2::<f32>::random_using((200, 12), StandardNormal, &mut rng) * scale;
            let ratios = perturbation_ratios(&mlp, x.view(), r.view()).unwrap();
            worst = ratios.iter().copied().fold(worst, f64::max);
        }
        // f32 logits differ from the exact ones by ~1e-6, small next to ‖r‖ >= ~0.03.
        assert!(
            worst <= bound * (1.0 + 1e-3),
            "{act}: measured {worst} above bound {bound}"
        );
        assert!(worst > 0.0);
    }
}

#[test]
fn bound_is_attained_by_a_single_linear_layer() {
    // Softmax regression: logits are x W + b, so the ratio is ‖r W‖ / ‖r‖, maximal (= ‖W‖) for
    // r along W's top left singular vector, which power iteration on W Wᵀ finds.
    let mlp = Network::new(Architecture::parse("FC10", 30).unwrap(), 5);
    let bounds = layer_bounds(&mlp).unwrap();
    assert_eq!(bounds.len(), 1);
    // The default settings are what `layer_bounds` uses; another seed moves the estimate
    // only within the tolerance.
    assert_eq!(
        layer_bounds_with(&mlp, &PowerIterationConfig::default()).unwrap(),
        bounds
    );
    let reseeded = layer_bounds_with(&mlp, &power_config(TOL, 100_000, 99)).unwrap();
    assert!(
        (reseeded[0].operator_norm - bounds[0].operator_norm).abs()
            <= 1e-6 * bounds[0].operator_norm
    );
    let est = power_iteration(mlp.weights(0).unwrap(), &power_config(TOL, 100_000, 1)).unwrap();
    let r = est.left.mapv(|v| v as f32).insert_axis(Axis(0));
    let x = random_inputs(1, 30, 1);
    let ratio = perturbation_ratios(&mlp, x.view(), r.view()).unwrap()[0];
    let bound = network_bound(&bounds);
    assert!((ratio - bound).abs() <= 1e-4 * bound, "{ratio} vs {bound}");
}

#[test]
fn perturbation_ratios_check_shapes() {
    let mlp = Network::new(Architecture::parse("FC5-3", 4).unwrap(), 1);
    let x = random_inputs(3, 4, 1);
    let r = random_inputs(2, 4, 2);
    assert!(matches!(
        perturbation_ratios(&mlp, x.view(), r.view()),
        Err(Error::Shape { .. })
    ));
    let r = random_inputs(3, 5, 2);
    assert!(matches!(
        perturbation_ratios(&mlp, x.view(), r.view()),
        Err(Error::Shape { .. })
    ));
    let zero = Array2::<f32>::zeros((3, 4));
    assert_eq!(
        perturbation_ratios(&mlp, x.view(), zero.view()).unwrap(),
        vec![0.0; 3]
    );
}
