//! The Hugging Face fixtures' forward pass and loss on the GPU against the CPU
//! (`scripts/gpu-check.sh run`): for each checkpoint folder given, the same
//! tokens through the model on flex and on `cuda:0` (in a build with
//! `--features cuda`; without it, on flex twice, which checks this program).
//!
//!   hf_device_check [--tolerance 1e-3] DIR...
//!
//! Prints the largest logit difference, relative to the largest logit, and
//! the two losses per checkpoint; exits non-zero when a difference passes
//! the tolerance (default 1e-3: f32 kernels summing in another order).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use burn::backend::Flex;
use burn::tensor::{Int, Tensor, TensorData};
use neox_trainer::hf;
use neox_trainer::model::{LossBackend, cross_entropy};

#[cfg(feature = "cuda")]
type Gpu = burn::backend::Cuda;
#[cfg(not(feature = "cuda"))]
type Gpu = Flex;

fn gpu_device() -> burn::tensor::Device<Gpu> {
    #[cfg(feature = "cuda")]
    {
        burn::backend::cuda::CudaDevice { index: 0 }
    }
    #[cfg(not(feature = "cuda"))]
    {
        Default::default()
    }
}

/// Logits (flattened) and loss of the checkpoint in `dir` on `B`.
fn run<B: LossBackend>(dir: &Path, device: &B::Device) -> Result<(Vec<f32>, f32), String> {
    let model = hf::load::<B>(dir, device).map_err(|e| e.to_string())?;
    let (b, t) = (2, model.config.seq_length.min(16));
    let vocab = model.config.vocab_size as i64;
    let ids: Vec<i64> = (0..(b * t) as i64)
        .map(|i| (i * 7919 + 3) % vocab)
        .collect();
    let tokens = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [b, t]), device);
    let logits = model.forward(tokens.clone());
    let v = logits.dims()[2];
    let loss = cross_entropy(
        logits.clone().narrow(1, 0, t - 1).reshape([b, t - 1, v]),
        tokens.narrow(1, 1, t - 1),
    );
    let logits = logits.into_data().convert::<f32>().to_vec::<f32>();
    let loss = loss.into_data().convert::<f32>().to_vec::<f32>();
    match (logits, loss) {
        (Ok(logits), Ok(loss)) => Ok((logits, loss[0])),
        _ => Err("reading the results back failed".into()),
    }
}

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut tolerance = 1e-3f32;
    if let Some(i) = args.iter().position(|a| a == "--tolerance") {
        match args.get(i + 1).and_then(|v| v.parse().ok()) {
            Some(t) => tolerance = t,
            None => {
                eprintln!("error: --tolerance takes a number");
                return ExitCode::from(2);
            }
        }
        args.drain(i..i + 2);
    }
    if args.is_empty() {
        eprintln!("usage: hf_device_check [--tolerance 1e-3] CHECKPOINT_DIR...");
        return ExitCode::from(2);
    }
    let device = if cfg!(feature = "cuda") {
        "cuda:0"
    } else {
        "flex (no cuda feature)"
    };
    let mut failed = false;
    for dir in args.iter().map(PathBuf::from) {
        let cpu = run::<Flex>(&dir, &Default::default());
        let gpu = run::<Gpu>(&dir, &gpu_device());
        match (cpu, gpu) {
            (Ok((a, la)), Ok((b, lb))) => {
                let scale = a.iter().fold(1.0f32, |m, x| m.max(x.abs()));
                let diff = a
                    .iter()
                    .zip(&b)
                    .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
                let ok = a.len() == b.len() && diff / scale <= tolerance;
                failed |= !ok;
                println!(
                    "{} {}: {device} vs cpu logits differ by {diff:.3e} (relative {:.3e}, tolerance {tolerance:.0e}); loss {lb:.6} vs {la:.6}",
                    if ok { "PASS" } else { "FAIL" },
                    dir.display(),
                    diff / scale,
                );
            }
            (Err(e), _) | (_, Err(e)) => {
                println!("FAIL {}: {e}", dir.display());
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
