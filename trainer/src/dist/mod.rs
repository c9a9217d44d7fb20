//! Training on many ranks, picotron's shape: one file per parallelism plus
//! the communication they share. The model (`crate::model`) knows nothing of
//! any of it.
//!
//! - [`comm`]: the [`comm::Communicator`] interface and its engines.
//! - [`placement`]: where this process sits (rank, world, master address), read
//!   from torchrun / DeepSpeed, Slurm or OpenMPI environments.
//! - [`topology`]: GPT-NeoX's pipe x data x model grid of ranks.
//! - `data_parallel`, `zero`: gradient averaging and optimizer sharding;
//!   [`onebit_adam`]: 1-bit Adam, whose momenta travel compressed.
//! - [`tensor_parallel`]: layers split over a group of ranks (Megatron's).
//! - [`pipeline_parallel`]: stages of layers, 1F1B between them.
//! - [`shard`]: one rank's share of the model; [`parallel`]: the three
//!   together; [`run`]: their training loop; [`merge`]: shares made whole;
//!   [`reshard`]: a checkpoint saved at one layout read at another.

pub mod comm;
pub mod data_parallel;
pub mod merge;
pub mod onebit_adam;
pub mod parallel;
pub mod pipeline_parallel;
pub mod placement;
pub mod reshard;
pub mod run;
pub mod shard;
pub mod tensor_parallel;
pub mod topology;
pub mod zero;

pub use comm::{CommError, CommExt, Communicator, DType, ReduceOp};
pub use data_parallel::{DataParallel, ParamLayout};
pub use parallel::Parallel;
pub use pipeline_parallel::{PartitionMethod, Pipeline, Stage};
pub use shard::GptShard;
pub use tensor_parallel::{TpGroup, TpOps};
pub use topology::Topology;
pub use zero::ZeroStage;
