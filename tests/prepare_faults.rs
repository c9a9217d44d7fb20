//! Download faults, each against a real HTTP server on 127.0.0.1: a dropped
//! connection, 500s, 404, a checksum mismatch, a truncated cached file, a
//! killed prepare, and a tar member that tries to escape the data folder.

mod common_http;

use std::path::Path;
use std::time::{Duration, Instant};

use common_http::fixtures::*;
use common_http::{Fault, Server};

const FILE: &str = "enron_emails.jsonl.zst";

/// A server with an Enron-layout corpus; returns it, the bytes, and the
/// outputs `tokenize` gives for them.
fn serve(tmp: &Path, docs: usize) -> (Server, Vec<u8>, (Vec<u8>, Vec<u8>)) {
    let corpus = enron_zst(docs);
    let source = tmp.join(FILE);
    std::fs::write(&source, &corpus).unwrap();
    let expected = tokenized(&source, tmp);
    let server = Server::start();
    server.put(FILE, corpus.clone());
    (server, corpus, expected)
}

fn prepare_enron(data: &Path, server: &Server) -> std::process::Command {
    let mut cmd = prepare("enron", data);
    cmd.arg("--mirror").arg(server.base_url());
    cmd
}

#[test]
fn a_connection_dropped_mid_body_resumes_with_a_range_request() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (server, corpus, expected) = serve(tmp.path(), 150);
    let cut = corpus.len() / 3;
    server.fault(FILE, &[Fault::DropAfter(cut)]);

    let said = text(&run_ok(&mut prepare_enron(&data, &server)));
    assert_eq!(read_pair(&data.join("enron/enron_text_document")), expected);

    let requests = server.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(requests[0].range, None);
    assert_eq!(
        requests[1].range.as_deref(),
        Some(format!("bytes={cut}-").as_str())
    );
    assert!(
        requests[1].if_range.is_some(),
        "the resume is validated with If-Range"
    );
    assert_eq!(requests[1].status, 206);
    // Only the rest was fetched the second time.
    assert_eq!(requests[1].body_bytes, corpus.len() - cut);
    assert_eq!(server.bytes_served(FILE), corpus.len());
    assert!(said.contains(&format!("resuming at byte {cut}")), "{said}");
}

#[test]
fn server_errors_are_retried_then_succeed() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (server, _, expected) = serve(tmp.path(), 40);
    server.fault(FILE, &[Fault::Status(500), Fault::Status(503)]);
    let said = text(&run_ok(&mut prepare_enron(&data, &server)));
    assert_eq!(read_pair(&data.join("enron/enron_text_document")), expected);
    let statuses: Vec<u16> = server.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![500, 503, 200]);
    assert!(
        said.contains("500") && said.contains("retry 1 of"),
        "{said}"
    );
}

#[test]
fn a_transfer_that_keeps_progressing_is_retried_past_the_retry_count() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (server, corpus, expected) = serve(tmp.path(), 150);
    // Five drops, each after a further sixth of the file: more failures than
    // --retries 2 allows in all, but never more than one in a row without progress.
    let piece = corpus.len() / 6;
    server.fault(FILE, &[Fault::DropAfter(piece); 5]);
    let said = text(&run_ok(
        prepare_enron(&data, &server).args(["--retries", "2"]),
    ));
    assert_eq!(read_pair(&data.join("enron/enron_text_document")), expected);
    let requests = server.requests();
    assert_eq!(requests.len(), 6, "{requests:?}\n{said}");
    for (i, r) in requests.iter().enumerate().skip(1) {
        assert_eq!(r.range, Some(format!("bytes={}-", i * piece)), "{said}");
    }
    assert_eq!(server.bytes_served(FILE), corpus.len());
    assert!(!said.contains("retry 2 of"), "{said}");
}

#[test]
fn persistent_server_errors_give_up_after_the_retries() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (server, _, _) = serve(tmp.path(), 5);
    server.fault(FILE, &[Fault::Status(502); 4]);
    let out = run(prepare_enron(&data, &server).args(["--retries", "2"]));
    assert!(!out.status.success());
    let said = text(&out);
    assert!(
        said.contains("gave up after 3 attempts") && said.contains("502"),
        "{said}"
    );
    assert_eq!(server.requests().len(), 3);
}

#[test]
fn not_found_is_a_clear_error_and_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = Server::start(); // serves nothing
    let out = run(&mut prepare_enron(&data, &server));
    assert!(!out.status.success());
    let said = text(&out);
    assert!(
        said.contains("404") && said.contains(&format!("{}{FILE}", server.base_url())),
        "{said}"
    );
    // 4xx is not retried.
    assert_eq!(server.requests().len(), 1);
    assert!(
        !data.join("enron").exists(),
        "{:?}",
        listing(&data.join("enron"))
    );
}

#[test]
fn a_checksum_mismatch_is_refused_and_the_file_never_used() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (server, corpus, expected) = serve(tmp.path(), 30);
    let wrong = "0".repeat(64);
    let out = run(prepare_enron(&data, &server)
        .arg("--sha256")
        .arg(format!("{FILE}={wrong}")));
    assert!(!out.status.success());
    let said = text(&out);
    assert!(
        said.contains(&sha256(&corpus)) && said.contains(&wrong),
        "{said}"
    );
    let folder = data.join("enron");
    assert!(
        listing(&folder).iter().all(|f| !f.starts_with("enron_")),
        "{:?}",
        listing(&folder)
    );

    // The right checksum is accepted.
    run_ok(
        prepare_enron(&data, &server)
            .arg("--sha256")
            .arg(format!("{FILE}={}", sha256(&corpus))),
    );
    assert_eq!(read_pair(&folder.join("enron_text_document")), expected);
}

#[test]
fn a_truncated_cached_file_is_detected_and_fetched_again() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (server, corpus, expected) = serve(tmp.path(), 80);
    run_ok(&mut prepare_enron(&data, &server));
    let folder = data.join("enron");
    let cached = folder.join(FILE);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&cached)
        .unwrap();
    f.set_len(corpus.len() as u64 / 2).unwrap();
    drop(f);

    // --force: prepare again; the truncated download must not be used.
    let said = text(&run_ok(prepare_enron(&data, &server).arg("--force")));
    assert_eq!(std::fs::read(&cached).unwrap(), corpus);
    assert_eq!(read_pair(&folder.join("enron_text_document")), expected);
    assert_eq!(server.bytes_served(FILE), 2 * corpus.len(), "{said}");

    // Without --force, a truncated cache under a missing result is noticed too.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&cached)
        .unwrap();
    f.set_len(10).unwrap();
    drop(f);
    std::fs::remove_file(folder.join("enron_text_document.bin")).unwrap();
    let said = text(&run_ok(&mut prepare_enron(&data, &server)));
    assert!(said.contains("truncated"), "{said}");
    assert_eq!(read_pair(&folder.join("enron_text_document")), expected);
}

#[test]
fn a_killed_prepare_completes_when_run_again_with_the_same_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (server, corpus, expected) = serve(tmp.path(), 200);
    let chunk = corpus.len() / 20 + 1;
    server.fault(
        FILE,
        &[Fault::Slow {
            chunk,
            pause_ms: 100,
        }],
    );
    let mut child = prepare_enron(&data, &server)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let part = data.join("enron").join(format!("{FILE}.part"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::metadata(&part).map_or(0, |m| m.len()) < 2 * chunk as u64 {
        assert!(Instant::now() < deadline, "the download never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let had = std::fs::metadata(&part).unwrap().len() as usize;
    assert!(had < corpus.len());

    let said = text(&run_ok(&mut prepare_enron(&data, &server)));
    assert_eq!(read_pair(&data.join("enron/enron_text_document")), expected);
    let last = server.requests().pop().unwrap();
    assert_eq!(last.range, Some(format!("bytes={had}-")), "{said}");
    assert_eq!(last.body_bytes, corpus.len() - had);
}

/// A tar with one member whose name climbs out of any folder.
fn evil_tar(text: &[u8]) -> Vec<u8> {
    let mut header = tar::Header::new_old();
    let name = b"../../escape";
    header.as_old_mut().name[..name.len()].copy_from_slice(name);
    header.set_size(text.len() as u64);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    let mut builder = tar::Builder::new(Vec::new());
    builder.append(&header, text).unwrap();
    builder.into_inner().unwrap()
}

#[test]
fn a_tar_member_named_dot_dot_escape_never_writes_outside_the_data_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("a/b");
    std::fs::create_dir_all(&work).unwrap();
    let data = work.join("data");
    let server = Server::start();
    let tarball = evil_tar(b"I would like to live elsewhere.");
    server.put("evil.tar", tarball);
    let catalog = work.join("catalog.toml");
    std::fs::write(
        &catalog,
        format!(
            "[[corpus]]\nname = \"evil\"\nurls = [\"{}evil.tar\"]\n",
            server.base_url()
        ),
    )
    .unwrap();
    let out = run_ok(
        prepare("evil", &data)
            .arg("--catalog")
            .arg(&catalog)
            .current_dir(&work),
    );
    let m = manifest(&data.join("evil"), "evil_text_document");
    // The member was read as a document from the stream, never extracted.
    assert_eq!(m["documents"], 1, "{}", text(&out));
    for place in [
        tmp.path().join("escape"),
        tmp.path().join("a/escape"),
        work.join("escape"),
        data.join("escape"),
        data.join("evil/escape"),
    ] {
        assert!(!place.exists(), "{} was written", place.display());
    }
    let files = listing(&data.join("evil"));
    assert!(files.iter().all(|f| f.starts_with("evil")), "{files:?}");
}

#[test]
fn a_partial_download_of_a_file_that_changed_on_the_server_starts_over() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (server, old, _) = serve(tmp.path(), 60);
    server.fault(FILE, &[Fault::DropAfter(old.len() / 2)]);
    let out = run(prepare_enron(&data, &server).args(["--retries", "0"]));
    assert!(!out.status.success(), "{}", text(&out));
    assert!(data.join("enron").join(format!("{FILE}.part")).exists());

    // The file changes; the stale half must not be glued to the new bytes.
    let new = enron_zst(70);
    server.put(FILE, new.clone());
    run_ok(&mut prepare_enron(&data, &server));
    let last = server.requests().pop().unwrap();
    assert_eq!(last.range, Some(format!("bytes={}-", old.len() / 2)));
    assert!(last.if_range.is_some());
    assert_eq!(
        last.status, 200,
        "If-Range did not match: the whole new file is sent"
    );
    let source = tmp.path().join("new.jsonl.zst");
    std::fs::write(&source, &new).unwrap();
    let work = tmp.path().join("new");
    std::fs::create_dir_all(&work).unwrap();
    assert_eq!(
        read_pair(&data.join("enron/enron_text_document")),
        tokenized(&source, &work)
    );
    assert_eq!(std::fs::read(data.join("enron").join(FILE)).unwrap(), new);
}
