//! The common JSON line read by hand: an object (or a bare string) whose
//! wanted keys hold strings or null. The text is decoded straight into the
//! document's `String` in one pass; other values are only checked. Anything
//! else (a number or a list under a wanted key, a lone surrogate, anything
//! not valid JSON) gives `None`, and serde_json then reads the line, with its
//! own result and error messages: what this accepts, it reads exactly as
//! serde_json does.

use super::json_line::Line;

/// Nesting deeper than this is left to serde_json.
const MAX_DEPTH: usize = 64;

/// `line` read as [`json_line::parse`](super::json_line::parse) reads it, if
/// it has the common shape; `None` otherwise.
pub(crate) fn scan(line: &str, keys: &[String]) -> Option<Line> {
    let mut s = Scanner { line, at: 0 };
    s.whitespace();
    let parsed = match s.next()? {
        b'"' => Line::String(s.text_string()?),
        b'{' => Line::Object(s.object(keys)?),
        _ => return None,
    };
    s.whitespace();
    (s.at == line.len()).then_some(parsed)
}

struct Scanner<'a> {
    line: &'a str,
    /// The next byte to read.
    at: usize,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.line.as_bytes().get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.at += 1;
        Some(b)
    }

    /// Consume `b` if it comes next.
    fn eat(&mut self, b: u8) -> bool {
        let next = self.peek() == Some(b);
        self.at += usize::from(next);
        next
    }

    fn expect(&mut self, b: u8) -> Option<()> {
        self.eat(b).then_some(())
    }

    /// JSON's whitespace (serde_json's too): space, tab, CR, LF.
    fn whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\r' | b'\n') = self.peek() {
            self.at += 1;
        }
    }

    fn literal(&mut self, word: &str) -> Option<()> {
        let rest = &self.line.as_bytes()[self.at..];
        rest.starts_with(word.as_bytes())
            .then(|| self.at += word.len())
    }

    /// The members of an object after its `{`: for each wanted key, the
    /// text of its last occurrence.
    fn object(&mut self, keys: &[String]) -> Option<Vec<Option<super::json_line::Text>>> {
        let mut texts = vec![None; keys.len()];
        let mut key = String::new();
        self.whitespace();
        if self.eat(b'}') {
            return Some(texts);
        }
        loop {
            self.expect(b'"')?;
            key.clear();
            self.string(&mut key)?;
            self.whitespace();
            self.expect(b':')?;
            self.whitespace();
            match keys.iter().position(|k| *k == key) {
                Some(i) => texts[i] = Some(Ok(self.text()?)),
                None => self.skip(0)?,
            }
            self.whitespace();
            if !self.eat(b',') {
                self.expect(b'}')?;
                return Some(texts);
            }
            self.whitespace();
        }
    }

    /// A wanted value: a string, or null (no text).
    fn text(&mut self) -> Option<String> {
        if self.eat(b'"') {
            self.text_string()
        } else {
            self.literal("null")?;
            Some(String::new())
        }
    }

    /// A string after its opening quote, into a `String` of its own (room
    /// for the rest of the line: it is never grown). Room far beyond the
    /// text is given back: batches count text, not capacity, and a short
    /// text before large metadata must not hold the whole line.
    fn text_string(&mut self) -> Option<String> {
        let mut text = String::with_capacity(self.line.len() - self.at);
        self.string(&mut text)?;
        if text.capacity() > 2 * text.len() + 64 {
            text.shrink_to_fit();
        }
        Some(text)
    }

    /// Any value, checked and skipped.
    fn skip(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        match self.next()? {
            b'"' => self.string(&mut String::new()),
            b'{' => {
                self.whitespace();
                if self.eat(b'}') {
                    return Some(());
                }
                loop {
                    self.expect(b'"')?;
                    self.string(&mut String::new())?;
                    self.whitespace();
                    self.expect(b':')?;
                    self.whitespace();
                    self.skip(depth + 1)?;
                    self.whitespace();
                    if !self.eat(b',') {
                        return self.expect(b'}');
                    }
                    self.whitespace();
                }
            }
            b'[' => {
                self.whitespace();
                if self.eat(b']') {
                    return Some(());
                }
                loop {
                    self.skip(depth + 1)?;
                    self.whitespace();
                    if !self.eat(b',') {
                        return self.expect(b']');
                    }
                    self.whitespace();
                }
            }
            b't' => self.literal("rue"),
            b'f' => self.literal("alse"),
            b'n' => self.literal("ull"),
            b'-' => self.number(),
            b'0'..=b'9' => {
                self.at -= 1;
                self.number()
            }
            _ => None,
        }
    }

    /// A number's digits (after its sign): `0` or `[1-9][0-9]*`, then an
    /// optional fraction and exponent. What follows is its container's to check.
    fn number(&mut self) -> Option<()> {
        match self.next()? {
            b'0' => {}
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.eat(b'.') {
            self.first_digit()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.at += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            self.first_digit()?;
        }
        Some(())
    }

    fn first_digit(&mut self) -> Option<()> {
        self.next()?.is_ascii_digit().then(|| self.digits())
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.at += 1;
        }
    }

    /// A string after its opening quote, decoded onto `out`.
    fn string(&mut self, out: &mut String) -> Option<()> {
        let bytes = self.line.as_bytes();
        loop {
            let stop = copy_plain(self.line, self.at, out);
            self.at = stop + 1;
            match *bytes.get(stop)? {
                b'"' => return Some(()),
                b'\\' => self.escape(out)?,
                // A control character: not allowed in a JSON string.
                _ => return None,
            }
        }
    }

    /// An escape after its backslash, decoded onto `out`.
    fn escape(&mut self, out: &mut String) -> Option<()> {
        let c = match self.next()? {
            b'n' => '\n',
            b't' => '\t',
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'r' => '\r',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'u' => match self.hex4()? {
                high @ 0xD800..=0xDBFF => {
                    self.literal("\\u")?;
                    let low = self.hex4()?;
                    if !(0xDC00..=0xDFFF).contains(&low) {
                        return None;
                    }
                    char::from_u32(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00))?
                }
                // A lone low surrogate is not a character: None.
                code => char::from_u32(code)?,
            },
            _ => return None,
        };
        out.push(c);
        Some(())
    }

    /// Four hex digits (either case).
    fn hex4(&mut self) -> Option<u32> {
        let digits = self.line.as_bytes().get(self.at..self.at + 4)?;
        let mut code = 0;
        for &d in digits {
            code = code * 16 + char::from(d).to_digit(16)?;
        }
        self.at += 4;
        Some(code)
    }
}

/// Appends `line[from..stop]` to `out`, where `stop` is the first quote,
/// backslash or control character from `from` (or the end), and returns
/// `stop`. When `out` has room for the whole rest of the line (a text's
/// `String` has), the bytes are copied as they are scanned, sixteen at a
/// time; otherwise they are found first, then copied.
fn copy_plain(line: &str, from: usize, out: &mut String) -> usize {
    let bytes = line.as_bytes();
    #[cfg(target_arch = "x86_64")]
    if out.capacity() - out.len() >= bytes.len() - from {
        return copy_plain_sse2(bytes, from, out);
    }
    let stop = find_special(bytes, from);
    // Quotes, backslashes and ASCII bytes are character boundaries.
    out.push_str(&line[from..stop]);
    stop
}

/// [`copy_plain`] when `out` has room for `bytes[from..]`: each sixteen
/// bytes are stored past `out`'s end before they are looked at, and only
/// those before the first special byte are kept.
#[cfg(target_arch = "x86_64")]
fn copy_plain_sse2(bytes: &[u8], mut from: usize, out: &mut String) -> usize {
    use std::arch::x86_64::{_mm_loadu_si128, _mm_storeu_si128};
    // SAFETY: the caller left room for `bytes.len() - from` more bytes, and
    // `len - start_len` stays equal to `from - start_from`, so a 16-byte
    // store at `len` while `from + 16 <= bytes.len()` stays within the
    // capacity. Only `bytes[start_from..stop]` is kept: it starts after an
    // ASCII quote or escape (or at a boundary the caller chose) and ends at
    // an ASCII byte or at the end of `bytes`, a `str`, so it is whole UTF-8
    // characters. Nothing between `as_mut_vec` and `set_len` can panic.
    unsafe {
        let vec = out.as_mut_vec();
        let dst = vec.as_mut_ptr();
        let mut len = vec.len();
        while let Some(chunk) = bytes.get(from..from + 16) {
            let v = _mm_loadu_si128(chunk.as_ptr().cast());
            _mm_storeu_si128(dst.add(len).cast(), v);
            let found = special_mask(v);
            if found != 0 {
                let k = found.trailing_zeros() as usize;
                vec.set_len(len + k);
                return from + k;
            }
            (len, from) = (len + 16, from + 16);
        }
        let stop = find_special_by_words(bytes, from);
        std::ptr::copy_nonoverlapping(bytes.as_ptr().add(from), dst.add(len), stop - from);
        vec.set_len(len + stop - from);
        stop
    }
}

/// One bit per byte of `v` (bit i for byte i) that is a quote, a backslash
/// or a control character.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn special_mask(v: std::arch::x86_64::__m128i) -> u32 {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_max_epu8, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
    };
    // SAFETY: SSE2 is part of every x86-64 processor.
    unsafe {
        let quote = _mm_set1_epi8(b'"' as i8);
        let backslash = _mm_set1_epi8(b'\\' as i8);
        let below_space = _mm_set1_epi8(0x1f);
        // max(v, 0x1f) == 0x1f: the bytes up to 0x1f.
        let control = _mm_cmpeq_epi8(_mm_max_epu8(v, below_space), below_space);
        let quotes = _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash));
        _mm_movemask_epi8(_mm_or_si128(quotes, control)) as u32
    }
}

/// The first quote, backslash or control character of `bytes` from `from`
/// (or the end): sixteen bytes at a time (SSE2, part of every x86-64).
#[cfg(target_arch = "x86_64")]
fn find_special(bytes: &[u8], mut from: usize) -> usize {
    use std::arch::x86_64::_mm_loadu_si128;
    while let Some(chunk) = bytes.get(from..from + 16) {
        // SAFETY: SSE2 is part of every x86-64 processor; the load reads the
        // 16 bytes of `chunk`, unaligned.
        let found = special_mask(unsafe { _mm_loadu_si128(chunk.as_ptr().cast()) });
        if found != 0 {
            return from + found.trailing_zeros() as usize;
        }
        from += 16;
    }
    find_special_by_words(bytes, from)
}

#[cfg(not(target_arch = "x86_64"))]
fn find_special(bytes: &[u8], from: usize) -> usize {
    find_special_by_words(bytes, from)
}

/// [`find_special`], eight bytes at a time in a `u64`.
fn find_special_by_words(bytes: &[u8], mut from: usize) -> usize {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    // Flags (sets the high bit of) the bytes of `x` below `n`: exactly for
    // the first byte flagged; bytes after it may be flagged wrongly.
    let below = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x & HIGH;
    while let Some(chunk) = bytes.get(from..from + 8) {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word);
        let found = below(x ^ (ONES * u64::from(b'"')), 1)
            | below(x ^ (ONES * u64::from(b'\\')), 1)
            | below(x, 0x20);
        if found != 0 {
            return from + (found.trailing_zeros() / 8) as usize;
        }
        from += 8;
    }
    from + bytes[from..]
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        .unwrap_or(bytes.len() - from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::read::json_line::parse_with_serde;

    fn keys(k: &[&str]) -> Vec<String> {
        k.iter().map(|s| s.to_string()).collect()
    }

    /// `line` read by hand, checked to be what serde_json reads.
    fn by_hand(line: &str, k: &[&str]) -> Line {
        let keys = keys(k);
        let scanned = scan(line, &keys).unwrap_or_else(|| panic!("left to serde_json: {line}"));
        assert_eq!(parse_with_serde(line, &keys).unwrap(), scanned, "{line}");
        scanned
    }

    fn texts(line: &str, k: &[&str]) -> Vec<Option<String>> {
        match by_hand(line, k) {
            Line::Object(texts) => texts.into_iter().map(|t| t.map(Result::unwrap)).collect(),
            other => panic!("{other:?}"),
        }
    }

    fn text(line: &str) -> String {
        texts(line, &["text"]).remove(0).unwrap()
    }

    #[test]
    fn escapes_and_unicode_decode_as_serde_json_decodes_them() {
        assert_eq!(
            text(r#"{"text": "a\nb\tc\"d\\e\/f\bg\fh\ri"}"#),
            "a\nb\tc\"d\\e/f\u{8}g\u{c}h\ri"
        );
        assert_eq!(
            text(r#"{"text": "\u00e9\u00E9 é 日本 \ud83d\ude00 \uD83D\uDE00 \u0000 \u001f end"}"#),
            "éé é 日本 😀 😀 \0 \u{1f} end"
        );
        // Long runs without escapes, escapes at every place of an 8-byte word.
        for pad in 0..17 {
            let raw = format!("{}\\n{}\\\"", "x".repeat(pad), "yé".repeat(pad));
            let decoded = format!("{}\n{}\"", "x".repeat(pad), "yé".repeat(pad));
            assert_eq!(text(&format!("{{\"text\": \"{raw}\"}}")), decoded);
        }
        assert_eq!(text(r#"{"text": ""}"#), "");
        assert_eq!(
            by_hand("\"bare \\u00e9\"\r\n", &["text"]),
            Line::String("bare é".into())
        );
    }

    #[test]
    fn other_members_are_checked_and_skipped() {
        // Nested values before and after the key, keys in another order,
        // whitespace everywhere, numbers of every shape, CRLF at the end.
        let line = " { \"meta\" : {\"a\": [1, -0.5e+10, 0, 1E5, 2.25, true, false, null, {}, [], [[]], \"s\\\"}\"]},\t\"id\":-0 ,\"text\" : \"t\" , \"z\": {\"text\": 5} }\r\n";
        assert_eq!(text(line), "t");
        // Several keys, any order; a missing key is None; null is no text.
        assert_eq!(
            texts(r#"{"b": "2", "c": null, "a": "1"}"#, &["a", "b", "c", "d"]),
            [
                Some("1".into()),
                Some("2".into()),
                Some(String::new()),
                None
            ]
        );
        // The last of duplicate keys counts; an escaped key is the key it spells.
        assert_eq!(
            text(r#"{"text": "first", "te\u0078t": "second"}"#),
            "second"
        );
        assert_eq!(texts("{}", &["text"]), [None]);
    }

    #[test]
    fn everything_else_is_left_to_serde_json() {
        let deep = format!(
            "{{\"m\": {}{}, \"text\": \"t\"}}",
            "[".repeat(70),
            "]".repeat(70)
        );
        let lines = [
            // Values serde_json names or refuses under a wanted key.
            r#"{"text": 5}"#,
            r#"{"text": 1e400}"#,
            r#"{"text": ["a", "b"]}"#,
            r#"{"text": {"a": 1}}"#,
            r#"{"text": true}"#,
            r#"{"text": "a", "text": 5}"#,
            // Surrogates that are not a pair.
            r#"{"text": "\ud800"}"#,
            r#"{"text": "\udc00"}"#,
            r#"{"text": "\ud800\u0041"}"#,
            r#"{"text": "\ud800x"}"#,
            // Invalid JSON.
            "{\"text\": \"a\tb\"}",
            r#"{"text": "a\qb"}"#,
            r#"{"text": "\u12g4"}"#,
            r#"{"text": "a"#,
            r#"{"text" "a"}"#,
            r#"{"text": "a",}"#,
            r#"{"text": "a"} x"#,
            r#"{"m": 01, "text": "a"}"#,
            r#"{"m": 1., "text": "a"}"#,
            r#"{"m": .5, "text": "a"}"#,
            r#"{"m": -, "text": "a"}"#,
            r#"{"m": 1e, "text": "a"}"#,
            r#"{"m": nul, "text": "a"}"#,
            r#"{"m": [1,], "text": "a"}"#,
            r#"{"m": {"a" 1}, "text": "a"}"#,
            r#"{"text": nullx}"#,
            "",
            "   ",
            // Other top-level values.
            "[1]",
            "3",
            "null",
            // Nesting deeper than the scanner goes.
            &deep,
        ];
        for line in lines {
            assert_eq!(scan(line, &keys(&["text"])), None, "{line}");
        }
        // serde_json still reads the deep line.
        assert!(parse_with_serde(&deep, &keys(&["text"])).is_ok());
    }

    #[test]
    fn special_bytes_are_found_wherever_they_are() {
        for len in 0..40 {
            for at in 0..=len {
                for special in [b'"', b'\\', 0, 0x1f] {
                    let mut bytes = vec![b'a'; len];
                    bytes.extend([0x20, 0x7f, 0x80, 0xff, b'!', b'#', b'[', b']']);
                    if at < len {
                        bytes[at] = special;
                    }
                    let expected = if at < len { at } else { bytes.len() };
                    for from in [0, at.saturating_sub(3).min(at)] {
                        assert_eq!(find_special(&bytes, from), expected, "{len} {at}");
                        assert_eq!(find_special_by_words(&bytes, from), expected, "{len} {at}");
                    }
                }
            }
        }
    }

    #[test]
    fn plain_runs_are_copied_the_same_with_room_or_without() {
        // Multi-byte characters across every 16-byte boundary, a special
        // byte at every place, onto a String that already holds text.
        for len in 0..40 {
            for at in 0..=len {
                for special in ["\"", "\\", "\n", ""] {
                    let body: String = "aé日😀".chars().cycle().take(len).collect();
                    let split = body.char_indices().nth(at).map_or(body.len(), |(i, _)| i);
                    let line = format!("{}{special}{}tail", &body[..split], &body[split..]);
                    for from in [0, 1.min(line.len())] {
                        if !line.is_char_boundary(from) {
                            continue;
                        }
                        let expected_stop = find_special(line.as_bytes(), from);
                        let mut tight = String::from("ab");
                        let mut roomy = String::with_capacity(2 + line.len());
                        roomy.push_str("ab");
                        assert_eq!(copy_plain(&line, from, &mut tight), expected_stop);
                        assert_eq!(copy_plain(&line, from, &mut roomy), expected_stop);
                        let expected = format!("ab{}", &line[from..expected_stop]);
                        assert_eq!((&tight, &roomy), (&expected, &expected), "{line:?} {from}");
                    }
                }
            }
        }
    }

    /// A small deterministic generator (xorshift64*).
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n
        }
    }

    #[test]
    fn mutated_lines_read_by_hand_read_as_serde_json_reads_them() {
        let seeds = [
            r#"{"text": "From a\n\tb \"q\" \\ \u00e9\ud83d\ude00", "meta": {"source": "x", "id": [1, -2.5e3, true, null]}}"#,
            r#"{"meta": {"a": {"b": []}}, "text": "t", "text": null, "n": 0}"#,
            r#""bare \/ string""#,
            r#"{"q": "x", "a": "y"}"#,
        ];
        let tokens = [
            "\"", "\\", "{", "}", "[", "]", ":", ",", " ", "\t", "\r", "\n", "\u{1}", "0", "1",
            "-", "+", ".", "e", "E", "n", "u", "\\u", "\\ud83d", "\\ude00", "\\u00e9", "null",
            "true", "\"text\"", "\"a\"", "é", "x",
        ];
        let keys = keys(&["text", "a"]);
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut read_by_hand = 0;
        for round in 0..30_000 {
            let mut chars: Vec<String> = seeds[round % seeds.len()]
                .chars()
                .map(String::from)
                .collect();
            for _ in 0..1 + rng.below(3) {
                let at = rng.below(chars.len() + 1);
                let token = tokens[rng.below(tokens.len())].to_string();
                match rng.below(3) {
                    0 if at < chars.len() => {
                        chars.remove(at);
                    }
                    1 if at < chars.len() => chars[at] = token,
                    _ => chars.insert(at, token),
                }
            }
            let line: String = chars.concat();
            if let Some(scanned) = scan(&line, &keys) {
                read_by_hand += 1;
                assert_eq!(parse_with_serde(&line, &keys).ok(), Some(scanned), "{line}");
            }
        }
        // Enough of the mutated lines stay valid to make this a test.
        assert!(read_by_hand > 3_000, "{read_by_hand}");
    }
}
