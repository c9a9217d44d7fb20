//! The three `.npy` files GPT-NeoX caches an index in, next to the data:
//! `{prefix}_{name}_indexmap_{ns}ns_{sl}sl_{seed}s_packedpi_ac_{doc_idx,sample_idx,shuffle_idx}.npy`.
//!
//! A cache is used only if it agrees with the data it claims to index:
//! dtypes and shapes as GPT-NeoX would write them for these sizes, every
//! document present once per epoch, sample boundaries in order and the last
//! one where the token count puts it, and a shuffle that is a permutation.
//! Anything else is reported as the reason to rebuild.

use std::path::{Path, PathBuf};

use super::array::Array;
use super::error::SampleError;
use super::index::{
    IndexSpec, SampleIdx, SampleIndex, ShuffleIdx, num_epochs, sample_idx_is_int64,
    shuffle_idx_is_int64, tokens_per_epoch, total_samples,
};
use super::npy::{NpyFile, write_npy};

/// Where the three files of one index live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachePaths {
    /// `..._doc_idx.npy`
    pub doc_idx: PathBuf,
    /// `..._sample_idx.npy`
    pub sample_idx: PathBuf,
    /// `..._shuffle_idx.npy`
    pub shuffle_idx: PathBuf,
}

impl CachePaths {
    /// GPT-NeoX's names for split `name` (`train`, `valid`, `test`, or
    /// `train_0`... when blending) of the data at `prefix`, in `dir` (the
    /// prefix's own folder when `None`, as GPT-NeoX does).
    pub fn new(prefix: &Path, dir: Option<&Path>, name: &str, spec: &IndexSpec) -> CachePaths {
        let samples = spec
            .num_samples
            .map_or_else(|| "None".to_string(), |n| n.to_string());
        let stem = format!(
            "{}_{name}_indexmap_{samples}ns_{}sl_{}s_packedpi_ac",
            prefix
                .file_name()
                .map(|f| f.to_string_lossy())
                .unwrap_or_default(),
            spec.seq_length,
            spec.seed
        );
        let folder = match dir {
            Some(d) => d.to_path_buf(),
            None => prefix.parent().map(Path::to_path_buf).unwrap_or_default(),
        };
        let file = |what: &str| folder.join(format!("{stem}_{what}.npy"));
        CachePaths {
            doc_idx: file("doc_idx"),
            sample_idx: file("sample_idx"),
            shuffle_idx: file("shuffle_idx"),
        }
    }

    /// Whether all three files exist (GPT-NeoX rebuilds all three otherwise).
    pub fn all_exist(&self) -> bool {
        [&self.doc_idx, &self.sample_idx, &self.shuffle_idx]
            .iter()
            .all(|p| p.is_file())
    }

    /// Write `index` as GPT-NeoX does (doc, sample, then shuffle), each atomically.
    pub fn write(&self, index: &SampleIndex) -> Result<(), SampleError> {
        if let Some(dir) = self.doc_idx.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| SampleError::Io {
                path: dir.to_path_buf(),
                action: "create the folder",
                source,
            })?;
        }
        write_npy(&self.doc_idx, &[index.doc_idx.len()], &index.doc_idx)?;
        let rows = index.sample_idx.rows();
        match &index.sample_idx {
            SampleIdx::I32(v) => write_npy(&self.sample_idx, &[rows, 2], v)?,
            SampleIdx::I64(v) => write_npy(&self.sample_idx, &[rows, 2], v)?,
        }
        let n = index.shuffle_idx.len();
        match &index.shuffle_idx {
            ShuffleIdx::U32(v) => write_npy(&self.shuffle_idx, &[n], v),
            ShuffleIdx::I64(v) => write_npy(&self.shuffle_idx, &[n], v),
        }
    }

    /// Load the cache if it matches `sizes` and `spec`: `Ok(Err(reason))`
    /// when it does not (a reason to rebuild), `Err` only for I/O failures.
    pub fn load(
        &self,
        sizes: &[i32],
        spec: &IndexSpec,
    ) -> Result<Result<SampleIndex, String>, SampleError> {
        let tokens = tokens_per_epoch(sizes, spec.documents.clone())?;
        let epochs = match (spec.num_epochs, spec.num_samples) {
            (Some(e), _) => e,
            (None, Some(n)) => num_epochs(tokens, spec.seq_length, n)?,
            (None, None) => {
                return Err(SampleError::Config(
                    "give a number of samples or of epochs".into(),
                ));
            }
        };
        // Each file is mapped, not read: the arrays are views of the cache
        // files, so a loaded index costs page cache rather than memory.
        let read = |path: &Path| match NpyFile::read(path) {
            Ok(f) => Ok(Ok(f)),
            Err(e @ SampleError::BadNpy { .. }) => Ok(Err(e.to_string())),
            Err(e) => Err(e),
        };
        let samples = total_samples(epochs, tokens, spec.seq_length);
        let doc_idx = match read(&self.doc_idx)?.and_then(|f| check_doc_idx(f, spec, epochs)) {
            Ok(v) => v,
            Err(reason) => return Ok(Err(reason)),
        };
        let sample_idx = match read(&self.sample_idx)?
            .and_then(|f| check_sample_idx(f, sizes, &doc_idx, spec, epochs, tokens))
        {
            Ok(v) => v,
            Err(reason) => return Ok(Err(reason)),
        };
        let shuffle_idx = match read(&self.shuffle_idx)?.and_then(|f| check_shuffle_idx(f, samples))
        {
            Ok(v) => v,
            Err(reason) => return Ok(Err(reason)),
        };
        Ok(Ok(SampleIndex {
            num_epochs: epochs,
            tokens_per_epoch: tokens,
            doc_idx,
            sample_idx,
            shuffle_idx,
        }))
    }
}

fn expect_shape(f: &NpyFile, shape: &[usize]) -> Result<(), String> {
    if f.header.shape == shape {
        Ok(())
    } else {
        Err(format!(
            "{}: shape {:?}, expected {shape:?}",
            f.path.display(),
            f.header.shape
        ))
    }
}

/// doc_idx: int32, entries inside the document range, and the same count,
/// sum and sum of squares as every document taken `epochs` times (a cheap,
/// sequential stand-in for comparing the multisets).
fn check_doc_idx(file: NpyFile, spec: &IndexSpec, epochs: u32) -> Result<Array<i32>, String> {
    let docs = &spec.documents;
    let doc_idx: Array<i32> = file.to_array().map_err(|e| e.to_string())?;
    expect_shape(&file, &[docs.len() * epochs as usize])?;
    let (mut sum, mut squares) = (0u128, 0u128);
    for (i, &d) in doc_idx.iter().enumerate() {
        match usize::try_from(d).ok().filter(|d| docs.contains(d)) {
            Some(d) => {
                sum += d as u128;
                squares += (d as u128) * (d as u128);
            }
            None => {
                return Err(format!(
                    "{}: entry {i} is document {d}, outside {docs:?}",
                    file.path.display()
                ));
            }
        }
    }
    let (want_sum, want_squares) = docs.clone().fold((0u128, 0u128), |(s, q), d| {
        (s + d as u128, q + (d as u128) * (d as u128))
    });
    let e = u128::from(epochs);
    if (sum, squares) != (want_sum * e, want_squares * e) {
        return Err(format!(
            "{}: the documents do not each appear {epochs} times",
            file.path.display()
        ));
    }
    Ok(doc_idx)
}

/// sample_idx: GPT-NeoX's width, rows in order inside doc_idx, and the last
/// boundary exactly `samples * seq_length` tokens in (checked from the end,
/// which is a few documents away).
fn check_sample_idx(
    file: NpyFile,
    sizes: &[i32],
    doc_idx: &[i32],
    spec: &IndexSpec,
    epochs: u32,
    tokens: u64,
) -> Result<SampleIdx, String> {
    let samples = total_samples(epochs, tokens, spec.seq_length);
    let rows = samples as usize + 1;
    expect_shape(&file, &[rows, 2])?;
    let sample_idx = if sample_idx_is_int64(epochs, tokens, spec.seq_length) {
        SampleIdx::I64(file.to_array().map_err(|e| e.to_string())?)
    } else {
        SampleIdx::I32(file.to_array().map_err(|e| e.to_string())?)
    };
    let bad_row = |r: usize, (p, o): (i64, i64)| {
        format!(
            "{}: row {r} ({p}, {o}) is not a valid sample boundary",
            file.path.display()
        )
    };
    let mut previous = (0i64, 0i64);
    for r in 0..rows {
        let row = sample_idx.row(r).unwrap_or_default();
        let (p, o) = row;
        let inside = p >= 0 && (p as u64) < doc_idx.len() as u64 && o >= 0;
        if (r == 0 && row != (0, 0)) || !inside || row < previous {
            return Err(bad_row(r, row));
        }
        previous = row;
    }
    // Tokens before the last boundary = all tokens - those from its document on + its offset.
    let (p, o) = previous;
    let size = |d: i32| {
        usize::try_from(d)
            .ok()
            .and_then(|d| sizes.get(d))
            .map(|&s| s as u64)
    };
    let tail: Option<u64> = doc_idx[p as usize..].iter().map(|&d| size(d)).sum();
    let first_size = size(doc_idx[p as usize]).unwrap_or(0);
    let before = tail.and_then(|t| (u64::from(epochs) * tokens).checked_sub(t));
    let want = samples * u64::from(spec.seq_length);
    if samples > 0 && ((o as u64) >= first_size || before.map(|b| b + o as u64) != Some(want)) {
        return Err(format!(
            "{}: the last row ({p}, {o}) is not where token {want} falls",
            file.path.display(),
        ));
    }
    Ok(sample_idx)
}

/// shuffle_idx: a permutation of `0..samples` in GPT-NeoX's width.
fn check_shuffle_idx(file: NpyFile, samples: u64) -> Result<ShuffleIdx, String> {
    expect_shape(&file, &[samples as usize])?;
    let shuffle_idx = if shuffle_idx_is_int64(samples) {
        ShuffleIdx::I64(file.to_array().map_err(|e| e.to_string())?)
    } else {
        ShuffleIdx::U32(file.to_array().map_err(|e| e.to_string())?)
    };
    let mut hit = vec![false; samples as usize];
    for i in 0..shuffle_idx.len() {
        let v = shuffle_idx.get(i).and_then(|v| usize::try_from(v).ok());
        match v.and_then(|v| hit.get_mut(v)) {
            Some(h) if !*h => *h = true,
            _ => {
                return Err(format!(
                    "{}: entry {i} repeats or exceeds {samples}",
                    file.path.display()
                ));
            }
        }
    }
    Ok(shuffle_idx)
}
