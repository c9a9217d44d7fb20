//! Your own `neox-data` with one more corpus, implemented in Rust.
//!
//! A corpus is a type implementing `neox_datasets::DataDownloader`: a name
//! and its files are enough; override a step where the corpus needs it.
//! Here Tiny Shakespeare (one plain-text file) overrides `unpack` to make
//! one document per speech instead of one for the whole file. Registering it
//! next to the built-ins gives it `prepare` and `list` like any other:
//!
//! ```sh
//! cargo run --release --example custom_corpus -- list
//! cargo run --release --example custom_corpus -- prepare tiny_shakespeare
//! ```

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use neox::commands::{list, prepare};
use neox_datasets::download::{FetchError, Fetched, write_atomically};
use neox_datasets::{DataDownloader, KnownFigures, RemoteFile};
use neox_registry::Registry;

/// Karpathy's Tiny Shakespeare (char-rnn), 1,115,394 bytes of plays.
struct TinyShakespeare;

impl DataDownloader for TinyShakespeare {
    fn name(&self) -> &str {
        "tiny_shakespeare"
    }

    fn description(&self) -> &str {
        "Tiny Shakespeare, one document per speech"
    }

    fn files(&self) -> Vec<RemoteFile> {
        vec![
            RemoteFile::new(
                "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
            )
            .with_size(1_115_394),
        ]
    }

    fn known(&self) -> KnownFigures {
        KnownFigures {
            compressed_bytes: Some(1_115_394),
            ..KnownFigures::default()
        }
    }

    /// Speeches are separated by blank lines: write them as jsonl, one a line.
    fn unpack(&self, downloaded: &Fetched, folder: &Path) -> Result<Vec<PathBuf>, FetchError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| FetchError::Io { path, source }
        };
        let text = std::fs::read_to_string(&downloaded.path).map_err(io(&downloaded.path))?;
        let mut jsonl = String::new();
        for speech in text.split("\n\n").map(str::trim).filter(|s| !s.is_empty()) {
            jsonl.push_str(&serde_json::json!({ "text": speech }).to_string());
            jsonl.push('\n');
        }
        let out = folder.join("speeches.jsonl");
        write_atomically(&out, jsonl.as_bytes()).map_err(io(&out))?;
        Ok(vec![out])
    }
}

/// `neox-data`'s `prepare` and `list`, with one more corpus.
#[derive(Parser)]
#[command(name = "custom_corpus")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Download, tokenize and write a corpus (see `neox-data prepare --help`).
    Prepare(prepare::PrepareArgs),
    /// List the corpora, Tiny Shakespeare included.
    List(list::ListArgs),
}

fn main() -> ExitCode {
    neox::logging::init();
    let mut registry = Registry::with_builtins();
    registry.register(TinyShakespeare);
    let result = match Cli::parse().command {
        Command::Prepare(args) => prepare::run_with(args, registry),
        Command::List(args) => list::run_with(args, registry),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
