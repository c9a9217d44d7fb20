//! `neox-data tokenize`.

use clap::Args;

/// Arguments of `neox-data tokenize`.
#[derive(Debug, Args)]
pub struct TokenizeArgs {}

/// Run `neox-data tokenize`.
pub fn run(_args: TokenizeArgs) -> anyhow::Result<()> {
    anyhow::bail!("`neox-data tokenize` is not built yet")
}
