// Over 700 lines on purpose: one concept, the operator norm of a convolution, computed two ways
// (Fourier blocks and power iteration) on one shared geometry, plus 185 lines of tests that
// check both against the dense matrix of the same convolution.
//! Operator norms of multi-channel 2-D convolutions (paper §4.3).
//!
//! # Layout
//!
//! The network's own layout (that of [`Conv2d`](crate::nn::Conv2d)), so a layer's kernel is
//! passed as it is stored. A kernel is an [`ArrayView4<f32>`] of shape `(kh, kw, C, D)`
//! (kernel rows, kernel columns, input channels, output channels): the layer's `(k·k·C) × D`
//! [`weight`](crate::nn::Conv2d::weight) matrix with its rows split into `(a, b, c)`, which
//! [`Conv2d::kernel`](crate::nn::Conv2d::kernel) returns. An input is `(H, W, C)` and an output
//! `(H_out, W_out, D)`, row-major, channels last (one row of the network's batches). The
//! layer computes a cross-correlation (as the network and PyTorch do):
//!
//! ```text
//! y[i, j, d] = Σ_{a, b, c} K[a, b, c, d] · x[i·s + a − p, j·s + b − p, c]
//! ```
//!
//! with stride `s`. With [`Padding::Zero`]`(p)`, `x` is 0 outside the image and `H_out = (H +
//! 2p − kh)/s + 1`; with [`Padding::Circular`], indices are taken modulo `H` and `W` (with `p =
//! 0`; a circular shift of the input does not change any norm) and `H_out = H/s`.
//!
//! # The Fourier method ([`conv_operator_norm`])
//!
//! For stride Δ on an `H × W` circular grid (`H`, `W` multiples of Δ), split every input channel
//! into its Δ² polyphase components `x_{c,u,v}[m, n] = x[mΔ + u, nΔ + v, c]` on the
//! `(H/Δ) × (W/Δ)` grid. A tap `(a, b) = (qΔ + u, rΔ + v)` reads `x_{c,u,v}[i + q, j + r]`, so
//! the strided convolution is a stride-1 circular convolution from `C·Δ²` channels to `D`
//! channels with kernels `K'_{d,(c,u,v)}[q, r] = K[qΔ + u, rΔ + v, c, d]`. Taps with `q ≥ H/Δ`
//! (a kernel larger than the polyphase grid) wrap around the grid, exactly as the circular
//! operator does, so they are summed modulo the grid rather than rejected. After the 2-D DFT
//! of every component, `Y_d(ξ) = Σ_{c'} conj(K̂'_{d,c'}(ξ)) X_{c'}(ξ)` at each frequency ξ, and
//! the same DFT scaling on both sides makes the map unitarily equivalent to the block-diagonal
//! map `X(ξ) ↦ A(ξ) X(ξ)`, so
//!
//! ```text
//! ‖conv‖₂ = max_ξ σ_max(A(ξ)),   A(ξ) = [K̂'_{d,c'}(ξ)]  (D × C·Δ²), ξ on the (H/Δ)×(W/Δ) grid.
//! ```
//!
//! No extra scale factor appears. Written with the *full-grid* kernel transforms `K̂_{d,c}` at
//! ξ and its Δ² aliases `ξ + (k₁H/Δ, k₂W/Δ)` instead (the paper's form), the matrix carries a
//! factor `1/Δ` (not `Δ⁻²`); the unit tests check both forms against each other and the
//! tests in `tests/conv_spectral.rs` check the result against power iteration on the explicit
//! operator.
//!
//! For a real kernel, `A(−ξ) = conj(A(ξ))` has the same singular values, so only one frequency
//! of each conjugate pair is evaluated.
//!
//! # Zero padding
//!
//! A zero-padded convolution is the restriction of a circular one on a large enough grid (see
//! [`zero_padding_grid`]): embed the input in the grid (an isometry), convolve circularly, keep
//! the `H_out × W_out` outputs (a coordinate projection). Neither step increases the norm, so
//! the circular norm on that grid is an upper bound; [`conv_operator_norm_padded`] computes it.

use ndarray::{Array3, ArrayView4};
use ndarray_rand::rand_distr::StandardNormal;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use rustfft::num_complex::Complex;
use rustfft::FftPlanner;

use super::PowerIterationConfig;
use crate::error::{check_nonzero, Error, Result};
use crate::model::check_finite;

/// Largest number of elements any array built here may have (`2^28`): the input `C·H·W`, the
/// output `D·H_out·W_out`, and the kernel spectra `D·C·H·W` (stride included) of the Fourier
/// method. Larger requests fail with [`Error::InvalidParameter`] (name `"size"`) instead of
/// allocating.
pub const MAX_ELEMENTS: usize = 1 << 28;

/// Largest memory the Fourier method ([`conv_operator_norm`]) may use for its buffers, in bytes
/// (`2^30`, 1 GiB): the kernel spectra (`D·C·Δ²` complex values at each of the about
/// `(H/Δ)·(W/Δ)/2` frequencies evaluated, so about `8·D·C·H·W` bytes), the transform grid and
/// the list of frequencies. Checked before anything is allocated; larger requests fail with
/// [`Error::InvalidParameter`] (name `"size"`).
pub const MAX_FOURIER_BYTES: usize = 1 << 30;

/// Largest work the Fourier method may be asked for, in floating-point operations (`2^35`,
/// about ten seconds at a few Gflop/s): the transforms, about `5·D·C·H·W·log₂(H·W/Δ²)`, plus,
/// at each frequency, the Gram matrix and the eigenvalue of the `D × C·Δ²` block `A(ξ)`, about
/// `4·n²·N + 16·n³` for `n = min(D, C·Δ²)` and `N = max(D, C·Δ²)`. Larger requests fail with
/// [`Error::InvalidParameter`] (name `"work"`) before any work is done.
pub const MAX_FOURIER_WORK: f64 = (1u64 << 35) as f64;

/// Largest work of one iteration of [`conv_power_iteration`], in multiply-adds (`2^30`): the
/// direct convolution and its adjoint, `2·D·C·kh·kw·H_out·W_out`. With the iteration cap
/// ([`MAX_POWER_ITER`](super::MAX_POWER_ITER)) this bounds the whole run. Larger requests fail
/// with [`Error::InvalidParameter`] (name `"work"`).
pub const MAX_ITERATION_WORK: f64 = (1u64 << 30) as f64;

/// How a convolution treats the border of its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Padding {
    /// Indices wrap around: the input is periodic on its `H × W` grid, `H_out = H / stride`.
    Circular,
    /// The input is surrounded by this many zeros on every side (PyTorch's `padding = p`);
    /// `Zero(0)` is a "valid" convolution.
    Zero(usize),
}

/// The operator norm of a circular convolution computed by the Fourier method.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ConvNorm {
    /// The operator norm `‖x ↦ y‖₂` (largest singular value of the convolution).
    pub value: f64,
    /// How it was computed: always `"fourier"`.
    pub method: &'static str,
    /// The circular input grid `(H, W)` the norm is exact for.
    pub grid: (usize, usize),
    /// The stride Δ.
    pub stride: usize,
    /// The polyphase grid `(H/Δ, W/Δ)` on which the frequencies ξ live (also the output grid).
    pub phase_grid: (usize, usize),
    /// Size `(D, C·Δ²)` of the per-frequency matrices `A(ξ)`.
    pub matrix_shape: (usize, usize),
    /// Number of frequencies evaluated: one of each conjugate pair `{ξ, −ξ}` of the phase grid.
    pub frequencies: usize,
    /// A frequency `(row, column)` on the phase grid where the maximum is attained.
    pub argmax: (usize, usize),
}

/// The result of [`conv_power_iteration`].
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ConvNormEstimate {
    /// Estimated largest singular value (a lower bound of the true one, up to rounding).
    pub value: f64,
    /// Iterations performed.
    pub iterations: usize,
    /// The input direction stretched most, `(H, W, C)` (channels last, as the network's rows),
    /// unit norm.
    pub input: Array3<f64>,
    /// Its image divided by `value`, `(H_out, W_out, D)`, unit norm (zero if the kernel is 0).
    pub output: Array3<f64>,
}

/// The kernel's `(D, C, kh, kw)` (the order the loops below run in), once it is checked.
fn check_kernel(kernel: &ArrayView4<'_, f32>) -> Result<(usize, usize, usize, usize)> {
    let (kh, kw, c, d) = kernel.dim();
    if d == 0 || c == 0 || kh == 0 || kw == 0 {
        return Err(Error::shape(
            "convolution kernel",
            "(kh, kw, C, D) with every dimension at least 1",
            format!("({kh}, {kw}, {c}, {d})"),
        ));
    }
    check_finite(kernel.view(), "convolution kernel")?;
    Ok((d, c, kh, kw))
}

fn check_stride(stride: usize) -> Result<()> {
    check_nonzero("stride", stride)
}

fn check_image(height: usize, width: usize) -> Result<()> {
    if height == 0 || width == 0 {
        return Err(Error::shape(
            "input grid",
            "height and width at least 1",
            format!("{height} × {width}"),
        ));
    }
    Ok(())
}

fn check_multiple(height: usize, width: usize, stride: usize) -> Result<()> {
    if height % stride != 0 || width % stride != 0 {
        return Err(Error::shape(
            "circular grid",
            format!("height and width multiples of the stride {stride}"),
            format!("{height} × {width}"),
        ));
    }
    Ok(())
}

/// The product of `factors`, or an error if it overflows or exceeds [`MAX_ELEMENTS`].
fn capped_product(factors: &[usize], what: &str) -> Result<usize> {
    let total = factors
        .iter()
        .try_fold(1usize, |acc, &f| acc.checked_mul(f))
        .filter(|&t| t <= MAX_ELEMENTS);
    total.ok_or_else(|| {
        Error::param(
            "size",
            format!("{what} would have more than {MAX_ELEMENTS} elements ({factors:?})"),
        )
    })
}

/// Checks the Fourier method's memory and work against [`MAX_FOURIER_BYTES`] and
/// [`MAX_FOURIER_WORK`] for `d` output and `m = C·Δ²` polyphase input channels on the
/// `hp × wp` polyphase grid, before any of it is allocated. Frequencies are over-counted as
/// `hp·(wp/2 + 1)` (all that the conjugate-pair selection scans).
fn check_fourier_budget(d: usize, m: usize, hp: usize, wp: usize) -> Result<()> {
    let (d, m, hp, wp) = (d as u128, m as u128, hp as u128, wp as u128);
    let nf = hp * (wp / 2 + 1);
    // Complex values (16 bytes): grid, column buffer, spectra; frequencies (16 bytes each)
    // and singular values (8) of each.
    let bytes = 16 * (hp * wp + nf) + nf * d * m * 16 + nf * 24;
    if bytes > MAX_FOURIER_BYTES as u128 {
        return Err(Error::param(
            "size",
            format!(
                "the Fourier method would need {bytes} bytes for {d} × {m} blocks at {nf} \
                 frequencies of a {hp} × {wp} grid, more than {MAX_FOURIER_BYTES}"
            ),
        ));
    }
    let (d, m, hp, wp, nf) = (d as f64, m as f64, hp as f64, wp as f64, nf as f64);
    let (n, big) = (d.min(m), d.max(m));
    let transforms = 5.0 * d * m * hp * wp * ((hp * wp).log2() + 1.0);
    let blocks = nf * (4.0 * n * n * big + 16.0 * n * n * n);
    let work = transforms + blocks;
    if work > MAX_FOURIER_WORK {
        return Err(Error::param(
            "work",
            format!(
                "the Fourier method would take about {work:.3e} operations ({d} × {m} blocks \
                 at {nf} frequencies), more than {MAX_FOURIER_WORK:.3e}"
            ),
        ));
    }
    Ok(())
}

fn size_error(what: &str) -> Error {
    Error::param("size", format!("{what} overflows usize"))
}

/// The operator norm (in ℓ2) of the strided circular convolution with `kernel` on a `height ×
/// width` grid, by the paper's Fourier method (see the [module docs](self)): the maximum over
/// frequencies ξ of the largest singular value of the `D × C·stride²` matrix `A(ξ)` of
/// polyphase kernel transforms.
///
/// `kernel` is `(kh, kw, C, D)`, the network's layout (see the [module docs](self)). The map
/// is `y[i, j, d] = Σ K[a, b, c, d] · x[(i·s + a) mod H, (j·s + b) mod W, c]` for
/// `i < H/s`, `j < W/s`. Kernels larger than the polyphase grid wrap around (their taps are
/// summed modulo the grid), which is what the circular operator does. Transforms use
/// `rustfft` in f64; each `A(ξ)`'s largest singular value is the square root of the largest
/// eigenvalue of its smaller Gram matrix, computed by Householder tridiagonalisation and
/// Sturm bisection to full f64 precision. Frequencies are processed in parallel.
///
/// # Errors
///
/// - [`Error::Shape`] if a kernel dimension is 0, if `height` or `width` is 0, or if either
///   is not a multiple of `stride`;
/// - [`Error::NonFinite`] if a kernel entry is NaN or infinite;
/// - [`Error::InvalidParameter`] (`"stride"`) if `stride` is 0, (`"size"`) if the input
///   `C·H·W` or the kernel spectra `D·C·H·W` would exceed [`MAX_ELEMENTS`] or the buffers
///   [`MAX_FOURIER_BYTES`], or (`"work"`) if the work would exceed [`MAX_FOURIER_WORK`].
///
/// # Example
///
/// ```
/// use blindspot::spectral::conv_operator_norm;
/// use ndarray::Array4;
///
/// // One channel, 3 × 3 box filter (shape (kh, kw, C, D)): its largest response is at the
/// // DC frequency, 9.
/// let k = Array4::<f32>::ones((3, 3, 1, 1));
/// let n = conv_operator_norm(k.view(), 8, 8, 1)?;
/// assert!((n.value - 9.0).abs() < 1e-9);
/// assert_eq!(n.argmax, (0, 0));
///
/// // Stride 2: the output grid is 4 × 4 and A(ξ) is 1 × 4.
/// let s2 = conv_operator_norm(k.view(), 8, 8, 2)?;
/// assert_eq!(s2.matrix_shape, (1, 4));
/// assert!(s2.value <= n.value + 1e-9); // subsampling the output never increases the norm
/// # Ok::<(), blindspot::Error>(())
/// ```
pub fn conv_operator_norm(
    kernel: ArrayView4<'_, f32>,
    height: usize,
    width: usize,
    stride: usize,
) -> Result<ConvNorm> {
    let (d, c, kh, kw) = check_kernel(&kernel)?;
    check_stride(stride)?;
    check_image(height, width)?;
    check_multiple(height, width, stride)?;
    capped_product(&[c, height, width], "the input")?;
    capped_product(&[d, c, height, width], "the kernel spectra")?;
    let m = c
        .checked_mul(stride)
        .and_then(|v| v.checked_mul(stride))
        .ok_or_else(|| size_error("C·stride²"))?;
    let (hp, wp) = (height / stride, width / stride);
    check_fourier_budget(d, m, hp, wp)?;

    // One representative of each conjugate pair {ξ, −ξ}; all of them have column ≤ wp/2.
    let freqs: Vec<(usize, usize)> = (0..=wp / 2)
        .flat_map(|v| (0..hp).map(move |u| (u, v)))
        .filter(|&(u, v)| (v, u) <= ((wp - v) % wp, (hp - u) % hp))
        .collect();
    let cols = wp / 2 + 1;
    let nf = freqs.len();
    let dm = d * m;

    let mut planner = FftPlanner::<f64>::new();
    let fft_rows = planner.plan_fft_forward(wp);
    let fft_cols = planner.plan_fft_forward(hp);
    let zero = Complex::new(0.0, 0.0);
    let mut grid = vec![zero; hp * wp];
    let mut colbuf = vec![zero; cols * hp];
    // spectra[f · D·M + d · M + c'] = K̂'_{d,c'}(freqs[f]).
    let mut spectra = vec![zero; nf * dm];
    for dd in 0..d {
        for cc in 0..c {
            for u in 0..stride {
                for v in 0..stride {
                    grid.fill(zero);
                    for (q, a) in (u..kh).step_by(stride).enumerate() {
                        for (r, b) in (v..kw).step_by(stride).enumerate() {
                            grid[(q % hp) * wp + r % wp].re += f64::from(kernel[[a, b, cc, dd]]);
                        }
                    }
                    fft_rows.process(&mut grid);
                    for col in 0..cols {
                        for row in 0..hp {
                            colbuf[col * hp + row] = grid[row * wp + col];
                        }
                    }
                    fft_cols.process(&mut colbuf);
                    let cp = (cc * stride + u) * stride + v;
                    for (f, &(fu, fv)) in freqs.iter().enumerate() {
                        spectra[f * dm + dd * m + cp] = colbuf[fv * hp + fu];
                    }
                }
            }
        }
    }

    let sigmas: Vec<f64> = spectra
        .par_chunks(dm)
        .map(|a| largest_singular_value(a, d, m))
        .collect();
    let (best, value) =
        sigmas
            .iter()
            .copied()
            .enumerate()
            .fold(
                (0, f64::NEG_INFINITY),
                |acc, (i, s)| {
                    if s > acc.1 {
                        (i, s)
                    } else {
                        acc
                    }
                },
            );
    Ok(ConvNorm {
        value,
        method: "fourier",
        grid: (height, width),
        stride,
        phase_grid: (hp, wp),
        matrix_shape: (d, m),
        frequencies: nf,
        argmax: freqs[best],
    })
}

/// The circular grid `(G_h, G_w)` on which [`conv_operator_norm_padded`] bounds a zero-padded
/// convolution: per axis, with input length `n`, kernel length `k`, padding `p`, stride `s`
/// and output length `n_out = (n + 2p − k)/s + 1`,
///
/// ```text
/// G = max(n + p, n_out · s), rounded up to a multiple of s.
/// ```
///
/// Why it suffices: place the input at positions `0..n` of the grid and read tap `a` of
/// output `i` at `(i·s + a − p) mod G`. The unwrapped index `t = i·s + a − p` lies in
/// `[−p, n + p)`. Inside `[0, n)` it is the same input sample; in `[−p, 0)` it wraps to
/// `[G − p, G)`, which lies beyond the input because `G ≥ n + p`; in `[n, n + p)` it stays
/// below `G`, again beyond the input. So every product the zero-padded layer forms is one the circular layer
/// forms, and since `G ≥ n_out·s` the `n_out` outputs are distinct outputs of the circular
/// layer. The padded layer is thus "embed, convolve circularly, keep some outputs", which
/// cannot increase the norm. Left and right padding share the `p` zero positions of the
/// wrapped grid, so `n + p` (not `n + 2p`) is enough. Any larger multiple of `s` also gives a
/// valid bound, and the bound is not monotone in the grid size (the frequencies sampled
/// differ), so the minimum over several valid grids is a valid, possibly tighter, bound.
///
/// # Errors
///
/// [`Error::Shape`] if a kernel or input dimension is 0 or the kernel is larger than the
/// padded input; [`Error::InvalidParameter`] if `stride` is 0 or the sizes overflow.
pub fn zero_padding_grid(
    kernel_size: (usize, usize),
    height: usize,
    width: usize,
    stride: usize,
    padding: usize,
) -> Result<(usize, usize)> {
    check_stride(stride)?;
    check_image(height, width)?;
    let axis = |n: usize, k: usize| -> Result<usize> {
        let (_, n_out) = zero_padded_len(n, k, stride, padding)?;
        let g = n
            .checked_add(padding)
            .ok_or_else(|| size_error("the grid"))?
            .max(
                n_out
                    .checked_mul(stride)
                    .ok_or_else(|| size_error("the grid"))?,
            );
        g.div_ceil(stride)
            .checked_mul(stride)
            .ok_or_else(|| size_error("the grid"))
    };
    Ok((axis(height, kernel_size.0)?, axis(width, kernel_size.1)?))
}

/// `(n + 2p, (n + 2p − k)/s + 1)`, or an error if the kernel does not fit.
fn zero_padded_len(n: usize, k: usize, stride: usize, padding: usize) -> Result<(usize, usize)> {
    if k == 0 {
        return Err(Error::shape("convolution kernel", "size at least 1", k));
    }
    let padded = padding
        .checked_mul(2)
        .and_then(|p2| n.checked_add(p2))
        .ok_or_else(|| size_error("the padded input"))?;
    if k > padded {
        return Err(Error::shape(
            "convolution kernel",
            format!("at most the padded input size {padded} (input {n} + 2 × padding {padding})"),
            k,
        ));
    }
    Ok((padded, (padded - k) / stride + 1))
}

/// An upper bound on the operator norm of the convolution with the given padding, by the
/// Fourier method: exact for [`Padding::Circular`] (then this is [`conv_operator_norm`]); for
/// [`Padding::Zero`] the circular norm on the grid of [`zero_padding_grid`], which bounds the
/// zero-padded layer's norm from above. The grid used is reported in [`ConvNorm::grid`].
///
/// # Errors
///
/// As [`conv_operator_norm`] (with the grid of [`zero_padding_grid`] for zero padding, so
/// `height` and `width` need not then be multiples of the stride), and [`Error::Shape`] if
/// the kernel is larger than the zero-padded input.
pub fn conv_operator_norm_padded(
    kernel: ArrayView4<'_, f32>,
    height: usize,
    width: usize,
    stride: usize,
    padding: Padding,
) -> Result<ConvNorm> {
    match padding {
        Padding::Circular => conv_operator_norm(kernel, height, width, stride),
        Padding::Zero(p) => {
            let (_, _, kh, kw) = check_kernel(&kernel)?;
            let (gh, gw) = zero_padding_grid((kh, kw), height, width, stride, p)?;
            conv_operator_norm(kernel, gh, gw, stride)
        }
    }
}

/// The largest singular value of the row-major `rows × cols` complex matrix `a`.
fn largest_singular_value(a: &[Complex<f64>], rows: usize, cols: usize) -> f64 {
    let n = rows.min(cols);
    // The smaller Gram matrix: A A^H (rows ≤ cols) or A^H A; Hermitian, positive semidefinite.
    let mut g = vec![Complex::new(0.0, 0.0); n * n];
    for i in 0..n {
        for j in i..n {
            let s: Complex<f64> = if rows <= cols {
                (0..cols)
                    .map(|k| a[i * cols + k] * a[j * cols + k].conj())
                    .sum()
            } else {
                (0..rows)
                    .map(|k| a[k * cols + i].conj() * a[k * cols + j])
                    .sum()
            };
            if i == j {
                g[i * n + i] = Complex::new(s.re, 0.0);
            } else {
                g[i * n + j] = s;
                g[j * n + i] = s.conj();
            }
        }
    }
    if n == 1 {
        return g[0].re.max(0.0).sqrt();
    }
    // Real symmetric embedding [[Re G, −Im G], [Im G, Re G]]: same eigenvalues, each twice.
    let nn = 2 * n;
    let mut s = vec![0.0; nn * nn];
    for i in 0..n {
        for j in 0..n {
            let z = g[i * n + j];
            s[i * nn + j] = z.re;
            s[(i + n) * nn + j + n] = z.re;
            s[i * nn + j + n] = -z.im;
            s[(i + n) * nn + j] = z.im;
        }
    }
    let (diag, off) = tridiagonalize(&mut s, nn);
    largest_eigenvalue_tridiagonal(&diag, &off).max(0.0).sqrt()
}

/// Householder reduction of the symmetric row-major `n × n` matrix `a` (overwritten) to a
/// tridiagonal matrix with the same eigenvalues: `(diagonal, subdiagonal)`.
fn tridiagonalize(a: &mut [f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut diag = vec![0.0; n];
    let mut off = vec![0.0; n.saturating_sub(1)];
    let mut v = vec![0.0; n];
    let mut p = vec![0.0; n];
    for k in 0..n {
        if k + 2 < n {
            let xnorm = (k + 1..n).map(|i| a[i * n + k].powi(2)).sum::<f64>().sqrt();
            if xnorm > 0.0 {
                let x0 = a[(k + 1) * n + k];
                let alpha = if x0 >= 0.0 { -xnorm } else { xnorm };
                for i in k + 1..n {
                    v[i] = a[i * n + k];
                }
                v[k + 1] -= alpha;
                let vnorm = (k + 1..n).map(|i| v[i] * v[i]).sum::<f64>().sqrt();
                for vi in &mut v[k + 1..n] {
                    *vi /= vnorm;
                }
                // H A₂₂ H = A₂₂ − 2 v qᵀ − 2 q vᵀ with p = A₂₂ v, q = p − (vᵀp) v.
                for i in k + 1..n {
                    p[i] = (k + 1..n).map(|j| a[i * n + j] * v[j]).sum();
                }
                let vp: f64 = (k + 1..n).map(|i| v[i] * p[i]).sum();
                for i in k + 1..n {
                    p[i] -= vp * v[i];
                }
                for i in k + 1..n {
                    for j in k + 1..n {
                        a[i * n + j] -= 2.0 * (v[i] * p[j] + p[i] * v[j]);
                    }
                }
                off[k] = alpha;
            }
        } else if k + 1 < n {
            off[k] = a[(k + 1) * n + k];
        }
        diag[k] = a[k * n + k];
    }
    (diag, off)
}

/// The largest eigenvalue of the symmetric tridiagonal matrix (`diag`, `off`) by Sturm-count
/// bisection from its Gershgorin interval, to adjacent floating-point numbers.
fn largest_eigenvalue_tridiagonal(diag: &[f64], off: &[f64]) -> f64 {
    let n = diag.len();
    let radius = |i: usize| {
        (if i > 0 { off[i - 1].abs() } else { 0.0 }) + off.get(i).map_or(0.0, |e| e.abs())
    };
    let mut lo = (0..n)
        .map(|i| diag[i] - radius(i))
        .fold(f64::INFINITY, f64::min);
    let mut hi = (0..n)
        .map(|i| diag[i] + radius(i))
        .fold(f64::NEG_INFINITY, f64::max);
    let emax2 = off.iter().fold(0.0f64, |m, e| m.max(e * e));
    let pivmin = f64::MIN_POSITIVE * emax2.max(1.0);
    // Number of eigenvalues below x (the negative pivots of T − xI).
    let below = |x: f64| {
        let mut count = 0;
        let mut q = 1.0;
        for i in 0..n {
            q = diag[i]
                - x
                - if i > 0 {
                    off[i - 1] * off[i - 1] / q
                } else {
                    0.0
                };
            if q.abs() < pivmin {
                q = -pivmin;
            }
            if q < 0.0 {
                count += 1;
            }
        }
        count
    };
    for _ in 0..2200 {
        let mid = 0.5 * (lo + hi);
        if mid <= lo || mid >= hi {
            break;
        }
        if below(mid) == n {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    hi
}

/// Output size and index rule of one direct convolution.
struct Geometry {
    d: usize,
    c: usize,
    kh: usize,
    kw: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    stride: usize,
    padding: Padding,
}

impl Geometry {
    fn new(
        (d, c, kh, kw): (usize, usize, usize, usize),
        h: usize,
        w: usize,
        stride: usize,
        padding: Padding,
    ) -> Result<Self> {
        let (oh, ow) = match padding {
            Padding::Circular => {
                check_multiple(h, w, stride)?;
                (h / stride, w / stride)
            }
            Padding::Zero(p) => (
                zero_padded_len(h, kh, stride, p)?.1,
                zero_padded_len(w, kw, stride, p)?.1,
            ),
        };
        capped_product(&[c, h, w], "the input")?;
        capped_product(&[d, oh, ow], "the output")?;
        let work = 2.0
            * [d, c, kh, kw, oh, ow]
                .iter()
                .map(|&v| v as f64)
                .product::<f64>();
        if work > MAX_ITERATION_WORK {
            return Err(Error::param(
                "work",
                format!(
                    "one power iteration would take about {work:.3e} multiply-adds, more than \
                     {MAX_ITERATION_WORK:.3e}"
                ),
            ));
        }
        Ok(Geometry {
            d,
            c,
            kh,
            kw,
            h,
            w,
            oh,
            ow,
            stride,
            padding,
        })
    }

    /// The input index read by output `i` at tap `a` along an axis of length `n`, if any.
    fn index(&self, i: usize, a: usize, n: usize) -> Option<usize> {
        let t = i * self.stride + a;
        match self.padding {
            Padding::Circular => Some(t % n),
            Padding::Zero(p) => t.checked_sub(p).filter(|&r| r < n),
        }
    }

    /// `y = A x` for a kernel `k` laid out `(kh, kw, C, D)`, `x` `(H, W, C)` and `y`
    /// `(H_out, W_out, D)`. The loops run in `(d, i, j)` then `(c, a, b)` order whatever the
    /// layout, so every output sums its terms in the order it always has.
    fn forward(&self, k: &[f64], x: &[f64], y: &mut [f64]) {
        let (d, c, kh, kw, h, w) = (self.d, self.c, self.kh, self.kw, self.h, self.w);
        for dd in 0..d {
            for i in 0..self.oh {
                for j in 0..self.ow {
                    let mut s = 0.0;
                    for cc in 0..c {
                        for a in 0..kh {
                            let Some(r) = self.index(i, a, h) else {
                                continue;
                            };
                            for b in 0..kw {
                                let Some(col) = self.index(j, b, w) else {
                                    continue;
                                };
                                s +=
                                    k[((a * kw + b) * c + cc) * d + dd] * x[(r * w + col) * c + cc];
                            }
                        }
                    }
                    y[(i * self.ow + j) * d + dd] = s;
                }
            }
        }
    }

    /// The adjoint (transposed convolution): `x = Aᵀ y`, in the layouts and loop order of
    /// [`forward`](Self::forward).
    fn adjoint(&self, k: &[f64], y: &[f64], x: &mut [f64]) {
        let (d, c, kh, kw, h, w) = (self.d, self.c, self.kh, self.kw, self.h, self.w);
        x.fill(0.0);
        for dd in 0..d {
            for i in 0..self.oh {
                for j in 0..self.ow {
                    let yv = y[(i * self.ow + j) * d + dd];
                    for cc in 0..c {
                        for a in 0..kh {
                            let Some(r) = self.index(i, a, h) else {
                                continue;
                            };
                            for b in 0..kw {
                                let Some(col) = self.index(j, b, w) else {
                                    continue;
                                };
                                x[(r * w + col) * c + cc] +=
                                    k[((a * kw + b) * c + cc) * d + dd] * yv;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The ℓ2 norm of a channels-last map with `channels` channels, summed channel by channel
/// (channel-major): the order the estimates of [`conv_power_iteration`] have always been
/// computed in, which a plain pass over the channels-last values would change in the last bits.
fn norm(v: &[f64], channels: usize) -> f64 {
    (0..channels)
        .flat_map(|ch| v[ch..].iter().step_by(channels))
        .map(|x| x * x)
        .sum::<f64>()
        .sqrt()
}

/// The largest singular value of the convolution with `kernel` (`(kh, kw, C, D)`, the
/// network's layout; see the [module docs](self)) on a `(height, width, C)` input, by power
/// iteration on `AᵀA` with the explicit (direct, loop-based, f64) convolution
/// `A` and its adjoint, the transposed convolution. A check on [`conv_operator_norm`], not a
/// fast path.
///
/// Started from a Gaussian input drawn with the config's seed; each iteration computes
/// `u = A v`, `z = Aᵀ u`, `v ← z / ‖z‖` and stops when the estimate `‖A v‖` changes by at
/// most `tol` relative to itself. The estimate never decreases and never exceeds the true norm (up to rounding);
/// when the top singular values are close, the stopping rule can fire before the remaining
/// error is below `tol`.
///
/// # Errors
///
/// - [`Error::Shape`] if a kernel or input dimension is 0, if the kernel is larger than the
///   zero-padded input, or (circular padding) if `height` or `width` is not a multiple of
///   `stride`;
/// - [`Error::NonFinite`] if a kernel entry is NaN or infinite;
/// - [`Error::InvalidParameter`] if `stride` is 0, (`"size"`) the input or output would
///   exceed [`MAX_ELEMENTS`], or (`"work"`) one iteration would exceed
///   [`MAX_ITERATION_WORK`];
/// - [`Error::NotConverged`] with the last estimate if the change is still above `tol` after
///   `max_iter` iterations.
pub fn conv_power_iteration(
    kernel: ArrayView4<'_, f32>,
    height: usize,
    width: usize,
    stride: usize,
    padding: Padding,
    config: &PowerIterationConfig,
) -> Result<ConvNormEstimate> {
    let (tol, max_iter, seed) = (config.tol, config.max_iter, config.seed);
    let dims = check_kernel(&kernel)?;
    check_stride(stride)?;
    check_image(height, width)?;
    let g = Geometry::new(dims, height, width, stride, padding)?;
    let k: Vec<f64> = kernel.iter().map(|&v| f64::from(v)).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // Drawn channel by channel, so a seed gives the start (and estimate) it always has.
    let hw = g.h * g.w;
    let mut v = vec![0.0; g.c * hw];
    for cc in 0..g.c {
        for pos in 0..hw {
            v[pos * g.c + cc] = rng.sample::<f64, _>(StandardNormal);
        }
    }
    let n0 = norm(&v, g.c);
    let scale = if n0 > 0.0 { 1.0 / n0 } else { 0.0 };
    v.iter_mut().for_each(|x| *x *= scale);
    if n0 == 0.0 {
        let len = v.len() as f64;
        v.fill(1.0 / len.sqrt());
    }
    let mut u = vec![0.0; g.d * g.oh * g.ow];
    let mut z = vec![0.0; v.len()];
    let finish = |value: f64, iterations: usize, v: Vec<f64>, mut u: Vec<f64>| {
        let inv = if value > 0.0 { 1.0 / value } else { 0.0 };
        u.iter_mut().for_each(|x| *x *= inv);
        ConvNormEstimate {
            value,
            iterations,
            input: Array3::from_shape_vec((g.h, g.w, g.c), v).expect("length h·w·c"),
            output: Array3::from_shape_vec((g.oh, g.ow, g.d), u).expect("length oh·ow·d"),
        }
    };
    let mut prev = 0.0;
    for it in 1..=max_iter {
        g.forward(&k, &v, &mut u);
        let sigma = norm(&u, g.d);
        g.adjoint(&k, &u, &mut z);
        let zn = norm(&z, g.c);
        if zn == 0.0 {
            // A v = 0 from a Gaussian start (or its images under AᵀA): A itself is 0.
            return Ok(finish(0.0, it, v, u));
        }
        if it > 1 && (sigma - prev).abs() <= tol * sigma {
            return Ok(finish(sigma, it, v, u));
        }
        prev = sigma;
        v.iter_mut().zip(&z).for_each(|(vi, zi)| *vi = zi / zn);
    }
    Err(Error::NotConverged {
        what: "convolution power iteration",
        iterations: max_iter,
        tolerance: tol,
        last_estimate: prev,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array4;

    fn random_kernel(shape: (usize, usize, usize, usize), seed: u64) -> Array4<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        Array4::from_shape_simple_fn(shape, || rng.sample::<f32, _>(StandardNormal))
    }

    #[test]
    fn largest_singular_value_of_known_matrices() {
        let c = |re: f64, im: f64| Complex::new(re, im);
        // diag(3, 5i) as 2 × 2, plus a zero third column (tall and wide both covered below).
        let a = [
            c(3.0, 0.0),
            c(0.0, 0.0),
            c(0.0, 0.0),
            c(0.0, 0.0),
            c(0.0, 5.0),
            c(0.0, 0.0),
        ];
        assert!((largest_singular_value(&a, 2, 3) - 5.0).abs() < 1e-12);
        // Its transpose (3 × 2).
        let t = [
            c(3.0, 0.0),
            c(0.0, 0.0),
            c(0.0, 0.0),
            c(0.0, 5.0),
            c(0.0, 0.0),
            c(0.0, 0.0),
        ];
        assert!((largest_singular_value(&t, 3, 2) - 5.0).abs() < 1e-12);
        // Rank one: u vᴴ with ‖u‖ = √2, ‖v‖ = √5.
        let r = [c(1.0, 0.0), c(0.0, 2.0), c(0.0, 1.0), c(-2.0, 0.0)];
        assert!((largest_singular_value(&r, 2, 2) - 10f64.sqrt()).abs() < 1e-12);
        // Zero matrix.
        assert_eq!(largest_singular_value(&[c(0.0, 0.0); 6], 2, 3), 0.0);
    }

    #[test]
    fn tridiagonal_bisection_matches_power_iteration_on_random_symmetric() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for n in [2usize, 3, 7, 12] {
            let mut a = vec![0.0; n * n];
            for i in 0..n {
                for j in i..n {
                    let x: f64 = rng.sample(StandardNormal);
                    a[i * n + j] = x;
                    a[j * n + i] = x;
                }
            }
            // Make it positive definite with a clear top eigenvalue: B = AᵀA + I.
            let mut b = vec![0.0; n * n];
            for i in 0..n {
                for j in 0..n {
                    b[i * n + j] = (0..n).map(|k| a[k * n + i] * a[k * n + j]).sum::<f64>()
                        + if i == j { 1.0 } else { 0.0 };
                }
            }
            let mut v = vec![1.0; n];
            let mut lambda = 0.0;
            for _ in 0..20_000 {
                let w: Vec<f64> = (0..n)
                    .map(|i| (0..n).map(|j| b[i * n + j] * v[j]).sum())
                    .collect();
                lambda = norm(&w, 1) / norm(&v, 1);
                let wn = norm(&w, 1);
                v = w.iter().map(|x| x / wn).collect();
            }
            let mut bc = b.clone();
            let (d, e) = tridiagonalize(&mut bc, n);
            let top = largest_eigenvalue_tridiagonal(&d, &e);
            assert!(
                (top - lambda).abs() <= 1e-9 * lambda,
                "n = {n}: {top} vs {lambda}"
            );
            // The trace is preserved.
            let trace: f64 = (0..n).map(|i| b[i * n + i]).sum();
            assert!((d.iter().sum::<f64>() - trace).abs() <= 1e-9 * trace);
        }
    }

    /// The paper's form: A(ξ) built from the full-grid kernel transforms at ξ and its Δ²
    /// aliases, scaled by 1/Δ, has the same maximal singular value as the polyphase form.
    #[test]
    fn aliased_full_grid_form_needs_factor_one_over_stride() {
        let (d, c, k, h, w, s) = (3usize, 2usize, 3usize, 8usize, 6usize, 2usize);
        let kernel = random_kernel((k, k, c, d), 11);
        let (hp, wp) = (h / s, w / s);
        let tau = std::f64::consts::TAU;
        let khat = |dd: usize, cc: usize, fu: usize, fv: usize| -> Complex<f64> {
            let mut z = Complex::new(0.0, 0.0);
            for a in 0..k {
                for b in 0..k {
                    let ang = -tau * ((fu * a) as f64 / h as f64 + (fv * b) as f64 / w as f64);
                    z += Complex::from_polar(f64::from(kernel[[a, b, cc, dd]]), ang);
                }
            }
            z
        };
        let mut best: f64 = 0.0;
        let m = c * s * s;
        for fu in 0..hp {
            for fv in 0..wp {
                let mut a = vec![Complex::new(0.0, 0.0); d * m];
                for dd in 0..d {
                    for cc in 0..c {
                        for k1 in 0..s {
                            for k2 in 0..s {
                                a[dd * m + (cc * s + k1) * s + k2] =
                                    khat(dd, cc, fu + k1 * hp, fv + k2 * wp) / s as f64;
                            }
                        }
                    }
                }
                best = best.max(largest_singular_value(&a, d, m));
            }
        }
        let poly = conv_operator_norm(kernel.view(), h, w, s).unwrap();
        assert!(
            (best - poly.value).abs() <= 1e-10 * poly.value,
            "aliased {best} vs polyphase {}",
            poly.value
        );
        // The Δ⁻² scaling would be off by a factor Δ.
        assert!((best / s as f64 - poly.value).abs() > 0.1 * poly.value);
    }

    #[test]
    fn conjugate_pair_selection_counts() {
        let k = Array4::<f32>::ones((1, 1, 1, 1));
        // 4 × 4: 16 frequencies, 4 self-conjugate ((0|2, 0|2)), so (16 + 4)/2 = 10.
        assert_eq!(
            conv_operator_norm(k.view(), 4, 4, 1).unwrap().frequencies,
            10
        );
        // 3 × 5: only (0, 0) is self-conjugate: (15 + 1)/2 = 8.
        assert_eq!(
            conv_operator_norm(k.view(), 3, 5, 1).unwrap().frequencies,
            8
        );
        assert_eq!(
            conv_operator_norm(k.view(), 1, 1, 1).unwrap().frequencies,
            1
        );
    }

    #[test]
    fn adjoint_is_the_transpose() {
        let kernel = random_kernel((3, 2, 2, 3), 5);
        let kv: Vec<f64> = kernel.iter().map(|&v| f64::from(v)).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        for (h, w, s, pad) in [
            (6, 4, 2, Padding::Circular),
            (5, 7, 2, Padding::Zero(1)),
            (5, 4, 1, Padding::Zero(0)),
        ] {
            // The (kh, kw, C, D) = (3, 2, 2, 3) kernel, as Geometry's (D, C, kh, kw).
            let g = Geometry::new((3, 2, 3, 2), h, w, s, pad).unwrap();
            let x: Vec<f64> = (0..2 * h * w).map(|_| rng.sample(StandardNormal)).collect();
            let y: Vec<f64> = (0..3 * g.oh * g.ow)
                .map(|_| rng.sample(StandardNormal))
                .collect();
            let mut ax = vec![0.0; y.len()];
            let mut aty = vec![0.0; x.len()];
            g.forward(&kv, &x, &mut ax);
            g.adjoint(&kv, &y, &mut aty);
            let lhs: f64 = ax.iter().zip(&y).map(|(a, b)| a * b).sum();
            let rhs: f64 = x.iter().zip(&aty).map(|(a, b)| a * b).sum();
            assert!(
                (lhs - rhs).abs() <= 1e-10 * lhs.abs().max(1.0),
                "{lhs} vs {rhs}"
            );
        }
    }

    #[test]
    fn zero_padding_grid_rule() {
        // n + p dominates: 8 + 1 = 9 (stride 1).
        assert_eq!(zero_padding_grid((3, 3), 8, 8, 1, 1).unwrap(), (9, 9));
        // Valid convolution: the input grid itself, rounded up to the stride.
        assert_eq!(zero_padding_grid((3, 3), 8, 7, 2, 0).unwrap(), (8, 8));
        // Padding wider than the kernel: n_out · s = (5 + 8 − 3 + 1) = 11 > n + p = 9.
        assert_eq!(zero_padding_grid((3, 1), 5, 5, 1, 4).unwrap(), (11, 13));
    }
}
