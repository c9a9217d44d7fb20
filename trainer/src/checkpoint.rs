//! Training checkpoints, GPT-NeoX style: `{save}/global_step{N}/` holding the
//! model and optimizer state (Burn records, full precision), and `state.json`
//! (iteration, consumed samples, RNG seed, schedule, model shape); `{save}/latest`
//! names the newest. A checkpoint is written in a temporary folder and renamed
//! into place; `latest` changes only after that, so a crash never leaves a
//! broken `latest`.

use std::fs;
use std::path::{Path, PathBuf};

use burn::module::{AutodiffModule, Module};
use burn::record::{BinFileRecorder, FullPrecisionSettings};
use burn::tensor::backend::{AutodiffBackend, Backend};
use serde::{Deserialize, Serialize};

use crate::dist::{DataParallel, ParamLayout};
use crate::error::CheckpointError;
use crate::fsutil::{sync_dir, write_atomic};
use crate::model::{GptNeox, ModelConfig};
use crate::optim::NeoxOptimizer;
use crate::precision::ScalerState;
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
    /// (`optim_*_rank{r}.bin`): the data-parallel size under ZeRO, else 1;
    /// 0 for weights without optimizer state (a converted model).
    #[serde(default = "one")]
    pub optimizer_shards: usize,
    /// Steps skipped for overflowing fp16 gradients: the learning-rate
    /// schedule advances only on the others, as DeepSpeed's does.
    #[serde(default)]
    pub skipped_steps: u64,
    /// The fp16 loss scaler's state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_scaler: Option<ScalerState>,
    /// A split run's layout (stages and tensor ranks; see `dist::reshard`),
    /// in each of its shares; absent in an unsplit run's checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout: Option<crate::dist::reshard::Layout>,
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

/// The checkpoint a run with `load` resumes from: `None` when `load` does not
/// exist or holds nothing yet (a first run with `save` = `load`); refused when
/// it holds something that is not a neox checkpoint (a Hugging Face model
/// folder, `global_step` folders without `latest`, a file), so that a run
/// never starts from random weights while the user meant to load some.
pub fn resume_point(load: &Path) -> Result<Option<PathBuf>, CheckpointError> {
    let refuse = |message: String| CheckpointError::State {
        path: load.to_path_buf(),
        message,
    };
    if !load.exists() {
        return Ok(None);
    }
    if !load.is_dir() {
        return Err(refuse(
            "`load` must name a checkpoint folder (holding `latest`), found a file".into(),
        ));
    }
    if let Some(dir) = latest(load)? {
        if !dir.join("state.json").is_file() {
            return Err(refuse(format!(
                "`latest` names {}, which holds no checkpoint (no state.json)",
                dir.display()
            )));
        }
        return Ok(Some(dir));
    }
    let mut found = Vec::new();
    for entry in fs::read_dir(load).map_err(io(load))? {
        let name = entry.map_err(io(load))?.file_name();
        let name = name.to_string_lossy();
        let model_file = ["config.json", "model.safetensors", "pytorch_model.bin"]
            .contains(&name.as_ref())
            || name.ends_with(".safetensors");
        if model_file || name.starts_with(PREFIX) {
            found.push(name.into_owned());
        }
    }
    if found.is_empty() {
        return Ok(None);
    }
    found.sort();
    let what = if found.iter().any(|n| !n.starts_with(PREFIX)) {
        "looks like a Hugging Face model folder, not a neox checkpoint \
         (converting one is a separate step)"
    } else {
        "holds checkpoint folders but no `latest` naming one \
         (write the folder name, e.g. `global_step1000`, into `latest`)"
    };
    Err(refuse(format!(
        "`load` {what}: found {}; training would start from random weights",
        found.join(", ")
    )))
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
    save_module(save, model, optim, state, keep_last, dp)
}

/// [`save`] for any module: a rank's share of a split model among them
/// (each pipeline stage and tensor rank saves its own, see `dist::run`).
pub fn save_module<B: AutodiffBackend, M: AutodiffModule<B>>(
    save: &Path,
    model: &M,
    optim: &NeoxOptimizer<B, M>,
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
    if dp.writes_optimizer_state() || optim.state_on_every_rank() {
        written.extend(optim.save(&temp, dp.rank())?);
    }
    // Fault injection for the tests of a run killed mid-save: wait here,
    // with the files written but not yet published.
    if let Some(ms) = std::env::var("NEOX_FAULT_PAUSE_IN_SAVE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
    // Each rank makes its own files durable before saying it is done.
    for path in written {
        fs::File::open(&path)
            .and_then(|f| f.sync_all())
            .map_err(io(&path))?;
    }
    dp.barrier()?;
    if first {
        for step in publish_steps(save, &temp, &name) {
            step.run(save)?;
        }
        if let Some(keep) = keep_last {
            prune(save, keep, &dir)?;
        }
    }
    dp.barrier()?;
    Ok(dir)
}

/// Writes `model` alone, without optimizer state, as the checkpoint
/// `global_step{state.iteration}` of `save` and points `latest` at it (what
/// `neox-convert from-hf` makes). `state.optimizer_shards` is set to 0:
/// training from it needs `finetune` or `no_load_optim`.
pub fn save_weights<B: Backend>(
    save: &Path,
    model: &GptNeox<B>,
    state: &TrainState,
) -> Result<PathBuf, CheckpointError> {
    let name = format!("{PREFIX}{}", state.iteration);
    let temp = save.join(format!(".{name}.partial"));
    fs::create_dir_all(save).map_err(io(save))?;
    remove_partial(save)?;
    fs::create_dir(&temp).map_err(io(&temp))?;
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
    let model_path = model_path.with_extension("bin");
    fs::File::open(&model_path)
        .and_then(|f| f.sync_all())
        .map_err(io(&model_path))?;
    let state = TrainState {
        optimizer_shards: 0,
        ..state.clone()
    };
    let state_path = temp.join("state.json");
    let text = serde_json::to_string_pretty(&state).map_err(|e| CheckpointError::State {
        path: state_path.clone(),
        message: e.to_string(),
    })?;
    write_atomic(&state_path, text.as_bytes()).map_err(io(&state_path))?;
    for step in publish_steps(save, &temp, &name) {
        step.run(save)?;
    }
    Ok(save.join(name))
}

/// The checkpoint folder of `save` at `step`, else the one `latest` names.
pub fn folder(save: &Path, step: Option<u64>) -> Result<PathBuf, CheckpointError> {
    let dir = match step {
        Some(step) => save.join(format!("{PREFIX}{step}")),
        None => latest(save)?.ok_or_else(|| CheckpointError::State {
            path: save.to_path_buf(),
            message: "no `latest` file naming a checkpoint: not a neox checkpoint folder \
                      (give the step with --step, or the folder `save` wrote)"
                .into(),
        })?,
    };
    if !dir.join("state.json").is_file() {
        return Err(CheckpointError::State {
            path: dir,
            message: "no checkpoint here (no state.json)".into(),
        });
    }
    Ok(dir)
}

/// Reads a checkpoint's `state.json`.
pub fn read_state(dir: &Path) -> Result<TrainState, CheckpointError> {
    let state_path = dir.join("state.json");
    let text = fs::read_to_string(&state_path).map_err(io(&state_path))?;
    serde_json::from_str(&text).map_err(|e| CheckpointError::State {
        path: state_path.clone(),
        message: e.to_string(),
    })
}

/// Reads the model of the checkpoint in `dir` (any backend, no optimizer):
/// for generation, evaluation and conversion.
pub fn load_model<B: Backend>(
    dir: &Path,
    device: &B::Device,
) -> Result<(GptNeox<B>, TrainState), CheckpointError> {
    let state = read_state(dir)?;
    let recorder = BinFileRecorder::<FullPrecisionSettings>::new();
    let model_path = dir.join("model");
    let model = state
        .model
        .init::<B>(device)
        .load_file(model_path.clone(), &recorder, device)
        .map_err(|e| CheckpointError::Record {
            path: model_path.with_extension("bin"),
            what: "model",
            message: e.to_string(),
        })?;
    Ok((model, state))
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

/// One filesystem step of putting a written checkpoint in place.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Rename(PathBuf, PathBuf),
    Remove(PathBuf),
    /// Points `latest` at this folder name.
    Point(String),
}

impl Step {
    fn run(&self, save: &Path) -> Result<(), CheckpointError> {
        match self {
            Step::Rename(from, to) => {
                fs::rename(from, to).map_err(io(to))?;
                sync_dir(to).map_err(io(to))
            }
            Step::Remove(path) => fs::remove_dir_all(path).map_err(io(path)),
            Step::Point(name) => {
                let pointer = save.join(LATEST);
                write_atomic(&pointer, name.as_bytes()).map_err(io(&pointer))
            }
        }
    }
}

/// The steps that move the complete checkpoint in `temp` to `save/name` and
/// point `latest` at it, such that `latest` names a complete checkpoint after
/// every step. Re-saving a step whose folder exists (and which `latest` may
/// name) moves the new and the old copy under names `latest` accepts, and
/// points `latest` at whichever is not being moved.
fn publish_steps(save: &Path, temp: &Path, name: &str) -> Vec<Step> {
    let dir = save.join(name);
    if !dir.exists() {
        return vec![
            Step::Rename(temp.to_path_buf(), dir),
            Step::Point(name.to_string()),
        ];
    }
    let new = format!("{name}.new-{}", std::process::id());
    let old = format!("{name}.old-{}", std::process::id());
    vec![
        Step::Rename(temp.to_path_buf(), save.join(&new)),
        Step::Point(new.clone()),
        Step::Rename(dir.clone(), save.join(&old)),
        Step::Point(old.clone()),
        Step::Rename(save.join(&new), dir),
        Step::Point(name.to_string()),
        Step::Remove(save.join(&old)),
    ]
}

/// Removes all but the newest `keep` checkpoints, never `written` nor the one
/// `latest` names (a run resumed from an older checkpoint writes below newer
/// ones left by an earlier run).
fn prune(save: &Path, keep: usize, written: &Path) -> Result<(), CheckpointError> {
    let protected = [Some(written.to_path_buf()), latest(save)?];
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
        if !protected.contains(&Some(path.clone())) {
            fs::remove_dir_all(&path).map_err(io(&path))?;
        }
    }
    Ok(())
}

/// A run restored from a checkpoint.
pub struct Restored<B: AutodiffBackend> {
    pub model: GptNeox<B>,
    pub optim: NeoxOptimizer<B, GptNeox<B>>,
    pub state: TrainState,
}

/// What a run takes from the checkpoint it loads (GPT-NeoX's `finetune`
/// and `no_load_optim`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadWhat {
    /// Everything: weights, optimizer state, iteration and schedule.
    Resume,
    /// Weights and iteration, not the optimizer state.
    NoOptim,
    /// Weights only.
    Finetune,
}

/// The fields of two model configurations that differ in what the weights
/// mean (shapes and computation; not the sequence length, dropout or init).
pub(crate) fn weight_differences(a: &ModelConfig, b: &ModelConfig) -> Vec<String> {
    let mut out = Vec::new();
    let mut field = |name: &str, x: String, y: String| {
        if x != y {
            out.push(format!("{name} {x} (checkpoint) vs {y} (config)"));
        }
    };
    // `shown!` compares fields by their Display text, `debug!` by Debug;
    // the message names the field.
    macro_rules! shown {
        ($($f:ident),*) => { $(field(stringify!($f), a.$f.to_string(), b.$f.to_string());)* };
    }
    macro_rules! debug {
        ($($f:ident),*) => { $(field(stringify!($f), format!("{:?}", a.$f), format!("{:?}", b.$f));)* };
    }
    shown!(
        num_layers,
        hidden_size,
        num_attention_heads,
        vocab_size,
        intermediate_size
    );
    debug!(norm);
    shown!(norm_eps);
    debug!(pos_emb);
    shown!(rotary_pct, rotary_emb_base, gpt_j_residual);
    field(
        "tied embeddings",
        a.tied_embeddings.to_string(),
        b.tied_embeddings.to_string(),
    );
    debug!(activation);
    let biases = |c: &ModelConfig| {
        format!(
            "{} {} {}",
            c.use_bias_in_attn_linear, c.use_bias_in_mlp, c.use_bias_in_norms
        )
    };
    field("biases (attention, mlp, norms)", biases(a), biases(b));
    // Options that change what the weights compute without changing shapes
    // (or that change shapes, named here rather than as a tensor mismatch).
    debug!(num_kv_heads, sliding_window_width);
    shown!(gpt_j_tied, opt_pos_emb_offset);
    debug!(attention_config);
    if a.pos_emb == crate::model::PosEmb::Learned {
        shown!(max_position_embeddings);
    }
    out
}

/// Reads the checkpoint in `dir` into `model` and `optim` to resume a run:
/// [`load_with`] and [`LoadWhat::Resume`].
pub fn load<B: AutodiffBackend>(
    dir: &Path,
    model: GptNeox<B>,
    optim: NeoxOptimizer<B, GptNeox<B>>,
    device: &B::Device,
    dp: &DataParallel,
) -> Result<Restored<B>, CheckpointError> {
    load_with(dir, model, optim, device, dp, LoadWhat::Resume)
}

/// Reads the checkpoint in `dir` into `model` and `optim`, taking `what`.
pub fn load_with<B: AutodiffBackend>(
    dir: &Path,
    model: GptNeox<B>,
    optim: NeoxOptimizer<B, GptNeox<B>>,
    device: &B::Device,
    dp: &DataParallel,
    what: LoadWhat,
) -> Result<Restored<B>, CheckpointError> {
    let config = model.config.clone();
    let (model, optim, state) = load_module_with(dir, model, &config, optim, device, dp, what)?;
    Ok(Restored {
        model,
        optim,
        state,
    })
}

/// [`load`] for any module of a model of `config` (a share of a split model).
pub fn load_module<B: AutodiffBackend, M: AutodiffModule<B>>(
    dir: &Path,
    model: M,
    config: &ModelConfig,
    optim: NeoxOptimizer<B, M>,
    device: &B::Device,
    dp: &DataParallel,
) -> Result<(M, NeoxOptimizer<B, M>, TrainState), CheckpointError> {
    load_module_with(dir, model, config, optim, device, dp, LoadWhat::Resume)
}

/// [`load_module`] taking `what`. Under ZeRO each rank keeps the optimizer
/// state of the parameters it owns, whatever the number of ranks that saved
/// it. With [`LoadWhat::NoOptim`] or [`LoadWhat::Finetune`] the optimizer is
/// left as given and the checkpoint's model need only have the same weights
/// as the configured one.
pub fn load_module_with<B: AutodiffBackend, M: AutodiffModule<B>>(
    dir: &Path,
    model: M,
    config: &ModelConfig,
    optim: NeoxOptimizer<B, M>,
    device: &B::Device,
    dp: &DataParallel,
    what: LoadWhat,
) -> Result<(M, NeoxOptimizer<B, M>, TrainState), CheckpointError> {
    let state_path = dir.join("state.json");
    let state = read_state(dir)?;
    if what == LoadWhat::Resume && state.optimizer_shards == 0 {
        return Err(CheckpointError::State {
            path: state_path,
            message: "the checkpoint holds weights without optimizer state (a converted \
                      model): set `finetune: true` to train from its weights, or \
                      `no_load_optim: true` to continue at its iteration"
                .into(),
        });
    }
    if what == LoadWhat::Resume && &state.model != config {
        return Err(CheckpointError::State {
            path: state_path,
            message: "the checkpoint's model differs from the configured one (shape or options)"
                .into(),
        });
    }
    let differences = weight_differences(&state.model, config);
    if !differences.is_empty() {
        return Err(CheckpointError::State {
            path: state_path,
            message: format!(
                "the checkpoint's weights do not fit the configured model: {}",
                differences.join(", ")
            ),
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
    let optim = if what == LoadWhat::Resume {
        let layout = ParamLayout::of::<B, _>(&model);
        let owned = dp.owned(&layout);
        optim
            .load(
                dir,
                state.optimizer_shards.max(1),
                &layout.ids,
                |id| owned.contains(id),
                device,
            )?
            .load_rank_state(dir, dp.rank(), dp.size(), &layout.sizes)?
    } else {
        optim
    };
    Ok((model, optim, state))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in checkpoint folder: what `resume_point` checks for.
    fn fake_checkpoint(dir: &Path) {
        fs::create_dir_all(dir).unwrap();
        fs::write(dir.join("state.json"), "{}").unwrap();
    }

    fn latest_is_complete(save: &Path) -> bool {
        latest(save)
            .unwrap()
            .is_some_and(|dir| dir.join("state.json").is_file())
    }

    #[test]
    fn re_saving_a_step_never_leaves_latest_dangling() {
        let save = tempfile::tempdir().unwrap();
        let save = save.path();
        fake_checkpoint(&save.join("global_step200"));
        Step::Point("global_step200".into()).run(save).unwrap();
        let temp = save.join(".global_step200.partial");
        fake_checkpoint(&temp);
        fs::write(temp.join("new"), "").unwrap();
        for step in publish_steps(save, &temp, "global_step200") {
            step.run(save).unwrap();
            assert!(latest_is_complete(save), "after {step:?}");
        }
        assert!(save.join("global_step200/new").is_file());
        let names: Vec<_> = fs::read_dir(save)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}"); // global_step200 and latest
    }

    #[test]
    fn pruning_keeps_the_checkpoint_written_and_the_one_latest_names() {
        let save = tempfile::tempdir().unwrap();
        let save = save.path();
        // An earlier run reached 400; this one resumed from 100 and writes 200.
        for step in [100, 300, 400] {
            fake_checkpoint(&save.join(format!("global_step{step}")));
        }
        Step::Point("global_step100".into()).run(save).unwrap();
        let written = save.join("global_step200");
        fake_checkpoint(&written);
        prune(save, 2, &written).unwrap();
        assert!(written.is_dir());
        assert!(
            save.join("global_step100").is_dir(),
            "latest's target pruned"
        );
        Step::Point("global_step200".into()).run(save).unwrap();
        prune(save, 2, &written).unwrap();
        assert!(written.is_dir() && latest_is_complete(save));
        assert!(!save.join("global_step100").exists());
        // Otherwise the oldest go first.
        let written = save.join("global_step500");
        fake_checkpoint(&written);
        Step::Point("global_step500".into()).run(save).unwrap();
        prune(save, 2, &written).unwrap();
        let mut left: Vec<_> = fs::read_dir(save)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["global_step400", "global_step500", "latest"]);
    }

    #[test]
    fn load_must_name_a_neox_checkpoint_or_nothing_yet() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        // Nothing yet: a first run.
        assert_eq!(resume_point(&root.join("missing")).unwrap(), None);
        fs::write(root.join("metrics.jsonl"), "").unwrap();
        assert_eq!(resume_point(root).unwrap(), None);
        // A Hugging Face folder.
        let hf = root.join("hf");
        fs::create_dir(&hf).unwrap();
        fs::write(hf.join("config.json"), "{}").unwrap();
        fs::write(hf.join("model.safetensors"), "").unwrap();
        let err = resume_point(&hf).unwrap_err().to_string();
        assert!(
            err.contains("Hugging Face") && err.contains("config.json"),
            "{err}"
        );
        assert!(err.contains(&hf.display().to_string()), "{err}");
        // Checkpoints without `latest`, and `latest` naming a missing one.
        let neox = root.join("neox");
        fake_checkpoint(&neox.join("global_step10"));
        let err = resume_point(&neox).unwrap_err().to_string();
        assert!(
            err.contains("latest") && err.contains("global_step10"),
            "{err}"
        );
        fs::write(neox.join("latest"), "global_step20").unwrap();
        let err = resume_point(&neox).unwrap_err().to_string();
        assert!(err.contains("global_step20"), "{err}");
        fs::write(neox.join("latest"), "global_step10").unwrap();
        assert_eq!(
            resume_point(&neox).unwrap(),
            Some(neox.join("global_step10"))
        );
        // A file.
        let err = resume_point(&root.join("metrics.jsonl")).unwrap_err();
        assert!(err.to_string().contains("file"), "{err}");
    }
}
