//! The few dense kernels the compact representation needs, on small column-major matrices.
//!
//! Element `(i, j)` of a matrix with leading dimension `ld` whose top-left corner sits at
//! `(off, off)` of the storage is `a[off + i + (off + j) * ld]`. Working in place on blocks of
//! one buffer is what lets the solver keep every small matrix preallocated.

/// A zero or negative pivot: the matrix was not (numerically) positive definite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Singular;

#[inline]
fn at(ld: usize, off: usize, i: usize, j: usize) -> usize {
    off + i + (off + j) * ld
}

/// Cholesky factorisation `A = RᵀR` of the leading `n × n` block, `R` overwriting the upper
/// triangle (LINPACK `dpofa` order, so results match the reference code closely).
pub(crate) fn cholesky_upper(
    a: &mut [f64],
    ld: usize,
    off: usize,
    n: usize,
) -> Result<(), Singular> {
    for j in 0..n {
        let mut s = 0.0;
        for k in 0..j {
            let mut dot = 0.0;
            for i in 0..k {
                dot += a[at(ld, off, i, k)] * a[at(ld, off, i, j)];
            }
            let t = (a[at(ld, off, k, j)] - dot) / a[at(ld, off, k, k)];
            a[at(ld, off, k, j)] = t;
            s += t * t;
        }
        s = a[at(ld, off, j, j)] - s;
        if s <= 0.0 || !s.is_finite() {
            return Err(Singular);
        }
        a[at(ld, off, j, j)] = s.sqrt();
    }
    Ok(())
}

fn check_diagonal(a: &[f64], ld: usize, off: usize, n: usize) -> Result<(), Singular> {
    if (0..n).any(|j| a[at(ld, off, j, j)] == 0.0) {
        Err(Singular)
    } else {
        Ok(())
    }
}

/// Solves `Rᵀ x = b` in place for upper-triangular `R` (forward substitution).
pub(crate) fn solve_upper_transposed(
    a: &[f64],
    ld: usize,
    off: usize,
    n: usize,
    b: &mut [f64],
) -> Result<(), Singular> {
    check_diagonal(a, ld, off, n)?;
    for j in 0..n {
        let mut dot = 0.0;
        for i in 0..j {
            dot += a[at(ld, off, i, j)] * b[i];
        }
        b[j] = (b[j] - dot) / a[at(ld, off, j, j)];
    }
    Ok(())
}

/// Solves `R x = b` in place for upper-triangular `R` (back substitution by columns).
pub(crate) fn solve_upper(
    a: &[f64],
    ld: usize,
    off: usize,
    n: usize,
    b: &mut [f64],
) -> Result<(), Singular> {
    check_diagonal(a, ld, off, n)?;
    for j in (0..n).rev() {
        b[j] /= a[at(ld, off, j, j)];
        let bj = b[j];
        for i in 0..j {
            b[i] -= bj * a[at(ld, off, i, j)];
        }
    }
    Ok(())
}

/// `aᵀb` over the shorter length.
#[inline]
pub(super) fn dot(a: &[f64], b: &[f64]) -> f64 {
    // Four accumulators let the compiler vectorise without reassociating a single sum.
    let n = a.len().min(b.len());
    let (mut s0, mut s1, mut s2, mut s3) = (0.0, 0.0, 0.0, 0.0);
    let chunks = n / 4;
    for c in 0..chunks {
        let i = 4 * c;
        s0 += a[i] * b[i];
        s1 += a[i + 1] * b[i + 1];
        s2 += a[i + 2] * b[i + 2];
        s3 += a[i + 3] * b[i + 3];
    }
    let mut s = (s0 + s1) + (s2 + s3);
    for i in 4 * chunks..n {
        s += a[i] * b[i];
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cholesky_and_solves_agree_with_a_known_system() {
        // A = [[4, 2], [2, 3]] stored with ld 3 at offset 1 of a 3x3 buffer.
        let ld = 3;
        let mut a = vec![0.0; 9];
        a[at(ld, 1, 0, 0)] = 4.0;
        a[at(ld, 1, 0, 1)] = 2.0;
        a[at(ld, 1, 1, 1)] = 3.0;
        cholesky_upper(&mut a, ld, 1, 2).unwrap();
        // Solve A x = b via Rᵀ R x = b with b = A [1, -1] = [2, -1].
        let mut b = [2.0, -1.0];
        solve_upper_transposed(&a, ld, 1, 2, &mut b).unwrap();
        solve_upper(&a, ld, 1, 2, &mut b).unwrap();
        assert!((b[0] - 1.0).abs() < 1e-14 && (b[1] + 1.0).abs() < 1e-14);
    }

    #[test]
    fn indefinite_matrix_is_reported() {
        let mut a = vec![1.0, 2.0, 2.0, 1.0];
        assert_eq!(cholesky_upper(&mut a, 2, 0, 2), Err(Singular));
    }
}
