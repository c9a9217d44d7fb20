//! `neox-data list`.

use clap::Args;

/// Arguments of `neox-data list`.
#[derive(Debug, Args)]
pub struct ListArgs {}

/// Run `neox-data list`.
pub fn run(_args: ListArgs) -> anyhow::Result<()> {
    anyhow::bail!("`neox-data list` is not built yet")
}
