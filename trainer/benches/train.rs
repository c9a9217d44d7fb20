//! Training throughput on the CPU (flex backend) against transformers +
//! PyTorch, same shapes, same tokens, alternating runs in one invocation:
//! ms per optimizer step, tokens/s, peak RSS and the ratio, at 1 and 2 threads.
//!
//!   cargo bench -p neox-trainer --bench train                     # every shape
//!   cargo bench -p neox-trainer --bench train -- tiny             # shapes by name
//!   cargo bench -p neox-trainer --bench train -- --threads 2 --rounds 3 --steps 10
//!
//! Each measurement is a fresh process (a thread count is fixed per process:
//! `RAYON_NUM_THREADS` for neox, `torch.set_num_threads` for PyTorch), so
//! peak RSS is per run. The PyTorch side runs `scripts/bench_train_torch.py`
//! with `$NEOX_BENCH_PYTHON` (default `python3`) when that Python imports
//! torch and transformers, and is skipped otherwise: nothing here needs Python.
//! neox's step is split into forward + loss, backward and optimizer (global
//! clipping + AdamW: the flat AdamW, or Burn's with `NEOX_BENCH_ADAM=burn`),
//! and the optimizer's CPU ms per step (all threads; less swayed by the load).
//! Tokens are synthetic (the data path is not measured);
//! the first steps are warm-up and not counted.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::ElementConversion;
use burn::tensor::backend::Backend;
use neox_trainer::NeoxArgs;
use neox_trainer::config::yaml::Options;
use neox_trainer::data::{Batch, TokenWindows};
use neox_trainer::device::Cpu;
use neox_trainer::model::GptNeox;
use neox_trainer::optim::{AdamImpl, NeoxOptimizer};

struct Case {
    name: &'static str,
    config: &'static str,
    /// Overrides applied after the config file.
    overrides: &'static str,
    warmup: usize,
    steps: usize,
}

const CASES: [Case; 3] = [
    Case {
        name: "cpu-tiny-gpt2",
        config: "cpu-tiny.yml",
        overrides: "padded_vocab_size: 50304\n",
        warmup: 2,
        steps: 8,
    },
    Case {
        name: "cpu-tiny-char",
        config: "cpu-tiny.yml",
        overrides: "padded_vocab_size: 512\n",
        warmup: 3,
        steps: 20,
    },
    Case {
        name: "125M-seq128",
        config: "125M.yml",
        overrides: "padded_vocab_size: 50304\nseq_length: 128\nmax_position_embeddings: 128\n\
                    train_micro_batch_size_per_gpu: 4\n",
        warmup: 1,
        steps: 3,
    },
];

/// Command-line settings of the parent process.
struct Settings {
    filter: Vec<String>,
    threads: Vec<usize>,
    rounds: usize,
    steps: Option<usize>,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        return child(&args[1..]);
    }
    let settings = parse(&args);
    let python = std::env::var("NEOX_BENCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let torch = Command::new(&python)
        .args(["-c", "import torch, transformers"])
        .output()
        .is_ok_and(|o| o.status.success());
    println!(
        "machine: {} CPUs, load average {}; neox: flex, {} build; PyTorch: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average(),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        if torch {
            python.clone()
        } else {
            format!("skipped ({python} lacks torch or transformers; set NEOX_BENCH_PYTHON)")
        }
    );
    println!(
        "{:<14} {:>3} {:<7} {:>10} {:>9} {:>9} {:>9} {:>9} {:>10} {:>9}",
        "shape",
        "thr",
        "impl",
        "ms/step",
        "fwd+loss",
        "backward",
        "optim",
        "optim CPU",
        "tokens/s",
        "peak RSS"
    );
    for case in CASES.iter().filter(|c| {
        settings.filter.is_empty() || settings.filter.iter().any(|f| c.name.contains(f.as_str()))
    }) {
        let steps = settings.steps.unwrap_or(case.steps);
        for &threads in &settings.threads {
            let (mut neox, mut py) = (Vec::new(), Vec::new());
            for _ in 0..settings.rounds {
                let n = run_neox(case, threads, steps);
                print_row(case.name, threads, "neox", &n);
                neox.push(n.ms);
                if torch {
                    let t = run_torch(&python, case, threads, steps);
                    print_row(case.name, threads, "PyTorch", &t);
                    py.push(t.ms);
                }
            }
            let (neox, py) = (mean(&neox), mean(&py));
            if torch {
                println!(
                    "{:<14} {threads:>3} mean    neox {neox:.1} ms, PyTorch {py:.1} ms: neox takes {:.2}x PyTorch's time (load {})",
                    case.name,
                    neox / py,
                    load_average()
                );
            }
        }
    }
}

fn parse(args: &[String]) -> Settings {
    let mut settings = Settings {
        filter: Vec::new(),
        threads: vec![1, 2],
        rounds: 2,
        steps: None,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || it.next().cloned().unwrap_or_default();
        match arg.as_str() {
            "--threads" => {
                settings.threads = value()
                    .split(',')
                    .map(|n| n.parse().expect("--threads takes e.g. 1,2"))
                    .collect()
            }
            "--rounds" => settings.rounds = value().parse().expect("--rounds takes a count"),
            "--steps" => settings.steps = Some(value().parse().expect("--steps takes a count")),
            a if a.starts_with('-') => {} // cargo bench's own flags (--bench)
            a => settings.filter.push(a.to_string()),
        }
    }
    settings
}

/// One measured run.
struct Run {
    ms: f64,
    /// forward + loss, backward, optimizer, and the optimizer's CPU ms (neox only).
    phases: Option<[f64; 4]>,
    tokens_per_s: f64,
    peak_rss_mb: f64,
}

fn print_row(shape: &str, threads: usize, implementation: &str, run: &Run) {
    let phases = match run.phases {
        Some([f, b, o, c]) => format!("{f:>9.1} {b:>9.1} {o:>9.1} {c:>9.1}"),
        None => format!("{:>9} {:>9} {:>9} {:>9}", "-", "-", "-", "-"),
    };
    println!(
        "{shape:<14} {threads:>3} {implementation:<7} {:>10.1} {phases} {:>10.0} {:>6.0} MB",
        run.ms, run.tokens_per_s, run.peak_rss_mb
    );
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn args_of(case: &Case) -> NeoxArgs {
    let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
    let mut options = Options::read(&[configs.join(case.config)]).expect("config reads");
    options
        .merge_str(case.overrides, Path::new("bench overrides"))
        .expect("overrides parse");
    let mut args = NeoxArgs::from_options(options).expect("config is valid");
    args.model.vocab_size = args.vocab_size().expect("vocab set");
    args
}

fn run_neox(case: &Case, threads: usize, steps: usize) -> Run {
    let exe = std::env::current_exe().expect("own path");
    let out = Command::new(exe)
        .args(["--child", case.name, &steps.to_string()])
        .env("RAYON_NUM_THREADS", threads.to_string())
        .output()
        .expect("bench child starts");
    assert!(
        out.status.success(),
        "neox run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = last_json(&out.stdout);
    let phase = |k: &str| v[k].as_f64().expect("phase");
    Run {
        ms: v["ms_per_step"].as_f64().expect("ms"),
        phases: Some([
            phase("forward_ms"),
            phase("backward_ms"),
            phase("optim_ms"),
            phase("optim_cpu_ms"),
        ]),
        tokens_per_s: v["tokens_per_s"].as_f64().expect("tokens/s"),
        peak_rss_mb: v["peak_rss_kb"].as_f64().expect("rss") / 1024.0,
    }
}

fn run_torch(python: &str, case: &Case, threads: usize, steps: usize) -> Run {
    let args = args_of(case);
    let (m, o) = (&args.model, &args.optim);
    let script: PathBuf =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/bench_train_torch.py");
    let mut cmd = Command::new(python);
    cmd.arg(script)
        .env("OMP_NUM_THREADS", threads.to_string())
        .env("MKL_NUM_THREADS", threads.to_string());
    for (k, v) in [
        ("layers", m.num_layers.to_string()),
        ("hidden", m.hidden_size.to_string()),
        ("heads", m.num_attention_heads.to_string()),
        ("seq", m.seq_length.to_string()),
        ("vocab", m.vocab_size.to_string()),
        ("ffn", m.intermediate_size.to_string()),
        ("micro", args.training.micro_batch_size.to_string()),
        ("steps", steps.to_string()),
        ("warmup", case.warmup.to_string()),
        ("threads", threads.to_string()),
        ("rotary-pct", m.rotary_pct.to_string()),
        ("rotary-base", m.rotary_emb_base.to_string()),
        ("norm-eps", m.norm_eps.to_string()),
        ("lr", "1e-4".into()),
        ("beta1", o.beta1.to_string()),
        ("beta2", o.beta2.to_string()),
        ("eps", o.eps.to_string()),
        ("weight-decay", o.weight_decay.to_string()),
        ("clip", o.gradient_clipping.to_string()),
    ] {
        cmd.args([format!("--{k}"), v]);
    }
    if m.gpt_j_residual {
        cmd.arg("--parallel-residual");
    }
    let out = cmd.output().expect("python starts");
    assert!(
        out.status.success(),
        "PyTorch run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = last_json(&out.stdout);
    Run {
        ms: v["ms_per_step"].as_f64().expect("ms"),
        phases: None,
        tokens_per_s: v["tokens_per_s"].as_f64().expect("tokens/s"),
        peak_rss_mb: v["peak_rss_kb"].as_f64().expect("rss") / 1024.0,
    }
}

fn last_json(stdout: &[u8]) -> serde_json::Value {
    let text = String::from_utf8_lossy(stdout);
    let line = text.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("bench child printed {text:?}: {e}"))
}

/// `--child NAME STEPS`: trains one shape in this process and prints a JSON line.
fn child(args: &[String]) {
    neox_trainer::alloc::keep_freed_memory();
    let case = CASES
        .iter()
        .find(|c| Some(c.name) == args.first().map(String::as_str))
        .expect("known shape");
    let steps: usize = args.get(1).and_then(|s| s.parse().ok()).expect("steps");
    let mut args = args_of(case);
    if std::env::var("NEOX_BENCH_ADAM").as_deref() == Ok("burn") {
        args.optim.adam = AdamImpl::Burn;
    }
    let model_config = args.model.clone();
    let device = Default::default();
    Cpu::seed(&device, 1);
    let mut model: GptNeox<Cpu> = model_config.init(&device);
    let mut optim = NeoxOptimizer::new(&args.optim);
    let (seq, micro) = (model_config.seq_length, args.training.micro_batch_size);
    let vocab = model_config.vocab_size as u32;
    let tokens: Vec<u32> = (0..(micro * (case.warmup + steps) + 1) * seq + 1)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761) % vocab)
        .collect();
    let source = TokenWindows::new(tokens, seq);
    let mut phases = [0.0f64; 3];
    // The optimizer's CPU seconds, all threads (less swayed by the load).
    let mut optim_cpu = 0.0;
    let mut loss = 0.0;
    for step in 0..case.warmup + steps {
        let batch = Batch::read(
            &source,
            (step * micro) as u64,
            micro,
            seq,
            vocab as usize,
            &device,
        )
        .expect("batch");
        // One optimizer step of `train_step` on one rank, split in three
        // (flex computes eagerly: each phase's time is its own).
        let start = Instant::now();
        let l = model.loss(batch.inputs, batch.targets);
        loss = l.clone().into_scalar().elem::<f64>();
        let forward = Instant::now();
        let grads = GradientsParams::from_grads(l.backward(), &model);
        let backward = Instant::now();
        let cpu = cpu_seconds();
        (model, _) = optim.step(1e-4, model, grads);
        let end = Instant::now();
        if step >= case.warmup {
            phases[0] += (forward - start).as_secs_f64();
            phases[1] += (backward - forward).as_secs_f64();
            phases[2] += (end - backward).as_secs_f64();
            optim_cpu += cpu_seconds() - cpu;
        }
    }
    assert!(loss.is_finite(), "loss {loss}");
    let ms = |s: f64| s * 1e3 / steps as f64;
    let per_step: f64 = phases.iter().sum::<f64>() / steps as f64;
    println!(
        "{}",
        serde_json::json!({
            "params": model.num_params(),
            "ms_per_step": per_step * 1e3,
            "forward_ms": ms(phases[0]),
            "backward_ms": ms(phases[1]),
            "optim_ms": ms(phases[2]),
            "optim_cpu_ms": ms(optim_cpu),
            "tokens_per_s": (micro * seq) as f64 / per_step,
            "peak_rss_kb": peak_rss_kb(),
            "loss": loss,
        })
    );
}

/// CPU seconds (user + system) this process has used so far.
fn cpu_seconds() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes the struct it is handed (zeroed: valid either way).
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// This process's peak resident set (`VmHWM`), in KiB.
fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}
