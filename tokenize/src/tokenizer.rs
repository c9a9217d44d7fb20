//! [`Tokenizer`]: one of GPT-NeoX's tokenizer kinds, ready to encode.

use std::path::{Path, PathBuf};

use crate::{
    EngineChoice, TiktokenEncoding, TokenizerError, TokenizerKind, char_level, hf, spm, tiktoken,
};

/// Something that turns text into token ids. Each tokenizer implementation
/// (Hugging Face `tokenizers`, tiktoken, char-level, ...) is one `Engine`;
/// a new implementation is one more `impl Engine` handed to
/// [`Tokenizer::from_engine`].
pub trait Engine: Send + Sync {
    /// Append the ids of `text` to `out` (nothing else: no end-of-document id).
    fn encode(&self, text: &str, out: &mut Vec<u32>) -> Result<(), TokenizerError>;

    /// The text of `ids`, special tokens included (GPT-NeoX's `detokenize`).
    /// Engines that only encode say so.
    fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        let _ = ids;
        Err(TokenizerError::Decode(format!(
            "the {} cannot decode",
            self.name()
        )))
    }

    /// Which implementation this is, in words (for logs).
    fn name(&self) -> String {
        "built-in encoder".to_string()
    }

    /// The tokenizer as a Hugging Face `tokenizer.json`, where it is one.
    fn hf_json(&self) -> Option<String> {
        None
    }
}

/// Which tokenizer to load: GPT-NeoX's `--tokenizer-type`, `--vocab-file`
/// and `--merge-file`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizerSpec {
    /// The kind.
    pub kind: TokenizerKind,
    /// `vocab.json` (GPT2BPETokenizer), `tokenizer.json` (HFTokenizer), a
    /// directory or `tokenizer.json` (HFGPT2Tokenizer), a SentencePiece
    /// `.model` file (SPMTokenizer), or the encoding name
    /// (TiktokenTokenizer, e.g. `cl100k_base`). `None`: the built-in files
    /// (GPT-2, GPT-NeoX-20B).
    pub vocab_file: Option<PathBuf>,
    /// GPT-2's `merges.txt` (GPT2BPETokenizer only).
    pub merge_file: Option<PathBuf>,
}

impl TokenizerSpec {
    /// A kind with no files: the built-in GPT-2 or GPT-NeoX-20B files where
    /// the kind needs some.
    pub fn new(kind: TokenizerKind) -> Self {
        Self {
            kind,
            vocab_file: None,
            merge_file: None,
        }
    }
}

/// A loaded tokenizer: its engine, its unpadded vocabulary size and its
/// end-of-document id, as GPT-NeoX defines them for its kind.
pub struct Tokenizer {
    kind: TokenizerKind,
    description: String,
    engine: Box<dyn Engine>,
    vocab_size: usize,
    eod: Option<u32>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("kind", &self.kind)
            .field("description", &self.description)
            .field("vocab_size", &self.vocab_size)
            .field("eod", &self.eod)
            .finish_non_exhaustive()
    }
}

impl Tokenizer {
    /// Load the tokenizer a spec names, exactly as GPT-NeoX's `build_tokenizer` would,
    /// on the fast BPE engine where it supports the tokenizer ([`EngineChoice::Auto`]).
    pub fn load(spec: &TokenizerSpec) -> Result<Self, TokenizerError> {
        Self::load_with_engine(spec, EngineChoice::Auto)
    }

    /// [`Tokenizer::load`] with the choice of engine for the byte-level BPE
    /// kinds (GPT2BPETokenizer, HFTokenizer, HFGPT2Tokenizer): the ids are
    /// the same, the speed is not. Other kinds ignore it.
    pub fn load_with_engine(
        spec: &TokenizerSpec,
        engine: EngineChoice,
    ) -> Result<Self, TokenizerError> {
        let vocab = spec.vocab_file.as_deref();
        match spec.kind {
            TokenizerKind::Gpt2Bpe => {
                let (tok, origin) = match (vocab, spec.merge_file.as_deref()) {
                    (None, None) => (hf::builtin_gpt2()?, "built-in GPT-2".to_string()),
                    (Some(v), Some(m)) => (hf::gpt2_from_files(v, m)?, files(&[v, m])),
                    (Some(_), None) => {
                        return Err(TokenizerError::MissingFile {
                            kind: "GPT2BPETokenizer",
                            what: "--merge-file (GPT-2's merges.txt) with --vocab-file",
                        });
                    }
                    (None, Some(_)) => {
                        return Err(TokenizerError::MissingFile {
                            kind: "GPT2BPETokenizer",
                            what: "--vocab-file (GPT-2's vocab.json) with --merge-file",
                        });
                    }
                };
                hf::tokenizer(spec.kind, origin, tok, engine)
            }
            TokenizerKind::HfTokenizer => {
                no_merges(spec)?;
                let (tok, origin) = match vocab {
                    None => (hf::builtin_neox20b()?, "built-in GPT-NeoX-20B".to_string()),
                    Some(v) => (hf::from_tokenizer_json(v)?, files(&[v])),
                };
                hf::tokenizer(spec.kind, origin, tok, engine)
            }
            TokenizerKind::HfGpt2 => {
                no_merges(spec)?;
                let (tok, origin) = match vocab {
                    None => (hf::builtin_gpt2()?, "built-in GPT-2".to_string()),
                    Some(v) => (hf::gpt2_from_pretrained(v)?, files(&[v])),
                };
                hf::tokenizer(spec.kind, origin, hf::with_padding_token(tok), engine)
            }
            TokenizerKind::SentencePiece => {
                no_merges(spec)?;
                let model = vocab.ok_or(TokenizerError::MissingFile {
                    kind: "SPMTokenizer",
                    what: "--vocab-file (a SentencePiece .model file)",
                })?;
                spm::tokenizer(model)
            }
            TokenizerKind::CharLevel => Ok(char_level::tokenizer()),
            TokenizerKind::Tiktoken => {
                no_merges(spec)?;
                let name = vocab.ok_or(TokenizerError::MissingFile {
                    kind: "TiktokenTokenizer",
                    what: "--vocab-file naming the encoding (r50k_base, p50k_base, cl100k_base or o200k_base)",
                })?;
                let encoding: TiktokenEncoding = name.to_string_lossy().parse()?;
                tiktoken::tokenizer(encoding)
            }
        }
    }

    /// A tokenizer from any engine, with the vocabulary size and
    /// end-of-document id GPT-NeoX gives that kind.
    pub fn from_engine(
        kind: TokenizerKind,
        description: impl Into<String>,
        engine: Box<dyn Engine>,
        vocab_size: usize,
        eod: Option<u32>,
    ) -> Self {
        Self {
            kind,
            description: description.into(),
            engine,
            vocab_size,
            eod,
        }
    }

    /// Which engine encodes, in words (e.g. "fast BPE engine").
    pub fn engine_name(&self) -> String {
        self.engine.name()
    }

    /// Append the ids of `text` to `out`.
    pub fn encode(&self, text: &str, out: &mut Vec<u32>) -> Result<(), TokenizerError> {
        self.engine.encode(text, out)
    }

    /// The text of `ids` (GPT-NeoX's `detokenize`), special tokens kept.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        self.engine.decode(ids)
    }

    /// The tokenizer as a Hugging Face `tokenizer.json` (what
    /// `AutoTokenizer` loads), for the kinds built on the `tokenizers`
    /// library (GPT2BPETokenizer, HFTokenizer, HFGPT2Tokenizer); `None` for
    /// the others.
    pub fn hf_json(&self) -> Option<String> {
        self.engine.hf_json()
    }

    /// The kind.
    pub fn kind(&self) -> TokenizerKind {
        self.kind
    }

    /// Where it came from, in words (e.g. "GPT2BPETokenizer (built-in GPT-2)").
    pub fn description(&self) -> &str {
        &self.description
    }

    /// The unpadded vocabulary size, as GPT-NeoX's `tokenizer.vocab_size`:
    /// it decides the token dtype of the shards.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// The end-of-document id `--append-eod` appends, if the tokenizer has one.
    pub fn eod(&self) -> Option<u32> {
        self.eod
    }
}

fn no_merges(spec: &TokenizerSpec) -> Result<(), TokenizerError> {
    match &spec.merge_file {
        Some(m) => Err(TokenizerError::Invalid {
            path: m.clone(),
            reason: format!(
                "--merge-file is only used by GPT2BPETokenizer, not {}",
                spec.kind
            ),
        }),
        None => Ok(()),
    }
}

fn files(paths: &[&Path]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(" + ")
}
