//! `neox-data samples`.

use clap::Args;

/// Arguments of `neox-data samples`.
#[derive(Debug, Args)]
pub struct SamplesArgs {}

/// Run `neox-data samples`.
pub fn run(_args: SamplesArgs) -> anyhow::Result<()> {
    anyhow::bail!("`neox-data samples` is not built yet")
}
