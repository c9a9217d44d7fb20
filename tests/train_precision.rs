//! `neox-train` in half precision end to end: `configs/cpu-tiny.yml` (at micro
//! batch 4, to halve the test's time) on shards of the shared e-mail corpus
//! (char-level tokens) for 200 steps in
//! f32, bf16 (`bf16: {enabled: true}`) and fp16 (`fp16: {enabled: true}`,
//! DeepSpeed's dynamic loss scaler): both half-precision loss curves fall and
//! stay within a stated tolerance of the f32 one.

use std::path::Path;
use std::process::Command;

const TRAIN: &str = env!("CARGO_BIN_EXE_neox-train");

mod common;
use common::{char_data, cpu_tiny, run_metrics};

/// Each 20-step mean training loss of a half-precision run stays within this
/// many nats of the f32 run's (ln 512 = 6.2 at the start).
const TOLERANCE: f64 = 0.05;

/// Runs cpu-tiny for 200 steps with `precision` (YAML) and returns the
/// logged `(iteration, loss, loss_scale)` of every 20-step interval.
fn run(dir: &Path, precision: &str) -> Vec<(u64, f64, Option<f64>)> {
    let data = dir.join("data.yml");
    std::fs::write(
        &data,
        format!(
            "{}log_dir: {}\ntrain_iters: 200\nlr_decay_iters: 200\n\
             train_micro_batch_size_per_gpu: 4\n\
             log_interval: 20\neval_iters: 0\n{precision}",
            char_data(),
            dir.join("run").display()
        ),
    )
    .unwrap();
    let out = Command::new(TRAIN)
        .arg("--config")
        .arg(cpu_tiny())
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{precision}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    run_metrics(dir)
        .into_iter()
        .filter(|r| r["kind"] == "train")
        .map(|r| {
            (
                r["iteration"].as_u64().unwrap(),
                r["loss"].as_f64().unwrap(),
                r["loss_scale"].as_f64(),
            )
        })
        .collect()
}

#[test]
fn cpu_tiny_in_bf16_and_fp16_tracks_f32_over_200_steps() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let f32_run = run(dirs[0].path(), "");
    let bf16 = run(dirs[1].path(), "bf16: {enabled: true}\n");
    let fp16 = run(dirs[2].path(), "fp16: {enabled: true}\n");
    assert_eq!(f32_run.len(), 10);
    for (name, curve) in [("bf16", &bf16), ("fp16", &fp16)] {
        eprintln!(
            "{name}: {:?}",
            curve
                .iter()
                .zip(&f32_run)
                .map(|(h, f)| format!("{:.3}/{:.3}", h.1, f.1))
                .collect::<Vec<_>>()
        );
        assert_eq!(curve.len(), f32_run.len());
        for (h, f) in curve.iter().zip(&f32_run) {
            assert_eq!(h.0, f.0);
            assert!(
                (h.1 - f.1).abs() <= TOLERANCE,
                "{name} at {}: {} vs f32 {}",
                h.0,
                h.1,
                f.1
            );
        }
        let (first, last) = (curve[0].1, curve[9].1);
        assert!(last < 0.7 * first, "{name}: {first} -> {last}");
    }
    // fp16 scales the loss (GPT-NeoX's default start 2^16, dynamic); bf16 does not.
    assert!(fp16.iter().all(|r| r.2.is_some_and(|s| s >= 1.0)));
    assert!(bf16.iter().all(|r| r.2.is_none()));
}
