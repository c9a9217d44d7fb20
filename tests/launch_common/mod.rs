//! Running `neox-launch` from the tests: every wait has a deadline.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const LAUNCH: &str = env!("CARGO_BIN_EXE_neox-launch");

/// What one launch did.
#[derive(Debug)]
pub struct Run {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

/// `neox-launch ARGS` in `dir` with `env` added, killed and failed past `timeout`.
pub fn launch(args: &[&str], dir: &Path, env: &[(&str, &str)], timeout: Duration) -> Run {
    let start = Instant::now();
    let mut child = command(args, dir, env)
        .spawn()
        .expect("cannot start neox-launch");
    let stdout = collect(child.stdout.take());
    let stderr = collect(child.stderr.take());
    let status = wait(&mut child, timeout);
    let elapsed = start.elapsed();
    let (stdout, stderr) = (stdout.join().unwrap(), stderr.join().unwrap());
    let Some(status) = status else {
        panic!(
            "neox-launch {args:?} still ran after {timeout:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"
        );
    };
    Run {
        status,
        stdout,
        stderr,
        elapsed,
    }
}

/// The launcher's command, output piped, no hostfile from the test's environment.
pub fn command(args: &[&str], dir: &Path, env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(LAUNCH);
    cmd.args(args)
        .current_dir(dir)
        .env_remove("DLTS_HOSTFILE")
        .env("NEOX_LOG", "info")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// The child's status, or `None` (after killing it) past `timeout`.
pub fn wait(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn collect(pipe: Option<impl Read + Send + 'static>) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_string(&mut text);
        }
        text
    })
}

/// The lines of `text` that start with `[rank K] `, without the prefix.
#[allow(dead_code)] // not every test binary uses it
pub fn rank_lines(text: &str, rank: usize) -> Vec<String> {
    let prefix = format!("[rank {rank}] ");
    text.lines()
        .filter_map(|l| l.strip_prefix(&prefix).map(String::from))
        .collect()
}
