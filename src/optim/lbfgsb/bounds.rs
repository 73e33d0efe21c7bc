//! The box `lower ≤ x ≤ upper`: validation, the kind of bound of each variable, and the two
//! pieces of box geometry the solver needs (the projected gradient and the longest step that
//! stays inside).

use super::error::LbfgsbError;

/// Step cap when nothing in the box limits the step.
pub(super) const BIG_STEP: f64 = 1e10;

/// Which bounds of one variable are finite (the reference code's `nbd`, whose values
/// 0, 1, 2, 3 are the variants in this order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BoundKind {
    /// No finite bound: the variable is always free.
    Unbounded,
    /// Only `lower` is finite.
    LowerOnly,
    /// Both bounds are finite.
    Both,
    /// Only `upper` is finite.
    UpperOnly,
}

impl BoundKind {
    fn of(lower: f64, upper: f64) -> Self {
        match (lower.is_finite(), upper.is_finite()) {
            (false, false) => BoundKind::Unbounded,
            (true, false) => BoundKind::LowerOnly,
            (true, true) => BoundKind::Both,
            (false, true) => BoundKind::UpperOnly,
        }
    }

    #[inline]
    pub(super) fn has_lower(self) -> bool {
        matches!(self, BoundKind::LowerOnly | BoundKind::Both)
    }

    #[inline]
    pub(super) fn has_upper(self) -> bool {
        matches!(self, BoundKind::Both | BoundKind::UpperOnly)
    }
}

// Where a variable stands with respect to its bounds at the current Cauchy point (the
// reference code's `iwhere`). Plain integers rather than an enum because the hot loops rely
// on their order: `≤ 0` is free and `> 0` active, and the boxed classifier builds a status as
// a branch-free weighted sum of comparisons.
/// Status of one variable (one of the constants below).
pub(super) type Status = i8;
/// No bounds at all: always free.
pub(super) const UNBOUNDED: Status = -1;
/// Bounded and free at the current Cauchy point.
pub(super) const FREE: Status = 0;
/// Held at its lower bound.
pub(super) const AT_LOWER: Status = 1;
/// Held at its upper bound.
pub(super) const AT_UPPER: Status = 2;
/// `lower == upper`: never moves.
pub(super) const FIXED: Status = 3;
/// Bounded, strictly inside, zero gradient: free but no motion along the Cauchy path.
pub(super) const FREE_ZERO_GRADIENT: Status = -3;

/// A validated box, with the kind of bound of every variable.
#[derive(Debug, Clone)]
pub(super) struct Bounds {
    lower: Vec<f64>,
    upper: Vec<f64>,
    kind: Vec<BoundKind>,
    /// At least one finite bound somewhere.
    constrained: bool,
    /// Every variable has both bounds finite (lets hot loops skip the per-variable kind).
    boxed: bool,
}

impl Bounds {
    /// Checks the box; see [`LBfgsB::new`](super::LBfgsB::new) for what is rejected.
    pub(super) fn new(lower: Vec<f64>, upper: Vec<f64>) -> Result<Self, LbfgsbError> {
        if lower.len() != upper.len() {
            return Err(LbfgsbError::InvalidBounds(format!(
                "lower has {} entries but upper has {}",
                lower.len(),
                upper.len()
            )));
        }
        let mut kind = Vec::with_capacity(lower.len());
        for (i, (&l, &u)) in lower.iter().zip(upper.iter()).enumerate() {
            if l.is_nan() || u.is_nan() {
                return Err(LbfgsbError::InvalidBounds(format!(
                    "bound of variable {i} is NaN (lower {l}, upper {u})"
                )));
            }
            if l == f64::INFINITY {
                return Err(LbfgsbError::InvalidBounds(format!(
                    "lower bound of variable {i} is +inf"
                )));
            }
            if u == f64::NEG_INFINITY {
                return Err(LbfgsbError::InvalidBounds(format!(
                    "upper bound of variable {i} is -inf"
                )));
            }
            if l > u {
                return Err(LbfgsbError::InvalidBounds(format!(
                    "variable {i}: lower bound {l} is above upper bound {u}"
                )));
            }
            kind.push(BoundKind::of(l, u));
        }
        let constrained = kind.iter().any(|&k| k != BoundKind::Unbounded);
        let boxed = kind.iter().all(|&k| k == BoundKind::Both);
        Ok(Bounds {
            lower,
            upper,
            kind,
            constrained,
            boxed,
        })
    }

    /// Number of variables.
    pub(super) fn len(&self) -> usize {
        self.lower.len()
    }

    pub(super) fn lower(&self) -> &[f64] {
        &self.lower
    }

    pub(super) fn upper(&self) -> &[f64] {
        &self.upper
    }

    #[inline]
    pub(super) fn kind(&self, i: usize) -> BoundKind {
        self.kind[i]
    }

    /// At least one variable has a finite bound.
    pub(super) fn is_constrained(&self) -> bool {
        self.constrained
    }

    /// Every variable has two finite bounds.
    pub(super) fn is_boxed(&self) -> bool {
        self.boxed
    }

    /// The same box with the fast paths for two finite bounds everywhere turned off, so that
    /// tests can compare them with the general code.
    #[cfg(test)]
    pub(super) fn without_box_fast_path(mut self) -> Self {
        self.boxed = false;
        self
    }

    /// Status of variable `i` before any Cauchy point is known.
    pub(super) fn initial_status(&self, i: usize) -> Status {
        match self.kind[i] {
            BoundKind::Unbounded => UNBOUNDED,
            BoundKind::Both if self.upper[i] - self.lower[i] <= 0.0 => FIXED,
            _ => FREE,
        }
    }

    /// Moves every component of `x` into the box (rounding in `x + t·d` can leave it).
    pub(super) fn clamp(&self, x: &mut [f64]) {
        for ((t, &l), &u) in x.iter_mut().zip(&self.lower).zip(&self.upper) {
            *t = t.max(l).min(u);
        }
    }

    /// Infinity norm of the projected gradient `P(x − g) − x` (the reference's `sbgnrm`).
    pub(super) fn projected_gradient_norm(&self, x: &[f64], g: &[f64]) -> f64 {
        // A missing bound is infinite, and then the clamp below is the identity (x and g are
        // finite), so no branch on the kind of bound is needed.
        let n = x.len();
        let (g, lower, upper) = (&g[..n], &self.lower[..n], &self.upper[..n]);
        let proj = |i: usize| {
            let gi = g[i];
            let (xu, xl) = (x[i] - upper[i], x[i] - lower[i]);
            // max(gᵢ, xᵢ − uᵢ) if gᵢ < 0, else min(gᵢ, xᵢ − lᵢ); both computed and one kept by
            // masking, because the sign of gᵢ is as good as random and a branch on it would be
            // mispredicted about every other variable.
            let up = if xu > gi { xu } else { gi };
            let down = if xl < gi { xl } else { gi };
            let neg = ((gi < 0.0) as u64).wrapping_neg();
            f64::from_bits((up.to_bits() & neg) | (down.to_bits() & !neg)).abs()
        };
        // The maximum of finite values does not depend on the order they are visited in, so
        // four independent running maxima give exactly the same result with a shorter chain.
        let vmax = |a: f64, b: f64| if b > a { b } else { a };
        let mut acc = [0.0f64; 4];
        let chunks = n / 4;
        for c in 0..chunks {
            for (l, a) in acc.iter_mut().enumerate() {
                *a = vmax(*a, proj(4 * c + l));
            }
        }
        let mut norm = vmax(vmax(acc[0], acc[1]), vmax(acc[2], acc[3]));
        for i in 4 * chunks..n {
            norm = vmax(norm, proj(i));
        }
        norm
    }

    /// Largest `t ≤ BIG_STEP` with `x + t·d` inside the box (the reference's `stpmx` before
    /// its first-iteration cap).
    pub(super) fn max_step(&self, x: &[f64], d: &[f64]) -> f64 {
        if self.boxed {
            return max_step_boxed(x, d, &self.lower, &self.upper);
        }
        let mut stpmx = BIG_STEP;
        for (i, (&di, &xi)) in d.iter().zip(x).enumerate() {
            let kind = self.kind[i];
            if kind == BoundKind::Unbounded {
                continue;
            }
            if di < 0.0 && kind.has_lower() {
                let room = self.lower[i] - xi;
                if room >= 0.0 {
                    stpmx = 0.0;
                } else if di * stpmx < room {
                    stpmx = room / di;
                }
            } else if di > 0.0 && kind.has_upper() {
                let room = self.upper[i] - xi;
                if room <= 0.0 {
                    stpmx = 0.0;
                } else if di * stpmx > room {
                    stpmx = room / di;
                }
            }
        }
        stpmx
    }
}

/// Largest `t ≤ BIG_STEP` with `x + t·d` inside a box where every bound is finite.
///
/// Each variable's limit is computed without branching on the sign of `dᵢ` (which follows
/// no pattern), and four running minima keep the reduction short.
fn max_step_boxed(x: &[f64], d: &[f64], lower: &[f64], upper: &[f64]) -> f64 {
    #[cfg(target_arch = "x86_64")]
    {
        if super::simd::avx2() {
            // SAFETY: the CPU supports AVX2 (checked just above); lengths are checked inside.
            return unsafe { max_step_boxed_avx2(x, d, lower, upper) };
        }
    }
    max_step_boxed_generic(x, d, lower, upper)
}

/// [`max_step_boxed`] four variables at a time (the same value: the minimum of the same
/// correctly rounded quotients).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn max_step_boxed_avx2(x: &[f64], d: &[f64], lower: &[f64], upper: &[f64]) -> f64 {
    // SAFETY: the caller guarantees the target feature this function enables (its
    // documented contract, checked at the call site with `simd::avx2()`); every
    // pointer access is within the slices whose lengths are asserted at the top.
    unsafe {
        use std::arch::x86_64::*;
        let n = x.len();
        assert!(d.len() >= n && lower.len() >= n && upper.len() >= n);
        let zero = _mm256_setzero_pd();
        let inf = _mm256_set1_pd(f64::INFINITY);
        let mut acc = _mm256_set1_pd(BIG_STEP);
        let mut i = 0;
        while i + 4 <= n {
            let xv = _mm256_loadu_pd(x.as_ptr().add(i));
            let dv = _mm256_loadu_pd(d.as_ptr().add(i));
            let neg = _mm256_cmp_pd::<_CMP_LT_OQ>(dv, zero);
            let pos = _mm256_cmp_pd::<_CMP_GT_OQ>(dv, zero);
            let room = _mm256_blendv_pd(
                _mm256_sub_pd(_mm256_loadu_pd(upper.as_ptr().add(i)), xv),
                _mm256_sub_pd(_mm256_loadu_pd(lower.as_ptr().add(i)), xv),
                neg,
            );
            let blocked = _mm256_or_pd(
                _mm256_and_pd(neg, _mm256_cmp_pd::<_CMP_GE_OQ>(room, zero)),
                _mm256_and_pd(pos, _mm256_cmp_pd::<_CMP_LE_OQ>(room, zero)),
            );
            let t = _mm256_andnot_pd(blocked, _mm256_div_pd(room, dv));
            let t = _mm256_blendv_pd(inf, t, _mm256_or_pd(neg, pos));
            acc = _mm256_min_pd(t, acc);
            i += 4;
        }
        let mut lanes = [0.0f64; 4];
        _mm256_storeu_pd(lanes.as_mut_ptr(), acc);
        let mut t = lanes
            .iter()
            .fold(f64::INFINITY, |a, &b| if b < a { b } else { a });
        if i < n {
            t = t.min(max_step_boxed_generic(
                &x[i..],
                &d[i..],
                &lower[i..],
                &upper[i..],
            ));
        }
        t
    }
}

fn max_step_boxed_generic(x: &[f64], d: &[f64], lower: &[f64], upper: &[f64]) -> f64 {
    let n = x.len();
    let (d, lower, upper) = (&d[..n], &lower[..n], &upper[..n]);
    let limit = |i: usize| {
        let di = d[i];
        // Room left towards the bound d points at (0 or less: none).
        let room = if di < 0.0 {
            lower[i] - x[i]
        } else {
            upper[i] - x[i]
        };
        let t = room / di;
        let blocked = ((di < 0.0) & (room >= 0.0)) | ((di > 0.0) & (room <= 0.0));
        let t = if blocked { 0.0 } else { t };
        if di == 0.0 {
            f64::INFINITY
        } else {
            t
        }
    };
    let vmin = |a: f64, b: f64| if b < a { b } else { a };
    let mut acc = [BIG_STEP; 4];
    let chunks = n / 4;
    for c in 0..chunks {
        for (l, a) in acc.iter_mut().enumerate() {
            *a = vmin(*a, limit(4 * c + l));
        }
    }
    let mut t = vmin(vmin(acc[0], acc[1]), vmin(acc[2], acc[3]));
    for i in 4 * chunks..n {
        t = vmin(t, limit(i));
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The AVX2 step limit equals the portable one, including blocked and zero directions.
    #[test]
    fn boxed_step_limit_matches_the_portable_loop() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for case in 0..300 {
            let n = rng.gen_range(1..40);
            let lower = vec![0.0; n];
            let upper = vec![1.0; n];
            let x: Vec<f64> = (0..n).map(|_| rng.gen_range(0..5) as f64 / 4.0).collect();
            let d: Vec<f64> = (0..n)
                .map(|_| rng.gen_range(-3i32..4) as f64 * 0.3)
                .collect();
            let want = max_step_boxed_generic(&x, &d, &lower, &upper);
            let got = max_step_boxed(&x, &d, &lower, &upper);
            assert_eq!(got.to_bits(), want.to_bits(), "case {case}");
        }
    }
}
