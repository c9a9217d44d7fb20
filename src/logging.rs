//! Log set-up shared by the binaries: plain `tracing` lines on stderr.
//!
//! The level comes from `NEOX_LOG` (e.g. `NEOX_LOG=debug`), default `info`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Install the global subscriber (colours only on a terminal). Calling it
/// twice is harmless.
pub fn init() {
    let filter = EnvFilter::try_from_env("NEOX_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}
