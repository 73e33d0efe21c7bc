//! The figures (cargo feature `plot`): rendered to buffers and files, checked for what can be
//! checked without eyes: the files exist and decode to the asked size, the axes are finite,
//! the curves' values are the definitions', and bad data is a typed error.
#![cfg(feature = "plot")]

use blindspot::plot::{
    distortion_histogram, learning_curves, robust_accuracy, robust_accuracy_at, Chart, Line,
};
use blindspot::Error;

mod common;

fn curves() -> Chart {
    let runs = |base: f64| -> Vec<Vec<f64>> {
        (0..3)
            .map(|s| {
                (0..10)
                    .map(|e| base + 0.05 / (e as f64 + 1.0) + 0.001 * s as f64)
                    .collect()
            })
            .collect()
    };
    learning_curves(
        "test error",
        &[
            ("weight_decay".into(), runs(0.018)),
            ("fgsm".into(), runs(0.014)),
        ],
    )
    .unwrap()
}

#[test]
fn learning_curves_are_the_mean_and_sd_over_seeds_in_percent() {
    let chart = curves();
    assert_eq!(chart.lines.len(), 2);
    let line = &chart.lines[0];
    assert_eq!(line.points.len(), 10);
    // Epoch 1: errors 0.068, 0.069, 0.070 → mean 6.9%, sd 0.1%.
    let (x, y) = line.points[0];
    assert_eq!(x, 1.0);
    assert!((y - 6.9).abs() < 1e-9, "{y}");
    let sd = line.spread.as_ref().unwrap()[0];
    assert!((sd - 0.1).abs() < 1e-9, "{sd}");
    // Lowest band: fgsm at epoch 10, 1.9% − 0.1; highest: weight decay at epoch 1, 6.9% + 0.1.
    let ((x0, x1), (y0, y1)) = chart.ranges().unwrap();
    assert!(x0 == 1.0 && x1 == 10.0);
    assert!(y0.is_finite() && y1.is_finite() && y0 < 1.8 && y1 > 6.9 + 0.1);
}

#[test]
fn robust_accuracy_counts_images_whose_minimal_distortion_exceeds_epsilon() {
    let d = [0.0, 0.02, 0.04, 0.04, f64::INFINITY];
    assert_eq!(robust_accuracy_at(&d, 0.0).unwrap(), 0.8);
    assert_eq!(robust_accuracy_at(&d, 0.03).unwrap(), 0.6);
    assert_eq!(robust_accuracy_at(&d, 0.04).unwrap(), 0.2);
    assert_eq!(robust_accuracy_at(&d, 1e9).unwrap(), 0.2);
    let chart = robust_accuracy("r", &[("m".into(), d.to_vec())], 0.05, 5).unwrap();
    let ys: Vec<f64> = chart.lines[0].points.iter().map(|p| p.1).collect();
    // ε = 0, 0.01, …, 0.05 (floating steps: 0.04 may land a hair either side).
    assert_eq!(ys[0], 80.0);
    assert_eq!(ys[3], 60.0);
    assert_eq!(ys[5], 20.0);
    assert!(ys.windows(2).all(|w| w[1] <= w[0]), "not monotone: {ys:?}");
    assert!(matches!(
        robust_accuracy_at(&[], 0.1),
        Err(Error::EmptyInput { .. })
    ));
    assert!(matches!(
        robust_accuracy_at(&[f64::NAN], 0.1),
        Err(Error::NonFinite { .. })
    ));
    assert!(matches!(
        robust_accuracy("r", &[("m".into(), d.to_vec())], f64::NAN, 5),
        Err(Error::InvalidParameter { .. })
    ));
}

#[test]
fn the_histogram_bins_finite_distortions_and_sums_to_one_hundred_percent() {
    let d = vec![0.01, 0.02, 0.03, 0.1, f64::INFINITY];
    let chart = distortion_histogram("h", &[("m".into(), d)], 10).unwrap();
    let ys: Vec<f64> = chart.lines[0].points.iter().map(|p| p.1).collect();
    assert_eq!(ys.len(), 10);
    assert!((ys.iter().sum::<f64>() - 100.0).abs() < 1e-9);
    // 0.1 is the top: it falls in the last bin, not past it.
    assert_eq!(ys[9], 25.0);
    assert!(matches!(
        distortion_histogram("h", &[("m".into(), vec![0.1])], 0),
        Err(Error::InvalidParameter { .. })
    ));
}

#[test]
fn charts_render_to_svg_and_png_of_the_asked_size() {
    let chart = curves();
    let svg = chart.svg(640, 400).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("weight_decay") && !svg.contains("NaN"));
    let rgb = chart.rgb(320, 200).unwrap();
    assert_eq!(rgb.len(), 3 * 320 * 200);
    // Something besides the white background was drawn, in more than one colour.
    let mut colours: Vec<[u8; 3]> = rgb.chunks(3).map(|c| [c[0], c[1], c[2]]).collect();
    colours.sort_unstable();
    colours.dedup();
    assert!(colours.len() > 10, "{} colours", colours.len());
    let png = chart.png(320, 200).unwrap();
    let decoder = png::Decoder::new(png.as_slice());
    let reader = decoder.read_info().unwrap();
    assert_eq!((reader.info().width, reader.info().height), (320, 200));
    for (w, h) in [(0, 10), (10, 0), (100_000, 10)] {
        assert!(matches!(
            chart.svg(w, h),
            Err(Error::InvalidParameter { .. })
        ));
    }
}

#[test]
fn save_writes_both_files_and_bad_points_are_typed_errors() {
    let dir = common::TempDir::new("plot");
    curves().save(&dir.0, "curves").unwrap();
    for ext in ["svg", "png"] {
        let len = std::fs::metadata(dir.0.join(format!("curves.{ext}")))
            .unwrap()
            .len();
        assert!(len > 1000, "{ext}: {len} bytes");
    }
    let bad = Chart {
        title: "bad".into(),
        x_label: "x".into(),
        y_label: "y".into(),
        lines: vec![Line {
            label: "l".into(),
            points: vec![(0.0, 1.0), (1.0, f64::NAN)],
            spread: None,
        }],
    };
    assert!(matches!(bad.svg(100, 100), Err(Error::NonFinite { .. })));
    let empty = Chart {
        lines: vec![],
        ..bad.clone()
    };
    assert!(matches!(empty.svg(100, 100), Err(Error::EmptyInput { .. })));
    let short = Chart {
        lines: vec![Line {
            label: "l".into(),
            points: vec![(0.0, 1.0)],
            spread: Some(vec![]),
        }],
        ..bad
    };
    assert!(matches!(short.svg(100, 100), Err(Error::Shape { .. })));
}
