//! The OpenAI Chat Completions side of translations: requests to and from the
//! IR, upstream chunks into IR events (the §2.7 state machine: tool-call
//! index reuse, late usage, missing finish reasons), and IR events out as
//! chunks or a completion (§3.4–3.5).

use super::context::Ctx;
use super::ir::*;
use super::support::{image_part, parse_data_url, sanitize_schema, Signer};
use crate::config::quirks::{MaxTokensField, ReasoningEcho, ReasoningRequest, StreamUsage, SystemPlacement};
use crate::error::GatewayError;
use crate::sse::{self, Splitter};
use crate::usage::Usage;
use bytes::BytesMut;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::Arc;

// ---------------------------------------------------------------- request in

/// Text of a string or a list of text/refusal parts.
fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").or_else(|| p.get("refusal")).and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    }
}

fn user_parts(content: &Value) -> Result<Vec<Part>, GatewayError> {
    let mut out = Vec::new();
    match content {
        Value::String(s) if !s.trim().is_empty() => out.push(Part::Text(s.clone())),
        Value::Array(parts) => {
            for p in parts {
                match p.get("type").and_then(Value::as_str).unwrap_or("") {
                    "text" => {
                        if let Some(t) = p["text"].as_str().filter(|t| !t.trim().is_empty()) {
                            out.push(Part::Text(t.to_string()));
                        }
                    }
                    "image_url" => {
                        let url = p
                            .pointer("/image_url/url")
                            .or_else(|| p.get("image_url"))
                            .and_then(Value::as_str)
                            .unwrap_or("");
                        out.push(image_part(url));
                    }
                    "file" => {
                        let data = p.pointer("/file/file_data").and_then(Value::as_str).unwrap_or("");
                        let Some((mt, data)) = parse_data_url(data) else {
                            return Err(GatewayError::Unsupported {
                                param: "messages",
                                code: "unsupported_parameter",
                                message: "file parts must carry file_data (file_id needs the provider's file store)"
                                    .into(),
                            });
                        };
                        out.push(Part::File {
                            media_type: mt,
                            data,
                            filename: p.pointer("/file/filename").and_then(Value::as_str).map(str::to_string),
                        });
                    }
                    "input_audio" => {
                        return Err(GatewayError::Unsupported {
                            param: "messages",
                            code: "unsupported_parameter",
                            message: "audio input is not supported by this model".into(),
                        })
                    }
                    _ => {}
                }
            }
        }
        _ => {}
    }
    Ok(out)
}

/// A Chat Completions request as IR.
pub fn parse_request(v: &Value) -> Result<Request, GatewayError> {
    let mut r = Request::default();
    if v.get("n").and_then(Value::as_u64).is_some_and(|n| n > 1) {
        return Err(GatewayError::Unsupported {
            param: "n",
            code: "unsupported_parameter",
            message: "n > 1 is not supported by this model".into(),
        });
    }
    for m in v.get("messages").and_then(Value::as_array).into_iter().flatten() {
        let content = m.get("content").unwrap_or(&Value::Null);
        match m.get("role").and_then(Value::as_str).unwrap_or("user") {
            // Anthropic has one system slot: system and developer messages go
            // there in order, wherever they were.
            "system" | "developer" => {
                let t = text_of(content);
                if !t.trim().is_empty() {
                    r.system.push(t);
                }
            }
            "assistant" => {
                let mut parts = Vec::new();
                let t = text_of(content);
                if !t.is_empty() {
                    parts.push(Part::Text(t));
                }
                for tc in m.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
                    parts.push(Part::ToolCall {
                        id: tc["id"].as_str().unwrap_or("").to_string(),
                        name: tc.pointer("/function/name").and_then(Value::as_str).unwrap_or("").to_string(),
                        arguments: tc
                            .pointer("/function/arguments")
                            .and_then(Value::as_str)
                            .unwrap_or("{}")
                            .to_string(),
                    });
                }
                r.turns.push(Turn { role: Role::Assistant, parts });
            }
            "tool" => {
                let content = user_parts(content)?;
                let part = Part::ToolResult {
                    call_id: m["tool_call_id"].as_str().unwrap_or("").to_string(),
                    content,
                    is_error: false,
                };
                r.turns.push(Turn { role: Role::User, parts: vec![part] });
            }
            _ => {
                let parts = user_parts(content)?;
                r.turns.push(Turn { role: Role::User, parts });
            }
        }
    }
    for t in v.get("tools").and_then(Value::as_array).into_iter().flatten() {
        match t.get("type").and_then(Value::as_str) {
            Some("function") => r.tools.push(Tool {
                name: t.pointer("/function/name").and_then(Value::as_str).unwrap_or("").to_string(),
                description: t.pointer("/function/description").and_then(Value::as_str).map(str::to_string),
                schema: t
                    .pointer("/function/parameters")
                    .cloned()
                    .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
                custom: false,
            }),
            Some("custom") => r.tools.push(Tool {
                name: t
                    .pointer("/custom/name")
                    .or_else(|| t.get("name"))
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                description: t.pointer("/custom/description").and_then(Value::as_str).map(str::to_string),
                schema: json!({"type": "object", "properties": {"input": {"type": "string"}}, "required": ["input"]}),
                custom: true,
            }),
            _ => {}
        }
    }
    r.tool_choice = match v.get("tool_choice") {
        Some(Value::String(s)) => ToolChoice::keyword(s),
        Some(o @ Value::Object(_)) => {
            o.pointer("/function/name").and_then(Value::as_str).map(|n| ToolChoice::Named(n.to_string()))
        }
        _ => None,
    };
    r.parallel_tool_calls = v.get("parallel_tool_calls").and_then(Value::as_bool);
    if let Some(e) = v.get("reasoning_effort").and_then(Value::as_str) {
        r.reasoning = Reasoning { effort: Some(e.to_string()), budget_tokens: None, enabled: Some(e != "none") };
    }
    match v.pointer("/response_format/type").and_then(Value::as_str) {
        Some("json_schema") => r.response_format = v.pointer("/response_format/json_schema").cloned(),
        Some("json_object") => r.json_object = true,
        _ => {}
    }
    r.max_output = v.get("max_completion_tokens").or_else(|| v.get("max_tokens")).and_then(Value::as_u64);
    r.temperature = v.get("temperature").and_then(Value::as_f64);
    r.top_p = v.get("top_p").and_then(Value::as_f64);
    r.top_k = v.get("top_k").and_then(Value::as_u64);
    r.stop = match v.get("stop") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect(),
        _ => Vec::new(),
    };
    r.stream = v.get("stream").and_then(Value::as_bool).unwrap_or(false);
    r.user = v.get("user").or_else(|| v.get("safety_identifier")).and_then(Value::as_str).map(str::to_string);
    Ok(r)
}

// ---------------------------------------------------------------- request out

/// OpenAI-compatible servers commonly accept only these (§0.3).
/// A thinking budget as an effort (CLIProxyAPI's thresholds), clamped.
fn effort_for_budget(b: u64) -> &'static str {
    match b {
        0..=1024 => "low",
        1025..=8192 => "medium",
        _ => "high",
    }
}

fn part_json(p: &Part) -> Option<Value> {
    match p {
        Part::Text(t) => Some(json!({"type": "text", "text": t})),
        Part::Image { url, media_type, data } => {
            let url = match (media_type, data) {
                (Some(mt), Some(d)) => format!("data:{mt};base64,{d}"),
                _ => url.clone().unwrap_or_default(),
            };
            Some(json!({"type": "image_url", "image_url": {"url": url}}))
        }
        Part::File { media_type, data, filename } => Some(json!({"type": "file", "file": {
            "filename": filename.clone().unwrap_or_else(|| "document.pdf".into()),
            "file_data": format!("data:{media_type};base64,{data}")}})),
        _ => None,
    }
}

/// User content: a plain string for a single text, parts otherwise.
fn user_content(parts: &[Value]) -> Value {
    match parts {
        [one] if one["type"] == "text" => one["text"].clone(),
        _ => Value::Array(parts.to_vec()),
    }
}

/// The IR as a Chat Completions request for `ctx.upstream_model`. Tool names
/// longer than OpenAI allows are shortened (`ctx.tools` restores them).
pub fn emit_request(r: &Request, ctx: &mut Ctx) -> Result<Value, GatewayError> {
    let mut messages: Vec<Value> = Vec::new();
    let system = r.system.iter().filter(|s| !s.trim().is_empty()).cloned().collect::<Vec<_>>().join("\n\n");
    if !system.is_empty() {
        messages.push(json!({"role": "system", "content": system}));
    }
    // Calls awaiting their tool message (OpenAI requires them right after).
    let mut awaiting: Vec<String> = Vec::new();
    let flush_awaiting = |awaiting: &mut Vec<String>, messages: &mut Vec<Value>| {
        for id in awaiting.drain(..) {
            messages.push(json!({"role": "tool", "tool_call_id": id, "content": "(tool call was not executed)"}));
        }
    };
    for turn in &r.turns {
        match turn.role {
            Role::Assistant => {
                flush_awaiting(&mut awaiting, &mut messages);
                let text: String = turn
                    .parts
                    .iter()
                    .filter_map(|p| if let Part::Text(t) = p { Some(t.as_str()) } else { None })
                    .collect();
                let calls: Vec<Value> = turn
                    .parts
                    .iter()
                    .filter_map(|p| match p {
                        Part::ToolCall { id, name, arguments } => Some(json!({"id": id, "type": "function",
                            "function": {"name": ctx.tools.shorten(name, ctx.quirks.tool_name_max_len), "arguments": arguments}})),
                        _ => None,
                    })
                    .collect();
                // Reasoning is echoed per `reasoning_echo` (DeepSeek/Kimi require
                // it on tool turns), never when Anthropic signed it (not ours to
                // show elsewhere).
                let reasoning: Vec<&str> = turn
                    .parts
                    .iter()
                    .filter_map(|p| match p {
                        Part::Reasoning { text, sig }
                            if !matches!(sig, Some(Sig::Anthropic(_))) && !text.is_empty() =>
                        {
                            Some(text.as_str())
                        }
                        _ => None,
                    })
                    .collect();
                if text.is_empty() && calls.is_empty() {
                    continue;
                }
                let mut m = Map::new();
                m.insert("role".into(), json!("assistant"));
                m.insert("content".into(), if text.is_empty() { Value::Null } else { json!(text) });
                let echo = match ctx.quirks.reasoning_echo {
                    ReasoningEcho::None => false,
                    ReasoningEcho::ToolTurns => !calls.is_empty(),
                    ReasoningEcho::AllAssistant => true,
                };
                if echo && !reasoning.is_empty() {
                    m.insert("reasoning_content".into(), json!(reasoning.join("\n\n")));
                }
                if !calls.is_empty() {
                    awaiting = calls.iter().map(|c| c["id"].as_str().unwrap_or("").to_string()).collect();
                    m.insert("tool_calls".into(), Value::Array(calls));
                }
                messages.push(Value::Object(m));
            }
            Role::System => {
                flush_awaiting(&mut awaiting, &mut messages);
                let text: Vec<&str> = turn
                    .parts
                    .iter()
                    .filter_map(|p| if let Part::Text(t) = p { Some(t.as_str()) } else { None })
                    .collect();
                if !text.is_empty() {
                    let text = text.join("\n\n");
                    messages.push(match ctx.quirks.system_placement {
                        // Strict chat templates refuse a system message past the start.
                        SystemPlacement::LeadingOnly => {
                            json!({"role": "user", "content": format!("<system-reminder>{text}</system-reminder>")})
                        }
                        SystemPlacement::Anywhere => json!({"role": "system", "content": text}),
                    });
                }
            }
            Role::User => {
                // Tool results first (they must follow the assistant's calls).
                let mut relocated: Vec<(String, Vec<Value>)> = Vec::new();
                for p in &turn.parts {
                    if let Part::ToolResult { call_id, content, .. } = p {
                        if !awaiting.contains(call_id) {
                            continue; // answers no pending call: drop
                        }
                        awaiting.retain(|a| a != call_id);
                        let texts: Vec<&str> = content
                            .iter()
                            .filter_map(|c| if let Part::Text(t) = c { Some(t.as_str()) } else { None })
                            .collect();
                        let images: Vec<Value> =
                            content.iter().filter(|c| matches!(c, Part::Image { .. })).filter_map(part_json).collect();
                        let mut text = texts.join("\n");
                        if !images.is_empty() {
                            text.push_str(if text.is_empty() {
                                "[image attached in the next message]"
                            } else {
                                "\n[image attached in the next message]"
                            });
                            relocated.push((call_id.clone(), images));
                        }
                        if text.trim().is_empty() {
                            text = ctx.quirks.empty_tool_result.clone();
                        }
                        messages.push(json!({"role": "tool", "tool_call_id": call_id, "content": text}));
                    }
                }
                // Tool messages only carry text: their images follow as user content.
                for (id, images) in relocated {
                    let mut parts =
                        vec![json!({"type": "text", "text": format!("Images returned by tool call {id}:")})];
                    parts.extend(images);
                    messages.push(json!({"role": "user", "content": parts}));
                }
                let rest: Vec<Value> =
                    turn.parts.iter().filter(|p| !matches!(p, Part::ToolResult { .. })).filter_map(part_json).collect();
                if !rest.is_empty() {
                    flush_awaiting(&mut awaiting, &mut messages);
                    messages.push(json!({"role": "user", "content": user_content(&rest)}));
                }
            }
        }
    }
    flush_awaiting(&mut awaiting, &mut messages);

    let mut out = Map::new();
    out.insert("model".into(), json!(ctx.upstream_model));
    if let Some(m) = r.max_output {
        let field = match ctx.quirks.max_tokens_field {
            MaxTokensField::MaxTokens => "max_tokens",
            MaxTokensField::MaxCompletionTokens => "max_completion_tokens",
        };
        out.insert(field.into(), json!(m));
    }
    if r.stream {
        out.insert("stream".into(), json!(true));
        if ctx.quirks.stream_usage == StreamUsage::IncludeUsage {
            out.insert("stream_options".into(), json!({"include_usage": true}));
        }
    }
    out.insert("messages".into(), Value::Array(messages));
    if !r.tools.is_empty() {
        let tools: Vec<Value> = r
            .tools
            .iter()
            .map(|t| {
                if t.custom {
                    ctx.tools.mark_custom(&t.name);
                }
                let mut f = json!({"name": ctx.tools.shorten(&t.name, ctx.quirks.tool_name_max_len)});
                if let Some(d) = &t.description {
                    f["description"] = json!(d);
                }
                f["parameters"] = sanitize_schema(&t.schema);
                json!({"type": "function", "function": f})
            })
            .collect();
        out.insert("tools".into(), Value::Array(tools));
        let choice = match &r.tool_choice {
            Some(ToolChoice::Auto) => Some(json!("auto")),
            Some(ToolChoice::None) => Some(json!("none")),
            Some(ToolChoice::Required) => Some(json!("required")),
            Some(ToolChoice::Named(n)) => Some(
                json!({"type": "function", "function": {"name": ctx.tools.shorten(n, ctx.quirks.tool_name_max_len)}}),
            ),
            None => None,
        };
        if let Some(c) = choice {
            out.insert("tool_choice".into(), c);
        }
        if let Some(p) = r.parallel_tool_calls {
            out.insert("parallel_tool_calls".into(), json!(p));
        }
    }
    let wanted = match (&r.reasoning.effort, r.reasoning.budget_tokens, r.reasoning.enabled) {
        (_, _, Some(false)) => None,
        (Some(e), _, _) => Some(e.as_str()),
        (None, Some(b), _) => Some(effort_for_budget(b)),
        _ => None,
    };
    if let Some(e) = wanted.and_then(|w| ctx.quirks.effort(w)) {
        match ctx.quirks.reasoning_request {
            ReasoningRequest::ReasoningEffort => out.insert("reasoning_effort".into(), json!(e)),
            ReasoningRequest::ReasoningObject => out.insert("reasoning".into(), json!({"effort": e})),
            ReasoningRequest::ThinkingObject => out.insert("thinking".into(), json!({"type": "enabled"})),
            ReasoningRequest::ChatTemplateKwargs => {
                out.insert("chat_template_kwargs".into(), json!({"enable_thinking": true}))
            }
            ReasoningRequest::None => None,
        };
    }
    if let Some(t) = r.temperature {
        out.insert("temperature".into(), json!(t));
    }
    if let Some(p) = r.top_p {
        out.insert("top_p".into(), json!(p));
    }
    if !r.stop.is_empty() {
        out.insert("stop".into(), json!(r.stop.iter().take(4).collect::<Vec<_>>()));
    }
    if let Some(f) = &r.response_format {
        out.insert("response_format".into(), json!({"type": "json_schema", "json_schema": f}));
    } else if r.json_object {
        out.insert("response_format".into(), json!({"type": "json_object"}));
    }
    if let Some(u) = &r.user {
        out.insert("user".into(), json!(u));
    }
    Ok(Value::Object(out))
}

// ---------------------------------------------------------------- response in

pub fn err_kind(ty: &str, code: &str, message: &str) -> ErrKind {
    if super::errors::is_context_overflow(code, message) {
        return ErrKind::ContextOverflow;
    }
    match (ty, code) {
        (_, "insufficient_quota") => ErrKind::Quota,
        (_, "rate_limit_exceeded") | ("rate_limit_error", _) => ErrKind::RateLimit,
        (_, "server_is_overloaded") | (_, "slow_down") => ErrKind::Overloaded,
        (_, "invalid_api_key") | ("authentication_error", _) => ErrKind::Auth,
        ("invalid_request_error", _) => ErrKind::InvalidRequest,
        _ => ErrKind::Server,
    }
}

#[derive(Debug, Default)]
struct ToolSlot {
    id: Option<String>,
    name: Option<String>,
    args: String,
    started: bool,
    closed: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Open {
    None,
    Text,
    Thinking,
    Tool(usize),
}

/// Reads a chat stream (or a completion) into IR events.
pub struct Parser {
    splitter: Splitter,
    started: bool,
    open: Open,
    thinking: String,
    slots: Vec<ToolSlot>,
    by_index: HashMap<u64, usize>,
    finish: Option<String>,
    usage: Option<Usage>,
    done: bool,
    tool_blocks: usize,
    output_chars: u64,
    upstream_model: String,
    signer: Arc<Signer>,
    names: super::support::ToolNames,
    ids: Arc<dyn super::support::Ids>,
    declared: Vec<String>,
    prompt_estimate: u64,
}

impl Parser {
    pub fn new(ctx: &Ctx) -> Parser {
        Parser {
            splitter: Splitter::new(),
            started: false,
            open: Open::None,
            thinking: String::new(),
            slots: Vec::new(),
            by_index: HashMap::new(),
            finish: None,
            usage: None,
            done: false,
            tool_blocks: 0,
            output_chars: 0,
            upstream_model: ctx.upstream_model.clone(),
            signer: ctx.signer.clone(),
            names: ctx.tools.clone(),
            ids: ctx.ids.clone(),
            declared: ctx.declared_tools.clone(),
            prompt_estimate: ctx.prompt_estimate,
        }
    }

    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<Ev>) {
        for raw in self.splitter.push(chunk) {
            let ev = sse::parse(&raw);
            if !ev.is_comment {
                self.data(&ev.data, out);
            }
        }
    }

    pub fn finish(&mut self, out: &mut Vec<Ev>) {
        if let Some(tail) = self.splitter.finish() {
            let ev = sse::parse(&tail);
            self.data(&ev.data, out);
        }
        if self.done {
            return;
        }
        if self.finish.is_some() {
            self.terminate(out);
        } else {
            // Ended without a finish reason or [DONE]: never fake a normal end.
            self.close_open(out);
            self.done = true;
            out.push(Ev::Error { kind: ErrKind::Protocol, message: "upstream stream ended before completion".into() });
        }
    }

    fn begin(&mut self, id: &str, out: &mut Vec<Ev>) {
        if !self.started {
            self.started = true;
            out.push(Ev::Start { id: id.to_string(), usage: None });
        }
    }

    fn close_open(&mut self, out: &mut Vec<Ev>) {
        match self.open {
            Open::None => return,
            Open::Thinking => {
                let sig = self.signer.sign(&self.upstream_model, &self.thinking);
                out.push(Ev::Signature(Sig::Gateway(sig)));
                self.thinking.clear();
            }
            Open::Tool(i) => self.slots[i].closed = true,
            Open::Text => {}
        }
        out.push(Ev::BlockStop);
        self.open = Open::None;
    }

    fn start_tool(&mut self, i: usize, out: &mut Vec<Ev>) {
        self.close_open(out);
        let slot = &mut self.slots[i];
        slot.started = true;
        let id = slot.id.clone().unwrap_or_else(|| self.ids.tool());
        let name = self.names.restore(slot.name.as_deref().unwrap_or(""));
        out.push(Ev::ToolStart { id, name });
        if !slot.args.is_empty() {
            out.push(Ev::ToolArgs(slot.args.clone()));
        }
        self.tool_blocks += 1;
        self.open = Open::Tool(i);
    }

    fn tool_delta(&mut self, pos: usize, tc: &Value, out: &mut Vec<Ev>) -> Result<(), String> {
        let index = tc.get("index").and_then(Value::as_u64).unwrap_or(pos as u64);
        let id = tc.get("id").and_then(Value::as_str).filter(|s| !s.is_empty());
        let slot = match self.by_index.get(&index) {
            // Index reuse (Ollama streams parallel calls all as index 0): a new
            // id under a known index is a new call.
            Some(&i) if id.is_some() && self.slots[i].id.is_some() && self.slots[i].id.as_deref() != id => None,
            Some(&i) => Some(i),
            None => None,
        };
        let i = slot.unwrap_or_else(|| {
            self.slots.push(ToolSlot::default());
            let i = self.slots.len() - 1;
            self.by_index.insert(index, i);
            i
        });
        if let Some(id) = id {
            self.slots[i].id.get_or_insert_with(|| id.to_string());
        }
        if let Some(n) = tc.pointer("/function/name").and_then(Value::as_str).filter(|n| !n.is_empty()) {
            self.slots[i].name.get_or_insert_with(|| n.to_string());
        }
        let fragment = tc.pointer("/function/arguments").and_then(Value::as_str).unwrap_or("");
        self.output_chars += fragment.len() as u64;
        if self.slots[i].started {
            if self.slots[i].closed {
                return Err("upstream interleaved tool-call fragments".into());
            }
            if !fragment.is_empty() {
                out.push(Ev::ToolArgs(fragment.to_string()));
            }
        } else {
            self.slots[i].args.push_str(fragment);
            if self.slots[i].name.is_some() {
                self.start_tool(i, out);
            }
        }
        Ok(())
    }

    fn stop(&self) -> Stop {
        match self.finish.as_deref() {
            Some("length") => Stop::MaxTokens,
            Some("tool_calls") | Some("function_call") => Stop::ToolUse,
            Some("content_filter") => Stop::Refusal,
            // Some providers end tool turns with "stop".
            _ if self.tool_blocks > 0 => Stop::ToolUse,
            _ => Stop::EndTurn,
        }
    }

    /// At the finish reason: calls that never started (no name) are started
    /// now so they are not lost; every block closes.
    fn at_finish(&mut self, out: &mut Vec<Ev>) {
        for i in 0..self.slots.len() {
            let s = &self.slots[i];
            if !s.started && (s.id.is_some() || !s.args.is_empty()) {
                let name = if self.declared.len() == 1 { self.declared[0].clone() } else { format!("tool_{i}") };
                self.slots[i].name = Some(name);
                self.start_tool(i, out);
            }
        }
        self.close_open(out);
    }

    fn terminate(&mut self, out: &mut Vec<Ev>) {
        if self.done {
            return;
        }
        self.at_finish(out);
        self.done = true;
        let (usage, estimated) = match self.usage {
            Some(u) => (u, false),
            None => (
                Usage { input: self.prompt_estimate, output: self.output_chars.div_ceil(4), ..Default::default() },
                true,
            ),
        };
        out.push(Ev::Finish { stop: self.stop(), usage, estimated });
    }

    fn data(&mut self, data: &str, out: &mut Vec<Ev>) {
        if self.done {
            return;
        }
        if data == "[DONE]" {
            if !self.started {
                self.begin("", out);
            }
            if self.finish.is_none() {
                self.finish = Some(
                    if self.tool_blocks > 0 || self.slots.iter().any(|s| s.id.is_some()) {
                        "tool_calls"
                    } else {
                        "stop"
                    }
                    .into(),
                );
            }
            self.terminate(out);
            return;
        }
        let Ok(v) = serde_json::from_str::<Value>(data) else { return };
        if let Some(e) = v.get("error").filter(|_| v.get("choices").is_none()) {
            let message = e["message"].as_str().unwrap_or("upstream error").to_string();
            let kind = err_kind(e["type"].as_str().unwrap_or(""), e["code"].as_str().unwrap_or(""), &message);
            self.close_open(out);
            self.done = true;
            out.push(Ev::Error { kind, message });
            return;
        }
        self.begin(v["id"].as_str().unwrap_or(""), out);
        if let Some(u) = v.get("usage").and_then(Usage::from_openai_chat) {
            self.usage = Some(u);
        }
        if let Some(choice) = v["choices"].as_array().and_then(|c| c.first()) {
            let d = &choice["delta"];
            let reasoning =
                d.get("reasoning_content").or_else(|| d.get("reasoning")).and_then(Value::as_str).unwrap_or("");
            if !reasoning.is_empty() {
                if self.open != Open::Thinking {
                    self.close_open(out);
                    out.push(Ev::ThinkingStart);
                    self.open = Open::Thinking;
                }
                self.thinking.push_str(reasoning);
                self.output_chars += reasoning.len() as u64;
                out.push(Ev::ThinkingDelta(reasoning.to_string()));
            }
            for key in ["content", "refusal"] {
                let text = d.get(key).and_then(Value::as_str).unwrap_or("");
                if text.is_empty() {
                    continue;
                }
                if key == "refusal" {
                    self.finish.get_or_insert_with(|| "content_filter".into());
                }
                if self.open != Open::Text {
                    self.close_open(out);
                    out.push(Ev::TextStart);
                    self.open = Open::Text;
                }
                self.output_chars += text.len() as u64;
                out.push(Ev::TextDelta(text.to_string()));
            }
            for (pos, tc) in d.get("tool_calls").and_then(Value::as_array).into_iter().flatten().enumerate() {
                if let Err(message) = self.tool_delta(pos, tc, out) {
                    self.close_open(out);
                    self.done = true;
                    out.push(Ev::Error { kind: ErrKind::Protocol, message });
                    return;
                }
            }
            if let Some(f) = choice.get("finish_reason").and_then(Value::as_str) {
                if self.finish.is_none() {
                    self.finish = Some(f.to_string());
                }
                self.at_finish(out);
            }
        }
        // The terminal event waits for the usage chunk that follows the finish.
        if self.finish.is_some() && self.usage.is_some() {
            self.terminate(out);
        }
    }

    /// A non-streaming completion as IR events.
    pub fn completion(&mut self, v: &Value, out: &mut Vec<Ev>) {
        self.begin(v["id"].as_str().unwrap_or(""), out);
        self.usage = v.get("usage").and_then(Usage::from_openai_chat);
        let choice = &v["choices"][0];
        let m = &choice["message"];
        if let Some(r) =
            m.get("reasoning_content").or_else(|| m.get("reasoning")).and_then(Value::as_str).filter(|r| !r.is_empty())
        {
            out.extend([Ev::ThinkingStart, Ev::ThinkingDelta(r.to_string())]);
            self.open = Open::Thinking;
            self.thinking = r.to_string();
            self.close_open(out);
        }
        for key in ["content", "refusal"] {
            if let Some(t) = m.get(key).and_then(Value::as_str).filter(|t| !t.is_empty()) {
                self.output_chars += t.len() as u64;
                out.extend([Ev::TextStart, Ev::TextDelta(t.to_string()), Ev::BlockStop]);
                if key == "refusal" {
                    self.finish = Some("content_filter".into());
                }
            }
        }
        for tc in m.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
            let id = tc["id"].as_str().filter(|s| !s.is_empty()).map(str::to_string).unwrap_or_else(|| self.ids.tool());
            let name = self.names.restore(tc.pointer("/function/name").and_then(Value::as_str).unwrap_or(""));
            let args = tc.pointer("/function/arguments").and_then(Value::as_str).unwrap_or("").to_string();
            out.push(Ev::ToolStart { id, name });
            if !args.is_empty() {
                out.push(Ev::ToolArgs(args));
            }
            out.push(Ev::BlockStop);
            self.tool_blocks += 1;
        }
        if self.finish.is_none() {
            self.finish = Some(choice["finish_reason"].as_str().unwrap_or("stop").to_string());
        }
        self.terminate(out);
    }
}

// ---------------------------------------------------------------- response out

/// OpenAI error `type` and `code` for a canonical kind (§7.3.0).
pub fn error_type_code(kind: ErrKind) -> (&'static str, Option<&'static str>) {
    match kind {
        ErrKind::InvalidRequest => ("invalid_request_error", None),
        ErrKind::ContextOverflow => ("invalid_request_error", Some("context_length_exceeded")),
        ErrKind::Auth => ("invalid_request_error", Some("invalid_api_key")),
        ErrKind::Permission => ("invalid_request_error", None),
        ErrKind::NotFound => ("invalid_request_error", Some("model_not_found")),
        ErrKind::TooLarge => ("invalid_request_error", Some("request_too_large")),
        ErrKind::RateLimit => ("rate_limit_error", Some("rate_limit_exceeded")),
        ErrKind::Quota => ("insufficient_quota", Some("insufficient_quota")),
        ErrKind::Overloaded => ("service_unavailable_error", Some("server_is_overloaded")),
        ErrKind::Server | ErrKind::Protocol => ("server_error", None),
        ErrKind::Timeout => ("server_error", Some("timeout")),
    }
}

pub fn usage_json(u: &Usage) -> Value {
    let prompt = u.prompt_total();
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": u.output,
        "total_tokens": prompt + u.output,
        "prompt_tokens_details": {"cached_tokens": u.cache_read, "cache_write_tokens": u.cache_write},
        "completion_tokens_details": {"reasoning_tokens": u.reasoning},
    })
}

/// Writes IR events as chat chunks (streaming) and builds the completion.
pub struct Emitter {
    id: String,
    created: u64,
    tool_ix: u64,
    done: bool,
    content: String,
    reasoning: String,
    tool_calls: Vec<Value>,
    finish: Option<&'static str>,
    usage: Usage,
}

impl Emitter {
    pub fn new(ctx: &Ctx) -> Emitter {
        Emitter {
            id: String::new(),
            created: ctx.ids.now(),
            tool_ix: 0,
            done: false,
            content: String::new(),
            reasoning: String::new(),
            tool_calls: Vec::new(),
            finish: None,
            usage: Usage::default(),
        }
    }

    fn chunk(&self, ctx: &Ctx, delta: Value, finish: Value, out: &mut BytesMut) {
        let v = json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": ctx.client_model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]});
        sse::write_event(out, None, &v.to_string());
    }

    pub fn event(&mut self, ev: &Ev, ctx: &Ctx, out: &mut BytesMut) {
        if self.done {
            return;
        }
        match ev {
            Ev::Start { id, .. } => {
                self.id =
                    if id.is_empty() { format!("chatcmpl-{}", ctx.ids.message()) } else { format!("chatcmpl-{id}") };
                self.chunk(ctx, json!({"role": "assistant", "content": ""}), Value::Null, out);
            }
            Ev::TextDelta(t) => {
                self.content.push_str(t);
                self.chunk(ctx, json!({"content": t}), Value::Null, out);
            }
            Ev::ThinkingDelta(t) => {
                self.reasoning.push_str(t);
                self.chunk(ctx, json!({"reasoning_content": t}), Value::Null, out);
            }
            Ev::ToolStart { id, name } => {
                self.tool_calls
                    .push(json!({"id": id, "type": "function", "function": {"name": name, "arguments": ""}}));
                self.chunk(
                    ctx,
                    json!({"tool_calls": [{"index": self.tool_ix, "id": id, "type": "function", "function": {"name": name, "arguments": ""}}]}),
                    Value::Null,
                    out,
                );
                self.tool_ix += 1;
            }
            Ev::ToolArgs(a) => {
                if let Some(last) = self.tool_calls.last_mut() {
                    let prev = last["function"]["arguments"].as_str().unwrap_or("").to_string();
                    last["function"]["arguments"] = json!(prev + a);
                }
                self.chunk(
                    ctx,
                    json!({"tool_calls": [{"index": self.tool_ix.saturating_sub(1), "function": {"arguments": a}}]}),
                    Value::Null,
                    out,
                );
            }
            Ev::Finish { stop, usage, .. } => {
                let finish = match stop {
                    Stop::MaxTokens | Stop::ContextWindow => "length",
                    Stop::ToolUse if !self.tool_calls.is_empty() => "tool_calls",
                    Stop::Refusal => "content_filter",
                    _ => "stop",
                };
                self.finish = Some(finish);
                self.usage = *usage;
                self.chunk(ctx, json!({}), json!(finish), out);
                if ctx.include_usage {
                    let v = json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": ctx.client_model,
                        "choices": [], "usage": usage_json(usage)});
                    sse::write_event(out, None, &v.to_string());
                }
                sse::write_event(out, None, "[DONE]");
                self.done = true;
            }
            Ev::Error { kind, message } => self.error(*kind, message, out),
            Ev::TextStart | Ev::ThinkingStart | Ev::Signature(_) | Ev::Redacted(_) | Ev::BlockStop => {}
        }
    }

    /// Ends the stream with an error chunk and no `[DONE]` (§7.3.3).
    pub fn error(&mut self, kind: ErrKind, message: &str, out: &mut BytesMut) {
        if self.done {
            return;
        }
        let (ty, code) = error_type_code(kind);
        let v = json!({"error": {"message": message, "type": ty, "param": null, "code": code}});
        sse::write_event(out, None, &v.to_string());
        self.done = true;
    }

    /// The non-streaming completion.
    pub fn completion(&self, ctx: &Ctx) -> Value {
        let mut message = Map::new();
        message.insert("role".into(), json!("assistant"));
        let content =
            if self.content.is_empty() && !self.tool_calls.is_empty() { Value::Null } else { json!(self.content) };
        message.insert("content".into(), content);
        if !self.reasoning.is_empty() {
            message.insert("reasoning_content".into(), json!(self.reasoning));
        }
        if !self.tool_calls.is_empty() {
            message.insert("tool_calls".into(), Value::Array(self.tool_calls.clone()));
        }
        json!({
            "id": self.id, "object": "chat.completion", "created": self.created, "model": ctx.client_model,
            "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": self.finish.unwrap_or("stop")}],
            "usage": usage_json(&self.usage),
        })
    }
}
