//! The names of temporary files: `.{output}.{pid}-{unique}.neox-tmp`, beside
//! the output, so that anyone listing the folder sees what each one was for
//! and which process wrote it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

const SUFFIX: &str = ".neox-tmp";

/// What a temporary file's name says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TempName {
    /// The file name of the output it becomes.
    pub target: String,
    /// The process that created it.
    pub pid: u32,
}

impl TempName {
    /// Parse a file name; `None` if it is not one of ours.
    pub fn parse(file_name: &str) -> Option<TempName> {
        let inner = file_name.strip_prefix('.')?.strip_suffix(SUFFIX)?;
        let (target, tag) = inner.rsplit_once('.')?;
        let (pid, unique) = tag.split_once('-')?;
        let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
        if target.is_empty() || !hex(unique) || !pid.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(TempName {
            target: target.to_string(),
            pid: pid.parse().ok()?,
        })
    }
}

/// A fresh temporary name beside `path` for this process (same folder, so
/// the final rename is atomic). Two calls never return the same name.
pub fn temp_path(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let target = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let unique = (u64::from(nanos) << 20) ^ n;
    path.with_file_name(format!(
        ".{target}.{}-{unique:x}{SUFFIX}",
        std::process::id()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_differ() {
        let a = temp_path(Path::new("/d/x.v2_text_document.bin"));
        let b = temp_path(Path::new("/d/x.v2_text_document.bin"));
        assert_ne!(a, b);
        assert_eq!(a.parent(), Some(Path::new("/d")));
        let name = TempName::parse(a.file_name().unwrap().to_str().unwrap()).unwrap();
        assert_eq!(name.target, "x.v2_text_document.bin");
        assert_eq!(name.pid, std::process::id());
    }

    #[test]
    fn other_names_are_not_ours() {
        for n in [
            "x.bin",
            ".x.bin.XXXXXX.tmp",
            "x.bin.12-ab.neox-tmp",
            "..12-ab.neox-tmp",
            ".x.bin.12-.neox-tmp",
            ".x.bin.1a-ab.neox-tmp",
            ".x.bin.12-zz.neox-tmp",
            ".x.bin.99999999999-ab.neox-tmp",
        ] {
            assert_eq!(TempName::parse(n), None, "{n}");
        }
        assert_eq!(
            TempName::parse(".a.b.12-0f.neox-tmp"),
            Some(TempName {
                target: "a.b".into(),
                pid: 12
            })
        );
    }
}
