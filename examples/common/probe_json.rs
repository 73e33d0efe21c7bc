//! The probe's summary figures as the examples' JSON gives them (intervals as `[lo, hi]`
//! pairs), shared by the `probe` and `candle_model` examples so their files keep one shape.

use blindspot::probe::{Difference, GroupSummary, Interval, MeanCi};
use serde::Serialize;

/// An interval as the JSON gives it: `[lo, hi]`.
pub fn pair(i: Interval) -> [f64; 2] {
    [i.lo, i.hi]
}

/// The unit or the random directions' summary.
#[derive(Serialize)]
pub struct Group {
    n: usize,
    tied: usize,
    purity: Ci,
    spread: Ci,
}

impl From<&GroupSummary> for Group {
    fn from(g: &GroupSummary) -> Self {
        Group {
            n: g.n,
            tied: g.tied,
            purity: (&g.purity).into(),
            spread: (&g.spread).into(),
        }
    }
}

/// A mean and its 95% confidence interval.
#[derive(Serialize)]
pub struct Ci {
    mean: f64,
    ci95: [f64; 2],
}

impl From<&MeanCi> for Ci {
    fn from(m: &MeanCi) -> Self {
        Ci {
            mean: m.mean,
            ci95: pair(m.ci95),
        }
    }
}

/// A difference of means (unit − random), its 95% interval and permutation p-value.
#[derive(Serialize)]
pub struct DiffJson {
    mean: f64,
    ci95: [f64; 2],
    p_value: f64,
    differs: bool,
}

impl From<&Difference> for DiffJson {
    fn from(d: &Difference) -> Self {
        DiffJson {
            mean: d.mean,
            ci95: pair(d.ci95),
            p_value: d.p_value,
            differs: d.differs,
        }
    }
}
