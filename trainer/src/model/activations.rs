//! GPT-NeoX's MLP activations (`megatron/model/activations.py`): plain ones
//! act on the whole `dense_h_to_4h` output; gated ones split it in halves
//! `[x, gate]` and return `act(gate) * x`.

use burn::tensor::{Tensor, activation, backend::Backend};
use serde::{Deserialize, Serialize};

/// `activation` (with `bias_gelu_fusion` folded in: GPT-NeoX's fused GELU is
/// the tanh approximation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// Exact (erf) GELU, `F.gelu`.
    Gelu,
    /// The tanh approximation of GELU: `activation: gelu` with `bias_gelu_fusion: true`.
    GeluTanh,
    Relu,
    Softsign,
    /// `x * sigmoid(x)`; `swish` and `silu` are the same function.
    Silu,
    Mish,
    /// Gated GELU: `gelu(gate) * x`.
    Geglu,
    /// Gated ReLU.
    Reglu,
    /// Gated SiLU.
    Swiglu,
    /// Gated identity: `gate * x`.
    Bilinear,
    /// Gated sigmoid.
    Glu,
}

impl Activation {
    /// The activation GPT-NeoX builds for `activation` (its names) and `bias_gelu_fusion`.
    pub fn from_neox(name: &str, bias_gelu_fusion: bool) -> Option<Self> {
        Some(match name {
            "gelu" if bias_gelu_fusion => Activation::GeluTanh,
            "gelu" => Activation::Gelu,
            "relu" => Activation::Relu,
            "softsign" => Activation::Softsign,
            "swish" | "silu" => Activation::Silu,
            "mish" => Activation::Mish,
            "geglu" => Activation::Geglu,
            "reglu" => Activation::Reglu,
            "swiglu" => Activation::Swiglu,
            "bilinear" => Activation::Bilinear,
            "glu" => Activation::Glu,
            _ => return None,
        })
    }

    /// GPT-NeoX's names, for messages.
    pub const NEOX_NAMES: &'static [&'static str] = &[
        "gelu", "geglu", "relu", "softsign", "swish", "mish", "silu", "reglu", "swiglu",
        "bilinear", "glu",
    ];

    /// Whether the activation gates half of its input with the other half.
    pub fn is_gated(self) -> bool {
        matches!(
            self,
            Activation::Geglu
                | Activation::Reglu
                | Activation::Swiglu
                | Activation::Bilinear
                | Activation::Glu
        )
    }

    /// Applies the activation to the last dimension of `h` (halved when gated).
    pub fn forward<B: Backend, const D: usize>(self, h: Tensor<B, D>) -> Tensor<B, D> {
        if self.is_gated() {
            let half = h.dims()[D - 1] / 2;
            let x = h.clone().narrow(D - 1, 0, half);
            let gate = h.narrow(D - 1, half, half);
            let gate = match self {
                Activation::Geglu => gelu(gate),
                Activation::Reglu => activation::relu(gate),
                Activation::Swiglu => activation::silu(gate),
                Activation::Glu => activation::sigmoid(gate),
                _ => gate,
            };
            return gate * x;
        }
        match self {
            Activation::Gelu => gelu(h),
            Activation::GeluTanh => gelu_tanh(h),
            Activation::Relu => activation::relu(h),
            Activation::Softsign => activation::softsign(h),
            Activation::Silu => activation::silu(h),
            Activation::Mish => activation::mish(h),
            _ => h,
        }
    }
}

/// Exact GELU: one fused op on flex in f32 ([`super::fused::gelu`]), else
/// [`gelu_plain`].
pub fn gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    super::fused::gelu::gelu(x, gelu_plain)
}

/// Exact GELU written from `erf`, so that autodiff differentiates it exactly
/// (Burn's fused `gelu` backward uses the tanh approximation's derivative).
pub fn gelu_plain<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let cdf = (x.clone() / std::f64::consts::SQRT_2).erf() + 1.0;
    x * cdf * 0.5
}

/// GPT-NeoX's `bias_gelu`: `0.5 x (1 + tanh(0.79788456 x (1 + 0.044715 x^2)))`.
pub fn gelu_tanh<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let inner = (x.clone() * x.clone() * 0.044715 + 1.0) * x.clone() * 0.79788456;
    x * (inner.tanh() + 1.0) * 0.5
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::TensorData;

    /// Each activation at a few points, against its formula evaluated in f64.
    #[test]
    fn activations_follow_their_formulas() {
        let device = Default::default();
        let xs = [-3.0f64, -1.0, -0.25, 0.0, 0.5, 2.0];
        let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
        let erf_gelu = |x: f64| {
            // GELU from the standard normal CDF via a high-precision erf series.
            let t = x / std::f64::consts::SQRT_2;
            let erf = {
                let (mut sum, mut term, mut n) = (t, t, 0.0);
                while term.abs() > 1e-17 {
                    n += 1.0;
                    term *= -t * t / n;
                    sum += term / (2.0 * n + 1.0);
                }
                sum * 2.0 / std::f64::consts::PI.sqrt()
            };
            0.5 * x * (1.0 + erf)
        };
        let tanh_gelu =
            |x: f64| 0.5 * x * (1.0 + (0.79788456 * x * (1.0 + 0.044715 * x * x)).tanh());
        let plain: [(Activation, &dyn Fn(f64) -> f64); 6] = [
            (Activation::Gelu, &erf_gelu),
            (Activation::GeluTanh, &tanh_gelu),
            (Activation::Relu, &|x: f64| x.max(0.0)),
            (Activation::Softsign, &|x: f64| x / (1.0 + x.abs())),
            (Activation::Silu, &|x: f64| x * sig(x)),
            (Activation::Mish, &|x: f64| x * (1.0 + x.exp()).ln().tanh()),
        ];
        let input = || {
            Tensor::<Flex, 1>::from_data(
                TensorData::new(xs.iter().map(|&x| x as f32).collect(), [xs.len()]),
                &device,
            )
        };
        for (act, f) in plain {
            let out = act.forward(input()).into_data().to_vec::<f32>().unwrap();
            for (x, y) in xs.iter().zip(out) {
                assert!((f(*x) - y as f64).abs() < 1e-6, "{act:?}({x}) = {y}");
            }
        }
        // Gated: [x, gate] halves, act(gate) * x.
        let gated: [(Activation, &dyn Fn(f64) -> f64); 5] = [
            (Activation::Geglu, &erf_gelu),
            (Activation::Reglu, &|x: f64| x.max(0.0)),
            (Activation::Swiglu, &|x: f64| x * sig(x)),
            (Activation::Bilinear, &|x: f64| x),
            (Activation::Glu, &sig),
        ];
        let (x, gate) = ([1.5f64, -2.0, 0.5], [0.7f64, -1.2, 2.5]);
        let both: Vec<f32> = x.iter().chain(&gate).map(|&v| v as f32).collect();
        for (act, f) in gated {
            let out = act
                .forward(Tensor::<Flex, 1>::from_data(
                    TensorData::new(both.clone(), [6]),
                    &device,
                ))
                .into_data()
                .to_vec::<f32>()
                .unwrap();
            assert_eq!(out.len(), 3);
            for i in 0..3 {
                let want = f(gate[i]) * x[i];
                assert!((want - out[i] as f64).abs() < 1e-6, "{act:?}: {out:?}");
            }
        }
    }

    #[test]
    fn gpt_neox_names_map_to_activations() {
        for name in Activation::NEOX_NAMES {
            assert!(Activation::from_neox(name, false).is_some(), "{name}");
        }
        assert_eq!(
            Activation::from_neox("gelu", true),
            Some(Activation::GeluTanh)
        );
        assert_eq!(
            Activation::from_neox("swiglu", true),
            Some(Activation::Swiglu)
        );
        assert_eq!(
            Activation::from_neox("swish", false),
            Some(Activation::Silu)
        );
        assert_eq!(Activation::from_neox("tanh", false), None);
    }
}
