//! The paper's `AE400-10` training pipeline: pretrain an [`Autoencoder`], train a softmax layer
//! on its codes, stack the two into a [`Network`] and fine-tune it.

use ndarray::Axis;

use super::{check_named_decay, Autoencoder};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::nn::{
    fit, train, Activation, Architecture, Network, Progress, TrainConfig, TrainParams, TrainReport,
};
use crate::params::{Check, Checked};

/// How an autoencoder classifier such as `AE400-10` is trained, as given: unsupervised
/// pretraining of the autoencoder, a softmax layer on its codes, then (optionally) fine-tuning
/// the stacked encoder + softmax as one network. [`AeParams::check`] turns the values into an
/// [`AeConfig`]. The zoo holds the paper's values (`crate::zoo::recipe("AE400-10")`).
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct AeParams {
    /// Width of the code (hidden) layer; 400 in the paper.
    pub code: usize,
    /// Weight decay of the autoencoder during pretraining.
    pub ae_weight_decay: f32,
    /// Weight decay of the classifier (softmax layer, and the stack when fine-tuning); the
    /// paper's λ = 1e-6.
    pub weight_decay: f32,
    /// SGD settings of the autoencoder pretraining (the seed is replaced by the run's seed).
    pub pretrain: TrainParams,
    /// SGD settings of the softmax layer trained on the fixed codes.
    pub softmax: TrainParams,
    /// SGD settings of the fine-tuning of the whole stack, or `None` to keep the encoder
    /// frozen.
    pub finetune: Option<TrainParams>,
}

impl AeParams {
    /// Sets the fine-tuning stage (`None`: keep the encoder frozen).
    pub fn with_finetune(mut self, finetune: Option<TrainParams>) -> Self {
        self.finetune = finetune;
        self
    }
}

impl Check for AeParams {
    type Checked = AeConfig;

    /// Validates every value once; the result cannot be invalid.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] naming the first bad value: `code` if it is 0 or above
    /// [`MAX_SIZE`](crate::nn::MAX_SIZE), `ae_weight_decay` or `weight_decay` if negative or
    /// not finite, and the stages' values as [`TrainParams::check`](Check::check) names them.
    fn check(self) -> Result<AeConfig> {
        if self.code == 0 || self.code > crate::nn::MAX_SIZE {
            return Err(Error::param(
                "code",
                format!("must be in 1..={}, got {}", crate::nn::MAX_SIZE, self.code),
            ));
        }
        check_named_decay("ae_weight_decay", self.ae_weight_decay)?;
        check_named_decay("weight_decay", self.weight_decay)?;
        for stage in [&self.pretrain, &self.softmax]
            .into_iter()
            .chain(self.finetune.as_ref())
        {
            stage.clone().check()?;
        }
        Ok(Checked::assume_valid(self))
    }
}

/// Checked settings of [`train_ae_classifier`] (from [`AeParams::check`](Check::check)).
pub type AeConfig = Checked<AeParams>;

impl Checked<AeParams> {
    /// The checked SGD settings of the autoencoder pretraining.
    pub fn pretrain_config(&self) -> TrainConfig {
        Checked::assume_valid(self.pretrain.clone())
    }

    /// The checked SGD settings of the softmax layer on the fixed codes.
    pub fn softmax_config(&self) -> TrainConfig {
        Checked::assume_valid(self.softmax.clone())
    }

    /// The checked SGD settings of the fine-tuning, or `None` when the encoder stays frozen.
    pub fn finetune_config(&self) -> Option<TrainConfig> {
        self.finetune.clone().map(Checked::assume_valid)
    }

    /// The stacked classifier's architecture for inputs of width `input` and `classes`
    /// classes: one sigmoid hidden layer of `code` units and λ = `weight_decay`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] for a zero width.
    pub fn architecture(&self, input: usize, classes: usize) -> Result<Architecture> {
        Architecture::new(
            input,
            vec![self.code],
            classes,
            Activation::Sigmoid,
            self.weight_decay,
        )
    }
}

/// Which stage of [`train_ae_classifier`] a progress event comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum AeStage {
    /// Unsupervised autoencoder training.
    Pretrain,
    /// Softmax layer on the fixed codes.
    Softmax,
    /// The whole stack.
    Finetune,
}

/// What [`train_ae_classifier`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct AeReport {
    /// Reconstruction error (nats per image) on the training set before pretraining.
    pub reconstruction_before: f32,
    /// Reconstruction error after pretraining.
    pub reconstruction_after: f32,
    /// The pretraining run.
    pub pretrain: TrainReport,
    /// The softmax run on the codes (its train error is the frozen-encoder error).
    pub softmax: TrainReport,
    /// The fine-tuning run, if any (its train error is the final one).
    pub finetune: Option<TrainReport>,
    /// The pretrained autoencoder (kept for reconstructions and analysis).
    pub autoencoder: Autoencoder,
}

/// Trains the paper's `AE400-10` on `data`: pretrains an [`Autoencoder`] with `config.code`
/// units, trains a softmax layer on its codes, stacks `[W_enc, b_enc, W_soft, b_soft]` into an
/// [`Network`] with one sigmoid hidden layer (so the result is a plain `Network`: a [`Classifier`],
/// [`Differentiable`] through the encoder, and a [`Representation`] whose layer 0 is the code)
/// and, if `config` has a fine-tuning stage, fine-tunes the whole stack. Every stage is seeded from `seed`.
///
/// `progress` receives each stage's training events.
///
/// # Errors
///
/// Whatever a stage reports: a diverging loss
/// ([`Error::NonFinite`]), or shape errors.
///
/// [`Classifier`]: crate::Classifier
/// [`Differentiable`]: crate::Differentiable
/// [`Representation`]: crate::Representation
pub fn train_ae_classifier(
    data: &Dataset,
    config: &AeConfig,
    seed: u64,
    mut progress: impl FnMut(AeStage, &Progress),
) -> Result<(Network, AeReport)> {
    let input = data.input_dim();
    // Distinct seeds per stage so that the stages do not share shuffling orders.
    let stage_seed = |k: u64| seed.wrapping_mul(4).wrapping_add(k);
    let pre_cfg = config.pretrain_config().with_seed(stage_seed(0));
    let soft_cfg = config.softmax_config().with_seed(stage_seed(1));
    let fine_cfg = config.finetune_config().map(|c| c.with_seed(stage_seed(2)));
    let arch = config.architecture(input, data.num_classes().max(2))?;

    let mut ae = Autoencoder::new(input, config.code, config.ae_weight_decay, seed)?;
    let reconstruction_before = ae.reconstruction_error(data)?;
    let pretrain = fit(&mut ae, data, &pre_cfg, |p| progress(AeStage::Pretrain, p))?;
    let reconstruction_after = ae.reconstruction_error(data)?;

    let codes = ae.encode_dataset(data)?;
    let soft_arch = Architecture::new(
        config.code,
        vec![],
        arch.classes(),
        Activation::Sigmoid,
        config.weight_decay,
    )?;
    let mut soft = Network::new(soft_arch, stage_seed(3));
    let softmax = train(&mut soft, &codes, None, &soft_cfg, |p| {
        progress(AeStage::Softmax, p)
    })?;
    drop(codes);

    let (w_enc, b_enc) = ae.encoder();
    let params = vec![
        w_enc.clone(),
        b_enc.clone(),
        soft.weights(0).expect("one layer").to_owned(),
        soft.bias(0)
            .expect("one layer")
            .insert_axis(Axis(0))
            .to_owned(),
    ];
    let mut stack = Network::from_params(arch, params)?;
    let finetune = match fine_cfg {
        Some(cfg) => Some(train(&mut stack, data, None, &cfg, |p| {
            progress(AeStage::Finetune, p)
        })?),
        None => None,
    };
    Ok((
        stack,
        AeReport {
            reconstruction_before,
            reconstruction_after,
            pretrain,
            softmax,
            finetune,
            autoencoder: ae,
        },
    ))
}
