//! Summary statistics of a shard, computed in one streaming pass.

use std::collections::HashMap;

use crate::{DType, IndexedDataset};

/// What `neox-data inspect` reports about a shard.
#[derive(Debug, Clone, PartialEq)]
pub struct Stats {
    /// Token dtype.
    pub dtype: DType,
    /// Sequences (N).
    pub sequences: u64,
    /// Documents (doc_idx entries - 1).
    pub documents: u64,
    /// Tokens in the `.bin`.
    pub tokens: u64,
    /// Sequences after the last doc_idx entry, in no document (files merged
    /// by GPT-NeoX's merge tool have doc_idx `[0]` and all their sequences here).
    pub sequences_outside_documents: u64,
    /// Bytes of the `.bin`.
    pub bin_bytes: u64,
    /// Bytes of the `.idx`.
    pub idx_bytes: u64,
    /// Tokens per document; `None` when there are no documents.
    pub document_tokens: Option<Lengths>,
}

/// Distribution of lengths: exact min, mean, max and nearest-rank percentiles.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lengths {
    /// Number of values.
    pub count: u64,
    /// Smallest.
    pub min: u64,
    /// Arithmetic mean.
    pub mean: f64,
    /// Largest.
    pub max: u64,
    /// 50th percentile (median).
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
}

impl Stats {
    /// Read every document length of `ds` once. Memory grows with the number
    /// of distinct lengths only, not with the number of documents.
    pub fn of(ds: &IndexedDataset) -> Stats {
        let mut histogram = Histogram::default();
        let doc_idx = ds.doc_idx();
        let token_offset = |seq: i64| ds.token_offset(seq as usize).unwrap_or(0);
        let mut boundaries = doc_idx.iter().map(token_offset);
        if let Some(mut start) = boundaries.next() {
            for end in boundaries {
                histogram.add(end - start);
                start = end;
            }
        }
        let last = doc_idx.get(doc_idx.len().saturating_sub(1)).unwrap_or(0);
        Stats {
            dtype: ds.dtype(),
            sequences: ds.len() as u64,
            documents: ds.num_documents() as u64,
            tokens: ds.num_tokens(),
            sequences_outside_documents: ds.len() as u64 - last as u64,
            bin_bytes: ds.bin_bytes(),
            idx_bytes: ds.idx_bytes(),
            document_tokens: histogram.summary(),
        }
    }
}

/// Counts per distinct length.
#[derive(Debug, Default)]
pub struct Histogram {
    counts: HashMap<u64, u64>,
    count: u64,
    sum: u128,
}

impl Histogram {
    /// Record one value.
    pub fn add(&mut self, value: u64) {
        *self.counts.entry(value).or_default() += 1;
        self.count += 1;
        self.sum += u128::from(value);
    }

    /// The distribution, or `None` when empty.
    pub fn summary(&self) -> Option<Lengths> {
        let mut values: Vec<(u64, u64)> = self.counts.iter().map(|(&v, &c)| (v, c)).collect();
        values.sort_unstable();
        let (&(min, _), &(max, _)) = (values.first()?, values.last()?);
        let percentile = |p: u64| {
            // Nearest rank: the smallest value with at least ceil(p% * n) values <= it.
            let rank = (p * self.count).div_ceil(100).max(1);
            let mut seen = 0;
            for &(v, c) in &values {
                seen += c;
                if seen >= rank {
                    return v;
                }
            }
            max
        };
        Some(Lengths {
            count: self.count,
            min,
            mean: self.sum as f64 / self.count as f64,
            max,
            p50: percentile(50),
            p90: percentile(90),
            p99: percentile(99),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted_nearest_rank(values: &mut [u64], p: f64) -> u64 {
        values.sort_unstable();
        let rank = ((p / 100.0) * values.len() as f64).ceil().max(1.0) as usize;
        values[rank - 1]
    }

    #[test]
    fn histogram_matches_sorting() {
        let mut values: Vec<u64> = (0..1000u64).map(|i| (i * 7919) % 613 + i % 3).collect();
        let mut h = Histogram::default();
        for &v in &values {
            h.add(v);
        }
        let s = h.summary().unwrap();
        assert_eq!(s.count, 1000);
        assert_eq!(s.min, *values.iter().min().unwrap());
        assert_eq!(s.max, *values.iter().max().unwrap());
        let mean = values.iter().sum::<u64>() as f64 / 1000.0;
        assert!((s.mean - mean).abs() < 1e-9);
        assert_eq!(s.p50, sorted_nearest_rank(&mut values, 50.0));
        assert_eq!(s.p90, sorted_nearest_rank(&mut values, 90.0));
        assert_eq!(s.p99, sorted_nearest_rank(&mut values, 99.0));
    }

    #[test]
    fn document_lengths_sum_their_sequences_and_stray_sequences_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().join("s");
        let mut w = crate::IndexedWriter::create(&prefix, DType::I32).unwrap();
        for doc in [&[&[1u32, 2][..], &[3]][..], &[&[4]], &[&[5, 6, 7], &[8]]] {
            for seq in doc {
                w.add_tokens(seq).unwrap();
                w.end_sequence().unwrap();
            }
            w.end_document().unwrap();
        }
        w.finish().unwrap();
        let stats = Stats::of(&IndexedDataset::open(&prefix).unwrap());
        assert_eq!((stats.sequences, stats.documents, stats.tokens), (5, 3, 8));
        assert_eq!(stats.sequences_outside_documents, 0);
        let d = stats.document_tokens.unwrap();
        assert_eq!((d.min, d.p50, d.max), (1, 3, 4));

        // As GPT-NeoX's merge tool leaves it: doc_idx = [0], every sequence outside.
        let idx = crate::idx_path(&prefix);
        let mut b = std::fs::read(&idx).unwrap();
        b[26..34].copy_from_slice(&1u64.to_le_bytes());
        b.truncate(34 + 12 * 5 + 8);
        std::fs::write(&idx, b).unwrap();
        let stats = Stats::of(&IndexedDataset::open(&prefix).unwrap());
        assert_eq!((stats.documents, stats.sequences_outside_documents), (0, 5));
        assert_eq!(stats.document_tokens, None);
    }

    #[test]
    fn one_value_is_every_percentile_and_empty_is_none() {
        let mut h = Histogram::default();
        assert_eq!(h.summary(), None);
        h.add(42);
        let s = h.summary().unwrap();
        assert_eq!((s.min, s.p50, s.p90, s.p99, s.max), (42, 42, 42, 42, 42));
    }
}
