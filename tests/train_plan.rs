//! `neox-train --check` end to end: the plan as text and as JSON over real
//! shards (the shared e-mail corpus, char-level), the fit check on a device
//! too small with its suggestions, and bad requests refused.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use neox_indexed::IndexedDataset;
use neox_indexed::samples::{Split, num_epochs, tokens_per_epoch};
use serde_json::Value;

const TRAIN: &str = env!("CARGO_BIN_EXE_neox-train");

mod common;
use common::{char_data, char_shards, cpu_tiny};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A data setup over the char-level shards.
fn data_config(dir: &Path) -> PathBuf {
    let path = dir.join("data.yml");
    std::fs::write(&path, char_data()).unwrap();
    path
}

fn check(configs: &[&Path], extra: &[&str]) -> Output {
    let mut command = Command::new(TRAIN);
    command.arg("--check").args(extra).arg("--config");
    command.args(configs);
    command.output().unwrap()
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The config line of `key` in the plan's text.
fn config_line<'a>(stdout: &'a str, key: &str) -> &'a str {
    stdout
        .lines()
        .find(|l| l.starts_with(&format!("{key}: ")))
        .unwrap_or_else(|| panic!("no line for {key}: {stdout}"))
}

#[test]
fn the_plan_reads_as_text_and_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = cpu_tiny();
    let data = data_config(dir.path());
    let out = check(&[&tiny, &data], &[]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    for section in [
        "## config",
        "## model",
        "## data",
        "## layout",
        "## memory per rank",
        "## fit",
        "## notes",
    ] {
        assert!(stdout.contains(section), "{section}: {stdout}");
    }
    // Provenance: a file, a default, a value derived from others.
    assert!(config_line(&stdout, "num_layers").ends_with("configs/cpu-tiny.yml"));
    assert!(config_line(&stdout, "padded_vocab_size").ends_with("data.yml"));
    assert!(config_line(&stdout, "rotary_emb_base").ends_with("# default"));
    assert!(config_line(&stdout, "train_batch_size").ends_with("# derived"));
    // The config section is YAML that reads back as the same values.
    let yaml: String = stdout
        .lines()
        .skip_while(|l| !l.starts_with("## config"))
        .skip(1)
        .take_while(|l| !l.starts_with("## "))
        .map(|l| format!("{l}\n"))
        .collect();
    let parsed: serde_yaml_ng::Mapping = serde_yaml_ng::from_str(&yaml).unwrap();
    assert_eq!(parsed["num_layers"], serde_yaml_ng::Value::from(2));

    let out = check(&[&tiny, &data], &["--json"]);
    assert!(out.status.success());
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    let source = |key: &str| {
        plan["config"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["key"] == key)
            .map(|r| r["source"].clone())
            .unwrap()
    };
    assert!(
        source("num_layers")["file"]
            .as_str()
            .unwrap()
            .ends_with("cpu-tiny.yml")
    );
    assert_eq!(
        source("seed")["file"]
            .as_str()
            .map(|f| f.ends_with("cpu-tiny.yml")),
        Some(true)
    );
    assert_eq!(source("train_batch_size"), "derived");
    assert_eq!(source("rotary_emb_base"), "default");
    // The text shows the JSON's figures.
    let total = plan["model"]["params"]["total"].as_u64().unwrap();
    assert!(total > 0);
    let grouped = total
        .to_string()
        .as_bytes()
        .rchunks(3)
        .rev()
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join(",");
    assert!(
        stdout.contains(&format!("parameters        {grouped}")),
        "{stdout}"
    );
    // The data section: the shard's sizes and GPT-NeoX's epochs per split.
    let shard = IndexedDataset::open(char_shards()).unwrap();
    let d = &plan["data"];
    assert_eq!(d["status"], "read");
    assert_eq!(d["shards"][0]["documents"], shard.len() as u64);
    assert_eq!(d["shards"][0]["tokens"], shard.num_tokens());
    let sizes = shard.sizes().to_vec();
    let split = Split::parse("949,50,1", shard.len()).unwrap();
    let train = &d["splits"][0]["parts"][0];
    // cpu-tiny: 400 iterations of 8 samples.
    assert_eq!(d["splits"][0]["samples"], 3200);
    let tokens = tokens_per_epoch(&sizes, split.train()).unwrap();
    assert_eq!(train["tokens_per_epoch"], tokens);
    assert_eq!(train["epochs"], num_epochs(tokens, 64, 3200).unwrap());
    assert_eq!(
        train["documents"],
        (split.train().end - split.train().start) as u64
    );
    // One CPU rank in fp32: weights, gradients and Adam state 4 + 4 + 8 bytes each.
    let m = &plan["memory"];
    assert_eq!(m["params"].as_u64().unwrap(), 4 * total);
    assert_eq!(m["optimizer"].as_u64().unwrap(), 8 * total);
    assert_eq!(plan["layout"]["precision"], "fp32");
    assert!(plan["fit"].is_null());
    assert!(plan["notes"]["refused"].as_array().unwrap().is_empty());
}

#[test]
fn a_rank_that_does_not_fit_gets_the_smallest_changes_that_would() {
    let dir = tempfile::tempdir().unwrap();
    let model = root().join("configs/125M.yml");
    let data = data_config(dir.path());
    let json = check(
        &[&model, &data],
        &[
            "--allow-unimplemented",
            "--json",
            "--device-memory",
            "80GiB",
        ],
    );
    let plan: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert!(json.status.success(), "{}", text(&json).1);
    assert_eq!(plan["fit"]["fits"], true);
    let need = plan["memory"]["total"].as_u64().unwrap();
    assert_eq!(plan["fit"]["per_rank"].as_u64().unwrap(), need);

    // A device a little smaller than the fullest rank needs.
    let small = (need - need / 8).to_string();
    let out = check(
        &[&model, &data],
        &["--allow-unimplemented", "--device-memory", &small],
    );
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}");
    assert!(stderr.contains("fit"), "{stderr}");
    assert!(stdout.contains("DOES NOT FIT"), "{stdout}");
    assert!(stdout.contains("smallest changes that fit"), "{stdout}");
    let out = check(
        &[&model, &data],
        &["--allow-unimplemented", "--json", "--device-memory", &small],
    );
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    let suggestions = plan["fit"]["suggestions"].as_array().unwrap();
    assert!(!suggestions.is_empty());
    for s in suggestions {
        assert!(s["per_rank"].as_u64().unwrap() <= need - need / 8, "{s}");
        let change = s["changes"][0].as_str().unwrap();
        assert!(stdout.contains(change), "{change}: {stdout}");
    }
    // 125M keeps the global batch of 4 in every suggestion.
    for s in suggestions {
        let l = &s["layout"];
        let global = ["micro_batch", "grad_accum", "dp"]
            .iter()
            .map(|k| l[k].as_u64().unwrap())
            .product::<u64>();
        assert_eq!(global, 4, "{s}");
    }
}

#[test]
fn bad_requests_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = cpu_tiny();
    let data = data_config(dir.path());
    let out = check(&[&tiny, &data], &["--device-memory", "80G"]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success() && stderr.contains("GiB"), "{stderr}");
    // Two-way tensor parallelism cannot spread over 3 ranks.
    let tp = dir.path().join("tp.yml");
    std::fs::write(&tp, "model_parallel_size: 2\n").unwrap();
    let out = check(
        &[&tiny, &data, &tp],
        &["--allow-unimplemented", "--world-size", "3"],
    );
    let (_, stderr) = text(&out);
    assert!(
        !out.status.success()
            && stderr.contains("model_parallel_size")
            && stderr.contains("tp.yml"),
        "{stderr}"
    );
    // On 4 ranks: data parallelism 2; the batch derived for it.
    let out = check(
        &[&tiny, &data, &tp],
        &["--allow-unimplemented", "--world-size", "4", "--json"],
    );
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["layout"]["dp"], 2);
    assert_eq!(plan["layout"]["tp"], 2);
    // A plan option of the wrong type is named with its file.
    let bad = dir.path().join("bad.yml");
    std::fs::write(&bad, "checkpoint_activations: maybe\n").unwrap();
    let out = check(&[&tiny, &data, &bad], &[]);
    let (_, stderr) = text(&out);
    assert!(
        !out.status.success()
            && stderr.contains("checkpoint_activations")
            && stderr.contains("bad.yml")
            && stderr.contains("maybe"),
        "{stderr}"
    );
    // --json and --device-memory need --check.
    let out = Command::new(TRAIN)
        .args(["--json", "--config"])
        .arg(&tiny)
        .output()
        .unwrap();
    assert!(!out.status.success());
}
