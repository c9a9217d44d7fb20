//! `Tokens`: the typed tokens of one sequence (or a slice of it), borrowed
//! from the mapped `.bin` when its bytes are aligned for the type, copied
//! otherwise.

use std::borrow::Cow;

use crate::DType;

/// Tokens in the shard's own dtype.
///
/// Token ids are never negative in files GPT-NeoX or this crate writes; the
/// `u32` accessors convert a negative value of a signed dtype as `as u32`
/// does, the `i64` ones are exact for every dtype.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tokens<'a> {
    /// `uint8` tokens.
    U8(Cow<'a, [u8]>),
    /// `int8` tokens.
    I8(Cow<'a, [i8]>),
    /// `int16` tokens.
    I16(Cow<'a, [i16]>),
    /// `int32` tokens.
    I32(Cow<'a, [i32]>),
    /// `int64` tokens.
    I64(Cow<'a, [i64]>),
    /// `uint16` tokens.
    U16(Cow<'a, [u16]>),
}

/// Borrow `bytes` as `&[T]` when aligned (and the machine is little-endian),
/// else decode a copy.
macro_rules! view {
    ($bytes:expr, $t:ty) => {{
        let bytes: &'a [u8] = $bytes;
        #[cfg(target_endian = "little")]
        let borrowed = bytemuck::try_cast_slice::<u8, $t>(bytes).ok();
        #[cfg(not(target_endian = "little"))]
        let borrowed: Option<&[$t]> = None;
        match borrowed {
            Some(s) => Cow::Borrowed(s),
            None => Cow::Owned(
                bytes
                    .chunks_exact(std::mem::size_of::<$t>())
                    .map(|c| <$t>::from_le_bytes(c.try_into().unwrap_or_default()))
                    .collect(),
            ),
        }
    }};
}

/// A token element type: exact as `i64`, as `as u32` to `u32`.
trait Element: Copy {
    fn to_i64(self) -> i64;
    fn to_u32(self) -> u32;
}

macro_rules! element {
    ($($t:ty),*) => {$(
        impl Element for $t {
            fn to_i64(self) -> i64 {
                self as i64
            }
            fn to_u32(self) -> u32 {
                self as u32
            }
        }
    )*};
}
element!(u8, i8, i16, i32, u16);

impl Element for i64 {
    fn to_i64(self) -> i64 {
        self
    }
    fn to_u32(self) -> u32 {
        self as u32
    }
}

/// Apply `$f` to the slice inside whichever variant `$tokens` is.
macro_rules! each {
    ($tokens:expr, $s:ident => $f:expr) => {
        match $tokens {
            Tokens::U8($s) => $f,
            Tokens::I8($s) => $f,
            Tokens::I16($s) => $f,
            Tokens::I32($s) => $f,
            Tokens::I64($s) => $f,
            Tokens::U16($s) => $f,
        }
    };
}

impl<'a> Tokens<'a> {
    /// View little-endian `bytes` (a whole number of elements) as `dtype` tokens.
    pub(crate) fn from_le_bytes(dtype: DType, bytes: &'a [u8]) -> Self {
        match dtype {
            DType::U8 => Tokens::U8(Cow::Borrowed(bytes)),
            DType::I8 => Tokens::I8(view!(bytes, i8)),
            DType::I16 => Tokens::I16(view!(bytes, i16)),
            DType::I32 => Tokens::I32(view!(bytes, i32)),
            DType::I64 => Tokens::I64(view!(bytes, i64)),
            DType::U16 => Tokens::U16(view!(bytes, u16)),
        }
    }

    /// The dtype of the tokens.
    pub fn dtype(&self) -> DType {
        match self {
            Tokens::U8(_) => DType::U8,
            Tokens::I8(_) => DType::I8,
            Tokens::I16(_) => DType::I16,
            Tokens::I32(_) => DType::I32,
            Tokens::I64(_) => DType::I64,
            Tokens::U16(_) => DType::U16,
        }
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        each!(self, s => s.len())
    }

    /// Whether there are no tokens.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the tokens are borrowed from the mapped file (no copy).
    pub fn is_borrowed(&self) -> bool {
        each!(self, s => matches!(s, Cow::Borrowed(_)))
    }

    /// Token `j`, exact.
    pub fn get(&self, j: usize) -> Option<i64> {
        each!(self, s => s.get(j).map(|&t| t.to_i64()))
    }

    /// The tokens as `u32` ids, in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = u32> + '_ {
        (0..self.len()).map(move |j| each!(self, s => s[j].to_u32()))
    }

    /// The tokens as `u32` ids.
    pub fn to_vec_u32(&self) -> Vec<u32> {
        each!(self, s => s.iter().map(|&t| t.to_u32()).collect())
    }

    /// The tokens as `i64` (exact for every dtype; what GPT-NeoX's samples hold).
    pub fn to_vec_i64(&self) -> Vec<i64> {
        each!(self, s => s.iter().map(|&t| t.to_i64()).collect())
    }

    /// Append the tokens to `out` as `i64`.
    pub fn extend_i64(&self, out: &mut Vec<i64>) {
        each!(self, s => out.extend(s.iter().map(|&t| t.to_i64())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_bytes_are_borrowed_unaligned_are_copied() {
        let values = [1u16, 500, 65_535];
        let mut bytes = vec![0u8; 8];
        let aligned_at = if (bytes.as_ptr() as usize).is_multiple_of(2) {
            0
        } else {
            1
        };
        bytes.truncate(aligned_at);
        for v in values {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        bytes.push(0);
        let aligned = Tokens::from_le_bytes(DType::U16, &bytes[aligned_at..aligned_at + 6]);
        assert!(aligned.is_borrowed());
        assert_eq!(aligned.to_vec_u32(), [1, 500, 65_535]);
        let mut shifted = vec![9u8];
        shifted.extend_from_slice(&bytes[aligned_at..aligned_at + 6]);
        let unaligned = Tokens::from_le_bytes(DType::U16, &shifted[1..]);
        assert_eq!(unaligned.to_vec_u32(), [1, 500, 65_535]);
        assert_eq!(unaligned, aligned);
    }

    #[test]
    fn accessors_agree_for_every_dtype() {
        for dtype in DType::ALL {
            let ids: [u64; 3] = [0, 7, dtype.max_token().min(1_000_000)];
            let mut bytes = Vec::new();
            for id in ids {
                bytes.extend_from_slice(&id.to_le_bytes()[..dtype.size()]);
            }
            let t = Tokens::from_le_bytes(dtype, &bytes);
            assert_eq!(t.dtype(), dtype);
            assert_eq!(t.len(), 3);
            let expect: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
            assert_eq!(t.to_vec_i64(), expect, "{dtype}");
            assert_eq!(t.iter().map(i64::from).collect::<Vec<_>>(), expect);
            assert_eq!(t.get(2), Some(expect[2]));
            assert_eq!(t.get(3), None);
        }
    }

    #[test]
    fn negative_ids_are_exact_as_i64() {
        let bytes = (-5i32).to_le_bytes();
        let t = Tokens::from_le_bytes(DType::I32, &bytes);
        assert_eq!(t.to_vec_i64(), [-5]);
        assert_eq!(t.to_vec_u32(), [(-5i32) as u32]);
    }
}
