//! `neox-launch`: start the ranks of a training run on one machine or many.

use std::process::ExitCode;

use clap::Parser;
use neox::launch::{LaunchArgs, launch, supervise::Outcome};

fn main() -> ExitCode {
    neox::logging::init();
    match launch(&LaunchArgs::parse()) {
        Ok(outcome) => {
            match &outcome {
                Outcome::Success => {}
                Outcome::Failed { rank, host, status } => {
                    let on = host
                        .as_ref()
                        .map(|h| format!(" on {h}"))
                        .unwrap_or_default();
                    eprintln!("error: rank {rank}{on} {status}; every other rank was stopped");
                }
                Outcome::Interrupted(sig) => eprintln!("error: interrupted by signal {sig}"),
            }
            ExitCode::from(outcome.exit_code())
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
