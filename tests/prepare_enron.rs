//! `neox-data prepare enron` end to end, against a real HTTP server on
//! 127.0.0.1 serving a corpus in the Enron layout.

mod common_http;

use common_http::Server;
use common_http::fixtures::*;

const FILE: &str = "enron_emails.jsonl.zst";

#[test]
fn prepare_enron_from_a_mirror_equals_tokenize_and_records_a_manifest() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let corpus = enron_zst(120);
    let server = Server::start();
    server.put(FILE, corpus.clone());

    let out = run_ok(
        prepare("enron", &data)
            .arg("--mirror")
            .arg(server.base_url()),
    );
    let said = text(&out);
    assert!(said.contains("enron: prepared"), "{said}");
    // The registry's published figure is for the real Enron file: the difference is reported.
    assert!(
        said.contains("not the files the registry describes"),
        "{said}"
    );

    let folder = data.join("enron");
    let source = tmp.path().join(FILE);
    std::fs::write(&source, &corpus).unwrap();
    let (bin, idx) = tokenized(&source, tmp.path());
    assert_eq!(
        read_pair(&folder.join("enron_text_document")),
        (bin.clone(), idx)
    );

    let m = manifest(&folder, "enron_text_document");
    assert_eq!(m["corpus"], "enron");
    assert_eq!(
        m["sources"][0]["url"],
        format!("{}{FILE}", server.base_url())
    );
    assert_eq!(m["sources"][0]["sha256"], sha256(&corpus));
    assert_eq!(m["compressed_bytes"], corpus.len() as u64);
    assert_eq!(m["downloaded_bytes"], corpus.len() as u64);
    // 120 e-mails, one of them empty (dropped, as GPT-NeoX drops it).
    assert_eq!(m["documents"], 119);
    assert_eq!(m["tokens"], bin.len() as u64 / 2);
    assert_eq!(m["dtype"], "uint16");
    let jsonl = enron_jsonl(120);
    let text_bytes: usize = jsonl
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            serde_json::from_slice::<serde_json::Value>(l).unwrap()["text"]
                .as_str()
                .unwrap()
                .len()
        })
        .sum();
    assert_eq!(m["text_bytes"], text_bytes as u64);
    assert_eq!(m["outputs"][0]["sha256"], sha256(&bin));
    assert!(
        m["tokenizer"]
            .as_str()
            .unwrap()
            .contains("GPT2BPETokenizer")
    );
    // Nothing half-made is left next to the result.
    let files = listing(&folder);
    assert!(
        !files
            .iter()
            .any(|f| f.ends_with(".part") || f.contains("tmp")),
        "{files:?}"
    );

    // A second run does nothing and says so; the server is not asked again.
    let requests = server.requests().len();
    let again = text(&run_ok(
        prepare("enron", &data)
            .arg("--mirror")
            .arg(server.base_url()),
    ));
    assert!(again.contains("already prepared"), "{again}");
    assert_eq!(server.requests().len(), requests);

    // `list` shows measured figures for enron, published ones for the rest.
    let listed = run_ok(
        neox_data()
            .args(["list", "--json", "--data-dir"])
            .arg(&data),
    );
    let rows: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    let enron = rows.iter().find(|r| r["name"] == "enron").unwrap();
    assert_eq!(enron["figures"]["kind"], "measured");
    assert_eq!(enron["documents"], 119);
    assert_eq!(enron["compressed_bytes"], corpus.len() as u64);
    let pile = rows.iter().find(|r| r["name"] == "pile").unwrap();
    assert_eq!(pile["figures"]["kind"], "known");
    assert_eq!(pile["files"], 30);
    let table = text(&run_ok(neox_data().args(["list", "--data-dir"]).arg(&data)));
    let line = table.lines().find(|l| l.starts_with("enron ")).unwrap();
    assert!(line.contains("119") && line.ends_with("measured"), "{line}");
}

#[test]
fn two_prepares_at_once_do_not_corrupt_each_other() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let corpus = enron_zst(60);
    let server = Server::start();
    server.put(FILE, corpus.clone());
    server.fault(
        FILE,
        &[common_http::Fault::Slow {
            chunk: corpus.len() / 8 + 1,
            pause_ms: 50,
        }],
    );
    let spawn = || {
        prepare("enron", &data)
            .arg("--mirror")
            .arg(server.base_url())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(
        a.status.success() && b.status.success(),
        "{}\n{}",
        text(&a),
        text(&b)
    );
    let said = format!("{}{}", text(&a), text(&b));
    // One did the work; the other waited for the lock and found it done.
    assert_eq!(said.matches("enron: prepared").count(), 1, "{said}");
    assert!(said.contains("already prepared"), "{said}");
    assert_eq!(server.bytes_served(FILE), corpus.len());
    let source = tmp.path().join(FILE);
    std::fs::write(&source, &corpus).unwrap();
    assert_eq!(
        read_pair(&data.join("enron/enron_text_document")),
        tokenized(&source, tmp.path())
    );
}

#[test]
fn unknown_corpus_and_bad_arguments_are_refused_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run(&mut prepare("enronn", tmp.path()));
    assert!(!out.status.success());
    let said = text(&out);
    assert!(
        said.contains("no corpus named `enronn`") && said.contains("enron"),
        "{said}"
    );

    let out = run(prepare("enron", tmp.path()).args(["--mirror", "ftp://example.org/"]));
    assert!(!out.status.success());
    assert!(
        text(&out).contains("unsupported scheme `ftp`"),
        "{}",
        text(&out)
    );

    let out = run(prepare("pile", tmp.path()).args(["--shard", "31/31"]));
    assert!(!out.status.success());
    assert!(text(&out).contains("at most 30 shards"), "{}", text(&out));

    let out = run(&mut prepare("c4", tmp.path()));
    assert!(!out.status.success());
    assert!(text(&out).contains("lists no files"), "{}", text(&out));
    assert!(
        listing(tmp.path()).iter().all(|f| f.ends_with(".lock")),
        "{:?}",
        listing(tmp.path())
    );
}

#[test]
fn another_mirror_of_the_same_file_reuses_the_download() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let corpus = enron_zst(40);
    let (first, second) = (Server::start(), Server::start());
    first.put(FILE, corpus.clone());
    second.put(FILE, corpus.clone());
    run_ok(
        prepare("enron", &data)
            .arg("--mirror")
            .arg(first.base_url()),
    );
    // Keep the download and its record; the outputs go, so the run is redone.
    let folder = data.join("enron");
    for name in listing(&folder) {
        if !name.starts_with(FILE) {
            let path = folder.join(&name);
            if path.is_dir() {
                std::fs::remove_dir_all(path).unwrap();
            } else {
                std::fs::remove_file(path).unwrap();
            }
        }
    }
    let said = text(&run_ok(
        prepare("enron", &data)
            .arg("--mirror")
            .arg(second.base_url()),
    ));
    assert!(said.contains("enron: prepared"), "{said}");
    assert!(
        second.requests().is_empty(),
        "the second mirror was asked for the file again: {said}"
    );
}
