use std::process::ExitCode;

use clap::Parser;

/// jemalloc instead of glibc malloc: the pipeline allocates and frees many
/// small strings per event; glibc's free/consolidate paths were a third of
/// the projector's CPU, and mimalloc held ~100 MiB where jemalloc stays at
/// the glibc footprint (BENCHMARKS.md has the measurements).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read at its start (C `const char *malloc_conf`;
/// the environment's `_RJEM_MALLOC_CONF` still overrides them). Freed pages
/// go back to the OS after 1 s instead of 10 s, by a background thread:
/// rewriting large documents churns through memory that jemalloc otherwise
/// keeps resident, so peak RSS measured what was freed long ago (89 MiB
/// against 77 MiB draining 200 large inboxes; 0 ms gives 51 MiB but costs
/// 40 % more CPU per event; BENCHMARKS.md).
#[export_name = "_rjem_malloc_conf"]
static MALLOC_CONF: &[u8; 60] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

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
