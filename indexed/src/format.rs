//! The `MMIDIDX` layout: file names, the `.idx` header, and little-endian
//! array views over unaligned bytes.
//!
//! `.idx`: magic `MMIDIDX\0\0` (9 bytes), version u64 = 1, dtype code u8,
//! N u64 (sequences), D u64 (doc_idx entries), then i32 sizes\[N\],
//! i64 pointers\[N\], i64 doc_idx\[D\]; little-endian, no padding.
//! `.bin`: the tokens of every sequence, concatenated.

use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use crate::DType;

/// The first 9 bytes of every `MMIDIDX` index.
pub const MAGIC: &[u8; 9] = b"MMIDIDX\x00\x00";
/// The first bytes of the older, non-mmap Megatron index (`TNTIDX\0\0`).
pub const OLD_MAGIC: &[u8; 8] = b"TNTIDX\x00\x00";
/// The only version there is.
pub const VERSION: u64 = 1;
/// Bytes before the sizes array.
pub const HEADER_LEN: usize = 34;

/// `prefix.bin`: the tokens.
pub fn bin_path(prefix: &Path) -> PathBuf {
    with_suffix(prefix, ".bin")
}

/// `prefix.idx`: the index.
pub fn idx_path(prefix: &Path) -> PathBuf {
    with_suffix(prefix, ".idx")
}

/// The prefix a user means: `x.bin` and `x.idx` name prefix `x`, anything else is a prefix.
pub fn prefix_of(path: &Path) -> PathBuf {
    match path.extension().and_then(|e| e.to_str()) {
        Some("bin" | "idx") => path.with_extension(""),
        _ => path.to_path_buf(),
    }
}

fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

/// The fixed-size start of an `.idx`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub dtype: DType,
    /// N: sequences.
    pub sequences: u64,
    /// D: doc_idx entries (documents + 1).
    pub doc_idx_len: u64,
}

impl Header {
    pub fn to_bytes(self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[..9].copy_from_slice(MAGIC);
        b[9..17].copy_from_slice(&VERSION.to_le_bytes());
        b[17] = self.dtype.code();
        b[18..26].copy_from_slice(&self.sequences.to_le_bytes());
        b[26..34].copy_from_slice(&self.doc_idx_len.to_le_bytes());
        b
    }

    /// Total `.idx` length the counts imply, if it fits in a u64.
    pub fn idx_len(self) -> Option<u64> {
        let arrays = self
            .sequences
            .checked_mul(12)?
            .checked_add(self.doc_idx_len.checked_mul(8)?)?;
        arrays.checked_add(HEADER_LEN as u64)
    }
}

/// A little-endian integer stored at any alignment.
pub trait LeInt: Copy + 'static {
    /// Its width in bytes.
    const SIZE: usize;
    /// Decode from exactly `SIZE` bytes.
    fn from_le(bytes: &[u8]) -> Self;
}

impl LeInt for i32 {
    const SIZE: usize = 4;
    fn from_le(b: &[u8]) -> Self {
        i32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }
}

impl LeInt for i64 {
    const SIZE: usize = 8;
    fn from_le(b: &[u8]) -> Self {
        i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
    }
}

/// A zero-copy view of a little-endian array inside a mapped file, read
/// element by element (the arrays of an `.idx` are not aligned).
#[derive(Clone, Copy)]
pub struct LeSlice<'a, T> {
    bytes: &'a [u8],
    _t: PhantomData<T>,
}

impl<'a, T: LeInt> LeSlice<'a, T> {
    /// View `bytes`, whose length is a multiple of `T::SIZE`.
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        debug_assert_eq!(bytes.len() % T::SIZE, 0);
        LeSlice {
            bytes,
            _t: PhantomData,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.bytes.len() / T::SIZE
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Element `i`, or `None` past the end.
    pub fn get(&self, i: usize) -> Option<T> {
        let start = i.checked_mul(T::SIZE)?;
        let b = self.bytes.get(start..start.checked_add(T::SIZE)?)?;
        Some(T::from_le(b))
    }

    /// Every element, in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = T> + 'a {
        self.bytes.chunks_exact(T::SIZE).map(T::from_le)
    }

    /// Copy into a vector.
    pub fn to_vec(&self) -> Vec<T> {
        self.iter().collect()
    }

    /// The raw little-endian bytes.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }
}

impl<T: LeInt + std::fmt::Debug> std::fmt::Debug for LeSlice<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_append_suffix_to_prefix_with_dots() {
        let p = Path::new("/data/enron.v2_text_document");
        assert_eq!(bin_path(p), Path::new("/data/enron.v2_text_document.bin"));
        assert_eq!(idx_path(p), Path::new("/data/enron.v2_text_document.idx"));
    }

    #[test]
    fn prefix_of_strips_only_bin_and_idx() {
        assert_eq!(
            prefix_of(Path::new("a/x_text_document.bin")),
            Path::new("a/x_text_document")
        );
        assert_eq!(
            prefix_of(Path::new("a/x_text_document.idx")),
            Path::new("a/x_text_document")
        );
        assert_eq!(
            prefix_of(Path::new("a/x.v2_text_document")),
            Path::new("a/x.v2_text_document")
        );
    }

    #[test]
    fn header_layout_is_megatron_s() {
        let h = Header {
            dtype: DType::U16,
            sequences: 3,
            doc_idx_len: 4,
        };
        let b = h.to_bytes();
        assert_eq!(&b[..9], MAGIC);
        assert_eq!(u64::from_le_bytes(b[9..17].try_into().unwrap()), 1);
        assert_eq!(b[17], 8);
        assert_eq!(u64::from_le_bytes(b[18..26].try_into().unwrap()), 3);
        assert_eq!(u64::from_le_bytes(b[26..34].try_into().unwrap()), 4);
        assert_eq!(h.idx_len(), Some(34 + 12 * 3 + 8 * 4));
        let huge = Header {
            sequences: u64::MAX / 4,
            ..h
        };
        assert_eq!(huge.idx_len(), None);
    }

    #[test]
    fn le_slice_reads_unaligned_values() {
        let mut bytes = vec![0u8];
        for v in [1i64, -2, i64::MAX] {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        let s = LeSlice::<i64>::new(&bytes[1..]);
        assert_eq!(s.len(), 3);
        assert_eq!(s.to_vec(), [1, -2, i64::MAX]);
        assert_eq!(s.get(1), Some(-2));
        assert_eq!(s.get(3), None);
        assert_eq!(s.get(usize::MAX), None);
    }
}
