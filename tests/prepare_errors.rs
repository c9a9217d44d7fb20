//! Error messages through the binary: an operating-system error is printed
//! once, after the file it concerns (not repeated by each layer of the chain).

mod common_http;

use common_http::fixtures::*;

/// stderr of a failed run, checked to name `path` and the OS error exactly once.
fn once(cmd: &mut std::process::Command, path: &str) -> String {
    let out = run(cmd);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(said.matches("(os error 2)").count(), 1, "{said}");
    assert!(said.contains(path), "{said}");
    said
}

#[test]
fn a_missing_file_is_reported_once_with_its_path() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("gone.jsonl");
    let shown = missing.display().to_string();
    let data = tmp.path().join("data");

    // A local source of a corpus.
    let said = once(prepare("enron", &data).arg("--url").arg(&missing), &shown);
    assert!(said.contains("cannot read the local source"), "{said}");

    // An input of `tokenize`.
    once(
        neox_data()
            .args([
                "tokenize",
                "--tokenizer-type",
                "CharLevelTokenizer",
                "--input",
            ])
            .arg(&missing)
            .arg("--output-prefix")
            .arg(tmp.path().join("out")),
        &shown,
    );

    // A catalog file.
    let catalog = tmp.path().join("gone.toml");
    let said = once(
        prepare("x", &data).arg("--catalog").arg(&catalog),
        &catalog.display().to_string(),
    );
    assert!(said.contains("cannot read the catalog"), "{said}");

    // A tokenizer file, and a shard to inspect.
    once(
        neox_data()
            .args([
                "tokenize",
                "--tokenizer-type",
                "HFTokenizer",
                "--vocab-file",
            ])
            .arg(&missing)
            .arg("--input")
            .arg(&missing)
            .arg("--output-prefix")
            .arg(tmp.path().join("out")),
        &shown,
    );
    let shard = tmp.path().join("gone_text_document");
    once(
        neox_data().arg("inspect").arg(&shard),
        &shard.display().to_string(),
    );
}
