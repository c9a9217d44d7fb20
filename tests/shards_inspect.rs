//! `neox-data inspect` end to end: GPT-NeoX's own shards report counts derived
//! here independently (from the source text and the file sizes), and every
//! bad shard is refused with a message naming the file.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use neox_indexed::{DType, IndexedWriter, bin_path, idx_path};
use serde_json::Value;

mod common;

fn reference_dir() -> PathBuf {
    common::shared().join("fixtures/neox-reference")
}

fn reference(name: &str) -> PathBuf {
    reference_dir().join(format!("small_{name}_text_document"))
}

fn inspect(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_neox-data"))
        .arg("inspect")
        .args(args)
        .output()
        .expect("run neox-data")
}

fn inspect_json(prefix: &Path) -> Value {
    let out = inspect(&["--json", prefix.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "inspect {} failed: {}",
        prefix.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("inspect --json prints JSON")
}

fn refusal(prefix: &Path) -> String {
    let out = inspect(&[prefix.to_str().unwrap()]);
    assert!(
        !out.status.success(),
        "inspect accepted {}",
        prefix.display()
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Nearest rank, by sorting: the definition `inspect` documents.
fn percentile(sorted: &[u64], p: f64) -> u64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank - 1]
}

#[test]
fn char_level_shard_reports_what_the_source_text_implies() {
    // CharLevelTokenizer: one token per UTF-8 byte, plus the EOD of --append-eod.
    let jsonl = fs::read_to_string(reference_dir().join("small.jsonl")).unwrap();
    let mut lengths: Vec<u64> = jsonl
        .lines()
        .map(|l| {
            let doc: Value = serde_json::from_str(l).unwrap();
            doc["text"].as_str().unwrap().len() as u64 + 1
        })
        .collect();
    lengths.sort_unstable();
    let total: u64 = lengths.iter().sum();

    let r = inspect_json(&reference("char"));
    assert_eq!(r["dtype"], "uint16");
    assert_eq!(r["documents"], lengths.len() as u64);
    assert_eq!(r["sequences"], lengths.len() as u64);
    assert_eq!(r["tokens"], total);
    let d = &r["document_tokens"];
    assert_eq!(d["min"], lengths[0]);
    assert_eq!(d["max"], *lengths.last().unwrap());
    assert_eq!(d["p50"], percentile(&lengths, 50.0));
    assert_eq!(d["p90"], percentile(&lengths, 90.0));
    assert_eq!(d["p99"], percentile(&lengths, 99.0));
    let mean = total as f64 / lengths.len() as f64;
    assert!((d["mean"].as_f64().unwrap() - mean).abs() < 1e-9);
}

#[test]
fn bpe_shards_report_counts_the_file_sizes_imply() {
    for name in ["gpt2", "neox20b"] {
        let prefix = reference(name);
        let idx_len = fs::metadata(idx_path(&prefix)).unwrap().len();
        let bin_len = fs::metadata(bin_path(&prefix)).unwrap().len();
        // One sequence per document: 34 + 12 N + 8 (N + 1) bytes of .idx; u16 tokens.
        let n = (idx_len - 42) / 20;
        let r = inspect_json(&prefix);
        assert_eq!(r["sequences"], n, "{name}");
        assert_eq!(r["documents"], n, "{name}");
        assert_eq!(r["tokens"], bin_len / 2, "{name}");
        assert_eq!(r["bin_bytes"], bin_len, "{name}");
        assert_eq!(r["idx_bytes"], idx_len, "{name}");
        assert_eq!(r["sequences_outside_documents"], 0, "{name}");
    }
}

#[test]
fn a_bin_or_idx_path_means_its_prefix() {
    let prefix = reference("gpt2");
    let by_prefix = inspect_json(&prefix);
    assert_eq!(inspect_json(&bin_path(&prefix)), by_prefix);
    assert_eq!(inspect_json(&idx_path(&prefix)), by_prefix);
}

#[test]
fn show_prints_the_first_tokens_of_the_first_sequences() {
    let jsonl = fs::read_to_string(reference_dir().join("small.jsonl")).unwrap();
    let first: Value = serde_json::from_str(jsonl.lines().next().unwrap()).unwrap();
    let bytes = first["text"].as_str().unwrap().as_bytes();
    let prefix = reference("char");
    let out = inspect(&[
        "--json",
        "--show",
        "2",
        "--show-tokens",
        "5",
        prefix.to_str().unwrap(),
    ]);
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    let shown = r["shown"].as_array().unwrap();
    assert_eq!(shown.len(), 2);
    let ids: Vec<u64> = bytes[..5].iter().map(|&b| u64::from(b)).collect();
    assert_eq!(shown[0]["tokens"], serde_json::json!(ids));
    assert_eq!(shown[0]["size"], bytes.len() as u64 + 1);
    let text =
        String::from_utf8(inspect(&["--show", "1", prefix.to_str().unwrap()]).stdout).unwrap();
    let line = format!("sequence 0 ({} tokens): {}", bytes.len() + 1, bytes[0]);
    assert!(text.contains(&line), "{text}");
}

#[test]
fn empty_shard_is_reported_as_empty() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("empty");
    IndexedWriter::create(&prefix, DType::U16)
        .unwrap()
        .finish()
        .unwrap();
    let r = inspect_json(&prefix);
    assert_eq!(
        (r["sequences"].as_u64(), r["documents"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(r["tokens"], 0);
    assert_eq!(r["document_tokens"], Value::Null);
    let out = inspect(&[prefix.to_str().unwrap()]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("no documents"));
}

/// A private copy of a reference shard to damage.
fn copy(dir: &Path, name: &str) -> PathBuf {
    let to = dir.join(name);
    fs::copy(bin_path(&reference(name)), bin_path(&to)).unwrap();
    fs::copy(idx_path(&reference(name)), idx_path(&to)).unwrap();
    to
}

fn edit(path: PathBuf, f: impl FnOnce(&mut Vec<u8>)) {
    let mut b = fs::read(&path).unwrap();
    f(&mut b);
    fs::write(path, b).unwrap();
}

#[test]
fn damaged_shards_are_refused_with_the_file_and_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    type Damage = fn(&Path);
    let cases: [(&str, Damage, &str); 8] = [
        (
            "truncated .idx",
            |p| edit(idx_path(p), |b| b.truncate(512)),
            "gpt2.idx: truncated: header says 300 sequences",
        ),
        (
            "truncated .bin",
            |p| edit(bin_path(p), |b| b.truncate(b.len() - 10)),
            "gpt2.bin: truncated",
        ),
        (
            "wrong magic",
            |p| edit(idx_path(p), |b| b[..7].copy_from_slice(b"NOTIDX!")),
            "wrong magic",
        ),
        (
            "wrong version",
            |p| edit(idx_path(p), |b| b[9] = 3),
            "unsupported version 3",
        ),
        (
            "unknown dtype",
            |p| edit(idx_path(p), |b| b[17] = 6),
            "unknown dtype code 6",
        ),
        (
            "size overruns .bin",
            |p| {
                edit(idx_path(p), |b| {
                    b[34 + 4 * 299..34 + 4 * 300].copy_from_slice(&i32::MAX.to_le_bytes())
                })
            },
            "truncated: the .idx sizes need",
        ),
        (
            "old TNTIDX",
            |p| edit(idx_path(p), |b| b[..8].copy_from_slice(b"TNTIDX\0\0")),
            "old-style TNTIDX",
        ),
        (
            "missing .bin",
            |p| fs::remove_file(bin_path(p)).unwrap(),
            "gpt2.bin: open",
        ),
    ];
    for (what, damage, expected) in cases {
        let prefix = copy(dir.path(), "gpt2");
        damage(&prefix);
        let err = refusal(&prefix);
        assert!(
            err.contains(expected),
            "{what}: expected {expected:?} in {err:?}"
        );
        assert!(!err.contains("panicked"), "{what}: {err}");
    }
}
