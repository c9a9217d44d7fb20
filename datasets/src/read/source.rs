//! What every format reader shares: the consumer end ([`Sink`]), the way a
//! reader stops ([`Halt`]), where it is ([`Origin`]), and byte counting for
//! progress ([`Counting`]).

use std::cell::{Cell, RefCell};
use std::io::{self, Read};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::SyncSender;

use super::{Document, Location, Position, ReadError};

/// Why a reader stopped before the end of its input.
pub(crate) enum Halt {
    /// An error that ends the stream (it is passed on to the consumer).
    Fatal(ReadError),
    /// The consumer has gone: stop quietly.
    Closed,
}

impl From<ReadError> for Halt {
    fn from(e: ReadError) -> Self {
        Halt::Fatal(e)
    }
}

/// What a reader hands over: documents, or reports of malformed lines.
pub(crate) type Item = Result<Document, ReadError>;

/// Items per batch, at most.
const BATCH_ITEMS: usize = 64;
/// Text bytes per batch, about (a batch closes once it holds this much).
const BATCH_BYTES: usize = 1 << 20;

/// Where documents go: the consumer's end of a bounded channel, a batch of
/// items at a time (one hand-over per batch, not per document). The batch
/// being filled is sent when full, and when the sink is dropped.
pub(crate) struct Sink {
    tx: SyncSender<Vec<Item>>,
    batch: RefCell<Vec<Item>>,
    bytes: Cell<usize>,
}

impl Sink {
    pub(crate) fn new(tx: SyncSender<Vec<Item>>) -> Self {
        Self {
            tx,
            batch: RefCell::new(Vec::with_capacity(BATCH_ITEMS)),
            bytes: Cell::new(0),
        }
    }

    /// Hand over a document or a malformed-line report.
    pub(crate) fn emit(&self, item: Item) -> Result<(), Halt> {
        let bytes = item
            .as_ref()
            .map_or(0, |doc| doc.texts.iter().map(String::len).sum());
        self.bytes.set(self.bytes.get() + bytes);
        let full = {
            let mut batch = self.batch.borrow_mut();
            batch.push(item);
            batch.len() >= BATCH_ITEMS || self.bytes.get() >= BATCH_BYTES
        };
        if full { self.flush() } else { Ok(()) }
    }

    /// Send the batch being filled, if any.
    fn flush(&self) -> Result<(), Halt> {
        let batch = self.batch.replace(Vec::with_capacity(BATCH_ITEMS));
        self.bytes.set(0);
        if batch.is_empty() {
            return Ok(());
        }
        self.tx.send(batch).map_err(|_| Halt::Closed)
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        // The consumer may have gone: nothing is left to do then.
        let _ = self.flush();
    }
}

/// The file (and archive member) a reader is reading, with the keys wanted
/// and the file's compressed-bytes counter for error offsets.
#[derive(Clone)]
pub(crate) struct Origin<'a> {
    pub(crate) file: Arc<Path>,
    pub(crate) member: Option<Arc<str>>,
    pub(crate) keys: &'a [String],
    /// The most bytes one document may hold.
    pub(crate) limit: u64,
    /// Bytes of the file read from disk so far.
    pub(crate) meter: Arc<Meter>,
}

impl Origin<'_> {
    pub(crate) fn location(&self, position: Position) -> Location {
        Location {
            file: Arc::clone(&self.file),
            member: self.member.clone(),
            position,
        }
    }

    /// A read or decompression error, at the current compressed offset.
    pub(crate) fn io_error(&self, source: io::Error) -> ReadError {
        ReadError::Io {
            file: self.file.to_path_buf(),
            member: self.member.as_deref().map(str::to_string),
            offset: self.meter.file_bytes(),
            source,
        }
    }

    /// The same file, inside member `name`.
    pub(crate) fn member(&self, name: &str) -> Self {
        Self {
            member: Some(name.into()),
            ..self.clone()
        }
    }

    /// "file", or "member" inside an archive.
    pub(crate) fn within(&self) -> &'static str {
        if self.member.is_some() {
            "member"
        } else {
            "file"
        }
    }

    /// All of `reader` (a whole file or member), refused past the limit.
    pub(crate) fn read_whole(&self, reader: impl Read) -> Result<Vec<u8>, ReadError> {
        let mut bytes = Vec::new();
        reader
            .take(self.limit.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|e| self.io_error(e))?;
        if bytes.len() as u64 > self.limit {
            return Err(ReadError::TooLarge {
                location: self.location(Position::Whole),
                what: self.within(),
                within: self.within(),
                offset: 0,
                limit: self.limit,
            });
        }
        Ok(bytes)
    }

    /// A whole file or member as one document, checked to be UTF-8.
    pub(crate) fn raw_document(&self, bytes: Vec<u8>) -> Result<Document, ReadError> {
        let text = String::from_utf8(bytes).map_err(|e| ReadError::InvalidUtf8 {
            location: self.location(Position::Whole),
            offset: e.utf8_error().valid_up_to() as u64,
            what: if self.member.is_some() {
                "member"
            } else {
                "file"
            },
        })?;
        Ok(self.document(text, Position::Whole))
    }

    /// One text for every key.
    pub(crate) fn document(&self, text: String, position: Position) -> Document {
        let mut texts = vec![text.clone(); self.keys.len().saturating_sub(1)];
        texts.push(text);
        Document {
            texts,
            location: self.location(position),
        }
    }
}

/// Bytes of one file read from disk, also added to a total over all files.
pub(crate) struct Meter {
    file: AtomicU64,
    total: Arc<AtomicU64>,
}

impl Meter {
    pub(crate) fn new(total: Arc<AtomicU64>) -> Self {
        Self {
            file: AtomicU64::new(0),
            total,
        }
    }

    /// Bytes of this file read so far.
    pub(crate) fn file_bytes(&self) -> u64 {
        self.file.load(Ordering::Relaxed)
    }

    fn add(&self, n: u64) {
        self.file.fetch_add(n, Ordering::Relaxed);
        self.total.fetch_add(n, Ordering::Relaxed);
    }

    /// Record that reading has got to byte `position` of this file (for
    /// readers that seek, where counting reads says little).
    pub(crate) fn advance_to(&self, position: u64) {
        let before = self.file.fetch_max(position, Ordering::Relaxed);
        if position > before {
            self.total.fetch_add(position - before, Ordering::Relaxed);
        }
    }
}

/// A reader that counts the bytes it reads on a [`Meter`].
pub(crate) struct Counting<R> {
    inner: R,
    meter: Arc<Meter>,
}

impl<R> Counting<R> {
    pub(crate) fn new(inner: R, meter: Arc<Meter>) -> Self {
        Self { inner, meter }
    }
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.meter.add(n as u64);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::sync::mpsc::sync_channel;

    fn doc(i: usize, bytes: usize) -> Item {
        Ok(Document {
            texts: vec!["x".repeat(bytes)],
            location: Location {
                file: Arc::from(Path::new("in.jsonl")),
                member: None,
                position: Position::Line(i as u64 + 1),
            },
        })
    }

    fn lines(batch: &[Item]) -> Vec<Position> {
        batch
            .iter()
            .map(|item| item.as_ref().unwrap().location.position)
            .collect()
    }

    #[test]
    fn items_go_over_in_full_batches_in_order_and_the_rest_on_drop() {
        let (tx, rx) = sync_channel(10);
        let sink = Sink::new(tx);
        for i in 0..2 * BATCH_ITEMS + 5 {
            assert!(sink.emit(doc(i, 1)).is_ok());
        }
        let sent: Vec<Vec<Item>> = rx.try_iter().collect();
        assert_eq!(
            sent.iter().map(Vec::len).collect::<Vec<_>>(),
            [BATCH_ITEMS; 2]
        );
        drop(sink);
        let last: Vec<Vec<Item>> = rx.try_iter().collect();
        assert_eq!(last.iter().map(Vec::len).collect::<Vec<_>>(), [5]);
        let order: Vec<Position> = sent.iter().chain(&last).flat_map(|b| lines(b)).collect();
        let expected: Vec<Position> = (1..=2 * BATCH_ITEMS as u64 + 5)
            .map(Position::Line)
            .collect();
        assert_eq!(order, expected);
    }

    #[test]
    fn a_batch_goes_over_once_it_holds_enough_text() {
        let (tx, rx) = sync_channel(10);
        let sink = Sink::new(tx);
        assert!(sink.emit(doc(0, BATCH_BYTES / 2)).is_ok());
        assert_eq!(rx.try_iter().count(), 0);
        assert!(sink.emit(doc(1, BATCH_BYTES / 2)).is_ok());
        assert_eq!(rx.try_iter().map(|b| b.len()).collect::<Vec<_>>(), [2]);
        // An empty sink sends nothing when dropped; a gone consumer stops the reader.
        drop(sink);
        assert_eq!(rx.try_iter().count(), 0);
        let (tx, rx) = sync_channel(10);
        let sink = Sink::new(tx);
        drop(rx);
        assert!(matches!(sink.emit(doc(0, BATCH_BYTES)), Err(Halt::Closed)));
    }
}
