//! SentencePiece's unigram model: the Viterbi best segmentation of the
//! normalized text (`unigram_model.cc`, `Model::EncodeOptimized` of
//! sentencepiece 0.2.3), with its exact single-precision arithmetic: an
//! unknown character costs `min_score - 10`, a user-defined piece of `n`
//! bytes scores `0.1 * (n - 1)`, and path scores are re-based on zero when
//! they pass ±100,000 (which changes how long texts round).

use super::normalizer::char_len;
use super::proto::PieceType;
use super::{Segment, Vocab};

/// `kUnkPenalty`.
const UNK_PENALTY: f32 = 10.0;
/// `kScoreResetThreshold`.
const SCORE_RESET: f32 = 100_000.0;

/// The best path that ends at one byte position.
#[derive(Clone, Copy)]
struct Best {
    id: u32,
    score: f32,
    /// Where its last piece starts; `None` while no path ends here.
    start: Option<usize>,
}

/// Segment `text` into `out`; `None` when no segmentation reaches the end
/// (a model whose pieces cut characters).
pub(crate) fn encode(vocab: &Vocab, text: &[u8], out: &mut Vec<Segment>) -> Option<()> {
    out.clear();
    let n = text.len();
    if n == 0 {
        return Some(());
    }
    let unk_score = vocab.min_score - UNK_PENALTY;
    let mut best = vec![
        Best {
            id: 0,
            score: 0.0,
            start: None,
        };
        n + 1
    ];
    let mut start = 0;
    let mut max_frontier = 0;
    while start < n {
        let mut till_here = best[start].score;
        if !(-SCORE_RESET..=SCORE_RESET).contains(&till_here) {
            let offset = till_here;
            for (i, node) in best
                .iter_mut()
                .enumerate()
                .take(max_frontier + 1)
                .skip(start)
            {
                if i == start || node.start.is_some() {
                    node.score -= offset;
                }
            }
            till_here = 0.0;
        }
        let one_char = char_len(text[start]).min(n - start);
        let mut has_single_node = false;
        vocab.matched.prefixes(&text[start..], |len, id| {
            let kind = vocab.kinds[id as usize];
            if kind == PieceType::Unused {
                return;
            }
            max_frontier = max_frontier.max(start + len);
            let score = if kind == PieceType::UserDefined {
                (0.1 * (len as f64 - 1.0)) as f32
            } else {
                vocab.scores[id as usize]
            };
            let candidate = score + till_here;
            let target = &mut best[start + len];
            if target.start.is_none() || candidate > target.score {
                *target = Best {
                    id,
                    score: candidate,
                    start: Some(start),
                };
            }
            has_single_node |= len == one_char;
        });
        if !has_single_node {
            max_frontier = max_frontier.max(start + one_char);
            let candidate = unk_score + till_here;
            let target = &mut best[start + one_char];
            if target.start.is_none() || candidate > target.score {
                *target = Best {
                    id: vocab.unk,
                    score: candidate,
                    start: Some(start),
                };
            }
        }
        start += one_char;
    }
    let mut end = n;
    while end > 0 {
        let node = best[end];
        let start = node.start?;
        out.push(Segment {
            start,
            end,
            id: node.id,
        });
        end = start;
    }
    out.reverse();
    Some(())
}
