//! Neural networks with hand-written backpropagation on ndarray: layers ([`Layer`]: dense,
//! 2-D convolution, max-pooling, activation) stacked into a [`Network`], one engine for
//! every model's forward and backward passes, and a seeded SGD trainer.
mod activation;
mod affine;
mod arch;
mod autoencoder;
mod gemm;
mod kernels;
mod layer;
mod network;
mod persist;
mod stack;
mod train;

pub use activation::{sigmoid, Activation};
pub use affine::InputAffine;
pub use arch::{Architecture, ConvStage, DEFAULT_WEIGHT_DECAY, MAX_SIZE};
pub use autoencoder::{
    train_ae_classifier, AeConfig, AeParams, AeReport, AeStage, Autoencoder, AutoencoderWorkspace,
};
pub use layer::{Conv2d, Dense, Layer, MaxPool2d};
#[allow(deprecated)]
pub use network::{Mlp, MlpWorkspace};
pub use network::{Network, CONV_LOCKSTEP_ROWS};
pub use stack::Workspace;
pub(crate) use train::{check_class_count, fit_loop, Batch, SgdStep, Steps};
pub use train::{
    error_rate, fit, train, EpochStats, Progress, Schedule, TrainConfig, TrainParams, TrainReport,
    Trainable,
};
