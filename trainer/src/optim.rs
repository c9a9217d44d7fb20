//! GPT-NeoX's optimizer: AdamW with weight decay on weights only (biases and
//! norm parameters, the rank-1 tensors, are not decayed), after clipping the
//! gradients by their global norm; or DeepSpeed's 1-bit Adam
//! ([`crate::dist::onebit_adam`]), which the data-parallel step drives.
//! With ZeRO-Offload the AdamW update runs on the host ([`crate::offload`]).

use std::collections::HashSet;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use burn::module::{AutodiffModule, ModuleVisitor, Param, ParamId};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::record::AdaptorRecord;
use burn::optim::{AdamW, AdamWConfig, GradientsParams, Optimizer};
use burn::record::{BinFileRecorder, FullPrecisionSettings, Record, Recorder};
use burn::tensor::Tensor;
use burn::tensor::backend::AutodiffBackend;
use hashbrown::HashMap;

use crate::device::Cpu;
use crate::dist::onebit_adam::{OneBitAdam, OneBitConfig};
use crate::error::CheckpointError;
use crate::offload::{GroupRecord, HostAdam};

/// One parameter group's optimizer state, keyed by parameter.
pub type StateRecord<B, M> = <OptimizerAdaptor<AdamW, M, B> as Optimizer<M, B>>::Record;

/// The optimizer's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct OptimConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Global gradient-norm limit; 0 turns clipping off.
    pub gradient_clipping: f64,
    /// `optimizer.type: OneBitAdam`: 1-bit Adam's settings (then `weight_decay`
    /// above only says whether there are two parameter groups).
    pub onebit: Option<OneBitConfig>,
    /// ZeRO-Offload: AdamW's state and update on the host.
    pub offload: bool,
}

/// AdamW over two parameter groups plus global-norm clipping.
pub struct NeoxOptimizer<B: AutodiffBackend, M: AutodiffModule<B>> {
    decay: OptimizerAdaptor<AdamW, M, B>,
    no_decay: OptimizerAdaptor<AdamW, M, B>,
    clip: f64,
    /// 1-bit Adam in place of AdamW, stepped by `DataParallel::step_with`.
    onebit: Option<OneBitAdam>,
    /// ZeRO-Offload: when set, it holds AdamW's state and steps instead.
    host: Option<HostAdam>,
}

impl<B: AutodiffBackend, M: AutodiffModule<B>> NeoxOptimizer<B, M> {
    pub fn new(config: &OptimConfig) -> Self {
        let adamw = |weight_decay: f64| {
            AdamWConfig::new()
                .with_beta_1(config.beta1 as f32)
                .with_beta_2(config.beta2 as f32)
                .with_epsilon(config.eps as f32)
                .with_weight_decay(weight_decay as f32)
                .init()
        };
        NeoxOptimizer {
            decay: adamw(config.weight_decay),
            no_decay: adamw(0.0),
            clip: config.gradient_clipping,
            onebit: config.onebit.as_ref().map(|onebit| {
                OneBitAdam::new(
                    config.beta1,
                    config.beta2,
                    config.eps,
                    config.gradient_clipping,
                    onebit,
                )
            }),
            host: config.offload.then(|| HostAdam::new(config)),
        }
    }

    /// 1-bit Adam, when it is the optimizer.
    pub fn onebit(&self) -> Option<&OneBitAdam> {
        self.onebit.as_ref()
    }

    pub fn onebit_mut(&mut self) -> Option<&mut OneBitAdam> {
        self.onebit.as_mut()
    }

    /// Whether this step's gradients are summed over the data-parallel ranks
    /// before the update: always, but for 1-bit Adam once it compresses.
    pub fn reduces_gradients(&self) -> bool {
        self.onebit.as_ref().is_none_or(|o| !o.compressing())
    }

    /// Whether every data-parallel rank holds optimizer state of its own to
    /// save (1-bit Adam's compression errors).
    pub fn state_on_every_rank(&self) -> bool {
        self.onebit.is_some()
    }

    /// Clips `grads` by their global norm, then updates `model` at learning rate
    /// `lr`. Returns the model and the gradient norm before clipping.
    pub fn step(&mut self, lr: f64, model: M, grads: GradientsParams) -> (M, f64) {
        let norm = global_norm::<B, M>(&model, &grads);
        (self.apply(lr, model, grads, norm), norm)
    }

    /// Clips `grads` as if their global norm were `norm` (computed over every
    /// rank's share), then updates the parameters that have a gradient.
    pub fn apply(&mut self, lr: f64, model: M, grads: GradientsParams, norm: f64) -> M {
        self.apply_scaled(lr, model, grads, norm, 1.0)
    }

    /// [`NeoxOptimizer::apply`] for `grads` that are `loss_scale` times the
    /// true gradients, whose norm is `norm`: one multiplication unscales and
    /// clips them (DeepSpeed's `unscale_and_clip_grads`).
    pub fn apply_scaled(
        &mut self,
        lr: f64,
        model: M,
        mut grads: GradientsParams,
        norm: f64,
        loss_scale: f64,
    ) -> M {
        let clip = (self.clip > 0.0 && norm > self.clip).then(|| self.clip / (norm + 1e-6));
        let scale = match (clip, loss_scale == 1.0) {
            (clip, true) => clip,
            (Some(clip), false) => Some(clip / loss_scale),
            (None, false) => Some(1.0 / loss_scale),
        };
        if let Some(host) = &mut self.host {
            return host.step::<B, M>(lr, model, grads, scale);
        }
        let mut split = Split::<B> {
            grads: &mut grads,
            no_decay: GradientsParams::new(),
            scale,
            _backend: PhantomData,
        };
        model.visit(&mut split);
        let no_decay = split.no_decay;
        let model = self.decay.step(lr, model, grads);
        self.no_decay.step(lr, model, no_decay)
    }

    /// Bytes of optimizer state (Adam's two moments) this optimizer holds on
    /// the device, read off its tensors (none with ZeRO-Offload); `params`
    /// lists each parameter's id and rank.
    pub fn state_bytes(&self, params: &[(ParamId, usize)]) -> usize {
        if let Some(onebit) = &self.onebit {
            return onebit.state_bytes();
        }
        if self.host.is_some() {
            return 0;
        }
        fn moments<B: AutodiffBackend, const D: usize>(record: AdaptorRecord<AdamW, B>) -> usize {
            let m = record.into_state::<D>().momentum;
            [m.moment_1, m.moment_2]
                .iter()
                .map(|t| t.shape().num_elements() * t.dtype().size())
                .sum()
        }
        let mut bytes = 0;
        for records in [self.decay.to_record(), self.no_decay.to_record()] {
            for (id, rank) in params {
                if let Some(record) = records.get(id).cloned() {
                    bytes += match rank {
                        1 => moments::<B, 1>(record),
                        2 => moments::<B, 2>(record),
                        3 => moments::<B, 3>(record),
                        _ => moments::<B, 4>(record),
                    };
                }
            }
        }
        bytes
    }

    /// Bytes of optimizer state in host memory (ZeRO-Offload's; else none).
    pub fn host_state_bytes(&self) -> usize {
        self.host.as_ref().map_or(0, HostAdam::state_bytes)
    }

    /// Writes this rank's optimizer state (full precision) as
    /// `{dir}/optim_decay_rank{rank}.bin` and `{dir}/optim_no_decay_rank{rank}.bin`.
    /// Returns the files written.
    pub fn save(&self, dir: &Path, rank: usize) -> Result<Vec<PathBuf>, CheckpointError> {
        if let Some(onebit) = &self.onebit {
            return onebit.save(dir, rank);
        }
        match &self.host {
            Some(host) => {
                let (decay, no_decay) = host.records::<Cpu>(&Default::default());
                write_groups::<Cpu, _>(dir, rank, decay, no_decay)
            }
            None => {
                write_groups::<B, _>(dir, rank, self.decay.to_record(), self.no_decay.to_record())
            }
        }
    }

    /// Reads the state that ranks `0..ranks` wrote with [`NeoxOptimizer::save`]
    /// (or the single-file layout of earlier checkpoints, `optim_decay.bin`),
    /// keeping the parameters `keep` accepts: a checkpoint saved by any number
    /// of ranks, under any ZeRO stage, resumes on any other. The files
    /// together must hold state for every one of the module's `params`, or
    /// for none (saved before the first step).
    pub fn load(
        mut self,
        dir: &Path,
        ranks: usize,
        params: &[ParamId],
        keep: impl Fn(&ParamId) -> bool,
        device: &B::Device,
    ) -> Result<Self, CheckpointError> {
        if self.onebit.is_some() {
            // 1-bit Adam's state is read by `load_rank_state`, which knows the rank.
            return Ok(self);
        }
        if let Some(host) = &mut self.host {
            let [decay, no_decay]: [GroupRecord<Cpu>; 2] =
                read_groups::<Cpu, _>(dir, ranks, params, keep, &Default::default())?;
            host.load_records(decay, no_decay);
            return Ok(self);
        }
        let [decay, no_decay]: [StateRecord<B, M>; 2] =
            read_groups::<B, _>(dir, ranks, params, keep, device)?;
        self.decay = self.decay.load_record(decay);
        self.no_decay = self.no_decay.load_record(no_decay);
        Ok(self)
    }

    /// Reads the state that depends on the data-parallel rank (1-bit Adam's,
    /// see [`OneBitAdam::load`]) as rank `rank` of `ranks`, for a model whose
    /// parameters have `sizes` elements (visiting order); nothing otherwise.
    pub fn load_rank_state(
        mut self,
        dir: &Path,
        rank: usize,
        ranks: usize,
        sizes: &[usize],
    ) -> Result<Self, CheckpointError> {
        if let Some(onebit) = self.onebit.as_mut() {
            onebit.load(dir, rank, ranks, sizes)?;
        }
        Ok(self)
    }
}

impl<B: AutodiffBackend, M: AutodiffModule<B>> NeoxOptimizer<B, M> {
    /// Every parameter's AdamW state, both groups together, by parameter:
    /// what `dist::reshard` moves between layouts.
    pub fn states(&self) -> StateRecord<B, M> {
        let (mut all, no_decay) = match &self.host {
            Some(host) => host.records::<B>(&Default::default()),
            None => (self.decay.to_record(), self.no_decay.to_record()),
        };
        all.extend(no_decay);
        all
    }

    /// This optimizer holding `decay` and `no_decay` (the rank-1
    /// parameters') as its groups' state, in place of what it held.
    pub fn with_states(mut self, decay: StateRecord<B, M>, no_decay: StateRecord<B, M>) -> Self {
        if let Some(host) = &mut self.host {
            host.load_records(decay, no_decay);
            return self;
        }
        self.decay = self.decay.load_record(decay);
        self.no_decay = self.no_decay.load_record(no_decay);
        self
    }
}

/// Writes the decay and no-decay groups' records as
/// `{dir}/optim_{group}_rank{rank}.bin`; returns the files written.
fn write_groups<B: AutodiffBackend, R: Record<B>>(
    dir: &Path,
    rank: usize,
    decay: R,
    no_decay: R,
) -> Result<Vec<PathBuf>, CheckpointError> {
    let recorder = BinFileRecorder::<FullPrecisionSettings>::new();
    let mut written = Vec::new();
    for (group, record) in [("decay", decay), ("no_decay", no_decay)] {
        let path = dir.join(format!("optim_{group}_rank{rank}"));
        Recorder::<B>::record(&recorder, record, path.clone()).map_err(|e| {
            CheckpointError::Record {
                path: path.with_extension("bin"),
                what: "optimizer state",
                message: e.to_string(),
            }
        })?;
        written.push(path.with_extension("bin"));
    }
    Ok(written)
}

/// Reads both groups' records as ranks `0..ranks` wrote them with
/// [`write_groups`] (or the single-file layout of earlier checkpoints,
/// `optim_decay.bin`), keeping the parameters `keep` accepts; the files
/// together hold state for all `params` or none.
fn read_groups<B: AutodiffBackend, V: Record<B>>(
    dir: &Path,
    ranks: usize,
    params: &[ParamId],
    keep: impl Fn(&ParamId) -> bool,
    device: &B::Device,
) -> Result<[HashMap<ParamId, V>; 2], CheckpointError> {
    let mut present = HashSet::new();
    let recorder = BinFileRecorder::<FullPrecisionSettings>::new();
    let mut decay = HashMap::new();
    let mut no_decay = HashMap::new();
    let legacy = dir.join("optim_decay.bin").exists();
    for rank in 0..ranks {
        for (group, into) in [("decay", &mut decay), ("no_decay", &mut no_decay)] {
            let name = if legacy {
                format!("optim_{group}")
            } else {
                format!("optim_{group}_rank{rank}")
            };
            let path = dir.join(name);
            let record: HashMap<ParamId, V> = Recorder::<B>::load(&recorder, path.clone(), device)
                .map_err(|e| CheckpointError::Record {
                    path: path.with_extension("bin"),
                    what: "optimizer state",
                    message: e.to_string(),
                })?;
            present.extend(record.keys().copied());
            into.extend(record.into_iter().filter(|(id, _)| keep(id)));
        }
        if legacy {
            break;
        }
    }
    let missing = params.iter().filter(|id| !present.contains(*id)).count();
    check_complete(dir, ranks, missing, params.len())?;
    Ok([decay, no_decay])
}

/// Optimizer state read for all `count` parameters asked for but `missing`:
/// an error unless that is none or all (a checkpoint saved before the first
/// step). A parameter without its state would silently restart Adam.
pub(crate) fn check_complete(
    dir: &Path,
    ranks: usize,
    missing: usize,
    count: usize,
) -> Result<(), CheckpointError> {
    if missing == 0 || missing == count {
        return Ok(());
    }
    let files = match dir.join("optim_decay.bin").exists() {
        true => "optim_decay.bin and optim_no_decay.bin".to_string(),
        false => format!("optim_decay_rank*.bin and optim_no_decay_rank*.bin (ranks 0..{ranks})"),
    };
    Err(CheckpointError::State {
        path: dir.to_path_buf(),
        message: format!(
            "{files} hold no state for {missing} of the {count} parameters read (a rank's \
             files missing, or saved under other parameter ids): set `no_load_optim: true` \
             to continue with fresh optimizer state"
        ),
    })
}

/// GPT-NeoX's two parameter groups: weight decay applies to the weights
/// (tensors of rank 2 and more), not to biases and norm parameters (rank 1).
pub fn decays(rank: usize) -> bool {
    rank > 1
}

/// Each parameter's sum of squared gradient elements, in visiting order (0
/// for a parameter without a gradient here), read from the device at once.
pub fn param_squares<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    grads: &GradientsParams,
) -> Vec<f32> {
    let mut squares = SquaredSums::<B> {
        grads,
        sums: Vec::new(),
        present: Vec::new(),
    };
    model.visit(&mut squares);
    let mut read = match squares.sums.is_empty() {
        true => Vec::new(),
        false => Tensor::cat(squares.sums, 0)
            .into_data()
            .iter::<f32>()
            .collect(),
    }
    .into_iter();
    squares
        .present
        .into_iter()
        .map(|present| match present {
            true => read.next().unwrap_or(0.0),
            false => 0.0,
        })
        .collect()
}

/// The L2 norm from per-parameter squared sums, added in order in f32.
pub fn norm_of_squares(squares: &[f32]) -> f64 {
    let sum = squares.iter().fold(0f32, |acc, &s| acc + s);
    (sum as f64).sqrt()
}

/// The L2 norm of all gradients together.
pub fn global_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    grads: &GradientsParams,
) -> f64 {
    norm_of_squares(&param_squares::<B, M>(model, grads))
}

struct SquaredSums<'a, B: AutodiffBackend> {
    grads: &'a GradientsParams,
    /// One `[1]` tensor per parameter with a gradient.
    sums: Vec<Tensor<B::InnerBackend, 1>>,
    /// Per parameter in order: whether it has one.
    present: Vec<bool>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for SquaredSums<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let grad = self.grads.get::<B::InnerBackend, D>(param.id);
        self.present.push(grad.is_some());
        if let Some(grad) = grad {
            self.sums.push(grad.square().sum());
        }
    }
}

/// Scales every gradient and moves those of rank-1 parameters (biases, norms)
/// into the no-decay group.
struct Split<'a, B> {
    grads: &'a mut GradientsParams,
    no_decay: GradientsParams,
    scale: Option<f64>,
    _backend: PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Split<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let Some(grad) = self.grads.remove::<B::InnerBackend, D>(param.id) else {
            return;
        };
        let grad = match self.scale {
            Some(scale) => grad * scale,
            None => grad,
        };
        if decays(D) {
            self.grads.register(param.id, grad);
        } else {
            self.no_decay.register(param.id, grad);
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::module::Module;
    use burn::tensor::Distribution;
    use burn::tensor::backend::Backend;

    use super::*;

    type Inner = <Cpu as AutodiffBackend>::InnerBackend;

    #[derive(Module, Debug)]
    struct Two<B: Backend> {
        weight: Param<Tensor<B, 2>>,
        bias: Param<Tensor<B, 1>>,
    }

    /// Files holding Adam state for some of the parameters read are refused
    /// (with and without ZeRO-Offload): those would silently restart Adam.
    #[test]
    fn state_for_some_parameters_only_is_refused_by_file() {
        let device = Default::default();
        let normal = Distribution::Normal(0.0, 1.0);
        let model = Two::<Cpu> {
            weight: Param::from_tensor(Tensor::random([4, 3], normal, &device)),
            bias: Param::from_tensor(Tensor::random([3], normal, &device)),
        };
        let ids = [model.weight.id, model.bias.id];
        for offload in [false, true] {
            let config = OptimConfig {
                lr: 1e-2,
                beta1: 0.9,
                beta2: 0.95,
                eps: 1e-8,
                weight_decay: 0.1,
                gradient_clipping: 0.0,
                onebit: None,
                offload,
            };
            let dir = tempfile::tempdir().unwrap();
            let dir = dir.path();
            let fresh = || NeoxOptimizer::<Cpu, Two<Cpu>>::new(&config);
            // Saved before any step: no state at all, read as none.
            fresh().save(dir, 0).unwrap();
            let back = fresh().load(dir, 1, &ids, |_| true, &device).unwrap();
            assert_eq!(back.states().len(), 0);
            // After a step: every parameter's.
            let mut grads = GradientsParams::new();
            grads.register(
                model.weight.id,
                Tensor::<Inner, 2>::random([4, 3], normal, &device),
            );
            grads.register(
                model.bias.id,
                Tensor::<Inner, 1>::random([3], normal, &device),
            );
            let mut optim = fresh();
            optim.apply(1e-2, model.clone(), grads, 1.0);
            optim.save(dir, 0).unwrap();
            let back = fresh().load(dir, 1, &ids, |_| true, &device).unwrap();
            assert_eq!(back.states().len(), 2);
            // The no-decay group's file from before the step: the bias has none.
            let mut decay = optim.states();
            decay.remove(&ids[1]);
            let empty: StateRecord<Cpu, Two<Cpu>> = Default::default();
            write_groups::<Cpu, _>(dir, 0, decay, empty).unwrap();
            let err = fresh()
                .load(dir, 1, &ids, |_| true, &device)
                .err()
                .expect("state for 1 of 2 parameters was accepted");
            assert!(matches!(err, CheckpointError::State { .. }), "{err}");
            let err = err.to_string();
            assert!(
                err.contains(&dir.display().to_string())
                    && err.contains("optim_decay_rank*.bin")
                    && err.contains("1 of the 2"),
                "{err}"
            );
            // A rank keeping only the weight, whose state is there, still
            // sees the bias's missing (another rank would restart it).
            let kept = fresh().load(dir, 1, &ids, |id| *id == ids[0], &device);
            assert!(kept.is_err(), "offload {offload}");
        }
    }
}
