//! GPT-NeoX's `TiktokenTokenizer`, on the `tiktoken-rs` crate (ranks built in).
//!
//! GPT-NeoX calls `encoding.encode(text)`, which raises on text containing a
//! special-token string such as `<|endoftext|>`; here such text is encoded as
//! ordinary text (`encode_ordinary`), which is the same for every other text.

use tiktoken_rs::CoreBPE;

use crate::{Engine, TiktokenEncoding, Tokenizer, TokenizerError, TokenizerKind};

struct Tiktoken(CoreBPE);

impl Engine for Tiktoken {
    fn encode(&self, text: &str, out: &mut Vec<u32>) -> Result<(), TokenizerError> {
        out.extend(self.0.encode_ordinary(text));
        Ok(())
    }

    fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        let bytes = self
            .0
            .decode_bytes(ids)
            .map_err(|e| TokenizerError::Decode(e.to_string()))?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}

/// tiktoken's `n_vocab` (largest id + 1, special tokens included) and
/// `eot_token` for each encoding, as `tiktoken_ext/openai_public.py` defines them.
fn n_vocab_and_eot(encoding: TiktokenEncoding) -> (usize, u32) {
    match encoding {
        TiktokenEncoding::R50k => (50_257, 50_256),
        TiktokenEncoding::P50k => (50_281, 50_256),
        TiktokenEncoding::Cl100k => (100_277, 100_257),
        TiktokenEncoding::O200k => (200_019, 199_999),
    }
}

pub(crate) fn tokenizer(encoding: TiktokenEncoding) -> Result<Tokenizer, TokenizerError> {
    let bpe = match encoding {
        TiktokenEncoding::R50k => tiktoken_rs::r50k_base(),
        TiktokenEncoding::P50k => tiktoken_rs::p50k_base(),
        TiktokenEncoding::Cl100k => tiktoken_rs::cl100k_base(),
        TiktokenEncoding::O200k => tiktoken_rs::o200k_base(),
    }
    .map_err(|e| TokenizerError::Invalid {
        path: encoding.name().into(),
        reason: e.to_string(),
    })?;
    let (n_vocab, eot) = n_vocab_and_eot(encoding);
    Ok(Tokenizer::from_engine(
        TokenizerKind::Tiktoken,
        format!("TiktokenTokenizer ({})", encoding.name()),
        Box::new(Tiktoken(bpe)),
        n_vocab,
        Some(eot),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eot_is_the_endoftext_special_token() {
        for enc in [TiktokenEncoding::R50k, TiktokenEncoding::Cl100k] {
            let tok = tokenizer(enc).unwrap();
            let bpe = match enc {
                TiktokenEncoding::R50k => tiktoken_rs::r50k_base().unwrap(),
                _ => tiktoken_rs::cl100k_base().unwrap(),
            };
            let special = bpe.encode_with_special_tokens("<|endoftext|>");
            assert_eq!(Some(special[0]), tok.eod());
            assert!(tok.vocab_size() > special[0] as usize);
        }
    }

    #[test]
    fn special_token_text_is_encoded_as_ordinary_text() {
        let tok = tokenizer(TiktokenEncoding::R50k).unwrap();
        let mut ids = Vec::new();
        tok.encode("a<|endoftext|>", &mut ids).unwrap();
        assert!(!ids.contains(&50_256));
        assert!(ids.len() > 2);
        assert_eq!(tok.decode(&ids).unwrap(), "a<|endoftext|>");
        assert!(tok.decode(&[u32::MAX]).is_err());
    }
}
