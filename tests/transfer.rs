//! Transfer experiments' building blocks: the P1/P2 split of Tables 3–4, `magnify` (Table 4's
//! "magnified to stddev 0.1") and `transfer_error` (every cell of Tables 2 and 4).

use blindspot::attack::{distortion, magnify, transfer_error, MAGNIFY_TOLERANCE};
use blindspot::data::{Dataset, Mnist};
use blindspot::nn::{Architecture, Network};
use blindspot::Error;
use ndarray::{array, Array1, Array2};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// `n` 1×4 images whose pixels spell their own index in base 16, so a split can be decoded.
fn indexed(n: usize) -> Dataset {
    let x = Array2::from_shape_fn((n, 4), |(i, j)| ((i >> (4 * j)) & 15) as f32 / 15.0);
    Dataset::new(x, (0..n).map(|i| i % 10).collect(), (1, 4), 10).unwrap()
}

fn ids(d: &Dataset) -> Vec<usize> {
    d.images()
        .rows()
        .into_iter()
        .map(|r| {
            r.iter()
                .enumerate()
                .map(|(j, &v)| ((v * 15.0).round() as usize) << (4 * j))
                .sum()
        })
        .collect()
}

#[test]
fn p1_p2_halves_are_disjoint_covering_and_reproducible() {
    let data = indexed(600);
    let (p1, p2) = data.split(300, 7).unwrap();
    let (a, b) = (ids(&p1), ids(&p2));
    assert_eq!((a.len(), b.len()), (300, 300));
    let mut all: Vec<usize> = a.iter().chain(&b).copied().collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (0..600).collect::<Vec<_>>(),
        "halves overlap or miss examples"
    );
    // Labels travel with their images.
    for (d, id) in [(&p1, &a), (&p2, &b)] {
        for (l, i) in d.labels().iter().zip(id.iter()) {
            assert_eq!(*l, i % 10);
        }
    }
    // Same seed, same halves (the zoo tags "P1-seed7"/"P2-seed7" rely on it); another seed
    // gives other halves.
    let (q1, q2) = data.split(300, 7).unwrap();
    assert_eq!((ids(&q1), ids(&q2)), (a.clone(), b));
    let (r1, _) = data.split(300, 8).unwrap();
    assert_ne!(ids(&r1), a);
}

#[test]
fn mnist_training_set_splits_into_two_halves_of_30000() {
    let mnist = Mnist::load_default().unwrap();
    let (p1, p2) = mnist.train.split(30_000, 1).unwrap();
    assert_eq!((p1.len(), p2.len()), (30_000, 30_000));
    let counts: Vec<usize> = p1
        .label_counts()
        .iter()
        .zip(p2.label_counts())
        .map(|(a, b)| a + b)
        .collect();
    assert_eq!(counts, mnist.train.label_counts());
    // Both halves hold every digit in roughly the training set's proportion.
    for (c1, c) in p1.label_counts().iter().zip(mnist.train.label_counts()) {
        let f = *c1 as f64 / c as f64;
        assert!((0.45..0.55).contains(&f), "unbalanced half: {f}");
    }
}

fn random_pair(rng: &mut ChaCha8Rng, n: usize, size: f32) -> (Array1<f32>, Array1<f32>) {
    // Mostly 0 and 1 pixels, as MNIST, so that clipping matters.
    let x = Array1::from_shape_fn(n, |_| match rng.gen_range(0..3) {
        0 => 0.0,
        1 => 1.0,
        _ => rng.gen::<f32>(),
    });
    let adv = x.mapv(|v| (v + size * (rng.gen::<f32>() - 0.5)).clamp(0.0, 1.0));
    (x, adv)
}

#[test]
fn magnify_hits_the_asked_distortion_inside_the_box() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for trial in 0..50 {
        let (x, adv) = random_pair(&mut rng, 784, 0.2);
        let r = &adv - &x;
        for target in [0.01, 0.06, 0.1, 0.2] {
            let out = magnify(x.view(), adv.view(), target).unwrap();
            let d = distortion(x.view(), out.view()).unwrap();
            assert!(
                (d - target).abs() <= MAGNIFY_TOLERANCE * target,
                "trial {trial}: asked {target}, got {d}"
            );
            assert!(out.iter().all(|&v| (0.0..=1.0).contains(&v)));
            // Only pixels the perturbation moved move, and in the same direction.
            for ((&o, &xi), &ri) in out.iter().zip(&x).zip(&r) {
                let moved = o - xi;
                assert!(
                    moved == 0.0 || moved.signum() == ri.signum(),
                    "direction flipped"
                );
                if ri == 0.0 {
                    assert_eq!(moved, 0.0);
                }
            }
        }
    }
}

#[test]
fn magnify_edge_cases_are_exact_or_typed_errors() {
    let x = array![0.0f32, 0.5, 1.0, 0.25];
    let adv = array![0.1f32, 0.4, 1.0, 0.25];
    // Target 0 is the clean input.
    assert_eq!(magnify(x.view(), adv.view(), 0.0).unwrap(), x);
    // Scaling by one reproduces the input's own distortion.
    let d = distortion(x.view(), adv.view()).unwrap();
    let same = magnify(x.view(), adv.view(), d).unwrap();
    for (a, b) in same.iter().zip(&adv) {
        assert!((a - b).abs() < 1e-4);
    }
    // The largest reachable distortion here: pixel 0 up to 1, pixel 1 down to 0.
    let max = ((1.0f64 + 0.25) / 4.0).sqrt();
    assert!(magnify(x.view(), adv.view(), 0.99 * max).is_ok());
    assert!(matches!(
        magnify(x.view(), adv.view(), 1.01 * max),
        Err(Error::InvalidParameter { .. })
    ));
    assert!(matches!(
        magnify(x.view(), x.view(), 0.1),
        Err(Error::InvalidParameter { .. })
    ));
    assert!(matches!(
        magnify(x.view(), adv.view(), -0.1),
        Err(Error::InvalidParameter { .. })
    ));
    assert!(matches!(
        magnify(x.view(), adv.view(), f64::NAN),
        Err(Error::InvalidParameter { .. })
    ));
    assert!(matches!(
        magnify(x.view(), array![0.0f32].view(), 0.1),
        Err(Error::Shape { .. })
    ));
    assert!(matches!(
        magnify(array![1.5f32, 0.0].view(), array![1.0f32, 0.0].view(), 0.1),
        Err(Error::InvalidParameter { .. })
    ));
    assert!(matches!(
        magnify(
            array![f32::NAN, 0.0].view(),
            array![1.0f32, 0.0].view(),
            0.1
        ),
        Err(Error::NonFinite { .. })
    ));
}

/// Softmax regression on 5 pixels with identity weights: it predicts the brightest pixel.
fn brightest_pixel_model() -> Network {
    let arch = Architecture::parse("FC5", 5).unwrap();
    Network::from_params(arch, vec![Array2::eye(5) * 10.0, Array2::zeros((1, 5))]).unwrap()
}

#[test]
fn transfer_error_counts_misclassified_rows_on_a_hand_made_case() {
    let model = brightest_pixel_model();
    let xs = array![
        [1.0f32, 0.0, 0.0, 0.0, 0.0], // predicts 0
        [0.0, 0.9, 0.1, 0.0, 0.0],    // 1
        [0.0, 0.0, 0.2, 0.8, 0.0],    // 3
        [0.3, 0.0, 0.0, 0.0, 0.4],    // 4
        [0.0, 0.0, 0.7, 0.0, 0.0],    // 2
    ];
    let labels = [0, 1, 2, 3, 2]; // rows 2 and 3 are wrong
    assert_eq!(transfer_error(&model, xs.view(), &labels).unwrap(), 0.4);
    assert_eq!(
        transfer_error(&model, xs.view(), &[0, 1, 3, 4, 2]).unwrap(),
        0.0
    );
    assert_eq!(
        transfer_error(&model, xs.view(), &[1, 0, 0, 0, 0]).unwrap(),
        1.0
    );
    assert!(matches!(
        transfer_error(&model, xs.view(), &[0, 1]),
        Err(Error::Shape { .. })
    ));
    assert!(matches!(
        transfer_error(&model, xs.view(), &[0, 1, 2, 3, 9]),
        Err(Error::LabelOutOfRange { .. })
    ));
    assert!(matches!(
        transfer_error(&model, Array2::<f32>::zeros((0, 5)).view(), &[]),
        Err(Error::EmptyInput { .. })
    ));
    assert!(matches!(
        transfer_error(&model, Array2::<f32>::zeros((1, 4)).view(), &[0]),
        Err(Error::Shape { .. })
    ));
}

#[test]
fn magnified_perturbation_of_a_boundary_example_keeps_fooling_the_model() {
    // x is class 0; adv has just crossed to class 1. Magnifying the same direction pushes it
    // further into class 1, which is why Table 4's magnified rows transfer more.
    let model = brightest_pixel_model();
    let x = array![0.6f32, 0.4, 0.0, 0.0, 0.0];
    let adv = array![0.49f32, 0.51, 0.0, 0.0, 0.0];
    let big = magnify(x.view(), adv.view(), 0.2).unwrap();
    let ys = [0usize];
    let one = |v: &Array1<f32>| v.clone().insert_axis(ndarray::Axis(0));
    assert_eq!(transfer_error(&model, one(&adv).view(), &ys).unwrap(), 1.0);
    assert_eq!(transfer_error(&model, one(&big).view(), &ys).unwrap(), 1.0);
    assert!(big[1] > adv[1] && big[0] < adv[0]);
}
