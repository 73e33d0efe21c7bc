//! The limited-memory pairs `(sᵢ, yᵢ)` and the compact form of the BFGS matrix built from
//! them.
//!
//! The Hessian approximation is `B = θI − W M Wᵀ` with `W = [Y, θS]` (`n × 2·len`) and the
//! `2·len × 2·len` middle matrix `M = [[−D, Lᵀ], [L, θSᵀS]]⁻¹`, where `D = diag(sᵢᵀyᵢ)` and
//! `L` is the strictly lower triangle of `SᵀY` (Byrd, Nocedal & Schnabel 1994). Only `SᵀY`,
//! `SᵀS` and a Cholesky factor of `T = θSᵀS + L D⁻¹ Lᵀ` are kept; products with `M` go through
//! them.
//!
//! Storage: the `n × 2m` pairs are interleaved per variable (`[y₀ … y_{m−1}, s₀ … s_{m−1}]` for
//! each coordinate), because every hot loop walks coordinates (often through an index set) and
//! touches all pairs of that coordinate. Pairs live in a ring of `m` slots; chronological pair
//! `j` is in slot `(head + j) % m`. While `len < m`, `head` is 0, so the used slots are always
//! `0..len` and the inner loops can run over contiguous slots, permuting only the short
//! `2·len` coefficient vectors.

use super::dense::{cholesky_upper, solve_upper, solve_upper_transposed, Singular};
use super::rows;

/// The stored pairs, in the ring described in the module docs, with their small matrices.
#[derive(Debug, Clone)]
pub(super) struct PairMemory {
    n: usize,
    m: usize,
    /// Interleaved pairs, `2m` values per coordinate (see module docs).
    rows: Vec<f64>,
    /// `SᵀY` (lower triangle used; `sty[i + j m] = sᵢᵀyⱼ`), chronological order.
    sty: Vec<f64>,
    /// `SᵀS` (upper triangle used).
    sts: Vec<f64>,
    /// Upper Cholesky factor of `T = θSᵀS + L D⁻¹ Lᵀ`.
    t_factor: Vec<f64>,
    /// `√(sᵢᵀyᵢ)` per stored pair (chronological), refreshed with `t_factor`.
    sqrt_sty: Vec<f64>,
    theta: f64,
    /// Pairs stored.
    len: usize,
    /// Slot of the oldest pair.
    head: usize,
    /// Slot of the newest pair.
    tail: usize,
    /// Pairs pushed since the last reset (tells when the ring starts to wrap).
    pushes: usize,
    /// `sᵀyⱼ` and `sⱼᵀs` by slot for a pair being pushed.
    scratch: Vec<f64>,
}

impl PairMemory {
    /// Room for `m` pairs of vectors of length `n`.
    pub(super) fn new(n: usize, m: usize) -> Self {
        PairMemory {
            n,
            m,
            rows: vec![0.0; n * 2 * m],
            sty: vec![0.0; m * m],
            sts: vec![0.0; m * m],
            t_factor: vec![0.0; m * m],
            sqrt_sty: vec![0.0; m],
            theta: 1.0,
            len: 0,
            head: 0,
            tail: 0,
            pushes: 0,
            scratch: vec![0.0; 2 * m],
        }
    }

    /// The same memory with scaling `θ` (tests of the Cauchy search without pairs).
    #[cfg(test)]
    pub(super) fn with_theta(mut self, theta: f64) -> Self {
        self.theta = theta;
        self
    }

    /// Forgets every pair; the model becomes `B = I`.
    pub(super) fn clear(&mut self) {
        self.len = 0;
        self.head = 0;
        self.tail = 0;
        self.theta = 1.0;
        self.pushes = 0;
    }

    /// Number of pairs stored.
    #[inline]
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Maximum number of pairs (`m`).
    #[inline]
    pub(super) fn capacity(&self) -> usize {
        self.m
    }

    /// The scaling `θ = yᵀy / sᵀy` of the newest pair (1 without pairs).
    #[inline]
    pub(super) fn theta(&self) -> f64 {
        self.theta
    }

    /// Ring slot of chronological pair `j` (0 is the oldest).
    #[inline]
    pub(super) fn slot(&self, j: usize) -> usize {
        (self.head + j) % self.m
    }

    /// More pairs were pushed since the last reset than the ring holds, so the newest push
    /// dropped the oldest pair.
    #[inline]
    pub(super) fn has_wrapped(&self) -> bool {
        self.pushes > self.m
    }

    /// The interleaved rows: `rows()[k·2m + slot]` is `y` of that slot at coordinate `k`,
    /// `rows()[k·2m + m + slot]` its `s`.
    #[inline]
    pub(super) fn rows(&self) -> &[f64] {
        &self.rows
    }

    /// `sᵢᵀyⱼ` for chronological pairs `i ≥ j`.
    #[inline]
    pub(super) fn sty(&self, i: usize, j: usize) -> f64 {
        self.sty[i + j * self.m]
    }

    /// `sᵢᵀsⱼ` for chronological pairs `i ≤ j`.
    #[inline]
    pub(super) fn sts(&self, i: usize, j: usize) -> f64 {
        self.sts[i + j * self.m]
    }

    /// `p = M v` for the middle matrix, through the factors of `SᵀY` and `T = J Jᵀ`
    /// (the reference's `bmv`).
    ///
    /// `M⁻¹ = [[D^½, 0], [−L D^−½, J]] · [[−D^½, D^−½ Lᵀ], [0, Jᵀ]]`, so two block-triangular
    /// solves suffice. `√(sᵢᵀyᵢ)` is kept by [`factor_t`](Self::factor_t) because the Cauchy
    /// search calls this once per breakpoint.
    pub(super) fn middle_times(&self, v: &[f64], p: &mut [f64]) -> Result<(), Singular> {
        let (m, col) = (self.m, self.len);
        let (sy, dsqrt, wt) = (&self.sty, &self.sqrt_sty, &self.t_factor);
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

    /// Stores the pair `(s, y)` and updates `SᵀY`, `SᵀS` and θ (the reference's `matupd`).
    /// `s = stp·d` is already scaled; `dtd = dᵀd` is from before the scaling, `sty = sᵀy` and
    /// `yty = yᵀy`.
    pub(super) fn push(&mut self, s: &[f64], y: &[f64], yty: f64, sty: f64, stp: f64, dtd: f64) {
        let m = self.m;
        let m2 = 2 * m;
        let n = self.n;
        self.pushes += 1;
        if self.pushes <= m {
            self.len = self.pushes;
            self.tail = (self.head + self.pushes - 1) % m;
        } else {
            self.tail = (self.tail + 1) % m;
            self.head = (self.head + 1) % m;
        }
        let col = self.len;
        let tail = self.tail;
        self.theta = yty / sty;

        if self.pushes > m {
            // Drop the oldest pair from the small matrices.
            for j in 0..col - 1 {
                for i in 0..=j {
                    self.sts[i + j * m] = self.sts[(i + 1) + (j + 1) * m];
                }
                for i in j..col - 1 {
                    self.sty[i + j * m] = self.sty[(i + 1) + (j + 1) * m];
                }
            }
        }
        // Store the pair and, in the same pass, the new row of SᵀY and column of SᵀS.
        // acc[..m] collects sᵀy_j, acc[m..2m] collects s_jᵀs, both by slot.
        let acc = &mut self.scratch[..m2];
        acc.iter_mut().for_each(|v| *v = 0.0);
        for ((row, &yi), &si) in self.rows.chunks_exact_mut(m2).zip(&y[..n]).zip(&s[..n]) {
            row[tail] = yi;
            row[m + tail] = si;
        }
        rows::accumulate(&self.rows, m2, s[..n].iter().copied().enumerate(), acc);
        let (a, bb) = acc.split_at(m);
        for j in 0..col - 1 {
            let slot = (self.head + j) % m;
            self.sty[(col - 1) + j * m] = a[slot];
            self.sts[j + (col - 1) * m] = bb[slot];
        }
        self.sts[(col - 1) + (col - 1) * m] = if stp == 1.0 { dtd } else { stp * stp * dtd };
        self.sty[(col - 1) + (col - 1) * m] = sty;
    }

    /// Forms and factorises `T = θSᵀS + L D⁻¹ Lᵀ` (upper triangle, then Cholesky; the
    /// reference's `formt`).
    pub(super) fn factor_t(&mut self) -> Result<(), Singular> {
        let m = self.m;
        let col = self.len;
        let theta = self.theta;
        for j in 0..col {
            self.t_factor[j * m] = theta * self.sts[j * m];
            self.sqrt_sty[j] = self.sty[j + j * m].sqrt();
        }
        for i in 1..col {
            for j in i..col {
                let mut sum = 0.0;
                for k in 0..i {
                    sum += self.sty[i + k * m] * self.sty[j + k * m] / self.sty[k + k * m];
                }
                self.t_factor[i + j * m] = sum + theta * self.sts[i + j * m];
            }
        }
        cholesky_upper(&mut self.t_factor, m, 0, col)
    }

    /// Replaces every `y` by `y + δ·s` (exact for an objective that gained `δ/2·‖x‖²`), with
    /// `SᵀY`, θ and `T`. Returns false, leaving the pairs unusable until [`clear`](Self::clear),
    /// if a pair lost positive curvature or `T` cannot be factorised.
    pub(super) fn shift(&mut self, delta: f64) -> bool {
        let (m, m2, col) = (self.m, 2 * self.m, self.len);
        let slots: Vec<usize> = (0..col).map(|j| self.slot(j)).collect();
        let mut yy = vec![0.0; col];
        for row in self.rows.chunks_exact_mut(m2) {
            for (j, &s) in slots.iter().enumerate() {
                let y = row[s] + delta * row[m + s];
                row[s] = y;
                yy[j] += y * y;
            }
        }
        // sty[i + j m] = sᵢᵀyⱼ (i ≥ j); sts[j + i m] = sⱼᵀsᵢ (j ≤ i).
        for j in 0..col {
            for i in j..col {
                self.sty[i + j * m] += delta * self.sts[j + i * m];
            }
        }
        let positive = (0..col).all(|j| {
            let sty = self.sty[j + j * m];
            sty > f64::EPSILON * yy[j] && sty.is_finite()
        });
        if !positive {
            return false;
        }
        self.theta = yy[col - 1] / self.sty[(col - 1) + (col - 1) * m];
        self.factor_t().is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::super::dense::dot;
    use super::*;

    #[test]
    fn middle_product_inverts_the_middle_matrix() {
        // One pair: M⁻¹ = [[-sᵀy, 0], [0, θ sᵀs]].
        let (sty, sts, theta): (f64, f64, f64) = (2.0, 3.0, 0.5);
        let mut pairs = PairMemory::new(1, 2);
        pairs.len = 1;
        pairs.theta = theta;
        pairs.sty[0] = sty;
        pairs.sqrt_sty[0] = sty.sqrt();
        pairs.t_factor[0] = (theta * sts).sqrt();
        let v = [1.0, 1.0];
        let mut p = [0.0; 2];
        pairs.middle_times(&v, &mut p).unwrap();
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
        let mut plain = PairMemory::new(n, m);
        let mut direct = PairMemory::new(n, m);
        for _ in 0..5 {
            let s: Vec<f64> = (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect();
            // y = A s with A = diag(1..n): positive curvature.
            let y: Vec<f64> = (0..n).map(|i| (i + 1) as f64 * s[i]).collect();
            let y2: Vec<f64> = (0..n).map(|i| y[i] + delta * s[i]).collect();
            for (p, y) in [(&mut plain, &y), (&mut direct, &y2)] {
                p.push(&s, y, dot(y, y), dot(&s, y), 1.0, dot(&s, &s));
                p.factor_t().unwrap();
            }
        }
        assert!(plain.shift(delta));
        assert_eq!(plain.len(), direct.len());
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
                    close(plain.sty[i + j * m], direct.sty[i + j * m]),
                    "sty({i},{j})"
                );
            }
            for i in 0..=j {
                assert!(
                    close(plain.sts[i + j * m], direct.sts[i + j * m]),
                    "sts({i},{j})"
                );
                assert!(
                    close(plain.t_factor[i + j * m], direct.t_factor[i + j * m]),
                    "t_factor({i},{j})"
                );
            }
        }
        for (a, b) in plain.rows.iter().zip(&direct.rows) {
            assert!(close(*a, *b));
        }
        // A shift that destroys positive curvature is reported.
        assert!(!plain.shift(-100.0));
    }
}
