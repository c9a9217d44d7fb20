//! The feed-forward block: `dense_h_to_4h`, an activation, `dense_4h_to_h`.

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::{Tensor, backend::Backend};

pub use super::activations::{Activation, gelu};
use super::fused::linear;

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

    /// On `[b, t, hidden]`, computed on `[b t, hidden]`: each linear layer is
    /// one matrix product (Burn's batched `linear` sums `b` weight gradients),
    /// fused with its bias on the CPU (see [`linear`]).
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, t, hidden] = x.dims();
        let h = linear::forward(&self.dense_h_to_4h, x.reshape([b * t, hidden]));
        linear::forward(&self.dense_4h_to_h, self.activation.forward(h)).reshape([b, t, hidden])
    }
}
