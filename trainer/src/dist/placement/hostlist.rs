//! Slurm's compressed host lists (`SLURM_JOB_NODELIST`), expanded as
//! `scontrol show hostnames` does: `node[01-03,07],gpu5` is `node01 node02
//! node03 node07 gpu5`; numbers keep the width of the range's first bound;
//! several bracket groups in one name multiply (`r[1-2]n[1-2]`: r1n1 r1n2 r2n1 r2n2).

use thiserror::Error;

/// More hosts than any cluster has: a list past this is refused, not expanded.
const MAX_HOSTS: usize = 1 << 20;

/// Why a host list cannot be expanded.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum HostlistError {
    #[error("empty host list")]
    Empty,
    #[error("empty host name at position {0}")]
    EmptyName(usize),
    #[error("`[` at position {0} is never closed")]
    Unclosed(usize),
    #[error("`]` at position {0} closes nothing")]
    Unopened(usize),
    #[error("bad range `{0}` (expected N or N-M with N <= M)")]
    BadRange(String),
    #[error("more than {MAX_HOSTS} hosts")]
    TooMany,
}

/// The host names of a Slurm host list, in order.
pub fn expand_hostlist(list: &str) -> Result<Vec<String>, HostlistError> {
    if list.trim().is_empty() {
        return Err(HostlistError::Empty);
    }
    let mut hosts = Vec::new();
    for (start, item) in split_top_level(list)? {
        let item = item.trim();
        if item.is_empty() {
            return Err(HostlistError::EmptyName(start));
        }
        expand_item(item, start, &mut hosts)?;
    }
    Ok(hosts)
}

/// The list's comma-separated items outside brackets, each with its offset.
fn split_top_level(list: &str) -> Result<Vec<(usize, &str)>, HostlistError> {
    let mut items = Vec::new();
    let (mut depth, mut start, mut open) = (0usize, 0usize, 0usize);
    for (i, c) in list.char_indices() {
        match c {
            '[' if depth > 0 => return Err(HostlistError::Unclosed(open)),
            '[' => (depth, open) = (1, i),
            ']' if depth == 0 => return Err(HostlistError::Unopened(i)),
            ']' => depth = 0,
            ',' if depth == 0 => {
                items.push((start, &list[start..i]));
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth > 0 {
        return Err(HostlistError::Unclosed(open));
    }
    items.push((start, &list[start..]));
    Ok(items)
}

/// Appends the names of one item (`prefix[ranges]suffix...`) to `hosts`.
fn expand_item(item: &str, offset: usize, hosts: &mut Vec<String>) -> Result<(), HostlistError> {
    let mut names = vec![String::new()];
    let mut rest = item;
    while let Some(open) = rest.find('[') {
        let close = rest[open..]
            .find(']')
            .map(|c| open + c)
            .ok_or(HostlistError::Unclosed(offset + open))?;
        let prefix = &rest[..open];
        let numbers = ranges(&rest[open + 1..close])?;
        if names.len().saturating_mul(numbers.len()) > MAX_HOSTS {
            return Err(HostlistError::TooMany);
        }
        names = names
            .iter()
            .flat_map(|name| numbers.iter().map(move |n| format!("{name}{prefix}{n}")))
            .collect();
        rest = &rest[close + 1..];
    }
    if hosts.len() + names.len() > MAX_HOSTS {
        return Err(HostlistError::TooMany);
    }
    hosts.extend(names.into_iter().map(|name| name + rest));
    Ok(())
}

/// The numbers of `01-03,7` as text, zero-padded to each range's first bound.
fn ranges(spec: &str) -> Result<Vec<String>, HostlistError> {
    let mut out = Vec::new();
    for range in spec.split(',') {
        let bad = || HostlistError::BadRange(range.to_string());
        let (lo, hi) = range.split_once('-').unwrap_or((range, range));
        let (lo, hi) = (lo.trim(), hi.trim());
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(lo) || !digits(hi) {
            return Err(bad());
        }
        let (a, b): (u64, u64) = (
            lo.parse().map_err(|_| bad())?,
            hi.parse().map_err(|_| bad())?,
        );
        if a > b {
            return Err(bad());
        }
        if (b - a) as usize >= MAX_HOSTS || out.len() + (b - a) as usize >= MAX_HOSTS {
            return Err(HostlistError::TooMany);
        }
        let width = lo.len();
        out.extend((a..=b).map(|n| format!("{n:0width$}")));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(list: &str) -> Vec<String> {
        expand_hostlist(list).unwrap()
    }

    #[test]
    fn plain_names_and_ranges() {
        assert_eq!(hosts("gpu5"), ["gpu5"]);
        assert_eq!(hosts("a,b , c"), ["a", "b", "c"]);
        assert_eq!(
            hosts("node[01-04,07],gpu5"),
            ["node01", "node02", "node03", "node04", "node07", "gpu5"]
        );
        assert_eq!(hosts("n[8-11]"), ["n8", "n9", "n10", "n11"]);
        assert_eq!(hosts("n[098-101]"), ["n098", "n099", "n100", "n101"]);
        assert_eq!(hosts("n[3]-ib"), ["n3-ib"]);
        assert_eq!(hosts("10.0.0.[1-2]"), ["10.0.0.1", "10.0.0.2"]);
    }

    #[test]
    fn several_groups_multiply() {
        assert_eq!(hosts("r[1-2]n[1,3]"), ["r1n1", "r1n3", "r2n1", "r2n3"]);
        assert_eq!(hosts("a[1-2],b[01-02]-x"), ["a1", "a2", "b01-x", "b02-x"]);
    }

    #[test]
    fn bad_lists_say_where() {
        let err = |list| expand_hostlist(list).unwrap_err();
        assert_eq!(err(""), HostlistError::Empty);
        assert_eq!(err("a,,b"), HostlistError::EmptyName(2));
        assert_eq!(err("node[1-2"), HostlistError::Unclosed(4));
        assert_eq!(err("node[1-2,x[3]"), HostlistError::Unclosed(4));
        assert_eq!(err("node1]"), HostlistError::Unopened(5));
        assert_eq!(err("n[3-1]"), HostlistError::BadRange("3-1".into()));
        assert_eq!(err("n[a-b]"), HostlistError::BadRange("a-b".into()));
        assert_eq!(err("n[]"), HostlistError::BadRange("".into()));
        assert_eq!(err("n[-2]"), HostlistError::BadRange("-2".into()));
        assert_eq!(err("n[0-99999999999]"), HostlistError::TooMany);
        assert_eq!(err("a[0-9999]b[0-9999]"), HostlistError::TooMany);
    }
}
