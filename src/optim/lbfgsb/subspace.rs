//! The subspace step: minimise the quadratic model over the variables that are free at the
//! Cauchy point, starting from it (the reference's `cmprlb` and `subsm`).
//!
//! This is the direct primal method of Byrd, Lu, Nocedal & Zhu (1995, §5.1): the reduced
//! gradient `r = −Zᵀ(B(z − x) + g)`, the Newton step `(ZᵀBZ)⁻¹ r` through the
//! Sherman–Morrison–Woodbury form `(1/θ)(I + (1/θ)ZᵀW K⁻¹ WᵀZ)` with the matrix `K` of
//! [`subspace_matrix`](super::subspace_matrix), and then the correction of Morales & Nocedal
//! (2011): project the Newton point into the box, and if that is not downhill from `x`,
//! truncate the Newton step at the first bound instead.

use super::bounds::{BoundKind, Bounds};
use super::dense::Singular;
use super::free_set::FreeSet;
use super::pairs::PairMemory;
use super::rows;
use super::subspace_matrix::SubspaceMatrix;

/// The reduced gradient, then the subspace direction, with the step's scratch.
#[derive(Debug, Clone)]
pub(super) struct SubspaceStep {
    n: usize,
    /// Reduced gradient over the free variables, then the subspace direction.
    r: Vec<f64>,
    /// Saved free components of the Cauchy point.
    cauchy_free: Vec<f64>,
    /// `WᵀZr`, then `K⁻¹WᵀZr`, chronological.
    wv: Vec<f64>,
    /// `M c` (scratch).
    v: Vec<f64>,
    /// Slot-ordered scratch.
    sv: Vec<f64>,
    /// `Wᵀ Z r` in slot order, left by `reduced_gradient` for `step`.
    zw: Vec<f64>,
}

impl SubspaceStep {
    pub(super) fn new(n: usize, m: usize) -> Self {
        SubspaceStep {
            n,
            r: vec![0.0; n],
            cauchy_free: vec![0.0; n],
            wv: vec![0.0; 2 * m],
            v: vec![0.0; 2 * m],
            sv: vec![0.0; 2 * m],
            zw: vec![0.0; 2 * m],
        }
    }

    /// Reduced gradient of the model at the Cauchy point over the free variables:
    /// `r = −Zᵀ(B(z − x) + g)`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn reduced_gradient(
        &mut self,
        pairs: &PairMemory,
        fs: &FreeSet,
        c: &[f64],
        x: &[f64],
        g: &[f64],
        z: &[f64],
        constrained: bool,
    ) -> Result<(), Singular> {
        let m = pairs.capacity();
        let col = pairs.len();
        let nfree = fs.n_free();
        let index = fs.order();
        if !constrained && col > 0 {
            self.zw.iter_mut().for_each(|v| *v = 0.0);
            for i in 0..nfree {
                self.r[i] = -g[index[i]];
            }
            let items = index[..nfree]
                .iter()
                .copied()
                .zip(self.r[..nfree].iter().copied());
            rows::accumulate(pairs.rows(), 2 * m, items, &mut self.zw);
            return Ok(());
        }
        let theta = pairs.theta();
        for (i, &k) in index[..nfree].iter().enumerate() {
            self.r[i] = -theta * (z[k] - x[k]) - g[k];
        }
        pairs.middle_times(c, &mut self.v)?;
        self.sv.iter_mut().for_each(|v| *v = 0.0);
        for j in 0..col {
            let s = pairs.slot(j);
            self.sv[s] = self.v[j];
            self.sv[m + s] = theta * self.v[col + j];
        }
        // Fused with the first pass of the subspace step, which needs Wᵀ Z r.
        self.zw.iter_mut().for_each(|v| *v = 0.0);
        rows::dot_then_accumulate(
            pairs.rows(),
            2 * m,
            &index[..nfree],
            &self.sv,
            &mut self.r[..nfree],
            &mut self.zw,
        );
        Ok(())
    }

    /// Subspace minimisation by the direct primal method: the Newton step of the model over
    /// the free variables from the Cauchy point, then, following Morales & Nocedal (2011),
    /// projected onto the box; if the projected point is not a descent direction from `x`,
    /// fall back to the longest feasible step along the Newton direction instead. `z` holds
    /// the Cauchy point on entry and the step's point on return; `k` must have been formed
    /// for the current pairs and free set, and [`reduced_gradient`](Self::reduced_gradient)
    /// must have run.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn step(
        &mut self,
        pairs: &PairMemory,
        k: &SubspaceMatrix,
        fs: &FreeSet,
        b: &Bounds,
        x: &[f64],
        g: &[f64],
        z: &mut [f64],
    ) -> Result<(), Singular> {
        let m = pairs.capacity();
        let m2 = 2 * m;
        let col = pairs.len();
        let n_free = fs.n_free();
        let theta = pairs.theta();
        let index = fs.order();
        if n_free == 0 {
            return Ok(());
        }
        // wv = Wᵀ Z r (accumulated by `reduced_gradient`, which must run first)
        for j in 0..col {
            let s = pairs.slot(j);
            self.wv[j] = self.zw[s];
            self.wv[col + j] = theta * self.zw[m + s];
        }
        // wv = K⁻¹ wv = U⁻¹ E U⁻ᵀ wv
        k.solve(pairs, &mut self.wv)?;
        // r = r/θ + Zᵀ W wv / θ²
        self.sv.iter_mut().for_each(|v| *v = 0.0);
        for j in 0..col {
            let s = pairs.slot(j);
            self.sv[s] = self.wv[j] / theta;
            self.sv[m + s] = self.wv[col + j];
        }
        let inv_theta = 1.0 / theta;
        rows::dot_update(
            pairs.rows(),
            m2,
            &index[..n_free],
            &self.sv,
            inv_theta,
            &mut self.r[..n_free],
        );

        // Try the projection of the full Newton step first.
        let mut hit_bound = false;
        for (i, &k) in index[..n_free].iter().enumerate() {
            let dk = self.r[i];
            let xk = z[k];
            self.cauchy_free[i] = xk;
            let (l, u) = (b.lower()[k], b.upper()[k]);
            z[k] = match b.kind(k) {
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
        let (zn, xn, gn) = (&z[..n], &x[..n], &g[..n]);
        let mut acc = [0.0f64; 4];
        for c in 0..n / 4 {
            for (l, a) in acc.iter_mut().enumerate() {
                let i = 4 * c + l;
                *a += (zn[i] - xn[i]) * gn[i];
            }
        }
        let mut d_dot_g = (acc[0] + acc[1]) + (acc[2] + acc[3]);
        for i in 4 * (n / 4)..n {
            d_dot_g += (zn[i] - xn[i]) * gn[i];
        }
        if d_dot_g <= 0.0 {
            return Ok(());
        }

        // Projection is uphill: restore the Cauchy point and truncate the Newton step at the
        // first bound it meets.
        for i in 0..n_free {
            z[index[i]] = self.cauchy_free[i];
        }
        let mut alpha: f64 = 1.0;
        let mut limit = alpha;
        let mut blocking = None;
        for (i, &k) in index[..n_free].iter().enumerate() {
            let dk = self.r[i];
            let kind = b.kind(k);
            if kind != BoundKind::Unbounded {
                if dk < 0.0 && kind.has_lower() {
                    let room = b.lower()[k] - z[k];
                    if room >= 0.0 {
                        limit = 0.0;
                    } else if dk * alpha < room {
                        limit = room / dk;
                    }
                } else if dk > 0.0 && kind.has_upper() {
                    let room = b.upper()[k] - z[k];
                    if room <= 0.0 {
                        limit = 0.0;
                    } else if dk * alpha > room {
                        limit = room / dk;
                    }
                }
                if limit < alpha {
                    alpha = limit;
                    blocking = Some(i);
                }
            }
        }
        if alpha < 1.0 {
            if let Some(i) = blocking {
                let k = index[i];
                let dk = self.r[i];
                if dk > 0.0 {
                    z[k] = b.upper()[k];
                    self.r[i] = 0.0;
                } else if dk < 0.0 {
                    z[k] = b.lower()[k];
                    self.r[i] = 0.0;
                }
            }
        }
        for (&k, &r) in index[..n_free].iter().zip(&self.r[..n_free]) {
            z[k] += alpha * r;
        }
        Ok(())
    }
}
