//! `neox-launch`: starts the ranks of a run on this machine (`--nproc N`) or
//! on every machine of a GPT-NeoX / DeepSpeed hostfile (through ssh or pdsh),
//! and stops them all when one fails.
//!
//! - [`hostfile`]: `HOST slots=N` files and `--include` / `--exclude`.
//! - [`plan`]: the processes to start and the variables each rank gets.
//! - [`supervise`]: starting, prefixing output, stopping, signals.

pub mod hostfile;
pub mod plan;
pub mod supervise;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};

use plan::{Master, RemoteCommand};
use supervise::Outcome;

/// Start the ranks of a training run, on this machine or on many.
///
/// Every rank runs COMMAND with RANK, WORLD_SIZE, LOCAL_RANK,
/// LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT set, as torchrun and
/// DeepSpeed's launcher do. Each line a rank prints comes out prefixed
/// `[rank K] `. When one rank fails, every other rank is stopped and
/// neox-launch exits non-zero naming it; Ctrl-C and SIGTERM go to every rank.
///
/// On this machine, one rank per GPU (or CPU ranks):
///
///   neox-launch --nproc 2 -- neox-train --config configs/cpu-tiny.yml configs/enron.yml
///
/// On every machine of a hostfile (`HOST slots=N` per line), through ssh, in
/// the same directory there (a shared file system, as GPT-NeoX assumes):
///
///   neox-launch --hostfile hostfile -- neox-train --config configs/125M.yml
///
/// The hostfile is --hostfile, else the `hostfile` key of neox-train's
/// --config files, else $DLTS_HOSTFILE. MASTER_ADDR is its first host.
/// Ranks are numbered host after host, slot after slot. A rank on a host runs
///
///   ssh HOST 'cd DIR && exec env RANK=.. WORLD_SIZE=.. ... COMMAND'
///
/// (pdsh with --launcher pdsh; any command with --remote-command, which gets
/// the host and then that shell line as its last two arguments).
#[derive(Debug, Parser)]
#[command(name = "neox-launch", version, verbatim_doc_comment)]
pub struct LaunchArgs {
    /// Ranks to start on this machine (default 1 when no hostfile is given).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub nproc: Option<u32>,

    /// GPT-NeoX / DeepSpeed hostfile: one `HOST slots=N` per line (`#` comments).
    #[arg(long, short = 'H', value_name = "FILE", conflicts_with = "nproc")]
    pub hostfile: Option<PathBuf>,

    /// Only these hosts or slots of the hostfile, as DeepSpeed writes it: `host1@host2:0,2`.
    #[arg(long, value_name = "HOSTS")]
    pub include: Option<String>,

    /// Leave out these hosts or slots of the hostfile: `host1@host2:0,2`.
    #[arg(long, value_name = "HOSTS")]
    pub exclude: Option<String>,

    /// How ranks reach the hosts of a hostfile.
    #[arg(long, value_enum, default_value_t = Remote::Ssh)]
    pub launcher: Remote,

    /// The command that runs a shell line on a host, instead of --launcher's:
    /// it gets the host, then the line, e.g. "ssh -p 2222 -o BatchMode=yes".
    #[arg(long, value_name = "CMD")]
    pub remote_command: Option<String>,

    /// Where rank 0 listens [default: 127.0.0.1 on one machine, else the first host].
    #[arg(long, value_name = "ADDR")]
    pub master_addr: Option<String>,

    /// The port rank 0 listens on [default: a free port on one machine, 6000 (GPT-NeoX's) with a hostfile].
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub master_port: Option<u16>,

    /// Seconds the other ranks get to end after SIGTERM before SIGKILL.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub grace: u64,

    /// The program each rank runs and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// The remote command of a hostfile run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Remote {
    /// `ssh HOST LINE`, one connection per rank.
    Ssh,
    /// `pdsh -S -N -R ssh -w HOST LINE`, one per rank.
    Pdsh,
}

/// Starts the ranks and waits for them; what the launcher's exit status should be.
pub fn launch(args: &LaunchArgs) -> Result<Outcome> {
    let grace = Duration::from_secs(args.grace);
    // Where the hostfile comes from, said in messages: a stale DLTS_HOSTFILE
    // must not turn a local launch into a cluster one unnoticed.
    let hostfile = match (&args.nproc, &args.hostfile) {
        (Some(_), _) => None,
        (None, Some(file)) => Some((file.clone(), "--hostfile")),
        (None, None) => config_hostfile(&args.command)
            .map(|f| (f, "the `hostfile` key of the --config files"))
            .or_else(|| {
                std::env::var_os("DLTS_HOSTFILE")
                    .filter(|v| !v.is_empty())
                    .map(|f| (PathBuf::from(f), "$DLTS_HOSTFILE"))
            }),
    };
    let Some((hostfile, source)) = hostfile else {
        let port = match args.master_port {
            Some(port) => port,
            None => free_port()?,
        };
        if args.include.is_some() || args.exclude.is_some() {
            bail!("--include / --exclude pick hosts of a hostfile: give --hostfile");
        }
        let nproc = args.nproc.unwrap_or(1) as usize;
        let master = Master {
            addr: args
                .master_addr
                .clone()
                .unwrap_or_else(|| "127.0.0.1".into()),
            port,
        };
        tracing::info!(
            "starting {nproc} rank{} here, MASTER_ADDR={} MASTER_PORT={}",
            if nproc == 1 { "" } else { "s" },
            master.addr,
            master.port
        );
        let ranks = plan::local(nproc, &master, &args.command)?;
        return supervise::run(ranks, None, grace);
    };
    let hosts = hostfile::read_hostfile(&hostfile)
        .with_context(|| format!("the hostfile named by {source}"))?;
    // Rank 0 listens on the first host, not here: a port free here says
    // nothing of it, so use GPT-NeoX's default unless told otherwise.
    let port = args.master_port.unwrap_or(6000);
    let hosts = hostfile::select(hosts, args.include.as_deref(), args.exclude.as_deref())?;
    let remote = match (&args.remote_command, args.launcher) {
        (Some(text), _) => RemoteCommand::parse(text)?,
        (None, Remote::Ssh) => RemoteCommand::ssh(),
        (None, Remote::Pdsh) => RemoteCommand::pdsh(),
    };
    let master = Master {
        addr: args
            .master_addr
            .clone()
            .unwrap_or_else(|| hosts[0].name.clone()),
        port,
    };
    let mut command = args.command.clone();
    command[0] = plan::resolve_program(&command[0], std::env::var_os("PATH").as_deref());
    let cwd = std::env::current_dir().context("cannot read the working directory")?;
    let forward = plan::forwarded_env(std::env::vars());
    let ranks = plan::remote(&hosts, &master, &command, &remote, &cwd, &forward)?;
    let summary: Vec<String> = hosts
        .iter()
        .map(|h| format!("{} x{}", h.name, h.slots.len()))
        .collect();
    tracing::info!(
        "starting {} ranks on {} host{} ({}) of {} ({source}) through `{}`, MASTER_ADDR={} MASTER_PORT={}",
        ranks.len(),
        hosts.len(),
        if hosts.len() == 1 { "" } else { "s" },
        summary.join(", "),
        hostfile.display(),
        remote.words.join(" "),
        master.addr,
        master.port
    );
    supervise::run(ranks, Some(&remote), grace)
}

/// A port nobody listens on here now (the ranks take it shortly after).
fn free_port() -> Result<u16> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).context("cannot find a free port")?;
    Ok(listener
        .local_addr()
        .context("cannot find a free port")?
        .port())
}

/// The `hostfile` key of the `--config` files, when the command is
/// `neox-train` (the last file that sets it wins, as configs merge).
fn config_hostfile(command: &[String]) -> Option<PathBuf> {
    let program = Path::new(command.first()?).file_name()?.to_str()?;
    if !program.starts_with("neox-train") {
        return None;
    }
    let mut found = None;
    for file in config_files(&command[1..]) {
        let text = match std::fs::read_to_string(&file) {
            Ok(text) => text,
            Err(e) => {
                tracing::warn!("cannot read {} for its `hostfile` key: {e}", file.display());
                continue;
            }
        };
        let Ok(serde_yaml_ng::Value::Mapping(map)) = serde_yaml_ng::from_str(&text) else {
            continue;
        };
        if let Some(serde_yaml_ng::Value::String(path)) = map.get("hostfile") {
            found = Some(PathBuf::from(path));
        }
    }
    found
}

/// The values of `--config` / `-c` in neox-train's arguments.
fn config_files(args: &[String]) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut taking = false;
    for arg in args {
        if let Some(file) = arg.strip_prefix("--config=") {
            files.push(PathBuf::from(file));
            taking = false;
        } else if arg == "--config" || arg == "-c" {
            taking = true;
        } else if arg.starts_with('-') {
            taking = false;
        } else if taking {
            files.push(PathBuf::from(arg));
        }
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn config_files_are_found_in_neox_train_arguments() {
        let args = strings(&[
            "--config",
            "a.yml",
            "b.yml",
            "--device",
            "cpu",
            "-c",
            "c.yml",
            "--config=d.yml",
            "x",
        ]);
        let files: Vec<String> = config_files(&args)
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        assert_eq!(files, ["a.yml", "b.yml", "c.yml", "d.yml"]);
    }

    #[test]
    fn hostfile_key_of_the_configs() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.yml");
        let b = dir.path().join("b.yml");
        std::fs::write(&a, "hostfile: /etc/first\ntrain_iters: 3\n").unwrap();
        std::fs::write(&b, "hostfile: /etc/second\n").unwrap();
        let cmd = |program: &str, files: &[&Path]| {
            let mut c = vec![program.to_string(), "--config".into()];
            c.extend(files.iter().map(|f| f.display().to_string()));
            c
        };
        assert_eq!(
            config_hostfile(&cmd("neox-train", &[&a, &b])),
            Some("/etc/second".into())
        );
        assert_eq!(
            config_hostfile(&cmd("/bin/neox-train", &[&a])),
            Some("/etc/first".into())
        );
        assert_eq!(config_hostfile(&cmd("other", &[&a])), None);
        std::fs::write(&b, "train_iters: 3\n").unwrap();
        assert_eq!(
            config_hostfile(&cmd("neox-train", &[&a, &b])),
            Some("/etc/first".into())
        );
        assert_eq!(config_hostfile(&cmd("neox-train", &[&b])), None);
    }
}
