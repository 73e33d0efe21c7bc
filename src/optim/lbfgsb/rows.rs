//! Kernels over the interleaved pair storage (`2m` values per coordinate, see `pairs`).
//!
//! Every hot loop of the solver either accumulates `Σ cₖ rowₖ` over a set of coordinates or
//! takes `coefᵀ rowₖ` per coordinate. These kernels are specialised at compile time for the
//! common row widths so the `2m` accumulators stay in registers across the whole pass, and they
//! always work on the full row: the lanes of unused slots hold zeros or old (finite) pairs,
//! and whatever they accumulate is never read.
//!
//! Sums are not taken in the straightforward sequential order: accumulations alternate terms
//! between two sets of accumulators and dot products use four partial sums, so that no long
//! chain of dependent additions bounds a pass. Results may therefore differ from a sequential
//! sum in the last bits. Zero coefficients are multiplied like any other: the rows are finite,
//! so they add nothing, and testing for them would cost a mispredicted branch.
//!
//! On x86-64 CPUs with AVX the same code is compiled a second time for 256-bit vectors and
//! picked at run time. Rust never contracts `a·b + c` into a fused multiply-add, so both
//! versions round identically.

/// Calls `$f::<W>` for the common widths `W = 2m`, or `$dynamic` otherwise.
macro_rules! by_width {
    ($w:expr, $f:ident, $dynamic:ident, ($($arg:expr),*)) => {
        match $w {
            2 => $f::<2>($($arg),*),
            4 => $f::<4>($($arg),*),
            6 => $f::<6>($($arg),*),
            8 => $f::<8>($($arg),*),
            10 => $f::<10>($($arg),*),
            12 => $f::<12>($($arg),*),
            14 => $f::<14>($($arg),*),
            16 => $f::<16>($($arg),*),
            20 => $f::<20>($($arg),*),
            24 => $f::<24>($($arg),*),
            30 => $f::<30>($($arg),*),
            40 => $f::<40>($($arg),*),
            _ => $dynamic($($arg),*),
        }
    };
}

/// Defines the kernel `$name`: `$fixed::<W>` for the common widths (`$dynamic` otherwise),
/// compiled a second time with AVX and that copy picked at run time when the CPU has it.
macro_rules! row_kernel {
    (
        $(#[$doc:meta])*
        fn $name:ident[$($gen:tt)*]($($arg:ident: $ty:ty),* $(,)?), width $w:ident
            => $fixed:ident | $dynamic:ident
    ) => {
        $(#[$doc])*
        #[inline]
        pub(crate) fn $name<$($gen)*>($($arg: $ty),*) {
            #[inline(always)]
            fn generic<$($gen)*>($($arg: $ty),*) {
                by_width!($w, $fixed, $dynamic, ($($arg),*))
            }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx")]
            unsafe fn avx<$($gen)*>($($arg: $ty),*) {
                generic($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            {
                if super::simd::avx() {
                    // SAFETY: the CPU supports AVX (checked just above).
                    return unsafe { avx($($arg),*) };
                }
            }
            generic($($arg),*)
        }
    };
}

row_kernel! {
    /// `acc[..w] += Σ c · rows[k]` over the `(k, c)` pairs.
    fn accumulate[I: Iterator<Item = (usize, f64)>](rows: &[f64], w: usize, items: I, acc: &mut [f64]),
        width w => accumulate_fixed | accumulate_dyn
}

#[inline(always)]
fn accumulate_fixed<const W: usize>(
    rows: &[f64],
    _w: usize,
    items: impl Iterator<Item = (usize, f64)>,
    acc: &mut [f64],
) {
    // Two sets of accumulators, taking alternate terms, halve the chain of dependent
    // additions each lane would otherwise wait on.
    let mut a: [f64; W] = acc[..W].try_into().expect("width");
    let mut b = [0.0f64; W];
    let mut items = items;
    while let Some((k0, c0)) = items.next() {
        let r0: &[f64; W] = rows[k0 * W..k0 * W + W].try_into().expect("width");
        for j in 0..W {
            a[j] += r0[j] * c0;
        }
        let Some((k1, c1)) = items.next() else {
            break;
        };
        let r1: &[f64; W] = rows[k1 * W..k1 * W + W].try_into().expect("width");
        for j in 0..W {
            b[j] += r1[j] * c1;
        }
    }
    for j in 0..W {
        acc[j] = a[j] + b[j];
    }
}

#[inline(always)]
fn accumulate_dyn<I>(rows: &[f64], w: usize, items: I, acc: &mut [f64])
where
    I: Iterator<Item = (usize, f64)>,
{
    let acc = &mut acc[..w];
    for (k, c) in items {
        for (a, &r) in acc.iter_mut().zip(&rows[k * w..k * w + w]) {
            *a += r * c;
        }
    }
}

/// `Σⱼ row[j]·coef[j]` over the whole row. Coefficients of unused slots are zero (and the
/// rows finite), so they add nothing. Four partial sums: the terms of one row form a short
/// tree instead of one serial chain of additions, whose latency would bound the whole pass.
#[inline(always)]
fn row_dot_fixed<const W: usize>(coef: &[f64; W], row: &[f64; W]) -> f64 {
    let mut s = [0.0f64; 4];
    for j in 0..W {
        s[j % 4] += row[j] * coef[j];
    }
    (s[0] + s[1]) + (s[2] + s[3])
}

#[inline(always)]
fn row_dot_dyn(coef: &[f64], row: &[f64]) -> f64 {
    let mut s = [0.0f64; 4];
    for (j, (&r, &c)) in row.iter().zip(coef).enumerate() {
        s[j % 4] += r * c;
    }
    (s[0] + s[1]) + (s[2] + s[3])
}

row_kernel! {
    /// For `i < r.len()`, with `k = index[i]`: `r[i] += coefᵀ rows[k]`, then
    /// `acc += r[i] · rows[k]` (the reduced gradient fused with the first product of the
    /// subspace step).
    fn dot_then_accumulate[](
        rows: &[f64],
        w: usize,
        index: &[usize],
        coef: &[f64],
        r: &mut [f64],
        acc: &mut [f64],
    ), width w => dot_then_accumulate_fixed | dot_then_accumulate_dyn
}

#[inline(always)]
fn dot_then_accumulate_fixed<const W: usize>(
    rows: &[f64],
    _w: usize,
    index: &[usize],
    coef: &[f64],
    r: &mut [f64],
    acc: &mut [f64],
) {
    let coef: &[f64; W] = coef[..W].try_into().expect("width");
    // Alternate coordinates feed two sets of accumulators (see `accumulate_fixed`).
    let mut a: [f64; W] = acc[..W].try_into().expect("width");
    let mut b = [0.0f64; W];
    let mut rc = r.chunks_exact_mut(2);
    let mut kc = index.chunks_exact(2);
    for (rr, kk) in (&mut rc).zip(&mut kc) {
        let r0: &[f64; W] = rows[kk[0] * W..kk[0] * W + W].try_into().expect("width");
        let r1: &[f64; W] = rows[kk[1] * W..kk[1] * W + W].try_into().expect("width");
        let v0 = rr[0] + row_dot_fixed(coef, r0);
        let v1 = rr[1] + row_dot_fixed(coef, r1);
        rr[0] = v0;
        rr[1] = v1;
        for j in 0..W {
            a[j] += r0[j] * v0;
            b[j] += r1[j] * v1;
        }
    }
    for (ri, &k) in rc.into_remainder().iter_mut().zip(kc.remainder()) {
        let row: &[f64; W] = rows[k * W..k * W + W].try_into().expect("width");
        let v = *ri + row_dot_fixed(coef, row);
        *ri = v;
        for j in 0..W {
            a[j] += row[j] * v;
        }
    }
    for j in 0..W {
        acc[j] = a[j] + b[j];
    }
}

#[inline(always)]
fn dot_then_accumulate_dyn(
    rows: &[f64],
    w: usize,
    index: &[usize],
    coef: &[f64],
    r: &mut [f64],
    acc: &mut [f64],
) {
    let coef = &coef[..w];
    let acc = &mut acc[..w];
    for (ri, &k) in r.iter_mut().zip(index) {
        let row = &rows[k * w..k * w + w];
        let v = *ri + row_dot_dyn(coef, row);
        *ri = v;
        for (a, &x) in acc.iter_mut().zip(row) {
            *a += x * v;
        }
    }
}

row_kernel! {
    /// For `i < r.len()`, with `k = index[i]`: `r[i] = (r[i] + coefᵀ rows[k]) · scale`.
    fn dot_update[](
        rows: &[f64],
        w: usize,
        index: &[usize],
        coef: &[f64],
        scale: f64,
        r: &mut [f64],
    ), width w => dot_update_fixed | dot_update_dyn
}

#[inline(always)]
fn dot_update_fixed<const W: usize>(
    rows: &[f64],
    _w: usize,
    index: &[usize],
    coef: &[f64],
    scale: f64,
    r: &mut [f64],
) {
    let coef: &[f64; W] = coef[..W].try_into().expect("width");
    for (rr, &k) in r.iter_mut().zip(index) {
        let row: &[f64; W] = rows[k * W..k * W + W].try_into().expect("width");
        *rr = (*rr + row_dot_fixed(coef, row)) * scale;
    }
}

#[inline(always)]
fn dot_update_dyn(
    rows: &[f64],
    w: usize,
    index: &[usize],
    coef: &[f64],
    scale: f64,
    r: &mut [f64],
) {
    let coef = &coef[..w];
    for (ri, &k) in r.iter_mut().zip(index) {
        *ri = (*ri + row_dot_dyn(coef, &rows[k * w..k * w + w])) * scale;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::needless_range_loop)]
    use super::*;

    /// Every kernel equals the plain loops, for a width with a fixed-size copy (10) and one
    /// without (18), with zero coefficients among the others.
    #[test]
    fn kernels_match_plain_loops() {
        for w in [10usize, 18] {
            let n = 37;
            let rows: Vec<f64> = (0..n * w)
                .map(|i| ((i * 31 % 17) as f64 - 8.0) / 5.0)
                .collect();
            let coef: Vec<f64> = (0..w)
                .map(|j| if j % 3 == 0 { 0.0 } else { j as f64 - 4.5 })
                .collect();
            let index: Vec<usize> = (0..n).filter(|k| k % 4 != 1).collect();
            let row = |k: usize| &rows[k * w..(k + 1) * w];
            let dot = |k: usize| row(k).iter().zip(&coef).map(|(a, b)| a * b).sum::<f64>();
            let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * (1.0 + b.abs());

            let mut acc = vec![0.5; w];
            let items = index.iter().map(|&k| (k, k as f64 * 0.25 - 3.0));
            accumulate(&rows, w, items, &mut acc);
            for j in 0..w {
                let want = 0.5
                    + index
                        .iter()
                        .map(|&k| (k as f64 * 0.25 - 3.0) * row(k)[j])
                        .sum::<f64>();
                assert!(close(acc[j], want), "accumulate w={w} j={j}");
            }

            let r0: Vec<f64> = index.iter().map(|&k| k as f64 / 7.0).collect();
            let (mut r, mut acc) = (r0.clone(), vec![0.0; w]);
            dot_then_accumulate(&rows, w, &index, &coef, &mut r, &mut acc);
            for (i, &k) in index.iter().enumerate() {
                assert!(
                    close(r[i], r0[i] + dot(k)),
                    "dot_then_accumulate w={w} r[{i}]"
                );
            }
            for j in 0..w {
                let want = index
                    .iter()
                    .enumerate()
                    .map(|(i, &k)| r[i] * row(k)[j])
                    .sum::<f64>();
                assert!(close(acc[j], want), "dot_then_accumulate w={w} acc[{j}]");
            }

            let mut r = r0.clone();
            dot_update(&rows, w, &index, &coef, 0.5, &mut r);
            for (i, &k) in index.iter().enumerate() {
                assert!(
                    close(r[i], (r0[i] + dot(k)) * 0.5),
                    "dot_update w={w} r[{i}]"
                );
            }
        }
    }
}
