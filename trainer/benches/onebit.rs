//! 1-bit Adam against Adam on 2 data-parallel ranks: bytes each rank hands
//! the communicator per step (counted by `CountingComm`) and ms per step, for
//! `configs/cpu-tiny.yml` with the GPT-2 vocabulary (13.3M parameters). The
//! ranks are threads of this process connected over TCP on 127.0.0.1.
//! 1-bit Adam runs with `freeze_step: 2`: its first step initialises, the
//! second is Adam, the timed ones compress.
//!
//!   cargo bench -p neox-trainer --bench onebit

use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use burn::tensor::backend::Backend;
use neox_trainer::NeoxArgs;
use neox_trainer::config::yaml::Options;
use neox_trainer::data::{Batch, TokenWindows};
use neox_trainer::device::Cpu;
use neox_trainer::dist::comm::counting::CountingComm;
use neox_trainer::dist::comm::tcp::{TcpComm, TcpConfig};
use neox_trainer::dist::{DataParallel, ParamLayout, ZeroStage};
use neox_trainer::model::GptNeox;
use neox_trainer::optim::NeoxOptimizer;
use neox_trainer::train::{StepMode, train_step};

const WARMUP: usize = 3;
const STEPS: usize = 4;
const RANKS: usize = 2;

fn args(optimizer: &str) -> NeoxArgs {
    let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
    let mut options = Options::read(&[configs.join("cpu-tiny.yml")]).expect("config reads");
    options
        .merge_str(
            &format!("padded_vocab_size: 50304\n{optimizer}"),
            Path::new("bench overrides"),
        )
        .expect("overrides parse");
    NeoxArgs::from_options_in(options, RANKS).expect("config is valid")
}

/// One rank: (bytes per timed step, ms per timed step, parameters).
fn rank(args: &NeoxArgs, comm: TcpComm) -> (u64, f64, usize) {
    let counting = Arc::new(CountingComm::new(Arc::new(comm)));
    let dp = DataParallel::new(counting.clone(), ZeroStage::Off);
    let mut config = args.model.clone();
    config.vocab_size = args.vocab_size().expect("vocab set");
    let device = Default::default();
    Cpu::seed(&device, 1);
    let model: GptNeox<Cpu> = config.init(&device);
    ParamLayout::of::<Cpu, _>(&model);
    let mut model = dp.sync_model(model, &device).expect("sync");
    let layout = ParamLayout::of::<Cpu, _>(&model);
    let mut optim = NeoxOptimizer::new(&args.optim);
    let (seq, micro) = (config.seq_length, args.training.micro_batch_size);
    let vocab = config.vocab_size as u32;
    let samples = micro * RANKS * (WARMUP + STEPS);
    let tokens: Vec<u32> = (0..(samples + 1) * seq + 1)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761) % vocab)
        .collect();
    let source = TokenWindows::new(tokens, seq);
    let (mut ms, mut bytes) = (0.0, 0);
    for step in 0..WARMUP + STEPS {
        let first = dp.micro_batch_start((step * micro * RANKS) as u64, 0, micro);
        let batch =
            Batch::read(&source, first, micro, seq, vocab as usize, &device).expect("batch");
        let (start, sent) = (Instant::now(), counting.sent());
        let stats;
        (model, stats) = train_step(
            model,
            &mut optim,
            vec![batch],
            1e-4,
            &dp,
            &layout,
            &device,
            &mut StepMode::default(),
        )
        .expect("step");
        assert!(stats.loss.is_finite());
        if step >= WARMUP {
            ms += start.elapsed().as_secs_f64() * 1e3;
            bytes += counting.sent() - sent;
        }
    }
    (bytes / STEPS as u64, ms / STEPS as f64, layout.total())
}

fn free_port() -> u16 {
    (20_000..32_000)
        .map(|p| p + (std::process::id() % 1000) as u16)
        .find(|&p| TcpListener::bind(("127.0.0.1", p)).is_ok())
        .expect("a free port")
}

fn run(args: &NeoxArgs) -> Vec<(u64, f64, usize)> {
    let port = free_port();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..RANKS)
            .map(|r| {
                s.spawn(move || {
                    let comm = TcpComm::connect(TcpConfig {
                        rank: r,
                        world: RANKS,
                        master_addr: "127.0.0.1".into(),
                        master_port: port,
                        timeout: Duration::from_secs(600),
                    })
                    .expect("rendezvous");
                    rank(args, comm)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("rank"))
            .collect()
    })
}

fn main() {
    println!(
        "machine: {} CPU threads, backend flex, {} build; {RANKS} ranks over TCP (threads), \
         {STEPS} timed steps after {WARMUP}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    let adam = "optimizer: {type: Adam, params: {lr: 0.002, betas: [0.9, 0.95]}}\n";
    let onebit =
        "optimizer: {type: OneBitAdam, params: {lr: 0.002, betas: [0.9, 0.95], freeze_step: 2}}\n";
    println!("| optimizer | parameters | bytes per step per rank | ms per step |");
    println!("|---|---|---|---|");
    let mut sent = Vec::new();
    for (name, optimizer) in [("Adam (f32 all-reduce)", adam), ("1-bit Adam", onebit)] {
        let ranks = run(&args(optimizer));
        let (bytes, _, params) = ranks[0];
        let ms = ranks.iter().map(|r| r.1).fold(0.0, f64::max);
        println!("| {name} | {params} | {bytes} | {ms:.0} |");
        sent.push(bytes);
    }
    println!(
        "1-bit Adam hands the communicator {:.1}x fewer bytes per step",
        sent[0] as f64 / sent[1] as f64
    );
}
