//! Which variables are free at the Cauchy point and which are held at a bound, and which of
//! them changed sides since the previous iteration (the reference's `freev`, with `index`,
//! `nfree`, `indx2`, `nenter`, `ileave`).
//!
//! The changes matter because the inner products behind the subspace matrix are sums over
//! the free (or the active) variables: updating them for the few that changed sides is much
//! cheaper than summing again over all of them.

use super::bounds::Status;

/// The free/active partition of the variables and its last change.
#[derive(Debug, Clone)]
pub(super) struct FreeSet {
    /// Free variables in `order[..n_free]`, active ones after.
    order: Vec<usize>,
    n_free: usize,
    /// Entering variables in `changed[..n_entering]`, leaving ones in
    /// `changed[leaving_start..]`.
    changed: Vec<usize>,
    n_entering: usize,
    leaving_start: usize,
    /// The partition was kept from the previous run, so the next update must record which
    /// variables enter or leave it even in a first iteration.
    kept: bool,
}

impl FreeSet {
    /// All `n` variables free.
    pub(super) fn new(n: usize) -> Self {
        FreeSet {
            order: (0..n).collect(),
            n_free: n,
            changed: vec![0; n],
            n_entering: 0,
            leaving_start: n,
            kept: false,
        }
    }

    /// Makes every variable free again, with no change recorded.
    pub(super) fn reset(&mut self) {
        let n = self.order.len();
        for (i, k) in self.order.iter_mut().enumerate() {
            *k = i;
        }
        self.n_free = n;
        self.forget_changes();
        self.kept = false;
    }

    /// Keeps the partition across runs (see [`update`](Self::update)).
    pub(super) fn keep(&mut self) {
        self.kept = true;
    }

    /// Records no variable as having changed sides.
    pub(super) fn forget_changes(&mut self) {
        self.n_entering = 0;
        self.leaving_start = self.order.len();
    }

    /// Number of free variables.
    #[inline]
    pub(super) fn n_free(&self) -> usize {
        self.n_free
    }

    /// Every variable, the free ones first.
    #[inline]
    pub(super) fn order(&self) -> &[usize] {
        &self.order
    }

    /// The free variables.
    #[inline]
    pub(super) fn free(&self) -> &[usize] {
        &self.order[..self.n_free]
    }

    /// The variables held at a bound.
    #[inline]
    pub(super) fn active(&self) -> &[usize] {
        &self.order[self.n_free..]
    }

    /// Variables that became free at the last update.
    #[inline]
    pub(super) fn entering(&self) -> &[usize] {
        &self.changed[..self.n_entering]
    }

    /// Variables that became active at the last update.
    #[inline]
    pub(super) fn leaving(&self) -> &[usize] {
        &self.changed[self.leaving_start..]
    }

    /// Some variable changed sides at the last update.
    #[inline]
    pub(super) fn has_changes(&self) -> bool {
        self.leaving_start < self.order.len() || self.n_entering > 0
    }

    /// Splits the variables by `status` (free when `≤ 0`), recording which ones changed sides
    /// if `count_changes` or the partition was kept from the previous run.
    pub(super) fn update(&mut self, status: &[Status], count_changes: bool) {
        let n = self.order.len();
        self.n_entering = 0;
        self.leaving_start = n;
        if count_changes || std::mem::take(&mut self.kept) {
            // Appends without branches (whether a variable changed side follows no pattern):
            // every candidate is written, and only the count of those that changed advances.
            // Leaving variables fill `changed` from the top down, entering ones from the
            // bottom up; a write past the current end is overwritten or left unused.
            let (order, iwhere, changed) = (&self.order[..n], &status[..n], &mut self.changed);
            let mut ileave = n;
            // While a free variable is left to examine, at least one slot below `ileave` is
            // unused, so `ileave − 1` is always a valid target.
            for &k in &order[..self.n_free] {
                changed[ileave - 1] = k;
                ileave -= (iwhere[k] > 0) as usize;
            }
            let mut nenter = 0;
            for &k in &order[self.n_free..] {
                let enters = iwhere[k] <= 0;
                if nenter < ileave {
                    changed[nenter] = k;
                }
                nenter += enters as usize;
            }
            self.leaving_start = ileave;
            self.n_entering = nenter;
        }
        // Branch-free partition: each variable is written at both candidate positions and
        // only the count on its side advances. A write into the wrong side lands either on
        // the next free slot (overwritten by the next free variable) or, once every free
        // variable has been placed, on a slot the active variables fill afterwards.
        let order = &mut self.order[..n];
        let mut nfree = 0;
        let mut iact = n;
        for (i, &w) in status[..n].iter().enumerate() {
            let free = w <= 0;
            order[nfree.min(n - 1)] = i;
            order[(iact - 1).min(n - 1)] = i;
            nfree += free as usize;
            iact -= (!free) as usize;
        }
        self.n_free = nfree;
    }
}
