//! The generalized Cauchy point: the first local minimiser of the quadratic model along the
//! projected steepest-descent path `P(x − t·g)`, found by walking the breakpoints where
//! variables reach their bounds in increasing `t` (Byrd, Lu, Nocedal & Zhu 1995, §4; the
//! reference's `cauchy`).
//!
//! On each segment between breakpoints the model is a parabola in `t` with slope `f1` and
//! curvature `f2`; the walk stops in the first segment whose minimiser lies inside it. Both
//! are updated from one breakpoint to the next through `p = Wᵀd` and `c = Wᵀ(z − x)`, so a
//! segment costs `O(m²)` plus one row of `W`, never `O(n)`.

use super::bounds::{
    Bounds, Status, AT_LOWER, AT_UPPER, FIXED, FREE, FREE_ZERO_GRADIENT, UNBOUNDED,
};
use super::breakpoints::{classify_boxed, heap_pop_min, next_breakpoint, BoxedOut, BreakScan};
use super::dense::{dot, Singular};
use super::pairs::PairMemory;
use super::rows;

/// Breakpoints after the first that the Cauchy search finds by scanning before it builds the
/// heap.
const MAX_SCANS: usize = 6;

#[cfg(test)]
thread_local! {
    /// Lets tests run the Cauchy search with the heap from the first pop on.
    static FORCE_HEAP: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

#[inline]
fn force_heap() -> bool {
    #[cfg(test)]
    return FORCE_HEAP.with(|f| f.get());
    #[cfg(not(test))]
    false
}

/// The Cauchy search's outputs that later steps read (the status of every variable and
/// `c = Wᵀ(z − x)`) and its scratch, allocated once per problem size.
#[derive(Debug, Clone)]
pub(super) struct CauchySearch {
    n: usize,
    /// Where each variable stands at the Cauchy point.
    status: Vec<Status>,
    /// Breakpoints of the moving variables, then the heap over them.
    brk: Vec<f64>,
    /// The variable of each entry of `brk`.
    order: Vec<usize>,
    /// `c = Wᵀ(z − x)`, in chronological order with the θ of `W = [Y, θS]`.
    c: Vec<f64>,
    /// `p = Wᵀd` for the current segment's direction.
    p: Vec<f64>,
    /// `M` times a vector (scratch).
    v: Vec<f64>,
    /// The row of `W` of the variable that just reached its bound.
    w_row: Vec<f64>,
    /// Slot-ordered scratch.
    sv: Vec<f64>,
}

impl CauchySearch {
    pub(super) fn new(n: usize, m: usize) -> Self {
        CauchySearch {
            n,
            status: vec![0; n],
            brk: vec![0.0; n],
            order: vec![0; n],
            c: vec![0.0; 2 * m],
            p: vec![0.0; 2 * m],
            v: vec![0.0; 2 * m],
            w_row: vec![0.0; 2 * m],
            sv: vec![0.0; 2 * m],
        }
    }

    /// Status of every variable before any Cauchy point is known.
    pub(super) fn reset_status(&mut self, b: &Bounds) {
        for i in 0..self.n {
            self.status[i] = b.initial_status(i);
        }
    }

    /// Status of every variable at the last Cauchy point.
    pub(super) fn status(&self) -> &[Status] {
        &self.status
    }

    /// `c = Wᵀ(z − x)` at the last Cauchy point (`2·len` entries).
    pub(super) fn c(&self) -> &[f64] {
        &self.c
    }

    /// Finds the Cauchy point from `x` with gradient `g` and projected-gradient norm
    /// `pg_norm`: the point goes to `z`, the path's direction with the variables that reached
    /// a bound zeroed to `d`, and `c` and the statuses are kept here. Returns the number of
    /// segments explored.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn compute(
        &mut self,
        pairs: &PairMemory,
        b: &Bounds,
        x: &[f64],
        g: &[f64],
        pg_norm: f64,
        z: &mut [f64],
        d: &mut [f64],
    ) -> Result<usize, Singular> {
        let n = self.n;
        let m = pairs.capacity();
        let col = pairs.len();
        let theta = pairs.theta();
        self.c[..2 * col].iter_mut().for_each(|v| *v = 0.0);
        if pg_norm <= 0.0 {
            z.copy_from_slice(x);
            return Ok(0);
        }
        let mut path_bounded = true;
        let mut n_unbounded_dir = 0usize;
        let mut n_breaks = 0usize;
        let mut first_break_at = 0usize;
        let mut first_break = 0.0;
        let mut f1;
        self.sv.iter_mut().for_each(|v| *v = 0.0);

        if b.is_boxed() {
            // Every variable has two finite bounds (the attack's [0,1] box): the same
            // classification without data-dependent branches, which a mix of variables at and
            // off their bounds would mispredict at every step.
            let mut scan = BreakScan::new();
            let mut out = BoxedOut::new(
                &mut self.status[..n],
                &mut d[..n],
                &mut self.brk[..n],
                &mut self.order[..n],
            );
            classify_boxed(x, g, b.lower(), b.upper(), &mut out, &mut scan);
            n_breaks = scan.count();
            (f1, first_break, first_break_at) = scan.finish(&self.brk[..n]);
        } else {
            // Same lane-wise sum of dᵢ² as the boxed pass (see `BreakScan`).
            let mut lane_dd = [0.0f64; 4];
            for i in 0..n {
                let neggi = -g[i];
                let kind = b.kind(i);
                let (mut tl, mut tu) = (0.0, 0.0);
                let w = self.status[i];
                if w != FIXED && w != UNBOUNDED {
                    if kind.has_lower() {
                        tl = x[i] - b.lower()[i];
                    }
                    if kind.has_upper() {
                        tu = b.upper()[i] - x[i];
                    }
                    let xlower = kind.has_lower() && tl <= 0.0;
                    let xupper = kind.has_upper() && tu <= 0.0;
                    let mut status = FREE;
                    if xlower {
                        if neggi <= 0.0 {
                            status = AT_LOWER;
                        }
                    } else if xupper {
                        if neggi >= 0.0 {
                            status = AT_UPPER;
                        }
                    } else if neggi.abs() <= 0.0 {
                        status = FREE_ZERO_GRADIENT;
                    }
                    self.status[i] = status;
                }
                let w = self.status[i];
                if w != FREE && w != UNBOUNDED {
                    d[i] = 0.0;
                } else {
                    d[i] = neggi;
                    lane_dd[i % 4] += neggi * neggi;
                    if kind.has_lower() && neggi < 0.0 {
                        self.order[n_breaks] = i;
                        self.brk[n_breaks] = tl / (-neggi);
                        if n_breaks == 0 || self.brk[n_breaks] < first_break {
                            first_break = self.brk[n_breaks];
                            first_break_at = n_breaks;
                        }
                        n_breaks += 1;
                    } else if kind.has_upper() && neggi > 0.0 {
                        self.order[n_breaks] = i;
                        self.brk[n_breaks] = tu / neggi;
                        if n_breaks == 0 || self.brk[n_breaks] < first_break {
                            first_break = self.brk[n_breaks];
                            first_break_at = n_breaks;
                        }
                        n_breaks += 1;
                    } else {
                        n_unbounded_dir += 1;
                        if neggi.abs() > 0.0 {
                            path_bounded = false;
                        }
                    }
                }
            }
            f1 = 0.0 - ((lane_dd[0] + lane_dd[1]) + (lane_dd[2] + lane_dd[3]));
        }
        // p = Wᵀd in chronological order, with the θ of W = [Y, θS].
        if col > 0 {
            rows::accumulate(
                pairs.rows(),
                2 * m,
                d.iter().copied().enumerate(),
                &mut self.sv,
            );
        }
        for j in 0..col {
            let s = pairs.slot(j);
            self.p[j] = self.sv[s];
            self.p[col + j] = theta * self.sv[m + s];
        }
        z.copy_from_slice(x);
        if n_breaks == 0 && n_unbounded_dir == 0 {
            // The path is a single point: x is the Cauchy point.
            return Ok(0);
        }

        // f1, f2: first and second derivative of the model along the current segment.
        let mut f2 = -theta * f1;
        let f2_org = f2;
        if col > 0 {
            pairs.middle_times(&self.p, &mut self.v)?;
            f2 -= dot(&self.v[..2 * col], &self.p[..2 * col]);
        }
        let mut dt_min = -f1 / f2;
        let mut t_total = 0.0;
        let mut n_segments = 1;
        let mut all_fixed = false;

        if n_breaks > 0 {
            let mut n_left = n_breaks;
            let mut iter = 1;
            let mut scanning = !force_heap();
            let mut tj = 0.0;
            loop {
                let tj0 = tj;
                let var;
                if iter == 1 {
                    // The smallest breakpoint is already known; often it is the only one
                    // needed, so the heap is built lazily.
                    tj = first_break;
                    var = self.order[first_break_at];
                } else {
                    // The next few breakpoints are found by scanning, which is much cheaper
                    // than building the heap when only a handful are passed. A scan gives the
                    // heap's answer whenever that answer is unique (no tie with another
                    // breakpoint); on a tie, or after `MAX_SCANS` scans, the heap is built and
                    // the pops made so far are replayed so the walk continues exactly as the
                    // reference one.
                    let mut found = None;
                    if scanning && iter - 1 <= MAX_SCANS {
                        found = next_breakpoint(&self.brk[..n_breaks], tj, iter == 2);
                    }
                    if let Some(q) = found {
                        tj = self.brk[q];
                        var = self.order[q];
                    } else {
                        if scanning {
                            scanning = false;
                            for it in 2..iter {
                                let nl = n_breaks - (it - 1);
                                if it == 2 && first_break_at != n_breaks - 1 {
                                    self.brk[first_break_at] = self.brk[n_breaks - 1];
                                    self.order[first_break_at] = self.order[n_breaks - 1];
                                }
                                heap_pop_min(&mut self.brk[..nl], &mut self.order[..nl], it == 2);
                            }
                        }
                        if iter == 2 && first_break_at != n_breaks - 1 {
                            self.brk[first_break_at] = self.brk[n_breaks - 1];
                            self.order[first_break_at] = self.order[n_breaks - 1];
                        }
                        heap_pop_min(
                            &mut self.brk[..n_left],
                            &mut self.order[..n_left],
                            iter == 2,
                        );
                        tj = self.brk[n_left - 1];
                        var = self.order[n_left - 1];
                    }
                }
                let dt = tj - tj0;
                if dt_min < dt {
                    // The minimiser lies inside this segment.
                    break;
                }
                t_total += dt;
                n_left -= 1;
                iter += 1;
                let d_var = d[var];
                d[var] = 0.0;
                let dist_var;
                if d_var > 0.0 {
                    dist_var = b.upper()[var] - x[var];
                    z[var] = b.upper()[var];
                    self.status[var] = AT_UPPER;
                } else {
                    dist_var = b.lower()[var] - x[var];
                    z[var] = b.lower()[var];
                    self.status[var] = AT_LOWER;
                }
                if n_left == 0 && n_breaks == n {
                    // Every variable reached a bound: that corner is the Cauchy point.
                    dt_min = dt;
                    all_fixed = true;
                    break;
                }
                n_segments += 1;
                let dibp2 = d_var * d_var;
                f1 = f1 + dt * f2 + dibp2 - theta * d_var * dist_var;
                f2 -= theta * dibp2;
                if col > 0 {
                    for i in 0..2 * col {
                        self.c[i] += dt * self.p[i];
                    }
                    let row = &pairs.rows()[var * 2 * m..(var + 1) * 2 * m];
                    for j in 0..col {
                        let s = pairs.slot(j);
                        self.w_row[j] = row[s];
                        self.w_row[col + j] = theta * row[m + s];
                    }
                    pairs.middle_times(&self.w_row, &mut self.v)?;
                    let wmc = dot(&self.c[..2 * col], &self.v[..2 * col]);
                    let wmp = dot(&self.p[..2 * col], &self.v[..2 * col]);
                    let wmw = dot(&self.w_row[..2 * col], &self.v[..2 * col]);
                    for i in 0..2 * col {
                        self.p[i] -= d_var * self.w_row[i];
                    }
                    f1 += d_var * wmc;
                    f2 += 2.0 * d_var * wmp - dibp2 * wmw;
                }
                // Guard against a vanishing or negative curvature from cancellation.
                f2 = f2.max(f64::EPSILON * f2_org);
                if n_left > 0 {
                    dt_min = -f1 / f2;
                    continue;
                } else if path_bounded {
                    dt_min = 0.0;
                } else {
                    dt_min = -f1 / f2;
                }
                break;
            }
        }

        if !all_fixed {
            if dt_min <= 0.0 {
                dt_min = 0.0;
            }
            t_total += dt_min;
            // Variables whose breakpoints were not reached move along the path.
            for i in 0..n {
                z[i] += t_total * d[i];
            }
        }
        if col > 0 {
            for i in 0..2 * col {
                self.c[i] += dt_min * self.p[i];
            }
        }
        Ok(n_segments)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scanning for the next breakpoints (with its fallback to the heap on ties) must walk
    /// the path exactly as the heap does, ties included; the branch-free first pass for boxes
    /// must classify exactly as the general one.
    #[test]
    fn breakpoint_scan_matches_the_heap() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let mut fallbacks = 0;
        for case in 0..400 {
            let n = rng.gen_range(2..60);
            // Some variables fixed (lower == upper), the rest in [0, 1].
            let fixed: Vec<bool> = (0..n).map(|i| i % 7 == 3).collect();
            let lower: Vec<f64> = (0..n).map(|i| if fixed[i] { 0.5 } else { 0.0 }).collect();
            let upper: Vec<f64> = (0..n).map(|i| if fixed[i] { 0.5 } else { 1.0 }).collect();
            // Coarse grids make equal breakpoints common.
            let x: Vec<f64> = (0..n)
                .map(|i| {
                    if fixed[i] {
                        0.5
                    } else {
                        rng.gen_range(0..5) as f64 / 4.0
                    }
                })
                .collect();
            let g: Vec<f64> = (0..n)
                .map(|_| rng.gen_range(-3i32..4) as f64 * if case % 2 == 0 { 1.0 } else { 0.37 })
                .collect();
            let run = |heap: bool, boxed: bool| {
                let b = Bounds::new(lower.clone(), upper.clone()).unwrap();
                let b = if boxed { b } else { b.without_box_fast_path() };
                let pg_norm = b.projected_gradient_norm(&x, &g);
                FORCE_HEAP.with(|f| f.set(heap));
                // No pairs: the model is θ/2·‖z − x‖² + gᵀ(z − x).
                let pairs = PairMemory::new(n, 3).with_theta(rng_theta(case));
                let mut search = CauchySearch::new(n, 3);
                search.reset_status(&b);
                let (mut z, mut d) = (vec![0.0; n], vec![0.0; n]);
                let n_segments = search
                    .compute(&pairs, &b, &x, &g, pg_norm, &mut z, &mut d)
                    .unwrap();
                FORCE_HEAP.with(|f| f.set(false));
                (n_segments, z, search.status.clone(), d)
            };
            let scanned = run(false, false);
            if scanned.0 > MAX_SCANS {
                fallbacks += 1;
            }
            for other in [run(true, false), run(false, true), run(true, true)] {
                assert_eq!(scanned.0, other.0, "case {case}: segments");
                for i in 0..n {
                    assert_eq!(
                        scanned.1[i].to_bits(),
                        other.1[i].to_bits(),
                        "case {case}: z[{i}]"
                    );
                    assert_eq!(scanned.2[i], other.2[i], "case {case}: status[{i}]");
                    assert_eq!(
                        scanned.3[i].to_bits(),
                        other.3[i].to_bits(),
                        "case {case}: d[{i}]"
                    );
                }
            }
        }
        assert!(fallbacks > 0);
    }

    fn rng_theta(case: usize) -> f64 {
        [1.0, 0.25, 3.0, 0.01][case % 4]
    }
}
