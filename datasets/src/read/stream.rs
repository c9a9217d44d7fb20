//! [`documents`]: the input files as one stream of documents, read on a
//! thread of its own.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::mpsc::{Receiver, sync_channel};
use std::thread::{self, JoinHandle};

use flate2::read::MultiGzDecoder;

use super::archive::{read_tar, read_zip};
use super::format::Format;
use super::lines::read_lines;
use super::parquet::read_parquet;
use super::source::{Counting, Halt, Item, Meter, Origin, Sink};
use super::{Document, ReadError, ReadOptions};

/// Batches of documents (see [`Sink`]) read ahead of the consumer, at most.
const READ_AHEAD: usize = 2;

/// The input files, in order: a file as given, a directory as the files
/// directly in it whose names have a known format, in name order (as
/// lm_dataformat does). Fails on a missing path or a file of unknown format.
pub fn expand_inputs(inputs: &[PathBuf]) -> Result<Vec<(PathBuf, Format)>, ReadError> {
    let mut files = Vec::new();
    for input in inputs {
        let open_error = |source| ReadError::Open {
            path: input.clone(),
            source,
        };
        let meta = std::fs::metadata(input).map_err(open_error)?;
        if meta.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(input)
                .map_err(open_error)?
                .map(|e| e.map(|e| e.path()))
                .collect::<Result<_, _>>()
                .map_err(open_error)?;
            entries.sort();
            files.extend(
                entries
                    .into_iter()
                    .filter(|p| p.is_file())
                    .filter_map(|p| Format::from_path(&p).map(|f| (p, f))),
            );
        } else {
            let format = Format::from_path(input).ok_or_else(|| ReadError::UnknownFormat {
                path: input.clone(),
            })?;
            files.push((input.clone(), format));
        }
    }
    Ok(files)
}

/// The documents of `inputs` (files or directories, see [`expand_inputs`]),
/// in order. Missing files and unknown formats are reported here, before
/// anything is read.
pub fn documents(inputs: &[PathBuf], options: &ReadOptions) -> Result<Documents, ReadError> {
    let files = expand_inputs(inputs)?;
    let mut total_bytes = 0;
    for (path, _) in &files {
        let meta = std::fs::metadata(path).map_err(|source| ReadError::Open {
            path: path.clone(),
            source,
        })?;
        total_bytes += meta.len();
    }
    let bytes_read = Arc::new(AtomicU64::new(0));
    let (tx, rx) = sync_channel(READ_AHEAD);
    let keys = options.keys.clone();
    let limit = options.max_document_bytes;
    let counter = Arc::clone(&bytes_read);
    let reader = thread::Builder::new()
        .name("neox-read".into())
        .spawn(move || read_all(&files, &keys, limit, &counter, &Sink::new(tx)))
        .map_err(|source| ReadError::Open {
            path: PathBuf::from("<reader thread>"),
            source,
        })?;
    Ok(Documents {
        rx,
        batch: Vec::new().into_iter(),
        reader: Some(reader),
        bytes_read,
        total_bytes,
    })
}

/// A stream of documents (or read errors), see [`documents`]. Dropping it
/// stops the reading thread.
pub struct Documents {
    rx: Receiver<Vec<Item>>,
    /// The rest of the batch received last.
    batch: std::vec::IntoIter<Item>,
    reader: Option<JoinHandle<()>>,
    bytes_read: Arc<AtomicU64>,
    total_bytes: u64,
}

impl Documents {
    /// Bytes of the input files (as stored on disk, compressed or not) read
    /// so far: a counter that moves while the stream is consumed.
    pub fn bytes_read(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.bytes_read)
    }

    /// The total size of the input files on disk.
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }
}

impl Iterator for Documents {
    type Item = Result<Document, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(item) = self.batch.next() {
                return Some(item);
            }
            match self.rx.recv() {
                Ok(batch) => self.batch = batch.into_iter(),
                // The reader has ended: normally, or by a panic that must not
                // pass for the end of the input.
                Err(_) => {
                    return match self.reader.take()?.join() {
                        Ok(()) => None,
                        Err(_) => Some(Err(ReadError::ReaderFailed)),
                    };
                }
            }
        }
    }
}

fn read_all(
    files: &[(PathBuf, Format)],
    keys: &[String],
    limit: u64,
    total: &Arc<AtomicU64>,
    sink: &Sink,
) {
    for (path, format) in files {
        let meter = Arc::new(Meter::new(Arc::clone(total)));
        let origin = Origin {
            file: Arc::from(path.as_path()),
            member: None,
            keys,
            limit,
            meter: Arc::clone(&meter),
        };
        let outcome = read_file(path, *format, &origin, sink);
        // Whatever a reader skipped (seeks, trailing bytes) still counts as done.
        if let Ok(meta) = std::fs::metadata(path) {
            meter.advance_to(meta.len());
        }
        match outcome {
            Ok(()) => {}
            Err(Halt::Closed) => return,
            Err(Halt::Fatal(e)) => {
                let _ = sink.emit(Err(e));
                return;
            }
        }
    }
}

fn read_file(path: &Path, format: Format, origin: &Origin<'_>, sink: &Sink) -> Result<(), Halt> {
    let file = File::open(path).map_err(|source| ReadError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    // Zip and Parquet seek about the file; the others stream it, counted.
    let counted = match format {
        Format::Zip => return read_zip(file, origin, sink),
        Format::Parquet => return read_parquet(file, origin, sink),
        _ => Counting::new(file, Arc::clone(&origin.meter)),
    };
    match format {
        Format::Jsonl => read_lines(counted, origin, sink),
        Format::JsonlZst => {
            let decoder = zstd::Decoder::new(counted).map_err(|e| origin.io_error(e))?;
            read_lines(decoder, origin, sink)
        }
        Format::JsonlGz => read_lines(MultiGzDecoder::new(BufReader::new(counted)), origin, sink),
        Format::Txt => {
            let bytes = origin.read_whole(counted)?;
            let document = origin.raw_document(python_newlines(bytes))?;
            sink.emit(Ok(document))
        }
        Format::Tar {
            gzip: false,
            default,
        } => read_tar(BufReader::new(counted), default, origin, sink),
        Format::Tar {
            gzip: true,
            default,
        } => read_tar(
            MultiGzDecoder::new(BufReader::new(counted)),
            default,
            origin,
            sink,
        ),
        Format::Zip | Format::Parquet => Ok(()),
    }
}

/// Python's text mode (lm_dataformat opens `.txt` with `open(file, 'r')`):
/// `\r\n` and a lone `\r` both read as `\n`.
fn python_newlines(bytes: Vec<u8>) -> Vec<u8> {
    if !bytes.contains(&b'\r') {
        return bytes;
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut iter = bytes.iter().peekable();
    while let Some(&b) = iter.next() {
        if b == b'\r' {
            out.push(b'\n');
            if iter.peek() == Some(&&b'\n') {
                iter.next();
            }
        } else {
            out.push(b);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn python_newlines() {
        assert_eq!(
            super::python_newlines(b"a\r\nb\rc\n\r".to_vec()),
            b"a\nb\nc\n\n"
        );
        assert_eq!(super::python_newlines(b"plain\n".to_vec()), b"plain\n");
    }
}
