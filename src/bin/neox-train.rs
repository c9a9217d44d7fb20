//! `neox-train`: train a GPT-NeoX model over prepared shards.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use neox_trainer::NeoxArgs;
use neox_trainer::device::Device;
use neox_trainer::dist::comm::tcp::{TcpComm, TcpConfig};
use neox_trainer::dist::comm::threads::ThreadComm;
use neox_trainer::dist::placement::Placement;
use neox_trainer::dist::{Communicator, DataParallel, ZeroStage};
use neox_trainer::plan;

/// Train a GPT-NeoX model on token shards made by `neox-data`.
///
/// Configuration is GPT-NeoX's YAML: give one or more files; they are merged in
/// order and option names may use `-` or `_`. Where GPT-NeoX refuses an option
/// set in two files, here the later file wins and the override is logged.
/// Typically a model file and a data file:
///
///   neox-train --config configs/cpu-tiny.yml configs/enron.yml
///
/// GPT-NeoX options that this trainer does not act on and that change nothing
/// computed (DeepSpeed's ZeRO, fusion kernels, logging services, ...) are listed
/// at start. Options whose value would change the model, the data or the
/// numerics and that are not implemented yet (Apex amp, use_qk_layernorm, ...)
/// stop the run, unless --allow-unimplemented. Unknown options and bad values
/// are refused with the file and option named. Metrics go to `log_dir` (else
/// `save`) as `metrics.jsonl`; checkpoints to `save`, resumed from `load`.
///
/// On many ranks (data parallelism, `zero_optimization: {stage: 0|1|2}`), start
/// one process per rank; each reads its place from the launcher's environment
/// (torchrun / DeepSpeed: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
/// MASTER_PORT; Slurm's srun; OpenMPI's mpirun) and the ranks meet at
/// MASTER_ADDR:
///
///   neox-launch --nproc 2 -- neox-train --config configs/cpu-tiny.yml configs/enron.yml
///   torchrun --nproc_per_node 2 --no-python neox-train --config ...
///   srun neox-train --config ...
#[derive(Debug, Parser)]
#[command(name = "neox-train", version, verbatim_doc_comment)]
struct Args {
    /// GPT-NeoX YAML config files, merged in order.
    #[arg(long, short, required = true, num_args = 1..)]
    config: Vec<PathBuf>,

    /// Where to train: `cpu`, or `cuda:N` in a build with `--features cuda`.
    #[arg(long, default_value = "cpu")]
    device: Device,

    /// Read the configs, print the plan and exit: the resolved config (each
    /// value's file), the model's parameters and FLOPs, the data's epochs, the
    /// parallel layout, memory per rank, and the notes and refusals. The exit
    /// status is non-zero when the run would stop (options refused, a rank
    /// that does not fit the --device-memory).
    #[arg(long)]
    check: bool,

    /// With --check: the plan as JSON, for scripts.
    #[arg(long, requires = "check")]
    json: bool,

    /// With --check: one device's memory (`80GiB`, `80GB`, `80e9` bytes): does
    /// each rank fit, and if not, the smallest changes that would. Default: the
    /// memory of the --device when it is a CUDA GPU (in a `--features cuda` build).
    #[arg(long, value_name = "SIZE", value_parser = neox_trainer::plan::parse_size, requires = "check")]
    device_memory: Option<u64>,

    /// With --check: plan for N ranks in all (pipe x data x model); default:
    /// the launcher's WORLD_SIZE, else pipe_parallel_size x model_parallel_size.
    #[arg(long, value_name = "N", requires = "check")]
    world_size: Option<usize>,

    /// Seconds any rank waits for another (the rendezvous, rank 0 indexing
    /// the data the first time, each collective) before the run stops with an
    /// error naming the rank that did not answer.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 300,
        env = "NEOX_COMM_TIMEOUT"
    )]
    comm_timeout: u64,

    /// How ranks exchange gradients: `tcp` (CPU ranks, any machine), `nccl`
    /// (GPU ranks, a `--features cuda` build; the TCP rendezvous hands out
    /// NCCL's id), or `auto`: NCCL on CUDA devices, TCP otherwise.
    #[arg(long, value_enum, default_value_t = Engine::Auto)]
    comm: Engine,

    /// This rank's place on its machine, as DeepSpeed's launcher passes it
    /// (`--local_rank=N`); the environment's `LOCAL_RANK` otherwise.
    #[arg(
        long = "local_rank",
        alias = "local-rank",
        value_name = "N",
        hide = true
    )]
    local_rank: Option<usize>,

    /// Go on despite options that are not implemented yet and would change the
    /// run (e.g. `amp: {enabled: true}` then trains without Apex AMP).
    #[arg(long)]
    allow_unimplemented: bool,
}

/// The communicator engine of a multi-rank run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Engine {
    Auto,
    Tcp,
    Nccl,
}

fn main() -> ExitCode {
    neox_trainer::alloc::keep_freed_memory();
    neox::logging::init();
    let args = Args::parse();
    let placement = match Placement::from_env(args.local_rank) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: reading this process's place among the ranks: {e}");
            return ExitCode::FAILURE;
        }
    };
    match run(args, &placement) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if placement.is_single() => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: rank {}: {e:#}", placement.rank);
            ExitCode::FAILURE
        }
    }
}

/// The data-parallel group this process trains in: alone, or its ranks
/// connected over TCP through the rendezvous at `MASTER_ADDR` (and, for GPU
/// ranks, through NCCL, the TCP connection handing out its id).
fn data_parallel(
    placement: &Placement,
    zero: ZeroStage,
    timeout: Duration,
    engine: Engine,
    device: Device,
) -> Result<DataParallel> {
    // `--comm nccl` goes through NCCL even alone (a check of the GPU path).
    let alone = placement.is_single() && engine != Engine::Nccl;
    if alone && zero == ZeroStage::Off {
        return Ok(DataParallel::single());
    }
    if alone {
        return Ok(DataParallel::new(
            Arc::new(ThreadComm::group(1, timeout).remove(0)),
            zero,
        ));
    }
    tracing::info!(
        rank = placement.rank,
        world = placement.world_size,
        rendezvous = %placement.rendezvous_addr(),
        launcher = %placement.launcher,
        "joining the ranks"
    );
    let tcp: Arc<dyn Communicator> = Arc::new(
        TcpComm::connect(TcpConfig {
            rank: placement.rank,
            world: placement.world_size,
            master_addr: placement.master_addr.clone(),
            master_port: placement.rendezvous_port,
            timeout,
        })
        .with_context(|| {
            format!(
                "rank {} joining {} ranks",
                placement.rank, placement.world_size
            )
        })?,
    );
    let nccl = match (engine, device) {
        (Engine::Nccl, _) | (Engine::Auto, Device::Cuda(_)) => true,
        (Engine::Tcp, _) | (Engine::Auto, Device::Cpu) => false,
    };
    let comm = if nccl { nccl_comm(tcp, device)? } else { tcp };
    Ok(DataParallel::new(comm, zero))
}

#[cfg(feature = "cuda")]
fn nccl_comm(control: Arc<dyn Communicator>, device: Device) -> Result<Arc<dyn Communicator>> {
    let Device::Cuda(gpu) = device else {
        bail!("--comm nccl needs a CUDA device (--device cuda)");
    };
    let comm = neox_trainer::dist::comm::nccl::NcclComm::new(control, gpu)
        .with_context(|| format!("starting NCCL on GPU {gpu}"))?;
    Ok(Arc::new(comm))
}

#[cfg(not(feature = "cuda"))]
fn nccl_comm(_: Arc<dyn Communicator>, _: Device) -> Result<Arc<dyn Communicator>> {
    bail!("NCCL needs a neox-train built with `--features cuda`; use --comm tcp")
}

fn run(args: Args, placement: &Placement) -> Result<()> {
    if args.check {
        return check(&args, placement);
    }
    let first = placement.rank == 0;
    // The data-parallel ranks are what pipe_parallel_size x model_parallel_size leave.
    let grid = plan::Grid::of(
        &NeoxArgs::from_files_in(&args.config, 1).context("reading the configuration")?,
    )?;
    let data_ranks = grid.data_parallel(placement.world_size)?;
    let mut neox =
        NeoxArgs::from_files_in(&args.config, data_ranks).context("reading the configuration")?;
    if first {
        for (name, file) in &neox.not_acted_on {
            tracing::warn!(option = %name, file = %file.display(), "GPT-NeoX option not acted on by neox-train");
        }
    }
    if args.allow_unimplemented {
        for u in &neox.unimplemented {
            tracing::warn!("not implemented, going on without it (--allow-unimplemented): {u}");
        }
    } else {
        neox.refuse_unimplemented()
            .context("reading the configuration")?;
    }
    if let Some(warning) = plan::overshoot_warning(&neox) {
        tracing::warn!("{warning}");
    }
    if neox.padded_vocab_size.is_none() {
        let vocab = tokenizer_vocab(&neox)?;
        neox.set_vocab_size(vocab);
    }
    let vocab = neox.vocab_size()?;
    let model = &neox.model;
    let t = &neox.training;
    if first {
        tracing::info!(
            ranks = placement.world_size,
            micro_batch = t.micro_batch_size,
            gradient_accumulation = t.gradient_accumulation_steps,
            global_batch =
                t.micro_batch_size * t.gradient_accumulation_steps * t.data_parallel_size,
            zero_stage = t.zero_stage.number(),
            "layout"
        );
    }
    if first {
        tracing::info!(
            layers = model.num_layers,
            hidden = model.hidden_size,
            heads = model.num_attention_heads,
            seq = model.seq_length,
            vocab,
            pos_emb = ?model.pos_emb,
            device = %args.device,
            "model"
        );
    }
    let device = match args.device {
        // One GPU per process: the launcher's local rank picks it.
        Device::Cuda(0) if !placement.is_single() => Device::Cuda(placement.local_rank),
        d => d,
    };
    let dp = data_parallel(
        placement,
        neox.training.zero_stage,
        Duration::from_secs(args.comm_timeout.max(1)),
        args.comm,
        device,
    )?;
    // Rank 0 builds the sample-index caches next to the data, the others then
    // read them (as GPT-NeoX does).
    let open = || neox_trainer::data::open_splits(&neox).context("opening the training data");
    let data = if first { Some(open()?) } else { None };
    dp.barrier()
        .context("waiting for rank 0 to index the data")?;
    let data = match data {
        Some(data) => data,
        None => open()?,
    };
    let summary = if grid.pp * grid.tp > 1 {
        let world = dp
            .comm()
            .cloned()
            .context("pipe or model parallelism needs more than one rank")?;
        neox_trainer::device::train_model_parallel(&neox, &data, device, &world)
    } else {
        neox_trainer::device::train_parallel(&neox, &data, device, &dp)
    }
    .context("training")?;
    if !first {
        return Ok(());
    }
    println!(
        "trained {} iterations{}; last valid loss {}; test loss {}",
        summary.iterations,
        summary
            .resumed_from
            .map(|i| format!(" (resumed at {i})"))
            .unwrap_or_default(),
        summary
            .last_valid_loss
            .map_or("-".into(), |l| format!("{l:.4}")),
        summary.test_loss.map_or("-".into(), |l| format!("{l:.4}")),
    );
    if let Some(path) = summary.metrics_path {
        println!("metrics: {}", path.display());
    }
    Ok(())
}

/// `--check`: prints the plan (rank 0 only) and fails when the run would stop.
fn check(args: &Args, placement: &Placement) -> Result<()> {
    if placement.rank != 0 {
        return Ok(());
    }
    let read =
        |dp: usize| NeoxArgs::from_files_in(&args.config, dp).context("reading the configuration");
    let single = read(1)?;
    let grid = plan::Grid::of(&single)?;
    let world = args.world_size.unwrap_or(if placement.is_single() {
        grid.pp * grid.tp
    } else {
        placement.world_size
    });
    let dp = grid.data_parallel(world)?;
    let mut neox = if dp == 1 { single } else { read(dp)? };
    if neox.padded_vocab_size.is_none() {
        let vocab = tokenizer_vocab(&neox)?;
        neox.set_vocab_size(vocab);
    }
    let request = plan::Request {
        files: args.config.clone(),
        world_size: world,
        // A CUDA device's own size when the build can ask it.
        device_memory: args
            .device_memory
            .or_else(|| plan::device_memory(args.device)),
    };
    let plan = plan::Plan::new(&neox, &request).context("planning the run")?;
    if args.json {
        println!("{}", plan.to_json());
    } else {
        print!("{}", plan.to_text());
    }
    if !args.allow_unimplemented {
        neox.refuse_unimplemented()
            .context("reading the configuration")?;
    }
    if let Some(fit) = plan.fit.as_ref().filter(|f| !f.fits) {
        bail!(
            "the fullest rank needs {} but a device has {}: see the plan's fit section",
            plan::render_bytes(fit.per_rank),
            plan::render_bytes(fit.device_memory)
        );
    }
    Ok(())
}

/// The unpadded vocabulary of the configured tokenizer, as GPT-NeoX takes it
/// (`tokenizer_type` is GPT-NeoX's default GPT2BPETokenizer when only
/// `vocab_file` and `merge_file` are given).
fn tokenizer_vocab(neox: &NeoxArgs) -> Result<usize> {
    let Some(kind) = &neox.tokenizer_type else {
        bail!(
            "the vocabulary size is unknown: set `padded_vocab_size`, `tokenizer_type`, or \
             `vocab_file` and `merge_file` (GPT-NeoX's default GPT2BPETokenizer)"
        );
    };
    let kind: neox_tokenize::TokenizerKind = kind
        .parse()
        .map_err(|e| anyhow::anyhow!("option `tokenizer_type`: {e}"))?;
    let spec = neox_tokenize::TokenizerSpec {
        kind,
        vocab_file: neox.vocab_file.clone(),
        merge_file: neox.merge_file.clone(),
    };
    let tokenizer = neox_tokenize::Tokenizer::load(&spec)
        .context("loading the tokenizer for its vocabulary size")?;
    Ok(tokenizer.vocab_size())
}
