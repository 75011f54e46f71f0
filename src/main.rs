use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    projector::logging::init();
    projector::cli::Cli::parse().dispatch().await
}
