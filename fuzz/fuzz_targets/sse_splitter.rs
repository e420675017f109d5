//! The SSE splitter loses no byte and finds the same events whatever the
//! chunking: events + tail reproduce the input, and a chunked run yields the
//! same events as a single push.
#![no_main]

use codex_proxy::sse::{self, Splitter};
use libfuzzer_sys::fuzz_target;

fn events(input: &[u8], cuts: &[usize]) -> (Vec<Vec<u8>>, Option<Vec<u8>>) {
    let mut s = Splitter::new();
    let mut out = Vec::new();
    let mut last = 0;
    for &c in cuts.iter().chain(std::iter::once(&input.len())) {
        out.extend(s.push(&input[last..c]).into_iter().map(|b| b.to_vec()));
        last = c;
    }
    (out, s.finish().map(|b| b.to_vec()))
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, input)) = data.split_first() else { return };
    let whole = events(input, &[]);
    let mut cuts: Vec<usize> = (0..input.len()).filter(|i| (i * 7 + seed as usize) % 5 == 0).collect();
    cuts.dedup();
    assert_eq!(events(input, &cuts), whole, "chunking changed the events");
    let mut joined: Vec<u8> = whole.0.concat();
    if let Some(tail) = &whole.1 {
        joined.extend_from_slice(tail);
    }
    assert!(input.starts_with(&joined), "events are not the input's bytes in order");
    assert!(input[joined.len()..].iter().all(u8::is_ascii_whitespace), "non-blank bytes were dropped");
    for e in &whole.0 {
        let _ = sse::parse(e);
    }
});
