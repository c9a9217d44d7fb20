//! Mixed precision as GPT-NeoX trains it with DeepSpeed: f32 master weights,
//! the forward and backward passes in bf16 or fp16, and for fp16 DeepSpeed's
//! loss scaler.
//!
//! The parameters stay f32 (the optimizer and its state never see a half
//! value). Each step casts a copy of the model to the compute type
//! ([`cast_module`]): the casts are tracked by autodiff, whose backward casts
//! the gradient back to f32, so the f32 parameters receive their gradients as
//! the leaves of the graph. The model keeps its reductions in f32 (norm
//! statistics, the attention softmax, the cross entropy: `model::norm`,
//! `model::attention`, `model::cross_entropy`), and the gradients are summed
//! over the data-parallel ranks as f32 (GPT-NeoX's `fp32_allreduce`).
//!
//! fp16 multiplies the loss by a scale before the backward pass so that small
//! gradients stay representable; a step whose gradients hold inf or NaN is
//! skipped, and [`LossScaler`] adapts the scale with DeepSpeed's rules.

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{FloatDType, Tensor};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The type the forward and backward passes compute in (`precision`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    #[default]
    Fp32,
    Bf16,
    Fp16,
}

impl Precision {
    /// GPT-NeoX / DeepSpeed names: `fp32`/`float32`/`float`, `fp16`/`float16`/`half`,
    /// `bfloat16`/`bf16`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "fp32" | "float32" | "float" => Some(Precision::Fp32),
            "fp16" | "float16" | "half" => Some(Precision::Fp16),
            "bfloat16" | "bf16" => Some(Precision::Bf16),
            _ => None,
        }
    }

    pub fn dtype(self) -> FloatDType {
        match self {
            Precision::Fp32 => FloatDType::F32,
            Precision::Bf16 => FloatDType::BF16,
            Precision::Fp16 => FloatDType::F16,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bfloat16",
            Precision::Fp16 => "fp16",
        }
    }
}

/// DeepSpeed's `fp16` section (GPT-NeoX passes it through), with its defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Fp16Config {
    /// `loss_scale`: 0 scales dynamically, any other value is a fixed scale.
    pub loss_scale: f64,
    /// `initial_scale_power`: a dynamic scale starts at `2^power`.
    pub initial_scale_power: u32,
    /// `loss_scale_window`: clean steps before the scale doubles.
    pub loss_scale_window: u64,
    /// `hysteresis`: overflows tolerated before the scale halves.
    pub hysteresis: u32,
    /// `min_loss_scale`.
    pub min_loss_scale: f64,
    /// `consecutive_hysteresis`: a clean step refills the hysteresis.
    pub consecutive_hysteresis: bool,
}

impl Default for Fp16Config {
    fn default() -> Self {
        Fp16Config {
            loss_scale: 0.0,
            initial_scale_power: 16,
            loss_scale_window: 1000,
            hysteresis: 2,
            min_loss_scale: 1.0,
            consecutive_hysteresis: false,
        }
    }
}

/// What a run computes in: the precision and, for fp16, the loss scaling.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PrecisionConfig {
    pub precision: Precision,
    pub fp16: Fp16Config,
}

/// The loss scale reached its minimum and the gradients still overflow.
#[derive(Debug, Error, PartialEq)]
#[error(
    "fp16: the gradients overflow at the minimum loss scale {scale} \
     (min_loss_scale): the run cannot go on (DeepSpeed stops here too)"
)]
pub struct ScaleExhausted {
    pub scale: f64,
}

/// Where a dynamic loss scaler stands; saved in checkpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScalerState {
    /// The current scale.
    pub scale: f64,
    /// Steps seen (`cur_iter`).
    pub iteration: u64,
    /// The step of the last overflow, -1 before any (`last_overflow_iter`).
    pub last_overflow: i64,
    /// Overflows left before the scale falls (`cur_hysteresis`).
    pub hysteresis: u32,
}

/// DeepSpeed's `DynamicLossScaler` as the DeeperSpeed that GPT-NeoX pins
/// configures it (scale factor 2, an error on overflow at the minimum scale):
///
/// - an overflow with hysteresis left (and `hysteresis` > 1) only uses one up;
///   otherwise the scale halves, never below `min_loss_scale`;
/// - a clean step doubles the scale when `(iteration - last_overflow)` is a
///   multiple of `loss_scale_window` (and refills the hysteresis then, or on
///   every clean step with `consecutive_hysteresis`).
#[derive(Debug, Clone, PartialEq)]
pub struct LossScaler {
    config: Fp16Config,
    state: ScalerState,
}

impl LossScaler {
    pub fn new(config: &Fp16Config) -> Self {
        let scale = if config.loss_scale > 0.0 {
            config.loss_scale
        } else {
            2f64.powi(config.initial_scale_power as i32)
        };
        LossScaler {
            state: ScalerState {
                scale,
                iteration: 0,
                last_overflow: -1,
                hysteresis: config.hysteresis,
            },
            config: config.clone(),
        }
    }

    pub fn scale(&self) -> f64 {
        self.state.scale
    }

    pub fn dynamic(&self) -> bool {
        self.config.loss_scale == 0.0
    }

    pub fn state(&self) -> &ScalerState {
        &self.state
    }

    pub fn restore(&mut self, state: ScalerState) {
        self.state = state;
    }

    /// Records one step, `overflow` when its gradients held inf or NaN (a
    /// skipped step). A fixed scale never changes.
    pub fn update(&mut self, overflow: bool) -> Result<(), ScaleExhausted> {
        if !self.dynamic() {
            return Ok(());
        }
        let (c, s) = (&self.config, &mut self.state);
        if overflow {
            if c.hysteresis == 1 || s.hysteresis == 1 {
                if s.scale == c.min_loss_scale {
                    return Err(ScaleExhausted { scale: s.scale });
                }
                s.scale = (s.scale / 2.0).max(c.min_loss_scale);
            } else {
                s.hysteresis -= 1;
            }
            s.last_overflow = s.iteration as i64;
        } else {
            if c.consecutive_hysteresis {
                s.hysteresis = c.hysteresis;
            }
            let clean = s.iteration as i64 - s.last_overflow;
            if clean % c.loss_scale_window.max(1) as i64 == 0 {
                if !c.consecutive_hysteresis {
                    s.hysteresis = c.hysteresis;
                }
                s.scale *= 2.0;
            }
        }
        s.iteration += 1;
        Ok(())
    }
}

/// A run's precision during training: the compute type and, for fp16, the scaler.
#[derive(Debug, Clone, PartialEq)]
pub struct MixedPrecision {
    precision: Precision,
    scaler: Option<LossScaler>,
}

impl Default for MixedPrecision {
    fn default() -> Self {
        MixedPrecision::new(&PrecisionConfig::default())
    }
}

impl MixedPrecision {
    pub fn new(config: &PrecisionConfig) -> Self {
        MixedPrecision {
            precision: config.precision,
            scaler: (config.precision == Precision::Fp16).then(|| LossScaler::new(&config.fp16)),
        }
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The factor the loss is multiplied by before the backward pass (1 but in fp16).
    pub fn loss_scale(&self) -> f64 {
        self.scaler.as_ref().map_or(1.0, LossScaler::scale)
    }

    /// Whether a step with non-finite gradients is skipped (fp16) rather than
    /// applied (and the run then stopped by its loss).
    pub fn skips_overflow(&self) -> bool {
        self.scaler.is_some()
    }

    /// The copy of `module` the passes run on: every parameter cast to the
    /// compute type, tracked by autodiff (the identity in fp32). A backward
    /// pass consumes the casts: make one copy per pass.
    pub fn cast<B: Backend, M: Module<B>>(&self, module: M) -> M {
        cast_module(module, self.precision.dtype())
    }

    /// Records a step: `overflow` when it was skipped for non-finite gradients.
    pub fn update(&mut self, overflow: bool) -> Result<(), ScaleExhausted> {
        match &mut self.scaler {
            Some(scaler) => scaler.update(overflow),
            None => Ok(()),
        }
    }

    /// The scaler's state for a checkpoint (fp16 only).
    pub fn scaler_state(&self) -> Option<ScalerState> {
        self.scaler.as_ref().map(|s| s.state().clone())
    }

    /// Continues from a checkpoint's scaler state; a checkpoint without one
    /// (another precision) starts the scaler afresh.
    pub fn restore(&mut self, state: Option<ScalerState>) {
        if let (Some(scaler), Some(state)) = (&mut self.scaler, state) {
            scaler.restore(state);
        }
    }
}

/// `module` with every float parameter cast to `dtype`, keeping its id. Under
/// autodiff the casts are part of the graph: gradients reach the original
/// (uncast) parameters, in their own dtype, through one backward pass (which
/// consumes them). Casting to a parameter's own type changes nothing.
pub fn cast_module<B: Backend, M: Module<B>>(module: M, dtype: FloatDType) -> M {
    struct Cast(FloatDType);
    impl<B: Backend> ModuleMapper<B> for Cast {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            let (id, tensor, mapper) = param.consume();
            Param::from_mapped_value(id, tensor.cast(self.0), mapper)
        }
    }
    if dtype == FloatDType::F32 {
        return module;
    }
    module.map(&mut Cast(dtype))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::module::AutodiffModule;
    use burn::nn::{Linear, LinearConfig};
    use burn::optim::GradientsParams;
    use burn::tensor::DType;

    type Ad = Autodiff<Flex>;

    fn scaler(window: u64, hysteresis: u32, consecutive: bool) -> LossScaler {
        LossScaler::new(&Fp16Config {
            loss_scale: 0.0,
            initial_scale_power: 4,
            loss_scale_window: window,
            hysteresis,
            min_loss_scale: 1.0,
            consecutive_hysteresis: consecutive,
        })
    }

    /// Drives `scaler` through `overflows` (one per step) and returns the
    /// scale in effect at each step.
    fn scales(scaler: &mut LossScaler, overflows: &[bool]) -> Vec<f64> {
        overflows
            .iter()
            .map(|&o| {
                let s = scaler.scale();
                scaler.update(o).unwrap();
                s
            })
            .collect()
    }

    #[test]
    fn dynamic_scale_follows_deepspeed_hysteresis_and_window() {
        // The sequences DeeperSpeed's DynamicLossScaler.update_scale gives
        // (init 2^4, factor 2, min 1), worked through by hand from its rules.
        let (x, o) = (true, false);
        // Hysteresis 2: the first overflow only uses up hysteresis, the second
        // halves; the window counts from the last overflow's step.
        let mut s = scaler(3, 2, false);
        assert_eq!(
            scales(&mut s, &[x, x, o, o, o, o, o, o, x, o]),
            [16.0, 16.0, 8.0, 8.0, 8.0, 16.0, 16.0, 16.0, 32.0, 32.0]
        );
        // After the window's doubling refilled hysteresis, one overflow is tolerated.
        assert_eq!(s.state().hysteresis, 1);
        // The window counts from step -1: the first doubling follows `window`
        // clean steps; two overflows then halve it again.
        let mut s = scaler(3, 2, false);
        assert_eq!(
            scales(&mut s, &[o, o, o, o, x, x]),
            [16.0, 16.0, 16.0, 32.0, 32.0, 32.0]
        );
        assert_eq!(s.scale(), 16.0);
        assert_eq!(s.state().last_overflow, 5);
        // Without consecutive hysteresis, overflows separated by clean steps
        // still add up; with it, a clean step refills.
        let mut s = scaler(100, 2, false);
        scales(&mut s, &[o, x, o, x]);
        assert_eq!(s.scale(), 8.0);
        let mut s = scaler(100, 2, true);
        scales(&mut s, &[o, x, o, x]);
        assert_eq!(s.scale(), 16.0);
        // Hysteresis 1: every overflow halves, down to the minimum; an
        // overflow at the minimum stops the run.
        let mut s = scaler(1000, 1, false);
        assert_eq!(
            scales(&mut s, &[o, x, x, x, x]),
            [16.0, 16.0, 8.0, 4.0, 2.0]
        );
        assert_eq!(s.scale(), 1.0);
        assert_eq!(s.update(true), Err(ScaleExhausted { scale: 1.0 }));
    }

    #[test]
    fn a_fixed_scale_never_changes_and_state_round_trips() {
        let mut fixed = LossScaler::new(&Fp16Config {
            loss_scale: 128.0,
            ..Fp16Config::default()
        });
        for o in [true, true, true, false, false] {
            fixed.update(o).unwrap();
        }
        assert_eq!(fixed.scale(), 128.0);
        let mut s = scaler(2, 2, false);
        scales(&mut s, &[true, false, true, true, false]);
        let json = serde_json::to_string(s.state()).unwrap();
        let mut again = scaler(2, 2, false);
        again.restore(serde_json::from_str(&json).unwrap());
        assert_eq!(again, s);
        assert_eq!(
            MixedPrecision::default().loss_scale(),
            1.0,
            "fp32 does not scale"
        );
        assert_eq!(
            MixedPrecision::new(&PrecisionConfig {
                precision: Precision::Fp16,
                fp16: Fp16Config::default()
            })
            .loss_scale(),
            65536.0
        );
    }

    #[test]
    fn gradients_of_a_cast_module_reach_the_f32_parameters() {
        let device = Default::default();
        <Ad as Backend>::seed(&device, 3);
        let linear: Linear<Ad> = LinearConfig::new(8, 4).init(&device);
        let x = Tensor::<Ad, 2>::random([5, 8], burn::tensor::Distribution::Default, &device);
        let f32_loss = linear.forward(x.clone()).square().sum();
        let f32_grads = GradientsParams::from_grads(f32_loss.backward(), &linear);
        for dtype in [FloatDType::BF16, FloatDType::F16] {
            let half = cast_module(linear.clone(), dtype);
            assert_eq!(half.weight.val().dtype(), DType::from(dtype));
            assert_eq!(half.weight.id, linear.weight.id);
            let loss = half.forward(x.clone().cast(dtype)).cast(FloatDType::F32);
            let grads = GradientsParams::from_grads(loss.square().sum().backward(), &linear);
            let g = grads
                .get::<Flex, 2>(linear.weight.id)
                .expect("the f32 weight has a gradient");
            assert_eq!(g.dtype(), DType::F32);
            let want = f32_grads.get::<Flex, 2>(linear.weight.id).unwrap();
            let (g, want): (Vec<f32>, Vec<f32>) = (
                g.into_data().to_vec().unwrap(),
                want.into_data().to_vec().unwrap(),
            );
            for (a, b) in g.iter().zip(&want) {
                assert!((a - b).abs() <= 0.05 * b.abs().max(0.5), "{a} vs {b}");
            }
            // A backward pass consumes the casts: a second pass over the same
            // copy no longer reaches the parameters, one over a fresh copy does.
            let again = half.forward(x.clone().cast(dtype)).cast(FloatDType::F32);
            let grads = GradientsParams::from_grads(again.square().sum().backward(), &linear);
            assert!(grads.get::<Flex, 2>(linear.weight.id).is_none());
            let fresh = cast_module(linear.clone(), dtype);
            let again = fresh.forward(x.clone().cast(dtype)).cast(FloatDType::F32);
            let grads = GradientsParams::from_grads(again.square().sum().backward(), &linear);
            assert!(grads.get::<Flex, 2>(linear.weight.id).is_some());
            // The parameters themselves are untouched f32.
            assert_eq!(linear.valid().weight.val().dtype(), DType::F32);
        }
    }
}
