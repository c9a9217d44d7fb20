//! The BPE model on bytes: a piece's bytes start as one token each, then the
//! adjacent pair with the lowest merge rank is merged (the leftmost one among
//! equals) until no pair has a merge. This is the order of the `tokenizers`
//! crate (merge ranks; tiktoken uses token ranks, the same thing for GPT-2).
//!
//! Speed: pair lookups in one flat Fx hash map keyed on both ids; a piece that
//! BPE turns into one vocabulary token is found whole by one lookup; short
//! pieces merge in stack arrays by linear scans (tiktoken's way), long ones by
//! a priority queue over a linked list (no quadratic blow-up on long runs).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rustc_hash::FxHashMap;

/// Pieces up to this many bytes merge on the stack by linear scans.
const SMALL_PIECE: usize = 64;

/// Pieces up to this many bytes are found whole by a `u64` key.
const SHORT_PIECE: usize = 7;

/// A piece of up to [`SHORT_PIECE`] bytes as one `u64`: its bytes, then
/// zeros, and its length in the last byte (so that pieces that differ only
/// by trailing NUL bytes differ).
#[inline(always)]
fn short_key(piece: &[u8]) -> Option<u64> {
    if piece.len() > SHORT_PIECE {
        return None;
    }
    let mut key = [0u8; 8];
    key[..piece.len()].copy_from_slice(piece);
    key[7] = piece.len() as u8;
    Some(u64::from_le_bytes(key))
}

/// Elements `shift_left` moves at a time.
const SHIFT_CHUNK: usize = 8;

/// `a[at..n - 1] = a[at + 1..n]`, [`SHIFT_CHUNK`] elements at a time:
/// fixed-size moves the compiler makes a few vector loads and stores, not
/// a call to `memmove` for a handful of ids. Elements from `n - 1` on are
/// left unspecified, and `a` needs `SHIFT_CHUNK` elements of room past `n`.
#[inline(always)]
fn shift_left<T: Copy + Default>(a: &mut [T], mut at: usize, n: usize) {
    while at + 1 < n {
        let mut chunk = [T::default(); SHIFT_CHUNK];
        chunk.copy_from_slice(&a[at + 1..at + 1 + SHIFT_CHUNK]);
        a[at..at + SHIFT_CHUNK].copy_from_slice(&chunk);
        at += SHIFT_CHUNK;
    }
}

/// No merge for this pair.
const NO_MERGE: u32 = u32::MAX;

/// The merge rules of a byte-level BPE model, in ids.
pub(crate) struct MergeTable {
    /// The token of each single byte.
    byte_ids: [u32; 256],
    /// `(left << 32) | right` -> `(rank << 32) | merged`.
    pairs: FxHashMap<u64, u64>,
    /// Pieces that encode to exactly one token, with that token: those of
    /// up to [`SHORT_PIECE`] bytes by [`short_key`] (one probe, no bytes
    /// to follow), longer ones by their bytes.
    whole_short: FxHashMap<u64, u32>,
    whole_long: FxHashMap<Box<[u8]>, u32>,
}

impl MergeTable {
    /// A table from the token of each byte and the merges in rank order
    /// (`(left, right, merged)`; a later duplicate of a pair replaces the
    /// earlier one, as in `tokenizers`).
    ///
    /// `tokens` lists the vocabulary's tokens as bytes; those that BPE gives
    /// back as themselves (all of them when `ignore_merges`) become whole-piece
    /// shortcuts.
    pub(crate) fn new(
        byte_ids: [u32; 256],
        merges: impl IntoIterator<Item = (u32, u32, u32)>,
        tokens: impl IntoIterator<Item = (Vec<u8>, u32)>,
        ignore_merges: bool,
    ) -> Self {
        let mut pairs = FxHashMap::default();
        for (rank, (left, right, merged)) in merges.into_iter().enumerate() {
            let rank = u32::try_from(rank).unwrap_or(NO_MERGE - 1);
            pairs.insert(
                pair_key(left, right),
                (u64::from(rank) << 32) | u64::from(merged),
            );
        }
        let mut table = Self {
            byte_ids,
            pairs,
            whole_short: FxHashMap::default(),
            whole_long: FxHashMap::default(),
        };
        let (mut short, mut long) = (FxHashMap::default(), FxHashMap::default());
        let mut ids = Vec::new();
        for (bytes, id) in tokens {
            if bytes.len() < 2 {
                continue;
            }
            let keep = ignore_merges || {
                ids.clear();
                table.merge(&bytes, &mut ids);
                ids == [id]
            };
            if keep {
                match short_key(&bytes) {
                    Some(key) => short.insert(key, id),
                    None => long.insert(bytes.into_boxed_slice(), id),
                };
            }
        }
        (table.whole_short, table.whole_long) = (short, long);
        table
    }

    /// Appends the tokens of one piece to `out`.
    #[inline]
    pub(crate) fn encode_piece(&self, piece: &[u8], out: &mut Vec<u32>) {
        match piece {
            [] => {}
            [b] => out.push(self.byte_ids[usize::from(*b)]),
            _ => match short_key(piece).map_or_else(
                || self.whole_long.get(piece),
                |key| self.whole_short.get(&key),
            ) {
                Some(&id) => out.push(id),
                None => self.merge(piece, out),
            },
        }
    }

    fn merge(&self, piece: &[u8], out: &mut Vec<u32>) {
        if piece.len() <= SMALL_PIECE {
            self.merge_small(piece, out);
        } else {
            self.merge_large(piece, out);
        }
    }

    /// `(rank, merged)` of a pair, rank `NO_MERGE` when it has no merge.
    #[inline(always)]
    fn lookup(&self, left: u32, right: u32) -> (u32, u32) {
        match self.pairs.get(&pair_key(left, right)) {
            Some(&v) => ((v >> 32) as u32, v as u32),
            None => (NO_MERGE, 0),
        }
    }

    /// Linear scans over stack arrays; `piece` is 2..=SMALL_PIECE bytes.
    fn merge_small(&self, piece: &[u8], out: &mut Vec<u32>) {
        // Room past the end for `shift_left`'s last chunk.
        let mut ids = [0u32; SMALL_PIECE + SHIFT_CHUNK];
        // pairs[i] = (rank, merged) of (ids[i], ids[i + 1]).
        let mut pairs = [(NO_MERGE, 0u32); SMALL_PIECE + SHIFT_CHUNK];
        let mut n = piece.len();
        for (id, &b) in ids.iter_mut().zip(piece) {
            *id = self.byte_ids[usize::from(b)];
        }
        for i in 0..n - 1 {
            pairs[i] = self.lookup(ids[i], ids[i + 1]);
        }
        loop {
            let mut best = NO_MERGE;
            let mut at = 0;
            for (i, &(rank, _)) in pairs[..n - 1].iter().enumerate() {
                if rank < best {
                    best = rank;
                    at = i;
                }
            }
            if best == NO_MERGE {
                break;
            }
            ids[at] = pairs[at].1;
            shift_left(&mut ids, at + 1, n);
            shift_left(&mut pairs, at + 1, n - 1);
            n -= 1;
            if at + 1 < n {
                pairs[at] = self.lookup(ids[at], ids[at + 1]);
            }
            if at > 0 {
                pairs[at - 1] = self.lookup(ids[at - 1], ids[at]);
            }
            if n == 1 {
                break;
            }
        }
        out.extend_from_slice(&ids[..n]);
    }

    /// A min-queue of candidate merges over a linked list of symbols; stale
    /// entries are recognised when popped (the pair at their position no
    /// longer merges into the same token).
    fn merge_large(&self, piece: &[u8], out: &mut Vec<u32>) {
        const NONE: usize = usize::MAX;
        let n = piece.len();
        let mut ids: Vec<u32> = piece
            .iter()
            .map(|&b| self.byte_ids[usize::from(b)])
            .collect();
        let mut next: Vec<usize> = (1..=n).map(|i| if i == n { NONE } else { i }).collect();
        let mut prev: Vec<usize> = (0..n).map(|i| i.wrapping_sub(1)).collect();
        let mut alive = vec![true; n];
        let mut queue = BinaryHeap::with_capacity(n);
        for i in 0..n - 1 {
            let (rank, merged) = self.lookup(ids[i], ids[i + 1]);
            if rank != NO_MERGE {
                queue.push(Reverse((rank, i, merged)));
            }
        }
        while let Some(Reverse((rank, at, merged))) = queue.pop() {
            let right = next[at];
            if !alive[at] || right == NONE || self.lookup(ids[at], ids[right]) != (rank, merged) {
                continue;
            }
            ids[at] = merged;
            alive[right] = false;
            next[at] = next[right];
            if next[at] != NONE {
                prev[next[at]] = at;
            }
            let before = prev[at];
            if before != NONE {
                let (rank, merged) = self.lookup(ids[before], ids[at]);
                if rank != NO_MERGE {
                    queue.push(Reverse((rank, before, merged)));
                }
            }
            if next[at] != NONE {
                let (rank, merged) = self.lookup(ids[at], ids[next[at]]);
                if rank != NO_MERGE {
                    queue.push(Reverse((rank, at, merged)));
                }
            }
        }
        let mut at = 0;
        while at != NONE {
            out.push(ids[at]);
            at = next[at];
        }
    }
}

#[inline(always)]
fn pair_key(left: u32, right: u32) -> u64 {
    (u64::from(left) << 32) | u64::from(right)
}

#[cfg(test)]
mod tests {
    use super::MergeTable;

    /// Bytes are their own ids; merges make ids from 256 up.
    fn table(merges: &[(u32, u32, u32)]) -> MergeTable {
        let byte_ids = std::array::from_fn(|b| b as u32);
        MergeTable::new(byte_ids, merges.iter().copied(), [], false)
    }

    fn both_ways(table: &MergeTable, piece: &[u8]) -> Vec<u32> {
        let mut large = Vec::new();
        table.merge_large(piece, &mut large);
        if piece.len() <= super::SMALL_PIECE {
            let mut small = Vec::new();
            table.merge_small(piece, &mut small);
            assert_eq!(small, large, "{piece:?}");
        }
        large
    }

    #[test]
    fn lowest_rank_first_then_leftmost() {
        let a = u32::from(b'a');
        let b = u32::from(b'b');
        // rank 0: a b -> 256; rank 1: a a -> 257; rank 2: 257 256 -> 258
        let t = table(&[(a, b, 256), (a, a, 257), (257, 256, 258)]);
        assert_eq!(both_ways(&t, b"aab"), [a, 256]);
        assert_eq!(both_ways(&t, b"aaab"), [258]);
        assert_eq!(both_ways(&t, b"aaaab"), [257, a, 256]);
        assert_eq!(both_ways(&t, b"aaaaab"), [257, 258]);
        assert_eq!(both_ways(&t, b"aaaaaab"), [257, 257, a, 256]);
        assert_eq!(both_ways(&t, b"xy"), [u32::from(b'x'), u32::from(b'y')]);
    }

    #[test]
    fn whole_pieces_are_found_by_length_and_bytes() {
        let byte_ids = std::array::from_fn(|b| b as u32);
        let tokens = [
            (b"a\0".to_vec(), 300),
            (b"a\0\0".to_vec(), 301),
            (b"abcdefg".to_vec(), 302),
            (b"abcdefgh".to_vec(), 303),
            (b"\0\0\0\0\0\0\0".to_vec(), 304),
        ];
        let t = MergeTable::new(byte_ids, [], tokens.clone(), true);
        for (bytes, id) in tokens {
            let mut ids = Vec::new();
            t.encode_piece(&bytes, &mut ids);
            assert_eq!(ids, [id], "{bytes:?}");
        }
        // Not whole tokens: one more NUL, one byte fewer or more.
        for piece in [
            &b"a\0\0\0"[..],
            b"abcdef",
            b"abcdefghi",
            b"\0\0\0\0\0\0\0\0",
        ] {
            let mut ids = Vec::new();
            t.encode_piece(piece, &mut ids);
            assert_eq!(ids, piece.iter().map(|&b| u32::from(b)).collect::<Vec<_>>());
        }
    }

    #[test]
    fn long_and_short_pieces_agree() {
        let a = u32::from(b'a');
        let b = u32::from(b' ');
        let t = table(&[
            (b, b, 256),
            (256, 256, 257),
            (a, b, 258),
            (257, b, 259),
            (258, 256, 260),
        ]);
        let mut seed = 7u32;
        for len in 2..200 {
            let piece: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    if seed >> 16 & 3 == 0 { b'a' } else { b' ' }
                })
                .collect();
            let ids = both_ways(&t, &piece);
            let mut via_entry = Vec::new();
            t.encode_piece(&piece, &mut via_entry);
            assert_eq!(ids, via_entry);
        }
    }
}
