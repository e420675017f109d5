//! Response bodies in the real OpenAI (Chat, Responses, Embeddings) and
//! Anthropic (Messages) wire formats, streams included, with realistic usage.

use super::script::{FakeToolCall, FakeUsage};
use base64::Engine;
use serde_json::{json, Value};

/// Everything one answer needs, whatever the API.
#[derive(Debug, Clone)]
pub struct Reply {
    pub id: String,
    pub created: u64,
    pub model: String,
    pub text: String,
    pub reasoning: Option<String>,
    pub tool_call: Option<FakeToolCall>,
    pub usage: FakeUsage,
    /// Chat streams: whether the client asked for the usage chunk.
    pub include_usage: bool,
}

/// Splits text into word-sized deltas (each keeps its trailing space).
pub fn pieces(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for ch in text.chars() {
        cur.push(ch);
        if ch == ' ' {
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn sse_data(v: &Value) -> String {
    format!("data: {v}\n\n")
}

fn sse_event(name: &str, v: &Value) -> String {
    format!("event: {name}\ndata: {v}\n\n")
}

fn call_id(r: &Reply) -> String {
    format!("call_{}", r.id)
}

// ---------------------------------------------------------------- chat

fn chat_usage(u: &FakeUsage) -> Value {
    let prompt = u.input + u.cached + u.cache_write;
    let mut details = json!({"cached_tokens": u.cached, "audio_tokens": 0});
    if u.cache_write > 0 {
        details["cache_write_tokens"] = json!(u.cache_write);
    }
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": u.output,
        "total_tokens": prompt + u.output,
        "prompt_tokens_details": details,
        "completion_tokens_details": {"reasoning_tokens": u.reasoning, "audio_tokens": 0,
            "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
    })
}

pub fn chat_json(r: &Reply) -> Value {
    let (message, finish) = match &r.tool_call {
        Some(tc) => (
            json!({"role": "assistant", "content": null, "refusal": null, "annotations": [],
                "tool_calls": [{"id": call_id(r), "type": "function",
                    "function": {"name": tc.name, "arguments": tc.arguments}}]}),
            "tool_calls",
        ),
        None => {
            let mut m = json!({"role": "assistant", "content": r.text, "refusal": null, "annotations": []});
            if let Some(reasoning) = &r.reasoning {
                m["reasoning_content"] = json!(reasoning);
            }
            (m, "stop")
        }
    };
    json!({
        "id": format!("chatcmpl-{}", r.id),
        "object": "chat.completion",
        "created": r.created,
        "model": r.model,
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
        "usage": chat_usage(&r.usage),
        "service_tier": "default",
        "system_fingerprint": "fp_fake",
    })
}

pub fn chat_events(r: &Reply) -> Vec<String> {
    let chunk = |delta: Value, finish: Value| {
        let mut c = json!({
            "id": format!("chatcmpl-{}", r.id), "object": "chat.completion.chunk", "created": r.created,
            "model": r.model, "service_tier": "default", "system_fingerprint": "fp_fake",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        });
        if r.include_usage {
            c["usage"] = Value::Null;
        }
        sse_data(&c)
    };
    let mut out = vec![chunk(json!({"role": "assistant", "content": "", "refusal": null}), Value::Null)];
    if let Some(reasoning) = &r.reasoning {
        for p in pieces(reasoning) {
            out.push(chunk(json!({"reasoning_content": p}), Value::Null));
        }
    }
    let finish = match &r.tool_call {
        Some(tc) => {
            out.push(chunk(
                json!({"tool_calls": [{"index": 0, "id": call_id(r), "type": "function",
                    "function": {"name": tc.name, "arguments": ""}}]}),
                Value::Null,
            ));
            let args: Vec<char> = tc.arguments.chars().collect();
            for part in args.chunks(8) {
                let s: String = part.iter().collect();
                out.push(chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": s}}]}), Value::Null));
            }
            "tool_calls"
        }
        None => {
            for p in pieces(&r.text) {
                out.push(chunk(json!({"content": p}), Value::Null));
            }
            "stop"
        }
    };
    out.push(chunk(json!({}), json!(finish)));
    if r.include_usage {
        out.push(sse_data(&json!({
            "id": format!("chatcmpl-{}", r.id), "object": "chat.completion.chunk", "created": r.created,
            "model": r.model, "service_tier": "default", "system_fingerprint": "fp_fake",
            "choices": [], "usage": chat_usage(&r.usage),
        })));
    }
    out.push("data: [DONE]\n\n".to_string());
    out
}

// ---------------------------------------------------------------- responses

fn responses_usage(u: &FakeUsage) -> Value {
    let input = u.input + u.cached + u.cache_write;
    json!({
        "input_tokens": input,
        "input_tokens_details": {"cached_tokens": u.cached},
        "output_tokens": u.output,
        "output_tokens_details": {"reasoning_tokens": u.reasoning},
        "total_tokens": input + u.output,
    })
}

fn responses_output(r: &Reply) -> Vec<Value> {
    let mut items = Vec::new();
    if let Some(reasoning) = &r.reasoning {
        items.push(json!({"type": "reasoning", "id": format!("rs_{}", r.id),
            "summary": [{"type": "summary_text", "text": reasoning}],
            "encrypted_content": format!("enc_{}", r.id)}));
    }
    match &r.tool_call {
        Some(tc) => items.push(json!({"type": "function_call", "id": format!("fc_{}", r.id), "call_id": call_id(r),
            "name": tc.name, "arguments": tc.arguments, "status": "completed"})),
        None => items.push(json!({"type": "message", "id": format!("msg_{}", r.id), "status": "completed",
            "role": "assistant", "content": [{"type": "output_text", "text": r.text, "annotations": [], "logprobs": []}]})),
    }
    items
}

fn response_object(r: &Reply, status: &str, output: Vec<Value>, usage: Value) -> Value {
    json!({
        "id": format!("resp_{}", r.id), "object": "response", "created_at": r.created, "status": status,
        "error": null, "incomplete_details": null, "instructions": null, "max_output_tokens": null,
        "model": r.model, "output": output, "parallel_tool_calls": true, "previous_response_id": null,
        "reasoning": {"effort": null, "summary": null}, "store": false, "temperature": 1.0,
        "text": {"format": {"type": "text"}}, "tool_choice": "auto", "tools": [], "top_p": 1.0,
        "truncation": "disabled", "usage": usage, "user": null, "metadata": {},
    })
}

pub fn responses_json(r: &Reply) -> Value {
    response_object(r, "completed", responses_output(r), responses_usage(&r.usage))
}

pub fn responses_events(r: &Reply) -> Vec<String> {
    let mut seq = 0u64;
    let mut out = Vec::new();
    let mut ev = |name: &str, mut v: Value| {
        v["type"] = json!(name);
        v["sequence_number"] = json!(seq);
        seq += 1;
        out.push(sse_event(name, &v));
    };
    ev("response.created", json!({"response": response_object(r, "in_progress", vec![], Value::Null)}));
    ev("response.in_progress", json!({"response": response_object(r, "in_progress", vec![], Value::Null)}));
    let items = responses_output(r);
    for (idx, item) in items.iter().enumerate() {
        let id = item["id"].clone();
        match item["type"].as_str() {
            Some("reasoning") => {
                ev(
                    "response.output_item.added",
                    json!({"output_index": idx,
                    "item": {"type": "reasoning", "id": id, "summary": []}}),
                );
                let text = item["summary"][0]["text"].as_str().unwrap_or_default();
                ev(
                    "response.reasoning_summary_part.added",
                    json!({"item_id": id, "output_index": idx,
                    "summary_index": 0, "part": {"type": "summary_text", "text": ""}}),
                );
                for p in pieces(text) {
                    ev(
                        "response.reasoning_summary_text.delta",
                        json!({"item_id": id, "output_index": idx,
                        "summary_index": 0, "delta": p}),
                    );
                }
                ev(
                    "response.reasoning_summary_text.done",
                    json!({"item_id": id, "output_index": idx,
                    "summary_index": 0, "text": text}),
                );
                ev(
                    "response.reasoning_summary_part.done",
                    json!({"item_id": id, "output_index": idx,
                    "summary_index": 0, "part": {"type": "summary_text", "text": text}}),
                );
            }
            Some("function_call") => {
                let mut added = item.clone();
                added["arguments"] = json!("");
                added["status"] = json!("in_progress");
                ev("response.output_item.added", json!({"output_index": idx, "item": added}));
                let args: Vec<char> = item["arguments"].as_str().unwrap_or_default().chars().collect();
                for part in args.chunks(8) {
                    let s: String = part.iter().collect();
                    ev(
                        "response.function_call_arguments.delta",
                        json!({"item_id": id, "output_index": idx, "delta": s}),
                    );
                }
                ev(
                    "response.function_call_arguments.done",
                    json!({"item_id": id, "output_index": idx,
                    "arguments": item["arguments"]}),
                );
            }
            _ => {
                ev(
                    "response.output_item.added",
                    json!({"output_index": idx, "item": {"type": "message", "id": id,
                    "status": "in_progress", "role": "assistant", "content": []}}),
                );
                ev(
                    "response.content_part.added",
                    json!({"item_id": id, "output_index": idx, "content_index": 0,
                    "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}}),
                );
                for p in pieces(&r.text) {
                    ev(
                        "response.output_text.delta",
                        json!({"item_id": id, "output_index": idx, "content_index": 0,
                        "delta": p, "logprobs": []}),
                    );
                }
                ev(
                    "response.output_text.done",
                    json!({"item_id": id, "output_index": idx, "content_index": 0,
                    "text": r.text, "logprobs": []}),
                );
                ev(
                    "response.content_part.done",
                    json!({"item_id": id, "output_index": idx, "content_index": 0,
                    "part": {"type": "output_text", "text": r.text, "annotations": [], "logprobs": []}}),
                );
            }
        }
        ev("response.output_item.done", json!({"output_index": idx, "item": item}));
    }
    ev("response.completed", json!({"response": responses_json(r)}));
    out
}

// ---------------------------------------------------------------- anthropic

fn anthropic_usage(u: &FakeUsage, output: u64) -> Value {
    json!({
        "input_tokens": u.input,
        "cache_creation_input_tokens": u.cache_write,
        "cache_read_input_tokens": u.cached,
        "output_tokens": output,
        "service_tier": "standard",
    })
}

fn anthropic_content(r: &Reply) -> (Vec<Value>, &'static str) {
    let mut blocks = Vec::new();
    if let Some(thinking) = &r.reasoning {
        blocks.push(json!({"type": "thinking", "thinking": thinking, "signature": format!("sig_{}", r.id)}));
    }
    match &r.tool_call {
        Some(tc) => {
            let input: Value = serde_json::from_str(&tc.arguments).unwrap_or(json!({}));
            blocks.push(json!({"type": "tool_use", "id": format!("toolu_{}", r.id), "name": tc.name, "input": input}));
            (blocks, "tool_use")
        }
        None => {
            blocks.push(json!({"type": "text", "text": r.text}));
            (blocks, "end_turn")
        }
    }
}

pub fn messages_json(r: &Reply) -> Value {
    let (content, stop) = anthropic_content(r);
    json!({
        "id": format!("msg_{}", r.id), "type": "message", "role": "assistant", "model": r.model,
        "content": content, "stop_reason": stop, "stop_sequence": null,
        "usage": anthropic_usage(&r.usage, r.usage.output),
    })
}

pub fn messages_events(r: &Reply) -> Vec<String> {
    let (content, stop) = anthropic_content(r);
    let mut out = vec![sse_event(
        "message_start",
        &json!({"type": "message_start", "message": {
        "id": format!("msg_{}", r.id), "type": "message", "role": "assistant", "model": r.model,
        "content": [], "stop_reason": null, "stop_sequence": null,
        "usage": anthropic_usage(&r.usage, 1)}}),
    )];
    for (i, block) in content.iter().enumerate() {
        let (start, deltas): (Value, Vec<Value>) = match block["type"].as_str() {
            Some("thinking") => (
                json!({"type": "thinking", "thinking": "", "signature": ""}),
                pieces(block["thinking"].as_str().unwrap_or_default())
                    .into_iter()
                    .map(|p| json!({"type": "thinking_delta", "thinking": p}))
                    .chain(std::iter::once(json!({"type": "signature_delta", "signature": block["signature"]})))
                    .collect(),
            ),
            Some("tool_use") => {
                let args = block["input"].to_string();
                let chars: Vec<char> = args.chars().collect();
                (
                    json!({"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}),
                    chars
                        .chunks(8)
                        .map(|c| json!({"type": "input_json_delta", "partial_json": c.iter().collect::<String>()}))
                        .collect(),
                )
            }
            _ => (
                json!({"type": "text", "text": ""}),
                pieces(&r.text).into_iter().map(|p| json!({"type": "text_delta", "text": p})).collect(),
            ),
        };
        out.push(sse_event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": i, "content_block": start}),
        ));
        if i == 0 {
            out.push(sse_event("ping", &json!({"type": "ping"})));
        }
        for d in deltas {
            out.push(sse_event("content_block_delta", &json!({"type": "content_block_delta", "index": i, "delta": d})));
        }
        out.push(sse_event("content_block_stop", &json!({"type": "content_block_stop", "index": i})));
    }
    out.push(sse_event(
        "message_delta",
        &json!({"type": "message_delta",
        "delta": {"stop_reason": stop, "stop_sequence": null},
        "usage": {"output_tokens": r.usage.output}}),
    ));
    out.push(sse_event("message_stop", &json!({"type": "message_stop"})));
    out
}

// ---------------------------------------------------------------- embeddings

/// A deterministic unit vector for `text`.
fn vector(text: &str, dims: usize) -> Vec<f32> {
    let mut state: u64 = 0xcbf29ce484222325;
    for b in text.bytes() {
        state = (state ^ b as u64).wrapping_mul(0x100000001b3);
    }
    let mut v: Vec<f32> = (0..dims)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        })
        .collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(f32::EPSILON);
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

pub fn embeddings_json(model: &str, inputs: &[String], dims: usize, base64: bool, prompt_tokens: u64) -> Value {
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let v = vector(text, dims);
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    json!({"object": "list", "data": data, "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}})
}

// ---------------------------------------------------------------- errors

pub fn openai_error(status: u16, message: &str) -> Value {
    let (ty, code) = match status {
        400 => ("invalid_request_error", Value::Null),
        401 => ("invalid_request_error", json!("invalid_api_key")),
        404 => ("invalid_request_error", json!("model_not_found")),
        429 => ("rate_limit_error", json!("rate_limit_exceeded")),
        _ => ("server_error", Value::Null),
    };
    json!({"error": {"message": message, "type": ty, "param": null, "code": code}})
}

pub fn anthropic_error(status: u16, message: &str) -> Value {
    let ty = match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        529 | 503 => "overloaded_error",
        _ => "api_error",
    };
    json!({"type": "error", "error": {"type": ty, "message": message}, "request_id": "req_fake"})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply() -> Reply {
        Reply {
            id: "x1".into(),
            created: 1,
            model: "m".into(),
            text: "Hello there world".into(),
            reasoning: None,
            tool_call: None,
            usage: FakeUsage { input: 10, cached: 5, cache_write: 0, output: 3, reasoning: 0 },
            include_usage: true,
        }
    }

    #[test]
    fn chat_stream_ends_with_usage_and_done() {
        let ev = chat_events(&reply());
        assert_eq!(ev.last().unwrap(), "data: [DONE]\n\n");
        assert!(ev[ev.len() - 2].contains("\"prompt_tokens\":15"));
        assert_eq!(pieces("Hello there world"), ["Hello ", "there ", "world"]);
    }

    #[test]
    fn anthropic_stream_shape() {
        let mut r = reply();
        r.tool_call = Some(FakeToolCall { name: "get_weather".into(), arguments: "{\"city\":\"Paris\"}".into() });
        let ev = messages_events(&r);
        assert!(ev[0].starts_with("event: message_start\n"));
        assert!(ev.iter().any(|e| e.contains("input_json_delta")));
        assert!(ev.last().unwrap().starts_with("event: message_stop"));
        assert_eq!(messages_json(&r)["stop_reason"], "tool_use");
    }

    #[test]
    fn responses_sequence_numbers_are_consecutive() {
        let ev = responses_events(&reply());
        for (i, e) in ev.iter().enumerate() {
            assert!(e.contains(&format!("\"sequence_number\":{i}")), "{e}");
        }
        assert!(ev.last().unwrap().starts_with("event: response.completed"));
    }

    #[test]
    fn embeddings_base64_decodes_to_floats() {
        let v = embeddings_json("e", &["a".into()], 8, true, 1);
        let b = base64::engine::general_purpose::STANDARD.decode(v["data"][0]["embedding"].as_str().unwrap()).unwrap();
        assert_eq!(b.len(), 32);
    }
}
