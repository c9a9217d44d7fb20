//! What the trainer's loop tests share: one run at a time, and the token
//! stream they train on (vocabulary 32, sequence length 16).

use std::sync::{Mutex, MutexGuard};

use neox_trainer::data::{Splits, TokenWindows};

/// Burn's CPU backend has one RNG per process (it seeds initialisation and
/// dropout): runs in parallel test threads would interleave their draws.
pub fn one_run_at_a_time() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A stream with structure to learn: a repeating sequence with some noise.
fn tokens(n: usize, salt: u32) -> Vec<u32> {
    (0..n as u32)
        .map(|i| {
            if (i * 7 + salt).is_multiple_of(13) {
                (i * 31 + salt) % 32
            } else {
                (i % 9) * 3 + 1
            }
        })
        .collect()
}

/// Train, valid and test windows of 16 tokens.
pub fn splits() -> Splits {
    Splits {
        train: Box::new(TokenWindows::new(tokens(20_000, 0), 16)),
        valid: Some(Box::new(TokenWindows::new(tokens(2_000, 5), 16))),
        test: Some(Box::new(TokenWindows::new(tokens(2_000, 9), 16))),
    }
}
