//! A split model made whole again: the shares of every (stage, tensor rank)
//! gathered to world rank 0 and put back where [`GptShard::new`] took them
//! from, giving the [`GptNeox`] that exports to Hugging Face (`hf::save`) and
//! trains on one device.
//!
//! Where each element of a share came from is found by splitting "probe"
//! models whose values are element indices: a split moves values and never
//! computes with them, so the indices come back exact. That makes the merge
//! the inverse of any split, without a second description of the split.

use std::sync::Arc;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Tensor, TensorData, backend::Backend};

use super::comm::{CommError, Communicator};
use super::parallel::Parallel;
use super::pipeline_parallel::Stage;
use super::shard::GptShard;
use super::tensor_parallel::layers::Shard;
use super::tensor_parallel::{SplitError, TpGroup, TpOps};
use super::topology::Coord;
use crate::model::GptNeox;

/// Indices below 2^22 are exact in f32 with room to spare.
const LOW: usize = 1 << 22;

/// Per (stage, tensor rank), per parameter of the share, per element: the
/// (parameter, element) of the whole model it came from.
type Origins = Vec<Vec<Vec<(usize, usize)>>>;

/// Each parameter's shape, in visiting order (without drawing lazy ones).
pub fn shapes<B: Backend, M: Module<B>>(model: &M) -> Vec<Vec<usize>> {
    struct Collect(Vec<Vec<usize>>);
    impl<B: Backend> ModuleVisitor<B> for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            self.0.push(param.lazy_shape().dims::<D>().to_vec());
        }
    }
    let mut c = Collect(Vec::new());
    model.visit(&mut c);
    c.0
}

/// Every parameter's values, in visiting order.
pub fn values<B: Backend, M: Module<B>>(model: &M) -> Vec<Vec<f32>> {
    struct Collect(Vec<Vec<f32>>);
    impl<B: Backend> ModuleVisitor<B> for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            self.0.push(param.val().into_data().iter::<f32>().collect());
        }
    }
    let mut c = Collect(Vec::new());
    model.visit(&mut c);
    c.0
}

/// `model` with its parameters' values replaced, in visiting order, by
/// `f(index, len)`; ids kept. Needs no value of `model` (a lazily
/// initialised parameter is never drawn: no RNG is touched).
pub fn filled<B: Backend>(
    model: &GptNeox<B>,
    mut f: impl FnMut(usize, usize) -> Vec<f32>,
) -> GptNeox<B> {
    struct Fill<'a, F> {
        f: &'a mut F,
        index: usize,
    }
    impl<B: Backend, F: FnMut(usize, usize) -> Vec<f32>> ModuleMapper<B> for Fill<'_, F> {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            let dims = param.lazy_shape().dims::<D>();
            let device = param.lazy_device();
            let values = (self.f)(self.index, dims.iter().product());
            self.index += 1;
            let data = TensorData::new(values, dims);
            let t = Tensor::<B, D>::from_data(data, &device).require_grad();
            Param::initialized(param.id, t)
        }
    }
    model.clone().map(&mut Fill {
        f: &mut f,
        index: 0,
    })
}

/// Models whose values are element indices: split like the model, they say
/// where each element of a share came from.
pub struct Probes<B: Backend> {
    param: GptNeox<B>,
    low: GptNeox<B>,
    high: GptNeox<B>,
}

impl<B: TpOps> Probes<B> {
    /// Probes of `template`'s structure (its values are not used).
    pub fn new(template: &GptNeox<B>) -> Self {
        let probe = |f: &dyn Fn(usize, usize) -> f32| {
            filled(template, |p, n| (0..n).map(|i| f(p, i)).collect())
        };
        Probes {
            param: probe(&|p, _| p as f32),
            low: probe(&|_, i| (i % LOW) as f32),
            high: probe(&|_, i| (i / LOW) as f32),
        }
    }

    /// For each parameter of share `shard` of `stage`, in visiting order,
    /// where each of its elements comes from: (parameter, element) of the
    /// whole model.
    pub fn origins(
        &self,
        stage: &Stage,
        shard: Shard,
    ) -> Result<Vec<Vec<(usize, usize)>>, SplitError> {
        let split = |m: &GptNeox<B>| {
            GptShard::new(m, stage.clone(), shard, TpGroup::single()).map(|s| values(&s))
        };
        let (p, l, h) = (split(&self.param)?, split(&self.low)?, split(&self.high)?);
        Ok(p.iter()
            .zip(l.iter().zip(&h))
            .map(|(p, (l, h))| {
                p.iter()
                    .zip(l.iter().zip(h))
                    .map(|(&p, (&l, &h))| (p as usize, h as usize * LOW + l as usize))
                    .collect()
            })
            .collect())
    }
}

/// For every (stage, tensor rank), in that order, where each element of each
/// of its parameters comes from: (parameter, element) of `template`.
fn origins<B: TpOps>(
    template: &GptNeox<B>,
    stages: &[Stage],
    tp: usize,
) -> Result<Origins, SplitError> {
    let probes = Probes::new(template);
    let mut all = Vec::with_capacity(stages.len() * tp);
    for stage in stages {
        for rank in 0..tp {
            all.push(probes.origins(stage, Shard { rank, size: tp })?);
        }
    }
    Ok(all)
}

/// The model whose split by `stages` and `tp` gives `shares` (one per
/// (stage, tensor rank), in that order, each its parameters in visiting
/// order); `template` gives the structure (its values are not used).
pub fn merge<B: TpOps>(
    template: &GptNeox<B>,
    stages: &[Stage],
    tp: usize,
    shares: &[Vec<Vec<f32>>],
) -> Result<GptNeox<B>, SplitError> {
    Ok(place(template, origins(template, stages, tp)?, shares))
}

/// `template` with the shares' values put at their origins.
fn place<B: Backend>(
    template: &GptNeox<B>,
    origins: Origins,
    shares: &[Vec<Vec<f32>>],
) -> GptNeox<B> {
    let mut whole = values(template);
    for (share, origin) in shares.iter().zip(origins) {
        for (param, from) in share.iter().zip(origin) {
            for (&value, (p, i)) in param.iter().zip(from) {
                whole[p][i] = value;
            }
        }
    }
    filled(template, |p, _| std::mem::take(&mut whole[p]))
}

/// Gathers every share of data rank 0 to world rank 0 and merges them there
/// (`None` on the other ranks). Collective over `world`.
pub fn gather<B: TpOps>(
    world: &Arc<dyn Communicator>,
    parallel: &Parallel,
    model: &GptShard<B>,
    template: &GptNeox<B>,
) -> Result<Option<GptNeox<B>>, CommError> {
    let topology = parallel.topology;
    let mine = values(model);
    if world.rank() != 0 {
        if parallel.coord.dp == 0 {
            let flat: Vec<f32> = mine.concat();
            world.send(bytemuck::cast_slice(&flat), 0)?;
        }
        return Ok(None);
    }
    let split_error = |e: SplitError| CommError::Other(e.to_string());
    let origins = origins(template, &parallel.stages, topology.tp).map_err(split_error)?;
    let mut shares = Vec::with_capacity(origins.len());
    for (i, origin) in origins.iter().enumerate() {
        let coord = Coord {
            pp: i / topology.tp,
            dp: 0,
            tp: i % topology.tp,
        };
        let rank = topology.rank(coord);
        if rank == 0 {
            shares.push(mine.clone());
            continue;
        }
        let sizes: Vec<usize> = origin.iter().map(Vec::len).collect();
        let mut flat = vec![0f32; sizes.iter().sum()];
        world.recv(bytemuck::cast_slice_mut(&mut flat), rank)?;
        let mut rest = flat.as_slice();
        let mut share = Vec::with_capacity(sizes.len());
        for n in sizes {
            let (head, tail) = rest.split_at(n);
            share.push(head.to_vec());
            rest = tail;
        }
        shares.push(share);
    }
    Ok(Some(place(template, origins, &shares)))
}
