//! The main job on the shared e-mail corpus (`../shared/data/mail.jsonl.zst`),
//! served by a local HTTP server under Enron's file name: prepare, list, inspect.

mod common_http;

use std::path::PathBuf;

use common_http::Server;
use common_http::fixtures::*;

mod common;

fn shared_corpus() -> PathBuf {
    common::shared().join("data/mail.jsonl.zst")
}

#[test]
fn the_shared_mail_corpus_prepares_as_enron_from_a_local_mirror() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let corpus = std::fs::read(shared_corpus()).unwrap();
    let server = Server::start();
    server.put("enron_emails.jsonl.zst", corpus.clone());

    let out = run_ok(
        prepare("enron", &data)
            .arg("--mirror")
            .arg(server.base_url())
            .arg("--sha256")
            .arg(format!("enron_emails.jsonl.zst={}", sha256(&corpus))),
    );
    let folder = data.join("enron");
    let m = manifest(&folder, "enron_text_document");
    // The shared README: 6,046 e-mails, none empty.
    assert_eq!(m["documents"], 6046, "{}", text(&out));
    assert_eq!(m["compressed_bytes"], corpus.len() as u64);
    let source = tmp.path().join("enron_emails.jsonl.zst");
    std::fs::write(&source, &corpus).unwrap();
    assert_eq!(
        read_pair(&folder.join("enron_text_document")),
        tokenized(&source, tmp.path())
    );

    let table = text(&run_ok(neox_data().args(["list", "--data-dir"]).arg(&data)));
    let line = table.lines().find(|l| l.starts_with("enron ")).unwrap();
    assert!(
        line.contains("6,046") && line.ends_with("measured"),
        "{line}"
    );
    let inspected = text(&run_ok(
        neox_data()
            .arg("inspect")
            .arg(folder.join("enron_text_document")),
    ));
    assert!(inspected.contains("6046"), "{inspected}");
}
