//! Tensor and pipeline parallelism on this machine's CPU, the 125M config at
//! sequence length 32, micro batch 1, 2 micro batches a step: for tp 1/2 x pp
//! 1/2 (ranks as threads of this process, sharing its cores), each rank's
//! parameter and optimizer-state (Adam's moments) bytes after a real step,
//! and the ms per step of the slowest rank.
//!
//!   cargo bench -p neox-trainer --bench model_parallel

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use burn::module::Module;
use burn::tensor::backend::Backend;
use neox_trainer::NeoxArgs;
use neox_trainer::config::yaml::Options;
use neox_trainer::data::{Batch, TokenWindows};
use neox_trainer::device::Cpu;
use neox_trainer::dist::comm::threads::ThreadComm;
use neox_trainer::dist::{Communicator, GptShard, Parallel, ParamLayout, Topology};
use neox_trainer::model::GptNeox;
use neox_trainer::optim::NeoxOptimizer;

const STEPS: usize = 2;

fn args() -> NeoxArgs {
    let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
    let mut options = Options::read(&[configs.join("125M.yml")]).expect("config reads");
    let overrides = "padded_vocab_size: 50304\nseq_length: 32\nmax_position_embeddings: 32\n\
                     train_micro_batch_size_per_gpu: 1\ngradient_accumulation_steps: 2\n\
                     precision: fp32\nfp16: {enabled: false}\n";
    options
        .merge_str(overrides, Path::new("bench overrides"))
        .expect("overrides parse");
    NeoxArgs::from_options_in(options, 1).expect("config is valid")
}

/// One rank: its parameter bytes, optimizer-state bytes and ms per step.
fn rank(args: &NeoxArgs, world: Arc<dyn Communicator>, topology: Topology) -> (usize, usize, f64) {
    let mut config = args.model.clone();
    config.vocab_size = args.vocab_size().expect("vocab set");
    let device = Default::default();
    let full: GptNeox<Cpu> = {
        // Ranks as threads share the RNG: one draws at a time.
        static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _turn = TURN.lock().unwrap_or_else(|p| p.into_inner());
        Cpu::seed(&device, 1);
        let model = config.init(&device);
        ParamLayout::of::<Cpu, _>(&model);
        model
    };
    let t = &args.training;
    let parallel = Parallel::new(
        &world,
        topology,
        t.zero_stage,
        &full,
        &t.pipe_partition_method,
    )
    .expect("grid");
    let mut model = parallel.shard(&full).expect("split");
    let counted = parallel.counted(&full, &model);
    drop(full);
    let layout = ParamLayout::of::<Cpu, _>(&model);
    let mut optim = NeoxOptimizer::<Cpu, GptShard<Cpu>>::new(&args.optim);
    let tokens: Vec<u32> = (0..4096u32).map(|i| (i * 7919) % 50000).collect();
    let data = TokenWindows::new(tokens, config.seq_length);
    let mut timed = Duration::ZERO;
    for step in 0..=STEPS {
        let batches = (0..t.gradient_accumulation_steps)
            .map(|j| {
                Batch::read(
                    &data,
                    (step * 2 + j) as u64,
                    1,
                    config.seq_length,
                    config.vocab_size,
                    &device,
                )
                .expect("batch")
            })
            .collect();
        let start = Instant::now();
        (model, _) = parallel
            .train_step(
                model,
                &mut optim,
                batches,
                1e-4,
                &layout,
                &counted,
                &device,
                &mut Default::default(),
            )
            .expect("step");
        if step > 0 {
            timed += start.elapsed();
        }
    }
    let params: Vec<_> = layout
        .ids
        .iter()
        .zip(&layout.shapes)
        .map(|(id, s)| (*id, s.len()))
        .collect();
    (
        model.num_params() * 4,
        optim.state_bytes(&params),
        timed.as_secs_f64() * 1e3 / STEPS as f64,
    )
}

fn main() {
    println!(
        "machine: {} CPU threads, backend flex, {} build",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    println!("\n125M config (seq 32, micro batch 1 x 2 per step), ranks as threads");
    println!(
        "{:>3} {:>3} {:>18} {:>18} {:>10}",
        "tp", "pp", "max param MiB/rank", "max optim MiB/rank", "ms/step"
    );
    let a = args();
    for (tp, pp) in [(1, 1), (2, 1), (1, 2), (2, 2)] {
        let world = tp * pp;
        let topology = Topology::new(world, pp, tp).expect("grid");
        let comms = ThreadComm::group(world, Duration::from_secs(600));
        let results: Vec<(usize, usize, f64)> = std::thread::scope(|s| {
            let handles: Vec<_> = comms
                .into_iter()
                .map(|comm| {
                    let a = &a;
                    s.spawn(move || rank(a, Arc::new(comm), topology))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("rank"))
                .collect()
        });
        let mib = |b: usize| b as f64 / (1 << 20) as f64;
        let max = |f: fn(&(usize, usize, f64)) -> usize| results.iter().map(f).max().unwrap_or(0);
        let ms = results.iter().map(|r| r.2).fold(0.0, f64::max);
        println!(
            "{tp:>3} {pp:>3} {:>18.1} {:>18.1} {ms:>10.0}",
            mib(max(|r| r.0)),
            mib(max(|r| r.1))
        );
    }
}
