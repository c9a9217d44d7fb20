//! Data parallelism: every rank holds the whole model and reads its own micro
//! batches, as GPT-NeoX's `DistributedBatchSampler` deals them (micro step j
//! of a global batch gives rank r the micro batch `j * dp + r`); the ranks'
//! gradients are summed in rank order before the optimizer step, and with
//! [`ZeroStage`] the optimizer state and gradients are split among them.
//!
//! Every micro batch's loss is scaled by `1 / (gradient_accumulation_steps *
//! dp)` before its backward pass, so the sums are the averages one device
//! would compute. With one micro batch per rank and step, the gradients are
//! exactly those of one device accumulating the `dp` micro batches in order
//! (addition in rank order is that order); with more, each rank adds its own
//! micro batches first, which differs from one device's order in rounding only.
//! Losses are summed with the running total on rank 0, in the one device's
//! order for any accumulation.

use std::collections::HashSet;
use std::sync::Arc;

use burn::module::{AutodiffModule, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorData};

use super::comm::{CommError, CommExt, Communicator, ReduceOp};
use super::zero::{Partition, ZeroStage};
use crate::optim::{self, NeoxOptimizer};

/// The data-parallel group of this rank and how it shares work.
#[derive(Clone)]
pub struct DataParallel {
    comm: Option<Arc<dyn Communicator>>,
    zero: ZeroStage,
}

impl std::fmt::Debug for DataParallel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataParallel")
            .field("rank", &self.rank())
            .field("size", &self.size())
            .field("zero", &self.zero)
            .finish()
    }
}

/// The parameters of a model in visiting order: ids, shapes and sizes.
#[derive(Debug, Clone)]
pub struct ParamLayout {
    pub ids: Vec<ParamId>,
    pub shapes: Vec<Vec<usize>>,
    pub sizes: Vec<usize>,
}

impl ParamLayout {
    pub fn of<B: AutodiffBackend, M: AutodiffModule<B>>(model: &M) -> Self {
        struct Collect(ParamLayout);
        impl<B: AutodiffBackend> ModuleVisitor<B> for Collect {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
                let dims = param.val().dims().to_vec();
                self.0.sizes.push(dims.iter().product());
                self.0.shapes.push(dims);
                self.0.ids.push(param.id);
            }
        }
        let mut c = Collect(ParamLayout {
            ids: Vec::new(),
            shapes: Vec::new(),
            sizes: Vec::new(),
        });
        model.visit(&mut c);
        c.0
    }

    pub fn total(&self) -> usize {
        self.sizes.iter().sum()
    }
}

impl DataParallel {
    /// One rank alone: no communication at all.
    pub fn single() -> Self {
        DataParallel {
            comm: None,
            zero: ZeroStage::Off,
        }
    }

    /// The group `comm`, sharing work as `zero` says.
    pub fn new(comm: Arc<dyn Communicator>, zero: ZeroStage) -> Self {
        DataParallel {
            comm: (comm.size() > 1 || zero != ZeroStage::Off).then_some(comm),
            zero,
        }
    }

    pub fn rank(&self) -> usize {
        self.comm.as_ref().map_or(0, |c| c.rank())
    }

    pub fn size(&self) -> usize {
        self.comm.as_ref().map_or(1, |c| c.size())
    }

    pub fn zero(&self) -> ZeroStage {
        self.zero
    }

    pub fn comm(&self) -> Option<&Arc<dyn Communicator>> {
        self.comm.as_ref()
    }

    /// Waits for every rank.
    pub fn barrier(&self) -> Result<(), CommError> {
        match &self.comm {
            Some(c) => c.barrier(),
            None => Ok(()),
        }
    }

    /// The first sample of this rank's micro batch `j` of the global batch
    /// starting at sample `consumed`.
    pub fn micro_batch_start(&self, consumed: u64, j: usize, micro: usize) -> u64 {
        consumed + ((j * self.size() + self.rank()) * micro) as u64
    }

    /// Makes every rank's model rank 0's: values and parameter ids (so that
    /// optimizer state, keyed by id, means the same parameter everywhere).
    pub fn sync_model<B: AutodiffBackend, M: AutodiffModule<B>>(
        &self,
        model: M,
        device: &B::Device,
    ) -> Result<M, CommError> {
        let Some(comm) = &self.comm else {
            return Ok(model);
        };
        let recorder = BinBytesRecorder::<FullPrecisionSettings>::default();
        let mut bytes = if comm.rank() == 0 {
            Recorder::<B>::record(&recorder, model.clone().into_record(), ())
                .map_err(|e| CommError::Other(format!("serialising the model: {e}")))?
        } else {
            Vec::new()
        };
        comm.broadcast_vec(&mut bytes, 0)?;
        if comm.rank() == 0 {
            return Ok(model);
        }
        let record = Recorder::<B>::load(&recorder, bytes, device)
            .map_err(|e| CommError::Other(format!("reading rank 0's model: {e}")))?;
        Ok(model.load_record(record))
    }

    /// `carry + value` summed over the ranks in one device's order: rank 0
    /// adds the running total `carry` (the same on every rank), the others
    /// their `value`.
    pub fn sum_in_order(&self, carry: f64, value: f64) -> Result<f64, CommError> {
        let Some(comm) = &self.comm else {
            return Ok(carry + value);
        };
        let mut buf = [if comm.rank() == 0 {
            carry + value
        } else {
            value
        }];
        comm.all_reduce_f64(&mut buf, ReduceOp::Sum)?;
        Ok(buf[0])
    }

    /// Sums the ranks' gradients: all of them on every rank, or under ZeRO-2
    /// only those of the parameters this rank owns.
    pub fn reduce_gradients<B: AutodiffBackend, M: AutodiffModule<B>>(
        &self,
        model: &M,
        layout: &ParamLayout,
        grads: GradientsParams,
        device: &B::Device,
    ) -> Result<GradientsParams, CommError> {
        let Some(comm) = &self.comm else {
            return Ok(grads);
        };
        let mut flat = flatten_grads::<B, M>(model, &grads, layout.total());
        match self.zero {
            ZeroStage::Off | ZeroStage::One => {
                comm.all_reduce_f32(&mut flat, ReduceOp::Sum)?;
                Ok(unflatten_grads::<B>(
                    layout,
                    &flat,
                    0..layout.ids.len(),
                    0,
                    device,
                ))
            }
            ZeroStage::Two => {
                let partition = Partition::new(&layout.sizes, comm.size());
                let mut mine = vec![0f32; partition.elems[comm.rank()].len()];
                comm.reduce_scatter_f32(&flat, &mut mine, &partition.counts(), ReduceOp::Sum)?;
                drop(flat);
                let owned = partition.params[comm.rank()].clone();
                Ok(unflatten_grads::<B>(layout, &mine, owned, 0, device))
            }
        }
    }

    /// Clips by the global norm over all ranks and steps `optim`; under ZeRO
    /// only the owned parameters, whose new values are then shared. Returns
    /// the model and the norm before clipping.
    pub fn step<B: AutodiffBackend, M: AutodiffModule<B>>(
        &self,
        optim: &mut NeoxOptimizer<B, M>,
        lr: f64,
        model: M,
        layout: &ParamLayout,
        grads: GradientsParams,
        device: &B::Device,
    ) -> Result<(M, f64), CommError> {
        let norm = |squares: Vec<f32>| Ok(optim::norm_of_squares(&squares));
        self.step_with(optim, lr, model, layout, grads, device, norm, None)
    }

    /// [`DataParallel::step`] with the global norm found by `norm` from each
    /// parameter's squared gradient sum (in visiting order; under ZeRO-2 already
    /// summed over the data ranks): model parallelism adds the other shards'.
    #[allow(clippy::too_many_arguments)]
    pub fn step_with_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
        &self,
        optim: &mut NeoxOptimizer<B, M>,
        lr: f64,
        model: M,
        layout: &ParamLayout,
        grads: GradientsParams,
        device: &B::Device,
        norm: impl FnOnce(Vec<f32>) -> Result<f64, CommError>,
    ) -> Result<(M, f64), CommError> {
        self.step_with(optim, lr, model, layout, grads, device, norm, None)
    }

    /// [`DataParallel::step_with_norm`] for gradients of a loss multiplied by
    /// `loss_scale` (fp16; `None` for none): they are unscaled and clipped in
    /// one multiplication, and a step whose norm is not finite (an overflow)
    /// is skipped on every rank (the norm is global, so all agree). Returns
    /// the model and the unscaled norm.
    #[allow(clippy::too_many_arguments)]
    pub fn step_with<B: AutodiffBackend, M: AutodiffModule<B>>(
        &self,
        optim: &mut NeoxOptimizer<B, M>,
        lr: f64,
        model: M,
        layout: &ParamLayout,
        mut grads: GradientsParams,
        device: &B::Device,
        norm: impl FnOnce(Vec<f32>) -> Result<f64, CommError>,
        loss_scale: Option<f64>,
    ) -> Result<(M, f64), CommError> {
        if let Some(onebit) = optim.onebit_mut() {
            let comm = self.comm.as_ref();
            return super::onebit_adam::step_model(
                onebit, comm, lr, model, grads, device, norm, loss_scale,
            );
        }
        let mut squares = optim::param_squares::<B, M>(&model, &grads);
        let comm = match (&self.comm, self.zero) {
            (None, _) | (Some(_), ZeroStage::Off) => None,
            (Some(comm), _) => Some(comm),
        };
        if let Some(comm) = comm
            && self.zero == ZeroStage::Two
        {
            // Each rank holds its own parameters' gradients: the others' are 0
            // here, and adding zeros is exact.
            comm.all_reduce_f32(&mut squares, ReduceOp::Sum)?;
        }
        let scale = loss_scale.unwrap_or(1.0);
        let norm = norm(squares)? / scale;
        if loss_scale.is_some() && !norm.is_finite() {
            return Ok((model, norm));
        }
        let Some(comm) = comm else {
            return Ok((optim.apply_scaled(lr, model, grads, norm, scale), norm));
        };
        let partition = Partition::new(&layout.sizes, comm.size());
        let owned = partition.owned_ids(&layout.ids, comm.rank());
        retain::<B>(&mut grads, layout, &owned);
        let model = optim.apply_scaled(lr, model, grads, norm, scale);
        let model = gather_params::<B, M>(comm.as_ref(), &partition, layout, model, device)?;
        Ok((model, norm))
    }

    /// The ids of the parameters whose optimizer state this rank keeps (all
    /// without ZeRO).
    pub fn owned(&self, layout: &ParamLayout) -> HashSet<ParamId> {
        match (&self.comm, self.zero) {
            (Some(comm), ZeroStage::One | ZeroStage::Two) => {
                Partition::new(&layout.sizes, comm.size()).owned_ids(&layout.ids, comm.rank())
            }
            _ => layout.ids.iter().copied().collect(),
        }
    }

    /// Whether this rank writes optimizer state into checkpoints: every rank
    /// under ZeRO (its own part), else rank 0 alone (everyone's is the same).
    pub fn writes_optimizer_state(&self) -> bool {
        self.zero != ZeroStage::Off || self.rank() == 0
    }
}

/// All gradients in visiting order, flat (zeros where a parameter has none).
fn flatten_grads<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    grads: &GradientsParams,
    total: usize,
) -> Vec<f32> {
    struct Flatten<'a> {
        grads: &'a GradientsParams,
        out: Vec<f32>,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Flatten<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let n: usize = param.val().dims().iter().product();
            match self.grads.get::<B::InnerBackend, D>(param.id) {
                Some(g) => self.out.extend(g.into_data().iter::<f32>()),
                None => self.out.resize(self.out.len() + n, 0.0),
            }
        }
    }
    let mut f = Flatten {
        grads,
        out: Vec::with_capacity(total),
    };
    model.visit(&mut f);
    f.out
}

/// Gradients of the parameters `params` (indices into `layout`), read from
/// `flat` starting at element `offset`.
fn unflatten_grads<B: AutodiffBackend>(
    layout: &ParamLayout,
    flat: &[f32],
    params: std::ops::Range<usize>,
    mut offset: usize,
    device: &B::Device,
) -> GradientsParams {
    let mut grads = GradientsParams::new();
    for i in params {
        let n = layout.sizes[i];
        let values = flat[offset..offset + n].to_vec();
        offset += n;
        register::<B>(&mut grads, layout.ids[i], values, &layout.shapes[i], device);
    }
    grads
}

fn register<B: AutodiffBackend>(
    grads: &mut GradientsParams,
    id: ParamId,
    values: Vec<f32>,
    shape: &[usize],
    device: &B::Device,
) {
    let data = TensorData::new(values, shape.to_vec());
    match shape.len() {
        1 => grads.register(id, Tensor::<B::InnerBackend, 1>::from_data(data, device)),
        2 => grads.register(id, Tensor::<B::InnerBackend, 2>::from_data(data, device)),
        3 => grads.register(id, Tensor::<B::InnerBackend, 3>::from_data(data, device)),
        _ => grads.register(id, Tensor::<B::InnerBackend, 4>::from_data(data, device)),
    }
}

/// Drops the gradients of parameters not in `owned`.
fn retain<B: AutodiffBackend>(
    grads: &mut GradientsParams,
    layout: &ParamLayout,
    owned: &HashSet<ParamId>,
) {
    for (i, &id) in layout.ids.iter().enumerate() {
        if owned.contains(&id) {
            continue;
        }
        match layout.shapes[i].len() {
            1 => drop(grads.remove::<B::InnerBackend, 1>(id)),
            2 => drop(grads.remove::<B::InnerBackend, 2>(id)),
            3 => drop(grads.remove::<B::InnerBackend, 3>(id)),
            _ => drop(grads.remove::<B::InnerBackend, 4>(id)),
        }
    }
}

/// Every rank ends with the owners' values of all parameters.
fn gather_params<B: AutodiffBackend, M: AutodiffModule<B>>(
    comm: &dyn Communicator,
    partition: &Partition,
    layout: &ParamLayout,
    model: M,
    device: &B::Device,
) -> Result<M, CommError> {
    struct Read<'a> {
        wanted: std::ops::Range<usize>,
        index: usize,
        out: &'a mut Vec<f32>,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Read<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if self.wanted.contains(&self.index) {
                self.out.extend(param.val().into_data().iter::<f32>());
            }
            self.index += 1;
        }
    }
    let rank = comm.rank();
    let mut mine = Vec::with_capacity(partition.elems[rank].len());
    model.visit(&mut Read {
        wanted: partition.params[rank].clone(),
        index: 0,
        out: &mut mine,
    });
    let mut all = vec![0f32; layout.total()];
    comm.all_gather_f32(&mine, &mut all, &partition.counts())?;
    drop(mine);

    struct Write<'a, B: AutodiffBackend> {
        keep: std::ops::Range<usize>,
        index: usize,
        offset: usize,
        all: &'a [f32],
        device: &'a B::Device,
    }
    impl<B: AutodiffBackend> ModuleMapper<B> for Write<'_, B> {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            let (id, tensor, mapper) = param.consume();
            let dims = tensor.dims();
            let n: usize = dims.iter().product();
            let (index, offset) = (self.index, self.offset);
            self.index += 1;
            self.offset += n;
            if self.keep.contains(&index) {
                return Param::from_mapped_value(id, tensor, mapper);
            }
            let data = TensorData::new(self.all[offset..offset + n].to_vec(), dims.to_vec());
            let mut value = Tensor::<B, D>::from_data(data, self.device);
            if tensor.is_require_grad() {
                value = value.require_grad();
            }
            Param::from_mapped_value(id, value, mapper)
        }
    }
    Ok(model.map(&mut Write::<B> {
        keep: partition.params[rank].clone(),
        index: 0,
        offset: 0,
        all: &all,
        device,
    }))
}
