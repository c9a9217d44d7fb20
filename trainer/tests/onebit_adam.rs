//! 1-bit Adam (DeepSpeed's `OnebitAdam`) on thread ranks: before
//! `freeze_step` it is data-parallel Adam (no bias correction), equal to one
//! device bit for bit; after, the momenta travel compressed, the model still
//! trains close to the uncompressed rule, the communicator carries over 16x
//! fewer bytes per step, and a checkpoint resumes bit for bit.

use std::path::Path;
use std::sync::Arc;

use neox_trainer::data::Batch;
use neox_trainer::device::Cpu;
use neox_trainer::dist::comm::counting::CountingComm;
use neox_trainer::dist::{DataParallel, ParamLayout, ZeroStage};
use neox_trainer::metrics::Record;
use neox_trainer::optim::NeoxOptimizer;
use neox_trainer::train::{self, StepMode};
use neox_trainer::{GptNeox, NeoxArgs};

mod common;
use common::{
    checkpoint_parameters, copy_checkpoint, logged_numbers, metrics_in, neox_args, on_thread_ranks,
    one_run_at_a_time, splits, train_data_parallel,
};

const MODEL: &str = "
num_layers: 2
hidden_size: 32
num_attention_heads: 4
seq_length: 16
pos_emb: rotary
rotary_pct: 0.5
padded_vocab_size: 32
no_weight_tying: true
init_method: small_init
output_layer_init_method: wang_init
lr_decay_style: constant
weight_decay: 0.1
hidden_dropout: 0.0
attention_dropout: 0.0
train_micro_batch_size_per_gpu: 2
log_interval: 1
";

fn onebit(freeze_step: u64) -> String {
    format!(
        "optimizer: {{type: OneBitAdam, params: {{lr: 0.005, betas: [0.9, 0.95], \
         weight_decay: 0.01, freeze_step: {freeze_step}, cuda_aware: false, \
         comm_backend_name: nccl}}}}\n"
    )
}

/// Adam with about the schedule GPT-NeoX gives 1-bit Adam (DeepSpeed's
/// WarmupDecayLR: here 2 warmup steps, then linear to 0 at `train_iters`).
const ADAM: &str = "optimizer: {type: Adam, params: {lr: 0.005, betas: [0.9, 0.95]}}\n\
                    lr_decay_style: linear\nwarmup: 0.0\n";

fn args(extra: &str, world: usize) -> NeoxArgs {
    neox_args(MODEL, extra, world)
}

/// Trains on `ranks` threads (one device when 1).
fn run(extra: &str, ranks: usize) {
    train_data_parallel(&args(extra, ranks), ranks).unwrap_or_else(|e| panic!("{e}"));
}

fn valid_losses(dir: &Path) -> Vec<f64> {
    logged_numbers(dir)
        .into_iter()
        .filter(|r| r.0 == "valid")
        .map(|r| r.2)
        .collect()
}

/// Every parameter of the checkpoint `latest` names in `dir`, in order.
fn parameters(dir: &Path, extra: &str) -> Vec<Vec<f32>> {
    checkpoint_parameters(dir, &args(extra, 1))
}

#[test]
fn before_freeze_step_two_ranks_equal_one_device_bit_for_bit() {
    let _serial = one_run_at_a_time();
    // Clipping at 0.05 is active on these steps (checked below).
    let common = format!(
        "{}train_iters: 6\ngradient_clipping: 0.05\neval_interval: 3\neval_iters: 2\n",
        onebit(100)
    );
    let one = tempfile::tempdir().unwrap();
    let one_cfg = format!(
        "{common}gradient_accumulation_steps: 2\nsave: {}\n",
        one.path().display()
    );
    run(&one_cfg, 1);
    let two = tempfile::tempdir().unwrap();
    run(&format!("{common}save: {}\n", two.path().display()), 2);
    let (a, b) = (logged_numbers(one.path()), logged_numbers(two.path()));
    assert_eq!(a, b);
    assert!(
        a.iter()
            .filter(|r| r.0 == "train")
            .all(|r| r.3 > 0.05 && r.3.is_finite()),
        "{a:?}"
    );
    let (pa, pb) = (
        parameters(one.path(), &one_cfg),
        parameters(two.path(), &one_cfg),
    );
    assert!(pa == pb, "parameters differ");
}

#[test]
fn compressed_training_stays_close_to_uncompressed_and_adam() {
    let _serial = one_run_at_a_time();
    let common = "train_iters: 150\neval_interval: 50\neval_iters: 8\ngradient_clipping: 1.0\n";
    let mut finals = Vec::new();
    for (name, optimizer) in [
        ("1-bit Adam, freeze_step 20", onebit(20)),
        ("1-bit Adam uncompressed", onebit(1_000)),
        ("Adam (Burn's AdamW)", ADAM.to_string()),
    ] {
        let dir = tempfile::tempdir().unwrap();
        run(
            &format!("{optimizer}{common}save: {}\n", dir.path().display()),
            2,
        );
        let valid = valid_losses(dir.path());
        eprintln!("{name}: validation losses {valid:?}");
        assert_eq!(valid.len(), 3, "{name}");
        finals.push(valid[2]);
    }
    let (compressed, uncompressed, adam) = (finals[0], finals[1], finals[2]);
    // Trained: ln 32 = 3.47 nats is the uniform guess.
    assert!(compressed < 2.0, "1-bit Adam did not train: {compressed}");
    assert!(
        (compressed - uncompressed).abs() < 0.05,
        "compressed {compressed} vs uncompressed {uncompressed}"
    );
    assert!(
        (compressed - adam).abs() < 0.1,
        "compressed {compressed} vs Adam {adam}"
    );
}

#[test]
fn compressed_steps_hand_the_communicator_16x_fewer_bytes() {
    let _serial = one_run_at_a_time();
    let a = args(&format!("{}train_iters: 8\n", onebit(3)), 2);
    let data = splits();
    let per_rank: Vec<(Vec<u64>, usize)> = on_thread_ranks(2, |comm| {
        let counting = Arc::new(CountingComm::new(Arc::new(comm)));
        let dp = DataParallel::new(counting.clone(), ZeroStage::Off);
        let device = Default::default();
        let mut config = a.model.clone();
        config.vocab_size = 32;
        let model: GptNeox<Cpu> = config.init(&device);
        ParamLayout::of::<Cpu, _>(&model);
        let mut model = dp.sync_model(model, &device).unwrap();
        let layout = ParamLayout::of::<Cpu, _>(&model);
        let mut optim = NeoxOptimizer::new(&a.optim);
        let mut mode = StepMode::default();
        let mut bytes = Vec::new();
        for step in 0..6u64 {
            let first = dp.micro_batch_start(step * 4, 0, 2);
            let batch = Batch::read(data.train.as_ref(), first, 2, 16, 32, &device).unwrap();
            let before = counting.sent();
            let stats;
            (model, stats) = train::train_step(
                model,
                &mut optim,
                vec![batch],
                0.005,
                &dp,
                &layout,
                &device,
                &mut mode,
            )
            .unwrap();
            assert!(stats.loss.is_finite());
            bytes.push(counting.sent() - before);
        }
        (bytes, layout.total())
    });
    for (rank, (bytes, params)) in per_rank.iter().enumerate() {
        // Steps 1-3 (freeze_step 3): the f32 gradients, 4 bytes a parameter,
        // and the loss (8 bytes). Steps 4-6: the compressed momenta.
        let f32_step = (4 * params + 8) as u64;
        assert_eq!(bytes[..3], [f32_step; 3], "rank {rank}");
        let compressed = bytes[3];
        assert!(bytes[3..].iter().all(|&b| b == compressed), "{bytes:?}");
        let ratio = f32_step as f64 / compressed as f64;
        eprintln!(
            "rank {rank}: {params} parameters; bytes per step: f32 all-reduce {f32_step}, \
             1-bit {compressed} ({ratio:.1}x fewer)"
        );
        assert!(ratio >= 16.0, "only {ratio:.1}x fewer bytes: {bytes:?}");
    }
}

#[test]
fn a_run_resumed_while_compressing_continues_bit_for_bit() {
    let _serial = one_run_at_a_time();
    let common = format!(
        "{}train_iters: 8\ncheckpoint_factor: 5\ngradient_clipping: 1.0\n",
        onebit(3)
    );
    let full = tempfile::tempdir().unwrap();
    run(&format!("{common}save: {}\n", full.path().display()), 2);
    let step5 = full.path().join("global_step5");
    for file in [
        "onebit_adam.safetensors",
        "onebit_errors_rank0.safetensors",
        "onebit_errors_rank1.safetensors",
    ] {
        assert!(step5.join(file).exists(), "{file} missing");
    }
    let resumed = tempfile::tempdir().unwrap();
    copy_checkpoint(full.path(), resumed.path(), 5);
    run(
        &format!("{common}save: {0}\nload: {0}\n", resumed.path().display()),
        2,
    );
    let after = |dir: &Path| -> Vec<_> {
        logged_numbers(dir)
            .into_iter()
            .filter(|r| r.1 > 5)
            .collect()
    };
    // Steps 6, 7, 8 and the test loss.
    assert_eq!(after(full.path()).len(), 4);
    assert_eq!(after(full.path()), after(resumed.path()));
    assert!(
        parameters(full.path(), &common) == parameters(resumed.path(), &common),
        "parameters differ"
    );
    // Without the errors (as DeepSpeed resumes), the run goes elsewhere.
    let reset = tempfile::tempdir().unwrap();
    let copy = reset.path().join("global_step5");
    std::fs::create_dir_all(&copy).unwrap();
    for entry in std::fs::read_dir(&step5).unwrap() {
        let entry = entry.unwrap();
        if !entry
            .file_name()
            .to_string_lossy()
            .starts_with("onebit_errors")
        {
            std::fs::copy(entry.path(), copy.join(entry.file_name())).unwrap();
        }
    }
    std::fs::write(reset.path().join("latest"), "global_step5").unwrap();
    run(
        &format!("{common}save: {0}\nload: {0}\n", reset.path().display()),
        2,
    );
    assert_ne!(after(full.path()), after(reset.path()));
}

#[test]
fn fp16_overflows_skip_steps_on_every_rank_while_compressing() {
    let _serial = one_run_at_a_time();
    // 2^40 overflows fp16 gradients; the window of 5 doubles the scale again
    // and again, so steps overflow in the compressed stage too, where each
    // rank's own gradients decide: the ranks must still skip together (a
    // rank stepping alone would wait in the exchange until the timeout).
    let dir = tempfile::tempdir().unwrap();
    run(
        &format!(
            "{}train_iters: 40\neval_iters: 0\ngradient_clipping: 1.0\n\
             fp16: {{enabled: true, initial_scale_power: 40, loss_scale_window: 5, \
             hysteresis: 2}}\nsave: {}\n",
            onebit(3),
            dir.path().display()
        ),
        2,
    );
    let records = metrics_in(dir.path());
    let (mut applied, mut skipped_compressing, mut losses) = (0, 0, Vec::new());
    for r in records {
        if let Record::Train {
            loss,
            skipped_iters,
            ..
        } = r
        {
            match skipped_iters {
                0 => {
                    applied += 1;
                    losses.push(loss);
                }
                _ if applied >= 3 => skipped_compressing += 1,
                _ => {}
            }
        }
    }
    // The first applied step initialises, 2 more warm up, then compression.
    assert!(skipped_compressing > 0, "no overflow while compressing");
    assert!(applied > 8, "{applied} steps applied");
    assert!(
        losses.last().unwrap() < &(0.8 * losses[0]),
        "applied steps did not learn: {losses:?}"
    );
}

/// 1-bit Adam's flat state is not resharded: another layout is refused by
/// its file, with the way to read the weights alone, before anything else
/// (formerly "optim_decay_rank0.bin not found").
#[test]
fn a_checkpoint_of_onebit_adam_is_not_resharded() {
    use neox_trainer::dist::PartitionMethod;
    use neox_trainer::dist::reshard;
    let _serial = one_run_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    run(
        &format!(
            "{}train_iters: 2\nsave: {}\n",
            onebit(3),
            dir.path().display()
        ),
        1,
    );
    let saved = reshard::find(dir.path(), None, false).unwrap().unwrap();
    let out = tempfile::tempdir().unwrap();
    let err = reshard::write(&saved, out.path(), 1, 2, &PartitionMethod::Uniform)
        .unwrap_err()
        .to_string();
    let file = dir.path().join("global_step2/onebit_adam.safetensors");
    assert!(
        err.contains(&file.display().to_string()) && err.contains("no_load_optim"),
        "{err}"
    );
    // Its weights alone are read as ever.
    let whole = reshard::read_whole(&saved, false).unwrap();
    assert_eq!(whole.state.iteration, 2);
}
