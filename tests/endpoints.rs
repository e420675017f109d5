//! Every endpoint, streaming and not, through the real gateway binary against
//! the fake upstream: status codes, bodies, byte identity, usage records.

mod common;

use codex_proxy::fake_upstream::{Behavior, FakeUsage};
use common::*;
use serde_json::json;

#[tokio::test]
async fn chat_non_stream_and_usage_record() {
    let fake = fake();
    let (gw, keys) = Gateway::start_with_keys(&conf(&fake), &["u@x.io"]);
    fake.script(Behavior {
        usage: Some(FakeUsage { input: 1234, cached: 1000, cache_write: 0, output: 567, reasoning: 321 }),
        ..Default::default()
    });
    let (status, headers, body) = post(
        &gw,
        "/v1/chat/completions",
        &keys[0],
        &json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "ping"}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let v = json(&body);
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["usage"]["prompt_tokens"], 2234);
    assert!(headers["x-request-id"].to_str().unwrap().starts_with("req_"));
    let rid = headers["x-request-id"].to_str().unwrap().to_string();

    gw.wait_count("SELECT count(*) FROM usage", 1);
    let row: (String, String, String, i64, i64, i64, i64, i64, i64, i64, i64) = gw
        .db()
        .query_row(
            "SELECT request_id, model, channel, input_tokens, cached_tokens, cache_write_tokens, output_tokens,
                    reasoning_tokens, status, stream, cost FROM usage",
            (),
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                    r.get(8)?,
                    r.get(9)?,
                    r.get(10)?,
                ))
            },
        )
        .unwrap();
    // 1234*0.15 + 1000*0.075 + 567*0.60 = 185.1 + 75 + 340.2 = 600.3 -> 601 micro-credits.
    assert_eq!(row, (rid, "gpt-4o-mini".into(), "oa".into(), 1234, 1000, 0, 567, 321, 200, 0, 601));
}

#[tokio::test]
async fn chat_stream_without_include_usage_hides_the_usage_chunk_but_bills_it() {
    let fake = fake();
    let (gw, keys) = Gateway::start_with_keys(&conf(&fake), &["u@x.io"]);
    fake.script(Behavior {
        usage: Some(FakeUsage { input: 17, output: 9, ..Default::default() }),
        ..Default::default()
    });
    let (status, headers, body) = post(
        &gw,
        "/v1/chat/completions",
        &keys[0],
        &json!({"model": "gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 200);
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let events = sse_events(&body);
    assert_eq!(events.last().unwrap().1, "[DONE]");
    assert!(!body.contains("prompt_tokens"), "usage chunk leaked: {body}");
    assert!(events.iter().any(|(_, d)| d.contains("\"finish_reason\":\"stop\"")));
    // The gateway asked the upstream for usage.
    let sent = fake.requests().pop().unwrap().json();
    assert_eq!(sent["stream_options"]["include_usage"], true);
    gw.wait_count("SELECT count(*) FROM usage WHERE input_tokens = 17 AND output_tokens = 9 AND stream = 1", 1);
}

#[tokio::test]
async fn chat_stream_with_include_usage_is_byte_identical() {
    let fake = fake();
    let (gw, keys) = Gateway::start_with_keys(&conf(&fake), &["u@x.io"]);
    let raw = concat!(
        "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}],\"usage\":null}\n\n",
        "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"  odd\\u00e9  spacing \"},\"finish_reason\":null}],\"usage\":null}\n\n",
        ": a comment line\n\n",
        "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
        "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":41,\"completion_tokens\":7,\"total_tokens\":48,\"prompt_tokens_details\":{\"cached_tokens\":40}}}\n\n",
        "data: [DONE]\n\n"
    );
    fake.script(Behavior { body: Some(raw.into()), ..Default::default() });
    let req = json!({"model": "gpt-4o-mini", "stream": true, "stream_options": {"include_usage": true}, "messages": [{"role": "user", "content": "hi"}]});
    let (status, _, body) = post(&gw, "/v1/chat/completions", &keys[0], &req).await;
    assert_eq!(status, 200);
    assert_eq!(body, raw);
    // The request went upstream byte for byte (no rename, usage already asked).
    assert_eq!(fake.requests().pop().unwrap().body, serde_json::to_string(&req).unwrap());
    gw.wait_count("SELECT count(*) FROM usage WHERE input_tokens = 1 AND cached_tokens = 40 AND output_tokens = 7", 1);
}

#[tokio::test]
async fn request_bytes_pass_through_except_the_model_rename() {
    let fake = fake();
    let (gw, keys) = Gateway::start_with_keys(&conf(&fake), &["u@x.io"]);
    let raw = "{ \"model\" :\"gpt-4o\",\n  \"messages\":[{\"role\":\"user\",\"content\":\"\\u00e9t\u{e9} \\\"q\\\"\"}], \"x_unknown\": {\"a\": [1, 2.50]} }";
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(&keys[0])
        .header("content-type", "application/json")
        .header("openai-beta", "assistants=v2")
        .header("x-custom-client", "kept")
        .body(raw)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let got = fake.requests().pop().unwrap();
    assert_eq!(got.body, raw.replace("\"gpt-4o\"", "\"gpt-4o-2024-08-06\""));
    assert_eq!(got.header("authorization"), Some("Bearer sk-test-openai"));
    assert_eq!(got.header("openai-beta"), Some("assistants=v2"));
    assert_eq!(got.header("x-custom-client"), Some("kept"));
    assert_eq!(got.header("accept-encoding"), Some("identity"));
    assert!(!got.headers.iter().any(|(_, v)| v.contains(&keys[0])), "client key leaked upstream");
}

#[tokio::test]
async fn non_stream_response_bytes_are_identical() {
    let fake = fake();
    let (gw, keys) = Gateway::start_with_keys(&conf(&fake), &["u@x.io"]);
    let raw = "{\n  \"id\": \"chatcmpl-x\",  \"object\": \"chat.completion\", \"choices\": [{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"caf\\u00e9\"},\"finish_reason\":\"stop\"}],\n  \"usage\": {\"prompt_tokens\": 3, \"completion_tokens\": 2, \"total_tokens\": 5}\n}\n";
    fake.script(Behavior { body: Some(raw.into()), ..Default::default() });
    let (status, headers, body) =
        post(&gw, "/v1/chat/completions", &keys[0], &json!({"model": "gpt-4o-mini", "messages": []})).await;
    assert_eq!(status, 200);
    assert_eq!(body, raw);
    assert_eq!(headers["content-length"], raw.len().to_string().as_str());
}

#[tokio::test]
async fn responses_stream_and_non_stream() {
    let fake = fake();
    let (gw, keys) = Gateway::start_with_keys(&conf(&fake), &["u@x.io"]);
    fake.script(Behavior {
        usage: Some(FakeUsage { input: 300, cached: 128, output: 55, reasoning: 20, ..Default::default() }),
        ..Default::default()
    });
    let req = json!({"model": "gpt-5.1-codex", "input": "write a haiku", "stream": true});
    let (status, _, body) = post(&gw, "/v1/responses", &keys[0], &req).await;
    assert_eq!(status, 200);
    let events = sse_events(&body);
    assert_eq!(events.first().unwrap().0.as_deref(), Some("response.created"));
    assert_eq!(events.last().unwrap().0.as_deref(), Some("response.completed"));
    assert!(events.iter().any(|(n, _)| n.as_deref() == Some("response.output_item.done")));
    let (status, _, body) =
        post(&gw, "/v1/responses", &keys[0], &json!({"model": "gpt-5.1-codex", "input": "x"})).await;
    assert_eq!(status, 200);
    assert_eq!(json(&body)["object"], "response");
    gw.wait_count("SELECT count(*) FROM usage WHERE endpoint = 'responses'", 2);
    let (input, cached, output, reasoning): (i64, i64, i64, i64) = gw
        .db()
        .query_row(
            "SELECT input_tokens, cached_tokens, output_tokens, reasoning_tokens FROM usage WHERE stream = 1",
            (),
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert_eq!((input, cached, output, reasoning), (300, 128, 55, 20));
}

#[tokio::test]
async fn embeddings_default_model_and_base64() {
    let fake = fake();
    let (gw, keys) = Gateway::start_with_keys(&conf(&fake), &["u@x.io"]);
    let (status, _, body) =
        post(&gw, "/v1/embeddings", &keys[0], &json!({"input": ["a", "b"], "encoding_format": "base64"})).await;
    assert_eq!(status, 200, "{body}");
    let v = json(&body);
    assert_eq!(v["model"], "text-embedding-3-small");
    assert!(v["data"][1]["embedding"].is_string());
    let sent = fake.requests().pop().unwrap();
    assert_eq!(sent.body, r#"{"model":"text-embedding-3-small","input":["a","b"],"encoding_format":"base64"}"#);
    let (status, _, body) = post(
        &gw,
        "/v1/embeddings",
        &keys[0],
        &json!({"model": "text-embedding-3-small", "input": "x", "dimensions": 4}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(json(&body)["data"][0]["embedding"].as_array().unwrap().len(), 4);
    gw.wait_count("SELECT count(*) FROM usage WHERE endpoint = 'embeddings' AND model = 'text-embedding-3-small'", 2);
}

#[tokio::test]
async fn messages_stream_non_stream_and_count_tokens() {
    let fake = fake();
    let (gw, keys) = Gateway::start_with_keys(&conf(&fake), &["u@x.io"]);
    fake.script(Behavior {
        usage: Some(FakeUsage { input: 21, cached: 188, cache_write: 393, output: 77, reasoning: 0 }),
        ..Default::default()
    });
    let req = json!({"model": "claude-sonnet-4-6", "max_tokens": 100, "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    // Anthropic clients send x-api-key and ?beta=true.
    let r = client()
        .post(gw.url("/v1/messages?beta=true"))
        .header("x-api-key", &keys[0])
        .header("anthropic-version", "2023-06-01")
        .json(&req)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["request-id"], r.headers()["x-request-id"]);
    let body = r.text().await.unwrap();
    let names: Vec<_> = sse_events(&body).into_iter().filter_map(|(n, _)| n).collect();
    assert_eq!(names.first().map(String::as_str), Some("message_start"));
    assert_eq!(names.last().map(String::as_str), Some("message_stop"));
    let sent = fake.requests().pop().unwrap();
    assert_eq!(sent.path, "/v1/messages");
    assert_eq!(sent.header("x-api-key"), Some("sk-ant-test"));
    assert_eq!(sent.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(sent.header("authorization"), None);

    let (status, _, body) = post(
        &gw,
        "/v1/messages",
        &keys[0],
        &json!({"model": "claude-sonnet-4-6", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(json(&body)["type"], "message");
    let (status, _, body) = post(
        &gw,
        "/v1/messages/count_tokens",
        &keys[0],
        &json!({"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 200);
    assert!(json(&body)["input_tokens"].as_u64().unwrap() > 0);

    gw.wait_count("SELECT count(*) FROM usage", 3);
    let (i, cr, cw, o, cost): (i64, i64, i64, i64, i64) = gw
        .db()
        .query_row(
            "SELECT input_tokens, cached_tokens, cache_write_tokens, output_tokens, cost FROM usage WHERE stream = 1",
            (),
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .unwrap();
    // 21*3 + 188*0.3 + 393*3.75 + 77*15 = 63 + 56.4 + 1473.75 + 1155 = 2748.15 -> 2749.
    assert_eq!((i, cr, cw, o, cost), (21, 188, 393, 77, 2749));
}

#[tokio::test]
async fn models_in_both_shapes() {
    let fake = fake();
    let (gw, keys) = Gateway::start_with_keys(&conf(&fake), &["u@x.io"]);
    let (status, _, body) = get(&gw, "/v1/models", &keys[0]).await;
    assert_eq!(status, 200);
    let v = json(&body);
    assert_eq!(v["object"], "list");
    let ids: Vec<_> = v["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_string()).collect();
    // claude-haiku-4-5 is declared but no channel serves it.
    assert_eq!(ids, ["gpt-4o-mini", "gpt-4o", "gpt-5.1-codex", "text-embedding-3-small", "claude-sonnet-4-6"]);
    assert_eq!(v["data"][0]["owned_by"], "openai");
    let r = client()
        .get(gw.url("/v1/models"))
        .header("x-api-key", &keys[0])
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["has_more"], false);
    assert_eq!(v["data"][4]["type"], "model");
    assert_eq!(v["data"][4]["display_name"], "Claude Sonnet 4.6");
    assert_eq!(v["first_id"], "gpt-4o-mini");
    // The gateway answers itself: nothing went upstream.
    assert!(fake.requests().is_empty());
}

#[tokio::test]
async fn one_mebibyte_body_is_forwarded() {
    let fake = fake();
    let (gw, keys) = Gateway::start_with_keys(&conf(&fake), &["u@x.io"]);
    let big = "x".repeat(1 << 20);
    let req = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": big}]});
    let (status, _, body) = post(&gw, "/v1/chat/completions", &keys[0], &req).await;
    assert_eq!(status, 200, "{body}");
    let got = fake.requests().pop().unwrap();
    assert_eq!(got.body.len(), serde_json::to_string(&req).unwrap().len());
    assert!(got.body.len() > 1 << 20);
}

#[tokio::test]
async fn split_sse_frames_arrive_whole_and_in_order() {
    let fake = fake();
    let (gw, keys) = Gateway::start_with_keys(&conf(&fake), &["u@x.io"]);
    fake.script(Behavior { split: 3, text: Some("one two three four".into()), ..Default::default() });
    let req = json!({"model": "claude-sonnet-4-6", "max_tokens": 5, "stream": true, "messages": [{"role": "user", "content": "x"}]});
    let (status, _, body) = post(&gw, "/v1/messages", &keys[0], &req).await;
    assert_eq!(status, 200);
    let text: String = sse_events(&body)
        .iter()
        .filter(|(n, _)| n.as_deref() == Some("content_block_delta"))
        .map(|(_, d)| json(d)["delta"]["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(text, "one two three four");
}

#[tokio::test]
async fn streams_are_forwarded_as_they_arrive() {
    let fake = fake();
    let (gw, keys) = Gateway::start_with_keys(&conf(&fake), &["u@x.io"]);
    fake.script(Behavior { chunk_delay_ms: 150, text: Some("a b c d".into()), ..Default::default() });
    let req = json!({"model": "gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": "x"}]});
    let mut r = client().post(gw.url("/v1/chat/completions")).bearer_auth(&keys[0]).json(&req).send().await.unwrap();
    let start = std::time::Instant::now();
    let first = r.chunk().await.unwrap().unwrap();
    let first_at = start.elapsed();
    while r.chunk().await.unwrap().is_some() {}
    let total = start.elapsed();
    assert!(String::from_utf8_lossy(&first).starts_with("data: "));
    // 7 events 150 ms apart: the first must come long before the last.
    assert!(total.as_millis() >= 800, "total {total:?}");
    assert!(first_at.as_millis() < 400, "first chunk after {first_at:?}: buffered?");
}
