//! Training throughput on the CPU (flex backend): ms per optimizer step,
//! tokens/s and achieved FLOP/s for `configs/cpu-tiny.yml` and for a
//! 125M-shaped model (`configs/125M.yml`) at a short sequence length.
//!
//!   cargo bench -p neox-trainer --bench train            # both
//!   cargo bench -p neox-trainer --bench train -- tiny    # one, by name
//!
//! Steps run on synthetic tokens (the data path is not what is measured);
//! the first steps are warm-up and not counted.

use std::path::Path;
use std::time::Instant;

use burn::tensor::backend::Backend;
use neox_trainer::NeoxArgs;
use neox_trainer::config::yaml::Options;
use neox_trainer::data::{Batch, TokenWindows};
use neox_trainer::device::Cpu;
use neox_trainer::dist::{DataParallel, ParamLayout};
use neox_trainer::model::GptNeox;
use neox_trainer::optim::NeoxOptimizer;
use neox_trainer::train::{StepMode, train_step};

struct Case {
    name: &'static str,
    config: &'static str,
    /// Overrides applied after the config file.
    overrides: &'static str,
    warmup: usize,
    steps: usize,
}

fn main() {
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let cases = [
        Case {
            name: "cpu-tiny (GPT-2 vocab 50304)",
            config: "cpu-tiny.yml",
            overrides: "padded_vocab_size: 50304\n",
            warmup: 3,
            steps: 20,
        },
        Case {
            name: "cpu-tiny (char-level vocab 512)",
            config: "cpu-tiny.yml",
            overrides: "padded_vocab_size: 512\n",
            warmup: 3,
            steps: 30,
        },
        Case {
            name: "125M-shaped, seq 128, micro batch 4",
            config: "125M.yml",
            overrides: "padded_vocab_size: 50304\nseq_length: 128\nmax_position_embeddings: 128\n",
            warmup: 1,
            steps: 4,
        },
    ];
    println!(
        "machine: {} CPU threads (rayon), backend flex, {} build",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    for case in cases
        .iter()
        .filter(|c| filter.is_empty() || filter.iter().any(|f| c.name.contains(f.as_str())))
    {
        run(case);
    }
}

fn run(case: &Case) {
    let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
    let mut options = Options::read(&[configs.join(case.config)]).expect("config reads");
    options
        .merge_str(case.overrides, Path::new("bench overrides"))
        .expect("overrides parse");
    let args = NeoxArgs::from_options(options).expect("config is valid");
    let mut model_config = args.model.clone();
    model_config.vocab_size = args.vocab_size().expect("vocab set");
    let device = Default::default();
    Cpu::seed(&device, 1);
    let mut model: GptNeox<Cpu> = model_config.init(&device);
    let mut optim = NeoxOptimizer::new(&args.optim);
    let (seq, micro) = (model_config.seq_length, args.training.micro_batch_size);
    let vocab = model_config.vocab_size as u32;
    let tokens: Vec<u32> = (0..(micro * (case.warmup + case.steps) + 1) * seq + 1)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761) % vocab)
        .collect();
    let source = TokenWindows::new(tokens, seq);
    let params: usize = burn::module::Module::num_params(&model);
    let (dp, layout) = (DataParallel::single(), ParamLayout::of::<Cpu, _>(&model));
    let mut timed = 0.0;
    for step in 0..case.warmup + case.steps {
        let batch = Batch::read(
            &source,
            (step * micro) as u64,
            micro,
            seq,
            vocab as usize,
            &device,
        )
        .expect("batch");
        let start = Instant::now();
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
        if step >= case.warmup {
            timed += start.elapsed().as_secs_f64();
        }
    }
    let per_step = timed / case.steps as f64;
    let tokens_per_step = (micro * seq) as f64;
    let flops = model_config.train_flops_per_token() * tokens_per_step / per_step;
    println!(
        "{:<38} params {:>6.1}M  batch {micro}x{seq}  {:>9.1} ms/step  {:>9.0} tokens/s  {:>6.2} GFLOP/s",
        case.name,
        params as f64 / 1e6,
        per_step * 1e3,
        tokens_per_step / per_step,
        flops / 1e9
    );
}
