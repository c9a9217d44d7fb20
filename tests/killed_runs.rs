//! What a run killed (SIGKILL) while it writes leaves behind is removed by
//! the next run, which then finishes with the bytes an uninterrupted run
//! writes; a live concurrent writer's temporary files are never touched.
//! The corpus is the shared e-mails (34 MB of text), so that each run writes
//! long enough to be caught at several moments.

mod common;
mod common_http;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common_http::Server;
use common_http::fixtures::*;

const FILE: &str = "enron_emails.jsonl.zst";
const WAIT: Duration = Duration::from_secs(180);

fn mail() -> PathBuf {
    common::shared().join("data/mail.jsonl.zst")
}

/// The temporary files (`neox_fsio`'s names) in `dir` for output `target`, with their sizes.
fn temps(dir: &Path, target: &str) -> Vec<(PathBuf, u64)> {
    let start = format!(".{target}.");
    listing(dir)
        .into_iter()
        .filter(|n| n.starts_with(&start) && n.ends_with(".neox-tmp"))
        .map(|n| {
            let path = dir.join(n);
            let len = std::fs::metadata(&path).map_or(0, |m| m.len());
            (path, len)
        })
        .collect()
}

/// A child process killed when dropped (a failing test leaves nothing running).
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(cmd: &mut Command) -> Running {
    Running(
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("neox-data starts"),
    )
}

/// Wait (polling, with a deadline) until `ready` holds while `child` runs.
fn wait_for(child: &mut Running, what: &str, ready: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !ready() {
        if let Ok(Some(status)) = child.0.try_wait() {
            panic!("the run ended ({status}) before {what}");
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Run `cmd`, SIGKILL it once `ready` holds, and check it left a temporary file.
fn kill_when(cmd: &mut Command, what: &str, dir: &Path, target: &str, ready: impl Fn() -> bool) {
    let mut child = spawn(cmd);
    wait_for(&mut child, what, ready);
    child.0.kill().expect("SIGKILL");
    child.0.wait().expect("reaped");
    assert!(
        !temps(dir, target).is_empty(),
        "killed when {what}: no temporary file left to clean up"
    );
}

/// `signal` (STOP, CONT) to a child.
fn signal(child: &Running, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.0.id().to_string())
        .status()
        .expect("kill runs");
    assert!(status.success());
}

fn tokenize(input: &Path, prefix: &Path) -> Command {
    let mut cmd = neox_data();
    cmd.args([
        "tokenize",
        "--tokenizer-type",
        "GPT2BPETokenizer",
        "--append-eod",
        "--workers",
        "2",
        "--input",
    ])
    .arg(input)
    .arg("--output-prefix")
    .arg(prefix);
    cmd
}

/// Every file and folder below `dir`, as relative paths, sorted.
fn tree(dir: &Path) -> Vec<String> {
    let mut all = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for name in listing(&d) {
            let path = d.join(&name);
            all.push(path.strip_prefix(dir).unwrap().display().to_string());
            if path.is_dir() {
                todo.push(path);
            }
        }
    }
    all.sort();
    all
}

#[test]
fn prepare_killed_at_several_moments_finishes_clean_with_the_same_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start();
    server.put(FILE, std::fs::read(mail()).unwrap());
    let prepare_in = |data: &Path| {
        let mut cmd = prepare("enron", data);
        cmd.arg("--mirror").arg(server.base_url());
        cmd
    };

    let clean = tmp.path().join("clean");
    run_ok(&mut prepare_in(&clean));
    let prefix = "enron_text_document";
    let expected = read_pair(&clean.join("enron").join(prefix));
    let bin_len = expected.0.len() as u64;

    let data = tmp.path().join("data");
    let folder = data.join("enron");
    let bin = format!("{prefix}.bin");
    let grown = |part: u64| {
        let (folder, bin) = (folder.clone(), bin.clone());
        move || temps(&folder, &bin).iter().any(|(_, n)| *n >= part)
    };
    kill_when(
        &mut prepare_in(&data),
        "the .bin's temporary file appears",
        &folder,
        &bin,
        grown(0),
    );
    kill_when(
        &mut prepare_in(&data),
        "the .bin is a third written",
        &folder,
        &bin,
        grown(bin_len / 3),
    );

    // `list` and `inspect` show what the killed run left.
    let left: u64 = temps(&folder, &bin).iter().map(|(_, n)| n).sum();
    let listed = text(&run_ok(
        neox_data().arg("list").arg("--data-dir").arg(&data),
    ));
    assert!(
        listed.contains("enron: 1 temporary file(s)") && listed.contains("which is gone"),
        "{listed}"
    );
    let json = run_ok(
        neox_data()
            .args(["list", "--json", "--data-dir"])
            .arg(&data),
    );
    let rows: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let enron = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "enron")
        .unwrap();
    assert_eq!(enron["temporary_files"], 1);
    assert_eq!(enron["temporary_bytes"], left);
    let inspected = text(&run(neox_data().arg("inspect").arg(folder.join(prefix))));
    assert!(
        inspected.contains("temporary file") && inspected.contains(&format!(".{bin}.")),
        "{inspected}"
    );

    kill_when(
        &mut prepare_in(&data),
        "the .bin is two thirds written",
        &folder,
        &bin,
        grown(2 * bin_len / 3),
    );
    let said = text(&run_ok(&mut prepare_in(&data)));
    assert!(
        said.contains("removed 1 temporary file") && said.contains("left by interrupted runs"),
        "{said}"
    );

    assert_eq!(read_pair(&folder.join(prefix)), expected);
    // Nothing but the download, its record, the outputs and the manifest.
    assert_eq!(tree(&data), tree(&clean));
    assert_eq!(
        tree(&folder),
        [
            FILE.to_string(),
            format!("{FILE}.download.json"),
            format!("{prefix}.bin"),
            format!("{prefix}.idx"),
            format!("{prefix}.manifest.json"),
        ]
    );
}

#[test]
fn tokenize_killed_at_several_moments_finishes_clean_with_the_same_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let expected = tokenized(mail().as_os_str(), tmp.path());
    let bin_len = expected.0.len() as u64;

    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let prefix = out.join("mail");
    let bin = "mail_text_document.bin";
    let grown = |part: u64| {
        let out = out.clone();
        move || temps(&out, bin).iter().any(|(_, n)| *n >= part)
    };
    kill_when(
        &mut tokenize(&mail(), &prefix),
        "the .bin's temporary file appears",
        &out,
        bin,
        grown(0),
    );
    kill_when(
        &mut tokenize(&mail(), &prefix),
        "the .bin is half written",
        &out,
        bin,
        grown(bin_len / 2),
    );
    let said = text(&run_ok(&mut tokenize(&mail(), &prefix)));
    assert!(said.contains("removed 1 temporary file"), "{said}");
    assert_eq!(read_pair(&out.join("mail_text_document")), expected);
    assert_eq!(tree(&out), [bin, "mail_text_document.idx"]);
}

#[test]
fn a_live_concurrent_run_s_temporary_files_are_left_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let expected = tokenized(mail().as_os_str(), tmp.path());
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let prefix = out.join("mail");
    let bin = "mail_text_document.bin";

    // Run A writes, and is paused (it keeps its locks) while B writes the same output.
    let mut a = spawn(&mut tokenize(&mail(), &prefix));
    wait_for(&mut a, "run A's .bin reaches 1 MB", || {
        temps(&out, bin).iter().any(|(_, n)| *n >= 1_000_000)
    });
    signal(&a, "STOP");
    let before = temps(&out, bin);
    assert_eq!(before.len(), 1);

    let inspected = text(&run(neox_data()
        .arg("inspect")
        .arg(out.join("mail_text_document"))));
    assert!(
        inspected.contains(&format!("being written by process {}", a.0.id())),
        "{inspected}"
    );
    let mut b = tokenize(&mail(), &prefix);
    b.args(["--max-docs", "20"]);
    let said = text(&run_ok(&mut b));
    assert!(!said.contains("removed"), "{said}");
    assert_eq!(
        temps(&out, bin),
        before,
        "run B touched run A's temporary file"
    );

    signal(&a, "CONT");
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = a.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "run A never finished");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "run A failed: {status}");
    assert_eq!(read_pair(&out.join("mail_text_document")), expected);
    assert_eq!(tree(&out), [bin, "mail_text_document.idx"]);
}
