//! The search over the penalty weight `c` of the box-constrained L-BFGS attack, as a small
//! state machine: [`CSearch::next_c`] takes the outcome of the solve at the current `c` and
//! says which `c` to solve for next. It knows nothing of models or solvers, so that its
//! bracketing and bisection are tested here against a fake oracle ("succeeds iff `c ≤ c*`").

/// Where the search over `c` stands: which `c` to solve for next, given whether the solve at
/// the current one succeeded.
///
/// The first `c` is the initial one. A success there sends the bracket up by factors of 10 (a
/// larger `c` gives a smaller perturbation, so look for the first failure above), a failure
/// sends it down (look for the first success below), for at most `bracket_steps` solves. Once
/// a success `lo` and a failure `hi` are a factor of 10 apart, `search_steps` log-space
/// midpoints `√(lo·hi)` halve the bracket, each replacing the end whose outcome it shares. A
/// search that never finds both ends stops after the bracket phase.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct CSearch {
    phase: Phase,
    /// The `c` whose outcome [`CSearch::next_c`] expects.
    c: f64,
    /// Largest success so far.
    lo: Option<f64>,
    /// Latest failure: once both ends are known, the smallest failure above `lo`.
    hi: Option<f64>,
    bracket_steps: usize,
    search_steps: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The solve at the initial `c` has not been reported.
    Start,
    /// Stepping `c` by factors of 10, up or down; `left` more steps allowed.
    Bracket { up: bool, left: usize },
    /// Bisecting `[lo, hi]`; `left` more midpoints after the current one.
    Bisect { left: usize },
    /// No more solves.
    Done,
}

impl CSearch {
    pub(super) fn new(initial_c: f64, bracket_steps: usize, search_steps: usize) -> Self {
        CSearch {
            phase: Phase::Start,
            c: initial_c,
            lo: None,
            hi: None,
            bracket_steps,
            search_steps,
        }
    }

    /// The `c` to solve for now, or `None` once the search is over.
    pub(super) fn current(&self) -> Option<f64> {
        (self.phase != Phase::Done).then_some(self.c)
    }

    /// Reports whether the solve at [`CSearch::current`] succeeded and returns the next `c`
    /// to solve for, or `None` when the search is over (then and afterwards).
    pub(super) fn next_c(&mut self, success: bool) -> Option<f64> {
        let (up, left) = match self.phase {
            Phase::Done => return None,
            Phase::Start => (success, self.bracket_steps),
            Phase::Bracket { up, left } => (up, left),
            Phase::Bisect { left } => {
                self.settle(success);
                return self.bisect(left);
            }
        };
        self.settle(success);
        if self.lo.is_some() && self.hi.is_some() {
            return self.bisect(self.search_steps);
        }
        if left == 0 {
            return self.finish();
        }
        self.c = if up { self.c * 10.0 } else { self.c / 10.0 };
        self.phase = Phase::Bracket { up, left: left - 1 };
        Some(self.c)
    }

    /// Largest `c` whose solve succeeded so far.
    #[cfg(test)]
    fn best_c(&self) -> Option<f64> {
        self.lo
    }

    fn settle(&mut self, success: bool) {
        if success {
            self.lo = Some(self.c);
        } else {
            self.hi = Some(self.c);
        }
    }

    /// The next midpoint, if `left` remain and there is a bracket.
    fn bisect(&mut self, left: usize) -> Option<f64> {
        match (self.lo, self.hi, left) {
            (Some(l), Some(h), 1..) => {
                self.c = (l * h).sqrt();
                self.phase = Phase::Bisect { left: left - 1 };
                Some(self.c)
            }
            _ => self.finish(),
        }
    }

    fn finish(&mut self) -> Option<f64> {
        self.phase = Phase::Done;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a search against `succeeds`, returning the `c` values tried in order (at most 1000,
    /// so that a search that never stops fails the test instead of hanging it).
    fn drive(search: &mut CSearch, succeeds: impl Fn(f64) -> bool) -> Vec<f64> {
        let mut tried = Vec::new();
        let mut next = search.current();
        while let Some(c) = next {
            tried.push(c);
            assert!(tried.len() <= 1000, "search does not stop");
            next = search.next_c(succeeds(c));
        }
        tried
    }

    /// The c-search as `BoxLbfgs::targeted` wrote it before it became a state machine
    /// (bracket by factors of 10 from `initial`, then bisect in log space): the sequence of
    /// `c` values it tried.
    fn loop_sequence(
        initial: f64,
        bracket_steps: usize,
        search_steps: usize,
        succeeds: impl Fn(f64) -> bool,
    ) -> Vec<f64> {
        let mut tried = Vec::new();
        let mut solve = |c: f64| {
            tried.push(c);
            succeeds(c)
        };
        let mut c = initial;
        let ok = solve(c);
        let (mut lo, mut hi) = if ok { (Some(c), None) } else { (None, Some(c)) };
        for _ in 0..bracket_steps {
            if ok {
                if hi.is_some() {
                    break;
                }
                c *= 10.0;
            } else {
                if lo.is_some() {
                    break;
                }
                c /= 10.0;
            }
            if solve(c) {
                lo = Some(c);
            } else {
                hi = Some(c);
            }
            if lo.is_some() && hi.is_some() {
                break;
            }
        }
        if let (Some(mut l), Some(mut h)) = (lo, hi) {
            for _ in 0..search_steps {
                let mid = (l * h).sqrt();
                if solve(mid) {
                    l = mid;
                } else {
                    h = mid;
                }
            }
        }
        tried
    }

    #[test]
    fn tries_the_same_c_values_as_the_loop_it_replaces() {
        let thresholds = [
            0.0, 1e-12, 2.3e-7, 1e-3, 0.037, 0.1, 0.99, 1.0, 1.01, 7.0, 10.0, 420.0, 3.7e3, 1e8,
            5e9,
        ];
        for initial in [1.0, 0.3, 250.0] {
            for bracket in [0, 1, 2, 8, 30] {
                for search in [0, 1, 5, 60] {
                    for &t in thresholds.iter().chain([f64::INFINITY].iter()) {
                        let oracle = |c: f64| c <= t;
                        let mut s = CSearch::new(initial, bracket, search);
                        let got = drive(&mut s, oracle);
                        let want = loop_sequence(initial, bracket, search, oracle);
                        // Bit for bit: the attack's result depends on each c exactly.
                        let bits = |v: &[f64]| v.iter().map(|c| c.to_bits()).collect::<Vec<_>>();
                        assert_eq!(
                            bits(&got),
                            bits(&want),
                            "initial {initial}, bracket {bracket}, search {search}, c* {t}: \
                             {got:?} vs {want:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn brackets_then_bisects_down_to_the_threshold() {
        let t = 0.037;
        let mut s = CSearch::new(1.0, 8, 5);
        let tried = drive(&mut s, |c| c <= t);
        // Failures at 1 and 0.1, the first success at 0.01, then five midpoints.
        assert_eq!(&tried[..3], &[1.0, 0.1, 0.01]);
        assert_eq!(tried.len(), 3 + 5);
        let (lo, hi) = (s.lo.unwrap(), s.hi.unwrap());
        assert!(lo <= t && t < hi, "[{lo}, {hi}] misses {t}");
        // Five halvings of a factor-10 bracket in log space.
        let width = (hi / lo).log10();
        assert!((width - 1.0 / 32.0).abs() < 1e-12, "log10 width {width}");
        assert_eq!(s.best_c(), Some(lo));
        // Every success is at most the threshold and the best is the largest of them.
        let best = tried
            .iter()
            .copied()
            .filter(|&c| c <= t)
            .fold(0.0, f64::max);
        assert_eq!(s.best_c(), Some(best));
    }

    #[test]
    fn brackets_upwards_after_a_first_success() {
        let t = 3.7e3;
        let mut s = CSearch::new(1.0, 8, 5);
        let tried = drive(&mut s, |c| c <= t);
        assert_eq!(&tried[..5], &[1.0, 10.0, 100.0, 1000.0, 10000.0]);
        assert_eq!(tried.len(), 5 + 5);
        let (lo, hi) = (s.lo.unwrap(), s.hi.unwrap());
        assert!(lo <= t && t < hi, "[{lo}, {hi}] misses {t}");
        assert!(
            lo > 3.0e3,
            "five halvings should reach above 3000, got {lo}"
        );
    }

    #[test]
    fn more_steps_narrow_to_the_threshold() {
        let t = 0.0123;
        let mut s = CSearch::new(1.0, 8, 60);
        drive(&mut s, |c| c <= t);
        let (lo, hi) = (s.lo.unwrap(), s.hi.unwrap());
        assert!(lo <= t && t < hi);
        assert!((hi - lo) / t < 1e-12, "[{lo}, {hi}] around {t}");
    }

    #[test]
    fn never_succeeding_stops_after_the_bracket_steps() {
        let mut s = CSearch::new(1.0, 8, 5);
        let tried = drive(&mut s, |_| false);
        assert_eq!(tried.len(), 1 + 8);
        assert!((tried[8] - 1e-8).abs() < 1e-20, "{tried:?}");
        assert!(tried.windows(2).all(|w| w[1] < w[0]));
        assert_eq!(s.best_c(), None);
    }

    #[test]
    fn always_succeeding_stops_after_the_bracket_steps() {
        let mut s = CSearch::new(1.0, 8, 5);
        let tried = drive(&mut s, |_| true);
        assert_eq!(tried.len(), 1 + 8);
        assert_eq!(s.best_c(), Some(1e8));
    }

    #[test]
    fn no_bracket_or_search_steps_mean_no_further_solves() {
        // Without bracket steps only the initial c is tried, whatever the outcome.
        for ok in [false, true] {
            let mut s = CSearch::new(2.0, 0, 5);
            assert_eq!(drive(&mut s, |_| ok), vec![2.0]);
        }
        // Without search steps the bracket is found but not bisected.
        let mut s = CSearch::new(1.0, 8, 0);
        assert_eq!(drive(&mut s, |c| c <= 0.5), vec![1.0, 0.1]);
        assert_eq!(s.best_c(), Some(0.1));
        // A threshold out of reach of the bracket steps: no bisection either.
        let mut s = CSearch::new(1.0, 2, 5);
        assert_eq!(drive(&mut s, |c| c <= 1e-5).len(), 3);
        assert_eq!(s.best_c(), None);
    }

    #[test]
    fn a_finished_search_stays_finished() {
        let mut s = CSearch::new(1.0, 1, 1);
        drive(&mut s, |c| c <= 0.5);
        assert_eq!(s.current(), None);
        for ok in [true, false, true] {
            assert_eq!(s.next_c(ok), None);
        }
    }
}
