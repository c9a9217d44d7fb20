//! Training checkpoints, GPT-NeoX style: `{save}/global_step{N}/` holding the
//! model and optimizer state (Burn records, full precision), and `state.json`
//! (iteration, consumed samples, RNG seed, schedule, model shape); `{save}/latest`
//! names the newest. A checkpoint is written in a temporary folder and renamed
//! into place; `latest` changes only after that, so a crash never leaves a
//! broken `latest`.

use std::fs;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::record::{BinFileRecorder, FullPrecisionSettings};
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use crate::dist::{DataParallel, ParamLayout};
use crate::error::CheckpointError;
use crate::fsutil::{sync_dir, write_atomic};
use crate::model::{GptNeox, ModelConfig};
use crate::optim::NeoxOptimizer;
use crate::schedule::Schedule;

/// Where the run stands: everything besides tensors that resuming needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimizer steps taken.
    pub iteration: u64,
    /// Training samples consumed (the data position).
    pub consumed_train_samples: u64,
    /// The run's seed. The backend RNG (dropout) is reseeded from
    /// `(seed, iteration)` before every step, so this pair is its whole state.
    pub seed: u64,
    pub schedule: Schedule,
    pub model: ModelConfig,
    /// Ranks whose optimizer-state files the checkpoint holds
    /// (`optim_*_rank{r}.bin`): the data-parallel size under ZeRO, else 1.
    #[serde(default = "one")]
    pub optimizer_shards: usize,
}

fn one() -> usize {
    1
}

const LATEST: &str = "latest";
const PREFIX: &str = "global_step";

fn io(path: &Path) -> impl Fn(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The folder of the checkpoint `latest` names in `save`, if any.
pub fn latest(save: &Path) -> Result<Option<PathBuf>, CheckpointError> {
    let pointer = save.join(LATEST);
    let name = match fs::read_to_string(&pointer) {
        Ok(name) => name.trim().to_string(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(&pointer)(e)),
    };
    if !name.starts_with(PREFIX) || name.contains(['/', '\\']) {
        return Err(CheckpointError::State {
            path: pointer,
            message: format!("expected a `{PREFIX}N` folder name, found `{name}`"),
        });
    }
    Ok(Some(save.join(name)))
}

/// Writes a checkpoint of `model`, `optim` and `state` into `save`, moves
/// `latest` to it, then keeps only the newest `keep_last` checkpoints.
///
/// Collective over the data-parallel ranks: rank 0 writes the model and the
/// run state, and each rank that holds optimizer state its own part, all into
/// `.global_stepN.partial`; once every rank has written, rank 0 renames it
/// into place and moves `latest`. A rank that fails or dies before that
/// leaves the previous checkpoint and `latest` as they were.
pub fn save<B: AutodiffBackend>(
    save: &Path,
    model: &GptNeox<B>,
    optim: &NeoxOptimizer<B, GptNeox<B>>,
    state: &TrainState,
    keep_last: Option<usize>,
    dp: &DataParallel,
) -> Result<PathBuf, CheckpointError> {
    let name = format!("{PREFIX}{}", state.iteration);
    let dir = save.join(&name);
    let temp = save.join(format!(".{name}.partial"));
    let first = dp.rank() == 0;
    if first {
        fs::create_dir_all(save).map_err(io(save))?;
        remove_partial(save)?;
        fs::create_dir(&temp).map_err(io(&temp))?;
    }
    dp.barrier()?;
    let mut written = Vec::new();
    if first {
        let recorder = BinFileRecorder::<FullPrecisionSettings>::new();
        let model_path = temp.join("model");
        model
            .clone()
            .save_file(model_path.clone(), &recorder)
            .map_err(|e| CheckpointError::Record {
                path: model_path.with_extension("bin"),
                what: "model",
                message: e.to_string(),
            })?;
        let state_path = temp.join("state.json");
        let text = serde_json::to_string_pretty(state).map_err(|e| CheckpointError::State {
            path: state_path.clone(),
            message: e.to_string(),
        })?;
        write_atomic(&state_path, text.as_bytes()).map_err(io(&state_path))?;
        written.push(model_path.with_extension("bin"));
    }
    if dp.writes_optimizer_state() {
        written.extend(optim.save(&temp, dp.rank())?);
    }
    // Each rank makes its own files durable before saying it is done.
    for path in written {
        fs::File::open(&path)
            .and_then(|f| f.sync_all())
            .map_err(io(&path))?;
    }
    dp.barrier()?;
    if first {
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(io(&dir))?;
        }
        fs::rename(&temp, &dir).map_err(io(&dir))?;
        sync_dir(&dir).map_err(io(&dir))?;
        let pointer = save.join(LATEST);
        write_atomic(&pointer, name.as_bytes()).map_err(io(&pointer))?;
        if let Some(keep) = keep_last {
            prune(save, keep)?;
        }
    }
    dp.barrier()?;
    Ok(dir)
}

/// Removes the folders of checkpoints whose writing never finished
/// (`.global_stepN.partial`, and earlier versions' `.global_stepN.tmp-PID`):
/// a run that died while saving leaves one; it is never read as a checkpoint.
fn remove_partial(save: &Path) -> Result<(), CheckpointError> {
    for entry in fs::read_dir(save).map_err(io(save))? {
        let path = entry.map_err(io(save))?.path();
        let stale = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(&format!(".{PREFIX}")));
        if stale && path.is_dir() {
            let bytes = dir_bytes(&path);
            fs::remove_dir_all(&path).map_err(io(&path))?;
            tracing::info!(folder = %path.display(), bytes, "removed an unfinished checkpoint");
        }
    }
    Ok(())
}

fn dir_bytes(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Removes all but the newest `keep` checkpoints.
fn prune(save: &Path, keep: usize) -> Result<(), CheckpointError> {
    let mut steps: Vec<(u64, PathBuf)> = Vec::new();
    for entry in fs::read_dir(save).map_err(io(save))? {
        let path = entry.map_err(io(save))?.path();
        let step = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix(PREFIX))
            .and_then(|n| n.parse::<u64>().ok());
        if let (Some(step), true) = (step, path.is_dir()) {
            steps.push((step, path));
        }
    }
    steps.sort();
    let excess = steps.len().saturating_sub(keep);
    for (_, path) in steps.into_iter().take(excess) {
        fs::remove_dir_all(&path).map_err(io(&path))?;
    }
    Ok(())
}

/// A run restored from a checkpoint.
pub struct Restored<B: AutodiffBackend> {
    pub model: GptNeox<B>,
    pub optim: NeoxOptimizer<B, GptNeox<B>>,
    pub state: TrainState,
}

/// Reads the checkpoint in `dir` into `model` and `optim`; under ZeRO each
/// rank keeps the optimizer state of the parameters it owns, whatever the
/// number of ranks that saved it.
pub fn load<B: AutodiffBackend>(
    dir: &Path,
    model: GptNeox<B>,
    optim: NeoxOptimizer<B, GptNeox<B>>,
    device: &B::Device,
    dp: &DataParallel,
) -> Result<Restored<B>, CheckpointError> {
    let state_path = dir.join("state.json");
    let text = fs::read_to_string(&state_path).map_err(io(&state_path))?;
    let state: TrainState = serde_json::from_str(&text).map_err(|e| CheckpointError::State {
        path: state_path.clone(),
        message: e.to_string(),
    })?;
    if state.model != model.config {
        return Err(CheckpointError::State {
            path: state_path,
            message: "the checkpoint's model differs from the configured one (shape or options)"
                .into(),
        });
    }
    let recorder = BinFileRecorder::<FullPrecisionSettings>::new();
    let model_path = dir.join("model");
    let model = model
        .load_file(model_path.clone(), &recorder, device)
        .map_err(|e| CheckpointError::Record {
            path: model_path.with_extension("bin"),
            what: "model",
            message: e.to_string(),
        })?;
    let owned = dp.owned(&ParamLayout::of::<B, _>(&model));
    let optim = optim.load(
        dir,
        state.optimizer_shards.max(1),
        |id| owned.contains(id),
        device,
    )?;
    Ok(Restored {
        model,
        optim,
        state,
    })
}
