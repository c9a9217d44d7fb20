//! `neox-train`: train a GPT-NeoX model over prepared shards.

fn main() -> std::process::ExitCode {
    neox::logging::init();
    eprintln!("error: neox-train is not built yet");
    std::process::ExitCode::FAILURE
}
