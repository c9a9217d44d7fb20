//! The NFC normalizer, with the same Unicode tables as `tokenizers` (the
//! `unicode-normalization-alignments` crate) and a fast path: ASCII text and
//! text that the quick check finds already composed are left as they are.

use std::borrow::Cow;

use unicode_normalization_alignments::{IsNormalized, UnicodeNormalization, is_nfc_quick};

/// `text` in Unicode Normalization Form C.
pub(crate) fn nfc(text: &str) -> Cow<'_, str> {
    if text.is_ascii() || is_nfc_quick(text.chars()) == IsNormalized::Yes {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(text.nfc().map(|(c, _)| c).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::nfc;

    #[test]
    fn composes_and_keeps() {
        assert_eq!(nfc("e\u{301}"), "é");
        assert_eq!(nfc("\u{212b}"), "Å");
        assert!(matches!(nfc("plain"), std::borrow::Cow::Borrowed(_)));
        assert!(matches!(nfc("déjà"), std::borrow::Cow::Borrowed(_)));
    }
}
