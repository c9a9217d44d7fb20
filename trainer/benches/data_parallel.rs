//! Data parallelism on this machine's CPU:
//!
//! 1. `steps`: ms per step and peak RSS of each rank for `configs/cpu-tiny.yml`
//!    (GPT-2 vocabulary) at dp 1 and dp 2, the ranks being processes (this
//!    program started again) that talk over TCP on 127.0.0.1; each rank
//!    trains micro batch 8, so dp 2 does twice the work per step.
//! 2. `zero`: optimizer-state bytes per rank for the 125M config at ZeRO
//!    0/1/2 and dp 1/2/4 (ranks as threads), read off the optimizer's tensors
//!    after one real step.
//!
//!   cargo bench -p neox-trainer --bench data_parallel            # both
//!   cargo bench -p neox-trainer --bench data_parallel -- steps   # one part

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use burn::tensor::backend::Backend;
use neox_trainer::NeoxArgs;
use neox_trainer::config::yaml::Options;
use neox_trainer::data::{Batch, TokenWindows};
use neox_trainer::device::Cpu;
use neox_trainer::dist::comm::tcp::{TcpComm, TcpConfig};
use neox_trainer::dist::comm::threads::ThreadComm;
use neox_trainer::dist::{Communicator, DataParallel, ParamLayout, ZeroStage};
use neox_trainer::model::GptNeox;
use neox_trainer::optim::NeoxOptimizer;
use neox_trainer::train::{StepMode, train_step};

const WARMUP: usize = 3;
const STEPS: usize = 10;

fn main() {
    if let Ok(rank) = std::env::var("NEOX_BENCH_RANK") {
        return rank_process(rank.parse().expect("rank"));
    }
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wants = |name: &str| filter.is_empty() || filter.iter().any(|f| f == name);
    println!(
        "machine: {} CPU threads, backend flex, {} build",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    if wants("steps") {
        steps();
    }
    if wants("zero") {
        zero();
    }
}

fn args(config: &str, overrides: &str, world: usize) -> NeoxArgs {
    let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
    let mut options = Options::read(&[configs.join(config)]).expect("config reads");
    options
        .merge_str(overrides, Path::new("bench overrides"))
        .expect("overrides parse");
    NeoxArgs::from_options_in(options, world).expect("config is valid")
}

/// Runs `steps` optimizer steps of one rank; returns the mean ms of the timed ones.
fn train(
    args: &NeoxArgs,
    dp: &DataParallel,
    warmup: usize,
    steps: usize,
) -> (f64, NeoxOptimizer<Cpu, GptNeox<Cpu>>, ParamLayout) {
    let mut config = args.model.clone();
    config.vocab_size = args.vocab_size().expect("vocab set");
    let device = Default::default();
    Cpu::seed(&device, 1);
    let model: GptNeox<Cpu> = config.init(&device);
    let mut model = dp.sync_model(model, &device).expect("sync");
    let layout = ParamLayout::of::<Cpu, _>(&model);
    let mut optim = NeoxOptimizer::new(&args.optim);
    let (seq, micro) = (config.seq_length, args.training.micro_batch_size);
    let vocab = config.vocab_size as u32;
    let samples = micro * dp.size() * (warmup + steps);
    let tokens: Vec<u32> = (0..(samples + 1) * seq + 1)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761) % vocab)
        .collect();
    let source = TokenWindows::new(tokens, seq);
    let mut timed = 0.0;
    for step in 0..warmup + steps {
        let first = dp.micro_batch_start((step * micro * dp.size()) as u64, 0, micro);
        let batch =
            Batch::read(&source, first, micro, seq, vocab as usize, &device).expect("batch");
        let start = Instant::now();
        let stats;
        (model, stats) = train_step(
            model,
            &mut optim,
            vec![batch],
            1e-4,
            dp,
            &layout,
            &device,
            &mut StepMode::default(),
        )
        .expect("step");
        assert!(stats.loss.is_finite());
        if step >= warmup {
            timed += start.elapsed().as_secs_f64();
        }
    }
    (timed * 1e3 / steps.max(1) as f64, optim, layout)
}

/// Peak resident memory of this process, from /proc (Linux), in MiB.
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

const TINY: &str = "padded_vocab_size: 50304\n";

/// One rank of the `steps` part, started by [`steps`].
fn rank_process(rank: usize) {
    let world: usize = std::env::var("WORLD_SIZE")
        .expect("WORLD_SIZE")
        .parse()
        .expect("world");
    let port: u16 = std::env::var("MASTER_PORT")
        .expect("MASTER_PORT")
        .parse()
        .expect("port");
    let comm = TcpComm::connect(TcpConfig {
        rank,
        world,
        master_addr: "127.0.0.1".into(),
        master_port: port,
        timeout: Duration::from_secs(120),
    })
    .expect("rendezvous");
    let dp = DataParallel::new(Arc::new(comm), ZeroStage::Off);
    let (ms, _, _) = train(&args("cpu-tiny.yml", TINY, world), &dp, WARMUP, STEPS);
    println!("RESULT {rank} {ms} {}", peak_rss_mib());
}

fn steps() {
    println!("\ncpu-tiny (GPT-2 vocab 50304), micro batch 8 x 64 per rank, {STEPS} timed steps");
    println!(
        "{:>3} {:>5} {:>11} {:>14} {:>13}",
        "dp", "rank", "ms/step", "samples/s (all)", "peak RSS MiB"
    );
    let (ms, _, _) = train(
        &args("cpu-tiny.yml", TINY, 1),
        &DataParallel::single(),
        WARMUP,
        STEPS,
    );
    println!(
        "{:>3} {:>5} {:>11.1} {:>14.1} {:>13.0}",
        1,
        0,
        ms,
        8e3 / ms,
        peak_rss_mib()
    );
    let world = 2;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let exe = std::env::current_exe().expect("own path");
    let children: Vec<_> = (0..world)
        .map(|rank| {
            Command::new(&exe)
                .env("NEOX_BENCH_RANK", rank.to_string())
                .env("WORLD_SIZE", world.to_string())
                .env("MASTER_PORT", port.to_string())
                .stdout(Stdio::piped())
                .spawn()
                .expect("start a rank")
        })
        .collect();
    let mut rows = Vec::new();
    for child in children {
        let out = child.wait_with_output().expect("rank ran");
        assert!(out.status.success(), "a rank failed");
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some(rest) = line.strip_prefix("RESULT ") {
                let v: Vec<f64> = rest
                    .split(' ')
                    .map(|x| x.parse().unwrap_or(f64::NAN))
                    .collect();
                rows.push(v);
            }
        }
    }
    for v in rows {
        println!(
            "{:>3} {:>5} {:>11.1} {:>14.1} {:>13.0}",
            world,
            v[0],
            v[1],
            8e3 * world as f64 / v[1],
            v[2]
        );
    }
}

fn zero() {
    println!(
        "\n125M config (seq 32, micro batch 1): optimizer-state bytes per rank after one step"
    );
    println!(
        "{:>5} {:>3} {:>16} {:>16} {:>10}",
        "ZeRO", "dp", "max MiB/rank", "sum MiB", "ms/step"
    );
    let overrides = "padded_vocab_size: 50304\nseq_length: 32\nmax_position_embeddings: 32\n\
                     train_micro_batch_size_per_gpu: 1\ngradient_accumulation_steps: 1\n";
    for stage in [0, 1, 2] {
        for world in [1usize, 2, 4] {
            let a = args(
                "125M.yml",
                &format!("{overrides}zero_optimization: {{stage: {stage}}}\n"),
                world,
            );
            let zero = a.training.zero_stage;
            let comms = ThreadComm::group(world, Duration::from_secs(600));
            let results: Vec<(usize, f64)> = std::thread::scope(|s| {
                let handles: Vec<_> = comms
                    .into_iter()
                    .map(|comm| {
                        let a = &a;
                        s.spawn(move || {
                            let dp =
                                DataParallel::new(Arc::new(comm) as Arc<dyn Communicator>, zero);
                            let (ms, optim, layout) = train(a, &dp, 0, 1);
                            let params: Vec<_> = layout
                                .ids
                                .iter()
                                .zip(&layout.shapes)
                                .map(|(id, s)| (*id, s.len()))
                                .collect();
                            (optim.state_bytes(&params), ms)
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("rank"))
                    .collect()
            });
            let max = results.iter().map(|r| r.0).max().unwrap_or(0);
            let sum: usize = results.iter().map(|r| r.0).sum();
            let ms = results.iter().map(|r| r.1).fold(0.0, f64::max);
            let mib = |b: usize| b as f64 / (1 << 20) as f64;
            println!(
                "{stage:>5} {world:>3} {:>16.1} {:>16.1} {ms:>10.0}",
                mib(max),
                mib(sum)
            );
        }
    }
}
