//! The token element types an `MMIDIDX` file can declare, and their codes.

use std::fmt;

/// The element type of the tokens in a `.bin` file.
///
/// Codes follow Megatron / GPT-NeoX. Codes 6 and 7 (float32/float64, and
/// float16 in some forks) mean different things in GPT-NeoX and Megatron and
/// never hold token ids, so they are not supported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    /// `uint8`, code 1.
    U8,
    /// `int8`, code 2.
    I8,
    /// `int16`, code 3.
    I16,
    /// `int32`, code 4.
    I32,
    /// `int64`, code 5.
    I64,
    /// `uint16`, code 8.
    U16,
}

impl DType {
    /// Every supported dtype.
    pub const ALL: [DType; 6] = [
        DType::U8,
        DType::I8,
        DType::I16,
        DType::I32,
        DType::I64,
        DType::U16,
    ];

    /// The code written at byte 17 of the `.idx` header.
    pub fn code(self) -> u8 {
        match self {
            DType::U8 => 1,
            DType::I8 => 2,
            DType::I16 => 3,
            DType::I32 => 4,
            DType::I64 => 5,
            DType::U16 => 8,
        }
    }

    /// The dtype a header code names, if it is a supported one.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.code() == code)
    }

    /// Bytes per token.
    pub fn size(self) -> usize {
        match self {
            DType::U8 | DType::I8 => 1,
            DType::I16 | DType::U16 => 2,
            DType::I32 => 4,
            DType::I64 => 8,
        }
    }

    /// The dtype GPT-NeoX picks for a tokenizer: `uint16` when the (unpadded)
    /// vocabulary has fewer than 65,500 entries, else `int32`.
    pub fn for_vocab_size(vocab_size: usize) -> DType {
        if vocab_size < 65_500 {
            DType::U16
        } else {
            DType::I32
        }
    }

    /// The largest token id this dtype can hold.
    pub fn max_token(self) -> u64 {
        match self {
            DType::U8 => u8::MAX as u64,
            DType::I8 => i8::MAX as u64,
            DType::I16 => i16::MAX as u64,
            DType::I32 => i32::MAX as u64,
            DType::I64 => i64::MAX as u64,
            DType::U16 => u16::MAX as u64,
        }
    }

    /// The numpy name of the dtype (`uint16`, `int32`, ...).
    pub fn name(self) -> &'static str {
        match self {
            DType::U8 => "uint8",
            DType::I8 => "int8",
            DType::I16 => "int16",
            DType::I32 => "int32",
            DType::I64 => "int64",
            DType::U16 => "uint16",
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_unknown_codes_are_refused() {
        for d in DType::ALL {
            assert_eq!(DType::from_code(d.code()), Some(d));
        }
        for code in [0u8, 6, 7, 9, 255] {
            assert_eq!(DType::from_code(code), None, "code {code}");
        }
    }

    #[test]
    fn sizes_match_numpy() {
        let sizes: Vec<usize> = DType::ALL.iter().map(|d| d.size()).collect();
        assert_eq!(sizes, [1, 1, 2, 4, 8, 2]);
    }

    #[test]
    fn vocab_size_threshold_is_gpt_neox_s() {
        assert_eq!(DType::for_vocab_size(50_257), DType::U16);
        assert_eq!(DType::for_vocab_size(65_499), DType::U16);
        assert_eq!(DType::for_vocab_size(65_500), DType::I32);
        assert_eq!(DType::for_vocab_size(100_277), DType::I32);
    }

    #[test]
    fn display_is_numpy_name() {
        assert_eq!(DType::U16.to_string(), "uint16");
        assert_eq!(DType::I32.to_string(), "int32");
    }
}
