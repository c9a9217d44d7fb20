//! Hugging Face GPT-NeoX checkpoints: `config.json` + `model.safetensors` (or
//! its shards `model-0000N-of-M.safetensors` and `model.safetensors.index.json`)
//! with `gpt_neox.*` and `embed_out.weight` tensors, read into and written from
//! [`GptNeox`]. Hugging Face stores linear weights `[out, in]`; Burn `[in, out]`.
//!
//! Weights are read in place from memory-mapped files and written one tensor
//! at a time, so neither direction holds a second copy of the model.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use burn::module::Param;
use burn::nn::Linear;
use burn::tensor::{Tensor, TensorData, backend::Backend};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors, View};
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
    #[serde(default)]
    rope_scaling: serde_json::Value,
    #[serde(default)]
    bos_token_id: serde_json::Value,
    #[serde(default)]
    eos_token_id: serde_json::Value,
}

#[derive(Debug, Deserialize)]
struct RopeParameters {
    partial_rotary_factor: Option<f64>,
    rope_theta: Option<f64>,
    rope_type: Option<String>,
}

/// transformers' `GPTNeoXConfig` default `rotary_pct` (Pythia's value).
pub const DEFAULT_ROTARY_PCT: f64 = 0.25;

/// What a Hugging Face folder's `config.json` says besides the model: the
/// token ids `generate()` starts and stops at.
#[derive(Debug, Clone, PartialEq)]
pub struct HfInfo {
    pub model: ModelConfig,
    pub bos_token_id: Option<u32>,
    /// The first id when `eos_token_id` is a list.
    pub eos_token_id: Option<u32>,
}

/// A token id written as a number, a list of numbers (the first counts) or null.
fn token_id(value: &serde_json::Value) -> Option<u32> {
    match value {
        serde_json::Value::Array(ids) => ids.first().and_then(token_id),
        v => v.as_u64().and_then(|id| u32::try_from(id).ok()),
    }
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
    read_info(dir).map(|info| info.model)
}

/// Reads `dir/config.json`: the model and its begin/end token ids.
/// A `config.json` without `rotary_pct` means transformers' default, 0.25;
/// scaled rotary embeddings (`rope_scaling`, a `rope_type` other than
/// `default`) are refused: this model does not compute them.
pub fn read_info(dir: &Path) -> Result<HfInfo, CheckpointError> {
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
    let scaled = match &hf.rope_scaling {
        serde_json::Value::Null => false,
        serde_json::Value::Object(m) => !m.is_empty(),
        _ => true,
    };
    if scaled {
        return Err(bad(format!(
            "rope_scaling {}: scaled rotary embeddings are not supported",
            hf.rope_scaling
        )));
    }
    if let Some(kind) = rope.and_then(|r| r.rope_type.as_deref())
        && kind != "default"
    {
        return Err(bad(format!(
            "rope_parameters.rope_type `{kind}`: only `default` rotary embeddings are supported"
        )));
    }
    let rotary_pct = rope
        .and_then(|r| r.partial_rotary_factor)
        .or(hf.rotary_pct)
        .unwrap_or(DEFAULT_ROTARY_PCT);
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
    let model = ModelConfig {
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
    };
    Ok(HfInfo {
        model,
        bos_token_id: token_id(&hf.bos_token_id),
        eos_token_id: token_id(&hf.eos_token_id),
    })
}

const SINGLE: &str = "model.safetensors";
const INDEX: &str = "model.safetensors.index.json";

/// The weight files of a folder, memory-mapped: `model.safetensors`, or the
/// shards its `model.safetensors.index.json` names, with which file holds
/// which tensor.
struct Mapped {
    files: Vec<(PathBuf, Mmap)>,
    owner: HashMap<String, usize>,
}

#[derive(Deserialize)]
struct Index {
    weight_map: BTreeMap<String, String>,
}

fn map_file(path: &Path) -> Result<Mmap, CheckpointError> {
    let io = |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    // SAFETY: the map is only read; a file changed underneath while it is
    // read gives wrong values, never memory unsafety in the reads made here.
    unsafe { Mmap::map(&file) }.map_err(io)
}

fn map_weights(dir: &Path) -> Result<Mapped, CheckpointError> {
    let single = dir.join(SINGLE);
    let index = dir.join(INDEX);
    if single.is_file() || !index.is_file() {
        let map = map_file(&single)?;
        return Ok(Mapped {
            files: vec![(single, map)],
            owner: HashMap::new(),
        });
    }
    let text = std::fs::read_to_string(&index).map_err(|source| CheckpointError::Io {
        path: index.clone(),
        source,
    })?;
    let parsed: Index = serde_json::from_str(&text).map_err(|e| CheckpointError::Safetensors {
        path: index.clone(),
        message: format!("expected a safetensors index with a `weight_map`: {e}"),
    })?;
    let mut files: Vec<(PathBuf, Mmap)> = Vec::new();
    let mut owner = HashMap::new();
    for (tensor, file) in parsed.weight_map {
        if file.contains(['/', '\\']) {
            return Err(CheckpointError::Safetensors {
                path: index.clone(),
                message: format!("tensor `{tensor}`: file `{file}` is not in the folder"),
            });
        }
        let path = dir.join(&file);
        let i = match files.iter().position(|(p, _)| *p == path) {
            Some(i) => i,
            None => {
                files.push((path.clone(), map_file(&path)?));
                files.len() - 1
            }
        };
        owner.insert(tensor, i);
    }
    Ok(Mapped { files, owner })
}

/// Tensors of the weight files, read as f32.
struct Weights<'a> {
    files: Vec<(PathBuf, SafeTensors<'a>)>,
    owner: &'a HashMap<String, usize>,
}

impl<'a> Weights<'a> {
    fn parse(mapped: &'a Mapped) -> Result<Self, CheckpointError> {
        let files = mapped
            .files
            .iter()
            .map(|(path, map)| {
                SafeTensors::deserialize(map)
                    .map(|t| (path.clone(), t))
                    .map_err(|e| CheckpointError::Safetensors {
                        path: path.clone(),
                        message: e.to_string(),
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(Weights {
            files,
            owner: &mapped.owner,
        })
    }

    fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, CheckpointError> {
        let (path, tensors) = &self.files[self.owner.get(name).copied().unwrap_or(0)];
        let err = |message: String| CheckpointError::Tensor {
            path: path.clone(),
            name: name.to_string(),
            message,
        };
        let view = tensors.tensor(name).map_err(|e| err(e.to_string()))?;
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

/// Loads a Hugging Face GPT-NeoX checkpoint folder (one weight file or shards,
/// f32, f16 or bf16).
pub fn load<B: Backend>(dir: &Path, device: &B::Device) -> Result<GptNeox<B>, CheckpointError> {
    let config = read_config(dir)?;
    let mut model = config.init::<B>(device);
    let mapped = map_weights(dir)?;
    fill(&mut model, &Weights::parse(&mapped)?, device)?;
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
    let mapped = Mapped {
        files: vec![(path.to_path_buf(), map_file(path)?)],
        owner: HashMap::new(),
    };
    fill(model, &Weights::parse(&mapped)?, device)
}

/// Replaces every parameter of `model` by its tensor in `w`.
fn fill<B: Backend>(
    model: &mut GptNeox<B>,
    w: &Weights,
    device: &B::Device,
) -> Result<(), CheckpointError> {
    let config = model.config.clone();
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

/// The dtype of written weights (`--dtype`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HfDtype {
    F32,
    F16,
    Bf16,
}

impl HfDtype {
    /// PyTorch's name, as `config.json`'s `torch_dtype` says it.
    pub fn torch_name(self) -> &'static str {
        match self {
            HfDtype::F32 => "float32",
            HfDtype::F16 => "float16",
            HfDtype::Bf16 => "bfloat16",
        }
    }

    fn safetensors(self) -> Dtype {
        match self {
            HfDtype::F32 => Dtype::F32,
            HfDtype::F16 => Dtype::F16,
            HfDtype::Bf16 => Dtype::BF16,
        }
    }

    fn size(self) -> usize {
        match self {
            HfDtype::F32 => 4,
            HfDtype::F16 | HfDtype::Bf16 => 2,
        }
    }

    /// Little-endian bytes of `values` in this dtype (rounded to nearest even).
    fn bytes(self, values: &[f32]) -> Vec<u8> {
        match self {
            HfDtype::F32 => values.iter().flat_map(|x| x.to_le_bytes()).collect(),
            HfDtype::F16 => values
                .iter()
                .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
                .collect(),
            HfDtype::Bf16 => values
                .iter()
                .flat_map(|x| half::bf16::from_f32(*x).to_le_bytes())
                .collect(),
        }
    }
}

impl FromStr for HfDtype {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" | "float" => Ok(HfDtype::F32),
            "f16" | "fp16" | "float16" | "half" => Ok(HfDtype::F16),
            "bf16" | "bfloat16" => Ok(HfDtype::Bf16),
            _ => Err(format!(
                "unknown dtype `{s}`: expected f32, f16 or bf16 (float32, float16, bfloat16)"
            )),
        }
    }
}

/// How [`save_with`] writes.
#[derive(Debug, Clone, PartialEq)]
pub struct SaveOptions {
    pub dtype: HfDtype,
    /// Weight files larger than this are split into shards
    /// (`model-0000N-of-M.safetensors` + `model.safetensors.index.json`);
    /// a single tensor larger than it gets a shard of its own.
    pub max_shard_bytes: u64,
    /// `bos_token_id` / `eos_token_id` in `config.json` (GPT-NeoX's EOD, so
    /// that `generate()` stops at the end of a document).
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
}

impl Default for SaveOptions {
    /// f32, shards of at most 5 GB (transformers' `save_pretrained` default
    /// through version 4), no token ids.
    fn default() -> Self {
        SaveOptions {
            dtype: HfDtype::F32,
            max_shard_bytes: 5_000_000_000,
            bos_token_id: None,
            eos_token_id: None,
        }
    }
}

/// One tensor to write, read from the model only when its bytes are written.
struct Entry<'a> {
    name: String,
    shape: Vec<usize>,
    dtype: HfDtype,
    values: Box<dyn Fn() -> TensorData + 'a>,
    /// The first conversion failure, reported after writing.
    failed: &'a RefCell<Option<(String, String)>>,
}

impl View for &Entry<'_> {
    fn dtype(&self) -> Dtype {
        self.dtype.safetensors()
    }

    fn shape(&self) -> &[usize] {
        &self.shape
    }

    fn data(&self) -> Cow<'_, [u8]> {
        let numel: usize = self.shape.iter().product();
        let values = (self.values)().convert::<f32>().into_vec::<f32>();
        match values {
            Ok(v) if v.len() == numel => Cow::Owned(self.dtype.bytes(&v)),
            other => {
                let why = match other {
                    Ok(v) => format!("{} values, expected {numel}", v.len()),
                    Err(e) => format!("{e:?}"),
                };
                self.failed
                    .borrow_mut()
                    .get_or_insert((self.name.clone(), why));
                Cow::Owned(vec![0; self.data_len()])
            }
        }
    }

    fn data_len(&self) -> usize {
        self.shape.iter().product::<usize>() * self.dtype.size()
    }
}

/// The model's tensors under Hugging Face's names, in the order written.
struct Entries<'a> {
    list: Vec<Entry<'a>>,
    dtype: HfDtype,
    failed: &'a RefCell<Option<(String, String)>>,
}

impl<'a> Entries<'a> {
    fn add<B: Backend + 'a, const D: usize>(
        &mut self,
        name: String,
        t: Tensor<B, D>,
        transpose: bool,
    ) {
        let dims = t.dims().to_vec();
        let shape = if transpose {
            dims.iter().rev().copied().collect()
        } else {
            dims
        };
        let values: Box<dyn Fn() -> TensorData + 'a> = if transpose {
            Box::new(move || t.clone().transpose().into_data())
        } else {
            Box::new(move || t.clone().into_data())
        };
        self.list.push(Entry {
            name,
            shape,
            dtype: self.dtype,
            values,
            failed: self.failed,
        });
    }

    fn norm<B: Backend + 'a>(&mut self, norm: &Norm<B>, prefix: &str) {
        self.add(format!("{prefix}.weight"), norm.weight.val(), false);
        if let Some(bias) = &norm.bias {
            self.add(format!("{prefix}.bias"), bias.val(), false);
        }
    }

    /// Burn's `[in, out]` written as Hugging Face's `[out, in]`.
    fn linear<B: Backend + 'a>(&mut self, linear: &Linear<B>, prefix: &str) {
        self.add(format!("{prefix}.weight"), linear.weight.val(), true);
        if let Some(bias) = &linear.bias {
            self.add(format!("{prefix}.bias"), bias.val(), false);
        }
    }
}

/// Writes `model` as a Hugging Face GPT-NeoX checkpoint in `dir` (created if
/// needed): f32, one weight file up to 5 GB.
pub fn save<B: Backend>(model: &GptNeox<B>, dir: &Path) -> Result<(), CheckpointError> {
    save_with(model, dir, &SaveOptions::default()).map(|_| ())
}

/// Writes `model` (one whole, unsplit model) as a Hugging Face GPT-NeoX
/// checkpoint in `dir` (created if needed): `config.json` and the weights,
/// sharded when larger than `options.max_shard_bytes`. Weight files of an
/// earlier export into `dir` that this one does not write are removed.
/// Returns the files written.
pub fn save_with<B: Backend>(
    model: &GptNeox<B>,
    dir: &Path,
    options: &SaveOptions,
) -> Result<Vec<PathBuf>, CheckpointError> {
    let c = &model.config;
    let config_path = dir.join("config.json");
    if let Some(why) = unsupported(c) {
        return Err(CheckpointError::HfConfig {
            path: config_path,
            message: format!("this model cannot be expressed: {why}"),
        });
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CheckpointError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let failed = RefCell::new(None);
    let mut out = Entries {
        list: Vec::new(),
        dtype: options.dtype,
        failed: &failed,
    };
    out.add(
        "gpt_neox.embed_in.weight".into(),
        model.embed_in.weight.val(),
        false,
    );
    for (i, layer) in model.layers.iter().enumerate() {
        let p = format!("gpt_neox.layers.{i}");
        out.norm(&layer.input_layernorm, &format!("{p}.input_layernorm"));
        out.norm(
            &layer.post_attention_layernorm,
            &format!("{p}.post_attention_layernorm"),
        );
        out.linear(
            &layer.attention.query_key_value,
            &format!("{p}.attention.query_key_value"),
        );
        out.linear(&layer.attention.dense, &format!("{p}.attention.dense"));
        out.linear(&layer.mlp.dense_h_to_4h, &format!("{p}.mlp.dense_h_to_4h"));
        out.linear(&layer.mlp.dense_4h_to_h, &format!("{p}.mlp.dense_4h_to_h"));
    }
    out.norm(&model.final_layer_norm, "gpt_neox.final_layer_norm");
    if let Some(embed_out) = &model.embed_out {
        out.linear(embed_out, "embed_out");
    }
    let shards = plan_shards(&out.list, options.max_shard_bytes);
    let names: Vec<String> = if shards.len() == 1 {
        vec![SINGLE.to_string()]
    } else {
        (1..=shards.len())
            .map(|i| format!("model-{i:05}-of-{:05}.safetensors", shards.len()))
            .collect()
    };
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    let mut written = Vec::new();
    let mut weight_map = BTreeMap::new();
    let mut total_size = 0u64;
    for (shard, name) in shards.iter().zip(&names) {
        let path = dir.join(name);
        let views: Vec<(&str, &Entry)> = shard
            .iter()
            .map(|&i| (out.list[i].name.as_str(), &out.list[i]))
            .collect();
        safetensors::serialize_to_file(views, Some(metadata.clone()), &path).map_err(|e| {
            CheckpointError::Safetensors {
                path: path.clone(),
                message: e.to_string(),
            }
        })?;
        if let Some((tensor, why)) = failed.borrow_mut().take() {
            let _ = std::fs::remove_file(&path);
            return Err(CheckpointError::Tensor {
                path,
                name: tensor,
                message: why,
            });
        }
        std::fs::File::open(&path)
            .and_then(|f| f.sync_all())
            .map_err(io(&path))?;
        for &i in shard {
            weight_map.insert(out.list[i].name.clone(), name.clone());
            total_size += View::data_len(&&out.list[i]) as u64;
        }
        written.push(path);
    }
    let index_path = dir.join(INDEX);
    if names.len() > 1 {
        let index = json!({
            "metadata": {"total_size": total_size},
            "weight_map": weight_map,
        });
        let text = serde_json::to_string_pretty(&index).unwrap_or_default();
        write_atomic(&index_path, text.as_bytes()).map_err(io(&index_path))?;
        written.push(index_path);
    }
    remove_stale_weights(dir, &names)?;
    let (h, v, f) = (c.hidden_size, c.vocab_size, c.intermediate_size);
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
        "bos_token_id": options.bos_token_id,
        "eos_token_id": options.eos_token_id,
        "torch_dtype": options.dtype.torch_name(),
        "dtype": options.dtype.torch_name(),
        "use_cache": true,
    });
    let text = serde_json::to_string_pretty(&config).unwrap_or_default();
    write_atomic(&config_path, text.as_bytes()).map_err(io(&config_path))?;
    written.push(config_path);
    Ok(written)
}

/// Groups tensors (by position) into shards of at most `max_bytes` each, in order.
fn plan_shards(entries: &[Entry], max_bytes: u64) -> Vec<Vec<usize>> {
    let mut shards: Vec<Vec<usize>> = vec![Vec::new()];
    let mut size = 0u64;
    for (i, e) in entries.iter().enumerate() {
        let bytes = View::data_len(&e) as u64;
        let current = shards.last_mut().filter(|s| !s.is_empty());
        if current.is_some() && size + bytes > max_bytes {
            shards.push(Vec::new());
            size = 0;
        }
        if let Some(last) = shards.last_mut() {
            last.push(i);
        }
        size += bytes;
    }
    shards
}

/// Removes weight files of an earlier export that `kept` does not name, and
/// the index when there is a single file now.
fn remove_stale_weights(dir: &Path, kept: &[String]) -> Result<(), CheckpointError> {
    let io = |path: PathBuf| move |source| CheckpointError::Io { path, source };
    for entry in std::fs::read_dir(dir).map_err(io(dir.to_path_buf()))? {
        let entry = entry.map_err(io(dir.to_path_buf()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let shard = name.starts_with("model-") && name.ends_with(".safetensors");
        let ours = shard || name == SINGLE || (name == INDEX && kept.len() == 1);
        if ours && !kept.contains(&name) {
            let path = entry.path();
            std::fs::remove_file(&path).map_err(io(path.clone()))?;
        }
    }
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

    fn write_config(dir: &Path, extra: serde_json::Value) {
        let mut config = json!({
            "vocab_size": 16, "hidden_size": 32, "num_hidden_layers": 1,
            "num_attention_heads": 2, "intermediate_size": 64,
            "max_position_embeddings": 8,
        });
        for (k, v) in extra.as_object().unwrap() {
            config[k] = v.clone();
        }
        std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    }

    #[test]
    fn a_config_without_rotary_pct_takes_transformers_default() {
        let dir = tempfile::tempdir().unwrap();
        write_config(
            dir.path(),
            json!({"eos_token_id": [7, 8], "bos_token_id": 3}),
        );
        let info = read_info(dir.path()).unwrap();
        assert_eq!(info.model.rotary_pct, 0.25);
        assert_eq!(info.model.rotary_dims(), 4); // head dim 16
        assert_eq!((info.bos_token_id, info.eos_token_id), (Some(3), Some(7)));
        write_config(dir.path(), json!({"rotary_pct": 1.0, "eos_token_id": null}));
        let info = read_info(dir.path()).unwrap();
        assert_eq!((info.model.rotary_pct, info.eos_token_id), (1.0, None));
    }

    #[test]
    fn scaled_rotary_embeddings_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for (extra, word) in [
            (
                json!({"rope_scaling": {"type": "linear", "factor": 2.0}}),
                "rope_scaling",
            ),
            (
                json!({"rope_parameters": {"rope_type": "dynamic", "factor": 2.0}}),
                "dynamic",
            ),
        ] {
            write_config(dir.path(), extra);
            let err = read_config(dir.path()).unwrap_err().to_string();
            assert!(err.contains("config.json") && err.contains(word), "{err}");
        }
        write_config(
            dir.path(),
            json!({"rope_scaling": null, "rope_parameters": {"rope_type": "default"}}),
        );
        assert!(read_config(dir.path()).is_ok());
    }

    #[test]
    fn dtypes_parse_under_their_usual_names() {
        for (name, dtype) in [
            ("bf16", HfDtype::Bf16),
            ("bfloat16", HfDtype::Bf16),
            ("fp16", HfDtype::F16),
            ("float32", HfDtype::F32),
        ] {
            assert_eq!(name.parse::<HfDtype>(), Ok(dtype));
        }
        assert!("int8".parse::<HfDtype>().unwrap_err().contains("bf16"));
        assert_eq!(HfDtype::Bf16.bytes(&[1.0]), half::bf16::ONE.to_le_bytes());
    }
}
