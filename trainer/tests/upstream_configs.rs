//! GPT-NeoX's own configs (`configs/gpt-neox/`, copied from EleutherAI's
//! repository, Apache-2.0), shrunk to a tiny width by a later config file as
//! GPT-NeoX users combine files, read with nothing that changes the model,
//! data or numerics left unread, and trained for two steps on the CPU.

use std::path::{Path, PathBuf};

use neox_trainer::NeoxArgs;
use neox_trainer::config::keys;
use neox_trainer::data::{Splits, TokenWindows};
use neox_trainer::device::{Device, train};
use neox_trainer::model::{Activation, AttentionKind, NormKind, PosEmb};

mod common;
use common::one_run_at_a_time;

fn upstream(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../configs/gpt-neox")
        .join(name)
}

/// What every shrink file sets: a tiny width, a short run, full precision, one device.
const SHRINK: &str = "
num_layers: 2
hidden_size: 32
num_attention_heads: 4
seq_length: 16
max_position_embeddings: 16
padded_vocab_size: 32
train_micro_batch_size_per_gpu: 2
gradient_accumulation_steps: 1
train_iters: 2
lr_decay_iters: 2
eval_interval: 2
eval_iters: 1
log_interval: 1
fp16: {enabled: false}
precision: fp32
model_parallel_size: 1
";

/// Llama's and Mistral's configs name no optimizer (GPT-NeoX's lr has no default).
const ADAM: &str = "optimizer: {type: Adam, params: {lr: 0.0006}}\n";

fn splits(seq: usize) -> Splits {
    let stream = |salt: u32| -> Vec<u32> {
        (0..(seq as u32 + 1) * 8)
            .map(|i| (i * 7 + salt) % 31 + 1)
            .collect()
    };
    Splits {
        train: Box::new(TokenWindows::new(stream(0), seq)),
        valid: Some(Box::new(TokenWindows::new(stream(3), seq))),
        test: None,
    }
}

/// Reads `files` then the shrink file, checks that every option left unread
/// changes nothing training computes, and trains two steps.
fn shrink_and_train(files: &[&str], extra: &str) -> NeoxArgs {
    let _serial = one_run_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let shrink = dir.path().join("shrink.yml");
    std::fs::write(&shrink, SHRINK).unwrap();
    let this_test = dir.path().join("this-test.yml");
    std::fs::write(&this_test, extra).unwrap();
    let mut paths: Vec<PathBuf> = files.iter().map(|f| upstream(f)).collect();
    paths.extend([shrink, this_test]);
    let args = NeoxArgs::from_files(&paths).unwrap_or_else(|e| panic!("{files:?}: {e}"));
    assert!(
        args.unimplemented.is_empty(),
        "{files:?}: {:?}",
        args.unimplemented
    );
    // Options left unread are at values that change nothing (else they would
    // be in `unimplemented`); none of them is a model option.
    for (key, file) in &args.not_acted_on {
        let class = keys::classify(key).map(|(_, what)| what);
        assert_ne!(
            class,
            Some("changes the model"),
            "{files:?}: `{key}` from {} is left unread",
            file.display()
        );
    }
    let summary = train(&args, &splits(args.model.seq_length), Device::Cpu)
        .unwrap_or_else(|e| panic!("{files:?}: {e}"));
    assert_eq!(summary.iterations, 2, "{files:?}");
    let valid = summary.last_valid_loss.unwrap();
    assert!(valid.is_finite() && valid > 0.0, "{files:?}: {valid}");
    args
}

#[test]
fn gpt_neox_125m_and_bf16_125m() {
    let m = shrink_and_train(&["125M.yml"], "").model;
    assert_eq!((m.pos_emb, m.norm), (PosEmb::Rotary, NormKind::LayerNorm));
    assert!(!m.tied_embeddings && !m.gpt_j_residual);
    let m = shrink_and_train(&["bf16_125M.yml"], "").model;
    assert_eq!(m.activation, Activation::Gelu);
}

#[test]
fn pythia_every_size() {
    for size in [
        "14M", "31M", "70M", "160M", "410M", "1B", "1-4B", "2-8B", "6-9B", "12B",
    ] {
        let m = shrink_and_train(
            &[&format!("pythia/{size}.yml")],
            "attention_config: [[[flash], all]]\n",
        )
        .model;
        // Pythia: parallel residual, a quarter of each head rotated, the fused
        // (tanh) GELU, flash attention as global attention.
        assert!(m.gpt_j_residual, "{size}");
        assert_eq!(m.rotary_pct, 0.25, "{size}");
        assert_eq!(m.activation, Activation::GeluTanh, "{size}");
        assert_eq!(m.attention_config, [AttentionKind::Flash; 2], "{size}");
    }
}

#[test]
fn llama_and_llama2_7b() {
    for file in ["llama/7B.yml", "llama2/7B.yml"] {
        // Their mlp_multiple_of 256 stays: int(128 x 2/3) = 85 rounds to 512
        // outputs of dense_h_to_4h and 256 inputs of dense_4h_to_h.
        let m = shrink_and_train(&[file], &format!("intermediate_size: 128\n{ADAM}")).model;
        assert_eq!(
            (m.norm, m.activation, m.intermediate_size),
            (NormKind::RmsNorm, Activation::Swiglu, 256),
            "{file}"
        );
        assert!(!m.use_bias_in_norms && !m.use_bias_in_attn_linear, "{file}");
    }
}

#[test]
fn mistral_7b() {
    // GPT-NeoX's own intermediate_size 14336 cannot be built by its
    // ParallelMLP with swiglu (9558 outputs, 4778 inputs): shrunk to one that can.
    let m = shrink_and_train(
        &["mistral/7B.yml"],
        &format!(
            "intermediate_size: 96\nnum_kv_heads: 2\nsliding_window_width: 4\n\
             attention_config: [[[flash], all]]\n{ADAM}"
        ),
    )
    .model;
    assert_eq!(
        (m.num_kv_heads, m.sliding_window_width, m.intermediate_size),
        (Some(2), Some(4), 32)
    );
}

#[test]
fn sparse_on_125m() {
    // sparse.yml: local and global layers alternating, local windows of 32
    // blocks of 16 tokens: the sequence must hold 32 blocks.
    let m = shrink_and_train(
        &["125M.yml", "sparse.yml"],
        "seq_length: 512\nmax_position_embeddings: 512\ntrain_micro_batch_size_per_gpu: 1\n",
    )
    .model;
    assert_eq!(
        m.attention_config,
        [AttentionKind::Local, AttentionKind::Global]
    );
    assert_eq!(m.sparsity_config.num_local_blocks, Some(32));
}

#[test]
fn the_unshrunk_mistral_config_is_refused_with_its_mlp_width_named() {
    let err = NeoxArgs::from_files(&[upstream("mistral/7B.yml")])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("intermediate_size") && err.contains("9558") && err.contains("4778"),
        "{err}"
    );
}
