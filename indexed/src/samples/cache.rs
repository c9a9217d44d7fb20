//! The three `.npy` files GPT-NeoX caches an index in, next to the data:
//! `{prefix}_{name}_indexmap_{ns}ns_{sl}sl_{seed}s_packedpi_ac_{doc_idx,sample_idx,shuffle_idx}.npy`.
//!
//! A cache is used only if it agrees with the data it claims to index:
//! dtypes and shapes as GPT-NeoX would write them for these sizes, every
//! document present once per epoch, sample boundaries in order and the last
//! one where the token count puts it, and a shuffle that is a permutation.
//! Anything else is reported as the reason to rebuild.

use std::path::{Path, PathBuf};

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
        // Each file is decoded and checked before the next is read, so at
        // most one file's raw bytes are held besides the arrays.
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

/// doc_idx: int32, every document of the range exactly `epochs` times.
fn check_doc_idx(file: NpyFile, spec: &IndexSpec, epochs: u32) -> Result<Vec<i32>, String> {
    let docs = &spec.documents;
    let doc_idx: Vec<i32> = file.to_vec().map_err(|e| e.to_string())?;
    expect_shape(&file, &[docs.len() * epochs as usize])?;
    let mut seen = vec![0u32; docs.len()];
    for (i, &d) in doc_idx.iter().enumerate() {
        let slot = usize::try_from(d)
            .ok()
            .and_then(|d| d.checked_sub(docs.start))
            .filter(|&s| s < docs.len());
        match slot {
            Some(s) => seen[s] += 1,
            None => {
                return Err(format!(
                    "{}: entry {i} is document {d}, outside {docs:?}",
                    file.path.display()
                ));
            }
        }
    }
    if let Some(d) = seen.iter().position(|&n| n != epochs) {
        return Err(format!(
            "{}: document {} appears {} times, expected {epochs}",
            file.path.display(),
            docs.start + d,
            seen[d]
        ));
    }
    Ok(doc_idx)
}

/// sample_idx: GPT-NeoX's width, ordered boundaries inside their documents,
/// the last one where the token count puts it.
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
        SampleIdx::I64(file.to_vec().map_err(|e| e.to_string())?)
    } else {
        SampleIdx::I32(file.to_vec().map_err(|e| e.to_string())?)
    };
    let size_at = |p: i64| {
        usize::try_from(p)
            .ok()
            .and_then(|p| doc_idx.get(p))
            .and_then(|&d| sizes.get(usize::try_from(d).ok()?))
            .copied()
    };
    let mut previous = (0i64, 0i64);
    for r in 0..rows {
        let (p, o) = sample_idx.row(r).unwrap_or_default();
        let in_doc = size_at(p).is_some_and(|s| o >= 0 && (o < i64::from(s) || (r == 0 && o == 0)));
        if (r == 0 && (p, o) != (0, 0)) || !in_doc || (p, o) < previous {
            return Err(format!(
                "{}: row {r} ({p}, {o}) is not a valid sample boundary",
                file.path.display()
            ));
        }
        previous = (p, o);
    }
    let last_token = samples * u64::from(spec.seq_length);
    let expected_last = locate(sizes, doc_idx, last_token);
    if samples > 0 && Some(previous) != expected_last {
        return Err(format!(
            "{}: last row {previous:?} is not where token {last_token} falls ({expected_last:?})",
            file.path.display(),
        ));
    }
    Ok(sample_idx)
}

/// shuffle_idx: a permutation of `0..samples` in GPT-NeoX's width.
fn check_shuffle_idx(file: NpyFile, samples: u64) -> Result<ShuffleIdx, String> {
    expect_shape(&file, &[samples as usize])?;
    let shuffle_idx = if shuffle_idx_is_int64(samples) {
        ShuffleIdx::I64(file.to_vec().map_err(|e| e.to_string())?)
    } else {
        ShuffleIdx::U32(file.to_vec().map_err(|e| e.to_string())?)
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

/// (position in `doc_idx`, offset) of token `token` of the concatenated documents.
fn locate(sizes: &[i32], doc_idx: &[i32], mut token: u64) -> Option<(i64, i64)> {
    for (p, &d) in doc_idx.iter().enumerate() {
        let size = u64::try_from(*sizes.get(usize::try_from(d).ok()?)?).ok()?;
        if token < size {
            return Some((p as i64, token as i64));
        }
        token -= size;
    }
    None
}
