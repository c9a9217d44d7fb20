//! GPT-NeoX's model options against independent implementations: tiny random
//! models made by Hugging Face transformers (Llama, Mistral, MPT, GPT-2, OPT,
//! GPT-J;
//! see `scripts/fixtures/model_options.py`), each described by a GPT-NeoX
//! YAML config that neox reads like any other. neox loads the fixture's
//! weights and must reproduce transformers' logits to 1e-4 and loss to 1e-5.

use std::path::{Path, PathBuf};

use burn::backend::Flex;
use burn::tensor::{Int, Tensor, TensorData};
use neox_trainer::model::{Activation, ModelConfig, NormKind, PosEmb, cross_entropy};
use neox_trainer::{NeoxArgs, hf};
use safetensors::{Dtype, SafeTensors};

type B = Flex;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/model-options")
        .join(name)
}

/// One tensor of `reference.safetensors` as little-endian bytes.
fn tensor(file: &SafeTensors, name: &str, dtype: Dtype) -> (Vec<usize>, Vec<u8>) {
    let view = file.tensor(name).unwrap();
    assert_eq!(view.dtype(), dtype, "{name}");
    (view.shape().to_vec(), view.data().to_vec())
}

/// Reads the fixture's config, checks what it must say, loads the weights and
/// compares logits and loss with transformers'.
fn check(name: &str) -> NeoxArgs {
    let dir = fixture(name);
    let args = NeoxArgs::from_files(&[dir.join("neox.yml")]).unwrap();
    // Every option in the fixture's config is acted on.
    assert!(args.unimplemented.is_empty(), "{:?}", args.unimplemented);
    assert!(args.not_acted_on.is_empty(), "{:?}", args.not_acted_on);
    let mut config = args.model.clone();
    config.vocab_size = args.vocab_size().unwrap();
    let (max_diff, spread, loss, expected) = compare(name, config);
    assert!(
        spread > 1.0,
        "{name}: logits too small to tell models apart"
    );
    assert!(max_diff < 1e-4, "{name}: logits differ by up to {max_diff}");
    assert!(
        (loss - expected).abs() < 1e-5,
        "{name}: loss {loss} vs {expected}"
    );
    args
}

/// Loads fixture `name`'s weights into a model of `config`: the largest logit
/// difference from transformers', the largest logit, our loss and transformers'.
fn compare(name: &str, config: ModelConfig) -> (f32, f32, f64, f64) {
    let dir = fixture(name);
    let device = Default::default();
    let mut model = config.init::<B>(&device);
    hf::load_weights(&mut model, &dir.join("model.safetensors"), &device).unwrap();

    let bytes = std::fs::read(dir.join("reference.safetensors")).unwrap();
    let reference = SafeTensors::deserialize(&bytes).unwrap();
    let (shape, ids) = tensor(&reference, "input_ids", Dtype::I64);
    let ids: Vec<i64> = ids
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let (b, t) = (shape[0], shape[1]);
    let tokens = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [b, t]), &device);
    let logits = model.forward(tokens.clone());
    let ours = logits.clone().into_data().to_vec::<f32>().unwrap();
    let (_, theirs) = tensor(&reference, "logits", Dtype::F32);
    let theirs: Vec<f32> = theirs
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(ours.len(), theirs.len(), "{name}");
    let max_diff = ours
        .iter()
        .zip(&theirs)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    let spread = theirs.iter().fold(0.0f32, |m, x| m.max(x.abs()));

    // transformers' loss: position i predicts token i + 1.
    let v = logits.dims()[2];
    let shifted = logits.narrow(1, 0, t - 1).reshape([b, t - 1, v]);
    let loss = cross_entropy(shifted, tokens.narrow(1, 1, t - 1)).into_scalar() as f64;
    let (_, expected) = tensor(&reference, "loss", Dtype::F64);
    let expected = f64::from_le_bytes(expected[..8].try_into().unwrap());
    (max_diff, spread, loss, expected)
}

#[test]
fn llama_rmsnorm_swiglu_grouped_query_attention() {
    let m = check("llama-gqa").model;
    assert_eq!(
        (m.norm, m.activation, m.num_kv_heads),
        (NormKind::RmsNorm, Activation::Swiglu, Some(2))
    );
    // intermediate_size 64 with mlp_multiple_of 8: GPT-NeoX's rounding gives 24.
    assert_eq!(m.intermediate_size, 24);
    assert!(!m.tied_embeddings && !m.use_bias_in_attn_linear && !m.use_bias_in_mlp);
}

#[test]
fn mistral_sliding_window_multi_query_tied() {
    let m = check("mistral-swa-mqa").model;
    assert_eq!((m.num_kv_heads, m.sliding_window_width), (Some(1), Some(3)));
    assert!(m.tied_embeddings);
}

#[test]
fn mpt_alibi_without_biases_tied() {
    let m = check("mpt-alibi").model;
    assert_eq!(m.pos_emb, PosEmb::Alibi);
    assert!(m.tied_embeddings && !m.use_bias_in_norms);
}

#[test]
fn gpt2_learned_positions_tied() {
    let m = check("gpt2-learned").model;
    assert_eq!(m.pos_emb, PosEmb::Learned);
    assert!(m.tied_embeddings);
}

#[test]
fn gpt2_with_gpt_neox_sinusoidal_positions_and_fused_gelu() {
    let m = check("gpt2-sinusoidal").model;
    assert_eq!(
        (m.pos_emb, m.activation),
        (PosEmb::Sinusoidal, Activation::GeluTanh)
    );
}

#[test]
fn opt_relu_with_position_offset() {
    let m = check("opt-relu").model;
    assert_eq!((m.activation, m.opt_pos_emb_offset), (Activation::Relu, 2));
}

#[test]
fn weights_of_another_shape_are_refused_with_the_tensor_named() {
    // The Llama fixture's weights (2 key/value heads) in a model with 4.
    let dir = fixture("llama-gqa");
    let args = NeoxArgs::from_files(&[dir.join("neox.yml")]).unwrap();
    let mut config = args.model.clone();
    config.vocab_size = args.vocab_size().unwrap();
    config.num_kv_heads = None;
    let device = Default::default();
    let mut model = config.init::<B>(&device);
    let err = hf::load_weights(&mut model, &dir.join("model.safetensors"), &device)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("query_key_value") && err.contains("model.safetensors"),
        "{err}"
    );
}

#[test]
fn gptj_parallel_residual_with_one_norm() {
    let args = check("gptj-tied");
    let m = &args.model;
    assert!(m.gpt_j_residual && m.gpt_j_tied && !m.use_bias_in_attn_linear);
    assert_eq!((m.rotary_dims(), m.activation), (4, Activation::GeluTanh));
    // The fixture's second norm holds other values: untied, the model differs.
    let mut untied = m.clone();
    untied.gpt_j_tied = false;
    untied.vocab_size = args.vocab_size().unwrap();
    let (max_diff, ..) = compare("gptj-tied", untied);
    assert!(max_diff > 1e-2, "untied differs by only {max_diff}");
}
