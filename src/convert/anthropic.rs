//! The Anthropic Messages side of translations: requests to and from the IR,
//! upstream message events into IR events, and IR events out as Anthropic
//! events or a message (protocol-mapping §2, §3, §5).

use super::context::Ctx;
use super::ir::*;
use super::support::{arguments_object, parse_sig, sanitize_tool_id};
use crate::error::GatewayError;
use crate::sse::{self, Splitter};
use crate::usage::Usage;
use bytes::BytesMut;
use serde_json::{json, Map, Value};

// ---------------------------------------------------------------- request in

fn is_server_tool(t: &Value) -> bool {
    let ty = t.get("type").and_then(Value::as_str).unwrap_or("custom");
    ["web_search", "web_fetch", "code_execution", "bash_", "text_editor_", "computer_", "memory", "tool_search"]
        .iter()
        .any(|p| ty.starts_with(p))
}

/// Content parts of a block list (or string) of an Anthropic message.
fn parse_blocks(content: &Value) -> Vec<Part> {
    let mut out = Vec::new();
    let blocks = match content {
        Value::String(s) => {
            if !s.trim().is_empty() {
                out.push(Part::Text(s.clone()));
            }
            return out;
        }
        Value::Array(a) => a,
        _ => return out,
    };
    for b in blocks {
        let s = |k: &str| b.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        match b.get("type").and_then(Value::as_str).unwrap_or("") {
            "text" if !s("text").trim().is_empty() => out.push(Part::Text(s("text"))),
            "image" => {
                let src = &b["source"];
                match src.get("type").and_then(Value::as_str) {
                    Some("url") => out.push(Part::Image {
                        url: src["url"].as_str().map(str::to_string),
                        media_type: None,
                        data: None,
                    }),
                    _ => out.push(Part::Image {
                        url: None,
                        media_type: src["media_type"].as_str().map(str::to_string),
                        data: src["data"].as_str().map(str::to_string),
                    }),
                }
            }
            "document" => {
                let src = &b["source"];
                match src.get("type").and_then(Value::as_str) {
                    Some("text") => out.push(Part::Text(src["data"].as_str().unwrap_or("").to_string())),
                    _ => out.push(Part::File {
                        media_type: src["media_type"].as_str().unwrap_or("application/pdf").to_string(),
                        data: src["data"].as_str().unwrap_or("").to_string(),
                        filename: b.get("title").and_then(Value::as_str).map(str::to_string),
                    }),
                }
            }
            "tool_use" => out.push(Part::ToolCall { id: s("id"), name: s("name"), arguments: b["input"].to_string() }),
            "tool_result" => out.push(Part::ToolResult {
                call_id: s("tool_use_id"),
                content: parse_blocks(b.get("content").unwrap_or(&Value::Null)),
                is_error: b.get("is_error").and_then(Value::as_bool).unwrap_or(false),
            }),
            "thinking" => out.push(Part::Reasoning { text: s("thinking"), sig: parse_sig(&s("signature")) }),
            "redacted_thinking" => out.push(Part::RedactedReasoning(s("data"))),
            _ => {}
        }
    }
    out
}

/// An Anthropic Messages request as IR.
pub fn parse_request(v: &Value) -> Result<Request, GatewayError> {
    let mut r = Request::default();
    // Claude Code's attribution block is a fingerprint for Anthropic only.
    let sys_block_ok = |t: &str| !t.trim().is_empty() && !t.starts_with("x-anthropic-billing-header:");
    match v.get("system") {
        Some(Value::String(s)) if sys_block_ok(s) => r.system.push(s.clone()),
        Some(Value::Array(blocks)) => {
            for b in blocks {
                if let Some(t) = b.get("text").and_then(Value::as_str).filter(|t| sys_block_ok(t)) {
                    r.system.push(t.to_string());
                }
            }
        }
        _ => {}
    }
    for m in v.get("messages").and_then(Value::as_array).into_iter().flatten() {
        let role = match m.get("role").and_then(Value::as_str) {
            Some("assistant") => Role::Assistant,
            Some("system") => Role::System,
            _ => Role::User,
        };
        let parts = parse_blocks(m.get("content").unwrap_or(&Value::Null));
        r.turns.push(Turn { role, parts });
    }
    for t in v.get("tools").and_then(Value::as_array).into_iter().flatten().filter(|t| !is_server_tool(t)) {
        r.tools.push(Tool {
            name: t["name"].as_str().unwrap_or("").to_string(),
            description: t.get("description").and_then(Value::as_str).map(str::to_string),
            schema: t.get("input_schema").cloned().unwrap_or_else(|| json!({"type": "object"})),
            custom: false,
        });
    }
    if let Some(tc) = v.get("tool_choice") {
        r.tool_choice = match tc.get("type").and_then(Value::as_str) {
            Some("any") => Some(ToolChoice::Required),
            Some("none") => Some(ToolChoice::None),
            Some("tool") => tc.get("name").and_then(Value::as_str).map(|n| ToolChoice::Named(n.to_string())),
            Some("auto") => Some(ToolChoice::Auto),
            _ => None,
        };
        if tc.get("disable_parallel_tool_use").and_then(Value::as_bool) == Some(true) {
            r.parallel_tool_calls = Some(false);
        }
    }
    let effort = v.pointer("/output_config/effort").and_then(Value::as_str).map(str::to_string);
    match v.pointer("/thinking/type").and_then(Value::as_str) {
        Some("enabled") => {
            r.reasoning = Reasoning {
                effort: None,
                budget_tokens: v.pointer("/thinking/budget_tokens").and_then(Value::as_u64),
                enabled: Some(true),
            }
        }
        Some("adaptive") => {
            r.reasoning = Reasoning { effort: effort.or(Some("high".into())), budget_tokens: None, enabled: Some(true) }
        }
        Some("disabled") => r.reasoning = Reasoning { effort: None, budget_tokens: None, enabled: Some(false) },
        _ => {}
    }
    let format = v.pointer("/output_config/format").or_else(|| v.get("output_format"));
    if let Some(schema) =
        format.filter(|f| f.get("type").and_then(Value::as_str) == Some("json_schema")).and_then(|f| f.get("schema"))
    {
        r.response_format = Some(json!({"name": "structured_output", "schema": schema, "strict": true}));
    }
    r.max_output = v.get("max_tokens").and_then(Value::as_u64);
    r.temperature = v.get("temperature").and_then(Value::as_f64);
    r.top_p = v.get("top_p").and_then(Value::as_f64);
    r.top_k = v.get("top_k").and_then(Value::as_u64);
    r.stop = v
        .get("stop_sequences")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    r.stream = v.get("stream").and_then(Value::as_bool).unwrap_or(false);
    r.user = v.pointer("/metadata/user_id").and_then(Value::as_str).map(str::to_string);
    Ok(r)
}

// ---------------------------------------------------------------- request out

const DEFAULT_MAX_TOKENS: u64 = 32_000;

/// Budget thinking for a reasoning effort (§3.3).
fn budget_for(effort: &str) -> Option<u64> {
    match effort {
        "none" => None,
        "minimal" | "low" => Some(1024),
        "medium" => Some(8192),
        "high" => Some(24_576),
        _ => Some(32_768),
    }
}

fn image_block(
    url: &Option<String>,
    media_type: &Option<String>,
    data: &Option<String>,
) -> Result<Value, GatewayError> {
    if let (Some(mt), Some(d)) = (media_type, data) {
        if !["image/jpeg", "image/png", "image/gif", "image/webp"].contains(&mt.as_str()) {
            return Err(GatewayError::Unsupported {
                param: "messages",
                code: "unsupported_media_type",
                message: format!("image type {mt} is not supported by this model (jpeg, png, gif, webp)"),
            });
        }
        return Ok(json!({"type": "image", "source": {"type": "base64", "media_type": mt, "data": d}}));
    }
    Ok(json!({"type": "image", "source": {"type": "url", "url": url.clone().unwrap_or_default()}}))
}

fn content_blocks(parts: &[Part], ctx: &Ctx) -> Result<Vec<Value>, GatewayError> {
    let mut out = Vec::new();
    for p in parts {
        match p {
            Part::Text(t) if !t.trim().is_empty() => out.push(json!({"type": "text", "text": t})),
            Part::Image { url, media_type, data } => out.push(image_block(url, media_type, data)?),
            Part::File { media_type, data, .. } => out.push(
                json!({"type": "document", "source": {"type": "base64", "media_type": media_type, "data": data}}),
            ),
            Part::ToolResult { call_id, content, is_error } => {
                let blocks = content_blocks(content, ctx)?;
                let content = match blocks.as_slice() {
                    [one] if one["type"] == "text" => one["text"].clone(),
                    [] => json!("(no output)"),
                    _ => Value::Array(blocks),
                };
                let mut b = json!({"type": "tool_result", "tool_use_id": sanitize_tool_id(call_id, ctx.ids.as_ref()), "content": content});
                if *is_error {
                    b["is_error"] = json!(true);
                }
                out.push(b);
            }
            _ => {}
        }
    }
    Ok(out)
}

/// An assistant turn's blocks: signed thinking first, then text, then tool use.
fn assistant_blocks(parts: &[Part], ctx: &Ctx, keep_thinking: bool) -> Vec<Value> {
    let mut thinking = Vec::new();
    let mut text = Vec::new();
    let mut tools = Vec::new();
    for p in parts {
        match p {
            // Only Anthropic-issued signatures are accepted by Anthropic.
            Part::Reasoning { text: t, sig: Some(Sig::Anthropic(s)) } if keep_thinking => {
                thinking.push(json!({"type": "thinking", "thinking": t, "signature": s}))
            }
            Part::RedactedReasoning(d) if keep_thinking => {
                thinking.push(json!({"type": "redacted_thinking", "data": d}))
            }
            Part::Text(t) if !t.trim().is_empty() => text.push(json!({"type": "text", "text": t})),
            Part::ToolCall { id, name, arguments } => tools.push(json!({
                "type": "tool_use",
                "id": sanitize_tool_id(id, ctx.ids.as_ref()),
                "name": name,
                "input": arguments_object(arguments),
            })),
            _ => {}
        }
    }
    thinking.into_iter().chain(text).chain(tools).collect()
}

/// The IR as an Anthropic Messages request for `ctx.upstream_model`.
pub fn emit_request(r: &Request, ctx: &Ctx) -> Result<Value, GatewayError> {
    // System: leading system, plus system turns anywhere (one system slot).
    let mut system: Vec<Value> = r.system.iter().map(|t| json!({"type": "text", "text": t})).collect();
    let mut turns: Vec<(Role, Vec<Part>)> = Vec::new();
    for t in &r.turns {
        if t.role == Role::System {
            for p in &t.parts {
                if let Part::Text(s) = p {
                    system.push(json!({"type": "text", "text": s}));
                }
            }
            continue;
        }
        match turns.last_mut() {
            // Consecutive turns of one role merge (Anthropic alternates strictly).
            Some((role, parts)) if *role == t.role => parts.extend(t.parts.iter().cloned()),
            _ => turns.push((t.role, t.parts.clone())),
        }
    }

    // Thinking: requested, and allowed by the history and the tool choice.
    let forced_tool = matches!(r.tool_choice, Some(ToolChoice::Required) | Some(ToolChoice::Named(_)));
    let mut budget = match (&r.reasoning.budget_tokens, &r.reasoning.effort, r.reasoning.enabled) {
        (_, _, Some(false)) => None,
        (Some(b), _, _) => Some((*b).max(1024)),
        (None, Some(e), _) => budget_for(e),
        _ => None,
    };
    if forced_tool {
        budget = None;
    }
    // The last assistant turn with tool use must start with signed thinking.
    if let Some((_, parts)) = turns
        .iter()
        .rev()
        .find(|(role, parts)| *role == Role::Assistant && parts.iter().any(|p| matches!(p, Part::ToolCall { .. })))
    {
        let signed = parts
            .iter()
            .any(|p| matches!(p, Part::Reasoning { sig: Some(Sig::Anthropic(_)), .. } | Part::RedactedReasoning(_)));
        if !signed {
            budget = None;
        }
    }

    let mut messages: Vec<Value> = Vec::new();
    let mut open_calls: Vec<String> = Vec::new();
    for (role, parts) in &turns {
        match role {
            Role::Assistant => {
                let blocks = assistant_blocks(parts, ctx, budget.is_some());
                if blocks.is_empty() {
                    continue;
                }
                open_calls = blocks
                    .iter()
                    .filter(|b| b["type"] == "tool_use")
                    .map(|b| b["id"].as_str().unwrap_or("").to_string())
                    .collect();
                messages.push(json!({"role": "assistant", "content": blocks}));
            }
            _ => {
                let mut blocks = content_blocks(parts, ctx)?;
                // Results for the previous assistant turn's calls only, last
                // wins; then results for unanswered calls; then the rest.
                let mut results: Vec<Value> = Vec::new();
                let mut rest = Vec::new();
                for b in blocks.drain(..) {
                    if b["type"] == "tool_result" {
                        let id = b["tool_use_id"].as_str().unwrap_or("").to_string();
                        if open_calls.contains(&id) {
                            results.retain(|r: &Value| r["tool_use_id"] != id.as_str());
                            results.push(b);
                        }
                    } else {
                        rest.push(b);
                    }
                }
                for id in &open_calls {
                    if !results.iter().any(|r| r["tool_use_id"] == id.as_str()) {
                        results.push(json!({"type": "tool_result", "tool_use_id": id, "content": "(no result)", "is_error": true}));
                    }
                }
                open_calls.clear();
                let content: Vec<Value> = results.into_iter().chain(rest).collect();
                if content.is_empty() {
                    continue;
                }
                messages.push(json!({"role": "user", "content": content}));
            }
        }
    }
    if !open_calls.is_empty() {
        let results: Vec<Value> = open_calls
            .iter()
            .map(|id| json!({"type": "tool_result", "tool_use_id": id, "content": "(no result)", "is_error": true}))
            .collect();
        messages.push(json!({"role": "user", "content": results}));
    }
    // The conversation must start with the user; a trailing empty assistant
    // prefill goes (empty messages were skipped above).
    if messages.first().is_none_or(|m| m["role"] != "user") {
        messages.insert(0, json!({"role": "user", "content": [{"type": "text", "text": "..."}]}));
    }

    let mut out = Map::new();
    out.insert("model".into(), json!(ctx.upstream_model));
    let mut max_tokens = r.max_output.unwrap_or(DEFAULT_MAX_TOKENS);
    if let Some(b) = budget {
        max_tokens = max_tokens.max(b + 1024);
    }
    out.insert("max_tokens".into(), json!(max_tokens));
    if r.stream {
        out.insert("stream".into(), json!(true));
    }
    if budget.is_none() {
        if let Some(t) = r.temperature {
            out.insert("temperature".into(), json!(t.clamp(0.0, 1.0)));
        }
        if let Some(p) = r.top_p {
            out.insert("top_p".into(), json!(p));
        }
        if let Some(k) = r.top_k {
            out.insert("top_k".into(), json!(k));
        }
    }
    if !r.stop.is_empty() {
        out.insert("stop_sequences".into(), json!(r.stop));
    }
    if let Some(u) = &r.user {
        out.insert("metadata".into(), json!({"user_id": u}));
    }
    let mut system_text: Vec<Value> = system;
    if r.json_object {
        system_text.push(json!({"type": "text", "text": "Respond with a single JSON object."}));
    }
    if !system_text.is_empty() {
        out.insert("system".into(), Value::Array(system_text));
    }
    out.insert("messages".into(), Value::Array(messages));
    if !r.tools.is_empty() {
        let tools: Vec<Value> = r
            .tools
            .iter()
            .map(|t| {
                let mut schema = t.schema.clone();
                if schema.get("type").and_then(Value::as_str) != Some("object") {
                    schema = json!({"type": "object", "properties": {}});
                }
                let mut v = json!({"name": t.name});
                if let Some(d) = &t.description {
                    v["description"] = json!(d);
                }
                v["input_schema"] = schema;
                v
            })
            .collect();
        out.insert("tools".into(), Value::Array(tools));
        let mut choice = match &r.tool_choice {
            Some(ToolChoice::Required) => json!({"type": "any"}),
            Some(ToolChoice::None) => json!({"type": "none"}),
            Some(ToolChoice::Named(n)) => json!({"type": "tool", "name": n}),
            _ => json!({"type": "auto"}),
        };
        if r.parallel_tool_calls == Some(false) {
            choice["disable_parallel_tool_use"] = json!(true);
        }
        if r.tool_choice.is_some() || r.parallel_tool_calls == Some(false) {
            out.insert("tool_choice".into(), choice);
        }
    }
    if let Some(b) = budget {
        out.insert("thinking".into(), json!({"type": "enabled", "budget_tokens": b}));
    }
    if let Some(f) = &r.response_format {
        out.insert("output_config".into(), json!({"format": {"type": "json_schema", "schema": f["schema"]}}));
    }
    Ok(Value::Object(out))
}

// ---------------------------------------------------------------- response in

pub fn stop_from(reason: Option<&str>, sequence: Option<&str>) -> Stop {
    match reason {
        Some("max_tokens") => Stop::MaxTokens,
        Some("model_context_window_exceeded") => Stop::ContextWindow,
        Some("tool_use") => Stop::ToolUse,
        Some("refusal") => Stop::Refusal,
        Some("pause_turn") => Stop::PauseTurn,
        Some("stop_sequence") => Stop::StopSequence(sequence.map(str::to_string)),
        _ => Stop::EndTurn,
    }
}

pub fn err_kind(ty: &str) -> ErrKind {
    match ty {
        "invalid_request_error" => ErrKind::InvalidRequest,
        "authentication_error" => ErrKind::Auth,
        "permission_error" => ErrKind::Permission,
        "not_found_error" => ErrKind::NotFound,
        "request_too_large" => ErrKind::TooLarge,
        "rate_limit_error" => ErrKind::RateLimit,
        "billing_error" => ErrKind::Quota,
        "overloaded_error" => ErrKind::Overloaded,
        "timeout_error" => ErrKind::Timeout,
        _ => ErrKind::Server,
    }
}

/// Reads an Anthropic stream (or a message) into IR events.
#[derive(Default)]
pub struct Parser {
    splitter: Splitter,
    /// Anthropic block indices that produce no IR block (server tools, redacted).
    skipped: Vec<u64>,
    usage: Option<Usage>,
    stop: Option<Stop>,
    done: bool,
}

impl Parser {
    pub fn new() -> Parser {
        Parser::default()
    }

    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<Ev>) {
        for raw in self.splitter.push(chunk) {
            self.event(&raw, out);
        }
    }

    pub fn finish(&mut self, out: &mut Vec<Ev>) {
        if let Some(tail) = self.splitter.finish() {
            self.event(&tail, out);
        }
        if !self.done {
            self.done = true;
            out.push(Ev::Error { kind: ErrKind::Protocol, message: "upstream stream ended before completion".into() });
        }
    }

    fn event(&mut self, raw: &[u8], out: &mut Vec<Ev>) {
        if self.done {
            return;
        }
        let ev = sse::parse(raw);
        if ev.is_comment {
            return;
        }
        let Ok(v) = serde_json::from_str::<Value>(&ev.data) else { return };
        let name = ev.event.map(str::to_string).or_else(|| v["type"].as_str().map(str::to_string)).unwrap_or_default();
        match name.as_str() {
            "message_start" => {
                self.usage = v.pointer("/message/usage").and_then(Usage::from_anthropic);
                out.push(Ev::Start {
                    id: v.pointer("/message/id").and_then(Value::as_str).unwrap_or("").to_string(),
                    usage: self.usage,
                });
            }
            "content_block_start" => {
                let ix = v["index"].as_u64().unwrap_or(0);
                let b = &v["content_block"];
                match b["type"].as_str().unwrap_or("") {
                    "text" => {
                        out.push(Ev::TextStart);
                        if let Some(t) = b["text"].as_str().filter(|t| !t.is_empty()) {
                            out.push(Ev::TextDelta(t.to_string()));
                        }
                    }
                    "thinking" => {
                        out.push(Ev::ThinkingStart);
                        if let Some(t) = b["thinking"].as_str().filter(|t| !t.is_empty()) {
                            out.push(Ev::ThinkingDelta(t.to_string()));
                        }
                    }
                    "redacted_thinking" => {
                        out.push(Ev::Redacted(b["data"].as_str().unwrap_or("").to_string()));
                        self.skipped.push(ix);
                    }
                    "tool_use" => out.push(Ev::ToolStart {
                        id: b["id"].as_str().unwrap_or("").to_string(),
                        name: b["name"].as_str().unwrap_or("").to_string(),
                    }),
                    _ => self.skipped.push(ix),
                }
            }
            "content_block_delta" => {
                if self.skipped.contains(&v["index"].as_u64().unwrap_or(0)) {
                    return;
                }
                let d = &v["delta"];
                let s = |k: &str| d[k].as_str().unwrap_or("").to_string();
                match d["type"].as_str().unwrap_or("") {
                    "text_delta" => out.push(Ev::TextDelta(s("text"))),
                    "thinking_delta" => out.push(Ev::ThinkingDelta(s("thinking"))),
                    "signature_delta" => out.push(Ev::Signature(Sig::Anthropic(s("signature")))),
                    "input_json_delta" => out.push(Ev::ToolArgs(s("partial_json"))),
                    _ => {}
                }
            }
            "content_block_stop" if !self.skipped.contains(&v["index"].as_u64().unwrap_or(0)) => {
                out.push(Ev::BlockStop);
            }
            "message_delta" => {
                self.stop = Some(stop_from(
                    v.pointer("/delta/stop_reason").and_then(Value::as_str),
                    v.pointer("/delta/stop_sequence").and_then(Value::as_str),
                ));
                if let Some(u) = v.get("usage") {
                    self.usage.get_or_insert_with(Usage::default).merge_anthropic_delta(u);
                }
            }
            "message_stop" => {
                self.done = true;
                out.push(Ev::Finish {
                    stop: self.stop.clone().unwrap_or(Stop::EndTurn),
                    usage: self.usage.unwrap_or_default(),
                    estimated: false,
                });
            }
            "error" => {
                self.done = true;
                let e = &v["error"];
                out.push(Ev::Error {
                    kind: err_kind(e["type"].as_str().unwrap_or("")),
                    message: e["message"].as_str().unwrap_or("upstream error").to_string(),
                });
            }
            _ => {}
        }
    }

    /// A non-streaming message as IR events.
    pub fn message(v: &Value, out: &mut Vec<Ev>) {
        let usage = v.get("usage").and_then(Usage::from_anthropic).unwrap_or_default();
        out.push(Ev::Start { id: v["id"].as_str().unwrap_or("").to_string(), usage: Some(usage) });
        for b in v["content"].as_array().into_iter().flatten() {
            let s = |k: &str| b[k].as_str().unwrap_or("").to_string();
            match b["type"].as_str().unwrap_or("") {
                "text" => out.extend([Ev::TextStart, Ev::TextDelta(s("text")), Ev::BlockStop]),
                "thinking" => out.extend([
                    Ev::ThinkingStart,
                    Ev::ThinkingDelta(s("thinking")),
                    Ev::Signature(Sig::Anthropic(s("signature"))),
                    Ev::BlockStop,
                ]),
                "redacted_thinking" => out.push(Ev::Redacted(s("data"))),
                "tool_use" => out.extend([
                    Ev::ToolStart { id: s("id"), name: s("name") },
                    Ev::ToolArgs(b["input"].to_string()),
                    Ev::BlockStop,
                ]),
                _ => {}
            }
        }
        let stop = stop_from(v["stop_reason"].as_str(), v["stop_sequence"].as_str());
        out.push(Ev::Finish { stop, usage, estimated: false });
    }
}

// ---------------------------------------------------------------- response out

pub fn error_type(kind: ErrKind) -> &'static str {
    match kind {
        ErrKind::InvalidRequest | ErrKind::ContextOverflow => "invalid_request_error",
        ErrKind::Auth => "authentication_error",
        ErrKind::Permission => "permission_error",
        ErrKind::NotFound => "not_found_error",
        ErrKind::TooLarge => "request_too_large",
        ErrKind::RateLimit => "rate_limit_error",
        ErrKind::Quota => "billing_error",
        ErrKind::Overloaded => "overloaded_error",
        ErrKind::Timeout => "timeout_error",
        ErrKind::Server | ErrKind::Protocol => "api_error",
    }
}

fn usage_json(u: &Usage) -> Value {
    json!({
        "input_tokens": u.input,
        "cache_creation_input_tokens": u.cache_write,
        "cache_read_input_tokens": u.cache_read,
        "output_tokens": u.output,
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Open {
    None,
    Text,
    Thinking,
    Tool,
}

/// Writes IR events as Anthropic events (streaming) and builds the message
/// (non-streaming).
pub struct Emitter {
    id: String,
    index: u64,
    open: Open,
    tool_blocks: usize,
    started: bool,
    done: bool,
    /// The message so far (content blocks), for the non-streaming answer and
    /// for a thinking block's text.
    content: Vec<Value>,
    args: String,
    final_stop: Option<(String, Value)>,
    usage: Usage,
}

impl Emitter {
    pub fn new(ctx: &Ctx) -> Emitter {
        Emitter {
            id: ctx.ids.message(),
            index: 0,
            open: Open::None,
            tool_blocks: 0,
            started: false,
            done: false,
            content: Vec::new(),
            args: String::new(),
            final_stop: None,
            usage: Usage::default(),
        }
    }

    fn ev(out: &mut BytesMut, name: &str, v: Value) {
        sse::write_event(out, Some(name), &v.to_string());
    }

    fn start(&mut self, ctx: &Ctx, usage: Option<Usage>, out: &mut BytesMut) {
        if self.started {
            return;
        }
        self.started = true;
        let mut u = usage.unwrap_or(Usage { input: ctx.prompt_estimate, ..Default::default() });
        u.output = 0;
        let msg = json!({"type": "message_start", "message": {
            "id": self.id, "type": "message", "role": "assistant", "model": ctx.client_model,
            "content": [], "stop_reason": null, "stop_sequence": null, "usage": usage_json(&u)}});
        Self::ev(out, "message_start", msg);
    }

    fn open_block(&mut self, block: Value, kind: Open, out: &mut BytesMut) {
        Self::ev(
            out,
            "content_block_start",
            json!({"type": "content_block_start", "index": self.index, "content_block": block.clone()}),
        );
        self.content.push(block);
        self.open = kind;
    }

    fn delta(&mut self, delta: Value, out: &mut BytesMut) {
        Self::ev(
            out,
            "content_block_delta",
            json!({"type": "content_block_delta", "index": self.index, "delta": delta}),
        );
    }

    fn close(&mut self, out: &mut BytesMut) {
        if self.open == Open::None {
            return;
        }
        if self.open == Open::Tool {
            if let Some(last) = self.content.last_mut() {
                last["input"] = arguments_object(&self.args);
            }
            self.args.clear();
        }
        Self::ev(out, "content_block_stop", json!({"type": "content_block_stop", "index": self.index}));
        self.index += 1;
        self.open = Open::None;
    }

    pub fn event(&mut self, ev: &Ev, ctx: &Ctx, out: &mut BytesMut) {
        if self.done {
            return;
        }
        if !matches!(ev, Ev::Start { .. } | Ev::Error { .. }) {
            self.start(ctx, None, out);
        }
        match ev {
            Ev::Start { usage, .. } => self.start(ctx, *usage, out),
            Ev::TextStart => {
                self.close(out);
                self.open_block(json!({"type": "text", "text": ""}), Open::Text, out);
            }
            Ev::TextDelta(t) => {
                if self.open != Open::Text {
                    self.close(out);
                    self.open_block(json!({"type": "text", "text": ""}), Open::Text, out);
                }
                if let Some(last) = self.content.last_mut() {
                    last["text"] = json!(format!("{}{t}", last["text"].as_str().unwrap_or("")));
                }
                self.delta(json!({"type": "text_delta", "text": t}), out);
            }
            Ev::ThinkingStart => {
                self.close(out);
                self.open_block(json!({"type": "thinking", "thinking": "", "signature": ""}), Open::Thinking, out);
            }
            Ev::ThinkingDelta(t) => {
                if let Some(last) = self.content.last_mut() {
                    last["thinking"] = json!(format!("{}{t}", last["thinking"].as_str().unwrap_or("")));
                }
                self.delta(json!({"type": "thinking_delta", "thinking": t}), out);
            }
            Ev::Signature(sig) => {
                let s = match sig {
                    Sig::Anthropic(s) | Sig::Gateway(s) => s.clone(),
                };
                if let Some(last) = self.content.last_mut() {
                    last["signature"] = json!(s);
                }
                self.delta(json!({"type": "signature_delta", "signature": s}), out);
            }
            Ev::Redacted(data) => {
                self.close(out);
                self.open_block(json!({"type": "redacted_thinking", "data": data}), Open::Thinking, out);
                Self::ev(out, "content_block_stop", json!({"type": "content_block_stop", "index": self.index}));
                self.index += 1;
                self.open = Open::None;
            }
            Ev::ToolStart { id, name } => {
                self.close(out);
                self.tool_blocks += 1;
                let id = sanitize_tool_id(id, ctx.ids.as_ref());
                self.open_block(json!({"type": "tool_use", "id": id, "name": name, "input": {}}), Open::Tool, out);
            }
            Ev::ToolArgs(a) => {
                if a.is_empty() {
                    return;
                }
                self.args.push_str(a);
                self.delta(json!({"type": "input_json_delta", "partial_json": a}), out);
            }
            Ev::BlockStop => self.close(out),
            Ev::Finish { stop, usage, .. } => {
                self.close(out);
                let (reason, seq) = match stop {
                    Stop::EndTurn => ("end_turn", Value::Null),
                    Stop::StopSequence(s) => ("stop_sequence", s.clone().map_or(Value::Null, Value::String)),
                    Stop::MaxTokens => ("max_tokens", Value::Null),
                    Stop::ContextWindow => ("model_context_window_exceeded", Value::Null),
                    // Only with a tool block: a phantom tool stop stalls clients.
                    Stop::ToolUse if self.tool_blocks > 0 => ("tool_use", Value::Null),
                    Stop::ToolUse => ("end_turn", Value::Null),
                    Stop::Refusal => ("refusal", Value::Null),
                    Stop::PauseTurn => ("pause_turn", Value::Null),
                };
                self.usage = *usage;
                self.final_stop = Some((reason.to_string(), seq.clone()));
                Self::ev(
                    out,
                    "message_delta",
                    json!({"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": seq}, "usage": usage_json(usage)}),
                );
                Self::ev(out, "message_stop", json!({"type": "message_stop"}));
                self.done = true;
            }
            Ev::Error { kind, message } => {
                self.error(*kind, message, out);
            }
        }
    }

    /// Ends the stream with an error event (§7.3.3): no message_delta/stop.
    pub fn error(&mut self, kind: ErrKind, message: &str, out: &mut BytesMut) {
        if self.done {
            return;
        }
        self.close(out);
        Self::ev(out, "error", json!({"type": "error", "error": {"type": error_type(kind), "message": message}}));
        self.done = true;
    }

    /// The non-streaming message.
    pub fn message(&self, ctx: &Ctx) -> Value {
        let (reason, seq) = self.final_stop.clone().unwrap_or(("end_turn".into(), Value::Null));
        // Never an empty text block: clients replay them and Anthropic rejects blank text.
        let content: Vec<Value> =
            self.content.iter().filter(|b| !(b["type"] == "text" && b["text"] == "")).cloned().collect();
        json!({
            "id": self.id, "type": "message", "role": "assistant", "model": ctx.client_model,
            "content": content, "stop_reason": reason, "stop_sequence": seq, "usage": usage_json(&self.usage),
        })
    }
}
