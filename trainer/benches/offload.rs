//! ZeRO-Offload's host Adam against the device optimizer (Burn's AdamW) at
//! the 125M config's parameter count, on this machine's CPU with 1 and 2
//! rayon threads: ms per optimizer step, after one untimed step that makes
//! the state. Three figures per thread count:
//!
//! - `burn`: `NeoxOptimizer` (Burn's AdamW, decay and no-decay groups);
//! - `offload`: the same optimizer with ZeRO-Offload: each gradient and
//!   parameter read to host buffers, stepped there, the parameter written back
//!   (the flat AdamW, which is also the CPU's step without offload);
//! - `kernel`: the flat host Adam alone over one buffer of all parameters.
//!
//! Every step clips (a factor on the gradients), as GPT-NeoX's steps do.
//!
//!   cargo bench -p neox-trainer --bench offload

use std::path::Path;
use std::time::Instant;

use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Distribution, Tensor};
use neox_trainer::NeoxArgs;
use neox_trainer::config::yaml::Options;
use neox_trainer::device::Cpu;
use neox_trainer::dist::ParamLayout;
use neox_trainer::flat_adam::{AdamW, Step};
use neox_trainer::model::GptNeox;
use neox_trainer::optim::{AdamImpl, NeoxOptimizer, OptimConfig};

const STEPS: usize = 3;

fn main() {
    let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
    let mut options = Options::read(&[configs.join("125M.yml")]).expect("config reads");
    options
        .merge_str("padded_vocab_size: 50304\n", Path::new("bench"))
        .expect("override parses");
    let args = NeoxArgs::from_options(options).expect("config is valid");
    let device = Default::default();
    let mut model: GptNeox<Cpu> = args.model.init(&device);
    let layout = ParamLayout::of::<Cpu, _>(&model);
    println!(
        "125M config: {:.1}M parameters in {} tensors; {} CPU threads here, {} build",
        layout.total() as f64 / 1e6,
        layout.ids.len(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("thread pool");
        model = pool.install(|| {
            for offload in [false, true] {
                let config = OptimConfig {
                    offload,
                    adam: AdamImpl::Burn,
                    ..args.optim.clone()
                };
                let ms;
                (model, ms) = optimizer_steps(&config, model);
                let name = if offload { "offload" } else { "burn" };
                println!("{threads} thread(s)  {name:<8} {ms:>8.0} ms/step");
            }
            let ms = kernel_steps(layout.total(), &args.optim);
            println!("{threads} thread(s)  kernel   {ms:>8.0} ms/step");
            model
        });
    }
}

/// Mean ms of `STEPS` timed steps of `NeoxOptimizer` (after one untimed).
fn optimizer_steps(config: &OptimConfig, mut model: GptNeox<Cpu>) -> (GptNeox<Cpu>, f64) {
    let device = Default::default();
    let mut optim = NeoxOptimizer::<Cpu, GptNeox<Cpu>>::new(config);
    let mut total = 0.0;
    for step in 0..=STEPS {
        // Fresh gradients each step, as a backward pass leaves them.
        let grads = random_grads::<Cpu, _>(&model, &device);
        let start = Instant::now();
        // A norm above the limit: every step clips.
        model = optim.apply(1e-4, model, grads, 2.0 * config.gradient_clipping.max(1.0));
        if step > 0 {
            total += start.elapsed().as_secs_f64();
        }
    }
    (model, total * 1e3 / STEPS as f64)
}

/// Mean ms of `STEPS` timed steps of the flat host Adam over `n` elements.
fn kernel_steps(n: usize, config: &OptimConfig) -> f64 {
    let adam = AdamW {
        beta1: config.beta1 as f32,
        beta2: config.beta2 as f32,
        eps: config.eps as f32,
    };
    let mut params: Vec<f32> = (0..n).map(|i| (i % 1000) as f32 * 1e-4).collect();
    let grads: Vec<f32> = (0..n).map(|i| (i % 777) as f32 * 1e-5 - 3e-3).collect();
    let (mut m, mut v) = (vec![0f32; n], vec![0f32; n]);
    let mut total = 0.0;
    for time in 1..=STEPS + 1 {
        let step = Step {
            time,
            lr: 1e-4,
            weight_decay: config.weight_decay as f32,
            grad_scale: Some(0.5),
        };
        let start = Instant::now();
        adam.step(&step, &mut params, &grads, &mut m, &mut v);
        if time > 1 {
            total += start.elapsed().as_secs_f64();
        }
    }
    total * 1e3 / STEPS as f64
}

/// A random gradient for every parameter of `model`.
fn random_grads<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    device: &B::Device,
) -> GradientsParams {
    struct Make<'a, B: AutodiffBackend> {
        grads: GradientsParams,
        device: &'a B::Device,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Make<'_, B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let shape = param.lazy_shape();
            let grad = Tensor::<B::InnerBackend, D>::random(
                shape,
                Distribution::Normal(0.0, 1e-3),
                self.device,
            );
            self.grads.register(param.id, grad);
        }
    }
    let mut make = Make::<B> {
        grads: GradientsParams::new(),
        device,
    };
    model.visit(&mut make);
    make.grads
}
