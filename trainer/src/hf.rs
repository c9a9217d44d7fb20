//! Hugging Face GPT-NeoX checkpoints: `config.json` + `model.safetensors` with
//! `gpt_neox.*` and `embed_out.weight` tensors, read into and written from
//! [`GptNeox`]. Hugging Face stores linear weights `[out, in]`; Burn `[in, out]`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::nn::Linear;
use burn::tensor::{Tensor, TensorData, backend::Backend};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use serde::Deserialize;
use serde_json::json;

use crate::error::CheckpointError;
use crate::fsutil::write_atomic;
use crate::model::{Activation, GptNeox, InitMethod, ModelConfig, Norm, NormKind, PosEmb};

/// The `config.json` fields the model needs (transformers 4 and 5 spellings).
#[derive(Debug, Deserialize)]
struct HfConfig {
    vocab_size: usize,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    max_position_embeddings: usize,
    #[serde(default = "default_act")]
    hidden_act: String,
    #[serde(default = "default_eps")]
    layer_norm_eps: f64,
    #[serde(default = "yes")]
    use_parallel_residual: bool,
    #[serde(default)]
    tie_word_embeddings: bool,
    #[serde(default = "yes")]
    attention_bias: bool,
    #[serde(default)]
    hidden_dropout: f64,
    #[serde(default)]
    attention_dropout: f64,
    rotary_pct: Option<f64>,
    rotary_emb_base: Option<f64>,
    rope_parameters: Option<RopeParameters>,
}

#[derive(Debug, Deserialize)]
struct RopeParameters {
    partial_rotary_factor: Option<f64>,
    rope_theta: Option<f64>,
}

fn default_act() -> String {
    "gelu".into()
}
fn default_eps() -> f64 {
    1e-5
}
fn yes() -> bool {
    true
}

/// Reads `dir/config.json` as a [`ModelConfig`].
pub fn read_config(dir: &Path) -> Result<ModelConfig, CheckpointError> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|source| CheckpointError::Io {
        path: path.clone(),
        source,
    })?;
    let hf: HfConfig = serde_json::from_str(&text).map_err(|e| CheckpointError::HfConfig {
        path: path.clone(),
        message: e.to_string(),
    })?;
    let bad = |message: String| CheckpointError::HfConfig {
        path: path.clone(),
        message,
    };
    if hf.hidden_act != "gelu" {
        return Err(bad(format!(
            "hidden_act `{}`: only exact `gelu` is supported",
            hf.hidden_act
        )));
    }
    if hf.num_attention_heads == 0 || !hf.hidden_size.is_multiple_of(hf.num_attention_heads) {
        return Err(bad(format!(
            "hidden_size {} is not divisible by num_attention_heads {}",
            hf.hidden_size, hf.num_attention_heads
        )));
    }
    let rope = hf.rope_parameters.as_ref();
    let rotary_pct = rope
        .and_then(|r| r.partial_rotary_factor)
        .or(hf.rotary_pct)
        .unwrap_or(1.0);
    let head_dim = hf.hidden_size / hf.num_attention_heads;
    let rotary_dims = (head_dim as f64 * rotary_pct) as usize;
    if !(rotary_pct > 0.0 && rotary_pct <= 1.0)
        || rotary_dims == 0
        || !rotary_dims.is_multiple_of(2)
    {
        return Err(bad(format!(
            "rotary_pct {rotary_pct} gives {rotary_dims} rotary dims of head dim {head_dim}: \
             expected an even number above 0"
        )));
    }
    Ok(ModelConfig {
        num_layers: hf.num_hidden_layers,
        hidden_size: hf.hidden_size,
        num_attention_heads: hf.num_attention_heads,
        seq_length: hf.max_position_embeddings,
        max_position_embeddings: hf.max_position_embeddings,
        vocab_size: hf.vocab_size,
        norm: NormKind::LayerNorm,
        norm_eps: hf.layer_norm_eps,
        pos_emb: PosEmb::Rotary,
        rotary_pct,
        rotary_emb_base: rope
            .and_then(|r| r.rope_theta)
            .or(hf.rotary_emb_base)
            .unwrap_or(10000.0),
        gpt_j_residual: hf.use_parallel_residual,
        tied_embeddings: hf.tie_word_embeddings,
        activation: Activation::Gelu,
        intermediate_size: hf.intermediate_size,
        init_method: InitMethod::Normal,
        output_layer_init_method: InitMethod::ScaledNormal,
        init_method_std: 0.02,
        hidden_dropout: hf.hidden_dropout,
        attention_dropout: hf.attention_dropout,
        use_bias_in_attn_linear: hf.attention_bias,
        use_bias_in_mlp: true,
        use_bias_in_norms: true,
        ..ModelConfig::default()
    })
}

/// Tensors of one safetensors file, read as f32.
struct Weights<'a> {
    path: PathBuf,
    tensors: SafeTensors<'a>,
}

impl Weights<'_> {
    fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, CheckpointError> {
        let err = |message: String| CheckpointError::Tensor {
            path: self.path.clone(),
            name: name.to_string(),
            message,
        };
        let view = self.tensors.tensor(name).map_err(|e| err(e.to_string()))?;
        if view.shape() != shape {
            return Err(err(format!("shape {:?}, expected {shape:?}", view.shape())));
        }
        let bytes = view.data();
        Ok(match view.dtype() {
            Dtype::F32 => bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F16 => bytes
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::BF16 => bytes
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            other => return Err(err(format!("dtype {other:?}, expected F32, F16 or BF16"))),
        })
    }

    fn tensor<B: Backend, const D: usize>(
        &self,
        name: &str,
        shape: [usize; D],
        device: &B::Device,
    ) -> Result<Param<Tensor<B, D>>, CheckpointError> {
        let values = self.get(name, &shape)?;
        Ok(Param::from_tensor(Tensor::from_data(
            TensorData::new(values, shape),
            device,
        )))
    }

    /// A Hugging Face linear weight `[out, in]` as Burn's `[in, out]`, laid out
    /// contiguously as a freshly initialised model's (matrix products then
    /// compute bit for bit as in the model that was saved).
    fn linear<B: Backend>(
        &self,
        name: &str,
        d_out: usize,
        d_in: usize,
        device: &B::Device,
    ) -> Result<Param<Tensor<B, 2>>, CheckpointError> {
        let values = self.get(name, &[d_out, d_in])?;
        let mut transposed = vec![0.0; values.len()];
        for (o, row) in values.chunks_exact(d_in.max(1)).enumerate() {
            for (i, &v) in row.iter().enumerate() {
                transposed[i * d_out + o] = v;
            }
        }
        let data = TensorData::new(transposed, [d_in, d_out]);
        Ok(Param::from_tensor(Tensor::from_data(data, device)))
    }
}

/// Loads a Hugging Face GPT-NeoX checkpoint folder.
pub fn load<B: Backend>(dir: &Path, device: &B::Device) -> Result<GptNeox<B>, CheckpointError> {
    let config = read_config(dir)?;
    let mut model = config.init::<B>(device);
    load_weights(&mut model, &dir.join("model.safetensors"), device)?;
    Ok(model)
}

/// Replaces every parameter of `model` by the tensor of the same Hugging Face
/// GPT-NeoX name in the safetensors file `path` (any options of the model:
/// biases where it has them, `gpt_neox.embed_pos.weight` for learned
/// positions, a `query_key_value` sized for its key/value heads).
pub fn load_weights<B: Backend>(
    model: &mut GptNeox<B>,
    path: &Path,
    device: &B::Device,
) -> Result<(), CheckpointError> {
    let config = model.config.clone();
    let bytes = std::fs::read(path).map_err(|source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let tensors = SafeTensors::deserialize(&bytes).map_err(|e| CheckpointError::Safetensors {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let w = Weights {
        path: path.to_path_buf(),
        tensors,
    };
    let (h, v, f) = (
        config.hidden_size,
        config.vocab_size,
        config.intermediate_size,
    );
    model.embed_in.weight = w.tensor("gpt_neox.embed_in.weight", [v, h], device)?;
    if let Some(pos) = model.embed_pos.as_mut() {
        let n = config.max_position_embeddings;
        pos.weight = w.tensor("gpt_neox.embed_pos.weight", [n, h], device)?;
    }
    let norm = |norm: &mut Norm<B>, prefix: &str| -> Result<(), CheckpointError> {
        norm.weight = w.tensor(&format!("{prefix}.weight"), [h], device)?;
        if norm.bias.is_some() {
            norm.bias = Some(w.tensor(&format!("{prefix}.bias"), [h], device)?);
        }
        Ok(())
    };
    let linear = |lin: &mut Linear<B>,
                  prefix: &str,
                  d_out: usize,
                  d_in: usize|
     -> Result<(), CheckpointError> {
        lin.weight = w.linear(&format!("{prefix}.weight"), d_out, d_in, device)?;
        if lin.bias.is_some() {
            lin.bias = Some(w.tensor(&format!("{prefix}.bias"), [d_out], device)?);
        }
        Ok(())
    };
    for (i, layer) in model.layers.iter_mut().enumerate() {
        let p = format!("gpt_neox.layers.{i}");
        norm(&mut layer.input_layernorm, &format!("{p}.input_layernorm"))?;
        norm(
            &mut layer.post_attention_layernorm,
            &format!("{p}.post_attention_layernorm"),
        )?;
        linear(
            &mut layer.attention.query_key_value,
            &format!("{p}.attention.query_key_value"),
            config.qkv_size(),
            h,
        )?;
        linear(
            &mut layer.attention.dense,
            &format!("{p}.attention.dense"),
            h,
            h,
        )?;
        linear(
            &mut layer.mlp.dense_h_to_4h,
            &format!("{p}.mlp.dense_h_to_4h"),
            config.h_to_4h_size(),
            h,
        )?;
        linear(
            &mut layer.mlp.dense_4h_to_h,
            &format!("{p}.mlp.dense_4h_to_h"),
            h,
            f,
        )?;
    }
    norm(&mut model.final_layer_norm, "gpt_neox.final_layer_norm")?;
    if let Some(out) = model.embed_out.as_mut() {
        out.weight = w.linear("embed_out.weight", v, h, device)?;
    }
    Ok(())
}

/// Why `config` cannot be written as a Hugging Face GPT-NeoX model, if it cannot.
pub fn unsupported(config: &ModelConfig) -> Option<String> {
    let why = if config.pos_emb != PosEmb::Rotary {
        format!(
            "pos_emb {:?} (Hugging Face GPT-NeoX is rotary only)",
            config.pos_emb
        )
    } else if config.norm != NormKind::LayerNorm || !config.use_bias_in_norms {
        "norms other than layernorm with bias".into()
    } else if config.activation != Activation::Gelu {
        "activations other than gelu".into()
    } else if !config.use_bias_in_mlp {
        "MLPs without bias".into()
    } else if config.num_kv_heads.is_some() {
        "grouped-query attention (num_kv_heads)".into()
    } else if config.sliding_window_width.is_some() {
        "sliding-window attention".into()
    } else if config.gpt_j_residual && config.gpt_j_tied {
        "tied GPT-J norms (gpt_j_tied)".into()
    } else if config.attention_config.iter().any(|k| k.is_sparse()) {
        "sparse attention (attention_config)".into()
    } else {
        return None;
    };
    Some(why)
}

/// Tensors gathered for writing, named as Hugging Face names them.
struct Collected {
    path: PathBuf,
    tensors: Vec<(String, Vec<usize>, Vec<u8>)>,
}

impl Collected {
    fn add<B: Backend, const D: usize>(
        &mut self,
        name: &str,
        shape: Vec<usize>,
        t: Tensor<B, D>,
    ) -> Result<(), CheckpointError> {
        let values = t
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .map_err(|e| CheckpointError::Tensor {
                path: self.path.clone(),
                name: name.to_string(),
                message: format!("{e:?}"),
            })?;
        let bytes = values.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.tensors.push((name.to_string(), shape, bytes));
        Ok(())
    }

    fn norm<B: Backend>(&mut self, norm: &Norm<B>, prefix: &str) -> Result<(), CheckpointError> {
        let shape = norm.weight.val().dims().to_vec();
        self.add(
            &format!("{prefix}.weight"),
            shape.clone(),
            norm.weight.val(),
        )?;
        if let Some(bias) = &norm.bias {
            self.add(&format!("{prefix}.bias"), shape, bias.val())?;
        }
        Ok(())
    }

    /// Burn's `[in, out]` written as Hugging Face's `[out, in]`.
    fn linear<B: Backend>(
        &mut self,
        linear: &Linear<B>,
        prefix: &str,
    ) -> Result<(), CheckpointError> {
        let [d_in, d_out] = linear.weight.val().dims();
        self.add(
            &format!("{prefix}.weight"),
            vec![d_out, d_in],
            linear.weight.val().transpose(),
        )?;
        if let Some(bias) = &linear.bias {
            self.add(&format!("{prefix}.bias"), vec![d_out], bias.val())?;
        }
        Ok(())
    }
}

/// Writes `model` as a Hugging Face GPT-NeoX checkpoint in `dir` (created if needed).
pub fn save<B: Backend>(model: &GptNeox<B>, dir: &Path) -> Result<(), CheckpointError> {
    let c = &model.config;
    let config_path = dir.join("config.json");
    if let Some(why) = unsupported(c) {
        return Err(CheckpointError::HfConfig {
            path: config_path,
            message: format!("this model cannot be expressed: {why}"),
        });
    }
    std::fs::create_dir_all(dir).map_err(|source| CheckpointError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let weights_path = dir.join("model.safetensors");
    let mut out = Collected {
        path: weights_path.clone(),
        tensors: Vec::new(),
    };
    let (h, v, f) = (c.hidden_size, c.vocab_size, c.intermediate_size);
    out.add(
        "gpt_neox.embed_in.weight",
        vec![v, h],
        model.embed_in.weight.val(),
    )?;
    for (i, layer) in model.layers.iter().enumerate() {
        let p = format!("gpt_neox.layers.{i}");
        out.norm(&layer.input_layernorm, &format!("{p}.input_layernorm"))?;
        out.norm(
            &layer.post_attention_layernorm,
            &format!("{p}.post_attention_layernorm"),
        )?;
        out.linear(
            &layer.attention.query_key_value,
            &format!("{p}.attention.query_key_value"),
        )?;
        out.linear(&layer.attention.dense, &format!("{p}.attention.dense"))?;
        out.linear(&layer.mlp.dense_h_to_4h, &format!("{p}.mlp.dense_h_to_4h"))?;
        out.linear(&layer.mlp.dense_4h_to_h, &format!("{p}.mlp.dense_4h_to_h"))?;
    }
    out.norm(&model.final_layer_norm, "gpt_neox.final_layer_norm")?;
    if let Some(embed_out) = &model.embed_out {
        out.linear(embed_out, "embed_out")?;
    }
    let named = out.tensors;
    let views = named
        .iter()
        .map(|(name, shape, bytes)| {
            TensorView::new(Dtype::F32, shape.clone(), bytes).map(|view| (name.clone(), view))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CheckpointError::Safetensors {
            path: weights_path.clone(),
            message: e.to_string(),
        })?;
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    let bytes = safetensors::serialize(views, Some(metadata)).map_err(|e| {
        CheckpointError::Safetensors {
            path: weights_path.clone(),
            message: e.to_string(),
        }
    })?;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CheckpointError::Io { path, source }
    };
    write_atomic(&weights_path, &bytes).map_err(io(&weights_path))?;
    let config = json!({
        "architectures": ["GPTNeoXForCausalLM"],
        "model_type": "gpt_neox",
        "vocab_size": v,
        "hidden_size": h,
        "num_hidden_layers": c.num_layers,
        "num_attention_heads": c.num_attention_heads,
        "intermediate_size": f,
        "max_position_embeddings": c.max_position_embeddings,
        "hidden_act": "gelu",
        "layer_norm_eps": c.norm_eps,
        "use_parallel_residual": c.gpt_j_residual,
        "tie_word_embeddings": c.tied_embeddings,
        "attention_bias": c.use_bias_in_attn_linear,
        "hidden_dropout": c.hidden_dropout,
        "attention_dropout": c.attention_dropout,
        "initializer_range": c.init_method_std,
        "rotary_pct": c.rotary_pct,
        "rotary_emb_base": c.rotary_emb_base,
        "rope_parameters": {
            "rope_type": "default",
            "partial_rotary_factor": c.rotary_pct,
            "rope_theta": c.rotary_emb_base,
        },
        "torch_dtype": "float32",
        "use_cache": true,
    });
    let text = serde_json::to_string_pretty(&config).unwrap_or_default();
    write_atomic(&config_path, text.as_bytes()).map_err(io(&config_path))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotary_dims_that_cannot_rotate_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let config = |pct: f64| {
            json!({
                "vocab_size": 16, "hidden_size": 24, "num_hidden_layers": 1,
                "num_attention_heads": 2, "intermediate_size": 96,
                "max_position_embeddings": 8, "rotary_pct": pct,
            })
        };
        // Head dim 12: 0.25 gives 3 dims (odd), 0.05 gives 0; 0.5 gives 6.
        for pct in [0.25, 0.05, 0.0, 1.5] {
            std::fs::write(dir.path().join("config.json"), config(pct).to_string()).unwrap();
            let err = read_config(dir.path()).unwrap_err().to_string();
            assert!(
                err.contains("config.json") && err.contains("rotary"),
                "{pct}: {err}"
            );
        }
        std::fs::write(dir.path().join("config.json"), config(0.5).to_string()).unwrap();
        assert_eq!(read_config(dir.path()).unwrap().rotary_dims(), 6);
    }
}
