//! Training samples in, batches out. A [`SampleSource`] serves sample `i`
//! (`seq_length + 1` tokens); the loop turns consecutive samples into
//! `inputs = tokens[..S]`, `targets = tokens[1..]`.

use burn::tensor::{Int, Tensor, TensorData, backend::Backend};

use crate::error::TrainError;

/// Samples of `seq_length + 1` tokens, addressed by index.
pub trait SampleSource: Send + Sync {
    /// Samples available; indices wrap around past the end.
    fn len(&self) -> u64;

    /// Sample `i` (`i < len()`).
    fn sample(&self, i: u64) -> Result<Vec<u32>, TrainError>;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The three splits the loop reads.
pub struct Splits {
    pub train: Box<dyn SampleSource>,
    pub valid: Option<Box<dyn SampleSource>>,
    pub test: Option<Box<dyn SampleSource>>,
}

/// Opens the configured data as train/valid/test sample sources.
pub fn open_splits(args: &crate::NeoxArgs) -> Result<Splits, TrainError> {
    let _ = args;
    Err(TrainError::Data("reading shards is not wired yet".into()))
}

/// A token stream cut into consecutive windows of `seq_length + 1` tokens that
/// share their boundary token (as GPT-NeoX's samples do), in order.
pub struct TokenWindows {
    tokens: Vec<u32>,
    seq_length: usize,
}

impl TokenWindows {
    pub fn new(tokens: Vec<u32>, seq_length: usize) -> Self {
        TokenWindows { tokens, seq_length }
    }
}

impl SampleSource for TokenWindows {
    fn len(&self) -> u64 {
        (self.tokens.len().saturating_sub(1) / self.seq_length.max(1)) as u64
    }

    fn sample(&self, i: u64) -> Result<Vec<u32>, TrainError> {
        let start = i as usize * self.seq_length;
        self.tokens
            .get(start..start + self.seq_length + 1)
            .map(<[u32]>::to_vec)
            .ok_or_else(|| {
                TrainError::Data(format!(
                    "sample {i} is past the end of {} samples",
                    self.len()
                ))
            })
    }
}

/// One micro batch: `inputs` and `targets`, both `[batch, seq_length]`.
#[derive(Debug, Clone)]
pub struct Batch<B: Backend> {
    pub inputs: Tensor<B, 2, Int>,
    pub targets: Tensor<B, 2, Int>,
}

impl<B: Backend> Batch<B> {
    /// Samples `first .. first + count` of `source` (wrapping around its end).
    pub fn read(
        source: &dyn SampleSource,
        first: u64,
        count: usize,
        seq_length: usize,
        vocab_size: usize,
        device: &B::Device,
    ) -> Result<Self, TrainError> {
        let len = source.len();
        if len == 0 {
            return Err(TrainError::Data("the split has no samples".into()));
        }
        let mut inputs = Vec::with_capacity(count * seq_length);
        let mut targets = Vec::with_capacity(count * seq_length);
        for k in 0..count as u64 {
            let i = (first + k) % len;
            let tokens = source.sample(i)?;
            if tokens.len() != seq_length + 1 {
                return Err(TrainError::Data(format!(
                    "sample {i} has {} tokens, expected seq_length + 1 = {}",
                    tokens.len(),
                    seq_length + 1
                )));
            }
            if let Some(bad) = tokens.iter().find(|&&t| t as usize >= vocab_size) {
                return Err(TrainError::Data(format!(
                    "sample {i} holds token id {bad}, outside the model's vocabulary of {vocab_size}: \
                     the shards were made with a larger tokenizer than the config says"
                )));
            }
            inputs.extend(tokens[..seq_length].iter().map(|&t| t as i64));
            targets.extend(tokens[1..].iter().map(|&t| t as i64));
        }
        let tensor =
            |ids: Vec<i64>| Tensor::from_data(TensorData::new(ids, [count, seq_length]), device);
        Ok(Batch {
            inputs: tensor(inputs),
            targets: tensor(targets),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_share_boundary_tokens() {
        let w = TokenWindows::new((0..10).collect(), 3);
        assert_eq!(w.len(), 3);
        assert_eq!(w.sample(0).unwrap(), [0, 1, 2, 3]);
        assert_eq!(w.sample(1).unwrap(), [3, 4, 5, 6]);
        assert!(w.sample(3).is_err());
    }
}
