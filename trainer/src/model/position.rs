//! Position information: GPT-NeoX's `pos_emb` kinds. Learned embeddings are a
//! parameter of the model; the others are fixed tables built here per sequence
//! length, once, and kept in a [`TableCache`].

use std::any::Any;
use std::fmt;
use std::sync::{Arc, Mutex};

use burn::tensor::{Tensor, TensorData, backend::Backend};
use serde::{Deserialize, Serialize};

/// Fixed tables (position tables, masks) already built, by name, shape
/// parameters and device, so that a model builds each once per sequence
/// length instead of every forward pass. Clones share it. Holds the last
/// [`TableCache::CAPACITY`] tables (generation grows the length token by token).
#[derive(Clone, Default)]
pub struct TableCache(Arc<Mutex<Vec<Box<dyn Any + Send + Sync>>>>);

/// One cached table: its key and value.
type Entry<D, V> = ((&'static str, [u64; 3], D), V);

impl TableCache {
    pub const CAPACITY: usize = 8;

    /// The table `name` with parameters `params` on `device`, built by `build`
    /// the first time.
    pub fn get<B: Backend, V: Clone + Send + Sync + 'static>(
        &self,
        name: &'static str,
        params: [u64; 3],
        device: &B::Device,
        build: impl FnOnce() -> V,
    ) -> V {
        let key = (name, params, device.clone());
        // A panic elsewhere while the lock was held leaves whole entries: keep using them.
        let mut entries = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let found = entries.iter().find_map(|e| {
            e.downcast_ref::<Entry<B::Device, V>>()
                .filter(|(k, _)| *k == key)
                .map(|(_, v)| v.clone())
        });
        found.unwrap_or_else(|| {
            let value = build();
            if entries.len() == Self::CAPACITY {
                entries.remove(0);
            }
            entries.push(Box::new((key, value.clone())));
            value
        })
    }
}

impl fmt::Debug for TableCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.lock().map_or(0, |e| e.len());
        write!(f, "TableCache({n} tables)")
    }
}

/// `pos_emb`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PosEmb {
    Learned,
    Sinusoidal,
    Rotary,
    Alibi,
    None,
}

/// Rotary tables `[t, dims]`: `cos(p * f)` and `sin(p * f)` with the
/// frequencies repeated over both halves (GPT-NeoX's rotate-half layout).
pub fn rotary_tables<B: Backend>(
    t: usize,
    dims: usize,
    base: f64,
    device: &B::Device,
) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let half = dims / 2;
    let inv_freq: Vec<f64> = (0..half)
        .map(|i| 1.0 / base.powf((2 * i) as f64 / dims as f64))
        .collect();
    let mut cos = Vec::with_capacity(t * dims);
    let mut sin = Vec::with_capacity(t * dims);
    for p in 0..t {
        for j in 0..dims {
            let angle = p as f64 * inv_freq[j % half];
            cos.push(angle.cos() as f32);
            sin.push(angle.sin() as f32);
        }
    }
    (
        Tensor::from_data(TensorData::new(cos, [t, dims]), device),
        Tensor::from_data(TensorData::new(sin, [t, dims]), device),
    )
}

/// Applies rotary embeddings to the first `cos.dims()[1]` dims of `x` `[b, h, t, d]`
/// (one fused op on flex: see [`super::fused::rotary`]).
pub fn apply_rotary<B: Backend>(
    x: Tensor<B, 4>,
    cos: &Tensor<B, 2>,
    sin: &Tensor<B, 2>,
) -> Tensor<B, 4> {
    super::fused::rotary::rotary(x, cos, sin, |x| apply_rotary_plain(x, cos, sin))
}

/// [`apply_rotary`] in tensor ops.
pub fn apply_rotary_plain<B: Backend>(
    x: Tensor<B, 4>,
    cos: &Tensor<B, 2>,
    sin: &Tensor<B, 2>,
) -> Tensor<B, 4> {
    let [_, _, _, d] = x.dims();
    let r = cos.dims()[1];
    let half = r / 2;
    let rot = x.clone().narrow(3, 0, r);
    let x1 = rot.clone().narrow(3, 0, half);
    let x2 = rot.clone().narrow(3, half, half);
    let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
    let out = rot * cos.clone().unsqueeze::<4>() + rotated * sin.clone().unsqueeze::<4>();
    if r == d {
        out
    } else {
        Tensor::cat(vec![out, x.narrow(3, r, d - r)], 3)
    }
}

/// The base of sinusoidal positions: GPT-NeoX's `SinusoidalPositionalEmbedding`
/// is built with its default 10000 whatever `rotary_emb_base` says.
pub const SINUSOIDAL_BASE: f64 = 10000.0;

/// Sinusoidal position embeddings `[t, hidden]`: `[sin(p f), cos(p f)]` with
/// `f = SINUSOIDAL_BASE^(-2i / hidden)`.
pub fn sinusoidal_table<B: Backend>(t: usize, hidden: usize, device: &B::Device) -> Tensor<B, 2> {
    let base = SINUSOIDAL_BASE;
    let half = hidden / 2;
    let mut table = Vec::with_capacity(t * hidden);
    for p in 0..t {
        let angles = (0..half).map(|i| p as f64 / base.powf((2 * i) as f64 / hidden as f64));
        let angles: Vec<f64> = angles.collect();
        table.extend(angles.iter().map(|a| a.sin() as f32));
        table.extend(angles.iter().map(|a| a.cos() as f32));
        table.extend(std::iter::repeat_n(0.0, hidden - 2 * half));
    }
    Tensor::from_data(TensorData::new(table, [t, hidden]), device)
}

/// ALiBi head slopes as GPT-NeoX computes them (geometric, interleaved for
/// head counts that are not powers of two).
pub fn alibi_slopes(heads: usize) -> Vec<f64> {
    fn power_of_two(n: usize) -> Vec<f64> {
        let start = 2f64.powf(-(2f64.powf(-((n as f64).log2() - 3.0))));
        (0..n).map(|i| start * start.powi(i as i32)).collect()
    }
    if heads.is_power_of_two() {
        power_of_two(heads)
    } else {
        let closest = 1 << heads.ilog2();
        let mut slopes = power_of_two(closest);
        slopes.extend(
            alibi_slopes(2 * closest)
                .into_iter()
                .step_by(2)
                .take(heads - closest),
        );
        slopes
    }
}

/// ALiBi bias `[1, heads, t, t]`: `-slope * (i - j)` (the causal mask hides `j > i`).
pub fn alibi_bias<B: Backend>(heads: usize, t: usize, device: &B::Device) -> Tensor<B, 4> {
    let mut bias = Vec::with_capacity(heads * t * t);
    for slope in alibi_slopes(heads) {
        for i in 0..t {
            for j in 0..t {
                bias.push((-slope * i.saturating_sub(j) as f64) as f32);
            }
        }
    }
    Tensor::from_data(TensorData::new(bias, [1, heads, t, t]), device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    #[test]
    fn table_cache_builds_once_per_key_and_keeps_the_last_ones() {
        let cache = TableCache::default();
        let device = Default::default();
        let builds = std::cell::Cell::new(0);
        let table = |t: u64| {
            cache.get::<Flex, Tensor<Flex, 1>>("t", [t, 0, 0], &device, || {
                builds.set(builds.get() + 1);
                Tensor::zeros([t as usize], &device)
            })
        };
        assert_eq!(table(3).dims(), [3]);
        assert_eq!(table(3).dims(), [3]);
        assert_eq!(builds.get(), 1);
        assert_eq!(table(4).dims(), [4]);
        assert_eq!(builds.get(), 2);
        // Past the capacity the oldest table goes and is built again.
        for t in 10..10 + TableCache::CAPACITY as u64 {
            table(t);
        }
        let before = builds.get();
        table(3);
        assert_eq!(builds.get(), before + 1);
        // Another value type under the same key is another table.
        let other = cache.get::<Flex, u8>("t", [3, 0, 0], &device, || 7);
        assert_eq!(other, 7);
    }

    #[test]
    fn alibi_slopes_match_gpt_neox() {
        // 8 heads: 2^-1 .. 2^-8.
        let s = alibi_slopes(8);
        for (i, v) in s.iter().enumerate() {
            assert!((v - 2f64.powi(-(i as i32 + 1))).abs() < 1e-12);
        }
        // 6 heads: the 4-head slopes (2^-2, 2^-4, ...), then every other one
        // of the 8-head slopes (2^-1, 2^-3).
        let s = alibi_slopes(6);
        let expected = [-2, -4, -6, -8, -1, -3].map(|e| 2f64.powi(e));
        assert_eq!(s.len(), 6);
        for (a, b) in s.iter().zip(expected) {
            assert!((a - b).abs() < 1e-12, "{s:?}");
        }
    }
}
