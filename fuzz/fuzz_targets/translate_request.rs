//! Any JSON request body through each translation and the local token
//! estimate, and any upstream error body through the error mapping: either a
//! translated body or a clean error, never a panic.
#![no_main]

use codex_proxy::api::Protocol;
use codex_proxy::convert::context::Ctx;
use codex_proxy::convert::support::{estimate_request, FixedIds, Signer};
use codex_proxy::convert::translate::{self, Pair};
use libfuzzer_sys::fuzz_target;
use std::sync::Arc;

const PAIRS: [Pair; 4] = [Pair::MessagesToChat, Pair::ChatToMessages, Pair::ResponsesToChat, Pair::ResponsesToMessages];

fn ctx() -> Ctx {
    Ctx::new("client-model", "upstream-model", Arc::new(FixedIds::new(1_700_000_000)), Arc::new(Signer::new([3; 32])))
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, body)) = data.split_first() else { return };
    let status = 400 + u16::from(flags) % 200;
    for pair in PAIRS {
        let _ = translate::error(pair, status, body, &ctx(), flags & 1 == 0, Some(3));
    }
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else { return };
    for pair in PAIRS {
        if let Ok(out) = translate::request(pair, &v, &mut ctx()) {
            serde_json::from_slice::<serde_json::Value>(&out).expect("a translated request is JSON");
        }
    }
    if let Ok(ir) = translate::parse(Protocol::CountTokens, &v, &mut ctx()) {
        let _ = estimate_request(&ir);
    }
});
