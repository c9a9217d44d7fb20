//! Tokenizers on the Hugging Face `tokenizers` crate: GPT2BPETokenizer,
//! HFTokenizer and HFGPT2Tokenizer.
//!
//! GPT-NeoX's GPT2BPETokenizer is transformers' slow `GPT2Tokenizer`:
//! byte-level BPE over GPT-2's pre-tokenizing regex, with `<|endoftext|>`
//! split out as one special token wherever it appears. The same pipeline is
//! built here from `vocab.json` + `merges.txt` on the `tokenizers` crate.

use std::collections::HashMap;
use std::path::Path;

use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer as HfTokenizer};

use crate::{Engine, EngineChoice, Tokenizer, TokenizerError, TokenizerKind, bpe, builtin};

/// GPT-NeoX's end-of-document token for every `tokenizers`-based kind.
const ENDOFTEXT: &str = "<|endoftext|>";
/// The padding token HFGPT2Tokenizer adds.
const PADDING: &str = "<|padding|>";

/// The library, with why it was chosen.
struct Hf(HfTokenizer, String);

impl Engine for Hf {
    fn encode(&self, text: &str, out: &mut Vec<u32>) -> Result<(), TokenizerError> {
        // Python's `Tokenizer.encode(text)` adds special tokens by default.
        let encoding = self
            .0
            .encode_fast(text, true)
            .map_err(|e| TokenizerError::Encode(e.to_string()))?;
        out.extend_from_slice(encoding.get_ids());
        Ok(())
    }

    fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        decode(&self.0, ids)
    }

    fn hf_json(&self) -> Option<String> {
        self.0.to_string(false).ok()
    }

    fn name(&self) -> String {
        format!("tokenizers library ({})", self.1)
    }
}

/// Another engine encoding, the `tokenizers` library decoding (the fast BPE
/// engine only encodes).
struct DecodeWith(Box<dyn Engine>, HfTokenizer);

impl Engine for DecodeWith {
    fn encode(&self, text: &str, out: &mut Vec<u32>) -> Result<(), TokenizerError> {
        self.0.encode(text, out)
    }

    fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        decode(&self.1, ids)
    }

    fn hf_json(&self) -> Option<String> {
        self.1.to_string(false).ok()
    }

    fn name(&self) -> String {
        self.0.name()
    }
}

/// transformers' `decode(ids)`: special tokens kept. An id outside the
/// vocabulary is an error (the library would drop it silently).
fn decode(tok: &HfTokenizer, ids: &[u32]) -> Result<String, TokenizerError> {
    let size = tok.get_vocab_size(true);
    if let Some(id) = ids.iter().find(|&&id| id as usize >= size) {
        return Err(TokenizerError::Decode(format!(
            "id {id} is outside the vocabulary of {size} tokens"
        )));
    }
    tok.decode(ids, false)
        .map_err(|e| TokenizerError::Decode(e.to_string()))
}

/// Wrap a `tokenizers` tokenizer: vocabulary size with added tokens (as
/// GPT-NeoX's `get_vocab_size()` and `len(tokenizer)`), EOD `<|endoftext|>`.
pub(crate) fn tokenizer(
    kind: TokenizerKind,
    origin: String,
    tok: HfTokenizer,
    engine: EngineChoice,
) -> Result<Tokenizer, TokenizerError> {
    let vocab_size = tok.get_vocab_size(true);
    let eod = tok.token_to_id(ENDOFTEXT);
    let engine: Box<dyn Engine> = match bpe::choose(engine, &tok)? {
        Ok(fast) => Box::new(DecodeWith(Box::new(fast), tok)),
        Err(why) => Box::new(Hf(tok, why)),
    };
    Ok(Tokenizer::from_engine(
        kind,
        format!("{kind} ({origin})"),
        engine,
        vocab_size,
        eod,
    ))
}

fn read(path: &Path) -> Result<Vec<u8>, TokenizerError> {
    std::fs::read(path).map_err(|source| TokenizerError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn invalid(path: &Path, reason: impl ToString) -> TokenizerError {
    TokenizerError::Invalid {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// GPT-2's tokenizer from the built-in files.
pub(crate) fn builtin_gpt2() -> Result<HfTokenizer, TokenizerError> {
    gpt2(
        &builtin::gpt2_vocab()?,
        &builtin::gpt2_merges()?,
        Path::new("built-in GPT-2"),
    )
}

/// GPT-NeoX-20B's tokenizer from the built-in `tokenizer.json`.
pub(crate) fn builtin_neox20b() -> Result<HfTokenizer, TokenizerError> {
    let path = Path::new("built-in GPT-NeoX-20B tokenizer.json");
    HfTokenizer::from_bytes(builtin::neox20b_tokenizer_json()?).map_err(|e| invalid(path, e))
}

/// GPT-2's tokenizer from `vocab.json` and `merges.txt`.
pub(crate) fn gpt2_from_files(vocab: &Path, merges: &Path) -> Result<HfTokenizer, TokenizerError> {
    let vocab_bytes = read(vocab)?;
    let merges_bytes = read(merges)?;
    // Name the file at fault: parse each against its own path.
    let vocab_map = parse_vocab(&vocab_bytes, vocab)?;
    let merge_list = parse_merges(&merges_bytes, merges)?;
    build_gpt2(vocab_map, merge_list, vocab)
}

/// A `tokenizer.json`.
pub(crate) fn from_tokenizer_json(path: &Path) -> Result<HfTokenizer, TokenizerError> {
    HfTokenizer::from_bytes(read(path)?).map_err(|e| invalid(path, e))
}

/// What transformers' `GPT2TokenizerFast.from_pretrained(path)` would load:
/// a `tokenizer.json`, or a directory holding one, or `vocab.json` + `merges.txt`.
pub(crate) fn gpt2_from_pretrained(path: &Path) -> Result<HfTokenizer, TokenizerError> {
    if !path.is_dir() {
        return from_tokenizer_json(path);
    }
    let json = path.join("tokenizer.json");
    if json.is_file() {
        return from_tokenizer_json(&json);
    }
    let (vocab, merges) = (path.join("vocab.json"), path.join("merges.txt"));
    if vocab.is_file() && merges.is_file() {
        return gpt2_from_files(&vocab, &merges);
    }
    Err(invalid(
        path,
        "expected a directory with tokenizer.json, or with vocab.json and merges.txt",
    ))
}

/// Add HFGPT2Tokenizer's `<|padding|>` special token (GPT-NeoX:
/// `add_special_tokens({"pad_token": "<|padding|>"})`).
pub(crate) fn with_padding_token(mut tok: HfTokenizer) -> HfTokenizer {
    tok.add_special_tokens(&[AddedToken::from(PADDING, true)]);
    tok
}

fn gpt2(vocab: &[u8], merges: &[u8], origin: &Path) -> Result<HfTokenizer, TokenizerError> {
    build_gpt2(
        parse_vocab(vocab, origin)?,
        parse_merges(merges, origin)?,
        origin,
    )
}

fn parse_vocab(bytes: &[u8], path: &Path) -> Result<HashMap<String, u32>, TokenizerError> {
    serde_json::from_slice(bytes).map_err(|e| {
        invalid(
            path,
            format!("expected a JSON object of token -> id (GPT-2's vocab.json): {e}"),
        )
    })
}

/// `merges.txt`: an optional `#version` line, then one "left right" pair a
/// line (transformers' slow tokenizer and `tokenizers` both read it so).
fn parse_merges(bytes: &[u8], path: &Path) -> Result<Vec<(String, String)>, TokenizerError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| invalid(path, format!("not UTF-8 at byte {}: {e}", e.valid_up_to())))?;
    let mut merges = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.is_empty() || (i == 0 && line.starts_with("#version")) {
            continue;
        }
        let mut parts = line.split(' ');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(a), Some(b), None) if !a.is_empty() && !b.is_empty() => {
                merges.push((a.to_string(), b.to_string()))
            }
            _ => {
                return Err(invalid(
                    path,
                    format!(
                        "line {}: expected two tokens separated by one space, found {line:?}",
                        i + 1
                    ),
                ));
            }
        }
    }
    Ok(merges)
}

fn build_gpt2(
    vocab: HashMap<String, u32>,
    merges: Vec<(String, String)>,
    origin: &Path,
) -> Result<HfTokenizer, TokenizerError> {
    let bpe = BPE::builder()
        .vocab_and_merges(vocab.into_iter().collect::<Vocab>(), merges)
        .build()
        .map_err(|e| invalid(origin, e))?;
    let mut tok = HfTokenizer::new(bpe);
    tok.with_pre_tokenizer(Some(ByteLevel::default().add_prefix_space(false)));
    tok.with_decoder(Some(ByteLevel::default()));
    tok.add_special_tokens(&[AddedToken::from(ENDOFTEXT, true)]);
    Ok(tok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{TokenizerKind, TokenizerSpec};

    fn ids(tok: &Tokenizer, text: &str) -> Vec<u32> {
        let mut out = Vec::new();
        tok.encode(text, &mut out).unwrap();
        out
    }

    #[test]
    fn gpt2_matches_tiktoken_r50k_on_ordinary_text() {
        let gpt2 = Tokenizer::load(&TokenizerSpec::new(TokenizerKind::Gpt2Bpe)).unwrap();
        let r50k = tiktoken_rs::r50k_base().unwrap();
        for text in [
            "Hello world",
            "  leading spaces, trailing  \n\n",
            "It's what we'll do; they've said I'm 42.",
            "Ünïcödé 日本語 текст 🙂",
        ] {
            assert_eq!(ids(&gpt2, text), r50k.encode_ordinary(text), "{text:?}");
        }
        assert_eq!(gpt2.vocab_size(), 50_257);
        assert_eq!(gpt2.eod(), Some(50_256));
    }

    #[test]
    fn gpt2_splits_out_endoftext_as_one_token() {
        let gpt2 = Tokenizer::load(&TokenizerSpec::new(TokenizerKind::Gpt2Bpe)).unwrap();
        let got = ids(&gpt2, "a<|endoftext|>b");
        assert_eq!(got.len(), 3);
        assert_eq!(got[1], 50_256);
        assert_eq!(gpt2.decode(&got).unwrap(), "a<|endoftext|>b");
    }

    #[test]
    fn decoding_gives_the_text_back() {
        for kind in [TokenizerKind::Gpt2Bpe, TokenizerKind::HfTokenizer] {
            let tok = Tokenizer::load(&TokenizerSpec::new(kind)).unwrap();
            let text = "Hello world,  Ünïcödé 日本語 🙂\n";
            assert_eq!(tok.decode(&ids(&tok, text)).unwrap(), text, "{kind}");
            let err = tok.decode(&[1, 60_000]).unwrap_err().to_string();
            assert!(err.contains("60000"), "{err}");
            // Its tokenizer.json gives the same ids back.
            let json = tok.hf_json().unwrap();
            let again = HfTokenizer::from_bytes(json.as_bytes()).unwrap();
            let enc = again.encode_fast(text, true).unwrap();
            assert_eq!(enc.get_ids(), ids(&tok, text), "{kind}");
        }
    }

    #[test]
    fn hf_gpt2_adds_the_padding_token() {
        let tok = Tokenizer::load(&TokenizerSpec::new(TokenizerKind::HfGpt2)).unwrap();
        assert_eq!(tok.vocab_size(), 50_258);
        assert_eq!(tok.eod(), Some(50_256));
        assert_eq!(ids(&tok, "<|padding|>"), [50_257]);
    }

    #[test]
    fn neox20b_builtin() {
        let tok = Tokenizer::load(&TokenizerSpec::new(TokenizerKind::HfTokenizer)).unwrap();
        assert_eq!(tok.vocab_size(), 50_277);
        assert_eq!(tok.eod(), Some(0));
        assert!(!ids(&tok, "Hello world").is_empty());
    }

    #[test]
    fn bad_merges_name_the_file_and_line() {
        let dir = std::env::temp_dir().join(format!("neox-tok-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let vocab = dir.join("vocab.json");
        let merges = dir.join("merges.txt");
        std::fs::write(&vocab, br#"{"a": 0, "b": 1, "ab": 2}"#).unwrap();
        std::fs::write(&merges, "#version: 0.2\na b\nthree tokens here\n").unwrap();
        let err = gpt2_from_files(&vocab, &merges).unwrap_err().to_string();
        assert!(
            err.contains("merges.txt") && err.contains("line 3"),
            "{err}"
        );
        std::fs::write(&vocab, b"[1, 2]").unwrap();
        let err = gpt2_from_files(&vocab, &merges).unwrap_err().to_string();
        assert!(err.contains("vocab.json"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_files_are_reported() {
        let spec = TokenizerSpec {
            kind: TokenizerKind::HfTokenizer,
            vocab_file: Some("/nonexistent/tokenizer.json".into()),
            merge_file: None,
        };
        let err = Tokenizer::load(&spec).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/tokenizer.json"), "{err}");
    }
}
