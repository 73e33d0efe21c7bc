//! The skinny matrix products of a convolution, `C (+)= A·B` and `G += Aᵀ·D`, reading the tall
//! operand where it lies.
//!
//! A convolution's products pair tens of thousands of im2col rows with a kernel of a few dozen
//! output channels. A general GEMM (matrixmultiply, behind ndarray's `general_mat_mul`) first
//! copies ("packs") every row of the tall operand into its own layout and then uses each copied
//! value only `N/8` times; in a profile of a CONV16-32-FC128-10 training epoch the copying cost
//! nearly as much as the arithmetic (27% of the time in packing, 31% in the multiply kernel).
//! These kernels keep a block of 6 rows × 16 columns of the result in registers and stream the
//! operands from memory unchanged.
//!
//! AVX2 and FMA when the processor has them (the same cached test as [`super::kernels`], and
//! the same rounding policy: fused multiply-adds); otherwise, and for operands that are not
//! contiguous row-major blocks, ndarray's `general_mat_mul`.

use ndarray::linalg::general_mat_mul;
use ndarray::{ArrayView2, ArrayViewMut2};

/// `c = a·b`, or `c += a·b` when `accumulate`.
///
/// # Panics
/// If the shapes do not agree (`a` is `m × k`, `b` is `k × n`, `c` is `m × n`): callers size
/// them from one layer's geometry.
pub(crate) fn matmul(
    a: ArrayView2<'_, f32>,
    b: ArrayView2<'_, f32>,
    mut c: ArrayViewMut2<'_, f32>,
    accumulate: bool,
) {
    let (m, k) = a.dim();
    let n = b.ncols();
    assert!(b.nrows() == k && c.dim() == (m, n), "matmul shapes");
    #[cfg(target_arch = "x86_64")]
    {
        if super::kernels::has_avx2_fma() {
            if let (Some(ap), Some(bp), Some(cp)) = (a.as_slice(), b.as_slice(), c.as_slice_mut()) {
                // SAFETY: the processor has AVX2 and FMA (checked above) and the three slices
                // hold exactly m·k, k·n and m·n values (checked by the assert above, and
                // `as_slice` succeeds only for contiguous row-major views).
                unsafe { avx::matmul(m, k, n, ap, bp, cp, accumulate) };
                return;
            }
        }
    }
    general_mat_mul(1.0, &a, &b, if accumulate { 1.0 } else { 0.0 }, &mut c);
}

/// `g += aᵀ·d`.
///
/// # Panics
/// If the shapes do not agree (`a` is `m × k`, `d` is `m × n`, `g` is `k × n`).
pub(crate) fn matmul_tn_acc(
    a: ArrayView2<'_, f32>,
    d: ArrayView2<'_, f32>,
    mut g: ArrayViewMut2<'_, f32>,
) {
    let (m, k) = a.dim();
    let n = d.ncols();
    assert!(d.nrows() == m && g.dim() == (k, n), "matmul_tn shapes");
    #[cfg(target_arch = "x86_64")]
    {
        if super::kernels::has_avx2_fma() {
            if let (Some(ap), Some(dp), Some(gp)) = (a.as_slice(), d.as_slice(), g.as_slice_mut()) {
                // SAFETY: as in `matmul`: AVX2 and FMA present, slices of m·k, m·n and k·n.
                unsafe { avx::matmul_tn_acc(m, k, n, ap, dp, gp) };
                return;
            }
        }
    }
    general_mat_mul(1.0, &a.t(), &d, 1.0, &mut g);
}

/// The geometry of one convolution over a channels-last image, for [`conv_direct`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConvShape {
    /// Input `(height, width, channels)`.
    pub input: (usize, usize, usize),
    /// Kernel size, stride, padding.
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    /// Output `(height, width)`.
    pub output: (usize, usize),
    /// Output channels.
    pub channels: usize,
}

impl ConvShape {
    /// Where the windows of output column `j` meet the image's columns: `(j0, lo, hi)`, the
    /// window's first column (negative in the padding) and the image columns `lo..hi` it
    /// covers (empty if it lies in the padding).
    #[inline(always)]
    fn columns(&self, j: usize) -> (isize, usize, usize) {
        let j0 = (j * self.stride) as isize - self.padding as isize;
        let lo = j0.max(0) as usize;
        let hi = (j0 + self.kernel as isize)
            .min(self.input.1 as isize)
            .max(lo as isize) as usize;
        (j0, lo, hi)
    }

    /// The image row that kernel row `a` of output row `i` reads, if it lies inside the image.
    #[inline(always)]
    fn row(&self, i: usize, a: usize) -> Option<usize> {
        (i * self.stride + a)
            .checked_sub(self.padding)
            .filter(|&r| r < self.input.0)
    }
}

/// `y = b + x ⋆ K` for one example `xe` of a convolution, read straight from the image: for
/// each output position, the bias plus each input of its window inside the image times the
/// kernel row it meets, in the window's `(row, column, channel)` order. That is the order, and
/// these are the fused multiply-adds, of [`matmul`] on the unfolded input (a padding value
/// would only have added zero), so `ye` gets the im2col path's values without the im2col.
/// Zero inputs are multiplied too: skipping MNIST's zero pixels cost more in mispredicted
/// branches than the multiply-adds it saved.
///
/// Meant for windows of few values per row (`k·C`, 5 for the MNIST convnet's first layer),
/// where one call of the unfolding per window row costs more than the row's products: on the
/// zoo convnet, one image's loss and input gradient went from 171.6 to 161.5 µs (medians of
/// 200 rounds, alternating binaries). Returns false, writing nothing, when the processor lacks AVX2 and FMA or
/// the output channels are not 8, 16, 24 or 32; the caller then takes the im2col path.
///
/// # Panics
/// If a slice is shorter than the geometry needs (the caller sizes them from one layer).
pub(crate) fn conv_direct(
    g: &ConvShape,
    xe: &[f32],
    w: &[f32],
    bias: &[f32],
    ye: &mut [f32],
) -> bool {
    let (h, wd, c) = g.input;
    let d = g.channels;
    assert!(
        xe.len() >= h * wd * c
            && w.len() >= g.kernel * g.kernel * c * d
            && bias.len() >= d
            && ye.len() >= g.output.0 * g.output.1 * d,
        "conv_direct sizes"
    );
    #[cfg(target_arch = "x86_64")]
    {
        if super::kernels::has_avx2_fma() {
            // SAFETY: the processor has AVX2 and FMA (checked above); the slice lengths were
            // checked above and every access inside is a checked slice.
            unsafe {
                match d {
                    8 => avx::conv_direct::<1>(g, xe, w, bias, ye),
                    16 => avx::conv_direct::<2>(g, xe, w, bias, ye),
                    24 => avx::conv_direct::<3>(g, xe, w, bias, ye),
                    32 => avx::conv_direct::<4>(g, xe, w, bias, ye),
                    _ => return false,
                }
            }
            return true;
        }
    }
    false
}

/// Panics (naming `what`) unless `dye`, `wt` and `dxe` cover one example's output gradient,
/// the transposed kernel and the input gradient of the geometry `g`.
fn assert_input_grad_sizes(g: &ConvShape, dye: &[f32], wt: &[f32], dxe: &[f32], what: &str) {
    let (h, wd, c) = g.input;
    let d = g.channels;
    assert!(
        dye.len() >= g.output.0 * g.output.1 * d
            && wt.len() >= d * g.kernel * g.kernel * c
            && dxe.len() >= h * wd * c,
        "{what} sizes"
    );
}

/// The input gradient of one example of a convolution whose input has a multiple of 8
/// channels (the MNIST convnet's second layer: 16), without the unfolded window gradient: for
/// each output position whose gradient `dye` has a nonzero channel, and each window row inside
/// the image, the row's part of `Σ_d dy[d]·Kᵀ[d, ·]` (over the nonzero channels in order, from
/// zero, with fused multiply-adds) is summed in registers and added straight into `dxe`. Those
/// are the values and operations, in the same order, of the row kernel into a zeroed window
/// gradient and the fold that adds it into `dxe` (`Conv2d::input_grad_sparse`), so `dxe` gets
/// their bits without the window gradient's zeroing, stores and reloads; `dxe` must be zeroed
/// first. `wt` is the kernel transposed, `D × (k·k·C)`.
///
/// Returns false, writing nothing, without AVX2 and FMA, when the input channels are not a
/// multiple of 8 or there are more than 64 output channels; the caller then takes the general
/// path.
///
/// # Panics
/// If a slice is shorter than the geometry needs.
pub(crate) fn conv_wide_input_grad(
    g: &ConvShape,
    dye: &[f32],
    wt: &[f32],
    dxe: &mut [f32],
) -> bool {
    assert_input_grad_sizes(g, dye, wt, dxe, "conv_wide_input_grad");
    let (c, d) = (g.input.2, g.channels);
    #[cfg(target_arch = "x86_64")]
    {
        if super::kernels::has_avx2_fma() && c % 8 == 0 && d <= 64 {
            // SAFETY: the processor has AVX2 and FMA (checked above); the slice lengths were
            // checked above and every access inside is a checked slice.
            unsafe { avx::conv_wide_input_grad(g, dye, wt, dxe) };
            return true;
        }
    }
    false
}

/// The input gradient of one example of a convolution with short window rows, the adjoint of
/// [`conv_direct`]: for each output position whose gradient `dye` (`positions × D`) has a
/// nonzero channel, the window's gradient `Σ_d dy[d]·Kᵀ[d, ·]` over the nonzero channels in
/// order (from zero, with fused multiply-adds), added into `dxe` window row by window row,
/// positions in order. Those are the operations, in the same order, of the sparse path
/// through the row kernel and the fold (`Conv2d::input_grad_sparse`), so `dxe` gets its bits;
/// `dxe` must be zeroed first. `wt` is the kernel transposed, `D × (k·k·C)`.
///
/// A call of the general row kernel per position (784 of them for the MNIST convnet's first
/// layer, each on 25 values) cost about 27 µs of a 152 µs evaluation, measured by running it
/// twice. Returns false, writing nothing, without AVX2 and FMA, when the window has more than
/// 80 values or there are more than 64 output channels; the caller then takes the general
/// path.
///
/// # Panics
/// If a slice is shorter than the geometry needs.
pub(crate) fn conv_direct_input_grad(
    g: &ConvShape,
    dye: &[f32],
    wt: &[f32],
    dxe: &mut [f32],
) -> bool {
    assert_input_grad_sizes(g, dye, wt, dxe, "conv_direct_input_grad");
    let (d, patch) = (g.channels, g.kernel * g.kernel * g.input.2);
    #[cfg(target_arch = "x86_64")]
    {
        if super::kernels::has_avx2_fma() {
            // SAFETY: the processor has AVX2 and FMA (checked above); the slice lengths were
            // checked above and every access inside is a checked slice.
            unsafe {
                match patch.div_ceil(8) {
                    _ if d > 64 => return false,
                    1 => avx::conv_direct_input_grad::<1>(g, dye, wt, dxe),
                    2 => avx::conv_direct_input_grad::<2>(g, dye, wt, dxe),
                    3 => avx::conv_direct_input_grad::<3>(g, dye, wt, dxe),
                    4 => avx::conv_direct_input_grad::<4>(g, dye, wt, dxe),
                    5 => avx::conv_direct_input_grad::<5>(g, dye, wt, dxe),
                    6 => avx::conv_direct_input_grad::<6>(g, dye, wt, dxe),
                    7 => avx::conv_direct_input_grad::<7>(g, dye, wt, dxe),
                    8 => avx::conv_direct_input_grad::<8>(g, dye, wt, dxe),
                    9 => avx::conv_direct_input_grad::<9>(g, dye, wt, dxe),
                    10 => avx::conv_direct_input_grad::<10>(g, dye, wt, dxe),
                    _ => return false,
                }
            }
            return true;
        }
    }
    false
}

/// The nonzero values of one channels-last image, row by row, for [`conv_sparse`]: each
/// image row's nonzero values and their positions within the row, in order, and for each
/// pixel of the row how many of them come before it, so that any run of pixels maps to a
/// contiguous range. Buffers kept between calls.
#[derive(Debug, Clone, Default)]
pub(crate) struct SparseRows {
    values: Vec<f32>,
    /// Position within the image row (`x·C + channel`) of each value.
    index: Vec<u32>,
    /// Where each image row's values start.
    row_start: Vec<usize>,
    /// For image row `r` and pixel `x` (`0..=w`), the row's nonzero values before pixel `x`.
    before: Vec<u32>,
}

/// Largest share of nonzero inputs at which [`conv_sparse`] runs; above it the dense product
/// of the im2col path is faster. The sparse kernel costs about 2.5 cycles per nonzero window
/// value against about 2 per window value for the dense product (`perf`, MNIST convnet).
const SPARSE_MAX_DENSITY: f32 = 0.6;

/// [`conv_direct`] for an input with many zeros (behind a ReLU and max-pooling: about 24% of
/// the MNIST convnet's second-layer windows are nonzero): the image's nonzero values are
/// gathered once, and each output position multiplies in only the nonzero values of its
/// window, row by row in the window's order, with the same fused multiply-adds as [`matmul`]
/// on the unfolded input (a skipped zero would only have added a zero), so `ye` gets the
/// im2col path's values without unfolding.
///
/// Returns false, writing nothing to `ye`, without AVX2 and FMA, when the output channels are
/// not 8, 16, 24 or 32, or when more than [`SPARSE_MAX_DENSITY`] of the image is nonzero.
///
/// # Panics
/// If a slice is shorter than the geometry needs.
pub(crate) fn conv_sparse(
    g: &ConvShape,
    xe: &[f32],
    w: &[f32],
    bias: &[f32],
    ye: &mut [f32],
    rows: &mut SparseRows,
) -> bool {
    let (h, wd, c) = g.input;
    let d = g.channels;
    assert!(
        xe.len() >= h * wd * c
            && w.len() >= g.kernel * g.kernel * c * d
            && bias.len() >= d
            && ye.len() >= g.output.0 * g.output.1 * d,
        "conv_sparse sizes"
    );
    #[cfg(target_arch = "x86_64")]
    {
        if !(super::kernels::has_avx2_fma() && matches!(d, 8 | 16 | 24 | 32)) {
            return false;
        }
        let n = h * wd * c;
        rows.values.resize(n + 1, 0.0);
        rows.index.resize(n + 1, 0);
        rows.row_start.resize(h, 0);
        rows.before.resize(h * (wd + 1), 0);
        let mut count = 0;
        for r in 0..h {
            rows.row_start[r] = count;
            for x in 0..wd {
                rows.before[r * (wd + 1) + x] = (count - rows.row_start[r]) as u32;
                let px = &xe[(r * wd + x) * c..(r * wd + x + 1) * c];
                for (ch, &v) in px.iter().enumerate() {
                    // Branch-free: written always, kept when nonzero.
                    rows.values[count] = v;
                    rows.index[count] = (x * c + ch) as u32;
                    count += usize::from(v != 0.0);
                }
            }
            rows.before[r * (wd + 1) + wd] = (count - rows.row_start[r]) as u32;
        }
        if count as f32 > SPARSE_MAX_DENSITY * n as f32 {
            return false;
        }
        // SAFETY: the processor has AVX2 and FMA (checked above); the slice lengths were
        // checked above and every access inside is a checked slice.
        unsafe {
            match d {
                8 => avx::conv_sparse::<1>(g, rows, w, bias, ye),
                16 => avx::conv_sparse::<2>(g, rows, w, bias, ye),
                24 => avx::conv_sparse::<3>(g, rows, w, bias, ye),
                _ => avx::conv_sparse::<4>(g, rows, w, bias, ye),
            }
        }
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = rows;
        false
    }
}

#[cfg(target_arch = "x86_64")]
mod avx {
    use std::arch::x86_64::*;

    /// Rows of the result kept in registers at once: 6 rows × 2 registers = 12 accumulators,
    /// plus 2 for the loaded operand row and 1 for the broadcast, within AVX2's 16.
    const MR: usize = 6;
    /// Rows of `a` and `d` per pass of [`matmul_tn_acc`]: 64 rows of `d` (at 32 columns, 8 KB)
    /// and the touched lines of `a` stay in L1 while every block of `g` sweeps them.
    const CHUNK: usize = 64;

    /// Masks for the two registers of the 16-column block starting at `j0` of `n` columns.
    #[inline(always)]
    unsafe fn masks(n: usize, j0: usize) -> (__m256i, __m256i) {
        // SAFETY: only reached from functions compiled with AVX2 enabled.
        unsafe {
            let idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            let left = (n - j0) as i32;
            (
                _mm256_cmpgt_epi32(_mm256_set1_epi32(left), idx),
                _mm256_cmpgt_epi32(_mm256_set1_epi32(left - 8), idx),
            )
        }
    }

    #[inline(always)]
    unsafe fn load<const FULL: bool>(p: *const f32, m: __m256i) -> __m256 {
        // SAFETY: `p` points at 8 readable values when FULL, else at as many as `m` selects.
        unsafe {
            if FULL {
                _mm256_loadu_ps(p)
            } else {
                _mm256_maskload_ps(p, m)
            }
        }
    }

    #[inline(always)]
    unsafe fn store<const FULL: bool>(p: *mut f32, m: __m256i, v: __m256) {
        // SAFETY: as for `load`.
        unsafe {
            if FULL {
                _mm256_storeu_ps(p, v)
            } else {
                _mm256_maskstore_ps(p, m, v)
            }
        }
    }

    /// `c[0..R, 0..16] (+)= a[0..R, 0..k] · b[0..k, 0..16]` for one block (the columns limited
    /// by the masks unless FULL); `lda`, `ldb`, `ldc` are row strides.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    unsafe fn tile_nn<const R: usize, const FULL: bool>(
        k: usize,
        a: *const f32,
        lda: usize,
        b: *const f32,
        ldb: usize,
        c: *mut f32,
        ldc: usize,
        (m0, m1): (__m256i, __m256i),
        accumulate: bool,
    ) {
        // SAFETY: the caller passes pointers to an R × k block of `a`, a k × 16 block of `b`
        // and an R × 16 block of `c` (columns past the masks never touched).
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); 2]; R];
            if accumulate {
                for (r, row) in acc.iter_mut().enumerate() {
                    row[0] = load::<FULL>(c.add(r * ldc), m0);
                    row[1] = load::<FULL>(c.add(r * ldc + 8), m1);
                }
            }
            for p in 0..k {
                let b0 = load::<FULL>(b.add(p * ldb), m0);
                let b1 = load::<FULL>(b.add(p * ldb + 8), m1);
                for (r, row) in acc.iter_mut().enumerate() {
                    let av = _mm256_set1_ps(*a.add(r * lda + p));
                    row[0] = _mm256_fmadd_ps(av, b0, row[0]);
                    row[1] = _mm256_fmadd_ps(av, b1, row[1]);
                }
            }
            for (r, row) in acc.iter().enumerate() {
                store::<FULL>(c.add(r * ldc), m0, row[0]);
                store::<FULL>(c.add(r * ldc + 8), m1, row[1]);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    unsafe fn rows_nn<const R: usize>(
        k: usize,
        n: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        accumulate: bool,
    ) {
        // SAFETY: `a` points at R rows of k values, `c` at R rows of n, `b` at k rows of n.
        unsafe {
            let all = _mm256_set1_epi32(-1);
            let mut j0 = 0;
            while j0 + 16 <= n {
                tile_nn::<R, true>(k, a, k, b.add(j0), n, c.add(j0), n, (all, all), accumulate);
                j0 += 16;
            }
            if j0 < n {
                let m = masks(n, j0);
                tile_nn::<R, false>(k, a, k, b.add(j0), n, c.add(j0), n, m, accumulate);
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn matmul(
        m: usize,
        k: usize,
        n: usize,
        a: &[f32],
        b: &[f32],
        c: &mut [f32],
        accumulate: bool,
    ) {
        assert!(a.len() == m * k && b.len() == k * n && c.len() == m * n);
        let (a, b, c) = (a.as_ptr(), b.as_ptr(), c.as_mut_ptr());
        // SAFETY: AVX2 and FMA are enabled for this function; every block below lies within
        // the three slices, whose lengths were checked above.
        unsafe {
            let mut i = 0;
            while i + MR <= m {
                rows_nn::<MR>(k, n, a.add(i * k), b, c.add(i * n), accumulate);
                i += MR;
            }
            let (a, c) = (a.add(i * k), c.add(i * n));
            match m - i {
                1 => rows_nn::<1>(k, n, a, b, c, accumulate),
                2 => rows_nn::<2>(k, n, a, b, c, accumulate),
                3 => rows_nn::<3>(k, n, a, b, c, accumulate),
                4 => rows_nn::<4>(k, n, a, b, c, accumulate),
                5 => rows_nn::<5>(k, n, a, b, c, accumulate),
                _ => {}
            }
        }
    }

    /// `g[0..R, 0..16] += Σ_t a[t, 0..R]ᵀ · d[t, 0..16]` over `rows` rows `t`.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    unsafe fn tile_tn<const R: usize, const FULL: bool>(
        rows: usize,
        a: *const f32,
        lda: usize,
        d: *const f32,
        ldd: usize,
        g: *mut f32,
        ldg: usize,
        (m0, m1): (__m256i, __m256i),
    ) {
        // SAFETY: the caller passes pointers to a rows × R block of `a`, a rows × 16 block of
        // `d` and an R × 16 block of `g` (columns past the masks never touched).
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); 2]; R];
            for (r, row) in acc.iter_mut().enumerate() {
                row[0] = load::<FULL>(g.add(r * ldg), m0);
                row[1] = load::<FULL>(g.add(r * ldg + 8), m1);
            }
            for t in 0..rows {
                let d0 = load::<FULL>(d.add(t * ldd), m0);
                let d1 = load::<FULL>(d.add(t * ldd + 8), m1);
                for (r, row) in acc.iter_mut().enumerate() {
                    let av = _mm256_set1_ps(*a.add(t * lda + r));
                    row[0] = _mm256_fmadd_ps(av, d0, row[0]);
                    row[1] = _mm256_fmadd_ps(av, d1, row[1]);
                }
            }
            for (r, row) in acc.iter().enumerate() {
                store::<FULL>(g.add(r * ldg), m0, row[0]);
                store::<FULL>(g.add(r * ldg + 8), m1, row[1]);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    unsafe fn cols_tn<const R: usize>(
        rows: usize,
        k: usize,
        n: usize,
        a: *const f32,
        d: *const f32,
        g: *mut f32,
    ) {
        // SAFETY: `a` points at column p of `rows` rows of k values with R columns left, `d`
        // at `rows` rows of n values, `g` at R rows of n values.
        unsafe {
            let all = _mm256_set1_epi32(-1);
            let mut j0 = 0;
            while j0 + 16 <= n {
                tile_tn::<R, true>(rows, a, k, d.add(j0), n, g.add(j0), n, (all, all));
                j0 += 16;
            }
            if j0 < n {
                let m = masks(n, j0);
                tile_tn::<R, false>(rows, a, k, d.add(j0), n, g.add(j0), n, m);
            }
        }
    }

    /// `R` registers from the first `8·R` values of `src`.
    #[inline(always)]
    unsafe fn load_regs<const R: usize>(src: &[f32]) -> [__m256; R] {
        let src = &src[..8 * R];
        // SAFETY: `src` holds 8·R values (sliced above); AVX present in every caller.
        unsafe { std::array::from_fn(|r| _mm256_loadu_ps(src[8 * r..].as_ptr())) }
    }

    /// `R` registers into the first `8·R` values of `dst`.
    #[inline(always)]
    unsafe fn store_regs<const R: usize>(regs: &[__m256; R], dst: &mut [f32]) {
        let dst = &mut dst[..8 * R];
        for (r, v) in regs.iter().enumerate() {
            // SAFETY: `dst` holds 8·R values (sliced above); AVX present in every caller.
            unsafe { _mm256_storeu_ps(dst[8 * r..].as_mut_ptr(), *v) };
        }
    }

    /// `acc += v · w[..8·R]`, register by register.
    #[inline(always)]
    unsafe fn fma_regs<const R: usize>(acc: &mut [__m256; R], v: __m256, w: &[f32]) {
        // SAFETY: as `load_regs`; FMA present in every caller.
        unsafe {
            let wv = load_regs::<R>(w);
            for (acc, wv) in acc.iter_mut().zip(&wv) {
                *acc = _mm256_fmadd_ps(v, *wv, *acc);
            }
        }
    }

    /// [`super::conv_direct_input_grad`] with a window of at most `8·R` values, kept in `R`
    /// registers (the last one masked).
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn conv_direct_input_grad<const R: usize>(
        g: &super::ConvShape,
        dye: &[f32],
        wt: &[f32],
        dxe: &mut [f32],
    ) {
        let (_, wd, c) = g.input;
        let k = g.kernel;
        let wo = g.output.1;
        let (d, run) = (g.channels, k * c);
        let patch = k * run;
        let last = patch - 8 * (R - 1);
        // SAFETY: AVX2 and FMA are enabled for this function; every load is of a checked
        // slice of eight values, or of `last` values under a mask of `last` lanes, and every
        // store goes to the local buffer.
        unsafe {
            let idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(last as i32), idx);
            let mut buf = [0.0f32; 80];
            for (pos, dyr) in dye.chunks_exact(d).enumerate().take(g.output.0 * wo) {
                let mut nz = nonzero_mask(dyr);
                if nz == 0 {
                    continue;
                }
                let mut acc = [_mm256_setzero_ps(); R];
                while nz != 0 {
                    let t = nz.trailing_zeros() as usize;
                    nz &= nz - 1;
                    let row = &wt[t * patch..(t + 1) * patch];
                    let vb = _mm256_set1_ps(dyr[t]);
                    for (r, acc) in acc.iter_mut().enumerate().take(R - 1) {
                        let wv = _mm256_loadu_ps(row[8 * r..8 * r + 8].as_ptr());
                        *acc = _mm256_fmadd_ps(vb, wv, *acc);
                    }
                    let tail = &row[8 * (R - 1)..8 * (R - 1) + last];
                    let wv = _mm256_maskload_ps(tail.as_ptr(), mask);
                    acc[R - 1] = _mm256_fmadd_ps(vb, wv, acc[R - 1]);
                }
                store_regs(&acc, &mut buf);
                let (i, j) = (pos / wo, pos % wo);
                let (j0, lo, hi) = g.columns(j);
                if hi == lo {
                    continue;
                }
                let skip = (lo as isize - j0) as usize * c;
                let len = (hi - lo) * c;
                for a in 0..k {
                    let Some(ii) = g.row(i, a) else { continue };
                    let start = (ii * wd + lo) * c;
                    let src = &buf[a * run + skip..a * run + skip + len];
                    for (dst, &s) in dxe[start..start + len].iter_mut().zip(src) {
                        *dst += s;
                    }
                }
            }
        }
    }

    /// The nonzero channels of one position's gradient as a bit mask (at most 64 channels),
    /// eight comparisons at a time: testing them one by one mispredicted about a fifth of
    /// [`conv_direct_input_grad`]'s time away.
    #[inline(always)]
    unsafe fn nonzero_mask(dyr: &[f32]) -> u64 {
        // SAFETY: only reached from functions compiled with AVX2 enabled; every load is of a
        // checked slice of eight values.
        unsafe {
            let mut nz: u64 = 0;
            let mut ch = 0;
            while ch + 8 <= dyr.len() {
                let v = _mm256_loadu_ps(dyr[ch..ch + 8].as_ptr());
                let ne = _mm256_cmp_ps::<_CMP_NEQ_UQ>(v, _mm256_setzero_ps());
                nz |= (_mm256_movemask_ps(ne) as u32 as u64) << ch;
                ch += 8;
            }
            for (t, &v) in dyr.iter().enumerate().skip(ch) {
                nz |= u64::from(v != 0.0) << t;
            }
            nz
        }
    }

    /// `dst[..8·R] += Σ_t dy[t]·wt[t·patch + off..][..8·R]` over the set bits `t` of `nz`, in
    /// order, the sum taken in registers from zero.
    #[inline(always)]
    unsafe fn window_segment<const R: usize>(
        nz: u64,
        dyr: &[f32],
        wt: &[f32],
        patch: usize,
        off: usize,
        dst: &mut [f32],
    ) {
        // SAFETY: as `load_regs`; FMA present in every caller.
        unsafe {
            let mut acc = [_mm256_setzero_ps(); R];
            let mut bits = nz;
            while bits != 0 {
                let t = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let q = t * patch + off;
                fma_regs(&mut acc, _mm256_set1_ps(dyr[t]), &wt[q..q + 8 * R]);
            }
            let mut sum = load_regs::<R>(dst);
            for (s, acc) in sum.iter_mut().zip(&acc) {
                *s = _mm256_add_ps(*s, *acc);
            }
            store_regs(&sum, dst);
        }
    }

    /// [`super::conv_wide_input_grad`].
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn conv_wide_input_grad(
        g: &super::ConvShape,
        dye: &[f32],
        wt: &[f32],
        dxe: &mut [f32],
    ) {
        let (_, wd, c) = g.input;
        let k = g.kernel;
        let wo = g.output.1;
        let (d, run) = (g.channels, k * c);
        let patch = k * run;
        // SAFETY: AVX2 and FMA are enabled for this function; every access is of a checked
        // slice.
        unsafe {
            for (pos, dyr) in dye.chunks_exact(d).enumerate().take(g.output.0 * wo) {
                let nz = nonzero_mask(dyr);
                if nz == 0 {
                    continue;
                }
                let (i, j) = (pos / wo, pos % wo);
                let (j0, lo, hi) = g.columns(j);
                let skip = (lo as isize - j0) as usize * c;
                let len = (hi - lo) * c;
                for a in 0..k {
                    let Some(ii) = g.row(i, a) else { continue };
                    let start = (ii * wd + lo) * c;
                    // The row's `len` values (a multiple of 8) in blocks of up to 64.
                    let mut done = 0;
                    while done < len {
                        let regs = ((len - done) / 8).min(8);
                        let off = a * run + skip + done;
                        let dst = &mut dxe[start + done..];
                        match regs {
                            1 => window_segment::<1>(nz, dyr, wt, patch, off, dst),
                            2 => window_segment::<2>(nz, dyr, wt, patch, off, dst),
                            3 => window_segment::<3>(nz, dyr, wt, patch, off, dst),
                            4 => window_segment::<4>(nz, dyr, wt, patch, off, dst),
                            5 => window_segment::<5>(nz, dyr, wt, patch, off, dst),
                            6 => window_segment::<6>(nz, dyr, wt, patch, off, dst),
                            7 => window_segment::<7>(nz, dyr, wt, patch, off, dst),
                            _ => window_segment::<8>(nz, dyr, wt, patch, off, dst),
                        }
                        done += 8 * regs;
                    }
                }
            }
        }
    }

    /// [`super::conv_sparse`] with `8·R` output channels, kept in `R` registers.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn conv_sparse<const R: usize>(
        g: &super::ConvShape,
        rows: &super::SparseRows,
        w: &[f32],
        bias: &[f32],
        ye: &mut [f32],
    ) {
        let (_, wd, c) = g.input;
        let k = g.kernel;
        let (ho, wo) = g.output;
        let (d, run) = (8 * R, k * c);
        // SAFETY: AVX2 and FMA are enabled for this function; every load and store below is
        // of a checked slice of exactly 8·R values.
        unsafe {
            let b = load_regs::<R>(bias);
            // The nonzero values of window row `a` of position `(i, j)`: their range in
            // `rows` and the offset that turns an image-row index into a kernel row.
            let window = |i: usize, j: usize, a: usize| -> Option<(usize, usize, isize)> {
                let (j0, lo, hi) = g.columns(j);
                let ii = g.row(i, a).filter(|_| hi > lo)?;
                let start = rows.row_start[ii];
                let before = &rows.before[ii * (wd + 1)..(ii + 1) * (wd + 1)];
                let (s, e) = (start + before[lo] as usize, start + before[hi] as usize);
                Some((s, e, (a * run) as isize - j0 * c as isize))
            };
            let tap = |acc: &mut [__m256; R], t: usize, base: isize| {
                let q = (base + rows.index[t] as isize) as usize * d;
                fma_regs(acc, _mm256_set1_ps(rows.values[t]), &w[q..q + d]);
            };
            // Kernel row by kernel row, each over every position: a kernel row's slice of the
            // weights (`k·C·D` values, 10 KB on the zoo convnet's second layer) stays in L1
            // while all positions use it, where walking each position's whole window would
            // stream the whole kernel (51 KB, more than L1) from L2 once per position. The
            // partial sums wait in `ye` between kernel rows; each output still sums its taps
            // in the window's order, starting from the bias.
            for a in 0..k {
                for i in 0..ho {
                    // Two positions at a time, their taps interleaved: one position's sum is a
                    // chain of dependent multiply-adds (each waits for the last), so a second,
                    // independent chain doubles the throughput.
                    let mut j = 0;
                    while j < wo {
                        let pair = j + 1 < wo;
                        let n_out = if pair { 2 } else { 1 };
                        let w0 = window(i, j, a);
                        let w1 = if pair { window(i, j + 1, a) } else { None };
                        if a > 0 && w0.is_none() && w1.is_none() {
                            j += n_out;
                            continue;
                        }
                        let at = (i * wo + j) * d;
                        let (mut acc0, mut acc1) = if a == 0 {
                            (b, b)
                        } else if pair {
                            (load_regs::<R>(&ye[at..]), load_regs::<R>(&ye[at + d..]))
                        } else {
                            (load_regs::<R>(&ye[at..]), b)
                        };
                        match (w0, w1) {
                            (Some((s0, e0, b0)), Some((s1, e1, b1))) => {
                                let m = (e0 - s0).min(e1 - s1);
                                for t in 0..m {
                                    tap(&mut acc0, s0 + t, b0);
                                    tap(&mut acc1, s1 + t, b1);
                                }
                                for t in s0 + m..e0 {
                                    tap(&mut acc0, t, b0);
                                }
                                for t in s1 + m..e1 {
                                    tap(&mut acc1, t, b1);
                                }
                            }
                            (Some((s0, e0, b0)), None) => {
                                for t in s0..e0 {
                                    tap(&mut acc0, t, b0);
                                }
                            }
                            (None, Some((s1, e1, b1))) => {
                                for t in s1..e1 {
                                    tap(&mut acc1, t, b1);
                                }
                            }
                            (None, None) => {}
                        }
                        store_regs(&acc0, &mut ye[at..]);
                        if pair {
                            store_regs(&acc1, &mut ye[at + d..]);
                        }
                        j += n_out;
                    }
                }
            }
        }
    }

    /// [`super::conv_direct`] with `8·R` output channels, kept in `R` registers.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn conv_direct<const R: usize>(
        g: &super::ConvShape,
        xe: &[f32],
        w: &[f32],
        bias: &[f32],
        ye: &mut [f32],
    ) {
        let (_, wd, c) = g.input;
        let (k, st, p) = (g.kernel, g.stride, g.padding as isize);
        let (ho, wo) = g.output;
        let (d, run) = (8 * R, k * c);
        // SAFETY: AVX2 and FMA are enabled for this function; every load and store below is
        // of a checked slice of exactly 8·R values.
        unsafe {
            let b = load_regs::<R>(bias);
            for i in 0..ho {
                let mut j = 0;
                while j < wo {
                    // Four neighbouring positions whose windows lie inside the image's width
                    // share each kernel row's loads (for up to 16 channels, so that their
                    // accumulators fit in the registers); each output still sums its taps in
                    // the window's order.
                    let (j0, lo, hi) = g.columns(j);
                    let inside = j0 >= 0 && ((j + 3) * st) as isize - p + k as isize <= wd as isize;
                    if R <= 2 && j + 4 <= wo && inside {
                        let mut acc = [b; 4];
                        let span = 3 * st * c + run;
                        for a in 0..k {
                            let Some(ii) = g.row(i, a) else { continue };
                            let base = (ii * wd + lo) * c;
                            let xs = &xe[base..base + span];
                            let rows = &w[a * run * d..(a + 1) * run * d];
                            for (t, wr) in rows.chunks_exact(d).enumerate() {
                                let wv = load_regs::<R>(wr);
                                for (q, acc) in acc.iter_mut().enumerate() {
                                    let vb = _mm256_set1_ps(xs[q * st * c + t]);
                                    for (acc, wv) in acc.iter_mut().zip(&wv) {
                                        *acc = _mm256_fmadd_ps(vb, *wv, *acc);
                                    }
                                }
                            }
                        }
                        for (q, acc) in acc.iter().enumerate() {
                            store_regs(acc, &mut ye[(i * wo + j + q) * d..]);
                        }
                        j += 4;
                        continue;
                    }
                    let mut acc = b;
                    let skip = (lo as isize - j0) as usize * c;
                    let len = (hi - lo) * c;
                    for a in (0..k).filter(|_| hi > lo) {
                        let Some(ii) = g.row(i, a) else { continue };
                        let start = (ii * wd + lo) * c;
                        let w0 = (a * run + skip) * d;
                        let rows = &w[w0..w0 + len * d];
                        for (&v, wr) in xe[start..start + len].iter().zip(rows.chunks_exact(d)) {
                            fma_regs(&mut acc, _mm256_set1_ps(v), wr);
                        }
                    }
                    store_regs(&acc, &mut ye[(i * wo + j) * d..]);
                    j += 1;
                }
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn matmul_tn_acc(
        m: usize,
        k: usize,
        n: usize,
        a: &[f32],
        d: &[f32],
        g: &mut [f32],
    ) {
        assert!(a.len() == m * k && d.len() == m * n && g.len() == k * n);
        let (a, d, g) = (a.as_ptr(), d.as_ptr(), g.as_mut_ptr());
        // SAFETY: AVX2 and FMA are enabled for this function; every block below lies within
        // the three slices, whose lengths were checked above.
        unsafe {
            let mut t0 = 0;
            while t0 < m {
                let rows = CHUNK.min(m - t0);
                let (a, d) = (a.add(t0 * k), d.add(t0 * n));
                let mut p = 0;
                while p + MR <= k {
                    cols_tn::<MR>(rows, k, n, a.add(p), d, g.add(p * n));
                    p += MR;
                }
                let (ap, gp) = (a.add(p), g.add(p * n));
                match k - p {
                    1 => cols_tn::<1>(rows, k, n, ap, d, gp),
                    2 => cols_tn::<2>(rows, k, n, ap, d, gp),
                    3 => cols_tn::<3>(rows, k, n, ap, d, gp),
                    4 => cols_tn::<4>(rows, k, n, ap, d, gp),
                    5 => cols_tn::<5>(rows, k, n, ap, d, gp),
                    _ => {}
                }
                t0 += rows;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;
    use rand::{Rng, SeedableRng};

    fn random(rng: &mut rand_chacha::ChaCha8Rng, r: usize, c: usize) -> Array2<f32> {
        Array2::from_shape_fn((r, c), |_| rng.gen_range(-1.0..1.0))
    }

    fn naive(a: &Array2<f32>, b: &Array2<f32>) -> Array2<f32> {
        let mut c = Array2::zeros((a.nrows(), b.ncols()));
        for i in 0..a.nrows() {
            for j in 0..b.ncols() {
                c[[i, j]] = (0..a.ncols())
                    .map(|p| a[[i, p]] as f64 * b[[p, j]] as f64)
                    .sum::<f64>() as f32;
            }
        }
        c
    }

    fn close(x: &Array2<f32>, y: &Array2<f32>) -> bool {
        x.iter()
            .zip(y)
            .all(|(a, b)| (a - b).abs() <= 1e-4 * (1.0 + b.abs()))
    }

    /// Every remainder of the 6-row and 16-column blocks, with and without accumulation.
    #[test]
    fn products_match_a_plain_triple_loop() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for &(m, k, n) in &[
            (1, 1, 1),
            (6, 25, 16),
            (7, 25, 16),
            (13, 400, 32),
            (130, 37, 23),
            (5, 3, 8),
            (11, 9, 40),
            (70, 6, 17),
        ] {
            let a = random(&mut rng, m, k);
            let b = random(&mut rng, k, n);
            let c0 = random(&mut rng, m, n);
            let want = naive(&a, &b);
            let mut c = c0.clone();
            matmul(a.view(), b.view(), c.view_mut(), false);
            assert!(close(&c, &want), "overwrite {m}x{k}x{n}");
            let mut c = c0.clone();
            matmul(a.view(), b.view(), c.view_mut(), true);
            assert!(close(&c, &(&want + &c0)), "accumulate {m}x{k}x{n}");

            let d = random(&mut rng, m, n);
            let g0 = random(&mut rng, k, n);
            let mut g = g0.clone();
            matmul_tn_acc(a.view(), d.view(), g.view_mut());
            let want = &naive(&a.t().to_owned(), &d) + &g0;
            assert!(close(&g, &want), "transposed {m}x{k}x{n}");
        }
    }

    /// A strided view goes through ndarray and gives the same product.
    #[test]
    fn non_contiguous_views_fall_back() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        let a = random(&mut rng, 9, 20);
        let b = random(&mut rng, 10, 12);
        let a_view = a.slice(ndarray::s![.., ..;2]);
        let mut c = Array2::zeros((9, 12));
        matmul(a_view, b.view(), c.view_mut(), false);
        assert!(close(&c, &naive(&a_view.to_owned(), &b)));
    }
}
