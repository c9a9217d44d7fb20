//! 1-bit Adam: DeepSpeed's `OnebitAdam` (`deepspeed/runtime/fp16/onebit/adam.py`,
//! as in the DeeperSpeed GPT-NeoX pins), on flat f32 buffers in the model's
//! parameter order.
//!
//! - The first step only initialises (DeepSpeed's "initialization step"): the
//!   step count rises, nothing else changes and its gradient is dropped.
//! - Warmup, while the step count (the initialisation included) is below
//!   `max(freeze_step, 2)`: the gradients are summed over the data-parallel
//!   ranks as for Adam, then Adam without bias correction:
//!   `m = b1 m + (1 - b1) g`, `v = b2 v + (1 - b2) g g`,
//!   `u = m / (sqrt(v) + eps)`, `u += wd p` for weights, `p -= lr u`.
//! - Compression, after: the gradients stay on their rank (DeepSpeed turns its
//!   backward all-reduce off); each rank folds its own into the momentum, the
//!   momenta are averaged by the compressed all-reduce
//!   ([`super::comm::compressed`], with error feedback), the variance is
//!   frozen, and the update is the warmup's with that momentum and variance.
//!
//! Weight decay applies to weights (tensors of rank 2 and more), not to
//! biases and norms, as GPT-NeoX's two parameter groups; a parameter without
//! a gradient is left alone, state and all. Constants are rounded to f32 as
//! torch rounds Python floats: `(1 - b1)` is computed in f64.
//!
//! Gradient clipping, as DeepSpeed's engine: by the global norm of the summed
//! gradients during warmup, by this rank's own norm after. With fp16 a step
//! is skipped on every rank when any rank's gradients overflow (DeepSpeed
//! decides per rank, which would leave the ranks' exchanges out of step).
//!
//! Checkpoints hold the momentum, variance and step (rank 0) and each rank's
//! compression errors, so a resumed run continues bit for bit; DeepSpeed
//! resets the errors, and so does a run resumed on another number of ranks.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::module::{AutodiffModule, ModuleMapper, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorData};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use super::comm::compressed::{CompressedTensor, ErrorFeedback, compressed_all_reduce};
use super::comm::{CommError, CommExt, Communicator, ReduceOp};
use crate::error::CheckpointError;

/// What `optimizer: {type: OneBitAdam, params: {...}}` adds to Adam's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct OneBitConfig {
    /// `freeze_step`: the step count (the initialisation step included) after
    /// which the momentum is compressed.
    pub freeze_step: u64,
    /// The weight decay of weights: `optimizer.params.weight_decay` (DeepSpeed's
    /// default 0), or 0 when GPT-NeoX's top-level `weight_decay` is 0.
    pub weight_decay: f64,
}

/// One parameter's place in the flat buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub len: usize,
    /// Weight decay applies (a weight, not a bias or norm).
    pub decay: bool,
    /// It has a gradient this step.
    pub present: bool,
}

/// The optimizer's state: the same on every rank but for the errors.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OneBitState {
    /// Steps taken, the initialisation step included.
    pub step: u64,
    pub exp_avg: Vec<f32>,
    pub exp_avg_sq: Vec<f32>,
    /// This rank's compression errors, per parameter, once compressing on
    /// more than one rank.
    pub errors: Option<Errors>,
}

/// Compression errors and the number of ranks they were made for.
#[derive(Debug, Clone, PartialEq)]
pub struct Errors {
    pub ranks: usize,
    pub tensors: Vec<ErrorFeedback>,
}

/// DeepSpeed's 1-bit Adam (see the module docs).
#[derive(Debug, Clone)]
pub struct OneBitAdam {
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
    freeze_step: u64,
    /// Gradient-norm limit; 0 for none.
    clip: f64,
    pub state: OneBitState,
}

/// The update's constants, rounded to f32 once.
struct Coefficients {
    beta1: f32,
    one_minus_beta1: f32,
    beta2: f32,
    one_minus_beta2: f32,
    eps: f32,
    neg_lr: f32,
}

/// The file of the moments and step, in a checkpoint folder.
pub const STATE_FILE: &str = "onebit_adam.safetensors";
const FORMAT: &str = "neox-onebit-adam/1";

/// Whether the checkpoint folder `dir` holds 1-bit Adam's state.
pub fn holds_state(dir: &Path) -> bool {
    dir.join(STATE_FILE).is_file()
}

fn errors_file(rank: usize) -> String {
    format!("onebit_errors_rank{rank}.safetensors")
}

impl OneBitAdam {
    pub fn new(beta1: f64, beta2: f64, eps: f64, clip: f64, config: &OneBitConfig) -> Self {
        OneBitAdam {
            beta1,
            beta2,
            eps,
            weight_decay: config.weight_decay,
            freeze_step: config.freeze_step,
            clip,
            state: OneBitState::default(),
        }
    }

    /// Whether the next step compresses (its gradients stay on their ranks).
    pub fn compressing(&self) -> bool {
        self.state.step >= self.freeze_step.max(2)
    }

    /// Bytes of state held: moments and errors.
    pub fn state_bytes(&self) -> usize {
        let errors = self.state.errors.as_ref().map_or(0, |e| {
            e.tensors
                .iter()
                .map(|t| t.worker.len() + t.server.len())
                .sum()
        });
        4 * (self.state.exp_avg.len() + self.state.exp_avg_sq.len() + errors)
    }

    /// One step over `params` with `grads` (the flat buffers of `segments`),
    /// at learning rate `lr`. `comm` is the data-parallel group: used to
    /// exchange momenta once compressing.
    pub fn step(
        &mut self,
        params: &mut [f32],
        grads: &[f32],
        segments: &[Segment],
        lr: f64,
        comm: Option<&dyn Communicator>,
    ) -> Result<(), CommError> {
        let total: usize = segments.iter().map(|s| s.len).sum();
        let state = &mut self.state;
        if state.step == 0 && state.exp_avg.is_empty() {
            state.exp_avg = vec![0.0; total];
            state.exp_avg_sq = vec![0.0; total];
        }
        for (what, len) in [
            ("parameters", params.len()),
            ("gradients", grads.len()),
            ("momentum", state.exp_avg.len()),
            ("variance", state.exp_avg_sq.len()),
        ] {
            if len != total {
                return Err(CommError::Other(format!(
                    "1-bit Adam: {len} values of {what} for a model of {total}"
                )));
            }
        }
        if state.step == 0 {
            state.step = 1;
            return Ok(());
        }
        let compressing = self.compressing();
        let c = Coefficients {
            beta1: self.beta1 as f32,
            one_minus_beta1: (1.0 - self.beta1) as f32,
            beta2: self.beta2 as f32,
            one_minus_beta2: (1.0 - self.beta2) as f32,
            eps: self.eps as f32,
            neg_lr: (-lr) as f32,
        };
        let state = &mut self.state;
        state.step += 1;
        let lens: Vec<usize> = segments.iter().map(|s| s.len).collect();
        let mut ms = split(&mut state.exp_avg, &lens);
        let mut vs = split(&mut state.exp_avg_sq, &lens);
        let mut offset = 0;
        for (i, s) in segments.iter().enumerate() {
            let g = &grads[offset..offset + s.len];
            offset += s.len;
            if !s.present {
                continue;
            }
            momentum(ms[i], g, &c);
            if !compressing {
                variance(vs[i], g, &c);
            }
        }
        if let Some(comm) = comm.filter(|c| compressing && c.size() > 1) {
            let ranks = comm.size();
            let errors = match state.errors.take() {
                Some(e) if e.ranks == ranks && e.tensors.len() == segments.len() => e,
                _ => Errors {
                    ranks,
                    tensors: lens.iter().map(|&n| ErrorFeedback::new(n, ranks)).collect(),
                },
            };
            let errors = state.errors.insert(errors);
            let mut tensors: Vec<CompressedTensor> = ms
                .iter_mut()
                .zip(errors.tensors.iter_mut())
                .zip(segments)
                .filter(|(_, s)| s.present)
                .map(|((m, e), _)| CompressedTensor {
                    values: m,
                    errors: e,
                })
                .collect();
            compressed_all_reduce(comm, &mut tensors)?;
        }
        let mut ps = split(params, &lens);
        for (i, s) in segments.iter().enumerate() {
            if s.present {
                let wd = if s.decay {
                    self.weight_decay as f32
                } else {
                    0.0
                };
                update(ps[i], ms[i], vs[i], wd, &c);
            }
        }
        Ok(())
    }

    /// Writes the state into `dir`: the moments and step from rank 0
    /// (`onebit_adam.safetensors`), each rank's compression errors, once there
    /// are any (`onebit_errors_rank{r}.safetensors`). Returns the files written.
    pub fn save(&self, dir: &Path, rank: usize) -> Result<Vec<PathBuf>, CheckpointError> {
        let mut written = Vec::new();
        let state = &self.state;
        if rank == 0 {
            let path = dir.join(STATE_FILE);
            let metadata = HashMap::from([
                ("format".to_string(), FORMAT.to_string()),
                ("step".to_string(), state.step.to_string()),
            ]);
            let tensors = [
                ("exp_avg".to_string(), &state.exp_avg[..]),
                ("exp_avg_sq".to_string(), &state.exp_avg_sq[..]),
            ];
            write(&path, &tensors, metadata)?;
            written.push(path);
        }
        if let Some(errors) = &state.errors {
            let path = dir.join(errors_file(rank));
            let metadata = HashMap::from([
                ("format".to_string(), FORMAT.to_string()),
                ("ranks".to_string(), errors.ranks.to_string()),
                ("tensors".to_string(), errors.tensors.len().to_string()),
            ]);
            let mut tensors = Vec::new();
            for (t, e) in errors.tensors.iter().enumerate() {
                tensors.push((format!("worker.{t}"), &e.worker[..]));
                tensors.push((format!("server.{t}"), &e.server[..]));
            }
            write(&path, &tensors, metadata)?;
            written.push(path);
        }
        Ok(written)
    }

    /// Reads the state [`OneBitAdam::save`] wrote into `dir`, as rank `rank` of
    /// `ranks`, for a model whose parameters have `lens` elements (visiting
    /// order): the moments and step, and this rank's errors when they were
    /// saved by as many ranks (else they start again from zero, as
    /// DeepSpeed's always do). State of another model is refused by file.
    pub fn load(
        &mut self,
        dir: &Path,
        rank: usize,
        ranks: usize,
        lens: &[usize],
    ) -> Result<(), CheckpointError> {
        let path = dir.join(STATE_FILE);
        let bytes = std::fs::read(&path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => CheckpointError::State {
                path: path.clone(),
                message: "no 1-bit Adam state here: the checkpoint was written with another \
                          optimizer (set `no_load_optim: true` to start it afresh)"
                    .into(),
            },
            _ => CheckpointError::Io {
                path: path.clone(),
                source,
            },
        })?;
        let (metadata, tensors) = read(&path, &bytes)?;
        let step = number(&path, &metadata, "step")?;
        let exp_avg = tensor(&path, &tensors, "exp_avg")?;
        let exp_avg_sq = tensor(&path, &tensors, "exp_avg_sq")?;
        let total: usize = lens.iter().sum();
        // Saved before the first step, the moments are still empty.
        let fresh = step == 0 && exp_avg.is_empty() && exp_avg_sq.is_empty();
        if !fresh && (exp_avg.len() != total || exp_avg_sq.len() != total) {
            return Err(CheckpointError::State {
                path,
                message: format!(
                    "exp_avg has {} values, exp_avg_sq {}: the model's {} parameters have {total}",
                    exp_avg.len(),
                    exp_avg_sq.len(),
                    lens.len()
                ),
            });
        }
        let errors_path = dir.join(errors_file(rank));
        let errors = match std::fs::read(&errors_path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(CheckpointError::Io {
                    path: errors_path,
                    source,
                });
            }
            Ok(bytes) => {
                let (metadata, tensors) = read(&errors_path, &bytes)?;
                let saved_ranks = number(&errors_path, &metadata, "ranks")? as usize;
                let count = number(&errors_path, &metadata, "tensors")? as usize;
                if saved_ranks != ranks {
                    tracing::info!(
                        saved_ranks,
                        ranks,
                        "1-bit Adam's compression errors start again from zero"
                    );
                    None
                } else {
                    if count != lens.len() {
                        return Err(CheckpointError::State {
                            path: errors_path,
                            message: format!(
                                "errors of {count} tensors, the model has {} parameters",
                                lens.len()
                            ),
                        });
                    }
                    let mut list = Vec::with_capacity(count);
                    for (t, &len) in lens.iter().enumerate() {
                        let errors = ErrorFeedback {
                            worker: tensor(&errors_path, &tensors, &format!("worker.{t}"))?,
                            server: tensor(&errors_path, &tensors, &format!("server.{t}"))?,
                        };
                        if !errors.fits(len, ranks) {
                            let want = ErrorFeedback::new(len, ranks);
                            return Err(CheckpointError::State {
                                path: errors_path,
                                message: format!(
                                    "worker.{t} and server.{t} have {} and {} values; \
                                     parameter {t} of {len} elements over {ranks} ranks needs \
                                     {} and {}",
                                    errors.worker.len(),
                                    errors.server.len(),
                                    want.worker.len(),
                                    want.server.len()
                                ),
                            });
                        }
                        list.push(errors);
                    }
                    Some(Errors {
                        ranks,
                        tensors: list,
                    })
                }
            }
        };
        self.state = OneBitState {
            step,
            exp_avg,
            exp_avg_sq,
            errors,
        };
        Ok(())
    }
}

/// `buf` cut into consecutive slices of `lens`.
fn split<'a>(mut buf: &'a mut [f32], lens: &[usize]) -> Vec<&'a mut [f32]> {
    let mut out = Vec::with_capacity(lens.len());
    for &n in lens {
        let (head, tail) = std::mem::take(&mut buf).split_at_mut(n);
        out.push(head);
        buf = tail;
    }
    out
}

/// `m = b1 m + (1 - b1) g`.
fn momentum(m: &mut [f32], g: &[f32], c: &Coefficients) {
    for (m, &g) in m.iter_mut().zip(g) {
        *m = *m * c.beta1 + c.one_minus_beta1 * g;
    }
}

/// `v = b2 v + (1 - b2) g g`.
fn variance(v: &mut [f32], g: &[f32], c: &Coefficients) {
    for (v, &g) in v.iter_mut().zip(g) {
        *v = *v * c.beta2 + c.one_minus_beta2 * g * g;
    }
}

/// `p -= lr (m / (sqrt(v) + eps) + wd p)`.
fn update(p: &mut [f32], m: &[f32], v: &[f32], wd: f32, c: &Coefficients) {
    for ((p, &m), &v) in p.iter_mut().zip(m).zip(v) {
        let mut u = m / (v.sqrt() + c.eps);
        if wd > 0.0 {
            u += wd * *p;
        }
        *p += c.neg_lr * u;
    }
}

/// One step of `optim` on `model` with this rank's accumulated `grads` (summed
/// over the ranks during warmup): clipping, fp16 unscaling and overflow skips
/// as the module docs say. `norm` turns each parameter's squared gradient sum
/// into the norm (as for Adam). Returns the model and the gradient norm
/// (non-finite: the step was skipped).
#[allow(clippy::too_many_arguments)]
pub(crate) fn step_model<B: AutodiffBackend, M: AutodiffModule<B>>(
    optim: &mut OneBitAdam,
    comm: Option<&Arc<dyn Communicator>>,
    lr: f64,
    model: M,
    grads: GradientsParams,
    device: &B::Device,
    norm: impl FnOnce(Vec<f32>) -> Result<f64, CommError>,
    loss_scale: Option<f64>,
) -> Result<(M, f64), CommError> {
    let comm = comm.map(|c| c.as_ref());
    let ranks = comm.map_or(1, |c| c.size());
    let local = optim.compressing() && ranks > 1;
    // Every micro batch's loss was divided by the ranks, for a sum over them;
    // a gradient that stays on its rank is multiplied back.
    let grad_scale = if local { ranks as f64 } else { 1.0 };
    let scale = loss_scale.unwrap_or(1.0);
    let squares = crate::optim::param_squares::<B, M>(&model, &grads);
    let norm = norm(squares)? * grad_scale / scale;
    if loss_scale.is_some() {
        let mut worst = [norm];
        if let Some(comm) = comm.filter(|_| local) {
            comm.all_reduce_f64(&mut worst, ReduceOp::Max)?;
        }
        if !worst[0].is_finite() {
            return Ok((model, worst[0]));
        }
    }
    let clip = (optim.clip > 0.0 && norm > optim.clip).then(|| optim.clip / (norm + 1e-6));
    let factor = grad_scale * clip.unwrap_or(1.0) / scale;
    let (mut flat, segments) = flatten::<B, M>(&model, &grads);
    drop(grads);
    if factor != 1.0 {
        let factor = factor as f32;
        flat.iter_mut().for_each(|g| *g *= factor);
    }
    let mut params = read_params::<B, M>(&model);
    optim.step(&mut params, &flat, &segments, lr, comm)?;
    Ok((write_params::<B, M>(model, &params, device), norm))
}

/// The gradients in visiting order, flat (zeros where a parameter has none),
/// and each parameter's segment.
fn flatten<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    grads: &GradientsParams,
) -> (Vec<f32>, Vec<Segment>) {
    struct Flatten<'a> {
        grads: &'a GradientsParams,
        flat: Vec<f32>,
        segments: Vec<Segment>,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Flatten<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let len: usize = param.val().dims().iter().product();
            let grad = self.grads.get::<B::InnerBackend, D>(param.id);
            self.segments.push(Segment {
                len,
                decay: crate::optim::decays(D),
                present: grad.is_some(),
            });
            match grad {
                Some(g) => self.flat.extend(g.into_data().iter::<f32>()),
                None => self.flat.resize(self.flat.len() + len, 0.0),
            }
        }
    }
    let mut f = Flatten {
        grads,
        flat: Vec::new(),
        segments: Vec::new(),
    };
    model.visit(&mut f);
    (f.flat, f.segments)
}

/// The parameters' values in visiting order, flat.
fn read_params<B: AutodiffBackend, M: AutodiffModule<B>>(model: &M) -> Vec<f32> {
    struct Read(Vec<f32>);
    impl<B: AutodiffBackend> ModuleVisitor<B> for Read {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            self.0.extend(param.val().into_data().iter::<f32>());
        }
    }
    let mut r = Read(Vec::new());
    model.visit(&mut r);
    r.0
}

/// `model` with its parameters' values replaced by `flat` (visiting order).
fn write_params<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: M,
    flat: &[f32],
    device: &B::Device,
) -> M {
    struct Write<'a, B: AutodiffBackend> {
        flat: &'a [f32],
        offset: usize,
        device: &'a B::Device,
    }
    impl<B: AutodiffBackend> ModuleMapper<B> for Write<'_, B> {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            let (id, tensor, mapper) = param.consume();
            let dims = tensor.dims();
            let n: usize = dims.iter().product();
            let data = TensorData::new(
                self.flat[self.offset..self.offset + n].to_vec(),
                dims.to_vec(),
            );
            self.offset += n;
            let mut value = Tensor::<B, D>::from_data(data, self.device);
            if tensor.is_require_grad() {
                value = value.require_grad();
            }
            Param::from_mapped_value(id, value, mapper)
        }
    }
    model.map(&mut Write::<B> {
        flat,
        offset: 0,
        device,
    })
}

fn write(
    path: &Path,
    tensors: &[(String, &[f32])],
    metadata: HashMap<String, String>,
) -> Result<(), CheckpointError> {
    let fail = |message: String| CheckpointError::Safetensors {
        path: path.to_path_buf(),
        message,
    };
    let views = tensors
        .iter()
        .map(|(name, values)| {
            TensorView::new(Dtype::F32, vec![values.len()], bytemuck::cast_slice(values))
                .map(|view| (name.clone(), view))
                .map_err(|e| fail(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    safetensors::serialize_to_file(views, Some(metadata), path).map_err(|e| fail(e.to_string()))
}

type Read<'a> = (HashMap<String, String>, SafeTensors<'a>);

fn read<'a>(path: &Path, bytes: &'a [u8]) -> Result<Read<'a>, CheckpointError> {
    let fail = |message: String| CheckpointError::Safetensors {
        path: path.to_path_buf(),
        message,
    };
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| fail(e.to_string()))?;
    let metadata = header.metadata().clone().unwrap_or_default();
    if metadata.get("format").map(String::as_str) != Some(FORMAT) {
        return Err(fail(format!(
            "expected 1-bit Adam state (format `{FORMAT}` in the header's metadata)"
        )));
    }
    let tensors = SafeTensors::deserialize(bytes).map_err(|e| fail(e.to_string()))?;
    Ok((metadata, tensors))
}

fn number(
    path: &Path,
    metadata: &HashMap<String, String>,
    key: &str,
) -> Result<u64, CheckpointError> {
    metadata
        .get(key)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| CheckpointError::State {
            path: path.to_path_buf(),
            message: format!("metadata `{key}`: expected a whole number"),
        })
}

fn tensor(path: &Path, tensors: &SafeTensors, name: &str) -> Result<Vec<f32>, CheckpointError> {
    let fail = |message: String| CheckpointError::Tensor {
        path: path.to_path_buf(),
        name: name.to_string(),
        message,
    };
    let view = tensors.tensor(name).map_err(|e| fail(e.to_string()))?;
    if view.dtype() != Dtype::F32 || view.shape().len() != 1 {
        return Err(fail(format!(
            "expected a 1-d F32 tensor, found {:?} {:?}",
            view.dtype(),
            view.shape()
        )));
    }
    Ok(view
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(freeze_step: u64, weight_decay: f64) -> OneBitConfig {
        OneBitConfig {
            freeze_step,
            weight_decay,
        }
    }

    /// The warmup rule written out per element, as DeepSpeed's torch ops round.
    #[allow(clippy::too_many_arguments)]
    fn plain(
        p: f32,
        g: f32,
        m: f32,
        v: f32,
        lr: f64,
        wd: f64,
        (b1, b2, eps): (f64, f64, f64),
        freeze_v: bool,
    ) -> (f32, f32, f32) {
        let m = m * b1 as f32 + (1.0 - b1) as f32 * g;
        let v = if freeze_v {
            v
        } else {
            v * b2 as f32 + (1.0 - b2) as f32 * g * g
        };
        let mut u = m / (v.sqrt() + eps as f32);
        if wd > 0.0 {
            u += wd as f32 * p;
        }
        (p + (-lr) as f32 * u, m, v)
    }

    #[test]
    fn the_kernel_is_the_plain_formula_and_the_first_step_only_initialises() {
        let hyper = (0.9, 0.95, 1e-8);
        let segments = [
            Segment {
                len: 3,
                decay: true,
                present: true,
            },
            Segment {
                len: 2,
                decay: false,
                present: true,
            },
            Segment {
                len: 2,
                decay: true,
                present: false,
            },
        ];
        let mut optim = OneBitAdam::new(hyper.0, hyper.1, hyper.2, 0.0, &config(4, 0.1));
        let start = vec![0.5f32, -1.25, 2.0, 0.1, -0.3, 7.0, -7.0];
        let mut params = start.clone();
        let grads =
            |k: usize| -> Vec<f32> { (0..7).map(|i| ((k * 7 + i) as f32 * 0.7).sin()).collect() };
        optim
            .step(&mut params, &grads(0), &segments, 1e-2, None)
            .unwrap();
        assert_eq!(
            params, start,
            "the initialisation step changed the parameters"
        );
        assert_eq!(optim.state.step, 1);
        assert!(optim.state.exp_avg.iter().all(|&m| m == 0.0));
        let (mut m, mut v) = (vec![0f32; 7], vec![0f32; 7]);
        let mut expected = start.clone();
        // Steps 2..=4 are warmup, 5 and 6 compressed (alone: the exchange is
        // skipped, DeepSpeed's `size > 1`), with the variance frozen.
        for k in 1..6 {
            let lr = 1e-2 / k as f64;
            let frozen = optim.compressing();
            assert_eq!(frozen, k >= 4, "step {}", k + 1);
            let g = grads(k);
            optim.step(&mut params, &g, &segments, lr, None).unwrap();
            for i in 0..5 {
                let wd = if i < 3 { 0.1 } else { 0.0 };
                (expected[i], m[i], v[i]) =
                    plain(expected[i], g[i], m[i], v[i], lr, wd, hyper, frozen);
            }
            for i in 0..7 {
                assert_eq!(
                    params[i].to_bits(),
                    expected[i].to_bits(),
                    "step {}, {i}",
                    k + 1
                );
            }
            assert_eq!(optim.state.exp_avg, m);
            assert_eq!(optim.state.exp_avg_sq, v);
        }
        assert_eq!(
            params[5..],
            start[5..],
            "a parameter without gradient moved"
        );
    }

    #[test]
    fn freezing_starts_after_freeze_step_and_never_before_step_two() {
        for (freeze_step, first_compressed) in [(0, 3), (1, 3), (2, 3), (5, 6)] {
            let mut optim = OneBitAdam::new(0.9, 0.999, 1e-8, 0.0, &config(freeze_step, 0.0));
            let seg = [Segment {
                len: 1,
                decay: false,
                present: true,
            }];
            let mut first = None;
            for step in 1..=8u64 {
                if optim.compressing() && first.is_none() {
                    first = Some(step);
                }
                optim.step(&mut [0.0], &[1.0], &seg, 0.1, None).unwrap();
            }
            assert_eq!(first, Some(first_compressed), "freeze_step {freeze_step}");
        }
    }

    #[test]
    fn state_round_trips_through_files_and_bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut optim = OneBitAdam::new(0.9, 0.999, 1e-8, 0.0, &config(2, 0.0));
        optim.state = OneBitState {
            step: 7,
            exp_avg: vec![1.0, -2.0, 3.5],
            exp_avg_sq: vec![0.25, 4.0, 9.0],
            errors: Some(Errors {
                ranks: 2,
                tensors: vec![ErrorFeedback {
                    worker: (0..16).map(|i| i as f32 * 0.1).collect(),
                    server: (0..8).map(|i| -(i as f32)).collect(),
                }],
            }),
        };
        let written = optim.save(dir.path(), 0).unwrap();
        assert_eq!(written.len(), 2);
        let mut back = OneBitAdam::new(0.9, 0.999, 1e-8, 0.0, &config(2, 0.0));
        back.load(dir.path(), 0, 2, &[3]).unwrap();
        assert_eq!(back.state, optim.state);
        // On another number of ranks the errors start from zero.
        back.load(dir.path(), 0, 3, &[3]).unwrap();
        assert_eq!(back.state.errors, None);
        assert_eq!(back.state.exp_avg, optim.state.exp_avg);
        // State of another model: moments of another length, errors of
        // another number of tensors or of another length.
        let state_file = dir.path().join(STATE_FILE).display().to_string();
        let errors_file = dir.path().join(errors_file(0)).display().to_string();
        for (lens, file, what) in [
            (&[4][..], &state_file, "exp_avg has 3 values"),
            (&[2, 1][..], &errors_file, "errors of 1 tensors"),
        ] {
            let err = back.load(dir.path(), 0, 2, lens).unwrap_err();
            assert!(matches!(err, CheckpointError::State { .. }), "{err}");
            let err = err.to_string();
            assert!(err.contains(file.as_str()) && err.contains(what), "{err}");
        }
        optim.state.errors.as_mut().unwrap().tensors[0].server.pop();
        optim.save(dir.path(), 0).unwrap();
        let err = back.load(dir.path(), 0, 2, &[3]).unwrap_err().to_string();
        assert!(
            err.contains(&errors_file) && err.contains("server.0") && err.contains("7"),
            "{err}"
        );

        let other = tempfile::tempdir().unwrap();
        let err = back.load(other.path(), 0, 2, &[3]).unwrap_err().to_string();
        assert!(
            err.contains("onebit_adam.safetensors") && err.contains("another"),
            "{err}"
        );
        std::fs::write(other.path().join(STATE_FILE), b"not safetensors").unwrap();
        let err = back.load(other.path(), 0, 2, &[3]).unwrap_err().to_string();
        assert!(err.contains("onebit_adam.safetensors"), "{err}");
        write(
            &other.path().join(STATE_FILE),
            &[("exp_avg".into(), &[1.0f32][..])],
            HashMap::from([("format".to_string(), FORMAT.to_string())]),
        )
        .unwrap();
        let err = back.load(other.path(), 0, 2, &[3]).unwrap_err().to_string();
        assert!(err.contains("`step`"), "{err}");
    }
}
