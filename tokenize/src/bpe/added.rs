//! Added tokens (`<|endoftext|>`, NeoX's runs of spaces, ...): cut out of the
//! text before pre-tokenization, leftmost-longest, as `tokenizers` does.

use aho_corasick::{AhoCorasick, FindIter, MatchKind};

/// Finds one set of added tokens in text.
pub(crate) struct Matcher {
    automaton: AhoCorasick,
    ids: Vec<u32>,
}

impl Matcher {
    /// A matcher for `(content, id)` pairs; `None` when there are none.
    pub(crate) fn new(
        tokens: Vec<(String, u32)>,
    ) -> Option<Result<Self, aho_corasick::BuildError>> {
        if tokens.is_empty() {
            return None;
        }
        let (contents, ids): (Vec<String>, Vec<u32>) = tokens.into_iter().unzip();
        Some(
            AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .build(&contents)
                .map(|automaton| Self { automaton, ids }),
        )
    }
}

/// A part of a text: plain text, or an added token found in it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Segment<'t> {
    Text(&'t str),
    Token(u32),
}

/// The segments of `text` for `matcher` (a single text segment without one);
/// text segments are never empty.
pub(crate) fn split<'m, 't>(matcher: Option<&'m Matcher>, text: &'t str) -> Split<'m, 't> {
    Split {
        text,
        pos: 0,
        found: matcher.map(|m| (m.automaton.find_iter(text), m.ids.as_slice())),
        pending: None,
    }
}

/// Iterator of [`split`].
pub(crate) struct Split<'m, 't> {
    text: &'t str,
    pos: usize,
    found: Option<(FindIter<'m, 't>, &'m [u32])>,
    pending: Option<u32>,
}

impl<'t> Iterator for Split<'_, 't> {
    type Item = Segment<'t>;

    fn next(&mut self) -> Option<Segment<'t>> {
        if let Some(id) = self.pending.take() {
            return Some(Segment::Token(id));
        }
        if let Some((matches, ids)) = &mut self.found
            && let Some(m) = matches.next()
        {
            let id = ids[m.pattern().as_usize()];
            let start = self.pos;
            self.pos = m.end();
            if m.start() > start {
                self.pending = Some(id);
                return Some(Segment::Text(&self.text[start..m.start()]));
            }
            return Some(Segment::Token(id));
        }
        if self.pos < self.text.len() {
            let start = self.pos;
            self.pos = self.text.len();
            return Some(Segment::Text(&self.text[start..]));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::{Matcher, Segment, split};

    #[test]
    fn leftmost_longest() {
        let matcher = Matcher::new(vec![
            ("  ".to_owned(), 1),
            ("   ".to_owned(), 2),
            ("<|e|>".to_owned(), 3),
        ])
        .and_then(Result::ok);
        let segments: Vec<_> = split(matcher.as_ref(), "a     b<|e|><|e|>").collect();
        assert_eq!(
            segments,
            [
                Segment::Text("a"),
                Segment::Token(2),
                Segment::Token(1),
                Segment::Text("b"),
                Segment::Token(3),
                Segment::Token(3),
            ]
        );
        let plain: Vec<_> = split(None, "text").collect();
        assert_eq!(plain, [Segment::Text("text")]);
        assert_eq!(split(matcher.as_ref(), "").count(), 0);
    }
}
