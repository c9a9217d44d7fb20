//! Corpora built by the tests, and running the real `neox-data`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::{Digest, Sha256};

/// The `neox-data` binary under test.
pub fn neox_data() -> Command {
    isolated(Command::new(env!("CARGO_BIN_EXE_neox-data")))
}

/// `cmd` without the caller's data settings and proxies (the test server is
/// on loopback: never reach it through a proxy).
pub fn isolated(mut cmd: Command) -> Command {
    for var in [
        "DATA_DIR",
        "NEOX_CATALOG",
        "NEOX_DATA_MIRROR",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("NEOX_LOG", "info");
    cmd
}

/// Run and return the output, whatever the exit status.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("neox-data runs")
}

/// Run and insist on success.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Both streams as text.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `prepare NAME` into `data` with quick retries.
pub fn prepare(name: &str, data: &Path) -> Command {
    let mut cmd = neox_data();
    cmd.args([
        "prepare",
        name,
        "--retry-wait",
        "0.05",
        "--workers",
        "2",
        "--data-dir",
    ])
    .arg(data);
    cmd
}

/// `n` e-mails as Enron's jsonl lines (`{"text": ..., "meta": ...}`), some
/// non-ASCII, one empty (dropped by the tokenizer), deterministic.
pub fn enron_jsonl(n: usize) -> Vec<u8> {
    let mut out = String::new();
    for i in 0..n {
        let body = if i == 3 {
            String::new()
        } else {
            format!(
                "Message-ID: <{i}.JavaMail@enron>\nFrom: trader{a}@enron.com\nSubject: Re: gas \
                 deal #{i}\n\nPlease confirm volume {v} MMBtu for Zürich — price ${p}.{c:02}.\n{tail}",
                a = i % 7,
                v = i * 137 % 10_000,
                p = 2 + i % 5,
                c = i % 100,
                tail = "Thanks, and see the attached schedule.\n".repeat(1 + i % 3),
            )
        };
        let line = serde_json::json!({"text": body, "meta": {"id": i}});
        out.push_str(&line.to_string());
        out.push('\n');
    }
    out.into_bytes()
}

/// zstd-compressed bytes.
pub fn zst(bytes: &[u8]) -> Vec<u8> {
    zstd::encode_all(bytes, 3).expect("zstd encodes")
}

/// The Enron layout: `enron_emails.jsonl.zst` with `n` e-mails.
pub fn enron_zst(n: usize) -> Vec<u8> {
    zst(&enron_jsonl(n))
}

/// Lower-case hex SHA-256.
pub fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What `neox-data tokenize --append-eod` (GPT-NeoX's preprocess_data.py flags that
/// `prepare` uses) writes for `input` (a path, or `--input`'s comma-separated
/// list): the `.bin` and `.idx` bytes.
pub fn tokenized(input: impl AsRef<std::ffi::OsStr>, work: &Path) -> (Vec<u8>, Vec<u8>) {
    let prefix = work.join("reference");
    run_ok(
        neox_data()
            .args([
                "tokenize",
                "--tokenizer-type",
                "GPT2BPETokenizer",
                "--append-eod",
                "--input",
            ])
            .arg(input)
            .arg("--output-prefix")
            .arg(&prefix),
    );
    read_pair(&work.join("reference_text_document"))
}

/// The `.bin` and `.idx` bytes of a prefix.
pub fn read_pair(prefix: &Path) -> (Vec<u8>, Vec<u8>) {
    let with = |ext: &str| {
        let mut p = prefix.as_os_str().to_owned();
        p.push(ext);
        PathBuf::from(p)
    };
    (
        std::fs::read(with(".bin")).expect("the .bin exists"),
        std::fs::read(with(".idx")).expect("the .idx exists"),
    )
}

/// Files in `dir` (names), sorted; empty if it does not exist.
pub fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The manifest of a prepared prefix as JSON.
pub fn manifest(folder: &Path, prefix: &str) -> serde_json::Value {
    let path = folder.join(format!("{prefix}.manifest.json"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).expect("the manifest is JSON")
}
