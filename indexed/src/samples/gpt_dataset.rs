//! `GptDataset`: GPT-NeoX's packed `GPT2Dataset` over an [`IndexedDataset`],
//! and `BlendedDataset`, its `BlendableDataset`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::{IndexedDataset, prefix_of};

use super::blend::{BlendingIndices, build_blending_indices, normalize_like_numpy};
use super::cache::CachePaths;
use super::error::SampleError;
use super::index::{IndexSpec, SampleIndex, build_sample_index};

/// How the index of a dataset came to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexOrigin {
    /// A matching cache was found and used.
    Reused,
    /// No cache existed: built and written.
    Built,
    /// A cache existed but did not match the data: rebuilt and overwritten.
    /// Callers should show `reason` as a warning.
    Rebuilt {
        /// What did not match.
        reason: String,
    },
}

/// Training samples of `seq_length + 1` tokens drawn from a range of
/// documents exactly as GPT-NeoX's `GPT2Dataset` (`pack_impl="packed"`,
/// `allow_chopped=True`) draws them.
#[derive(Debug)]
pub struct GptDataset {
    name: String,
    data: Arc<IndexedDataset>,
    seq_length: u32,
    index: SampleIndex,
    paths: CachePaths,
    origin: IndexOrigin,
}

impl GptDataset {
    /// Open the index of split `name` (`train`, `valid`, `test`, `train_0`, ...)
    /// over `data`: reuse GPT-NeoX's cache files if they exist and match the
    /// data, else build them (bit for bit as GPT-NeoX) and write them
    /// atomically, next to the data or in `cache_dir`.
    pub fn open(
        name: &str,
        data: Arc<IndexedDataset>,
        spec: IndexSpec,
        cache_dir: Option<&Path>,
    ) -> Result<GptDataset, SampleError> {
        let prefix = prefix_of(data.idx_path());
        let paths = CachePaths::new(&prefix, cache_dir, name, &spec);
        let sizes = data.sizes().to_vec();
        let mut stale = None;
        if paths.all_exist() {
            match paths.load(&sizes, &spec)? {
                Ok(index) => {
                    return Ok(Self::assemble(
                        name,
                        data,
                        spec,
                        index,
                        paths,
                        IndexOrigin::Reused,
                    ));
                }
                Err(reason) => stale = Some(reason),
            }
        }
        let index = build_sample_index(&sizes, &spec)?;
        paths.write(&index).map_err(|e| match e {
            SampleError::Io { path, action, source } => SampleError::Config(format!(
                "cannot {action} the index cache {}: {source} (is the data folder read-only? choose another cache folder)",
                path.display()
            )),
            other => other,
        })?;
        let origin = match stale {
            Some(reason) => IndexOrigin::Rebuilt { reason },
            None => IndexOrigin::Built,
        };
        Ok(Self::assemble(name, data, spec, index, paths, origin))
    }

    fn assemble(
        name: &str,
        data: Arc<IndexedDataset>,
        spec: IndexSpec,
        index: SampleIndex,
        paths: CachePaths,
        origin: IndexOrigin,
    ) -> GptDataset {
        GptDataset {
            name: name.to_string(),
            data,
            seq_length: spec.seq_length,
            index,
            paths,
            origin,
        }
    }

    /// GPT-NeoX's `len()`: one less than the samples built (its
    /// `min(len(shuffle_idx) - 1, len(sample_idx) - 1)`), so the last
    /// shuffled sample is never served in order.
    pub fn len(&self) -> usize {
        self.index.shuffle_idx.len().saturating_sub(1)
    }

    /// Whether no sample can be served.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sample `i` (after shuffling): the `seq_length + 1` tokens
    /// `GPT2Dataset.__getitem__(i)["text"]` returns. Like GPT-NeoX, an `i`
    /// past the built samples wraps around modulo [`len`](Self::len).
    pub fn get(&self, i: usize) -> Result<Vec<i64>, SampleError> {
        let mut out = Vec::with_capacity(self.seq_length as usize + 1);
        self.get_into(i, &mut out)?;
        Ok(out)
    }

    /// [`get`](Self::get) into a reused buffer (cleared first).
    pub fn get_into(&self, i: usize, out: &mut Vec<i64>) -> Result<(), SampleError> {
        out.clear();
        let shuffled = self.index.shuffle_idx.len();
        let i = if i < shuffled {
            i
        } else if self.is_empty() {
            return Err(SampleError::OutOfRange {
                index: i as u64,
                len: 0,
            });
        } else {
            i % self.len()
        };
        let broken =
            |what: &str| SampleError::Internal(format!("{}: {what} for sample {i}", self.name));
        let row = self
            .index
            .shuffle_idx
            .get(i)
            .ok_or_else(|| broken("no shuffle entry"))? as usize;
        let (first, offset_first) = self
            .index
            .sample_idx
            .row(row)
            .ok_or_else(|| broken("no start row"))?;
        let (last, offset_last) = self
            .index
            .sample_idx
            .row(row + 1)
            .ok_or_else(|| broken("no end row"))?;
        let doc = |position: i64| -> Result<usize, SampleError> {
            usize::try_from(position)
                .ok()
                .and_then(|p| self.index.doc_idx.get(p))
                .and_then(|&d| usize::try_from(d).ok())
                .ok_or_else(|| broken("a boundary outside doc_idx"))
        };
        let (offset_first, offset_last) = (offset_first as usize, offset_last as usize);
        if first == last {
            let length = (offset_last + 1).saturating_sub(offset_first);
            self.data
                .get_slice(doc(first)?, offset_first, length)?
                .extend_i64(out);
        } else {
            let d = doc(first)?;
            let size = self.data.size(d)?;
            self.data
                .get_slice(d, offset_first, size.saturating_sub(offset_first))?
                .extend_i64(out);
            for position in first + 1..last {
                self.data.get(doc(position)?)?.extend_i64(out);
            }
            self.data
                .get_slice(doc(last)?, 0, offset_last + 1)?
                .extend_i64(out);
        }
        // GPT-NeoX pads short samples with 0 and cuts long ones.
        out.resize(self.seq_length as usize + 1, 0);
        Ok(())
    }

    /// The split name used in the cache file names.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Tokens per sample, without the extra label token.
    pub fn seq_length(&self) -> u32 {
        self.seq_length
    }

    /// The doc / sample / shuffle arrays.
    pub fn index(&self) -> &SampleIndex {
        &self.index
    }

    /// The cache files.
    pub fn cache_paths(&self) -> &CachePaths {
        &self.paths
    }

    /// Whether the index was reused, built, or rebuilt (with the reason).
    pub fn origin(&self) -> &IndexOrigin {
        &self.origin
    }

    /// The token shards underneath.
    pub fn data(&self) -> &Arc<IndexedDataset> {
        &self.data
    }
}

/// Several [`GptDataset`]s mixed by weight, as GPT-NeoX's `BlendableDataset`.
#[derive(Debug)]
pub struct BlendedDataset {
    datasets: Vec<GptDataset>,
    indices: BlendingIndices,
}

impl BlendedDataset {
    /// Blend `datasets` by `weights` (normalised here as numpy does); the
    /// blend holds as many samples as its parts' `len()`s together.
    pub fn new(datasets: Vec<GptDataset>, weights: &[f64]) -> Result<BlendedDataset, SampleError> {
        if datasets.len() != weights.len() {
            return Err(SampleError::Config(format!(
                "{} datasets but {} weights",
                datasets.len(),
                weights.len()
            )));
        }
        let weights = normalize_like_numpy(weights)?;
        let size = datasets.iter().map(GptDataset::len).sum();
        let indices = build_blending_indices(&weights, size)?;
        Ok(BlendedDataset { datasets, indices })
    }

    /// Samples in the blend.
    pub fn len(&self) -> usize {
        self.indices.dataset_index.len()
    }

    /// Whether the blend is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Blended sample `i` (wrapping modulo `len()` past the end, as GPT-NeoX).
    pub fn get_into(&self, i: usize, out: &mut Vec<i64>) -> Result<(), SampleError> {
        if self.is_empty() {
            return Err(SampleError::OutOfRange {
                index: i as u64,
                len: 0,
            });
        }
        let i = i % self.len();
        let dataset = usize::from(self.indices.dataset_index[i]);
        let sample = self.indices.dataset_sample_index[i] as usize;
        self.datasets[dataset].get_into(sample, out)
    }

    /// Blended sample `i`.
    pub fn get(&self, i: usize) -> Result<Vec<i64>, SampleError> {
        let mut out = Vec::new();
        self.get_into(i, &mut out)?;
        Ok(out)
    }

    /// The parts.
    pub fn datasets(&self) -> &[GptDataset] {
        &self.datasets
    }

    /// Which part and which of its samples each blended sample is.
    pub fn indices(&self) -> &BlendingIndices {
        &self.indices
    }
}

/// The samples of one split: a single dataset or a blend.
#[derive(Debug)]
pub enum Samples {
    /// One dataset (GPT-NeoX's `data_path` with a `split`).
    Single(GptDataset),
    /// A blend (GPT-NeoX's `train_data_paths` with weights).
    Blended(BlendedDataset),
}

impl Samples {
    /// Samples served (GPT-NeoX's `len()`).
    pub fn len(&self) -> usize {
        match self {
            Samples::Single(d) => d.len(),
            Samples::Blended(b) => b.len(),
        }
    }

    /// Whether no sample can be served.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sample `i`: `seq_length + 1` token ids.
    pub fn get(&self, i: usize) -> Result<Vec<i64>, SampleError> {
        let mut out = Vec::new();
        self.get_into(i, &mut out)?;
        Ok(out)
    }

    /// Sample `i` into a reused buffer.
    pub fn get_into(&self, i: usize, out: &mut Vec<i64>) -> Result<(), SampleError> {
        match self {
            Samples::Single(d) => d.get_into(i, out),
            Samples::Blended(b) => b.get_into(i, out),
        }
    }

    /// The datasets underneath (one, or the blend's parts).
    pub fn datasets(&self) -> &[GptDataset] {
        match self {
            Samples::Single(d) => std::slice::from_ref(d),
            Samples::Blended(b) => b.datasets(),
        }
    }
}

/// Where a run's data comes from, as GPT-NeoX's config says it.
#[derive(Debug, Clone, PartialEq)]
pub enum DataSource {
    /// `data_path` + `split`: one prefix cut into train / valid / test
    /// document ranges by a `"969,30,1"`-style string.
    Split {
        /// The `.bin/.idx` prefix.
        prefix: PathBuf,
        /// The split weights.
        split: String,
    },
    /// `train_data_paths` / `valid_data_paths` / `test_data_paths` with
    /// their weights: each list is blended (every dataset whole, named
    /// `train_0`, `train_1`, ...). An empty list means no such split.
    Weighted {
        /// (prefix, weight) of each training dataset.
        train: Vec<(PathBuf, f64)>,
        /// (prefix, weight) of each validation dataset.
        valid: Vec<(PathBuf, f64)>,
        /// (prefix, weight) of each test dataset.
        test: Vec<(PathBuf, f64)>,
    },
}

/// Everything [`build_train_valid_test`] needs besides the sample counts.
#[derive(Debug, Clone, PartialEq)]
pub struct DataConfig {
    /// The data.
    pub source: DataSource,
    /// Tokens per sample (GPT-NeoX's `seq_length`).
    pub seq_length: u32,
    /// GPT-NeoX's `seed` (default 1234).
    pub seed: u32,
    /// Where the index caches go; `None`: next to the data, as GPT-NeoX.
    pub cache_dir: Option<PathBuf>,
}

/// The three splits; a split with no documents (or no paths) is `None`.
#[derive(Debug)]
pub struct TrainValidTest {
    /// Training samples.
    pub train: Option<Samples>,
    /// Validation samples.
    pub valid: Option<Samples>,
    /// Test samples.
    pub test: Option<Samples>,
}

impl TrainValidTest {
    /// One line per dataset whose cached index did not match its data and
    /// was rebuilt: show them to the user as warnings.
    pub fn rebuild_warnings(&self) -> Vec<String> {
        [&self.train, &self.valid, &self.test]
            .into_iter()
            .flatten()
            .flat_map(Samples::datasets)
            .filter_map(|d| match d.origin() {
                IndexOrigin::Rebuilt { reason } => Some(format!(
                    "{}: the cached index {} did not match the data and was rebuilt: {reason}",
                    d.name(),
                    d.cache_paths().doc_idx.display()
                )),
                _ => None,
            })
            .collect()
    }
}

/// Open (building or reusing their index caches) the train / valid / test
/// samples GPT-NeoX's `build_train_valid_test_data_loaders` would serve for
/// `config`, asking each split for `counts` samples (see
/// [`SplitSamples::for_run`](super::SplitSamples::for_run)). Blended
/// components are asked for 0.5% more than their share, as GPT-NeoX does.
pub fn build_train_valid_test(
    config: &DataConfig,
    counts: super::SplitSamples,
) -> Result<TrainValidTest, SampleError> {
    let spec = |documents, num_samples| IndexSpec {
        documents,
        seq_length: config.seq_length,
        num_samples: Some(num_samples),
        num_epochs: None,
        seed: config.seed,
    };
    let cache_dir = config.cache_dir.as_deref();
    let names = ["train", "valid", "test"];
    let mut splits: Vec<Option<Samples>> = Vec::with_capacity(3);
    match &config.source {
        DataSource::Split { prefix, split } => {
            let data = Arc::new(IndexedDataset::open(prefix)?);
            let ranges = super::Split::parse(split, data.len())?;
            for (i, name) in names.iter().enumerate() {
                let documents = ranges.range(i);
                splits.push(if documents.is_empty() {
                    None
                } else {
                    let ds = GptDataset::open(
                        name,
                        data.clone(),
                        spec(documents, counts.get(i)),
                        cache_dir,
                    )?;
                    Some(Samples::Single(ds))
                });
            }
        }
        DataSource::Weighted { train, valid, test } => {
            for (i, (name, parts)) in names.iter().zip([train, valid, test]).enumerate() {
                if parts.is_empty() {
                    splits.push(None);
                    continue;
                }
                let weights: Vec<f64> = parts.iter().map(|(_, w)| *w).collect();
                let (weights, wanted) = super::weighted_num_samples(&weights, counts.get(i))?;
                let mut datasets = Vec::with_capacity(parts.len());
                for (k, ((prefix, _), n)) in parts.iter().zip(wanted).enumerate() {
                    let data = Arc::new(IndexedDataset::open(prefix)?);
                    let documents = 0..data.len();
                    datasets.push(GptDataset::open(
                        &format!("{name}_{k}"),
                        data,
                        spec(documents, n),
                        cache_dir,
                    )?);
                }
                splits.push(Some(Samples::Blended(BlendedDataset::new(
                    datasets, &weights,
                )?)));
            }
        }
    }
    let mut splits = splits.into_iter();
    Ok(TrainValidTest {
        train: splits.next().flatten(),
        valid: splits.next().flatten(),
        test: splits.next().flatten(),
    })
}
