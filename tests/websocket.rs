//! Codex's WebSocket transport on `GET /v1/responses`, with a scripted
//! client: several turns on one connection, natively and translated, billed
//! and logged like HTTP requests; refusals as `error` events on a connection
//! that stays usable; a client that leaves mid-turn; the 426 switch.

mod common;

use codex_proxy::fake_upstream::{Behavior, FakeUsage};
use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

type Ws = WebSocketStream<TcpStream>;

async fn connect(gw: &Gateway, key: &str) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let mut req = format!("ws://{}/v1/responses", gw.addr).into_client_request().unwrap();
    req.headers_mut().insert("authorization", format!("Bearer {key}").parse().unwrap());
    req.headers_mut().insert("session_id", "sess-1".parse().unwrap());
    let tcp = TcpStream::connect(gw.addr).await.unwrap();
    tokio_tungstenite::client_async(req, tcp).await.map(|(ws, _)| ws)
}

/// Sends one `response.create` and reads messages until the turn ends
/// (`response.completed`, `response.failed` or `error`).
async fn turn(ws: &mut Ws, body: Value) -> Vec<Value> {
    let mut msg = body;
    msg["type"] = json!("response.create");
    ws.send(Message::text(msg.to_string())).await.unwrap();
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let m = tokio::time::timeout_at(deadline, ws.next()).await.expect("turn timed out").expect("socket closed");
        let Message::Text(t) = m.unwrap() else { continue };
        let v: Value = serde_json::from_str(t.as_str()).unwrap();
        let end = matches!(v["type"].as_str(), Some("response.completed" | "response.failed" | "error"));
        events.push(v);
        if end {
            return events;
        }
    }
}

fn types(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap_or("?")).collect()
}

fn text_of(events: &[Value]) -> String {
    events.iter().filter(|e| e["type"] == "response.output_text.delta").map(|e| e["delta"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn turns_on_one_connection_are_billed_and_logged_like_http() {
    let fake = fake();
    let (gw, keys) = Gateway::start_with_keys(&conf(&fake), &["ws@x.io"]);
    let mut ws = connect(&gw, &keys[0]).await.expect("upgrade");

    // Turn 1: a Responses channel, relayed event by event.
    fake.script(Behavior {
        usage: Some(FakeUsage { input: 300, cached: 128, output: 55, reasoning: 20, ..Default::default() }),
        text: Some("first answer".into()),
        ..Default::default()
    });
    let events = turn(&mut ws, json!({"model": "gpt-5.1-codex", "input": "one"})).await;
    let t = types(&events);
    assert_eq!(t.first(), Some(&"response.created"), "{t:?}");
    assert_eq!(t.last(), Some(&"response.completed"), "{t:?}");
    assert_eq!(text_of(&events), "first answer");
    assert_eq!(events.last().unwrap()["response"]["usage"]["input_tokens"], 428);

    // Turn 2 on the same connection: Claude, served only by an Anthropic
    // channel, translated into Responses events.
    fake.script(Behavior { text: Some("second answer".into()), ..Default::default() });
    let events = turn(&mut ws, json!({"model": "claude-sonnet-4-6", "input": "two"})).await;
    assert_eq!(types(&events).last(), Some(&"response.completed"), "{:?}", types(&events));
    assert_eq!(text_of(&events), "second answer");

    // The upstream got streaming Responses / Messages requests with the
    // turn's input, and the client's session header.
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 2);
    let first = json(&reqs[0].body);
    assert_eq!((reqs[0].path.as_str(), &first["stream"]), ("/v1/responses", &json!(true)));
    assert_eq!(first["input"], "one");
    assert!(first.get("type").is_none(), "the message type is not part of the request");
    assert!(reqs[0].headers.iter().any(|(k, v)| k == "session_id" && v == "sess-1"), "{:?}", reqs[0].headers);
    assert_eq!(reqs[1].path, "/v1/messages");

    ws.close(None).await.unwrap();
    // Each turn has its usage record and charge, like an HTTP request.
    gw.wait_count("SELECT count(*) FROM usage WHERE endpoint = 'responses' AND status = 200 AND stream = 1", 2);
    let (input, cached, output): (i64, i64, i64) = gw
        .db()
        .query_row(
            "SELECT input_tokens, cached_tokens, output_tokens FROM usage WHERE model = 'gpt-5.1-codex'",
            (),
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!((input, cached, output), (300, 128, 55));
    // Access log: a line per turn (the client's address, the turn's path) and
    // one for the connection itself when it closed.
    let lines = gw.access_log(3);
    let turns: Vec<&Value> = lines.iter().filter(|l| l["method"] == "POST").collect();
    assert_eq!(turns.len(), 2, "{lines:?}");
    assert!(turns.iter().all(|l| l["client_ip"] == "127.0.0.1" && l["path"] == "/v1/responses" && l["status"] == 200));
    assert_eq!(turns[1]["translation"], "responses->messages");
    let conn = lines.iter().find(|l| l["method"] == "GET").expect("the connection's line");
    assert_eq!(conn["status"], 101);
}

#[tokio::test]
async fn a_warm_up_is_answered_at_once_without_an_upstream_call_or_a_charge() {
    let fake = fake();
    let (gw, keys) = Gateway::start_with_keys(&conf(&fake), &["ws@x.io"]);
    let mut ws = connect(&gw, &keys[0]).await.unwrap();
    let events = turn(&mut ws, json!({"model": "gpt-5.1-codex", "input": [], "generate": false})).await;
    assert_eq!(types(&events), ["response.created", "response.completed"]);
    let done = &events[1]["response"];
    assert_eq!((done["status"].as_str(), done["output"].as_array().map(Vec::len)), (Some("completed"), Some(0)));
    assert!(done["id"].as_str().unwrap().starts_with("resp_"));
    // The real turn after it goes upstream, without the flag.
    let events = turn(&mut ws, json!({"model": "gpt-5.1-codex", "input": "go", "generate": true})).await;
    assert_eq!(types(&events).last(), Some(&"response.completed"));
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 1, "only the real turn reached the upstream");
    assert!(json(&reqs[0].body).get("generate").is_none());
    ws.close(None).await.unwrap();
    gw.wait_count("SELECT count(*) FROM usage", 1);
}

#[tokio::test]
async fn refusals_are_error_events_and_the_connection_stays_usable() {
    let fake = fake();
    let (gw, keys) = Gateway::start_with_keys(&conf(&fake), &["ws@x.io"]);

    // A bad key is refused before the upgrade, with the HTTP status.
    match connect(&gw, "codex_0000000000000000000000000000000000").await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 401),
        other => panic!("expected 401, got {:?}", other.map(|_| ())),
    }

    let mut ws = connect(&gw, &keys[0]).await.unwrap();
    // An unknown model: the same status and error body HTTP gives.
    let body = json!({"model": "no-such-model", "input": "x", "stream": true});
    let (status, _, http_body) = post(&gw, "/v1/responses", &keys[0], &body).await;
    let events = turn(&mut ws, body).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["type"], "error");
    assert_eq!(events[0]["status"], status);
    assert_eq!(events[0]["error"], json(&http_body)["error"]);

    // A message that is not a response.create.
    ws.send(Message::text(r#"{"type":"session.update"}"#)).await.unwrap();
    let Some(Ok(Message::Text(t))) = ws.next().await else { panic!("no answer") };
    let v: Value = serde_json::from_str(t.as_str()).unwrap();
    assert_eq!((v["type"].as_str(), v["status"].as_u64()), (Some("error"), Some(400)));
    assert!(v["error"]["message"].as_str().unwrap().contains("session.update"), "{v}");

    // Still usable.
    let events = turn(&mut ws, json!({"model": "gpt-5.1-codex", "input": "ok"})).await;
    assert_eq!(types(&events).last(), Some(&"response.completed"));
    assert!(fake.requests().iter().all(|r| !r.body.contains("no-such-model")));
}

#[tokio::test]
async fn a_client_that_leaves_mid_turn_cancels_it_and_pays_what_it_used() {
    let fake = fake();
    let (gw, keys) = Gateway::start_with_keys(&conf(&fake), &["ws@x.io"]);
    let mut ws = connect(&gw, &keys[0]).await.unwrap();
    fake.script(Behavior {
        chunk_delay_ms: 300,
        text: Some("a b c d e f g h i j k l m n o p".into()),
        ..Default::default()
    });
    let mut msg = json!({"model": "gpt-5.1-codex", "input": "slow"});
    msg["type"] = json!("response.create");
    ws.send(Message::text(msg.to_string())).await.unwrap();
    // Read until the first text arrives, then drop the connection.
    loop {
        let Some(Ok(Message::Text(t))) = ws.next().await else { panic!("closed early") };
        if t.as_str().contains("output_text.delta") {
            break;
        }
    }
    drop(ws);
    gw.wait_count("SELECT count(*) FROM usage WHERE endpoint = 'responses'", 1);
    let line = gw.access_log(2).into_iter().find(|l| l["method"] == "POST").unwrap();
    assert_eq!(line["error"], "client_disconnected", "{line}");
    assert_eq!(line["estimated"], true, "billed from what was streamed: {line}");
}

#[tokio::test]
async fn the_transport_can_be_switched_off_426() {
    let fake = fake();
    let yaml = format!("{}routing:\n  responses_websocket: false\n", conf(&fake));
    let (gw, keys) = Gateway::start_with_keys(&yaml, &["ws@x.io"]);
    match connect(&gw, &keys[0]).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 426);
            let body: Value = serde_json::from_slice(resp.body().as_deref().unwrap_or_default()).unwrap();
            assert_eq!(body["error"]["code"], "websocket_not_supported");
        }
        other => panic!("expected 426, got {:?}", other.map(|_| ())),
    }
}
