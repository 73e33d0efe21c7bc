//! The per-batch hooks of the one SGD loop ([`crate::nn::fit_loop`]): a pool step after the
//! clean steps (levels in turn, refreshes on schedule), or a batch doubled with its one-step
//! signed-gradient perturbation.

use std::cell::RefCell;

use ndarray::{s, Array1, Array2, ArrayView2, Axis};
use rand::seq::index::sample;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::pool::{refresh_count, AdversarialPool};
use super::{AdversarialParams, AdversarialProgress};
use crate::attack::Attack;
use crate::data::Dataset;
use crate::error::Result;
use crate::model::Representation;
use crate::nn::{Network, SgdStep, Steps, Trainable};

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
    pub(super) params: &'a AdversarialParams,
    pub(super) pools: Vec<LevelPool>,
    pub(super) rng: ChaCha8Rng,
    pub(super) round: usize,
    pub(super) clean_steps: usize,
    pub(super) epoch: usize,
    pub(super) xb: Array2<f32>,
    pub(super) yb: Vec<usize>,
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

    /// One SGD step on the layers above the next level in turn, from its pool.
    fn pool_step(
        &mut self,
        model: &mut Network,
        sgd: &mut SgdStep<Network>,
        lr: f32,
        momentum: f32,
    ) -> Result<()> {
        let i = self.round % self.pools.len();
        self.round += 1;
        let lp = &mut self.pools[i];
        let Some(pool) = lp.pool.as_ref() else {
            return Ok(());
        };
        let rows = self.params.pool_batch.min(pool.len());
        self.yb.clear();
        for r in 0..rows {
            let slot = self.rng.gen_range(0..pool.len());
            self.xb
                .slice_mut(s![r, ..pool.examples().ncols()])
                .assign(&pool.examples().row(slot));
            self.yb.push(pool.labels()[slot]);
        }
        let params = model.params();
        let skip = params.len() - lp.upper.params().len();
        for (dst, src) in lp.upper.params_mut().into_iter().zip(&params[skip..]) {
            dst.assign(*src);
        }
        let x = self.xb.slice(s![..rows, ..pool.examples().ncols()]);
        lp.sgd.gradient(&lp.upper, x, &self.yb)?;
        sgd.update_suffix(model.params_mut(), lp.sgd.grads(), lr, momentum)?;
        super::check_suffix_finite(model, lp.sgd.grads().len(), "parameters after a pool step")?;
        self.tally.borrow_mut().pool_steps += 1;
        Ok(())
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
        x: ArrayView2<'_, f32>,
        y: &[usize],
        lr: f32,
        momentum: f32,
        batch: usize,
    ) -> Result<f32> {
        let loss = sgd.step(model, x, y, lr, momentum)?;
        if self.pools[0].pool.is_some() {
            if batch > 0 && batch % self.params.refresh_every == 0 {
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
        x: ArrayView2<'_, f32>,
        y: &[usize],
        lr: f32,
        momentum: f32,
        _: usize,
    ) -> Result<f32> {
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
