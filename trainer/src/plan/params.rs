//! The model's parameters from its configuration alone: every tensor in the
//! order the Burn model visits them, named and shaped as Hugging Face's
//! GPT-NeoX names and shapes them (`[out, in]` for linear weights), with how
//! Megatron's tensor parallelism splits it and where the pipeline holds it.
//! Tests check the list against the real model and its Hugging Face export.

use serde::Serialize;

use crate::model::{ModelConfig, NormKind, PosEmb};

/// How tensor parallelism (Megatron's `ColumnParallelLinear`,
/// `RowParallelLinear`, `VocabParallelEmbedding`) cuts a tensor over `tp` ranks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// Output features (dim 0 of `[out, in]`, and the bias) are cut.
    Column,
    /// Input features (dim 1 of `[out, in]`) are cut; the bias is whole on every rank.
    Row,
    /// Vocabulary rows are cut.
    Vocab,
    /// Every rank holds it whole (norms, row-parallel biases, learned positions).
    Replicated,
}

/// Where a tensor lives along the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Place {
    /// Token (and learned position) embeddings: the first stage.
    Embedding,
    /// Transformer layer `i`.
    Layer(usize),
    /// The final norm.
    FinalNorm,
    /// The untied output layer: the last stage.
    Output,
}

/// One parameter tensor.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParamTensor {
    /// Hugging Face's name (`gpt_neox.layers.0.attention.dense.weight`).
    pub name: String,
    /// PyTorch's shape: `[out, in]` for linear weights.
    pub shape: Vec<usize>,
    /// A linear layer's weight (Burn stores it transposed, `[in, out]`).
    pub linear: bool,
    pub split: Split,
    pub place: Place,
}

impl ParamTensor {
    pub fn numel(&self) -> u64 {
        self.shape.iter().map(|&d| d as u64).product()
    }

    /// Elements one of `tp` tensor-parallel ranks holds.
    pub fn numel_per_rank(&self, tp: usize) -> u64 {
        let cut = match (self.split, self.shape.len()) {
            (Split::Replicated, _) => None,
            (Split::Row, 2) => Some(1),
            (Split::Row, _) => None,
            (Split::Column | Split::Vocab, _) => Some(0),
        };
        match cut {
            None => self.numel(),
            Some(d) => {
                let whole = self.shape[d] as u64;
                self.numel() / whole.max(1) * whole.div_ceil(tp.max(1) as u64)
            }
        }
    }

    /// Burn's shape (linear weights `[in, out]`).
    pub fn burn_shape(&self) -> Vec<usize> {
        let mut shape = self.shape.clone();
        if self.linear {
            shape.reverse();
        }
        shape
    }
}

/// Every parameter tensor of the model `c` builds, in Burn's visiting order.
pub fn tensors(c: &ModelConfig) -> Vec<ParamTensor> {
    let h = c.hidden_size;
    let mut list = List(Vec::new());
    list.add(
        "gpt_neox.embed_in.weight",
        vec![c.vocab_size, h],
        false,
        Split::Vocab,
        Place::Embedding,
    );
    if c.pos_emb == PosEmb::Learned {
        let shape = vec![c.max_position_embeddings, h];
        list.add(
            "gpt_neox.embed_pos.weight",
            shape,
            false,
            Split::Replicated,
            Place::Embedding,
        );
    }
    let norm_bias = c.use_bias_in_norms && c.norm == NormKind::LayerNorm;
    let norm = |list: &mut List, prefix: &str, place| {
        list.add(
            &format!("{prefix}.weight"),
            vec![h],
            false,
            Split::Replicated,
            place,
        );
        if norm_bias {
            list.add(
                &format!("{prefix}.bias"),
                vec![h],
                false,
                Split::Replicated,
                place,
            );
        }
    };
    let (attn_bias, mlp_bias) = (c.use_bias_in_attn_linear, c.use_bias_in_mlp);
    // (name, out, in, split, bias)
    let linears = [
        (
            "attention.query_key_value",
            c.qkv_size(),
            h,
            Split::Column,
            attn_bias,
        ),
        ("attention.dense", h, h, Split::Row, attn_bias),
        (
            "mlp.dense_h_to_4h",
            c.h_to_4h_size(),
            h,
            Split::Column,
            mlp_bias,
        ),
        (
            "mlp.dense_4h_to_h",
            h,
            c.intermediate_size,
            Split::Row,
            mlp_bias,
        ),
    ];
    for i in 0..c.num_layers {
        let p = format!("gpt_neox.layers.{i}");
        let place = Place::Layer(i);
        norm(&mut list, &format!("{p}.input_layernorm"), place);
        norm(&mut list, &format!("{p}.post_attention_layernorm"), place);
        for (name, d_out, d_in, split, bias) in linears {
            list.add(
                &format!("{p}.{name}.weight"),
                vec![d_out, d_in],
                true,
                split,
                place,
            );
            if bias {
                // A row-parallel layer adds its bias after the all-reduce: whole on every rank.
                let split = if split == Split::Row {
                    Split::Replicated
                } else {
                    split
                };
                list.add(
                    &format!("{p}.{name}.bias"),
                    vec![d_out],
                    false,
                    split,
                    place,
                );
            }
        }
    }
    norm(&mut list, "gpt_neox.final_layer_norm", Place::FinalNorm);
    if !c.tied_embeddings {
        list.add(
            "embed_out.weight",
            vec![c.vocab_size, h],
            true,
            Split::Column,
            Place::Output,
        );
    }
    list.0
}

struct List(Vec<ParamTensor>);

impl List {
    fn add(&mut self, name: &str, shape: Vec<usize>, linear: bool, split: Split, place: Place) {
        self.0.push(ParamTensor {
            name: name.to_string(),
            shape,
            linear,
            split,
            place,
        });
    }
}

/// The parameter counts a person wants to see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub total: u64,
    /// Token embedding plus learned positions.
    pub embedding: u64,
    pub per_layer: u64,
    pub layers: u64,
    pub final_norm: u64,
    /// The untied output layer; 0 when tied to the embedding.
    pub output: u64,
}

impl Counts {
    pub fn of(tensors: &[ParamTensor], num_layers: usize) -> Self {
        let sum = |keep: &dyn Fn(&ParamTensor) -> bool| -> u64 {
            tensors
                .iter()
                .filter(|t| keep(t))
                .map(ParamTensor::numel)
                .sum()
        };
        let layers = sum(&|t| matches!(t.place, Place::Layer(_)));
        let output = sum(&|t| t.place == Place::Output);
        Counts {
            total: sum(&|_| true),
            embedding: sum(&|t| t.place == Place::Embedding),
            per_layer: layers / num_layers.max(1) as u64,
            layers,
            final_norm: sum(&|t| t.place == Place::FinalNorm),
            output,
        }
    }
}

/// Training FLOPs per token from the weights themselves (so GQA, gated and
/// resized MLPs count as built): 2 per multiply-add, forward and backward 3x:
/// `6 (layer matmul weights + output weights) + 12 L s h` (attention scores
/// and context over the whole sequence), which for GPT-NeoX's 4h MLP is
/// Megatron's `72 L h^2 (1 + s/6h + V/12Lh)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Flops {
    pub per_token: f64,
    /// Added per token when activation checkpointing runs the layers' forward again.
    pub recompute_per_token: f64,
}

impl Flops {
    pub fn of(c: &ModelConfig, tensors: &[ParamTensor]) -> Self {
        let matmul = |keep: &dyn Fn(&Place) -> bool| -> f64 {
            tensors
                .iter()
                .filter(|t| t.linear && keep(&t.place))
                .map(|t| t.numel() as f64)
                .sum()
        };
        let layers = matmul(&|p| matches!(p, Place::Layer(_)));
        // Tied or not, the output layer multiplies by a [V, h] matrix.
        let output = (c.vocab_size * c.hidden_size) as f64;
        let attention = 12.0 * (c.num_layers * c.seq_length * c.hidden_size) as f64;
        let layer_flops = 6.0 * layers + attention;
        Flops {
            per_token: layer_flops + 6.0 * output,
            recompute_per_token: layer_flops / 3.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ModelConfig {
        ModelConfig {
            num_layers: 2,
            hidden_size: 8,
            num_attention_heads: 2,
            seq_length: 4,
            max_position_embeddings: 6,
            vocab_size: 10,
            pos_emb: PosEmb::Rotary,
            tied_embeddings: false,
            intermediate_size: 32,
            ..ModelConfig::default()
        }
    }

    #[test]
    fn counts_add_up_by_hand() {
        let c = config();
        // Per layer: 2 norms x 16, qkv 8x24+24, dense 8x8+8, h_to_4h 8x32+32, 4h_to_h 32x8+8.
        let per_layer = 32 + 216 + 72 + 288 + 264;
        let counts = Counts::of(&tensors(&c), c.num_layers);
        assert_eq!(counts.per_layer, per_layer);
        assert_eq!(counts.embedding, 80);
        assert_eq!(counts.final_norm, 16);
        assert_eq!(counts.output, 80);
        assert_eq!(counts.total, 80 + 2 * per_layer + 16 + 80);
    }

    #[test]
    fn tensor_parallel_cuts_columns_rows_and_vocab() {
        let t = tensors(&config());
        let get = |name: &str| t.iter().find(|t| t.name.ends_with(name)).unwrap();
        let qkv = get("0.attention.query_key_value.weight");
        assert_eq!(qkv.numel_per_rank(2), 12 * 8);
        assert_eq!(
            get("0.attention.query_key_value.bias").numel_per_rank(2),
            12
        );
        assert_eq!(get("0.attention.dense.weight").numel_per_rank(2), 8 * 4);
        assert_eq!(get("0.attention.dense.bias").numel_per_rank(2), 8);
        assert_eq!(get("embed_in.weight").numel_per_rank(4), 3 * 8);
        assert_eq!(get("final_layer_norm.weight").numel_per_rank(4), 8);
        assert_eq!(qkv.burn_shape(), [8, 24]);
    }

    #[test]
    fn flops_are_megatrons_for_gpt_neox_shapes() {
        for c in [
            config(),
            ModelConfig {
                num_layers: 32,
                hidden_size: 2560,
                num_attention_heads: 32,
                seq_length: 2048,
                vocab_size: 50304,
                intermediate_size: 4 * 2560,
                ..config()
            },
        ] {
            let f = Flops::of(&c, &tensors(&c));
            let megatron = c.train_flops_per_token();
            assert!((f.per_token - megatron).abs() <= 1e-9 * megatron, "{c:?}");
        }
        // Grouped-query attention does less work than Megatron's formula assumes.
        let gqa = ModelConfig {
            num_kv_heads: Some(1),
            ..config()
        };
        assert!(Flops::of(&gqa, &tensors(&gqa)).per_token < gqa.train_flops_per_token());
    }

    #[test]
    fn grouped_query_attention_narrows_query_key_value() {
        let c = ModelConfig {
            num_kv_heads: Some(1),
            ..config()
        };
        let t = tensors(&c);
        // 2 query heads of 4 dims, one key and one value head: 8 + 2 x 4 outputs.
        let qkv = t
            .iter()
            .find(|t| t.name.ends_with("0.attention.query_key_value.weight"));
        assert_eq!(qkv.unwrap().shape, [16, 8]);
    }
}
