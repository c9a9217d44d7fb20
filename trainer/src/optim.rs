//! GPT-NeoX's optimizer: AdamW with weight decay on weights only (biases and
//! norm parameters, the rank-1 tensors, are not decayed), after clipping the
//! gradients by their global norm.

use std::marker::PhantomData;
use std::path::Path;

use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, AdamWConfig, GradientsParams, Optimizer};
use burn::record::{BinFileRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{ElementConversion, Tensor};

use crate::error::CheckpointError;

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
}

/// AdamW over two parameter groups plus global-norm clipping.
pub struct NeoxOptimizer<B: AutodiffBackend, M: AutodiffModule<B>> {
    decay: OptimizerAdaptor<AdamW, M, B>,
    no_decay: OptimizerAdaptor<AdamW, M, B>,
    clip: f64,
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
        }
    }

    /// Clips `grads` by their global norm, then updates `model` at learning rate
    /// `lr`. Returns the model and the gradient norm before clipping.
    pub fn step(&mut self, lr: f64, model: M, mut grads: GradientsParams) -> (M, f64) {
        let norm = global_norm::<B, M>(&model, &grads);
        let scale = (self.clip > 0.0 && norm > self.clip).then(|| self.clip / (norm + 1e-6));
        let mut split = Split::<B> {
            grads: &mut grads,
            no_decay: GradientsParams::new(),
            scale,
            _backend: PhantomData,
        };
        model.visit(&mut split);
        let no_decay = split.no_decay;
        let model = self.decay.step(lr, model, grads);
        let model = self.no_decay.step(lr, model, no_decay);
        (model, norm)
    }

    /// Writes the optimizer state (full precision) as `{dir}/optim_decay.bin`
    /// and `{dir}/optim_no_decay.bin`.
    pub fn save(&self, dir: &Path) -> Result<(), CheckpointError> {
        let recorder = BinFileRecorder::<FullPrecisionSettings>::new();
        for (name, record) in [
            ("optim_decay", self.decay.to_record()),
            ("optim_no_decay", self.no_decay.to_record()),
        ] {
            let path = dir.join(name);
            recorder
                .record(record, path.clone())
                .map_err(|e| CheckpointError::Record {
                    path,
                    what: "optimizer state",
                    message: e.to_string(),
                })?;
        }
        Ok(())
    }

    /// Reads the state written by [`NeoxOptimizer::save`].
    pub fn load(mut self, dir: &Path, device: &B::Device) -> Result<Self, CheckpointError> {
        let recorder = BinFileRecorder::<FullPrecisionSettings>::new();
        let read = |name: &str| {
            let path = dir.join(name);
            recorder
                .load(path.clone(), device)
                .map_err(|e| CheckpointError::Record {
                    path: path.with_extension("bin"),
                    what: "optimizer state",
                    message: e.to_string(),
                })
        };
        let decay = read("optim_decay")?;
        let no_decay = read("optim_no_decay")?;
        self.decay = self.decay.load_record(decay);
        self.no_decay = self.no_decay.load_record(no_decay);
        Ok(self)
    }
}

/// The L2 norm of all gradients together.
pub fn global_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    grads: &GradientsParams,
) -> f64 {
    let mut sum = SquaredSum::<B> { grads, sum: None };
    model.visit(&mut sum);
    sum.sum
        .map_or(0.0, |s| s.into_scalar().elem::<f64>())
        .sqrt()
}

struct SquaredSum<'a, B: AutodiffBackend> {
    grads: &'a GradientsParams,
    sum: Option<Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for SquaredSum<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(grad) = self.grads.get::<B::InnerBackend, D>(param.id) {
            let squares = grad.square().sum();
            self.sum = Some(match self.sum.take() {
                Some(sum) => sum + squares,
                None => squares,
            });
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
        if D == 1 {
            self.no_decay.register(param.id, grad);
        } else {
            self.grads.register(param.id, grad);
        }
    }
}
