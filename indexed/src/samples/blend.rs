//! Blending several datasets by weight, and the sample counts GPT-NeoX asks
//! of each (`blendable_dataset.py`, `helpers.build_blending_indices`,
//! `get_normalized_weights_and_num_samples` in `data_utils.py`).

use super::error::SampleError;

/// Which dataset serves each blended sample, and which of its samples.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlendingIndices {
    /// `dataset_index[i]`: the dataset of blended sample `i` (uint8).
    pub dataset_index: Vec<u8>,
    /// `dataset_sample_index[i]`: the sample within that dataset (int64).
    pub dataset_sample_index: Vec<i64>,
}

/// `helpers.build_blending_indices`: for each of `size` samples, pick the
/// dataset furthest behind its share, `weights[d] * max(i, 1) - taken[d]`
/// (the first such on ties), and take its next sample. `weights` are used
/// as given (GPT-NeoX normalises them first: see [`normalize_like_numpy`]).
pub fn build_blending_indices(
    weights: &[f64],
    size: usize,
) -> Result<BlendingIndices, SampleError> {
    if weights.is_empty() || weights.len() > 255 {
        return Err(SampleError::Config(format!(
            "blending needs 1 to 255 datasets, got {}",
            weights.len()
        )));
    }
    let mut taken = vec![0i64; weights.len()];
    let mut dataset_index = Vec::with_capacity(size);
    let mut dataset_sample_index = Vec::with_capacity(size);
    for i in 0..size {
        let at = (i as f64).max(1.0);
        let mut best = 0;
        let mut best_error = weights[0] * at - taken[0] as f64;
        for (d, w) in weights.iter().enumerate().skip(1) {
            let error = w * at - taken[d] as f64;
            if error > best_error {
                best_error = error;
                best = d;
            }
        }
        dataset_index.push(best as u8);
        dataset_sample_index.push(taken[best]);
        taken[best] += 1;
    }
    Ok(BlendingIndices {
        dataset_index,
        dataset_sample_index,
    })
}

/// `weights / np.sum(weights)`, with numpy's (pairwise) summation order, so
/// that the quotients equal `BlendableDataset`'s to the last bit.
pub fn normalize_like_numpy(weights: &[f64]) -> Result<Vec<f64>, SampleError> {
    let total = pairwise_sum(weights);
    if total.is_nan() || total <= 0.0 || weights.iter().any(|w| !w.is_finite() || *w < 0.0) {
        return Err(SampleError::Config(format!(
            "blending weights {weights:?} must be finite, >= 0 and not all 0"
        )));
    }
    Ok(weights.iter().map(|w| w / total).collect())
}

/// numpy's `pairwise_sum` for float64 (blocks of 8 accumulators up to 128
/// elements, halves above).
fn pairwise_sum(a: &[f64]) -> f64 {
    let n = a.len();
    if n < 8 {
        a.iter().fold(0.0, |s, x| s + x)
    } else if n <= 128 {
        let mut r: [f64; 8] = a[..8].try_into().unwrap_or([0.0; 8]);
        let mut i = 8;
        while i < n - n % 8 {
            for (k, acc) in r.iter_mut().enumerate() {
                *acc += a[i + k];
            }
            i += 8;
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for x in &a[i..] {
            res += x;
        }
        res
    } else {
        let mut half = n / 2;
        half -= half % 8;
        pairwise_sum(&a[..half]) + pairwise_sum(&a[half..])
    }
}

/// `get_normalized_weights_and_num_samples`: weights divided by their
/// (Python) sum, and each dataset asked for `ceil(num_samples * w * 1.005)`
/// samples, 0.5% more than its share so the blend never runs short.
pub fn weighted_num_samples(
    weights: &[f64],
    num_samples: u64,
) -> Result<(Vec<f64>, Vec<u64>), SampleError> {
    let total = weights.iter().fold(0.0, |a, b| a + b);
    if total.is_nan() || total <= 0.0 || weights.iter().any(|w| !w.is_finite() || *w < 0.0) {
        return Err(SampleError::Config(format!(
            "data weights {weights:?} must be finite, >= 0 and not all 0"
        )));
    }
    let normalized: Vec<f64> = weights.iter().map(|w| w / total).collect();
    let counts = normalized
        .iter()
        .map(|w| (num_samples as f64 * w * 1.005).ceil() as u64)
        .collect();
    Ok((normalized, counts))
}

/// Samples per split for `train_iters` steps of `global_batch` samples, as
/// GPT-NeoX asks them: train `train_iters * B`; valid
/// `(train_iters / eval_interval + 1) * eval_iters * B` (an evaluation every
/// `eval_interval` steps and one at the end); test `eval_iters * B`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitSamples {
    /// Training samples.
    pub train: u64,
    /// Validation samples.
    pub valid: u64,
    /// Test samples.
    pub test: u64,
}

impl SplitSamples {
    /// The counts for a run (`global_batch` is GPT-NeoX's `train_batch_size`:
    /// micro batch x gradient accumulation x data-parallel ranks).
    pub fn for_run(
        train_iters: u64,
        eval_interval: u64,
        eval_iters: u64,
        global_batch: u64,
    ) -> Result<SplitSamples, SampleError> {
        if eval_interval == 0 {
            return Err(SampleError::Config(
                "eval_interval must be at least 1".into(),
            ));
        }
        let overflow = || SampleError::Config("sample counts overflow u64".into());
        let evals = (train_iters / eval_interval)
            .checked_add(1)
            .ok_or_else(overflow)?;
        Ok(SplitSamples {
            train: train_iters.checked_mul(global_batch).ok_or_else(overflow)?,
            valid: evals
                .checked_mul(eval_iters)
                .and_then(|n| n.checked_mul(global_batch))
                .ok_or_else(overflow)?,
            test: eval_iters.checked_mul(global_batch).ok_or_else(overflow)?,
        })
    }

    /// Count of split `i` (0 train, 1 valid, 2 test).
    pub fn get(&self, i: usize) -> u64 {
        [self.train, self.valid, self.test][i.min(2)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_choice_follows_the_weights() {
        let b = build_blending_indices(&[0.5, 0.5], 6).unwrap();
        // i=0: errors 0.5, 0.5 -> first; i=1: 0.5-1, 0.5 -> second; ...
        assert_eq!(b.dataset_index, [0, 1, 0, 1, 0, 1]);
        assert_eq!(b.dataset_sample_index, [0, 0, 1, 1, 2, 2]);
        let b = build_blending_indices(&[0.1, 0.9], 1000).unwrap();
        let first = b.dataset_index.iter().filter(|&&d| d == 0).count();
        assert_eq!(first, 100);
        assert!(build_blending_indices(&[], 3).is_err());
        assert!(build_blending_indices(&[1.0; 256], 3).is_err());
    }

    #[test]
    fn pairwise_sum_is_numpy_s_order() {
        // Values from numpy 1.26.4. Below 8 elements numpy adds left to
        // right like Python: np.sum([0.1, 0.2, 0.3]) == 0.6000000000000001.
        assert_eq!(pairwise_sum(&[0.1, 0.2, 0.3]), 0.6000000000000001);
        // From 8 on it keeps 8 partial sums: here numpy gives
        // 692.8895335854056 where Python's sum() gives 692.8895335854057.
        let eight = [
            528.0322647346824,
            5.215817302313597e-05,
            0.4371061211841969,
            0.00035371529117540426,
            0.08430043720536251,
            0.0009139494580846287,
            0.0006631295363341535,
            164.3338793398751,
        ];
        assert_eq!(pairwise_sum(&eight), 692.8895335854056);
        assert_eq!(eight.iter().fold(0.0, |a, b| a + b), 692.8895335854057);
        // Past 128 it splits in halves: np.sum([1 / (i + 3) for i in range(300)]).
        let many: Vec<f64> = (0..300).map(|i| 1.0 / f64::from(i + 3)).collect();
        assert_eq!(pairwise_sum(&many), 4.789297397713862);
        let normalized = normalize_like_numpy(&eight).unwrap();
        assert_eq!(normalized[0], 528.0322647346824 / 692.8895335854056);
        assert!(normalize_like_numpy(&[0.0, 0.0]).is_err());
    }

    #[test]
    fn weighted_counts_oversample_by_half_a_percent() {
        let (w, n) = weighted_num_samples(&[1.0, 3.0], 1000).unwrap();
        assert_eq!(w, [0.25, 0.75]);
        assert_eq!(n, [252, 754]); // ceil(251.25), ceil(753.75)
        let (_, n) = weighted_num_samples(&[2.0], 800).unwrap();
        assert_eq!(n, [804]);
        assert!(weighted_num_samples(&[0.0, 0.0], 10).is_err());
        assert!(weighted_num_samples(&[-1.0, 2.0], 10).is_err());
    }

    #[test]
    fn split_samples_count_every_evaluation() {
        let s = SplitSamples::for_run(320_000, 1000, 10, 1024).unwrap();
        assert_eq!(
            s,
            SplitSamples {
                train: 327_680_000,
                valid: 321 * 10 * 1024,
                test: 10 * 1024
            }
        );
        assert!(SplitSamples::for_run(1, 0, 1, 1).is_err());
        assert!(SplitSamples::for_run(u64::MAX, 1, 1, 2).is_err());
    }
}
