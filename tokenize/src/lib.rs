//! GPT-NeoX tokenizers and the parallel ordered streaming encoder.
//!
//! [`Tokenizer`] gives the ids GPT-NeoX's `megatron/tokenizer/tokenizer.py`
//! gives for each of its tokenizer kinds ([`TokenizerKind`]), with the same
//! end-of-document id and the same (unpadded) vocabulary size, which decides
//! the token dtype of the shards. [`ordered_map`] runs any per-batch work on
//! several threads and hands the results back in input order, with a bounded
//! number of batches in flight.
//!
//! ```
//! use neox_tokenize::{Tokenizer, TokenizerKind, TokenizerSpec};
//! let gpt2 = Tokenizer::load(&TokenizerSpec::new(TokenizerKind::Gpt2Bpe)).unwrap();
//! let mut ids = Vec::new();
//! gpt2.encode("Hello world", &mut ids).unwrap();
//! assert_eq!(ids, [15496, 995]);
//! assert_eq!(gpt2.eod(), Some(50256));
//! ```

pub mod bpe;
mod builtin;
mod char_level;
mod error;
mod hf;
mod kind;
mod ordered;
mod spm;
mod tiktoken;
mod tokenizer;

pub use bpe::EngineChoice;
pub use error::TokenizerError;
pub use kind::{TiktokenEncoding, TokenizerKind};
pub use ordered::{ThreadPanic, ordered_map};
pub use tokenizer::{Engine, Tokenizer, TokenizerSpec};
