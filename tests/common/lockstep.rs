//! Helpers of the lockstep determinism tests (issue 25; tests/lockstep.rs, and tests/candle.rs
//! for the candle adapter): attack the same images alone, in one batch or in smaller batches,
//! on one or two rayon threads, and compare every field of the outcomes bit for bit.

use std::fmt::Write;

use blindspot::attack::{Attack, Outcome, Target};
use blindspot::nn::Network;
use blindspot::{Classifier, Differentiable};
use ndarray::{s, Array1, Array2, ArrayView2, Axis};
use rayon::prelude::*;

/// How the images of a run go to the attack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// One `Attack::attack` call per image (in parallel over images on more than one thread).
    Alone,
    /// `Attack::attack_batch` on consecutive chunks of this many rows (the last one shorter).
    Batches(usize),
}

impl Split {
    /// "alone", "one batch of 50", "batches of 7", for failure messages.
    pub fn describe(self, images: usize) -> String {
        match self {
            Split::Alone => "alone".into(),
            Split::Batches(b) if b >= images => format!("one batch of {images}"),
            Split::Batches(b) => format!("batches of {b}"),
        }
    }
}

/// Attacks every row of `xs` (true label `labels[i]`, target `targets[i]`) split as `split`,
/// inside a rayon pool of `threads` threads.
pub fn run<A: Attack, M: Differentiable>(
    attack: &A,
    model: &M,
    xs: ArrayView2<'_, f32>,
    labels: &[usize],
    targets: &[Target],
    split: Split,
    threads: usize,
) -> Vec<Outcome> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    let n = xs.nrows();
    pool.install(|| match split {
        Split::Alone => (0..n)
            .into_par_iter()
            .map(|i| {
                attack
                    .attack(model, xs.row(i), labels[i], targets[i])
                    .unwrap()
            })
            .collect(),
        Split::Batches(b) => (0..n)
            .step_by(b)
            .flat_map(|lo| {
                let hi = (lo + b).min(n);
                attack
                    .attack_batch(
                        model,
                        xs.slice(s![lo..hi, ..]),
                        &labels[lo..hi],
                        &targets[lo..hi],
                    )
                    .unwrap()
            })
            .collect(),
    })
}

/// Runs every split on every thread count and asserts that each image's outcome equals, bit
/// for bit, the one it gets alone on one thread; returns those reference outcomes.
pub fn assert_split_invariant<A: Attack, M: Differentiable>(
    attack: &A,
    model: &M,
    xs: ArrayView2<'_, f32>,
    labels: &[usize],
    targets: &[Target],
    splits: &[Split],
    threads: &[usize],
) -> Vec<Outcome> {
    let reference = run(attack, model, xs, labels, targets, Split::Alone, 1);
    for &split in splits {
        for &t in threads {
            if (split, t) == (Split::Alone, 1) {
                continue;
            }
            let got = run(attack, model, xs, labels, targets, split, t);
            assert_same(
                "alone, 1 thread",
                &reference,
                &format!("{}, {t} thread(s)", split.describe(xs.nrows())),
                &got,
            );
        }
    }
    reference
}

/// Asserts that `got[i]` and `reference[i]` agree bit for bit in every field, and otherwise
/// panics listing every image and field that differs, with both values' bits.
pub fn assert_same(ref_name: &str, reference: &[Outcome], name: &str, got: &[Outcome]) {
    assert_eq!(reference.len(), got.len(), "{name}: number of outcomes");
    let mut report = String::new();
    for (i, (a, b)) in reference.iter().zip(got).enumerate() {
        for d in differences(a, b) {
            writeln!(report, "  image {i}: {d}").unwrap();
        }
    }
    assert!(
        report.is_empty(),
        "outcomes differ between {ref_name} (left) and {name} (right):\n{report}"
    );
}

/// The fields in which `a` and `b` differ, each as "field: left vs right", floats by their
/// bits (so that 0.0 and -0.0, or two NaNs, are told apart as they should be).
pub fn differences(a: &Outcome, b: &Outcome) -> Vec<String> {
    // Destructured without `..`: a field added to `Outcome` must be added here.
    let Outcome {
        adversarial,
        perturbation,
        true_label,
        target,
        adversarial_label,
        success,
        already_adversarial,
        penalty_weight,
        distortion,
        evaluations,
    } = a;
    let mut out = Vec::new();
    out.extend(pixel_difference("adversarial", adversarial, &b.adversarial));
    out.extend(pixel_difference(
        "perturbation",
        perturbation,
        &b.perturbation,
    ));
    let mut field = |name: &str, x: String, y: String| {
        if x != y {
            out.push(format!("{name}: {x} vs {y}"));
        }
    };
    field(
        "true_label",
        true_label.to_string(),
        b.true_label.to_string(),
    );
    field("target", format!("{target:?}"), format!("{:?}", b.target));
    field(
        "adversarial_label",
        adversarial_label.to_string(),
        b.adversarial_label.to_string(),
    );
    field("success", success.to_string(), b.success.to_string());
    field(
        "already_adversarial",
        already_adversarial.to_string(),
        b.already_adversarial.to_string(),
    );
    field(
        "penalty_weight",
        f64_bits(*penalty_weight),
        f64_bits(b.penalty_weight),
    );
    field("distortion", f64_bits(*distortion), f64_bits(b.distortion));
    field(
        "evaluations",
        evaluations.to_string(),
        b.evaluations.to_string(),
    );
    out
}

fn f64_bits(v: f64) -> String {
    format!("{:#018x} ({v:e})", v.to_bits())
}

fn f32_bits(v: f32) -> String {
    format!("{:#010x} ({v:e})", v.to_bits())
}

/// `None` if the two vectors have the same bits; else how many pixels differ and the first.
fn pixel_difference(name: &str, a: &Array1<f32>, b: &Array1<f32>) -> Option<String> {
    if a.len() != b.len() {
        return Some(format!("{name}: {} pixels vs {}", a.len(), b.len()));
    }
    let differ: Vec<usize> = (0..a.len())
        .filter(|&j| a[j].to_bits() != b[j].to_bits())
        .collect();
    let &first = differ.first()?;
    Some(format!(
        "{name}: {} of {} pixels differ, first [{first}]: {} vs {}",
        differ.len(),
        a.len(),
        f32_bits(a[first]),
        f32_bits(b[first])
    ))
}

/// Images to attack, with the labels of the model they are attacked on.
pub struct Images {
    /// One image per row.
    pub xs: Array2<f32>,
    /// True labels.
    pub labels: Vec<usize>,
    /// The model's labels of the unperturbed images.
    pub predicted: Vec<usize>,
    /// The one row the model gets wrong.
    pub wrong: usize,
}

impl Images {
    /// `n` MNIST test images, from row 200 on (not among the training rows of
    /// [`super::small_mnist_model`], nor its 8 held-out images): the first `n − 1` that `model`
    /// classifies correctly, in order, and the first one it gets wrong in the middle (row
    /// `n / 2`), so that every run has an input already adversarial.
    pub fn mnist(model: &Network, n: usize) -> Images {
        assert!(n >= 2);
        let test = &super::mnist().test;
        let predicted = model.predict(test.images()).unwrap();
        let truth = test.labels();
        let right = (200..test.len()).filter(|&i| predicted[i] == truth[i]);
        let mut rows: Vec<usize> = right.take(n - 1).collect();
        let wrong = (200..test.len())
            .find(|&i| predicted[i] != truth[i])
            .expect("the model gets some test image wrong");
        rows.insert(n / 2, wrong);
        Images {
            xs: test.images().select(Axis(0), &rows),
            labels: rows.iter().map(|&i| truth[i]).collect(),
            predicted: rows.iter().map(|&i| predicted[i]).collect(),
            wrong: n / 2,
        }
    }

    /// Targets of a targeted run: the next label `(y + 1) mod 10`, except for the row the
    /// model gets wrong, which is aimed at the model's own label, so that it comes back
    /// unsearched (`already_adversarial`).
    pub fn next_label_targets(&self) -> Vec<Target> {
        (0..self.labels.len())
            .map(|i| {
                if i == self.wrong {
                    Target::Label(self.predicted[i])
                } else {
                    Target::Label((self.labels[i] + 1) % 10)
                }
            })
            .collect()
    }
}
