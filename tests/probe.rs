//! The probe: top-k against brute force, exact purity on a hand-built representation, the
//! statistics helpers, and typed errors.

use blindspot::data::Dataset;
use blindspot::nn::{Architecture, Network};
use blindspot::probe::{
    bootstrap_mean, compare_means, label_purity, layer_activations, mean_pairwise_distance, study,
    top_k, top_k_from_activations, Direction, ProbeParams,
};
use blindspot::Check;
use blindspot::{Error, Representation, Result};
use ndarray::{array, Array1, Array2, ArrayView2};
use ndarray_rand::rand_distr::{StandardNormal, Uniform};
use ndarray_rand::RandomExt;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// A representation whose layer 0 is the input itself and layer 1 its first two columns
/// doubled: everything it ranks is known by construction.
struct Identity {
    dim: usize,
}

impl Representation for Identity {
    fn num_layers(&self) -> usize {
        2
    }
    fn layer_dim(&self, k: usize) -> Result<usize> {
        match k {
            0 => Ok(self.dim),
            1 => Ok(2),
            _ => unreachable!("the probe checks the layer index before asking"),
        }
    }
    fn representation(&self, x: ArrayView2<'_, f32>, k: usize) -> Result<Array2<f32>> {
        Ok(match k {
            0 => x.to_owned(),
            _ => x.slice(ndarray::s![.., ..2]).mapv(|v| 2.0 * v),
        })
    }
}

/// The full-sort answer: indices by descending score, ties by ascending index.
fn brute_force(acts: ArrayView2<'_, f32>, v: &Array1<f32>, k: usize) -> Vec<usize> {
    let scores = acts.dot(v);
    let mut idx: Vec<usize> = (0..acts.nrows()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

#[test]
fn top_k_equals_a_full_sort() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let mut acts: Array2<f32> = Array2::random_using((500, 7), StandardNormal, &mut rng);
    // Ties: quantise one column so the index tie-break matters.
    acts.column_mut(2).mapv_inplace(|v| (v * 2.0).round());
    let custom: Array1<f32> = array![0.5, -1.0, 0.0, 2.0, 0.0, 0.0, 3.0];
    let dirs = vec![
        Direction::Unit(0),
        Direction::Unit(2),
        Direction::Unit(6),
        Direction::Random { seed: 1 },
        Direction::Random { seed: 2 },
        Direction::Custom(custom),
    ];
    for k in [1, 8, 37, 499, 500] {
        let tops = top_k_from_activations(acts.view(), &dirs, k).unwrap();
        assert_eq!(tops.len(), dirs.len());
        for (t, d) in tops.iter().zip(&dirs) {
            assert_eq!(&t.direction, d);
            let v = d.vector(7).unwrap();
            assert_eq!(t.indices, brute_force(acts.view(), &v, k), "{d:?}, k = {k}");
            assert!(t.scores.windows(2).all(|w| w[0] >= w[1]));
        }
    }
}

#[test]
fn directions_are_unit_vectors_and_reproducible() {
    let a = Direction::Random { seed: 7 }.vector(50).unwrap();
    let b = Direction::Random { seed: 7 }.vector(50).unwrap();
    let c = Direction::Random { seed: 8 }.vector(50).unwrap();
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert!((a.dot(&a) - 1.0).abs() < 1e-5);
    let u = Direction::Unit(3).vector(5).unwrap();
    assert_eq!(u, array![0.0, 0.0, 0.0, 1.0, 0.0]);
    let v = Direction::Custom(array![3.0, 4.0]).vector(2).unwrap();
    assert_eq!(v, array![0.6, 0.8]);
}

#[test]
fn activations_are_computed_in_chunks_for_any_representation() {
    let mlp = Network::new(Architecture::parse("FC6-5-3", 4).unwrap(), 2);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let x: Array2<f32> = Array2::random_using((2_345, 4), Uniform::new(0.0, 1.0), &mut rng);
    for layer in 0..2 {
        let chunked = layer_activations(&mlp, x.view(), layer).unwrap();
        let whole = mlp.representation(x.view(), layer).unwrap();
        assert_eq!(chunked, whole);
    }
    // Through the trait object too.
    let dyn_model: &dyn Representation = &mlp;
    let tops = top_k(dyn_model, x.view(), 1, &[Direction::Unit(4)], 3).unwrap();
    let acts = mlp.representation(x.view(), 1).unwrap();
    assert_eq!(
        tops[0].indices,
        brute_force(acts.view(), &Direction::Unit(4).vector(5).unwrap(), 3)
    );
}

#[test]
fn label_purity_and_distance_are_exact() {
    let labels = [0, 1, 1, 2, 1, 0, 3, 3];
    assert_eq!(label_purity(&labels, &[1, 2, 4]).unwrap(), 1.0);
    assert_eq!(label_purity(&labels, &[0, 1, 2, 3]).unwrap(), 0.5);
    assert_eq!(label_purity(&labels, &[0, 1, 3, 6]).unwrap(), 0.25);
    assert_eq!(
        label_purity(&labels, &[6, 7, 1, 2, 4, 0, 3, 5]).unwrap(),
        3.0 / 8.0
    );
    let x = array![[0.0f32, 0.0], [3.0, 4.0], [0.0, 4.0]];
    // Pairs: 5, 4, 3.
    assert!((mean_pairwise_distance(x.view(), &[0, 1, 2]).unwrap() - 4.0).abs() < 1e-12);
    assert_eq!(mean_pairwise_distance(x.view(), &[1]).unwrap(), 0.0);
}

/// 10 classes × 12 images of 10 pixels: image j of class c lights pixel c at 0.5 + j/100
/// (and pixel (c + 1) % 10 at 0.1), so the top-k of unit c are exactly class c's brightest.
fn one_hot_dataset() -> Dataset {
    let (classes, per) = (10, 12);
    let mut x = Array2::<f32>::zeros((classes * per, classes));
    let mut y = Vec::new();
    for c in 0..classes {
        for j in 0..per {
            let row = c * per + j;
            x[[row, c]] = 0.5 + j as f32 / 100.0;
            x[[row, (c + 1) % classes]] = 0.1;
            y.push(c);
        }
    }
    Dataset::new(x, y, (1, classes), classes).unwrap()
}

#[test]
fn unit_purity_is_exact_on_a_synthetic_representation() {
    let data = one_hot_dataset();
    let model = Identity { dim: 10 };
    let config = ProbeParams {
        k: 8,
        n_unit: 10,
        n_random: 20,
        baseline_sets: 500,
        resamples: 500,
        seed: 3,
    }
    .check()
    .unwrap();
    let report = study(&model, &data, 0, &config).unwrap();
    assert_eq!(report.layer_dim, 10);
    assert_eq!(report.heldout, 120);
    assert_eq!(report.unit.n, 10);
    assert_eq!(report.random.n, 20);
    assert_eq!(report.directions.len(), 30);
    for r in report.unit_results() {
        let Direction::Unit(c) = r.top.direction else {
            unreachable!()
        };
        // The 8 brightest images of class c, brightest (largest j) first.
        let expected: Vec<usize> = (4..12).rev().map(|j| c * 12 + j).collect();
        assert_eq!(r.top.indices, expected);
        assert_eq!(r.purity, 1.0);
    }
    assert_eq!(report.unit.purity.mean, 1.0);
    assert_eq!(report.unit.purity.ci95.lo, 1.0);
    assert_eq!(report.unit.purity.ci95.hi, 1.0);
    // Unit directions' images are one class each, tight in input space.
    assert!(report.unit.spread.mean < report.baseline.spread_range95.lo);
    // Random 8-sets of 10 balanced classes are far from pure.
    assert!(report.baseline.purity_mean < 0.5);
    assert!(report.purity_difference.mean > 0.0);
    // Deterministic from the seed.
    assert_eq!(study(&model, &data, 0, &config).unwrap(), report);
}

#[test]
fn bootstrap_and_comparison() {
    let flat = bootstrap_mean(&[0.5; 10], 100, 1).unwrap();
    assert_eq!(flat.mean, 0.5);
    assert_eq!((flat.ci95.lo, flat.ci95.hi), (0.5, 0.5));
    let v: Vec<f64> = (0..40).map(|i| i as f64).collect();
    let ci = bootstrap_mean(&v, 2000, 2).unwrap();
    assert!(ci.ci95.lo < 19.5 && 19.5 < ci.ci95.hi);
    let same = compare_means(&v, &v, 2000, 3).unwrap();
    assert_eq!(same.mean, 0.0);
    assert!(!same.differs);
    assert!(same.p_value > 0.9);
    let shifted: Vec<f64> = v.iter().map(|x| x + 30.0).collect();
    let diff = compare_means(&v, &shifted, 2000, 4).unwrap();
    assert_eq!(diff.mean, -30.0);
    assert!(diff.differs && diff.ci95.hi < 0.0);
    assert!(diff.p_value < 0.01);
    assert!(matches!(
        bootstrap_mean(&[], 10, 1),
        Err(Error::EmptyInput { .. })
    ));
    assert!(matches!(
        compare_means(&v, &v, 0, 1),
        Err(Error::InvalidParameter { .. })
    ));
}

#[test]
fn bad_arguments_are_typed_errors() {
    let data = one_hot_dataset();
    let x = data.images();
    let model = Identity { dim: 10 };
    let unit = [Direction::Unit(0)];
    // Wrong-length, non-finite, zero custom directions; unit out of range.
    assert!(matches!(
        top_k(&model, x, 0, &[Direction::Custom(Array1::ones(9))], 3),
        Err(Error::Shape { .. })
    ));
    assert!(matches!(
        top_k(&model, x, 1, &[Direction::Custom(Array1::ones(10))], 3),
        Err(Error::Shape { .. })
    ));
    let mut nan = Array1::<f32>::ones(10);
    nan[4] = f32::NAN;
    assert!(matches!(
        top_k(&model, x, 0, &[Direction::Custom(nan)], 3),
        Err(Error::NonFinite { .. })
    ));
    assert!(matches!(
        top_k(&model, x, 0, &[Direction::Custom(Array1::zeros(10))], 3),
        Err(Error::InvalidParameter { .. })
    ));
    assert!(matches!(
        top_k(&model, x, 1, &[Direction::Unit(2)], 3),
        Err(Error::InvalidParameter { .. })
    ));
    // Layer out of range (the model's own layer_dim would panic: the probe must not ask).
    assert!(matches!(
        top_k(&model, x, 2, &unit, 3),
        Err(Error::InvalidParameter { name: "layer", .. })
    ));
    assert!(matches!(
        layer_activations(&model, x, 5),
        Err(Error::InvalidParameter { name: "layer", .. })
    ));
    assert!(matches!(
        study(&model, &data, 2, &ProbeParams::default().check().unwrap()),
        Err(Error::InvalidParameter { name: "layer", .. })
    ));
    // k = 0 and k > n.
    for k in [0, 121] {
        assert!(matches!(
            top_k(&model, x, 0, &unit, k),
            Err(Error::InvalidParameter { name: "k", .. })
        ));
        // k = 0 is caught by the check, k > n by the study, both under the name `k`.
        let config = ProbeParams::default()
            .with_k(k)
            .with_directions(5, 50)
            .check();
        assert!(matches!(
            config.and_then(|c| study(&model, &data, 0, &c)),
            Err(Error::InvalidParameter { name: "k", .. })
        ));
    }
    assert!(top_k(&model, x, 0, &unit, 120).is_ok());
    // More unit directions than units; no directions.
    assert!(matches!(
        study(&model, &data, 0, &ProbeParams::default().check().unwrap()),
        Err(Error::InvalidParameter { name: "n_unit", .. })
    ));
    assert!(matches!(
        top_k(&model, x, 0, &[], 3),
        Err(Error::InvalidParameter { .. })
    ));
    // Network's own range check also holds through the probe.
    let mlp = Network::new(Architecture::parse("FC5-3", 10).unwrap(), 1);
    assert!(matches!(
        top_k(&mlp, x, 1, &unit, 3),
        Err(Error::InvalidParameter { name: "layer", .. })
    ));
}

#[test]
fn boundary_ties_are_counted() {
    // Column 0: five rows tie at the top value 1.0; the top 3 must take rows 0, 2, 3 (index
    // tie-break) and report the two tied rows left out.
    let acts = array![[1.0f32], [0.5], [1.0], [1.0], [1.0], [0.2], [1.0]];
    let t = &top_k_from_activations(acts.view(), &[Direction::Unit(0)], 3).unwrap()[0];
    assert_eq!(t.indices, vec![0, 2, 3]);
    assert_eq!(t.boundary_ties, 2);
    let t = &top_k_from_activations(acts.view(), &[Direction::Unit(0)], 5).unwrap()[0];
    assert_eq!(t.boundary_ties, 0);
    let t = &top_k_from_activations(acts.view(), &[Direction::Unit(0)], 6).unwrap()[0];
    assert_eq!((t.indices[5], t.boundary_ties), (1, 0));
}

#[test]
fn pre_activations_are_the_sigmoid_arguments() {
    use blindspot::nn::sigmoid;
    use blindspot::probe::PreActivations;
    let mlp = Network::new(Architecture::parse("FC6-5-3", 4).unwrap(), 2);
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let x: Array2<f32> = Array2::random_using((50, 4), Uniform::new(0.0, 1.0), &mut rng);
    let pre = PreActivations(&mlp);
    assert_eq!(pre.num_layers(), 2);
    for layer in 0..2 {
        let z = pre.representation(x.view(), layer).unwrap();
        let a = mlp.representation(x.view(), layer).unwrap();
        assert_eq!(z.dim(), a.dim());
        for (&z, &a) in z.iter().zip(&a) {
            assert!((sigmoid(z) - a).abs() < 1e-6);
        }
        // Unit rankings agree (σ is monotone) where activations are not tied.
        let tz = top_k(&pre, x.view(), layer, &[Direction::Unit(1)], 5).unwrap();
        let ta = top_k(&mlp, x.view(), layer, &[Direction::Unit(1)], 5).unwrap();
        assert_eq!(tz[0].indices, ta[0].indices);
    }
    assert!(matches!(
        top_k(&pre, x.view(), 2, &[Direction::Unit(0)], 3),
        Err(Error::InvalidParameter { name: "layer", .. })
    ));
    let wrong = Array2::<f32>::zeros((3, 5));
    assert!(matches!(
        pre.representation(wrong.view(), 0),
        Err(Error::Shape { .. })
    ));
}

#[test]
fn probe_params_name_each_bad_value() {
    let name = |p: ProbeParams| match p.check() {
        Err(Error::InvalidParameter { name, .. }) => name,
        other => panic!("{other:?}"),
    };
    let d = ProbeParams::default;
    assert_eq!(name(d().with_k(0)), "k");
    assert_eq!(name(d().with_directions(0, 5)), "n_unit");
    assert_eq!(name(d().with_directions(5, 0)), "n_random");
    assert_eq!(
        name(d().with_directions(5, blindspot::probe::MAX_DIRECTIONS + 1)),
        "n_random"
    );
    assert_eq!(name(d().with_baseline_sets(0)), "baseline_sets");
    assert_eq!(
        name(d().with_resamples(blindspot::probe::MAX_RESAMPLES + 1)),
        "resamples"
    );
    let c = d().with_seed(9).check().unwrap();
    assert_eq!((c.k, c.n_unit, c.n_random), (8, 50, 50));
    assert_eq!((c.baseline_sets, c.resamples, c.seed), (2000, 2000, 9));
}
