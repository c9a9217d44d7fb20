//! Choosing the next token from logits as GPT-NeoX's `generate_samples`
//! does: greedy at temperature 0; otherwise logits divided by the
//! temperature, cut to the `top_k` largest and to the smallest set whose
//! probability exceeds `top_p` (`filter_logits`), then drawn.

/// How the next token is chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// 0: greedy (the most likely token).
    pub temperature: f64,
    /// Keep only the `top_k` most likely tokens (0: all).
    pub top_k: usize,
    /// Keep the most likely tokens whose probabilities sum to `top_p` (0: all).
    pub top_p: f64,
}

impl Sampling {
    pub const GREEDY: Sampling = Sampling {
        temperature: 0.0,
        top_k: 0,
        top_p: 0.0,
    };

    /// Why these settings cannot be used, if they cannot.
    pub fn check(&self) -> Result<(), String> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(format!(
                "temperature {}: expected 0 (greedy) or more",
                self.temperature
            ));
        }
        if !(0.0..=1.0).contains(&self.top_p) {
            return Err(format!("top_p {}: expected 0 to 1", self.top_p));
        }
        Ok(())
    }

    /// The next token for `logits` (one position, the whole vocabulary).
    pub fn choose(&self, logits: &[f32], rng: &mut Rng) -> u32 {
        if self.temperature == 0.0 {
            return argmax(logits);
        }
        let scaled: Vec<f64> = logits
            .iter()
            .map(|&l| l as f64 / self.temperature)
            .collect();
        // Token ids by decreasing logit (stable: ties keep the lower id first).
        let mut order: Vec<usize> = (0..scaled.len()).collect();
        order.sort_by(|&a, &b| scaled[b].total_cmp(&scaled[a]));
        if self.top_k > 0 {
            order.truncate(self.top_k);
        }
        let max = scaled[order[0]];
        let weights: Vec<f64> = order.iter().map(|&i| (scaled[i] - max).exp()).collect();
        let sum: f64 = weights.iter().sum();
        let mut probs: Vec<f64> = weights.iter().map(|w| w / sum).collect();
        if self.top_p > 0.0 {
            // Keep tokens until the cumulative probability exceeds top_p
            // (the token that crosses it is kept: at least one remains).
            let mut cumulative = 0.0;
            let keep = probs
                .iter()
                .position(|p| {
                    cumulative += p;
                    cumulative > self.top_p
                })
                .map_or(probs.len(), |i| i + 1);
            probs.truncate(keep);
            let sum: f64 = probs.iter().sum();
            probs.iter_mut().for_each(|p| *p /= sum);
        }
        let draw = rng.next_f64();
        let mut cumulative = 0.0;
        for (p, &id) in probs.iter().zip(&order) {
            cumulative += p;
            if draw < cumulative {
                return id as u32;
            }
        }
        order[probs.len() - 1] as u32
    }
}

/// The first index of the largest value (as `torch.argmax`).
pub fn argmax(values: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] {
            best = i;
        }
    }
    best as u32
}

/// A small seeded generator (SplitMix64): the same seed draws the same
/// samples on every machine.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(sampling: Sampling, logits: &[f32], draws: usize) -> Vec<usize> {
        let mut rng = Rng::new(7);
        let mut counts = vec![0; logits.len()];
        for _ in 0..draws {
            counts[sampling.choose(logits, &mut rng) as usize] += 1;
        }
        counts
    }

    #[test]
    fn greedy_takes_the_first_largest() {
        assert_eq!(argmax(&[0.1, 3.0, -1.0, 3.0]), 1);
        let mut rng = Rng::new(1);
        assert_eq!(Sampling::GREEDY.choose(&[0.0, 0.5, 0.2], &mut rng), 1);
    }

    #[test]
    fn top_k_and_top_p_cut_the_tail() {
        let logits = [2.0f32, 1.0, 0.0, -1.0];
        let at = |top_k, top_p| Sampling {
            temperature: 1.0,
            top_k,
            top_p,
        };
        let c = counts(at(2, 0.0), &logits, 4000);
        assert!(c[0] > 0 && c[1] > 0 && c[2] == 0 && c[3] == 0, "{c:?}");
        // Probabilities 0.64, 0.24, 0.09, 0.03: top_p 0.7 keeps the first two.
        let c = counts(at(0, 0.7), &logits, 4000);
        assert!(c[0] > 0 && c[1] > 0 && c[2] == 0 && c[3] == 0, "{c:?}");
        // top_p below the first probability keeps one.
        let c = counts(at(0, 0.1), &logits, 100);
        assert_eq!(c[0], 100);
        // Everything: the frequencies follow the probabilities.
        let c = counts(at(0, 0.0), &logits, 20000);
        let share = c[0] as f64 / 20000.0;
        assert!((share - 0.6439).abs() < 0.02, "{c:?}");
        // A low temperature sharpens, a high one flattens.
        let cold = counts(
            Sampling {
                temperature: 0.1,
                ..at(0, 0.0)
            },
            &logits,
            1000,
        );
        assert_eq!(cold[0], 1000);
        let hot = counts(
            Sampling {
                temperature: 100.0,
                ..at(0, 0.0)
            },
            &logits,
            4000,
        );
        assert!(hot.iter().all(|&n| n > 800), "{hot:?}");
    }

    #[test]
    fn the_same_seed_draws_the_same_tokens() {
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        let s = Sampling {
            temperature: 1.0,
            top_k: 0,
            top_p: 0.0,
        };
        let draw = |seed| {
            let mut rng = Rng::new(seed);
            (0..20)
                .map(|_| s.choose(&logits, &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(3), draw(3));
        assert_ne!(draw(3), draw(4));
    }

    #[test]
    fn bad_settings_are_named() {
        let bad = Sampling {
            temperature: -1.0,
            ..Sampling::GREEDY
        };
        assert!(bad.check().unwrap_err().contains("temperature"));
        let bad = Sampling {
            top_p: 1.5,
            ..Sampling::GREEDY
        };
        assert!(bad.check().unwrap_err().contains("top_p"));
    }
}
