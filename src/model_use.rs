//! What `neox-generate`, `neox-eval` and `neox-convert` share: a trained
//! model loaded for use (from a Hugging Face folder or a neox checkpoint)
//! with its tokenizer, and GPT-NeoX's YAML keys for generation.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use neox_tokenize::{Tokenizer, TokenizerKind, TokenizerSpec};
use neox_trainer::GptNeox;
use neox_trainer::config::yaml::Options;
use neox_trainer::hf;

/// The CPU inference backend.
pub type Cpu = neox_trainer::device::CpuInference;

/// Where the model comes from.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// A Hugging Face GPT-NeoX folder (config.json, model.safetensors or its
    /// shards, and tokenizer.json), e.g. a Pythia model or `neox-convert
    /// to-hf` output.
    #[arg(
        long,
        value_name = "DIR",
        conflicts_with = "checkpoint",
        required_unless_present = "checkpoint"
    )]
    pub hf: Option<PathBuf>,
    /// A neox checkpoint folder (the `save` of a run): the checkpoint its
    /// `latest` names, or --step.
    #[arg(long, value_name = "SAVE_DIR")]
    pub checkpoint: Option<PathBuf>,
    /// The checkpoint's iteration (`global_stepN`).
    #[arg(long, value_name = "N", requires = "checkpoint")]
    pub step: Option<u64>,
    #[command(flatten)]
    pub tokenizer: TokenizerArgs,
}

/// The tokenizer: from the flags, else from the configs, else the
/// Hugging Face folder's own files.
#[derive(Debug, Clone, Default, Args)]
pub struct TokenizerArgs {
    /// GPT-NeoX YAML config files, merged in order: the tokenizer
    /// (`tokenizer_type`, `vocab_file`, `merge_file`) and, for
    /// neox-generate, the generation keys (`temperature`, `top_k`, `top_p`,
    /// `maximum_tokens`, `text_gen_type`, `sample_input_file`,
    /// `sample_output_file`, `recompute`), which flags override.
    #[arg(long, value_name = "X.yml", num_args = 1..)]
    pub config: Vec<PathBuf>,
    /// The tokenizer kind (GPT-NeoX's names, e.g. HFTokenizer,
    /// GPT2BPETokenizer, CharLevelTokenizer), over the configs' one.
    #[arg(long, value_name = "KIND")]
    pub tokenizer_type: Option<String>,
    /// The tokenizer's vocabulary file (`tokenizer.json`, GPT-2's `vocab.json`, ...).
    #[arg(long, value_name = "FILE")]
    pub vocab_file: Option<PathBuf>,
    /// GPT-2's `merges.txt` (GPT2BPETokenizer).
    #[arg(long, value_name = "FILE")]
    pub merge_file: Option<PathBuf>,
}

/// A model ready for use.
pub struct Loaded {
    pub model: GptNeox<Cpu>,
    pub tokenizer: Option<Tokenizer>,
    /// The token generation stops at: the Hugging Face config's
    /// `eos_token_id`, else the tokenizer's EOD.
    pub eod: Option<u32>,
    /// Where it came from, in words.
    pub source: String,
    /// The merged configs (empty without --config).
    pub options: Options,
}

impl TokenizerArgs {
    /// The merged configs.
    pub fn options(&self) -> Result<Options> {
        if self.config.is_empty() {
            return Ok(Options::default());
        }
        Options::read(&self.config).context("reading the configuration")
    }

    /// The tokenizer the flags or configs name, else the one in `hf_dir`.
    pub fn load(&self, options: &mut Options, hf_dir: Option<&Path>) -> Result<Option<Tokenizer>> {
        let from_config = |o: &mut Options, key: &str| -> Result<Option<String>> {
            o.take::<String>(key).context("reading the configuration")
        };
        let vocab_file = match &self.vocab_file {
            Some(v) => Some(v.clone()),
            None => from_config(options, "vocab_file")?.map(PathBuf::from),
        };
        let merge_file = match &self.merge_file {
            Some(m) => Some(m.clone()),
            None => from_config(options, "merge_file")?.map(PathBuf::from),
        };
        let kind = match &self.tokenizer_type {
            Some(k) => Some(k.clone()),
            None => from_config(options, "tokenizer_type")?,
        };
        // GPT-NeoX's default kind applies when its files are given.
        let kind = kind.or_else(|| vocab_file.as_ref().map(|_| "GPT2BPETokenizer".to_string()));
        let spec = match (kind, hf_dir) {
            (Some(kind), _) => {
                let kind: TokenizerKind = kind.parse()?;
                TokenizerSpec {
                    kind,
                    vocab_file,
                    merge_file,
                }
            }
            (None, Some(dir)) if dir.join("tokenizer.json").is_file() => TokenizerSpec {
                kind: TokenizerKind::HfTokenizer,
                vocab_file: Some(dir.join("tokenizer.json")),
                merge_file: None,
            },
            (None, Some(dir))
                if dir.join("vocab.json").is_file() && dir.join("merges.txt").is_file() =>
            {
                TokenizerSpec {
                    kind: TokenizerKind::Gpt2Bpe,
                    vocab_file: Some(dir.join("vocab.json")),
                    merge_file: Some(dir.join("merges.txt")),
                }
            }
            (None, _) => return Ok(None),
        };
        Ok(Some(
            Tokenizer::load(&spec).context("loading the tokenizer")?,
        ))
    }
}

impl ModelArgs {
    /// Loads the model and its tokenizer on the CPU.
    pub fn load(&self) -> Result<Loaded> {
        let device = Default::default();
        let mut options = self.tokenizer.options()?;
        let (model, eos, source) = match (&self.hf, &self.checkpoint) {
            (Some(dir), _) => {
                let info = hf::read_info(dir)?;
                let model = hf::load::<Cpu>(dir, &device)?;
                (
                    model,
                    info.eos_token_id,
                    format!("Hugging Face model {}", dir.display()),
                )
            }
            (None, Some(save)) => {
                // A split run's shares are merged.
                let (model, state, dir) =
                    neox_trainer::dist::reshard::load_model::<Cpu>(save, self.step, &device)?;
                let source = format!(
                    "neox checkpoint {} (iteration {})",
                    dir.display(),
                    state.iteration
                );
                (model, None, source)
            }
            (None, None) => bail!("give --hf DIR or --checkpoint SAVE_DIR"),
        };
        let tokenizer = self.tokenizer.load(&mut options, self.hf.as_deref())?;
        let eod = eos.or_else(|| tokenizer.as_ref().and_then(|t| t.eod()));
        Ok(Loaded {
            model,
            tokenizer,
            eod,
            source,
            options,
        })
    }
}

/// Text to ids with `tokenizer`, or why there is none.
pub fn encode(tokenizer: Option<&Tokenizer>, text: &str) -> Result<Vec<u32>> {
    let Some(tokenizer) = tokenizer else {
        bail!(
            "no tokenizer: give --tokenizer-type (and --vocab-file), a --config naming one, \
             or a Hugging Face folder with tokenizer.json"
        );
    };
    let mut ids = Vec::new();
    tokenizer.encode(text, &mut ids)?;
    Ok(ids)
}

/// Writes `tokenizer` as Hugging Face tokenizer files in `dir`
/// (`tokenizer.json`, `tokenizer_config.json`, `special_tokens_map.json`);
/// `None` when its kind has no `tokenizer.json` form.
pub fn write_hf_tokenizer(tokenizer: &Tokenizer, dir: &Path) -> Result<Option<Vec<PathBuf>>> {
    let Some(json) = tokenizer.hf_json() else {
        return Ok(None);
    };
    let eod = tokenizer.eod().and_then(|id| tokenizer.decode(&[id]).ok());
    let special = serde_json::json!({
        "bos_token": eod,
        "eos_token": eod,
        "unk_token": eod,
    });
    let mut config = special.clone();
    config["tokenizer_class"] = "PreTrainedTokenizerFast".into();
    config["clean_up_tokenization_spaces"] = false.into();
    let files = [
        ("tokenizer.json", json),
        (
            "tokenizer_config.json",
            serde_json::to_string_pretty(&config)?,
        ),
        (
            "special_tokens_map.json",
            serde_json::to_string_pretty(&special)?,
        ),
    ];
    let mut written = Vec::new();
    for (name, text) in files {
        let path = dir.join(name);
        neox_fsio::write_atomic(&path, text.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    Ok(Some(written))
}
