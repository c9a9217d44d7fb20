//! `--shard K/N` on shared storage: the shards of one corpus, run as separate
//! `neox-data prepare` processes at the same time into one data folder, work
//! side by side (no shared lock, no shared parts folder) and merge into the
//! whole corpus.

mod common_http;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common_http::fixtures::*;
use common_http::{Fault, Request, Server};

/// Four files served slowly (3 s each: longer than a process takes to start
/// on a busy machine), declared in a catalog as `mail4`.
fn setup(tmp: &Path) -> (Server, PathBuf, Vec<PathBuf>) {
    let server = Server::start();
    let mut files = Vec::new();
    let mut paths = Vec::new();
    for i in 0..4 {
        let name = format!("box-{i}.jsonl.zst");
        let bytes = zst(&enron_jsonl(20 + 7 * i));
        let path = tmp.join(&name);
        std::fs::write(&path, &bytes).unwrap();
        server.fault(
            &name,
            &[Fault::Slow {
                chunk: bytes.len() / 6 + 1,
                pause_ms: 500,
            }],
        );
        server.put(&name, bytes);
        files.push(serde_json::json!({"url": format!("{}{name}", server.base_url())}));
        paths.push(path);
    }
    let catalog = tmp.join("catalog.json");
    let json = serde_json::json!({"corpus": [{"name": "mail4", "files": files}]});
    std::fs::write(&catalog, json.to_string()).unwrap();
    (server, catalog, paths)
}

/// Wait for `child` at most `limit`, killing it past that.
fn wait(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("prepare did not finish in {limit:?}: {}", text(&out));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn spawn(cmd: &mut Command) -> Child {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The span from the first request of `names` to the end of the last answer.
fn span(requests: &[Request], names: &[&str]) -> (Instant, Instant) {
    let mine: Vec<&Request> = requests
        .iter()
        .filter(|r| names.iter().any(|n| r.path == format!("/{n}")))
        .collect();
    assert_eq!(mine.len(), names.len(), "{requests:?}");
    (
        mine.iter().map(|r| r.began).min().unwrap(),
        mine.iter().map(|r| r.ended).max().unwrap(),
    )
}

#[test]
fn two_shards_run_at_once_on_one_data_folder_and_merge_into_the_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let (server, catalog, paths) = setup(tmp.path());
    let data = tmp.path().join("data");
    let shard = |k: &str| {
        let mut cmd = prepare("mail4", &data);
        cmd.arg("--catalog").arg(&catalog).args(["--shard", k]);
        cmd
    };
    let first = spawn(&mut shard("1/2"));
    let second = spawn(&mut shard("2/2"));
    let (first, second) = (
        wait(first, Duration::from_secs(120)),
        wait(second, Duration::from_secs(120)),
    );
    for out in [&first, &second] {
        assert!(out.status.success(), "{}", text(out));
    }

    // Each shard's files were downloaded while the other's were: neither
    // waited for the other to finish.
    let requests = server.requests();
    let one = span(&requests, &["box-0.jsonl.zst", "box-1.jsonl.zst"]);
    let two = span(&requests, &["box-2.jsonl.zst", "box-3.jsonl.zst"]);
    assert!(
        one.0 < two.1 && two.0 < one.1,
        "the shards ran one after the other: {one:?} then {two:?}\n{}\n{}",
        text(&first),
        text(&second)
    );

    // Each made its own output from two files (merging its parts); the
    // parts folders are gone, and the shards merged give the whole corpus.
    let folder = data.join("mail4");
    for k in [1, 2] {
        let m = manifest(&folder, &format!("mail4-shard-{k}-of-2_text_document"));
        assert_eq!(m["sources"].as_array().unwrap().len(), 2, "{m}");
    }
    let left: Vec<String> = listing(&folder)
        .into_iter()
        .filter(|f| f.ends_with(".parts"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    run_ok(
        neox_data()
            .args(["merge", "--output-prefix"])
            .arg(folder.join("mail4_text_document"))
            .arg(folder.join("mail4-shard-1-of-2_text_document"))
            .arg(folder.join("mail4-shard-2-of-2_text_document")),
    );
    let joined = paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(",");
    assert_eq!(
        read_pair(&folder.join("mail4_text_document")),
        tokenized(&joined, tmp.path())
    );
}
