//! `neox-data tokenize` over every input format, built here, and over bad
//! input: each format must give exactly the shards that the same documents
//! give as plain JSON lines; bad input must be reported with the file and
//! the line or byte offset, and leave no output behind.
//!
//! The char-level tokenizer (UTF-8 bytes) keeps these fast and exact.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use flate2::Compression;
use flate2::write::GzEncoder;
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use serde_json::json;
use tempfile::TempDir;

/// Documents with what tends to break readers: non-ASCII, quotes and
/// escapes, CR LF, long lines.
fn texts() -> Vec<String> {
    vec![
        "First document.\nWith two lines.".to_string(),
        "Ünïcödé, 日本語, emoji 🙂 and \"quotes\" \\ back\\slash".to_string(),
        "tabs\tand\r\nCRLF".to_string(),
        "x".repeat(100_000),
        "last".to_string(),
    ]
}

fn jsonl(texts: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    for t in texts {
        out.extend(serde_json::to_vec(&json!({ "text": t, "meta": { "n": 1 } })).unwrap());
        out.push(b'\n');
    }
    out
}

fn neox_data(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_neox-data"))
        .args(args)
        .output()
        .expect("run neox-data")
}

/// Tokenize (char level, EOD appended) and return stdout, or panic with stderr.
fn tokenize_ok(inputs: &str, prefix: &Path, extra: &[&str]) -> String {
    let out = tokenize(inputs, prefix, extra);
    assert!(
        out.status.success(),
        "tokenize {inputs} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn tokenize(inputs: &str, prefix: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "tokenize",
        "--input",
        inputs,
        "--output-prefix",
        prefix.to_str().unwrap(),
        "--tokenizer-type",
        "CharLevelTokenizer",
        "--append-eod",
    ];
    args.extend_from_slice(extra);
    neox_data(&args)
}

fn shard(prefix: &Path, key: &str) -> (Vec<u8>, Vec<u8>) {
    let base = format!("{}_{key}_document", prefix.display());
    (
        fs::read(format!("{base}.bin")).unwrap(),
        fs::read(format!("{base}.idx")).unwrap(),
    )
}

struct Case {
    dir: TempDir,
}

impl Case {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, bytes: &[u8]) -> String {
        let path = self.path(name);
        fs::write(&path, bytes).unwrap();
        path.to_string_lossy().into_owned()
    }

    /// The shards of `texts` written as plain JSON lines.
    fn expected(&self, texts: &[String]) -> (Vec<u8>, Vec<u8>) {
        let input = self.write("expected-input.jsonl", &jsonl(texts));
        let prefix = self.path("expected");
        tokenize_ok(&input, &prefix, &[]);
        shard(&prefix, "text")
    }

    /// The shards of `input`.
    fn got(&self, input: &str, extra: &[&str]) -> (Vec<u8>, Vec<u8>) {
        let prefix = self.path("got");
        tokenize_ok(input, &prefix, extra);
        shard(&prefix, "text")
    }
}

fn zst(bytes: &[u8]) -> Vec<u8> {
    zstd::encode_all(bytes, 3).unwrap()
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn tar(members: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, bytes) in members {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        builder
            .append_data(&mut header, name, bytes.as_slice())
            .unwrap();
    }
    builder.into_inner().unwrap()
}

fn zip(members: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    writer.add_directory("docs/", options).unwrap();
    for (name, bytes) in members {
        writer.start_file(*name, options).unwrap();
        writer.write_all(bytes).unwrap();
    }
    writer.finish().unwrap().into_inner()
}

#[test]
fn compressed_json_lines_give_the_same_shards() {
    let case = Case::new();
    let texts = texts();
    let expected = case.expected(&texts);
    for name in ["a.jsonl.zst", "a.jsonl.gz", "a.json.gz"] {
        let bytes = if name.ends_with(".zst") {
            zst(&jsonl(&texts))
        } else {
            gz(&jsonl(&texts))
        };
        let input = case.write(name, &bytes);
        assert!(case.got(&input, &[]) == expected, "{name}");
    }
}

#[test]
fn several_inputs_are_read_in_the_order_given() {
    let case = Case::new();
    let texts = texts();
    let expected = case.expected(&texts);
    let a = case.write("a.jsonl", &jsonl(&texts[..2]));
    let b = case.write("b.jsonl.zst", &zst(&jsonl(&texts[2..])));
    for workers in ["1", "3"] {
        assert!(case.got(&format!("{a},{b}"), &["--workers", workers]) == expected);
    }
}

#[test]
fn tar_archives_read_members_by_name() {
    let case = Case::new();
    let texts = texts();
    let expected = case.expected(&texts);
    // Members of line formats are read line by line; others are one document each.
    let members = [
        ("part/a.jsonl", jsonl(&texts[..2])),
        ("part/b.txt", texts[2].clone().into_bytes()),
        ("part/c.jsonl.zst", zst(&jsonl(&texts[3..4]))),
        ("part/d", texts[4].clone().into_bytes()),
    ];
    let plain = case.write("a.tar", &tar(&members));
    assert!(case.got(&plain, &[]) == expected, ".tar");
    let gzipped = case.write("a.tar.gz", &gz(&tar(&members)));
    assert!(case.got(&gzipped, &[]) == expected, ".tar.gz");
    // lm_dataformat's .jsonl.zst.tar: every member is zstd JSON lines.
    let pile = case.write(
        "a.jsonl.zst.tar",
        &tar(&[
            ("00", zst(&jsonl(&texts[..3]))),
            ("01", zst(&jsonl(&texts[3..]))),
        ]),
    );
    assert!(case.got(&pile, &[]) == expected, ".jsonl.zst.tar");
}

#[test]
fn zip_members_are_documents_or_json_lines() {
    let case = Case::new();
    let texts = texts();
    let expected = case.expected(&texts);
    let input = case.write(
        "a.zip",
        &zip(&[
            ("docs/1.txt", texts[0].clone().into_bytes()),
            ("docs/rest.jsonl", jsonl(&texts[1..])),
        ]),
    );
    assert!(case.got(&input, &[]) == expected);
}

#[test]
fn txt_files_and_directories() {
    let case = Case::new();
    let texts = texts();
    let dir = case.path("corpus");
    fs::create_dir(&dir).unwrap();
    for (i, t) in texts.iter().enumerate() {
        fs::write(dir.join(format!("{i}.txt")), t).unwrap();
    }
    fs::write(dir.join("notes.md"), "not a corpus file").unwrap();
    // Python's text mode reads CR LF as LF.
    let mut read_as = texts.clone();
    read_as[2] = read_as[2].replace("\r\n", "\n");
    let expected = case.expected(&read_as);
    assert!(case.got(dir.to_str().unwrap(), &[]) == expected);
}

#[test]
fn parquet_rows_in_batches() {
    let case = Case::new();
    // Enough rows for several batches, a null (empty, dropped) among them.
    let rows: Vec<Option<String>> = (0..2500)
        .map(|i| (i != 7).then(|| format!("row {i}: {}", "ab".repeat(i % 13))))
        .collect();
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("text", DataType::Utf8, true),
    ]));
    let ids: Vec<String> = (0..rows.len()).map(|i| i.to_string()).collect();
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from(ids)) as ArrayRef,
            Arc::new(StringArray::from(rows.clone())) as ArrayRef,
        ],
    )
    .unwrap();
    let path = case.path("a.parquet");
    let props = WriterProperties::builder()
        .set_compression(parquet::basic::Compression::SNAPPY)
        .set_max_row_group_row_count(Some(1000))
        .build();
    let mut writer =
        ArrowWriter::try_new(File::create(&path).unwrap(), schema, Some(props)).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();

    let texts: Vec<String> = rows.into_iter().map(Option::unwrap_or_default).collect();
    let expected = case.expected(&texts);
    assert!(case.got(path.to_str().unwrap(), &[]) == expected);

    let out = tokenize(
        path.to_str().unwrap(),
        &case.path("k"),
        &["--jsonl-keys", "body"],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("a.parquet") && err.contains("no column \"body\""),
        "{err}"
    );
}

#[test]
fn each_key_gets_its_own_shards() {
    let case = Case::new();
    let mut lines = Vec::new();
    for (q, a) in [("q1", "a1"), ("", "a2"), ("q3", "a3")] {
        lines.extend(serde_json::to_vec(&json!({"question": q, "answer": a})).unwrap());
        lines.push(b'\n');
    }
    let input = case.write("qa.jsonl", &lines);
    let prefix = case.path("qa");
    let stdout = tokenize_ok(&input, &prefix, &["--jsonl-keys", "question", "answer"]);
    assert!(stdout.contains("1 empty"), "{stdout}");
    let q = case.expected(&["q1".into(), "q3".into()]);
    assert!(shard(&prefix, "question") == q);
    let a = case.expected(&["a1".into(), "a2".into(), "a3".into()]);
    assert!(shard(&prefix, "answer") == a);
}

#[test]
fn empty_documents_are_dropped_and_max_docs_stops_early() {
    let case = Case::new();
    let texts: Vec<String> = ["a", "", "b", "c", "d"].map(String::from).to_vec();
    let input = case.write("e.jsonl", &jsonl(&texts));
    let expected = case.expected(&["a".into(), "b".into()]);
    assert!(case.got(&input, &["--max-docs", "3"]) == expected);
}

#[test]
fn malformed_lines_are_counted_and_named_or_fatal_with_strict() {
    let case = Case::new();
    let mut input = jsonl(&["one".to_string()]);
    input.extend_from_slice(b"{\"text\": \"unterminated\n{\"body\": \"no text key\"}\n");
    input.extend(jsonl(&["two".to_string()]));
    let path = case.write("bad.jsonl", &input);
    let expected = case.expected(&["one".into(), "two".into()]);

    let out = tokenize(&path, &case.path("got"), &[]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.jsonl line 2"), "{stderr}");
    assert!(
        stderr.contains("bad.jsonl line 3") && stderr.contains("no key \"text\""),
        "{stderr}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("2 malformed"));
    assert!(shard(&case.path("got"), "text") == expected);

    let prefix = case.path("strict");
    let out = tokenize(&path, &prefix, &["--strict"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.jsonl line 2") && stderr.contains("--strict"),
        "{stderr}"
    );
    assert_no_output(&prefix);
}

fn assert_no_output(prefix: &Path) {
    let dir = prefix.parent().unwrap();
    let stem = prefix.file_name().unwrap().to_string_lossy().into_owned();
    let left: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&stem) || n.contains("tmp"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn invalid_utf8_is_fatal_and_names_file_and_offset() {
    let case = Case::new();
    let mut input = jsonl(&["fine".to_string()]);
    let bad_at = input.len() + 12;
    input.extend_from_slice(b"{\"text\": \"ab\xff\"}\n");
    let path = case.write("latin1.jsonl", &input);
    let prefix = case.path("out");
    let out = tokenize(&path, &prefix, &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("latin1.jsonl line 2") && stderr.contains(&format!("byte offset {bad_at}")),
        "{stderr}"
    );
    assert_no_output(&prefix);

    let raw = case.write("raw.txt", b"ok\xc3(");
    let out = tokenize(&raw, &case.path("raw"), &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("raw.txt") && stderr.contains("byte offset 2"),
        "{stderr}"
    );
}

#[test]
fn corrupt_compressed_streams_are_fatal_and_name_the_file() {
    let case = Case::new();
    let texts: Vec<String> = (0..2000)
        .map(|i| format!("document number {i} {}", i * 7919))
        .collect();
    let full = zst(&jsonl(&texts));
    let truncated = case.write("cut.jsonl.zst", &full[..full.len() / 2]);
    let prefix = case.path("out");
    let out = tokenize(&truncated, &prefix, &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cut.jsonl.zst") && stderr.contains("offset"),
        "{stderr}"
    );
    assert_no_output(&prefix);

    let mut garbled = gz(&jsonl(&texts));
    let middle = garbled.len() / 2;
    garbled[middle..middle + 64].fill(0x55);
    let path = case.write("garbled.jsonl.gz", &garbled);
    let out = tokenize(&path, &case.path("gz"), &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("garbled.jsonl.gz") && stderr.contains("offset"),
        "{stderr}"
    );
}

#[test]
fn bad_arguments_are_refused_with_an_explanation() {
    let case = Case::new();
    let input = case.write("a.jsonl", &jsonl(&["x".to_string()]));
    let cases: [(&[&str], &str); 3] = [
        (&["--ftfy"], "ftfy"),
        (&["--dataset-impl", "lazy"], "mmap"),
        (&["--workers", "0"], "--workers"),
    ];
    for (extra, needle) in cases {
        let out = tokenize(&input, &case.path("x"), extra);
        assert!(!out.status.success(), "{extra:?} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(needle), "{extra:?}: {stderr}");
    }
    let prefix = case.path("x");
    let tokenizers: [(&[&str], &str); 3] = [
        (&["TiktokenTokenizer"], "encoding"),
        (&["BertTokenizer"], "GPT2BPETokenizer"),
        (
            &["GPT2BPETokenizer", "--vocab-file", &input],
            "--merge-file",
        ),
    ];
    for (tokenizer, needle) in tokenizers {
        let mut args = vec!["tokenize", "--input", &input, "--output-prefix"];
        args.push(prefix.to_str().unwrap());
        args.push("--tokenizer-type");
        args.extend_from_slice(tokenizer);
        let out = neox_data(&args);
        assert!(!out.status.success(), "{tokenizer:?} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(needle), "{tokenizer:?}: {stderr}");
    }
    let unknown = case.write("a.csv", b"text\nx\n");
    let out = tokenize(&unknown, &case.path("x"), &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown input format"));
    let out = tokenize("/nonexistent/corpus.jsonl", &case.path("x"), &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/corpus.jsonl"));
}

#[test]
fn tiktoken_encodings_write_int32_when_the_vocabulary_is_large() {
    let case = Case::new();
    let input = case.write("a.jsonl", &jsonl(&["Hello world".to_string()]));
    for (encoding, dtype_code) in [("r50k_base", 8u8), ("cl100k_base", 4u8)] {
        let prefix = case.path(encoding);
        let out = neox_data(&[
            "tokenize",
            "--input",
            &input,
            "--output-prefix",
            prefix.to_str().unwrap(),
            "--tokenizer-type",
            "TiktokenTokenizer",
            "--vocab-file",
            encoding,
            "--append-eod",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (bin, idx) = shard(&prefix, "text");
        assert_eq!(idx[17], dtype_code, "{encoding}");
        let size = if dtype_code == 8 { 2 } else { 4 };
        // "Hello world" is two tokens in both encodings, then EOD.
        assert_eq!(bin.len(), 3 * size, "{encoding}");
    }
}
