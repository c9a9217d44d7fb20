//! `neox-generate`: sample text from a trained model.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Parser;
use neox::model_use::{Loaded, ModelArgs, encode};
use neox_trainer::generate::{self, Rng, Sampling, Settings, Stop};
use serde::Serialize;

/// Generate text from a neox checkpoint or a Hugging Face GPT-NeoX model, as
/// GPT-NeoX's generate.py does: one prompt (--prompt), one prompt per line
/// of a file (--input-file, GPT-NeoX's `sample_input_file`), prompts typed
/// in (--interactive), or unconditional samples started from the
/// end-of-document token (--num-samples).
///
///   neox-generate --hf pythia-160m --prompt "The capital of France is" --maximum-tokens 20
///   neox-generate --checkpoint runs/tiny --config configs/cpu-tiny.yml configs/enron.yml \
///       --prompt "Dear team," --temperature 0.8 --top-p 0.9 --seed 7
///
/// Temperature 0 (the default) is greedy. Generation stops at the
/// end-of-document token (the Hugging Face config's `eos_token_id`, else the
/// tokenizer's EOD), at --maximum-tokens, or when the model's context is
/// full. A KV cache makes each new token cost one position (--no-cache
/// recomputes the whole sequence: same tokens, slower). With --json (and
/// always in --output-file) each sample is one JSON line with GPT-NeoX's
/// `sample_output_file` fields: context, text (the continuation only),
/// length, finished (stopped at EOD), message, duration_seconds; plus
/// `tokens`, the continuation's ids. GPT-NeoX's generation keys in the
/// --config files (text_gen_type, temperature, top_k, top_p, maximum_tokens,
/// sample_input_file, sample_output_file, num_samples, recompute) apply
/// where no flag says otherwise.
#[derive(Debug, Parser)]
#[command(name = "neox-generate", version, verbatim_doc_comment)]
struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// The prompt.
    #[arg(long, value_name = "TEXT", conflicts_with_all = ["input_file", "interactive"])]
    prompt: Option<String>,
    /// Prompts, one per line (empty lines skipped).
    #[arg(long, value_name = "F", conflicts_with = "interactive")]
    input_file: Option<PathBuf>,
    /// Read prompts from the terminal until `stop` or end of input.
    #[arg(long)]
    interactive: bool,
    /// Unconditional samples to draw when no prompt is given.
    #[arg(long, value_name = "N")]
    num_samples: Option<usize>,
    /// Write the samples as JSON lines to this file too.
    #[arg(long, value_name = "F")]
    output_file: Option<PathBuf>,
    /// Print one JSON object per sample instead of the text.
    #[arg(long)]
    json: bool,
    /// New tokens at most (default 64, GPT-NeoX's).
    #[arg(long, value_name = "N")]
    maximum_tokens: Option<usize>,
    /// 0 is greedy (the default).
    #[arg(long, value_name = "T")]
    temperature: Option<f64>,
    /// Sample among the K most likely tokens (0: all).
    #[arg(long, value_name = "K")]
    top_k: Option<usize>,
    /// Sample among the most likely tokens holding probability P (0: all).
    #[arg(long, value_name = "P")]
    top_p: Option<f64>,
    /// The sampling seed (default 1234).
    #[arg(long, value_name = "S")]
    seed: Option<u64>,
    /// Recompute the whole sequence for every token instead of keeping a KV cache.
    #[arg(long)]
    no_cache: bool,
}

/// One sample, with GPT-NeoX's `sample_output_file` fields.
#[derive(Debug, Serialize)]
struct Sample {
    context: String,
    text: Option<String>,
    length: usize,
    finished: bool,
    message: Option<String>,
    duration_seconds: f64,
    tokens: Vec<u32>,
}

enum Mode {
    Prompts(Vec<String>),
    Interactive,
    Unconditional(usize),
}

fn main() -> ExitCode {
    neox::logging::init();
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<()> {
    let mut loaded = args.model.load()?;
    let o = &mut loaded.options;
    let key = |o: &mut neox_trainer::config::yaml::Options,
               k: &str|
     -> Result<Option<serde_yaml_ng::Value>> {
        o.take::<serde_yaml_ng::Value>(k)
            .context("reading the configuration")
    };
    let number = |v: Option<serde_yaml_ng::Value>, k: &str| -> Result<Option<f64>> {
        match v {
            None | Some(serde_yaml_ng::Value::Null) => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .with_context(|| format!("option `{k}`: expected a number, found {v:?}")),
        }
    };
    let text = |v: Option<serde_yaml_ng::Value>| v.and_then(|v| v.as_str().map(str::to_string));
    let yaml_temperature = number(key(o, "temperature")?, "temperature")?;
    let yaml_top_k = number(key(o, "top_k")?, "top_k")?;
    let yaml_top_p = number(key(o, "top_p")?, "top_p")?;
    let yaml_max = number(key(o, "maximum_tokens")?, "maximum_tokens")?;
    let yaml_samples = number(key(o, "num_samples")?, "num_samples")?;
    let yaml_seed = number(key(o, "seed")?, "seed")?;
    let yaml_recompute = key(o, "recompute")?.and_then(|v| v.as_bool());
    let yaml_type = text(key(o, "text_gen_type")?).or(text(key(o, "text_generation_type")?));
    let yaml_input = text(key(o, "sample_input_file")?);
    let yaml_output = text(key(o, "sample_output_file")?);

    let settings = Settings {
        sampling: Sampling {
            temperature: args.temperature.or(yaml_temperature).unwrap_or(0.0),
            top_k: args.top_k.or(yaml_top_k.map(|k| k as usize)).unwrap_or(0),
            top_p: args.top_p.or(yaml_top_p).unwrap_or(0.0),
        },
        maximum_tokens: args
            .maximum_tokens
            .or(yaml_max.map(|m| m as usize))
            .unwrap_or(64),
        eod: loaded.eod,
        use_cache: !(args.no_cache || yaml_recompute == Some(true)),
    };
    settings.sampling.check().map_err(anyhow::Error::msg)?;
    let seed = args.seed.or(yaml_seed.map(|s| s as u64)).unwrap_or(1234);
    let input_file = args.input_file.clone().or_else(|| {
        matches!(yaml_type.as_deref(), Some("input-file")).then(|| yaml_input.map(PathBuf::from))?
    });
    let mode = if args.interactive
        || (args.prompt.is_none()
            && input_file.is_none()
            && yaml_type.as_deref() == Some("interactive"))
    {
        Mode::Interactive
    } else if let Some(prompt) = &args.prompt {
        Mode::Prompts(vec![prompt.clone()])
    } else if let Some(file) = &input_file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("reading prompts from {}", file.display()))?;
        let prompts: Vec<String> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect();
        if prompts.is_empty() {
            bail!("{}: no prompts (one per line expected)", file.display());
        }
        Mode::Prompts(prompts)
    } else {
        Mode::Unconditional(
            args.num_samples
                .or(yaml_samples.map(|n| n as usize))
                .unwrap_or(1),
        )
    };
    let output_file = args.output_file.clone().or(yaml_output.map(PathBuf::from));
    let mut out_file = match &output_file {
        Some(path) => Some(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => None,
    };
    tracing::info!(model = %loaded.source, temperature = settings.sampling.temperature, top_k = settings.sampling.top_k, top_p = settings.sampling.top_p, maximum_tokens = settings.maximum_tokens, eod = ?settings.eod, kv_cache = settings.use_cache, "generating");
    let mut rng = Rng::new(seed);
    let mut emit = |sample: Sample| -> Result<()> {
        if args.json {
            println!("{}", serde_json::to_string(&sample)?);
        } else {
            match &sample.text {
                Some(text) => println!("{text}"),
                None => println!("{:?}", sample.tokens),
            }
            if let Some(message) = &sample.message {
                eprintln!("note: {message}");
            }
        }
        if let Some(f) = out_file.as_mut() {
            writeln!(f, "{}", serde_json::to_string(&sample)?)?;
        }
        Ok(())
    };
    match mode {
        Mode::Prompts(prompts) => {
            for prompt in prompts {
                emit(sample(&loaded, &prompt, &settings, &mut rng)?)?;
            }
        }
        Mode::Unconditional(n) => {
            for _ in 0..n {
                emit(sample(&loaded, "", &settings, &mut rng)?)?;
            }
        }
        Mode::Interactive => {
            let stdin = std::io::stdin();
            let mut lines = stdin.lock().lines();
            loop {
                eprint!("Context prompt (stop to exit) >>> ");
                std::io::stderr().flush().ok();
                let Some(line) = lines.next() else { break };
                let line = line.context("reading the prompt")?;
                if line.trim() == "stop" {
                    break;
                }
                if line.trim().is_empty() {
                    eprintln!("Prompt should not be empty!");
                    continue;
                }
                match sample(&loaded, &line, &settings, &mut rng) {
                    Ok(s) => emit(s)?,
                    Err(e) => eprintln!("error: {e:#}"),
                }
            }
        }
    }
    if let Some(mut f) = out_file {
        f.flush()?;
    }
    Ok(())
}

/// One sample after `context` (an empty context starts at the EOD token).
fn sample(loaded: &Loaded, context: &str, settings: &Settings, rng: &mut Rng) -> Result<Sample> {
    let start = Instant::now();
    let tokenizer = loaded.tokenizer.as_ref();
    let prompt = if context.is_empty() {
        match loaded.eod {
            Some(eod) => vec![eod],
            None => bail!(
                "unconditional samples start at the end-of-document token, and this model has none"
            ),
        }
    } else {
        encode(tokenizer, context)?
    };
    let generated = generate::generate(&loaded.model, &prompt, settings, rng, |_| {})?;
    let mut message = match generated.stop {
        Stop::Eod => None,
        Stop::MaximumTokens => None,
        Stop::ContextFull => Some(format!(
            "stopped: the model's context of {} tokens is full",
            loaded.model.config.seq_length
        )),
    };
    let text = match tokenizer {
        None => {
            message.get_or_insert_with(|| "no tokenizer: the ids only".into());
            None
        }
        Some(tok) => match tok.decode(&generated.tokens) {
            Ok(text) => Some(text),
            Err(_) => {
                let known: Vec<u32> = generated
                    .tokens
                    .iter()
                    .copied()
                    .filter(|&id| (id as usize) < tok.vocab_size())
                    .collect();
                message = Some(format!(
                    "generated {} id(s) outside the tokenizer's vocabulary of {}: left out of the text",
                    generated.tokens.len() - known.len(),
                    tok.vocab_size()
                ));
                tok.decode(&known).ok()
            }
        },
    };
    if generated.tokens.is_empty() {
        message.get_or_insert_with(|| "EMPTY TEXT GENERATED".into());
    }
    Ok(Sample {
        context: context.to_string(),
        text,
        length: generated.tokens.len(),
        finished: generated.stop == Stop::Eod,
        message,
        duration_seconds: start.elapsed().as_secs_f64(),
        tokens: generated.tokens,
    })
}
