//! The GPT-2 pre-tokenizer, hand-written: it cuts text exactly where the regex
//! `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
//! of the `tokenizers` ByteLevel pre-tokenizer cuts it, without a regex engine.
//!
//! The rules, in the regex's order of preference at each position:
//! - an apostrophe followed by `s`, `t`, `m`, `d`, `re`, `ve` or `ll` is a piece;
//! - a run of letters, of numbers, or of other non-space characters is a piece,
//!   with one ASCII space in front of it when there is one;
//! - a run of white space is a piece, except that when non-space follows it,
//!   its last character is left to the next piece (`\s+(?!\S)`): as the prefix
//!   space of the next run when it is an ASCII space, else as a piece alone.

use super::unicode_classes::{ASCII_CLASSES, CharClass, class_of};

/// The pieces of a text, in order; together they cover the text exactly.
pub(crate) struct Pieces<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Pieces<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        Self { text, pos: 0 }
    }

    /// The class and UTF-8 length of the character starting at byte `pos`.
    #[inline(always)]
    fn class_at(&self, pos: usize) -> (CharClass, usize) {
        let b = self.text.as_bytes()[pos];
        if b < 0x80 {
            return (ASCII_CLASSES[b as usize], 1);
        }
        match self.text[pos..].chars().next() {
            Some(c) => (class_of(c), c.len_utf8()),
            None => (CharClass::Other, 1),
        }
    }

    /// Where the run of `class` characters that continues at `pos` ends.
    #[inline(always)]
    fn run_end(&self, mut pos: usize, class: CharClass) -> usize {
        let bytes = self.text.as_bytes();
        while pos < bytes.len() {
            let b = bytes[pos];
            if b < 0x80 {
                if ASCII_CLASSES[b as usize] != class {
                    break;
                }
                pos += 1;
            } else {
                let (c, len) = self.class_at(pos);
                if c != class {
                    break;
                }
                pos += len;
            }
        }
        pos
    }

    /// Where the white-space piece that starts at `start` (first character
    /// `first_len` bytes long) ends.
    fn space_end(&self, start: usize, first_len: usize) -> usize {
        let len = self.text.len();
        let mut last = start;
        let mut pos = start + first_len;
        while pos < len {
            let (class, char_len) = self.class_at(pos);
            if class != CharClass::Space {
                break;
            }
            last = pos;
            pos += char_len;
        }
        if pos == len || last == start {
            pos
        } else {
            last
        }
    }

    /// Where the piece that starts at `start` ends.
    fn piece_end(&self, start: usize) -> usize {
        let bytes = self.text.as_bytes();
        let first = bytes[start];
        if first == b'\''
            && let Some(len) = contraction_len(&bytes[start + 1..])
        {
            return start + 1 + len;
        }
        if first == b' ' && start + 1 < bytes.len() {
            let (class, len) = self.class_at(start + 1);
            if class != CharClass::Space {
                return self.run_end(start + 1 + len, class);
            }
        }
        let (class, len) = self.class_at(start);
        match class {
            CharClass::Space => self.space_end(start, len),
            _ => self.run_end(start + len, class),
        }
    }
}

/// The length of the contraction suffix (`s`, `re`, ...) after an apostrophe.
#[inline]
fn contraction_len(rest: &[u8]) -> Option<usize> {
    match rest {
        [b's' | b't' | b'm' | b'd', ..] => Some(1),
        [b'r', b'e', ..] | [b'v', b'e', ..] | [b'l', b'l', ..] => Some(2),
        _ => None,
    }
}

impl<'a> Iterator for Pieces<'a> {
    type Item = &'a str;

    #[inline]
    fn next(&mut self) -> Option<&'a str> {
        let start = self.pos;
        if start >= self.text.len() {
            return None;
        }
        let end = self.piece_end(start);
        self.pos = end;
        Some(&self.text[start..end])
    }
}

#[cfg(test)]
mod tests {
    use super::Pieces;

    fn pieces(text: &str) -> Vec<&str> {
        Pieces::new(text).collect()
    }

    #[test]
    fn words_numbers_and_punctuation_take_one_leading_space() {
        assert_eq!(
            pieces("Hello world, 42 times!"),
            ["Hello", " world", ",", " 42", " times", "!"]
        );
    }

    #[test]
    fn contractions_split_only_at_a_piece_start() {
        assert_eq!(pieces("don't we'll"), ["don", "'t", " we", "'ll"]);
        assert_eq!(pieces("x.'s 'S"), ["x", ".'", "s", " '", "S"]);
        assert_eq!(pieces("'re'"), ["'re", "'"]);
    }

    #[test]
    fn a_space_run_leaves_its_last_space_to_the_next_word() {
        assert_eq!(pieces("a   b"), ["a", "  ", " b"]);
        assert_eq!(pieces("a \n\tb"), ["a", " \n", "\t", "b"]);
        assert_eq!(pieces("a\nb"), ["a", "\n", "b"]);
        assert_eq!(pieces("a   "), ["a", "   "]);
        assert_eq!(pieces(" "), [" "]);
    }

    #[test]
    fn unicode_classes_apply() {
        // U+00A0 and U+3000 are spaces, 'é' a letter, '٣' a number,
        // U+0301 (a combining mark) neither.
        assert_eq!(
            pieces("é\u{301}x\u{a0}\u{3000}y ٣"),
            ["é", "\u{301}", "x", "\u{a0}", "\u{3000}", "y", " ٣"]
        );
    }

    #[test]
    fn pieces_cover_the_text() {
        let text = "  mixed 日本語 text\t\t with  🎉🎉 emoji's 12.5%\u{2028}";
        assert_eq!(pieces(text).concat(), text);
    }
}
