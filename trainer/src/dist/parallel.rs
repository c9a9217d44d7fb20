//! The three parallelisms together, GPT-NeoX's grid (pipe x data x model):
//! a rank holds one tensor-parallel share of one pipeline stage and trains it
//! with its data-parallel peers (ZeRO among them). One optimizer step:
//! the stage's micro batches through the pipeline (1F1B), the tied
//! embedding's gradient summed between first and last stage, gradients
//! summed over the data ranks, the global norm over every shard, the step.

use std::sync::Arc;

use burn::tensor::backend::AutodiffBackend;

use super::comm::{CommError, CommExt, Communicator, ReduceOp};
use super::data_parallel::{DataParallel, ParamLayout};
use super::merge;
use super::pipeline_parallel::{PartitionMethod, Pipeline, Stage, partition};
use super::shard::GptShard;
use super::tensor_parallel::layers::Shard;
use super::tensor_parallel::{SplitError, TpGroup, TpLayer, TpOps};
use super::topology::{Coord, Topology};
use super::zero::ZeroStage;
use crate::data::Batch;
use crate::error::TrainError;
use crate::model::GptNeox;
use crate::optim::{self, NeoxOptimizer};
use crate::train::{StepMode, StepStats};

/// This rank's groups in the grid.
#[derive(Clone, Debug)]
pub struct Parallel {
    pub topology: Topology,
    pub coord: Coord,
    pub dp: DataParallel,
    pub tp: TpGroup,
    pub pipeline: Pipeline,
    /// Every stage, in order.
    pub stages: Vec<Stage>,
}

impl Parallel {
    /// One rank alone holding the whole model.
    pub fn single(layers: usize) -> Self {
        Parallel {
            topology: Topology {
                pp: 1,
                dp: 1,
                tp: 1,
            },
            coord: Coord {
                pp: 0,
                dp: 0,
                tp: 0,
            },
            dp: DataParallel::single(),
            tp: TpGroup::single(),
            pipeline: Pipeline::single(layers),
            stages: vec![Stage::whole(layers)],
        }
    }

    /// This rank of `world` in `topology`, its model's stages cut by
    /// `method` (`model` gives the parameter counts `parameters` weighs).
    /// Collective over `world`.
    pub fn new<B: TpOps>(
        world: &Arc<dyn Communicator>,
        topology: Topology,
        zero: ZeroStage,
        model: &GptNeox<B>,
        method: &PartitionMethod,
    ) -> Result<Self, TrainError> {
        let config = &model.config;
        let rank = world.rank();
        let coord = topology.coord(rank);
        let shard = Shard {
            rank: coord.tp,
            size: topology.tp,
        };
        super::tensor_parallel::check_divisible(config, topology.tp)
            .map_err(|e| TrainError::Device(e.to_string()))?;
        let stages = stages(model, topology.pp, shard, method);
        let sub = |ranks: Vec<usize>| world.sub_group(&ranks);
        let dp = DataParallel::new(sub(topology.dp_group(rank))?, zero);
        let tp = TpGroup::new(sub(topology.tp_group(rank))?);
        let pp_ranks = topology.pp_group(rank);
        let pp = sub(pp_ranks.clone())?;
        // The tied embedding's two holders; every other stage makes a group
        // of itself, so that every rank makes the same calls.
        let ends = vec![pp_ranks[0], pp_ranks[pp_ranks.len() - 1]];
        let stage = stages[coord.pp].clone();
        let tied = if config.tied_embeddings && topology.pp > 1 && ends.contains(&rank) {
            Some(sub(ends)?)
        } else {
            sub(vec![rank])?;
            None
        };
        Ok(Parallel {
            topology,
            coord,
            dp,
            tp,
            pipeline: Pipeline::new(pp, tied, stage),
            stages,
        })
    }

    pub fn stage(&self) -> &Stage {
        self.pipeline.stage()
    }

    /// This rank's share of `model`.
    pub fn shard<B: TpOps>(&self, model: &GptNeox<B>) -> Result<GptShard<B>, SplitError> {
        let shard = Shard {
            rank: self.coord.tp,
            size: self.topology.tp,
        };
        GptShard::new(model, self.stage().clone(), shard, self.tp.clone())
    }

    /// Which of this rank's parameters (in visiting order) its global norm
    /// counts: a replicated one only on tensor rank 0, and the tied
    /// embedding's copy only on the first stage.
    pub fn counted<B: TpOps>(&self, model: &GptNeox<B>, shard: &GptShard<B>) -> Vec<bool> {
        let mine = merge::shapes(shard);
        let whole = GptShard::new(
            model,
            self.stage().clone(),
            Shard { rank: 0, size: 1 },
            TpGroup::single(),
        )
        .map(|s| merge::shapes(&s))
        .unwrap_or_else(|_| mine.clone());
        let tied_copy = shard.embed_in.is_some() && !self.stage().embed;
        mine.iter()
            .zip(&whole)
            .enumerate()
            .map(|(i, (a, b))| {
                let replicated = a == b;
                !(tied_copy && i == 0) && (!replicated || self.coord.tp == 0)
            })
            .collect()
    }

    /// The global gradient norm from this rank's per-parameter squared
    /// sums: summed over the tensor ranks, then concatenated over the stages
    /// in the model's order and added in that order (as one device does).
    pub fn global_norm(&self, squares: Vec<f32>, counted: &[bool]) -> Result<f64, CommError> {
        let mut squares: Vec<f32> = squares
            .iter()
            .zip(counted)
            .map(|(&s, &c)| if c { s } else { 0.0 })
            .collect();
        if let Some(tp) = self.tp.comm() {
            tp.all_reduce_f32(&mut squares, ReduceOp::Sum)?;
        }
        let Some(pp) = self.pipeline.comm() else {
            return Ok(optim::norm_of_squares(&squares));
        };
        let mut counts = vec![0i64; pp.size()];
        counts[pp.rank()] = squares.len() as i64;
        pp.all_reduce(
            bytemuck::cast_slice_mut(&mut counts),
            super::DType::I64,
            ReduceOp::Sum,
        )?;
        let counts: Vec<usize> = counts.iter().map(|&c| c as usize).collect();
        let mut all = vec![0f32; counts.iter().sum()];
        pp.all_gather_f32(&squares, &mut all, &counts)?;
        Ok(optim::norm_of_squares(&all))
    }

    /// One optimizer step over this rank's `micro_batches` (each weighing
    /// `1 / (micro batches x data ranks)`) in `mode` (precision, loss
    /// scaling, recomputation), as [`crate::train::train_step`] takes it on
    /// one device. The loss is the mean over every data rank's micro
    /// batches, known on every rank. An fp16 step whose gradients overflow
    /// anywhere is skipped on every rank: the norm that finds it is global.
    #[allow(clippy::too_many_arguments)]
    pub fn train_step<B: AutodiffBackend + TpOps>(
        &self,
        model: GptShard<B>,
        optim: &mut NeoxOptimizer<B, GptShard<B>>,
        micro_batches: Vec<Batch<B>>,
        lr: f64,
        layout: &ParamLayout,
        counted: &[bool],
        device: &B::Device,
        mode: &mut StepMode,
    ) -> Result<(GptShard<B>, StepStats), TrainError>
    where
        B::InnerBackend: TpOps,
    {
        let n = micro_batches.len().max(1) * self.dp.size();
        let scale = mode.precision.loss_scale();
        let (grads, losses) = self.pipeline.train(&model, micro_batches, n, mode)?;
        self.tp.check()?;
        let mut loss = 0.0;
        if self.stage().is_last() {
            for value in losses {
                loss = self.dp.sum_in_order(loss, value)?;
            }
        }
        let loss = self.pipeline.from_last(loss)?;
        let grads = self.dp.reduce_gradients(&model, layout, grads, device)?;
        let norm = |squares: Vec<f32>| self.global_norm(squares, counted);
        let loss_scale = mode.precision.skips_overflow().then_some(scale);
        let (model, grad_norm) = self
            .dp
            .step_with(optim, lr, model, layout, grads, device, norm, loss_scale)?;
        let skipped = loss_scale.is_some() && !grad_norm.is_finite();
        mode.precision.update(skipped)?;
        let stats = StepStats {
            loss,
            grad_norm,
            skipped,
        };
        Ok((model, stats))
    }
}

/// The `pp` stages `method` cuts `model` into; `parameters` weighs the
/// pipeline items by tensor-parallel share `shard`'s parameter counts.
pub fn stages<B: TpOps>(
    model: &GptNeox<B>,
    pp: usize,
    shard: Shard,
    method: &PartitionMethod,
) -> Vec<Stage> {
    let config = &model.config;
    let layers = config.num_layers;
    // Parameters of GPT-NeoX's pipeline items (this share's).
    let item_params = |i: usize| -> usize {
        use burn::module::Module;
        let embed = || model.embed_in.weight.dims()[0] / shard.size * config.hidden_size;
        match i {
            0 => embed() + model.embed_pos.as_ref().map_or(0, |p| p.num_params()),
            i if (2..2 + layers).contains(&i) => {
                TpLayer::split(&model.layers[i - 2], config, shard).num_params()
            }
            i if i == layers + 3 => model.final_layer_norm.num_params(),
            i if i == layers + 4 => embed(),
            _ => 0,
        }
    };
    partition::partition(method, layers, pp, item_params)
}
