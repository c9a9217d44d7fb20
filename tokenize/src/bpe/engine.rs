//! The fast engine as one of the crate's [`Engine`]s, and the choice between
//! it and the `tokenizers` library (`--engine auto|fast|tokenizers`).

use std::fmt;
use std::str::FromStr;

use super::FastBpe;
use crate::{Engine, TokenizerError};

/// Which implementation encodes a byte-level BPE tokenizer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EngineChoice {
    /// The fast engine when it supports the tokenizer exactly, else `tokenizers`.
    #[default]
    Auto,
    /// The fast engine; an error when it does not support the tokenizer.
    Fast,
    /// Always the Hugging Face `tokenizers` library.
    Tokenizers,
}

impl EngineChoice {
    /// The names accepted by [`FromStr`].
    pub const NAMES: [&'static str; 3] = ["auto", "fast", "tokenizers"];
}

impl fmt::Display for EngineChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Fast => "fast",
            Self::Tokenizers => "tokenizers",
        })
    }
}

impl FromStr for EngineChoice {
    type Err = TokenizerError;

    fn from_str(name: &str) -> Result<Self, TokenizerError> {
        match name {
            "auto" => Ok(Self::Auto),
            "fast" => Ok(Self::Fast),
            "tokenizers" => Ok(Self::Tokenizers),
            _ => Err(TokenizerError::Unknown {
                what: "engine",
                name: name.to_owned(),
                expected: Self::NAMES.join(", "),
            }),
        }
    }
}

impl Engine for FastBpe {
    fn encode(&self, text: &str, out: &mut Vec<u32>) -> Result<(), TokenizerError> {
        self.encode_into(text, out);
        Ok(())
    }

    fn name(&self) -> String {
        "fast BPE engine".to_string()
    }
}

/// The fast engine for a loaded `tokenizers` tokenizer when `choice` allows
/// it: `Ok(Ok(engine))`, or `Ok(Err(why))` to use the library (said in words,
/// for the log), or an error when `Fast` was asked for and is not supported.
pub fn choose(
    choice: EngineChoice,
    tokenizer: &tokenizers::Tokenizer,
) -> Result<Result<FastBpe, String>, TokenizerError> {
    match choice {
        EngineChoice::Tokenizers => Ok(Err("--engine tokenizers".to_owned())),
        EngineChoice::Auto => Ok(FastBpe::from_hf_tokenizer(tokenizer).map_err(|e| e.to_string())),
        EngineChoice::Fast => FastBpe::from_hf_tokenizer(tokenizer)
            .map(Ok)
            .map_err(|e| TokenizerError::FastEngine(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::EngineChoice;

    #[test]
    fn names_round_trip() {
        for name in EngineChoice::NAMES {
            let choice: EngineChoice = name.parse().expect("known");
            assert_eq!(choice.to_string(), name);
        }
        let err = "regex".parse::<EngineChoice>().expect_err("unknown");
        assert!(err.to_string().contains("auto, fast, tokenizers"), "{err}");
    }
}
