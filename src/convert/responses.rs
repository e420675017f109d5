//! The OpenAI Responses side of translations (Codex CLI's API): requests into
//! the IR (§4.1–4.3, §5.1) and IR events out as Responses events or a Response
//! object (§4.4–4.7, §5.2–5.5).

use super::context::Ctx;
use super::ir::*;
use super::support::{image_part, parse_data_url};
use crate::error::GatewayError;
use crate::sse;
use crate::usage::Usage;
use bytes::BytesMut;
use serde_json::{json, Map, Value};

/// Prefixes that carry Anthropic thinking through Codex's `encrypted_content`.
pub const SIG_PREFIX: &str = "anthropic.sig.v1:";
pub const REDACTED_PREFIX: &str = "anthropic.redacted.v1:";

// ---------------------------------------------------------------- request in

fn unsupported(param: &'static str, message: &str) -> GatewayError {
    GatewayError::Unsupported { param, code: "unsupported_parameter", message: message.to_string() }
}

fn input_parts(content: &Value) -> Result<Vec<Part>, GatewayError> {
    let mut out = Vec::new();
    match content {
        Value::String(s) if !s.trim().is_empty() => out.push(Part::Text(s.clone())),
        Value::Array(parts) => {
            for p in parts {
                match p.get("type").and_then(Value::as_str).unwrap_or("") {
                    "input_text" | "output_text" | "text" => {
                        if let Some(t) = p["text"].as_str().filter(|t| !t.trim().is_empty()) {
                            out.push(Part::Text(t.to_string()));
                        }
                    }
                    "refusal" => {
                        if let Some(t) = p["refusal"].as_str() {
                            out.push(Part::Text(t.to_string()));
                        }
                    }
                    "input_image" => {
                        if p.get("file_id").is_some_and(|f| !f.is_null()) {
                            return Err(unsupported(
                                "input",
                                "input_image with file_id needs the provider's file store",
                            ));
                        }
                        let url = p.get("image_url").and_then(Value::as_str).unwrap_or("");
                        out.push(image_part(url));
                    }
                    "input_file" => {
                        let data = p.get("file_data").and_then(Value::as_str).unwrap_or("");
                        let Some((media_type, data)) = parse_data_url(data) else {
                            return Err(unsupported("input", "input_file needs file_data as a base64 data URL"));
                        };
                        out.push(Part::File {
                            media_type,
                            data,
                            filename: p.get("filename").and_then(Value::as_str).map(str::to_string),
                        });
                    }
                    _ => {}
                }
            }
        }
        _ => {}
    }
    Ok(out)
}

fn text_parts(parts: &[Part]) -> String {
    parts
        .iter()
        .filter_map(|p| if let Part::Text(t) = p { Some(t.as_str()) } else { None })
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// A Responses request as IR; `ctx.tools` learns namespaced and custom tools.
pub fn parse_request(v: &Value, ctx: &mut Ctx) -> Result<Request, GatewayError> {
    if v.get("previous_response_id").is_some_and(|p| !p.is_null()) {
        return Err(unsupported(
            "previous_response_id",
            "previous_response_id is not supported for this model (stateless translation)",
        ));
    }
    if v.get("conversation").is_some_and(|p| !p.is_null()) {
        return Err(unsupported(
            "conversation",
            "conversation is not supported for this model (stateless translation)",
        ));
    }
    if v.get("background").and_then(Value::as_bool) == Some(true) {
        return Err(unsupported("background", "background responses are not supported for this model"));
    }
    let mut r = Request::default();
    if let Some(i) = v.get("instructions").and_then(Value::as_str).filter(|i| !i.trim().is_empty()) {
        r.system.push(i.to_string());
    }
    let items: Vec<Value> = match v.get("input") {
        Some(Value::String(s)) => vec![json!({"type": "message", "role": "user", "content": s})],
        Some(Value::Array(a)) => a.clone(),
        _ => Vec::new(),
    };
    // Calls that get an output somewhere in the input.
    let answered: Vec<&str> = items
        .iter()
        .filter(|i| {
            matches!(i.get("type").and_then(Value::as_str), Some("function_call_output" | "custom_tool_call_output"))
        })
        .filter_map(|i| i.get("call_id").and_then(Value::as_str))
        .collect();
    let mut pending_reasoning: Vec<Part> = Vec::new();
    let mut awaiting: Vec<String> = Vec::new();
    let mut deferred: Vec<Turn> = Vec::new();
    let mut seen_conversation = false;
    let push = |r: &mut Request, role: Role, part: Part| match r.turns.last_mut() {
        Some(t) if t.role == role => t.parts.push(part),
        _ => r.turns.push(Turn { role, parts: vec![part] }),
    };
    for item in &items {
        let ty =
            item.get("type").and_then(Value::as_str).unwrap_or(if item.get("role").is_some() { "message" } else { "" });
        match ty {
            "message" => {
                let role = item.get("role").and_then(Value::as_str).unwrap_or("user");
                let parts = input_parts(item.get("content").unwrap_or(&Value::Null))?;
                match role {
                    "system" | "developer" if !seen_conversation => {
                        let t = text_parts(&parts);
                        if !t.is_empty() {
                            r.system.push(t);
                        }
                    }
                    "system" | "developer" => {
                        let turn = Turn { role: Role::System, parts };
                        if awaiting.is_empty() {
                            r.turns.push(turn)
                        } else {
                            deferred.push(turn)
                        }
                    }
                    "assistant" => {
                        seen_conversation = true;
                        let mut parts = parts;
                        let mut all = std::mem::take(&mut pending_reasoning);
                        all.append(&mut parts);
                        r.turns.push(Turn { role: Role::Assistant, parts: all });
                    }
                    _ => {
                        seen_conversation = true;
                        // Nothing may come between calls and their outputs.
                        let turn = Turn { role: Role::User, parts };
                        if awaiting.is_empty() {
                            r.turns.push(turn)
                        } else {
                            deferred.push(turn)
                        }
                    }
                }
            }
            "reasoning" => {
                let summary: Vec<&str> =
                    item["summary"].as_array().into_iter().flatten().filter_map(|s| s["text"].as_str()).collect();
                let content: Vec<&str> =
                    item["content"].as_array().into_iter().flatten().filter_map(|s| s["text"].as_str()).collect();
                let text = if summary.is_empty() { content.join("\n\n") } else { summary.join("\n\n") };
                match item.get("encrypted_content").and_then(Value::as_str) {
                    Some(e) if e.starts_with(REDACTED_PREFIX) => {
                        pending_reasoning.push(Part::RedactedReasoning(e[REDACTED_PREFIX.len()..].to_string()))
                    }
                    Some(e) if e.starts_with(SIG_PREFIX) => pending_reasoning
                        .push(Part::Reasoning { text, sig: Some(Sig::Anthropic(e[SIG_PREFIX.len()..].to_string())) }),
                    // Another provider's encrypted reasoning: only the text is usable.
                    _ => pending_reasoning.push(Part::Reasoning { text, sig: None }),
                }
            }
            "function_call" | "custom_tool_call" => {
                seen_conversation = true;
                let call_id = item.get("call_id").and_then(Value::as_str).unwrap_or("").to_string();
                let mut name = item.get("name").and_then(Value::as_str).unwrap_or("").to_string();
                if let Some(ns) = item.get("namespace").and_then(Value::as_str) {
                    name = format!("{ns}__{name}");
                }
                let arguments = if ty == "custom_tool_call" {
                    json!({"input": item.get("input").and_then(Value::as_str).unwrap_or("")}).to_string()
                } else {
                    item.get("arguments").and_then(Value::as_str).unwrap_or("{}").to_string()
                };
                for p in std::mem::take(&mut pending_reasoning) {
                    push(&mut r, Role::Assistant, p);
                }
                if answered.contains(&call_id.as_str()) {
                    awaiting.push(call_id.clone());
                }
                // Joins the assistant turn right before it (text and calls of one turn).
                match r.turns.last_mut() {
                    Some(t) if t.role == Role::Assistant => {
                        t.parts.push(Part::ToolCall { id: call_id, name, arguments })
                    }
                    _ => r.turns.push(Turn {
                        role: Role::Assistant,
                        parts: vec![Part::ToolCall { id: call_id, name, arguments }],
                    }),
                }
            }
            "function_call_output" | "custom_tool_call_output" => {
                let call_id = item.get("call_id").and_then(Value::as_str).unwrap_or("").to_string();
                let content = input_parts(item.get("output").unwrap_or(&Value::Null))?;
                push(&mut r, Role::User, Part::ToolResult { call_id: call_id.clone(), content, is_error: false });
                awaiting.retain(|a| *a != call_id);
                if awaiting.is_empty() {
                    r.turns.append(&mut deferred);
                }
            }
            "item_reference" => {
                return Err(unsupported(
                    "input",
                    "item_reference is not supported for this model (stateless translation)",
                ))
            }
            _ => {}
        }
    }
    r.turns.append(&mut deferred);

    let mut seen = std::collections::HashSet::new();
    let mut add_tool = |r: &mut Request, t: Tool| {
        if seen.insert(t.name.clone()) {
            r.tools.push(t);
        }
    };
    for t in v.get("tools").and_then(Value::as_array).into_iter().flatten() {
        let name = t.get("name").and_then(Value::as_str).unwrap_or("").to_string();
        let desc = t.get("description").and_then(Value::as_str).map(str::to_string);
        match t.get("type").and_then(Value::as_str) {
            Some("function") => add_tool(
                &mut r,
                Tool {
                    name,
                    description: desc,
                    schema: t.get("parameters").cloned().unwrap_or_else(|| json!({"type": "object", "properties": {}})),
                    custom: false,
                },
            ),
            Some("custom") => {
                let mut description = desc.unwrap_or_default();
                if let Some(def) = t.pointer("/format/definition").and_then(Value::as_str) {
                    let syntax = t.pointer("/format/syntax").and_then(Value::as_str).unwrap_or("grammar");
                    description.push_str(&format!("\n\nThe input argument must follow this {syntax} grammar:\n{def}"));
                }
                ctx.tools.mark_custom(&name);
                let schema =
                    json!({"type": "object", "properties": {"input": {"type": "string"}}, "required": ["input"]});
                add_tool(&mut r, Tool { name, description: Some(description), schema, custom: true });
            }
            Some("namespace") => {
                for child in t.get("tools").and_then(Value::as_array).into_iter().flatten() {
                    let cname = child.get("name").and_then(Value::as_str).unwrap_or("");
                    let flat = if cname.starts_with("mcp__") || cname.starts_with(&name) {
                        cname.to_string()
                    } else {
                        format!("{name}__{cname}")
                    };
                    if flat != cname {
                        ctx.tools.mark_namespaced(&flat, &name, cname);
                    }
                    add_tool(
                        &mut r,
                        Tool {
                            name: flat,
                            description: child.get("description").and_then(Value::as_str).map(str::to_string),
                            schema: child
                                .get("parameters")
                                .cloned()
                                .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
                            custom: false,
                        },
                    );
                }
            }
            // Hosted tools (web_search, file_search, …) have no equivalent.
            _ => {}
        }
    }
    r.tool_choice = match v.get("tool_choice") {
        Some(Value::String(s)) => ToolChoice::keyword(s),
        Some(o @ Value::Object(_)) => match o.get("type").and_then(Value::as_str) {
            Some("function") | Some("custom") => {
                o.get("name").and_then(Value::as_str).map(|n| ToolChoice::Named(n.to_string()))
            }
            Some(other) if !["allowed_tools"].contains(&other) => {
                return Err(unsupported("tool_choice", &format!("tool_choice {other} is not supported for this model")))
            }
            _ => Some(ToolChoice::Auto),
        },
        _ => None,
    };
    r.parallel_tool_calls = v.get("parallel_tool_calls").and_then(Value::as_bool);
    if let Some(e) = v.pointer("/reasoning/effort").and_then(Value::as_str) {
        r.reasoning = Reasoning { effort: Some(e.to_string()), budget_tokens: None, enabled: Some(e != "none") };
    }
    match v.pointer("/text/format/type").and_then(Value::as_str) {
        Some("json_schema") => {
            let f = &v["text"]["format"];
            let mut s = json!({"name": f.get("name").cloned().unwrap_or(json!("output")), "schema": f.get("schema").cloned().unwrap_or(json!({}))});
            if let Some(strict) = f.get("strict") {
                s["strict"] = strict.clone();
            }
            r.response_format = Some(s);
        }
        Some("json_object") => r.json_object = true,
        _ => {}
    }
    r.max_output = v.get("max_output_tokens").and_then(Value::as_u64);
    r.temperature = v.get("temperature").and_then(Value::as_f64);
    r.top_p = v.get("top_p").and_then(Value::as_f64);
    r.stream = v.get("stream").and_then(Value::as_bool).unwrap_or(false);
    r.user = v.get("user").or_else(|| v.get("safety_identifier")).and_then(Value::as_str).map(str::to_string);
    Ok(r)
}

/// The request fields a Response object echoes.
pub fn echo_of(v: &Value) -> Value {
    json!({
        "instructions": v.get("instructions").cloned().unwrap_or(Value::Null),
        "max_output_tokens": v.get("max_output_tokens").cloned().unwrap_or(Value::Null),
        "parallel_tool_calls": v.get("parallel_tool_calls").cloned().unwrap_or(json!(true)),
        "reasoning": v.get("reasoning").cloned().unwrap_or(json!({"effort": null, "summary": null})),
        "store": v.get("store").cloned().unwrap_or(json!(false)),
        "temperature": v.get("temperature").cloned().unwrap_or(json!(1)),
        "text": v.get("text").cloned().unwrap_or(json!({"format": {"type": "text"}})),
        "tool_choice": v.get("tool_choice").cloned().unwrap_or(json!("auto")),
        "tools": v.get("tools").cloned().unwrap_or(json!([])),
        "top_p": v.get("top_p").cloned().unwrap_or(json!(1)),
    })
}

// ---------------------------------------------------------------- response out

/// Responses error codes (§7.3.0, last column).
pub fn error_code(kind: ErrKind) -> &'static str {
    match kind {
        ErrKind::InvalidRequest | ErrKind::TooLarge => "invalid_prompt",
        ErrKind::ContextOverflow => "context_length_exceeded",
        ErrKind::RateLimit => "rate_limit_exceeded",
        ErrKind::Quota => "insufficient_quota",
        ErrKind::Overloaded => "server_is_overloaded",
        _ => "server_error",
    }
}

pub fn usage_json(u: &Usage) -> Value {
    let input = u.prompt_total();
    json!({
        "input_tokens": input,
        "input_tokens_details": {"cached_tokens": u.cache_read, "cache_write_tokens": u.cache_write},
        "output_tokens": u.output,
        "output_tokens_details": {"reasoning_tokens": u.reasoning},
        "total_tokens": input + u.output,
    })
}

#[derive(Debug)]
enum Item {
    Message { id: String, ix: u64, parts: Vec<String>, open_part: bool },
    Reasoning { id: String, ix: u64, text: String, sig: Option<String> },
    Call { id: String, ix: u64, call_id: String, name: String, args: String, custom: bool },
}

/// Writes IR events as Responses events (streaming) and builds the Response
/// object (both modes: `response.completed` carries it too).
pub struct Emitter {
    seq: u64,
    id: String,
    /// Item ids are `msg_<suffix>_<n>`: the response id without `resp_`.
    suffix: String,
    /// The response id comes from the upstream message (Anthropic) or is generated.
    id_from_upstream: bool,
    created: u64,
    next_ix: u64,
    open: Option<Item>,
    done_items: Vec<Value>,
    status: &'static str,
    incomplete: Value,
    error: Value,
    usage: Option<Usage>,
    finished: bool,
}

impl Emitter {
    pub fn new(ctx: &Ctx, id_from_upstream: bool) -> Emitter {
        Emitter {
            seq: 0,
            id: String::new(),
            suffix: String::new(),
            id_from_upstream,
            created: ctx.ids.now(),
            next_ix: 0,
            open: None,
            done_items: Vec::new(),
            status: "in_progress",
            incomplete: Value::Null,
            error: Value::Null,
            usage: None,
            finished: false,
        }
    }

    fn emit(&mut self, out: &mut BytesMut, ty: &str, fields: Value) {
        let mut m = Map::new();
        m.insert("type".into(), json!(ty));
        m.insert("sequence_number".into(), json!(self.seq));
        if let Value::Object(f) = fields {
            m.extend(f);
        }
        self.seq += 1;
        sse::write_event(out, Some(ty), &Value::Object(m).to_string());
    }

    /// The Response object in its current state.
    pub fn response(&self, ctx: &Ctx) -> Value {
        let e = &ctx.echo;
        let get = |k: &str, d: Value| e.get(k).cloned().unwrap_or(d);
        let completed_at =
            if matches!(self.status, "completed" | "incomplete") { json!(ctx.ids.now()) } else { Value::Null };
        json!({
            "id": self.id, "object": "response", "created_at": self.created, "status": self.status,
            "completed_at": completed_at, "error": self.error, "incomplete_details": self.incomplete,
            "instructions": get("instructions", Value::Null), "max_output_tokens": get("max_output_tokens", Value::Null),
            "model": ctx.client_model, "output": self.done_items,
            "parallel_tool_calls": get("parallel_tool_calls", json!(true)), "previous_response_id": null,
            "reasoning": get("reasoning", json!({"effort": null, "summary": null})), "store": get("store", json!(false)),
            "temperature": get("temperature", json!(1)), "text": get("text", json!({"format": {"type": "text"}})),
            "tool_choice": get("tool_choice", json!("auto")), "tools": get("tools", json!([])),
            "top_p": get("top_p", json!(1)), "truncation": "disabled",
            "usage": self.usage.as_ref().map_or(Value::Null, usage_json), "user": null, "metadata": {},
        })
    }

    fn alloc(&mut self) -> u64 {
        let ix = self.next_ix;
        self.next_ix += 1;
        ix
    }

    /// Closes the open item (message items stay open across text blocks).
    fn close_item(&mut self, ctx: &Ctx, item_status: &str, out: &mut BytesMut) {
        let Some(item) = self.open.take() else { return };
        let (ix, done) = match item {
            Item::Message { id, ix, parts, open_part } => {
                if open_part {
                    let text = parts.last().cloned().unwrap_or_default();
                    let ci = parts.len() - 1;
                    self.emit(
                        out,
                        "response.output_text.done",
                        json!({"item_id": id, "output_index": ix, "content_index": ci, "text": text, "logprobs": []}),
                    );
                    self.emit(
                        out,
                        "response.content_part.done",
                        json!({"item_id": id, "output_index": ix, "content_index": ci,
                        "part": {"type": "output_text", "text": text, "annotations": [], "logprobs": []}}),
                    );
                }
                let content: Vec<Value> = parts
                    .iter()
                    .map(|t| json!({"type": "output_text", "text": t, "annotations": [], "logprobs": []}))
                    .collect();
                (
                    ix,
                    json!({"id": id, "type": "message", "status": item_status, "role": "assistant", "content": content}),
                )
            }
            Item::Reasoning { id, ix, text, sig } => {
                self.emit(
                    out,
                    "response.reasoning_summary_text.done",
                    json!({"item_id": id, "output_index": ix, "summary_index": 0, "text": text}),
                );
                self.emit(
                    out,
                    "response.reasoning_summary_part.done",
                    json!({"item_id": id, "output_index": ix, "summary_index": 0,
                    "part": {"type": "summary_text", "text": text}}),
                );
                let mut item =
                    json!({"id": id, "type": "reasoning", "summary": [{"type": "summary_text", "text": text}]});
                if let Some(s) = sig {
                    item["encrypted_content"] = json!(format!("{SIG_PREFIX}{s}"));
                }
                (ix, item)
            }
            Item::Call { id, ix, call_id, name, args, custom } => {
                let (display, namespace) = match ctx.tools.namespace_of(&name) {
                    Some((ns, child)) => (child.clone(), Some(ns.clone())),
                    None => (name.clone(), None),
                };
                let mut item = if custom {
                    let input = serde_json::from_str::<Value>(&args)
                        .ok()
                        .and_then(|v| v["input"].as_str().map(str::to_string))
                        .unwrap_or(args.clone());
                    self.emit(
                        out,
                        "response.custom_tool_call_input.delta",
                        json!({"item_id": id, "output_index": ix, "delta": input}),
                    );
                    self.emit(
                        out,
                        "response.custom_tool_call_input.done",
                        json!({"item_id": id, "output_index": ix, "input": input}),
                    );
                    json!({"id": id, "type": "custom_tool_call", "status": item_status, "call_id": call_id, "name": display, "input": input})
                } else {
                    let args = if args.is_empty() { "{}".to_string() } else { args };
                    self.emit(
                        out,
                        "response.function_call_arguments.done",
                        json!({"item_id": id, "output_index": ix, "name": display, "arguments": args}),
                    );
                    json!({"id": id, "type": "function_call", "status": item_status, "call_id": call_id, "name": display, "arguments": args})
                };
                if let Some(ns) = namespace {
                    item["namespace"] = json!(ns);
                }
                (ix, item)
            }
        };
        self.emit(out, "response.output_item.done", json!({"output_index": ix, "item": done.clone()}));
        self.done_items.push(done);
    }

    pub fn event(&mut self, ev: &Ev, ctx: &Ctx, out: &mut BytesMut) {
        if self.finished {
            return;
        }
        match ev {
            Ev::Start { id, .. } => {
                self.id =
                    if self.id_from_upstream && !id.is_empty() { format!("resp_{id}") } else { ctx.ids.response() };
                self.suffix = self.id.trim_start_matches("resp_").to_string();
                let r = self.response(ctx);
                self.emit(out, "response.created", json!({"response": r}));
                self.emit(out, "response.in_progress", json!({"response": r}));
            }
            Ev::TextStart => {
                let reuse = matches!(self.open, Some(Item::Message { .. }));
                if !reuse {
                    self.close_item(ctx, "completed", out);
                    let ix = self.alloc();
                    let id = format!("msg_{}_{ix}", self.suffix);
                    self.emit(out, "response.output_item.added", json!({"output_index": ix,
                        "item": {"id": id, "type": "message", "status": "in_progress", "role": "assistant", "content": []}}));
                    self.open = Some(Item::Message { id, ix, parts: Vec::new(), open_part: false });
                }
                let (id, ix, ci) = match &mut self.open {
                    Some(Item::Message { id, ix, parts, open_part }) => {
                        parts.push(String::new());
                        *open_part = true;
                        (id.clone(), *ix, parts.len() - 1)
                    }
                    _ => return,
                };
                self.emit(
                    out,
                    "response.content_part.added",
                    json!({"item_id": id, "output_index": ix, "content_index": ci,
                    "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}}),
                );
            }
            Ev::TextDelta(t) => {
                if let Some(Item::Message { id, ix, parts, .. }) = &mut self.open {
                    if let Some(last) = parts.last_mut() {
                        last.push_str(t);
                    }
                    let (id, ix, ci) = (id.clone(), *ix, parts.len() - 1);
                    self.emit(
                        out,
                        "response.output_text.delta",
                        json!({"item_id": id, "output_index": ix, "content_index": ci, "delta": t, "logprobs": []}),
                    );
                }
            }
            Ev::ThinkingStart => {
                self.close_item(ctx, "completed", out);
                let ix = self.alloc();
                let id = format!("rs_{}_{ix}", self.suffix);
                self.emit(
                    out,
                    "response.output_item.added",
                    json!({"output_index": ix, "item": {"id": id, "type": "reasoning", "summary": []}}),
                );
                self.emit(
                    out,
                    "response.reasoning_summary_part.added",
                    json!({"item_id": id, "output_index": ix, "summary_index": 0,
                    "part": {"type": "summary_text", "text": ""}}),
                );
                self.open = Some(Item::Reasoning { id, ix, text: String::new(), sig: None });
            }
            Ev::ThinkingDelta(t) => {
                if let Some(Item::Reasoning { id, ix, text, .. }) = &mut self.open {
                    text.push_str(t);
                    let (id, ix) = (id.clone(), *ix);
                    self.emit(
                        out,
                        "response.reasoning_summary_text.delta",
                        json!({"item_id": id, "output_index": ix, "summary_index": 0, "delta": t}),
                    );
                }
            }
            // Only Anthropic's own signatures ride along (never fabricated).
            Ev::Signature(Sig::Anthropic(s)) => {
                if let Some(Item::Reasoning { sig, .. }) = &mut self.open {
                    *sig = Some(s.clone());
                }
            }
            Ev::Signature(Sig::Gateway(_)) => {}
            Ev::Redacted(data) => {
                self.close_item(ctx, "completed", out);
                let ix = self.alloc();
                let item = json!({"id": format!("rs_{}_{ix}", self.suffix), "type": "reasoning", "summary": [],
                    "encrypted_content": format!("{REDACTED_PREFIX}{data}")});
                self.emit(out, "response.output_item.added", json!({"output_index": ix, "item": item.clone()}));
                self.emit(out, "response.output_item.done", json!({"output_index": ix, "item": item.clone()}));
                self.done_items.push(item);
            }
            Ev::ToolStart { id: call_id, name } => {
                self.close_item(ctx, "completed", out);
                let ix = self.alloc();
                let custom = ctx.tools.is_custom(name);
                let id = format!("{}{call_id}", if custom { "ctc_" } else { "fc_" });
                let (display, namespace) = match ctx.tools.namespace_of(name) {
                    Some((ns, child)) => (child.clone(), Some(ns.clone())),
                    None => (name.clone(), None),
                };
                let mut item = if custom {
                    json!({"id": id, "type": "custom_tool_call", "status": "in_progress", "call_id": call_id, "name": display, "input": ""})
                } else {
                    json!({"id": id, "type": "function_call", "status": "in_progress", "call_id": call_id, "name": display, "arguments": ""})
                };
                if let Some(ns) = namespace {
                    item["namespace"] = json!(ns);
                }
                self.emit(out, "response.output_item.added", json!({"output_index": ix, "item": item}));
                self.open = Some(Item::Call {
                    id,
                    ix,
                    call_id: call_id.clone(),
                    name: name.clone(),
                    args: String::new(),
                    custom,
                });
            }
            Ev::ToolArgs(a) => {
                if let Some(Item::Call { id, ix, args, custom, .. }) = &mut self.open {
                    args.push_str(a);
                    if !*custom && !a.is_empty() {
                        let (id, ix) = (id.clone(), *ix);
                        self.emit(
                            out,
                            "response.function_call_arguments.delta",
                            json!({"item_id": id, "output_index": ix, "delta": a}),
                        );
                    }
                }
            }
            Ev::BlockStop => {
                match &mut self.open {
                    // A text block ends its content part; the message stays open.
                    Some(Item::Message { id, ix, parts, open_part }) if *open_part => {
                        *open_part = false;
                        let (id, ix, ci, text) =
                            (id.clone(), *ix, parts.len() - 1, parts.last().cloned().unwrap_or_default());
                        self.emit(out, "response.output_text.done", json!({"item_id": id, "output_index": ix, "content_index": ci, "text": text, "logprobs": []}));
                        self.emit(
                            out,
                            "response.content_part.done",
                            json!({"item_id": id, "output_index": ix, "content_index": ci,
                        "part": {"type": "output_text", "text": text, "annotations": [], "logprobs": []}}),
                        );
                    }
                    Some(Item::Message { .. }) => {}
                    _ => self.close_item(ctx, "completed", out),
                }
            }
            Ev::Finish { stop, usage, .. } => {
                let (status, reason) = match stop {
                    Stop::MaxTokens | Stop::ContextWindow => ("incomplete", Some("max_output_tokens")),
                    Stop::Refusal => ("incomplete", Some("content_filter")),
                    _ => ("completed", None),
                };
                self.close_item(ctx, status, out);
                self.status = status;
                self.incomplete = reason.map_or(Value::Null, |r| json!({"reason": r}));
                self.usage = Some(*usage);
                let r = self.response(ctx);
                let ty = if status == "completed" { "response.completed" } else { "response.incomplete" };
                self.emit(out, ty, json!({"response": r}));
                self.finished = true;
            }
            Ev::Error { kind, message } => self.error(ctx, *kind, message, out),
        }
    }

    /// `response.failed` with what was done so far (§7.3.3).
    pub fn error(&mut self, ctx: &Ctx, kind: ErrKind, message: &str, out: &mut BytesMut) {
        if self.finished {
            return;
        }
        if self.id.is_empty() {
            self.event(&Ev::Start { id: String::new(), usage: None }, ctx, out);
        }
        self.status = "failed";
        self.error = json!({"code": error_code(kind), "message": message});
        let r = self.response(ctx);
        self.emit(out, "response.failed", json!({"response": r}));
        self.finished = true;
    }
}
