//! Throughput of the fast BPE engine beside the `tokenizers` library and
//! tiktoken (`tiktoken-rs`, r50k_base = GPT-2) on the shared e-mail corpus,
//! on 1 and 2 threads, one run each: MB of text per second, and per core.
//!
//! `cargo bench -p neox-tokenize --bench bpe` (set `NEOX_SHARED` when the
//! shared folder is not `../shared`). Add `-- 1` to run one thread only.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::time::Instant;

use neox_tokenize::bpe::FastBpe;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

fn shared() -> PathBuf {
    std::env::var_os("NEOX_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared")))
}

fn corpus() -> Result<Vec<String>, Box<dyn std::error::Error + Send + Sync>> {
    let path = shared().join("data/mail.jsonl.zst");
    let file = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut docs = Vec::new();
    for line in BufReader::new(zstd::stream::read::Decoder::new(file)?).lines() {
        let value: serde_json::Value = serde_json::from_str(&line?)?;
        if let Some(text) = value["text"].as_str() {
            docs.push(text.to_owned());
        }
    }
    Ok(docs)
}

/// Encodes one document, returns its number of tokens.
type Encode<'a> = dyn Fn(&str) -> usize + Sync + 'a;

/// Encodes every document on `threads` threads (contiguous shares); returns
/// the seconds and the number of tokens.
fn run(docs: &[String], threads: usize, encode: &Encode) -> (f64, usize) {
    let share = docs.len().div_ceil(threads);
    let start = Instant::now();
    let tokens = std::thread::scope(|s| {
        let workers: Vec<_> = docs
            .chunks(share)
            .map(|chunk| s.spawn(move || chunk.iter().map(|d| encode(d)).sum::<usize>()))
            .collect();
        workers.into_iter().map(|w| w.join().unwrap_or(0)).sum()
    });
    (start.elapsed().as_secs_f64(), tokens)
}

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let only: Option<usize> = std::env::args().skip(1).find_map(|a| a.parse().ok());
    let dir = shared().join("tokenizers");
    let (vocab, merges) = (dir.join("gpt2-vocab.json"), dir.join("gpt2-merges.txt"));
    let neox_json = std::fs::read_to_string(dir.join("neox-20b.tokenizer.json"))?;

    let mut hf_gpt2 = Tokenizer::new(
        BPE::from_file(&vocab.to_string_lossy(), &merges.to_string_lossy()).build()?,
    );
    hf_gpt2.with_pre_tokenizer(Some(ByteLevel::default().add_prefix_space(false)));
    hf_gpt2.add_special_tokens(&[AddedToken::from("<|endoftext|>", true)]);
    let fast_gpt2 = FastBpe::from_vocab_merges(
        &std::fs::read_to_string(&vocab)?,
        &std::fs::read_to_string(&merges)?,
        &["<|endoftext|>"],
    )?;
    let tiktoken = tiktoken_rs::r50k_base()?;
    let hf_neox = Tokenizer::from_bytes(neox_json.as_bytes())?;
    let fast_neox = FastBpe::from_tokenizer_json(&neox_json)?;

    let docs = corpus()?;
    let mb = docs.iter().map(String::len).sum::<usize>() as f64 / 1e6;
    let hf = |t: &Tokenizer, d: &str| t.encode_fast(d, true).map_or(0, |e| e.get_ids().len());
    let engines: [(&str, &Encode); 5] = [
        ("GPT-2     fast engine", &|d| fast_gpt2.encode(d).len()),
        ("GPT-2     tiktoken-rs r50k_base", &|d| {
            tiktoken.encode_ordinary(d).len()
        }),
        ("GPT-2     tokenizers", &|d| hf(&hf_gpt2, d)),
        ("NeoX-20B  fast engine", &|d| fast_neox.encode(d).len()),
        ("NeoX-20B  tokenizers", &|d| hf(&hf_neox, d)),
    ];
    println!(
        "mail.jsonl.zst: {} documents, {mb:.1} MB of text; {} CPUs",
        docs.len(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:<34} {:>7} {:>9} {:>9} {:>13} {:>11}",
        "engine", "threads", "seconds", "MB/s", "MB/s per core", "tokens"
    );
    for threads in [1, 2].into_iter().filter(|t| only.is_none_or(|o| o == *t)) {
        for (name, encode) in &engines {
            let (secs, tokens) = run(&docs, threads, encode);
            println!(
                "{name:<34} {threads:>7} {secs:>9.2} {:>9.2} {:>13.2} {tokens:>11}",
                mb / secs,
                mb / secs / threads as f64
            );
        }
    }
    Ok(())
}
