//! Data parallelism on threads: N ranks train exactly as one device that
//! accumulates the same N micro batches, with and without ZeRO; checkpoints
//! saved by N ranks resume on fewer.

use std::path::Path;

use neox_trainer::NeoxArgs;

mod common;
use common::{
    checkpoint_parameters, copy_checkpoint, logged_numbers, neox_args, one_run_at_a_time,
    train_data_parallel,
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
init_method: small_init
output_layer_init_method: wang_init
optimizer: {type: Adam, params: {lr: 0.01, betas: [0.9, 0.95]}}
lr_decay_style: cosine
warmup: 0.1
min_lr: 0.001
weight_decay: 0.1
hidden_dropout: 0.0
attention_dropout: 0.0
train_micro_batch_size_per_gpu: 2
log_interval: 1
eval_interval: 3
eval_iters: 2
";

/// Clipping at this norm is active on every step of these runs (checked).
const CLIP: f64 = 0.05;

fn args(extra: &str, world: usize) -> NeoxArgs {
    neox_args(MODEL, &format!("gradient_clipping: {CLIP}\n{extra}"), world)
}

/// Trains on `ranks` threads (one device when 1 and no ZeRO).
fn run(extra: &str, ranks: usize) {
    train_data_parallel(&args(extra, ranks), ranks).unwrap_or_else(|e| panic!("{e}"));
}

/// The metrics that must agree: everything but the timings.
fn numbers(dir: &Path) -> Vec<(String, u64, f64, f64, f64)> {
    let numbers = logged_numbers(dir);
    for (kind, iteration, _, grad_norm, _) in &numbers {
        assert!(
            kind != "train" || *grad_norm > CLIP,
            "clipping inactive at {iteration}: {grad_norm}"
        );
    }
    numbers
}

/// Every parameter of the checkpoint `latest` names in `dir`, in order.
fn parameters(dir: &Path) -> Vec<Vec<f32>> {
    checkpoint_parameters(dir, &args("train_iters: 1\n", 1))
}

fn assert_same_run(a: &Path, b: &Path, what: &str) {
    assert_eq!(numbers(a), numbers(b), "{what}: metrics differ");
    assert!(parameters(a) == parameters(b), "{what}: parameters differ");
}

#[test]
fn data_parallel_equals_one_device_accumulating() {
    let _serial = one_run_at_a_time();
    for ranks in [2, 3, 4] {
        let one = tempfile::tempdir().unwrap();
        run(
            &format!(
                "train_iters: 6\ngradient_accumulation_steps: {ranks}\nsave: {}\n",
                one.path().display()
            ),
            1,
        );
        let many = tempfile::tempdir().unwrap();
        run(
            &format!("train_iters: 6\nsave: {}\n", many.path().display()),
            ranks,
        );
        assert_same_run(one.path(), many.path(), &format!("dp={ranks}"));
    }
}

#[test]
fn zero_stages_equal_plain_data_parallelism() {
    let _serial = one_run_at_a_time();
    for ranks in [2, 3] {
        let plain = tempfile::tempdir().unwrap();
        let common = "train_iters: 5\ngradient_accumulation_steps: 2\n";
        run(
            &format!("{common}save: {}\n", plain.path().display()),
            ranks,
        );
        for stage in [1, 2] {
            let sharded = tempfile::tempdir().unwrap();
            run(
                &format!(
                    "{common}zero_optimization: {{stage: {stage}}}\nsave: {}\n",
                    sharded.path().display()
                ),
                ranks,
            );
            assert_same_run(
                plain.path(),
                sharded.path(),
                &format!("dp={ranks} zero={stage}"),
            );
            // Each rank wrote its own part of the optimizer state, smaller
            // than the whole state that plain data parallelism keeps.
            let size = |p: &Path| std::fs::metadata(p).unwrap().len();
            let whole = size(&plain.path().join("global_step5/optim_decay_rank0.bin"));
            let step = sharded.path().join("global_step5");
            for r in 0..ranks {
                let part = size(&step.join(format!("optim_decay_rank{r}.bin")));
                assert!(part < whole, "rank {r} holds {part} bytes of {whole}");
            }
        }
    }
}

#[test]
fn a_zero_checkpoint_of_four_ranks_resumes_on_two_and_one() {
    let _serial = one_run_at_a_time();
    // 4 ranks x 1 micro batch = 2 ranks x 2 = 1 x 4: the same global batches.
    let full = tempfile::tempdir().unwrap();
    run(
        &format!(
            "train_iters: 6\ncheckpoint_factor: 3\nzero_optimization: {{stage: 1}}\nsave: {}\n",
            full.path().display()
        ),
        4,
    );
    let uninterrupted: Vec<_> = numbers(full.path())
        .into_iter()
        .filter(|r| r.1 > 3)
        .collect();
    for (ranks, accumulation, stage) in [(1, 4, 0), (2, 2, 1)] {
        let resumed = tempfile::tempdir().unwrap();
        copy_checkpoint(full.path(), resumed.path(), 3);
        run(
            &format!(
                "train_iters: 6\ngradient_accumulation_steps: {accumulation}\n\
                 zero_optimization: {{stage: {stage}}}\nsave: {0}\nload: {0}\n",
                resumed.path().display()
            ),
            ranks,
        );
        let after = numbers(resumed.path());
        assert_eq!(after.len(), uninterrupted.len(), "dp={ranks}");
        for (a, b) in after.iter().zip(&uninterrupted) {
            assert_eq!((&a.0, a.1), (&b.0, b.1));
            if ranks == 1 {
                // One device adds the micro batches in rank order: exact.
                assert_eq!(a, b, "dp={ranks}");
            } else {
                // Each rank adds its two micro batches first: rounding only.
                assert!(
                    (a.2 - b.2).abs() < 1e-5 && (a.3 - b.3).abs() < 1e-5,
                    "{a:?} vs {b:?}"
                );
            }
        }
    }
}
