//! The trainer's typed errors: each names the file and what was expected.

use std::path::PathBuf;

use thiserror::Error;

/// A configuration that cannot be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not valid YAML: {error}")]
    Yaml {
        path: PathBuf,
        error: serde_yaml_ng::Error,
    },
    #[error("{path}: expected a mapping of options (`name: value`) at the top level")]
    NotMapping { path: PathBuf },
    #[error("{path}: option names must be strings, found {found}")]
    BadName { path: PathBuf, found: String },
    #[error("{file}: option `{key}`: {message}")]
    BadValue {
        file: PathBuf,
        key: String,
        message: String,
    },
    #[error("unknown option{} {}", if .0.len() > 1 { "s" } else { "" }, .0.join("; "))]
    Unknown(Vec<String>),
    #[error(
        "option{} not implemented yet, with a value that would change the run: {}; \
         remove {}, or pass --allow-unimplemented to train without {}",
        if .0.len() > 1 { "s" } else { "" }, .0.join("; "),
        if .0.len() > 1 { "them" } else { "it" }, if .0.len() > 1 { "them" } else { "it" }
    )]
    Unimplemented(Vec<String>),
    #[error("option `{key}` is required: {why}")]
    Missing { key: String, why: String },
}

/// A Hugging Face checkpoint that cannot be read or written.
#[derive(Debug, Error)]
pub enum CheckpointError {
    #[error("{path}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a valid Hugging Face GPT-NeoX config.json: {message}")]
    HfConfig { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Safetensors { path: PathBuf, message: String },
    #[error("{path}: tensor `{name}`: {message}")]
    Tensor {
        path: PathBuf,
        name: String,
        message: String,
    },
    #[error("{path}: cannot record {what}: {message}")]
    Record {
        path: PathBuf,
        what: &'static str,
        message: String,
    },
    #[error("{path}: {message}")]
    State { path: PathBuf, message: String },
    /// The ranks could not agree while saving or loading together.
    #[error("checkpoint: {0}")]
    Ranks(crate::dist::CommError),
}

/// Anything that stops a training run.
#[derive(Debug, Error)]
pub enum TrainError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Schedule(#[from] crate::schedule::ScheduleMismatch),
    #[error("data: {0}")]
    Data(String),
    #[error("device: {0}")]
    Device(String),
    #[error("{path}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("training diverged at iteration {iteration}: loss is {loss}")]
    Diverged { iteration: u64, loss: f64 },
    #[error(transparent)]
    Ranks(#[from] crate::dist::CommError),
    #[error(transparent)]
    Precision(#[from] crate::precision::ScaleExhausted),
}

impl From<crate::dist::CommError> for CheckpointError {
    fn from(e: crate::dist::CommError) -> Self {
        CheckpointError::Ranks(e)
    }
}
