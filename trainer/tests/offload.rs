//! The flat AdamW (`flat_adam`, over host buffers) against Burn's AdamW
//! (over device tensors): ZeRO-Offload, and the flat AdamW that is the CPU's
//! step without it, train exactly as Burn's AdamW does (losses, norms and
//! every parameter, bit for bit), on one rank and under ZeRO-1 and ZeRO-2 on
//! two, with gradient accumulation and fp16 loss scaling (and bf16), and for
//! a model split in two pipeline stages; checkpoints move between the three
//! freely.

use std::path::Path;

use neox_trainer::NeoxArgs;
use neox_trainer::metrics::Record;
use neox_trainer::optim::AdamImpl;

mod common;
use common::{
    checkpoint_parameters, metrics_in, neox_args, one_run_at_a_time, train_data_parallel,
    train_split,
};

const MODEL: &str = "
num_layers: 2
hidden_size: 32
num_attention_heads: 4
seq_length: 16
pos_emb: rotary
rotary_pct: 0.5
padded_vocab_size: 32
no_weight_tying: true
optimizer: {type: Adam, params: {lr: 0.01, betas: [0.9, 0.95]}}
lr_decay_style: cosine
lr_decay_iters: 6
warmup: 0.1
min_lr: 0.001
weight_decay: 0.1
gradient_clipping: 0.05
hidden_dropout: 0.0
attention_dropout: 0.0
train_micro_batch_size_per_gpu: 2
gradient_accumulation_steps: 2
log_interval: 1
eval_interval: 3
eval_iters: 1
";

const OFFLOAD: &str = "offload_optimizer: {device: cpu, pin_memory: true}";

/// Burn's AdamW on the CPU, for the runs that the flat one must equal.
const BURN: AdamImpl = AdamImpl::Burn;
/// The CPU's default: the flat AdamW (always, with offload).
const FLAT: AdamImpl = AdamImpl::Auto;

fn args(extra: &str, world: usize, adam: AdamImpl) -> NeoxArgs {
    let mut args = neox_args(MODEL, extra, world);
    args.optim.adam = adam;
    args
}

/// Trains on `ranks` threads with `adam` stepping (ZeRO-Offload needs a
/// ZeRO stage, so that even one rank runs in a group).
fn run(extra: &str, ranks: usize, adam: AdamImpl) {
    train_data_parallel(&args(extra, ranks, adam), ranks).unwrap_or_else(|e| panic!("{e}"));
}

/// Trains a split model (the config's grid, one data-parallel rank) on
/// `ranks` threads with `adam` stepping.
fn run_split(extra: &str, ranks: usize, adam: AdamImpl) {
    train_split(&args(extra, 1, adam), ranks).unwrap_or_else(|e| panic!("{e}"));
}

/// Every logged number but the timings, as bits (not the test loss: a run
/// resumed from a shorter one keeps that one's; the parameters are compared).
fn numbers(dir: &Path) -> Vec<(u64, Vec<u64>)> {
    metrics_in(dir)
        .into_iter()
        .filter(|r| !matches!(r, Record::Test { .. }))
        .map(|r| match r {
            Record::Train {
                iteration,
                loss,
                lr,
                grad_norm,
                loss_scale,
                ..
            } => (
                iteration,
                vec![
                    loss.to_bits(),
                    lr.to_bits(),
                    grad_norm.to_bits(),
                    loss_scale.unwrap_or(0.0).to_bits(),
                ],
            ),
            Record::Valid {
                iteration, loss, ..
            }
            | Record::Test {
                iteration, loss, ..
            } => (iteration, vec![loss.to_bits()]),
        })
        .collect()
}

/// Every parameter of the checkpoint `latest` names in `dir`, as bits.
fn parameters(dir: &Path) -> Vec<Vec<u32>> {
    checkpoint_parameters(dir, &args("train_iters: 1\n", 1, FLAT))
        .iter()
        .map(|p| p.iter().map(|x| x.to_bits()).collect())
        .collect()
}

fn assert_same_run(a: &Path, b: &Path, what: &str) {
    let (na, nb) = (numbers(a), numbers(b));
    assert!(na.len() >= 6, "{what}: {} records", na.len());
    assert_eq!(na, nb, "{what}: metrics differ");
    assert!(parameters(a) == parameters(b), "{what}: parameters differ");
}

fn save_at(dir: &Path) -> String {
    format!("save: {}\n", dir.display())
}

const FP16: &str = "fp16: {enabled: true, loss_scale: 0, initial_scale_power: 12, \
                    loss_scale_window: 2, hysteresis: 1}\n";

#[test]
fn offload_equals_burns_adamw_bit_for_bit() {
    let _serial = one_run_at_a_time();
    let fp16 = FP16;
    for (ranks, stage, precision) in [(1, 1, ""), (1, 1, fp16), (2, 1, ""), (2, 2, "")] {
        let what = format!(
            "{ranks} rank(s), ZeRO-{stage}{}",
            if precision.is_empty() { "" } else { ", fp16" }
        );
        let common = format!("train_iters: 6\n{precision}");
        let device = tempfile::tempdir().unwrap();
        run(
            &format!(
                "{common}zero_optimization: {{stage: {stage}}}\n{}",
                save_at(device.path())
            ),
            ranks,
            BURN,
        );
        let host = tempfile::tempdir().unwrap();
        run(
            &format!(
                "{common}zero_optimization: {{stage: {stage}, {OFFLOAD}}}\n{}",
                save_at(host.path())
            ),
            ranks,
            FLAT,
        );
        assert_same_run(device.path(), host.path(), &what);
    }
}

/// The CPU's default step, the flat AdamW without offload, on the paths
/// that `neox-train` takes: one rank, data parallel with and without ZeRO,
/// fp16 and bf16.
#[test]
fn the_cpus_flat_adamw_equals_burns_bit_for_bit() {
    let _serial = one_run_at_a_time();
    let bf16 = "precision: bfloat16\nbf16: {enabled: true}\n";
    for (ranks, stage, precision) in [
        (1, 0, ""),
        (1, 0, FP16),
        (1, 0, bf16),
        (2, 0, ""),
        (2, 2, FP16),
    ] {
        let what = format!("{ranks} rank(s), ZeRO-{stage}, {precision:?}");
        let common = format!("train_iters: 6\n{precision}zero_optimization: {{stage: {stage}}}\n");
        let [burn, flat] = [BURN, FLAT].map(|adam| {
            let dir = tempfile::tempdir().unwrap();
            run(&format!("{common}{}", save_at(dir.path())), ranks, adam);
            dir
        });
        assert_same_run(burn.path(), flat.path(), &what);
    }
}

/// A run resumes, bit for bit, from a checkpoint that either AdamW wrote,
/// with or without offload.
#[test]
fn checkpoints_move_between_burns_flat_and_offloaded_adamw() {
    let _serial = one_run_at_a_time();
    let zero1 = "zero_optimization: {stage: 1}\n".to_string();
    let burn = (zero1.clone(), BURN);
    let flat = (zero1, FLAT);
    let offload = (
        format!("zero_optimization: {{stage: 1, {OFFLOAD}}}\n"),
        FLAT,
    );
    // The old `cpu_offload: true` is the same switch.
    let legacy = (
        "zero_optimization: {stage: 1, cpu_offload: true}\n".to_string(),
        FLAT,
    );
    let whole = tempfile::tempdir().unwrap();
    run(
        &format!("train_iters: 6\n{}{}", burn.0, save_at(whole.path())),
        1,
        burn.1,
    );
    for (what, first, second) in [
        ("offload then offload", &offload, &legacy),
        ("offload then Burn's", &offload, &burn),
        ("Burn's then offload", &burn, &offload),
        ("Burn's then flat", &burn, &flat),
        ("flat then Burn's", &flat, &burn),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let at = save_at(dir.path());
        run(&format!("train_iters: 3\n{}{at}", first.0), 1, first.1);
        run(
            &format!(
                "train_iters: 6\n{}{at}load: {}\n",
                second.0,
                dir.path().display()
            ),
            1,
            second.1,
        );
        // The resumed run appends to the same metrics: the whole history.
        assert_same_run(whole.path(), dir.path(), what);
    }
}

#[test]
fn a_split_model_offloads_bit_for_bit() {
    let _serial = one_run_at_a_time();
    let common = "train_iters: 6\npipe_parallel_size: 2\n";
    let zero1 = "zero_optimization: {stage: 1}\n".to_string();
    let offload = format!("zero_optimization: {{stage: 1, {OFFLOAD}}}\n");
    let [device, host, flat] =
        [(&zero1, BURN), (&offload, FLAT), (&zero1, FLAT)].map(|(zero, adam)| {
            let dir = tempfile::tempdir().unwrap();
            run_split(&format!("{common}{zero}{}", save_at(dir.path())), 2, adam);
            dir
        });
    let (a, b) = (numbers(device.path()), numbers(host.path()));
    assert!(a.len() >= 6, "{a:?}");
    assert_eq!(a, b, "pp=2: metrics differ");
    assert_eq!(a, numbers(flat.path()), "pp=2, flat: metrics differ");
    // The final weights: the test loss after the last step.
    let test = |dir: &Path| -> Vec<u64> {
        metrics_in(dir)
            .into_iter()
            .filter_map(|r| match r {
                Record::Test { loss, .. } => Some(loss.to_bits()),
                _ => None,
            })
            .collect()
    };
    assert_eq!(test(device.path()).len(), 1);
    assert_eq!(test(device.path()), test(host.path()), "pp=2: test loss");
    assert_eq!(
        test(device.path()),
        test(flat.path()),
        "pp=2, flat: test loss"
    );
}
