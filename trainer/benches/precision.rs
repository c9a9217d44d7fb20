//! Mixed precision and activation checkpointing on the CPU (flex backend):
//! ms per optimizer step and peak heap bytes for f32 / bf16 / fp16, each
//! with and without activation checkpointing (every layer), at
//! `configs/cpu-tiny.yml` and at the 125M shape (`configs/125M.yml`) with a
//! short sequence.
//!
//!   cargo bench -p neox-trainer --bench precision            # all
//!   cargo bench -p neox-trainer --bench precision -- tiny    # shapes by name
//!   cargo bench -p neox-trainer --bench precision -- 125M bf16   # and types
//!
//! Memory is counted by this program's allocator: "resident" is the heap
//! before the timed steps (weights, optimizer state, data), "peak" the most
//! the steps held at once; their difference is what a step adds
//! (activations, gradients, the half-precision copy). Steps run on synthetic
//! tokens; the first is warm-up and not counted.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use burn::tensor::backend::Backend;
use neox_trainer::NeoxArgs;
use neox_trainer::config::yaml::Options;
use neox_trainer::data::{Batch, TokenWindows};
use neox_trainer::device::Cpu;
use neox_trainer::dist::{DataParallel, ParamLayout};
use neox_trainer::model::GptNeox;
use neox_trainer::optim::NeoxOptimizer;
use neox_trainer::precision::MixedPrecision;
use neox_trainer::train::{StepMode, train_step};

/// The system allocator, counting the bytes held now and at most.
struct Counting;

static HELD: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(bytes: usize) {
    let now = HELD.fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        unsafe { System.dealloc(p, layout) };
        HELD.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let q = unsafe { System.realloc(p, layout, new_size) };
        if !q.is_null() {
            HELD.fetch_sub(layout.size(), Ordering::Relaxed);
            grew(new_size);
        }
        q
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

struct Shape {
    name: &'static str,
    config: &'static str,
    overrides: &'static str,
    steps: usize,
}

const PRECISIONS: [(&str, &str); 3] = [
    ("f32", "fp16: {enabled: false}\n"),
    ("bf16", "bf16: {enabled: true}\nfp16: {enabled: false}\n"),
    ("fp16", "fp16: {enabled: true}\n"),
];

fn main() {
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let shapes = [
        Shape {
            name: "cpu-tiny (vocab 512, micro batch 8, seq 64)",
            config: "cpu-tiny.yml",
            overrides: "padded_vocab_size: 512\n",
            steps: 10,
        },
        Shape {
            name: "125M-shaped (vocab 50304, micro batch 4, seq 128)",
            config: "125M.yml",
            overrides: "padded_vocab_size: 50304\nseq_length: 128\nmax_position_embeddings: 128\n\
                        train_micro_batch_size_per_gpu: 4\n",
            steps: 1,
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
    let types: Vec<&String> = filter
        .iter()
        .filter(|f| PRECISIONS.iter().any(|(name, _)| name == f))
        .collect();
    let shape_filter: Vec<&String> = filter.iter().filter(|f| !types.contains(f)).collect();
    for shape in shapes.iter().filter(|s| {
        shape_filter.is_empty() || shape_filter.iter().any(|f| s.name.contains(f.as_str()))
    }) {
        println!("{}", shape.name);
        println!(
            "  {:<6} {:<14} {:>10} {:>14} {:>12} {:>14}",
            "type", "checkpointing", "ms/step", "resident MiB", "peak MiB", "step adds MiB"
        );
        for (precision, yaml) in PRECISIONS {
            if !types.is_empty() && !types.iter().any(|t| *t == precision) {
                continue;
            }
            for checkpointing in [false, true] {
                run(shape, precision, yaml, checkpointing);
            }
        }
    }
}

fn run(shape: &Shape, precision: &str, yaml: &str, checkpointing: bool) {
    let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
    let mut options = Options::read(&[configs.join(shape.config)]).expect("config reads");
    let overrides = format!(
        "{}{yaml}checkpoint_activations: {checkpointing}\ncheckpoint_num_layers: 1\n",
        shape.overrides
    );
    options
        .merge_str(&overrides, Path::new("bench overrides"))
        .expect("overrides parse");
    let args = NeoxArgs::from_options(options).expect("config is valid");
    let mut config = args.model.clone();
    config.vocab_size = args.vocab_size().expect("vocab set");
    let device = Default::default();
    Cpu::seed(&device, 1);
    let mut model: GptNeox<Cpu> = config.init(&device);
    let layout = ParamLayout::of::<Cpu, _>(&model);
    let mut optim = NeoxOptimizer::new(&args.optim);
    let mut mode = StepMode {
        precision: MixedPrecision::new(&args.precision),
        recompute: args.training.checkpoint_layers,
    };
    let (seq, micro) = (config.seq_length, args.training.micro_batch_size);
    let vocab = config.vocab_size;
    let tokens: Vec<u32> = (0..(micro * (shape.steps + 1) + 1) * seq + 1)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761) % vocab as u32)
        .collect();
    let source = TokenWindows::new(tokens, seq);
    let dp = DataParallel::single();
    let (mut timed, mut resident) = (0.0, 0);
    for step in 0..=shape.steps {
        let batch =
            Batch::read(&source, (step * micro) as u64, micro, seq, vocab, &device).expect("batch");
        if step == 1 {
            // After the warm-up step: weights and Adam state exist.
            resident = HELD.load(Ordering::Relaxed);
            PEAK.store(resident, Ordering::Relaxed);
        }
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
            &mut mode,
        )
        .expect("step");
        assert!(stats.loss.is_finite());
        if step >= 1 {
            timed += start.elapsed().as_secs_f64();
        }
    }
    let peak = PEAK.load(Ordering::Relaxed);
    let mib = |b: usize| b as f64 / (1024.0 * 1024.0);
    println!(
        "  {:<6} {:<14} {:>10.1} {:>14.1} {:>12.1} {:>14.1}",
        precision,
        if checkpointing { "every layer" } else { "off" },
        timed / shape.steps as f64 * 1e3,
        mib(resident),
        mib(peak),
        mib(peak - resident)
    );
}
