//! `neox-train` end to end on shards made from the shared e-mail corpus
//! (`../shared/data/mail.jsonl.zst`, char-level tokens as GPT-NeoX's
//! CharLevelTokenizer makes them: UTF-8 bytes, EOD 0):
//! - `configs/cpu-tiny.yml` drives the validation loss well below its start;
//! - a run killed mid-way resumes from its last checkpoint and continues bit
//!   for bit like an uninterrupted run.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const TRAIN: &str = env!("CARGO_BIN_EXE_neox-train");

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

mod common;
use common::{char_data, cpu_tiny, run_metrics};

/// A data setup for the shards, and the run folder, in `dir`.
fn data_config(dir: &Path, extra: &str) -> PathBuf {
    let path = dir.join("data.yml");
    let text = format!(
        "{}save: {}\nload: {}\n{extra}",
        char_data(),
        dir.join("run").display(),
        dir.join("run").display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn losses(records: &[Value], kind: &str) -> Vec<(u64, f64)> {
    records
        .iter()
        .filter(|r| r["kind"] == kind)
        .map(|r| {
            (
                r["iteration"].as_u64().unwrap(),
                r["loss"].as_f64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn cpu_tiny_validation_loss_falls_well_below_its_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = data_config(dir.path(), "");
    let out = Command::new(TRAIN)
        .arg("--config")
        .arg(cpu_tiny())
        .arg(&data)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let records = run_metrics(dir.path());
    let train = losses(&records, "train");
    let valid = losses(&records, "valid");
    assert!(!valid.is_empty() && !train.is_empty(), "{records:?}");
    // The start: the mean loss of the first logged interval (about ln 512 = 6.2).
    let start = train[0].1;
    let (_, last) = *valid.last().unwrap();
    assert!(last < 0.6 * start, "valid losses {valid:?}, start {start}");
    assert!(losses(&records, "test")[0].1 < 0.6 * start);
    // Checkpoints of the run: the last two kept, `latest` the final one.
    let latest = std::fs::read_to_string(dir.path().join("run/latest")).unwrap();
    assert_eq!(latest.trim(), "global_step400");
}

#[test]
fn killed_run_resumes_bit_for_bit() {
    let extra = "train_iters: 60\nlr_decay_iters: 60\ncheckpoint_factor: 10\nkeep_last_n_checkpoints: 1\n\
                 eval_interval: 30\neval_iters: 2\nlog_interval: 1\n";
    let command = |dir: &Path| {
        let data = data_config(dir, extra);
        let mut c = Command::new(TRAIN);
        c.arg("--config").arg(cpu_tiny()).arg(data);
        c
    };

    let whole = tempfile::tempdir().unwrap();
    let out = command(whole.path()).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Kill a second run as soon as its first checkpoint is in place.
    let killed = tempfile::tempdir().unwrap();
    let mut child = command(killed.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let latest = killed.path().join("run/latest");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !latest.exists() {
        assert!(Instant::now() < deadline, "no checkpoint within 120 s");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let at_kill = std::fs::read_to_string(&latest).unwrap();
    assert_ne!(
        at_kill.trim(),
        "global_step60",
        "the run finished before the kill"
    );

    // Resume: same command, `load` finds the checkpoint.
    let out = command(killed.path()).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("(resumed at "), "{stdout}");

    let (a, b) = (run_metrics(whole.path()), run_metrics(killed.path()));
    assert_eq!(losses(&b, "train").len(), 60);
    assert_eq!(losses(&b, "train"), losses(&a, "train"));
    assert_eq!(losses(&b, "valid"), losses(&a, "valid"));
    assert_eq!(losses(&b, "test"), losses(&a, "test"));
}

#[test]
fn a_run_killed_while_saving_leaves_only_finished_checkpoints() {
    let extra = "train_iters: 12\nlr_decay_iters: 12\ncheckpoint_factor: 4\nkeep_last_n_checkpoints: 1\n\
                 eval_iters: 0\nlog_interval: 1\n";
    let dir = tempfile::tempdir().unwrap();
    let data = data_config(dir.path(), extra);
    let command = || {
        let mut c = Command::new(TRAIN);
        c.arg("--config").arg(cpu_tiny()).arg(&data);
        c
    };
    // Every save pauses with its files written but not published: kill the
    // run inside the save of step 8.
    let mut child = command()
        .env("NEOX_FAULT_PAUSE_IN_SAVE_MS", "2000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let run = dir.path().join("run");
    let partial = run.join(".global_step8.partial");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !partial.join("model.bin").exists() {
        assert!(Instant::now() < deadline, "no save of step 8 within 120 s");
        assert!(child.try_wait().unwrap().is_none(), "the run ended early");
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // The unfinished checkpoint is not the latest one.
    let latest = std::fs::read_to_string(run.join("latest")).unwrap();
    assert_eq!(latest.trim(), "global_step4");
    assert!(partial.is_dir());

    let out = command().output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("(resumed at 4)"));
    let mut names: Vec<String> = std::fs::read_dir(&run)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["global_step12", "latest", "metrics.jsonl"]);
}

#[test]
fn every_shipped_config_checks() {
    let data = root().join("configs/enron.yml");
    for entry in std::fs::read_dir(root().join("configs")).unwrap() {
        let path = entry.unwrap().path();
        if path == data || path.extension().is_none_or(|e| e != "yml") {
            continue;
        }
        // GPT-NeoX's sizes enable fp16, implemented: no option stops them.
        let out = Command::new(TRAIN)
            .args(["--check", "--config"])
            .arg(&path)
            .arg(&data)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        if path.ends_with("125M.yml") {
            // The plan's notes section lists the options not acted on.
            assert!(
                stdout.contains("partition_activations") && stdout.contains("not acted on"),
                "{stdout}"
            );
        }
    }
}

#[test]
fn a_learning_rate_above_the_peak_is_announced() {
    // configs/125M.yml for 5 iterations: warmup 0.01 x 5 = 0.05 iterations, so
    // GPT-NeoX's warmup runs step 0 at 0.0006 / 0.05 = 0.012.
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short.yml");
    std::fs::write(&short, "train_iters: 5\nlr_decay_iters: 5\n").unwrap();
    let out = Command::new(TRAIN)
        .args(["--check", "--config"])
        .arg(root().join("configs/125M.yml"))
        .arg(root().join("configs/enron.yml"))
        .arg(&short)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // --check prints it in the plan's notes.
    let stdout = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "ABOVE ITS PEAK",
        "1.200e-2",
        "20.0x",
        "6.000e-4",
        "train_iters",
    ] {
        assert!(stdout.contains(needle), "{needle}: {stdout}");
    }
}

#[test]
fn bad_configs_are_refused_naming_file_and_option() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "trian_iters: 10\n",
            vec!["trian_iters", "did you mean `train_iters`"],
        ),
        ("train_iters: ten\n", vec!["train_iters", "ten"]),
        ("pos_emb: spiral\n", vec!["pos_emb", "spiral"]),
        ("hidden_dropout: 2\n", vec!["hidden_dropout"]),
        (
            "optimizer: {type: Lion, params: {lr: 0.1}}\n",
            vec!["optimizer", "Lion"],
        ),
    ];
    for (text, needles) in cases {
        let bad = dir.path().join("bad.yml");
        std::fs::write(&bad, text).unwrap();
        let out = Command::new(TRAIN)
            .arg("--config")
            .arg(cpu_tiny())
            .arg(&bad)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{text} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("bad.yml"), "{text}: {stderr}");
        for needle in needles {
            assert!(stderr.contains(needle), "{text}: {stderr}");
        }
    }
    // Missing data, a missing file, a device this build lacks.
    let out = Command::new(TRAIN)
        .arg("--config")
        .arg(cpu_tiny())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("padded_vocab_size"));
    let out = Command::new(TRAIN)
        .args(["--config", "no/such.yml"])
        .output()
        .unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("no/such.yml"));
    let out = Command::new(TRAIN)
        .args(["--device", "tpu", "--config"])
        .arg(cpu_tiny())
        .output()
        .unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("cuda:N"));
}
