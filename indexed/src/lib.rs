//! Megatron MMIDIDX .bin/.idx shards and GPT-NeoX's training sample index.
//!
//! - [`IndexedWriter`]: stream tokens into `prefix.{bin,idx}`, complete or absent.
//! - [`IndexedDataset`]: map and validate a shard, read sequences zero-copy.
//! - [`merge()`]: join shards with a correct doc_idx.
//! - [`Stats`]: what `neox-data inspect` reports.
//!
//! The format (see `format`): `.idx` = magic `MMIDIDX\0\0`, version u64 1,
//! dtype code u8, N u64, D u64, i32 sizes\[N\], i64 pointers\[N\],
//! i64 doc_idx\[D\]; `.bin` = the tokens. Little-endian, unaligned.

mod dtype;
mod error;
mod format;
mod merge;
mod output;
mod reader;
pub mod samples;
mod stats;
mod tokens;
mod writer;

pub use dtype::DType;
pub use error::{Corruption, Error, Result};
pub use format::{LeInt, LeSlice, bin_path, idx_path, prefix_of};
pub use merge::merge;
pub use reader::IndexedDataset;
pub use stats::{Histogram, Lengths, Stats};
pub use tokens::Tokens;
pub use writer::{IndexedWriter, WriteSummary};
