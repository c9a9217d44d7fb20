//! The `custom_corpus` example (a `neox-data` with one more corpus written in
//! Rust) is built by `cargo test` and run here against a local server.

mod common_http;

use std::path::PathBuf;
use std::process::Command;

use common_http::Server;
use common_http::fixtures::*;

fn example() -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_neox-data"));
    let path = bin
        .parent()
        .expect("the binary has a folder")
        .join("examples")
        .join(format!("custom_corpus{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is missing: `cargo test` builds examples; alone, run `cargo build --example custom_corpus` first",
        path.display()
    );
    path
}

#[test]
fn the_example_registers_a_rust_corpus_that_lists_and_prepares() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let listed = run_ok(
        isolated(Command::new(example()))
            .args(["list", "--json", "--data-dir"])
            .arg(&data),
    );
    let rows: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    let row = rows
        .iter()
        .find(|r| r["name"] == "tiny_shakespeare")
        .expect("registered");
    assert_eq!(row["compressed_bytes"], 1_115_394);
    assert!(
        rows.iter().any(|r| r["name"] == "enron"),
        "the built-ins stay"
    );

    let play = "First Citizen:\nBefore we proceed any further, hear me speak.\n\n\
                All:\nSpeak, speak.\n\nFirst Citizen:\nYou are all resolved rather to die than to famish?\n";
    let server = Server::start();
    server.put("input.txt", play.as_bytes().to_vec());
    let out = run_ok(
        isolated(Command::new(example()))
            .args([
                "prepare",
                "tiny_shakespeare",
                "--retry-wait",
                "0.05",
                "--url",
            ])
            .arg(format!("{}input.txt", server.base_url()))
            .arg("--data-dir")
            .arg(&data),
    );
    // The overridden unpack step made one document per speech.
    let m = manifest(
        &data.join("tiny_shakespeare"),
        "tiny_shakespeare_text_document",
    );
    assert_eq!(m["documents"], 3, "{}", text(&out));
    let speeches = data.join("tiny_shakespeare/speeches.jsonl");
    let (bin, idx) = tokenized(&speeches, tmp.path());
    assert_eq!(
        read_pair(&data.join("tiny_shakespeare/tiny_shakespeare_text_document")),
        (bin, idx)
    );
}
