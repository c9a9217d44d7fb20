//! The loop on an in-memory token stream: the loss falls, and a run resumed
//! from a checkpoint continues bit for bit like the uninterrupted one.

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
log_interval: 1
";

fn args(extra: &str) -> NeoxArgs {
    neox_args(MODEL, extra, 1)
}

fn train_losses(records: &[Record]) -> Vec<(u64, f64)> {
    records
        .iter()
        .filter_map(|r| match r {
            Record::Train {
                iteration, loss, ..
            } => Some((*iteration, *loss)),
            _ => None,
        })
        .collect()
}

#[test]
fn validation_loss_falls() {
    let _serial = one_run_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let args = args(&format!(
        "train_iters: 60\neval_interval: 20\neval_iters: 2\nhidden_dropout: 0\nattention_dropout: 0\nlog_dir: {}\n",
        dir.path().display()
    ));
    let summary = train(&args, &splits(), Device::Cpu).unwrap();
    assert_eq!(summary.iterations, 60);
    let valid: Vec<f64> = metrics_in(dir.path())
        .iter()
        .filter_map(|r| match r {
            Record::Valid { loss, .. } => Some(*loss),
            _ => None,
        })
        .collect();
    assert_eq!(valid.len(), 3);
    let first_train = train_losses(&metrics_in(dir.path()))[0].1;
    // From about ln(32) = 3.47 at the start to well below it.
    assert!(
        valid[2] < 0.6 * first_train,
        "valid {valid:?} vs first train loss {first_train}"
    );
    assert!(summary.test_loss.is_some_and(|l| l < 0.6 * first_train));
    for r in metrics_in(dir.path()) {
        if let Record::Train {
            lr,
            grad_norm,
            tokens_per_s,
            flops_per_s,
            ..
        } = r
        {
            assert!(lr > 0.0 && grad_norm > 0.0 && tokens_per_s > 0.0 && flops_per_s > 0.0);
        }
    }
}

#[test]
fn resumed_run_continues_bit_for_bit() {
    let _serial = one_run_at_a_time();
    // Dropout on and gradient accumulation, so that the RNG and the data
    // position both matter.
    let common = "train_iters: 12\ncheckpoint_factor: 4\neval_interval: 6\neval_iters: 1\n\
                  hidden_dropout: 0.1\nattention_dropout: 0.1\ngradient_accumulation_steps: 2\n";
    let full = tempfile::tempdir().unwrap();
    let path = full.path().display();
    train(
        &args(&format!("{common}save: {path}\n")),
        &splits(),
        Device::Cpu,
    )
    .unwrap();
    let uninterrupted = train_losses(&metrics_in(full.path()));
    assert_eq!(uninterrupted.len(), 12);
    assert!(
        full.path().join("global_step4").is_dir() && full.path().join("global_step12").is_dir()
    );

    // A run that stopped after its checkpoint at iteration 4 (later ones gone,
    // `latest` pointing at 4), resumed with `load`.
    let resumed = tempfile::tempdir().unwrap();
    let rpath = resumed.path().display();
    copy_checkpoint(full.path(), resumed.path(), 4);
    let summary = train(
        &args(&format!("{common}save: {rpath}\nload: {rpath}\n")),
        &splits(),
        Device::Cpu,
    )
    .unwrap();
    assert_eq!(summary.resumed_from, Some(4));
    let after: Vec<(u64, f64)> = train_losses(&metrics_in(resumed.path()));
    assert_eq!(after.first().map(|a| a.0), Some(5));
    let expected: Vec<(u64, f64)> = uninterrupted.into_iter().filter(|(i, _)| *i > 4).collect();
    assert_eq!(after, expected);
    let valid = |dir: &Path| {
        metrics_in(dir)
            .into_iter()
            .filter(|r| matches!(r, Record::Valid { .. } | Record::Test { .. }))
            .filter(|r| r.iteration() > 4)
            .collect::<Vec<_>>()
    };
    assert_eq!(valid(resumed.path()), valid(full.path()));
}

#[test]
fn keeps_only_the_last_checkpoints_and_latest_is_whole() {
    let _serial = one_run_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let a = args(&format!(
        "train_iters: 6\ncheckpoint_factor: 2\nkeep_last_n_checkpoints: 2\neval_iters: 0\nsave: {}\n",
        dir.path().display()
    ));
    train(&a, &splits(), Device::Cpu).unwrap();
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("global_step"))
        .collect();
    names.sort();
    assert_eq!(names, ["global_step4", "global_step6"]);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("latest")).unwrap(),
        "global_step6"
    );
    for file in [
        "model.bin",
        "optim_decay_rank0.bin",
        "optim_no_decay_rank0.bin",
        "state.json",
    ] {
        assert!(
            dir.path().join("global_step6").join(file).is_file(),
            "{file}"
        );
    }
    // No temporary folders left behind.
    assert!(
        std::fs::read_dir(dir.path()).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with('.'))
    );
}

#[test]
fn a_checkpoint_of_another_model_is_refused() {
    let _serial = one_run_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let save = format!(
        "train_iters: 2\neval_iters: 0\nsave: {0}\nload: {0}\n",
        dir.path().display()
    );
    train(&args(&save), &splits(), Device::Cpu).unwrap();
    let other = args(&format!("{save}hidden_size: 64\n"));
    let err = train(&other, &splits(), Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("state.json") && err.contains("differs"),
        "{err}"
    );
}

#[test]
fn an_unfinished_checkpoint_is_never_loaded_and_is_removed() {
    let _serial = one_run_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    // What a run killed while saving step 2 leaves (and an older version's name).
    for name in [".global_step2.partial", ".global_step3.tmp-4242"] {
        let partial = dir.path().join(name);
        std::fs::create_dir_all(&partial).unwrap();
        std::fs::write(partial.join("model.bin"), b"half written").unwrap();
    }
    let a = args(&format!(
        "train_iters: 2\neval_iters: 0\nsave: {0}\nload: {0}\n",
        dir.path().display()
    ));
    let summary = train(&a, &splits(), Device::Cpu).unwrap();
    assert_eq!(summary.resumed_from, None);
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
    assert!(names.contains(&"global_step2".to_string()), "{names:?}");
}
