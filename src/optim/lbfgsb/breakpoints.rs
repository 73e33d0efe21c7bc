//! Finding the breakpoints of the Cauchy path: the first pass that classifies every variable
//! and lists the steps `t` at which moving ones reach a bound, and the two ways of taking
//! those breakpoints in increasing order afterwards (a few scans, then a heap).

use super::bounds::{Status, AT_LOWER, AT_UPPER, FIXED, FREE, FREE_ZERO_GRADIENT};

/// Pops the smallest breakpoint of a binary min-heap into the last position (building the
/// heap first if asked). A heap rather than a full sort because usually only a few of the
/// breakpoints are ever passed before the Cauchy point is found.
pub(super) fn heap_pop_min(t: &mut [f64], order: &mut [usize], build: bool) {
    let n = t.len();
    if build {
        for k in 1..n {
            let v = t[k];
            let idx = order[k];
            let mut i = k;
            while i > 0 {
                let parent = (i - 1) / 2;
                if v < t[parent] {
                    t[i] = t[parent];
                    order[i] = order[parent];
                    i = parent;
                } else {
                    break;
                }
            }
            t[i] = v;
            order[i] = idx;
        }
    }
    if n > 1 {
        let out = t[0];
        let out_idx = order[0];
        let v = t[n - 1];
        let idx = order[n - 1];
        let mut i = 0;
        loop {
            let mut j = 2 * i + 1;
            if j + 1 < n {
                if j + 2 < n && t[j + 1] < t[j] {
                    j += 1;
                }
                if t[j] < v {
                    t[i] = t[j];
                    order[i] = order[j];
                    i = j;
                    continue;
                }
            }
            break;
        }
        t[i] = v;
        order[i] = idx;
        t[n - 1] = out;
        order[n - 1] = out_idx;
    }
}

/// Position of the smallest breakpoint above `last` (the previous one taken) if it is unique,
/// i.e. if a heap would necessarily pop it next. With `check_last`, `last` itself must also
/// occur only once (it was taken without a heap).
pub(super) fn next_breakpoint(t: &[f64], last: f64, check_last: bool) -> Option<usize> {
    // Two branch-free passes (the comparisons follow no pattern a predictor could learn):
    // the smallest value above `last` and how often `last` occurs, then how often that
    // smallest value occurs.
    let mut lo = [f64::INFINITY; 4];
    let mut equal_last = [0usize; 4];
    let mut chunks = t.chunks_exact(4);
    for c in &mut chunks {
        for l in 0..4 {
            let v = c[l];
            let cand = if v > last { v } else { f64::INFINITY };
            lo[l] = if cand < lo[l] { cand } else { lo[l] };
            equal_last[l] += (v == last) as usize;
        }
    }
    let mut best = lo
        .iter()
        .fold(f64::INFINITY, |a, &b| if b < a { b } else { a });
    let mut eq_last: usize = equal_last.iter().sum();
    for &v in chunks.remainder() {
        if v > last && v < best {
            best = v;
        }
        eq_last += (v == last) as usize;
    }
    if best == f64::INFINITY || (check_last && eq_last != 1) {
        return None;
    }
    let count = t.iter().map(|&v| (v == best) as usize).sum::<usize>();
    if count != 1 {
        return None;
    }
    t.iter().position(|&v| v == best)
}

/// Running state of the Cauchy search's first pass: breakpoints found so far, and per lane
/// `i mod 4` the smallest breakpoint and the sum of `dᵢ²`. The slope `f1 = −Σ dᵢ²` is summed in
/// those four lanes (by the general pass too, so both give the same bits) because one serial
/// sum would be the longest chain of the pass.
pub(super) struct BreakScan {
    nbreak: usize,
    lane_min: [f64; 4],
    lane_dd: [f64; 4],
}

impl BreakScan {
    pub(super) fn new() -> Self {
        BreakScan {
            nbreak: 0,
            lane_min: [f64::INFINITY; 4],
            lane_dd: [0.0; 4],
        }
    }

    /// Number of breakpoints found.
    pub(super) fn count(&self) -> usize {
        self.nbreak
    }

    /// `f1`, the smallest breakpoint and its position in the list (first of equals).
    pub(super) fn finish(&self, brk: &[f64]) -> (f64, f64, usize) {
        let d = &self.lane_dd;
        let f1 = 0.0 - ((d[0] + d[1]) + (d[2] + d[3]));
        let m = &self.lane_min;
        let vmin = |a: f64, b: f64| if b < a { b } else { a };
        let bkmin = vmin(vmin(m[0], m[1]), vmin(m[2], m[3]));
        let ibkmin = brk[..self.nbreak]
            .iter()
            .position(|&t| t == bkmin)
            .unwrap_or(0);
        (f1, bkmin, ibkmin)
    }
}

/// Outputs of the first pass, one entry per variable (`brk`/`order` filled up to `nbreak`).
pub(super) struct BoxedOut<'a> {
    status: &'a mut [Status],
    d: &'a mut [f64],
    brk: &'a mut [f64],
    order: &'a mut [usize],
}

impl<'a> BoxedOut<'a> {
    pub(super) fn new(
        status: &'a mut [Status],
        d: &'a mut [f64],
        brk: &'a mut [f64],
        order: &'a mut [usize],
    ) -> Self {
        BoxedOut {
            status,
            d,
            brk,
            order,
        }
    }
}

/// The first pass of the Cauchy search when every variable has two finite bounds (the
/// attack's `[0,1]` box): each variable's status, its direction `−gᵢ` (or 0), and the
/// breakpoints of the moving ones, in index order. Exactly the general pass's results, without
/// data-dependent branches (a mix of variables at and off their bounds would mispredict at
/// every step), four variables at a time with AVX2 when the CPU has it.
pub(super) fn classify_boxed(
    x: &[f64],
    g: &[f64],
    lower: &[f64],
    upper: &[f64],
    out: &mut BoxedOut,
    scan: &mut BreakScan,
) {
    let n = x.len();
    let mut start = 0;
    #[cfg(target_arch = "x86_64")]
    {
        if super::simd::avx2() {
            // SAFETY: the CPU supports AVX2 (checked just above); lengths are checked inside.
            start = unsafe { classify_boxed_avx2(x, g, lower, upper, out, scan) };
        }
    }
    for i in start..n {
        let gi = g[i];
        let tl = x[i] - lower[i];
        let tu = upper[i] - x[i];
        let xlower = tl <= 0.0;
        let xupper = !xlower & (tu <= 0.0);
        let at_lower = xlower & (gi >= 0.0);
        let at_upper = xupper & (gi <= 0.0);
        let zero = !xlower & !xupper & (gi == 0.0);
        let status = boxed_status(out.status[i] == FIXED, at_lower, at_upper, zero);
        out.status[i] = status;
        let moving = status == FREE;
        let di = f64::from_bits((-gi).to_bits() & (moving as u64).wrapping_neg());
        out.d[i] = di;
        let lane = i % 4;
        scan.lane_dd[lane] += di * di;
        let dist = if gi > 0.0 { tl } else { tu };
        let t = dist / gi.abs();
        // Written unconditionally and kept only if the variable moves.
        out.brk[scan.nbreak] = t;
        out.order[scan.nbreak] = i;
        let m = &mut scan.lane_min[lane];
        *m = if moving & (t < *m) { t } else { *m };
        scan.nbreak += moving as usize;
    }
}

/// Status from the mutually exclusive cases, as their weighted sum (no branches).
#[inline(always)]
fn boxed_status(fixed: bool, at_lower: bool, at_upper: bool, zero: bool) -> Status {
    let free_status = at_lower as Status * AT_LOWER
        + at_upper as Status * AT_UPPER
        + zero as Status * FREE_ZERO_GRADIENT;
    free_status + fixed as Status * (FIXED - free_status)
}

/// For each 4-bit mask, the 32-bit lane indices that move the selected 64-bit lanes to the
/// front, in order (a compress for `_mm256_permutevar8x32`).
#[cfg(target_arch = "x86_64")]
const COMPRESS: [[i32; 8]; 16] = {
    let mut table = [[0i32; 8]; 16];
    let mut mask = 0;
    while mask < 16 {
        let mut k = 0;
        let mut lane: usize = 0;
        while lane < 4 {
            if mask & (1 << lane) != 0 {
                table[mask][2 * k] = (2 * lane) as i32;
                table[mask][2 * k + 1] = (2 * lane + 1) as i32;
                k += 1;
            }
            lane += 1;
        }
        mask += 1;
    }
    table
};

/// AVX2 body of [`classify_boxed`] over whole groups of four; returns where it stopped.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn classify_boxed_avx2(
    x: &[f64],
    g: &[f64],
    lower: &[f64],
    upper: &[f64],
    out: &mut BoxedOut,
    scan: &mut BreakScan,
) -> usize {
    // SAFETY: the caller guarantees the target feature this function enables (its
    // documented contract, checked at the call site with `simd::avx2()`); every
    // pointer access is within the slices whose lengths are asserted at the top.
    unsafe {
        use std::arch::x86_64::*;
        let n = x.len();
        assert!(g.len() >= n && lower.len() >= n && upper.len() >= n);
        assert!(out.status.len() >= n && out.d.len() >= n && out.brk.len() >= n);
        assert!(out.order.len() >= n && scan.nbreak == 0);
        let zero = _mm256_setzero_pd();
        let sign = _mm256_set1_pd(-0.0);
        let inf = _mm256_set1_pd(f64::INFINITY);
        let lanes = _mm256_set_epi64x(8, 4, 2, 1);
        let mut dd = _mm256_loadu_pd(scan.lane_dd.as_ptr());
        let mut tmin = _mm256_loadu_pd(scan.lane_min.as_ptr());
        let mut nbreak = 0usize;
        let mut i = 0;
        while i + 4 <= n {
            let xv = _mm256_loadu_pd(x.as_ptr().add(i));
            let gv = _mm256_loadu_pd(g.as_ptr().add(i));
            let tl = _mm256_sub_pd(xv, _mm256_loadu_pd(lower.as_ptr().add(i)));
            let tu = _mm256_sub_pd(_mm256_loadu_pd(upper.as_ptr().add(i)), xv);
            let xlower = _mm256_cmp_pd::<_CMP_LE_OQ>(tl, zero);
            let xupper = _mm256_andnot_pd(xlower, _mm256_cmp_pd::<_CMP_LE_OQ>(tu, zero));
            let at_lower = _mm256_and_pd(xlower, _mm256_cmp_pd::<_CMP_GE_OQ>(gv, zero));
            let at_upper = _mm256_and_pd(xupper, _mm256_cmp_pd::<_CMP_LE_OQ>(gv, zero));
            let zero_g = _mm256_andnot_pd(
                _mm256_or_pd(xlower, xupper),
                _mm256_cmp_pd::<_CMP_EQ_OQ>(gv, zero),
            );
            let (ml, mu, mz) = (
                _mm256_movemask_pd(at_lower),
                _mm256_movemask_pd(at_upper),
                _mm256_movemask_pd(zero_g),
            );
            let mut moving_bits = 0usize;
            for l in 0..4 {
                let w = out.status.get_unchecked_mut(i + l);
                let st = boxed_status(
                    *w == FIXED,
                    (ml >> l) & 1 != 0,
                    (mu >> l) & 1 != 0,
                    (mz >> l) & 1 != 0,
                );
                *w = st;
                moving_bits |= ((st == FREE) as usize) << l;
            }
            let moving = _mm256_castsi256_pd(_mm256_cmpeq_epi64(
                _mm256_and_si256(_mm256_set1_epi64x(moving_bits as i64), lanes),
                lanes,
            ));
            // −gᵢ on moving lanes, +0 elsewhere.
            let dv = _mm256_and_pd(moving, _mm256_xor_pd(gv, sign));
            _mm256_storeu_pd(out.d.as_mut_ptr().add(i), dv);
            dd = _mm256_add_pd(dd, _mm256_mul_pd(dv, dv));
            let dist = _mm256_blendv_pd(tu, tl, _mm256_cmp_pd::<_CMP_GT_OQ>(gv, zero));
            let tv = _mm256_div_pd(dist, _mm256_andnot_pd(sign, gv));
            let tm = _mm256_blendv_pd(inf, tv, moving);
            // Same selection as `if t < min { t }`, lane by lane.
            tmin = _mm256_blendv_pd(tmin, tm, _mm256_cmp_pd::<_CMP_LT_OQ>(tm, tmin));
            // Append the moving lanes' breakpoints and indices.
            let idx = _mm256_loadu_si256(COMPRESS[moving_bits].as_ptr() as *const __m256i);
            let packed_t = _mm256_permutevar8x32_ps(_mm256_castpd_ps(tv), idx);
            _mm256_storeu_ps(out.brk.as_mut_ptr().add(nbreak) as *mut f32, packed_t);
            let ids = _mm256_set_epi64x(i as i64 + 3, i as i64 + 2, i as i64 + 1, i as i64);
            let packed_i = _mm256_permutevar8x32_epi32(ids, idx);
            _mm256_storeu_si256(out.order.as_mut_ptr().add(nbreak) as *mut __m256i, packed_i);
            nbreak += moving_bits.count_ones() as usize;
            i += 4;
        }
        _mm256_storeu_pd(scan.lane_dd.as_mut_ptr(), dd);
        _mm256_storeu_pd(scan.lane_min.as_mut_ptr(), tmin);
        scan.nbreak = nbreak;
        i
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heap_pops_in_increasing_order() {
        let mut t = [5.0, 1.0, 4.0, 2.0, 3.0, 0.5, 7.0];
        let mut o: Vec<usize> = (0..t.len()).collect();
        let mut got = vec![];
        let mut n = t.len();
        let mut build = true;
        while n > 0 {
            heap_pop_min(&mut t[..n], &mut o[..n], build);
            build = false;
            got.push(t[n - 1]);
            n -= 1;
        }
        assert_eq!(got, vec![0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 7.0]);
    }
}
