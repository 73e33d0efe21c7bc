//! The compact limited-memory BFGS matrix of L-BFGS-B and the two steps that use it: the
//! generalized Cauchy point and the subspace minimisation.
//!
//! The Hessian approximation is `B = θI − W M Wᵀ` with `W = [Y, θS]` (`n × 2·col`) and the
//! `2·col × 2·col` middle matrix `M = [[−D, Lᵀ], [L, θSᵀS]]⁻¹`, where `D = diag(sᵢᵀyᵢ)` and `L`
//! is the strictly lower triangle of `SᵀY` (Byrd, Nocedal & Schnabel 1994). Only `SᵀY`, `SᵀS`
//! and a Cholesky factor of `θSᵀS + L D⁻¹ Lᵀ` are kept; products with `M` go through them.
//!
//! Storage: the `n × 2m` pairs are interleaved per variable (`[y₀ … y_{m−1}, s₀ … s_{m−1}]` for
//! each coordinate), because every hot loop walks coordinates (often through an index set) and
//! touches all pairs of that coordinate. Pairs live in a ring of `m` slots; chronological pair
//! `j` is in slot `(head + j) % m`. While `col < m`, `head` is 0, so the used slots are always
//! `0..col` and the inner loops can run over contiguous slots, permuting only the short
//! `2·col` coefficient vectors.

use super::bounds::{
    BoundKind, Bounds, Status, AT_LOWER, AT_UPPER, FIXED, FREE, FREE_ZERO_GRADIENT, UNBOUNDED,
};
use super::dense::{cholesky_upper, dot, solve_upper, solve_upper_transposed, Singular};
use super::rows;

/// How often `form_k` had to recompute its inner products in full (lets tests prove that
/// path is exercised).
#[cfg(test)]
pub(crate) static REBUILDS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// `M v` for the middle matrix, through the factors of `SᵀY` and `θSᵀS + L D⁻¹ Lᵀ = J Jᵀ`.
///
/// `M⁻¹ = [[D^½, 0], [−L D^−½, J]] · [[−D^½, D^−½ Lᵀ], [0, Jᵀ]]`, so two block-triangular
/// solves suffice. `dsqrt[i]` is `√(sᵢᵀyᵢ)`, kept by `form_t` because the Cauchy search calls
/// this once per breakpoint.
fn bmv(
    m: usize,
    sy: &[f64],
    dsqrt: &[f64],
    wt: &[f64],
    col: usize,
    v: &[f64],
    p: &mut [f64],
) -> Result<(), Singular> {
    if col == 0 {
        return Ok(());
    }
    p[col] = v[col];
    for i in 1..col {
        let mut sum = 0.0;
        for k in 0..i {
            sum += sy[i + k * m] * v[k] / sy[k + k * m];
        }
        p[col + i] = v[col + i] + sum;
    }
    solve_upper_transposed(wt, m, 0, col, &mut p[col..2 * col])?;
    for i in 0..col {
        p[i] = v[i] / dsqrt[i];
    }
    solve_upper(wt, m, 0, col, &mut p[col..2 * col])?;
    for i in 0..col {
        p[i] = -p[i] / dsqrt[i];
    }
    for i in 0..col {
        let mut sum = 0.0;
        for k in i + 1..col {
            sum += sy[k + i * m] * p[col + k] / sy[i + i * m];
        }
        p[i] += sum;
    }
    Ok(())
}

/// Pops the smallest breakpoint of a binary min-heap into the last position (building the
/// heap first if asked). A heap rather than a full sort because usually only a few of the
/// breakpoints are ever passed before the Cauchy point is found.
fn heap_pop_min(t: &mut [f64], order: &mut [usize], build: bool) {
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

/// Breakpoints after the first that the Cauchy search finds by scanning before it builds the
/// heap.
const MAX_SCANS: usize = 6;

#[cfg(test)]
thread_local! {
    /// Lets tests run the Cauchy search with the heap from the first pop on.
    static FORCE_HEAP: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

#[inline]
fn force_heap() -> bool {
    #[cfg(test)]
    return FORCE_HEAP.with(|f| f.get());
    #[cfg(not(test))]
    false
}

/// Position of the smallest breakpoint above `last` (the previous one taken) if it is unique,
/// i.e. if a heap would necessarily pop it next. With `check_last`, `last` itself must also
/// occur only once (it was taken without a heap).
fn next_breakpoint(t: &[f64], last: f64, check_last: bool) -> Option<usize> {
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
struct BreakScan {
    nbreak: usize,
    lane_min: [f64; 4],
    lane_dd: [f64; 4],
}

impl BreakScan {
    fn new() -> Self {
        BreakScan {
            nbreak: 0,
            lane_min: [f64::INFINITY; 4],
            lane_dd: [0.0; 4],
        }
    }

    /// `f1`, the smallest breakpoint and its position in the list (first of equals).
    fn finish(&self, brk: &[f64]) -> (f64, f64, usize) {
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
struct BoxedOut<'a> {
    iwhere: &'a mut [Status],
    d: &'a mut [f64],
    brk: &'a mut [f64],
    order: &'a mut [usize],
}

/// The first pass of the Cauchy search when every variable has two finite bounds (the
/// attack's `[0,1]` box): each variable's status, its direction `−gᵢ` (or 0), and the
/// breakpoints of the moving ones, in index order. Exactly the general pass's results, without
/// data-dependent branches (a mix of variables at and off their bounds would mispredict at
/// every step), four variables at a time with AVX2 when the CPU has it.
fn classify_boxed(
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
        if std::arch::is_x86_feature_detected!("avx2") {
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
        let status = boxed_status(out.iwhere[i] == FIXED, at_lower, at_upper, zero);
        out.iwhere[i] = status;
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
    // documented contract, checked at the call site with `is_x86_feature_detected!`); every
    // pointer access is within the slices whose lengths are asserted at the top.
    unsafe {
        use std::arch::x86_64::*;
        let n = x.len();
        assert!(g.len() >= n && lower.len() >= n && upper.len() >= n);
        assert!(out.iwhere.len() >= n && out.d.len() >= n && out.brk.len() >= n);
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
                let w = out.iwhere.get_unchecked_mut(i + l);
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

/// Everything the solver keeps between iterations, allocated once per problem size.
#[derive(Debug, Clone)]
pub(crate) struct Workspace {
    pub n: usize,
    pub m: usize,
    /// Interleaved pairs, `2m` values per coordinate (see module docs).
    wyws: Vec<f64>,
    /// `SᵀY` (lower triangle used; `sy[i + j m] = sᵢᵀyⱼ`), chronological order.
    sy: Vec<f64>,
    /// `SᵀS` (upper triangle used).
    ss: Vec<f64>,
    /// Upper Cholesky factor of `θSᵀS + L D⁻¹ Lᵀ`.
    wt: Vec<f64>,
    /// `√(sᵢᵀyᵢ)` per stored pair (chronological), refreshed with `wt`.
    dsqrt: Vec<f64>,
    /// Factorisation of the `2col × 2col` subspace matrix `K` (leading dimension `2m`).
    wn: Vec<f64>,
    /// Inner products over the free/active sets from which `K` is assembled, kept across
    /// iterations so that a change of active set costs only the entering/leaving variables.
    wn1: Vec<f64>,
    pub theta: f64,
    pub col: usize,
    head: usize,
    itail: usize,
    /// Number of updates since the last reset (tells when the ring starts to wrap).
    iupdat: usize,
    /// A pair was added since `wn` was last formed.
    pub updatd: bool,
    /// `wn1` no longer matches the stored pairs and free set and must be recomputed in full.
    pub wn1_rebuild: bool,
    /// `wn1` is current but `K` must be factorised again (its pairs were shifted).
    refactor: bool,
    /// The free/active partition in `index` was kept from the previous run, so the first
    /// iteration must record which variables enter or leave it.
    partition_kept: bool,
    pub iwhere: Vec<Status>,
    /// Free variables in `index[..nfree]`, active ones after.
    index: Vec<usize>,
    pub nfree: usize,
    /// Entering variables in `indx2[..nenter]`, leaving ones in `indx2[ileave..]`.
    indx2: Vec<usize>,
    nenter: usize,
    ileave: usize,
    /// Cauchy point, then the subspace minimiser.
    pub z: Vec<f64>,
    /// Cauchy path direction, later the search direction and finally `s`.
    pub d: Vec<f64>,
    /// `y = g_{k+1} − g_k`.
    pub y: Vec<f64>,
    brk: Vec<f64>,
    order: Vec<usize>,
    /// Reduced gradient / subspace direction over the free variables.
    r: Vec<f64>,
    /// Saved free components of the Cauchy point.
    xp: Vec<f64>,
    p: Vec<f64>,
    c: Vec<f64>,
    wbp: Vec<f64>,
    v: Vec<f64>,
    wv: Vec<f64>,
    /// Slot-ordered scratch.
    sv: Vec<f64>,
    /// `Wᵀ Z r` in slot order, left by `reduced_gradient` for `subspace_min`.
    zw: Vec<f64>,
    /// Small accumulation scratch (`6 m²`).
    acc: Vec<f64>,
}

impl Workspace {
    pub fn new(n: usize, m: usize) -> Self {
        Workspace {
            n,
            m,
            wyws: vec![0.0; n * 2 * m],
            sy: vec![0.0; m * m],
            ss: vec![0.0; m * m],
            wt: vec![0.0; m * m],
            dsqrt: vec![0.0; m],
            wn: vec![0.0; 4 * m * m],
            wn1: vec![0.0; 4 * m * m],
            theta: 1.0,
            col: 0,
            head: 0,
            itail: 0,
            iupdat: 0,
            updatd: false,
            wn1_rebuild: false,
            refactor: false,
            partition_kept: false,
            iwhere: vec![0; n],
            index: (0..n).collect(),
            nfree: n,
            indx2: vec![0; n],
            nenter: 0,
            ileave: n,
            z: vec![0.0; n],
            d: vec![0.0; n],
            y: vec![0.0; n],
            brk: vec![0.0; n],
            order: vec![0; n],
            r: vec![0.0; n],
            xp: vec![0.0; n],
            p: vec![0.0; 2 * m],
            c: vec![0.0; 2 * m],
            wbp: vec![0.0; 2 * m],
            v: vec![0.0; 2 * m],
            wv: vec![0.0; 2 * m],
            sv: vec![0.0; 2 * m],
            zw: vec![0.0; 2 * m],
            acc: vec![0.0; 6 * m * m],
        }
    }

    /// Forgets all curvature pairs (used at start, after a failed line search and when a
    /// factorisation breaks down: a steepest-descent-like restart is always safe).
    pub fn reset_memory(&mut self) {
        self.col = 0;
        self.head = 0;
        self.itail = 0;
        self.theta = 1.0;
        self.iupdat = 0;
        self.updatd = false;
        self.wn1_rebuild = false;
        self.refactor = false;
    }

    /// `K` must be formed again before the next subspace step even if nothing changed.
    pub fn needs_refactor(&self) -> bool {
        self.refactor
    }

    /// Sets up the variable status for a new run; `x` must already be inside the box.
    pub fn start(&mut self, b: &Bounds) {
        self.reset_memory();
        self.reset_status(b);
    }

    /// Like [`start`](Self::start) but keeps the stored pairs as the initial model, and with
    /// them the free/active partition their inner products were accumulated over.
    pub fn restart(&mut self, b: &Bounds) {
        if self.col == 0 {
            self.start(b);
            return;
        }
        // Keep the partition `wn1` was built for: the first iteration then updates `wn1` for
        // the variables that change sides instead of recomputing it over every variable.
        self.partition_kept = true;
        self.refactor = true;
    }

    /// Makes the stored pairs describe the objective plus `δ/2·‖x‖²`: for the same steps `s`
    /// its gradient differences are `y + δ·s` exactly. Pairs that would lose positive
    /// curvature empty the memory. Returns whether any pair is kept.
    pub fn shift_curvature(&mut self, delta: f64) -> bool {
        let (m, m2, col) = (self.m, 2 * self.m, self.col);
        if col == 0 {
            return false;
        }
        if !delta.is_finite() {
            self.reset_memory();
            return false;
        }
        // Bring the inner products up to date for the stored pairs (a pair pushed after the
        // last factorisation is still pending) so the shift can be applied to them exactly.
        if !self.wn1_rebuild {
            if self.updatd {
                self.nenter = 0;
                self.ileave = self.n;
                self.update_wn1();
                self.updatd = false;
            }
            self.shift_wn1(delta);
        }
        self.refactor = true;
        let slots: Vec<usize> = (0..col).map(|j| self.slot(j)).collect();
        let mut yy = vec![0.0; col];
        for row in self.wyws.chunks_exact_mut(m2) {
            for (j, &s) in slots.iter().enumerate() {
                let y = row[s] + delta * row[m + s];
                row[s] = y;
                yy[j] += y * y;
            }
        }
        // sy[i + j m] = sᵢᵀyⱼ (i ≥ j); ss[j + i m] = sⱼᵀsᵢ (j ≤ i).
        for j in 0..col {
            for i in j..col {
                self.sy[i + j * m] += delta * self.ss[j + i * m];
            }
        }
        let positive = (0..col).all(|j| {
            let sty = self.sy[j + j * m];
            sty > f64::EPSILON * yy[j] && sty.is_finite()
        });
        if !positive {
            self.reset_memory();
            return false;
        }
        self.theta = yy[col - 1] / self.sy[(col - 1) + (col - 1) * m];
        if self.form_t().is_err() {
            self.reset_memory();
            return false;
        }
        true
    }

    /// Applies `Y → Y + δS` to the inner products in `wn1` over the current partition, using
    /// `SᵀS`, `SᵀY` (before the shift) and `SᵀAAᵀS` to recover the free parts it does not
    /// store: `SᵀZZᵀS = SᵀS − SᵀAAᵀS` and, below the diagonal, `SᵀZZᵀY = SᵀY − SᵀAAᵀY`.
    fn shift_wn1(&mut self, delta: f64) {
        let (m, m2, col) = (self.m, 2 * self.m, self.col);
        let w1 = |i: usize, j: usize| i + j * m2;
        let ss = |i: usize, j: usize| self.ss[i.min(j) + i.max(j) * m];
        let ss_act = |i: usize, j: usize| self.wn1[w1(m + i.max(j), m + i.min(j))];
        let ss_free = |i: usize, j: usize| ss(i, j) - ss_act(i, j);
        // sᵢᵀZZᵀyⱼ: stored for i ≤ j, recovered below the diagonal.
        let sy_free = |i: usize, j: usize| {
            if i <= j {
                self.wn1[w1(m + i, j)]
            } else {
                self.sy[i + j * m] - self.wn1[w1(m + i, j)]
            }
        };
        // All new values from the old ones first (once per run, so allocating is fine).
        let mut yy = Vec::with_capacity(col * (col + 1) / 2);
        for i in 0..col {
            for j in 0..=i {
                yy.push(
                    self.wn1[w1(i, j)]
                        + delta * (sy_free(i, j) + sy_free(j, i))
                        + delta * delta * ss_free(i, j),
                );
            }
        }
        // SᵀZZᵀY gains δ·SᵀZZᵀS (stored for i ≤ j), SᵀAAᵀY gains δ·SᵀAAᵀS (i > j).
        let mut sy = Vec::with_capacity(col * col);
        for i in 0..col {
            for j in 0..col {
                let add = if i <= j { ss_free(i, j) } else { ss_act(i, j) };
                sy.push(self.wn1[w1(m + i, j)] + delta * add);
            }
        }
        let (mut yy, mut sy) = (yy.into_iter(), sy.into_iter());
        for i in 0..col {
            for j in 0..=i {
                self.wn1[w1(i, j)] = yy.next().expect("one value per entry");
            }
        }
        for i in 0..col {
            for j in 0..col {
                self.wn1[w1(m + i, j)] = sy.next().expect("one value per entry");
            }
        }
    }

    fn reset_status(&mut self, b: &Bounds) {
        for i in 0..self.n {
            self.iwhere[i] = b.initial_status(i);
            self.index[i] = i;
        }
        self.nfree = self.n;
        self.nenter = 0;
        self.ileave = self.n;
        self.partition_kept = false;
    }

    #[inline]
    fn slot(&self, j: usize) -> usize {
        (self.head + j) % self.m
    }

    /// Generalized Cauchy point: the first local minimiser of the quadratic model along the
    /// projected steepest-descent path `P(x − t g)`, found by walking the breakpoints where
    /// variables hit their bounds in increasing `t`. Leaves the point in `z`, `c = Wᵀ(z − x)`
    /// for the subspace step, and the variable status in `iwhere`. Returns the number of
    /// segments explored.
    pub fn cauchy(
        &mut self,
        x: &[f64],
        g: &[f64],
        b: &Bounds,
        sbgnrm: f64,
    ) -> Result<usize, Singular> {
        let n = self.n;
        let m = self.m;
        let col = self.col;
        let theta = self.theta;
        self.c[..2 * col].iter_mut().for_each(|v| *v = 0.0);
        if sbgnrm <= 0.0 {
            self.z.copy_from_slice(x);
            return Ok(0);
        }
        let mut bnded = true;
        let mut n_unbounded_dir = 0usize;
        let mut nbreak = 0usize;
        let mut ibkmin = 0usize;
        let mut bkmin = 0.0;
        let mut f1;
        self.sv.iter_mut().for_each(|v| *v = 0.0);

        if b.is_boxed() {
            // Every variable has two finite bounds (the attack's [0,1] box): the same
            // classification without data-dependent branches, which a mix of variables at and
            // off their bounds would mispredict at every step.
            let mut scan = BreakScan::new();
            let mut out = BoxedOut {
                iwhere: &mut self.iwhere[..n],
                d: &mut self.d[..n],
                brk: &mut self.brk[..n],
                order: &mut self.order[..n],
            };
            classify_boxed(x, g, b.lower(), b.upper(), &mut out, &mut scan);
            nbreak = scan.nbreak;
            (f1, bkmin, ibkmin) = scan.finish(&self.brk[..n]);
        } else {
            // Same lane-wise sum of dᵢ² as the boxed pass (see `BreakScan`).
            let mut lane_dd = [0.0f64; 4];
            for i in 0..n {
                let neggi = -g[i];
                let kind = b.kind(i);
                let (mut tl, mut tu) = (0.0, 0.0);
                let w = self.iwhere[i];
                if w != FIXED && w != UNBOUNDED {
                    if kind.has_lower() {
                        tl = x[i] - b.lower()[i];
                    }
                    if kind.has_upper() {
                        tu = b.upper()[i] - x[i];
                    }
                    let xlower = kind.has_lower() && tl <= 0.0;
                    let xupper = kind.has_upper() && tu <= 0.0;
                    let mut status = FREE;
                    if xlower {
                        if neggi <= 0.0 {
                            status = AT_LOWER;
                        }
                    } else if xupper {
                        if neggi >= 0.0 {
                            status = AT_UPPER;
                        }
                    } else if neggi.abs() <= 0.0 {
                        status = FREE_ZERO_GRADIENT;
                    }
                    self.iwhere[i] = status;
                }
                let w = self.iwhere[i];
                if w != FREE && w != UNBOUNDED {
                    self.d[i] = 0.0;
                } else {
                    self.d[i] = neggi;
                    lane_dd[i % 4] += neggi * neggi;
                    if kind.has_lower() && neggi < 0.0 {
                        self.order[nbreak] = i;
                        self.brk[nbreak] = tl / (-neggi);
                        if nbreak == 0 || self.brk[nbreak] < bkmin {
                            bkmin = self.brk[nbreak];
                            ibkmin = nbreak;
                        }
                        nbreak += 1;
                    } else if kind.has_upper() && neggi > 0.0 {
                        self.order[nbreak] = i;
                        self.brk[nbreak] = tu / neggi;
                        if nbreak == 0 || self.brk[nbreak] < bkmin {
                            bkmin = self.brk[nbreak];
                            ibkmin = nbreak;
                        }
                        nbreak += 1;
                    } else {
                        n_unbounded_dir += 1;
                        if neggi.abs() > 0.0 {
                            bnded = false;
                        }
                    }
                }
            }
            f1 = 0.0 - ((lane_dd[0] + lane_dd[1]) + (lane_dd[2] + lane_dd[3]));
        }
        // p = Wᵀd in chronological order, with the θ of W = [Y, θS].
        if col > 0 {
            rows::accumulate(
                &self.wyws,
                2 * m,
                self.d.iter().copied().enumerate(),
                &mut self.sv,
            );
        }
        for j in 0..col {
            let s = self.slot(j);
            self.p[j] = self.sv[s];
            self.p[col + j] = theta * self.sv[m + s];
        }
        self.z.copy_from_slice(x);
        if nbreak == 0 && n_unbounded_dir == 0 {
            // The path is a single point: x is the Cauchy point.
            return Ok(0);
        }

        // f1, f2: first and second derivative of the model along the current segment.
        let mut f2 = -theta * f1;
        let f2_org = f2;
        if col > 0 {
            bmv(
                m,
                &self.sy,
                &self.dsqrt,
                &self.wt,
                col,
                &self.p,
                &mut self.v,
            )?;
            f2 -= dot(&self.v[..2 * col], &self.p[..2 * col]);
        }
        let mut dtm = -f1 / f2;
        let mut tsum = 0.0;
        let mut nseg = 1;
        let mut all_fixed = false;

        if nbreak > 0 {
            let mut nleft = nbreak;
            let mut iter = 1;
            let mut scanning = !force_heap();
            let mut tj = 0.0;
            loop {
                let tj0 = tj;
                let ibp;
                if iter == 1 {
                    // The smallest breakpoint is already known; often it is the only one
                    // needed, so the heap is built lazily.
                    tj = bkmin;
                    ibp = self.order[ibkmin];
                } else {
                    // The next few breakpoints are found by scanning, which is much cheaper
                    // than building the heap when only a handful are passed. A scan gives the
                    // heap's answer whenever that answer is unique (no tie with another
                    // breakpoint); on a tie, or after `MAX_SCANS` scans, the heap is built and
                    // the pops made so far are replayed so the walk continues exactly as the
                    // reference one.
                    let mut found = None;
                    if scanning && iter - 1 <= MAX_SCANS {
                        found = next_breakpoint(&self.brk[..nbreak], tj, iter == 2);
                    }
                    if let Some(q) = found {
                        tj = self.brk[q];
                        ibp = self.order[q];
                    } else {
                        if scanning {
                            scanning = false;
                            for it in 2..iter {
                                let nl = nbreak - (it - 1);
                                if it == 2 && ibkmin != nbreak - 1 {
                                    self.brk[ibkmin] = self.brk[nbreak - 1];
                                    self.order[ibkmin] = self.order[nbreak - 1];
                                }
                                heap_pop_min(&mut self.brk[..nl], &mut self.order[..nl], it == 2);
                            }
                        }
                        if iter == 2 && ibkmin != nbreak - 1 {
                            self.brk[ibkmin] = self.brk[nbreak - 1];
                            self.order[ibkmin] = self.order[nbreak - 1];
                        }
                        heap_pop_min(&mut self.brk[..nleft], &mut self.order[..nleft], iter == 2);
                        tj = self.brk[nleft - 1];
                        ibp = self.order[nleft - 1];
                    }
                }
                let dt = tj - tj0;
                if dtm < dt {
                    // The minimiser lies inside this segment.
                    break;
                }
                tsum += dt;
                nleft -= 1;
                iter += 1;
                let dibp = self.d[ibp];
                self.d[ibp] = 0.0;
                let zibp;
                if dibp > 0.0 {
                    zibp = b.upper()[ibp] - x[ibp];
                    self.z[ibp] = b.upper()[ibp];
                    self.iwhere[ibp] = AT_UPPER;
                } else {
                    zibp = b.lower()[ibp] - x[ibp];
                    self.z[ibp] = b.lower()[ibp];
                    self.iwhere[ibp] = AT_LOWER;
                }
                if nleft == 0 && nbreak == n {
                    // Every variable reached a bound: that corner is the Cauchy point.
                    dtm = dt;
                    all_fixed = true;
                    break;
                }
                nseg += 1;
                let dibp2 = dibp * dibp;
                f1 = f1 + dt * f2 + dibp2 - theta * dibp * zibp;
                f2 -= theta * dibp2;
                if col > 0 {
                    for i in 0..2 * col {
                        self.c[i] += dt * self.p[i];
                    }
                    let row = &self.wyws[ibp * 2 * m..(ibp + 1) * 2 * m];
                    for j in 0..col {
                        let s = (self.head + j) % m;
                        self.wbp[j] = row[s];
                        self.wbp[col + j] = theta * row[m + s];
                    }
                    bmv(
                        m,
                        &self.sy,
                        &self.dsqrt,
                        &self.wt,
                        col,
                        &self.wbp,
                        &mut self.v,
                    )?;
                    let wmc = dot(&self.c[..2 * col], &self.v[..2 * col]);
                    let wmp = dot(&self.p[..2 * col], &self.v[..2 * col]);
                    let wmw = dot(&self.wbp[..2 * col], &self.v[..2 * col]);
                    for i in 0..2 * col {
                        self.p[i] -= dibp * self.wbp[i];
                    }
                    f1 += dibp * wmc;
                    f2 += 2.0 * dibp * wmp - dibp2 * wmw;
                }
                // Guard against a vanishing or negative curvature from cancellation.
                f2 = f2.max(f64::EPSILON * f2_org);
                if nleft > 0 {
                    dtm = -f1 / f2;
                    continue;
                } else if bnded {
                    dtm = 0.0;
                } else {
                    dtm = -f1 / f2;
                }
                break;
            }
        }

        if !all_fixed {
            if dtm <= 0.0 {
                dtm = 0.0;
            }
            tsum += dtm;
            // Variables whose breakpoints were not reached move along the path.
            for i in 0..n {
                self.z[i] += tsum * self.d[i];
            }
        }
        if col > 0 {
            for i in 0..2 * col {
                self.c[i] += dtm * self.p[i];
            }
        }
        Ok(nseg)
    }

    /// Splits the variables into free and active at the Cauchy point and records which ones
    /// changed status since the last call. Returns whether `K` must be re-formed.
    pub fn free_variables(&mut self, count_changes: bool) -> bool {
        let n = self.n;
        self.nenter = 0;
        self.ileave = n;
        if count_changes || std::mem::take(&mut self.partition_kept) {
            // Appends without branches (whether a variable changed side follows no pattern):
            // every candidate is written, and only the count of those that changed advances.
            // Leaving variables fill `indx2` from the top down, entering ones from the bottom
            // up; a write past the current end is overwritten or left unused.
            let (index, iwhere, indx2) = (&self.index[..n], &self.iwhere[..n], &mut self.indx2);
            let mut ileave = n;
            // While a free variable is left to examine, at least one slot below `ileave` is
            // unused, so `ileave − 1` is always a valid target.
            for &k in &index[..self.nfree] {
                indx2[ileave - 1] = k;
                ileave -= (iwhere[k] > 0) as usize;
            }
            let mut nenter = 0;
            for &k in &index[self.nfree..] {
                let enters = iwhere[k] <= 0;
                if nenter < ileave {
                    indx2[nenter] = k;
                }
                nenter += enters as usize;
            }
            self.ileave = ileave;
            self.nenter = nenter;
        }
        let wrk = self.ileave < n || self.nenter > 0 || self.updatd || self.refactor;
        // Branch-free partition: each variable is written at both candidate positions and
        // only the count on its side advances. A write into the wrong side lands either on
        // the next free slot (overwritten by the next free variable) or, once every free
        // variable has been placed, on a slot the active variables fill afterwards.
        let index = &mut self.index[..n];
        let mut nfree = 0;
        let mut iact = n;
        for (i, &w) in self.iwhere[..n].iter().enumerate() {
            let free = w <= 0;
            index[nfree.min(n - 1)] = i;
            index[(iact - 1).min(n - 1)] = i;
            nfree += free as usize;
            iact -= (!free) as usize;
        }
        self.nfree = nfree;
        wrk
    }

    /// Recomputes all of `wn1` from the current pairs and free set.
    fn rebuild_wn1(&mut self) {
        let m = self.m;
        let m2 = 2 * m;
        let col = self.col;
        for j in 0..m2 {
            for i in 0..m2 {
                self.wn1[i + j * m2] = 0.0;
            }
        }
        let slots: Vec<usize> = (0..col).map(|j| self.slot(j)).collect();
        for (pos, &k) in self.index.iter().enumerate() {
            let free = pos < self.nfree;
            let row = &self.wyws[k * m2..(k + 1) * m2];
            for i in 0..col {
                let (yi, si) = (row[slots[i]], row[m + slots[i]]);
                if free {
                    for j in 0..=i {
                        self.wn1[i + j * m2] += yi * row[slots[j]];
                    }
                    for j in i..col {
                        self.wn1[(m + i) + j * m2] += si * row[slots[j]];
                    }
                } else {
                    for j in 0..=i {
                        self.wn1[(m + i) + (m + j) * m2] += si * row[m + slots[j]];
                    }
                    for j in 0..i {
                        self.wn1[(m + i) + j * m2] += si * row[slots[j]];
                    }
                }
            }
        }
    }

    /// Checks the incrementally updated inner products against a full recomputation.
    #[cfg(test)]
    fn assert_wn1_matches_rebuild(&self) {
        let mut fresh = self.clone();
        fresh.rebuild_wn1();
        let (m, m2, col) = (self.m, 2 * self.m, self.col);
        let mut pairs = vec![];
        for i in 0..col {
            for j in 0..=i {
                pairs.push((i, j));
                pairs.push((m + i, m + j));
            }
            for j in 0..col {
                pairs.push((m + i, j));
            }
        }
        let scale = pairs
            .iter()
            .map(|&(i, j)| fresh.wn1[i + j * m2].abs())
            .fold(1e-300, f64::max);
        for (i, j) in pairs {
            let (a, b) = (self.wn1[i + j * m2], fresh.wn1[i + j * m2]);
            assert!(
                (a - b).abs() <= 1e-10 * scale,
                "wn1({i}, {j}): incremental {a} vs rebuilt {b} (col {col})"
            );
        }
    }

    /// Brings the inner products in `wn1` up to date: in full after `wn1_rebuild`, otherwise
    /// for a newly stored pair and for the variables that entered or left the free set.
    fn update_wn1(&mut self) {
        let m = self.m;
        let m2 = 2 * m;
        let col = self.col;
        let n = self.n;
        let w1 = |i: usize, j: usize| i + j * m2;

        if self.wn1_rebuild {
            #[cfg(test)]
            REBUILDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.rebuild_wn1();
            self.wn1_rebuild = false;
        } else {
            let upcl;
            if self.updatd {
                if self.iupdat > m {
                    // The oldest pair was dropped: shift the stored blocks up-left by one.
                    for jy in 0..m - 1 {
                        let js = m + jy;
                        let len = m - 1 - jy;
                        let src = w1(jy + 1, jy + 1);
                        self.wn1.copy_within(src..src + len, w1(jy, jy));
                        let src = w1(js + 1, js + 1);
                        self.wn1.copy_within(src..src + len, w1(js, js));
                        let src = w1(m + 1, jy + 1);
                        self.wn1.copy_within(src..src + m - 1, w1(m, jy));
                    }
                }
                // New row/column for the newest pair.
                let inew = self.slot(col - 1);
                // Free variables: [t1, tc] = Σ ynew·row; active ones: [t3, t2] = Σ snew·row.
                let (free_acc, rest) = self.acc.split_at_mut(m2);
                let act_acc = &mut rest[..m2];
                free_acc.iter_mut().for_each(|v| *v = 0.0);
                act_acc.iter_mut().for_each(|v| *v = 0.0);
                let wyws = &self.wyws;
                let (free, active) = self.index.split_at(self.nfree);
                let items = free.iter().map(|&k| (k, wyws[k * m2 + inew]));
                rows::accumulate(wyws, m2, items, free_acc);
                let items = active.iter().map(|&k| (k, wyws[k * m2 + m + inew]));
                rows::accumulate(wyws, m2, items, act_acc);
                let (t1, tc) = free_acc.split_at(m);
                let (t3, t2) = act_acc.split_at(m);
                let (iy, is) = (col - 1, m + col - 1);
                for jy in 0..col {
                    let s = (self.head + jy) % m;
                    self.wn1[w1(iy, jy)] = t1[s];
                    self.wn1[w1(is, m + jy)] = t2[s];
                    self.wn1[w1(is, jy)] = t3[s];
                }
                for i in 0..col {
                    let s = (self.head + i) % m;
                    self.wn1[w1(m + i, col - 1)] = tc[s];
                }
                upcl = col - 1;
            } else {
                upcl = col;
            }

            // Older entries: add the variables that became free, remove those that left.
            if upcl > 0 && (self.nenter > 0 || self.ileave < n) {
                let mm = m * m;
                let (eyy, rest) = self.acc.split_at_mut(mm);
                let (ess, rest) = rest.split_at_mut(mm);
                let (esy, rest) = rest.split_at_mut(mm);
                let (lyy, rest) = rest.split_at_mut(mm);
                let (lss, rest) = rest.split_at_mut(mm);
                let lsy = &mut rest[..mm];
                for a in [
                    &mut *eyy, &mut *ess, &mut *esy, &mut *lyy, &mut *lss, &mut *lsy,
                ] {
                    a.iter_mut().for_each(|v| *v = 0.0);
                }
                let slots: [usize; 64] = {
                    let mut s = [0usize; 64];
                    for (j, v) in s.iter_mut().enumerate().take(upcl.min(64)) {
                        *v = (self.head + j) % m;
                    }
                    s
                };
                let slot_of = |j: usize| {
                    if j < 64 {
                        slots[j]
                    } else {
                        (self.head + j) % m
                    }
                };
                let accumulate = |set: &[usize], yy: &mut [f64], ss: &mut [f64], sy: &mut [f64]| {
                    for &k in set {
                        let row = &self.wyws[k * m2..(k + 1) * m2];
                        for i in 0..upcl {
                            let si = slot_of(i);
                            let (yi, s_i) = (row[si], row[m + si]);
                            for j in 0..upcl {
                                let sj = slot_of(j);
                                if j <= i {
                                    yy[i + j * m] += yi * row[sj];
                                    ss[i + j * m] += s_i * row[m + sj];
                                }
                                sy[i + j * m] += s_i * row[sj];
                            }
                        }
                    }
                };
                accumulate(&self.indx2[..self.nenter], eyy, ess, esy);
                accumulate(&self.indx2[self.ileave..n], lyy, lss, lsy);
                for iy in 0..upcl {
                    for jy in 0..=iy {
                        let e = iy + jy * m;
                        self.wn1[w1(iy, jy)] += eyy[e] - lyy[e];
                        self.wn1[w1(m + iy, m + jy)] += -ess[e] + lss[e];
                    }
                }
                for is in 0..upcl {
                    for jy in 0..upcl {
                        let e = is + jy * m;
                        if is <= jy {
                            self.wn1[w1(m + is, jy)] += esy[e] - lsy[e];
                        } else {
                            self.wn1[w1(m + is, jy)] += -esy[e] + lsy[e];
                        }
                    }
                }
            }
        }
    }

    /// Forms and factorises the subspace matrix
    /// `K = [[−D − YᵀZZᵀY/θ, L_aᵀ − R_zᵀ], [L_a − R_z, θSᵀAAᵀS]]` as `K = Uᵀ E U` with
    /// `E = diag(−I, I)`, where `Z`/`A` select the free/active variables, `L_a` is the strict
    /// lower triangle of `SᵀAAᵀY` and `R_z` the upper triangle of `SᵀZZᵀY`.
    pub fn form_k(&mut self) -> Result<(), Singular> {
        self.update_wn1();
        self.refactor = false;
        let m = self.m;
        let m2 = 2 * m;
        let col = self.col;
        let theta = self.theta;
        let w1 = |i: usize, j: usize| i + j * m2;

        #[cfg(test)]
        self.assert_wn1_matches_rebuild();

        // Assemble the upper triangle of [[D + YᵀZZᵀY/θ, −L_aᵀ + R_zᵀ], [·, θSᵀAAᵀS]].
        let wn = &mut self.wn;
        let wn1 = &self.wn1;
        for iy in 0..col {
            let is = col + iy;
            let is1 = m + iy;
            for jy in 0..=iy {
                let js = col + jy;
                let js1 = m + jy;
                wn[jy + iy * m2] = wn1[w1(iy, jy)] / theta;
                wn[js + is * m2] = wn1[w1(is1, js1)] * theta;
            }
            for jy in 0..iy {
                wn[jy + is * m2] = -wn1[w1(is1, jy)];
            }
            for jy in iy..col {
                wn[jy + is * m2] = wn1[w1(is1, jy)];
            }
            wn[iy + iy * m2] += self.sy[iy + iy * m];
        }
        // Block LDLᵀ-style factorisation: Cholesky of the (1,1) block, then the Schur
        // complement of the (2,2) block, which is positive definite for any free set.
        cholesky_upper(wn, m2, 0, col)?;
        {
            let (left, right) = wn.split_at_mut(col * m2);
            for jcol in 0..col {
                let b = &mut right[jcol * m2..jcol * m2 + col];
                solve_upper_transposed(left, m2, 0, col, b)?;
            }
        }
        for is in col..2 * col {
            for js in is..2 * col {
                let mut s = 0.0;
                for k in 0..col {
                    s += wn[k + is * m2] * wn[k + js * m2];
                }
                wn[is + js * m2] += s;
            }
        }
        cholesky_upper(wn, m2, col, col)?;
        Ok(())
    }

    /// Reduced gradient of the model at the Cauchy point over the free variables:
    /// `r = −Zᵀ(B(z − x) + g)`.
    pub fn reduced_gradient(
        &mut self,
        x: &[f64],
        g: &[f64],
        constrained: bool,
    ) -> Result<(), Singular> {
        let m = self.m;
        let col = self.col;
        let nfree = self.nfree;
        if !constrained && col > 0 {
            self.zw.iter_mut().for_each(|v| *v = 0.0);
            for i in 0..nfree {
                self.r[i] = -g[self.index[i]];
            }
            let items = self.index[..nfree]
                .iter()
                .copied()
                .zip(self.r[..nfree].iter().copied());
            rows::accumulate(&self.wyws, 2 * m, items, &mut self.zw);
            return Ok(());
        }
        let theta = self.theta;
        for i in 0..nfree {
            let k = self.index[i];
            self.r[i] = -theta * (self.z[k] - x[k]) - g[k];
        }
        bmv(
            m,
            &self.sy,
            &self.dsqrt,
            &self.wt,
            col,
            &self.c,
            &mut self.v,
        )?;
        self.sv.iter_mut().for_each(|v| *v = 0.0);
        for j in 0..col {
            let s = self.slot(j);
            self.sv[s] = self.v[j];
            self.sv[m + s] = theta * self.v[col + j];
        }
        // Fused with the first pass of the subspace step, which needs Wᵀ Z r.
        self.zw.iter_mut().for_each(|v| *v = 0.0);
        rows::dot_then_accumulate(
            &self.wyws,
            2 * m,
            &self.index[..nfree],
            &self.sv,
            &mut self.r[..nfree],
            &mut self.zw,
        );
        Ok(())
    }

    /// Subspace minimisation by the direct primal method: the Newton step of the model over
    /// the free variables from the Cauchy point, then, following Morales & Nocedal (2011),
    /// projected onto the box; if the projected point is not a descent direction from `x`,
    /// fall back to the longest feasible step along the Newton direction instead.
    pub fn subspace_min(&mut self, b: &Bounds, x: &[f64], g: &[f64]) -> Result<(), Singular> {
        let m = self.m;
        let m2 = 2 * m;
        let col = self.col;
        let nsub = self.nfree;
        let theta = self.theta;
        if nsub == 0 {
            return Ok(());
        }
        // wv = Wᵀ Z r (accumulated by `reduced_gradient`, which must run first)
        for j in 0..col {
            let s = self.slot(j);
            self.wv[j] = self.zw[s];
            self.wv[col + j] = theta * self.zw[m + s];
        }
        // wv = K⁻¹ wv = U⁻¹ E U⁻ᵀ wv
        solve_upper_transposed(&self.wn, m2, 0, 2 * col, &mut self.wv[..2 * col])?;
        for v in &mut self.wv[..col] {
            *v = -*v;
        }
        solve_upper(&self.wn, m2, 0, 2 * col, &mut self.wv[..2 * col])?;
        // r = r/θ + Zᵀ W wv / θ²
        self.sv.iter_mut().for_each(|v| *v = 0.0);
        for j in 0..col {
            let s = self.slot(j);
            self.sv[s] = self.wv[j] / theta;
            self.sv[m + s] = self.wv[col + j];
        }
        let inv_theta = 1.0 / theta;
        rows::dot_update(
            &self.wyws,
            m2,
            &self.index[..nsub],
            &self.sv,
            inv_theta,
            &mut self.r[..nsub],
        );

        // Try the projection of the full Newton step first.
        let mut hit_bound = false;
        for i in 0..nsub {
            let k = self.index[i];
            let dk = self.r[i];
            let xk = self.z[k];
            self.xp[i] = xk;
            let (l, u) = (b.lower()[k], b.upper()[k]);
            self.z[k] = match b.kind(k) {
                BoundKind::Unbounded => xk + dk,
                BoundKind::LowerOnly => {
                    let v = l.max(xk + dk);
                    hit_bound |= v == l;
                    v
                }
                BoundKind::Both => {
                    let v = u.min(l.max(xk + dk));
                    hit_bound |= (v == l) | (v == u);
                    v
                }
                BoundKind::UpperOnly => {
                    let v = u.min(xk + dk);
                    hit_bound |= v == u;
                    v
                }
            };
        }
        if !hit_bound {
            return Ok(());
        }
        // Only the sign matters; four partial sums keep the pass from waiting on one chain.
        let n = self.n;
        let (z, x, g) = (&self.z[..n], &x[..n], &g[..n]);
        let mut acc = [0.0f64; 4];
        for c in 0..n / 4 {
            for (l, a) in acc.iter_mut().enumerate() {
                let i = 4 * c + l;
                *a += (z[i] - x[i]) * g[i];
            }
        }
        let mut dd_p = (acc[0] + acc[1]) + (acc[2] + acc[3]);
        for i in 4 * (n / 4)..n {
            dd_p += (z[i] - x[i]) * g[i];
        }
        if dd_p <= 0.0 {
            return Ok(());
        }

        // Projection is uphill: restore the Cauchy point and truncate the Newton step at the
        // first bound it meets.
        for i in 0..nsub {
            self.z[self.index[i]] = self.xp[i];
        }
        let mut alpha: f64 = 1.0;
        let mut temp1 = alpha;
        let mut ibd = None;
        for i in 0..nsub {
            let k = self.index[i];
            let dk = self.r[i];
            let kind = b.kind(k);
            if kind != BoundKind::Unbounded {
                if dk < 0.0 && kind.has_lower() {
                    let temp2 = b.lower()[k] - self.z[k];
                    if temp2 >= 0.0 {
                        temp1 = 0.0;
                    } else if dk * alpha < temp2 {
                        temp1 = temp2 / dk;
                    }
                } else if dk > 0.0 && kind.has_upper() {
                    let temp2 = b.upper()[k] - self.z[k];
                    if temp2 <= 0.0 {
                        temp1 = 0.0;
                    } else if dk * alpha > temp2 {
                        temp1 = temp2 / dk;
                    }
                }
                if temp1 < alpha {
                    alpha = temp1;
                    ibd = Some(i);
                }
            }
        }
        if alpha < 1.0 {
            if let Some(i) = ibd {
                let k = self.index[i];
                let dk = self.r[i];
                if dk > 0.0 {
                    self.z[k] = b.upper()[k];
                    self.r[i] = 0.0;
                } else if dk < 0.0 {
                    self.z[k] = b.lower()[k];
                    self.r[i] = 0.0;
                }
            }
        }
        for i in 0..nsub {
            let k = self.index[i];
            self.z[k] += alpha * self.r[i];
        }
        Ok(())
    }

    /// Stores the pair `(s, y) = (self.d, self.y)` and updates `SᵀY`, `SᵀS` and θ.
    /// `dtd = dᵀd` before scaling by `stp`; `dr = sᵀy`, `rr = yᵀy`.
    pub fn push_pair(&mut self, rr: f64, dr: f64, stp: f64, dtd: f64) {
        let m = self.m;
        let m2 = 2 * m;
        let n = self.n;
        self.iupdat += 1;
        if self.iupdat <= m {
            self.col = self.iupdat;
            self.itail = (self.head + self.iupdat - 1) % m;
        } else {
            self.itail = (self.itail + 1) % m;
            self.head = (self.head + 1) % m;
        }
        let col = self.col;
        let tail = self.itail;
        self.theta = rr / dr;

        if self.iupdat > m {
            // Drop the oldest pair from the small matrices.
            for j in 0..col - 1 {
                for i in 0..=j {
                    self.ss[i + j * m] = self.ss[(i + 1) + (j + 1) * m];
                }
                for i in j..col - 1 {
                    self.sy[i + j * m] = self.sy[(i + 1) + (j + 1) * m];
                }
            }
        }
        // Store the pair and, in the same pass, the new row of SᵀY and column of SᵀS.
        // acc[..m] collects sᵀy_j, acc[m..2m] collects s_jᵀs, both by slot.
        let acc = &mut self.acc[..m2];
        acc.iter_mut().for_each(|v| *v = 0.0);
        for ((row, &yi), &si) in self
            .wyws
            .chunks_exact_mut(m2)
            .zip(&self.y[..n])
            .zip(&self.d[..n])
        {
            row[tail] = yi;
            row[m + tail] = si;
        }
        rows::accumulate(&self.wyws, m2, self.d[..n].iter().copied().enumerate(), acc);
        let (a, bb) = acc.split_at(m);
        for j in 0..col - 1 {
            let s = (self.head + j) % m;
            self.sy[(col - 1) + j * m] = a[s];
            self.ss[j + (col - 1) * m] = bb[s];
        }
        self.ss[(col - 1) + (col - 1) * m] = if stp == 1.0 { dtd } else { stp * stp * dtd };
        self.sy[(col - 1) + (col - 1) * m] = dr;
        self.updatd = true;
    }

    /// Forms and factorises `T = θSᵀS + L D⁻¹ Lᵀ` (upper triangle, then Cholesky).
    pub fn form_t(&mut self) -> Result<(), Singular> {
        let m = self.m;
        let col = self.col;
        let theta = self.theta;
        for j in 0..col {
            self.wt[j * m] = theta * self.ss[j * m];
            self.dsqrt[j] = self.sy[j + j * m].sqrt();
        }
        for i in 1..col {
            for j in i..col {
                let mut ddum = 0.0;
                for k in 0..i {
                    ddum += self.sy[i + k * m] * self.sy[j + k * m] / self.sy[k + k * m];
                }
                self.wt[i + j * m] = ddum + theta * self.ss[i + j * m];
            }
        }
        cholesky_upper(&mut self.wt, m, 0, col)
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

    /// Scanning for the next breakpoints (with its fallback to the heap on ties) must walk
    /// the path exactly as the heap does, ties included; the branch-free first pass for boxes
    /// must classify exactly as the general one.
    #[test]
    fn breakpoint_scan_matches_the_heap() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let mut fallbacks = 0;
        for case in 0..400 {
            let n = rng.gen_range(2..60);
            // Some variables fixed (lower == upper), the rest in [0, 1].
            let fixed: Vec<bool> = (0..n).map(|i| i % 7 == 3).collect();
            let lower: Vec<f64> = (0..n).map(|i| if fixed[i] { 0.5 } else { 0.0 }).collect();
            let upper: Vec<f64> = (0..n).map(|i| if fixed[i] { 0.5 } else { 1.0 }).collect();
            // Coarse grids make equal breakpoints common.
            let x: Vec<f64> = (0..n)
                .map(|i| {
                    if fixed[i] {
                        0.5
                    } else {
                        rng.gen_range(0..5) as f64 / 4.0
                    }
                })
                .collect();
            let g: Vec<f64> = (0..n)
                .map(|_| rng.gen_range(-3i32..4) as f64 * if case % 2 == 0 { 1.0 } else { 0.37 })
                .collect();
            let run = |heap: bool, boxed: bool| {
                let b = Bounds::new(lower.clone(), upper.clone()).unwrap();
                let b = if boxed { b } else { b.without_box_fast_path() };
                let sbgnrm = b.projected_gradient_norm(&x, &g);
                FORCE_HEAP.with(|f| f.set(heap));
                let mut w = Workspace::new(n, 3);
                w.start(&b);
                w.theta = rng_theta(case);
                let nseg = w.cauchy(&x, &g, &b, sbgnrm).unwrap();
                FORCE_HEAP.with(|f| f.set(false));
                (nseg, w.z.clone(), w.iwhere.clone(), w.d.clone())
            };
            let scanned = run(false, false);
            if scanned.0 > MAX_SCANS {
                fallbacks += 1;
            }
            for other in [run(true, false), run(false, true), run(true, true)] {
                assert_eq!(scanned.0, other.0, "case {case}: segments");
                for i in 0..n {
                    assert_eq!(
                        scanned.1[i].to_bits(),
                        other.1[i].to_bits(),
                        "case {case}: z[{i}]"
                    );
                    assert_eq!(scanned.2[i], other.2[i], "case {case}: iwhere[{i}]");
                    assert_eq!(
                        scanned.3[i].to_bits(),
                        other.3[i].to_bits(),
                        "case {case}: d[{i}]"
                    );
                }
            }
        }
        assert!(fallbacks > 0);
    }

    fn rng_theta(case: usize) -> f64 {
        [1.0, 0.25, 3.0, 0.01][case % 4]
    }

    #[test]
    fn bmv_inverts_the_middle_matrix() {
        // One pair: M⁻¹ = [[-sᵀy, 0], [0, θ sᵀs]].
        let m = 2;
        let (sty, sts, theta): (f64, f64, f64) = (2.0, 3.0, 0.5);
        let mut sy = vec![0.0; 4];
        sy[0] = sty;
        let mut wt = vec![0.0; 4];
        wt[0] = (theta * sts).sqrt();
        let v = [1.0, 1.0];
        let mut p = [0.0; 2];
        bmv(m, &sy, &[sty.sqrt()], &wt, 1, &v, &mut p).unwrap();
        assert!((p[0] + 1.0 / sty).abs() < 1e-15);
        assert!((p[1] - 1.0 / (theta * sts)).abs() < 1e-15);
    }

    /// Shifting the stored pairs by `δ` must give exactly the matrices built from the pairs
    /// `(s, y + δs)` directly, including after the ring has wrapped.
    #[test]
    fn shifted_pairs_equal_pairs_of_the_shifted_objective() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let (n, m, delta) = (7, 3, 0.75);
        let mut plain = Workspace::new(n, m);
        let mut direct = Workspace::new(n, m);
        for _ in 0..5 {
            let s: Vec<f64> = (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect();
            // y = A s with A = diag(1..n): positive curvature.
            let y: Vec<f64> = (0..n).map(|i| (i + 1) as f64 * s[i]).collect();
            let y2: Vec<f64> = (0..n).map(|i| y[i] + delta * s[i]).collect();
            for (w, y) in [(&mut plain, &y), (&mut direct, &y2)] {
                w.d.copy_from_slice(&s);
                w.y.copy_from_slice(y);
                let rr = dot(y, y);
                let dr = dot(&s, y);
                w.push_pair(rr, dr, 1.0, dot(&s, &s));
                w.form_t().unwrap();
            }
        }
        assert!(plain.shift_curvature(delta));
        assert_eq!(plain.col, direct.col);
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * a.abs().max(b.abs()).max(1.0);
        assert!(
            close(plain.theta, direct.theta),
            "{} {}",
            plain.theta,
            direct.theta
        );
        for j in 0..m {
            for i in j..m {
                assert!(
                    close(plain.sy[i + j * m], direct.sy[i + j * m]),
                    "sy({i},{j})"
                );
            }
            for i in 0..=j {
                assert!(
                    close(plain.ss[i + j * m], direct.ss[i + j * m]),
                    "ss({i},{j})"
                );
                assert!(
                    close(plain.wt[i + j * m], direct.wt[i + j * m]),
                    "wt({i},{j})"
                );
            }
        }
        for (a, b) in plain.wyws.iter().zip(&direct.wyws) {
            assert!(close(*a, *b));
        }
        // A shift that destroys positive curvature empties the memory.
        assert!(!plain.shift_curvature(-100.0));
        assert_eq!(plain.col, 0);
    }
}
