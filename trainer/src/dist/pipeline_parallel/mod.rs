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

pub mod partition;

use std::collections::VecDeque;
use std::sync::Arc;

use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor, TensorData};

pub use partition::{PartitionMethod, Stage};

use super::comm::{CommError, CommExt, Communicator, ReduceOp};
use super::shard::{GptShard, StageInput};
use super::tensor_parallel::TpOps;
use crate::data::Batch;

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
struct InFlight<B: AutodiffBackend> {
    /// The stage's input, when it came from the previous stage.
    input: Option<Tensor<B, 3>>,
    /// The stage's output (not the last stage) or its scaled loss (the last).
    output: Output<B>,
}

enum Output<B: AutodiffBackend> {
    Hidden(Tensor<B, 3>),
    Loss(Tensor<B, 1>),
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
    /// divided by `n`. Returns the accumulated gradients of this stage's
    /// parameters and, on the last stage, each micro batch's divided loss.
    pub fn train<B: AutodiffBackend + TpOps>(
        &self,
        model: &GptShard<B>,
        batches: Vec<Batch<B>>,
        n: usize,
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
        for _ in 0..warmup {
            if let Some(batch) = batches.next() {
                pending.push_back(self.forward(model, batch, n, &mut losses)?);
            }
        }
        for batch in batches {
            pending.push_back(self.forward(model, batch, n, &mut losses)?);
            if let Some(f) = pending.pop_front() {
                self.backward(model, f, &mut accumulator)?;
            }
        }
        while let Some(f) = pending.pop_front() {
            self.backward(model, f, &mut accumulator)?;
        }
        let grads = self.sum_tied(model, accumulator.grads())?;
        Ok((grads, losses))
    }

    fn forward<B: AutodiffBackend + TpOps>(
        &self,
        model: &GptShard<B>,
        batch: Batch<B>,
        n: usize,
        losses: &mut Vec<f64>,
    ) -> Result<InFlight<B>, CommError> {
        let (input, leaf) = match self.prev() {
            None => (StageInput::Tokens(batch.inputs), None),
            Some(from) => {
                let [b, t] = batch.inputs.dims();
                let shape = [b, t, model.config.hidden_size];
                let x = self
                    .recv(from, shape, &batch.inputs.device())?
                    .require_grad();
                (StageInput::Hidden(x.clone()), Some(x))
            }
        };
        let y = model.forward_stage(input);
        let output = match self.next() {
            None => {
                let loss = model.loss_of(y, batch.targets) / n as f64;
                losses.push(loss.clone().into_scalar().elem::<f64>());
                Output::Loss(loss)
            }
            Some(to) => {
                self.send(y.clone(), to)?;
                Output::Hidden(y)
            }
        };
        Ok(InFlight {
            input: leaf,
            output,
        })
    }

    fn backward<B: AutodiffBackend + TpOps>(
        &self,
        model: &GptShard<B>,
        f: InFlight<B>,
        accumulator: &mut GradientsAccumulator<GptShard<B>>,
    ) -> Result<(), CommError> {
        let grads = match f.output {
            Output::Loss(loss) => {
                model.group().before_backward();
                loss.backward()
            }
            Output::Hidden(y) => {
                let to = self.next().unwrap_or(0);
                let g = self.recv(to, y.dims(), &y.device())?;
                model.group().before_backward();
                (y * g).sum().backward()
            }
        };
        if let (Some(x), Some(from)) = (f.input, self.prev()) {
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

    /// The losses of `batches` through `model` (a stage), forward only: on
    /// the last stage one per micro batch, elsewhere none.
    pub fn evaluate<B: Backend + TpOps>(
        &self,
        model: &GptShard<B>,
        batches: impl Iterator<Item = Batch<B>>,
    ) -> Result<Vec<f64>, CommError> {
        let mut losses = Vec::new();
        for batch in batches {
            let input = match self.prev() {
                None => StageInput::Tokens(batch.inputs),
                Some(from) => {
                    let [b, t] = batch.inputs.dims();
                    let shape = [b, t, model.config.hidden_size];
                    StageInput::Hidden(self.recv(from, shape, &batch.inputs.device())?)
                }
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
