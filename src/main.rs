use std::process::ExitCode;

use clap::Parser;

/// jemalloc instead of glibc malloc: the pipeline allocates and frees many
/// small strings per event; glibc's free/consolidate paths were a third of
/// the projector's CPU, and mimalloc held ~100 MiB where jemalloc stays at
/// the glibc footprint (BENCHMARKS.md has the measurements).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    projector::logging::init();
    let cli = projector::cli::Cli::parse();
    match cli.runtime() {
        Ok(rt) => rt.block_on(cli.dispatch()),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            ExitCode::from(2)
        }
    }
}
