//! GPT-NeoX's YAML configuration, typed: the options the trainer acts on, the
//! GPT-NeoX options it knows but does not act on (reported as notes when they
//! change nothing, listed as unimplemented when their value would change the
//! model, data or numerics: see [`keys`]), and unknown options (refused, with
//! the closest known name).

pub mod keys;
mod offload;
pub mod yaml;

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::dist::onebit_adam::OneBitConfig;
use crate::dist::{PartitionMethod, ZeroStage};
use crate::error::ConfigError;
use crate::model::{
    Activation, AttentionKind, InitMethod, ModelConfig, NormKind, PosEmb, SparsityConfig,
};
use crate::optim::OptimConfig;
use crate::precision::{Fp16Config, Precision, PrecisionConfig};
use crate::schedule::{DecayStyle, ResumeFlags, Schedule};
use yaml::{Options, Resolved, Source, canonical};

/// Every option name GPT-NeoX defines (its `neox_arguments.md`, and the
/// fields of `neox_args.py` on GPT-NeoX's main branch).
const NEOX_OPTIONS: &str = include_str!("neox_keys.txt");

/// GPT-NeoX's default `tokenizer_type`.
pub const DEFAULT_TOKENIZER_TYPE: &str = "GPT2BPETokenizer";

/// Where the training samples come from.
#[derive(Debug, Clone, PartialEq)]
pub enum DataSource {
    /// One prefix split into train/valid/test by document weights (`data_path` + `split`).
    Split { prefix: PathBuf, split: String },
    /// Separate (weighted) prefixes per split.
    Paths {
        train: Vec<(PathBuf, f64)>,
        valid: Vec<(PathBuf, f64)>,
        test: Vec<(PathBuf, f64)>,
    },
}

/// The loop's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainingConfig {
    pub micro_batch_size: usize,
    pub gradient_accumulation_steps: usize,
    pub train_iters: u64,
    pub eval_interval: u64,
    pub eval_iters: u64,
    pub log_interval: u64,
    pub seed: u64,
    pub save: Option<PathBuf>,
    pub load: Option<PathBuf>,
    /// `finetune`: take only the weights of `load` (iteration 0, fresh
    /// optimizer and schedule).
    pub finetune: bool,
    /// `no_load_optim`: resume from `load` without its optimizer state (and
    /// with the configured schedule).
    pub no_load_optim: bool,
    pub log_dir: Option<PathBuf>,
    pub checkpoint_factor: Option<u64>,
    pub keep_last_n_checkpoints: Option<usize>,
    /// Data-parallel ranks the batch sizes were derived for.
    pub data_parallel_size: usize,
    /// `zero_optimization.stage`.
    pub zero_stage: ZeroStage,
    /// `pipe_parallel_size` (GPT-NeoX's 0, no pipeline engine, is one stage here too).
    pub pipe_parallel_size: usize,
    /// `model_parallel_size`: tensor-parallel ranks.
    pub model_parallel_size: usize,
    /// `pipe_partition_method`.
    pub pipe_partition_method: PartitionMethod,
    /// Activation checkpointing: `checkpoint_num_layers` when
    /// `checkpoint_activations` is on.
    pub checkpoint_layers: Option<usize>,
}

/// A whole configuration, read from one or more YAML files.
#[derive(Debug, Clone)]
pub struct NeoxArgs {
    /// The model; its vocabulary is `None` until known (see [`NeoxArgs::vocab_size`]).
    pub model: ModelConfig,
    /// `padded_vocab_size` when set, else `None` (then the tokenizer decides).
    pub padded_vocab_size: Option<usize>,
    pub make_vocab_size_divisible_by: usize,
    /// `tokenizer_type`, `vocab_file` and `merge_file`, for callers that load the tokenizer.
    pub tokenizer_type: Option<String>,
    pub vocab_file: Option<PathBuf>,
    pub merge_file: Option<PathBuf>,
    pub optim: OptimConfig,
    /// `precision`, `fp16`, `bf16`: what the passes compute in.
    pub precision: PrecisionConfig,
    pub schedule: Schedule,
    /// What a resumed run does when the checkpoint's schedule differs.
    pub resume_flags: ResumeFlags,
    pub training: TrainingConfig,
    pub data: Option<DataSource>,
    /// GPT-NeoX options present in the files that this trainer does not act
    /// on and that change nothing at their values here.
    pub not_acted_on: Vec<(String, PathBuf)>,
    /// GPT-NeoX options whose values would change the model, the data or the
    /// numerics and that this trainer does not implement yet: a run stops on
    /// them (see [`NeoxArgs::refuse_unimplemented`]).
    pub unimplemented: Vec<Unimplemented>,
    /// Every option as resolved, with the file it came from, `default` or
    /// `derived` (the options read, then those set and not read).
    pub provenance: Vec<Resolved>,
}

/// GPT-NeoX options not acted on, with the files that set them.
type Notes = Vec<(String, PathBuf)>;

/// A GPT-NeoX option set to a value this trainer cannot honour yet.
#[derive(Debug, Clone, PartialEq)]
pub struct Unimplemented {
    pub key: String,
    pub file: PathBuf,
    /// The value, shortened for messages.
    pub value: String,
    /// What it changes (e.g. "half precision is not implemented yet").
    pub why: &'static str,
}

impl std::fmt::Display for Unimplemented {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}: {}` in {} ({})",
            self.key,
            self.value,
            self.file.display(),
            self.why
        )
    }
}

fn bad(options_file: Option<&Path>, key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::BadValue {
        file: options_file.map(Path::to_path_buf).unwrap_or_default(),
        key: key.to_string(),
        message: message.into(),
    }
}

/// Takes a value and checks it, naming the file that set it when the check fails.
fn take_checked<T: serde::de::DeserializeOwned + serde::Serialize>(
    options: &mut Options,
    key: &str,
    default: T,
    check: impl Fn(&T) -> Result<(), String>,
) -> Result<T, ConfigError> {
    let file = options.file_of(key).map(Path::to_path_buf);
    let value = options.take_or(key, default)?;
    check(&value).map_err(|message| bad(file.as_deref(), key, message))?;
    Ok(value)
}

fn positive<T: PartialOrd + Default + Copy>(v: &T) -> Result<(), String> {
    if *v > T::default() {
        Ok(())
    } else {
        Err("expected a value greater than zero".into())
    }
}

fn probability(v: &f64) -> Result<(), String> {
    if (0.0..1.0).contains(v) {
        Ok(())
    } else {
        Err(format!("expected a probability in [0, 1), found {v}"))
    }
}

fn non_negative(v: &f64) -> Result<(), String> {
    if *v >= 0.0 && v.is_finite() {
        Ok(())
    } else {
        Err(format!("expected a finite value >= 0, found {v}"))
    }
}

fn any<T>(_: &T) -> Result<(), String> {
    Ok(())
}

/// GPT-NeoX's nested `optimizer: {type, params: {lr, betas, eps}}`; 1-bit
/// Adam adds the keys of DeepSpeed's `OnebitAdam`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OptimizerSection {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    params: OptimizerParams,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct OptimizerParams {
    lr: Option<f64>,
    betas: Option<[f64; 2]>,
    eps: Option<f64>,
    // OneBitAdam's own.
    weight_decay: Option<f64>,
    freeze_step: Option<u64>,
    /// MPI's CUDA-aware transport; the engine here is chosen by `--comm`.
    cuda_aware: Option<bool>,
    comm_backend_name: Option<String>,
    amsgrad: Option<bool>,
    // Taken by DeepSpeed's `OnebitAdam` and never read by it.
    bias_correction: Option<bool>,
    eps_inside_sqrt: Option<bool>,
    max_grad_norm: Option<f64>,
}

impl OptimizerParams {
    /// The OneBitAdam keys that are set, by name.
    fn onebit_keys(&self) -> Vec<&'static str> {
        [
            ("weight_decay", self.weight_decay.is_some()),
            ("freeze_step", self.freeze_step.is_some()),
            ("cuda_aware", self.cuda_aware.is_some()),
            ("comm_backend_name", self.comm_backend_name.is_some()),
            ("amsgrad", self.amsgrad.is_some()),
            ("bias_correction", self.bias_correction.is_some()),
            ("eps_inside_sqrt", self.eps_inside_sqrt.is_some()),
            ("max_grad_norm", self.max_grad_norm.is_some()),
        ]
        .into_iter()
        .filter_map(|(key, set)| set.then_some(key))
        .collect()
    }
}

/// DeepSpeed's `freeze_step` default.
const FREEZE_STEP: u64 = 100_000;

/// DeepSpeed's `fp16` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Fp16Section {
    enabled: Option<bool>,
    #[serde(rename = "type")]
    kind: Option<String>,
    loss_scale: Option<f64>,
    initial_scale_power: Option<u32>,
    loss_scale_window: Option<u64>,
    hysteresis: Option<u32>,
    min_loss_scale: Option<f64>,
    consecutive_hysteresis: Option<bool>,
    /// Casts the model's inputs; the model here casts at use anyway.
    #[allow(dead_code)]
    auto_cast: Option<bool>,
    fp16_master_weights_and_grads: Option<bool>,
    /// GPT-NeoX's own configs repeat `fp16: true` inside the section; DeepSpeed ignores it.
    #[allow(dead_code)]
    fp16: Option<bool>,
}

/// DeepSpeed's `bf16` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Bf16Section {
    enabled: Option<bool>,
}

impl NeoxArgs {
    /// Reads `paths` in order and merges them: a later file wins over an
    /// earlier one (GPT-NeoX refuses an option set twice; see [`yaml`]).
    pub fn from_files(paths: &[PathBuf]) -> Result<Self, ConfigError> {
        Self::from_options(Options::read(paths)?)
    }

    /// Builds the typed configuration from merged options, for one process.
    pub fn from_options(o: Options) -> Result<Self, ConfigError> {
        Self::from_options_in(o, 1)
    }

    /// Reads `paths` for a run on `world` data-parallel ranks.
    pub fn from_files_in(paths: &[PathBuf], world: usize) -> Result<Self, ConfigError> {
        Self::from_options_in(Options::read(paths)?, world)
    }

    /// Builds the typed configuration for a run on `world` data-parallel ranks:
    /// `train_batch_size = train_micro_batch_size_per_gpu x
    /// gradient_accumulation_steps x world`, the missing ones derived as
    /// DeepSpeed derives them.
    pub fn from_options_in(mut o: Options, world: usize) -> Result<Self, ConfigError> {
        let mut model = Self::model(&mut o)?;
        let padded_vocab_size = o.take::<usize>("padded_vocab_size")?;
        model.vocab_size = padded_vocab_size.unwrap_or(0);
        let make_vocab_size_divisible_by =
            take_checked(&mut o, "make_vocab_size_divisible_by", 128usize, positive)?;
        let vocab_file = o.take::<PathBuf>("vocab_file")?;
        let merge_file = o.take::<PathBuf>("merge_file")?;
        // GPT-NeoX's default tokenizer is GPT2BPETokenizer; it applies here when
        // its files are given (without them, the vocabulary must come from
        // `padded_vocab_size` or an explicit `tokenizer_type`).
        let tokenizer_type = o.take::<String>("tokenizer_type")?.or_else(|| {
            vocab_file
                .as_ref()
                .map(|_| DEFAULT_TOKENIZER_TYPE.to_string())
        });
        let optimizer_file = o.file_of("optimizer").map(Path::to_path_buf);
        let zero_file = o.file_of("zero_optimization").map(Path::to_path_buf);
        let (zero_stage, offload) = Self::zero(&mut o)?;
        let optim = Self::optim(&mut o, offload)?;
        let precision = Self::precision(&mut o)?;
        let training = Self::training(&mut o, world.max(1), zero_stage)?;
        if optim.onebit.is_some() {
            Self::onebit_layout(&training, optimizer_file, zero_file)?;
        }
        // GPT-NeoX seeds Python's `random` with `seed` before building layers.
        model.sparsity_config.seed = training.seed;
        let onebit = optim.onebit.is_some();
        let schedule = Self::schedule(&mut o, optim.lr, training.train_iters, onebit)?;
        let resume_flags = Self::resume_flags(&mut o)?;
        let data = Self::data(&mut o)?;
        if let Some(t) = &tokenizer_type {
            o.derived("tokenizer_type", t);
        }
        o.derived("intermediate_size", model.intermediate_size);
        o.derived("lr_decay_iters", schedule.decay_iters);
        let provenance = o.provenance();
        let (not_acted_on, unimplemented) = Self::leftovers(o)?;
        Ok(NeoxArgs {
            model,
            padded_vocab_size,
            make_vocab_size_divisible_by,
            tokenizer_type,
            vocab_file,
            merge_file,
            optim,
            precision,
            schedule,
            resume_flags,
            training,
            data,
            not_acted_on,
            unimplemented,
            provenance,
        })
    }

    /// Refuses a configuration that sets options this trainer does not
    /// implement to values that would change the run.
    pub fn refuse_unimplemented(&self) -> Result<(), ConfigError> {
        if self.unimplemented.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Unimplemented(
                self.unimplemented.iter().map(|u| u.to_string()).collect(),
            ))
        }
    }

    /// Sets the model's vocabulary from the tokenizer's (unpadded) size, padded as
    /// GPT-NeoX pads it; `padded_vocab_size` from the config wins when set.
    pub fn set_vocab_size(&mut self, tokenizer_vocab: usize) {
        let m = self.make_vocab_size_divisible_by;
        self.model.vocab_size = self
            .padded_vocab_size
            .unwrap_or(tokenizer_vocab.div_ceil(m) * m);
        if let Some(r) = self
            .provenance
            .iter_mut()
            .find(|r| r.key == "padded_vocab_size" && r.source == Source::Default)
        {
            r.value = self.model.vocab_size.into();
            r.source = Source::Derived;
        }
    }

    /// The resolved value of option `key` (`None` when nobody asked for it
    /// and no file set it).
    pub fn resolved(&self, key: &str) -> Option<&Resolved> {
        self.provenance.iter().find(|r| r.key == key)
    }

    /// The model's vocabulary, or why it is not known yet.
    pub fn vocab_size(&self) -> Result<usize, ConfigError> {
        match self.model.vocab_size {
            0 => Err(ConfigError::Missing {
                key: "padded_vocab_size".into(),
                why: "the vocabulary size is unknown: set `padded_vocab_size`, or a \
                      `tokenizer_type` and `vocab_file` the trainer can load"
                    .into(),
            }),
            v => Ok(v),
        }
    }

    fn model(o: &mut Options) -> Result<ModelConfig, ConfigError> {
        let required = |o: &mut Options, key: &str| -> Result<usize, ConfigError> {
            let file = o.file_of(key).map(Path::to_path_buf);
            match o.take::<usize>(key)? {
                Some(0) => Err(bad(
                    file.as_deref(),
                    key,
                    "expected a value greater than zero",
                )),
                Some(v) => Ok(v),
                None => Err(ConfigError::Missing {
                    key: key.into(),
                    why: "the model's shape needs it".into(),
                }),
            }
        };
        let num_layers = required(o, "num_layers")?;
        let hidden_file = o.file_of("hidden_size").map(Path::to_path_buf);
        let hidden_size = required(o, "hidden_size")?;
        let num_attention_heads = required(o, "num_attention_heads")?;
        if !hidden_size.is_multiple_of(num_attention_heads) {
            return Err(bad(
                hidden_file.as_deref(),
                "hidden_size",
                format!(
                    "{hidden_size} is not divisible by num_attention_heads {num_attention_heads}"
                ),
            ));
        }
        let seq_length = required(o, "seq_length")?;
        // GPT-NeoX requires `max_position_embeddings >= seq_length` (and the
        // key itself; here it defaults to `seq_length`).
        let max_position_embeddings =
            take_checked(o, "max_position_embeddings", seq_length, |m| {
                if *m >= seq_length {
                    Ok(())
                } else {
                    Err(format!("{m} is below seq_length {seq_length}"))
                }
            })?;
        let norm_file = o.file_of("norm").map(Path::to_path_buf);
        let norm_name = o.take_or("norm", "layernorm".to_string())?;
        // TransformerEngine's norms compute the same functions.
        let norm = match norm_name.as_str() {
            "layernorm" | "te_layernorm" => NormKind::LayerNorm,
            "rmsnorm" | "te_rmsnorm" => NormKind::RmsNorm,
            "scalenorm" | "non_parametric_layernorm" => {
                return Err(bad(
                    norm_file.as_deref(),
                    "norm",
                    format!("`{norm_name}` is not implemented"),
                ));
            }
            other => {
                return Err(bad(
                    norm_file.as_deref(),
                    "norm",
                    format!(
                        "`{other}` is not one of GPT-NeoX's norms (layernorm, rmsnorm, \
                         te_layernorm, te_rmsnorm, scalenorm, non_parametric_layernorm)"
                    ),
                ));
            }
        };
        let layernorm_epsilon = take_checked(o, "layernorm_epsilon", 1e-5, positive)?;
        let rms_norm_epsilon = take_checked(o, "rms_norm_epsilon", 1e-8, positive)?;
        let pos_emb = o.take_or("pos_emb", PosEmb::Learned)?;
        let head_dim = hidden_size / num_attention_heads;
        let rotary_pct = take_checked(o, "rotary_pct", 1.0f64, |p| {
            let dims = (head_dim as f64 * p) as usize;
            if !(*p > 0.0 && *p <= 1.0) {
                Err(format!("expected a fraction in (0, 1], found {p}"))
            } else if pos_emb == PosEmb::Rotary && (dims == 0 || !dims.is_multiple_of(2)) {
                Err(format!(
                    "gives {dims} rotary dims of head dim {head_dim}: expected an even number above 0"
                ))
            } else {
                Ok(())
            }
        })?;
        let rotary_emb_base = take_checked(o, "rotary_emb_base", 10000.0f64, positive)?;
        let no_weight_tying = o.take_or("no_weight_tying", false)?;
        let gpt_j_residual = o.take_or("gpt_j_residual", false)?;
        let activation_file = o.file_of("activation").map(Path::to_path_buf);
        let activation_name = o.take_or("activation", "gelu".to_string())?;
        let bias_gelu_fusion = o.take_or("bias_gelu_fusion", false)?;
        let activation =
            Activation::from_neox(&activation_name, bias_gelu_fusion).ok_or_else(|| {
                bad(
                    activation_file.as_deref(),
                    "activation",
                    format!(
                        "`{activation_name}` is not one of GPT-NeoX's activations ({})",
                        Activation::NEOX_NAMES.join(", ")
                    ),
                )
            })?;
        let num_kv_heads = take_checked(o, "num_kv_heads", None::<usize>, |kv| match kv {
            Some(kv) if *kv == 0 || !num_attention_heads.is_multiple_of(*kv) => Err(format!(
                "{kv} does not divide num_attention_heads {num_attention_heads}"
            )),
            _ => Ok(()),
        })?;
        let sliding_window_width = o.take::<usize>("sliding_window_width")?;
        let gpt_j_tied = o.take_or("gpt_j_tied", false)?;
        let opt_pos_emb_offset = take_checked(o, "opt_pos_emb_offset", 0usize, |offset| {
            if pos_emb == PosEmb::Learned && seq_length + offset > max_position_embeddings {
                Err(format!(
                    "learned positions up to seq_length {seq_length} + {offset} need \
                         max_position_embeddings >= {}, found {max_position_embeddings}",
                    seq_length + offset
                ))
            } else {
                Ok(())
            }
        })?;
        let mlp_file = ["intermediate_size", "expansion_factor", "mlp_multiple_of"]
            .iter()
            .find_map(|k| o.file_of(k).map(|f| (*k, f.to_path_buf())));
        let intermediate_size = take_checked(o, "intermediate_size", None::<usize>, |v| match v {
            Some(0) => Err("expected a value greater than zero".into()),
            _ => Ok(()),
        })?;
        let expansion_factor = take_checked(o, "expansion_factor", None::<f64>, |v| {
            v.map_or(Ok(()), |v| positive(&v))
        })?;
        let mlp_multiple_of = take_checked(o, "mlp_multiple_of", 1usize, positive)?;
        let init_method = o.take_or("init_method", InitMethod::Normal)?;
        let output_layer_init_method =
            o.take_or("output_layer_init_method", InitMethod::ScaledNormal)?;
        let init_method_std = take_checked(o, "init_method_std", 0.02f64, positive)?;
        let hidden_dropout = take_checked(o, "hidden_dropout", 0.0f64, probability)?;
        let attention_dropout = take_checked(o, "attention_dropout", 0.0f64, probability)?;
        let use_bias_in_attn_linear = o.take_or("use_bias_in_attn_linear", true)?;
        let use_bias_in_mlp = o.take_or("use_bias_in_mlp", true)?;
        let use_bias_in_norms = o.take_or("use_bias_in_norms", true)?;
        let attention_file = o.file_of("attention_config").map(Path::to_path_buf);
        let attention_config = match o.take_entry("attention_config") {
            Some(entry) if !entry.value.is_null() => {
                expand_attention_config(&entry.value, num_layers)
                    .map_err(|m| bad(Some(&entry.file), "attention_config", m))?
            }
            _ => Vec::new(),
        };
        let sparsity_file = o.file_of("sparsity_config").map(Path::to_path_buf);
        let sparsity_config = match o.take_entry("sparsity_config") {
            Some(entry) if !entry.value.is_null() => {
                let here = |m: String| bad(Some(&entry.file), "sparsity_config", m);
                if entry.value.get("seed").is_some() {
                    return Err(here(
                        "unknown field `seed` (the top-level `seed` seeds layouts)".into(),
                    ));
                }
                serde_yaml_ng::from_value::<SparsityConfig>(entry.value.clone())
                    .map_err(|e| here(e.to_string()))?
            }
            _ => SparsityConfig::default(),
        };
        let sparse = attention_config.iter().any(|k| k.is_sparse());
        if sparse && num_kv_heads.is_some_and(|kv| kv != num_attention_heads) {
            return Err(bad(
                attention_file.as_deref(),
                "attention_config",
                "sparse attention does not combine with num_kv_heads (GPT-NeoX refuses it too)",
            ));
        }
        let ffn = ModelConfig::ffn_size(
            hidden_size,
            activation,
            intermediate_size,
            expansion_factor,
            mlp_multiple_of,
        )
        .map_err(|m| {
            let (key, file) = mlp_file.unwrap_or(("hidden_size", hidden_file.unwrap_or_default()));
            bad(Some(&file), key, format!("MLP width: {m}"))
        })?;
        let norm_eps = match norm {
            NormKind::LayerNorm => layernorm_epsilon,
            NormKind::RmsNorm => rms_norm_epsilon,
        };
        let model = ModelConfig {
            num_layers,
            hidden_size,
            num_attention_heads,
            seq_length,
            max_position_embeddings,
            vocab_size: 0,
            norm,
            norm_eps,
            pos_emb,
            rotary_pct,
            rotary_emb_base,
            gpt_j_residual,
            tied_embeddings: !no_weight_tying,
            activation,
            intermediate_size: ffn,
            init_method,
            output_layer_init_method,
            init_method_std,
            hidden_dropout,
            attention_dropout,
            use_bias_in_attn_linear,
            use_bias_in_mlp,
            use_bias_in_norms,
            num_kv_heads: num_kv_heads.filter(|&kv| kv != num_attention_heads),
            sliding_window_width,
            gpt_j_tied,
            opt_pos_emb_offset,
            attention_config,
            sparsity_config,
        };
        if sparse {
            model.sparse_layouts().map_err(|m| {
                let file = sparsity_file.or(attention_file);
                bad(
                    file.as_deref(),
                    "sparsity_config",
                    format!("DeepSpeed's layout: {m}"),
                )
            })?;
        }
        Ok(model)
    }

    /// The optimizer section; `offload`: ZeRO-Offload is on (see [`Self::zero`]).
    fn optim(o: &mut Options, offload: bool) -> Result<OptimConfig, ConfigError> {
        let file = o.file_of("optimizer").map(Path::to_path_buf);
        let section = o.take::<OptimizerSection>("optimizer")?;
        let top_lr_file = o.file_of("lr").map(Path::to_path_buf);
        let top_lr = o.take::<f64>("lr")?;
        let weight_decay = take_checked(o, "weight_decay", 0.1f64, non_negative)?;
        let gradient_clipping = take_checked(o, "gradient_clipping", 1.0f64, non_negative)?;
        let (kind, params) = match section {
            Some(s) => (s.kind, s.params),
            None => ("adam".to_string(), OptimizerParams::default()),
        };
        // DeepSpeed and GPT-NeoX compare the type in lower case.
        let onebit = match kind.to_lowercase().as_str() {
            "adam" | "adamw" => false,
            "onebitadam" => true,
            // GPT-NeoX's DeepSpeedCPUAdam (AdamW mode): the same update, on the host.
            "cpu_adam" if offload => false,
            "cpu_adam" => {
                return Err(bad(
                    file.as_deref(),
                    "optimizer",
                    "type `cpu_adam` steps on the host: it needs \
                     `zero_optimization.offload_optimizer: {device: cpu}` (ZeRO stage 1 or 2)",
                ));
            }
            _ => {
                return Err(bad(
                    file.as_deref(),
                    "optimizer",
                    format!(
                        "type `{kind}` is not supported here: expected Adam, AdamW, OneBitAdam \
                         or cpu_adam (with ZeRO-Offload)"
                    ),
                ));
            }
        };
        if let (false, Some(key)) = (onebit, params.onebit_keys().first()) {
            return Err(bad(
                file.as_deref(),
                &format!("optimizer.params.{key}"),
                format!("a OneBitAdam setting; the optimizer here is `{kind}`"),
            ));
        }
        let lr = params.lr.or(top_lr).ok_or_else(|| ConfigError::Missing {
            key: "optimizer.params.lr".into(),
            why: "the learning rate has no default".into(),
        })?;
        let lr_file = if params.lr.is_some() {
            file.clone()
        } else {
            top_lr_file
        };
        positive(&lr).map_err(|m| bad(lr_file.as_deref(), "lr", m))?;
        let [beta1, beta2] = params.betas.unwrap_or([0.9, 0.999]);
        for beta in [beta1, beta2] {
            probability(&beta).map_err(|m| bad(file.as_deref(), "optimizer.params.betas", m))?;
        }
        let eps = params.eps.unwrap_or(1e-8);
        positive(&eps).map_err(|m| bad(file.as_deref(), "optimizer.params.eps", m))?;
        let onebit = match onebit {
            true => Some(Self::onebit(&params, weight_decay, file.as_deref())?),
            false => None,
        };
        Ok(OptimConfig {
            lr,
            beta1,
            beta2,
            eps,
            weight_decay,
            gradient_clipping,
            onebit,
            offload,
            adam: Default::default(),
        })
    }

    /// DeepSpeed's `OnebitAdam` settings. GPT-NeoX hands `optimizer.params` to
    /// it as they are: the top-level `weight_decay` only decides whether
    /// weights form a group of their own (not when it is 0), whose decay is
    /// then `optimizer.params.weight_decay` (default 0).
    fn onebit(
        params: &OptimizerParams,
        top_weight_decay: f64,
        file: Option<&Path>,
    ) -> Result<OneBitConfig, ConfigError> {
        if params.amsgrad == Some(true) {
            return Err(bad(
                file,
                "optimizer.params.amsgrad",
                "1-bit Adam does not support the AMSGrad variant (as DeepSpeed)",
            ));
        }
        if let Some(name) = &params.comm_backend_name
            && !matches!(name.as_str(), "nccl" | "mpi" | "hccl" | "compressed")
        {
            return Err(bad(
                file,
                "optimizer.params.comm_backend_name",
                format!("`{name}`: expected nccl, mpi, hccl or compressed (DeepSpeed's)"),
            ));
        }
        let weight_decay = params.weight_decay.unwrap_or(0.0);
        non_negative(&weight_decay).map_err(|m| bad(file, "optimizer.params.weight_decay", m))?;
        Ok(OneBitConfig {
            freeze_step: params.freeze_step.unwrap_or(FREEZE_STEP),
            weight_decay: if top_weight_decay == 0.0 {
                0.0
            } else {
                weight_decay
            },
        })
    }

    /// Refuses what 1-bit Adam cannot run with: ZeRO (DeepSpeed refuses it
    /// too) and, for now, a model split over tensor or pipeline ranks.
    fn onebit_layout(
        training: &TrainingConfig,
        optimizer_file: Option<PathBuf>,
        zero_file: Option<PathBuf>,
    ) -> Result<(), ConfigError> {
        if training.zero_stage != ZeroStage::Off {
            return Err(bad(
                zero_file.as_deref(),
                "zero_optimization.stage",
                format!(
                    "stage {} with optimizer OneBitAdam: 1-bit Adam is not compatible with \
                     ZeRO (DeepSpeed refuses it too); use stage 0",
                    training.zero_stage.number()
                ),
            ));
        }
        if training.model_parallel_size > 1 || training.pipe_parallel_size > 1 {
            return Err(bad(
                optimizer_file.as_deref(),
                "optimizer.type",
                format!(
                    "OneBitAdam with a split model (model_parallel_size {}, \
                     pipe_parallel_size {}) is not implemented yet: it runs with data \
                     parallelism alone",
                    training.model_parallel_size, training.pipe_parallel_size
                ),
            ));
        }
        Ok(())
    }

    /// GPT-NeoX's `precision` and DeepSpeed's `fp16` / `bf16` sections, resolved
    /// as GPT-NeoX resolves them: an explicit `precision` wins and must agree
    /// with an enabled section; else an enabled `fp16` (its `type` may say
    /// `bfloat16`) or `bf16`; else fp32.
    fn precision(o: &mut Options) -> Result<PrecisionConfig, ConfigError> {
        let precision_file = o.file_of("precision").map(Path::to_path_buf);
        let named = o.take::<String>("precision")?;
        let fp16_file = o.file_of("fp16").map(Path::to_path_buf);
        let fp16 = o.take::<Fp16Section>("fp16")?.unwrap_or_default();
        let bf16_file = o.file_of("bf16").map(Path::to_path_buf);
        let bf16 = o.take::<Bf16Section>("bf16")?.unwrap_or_default();
        let named = match named {
            Some(name) => Some(Precision::from_name(&name).ok_or_else(|| {
                bad(
                    precision_file.as_deref(),
                    "precision",
                    format!("`{name}`: expected fp32, fp16 or bfloat16"),
                )
            })?),
            None => None,
        };
        let fp16_precision = match fp16.kind.as_deref() {
            None => Precision::Fp16,
            Some(kind) => match Precision::from_name(kind) {
                Some(p @ (Precision::Fp16 | Precision::Bf16)) => p,
                _ => {
                    return Err(bad(
                        fp16_file.as_deref(),
                        "fp16.type",
                        format!("`{kind}`: expected fp16 or bfloat16"),
                    ));
                }
            },
        };
        let enabled = match (fp16.enabled == Some(true), bf16.enabled == Some(true)) {
            (true, true) if fp16_precision == Precision::Fp16 => {
                return Err(bad(
                    bf16_file.as_deref(),
                    "bf16",
                    "enabled together with `fp16`: choose one",
                ));
            }
            (true, _) => Some((fp16_precision, "fp16", fp16_file.clone())),
            (false, true) => Some((Precision::Bf16, "bf16", bf16_file)),
            (false, false) => None,
        };
        let precision = match (named, enabled) {
            (Some(named), Some((on, key, file))) if named != on => {
                return Err(bad(
                    file.as_deref(),
                    key,
                    format!(
                        "enables {} but `precision` is {} (in {}): make them agree",
                        on.name(),
                        named.name(),
                        precision_file.unwrap_or_default().display()
                    ),
                ));
            }
            (Some(named), _) => named,
            (None, Some((on, _, _))) => on,
            (None, None) => Precision::Fp32,
        };
        let at = |key: &str| format!("fp16.{key}");
        let check = |ok: bool, key: &str, what: &str| {
            if ok {
                Ok(())
            } else {
                Err(bad(fp16_file.as_deref(), &at(key), what.to_string()))
            }
        };
        let d = Fp16Config::default();
        let config = Fp16Config {
            loss_scale: fp16.loss_scale.unwrap_or(d.loss_scale),
            initial_scale_power: fp16.initial_scale_power.unwrap_or(d.initial_scale_power),
            loss_scale_window: fp16.loss_scale_window.unwrap_or(d.loss_scale_window),
            hysteresis: fp16.hysteresis.unwrap_or(d.hysteresis),
            min_loss_scale: fp16.min_loss_scale.unwrap_or(d.min_loss_scale),
            consecutive_hysteresis: fp16
                .consecutive_hysteresis
                .unwrap_or(d.consecutive_hysteresis),
        };
        let finite = |v: f64| v.is_finite() && v >= 0.0;
        check(
            finite(config.loss_scale),
            "loss_scale",
            "expected 0 (dynamic) or a positive scale",
        )?;
        check(
            config.initial_scale_power < 128,
            "initial_scale_power",
            "expected a power of two below 128",
        )?;
        check(
            config.loss_scale_window > 0,
            "loss_scale_window",
            "expected a value greater than zero",
        )?;
        check(
            config.hysteresis > 0,
            "hysteresis",
            "expected a value greater than zero",
        )?;
        check(
            finite(config.min_loss_scale) && config.min_loss_scale > 0.0,
            "min_loss_scale",
            "expected a positive scale",
        )?;
        check(
            fp16.fp16_master_weights_and_grads != Some(true),
            "fp16_master_weights_and_grads",
            "is not supported: neox-train keeps f32 master weights",
        )?;
        Ok(PrecisionConfig {
            precision,
            fp16: config,
        })
    }

    fn training(
        o: &mut Options,
        dp: usize,
        zero_stage: ZeroStage,
    ) -> Result<TrainingConfig, ConfigError> {
        let micro_file = o
            .file_of("train_micro_batch_size_per_gpu")
            .map(Path::to_path_buf);
        let micro = take_checked(o, "train_micro_batch_size_per_gpu", None::<usize>, |v| {
            v.map_or(Ok(()), |v| positive(&v))
        })?;
        let ga = take_checked(o, "gradient_accumulation_steps", None::<usize>, |v| {
            v.map_or(Ok(()), |v| positive(&v))
        })?;
        let batch_file = o.file_of("train_batch_size").map(Path::to_path_buf);
        let global = o.take::<usize>("train_batch_size")?;
        // DeepSpeed derives the missing ones: global = micro x accumulation x dp.
        let (micro_batch_size, gradient_accumulation_steps) = match (micro, ga, global) {
            (Some(m), Some(g), Some(b)) if m * g * dp != b => {
                return Err(bad(
                    batch_file.as_deref(),
                    "train_batch_size",
                    format!(
                        "{b} != train_micro_batch_size_per_gpu {m} x gradient_accumulation_steps {g} \
                         x {dp} data-parallel rank(s)"
                    ),
                ));
            }
            (Some(m), Some(g), _) => (m, g),
            (Some(m), None, Some(b)) if b > 0 && b % (m * dp) == 0 => (m, b / (m * dp)),
            (Some(m), None, Some(b)) => {
                return Err(bad(
                    micro_file.as_deref(),
                    "train_micro_batch_size_per_gpu",
                    format!(
                        "{m} x {dp} data-parallel rank(s) does not divide train_batch_size {b}"
                    ),
                ));
            }
            (Some(m), None, None) => (m, 1),
            (None, g, Some(b)) => {
                let g = g.unwrap_or(1);
                if b == 0 || b % (g * dp) != 0 {
                    return Err(bad(
                        batch_file.as_deref(),
                        "train_batch_size",
                        format!(
                            "{b} is not divisible by gradient_accumulation_steps {g} x {dp} \
                             data-parallel rank(s)"
                        ),
                    ));
                }
                (b / (g * dp), g)
            }
            (None, _, None) => {
                return Err(ConfigError::Missing {
                    key: "train_micro_batch_size_per_gpu".into(),
                    why: "set it or `train_batch_size`".into(),
                });
            }
        };
        let train_iters = match o.take::<u64>("train_iters")? {
            Some(v) => v,
            None => {
                return Err(ConfigError::Missing {
                    key: "train_iters".into(),
                    why: "how long to train has no default".into(),
                });
            }
        };
        let eval_interval = take_checked(o, "eval_interval", 1000u64, positive)?;
        let eval_iters = take_checked(o, "eval_iters", 100u64, any)?;
        let log_interval = take_checked(o, "log_interval", 100u64, positive)?;
        let seed = o.take_or("seed", 1234u64)?;
        let save = o.take::<PathBuf>("save")?;
        let load = o.take::<PathBuf>("load")?;
        let finetune = o.take_or("finetune", false)?;
        let no_load_optim = o.take_or("no_load_optim", false)?;
        let log_dir = o.take::<PathBuf>("log_dir")?;
        let checkpoint_factor = take_checked(o, "checkpoint_factor", None::<u64>, |v| {
            v.map_or(Ok(()), |v| positive(&v))
        })?;
        let scale_file = o.file_of("checkpoint_scale").map(Path::to_path_buf);
        let scale = o.take_or("checkpoint_scale", "linear".to_string())?;
        if scale != "linear" {
            return Err(bad(
                scale_file.as_deref(),
                "checkpoint_scale",
                format!("`{scale}` is not supported here: expected `linear`"),
            ));
        }
        let keep_last_n_checkpoints =
            take_checked(o, "keep_last_n_checkpoints", None::<usize>, |v| {
                v.map_or(Ok(()), |v| positive(&v))
            })?;
        let pipe_parallel_size = take_checked(o, "pipe_parallel_size", 0usize, any)?.max(1);
        let model_parallel_size = take_checked(o, "model_parallel_size", 1usize, positive)?;
        let method_file = o.file_of("pipe_partition_method").map(Path::to_path_buf);
        let method = o.take_or("pipe_partition_method", "type:transformer|mlp".to_string())?;
        let pipe_partition_method = PartitionMethod::parse(&method).map_err(|e| {
            bad(
                method_file.as_deref(),
                "pipe_partition_method",
                e.to_string(),
            )
        })?;
        let checkpoint_activations = o.take_or("checkpoint_activations", false)?;
        let checkpoint_num_layers = take_checked(o, "checkpoint_num_layers", 1usize, positive)?;
        o.derived("train_micro_batch_size_per_gpu", micro_batch_size);
        o.derived("gradient_accumulation_steps", gradient_accumulation_steps);
        o.derived(
            "train_batch_size",
            micro_batch_size * gradient_accumulation_steps * dp,
        );
        Ok(TrainingConfig {
            micro_batch_size,
            gradient_accumulation_steps,
            data_parallel_size: dp,
            zero_stage,
            checkpoint_layers: checkpoint_activations.then_some(checkpoint_num_layers),
            train_iters,
            eval_interval,
            eval_iters,
            log_interval,
            seed,
            save,
            load,
            finetune,
            no_load_optim,
            log_dir,
            checkpoint_factor,
            keep_last_n_checkpoints,
            pipe_parallel_size,
            model_parallel_size,
            pipe_partition_method,
        })
    }

    /// DeepSpeed's `zero_optimization` section: `stage` 0, 1 or 2, and whether
    /// ZeRO-Offload puts the optimizer on the host (see [`offload`]); the
    /// bucket and overlap settings tune DeepSpeed's kernels and change no result.
    fn zero(o: &mut Options) -> Result<(ZeroStage, bool), ConfigError> {
        let file = o.file_of("zero_optimization").map(Path::to_path_buf);
        let Some(section) = o.take::<serde_yaml_ng::Mapping>("zero_optimization")? else {
            return Ok((ZeroStage::Off, false));
        };
        let mut stage = ZeroStage::Off;
        let mut offload = offload::OffloadKeys::default();
        for (key, value) in section {
            let key = key.as_str().map(canonical).unwrap_or_default();
            let at = format!("zero_optimization.{key}");
            if offload.read(&key, &value, file.as_deref())? {
                continue;
            }
            match key.as_str() {
                "stage" => {
                    let n = value.as_u64().ok_or_else(|| {
                        bad(
                            file.as_deref(),
                            &at,
                            format!("expected 0, 1 or 2, found {}", yaml::show(&value)),
                        )
                    })?;
                    stage = ZeroStage::from_stage(n).ok_or_else(|| {
                        bad(
                            file.as_deref(),
                            &at,
                            format!(
                                "stage {n} is not supported: neox-train has ZeRO stages 0, 1 and 2"
                            ),
                        )
                    })?;
                }
                "allgather_partitions"
                | "allgather_bucket_size"
                | "overlap_comm"
                | "reduce_scatter"
                | "reduce_bucket_size"
                | "contiguous_gradients"
                | "round_robin_gradients"
                | "elastic_checkpoint"
                | "load_from_fp32_weights"
                | "sub_group_size"
                | "stage3_max_live_parameters"
                | "stage3_max_reuse_distance"
                | "stage3_prefetch_bucket_size"
                | "stage3_param_persistence_threshold"
                | "stage3_gather_16bit_weights_on_model_save"
                | "ignore_unused_parameters" => {}
                other => {
                    return Err(bad(
                        file.as_deref(),
                        &at,
                        format!("`{other}` is not a DeepSpeed ZeRO setting"),
                    ));
                }
            }
        }
        Ok((stage, offload.resolve(stage, file.as_deref())?))
    }

    /// GPT-NeoX's `AnnealingLR`; for `OneBitAdam` (`onebit`) DeepSpeed's
    /// `WarmupDecayLR`, which GPT-NeoX puts in its place: log warmup over
    /// `int(train_iters x warmup)` steps, linear decay to 0 at
    /// `lr_decay_iters` (else `train_iters`); the style and `min_lr` unused.
    fn schedule(
        o: &mut Options,
        lr: f64,
        train_iters: u64,
        onebit: bool,
    ) -> Result<Schedule, ConfigError> {
        let style_file = o.file_of("lr_decay_style").map(Path::to_path_buf);
        let style = o.take_or("lr_decay_style", DecayStyle::Linear)?;
        if style == DecayStyle::DeepSpeedWarmupDecay {
            return Err(bad(
                style_file.as_deref(),
                "lr_decay_style",
                "expected constant, linear, cosine or exponential",
            ));
        }
        let min_lr = take_checked(o, "min_lr", 0.0f64, |m| {
            non_negative(m)?;
            if *m <= lr {
                Ok(())
            } else {
                Err(format!("{m} is above the learning rate {lr}"))
            }
        })?;
        let warmup = take_checked(o, "warmup", 0.01f64, |w| {
            if (0.0..=1.0).contains(w) {
                Ok(())
            } else {
                Err(format!(
                    "expected a fraction of the decay iterations in [0, 1], found {w}"
                ))
            }
        })?;
        let decay_iters = o.take::<u64>("lr_decay_iters")?;
        let decay_iters_set = decay_iters;
        let fraction_file = o.file_of("lr_decay_fraction").map(Path::to_path_buf);
        let fraction = o.take::<f64>("lr_decay_fraction")?;
        let decay_iters = match (decay_iters, fraction) {
            (Some(d), _) => d,
            (None, Some(f)) if f > 0.0 && f <= 1.0 => (train_iters as f64 * f).floor() as u64,
            (None, Some(f)) => {
                return Err(bad(
                    fraction_file.as_deref(),
                    "lr_decay_fraction",
                    format!("expected a fraction in (0, 1], found {f}"),
                ));
            }
            (None, None) => train_iters,
        };
        if onebit {
            let total = match decay_iters_set {
                Some(d) => d,
                None => train_iters,
            };
            let warmup_steps = (train_iters as f64 * warmup) as u64;
            return Ok(Schedule::deepspeed_warmup_decay(lr, warmup_steps, total));
        }
        Ok(Schedule::new(style, lr, min_lr, warmup, decay_iters))
    }

    fn resume_flags(o: &mut Options) -> Result<ResumeFlags, ConfigError> {
        let file = o.file_of("override_lr_scheduler").map(Path::to_path_buf);
        let flags = ResumeFlags {
            override_lr_scheduler: o.take_or("override_lr_scheduler", false)?,
            use_checkpoint_lr_scheduler: o.take_or("use_checkpoint_lr_scheduler", false)?,
        };
        if flags.override_lr_scheduler && flags.use_checkpoint_lr_scheduler {
            return Err(bad(
                file.as_deref(),
                "override_lr_scheduler",
                "cannot be set together with `use_checkpoint_lr_scheduler` (as in GPT-NeoX)",
            ));
        }
        Ok(flags)
    }

    fn data(o: &mut Options) -> Result<Option<DataSource>, ConfigError> {
        let data_path_file = o.file_of("data_path").map(Path::to_path_buf);
        let data_path = o.take::<PathBuf>("data_path")?;
        let split = o.take_or("split", "969, 30, 1".to_string())?;
        let mut paths = |name: &str| -> Result<Vec<(PathBuf, f64)>, ConfigError> {
            let key = format!("{name}_data_paths");
            let wkey = format!("{name}_data_weights");
            let file = o.file_of(&wkey).map(Path::to_path_buf);
            let p = o.take::<Vec<PathBuf>>(&key)?.unwrap_or_default();
            let w = o.take::<Vec<f64>>(&wkey)?;
            let w = match w {
                Some(w) if w.len() != p.len() => {
                    return Err(bad(
                        file.as_deref(),
                        &wkey,
                        format!("{} weights for {} paths in `{key}`", w.len(), p.len()),
                    ));
                }
                Some(w) => w,
                None => vec![1.0; p.len()],
            };
            for v in &w {
                non_negative(v).map_err(|m| bad(file.as_deref(), &wkey, m))?;
            }
            Ok(p.into_iter().zip(w).collect())
        };
        let train = paths("train")?;
        let valid = paths("valid")?;
        let test = paths("test")?;
        // GPT-NeoX's data_utils.py: separate paths, when given, win over `data_path`.
        Ok(match (data_path, train.is_empty()) {
            (prefix, false) => {
                if let Some(prefix) = prefix {
                    tracing::warn!(
                        data_path = %prefix.display(),
                        file = %data_path_file.unwrap_or_default().display(),
                        "`data_path` is ignored: `train_data_paths` is set, and wins as in GPT-NeoX"
                    );
                }
                Some(DataSource::Paths { train, valid, test })
            }
            (Some(prefix), true) => Some(DataSource::Split { prefix, split }),
            (None, true) => None,
        })
    }

    /// Sorts what nobody took into GPT-NeoX options that change nothing
    /// (reported), ones that would change the run (unimplemented), and unknown
    /// ones (refused).
    fn leftovers(o: Options) -> Result<(Notes, Vec<Unimplemented>), ConfigError> {
        let known: Vec<&str> = NEOX_OPTIONS
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let mut not_acted_on = Vec::new();
        let mut unimplemented = Vec::new();
        let mut unknown = Vec::new();
        for (name, entry) in o.into_remaining() {
            if let Some(why) = keys::why_unimplemented(&name, &entry.value) {
                unimplemented.push(Unimplemented {
                    value: serde_json::to_string(&entry.value)
                        .unwrap_or_else(|_| yaml::show(&entry.value)),
                    key: name,
                    file: entry.file,
                    why,
                });
            } else if known.contains(&name.as_str()) {
                not_acted_on.push((name, entry.file));
            } else {
                let hint = closest(&name, &known)
                    .map(|k| format!(" (did you mean `{k}`?)"))
                    .unwrap_or_default();
                unknown.push(format!("`{name}` in {}{hint}", entry.file.display()));
            }
        }
        if unknown.is_empty() {
            Ok((not_acted_on, unimplemented))
        } else {
            Err(ConfigError::Unknown(unknown))
        }
    }
}

/// GPT-NeoX's `expand_attention_types`: `[[kinds, count | "all"], ...]` (or an
/// already expanded list of names) as one kind per layer.
fn expand_attention_config(
    value: &serde_yaml_ng::Value,
    num_layers: usize,
) -> Result<Vec<AttentionKind>, String> {
    use serde_yaml_ng::Value;
    let items = value
        .as_sequence()
        .ok_or("expected a list like [[[global, local], 6]]")?;
    let names: Vec<String> = if items.iter().all(Value::is_string) {
        items
            .iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect()
    } else {
        let mut names = Vec::new();
        for item in items {
            let pattern: Vec<String> = item
                .get(0)
                .and_then(|p| serde_yaml_ng::from_value(p.clone()).ok())
                .ok_or_else(|| format!("expected [[kinds...], count], found {item:?}"))?;
            match item.get(1) {
                Some(Value::String(all)) if all == "all" => {
                    if pattern.is_empty() || !num_layers.is_multiple_of(pattern.len()) {
                        return Err(format!(
                            "num_layers {num_layers} is not a multiple of the pattern {pattern:?}"
                        ));
                    }
                    // GPT-NeoX returns at the first "all": later items are unused.
                    names = (0..num_layers / pattern.len())
                        .flat_map(|_| pattern.clone())
                        .collect();
                    break;
                }
                Some(count) => {
                    let count = count
                        .as_u64()
                        .ok_or_else(|| format!("count {count:?}: expected a number or \"all\""))?;
                    for _ in 0..count {
                        names.extend(pattern.iter().cloned());
                    }
                }
                None => return Err(format!("expected [[kinds...], count], found {item:?}")),
            }
        }
        names
    };
    if names.len() != num_layers {
        return Err(format!(
            "gives {} layers' attention, num_layers is {num_layers}",
            names.len()
        ));
    }
    names
        .iter()
        .map(|name| {
            AttentionKind::from_neox(name).ok_or_else(|| match name.as_str() {
                "gmlp" | "amlp" | "mamba" | "rwkv" => {
                    format!("`{name}` layers are not implemented")
                }
                _ => format!(
                    "`{name}` is not an attention kind ({})",
                    AttentionKind::NAMES.join(", ")
                ),
            })
        })
        .collect()
}

/// The known name nearest to `name` by edit distance, when it is close.
fn closest<'a>(name: &str, known: &[&'a str]) -> Option<&'a str> {
    let name = canonical(name);
    known
        .iter()
        .map(|k| (edit_distance(&name, k), *k))
        .filter(|(d, _)| *d <= 3)
        .min()
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let sub = prev + usize::from(ca != *cb);
            prev = row[j + 1];
            row[j + 1] = sub.min(prev + 1).min(row[j] + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Any serialisable value as a YAML value (for the defaults table).
    mod erased {
        pub trait Ser {
            fn value(&self) -> serde_yaml_ng::Value;
        }
        impl<T: serde::Serialize> Ser for T {
            fn value(&self) -> serde_yaml_ng::Value {
                serde_yaml_ng::to_value(self).unwrap()
            }
        }
    }
    use serde_yaml_ng::Value;

    fn parse(text: &str) -> Result<NeoxArgs, ConfigError> {
        let mut o = Options::default();
        o.merge_str(text, Path::new("t.yml"))?;
        NeoxArgs::from_options(o)
    }

    const BASE: &str = "num_layers: 2\nhidden_size: 64\nnum_attention_heads: 4\nseq_length: 32\n\
                        train_micro_batch_size_per_gpu: 2\ntrain_iters: 10\n\
                        optimizer: {type: Adam, params: {lr: 0.001}}\n";

    #[test]
    fn transformer_engine_norms_are_the_same_functions() {
        let te = parse(&format!(
            "{BASE}norm: te_rmsnorm\nrms_norm_epsilon: 1.0e-6\n"
        ))
        .unwrap();
        assert_eq!(
            (te.model.norm, te.model.norm_eps),
            (NormKind::RmsNorm, 1e-6)
        );
        let te = parse(&format!("{BASE}norm: te_layernorm\n")).unwrap();
        assert_eq!(
            (te.model.norm, te.model.norm_eps),
            (NormKind::LayerNorm, 1e-5)
        );
    }

    #[test]
    fn minimal_config_has_gpt_neox_defaults() {
        let args = parse(BASE).unwrap();
        assert_eq!(args.model.pos_emb, PosEmb::Learned);
        assert_eq!(args.model.max_position_embeddings, 32);
        assert_eq!(args.training.gradient_accumulation_steps, 1);
        assert_eq!(args.optim.beta2, 0.999);
        assert!(args.not_acted_on.is_empty());
    }

    #[test]
    fn known_but_unused_options_are_reported() {
        let args = parse(&format!(
            "{BASE}amp: {{enabled: false}}\nwall_clock_breakdown: true\n\
             hostfile: /job/hosts\nrope_fusion: true\n"
        ))
        .unwrap();
        let names: Vec<&str> = args.not_acted_on.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["amp", "hostfile", "rope_fusion", "wall_clock_breakdown"]
        );
        assert!(args.unimplemented.is_empty());
        assert!(args.refuse_unimplemented().is_ok());
    }

    #[test]
    fn options_that_would_change_the_run_are_refused_by_name() {
        let args = parse(&format!(
            "{BASE}amp: {{enabled: true}}\nuse_qk_layernorm: true\n\
             z_loss: 0.001\nwall_clock_breakdown: true\n"
        ))
        .unwrap();
        let names: Vec<&str> = args.unimplemented.iter().map(|u| u.key.as_str()).collect();
        assert_eq!(names, ["amp", "use_qk_layernorm", "z_loss"]);
        let err = args.refuse_unimplemented().unwrap_err().to_string();
        for needle in [
            "`amp: {\"enabled\":true}`",
            "t.yml",
            "Apex AMP",
            "--allow-unimplemented",
        ] {
            assert!(err.contains(needle), "{needle}: {err}");
        }
    }

    #[test]
    fn precision_resolves_as_gpt_neox_and_bad_values_are_named() {
        let p = |extra: &str| parse(&format!("{BASE}{extra}"));
        assert_eq!(p("").unwrap().precision, PrecisionConfig::default());
        let fp16 = p(
            "fp16: {enabled: true, loss_scale: 0, initial_scale_power: 12, \
                      loss_scale_window: 500, hysteresis: 3, min_loss_scale: 2}\n",
        )
        .unwrap()
        .precision;
        assert_eq!(fp16.precision, Precision::Fp16);
        assert_eq!(
            fp16.fp16,
            Fp16Config {
                loss_scale: 0.0,
                initial_scale_power: 12,
                loss_scale_window: 500,
                hysteresis: 3,
                min_loss_scale: 2.0,
                consecutive_hysteresis: false,
            }
        );
        for (extra, want) in [
            ("precision: fp16\n", Precision::Fp16),
            ("precision: bfloat16\n", Precision::Bf16),
            ("bf16: {enabled: true}\n", Precision::Bf16),
            ("fp16: {enabled: true, type: bfloat16}\n", Precision::Bf16),
            (
                "fp16: {enabled: false}\nbf16: {enabled: false}\n",
                Precision::Fp32,
            ),
            (
                "precision: bfloat16\nbf16: {enabled: true}\n",
                Precision::Bf16,
            ),
        ] {
            assert_eq!(p(extra).unwrap().precision.precision, want, "{extra}");
        }
        for (extra, needle) in [
            ("precision: fp8\n", "`fp8`"),
            (
                "precision: fp32\nfp16: {enabled: true}\n",
                "make them agree",
            ),
            (
                "fp16: {enabled: true}\nbf16: {enabled: true}\n",
                "choose one",
            ),
            ("fp16: {enabled: true, hysteresis: 0}\n", "fp16.hysteresis"),
            (
                "fp16: {enabled: true, loss_scale_window: 0}\n",
                "fp16.loss_scale_window",
            ),
            ("fp16: {enabled: true, loss_scale: -1}\n", "fp16.loss_scale"),
            (
                "fp16: {enabled: true, min_loss_scale: 0}\n",
                "fp16.min_loss_scale",
            ),
            ("fp16: {enabled: true, loss_scael: 0}\n", "loss_scael"),
        ] {
            let err = p(extra).unwrap_err().to_string();
            assert!(err.contains(needle), "{extra}: {err}");
        }
    }

    #[test]
    fn every_gpt_neox_option_is_read_or_classified() {
        // An option the trainer reads is taken even when null; any other must
        // be in the table of keys.rs, so none is ignored without a decision.
        // (An entry of the table that the trainer has come to read is inert.)
        let base_keys: Vec<&str> = BASE.lines().filter_map(|l| l.split(':').next()).collect();
        for key in NEOX_OPTIONS
            .lines()
            .map(str::trim)
            .filter(|k| !k.is_empty())
        {
            if base_keys.contains(&key) {
                continue;
            }
            let args =
                parse(&format!("{BASE}{key}: null\n")).unwrap_or_else(|e| panic!("{key}: {e}"));
            let left = args.not_acted_on.iter().any(|(n, _)| n == key);
            assert!(
                !left || keys::classify(key).is_some(),
                "`{key}`: neither read by the trainer nor classified in keys.rs"
            );
        }
    }

    /// Every GPT-NeoX default (`neox_args.py`, `deepspeed_args.py`, torch's Adam)
    /// of an option neox reads, against the value read from a minimal config.
    /// GPT-NeoX requires `num_layers`, `hidden_size`, `num_attention_heads`,
    /// `max_position_embeddings` (here: `seq_length`), `lr` and `train_iters`;
    /// `checkpoint_scale` accepts only its default, `linear`.
    #[test]
    fn defaults_are_gpt_neox_defaults() {
        let a = parse(BASE).unwrap();
        let rms = parse(&format!("{BASE}norm: rmsnorm\n")).unwrap();
        let bpe = parse(&format!("{BASE}vocab_file: v.json\nmerge_file: m.txt\n")).unwrap();
        let split = match parse(&format!("{BASE}data_path: d\n")).unwrap().data {
            Some(DataSource::Split { split, .. }) => split,
            other => panic!("{other:?}"),
        };
        let (m, t, s) = (&a.model, &a.training, &a.schedule);
        let v = |x: &dyn erased::Ser| x.value();
        let rows: Vec<(&str, &str, Value)> = vec![
            ("norm", "layernorm", v(&m.norm)),
            ("layernorm_epsilon", "1.0e-5", v(&m.norm_eps)),
            ("rms_norm_epsilon", "1.0e-8", v(&rms.model.norm_eps)),
            ("pos_emb", "learned", v(&m.pos_emb)),
            ("no_weight_tying", "false", v(&!m.tied_embeddings)),
            (
                "make_vocab_size_divisible_by",
                "128",
                v(&a.make_vocab_size_divisible_by),
            ),
            ("activation", "gelu", v(&m.activation)),
            ("init_method_std", "0.02", v(&m.init_method_std)),
            ("rotary_pct", "1.0", v(&m.rotary_pct)),
            ("rotary_emb_base", "10000", v(&m.rotary_emb_base)),
            ("init_method", "normal", v(&m.init_method)),
            (
                "output_layer_init_method",
                "scaled_normal",
                v(&m.output_layer_init_method),
            ),
            ("gpt_j_residual", "false", v(&m.gpt_j_residual)),
            ("use_bias_in_norms", "true", v(&m.use_bias_in_norms)),
            (
                "use_bias_in_attn_linear",
                "true",
                v(&m.use_bias_in_attn_linear),
            ),
            ("use_bias_in_mlp", "true", v(&m.use_bias_in_mlp)),
            // intermediate_size and expansion_factor None, mlp_multiple_of 1: 4 x 64.
            ("intermediate_size", "256", v(&m.intermediate_size)),
            ("hidden_dropout", "0.0", v(&m.hidden_dropout)),
            ("attention_dropout", "0.0", v(&m.attention_dropout)),
            ("weight_decay", "0.1", v(&a.optim.weight_decay)),
            ("gradient_clipping", "1.0", v(&a.optim.gradient_clipping)),
            ("optimizer.type", "adam", v(&"adam")),
            (
                "optimizer.params.betas",
                "[0.9, 0.999]",
                v(&[a.optim.beta1, a.optim.beta2]),
            ),
            ("optimizer.params.eps", "1.0e-8", v(&a.optim.eps)),
            ("lr_decay_style", "linear", v(&s.style)),
            (
                "lr_decay_iters (None: train_iters)",
                "10",
                v(&s.decay_iters),
            ),
            ("min_lr", "0.0", v(&s.min_lr)),
            (
                "warmup",
                "0.01",
                v(&(s.warmup_iters / s.decay_iters as f64)),
            ),
            (
                "override_lr_scheduler",
                "false",
                v(&a.resume_flags.override_lr_scheduler),
            ),
            (
                "use_checkpoint_lr_scheduler",
                "false",
                v(&a.resume_flags.use_checkpoint_lr_scheduler),
            ),
            (
                "gradient_accumulation_steps",
                "1",
                v(&t.gradient_accumulation_steps),
            ),
            ("log_interval", "100", v(&t.log_interval)),
            ("eval_interval", "1000", v(&t.eval_interval)),
            ("eval_iters", "100", v(&t.eval_iters)),
            ("seed", "1234", v(&t.seed)),
            ("save", "null", v(&t.save)),
            ("load", "null", v(&t.load)),
            ("log_dir", "null", v(&t.log_dir)),
            ("checkpoint_factor", "null", v(&t.checkpoint_factor)),
            (
                "keep_last_n_checkpoints",
                "null",
                v(&t.keep_last_n_checkpoints),
            ),
            ("padded_vocab_size", "null", v(&a.padded_vocab_size)),
            ("vocab_file", "null", v(&a.vocab_file)),
            ("merge_file", "null", v(&a.merge_file)),
            ("tokenizer_type", "GPT2BPETokenizer", v(&bpe.tokenizer_type)),
            (
                "data_path, train_data_paths",
                "null",
                v(&a.data.as_ref().map(|_| "set")),
            ),
            ("split", "969, 30, 1", v(&split)),
        ];
        let mut wrong = Vec::new();
        for (key, neox, ours) in rows {
            let neox: Value = serde_yaml_ng::from_str(neox).unwrap();
            let same = match (neox.as_f64(), ours.as_f64()) {
                (Some(x), Some(y)) => (x - y).abs() <= 1e-12 * x.abs(),
                _ => neox == ours,
            };
            if !same {
                wrong.push(format!("{key}: GPT-NeoX {neox:?}, neox {ours:?}"));
            }
        }
        assert!(wrong.is_empty(), "{wrong:#?}");
    }

    #[test]
    fn separate_data_paths_win_over_data_path() {
        let args = parse(&format!(
            "{BASE}data_path: all\ntrain_data_paths: [a, b]\ntrain_data_weights: [1, 3]\n\
             valid_data_paths: [v]\ntest_data_paths: [t]\n"
        ))
        .unwrap();
        match args.data {
            Some(DataSource::Paths { train, valid, test }) => {
                assert_eq!(train, [("a".into(), 1.0), ("b".into(), 3.0)]);
                assert_eq!((valid.len(), test.len()), (1, 1));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn configs_that_would_panic_are_refused() {
        for (extra, key) in [
            // head dim 16: 0.05 gives 0 rotary dims, 0.1 gives 1.
            ("pos_emb: rotary\nrotary_pct: 0.05\n", "rotary_pct"),
            ("pos_emb: rotary\nrotary_pct: 0.1\n", "rotary_pct"),
            ("max_position_embeddings: 16\n", "max_position_embeddings"),
            ("intermediate_size: 257\n", "intermediate_size"),
            (
                "activation: swiglu\nintermediate_size: 512\n",
                "intermediate_size",
            ),
            (
                "intermediate_size: 100\nexpansion_factor: 2\n",
                "intermediate_size",
            ),
            ("min_lr: 0.01\n", "min_lr"),
            (
                "override_lr_scheduler: true\nuse_checkpoint_lr_scheduler: true\n",
                "override",
            ),
        ] {
            let err = parse(&format!("{BASE}{extra}")).unwrap_err().to_string();
            assert!(err.contains(key) && err.contains("t.yml"), "{extra}: {err}");
        }
        // rotary_pct matters only for rotary positions.
        assert!(parse(&format!("{BASE}rotary_pct: 0.05\n")).is_ok());
        let args = parse(&format!("{BASE}activation: swiglu\n")).unwrap();
        assert_eq!(args.model.intermediate_size, 85); // int(256 x 2 / 3) / 2
    }

    #[test]
    fn unknown_options_are_refused_with_a_hint() {
        let err = parse(&format!("{BASE}train-iter: 5\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("train_iter"), "{err}");
        assert!(err.contains("did you mean `train_iters`"), "{err}");
        assert!(err.contains("t.yml"), "{err}");
    }

    #[test]
    fn bad_values_name_key_and_file() {
        for (extra, key) in [
            ("hidden_dropout: 1.5\n", "hidden_dropout"),
            ("pos_emb: spiral\n", "pos_emb"),
            ("lr_decay_style: sawtooth\n", "lr_decay_style"),
            ("norm: [1]\n", "norm"),
            ("norm: scalenorm\n", "norm"),
            ("norm: batchnorm\n", "norm"),
            ("warmup: \"lots\"\n", "warmup"),
        ] {
            let err = parse(&format!("{BASE}{extra}")).unwrap_err().to_string();
            assert!(err.contains(key) && err.contains("t.yml"), "{extra}: {err}");
        }
        let err = parse(&BASE.replace("hidden_size: 64", "hidden_size: 66")).unwrap_err();
        assert!(err.to_string().contains("hidden_size"), "{err}");
        let err = parse(&BASE.replace("lr: 0.001", "lr: 0.001, momentum: 0.9")).unwrap_err();
        assert!(err.to_string().contains("momentum"), "{err}");
    }

    #[test]
    fn batch_sizes_are_derived_as_deepspeed_does() {
        let args = parse(&format!("{BASE}train_batch_size: 8\n")).unwrap();
        assert_eq!(args.training.gradient_accumulation_steps, 4);
        let err = parse(&format!("{BASE}train_batch_size: 7\n")).unwrap_err();
        assert!(
            err.to_string().contains("train_micro_batch_size_per_gpu"),
            "{err}"
        );
    }

    #[test]
    fn provenance_says_where_each_value_came_from() {
        let mut args = parse(&format!("{BASE}train_batch_size: 8\n")).unwrap();
        let row = |args: &NeoxArgs, k: &str| {
            let r = args.resolved(k).unwrap();
            (r.value.clone(), r.source.clone())
        };
        assert_eq!(
            row(&args, "num_layers"),
            (Value::from(2), Source::File("t.yml".into()))
        );
        assert_eq!(row(&args, "seed"), (Value::from(1234), Source::Default));
        assert_eq!(
            row(&args, "gradient_accumulation_steps"),
            (Value::from(4), Source::Derived)
        );
        assert_eq!(
            row(&args, "intermediate_size"),
            (Value::from(256), Source::Derived)
        );
        args.set_vocab_size(50277);
        assert_eq!(
            row(&args, "padded_vocab_size"),
            (Value::from(50304), Source::Derived)
        );
    }

    #[test]
    fn vocab_is_padded() {
        let mut args = parse(BASE).unwrap();
        assert!(args.vocab_size().is_err());
        args.set_vocab_size(50277);
        assert_eq!(args.vocab_size().unwrap(), 50304);
    }

    #[test]
    fn onebit_adam_is_read_as_deepspeed_takes_it_and_bad_values_are_named() {
        let base = BASE.replace("optimizer: {type: Adam, params: {lr: 0.001}}\n", "");
        let onebit = |params: &str, extra: &str| {
            parse(&format!(
                "{base}optimizer: {{type: OneBitAdam, params: {{lr: 0.001{params}}}}}\n{extra}"
            ))
        };
        for kind in ["OneBitAdam", "onebitadam", "ONEBITADAM"] {
            let a = parse(&format!(
                "{base}optimizer: {{type: {kind}, params: {{lr: 0.001}}}}\n"
            ))
            .unwrap();
            // DeepSpeed's defaults: freeze_step 100000, weight decay 0.
            assert_eq!(
                a.optim.onebit,
                Some(OneBitConfig {
                    freeze_step: 100_000,
                    weight_decay: 0.0
                }),
                "{kind}"
            );
        }
        let a = onebit(
            ", betas: [0.9, 0.95], eps: 1.0e-6, weight_decay: 0.01, freeze_step: 23000, \
             cuda_aware: false, comm_backend_name: nccl",
            "",
        )
        .unwrap();
        let o = &a.optim;
        assert_eq!((o.beta1, o.beta2, o.eps), (0.9, 0.95, 1e-6));
        assert_eq!(
            o.onebit,
            Some(OneBitConfig {
                freeze_step: 23000,
                weight_decay: 0.01
            })
        );
        // A top-level weight_decay of 0 makes GPT-NeoX's single group, decay 0.
        let a = onebit(", weight_decay: 0.01", "weight_decay: 0.0\n").unwrap();
        assert_eq!(a.optim.onebit.map(|c| c.weight_decay), Some(0.0));
        // GPT-NeoX's schedule for OneBitAdam: WarmupDecayLR over train_iters.
        let a = onebit(
            "",
            "lr_decay_style: cosine\nmin_lr: 0.0001\nwarmup: 0.25\nlr_decay_iters: 8\n",
        )
        .unwrap();
        assert_eq!(a.schedule, Schedule::deepspeed_warmup_decay(0.001, 2, 8));
        let a = onebit("", "warmup: 0.5\n").unwrap();
        assert_eq!(a.schedule, Schedule::deepspeed_warmup_decay(0.001, 5, 10));

        let refused = [
            (
                onebit("", "zero_optimization: {stage: 1}\n"),
                "zero_optimization.stage",
                "not compatible with ZeRO",
            ),
            (
                onebit("", "model_parallel_size: 2\n"),
                "optimizer.type",
                "model_parallel_size 2",
            ),
            (
                onebit("", "pipe_parallel_size: 2\n"),
                "optimizer.type",
                "pipe_parallel_size 2",
            ),
            (
                onebit(", amsgrad: true", ""),
                "optimizer.params.amsgrad",
                "AMSGrad",
            ),
            (
                onebit(", comm_backend_name: gloo", ""),
                "optimizer.params.comm_backend_name",
                "`gloo`",
            ),
            (
                onebit(", weight_decay: -0.1", ""),
                "optimizer.params.weight_decay",
                "-0.1",
            ),
            (onebit(", freeze_step: -1", ""), "optimizer", "freeze_step"),
            (
                onebit("", "lr_decay_style: deepspeed_warmup_decay\n"),
                "lr_decay_style",
                "expected constant",
            ),
            (
                onebit(", freeze_step: soon", ""),
                "optimizer",
                "freeze_step",
            ),
            (onebit(", frezee_step: 10", ""), "optimizer", "frezee_step"),
            (
                parse(&format!(
                    "{base}optimizer: {{type: Adam, params: {{lr: 0.001, freeze_step: 10}}}}\n"
                )),
                "optimizer.params.freeze_step",
                "OneBitAdam setting",
            ),
            (
                parse(&format!(
                    "{base}optimizer: {{type: TwoBitAdam, params: {{lr: 0.001}}}}\n"
                )),
                "optimizer",
                "OneBitAdam",
            ),
        ];
        for (result, key, says) in refused {
            let err = result.unwrap_err();
            let text = err.to_string();
            match &err {
                ConfigError::BadValue { key: k, .. } => assert_eq!(k, key, "{text}"),
                other => panic!("expected a bad value of {key}, got {other}"),
            }
            assert!(text.contains(says), "{key}: {text}");
        }
    }
}
