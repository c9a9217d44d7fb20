//! ZeRO-Offload (DeepSpeed's `zero_optimization.offload_optimizer: {device:
//! cpu}`): Adam's state lives in host memory and the Adam step runs on the
//! host, so the device holds no optimizer state. On the CPU backend, whose
//! memory is the host's, [`HostAdam`] is the AdamW step with or without
//! offload ([`crate::optim::AdamImpl`]).
//!
//! The state is what DeepSpeed's CPU Adam keeps: per parameter a step count
//! and the two moments, the moments of all parameters in two flat `f32`
//! buffers. A step copies each parameter's gradient (already reduced, clipped
//! and unscaled as the device optimizer would take it) and value to the host,
//! runs [`flat_adam`](crate::flat_adam) over them on every core, and copies
//! the new value back; under ZeRO only the owned parameters have gradients
//! here, and their new values are all-gathered afterwards as without offload.
//! The parameters stay on the device (they are the f32 master weights), so
//! nothing on the host can drift from them.
//!
//! The update is Burn's AdamW bit for bit, and checkpoints hold the state in
//! Burn's optimizer record format: a run saved with offload resumes without
//! it and the reverse, with the same moments.

use std::collections::HashMap;

use burn::module::{AutodiffModule, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::record::{AdaptorRecord, AdaptorRecordV1};
use burn::optim::{AdamW, AdamWState, AdaptiveMomentumState, GradientsParams};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorData};

use crate::flat_adam::{self, Step};
use crate::optim::{OptimConfig, decays};

/// One parameter group's state in Burn's record format.
pub type GroupRecord<B> = hashbrown::HashMap<ParamId, AdaptorRecord<AdamW, B>>;

/// Adam's state and step on the host.
#[derive(Debug, Clone)]
pub struct HostAdam {
    adam: flat_adam::AdamW,
    /// The decay group's (rank >= 2) weight decay; biases and norms get none.
    weight_decay: f32,
    slots: HashMap<ParamId, Slot>,
    /// First moments of all parameters, end to end.
    m: Vec<f32>,
    /// Second moments, laid out as `m`.
    v: Vec<f32>,
}

/// Where one parameter's state lies in the flat buffers.
#[derive(Debug, Clone, PartialEq)]
struct Slot {
    offset: usize,
    shape: Vec<usize>,
    /// Steps taken (Burn's `time`); 0 before the first.
    time: usize,
}

impl Slot {
    fn range(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.shape.iter().product::<usize>()
    }
}

impl HostAdam {
    /// An empty state for `config`'s Adam (in the `f32` Burn's AdamW keeps).
    pub fn new(config: &OptimConfig) -> Self {
        HostAdam {
            adam: flat_adam::AdamW {
                beta1: config.beta1 as f32,
                beta2: config.beta2 as f32,
                eps: config.eps as f32,
            },
            weight_decay: config.weight_decay as f32,
            slots: HashMap::new(),
            m: Vec::new(),
            v: Vec::new(),
        }
    }

    /// Host bytes of optimizer state.
    pub fn state_bytes(&self) -> usize {
        (self.m.len() + self.v.len()) * std::mem::size_of::<f32>()
    }

    /// Updates the parameters of `model` that have a gradient in `grads`, each
    /// gradient multiplied by `grad_scale` first (clipping and unscaling).
    pub fn step<B: AutodiffBackend, M: AutodiffModule<B>>(
        &mut self,
        lr: f64,
        model: M,
        mut grads: GradientsParams,
        grad_scale: Option<f64>,
    ) -> M {
        self.reserve::<B, M>(&model, &grads);
        model.map(&mut Stepper::<B> {
            host: self,
            grads: &mut grads,
            lr,
            grad_scale,
            _backend: std::marker::PhantomData,
        })
    }

    /// Makes room at once for the parameters stepped for the first time.
    fn reserve<B: AutodiffBackend, M: AutodiffModule<B>>(
        &mut self,
        model: &M,
        grads: &GradientsParams,
    ) {
        struct New<'a> {
            grads: &'a GradientsParams,
            slots: &'a HashMap<ParamId, Slot>,
            elems: usize,
        }
        impl<B: AutodiffBackend> ModuleVisitor<B> for New<'_> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
                if !self.slots.contains_key(&param.id)
                    && self.grads.get::<B::InnerBackend, D>(param.id).is_some()
                {
                    self.elems += param.lazy_shape().num_elements();
                }
            }
        }
        let mut new = New {
            grads,
            slots: &self.slots,
            elems: 0,
        };
        model.visit(&mut new);
        self.m.reserve_exact(new.elems);
        self.v.reserve_exact(new.elems);
    }

    /// The slot of parameter `id` of `shape`, made (zeroed, step 0) if absent.
    fn slot(&mut self, id: ParamId, shape: &[usize]) -> Slot {
        if let Some(slot) = self.slots.get(&id)
            && slot.shape == shape
        {
            return slot.clone();
        }
        // A new parameter (or, from a foreign checkpoint, one of another
        // shape: its old state is left unused).
        let slot = Slot {
            offset: self.m.len(),
            shape: shape.to_vec(),
            time: 0,
        };
        let end = slot.range().end;
        self.m.resize(end, 0.0);
        self.v.resize(end, 0.0);
        self.slots.insert(id, slot.clone());
        slot
    }

    /// The state as Burn's optimizer records (tensors on `device`) of the
    /// decay group (rank >= 2) and the no-decay group (rank 1), the layout
    /// `NeoxOptimizer` saves.
    pub fn records<B: AutodiffBackend>(
        &self,
        device: &B::Device,
    ) -> (GroupRecord<B>, GroupRecord<B>) {
        let (mut decay, mut no_decay) = (GroupRecord::<B>::new(), GroupRecord::<B>::new());
        for (id, slot) in &self.slots {
            if slot.time == 0 {
                continue;
            }
            let range = slot.range();
            let (m, v) = (&self.m[range.clone()], &self.v[range]);
            let record = match slot.shape.len() {
                1 => record::<B, 1>(slot, m, v, device),
                2 => record::<B, 2>(slot, m, v, device),
                3 => record::<B, 3>(slot, m, v, device),
                4 => record::<B, 4>(slot, m, v, device),
                5 => record::<B, 5>(slot, m, v, device),
                6 => record::<B, 6>(slot, m, v, device),
                7 => record::<B, 7>(slot, m, v, device),
                _ => record::<B, 8>(slot, m, v, device),
            };
            match decays(slot.shape.len()) {
                true => decay.insert(*id, record),
                false => no_decay.insert(*id, record),
            };
        }
        (decay, no_decay)
    }

    /// Replaces the state by the records of both groups (from
    /// [`HostAdam::records`] or a device optimizer's checkpoint).
    pub fn load_records<B: AutodiffBackend>(
        &mut self,
        decay: GroupRecord<B>,
        no_decay: GroupRecord<B>,
    ) {
        self.slots.clear();
        self.m.clear();
        self.v.clear();
        let mut parts: Vec<(ParamId, Parts)> = decay
            .into_iter()
            .chain(no_decay)
            .map(|(id, record)| (id, Parts::of::<B>(record)))
            .collect();
        // A fixed layout, whatever order the files listed them in.
        parts.sort_by_key(|(id, _)| id.val());
        let total: usize = parts.iter().map(|(_, p)| p.m.len()).sum();
        self.m.reserve_exact(total);
        self.v.reserve_exact(total);
        for (id, p) in parts {
            let slot = Slot {
                offset: self.m.len(),
                shape: p.shape,
                time: p.time,
            };
            self.m.extend_from_slice(&p.m);
            self.v.extend_from_slice(&p.v);
            self.slots.insert(id, slot);
        }
    }
}

/// One parameter's state taken out of a Burn record.
struct Parts {
    time: usize,
    shape: Vec<usize>,
    m: Vec<f32>,
    v: Vec<f32>,
}

impl Parts {
    fn of<B: AutodiffBackend>(record: AdaptorRecord<AdamW, B>) -> Self {
        fn parts<B: burn::tensor::backend::Backend, const D: usize>(
            state: AdamWState<B, D>,
        ) -> Parts {
            let s = state.momentum;
            let m = s.moment_1.into_data();
            Parts {
                time: s.time,
                shape: m.shape.to_vec(),
                m: host_values(m),
                v: host_values(s.moment_2.into_data()),
            }
        }
        let AdaptorRecord::V1(record) = record;
        match record {
            AdaptorRecordV1::Rank0(s) => parts(s),
            AdaptorRecordV1::Rank1(s) => parts(s),
            AdaptorRecordV1::Rank2(s) => parts(s),
            AdaptorRecordV1::Rank3(s) => parts(s),
            AdaptorRecordV1::Rank4(s) => parts(s),
            AdaptorRecordV1::Rank5(s) => parts(s),
            AdaptorRecordV1::Rank6(s) => parts(s),
            AdaptorRecordV1::Rank7(s) => parts(s),
            AdaptorRecordV1::Rank8(s) => parts(s),
        }
    }
}

/// One parameter's state as Burn's AdamW record, its tensors on `device`.
fn record<B: AutodiffBackend, const D: usize>(
    slot: &Slot,
    m: &[f32],
    v: &[f32],
    device: &B::Device,
) -> AdaptorRecord<AdamW, B> {
    let tensor = |x: &[f32]| {
        Tensor::<B::InnerBackend, D>::from_data(
            TensorData::new(x.to_vec(), slot.shape.clone()),
            device,
        )
    };
    let momentum = AdaptiveMomentumState::new(slot.time, tensor(m), tensor(v));
    AdaptorRecord::from_state::<D>(AdamWState::new(momentum))
}

/// A tensor's values as `f32` on the host, without a copy when they are already.
fn host_values(data: TensorData) -> Vec<f32> {
    let data = data.convert::<f32>();
    match data.as_slice::<f32>() {
        Ok(_) => data.into_vec::<f32>().unwrap_or_default(),
        Err(_) => data.iter::<f32>().collect(),
    }
}

/// Steps each parameter that has a gradient, in the model's order.
struct Stepper<'a, B> {
    host: &'a mut HostAdam,
    grads: &'a mut GradientsParams,
    lr: f64,
    grad_scale: Option<f64>,
    _backend: std::marker::PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleMapper<B> for Stepper<'_, B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        let Some(grad) = self.grads.remove::<B::InnerBackend, D>(id) else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let device = tensor.device();
        let require_grad = tensor.is_require_grad();
        let shape = tensor.dims().to_vec();
        // Device to host: the gradient and the value.
        let grad = host_values(grad.into_data());
        let mut values = host_values(tensor.into_data());
        let mut slot = self.host.slot(id, &shape);
        slot.time += 1;
        let step = Step {
            time: slot.time,
            lr: self.lr,
            weight_decay: if decays(D) {
                self.host.weight_decay
            } else {
                0.0
            },
            grad_scale: self.grad_scale,
        };
        let range = slot.range();
        let host = &mut *self.host;
        host.adam.step(
            &step,
            &mut values,
            &grad,
            &mut host.m[range.clone()],
            &mut host.v[range],
        );
        host.slots.insert(id, slot);
        // Host to device: the new value.
        let mut value = Tensor::<B, D>::from_data(TensorData::new(values, shape), &device);
        if require_grad {
            value = value.require_grad();
        }
        Param::from_mapped_value(id, value, mapper)
    }
}

#[cfg(test)]
mod tests {
    use burn::module::Module;
    use burn::tensor::Distribution;
    use burn::tensor::backend::Backend;

    use super::*;
    use crate::device::Cpu;

    #[derive(Module, Debug)]
    struct Two<B: Backend> {
        weight: Param<Tensor<B, 2>>,
        bias: Param<Tensor<B, 1>>,
    }

    fn config() -> OptimConfig {
        OptimConfig {
            lr: 1e-2,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
            gradient_clipping: 1.0,
            onebit: None,
            offload: true,
            adam: Default::default(),
        }
    }

    type Inner = <Cpu as AutodiffBackend>::InnerBackend;

    /// Random gradients for both parameters, as tensors to register.
    fn random() -> (Tensor<Inner, 2>, Tensor<Inner, 1>) {
        let device = Default::default();
        let normal = Distribution::Normal(0.0, 1.0);
        (
            Tensor::random([5, 3], normal, &device),
            Tensor::random([3], normal, &device),
        )
    }

    fn grads(model: &Two<Cpu>, (w, b): &(Tensor<Inner, 2>, Tensor<Inner, 1>)) -> GradientsParams {
        let mut grads = GradientsParams::new();
        grads.register(model.weight.id, w.clone());
        grads.register(model.bias.id, b.clone());
        grads
    }

    fn bits(model: &Two<Cpu>) -> Vec<u32> {
        [model.weight.val().into_data(), model.bias.val().into_data()]
            .into_iter()
            .flat_map(|d| d.iter::<f32>().map(f32::to_bits).collect::<Vec<_>>())
            .collect()
    }

    /// The state leaves as Burn's records (weights in the decay group, the
    /// bias in the no-decay one) and comes back to step exactly as before.
    #[test]
    fn records_round_trip_and_keep_stepping_the_same() {
        let device = Default::default();
        let normal = Distribution::Normal(0.0, 1.0);
        let mut model = Two::<Cpu> {
            weight: Param::from_tensor(Tensor::random([5, 3], normal, &device)),
            bias: Param::from_tensor(Tensor::random([3], normal, &device)),
        };
        let mut host = HostAdam::new(&config());
        for _ in 0..2 {
            let g = grads(&model, &random());
            model = host.step::<Cpu, _>(1e-2, model, g, Some(0.5));
        }
        assert_eq!(host.state_bytes(), 2 * 4 * (15 + 3));
        let (decay, no_decay) = host.records::<Cpu>(&device);
        assert!(decay.contains_key(&model.weight.id) && decay.len() == 1);
        assert!(no_decay.contains_key(&model.bias.id) && no_decay.len() == 1);
        let mut again = HostAdam::new(&config());
        again.load_records(decay, no_decay);
        let g = random();
        let a = host.step::<Cpu, _>(1e-2, model.clone(), grads(&model, &g), None);
        let b = again.step::<Cpu, _>(1e-2, model.clone(), grads(&model, &g), None);
        assert_eq!(bits(&a), bits(&b));
        assert_ne!(bits(&a), bits(&model));
    }

    /// The device holds no optimizer state with offload; the host holds what
    /// the device optimizer would.
    #[test]
    fn the_state_moves_from_device_to_host_memory() {
        use crate::optim::NeoxOptimizer;
        let device = Default::default();
        let normal = Distribution::Normal(0.0, 1.0);
        let model = Two::<Cpu> {
            weight: Param::from_tensor(Tensor::random([5, 3], normal, &device)),
            bias: Param::from_tensor(Tensor::random([3], normal, &device)),
        };
        let params = [(model.weight.id, 2), (model.bias.id, 1)];
        let g = random();
        let bytes = |offload: bool| {
            let mut optim = NeoxOptimizer::<Cpu, Two<Cpu>>::new(&OptimConfig {
                offload,
                ..config()
            });
            optim.apply(1e-2, model.clone(), grads(&model, &g), 0.5);
            (optim.state_bytes(&params), optim.host_state_bytes())
        };
        assert_eq!(bytes(false), (8 * 18, 0));
        assert_eq!(bytes(true), (0, 8 * 18));
    }
}
