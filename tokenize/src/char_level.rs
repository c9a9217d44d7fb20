//! GPT-NeoX's `CharLevelTokenizer`: `np.fromstring(text, dtype=np.uint8)`,
//! i.e. the UTF-8 bytes of the text, one id each; vocabulary 512, EOD 0.

use crate::{Engine, Tokenizer, TokenizerError, TokenizerKind};

/// GPT-NeoX builds it with `vocab_size=512`.
const VOCAB_SIZE: usize = 512;
/// GPT-NeoX's `eod_id`.
const EOD: u32 = 0;

struct CharLevel;

impl Engine for CharLevel {
    fn encode(&self, text: &str, out: &mut Vec<u32>) -> Result<(), TokenizerError> {
        out.extend(text.bytes().map(u32::from));
        Ok(())
    }

    /// The bytes as UTF-8 (invalid sequences and ids above 255 become
    /// U+FFFD). GPT-NeoX maps each id to `chr(max(32, id))` instead, which
    /// garbles any non-ASCII text; the bytes are what the ids encode.
    fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        let bytes: Vec<u8> = ids
            .iter()
            .map(|&id| u8::try_from(id).unwrap_or(0xFF))
            .collect();
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}

pub(crate) fn tokenizer() -> Tokenizer {
    Tokenizer::from_engine(
        TokenizerKind::CharLevel,
        "CharLevelTokenizer (UTF-8 bytes)",
        Box::new(CharLevel),
        VOCAB_SIZE,
        Some(EOD),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_utf8_bytes() {
        let tok = super::tokenizer();
        let mut ids = Vec::new();
        tok.encode("aé", &mut ids).unwrap();
        assert_eq!(ids, "aé".bytes().map(u32::from).collect::<Vec<_>>());
        assert_eq!(ids.len(), 3);
        assert_eq!(tok.eod(), Some(0));
        assert_eq!(tok.decode(&ids).unwrap(), "aé");
        assert_eq!(tok.decode(&[104, 300, 105]).unwrap(), "h\u{FFFD}i");
    }
}
