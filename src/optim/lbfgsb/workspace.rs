//! Everything the solver keeps between iterations, allocated once per problem size, and the
//! two things an iteration asks of it: a point to search towards, and the new pair once the
//! line search has found a step.

use super::bounds::Bounds;
use super::cauchy::CauchySearch;
use super::dense::Singular;
use super::error::LbfgsbError;
use super::free_set::FreeSet;
use super::pairs::PairMemory;
use super::subspace::SubspaceStep;
use super::subspace_matrix::SubspaceMatrix;

/// The solver's state between iterations.
#[derive(Debug, Clone)]
pub(super) struct Workspace {
    n: usize,
    pairs: PairMemory,
    cauchy: CauchySearch,
    free_set: FreeSet,
    matrix: SubspaceMatrix,
    step: SubspaceStep,
    /// The Cauchy point, then the subspace step's point: where the line search's unit step
    /// goes.
    z: Vec<f64>,
    /// The Cauchy path's direction, then the search direction `z − x`, finally `s`.
    d: Vec<f64>,
    /// `y = g_{k+1} − g_k`.
    y: Vec<f64>,
}

/// Largest number of curvature pairs a solver may keep ([`LBfgsB::MAX_MEMORY`](super::LBfgsB)).
pub(super) const MAX_MEMORY: usize = 1000;

/// Largest workspace, in 8-byte words ([`LBfgsB::MAX_WORKSPACE`](super::LBfgsB)).
pub(super) const MAX_WORKSPACE: usize = 1 << 27;

/// The 8-byte words a workspace for `n` variables and `m` pairs holds, over-counted a little:
/// the pairs `2mn`, the `m × m` and `2m × 2m` matrices `17m²`, the length-`2m` scratch
/// vectors, and the length-`n` vectors of the Cauchy search, free set and step. `None` if it
/// overflows `usize`.
fn workspace_words(n: usize, m: usize) -> Option<usize> {
    let pairs = n.checked_mul(m)?.checked_mul(2)?;
    let matrices = m.checked_mul(m)?.checked_mul(17)?;
    pairs
        .checked_add(matrices)?
        .checked_add(m.checked_mul(20)?)?
        .checked_add(n.checked_mul(10)?)
}

/// `Ok` if a workspace for `n` variables and `m` pairs is within the budget: `1 ≤ m ≤`
/// [`MAX_MEMORY`] and at most [`MAX_WORKSPACE`] words, so that it is checked before anything
/// is allocated (a huge `m` would otherwise abort on the allocation, or wrap `2·m·n`).
///
/// # Errors
///
/// [`LbfgsbError::InvalidParameter`] named `memory`.
pub(super) fn check_size(n: usize, m: usize) -> Result<(), LbfgsbError> {
    if m == 0 {
        return Err(LbfgsbError::param("memory", "must be at least 1"));
    }
    if m > MAX_MEMORY {
        return Err(LbfgsbError::param(
            "memory",
            format!("must be at most {MAX_MEMORY}, got {m}"),
        ));
    }
    match workspace_words(n, m) {
        Some(words) if words <= MAX_WORKSPACE => Ok(()),
        _ => Err(LbfgsbError::param(
            "memory",
            format!(
                "{m} pairs of {n} variables need about 2·m·n + 17·m² words, more than the \
                 solver's {MAX_WORKSPACE}-word (1 GiB) workspace limit"
            ),
        )),
    }
}

impl Workspace {
    /// Room for problems with `n` variables and `m` pairs (within [`check_size`]).
    pub(super) fn new(n: usize, m: usize) -> Self {
        Workspace {
            n,
            pairs: PairMemory::new(n, m),
            cauchy: CauchySearch::new(n, m),
            free_set: FreeSet::new(n),
            matrix: SubspaceMatrix::new(m),
            step: SubspaceStep::new(n, m),
            z: vec![0.0; n],
            d: vec![0.0; n],
            y: vec![0.0; n],
        }
    }

    /// Was allocated for `n` variables and `m` pairs.
    pub(super) fn fits(&self, n: usize, m: usize) -> bool {
        self.n == n && self.pairs.capacity() == m
    }

    /// Number of pairs stored.
    pub(super) fn memory_len(&self) -> usize {
        self.pairs.len()
    }

    /// The scaling θ of the model.
    pub(super) fn theta(&self) -> f64 {
        self.pairs.theta()
    }

    /// Number of variables free at the last Cauchy point.
    pub(super) fn n_free(&self) -> usize {
        self.free_set.n_free()
    }

    /// The search direction `z − x` left by [`propose`](Self::propose).
    pub(super) fn direction(&self) -> &[f64] {
        &self.d
    }

    /// The point `z` at the end of the unit step.
    pub(super) fn target(&self) -> &[f64] {
        &self.z
    }

    /// Forgets all curvature pairs (used at start, after a failed line search and when a
    /// factorisation breaks down: a steepest-descent-like restart is always safe).
    pub(super) fn reset_memory(&mut self) {
        self.pairs.clear();
        self.matrix.forget_pairs();
    }

    /// Sets up the variable status for a new run; `x` must already be inside the box.
    pub(super) fn start(&mut self, b: &Bounds) {
        self.reset_memory();
        self.cauchy.reset_status(b);
        self.free_set.reset();
    }

    /// Like [`start`](Self::start) but keeps the stored pairs as the initial model, and with
    /// them the free/active partition their inner products were accumulated over.
    pub(super) fn restart(&mut self, b: &Bounds) {
        if self.pairs.len() == 0 {
            self.start(b);
            return;
        }
        // Keep the partition the inner products were built for: the first iteration then
        // updates them for the variables that change sides instead of summing over every
        // variable.
        self.free_set.keep();
        self.matrix.require_refactor();
    }

    /// Makes the stored pairs describe the objective plus `δ/2·‖x‖²`: for the same steps `s`
    /// its gradient differences are `y + δ·s` exactly. Pairs that would lose positive
    /// curvature empty the memory. Returns whether any pair is kept.
    pub(super) fn shift_curvature(&mut self, delta: f64) -> bool {
        if self.pairs.len() == 0 {
            return false;
        }
        if !delta.is_finite() {
            self.reset_memory();
            return false;
        }
        self.matrix.shift(&self.pairs, &mut self.free_set, delta);
        if !self.pairs.shift(delta) {
            self.reset_memory();
            return false;
        }
        true
    }

    /// Computes the point `z` the iteration searches towards from `x` (gradient `g`,
    /// projected-gradient norm `pg_norm`) and the direction `d = z − x`: the Cauchy point,
    /// then the subspace step from it. Without bounds the Cauchy point is skipped, since
    /// every variable is free and the subspace step from `x` is the plain L-BFGS step.
    ///
    /// An error means a factorisation broke down; the caller then resets the memory and
    /// tries again.
    pub(super) fn propose(
        &mut self,
        b: &Bounds,
        x: &[f64],
        g: &[f64],
        pg_norm: f64,
        first_iteration: bool,
    ) -> Result<(), Singular> {
        let constrained = b.is_constrained();
        let col = self.pairs.len();
        let form_k = if !constrained && col > 0 {
            self.z.copy_from_slice(x);
            self.matrix.needs_forming()
        } else {
            self.cauchy
                .compute(&self.pairs, b, x, g, pg_norm, &mut self.z, &mut self.d)?;
            // In the first iteration every variable counts as having been free before.
            let count_changes = !first_iteration && constrained;
            self.free_set.update(self.cauchy.status(), count_changes);
            self.free_set.has_changes() || self.matrix.needs_forming()
        };
        if self.free_set.n_free() > 0 && col > 0 {
            if form_k {
                self.matrix.form(&self.pairs, &self.free_set)?;
            }
            self.step.reduced_gradient(
                &self.pairs,
                &self.free_set,
                self.cauchy.c(),
                x,
                g,
                &self.z,
                constrained,
            )?;
            self.step.step(
                &self.pairs,
                &self.matrix,
                &self.free_set,
                b,
                x,
                g,
                &mut self.z,
            )?;
        } else if col > 0 && form_k {
            self.matrix.mark_stale();
        }
        for ((d, &z), &x) in self.d.iter_mut().zip(&self.z).zip(x) {
            *d = z - x;
        }
        Ok(())
    }

    /// Stores the pair of the step just taken, `s = stp·d` and `y = g_new − g_old`, unless its
    /// curvature is negligible. `slope_new = g_newᵀd`, `slope_old = g_oldᵀd` and `d_norm2 = dᵀd` come from
    /// the line search.
    pub(super) fn update_pairs(
        &mut self,
        g_old: &[f64],
        g_new: &[f64],
        stp: f64,
        slope_new: f64,
        slope_old: f64,
        d_norm2: f64,
    ) {
        let mut yty = 0.0;
        for i in 0..self.n {
            let yi = g_new[i] - g_old[i];
            self.y[i] = yi;
            yty += yi * yi;
        }
        let (sty, descent) = if stp == 1.0 {
            (slope_new - slope_old, -slope_old)
        } else {
            for v in self.d.iter_mut() {
                *v *= stp;
            }
            ((slope_new - slope_old) * stp, -slope_old * stp)
        };
        // Skip pairs whose curvature is negligible (relative to both the decrease along s and
        // |y|²): they would make the matrix nearly singular or indefinite.
        if sty <= f64::EPSILON * descent || sty <= f64::EPSILON * yty {
            self.matrix.note_update(false);
        } else {
            self.pairs.push(&self.d, &self.y, yty, sty, stp, d_norm2);
            self.matrix.note_update(true);
            if self.pairs.factor_t().is_err() {
                self.reset_memory();
            }
        }
    }
}
