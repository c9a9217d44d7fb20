//! Which processes to start: one per rank, on this machine or through a
//! remote command (ssh, pdsh) on the hosts of a hostfile, each with the
//! variables that `Placement::from_env` reads (`RANK`, `WORLD_SIZE`,
//! `LOCAL_RANK`, `LOCAL_WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT`).

use std::path::Path;

use anyhow::{Context, Result, bail};

use super::hostfile::Host;

/// What a remote rank prints first, so that it can be stopped later.
pub const PID_MARKER: &str = "neox-launch-pid ";

/// Variables passed on to remote ranks when set here (DeepSpeed passes NCCL_* too).
const FORWARDED_PREFIXES: [&str; 3] = ["NCCL_", "NEOX_", "RUST_"];

/// One process to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RankSpec {
    pub rank: usize,
    /// The machine, when the rank runs through the remote command.
    pub host: Option<String>,
    pub program: String,
    pub args: Vec<String>,
    /// Set on the started process (local ranks; remote ones carry theirs in `args`).
    pub env: Vec<(String, String)>,
}

/// Where rank 0 listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Master {
    pub addr: String,
    pub port: u16,
}

/// How a command reaches a host: these words, then the host, then one
/// shell command line (`ssh HOST 'cd ... && exec env RANK=0 ... cmd'`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteCommand {
    pub words: Vec<String>,
}

impl RemoteCommand {
    pub fn ssh() -> Self {
        Self::from_words(&["ssh"])
    }

    /// One pdsh per rank: `-S` returns the remote status, `-N` drops pdsh's `host: ` prefixes.
    pub fn pdsh() -> Self {
        Self::from_words(&["pdsh", "-S", "-N", "-R", "ssh", "-w"])
    }

    /// A command given as one string, split as a POSIX shell splits words.
    pub fn parse(text: &str) -> Result<Self> {
        match shlex::split(text) {
            Some(words) if !words.is_empty() => Ok(RemoteCommand { words }),
            _ => bail!("--remote-command {text:?}: expected a command, e.g. \"ssh -p 2222\""),
        }
    }

    fn from_words(words: &[&str]) -> Self {
        RemoteCommand {
            words: words.iter().map(|w| w.to_string()).collect(),
        }
    }

    /// `(program, args)` that run `line` on `host`.
    pub fn on(&self, host: &str, line: String) -> (String, Vec<String>) {
        let mut args = self.words[1..].to_vec();
        args.push(host.to_string());
        args.push(line);
        (self.words[0].clone(), args)
    }
}

/// The standard variables of one rank.
pub fn rank_env(
    rank: usize,
    world: usize,
    local_rank: usize,
    local_world: usize,
    master: &Master,
) -> Vec<(String, String)> {
    [
        ("RANK", rank.to_string()),
        ("WORLD_SIZE", world.to_string()),
        ("LOCAL_RANK", local_rank.to_string()),
        ("LOCAL_WORLD_SIZE", local_world.to_string()),
        ("MASTER_ADDR", master.addr.clone()),
        ("MASTER_PORT", master.port.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// `nproc` ranks on this machine running `command`.
pub fn local(nproc: usize, master: &Master, command: &[String]) -> Result<Vec<RankSpec>> {
    let (program, args) = command.split_first().context("no command to run")?;
    Ok((0..nproc)
        .map(|rank| RankSpec {
            rank,
            host: None,
            program: program.clone(),
            args: args.to_vec(),
            env: rank_env(rank, nproc, rank, nproc, master),
        })
        .collect())
}

/// A rank per slot of every host, host after host, each started by `remote`
/// in `cwd` there. `forward` are variables of this environment to pass on.
pub fn remote(
    hosts: &[Host],
    master: &Master,
    command: &[String],
    remote: &RemoteCommand,
    cwd: &Path,
    forward: &[(String, String)],
) -> Result<Vec<RankSpec>> {
    let world: usize = hosts.iter().map(|h| h.slots.len()).sum();
    let cwd = cwd
        .to_str()
        .with_context(|| format!("the working directory {} is not UTF-8", cwd.display()))?;
    let mut ranks = Vec::with_capacity(world);
    for host in hosts {
        for local_rank in 0..host.slots.len() {
            let rank = ranks.len();
            let mut env = rank_env(rank, world, local_rank, host.slots.len(), master);
            if host.is_subset() {
                let visible: Vec<String> = host.slots.iter().map(|s| s.to_string()).collect();
                env.push(("CUDA_VISIBLE_DEVICES".into(), visible.join(",")));
            }
            env.extend(forward.iter().cloned());
            let line = remote_line(cwd, &env, command)?;
            let (program, args) = remote.on(&host.name, line);
            ranks.push(RankSpec {
                rank,
                host: Some(host.name.clone()),
                program,
                args,
                env: Vec::new(),
            });
        }
    }
    Ok(ranks)
}

/// The variables of this environment that remote ranks get too.
pub fn forwarded_env(vars: impl Iterator<Item = (String, String)>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = vars
        .filter(|(k, _)| FORWARDED_PREFIXES.iter().any(|p| k.starts_with(p)))
        .collect();
    out.sort();
    out
}

/// The shell line a remote rank runs: into `cwd`, its pid on the first line
/// of output (`exec` keeps it), then the command with its variables.
fn remote_line(cwd: &str, env: &[(String, String)], command: &[String]) -> Result<String> {
    let assignments: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let words = std::iter::once("env")
        .chain(assignments.iter().map(String::as_str))
        .chain(command.iter().map(String::as_str));
    let exec = shlex::try_join(words).context("the command holds a NUL byte")?;
    let cwd = shlex::try_quote(cwd).context("the working directory holds a NUL byte")?;
    Ok(format!("cd {cwd} && echo {PID_MARKER}$$ && exec {exec}"))
}

/// The line that sends `signal` (e.g. `TERM`) to a remote rank's pid.
pub fn remote_kill_line(signal: &str, pid: u32) -> String {
    format!("kill -{signal} {pid}")
}

/// `program` as an absolute path when it is a bare name found on this `PATH`:
/// a remote login shell's `PATH` is often shorter than ours.
pub fn resolve_program(program: &str, path: Option<&std::ffi::OsStr>) -> String {
    if program.contains('/') {
        return program.to_string();
    }
    let found = path
        .into_iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file());
    match found.and_then(|p| p.to_str().map(String::from)) {
        Some(p) => p,
        None => program.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::launch::hostfile::{parse_hostfile, select};

    fn strings(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn local_ranks_get_their_places() {
        let master = Master {
            addr: "127.0.0.1".into(),
            port: 4000,
        };
        let ranks = local(2, &master, &strings(&["neox-train", "--config", "a.yml"])).unwrap();
        assert_eq!(ranks.len(), 2);
        assert_eq!(ranks[1].program, "neox-train");
        assert_eq!(ranks[1].args, ["--config", "a.yml"]);
        let env: Vec<String> = ranks[1]
            .env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        assert_eq!(
            env,
            [
                "RANK=1",
                "WORLD_SIZE=2",
                "LOCAL_RANK=1",
                "LOCAL_WORLD_SIZE=2",
                "MASTER_ADDR=127.0.0.1",
                "MASTER_PORT=4000"
            ]
        );
    }

    #[test]
    fn remote_ranks_carry_env_and_directory_on_the_line() {
        let hosts = parse_hostfile("a slots=1\nb slots=4\n").unwrap();
        let hosts = select(hosts, None, Some("b:0,1")).unwrap();
        let master = Master {
            addr: "a".into(),
            port: 6000,
        };
        let forward = vec![("NCCL_DEBUG".to_string(), "INFO".to_string())];
        let remote = RemoteCommand::parse("ssh -p 2222").unwrap();
        let command = strings(&["/opt/neox-train", "--config", "my run.yml"]);
        let ranks = super::remote(
            &hosts,
            &master,
            &command,
            &remote,
            Path::new("/work/it's"),
            &forward,
        )
        .unwrap();
        assert_eq!(ranks.len(), 3);
        assert_eq!(ranks[0].host.as_deref(), Some("a"));
        assert_eq!(ranks[0].program, "ssh");
        assert_eq!(ranks[0].args[..3], strings(&["-p", "2222", "a"]));
        // As the remote shell will split it.
        let words = |line: &str| shlex::split(line).unwrap();
        assert_eq!(
            words(&ranks[0].args[3]),
            [
                "cd",
                "/work/it's",
                "&&",
                "echo",
                "neox-launch-pid",
                "$$",
                "&&",
                "exec",
                "env",
                "RANK=0",
                "WORLD_SIZE=3",
                "LOCAL_RANK=0",
                "LOCAL_WORLD_SIZE=1",
                "MASTER_ADDR=a",
                "MASTER_PORT=6000",
                "NCCL_DEBUG=INFO",
                "/opt/neox-train",
                "--config",
                "my run.yml"
            ]
        );
        let last = words(&ranks[2].args[3]);
        assert_eq!(
            last[9..14],
            [
                "RANK=2",
                "WORLD_SIZE=3",
                "LOCAL_RANK=1",
                "LOCAL_WORLD_SIZE=2",
                "MASTER_ADDR=a"
            ]
        );
        assert!(
            last.contains(&"CUDA_VISIBLE_DEVICES=2,3".to_string()),
            "{last:?}"
        );
        let pdsh = RemoteCommand::pdsh().on("b", "true".into());
        assert_eq!(pdsh.0, "pdsh");
        assert_eq!(
            pdsh.1,
            strings(&["-S", "-N", "-R", "ssh", "-w", "b", "true"])
        );
    }

    #[test]
    fn remote_command_words_and_forwarding() {
        assert_eq!(
            RemoteCommand::parse("ssh -o 'Port 22'").unwrap().words,
            ["ssh", "-o", "Port 22"]
        );
        assert!(RemoteCommand::parse("").is_err());
        assert!(RemoteCommand::parse("ssh 'unclosed").is_err());
        let vars = [
            ("PATH", "/bin"),
            ("NEOX_LOG", "debug"),
            ("NCCL_DEBUG", "INFO"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let forwarded = forwarded_env(vars.into_iter());
        assert_eq!(forwarded.len(), 2);
        assert_eq!(forwarded[0].0, "NCCL_DEBUG");
    }

    #[test]
    fn bare_programs_resolve_on_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("neox-train"), "").unwrap();
        let path = std::env::join_paths([Path::new("/nonexistent"), dir.path()]).unwrap();
        let found = resolve_program("neox-train", Some(&path));
        assert_eq!(Path::new(&found), dir.path().join("neox-train"));
        assert_eq!(resolve_program("missing", Some(&path)), "missing");
        assert_eq!(resolve_program("./x", Some(&path)), "./x");
    }
}
