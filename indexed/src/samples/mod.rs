//! GPT-NeoX's training samples, bit for bit: which tokens form sample `i`.
//!
//! - [`RandomState`]: numpy's legacy MT19937 generator and its shuffle.
//! - [`build_sample_index`]: the doc / sample / shuffle arrays of
//!   `gpt2_dataset.py` ([`IndexSpec`] in, [`SampleIndex`] out).
//! - [`npy`]: the `.npy` files GPT-NeoX caches them in.

mod array;
mod blend;
mod cache;
mod error;
#[cfg(test)]
mod fixture_tests;
mod gpt_dataset;
mod index;
pub mod npy;
mod random_state;
mod split;

pub use array::Array;
pub use blend::{
    BlendingIndices, SplitSamples, build_blending_indices, normalize_like_numpy,
    weighted_num_samples,
};
pub use cache::CachePaths;
pub use error::SampleError;
pub use gpt_dataset::{
    BlendedDataset, DataConfig, DataSource, GptDataset, IndexOrigin, Samples, TrainValidTest,
    build_train_valid_test,
};
pub use index::{
    IndexSpec, SampleBoundaries, SampleIdx, SampleIndex, ShuffleIdx, build_doc_idx,
    build_sample_idx, build_sample_index, build_shuffle_idx, num_epochs, sample_idx_is_int64,
    shuffle_idx_is_int64, tokens_per_epoch, total_samples,
};
pub use random_state::RandomState;
pub use split::Split;
