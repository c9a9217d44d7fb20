//! The memory-mapped, validated `.bin/.idx` reader.

use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::error::{Corruption, Error, Result};
use crate::format::{HEADER_LEN, Header, LeSlice, MAGIC, OLD_MAGIC, VERSION, bin_path, idx_path};
use crate::{DType, Tokens};

/// A shard opened for reading: both files mapped, every field checked.
///
/// `open` verifies the header, that the `.idx` length matches its counts,
/// that sizes are non-negative, that each pointer starts where the previous
/// sequence ends (the first at 0) and the `.bin` length is exactly where the
/// last one ends, and that doc_idx starts at 0 and never decreases or passes
/// the number of sequences. After that no access can read out of bounds.
pub struct IndexedDataset {
    bin_path: PathBuf,
    idx_path: PathBuf,
    bin: Mmap,
    idx: Mmap,
    dtype: DType,
    len: usize,
    doc_idx_len: usize,
}

impl std::fmt::Debug for IndexedDataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexedDataset")
            .field("bin_path", &self.bin_path)
            .field("dtype", &self.dtype)
            .field("sequences", &self.len)
            .field("documents", &self.num_documents())
            .finish()
    }
}

fn map(path: &Path) -> Result<Mmap> {
    let file = File::open(path).map_err(|e| Error::io(path, "open", e))?;
    // SAFETY: the map is read-only. Like every mmap reader (numpy's memmap in
    // GPT-NeoX included) we rely on no one truncating the file while it is
    // open; the bounds themselves are all checked against the mapped length.
    unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, "map", e))
}

fn read_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn parse_header(idx: &[u8], path: &Path) -> Result<Header> {
    let corrupt = |problem| Error::corrupt(path, problem);
    if idx.starts_with(OLD_MAGIC) {
        return Err(corrupt(Corruption::OldTntIdx));
    }
    if idx.len() < HEADER_LEN {
        if !MAGIC.starts_with(idx) && !idx.starts_with(MAGIC) {
            return Err(corrupt(Corruption::WrongMagic {
                found: escape(&idx[..idx.len().min(MAGIC.len())]),
            }));
        }
        return Err(corrupt(Corruption::TruncatedHeader {
            needed: HEADER_LEN as u64,
            found: idx.len() as u64,
        }));
    }
    if &idx[..9] != MAGIC {
        return Err(corrupt(Corruption::WrongMagic {
            found: escape(&idx[..9]),
        }));
    }
    let version = read_u64(idx, 9);
    if version != VERSION {
        return Err(corrupt(Corruption::WrongVersion { found: version }));
    }
    let code = idx[17];
    let dtype = DType::from_code(code).ok_or(corrupt(Corruption::UnknownDtype { code }))?;
    let header = Header {
        dtype,
        sequences: read_u64(idx, 18),
        doc_idx_len: read_u64(idx, 26),
    };
    let needed = header
        .idx_len()
        .ok_or(corrupt(Corruption::ImpossibleCounts {
            sequences: header.sequences,
            doc_idx_len: header.doc_idx_len,
        }))?;
    let found = idx.len() as u64;
    if found < needed {
        return Err(corrupt(Corruption::TruncatedIdx {
            sequences: header.sequences,
            doc_idx_len: header.doc_idx_len,
            needed,
            found,
        }));
    }
    if found > needed {
        return Err(corrupt(Corruption::TrailingIdx {
            sequences: header.sequences,
            doc_idx_len: header.doc_idx_len,
            needed,
            extra: found - needed,
        }));
    }
    if header.doc_idx_len == 0 {
        return Err(corrupt(Corruption::EmptyDocIdx));
    }
    Ok(header)
}

fn escape(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

/// Where the sequences checked so far end in the `.bin`, in bytes: each
/// pointer must equal it, and each size moves it on. A crafted `.idx` can
/// describe more bytes than an i64 offset holds, so every step is checked.
struct SequenceEnd {
    bytes: u64,
    elem: u64,
    sequences: u64,
}

impl SequenceEnd {
    fn new(dtype: DType, sequences: u64) -> Self {
        SequenceEnd {
            bytes: 0,
            elem: dtype.size() as u64,
            sequences,
        }
    }

    /// Check sequence `index` (its `size` and `pointer`) and move past it.
    fn follow(&mut self, index: u64, size: i32, pointer: i64) -> Result<(), Corruption> {
        // Byte offsets of the fields in the .idx, for messages (saturating:
        // never used to index anything).
        let size_at = (HEADER_LEN as u64).saturating_add(index.saturating_mul(4));
        let pointer_at = (HEADER_LEN as u64)
            .saturating_add(self.sequences.saturating_mul(4))
            .saturating_add(index.saturating_mul(8));
        let Ok(size) = u64::try_from(size) else {
            return Err(Corruption::NegativeSize {
                index,
                offset: size_at,
                size,
            });
        };
        // `bytes` never exceeds i64::MAX (checked below).
        if u64::try_from(pointer).ok() != Some(self.bytes) {
            return Err(Corruption::BadPointer {
                index,
                offset: pointer_at,
                expected: self.bytes as i64,
                found: pointer,
            });
        }
        self.bytes = size
            .checked_mul(self.elem)
            .and_then(|n| n.checked_add(self.bytes))
            .filter(|&end| i64::try_from(end).is_ok())
            .ok_or(Corruption::OffsetOverflow {
                index,
                offset: size_at,
            })?;
        Ok(())
    }
}

impl IndexedDataset {
    /// Map and validate `prefix.idx` and `prefix.bin`.
    pub fn open(prefix: impl AsRef<Path>) -> Result<Self> {
        let prefix = prefix.as_ref();
        let idx_path = idx_path(prefix);
        let bin_path = bin_path(prefix);
        let idx = map(&idx_path)?;
        let header = parse_header(&idx, &idx_path)?;
        // The .idx length equals a value computed from the counts, so they fit usize.
        let (Ok(len), Ok(doc_idx_len)) = (
            usize::try_from(header.sequences),
            usize::try_from(header.doc_idx_len),
        ) else {
            return Err(Error::corrupt(
                &idx_path,
                Corruption::ImpossibleCounts {
                    sequences: header.sequences,
                    doc_idx_len: header.doc_idx_len,
                },
            ));
        };
        let bin = map(&bin_path)?;
        let ds = IndexedDataset {
            bin_path,
            idx_path,
            bin,
            idx,
            dtype: header.dtype,
            len,
            doc_idx_len,
        };
        ds.check_sizes_and_pointers()?;
        ds.check_doc_idx()?;
        Ok(ds)
    }

    fn check_sizes_and_pointers(&self) -> Result<()> {
        let mut end = SequenceEnd::new(self.dtype, self.len as u64);
        for (i, (size, pointer)) in self.sizes().iter().zip(self.pointers().iter()).enumerate() {
            end.follow(i as u64, size, pointer)
                .map_err(|problem| Error::corrupt(&self.idx_path, problem))?;
        }
        let elem = self.dtype.size() as i64;
        let needed = end.bytes;
        let found = self.bin.len() as u64;
        let tokens = needed / elem as u64;
        if found < needed {
            return Err(Error::corrupt(
                &self.bin_path,
                Corruption::TruncatedBin {
                    tokens,
                    dtype: self.dtype,
                    needed,
                    found,
                },
            ));
        }
        if found > needed {
            return Err(Error::corrupt(
                &self.bin_path,
                Corruption::TrailingBin {
                    tokens,
                    dtype: self.dtype,
                    needed,
                    extra: found - needed,
                },
            ));
        }
        Ok(())
    }

    fn check_doc_idx(&self) -> Result<()> {
        // Offsets below lie inside the .idx, whose length equals the checked
        // sum `Header::idx_len`: they cannot overflow.
        let corrupt = |problem| Error::corrupt(&self.idx_path, problem);
        let base = HEADER_LEN + 12 * self.len;
        let mut previous = 0i64;
        for (d, v) in self.doc_idx().iter().enumerate() {
            let offset = (base + 8 * d) as u64;
            if d == 0 && v != 0 {
                return Err(corrupt(Corruption::DocIdxStart { offset, found: v }));
            }
            if v < previous || v > self.len as i64 {
                return Err(corrupt(Corruption::DocIdxOrder {
                    index: d as u64,
                    offset,
                    found: v,
                    previous,
                    sequences: self.len as u64,
                }));
            }
            previous = v;
        }
        Ok(())
    }

    /// The `.bin` file.
    pub fn bin_path(&self) -> &Path {
        &self.bin_path
    }

    /// The `.idx` file.
    pub fn idx_path(&self) -> &Path {
        &self.idx_path
    }

    /// Token dtype.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Number of sequences (N).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no sequences.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of documents (doc_idx entries - 1).
    pub fn num_documents(&self) -> usize {
        self.doc_idx_len - 1
    }

    /// Tokens in the `.bin`.
    pub fn num_tokens(&self) -> u64 {
        (self.bin.len() / self.dtype.size()) as u64
    }

    /// Bytes of the `.bin`.
    pub fn bin_bytes(&self) -> u64 {
        self.bin.len() as u64
    }

    /// Bytes of the `.idx`.
    pub fn idx_bytes(&self) -> u64 {
        self.idx.len() as u64
    }

    /// Tokens per sequence (`i32`, validated non-negative).
    pub fn sizes(&self) -> LeSlice<'_, i32> {
        LeSlice::new(&self.idx[HEADER_LEN..HEADER_LEN + 4 * self.len])
    }

    /// Byte offset of each sequence in the `.bin`.
    pub fn pointers(&self) -> LeSlice<'_, i64> {
        let start = HEADER_LEN + 4 * self.len;
        LeSlice::new(&self.idx[start..start + 8 * self.len])
    }

    /// Document boundaries: document `d` is sequences `doc_idx[d]..doc_idx[d+1]`.
    pub fn doc_idx(&self) -> LeSlice<'_, i64> {
        LeSlice::new(&self.idx[HEADER_LEN + 12 * self.len..])
    }

    /// Tokens in sequence `i`.
    pub fn size(&self, i: usize) -> Result<usize> {
        self.sizes()
            .get(i)
            .map(|s| s as usize)
            .ok_or_else(|| self.out_of_range(i))
    }

    /// Byte offset of sequence `i` in the `.bin`.
    pub fn pointer(&self, i: usize) -> Result<u64> {
        self.pointers()
            .get(i)
            .map(|p| p as u64)
            .ok_or_else(|| self.out_of_range(i))
    }

    /// The sequences of document `d`.
    pub fn document(&self, d: usize) -> Result<Range<usize>> {
        let doc_idx = self.doc_idx();
        match (
            doc_idx.get(d),
            d.checked_add(1).and_then(|e| doc_idx.get(e)),
        ) {
            (Some(start), Some(end)) => Ok(start as usize..end as usize),
            _ => Err(Error::DocumentOutOfRange {
                path: self.idx_path.clone(),
                index: d,
                len: self.num_documents(),
            }),
        }
    }

    /// The tokens of sequence `i`.
    pub fn get(&self, i: usize) -> Result<Tokens<'_>> {
        let size = self.size(i)?;
        self.get_slice(i, 0, size)
    }

    /// `length` tokens of sequence `i` from token `offset`.
    pub fn get_slice(&self, i: usize, offset: usize, length: usize) -> Result<Tokens<'_>> {
        let size = self.size(i)?;
        if offset.checked_add(length).is_none_or(|end| end > size) {
            return Err(Error::SliceOutOfRange {
                path: self.bin_path.clone(),
                index: i,
                offset,
                length,
                size,
            });
        }
        let elem = self.dtype.size();
        // Validated on open: pointer + size * elem <= .bin length.
        let start = self.pointer(i)? as usize + offset * elem;
        Ok(Tokens::from_le_bytes(
            self.dtype,
            &self.bin[start..start + length * elem],
        ))
    }

    /// Token offset in the `.bin` where sequence `i` starts (`num_tokens()` for `i == len()`).
    pub fn token_offset(&self, i: usize) -> Result<u64> {
        if i == self.len {
            return Ok(self.num_tokens());
        }
        Ok(self.pointer(i)? / self.dtype.size() as u64)
    }

    fn out_of_range(&self, index: usize) -> Error {
        Error::SequenceOutOfRange {
            path: self.bin_path.clone(),
            index,
            len: self.len,
        }
    }
}

#[cfg(test)]
#[path = "reader_tests.rs"]
mod tests;
