//! SPMTokenizer gives GPT-NeoX's ids: the fixtures in `tests/fixtures/spm/`
//! were made by `scripts/spm_reference.py` with GPT-NeoX's own
//! `SentencePieceTokenizer` class (sentencepiece 0.2.3) on two real `.model`
//! files: Mistral 7B v0.1's (BPE with byte fallback, from the PyPI package
//! mistral_common) and SentencePiece's own test model (unigram with NFKC,
//! from its sdist). See `tests/fixtures/spm/README.md`.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use neox_tokenize::{Tokenizer, TokenizerKind, TokenizerSpec};
use serde_json::Value;

const MODELS: [&str; 2] = ["mistral-v1", "sentencepiece-test"];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/spm")
}

#[path = "../../tests/common/shared_dir.rs"]
mod shared_dir;
use shared_dir::shared_dir as shared;

fn load(name: &str) -> Tokenizer {
    let spec = TokenizerSpec {
        kind: TokenizerKind::SentencePiece,
        vocab_file: Some(fixtures().join(format!("{name}.model"))),
        merge_file: None,
    };
    Tokenizer::load(&spec).unwrap()
}

fn summary(name: &str) -> Value {
    let text = std::fs::read_to_string(fixtures().join(format!("{name}.json"))).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn ids_of(value: &Value) -> Vec<u32> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect()
}

fn encode(tok: &Tokenizer, text: &str) -> Vec<u32> {
    let mut ids = Vec::new();
    tok.encode(text, &mut ids).unwrap();
    ids
}

/// The ids of the first documents, as the script wrote them.
fn reference_documents(name: &str) -> Vec<Vec<u32>> {
    let packed = std::fs::read(fixtures().join(format!("{name}.ids.zst"))).unwrap();
    let raw = zstd::decode_all(packed.as_slice()).unwrap();
    let mut words = raw
        .chunks_exact(4)
        .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]));
    let count = words.next().unwrap();
    (0..count)
        .map(|_| {
            let len = words.next().unwrap() as usize;
            words.by_ref().take(len).collect()
        })
        .collect()
}

/// The first `n` non-empty texts of the shared e-mail corpus.
fn corpus_texts(n: usize) -> Vec<String> {
    let path = shared().join("data/mail.jsonl.zst");
    let file = std::fs::File::open(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (set NEOX_SHARED)", path.display()));
    let reader: Box<dyn Read> = Box::new(zstd::Decoder::new(file).unwrap());
    BufReader::new(reader)
        .lines()
        .map(|line| {
            let doc: Value = serde_json::from_str(&line.unwrap()).unwrap();
            doc["text"].as_str().unwrap().to_string()
        })
        .filter(|text| !text.is_empty())
        .take(n)
        .collect()
}

#[test]
fn vocabulary_size_and_eod_are_gpt_neox_s() {
    for name in MODELS {
        let tok = load(name);
        let reference = summary(name);
        assert_eq!(
            tok.vocab_size() as u64,
            reference["vocab_size"].as_u64().unwrap()
        );
        assert_eq!(
            tok.eod().map(u64::from),
            reference["eod"].as_u64(),
            "{name}"
        );
        // Neither model has <|endoftext|>: GPT-NeoX's EOD is then <unk>.
        assert!(tok.description().contains("<unk>"), "{}", tok.description());
    }
}

#[test]
fn awkward_texts_give_gpt_neox_s_ids() {
    for name in MODELS {
        let tok = load(name);
        let reference = summary(name);
        let cases = reference["awkward"].as_array().unwrap();
        assert!(cases.len() > 10);
        for case in cases {
            let text = case["text"].as_str().unwrap();
            assert_eq!(encode(&tok, text), ids_of(&case["ids"]), "{name}: {text:?}");
        }
    }
}

#[test]
fn corpus_documents_give_gpt_neox_s_ids() {
    for name in MODELS {
        let tok = load(name);
        let eod = tok.eod().unwrap();
        let reference = reference_documents(name);
        assert!(
            reference.len() >= 40,
            "{name}: {} documents",
            reference.len()
        );
        let texts = corpus_texts(reference.len());
        let mut tokens = 0;
        for (i, (text, expected)) in texts.iter().zip(&reference).enumerate() {
            let mut ids = encode(&tok, text);
            ids.push(eod);
            assert!(ids == *expected, "{name}: document {i} differs");
            tokens += ids.len();
        }
        assert!(tokens > 10_000, "{name}: only {tokens} tokens compared");
    }
}

#[test]
fn bad_model_files_are_refused_with_the_file_and_the_reason() {
    let dir = std::env::temp_dir().join(format!("neox-spm-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let spec = |path: &Path| TokenizerSpec {
        kind: TokenizerKind::SentencePiece,
        vocab_file: Some(path.to_path_buf()),
        merge_file: None,
    };
    let err = |path: &Path| Tokenizer::load(&spec(path)).unwrap_err().to_string();

    // A tokenizer.json given as a .model file.
    let json = dir.join("tokenizer.json");
    std::fs::write(&json, br#"{"version": "1.0", "model": {}}"#).unwrap();
    let msg = err(&json);
    assert!(
        msg.contains("tokenizer.json") && msg.contains("SentencePiece"),
        "{msg}"
    );

    // A real model cut short.
    let model = std::fs::read(fixtures().join("sentencepiece-test.model")).unwrap();
    let cut = dir.join("cut.model");
    std::fs::write(&cut, &model[..model.len() / 2]).unwrap();
    let msg = err(&cut);
    assert!(msg.contains("cut.model") && msg.contains("byte"), "{msg}");

    // An empty file is a model with no pieces.
    let empty = dir.join("empty.model");
    std::fs::write(&empty, b"").unwrap();
    assert!(err(&empty).contains("no pieces"), "{}", err(&empty));

    // A missing file, and a missing --vocab-file.
    let msg = err(&dir.join("missing.model"));
    assert!(msg.contains("missing.model"), "{msg}");
    let msg = Tokenizer::load(&TokenizerSpec::new(TokenizerKind::SentencePiece))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("SPMTokenizer") && msg.contains("--vocab-file"),
        "{msg}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn decoding_gives_plain_text_back() {
    // Mistral's model: BPE with byte fallback (the emoji and CJK go through
    // byte pieces or whole pieces); the text has no characters NFKC changes.
    let tok = load("mistral-v1");
    let text = "Hello world, it's 42 degrees. 日本語 🙂 done";
    assert_eq!(tok.decode(&encode(&tok, text)).unwrap(), text);
    let err = tok.decode(&[1, 10_000_000]).unwrap_err().to_string();
    assert!(err.contains("10000000"), "{err}");
}
