//! Fuzzes the pgoutput decoder and the event decoder: no input may panic,
//! and whatever decodes must re-encode to the same bytes.
//!
//! Run: `cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run -s none -O pgoutput -- -max_total_time=240`
//! (2026-11-23: 19.3M executions in 241 s, ~80k/s, no findings).
#![no_main]

use libfuzzer_sys::fuzz_target;
use projector::source::event::EventDecoder;
use projector::source::pgoutput::decode;
use projector::source::pgoutput_encode::encode;

fuzz_target!(|data: &[u8]| {
    for in_stream in [false, true] {
        if let Ok(m) = decode(data, in_stream) {
            assert_eq!(encode(&m), data, "decode/encode round trip");
        }
    }
    // The same bytes split into a sequence of messages (length-prefixed by
    // one byte) through the stateful event decoder.
    let mut d = EventDecoder::new();
    let mut rest = data;
    while let Some((&n, tail)) = rest.split_first() {
        let n = (n as usize).min(tail.len());
        let _ = d.feed(&tail[..n]);
        while d.pop().is_some() {}
        rest = &tail[n..];
    }
});
