//! The matrix `K` of the subspace step and the inner products it is assembled from (the
//! reference's `formk`, with `wn` and `wn1`).
//!
//! With `Z`/`A` selecting the free/active variables at the Cauchy point,
//! `K = [[−D − YᵀZZᵀY/θ, L_aᵀ − R_zᵀ], [L_a − R_z, θSᵀAAᵀS]]`, where `L_a` is the strict lower
//! triangle of `SᵀAAᵀY` and `R_z` the upper triangle of `SᵀZZᵀY`. The `O(n·m²)` part is the
//! inner products over the free and the active variables (`YᵀZZᵀY`, `SᵀZZᵀY`, `SᵀAAᵀY`,
//! `SᵀAAᵀS`), which are kept across iterations and updated for the newest pair and the
//! variables that changed sides, so that a typical iteration pays `O(changes·m²)` instead.

use super::dense::{cholesky_upper, solve_upper, solve_upper_transposed, Singular};
use super::free_set::FreeSet;
use super::pairs::PairMemory;
use super::rows;

/// How often the inner products had to be recomputed in full (lets tests prove that path is
/// exercised).
#[cfg(test)]
pub(super) static REBUILDS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// `K`'s factorisation and the inner products it is assembled from.
#[derive(Debug, Clone)]
pub(super) struct SubspaceMatrix {
    /// Factorisation of the `2·len × 2·len` matrix `K` (leading dimension `2m`).
    k_factor: Vec<f64>,
    /// The inner products `YᵀZZᵀY`, `SᵀZZᵀY`, `SᵀAAᵀY` and `SᵀAAᵀS` over the chronological
    /// pairs, as blocks of one `2m × 2m` matrix (see `rebuild` for which entry holds what).
    inner: Vec<f64>,
    /// `inner` no longer matches the stored pairs and free set and must be recomputed in
    /// full.
    inner_stale: bool,
    /// The newest pair is not yet in `inner` (it was pushed at the last update).
    new_pair: bool,
    /// `inner` is current but `K` must be factorised again (its pairs were shifted).
    refactor: bool,
    /// Accumulation scratch (`6 m²`).
    acc: Vec<f64>,
}

impl SubspaceMatrix {
    pub(super) fn new(m: usize) -> Self {
        SubspaceMatrix {
            k_factor: vec![0.0; 4 * m * m],
            inner: vec![0.0; 4 * m * m],
            inner_stale: false,
            new_pair: false,
            refactor: false,
            acc: vec![0.0; 6 * m * m],
        }
    }

    /// The pairs were forgotten: nothing is pending.
    pub(super) fn forget_pairs(&mut self) {
        self.new_pair = false;
        self.inner_stale = false;
        self.refactor = false;
    }

    /// Records whether the last update stored a pair.
    pub(super) fn note_update(&mut self, stored_pair: bool) {
        self.new_pair = stored_pair;
    }

    /// `K` must be formed again before the next subspace step even if no variable changes
    /// sides: a pair was stored, or the pairs were shifted or kept from another run.
    pub(super) fn needs_forming(&self) -> bool {
        self.new_pair || self.refactor
    }

    /// An iteration changed the pairs or the free set without forming `K`, so the next
    /// incremental update would start from out-of-date inner products.
    pub(super) fn mark_stale(&mut self) {
        self.inner_stale = true;
    }

    /// `K` must be factorised again before it is used (pairs kept from a previous run).
    pub(super) fn require_refactor(&mut self) {
        self.refactor = true;
    }

    /// Brings the inner products up to date for the stored pairs (a pair pushed after the
    /// last factorisation is still pending), then applies the shift `Y → Y + δS`. Must run
    /// before the pairs themselves are shifted: it reads `SᵀS` and the old `SᵀY`.
    pub(super) fn shift(&mut self, pairs: &PairMemory, fs: &mut FreeSet, delta: f64) {
        if !self.inner_stale {
            if self.new_pair {
                fs.forget_changes();
                self.update(pairs, fs);
                self.new_pair = false;
            }
            self.shift_inner(pairs, delta);
        }
        self.refactor = true;
    }

    /// `v = K⁻¹ v = U⁻¹ E U⁻ᵀ v` over the first `2·len` entries.
    pub(super) fn solve(&self, pairs: &PairMemory, v: &mut [f64]) -> Result<(), Singular> {
        let (m2, col) = (2 * pairs.capacity(), pairs.len());
        solve_upper_transposed(&self.k_factor, m2, 0, 2 * col, &mut v[..2 * col])?;
        for v in &mut v[..col] {
            *v = -*v;
        }
        solve_upper(&self.k_factor, m2, 0, 2 * col, &mut v[..2 * col])
    }

    /// Applies `Y → Y + δS` to the inner products in `inner` over the current partition, using
    /// `SᵀS`, `SᵀY` (before the shift) and `SᵀAAᵀS` to recover the free parts it does not
    /// store: `SᵀZZᵀS = SᵀS − SᵀAAᵀS` and, below the diagonal, `SᵀZZᵀY = SᵀY − SᵀAAᵀY`.
    fn shift_inner(&mut self, pairs: &PairMemory, delta: f64) {
        let (m, m2, col) = (pairs.capacity(), 2 * pairs.capacity(), pairs.len());
        let w1 = |i: usize, j: usize| i + j * m2;
        let ss = |i: usize, j: usize| pairs.sts(i.min(j), i.max(j));
        let ss_act = |i: usize, j: usize| self.inner[w1(m + i.max(j), m + i.min(j))];
        let ss_free = |i: usize, j: usize| ss(i, j) - ss_act(i, j);
        // sᵢᵀZZᵀyⱼ: stored for i ≤ j, recovered below the diagonal.
        let sy_free = |i: usize, j: usize| {
            if i <= j {
                self.inner[w1(m + i, j)]
            } else {
                pairs.sty(i, j) - self.inner[w1(m + i, j)]
            }
        };
        // All new values from the old ones first (once per run, so allocating is fine).
        let mut yy = Vec::with_capacity(col * (col + 1) / 2);
        for i in 0..col {
            for j in 0..=i {
                yy.push(
                    self.inner[w1(i, j)]
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
                sy.push(self.inner[w1(m + i, j)] + delta * add);
            }
        }
        let (mut yy, mut sy) = (yy.into_iter(), sy.into_iter());
        for i in 0..col {
            for j in 0..=i {
                self.inner[w1(i, j)] = yy.next().expect("one value per entry");
            }
        }
        for i in 0..col {
            for j in 0..col {
                self.inner[w1(m + i, j)] = sy.next().expect("one value per entry");
            }
        }
    }

    /// Recomputes all of `inner` from the current pairs and free set.
    fn rebuild(&mut self, pairs: &PairMemory, fs: &FreeSet) {
        let m = pairs.capacity();
        let m2 = 2 * m;
        let col = pairs.len();
        for j in 0..m2 {
            for i in 0..m2 {
                self.inner[i + j * m2] = 0.0;
            }
        }
        let slots: Vec<usize> = (0..col).map(|j| pairs.slot(j)).collect();
        let rows = pairs.rows();
        for (pos, &k) in fs.order().iter().enumerate() {
            let free = pos < fs.n_free();
            let row = &rows[k * m2..(k + 1) * m2];
            for i in 0..col {
                let (yi, si) = (row[slots[i]], row[m + slots[i]]);
                if free {
                    for j in 0..=i {
                        self.inner[i + j * m2] += yi * row[slots[j]];
                    }
                    for j in i..col {
                        self.inner[(m + i) + j * m2] += si * row[slots[j]];
                    }
                } else {
                    for j in 0..=i {
                        self.inner[(m + i) + (m + j) * m2] += si * row[m + slots[j]];
                    }
                    for j in 0..i {
                        self.inner[(m + i) + j * m2] += si * row[slots[j]];
                    }
                }
            }
        }
    }

    /// Checks the incrementally updated inner products against a full recomputation.
    #[cfg(test)]
    fn assert_matches_rebuild(&self, pairs: &PairMemory, fs: &FreeSet) {
        let mut fresh = self.clone();
        fresh.rebuild(pairs, fs);
        let (m, m2, col) = (pairs.capacity(), 2 * pairs.capacity(), pairs.len());
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
            .map(|&(i, j)| fresh.inner[i + j * m2].abs())
            .fold(1e-300, f64::max);
        for (i, j) in pairs {
            let (a, b) = (self.inner[i + j * m2], fresh.inner[i + j * m2]);
            assert!(
                (a - b).abs() <= 1e-10 * scale,
                "inner({i}, {j}): incremental {a} vs rebuilt {b} (col {col})"
            );
        }
    }

    /// Brings the inner products in `inner` up to date: in full when stale, otherwise
    /// for a newly stored pair and for the variables that entered or left the free set.
    fn update(&mut self, pairs: &PairMemory, fs: &FreeSet) {
        let m = pairs.capacity();
        let m2 = 2 * m;
        let col = pairs.len();
        let w1 = |i: usize, j: usize| i + j * m2;

        if self.inner_stale {
            #[cfg(test)]
            REBUILDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.rebuild(pairs, fs);
            self.inner_stale = false;
        } else {
            let n_old;
            if self.new_pair {
                if pairs.has_wrapped() {
                    // The oldest pair was dropped: shift the stored blocks up-left by one.
                    for jy in 0..m - 1 {
                        let js = m + jy;
                        let len = m - 1 - jy;
                        let src = w1(jy + 1, jy + 1);
                        self.inner.copy_within(src..src + len, w1(jy, jy));
                        let src = w1(js + 1, js + 1);
                        self.inner.copy_within(src..src + len, w1(js, js));
                        let src = w1(m + 1, jy + 1);
                        self.inner.copy_within(src..src + m - 1, w1(m, jy));
                    }
                }
                // New row/column for the newest pair.
                let inew = pairs.slot(col - 1);
                // Free variables: [t1, tc] = Σ ynew·row; active ones: [t3, t2] = Σ snew·row.
                let (free_acc, rest) = self.acc.split_at_mut(m2);
                let act_acc = &mut rest[..m2];
                free_acc.iter_mut().for_each(|v| *v = 0.0);
                act_acc.iter_mut().for_each(|v| *v = 0.0);
                let wyws = pairs.rows();
                let (free, active) = (fs.free(), fs.active());
                let items = free.iter().map(|&k| (k, wyws[k * m2 + inew]));
                rows::accumulate(wyws, m2, items, free_acc);
                let items = active.iter().map(|&k| (k, wyws[k * m2 + m + inew]));
                rows::accumulate(wyws, m2, items, act_acc);
                let (t1, tc) = free_acc.split_at(m);
                let (t3, t2) = act_acc.split_at(m);
                let (iy, is) = (col - 1, m + col - 1);
                for jy in 0..col {
                    let s = pairs.slot(jy);
                    self.inner[w1(iy, jy)] = t1[s];
                    self.inner[w1(is, m + jy)] = t2[s];
                    self.inner[w1(is, jy)] = t3[s];
                }
                for i in 0..col {
                    let s = pairs.slot(i);
                    self.inner[w1(m + i, col - 1)] = tc[s];
                }
                n_old = col - 1;
            } else {
                n_old = col;
            }

            // Older entries: add the variables that became free, remove those that left.
            if n_old > 0 && fs.has_changes() {
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
                    for (j, v) in s.iter_mut().enumerate().take(n_old.min(64)) {
                        *v = pairs.slot(j);
                    }
                    s
                };
                let slot_of = |j: usize| {
                    if j < 64 {
                        slots[j]
                    } else {
                        pairs.slot(j)
                    }
                };
                let accumulate = |set: &[usize], yy: &mut [f64], ss: &mut [f64], sy: &mut [f64]| {
                    for &k in set {
                        let row = &pairs.rows()[k * m2..(k + 1) * m2];
                        for i in 0..n_old {
                            let si = slot_of(i);
                            let (yi, s_i) = (row[si], row[m + si]);
                            for j in 0..n_old {
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
                accumulate(fs.entering(), eyy, ess, esy);
                accumulate(fs.leaving(), lyy, lss, lsy);
                for iy in 0..n_old {
                    for jy in 0..=iy {
                        let e = iy + jy * m;
                        self.inner[w1(iy, jy)] += eyy[e] - lyy[e];
                        self.inner[w1(m + iy, m + jy)] += -ess[e] + lss[e];
                    }
                }
                for is in 0..n_old {
                    for jy in 0..n_old {
                        let e = is + jy * m;
                        if is <= jy {
                            self.inner[w1(m + is, jy)] += esy[e] - lsy[e];
                        } else {
                            self.inner[w1(m + is, jy)] += -esy[e] + lsy[e];
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
    pub(super) fn form(&mut self, pairs: &PairMemory, fs: &FreeSet) -> Result<(), Singular> {
        self.update(pairs, fs);
        self.refactor = false;
        let m = pairs.capacity();
        let m2 = 2 * m;
        let col = pairs.len();
        let theta = pairs.theta();
        let w1 = |i: usize, j: usize| i + j * m2;

        #[cfg(test)]
        self.assert_matches_rebuild(pairs, fs);

        // Assemble the upper triangle of [[D + YᵀZZᵀY/θ, −L_aᵀ + R_zᵀ], [·, θSᵀAAᵀS]].
        let wn = &mut self.k_factor;
        let inner = &self.inner;
        for iy in 0..col {
            let is = col + iy;
            let is1 = m + iy;
            for jy in 0..=iy {
                let js = col + jy;
                let js1 = m + jy;
                wn[jy + iy * m2] = inner[w1(iy, jy)] / theta;
                wn[js + is * m2] = inner[w1(is1, js1)] * theta;
            }
            for jy in 0..iy {
                wn[jy + is * m2] = -inner[w1(is1, jy)];
            }
            for jy in iy..col {
                wn[jy + is * m2] = inner[w1(is1, jy)];
            }
            wn[iy + iy * m2] += pairs.sty(iy, iy);
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
}
