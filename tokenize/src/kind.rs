//! The tokenizer kinds GPT-NeoX knows, named as in its `--tokenizer-type`.

use std::fmt;
use std::str::FromStr;

use crate::TokenizerError;

/// A GPT-NeoX tokenizer type (`--tokenizer-type`). Names match GPT-NeoX's
/// without regard to case, as `build_tokenizer` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenizerKind {
    /// `GPT2BPETokenizer`: GPT-2's `vocab.json` + `merges.txt` (byte-level BPE),
    /// EOD `<|endoftext|>`. Built in when no files are given.
    Gpt2Bpe,
    /// `HFTokenizer`: a Hugging Face `tokenizer.json`, EOD `<|endoftext|>`.
    /// GPT-NeoX-20B's is built in when no file is given.
    HfTokenizer,
    /// `HFGPT2Tokenizer`: Hugging Face's GPT-2 fast tokenizer plus a
    /// `<|padding|>` token (vocabulary 50,258), EOD `<|endoftext|>`.
    HfGpt2,
    /// `SPMTokenizer`: a SentencePiece `.model` file (unigram or BPE, as
    /// Llama's and Mistral's), EOD the id of `<|endoftext|>`, else `<unk>`'s.
    SentencePiece,
    /// `CharLevelTokenizer`: the UTF-8 bytes of the text, vocabulary 512, EOD 0.
    CharLevel,
    /// `TiktokenTokenizer`: an OpenAI tiktoken encoding named by `--vocab-file`.
    Tiktoken,
}

impl TokenizerKind {
    /// Every kind, in GPT-NeoX's order of `--tokenizer-type` choices.
    pub const ALL: [TokenizerKind; 6] = [
        TokenizerKind::Gpt2Bpe,
        TokenizerKind::HfTokenizer,
        TokenizerKind::HfGpt2,
        TokenizerKind::SentencePiece,
        TokenizerKind::CharLevel,
        TokenizerKind::Tiktoken,
    ];

    /// GPT-NeoX's name for the kind.
    pub fn name(self) -> &'static str {
        match self {
            TokenizerKind::Gpt2Bpe => "GPT2BPETokenizer",
            TokenizerKind::HfTokenizer => "HFTokenizer",
            TokenizerKind::HfGpt2 => "HFGPT2Tokenizer",
            TokenizerKind::SentencePiece => "SPMTokenizer",
            TokenizerKind::CharLevel => "CharLevelTokenizer",
            TokenizerKind::Tiktoken => "TiktokenTokenizer",
        }
    }
}

impl fmt::Display for TokenizerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for TokenizerKind {
    type Err = TokenizerError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| TokenizerError::Unknown {
                what: "tokenizer type",
                name: s.to_string(),
                expected: names(),
            })
    }
}

fn names() -> String {
    TokenizerKind::ALL.map(|k| k.name()).join(", ")
}

/// An OpenAI tiktoken encoding, as named to `tiktoken.get_encoding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TiktokenEncoding {
    /// `r50k_base` (alias `gpt2`): GPT-2 / GPT-3.
    R50k,
    /// `p50k_base`: Codex.
    P50k,
    /// `cl100k_base`: GPT-3.5 / GPT-4.
    Cl100k,
    /// `o200k_base`: GPT-4o.
    O200k,
}

impl TiktokenEncoding {
    /// Every encoding.
    pub const ALL: [TiktokenEncoding; 4] = [
        TiktokenEncoding::R50k,
        TiktokenEncoding::P50k,
        TiktokenEncoding::Cl100k,
        TiktokenEncoding::O200k,
    ];

    /// tiktoken's name for it.
    pub fn name(self) -> &'static str {
        match self {
            TiktokenEncoding::R50k => "r50k_base",
            TiktokenEncoding::P50k => "p50k_base",
            TiktokenEncoding::Cl100k => "cl100k_base",
            TiktokenEncoding::O200k => "o200k_base",
        }
    }
}

impl FromStr for TiktokenEncoding {
    type Err = TokenizerError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "gpt2" {
            return Ok(TiktokenEncoding::R50k);
        }
        Self::ALL
            .into_iter()
            .find(|e| e.name() == s)
            .ok_or_else(|| TokenizerError::Unknown {
                what: "tiktoken encoding",
                name: s.to_string(),
                expected: Self::ALL.map(|e| e.name()).join(", "),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_case_insensitively_like_gpt_neox() {
        for kind in TokenizerKind::ALL {
            assert_eq!(kind.name().parse::<TokenizerKind>().unwrap(), kind);
            assert_eq!(
                kind.name().to_lowercase().parse::<TokenizerKind>().unwrap(),
                kind
            );
        }
    }

    #[test]
    fn unknown_kinds_list_the_known_ones() {
        let err = "BertTokenizer".parse::<TokenizerKind>().unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("BertTokenizer") && msg.contains("GPT2BPETokenizer"));
        assert!(msg.contains("SPMTokenizer"), "{msg}");
    }

    #[test]
    fn tiktoken_names() {
        for enc in TiktokenEncoding::ALL {
            assert_eq!(enc.name().parse::<TiktokenEncoding>().unwrap(), enc);
        }
        assert_eq!(
            "gpt2".parse::<TiktokenEncoding>().unwrap(),
            TiktokenEncoding::R50k
        );
        assert!("cl200k".parse::<TiktokenEncoding>().is_err());
    }
}
