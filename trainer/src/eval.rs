//! Evaluation (GPT-NeoX's `eval.py`): the loss and perplexity of a model
//! over a token stream, and the log-likelihood of a continuation after a
//! context (what zero-shot tasks such as LAMBADA score).

use burn::tensor::{Int, Tensor, TensorData, activation, backend::Backend};
use thiserror::Error;

use crate::model::GptNeox;

/// A token the model has no embedding for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("token {id} is outside the model's vocabulary of {vocab}")]
pub struct OutOfVocabulary {
    pub id: u32,
    pub vocab: usize,
}

fn check_vocab<B: Backend>(model: &GptNeox<B>, tokens: &[u32]) -> Result<(), OutOfVocabulary> {
    let vocab = model.config.vocab_size;
    match tokens.iter().find(|&&id| id as usize >= vocab) {
        Some(&id) => Err(OutOfVocabulary { id, vocab }),
        None => Ok(()),
    }
}

/// Summed next-token negative log-likelihood over a number of predictions.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Totals {
    /// Tokens predicted.
    pub tokens: u64,
    /// Their summed negative log-likelihood (nats).
    pub nll: f64,
}

impl Totals {
    /// Mean loss per predicted token.
    pub fn loss(&self) -> f64 {
        self.nll / self.tokens.max(1) as f64
    }

    pub fn perplexity(&self) -> f64 {
        self.loss().exp()
    }
}

/// The loss of a model over a token stream fed in pieces: the stream is cut
/// into windows of `seq + 1` tokens that share their boundary token (window
/// k holds tokens `k*seq ..= (k+1)*seq` and predicts all but its first), as
/// GPT-NeoX's packed samples are; `batch` windows run at once; the last,
/// partial window at [`StreamLoss::finish`].
pub struct StreamLoss<'a, B: Backend> {
    model: &'a GptNeox<B>,
    seq: usize,
    batch: usize,
    pending: Vec<u32>,
    windows: Vec<Vec<u32>>,
    totals: Totals,
}

impl<'a, B: Backend> StreamLoss<'a, B> {
    pub fn new(model: &'a GptNeox<B>, seq: usize, batch: usize) -> Self {
        StreamLoss {
            model,
            seq: seq.max(1),
            batch: batch.max(1),
            pending: Vec::new(),
            windows: Vec::new(),
            totals: Totals::default(),
        }
    }

    /// Feeds the next tokens of the stream.
    pub fn push(&mut self, tokens: &[u32]) -> Result<(), OutOfVocabulary> {
        check_vocab(self.model, tokens)?;
        self.pending.extend_from_slice(tokens);
        while self.pending.len() > self.seq {
            let window: Vec<u32> = self.pending[..=self.seq].to_vec();
            self.pending.drain(..self.seq);
            self.windows.push(window);
            if self.windows.len() == self.batch {
                self.run();
            }
        }
        Ok(())
    }

    /// Scores what is left and returns the totals.
    pub fn finish(mut self) -> Totals {
        self.run();
        if self.pending.len() > 1 {
            self.windows.push(std::mem::take(&mut self.pending));
            self.run();
        }
        self.totals
    }

    /// The totals so far (full windows scored).
    pub fn totals(&self) -> Totals {
        self.totals
    }

    fn run(&mut self) {
        if self.windows.is_empty() {
            return;
        }
        let windows = std::mem::take(&mut self.windows);
        let (b, len) = (windows.len(), windows[0].len());
        let values: Vec<i64> = windows.iter().flatten().map(|&t| i64::from(t)).collect();
        let device = self.model.embed_in.weight.val().device();
        let all = Tensor::<B, 2, Int>::from_data(TensorData::new(values, [b, len]), &device);
        let inputs = all.clone().narrow(1, 0, len - 1);
        let targets = all.narrow(1, 1, len - 1);
        let log_probs = token_log_probs(self.model, inputs, targets);
        self.totals.nll -= log_probs.iter().map(|&l| l as f64).sum::<f64>();
        self.totals.tokens += (b * (len - 1)) as u64;
    }
}

/// Log-probability of each target `[b, t]` after its inputs, row-major.
fn token_log_probs<B: Backend>(
    model: &GptNeox<B>,
    inputs: Tensor<B, 2, Int>,
    targets: Tensor<B, 2, Int>,
) -> Vec<f32> {
    let logits = model.forward(inputs);
    let [b, t, v] = logits.dims();
    activation::log_softmax(logits.reshape([b * t, v]), 1)
        .gather(1, targets.reshape([b * t, 1]))
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .unwrap_or_default()
}

/// How a continuation scores after its context.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    /// Summed log-likelihood of the continuation's tokens.
    pub log_likelihood: f64,
    /// Whether each continuation token is the model's most likely choice.
    pub greedy: bool,
}

/// lm-evaluation-harness's `loglikelihood` for one request: the model reads
/// `context ++ continuation` (cut from the left to the model's `seq_length`
/// plus one) and scores the continuation's tokens.
pub fn score_continuation<B: Backend>(
    model: &GptNeox<B>,
    context: &[u32],
    continuation: &[u32],
) -> Result<Scored, OutOfVocabulary> {
    check_vocab(model, context)?;
    check_vocab(model, continuation)?;
    let max = model.config.seq_length + 1;
    let whole: Vec<u32> = context.iter().chain(continuation).copied().collect();
    let whole = &whole[whole.len().saturating_sub(max)..];
    let n = continuation.len().min(whole.len().saturating_sub(1));
    if n == 0 {
        return Ok(Scored {
            log_likelihood: 0.0,
            greedy: true,
        });
    }
    let device = model.embed_in.weight.val().device();
    let values: Vec<i64> = whole[..whole.len() - 1]
        .iter()
        .map(|&t| i64::from(t))
        .collect();
    let len = values.len();
    let inputs = Tensor::<B, 2, Int>::from_data(TensorData::new(values, [1, len]), &device);
    let logits = model.forward(inputs).narrow(1, len - n, n);
    let v = logits.dims()[2];
    let log_probs = activation::log_softmax(logits.reshape([n, v]), 1)
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .unwrap_or_default();
    let targets = &whole[whole.len() - n..];
    Ok(score_rows(&log_probs, v, targets))
}

/// The score of `targets`, one per row of `log_probs` (`[n, v]`, row-major).
fn score_rows(log_probs: &[f32], v: usize, targets: &[u32]) -> Scored {
    let mut scored = Scored {
        log_likelihood: 0.0,
        greedy: true,
    };
    for (row, &target) in log_probs.chunks_exact(v).zip(targets) {
        scored.log_likelihood += row[target as usize] as f64;
        scored.greedy &= crate::generate::sample::argmax(row) == target;
    }
    scored
}

/// LAMBADA's metrics over scored documents: accuracy (the share whose last
/// word is the greedy choice) and perplexity (`exp` of minus the mean of the
/// last words' log-likelihoods), as lm-evaluation-harness reports them.
pub fn lambada_metrics(scores: &[Scored]) -> (f64, f64) {
    let n = scores.len().max(1) as f64;
    let accuracy = scores.iter().filter(|s| s.greedy).count() as f64 / n;
    let mean_ll = scores.iter().map(|s| s.log_likelihood).sum::<f64>() / n;
    (accuracy, (-mean_ll).exp())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Activation, InitMethod, ModelConfig, NormKind, PosEmb};
    use burn::backend::Flex;

    fn model(seq: usize) -> GptNeox<Flex> {
        ModelConfig {
            num_layers: 1,
            hidden_size: 16,
            num_attention_heads: 2,
            seq_length: seq,
            max_position_embeddings: seq,
            vocab_size: 12,
            norm: NormKind::LayerNorm,
            norm_eps: 1e-5,
            pos_emb: PosEmb::Rotary,
            rotary_pct: 1.0,
            rotary_emb_base: 10000.0,
            gpt_j_residual: false,
            tied_embeddings: true,
            activation: Activation::Gelu,
            intermediate_size: 32,
            init_method: InitMethod::Normal,
            output_layer_init_method: InitMethod::ScaledNormal,
            init_method_std: 0.5,
            hidden_dropout: 0.0,
            attention_dropout: 0.0,
            use_bias_in_attn_linear: true,
            use_bias_in_mlp: true,
            use_bias_in_norms: true,
            ..ModelConfig::default()
        }
        .init(&Default::default())
    }

    #[test]
    fn stream_windows_share_their_boundary_and_batching_changes_nothing() {
        let model = model(4);
        let stream: Vec<u32> = (0..23).map(|i| (i * 7 % 12) as u32).collect();
        let whole = |batch| {
            let mut s = StreamLoss::new(&model, 4, batch);
            // Fed in uneven pieces.
            for piece in stream.chunks(5) {
                s.push(piece).unwrap();
            }
            s.finish()
        };
        let one = whole(1);
        // 23 tokens: windows 0..=4, 4..=8, ..., 16..=20, then 20..=22 (partial).
        assert_eq!(one.tokens, 22);
        let three = whole(3);
        assert_eq!(three.tokens, 22);
        assert!((one.nll - three.nll).abs() < 1e-4, "{one:?} {three:?}");
        // The same as scoring each window's continuation alone.
        let mut by_hand = 0.0;
        for start in (0..22).step_by(4) {
            let end = (start + 5).min(23);
            by_hand -=
                score_continuation(&model, &stream[start..start + 1], &stream[start + 1..end])
                    .unwrap()
                    .log_likelihood;
        }
        assert!((one.nll - by_hand).abs() < 1e-4, "{} vs {by_hand}", one.nll);
        assert!((one.perplexity() - one.loss().exp()).abs() < 1e-12);
        let mut s = StreamLoss::new(&model, 4, 1);
        assert_eq!(s.push(&[1, 12]), Err(OutOfVocabulary { id: 12, vocab: 12 }));
        assert!(score_continuation(&model, &[1], &[99]).is_err());
    }

    #[test]
    fn a_continuation_is_greedy_only_when_every_token_is_the_argmax() {
        // Two rows over 3 tokens.
        let rows = [-0.1f32, -2.0, -3.0, -2.0, -0.2, -3.0];
        let hit = score_rows(&rows, 3, &[0, 1]);
        assert!(hit.greedy);
        assert!((hit.log_likelihood + 0.3).abs() < 1e-6);
        assert!(!score_rows(&rows, 3, &[0, 2]).greedy);
        let (accuracy, perplexity) = lambada_metrics(&[
            hit,
            Scored {
                log_likelihood: -1.7,
                greedy: false,
            },
        ]);
        assert_eq!(accuracy, 0.5);
        assert!((perplexity - 1.0f64.exp()).abs() < 1e-6);
    }

    #[test]
    fn long_contexts_are_cut_from_the_left() {
        let model = model(4);
        let context: Vec<u32> = (0..10).collect();
        let far = score_continuation(&model, &context, &[3, 4]);
        let near = score_continuation(&model, &context[7..], &[3, 4]);
        assert_eq!(far, near);
    }
}
