//! Two files of one corpus with the same name (different URLs) are both
//! downloaded, kept apart and read, fresh or cached; a cached file is used
//! only for the URL it came from.

mod common_http;

use std::path::Path;

use common_http::Server;
use common_http::fixtures::*;

/// A catalog declaring `name` with these URLs.
fn catalog(path: &Path, name: &str, urls: &[String]) {
    let json = serde_json::json!({"corpus": [{"name": name, "urls": urls}]});
    std::fs::write(path, json.to_string()).unwrap();
}

/// The two mailboxes, served as `a/mail.jsonl.zst` and `b/mail.jsonl.zst`,
/// and their local copies.
fn twins(server: &Server, tmp: &Path) -> ([Vec<u8>; 2], [String; 2], [std::path::PathBuf; 2]) {
    let bytes = [zst(&enron_jsonl(30)), zst(&enron_jsonl(45))];
    let urls = ["a", "b"].map(|d| format!("{}{d}/mail.jsonl.zst", server.base_url()));
    let local = ["a", "b"].map(|d| tmp.join(format!("{d}-mail.jsonl.zst")));
    for i in 0..2 {
        server.put(
            &format!("{}/mail.jsonl.zst", ["a", "b"][i]),
            bytes[i].clone(),
        );
        std::fs::write(&local[i], &bytes[i]).unwrap();
    }
    (bytes, urls, local)
}

#[test]
fn two_files_named_alike_are_both_kept_and_read_downloaded_or_cached() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start();
    let (bytes, urls, local) = twins(&server, tmp.path());
    let cat = tmp.path().join("catalog.json");
    catalog(&cat, "twins", &urls);
    let data = tmp.path().join("data");
    let prep = || {
        let mut cmd = prepare("twins", &data);
        cmd.arg("--catalog").arg(&cat);
        cmd
    };
    run_ok(&mut prep());

    let folder = data.join("twins");
    let expected = tokenized(
        format!("{},{}", local[0].display(), local[1].display()),
        tmp.path(),
    );
    assert_eq!(read_pair(&folder.join("twins_text_document")), expected);
    // Two stored files, each holding its own source's bytes.
    let stored: Vec<String> = listing(&folder)
        .into_iter()
        .filter(|f| f.ends_with("mail.jsonl.zst"))
        .collect();
    assert_eq!(stored.len(), 2, "{:?}", listing(&folder));
    let mut held: Vec<Vec<u8>> = stored
        .iter()
        .map(|f| std::fs::read(folder.join(f)).unwrap())
        .collect();
    held.sort();
    let mut want = bytes.to_vec();
    want.sort();
    assert_eq!(held, want);

    // Cached: with the outputs gone, the two stored files are read again, not fetched.
    let asked = server.requests().len();
    for f in listing(&folder) {
        if f.starts_with("twins_text_document") {
            std::fs::remove_file(folder.join(f)).unwrap();
        }
    }
    run_ok(&mut prep());
    assert_eq!(server.requests().len(), asked, "{:?}", server.requests());
    assert_eq!(read_pair(&folder.join("twins_text_document")), expected);

    // A mirror keeps names, so it cannot serve both: refused, with the reason.
    let out = run(prep().arg("--mirror").arg(server.base_url()));
    assert!(!out.status.success());
    assert!(
        text(&out).contains("several files named mail.jsonl.zst"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_cached_file_of_the_same_name_from_another_url_is_not_used() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start();
    let (_, urls, local) = twins(&server, tmp.path());
    let cat = tmp.path().join("catalog.json");
    let data = tmp.path().join("data");
    let folder = data.join("one");

    catalog(&cat, "one", &urls[..1]);
    run_ok(prepare("one", &data).arg("--catalog").arg(&cat));
    // The corpus now names the other file (no checksum declared): the file
    // stored from the first URL must not stand in for it.
    catalog(&cat, "one", &urls[1..]);
    let said = text(&run_ok(prepare("one", &data).arg("--catalog").arg(&cat)));
    assert!(said.contains("downloading it again"), "{said}");
    assert_eq!(
        read_pair(&folder.join("one_text_document")),
        tokenized(&local[1], tmp.path())
    );
}
