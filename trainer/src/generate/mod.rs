//! Text generation, token ids in and out (GPT-NeoX's `generate_samples_*`):
//! a prompt, then one token at a time chosen by [`Sampling`] until the
//! end-of-document token, `maximum_tokens`, or the model's context is full.
//! With the KV cache each new token costs one position; without it the
//! whole sequence is recomputed for every token (same tokens, slower).

pub mod sample;

use burn::tensor::{Int, Tensor, TensorData, backend::Backend};
use thiserror::Error;

pub use sample::{Rng, Sampling};

use crate::model::GptNeox;

/// What to generate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    pub sampling: Sampling,
    /// New tokens at most (GPT-NeoX's `maximum_tokens`).
    pub maximum_tokens: usize,
    /// Stop after this token (GPT-NeoX's EOD), which is not part of the text.
    pub eod: Option<u32>,
    /// Keep keys and values between steps (GPT-NeoX's `recompute: false`).
    pub use_cache: bool,
}

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The model produced the end-of-document token.
    Eod,
    /// `maximum_tokens` were generated.
    MaximumTokens,
    /// Prompt and generated tokens fill the model's context (`seq_length`).
    ContextFull,
}

/// The tokens generated after a prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// The new tokens, without the end-of-document token.
    pub tokens: Vec<u32>,
    pub stop: Stop,
}

#[derive(Debug, Error, PartialEq)]
pub enum GenerateError {
    #[error(
        "the prompt is empty: give at least one token (GPT-NeoX starts unconditional samples with EOD)"
    )]
    EmptyPrompt,
    #[error(
        "the prompt has {tokens} tokens but the model's context is {context} \
         (seq_length): shorten it to leave room for new tokens"
    )]
    PromptTooLong { tokens: usize, context: usize },
    #[error("prompt token {id} is outside the model's vocabulary of {vocab}")]
    OutOfVocabulary { id: u32, vocab: usize },
    #[error("{0}")]
    Settings(String),
}

/// Positions the model can take: `seq_length`, and for learned position
/// embeddings no more than the table holds.
pub fn context_length(config: &crate::model::ModelConfig) -> usize {
    match config.pos_emb {
        crate::model::PosEmb::Learned => config.seq_length.min(
            config
                .max_position_embeddings
                .saturating_sub(config.opt_pos_emb_offset),
        ),
        _ => config.seq_length,
    }
}

/// Generates after `prompt`, calling `on_token` with each new token as it
/// is chosen (the end-of-document token included).
pub fn generate<B: Backend>(
    model: &GptNeox<B>,
    prompt: &[u32],
    settings: &Settings,
    rng: &mut Rng,
    mut on_token: impl FnMut(u32),
) -> Result<Generation, GenerateError> {
    settings.sampling.check().map_err(GenerateError::Settings)?;
    let context = context_length(&model.config);
    let vocab = model.config.vocab_size;
    if prompt.is_empty() {
        return Err(GenerateError::EmptyPrompt);
    }
    if prompt.len() >= context {
        return Err(GenerateError::PromptTooLong {
            tokens: prompt.len(),
            context,
        });
    }
    if let Some(&id) = prompt.iter().find(|&&id| id as usize >= vocab) {
        return Err(GenerateError::OutOfVocabulary { id, vocab });
    }
    let device = model.embed_in.weight.val().device();
    let ids = |ids: &[u32]| {
        let values: Vec<i64> = ids.iter().map(|&i| i64::from(i)).collect();
        Tensor::<B, 2, Int>::from_data(TensorData::new(values, [1, ids.len()]), &device)
    };
    let mut all: Vec<u32> = prompt.to_vec();
    let mut cache = settings.use_cache.then(|| model.new_cache());
    // Tokens of `all` the cache holds.
    let mut fed = 0;
    let mut tokens = Vec::new();
    loop {
        if tokens.len() >= settings.maximum_tokens {
            return Ok(Generation {
                tokens,
                stop: Stop::MaximumTokens,
            });
        }
        if all.len() >= context {
            return Ok(Generation {
                tokens,
                stop: Stop::ContextFull,
            });
        }
        let logits = match cache.as_mut() {
            Some(cache) => model.forward_cached(ids(&all[fed..]), cache),
            None => model.forward(ids(&all)),
        };
        fed = all.len();
        let [_, t, v] = logits.dims();
        let last = logits
            .narrow(1, t - 1, 1)
            .reshape([v])
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .unwrap_or_default();
        let next = settings.sampling.choose(&last, rng);
        on_token(next);
        if settings.eod == Some(next) {
            return Ok(Generation {
                tokens,
                stop: Stop::Eod,
            });
        }
        tokens.push(next);
        all.push(next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Activation, InitMethod, ModelConfig, NormKind, PosEmb};
    use burn::backend::Flex;

    fn model() -> GptNeox<Flex> {
        ModelConfig {
            num_layers: 2,
            hidden_size: 32,
            num_attention_heads: 4,
            seq_length: 24,
            max_position_embeddings: 24,
            vocab_size: 20,
            norm: NormKind::LayerNorm,
            norm_eps: 1e-5,
            pos_emb: PosEmb::Rotary,
            rotary_pct: 0.25,
            rotary_emb_base: 10000.0,
            gpt_j_residual: true,
            tied_embeddings: false,
            activation: Activation::Gelu,
            intermediate_size: 64,
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

    fn run(model: &GptNeox<Flex>, settings: Settings, seed: u64) -> Generation {
        generate(model, &[1, 5, 7], &settings, &mut Rng::new(seed), |_| {}).unwrap()
    }

    #[test]
    fn the_cache_gives_the_tokens_recomputing_gives() {
        let model = model();
        for sampling in [
            Sampling::GREEDY,
            Sampling {
                temperature: 0.9,
                top_k: 8,
                top_p: 0.95,
            },
        ] {
            let settings = |use_cache| Settings {
                sampling,
                maximum_tokens: 15,
                eod: None,
                use_cache,
            };
            let cached = run(&model, settings(true), 11);
            assert_eq!(cached.tokens.len(), 15);
            assert_eq!(cached, run(&model, settings(false), 11), "{sampling:?}");
        }
    }

    #[test]
    fn generation_stops_at_eod_the_limit_or_the_context() {
        let model = model();
        let greedy = |maximum_tokens, eod| Settings {
            sampling: Sampling::GREEDY,
            maximum_tokens,
            eod,
            use_cache: true,
        };
        let long = run(&model, greedy(100, None), 0);
        // Prompt 3 + 21 new = the context of 24.
        assert_eq!((long.tokens.len(), long.stop), (21, Stop::ContextFull));
        let short = run(&model, greedy(4, None), 0);
        assert_eq!(short.tokens, long.tokens[..4]);
        assert_eq!(short.stop, Stop::MaximumTokens);
        // Make the third generated token the EOD: it ends the text unseen.
        let eod = long.tokens[2];
        let first = long.tokens.iter().position(|&t| t == eod).unwrap();
        let stopped = run(&model, greedy(100, Some(eod)), 0);
        assert_eq!(stopped.stop, Stop::Eod);
        assert_eq!(stopped.tokens, long.tokens[..first]);
    }

    #[test]
    fn bad_prompts_are_refused() {
        let model = model();
        let settings = Settings {
            sampling: Sampling::GREEDY,
            maximum_tokens: 4,
            eod: None,
            use_cache: true,
        };
        let mut rng = Rng::new(0);
        let err = |prompt: &[u32]| generate(&model, prompt, &settings, &mut rng.clone(), |_| {});
        assert_eq!(err(&[]), Err(GenerateError::EmptyPrompt));
        assert_eq!(
            err(&[1; 24]),
            Err(GenerateError::PromptTooLong {
                tokens: 24,
                context: 24
            })
        );
        assert_eq!(
            err(&[1, 20]),
            Err(GenerateError::OutOfVocabulary { id: 20, vocab: 20 })
        );
        rng.next_f64();
    }
}
