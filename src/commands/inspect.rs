//! `neox-data inspect`.

use clap::Args;

/// Arguments of `neox-data inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {}

/// Run `neox-data inspect`.
pub fn run(_args: InspectArgs) -> anyhow::Result<()> {
    anyhow::bail!("`neox-data inspect` is not built yet")
}
