//! `neox-data merge`.

use clap::Args;

/// Arguments of `neox-data merge`.
#[derive(Debug, Args)]
pub struct MergeArgs {}

/// Run `neox-data merge`.
pub fn run(_args: MergeArgs) -> anyhow::Result<()> {
    anyhow::bail!("`neox-data merge` is not built yet")
}
