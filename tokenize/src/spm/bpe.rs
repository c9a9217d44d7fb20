//! SentencePiece's BPE model (`bpe_model.cc`, `Model::SampleEncode` of
//! sentencepiece 0.2.3 without dropout): start from characters (user-defined
//! pieces whole and frozen), repeatedly merge the adjacent pair whose merged
//! piece scores highest (leftmost first among equals), then split merged
//! pieces of type UNUSED back into the pieces they were made of.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use rustc_hash::FxHashMap;

use super::normalizer::char_len;
use super::proto::PieceType;
use super::trie::Trie;
use super::{Segment, Vocab};

/// A symbol of the text being merged: a byte range, linked to its neighbours.
#[derive(Clone, Copy)]
struct Symbol {
    prev: Option<usize>,
    next: Option<usize>,
    freeze: bool,
    start: usize,
    len: usize,
}

/// A candidate merge of the symbols `left` and `right`.
struct Pair {
    left: usize,
    right: usize,
    score: f32,
    /// The merged length: a pair whose symbols have changed since is stale.
    len: usize,
}

impl PartialEq for Pair {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Pair {}

impl PartialOrd for Pair {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Pair {
    /// The heap's top: the highest score, then the leftmost. SentencePiece
    /// compares the scores' bits, which is `total_cmp`'s order (-0 < +0).
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then(other.left.cmp(&self.left))
    }
}

/// A byte range of the text: (start, length).
type Span = (usize, usize);

/// Merged UNUSED pieces -> the two spans they were made of.
type RevMerge<'a> = FxHashMap<&'a [u8], (Span, Span)>;

/// `kMaxBpeResegmentDepth`.
const MAX_RESEGMENT_DEPTH: usize = 100;

/// Segment `text` into `out`.
pub(crate) fn encode(vocab: &Vocab, user_defined: &Trie, text: &[u8], out: &mut Vec<Segment>) {
    out.clear();
    let mut symbols: Vec<Symbol> = Vec::new();
    let mut pos = 0;
    while pos < text.len() {
        let (len, freeze) = match user_defined.longest_prefix(&text[pos..]) {
            Some((len, _)) => (len, true),
            None => (char_len(text[pos]).min(text.len() - pos), false),
        };
        let index = symbols.len();
        symbols.push(Symbol {
            prev: index.checked_sub(1),
            next: (pos + len < text.len()).then_some(index + 1),
            freeze,
            start: pos,
            len,
        });
        pos += len;
    }
    if symbols.is_empty() {
        return;
    }

    let mut agenda = BinaryHeap::new();
    let mut rev_merge: RevMerge = FxHashMap::default();
    let mut add_pair = |symbols: &[Symbol],
                        left: Option<usize>,
                        right: Option<usize>,
                        agenda: &mut BinaryHeap<Pair>| {
        let (Some(left), Some(right)) = (left, right) else {
            return;
        };
        let (l, r) = (symbols[left], symbols[right]);
        if l.freeze || r.freeze {
            return;
        }
        let merged = &text[l.start..l.start + l.len + r.len];
        let Some(id) = vocab
            .matched
            .get(merged)
            .filter(|&id| !vocab.is_reserved(id))
        else {
            return;
        };
        agenda.push(Pair {
            left,
            right,
            score: vocab.scores[id as usize],
            len: merged.len(),
        });
        if vocab.kinds[id as usize] == PieceType::Unused {
            rev_merge.insert(merged, ((l.start, l.len), (r.start, r.len)));
        }
    };
    for i in 1..symbols.len() {
        add_pair(&symbols, Some(i - 1), Some(i), &mut agenda);
    }
    while let Some(top) = agenda.pop() {
        let (l, r) = (symbols[top.left], symbols[top.right]);
        if l.len == 0 || r.len == 0 || l.len + r.len != top.len {
            continue;
        }
        symbols[top.left].len += r.len;
        symbols[top.left].next = r.next;
        if let Some(next) = r.next {
            symbols[next].prev = Some(top.left);
        }
        symbols[top.right].len = 0;
        let prev = symbols[top.left].prev;
        add_pair(&symbols, prev, Some(top.left), &mut agenda);
        let next = symbols[top.left].next;
        add_pair(&symbols, Some(top.left), next, &mut agenda);
    }

    let mut index = Some(0);
    while let Some(i) = index {
        let s = symbols[i];
        resegment(vocab, &rev_merge, text, (s.start, s.len), 0, out);
        index = s.next;
    }
}

fn resegment(
    vocab: &Vocab,
    rev_merge: &RevMerge,
    text: &[u8],
    (start, len): (usize, usize),
    depth: usize,
    out: &mut Vec<Segment>,
) {
    let piece = &text[start..start + len];
    let found = vocab.matched.get(piece);
    let id = match found {
        _ if depth > MAX_RESEGMENT_DEPTH => found.unwrap_or(vocab.unk),
        Some(id) if !vocab.is_reserved(id) && vocab.kinds[id as usize] == PieceType::Unused => {
            match rev_merge.get(piece) {
                Some(&(left, right)) => {
                    resegment(vocab, rev_merge, text, left, depth + 1, out);
                    resegment(vocab, rev_merge, text, right, depth + 1, out);
                    return;
                }
                None => vocab.unk,
            }
        }
        Some(id) if !vocab.is_reserved(id) => id,
        _ => vocab.unk,
    };
    out.push(Segment {
        start,
        end: start + len,
        id,
    });
}
