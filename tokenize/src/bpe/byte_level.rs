//! GPT-2's byte-level alphabet: each of the 256 byte values is written as one
//! printable character in vocabulary files (`Ġ` for a space, ...). The engine
//! works on raw bytes, so it maps vocabulary strings back to bytes once.

/// The character that stands for each byte value.
pub(crate) fn byte_chars() -> [char; 256] {
    let mut chars = ['\0'; 256];
    let mut next_unprintable = 256u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        let cp = if printable {
            u32::from(b)
        } else {
            next_unprintable += 1;
            next_unprintable - 1
        };
        // Every value here is below 0x144, a valid scalar value.
        chars[usize::from(b)] = char::from_u32(cp).unwrap_or('\0');
    }
    chars
}

/// Decodes vocabulary strings written in the byte-level alphabet.
pub(crate) struct ByteDecoder {
    /// Byte value of each character below U+0144, or `None`.
    bytes: [Option<u8>; 0x144],
}

impl ByteDecoder {
    pub(crate) fn new() -> Self {
        let mut bytes = [None; 0x144];
        for (b, c) in byte_chars().into_iter().enumerate() {
            bytes[c as usize] = u8::try_from(b).ok();
        }
        Self { bytes }
    }

    /// The bytes a vocabulary string stands for, or `None` when it holds a
    /// character outside the byte-level alphabet.
    pub(crate) fn decode(&self, token: &str) -> Option<Vec<u8>> {
        token
            .chars()
            .map(|c| self.bytes.get(c as usize).copied().flatten())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::{ByteDecoder, byte_chars};

    #[test]
    fn gpt2_alphabet() {
        let chars = byte_chars();
        assert_eq!(chars[usize::from(b' ')], 'Ġ');
        assert_eq!(chars[usize::from(b'\n')], 'Ċ');
        assert_eq!(chars[usize::from(b'a')], 'a');
        assert_eq!(chars[0xAD], 'Ń');
        let decoder = ByteDecoder::new();
        assert_eq!(decoder.decode("Ġhello").as_deref(), Some(&b" hello"[..]));
        assert_eq!(decoder.decode("ĠĊ").as_deref(), Some(&b" \n"[..]));
        assert_eq!(decoder.decode("日"), None);
    }
}
