//! The binary's jemalloc options take effect (src/main.rs `MALLOC_CONF`):
//! freed pages are returned after 1 s by a background thread, not kept
//! for jemalloc's default 10 s, which held peak RSS ~15 % higher while
//! large documents are rewritten (BENCHMARKS.md).

use std::process::Command;

#[test]
fn the_binary_returns_freed_memory_within_a_second() {
    // stats_print (from the environment, on top of the compiled options)
    // prints every option in effect at exit.
    let out = Command::new(env!("CARGO_BIN_EXE_projector"))
        .arg("--version")
        .env("_RJEM_MALLOC_CONF", "stats_print:true")
        .output()
        .expect("run projector --version");
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    for want in [
        "opt.background_thread: true ",
        "opt.dirty_decay_ms: 1000 ",
        "opt.muzzy_decay_ms: 0 ",
    ] {
        assert!(
            text.contains(want),
            "{want} not in jemalloc's stats:\n{}",
            &text[..text.len().min(3000)]
        );
    }
}
