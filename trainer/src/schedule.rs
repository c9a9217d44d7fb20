//! GPT-NeoX's learning-rate schedule (`AnnealingLR`): linear warmup over
//! `warmup x lr_decay_iters` iterations, then constant, linear or cosine decay
//! to `lr_decay_iters`, never below `min_lr`.

use serde::{Deserialize, Serialize};

/// `lr_decay_style`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DecayStyle {
    Constant,
    Linear,
    Cosine,
    Exponential,
}

/// The schedule: a pure function of the iteration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub style: DecayStyle,
    pub lr: f64,
    pub min_lr: f64,
    /// Warmup iterations (GPT-NeoX's `warmup` fraction times the decay iterations).
    pub warmup_iters: f64,
    pub decay_iters: u64,
}

impl Schedule {
    pub fn new(style: DecayStyle, lr: f64, min_lr: f64, warmup: f64, decay_iters: u64) -> Self {
        let decay_iters = decay_iters.max(1);
        Schedule {
            style,
            lr,
            min_lr,
            warmup_iters: warmup * decay_iters as f64,
            decay_iters,
        }
    }

    /// The learning rate of the optimizer step taken at `iteration` (0-based:
    /// GPT-NeoX's scheduler holds `num_iters = iteration` during that step).
    pub fn lr_at(&self, iteration: u64) -> f64 {
        let it = iteration as f64;
        if self.warmup_iters > 0.0 && it <= self.warmup_iters {
            return self.lr * it.max(1.0) / self.warmup_iters;
        }
        // Past the end the decay stays at its end value.
        let done = it.min(self.decay_iters as f64) - self.warmup_iters;
        let span = self.decay_iters as f64 - self.warmup_iters;
        let lr = if span <= 0.0 {
            self.lr
        } else {
            match self.style {
                DecayStyle::Constant => self.lr,
                DecayStyle::Linear => self.lr * (span - done) / span,
                DecayStyle::Cosine => {
                    self.min_lr
                        + (self.lr - self.min_lr) / 2.0
                            * ((std::f64::consts::PI * done / span).cos() + 1.0)
                }
                DecayStyle::Exponential => self.lr * (-0.693 * done / span).exp(),
            }
        };
        lr.max(self.min_lr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine_to_min() {
        let s = Schedule::new(DecayStyle::Cosine, 1.0, 0.1, 0.1, 100);
        assert_eq!(s.lr_at(0), 0.1); // max(1, 0) / 10
        assert_eq!(s.lr_at(5), 0.5);
        assert_eq!(s.lr_at(10), 1.0);
        assert!((s.lr_at(55) - 0.55).abs() < 1e-12);
        assert!((s.lr_at(100) - 0.1).abs() < 1e-12);
        assert!((s.lr_at(1000) - 0.1).abs() < 1e-12);
        for i in 10..100 {
            assert!(s.lr_at(i + 1) <= s.lr_at(i));
        }
    }

    #[test]
    fn linear_and_constant() {
        let s = Schedule::new(DecayStyle::Linear, 1.0, 0.0, 0.0, 10);
        assert_eq!(s.lr_at(0), 1.0);
        assert_eq!(s.lr_at(5), 0.5);
        assert_eq!(s.lr_at(10), 0.0);
        let s = Schedule::new(DecayStyle::Linear, 1.0, 0.25, 0.0, 10);
        assert_eq!(s.lr_at(9), 0.25);
        let s = Schedule::new(DecayStyle::Constant, 0.3, 0.0, 0.0, 10);
        assert_eq!(s.lr_at(7), 0.3);
    }
}
