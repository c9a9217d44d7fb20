//! The GPT-NeoX model and training loop in Burn.
//!
//! - [`config`]: GPT-NeoX YAML configs, merged and typed.
//! - [`model`]: the GPT-NeoX architecture as a Burn module.
//! - [`optim`], [`schedule`]: AdamW with GPT-NeoX's parameter groups and
//!   global-norm clipping; the learning-rate schedule.
//! - [`flat_adam`], [`offload`]: that AdamW on flat host buffers, and
//!   ZeRO-Offload (the optimizer state and step on the host).
//! - [`plan`]: what a config will train and whether it fits (`neox-train --check`).

pub mod alloc;
pub mod checkpoint;
pub mod config;
pub mod convert;
pub mod data;
pub mod device;
pub mod dist;
pub mod error;
pub mod eval;
pub mod flat_adam;
mod fsutil;
pub mod generate;
pub mod hf;
pub mod metrics;
pub mod model;
pub mod offload;
pub mod optim;
pub mod plan;
pub mod precision;
pub mod recompute;
pub mod schedule;
pub mod train;

pub use config::NeoxArgs;
pub use error::{CheckpointError, ConfigError, TrainError};
pub use model::{GptNeox, ModelConfig};
