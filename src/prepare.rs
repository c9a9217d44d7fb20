//! `prepare`: a registered corpus, from its URLs to finished shards and a
//! manifest — download -> (unpack) -> read -> tokenize -> write -> record, the
//! one chain every corpus goes through. Reading, tokenizing and writing are
//! the shared pipeline's ([`crate::pipeline`]); this module fetches, plans
//! parts, resumes, merges and records.
//!
//! Layout in `{data_dir}/{name}/`:
//! - the downloaded files under their own names, prefixed with a digest of
//!   their URL when two files of the corpus share a name (and `.part` files
//!   while unfinished);
//! - `{name}_text_document.{bin,idx}` (or `{name}-shard-K-of-N_text_document.*`
//!   for one of N parts) and `….manifest.json` beside them;
//! - `{name}.parts/` (or `{name}-shard-K-of-N.parts/`): per-file results of a
//!   multi-file corpus (or shard), kept until merged, so that an interrupted
//!   run skips the files already done.
//!
//! Locks, in `{data_dir}/`: `.{name}.lock` (or `.{name}-shard-K-of-N.lock`)
//! while an output is made, and `.{name}.{file}.download.lock` while a file
//! is downloaded. The shards of a corpus hold disjoint files and outputs, so
//! `--shard K/N` runs on shared storage proceed side by side; two runs of the
//! same output, or two downloads of one file, wait for each other.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use neox_datasets::download::{
    Fetched, Fetcher, FolderLock, Source, beside, distinct_name, measure, mirrored,
};
use neox_datasets::{DataDownloader, RemoteFile};
use neox_registry::manifest::{Manifest, OutputRecord, ShardOf, SourceRecord};
use neox_tokenize::{Tokenizer, TokenizerSpec};
use serde::{Deserialize, Serialize};

use crate::pipeline::{self, PipelineConfig};
use crate::progress::ProgressReporter;

/// How to prepare: where, from where, which part, with which tokenizer.
#[derive(Debug, Clone)]
pub struct PrepareOptions {
    /// The data folder; the corpus goes to `{data_dir}/{name}/`.
    pub data_dir: PathBuf,
    /// Replace the corpus's URLs with these (checksums and sizes then unknown unless pinned).
    pub urls: Vec<String>,
    /// A mirror (URL or folder) holding the corpus's files under their own names.
    pub mirror: Option<String>,
    /// `(file name, sha256)`: the checksum a file must have (replaces the declared one,
    /// and the declared size, which described another file).
    pub pins: Vec<(String, String)>,
    /// Prepare only part K of N (1-based).
    pub shard: Option<ShardOf>,
    /// Download and prepare again even if done.
    pub force: bool,
    /// How text becomes tokens.
    pub tokenize: TokenizeSettings,
    /// Files downloaded at once.
    pub parallel_downloads: usize,
    /// The most bytes one document may hold (see `neox_datasets::read::ReadOptions`).
    pub max_document_bytes: u64,
}

/// The tokenizer and the encoding threads; every document gets the EOD id
/// appended, as GPT-NeoX's `prepare_data.py` does.
#[derive(Debug, Clone)]
pub struct TokenizeSettings {
    /// The loaded tokenizer.
    pub tokenizer: Arc<Tokenizer>,
    /// Encoding threads.
    pub workers: usize,
}

impl TokenizeSettings {
    /// Load the tokenizer `spec` names.
    pub fn load(spec: &TokenizerSpec, workers: usize) -> anyhow::Result<TokenizeSettings> {
        let tokenizer = Tokenizer::load(spec).context("cannot load the tokenizer")?;
        Ok(TokenizeSettings {
            tokenizer: Arc::new(tokenizer),
            workers: workers.max(1),
        })
    }

    /// The tokenizer as recorded in manifests.
    pub fn describe(&self) -> String {
        self.tokenizer.description().to_string()
    }
}

/// What `prepare` did.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Already prepared with these settings: nothing was done.
    AlreadyPrepared {
        /// The manifest found.
        manifest: Manifest,
        /// Its path.
        path: PathBuf,
    },
    /// Prepared now.
    Prepared {
        /// The manifest written.
        manifest: Manifest,
        /// Its path.
        path: PathBuf,
    },
}

/// The output prefix name (without key) for a corpus or one shard of it.
pub fn base_name(corpus: &str, shard: Option<ShardOf>) -> String {
    match shard {
        None => corpus.to_string(),
        Some(s) => format!("{corpus}-shard-{}-of-{}", s.index, s.count),
    }
}

/// A file to fetch, and the name it is stored under in the corpus folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// Where it comes from, with its declared size and checksum.
    pub file: RemoteFile,
    /// Its name in `{data_dir}/{name}/` when downloaded: its own name, made
    /// unique (see [`neox_datasets::download::distinct_name`]) when another
    /// file of the corpus has the same one.
    pub stored: String,
}

/// The files to fetch after `--url`, `--mirror` and pins, and `--shard`'s selection.
pub fn plan_files(
    corpus: &dyn DataDownloader,
    opts: &PrepareOptions,
) -> anyhow::Result<Vec<Planned>> {
    let mut files = if opts.urls.is_empty() {
        corpus.files()
    } else {
        opts.urls.iter().map(RemoteFile::new).collect()
    };
    if files.is_empty() {
        bail!(
            "corpus `{}` lists no files to download; give them with --url (repeatable) or declare the corpus in a catalog (--catalog)",
            corpus.name()
        );
    }
    // Names that several files have (a mirror keeps names, so these stay shared).
    let mut seen = std::collections::HashSet::new();
    let twins: std::collections::HashSet<String> = files
        .iter()
        .map(|f| f.file_name().to_string())
        .filter(|n| !seen.insert(n.clone()))
        .collect();
    let shared = |name: &str| twins.contains(name);
    if let Some(base) = &opts.mirror {
        if let Some(twin) = files.iter().find(|f| shared(f.file_name())) {
            bail!(
                "--mirror: corpus `{}` has several files named {} (e.g. {}); a mirror holds files \
                 under their own names, so it cannot serve them all: give them with --url instead",
                corpus.name(),
                twin.file_name(),
                twin.url
            );
        }
        for f in &mut files {
            f.origin = Some(f.url.clone());
            f.url = mirrored(base, &f.url);
        }
    }
    for (name, _) in &opts.pins {
        if shared(name) {
            bail!(
                "--sha256 {name}=…: corpus `{}` has several files named {name}; declare their \
                 checksums in a catalog instead",
                corpus.name()
            );
        }
    }
    for (name, sum) in &opts.pins {
        let Some(f) = files.iter_mut().find(|f| f.file_name() == name) else {
            bail!(
                "--sha256 {name}=…: corpus `{}` has no file named {name} (its files: {})",
                corpus.name(),
                files
                    .iter()
                    .map(|f| f.file_name())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        };
        f.sha256 = Some(sum.clone());
        f.size = None;
    }
    // Names are made unique over the whole corpus, so that every shard
    // stores a file under the same name. What counts is the name stored
    // (`x` and `x.jsonl` may both be stored as `x.jsonl`).
    let mut seen = std::collections::HashSet::new();
    let stored_twins: std::collections::HashSet<String> = files
        .iter()
        .map(|f| local_name(f, corpus))
        .filter(|n| !seen.insert(n.clone()))
        .collect();
    let mut files: Vec<Planned> = files
        .iter()
        .map(|f| {
            let name = local_name(f, corpus);
            let stored = if stored_twins.contains(&name) {
                distinct_name(&f.url, &name)
            } else {
                name
            };
            Planned {
                file: f.clone(),
                stored,
            }
        })
        .collect();
    if let Some(s) = opts.shard {
        if s.index == 0 || s.index > s.count {
            bail!("--shard {}/{}: K must be between 1 and N", s.index, s.count);
        }
        let n = files.len();
        if s.count as usize > n {
            bail!(
                "--shard {}/{}: corpus `{}` has {n} file(s), so at most {n} shards (parts are made of whole files)",
                s.index,
                s.count,
                corpus.name()
            );
        }
        // Contiguous runs of files: merging parts 1..N in order gives the whole corpus's bytes.
        let (k, n_parts) = (s.index as usize, s.count as usize);
        let (from, to) = ((k - 1) * n / n_parts, k * n / n_parts);
        files = files.drain(from..to).collect();
    }
    Ok(files)
}

/// Prepare `corpus` as `opts` says.
pub fn prepare(
    corpus: &dyn DataDownloader,
    opts: &PrepareOptions,
    fetcher: &Fetcher,
) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let name = corpus.name();
    if !neox_registry::catalog::valid_name(name) {
        bail!("corpus name `{name}` cannot name a folder (letters, digits, `-`, `_`, `.` only)");
    }
    let files = plan_files(corpus, opts)?;
    let folder = opts.data_dir.join(name);
    let _lock = FolderLock::named(&opts.data_dir, &base_name(name, opts.shard))?;
    // Temporary files are locked by their writers: other shards' live ones stay.
    crate::leftovers::reclaim(&folder);
    let result = prepare_locked(corpus, opts, fetcher, files, &folder, started);
    if result.is_err() {
        // A run that failed before writing anything leaves no empty folder behind.
        let _ = std::fs::remove_dir(&folder);
    }
    result
}

fn prepare_locked(
    corpus: &dyn DataDownloader,
    opts: &PrepareOptions,
    fetcher: &Fetcher,
    files: Vec<Planned>,
    folder: &Path,
    started: Instant,
) -> anyhow::Result<Outcome> {
    let name = corpus.name();
    let folder = folder.to_path_buf();
    let keys = corpus.jsonl_keys();
    let base = base_name(name, opts.shard);
    let prefixes: Vec<String> = keys
        .iter()
        .map(|k| format!("{base}_{k}_document"))
        .collect();
    let tokenizer_name = opts.tokenize.describe();

    if !opts.force
        && let Some((manifest, path)) = finished(&folder, &prefixes[0], &files, &tokenizer_name)
    {
        return Ok(Outcome::AlreadyPrepared { manifest, path });
    }
    let parts_dir = folder.join(format!("{base}.parts"));
    if opts.force {
        // Forget this output's tokenized parts; downloads are forgotten one
        // by one under their locks (see `fetch_and_tokenize`).
        let _ = std::fs::remove_dir_all(&parts_dir);
        let _ = std::fs::remove_file(beside(&folder.join(&base), ".done.json"));
    }

    let multi = files.len() > 1;
    let fetched = std::sync::Mutex::new(vec![None::<Fetched>; files.len()]);
    let made = fetch_and_tokenize(corpus, opts, fetcher, &files, &folder, |i, got, inputs| {
        let out_base = if multi {
            std::fs::create_dir_all(&parts_dir)
                .with_context(|| format!("cannot create {}", parts_dir.display()))?;
            parts_dir.join(format!(
                "{:05}-{}",
                i,
                got.path.file_name().unwrap_or_default().to_string_lossy()
            ))
        } else {
            folder.join(&base)
        };
        if let Ok(mut all) = fetched.lock() {
            all[i] = Some(got.clone());
        }
        part(inputs, &keys, &out_base, &got.sha256, opts)
    })?;
    let fetched: Vec<Fetched> = fetched
        .into_inner()
        .unwrap_or_default()
        .into_iter()
        .flatten()
        .collect();

    // One output per key: merge the parts (multi-file) or take the single result.
    let mut manifests = Vec::new();
    for (k, prefix) in prefixes.iter().enumerate() {
        let target = folder.join(prefix);
        let pieces: Vec<&PartDone> = made.iter().map(|per_key| &per_key[k]).collect();
        if multi {
            let inputs: Vec<PathBuf> = pieces.iter().map(|p| PathBuf::from(&p.prefix)).collect();
            neox_indexed::merge(&inputs, &target).with_context(|| {
                format!("cannot merge the parts of {name} into {}", target.display())
            })?;
        }
        let outputs = [".bin", ".idx"]
            .iter()
            .map(|ext| {
                let file = format!("{prefix}{ext}");
                let (bytes, sha256) = measure(&folder.join(&file))
                    .with_context(|| format!("cannot read {}", folder.join(&file).display()))?;
                Ok(OutputRecord {
                    file,
                    bytes,
                    sha256,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let manifest = Manifest {
            corpus: name.to_string(),
            prefix: prefix.clone(),
            shard: opts.shard,
            sources: fetched
                .iter()
                .map(|f| SourceRecord {
                    url: f.url.clone(),
                    bytes: f.size,
                    sha256: f.sha256.clone(),
                })
                .collect(),
            compressed_bytes: fetched.iter().map(|f| f.size).sum(),
            downloaded_bytes: fetched.iter().map(|f| f.transferred).sum(),
            text_bytes: pieces.iter().map(|p| p.text_bytes).sum(),
            documents: pieces.iter().map(|p| p.documents).sum(),
            tokens: pieces.iter().map(|p| p.tokens).sum(),
            tokenizer: tokenizer_name.clone(),
            dtype: pieces.first().map(|p| p.dtype.clone()).unwrap_or_default(),
            outputs,
            seconds: started.elapsed().as_secs_f64(),
            finished_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            neox_version: env!("CARGO_PKG_VERSION").to_string(),
        };
        let path = Manifest::path_for(&folder, prefix);
        manifest.write(&path)?;
        manifests.push((manifest, path));
    }
    if !multi {
        // The single piece's record served resumption only; the manifest now says it all.
        let _ = std::fs::remove_file(beside(&folder.join(&base), ".done.json"));
    }
    if multi {
        std::fs::remove_dir_all(&parts_dir).with_context(|| {
            format!("cannot remove the merged parts in {}", parts_dir.display())
        })?;
    }
    let (manifest, path) = manifests.swap_remove(0);
    Ok(Outcome::Prepared { manifest, path })
}

/// The finished manifest for `prefix`, if it matches these files and tokenizer
/// and its outputs are intact.
fn finished(
    folder: &Path,
    prefix: &str,
    files: &[Planned],
    tokenizer: &str,
) -> Option<(Manifest, PathBuf)> {
    let path = Manifest::path_for(folder, prefix);
    let manifest = Manifest::read(&path).ok()?;
    let same_sources = manifest.sources.len() == files.len()
        && manifest
            .sources
            .iter()
            .zip(files)
            .all(|(s, Planned { file: f, .. })| {
                // A pinned or declared checksum identifies the file wherever it is served from.
                match f.sha256.as_deref() {
                    Some(want) => want.eq_ignore_ascii_case(&s.sha256),
                    None => s.url == f.url,
                }
            });
    (same_sources && manifest.tokenizer == tokenizer && manifest.outputs_present(folder))
        .then_some((manifest, path))
}

/// The name a file is stored under: its own, plus the corpus's format as an
/// extension when the name does not already end with it (readers go by name).
fn local_name(file: &RemoteFile, corpus: &dyn DataDownloader) -> String {
    let name = file.file_name().to_string();
    match corpus.format() {
        Some(fmt) if !name.ends_with(&format!(".{fmt}")) => format!("{name}.{fmt}"),
        _ => name,
    }
}

/// One tokenized piece: a file's (or the whole single-file corpus's) output for one key.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PartDone {
    /// Output prefix (path, without `.bin`/`.idx`).
    prefix: String,
    /// SHA-256 of the source it was made from.
    source_sha256: String,
    /// Tokenizer it was made with.
    tokenizer: String,
    documents: u64,
    tokens: u64,
    text_bytes: u64,
    dtype: String,
}

/// Tokenize `inputs` into `{out_base}_{key}_document` for each key, unless a
/// record shows that this was already done from the same source and tokenizer.
fn part(
    inputs: &[PathBuf],
    keys: &[String],
    out_base: &Path,
    source_sha256: &str,
    opts: &PrepareOptions,
) -> anyhow::Result<Vec<PartDone>> {
    let record = beside(out_base, ".done.json");
    let tokenizer = opts.tokenize.describe();
    if let Some(done) = std::fs::read(&record)
        .ok()
        .and_then(|b| serde_json::from_slice::<Vec<PartDone>>(&b).ok())
        .filter(|done| {
            done.len() == keys.len()
                && done.iter().all(|d| {
                    d.source_sha256 == source_sha256
                        && d.tokenizer == tokenizer
                        && Path::new(&format!("{}.bin", d.prefix)).exists()
                        && Path::new(&format!("{}.idx", d.prefix)).exists()
                })
        })
    {
        tracing::info!("{}: already tokenized, skipping", out_base.display());
        return Ok(done);
    }
    let mut config = PipelineConfig::new(inputs.to_vec(), out_base);
    config.keys = keys.to_vec();
    config.append_eod = true;
    config.workers = opts.tokenize.workers;
    config.max_document_bytes = opts.max_document_bytes;
    let mut reporter = ProgressReporter::new(None);
    let result = pipeline::run(&config, &opts.tokenize.tokenizer, &mut reporter);
    reporter.finish();
    let summary = result?;
    if summary.malformed > 0 {
        tracing::warn!(
            "{}: {} malformed line(s) skipped",
            out_base.display(),
            summary.malformed
        );
    }
    let done: Vec<PartDone> = summary
        .outputs
        .iter()
        .map(|o| PartDone {
            prefix: o.prefix.to_string_lossy().into_owned(),
            source_sha256: source_sha256.to_string(),
            tokenizer: tokenizer.clone(),
            documents: o.written.documents,
            tokens: o.written.tokens,
            // Text is counted over all keys together; with one key (the usual case) it is exact.
            text_bytes: summary.text_bytes,
            dtype: o.written.dtype.to_string(),
        })
        .collect();
    let json = serde_json::to_vec_pretty(&done)?;
    neox_fsio::write_atomic(&record, &json)
        .with_context(|| format!("cannot write {}", record.display()))?;
    Ok(done)
}

/// Download one file to `dest` under its lock (another run that needs the
/// same file, e.g. another `--shard` split, waits instead of writing the same
/// `.part`); `--force` forgets an earlier download first. Local sources are
/// used in place and need no lock.
fn download(
    corpus: &dyn DataDownloader,
    opts: &PrepareOptions,
    fetcher: &Fetcher,
    file: &RemoteFile,
    dest: &Path,
) -> anyhow::Result<Fetched> {
    let _lock = match Source::parse(&file.url)? {
        Source::Local(_) => None,
        Source::Http(_) => {
            let stored = dest.file_name().unwrap_or_default().to_string_lossy();
            let lock = format!("{}.{stored}.download", corpus.name());
            let lock = FolderLock::named(&opts.data_dir, &lock)?;
            if opts.force {
                for p in [beside(dest, ".download.json"), beside(dest, ".part")] {
                    let _ = std::fs::remove_file(p);
                }
                let _ = std::fs::remove_file(dest);
            }
            Some(lock)
        }
    };
    Ok(corpus.download(file, dest, fetcher)?)
}

/// Download the files with up to `parallel_downloads` at once while the
/// calling thread tokenizes those that have arrived; results in file order.
fn fetch_and_tokenize(
    corpus: &dyn DataDownloader,
    opts: &PrepareOptions,
    fetcher: &Fetcher,
    files: &[Planned],
    folder: &Path,
    mut tokenize: impl FnMut(usize, &Fetched, &[PathBuf]) -> anyhow::Result<Vec<PartDone>>,
) -> anyhow::Result<Vec<Vec<PartDone>>> {
    let next = AtomicUsize::new(0);
    let stop = Arc::new(AtomicBool::new(false));
    let mut results: Vec<Option<Vec<PartDone>>> = vec![None; files.len()];
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let (tx, rx) = mpsc::channel::<(usize, anyhow::Result<(Fetched, Vec<PathBuf>)>)>();
        for _ in 0..opts.parallel_downloads.clamp(1, files.len()) {
            let tx = tx.clone();
            let (next, stop) = (&next, Arc::clone(&stop));
            scope.spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(Planned { file, stored }) = files.get(i) else {
                        break;
                    };
                    let dest = folder.join(stored);
                    let got = download(corpus, opts, fetcher, file, &dest)
                        .with_context(|| format!("cannot download {}", file.url))
                        .and_then(|f| {
                            let inputs = corpus
                                .unpack(&f, folder)
                                .with_context(|| format!("cannot unpack {}", f.path.display()))?;
                            Ok((f, inputs))
                        });
                    if tx.send((i, got)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        let outcome = (|| {
            for (i, got) in rx.iter() {
                let (fetched, inputs) = got?;
                results[i] = Some(tokenize(i, &fetched, &inputs)?);
            }
            Ok(())
        })();
        stop.store(true, Ordering::SeqCst);
        outcome
    })?;
    results
        .into_iter()
        .enumerate()
        .map(|(i, r)| r.with_context(|| format!("file {} was never prepared", files[i].file.url)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use neox_registry::{Corpus, Registry};
    use neox_tokenize::TokenizerKind;

    fn opts() -> PrepareOptions {
        PrepareOptions {
            data_dir: PathBuf::from("data"),
            urls: vec![],
            mirror: None,
            pins: vec![],
            shard: None,
            force: false,
            tokenize: TokenizeSettings::load(&TokenizerSpec::new(TokenizerKind::CharLevel), 1)
                .unwrap(),
            parallel_downloads: 1,
            max_document_bytes: neox_datasets::read::DEFAULT_MAX_DOCUMENT_BYTES,
        }
    }

    #[test]
    fn mirrors_pins_and_contiguous_shards() {
        let pile = Registry::with_builtins().get("pile").unwrap();
        let mut o = opts();
        o.mirror = Some("http://127.0.0.1:9/pile/".into());
        o.pins = vec![("07.jsonl.zst".into(), "ab".repeat(32))];
        let files = plan_files(pile.as_ref(), &o).unwrap();
        assert_eq!(files[7].file.url, "http://127.0.0.1:9/pile/07.jsonl.zst");
        assert_eq!(files[7].stored, "07.jsonl.zst");
        assert_eq!(
            files[7].file.sha256.as_deref(),
            Some("ab".repeat(32).as_str())
        );

        // 30 files in 4 parts: runs of 7, 8, 7, 8 files that cover all, in order.
        let mut seen = Vec::new();
        for k in 1..=4 {
            o.shard = Some(ShardOf { index: k, count: 4 });
            seen.extend(plan_files(pile.as_ref(), &o).unwrap());
        }
        o.shard = None;
        assert_eq!(seen, plan_files(pile.as_ref(), &o).unwrap());

        o.pins = vec![("nope.zst".into(), "ab".repeat(32))];
        let e = plan_files(pile.as_ref(), &o).unwrap_err().to_string();
        assert!(e.contains("no file named nope.zst"), "{e}");
    }

    #[test]
    fn urls_replace_the_declared_files() {
        let c = Corpus::new("x", "", ["https://h/a.jsonl".to_string()]);
        let mut o = opts();
        o.urls = vec!["/tmp/b.jsonl".into(), "/tmp/c.jsonl".into()];
        let files = plan_files(&c, &o).unwrap();
        assert_eq!(files.len(), 2);
        assert_eq!(files[1].file.url, "/tmp/c.jsonl");
        assert_eq!(
            base_name("x", Some(ShardOf { index: 2, count: 3 })),
            "x-shard-2-of-3"
        );
    }

    #[test]
    fn files_of_one_name_are_stored_under_distinct_names_in_every_shard() {
        let urls = [
            "http://h/a/d.jsonl",
            "http://h/b/d.jsonl",
            "http://h/e.jsonl",
        ];
        let c = Corpus::new("x", "", urls.map(String::from));
        let mut o = opts();
        let whole: Vec<String> = plan_files(&c, &o)
            .unwrap()
            .into_iter()
            .map(|p| p.stored)
            .collect();
        assert_ne!(whole[0], whole[1]);
        assert!(whole[0].ends_with("-d.jsonl") && whole[1].ends_with("-d.jsonl"));
        assert_eq!(whole[2], "e.jsonl");
        o.shard = Some(ShardOf { index: 2, count: 3 });
        assert_eq!(plan_files(&c, &o).unwrap()[0].stored, whole[1]);

        o.shard = None;
        o.mirror = Some("http://m/".into());
        let e = plan_files(&c, &o).unwrap_err().to_string();
        assert!(e.contains("several files named d.jsonl"), "{e}");
        o.mirror = None;
        o.pins = vec![("d.jsonl".into(), "ab".repeat(32))];
        let e = plan_files(&c, &o).unwrap_err().to_string();
        assert!(e.contains("several files named d.jsonl"), "{e}");
    }

    #[test]
    fn files_stored_under_one_name_are_told_apart() {
        // With format `jsonl`, `x` is stored as `x.jsonl`, like the other file.
        let mut c = Corpus::new(
            "x",
            "",
            ["http://h/x".to_string(), "http://h/x.jsonl".to_string()],
        );
        c.format = Some("jsonl".into());
        let stored: Vec<String> = plan_files(&c, &opts())
            .unwrap()
            .into_iter()
            .map(|p| p.stored)
            .collect();
        assert_ne!(stored[0], stored[1], "{stored:?}");
    }
}
