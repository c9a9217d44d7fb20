//! Per-layer normalisation: LayerNorm (torch's, biased variance, eps inside
//! the root) or GPT-NeoX's RMSNorm (`x * rsqrt(mean(x^2) + eps)`, as GPT-NeoX
//! computes it since its Llama fixes, and as Llama does).
//! Computed in f32 whatever the input's type, as in mixed precision.

use burn::module::{Module, Param};
use burn::tensor::{FloatDType, Tensor, backend::Backend};
use serde::{Deserialize, Serialize};

use super::fused::norm::{NormSpec, norm};

/// `norm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NormKind {
    #[serde(rename = "layernorm")]
    LayerNorm,
    #[serde(rename = "rmsnorm")]
    RmsNorm,
}

/// A normalisation over the last dimension with a learned scale and optional bias.
#[derive(Module, Debug)]
pub struct Norm<B: Backend> {
    pub weight: Param<Tensor<B, 1>>,
    pub bias: Option<Param<Tensor<B, 1>>>,
    #[module(skip)]
    kind: NormKind,
    #[module(skip)]
    eps: f64,
}

impl<B: Backend> Norm<B> {
    /// Scale 1, bias 0 (no bias for RMSNorm or when `bias` is false).
    pub fn new(kind: NormKind, dim: usize, eps: f64, bias: bool, device: &B::Device) -> Self {
        let bias = (bias && kind == NormKind::LayerNorm)
            .then(|| Param::from_tensor(Tensor::zeros([dim], device)));
        Norm {
            weight: Param::from_tensor(Tensor::ones([dim], device)),
            bias,
            kind,
            eps,
        }
    }

    /// The normalised `x`, computed in f32 (one fused op on flex: see
    /// [`super::fused::norm`]).
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let dtype = x.dtype();
        let f32 = |t: Tensor<B, 1>| t.cast(FloatDType::F32);
        let spec = NormSpec {
            center: self.kind == NormKind::LayerNorm,
            eps: self.eps,
        };
        let bias = self.bias.as_ref().map(|b| f32(b.val()));
        norm(
            x.cast(FloatDType::F32),
            f32(self.weight.val()),
            bias,
            spec,
            |x, w, b| self.plain(x, w, b),
        )
        .cast(dtype)
    }

    /// [`Norm::forward`] in plain tensor ops.
    pub fn forward_plain<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let dtype = x.dtype();
        let f32 = |t: Tensor<B, 1>| t.cast(FloatDType::F32);
        let bias = self.bias.as_ref().map(|b| f32(b.val()));
        self.plain(x.cast(FloatDType::F32), f32(self.weight.val()), bias)
            .cast(dtype)
    }

    /// The normalisation in tensor ops, on f32 `x`, `weight` and `bias`.
    fn plain<const D: usize>(
        &self,
        x: Tensor<B, D>,
        weight: Tensor<B, 1>,
        bias: Option<Tensor<B, 1>>,
    ) -> Tensor<B, D> {
        let last = D - 1;
        let normed = match self.kind {
            NormKind::LayerNorm => {
                let (var, mean) = x.clone().var_mean_bias(last);
                (x - mean) / (var + self.eps).sqrt()
            }
            NormKind::RmsNorm => {
                let ms = x.clone().square().mean_dim(last);
                x / (ms + self.eps).sqrt()
            }
        };
        let scaled = normed * weight.unsqueeze();
        match bias {
            Some(bias) => scaled + bias.unsqueeze(),
            None => scaled,
        }
    }
}
