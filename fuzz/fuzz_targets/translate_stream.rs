//! Any upstream body through each translating relay, streamed or not: no
//! panic, and the same client bytes whatever the chunking.
#![no_main]

use bytes::Bytes;
use codex_proxy::convert::context::Ctx;
use codex_proxy::convert::support::{FixedIds, Signer};
use codex_proxy::convert::translate::{Pair, Translating};
use codex_proxy::convert::{relay_in_pieces, Relay};
use libfuzzer_sys::fuzz_target;
use std::sync::Arc;

const PAIRS: [Pair; 4] = [Pair::MessagesToChat, Pair::ChatToMessages, Pair::ResponsesToChat, Pair::ResponsesToMessages];

fn run(pair: Pair, upstream_stream: bool, client_stream: bool, input: &[u8], cuts: &[usize]) -> Vec<u8> {
    let mut ctx = Ctx::new(
        "client-model",
        "upstream-model",
        Arc::new(FixedIds::new(1_700_000_000)),
        Arc::new(Signer::new([3; 32])),
    );
    ctx.include_usage = true;
    ctx.declared_tools = vec!["get_weather".into()];
    let mut relay = Translating::new(pair, ctx, upstream_stream, client_stream);
    let out = relay_in_pieces(&mut relay, input, cuts);
    let _ = (relay.usage(), relay.content_started(), relay.stream_error());
    out
}

/// Replaces the counters in gateway-minted ids (`resp_3`, `msg_gw_2`,
/// `toolu_gw_1`, `msg_3_0`): chunking may change the order in which the parser
/// and the emitter mint them from the shared test counter, which is not a
/// difference a client could see with random ids.
fn without_id_counters(out: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(out);
    let mut result = String::with_capacity(text.len());
    let mut rest: &str = &text;
    while let Some(pos) =
        ["resp_", "msg_", "toolu_gw_", "fc_toolu_gw_"].iter().filter_map(|p| rest.find(p).map(|i| (i, p.len()))).min()
    {
        let (i, len) = pos;
        result.push_str(&rest[..i + len]);
        rest = &rest[i + len..];
        let digits = rest.find(|c: char| !c.is_ascii_digit() && c != '_' && c != 'g' && c != 'w').unwrap_or(rest.len());
        if digits > 0 {
            result.push('N');
        }
        rest = &rest[digits..];
    }
    result.push_str(rest);
    result.into_bytes()
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, input)) = data.split_first() else { return };
    let pair = PAIRS[(flags & 3) as usize];
    let upstream_stream = flags & 4 == 0;
    let client_stream = flags & 8 == 0;
    let whole = run(pair, upstream_stream, client_stream, input, &[]);
    let cuts: Vec<usize> = (1..input.len()).filter(|i| (i * 31 + flags as usize) % 11 == 0).collect();
    let split = run(pair, upstream_stream, client_stream, input, &cuts);
    assert_eq!(without_id_counters(&whole), without_id_counters(&split), "chunking changed the client bytes");
    if client_stream {
        // Mid-stream failure after whatever came: an error event, no panic.
        let mut ctx = Ctx::new("c", "u", Arc::new(FixedIds::new(1)), Arc::new(Signer::new([3; 32])));
        ctx.include_usage = flags & 16 == 0;
        let mut relay = Translating::new(pair, ctx, upstream_stream, true);
        relay.push(Bytes::copy_from_slice(input));
        let _ = relay.abort("upstream failed");
    }
});
