//! GPT-NeoX / DeepSpeed hostfiles, and DeepSpeed's `--include` / `--exclude`.
//!
//! A hostfile has one machine per line, `HOST slots=N` (N processes, usually
//! its GPU count); `#` starts a comment; blank lines are skipped:
//!
//! ```text
//! # two machines with 8 GPUs each
//! worker-1 slots=8
//! worker-2 slots=8
//! ```

use std::path::Path;

use anyhow::{Context, Result, bail};

/// One machine and the slots (GPU indices) its ranks use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub name: String,
    /// Slot indices, `0..N` unless `--include` / `--exclude` picked some.
    pub slots: Vec<usize>,
    /// Slots in the hostfile: `slots` is a subset of `0..total`.
    pub total: usize,
}

impl Host {
    /// Whether `--include` / `--exclude` took away some of this host's slots.
    pub fn is_subset(&self) -> bool {
        self.slots.len() != self.total
    }
}

/// Reads a hostfile; errors name the file and line.
pub fn read_hostfile(path: &Path) -> Result<Vec<Host>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read hostfile {}", path.display()))?;
    parse_hostfile(&text).with_context(|| format!("hostfile {}", path.display()))
}

/// Parses a hostfile's text; errors name the line.
pub fn parse_hostfile(text: &str) -> Result<Vec<Host>> {
    let mut hosts: Vec<Host> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut words = line.split_whitespace();
        let name = words.next().unwrap_or_default();
        let (Some(slots), None) = (words.next(), words.next()) else {
            bail!("line {n}: expected `HOST slots=N`, found `{line}`");
        };
        let count = slots
            .strip_prefix("slots=")
            .and_then(|s| s.parse::<usize>().ok())
            .filter(|&s| s > 0);
        let Some(count) = count else {
            bail!(
                "line {n}: expected `slots=N` with N a whole number of at least 1, found `{slots}`"
            );
        };
        if hosts.iter().any(|h| h.name == name) {
            bail!("line {n}: host `{name}` is listed twice");
        }
        hosts.push(Host {
            name: name.to_string(),
            slots: (0..count).collect(),
            total: count,
        });
    }
    if hosts.is_empty() {
        bail!("no hosts (expected lines of `HOST slots=N`)");
    }
    Ok(hosts)
}

/// DeepSpeed's host filters: `host1@host2:0,2` names all of host1 and slots 0
/// and 2 of host2. `include` keeps only what it names; `exclude` removes it.
/// Hosts keep the hostfile's order (rank 0 is on the first one left).
pub fn select(hosts: Vec<Host>, include: Option<&str>, exclude: Option<&str>) -> Result<Vec<Host>> {
    let mut hosts = hosts;
    if let Some(spec) = include {
        let mut picks = parse_filter(spec, &hosts).context("--include")?;
        picks.sort_by_key(|(i, _)| *i);
        hosts = picks
            .into_iter()
            .map(|(i, slots)| Host {
                slots: slots.unwrap_or_else(|| hosts[i].slots.clone()),
                ..hosts[i].clone()
            })
            .collect();
    }
    if let Some(spec) = exclude {
        for (i, slots) in parse_filter(spec, &hosts).context("--exclude")? {
            match slots {
                Some(slots) => hosts[i].slots.retain(|s| !slots.contains(s)),
                None => hosts[i].slots.clear(),
            }
        }
        hosts.retain(|h| !h.slots.is_empty());
    }
    if hosts.is_empty() {
        bail!("--include / --exclude leave no host to run on");
    }
    Ok(hosts)
}

/// `host1@host2:0,2` as (index into `hosts`, slots or all).
fn parse_filter(spec: &str, hosts: &[Host]) -> Result<Vec<(usize, Option<Vec<usize>>)>> {
    let mut picks: Vec<(usize, Option<Vec<usize>>)> = Vec::new();
    for part in spec.split('@').map(str::trim) {
        let (name, slots) = match part.split_once(':') {
            Some((name, slots)) => (name, Some(slots)),
            None => (part, None),
        };
        let Some(i) = hosts.iter().position(|h| h.name == name) else {
            let known: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
            bail!("`{part}`: no host `{name}` among {}", known.join(", "));
        };
        if picks.iter().any(|(j, _)| *j == i) {
            bail!("`{part}`: host `{name}` is named twice");
        }
        let slots = slots
            .map(|list| {
                list.split(',')
                    .map(|s| match s.trim().parse::<usize>() {
                        Ok(s) if hosts[i].slots.contains(&s) => Ok(s),
                        _ => bail!(
                            "`{part}`: slot `{s}` is not one of {name}'s slots {:?}",
                            hosts[i].slots
                        ),
                    })
                    .collect::<Result<Vec<usize>>>()
            })
            .transpose()?;
        if let Some(slots) = &slots
            && let Some(twice) = slots
                .iter()
                .find(|s| slots.iter().filter(|t| t == s).count() > 1)
        {
            bail!("`{part}`: slot {twice} is named twice (one rank per slot)");
        }
        picks.push((i, slots));
    }
    Ok(picks)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names_and_slots(hosts: &[Host]) -> Vec<(&str, Vec<usize>)> {
        hosts
            .iter()
            .map(|h| (h.name.as_str(), h.slots.clone()))
            .collect()
    }

    #[test]
    fn hostfile_lines_comments_and_blanks() {
        let hosts =
            parse_hostfile("# cluster\n\nworker-1 slots=2\n  10.0.0.2   slots=1  # spare\n")
                .unwrap();
        assert_eq!(
            names_and_slots(&hosts),
            [("worker-1", vec![0, 1]), ("10.0.0.2", vec![0])]
        );
        assert!(!hosts[0].is_subset());
    }

    #[test]
    fn a_slot_named_twice_is_refused() {
        let hosts = parse_hostfile("a slots=4\n").unwrap();
        let err = format!("{:#}", parse_filter("a:1,1", &hosts).unwrap_err());
        assert!(err.contains("slot 1 is named twice"), "{err}");
    }

    #[test]
    fn bad_hostfiles_name_the_line() {
        let err = |text| format!("{:#}", parse_hostfile(text).unwrap_err());
        assert_eq!(
            err("a slots=1\nb\n"),
            "line 2: expected `HOST slots=N`, found `b`"
        );
        assert!(err("a slots=0").starts_with("line 1: expected `slots=N`"));
        assert!(err("# c\na slots=x").starts_with("line 2: expected `slots=N`"));
        assert!(err("a gpus=2").contains("found `gpus=2`"));
        assert!(err("a slots=1 extra").starts_with("line 1: expected `HOST slots=N`"));
        assert_eq!(
            err("a slots=1\na slots=2"),
            "line 2: host `a` is listed twice"
        );
        assert!(err("# nothing\n\n").starts_with("no hosts"));
    }

    #[test]
    fn include_and_exclude_as_deepspeed() {
        let hosts = parse_hostfile("a slots=4\nb slots=2\nc slots=1").unwrap();
        let pick = |inc, exc| {
            names_and_slots(&select(hosts.clone(), inc, exc).unwrap())
                .into_iter()
                .map(|(n, s)| (n.to_string(), s))
                .collect::<Vec<_>>()
        };
        let own = |v: &[(&str, Vec<usize>)]| {
            v.iter()
                .map(|(n, s)| (n.to_string(), s.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            pick(Some("c@a:1,3"), None),
            own(&[("a", vec![1, 3]), ("c", vec![0])])
        );
        assert_eq!(
            pick(None, Some("b@a:0")),
            own(&[("a", vec![1, 2, 3]), ("c", vec![0])])
        );
        assert_eq!(
            pick(Some("a@b"), Some("b:1")),
            own(&[("a", vec![0, 1, 2, 3]), ("b", vec![0])])
        );
        let sub = select(hosts.clone(), Some("a:1"), None).unwrap();
        assert!(sub[0].is_subset());
        let err = |inc, exc| format!("{:#}", select(hosts.clone(), inc, exc).unwrap_err());
        assert!(err(Some("d"), None).contains("no host `d` among a, b, c"));
        assert!(err(Some("a:4"), None).contains("slot `4` is not one of a's slots"));
        assert!(err(Some("a@a"), None).contains("named twice"));
        assert!(err(None, Some("a@b@c")).contains("leave no host"));
    }
}
