//! `neox-launch --hostfile` through the real binary, with "machines" reached
//! by a stand-in remote command that runs the shell line here (it drops the
//! host, as ssh would after connecting): ranks numbered host after host,
//! MASTER_ADDR the first host, the working directory kept; a failing remote
//! rank stops the others through the same remote command; bad hostfiles are
//! refused with their line.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod launch_common;
use launch_common::{launch, rank_lines};

const TIMEOUT: Duration = Duration::from_secs(60);

/// `remote HOST LINE`: runs LINE here with `STANDIN_HOST=HOST`, as ssh runs it there.
fn stand_in(dir: &Path) -> PathBuf {
    let path = dir.join("remote");
    std::fs::write(
        &path,
        "#!/bin/sh\nhost=\"$1\"\nshift\nSTANDIN_HOST=\"$host\" exec sh -c \"$1\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn hostfile(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("hostfile");
    std::fs::write(&path, text).unwrap();
    path
}

const PLACE: &str = "echo $RANK $WORLD_SIZE $LOCAL_RANK $LOCAL_WORLD_SIZE $MASTER_ADDR $MASTER_PORT $STANDIN_HOST $(pwd)";

#[test]
fn two_machines_from_a_hostfile() {
    let dir = tempfile::tempdir().unwrap();
    let remote = stand_in(dir.path());
    let hosts = hostfile(
        dir.path(),
        "# two machines\n127.0.0.1 slots=1\n\nlocalhost slots=1  # the second\n",
    );
    let run = launch(
        &[
            "--hostfile",
            hosts.to_str().unwrap(),
            "--remote-command",
            remote.to_str().unwrap(),
            "--master-port",
            "6123",
            "--",
            "sh",
            "-c",
            PLACE,
        ],
        dir.path(),
        &[],
        TIMEOUT,
    );
    assert!(run.status.success(), "{run:?}");
    let cwd = dir.path().canonicalize().unwrap();
    let cwd = cwd.display();
    assert_eq!(
        rank_lines(&run.stdout, 0),
        [format!("0 2 0 1 127.0.0.1 6123 127.0.0.1 {cwd}")],
        "{run:?}"
    );
    assert_eq!(
        rank_lines(&run.stdout, 1),
        [format!("1 2 0 1 127.0.0.1 6123 localhost {cwd}")],
        "{run:?}"
    );
    assert!(!run.stdout.contains("neox-launch-pid"), "{run:?}");
}

#[test]
fn slots_include_and_dlts_hostfile() {
    let dir = tempfile::tempdir().unwrap();
    let remote = stand_in(dir.path());
    let hosts = hostfile(dir.path(), "localhost slots=3\n127.0.0.1 slots=2\n");
    let run = launch(
        &[
            "--remote-command",
            remote.to_str().unwrap(),
            "--include",
            "127.0.0.1@localhost:0,2",
            "--",
            "sh",
            "-c",
            "echo $RANK $WORLD_SIZE $LOCAL_RANK $LOCAL_WORLD_SIZE $MASTER_ADDR $STANDIN_HOST ${CUDA_VISIBLE_DEVICES:-all}",
        ],
        dir.path(),
        &[("DLTS_HOSTFILE", hosts.to_str().unwrap())],
        TIMEOUT,
    );
    assert!(run.status.success(), "{run:?}");
    let lines: Vec<Vec<String>> = (0..4).map(|r| rank_lines(&run.stdout, r)).collect();
    assert_eq!(
        lines,
        [
            ["0 4 0 2 localhost localhost 0,2"],
            ["1 4 1 2 localhost localhost 0,2"],
            ["2 4 0 2 localhost 127.0.0.1 all"],
            ["3 4 1 2 localhost 127.0.0.1 all"],
        ],
        "{run:?}"
    );
}

#[test]
fn a_failing_remote_rank_stops_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let remote = stand_in(dir.path());
    let hosts = hostfile(dir.path(), "127.0.0.1 slots=1\nlocalhost slots=1\n");
    let script = "if [ $RANK = 1 ]; then while [ ! -e started ]; do sleep 0.05; done; exit 5; \
                  else touch started; exec sleep 60; fi";
    let run = launch(
        &[
            "--hostfile",
            hosts.to_str().unwrap(),
            "--remote-command",
            remote.to_str().unwrap(),
            // Longer than the bound below: only the remote `kill` can end rank 0 in time.
            "--grace",
            "60",
            "--",
            "sh",
            "-c",
            script,
        ],
        dir.path(),
        &[],
        TIMEOUT,
    );
    assert!(run.elapsed < Duration::from_secs(20), "{run:?}");
    assert_eq!(run.status.code(), Some(1), "{run:?}");
    assert!(
        run.stderr
            .contains("error: rank 1 on localhost exited with status 5; stopping the 1 other rank still running"),
        "{run:?}"
    );
}

#[test]
fn bad_hostfiles_are_refused_with_their_line() {
    let dir = tempfile::tempdir().unwrap();
    let remote = stand_in(dir.path());
    let refused = |text: &str, says: &str| {
        let hosts = hostfile(dir.path(), text);
        let run = launch(
            &[
                "--hostfile",
                hosts.to_str().unwrap(),
                "--remote-command",
                remote.to_str().unwrap(),
                "--",
                "true",
            ],
            dir.path(),
            &[],
            TIMEOUT,
        );
        assert!(!run.status.success(), "{text:?}: {run:?}");
        assert!(
            run.stderr
                .contains(&format!("hostfile {}: {says}", hosts.display())),
            "{text:?} should say {says:?}: {run:?}"
        );
        assert!(run.stdout.is_empty(), "nothing may start: {run:?}");
    };
    refused(
        "127.0.0.1 slots=1\nlocalhost slots=two\n",
        "line 2: expected `slots=N`",
    );
    refused(
        "# a comment\n127.0.0.1\n",
        "line 2: expected `HOST slots=N`",
    );
    refused("127.0.0.1 slots=0\n", "line 1: expected `slots=N`");
    refused(
        "localhost slots=1\nlocalhost slots=1\n",
        "line 2: host `localhost` is listed twice",
    );
    refused("# nobody\n", "no hosts");
    let run = launch(
        &["--hostfile", "/nonexistent/hostfile", "--", "true"],
        dir.path(),
        &[],
        TIMEOUT,
    );
    assert!(
        run.stderr
            .contains("cannot read hostfile /nonexistent/hostfile"),
        "{run:?}"
    );
    let hosts = hostfile(dir.path(), "a slots=1\n");
    let run = launch(
        &[
            "--hostfile",
            hosts.to_str().unwrap(),
            "--include",
            "b",
            "--",
            "true",
        ],
        dir.path(),
        &[],
        TIMEOUT,
    );
    assert!(
        run.stderr.contains("--include: `b`: no host `b` among a"),
        "{run:?}"
    );
}
