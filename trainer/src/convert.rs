//! neox checkpoints to and from Hugging Face GPT-NeoX folders
//! (`neox-convert to-hf` / `from-hf`). A split run's checkpoint (one share
//! per pipeline stage and tensor rank) converts merged into one model
//! (`dist::reshard`).

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;

use crate::checkpoint::{self, TrainState};
use crate::dist::reshard;
use crate::error::CheckpointError;
use crate::hf::{self, SaveOptions};
use crate::schedule::{DecayStyle, Schedule};

/// What [`checkpoint_to_hf`] did.
#[derive(Debug)]
pub struct Exported {
    /// The checkpoint folder read (`global_stepN`).
    pub checkpoint: PathBuf,
    pub iteration: u64,
    /// The files written.
    pub files: Vec<PathBuf>,
}

/// Writes the checkpoint of `save` at `step` (else the one `latest` names)
/// as a Hugging Face GPT-NeoX folder `out`.
pub fn checkpoint_to_hf<B: Backend>(
    save: &Path,
    step: Option<u64>,
    out: &Path,
    options: &SaveOptions,
    device: &B::Device,
) -> Result<Exported, CheckpointError> {
    // A split run's shares are checked and merged first.
    let split = match reshard::is_split(save)? {
        true => reshard::find(save, step, false)?.filter(|saved| saved.split),
        false => None,
    };
    let state = match split {
        Some(saved) => saved.state,
        None => checkpoint::read_state(&checkpoint::folder(save, step)?)?,
    };
    if let Some(why) = hf::unsupported(&state.model) {
        return Err(CheckpointError::State {
            path: save.to_path_buf(),
            message: format!("this model cannot be written as Hugging Face GPT-NeoX: {why}"),
        });
    }
    let (model, state, dir) = reshard::load_model::<B>(save, step, device)?;
    let files = hf::save_with(&model, out, options)?;
    Ok(Exported {
        checkpoint: dir,
        iteration: state.iteration,
        files,
    })
}

/// Writes the Hugging Face GPT-NeoX folder `hf_dir` as the neox checkpoint
/// `save/global_step0` (weights only, `latest` pointing at it), which
/// `neox-train` loads with `finetune: true` or `no_load_optim: true`.
pub fn hf_to_checkpoint<B: Backend>(
    hf_dir: &Path,
    save: &Path,
    device: &B::Device,
) -> Result<PathBuf, CheckpointError> {
    let model = hf::load::<B>(hf_dir, device)?;
    let state = TrainState {
        iteration: 0,
        consumed_train_samples: 0,
        seed: 1234,
        // Not used: both ways of loading weights without optimizer state
        // take the configured schedule.
        schedule: Schedule::new(DecayStyle::Constant, 0.0, 0.0, 0.0, 1),
        model: model.config.clone(),
        optimizer_shards: 0,
        skipped_steps: 0,
        loss_scaler: None,
        layout: None,
    };
    checkpoint::save_weights(save, &model, &state)
}
