//! GPT-NeoX's optimizer: AdamW with weight decay on weights only (biases and
//! norm parameters, the rank-1 tensors, are not decayed), after clipping the
//! gradients by their global norm; or DeepSpeed's 1-bit Adam
//! ([`crate::dist::onebit_adam`]), which the data-parallel step drives.
//!
//! AdamW steps in one of two ways, bit for bit the same: Burn's `AdamW` on
//! the device's tensors, or the flat AdamW ([`crate::flat_adam`]) over host
//! buffers ([`crate::offload::HostAdam`]). The flat one is the step on the
//! CPU backend (where host memory is the device's: no copies, no temporary
//! tensors, a third of the time) and with ZeRO-Offload on any device; Burn's
//! is the step on other devices ([`AdamImpl`]).

use std::any::TypeId;
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
    /// Which AdamW steps (no config key sets it).
    pub adam: AdamImpl,
}

/// Which implementation of AdamW steps. Both compute the same bits; the
/// choice is the trainer's, not a config key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AdamImpl {
    /// The flat AdamW on the CPU backend and with ZeRO-Offload, Burn's
    /// `AdamW` on the device's tensors otherwise.
    #[default]
    Auto,
    /// Burn's `AdamW` but with ZeRO-Offload, whatever the backend: the
    /// reference the flat one is tested against.
    Burn,
}

/// AdamW over two parameter groups plus global-norm clipping.
pub struct NeoxOptimizer<B: AutodiffBackend, M: AutodiffModule<B>> {
    adam: Adam<B, M>,
    clip: f64,
    /// 1-bit Adam in place of AdamW, stepped by `DataParallel::step_with`.
    onebit: Option<OneBitAdam>,
}

/// AdamW's state and step.
enum Adam<B: AutodiffBackend, M: AutodiffModule<B>> {
    /// Burn's `AdamW`, one per parameter group, its state in device tensors.
    Burn {
        decay: OptimizerAdaptor<AdamW, M, B>,
        no_decay: OptimizerAdaptor<AdamW, M, B>,
    },
    /// The flat AdamW, its state in host buffers; `offload`: ZeRO-Offload's
    /// (the state is not device memory, as it is on the CPU backend).
    Flat { host: HostAdam, offload: bool },
}

/// Whether `B` computes on the CPU (flex), whose memory is the host's.
fn on_cpu<B: AutodiffBackend>() -> bool {
    TypeId::of::<B::InnerBackend>() == TypeId::of::<burn::backend::Flex>()
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
        let flat = config.offload || (config.adam == AdamImpl::Auto && on_cpu::<B>());
        let adam = match flat {
            true => Adam::Flat {
                host: HostAdam::new(config),
                offload: config.offload,
            },
            false => Adam::Burn {
                decay: adamw(config.weight_decay),
                no_decay: adamw(0.0),
            },
        };
        NeoxOptimizer {
            adam,
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
        }
    }

    /// Whether the flat AdamW steps (else Burn's).
    pub fn is_flat(&self) -> bool {
        matches!(self.adam, Adam::Flat { .. })
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
        let (decay, no_decay) = match &mut self.adam {
            Adam::Flat { host, .. } => return host.step::<B, M>(lr, model, grads, scale),
            Adam::Burn { decay, no_decay } => (decay, no_decay),
        };
        let mut split = Split::<B> {
            grads: &mut grads,
            no_decay: GradientsParams::new(),
            scale,
            _backend: PhantomData,
        };
        model.visit(&mut split);
        let no_decay_grads = split.no_decay;
        let model = decay.step(lr, model, grads);
        no_decay.step(lr, model, no_decay_grads)
    }

    /// Bytes of optimizer state (Adam's two moments) this optimizer holds on
    /// the device, read off its tensors or buffers (none with ZeRO-Offload);
    /// `params` lists each parameter's id and rank.
    pub fn state_bytes(&self, params: &[(ParamId, usize)]) -> usize {
        if let Some(onebit) = &self.onebit {
            return onebit.state_bytes();
        }
        let (decay, no_decay) = match &self.adam {
            Adam::Flat { offload: true, .. } => return 0,
            Adam::Flat { host, .. } => return host.state_bytes(),
            Adam::Burn { decay, no_decay } => (decay, no_decay),
        };
        fn moments<B: AutodiffBackend, const D: usize>(record: AdaptorRecord<AdamW, B>) -> usize {
            let m = record.into_state::<D>().momentum;
            [m.moment_1, m.moment_2]
                .iter()
                .map(|t| t.shape().num_elements() * t.dtype().size())
                .sum()
        }
        let mut bytes = 0;
        for records in [decay.to_record(), no_decay.to_record()] {
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
        match &self.adam {
            Adam::Flat {
                host,
                offload: true,
            } => host.state_bytes(),
            _ => 0,
        }
    }

    /// Writes this rank's optimizer state (full precision) as
    /// `{dir}/optim_decay_rank{rank}.bin` and `{dir}/optim_no_decay_rank{rank}.bin`.
    /// Returns the files written.
    pub fn save(&self, dir: &Path, rank: usize) -> Result<Vec<PathBuf>, CheckpointError> {
        if let Some(onebit) = &self.onebit {
            return onebit.save(dir, rank);
        }
        match &self.adam {
            Adam::Flat { host, .. } => {
                let (decay, no_decay) = host.records::<Cpu>(&Default::default());
                write_groups::<Cpu, _>(dir, rank, decay, no_decay)
            }
            Adam::Burn { decay, no_decay } => {
                write_groups::<B, _>(dir, rank, decay.to_record(), no_decay.to_record())
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
        if let Adam::Flat { host, .. } = &mut self.adam {
            let [decay, no_decay]: [GroupRecord<Cpu>; 2] =
                read_groups::<Cpu, _>(dir, ranks, params, keep, &Default::default())?;
            host.load_records(decay, no_decay);
            return Ok(self);
        }
        let [decay, no_decay]: [StateRecord<B, M>; 2] =
            read_groups::<B, _>(dir, ranks, params, keep, device)?;
        Ok(self.with_states(decay, no_decay))
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
        let (mut all, no_decay) = match &self.adam {
            Adam::Flat { host, .. } => host.records::<B>(&Default::default()),
            Adam::Burn { decay, no_decay } => (decay.to_record(), no_decay.to_record()),
        };
        all.extend(no_decay);
        all
    }

    /// This optimizer holding `decay` and `no_decay` (the rank-1
    /// parameters') as its groups' state, in place of what it held.
    pub fn with_states(mut self, decay: StateRecord<B, M>, no_decay: StateRecord<B, M>) -> Self {
        self.adam = match self.adam {
            Adam::Flat { mut host, offload } => {
                host.load_records(decay, no_decay);
                Adam::Flat { host, offload }
            }
            Adam::Burn {
                decay: d,
                no_decay: n,
            } => Adam::Burn {
                decay: d.load_record(decay),
                no_decay: n.load_record(no_decay),
            },
        };
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

    fn config(adam: AdamImpl) -> OptimConfig {
        OptimConfig {
            lr: 1e-2,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
            gradient_clipping: 1.0,
            onebit: None,
            offload: false,
            adam,
        }
    }

    /// The parameters' values, then each one's Adam step count and moments
    /// (if it has state), as bits.
    fn snapshot(model: &Two<Cpu>, optim: &NeoxOptimizer<Cpu, Two<Cpu>>) -> Vec<Vec<u32>> {
        fn bits<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<u32> {
            t.into_data().iter::<f32>().map(f32::to_bits).collect()
        }
        fn state<const D: usize>(record: Option<&AdaptorRecord<AdamW, Cpu>>) -> Vec<Vec<u32>> {
            let Some(record) = record else {
                return Vec::new();
            };
            let m = record.clone().into_state::<D>().momentum;
            vec![vec![m.time as u32], bits(m.moment_1), bits(m.moment_2)]
        }
        let states = optim.states();
        let mut all = vec![bits(model.weight.val()), bits(model.bias.val())];
        all.extend(state::<2>(states.get(&model.weight.id)));
        all.extend(state::<1>(states.get(&model.bias.id)));
        all
    }

    /// The flat AdamW (the CPU's step) and Burn's AdamW step the same bits
    /// through both parameter groups, clipping, loss-scale unscaling, their
    /// product, and a step where one parameter has no gradient (another ZeRO
    /// rank's); and each resumes from the other's checkpoint files as if it
    /// had taken every step itself.
    #[test]
    fn flat_adamw_steps_and_saves_as_burns() {
        let device = Default::default();
        let normal = Distribution::Normal(0.0, 1.0);
        let model = Two::<Cpu> {
            weight: Param::from_tensor(Tensor::random([6, 5], normal, &device)),
            bias: Param::from_tensor(Tensor::random([5], normal, &device)),
        };
        let ids = [model.weight.id, model.bias.id];
        let start = snapshot(&model, &NeoxOptimizer::new(&config(AdamImpl::Burn)));
        let new = |adam| NeoxOptimizer::<Cpu, Two<Cpu>>::new(&config(adam));
        let (flat, burn) = (new(AdamImpl::Auto), new(AdamImpl::Burn));
        assert!(flat.is_flat() && !burn.is_flat());
        let mut runs = vec![("flat", model.clone(), flat), ("burn", model.clone(), burn)];
        // (lr, global norm, loss scale, whether the bias has a gradient);
        // the clipping limit is 1.
        let steps = [
            (1e-2, 0.5, 1.0, true),
            (8e-3, 3.0, 1.0, true),
            (6e-3, 0.2, 4096.0, false),
            (4e-3, 7.0, 1024.0, true),
            (2e-3, 1.5, 1.0, true),
            (1e-3, 0.9, 1.0, true),
        ];
        let dir = tempfile::tempdir().unwrap();
        for (k, (lr, norm, scale, bias)) in steps.into_iter().enumerate() {
            if k == 3 {
                // Each also resumes from the other's files.
                let mut resumed = Vec::new();
                for (name, model, optim) in &runs {
                    let at = dir.path().join(name);
                    std::fs::create_dir(&at).unwrap();
                    optim.save(&at, 0).unwrap();
                    let other = match optim.is_flat() {
                        true => AdamImpl::Burn,
                        false => AdamImpl::Auto,
                    };
                    let back = new(other).load(&at, 1, &ids, |_| true, &device).unwrap();
                    assert_eq!(back.is_flat(), !optim.is_flat());
                    resumed.push(("resumed", model.clone(), back));
                }
                runs.extend(resumed);
            }
            let w = Tensor::<Inner, 2>::random([6, 5], normal, &device);
            let b = Tensor::<Inner, 1>::random([5], normal, &device);
            for (_, model, optim) in &mut runs {
                let mut grads = GradientsParams::new();
                grads.register(ids[0], w.clone() * scale);
                if bias {
                    grads.register(ids[1], b.clone() * scale);
                }
                *model = optim.apply_scaled(lr, model.clone(), grads, norm, scale);
            }
            let expected = snapshot(&runs[1].1, &runs[1].2);
            assert_ne!(expected[0], start[0], "the weights did not move");
            for (name, model, optim) in &runs {
                assert!(
                    snapshot(model, optim) == expected,
                    "step {}: {name} ({}) differs from Burn's AdamW",
                    k + 1,
                    if optim.is_flat() { "flat" } else { "Burn's" }
                );
            }
        }
    }

    /// Files holding Adam state for some of the parameters read are refused
    /// (either AdamW, with and without ZeRO-Offload): those would silently
    /// restart Adam.
    #[test]
    fn state_for_some_parameters_only_is_refused_by_file() {
        let device = Default::default();
        let normal = Distribution::Normal(0.0, 1.0);
        let model = Two::<Cpu> {
            weight: Param::from_tensor(Tensor::random([4, 3], normal, &device)),
            bias: Param::from_tensor(Tensor::random([3], normal, &device)),
        };
        let ids = [model.weight.id, model.bias.id];
        for (offload, adam) in [
            (false, AdamImpl::Burn),
            (false, AdamImpl::Auto),
            (true, AdamImpl::Auto),
        ] {
            let config = OptimConfig {
                gradient_clipping: 0.0,
                offload,
                ..config(adam)
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
            assert!(kept.is_err(), "offload {offload}, {adam:?}");
        }
    }
}
