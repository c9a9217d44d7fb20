//! The plan's activation estimate against what the CPU backend really keeps.
//!
//! How it is measured: this test binary counts every heap byte through its
//! own global allocator (current and peak). After a warm-up step, the bytes
//! still held when the forward pass has returned the loss are what the
//! autodiff graph saved for the backward pass: the activations. The peak
//! during the backward pass, less the gradients it produced, is reported too.
//! Korthikanti et al.'s formula counts what Megatron saves; neox's CPU ops
//! save other things (the fused attention softmax only its probabilities,
//! the fused linear layers their inputs, f32 everywhere), so the test states
//! the margin it holds to: measured 0.61x to 0.98x held after the forward
//! pass and 0.76x to 0.78x at the backward pass's peak less the gradients on
//! the shapes below (before the fused softmax and linear layers: 1.39x to
//! 1.60x and up to 2.52x).

use std::alloc::{GlobalAlloc, Layout as Alloc, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use burn::module::Module;
use burn::tensor::{Int, Tensor, TensorData};
use neox_trainer::device::Cpu;
use neox_trainer::plan::params::tensors;
use neox_trainer::plan::{Keeper, Layout, Precision, memory};
use neox_trainer::{GptNeox, NeoxArgs};

mod common;

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(bytes: usize) {
    let now = CURRENT.fetch_add(bytes, Ordering::SeqCst) + bytes;
    PEAK.fetch_max(now, Ordering::SeqCst);
}

// SAFETY: every call is passed to the system allocator unchanged; only counts are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Alloc) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Alloc) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Alloc) {
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::SeqCst);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Alloc, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            CURRENT.fetch_sub(layout.size(), Ordering::SeqCst);
            grew(new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn args(extra: &str) -> NeoxArgs {
    let base = "
num_layers: 2
num_attention_heads: 4
pos_emb: rotary
no_weight_tying: true
optimizer: {type: Adam, params: {lr: 0.01}}
train_iters: 1
hidden_dropout: 0.0
attention_dropout: 0.0
";
    common::neox_args(base, extra, 1)
}

/// (bytes held after the forward pass, peak during backward less the gradients).
fn measure(a: &NeoxArgs) -> (u64, u64) {
    let device = Default::default();
    let model: GptNeox<Cpu> = a.model.init(&device);
    let (b, t, v) = (
        a.training.micro_batch_size,
        a.model.seq_length,
        a.model.vocab_size as i64,
    );
    let ids = |shift: i64| {
        let x: Vec<i64> = (0..(b * t) as i64).map(|i| (i * 7 + shift) % v).collect();
        Tensor::<Cpu, 2, Int>::from_data(TensorData::new(x, [b, t]), &device)
    };
    let grad_bytes = 4 * model.num_params() as u64;
    let mut result = (0, 0);
    // The first round warms the backend's pools and caches up; the second is measured.
    for _ in 0..2 {
        let (inputs, targets) = (ids(0), ids(1));
        let base = CURRENT.load(Ordering::SeqCst);
        PEAK.store(base, Ordering::SeqCst);
        let loss = model.loss(inputs, targets);
        let held = CURRENT.load(Ordering::SeqCst).saturating_sub(base) as u64;
        let grads = loss.backward();
        let peak = PEAK.load(Ordering::SeqCst).saturating_sub(base) as u64;
        drop(grads);
        result = (held, peak.saturating_sub(grad_bytes));
    }
    result
}

#[test]
fn activations_are_within_the_stated_margin_of_the_measured() {
    // Shapes where the layers' sbh term, the attention's as^2 term and the
    // output's logits each weigh in.
    for shape in [
        "hidden_size: 128\nseq_length: 128\ntrain_micro_batch_size_per_gpu: 4\npadded_vocab_size: 256\n",
        "hidden_size: 64\nseq_length: 256\ntrain_micro_batch_size_per_gpu: 2\npadded_vocab_size: 128\n",
        "hidden_size: 256\nseq_length: 64\ntrain_micro_batch_size_per_gpu: 8\npadded_vocab_size: 2048\n",
    ] {
        let a = args(shape);
        let layout = Layout {
            pp: 1,
            dp: 1,
            tp: 1,
            zero: 0,
            offload: false,
            onebit: false,
            precision: Precision::Fp32,
            keeper: Keeper::NeoxTrain,
            checkpoint_activations: false,
            checkpoint_num_layers: 1,
            partition_activations: false,
            micro_batch: a.training.micro_batch_size,
            grad_accum: 1,
        };
        let estimate = memory::per_rank(&a.model, &tensors(&a.model), &layout).activations_full;
        let (held, peak) = measure(&a);
        let ratio = held as f64 / estimate as f64;
        eprintln!(
            "{}: estimate {estimate} B, held after forward {held} B ({ratio:.2}x), \
             backward peak less gradients {peak} B ({:.2}x)",
            shape.replace('\n', " "),
            peak as f64 / estimate as f64
        );
        // Held: between 0.5x and 1.8x the estimate; the backward peak within 3x
        // (less the gradients it can be below what the forward pass held: the
        // fused loss frees its saved softmax as it writes the logits' gradient).
        assert!((0.5..=1.8).contains(&ratio), "{shape}: {ratio}");
        assert!(peak > 0 && peak <= 3 * estimate, "{shape}: {peak}");
    }
}
