//! GPT-NeoX's `SPMTokenizer`: a SentencePiece `.model` file, encoded as
//! `sentencepiece.SentencePieceProcessor(model_file=...).encode(text)` does,
//! in pure Rust (no C++ library, no protobuf compiler).
//!
//! The steps follow SentencePiece's sources one to one: the `.model`
//! protobuf ([`proto`]), the normalizer ([`normalizer`]), the unigram or BPE
//! model ([`unigram`], [`bpe`]), then `PopulateSentencePieceText`: an unknown
//! piece becomes its UTF-8 bytes when the model has byte fallback, and a run
//! of unknown pieces becomes one `<unk>` otherwise.
//!
//! GPT-NeoX's end-of-document id is `piece_to_id("<|endoftext|>")`, which is
//! the `<unk>` id when the model has no such piece (as Llama's and Mistral's
//! do not): `--append-eod` then appends `<unk>`, as GPT-NeoX does.

mod bpe;
mod normalizer;
mod proto;
mod trie;
mod unigram;

use std::path::Path;

use crate::{Engine, Tokenizer, TokenizerError, TokenizerKind};
use normalizer::Normalizer;
use proto::{ModelType, PieceType};
use trie::Trie;

/// GPT-NeoX's end-of-document piece.
const ENDOFTEXT: &[u8] = b"<|endoftext|>";

/// A piece of the normalized text and its id.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Segment {
    start: usize,
    end: usize,
    id: u32,
}

/// The pieces of a model, as SentencePiece's `ModelInterface` holds them.
pub(crate) struct Vocab {
    kinds: Vec<PieceType>,
    scores: Vec<f32>,
    /// What the model matches (`pieces_`): NORMAL, USER_DEFINED and UNUSED
    /// pieces for unigram; every piece for BPE, which skips the reserved ones.
    matched: Trie,
    /// Unigram's UNKNOWN, CONTROL and BYTE pieces (`reserved_id_map_`).
    reserved: Trie,
    unk: u32,
    /// The lowest score of a NORMAL piece.
    min_score: f32,
}

impl Vocab {
    /// `PieceToId`: reserved pieces first, then the others, else `<unk>`.
    fn piece_to_id(&self, piece: &[u8]) -> u32 {
        self.reserved
            .get(piece)
            .or_else(|| self.matched.get(piece))
            .unwrap_or(self.unk)
    }

    /// `IsReservedId`: neither NORMAL, USER_DEFINED nor UNUSED.
    fn is_reserved(&self, id: u32) -> bool {
        !matches!(
            self.kinds[id as usize],
            PieceType::Normal | PieceType::UserDefined | PieceType::Unused
        )
    }
}

enum Algorithm {
    Unigram,
    Bpe,
}

struct SentencePiece {
    normalizer: Normalizer,
    vocab: Vocab,
    user_defined: Trie,
    algorithm: Algorithm,
    /// The id of each byte's `<0xXX>` piece, with byte fallback.
    byte_ids: Option<Box<[u32; 256]>>,
    /// Each id's piece (for decoding).
    pieces: Vec<Vec<u8>>,
    /// Whether the normalizer puts a space before the text (decoding drops it).
    dummy_prefix: bool,
}

impl Engine for SentencePiece {
    fn encode(&self, text: &str, out: &mut Vec<u32>) -> Result<(), TokenizerError> {
        let mut normalized = Vec::with_capacity(text.len() + text.len() / 4 + 3);
        self.normalizer.normalize(text, &mut normalized);
        let mut segments = Vec::new();
        match self.algorithm {
            Algorithm::Unigram => unigram::encode(&self.vocab, &normalized, &mut segments)
                .ok_or_else(|| {
                    TokenizerError::Encode(
                        "the unigram model found no segmentation (its pieces cut characters)"
                            .into(),
                    )
                })?,
            Algorithm::Bpe => {
                bpe::encode(&self.vocab, &self.user_defined, &normalized, &mut segments)
            }
        }
        let mut prev_unk = false;
        for s in segments {
            let unk = s.id == self.vocab.unk;
            match &self.byte_ids {
                Some(bytes) if unk => out.extend(
                    normalized[s.start..s.end]
                        .iter()
                        .map(|&b| bytes[usize::from(b)]),
                ),
                // A run of unknown pieces is one `<unk>`.
                _ if unk && prev_unk => {}
                _ => out.push(s.id),
            }
            prev_unk = unk;
        }
        Ok(())
    }

    /// SentencePiece's `DecodeIds`: pieces concatenated with `▁` as a
    /// space, byte pieces as their bytes, control pieces as nothing,
    /// `<unk>` as ` ⁇ `, and the space the normalizer put first dropped.
    fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        let mut bytes = Vec::new();
        for &id in ids {
            let piece = self.pieces.get(id as usize).ok_or_else(|| {
                TokenizerError::Decode(format!(
                    "id {id} is outside the vocabulary of {} pieces",
                    self.pieces.len()
                ))
            })?;
            match self.vocab.kinds[id as usize] {
                PieceType::Control => {}
                PieceType::Unknown => bytes.extend_from_slice(" \u{2047} ".as_bytes()),
                PieceType::Byte => bytes.extend(byte_of(piece)),
                _ => bytes.extend_from_slice(piece),
            }
        }
        let text = String::from_utf8_lossy(&bytes).replace('\u{2581}', " ");
        Ok(match text.strip_prefix(' ') {
            Some(rest) if self.dummy_prefix => rest.to_string(),
            _ => text,
        })
    }

    fn name(&self) -> String {
        "SentencePiece engine (pure Rust)".to_string()
    }
}

/// Load `SPMTokenizer` from a `.model` file.
pub(crate) fn tokenizer(path: &Path) -> Result<Tokenizer, TokenizerError> {
    let bytes = std::fs::read(path).map_err(|source| TokenizerError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let invalid = |reason: String| TokenizerError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    let model = proto::parse(&bytes)
        .map_err(|e| invalid(format!("not a SentencePiece model (ModelProto): {e}")))?;
    let (engine, eod) = build(model).map_err(invalid)?;
    let vocab_size = engine.vocab.kinds.len();
    let eod_note = if eod == engine.vocab.unk {
        format!("; it has no <|endoftext|> piece, so EOD is <unk> ({eod}) as in GPT-NeoX")
    } else {
        String::new()
    };
    let algorithm = match engine.algorithm {
        Algorithm::Unigram => "unigram",
        Algorithm::Bpe => "BPE",
    };
    Ok(Tokenizer::from_engine(
        TokenizerKind::SentencePiece,
        format!(
            "SPMTokenizer ({}: {algorithm}, {vocab_size} pieces{eod_note})",
            path.display()
        ),
        Box::new(engine),
        vocab_size,
        Some(eod),
    ))
}

/// The engine and the EOD id, with SentencePiece's checks of the pieces
/// (`ModelInterface::InitializePieces`, sentencepiece 0.2.3).
fn build(model: proto::ModelProto) -> Result<(SentencePiece, u32), String> {
    let algorithm = match model.trainer.model_type {
        ModelType::Unigram => Algorithm::Unigram,
        ModelType::Bpe => Algorithm::Bpe,
        other => {
            return Err(format!(
                "model type {other:?} is not supported (unigram and BPE are)"
            ));
        }
    };
    if model.pieces.is_empty() {
        return Err("the model has no pieces".into());
    }
    // Unigram keeps reserved pieces apart; BPE looks every piece up in one map.
    let split_reserved = matches!(algorithm, Algorithm::Unigram);
    let byte_fallback = model.trainer.byte_fallback;
    let mut vocab = Vocab {
        kinds: Vec::with_capacity(model.pieces.len()),
        scores: Vec::with_capacity(model.pieces.len()),
        matched: Trie::default(),
        reserved: Trie::default(),
        unk: 0,
        min_score: f32::MAX,
    };
    let mut unk = None;
    let mut user_defined = Trie::default();
    let mut byte_ids = [None; 256];
    for (i, p) in model.pieces.iter().enumerate() {
        let id = u32::try_from(i).map_err(|_| "more than 2^32 pieces".to_string())?;
        vocab.kinds.push(p.kind);
        vocab.scores.push(p.score);
        let shown = String::from_utf8_lossy(&p.piece);
        if p.piece.len() >= 8000 {
            return Err(format!(
                "piece {id} is {} bytes long (at most 7999)",
                p.piece.len()
            ));
        }
        if !p.score.is_finite() {
            return Err(format!("piece {id} {shown:?} has the score {}", p.score));
        }
        if p.piece.is_empty() {
            return Err(format!("piece {id} is empty"));
        }
        if p.piece == b"\0" && p.kind == PieceType::Unused {
            continue;
        }
        if p.piece.contains(&0) {
            return Err(format!("piece {id} {shown:?} holds a NUL byte"));
        }
        let matched = matches!(
            p.kind,
            PieceType::Normal | PieceType::UserDefined | PieceType::Unused
        );
        let set = if matched || !split_reserved {
            &mut vocab.matched
        } else {
            &mut vocab.reserved
        };
        if let Some(first) = set.get(&p.piece) {
            return Err(format!("piece {id} {shown:?} is already piece {first}"));
        }
        set.insert(&p.piece, id);
        match p.kind {
            PieceType::Normal => vocab.min_score = vocab.min_score.min(p.score),
            PieceType::UserDefined => user_defined.insert(&p.piece, id),
            PieceType::Unknown => {
                if unk.replace(id).is_some() {
                    return Err(format!("piece {id} {shown:?} is a second unknown piece"));
                }
            }
            PieceType::Byte => {
                if !byte_fallback {
                    return Err(format!(
                        "byte piece {id} {shown:?} in a model without byte_fallback"
                    ));
                }
                let byte = byte_of(&p.piece)
                    .ok_or_else(|| format!("byte piece {id} {shown:?} is not <0x00> to <0xFF>"))?;
                byte_ids[usize::from(byte)] = Some(id);
            }
            PieceType::Control | PieceType::Unused => {}
        }
    }
    // SentencePiece accepts a byte-fallback model without <unk>, but GPT-NeoX
    // would then append id -1 as EOD: refused.
    vocab.unk = unk.ok_or("the model has no unknown piece (<unk>)")?;
    let byte_ids = if byte_fallback {
        let mut ids = Box::new([0u32; 256]);
        for (b, id) in byte_ids.iter().enumerate() {
            ids[b] = id
                .ok_or_else(|| format!("byte_fallback is set but there is no piece <0x{b:02X}>"))?;
        }
        Some(ids)
    } else {
        None
    };
    let normalizer = Normalizer::new(
        &model.normalizer,
        model.trainer.treat_whitespace_as_suffix,
        user_defined.clone(),
    )?;
    let eod = vocab.piece_to_id(ENDOFTEXT);
    Ok((
        SentencePiece {
            normalizer,
            vocab,
            user_defined,
            algorithm,
            byte_ids,
            pieces: model.pieces.iter().map(|p| p.piece.clone()).collect(),
            dummy_prefix: model.normalizer.add_dummy_prefix
                && !model.trainer.treat_whitespace_as_suffix,
        },
        eod,
    ))
}

/// `PieceToByte`: the byte a `<0xXX>` piece stands for (upper-case hex).
fn byte_of(piece: &[u8]) -> Option<u8> {
    let hex = piece.strip_prefix(b"<0x")?.strip_suffix(b">")?;
    let valid = hex.len() == 2 && hex.iter().all(|c| matches!(c, b'0'..=b'9' | b'A'..=b'F'));
    valid
        .then(|| u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok())
        .flatten()
}
