//! A byte trie of pieces: exact look-up, and every piece that is a prefix
//! of a text (what SentencePiece asks of its darts-clone double arrays).

use rustc_hash::FxHashMap;

/// Pieces (byte strings) and their ids.
#[derive(Default, Clone)]
pub(crate) struct Trie {
    /// (node, next byte) -> child node; the root is node 0.
    edges: FxHashMap<(u32, u8), u32>,
    /// The id of the piece ending at each node, if one does.
    values: Vec<Option<u32>>,
}

impl Trie {
    /// Add a piece (a later insert of the same piece replaces the id).
    pub(crate) fn insert(&mut self, piece: &[u8], id: u32) {
        if self.values.is_empty() {
            self.values.push(None);
        }
        let mut node = 0u32;
        for &b in piece {
            let next = self.values.len() as u32;
            node = *self.edges.entry((node, b)).or_insert_with(|| {
                self.values.push(None);
                next
            });
        }
        self.values[node as usize] = Some(id);
    }

    /// The id of exactly `piece`.
    pub(crate) fn get(&self, piece: &[u8]) -> Option<u32> {
        let mut node = 0u32;
        for &b in piece {
            node = *self.edges.get(&(node, b))?;
        }
        self.values.get(node as usize).copied().flatten()
    }

    /// Call `found(length, id)` for every piece that starts `text`, shortest first.
    pub(crate) fn prefixes(&self, text: &[u8], mut found: impl FnMut(usize, u32)) {
        let mut node = 0u32;
        for (i, &b) in text.iter().enumerate() {
            let Some(&next) = self.edges.get(&(node, b)) else {
                return;
            };
            node = next;
            if let Some(id) = self.values[node as usize] {
                found(i + 1, id);
            }
        }
    }

    /// The longest piece that starts `text`: its length and id.
    pub(crate) fn longest_prefix(&self, text: &[u8]) -> Option<(usize, u32)> {
        if self.edges.is_empty() {
            return None;
        }
        let mut longest = None;
        self.prefixes(text, |len, id| longest = Some((len, id)));
        longest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups() {
        let mut t = Trie::default();
        t.insert(b"a", 1);
        t.insert(b"abc", 2);
        t.insert(b"b", 3);
        assert_eq!(t.get(b"abc"), Some(2));
        assert_eq!(t.get(b"ab"), None);
        assert_eq!(t.get(b""), None);
        let mut seen = Vec::new();
        t.prefixes(b"abcd", |len, id| seen.push((len, id)));
        assert_eq!(seen, [(1, 1), (3, 2)]);
        assert_eq!(t.longest_prefix(b"abx"), Some((1, 1)));
        assert_eq!(t.longest_prefix(b"x"), None);
        assert_eq!(Trie::default().longest_prefix(b"a"), None);
    }
}
