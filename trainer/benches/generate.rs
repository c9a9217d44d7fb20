//! Generation speed on the CPU (flex backend): new tokens per second with
//! the KV cache (each token costs one position) and without it (the whole
//! sequence recomputed for every token), greedy, for a randomly initialised
//! model of `configs/cpu-tiny.yml`'s shape with a 512-token context.
//!
//!   cargo bench -p neox-trainer --bench generate
//!   cargo bench -p neox-trainer --bench generate -- 256   # new tokens (default 192)
//!
//! The prompt is 32 tokens; both runs must give the same tokens (checked).

use std::time::Instant;

use burn::backend::Flex;
use burn::tensor::backend::Backend;
use neox_trainer::generate::{Rng, Sampling, Settings, generate};
use neox_trainer::model::{Activation, InitMethod, ModelConfig, NormKind, PosEmb};

fn main() {
    let new_tokens: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(192);
    let config = ModelConfig {
        num_layers: 2,
        hidden_size: 128,
        num_attention_heads: 4,
        seq_length: 512,
        max_position_embeddings: 512,
        vocab_size: 512,
        norm: NormKind::LayerNorm,
        norm_eps: 1e-5,
        pos_emb: PosEmb::Rotary,
        rotary_pct: 0.25,
        rotary_emb_base: 10000.0,
        gpt_j_residual: true,
        tied_embeddings: false,
        activation: Activation::Gelu,
        intermediate_size: 512,
        init_method: InitMethod::Normal,
        output_layer_init_method: InitMethod::ScaledNormal,
        init_method_std: 0.02,
        hidden_dropout: 0.0,
        attention_dropout: 0.0,
        use_bias_in_attn_linear: true,
        use_bias_in_mlp: true,
        use_bias_in_norms: true,
        ..ModelConfig::default()
    };
    let device = Default::default();
    Flex::seed(&device, 1);
    let model = config.init::<Flex>(&device);
    let prompt: Vec<u32> = (0..32).map(|i| (i * 37 % 512) as u32).collect();
    println!(
        "model: {} layers, hidden {}, vocab {}, prompt {} tokens, {new_tokens} new tokens (greedy)",
        config.num_layers,
        config.hidden_size,
        config.vocab_size,
        prompt.len()
    );
    let mut results = Vec::new();
    for use_cache in [true, false] {
        let settings = Settings {
            sampling: Sampling::GREEDY,
            maximum_tokens: new_tokens,
            eod: None,
            use_cache,
        };
        // Warm-up (allocations, thread pool).
        generate(
            &model,
            &prompt,
            &Settings {
                maximum_tokens: 4,
                ..settings
            },
            &mut Rng::new(0),
            |_| {},
        )
        .expect("warm-up");
        let start = Instant::now();
        let out = generate(&model, &prompt, &settings, &mut Rng::new(0), |_| {}).expect("generate");
        let seconds = start.elapsed().as_secs_f64();
        let n = out.tokens.len();
        println!(
            "{:<18} {n} tokens in {seconds:.3} s: {:.1} tokens/s",
            if use_cache {
                "with KV cache"
            } else {
                "without (recompute)"
            },
            n as f64 / seconds
        );
        results.push((out.tokens, n as f64 / seconds));
    }
    assert_eq!(results[0].0, results[1].0, "the cache changed the tokens");
    println!(
        "speed-up from the cache: {:.1}x",
        results[0].1 / results[1].1
    );
}
