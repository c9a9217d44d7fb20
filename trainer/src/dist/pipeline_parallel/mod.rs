//! Pipeline parallelism (`pipe_parallel_size`): each stage holds a
//! contiguous run of the model's parts ([`partition`]) and passes its
//! activations forward, and their gradients back, to its neighbours.
//!
//! The schedule is 1F1B (DeepSpeed's `TrainSchedule`): stage `s` of `p` runs
//! `p - s - 1` forward passes ahead, then alternates one forward and one
//! backward, then drains the backward passes; at most `p - s` micro batches
//! are in flight on a stage. A stage's input is a fresh leaf
//! (`require_grad`), and its backward pass is seeded with the gradient the
//! next stage sent by `(y * g).sum().backward()`: the seed of a sum is ones
//! and `1 * g = g`, so every stage's gradients are bit for bit those of the
//! unsplit model. Micro batches go backward in order, so each stage
//! accumulates its gradients in one device's order.
//!
//! Tied input and output embeddings live on the first and the last stage;
//! their gradients are summed between the two after the micro batches, so
//! that both copies take the same step.
//!
//! In mixed precision a stage computes on a copy cast to the compute type,
//! as one device does, and activations and gradients travel as f32 (exact
//! for bf16 and fp16 values). With activation checkpointing a micro batch's
//! forward pass keeps only each layer group's input ([`crate::recompute`]),
//! and its backward pass recomputes the stage piece by piece, from its end
//! to its input.

pub mod partition;

use std::collections::VecDeque;
use std::sync::Arc;

use burn::module::Module;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, FloatDType, Int, Tensor, TensorData};

pub use partition::{PartitionMethod, Stage};

use super::comm::{CommError, CommExt, Communicator, ReduceOp};
use super::shard::{GptShard, StageInput};
use super::tensor_parallel::TpOps;
use crate::data::Batch;
use crate::precision::MixedPrecision;
use crate::recompute::{self, Reseed};
use crate::train::StepMode;

/// `loss` times the loss scale (unchanged at 1).
fn scaled<B: Backend>(loss: Tensor<B, 1>, scale: f64) -> Tensor<B, 1> {
    if scale == 1.0 { loss } else { loss * scale }
}

/// This rank's place in its pipeline and the groups it talks to.
#[derive(Clone)]
pub struct Pipeline {
    /// The ranks of this pipeline, stage `i` at rank `i`; `None` alone.
    comm: Option<Arc<dyn Communicator>>,
    /// The first and last stage, when they hold tied embeddings.
    tied: Option<Arc<dyn Communicator>>,
    stage: Stage,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("stage", &self.stage)
            .finish()
    }
}

/// A micro batch between its forward and its backward pass.
enum InFlight<B: AutodiffBackend> {
    /// Its graph, stored.
    Stored {
        /// The stage's input, when it came from the previous stage.
        input: Option<Tensor<B, 3>>,
        /// The stage's output (not the last stage) or its scaled loss (the last).
        output: Output<B>,
    },
    /// Activation checkpointing: only what recomputes the graph.
    Saved(Saved<B>),
}

enum Output<B: AutodiffBackend> {
    Hidden(Tensor<B, 3>),
    Loss(Tensor<B, 1>),
}

/// A checkpointed micro batch: each layer group's input (the first is the
/// stage's input) and the stage end's, the tokens (first stage) and targets
/// (last stage), and the dropout seeds of its pieces.
struct Saved<B: AutodiffBackend> {
    tokens: Option<Tensor<B, 2, Int>>,
    targets: Tensor<B, 2, Int>,
    inputs: Vec<Tensor<B::InnerBackend, 3>>,
    end: Tensor<B::InnerBackend, 3>,
    masks: Reseed<B>,
}

impl Pipeline {
    /// One stage holding the whole model.
    pub fn single(layers: usize) -> Self {
        Pipeline {
            comm: None,
            tied: None,
            stage: Stage::whole(layers),
        }
    }

    /// Stage `stage.index` of the pipeline `comm` (stage `i` at rank `i`);
    /// `tied` joins the first and last stage when their embeddings are tied.
    pub fn new(
        comm: Arc<dyn Communicator>,
        tied: Option<Arc<dyn Communicator>>,
        stage: Stage,
    ) -> Self {
        Pipeline {
            comm: (comm.size() > 1).then_some(comm),
            tied: tied.filter(|t| t.size() > 1),
            stage,
        }
    }

    pub fn stage(&self) -> &Stage {
        &self.stage
    }

    pub fn comm(&self) -> Option<&Arc<dyn Communicator>> {
        self.comm.as_ref()
    }

    /// Runs the forward and backward passes of `batches` (1F1B), each loss
    /// divided by `n`, in `mode`'s precision (the gradients those of the loss
    /// times its loss scale), recomputing groups of `mode.recompute` layers
    /// in the backward pass when set. Returns the accumulated gradients of
    /// this stage's parameters and, on the last stage, each micro batch's
    /// divided (unscaled) loss.
    pub fn train<B: AutodiffBackend + TpOps>(
        &self,
        model: &GptShard<B>,
        batches: Vec<Batch<B>>,
        n: usize,
        mode: &StepMode,
    ) -> Result<(GradientsParams, Vec<f64>), CommError>
    where
        B::InnerBackend: TpOps,
    {
        let m = batches.len();
        let warmup = (self.stage.count - self.stage.index - 1).min(m);
        let mut accumulator = GradientsAccumulator::<GptShard<B>>::new();
        let mut losses = Vec::with_capacity(m);
        let mut pending = VecDeque::with_capacity(warmup + 1);
        let mut batches = batches.into_iter();
        let mut step = |pending: &mut VecDeque<_>, losses: &mut Vec<f64>| match pending.pop_front()
        {
            Some(f) => self.backward(model, f, n, mode, losses, &mut accumulator),
            None => Ok(()),
        };
        for _ in 0..warmup {
            if let Some(batch) = batches.next() {
                pending.push_back(self.forward(model, batch, n, mode, &mut losses)?);
            }
        }
        for batch in batches {
            pending.push_back(self.forward(model, batch, n, mode, &mut losses)?);
            step(&mut pending, &mut losses)?;
        }
        while !pending.is_empty() {
            step(&mut pending, &mut losses)?;
        }
        let grads = self.sum_tied(model, accumulator.grads())?;
        Ok((grads, losses))
    }

    /// The previous stage's hidden states for `batch`, in the compute type
    /// `dtype` (`None` on the first stage, whose input is the tokens).
    fn receive<B: Backend>(
        &self,
        model: &GptShard<B>,
        batch: &Batch<B>,
        dtype: FloatDType,
    ) -> Result<Option<Tensor<B, 3>>, CommError> {
        let Some(from) = self.prev() else {
            return Ok(None);
        };
        let [b, t] = batch.inputs.dims();
        let x = self.recv(
            from,
            [b, t, model.config.hidden_size],
            &batch.inputs.device(),
        )?;
        Ok(Some(if dtype == FloatDType::F32 {
            x
        } else {
            x.cast(dtype)
        }))
    }

    fn forward<B: AutodiffBackend + TpOps>(
        &self,
        model: &GptShard<B>,
        batch: Batch<B>,
        n: usize,
        mode: &StepMode,
        losses: &mut Vec<f64>,
    ) -> Result<InFlight<B>, CommError> {
        let precision = &mode.precision;
        let received = self.receive(model, &batch, precision.precision().dtype())?;
        if let Some(group) = mode.recompute {
            return self.forward_saving(model, batch, received, group, precision);
        }
        // A backward pass consumes the casts: one copy per micro batch.
        let compute = precision.cast(model.clone());
        let leaf = received.map(Tensor::require_grad);
        let input = match &leaf {
            Some(x) => StageInput::Hidden(x.clone()),
            None => StageInput::Tokens(batch.inputs),
        };
        let y = compute.forward_stage(input);
        let output = match self.next() {
            None => {
                let loss = compute.loss_of(y, batch.targets) / n as f64;
                losses.push(loss.clone().into_scalar().elem::<f64>());
                Output::Loss(scaled(loss, precision.loss_scale()))
            }
            Some(to) => {
                self.send(y.clone(), to)?;
                Output::Hidden(y)
            }
        };
        Ok(InFlight::Stored {
            input: leaf,
            output,
        })
    }

    /// The forward pass without a graph, keeping each group of `group`
    /// layers' input ([`crate::recompute`]); sends the stage's output on.
    fn forward_saving<B: AutodiffBackend + TpOps>(
        &self,
        model: &GptShard<B>,
        batch: Batch<B>,
        received: Option<Tensor<B, 3>>,
        group: usize,
        precision: &MixedPrecision,
    ) -> Result<InFlight<B>, CommError> {
        let device = batch.inputs.device();
        let masks = Reseed::<B>::new(&model.config, &device);
        let frozen = precision.cast(model.clone().no_grad());
        let tokens = received.is_none().then(|| batch.inputs.clone());
        masks.piece(0);
        let x = frozen.input(match received {
            Some(x) => StageInput::Hidden(x),
            None => StageInput::Tokens(batch.inputs),
        });
        let [_, t, _] = x.dims();
        let ctx = frozen.context(t, &device);
        let groups = recompute::groups(model.layers.len(), group);
        let (inputs, x) = recompute::forward_groups(x, groups.len(), |i, x| {
            masks.piece(i + 1);
            frozen.run_layers(groups[i].clone(), x, &ctx)
        });
        if let Some(to) = self.next() {
            self.send(frozen.finish(x.clone()), to)?;
        }
        Ok(InFlight::Saved(Saved {
            tokens,
            targets: batch.targets,
            inputs,
            end: x.inner(),
            masks,
        }))
    }

    fn backward<B: AutodiffBackend + TpOps>(
        &self,
        model: &GptShard<B>,
        f: InFlight<B>,
        n: usize,
        mode: &StepMode,
        losses: &mut Vec<f64>,
        accumulator: &mut GradientsAccumulator<GptShard<B>>,
    ) -> Result<(), CommError> {
        let (input, output) = match f {
            InFlight::Stored { input, output } => (input, output),
            InFlight::Saved(saved) => {
                return self.backward_saved(model, saved, n, mode, losses, accumulator);
            }
        };
        let grads = match output {
            Output::Loss(loss) => {
                model.group().before_backward();
                loss.backward()
            }
            Output::Hidden(y) => {
                let g = self.recv_grad(&y)?;
                model.group().before_backward();
                (y * Tensor::from_inner(g)).sum().backward()
            }
        };
        if let (Some(x), Some(from)) = (input, self.prev()) {
            let shape = x.dims();
            let g = match x.grad(&grads) {
                Some(g) => Tensor::<B, 3>::from_inner(g),
                None => Tensor::zeros(shape, &x.device()),
            };
            self.send(g, from)?;
        }
        accumulator.accumulate(model, GradientsParams::from_grads(grads, model));
        Ok(())
    }

    /// The gradient of this stage's output `y`, from the next stage, in `y`'s type.
    fn recv_grad<B: AutodiffBackend>(
        &self,
        y: &Tensor<B, 3>,
    ) -> Result<Tensor<B::InnerBackend, 3>, CommError> {
        let to = self.next().unwrap_or(0);
        let g = self.recv::<B::InnerBackend>(to, y.dims(), &y.device())?;
        let dtype = y.dtype();
        Ok(if g.dtype() == dtype { g } else { g.cast(dtype) })
    }

    /// The backward pass of a checkpointed micro batch: the stage's end (its
    /// loss on the last stage), then its layer groups last to first, then
    /// the embedding (first stage), each recomputed from its saved input;
    /// the gradient of the stage's input goes to the previous stage.
    fn backward_saved<B: AutodiffBackend + TpOps>(
        &self,
        model: &GptShard<B>,
        saved: Saved<B>,
        n: usize,
        mode: &StepMode,
        losses: &mut Vec<f64>,
        accumulator: &mut GradientsAccumulator<GptShard<B>>,
    ) -> Result<(), CommError> {
        let precision = &mode.precision;
        let group = mode.recompute.unwrap_or(1);
        let mut keep = |grads: B::Gradients| {
            accumulator.accumulate(model, GradientsParams::from_grads(grads, model));
        };
        let backward = |loss: Tensor<B, 1>| {
            model.group().before_backward();
            loss.backward()
        };
        let Saved {
            tokens,
            targets,
            inputs,
            end,
            masks,
        } = saved;
        // The stage's end: final norm, output layer and loss, as they are here.
        let x = Tensor::<B, 3>::from_inner(end).require_grad();
        let shell = precision.cast(model.without_layers());
        let y = shell.finish(x.clone());
        let grads = match self.next() {
            None => {
                let loss = shell.loss_of(y, targets) / n as f64;
                losses.push(loss.clone().into_scalar().elem::<f64>());
                backward(scaled(loss, precision.loss_scale()))
            }
            Some(_) => {
                let g = self.recv_grad(&y)?;
                backward(recompute::seeded(y, g))
            }
        };
        let g = x
            .grad(&grads)
            .expect("the stage end's input is a leaf of its graph");
        keep(grads);
        let [_, t, _] = g.dims();
        let ctx = model.context(t, &g.device());
        let groups = recompute::groups(model.layers.len(), group);
        let run = |i: usize, x: Tensor<B, 3>| {
            let layers: Vec<_> = model.layers[groups[i].clone()]
                .iter()
                .map(|layer| precision.cast(layer.clone()))
                .collect();
            masks.piece(i + 1);
            layers
                .iter()
                .fold(x, |x, layer| layer.forward(x, &ctx, model.group()))
        };
        let g = recompute::backward_groups(inputs, g, run, backward, &mut keep);
        match (tokens, self.prev()) {
            (Some(tokens), _) => {
                let shell = precision.cast(model.without_layers());
                masks.piece(0);
                let x = shell.input(StageInput::Tokens(tokens));
                keep(backward(recompute::seeded(x, g)));
            }
            (None, Some(from)) => self.send(g, from)?,
            (None, None) => {}
        }
        Ok(())
    }

    fn prev(&self) -> Option<usize> {
        (self.comm.is_some() && !self.stage.is_first()).then(|| self.stage.index - 1)
    }

    fn next(&self) -> Option<usize> {
        (self.comm.is_some() && !self.stage.is_last()).then(|| self.stage.index + 1)
    }

    fn send<B: Backend>(&self, x: Tensor<B, 3>, to: usize) -> Result<(), CommError> {
        let Some(comm) = &self.comm else {
            return Ok(());
        };
        let values: Vec<f32> = x.into_data().iter::<f32>().collect();
        comm.send(bytemuck::cast_slice(&values), to)
    }

    fn recv<B: Backend>(
        &self,
        from: usize,
        shape: [usize; 3],
        device: &B::Device,
    ) -> Result<Tensor<B, 3>, CommError> {
        let mut values = vec![0f32; shape.iter().product()];
        if let Some(comm) = &self.comm {
            comm.recv(bytemuck::cast_slice_mut(&mut values), from)?;
        }
        Ok(Tensor::from_data(TensorData::new(values, shape), device))
    }

    /// Sums the tied embedding's gradient between the first and last stage.
    fn sum_tied<B: AutodiffBackend + TpOps>(
        &self,
        model: &GptShard<B>,
        mut grads: GradientsParams,
    ) -> Result<GradientsParams, CommError> {
        let (Some(tied), Some(embed)) = (&self.tied, &model.embed_in) else {
            return Ok(grads);
        };
        let id = embed.weight.id;
        let shape = embed.weight.dims();
        let device = embed.weight.device();
        let mut values: Vec<f32> = match grads.remove::<B::InnerBackend, 2>(id) {
            Some(g) => g.into_data().iter::<f32>().collect(),
            None => vec![0.0; shape.iter().product()],
        };
        tied.all_reduce_f32(&mut values, ReduceOp::Sum)?;
        let summed =
            Tensor::<B::InnerBackend, 2>::from_data(TensorData::new(values, shape), &device);
        grads.register(id, summed);
        Ok(grads)
    }

    /// `value` as the last stage has it, on every stage.
    pub fn from_last(&self, value: f64) -> Result<f64, CommError> {
        let Some(comm) = &self.comm else {
            return Ok(value);
        };
        let mut buf = [value];
        comm.broadcast(bytemuck::cast_slice_mut(&mut buf), comm.size() - 1)?;
        Ok(buf[0])
    }

    /// The losses of `batches` through `model` (a stage, its parameters in
    /// `dtype`), forward only: on the last stage one per micro batch,
    /// elsewhere none.
    pub fn evaluate<B: Backend + TpOps>(
        &self,
        model: &GptShard<B>,
        batches: impl Iterator<Item = Batch<B>>,
        dtype: FloatDType,
    ) -> Result<Vec<f64>, CommError> {
        let mut losses = Vec::new();
        for batch in batches {
            let input = match self.receive(model, &batch, dtype)? {
                Some(x) => StageInput::Hidden(x),
                None => StageInput::Tokens(batch.inputs),
            };
            let y = model.forward_stage(input);
            match self.next() {
                Some(to) => self.send(y, to)?,
                None => losses.push(model.loss_of(y, batch.targets).into_scalar().elem::<f64>()),
            }
        }
        model.group().check()?;
        Ok(losses)
    }
}
