//! GPT-NeoX's weight initialisations (`init_method`, `output_layer_init_method`):
//! zero-mean normals whose standard deviation depends on the method.

use burn::module::Param;
use burn::nn::{Embedding, Linear};
use burn::tensor::{Distribution, Tensor, backend::Backend};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InitMethod {
    /// `N(0, init_method_std)`.
    Normal,
    /// `N(0, init_method_std / sqrt(2 num_layers))`.
    ScaledNormal,
    /// `N(0, sqrt(2 / (5 hidden)))` (Nguyen & Salazar).
    SmallInit,
    /// `N(0, 2 / num_layers / sqrt(hidden))`.
    WangInit,
}

impl InitMethod {
    pub fn std(self, std: f64, num_layers: usize, hidden: usize) -> f64 {
        match self {
            InitMethod::Normal => std,
            InitMethod::ScaledNormal => std / (2.0 * num_layers as f64).sqrt(),
            InitMethod::SmallInit => (2.0 / (5.0 * hidden as f64)).sqrt(),
            InitMethod::WangInit => 2.0 / num_layers as f64 / (hidden as f64).sqrt(),
        }
    }
}

/// A linear layer `d_in -> d_out` (Burn's weight layout `[d_in, d_out]`), normal
/// weights, zero bias.
pub fn linear<B: Backend>(
    d_in: usize,
    d_out: usize,
    std: f64,
    bias: bool,
    device: &B::Device,
) -> Linear<B> {
    Linear {
        weight: Param::from_tensor(Tensor::random(
            [d_in, d_out],
            Distribution::Normal(0.0, std),
            device,
        )),
        bias: bias.then(|| Param::from_tensor(Tensor::zeros([d_out], device))),
    }
}

/// An embedding table `[n, dim]` with normal weights.
pub fn embedding<B: Backend>(n: usize, dim: usize, std: f64, device: &B::Device) -> Embedding<B> {
    Embedding {
        weight: Param::from_tensor(Tensor::random(
            [n, dim],
            Distribution::Normal(0.0, std),
            device,
        )),
    }
}
