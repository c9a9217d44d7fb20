//! Using a trained model from the command line, end to end through the
//! binaries: `neox-convert to-hf | from-hf`, `neox-generate`, `neox-eval`.
//! The references are transformers' outputs on the shared tiny models,
//! committed in `tests/fixtures/use/hf_use.json` by
//! `scripts/fixtures/hf_use.py` (no Python here).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use burn::backend::Flex;
use burn::tensor::{Int, Tensor, TensorData};
use neox_trainer::{checkpoint, hf};
use serde_json::Value;

mod common;
use common::{char_data, char_shards, cpu_tiny, shared};

const TRAIN: &str = env!("CARGO_BIN_EXE_neox-train");
const CONVERT: &str = env!("CARGO_BIN_EXE_neox-convert");
const GENERATE: &str = env!("CARGO_BIN_EXE_neox-generate");
const EVAL: &str = env!("CARGO_BIN_EXE_neox-eval");

const MODELS: [&str; 2] = ["parallel-rotary25", "sequential-rotary100"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn hf_model(name: &str) -> PathBuf {
    shared().join("fixtures/hf-gptneox-tiny").join(name)
}

fn reference() -> Value {
    let path = root().join("tests/fixtures/use/hf_use.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn run(program: &str, args: &[&str]) -> Output {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn fails(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(!out.status.success(), "{program} {args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json_lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn ids(value: &Value) -> Vec<u32> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The tensors of a Hugging Face folder: name -> (dtype, shape, bytes).
fn tensors(dir: &Path) -> Vec<(String, String, Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            (
                name,
                format!("{:?}", view.dtype()),
                view.shape().to_vec(),
                view.data().to_vec(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn greedy_generation_equals_transformers_token_for_token() {
    let reference = reference();
    let prompt = reference["prompt"].as_str().unwrap();
    for name in MODELS {
        let expected = &reference["greedy"][name];
        let dir = hf_model(name);
        let mut args = vec![
            "--hf",
            s(&dir),
            "--tokenizer-type",
            "CharLevelTokenizer",
            "--prompt",
            prompt,
            "--maximum-tokens",
            "24",
            "--json",
        ];
        let cached = json_lines(&run(GENERATE, &args));
        args.push("--no-cache");
        let recomputed = json_lines(&run(GENERATE, &args));
        assert_eq!(cached.len(), 1);
        let sample = &cached[0];
        let mut tokens = ids(&sample["tokens"]);
        // transformers keeps the end-of-sequence token it stops at.
        if sample["finished"] == true {
            tokens.push(expected["eos_token_id"].as_u64().unwrap() as u32);
        }
        assert_eq!(tokens, ids(&expected["generated"]), "{name}");
        assert_eq!(sample["tokens"], recomputed[0]["tokens"], "{name}");
        assert_eq!(sample["context"], prompt);
        assert_eq!(sample["length"], sample["tokens"].as_array().unwrap().len());
        for field in ["text", "finished", "message", "duration_seconds"] {
            assert!(sample.get(field).is_some(), "{field} missing: {sample}");
        }
    }
}

#[test]
fn eval_perplexity_and_lambada_equal_transformers() {
    let reference = reference();
    let text = reference["text"].as_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("text_text_document");
    let mut writer =
        neox_indexed::IndexedWriter::create(&prefix, neox_indexed::DType::U16).unwrap();
    let mut doc: Vec<u32> = text.bytes().map(u32::from).collect();
    doc.push(0);
    writer.add_document(&doc).unwrap();
    writer.finish().unwrap();
    let lambada = root().join("tests/fixtures/use/lambada.jsonl");
    for name in MODELS {
        let model = hf_model(name);
        let out = run(
            EVAL,
            &[
                "--hf",
                s(&model),
                "--data-path",
                s(&prefix),
                "--seq-length",
                "32",
                "--json",
            ],
        );
        let got: Value = serde_json::from_slice(&out.stdout).unwrap();
        let want = &reference["perplexity"][name];
        assert_eq!(got["tokens"], want["tokens"], "{name}");
        let (loss, expected) = (
            got["loss"].as_f64().unwrap(),
            want["loss"].as_f64().unwrap(),
        );
        assert!(
            (loss - expected).abs() < 1e-4,
            "{name}: loss {loss} vs {expected}"
        );
        let (ppl, expected) = (
            got["perplexity"].as_f64().unwrap(),
            want["perplexity"].as_f64().unwrap(),
        );
        assert!(
            ((ppl - expected) / expected).abs() < 1e-4,
            "{name}: {ppl} vs {expected}"
        );

        let out = run(
            EVAL,
            &[
                "--hf",
                s(&model),
                "--tokenizer-type",
                "CharLevelTokenizer",
                "--task",
                "lambada",
                "--task-file",
                s(&lambada),
                "--json",
            ],
        );
        let got: Value = serde_json::from_slice(&out.stdout).unwrap();
        let want = &reference["lambada"][name];
        assert_eq!(got["documents"], want["documents"]);
        assert_eq!(
            got["accuracy"].as_f64(),
            want["accuracy"].as_f64(),
            "{name}"
        );
        let (ppl, expected) = (
            got["perplexity"].as_f64().unwrap(),
            want["perplexity"].as_f64().unwrap(),
        );
        assert!(
            ((ppl - expected) / expected).abs() < 1e-4,
            "{name}: {ppl} vs {expected}"
        );
    }
    // Bad task files name the file and line.
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"text\": \"fine words here\"}\n{\"txt\": 1}\n").unwrap();
    let model = hf_model(MODELS[0]);
    let err = fails(
        EVAL,
        &[
            "--hf",
            s(&model),
            "--tokenizer-type",
            "CharLevelTokenizer",
            "--task",
            "lambada",
            "--task-file",
            s(&bad),
        ],
    );
    assert!(
        err.contains("bad.jsonl line 2") && err.contains("text"),
        "{err}"
    );
    let err = fails(
        EVAL,
        &[
            "--hf",
            s(&model),
            "--tokenizer-type",
            "CharLevelTokenizer",
            "--task",
            "hellaswag",
            "--task-file",
            s(&bad),
        ],
    );
    assert!(err.contains("hellaswag"), "{err}");
}

#[test]
fn from_hf_then_to_hf_gives_the_same_tensors_and_trains_with_finetune() {
    let dir = tempfile::tempdir().unwrap();
    let save = dir.path().join("neox");
    let back = dir.path().join("back");
    let src = hf_model("parallel-rotary25");
    run(CONVERT, &["from-hf", s(&src), "--out", s(&save)]);
    assert_eq!(
        std::fs::read_to_string(save.join("latest")).unwrap().trim(),
        "global_step0"
    );
    run(
        CONVERT,
        &["to-hf", "--checkpoint", s(&save), "--out", s(&back)],
    );
    assert_eq!(tensors(&src), tensors(&back));
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(back.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["rotary_pct"], 0.25);
    assert_eq!(config["use_parallel_residual"], true);

    // neox-train continues from it with finetune, and refuses it without.
    let model_yml = dir.path().join("model.yml");
    let run_dir = dir.path().join("run");
    std::fs::write(
        &model_yml,
        format!(
            "num_layers: 2\nhidden_size: 64\nnum_attention_heads: 4\nseq_length: 32\n\
             max_position_embeddings: 128\npos_emb: rotary\nrotary_pct: 0.25\ngpt_j_residual: true\n\
             no_weight_tying: true\nintermediate_size: 256\npadded_vocab_size: 1024\n\
             hidden_dropout: 0.0\nattention_dropout: 0.0\n\
             optimizer: {{type: Adam, params: {{lr: 0.001}}}}\ntrain_micro_batch_size_per_gpu: 2\n\
             train_iters: 2\neval_iters: 0\nlog_interval: 1\ncheckpoint_factor: 2\n\
             data_path: {}\nsplit: \"949,50,1\"\ntokenizer_type: CharLevelTokenizer\n\
             load: {}\nsave: {}\n",
            char_shards().display(),
            save.display(),
            run_dir.display()
        ),
    )
    .unwrap();
    let err = fails(TRAIN, &["--config", s(&model_yml)]);
    assert!(
        err.contains("finetune") && err.contains("no_load_optim"),
        "{err}"
    );
    let finetune = dir.path().join("finetune.yml");
    std::fs::write(&finetune, "finetune: true\n").unwrap();
    run(TRAIN, &["--config", s(&model_yml), s(&finetune)]);
    assert!(run_dir.join("global_step2/state.json").is_file());
    // The same weights in another shape are refused, naming the field.
    std::fs::write(&finetune, "finetune: true\nhidden_size: 32\n").unwrap();
    let err = fails(TRAIN, &["--config", s(&model_yml), s(&finetune)]);
    assert!(err.contains("hidden_size 64 (checkpoint) vs 32"), "{err}");
}

#[test]
fn a_trained_checkpoint_exports_to_the_same_logits() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.yml");
    let save = dir.path().join("run");
    std::fs::write(
        &data,
        format!(
            "{}save: {}\ntrain_iters: 20\nlr_decay_iters: 20\ncheckpoint_factor: 10\neval_iters: 0\n",
            char_data(),
            save.display()
        ),
    )
    .unwrap();
    let cpu_tiny = cpu_tiny();
    run(TRAIN, &["--config", s(&cpu_tiny), s(&data)]);
    let out = dir.path().join("hf");
    let out_bf16 = dir.path().join("hf-bf16");
    let stdout = run(
        CONVERT,
        &[
            "to-hf",
            "--checkpoint",
            s(&save),
            "--step",
            "10",
            "--out",
            s(&out),
            "--config",
            s(&cpu_tiny),
            s(&data),
        ],
    );
    assert!(String::from_utf8_lossy(&stdout.stdout).contains("iteration 10"));
    run(
        CONVERT,
        &[
            "to-hf",
            "--checkpoint",
            s(&save),
            "--out",
            s(&out_bf16),
            "--dtype",
            "bf16",
            "--max-shard-size",
            "300KB",
        ],
    );
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    // CharLevelTokenizer's EOD is 0.
    assert_eq!(
        (
            config["bos_token_id"].as_u64(),
            config["eos_token_id"].as_u64()
        ),
        (Some(0), Some(0))
    );
    assert!(out_bf16.join("model.safetensors.index.json").is_file());

    let device = Default::default();
    let tokens = Tensor::<Flex, 2, Int>::from_data(
        TensorData::new(
            (0..64).map(|i| (i * 37 % 256) as i64).collect::<Vec<_>>(),
            [2, 32],
        ),
        &device,
    );
    let logits = |m: &neox_trainer::GptNeox<Flex>| {
        m.forward(tokens.clone())
            .into_data()
            .to_vec::<f32>()
            .unwrap()
    };
    let step10 = checkpoint::folder(&save, Some(10)).unwrap();
    let (neox, _) = checkpoint::load_model::<Flex>(&step10, &device).unwrap();
    let exported = hf::load::<Flex>(&out, &device).unwrap();
    assert_eq!(logits(&neox), logits(&exported));
    let (latest, state) =
        checkpoint::load_model::<Flex>(&checkpoint::folder(&save, None).unwrap(), &device).unwrap();
    assert_eq!(state.iteration, 20);
    let half = hf::load::<Flex>(&out_bf16, &device).unwrap();
    let diff = logits(&latest)
        .iter()
        .zip(logits(&half))
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(diff < 0.1, "bf16 export differs by {diff}");

    // The checkpoint and its export evaluate alike; generation from the
    // checkpoint with the run's config decodes text.
    let eval = |source: &[&str]| -> f64 {
        let mut args = source.to_vec();
        args.extend([
            "--split",
            "test",
            "--config",
            s(&cpu_tiny),
            s(&data),
            "--json",
        ]);
        let out = run(EVAL, &args);
        serde_json::from_slice::<Value>(&out.stdout).unwrap()["loss"]
            .as_f64()
            .unwrap()
    };
    let a = eval(&["--checkpoint", s(&save), "--step", "10"]);
    let b = eval(&["--hf", s(&out)]);
    assert!((a - b).abs() < 1e-6, "{a} vs {b}");
    let generated = run(
        GENERATE,
        &[
            "--checkpoint",
            s(&save),
            "--config",
            s(&cpu_tiny),
            s(&data),
            "--prompt",
            "Dear ",
            "--maximum-tokens",
            "8",
            "--json",
        ],
    );
    let sample = &json_lines(&generated)[0];
    assert!(sample["text"].is_string(), "{sample}");

    // A missing step and a folder that is not a checkpoint are named.
    let err = fails(
        CONVERT,
        &[
            "to-hf",
            "--checkpoint",
            s(&save),
            "--step",
            "7",
            "--out",
            s(&out),
        ],
    );
    assert!(err.contains("global_step7"), "{err}");
    let err = fails(
        CONVERT,
        &["to-hf", "--checkpoint", s(dir.path()), "--out", s(&out)],
    );
    assert!(err.contains("latest"), "{err}");
}

#[test]
fn sampling_is_seeded_and_reads_prompts_files_and_yaml_keys() {
    let dir = tempfile::tempdir().unwrap();
    let model = hf_model("sequential-rotary100");
    let base = ["--hf", s(&model), "--tokenizer-type", "CharLevelTokenizer"];
    let sample = |extra: &[&str]| -> Vec<Value> {
        let mut args = base.to_vec();
        args.extend(extra);
        json_lines(&run(GENERATE, &args))
    };
    let warm = [
        "--prompt",
        "Once",
        "--temperature",
        "1.0",
        "--top-k",
        "50",
        "--top-p",
        "0.9",
        "--maximum-tokens",
        "12",
        "--json",
    ];
    let a = sample(&[&warm[..], &["--seed", "5"]].concat());
    let b = sample(&[&warm[..], &["--seed", "5"]].concat());
    let c = sample(&[&warm[..], &["--seed", "6"]].concat());
    assert_eq!(a[0]["tokens"], b[0]["tokens"]);
    assert_ne!(a[0]["tokens"], c[0]["tokens"]);

    // Prompts from a file, samples to a file; the keys from GPT-NeoX YAML.
    let prompts = dir.path().join("prompts.txt");
    std::fs::write(&prompts, "first prompt\n\nsecond prompt\n").unwrap();
    let output = dir.path().join("out.jsonl");
    let yml = dir.path().join("gen.yml");
    std::fs::write(
        &yml,
        format!(
            "text_gen_type: input-file\nsample_input_file: {}\nsample_output_file: {}\n\
             maximum_tokens: 5\ntemperature: 0.0\n",
            prompts.display(),
            output.display()
        ),
    )
    .unwrap();
    let printed = run(GENERATE, &[&base[..], &["--config", s(&yml)]].concat());
    let written: Vec<Value> = std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(written.len(), 2);
    assert_eq!(written[1]["context"], "second prompt");
    assert!(written.iter().all(|w| w["length"].as_u64() <= Some(5)));
    assert_eq!(String::from_utf8_lossy(&printed.stdout).lines().count(), 2);
    // A flag wins over the YAML key.
    let one = sample(&[
        "--config",
        s(&yml),
        "--prompt",
        "x",
        "--maximum-tokens",
        "2",
        "--json",
    ]);
    assert_eq!(one.len(), 1);
    assert!(one[0]["length"].as_u64() <= Some(2));

    // Bad input is named.
    let long = "y".repeat(200);
    let err = fails(GENERATE, &[&base[..], &["--prompt", &long]].concat());
    assert!(err.contains("200 tokens") && err.contains("128"), "{err}");
    let err = fails(GENERATE, &["--hf", s(dir.path()), "--prompt", "x"]);
    assert!(err.contains("config.json"), "{err}");
    let err = fails(
        GENERATE,
        &[&base[..], &["--prompt", "x", "--top-p", "2"]].concat(),
    );
    assert!(err.contains("top_p"), "{err}");
    let err = fails(GENERATE, &["--hf", s(&model), "--prompt", "x"]);
    assert!(err.contains("tokenizer"), "{err}");
}

#[test]
fn samples_show_decodes_the_ids_with_a_tokenizer() {
    let cache = tempfile::tempdir().unwrap();
    let prefix = char_shards();
    let out = run(
        env!("CARGO_BIN_EXE_neox-data"),
        &[
            "samples",
            "--data-path",
            s(prefix),
            "--seq-length",
            "16",
            "--num-samples",
            "4",
            "--show",
            "2",
            "--tokenizer-type",
            "CharLevelTokenizer",
            "--cache-dir",
            s(cache.path()),
            "--json",
        ],
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let shown = report["shown"].as_array().unwrap();
    assert_eq!(shown.len(), 2);
    for sample in shown {
        let bytes: Vec<u8> = sample["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_u64().unwrap() as u8)
            .collect();
        assert_eq!(sample["text"], String::from_utf8_lossy(&bytes).as_ref());
    }
    // Without a tokenizer, ids only.
    let out = run(
        env!("CARGO_BIN_EXE_neox-data"),
        &[
            "samples",
            "--data-path",
            s(prefix),
            "--seq-length",
            "16",
            "--num-samples",
            "4",
            "--show",
            "1",
            "--cache-dir",
            s(cache.path()),
            "--json",
        ],
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["shown"][0].get("text").is_none());
}
