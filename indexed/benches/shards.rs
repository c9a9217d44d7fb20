//! Shard benchmark: write throughput against the disk's own, sequential and
//! random `get` throughput, merge throughput, and the peak memory of each,
//! on generated shards of 100 M tokens (1 M and 10 M documents).
//!
//! Run: `cargo bench -p neox-indexed --bench shards`. Options (after `--`):
//! `--tokens N` (default 100000000), `--dir D` (default: a temporary folder
//! under `$NEOX_BENCH_DIR`, else the system's). Every phase runs in its own
//! child process so that its peak resident memory (VmHWM) is its own.
//! The generated files are deleted at the end.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use neox_indexed::{DType, IndexedDataset, IndexedWriter, bin_path, idx_path, merge};

/// GPT-2's vocabulary: ids below 50,257 (u16 tokens).
const VOCAB: u64 = 50_257;

/// splitmix64: a tiny, fast, reproducible generator.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn num(args: &[String], name: &str, default: u64) -> u64 {
    arg(args, name)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match arg(&args, "--phase") {
        Some(phase) => {
            let line = run_phase(&phase, &args);
            // One line for the parent: the phase's figures and its peak memory.
            println!(
                "{line} hwm_kib={} anon_kib={}",
                status_kib("VmHWM:"),
                status_kib("RssAnon:")
            );
        }
        None => orchestrate(&args),
    }
}

/// Runs in a child process; returns `key=value` figures.
fn run_phase(phase: &str, args: &[String]) -> String {
    let prefix = PathBuf::from(arg(args, "--prefix").expect("--prefix"));
    match phase {
        "disk" => {
            let bytes = num(args, "--bytes", 0);
            let path = bin_path(&prefix);
            let buf = vec![7u8; 1 << 20];
            let t = Instant::now();
            let mut f = File::create(&path).expect("create");
            let mut left = bytes;
            while left > 0 {
                let n = left.min(buf.len() as u64) as usize;
                f.write_all(&buf[..n]).expect("write");
                left -= n as u64;
            }
            f.sync_all().expect("sync");
            let s = t.elapsed().as_secs_f64();
            std::fs::remove_file(&path).expect("remove");
            format!("secs={s} bytes={bytes}")
        }
        "write" => {
            let docs = num(args, "--docs", 0);
            let tokens = num(args, "--tokens", 0);
            let avg = tokens / docs;
            let mut rng = Rng(42);
            // A pool of ids to take documents from: generation stays out of the timing.
            let pool: Vec<u32> = (0..1 << 20).map(|_| rng.below(VOCAB) as u32).collect();
            let t = Instant::now();
            let mut w = IndexedWriter::create(&prefix, DType::U16).expect("create");
            let mut at = 0usize;
            for _ in 0..docs {
                let len = 1 + rng.below(2 * avg - 1) as usize;
                if at + len > pool.len() {
                    at = 0;
                }
                w.add_tokens(&pool[at..at + len]).expect("add");
                w.end_document().expect("end");
                at += len;
            }
            let s = w.finish().expect("finish");
            let secs = t.elapsed().as_secs_f64();
            format!(
                "secs={secs} tokens={} docs={} bytes={}",
                s.tokens,
                s.documents,
                s.bin_bytes + s.idx_bytes
            )
        }
        "sequential" => {
            let t = Instant::now();
            let ds = IndexedDataset::open(&prefix).expect("open");
            let open = t.elapsed().as_secs_f64();
            let mut sum = 0u64;
            for i in 0..ds.len() {
                sum += ds.get(i).expect("get").iter().map(u64::from).sum::<u64>();
            }
            let secs = t.elapsed().as_secs_f64();
            format!(
                "secs={secs} open_secs={open} tokens={} gets={} checksum={sum}",
                ds.num_tokens(),
                ds.len()
            )
        }
        "random" => {
            let gets = num(args, "--gets", 1_000_000);
            let ds = IndexedDataset::open(&prefix).expect("open");
            let mut rng = Rng(7);
            let t = Instant::now();
            let (mut sum, mut tokens) = (0u64, 0u64);
            for _ in 0..gets {
                let i = rng.below(ds.len() as u64) as usize;
                let seq = ds.get(i).expect("get");
                tokens += seq.len() as u64;
                sum += seq.iter().map(u64::from).sum::<u64>();
            }
            let secs = t.elapsed().as_secs_f64();
            format!("secs={secs} tokens={tokens} gets={gets} checksum={sum}")
        }
        "merge" => {
            let inputs: Vec<PathBuf> = arg(args, "--inputs")
                .expect("--inputs")
                .split(',')
                .map(PathBuf::from)
                .collect();
            let t = Instant::now();
            let s = merge(&inputs, &prefix).expect("merge");
            let secs = t.elapsed().as_secs_f64();
            format!(
                "secs={secs} tokens={} docs={} bytes={}",
                s.tokens,
                s.documents,
                s.bin_bytes + s.idx_bytes
            )
        }
        other => panic!("unknown phase {other}"),
    }
}

struct Figures(Vec<(String, f64)>);
impl Figures {
    fn get(&self, key: &str) -> f64 {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| *v)
            .unwrap_or(f64::NAN)
    }
}

fn child(phase: &str, prefix: &Path, extra: &[String]) -> Figures {
    let exe = std::env::current_exe().expect("current exe");
    let out = Command::new(exe)
        .args(["--phase", phase, "--prefix"])
        .arg(prefix)
        .args(extra)
        .output()
        .expect("run phase");
    assert!(
        out.status.success(),
        "phase {phase} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8_lossy(&out.stdout);
    Figures(
        line.split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
            .collect(),
    )
}

fn orchestrate(args: &[String]) {
    let tokens = num(args, "--tokens", 100_000_000);
    let base = arg(args, "--dir")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("NEOX_BENCH_DIR").map(PathBuf::from))
        .unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&base).expect("create bench dir");
    let dir = tempfile::tempdir_in(&base).expect("temp dir");
    println!(
        "neox-indexed shard benchmark: {} M u16 tokens per shard, files in {}",
        tokens / 1_000_000,
        dir.path().display()
    );

    let disk = || {
        let f = child(
            "disk",
            &dir.path().join("disk"),
            &["--bytes".into(), (2 * tokens).to_string()],
        );
        mib(f.get("bytes") as u64) / f.get("secs")
    };
    println!(
        "\nplain sequential write + fsync of {:.0} MiB (the disk): {:.0} MiB/s",
        mib(2 * tokens),
        disk()
    );

    println!("\nwrite (IndexedWriter, u16, finish incl. fsync):");
    println!(
        "{:>10} {:>10} {:>10} {:>12} {:>10} {:>12}",
        "documents", "tokens", "seconds", "M tokens/s", "MiB/s", "peak RSS MiB"
    );
    let mut prefixes = Vec::new();
    for docs in [1_000_000u64, 10_000_000] {
        let prefix = dir.path().join(format!("docs{docs}"));
        let f = child(
            "write",
            &prefix,
            &[
                "--docs".into(),
                docs.to_string(),
                "--tokens".into(),
                tokens.to_string(),
            ],
        );
        println!(
            "{:>10} {:>10} {:>10.2} {:>12.1} {:>10.0} {:>12.1}",
            f.get("docs"),
            f.get("tokens"),
            f.get("secs"),
            f.get("tokens") / f.get("secs") / 1e6,
            mib(f.get("bytes") as u64) / f.get("secs"),
            f.get("hwm_kib") / 1024.0
        );
        prefixes.push(prefix);
    }

    println!("\nread (IndexedDataset::get, summing every token; files in the page cache):");
    println!(
        "{:>10} {:>11} {:>10} {:>10} {:>10} {:>12} {:>13} {:>14}",
        "documents",
        "access",
        "gets",
        "seconds",
        "M gets/s",
        "M tokens/s",
        "anon RSS MiB",
        "peak RSS MiB*"
    );
    for prefix in &prefixes {
        let docs = IndexedDataset::open(prefix).expect("open").len();
        for phase in ["sequential", "random"] {
            let f = child(phase, prefix, &["--gets".into(), "2000000".into()]);
            println!(
                "{:>10} {:>11} {:>10} {:>10.2} {:>10.2} {:>12.1} {:>13.1} {:>14.1}",
                docs,
                phase,
                f.get("gets"),
                f.get("secs"),
                f.get("gets") / f.get("secs") / 1e6,
                f.get("tokens") / f.get("secs") / 1e6,
                f.get("anon_kib") / 1024.0,
                f.get("hwm_kib") / 1024.0
            );
        }
    }
    println!(
        "* resident pages of the mapped files count in the peak; they are page cache, not heap"
    );

    println!(
        "plain sequential write + fsync again, after the reads: {:.0} MiB/s",
        disk()
    );

    let merged = dir.path().join("merged");
    let list = prefixes
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(",");
    let f = child("merge", &merged, &["--inputs".into(), list]);
    println!(
        "\nmerge of both shards ({} documents, {:.0} MiB): {:.2} s, {:.0} MiB/s, \
         anon RSS {:.1} MiB (peak RSS incl. the mapped inputs' pages: {:.1} MiB)",
        f.get("docs"),
        mib(f.get("bytes") as u64),
        f.get("secs"),
        mib(f.get("bytes") as u64) / f.get("secs"),
        f.get("anon_kib") / 1024.0,
        f.get("hwm_kib") / 1024.0
    );
    for p in prefixes.iter().chain([&merged]) {
        for path in [bin_path(p), idx_path(p)] {
            let _ = std::fs::remove_file(path);
        }
    }
}
