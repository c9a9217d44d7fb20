//! A checkpoint saved at one layout, read at another: the shares of a split
//! run (`{save}/pp{P}-tp{T}/`, see [`super::run`]) or an unsplit checkpoint,
//! made whole and cut again for the reading rank, with the AdamW state
//! moved exactly as its parameters (each moment element goes where its
//! parameter element goes), and the ZeRO partitions merged then left to the
//! reader's own partition. Nothing is computed, only moved: resharding is
//! exact, so a run resumed at another layout continues as the run it was
//! cut from would have.
//!
//! Where each element of a share came from is found by [`super::merge`]'s
//! probes; the reader's own share is cut by [`GptShard::new`] itself. Every
//! reader builds the whole model in host memory once: by count, the values,
//! both moments, an empty model and three probes (28 bytes per parameter),
//! and the index map of the share being placed (16 bytes per element).

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use burn::backend::{Autodiff, Flex};
use burn::module::{AutodiffModule, Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::record::AdaptorRecord;
use burn::optim::{AdamWState, AdaptiveMomentumState};
use burn::record::{BinFileRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::data_parallel::{DataParallel, ParamLayout};
use super::merge::{self, Probes};
use super::onebit_adam;
use super::pipeline_parallel::Stage;
use super::shard::{GptShard, GptShardRecord};
use super::tensor_parallel::TpGroup;
use super::tensor_parallel::layers::Shard;
use crate::checkpoint::{self, LoadWhat, TrainState};
use crate::error::CheckpointError;
use crate::model::{GptNeox, ModelConfig};
use crate::optim::{NeoxOptimizer, OptimConfig, StateRecord, decays};

/// Where shares are read: records hold f32 whatever backend wrote them.
type Ad = Autodiff<Flex>;

/// One pipeline stage of a layout (what [`Stage`] says, as `state.json` keeps it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageSpan {
    /// Transformer layers `[start, end)`.
    pub layers: [usize; 2],
    pub embed: bool,
    pub norm: bool,
    pub head: bool,
}

/// How a model is cut over ranks: its pipeline stages, each split over `tp`
/// tensor ranks. A split run records its own in every share's `state.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    pub tp: usize,
    pub stages: Vec<StageSpan>,
}

impl Layout {
    /// `stages` split over `tp` tensor ranks.
    pub fn of(stages: &[Stage], tp: usize) -> Self {
        let stages = stages
            .iter()
            .map(|s| StageSpan {
                layers: [s.layers.start, s.layers.end],
                embed: s.embed,
                norm: s.norm,
                head: s.head,
            })
            .collect();
        Layout { tp, stages }
    }

    /// The unsplit model of `layers` transformer layers.
    pub fn whole(layers: usize) -> Self {
        Layout::of(&[Stage::whole(layers)], 1)
    }

    pub fn pp(&self) -> usize {
        self.stages.len()
    }

    /// Why this is not a layout of a model of `num_layers` layers, if it is
    /// not: at least one stage and one tensor rank, and the stages' layer
    /// spans following each other from 0 to `num_layers`.
    pub fn check(&self, num_layers: usize) -> Result<(), String> {
        if self.tp == 0 || self.stages.is_empty() {
            return Err(format!(
                "layout of {} stage(s) x {} tensor rank(s): both must be at least 1",
                self.pp(),
                self.tp
            ));
        }
        let mut end = 0;
        for (p, stage) in self.stages.iter().enumerate() {
            let [start, stop] = stage.layers;
            if start != end || start > stop {
                return Err(format!(
                    "stage {p} holds layers {start}..{stop}: expected {end}..n with n >= {end} \
                     (each stage starts where the one before ends)"
                ));
            }
            end = stop;
        }
        if end != num_layers {
            return Err(format!(
                "the stages hold layers 0..{end}, the model has {num_layers}"
            ));
        }
        Ok(())
    }

    /// Stage `index` as [`GptShard::new`] takes it.
    pub fn stage(&self, index: usize) -> Stage {
        let s = &self.stages[index];
        Stage {
            index,
            count: self.stages.len(),
            layers: s.layers[0]..s.layers[1],
            embed: s.embed,
            norm: s.norm,
            head: s.head,
        }
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pp{}-tp{}", self.pp(), self.tp)
    }
}

/// The checkpoint a `load` folder holds, at whichever layout it was saved.
#[derive(Debug, Clone)]
pub struct Saved {
    /// The folder given (`save` of the run that wrote it).
    pub root: PathBuf,
    /// Pipeline stages x tensor ranks it was saved at (1 x 1 unsplit).
    pub pp: usize,
    pub tp: usize,
    /// Whether a split run wrote it (shares under `pp{P}-tp{T}/`).
    pub split: bool,
    /// The `global_stepN` folders: one, or one per (stage, tensor rank),
    /// stage-major.
    pub dirs: Vec<PathBuf>,
    /// Share `pp0-tp0`'s state (every share's checked at the same iteration).
    pub state: TrainState,
}

impl Saved {
    /// "pp2-tp2" (or "pp1-tp1", unsplit).
    pub fn layout_name(&self) -> String {
        format!("pp{}-tp{}", self.pp, self.tp)
    }

    /// The folder to name in messages: the checkpoint, or the root of its shares.
    pub fn folder(&self) -> &Path {
        match self.split {
            true => &self.root,
            false => &self.dirs[0],
        }
    }

    /// Whether `target` can read its share of this checkpoint as it is.
    fn same_layout(&self, target: &Target) -> bool {
        match target {
            Target::Whole => !self.split,
            Target::Share { layout, .. } => {
                self.split && self.state.layout.as_ref() == Some(layout)
            }
        }
    }
}

fn state_error(path: &Path, message: impl Into<String>) -> CheckpointError {
    CheckpointError::State {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// The `(P, T)` of a `pp{P}-tp{T}` folder name.
fn share_name(name: &str) -> Option<(usize, usize)> {
    let (pp, tp) = name.strip_prefix("pp")?.split_once("-tp")?;
    Some((pp.parse().ok()?, tp.parse().ok()?))
}

/// The `pp{P}-tp{T}` folders of `root`.
fn share_folders(root: &Path) -> Result<Vec<(usize, usize)>, CheckpointError> {
    let entries = match fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => return Ok(Vec::new()),
        Err(source) => {
            return Err(CheckpointError::Io {
                path: root.to_path_buf(),
                source,
            });
        }
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| CheckpointError::Io {
            path: root.to_path_buf(),
            source,
        })?;
        if let Some(coord) = entry.file_name().to_str().and_then(share_name)
            && entry.path().is_dir()
        {
            found.push(coord);
        }
    }
    found.sort();
    Ok(found)
}

/// Whether `root` holds shares of a split run.
pub fn is_split(root: &Path) -> Result<bool, CheckpointError> {
    Ok(!share_folders(root)?.is_empty())
}

/// The checkpoint folder of `save` at `step`, else the newest; `None` when
/// it has none (at that step).
fn checkpoint_in(save: &Path, step: Option<u64>) -> Result<Option<PathBuf>, CheckpointError> {
    match step {
        Some(step) => {
            let dir = save.join(format!("global_step{step}"));
            Ok(dir.join("state.json").is_file().then_some(dir))
        }
        None => checkpoint::resume_point(save),
    }
}

/// The split checkpoint under `root` at `step` (else the newest), if any:
/// every share of its layout present and at the same iteration.
fn find_split(root: &Path, step: Option<u64>) -> Result<Option<Saved>, CheckpointError> {
    let found = share_folders(root)?;
    if found.is_empty() {
        return Ok(None);
    }
    let share = |p: usize, t: usize| root.join(format!("pp{p}-tp{t}"));
    // The layout pp0-tp0's newest checkpoint recorded (a later run at
    // another layout may have left more shares than its own), else the
    // folders' grid.
    let Some(first) = checkpoint_in(&share(0, 0), step)? else {
        // A split run stopped before its first save leaves share folders
        // without checkpoints: nothing to resume. Nor is there a split
        // checkpoint at a step that no share holds (an unsplit one may).
        let mut any = false;
        for &(p, t) in &found {
            any |= checkpoint_in(&share(p, t), step)?.is_some();
        }
        if !any {
            return Ok(None);
        }
        let what = match step {
            Some(step) => format!("has no global_step{step}"),
            None => "missing or empty".into(),
        };
        return Err(state_error(
            &share(0, 0),
            format!("{what}: the shares found ({}) need pp0-tp0", names(&found)),
        ));
    };
    let first_state = checkpoint::read_state(&first)?;
    let (pp, tp) = match &first_state.layout {
        Some(layout) => {
            layout
                .check(first_state.model.num_layers)
                .map_err(|message| state_error(&first.join("state.json"), message))?;
            (layout.pp(), layout.tp)
        }
        None => (
            found.iter().map(|c| c.0).max().unwrap_or(0) + 1,
            found.iter().map(|c| c.1).max().unwrap_or(0) + 1,
        ),
    };
    let mut dirs = Vec::with_capacity(pp * tp);
    let mut at = Vec::with_capacity(pp * tp);
    for p in 0..pp {
        for t in 0..tp {
            let folder = share(p, t);
            if !found.contains(&(p, t)) {
                return Err(state_error(
                    &folder,
                    format!(
                        "missing: a checkpoint of {pp} stage(s) x {tp} tensor rank(s) has {} \
                         shares, found {}",
                        pp * tp,
                        names(&found)
                    ),
                ));
            }
            let dir = match checkpoint_in(&folder, step)? {
                Some(dir) => dir,
                None => {
                    let what = match step {
                        Some(step) => format!("no global_step{step} (pp0-tp0 has one)"),
                        None => "no checkpoint (no `latest`)".into(),
                    };
                    return Err(state_error(
                        &folder,
                        format!("holds {what}: every share of a split checkpoint is needed"),
                    ));
                }
            };
            let state = checkpoint::read_state(&dir)?;
            if state.model != first_state.model {
                return Err(state_error(
                    &dir.join("state.json"),
                    format!("its model differs from pp0-tp0's ({})", first.display()),
                ));
            }
            at.push(format!("pp{p}-tp{t} at {}", state.iteration));
            if state.iteration != first_state.iteration
                || state.consumed_train_samples != first_state.consumed_train_samples
            {
                return Err(state_error(
                    root,
                    format!(
                        "the shares are at different iterations ({}, ...): every stage and \
                         tensor rank resumes from the same step",
                        at.join(", ")
                    ),
                ));
            }
            dirs.push(dir);
        }
    }
    Ok(Some(Saved {
        root: root.to_path_buf(),
        pp,
        tp,
        split: true,
        dirs,
        state: first_state,
    }))
}

fn names(found: &[(usize, usize)]) -> String {
    found
        .iter()
        .map(|(p, t)| format!("pp{p}-tp{t}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The checkpoint in `root` at `step` (else the newest), split or not:
/// `None` when `root` holds none yet. Where both an unsplit checkpoint and
/// shares are found (a run resumed at another layout into the same folder),
/// the later iteration wins, and on a tie the one `prefer_split` names.
pub fn find(
    root: &Path,
    step: Option<u64>,
    prefer_split: bool,
) -> Result<Option<Saved>, CheckpointError> {
    let split = find_split(root, step)?;
    let whole = match (step, &split) {
        // A step given is needed unsplit when no share holds it.
        (Some(_), None) => Some(checkpoint::folder(root, step)?),
        // A step the split checkpoint has need not exist unsplit.
        _ => checkpoint_in(root, step)?,
    };
    let whole = match whole {
        Some(dir) => Some(Saved {
            root: root.to_path_buf(),
            pp: 1,
            tp: 1,
            split: false,
            state: checkpoint::read_state(&dir)?,
            dirs: vec![dir],
        }),
        None => None,
    };
    Ok(match (whole, split) {
        (Some(w), Some(s)) => {
            let split_first = (s.state.iteration, prefer_split) > (w.state.iteration, false);
            Some(if split_first { s } else { w })
        }
        (w, s) => w.or(s),
    })
}

/// Where the reader's model sits.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// The whole model ([`GptNeox`]).
    Whole,
    /// Share (`stage`, `shard`) of `layout` ([`GptShard`]).
    Share {
        layout: Layout,
        stage: usize,
        shard: Shard,
    },
}

impl Target {
    fn layout_name(&self) -> String {
        match self {
            Target::Whole => "pp1-tp1".into(),
            Target::Share { layout, .. } => layout.to_string(),
        }
    }
}

/// Parameters' values (and Adam state), in a module's visiting order.
#[derive(Debug, Clone, Default)]
pub struct Part {
    pub values: Vec<Vec<f32>>,
    pub adam: Option<Adam>,
}

/// AdamW's state of each parameter of a [`Part`].
#[derive(Debug, Clone, Default)]
pub struct Adam {
    /// Steps taken (Adam's bias correction).
    pub time: Vec<usize>,
    pub first: Vec<Vec<f32>>,
    pub second: Vec<Vec<f32>>,
}

/// A checkpoint made whole: the model's parameters in [`GptNeox`]'s order.
#[derive(Debug, Clone)]
pub struct Whole {
    pub state: TrainState,
    pub part: Part,
}

impl Whole {
    /// The model, on any backend.
    pub fn model<B: Backend>(&self, device: &B::Device) -> GptNeox<B> {
        let values = &self.part.values;
        merge::filled(&self.state.model.init::<B>(device), |p, _| {
            values[p].clone()
        })
    }

    /// What `target` holds of it.
    pub fn part_for(&self, target: &Target) -> Result<Part, CheckpointError> {
        let Target::Share {
            layout,
            stage,
            shard,
        } = target
        else {
            return Ok(self.part.clone());
        };
        let device = Default::default();
        let template = self.state.model.init::<Flex>(&device);
        let cut = |values: &dyn Fn(usize, usize) -> Vec<f32>| {
            let whole = merge::filled(&template, values);
            GptShard::new(&whole, layout.stage(*stage), *shard, TpGroup::single())
                .map(|share| merge::values(&share))
                .map_err(|e| state_error(Path::new(&layout.to_string()), e.to_string()))
        };
        let values = cut(&|p, _| self.part.values[p].clone())?;
        let adam = match &self.part.adam {
            None => None,
            Some(adam) => Some(Adam {
                // Each element of a cut parameter carries its whole parameter's count.
                time: cut(&|p, n| vec![adam.time[p] as f32; n])?
                    .iter()
                    .map(|t| t.first().map_or(0, |&t| t as usize))
                    .collect(),
                first: cut(&|p, _| adam.first[p].clone())?,
                second: cut(&|p, _| adam.second[p].clone())?,
            }),
        };
        Ok(Part { values, adam })
    }
}

/// Reads `saved` whole: its shares merged (or the unsplit model as it is),
/// with their Adam state when `with_adam` and the checkpoint has some.
pub fn read_whole(saved: &Saved, with_adam: bool) -> Result<Whole, CheckpointError> {
    let device = Default::default();
    let state = saved.state.clone();
    let shards = match with_adam {
        true => state.optimizer_shards,
        false => 0,
    };
    if shards > 0
        && let Some(dir) = saved.dirs.iter().find(|dir| onebit_adam::holds_state(dir))
    {
        return Err(state_error(
            &dir.join(onebit_adam::STATE_FILE),
            format!(
                "1-bit Adam's state cannot be resharded: resume at the layout it was saved \
                 at ({}), or set `no_load_optim: true` (its iteration, fresh optimizer \
                 state) or `finetune: true` to read the weights alone",
                saved.layout_name()
            ),
        ));
    }
    if !saved.split {
        let dir = &saved.dirs[0];
        let (model, _) = checkpoint::load_model::<Ad>(dir, &device)?;
        let part = read_part(dir, &model, shards)?;
        return Ok(Whole { state, part });
    }
    let config = &state.model;
    let template = merge::filled(&config.init::<Ad>(&device), |_, n| vec![0.0; n]);
    let probes = Probes::new(&template);
    let sizes: Vec<usize> = merge::values(&template).iter().map(Vec::len).collect();
    let mut whole = Part {
        values: sizes.iter().map(|&n| vec![0.0; n]).collect(),
        adam: None,
    };
    let mut whole_adam = Adam {
        time: vec![usize::MAX; sizes.len()],
        first: sizes.iter().map(|&n| vec![0.0; n]).collect(),
        second: sizes.iter().map(|&n| vec![0.0; n]).collect(),
    };
    let mut with_state = Vec::new();
    let recorded = state.layout.as_ref();
    let mut next_layer = 0;
    for p in 0..saved.pp {
        let mut stage = None;
        for t in 0..saved.tp {
            let dir = &saved.dirs[p * saved.tp + t];
            let model_path = dir.join("model");
            let what = |message: String| state_error(&model_path.with_extension("bin"), message);
            let record: GptShardRecord<Ad> = BinFileRecorder::<FullPrecisionSettings>::new()
                .load(model_path.clone(), &device)
                .map_err(|e| what(e.to_string()))?;
            // The stage: as recorded, else as the first tensor rank's file holds it.
            let stage = stage.get_or_insert_with(|| match recorded {
                Some(layout) if layout.pp() == saved.pp => layout.stage(p),
                _ => Stage {
                    index: p,
                    count: saved.pp,
                    layers: next_layer..next_layer + record.layers.len(),
                    embed: p == 0,
                    norm: record.final_layer_norm.is_some(),
                    head: p + 1 == saved.pp,
                },
            });
            let shard = Shard {
                rank: t,
                size: saved.tp,
            };
            let empty = GptShard::new(&template, stage.clone(), shard, TpGroup::single())
                .map_err(|e| what(e.to_string()))?;
            let expected = (
                empty.layers.len(),
                empty.embed_in.is_some(),
                empty.embed_pos.is_some(),
                empty.final_layer_norm.is_some(),
                empty.embed_out.is_some(),
            );
            let found = (
                record.layers.len(),
                record.embed_in.is_some(),
                record.embed_pos.is_some(),
                record.final_layer_norm.is_some(),
                record.embed_out.is_some(),
            );
            if expected != found || stage.layers.end > config.num_layers {
                return Err(what(format!(
                    "holds (layers, embedding, positions, final norm, output layer) {found:?}; \
                     share pp{p}-tp{t} of this {} x {} layout of a {}-layer model holds {expected:?}",
                    saved.pp, saved.tp, config.num_layers
                )));
            }
            let want = merge::shapes(&empty);
            let share = empty.load_record(record);
            if let Some((i, (got, want))) = merge::shapes(&share)
                .into_iter()
                .zip(want)
                .enumerate()
                .find(|(_, (got, want))| got != want)
            {
                return Err(what(format!(
                    "parameter {i} has shape {got:?}, expected {want:?} for share pp{p}-tp{t}"
                )));
            }
            let part = read_part(dir, &share, shards)?;
            with_state.push((part.adam.is_some(), dir.clone()));
            let origins = probes
                .origins(stage, shard)
                .map_err(|e| what(e.to_string()))?;
            place(&mut whole, &mut whole_adam, part, &origins, dir)?;
        }
        next_layer = stage.map_or(next_layer, |s| s.layers.end);
    }
    if next_layer != config.num_layers {
        return Err(state_error(
            &saved.root,
            format!(
                "the shares hold {next_layer} transformer layers, the model has {}",
                config.num_layers
            ),
        ));
    }
    // Adam state for every share or for none.
    let holding: Vec<_> = with_state.iter().filter(|s| s.0).collect();
    if !holding.is_empty() && holding.len() != with_state.len() {
        let without = with_state.iter().find(|s| !s.0).map(|s| s.1.clone());
        return Err(state_error(
            &without.unwrap_or_default(),
            format!(
                "holds no optimizer state, while {} does",
                holding[0].1.display()
            ),
        ));
    }
    if !holding.is_empty() {
        whole.adam = Some(whole_adam);
    }
    Ok(Whole { state, part: whole })
}

/// Puts a share's values (and Adam state) where `origins` says they came from.
fn place(
    whole: &mut Part,
    adam: &mut Adam,
    part: Part,
    origins: &[Vec<(usize, usize)>],
    dir: &Path,
) -> Result<(), CheckpointError> {
    for (j, origin) in origins.iter().enumerate() {
        for (k, &(p, i)) in origin.iter().enumerate() {
            whole.values[p][i] = part.values[j][k];
        }
        if let Some(share) = &part.adam {
            let time = share.time[j];
            if origin
                .iter()
                .any(|&(p, _)| adam.time[p] != usize::MAX && adam.time[p] != time)
            {
                return Err(state_error(
                    dir,
                    format!(
                        "parameter {j}'s optimizer step count ({time}) differs from another \
                         share's of the same parameter"
                    ),
                ));
            }
            for (k, &(p, i)) in origin.iter().enumerate() {
                adam.time[p] = time;
                adam.first[p][i] = share.first[j][k];
                adam.second[p][i] = share.second[j][k];
            }
        }
    }
    Ok(())
}

/// Settings of an AdamW that only carries state between files (it never
/// steps, so they play no part).
fn files_only() -> OptimConfig {
    OptimConfig {
        lr: 0.0,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
        gradient_clipping: 0.0,
        onebit: None,
        offload: false,
        adam: Default::default(),
    }
}

/// The values of `module` (read from `dir`) and, with `shards` > 0, the Adam
/// state that `shards` ranks wrote for it there: for every parameter or none.
fn read_part<M: AutodiffModule<Ad>>(
    dir: &Path,
    module: &M,
    shards: usize,
) -> Result<Part, CheckpointError> {
    let states = match shards {
        0 => None,
        n => {
            let settings = files_only();
            let ids = ParamLayout::of::<Ad, _>(module).ids;
            let optim = NeoxOptimizer::<Ad, M>::new(&settings).load(
                dir,
                n,
                &ids,
                |_| true,
                &Default::default(),
            )?;
            Some(optim.states())
        }
    };
    struct Read<'a, M: AutodiffModule<Ad>> {
        states: Option<&'a StateRecord<Ad, M>>,
        part: Part,
        adam: Adam,
        missing: usize,
    }
    impl<M: AutodiffModule<Ad>> ModuleVisitor<Ad> for Read<'_, M> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<Ad, D>>) {
            self.part
                .values
                .push(param.val().into_data().iter::<f32>().collect());
            let Some(states) = self.states else { return };
            match states.get(&param.id) {
                Some(record) => {
                    let m = record.clone().into_state::<D>().momentum;
                    self.adam.time.push(m.time);
                    self.adam
                        .first
                        .push(m.moment_1.into_data().iter::<f32>().collect());
                    self.adam
                        .second
                        .push(m.moment_2.into_data().iter::<f32>().collect());
                }
                None => {
                    self.missing += 1;
                    self.adam.time.push(0);
                    self.adam.first.push(Vec::new());
                    self.adam.second.push(Vec::new());
                }
            }
        }
    }
    let mut read = Read::<M> {
        states: states.as_ref(),
        part: Part::default(),
        adam: Adam::default(),
        missing: 0,
    };
    module.visit(&mut read);
    // `load` made sure the files hold state for every parameter or none (a
    // checkpoint saved before any step).
    Ok(match (states.is_some(), read.missing) {
        (true, 0) => Part {
            adam: Some(read.adam),
            ..read.part
        },
        _ => read.part,
    })
}

/// `model` and `optim` holding `part`: each parameter's values in place
/// (its id kept), and the Adam state of those `keep` accepts.
fn install<B: AutodiffBackend, M: AutodiffModule<B>>(
    part: Part,
    model: M,
    optim: NeoxOptimizer<B, M>,
    keep: impl Fn(&ParamId) -> bool,
    device: &B::Device,
) -> Result<(M, NeoxOptimizer<B, M>), String> {
    struct Set {
        values: std::vec::IntoIter<Vec<f32>>,
        index: usize,
        error: Option<String>,
    }
    impl<B: Backend> ModuleMapper<B> for Set {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            let (id, value, mapper) = param.consume();
            let dims = value.dims();
            let index = self.index;
            self.index += 1;
            match self.values.next() {
                Some(values) if values.len() == dims.iter().product::<usize>() => {
                    let data = TensorData::new(values, dims.to_vec());
                    let mut t = Tensor::<B, D>::from_data(data, &value.device());
                    if value.is_require_grad() {
                        t = t.require_grad();
                    }
                    Param::from_mapped_value(id, t, mapper)
                }
                found => {
                    self.error.get_or_insert(format!(
                        "parameter {index} of shape {dims:?} has {} values in the checkpoint",
                        found.map_or(0, |v| v.len())
                    ));
                    Param::from_mapped_value(id, value, mapper)
                }
            }
        }
    }
    let count = part.values.len();
    let mut set = Set {
        values: part.values.into_iter(),
        index: 0,
        error: None,
    };
    let model = model.map(&mut set);
    if let Some(error) = set.error {
        return Err(error);
    }
    if set.index != count {
        return Err(format!(
            "the model has {} parameters, the checkpoint's share {count}",
            set.index
        ));
    }
    let Some(adam) = part.adam else {
        return Ok((model, optim));
    };
    struct Build<'a, B: AutodiffBackend, M: AutodiffModule<B>, F> {
        adam: &'a Adam,
        keep: F,
        device: &'a B::Device,
        index: usize,
        decay: StateRecord<B, M>,
        no_decay: StateRecord<B, M>,
    }
    impl<B: AutodiffBackend, M: AutodiffModule<B>, F: Fn(&ParamId) -> bool> ModuleVisitor<B>
        for Build<'_, B, M, F>
    {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let i = self.index;
            self.index += 1;
            if !(self.keep)(&param.id) {
                return;
            }
            let dims = param.lazy_shape().dims::<D>();
            let tensor = |v: &Vec<f32>| {
                Tensor::<B::InnerBackend, D>::from_data(
                    TensorData::new(v.clone(), dims),
                    self.device,
                )
            };
            let momentum = AdaptiveMomentumState::new(
                self.adam.time[i],
                tensor(&self.adam.first[i]),
                tensor(&self.adam.second[i]),
            );
            let record = AdaptorRecord::from_state::<D>(AdamWState::new(momentum));
            match decays(D) {
                true => self.decay.insert(param.id, record),
                false => self.no_decay.insert(param.id, record),
            };
        }
    }
    let mut build = Build::<B, M, _> {
        adam: &adam,
        keep,
        device,
        index: 0,
        decay: Default::default(),
        no_decay: Default::default(),
    };
    model.visit(&mut build);
    let optim = optim.with_states(build.decay, build.no_decay);
    Ok((model, optim))
}

/// Reads the checkpoint `saved` into this rank's `model` and `optim`
/// (`target` says which part of the model they are), taking `what`: as
/// [`checkpoint::load_module_with`] where the layouts match, else made whole
/// and cut again (logged as "resharding pp2-tp2 -> pp1-tp1" when
/// `announce`). Under ZeRO each rank keeps the Adam state of the parameters
/// it owns. The state returned records `target`'s layout.
#[allow(clippy::too_many_arguments)]
pub fn load<B: AutodiffBackend, M: AutodiffModule<B>>(
    saved: &Saved,
    target: &Target,
    model: M,
    config: &ModelConfig,
    optim: NeoxOptimizer<B, M>,
    device: &B::Device,
    dp: &DataParallel,
    what: LoadWhat,
    announce: bool,
) -> Result<(M, NeoxOptimizer<B, M>, TrainState), CheckpointError> {
    let layout = match target {
        Target::Whole => None,
        Target::Share { layout, .. } => Some(layout.clone()),
    };
    if saved.same_layout(target) {
        let dir = match target {
            Target::Whole => &saved.dirs[0],
            Target::Share { stage, shard, .. } => &saved.dirs[stage * shard.size + shard.rank],
        };
        let (model, optim, state) =
            checkpoint::load_module_with(dir, model, config, optim, device, dp, what)?;
        return Ok((model, optim, TrainState { layout, ..state }));
    }
    let state_path = saved.dirs[0].join("state.json");
    let state = &saved.state;
    if what == LoadWhat::Resume && state.optimizer_shards == 0 {
        return Err(state_error(
            &state_path,
            "the checkpoint holds weights without optimizer state (a converted model): set \
             `finetune: true` to train from its weights, or `no_load_optim: true` to continue \
             at its iteration",
        ));
    }
    if what == LoadWhat::Resume && &state.model != config {
        return Err(state_error(
            &state_path,
            "the checkpoint's model differs from the configured one (shape or options)",
        ));
    }
    let differences = checkpoint::weight_differences(&state.model, config);
    if !differences.is_empty() {
        return Err(state_error(
            &state_path,
            format!(
                "the checkpoint's weights do not fit the configured model: {}",
                differences.join(", ")
            ),
        ));
    }
    if announce {
        tracing::info!(
            checkpoint = %saved.folder().display(),
            iteration = state.iteration,
            "resharding {} -> {}",
            saved.layout_name(),
            target.layout_name()
        );
    }
    let whole = read_whole(saved, what == LoadWhat::Resume)?;
    let part = whole.part_for(target)?;
    // Rank 0's parameter ids on every data rank, as a fresh run has them.
    let model = dp.sync_model(model, device)?;
    let owned = dp.owned(&ParamLayout::of::<B, _>(&model));
    let (model, optim) = install(part, model, optim, |id| owned.contains(id), device)
        .map_err(|message| state_error(saved.folder(), message))?;
    Ok((
        model,
        optim,
        TrainState {
            layout,
            ..whole.state
        },
    ))
}

/// Writes the checkpoint `saved` into `out` cut for `pp` stages (by
/// `method`) x `tp` tensor ranks, as a run at that layout would save it:
/// shares under `{out}/pp{P}-tp{T}/`, or one unsplit checkpoint when both are
/// 1 (offline, what loading at another layout does on every rank). The Adam
/// state is in each share's rank-0 file: any number of data ranks and ZeRO
/// stage read it. Returns the layout written.
pub fn write(
    saved: &Saved,
    out: &Path,
    pp: usize,
    tp: usize,
    method: &super::PartitionMethod,
) -> Result<Layout, CheckpointError> {
    let refuse = |message: String| state_error(out, message);
    if pp == 0 || tp == 0 {
        return Err(refuse(format!(
            "{pp} stage(s) x {tp} tensor rank(s): both must be at least 1"
        )));
    }
    let config = &saved.state.model;
    super::tensor_parallel::check_divisible(config, tp).map_err(|e| refuse(e.to_string()))?;
    if pp > config.num_layers + 5 {
        return Err(refuse(format!(
            "{pp} stages: GPT-NeoX's pipeline of {} layers has {} items",
            config.num_layers,
            config.num_layers + 5
        )));
    }
    let whole = read_whole(saved, true)?;
    let device = Default::default();
    let model = whole.model::<Ad>(&device);
    let shards = usize::from(whole.part.adam.is_some());
    let single = DataParallel::single();
    let settings = files_only();
    if pp == 1 && tp == 1 {
        let state = TrainState {
            optimizer_shards: shards,
            layout: None,
            ..whole.state.clone()
        };
        if shards == 0 {
            checkpoint::save_weights(out, &model, &state)?;
        } else {
            let optim = NeoxOptimizer::<Ad, GptNeox<Ad>>::new(&settings);
            let (model, optim) =
                install(whole.part.clone(), model, optim, |_| true, &device).map_err(refuse)?;
            checkpoint::save(out, &model, &optim, &state, None, &single)?;
        }
        return Ok(Layout::whole(config.num_layers));
    }
    let first = Shard { rank: 0, size: tp };
    let layout = Layout::of(&super::parallel::stages(&model, pp, first, method), tp);
    let state = TrainState {
        optimizer_shards: shards,
        layout: Some(layout.clone()),
        ..whole.state.clone()
    };
    for p in 0..pp {
        for t in 0..tp {
            let shard = Shard { rank: t, size: tp };
            let target = Target::Share {
                layout: layout.clone(),
                stage: p,
                shard,
            };
            let share = GptShard::new(&model, layout.stage(p), shard, TpGroup::single())
                .map_err(|e| refuse(e.to_string()))?;
            let optim = NeoxOptimizer::<Ad, GptShard<Ad>>::new(&settings);
            let (share, optim) = install(whole.part_for(&target)?, share, optim, |_| true, &device)
                .map_err(refuse)?;
            let dir = out.join(format!("pp{p}-tp{t}"));
            checkpoint::save_module(&dir, &share, &optim, &state, None, &single)?;
        }
    }
    Ok(layout)
}

/// The model of the checkpoint in `save` at `step` (else the newest), split
/// or not, made whole on any backend: for export, generation, evaluation.
/// Returns the folder read (the checkpoint, or the root of its shares).
pub fn load_model<B: Backend>(
    save: &Path,
    step: Option<u64>,
    device: &B::Device,
) -> Result<(GptNeox<B>, TrainState, PathBuf), CheckpointError> {
    if is_split(save)?
        && let Some(saved) = find(save, step, false)?
        && saved.split
    {
        let whole = read_whole(&saved, false)?;
        return Ok((whole.model(device), whole.state, saved.root.clone()));
    }
    let dir = checkpoint::folder(save, step)?;
    let (model, state) = checkpoint::load_model::<B>(&dir, device)?;
    Ok((model, state, dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn share_folder_names_parse() {
        assert_eq!(share_name("pp0-tp1"), Some((0, 1)));
        assert_eq!(share_name("pp12-tp3"), Some((12, 3)));
        assert_eq!(share_name("pp-tp1"), None);
        assert_eq!(share_name("global_step4"), None);
        assert_eq!(share_name("pp1-tp"), None);
    }

    /// A share folder holding a checkpoint at `iteration` (state only).
    fn fake_share(root: &Path, name: &str, iteration: u64) {
        fake_checkpoint(&root.join(name), iteration)
    }

    /// `folder` holding a checkpoint at `iteration` (state only), `latest` naming it.
    fn fake_checkpoint(folder: &Path, iteration: u64) {
        let dir = folder.join(format!("global_step{iteration}"));
        fs::create_dir_all(&dir).unwrap();
        let state = TrainState {
            iteration,
            consumed_train_samples: iteration * 8,
            seed: 1,
            schedule: crate::schedule::Schedule::new(
                crate::schedule::DecayStyle::Constant,
                1e-3,
                0.0,
                0.0,
                1,
            ),
            model: ModelConfig::default(),
            optimizer_shards: 1,
            skipped_steps: 0,
            loss_scaler: None,
            layout: None,
        };
        fs::write(
            dir.join("state.json"),
            serde_json::to_string(&state).unwrap(),
        )
        .unwrap();
        fs::write(folder.join("latest"), format!("global_step{iteration}")).unwrap();
    }

    #[test]
    fn shares_are_found_whole_or_refused_by_name() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        // Nothing, then share folders that never got a checkpoint: a fresh start.
        assert!(find(root, None, true).unwrap().is_none());
        fs::create_dir_all(root.join("pp0-tp0/.global_step4.partial")).unwrap();
        fs::create_dir_all(root.join("pp0-tp1")).unwrap();
        assert!(find(root, None, true).unwrap().is_none());
        // One share saved, the other not.
        fake_share(root, "pp0-tp1", 4);
        let err = find(root, None, true).unwrap_err().to_string();
        assert!(err.contains("pp0-tp0") && err.contains("pp0-tp1"), "{err}");
        fake_share(root, "pp0-tp0", 4);
        let saved = find(root, None, true).unwrap().unwrap();
        assert_eq!((saved.pp, saved.tp, saved.split), (1, 2, true));
        assert_eq!(saved.layout_name(), "pp1-tp2");
        // An unsplit checkpoint beside them: the later iteration wins; on a
        // tie, the one asked for.
        fs::create_dir_all(root.join("global_step4")).unwrap();
        fs::copy(
            root.join("pp0-tp0/global_step4/state.json"),
            root.join("global_step4/state.json"),
        )
        .unwrap();
        fs::write(root.join("latest"), "global_step4").unwrap();
        assert!(find(root, None, true).unwrap().unwrap().split);
        assert!(!find(root, None, false).unwrap().unwrap().split);
        fake_share(root, "pp0-tp0", 8);
        fake_share(root, "pp0-tp1", 8);
        assert!(find(root, None, false).unwrap().unwrap().split);
        // Shares at different steps.
        fs::write(root.join("pp0-tp1/latest"), "global_step4").unwrap();
        let err = find(root, None, true).unwrap_err().to_string();
        assert!(
            err.contains("different iterations") && err.contains("pp0-tp1 at 4"),
            "{err}"
        );
        // A given step reads that step in every share.
        let saved = find(root, Some(4), true).unwrap().unwrap();
        assert_eq!(saved.state.iteration, 4);
        // A step only the unsplit checkpoint has is read from it.
        fake_checkpoint(root, 2);
        let saved = find(root, Some(2), true).unwrap().unwrap();
        assert_eq!((saved.state.iteration, saved.split), (2, false));
        // A step some shares have and others not.
        fake_share(root, "pp0-tp1", 6);
        let err = find(root, Some(6), true).unwrap_err().to_string();
        assert!(
            err.contains("pp0-tp0") && err.contains("global_step6"),
            "{err}"
        );
        fake_share(root, "pp0-tp0", 12);
        let err = find(root, Some(12), true).unwrap_err().to_string();
        assert!(
            err.contains("pp0-tp1") && err.contains("global_step12"),
            "{err}"
        );
        // A step nowhere.
        let err = find(root, Some(3), true).unwrap_err().to_string();
        assert!(err.contains("global_step3"), "{err}");
    }

    /// Stage spans that leave layers out, repeat them or run backwards are
    /// refused by the `state.json` that records them.
    #[test]
    fn recorded_stages_must_follow_each_other() {
        let layers = ModelConfig::default().num_layers;
        assert!(layers >= 2, "{layers}");
        let span = |start: usize, end: usize| StageSpan {
            layers: [start, end],
            embed: start == 0,
            norm: end == layers,
            head: end == layers,
        };
        for (stages, tp, what) in [
            (
                vec![span(0, 1), span(2, layers)],
                1,
                "stage 1 holds layers 2..",
            ),
            (
                vec![span(0, 2), span(1, layers)],
                1,
                "stage 1 holds layers 1..",
            ),
            (vec![span(0, layers), span(layers, 1)], 1, "stage 1"),
            (vec![span(0, 1)], 1, "0..1"),
            (vec![span(0, layers)], 0, "at least 1"),
        ] {
            let root = tempfile::tempdir().unwrap();
            let root = root.path();
            let layout = Layout { tp, stages };
            for p in 0..layout.pp() {
                fake_share(root, &format!("pp{p}-tp0"), 4);
            }
            let state = root.join("pp0-tp0/global_step4/state.json");
            let mut recorded: TrainState =
                serde_json::from_str(&fs::read_to_string(&state).unwrap()).unwrap();
            recorded.layout = Some(layout);
            fs::write(&state, serde_json::to_string(&recorded).unwrap()).unwrap();
            let err = find(root, None, true).unwrap_err().to_string();
            assert!(
                err.contains(&state.display().to_string()) && err.contains(what),
                "{err}"
            );
        }
    }

    #[test]
    fn layouts_name_themselves_and_round_trip() {
        let stages = crate::dist::pipeline_parallel::partition::partition(
            &crate::dist::PartitionMethod::Uniform,
            3,
            2,
            |_| 0,
        );
        let layout = Layout::of(&stages, 2);
        assert_eq!(layout.to_string(), "pp2-tp2");
        assert_eq!(layout.stage(1), stages[1]);
        let text = serde_json::to_string(&layout).unwrap();
        assert_eq!(serde_json::from_str::<Layout>(&text).unwrap(), layout);
        assert_eq!(Layout::whole(3).to_string(), "pp1-tp1");
    }
}
