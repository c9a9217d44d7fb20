//! AdamW on flat `f32` buffers, bit for bit what Burn 0.21's `AdamW`
//! computes on the CPU (flex): the same `f32` operations in the same order,
//! each rounded on its own (Rust never fuses a multiply and an add).
//!
//! For one parameter at step `t` (1 for a fresh state), with `g` the gradient
//! already multiplied by the step's clip/unscale factor (one `f32` product,
//! as `grad * scale` on a tensor):
//!
//! ```text
//! m = t == 1 ? g*(1-b1)   : m*b1 + g*(1-b1)
//! v = t == 1 ? (g*g)*(1-b2) : v*b2 + (g*g)*(1-b2)
//! delta = (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
//! p = (lr*wd == 0 ? p : p * (1 - lr*wd)) - delta * lr
//! ```
//!
//! where `1 - lr*wd` is computed in f64 and then rounded to f32, as are `lr`
//! and the gradient factor. Every element is independent, so the buffers are
//! cut into chunks that rayon steps on any number of threads without
//! changing a bit, and no temporary buffer is made.

use rayon::prelude::*;

/// Elements per rayon task: large enough to amortise scheduling, small
/// enough to spread a parameter over the threads.
const CHUNK: usize = 1 << 14;

/// Adam's hyper-parameters, in the `f32` Burn's `AdamWConfig` keeps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamW {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
}

/// What one step of one parameter needs besides its buffers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    /// The step number after this update: 1 for a parameter's first.
    pub time: usize,
    pub lr: f64,
    /// The decoupled weight decay, as the `f32` Burn's `AdamWConfig` keeps (0
    /// for the no-decay group).
    pub weight_decay: f32,
    /// The gradient's factor (clipping and loss-scale unscaling), if any.
    pub grad_scale: Option<f64>,
}

/// The per-step scalars, computed once as Burn computes them.
#[derive(Clone, Copy)]
struct Scalars {
    first: bool,
    b1: f32,
    b2: f32,
    f1: f32,
    f2: f32,
    c1: f32,
    c2: f32,
    eps: f32,
    decay: Option<f32>,
    lr: f32,
    scale: Option<f32>,
}

impl AdamW {
    /// Updates `params`, `m` and `v` in place from `grads` (all of one length).
    ///
    /// # Panics
    /// If the four buffers differ in length (a caller's bug).
    pub fn step(
        &self,
        step: &Step,
        params: &mut [f32],
        grads: &[f32],
        m: &mut [f32],
        v: &mut [f32],
    ) {
        let n = params.len();
        assert!(
            grads.len() == n && m.len() == n && v.len() == n,
            "AdamW buffers differ in length: params {n}, grads {}, m {}, v {}",
            grads.len(),
            m.len(),
            v.len()
        );
        let s = self.scalars(step);
        params
            .par_chunks_mut(CHUNK)
            .zip(grads.par_chunks(CHUNK))
            .zip(m.par_chunks_mut(CHUNK))
            .zip(v.par_chunks_mut(CHUNK))
            .for_each(|(((p, g), m), v)| update(&s, p, g, m, v));
    }

    fn scalars(&self, step: &Step) -> Scalars {
        let time = step.time as i32;
        let decay_rate = step.lr * step.weight_decay as f64;
        Scalars {
            first: step.time <= 1,
            b1: self.beta1,
            b2: self.beta2,
            f1: 1.0 - self.beta1,
            f2: 1.0 - self.beta2,
            c1: 1f32 - self.beta1.powi(time),
            c2: 1f32 - self.beta2.powi(time),
            eps: self.eps,
            decay: (decay_rate != 0.0).then_some((1.0 - decay_rate) as f32),
            lr: step.lr as f32,
            scale: step.grad_scale.map(|s| s as f32),
        }
    }
}

/// One chunk; the branches are per chunk, the loops element-wise.
fn update(s: &Scalars, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
    let grad = |g: f32| match s.scale {
        Some(scale) => g * scale,
        None => g,
    };
    for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
        let g = grad(g);
        let gg = g * g;
        if s.first {
            *m = g * s.f1;
            *v = gg * s.f2;
        } else {
            *m = *m * s.b1 + g * s.f1;
            *v = *v * s.b2 + gg * s.f2;
        }
        let delta = (*m / s.c1) / ((*v / s.c2).sqrt() + s.eps);
        let decayed = match s.decay {
            Some(d) => *p * d,
            None => *p,
        };
        *p = decayed - delta * s.lr;
    }
}

#[cfg(test)]
mod tests {
    use burn::module::{Module, Param};
    use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
    use burn::tensor::backend::Backend;
    use burn::tensor::{Distribution, Tensor};

    use super::*;
    use crate::device::Cpu;

    #[derive(Module, Debug)]
    struct One<B: Backend> {
        w: Param<Tensor<B, 2>>,
    }

    fn values(t: Tensor<Cpu, 2>) -> Vec<f32> {
        t.into_data().to_vec::<f32>().unwrap()
    }

    /// Burn's AdamW and the flat one, several steps on random tensors with
    /// random gradients (scaled as clipping scales them, or not): the same bits.
    #[test]
    fn equals_burn_adamw_bit_for_bit() {
        let device = Default::default();
        let shape = [37, 129];
        for (weight_decay, lr, scales) in [
            (
                0.1f64,
                6e-4f64,
                [Some(0.37), None, Some(1.0 / 65536.0), Some(0.011)],
            ),
            (0.0, 1e-2, [None, Some(2.5e-5), None, Some(0.9)]),
        ] {
            let hp = AdamW {
                beta1: 0.9,
                beta2: 0.95,
                eps: 1e-8,
            };
            let mut burn = AdamWConfig::new()
                .with_beta_1(hp.beta1)
                .with_beta_2(hp.beta2)
                .with_epsilon(hp.eps)
                .with_weight_decay(weight_decay as f32)
                .init::<Cpu, One<Cpu>>();
            let init = Tensor::<Cpu, 2>::random(shape, Distribution::Normal(0.0, 0.5), &device);
            let mut model = One {
                w: Param::from_tensor(init.clone()),
            };
            let mut params = values(init);
            let n = params.len();
            let (mut m, mut v) = (vec![0f32; n], vec![0f32; n]);
            for (k, scale) in scales.into_iter().enumerate() {
                let grad = Tensor::<Cpu, 2>::random(shape, Distribution::Normal(0.0, 3.0), &device);
                let raw = values(grad.clone());
                let scaled = match scale {
                    Some(s) => grad.inner() * s,
                    None => grad.inner(),
                };
                let mut grads = GradientsParams::new();
                grads.register(model.w.id, scaled);
                model = burn.step(lr, model, grads);
                let step = Step {
                    time: k + 1,
                    lr,
                    weight_decay: weight_decay as f32,
                    grad_scale: scale,
                };
                hp.step(&step, &mut params, &raw, &mut m, &mut v);
                let expected = values(model.w.val());
                assert!(
                    expected
                        .iter()
                        .zip(&params)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "step {} (decay {weight_decay}, scale {scale:?}) differs",
                    k + 1
                );
            }
        }
    }

    /// The result does not depend on how many threads step the chunks.
    #[test]
    fn threads_do_not_change_bits() {
        let n = 3 * CHUNK + 17;
        let grads: Vec<f32> = (0..n)
            .map(|i| ((i * 7919) % 1000) as f32 / 300.0 - 1.5)
            .collect();
        let hp = AdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        };
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let mut p: Vec<f32> = (0..n).map(|i| (i % 97) as f32 / 50.0 - 1.0).collect();
            let (mut m, mut v) = (vec![0f32; n], vec![0f32; n]);
            pool.install(|| {
                for time in 1..=3 {
                    let step = Step {
                        time,
                        lr: 1e-3,
                        weight_decay: 0.01,
                        grad_scale: Some(0.5),
                    };
                    hp.step(&step, &mut p, &grads, &mut m, &mut v);
                }
            });
            (p, m, v)
        };
        assert_eq!(run(1), run(3));
    }
}
