//! Training samples in, batches out. A [`SampleSource`] serves sample `i`
//! (`seq_length + 1` tokens); the loop turns consecutive samples into
//! `inputs = tokens[..S]`, `targets = tokens[1..]`.

use burn::tensor::{Int, Tensor, TensorData, backend::Backend};

use neox_indexed::samples;

use crate::NeoxArgs;
use crate::config::DataSource;
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

/// Opens the configured shards as GPT-NeoX's train/valid/test samples
/// (building or reusing GPT-NeoX's index caches next to the data), sized for
/// the run as GPT-NeoX sizes them.
pub fn open_splits(args: &NeoxArgs) -> Result<Splits, TrainError> {
    let Some(source) = &args.data else {
        return Err(TrainError::Config(crate::ConfigError::Missing {
            key: "data_path".into(),
            why: "no data: set `data_path` (with `split`) or `train_data_paths`".into(),
        }));
    };
    let source = match source.clone() {
        DataSource::Split { prefix, split } => samples::DataSource::Split { prefix, split },
        DataSource::Paths { train, valid, test } => {
            samples::DataSource::Weighted { train, valid, test }
        }
    };
    let t = &args.training;
    let seed = u32::try_from(t.seed).map_err(|_| {
        TrainError::Data(format!(
            "seed {} does not fit numpy's 32-bit RandomState",
            t.seed
        ))
    })?;
    let seq_length = u32::try_from(args.model.seq_length).map_err(|_| {
        TrainError::Data(format!("seq_length {} is too large", args.model.seq_length))
    })?;
    let config = samples::DataConfig {
        source,
        seq_length,
        seed,
        cache_dir: None,
    };
    let global_batch =
        (t.micro_batch_size * t.gradient_accumulation_steps * t.data_parallel_size) as u64;
    let counts =
        samples::SplitSamples::for_run(t.train_iters, t.eval_interval, t.eval_iters, global_batch)
            .map_err(|e| TrainError::Data(e.to_string()))?;
    let splits = samples::build_train_valid_test(&config, counts)
        .map_err(|e| TrainError::Data(e.to_string()))?;
    let boxed = |s: Option<samples::Samples>| s.map(|s| Box::new(s) as Box<dyn SampleSource>);
    Ok(Splits {
        train: boxed(splits.train)
            .ok_or_else(|| TrainError::Data("the train split has no documents".into()))?,
        valid: boxed(splits.valid),
        test: boxed(splits.test),
    })
}

/// GPT-NeoX's samples from `neox-indexed`.
impl SampleSource for samples::Samples {
    fn len(&self) -> u64 {
        samples::Samples::len(self) as u64
    }

    fn sample(&self, i: u64) -> Result<Vec<u32>, TrainError> {
        let ids = self
            .get(i as usize)
            .map_err(|e| TrainError::Data(e.to_string()))?;
        ids.into_iter()
            .map(|id| {
                u32::try_from(id)
                    .map_err(|_| TrainError::Data(format!("sample {i} holds token id {id}")))
            })
            .collect()
    }
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
