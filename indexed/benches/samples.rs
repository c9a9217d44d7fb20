//! Build time and peak memory of GPT-NeoX's sample index at scale.
//!
//! A synthetic corpus of 10 M documents / about 10 B tokens (document `i`
//! has `1 + (i * 2654435761) % 1999` tokens, mean 1,000) indexed at
//! seq_length 2048 for 4.8 M samples (one epoch), seed 1234: doc_idx,
//! sample_idx, shuffle_idx, then the three `.npy` cache files written and
//! read back (with every check a reuse makes).
//!
//! `cargo bench -p neox-indexed --bench samples`
//!
//! Environment: `SAMPLES_BENCH_DOCS` (documents, default 10,000,000),
//! `SAMPLES_BENCH_SEQ` (default 2048), `SAMPLES_BENCH_SAMPLES` (default
//! 4,800,000), `SAMPLES_BENCH_OUT` (keep the `.npy` files in this folder, to
//! compare them with GPT-NeoX's own builder's).

use std::path::PathBuf;
use std::time::Instant;

use neox_indexed::samples::{
    CachePaths, IndexSpec, RandomState, SampleIndex, build_doc_idx, build_sample_idx,
    build_shuffle_idx, num_epochs, tokens_per_epoch,
};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Peak resident memory of this process so far (VmHWM), in MiB.
fn peak_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let docs = env_or("SAMPLES_BENCH_DOCS", 10_000_000) as usize;
    let seq = env_or("SAMPLES_BENCH_SEQ", 2048) as u32;
    let samples = env_or("SAMPLES_BENCH_SAMPLES", 4_800_000);
    let seed = 1234;

    let sizes: Vec<i32> = (0..docs as u64)
        .map(|i| (1 + (i * 2_654_435_761) % 1999) as i32)
        .collect();
    let base = peak_mib();
    let spec = IndexSpec {
        documents: 0..docs,
        seq_length: seq,
        num_samples: Some(samples),
        num_epochs: None,
        seed,
    };
    let tokens = tokens_per_epoch(&sizes, spec.documents.clone())?;
    let epochs = num_epochs(tokens, seq, samples)?;
    println!(
        "corpus: {docs} documents, {tokens} tokens; seq_length {seq}, {samples} samples asked, {epochs} epoch(s)"
    );
    println!("peak memory before the index (the sizes array): {base:.1} MiB");

    let all = Instant::now();
    let t = Instant::now();
    let mut rng = RandomState::new(seed);
    let doc_idx = build_doc_idx(spec.documents.clone(), epochs, &mut rng)?;
    let t_doc = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let sample_idx = build_sample_idx(&sizes, &doc_idx, seq, epochs, tokens)?;
    let t_sample = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let shuffle_idx = build_shuffle_idx(sample_idx.rows() as u64 - 1, &mut rng)?;
    let t_shuffle = t.elapsed().as_secs_f64();
    let t_build = all.elapsed().as_secs_f64();
    let index = SampleIndex {
        num_epochs: epochs,
        tokens_per_epoch: tokens,
        doc_idx: doc_idx.into(),
        sample_idx,
        shuffle_idx,
    };
    let peak_build = peak_mib();
    println!(
        "build: {t_build:.3} s (doc_idx {t_doc:.3} s, sample_idx {t_sample:.3} s, shuffle_idx {t_shuffle:.3} s); {} samples",
        index.total_samples()
    );
    println!(
        "peak memory after build: {peak_build:.1} MiB (+{:.1} MiB for the index)",
        peak_build - base
    );

    let keep = std::env::var_os("SAMPLES_BENCH_OUT").map(PathBuf::from);
    let scratch = tempfile::tempdir()?;
    let dir = keep.clone().unwrap_or_else(|| scratch.path().to_path_buf());
    std::fs::create_dir_all(&dir)?;
    let paths = CachePaths::new(&dir.join("synthetic"), None, "train", &spec);
    let t = Instant::now();
    paths.write(&index)?;
    let t_write = t.elapsed().as_secs_f64();
    drop(index);
    let t = Instant::now();
    let loaded = paths
        .load(&sizes, &spec)?
        .map_err(|reason| format!("cache refused: {reason}"))?;
    let t_load = t.elapsed().as_secs_f64();
    println!(
        "write the three .npy files: {t_write:.3} s; read and check them back: {t_load:.3} s ({} samples)",
        loaded.total_samples()
    );
    println!("peak memory overall: {:.1} MiB", peak_mib());
    if keep.is_some() {
        println!("kept: {}", paths.doc_idx.display());
    }
    Ok(())
}
