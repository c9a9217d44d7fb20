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
    }
}
