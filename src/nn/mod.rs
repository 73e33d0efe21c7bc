//! Neural networks with hand-written backpropagation on ndarray.
mod activation;
mod adversarial;
mod arch;
mod autoencoder;
mod kernels;
mod mlp;
mod persist;
mod train;

pub use activation::{sigmoid, Activation};
pub use adversarial::{
    refresh_count, train_adversarial, AdversarialConfig, AdversarialEpoch, AdversarialParams,
    AdversarialPool, AdversarialProgress, AdversarialReport, PoolStats, PoolTarget,
};
pub use arch::{Architecture, DEFAULT_WEIGHT_DECAY};
pub use autoencoder::{
    train_ae_classifier, AeRecipe, AeReport, AeStage, Autoencoder, AutoencoderWorkspace,
};
pub use mlp::{Mlp, MlpWorkspace};
pub use persist::ModelFile;
pub use train::{
    error_rate, fit, train, EpochStats, Progress, Schedule, TrainConfig, TrainParams, TrainReport,
    Trainable,
};
