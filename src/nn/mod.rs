//! Neural networks with hand-written backpropagation on ndarray.
mod activation;
mod arch;
mod kernels;
mod autoencoder;
mod mlp;
mod persist;
mod train;

pub use activation::{sigmoid, Activation};
pub use autoencoder::{
    train_ae_classifier, AeRecipe, AeReport, AeStage, Autoencoder, AutoencoderWorkspace,
};
pub use arch::{Architecture, DEFAULT_WEIGHT_DECAY};
pub use mlp::{Mlp, MlpWorkspace};
pub use persist::ModelFile;
pub use train::{
    error_rate, fit, train, EpochStats, Progress, Schedule, TrainConfig, TrainParams, TrainReport,
    Trainable,
};
