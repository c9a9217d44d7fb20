//! The training loop. [`train_step`] is one optimizer step of one rank over
//! its micro batches, its reductions delegated to the data-parallel layout;
//! [`run_parallel`] drives it: data positions, schedule, logging, evaluation
//! and checkpoints. [`run`] is the one-process case.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::ElementConversion;
use burn::tensor::backend::AutodiffBackend;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::checkpoint::{self, TrainState};
use crate::config::NeoxArgs;
use crate::data::{Batch, SampleSource, Splits};
use crate::dist::{DataParallel, ParamLayout, ZeroStage};
use crate::error::TrainError;
use crate::metrics::{MetricsLog, Record};
use crate::model::{GptNeox, LossBackend, ModelConfig, TrainBackend};
use crate::optim::NeoxOptimizer;
use crate::precision::MixedPrecision;
use crate::recompute;

/// What one optimizer step measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepStats {
    /// Mean loss over the micro batches of every rank.
    pub loss: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// fp16: the step was skipped, its gradients overflowed.
    pub skipped: bool,
}

/// How a step computes, beyond the model and data.
#[derive(Debug, Clone, Default)]
pub struct StepMode {
    /// The compute type and, for fp16, the loss scaler.
    pub precision: MixedPrecision,
    /// Activation checkpointing: recompute the layers in groups of this many
    /// in the backward pass (`checkpoint_activations`, `checkpoint_num_layers`).
    pub recompute: Option<usize>,
}

/// One optimizer step over this rank's `micro_batches`: gradients accumulated,
/// summed over the data-parallel ranks (each micro batch weighs
/// `1 / (micro batches x ranks)`), clipped by the global norm, applied. The
/// passes run in `mode`'s precision on a cast copy of `model`, whose f32
/// parameters receive the gradients; an fp16 step whose gradients overflow
/// is skipped.
#[allow(clippy::too_many_arguments)]
pub fn train_step<B: TrainBackend>(
    model: GptNeox<B>,
    optim: &mut NeoxOptimizer<B, GptNeox<B>>,
    micro_batches: Vec<Batch<B>>,
    lr: f64,
    dp: &DataParallel,
    layout: &ParamLayout,
    device: &B::Device,
    mode: &mut StepMode,
) -> Result<(GptNeox<B>, StepStats), TrainError> {
    let n = micro_batches.len().max(1) * dp.size();
    let scale = mode.precision.loss_scale();
    let mut accumulator = GradientsAccumulator::<GptNeox<B>>::new();
    let mut loss_sum = 0.0;
    for batch in micro_batches {
        let (value, grads) = match mode.recompute {
            Some(group) => recompute::loss_and_grads(
                &model,
                &mode.precision,
                batch.inputs,
                batch.targets,
                n,
                scale,
                group,
            ),
            None => {
                // A backward pass consumes the casts: one copy per micro batch.
                let compute = mode.precision.cast(model.clone());
                let loss = compute.loss(batch.inputs, batch.targets) / n as f64;
                let value = loss.clone().into_scalar().elem::<f64>();
                let loss = if scale == 1.0 { loss } else { loss * scale };
                (value, GradientsParams::from_grads(loss.backward(), &model))
            }
        };
        loss_sum = dp.sum_in_order(loss_sum, value)?;
        accumulator.accumulate(&model, grads);
    }
    let grads = accumulator.grads();
    // 1-bit Adam, once compressing, exchanges momenta instead of gradients.
    let grads = match optim.reduces_gradients() {
        true => dp.reduce_gradients(&model, layout, grads, device)?,
        false => grads,
    };
    let loss_scale = mode.precision.skips_overflow().then_some(scale);
    let norm = |squares: Vec<f32>| Ok(crate::optim::norm_of_squares(&squares));
    let (model, grad_norm) =
        dp.step_with(optim, lr, model, layout, grads, device, norm, loss_scale)?;
    let skipped = loss_scale.is_some() && !grad_norm.is_finite();
    mode.precision.update(skipped)?;
    Ok((
        model,
        StepStats {
            loss: loss_sum,
            grad_norm,
            skipped,
        },
    ))
}

/// Mean loss of `model` over `iters` global batches of `source` from sample
/// `first`, micro batch by micro batch (memory does not grow with the
/// accumulation steps), each rank reading its own micro batches.
#[allow(clippy::too_many_arguments)]
pub fn evaluate<B: LossBackend>(
    model: &GptNeox<B>,
    source: &dyn SampleSource,
    first: u64,
    iters: u64,
    micro: usize,
    accumulation: usize,
    dp: &DataParallel,
    device: &B::Device,
) -> Result<f64, TrainError> {
    let seq = model.config.seq_length;
    let vocab = model.config.vocab_size;
    let global = (micro * accumulation * dp.size()) as u64;
    let mut sum = 0.0;
    for k in 0..iters {
        for j in 0..accumulation {
            let start = dp.micro_batch_start(first + k * global, j, micro);
            let b = Batch::<B>::read(source, start, micro, seq, vocab, device)?;
            let loss = model.loss(b.inputs, b.targets).into_scalar().elem::<f64>();
            sum = dp.sum_in_order(sum, loss)?;
        }
    }
    Ok(sum / (iters * global / micro as u64).max(1) as f64)
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub iterations: u64,
    pub resumed_from: Option<u64>,
    pub last_valid_loss: Option<f64>,
    pub test_loss: Option<f64>,
    pub metrics_path: Option<std::path::PathBuf>,
}

/// The backend RNG's seed for the step at `iteration`: every step starts from a
/// seed derived from the run seed, so resuming needs no RNG snapshot.
pub(crate) fn step_seed(seed: u64, iteration: u64) -> u64 {
    // SplitMix64 finaliser over the pair.
    let mut z = seed ^ iteration.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A freshly initialised model, the same on every rank of the process: the
/// CPU backend has one RNG per process, so ranks that are threads take turns.
pub(crate) fn init_model<B: AutodiffBackend>(
    config: &ModelConfig,
    seed: u64,
    device: &B::Device,
) -> GptNeox<B> {
    static INIT: Mutex<()> = Mutex::new(());
    let _turn = INIT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    B::seed(device, seed);
    let model = config.init::<B>(device);
    // Parameters initialise lazily: draw them all now, while this rank has the RNG.
    ParamLayout::of::<B, _>(&model);
    model
}

/// Trains the configured model on `data` on `device`, alone.
pub fn run<B: TrainBackend>(
    args: &NeoxArgs,
    data: &Splits,
    device: &B::Device,
) -> Result<Summary, TrainError> {
    run_parallel::<B>(args, data, device, &DataParallel::single())
}

/// Trains the configured model on `data` on `device` as one rank of `dp`.
/// Only rank 0 logs and writes metrics; checkpoints are written together.
pub fn run_parallel<B: TrainBackend>(
    args: &NeoxArgs,
    data: &Splits,
    device: &B::Device,
    dp: &DataParallel,
) -> Result<Summary, TrainError> {
    let mut config = args.model.clone();
    config.vocab_size = args.vocab_size()?;
    let t = &args.training;
    if t.data_parallel_size != dp.size() {
        return Err(TrainError::Device(format!(
            "the configuration was read for {} data-parallel rank(s), the run has {}",
            t.data_parallel_size,
            dp.size()
        )));
    }
    let (micro, accumulation) = (t.micro_batch_size, t.gradient_accumulation_steps);
    let global_batch = micro * accumulation * dp.size();
    let seq = config.seq_length;
    let first_rank = dp.rank() == 0;

    let mut model = init_model::<B>(&config, t.seed, device);
    let mut optim = NeoxOptimizer::<B, GptNeox<B>>::new(&args.optim);
    let mut mode = StepMode {
        precision: MixedPrecision::new(&args.precision),
        recompute: t.checkpoint_layers,
    };
    let mut state = TrainState {
        iteration: 0,
        consumed_train_samples: 0,
        seed: t.seed,
        schedule: args.schedule.clone(),
        model: config.clone(),
        optimizer_shards: if dp.zero() == ZeroStage::Off {
            1
        } else {
            dp.size()
        },
        skipped_steps: 0,
        loss_scaler: None,
        layout: None,
    };
    let mut resumed_from = None;
    // An unsplit checkpoint, or a split run's shares made whole.
    let checkpoint = match &t.load {
        Some(load) => crate::dist::reshard::find(load, None, false)?,
        None => None,
    };
    if let Some(saved) = checkpoint {
        let dir = saved.folder().to_path_buf();
        let what = match (t.finetune, t.no_load_optim) {
            (true, _) => checkpoint::LoadWhat::Finetune,
            (false, true) => checkpoint::LoadWhat::NoOptim,
            (false, false) => checkpoint::LoadWhat::Resume,
        };
        let restored = crate::dist::reshard::load(
            &saved,
            &crate::dist::reshard::Target::Whole,
            model,
            &config,
            optim,
            device,
            dp,
            what,
            first_rank,
        )?;
        let restored = checkpoint::Restored {
            model: restored.0,
            optim: restored.1,
            state: restored.2,
        };
        (model, optim) = (restored.model, restored.optim);
        match what {
            checkpoint::LoadWhat::Finetune => {
                if first_rank {
                    tracing::info!(checkpoint = %dir.display(), "fine-tuning from its weights");
                }
            }
            checkpoint::LoadWhat::NoOptim => {
                state = TrainState {
                    iteration: restored.state.iteration,
                    consumed_train_samples: restored.state.consumed_train_samples,
                    ..state
                };
                if first_rank {
                    tracing::info!(iteration = state.iteration, checkpoint = %dir.display(), "resumed without optimizer state");
                }
                resumed_from = Some(state.iteration);
            }
            checkpoint::LoadWhat::Resume => {
                let shards = state.optimizer_shards;
                state = TrainState {
                    optimizer_shards: shards,
                    ..restored.state
                };
                state.schedule =
                    crate::schedule::on_resume(&args.schedule, &state.schedule, args.resume_flags)?;
                mode.precision.restore(state.loss_scaler.clone());
                if first_rank {
                    tracing::info!(iteration = state.iteration, checkpoint = %dir.display(), "resumed");
                }
                resumed_from = Some(state.iteration);
            }
        }
    } else {
        model = dp.sync_model(model, device)?;
    }
    let layout = ParamLayout::of::<B, _>(&model);

    let run_dir = if first_rank {
        t.log_dir.clone().or_else(|| t.save.clone())
    } else {
        None
    };
    let mut metrics = match &run_dir {
        Some(dir) => Some(MetricsLog::open(dir, state.iteration)?),
        None => None,
    };
    let mut log = |record: Record| -> Result<(), TrainError> {
        match metrics.as_mut() {
            Some(m) => m.write(&record),
            None => Ok(()),
        }
    };

    let progress = if first_rank && std::io::stderr().is_terminal() {
        ProgressBar::new(t.train_iters)
    } else {
        ProgressBar::with_draw_target(Some(t.train_iters), ProgressDrawTarget::hidden())
    };
    progress.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} iters  {msg}  [{elapsed} < {eta}]")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    progress.set_position(state.iteration);

    let flops_per_token = config.train_flops_per_token();
    let tokens_per_iter = (global_batch * seq) as f64;
    let (mut interval_loss, mut interval_iters, mut interval_start) = (0.0, 0u64, Instant::now());
    let (mut interval_skipped, mut skipped_loss) = (0u64, 0.0);
    let mut last_grad_norm = 0.0;
    let mut last_valid_loss = None;

    while state.iteration < t.train_iters {
        let it = state.iteration;
        // Dropout differs between ranks as between one device's micro batches.
        B::seed(
            device,
            step_seed(t.seed, it)
                .wrapping_add((dp.rank() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
        );
        // The schedule advances on applied steps only (DeepSpeed does not step
        // its scheduler on an fp16 overflow).
        let lr = state.schedule.lr_at(it - state.skipped_steps);
        let micro_batches = (0..accumulation)
            .map(|j| {
                let first = dp.micro_batch_start(state.consumed_train_samples, j, micro);
                Batch::read(
                    data.train.as_ref(),
                    first,
                    micro,
                    seq,
                    config.vocab_size,
                    device,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let stats;
        let scale = mode.precision.loss_scale();
        (model, stats) = train_step(
            model,
            &mut optim,
            micro_batches,
            lr,
            dp,
            &layout,
            device,
            &mut mode,
        )?;
        if stats.skipped {
            state.skipped_steps += 1;
            interval_skipped += 1;
            skipped_loss += stats.loss;
            if first_rank {
                progress.suspend(|| {
                    tracing::warn!(
                        iteration = it + 1,
                        loss_scale = scale,
                        next_scale = mode.precision.loss_scale(),
                        "fp16 gradients overflowed: step skipped"
                    )
                });
            }
        } else if !stats.loss.is_finite() {
            return Err(TrainError::Diverged {
                iteration: it + 1,
                loss: stats.loss,
            });
        }
        state.iteration += 1;
        state.consumed_train_samples += global_batch as u64;
        if !stats.skipped {
            interval_loss += stats.loss;
            last_grad_norm = stats.grad_norm;
        }
        interval_iters += 1;
        progress.set_position(state.iteration);
        progress.set_message(format!("loss {:.4}  lr {lr:.3e}", stats.loss));

        if state.iteration.is_multiple_of(t.log_interval) || state.iteration == t.train_iters {
            let seconds = interval_start.elapsed().as_secs_f64() / interval_iters as f64;
            // As GPT-NeoX: the mean over the interval's applied steps.
            let applied = interval_iters - interval_skipped;
            let loss = match applied {
                0 => skipped_loss / interval_iters as f64,
                _ => interval_loss / applied as f64,
            };
            let record = Record::Train {
                iteration: state.iteration,
                loss,
                lr,
                grad_norm: last_grad_norm,
                step_ms: seconds * 1e3,
                tokens_per_s: tokens_per_iter / seconds,
                flops_per_s: flops_per_token * tokens_per_iter / seconds,
                consumed_samples: state.consumed_train_samples,
                loss_scale: mode
                    .precision
                    .skips_overflow()
                    .then(|| mode.precision.loss_scale()),
                skipped_iters: interval_skipped,
            };
            if first_rank {
                progress.suspend(|| tracing::info!(?record, "train"));
            }
            log(record)?;
            (interval_loss, interval_iters) = (0.0, 0);
            (interval_skipped, skipped_loss) = (0, 0.0);
        }
        if let Some(valid) = &data.valid
            && t.eval_iters > 0
            && state.iteration.is_multiple_of(t.eval_interval)
        {
            // Each evaluation reads the next `eval_iters` batches of the split,
            // as GPT-NeoX's valid iterator does; the position follows from the
            // iteration, so a resumed run reads the same ones.
            let first =
                (state.iteration / t.eval_interval - 1) * t.eval_iters * global_batch as u64;
            let loss = evaluate(
                &mode.precision.cast(model.valid()),
                valid.as_ref(),
                first,
                t.eval_iters,
                micro,
                accumulation,
                dp,
                device,
            )?;
            last_valid_loss = Some(loss);
            if first_rank {
                progress.suspend(|| {
                    tracing::info!(iteration = state.iteration, loss, ppl = loss.exp(), "valid")
                });
            }
            log(Record::Valid {
                iteration: state.iteration,
                loss,
                ppl: loss.exp(),
            })?;
        }
        let checkpoint_due = t
            .checkpoint_factor
            .is_some_and(|f| state.iteration.is_multiple_of(f));
        if let Some(save) = &t.save
            && (checkpoint_due || state.iteration == t.train_iters)
        {
            state.loss_scaler = mode.precision.scaler_state();
            let dir =
                checkpoint::save(save, &model, &optim, &state, t.keep_last_n_checkpoints, dp)?;
            if first_rank {
                tracing::info!(checkpoint = %dir.display(), "saved");
            }
        }
        if interval_iters == 0 {
            interval_start = Instant::now();
        }
    }
    progress.finish_and_clear();

    let mut test_loss = None;
    if let Some(test) = &data.test
        && t.eval_iters > 0
    {
        let loss = evaluate(
            &mode.precision.cast(model.valid()),
            test.as_ref(),
            0,
            t.eval_iters,
            micro,
            accumulation,
            dp,
            device,
        )?;
        test_loss = Some(loss);
        if first_rank {
            tracing::info!(iteration = state.iteration, loss, ppl = loss.exp(), "test");
        }
        log(Record::Test {
            iteration: state.iteration,
            loss,
            ppl: loss.exp(),
        })?;
    }
    Ok(Summary {
        iterations: state.iteration,
        resumed_from,
        last_valid_loss,
        test_loss,
        metrics_path: run_dir.map(|d| d.join("metrics.jsonl")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_seeds_differ_per_iteration() {
        assert_ne!(step_seed(1234, 0), step_seed(1234, 1));
        assert_ne!(step_seed(1234, 0), step_seed(1235, 0));
        assert_eq!(step_seed(7, 9), step_seed(7, 9));
    }
}
