//! Any body through the pass-through relays of each API: no panic, and the
//! same bytes and usage whatever the chunking.
#![no_main]

use codex_proxy::api::Protocol;
use codex_proxy::convert::passthrough::{JsonPassthrough, SsePassthrough};
use codex_proxy::convert::{relay_in_pieces as run, Relay};
use libfuzzer_sys::fuzz_target;

const PROTOCOLS: [Protocol; 4] = [Protocol::Chat, Protocol::Responses, Protocol::Messages, Protocol::Embeddings];

fuzz_target!(|data: &[u8]| {
    let Some((&flags, input)) = data.split_first() else { return };
    let protocol = PROTOCOLS[(flags & 3) as usize];
    let hide = flags & 4 == 0;
    let cuts: Vec<usize> = (1..input.len()).filter(|i| (i * 13 + flags as usize) % 7 == 0).collect();
    let mut a = SsePassthrough::new(protocol, hide);
    let mut b = SsePassthrough::new(protocol, hide);
    assert_eq!(run(&mut a, input, &[]), run(&mut b, input, &cuts), "chunking changed the bytes");
    assert_eq!(a.usage(), b.usage());
    let _ = a.abort("failed");
    let mut j = JsonPassthrough::new(protocol);
    assert_eq!(run(&mut j, input, &cuts), input, "JSON pass-through changed the body");
});
