//! A fast encoder for byte-level BPE tokenizers (GPT-2, GPT-NeoX-20B and any
//! `tokenizer.json` of that family) that gives exactly the ids of the
//! `tokenizers` library, several times faster.
//!
//! The pipeline is the library's, step by step: added tokens are cut out of
//! the raw text ([`added`]), the rest is NFC-normalized when the tokenizer says
//! so ([`normalize`]), normalized added tokens are cut out, the remaining text
//! is split by a hand-written GPT-2 pre-tokenizer ([`pretokenize`]) and each
//! piece is merged by BPE on bytes ([`merges`]).
//!
//! [`FastBpe::from_tokenizer_json`] refuses, with
//! [`FastBpeError::Unsupported`] and a reason, any tokenizer whose ids it could
//! not reproduce exactly; the caller then uses the library.

mod added;
mod byte_level;
mod config;
mod engine;
mod merges;
mod normalize;
mod pretokenize;
mod unicode_classes;

use std::borrow::Cow;
use std::collections::HashMap;

use added::{Matcher, Segment, split};
use byte_level::{ByteDecoder, byte_chars};
use merges::MergeTable;
use pretokenize::Pieces;

pub use engine::{EngineChoice, choose};

/// Why the fast engine cannot be built for a tokenizer.
#[derive(Debug, thiserror::Error)]
pub enum FastBpeError {
    /// The tokenizer is valid, but uses something the fast engine does not
    /// reproduce exactly: use the `tokenizers` library for it.
    #[error("not supported by the fast BPE engine: {0}")]
    Unsupported(String),
    /// The tokenizer files are malformed.
    #[error("invalid tokenizer: {0}")]
    Invalid(String),
    /// The file is not JSON.
    #[error("invalid JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// The fast byte-level BPE encoder. Cheap to share between threads (`&self`).
pub struct FastBpe {
    merges: MergeTable,
    /// Added tokens matched in the raw text.
    raw_added: Option<Matcher>,
    /// Added tokens matched in the normalized text.
    normalized_added: Option<Matcher>,
    nfc: bool,
    add_prefix_space: bool,
}

impl FastBpe {
    /// The engine for a `tokenizer.json` (its text), or why it is not supported.
    pub fn from_tokenizer_json(json: &str) -> Result<Self, FastBpeError> {
        let value: serde_json::Value = serde_json::from_str(json)?;
        Self::build(config::from_tokenizer_json(&value)?)
    }

    /// The engine for a loaded `tokenizers` tokenizer (through its JSON form),
    /// or why it is not supported.
    pub fn from_hf_tokenizer(tokenizer: &tokenizers::Tokenizer) -> Result<Self, FastBpeError> {
        let json = tokenizer
            .to_string(false)
            .map_err(|e| FastBpeError::Invalid(format!("cannot serialize the tokenizer: {e}")))?;
        Self::from_tokenizer_json(&json)
    }

    /// The engine for GPT-2-style `vocab.json` and `merges.txt` (their texts):
    /// ByteLevel pre-tokenizer without prefix space, no normalizer, and
    /// `special` as added tokens matched in the raw text (none for GPT-NeoX's
    /// GPT2BPETokenizer, which encodes `<|endoftext|>` in text as plain text).
    pub fn from_vocab_merges(
        vocab_json: &str,
        merges_txt: &str,
        special: &[&str],
    ) -> Result<Self, FastBpeError> {
        let value: serde_json::Value = serde_json::from_str(vocab_json)?;
        Self::build(config::from_vocab_merges(&value, merges_txt, special)?)
    }

    fn build(spec: config::Spec) -> Result<Self, FastBpeError> {
        let ids: HashMap<&str, u32> = spec.vocab.iter().map(|(t, id)| (t.as_str(), *id)).collect();
        let mut byte_ids = [0u32; 256];
        for (b, c) in byte_chars().into_iter().enumerate() {
            // 0xC0, 0xC1 and 0xF5..=0xFF never occur in UTF-8 text.
            let in_utf8 = !matches!(b, 0xC0 | 0xC1 | 0xF5..=0xFF);
            byte_ids[b] = match ids.get(c.to_string().as_str()) {
                Some(&id) => id,
                None if !in_utf8 => u32::MAX,
                None => {
                    return Err(FastBpeError::Unsupported(format!(
                        "the vocabulary has no token {c:?} for byte {b:#04x} (unknown or byte-fallback tokens)"
                    )));
                }
            };
        }
        let id_of = |token: &str, rank: usize| {
            ids.get(token).copied().ok_or_else(|| {
                FastBpeError::Invalid(format!(
                    "merge {}: token {token:?} is not in the vocabulary",
                    rank + 1
                ))
            })
        };
        let merges = spec
            .merges
            .iter()
            .enumerate()
            .map(|(rank, (left, right))| {
                Ok((
                    id_of(left, rank)?,
                    id_of(right, rank)?,
                    id_of(&format!("{left}{right}"), rank)?,
                ))
            })
            .collect::<Result<Vec<_>, FastBpeError>>()?;
        let decoder = ByteDecoder::new();
        let tokens = spec
            .vocab
            .iter()
            .filter_map(|(token, id)| decoder.decode(token).map(|bytes| (bytes, *id)));
        let merges = MergeTable::new(byte_ids, merges, tokens, spec.ignore_merges);

        let (normalized, raw): (Vec<_>, Vec<_>) =
            spec.added.into_iter().partition(|t| t.normalized);
        let matcher = |tokens: Vec<config::AddedToken>| {
            Matcher::new(tokens.into_iter().map(|t| (t.content, t.id)).collect())
                .transpose()
                .map_err(|e| FastBpeError::Invalid(format!("added tokens: {e}")))
        };
        Ok(Self {
            merges,
            raw_added: matcher(raw)?,
            normalized_added: matcher(normalized)?,
            nfc: spec.nfc,
            add_prefix_space: spec.add_prefix_space,
        })
    }

    /// The ids of `text`.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut ids = Vec::with_capacity(text.len() / 3);
        self.encode_into(text, &mut ids);
        ids
    }

    /// Appends the ids of `text` to `out`.
    pub fn encode_into(&self, text: &str, out: &mut Vec<u32>) {
        for segment in split(self.raw_added.as_ref(), text) {
            match segment {
                Segment::Token(id) => out.push(id),
                Segment::Text(raw) => {
                    let normalized = if self.nfc {
                        normalize::nfc(raw)
                    } else {
                        Cow::Borrowed(raw)
                    };
                    for segment in split(self.normalized_added.as_ref(), &normalized) {
                        match segment {
                            Segment::Token(id) => out.push(id),
                            Segment::Text(text) => self.encode_plain(text, out),
                        }
                    }
                }
            }
        }
    }

    /// Pre-tokenizes and merges text that holds no added token.
    fn encode_plain(&self, text: &str, out: &mut Vec<u32>) {
        if self.add_prefix_space && !text.starts_with(' ') {
            let prefixed = format!(" {text}");
            self.encode_pieces(&prefixed, out);
        } else {
            self.encode_pieces(text, out);
        }
    }

    fn encode_pieces(&self, text: &str, out: &mut Vec<u32>) {
        for piece in Pieces::new(text) {
            self.merges.encode_piece(piece.as_bytes(), out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{FastBpe, FastBpeError};

    #[test]
    fn missing_byte_tokens_and_merge_tokens_are_reported() {
        // No tokens for the single bytes: not byte-level BPE as the engine knows it.
        let err = FastBpe::from_vocab_merges(r#"{"a": 0}"#, "", &[]).err();
        assert!(
            matches!(err, Some(FastBpeError::Unsupported(ref r)) if r.contains("byte")),
            "{err:?}"
        );
        let err = FastBpe::from_vocab_merges("[1, 2]", "", &[]).err();
        assert!(matches!(err, Some(FastBpeError::Invalid(_))), "{err:?}");
        let err = FastBpe::from_vocab_merges("{", "", &[]).err();
        assert!(matches!(err, Some(FastBpeError::Json(_))), "{err:?}");
    }
}
