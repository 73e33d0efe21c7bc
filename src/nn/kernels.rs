//! Vector kernels for single-example passes (`y += a·x` and `x·y`).
//!
//! The crate is compiled for the baseline x86-64 target, where the compiler may only use SSE2
//! and will not reorder a floating-point sum into vector lanes. These kernels use AVX2 and FMA
//! when the processor has them, detected once at run time, and portable code otherwise (or
//! when the environment variable `BLINDSPOT_PORTABLE` is `1`, read at the same first call).
//!
//! Rounding policy (shared by [`super::gemm`]): the AVX2 paths fuse multiply-adds and sum in
//! eight lanes, so their results differ from the portable code's in the last bits. Training and
//! attacks tolerate that; the tests compare against tolerances, and CI runs the whole suite on
//! both paths. The solver's kernels (`optim::lbfgsb::simd`) take the opposite policy, because
//! L-BFGS-B must give the same iterates as the reference: no fused operations there.

/// `y += a * x` over equal-length slices.
#[inline]
pub(crate) fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx2_fma() {
            // SAFETY: the processor supports AVX2 and FMA (checked above).
            return unsafe { avx::axpy(a, x, y) };
        }
    }
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi += a * xi;
    }
}

/// `Σ x_i y_i` over equal-length slices.
#[inline]
pub(crate) fn dot(x: &[f32], y: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx2_fma() {
            // SAFETY: the processor supports AVX2 and FMA (checked above).
            return unsafe { avx::dot(x, y) };
        }
    }
    let mut acc = [0.0f32; 8];
    let (cx, cy) = (x.chunks_exact(8), y.chunks_exact(8));
    let tail: f32 = cx
        .remainder()
        .iter()
        .zip(cy.remainder())
        .map(|(a, b)| a * b)
        .sum();
    for (a, b) in cx.zip(cy) {
        for k in 0..8 {
            acc[k] += a[k] * b[k];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `out[j] += Σᵢ x[i]·w[i·width + j]`: a row vector times a row-major `len(x) × width`
/// matrix, skipping zero entries of `x` (most MNIST pixels).
///
/// The AVX2 version keeps a block of up to 64 outputs in registers while it walks the rows,
/// instead of reading and writing the whole output once per row as repeated `axpy` would.
#[inline]
pub(crate) fn vecmat_acc(x: &[f32], w: &[f32], width: usize, out: &mut [f32]) {
    debug_assert!(w.len() >= x.len() * width && out.len() >= width);
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx2_fma() && width >= 8 {
            // SAFETY: the processor supports AVX2 and FMA (checked above); the slice lengths
            // are checked inside.
            return unsafe { avx::vecmat_acc(x, w, width, out) };
        }
    }
    for (&xi, wi) in x.iter().zip(w.chunks_exact(width)) {
        if xi != 0.0 {
            axpy(xi, wi, &mut out[..width]);
        }
    }
}

/// `out[i] = Σⱼ w[i·width + j]·v[j]` for every row `i` of the row-major `out.len() × width`
/// matrix `w`: the matrix times a column vector.
///
/// The AVX2 version computes four rows at a time, so each block of `v` is loaded once per four
/// rows and the four horizontal sums share one reduction.
#[inline]
pub(crate) fn matvec(w: &[f32], width: usize, v: &[f32], out: &mut [f32]) {
    debug_assert!(w.len() >= out.len() * width && v.len() >= width);
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx2_fma() && width >= 8 {
            // SAFETY: as above.
            return unsafe { avx::matvec(w, width, v, out) };
        }
    }
    for (o, wi) in out.iter_mut().zip(w.chunks_exact(width)) {
        *o = dot(wi, &v[..width]);
    }
}

/// [`matvec`] for the rows `i` of `w` where `x[i]` is not zero, each output exactly as
/// [`matvec`] computes it; the other outputs are set to zero.
///
/// For a layer whose input gradient matters only where its input is nonzero (behind a ReLU):
/// the rows skipped are weight rows not read at all.
#[inline]
pub(crate) fn matvec_where_nonzero(w: &[f32], width: usize, v: &[f32], x: &[f32], out: &mut [f32]) {
    debug_assert!(w.len() >= out.len() * width && v.len() >= width && x.len() >= out.len());
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx2_fma() && width >= 8 {
            // SAFETY: the processor supports AVX2 and FMA (checked above); the slice lengths
            // are checked inside.
            return unsafe { avx::matvec_where_nonzero(w, width, v, x, out) };
        }
    }
    for ((o, wi), &xi) in out.iter_mut().zip(w.chunks_exact(width)).zip(x) {
        *o = if xi != 0.0 { dot(wi, &v[..width]) } else { 0.0 };
    }
}

/// [`vecmat_acc`] for each row of the row-major `rows × len` block `x` into the matching row
/// of the `rows × width` block `out`: every row gets exactly the bits a one-row call gives it,
/// whatever the other rows, so a lockstep batch of attacks matches the attacks run alone.
///
/// Row by row on purpose: the one-row kernel skips zero inputs (most of an MNIST row), and a
/// kernel sharing weight loads between rows would have to do every row's work at each input
/// some row needs, which costs more than the loads it saves (the forward pass is the small
/// half of an evaluation; [`matvec_rows`] is where sharing pays).
pub(crate) fn vecmat_acc_rows(x: &[f32], len: usize, w: &[f32], width: usize, out: &mut [f32]) {
    if len == 0 || width == 0 {
        return;
    }
    for (xr, or) in x.chunks_exact(len).zip(out.chunks_exact_mut(width)) {
        vecmat_acc(xr, w, width, or);
    }
}

/// [`matvec`] for each row of the row-major `rows × width` block `v` into the matching row of
/// the `rows × len` block `out` (`len` rows of `w`): every output bit-identical to a one-row
/// call's.
///
/// The AVX2 version keeps the one-row kernel's arithmetic for each output (one eight-lane
/// accumulator over the columns in order, the same masked tail and horizontal sum) but walks
/// each block of four weight rows once for two rows of `v`, and all of `v` while that block
/// is in L1, so the weights stream from L2 once per batch instead of once per row.
pub(crate) fn matvec_rows(w: &[f32], width: usize, v: &[f32], len: usize, out: &mut [f32]) {
    if len == 0 || width == 0 {
        return;
    }
    let rows = (v.len() / width).min(out.len() / len);
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx2_fma() && width >= 8 {
            // SAFETY: the processor supports AVX2 and FMA (checked above); the slice lengths
            // are checked inside.
            return unsafe { avx::matvec_rows(w, width, &v[..rows * width], len, out) };
        }
    }
    for (vr, or) in v.chunks_exact(width).zip(out.chunks_exact_mut(len)) {
        matvec(w, width, vr, or);
    }
}

/// The logistic function in place, for the single-example passes.
///
/// The AVX2 version evaluates `e^−z` with a degree-5 polynomial after range reduction (within
/// about 2 ulp of `expf`) eight values at a time; libm's scalar `expf` would otherwise be a
/// tenth of an attack's model evaluation.
pub(crate) fn sigmoid_inplace(z: &mut [f32]) {
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx2_fma() {
            // SAFETY: the processor supports AVX2 and FMA (checked above).
            done = unsafe { avx::sigmoid8(z) };
        }
    }
    for v in &mut z[done..] {
        *v = crate::nn::activation::sigmoid(*v);
    }
}

/// Max-pooling's step over channels: wherever `v[i] > y[i]`, `y[i] = v[i]` and
/// `arg[i] = base + i` (strictly greater, so the first maximum seen wins).
#[inline]
pub(crate) fn max_select(v: &[f32], base: u32, y: &mut [f32], arg: &mut [u32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx2_fma() {
            // SAFETY: the processor supports AVX2 (checked above); lengths are checked inside.
            return unsafe { avx::max_select(v, base, y, arg) };
        }
    }
    for (((yi, ai), &vi), i) in y.iter_mut().zip(arg.iter_mut()).zip(v).zip(base..) {
        if vi > *yi {
            *yi = vi;
            *ai = i;
        }
    }
}

/// Max-pooling of one channels-last example `xe` of `(h, w, c)` over `q × q` windows with
/// stride `q` into `y` (`(h/q)·(w/q)·c` values), with each maximum's index in `xe` in `arg`:
/// the first of the window's values in `(row, column)` order that no later one exceeds
/// (strictly), NaN never taken, as [`max_select`] from the window's first value.
///
/// The AVX2 version keeps a window's eight channels in registers across its `q²` values; a
/// call of [`max_select`] per window value was a tenth of the MNIST convnet's evaluation.
pub(crate) fn max_pool(
    xe: &[f32],
    (h, w, c): (usize, usize, usize),
    q: usize,
    y: &mut [f32],
    arg: &mut [u32],
) {
    let (ho, wo) = (h / q, w / q);
    assert!(
        xe.len() >= h * w * c && y.len() >= ho * wo * c && arg.len() >= ho * wo * c,
        "max_pool sizes"
    );
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx2_fma() {
            // SAFETY: the processor supports AVX2 (checked above); lengths checked above, and
            // every access inside is a checked slice.
            return unsafe { avx::max_pool(xe, (h, w, c), q, y, arg) };
        }
    }
    max_pool_portable(xe, (h, w, c), q, y, arg);
}

/// [`max_pool`] without vector instructions.
fn max_pool_portable(
    xe: &[f32],
    (h, w, c): (usize, usize, usize),
    q: usize,
    y: &mut [f32],
    arg: &mut [u32],
) {
    let (ho, wo) = (h / q, w / q);
    for i in 0..ho {
        for j in 0..wo {
            let out = (i * wo + j) * c;
            let first = (i * q * w + j * q) * c;
            y[out..out + c].copy_from_slice(&xe[first..first + c]);
            for (ai, a) in arg[out..out + c].iter_mut().enumerate() {
                *a = (first + ai) as u32;
            }
            let (yo, ao) = (&mut y[out..out + c], &mut arg[out..out + c]);
            for a in 0..q {
                for b in 0..q {
                    let at = ((i * q + a) * w + j * q + b) * c;
                    max_select(&xe[at..at + c], at as u32, yo, ao);
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[inline]
pub(super) fn has_avx2_fma() -> bool {
    use std::sync::atomic::{AtomicU8, Ordering};
    // 0 = unknown, 1 = no, 2 = yes: the feature test is cached after the first call.
    static STATE: AtomicU8 = AtomicU8::new(0);
    match STATE.load(Ordering::Relaxed) {
        2 => true,
        1 => false,
        _ => {
            // BLINDSPOT_PORTABLE=1 forces the portable code on any processor, so that CI
            // tests it on machines that have AVX2.
            let portable = std::env::var_os("BLINDSPOT_PORTABLE").is_some_and(|v| v == "1");
            let yes =
                !portable && is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
            STATE.store(if yes { 2 } else { 1 }, Ordering::Relaxed);
            yes
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx {
    use std::arch::x86_64::*;

    /// Lane mask selecting the first `k < 8` lanes.
    #[inline(always)]
    unsafe fn tail_mask(k: usize) -> __m256i {
        // SAFETY: callers reach this only after checking that the CPU has AVX2 and FMA,
        // with slices whose lengths the function's own bounds checks or documented
        // contract cover; the intrinsics below need nothing else.
        unsafe {
            const IDX: [i32; 8] = [0, 1, 2, 3, 4, 5, 6, 7];
            _mm256_cmpgt_epi32(
                _mm256_set1_epi32(k as i32),
                _mm256_loadu_si256(IDX.as_ptr() as *const __m256i),
            )
        }
    }

    /// Accumulates `B` registers (`8·B` outputs from column `j0`, the last register limited
    /// to the lanes in `last`) over the rows in `nz` (index, coefficient).
    #[inline(always)]
    unsafe fn vecmat_block<const B: usize>(
        nz: &[(usize, f32)],
        w: *const f32,
        width: usize,
        j0: usize,
        last: __m256i,
        out: *mut f32,
    ) {
        // SAFETY: callers reach this only after checking that the CPU has AVX2 and FMA,
        // with slices whose lengths the function's own bounds checks or documented
        // contract cover; the intrinsics below need nothing else.
        unsafe {
            let mut acc = [_mm256_setzero_ps(); B];
            for (b, a) in acc.iter_mut().enumerate().take(B - 1) {
                *a = _mm256_loadu_ps(out.add(j0 + 8 * b));
            }
            acc[B - 1] = _mm256_maskload_ps(out.add(j0 + 8 * (B - 1)), last);
            for &(i, xi) in nz {
                let row = w.add(i * width + j0);
                let vx = _mm256_set1_ps(xi);
                for (b, a) in acc.iter_mut().enumerate().take(B - 1) {
                    *a = _mm256_fmadd_ps(vx, _mm256_loadu_ps(row.add(8 * b)), *a);
                }
                let r = _mm256_maskload_ps(row.add(8 * (B - 1)), last);
                acc[B - 1] = _mm256_fmadd_ps(vx, r, acc[B - 1]);
            }
            for (b, a) in acc.iter().enumerate().take(B - 1) {
                _mm256_storeu_ps(out.add(j0 + 8 * b), *a);
            }
            _mm256_maskstore_ps(out.add(j0 + 8 * (B - 1)), last, acc[B - 1]);
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn vecmat_acc(x: &[f32], w: &[f32], width: usize, out: &mut [f32]) {
        // SAFETY: callers reach this only after checking that the CPU has AVX2 and FMA,
        // with slices whose lengths the function's own bounds checks or documented
        // contract cover; the intrinsics below need nothing else.
        unsafe {
            assert!(w.len() >= x.len() * width && out.len() >= width);
            // The nonzero inputs, gathered once and reused by every column block. Left
            // uninitialised: zeroing 1024 entries would cost as much as gathering them.
            let mut buf = [const { std::mem::MaybeUninit::<(usize, f32)>::uninit() }; 1024];
            let all = _mm256_set1_epi32(-1);
            let mut start = 0;
            while start < x.len() {
                let chunk = &x[start..(start + buf.len()).min(x.len())];
                let mut k = 0;
                for (i, &xi) in chunk.iter().enumerate() {
                    buf[k] = std::mem::MaybeUninit::new((start + i, xi));
                    k += (xi != 0.0) as usize;
                }
                // SAFETY: the first k entries were written just above.
                let nz: &[(usize, f32)] = std::slice::from_raw_parts(buf.as_ptr().cast(), k);
                let (wp, op) = (w.as_ptr(), out.as_mut_ptr());
                // Blocks of 64 columns, then the rest (up to 104) in one pass over the rows, so
                // that a width such as 100 reads each weight row once, in order.
                let mut j = 0;
                while width - j > 104 {
                    vecmat_block::<8>(nz, wp, width, j, all, op);
                    j += 64;
                }
                let rest = width - j;
                let regs = rest.div_ceil(8);
                let last = if rest % 8 == 0 {
                    all
                } else {
                    tail_mask(rest % 8)
                };
                match regs {
                    1 => vecmat_block::<1>(nz, wp, width, j, last, op),
                    2 => vecmat_block::<2>(nz, wp, width, j, last, op),
                    3 => vecmat_block::<3>(nz, wp, width, j, last, op),
                    4 => vecmat_block::<4>(nz, wp, width, j, last, op),
                    5 => vecmat_block::<5>(nz, wp, width, j, last, op),
                    6 => vecmat_block::<6>(nz, wp, width, j, last, op),
                    7 => vecmat_block::<7>(nz, wp, width, j, last, op),
                    8 => vecmat_block::<8>(nz, wp, width, j, last, op),
                    9 => vecmat_block::<9>(nz, wp, width, j, last, op),
                    10 => vecmat_block::<10>(nz, wp, width, j, last, op),
                    11 => vecmat_block::<11>(nz, wp, width, j, last, op),
                    12 => vecmat_block::<12>(nz, wp, width, j, last, op),
                    _ => vecmat_block::<13>(nz, wp, width, j, last, op),
                }
                start += chunk.len();
            }
        }
    }

    /// `e^x` for |x| within the float range (Cephes' `expf` scheme: `x = n ln 2 + r` with
    /// `|r| ≤ ln2/2` and a degree-5 polynomial for `e^r`).
    #[inline(always)]
    unsafe fn exp8(x: __m256) -> __m256 {
        // SAFETY: callers reach this only after checking that the CPU has AVX2 and FMA,
        // with slices whose lengths the function's own bounds checks or documented
        // contract cover; the intrinsics below need nothing else.
        unsafe {
            // Above 88.7 the result overflows to +inf (n = 128 below), which the logistic maps to
            // 0; below −87 it would leave the normal range.
            let x = _mm256_min_ps(
                _mm256_max_ps(x, _mm256_set1_ps(-87.0)),
                _mm256_set1_ps(89.0),
            );
            let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                _mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E)),
            );
            // ln 2 split in two so that n·ln2 is subtracted without rounding error.
            let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), x);
            let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
            let mut p = _mm256_set1_ps(1.987_569_1e-4);
            for c in [
                1.398_2e-3,
                8.333_452e-3,
                4.166_579_6e-2,
                1.666_666_5e-1,
                0.5,
            ] {
                p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
            }
            let r2 = _mm256_mul_ps(r, r);
            let y = _mm256_add_ps(_mm256_fmadd_ps(p, r2, r), _mm256_set1_ps(1.0));
            let e = _mm256_slli_epi32::<23>(_mm256_add_epi32(
                _mm256_cvtps_epi32(n),
                _mm256_set1_epi32(127),
            ));
            _mm256_mul_ps(y, _mm256_castsi256_ps(e))
        }
    }

    /// Logistic function on whole groups of eight; returns how many values it did.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn sigmoid8(z: &mut [f32]) -> usize {
        // SAFETY: callers reach this only after checking that the CPU has AVX2 and FMA,
        // with slices whose lengths the function's own bounds checks or documented
        // contract cover; the intrinsics below need nothing else.
        unsafe {
            let one = _mm256_set1_ps(1.0);
            let sign = _mm256_set1_ps(-0.0);
            let mut i = 0;
            while i + 8 <= z.len() {
                let p = z.as_mut_ptr().add(i);
                let v = _mm256_loadu_ps(p);
                let e = exp8(_mm256_xor_ps(v, sign));
                _mm256_storeu_ps(p, _mm256_div_ps(one, _mm256_add_ps(one, e)));
                i += 8;
            }
            i
        }
    }

    /// Sum of each of four registers, as the four lanes of one 128-bit register.
    #[inline(always)]
    unsafe fn hsum4(a: __m256, b: __m256, c: __m256, d: __m256) -> __m128 {
        // SAFETY: callers reach this only after checking that the CPU has AVX2 and FMA,
        // with slices whose lengths the function's own bounds checks or documented
        // contract cover; the intrinsics below need nothing else.
        unsafe {
            let ab = _mm256_hadd_ps(a, b);
            let cd = _mm256_hadd_ps(c, d);
            let abcd = _mm256_hadd_ps(ab, cd);
            _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1))
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn matvec(w: &[f32], width: usize, v: &[f32], out: &mut [f32]) {
        // SAFETY: callers reach this only after checking that the CPU has AVX2 and FMA,
        // with slices whose lengths the function's own bounds checks or documented
        // contract cover; the intrinsics below need nothing else.
        unsafe {
            let rows = out.len();
            assert!(w.len() >= rows * width && v.len() >= width);
            let full = width / 8 * 8;
            let mask = tail_mask(width - full);
            let (wp, vp) = (w.as_ptr(), v.as_ptr());
            let vtail = _mm256_maskload_ps(vp.add(full), mask);
            let mut i = 0;
            while i + 4 <= rows {
                let r0 = wp.add(i * width);
                let r = [r0, r0.add(width), r0.add(2 * width), r0.add(3 * width)];
                let sums = dot_rows4(r, vp, width, mask, vtail);
                _mm_storeu_ps(out.as_mut_ptr().add(i), sums);
                i += 4;
            }
            while i < rows {
                *out.get_unchecked_mut(i) = dot_row(wp.add(i * width), vp, width, mask, vtail);
                i += 1;
            }
        }
    }

    /// The dot products of four weight rows `r` with `v`, `width` values each (`full` of them
    /// in blocks of eight, the rest under `mask` against `vtail`): one eight-lane accumulator
    /// per row over the columns in order, reduced by [`hsum4`]. [`matvec`]'s four-row step.
    #[inline(always)]
    unsafe fn dot_rows4(
        r: [*const f32; 4],
        vp: *const f32,
        width: usize,
        mask: __m256i,
        vtail: __m256,
    ) -> __m128 {
        // SAFETY: each of `r` and `vp` points at `width` readable values; AVX2 and FMA are
        // present in every caller.
        unsafe {
            let full = width / 8 * 8;
            let mut a = [_mm256_setzero_ps(); 4];
            let mut j = 0;
            while j < full {
                let vj = _mm256_loadu_ps(vp.add(j));
                for q in 0..4 {
                    a[q] = _mm256_fmadd_ps(_mm256_loadu_ps(r[q].add(j)), vj, a[q]);
                }
                j += 8;
            }
            if full < width {
                for q in 0..4 {
                    let wq = _mm256_maskload_ps(r[q].add(full), mask);
                    a[q] = _mm256_fmadd_ps(wq, vtail, a[q]);
                }
            }
            hsum4(a[0], a[1], a[2], a[3])
        }
    }

    /// One row's dot product with `v`, summed and reduced as [`dot_rows4`] does each of its
    /// rows. [`matvec`]'s tail.
    #[inline(always)]
    unsafe fn dot_row(
        r: *const f32,
        vp: *const f32,
        width: usize,
        mask: __m256i,
        vtail: __m256,
    ) -> f32 {
        // SAFETY: as `dot_rows4`.
        unsafe {
            let full = width / 8 * 8;
            let mut a = _mm256_setzero_ps();
            let mut j = 0;
            while j < full {
                a = _mm256_fmadd_ps(_mm256_loadu_ps(r.add(j)), _mm256_loadu_ps(vp.add(j)), a);
                j += 8;
            }
            if full < width {
                a = _mm256_fmadd_ps(_mm256_maskload_ps(r.add(full), mask), vtail, a);
            }
            let z = _mm256_setzero_ps();
            _mm_cvtss_f32(hsum4(a, z, z, z))
        }
    }

    /// [`super::matvec_where_nonzero`]: the rows whose `x` is nonzero, gathered, four at a
    /// time with the arithmetic of [`matvec`]'s four-row step (`hsum4` reduces each register
    /// on its own, so which rows share a step changes no bits), the rest one at a time as its
    /// tail does.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn matvec_where_nonzero(
        w: &[f32],
        width: usize,
        v: &[f32],
        x: &[f32],
        out: &mut [f32],
    ) {
        let rows = out.len();
        assert!(w.len() >= rows * width && v.len() >= width && x.len() >= rows);
        // SAFETY: AVX2 and FMA are enabled for this function; every row index gathered below
        // is below `rows`, so each weight row lies within `w` (checked above).
        unsafe {
            let full = width / 8 * 8;
            let mask = tail_mask(width - full);
            let (wp, vp) = (w.as_ptr(), v.as_ptr());
            let vtail = _mm256_maskload_ps(vp.add(full), mask);
            let mut buf = [const { std::mem::MaybeUninit::<usize>::uninit() }; 1024];
            let mut start = 0;
            while start < rows {
                let end = rows.min(start + buf.len());
                let mut k = 0;
                for i in start..end {
                    buf[k] = std::mem::MaybeUninit::new(i);
                    k += usize::from(x[i] != 0.0);
                    out[i] = 0.0;
                }
                // SAFETY: the first k entries were written just above.
                let idx: &[usize] = std::slice::from_raw_parts(buf.as_ptr().cast(), k);
                let mut t = 0;
                while t + 4 <= k {
                    let r = [
                        wp.add(idx[t] * width),
                        wp.add(idx[t + 1] * width),
                        wp.add(idx[t + 2] * width),
                        wp.add(idx[t + 3] * width),
                    ];
                    let mut sums = [0.0f32; 4];
                    _mm_storeu_ps(sums.as_mut_ptr(), dot_rows4(r, vp, width, mask, vtail));
                    for q in 0..4 {
                        out[idx[t + q]] = sums[q];
                    }
                    t += 4;
                }
                for &i in &idx[t..] {
                    out[i] = dot_row(wp.add(i * width), vp, width, mask, vtail);
                }
                start = end;
            }
        }
    }

    /// The one-row [`matvec`]'s four-row step for two rows of `v` at once (`va`, `vb`), or
    /// for `va` alone when `TWO` is false; outputs `i..i + 4` of each row go to `oa`, `ob`.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    unsafe fn matvec4<const TWO: bool>(
        r0: *const f32,
        width: usize,
        mask: __m256i,
        va: *const f32,
        vb: *const f32,
        oa: *mut f32,
        ob: *mut f32,
    ) {
        // SAFETY: r0 points at four weight rows of `width` values, va and vb (when TWO) at
        // `width` values, oa and ob (when TWO) at four writable values; AVX2 and FMA present.
        unsafe {
            let full = width / 8 * 8;
            let (r1, r2, r3) = (r0.add(width), r0.add(2 * width), r0.add(3 * width));
            let mut a = [_mm256_setzero_ps(); 4];
            let mut b = [_mm256_setzero_ps(); 4];
            let mut j = 0;
            while j < full {
                let w = [
                    _mm256_loadu_ps(r0.add(j)),
                    _mm256_loadu_ps(r1.add(j)),
                    _mm256_loadu_ps(r2.add(j)),
                    _mm256_loadu_ps(r3.add(j)),
                ];
                let x = _mm256_loadu_ps(va.add(j));
                for q in 0..4 {
                    a[q] = _mm256_fmadd_ps(w[q], x, a[q]);
                }
                if TWO {
                    let y = _mm256_loadu_ps(vb.add(j));
                    for q in 0..4 {
                        b[q] = _mm256_fmadd_ps(w[q], y, b[q]);
                    }
                }
                j += 8;
            }
            if full < width {
                let w = [
                    _mm256_maskload_ps(r0.add(full), mask),
                    _mm256_maskload_ps(r1.add(full), mask),
                    _mm256_maskload_ps(r2.add(full), mask),
                    _mm256_maskload_ps(r3.add(full), mask),
                ];
                let x = _mm256_maskload_ps(va.add(full), mask);
                for q in 0..4 {
                    a[q] = _mm256_fmadd_ps(w[q], x, a[q]);
                }
                if TWO {
                    let y = _mm256_maskload_ps(vb.add(full), mask);
                    for q in 0..4 {
                        b[q] = _mm256_fmadd_ps(w[q], y, b[q]);
                    }
                }
            }
            _mm_storeu_ps(oa, hsum4(a[0], a[1], a[2], a[3]));
            if TWO {
                _mm_storeu_ps(ob, hsum4(b[0], b[1], b[2], b[3]));
            }
        }
    }

    /// Rows `v` (`rows × width`) times the matrix `w` (`len × width`) transposed, into `out`
    /// (`rows × len`), each output computed as the one-row [`matvec`] computes it: `hsum4`
    /// reduces each register on its own, so grouping outputs differently changes no bits.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn matvec_rows(
        w: &[f32],
        width: usize,
        v: &[f32],
        len: usize,
        out: &mut [f32],
    ) {
        let rows = v.len() / width;
        assert!(w.len() >= len * width && out.len() >= rows * len);
        // SAFETY: AVX2 and FMA are enabled for this function; every access below lies within
        // the three slices, whose lengths were checked above.
        unsafe {
            let mask = tail_mask(width % 8);
            let (wp, vp, op) = (w.as_ptr(), v.as_ptr(), out.as_mut_ptr());
            let mut i = 0;
            while i + 4 <= len {
                let r0 = wp.add(i * width);
                let mut r = 0;
                while r + 2 <= rows {
                    let (va, vb) = (vp.add(r * width), vp.add((r + 1) * width));
                    let (oa, ob) = (op.add(r * len + i), op.add((r + 1) * len + i));
                    matvec4::<true>(r0, width, mask, va, vb, oa, ob);
                    r += 2;
                }
                if r < rows {
                    let (va, oa) = (vp.add(r * width), op.add(r * len + i));
                    matvec4::<false>(r0, width, mask, va, va, oa, oa);
                }
                i += 4;
            }
            if i < len {
                // The last len % 4 weight rows: the one-row kernel's own tail, row by row.
                for r in 0..rows {
                    let vr = std::slice::from_raw_parts(vp.add(r * width), width);
                    let or = std::slice::from_raw_parts_mut(op.add(r * len + i), len - i);
                    matvec(&w[i * width..len * width], width, vr, or);
                }
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn max_pool(
        xe: &[f32],
        (h, w, c): (usize, usize, usize),
        q: usize,
        y: &mut [f32],
        arg: &mut [u32],
    ) {
        let (ho, wo) = (h / q, w / q);
        let full = c / 8 * 8;
        // SAFETY: AVX2 is enabled for this function; every load and store is of a checked
        // slice of eight values.
        unsafe {
            let iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            for i in 0..ho {
                for j in 0..wo {
                    let out = (i * wo + j) * c;
                    let first = (i * q * w + j * q) * c;
                    for ch in (0..full).step_by(8) {
                        let mut vy = _mm256_loadu_ps(xe[first + ch..first + ch + 8].as_ptr());
                        let mut va = _mm256_add_epi32(_mm256_set1_epi32((first + ch) as i32), iota);
                        for a in 0..q {
                            for b in 0..q {
                                let at = ((i * q + a) * w + j * q + b) * c + ch;
                                let vv = _mm256_loadu_ps(xe[at..at + 8].as_ptr());
                                let gt = _mm256_cmp_ps::<_CMP_GT_OQ>(vv, vy);
                                vy = _mm256_blendv_ps(vy, vv, gt);
                                let idx = _mm256_add_epi32(_mm256_set1_epi32(at as i32), iota);
                                va = _mm256_blendv_epi8(va, idx, _mm256_castps_si256(gt));
                            }
                        }
                        _mm256_storeu_ps(y[out + ch..out + ch + 8].as_mut_ptr(), vy);
                        let pa = arg[out + ch..out + ch + 8].as_mut_ptr() as *mut __m256i;
                        _mm256_storeu_si256(pa, va);
                    }
                    for ch in full..c {
                        let (mut best, mut at_best) = (xe[first + ch], (first + ch) as u32);
                        for a in 0..q {
                            for b in 0..q {
                                let at = ((i * q + a) * w + j * q + b) * c + ch;
                                if xe[at] > best {
                                    best = xe[at];
                                    at_best = at as u32;
                                }
                            }
                        }
                        y[out + ch] = best;
                        arg[out + ch] = at_best;
                    }
                }
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn max_select(v: &[f32], base: u32, y: &mut [f32], arg: &mut [u32]) {
        let n = v.len().min(y.len()).min(arg.len());
        // SAFETY: AVX2 is enabled for this function; every access is below n, the shortest
        // of the three lengths.
        unsafe {
            let iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            let mut i = 0;
            while i + 8 <= n {
                let py = y.as_mut_ptr().add(i);
                let pa = arg.as_mut_ptr().add(i) as *mut __m256i;
                let vy = _mm256_loadu_ps(py);
                let vv = _mm256_loadu_ps(v.as_ptr().add(i));
                let gt = _mm256_cmp_ps::<_CMP_GT_OQ>(vv, vy);
                _mm256_storeu_ps(py, _mm256_blendv_ps(vy, vv, gt));
                let idx =
                    _mm256_add_epi32(_mm256_set1_epi32(base.wrapping_add(i as u32) as i32), iota);
                let va = _mm256_loadu_si256(pa);
                _mm256_storeu_si256(pa, _mm256_blendv_epi8(va, idx, _mm256_castps_si256(gt)));
                i += 8;
            }
            while i < n {
                let vi = *v.get_unchecked(i);
                if vi > *y.get_unchecked(i) {
                    *y.get_unchecked_mut(i) = vi;
                    *arg.get_unchecked_mut(i) = base.wrapping_add(i as u32);
                }
                i += 1;
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
        // SAFETY: callers reach this only after checking that the CPU has AVX2 and FMA,
        // with slices whose lengths the function's own bounds checks or documented
        // contract cover; the intrinsics below need nothing else.
        unsafe {
            let n = x.len().min(y.len());
            let va = _mm256_set1_ps(a);
            let mut i = 0;
            while i + 8 <= n {
                let px = x.as_ptr().add(i);
                let py = y.as_mut_ptr().add(i);
                _mm256_storeu_ps(
                    py,
                    _mm256_fmadd_ps(va, _mm256_loadu_ps(px), _mm256_loadu_ps(py)),
                );
                i += 8;
            }
            while i < n {
                *y.get_unchecked_mut(i) += a * *x.get_unchecked(i);
                i += 1;
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot(x: &[f32], y: &[f32]) -> f32 {
        // SAFETY: callers reach this only after checking that the CPU has AVX2 and FMA,
        // with slices whose lengths the function's own bounds checks or documented
        // contract cover; the intrinsics below need nothing else.
        unsafe {
            let n = x.len().min(y.len());
            let (mut s0, mut s1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
            let mut i = 0;
            while i + 16 <= n {
                s0 = _mm256_fmadd_ps(
                    _mm256_loadu_ps(x.as_ptr().add(i)),
                    _mm256_loadu_ps(y.as_ptr().add(i)),
                    s0,
                );
                s1 = _mm256_fmadd_ps(
                    _mm256_loadu_ps(x.as_ptr().add(i + 8)),
                    _mm256_loadu_ps(y.as_ptr().add(i + 8)),
                    s1,
                );
                i += 16;
            }
            if i + 8 <= n {
                s0 = _mm256_fmadd_ps(
                    _mm256_loadu_ps(x.as_ptr().add(i)),
                    _mm256_loadu_ps(y.as_ptr().add(i)),
                    s0,
                );
                i += 8;
            }
            let s = _mm256_add_ps(s0, s1);
            let lo = _mm256_castps256_ps128(s);
            let hi = _mm256_extractf128_ps(s, 1);
            let q = _mm_add_ps(lo, hi);
            let q = _mm_add_ps(q, _mm_movehl_ps(q, q));
            let q = _mm_add_ss(q, _mm_shuffle_ps(q, q, 1));
            let mut total = _mm_cvtss_f32(q);
            while i < n {
                total += *x.get_unchecked(i) * *y.get_unchecked(i);
                i += 1;
            }
            total
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_match_plain_loops() {
        for n in [0usize, 1, 7, 8, 15, 16, 17, 100, 784] {
            let x: Vec<f32> = (0..n).map(|i| ((i * 37 % 11) as f32 - 5.0) / 7.0).collect();
            let y0: Vec<f32> = (0..n).map(|i| ((i * 13 % 7) as f32 - 3.0) / 5.0).collect();
            let want: f64 = x
                .iter()
                .zip(&y0)
                .map(|(a, b)| (*a as f64) * (*b as f64))
                .sum();
            assert!((dot(&x, &y0) as f64 - want).abs() < 1e-4, "dot n={n}");
            let mut y = y0.clone();
            axpy(0.5, &x, &mut y);
            for i in 0..n {
                assert!(
                    (y[i] - (y0[i] + 0.5 * x[i])).abs() < 1e-6,
                    "axpy n={n} i={i}"
                );
            }
        }
    }

    /// The first strict maximum wins, ties included, in the vector lanes and the tail.
    /// The vector max-pooling takes the values and indices the portable one does, ties and
    /// NaN included, with channel counts that leave a tail.
    #[test]
    fn max_pool_matches_the_portable_loop() {
        for (h, w, c, q) in [(4, 6, 16, 2), (5, 5, 12, 2), (6, 6, 3, 3), (4, 4, 8, 2)] {
            let xe: Vec<f32> = (0..h * w * c)
                .map(|i| match i % 11 {
                    3 => f32::NAN,
                    5 | 6 => 0.5,
                    _ => ((i * 7) % 13) as f32 / 13.0 - 0.5,
                })
                .collect();
            let out = (h / q) * (w / q) * c;
            let (mut y, mut a) = (vec![0.0; out], vec![0u32; out]);
            let (mut y2, mut a2) = (vec![0.0; out], vec![0u32; out]);
            max_pool(&xe, (h, w, c), q, &mut y, &mut a);
            max_pool_portable(&xe, (h, w, c), q, &mut y2, &mut a2);
            assert_eq!(a, a2, "{h}x{w}x{c}, {q}");
            for (u, v) in y.iter().zip(&y2) {
                assert_eq!(u.to_bits(), v.to_bits());
            }
            for (&v, &i) in y.iter().zip(&a) {
                assert_eq!(v.to_bits(), xe[i as usize].to_bits());
            }
        }
    }

    #[test]
    fn max_select_keeps_the_first_strict_maximum() {
        for n in [1usize, 7, 8, 16, 19, 32] {
            let y0: Vec<f32> = (0..n).map(|i| (i % 3) as f32).collect();
            let v: Vec<f32> = (0..n).map(|i| (i % 5) as f32 * 0.5).collect();
            let (mut y, mut arg) = (y0.clone(), vec![7u32; n]);
            max_select(&v, 100, &mut y, &mut arg);
            for i in 0..n {
                let take = v[i] > y0[i];
                assert_eq!(y[i], if take { v[i] } else { y0[i] }, "n={n} i={i}");
                assert_eq!(arg[i], if take { 100 + i as u32 } else { 7 }, "n={n} i={i}");
            }
        }
    }

    #[test]
    fn matrix_kernels_match_plain_loops() {
        for width in [1usize, 3, 7, 8, 10, 13, 16, 31, 40, 64, 65, 100, 104, 200] {
            for rows in [0usize, 1, 3, 4, 5, 9, 784] {
                let w: Vec<f32> = (0..rows * width)
                    .map(|i| ((i * 29 % 17) as f32 - 8.0) / 9.0)
                    .collect();
                // Every third input is zero, as the sparse skip must handle.
                let x: Vec<f32> = (0..rows)
                    .map(|i| {
                        if i % 3 == 0 {
                            0.0
                        } else {
                            ((i * 7 % 5) as f32 - 2.0) / 3.0
                        }
                    })
                    .collect();
                let out0: Vec<f32> = (0..width).map(|j| j as f32 / 10.0).collect();
                let mut out = out0.clone();
                vecmat_acc(&x, &w, width, &mut out);
                for j in 0..width {
                    let want: f64 = out0[j] as f64
                        + (0..rows)
                            .map(|i| x[i] as f64 * w[i * width + j] as f64)
                            .sum::<f64>();
                    assert!(
                        (out[j] as f64 - want).abs() < 1e-3,
                        "vecmat width={width} rows={rows} j={j}: {} vs {want}",
                        out[j]
                    );
                }
                let v: Vec<f32> = (0..width)
                    .map(|j| ((j * 11 % 7) as f32 - 3.0) / 4.0)
                    .collect();
                let mut mv = vec![f32::NAN; rows];
                matvec(&w, width, &v, &mut mv);
                for i in 0..rows {
                    let want: f64 = (0..width)
                        .map(|j| w[i * width + j] as f64 * v[j] as f64)
                        .sum();
                    assert!(
                        (mv[i] as f64 - want).abs() < 1e-3,
                        "matvec width={width} rows={rows} i={i}: {} vs {want}",
                        mv[i]
                    );
                }
            }
        }
    }

    /// The batched kernels give each row the bits of a one-row call, for widths with and
    /// without a tail, weight-row counts with and without a remainder of four, and odd and
    /// even row counts (the two-row pairing).
    #[test]
    fn row_kernels_equal_one_row_calls_bit_for_bit() {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
        for width in [1usize, 5, 8, 13, 16, 100] {
            for len in [1usize, 3, 4, 7, 10, 33] {
                for rows in [1usize, 2, 3, 7] {
                    let w: Vec<f32> = (0..len * width)
                        .map(|i| ((i * 29 % 17) as f32 - 8.0) / 9.0)
                        .collect();
                    let v: Vec<f32> = (0..rows * width)
                        .map(|i| ((i * 11 % 7) as f32 - 3.0) / 4.3)
                        .collect();
                    let mut out = vec![f32::NAN; rows * len];
                    matvec_rows(&w, width, &v, len, &mut out);
                    let x: Vec<f32> = (0..rows * len)
                        .map(|i| {
                            if i % 3 == 0 {
                                0.0
                            } else {
                                (i % 5) as f32 / 3.0
                            }
                        })
                        .collect();
                    let mut acc: Vec<f32> = (0..rows * width).map(|j| j as f32 / 7.0).collect();
                    let acc0 = acc.clone();
                    vecmat_acc_rows(&x, len, &w, width, &mut acc);
                    for r in 0..rows {
                        let mut one = vec![f32::NAN; len];
                        matvec(&w, width, &v[r * width..(r + 1) * width], &mut one);
                        assert_eq!(
                            bits(&out[r * len..(r + 1) * len]),
                            bits(&one),
                            "matvec_rows width={width} len={len} rows={rows} r={r}"
                        );
                        let mut one = acc0[r * width..(r + 1) * width].to_vec();
                        vecmat_acc(&x[r * len..(r + 1) * len], &w, width, &mut one);
                        assert_eq!(
                            bits(&acc[r * width..(r + 1) * width]),
                            bits(&one),
                            "vecmat_acc_rows width={width} len={len} rows={rows} r={r}"
                        );
                    }
                }
            }
        }
    }

    /// The rows of nonzero `x` get [`matvec`]'s bits, the others zero, whichever rows share
    /// a four-row step (zeros scattered, in runs, none, all) and past the 1,024-row gather.
    #[test]
    fn matvec_where_nonzero_equals_matvec_on_the_kept_rows() {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
        for width in [1usize, 8, 13, 128] {
            for len in [1usize, 5, 9, 1568] {
                let w: Vec<f32> = (0..len * width)
                    .map(|i| ((i * 29 % 17) as f32 - 8.0) / 9.0)
                    .collect();
                let v: Vec<f32> = (0..width)
                    .map(|i| ((i * 11 % 7) as f32 - 3.0) / 4.3)
                    .collect();
                let mut dense = vec![f32::NAN; len];
                matvec(&w, width, &v, &mut dense);
                for pattern in 0..4 {
                    let x: Vec<f32> = (0..len)
                        .map(|i| match pattern {
                            0 if i % 3 == 0 || i % 7 == 2 => 0.0,
                            1 if (i / 5) % 2 == 0 => 0.0,
                            2 => 0.0,
                            _ => 0.5 + i as f32,
                        })
                        .collect();
                    let mut out = vec![f32::NAN; len];
                    matvec_where_nonzero(&w, width, &v, &x, &mut out);
                    let want: Vec<f32> = (0..len)
                        .map(|i| if x[i] != 0.0 { dense[i] } else { 0.0 })
                        .collect();
                    assert_eq!(
                        bits(&out),
                        bits(&want),
                        "width={width} len={len} pattern={pattern}"
                    );
                }
            }
        }
    }

    #[test]
    fn vector_sigmoid_is_close_to_the_scalar_one() {
        let mut worst = 0.0f32;
        let zs: Vec<f32> = (-2000..=2000).map(|i| i as f32 * 0.05).collect();
        let mut v = zs.clone();
        sigmoid_inplace(&mut v);
        for (&z, &s) in zs.iter().zip(&v) {
            let want = crate::nn::activation::sigmoid(z);
            assert!((0.0..=1.0).contains(&s), "sigmoid({z}) = {s}");
            if z > -80.0 {
                worst = worst.max((s - want).abs() / want);
            } else {
                assert!(s < 1e-30, "sigmoid({z}) = {s}");
            }
        }
        assert!(worst < 1e-6, "largest relative error {worst}");
    }
}
