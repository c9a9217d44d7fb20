//! The streaming `.bin/.idx` writer.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::DType;
use crate::error::{Error, Result};
use crate::format::{Header, bin_path, idx_path};
use crate::output::{Buffered, PendingFile, commit, scratch_file};

const BUF: usize = 1 << 20;
/// Tokens encoded per write into the `.bin` buffer.
const CHUNK: usize = 1 << 16;

/// What a finished write produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteSummary {
    /// Token dtype of the `.bin`.
    pub dtype: DType,
    /// Sequences (N).
    pub sequences: u64,
    /// Documents (doc_idx entries - 1).
    pub documents: u64,
    /// Tokens in the `.bin`.
    pub tokens: u64,
    /// Documents ended without any token, and therefore not written.
    pub empty_documents_dropped: u64,
    /// Bytes of the `.bin`.
    pub bin_bytes: u64,
    /// Bytes of the `.idx`.
    pub idx_bytes: u64,
}

/// Writes `prefix.bin` and `prefix.idx` as tokens arrive.
///
/// Tokens go straight to the `.bin`; sequence sizes and document boundaries
/// are spilled to unnamed scratch files in the output folder and streamed
/// into the `.idx` by [`finish`](Self::finish), so memory does not grow
/// with the number of documents. Both files are written under temporary names
/// and appear only when `finish` succeeds; a writer dropped before that
/// leaves nothing behind.
///
/// GPT-NeoX writes one sequence per document: call [`add_tokens`](Self::add_tokens)
/// any number of times, then [`end_document`](Self::end_document). A document
/// that received no tokens is dropped (GPT-NeoX drops empty documents too) and
/// counted in [`WriteSummary::empty_documents_dropped`]. For Megatron's
/// several-sequences-per-document layout, close each sequence with
/// [`end_sequence`](Self::end_sequence).
pub struct IndexedWriter {
    dtype: DType,
    bin: Buffered,
    idx_path: PathBuf,
    /// i32 little-endian sizes, one per finished sequence.
    sizes: BufWriter<File>,
    /// i64 little-endian doc_idx entries after the leading 0.
    docs: BufWriter<File>,
    sequences: u64,
    documents: u64,
    tokens: u64,
    empty_documents: u64,
    /// Tokens in the open sequence.
    current: u64,
    /// Sequences closed since the last document boundary.
    doc_sequences: u64,
}

impl IndexedWriter {
    /// Start writing `prefix.bin` / `prefix.idx` (created, or replaced on
    /// `finish`), creating the folder if needed.
    pub fn create(prefix: impl AsRef<Path>, dtype: DType) -> Result<Self> {
        let prefix = prefix.as_ref();
        let bin = PendingFile::create(&bin_path(prefix))?;
        let idx_path = idx_path(prefix);
        Ok(IndexedWriter {
            dtype,
            bin: Buffered::new(bin, BUF),
            sizes: BufWriter::with_capacity(BUF, scratch_file(&idx_path)?),
            docs: BufWriter::with_capacity(BUF, scratch_file(&idx_path)?),
            idx_path,
            sequences: 0,
            documents: 0,
            tokens: 0,
            empty_documents: 0,
            current: 0,
            doc_sequences: 0,
        })
    }

    /// The token dtype.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Append tokens to the open sequence. Fails, writing none of them, if
    /// one does not fit the dtype.
    pub fn add_tokens(&mut self, tokens: &[u32]) -> Result<()> {
        let max = self.dtype.max_token();
        // Every token is at most the bitwise or of all (a loop the compiler
        // vectorises); only when that exceeds the dtype is each one looked at.
        let any_over = u64::from(tokens.iter().fold(0, |acc, &t| acc | t)) > max;
        let over = any_over
            .then(|| tokens.iter().position(|&t| u64::from(t) > max))
            .flatten();
        if let Some(pos) = over {
            return Err(Error::TokenOutOfRange {
                path: self.bin.file.path.clone(),
                token: tokens[pos],
                position: self.current + pos as u64,
                sequence: self.sequences,
                dtype: self.dtype,
            });
        }
        if self.current + tokens.len() as u64 > i32::MAX as u64 {
            return Err(Error::SequenceTooLong {
                path: self.bin.file.path.clone(),
                sequence: self.sequences,
            });
        }
        for chunk in tokens.chunks(CHUNK) {
            encode(self.dtype, chunk, &mut self.bin.buf);
            self.bin
                .flush_if_full()
                .map_err(|e| Error::io(&self.bin.file.path, "write", e))?;
        }
        self.current += tokens.len() as u64;
        self.tokens += tokens.len() as u64;
        Ok(())
    }

    /// Close the open sequence, even if it holds no tokens (as Megatron's
    /// `add_item` of an empty array does).
    pub fn end_sequence(&mut self) -> Result<()> {
        // `add_tokens` keeps `current` within i32.
        let size = self.current as i32;
        self.sizes
            .write_all(&size.to_le_bytes())
            .map_err(|e| Error::io(&self.idx_path, "write scratch sizes", e))?;
        self.sequences += 1;
        self.doc_sequences += 1;
        self.current = 0;
        Ok(())
    }

    /// Close the open sequence (if it holds tokens) and the document. A
    /// document without tokens or sequences is dropped.
    pub fn end_document(&mut self) -> Result<()> {
        if self.current > 0 {
            self.end_sequence()?;
        }
        if self.doc_sequences == 0 {
            self.empty_documents += 1;
            return Ok(());
        }
        self.docs
            .write_all(&(self.sequences as i64).to_le_bytes())
            .map_err(|e| Error::io(&self.idx_path, "write scratch doc_idx", e))?;
        self.documents += 1;
        self.doc_sequences = 0;
        Ok(())
    }

    /// One whole document: `add_tokens` then `end_document`.
    pub fn add_document(&mut self, tokens: &[u32]) -> Result<()> {
        self.add_tokens(tokens)?;
        self.end_document()
    }

    /// Documents written so far.
    pub fn documents(&self) -> u64 {
        self.documents
    }

    /// Tokens written so far.
    pub fn tokens(&self) -> u64 {
        self.tokens
    }

    /// End the last document if it is open, write the `.idx`, and move both
    /// files into place.
    pub fn finish(mut self) -> Result<WriteSummary> {
        if self.current > 0 || self.doc_sequences > 0 {
            self.end_document()?;
        }
        let bin_path = self.bin.file.path.clone();
        let bin = self
            .bin
            .into_inner()
            .map_err(|e| Error::io(&bin_path, "write", e))?;
        let bin_bytes = self.tokens * self.dtype.size() as u64;
        let sizes = rewind(self.sizes, &self.idx_path)?;
        let docs = rewind(self.docs, &self.idx_path)?;

        let header = Header {
            dtype: self.dtype,
            sequences: self.sequences,
            doc_idx_len: self.documents + 1,
        };
        let idx = PendingFile::create(&self.idx_path)?;
        let mut out = BufWriter::with_capacity(BUF, idx);
        let path = self.idx_path.clone();
        let werr = |e| Error::io(&path, "write", e);
        out.write_all(&header.to_bytes()).map_err(werr)?;
        write_sizes_and_pointers(sizes, &mut out, self.dtype, &self.idx_path)?;
        out.write_all(&0i64.to_le_bytes()).map_err(werr)?;
        io::copy(&mut BufReader::with_capacity(BUF, docs), &mut out).map_err(werr)?;
        let idx = out.into_inner().map_err(|e| werr(e.into_error()))?;
        let idx_bytes = header.idx_len().unwrap_or(u64::MAX);
        commit(bin, idx)?;
        Ok(WriteSummary {
            dtype: self.dtype,
            sequences: self.sequences,
            documents: self.documents,
            tokens: self.tokens,
            empty_documents_dropped: self.empty_documents,
            bin_bytes,
            idx_bytes,
        })
    }
}

/// Copy the spilled sizes, then stream them again as byte pointers.
fn write_sizes_and_pointers(
    mut sizes: File,
    out: &mut impl Write,
    dtype: DType,
    idx_path: &Path,
) -> Result<()> {
    let werr = |e| Error::io(idx_path, "write", e);
    io::copy(&mut BufReader::with_capacity(BUF, &mut sizes), out).map_err(werr)?;
    sizes
        .rewind()
        .map_err(|e| Error::io(idx_path, "rewind scratch sizes", e))?;
    let mut reader = BufReader::with_capacity(BUF, sizes);
    let mut pointer: i64 = 0;
    let mut size = [0u8; 4];
    loop {
        match reader.read_exact(&mut size) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(Error::io(idx_path, "read scratch sizes", e)),
        }
        out.write_all(&pointer.to_le_bytes()).map_err(werr)?;
        pointer += i64::from(i32::from_le_bytes(size)) * dtype.size() as i64;
    }
    Ok(())
}

fn rewind(w: BufWriter<File>, idx_path: &Path) -> Result<File> {
    let mut f = w
        .into_inner()
        .map_err(|e| Error::io(idx_path, "write scratch file", e.into_error()))?;
    f.rewind()
        .map_err(|e| Error::io(idx_path, "rewind scratch file", e))?;
    Ok(f)
}

/// Little-endian bytes of `tokens` (already checked to fit) in `dtype`,
/// appended to `out` (written in place: loops the compiler vectorises).
fn encode(dtype: DType, tokens: &[u32], out: &mut Vec<u8>) {
    let start = out.len();
    out.resize(start + tokens.len() * dtype.size(), 0);
    let bytes = &mut out[start..];
    match dtype {
        DType::U8 | DType::I8 => {
            for (b, &t) in bytes.iter_mut().zip(tokens) {
                *b = t as u8;
            }
        }
        DType::U16 | DType::I16 => {
            for (b, &t) in bytes.chunks_exact_mut(2).zip(tokens) {
                b.copy_from_slice(&(t as u16).to_le_bytes());
            }
        }
        DType::I32 => {
            for (b, &t) in bytes.chunks_exact_mut(4).zip(tokens) {
                b.copy_from_slice(&t.to_le_bytes());
            }
        }
        DType::I64 => {
            for (b, &t) in bytes.chunks_exact_mut(8).zip(tokens) {
                b.copy_from_slice(&u64::from(t).to_le_bytes());
            }
        }
    }
}
