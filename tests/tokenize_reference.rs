//! `neox-data tokenize` gives byte for byte what GPT-NeoX's
//! `preprocess_data.py` wrote (../shared/fixtures/neox-reference), with
//! tokenizer files given or built in, at several `--workers` values, on the
//! 300-document sample and on the whole shared e-mail corpus.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

mod common;
use common::{shared, tokenizer_file};

fn reference() -> PathBuf {
    shared().join("fixtures/neox-reference")
}

/// Run `neox-data tokenize --append-eod` on `input` into `prefix`, with the
/// given tokenizer arguments.
fn tokenize(input: &Path, prefix: &Path, workers: usize, tokenizer_args: &[String]) {
    let out = Command::new(env!("CARGO_BIN_EXE_neox-data"))
        .arg("tokenize")
        .arg("--input")
        .arg(input)
        .arg("--output-prefix")
        .arg(prefix)
        .args(["--append-eod", "--workers", &workers.to_string()])
        .args(tokenizer_args)
        .output()
        .expect("run neox-data");
    assert!(
        out.status.success(),
        "neox-data tokenize failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// GPT-2 from the given files, on the Hugging Face `tokenizers` library.
fn gpt2_files() -> Vec<String> {
    let mut a = args(&[
        "--engine",
        "tokenizers",
        "--tokenizer-type",
        "GPT2BPETokenizer",
        "--vocab-file",
    ]);
    a.push(tokenizer_file("gpt2-vocab.json"));
    a.push("--merge-file".into());
    a.push(tokenizer_file("gpt2-merges.txt"));
    a
}

/// GPT-NeoX-20B from the given file, on the Hugging Face `tokenizers` library.
fn neox20b_file() -> Vec<String> {
    let mut a = args(&[
        "--engine",
        "tokenizers",
        "--tokenizer-type",
        "HFTokenizer",
        "--vocab-file",
    ]);
    a.push(tokenizer_file("neox-20b.tokenizer.json"));
    a
}

/// Tokenize small.jsonl and compare both files with GPT-NeoX's.
fn check_small(name: &str, workers: usize, tokenizer_args: &[String]) {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join(format!("small_{name}"));
    tokenize(
        &reference().join("small.jsonl"),
        &prefix,
        workers,
        tokenizer_args,
    );
    for ext in ["bin", "idx"] {
        let file = format!("small_{name}_text_document.{ext}");
        let ours = std::fs::read(dir.path().join(&file)).unwrap();
        let theirs = std::fs::read(reference().join(&file)).unwrap();
        assert!(
            ours == theirs,
            "{file} (workers {workers}) differs from GPT-NeoX's: {} vs {} bytes",
            ours.len(),
            theirs.len()
        );
    }
}

#[test]
fn small_gpt2_with_files() {
    check_small("gpt2", 1, &gpt2_files());
}

/// The built-in files, on the default engine (the fast one where it applies).
#[test]
fn small_gpt2_built_in() {
    check_small("gpt2", 3, &args(&["--tokenizer-type", "GPT2BPETokenizer"]));
}

#[test]
fn small_neox20b_with_file() {
    check_small("neox20b", 2, &neox20b_file());
}

#[test]
fn small_neox20b_built_in() {
    check_small("neox20b", 1, &args(&["--tokenizer-type", "hftokenizer"]));
}

#[test]
fn small_char_level() {
    for workers in [1, 2, 5] {
        check_small(
            "char",
            workers,
            &args(&["--tokenizer-type", "CharLevelTokenizer"]),
        );
    }
}

/// The checksums GPT-NeoX's outputs over the whole corpus have.
fn reference_sums() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(reference().join("mail-SHA256SUMS")).unwrap();
    text.lines()
        .filter_map(|line| line.split_once("  "))
        .map(|(sum, file)| (file.to_string(), sum.to_string()))
        .collect()
}

fn check_mail(name: &str, workers: usize, tokenizer_args: &[String]) {
    let dir = tempfile::tempdir().unwrap();
    tokenize(
        &shared().join("data/mail.jsonl.zst"),
        &dir.path().join(format!("mail_{name}")),
        workers,
        tokenizer_args,
    );
    let sums: Vec<_> = reference_sums()
        .into_iter()
        .filter(|(file, _)| file.starts_with(&format!("mail_{name}_")))
        .collect();
    assert_eq!(sums.len(), 2, "mail-SHA256SUMS lists the .bin and .idx");
    for (file, expected) in sums {
        let bytes = std::fs::read(dir.path().join(&file)).unwrap();
        let got = format!("{:x}", Sha256::digest(&bytes));
        assert_eq!(
            got, expected,
            "{file} (workers {workers}) differs from GPT-NeoX's"
        );
    }
}

#[test]
fn whole_corpus_gpt2() {
    check_mail("gpt2", 2, &args(&["--tokenizer-type", "GPT2BPETokenizer"]));
}

#[test]
fn whole_corpus_neox20b() {
    check_mail("neox20b", 1, &args(&["--tokenizer-type", "HFTokenizer"]));
}

/// SPMTokenizer on a SentencePiece model of `tokenize/tests/fixtures/spm/`:
/// the .bin/.idx of the whole corpus have the checksums GPT-NeoX's
/// `SentencePieceTokenizer` gave (`scripts/spm_reference.py`).
fn check_mail_spm(model: &str, workers: usize) {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tokenize/tests/fixtures/spm");
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures.join(format!("{model}.json"))).unwrap(),
    )
    .unwrap();
    let corpus = &summary["corpus"];
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("mail_spm");
    let model_file = fixtures.join(format!("{model}.model"));
    tokenize(
        &shared().join("data/mail.jsonl.zst"),
        &prefix,
        workers,
        &[
            "--tokenizer-type".into(),
            "SPMTokenizer".into(),
            "--vocab-file".into(),
            model_file.to_string_lossy().into_owned(),
        ],
    );
    let bin = std::fs::read(dir.path().join("mail_spm_text_document.bin")).unwrap();
    // u16 tokens: both models have fewer than 65,500 pieces.
    assert_eq!(
        bin.len() as u64,
        2 * corpus["tokens"].as_u64().unwrap(),
        "{model}: token count"
    );
    for (ext, key) in [("bin", "bin_sha256"), ("idx", "idx_sha256")] {
        let bytes =
            std::fs::read(dir.path().join(format!("mail_spm_text_document.{ext}"))).unwrap();
        let got = format!("{:x}", Sha256::digest(&bytes));
        assert_eq!(
            got,
            corpus[key].as_str().unwrap(),
            "{model}: .{ext} (workers {workers}) differs from GPT-NeoX's"
        );
    }
}

#[test]
fn whole_corpus_spm_bpe_mistral() {
    check_mail_spm("mistral-v1", 2);
}

#[test]
fn whole_corpus_spm_unigram() {
    check_mail_spm("sentencepiece-test", 1);
}
