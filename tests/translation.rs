//! Protocol translation through the real gateway: each client API on a
//! channel that speaks another one, streamed and not, with tool-call round
//! trips, errors in the client's shape, and the same bill as native traffic.

mod common;

use codex_proxy::fake_upstream::{Behavior, FakeToolCall, FakeUsage};
use common::*;
use serde_json::{json, Value};

/// `conf()` (openai `oa`, anthropic `an`) plus a chat-only channel `dc` that
/// alone serves `deepseek-chat`, and a user with credits.
fn translation_conf(fake: &codex_proxy::fake_upstream::FakeUpstream) -> String {
    conf(fake)
        .replace(
            "models:\n",
            "models:\n  - {id: deepseek-chat, owned_by: deepseek, price: {input: 0.5, cached_input: 0.05, output: 2}}\n",
        )
        .replace(
            "  - name: an\n",
            &format!(
                "  - name: dc\n    kind: openai-chat\n    base_url: {}/v1\n    api_key: sk-deepseek\n    models: [deepseek-chat]\n    health_check: {{enabled: false}}\n  - name: an\n",
                fake.url()
            ),
        )
}

fn start(fake: &codex_proxy::fake_upstream::FakeUpstream) -> (Gateway, String) {
    let (gw, keys) = Gateway::start_with_keys(&translation_conf(fake), &["t@x.io"]);
    (gw, keys[0].clone())
}

async fn call(gw: &Gateway, path: &str, key: &str, body: &Value) -> (u16, reqwest::header::HeaderMap, String) {
    post(gw, path, key, body).await
}

fn events(body: &str) -> Vec<(String, Value)> {
    sse_events(body)
        .into_iter()
        .filter(|(_, d)| d != "[DONE]")
        .map(|(n, d)| (n.unwrap_or_default(), json(&d)))
        .collect()
}

/// The last request the fake upstream received.
fn last_upstream(fake: &codex_proxy::fake_upstream::FakeUpstream) -> codex_proxy::fake_upstream::Recorded {
    fake.requests().pop().expect("the upstream was called")
}

fn usage(input: u64, output: u64) -> Option<FakeUsage> {
    Some(FakeUsage { input, output, ..Default::default() })
}

#[tokio::test]
async fn messages_client_on_chat_upstream_non_stream() {
    let fake = fake();
    let (gw, key) = start(&fake);
    fake.script(Behavior { text: Some("Bonjour!".into()), usage: usage(12, 3), ..Default::default() });
    let req = json!({
        "model": "gpt-4o", "max_tokens": 64, "system": "Be brief.",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    });
    let (s, h, b) = call(&gw, "/v1/messages", &key, &req).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(h["content-type"], "application/json");
    let v = json(&b);
    assert_eq!(v["type"], "message");
    assert_eq!(v["role"], "assistant");
    assert_eq!(v["model"], "gpt-4o", "the client's model name, not the upstream's");
    assert_eq!(v["content"], json!([{"type": "text", "text": "Bonjour!"}]));
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(v["usage"]["input_tokens"], 12);
    assert_eq!(v["usage"]["output_tokens"], 3);

    let up = last_upstream(&fake);
    assert_eq!(up.path, "/v1/chat/completions");
    assert_eq!(up.header("authorization"), Some("Bearer sk-test-openai"));
    assert_eq!(up.header("x-api-key"), None);
    let body = up.json();
    assert_eq!(body["model"], "gpt-4o-2024-08-06");
    assert_eq!(body["messages"][0], json!({"role": "system", "content": "Be brief."}));
    assert_eq!(body["messages"][1]["role"], "user");
    assert_eq!(body["max_tokens"], 64);

    let line = &gw.access_log(1)[0];
    assert_eq!(line["translation"], "messages->chat");
    assert_eq!(line["channel"], "oa");
}

#[tokio::test]
async fn messages_client_streams_a_tool_call_from_chat_upstream_and_sends_the_result_back() {
    let fake = fake();
    let (gw, key) = start(&fake);
    fake.script(Behavior {
        tool_call: Some(FakeToolCall { name: "get_weather".into(), arguments: r#"{"city":"Paris"}"#.into() }),
        usage: usage(40, 9),
        split: 3,
        ..Default::default()
    });
    let tools = json!([{"name": "get_weather", "description": "Weather", "input_schema": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]);
    let req = json!({"model": "gpt-4o-mini", "max_tokens": 100, "stream": true, "tools": tools,
        "messages": [{"role": "user", "content": "weather in Paris?"}]});
    let (s, h, b) = call(&gw, "/v1/messages", &key, &req).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(h["content-type"], "text/event-stream");
    let ev = events(&b);
    let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(names.last(), Some(&"message_stop"));
    let start = ev.iter().find(|(n, v)| n == "content_block_start" && v["content_block"]["type"] == "tool_use");
    let block = &start.expect("a tool_use block").1["content_block"];
    assert_eq!(block["name"], "get_weather");
    let tool_id = block["id"].as_str().unwrap().to_string();
    let args: String = ev
        .iter()
        .filter(|(n, v)| n == "content_block_delta" && v["delta"]["type"] == "input_json_delta")
        .map(|(_, v)| v["delta"]["partial_json"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(json(&args), json!({"city": "Paris"}));
    let delta = ev.iter().find(|(n, _)| n == "message_delta").expect("message_delta");
    assert_eq!(delta.1["delta"]["stop_reason"], "tool_use");
    assert_eq!(delta.1["usage"]["output_tokens"], 9);
    let up = last_upstream(&fake).json();
    assert_eq!(up["stream"], true);
    assert_eq!(up["stream_options"]["include_usage"], true);
    assert_eq!(up["tools"][0]["function"]["name"], "get_weather");

    // Round two: the tool result goes back as a `tool` message with the id.
    fake.script(Behavior { text: Some("Sunny, 21°C.".into()), usage: usage(60, 5), ..Default::default() });
    let req = json!({"model": "gpt-4o-mini", "max_tokens": 100, "tools": tools, "messages": [
        {"role": "user", "content": "weather in Paris?"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": tool_id, "name": "get_weather", "input": {"city": "Paris"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_id, "content": "sunny 21C"}]}
    ]});
    let (s, _, b) = call(&gw, "/v1/messages", &key, &req).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(json(&b)["content"][0]["text"], "Sunny, 21°C.");
    let up = last_upstream(&fake).json();
    let msgs = up["messages"].as_array().unwrap();
    assert_eq!(msgs[1]["tool_calls"][0]["id"], tool_id.as_str());
    assert_eq!(msgs[1]["tool_calls"][0]["function"]["name"], "get_weather");
    assert_eq!(json(msgs[1]["tool_calls"][0]["function"]["arguments"].as_str().unwrap()), json!({"city": "Paris"}));
    assert_eq!(msgs[2], json!({"role": "tool", "tool_call_id": tool_id, "content": "sunny 21C"}));
}

#[tokio::test]
async fn chat_client_on_anthropic_upstream_stream_and_not() {
    let fake = fake();
    let (gw, key) = start(&fake);
    fake.script(Behavior { text: Some("Hello there".into()), usage: usage(20, 4), ..Default::default() });
    let req = json!({"model": "claude-sonnet-4-6", "messages": [
        {"role": "system", "content": "You are terse."}, {"role": "user", "content": "hi"}]});
    let (s, _, b) = call(&gw, "/v1/chat/completions", &key, &req).await;
    assert_eq!(s, 200, "{b}");
    let v = json(&b);
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "claude-sonnet-4-6");
    assert_eq!(v["choices"][0]["message"]["content"], "Hello there");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["prompt_tokens"], 20);
    assert_eq!(v["usage"]["completion_tokens"], 4);
    let up = last_upstream(&fake);
    assert_eq!(up.path, "/v1/messages");
    assert_eq!(up.header("x-api-key"), Some("sk-ant-test"));
    assert_eq!(up.header("anthropic-version"), Some("2023-06-01"));
    let body = up.json();
    assert_eq!(body["system"], json!([{"type": "text", "text": "You are terse."}]));
    assert!(body["max_tokens"].as_u64().unwrap() > 0, "Anthropic requires max_tokens: {body}");

    // Streamed, with the usage chunk the client asked for.
    fake.script(Behavior { text: Some("Hello there".into()), usage: usage(20, 4), split: 2, ..Default::default() });
    let mut req = req;
    req["stream"] = json!(true);
    req["stream_options"] = json!({"include_usage": true});
    let (s, h, b) = call(&gw, "/v1/chat/completions", &key, &req).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(h["content-type"], "text/event-stream");
    assert!(b.trim_end().ends_with("data: [DONE]"), "{b}");
    let ev = events(&b);
    let text: String =
        ev.iter().filter_map(|(_, v)| v["choices"][0]["delta"]["content"].as_str().map(str::to_string)).collect();
    assert_eq!(text, "Hello there");
    assert!(ev.iter().any(|(_, v)| v["choices"][0]["finish_reason"] == "stop"));
    let last = &ev.last().unwrap().1;
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["prompt_tokens"], 20);
    assert_eq!(last["usage"]["completion_tokens"], 4);
    assert_eq!(gw.access_log(2)[1]["translation"], "chat->messages");
}

#[tokio::test]
async fn responses_client_function_call_round_trip_on_anthropic_upstream() {
    let fake = fake();
    let (gw, key) = start(&fake);
    fake.script(Behavior {
        tool_call: Some(FakeToolCall { name: "shell".into(), arguments: r#"{"command":["ls"]}"#.into() }),
        usage: usage(100, 12),
        ..Default::default()
    });
    let tools = json!([{"type": "function", "name": "shell", "description": "run",
        "parameters": {"type": "object", "properties": {"command": {"type": "array", "items": {"type": "string"}}}}}]);
    let req = json!({"model": "claude-sonnet-4-6", "stream": true, "instructions": "You are Codex.",
        "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "list files"}]}],
        "tools": tools, "store": false});
    let (s, _, b) = call(&gw, "/v1/responses", &key, &req).await;
    assert_eq!(s, 200, "{b}");
    let ev = events(&b);
    assert_eq!(ev.first().unwrap().0, "response.created");
    assert_eq!(ev.last().unwrap().0, "response.completed");
    let seq: Vec<u64> = ev.iter().map(|(_, v)| v["sequence_number"].as_u64().unwrap()).collect();
    assert_eq!(seq, (0..seq.len() as u64).collect::<Vec<_>>(), "consecutive sequence numbers");
    let done = &ev.last().unwrap().1["response"];
    assert_eq!(done["status"], "completed");
    assert_eq!(done["model"], "claude-sonnet-4-6");
    assert_eq!(done["usage"]["input_tokens"], 100);
    assert_eq!(done["usage"]["output_tokens"], 12);
    let call_item = done["output"].as_array().unwrap().iter().find(|i| i["type"] == "function_call").unwrap();
    assert_eq!(call_item["name"], "shell");
    assert_eq!(json(call_item["arguments"].as_str().unwrap()), json!({"command": ["ls"]}));
    let call_id = call_item["call_id"].as_str().unwrap().to_string();
    let up = last_upstream(&fake).json();
    assert_eq!(up["system"], json!([{"type": "text", "text": "You are Codex."}]));
    assert_eq!(up["tools"][0]["name"], "shell");
    assert_eq!(up["tools"][0]["input_schema"]["type"], "object");

    // The output goes back as a tool_result on the same id.
    fake.script(Behavior { text: Some("README.md".into()), usage: usage(130, 3), ..Default::default() });
    let req = json!({"model": "claude-sonnet-4-6", "instructions": "You are Codex.", "tools": tools, "input": [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "list files"}]},
        call_item,
        {"type": "function_call_output", "call_id": call_id, "output": "README.md\n"}
    ]});
    let (s, _, b) = call(&gw, "/v1/responses", &key, &req).await;
    assert_eq!(s, 200, "{b}");
    let v = json(&b);
    assert_eq!(v["object"], "response");
    let msg = v["output"].as_array().unwrap().iter().find(|i| i["type"] == "message").unwrap();
    assert_eq!(msg["content"][0]["text"], "README.md");
    let up = last_upstream(&fake).json();
    let msgs = up["messages"].as_array().unwrap();
    assert_eq!(msgs[1]["content"][0]["type"], "tool_use");
    let tool_use_id = msgs[1]["content"][0]["id"].as_str().unwrap();
    assert_eq!(msgs[2]["content"][0]["type"], "tool_result");
    assert_eq!(msgs[2]["content"][0]["tool_use_id"], tool_use_id);
    assert_eq!(gw.access_log(2)[1]["translation"], "responses->messages");
}

#[tokio::test]
async fn responses_client_on_chat_only_upstream_with_reasoning() {
    let fake = fake();
    fake.state.set_chat_only(true);
    let (gw, key) = start(&fake);
    fake.script(Behavior {
        reasoning: Some("think first".into()),
        text: Some("42".into()),
        usage: Some(FakeUsage { input: 30, output: 8, reasoning: 5, ..Default::default() }),
        ..Default::default()
    });
    let req = json!({"model": "deepseek-chat", "stream": true, "input": "meaning of life?"});
    let (s, _, b) = call(&gw, "/v1/responses", &key, &req).await;
    assert_eq!(s, 200, "{b}");
    let ev = events(&b);
    let done = &ev.last().unwrap().1["response"];
    assert_eq!(ev.last().unwrap().0, "response.completed");
    let kinds: Vec<&str> = done["output"].as_array().unwrap().iter().map(|i| i["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["reasoning", "message"]);
    assert_eq!(done["output"][1]["content"][0]["text"], "42");
    assert_eq!(done["usage"]["output_tokens_details"]["reasoning_tokens"], 5);
    let text: String = ev
        .iter()
        .filter(|(n, _)| n == "response.output_text.delta")
        .map(|(_, v)| v["delta"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(text, "42");
    let up = last_upstream(&fake);
    assert_eq!(up.path, "/v1/chat/completions");
    assert_eq!(up.header("authorization"), Some("Bearer sk-deepseek"));
    assert_eq!(up.json()["messages"], json!([{"role": "user", "content": "meaning of life?"}]));
}

#[tokio::test]
async fn upstream_refusal_reaches_the_client_in_its_own_shape() {
    let fake = fake();
    let (gw, key) = start(&fake);
    // Anthropic client, OpenAI upstream says 400 in OpenAI's shape.
    fake.script(Behavior {
        status: Some(400),
        body: Some(r#"{"error":{"message":"Invalid 'messages[1]': bad","type":"invalid_request_error","param":null,"code":null}}"#.into()),
        ..Default::default()
    });
    let req = json!({"model": "gpt-4o-mini", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}]});
    let (s, h, b) = call(&gw, "/v1/messages", &key, &req).await;
    assert_eq!(s, 400, "{b}");
    assert!(h.contains_key("x-request-id"));
    let v = json(&b);
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert_eq!(v["error"]["message"], "Invalid 'messages[1]': bad");

    // Chat client, Anthropic upstream says 400 in Anthropic's shape.
    fake.script(Behavior {
        status: Some(400),
        body: Some(
            r#"{"type":"error","error":{"type":"invalid_request_error","message":"messages: bad turn"}}"#.into(),
        ),
        ..Default::default()
    });
    let req = json!({"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": "x"}]});
    let (s, _, b) = call(&gw, "/v1/chat/completions", &key, &req).await;
    assert_eq!(s, 400, "{b}");
    let v = json(&b);
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert_eq!(v["error"]["message"], "messages: bad turn");

    // Every channel overloaded: the gateway's own 503, in the client's shape.
    fake.script(Behavior { status: Some(529), ..Default::default() });
    let (s, _, b) = call(&gw, "/v1/chat/completions", &key, &req).await;
    assert_eq!(s, 503, "{b}");
    assert_eq!(json(&b)["error"]["type"], "service_unavailable_error");
}

#[tokio::test]
async fn translated_traffic_bills_like_native_traffic() {
    let fake = fake();
    let conf = translation_conf(&fake)
        .replace("admin:\n  listen: \"off\"", &format!("admin:\n  listen: 127.0.0.1:0\n  token: {ADMIN_TOKEN}"));
    let gw = Gateway::start(&conf);
    let (s, b) = gw.admin("POST", "/admin/users", Some(json!({"email": "b@x.io", "credits": "10"}))).await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = gw.admin("POST", "/admin/users/b@x.io/keys", Some(json!({"name": "t"}))).await;
    assert_eq!(s, 201, "{b}");
    let key = json(&b)["key"].as_str().unwrap().to_string();
    let u = FakeUsage { input: 1_234, cached: 5_678, cache_write: 91, output: 2_345, reasoning: 1_001 };
    // Same hand-computed costs as the native cases in tests/billing.rs:
    // claude-sonnet-4-6 40922, gpt-4o-mini 2032 micro-credits.
    let cases = [
        (
            "/v1/chat/completions",
            json!({"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": "x"}]}),
            40922,
        ),
        (
            "/v1/chat/completions",
            json!({"model": "claude-sonnet-4-6", "stream": true, "messages": [{"role": "user", "content": "x"}]}),
            40922,
        ),
        ("/v1/responses", json!({"model": "claude-sonnet-4-6", "input": "x", "stream": true}), 40922),
        (
            "/v1/messages",
            json!({"model": "gpt-4o-mini", "max_tokens": 9, "stream": true, "messages": [{"role": "user", "content": "x"}]}),
            2032,
        ),
        (
            "/v1/messages",
            json!({"model": "gpt-4o-mini", "max_tokens": 9, "messages": [{"role": "user", "content": "x"}]}),
            2032,
        ),
    ];
    for (path, body, _) in &cases {
        fake.script(Behavior { usage: Some(u), ..Default::default() });
        let (s, _, b) = call(&gw, path, &key, body).await;
        assert_eq!(s, 200, "{path}: {b}");
    }
    let n = cases.len() as i64;
    assert_eq!(gw.wait_count("SELECT count(*) FROM usage", n), n);
    let costs: Vec<i64> = gw
        .db()
        .prepare("SELECT cost FROM usage ORDER BY id")
        .unwrap()
        .query_map((), |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(costs, cases.iter().map(|c| c.2).collect::<Vec<i64>>());
    let estimated: i64 = gw.db().query_row("SELECT sum(estimated) FROM usage", (), |r| r.get(0)).unwrap();
    assert_eq!(estimated, 0, "every translated stream carried the upstream's exact usage");
}

#[tokio::test]
async fn endpoints_without_a_translation() {
    let fake = fake();
    let (gw, key) = start(&fake);
    // count_tokens with no Anthropic channel for the model: a local estimate.
    let req =
        json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "count these few words please"}]});
    let (s, _, b) = call(&gw, "/v1/messages/count_tokens", &key, &req).await;
    assert_eq!(s, 200, "{b}");
    let n = json(&b)["input_tokens"].as_u64().unwrap();
    assert!((5..40).contains(&n), "estimate {n}");
    assert!(fake.requests().is_empty(), "no upstream call for a local estimate");
    // ...and natively where an Anthropic channel serves the model.
    let req = json!({"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": "hi"}]});
    let (s, _, _) = call(&gw, "/v1/messages/count_tokens", &key, &req).await;
    assert_eq!(s, 200);
    assert_eq!(last_upstream(&fake).path, "/v1/messages/count_tokens");

    let (s, _, b) = call(&gw, "/v1/embeddings", &key, &json!({"model": "claude-sonnet-4-6", "input": "x"})).await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(json(&b)["error"]["code"], "model_not_supported");
    let (s, _, b) =
        call(&gw, "/v1/responses/compact", &key, &json!({"model": "claude-sonnet-4-6", "input": "x"})).await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(json(&b)["error"]["code"], "unsupported_endpoint");
    assert_eq!(fake.requests().len(), 1);
}

#[tokio::test]
async fn native_channels_are_preferred_and_translation_takes_over_when_they_fail() {
    let fake = fake();
    // gpt-4o-mini on both the native `oa` and the chat-only `dc`.
    let conf = translation_conf(&fake).replace("models: [deepseek-chat]", "models: [deepseek-chat, gpt-4o-mini]");
    let (gw, keys) = Gateway::start_with_keys(&conf, &["n@x.io"]);
    let req = json!({"model": "gpt-4o-mini", "input": "hi"});
    let (s, _, b) = call(&gw, "/v1/responses", &keys[0], &req).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(last_upstream(&fake).path, "/v1/responses");
    // The native answer fails: the translating channel serves it.
    fake.script(Behavior { status: Some(500), ..Default::default() });
    let (s, _, b) = call(&gw, "/v1/responses", &keys[0], &req).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(json(&b)["object"], "response");
    let up = last_upstream(&fake);
    assert_eq!((up.path.as_str(), up.header("authorization")), ("/v1/chat/completions", Some("Bearer sk-deepseek")));
    let line = &gw.access_log(2)[1];
    assert_eq!(line["translation"], "responses->chat");
    assert_eq!(line["attempts"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn scripted_tool_call_goes_to_the_request_that_declares_tools() {
    // What scripts/clients-smoke relies on: a client's title request (no
    // tools) must not consume the tool call meant for its agent turn.
    let fake = fake();
    let (gw, key) = start(&fake);
    fake.script(Behavior {
        body_contains: Some("\"tools\"".into()),
        tool_call: Some(FakeToolCall { name: "get_weather".into(), arguments: "{}".into() }),
        ..Default::default()
    });
    let title = json!({"model": "gpt-4o-mini", "max_tokens": 20, "messages": [{"role": "user", "content": "title?"}]});
    let (s, _, b) = call(&gw, "/v1/messages", &key, &title).await;
    assert_eq!((s, json(&b)["stop_reason"].as_str()), (200, Some("end_turn")), "{b}");
    let mut agent = title.clone();
    agent["tools"] = json!([{"name": "get_weather", "input_schema": {"type": "object"}}]);
    let (s, _, b) = call(&gw, "/v1/messages", &key, &agent).await;
    assert_eq!((s, json(&b)["stop_reason"].as_str()), (200, Some("tool_use")), "{b}");
}
