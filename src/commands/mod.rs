//! One module per `neox-data` subcommand: its clap `Args` and its `run`.

pub mod inspect;
pub mod list;
pub mod merge;
pub mod prepare;
pub mod samples;
pub mod tokenize;
