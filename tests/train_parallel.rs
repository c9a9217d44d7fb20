//! `neox-train` on two data-parallel ranks as processes, through the real
//! binaries: started by `neox-launch --nproc 2`, by the test under a
//! torchrun-style environment, and on two "machines" of a hostfile through a
//! stand-in remote command. Each writes the `metrics.jsonl` of one process
//! accumulating both ranks' micro batches, bit for bit. A rank killed with
//! SIGKILL ends the other with an error naming it; the run then resumes from
//! its last checkpoint as if never interrupted. Two ranks of one tensor-
//! or pipeline-parallel model train to one process's losses; a pipe 2 x
//! model 2 checkpoint exports to one Hugging Face model and resumes in one
//! process.
//! 1-bit Adam's warmup equals one process; its compressed stage trains over TCP.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const TRAIN: &str = env!("CARGO_BIN_EXE_neox-train");
const LAUNCH: &str = env!("CARGO_BIN_EXE_neox-launch");
const CONVERT: &str = env!("CARGO_BIN_EXE_neox-convert");
const EVAL: &str = env!("CARGO_BIN_EXE_neox-eval");

mod common;
use common::{cpu_tiny_configs, run_metrics};

/// A tiny char-level model (cpu-tiny's shape, shorter run).
const RUN: &str = "train_iters: 8\nlr_decay_iters: 8\neval_interval: 4\neval_iters: 2\n\
                   log_interval: 1\ncheckpoint_factor: 4\ntrain_micro_batch_size_per_gpu: 4\n";

/// The config files of a run in `dir` (its checkpoints and metrics in `dir/run`).
fn configs(dir: &Path, extra: &str) -> Vec<PathBuf> {
    let run = format!(
        "save: {run}\nload: {run}\n{RUN}",
        run = dir.join("run").display()
    );
    // The run's own settings override the shared ones from a third file.
    cpu_tiny_configs(dir, &run, extra)
}

fn train_args(configs: &[PathBuf]) -> Vec<String> {
    let mut args = vec!["--config".to_string()];
    args.extend(configs.iter().map(|c| c.display().to_string()));
    args
}

/// Waits for `child` at most `limit`; kills it past that.
fn wait(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("a process ran past {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn output(mut command: Command, limit: Duration) -> (bool, String) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (out, err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let out = std::thread::spawn(move || std::io::read_to_string(out).unwrap_or_default());
    let err = std::thread::spawn(move || std::io::read_to_string(err).unwrap_or_default());
    let status = wait(&mut child, limit);
    let text = format!("{}{}", out.join().unwrap(), err.join().unwrap());
    (status.success(), text)
}

/// A port that is free now, below Linux's ephemeral range (32768+) so that no
/// outgoing connection of a parallel test can take it before it is bound, and
/// never handed out twice in this process.
fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    loop {
        let step = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20_000
            + ((std::process::id() as u16)
                .wrapping_mul(97)
                .wrapping_add(step)
                % 12_000);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
            && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok()
        {
            return port;
        }
    }
}

/// Everything in `metrics.jsonl` but the timings.
fn numbers(dir: &Path) -> Vec<(String, u64, f64, Option<f64>)> {
    run_metrics(dir)
        .into_iter()
        .map(|r| {
            (
                r["kind"].as_str().unwrap().to_string(),
                r["iteration"].as_u64().unwrap(),
                r["loss"].as_f64().unwrap(),
                r["grad_norm"].as_f64(),
            )
        })
        .collect()
}

/// The loss scale of each train record (`None` but in fp16).
fn loss_scales(dir: &Path) -> Vec<Option<f64>> {
    run_metrics(dir)
        .into_iter()
        .filter(|r| r["kind"] == "train")
        .map(|r| r["loss_scale"].as_f64())
        .collect()
}

/// One process accumulating two micro batches per step: the reference.
fn one_process(dir: &Path, extra: &str) -> Vec<(String, u64, f64, Option<f64>)> {
    let mut c = Command::new(TRAIN);
    let extra = format!("gradient_accumulation_steps: 2\n{extra}");
    c.args(train_args(&configs(dir, &extra)));
    let (ok, text) = output(c, Duration::from_secs(300));
    assert!(ok, "{text}");
    numbers(dir)
}

/// Two ranks started by the test as torchrun would start them.
fn torchrun_style(dir: &Path, extra: &str, timeout: &str) -> Vec<Child> {
    two_ranks(&configs(dir, extra), timeout)
}

/// Two ranks of `configs` under a torchrun-style environment.
fn two_ranks(configs: &[PathBuf], timeout: &str) -> Vec<Child> {
    ranks(configs, 2, timeout)
}

/// `n` ranks of `configs` under a torchrun-style environment.
fn ranks(configs: &[PathBuf], n: usize, timeout: &str) -> Vec<Child> {
    let port = free_port().to_string();
    (0..n)
        .map(|rank| {
            Command::new(TRAIN)
                .args(train_args(configs))
                .args(["--comm-timeout", timeout])
                .env("RANK", rank.to_string())
                .env("LOCAL_RANK", rank.to_string())
                .env("WORLD_SIZE", n.to_string())
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", &port)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect()
}

#[test]
fn two_ranks_equal_one_process_accumulating_however_started() {
    let reference = tempfile::tempdir().unwrap();
    let expected = one_process(reference.path(), "");
    assert_eq!(expected.iter().filter(|r| r.0 == "train").count(), 8);

    // neox-launch on this machine.
    let launched = tempfile::tempdir().unwrap();
    let mut c = Command::new(LAUNCH);
    c.args(["--nproc", "2", "--", TRAIN]);
    c.args(train_args(&configs(launched.path(), "")));
    let (ok, text) = output(c, Duration::from_secs(300));
    assert!(ok, "{text}");
    assert!(text.contains("[rank 1]"), "{text}");
    assert_eq!(numbers(launched.path()), expected, "neox-launch --nproc 2");

    // The environment torchrun makes.
    let env = tempfile::tempdir().unwrap();
    for (rank, mut child) in torchrun_style(env.path(), "", "60").into_iter().enumerate() {
        let status = wait(&mut child, Duration::from_secs(300));
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        assert!(status.success(), "rank {rank}: {err}");
    }
    assert_eq!(numbers(env.path()), expected, "torchrun-style environment");

    // Two "machines" of a hostfile, reached through a stand-in for ssh that
    // drops the host name and runs the command here.
    let hosts = tempfile::tempdir().unwrap();
    let hostfile = hosts.path().join("hostfile");
    std::fs::write(&hostfile, "127.0.0.1 slots=1\nlocalhost slots=1\n").unwrap();
    let ssh = hosts.path().join("fake-ssh");
    std::fs::write(&ssh, "#!/bin/sh\nshift\nexec sh -c \"$*\"\n").unwrap();
    std::fs::set_permissions(&ssh, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut c = Command::new(LAUNCH);
    c.arg("--hostfile").arg(&hostfile);
    c.arg("--remote-command").arg(&ssh);
    let port = free_port().to_string();
    c.args([
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        &port,
        "--",
        TRAIN,
    ]);
    c.args(train_args(&configs(hosts.path(), "")));
    let (ok, text) = output(c, Duration::from_secs(300));
    assert!(ok, "{text}");
    assert_eq!(numbers(hosts.path()), expected, "hostfile");
}

#[test]
fn a_killed_rank_stops_the_other_and_the_run_resumes() {
    // Long enough that the kill lands mid-run.
    const LONGER: &str = "train_iters: 24\nlr_decay_iters: 24\neval_interval: 12\n";
    let reference = tempfile::tempdir().unwrap();
    let expected = one_process(reference.path(), LONGER);

    // Kill rank 1 once the checkpoint of step 4 exists.
    let dir = tempfile::tempdir().unwrap();
    let mut ranks = torchrun_style(dir.path(), LONGER, "20");
    let start = Instant::now();
    while !dir.path().join("run/global_step4").is_dir() {
        assert!(start.elapsed() < Duration::from_secs(240), "no checkpoint");
        if let Some(status) = ranks[0].try_wait().unwrap() {
            panic!("rank 0 ended early: {status}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    ranks[1].kill().unwrap(); // SIGKILL
    ranks[1].wait().unwrap();
    let killed_at = Instant::now();
    let status = wait(&mut ranks[0], Duration::from_secs(60));
    let mut err = String::new();
    std::io::Read::read_to_string(&mut ranks[0].stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "rank 0 went on alone: {err}");
    assert!(
        err.contains("rank 1"),
        "the error does not name rank 1: {err}"
    );
    assert!(
        killed_at.elapsed() < Duration::from_secs(30),
        "took {:?}",
        killed_at.elapsed()
    );

    // Resume both ranks: the run ends as if never interrupted.
    assert!(!dir.path().join("run/global_step24").exists());
    for (rank, mut child) in torchrun_style(dir.path(), LONGER, "60")
        .into_iter()
        .enumerate()
    {
        let status = wait(&mut child, Duration::from_secs(300));
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        assert!(status.success(), "rank {rank}: {err}");
    }
    let tail: Vec<_> = numbers(dir.path())
        .into_iter()
        .filter(|r| r.1 > 4)
        .collect();
    let expected_tail: Vec<_> = expected.into_iter().filter(|r| r.1 > 4).collect();
    assert_eq!(tail, expected_tail);
}

/// The config files of a run logging its metrics to `dir/run`, no checkpoints.
fn configs_without_checkpoints(dir: &Path, extra: &str) -> Vec<PathBuf> {
    let run = format!(
        "log_dir: {}\ntrain_iters: 8\nlr_decay_iters: 8\n\
         eval_interval: 4\neval_iters: 2\nlog_interval: 1\n\
         train_micro_batch_size_per_gpu: 4\n",
        dir.join("run").display()
    );
    cpu_tiny_configs(dir, &run, extra)
}

/// One process's metrics for `extra`.
fn reference(extra: &str) -> Vec<(String, u64, f64, Option<f64>)> {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Command::new(TRAIN);
    c.args(train_args(&configs_without_checkpoints(dir.path(), extra)));
    let (ok, text) = output(c, Duration::from_secs(300));
    assert!(ok, "{text}");
    numbers(dir.path())
}

#[test]
fn tensor_or_pipeline_parallel_ranks_train_to_one_process_losses() {
    // Dropout too for tensor parallelism: its ranks draw the unsplit model's
    // masks (attention dropout: each rank its heads' part of one mask).
    const DROPOUT: &str = "hidden_dropout: 0.1\nattention_dropout: 0.1\n";
    let plain = reference("");
    assert_eq!(plain.iter().filter(|r| r.0 == "train").count(), 8);
    assert_eq!(plain.iter().filter(|r| r.0 == "valid").count(), 2);
    let dropped = reference(DROPOUT);
    assert_ne!(dropped[0].2, plain[0].2, "dropout changed nothing");
    // Recomputing, one process and the tensor ranks reseed each piece of a
    // micro batch alike: the same masks again.
    const RECOMPUTE: &str = "checkpoint_activations: true\n";
    let recomputed = reference(&format!("{DROPOUT}{RECOMPUTE}"));
    assert_ne!(
        recomputed[0].2, dropped[0].2,
        "the reseeded masks are the stored run's"
    );
    for (extra, expected) in [
        ("model_parallel_size: 2\n".to_string(), &plain),
        ("pipe_parallel_size: 2\n".to_string(), &plain),
        (format!("model_parallel_size: 2\n{DROPOUT}"), &dropped),
        (
            format!("model_parallel_size: 2\n{DROPOUT}{RECOMPUTE}"),
            &recomputed,
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let configs = configs_without_checkpoints(dir.path(), &extra);
        for (rank, mut child) in two_ranks(&configs, "60").into_iter().enumerate() {
            let status = wait(&mut child, Duration::from_secs(300));
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            assert!(status.success(), "{extra}rank {rank}: {err}");
            // The split model's loop ran (it names the stages).
            if rank == 0 {
                assert!(err.contains("pipeline stage"), "{extra}{err}");
            }
        }
        let got = numbers(dir.path());
        assert_eq!(got.len(), expected.len(), "{extra}");
        for (g, e) in got.iter().zip(expected) {
            assert_eq!((&g.0, g.1), (&e.0, e.1), "{extra}");
            let close = |a: f64, b: f64| (a - b).abs() <= 1e-5 * b.abs();
            assert!(
                close(g.2, e.2),
                "{extra}{} {}: loss {} != {}",
                g.0,
                g.1,
                g.2,
                e.2
            );
            if let (Some(a), Some(b)) = (g.3, e.3) {
                assert!(close(a, b), "{extra}{} {}: grad norm {a} != {b}", g.0, g.1);
            }
        }
    }
}

#[test]
fn split_ranks_train_in_bf16_with_recomputed_activations_as_one_process() {
    // cpu-tiny's output layer is untied: a pipeline in bf16 computes what one
    // process computes, bit for bit, recomputing activations or not; tensor
    // ranks add bf16 partial sums (each rounded) in another order.
    const BF16: &str = "bf16: {enabled: true}\n";
    let expected = reference(BF16);
    for (extra, tolerance) in [
        ("pipe_parallel_size: 2\ncheckpoint_activations: true\n", 0.0),
        (
            "model_parallel_size: 2\ncheckpoint_activations: true\n",
            1e-2,
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let configs = configs_without_checkpoints(dir.path(), &format!("{BF16}{extra}"));
        for (rank, mut child) in two_ranks(&configs, "60").into_iter().enumerate() {
            let status = wait(&mut child, Duration::from_secs(300));
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            assert!(status.success(), "{extra}rank {rank}: {err}");
        }
        let got = numbers(dir.path());
        assert_eq!(got.len(), expected.len(), "{extra}");
        for (g, e) in got.iter().zip(&expected) {
            assert_eq!((&g.0, g.1), (&e.0, e.1), "{extra}");
            let close = |a: f64, b: f64| (a - b).abs() <= tolerance * b.abs();
            assert!(
                close(g.2, e.2),
                "{extra}{} {}: loss {} != {}",
                g.0,
                g.1,
                g.2,
                e.2
            );
            if let (Some(a), Some(b)) = (g.3, e.3) {
                assert!(close(a, b), "{extra}{} {}: grad norm {a} != {b}", g.0, g.1);
            }
        }
    }
}

#[test]
fn grids_that_cannot_be_made_are_refused_by_name() {
    for (extra, needle) in [
        (
            "model_parallel_size: 3\n",
            "model_parallel_size 3 = 3 does not divide the 1 rank(s)",
        ),
        ("model_parallel_size: 0\n", "model_parallel_size"),
        (
            "pipe_partition_method: profile\n",
            "pipe_partition_method `profile`: expected `uniform`, `parameters` or `type:",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Command::new(TRAIN);
        c.args(train_args(&configs_without_checkpoints(dir.path(), extra)));
        let (ok, text) = output(c, Duration::from_secs(60));
        assert!(!ok, "{extra}{text}");
        assert!(text.contains(needle), "{extra}{text}");
        assert!(text.contains("own.yml"), "the file is not named: {text}");
    }
}

#[test]
fn split_runs_save_each_share_and_resume_bit_for_bit() {
    for (extra, shares) in [
        ("model_parallel_size: 2\n", ["pp0-tp0", "pp0-tp1"]),
        ("pipe_parallel_size: 2\n", ["pp0-tp0", "pp1-tp0"]),
        // The loss scaler's state travels in every share: its scale doubles
        // every 2 clean steps here, so a scaler started afresh would differ.
        (
            "model_parallel_size: 2\nfp16: {enabled: true, loss_scale_window: 2}\n",
            ["pp0-tp0", "pp0-tp1"],
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        let extra = format!(
            "{extra}save: {run}\nload: {run}\ncheckpoint_factor: 4\n",
            run = run.display()
        );
        let configs = configs_without_checkpoints(dir.path(), &extra);
        let train = |what: &str| -> String {
            let mut first = String::new();
            for (rank, mut child) in two_ranks(&configs, "60").into_iter().enumerate() {
                let status = wait(&mut child, Duration::from_secs(300));
                let mut err = String::new();
                std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
                assert!(status.success(), "{extra}{what} rank {rank}: {err}");
                if rank == 0 {
                    first = err;
                }
            }
            first
        };
        train("first run");
        let whole = numbers(dir.path());
        assert_eq!(whole.iter().filter(|r| r.0 == "train").count(), 8);
        let scales = loss_scales(dir.path());
        // Back to step 4 in every share: the later checkpoint removed.
        for share in shares {
            let share = run.join(share);
            assert!(share.join("global_step4/model.bin").is_file(), "{extra}");
            std::fs::remove_dir_all(share.join("global_step8")).unwrap();
            std::fs::write(share.join("latest"), "global_step4").unwrap();
        }
        let log = train("resumed run");
        assert!(log.contains("resumed every share"), "{extra}{log}");
        assert_eq!(numbers(dir.path()), whole, "{extra}resumed at step 4");
        assert_eq!(loss_scales(dir.path()), scales, "{extra}resumed at step 4");
        // Shares at different steps are refused.
        std::fs::write(run.join(shares[1]).join("latest"), "global_step4").unwrap();
        std::fs::write(run.join(shares[0]).join("latest"), "global_step8").unwrap();
        for (rank, mut child) in two_ranks(&configs, "60").into_iter().enumerate() {
            let status = wait(&mut child, Duration::from_secs(120));
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            assert!(!status.success(), "{extra}rank {rank} resumed mixed shares");
            assert!(err.contains("different iterations"), "{extra}{err}");
        }
    }
}

/// The logits of the split checkpoint in `save` at `step` for `tokens`,
/// computed by its shares as they were saved: each tensor rank a thread
/// running both stages in turn (nothing merged).
fn split_logits(save: &Path, step: u64, tokens: &[i64]) -> Vec<f32> {
    use burn::backend::Flex;
    use burn::module::Module;
    use burn::record::{BinFileRecorder, FullPrecisionSettings};
    use burn::tensor::{Int, Tensor, TensorData};
    use neox_trainer::dist::comm::threads::ThreadComm;
    use neox_trainer::dist::shard::StageInput;
    use neox_trainer::dist::tensor_parallel::{TpGroup, layers::Shard};
    use neox_trainer::dist::{GptShard, merge};
    use std::sync::Arc;

    let share = |p: usize, t: usize| save.join(format!("pp{p}-tp{t}/global_step{step}"));
    let state = neox_trainer::checkpoint::read_state(&share(0, 0)).unwrap();
    let layout = state.layout.clone().unwrap();
    assert_eq!((layout.pp(), layout.tp), (2, 2));
    let device = Default::default();
    let template = merge::filled(&state.model.init::<Flex>(&device), |_, n| vec![0.0; n]);
    let comms = ThreadComm::group(2, Duration::from_secs(60));
    let parts: Vec<Vec<f32>> = std::thread::scope(|s| {
        let handles: Vec<_> = comms
            .into_iter()
            .map(|comm| {
                let (template, layout, share) = (&template, &layout, &share);
                s.spawn(move || {
                    let group = TpGroup::new(Arc::new(comm));
                    let shard = Shard {
                        rank: group.rank(),
                        size: 2,
                    };
                    let stage = |p: usize| {
                        GptShard::new(template, layout.stage(p), shard, group.clone())
                            .unwrap()
                            .load_file(
                                share(p, shard.rank).join("model"),
                                &BinFileRecorder::<FullPrecisionSettings>::new(),
                                &Default::default(),
                            )
                            .unwrap()
                    };
                    let input = Tensor::<Flex, 2, Int>::from_data(
                        TensorData::new(tokens.to_vec(), [1, tokens.len()]),
                        &Default::default(),
                    );
                    let hidden = stage(0).forward_stage(StageInput::Tokens(input));
                    let logits = stage(1).forward_stage(StageInput::Hidden(hidden));
                    group.check().unwrap();
                    logits.into_data().iter::<f32>().collect()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // Each rank holds half of every row's vocabulary.
    let half = state.model.vocab_size / 2;
    (0..tokens.len())
        .flat_map(|row| {
            parts
                .iter()
                .flat_map(move |p| p[row * half..(row + 1) * half].iter().copied())
        })
        .collect()
}

#[test]
fn a_pipe_2_x_model_2_checkpoint_exports_to_hugging_face_and_resumes_in_one_process() {
    let expected = reference("");
    let dir = tempfile::tempdir().unwrap();
    let save = dir.path().join("checkpoints");
    let own = |extra: &str| {
        format!(
            "{extra}save: {s}\nload: {s}\ncheckpoint_factor: 4\n",
            s = save.display()
        )
    };
    // Four ranks, stopping after the checkpoint of step 4.
    let configs = configs_without_checkpoints(
        dir.path(),
        &own("pipe_parallel_size: 2\nmodel_parallel_size: 2\ntrain_iters: 4\n"),
    );
    for (rank, mut child) in ranks(&configs, 4, "60").into_iter().enumerate() {
        let status = wait(&mut child, Duration::from_secs(300));
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        assert!(status.success(), "rank {rank}: {err}");
    }
    for share in ["pp0-tp0", "pp0-tp1", "pp1-tp0", "pp1-tp1"] {
        assert!(save.join(share).join("global_step4/model.bin").is_file());
    }

    // One Hugging Face model, computing what the four shares compute.
    let hf = dir.path().join("hf");
    let mut c = Command::new(CONVERT);
    c.args(["to-hf", "--checkpoint"])
        .arg(&save)
        .arg("--out")
        .arg(&hf);
    let (ok, text) = output(c, Duration::from_secs(120));
    assert!(ok, "{text}");
    assert!(text.contains("iteration 4"), "{text}");
    let model: neox_trainer::GptNeox<burn::backend::Flex> =
        neox_trainer::hf::load(&hf, &Default::default()).unwrap();
    let tokens: Vec<i64> = (0..32).map(|i| (i * 37 + 11) % 120).collect();
    let input = burn::tensor::Tensor::<burn::backend::Flex, 2, burn::tensor::Int>::from_data(
        burn::tensor::TensorData::new(tokens.clone(), [1, tokens.len()]),
        &Default::default(),
    );
    let got: Vec<f32> = model.forward(input).into_data().iter::<f32>().collect();
    let want = split_logits(&save, 4, &tokens);
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let err = got
        .iter()
        .zip(&want)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(err <= 1e-4 * scale, "max error {err} against {scale}");

    // One process resumes the split run at step 4 and ends as the
    // uninterrupted one-process run, within tensor parallelism's rounding.
    let configs = configs_without_checkpoints(dir.path(), &own(""));
    let mut c = Command::new(TRAIN);
    c.args(train_args(&configs));
    let (ok, text) = output(c, Duration::from_secs(300));
    assert!(ok, "{text}");
    assert!(text.contains("resharding pp2-tp2 -> pp1-tp1"), "{text}");
    // (The first run's own test record, at step 4, is left out with the rest.)
    let after_4 = |r: Vec<(String, u64, f64, Option<f64>)>| -> Vec<_> {
        r.into_iter().filter(|r| r.1 > 4).collect()
    };
    let (got, expected) = (after_4(numbers(dir.path())), after_4(expected));
    assert_eq!(got.len(), expected.len(), "{got:?}");
    assert!(got.len() >= 5, "{got:?}");
    for (g, e) in got.iter().zip(&expected) {
        assert_eq!((&g.0, g.1), (&e.0, e.1));
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-5 * b.abs();
        assert!(close(g.2, e.2), "{} {}: loss {} != {}", g.0, g.1, g.2, e.2);
        if let (Some(a), Some(b)) = (g.3, e.3) {
            assert!(close(a, b), "{} {}: grad norm {a} != {b}", g.0, g.1);
        }
    }

    // The folder now holds the shares (step 4) and the unsplit run's
    // checkpoints: a step only the latter has is exported from them.
    assert!(save.join("global_step8/state.json").is_file());
    let mut c = Command::new(CONVERT);
    c.args(["to-hf", "--step", "8", "--checkpoint"])
        .arg(&save)
        .arg("--out")
        .arg(dir.path().join("hf8"));
    let (ok, text) = output(c, Duration::from_secs(120));
    assert!(ok && text.contains("iteration 8"), "{text}");

    // neox-eval reads the split checkpoint merged: the export's loss.
    let eval = |source: &[&std::ffi::OsStr]| -> f64 {
        let mut c = Command::new(EVAL);
        c.args(source)
            .args(["--split", "test", "--json", "--config"]);
        c.args(&configs);
        let (ok, text) = output(c, Duration::from_secs(120));
        assert!(ok, "{text}");
        let line = text
            .lines()
            .find(|l| l.starts_with('{'))
            .unwrap_or_default();
        serde_json::from_str::<Value>(line).unwrap()["loss"]
            .as_f64()
            .unwrap()
    };
    let split = eval(&[
        "--checkpoint".as_ref(),
        save.as_os_str(),
        "--step".as_ref(),
        "4".as_ref(),
    ]);
    let exported = eval(&["--hf".as_ref(), hf.as_os_str()]);
    assert!(
        (split - exported).abs() <= 1e-6 * exported,
        "{split} vs {exported}"
    );

    // Offline: step 4's shares cut for one process, optimizer state included;
    // a layout that cannot be made refused by name.
    let one = dir.path().join("one");
    let reshard = |out: &Path, tp: &str| {
        let mut c = Command::new(CONVERT);
        c.args([
            "reshard",
            "--step",
            "4",
            "--model-parallel-size",
            tp,
            "--checkpoint",
        ])
        .arg(&save)
        .arg("--out")
        .arg(out);
        output(c, Duration::from_secs(120))
    };
    let (ok, text) = reshard(&one, "1");
    assert!(ok, "{text}");
    assert!(text.contains("from pp2-tp2 to pp1-tp1"), "{text}");
    assert!(one.join("global_step4/optim_decay_rank0.bin").is_file());
    let (ok, text) = reshard(&dir.path().join("three"), "3");
    assert!(!ok && text.contains("model_parallel_size 3"), "{text}");

    // A share missing: named, and nothing written.
    std::fs::remove_dir_all(save.join("pp1-tp1")).unwrap();
    let bad = dir.path().join("bad");
    let mut c = Command::new(CONVERT);
    c.args(["to-hf", "--step", "4", "--checkpoint"])
        .arg(&save)
        .arg("--out")
        .arg(&bad);
    let (ok, text) = output(c, Duration::from_secs(120));
    assert!(!ok, "{text}");
    assert!(
        text.contains("pp1-tp1") && text.contains("missing"),
        "{text}"
    );
    assert!(!bad.join("model.safetensors").exists());
}

/// The final validation loss of a run's metrics.
fn last_valid(numbers: &[(String, u64, f64, Option<f64>)]) -> f64 {
    numbers.iter().rev().find(|r| r.0 == "valid").unwrap().2
}

#[test]
fn one_bit_adam_over_tcp_warms_up_as_one_process_then_compresses() {
    const ONEBIT: &str = "optimizer: {type: OneBitAdam, params: {lr: 0.002, betas: [0.9, 0.95], \
                          weight_decay: 0.01, freeze_step: FREEZE}}\n\
                          train_iters: 20\nlr_decay_iters: 20\neval_interval: 10\n";
    let warmup_only = ONEBIT.replace("FREEZE", "1000");
    // Before freeze_step: data-parallel Adam, equal to one process bit for bit.
    let reference = tempfile::tempdir().unwrap();
    let expected = one_process(reference.path(), &warmup_only);
    let launch = |dir: &Path, extra: &str| {
        let mut c = Command::new(LAUNCH);
        c.args(["--nproc", "2", "--", TRAIN]);
        c.args(train_args(&configs(dir, extra)));
        let (ok, text) = output(c, Duration::from_secs(300));
        assert!(ok, "{text}");
        numbers(dir)
    };
    let warm = tempfile::tempdir().unwrap();
    assert_eq!(launch(warm.path(), &warmup_only), expected);
    // After freeze_step 3 the momenta travel compressed; the run still trains
    // and its checkpoint holds both ranks' errors.
    let compressed = tempfile::tempdir().unwrap();
    let got = launch(compressed.path(), &ONEBIT.replace("FREEZE", "3"));
    let (a, b) = (last_valid(&got), last_valid(&expected));
    let first = got.iter().find(|r| r.0 == "train").unwrap().2;
    eprintln!("valid loss: compressed {a}, uncompressed {b}; first train loss {first}");
    assert!(
        a < 0.7 * first,
        "compressed run did not learn: {a} from {first}"
    );
    // Measured: 3.57 against 3.89 (the frozen variance, small this early,
    // makes larger steps): no worse than uncompressed by more than 0.1.
    assert!(a < b + 0.1, "compressed {a} vs uncompressed {b}");
    for rank in 0..2 {
        let errors = format!("run/global_step20/onebit_errors_rank{rank}.safetensors");
        assert!(compressed.path().join(&errors).exists(), "{errors}");
    }
}
