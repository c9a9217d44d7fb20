//! Runs the ranks and watches them, as GPT-NeoX's cluster scripts do by hand:
//! output prefixed `[rank K] `; when one rank fails, every other rank is
//! stopped (its `killall.sh`, built in); Ctrl-C and SIGTERM reach every rank.
//!
//! Each local process is the leader of its own process group, so a signal
//! reaches whatever it started too. A remote rank prints its pid first
//! (see [`super::plan`]); it is stopped by `kill` through the same remote command.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use std::os::unix::process::{CommandExt, ExitStatusExt};

use anyhow::{Context, Result};

use super::plan::{PID_MARKER, RankSpec, RemoteCommand, remote_kill_line};

/// How often the children are looked at.
const POLL: Duration = Duration::from_millis(50);
/// How long output still flowing after the ranks ended is waited for.
const DRAIN: Duration = Duration::from_secs(2);

/// How the run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every rank exited with status 0.
    Success,
    /// The first rank that failed, how, and how many others were still
    /// running then (and so were stopped).
    Failed {
        rank: usize,
        host: Option<String>,
        status: String,
        stopped: usize,
    },
    /// Stopped by this signal (forwarded to every rank).
    Interrupted(i32),
}

impl Outcome {
    /// What went wrong, for the user: `rank 1 on host-b exited with status 3; ...`.
    pub fn describe(&self) -> Option<String> {
        match self {
            Outcome::Success => None,
            Outcome::Failed {
                rank,
                host,
                status,
                stopped,
            } => {
                let on = host
                    .as_ref()
                    .map(|h| format!(" on {h}"))
                    .unwrap_or_default();
                let rest = match stopped {
                    0 => "no other rank was running".to_string(),
                    1 => "stopping the 1 other rank still running".to_string(),
                    n => format!("stopping the {n} other ranks still running"),
                };
                Some(format!("rank {rank}{on} {status}; {rest}"))
            }
            Outcome::Interrupted(sig) => {
                Some(format!("interrupted by signal {sig}; every rank was told"))
            }
        }
    }

    /// The launcher's exit status.
    pub fn exit_code(&self) -> u8 {
        match self {
            Outcome::Success => 0,
            Outcome::Failed { .. } => 1,
            Outcome::Interrupted(sig) => 128u8.saturating_add(*sig as u8),
        }
    }
}

/// One started rank.
struct Running {
    spec: RankSpec,
    child: Child,
    status: Option<ExitStatus>,
    /// The pid of a remote rank on its host, once it printed it.
    remote_pid: Arc<OnceLock<u32>>,
    readers: Vec<JoinHandle<()>>,
}

/// Starts every rank, waits for all of them, and stops the rest when one
/// fails or a signal comes; `grace` is how long ranks get between SIGTERM and SIGKILL.
pub fn run(
    ranks: Vec<RankSpec>,
    remote: Option<&RemoteCommand>,
    grace: Duration,
) -> Result<Outcome> {
    let signal = Arc::new(AtomicUsize::new(0));
    // SIGHUP too: the ranks sit in process groups of their own, so a closed
    // terminal or ssh session would not reach them otherwise.
    for sig in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
        signal_hook::consts::SIGQUIT,
    ] {
        signal_hook::flag::register_usize(sig, Arc::clone(&signal), sig as usize)
            .context("cannot install the signal handler")?;
    }
    let mut running: Vec<Running> = Vec::with_capacity(ranks.len());
    let mut helpers: Vec<Child> = Vec::new();
    for spec in ranks {
        match start(spec.clone()) {
            Ok(r) => running.push(r),
            Err(e) => {
                stop_all(&mut running, remote, &mut helpers, "KILL");
                wait_all(&mut running, Instant::now() + grace);
                return Err(e);
            }
        }
    }
    let mut outcome = Outcome::Success;
    // When SIGTERM (or the forwarded signal) went out, and whether SIGKILL followed.
    let mut stopping: Option<Instant> = None;
    let mut killed = false;
    loop {
        let mut failed_now = false;
        for r in running.iter_mut().filter(|r| r.status.is_none()) {
            let Some(status) = r.child.try_wait().context("cannot wait for a rank")? else {
                continue;
            };
            r.status = Some(status);
            if !status.success() && outcome == Outcome::Success {
                outcome = Outcome::Failed {
                    rank: r.spec.rank,
                    host: r.spec.host.clone(),
                    status: describe(status),
                    stopped: 0,
                };
                failed_now = true;
            }
        }
        if failed_now && let Outcome::Failed { stopped, .. } = &mut outcome {
            *stopped = running.iter().filter(|r| r.status.is_none()).count();
            tracing::error!("{}", outcome.describe().unwrap_or_default());
        }
        if running.iter().all(|r| r.status.is_some()) {
            break;
        }
        let sig = signal.swap(0, Ordering::SeqCst) as i32;
        if sig != 0 && stopping.is_some() {
            tracing::warn!("signal {sig} while stopping: killing every rank");
            stop_all(&mut running, remote, &mut helpers, "KILL");
            killed = true;
        } else if sig != 0 {
            let name = if sig == libc::SIGINT { "INT" } else { "TERM" };
            tracing::warn!("SIG{name} received: passing it to every rank");
            stop_all(&mut running, remote, &mut helpers, name);
            if outcome == Outcome::Success {
                outcome = Outcome::Interrupted(sig);
            }
            stopping = Some(Instant::now());
        } else if failed_now && stopping.is_none() {
            stop_all(&mut running, remote, &mut helpers, "TERM");
            stopping = Some(Instant::now());
        }
        if let Some(since) = stopping
            && !killed
            && since.elapsed() >= grace
        {
            tracing::warn!("ranks still running {grace:?} after SIGTERM: killing them");
            stop_all(&mut running, remote, &mut helpers, "KILL");
            killed = true;
        }
        std::thread::sleep(POLL);
    }
    reap(helpers);
    drain(&mut running);
    Ok(outcome)
}

/// Starts one rank with its output prefixed.
fn start(spec: RankSpec) -> Result<Running> {
    let mut child = Command::new(&spec.program)
        .args(&spec.args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .with_context(|| format!("rank {}: cannot start `{}`", spec.rank, spec.program))?;
    let remote_pid = Arc::new(OnceLock::new());
    let mut readers = Vec::new();
    let prefix = format!("[rank {}] ", spec.rank);
    if let Some(out) = child.stdout.take() {
        let pid = spec.host.is_some().then(|| Arc::clone(&remote_pid));
        let prefix = prefix.clone();
        readers.push(std::thread::spawn(move || {
            forward(out, &prefix, pid, || Box::new(std::io::stdout().lock()))
        }));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(std::thread::spawn(move || {
            forward(err, &prefix, None, || Box::new(std::io::stderr().lock()))
        }));
    }
    Ok(Running {
        spec,
        child,
        status: None,
        remote_pid,
        readers,
    })
}

/// Copies `input` line by line behind `prefix`; a remote rank's pid line
/// (the first line it prints, after any login banner) is kept in `pid`, not shown.
fn forward(
    input: impl Read,
    prefix: &str,
    pid: Option<Arc<OnceLock<u32>>>,
    out: impl Fn() -> Box<dyn Write>,
) {
    let mut input = BufReader::new(input);
    let mut line = Vec::new();
    loop {
        line.clear();
        match input.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if let Some(pid) = &pid
            && pid.get().is_none()
            && let Some(n) = std::str::from_utf8(&line)
                .ok()
                .and_then(|l| l.trim_end().strip_prefix(PID_MARKER))
                .and_then(|n| n.parse().ok())
        {
            let _ = pid.set(n);
            continue;
        }
        if !line.ends_with(b"\n") {
            line.push(b'\n');
        }
        let mut out = out();
        let _ = out.write_all(prefix.as_bytes());
        let _ = out.write_all(&line);
        let _ = out.flush();
    }
}

/// Sends `signal` (`TERM`, `INT`, `KILL`) to every rank still running: to
/// local process groups directly, to remote ranks through `remote`.
fn stop_all(
    running: &mut [Running],
    remote: Option<&RemoteCommand>,
    helpers: &mut Vec<Child>,
    signal: &str,
) {
    let number = match signal {
        "INT" => libc::SIGINT,
        "KILL" => libc::SIGKILL,
        _ => libc::SIGTERM,
    };
    for r in running.iter_mut().filter(|r| r.status.is_none()) {
        if let (Some(host), Some(remote), Some(pid)) = (&r.spec.host, remote, r.remote_pid.get()) {
            let (program, args) = remote.on(host, remote_kill_line(signal, *pid));
            let helper = Command::new(program)
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn();
            match helper {
                Ok(h) => helpers.push(h),
                Err(e) => tracing::warn!(
                    "rank {} on {host}: cannot run the remote kill: {e}",
                    r.spec.rank
                ),
            }
            if number != libc::SIGKILL {
                // The remote command ends with the rank; keep the connection open until then.
                continue;
            }
        }
        // SAFETY: kill(2) on the process group this launcher created for the child.
        unsafe {
            libc::kill(-(r.child.id() as libc::pid_t), number);
        }
    }
}

/// Waits for every rank until `deadline`, then kills what is left.
fn wait_all(running: &mut [Running], deadline: Instant) {
    for r in running.iter_mut() {
        while r.status.is_none() {
            match r.child.try_wait() {
                Ok(Some(s)) => r.status = Some(s),
                Ok(None) if Instant::now() < deadline => std::thread::sleep(POLL),
                _ => {
                    let _ = r.child.kill();
                    r.status = r.child.wait().ok();
                    break;
                }
            }
        }
    }
}

/// Waits briefly for the remote kill commands, then ends them.
fn reap(helpers: Vec<Child>) {
    let deadline = Instant::now() + DRAIN;
    for mut h in helpers {
        while matches!(h.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(POLL);
        }
        if matches!(h.try_wait(), Ok(None)) {
            // SAFETY: kill(2) on the helper's own process group.
            unsafe {
                libc::kill(-(h.id() as libc::pid_t), libc::SIGKILL);
            }
            let _ = h.wait();
        }
    }
}

/// Lets the output threads finish what the ranks wrote, for a bounded time
/// (a grandchild that outlived its rank may hold the pipe open).
fn drain(running: &mut [Running]) {
    let deadline = Instant::now() + DRAIN;
    for r in running.iter_mut() {
        for reader in std::mem::take(&mut r.readers) {
            while !reader.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if reader.is_finished() {
                let _ = reader.join();
            }
        }
    }
}

/// `exited with status 3`, `was killed by signal 9 (SIGKILL)`.
pub fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => format!("was killed by signal {sig} ({})", signal_name(sig)),
        (None, None) => format!("ended: {status}"),
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGTERM => "SIGTERM",
        _ => "signal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_read_plainly() {
        assert_eq!(
            describe(ExitStatus::from_raw(3 << 8)),
            "exited with status 3"
        );
        assert_eq!(
            describe(ExitStatus::from_raw(9)),
            "was killed by signal 9 (SIGKILL)"
        );
        assert_eq!(Outcome::Interrupted(libc::SIGINT).exit_code(), 130);
    }

    #[test]
    fn output_is_prefixed_and_the_pid_line_kept_apart() {
        let captured = Arc::new(std::sync::Mutex::new(Vec::new()));
        struct Sink(Arc<std::sync::Mutex<Vec<u8>>>);
        impl Write for Sink {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let pid = Arc::new(OnceLock::new());
        let input: &[u8] = b"neox-launch-pid 4242\nhello\nno newline";
        let sink = Arc::clone(&captured);
        forward(input, "[rank 3] ", Some(Arc::clone(&pid)), move || {
            Box::new(Sink(Arc::clone(&sink)))
        });
        assert_eq!(pid.get(), Some(&4242));
        assert_eq!(
            String::from_utf8(captured.lock().unwrap().clone()).unwrap(),
            "[rank 3] hello\n[rank 3] no newline\n"
        );
    }
}
