//! Issue 25: lockstep batches do not change results. Each image's `Outcome` is the same, bit
//! for bit in every field, whether it is attacked alone (`Attack::attack`), in one batch
//! (`Attack::attack_batch`) or in smaller batches, on one or two rayon threads: the batch is
//! split into groups (at most `MAX_GROUP` rows, or the model's `lockstep_rows`, at least one per
//! thread) whose images advance
//! together, one model call per round, and the crate's models compute each row as if alone
//! (tests/batch_rows.rs). Here on the crate's own network and on that network behind finite
//! differences; tests/candle.rs checks the candle adapter the same way.

use blindspot::adapters::{CallCounts, Counting, FiniteDifference, DEFAULT_STEP};
use blindspot::attack::{BoxLbfgs, BoxLbfgsParams, Outcome, Target};
use blindspot::nn::{Architecture, Network};
use blindspot::{Check, Differentiable};

mod common;

use common::lockstep::{assert_same, assert_split_invariant, run, Images, Split};
use common::small_mnist_model;

/// Rayon pool sizes every split runs on.
const THREADS: [usize; 2] = [1, 2];

/// The attack really searched: the misclassified image came back unsearched, and at least
/// four in five of the others succeeded after at least `min_evaluations` model evaluations.
fn assert_searched(images: &Images, outcomes: &[Outcome], min_evaluations: usize) {
    let skipped = &outcomes[images.wrong];
    assert!(skipped.already_adversarial && skipped.success && skipped.evaluations == 1);
    assert_eq!(skipped.adversarial, images.xs.row(images.wrong));
    let searched: Vec<&Outcome> = (0..outcomes.len())
        .filter(|&i| i != images.wrong)
        .map(|i| &outcomes[i])
        .collect();
    assert!(searched.iter().all(|o| !o.already_adversarial));
    let long = searched
        .iter()
        .filter(|o| o.success && o.evaluations >= min_evaluations && o.distortion > 0.0)
        .count();
    assert!(
        long * 5 >= searched.len() * 4,
        "only {long} of {} searched images succeeded after at least {min_evaluations} \
         evaluations",
        searched.len()
    );
}

#[test]
fn targeted_outcomes_are_the_same_alone_in_one_batch_and_in_batches_of_7() {
    let (model, _) = small_mnist_model();
    let images = Images::mnist(model, 50);
    let outcomes = assert_split_invariant(
        &BoxLbfgs::default(),
        model,
        images.xs.view(),
        &images.labels,
        &images.next_label_targets(),
        &[Split::Alone, Split::Batches(50), Split::Batches(7)],
        &THREADS,
    );
    assert_searched(&images, &outcomes, 20);
}

#[test]
fn untargeted_outcomes_are_the_same_alone_in_one_batch_and_in_batches_of_3() {
    let (model, _) = small_mnist_model();
    let images = Images::mnist(model, 10);
    let outcomes = assert_split_invariant(
        &BoxLbfgs::default(),
        model,
        images.xs.view(),
        &images.labels,
        &[Target::Untargeted; 10],
        &[Split::Alone, Split::Batches(10), Split::Batches(3)],
        &THREADS,
    );
    // Nine targets each: many more evaluations than one target takes.
    assert_searched(&images, &outcomes, 100);
}

#[test]
fn finite_difference_outcomes_are_the_same_and_batches_need_fewer_model_calls() {
    let (network, _) = small_mnist_model();
    let n = 8;
    let images = Images::mnist(network, n);
    let (xs, labels, targets) = (
        images.xs.view(),
        &images.labels,
        images.next_label_targets(),
    );
    // Counted twice: the calls the attack makes (outer), and the forward calls the finite
    // differences make on the network (inner).
    let inner = Counting::new(network.clone());
    let model = Counting::new(FiniteDifference::new(inner, DEFAULT_STEP).unwrap());
    let attack = BoxLbfgs::default();
    let counted = |split: Split, threads: usize| -> (Vec<Outcome>, CallCounts, CallCounts) {
        let (outer0, inner0) = (model.counts(), model.model().model().counts());
        let out = run(&attack, &model, xs, labels, &targets, split, threads);
        (
            out,
            model.counts().since(&outer0),
            model.model().model().counts().since(&inner0),
        )
    };
    let (reference, alone_outer, alone_inner) = counted(Split::Alone, 1);
    for split in [Split::Alone, Split::Batches(n), Split::Batches(3)] {
        for threads in THREADS {
            if (split, threads) == (Split::Alone, 1) {
                continue;
            }
            let (got, outer, inner) = counted(split, threads);
            let name = format!("{}, {threads} thread(s)", split.describe(n));
            assert_same("alone, 1 thread", &reference, &name, &got);
            // However the images are split, the model evaluates the same rows.
            assert_eq!(outer.rows(), alone_outer.rows(), "{name}: rows");
            assert_eq!(inner.rows(), alone_inner.rows(), "{name}: network rows");
            if split == Split::Alone {
                assert_eq!((outer, inner), (alone_outer, alone_inner), "{name}");
            } else {
                // In fewer calls: one per round for a group, not one per image.
                assert!(
                    outer.calls() < alone_outer.calls(),
                    "{name}: {} model calls, alone {}",
                    outer.calls(),
                    alone_outer.calls()
                );
                assert!(
                    inner.calls() < alone_inner.calls(),
                    "{name}: {} network calls, alone {}",
                    inner.calls(),
                    alone_inner.calls()
                );
            }
        }
    }
    assert_searched(&images, &reference, 20);
}

/// A convolutional network's attack rows are unfolded (im2col) one image at a time, so a
/// batch gives each image exactly the products it gets alone, whatever the batch around it.
#[test]
fn convolutional_outcomes_are_the_same_alone_and_in_batches() {
    let arch = Architecture::parse_image("CONV2-FC10", (28, 28, 1)).unwrap();
    let model = Network::new(arch, 3);
    // A convolutional network asks for small groups (a batch of 6 runs as two groups of 3 on
    // one thread), a dense one leaves the size to the attack; counting keeps the preference.
    assert_eq!(
        model.lockstep_rows(),
        Some(blindspot::nn::CONV_LOCKSTEP_ROWS)
    );
    assert_eq!(
        Counting::new(model.clone()).lockstep_rows(),
        model.lockstep_rows()
    );
    let dense = Network::new(Architecture::parse("FC10", 784).unwrap(), 3);
    assert_eq!(dense.lockstep_rows(), None);
    let n = 6;
    let images = Images::mnist(&model, n);
    // A short search: the property is per evaluation, and a debug-build convolution is slow.
    let attack = BoxLbfgsParams::default()
        .with_search_steps(1)
        .with_max_iters(15)
        .check()
        .unwrap();
    let outcomes = assert_split_invariant(
        &attack,
        &model,
        images.xs.view(),
        &images.labels,
        &images.next_label_targets(),
        &[Split::Alone, Split::Batches(n), Split::Batches(4)],
        &THREADS,
    );
    assert!(outcomes[images.wrong].already_adversarial);
    assert!(outcomes
        .iter()
        .enumerate()
        .any(|(i, o)| i != images.wrong && o.evaluations > 10));
}
