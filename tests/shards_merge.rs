//! `neox-data merge` end to end: document boundaries kept, dtypes checked,
//! existing output protected.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use neox_indexed::{DType, IndexedDataset, IndexedWriter, bin_path, idx_path};

mod common;

fn reference(name: &str) -> PathBuf {
    common::shared().join(format!(
        "fixtures/neox-reference/small_{name}_text_document"
    ))
}

fn neox_data(args: &[&Path]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_neox-data"))
        .args(args)
        .output()
        .expect("run neox-data")
}

fn merge(output: &Path, inputs: &[PathBuf], force: bool) -> Output {
    let mut args: Vec<&Path> = vec![Path::new("merge"), Path::new("--output-prefix"), output];
    if force {
        args.push(Path::new("--force"));
    }
    args.extend(inputs.iter().map(PathBuf::as_path));
    neox_data(&args)
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "neox-data failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn failed(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "neox-data succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn merged_reference_shards_keep_every_document() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("all_text_document");
    // Inputs named by prefix and by file: both work.
    let inputs = vec![reference("gpt2"), bin_path(&reference("neox20b"))];
    let printed = ok(&merge(&out, &inputs, false));
    let parts = [reference("gpt2"), reference("neox20b")].map(|p| IndexedDataset::open(p).unwrap());
    let merged = IndexedDataset::open(&out).unwrap();
    let n = parts[0].len() + parts[1].len();
    assert_eq!(merged.len(), n);
    assert_eq!(
        merged.num_documents(),
        parts[0].num_documents() + parts[1].num_documents()
    );
    assert_eq!(
        merged.doc_idx().to_vec(),
        (0..=n as i64).collect::<Vec<_>>()
    );
    assert_eq!(
        merged.num_tokens(),
        parts[0].num_tokens() + parts[1].num_tokens()
    );
    let k = parts[0].len();
    assert_eq!(merged.get(k).unwrap(), parts[1].get(0).unwrap());
    assert_eq!(merged.get(k - 1).unwrap(), parts[0].get(k - 1).unwrap());
    assert!(printed.contains(&format!("{n} documents")), "{printed}");
}

#[test]
fn existing_output_needs_force() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    ok(&merge(&out, &[reference("gpt2")], false));
    let before = fs::read(idx_path(&out)).unwrap();
    let err = failed(&merge(&out, &[reference("char")], false));
    assert!(
        err.contains("out.bin already exists") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(fs::read(idx_path(&out)).unwrap(), before);
    ok(&merge(&out, &[reference("char")], true));
    assert_eq!(
        fs::read(idx_path(&out)).unwrap(),
        fs::read(idx_path(&reference("char"))).unwrap()
    );
    assert_eq!(
        fs::read(bin_path(&out)).unwrap(),
        fs::read(bin_path(&reference("char"))).unwrap()
    );
}

#[test]
fn different_dtypes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let wide = dir.path().join("wide");
    let mut w = IndexedWriter::create(&wide, DType::I32).unwrap();
    w.add_document(&[100_000, 1]).unwrap();
    w.finish().unwrap();
    let out = dir.path().join("out");
    let err = failed(&merge(&out, &[reference("gpt2"), wide], false));
    assert!(
        err.contains("wide.idx") && err.contains("int32") && err.contains("uint16"),
        "{err}"
    );
    assert!(!bin_path(&out).exists() && !idx_path(&out).exists());
}

#[test]
fn corrupt_or_missing_inputs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let err = failed(&merge(&out, &[dir.path().join("absent")], false));
    assert!(err.contains("absent.idx"), "{err}");
    let bad = dir.path().join("bad");
    fs::write(idx_path(&bad), b"TNTIDX\0\0 old").unwrap();
    fs::write(bin_path(&bad), b"").unwrap();
    let err = failed(&merge(&out, &[reference("gpt2"), bad], false));
    assert!(err.contains("bad.idx") && err.contains("TNTIDX"), "{err}");
    assert!(!idx_path(&out).exists());
    let err = failed(&neox_data(&[
        Path::new("merge"),
        Path::new("--output-prefix"),
        &out,
    ]));
    assert!(err.contains("INPUT"), "{err}");
}
