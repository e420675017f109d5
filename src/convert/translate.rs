//! The four translations (protocol-mapping §2–§5) as routes: which pair a
//! client protocol and a channel make, the translated request, and a `Relay`
//! that turns the upstream's answer into the client's (streaming or not).

use super::context::Ctx;
use super::ir::{Ev, Request};
use super::{anthropic, chat, errors, responses, Relay, Seen, StreamError};
use crate::api::{Endpoint, Protocol};
use crate::config::ChannelKind;
use crate::error::GatewayError;
use bytes::{Bytes, BytesMut};
use serde_json::Value;

/// A client protocol on an upstream that speaks another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pair {
    /// A: Anthropic Messages client → OpenAI Chat upstream.
    MessagesToChat,
    /// B: OpenAI Chat client → Anthropic upstream.
    ChatToMessages,
    /// C: Responses client → OpenAI Chat upstream.
    ResponsesToChat,
    /// D: Responses client → Anthropic upstream.
    ResponsesToMessages,
}

impl Pair {
    /// The pair for a client protocol on a channel kind, when one exists.
    pub fn between(client: Protocol, upstream: ChannelKind) -> Option<Pair> {
        match (client, upstream) {
            (Protocol::Messages, ChannelKind::OpenAi | ChannelKind::OpenAiChat) => Some(Pair::MessagesToChat),
            (Protocol::Chat, ChannelKind::Anthropic) => Some(Pair::ChatToMessages),
            (Protocol::Responses, ChannelKind::OpenAi | ChannelKind::OpenAiChat) => Some(Pair::ResponsesToChat),
            (Protocol::Responses, ChannelKind::Anthropic) => Some(Pair::ResponsesToMessages),
            _ => None,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Pair::MessagesToChat => "messages->chat",
            Pair::ChatToMessages => "chat->messages",
            Pair::ResponsesToChat => "responses->chat",
            Pair::ResponsesToMessages => "responses->messages",
        }
    }

    pub fn client(self) -> Protocol {
        match self {
            Pair::MessagesToChat => Protocol::Messages,
            Pair::ChatToMessages => Protocol::Chat,
            Pair::ResponsesToChat | Pair::ResponsesToMessages => Protocol::Responses,
        }
    }

    fn upstream_is_chat(self) -> bool {
        matches!(self, Pair::MessagesToChat | Pair::ResponsesToChat)
    }

    /// The upstream endpoint the translated request goes to.
    pub fn upstream_endpoint(self) -> Endpoint {
        if self.upstream_is_chat() {
            Endpoint::ChatCompletions
        } else {
            Endpoint::Messages
        }
    }
}

/// The client request as IR (for translation and local token counts).
pub fn parse(client: Protocol, body: &Value, ctx: &mut Ctx) -> Result<Request, GatewayError> {
    match client {
        Protocol::Messages | Protocol::CountTokens => anthropic::parse_request(body),
        Protocol::Chat => chat::parse_request(body),
        Protocol::Responses => responses::parse_request(body, ctx),
        Protocol::Embeddings => Err(GatewayError::Unsupported {
            param: "model",
            code: "model_not_supported",
            message: "embeddings cannot be translated to another API".into(),
        }),
    }
}

/// Translates a client request body for `pair`; fills `ctx` (prompt
/// estimate, tool names, echo fields) for the response side.
pub fn request(pair: Pair, body: &Value, ctx: &mut Ctx) -> Result<Bytes, GatewayError> {
    let ir = parse(pair.client(), body, ctx)?;
    ctx.prompt_estimate = super::support::estimate_request(&ir);
    ctx.declared_tools = ir.tools.iter().map(|t| t.name.clone()).collect();
    if pair.client() == Protocol::Responses {
        ctx.echo = responses::echo_of(body);
    }
    if pair.client() == Protocol::Chat {
        ctx.include_usage = body.pointer("/stream_options/include_usage").and_then(Value::as_bool) == Some(true);
    }
    let out = if pair.upstream_is_chat() { chat::emit_request(&ir, ctx)? } else { anthropic::emit_request(&ir, ctx)? };
    Ok(Bytes::from(serde_json::to_vec(&out).map_err(|e| GatewayError::Internal(e.to_string()))?))
}

enum Parse {
    Chat(Box<chat::Parser>),
    Anthropic(anthropic::Parser),
}

enum Emit {
    Anthropic(anthropic::Emitter),
    Chat(chat::Emitter),
    Responses(responses::Emitter),
}

impl Emit {
    fn event(&mut self, ev: &Ev, ctx: &Ctx, out: &mut BytesMut) {
        match self {
            Emit::Anthropic(e) => e.event(ev, ctx, out),
            Emit::Chat(e) => e.event(ev, ctx, out),
            Emit::Responses(e) => e.event(ev, ctx, out),
        }
    }

    fn aggregate(&self, ctx: &Ctx) -> Value {
        match self {
            Emit::Anthropic(e) => e.message(ctx),
            Emit::Chat(e) => e.completion(ctx),
            Emit::Responses(e) => e.response(ctx),
        }
    }
}

/// A translating relay: upstream bytes → IR events → client bytes.
pub struct Translating {
    ctx: Ctx,
    parse: Parse,
    emit: Emit,
    upstream_stream: bool,
    client_stream: bool,
    json: Vec<u8>,
    /// The non-streaming body outgrew `MAX_JSON_BUFFER` and was dropped.
    overflow: bool,
    seen: Seen,
}

impl Translating {
    /// `upstream_stream`: the upstream answers with SSE; `client_stream`: the
    /// client asked for a stream.
    pub fn new(pair: Pair, ctx: Ctx, upstream_stream: bool, client_stream: bool) -> Translating {
        let parse = if pair.upstream_is_chat() {
            Parse::Chat(Box::new(chat::Parser::new(&ctx)))
        } else {
            Parse::Anthropic(anthropic::Parser::new())
        };
        let emit = match pair {
            Pair::MessagesToChat => Emit::Anthropic(anthropic::Emitter::new(&ctx)),
            Pair::ChatToMessages => Emit::Chat(chat::Emitter::new(&ctx)),
            Pair::ResponsesToChat => Emit::Responses(responses::Emitter::new(&ctx, false)),
            Pair::ResponsesToMessages => Emit::Responses(responses::Emitter::new(&ctx, true)),
        };
        let json = Vec::new();
        Translating { ctx, parse, emit, upstream_stream, client_stream, json, overflow: false, seen: Seen::default() }
    }

    fn track(&mut self, ev: &Ev) {
        match ev {
            Ev::Start { usage, .. } => self.seen.usage = *usage,
            Ev::TextStart | Ev::ThinkingStart | Ev::ToolStart { .. } | Ev::Redacted(_) => self.seen.content = true,
            Ev::TextDelta(t) | Ev::ThinkingDelta(t) | Ev::ToolArgs(t) => self.seen.output_chars += t.len() as u64,
            Ev::Finish { usage, estimated, .. } => {
                self.seen.usage = Some(*usage);
                self.seen.usage_final = !estimated;
                self.seen.content = true;
            }
            Ev::Error { message, kind } => {
                self.seen.error = Some(StreamError { message: message.clone(), kind: Some(format!("{kind:?}")) })
            }
            _ => {}
        }
    }

    fn emit_all(&mut self, events: Vec<Ev>, out: &mut BytesMut) {
        for ev in &events {
            self.track(ev);
            self.emit.event(ev, &self.ctx, out);
        }
    }

    /// What the client gets for an upstream answer too large to translate:
    /// an error in its API's shape, recorded as the stream's error.
    fn too_large(&mut self) -> Bytes {
        let limit = super::passthrough::MAX_JSON_BUFFER >> 20;
        let message = format!("The upstream answer is larger than {limit} MiB; the gateway does not translate it");
        log::warn!("{message}");
        self.seen.error = Some(StreamError { message: message.clone(), kind: Some("TooLarge".into()) });
        if self.client_stream {
            return self.abort(&message);
        }
        let body = match self.emit {
            Emit::Anthropic(_) => {
                serde_json::json!({"type": "error", "error": {"type": "api_error", "message": message}})
            }
            _ => {
                serde_json::json!({"error": {"type": "server_error", "message": message, "param": null, "code": null}})
            }
        };
        Bytes::from(body.to_string())
    }

    /// Runs a whole non-streaming upstream body through.
    fn translate_json(&mut self) -> Vec<Ev> {
        let mut events = Vec::new();
        let v: Value = serde_json::from_slice(&self.json).unwrap_or(Value::Null);
        match &mut self.parse {
            Parse::Chat(p) => p.completion(&v, &mut events),
            Parse::Anthropic(_) => anthropic::Parser::message(&v, &mut events),
        }
        events
    }
}

impl Relay for Translating {
    fn push(&mut self, chunk: Bytes) -> Bytes {
        if !self.upstream_stream {
            // Bounded like a pass-through body's buffer: past it, the answer
            // cannot be translated and its bytes are not kept.
            if self.json.len() + chunk.len() > super::passthrough::MAX_JSON_BUFFER {
                self.overflow = true;
                self.json = Vec::new();
            } else if !self.overflow {
                self.json.extend_from_slice(&chunk);
            }
            self.seen.content |= !chunk.is_empty();
            return Bytes::new();
        }
        let mut events = Vec::new();
        match &mut self.parse {
            Parse::Chat(p) => p.push(&chunk, &mut events),
            Parse::Anthropic(p) => p.push(&chunk, &mut events),
        }
        let mut out = BytesMut::new();
        self.emit_all(events, &mut out);
        if self.client_stream {
            out.freeze()
        } else {
            Bytes::new()
        }
    }

    fn finish(&mut self) -> Bytes {
        if self.overflow {
            return self.too_large();
        }
        let events = if self.upstream_stream {
            let mut events = Vec::new();
            match &mut self.parse {
                Parse::Chat(p) => p.finish(&mut events),
                Parse::Anthropic(p) => p.finish(&mut events),
            }
            events
        } else {
            self.translate_json()
        };
        let mut out = BytesMut::new();
        self.emit_all(events, &mut out);
        if self.client_stream {
            out.freeze()
        } else {
            Bytes::from(self.emit.aggregate(&self.ctx).to_string())
        }
    }

    fn seen(&self) -> &Seen {
        &self.seen
    }
    fn preserves_length(&self) -> bool {
        false
    }
    fn abort(&mut self, message: &str) -> Bytes {
        let mut out = BytesMut::new();
        let ev = Ev::Error { kind: super::ir::ErrKind::Server, message: message.to_string() };
        self.emit.event(&ev, &self.ctx, &mut out);
        if self.client_stream {
            out.freeze()
        } else {
            Bytes::new()
        }
    }
}

/// An upstream error response for a translated request, in the client's
/// protocol: status, content type, body.
pub fn error(
    pair: Pair,
    status: u16,
    body: &[u8],
    ctx: &Ctx,
    stream: bool,
    retry_after: Option<u64>,
) -> (u16, &'static str, Bytes) {
    let e = errors::classify(status, body);
    errors::render(&e, pair.client(), ctx, stream, retry_after)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::support::{FixedIds, Signer};
    use std::sync::Arc;

    #[test]
    fn a_non_streaming_answer_past_the_buffer_limit_is_dropped_not_kept() {
        let ctx = Ctx::new("m", "up", Arc::new(FixedIds::new(1_700_000_000)), Arc::new(Signer::new([0; 32])));
        let mut t = Translating::new(Pair::MessagesToChat, ctx, false, false);
        let chunk = Bytes::from(vec![b' '; 1 << 20]);
        let limit_chunks = super::super::passthrough::MAX_JSON_BUFFER >> 20;
        for _ in 0..=limit_chunks {
            assert!(t.push(chunk.clone()).is_empty());
        }
        assert!(t.json.capacity() == 0, "the buffer was released, not kept growing");
        let body: Value = serde_json::from_slice(&t.finish()).unwrap();
        assert_eq!(body["type"], "error", "an Anthropic client gets its error shape: {body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("larger than 64 MiB"));
        assert!(t.stream_error().is_some());
    }
}
