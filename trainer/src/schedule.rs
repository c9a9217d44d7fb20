//! GPT-NeoX's learning-rate schedule (`AnnealingLR`): linear warmup over
//! `warmup x lr_decay_iters` iterations, then constant, linear, cosine or
//! exponential decay over `lr_decay_iters`, never below `min_lr`. As in
//! GPT-NeoX the decay formula goes on past `lr_decay_iters` (no clamp: a
//! cosine rises again), and a warmup shorter than one iteration starts above
//! the peak ([`Schedule::warmup_overshoot`] says by how much).
//!
//! A 1-bit Adam run follows DeepSpeed's `WarmupDecayLR` instead, as GPT-NeoX
//! configures it for `OneBitAdam` ([`Schedule::deepspeed_warmup_decay`]).

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// `lr_decay_style`, and DeepSpeed's `WarmupDecayLR` (not a GPT-NeoX style:
/// what GPT-NeoX gives `OneBitAdam` whatever the style says).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DecayStyle {
    Constant,
    Linear,
    Cosine,
    Exponential,
    #[serde(rename = "deepspeed_warmup_decay")]
    DeepSpeedWarmupDecay,
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

    /// DeepSpeed's `WarmupDecayLR` as GPT-NeoX sets it up for `OneBitAdam`:
    /// from 0 to `lr` over `warmup_steps` (`int(train_iters x warmup)`, at
    /// least 2) on a log curve, then linearly to 0 at `total_steps`
    /// (`lr_decay_iters`, else `train_iters`).
    pub fn deepspeed_warmup_decay(lr: f64, warmup_steps: u64, total_steps: u64) -> Self {
        Schedule {
            style: DecayStyle::DeepSpeedWarmupDecay,
            lr,
            min_lr: 0.0,
            warmup_iters: warmup_steps.max(2) as f64,
            decay_iters: total_steps,
        }
    }

    /// The learning rate of the optimizer step taken at `iteration` (0-based:
    /// GPT-NeoX's scheduler holds `num_iters = iteration` during that step).
    pub fn lr_at(&self, iteration: u64) -> f64 {
        if self.style == DecayStyle::DeepSpeedWarmupDecay {
            return self.warmup_decay_lr(iteration);
        }
        let it = iteration as f64;
        if self.warmup_iters > 0.0 && it <= self.warmup_iters {
            return self.lr * it.max(1.0) / self.warmup_iters;
        }
        let done = it - self.warmup_iters;
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
                DecayStyle::DeepSpeedWarmupDecay => self.warmup_decay_lr(iteration),
            }
        };
        lr.max(self.min_lr)
    }

    /// `WarmupDecayLR`: DeepSpeed's engine steps it after every applied step,
    /// starting from `last_batch_iteration = -1` (the minimum, 0), so step
    /// `iteration` runs at `last_batch_iteration = iteration - 1`.
    fn warmup_decay_lr(&self, iteration: u64) -> f64 {
        let Some(last) = iteration.checked_sub(1) else {
            return 0.0;
        };
        let (last, warmup) = (last as f64, self.warmup_iters);
        let total = self.decay_iters as f64;
        let gamma = if last < warmup {
            (1.0 / warmup.ln()) * (last + 1.0).ln()
        } else {
            ((total - last) / (total - warmup).max(1.0)).max(0.0)
        };
        self.lr * gamma
    }

    /// Where GPT-NeoX's warmup runs above the peak within the first
    /// `train_iters` steps: `max(1, n) / warmup_iters` exceeds 1 when the
    /// warmup is shorter than one iteration.
    pub fn warmup_overshoot(&self, train_iters: u64) -> Option<Overshoot> {
        let warmup_end = (self.warmup_iters.ceil() as u64).max(1).min(train_iters);
        let above: Vec<(u64, f64)> = (0..warmup_end)
            .map(|it| (it, self.lr_at(it)))
            .filter(|(_, lr)| *lr > self.lr)
            .collect();
        let max_lr = above.iter().map(|(_, lr)| *lr).fold(f64::NAN, f64::max);
        (!above.is_empty()).then_some(Overshoot {
            peak: self.lr,
            max_lr,
            steps: above.len() as u64,
            warmup_iters: self.warmup_iters,
        })
    }
}

/// The first steps' learning rate above the configured peak.
#[derive(Debug, Clone, PartialEq)]
pub struct Overshoot {
    /// The configured peak (`lr`).
    pub peak: f64,
    /// The largest learning rate a step takes.
    pub max_lr: f64,
    /// How many steps run above the peak.
    pub steps: u64,
    /// `warmup x lr_decay_iters`.
    pub warmup_iters: f64,
}

impl Overshoot {
    /// `max_lr / peak`.
    pub fn factor(&self) -> f64 {
        self.max_lr / self.peak
    }
}

/// GPT-NeoX's `override_lr_scheduler` and `use_checkpoint_lr_scheduler`: what
/// a resumed run does when its configured schedule differs from the checkpoint's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResumeFlags {
    /// Use the configured schedule, whatever the checkpoint holds.
    pub override_lr_scheduler: bool,
    /// Use the checkpoint's schedule, whatever the configuration says.
    pub use_checkpoint_lr_scheduler: bool,
}

/// A resumed run whose configured schedule differs from its checkpoint's.
#[derive(Debug, Clone, PartialEq, Error)]
#[error(
    "the configured learning-rate schedule differs from the checkpoint's: {}; set \
     `use_checkpoint_lr_scheduler: true` to continue the checkpoint's schedule or \
     `override_lr_scheduler: true` to switch to the configured one",
    .differences.join(", ")
)]
pub struct ScheduleMismatch {
    /// `name: configured (config) vs checkpointed (checkpoint)` for each field.
    pub differences: Vec<String>,
}

/// The schedule a resumed run follows, decided as GPT-NeoX's
/// `AnnealingLR.load_state_dict` decides it: the configured one with
/// `override_lr_scheduler`, the checkpoint's with `use_checkpoint_lr_scheduler`,
/// else both must agree field by field.
pub fn on_resume(
    configured: &Schedule,
    checkpointed: &Schedule,
    flags: ResumeFlags,
) -> Result<Schedule, ScheduleMismatch> {
    if flags.override_lr_scheduler {
        return Ok(configured.clone());
    }
    if flags.use_checkpoint_lr_scheduler {
        return Ok(checkpointed.clone());
    }
    let (c, k) = (configured, checkpointed);
    let mut differences = Vec::new();
    let mut compare = |name: &str, a: String, b: String| {
        if a != b {
            differences.push(format!("{name} {a} (config) vs {b} (checkpoint)"));
        }
    };
    compare("lr", c.lr.to_string(), k.lr.to_string());
    compare("min_lr", c.min_lr.to_string(), k.min_lr.to_string());
    compare(
        "warmup iterations",
        c.warmup_iters.to_string(),
        k.warmup_iters.to_string(),
    );
    compare(
        "lr_decay_iters",
        c.decay_iters.to_string(),
        k.decay_iters.to_string(),
    );
    compare(
        "lr_decay_style",
        format!("{:?}", c.style).to_lowercase(),
        format!("{:?}", k.style).to_lowercase(),
    );
    if differences.is_empty() {
        Ok(checkpointed.clone())
    } else {
        Err(ScheduleMismatch { differences })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deepspeed_warmup_decay_follows_its_formula_one_step_late() {
        let s = Schedule::deepspeed_warmup_decay(1.0, 10, 100);
        // Steps 0 and 1 run at 0 (-1, then log 1); then log(k) / log(10).
        assert_eq!(s.lr_at(0), 0.0);
        assert_eq!(s.lr_at(1), 0.0);
        assert_eq!(s.lr_at(2), (1.0 / 10f64.ln()) * 2f64.ln());
        assert_eq!(s.lr_at(10), (1.0 / 10f64.ln()) * 10f64.ln());
        // From last_batch_iteration 10: (100 - last) / 90, down to 0 and no lower.
        assert_eq!(s.lr_at(11), 1.0);
        assert_eq!(s.lr_at(56), 0.5);
        assert_eq!(s.lr_at(101), 0.0);
        assert_eq!(s.lr_at(500), 0.0);
        // At least 2 warmup steps; a total below them decays over one.
        let s = Schedule::deepspeed_warmup_decay(2.0, 0, 1);
        assert_eq!(s.lr_at(2), 2.0 * ((1.0 / 2f64.ln()) * 2f64.ln()));
        assert_eq!(s.lr_at(3), 0.0);
        assert!(s.warmup_overshoot(100).is_none());
    }

    #[test]
    fn warmup_then_cosine_to_min() {
        let s = Schedule::new(DecayStyle::Cosine, 1.0, 0.1, 0.1, 100);
        assert_eq!(s.lr_at(0), 0.1); // max(1, 0) / 10
        assert_eq!(s.lr_at(5), 0.5);
        assert_eq!(s.lr_at(10), 1.0);
        assert!((s.lr_at(55) - 0.55).abs() < 1e-12);
        assert!((s.lr_at(100) - 0.1).abs() < 1e-12);
        for i in 10..100 {
            assert!(s.lr_at(i + 1) <= s.lr_at(i));
        }
    }

    #[test]
    fn past_the_decay_the_formula_goes_on_as_in_gpt_neox() {
        // AnnealingLR has no clamp: the cosine rises again past lr_decay_iters.
        let s = Schedule::new(DecayStyle::Cosine, 1.0, 0.1, 0.1, 100);
        let expected = 0.1 + 0.9 / 2.0 * ((std::f64::consts::PI * 140.0 / 90.0).cos() + 1.0);
        assert!((s.lr_at(150) - expected).abs() < 1e-12, "{}", s.lr_at(150));
        assert!(s.lr_at(150) > s.lr_at(100));
        assert!((s.lr_at(190) - 1.0).abs() < 1e-12); // a whole period later: the peak again
        // Linear goes below zero, so min_lr holds it; exponential keeps halving.
        let s = Schedule::new(DecayStyle::Linear, 1.0, 0.05, 0.0, 10);
        assert_eq!(s.lr_at(15), 0.05);
        let s = Schedule::new(DecayStyle::Exponential, 1.0, 0.0, 0.0, 10);
        assert!((s.lr_at(20) - (-0.693f64 * 2.0).exp()).abs() < 1e-12);
    }

    #[test]
    fn a_warmup_under_one_iteration_overshoots_and_says_so() {
        // configs/125M.yml with train_iters 5: warmup 0.01 x 5 = 0.05 iterations.
        let s = Schedule::new(DecayStyle::Cosine, 6e-4, 6e-5, 0.01, 5);
        assert!((s.lr_at(0) - 0.012).abs() < 1e-12); // GPT-NeoX's number, kept
        let o = s.warmup_overshoot(5).unwrap();
        assert_eq!((o.peak, o.steps), (6e-4, 1));
        assert!((o.max_lr - 0.012).abs() < 1e-12 && (o.factor() - 20.0).abs() < 1e-9);
        // A warmup of one iteration or more never passes the peak.
        for warmup in [0.0, 0.01, 0.2] {
            let s = Schedule::new(DecayStyle::Cosine, 6e-4, 6e-5, warmup, 100);
            assert_eq!(s.warmup_overshoot(100), None, "{warmup}");
        }
    }

    #[test]
    fn resuming_with_another_schedule_follows_gpt_neox_flags() {
        let config = Schedule::new(DecayStyle::Cosine, 1e-3, 1e-4, 0.01, 1000);
        let ckpt = Schedule::new(DecayStyle::Linear, 2e-3, 1e-4, 0.01, 1000);
        let err = on_resume(&config, &ckpt, ResumeFlags::default()).unwrap_err();
        let text = err.to_string();
        assert_eq!(err.differences.len(), 2, "{text}");
        assert!(
            text.contains("lr 0.001 (config) vs 0.002 (checkpoint)"),
            "{text}"
        );
        assert!(text.contains("lr_decay_style cosine (config) vs linear (checkpoint)"));
        assert!(text.contains("override_lr_scheduler") && text.contains("use_checkpoint"));
        let flags = |o, u| ResumeFlags {
            override_lr_scheduler: o,
            use_checkpoint_lr_scheduler: u,
        };
        assert_eq!(
            on_resume(&config, &ckpt, flags(true, false)),
            Ok(config.clone())
        );
        assert_eq!(
            on_resume(&config, &ckpt, flags(false, true)),
            Ok(ckpt.clone())
        );
        assert_eq!(
            on_resume(&config, &config.clone(), ResumeFlags::default()),
            Ok(config.clone())
        );
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
