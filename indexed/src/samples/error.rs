//! The errors of the sample index: each names the file or the setting at fault.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong building, caching or reading training samples.
#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    /// An operating-system error on a file.
    #[error("{}: {action}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The underlying error.
        source: io::Error,
    },
    /// A `.npy` file that is not what it should be.
    #[error("{}: byte {offset}: {problem}", path.display())]
    BadNpy {
        /// The file.
        path: PathBuf,
        /// Where in the file.
        offset: usize,
        /// What is wrong.
        problem: String,
    },
    /// A setting that cannot produce an index (seq_length 0, an empty
    /// document range, a bad split string, ...).
    #[error("{0}")]
    Config(String),
    /// The token shards could not be read.
    #[error(transparent)]
    Shards(#[from] crate::Error),
    /// A sample index past the end.
    #[error("sample {index} does not exist: the dataset has {len} samples")]
    OutOfRange {
        /// The index asked for.
        index: u64,
        /// The number of samples.
        len: u64,
    },
    /// Arrays that contradict each other (a bug, or a cache edited by hand).
    #[error("inconsistent sample index: {0}")]
    Internal(String),
}
