//! The golden vectors G1–G15 of protocol-mapping §8 as fixture files
//! (`tests/fixtures/golden/`), each asserting the exact output of the pure
//! converters, plus the chunking property: any split of an upstream stream
//! gives byte-identical client output.

use codex_proxy::api::Protocol;
use codex_proxy::convert::context::Ctx;
use codex_proxy::convert::errors;
use codex_proxy::convert::support::{estimate_request, FixedIds, Signer};
use codex_proxy::convert::translate::{self, Pair, Translating};
use proptest::prelude::*;
use serde_json::Value;
use std::sync::Arc;

const T: u64 = 1_700_000_000;
const EST: u64 = 42;
const KEY: [u8; 32] = [7; 32];

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{}/tests/fixtures/golden/{name}", env!("CARGO_MANIFEST_DIR")))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn json_fixture(name: &str) -> Value {
    serde_json::from_str(&fixture(name)).unwrap()
}

fn ctx(client: &str, upstream: &str) -> Ctx {
    let mut c = Ctx::new(client, upstream, Arc::new(FixedIds::new(T)), Arc::new(Signer::new(KEY)));
    c.prompt_estimate = EST;
    c
}

/// Replaces `{{SIG:model:text}}` with the gateway signature for it.
fn with_signatures(text: &str) -> String {
    let signer = Signer::new(KEY);
    let mut out = text.to_string();
    while let Some(start) = out.find("{{SIG:") {
        let end = out[start..].find("}}").unwrap() + start;
        let (model, thinking) = out[start + 6..end].split_once(':').unwrap();
        let sig = signer.sign(model, thinking);
        out.replace_range(start..end + 2, &sig);
    }
    out
}

/// Events as (name, data) with data parsed as JSON when it is JSON.
fn events(text: &str) -> Vec<(Option<String>, Value)> {
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let mut name = None;
            let mut data = String::new();
            for line in e.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = Some(n.to_string());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = d.to_string();
                }
            }
            (name, serde_json::from_str(&data).unwrap_or(Value::String(data)))
        })
        .collect()
}

fn assert_stream_eq(actual: &str, expected_file: &str) {
    let expected = with_signatures(&fixture(expected_file));
    let (a, e) = (events(actual), events(&expected));
    for (i, (x, y)) in a.iter().zip(e.iter()).enumerate() {
        assert_eq!(x, y, "{expected_file}: event {i} differs\nactual:   {x:?}\nexpected: {y:?}");
    }
    assert_eq!(a.len(), e.len(), "{expected_file}: event count\n{actual}");
}

fn run(pair: Pair, ctx: Ctx, input: &[u8], cuts: &[usize], upstream_stream: bool, client_stream: bool) -> String {
    let mut relay = Translating::new(pair, ctx, upstream_stream, client_stream);
    String::from_utf8(codex_proxy::convert::relay_in_pieces(&mut relay, input, cuts)).unwrap()
}

/// Streams fixture `{g}.in.sse` through and compares with `{g}.out.sse`.
fn golden_stream(pair: Pair, ctx: Ctx, g: &str) {
    let out = run(pair, ctx, fixture(&format!("{g}.in.sse")).as_bytes(), &[], true, true);
    assert_stream_eq(&out, &format!("{g}.out.sse"));
}

/// Runs non-streaming fixture `input` through and parses the answer.
fn golden_json(pair: Pair, ctx: Ctx, input: &str) -> Value {
    let out = run(pair, ctx, fixture(input).as_bytes(), &[], false, false);
    serde_json::from_str(&out).unwrap()
}

fn codex_ctx(upstream: &str) -> Ctx {
    let mut c = ctx("gpt-5-codex", upstream);
    c.echo = codex_proxy::convert::responses::echo_of(&json_fixture("g10.echo.json"));
    c
}

fn request(pair: Pair, input: &str, upstream: &str) -> Value {
    let mut c = ctx("client", upstream);
    let body = translate::request(pair, &json_fixture(input), &mut c).unwrap();
    serde_json::from_slice(&body).unwrap()
}

#[test]
fn g01_messages_request_to_chat() {
    assert_eq!(request(Pair::MessagesToChat, "g01.in.json", "up-model"), json_fixture("g01.out.json"));
}

#[test]
fn g02_to_g05_chat_streams_to_anthropic_events() {
    for g in ["g02", "g03", "g04", "g05a", "g05b"] {
        golden_stream(Pair::MessagesToChat, ctx("claude-sonnet-4-5", "up-model"), g);
    }
}

#[test]
fn g03_non_streaming_reasoning_then_text() {
    let out = golden_json(Pair::MessagesToChat, ctx("claude-sonnet-4-5", "up-model"), "g03b.in.json");
    let expected: Value = serde_json::from_str(&with_signatures(&fixture("g03b.out.json"))).unwrap();
    assert_eq!(out, expected);
}

#[test]
fn g06_chat_request_to_anthropic() {
    assert_eq!(request(Pair::ChatToMessages, "g06.in.json", "claude-sonnet-4-5"), json_fixture("g06.out.json"));
}

#[test]
fn g07_anthropic_stream_to_chat_chunks() {
    let mut c = ctx("gpt-4o", "claude-sonnet-4-5");
    c.include_usage = true;
    golden_stream(Pair::ChatToMessages, c, "g07");
}

#[test]
fn g08_anthropic_message_to_chat_completion() {
    let out = golden_json(Pair::ChatToMessages, ctx("gpt-4o", "claude-sonnet-4-5"), "g08.in.json");
    assert_eq!(out, json_fixture("g08.out.json"));
}

#[test]
fn g09_responses_request_to_chat() {
    assert_eq!(request(Pair::ResponsesToChat, "g09.in.json", "up-model"), json_fixture("g09.out.json"));
}

#[test]
fn g10_g11_chat_streams_to_responses_events() {
    for g in ["g10", "g11"] {
        golden_stream(Pair::ResponsesToChat, codex_ctx("up-model"), g);
    }
}

#[test]
fn g12_anthropic_stream_to_responses_events() {
    golden_stream(Pair::ResponsesToMessages, codex_ctx("claude-sonnet-4-5"), "g12");
}

#[test]
fn g13_signed_reasoning_round_trips_to_anthropic() {
    assert_eq!(request(Pair::ResponsesToMessages, "g13.in.json", "claude-sonnet-4-5"), json_fixture("g13.out.json"));
    // Without the signature the thinking block goes, and thinking is off.
    assert_eq!(request(Pair::ResponsesToMessages, "g13b.in.json", "claude-sonnet-4-5"), json_fixture("g13b.out.json"));
}

#[test]
fn g14_error_mapping() {
    for g in ["g14a.json", "g14b.json", "g14c.json"] {
        let v = json_fixture(g);
        let pair = match v["pair"].as_str().unwrap() {
            "messages->chat" => Pair::MessagesToChat,
            "chat->messages" => Pair::ChatToMessages,
            _ => Pair::ResponsesToMessages,
        };
        let body = serde_json::to_vec(&v["upstream_body"]).unwrap();
        let (status, _, out) = translate::error(
            pair,
            v["upstream_status"].as_u64().unwrap() as u16,
            &body,
            &ctx("c", "u"),
            false,
            v["retry_after"].as_u64(),
        );
        assert_eq!(status as u64, v["status"].as_u64().unwrap(), "{g}");
        assert_eq!(serde_json::from_slice::<Value>(&out).unwrap(), v["body"], "{g}");
    }
    // (d) mid-stream error to a Responses client, (e) to a chat client.
    let input = fixture("g14d.in.sse");
    assert_stream_eq(
        &run(Pair::ResponsesToMessages, ctx("gpt-5-codex", "claude-sonnet-4-5"), input.as_bytes(), &[], true, true),
        "g14d.out.sse",
    );
    assert_stream_eq(
        &run(Pair::ChatToMessages, ctx("gpt-4o", "claude-sonnet-4-5"), input.as_bytes(), &[], true, true),
        "g14e.out.sse",
    );
    // (f) a pre-stream context overflow for a streaming Codex request.
    let body = serde_json::to_vec(&json_fixture("g14a.json")["upstream_body"]).unwrap();
    let (status, ty, out) = translate::error(Pair::ResponsesToChat, 400, &body, &ctx("gpt-5-codex", "u"), true, None);
    assert_eq!((status, ty), (200, "text/event-stream"));
    assert_stream_eq(std::str::from_utf8(&out).unwrap(), "g14f.out.sse");
}

#[test]
fn g15_count_tokens_estimate_matches_message_start() {
    let req = serde_json::json!({"model": "claude-sonnet-4-5", "system": "You are helpful.",
        "messages": [{"role": "user", "content": "Hello"}],
        "tools": [{"name": "get_weather", "description": "Weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]});
    let mut c = ctx("claude-sonnet-4-5", "up-model");
    let ir = translate::parse(Protocol::CountTokens, &req, &mut c).unwrap();
    let est = estimate_request(&ir);
    assert!(est > 0);
    // The same request through the translation reports the same estimate.
    let mut c = ctx("claude-sonnet-4-5", "up-model");
    translate::request(Pair::MessagesToChat, &req, &mut c).unwrap();
    assert_eq!(c.prompt_estimate, est);
    let out = run(Pair::MessagesToChat, c, fixture("g05a.in.sse").as_bytes(), &[], true, true);
    let start = &events(&out)[0].1;
    assert_eq!(start["message"]["usage"]["input_tokens"], est);
}

#[test]
fn context_overflow_for_claude_code_uses_the_window_when_the_message_has_no_numbers() {
    let mut c = ctx("claude-sonnet-4-5", "up");
    c.context_window = Some(200_000);
    c.prompt_estimate = 150_000;
    let (s, _, body) = translate::error(
        Pair::MessagesToChat,
        400,
        br#"{"error":{"message":"too many tokens in the input","type":"invalid_request_error"}}"#,
        &c,
        true,
        None,
    );
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(s, 400);
    assert!(v["error"]["message"].as_str().unwrap().starts_with("prompt is too long: 200001 tokens > 200000 maximum"));
    let _ = errors::is_context_overflow("", "");
}

/// Every recorded upstream stream and the pair it feeds.
fn streams() -> Vec<(&'static str, Pair)> {
    vec![
        ("g02.in.sse", Pair::MessagesToChat),
        ("g03.in.sse", Pair::MessagesToChat),
        ("g04.in.sse", Pair::MessagesToChat),
        ("g05a.in.sse", Pair::MessagesToChat),
        ("g05b.in.sse", Pair::MessagesToChat),
        ("g07.in.sse", Pair::ChatToMessages),
        ("g10.in.sse", Pair::ResponsesToChat),
        ("g11.in.sse", Pair::ResponsesToChat),
        ("g12.in.sse", Pair::ResponsesToMessages),
        ("g14d.in.sse", Pair::ResponsesToMessages),
        ("g14d.in.sse", Pair::ChatToMessages),
        ("g10.in.sse", Pair::MessagesToChat),
        ("g12.in.sse", Pair::ChatToMessages),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    /// Random splits of each upstream stream give byte-identical client output.
    #[test]
    fn any_chunking_gives_identical_output(seed_cuts in proptest::collection::vec(0usize..10_000, 0..12)) {
        for (file, pair) in streams() {
            let input = fixture(file);
            let whole = run(pair, codex_ctx("up-model"), input.as_bytes(), &[], true, true);
            let mut cuts: Vec<usize> = seed_cuts.iter().map(|c| c % (input.len() + 1)).collect();
            cuts.sort_unstable();
            let split = run(pair, codex_ctx("up-model"), input.as_bytes(), &cuts, true, true);
            prop_assert_eq!(&split, &whole, "{} split at {:?}", file, cuts);
        }
    }
}

#[test]
fn channel_quirks_change_only_what_they_name() {
    use codex_proxy::config::quirks::*;
    use serde_json::json;
    let req = json!({
        "model": "m", "max_tokens": 50, "stream": true,
        "thinking": {"type": "enabled", "budget_tokens": 20000},
        "messages": [
            {"role": "user", "content": "run it"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "plan", "signature": ""},
                {"type": "text", "text": "ok"}]},
            {"role": "system", "content": "be careful"},
            {"role": "user", "content": "go"}
        ]
    });
    let defaults = request_with(Pair::MessagesToChat, &req, Quirks::default());
    assert_eq!(defaults["max_tokens"], 50);
    assert_eq!(defaults["reasoning_effort"], "high");
    assert_eq!(defaults["stream_options"], json!({"include_usage": true}));
    assert_eq!(defaults["messages"][1].get("reasoning_content"), None, "no tool call: not echoed by default");
    assert_eq!(
        defaults["messages"][2],
        json!({"role": "user", "content": "<system-reminder>be careful</system-reminder>"})
    );

    let q = Quirks {
        max_tokens_field: MaxTokensField::MaxCompletionTokens,
        system_placement: SystemPlacement::Anywhere,
        reasoning_request: ReasoningRequest::ReasoningObject,
        reasoning_effort_values: vec!["low".into(), "medium".into()],
        reasoning_echo: ReasoningEcho::AllAssistant,
        stream_usage: StreamUsage::Unsupported,
        ..Quirks::default()
    };
    let out = request_with(Pair::MessagesToChat, &req, q);
    assert_eq!(out["max_completion_tokens"], 50);
    assert_eq!(out.get("max_tokens"), None);
    assert_eq!(out["reasoning"], json!({"effort": "medium"}));
    assert_eq!(out.get("reasoning_effort"), None);
    assert_eq!(out.get("stream_options"), None);
    assert_eq!(out["messages"][1]["reasoning_content"], "plan");
    assert_eq!(out["messages"][2], json!({"role": "system", "content": "be careful"}));
}

fn request_with(pair: Pair, req: &Value, quirks: codex_proxy::config::quirks::Quirks) -> Value {
    let mut c = ctx("client", "up");
    c.quirks = quirks;
    serde_json::from_slice(&translate::request(pair, req, &mut c).unwrap()).unwrap()
}
