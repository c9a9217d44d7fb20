//! `neox-launch --nproc N` through the real binary, with stand-in commands:
//! every rank gets its place; output comes prefixed by rank; a failing rank
//! stops the others quickly; SIGTERM reaches every rank; bad usage is refused.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::time::Duration;

mod launch_common;
use launch_common::{command, launch, rank_lines, wait};

const TIMEOUT: Duration = Duration::from_secs(60);

#[test]
fn two_ranks_get_their_places_and_prefixed_output() {
    let dir = tempfile::tempdir().unwrap();
    let run = launch(
        &[
            "--nproc",
            "2",
            "--",
            "sh",
            "-c",
            "echo $RANK $WORLD_SIZE $LOCAL_RANK $LOCAL_WORLD_SIZE $MASTER_ADDR $MASTER_PORT; echo oops $RANK >&2",
        ],
        dir.path(),
        &[],
        TIMEOUT,
    );
    assert!(run.status.success(), "{run:?}");
    let port = |rank: usize| {
        let lines = rank_lines(&run.stdout, rank);
        assert_eq!(lines.len(), 1, "{run:?}");
        let words: Vec<&str> = lines[0].split(' ').collect();
        let expected = [
            rank.to_string(),
            "2".into(),
            rank.to_string(),
            "2".into(),
            "127.0.0.1".into(),
        ];
        assert_eq!(words[..5], expected, "{run:?}");
        words[5].parse::<u16>().unwrap()
    };
    let (p0, p1) = (port(0), port(1));
    assert!(p0 > 0 && p0 == p1, "{run:?}");
    assert_eq!(rank_lines(&run.stderr, 0), ["oops 0"]);
    assert_eq!(rank_lines(&run.stderr, 1), ["oops 1"]);
}

#[test]
fn one_rank_by_default_with_the_given_master() {
    let dir = tempfile::tempdir().unwrap();
    let run = launch(
        &[
            "--master-port",
            "4321",
            "--master-addr",
            "10.1.2.3",
            "--",
            "sh",
            "-c",
            "echo $RANK $WORLD_SIZE $MASTER_ADDR $MASTER_PORT",
        ],
        dir.path(),
        &[],
        TIMEOUT,
    );
    assert!(run.status.success(), "{run:?}");
    assert_eq!(run.stdout, "[rank 0] 0 1 10.1.2.3 4321\n");
}

#[test]
fn a_failing_rank_stops_every_other_rank() {
    let dir = tempfile::tempdir().unwrap();
    // Rank 0 records its shell's and its sleep's pids, then sleeps; rank 1
    // fails once rank 0 is asleep.
    let script = "if [ $RANK = 1 ]; then while [ ! -s pids ]; do sleep 0.05; done; exit 3; \
                  else sleep 60 & echo $$ $! > pids.tmp && mv pids.tmp pids; wait; fi";
    let run = launch(
        &["--nproc", "2", "--", "sh", "-c", script],
        dir.path(),
        &[],
        TIMEOUT,
    );
    assert!(run.elapsed < Duration::from_secs(20), "{run:?}");
    assert_eq!(run.status.code(), Some(1), "{run:?}");
    assert!(
        run.stderr.contains(
            "error: rank 1 exited with status 3; stopping the 1 other rank still running"
        ),
        "{run:?}"
    );
    let pids = std::fs::read_to_string(dir.path().join("pids")).unwrap();
    for pid in pids.split_whitespace() {
        assert!(
            !alive(pid),
            "process {pid} of rank 0 outlived the launch: {run:?}"
        );
    }
}

#[test]
fn a_rank_killed_by_a_signal_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let script = "if [ $RANK = 2 ]; then kill -9 $$; else exec sleep 60; fi";
    let run = launch(
        &["--nproc", "3", "--", "sh", "-c", script],
        dir.path(),
        &[],
        TIMEOUT,
    );
    assert!(run.elapsed < Duration::from_secs(20), "{run:?}");
    assert!(!run.status.success());
    assert!(
        run.stderr
            .contains("rank 2 was killed by signal 9 (SIGKILL)"),
        "{run:?}"
    );
}

#[test]
fn sigterm_reaches_every_rank() {
    let dir = tempfile::tempdir().unwrap();
    let script =
        "trap 'echo stopped by TERM; exit 0' TERM; touch ready.$RANK; while :; do sleep 0.05; done";
    let mut child = command(&["--nproc", "2", "--", "sh", "-c", script], dir.path(), &[])
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let lines = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for line in BufReader::new(stdout).lines() {
            seen.push(line.unwrap());
        }
        seen
    });
    if !wait_ready(dir.path(), 2) {
        let _ = child.kill();
        panic!("the ranks never became ready");
    }
    // SAFETY: a signal to the launcher this test started.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let status =
        wait(&mut child, Duration::from_secs(20)).expect("neox-launch did not end after SIGTERM");
    let lines = lines.join().unwrap();
    assert_eq!(status.code(), Some(128 + libc::SIGTERM), "{lines:?}");
    for rank in 0..2 {
        assert!(
            lines.contains(&format!("[rank {rank}] stopped by TERM")),
            "{lines:?}"
        );
    }
}

/// Waits (at most 20 s) until every rank wrote `ready.RANK`.
fn wait_ready(dir: &Path, ranks: usize) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        if (0..ranks).all(|r| dir.join(format!("ready.{r}")).exists()) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn bad_usage_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let refused = |args: &[&str], says: &str| {
        let run = launch(args, dir.path(), &[], TIMEOUT);
        assert!(!run.status.success(), "{args:?}: {run:?}");
        assert!(
            run.stderr.contains(says),
            "{args:?} should say {says:?}: {run:?}"
        );
    };
    refused(&["--nproc", "0", "--", "true"], "--nproc");
    refused(&["--nproc", "2"], "COMMAND");
    refused(
        &["--nproc", "2", "--include", "a", "--", "true"],
        "give --hostfile",
    );
    refused(
        &["--nproc", "2", "--hostfile", "h", "--", "true"],
        "cannot be used with",
    );
    refused(
        &["--nproc", "2", "--", "no-such-program-here"],
        "rank 0: cannot start `no-such-program-here`",
    );
}

/// Whether `pid` still runs 5 s from now (a signalled process takes a moment to go).
fn alive(pid: &str) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while running(pid) {
        if std::time::Instant::now() >= deadline {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn running(pid: &str) -> bool {
    // A zombie is dead for this purpose: it runs nothing.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}
