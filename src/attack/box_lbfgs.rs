//! The paper's adversarial generator: box-constrained L-BFGS over `x + r ∈ [0,1]^m` with a
//! search over the penalty weight `c`.

use ndarray::{s, Array1, Array2, ArrayView1, ArrayView2, Zip};

use super::c_search::CSearch;
use super::{distortion, Attack, Candidate, Target};
use crate::error::{check_count, check_positive, Error, Result};
use crate::model::{check_finite, checked_predict, Differentiable};
use crate::optim::{LBfgsB, LbfgsbError, Step};
use crate::params::{Check, Checked};

/// Cross-entropy below which the target's probability exceeds one half (`ln 2 ≈ 0.6931`, less a
/// margin for rounding), so the target is certainly the model's label.
const SURE_LOSS: f32 = 0.69;

/// How the size of the perturbation is penalised in `c·pen(r) + loss_f(x + r, l)`.
///
/// The paper writes `c|r|`. With the Euclidean norm that term is not differentiable at `r = 0`,
/// which is where every search starts, and L-BFGS assumes a smooth objective. Both `‖r‖` and
/// `‖r‖²` are increasing in `‖r‖`, so as `c` sweeps over `(0, ∞)` the two objectives trace the
/// same family of minimisers (each `c` of one matches some `c'` of the other); the search over
/// `c` therefore finds the same smallest perturbation with either, and the squared form is the
/// smooth one. [`Penalty::L2`] is kept for comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Penalty {
    /// `c·‖r‖₂²` (default: smooth everywhere).
    #[default]
    SquaredL2,
    /// `c·‖r‖₂`, with gradient 0 taken at `r = 0`.
    L2,
}

/// Box-constrained L-BFGS attack (Szegedy et al. 2013, §4.1).
///
/// For each `c` it minimises `c·pen(r) + CE(f(x + r), l)` over `x + r ∈ [0,1]^m` with
/// [`LBfgsB`], driven through its ask/tell interface ([`LBfgsB::ask`]), the images of a batch in
/// lockstep (one model call per round for all of them); `c` is bracketed by factors of 10 from
/// `initial_c`, then bisected (in log space) for `search_steps` steps, looking for the largest
/// `c` whose minimiser the model labels `l`: a larger `c` weighs the norm more, so it gives a
/// smaller perturbation. The smallest successful perturbation seen is returned, after a fresh
/// forward pass confirms its label.
///
/// An error the model returns while the solver runs comes out of [`Attack::attack`] as that
/// same [`Error`]; a NaN or infinite loss or input gradient is [`Error::NonFinite`];
/// [`Error::Solver`] (a call the solver refuses) or [`Error::Internal`] would be a bug.
///
/// ```
/// use blindspot::attack::{Attack, BoxLbfgs, Target};
/// use blindspot::nn::{Architecture, Network};
/// use ndarray::Array1;
///
/// let model = Network::new(Architecture::parse("FC10", 16).unwrap(), 3);
/// let x = Array1::from_elem(16, 0.5f32);
/// let label = blindspot::Classifier::predict(&model, x.view().insert_axis(ndarray::Axis(0))).unwrap()[0];
/// let target = (label + 1) % 10;
/// let out = BoxLbfgs::default().attack(&model, x.view(), label, Target::Label(target)).unwrap();
/// assert!(out.adversarial.iter().all(|&v| (0.0..=1.0).contains(&v)));
/// if out.success {
///     assert_eq!(out.adversarial_label, target);
/// }
/// ```
pub type BoxLbfgs = Checked<BoxLbfgsParams>;

/// Settings of [`BoxLbfgs`] as given; [`BoxLbfgsParams::check`](Check::check) validates them
/// into the attack, which cannot hold an invalid value afterwards. `Default` gives the paper's method
/// with the defaults below, each justified by a measurement.
///
/// ```
/// use blindspot::attack::BoxLbfgsParams;
/// use blindspot::Check;
///
/// let attack = BoxLbfgsParams::default().with_search_steps(0).with_max_iters(30).check()?;
/// assert_eq!(attack.search_steps, 0);
/// assert!(BoxLbfgsParams::default().with_memory(0).check().is_err());
/// # Ok::<(), blindspot::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct BoxLbfgsParams {
    /// Penalty form (default [`Penalty::SquaredL2`]).
    pub penalty: Penalty,
    /// First `c` tried (default 1); finite and > 0.
    pub initial_c: f64,
    /// Most factor-of-10 steps when bracketing `c`, each way (default 8, at most
    /// [`BoxLbfgs::MAX_BRACKET_STEPS`]).
    pub bracket_steps: usize,
    /// Bisection steps on `c` after bracketing (default 5, at most
    /// [`BoxLbfgs::MAX_SEARCH_STEPS`]).
    pub search_steps: usize,
    /// Iteration limit of each L-BFGS-B solve (default 150, as Foolbox), in
    /// `1..=`[`BoxLbfgs::MAX_ITERS`].
    pub max_iters: u64,
    /// L-BFGS-B memory (default 5), in `1..=`[`BoxLbfgs::MAX_MEMORY`].
    pub memory: usize,
    /// L-BFGS-B projected-gradient tolerance (default 1e-5); finite and > 0.
    pub pgtol: f64,
    /// L-BFGS-B relative-reduction tolerance (default 3e-6); finite and > 0.
    pub ftol: f64,
    /// Start each solve from the best adversarial point found so far, or while there is none
    /// from where the previous solve ended (default true), instead of from `x`.
    pub warm_start: bool,
    /// Carry L-BFGS-B's curvature pairs from one solve of the `c`-search to the next (default
    /// true; used with [`Penalty::SquaredL2`] only; see [`BoxLbfgsParams::with_warm_memory`]).
    pub warm_memory: bool,
}

impl Default for BoxLbfgsParams {
    fn default() -> Self {
        BoxLbfgsParams {
            penalty: Penalty::SquaredL2,
            initial_c: 1.0,
            bracket_steps: 8,
            search_steps: 5,
            max_iters: 150,
            // Each solve is short (about nine iterations) and starts from the previous solve's
            // pairs, so a small memory is enough. On FC100-100-10 (200 training images,
            // next-label targets) 5 pairs needed 81 evaluations per image and 10 pairs 77, at
            // the same mean distortion, but the cheaper iterations made 5 about 10% faster.
            memory: 5,
            pgtol: 1e-5,
            // Looser than L-BFGS-B's usual 2.2e-9: the search only needs each solve's label and
            // a near-minimal norm. In the same test the mean distortion was 0.058872 at 3e-6
            // and 0.058870 at 2.2e-9, with 81 instead of 264 evaluations per image.
            ftol: 3e-6,
            warm_start: true,
            warm_memory: true,
        }
    }
}

impl BoxLbfgsParams {
    /// Sets the penalty form.
    pub fn with_penalty(mut self, penalty: Penalty) -> Self {
        self.penalty = penalty;
        self
    }

    /// Sets the first `c` tried.
    pub fn with_initial_c(mut self, c: f64) -> Self {
        self.initial_c = c;
        self
    }

    /// Sets the most factor-of-10 bracketing steps, each way.
    pub fn with_bracket_steps(mut self, n: usize) -> Self {
        self.bracket_steps = n;
        self
    }

    /// Sets the bisection steps on `c` after bracketing.
    pub fn with_search_steps(mut self, n: usize) -> Self {
        self.search_steps = n;
        self
    }

    /// Sets the iteration limit of each L-BFGS-B solve.
    pub fn with_max_iters(mut self, n: u64) -> Self {
        self.max_iters = n;
        self
    }

    /// Sets the L-BFGS-B memory.
    pub fn with_memory(mut self, m: usize) -> Self {
        self.memory = m;
        self
    }

    /// Sets the L-BFGS-B tolerances: projected gradient, and relative reduction (the default
    /// 3e-6 is looser than the solver's own because each solve only has to settle the label
    /// and a near-minimal norm).
    pub fn with_tolerances(mut self, pgtol: f64, ftol: f64) -> Self {
        self.pgtol = pgtol;
        self.ftol = ftol;
        self
    }

    /// Sets whether each solve starts from the best point so far (see the field).
    pub fn with_warm_start(mut self, on: bool) -> Self {
        self.warm_start = on;
        self
    }

    /// Sets whether L-BFGS-B's curvature pairs carry over between the solves of the search.
    ///
    /// Between solves only `c` changes, and with the squared penalty the objective changes by
    /// `(c' − c)·‖r‖²`, whose Hessian is the constant `2(c' − c)·I`: every stored pair is
    /// corrected exactly (`y += 2(c' − c)·s`, see [`LBfgsB::shift_curvature`]), so each solve
    /// after the first starts with a quasi-Newton model of its own objective instead of a
    /// gradient step. On FC100-100-10 (200 training images, next-label targets) this took the
    /// evaluations per image from 93.5 to 81 at the same mean distortion.
    pub fn with_warm_memory(mut self, on: bool) -> Self {
        self.warm_memory = on;
        self
    }
}

impl Check for BoxLbfgsParams {
    type Checked = BoxLbfgs;

    /// Validates every value once and gives the attack.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] naming the first bad value: `initial_c`, `pgtol` or `ftol`
    /// not finite and > 0; `bracket_steps`, `search_steps`, `max_iters` or `memory` out of
    /// its range.
    fn check(self) -> Result<BoxLbfgs> {
        check_positive("initial_c", self.initial_c)?;
        at_most(
            "bracket_steps",
            self.bracket_steps,
            BoxLbfgs::MAX_BRACKET_STEPS,
        )?;
        at_most(
            "search_steps",
            self.search_steps,
            BoxLbfgs::MAX_SEARCH_STEPS,
        )?;
        check_count("max_iters", self.max_iters, BoxLbfgs::MAX_ITERS)?;
        check_count("memory", self.memory, BoxLbfgs::MAX_MEMORY)?;
        check_positive("pgtol", self.pgtol)?;
        check_positive("ftol", self.ftol)?;
        Ok(Checked::assume_valid(self))
    }
}

fn at_most(name: &'static str, n: usize, max: usize) -> Result<()> {
    if n > max {
        return Err(Error::param(
            name,
            format!("must be at most {max}, got {n}"),
        ));
    }
    Ok(())
}

impl Default for Checked<BoxLbfgsParams> {
    /// The paper's method with the default settings (valid constants, as a test checks).
    fn default() -> Self {
        Checked::assume_valid(BoxLbfgsParams::default())
    }
}

impl Checked<BoxLbfgsParams> {
    /// Largest [`BoxLbfgsParams::bracket_steps`]: 30 factors of 10 each way already span
    /// `c` from `1e-30` to `1e30` times the initial value, and a few hundred would overflow.
    pub const MAX_BRACKET_STEPS: usize = 30;

    /// Largest [`BoxLbfgsParams::search_steps`]: after 60 halvings in log space the bracket
    /// is below `f64` resolution, so more steps would only repeat the same solve.
    pub const MAX_SEARCH_STEPS: usize = 60;

    /// Largest [`BoxLbfgsParams::max_iters`].
    pub const MAX_ITERS: u64 = 1_000_000;

    /// Largest [`BoxLbfgsParams::memory`] (the solver keeps `2 · memory` vectors of the
    /// input's length).
    pub const MAX_MEMORY: usize = 1000;

    /// The paper's method with default settings (see [`BoxLbfgsParams`]).
    pub fn new() -> Self {
        Self::default()
    }

    fn solver(&self, n: usize) -> Result<LBfgsB> {
        Ok(LBfgsB::new(Array1::zeros(n), Array1::ones(n))?
            .try_with_memory(self.memory)?
            .try_with_pgtol(self.pgtol)?
            .try_with_ftol(self.ftol)?
            .with_warm_memory(self.warm_memory && self.penalty == Penalty::SquaredL2))
    }
}

impl Attack for Checked<BoxLbfgsParams> {
    /// The images of the batch advance in lockstep: each round, every image's solver runs
    /// until it needs the model, and the points they ask for go to the model together, as one
    /// `loss_and_input_grad_with` call for the points that need a loss and gradient (one row
    /// each, with its own target label) and one `logits` call for the label checks. Images
    /// drop out as their searches end. Each image takes exactly the steps it would take
    /// alone, so with a model that computes each row as if alone the result does not depend
    /// on the batch.
    fn search<M: Differentiable + ?Sized>(
        &self,
        model: &M,
        xs: ArrayView2<'_, f32>,
        labels: &[usize],
        aims: &[Option<usize>],
        _requested: &[Target],
    ) -> Result<Vec<Candidate>> {
        let (n, m) = xs.dim();
        let classes = model.num_classes();
        let mut runs = (0..n)
            .map(|i| ImageRun::new(self, xs.row(i), labels[i], aims[i], classes))
            .collect::<Result<Vec<_>>>()?;
        let mut points = Array2::<f32>::zeros((n, m));
        let mut grads = Array2::<f32>::zeros((n, m));
        let mut losses = Array1::<f32>::zeros(n);
        let mut targets = vec![0usize; n];
        let mut scratch = M::Scratch::default();
        let mut active: Vec<usize> = (0..n).collect();
        let (mut want_grad, mut want_label) = (Vec::with_capacity(n), Vec::with_capacity(n));
        while !active.is_empty() {
            want_grad.clear();
            want_label.clear();
            for &i in &active {
                match runs[i].advance()? {
                    Need::Grad => want_grad.push(i),
                    Need::Label => want_label.push(i),
                    Need::Nothing => {}
                }
            }
            if !want_grad.is_empty() {
                let k = want_grad.len();
                for (r, &i) in want_grad.iter().enumerate() {
                    points.row_mut(r).assign(&runs[i].z32);
                    targets[r] = runs[i].target();
                }
                let mut l = losses.slice_mut(s![..k]);
                let mut g = grads.slice_mut(s![..k, ..]);
                model.loss_and_input_grad_with(
                    points.slice(s![..k, ..]),
                    &targets[..k],
                    &mut scratch,
                    l.view_mut(),
                    g.view_mut(),
                )?;
                // A NaN loss or gradient would make the solver wander or stall: a model that
                // produces one is an error (the crate's own networks compute finite values
                // for inputs in the box).
                check_finite(l.view(), "model loss")?;
                check_finite(g.view(), "model input gradient")?;
                for (r, &i) in want_grad.iter().enumerate() {
                    runs[i].receive_grad(l[r], g.row(r))?;
                }
            }
            if !want_label.is_empty() {
                let k = want_label.len();
                for (r, &i) in want_label.iter().enumerate() {
                    points.row_mut(r).assign(&runs[i].end);
                }
                let got = checked_predict(model, points.slice(s![..k, ..]))?;
                for (r, &i) in want_label.iter().enumerate() {
                    runs[i].receive_label(got[r])?;
                }
            }
            active.retain(|&i| !runs[i].is_done());
        }
        runs.into_iter().map(ImageRun::finish).collect()
    }
}

/// The outcomes of one target's solves: the smallest successful perturbation, and the latest
/// failure to return when nothing succeeded.
#[derive(Default)]
struct Found {
    /// Best success so far: (distortion², adversarial, c).
    best: Option<(f64, Array1<f32>, f64)>,
    last_failure: Option<(Array1<f32>, f64)>,
}

impl Found {
    fn record(&mut self, x: ArrayView1<'_, f32>, adv: Array1<f32>, c: f64, ok: bool) {
        if ok {
            let d2: f64 = adv
                .iter()
                .zip(x.iter())
                .map(|(&a, &b)| ((a - b) as f64).powi(2))
                .sum();
            if self.best.as_ref().is_none_or(|(bd, _, _)| d2 < *bd) {
                self.best = Some((d2, adv, c));
            }
        } else {
            self.last_failure = Some((adv, c));
        }
    }

    fn best_adversarial(&self) -> Option<&Array1<f32>> {
        self.best.as_ref().map(|(_, adv, _)| adv)
    }

    /// The point to report and its `c`: the best success, else the latest failure.
    fn pick(self) -> Option<(Array1<f32>, f64)> {
        match self.best {
            Some((_, adv, c)) => Some((adv, c)),
            None => self.last_failure,
        }
    }
}

/// What an image's run needs from the model before it can go on.
enum Need {
    /// The loss and input gradient at `z32` toward its current target.
    Grad,
    /// The label of `end`.
    Label,
    /// Nothing: the run is over.
    Nothing,
}

/// Where an image's run stands between rounds.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// A solve is under way; the solver may ask for a point.
    Solving,
    /// Waiting for the loss and gradient at `z32`; `sq` is `‖z − x‖²` at that point.
    AwaitGrad {
        sq: f64,
    },
    /// Waiting for the label of the solve's end point `end`.
    AwaitLabel,
    Done,
}

/// One image's attack as a state machine: its targets (one, or every other label when
/// untargeted), for each a [`CSearch`] over `c`, for each `c` an L-BFGS-B solve driven through
/// [`LBfgsB::ask`]/[`LBfgsB::tell`]. [`ImageRun::advance`] runs it until it needs the model;
/// the caller evaluates that for many images at once and hands the values back. The steps,
/// and so the result, are the same as when the image is attacked alone.
struct ImageRun {
    x: Array1<f64>,
    x32: Array1<f32>,
    /// Labels to reach, in order; the untargeted attack keeps the best over all of them.
    targets: Vec<usize>,
    /// Index into `targets` of the current one.
    ti: usize,
    search: CSearch,
    found: Found,
    /// `c` of the current solve, and of the previous solve for this target (the solver's
    /// pairs belong to its objective).
    c: f64,
    last_c: Option<f64>,
    /// End point of the latest solve: the start of the next one while nothing succeeded.
    last_end: Option<Array1<f32>>,
    solver: LBfgsB,
    p: BoxLbfgsParams,
    /// The solve's best point so far and its cost (argmin's `best_param`: replaced only by a
    /// strictly lower cost).
    best_z: Array1<f64>,
    best_f: f64,
    /// The point the solver asked for, in `f64` and as the model's `f32` input.
    z: Array1<f64>,
    z32: Array1<f32>,
    /// The model's loss and input gradient at `z32` for `model_target`. They do not depend on
    /// `c`, so a solve warm-started where the previous one ended needs no model call for its
    /// first point.
    loss: f32,
    g32: Array1<f32>,
    model_target: Option<usize>,
    /// The objective's gradient handed to the solver.
    grad: Array1<f64>,
    /// End point of the current solve (the model's input for a label check).
    end: Array1<f32>,
    /// Rows the model evaluated for this image.
    evals: usize,
    /// Best result over the targets done: (success, distortion, point, c).
    best: Option<(bool, f64, Array1<f32>, f64)>,
    phase: Phase,
}

impl ImageRun {
    fn new(
        attack: &BoxLbfgs,
        x: ArrayView1<'_, f32>,
        label: usize,
        aim: Option<usize>,
        classes: usize,
    ) -> Result<Self> {
        let n = x.len();
        let targets = match aim {
            Some(t) => vec![t],
            None => (0..classes).filter(|&t| t != label).collect(),
        };
        if targets.is_empty() {
            return Err(Error::param(
                "target",
                "an untargeted attack needs at least 2 classes",
            ));
        }
        let p = attack.params();
        let mut run = ImageRun {
            x: x.mapv(f64::from),
            x32: x.to_owned(),
            targets,
            ti: 0,
            search: CSearch::new(p.initial_c, p.bracket_steps, p.search_steps),
            found: Found::default(),
            c: p.initial_c,
            last_c: None,
            last_end: None,
            solver: attack.solver(n)?,
            p: p.clone(),
            best_z: Array1::zeros(n),
            best_f: f64::INFINITY,
            z: Array1::zeros(n),
            z32: Array1::zeros(n),
            loss: 0.0,
            g32: Array1::zeros(n),
            model_target: None,
            grad: Array1::zeros(n),
            end: Array1::zeros(n),
            evals: 0,
            best: None,
            phase: Phase::Done,
        };
        run.begin_target();
        run.begin_solve()?;
        Ok(run)
    }

    fn target(&self) -> usize {
        self.targets[self.ti]
    }

    fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    fn begin_target(&mut self) {
        let p = &self.p;
        self.search = CSearch::new(p.initial_c, p.bracket_steps, p.search_steps);
        self.found = Found::default();
        self.last_c = None;
        self.last_end = None;
        if let Some(c) = self.search.current() {
            self.c = c;
        }
    }

    /// Starts the solve for `self.c`: from the best success so far (with warm starts), else
    /// from where the previous solve ended, else from `x`; with the previous solve's pairs
    /// for this target corrected for the new `c`, and none from another target's objective.
    fn begin_solve(&mut self) -> Result<()> {
        let start = match (
            self.p.warm_start,
            self.found.best_adversarial(),
            self.last_end.as_ref(),
        ) {
            (true, Some(adv), _) => adv.mapv(f64::from),
            (true, None, Some(end)) => end.mapv(f64::from),
            _ => self.x.clone(),
        };
        match self.last_c.replace(self.c) {
            Some(prev) => {
                self.solver.shift_curvature(2.0 * (self.c - prev));
            }
            None => self.solver.clear_memory(),
        }
        self.solver.start(start.view())?;
        self.best_f = f64::INFINITY;
        self.phase = Phase::Solving;
        Ok(())
    }

    /// Runs the image until it needs the model (or is over).
    fn advance(&mut self) -> Result<Need> {
        loop {
            match self.phase {
                Phase::Done => return Ok(Need::Nothing),
                Phase::AwaitGrad { .. } => return Ok(Need::Grad),
                Phase::AwaitLabel => return Ok(Need::Label),
                Phase::Solving => {}
            }
            // The start is always evaluated; after that, argmin's rule: no iteration begins
            // once `max_iters` are done.
            let limit =
                self.solver.evaluations() > 0 && self.solver.iterations() >= self.p.max_iters;
            let point = match self.solver.ask() {
                Step::Evaluate(z) if !limit => z,
                _ => {
                    self.end_solve()?;
                    continue;
                }
            };
            // One pass: keep the point, convert it for the model (noting whether the model
            // already saw exactly this input for this target), and sum ‖z − x‖².
            let (Some(zs), Some(xs), Some(cz), Some(z32)) = (
                point.as_slice(),
                self.x.as_slice(),
                self.z.as_slice_mut(),
                self.z32.as_slice_mut(),
            ) else {
                return Err(Error::Internal {
                    what: "the solver's point or the attack's buffers are not contiguous",
                });
            };
            let mut sq = 0.0;
            let mut same = true;
            for i in 0..zs.len() {
                let zi = zs[i];
                cz[i] = zi;
                let zi32 = zi as f32;
                same &= z32[i] == zi32;
                z32[i] = zi32;
                let r = zi - xs[i];
                sq += r * r;
            }
            if same && self.model_target == Some(self.target()) {
                self.tell(sq)?;
            } else {
                self.model_target = None;
                self.phase = Phase::AwaitGrad { sq };
                return Ok(Need::Grad);
            }
        }
    }

    /// The model's loss and input gradient at `z32` toward the current target.
    fn receive_grad(&mut self, loss: f32, grad: ArrayView1<'_, f32>) -> Result<()> {
        self.evals += 1;
        self.loss = loss;
        self.g32.assign(&grad);
        self.model_target = Some(self.target());
        match self.phase {
            Phase::AwaitGrad { sq } => self.tell(sq),
            _ => Err(Error::Internal {
                what: "a gradient came for an image that asked for none",
            }),
        }
    }

    /// Tells the solver the objective `c·pen(z − x) + loss` and its gradient at `z`.
    fn tell(&mut self, sq: f64) -> Result<()> {
        let (pen, scale) = match self.p.penalty {
            Penalty::SquaredL2 => (sq, 2.0 * self.c),
            Penalty::L2 => {
                let norm = sq.sqrt();
                (norm, if norm > 0.0 { self.c / norm } else { 0.0 })
            }
        };
        let cost = self.c * pen + self.loss as f64;
        Zip::from(&mut self.grad)
            .and(&self.z)
            .and(&self.x)
            .and(&self.g32)
            .for_each(|g, &z, &x, &g32| *g = scale * (z - x) + g32 as f64);
        let before = (self.solver.evaluations(), self.solver.iterations());
        match self.solver.tell(cost, self.grad.view()) {
            // As argmin's driver: the run ends at its last finite point.
            Ok(()) | Err(LbfgsbError::NonFinite { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        // argmin's best point: the start, then any iterate of strictly lower cost.
        let moved = before.0 == 0 || self.solver.iterations() > before.1;
        if moved && self.solver.cost() < self.best_f {
            self.best_f = self.solver.cost();
            self.best_z.assign(&self.solver.point());
        }
        self.phase = Phase::Solving;
        Ok(())
    }

    /// The solve is over: its end point, and whether the model labels it the target.
    fn end_solve(&mut self) -> Result<()> {
        let z = if self.best_f < f64::INFINITY {
            self.best_z.view()
        } else {
            self.solver.point()
        };
        // The solver keeps iterates inside the box; clamping only guards the f64 → f32 cast.
        Zip::from(&mut self.end)
            .and(&z)
            .for_each(|e, &v| *e = v.clamp(0.0, 1.0) as f32);
        self.last_end = Some(self.end.clone());
        // If the model's last evaluation was at exactly this input and gave the target a
        // probability above one half, the target is its label; otherwise ask.
        if self.model_target == Some(self.target()) && self.z32 == self.end && self.loss < SURE_LOSS
        {
            self.settle(true)
        } else {
            self.phase = Phase::AwaitLabel;
            Ok(())
        }
    }

    /// The label of the solve's end point.
    fn receive_label(&mut self, label: usize) -> Result<()> {
        self.evals += 1;
        self.settle(label == self.target())
    }

    /// Records the solve's outcome and moves on: the next `c` of the search, else the next
    /// target, else the end.
    fn settle(&mut self, ok: bool) -> Result<()> {
        self.found
            .record(self.x32.view(), self.end.clone(), self.c, ok);
        if let Some(c) = self.search.next_c(ok) {
            self.c = c;
            return self.begin_solve();
        }
        // Every success was settled by a label check (or a sure loss) at exactly its point,
        // and the point reported is the best success if there was one.
        let success = self.found.best.is_some();
        let (adv, c) = std::mem::take(&mut self.found)
            .pick()
            .ok_or(Error::Internal {
                what: "a target was settled before any solve ran",
            })?;
        let d = distortion(self.x32.view(), adv.view())?;
        // Untargeted: the smallest successful perturbation over every other label.
        let better = match &self.best {
            None => true,
            Some((bs, bd, _, _)) => (success, -d) > (*bs, -*bd),
        };
        if better {
            self.best = Some((success, d, adv, c));
        }
        self.ti += 1;
        if self.ti < self.targets.len() {
            self.begin_target();
            self.begin_solve()
        } else {
            self.phase = Phase::Done;
            Ok(())
        }
    }

    fn finish(self) -> Result<Candidate> {
        let (_, _, adversarial, penalty_weight) = self.best.ok_or(Error::Internal {
            what: "an image finished before any solve ran",
        })?;
        Ok(Candidate {
            adversarial,
            penalty_weight,
            evaluations: self.evals,
        })
    }
}
