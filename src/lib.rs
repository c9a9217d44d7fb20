//! neox: GPT-NeoX rebuilt in Rust.
//!
//! The root package holds the glue that chains the leaf crates together
//! (read -> tokenize -> write, once, for every command that needs it) and the
//! implementations of the thin command-line tools `neox-data`, `neox-train`
//! and `neox-launch`.

pub mod commands;
pub mod launch;
pub mod leftovers;
pub mod logging;
#[cfg(feature = "train")]
pub mod model_use;
pub mod pipeline;
pub mod prepare;
pub mod progress;
