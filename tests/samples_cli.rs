//! `neox-data samples` end to end, on GPT-NeoX's own reference shard and index.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;

fn reference() -> PathBuf {
    common::shared().join("fixtures/neox-reference")
}

const STEM: &str = "small_neox20b_text_document";

/// A private copy of the reference shard (GPT-NeoX writes its index next to the data).
fn copy_shard(dir: &Path) -> PathBuf {
    for ext in ["bin", "idx"] {
        std::fs::copy(
            reference().join(format!("{STEM}.{ext}")),
            dir.join(format!("{STEM}.{ext}")),
        )
        .unwrap();
    }
    dir.join(STEM)
}

fn samples(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_neox-data"))
        .arg("samples")
        .args(args)
        .output()
        .expect("run neox-data")
}

fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "neox-data failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON output")
}

/// The int64 `[8, S+1]` tokens of `*_first8_samples.npy` (numpy .npy v1, C order).
fn first8(seq: usize, samples: u64, seed: u32) -> Vec<Vec<i64>> {
    let path = reference().join("index").join(format!(
        "{STEM}_train_indexmap_{samples}ns_{seq}sl_{seed}s_first8_samples.npy"
    ));
    let bytes = std::fs::read(&path).unwrap();
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let data = &bytes[10 + header_len..];
    let all: Vec<i64> = data
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    all.chunks(seq + 1).map(<[i64]>::to_vec).collect()
}

#[test]
fn builds_gpt_neox_s_index_then_reuses_it() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = copy_shard(dir.path());
    let prefix = prefix.to_str().unwrap();
    let args = [
        "--data-path",
        prefix,
        "--seq-length",
        "512",
        "--num-samples",
        "2000",
        "--seed",
        "4321",
        "--split",
        "949,50,1",
        "--show",
        "3",
        "--json",
    ];
    let report = json(&samples(&args));
    assert_eq!(report["index"], "built");
    assert_eq!(report["epochs"], 3);
    assert_eq!(report["samples_built"], 2402);
    assert_eq!(report["samples_served"], 2401);
    assert_eq!(report["documents"], serde_json::json!([0, 285]));
    assert_eq!(report["sample_idx_dtype"], "int32");
    assert_eq!(report["shuffle_idx_dtype"], "uint32");
    // The cache files are GPT-NeoX's, byte for byte, under GPT-NeoX's names.
    for what in ["doc_idx", "sample_idx", "shuffle_idx"] {
        let name = format!("{STEM}_train_indexmap_2000ns_512sl_4321s_packedpi_ac_{what}.npy");
        let ours = std::fs::read(dir.path().join(&name)).unwrap();
        assert_eq!(
            ours,
            std::fs::read(reference().join("index").join(&name)).unwrap(),
            "{name}"
        );
    }
    // The samples shown are GPT2Dataset.__getitem__'s.
    let expected = first8(512, 2000, 4321);
    let shown = report["shown"].as_array().unwrap();
    assert_eq!(shown.len(), 3);
    for (i, s) in shown.iter().enumerate() {
        let tokens: Vec<i64> = s["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_i64().unwrap())
            .collect();
        assert_eq!(tokens, expected[i], "sample {i}");
    }

    let again = json(&samples(&args));
    assert_eq!(again["index"], "reused");
    assert_eq!(again["shown"], report["shown"]);
}

#[test]
fn text_output_shows_a_window_of_samples() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = copy_shard(dir.path());
    let out = samples(&[
        "--data-path",
        prefix.to_str().unwrap(),
        "--seq-length",
        "2048",
        "--num-samples",
        "64",
        "--start",
        "5",
        "--show",
        "3",
        "--show-tokens",
        "4",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("samples built    204"), "{text}");
    let expected = first8(2048, 64, 1234);
    for i in 5..8 {
        let ids: Vec<String> = expected[i][..4].iter().map(i64::to_string).collect();
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("sample {i} ")))
            .unwrap();
        let expected = format!("): {} ... (2045 more)", ids.join(" "));
        assert!(
            line.ends_with(&expected),
            "{line:?} should end with {expected:?}"
        );
    }
    assert!(!text.contains("sample 8 "), "{text}");
}

#[test]
fn a_stale_cache_is_rebuilt_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = copy_shard(dir.path());
    let args = [
        "--data-path",
        prefix.to_str().unwrap(),
        "--seq-length",
        "2048",
        "--num-samples",
        "64",
        "--json",
    ];
    json(&samples(&args));
    let shuffle = dir.path().join(format!(
        "{STEM}_train_indexmap_64ns_2048sl_1234s_packedpi_ac_shuffle_idx.npy"
    ));
    let good = std::fs::read(&shuffle).unwrap();
    std::fs::write(&shuffle, &good[..good.len() - 4]).unwrap();
    let out = samples(&args);
    let report = json(&out);
    assert_eq!(report["index"], "rebuilt");
    assert!(
        report["rebuilt_because"]
            .as_str()
            .unwrap()
            .contains("data bytes"),
        "{report}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("rebuilt"),
        "a warning on stderr"
    );
    assert_eq!(std::fs::read(&shuffle).unwrap(), good);
}

#[test]
fn bad_requests_fail_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = copy_shard(dir.path());
    let p = prefix.to_str().unwrap();
    let missing = dir.path().join("nothing_here");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "--data-path",
                missing.to_str().unwrap(),
                "--seq-length",
                "8",
                "--num-samples",
                "1",
            ],
            "nothing_here",
        ),
        (
            vec!["--data-path", p, "--seq-length", "1", "--num-samples", "1"],
            "seq_length must be at least 2",
        ),
        (
            vec![
                "--data-path",
                p,
                "--seq-length",
                "8",
                "--num-samples",
                "1",
                "--split",
                "0,0,0",
            ],
            "sum to 0",
        ),
        (
            vec![
                "--data-path",
                p,
                "--seq-length",
                "8",
                "--num-samples",
                "1",
                "--which",
                "test",
            ],
            "no test documents",
        ),
        (
            vec![
                "--data-path",
                p,
                "--seq-length",
                "8",
                "--num-samples",
                "1",
                "--pack-impl",
                "unpacked",
            ],
            "packed",
        ),
        (vec!["--data-path", p, "--seq-length", "8"], "--num-samples"),
    ];
    for (args, expected) in cases {
        let out = samples(&args);
        assert!(!out.status.success(), "{args:?} should fail");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(expected),
            "{args:?}: {stderr:?} should mention {expected:?}"
        );
    }
}

#[test]
fn a_read_only_data_folder_is_served_from_a_cache_dir() {
    let scratch = tempfile::tempdir().unwrap();
    let cache = scratch.path().join("made/on/demand");
    let data = reference().join(STEM);
    let out = samples(&[
        "--data-path",
        data.to_str().unwrap(),
        "--seq-length",
        "2048",
        "--num-samples",
        "64",
        "--cache-dir",
        cache.to_str().unwrap(),
        "--json",
    ]);
    let report = json(&out);
    assert!(
        report["cache_files"][0]
            .as_str()
            .unwrap()
            .starts_with(cache.to_str().unwrap())
    );
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 3);
}

#[test]
fn help_says_which_packing_modes_exist() {
    let out = samples(&["--help"]);
    assert!(out.status.success());
    // Words only: clap wraps the text to the terminal width.
    let help = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        help.contains("pack_until_overflow") && help.contains("not implemented yet"),
        "{help}"
    );
}
