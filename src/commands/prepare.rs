//! `neox-data prepare`.

use clap::Args;

/// Arguments of `neox-data prepare`.
#[derive(Debug, Args)]
pub struct PrepareArgs {}

/// Run `neox-data prepare`.
pub fn run(_args: PrepareArgs) -> anyhow::Result<()> {
    anyhow::bail!("`neox-data prepare` is not built yet")
}
