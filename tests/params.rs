//! The one shape of settings (`blindspot::params`): every settings type checks into a
//! `Checked`, the checked defaults equal the checked `Default` settings (so the constants the
//! crate wraps without a check are valid), and a checked value reads back what was given.

use blindspot::attack::{BoxLbfgs, BoxLbfgsParams};
use blindspot::nn::TrainParams;
use blindspot::probe::ProbeParams;
use blindspot::spectral::{PowerIterationConfig, PowerIterationParams};
use blindspot::{Check, Error};

#[test]
fn checked_defaults_are_the_checked_default_settings() {
    assert_eq!(
        BoxLbfgsParams::default().check().unwrap(),
        BoxLbfgs::default()
    );
    assert_eq!(BoxLbfgs::new(), BoxLbfgs::default());
    assert_eq!(
        PowerIterationParams::default().check().unwrap(),
        PowerIterationConfig::default()
    );
    #[cfg(feature = "download")]
    assert_eq!(
        blindspot::data::DownloadParams::default().check().unwrap(),
        blindspot::data::DownloadConfig::default()
    );
    assert!(ProbeParams::default().check().is_ok());
    assert!(TrainParams::default().check().is_ok());
}

#[test]
fn checked_settings_read_back_and_round_trip() {
    let given = TrainParams::new(7, 32, 0.25).with_seed(11);
    let checked = given.clone().check().unwrap();
    assert_eq!(checked.epochs, 7);
    assert_eq!(checked.params(), &given);
    // Changing a checked value means unwrapping it and checking again.
    let bad = checked.into_params().with_epochs(0);
    assert!(matches!(
        bad.check(),
        Err(Error::InvalidParameter { name: "epochs", .. })
    ));
    let p = PowerIterationParams::new(1e-6, 50)
        .check()
        .unwrap()
        .with_seed(4);
    assert_eq!((p.tol, p.max_iter, p.seed), (1e-6, 50, 4));
}
