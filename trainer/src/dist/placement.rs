//! Where this process sits among the ranks, read from the launcher's
//! environment, in this order (the first that is present wins):
//!
//! 1. torchrun, DeepSpeed's launcher, `neox-launch`, or by hand: `RANK`,
//!    `WORLD_SIZE`, `LOCAL_RANK`, `LOCAL_WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT`.
//!    DeepSpeed also appends `--local_rank=N` to the command line: the
//!    binary passes it in as `local_rank_arg`.
//! 2. Slurm (`srun`): `SLURM_PROCID`, `SLURM_LOCALID`, `SLURM_NTASKS`; the
//!    master is the first host of the step's node list (`SLURM_STEP_NODELIST`,
//!    else `SLURM_JOB_NODELIST`), unless `MASTER_ADDR` says otherwise.
//! 3. OpenMPI (`mpirun`): `OMPI_COMM_WORLD_RANK`, `OMPI_COMM_WORLD_SIZE`,
//!    `OMPI_COMM_WORLD_LOCAL_RANK`, `OMPI_COMM_WORLD_LOCAL_SIZE`; MPI does not
//!    name a master, so `MASTER_ADDR` is needed above one rank
//!    (`mpirun -x MASTER_ADDR=host0 ...`).
//! 4. Otherwise a single process.
//!
//! `MASTER_PORT` defaults to 6000, Megatron's and GPT-NeoX's default.
//!
//! **The rendezvous port.** Under torchrun the elastic agent's own TCP store
//! already listens on `MASTER_PORT` (workers may share it), so our rendezvous
//! listens on `MASTER_PORT + 1` there; elsewhere on `MASTER_PORT` itself.
//! [`Placement::rendezvous_port`] holds the choice. torchrun is recognised by
//! the variables its agent sets (`TORCHELASTIC_RUN_ID`, `GROUP_RANK`).

mod hostlist;

pub use hostlist::{HostlistError, expand_hostlist};

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// Megatron's and GPT-NeoX's `MASTER_PORT` when none is set.
pub const DEFAULT_MASTER_PORT: u16 = 6000;

/// Which launcher placed this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Launcher {
    /// torchrun (torch elastic): `RANK`... plus its agent's `TORCHELASTIC_RUN_ID` / `GROUP_RANK`.
    Torchrun,
    /// `RANK`/`WORLD_SIZE` set by DeepSpeed's launcher, `neox-launch`, or by hand.
    RankEnv,
    /// Slurm's `srun`.
    Slurm,
    /// OpenMPI's `mpirun`.
    OpenMpi,
    /// No launcher: one process.
    Single,
}

impl fmt::Display for Launcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Launcher::Torchrun => "torchrun",
            Launcher::RankEnv => "RANK/WORLD_SIZE environment",
            Launcher::Slurm => "Slurm",
            Launcher::OpenMpi => "OpenMPI",
            Launcher::Single => "single process",
        })
    }
}

/// This process's place among the ranks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// Global rank, `0..world_size`.
    pub rank: usize,
    pub world_size: usize,
    /// Rank among the processes of this machine (which GPU to use).
    pub local_rank: usize,
    /// Processes on this machine, when the launcher says.
    pub local_world_size: Option<usize>,
    /// Where rank 0 listens.
    pub master_addr: String,
    /// `MASTER_PORT` (or [`DEFAULT_MASTER_PORT`]).
    pub master_port: u16,
    /// The port our rendezvous uses at `master_addr`: `master_port`, or
    /// `master_port + 1` under torchrun (its agent's store holds `master_port`).
    pub rendezvous_port: u16,
    pub launcher: Launcher,
}

/// A launcher environment that cannot be used; each names the variable.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PlacementError {
    #[error("{var}={value:?}: expected {expected}")]
    Invalid {
        var: String,
        value: String,
        expected: String,
    },
    #[error("{var} is not set: {why}")]
    Missing { var: String, why: String },
    #[error("{rank_var}={rank} is out of range: {size_var}={size} (ranks are 0..{size})")]
    RankOutOfRange {
        rank_var: &'static str,
        rank: usize,
        size_var: &'static str,
        size: usize,
    },
    #[error("--local_rank={arg} disagrees with {env_var}={env}")]
    LocalRankConflict {
        arg: usize,
        env_var: &'static str,
        env: usize,
    },
    #[error(
        "MASTER_PORT={0} leaves no port for the rendezvous (torchrun's agent holds MASTER_PORT, ours uses MASTER_PORT + 1)"
    )]
    NoRendezvousPort(u16),
}

/// The names one launcher uses for the rank variables.
struct Names {
    rank: &'static str,
    size: &'static str,
    local_rank: &'static str,
    local_size: Option<&'static str>,
}

impl Placement {
    /// One process: rank 0 of 1 on 127.0.0.1.
    pub fn single() -> Self {
        Placement {
            rank: 0,
            world_size: 1,
            local_rank: 0,
            local_world_size: Some(1),
            master_addr: "127.0.0.1".into(),
            master_port: DEFAULT_MASTER_PORT,
            rendezvous_port: DEFAULT_MASTER_PORT,
            launcher: Launcher::Single,
        }
    }

    /// The placement from this process's environment; `local_rank_arg` is
    /// DeepSpeed's `--local_rank=N` argument when the command line had one.
    pub fn from_env(local_rank_arg: Option<usize>) -> Result<Self, PlacementError> {
        Self::from_lookup(|name| std::env::var(name).ok(), local_rank_arg)
    }

    /// The placement from the variables `env` returns (`None`: not set).
    pub fn from_lookup(
        env: impl Fn(&str) -> Option<String>,
        local_rank_arg: Option<usize>,
    ) -> Result<Self, PlacementError> {
        let env = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let (mut placement, local_var) = if env("RANK").is_some() || env("WORLD_SIZE").is_some() {
            let torchrun = env("TORCHELASTIC_RUN_ID").is_some() || env("GROUP_RANK").is_some();
            let names = Names {
                rank: "RANK",
                size: "WORLD_SIZE",
                local_rank: "LOCAL_RANK",
                local_size: Some("LOCAL_WORLD_SIZE"),
            };
            let launcher = if torchrun {
                Launcher::Torchrun
            } else {
                Launcher::RankEnv
            };
            (ranks(&env, &names, launcher, None)?, Some(names.local_rank))
        } else if env("SLURM_PROCID").is_some() {
            (slurm(&env)?, Some("SLURM_LOCALID"))
        } else if env("OMPI_COMM_WORLD_RANK").is_some() {
            let names = Names {
                rank: "OMPI_COMM_WORLD_RANK",
                size: "OMPI_COMM_WORLD_SIZE",
                local_rank: "OMPI_COMM_WORLD_LOCAL_RANK",
                local_size: Some("OMPI_COMM_WORLD_LOCAL_SIZE"),
            };
            (
                ranks(&env, &names, Launcher::OpenMpi, None)?,
                Some(names.local_rank),
            )
        } else {
            (Placement::single(), None)
        };
        if let Some(arg) = local_rank_arg {
            if let Some(env_var) = local_var.filter(|var| env(var).is_some())
                && placement.local_rank != arg
            {
                return Err(PlacementError::LocalRankConflict {
                    arg,
                    env_var,
                    env: placement.local_rank,
                });
            }
            placement.local_rank = arg;
        }
        Ok(placement)
    }

    /// `master_addr:rendezvous_port`, where rank 0's rendezvous listens.
    pub fn rendezvous_addr(&self) -> String {
        if self.master_addr.contains(':') {
            format!("[{}]:{}", self.master_addr, self.rendezvous_port)
        } else {
            format!("{}:{}", self.master_addr, self.rendezvous_port)
        }
    }

    pub fn is_single(&self) -> bool {
        self.world_size == 1
    }
}

/// Slurm: ranks from `SLURM_*`, the master from the node list.
fn slurm(env: &impl Fn(&str) -> Option<String>) -> Result<Placement, PlacementError> {
    let names = Names {
        rank: "SLURM_PROCID",
        size: "SLURM_NTASKS",
        local_rank: "SLURM_LOCALID",
        local_size: None,
    };
    let first_host = || -> Result<Option<String>, PlacementError> {
        for var in [
            "SLURM_STEP_NODELIST",
            "SLURM_JOB_NODELIST",
            "SLURM_NODELIST",
        ] {
            if let Some(list) = env(var) {
                let hosts = expand_hostlist(&list).map_err(|e| PlacementError::Invalid {
                    var: var.into(),
                    value: list.clone(),
                    expected: format!("a Slurm host list such as `node[01-04,07],gpu5` ({e})"),
                })?;
                return Ok(hosts.into_iter().next());
            }
        }
        Ok(None)
    };
    let mut placement = ranks(env, &names, Launcher::Slurm, Some(&first_host))?;
    placement.local_world_size = slurm_local_size(env)?;
    Ok(placement)
}

/// This node's task count, from `SLURM_STEP_TASKS_PER_NODE` (`2(x3),1`) and
/// `SLURM_NODEID`, when both are set.
fn slurm_local_size(
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Option<usize>, PlacementError> {
    let (Some(list), Some(_)) = (env("SLURM_STEP_TASKS_PER_NODE"), env("SLURM_NODEID")) else {
        return Ok(None);
    };
    let node: usize = parse(env, "SLURM_NODEID", "a node index (0, 1, ...)")?;
    let invalid = || PlacementError::Invalid {
        var: "SLURM_STEP_TASKS_PER_NODE".into(),
        value: list.clone(),
        expected: format!("task counts per node such as `2(x3),1` covering SLURM_NODEID={node}"),
    };
    let mut first = 0usize;
    for part in list.split(',') {
        let (count, times) = match part.split_once("(x") {
            Some((count, rest)) => {
                let times = rest.strip_suffix(')').ok_or_else(invalid)?;
                (count, times.parse::<usize>().map_err(|_| invalid())?)
            }
            None => (part, 1),
        };
        let count: usize = count.trim().parse().map_err(|_| invalid())?;
        first = first.saturating_add(times);
        if node < first {
            return Ok(Some(count));
        }
    }
    Err(invalid())
}

/// The common part: rank, size and local rank from `names`, the master from
/// `MASTER_ADDR` (else `fallback_master`, else 127.0.0.1 for one rank).
fn ranks(
    env: &impl Fn(&str) -> Option<String>,
    names: &Names,
    launcher: Launcher,
    fallback_master: Option<&dyn Fn() -> Result<Option<String>, PlacementError>>,
) -> Result<Placement, PlacementError> {
    let count = "a whole number of at least 1";
    let index = "a whole number (0, 1, ...)";
    let required = |var: &str, why: &str| {
        env(var).ok_or_else(|| PlacementError::Missing {
            var: var.into(),
            why: why.into(),
        })
    };
    let why = format!("{launcher} sets {} and {} together", names.rank, names.size);
    required(names.rank, &why)?;
    required(names.size, &why)?;
    let world_size: usize = parse(env, names.size, count)?;
    if world_size == 0 {
        return Err(invalid(env, names.size, count));
    }
    let rank: usize = parse(env, names.rank, index)?;
    if rank >= world_size {
        return Err(PlacementError::RankOutOfRange {
            rank_var: names.rank,
            rank,
            size_var: names.size,
            size: world_size,
        });
    }
    let local_rank = match env(names.local_rank) {
        Some(_) => parse(env, names.local_rank, index)?,
        None => 0,
    };
    let local_world_size = match names.local_size.and_then(|n| env(n).map(|_| n)) {
        Some(var) => {
            let size: usize = parse(env, var, count)?;
            if size == 0 {
                return Err(invalid(env, var, count));
            }
            if local_rank >= size {
                return Err(PlacementError::RankOutOfRange {
                    rank_var: names.local_rank,
                    rank: local_rank,
                    size_var: var,
                    size,
                });
            }
            Some(size)
        }
        None => None,
    };
    let master_addr = match env("MASTER_ADDR") {
        Some(addr) => addr.trim().to_string(),
        None => match fallback_master.map(|f| f()).transpose()?.flatten() {
            Some(host) => host,
            None if world_size == 1 => "127.0.0.1".into(),
            None => {
                let hint = match launcher {
                    Launcher::OpenMpi => {
                        "MPI does not name a master: pass rank 0's host, e.g. `mpirun -x MASTER_ADDR=host0 ...`"
                    }
                    Launcher::Slurm => {
                        "set it, or run under srun so that SLURM_JOB_NODELIST names the hosts"
                    }
                    _ => "the ranks meet at rank 0's host: set MASTER_ADDR to it",
                };
                return Err(PlacementError::Missing {
                    var: "MASTER_ADDR".into(),
                    why: format!("{world_size} ranks ({} = {world_size}); {hint}", names.size),
                });
            }
        },
    };
    let master_port = match env("MASTER_PORT") {
        Some(_) => parse(env, "MASTER_PORT", "a TCP port (1-65535)")?,
        None => DEFAULT_MASTER_PORT,
    };
    if master_port == 0 {
        return Err(invalid(env, "MASTER_PORT", "a TCP port (1-65535)"));
    }
    let rendezvous_port = if launcher == Launcher::Torchrun {
        master_port
            .checked_add(1)
            .ok_or(PlacementError::NoRendezvousPort(master_port))?
    } else {
        master_port
    };
    Ok(Placement {
        rank,
        world_size,
        local_rank,
        local_world_size,
        master_addr,
        master_port,
        rendezvous_port,
        launcher,
    })
}

fn invalid(env: &impl Fn(&str) -> Option<String>, var: &str, expected: &str) -> PlacementError {
    PlacementError::Invalid {
        var: var.into(),
        value: env(var).unwrap_or_default(),
        expected: expected.into(),
    }
}

fn parse<T: FromStr>(
    env: &impl Fn(&str) -> Option<String>,
    var: &str,
    expected: &str,
) -> Result<T, PlacementError> {
    env(var)
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| invalid(env, var, expected))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place(vars: &[(&str, &str)], arg: Option<usize>) -> Result<Placement, PlacementError> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Placement::from_lookup(
            |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()),
            arg,
        )
    }

    #[test]
    fn nothing_set_is_one_process() {
        assert_eq!(place(&[], None).unwrap(), Placement::single());
        let p = place(&[], Some(3)).unwrap();
        assert_eq!((p.world_size, p.local_rank), (1, 3));
    }

    #[test]
    fn rank_env_as_deepspeed_and_neox_launch_set_it() {
        let p = place(
            &[
                ("RANK", "3"),
                ("WORLD_SIZE", "4"),
                ("LOCAL_RANK", "1"),
                ("LOCAL_WORLD_SIZE", "2"),
                ("MASTER_ADDR", "10.0.0.7"),
                ("MASTER_PORT", "29500"),
            ],
            Some(1),
        )
        .unwrap();
        assert_eq!(
            p,
            Placement {
                rank: 3,
                world_size: 4,
                local_rank: 1,
                local_world_size: Some(2),
                master_addr: "10.0.0.7".into(),
                master_port: 29500,
                rendezvous_port: 29500,
                launcher: Launcher::RankEnv,
            }
        );
        assert_eq!(p.rendezvous_addr(), "10.0.0.7:29500");
    }

    #[test]
    fn torchrun_rendezvous_moves_past_the_agent_store() {
        let p = place(
            &[
                ("RANK", "0"),
                ("WORLD_SIZE", "2"),
                ("LOCAL_RANK", "0"),
                ("MASTER_ADDR", "127.0.0.1"),
                ("MASTER_PORT", "29500"),
                ("TORCHELASTIC_RUN_ID", "none"),
                ("GROUP_RANK", "0"),
            ],
            None,
        )
        .unwrap();
        assert_eq!(p.launcher, Launcher::Torchrun);
        assert_eq!((p.master_port, p.rendezvous_port), (29500, 29501));
        assert_eq!(p.rendezvous_addr(), "127.0.0.1:29501");
        let full = place(
            &[
                ("RANK", "0"),
                ("WORLD_SIZE", "1"),
                ("MASTER_PORT", "65535"),
                ("GROUP_RANK", "0"),
            ],
            None,
        );
        assert_eq!(full, Err(PlacementError::NoRendezvousPort(65535)));
    }

    #[test]
    fn rank_env_defaults_and_ipv6() {
        let p = place(&[("RANK", "0"), ("WORLD_SIZE", "1")], None).unwrap();
        assert_eq!(
            (
                p.master_addr.as_str(),
                p.master_port,
                p.local_rank,
                p.local_world_size
            ),
            ("127.0.0.1", DEFAULT_MASTER_PORT, 0, None)
        );
        let p = place(
            &[("RANK", "1"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "::1")],
            None,
        )
        .unwrap();
        assert_eq!(p.rendezvous_addr(), "[::1]:6000");
    }

    #[test]
    fn bad_rank_env_names_the_variable() {
        let err = |vars: &[(&str, &str)]| place(vars, None).unwrap_err().to_string();
        let e = err(&[("RANK", "abc"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "h")]);
        assert!(
            e.contains("RANK=\"abc\"") && e.contains("whole number"),
            "{e}"
        );
        let e = err(&[("RANK", "2"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "h")]);
        assert!(e.contains("RANK=2") && e.contains("WORLD_SIZE=2"), "{e}");
        let e = err(&[("RANK", "0"), ("WORLD_SIZE", "0")]);
        assert!(e.contains("WORLD_SIZE=\"0\""), "{e}");
        let e = err(&[("RANK", "0"), ("WORLD_SIZE", "-1")]);
        assert!(e.contains("WORLD_SIZE=\"-1\""), "{e}");
        let e = err(&[("RANK", "0")]);
        assert!(e.starts_with("WORLD_SIZE is not set"), "{e}");
        let e = err(&[("WORLD_SIZE", "2")]);
        assert!(e.starts_with("RANK is not set"), "{e}");
        let e = err(&[("RANK", "0"), ("WORLD_SIZE", "2")]);
        assert!(
            e.starts_with("MASTER_ADDR is not set") && e.contains("2 ranks"),
            "{e}"
        );
        let e = err(&[
            ("RANK", "0"),
            ("WORLD_SIZE", "2"),
            ("MASTER_ADDR", "h"),
            ("MASTER_PORT", "70000"),
        ]);
        assert!(
            e.contains("MASTER_PORT=\"70000\"") && e.contains("TCP port"),
            "{e}"
        );
        let e = err(&[
            ("RANK", "0"),
            ("WORLD_SIZE", "2"),
            ("MASTER_ADDR", "h"),
            ("MASTER_PORT", "0"),
        ]);
        assert!(e.contains("MASTER_PORT=\"0\""), "{e}");
        let e = err(&[
            ("RANK", "0"),
            ("WORLD_SIZE", "2"),
            ("MASTER_ADDR", "h"),
            ("LOCAL_RANK", "x"),
        ]);
        assert!(e.contains("LOCAL_RANK=\"x\""), "{e}");
        let e = err(&[
            ("RANK", "0"),
            ("WORLD_SIZE", "2"),
            ("MASTER_ADDR", "h"),
            ("LOCAL_RANK", "2"),
            ("LOCAL_WORLD_SIZE", "2"),
        ]);
        assert!(
            e.contains("LOCAL_RANK=2") && e.contains("LOCAL_WORLD_SIZE=2"),
            "{e}"
        );
    }

    #[test]
    fn deepspeed_local_rank_argument() {
        let vars = [("RANK", "1"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "h")];
        assert_eq!(place(&vars, Some(1)).unwrap().local_rank, 1);
        let both = [("LOCAL_RANK", "0"), vars[0], vars[1], vars[2]];
        assert_eq!(
            place(&both, Some(1)),
            Err(PlacementError::LocalRankConflict {
                arg: 1,
                env_var: "LOCAL_RANK",
                env: 0
            })
        );
        assert_eq!(place(&both, Some(0)).unwrap().local_rank, 0);
    }

    #[test]
    fn slurm_master_is_the_first_host_of_the_step() {
        let vars = [
            ("SLURM_PROCID", "5"),
            ("SLURM_LOCALID", "1"),
            ("SLURM_NTASKS", "8"),
            ("SLURM_NODEID", "2"),
            ("SLURM_STEP_TASKS_PER_NODE", "2(x3),1,1"),
            ("SLURM_JOB_NODELIST", "gpu[07-10],cpu1"),
        ];
        let p = place(&vars, None).unwrap();
        assert_eq!(
            p,
            Placement {
                rank: 5,
                world_size: 8,
                local_rank: 1,
                local_world_size: Some(2),
                master_addr: "gpu07".into(),
                master_port: DEFAULT_MASTER_PORT,
                rendezvous_port: DEFAULT_MASTER_PORT,
                launcher: Launcher::Slurm,
            }
        );
        let mut step = vars.to_vec();
        step.push(("SLURM_STEP_NODELIST", "gpu[09-10]"));
        assert_eq!(place(&step, None).unwrap().master_addr, "gpu09");
        step.push(("MASTER_ADDR", "head"));
        step.push(("MASTER_PORT", "7000"));
        let p = place(&step, None).unwrap();
        assert_eq!((p.master_addr.as_str(), p.master_port), ("head", 7000));
        // The torchrun variables come first.
        let mut both = vars.to_vec();
        both.extend([("RANK", "0"), ("WORLD_SIZE", "1")]);
        assert_eq!(place(&both, None).unwrap().launcher, Launcher::RankEnv);
    }

    #[test]
    fn bad_slurm_values_name_the_variable() {
        let base = [("SLURM_PROCID", "0"), ("SLURM_NTASKS", "2")];
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut v = base.to_vec();
            v.extend_from_slice(extra);
            place(&v, None).unwrap_err().to_string()
        };
        let e = with(&[]);
        assert!(
            e.starts_with("MASTER_ADDR is not set") && e.contains("srun"),
            "{e}"
        );
        let e = with(&[("SLURM_JOB_NODELIST", "node[3-1]")]);
        assert!(e.contains("SLURM_JOB_NODELIST=\"node[3-1]\""), "{e}");
        let e = with(&[
            ("SLURM_JOB_NODELIST", "n1"),
            ("SLURM_NODEID", "3"),
            ("SLURM_STEP_TASKS_PER_NODE", "1(x2)"),
        ]);
        assert!(
            e.contains("SLURM_STEP_TASKS_PER_NODE") && e.contains("SLURM_NODEID=3"),
            "{e}"
        );
        let e = with(&[("SLURM_JOB_NODELIST", "n1"), ("SLURM_LOCALID", "one")]);
        assert!(e.contains("SLURM_LOCALID=\"one\""), "{e}");
        let e = place(&[("SLURM_PROCID", "0")], None)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("SLURM_NTASKS is not set"), "{e}");
    }

    #[test]
    fn openmpi_needs_master_addr_above_one_rank() {
        let vars = [
            ("OMPI_COMM_WORLD_RANK", "1"),
            ("OMPI_COMM_WORLD_SIZE", "2"),
            ("OMPI_COMM_WORLD_LOCAL_RANK", "1"),
            ("OMPI_COMM_WORLD_LOCAL_SIZE", "2"),
        ];
        let e = place(&vars, None).unwrap_err().to_string();
        assert!(
            e.starts_with("MASTER_ADDR is not set") && e.contains("mpirun -x MASTER_ADDR"),
            "{e}"
        );
        let mut with = vars.to_vec();
        with.push(("MASTER_ADDR", "host0"));
        let p = place(&with, None).unwrap();
        assert_eq!(
            (
                p.rank,
                p.world_size,
                p.local_rank,
                p.local_world_size,
                p.launcher
            ),
            (1, 2, 1, Some(2), Launcher::OpenMpi)
        );
        assert_eq!(p.master_addr, "host0");
        let one = place(
            &[("OMPI_COMM_WORLD_RANK", "0"), ("OMPI_COMM_WORLD_SIZE", "1")],
            None,
        )
        .unwrap();
        assert_eq!((one.world_size, one.master_addr.as_str()), (1, "127.0.0.1"));
    }
}
