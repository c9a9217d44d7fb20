//! `neox-launch`: start the ranks of a training run on one machine or many.

use std::process::ExitCode;

use clap::Parser;
use neox::launch::{LaunchArgs, launch};

fn main() -> ExitCode {
    neox::logging::init();
    match launch(&LaunchArgs::parse()) {
        Ok(outcome) => {
            if let Some(what) = outcome.describe() {
                eprintln!("error: {what}");
            }
            ExitCode::from(outcome.exit_code())
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
