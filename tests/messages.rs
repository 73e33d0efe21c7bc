//! The errors a new user meets first say which argument was wrong, what range it had to be
//! in and what was passed; and one rule holds for empty batches across the API: a batch has
//! at least one row, and an empty one is `Error::EmptyInput`.

use blindspot::adversarial_training::{train_with_fgsm, FgsmTrainParams};
use blindspot::attack::{Attack, BoxLbfgs, Fgsm, Target};
use blindspot::data::Dataset;
use blindspot::ndarray::Array2;
use blindspot::nn::{train, Architecture, Network, TrainParams};
use blindspot::Check;
use blindspot::{Classifier, Differentiable, Error};

fn model(classes: usize) -> Network {
    let arch = Architecture::parse(&format!("FC5-{classes}"), 4).unwrap();
    Network::new(arch, 1)
}

fn data(labels: Vec<usize>, classes: usize) -> Dataset {
    let n = labels.len();
    let images = Array2::from_shape_fn((n, 4), |(i, j)| ((i + j) % 5) as f32 / 4.0);
    Dataset::new(images, labels, (2, 2), classes).unwrap()
}

#[test]
fn true_label_and_target_out_of_range_are_told_apart() {
    let m = model(10);
    let x = Array2::from_elem((1, 4), 0.5f32);
    let true_label = BoxLbfgs::new()
        .attack(&m, x.row(0), 10, Target::Label(3))
        .unwrap_err();
    let target = BoxLbfgs::new()
        .attack(&m, x.row(0), 3, Target::Label(10))
        .unwrap_err();
    for (err, what) in [(&true_label, "true label"), (&target, "target label")] {
        match err {
            Error::LabelOutOfRange {
                what: w,
                label: 10,
                classes: 10,
            } => assert_eq!(w, what),
            other => panic!("expected LabelOutOfRange for the {what}, got {other:?}"),
        }
    }
    assert_eq!(
        true_label.to_string(),
        "true label is 10, out of range 0..10 for 10 classes"
    );
    assert_eq!(
        target.to_string(),
        "target label is 10, out of range 0..10 for 10 classes"
    );
    // FGSM resolves targets the same way.
    let fgsm = Fgsm::new(0.1).unwrap();
    let err = fgsm.attack(&m, x.row(0), 2, Target::Label(12)).unwrap_err();
    assert!(
        matches!(err, Error::LabelOutOfRange { ref what, label: 12, .. } if what == "target label")
    );
}

#[test]
fn a_label_in_a_batch_is_named_by_its_row() {
    let m = model(3);
    let x = Array2::from_elem((3, 4), 0.5f32);
    let err = m.loss_and_input_grad(x.view(), &[0, 1, 7]).unwrap_err();
    assert!(
        matches!(err, Error::LabelOutOfRange { ref what, label: 7, classes: 3 } if what == "label of row 2"),
        "{err:?}"
    );
    let err = Dataset::new(Array2::zeros((2, 4)), vec![0, 5], (2, 2), 3).unwrap_err();
    assert!(
        matches!(err, Error::LabelOutOfRange { ref what, label: 5, classes: 3 } if what == "label of example 1"),
        "{err:?}"
    );
}

#[test]
fn too_many_declared_classes_is_not_called_a_label_out_of_range() {
    // Labels 0..9 only, but the dataset is declared with 20 classes: there is no label 19.
    let ds = data((0..40).map(|i| i % 10).collect(), 20);
    let config = TrainParams::new(1, 8, 0.1).check().unwrap();
    let err = train(&mut model(10), &ds, None, &config, |_| {}).unwrap_err();
    assert!(
        matches!(
            err,
            Error::ClassCount {
                dataset: 20,
                model: 10,
                largest_label: 9
            }
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("declares 20 classes") && msg.contains("10 outputs"),
        "{msg}"
    );
    assert!(!msg.contains("19"), "{msg}");

    // The same from adversarial training, which checks before anything is generated.
    let config_adv = FgsmTrainParams::new(TrainParams::new(1, 8, 0.1), 0.1)
        .with_warmup_epochs(0)
        .check()
        .unwrap();
    let err = train_with_fgsm(&mut model(10), &ds, None, &config_adv, |_| {}).unwrap_err();
    assert!(matches!(err, Error::ClassCount { .. }), "{err:?}");

    // A label that really has no output is named, with its example.
    let ds = data(vec![0, 1, 15, 2], 20);
    let err = train(&mut model(10), &ds, None, &config, |_| {}).unwrap_err();
    assert!(
        matches!(err, Error::LabelOutOfRange { ref what, label: 15, classes: 10 } if what == "label of training example 2"),
        "{err:?}"
    );
}

#[test]
fn an_empty_batch_is_an_error_everywhere() {
    let m = model(3);
    let empty = Array2::<f32>::zeros((0, 4));
    let is_empty = |r: Result<(), Error>| matches!(r, Err(Error::EmptyInput { .. }));
    assert!(is_empty(m.logits(empty.view()).map(drop)));
    assert!(is_empty(m.predict(empty.view()).map(drop)));
    assert!(is_empty(m.loss_and_input_grad(empty.view(), &[]).map(drop)));
    assert!(is_empty(
        BoxLbfgs::new()
            .attack_batch(&m, empty.view(), &[], &[])
            .map(drop)
    ));
    assert!(is_empty(
        Fgsm::new(0.1)
            .unwrap()
            .attack_batch(&m, empty.view(), &[], &[])
            .map(drop)
    ));
    assert!(is_empty(
        blindspot::attack::transfer_error(&m, empty.view(), &[]).map(drop)
    ));
    // The message says which input was empty; an empty dataset is a variant of its own.
    let err = Fgsm::new(0.1)
        .unwrap()
        .attack_batch(&m, empty.view(), &[], &[])
        .unwrap_err();
    assert!(
        matches!(err, Error::EmptyInput { ref what } if what == "attack batch has no rows"),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "empty input: attack batch has no rows");
    let none = blindspot::ndarray::Array1::<f32>::zeros(0);
    assert!(matches!(
        blindspot::attack::distortion(none.view(), none.view()),
        Err(Error::EmptyInput { ref what }) if what.contains("empty vector")
    ));
    assert!(matches!(
        Dataset::new(empty, vec![], (2, 2), 3),
        Err(Error::EmptyDataset(_))
    ));
}
