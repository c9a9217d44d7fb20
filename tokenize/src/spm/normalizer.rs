//! SentencePiece's normalizer (`normalizer.cc`): the precompiled character
//! map (a darts-clone double-array trie of rules, longest match first),
//! user-defined symbols kept as they are, extra whitespace removed, the dummy
//! prefix added, and spaces escaped as `▁` (U+2581).

use super::proto::NormalizerSpec;
use super::trie::Trie;

/// `▁`, SentencePiece's escaped space.
pub(crate) const SPACE: &[u8] = "\u{2581}".as_bytes();

/// The normalizer of one model.
pub(crate) struct Normalizer {
    charsmap: Option<CharsMap>,
    /// User-defined pieces: matched first and never normalized.
    user_defined: Trie,
    add_dummy_prefix: bool,
    remove_extra_whitespaces: bool,
    escape_whitespaces: bool,
    treat_whitespace_as_suffix: bool,
}

impl Normalizer {
    pub(crate) fn new(
        spec: &NormalizerSpec,
        treat_whitespace_as_suffix: bool,
        user_defined: Trie,
    ) -> Result<Self, String> {
        let charsmap = if spec.precompiled_charsmap.is_empty() {
            None
        } else {
            Some(CharsMap::parse(&spec.precompiled_charsmap)?)
        };
        Ok(Self {
            charsmap,
            user_defined,
            add_dummy_prefix: spec.add_dummy_prefix,
            remove_extra_whitespaces: spec.remove_extra_whitespaces,
            escape_whitespaces: spec.escape_whitespaces,
            treat_whitespace_as_suffix,
        })
    }

    /// `Normalizer::Normalize`: the normalized bytes of `input` into `out`.
    pub(crate) fn normalize(&self, input: &str, out: &mut Vec<u8>) {
        out.clear();
        let mut input = input.as_bytes();
        if self.remove_extra_whitespaces {
            // Heading spaces go.
            while !input.is_empty() {
                let (piece, consumed) = self.normalize_prefix(input);
                if piece != b" " {
                    break;
                }
                input = &input[consumed..];
            }
        }
        if input.is_empty() {
            return;
        }
        let space: &[u8] = if self.escape_whitespaces { SPACE } else { b" " };
        if !self.treat_whitespace_as_suffix && self.add_dummy_prefix {
            out.extend_from_slice(space);
        }
        let mut is_prev_space = self.remove_extra_whitespaces;
        while !input.is_empty() {
            let (mut piece, consumed) = self.normalize_prefix(input);
            // Spaces that follow a space go.
            while is_prev_space && piece.first() == Some(&b' ') {
                piece = &piece[1..];
            }
            if !piece.is_empty() {
                for &b in piece {
                    if self.escape_whitespaces && b == b' ' {
                        out.extend_from_slice(SPACE);
                    } else {
                        out.push(b);
                    }
                }
                is_prev_space = piece.last() == Some(&b' ');
            }
            input = &input[consumed..];
            if !self.remove_extra_whitespaces {
                is_prev_space = false;
            }
        }
        if self.remove_extra_whitespaces {
            // Trailing spaces go.
            while out.ends_with(space) {
                out.truncate(out.len() - space.len());
            }
        }
        if self.treat_whitespace_as_suffix && self.add_dummy_prefix {
            out.extend_from_slice(space);
        }
    }

    /// `Normalizer::NormalizePrefix`: what the start of `input` becomes, and
    /// how many bytes of it that consumes.
    fn normalize_prefix<'a>(&'a self, input: &'a [u8]) -> (&'a [u8], usize) {
        if let Some((len, _)) = self.user_defined.longest_prefix(input) {
            return (&input[..len], len);
        }
        if let Some((len, replacement)) = self.charsmap.as_ref().and_then(|m| m.rule(input)) {
            return (replacement, len);
        }
        // One character. `input` comes from a `&str` and every cut above is at
        // the end of a rule or a piece, so this is UTF-8 unless a crafted rule
        // cut a character: then, as SentencePiece, U+FFFD for one byte.
        let len = char_len(input[0]).min(input.len());
        match std::str::from_utf8(&input[..len]) {
            Ok(_) => (&input[..len], len),
            Err(_) => ("\u{fffd}".as_bytes(), 1),
        }
    }
}

/// The length of the UTF-8 character starting with `first`, by
/// SentencePiece's table (`string_util::OneCharLen`); 1 for a stray byte.
pub(crate) fn char_len(first: u8) -> usize {
    const LEN: [u8; 16] = [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4];
    usize::from(LEN[usize::from(first >> 4)])
}

/// `precompiled_charsmap`: a little-endian u32 `trie_size`, then a
/// darts-clone double array of `trie_size` bytes whose values are offsets
/// into the NUL-separated replacement strings that follow.
struct CharsMap {
    units: Vec<u32>,
    replacements: Vec<u8>,
}

impl CharsMap {
    /// `DecodePrecompiledCharsMap`, with its checks.
    fn parse(blob: &[u8]) -> Result<Self, String> {
        let broken =
            |why: String| format!("the normalizer's precompiled_charsmap is broken: {why}");
        let (size, rest) = blob
            .split_first_chunk::<4>()
            .filter(|(_, rest)| !rest.is_empty())
            .ok_or_else(|| broken("shorter than its header".into()))?;
        let size = u32::from_le_bytes(*size) as usize;
        if size >= rest.len() {
            return Err(broken(format!(
                "a trie of {size} bytes in a map of {} bytes",
                blob.len()
            )));
        }
        if size < 1024 || !size.is_multiple_of(1024) {
            return Err(broken(format!(
                "a trie of {size} bytes (expected a multiple of 1024)"
            )));
        }
        let (trie, replacements) = rest.split_at(size);
        if replacements.last() != Some(&0) {
            return Err(broken("the replacements do not end with a NUL byte".into()));
        }
        let units = trie
            .chunks_exact(4)
            .map(|u| u32::from_le_bytes([u[0], u[1], u[2], u[3]]))
            .collect();
        Ok(Self {
            units,
            replacements: replacements.to_vec(),
        })
    }

    /// The longest rule matching the start of `input`: its length and its
    /// replacement. A rule pointing outside the map matches nothing.
    fn rule(&self, input: &[u8]) -> Option<(usize, &[u8])> {
        let (len, value) = self.longest_prefix(input)?;
        let tail = self.replacements.get(value as usize..)?;
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        Some((len, &tail[..end]))
    }

    /// darts-clone's `commonPrefixSearch`, keeping the longest of the first
    /// 32 results (`kMaxTrieResultsSize`).
    fn longest_prefix(&self, key: &[u8]) -> Option<(usize, u32)> {
        const MAX_RESULTS: usize = 32;
        let unit = |pos: usize| self.units.get(pos).copied();
        let offset = |u: u32| ((u >> 10) << ((u & (1 << 9)) >> 6)) as usize;
        let mut best = None;
        let mut results = 0;
        let mut node = offset(unit(0)?);
        for (i, &c) in key.iter().enumerate() {
            node ^= usize::from(c);
            let Some(u) = unit(node) else { break };
            if u & ((1 << 31) | 0xff) != u32::from(c) {
                break;
            }
            node ^= offset(u);
            if (u >> 8) & 1 == 1 {
                let Some(leaf) = unit(node) else { break };
                best = Some((i + 1, leaf & ((1 << 31) - 1)));
                results += 1;
                if results == MAX_RESULTS {
                    break;
                }
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dummy: bool, remove: bool) -> NormalizerSpec {
        NormalizerSpec {
            name: "identity".into(),
            precompiled_charsmap: Vec::new(),
            add_dummy_prefix: dummy,
            remove_extra_whitespaces: remove,
            escape_whitespaces: true,
        }
    }

    fn norm(n: &Normalizer, text: &str) -> String {
        let mut out = Vec::new();
        n.normalize(text, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn whitespace_rules() {
        let n = Normalizer::new(&spec(true, true), false, Trie::default()).unwrap();
        assert_eq!(norm(&n, "  a   b  "), "▁a▁b");
        assert_eq!(norm(&n, "   "), "");
        let n = Normalizer::new(&spec(true, false), false, Trie::default()).unwrap();
        assert_eq!(norm(&n, " a  b "), "▁▁a▁▁b▁");
        let n = Normalizer::new(&spec(true, false), true, Trie::default()).unwrap();
        assert_eq!(norm(&n, "a b"), "a▁b▁");
        let n = Normalizer::new(&spec(false, true), false, Trie::default()).unwrap();
        assert_eq!(norm(&n, "a\tb"), "a\tb");
    }

    #[test]
    fn a_broken_charsmap_is_refused() {
        let mut s = spec(true, true);
        for (blob, why) in [
            (vec![0xff, 0xff, 0, 0, 1, 2, 3], "a trie of 65535 bytes"),
            (
                vec![8, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 0],
                "multiple of 1024",
            ),
            ([&[0, 4, 0, 0][..], &[0; 1024], b"ab"].concat(), "NUL"),
        ] {
            s.precompiled_charsmap = blob;
            let err = Normalizer::new(&s, false, Trie::default()).err().unwrap();
            assert!(
                err.contains("precompiled_charsmap") && err.contains(why),
                "{err}"
            );
        }
        // A trie whose units point nowhere matches nothing instead of failing.
        s.precompiled_charsmap = [&[0, 4, 0, 0][..], &[0xff; 1024], b"x\0"].concat();
        let n = Normalizer::new(&s, false, Trie::default()).unwrap();
        assert_eq!(norm(&n, "ab"), "▁ab");
    }
}
