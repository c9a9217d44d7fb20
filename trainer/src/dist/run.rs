//! The training loop of a pipe x data x model grid ([`Parallel`]): every rank
//! builds the unsplit model from the run's seed, keeps its share, and trains
//! it with its groups; rank 0 logs and writes the metrics, in the records
//! and at the positions [`crate::train::run_parallel`] writes them, so that a
//! split run reads as the unsplit one.
//!
//! Checkpoints: each (stage, tensor rank) saves its share with its data
//! ranks in the ordinary format, under `{save}/pp{P}-tp{T}/` (GPT-NeoX too
//! writes one file per stage and tensor rank); a run resumes from them at the
//! same layout, every share at the same iteration, and at any other layout
//! (or from an unsplit checkpoint) through [`super::reshard`].
//!
//! Each step runs as [`crate::train::run_parallel`]'s does: in the
//! configured precision (fp16's loss scaler agreed by every rank, its state
//! in every share's checkpoint) and with activation checkpointing when asked.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::tensor::FloatDType;
use burn::tensor::backend::{AutodiffBackend, Backend};

use super::comm::{Communicator, DType, ReduceOp};
use super::data_parallel::ParamLayout;
use super::parallel::Parallel;
use super::reshard::{self, Layout, Target};
use super::shard::GptShard;
use super::tensor_parallel::TpOps;
use super::topology::Topology;
use super::zero::ZeroStage;
use crate::checkpoint::{self, LoadWhat, TrainState};
use crate::config::NeoxArgs;
use crate::data::{Batch, SampleSource, Splits};
use crate::error::TrainError;
use crate::metrics::{MetricsLog, Record};
use crate::optim::NeoxOptimizer;
use crate::precision::MixedPrecision;
use crate::train::{StepMode, Summary, init_model, step_seed};

/// Trains the configured model on `data` on `device` as rank `world.rank()`
/// of the grid `args` asks for (`pipe_parallel_size`, `model_parallel_size`,
/// the data ranks what remains of `world`).
pub fn run_model_parallel<B: AutodiffBackend + TpOps>(
    args: &NeoxArgs,
    data: &Splits,
    device: &B::Device,
    world: &Arc<dyn Communicator>,
) -> Result<Summary, TrainError>
where
    B::InnerBackend: TpOps,
{
    let t = &args.training;
    let mut config = args.model.clone();
    config.vocab_size = args.vocab_size()?;
    let topology = Topology::new(world.size(), t.pipe_parallel_size, t.model_parallel_size)
        .filter(|g| g.dp == t.data_parallel_size)
        .ok_or_else(|| {
            TrainError::Device(format!(
                "{} rank(s) do not make pipe_parallel_size {} x {} data-parallel rank(s) x \
                 model_parallel_size {}",
                world.size(),
                t.pipe_parallel_size,
                t.data_parallel_size,
                t.model_parallel_size
            ))
        })?;
    let full = init_model::<B>(&config, t.seed, device);
    let parallel = Parallel::new(
        world,
        topology,
        t.zero_stage,
        &full,
        &t.pipe_partition_method,
    )?;
    let mut model = parallel
        .shard(&full)
        .map_err(|e| TrainError::Device(e.to_string()))?;
    let counted = parallel.counted(&full, &model);
    drop(full);
    let mut optim = NeoxOptimizer::<B, GptShard<B>>::new(&args.optim);
    let mut mode = StepMode {
        precision: MixedPrecision::new(&args.precision),
        recompute: t.checkpoint_layers,
    };
    let compute = args.precision.precision.dtype();
    let first_rank = world.rank() == 0;
    let shard_dir =
        |root: &Path| root.join(format!("pp{}-tp{}", parallel.coord.pp, parallel.coord.tp));
    let mut state = TrainState {
        iteration: 0,
        consumed_train_samples: 0,
        seed: t.seed,
        schedule: args.schedule.clone(),
        model: config.clone(),
        optimizer_shards: if t.zero_stage == ZeroStage::Off {
            1
        } else {
            topology.dp
        },
        skipped_steps: 0,
        loss_scaler: None,
        layout: Some(Layout::of(&parallel.stages, topology.tp)),
    };
    // A checkpoint of any layout: this one's shares, or another's resharded.
    let resume = match &t.load {
        Some(load) => reshard::find(load, None, true)?,
        None => None,
    };
    // Every share resumes from the same iteration, or none does.
    let mut at = [
        resume.as_ref().map_or(-1, |_| 0),
        resume.as_ref().map_or(-1, |_| 0),
    ];
    let mut resumed_from = None;
    if let Some(saved) = resume {
        let target = Target::Share {
            layout: Layout::of(&parallel.stages, topology.tp),
            stage: parallel.coord.pp,
            shard: model.shard(),
        };
        let what = match (t.finetune, t.no_load_optim) {
            (true, _) => LoadWhat::Finetune,
            (false, true) => LoadWhat::NoOptim,
            (false, false) => LoadWhat::Resume,
        };
        let (m, o, restored) = reshard::load(
            &saved,
            &target,
            model,
            &config,
            optim,
            device,
            &parallel.dp,
            what,
            first_rank,
        )?;
        (model, optim) = (m, o);
        match what {
            LoadWhat::Finetune => {}
            LoadWhat::NoOptim => {
                state.iteration = restored.iteration;
                state.consumed_train_samples = restored.consumed_train_samples;
            }
            LoadWhat::Resume => {
                state = TrainState {
                    optimizer_shards: state.optimizer_shards,
                    ..restored
                };
                state.schedule =
                    crate::schedule::on_resume(&args.schedule, &state.schedule, args.resume_flags)?;
                mode.precision.restore(state.loss_scaler.clone());
            }
        }
        at = [state.iteration as i64; 2];
        resumed_from = (what != LoadWhat::Finetune).then_some(state.iteration);
    } else {
        // One parameter id per parameter on every data rank: ZeRO's
        // optimizer files, keyed by id, then match the saved model's.
        model = parallel.dp.sync_model(model, device)?;
    }
    let mut highest = [at[0]];
    let mut lowest = [-at[1]];
    world.all_reduce(
        bytemuck::cast_slice_mut(&mut highest),
        DType::I64,
        ReduceOp::Max,
    )?;
    world.all_reduce(
        bytemuck::cast_slice_mut(&mut lowest),
        DType::I64,
        ReduceOp::Max,
    )?;
    if highest[0] != -lowest[0] {
        return Err(TrainError::Device(format!(
            "the shards under {}/pp*-tp*/ are at different iterations (or some have none): \
             {} to {}; every stage and tensor rank resumes from the same step",
            t.load.as_deref().unwrap_or(Path::new("?")).display(),
            -lowest[0],
            highest[0]
        )));
    }
    if first_rank && let Some(it) = resumed_from {
        tracing::info!(iteration = it, "resumed every share");
    }
    let layout = ParamLayout::of::<B, _>(&model);
    if first_rank {
        for (i, stage) in parallel.stages.iter().enumerate() {
            tracing::info!(
                stage = i,
                layers = ?stage.layers,
                embedding = stage.embed,
                head = stage.head,
                "pipeline stage"
            );
        }
    }

    let (micro, accumulation) = (t.micro_batch_size, t.gradient_accumulation_steps);
    let global_batch = micro * accumulation * topology.dp;
    let (seq, vocab) = (config.seq_length, config.vocab_size);
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
        if first_rank {
            tracing::info!(?record, "metrics");
        }
        match metrics.as_mut() {
            Some(m) => m.write(&record),
            None => Ok(()),
        }
    };
    let read = |source: &dyn SampleSource, first: u64| {
        Batch::<B>::read(source, first, micro, seq, vocab, device)
    };

    let flops_per_token = config.train_flops_per_token();
    let tokens_per_iter = (global_batch * seq) as f64;
    let (mut interval_loss, mut interval_iters, mut interval_start) = (0.0, 0u64, Instant::now());
    let (mut interval_skipped, mut skipped_loss) = (0u64, 0.0);
    let mut last_grad_norm = 0.0;
    let mut last_valid_loss = None;
    while state.iteration < t.train_iters {
        let it = state.iteration;
        // One RNG stream per data rank, shared by its pipeline and tensor
        // ranks (Megatron's seeding: see `tensor_parallel`).
        B::seed(
            device,
            step_seed(t.seed, it)
                .wrapping_add((parallel.coord.dp as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
        );
        // The schedule advances on applied steps only (as on one device).
        let lr = state.schedule.lr_at(it - state.skipped_steps);
        let consumed = state.consumed_train_samples;
        let batches = (0..accumulation)
            .map(|j| {
                read(
                    data.train.as_ref(),
                    parallel.dp.micro_batch_start(consumed, j, micro),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let stats;
        let scale = mode.precision.loss_scale();
        (model, stats) = parallel.train_step(
            model, &mut optim, batches, lr, &layout, &counted, device, &mut mode,
        )?;
        if stats.skipped {
            state.skipped_steps += 1;
            interval_skipped += 1;
            skipped_loss += stats.loss;
            if first_rank {
                tracing::warn!(
                    iteration = it + 1,
                    loss_scale = scale,
                    next_scale = mode.precision.loss_scale(),
                    "fp16 gradients overflowed: step skipped"
                );
            }
        } else if !stats.loss.is_finite() {
            return Err(TrainError::Diverged {
                iteration: it + 1,
                loss: stats.loss,
            });
        }
        let iteration = it + 1;
        state.iteration = iteration;
        state.consumed_train_samples += global_batch as u64;
        if !stats.skipped {
            interval_loss += stats.loss;
            last_grad_norm = stats.grad_norm;
        }
        interval_iters += 1;
        if iteration.is_multiple_of(t.log_interval) || iteration == t.train_iters {
            let seconds = interval_start.elapsed().as_secs_f64() / interval_iters as f64;
            // As one device: the mean over the interval's applied steps.
            let applied = interval_iters - interval_skipped;
            let loss = match applied {
                0 => skipped_loss / interval_iters as f64,
                _ => interval_loss / applied as f64,
            };
            log(Record::Train {
                iteration,
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
            })?;
            (interval_loss, interval_iters) = (0.0, 0);
            (interval_skipped, skipped_loss) = (0, 0.0);
            interval_start = Instant::now();
        }
        if let Some(valid) = &data.valid
            && t.eval_iters > 0
            && iteration.is_multiple_of(t.eval_interval)
        {
            let first = (iteration / t.eval_interval - 1) * t.eval_iters * global_batch as u64;
            let valid_model = mode.precision.cast(model.valid());
            let loss = evaluate(
                &parallel,
                &valid_model,
                compute,
                valid.as_ref(),
                first,
                t,
                device,
            )?;
            last_valid_loss = Some(loss);
            log(Record::Valid {
                iteration,
                loss,
                ppl: loss.exp(),
            })?;
        }
        let due = t
            .checkpoint_factor
            .is_some_and(|f| iteration.is_multiple_of(f));
        if let Some(save) = &t.save
            && (due || iteration == t.train_iters)
        {
            state.loss_scaler = mode.precision.scaler_state();
            let dir = shard_dir(save);
            let keep = t.keep_last_n_checkpoints;
            checkpoint::save_module(&dir, &model, &optim, &state, keep, &parallel.dp)?;
            // A checkpoint is whole when every share has written its own.
            world.barrier()?;
            if first_rank {
                tracing::info!(iteration, checkpoint = %save.display(), "saved every share");
            }
        }
    }
    let mut test_loss = None;
    if let Some(test) = &data.test
        && t.eval_iters > 0
    {
        let test_model = mode.precision.cast(model.valid());
        let loss = evaluate(&parallel, &test_model, compute, test.as_ref(), 0, t, device)?;
        test_loss = Some(loss);
        log(Record::Test {
            iteration: t.train_iters,
            loss,
            ppl: loss.exp(),
        })?;
    }
    Ok(Summary {
        iterations: t.train_iters,
        resumed_from,
        last_valid_loss,
        test_loss,
        metrics_path: run_dir.map(|d| d.join("metrics.jsonl")),
    })
}

/// Mean loss over `eval_iters` global batches of `source` from sample
/// `first`, as [`crate::train::evaluate`] adds it: micro batch by micro
/// batch in one device's order; known on every rank.
fn evaluate<B: Backend + TpOps>(
    parallel: &Parallel,
    model: &GptShard<B>,
    dtype: FloatDType,
    source: &dyn SampleSource,
    first: u64,
    t: &crate::config::TrainingConfig,
    device: &B::Device,
) -> Result<f64, TrainError> {
    let (micro, accumulation) = (t.micro_batch_size, t.gradient_accumulation_steps);
    let (seq, vocab) = (model.config.seq_length, model.config.vocab_size);
    let global = (micro * accumulation * parallel.topology.dp) as u64;
    let mut sum = 0.0;
    for k in 0..t.eval_iters {
        for j in 0..accumulation {
            let start = parallel.dp.micro_batch_start(first + k * global, j, micro);
            let batch = Batch::<B>::read(source, start, micro, seq, vocab, device)?;
            for loss in parallel
                .pipeline
                .evaluate(model, std::iter::once(batch), dtype)?
            {
                sum = parallel.dp.sum_in_order(sum, loss)?;
            }
        }
    }
    let sum = parallel.pipeline.from_last(sum)?;
    Ok(sum / (t.eval_iters * global / micro as u64).max(1) as f64)
}
