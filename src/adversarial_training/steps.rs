//! The per-batch hooks of the one SGD loop ([`crate::nn::fit_loop`]): a pool step after the
//! clean steps (levels in turn, refreshes on schedule), or a batch doubled with its one-step
//! signed-gradient perturbation.

use std::cell::RefCell;

use ndarray::{s, Array1, Array2, Axis};
use rand::seq::index::sample;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::pool::{refresh_count, AdversarialPool};
use super::{AdversarialProgress, PoolTrainParams, PoolUpdate};
use crate::attack::Attack;
use crate::data::Dataset;
use crate::error::Result;
use crate::model::Representation;
use crate::nn::{Batch, Network, SgdStep, Steps, Trainable};

/// Stream of the pools' generator, apart from the shuffling generator so that the clean batch
/// order is that of plain training from the same seed.
pub(super) const POOL_STREAM: u64 = 0x6164_765f_706f_6f6c;

/// Per-epoch tallies the steps leave for the progress callback.
#[derive(Default)]
pub(super) struct Tally {
    pub(super) attack_seconds: f64,
    pub(super) generated: usize,
    pub(super) pool_steps: usize,
    pub(super) events: Vec<AdversarialProgress>,
}

/// One pool: its level, the network above that level (its weights copied in before each pool
/// step, so the step allocates nothing), and the SGD buffers of a step on it.
pub(super) struct LevelPool {
    pub(super) level: usize,
    pub(super) pool: Option<AdversarialPool>,
    pub(super) upper: Network,
    pub(super) sgd: SgdStep<Network>,
}

pub(super) struct PoolSteps<'a, A: Attack> {
    pub(super) data: &'a Dataset,
    pub(super) attack: &'a A,
    pub(super) params: &'a PoolTrainParams,
    pub(super) pools: Vec<LevelPool>,
    pub(super) rng: ChaCha8Rng,
    pub(super) round: usize,
    pub(super) clean_steps: usize,
    pub(super) epoch: usize,
    pub(super) xb: Array2<f32>,
    pub(super) yb: Vec<usize>,
    /// The weight-decay gradient of the whole model, for a mixed step.
    pub(super) reg: Vec<Array2<f32>>,
    pub(super) tally: &'a RefCell<Tally>,
}

impl<A: Attack> PoolSteps<'_, A> {
    /// The level's inputs for training images `sources`: the images themselves at level 0,
    /// else hidden layer `level − 1`'s output.
    fn inputs(&self, model: &Network, level: usize, sources: &[usize]) -> Result<Array2<f32>> {
        let x = self.data.images().select(Axis(0), sources);
        if level == 0 {
            Ok(x)
        } else {
            model.representation(x.view(), level - 1)
        }
    }

    fn fill(&mut self, model: &Network, refresh: bool) -> Result<()> {
        let p = self.params;
        for i in 0..self.pools.len() {
            let level = self.pools[i].level;
            let count = if refresh {
                refresh_count(p.pool_size, p.refresh_fraction)
            } else {
                p.pool_size
            };
            let sources = sample(&mut self.rng, self.data.len(), count).into_vec();
            let labels: Vec<usize> = sources.iter().map(|&s| self.data.labels()[s]).collect();
            let inputs = self.inputs(model, level, &sources)?;
            let upper = model.above(level)?;
            let lp = &mut self.pools[i];
            let stats = match lp.pool.as_mut() {
                Some(pool) => pool.refresh(
                    &upper,
                    self.attack,
                    inputs.view(),
                    &labels,
                    p.target,
                    &mut self.rng,
                )?,
                None => {
                    let (pool, st) = AdversarialPool::generate(
                        &upper,
                        self.attack,
                        inputs.view(),
                        &labels,
                        p.target,
                        &mut self.rng,
                    )?;
                    lp.pool = Some(pool);
                    st
                }
            };
            let mut t = self.tally.borrow_mut();
            t.attack_seconds += stats.seconds;
            t.generated += stats.generated;
            t.events.push(AdversarialProgress::Pool {
                epoch: self.epoch,
                level,
                refresh: lp.pool.as_ref().map_or(0, |q| q.refreshes()),
                stats,
            });
        }
        Ok(())
    }

    /// Draws the next level's pool batch (levels in turn) into `xb`/`yb` and copies the
    /// model's weights into that level's upper network; the pool's index and the batch's
    /// rows and width, or `None` before the pools exist.
    fn draw(&mut self, model: &Network) -> Option<(usize, usize, usize)> {
        let i = self.round % self.pools.len();
        self.round += 1;
        let lp = &mut self.pools[i];
        let pool = lp.pool.as_ref()?;
        let rows = self.params.pool_batch.min(pool.len());
        let cols = pool.examples().ncols();
        self.yb.clear();
        for r in 0..rows {
            let slot = self.rng.gen_range(0..pool.len());
            self.xb
                .slice_mut(s![r, ..cols])
                .assign(&pool.examples().row(slot));
            self.yb.push(pool.labels()[slot]);
        }
        let params = model.params();
        let skip = params.len() - lp.upper.params().len();
        for (dst, src) in lp.upper.params_mut().into_iter().zip(&params[skip..]) {
            dst.assign(*src);
        }
        Some((i, rows, cols))
    }

    /// One SGD step on the layers above the next level in turn, from its pool.
    fn pool_step(
        &mut self,
        model: &mut Network,
        sgd: &mut SgdStep<Network>,
        lr: f32,
        momentum: f32,
    ) -> Result<()> {
        let Some((i, rows, cols)) = self.draw(model) else {
            return Ok(());
        };
        let lp = &mut self.pools[i];
        lp.sgd
            .gradient(&lp.upper, self.xb.slice(s![..rows, ..cols]), &self.yb)?;
        sgd.update_suffix(model.params_mut(), lp.sgd.grads(), lr, momentum)?;
        super::check_suffix_finite(model, lp.sgd.grads().len(), "parameters after a pool step")?;
        self.tally.borrow_mut().pool_steps += 1;
        Ok(())
    }

    /// One momentum step on the clean batch and the next level's pool batch together
    /// ([`PoolUpdate::Mixed`]); returns the clean objective.
    fn mixed_step(
        &mut self,
        model: &mut Network,
        sgd: &mut SgdStep<Network>,
        batch: &Batch<'_>,
    ) -> Result<f32> {
        let &Batch {
            x, y, lr, momentum, ..
        } = batch;
        let objective = sgd.gradient(model, x, y)?;
        let Some((i, rows, cols)) = self.draw(model) else {
            sgd.apply(model, lr, momentum);
            return Ok(objective);
        };
        let lp = &mut self.pools[i];
        lp.sgd
            .gradient(&lp.upper, self.xb.slice(s![..rows, ..cols]), &self.yb)?;
        // Both gradients carry the decay term R; rescaling them by α and β counts it
        // α (+ β above the level) times, so the rest is added back from R's own gradient.
        let (m, p) = (x.nrows() as f32, rows as f32);
        let alpha = m / (m + p);
        let beta = self.params.pool_weight * p / (m + p);
        for r in self.reg.iter_mut() {
            r.fill(0.0);
        }
        model.regularize(&mut self.reg);
        mix(sgd.grads_mut(), lp.sgd.grads(), &self.reg, alpha, beta);
        sgd.apply(model, lr, momentum);
        let count = self.reg.len();
        super::check_suffix_finite(model, count, "parameters after a mixed pool step")?;
        self.tally.borrow_mut().pool_steps += 1;
        Ok(objective)
    }
}

/// A zero array of each of `model`'s parameters' shapes: the buffer a mixed step fills with
/// the decay gradient.
pub(super) fn zeros_like(model: &Network) -> Vec<Array2<f32>> {
    model
        .params()
        .iter()
        .map(|a| Array2::zeros(a.raw_dim()))
        .collect()
}

/// `grads ← α·grads + β·pool + (1 − α − β)·reg` on the last `pool.len()` parameters and
/// `α·grads + (1 − α)·reg` on the others: the clean gradient (decay included) and the
/// pool's (decay included, layers above its level only) weighted, with the decay gradient
/// `reg` restored to weight one.
fn mix(
    grads: &mut [Array2<f32>],
    pool: &[Array2<f32>],
    reg: &[Array2<f32>],
    alpha: f32,
    beta: f32,
) {
    let skip = grads.len() - pool.len();
    for (k, (g, r)) in grads.iter_mut().zip(reg).enumerate() {
        if k < skip {
            ndarray::Zip::from(g)
                .and(r)
                .for_each(|g, &r| *g = alpha * *g + (1.0 - alpha) * r);
        } else {
            ndarray::Zip::from(g)
                .and(r)
                .and(&pool[k - skip])
                .for_each(|g, &r, &q| *g = alpha * *g + beta * q + (1.0 - alpha - beta) * r);
        }
    }
}

impl<A: Attack> Steps<Network> for PoolSteps<'_, A> {
    fn epoch_start(&mut self, model: &Network, epoch: usize) -> Result<()> {
        self.epoch = epoch;
        if epoch == self.params.warmup_epochs {
            self.fill(model, false)?;
        }
        Ok(())
    }

    fn step(
        &mut self,
        model: &mut Network,
        sgd: &mut SgdStep<Network>,
        batch: Batch<'_>,
    ) -> Result<f32> {
        let Batch {
            x,
            y,
            lr,
            momentum,
            index,
        } = batch;
        if self.params.pool_update == PoolUpdate::Mixed {
            if self.pools[0].pool.is_none() {
                return sgd.step(model, x, y, lr, momentum);
            }
            if index > 0 && index % self.params.refresh_every == 0 {
                self.fill(model, true)?;
            }
            self.clean_steps += 1;
            if self.clean_steps % self.params.pool_every != 0 {
                return sgd.step(model, x, y, lr, momentum);
            }
            return self.mixed_step(model, sgd, &batch);
        }
        let loss = sgd.step(model, x, y, lr, momentum)?;
        if self.pools[0].pool.is_some() {
            if index > 0 && index % self.params.refresh_every == 0 {
                self.fill(model, true)?;
            }
            self.clean_steps += 1;
            if self.clean_steps % self.params.pool_every == 0 {
                self.pool_step(model, sgd, lr * self.params.pool_weight, momentum)?;
            }
        }
        Ok(loss)
    }
}

/// One-step adversarial training: each batch is doubled with its signed-gradient perturbation.
pub(super) struct FgsmSteps {
    pub(super) epsilon: f32,
    pub(super) warmup: usize,
    pub(super) epoch: usize,
    pub(super) ws: crate::nn::Workspace,
    pub(super) losses: Array1<f32>,
    pub(super) grad: Array2<f32>,
    pub(super) xx: Array2<f32>,
    pub(super) yy: Vec<usize>,
}

impl Steps<Network> for FgsmSteps {
    fn capacity(&self, batch: usize) -> usize {
        2 * batch
    }

    fn epoch_start(&mut self, _: &Network, epoch: usize) -> Result<()> {
        self.epoch = epoch;
        Ok(())
    }

    fn step(
        &mut self,
        model: &mut Network,
        sgd: &mut SgdStep<Network>,
        batch: Batch<'_>,
    ) -> Result<f32> {
        let Batch {
            x, y, lr, momentum, ..
        } = batch;
        if self.epoch < self.warmup {
            return sgd.step(model, x, y, lr, momentum);
        }
        let m = x.nrows();
        let (losses, grad) = (
            self.losses.slice_mut(s![..m]),
            self.grad.slice_mut(s![..m, ..]),
        );
        model.loss_and_input_grad_into(x, y, &mut self.ws, losses, grad)?;
        self.xx.slice_mut(s![..m, ..]).assign(&x);
        let eps = self.epsilon;
        ndarray::Zip::from(self.xx.slice_mut(s![m..2 * m, ..]))
            .and(&x)
            .and(self.grad.slice(s![..m, ..]))
            .for_each(|o, &xi, &g| {
                let step = if g > 0.0 {
                    eps
                } else if g < 0.0 {
                    -eps
                } else {
                    0.0
                };
                *o = (xi + step).clamp(0.0, 1.0);
            });
        self.yy.clear();
        self.yy.extend_from_slice(y);
        self.yy.extend_from_slice(y);
        sgd.step(
            model,
            self.xx.slice(s![..2 * m, ..]),
            &self.yy,
            lr,
            momentum,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::{mix, zeros_like};
    use crate::nn::{Architecture, Network, SgdStep, Trainable};
    use ndarray::{concatenate, Array2, Axis};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn batch(rows: usize, cols: usize, seed: u64) -> (Array2<f32>, Vec<usize>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let x = Array2::from_shape_fn((rows, cols), |_| rng.gen_range(0.0..1.0));
        let y = (0..rows).map(|_| rng.gen_range(0..10)).collect();
        (x, y)
    }

    fn max_diff(a: &[Array2<f32>], b: &[Array2<f32>]) -> f32 {
        a.iter()
            .zip(b)
            .flat_map(|(a, b)| a.iter().zip(b).map(|(x, y)| (x - y).abs()))
            .fold(0.0, f32::max)
    }

    /// At the input (level 0) with weight 1, a mixed step is one SGD step on the clean and
    /// pool rows concatenated: the mixed gradient equals that batch's gradient, decay
    /// counted once.
    #[test]
    fn mixed_gradient_at_the_input_is_the_concatenated_batch() {
        let arch = Architecture::parse("FC20-10(1e-2)", 12).unwrap();
        let model = Network::new(arch, 3);
        let (xc, yc) = batch(6, 12, 1);
        let (xp, yp) = batch(4, 12, 2);
        let mut clean = SgdStep::new(&model, 10);
        clean.gradient(&model, xc.view(), &yc).unwrap();
        let upper = model.above(0).unwrap();
        let mut pool = SgdStep::new(&upper, 10);
        pool.gradient(&upper, xp.view(), &yp).unwrap();
        let mut reg = zeros_like(&model);
        model.regularize(&mut reg);
        mix(clean.grads_mut(), pool.grads(), &reg, 0.6, 0.4);
        let x = concatenate(Axis(0), &[xc.view(), xp.view()]).unwrap();
        let y: Vec<usize> = yc.iter().chain(&yp).copied().collect();
        let mut whole = SgdStep::new(&model, 10);
        whole.gradient(&model, x.view(), &y).unwrap();
        let d = max_diff(clean.grads(), whole.grads());
        assert!(d < 1e-6, "mixed vs concatenated gradient differ by {d}");
        assert!(reg.iter().any(|r| r.iter().any(|&v| v != 0.0)));
    }

    /// Above a hidden level the pool rows reach only the upper layers: the lower layers get
    /// the clean rows' share α of their gradient plus the whole decay.
    #[test]
    fn mixed_gradient_above_a_hidden_level_leaves_lower_layers_to_the_clean_rows() {
        let arch = Architecture::parse("FC16-16-10(1e-2)", 8).unwrap();
        let model = Network::new(arch, 5);
        let (xc, yc) = batch(5, 8, 3);
        let (xp, yp) = batch(5, 16, 4);
        let upper = model.above(2).unwrap();
        let mut clean = SgdStep::new(&model, 5);
        clean.gradient(&model, xc.view(), &yc).unwrap();
        let plain: Vec<Array2<f32>> = clean.grads().to_vec();
        let mut pool = SgdStep::new(&upper, 5);
        pool.gradient(&upper, xp.view(), &yp).unwrap();
        let mut reg = zeros_like(&model);
        model.regularize(&mut reg);
        mix(clean.grads_mut(), pool.grads(), &reg, 0.5, 0.5);
        let skip = plain.len() - pool.grads().len();
        assert!(skip > 0);
        for k in 0..plain.len() {
            let want = if k < skip {
                (&plain[k] - &reg[k]) * 0.5 + &reg[k]
            } else {
                (&plain[k] - &reg[k]) * 0.5 + (&pool.grads()[k - skip] - &reg[k]) * 0.5 + &reg[k]
            };
            let d = max_diff(&clean.grads()[k..=k], std::slice::from_ref(&want));
            assert!(d < 1e-6, "parameter {k}: {d}");
        }
    }
}
