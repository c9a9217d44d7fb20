//! GPT-NeoX's sparse attention: the block layouts equal DeepSpeed's
//! `make_layout` (fixture made by DeepSpeed's own Python, see
//! `scripts/fixtures/sparse_layouts.py`), a sparse layer computes dense
//! attention under its block mask, and `attention_config` / `sparsity_config`
//! are read as GPT-NeoX reads them.

use std::path::Path;

use burn::backend::Flex;
use burn::tensor::{Int, Tensor, TensorData};
use neox_trainer::NeoxArgs;
use neox_trainer::config::yaml::Options;
use neox_trainer::model::sparse::{PyRandom, make_layout};
use neox_trainer::model::{AttentionKind, ModelConfig, PosEmb, SparsityConfig};
use serde_json::Value;

type B = Flex;

fn fixture() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sparse-layouts.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn bits(layout: &[u8]) -> String {
    layout.iter().map(|b| char::from(b'0' + b)).collect()
}

#[test]
fn layouts_equal_deepspeeds_for_every_kind_at_two_sizes() {
    let fixture = fixture();
    let cases = fixture["layouts"].as_array().unwrap();
    assert_eq!(cases.len(), 20);
    let mut kinds_sizes = std::collections::BTreeSet::new();
    for case in cases {
        let kind = AttentionKind::from_neox(case["kind"].as_str().unwrap()).unwrap();
        let config: SparsityConfig =
            serde_json::from_value(case["sparsity_config"].clone()).unwrap();
        let heads = case["heads"].as_u64().unwrap() as usize;
        let seq = case["seq_length"].as_u64().unwrap() as usize;
        let mut rng = PyRandom::new(case["seed"].as_u64().unwrap());
        let layout = make_layout(kind, &config, heads, seq, &mut rng).unwrap();
        let shape: Vec<usize> = serde_json::from_value(case["shape"].clone()).unwrap();
        assert_eq!(
            shape,
            [layout.heads, layout.blocks, layout.blocks],
            "{case}"
        );
        assert_eq!(
            bits(&layout.to_bits()),
            case["layout"].as_str().unwrap(),
            "{kind:?} {config:?} at {seq}"
        );
        kinds_sizes.insert((case["kind"].as_str().unwrap().to_string(), seq));
    }
    // fixed, variable, bigbird, bslongformer and local, each at 96 and 160 tokens.
    assert_eq!(kinds_sizes.len(), 10);
}

#[test]
fn a_models_layers_draw_their_random_blocks_in_order() {
    let fixture = fixture();
    let m = &fixture["model"];
    let kinds: Vec<AttentionKind> = m["attention_config"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| AttentionKind::from_neox(k.as_str().unwrap()).unwrap())
        .collect();
    let mut sparsity: SparsityConfig =
        serde_json::from_value(m["sparsity_config"].clone()).unwrap();
    sparsity.seed = m["seed"].as_u64().unwrap();
    let config = ModelConfig {
        num_layers: kinds.len(),
        num_attention_heads: m["heads"].as_u64().unwrap() as usize,
        seq_length: m["seq_length"].as_u64().unwrap() as usize,
        attention_config: kinds,
        sparsity_config: sparsity,
        ..ModelConfig::default()
    };
    let ours = config.sparse_layouts().unwrap();
    let theirs = m["layouts"].as_array().unwrap();
    assert_eq!(ours.len(), theirs.len());
    for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
        match (a, b.as_str()) {
            (None, None) => {}
            (Some(a), Some(b)) => assert_eq!(bits(&a.to_bits()), b, "layer {i}"),
            _ => panic!("layer {i}: {a:?} vs {b:?}"),
        }
    }
}

/// The attention output of a sparse layer, written out in f64: causal
/// softmax over the keys whose block the head's layout sets.
#[test]
fn a_sparse_layer_is_dense_attention_under_its_block_mask() {
    let device = Default::default();
    let config = ModelConfig {
        num_layers: 1,
        hidden_size: 16,
        num_attention_heads: 2,
        seq_length: 16,
        max_position_embeddings: 16,
        vocab_size: 8,
        pos_emb: PosEmb::Alibi,
        init_method_std: 0.5,
        attention_config: vec![AttentionKind::SparseFixed],
        sparsity_config: SparsityConfig {
            block: Some(4),
            different_layout_per_head: Some(true),
            num_local_blocks: Some(2),
            num_different_global_patterns: Some(2),
            ..SparsityConfig::default()
        },
        ..ModelConfig::default()
    };
    let layout = config.sparse_layouts().unwrap()[0].clone().unwrap();
    // Heads differ and the layout is sparse: some causal blocks are hidden.
    let bits = layout.to_bits();
    assert_ne!(bits[..16], bits[16..]);
    assert!((0..4).any(|r| (0..=r).any(|c| !layout.get(0, r, c))));

    let model = config.init::<B>(&device);
    let attention = &model.layers[0].attention;
    let x = Tensor::<B, 3>::random(
        [2, 16, 16],
        burn::tensor::Distribution::Normal(0.0, 1.0),
        &device,
    );
    let ctx = neox_trainer::model::Context {
        mask: neox_trainer::model::attention::causal_mask(16, None, &device),
        rotary: None,
        // A sparse layer ignores ALiBi, as GPT-NeoX's does.
        alibi: Some(neox_trainer::model::position::alibi_bias(2, 16, &device)),
    };
    let ours = attention
        .forward(x.clone(), &ctx)
        .into_data()
        .to_vec::<f32>()
        .unwrap();

    let to64 = |t: Tensor<B, 2>| -> Vec<f64> {
        t.into_data()
            .to_vec::<f32>()
            .unwrap()
            .iter()
            .map(|&v| v as f64)
            .collect()
    };
    let wqkv = to64(attention.query_key_value.weight.val()); // [in 16, out 48]
    let bqkv = to64(
        attention
            .query_key_value
            .bias
            .as_ref()
            .unwrap()
            .val()
            .unsqueeze(),
    );
    let wo = to64(attention.dense.weight.val()); // [16, 16]
    let bo = to64(attention.dense.bias.as_ref().unwrap().val().unsqueeze());
    let xs: Vec<f64> = x
        .into_data()
        .to_vec::<f32>()
        .unwrap()
        .iter()
        .map(|&v| v as f64)
        .collect();
    let (t, hidden, heads, d) = (16, 16, 2, 8);
    let mut expected = Vec::new();
    for b in 0..2 {
        let row = |i: usize| &xs[(b * t + i) * hidden..(b * t + i + 1) * hidden];
        // qkv[i][o] = x_i . W[:, o] + bias[o]
        let qkv: Vec<Vec<f64>> = (0..t)
            .map(|i| {
                (0..3 * hidden)
                    .map(|o| {
                        (0..hidden)
                            .map(|k| row(i)[k] * wqkv[k * 3 * hidden + o])
                            .sum::<f64>()
                            + bqkv[o]
                    })
                    .collect()
            })
            .collect();
        // Per head h the features [h*3d, h*3d+d) are q, then k, then v.
        let mut context = vec![vec![0.0; hidden]; t];
        for h in 0..heads {
            let part = |i: usize, p: usize| &qkv[i][h * 3 * d + p * d..h * 3 * d + (p + 1) * d];
            for (i, ctx_row) in context.iter_mut().enumerate() {
                let visible: Vec<usize> =
                    (0..=i).filter(|&j| layout.get(h, i / 4, j / 4)).collect();
                let scores: Vec<f64> = visible
                    .iter()
                    .map(|&j| {
                        (0..d).map(|e| part(i, 0)[e] * part(j, 1)[e]).sum::<f64>()
                            / (d as f64).sqrt()
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::MIN, f64::max);
                let exps: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let sum: f64 = exps.iter().sum();
                for (&j, e) in visible.iter().zip(&exps) {
                    for k in 0..d {
                        ctx_row[h * d + k] += e / sum * part(j, 2)[k];
                    }
                }
            }
        }
        for ctx_row in &context {
            for o in 0..hidden {
                let v: f64 = (0..hidden)
                    .map(|k| ctx_row[k] * wo[k * hidden + o])
                    .sum::<f64>()
                    + bo[o];
                expected.push(v);
            }
        }
    }
    let max_diff = ours
        .iter()
        .zip(&expected)
        .map(|(a, b)| (*a as f64 - b).abs())
        .fold(0.0, f64::max);
    assert!(max_diff < 1e-4, "sparse attention differs by {max_diff}");
}

fn parse(extra: &str) -> Result<NeoxArgs, String> {
    let base = "num_layers: 4\nhidden_size: 32\nnum_attention_heads: 4\nseq_length: 64\n\
                train_micro_batch_size_per_gpu: 2\ntrain_iters: 1\n\
                optimizer: {type: Adam, params: {lr: 0.001}}\n";
    let mut o = Options::default();
    o.merge_str(base, Path::new("base.yml")).unwrap();
    o.merge_str(extra, Path::new("sparse.yml")).unwrap();
    NeoxArgs::from_options(o).map_err(|e| e.to_string())
}

#[test]
fn attention_config_expands_as_gpt_neox_expands_it() {
    use AttentionKind::*;
    let kinds = |extra: &str| parse(extra).unwrap().model.attention_config;
    assert_eq!(
        kinds("attention_config: [[[local, global], all]]\n"),
        [Local, Global, Local, Global]
    );
    assert_eq!(
        kinds(
            "attention_config: [[[flash], 1], [[sparse_fixed, bigbird], 1], [[bslongformer], 1]]\n"
        ),
        [Flash, SparseFixed, Bigbird, Bslongformer]
    );
    assert_eq!(
        kinds("attention_config: [global, sparse_variable, local, flash]\n"),
        [Global, SparseVariable, Local, Flash]
    );
    // The seed of Python's random is the run's seed.
    let args = parse("attention_config: [[[local], all]]\nseed: 77\n").unwrap();
    assert_eq!(args.model.sparsity_config.seed, 77);
    assert!(args.unimplemented.is_empty() && args.not_acted_on.is_empty());
}

#[test]
fn sparse_configs_gpt_neox_or_deepspeed_refuse_are_refused_by_name() {
    for (extra, needle) in [
        ("attention_config: [[[global], 3]]\n", "gives 3 layers"),
        (
            "attention_config: [[[global, local], all]]\nnum_layers: 3\n",
            "not a multiple",
        ),
        (
            "attention_config: [[[mamba], 4]]\n",
            "`mamba` layers are not implemented",
        ),
        (
            "attention_config: [[[sparse], 4]]\n",
            "not an attention kind",
        ),
        // DeepSpeed: the sequence must be a multiple of the block.
        (
            "attention_config: [[[local], 4]]\nsparsity_config: {block: 24}\n",
            "block size 24",
        ),
        // GPT-NeoX ignores unknown sparsity keys; a typo here would change the model.
        (
            "attention_config: [[[local], 4]]\nsparsity_config: {num_local_block: 2}\n",
            "num_local_block",
        ),
        (
            "attention_config: [[[bigbird], 4]]\nsparsity_config: {num_random_blocks: 2}\n",
            "num_random_blocks 2",
        ),
        (
            "attention_config: [[[sparse_fixed], 4]]\nsparsity_config: {num_local_blocks: 3, num_global_blocks: 2}\n",
            "multiple of num_global_blocks",
        ),
        (
            "attention_config: [[[local], 4]]\nnum_kv_heads: 2\n",
            "num_kv_heads",
        ),
    ] {
        let err = parse(extra).unwrap_err();
        assert!(err.contains(needle), "{extra}: {err}");
        assert!(err.contains("sparse.yml"), "{extra}: {err}");
    }
}

#[test]
fn a_sparse_model_trains_a_step() {
    use burn::backend::Autodiff;
    use burn::optim::{AdamConfig, GradientsParams, Optimizer};
    let args = parse(
        "attention_config: [[[sparse_variable, bslongformer], all]]\n\
         sparsity_config: {block: 16, num_random_blocks: 1}\npadded_vocab_size: 16\n",
    )
    .unwrap();
    let device = Default::default();
    let model = args.model.init::<Autodiff<B>>(&device);
    let tokens: Vec<i64> = (0..2 * 64).map(|i| (i * 5 + 3) % 16).collect();
    let inputs =
        Tensor::<Autodiff<B>, 2, Int>::from_data(TensorData::new(tokens, [2, 64]), &device);
    let targets = inputs.clone();
    let loss = model.loss(inputs.clone(), targets.clone());
    let before = loss.clone().into_scalar();
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    let mut optim = AdamConfig::new().init();
    let model = optim.step(0.01, model, grads);
    let after = model.loss(inputs, targets).into_scalar();
    assert!(after < before, "{after} !< {before}");
}
