//! `neox-data`: prepare corpora into GPT-NeoX / Megatron `.bin/.idx` shards.

use clap::{Parser, Subcommand};
use neox::commands::{inspect, list, merge, prepare, samples, tokenize};

/// Prepare training corpora for GPT-NeoX-style models.
///
/// Typical use: `neox-data prepare enron` downloads the Enron e-mails,
/// tokenizes them with GPT-2's BPE and writes
/// `data/enron/enron_text_document.{bin,idx}`; `neox-data list` shows every
/// known corpus; `neox-data inspect PREFIX` describes a prepared shard.
#[derive(Debug, Parser)]
#[command(name = "neox-data", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    #[command(about = "Download, tokenize and write a registered corpus.")]
    Prepare(prepare::PrepareArgs),
    #[command(about = "List registered corpora with sizes, documents and tokens.")]
    List(list::ListArgs),
    #[command(
        about = "Tokenize local files into `{prefix}_{key}_document.{bin,idx}` (like GPT-NeoX's preprocess_data.py)."
    )]
    Tokenize(tokenize::TokenizeArgs),
    #[command(about = "Describe a prepared `.bin/.idx` pair: documents, tokens, dtype, lengths.")]
    Inspect(inspect::InspectArgs),
    #[command(about = "Join several prepared prefixes into one.")]
    Merge(merge::MergeArgs),
    #[command(
        about = "Build (or reuse) GPT-NeoX's training sample index and show what each sample holds."
    )]
    Samples(samples::SamplesArgs),
}

fn main() -> std::process::ExitCode {
    neox::logging::init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Prepare(a) => prepare::run(a),
        Command::List(a) => list::run(a),
        Command::Tokenize(a) => tokenize::run(a),
        Command::Inspect(a) => inspect::run(a),
        Command::Merge(a) => merge::run(a),
        Command::Samples(a) => samples::run(a),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
