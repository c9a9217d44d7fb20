//! Tensor parallelism on threads: a model split over 2 or 4 ranks computes
//! the unsplit model's logits, loss and gradients (within 1e-5 relative:
//! row-parallel layers add partial sums in another order), for every
//! architectural option the split touches; the vocab-parallel loss equals
//! the full cross entropy without gathering the logits.

use std::sync::Arc;

use burn::backend::{Autodiff, Flex};
use burn::module::{AutodiffModule, Module, ModuleMapper, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use neox_trainer::dist::tensor_parallel::layers::Shard;
use neox_trainer::dist::tensor_parallel::{SplitError, TpGroup, vocab_parallel_cross_entropy};
use neox_trainer::dist::{GptShard, Stage};
use neox_trainer::model::{
    Activation, AttentionKind, InitMethod, ModelConfig, NormKind, PosEmb, SparsityConfig,
    cross_entropy,
};

mod common;
use common::{assert_within, on_thread_ranks, parameter_values, seeded};

type Ad = Autodiff<Flex>;

fn config(activation: Activation, pos_emb: PosEmb, tied: bool, gpt_j: bool) -> ModelConfig {
    ModelConfig {
        num_layers: 2,
        hidden_size: 32,
        num_attention_heads: 4,
        seq_length: 8,
        max_position_embeddings: 8,
        vocab_size: 32,
        norm: NormKind::LayerNorm,
        norm_eps: 1e-5,
        pos_emb,
        rotary_pct: 0.5,
        rotary_emb_base: 10000.0,
        gpt_j_residual: gpt_j,
        tied_embeddings: tied,
        activation,
        intermediate_size: 48,
        init_method: InitMethod::SmallInit,
        output_layer_init_method: InitMethod::WangInit,
        init_method_std: 0.02,
        hidden_dropout: 0.0,
        attention_dropout: 0.0,
        use_bias_in_attn_linear: true,
        use_bias_in_mlp: true,
        use_bias_in_norms: true,
        ..ModelConfig::default()
    }
}

fn tokens<B: Backend>(salt: i64) -> Tensor<B, 2, Int> {
    let ids: Vec<i64> = (0..16).map(|i| (i * 7 + salt * 5 + i * i) % 32).collect();
    Tensor::from_data(TensorData::new(ids, [2, 8]), &Default::default())
}

/// `model` with every parameter replaced by its gradient.
fn gradient_model<M: AutodiffModule<Ad>>(model: &M, grads: &GradientsParams) -> M::InnerModule {
    struct ToGrad<'a>(&'a GradientsParams);
    impl ModuleMapper<Flex> for ToGrad<'_> {
        fn map_float<const D: usize>(
            &mut self,
            param: Param<Tensor<Flex, D>>,
        ) -> Param<Tensor<Flex, D>> {
            let (id, value, mapper) = param.consume();
            let grad = self.0.get::<Flex, D>(id).unwrap_or(value.zeros_like());
            Param::from_mapped_value(id, grad, mapper)
        }
    }
    model.valid().map(&mut ToGrad(grads))
}

/// What one rank computes: its logits, the loss and its parameters' gradients.
struct RankResult {
    logits: Vec<f32>,
    loss: f32,
    grads: Vec<Vec<f32>>,
}

fn on_ranks(config: &ModelConfig, tp: usize) -> Vec<RankResult> {
    on_thread_ranks(tp, |comm| {
        let full = seeded::<Ad>(config, 7);
        let group = TpGroup::new(Arc::new(comm));
        let model = GptShard::split(&full, group.clone()).unwrap();
        drop(full);
        let logits = model.forward(tokens(0)).into_data().iter().collect();
        let loss = model.loss(tokens(0), tokens(1));
        let value = loss.clone().into_scalar();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        group.check().unwrap();
        RankResult {
            logits,
            loss: value,
            grads: parameter_values(&gradient_model(&model, &grads)),
        }
    })
}

fn assert_split_equals_unsplit(config: &ModelConfig, what: &str) {
    let full = seeded::<Ad>(config, 7);
    let logits = full.forward(tokens(0));
    let loss = full.loss(tokens(0), tokens(1));
    let value = loss.clone().into_scalar();
    let grads = GradientsParams::from_grads(loss.backward(), &full);
    let grad_model = gradient_model(&full, &grads);
    let v = config.vocab_size;
    for tp in [2, 4] {
        let what = format!("{what}, tp={tp}");
        for (rank, got) in on_ranks(config, tp).into_iter().enumerate() {
            let shard = Shard { rank, size: tp };
            let (start, len) = shard.part(v);
            let want: Vec<f32> = logits
                .clone()
                .narrow(2, start, len)
                .into_data()
                .iter()
                .collect();
            assert_within(
                &got.logits,
                &want,
                1e-5,
                &format!("{what}: rank {rank} logits"),
            );
            assert_within(
                &[got.loss],
                &[value],
                1e-5,
                &format!("{what}: rank {rank} loss"),
            );
            let want = parameter_values(
                &GptShard::new(&grad_model, Stage::whole(2), shard, TpGroup::single()).unwrap(),
            );
            assert_eq!(got.grads.len(), want.len());
            for (i, (g, w)) in got.grads.iter().zip(&want).enumerate() {
                assert_within(g, w, 1e-5, &format!("{what}: rank {rank} gradient {i}"));
            }
        }
    }
}

#[test]
fn split_models_compute_the_unsplit_logits_loss_and_gradients() {
    for (config, what) in [
        (
            config(Activation::Gelu, PosEmb::Rotary, false, false),
            "gelu, rotary, untied",
        ),
        (
            config(Activation::Swiglu, PosEmb::Alibi, true, true),
            "swiglu, alibi, tied, parallel residual",
        ),
        (
            config(Activation::Gelu, PosEmb::Learned, true, false),
            "learned positions, tied",
        ),
    ] {
        assert_split_equals_unsplit(&config, what);
    }
}

#[test]
fn split_models_with_grouped_queries_tied_norms_or_sparse_layers_compute_the_unsplit_ones() {
    let base = config(Activation::Gelu, PosEmb::Rotary, false, false);
    // 8 heads sharing 4 key/value heads: 2 (tp 4) or 4 (tp 2) per rank, each
    // key/value head with its two query heads on the same rank.
    let grouped = ModelConfig {
        num_attention_heads: 8,
        num_kv_heads: Some(4),
        ..base.clone()
    };
    assert_split_equals_unsplit(&grouped, "num_kv_heads 4 of 8 heads");
    let tied_norms = ModelConfig {
        gpt_j_residual: true,
        gpt_j_tied: true,
        ..config(Activation::Swiglu, PosEmb::Rotary, true, true)
    };
    assert_split_equals_unsplit(&tied_norms, "gpt_j_tied");
    // A sparse layer whose heads have different layouts, then a dense one.
    let sparse = ModelConfig {
        pos_emb: PosEmb::Alibi,
        attention_config: vec![AttentionKind::SparseFixed, AttentionKind::Global],
        sparsity_config: SparsityConfig {
            block: Some(2),
            different_layout_per_head: Some(true),
            num_local_blocks: Some(2),
            num_different_global_patterns: Some(2),
            ..SparsityConfig::default()
        },
        ..base
    };
    // 4 blocks of 2 tokens: some causal blocks hidden, the heads' layouts different.
    let layout = sparse.sparse_layouts().unwrap()[0].clone().unwrap();
    let bits = layout.to_bits();
    assert_ne!(bits[..16], bits[16..32], "the heads' layouts do not differ");
    assert!((0..4).any(|r| (0..=r).any(|c| !layout.get(0, r, c))));
    assert_split_equals_unsplit(&sparse, "sparse_fixed, a layout per head");
}

#[test]
fn key_value_heads_that_do_not_divide_among_the_ranks_are_refused_by_name() {
    // GPT-NeoX divides num_kv_heads by the ranks too (it does not copy
    // key/value heads across ranks): multi-query attention splits no way.
    let config = ModelConfig {
        num_kv_heads: Some(1),
        ..config(Activation::Gelu, PosEmb::Rotary, false, false)
    };
    let full = seeded::<Ad>(&config, 1);
    let err = GptShard::new(
        &full,
        Stage::whole(2),
        Shard { rank: 0, size: 2 },
        TpGroup::single(),
    )
    .unwrap_err();
    assert_eq!(
        err,
        SplitError::Indivisible {
            tp: 2,
            what: "num_kv_heads",
            n: 1
        }
    );
    assert!(err.to_string().contains("num_kv_heads (1)"), "{err}");
}

#[test]
fn vocab_parallel_loss_equals_the_full_loss() {
    let (rows, v) = (10, 12);
    let logits: Vec<f32> = (0..rows * v)
        .map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.7)
        .collect();
    let targets: Vec<i64> = (0..rows as i64).map(|i| (i * 5 + 3) % v as i64).collect();
    let device = Default::default();
    let full = Tensor::<Ad, 3>::from_data(TensorData::new(logits.clone(), [2, 5, v]), &device)
        .require_grad();
    let t = || Tensor::<Ad, 2, Int>::from_data(TensorData::new(targets.clone(), [2, 5]), &device);
    let loss = cross_entropy(full.clone(), t());
    let want = loss.clone().into_scalar();
    let want_grad = full.grad(&loss.backward()).unwrap();
    for tp in [2, 3, 4] {
        let results: Vec<(f32, Vec<f32>)> = on_thread_ranks(tp, |comm| {
            let group = TpGroup::new(Arc::new(comm));
            let (start, len) = Shard {
                rank: group.rank(),
                size: tp,
            }
            .part(v);
            let mine = Tensor::<Ad, 3>::from_inner(full.clone().inner().narrow(2, start, len))
                .require_grad();
            let loss = vocab_parallel_cross_entropy(mine.clone(), t(), &group);
            let grad = mine.grad(&loss.backward()).unwrap();
            group.check().unwrap();
            (loss.into_scalar(), grad.into_data().iter().collect())
        });
        for (rank, (loss, grad)) in results.into_iter().enumerate() {
            assert_within(&[loss], &[want], 1e-5, &format!("tp={tp} rank {rank} loss"));
            let (start, len) = Shard { rank, size: tp }.part(v);
            let want_grad: Vec<f32> = want_grad
                .clone()
                .narrow(2, start, len)
                .into_data()
                .iter()
                .collect();
            assert_within(
                &grad,
                &want_grad,
                1e-5,
                &format!("tp={tp} rank {rank} gradient"),
            );
        }
    }
}

#[test]
fn sizes_that_do_not_divide_the_model_are_refused_by_name() {
    let mut c = config(Activation::Gelu, PosEmb::Rotary, false, false);
    let full = seeded::<Ad>(&c, 1);
    let err = GptShard::new(
        &full,
        Stage::whole(2),
        Shard { rank: 0, size: 3 },
        TpGroup::single(),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            SplitError::Indivisible {
                what: "num_attention_heads",
                n: 4,
                tp: 3
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("model_parallel_size 3"), "{err}");
    c.vocab_size = 30;
    let full = seeded::<Ad>(&c, 1);
    let err = GptShard::new(
        &full,
        Stage::whole(2),
        Shard { rank: 1, size: 4 },
        TpGroup::single(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("vocabulary (30)"), "{err}");
}
