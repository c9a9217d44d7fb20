//! `neox-data merge`: join several shards into one.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use neox_indexed::{bin_path, idx_path, merge, prefix_of};

/// Arguments of `neox-data merge` (the help text below is what `--help` shows).
#[derive(Debug, Args)]
#[command(
    after_help = "Concatenates shards of one dtype, in the order given. Document boundaries \
(doc_idx) are kept, shifted to their new positions (GPT-NeoX's own merge tool drops them). \
The .bin files are copied by the kernel, never loaded, and the output appears only when complete.\n\n\
Example:\n  neox-data merge --output-prefix data/all_text_document \
data/a_text_document data/b_text_document"
)]
pub struct MergeArgs {
    /// Where to write: `OUTPUT.bin` and `OUTPUT.idx`.
    #[arg(long, value_name = "OUTPUT")]
    pub output_prefix: PathBuf,
    /// Replace an existing `OUTPUT.bin` / `OUTPUT.idx`.
    #[arg(long)]
    pub force: bool,
    /// The shards to join, in order: prefixes or `.bin` / `.idx` paths.
    #[arg(required = true, value_name = "INPUT")]
    pub inputs: Vec<PathBuf>,
}

/// Run `neox-data merge`.
pub fn run(args: MergeArgs) -> anyhow::Result<()> {
    let output = &args.output_prefix;
    if !args.force {
        for path in [bin_path(output), idx_path(output)] {
            if path.exists() {
                anyhow::bail!(
                    "{} already exists; pass --force to replace it",
                    path.display()
                );
            }
        }
    }
    let inputs: Vec<PathBuf> = args.inputs.iter().map(|p| prefix_of(p)).collect();
    tracing::info!(inputs = inputs.len(), output = %output.display(), "merging");
    let summary = merge(&inputs, output)
        .with_context(|| format!("cannot merge into {}", output.display()))?;
    println!(
        "{}: {} documents, {} sequences, {} {} tokens ({} + {} bytes) from {} shards",
        output.display(),
        summary.documents,
        summary.sequences,
        summary.tokens,
        summary.dtype,
        summary.bin_bytes,
        summary.idx_bytes,
        inputs.len()
    );
    Ok(())
}
