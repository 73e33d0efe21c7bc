//! Figures of the crate's results as SVG and PNG (cargo feature `plot`): learning curves
//! (test error per epoch, mean and spread over seeds), robust-accuracy curves (the share of
//! images whose minimal adversarial distortion exceeds ε) and the distribution of minimal
//! distortions.
//!
//! A figure is data first: a [`Chart`] of [`Line`]s, built by [`learning_curves`],
//! [`robust_accuracy`] or [`distortion_histogram`] from the figures the examples already keep
//! in their JSON, so that a plot can be re-made without re-running anything. [`Chart::svg`]
//! and [`Chart::png`] render it (plotters; text in an embedded subset of DejaVu Sans, so no
//! system font library is needed), [`Chart::save`] writes both files atomically.
//!
//! ```
//! use blindspot::plot::robust_accuracy;
//!
//! // Minimal distortions of five images; the last attack failed (never fooled).
//! let d = vec![0.02, 0.04, 0.04, 0.08, f64::INFINITY];
//! let chart = robust_accuracy("FC100-100-10", &[("FC100-100-10".into(), d)], 0.1, 50)?;
//! let svg = chart.svg(640, 400)?;
//! assert!(svg.starts_with("<svg"));
//! # Ok::<(), blindspot::Error>(())
//! ```

use std::io::Write;
use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;

use crate::error::{Error, Result};
use crate::io::write_atomic;

/// DejaVu Sans cut to printable ASCII and the symbols the figures use (licence beside it).
static FONT: &[u8] = include_bytes!("DejaVuSans-subset.ttf");

/// Largest side of a rendered figure, in pixels: a bound on the RGB buffer (3 bytes a pixel).
pub const MAX_SIDE: u32 = 8192;

/// The palette of the lines, in order (colour-blind safe: Okabe and Ito).
const PALETTE: [RGBColor; 8] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(86, 180, 233),
    RGBColor(230, 159, 0),
    RGBColor(0, 0, 0),
    RGBColor(240, 228, 66),
];

/// One line of a chart: points in order of x, and optionally a spread (± around each point,
/// drawn as a band).
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    /// The legend's text.
    pub label: String,
    /// `(x, y)` points.
    pub points: Vec<(f64, f64)>,
    /// The half-width of the band at each point (same length as `points`), if any.
    pub spread: Option<Vec<f64>>,
}

/// A line chart: what every figure of the crate is.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    /// Title above the plot.
    pub title: String,
    /// The x axis's label.
    pub x_label: String,
    /// The y axis's label.
    pub y_label: String,
    /// The lines, drawn in order.
    pub lines: Vec<Line>,
}

fn plot_error(e: impl std::fmt::Display) -> Error {
    Error::Plot {
        reason: e.to_string(),
    }
}

impl Chart {
    /// The axes' ranges `((x_lo, x_hi), (y_lo, y_hi))`, bands included, with a margin on y;
    /// both finite and of positive width.
    ///
    /// # Errors
    ///
    /// [`Error::EmptyInput`] for a chart with no points; [`Error::NonFinite`] naming the line
    /// with a NaN or infinite coordinate or spread; [`Error::Shape`] for a spread whose length
    /// is not the points'.
    pub fn ranges(&self) -> Result<((f64, f64), (f64, f64))> {
        let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for line in &self.lines {
            if let Some(s) = &line.spread {
                if s.len() != line.points.len() {
                    return Err(Error::shape(
                        format!("spread of line {:?}", line.label),
                        line.points.len(),
                        s.len(),
                    ));
                }
            }
            for (i, &(x, y)) in line.points.iter().enumerate() {
                let s = line.spread.as_ref().map_or(0.0, |s| s[i]);
                if !(x.is_finite() && y.is_finite() && s.is_finite()) {
                    return Err(Error::NonFinite {
                        what: format!("point {i} of line {:?}", line.label),
                    });
                }
                x0 = x0.min(x);
                x1 = x1.max(x);
                y0 = y0.min(y - s.abs());
                y1 = y1.max(y + s.abs());
            }
        }
        if x0 > x1 {
            return Err(Error::empty(format!(
                "chart {:?} has no points",
                self.title
            )));
        }
        if x1 - x0 <= 0.0 {
            x1 = x0 + 1.0;
        }
        if y1 - y0 <= 0.0 {
            y1 = y0 + 1.0;
        }
        let pad = 0.05 * (y1 - y0);
        Ok(((x0, x1), (y0 - pad, y1 + pad)))
    }

    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, plotters::coord::Shift>) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        register_font()?;
        let ((x0, x1), (y0, y1)) = self.ranges()?;
        root.fill(&WHITE).map_err(plot_error)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(&self.title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(plot_error)?;
        chart
            .configure_mesh()
            .x_desc(&self.x_label)
            .y_desc(&self.y_label)
            .label_style(("sans-serif", 13))
            .light_line_style(RGBColor(246, 246, 246))
            .x_label_formatter(&|&x| tick_label(x, x1 - x0))
            .draw()
            .map_err(plot_error)?;
        for (k, line) in self.lines.iter().enumerate() {
            let colour = PALETTE[k % PALETTE.len()];
            if let Some(spread) = &line.spread {
                let upper = line
                    .points
                    .iter()
                    .zip(spread)
                    .map(|(&(x, y), s)| (x, y + s));
                let lower = line
                    .points
                    .iter()
                    .zip(spread)
                    .rev()
                    .map(|(&(x, y), s)| (x, y - s));
                chart
                    .draw_series(std::iter::once(Polygon::new(
                        upper.chain(lower).collect::<Vec<_>>(),
                        colour.mix(0.18).filled(),
                    )))
                    .map_err(plot_error)?;
            }
            chart
                .draw_series(LineSeries::new(
                    line.points.iter().copied(),
                    colour.stroke_width(2),
                ))
                .map_err(plot_error)?
                .label(line.label.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(190, 190, 190))
            .label_font(("sans-serif", 13))
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(plot_error)?;
        root.present().map_err(plot_error)?;
        Ok(())
    }

    /// The chart as an SVG document of `width` × `height` pixels.
    ///
    /// # Errors
    ///
    /// As [`Chart::ranges`]; [`Error::InvalidParameter`] for a side of 0 or above
    /// [`MAX_SIDE`]; [`Error::Plot`] if drawing fails.
    pub fn svg(&self, width: u32, height: u32) -> Result<String> {
        check_size(width, height)?;
        let mut out = String::new();
        self.draw(SVGBackend::with_string(&mut out, (width, height)).into_drawing_area())?;
        Ok(out)
    }

    /// The chart as RGB pixels, row by row (`3 · width · height` bytes).
    ///
    /// # Errors
    ///
    /// As [`Chart::svg`].
    pub fn rgb(&self, width: u32, height: u32) -> Result<Vec<u8>> {
        check_size(width, height)?;
        let mut buf = vec![0u8; 3 * width as usize * height as usize];
        self.draw(BitMapBackend::with_buffer(&mut buf, (width, height)).into_drawing_area())?;
        Ok(buf)
    }

    /// The chart as a PNG file's bytes.
    ///
    /// # Errors
    ///
    /// As [`Chart::svg`].
    pub fn png(&self, width: u32, height: u32) -> Result<Vec<u8>> {
        let rgb = self.rgb(width, height)?;
        let mut out = Vec::new();
        let mut enc = png::Encoder::new(&mut out, width, height);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().map_err(plot_error)?;
        w.write_image_data(&rgb).map_err(plot_error)?;
        w.finish().map_err(plot_error)?;
        Ok(out)
    }

    /// Writes `dir/stem.svg` and `dir/stem.png` (960 × 600), each atomically; creates `dir`.
    ///
    /// # Errors
    ///
    /// As [`Chart::svg`]; [`Error::Io`] if a file cannot be written.
    pub fn save(&self, dir: impl AsRef<Path>, stem: &str) -> Result<()> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let svg = self.svg(960, 600)?;
        let png = self.png(960, 600)?;
        write_atomic(&dir.join(format!("{stem}.svg")), |w| {
            w.write_all(svg.as_bytes())
        })?;
        write_atomic(&dir.join(format!("{stem}.png")), |w| w.write_all(&png))
    }
}

/// `x` with the fewest decimals that print it to within a millionth of the axis' `span`:
/// ticks such as 0.12 are sums of float steps (0.12000000000000001), and printing them in
/// full buries the axis in noise.
pub(crate) fn tick_label(x: f64, span: f64) -> String {
    let tolerance = span.abs().max(f64::MIN_POSITIVE) * 1e-6;
    if x.abs() <= tolerance {
        return "0".into();
    }
    (0..=12)
        .map(|d| format!("{x:.d$}"))
        .find(|s| s.parse::<f64>().is_ok_and(|v| (v - x).abs() <= tolerance))
        .unwrap_or_else(|| format!("{x}"))
}

fn check_size(width: u32, height: u32) -> Result<()> {
    for (name, v) in [("width", width), ("height", height)] {
        if v == 0 || v > MAX_SIDE {
            return Err(Error::param(
                name,
                format!("must be in 1..={MAX_SIDE} pixels, got {v}"),
            ));
        }
    }
    Ok(())
}

fn register_font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, FONT).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(Error::Plot {
            reason: "the embedded font did not load".into(),
        })
    }
}

/// Mean and sample standard deviation of each epoch over the runs (seeds) of one method, as
/// a percentage; epochs past the shortest run are left out.
fn mean_sd_per_epoch(runs: &[Vec<f64>]) -> (Vec<f64>, Vec<f64>) {
    let epochs = runs.iter().map(Vec::len).min().unwrap_or(0);
    (0..epochs)
        .map(|e| {
            let v: Vec<f64> = runs.iter().map(|r| 100.0 * r[e]).collect();
            let m = v.iter().sum::<f64>() / v.len() as f64;
            let var = if v.len() > 1 {
                v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (v.len() - 1) as f64
            } else {
                0.0
            };
            (m, var.sqrt())
        })
        .unzip()
}

/// Learning curves: for each method (its name and the test error after every epoch of each
/// seed's run, as fractions), the mean test error per epoch in percent with a band of ± one
/// standard deviation over the seeds.
///
/// # Errors
///
/// [`Error::EmptyInput`] if no method has a run with an epoch; [`Error::NonFinite`] for a
/// NaN or infinite error.
pub fn learning_curves(title: &str, methods: &[(String, Vec<Vec<f64>>)]) -> Result<Chart> {
    let lines = methods
        .iter()
        .filter(|(_, runs)| !runs.is_empty())
        .map(|(name, runs)| {
            let (mean, sd) = mean_sd_per_epoch(runs);
            Line {
                label: format!("{name} ({} seeds)", runs.len()),
                points: mean
                    .iter()
                    .enumerate()
                    .map(|(e, &m)| ((e + 1) as f64, m))
                    .collect(),
                spread: (runs.len() > 1).then_some(sd),
            }
        })
        .collect();
    let chart = Chart {
        title: title.to_string(),
        x_label: "epoch".into(),
        y_label: "test error (%)".into(),
        lines,
    };
    chart.ranges()?;
    Ok(chart)
}

/// The share of `distortions` greater than `epsilon`: the accuracy under every attack of
/// distortion at most ε, as far as the minimal distortions found tell. An image the attack
/// failed on counts as robust at every ε (give it `f64::INFINITY`); one misclassified
/// without attack (distortion 0) at none.
///
/// # Errors
///
/// [`Error::EmptyInput`] for no distortions; [`Error::NonFinite`] for a NaN distortion
/// or ε.
pub fn robust_accuracy_at(distortions: &[f64], epsilon: f64) -> Result<f64> {
    if distortions.is_empty() {
        return Err(Error::empty("robust accuracy of no images"));
    }
    if epsilon.is_nan() || distortions.iter().any(|d| d.is_nan()) {
        return Err(Error::NonFinite {
            what: "distortion or ε of a robust accuracy".into(),
        });
    }
    Ok(distortions.iter().filter(|&&d| d > epsilon).count() as f64 / distortions.len() as f64)
}

/// Robust-accuracy curves: for each model (its name and the minimal distortion of each
/// attacked image, `f64::INFINITY` where the attack failed), the accuracy in percent against
/// ε at `steps + 1` points from 0 to `epsilon_max`.
///
/// # Errors
///
/// [`Error::InvalidParameter`] for a non-positive or non-finite `epsilon_max` or no steps;
/// as [`robust_accuracy_at`].
pub fn robust_accuracy(
    title: &str,
    models: &[(String, Vec<f64>)],
    epsilon_max: f64,
    steps: usize,
) -> Result<Chart> {
    if !(epsilon_max.is_finite() && epsilon_max > 0.0) {
        return Err(Error::param(
            "epsilon_max",
            format!("must be finite and positive, got {epsilon_max}"),
        ));
    }
    crate::error::check_count("steps", steps, 100_000)?;
    let mut lines = Vec::with_capacity(models.len());
    for (name, d) in models {
        let points = (0..=steps)
            .map(|k| {
                let eps = epsilon_max * k as f64 / steps as f64;
                Ok((eps, 100.0 * robust_accuracy_at(d, eps)?))
            })
            .collect::<Result<Vec<_>>>()?;
        lines.push(Line {
            label: name.clone(),
            points,
            spread: None,
        });
    }
    let chart = Chart {
        title: title.to_string(),
        x_label: "ε (distortion, RMS over pixels)".into(),
        y_label: "robust accuracy (%)".into(),
        lines,
    };
    chart.ranges()?;
    Ok(chart)
}

/// Distribution of the minimal distortions per model, as frequency polygons over `bins`
/// equal bins from 0 to the largest finite distortion (percent of each model's successful
/// attacks per bin; failed attacks, infinite, are left out).
///
/// # Errors
///
/// [`Error::InvalidParameter`] for no bins or more than 10,000; [`Error::EmptyInput`] for
/// no models; [`Error::NonFinite`] for a NaN distortion.
pub fn distortion_histogram(
    title: &str,
    models: &[(String, Vec<f64>)],
    bins: usize,
) -> Result<Chart> {
    crate::error::check_count("bins", bins, 10_000)?;
    if models.iter().any(|(_, d)| d.iter().any(|v| v.is_nan())) {
        return Err(Error::NonFinite {
            what: "a distortion of the histogram".into(),
        });
    }
    let top = models
        .iter()
        .flat_map(|(_, d)| d.iter().copied().filter(|v| v.is_finite()))
        .fold(0.0f64, f64::max);
    let width = if top > 0.0 { top / bins as f64 } else { 1.0 };
    let lines = models
        .iter()
        .map(|(name, d)| {
            let finite: Vec<f64> = d.iter().copied().filter(|v| v.is_finite()).collect();
            let mut counts = vec![0usize; bins];
            for v in &finite {
                let b = ((v / width) as usize).min(bins - 1);
                counts[b] += 1;
            }
            let n = finite.len().max(1) as f64;
            Line {
                label: name.clone(),
                points: counts
                    .iter()
                    .enumerate()
                    .map(|(b, &c)| ((b as f64 + 0.5) * width, 100.0 * c as f64 / n))
                    .collect(),
                spread: None,
            }
        })
        .collect();
    let chart = Chart {
        title: title.to_string(),
        x_label: "minimal distortion".into(),
        y_label: "share of images (%)".into(),
        lines,
    };
    chart.ranges()?;
    Ok(chart)
}

#[cfg(test)]
mod tests {
    use super::tick_label;

    #[test]
    fn tick_labels_drop_float_noise_and_keep_what_the_span_resolves() {
        assert_eq!(tick_label(0.12000000000000001, 0.14), "0.12");
        assert_eq!(tick_label(0.19999999999999998, 0.2), "0.2");
        assert_eq!(tick_label(0.1, 0.14), "0.1");
        assert_eq!(tick_label(-1e-18, 0.14), "0");
        assert_eq!(tick_label(40.0, 60.0), "40");
        assert_eq!(tick_label(2.5e-4, 1e-3), "0.00025");
        assert_eq!(tick_label(-0.35, 1.0), "-0.35");
        // a tick that is only near a short decimal stays exact to the span's resolution
        assert_eq!(tick_label(0.123456789, 1.0), "0.123457");
    }
}
