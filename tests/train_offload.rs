//! `neox-train` with ZeRO-Offload end to end (`zero_optimization:
//! {stage: 1, offload_optimizer: {device: cpu}}`), cpu-tiny on the shared
//! e-mail corpus: the run's metrics equal the device optimizer's bit for bit,
//! also when it stops at a checkpoint and resumes; `--check` moves the
//! optimizer state from the device's memory to the host's; bad offload
//! settings are refused by name.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const TRAIN: &str = env!("CARGO_BIN_EXE_neox-train");

mod common;
use common::{cpu_tiny_configs, run_metrics};

const DEVICE: &str = "zero_optimization: {stage: 1}\n";
const OFFLOAD: &str =
    "zero_optimization: {stage: 1, offload_optimizer: {device: cpu, pin_memory: true}}\n";

/// cpu-tiny plus the data and `extra`, its checkpoints and metrics in `dir/run`.
fn configs(dir: &Path, extra: &str) -> Vec<PathBuf> {
    let run = format!(
        "save: {run}\nload: {run}\nlr_decay_iters: 8\n\
         eval_interval: 4\neval_iters: 1\nlog_interval: 1\ncheckpoint_factor: 4\n\
         train_micro_batch_size_per_gpu: 4\ngradient_accumulation_steps: 2\n",
        run = dir.join("run").display()
    );
    cpu_tiny_configs(dir, &run, extra)
}

fn train(dir: &Path, extra: &str) -> (bool, String) {
    let out = Command::new(TRAIN)
        .arg("--config")
        .args(configs(dir, extra))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Every train and valid record but the timings.
fn numbers(dir: &Path) -> Vec<String> {
    run_metrics(dir)
        .into_iter()
        .filter(|r| r["kind"] != "test")
        .map(|r| {
            format!(
                "{} {} {} {} {}",
                r["kind"], r["iteration"], r["loss"], r["grad_norm"], r["lr"]
            )
        })
        .collect()
}

#[test]
fn an_offloaded_run_equals_the_device_run_and_resumes_bit_for_bit() {
    let device = tempfile::tempdir().unwrap();
    let (ok, text) = train(device.path(), &format!("train_iters: 8\n{DEVICE}"));
    assert!(ok, "{text}");
    let reference = numbers(device.path());
    assert_eq!(reference.len(), 10, "{reference:#?}");

    let host = tempfile::tempdir().unwrap();
    let (ok, text) = train(host.path(), &format!("train_iters: 4\n{OFFLOAD}"));
    assert!(ok, "{text}");
    let (ok, text) = train(host.path(), &format!("train_iters: 8\n{OFFLOAD}"));
    assert!(ok, "{text}");
    assert!(text.contains("resumed"), "{text}");
    assert_eq!(numbers(host.path()), reference);
}

#[test]
fn check_puts_the_optimizer_state_on_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let plan = |extra: &str| {
        let out = Command::new(TRAIN)
            .args(["--check", "--json", "--config"])
            .args(configs(dir.path(), &format!("train_iters: 8\n{extra}")))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout).unwrap()["memory"].clone()
    };
    let (device, host) = (plan(DEVICE), plan(OFFLOAD));
    let bytes = |m: &Value, k: &str| m[k].as_u64().unwrap();
    assert!(bytes(&device, "optimizer") > 0);
    assert_eq!(bytes(&device, "host_optimizer"), 0);
    assert_eq!(bytes(&host, "optimizer"), 0);
    assert_eq!(bytes(&host, "host_optimizer"), bytes(&device, "optimizer"));
    assert_eq!(
        bytes(&device, "total") - bytes(&host, "total"),
        bytes(&device, "optimizer")
    );
}

#[test]
fn bad_offload_settings_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    for (extra, key) in [
        (
            "zero_optimization: {stage: 1, offload_param: {device: cpu}}\n",
            "zero_optimization.offload_param",
        ),
        (
            "zero_optimization: {stage: 2, offload_optimizer: {device: nvme}}\n",
            "zero_optimization.offload_optimizer.device",
        ),
        (
            "zero_optimization: {stage: 0, offload_optimizer: {device: cpu}}\n",
            "zero_optimization.offload_optimizer",
        ),
    ] {
        let (ok, text) = train(dir.path(), &format!("train_iters: 2\n{extra}"));
        assert!(!ok, "{extra} was accepted");
        assert!(text.contains(key), "{extra}: {text}");
    }
}
