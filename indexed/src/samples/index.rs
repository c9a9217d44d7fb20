//! The doc / sample / shuffle index of GPT-NeoX's packed `GPT2Dataset`
//! (`_build_index_mappings` in `megatron/data/gpt2_dataset.py` with
//! `helpers.cpp`), rebuilt to give the same arrays bit for bit.
//!
//! For documents `D` (a contiguous range of sequences), `seq_length` S and
//! a wanted sample count:
//! 1. `tokens_per_epoch` T = the tokens of `D`; epochs e = the smallest with
//!    `(e*T - 1) / S >= num_samples` (samples share one boundary token, so
//!    e epochs give `(e*T - 1) / S` samples of S+1 tokens);
//! 2. `doc_idx`: `D` tiled e times, as i32, shuffled by `RandomState(seed)`;
//! 3. `sample_idx`: `[(e*T-1)/S + 1, 2]` rows (position in `doc_idx`, token
//!    offset) where each sample starts; i32 unless `2*(rows)` would reach
//!    `i32::MAX` (GPT-NeoX tests this in floating point: so do we);
//! 4. `shuffle_idx`: `0..rows-1` shuffled by the same generator; u32 unless
//!    the count reaches `u32::MAX - 1`, then i64.
//!
//! GPT-NeoX neither separates the last epoch (as Megatron-LM does) nor cuts
//! `shuffle_idx` to the samples asked for: every sample of every epoch is
//! shuffled together. The reference fixtures confirm it.

use std::ops::Range;

use super::array::Array;
use super::error::SampleError;
use super::random_state::RandomState;

/// What to build an index for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexSpec {
    /// The sequences (GPT-NeoX's "documents") of this split.
    pub documents: Range<usize>,
    /// Tokens per sample, not counting the extra label token (S).
    pub seq_length: u32,
    /// Samples wanted; the index holds at least this many. `None` (GPT-NeoX's
    /// `train_epochs` mode) requires `num_epochs`.
    pub num_samples: Option<u64>,
    /// Epochs, when fixed instead of derived from `num_samples`.
    pub num_epochs: Option<u32>,
    /// The seed of numpy's `RandomState`.
    pub seed: u32,
}

/// The three arrays of a built (or loaded) index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleIndex {
    /// Epochs the index covers.
    pub num_epochs: u32,
    /// Tokens in one pass over the documents.
    pub tokens_per_epoch: u64,
    /// The documents of every epoch, shuffled (int32).
    pub doc_idx: Array<i32>,
    /// Where each sample starts; one row more than there are samples.
    pub sample_idx: SampleIdx,
    /// The order in which samples are served.
    pub shuffle_idx: ShuffleIdx,
}

impl SampleIndex {
    /// Samples the index holds (rows of `sample_idx` minus one).
    pub fn total_samples(&self) -> u64 {
        self.sample_idx.rows().saturating_sub(1) as u64
    }

    /// Whether all three arrays are read from mapped cache files.
    pub fn is_mapped(&self) -> bool {
        let sample = match &self.sample_idx {
            SampleIdx::I32(a) => a.is_mapped(),
            SampleIdx::I64(a) => a.is_mapped(),
        };
        let shuffle = match &self.shuffle_idx {
            ShuffleIdx::U32(a) => a.is_mapped(),
            ShuffleIdx::I64(a) => a.is_mapped(),
        };
        self.doc_idx.is_mapped() && sample && shuffle
    }
}

/// `sample_idx`, row-major `[rows, 2]`: (position in `doc_idx`, token offset).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SampleIdx {
    /// `helpers.build_sample_idx_int32`'s output.
    I32(Array<i32>),
    /// `helpers.build_sample_idx_int64`'s output.
    I64(Array<i64>),
}

impl SampleIdx {
    /// Number of rows.
    pub fn rows(&self) -> usize {
        match self {
            SampleIdx::I32(v) => v.len() / 2,
            SampleIdx::I64(v) => v.len() / 2,
        }
    }

    /// Row `i`: (position in `doc_idx`, token offset in that document).
    pub fn row(&self, i: usize) -> Option<(i64, i64)> {
        let at = i.checked_mul(2)?;
        match self {
            SampleIdx::I32(v) => Some((i64::from(*v.get(at)?), i64::from(*v.get(at + 1)?))),
            SampleIdx::I64(v) => Some((*v.get(at)?, *v.get(at + 1)?)),
        }
    }

    /// numpy's dtype string of the array.
    pub fn descr(&self) -> &'static str {
        match self {
            SampleIdx::I32(_) => "<i4",
            SampleIdx::I64(_) => "<i8",
        }
    }
}

/// `shuffle_idx`: sample `i` served is row `shuffle_idx[i]` of `sample_idx`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShuffleIdx {
    /// Fewer than `u32::MAX - 1` samples.
    U32(Array<u32>),
    /// Larger indexes.
    I64(Array<i64>),
}

impl ShuffleIdx {
    /// Number of entries.
    pub fn len(&self) -> usize {
        match self {
            ShuffleIdx::U32(v) => v.len(),
            ShuffleIdx::I64(v) => v.len(),
        }
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entry `i`.
    pub fn get(&self, i: usize) -> Option<u64> {
        match self {
            ShuffleIdx::U32(v) => v.get(i).map(|&x| u64::from(x)),
            ShuffleIdx::I64(v) => v.get(i).and_then(|&x| u64::try_from(x).ok()),
        }
    }

    /// numpy's dtype string of the array.
    pub fn descr(&self) -> &'static str {
        match self {
            ShuffleIdx::U32(_) => "<u4",
            ShuffleIdx::I64(_) => "<i8",
        }
    }
}

/// Tokens in `documents` (`_num_tokens`). Errors on a range outside `sizes`
/// or a negative size.
pub fn tokens_per_epoch(sizes: &[i32], documents: Range<usize>) -> Result<u64, SampleError> {
    let slice = sizes.get(documents.clone()).ok_or_else(|| {
        SampleError::Config(format!(
            "documents {}..{} do not exist: the dataset has {} sequences",
            documents.start,
            documents.end,
            sizes.len()
        ))
    })?;
    slice.iter().enumerate().try_fold(0u64, |sum, (i, &s)| {
        let s = u64::try_from(s).map_err(|_| {
            SampleError::Config(format!(
                "sequence {} has a negative size {s}",
                documents.start + i
            ))
        })?;
        Ok(sum + s)
    })
}

/// `_num_epochs`: the smallest `e >= 1` with `(e*T - 1) / S >= num_samples`.
pub fn num_epochs(
    tokens_per_epoch: u64,
    seq_length: u32,
    num_samples: u64,
) -> Result<u32, SampleError> {
    if tokens_per_epoch == 0 || seq_length == 0 {
        return Err(SampleError::Config(format!(
            "cannot draw samples from {tokens_per_epoch} tokens at seq_length {seq_length}"
        )));
    }
    // (e*T - 1) / S >= n  <=>  e*T >= n*S + 1.
    let needed = u128::from(num_samples) * u128::from(seq_length) + 1;
    let epochs = needed.div_ceil(u128::from(tokens_per_epoch)).max(1);
    i32::try_from(epochs).map(|e| e as u32).map_err(|_| {
        SampleError::Config(format!(
            "{num_samples} samples of {seq_length} tokens need {epochs} epochs over {tokens_per_epoch} tokens, more than GPT-NeoX's int32 allows"
        ))
    })
}

/// Samples that `num_epochs` epochs hold: `(e*T - 1) / S`.
pub fn total_samples(num_epochs: u32, tokens_per_epoch: u64, seq_length: u32) -> u64 {
    ((u128::from(num_epochs) * u128::from(tokens_per_epoch)).saturating_sub(1)
        / u128::from(seq_length.max(1))) as u64
}

/// Whether GPT-NeoX builds `sample_idx` as int64: it computes the sample
/// count as a float, `(e*T - 1) / S`, and picks int32 while
/// `2 * (count + 1) < i32::MAX`.
pub fn sample_idx_is_int64(num_epochs: u32, tokens_per_epoch: u64, seq_length: u32) -> bool {
    let tokens = (i64::from(num_epochs)).wrapping_mul(tokens_per_epoch as i64) - 1;
    let count = tokens as f64 / f64::from(seq_length);
    2.0 * (count + 1.0) >= f64::from(i32::MAX)
}

/// Whether GPT-NeoX builds `shuffle_idx` over `size` samples as int64
/// rather than uint32 (`size >= uint32 max - 1`).
pub fn shuffle_idx_is_int64(size: u64) -> bool {
    size >= u64::from(u32::MAX) - 1
}

/// `_build_doc_idx`: `documents` tiled `num_epochs` times, shuffled.
pub fn build_doc_idx(
    documents: Range<usize>,
    num_epochs: u32,
    rng: &mut RandomState,
) -> Result<Vec<i32>, SampleError> {
    let start = i32::try_from(documents.start);
    let end = i32::try_from(documents.end);
    let (Ok(start), Ok(end)) = (start, end) else {
        return Err(SampleError::Config(format!(
            "documents {}..{} do not fit GPT-NeoX's int32 doc_idx",
            documents.start, documents.end
        )));
    };
    let len = documents
        .len()
        .checked_mul(num_epochs as usize)
        .ok_or_else(|| {
            SampleError::Config(format!(
                "{} documents x {num_epochs} epochs overflow",
                documents.len()
            ))
        })?;
    let mut doc_idx = Vec::with_capacity(len);
    for _ in 0..num_epochs {
        doc_idx.extend(start..end);
    }
    rng.shuffle(&mut doc_idx);
    Ok(doc_idx)
}

/// The rows of `sample_idx`, one at a time (`helpers.build_sample_idx`),
/// so that an index too large to hold can still be streamed or checked.
///
/// Yields `(position in doc_idx, token offset)`: first `(0, 0)`, then for each
/// sample the place where the next one starts, `seq_length` tokens on: a
/// sample spans S+1 tokens and ends on the first token of the next. Stops
/// early (fewer rows than promised) only if `doc_idx` runs out of tokens,
/// which cannot happen for a `doc_idx` built over the same `sizes`.
#[derive(Debug, Clone)]
pub struct SampleBoundaries<'a> {
    sizes: &'a [i32],
    doc_idx: &'a [i32],
    seq_length: i64,
    rows_left: u64,
    started: bool,
    position: usize,
    offset: i64,
}

impl<'a> SampleBoundaries<'a> {
    /// The `samples + 1` rows for `doc_idx` over `sizes`.
    pub fn new(sizes: &'a [i32], doc_idx: &'a [i32], seq_length: u32, samples: u64) -> Self {
        SampleBoundaries {
            sizes,
            doc_idx,
            seq_length: i64::from(seq_length),
            rows_left: samples.saturating_add(1),
            started: false,
            position: 0,
            offset: 0,
        }
    }

    fn size_at(&self, position: usize) -> Option<i64> {
        let doc = usize::try_from(*self.doc_idx.get(position)?).ok()?;
        Some(i64::from(*self.sizes.get(doc)?))
    }
}

impl Iterator for SampleBoundaries<'_> {
    type Item = (u64, i64);

    fn next(&mut self) -> Option<(u64, i64)> {
        if self.rows_left == 0 {
            return None;
        }
        if self.started {
            let mut remaining = self.seq_length + 1;
            while remaining != 0 {
                let doc_length = self.size_at(self.position)? - self.offset;
                remaining -= doc_length;
                if remaining <= 0 {
                    // Ends inside this document; the last token is shared.
                    self.offset += remaining + doc_length - 1;
                    remaining = 0;
                } else {
                    self.position += 1;
                    self.offset = 0;
                }
            }
        }
        self.started = true;
        self.rows_left -= 1;
        Some((self.position as u64, self.offset))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, usize::try_from(self.rows_left).ok())
    }
}

/// `helpers.build_sample_idx_int32/int64`, choosing the width as GPT-NeoX does.
pub fn build_sample_idx(
    sizes: &[i32],
    doc_idx: &[i32],
    seq_length: u32,
    num_epochs: u32,
    tokens_per_epoch: u64,
) -> Result<SampleIdx, SampleError> {
    let samples = total_samples(num_epochs, tokens_per_epoch, seq_length);
    let rows = usize::try_from(samples + 1)
        .map_err(|_| SampleError::Config(format!("{samples} samples do not fit in memory")))?;
    let boundaries = SampleBoundaries::new(sizes, doc_idx, seq_length, samples);
    let sample_idx = if sample_idx_is_int64(num_epochs, tokens_per_epoch, seq_length) {
        let mut v = Vec::with_capacity(rows * 2);
        for (position, offset) in boundaries {
            v.extend([position as i64, offset]);
        }
        SampleIdx::I64(v.into())
    } else {
        let mut v = Vec::with_capacity(rows * 2);
        for (position, offset) in boundaries {
            // Below the int32 threshold both fit; helpers.cpp casts the same way.
            v.extend([position as i32, offset as i32]);
        }
        SampleIdx::I32(v.into())
    };
    if sample_idx.rows() != rows {
        return Err(SampleError::Internal(format!(
            "doc_idx ran out of tokens after {} of {rows} sample boundaries",
            sample_idx.rows()
        )));
    }
    Ok(sample_idx)
}

/// `_build_shuffle_idx`: `0..size` shuffled.
pub fn build_shuffle_idx(size: u64, rng: &mut RandomState) -> Result<ShuffleIdx, SampleError> {
    let len = usize::try_from(size)
        .map_err(|_| SampleError::Config(format!("{size} samples do not fit in memory")))?;
    Ok(if shuffle_idx_is_int64(size) {
        let mut v: Vec<i64> = (0..len as i64).collect();
        rng.shuffle(&mut v);
        ShuffleIdx::I64(v.into())
    } else {
        let mut v: Vec<u32> = (0..len as u32).collect();
        rng.shuffle(&mut v);
        ShuffleIdx::U32(v.into())
    })
}

/// Build the whole index in memory, exactly as GPT-NeoX's packed
/// `_build_index_mappings` does.
pub fn build_sample_index(sizes: &[i32], spec: &IndexSpec) -> Result<SampleIndex, SampleError> {
    if spec.seq_length < 2 {
        return Err(SampleError::Config(format!(
            "seq_length must be at least 2 (GPT-NeoX's helpers require it), got {}",
            spec.seq_length
        )));
    }
    if spec.documents.is_empty() {
        return Err(SampleError::Config(format!(
            "no documents in {}..{}: cannot draw samples",
            spec.documents.start, spec.documents.end
        )));
    }
    let tokens = tokens_per_epoch(sizes, spec.documents.clone())?;
    if tokens < 2 {
        return Err(SampleError::Config(format!(
            "documents {}..{} hold {tokens} tokens: at least 2 are needed",
            spec.documents.start, spec.documents.end
        )));
    }
    let epochs = match (spec.num_epochs, spec.num_samples) {
        (Some(0), _) => return Err(SampleError::Config("num_epochs must be at least 1".into())),
        (Some(e), _) => e,
        (None, Some(n)) => num_epochs(tokens, spec.seq_length, n)?,
        (None, None) => {
            return Err(SampleError::Config(
                "give a number of samples or of epochs".into(),
            ));
        }
    };
    let mut rng = RandomState::new(spec.seed);
    let doc_idx = build_doc_idx(spec.documents.clone(), epochs, &mut rng)?;
    let sample_idx = build_sample_idx(sizes, &doc_idx, spec.seq_length, epochs, tokens)?;
    let shuffle_idx = build_shuffle_idx(sample_idx.rows() as u64 - 1, &mut rng)?;
    Ok(SampleIndex {
        num_epochs: epochs,
        tokens_per_epoch: tokens,
        doc_idx: doc_idx.into(),
        sample_idx,
        shuffle_idx,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where sample boundary `k` must fall: token `k*S` of the concatenated
    /// documents, in the document holding it (row 0 is always (0, 0)).
    fn boundary_by_arithmetic(sizes: &[i32], doc_idx: &[i32], s: u64, k: u64) -> (u64, i64) {
        if k == 0 {
            return (0, 0);
        }
        let mut token = k * s;
        for (position, &doc) in doc_idx.iter().enumerate() {
            let size = sizes[doc as usize] as u64;
            if token < size {
                return (position as u64, token as i64);
            }
            token -= size;
        }
        panic!("boundary {k} is past the end");
    }

    #[test]
    fn epochs_match_gpt_neox_s_loop() {
        fn by_loop(t: u64, s: u64, n: u64) -> u32 {
            let (mut e, mut total) = (0, 0);
            loop {
                e += 1;
                total += t;
                if (total - 1) / s >= n {
                    return e;
                }
            }
        }
        for t in [2u64, 3, 100, 4097, 100_000] {
            for s in [2u32, 7, 512, 2048] {
                for n in [0u64, 1, 2, 63, 64, 1000, 2402] {
                    assert_eq!(
                        num_epochs(t, s, n).unwrap(),
                        by_loop(t, s.into(), n),
                        "t={t} s={s} n={n}"
                    );
                }
            }
        }
        assert!(num_epochs(0, 2048, 1).is_err());
        assert!(
            num_epochs(2, 2, u64::MAX / 4).is_err(),
            "too many epochs for int32"
        );
    }

    #[test]
    fn sample_idx_width_switches_where_gpt_neox_s_does() {
        // int32 while 2 * (count + 1) < 2^31 - 1, count = (e*T - 1) / S as a float.
        // count = 2^30 - 2 -> 2^31 - 2 < 2^31 - 1: int32.
        let s = 2u32;
        let t_int32 = (1u64 << 31) - 3; // (T-1)/2 = 2^30 - 2
        assert!(!sample_idx_is_int64(1, t_int32, s));
        // count = 2^30 - 1.5 (a float!) -> 2^31 - 1: int64.
        assert!(sample_idx_is_int64(1, t_int32 + 1, s));
        assert!(sample_idx_is_int64(1, t_int32 + 2, s));
        // The same count from more epochs.
        // Two epochs of 2^30 tokens: count = (2^31 - 1) / 2 = 2^30 - 0.5.
        assert!(sample_idx_is_int64(2, 1 << 30, s));
        assert!(!sample_idx_is_int64(2, (1 << 30) - 2, s));
        assert!(!sample_idx_is_int64(1_000, 10_000, 2048));
    }

    #[test]
    fn shuffle_idx_width_switches_where_gpt_neox_s_does() {
        assert!(!shuffle_idx_is_int64(u64::from(u32::MAX) - 2));
        assert!(shuffle_idx_is_int64(u64::from(u32::MAX) - 1));
        assert!(shuffle_idx_is_int64(1 << 33));
        assert!(!shuffle_idx_is_int64(0));
    }

    #[test]
    fn boundaries_follow_the_token_stream() {
        let mut rng = RandomState::new(3);
        // Sizes include empty documents and documents shorter than S.
        let sizes: Vec<i32> = (0..200).map(|_| rng.random_interval(40) as i32).collect();
        for s in [2u32, 3, 16, 64] {
            let spec = IndexSpec {
                documents: 10..190,
                seq_length: s,
                num_samples: Some(500),
                num_epochs: None,
                seed: 9,
            };
            let index = build_sample_index(&sizes, &spec).unwrap();
            let rows = index.sample_idx.rows();
            assert_eq!(
                rows as u64,
                total_samples(index.num_epochs, index.tokens_per_epoch, s) + 1
            );
            assert!(rows > 500);
            for k in 0..rows {
                let (p, o) = index.sample_idx.row(k).unwrap();
                assert_eq!(
                    (p as u64, o),
                    boundary_by_arithmetic(&sizes, &index.doc_idx, s.into(), k as u64),
                    "s={s} k={k}"
                );
            }
            let mut seen: Vec<u64> = (0..index.shuffle_idx.len())
                .map(|i| index.shuffle_idx.get(i).unwrap())
                .collect();
            seen.sort_unstable();
            assert!(
                seen.iter().copied().eq(0..rows as u64 - 1),
                "shuffle_idx is a permutation"
            );
        }
    }

    #[test]
    fn doc_idx_tiles_the_documents_each_epoch() {
        let mut rng = RandomState::new(1);
        let mut doc_idx = build_doc_idx(5..9, 3, &mut rng).unwrap();
        doc_idx.sort_unstable();
        assert_eq!(doc_idx, [5, 5, 5, 6, 6, 6, 7, 7, 7, 8, 8, 8]);
    }

    #[test]
    fn bad_specs_are_refused_with_the_reason() {
        let sizes = [10, 0, 5];
        let spec = |documents, seq_length, num_samples, num_epochs| IndexSpec {
            documents,
            seq_length,
            num_samples,
            num_epochs,
            seed: 1,
        };
        let cases = [
            (spec(0..4, 4, Some(1), None), "do not exist"),
            (spec(0..3, 1, Some(1), None), "at least 2"),
            (spec(1..1, 4, Some(1), None), "no documents"),
            (spec(1..2, 4, Some(1), None), "hold 0 tokens"),
            (spec(0..3, 4, None, None), "samples or of epochs"),
            (spec(0..3, 4, None, Some(0)), "at least 1"),
        ];
        for (spec, expected) in cases {
            let err = build_sample_index(&sizes, &spec).unwrap_err().to_string();
            assert!(
                err.contains(expected),
                "{err:?} should mention {expected:?}"
            );
        }
        assert!(
            tokens_per_epoch(&[3, -1], 0..2)
                .unwrap_err()
                .to_string()
                .contains("sequence 1")
        );
    }

    #[test]
    fn a_doc_idx_without_enough_tokens_is_an_error_not_a_panic() {
        let err = build_sample_idx(&[4, 4], &[0, 7], 2, 1, 8).unwrap_err();
        assert!(err.to_string().contains("ran out of tokens"), "{err}");
    }

    #[test]
    fn fixed_epochs_ignore_the_sample_count() {
        let sizes = [100, 50, 25];
        let spec = IndexSpec {
            documents: 0..3,
            seq_length: 10,
            num_samples: None,
            num_epochs: Some(2),
            seed: 4,
        };
        let index = build_sample_index(&sizes, &spec).unwrap();
        assert_eq!(index.doc_idx.len(), 6);
        assert_eq!(index.total_samples(), (2 * 175 - 1) / 10);
    }

    /// The int64 path of sample_idx end to end, without holding it: two
    /// documents of about 2^30 tokens at S = 2 give 2^30 samples, past the
    /// int32 threshold. Stream every row and check it arithmetically.
    #[test]
    fn sample_boundaries_cross_the_int32_threshold() {
        let sizes = [1i32 << 30, (1 << 30) + 1];
        let tokens = tokens_per_epoch(&sizes, 0..2).unwrap();
        let s = 2u32;
        let samples = total_samples(1, tokens, s);
        assert_eq!(samples, 1 << 30);
        assert!(sample_idx_is_int64(1, tokens, s));
        assert!(2 * (samples + 1) > i32::MAX as u64);
        for doc_idx in [[1, 0]] {
            let first = sizes[doc_idx[0] as usize] as u64;
            let mut rows = 0u64;
            let mut last = (0, 0);
            for (k, (position, offset)) in
                SampleBoundaries::new(&sizes, &doc_idx, s, samples).enumerate()
            {
                let token = k as u64 * u64::from(s);
                // A boundary at the last token of the first document stays in it.
                let expected = if token < first {
                    (0, token as i64)
                } else {
                    (1, (token - first) as i64)
                };
                if k == 0
                    || (k as u64).is_multiple_of(4099)
                    || k as u64 >= samples - 2
                    || token.abs_diff(first) < 4
                {
                    assert_eq!((position, offset), expected, "row {k}");
                }
                rows += 1;
                last = (position, offset);
            }
            assert_eq!(rows, samples + 1);
            let expected_last = (1, (samples * u64::from(s) - first) as i64);
            assert_eq!(last, expected_last);
        }
    }
}
