//! What the trainer's tests share: one run at a time, the token stream they
//! train on (vocabulary 32, sequence length 16), configurations from YAML,
//! runs on thread ranks, and what a run leaves behind (its metrics, its
//! checkpointed parameters). Each test binary uses its own part of this.
#![allow(dead_code)]

use std::fmt::Display;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use burn::module::Module;
use burn::tensor::backend::{AutodiffBackend, Backend};
use neox_trainer::config::yaml::Options;
use neox_trainer::data::{Splits, TokenWindows};
use neox_trainer::device::{self, Cpu, Device};
use neox_trainer::dist::comm::Communicator;
use neox_trainer::dist::comm::threads::ThreadComm;
use neox_trainer::dist::{DataParallel, ZeroStage};
use neox_trainer::metrics::{self, Record};
use neox_trainer::model::ModelConfig;
use neox_trainer::optim::NeoxOptimizer;
use neox_trainer::{GptNeox, NeoxArgs, checkpoint};

/// Burn's CPU backend has one RNG per process (it seeds initialisation and
/// dropout): runs in parallel test threads would interleave their draws.
pub fn one_run_at_a_time() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A stream with structure to learn: a repeating sequence with some noise.
fn tokens(n: usize, salt: u32) -> Vec<u32> {
    (0..n as u32)
        .map(|i| {
            if (i * 7 + salt).is_multiple_of(13) {
                (i * 31 + salt) % 32
            } else {
                (i % 9) * 3 + 1
            }
        })
        .collect()
}

/// Train, valid and test windows of 16 tokens.
pub fn splits() -> Splits {
    Splits {
        train: Box::new(TokenWindows::new(tokens(20_000, 0), 16)),
        valid: Some(Box::new(TokenWindows::new(tokens(2_000, 5), 16))),
        test: Some(Box::new(TokenWindows::new(tokens(2_000, 9), 16))),
    }
}

/// The configuration of the YAML `model` with the YAML `run` over it (as
/// the files `model.yml` and `run.yml`), for `world` data-parallel ranks.
pub fn neox_args(model: &str, run: &str, world: usize) -> NeoxArgs {
    let mut options = Options::default();
    options.merge_str(model, Path::new("model.yml")).unwrap();
    options.merge_str(run, Path::new("run.yml")).unwrap();
    NeoxArgs::from_options_in(options, world).unwrap()
}

/// Runs `rank` on `ranks` scoped threads, each with its member of one group
/// of thread communicators (60 s timeout): what each returned or its panic,
/// in rank order.
fn joined<T: Send>(
    ranks: usize,
    rank: impl Fn(ThreadComm) -> T + Sync,
) -> Vec<std::thread::Result<T>> {
    let comms = ThreadComm::group(ranks, Duration::from_secs(60));
    std::thread::scope(|s| {
        let handles: Vec<_> = comms
            .into_iter()
            .map(|comm| {
                let rank = &rank;
                s.spawn(move || rank(comm))
            })
            .collect();
        handles.into_iter().map(|h| h.join()).collect()
    })
}

/// What `rank` returns on each of `ranks` thread ranks (see [`joined`]), in
/// rank order; a rank's panic is the caller's.
pub fn on_thread_ranks<T: Send>(ranks: usize, rank: impl Fn(ThreadComm) -> T + Sync) -> Vec<T> {
    joined(ranks, rank)
        .into_iter()
        .map(|r| r.unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
        .collect()
}

/// Runs `rank` on `ranks` thread ranks (see [`joined`]): the failures, each
/// naming its rank.
fn failures<T: Send, E: Display + Send>(
    ranks: usize,
    rank: impl Fn(Arc<dyn Communicator>) -> Result<T, E> + Sync,
) -> Result<(), String> {
    let errors: Vec<String> = joined(ranks, |comm| rank(Arc::new(comm)))
        .into_iter()
        .enumerate()
        .filter_map(|(r, result)| match result {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(format!("rank {r}: {e}")),
            Err(_) => Some(format!("rank {r} panicked")),
        })
        .collect();
    match errors.is_empty() {
        true => Ok(()),
        false => Err(errors.join("\n")),
    }
}

/// Trains `args` on [`splits`] with data parallelism over `ranks` thread
/// ranks, ZeRO as `args` say; one rank without ZeRO trains as one device.
pub fn train_data_parallel(args: &NeoxArgs, ranks: usize) -> Result<(), String> {
    let zero = args.training.zero_stage;
    let data = splits();
    if ranks == 1 && zero == ZeroStage::Off {
        return device::train(args, &data, Device::Cpu)
            .map(|_| ())
            .map_err(|e| e.to_string());
    }
    failures(ranks, |comm| {
        let dp = DataParallel::new(comm, zero);
        device::train_parallel(args, &data, Device::Cpu, &dp)
    })
}

/// Trains `args`'s split model (its pipe x data x model grid) on [`splits`]
/// over `ranks` thread ranks.
pub fn train_split(args: &NeoxArgs, ranks: usize) -> Result<(), String> {
    let data = splits();
    failures(ranks, |world| {
        device::train_model_parallel(args, &data, Device::Cpu, &world)
    })
}

/// The metrics a run wrote into `dir`.
pub fn metrics_in(dir: &Path) -> Vec<Record> {
    metrics::read(&dir.join("metrics.jsonl")).unwrap()
}

/// (kind, iteration, loss, grad norm, lr) of every record a run wrote into
/// `dir`: everything but the timings (0 where a record has no such number).
pub fn logged_numbers(dir: &Path) -> Vec<(String, u64, f64, f64, f64)> {
    metrics_in(dir)
        .into_iter()
        .map(|r| match r {
            Record::Train {
                iteration,
                loss,
                lr,
                grad_norm,
                ..
            } => ("train".into(), iteration, loss, grad_norm, lr),
            Record::Valid {
                iteration, loss, ..
            } => ("valid".into(), iteration, loss, 0.0, 0.0),
            Record::Test {
                iteration, loss, ..
            } => ("test".into(), iteration, loss, 0.0, 0.0),
        })
        .collect()
}

/// Every parameter's values, in visiting order (the library's own walk).
pub fn parameter_values<B: Backend, M: Module<B>>(model: &M) -> Vec<Vec<f32>> {
    neox_trainer::dist::merge::values(model)
}

/// Every parameter of the checkpoint `latest` names in `dir`, in visiting
/// order, read into the model and optimizer that `args` configure (vocabulary 32).
pub fn checkpoint_parameters(dir: &Path, args: &NeoxArgs) -> Vec<Vec<f32>> {
    let mut config = args.model.clone();
    config.vocab_size = 32;
    let device = Default::default();
    let model: GptNeox<Cpu> = config.init(&device);
    let optim = NeoxOptimizer::new(&args.optim);
    let latest = checkpoint::latest(dir).unwrap().unwrap();
    let restored =
        checkpoint::load(&latest, model, optim, &device, &DataParallel::single()).unwrap();
    parameter_values(&restored.model)
}

/// The model `seed` makes; ranks that are threads take turns with the
/// process's one RNG, and every parameter is drawn while the turn lasts.
pub fn seeded<B: AutodiffBackend>(config: &ModelConfig, seed: u64) -> GptNeox<B> {
    static TURN: Mutex<()> = Mutex::new(());
    let _turn = TURN.lock().unwrap_or_else(|p| p.into_inner());
    let device = Default::default();
    B::seed(&device, seed);
    let model = config.init::<B>(&device);
    parameter_values(&model);
    model
}

/// Asserts `got` equals `want` within `tolerance` of `want`'s largest magnitude.
pub fn assert_within(got: &[f32], want: &[f32], tolerance: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    // `f32::max` passes over NaN: a NaN would otherwise read as no error.
    assert!(
        got.iter().chain(want).all(|v| v.is_finite()),
        "{what}: non-finite values"
    );
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let err = got
        .iter()
        .zip(want)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        err <= tolerance * scale,
        "{what}: max error {err} against {scale}"
    );
}

/// Copies the folder tree `from` to `to`.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        if path.is_dir() {
            copy_tree(&path, &to.join(entry.file_name()));
        } else {
            std::fs::copy(&path, to.join(entry.file_name())).unwrap();
        }
    }
}

/// Copies the checkpoint of iteration `step` in `from` into `to`, as `to`'s
/// latest.
pub fn copy_checkpoint(from: &Path, to: &Path, step: u64) {
    let name = format!("global_step{step}");
    copy_tree(&from.join(&name), &to.join(&name));
    std::fs::write(to.join("latest"), name).unwrap();
}
