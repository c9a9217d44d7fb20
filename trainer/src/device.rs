//! Where training runs: `cpu` (Burn's flex backend) or `cuda:N` (Burn's CUDA
//! backend, in builds with the `cuda` feature).

use std::fmt;
use std::str::FromStr;

use crate::config::NeoxArgs;
use crate::data::Splits;
use crate::dist::DataParallel;
use crate::error::TrainError;
use crate::train::{self, Summary};

/// The CPU training backend.
pub type Cpu = burn::backend::Autodiff<burn::backend::Flex>;

/// The CPU backend for using a model (generation, evaluation, conversion).
pub type CpuInference = burn::backend::Flex;

/// The CUDA training backend.
#[cfg(feature = "cuda")]
pub type Cuda = burn::backend::Autodiff<burn::backend::Cuda>;

/// A device named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    Cpu,
    Cuda(usize),
}

impl FromStr for Device {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Device::Cuda)
                .ok_or_else(|| format!("`{s}`: expected `cpu`, `cuda` or `cuda:N`")),
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// Whether this build can train on CUDA devices.
pub const CUDA_BUILT: bool = cfg!(feature = "cuda");

/// Trains on `device`, alone.
pub fn train(args: &NeoxArgs, data: &Splits, device: Device) -> Result<Summary, TrainError> {
    train_parallel(args, data, device, &DataParallel::single())
}

/// Trains on `device` as one rank of `dp`.
pub fn train_parallel(
    args: &NeoxArgs,
    data: &Splits,
    device: Device,
    dp: &DataParallel,
) -> Result<Summary, TrainError> {
    match device {
        Device::Cpu => train::run_parallel::<Cpu>(args, data, &Default::default(), dp),
        #[cfg(feature = "cuda")]
        Device::Cuda(n) => train::run_parallel::<Cuda>(
            args,
            data,
            &burn::backend::cuda::CudaDevice { index: n },
            dp,
        ),
        #[cfg(not(feature = "cuda"))]
        Device::Cuda(_) => Err(TrainError::Device(format!(
            "{device}: this neox-train was built without CUDA; rebuild with `--features cuda`"
        ))),
    }
}

/// Trains on `device` as rank `world.rank()` of a pipe x data x model grid
/// (`pipe_parallel_size`, `model_parallel_size`).
pub fn train_model_parallel(
    args: &NeoxArgs,
    data: &Splits,
    device: Device,
    world: &std::sync::Arc<dyn crate::dist::Communicator>,
) -> Result<Summary, TrainError> {
    use crate::dist::run::run_model_parallel;
    match device {
        Device::Cpu => run_model_parallel::<Cpu>(args, data, &Default::default(), world),
        #[cfg(feature = "cuda")]
        Device::Cuda(n) => run_model_parallel::<Cuda>(
            args,
            data,
            &burn::backend::cuda::CudaDevice { index: n },
            world,
        ),
        #[cfg(not(feature = "cuda"))]
        Device::Cuda(_) => Err(TrainError::Device(format!(
            "{device}: this neox-train was built without CUDA; rebuild with `--features cuda`"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_parse() {
        assert_eq!("cpu".parse(), Ok(Device::Cpu));
        assert_eq!("cuda:1".parse(), Ok(Device::Cuda(1)));
        assert!("gpu".parse::<Device>().is_err());
        assert!("cuda:x".parse::<Device>().is_err());
    }
}
