//! Tokenization throughput on the shared e-mail corpus
//! (`../shared/data/mail.jsonl.zst`, 32.5 MB of text).
//!
//! `cargo bench --no-default-features --bench tokenize`
//!
//! For each tokenizer and thread count it prints the raw encode throughput
//! of the tokenizer alone (texts in memory, split over the threads) and the
//! end-to-end throughput of the pipeline `neox-data tokenize` runs (read,
//! decompress, parse, encode, write), in MB of text per second and tokens
//! per second, with the peak RSS of each run, and both in MB of text per
//! CPU-second (robust when other work shares the machine). Neither side
//! counts loading the tokenizer. Then, for the default engine, each stage
//! of the pipeline alone (zstd decoding, reading, encoding, writing) in CPU
//! milliseconds per MB of text, with the bound that reading and writing put
//! on end-to-end / raw when every core is busy, and end-to-end / raw on the
//! corpus decompressed to plain JSON lines (what zstd costs). Last, the
//! corpus is concatenated ten times to show that the pipeline's peak RSS
//! does not grow with the input.
//!
//! A virtual machine's speed drifts by tens of percent from minute to
//! minute, so runs that are compared are interleaved (raw, end-to-end, raw,
//! ...) over `NEOX_BENCH_ROUNDS` rounds (default 3) and every figure is the
//! median over the rounds; a ratio is the median of the rounds' ratios.
//!
//! Each measurement runs in a child process of its own (this program,
//! re-run with `NEOX_BENCH_CHILD` set) so that peak RSS is its own.
//! `NEOX_BENCH_ONLY=gpt2` keeps the rows whose tokenizer name contains
//! `gpt2`. To add a tokenizer: one more arm in `tokenizer` and one more
//! name in `TOKENIZERS`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use neox::pipeline::{self, PipelineConfig, Silent};
use neox_datasets::read::{ReadOptions, documents};
use neox_tokenize::{EngineChoice, Tokenizer, TokenizerKind, TokenizerSpec};

/// The tokenizers measured, by bench name.
const TOKENIZERS: [&str; 5] = [
    "gpt2 (tokenizers)",
    "gpt2 (fast bpe)",
    "neox20b (tokenizers)",
    "neox20b (fast bpe)",
    "r50k (tiktoken)",
];
/// The tokenizer the ten-times-larger input is run with (the default
/// engine, also the fastest: it keeps the run short; memory does not depend
/// on the tokenizer's speed).
const SCALE_TOKENIZER: &str = "gpt2 (fast bpe)";
const THREADS: [usize; 2] = [1, 2];
/// Interleaved rounds of the stage measurements.
const STAGE_ROUNDS: usize = 5;

/// Interleaved rounds of each comparison (`NEOX_BENCH_ROUNDS`, default 3).
fn rounds() -> usize {
    std::env::var("NEOX_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .filter(|&r| r > 0)
        .unwrap_or(3)
}

/// The median of `values` (the mean of the middle two for an even count).
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// Runs `modes` on `input` in turns, `rounds` times: the runs of each mode.
fn interleaved(
    modes: &[&str],
    name: &str,
    threads: usize,
    input: &Path,
    rounds: usize,
) -> Vec<Vec<Measured>> {
    let mut runs: Vec<Vec<Measured>> = modes.iter().map(|_| Vec::new()).collect();
    for _ in 0..rounds {
        for (mode, runs) in modes.iter().zip(&mut runs) {
            runs.push(run_child(mode, name, threads, input));
        }
    }
    runs
}

/// The median of `f` over `runs`.
fn median_of(runs: &[Measured], f: impl Fn(&Measured) -> f64) -> f64 {
    median(runs.iter().map(f).collect())
}

/// The median over the rounds of end-to-end / raw wall-clock throughput.
fn median_ratio(raw: &[Measured], e2e: &[Measured]) -> f64 {
    median(
        raw.iter()
            .zip(e2e)
            .map(|(r, e)| e.mb_per_s() / r.mb_per_s())
            .collect(),
    )
}

fn tokenizer(name: &str) -> Tokenizer {
    let (spec, engine) = match name {
        "gpt2 (tokenizers)" => (
            TokenizerSpec::new(TokenizerKind::Gpt2Bpe),
            EngineChoice::Tokenizers,
        ),
        "gpt2 (fast bpe)" => (
            TokenizerSpec::new(TokenizerKind::Gpt2Bpe),
            EngineChoice::Fast,
        ),
        "neox20b (tokenizers)" => (
            TokenizerSpec::new(TokenizerKind::HfTokenizer),
            EngineChoice::Tokenizers,
        ),
        "neox20b (fast bpe)" => (
            TokenizerSpec::new(TokenizerKind::HfTokenizer),
            EngineChoice::Fast,
        ),
        "r50k (tiktoken)" => (
            TokenizerSpec {
                vocab_file: Some("r50k_base".into()),
                ..TokenizerSpec::new(TokenizerKind::Tiktoken)
            },
            EngineChoice::Auto,
        ),
        other => panic!("unknown bench tokenizer {other:?}"),
    };
    Tokenizer::load_with_engine(&spec, engine).expect("load tokenizer")
}

fn corpus() -> PathBuf {
    let shared = std::env::var_os("NEOX_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared")));
    let path = shared.join("data/mail.jsonl.zst");
    assert!(
        path.is_file(),
        "{} is missing (set NEOX_SHARED)",
        path.display()
    );
    path
}

/// One measurement: text bytes, tokens, wall seconds, CPU seconds (user +
/// system, of the whole process), peak RSS in bytes.
struct Measured {
    bytes: u64,
    tokens: u64,
    secs: f64,
    cpu_secs: f64,
    peak_rss: u64,
}

impl Measured {
    fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.secs
    }
    fn tokens_per_s(&self) -> f64 {
        self.tokens as f64 / self.secs
    }
    /// MB of text per CPU-second: what the work costs, whatever else the
    /// machine is doing.
    fn mb_per_cpu_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.cpu_secs
    }
}

fn main() {
    if let Ok(job) = std::env::var("NEOX_BENCH_CHILD") {
        child(&job);
        return;
    }
    let only = std::env::var("NEOX_BENCH_ONLY").unwrap_or_default();
    let input = corpus();
    let rounds = rounds();
    println!(
        "machine: {} cores; input {}; load average at the start: {}; medians of {rounds} interleaved rounds",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        input.display(),
        load_average()
    );
    println!();
    println!(
        "| tokenizer | threads | raw MB/s | raw tokens/s | end-to-end MB/s | end-to-end tokens/s | end-to-end / raw | raw MB/CPU-s | end-to-end MB/CPU-s | raw peak RSS | end-to-end peak RSS |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for name in TOKENIZERS.iter().filter(|n| n.contains(&only)) {
        for threads in THREADS {
            let runs = interleaved(&["raw", "e2e"], name, threads, &input, rounds);
            let (raw, e2e) = (&runs[0], &runs[1]);
            println!(
                "| {name} | {threads} | {:.2} | {:.0} | {:.2} | {:.0} | {:.0}% | {:.2} | {:.2} | {} | {} |",
                median_of(raw, Measured::mb_per_s),
                median_of(raw, Measured::tokens_per_s),
                median_of(e2e, Measured::mb_per_s),
                median_of(e2e, Measured::tokens_per_s),
                100.0 * median_ratio(raw, e2e),
                median_of(raw, Measured::mb_per_cpu_s),
                median_of(e2e, Measured::mb_per_cpu_s),
                mib(median_of(raw, |m| m.peak_rss as f64) as u64),
                mib(median_of(e2e, |m| m.peak_rss as f64) as u64)
            );
        }
    }

    if !SCALE_TOKENIZER.contains(&only) {
        println!("\nload average at the end: {}", load_average());
        return;
    }
    stages(&input);
    let dir = tempfile::tempdir().expect("temp dir");
    plain_lines(&input, dir.path(), rounds);

    let tenfold = dir.path().join("mail-x10.jsonl.zst");
    let bytes = std::fs::read(&input).expect("read corpus");
    // Ten zstd frames one after the other are one valid zstd stream.
    std::fs::write(&tenfold, bytes.repeat(10)).expect("write tenfold corpus");
    println!();
    println!("| input | tokenizer | threads | text | MB/s | tokens | peak RSS |");
    println!("|---|---|---|---|---|---|---|");
    let threads = *THREADS.last().unwrap_or(&1);
    for (label, path) in [("corpus", &input), ("corpus x10", &tenfold)] {
        let m = run_child("e2e", SCALE_TOKENIZER, threads, path);
        println!(
            "| {label} | {SCALE_TOKENIZER} | {threads} | {:.0} MB | {:.2} | {} | {} |",
            m.bytes as f64 / 1e6,
            m.mb_per_s(),
            m.tokens,
            mib(m.peak_rss)
        );
    }
    println!("\nload average at the end: {}", load_average());
}

/// The 1, 5 and 15 minute load averages (Linux), for judging wall times.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_string())
}

/// Where the end-to-end CPU time goes, for the default engine at the
/// largest thread count: each stage alone, in CPU milliseconds per MB of
/// text, against the whole pipeline (medians of [`STAGE_ROUNDS`]
/// interleaved rounds).
fn stages(input: &Path) {
    let threads = *THREADS.last().unwrap_or(&1);
    let modes = ["decompress", "read", "raw", "write", "e2e"];
    let runs = interleaved(&modes, SCALE_TOKENIZER, threads, input, STAGE_ROUNDS);
    let [decompress, read, encode, write, e2e] = &runs[..] else {
        unreachable!("one list of runs per mode")
    };
    let text_mb = encode[0].bytes as f64 / 1e6;
    let per_mb = |runs: &[Measured]| {
        (
            1e3 * median_of(runs, |m| m.cpu_secs) / text_mb,
            1e3 * median_of(runs, |m| m.secs) / text_mb,
        )
    };
    println!();
    println!(
        "Stages of {SCALE_TOKENIZER} at {threads} threads, each alone (medians of {STAGE_ROUNDS} interleaved rounds; per MB of text, {:.1} MB; zstd decodes {:.1} MB):",
        text_mb,
        decompress[0].bytes as f64 / 1e6
    );
    println!();
    println!("| stage | CPU ms per MB | wall ms per MB |");
    println!("|---|---|---|");
    let row = |name: &str, (cpu, wall): (f64, f64)| println!("| {name} | {cpu:.2} | {wall:.2} |");
    row("zstd decoding alone", per_mb(decompress));
    row("reading: zstd, lines, JSON, hand-over", per_mb(read));
    row("encoding (the raw run)", per_mb(encode));
    row("writing .bin/.idx, synced", per_mb(write));
    let stages = [read, encode, write].map(|m| per_mb(m).0);
    let sum: f64 = stages.iter().sum();
    println!("| reading + encoding + writing | {sum:.2} | |");
    row("end to end", per_mb(e2e));
    // With every core busy, wall time is at best total CPU / cores, so
    // end-to-end / raw is at most encoding's share of the total CPU.
    println!();
    println!(
        "With all {threads} cores busy, end-to-end / raw can reach at most encoding / (reading + encoding + writing) = {:.0}% (measured: {:.0}% of CPU; end-to-end / raw in these rounds: {:.0}%)",
        100.0 * stages[1] / sum,
        100.0 * stages[1] / per_mb(e2e).0,
        100.0 * median_ratio(encode, e2e)
    );
}

/// End-to-end / raw for the default engine at the largest thread count on
/// the corpus decompressed to plain JSON lines in `dir`: the same pipeline
/// without zstd.
fn plain_lines(input: &Path, dir: &Path, rounds: usize) {
    let threads = *THREADS.last().unwrap_or(&1);
    let plain = dir.join("mail.jsonl");
    let mut decoder =
        zstd::Decoder::new(std::fs::File::open(input).expect("open corpus")).expect("zstd");
    let mut file = std::fs::File::create(&plain).expect("create plain JSON lines");
    std::io::copy(&mut decoder, &mut file).expect("decompress corpus to plain JSON lines");
    let runs = interleaved(&["raw", "e2e"], SCALE_TOKENIZER, threads, &plain, rounds);
    println!();
    println!(
        "The same corpus as plain JSON lines (no zstd), {SCALE_TOKENIZER} at {threads} threads: end-to-end {:.2} MB/s, {:.2} MB/CPU-s; end-to-end / raw {:.0}%",
        median_of(&runs[1], Measured::mb_per_s),
        median_of(&runs[1], Measured::mb_per_cpu_s),
        100.0 * median_ratio(&runs[0], &runs[1])
    );
}

fn mib(bytes: u64) -> String {
    if bytes == 0 {
        "n/a".to_string()
    } else {
        format!("{:.0} MiB", bytes as f64 / (1024.0 * 1024.0))
    }
}

fn run_child(mode: &str, name: &str, threads: usize, input: &Path) -> Measured {
    let exe = std::env::current_exe().expect("own path");
    let out = Command::new(exe)
        .env(
            "NEOX_BENCH_CHILD",
            format!("{mode}\t{name}\t{threads}\t{}", input.display()),
        )
        .output()
        .expect("run bench child");
    assert!(
        out.status.success(),
        "bench child {mode} {name} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let fields: Vec<f64> = text
        .split_whitespace()
        .map(|f| f.parse().expect("child prints numbers"))
        .collect();
    Measured {
        bytes: fields[0] as u64,
        tokens: fields[1] as u64,
        secs: fields[2],
        cpu_secs: fields[3],
        peak_rss: fields[4] as u64,
    }
}

/// In the child: one measurement, printed as "bytes tokens seconds cpu_seconds peak_rss".
fn child(job: &str) {
    let parts: Vec<&str> = job.split('\t').collect();
    let [mode, name, threads, input] = parts[..] else {
        panic!("bad NEOX_BENCH_CHILD {job:?}");
    };
    let threads: usize = threads.parse().expect("threads");
    let input = PathBuf::from(input);
    // Only the stages that encode load the tokenizer (the others' peak RSS
    // and profiles are their own).
    let (bytes, tokens, secs, cpu_secs) = match mode {
        "raw" => raw(&tokenizer(name), threads, &input),
        "decompress" => decompress(&input),
        "read" => read(&input),
        "write" => write(&tokenizer(name), &input),
        _ => end_to_end(&tokenizer(name), threads, &input),
    };
    println!("{bytes} {tokens} {secs} {cpu_secs} {}", peak_rss());
}

/// The tokenizer alone: every text in memory first, then encoded on
/// `threads` threads taking documents one at a time.
fn raw(tokenizer: &Tokenizer, threads: usize, input: &Path) -> (u64, u64, f64, f64) {
    let texts: Vec<String> = documents(&[input.to_path_buf()], &ReadOptions::default())
        .expect("open corpus")
        .map(|d| d.expect("read corpus").texts.swap_remove(0))
        .filter(|t| !t.is_empty())
        .collect();
    let bytes: u64 = texts.iter().map(|t| t.len() as u64).sum();
    let next = AtomicUsize::new(0);
    let (start, cpu_start) = (Instant::now(), cpu_seconds());
    let tokens: u64 = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut ids = Vec::new();
                    let mut count = 0u64;
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(text) = texts.get(i) else { break };
                        ids.clear();
                        tokenizer.encode(text, &mut ids).expect("encode");
                        count += ids.len() as u64;
                    }
                    count
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("thread")).sum()
    });
    let secs = start.elapsed().as_secs_f64();
    (bytes, tokens, secs, cpu_seconds() - cpu_start)
}

/// The whole pipeline, as `neox-data tokenize --workers threads` runs it
/// (without --append-eod, so the token counts compare with the raw run).
fn end_to_end(tokenizer: &Tokenizer, threads: usize, input: &Path) -> (u64, u64, f64, f64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = PipelineConfig::new(vec![input.to_path_buf()], dir.path().join("bench"));
    config.workers = threads;
    let (start, cpu_start) = (Instant::now(), cpu_seconds());
    let summary = pipeline::run(&config, tokenizer, &mut Silent).expect("pipeline");
    let secs = start.elapsed().as_secs_f64();
    (
        summary.text_bytes,
        summary.tokens,
        secs,
        cpu_seconds() - cpu_start,
    )
}

/// User + system CPU time of this process so far (all its threads,
/// nanosecond resolution), 0 if unknown.
fn cpu_seconds() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec for the call to fill.
    if unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut t) } != 0 {
        return 0.0;
    }
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

/// Peak resident set size of this process (Linux), 0 if unknown.
fn peak_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024)
        })
        .unwrap_or(0)
}

/// Stage: zstd decoding alone, into a reused buffer (bytes are the
/// decompressed bytes, JSON included).
fn decompress(input: &Path) -> (u64, u64, f64, f64) {
    use std::io::Read;
    let (start, cpu_start) = (Instant::now(), cpu_seconds());
    let file = std::fs::File::open(input).expect("open corpus");
    let mut decoder = zstd::Decoder::new(file).expect("zstd");
    let mut buf = vec![0u8; 1 << 17];
    let mut bytes = 0u64;
    loop {
        let n = decoder.read(&mut buf).expect("decompress");
        if n == 0 {
            break;
        }
        bytes += n as u64;
    }
    (
        bytes,
        0,
        start.elapsed().as_secs_f64(),
        cpu_seconds() - cpu_start,
    )
}

/// Stage: reading alone, as the pipeline reads (decompress, split lines,
/// parse JSON, hand each document over); documents are dropped.
fn read(input: &Path) -> (u64, u64, f64, f64) {
    let (start, cpu_start) = (Instant::now(), cpu_seconds());
    let mut bytes = 0u64;
    for doc in documents(&[input.to_path_buf()], &ReadOptions::default()).expect("open corpus") {
        bytes += doc.expect("read corpus").texts[0].len() as u64;
    }
    (
        bytes,
        0,
        start.elapsed().as_secs_f64(),
        cpu_seconds() - cpu_start,
    )
}

/// Stage: writing alone: every document's ids in memory first, then written
/// to a `.bin/.idx` pair as the pipeline writes them (and synced).
fn write(tokenizer: &Tokenizer, input: &Path) -> (u64, u64, f64, f64) {
    let mut bytes = 0u64;
    let docs: Vec<Vec<u32>> = documents(&[input.to_path_buf()], &ReadOptions::default())
        .expect("open corpus")
        .map(|d| d.expect("read corpus").texts.swap_remove(0))
        .filter(|t| !t.is_empty())
        .map(|t| {
            bytes += t.len() as u64;
            let mut ids = Vec::new();
            tokenizer.encode(&t, &mut ids).expect("encode");
            ids
        })
        .collect();
    let dir = tempfile::tempdir().expect("temp dir");
    let dtype = neox_indexed::DType::for_vocab_size(tokenizer.vocab_size());
    let (start, cpu_start) = (Instant::now(), cpu_seconds());
    let mut writer =
        neox_indexed::IndexedWriter::create(dir.path().join("bench"), dtype).expect("create");
    for ids in &docs {
        writer.add_document(ids).expect("write");
    }
    let summary = writer.finish().expect("finish");
    (
        bytes,
        summary.tokens,
        start.elapsed().as_secs_f64(),
        cpu_seconds() - cpu_start,
    )
}
