//! Megatron's tensor-parallel mappings (`megatron/mpu/mappings.py`) as
//! autodiff operations over a [`TpGroup`]:
//!
//! - copy-to-TP: identity forward, all-reduce (sum) of the gradient backward;
//!   it opens a split region, whose ranks each send a partial gradient back.
//! - reduce-from-TP: all-reduce (sum) forward, identity backward; it closes a
//!   split region by adding the ranks' partial results.
//!
//! On a backend without autodiff (evaluation) both are their forwards. The
//! collectives run on host buffers, in rank order (the communicator's
//! contract), so a run is reproducible.
//!
//! A backward pass cannot return an error: a failed collective is recorded in
//! the group, which then skips its later collectives (no rank waits a timeout
//! per call), and [`TpGroup::check`] returns it after the step.

use std::sync::{Arc, Mutex};

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Shape, Tensor, TensorData, TensorMetadata, TensorPrimitive};

use crate::dist::comm::{CommError, CommExt, Communicator, ReduceOp};

/// The tensor-parallel group of one rank (one rank alone when it has no
/// communicator), and the first error its collectives met.
#[derive(Clone)]
pub struct TpGroup {
    comm: Option<Arc<dyn Communicator>>,
    failed: Arc<Mutex<Option<CommError>>>,
}

impl std::fmt::Debug for TpGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TpGroup")
            .field("rank", &self.rank())
            .field("size", &self.size())
            .finish()
    }
}

impl TpGroup {
    /// One rank alone: the mappings are identities.
    pub fn single() -> Self {
        TpGroup {
            comm: None,
            failed: Arc::default(),
        }
    }

    /// The ranks of `comm` share each split layer.
    pub fn new(comm: Arc<dyn Communicator>) -> Self {
        TpGroup {
            comm: (comm.size() > 1).then_some(comm),
            failed: Arc::default(),
        }
    }

    pub fn rank(&self) -> usize {
        self.comm.as_ref().map_or(0, |c| c.rank())
    }

    pub fn size(&self) -> usize {
        self.comm.as_ref().map_or(1, |c| c.size())
    }

    pub fn comm(&self) -> Option<&Arc<dyn Communicator>> {
        self.comm.as_ref()
    }

    /// The first error a collective of this group met since the last check.
    pub fn check(&self) -> Result<(), CommError> {
        let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        match failed.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Reduces `values` over the group in place; on failure records the
    /// error (the values are then this rank's own).
    pub fn all_reduce_host(&self, values: &mut [f32], op: ReduceOp) {
        let Some(comm) = &self.comm else { return };
        let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        if failed.is_some() {
            return;
        }
        if let Err(e) = comm.all_reduce_f32(values, op) {
            *failed = Some(e);
        }
    }

    /// Waits until every rank of the group is about to run its backward
    /// pass: call it right before `backward()`, with nothing else to wait for.
    ///
    /// Ranks that are threads of one process share Burn's autodiff
    /// bookkeeping: a thread ending a backward pass visits (locks) every
    /// thread's graph, so it waits for any backward pass in progress, and a
    /// backward pass here waits for the group's other ranks (the gradients of
    /// copy-to-TP). Were a rank in its backward pass to wait for a peer that
    /// still waits for anything else (a message from a thread that is tidying
    /// up), the wait could close in a circle; with every rank of the group
    /// inside the backward pass, it finishes. Ranks that are processes share
    /// nothing; for them the barrier costs one small message.
    pub fn before_backward(&self) {
        let Some(comm) = &self.comm else { return };
        let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        if failed.is_some() {
            return;
        }
        if let Err(e) = comm.barrier() {
            *failed = Some(e);
        }
    }

    /// `x` reduced elementwise over the group (no autodiff: a plain value).
    pub fn all_reduce<B: Backend, const D: usize>(
        &self,
        x: Tensor<B, D>,
        op: ReduceOp,
    ) -> Tensor<B, D> {
        if self.comm.is_none() {
            return x;
        }
        let (shape, device, dtype) = (x.shape(), x.device(), x.dtype());
        let mut values: Vec<f32> = x.into_data().iter::<f32>().collect();
        self.all_reduce_host(&mut values, op);
        let out = Tensor::<B, D>::from_data(TensorData::new(values, shape), &device);
        if out.dtype() == dtype {
            out
        } else {
            out.cast(dtype)
        }
    }

    /// A gradient of any rank, summed over the group.
    fn all_reduce_primitive<B: Backend>(&self, x: FloatTensor<B>) -> FloatTensor<B> {
        let shape = x.shape();
        let flat = B::float_reshape(x, Shape::new([shape.num_elements()]));
        let flat = Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(flat));
        let summed = self
            .all_reduce(flat, ReduceOp::Sum)
            .into_primitive()
            .tensor();
        B::float_reshape(summed, shape)
    }
}

/// Backends that run the mappings: plain ones (their forwards) and Burn's
/// autodiff over them (with the backward passes above).
pub trait TpOps: crate::model::LossBackend {
    /// Identity forward; the gradient is summed over the group backward.
    fn copy_to_tp<const D: usize>(x: Tensor<Self, D>, group: &TpGroup) -> Tensor<Self, D> {
        let _ = group;
        x
    }

    /// Summed over the group forward; the gradient passes unchanged backward.
    fn reduce_from_tp<const D: usize>(x: Tensor<Self, D>, group: &TpGroup) -> Tensor<Self, D> {
        group.all_reduce(x, ReduceOp::Sum)
    }
}

impl TpOps for burn::backend::Flex {}

#[cfg(feature = "cuda")]
impl TpOps for burn::backend::Cuda {}

/// The gradient summed over the group.
#[derive(Debug)]
struct SumGradients;

impl<B: Backend> Backward<B, 1> for SumGradients {
    type State = TpGroup;

    fn backward(self, ops: Ops<TpGroup, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let group = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |g| {
            group.all_reduce_primitive::<B>(g)
        });
    }
}

/// The gradient passed on unchanged.
#[derive(Debug)]
struct PassGradients;

impl<B: Backend> Backward<B, 1> for PassGradients {
    type State = ();

    fn backward(self, ops: Ops<(), 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        unary::<B, _>(ops.parents, ops.node, grads, |g| g);
    }
}

impl<B: TpOps, C: CheckpointStrategy> TpOps for Autodiff<B, C> {
    fn copy_to_tp<const D: usize>(x: Tensor<Self, D>, group: &TpGroup) -> Tensor<Self, D> {
        if group.size() == 1 {
            return x;
        }
        let x = x.into_primitive().tensor();
        let out = match SumGradients
            .prepare::<C>([x.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(group.clone(), x.primitive),
            OpsKind::UnTracked(prep) => prep.finish(x.primitive),
        };
        Tensor::from_primitive(TensorPrimitive::Float(out))
    }

    fn reduce_from_tp<const D: usize>(x: Tensor<Self, D>, group: &TpGroup) -> Tensor<Self, D> {
        if group.size() == 1 {
            return x;
        }
        let x = x.into_primitive().tensor();
        let inner = Tensor::<B, D>::from_primitive(TensorPrimitive::Float(x.primitive.clone()));
        let summed = group
            .all_reduce(inner, ReduceOp::Sum)
            .into_primitive()
            .tensor();
        let out = PassGradients
            .prepare::<C>([x.node.clone()])
            .compute_bound()
            .stateless(summed);
        Tensor::from_primitive(TensorPrimitive::Float(out))
    }
}
