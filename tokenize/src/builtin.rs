//! The tokenizer files built into the crate (zstd-compressed copies in
//! `tokenize/assets/`, see its README for origin and license).

use crate::TokenizerError;

const GPT2_VOCAB: &[u8] = include_bytes!("../assets/gpt2-vocab.json.zst");
const GPT2_MERGES: &[u8] = include_bytes!("../assets/gpt2-merges.txt.zst");
const NEOX20B: &[u8] = include_bytes!("../assets/neox-20b.tokenizer.json.zst");

fn unpack(name: &str, packed: &[u8]) -> Result<Vec<u8>, TokenizerError> {
    zstd::decode_all(packed).map_err(|e| TokenizerError::Invalid {
        path: format!("built-in {name}").into(),
        reason: e.to_string(),
    })
}

/// GPT-2's `vocab.json` (OpenAI's `encoder.json`).
pub(crate) fn gpt2_vocab() -> Result<Vec<u8>, TokenizerError> {
    unpack("gpt2-vocab.json", GPT2_VOCAB)
}

/// GPT-2's `merges.txt` (OpenAI's `vocab.bpe`).
pub(crate) fn gpt2_merges() -> Result<Vec<u8>, TokenizerError> {
    unpack("gpt2-merges.txt", GPT2_MERGES)
}

/// GPT-NeoX-20B's `tokenizer.json`.
pub(crate) fn neox20b_tokenizer_json() -> Result<Vec<u8>, TokenizerError> {
    unpack("neox-20b.tokenizer.json", NEOX20B)
}

#[cfg(test)]
#[path = "../../tests/common/shared_dir.rs"]
mod shared_dir;

#[cfg(test)]
mod tests {

    use super::shared_dir::shared_dir as shared;

    #[test]
    fn embedded_files_match_the_reference_copies() {
        let dir = shared().join("tokenizers");
        assert!(
            dir.is_dir(),
            "the shared folder is missing: {} (set NEOX_SHARED)",
            dir.display()
        );
        let pairs = [
            ("gpt2-vocab.json", super::gpt2_vocab().unwrap()),
            ("gpt2-merges.txt", super::gpt2_merges().unwrap()),
            (
                "neox-20b.tokenizer.json",
                super::neox20b_tokenizer_json().unwrap(),
            ),
        ];
        for (name, embedded) in pairs {
            let reference = std::fs::read(dir.join(name)).unwrap();
            assert!(embedded == reference, "{name} differs from the reference");
        }
    }
}
