//! Mixed precision through the loop on an in-memory token stream: bf16 and
//! fp16 runs follow the f32 run's loss curve; fp16's loss scaler skips the
//! steps whose gradients overflow, and a resumed fp16 run (scaler state from
//! the checkpoint) continues bit for bit; a bf16-trained model exports to
//! Hugging Face and loads back.

use std::path::Path;

use neox_trainer::NeoxArgs;
use neox_trainer::device::{Device, train};
use neox_trainer::metrics::Record;

mod common;
use common::{copy_checkpoint, metrics_in, neox_args, one_run_at_a_time, splits};

const MODEL: &str = "
num_layers: 2
hidden_size: 32
num_attention_heads: 4
seq_length: 16
pos_emb: rotary
rotary_pct: 0.5
padded_vocab_size: 32
init_method: small_init
output_layer_init_method: wang_init
optimizer: {type: Adam, params: {lr: 0.01, betas: [0.9, 0.95]}}
lr_decay_style: cosine
warmup: 0.1
min_lr: 0.001
weight_decay: 0.1
gradient_clipping: 1.0
train_micro_batch_size_per_gpu: 4
hidden_dropout: 0
attention_dropout: 0
";

fn args(extra: &str) -> NeoxArgs {
    neox_args(MODEL, extra, 1)
}

struct Interval {
    iteration: u64,
    loss: f64,
    loss_scale: Option<f64>,
    skipped: u64,
}

fn intervals(dir: &Path) -> Vec<Interval> {
    metrics_in(dir)
        .into_iter()
        .filter_map(|r| match r {
            Record::Train {
                iteration,
                loss,
                loss_scale,
                skipped_iters,
                ..
            } => Some(Interval {
                iteration,
                loss,
                loss_scale,
                skipped: skipped_iters,
            }),
            _ => None,
        })
        .collect()
}

/// Trains 200 steps in `precision` (extra YAML) and returns the logged intervals.
fn curve(precision: &str) -> Vec<Interval> {
    let dir = tempfile::tempdir().unwrap();
    let summary = train(
        &args(&format!(
            "train_iters: 200\nlog_interval: 20\neval_iters: 0\nlog_dir: {}\n{precision}",
            dir.path().display()
        )),
        &splits(),
        Device::Cpu,
    )
    .unwrap();
    assert_eq!(summary.iterations, 200);
    intervals(dir.path())
}

/// The tolerance: each 20-step mean loss of a half-precision run within 0.02
/// nats of the f32 run's (measured: at most 0.002 for bf16 and fp16).
const TOLERANCE: f64 = 0.02;

#[test]
fn bf16_and_fp16_follow_the_f32_loss_curve() {
    let _serial = one_run_at_a_time();
    let f32_run = curve("");
    let bf16 = curve("bf16: {enabled: true}\n");
    let fp16 = curve("fp16: {enabled: true, loss_scale: 0, initial_scale_power: 12}\n");
    assert_eq!(f32_run.len(), 10);
    let first = f32_run[0].loss;
    let last = f32_run[9].loss;
    assert!(last < 0.6 * first, "f32 did not learn: {first} -> {last}");
    for (name, run) in [("bf16", &bf16), ("fp16", &fp16)] {
        assert_eq!(run.len(), f32_run.len());
        for (h, f) in run.iter().zip(&f32_run) {
            assert_eq!(h.iteration, f.iteration);
            assert!(
                (h.loss - f.loss).abs() <= TOLERANCE,
                "{name} at {}: {} vs f32 {}",
                h.iteration,
                h.loss,
                f.loss
            );
        }
        assert!(run[9].loss < 0.6 * run[0].loss, "{name} did not learn");
        // Not the f32 run under another name.
        assert!(run.iter().zip(&f32_run).any(|(h, f)| h.loss != f.loss));
    }
    for (name, run) in [("f32", &f32_run), ("bf16", &bf16), ("fp16", &fp16)] {
        let losses: Vec<String> = run.iter().map(|i| format!("{:.4}", i.loss)).collect();
        eprintln!("{name}: {}", losses.join(" "));
    }
    assert!(
        bf16.iter()
            .all(|i| i.loss_scale.is_none() && i.skipped == 0)
    );
    // 2^12 with this model does not overflow: the scale only grows, after
    // 1000 clean steps (DeepSpeed's window), so not within 200.
    assert!(fp16.iter().all(|i| i.loss_scale == Some(4096.0)));
}

/// The first step's gradient norm (before clipping) in `precision`.
fn first_norm(precision: &str) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    train(
        &args(&format!(
            "train_iters: 1\nlog_interval: 1\neval_iters: 0\ngradient_accumulation_steps: 3\n\
             log_dir: {}\n{precision}",
            dir.path().display()
        )),
        &splits(),
        Device::Cpu,
    )
    .unwrap();
    match metrics_in(dir.path())[0] {
        Record::Train { grad_norm, .. } => grad_norm,
        ref other => panic!("{other:?}"),
    }
}

#[test]
fn every_micro_batch_counts_in_half_precision() {
    let _serial = one_run_at_a_time();
    // With 3 micro batches, losing any one's gradient would move the norm by
    // far more than half precision does.
    let f32_norm = first_norm("");
    for precision in ["bf16: {enabled: true}\n", "fp16: {enabled: true}\n"] {
        let norm = first_norm(precision);
        assert!(
            (norm - f32_norm).abs() <= 0.01 * f32_norm,
            "{precision}: {norm} vs f32 {f32_norm}"
        );
    }
}

#[test]
fn fp16_overflows_skip_steps_and_a_resumed_run_continues_bit_for_bit() {
    let _serial = one_run_at_a_time();
    // 2^40 overflows fp16 gradients: steps are skipped, the first using up
    // the hysteresis (2), each later one halving the scale, until it fits; a
    // window of 5 then doubles it, which overflows again now and then.
    let common = "train_iters: 40\nlog_interval: 1\ncheckpoint_factor: 20\neval_iters: 0\n\
                  fp16: {enabled: true, initial_scale_power: 40, loss_scale_window: 5, hysteresis: 2}\n";
    let full = tempfile::tempdir().unwrap();
    let path = full.path().display();
    train(
        &args(&format!("{common}save: {path}\n")),
        &splits(),
        Device::Cpu,
    )
    .unwrap();
    let run = intervals(full.path());
    assert_eq!(run.len(), 40);
    // The first steps all overflow; the scale (logged after each step) stays
    // for the first, then halves at each.
    assert!(
        run[..4].iter().all(|i| i.skipped == 1),
        "first steps applied"
    );
    let scales: Vec<f64> = run.iter().map(|i| i.loss_scale.unwrap()).collect();
    assert_eq!(scales[..4], [40, 39, 38, 37].map(|p| 2f64.powi(p)));
    let skipped: u64 = run.iter().map(|i| i.skipped).sum();
    assert!(skipped > 10 && skipped < 40, "{skipped} skipped steps");
    // Applied steps learn.
    let applied: Vec<f64> = run
        .iter()
        .filter(|i| i.skipped == 0)
        .map(|i| i.loss)
        .collect();
    assert!(applied.last().unwrap() < &(0.8 * applied[0]), "{applied:?}");
    // The checkpoint holds the scaler.
    let state = std::fs::read_to_string(full.path().join("global_step20/state.json")).unwrap();
    assert!(
        state.contains("loss_scaler") && state.contains("skipped_steps"),
        "{state}"
    );

    let resumed = tempfile::tempdir().unwrap();
    let rpath = resumed.path().display();
    copy_checkpoint(full.path(), resumed.path(), 20);
    let summary = train(
        &args(&format!("{common}save: {rpath}\nload: {rpath}\n")),
        &splits(),
        Device::Cpu,
    )
    .unwrap();
    assert_eq!(summary.resumed_from, Some(20));
    let after = intervals(resumed.path());
    let expected: Vec<&Interval> = run.iter().filter(|i| i.iteration > 20).collect();
    assert_eq!(after.len(), expected.len());
    for (a, e) in after.iter().zip(expected) {
        assert_eq!(
            (a.iteration, a.loss, a.loss_scale, a.skipped),
            (e.iteration, e.loss, e.loss_scale, e.skipped)
        );
    }
}

#[test]
fn a_bf16_trained_model_exports_to_hugging_face_and_loads() {
    let _serial = one_run_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().display();
    let args = args(&format!(
        "train_iters: 10\nlog_interval: 5\neval_iters: 0\nbf16: {{enabled: true}}\nsave: {path}\n"
    ));
    train(&args, &splits(), Device::Cpu).unwrap();
    // The checkpoint's f32 master weights, read back as training would.
    let ckpt = dir.path().join("global_step10");
    let state: neox_trainer::checkpoint::TrainState =
        serde_json::from_str(&std::fs::read_to_string(ckpt.join("state.json")).unwrap()).unwrap();
    type Ad = neox_trainer::device::Cpu;
    type B = burn::backend::Flex;
    let device = Default::default();
    let restored = neox_trainer::checkpoint::load::<Ad>(
        &ckpt,
        state.model.init::<Ad>(&device),
        neox_trainer::optim::NeoxOptimizer::new(&args.optim),
        &device,
        &neox_trainer::dist::DataParallel::single(),
    )
    .unwrap();
    let model = burn::module::AutodiffModule::valid(&restored.model);
    let hf = dir.path().join("hf");
    neox_trainer::hf::save(&model, &hf).unwrap();
    let back = neox_trainer::hf::load::<B>(&hf, &device).unwrap();
    let tokens = burn::tensor::Tensor::<B, 2, burn::tensor::Int>::from_data(
        [[1, 4, 7, 10, 13, 16, 19, 22]],
        &device,
    );
    let want = model.forward(tokens.clone()).into_data();
    back.forward(tokens).into_data().assert_eq(&want, true);
}
