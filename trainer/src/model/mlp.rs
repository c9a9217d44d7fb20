//! The feed-forward block: `dense_h_to_4h`, an activation, `dense_4h_to_h`.

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::{Tensor, activation, backend::Backend};
use serde::{Deserialize, Serialize};

/// `activation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// Exact (erf) GELU.
    Gelu,
    /// Gated SiLU, GPT-NeoX's order: `[x, gate] = chunk(h_to_4h(h))`, `silu(gate) * x`.
    Swiglu,
}

/// Exact GELU written from `erf`, so that autodiff differentiates it exactly
/// (Burn's fused `gelu` backward uses the tanh approximation's derivative).
pub fn gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let cdf = (x.clone() / std::f64::consts::SQRT_2).erf() + 1.0;
    x * cdf * 0.5
}

#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    pub dense_h_to_4h: Linear<B>,
    pub dense_4h_to_h: Linear<B>,
    #[module(skip)]
    activation: Activation,
}

impl<B: Backend> Mlp<B> {
    pub fn new(dense_h_to_4h: Linear<B>, dense_4h_to_h: Linear<B>, activation: Activation) -> Self {
        Mlp {
            dense_h_to_4h,
            dense_4h_to_h,
            activation,
        }
    }

    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let h = self.dense_h_to_4h.forward(x);
        let h = match self.activation {
            Activation::Gelu => gelu(h),
            Activation::Swiglu => {
                let half = h.dims()[2] / 2;
                let x = h.clone().narrow(2, 0, half);
                activation::silu(h.narrow(2, half, half)) * x
            }
        };
        self.dense_4h_to_h.forward(h)
    }
}
