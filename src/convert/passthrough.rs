//! Same-protocol relays: the client gets the upstream's bytes unchanged; the
//! relay only reads usage on the way. The one rewrite: a chat stream's usage-only
//! chunk, which the gateway requested for billing, is dropped when the client
//! did not ask for it itself.

use super::scan;
use super::{Relay, Seen, StreamError};
use crate::api::Protocol;
use crate::sse::{self, Splitter};
use crate::usage::{ChatChunk, Usage, UsageFields};
use bytes::{Bytes, BytesMut};
use serde_json::Value;

/// Largest non-streaming body buffered for reading usage (the bytes are
/// forwarded as they come either way).
pub(crate) const MAX_JSON_BUFFER: usize = 64 << 20;

/// A buffered (non-SSE) JSON response.
pub struct JsonPassthrough {
    protocol: Protocol,
    buf: Vec<u8>,
    overflow: bool,
    seen: Seen,
}

impl JsonPassthrough {
    pub fn new(protocol: Protocol) -> Self {
        JsonPassthrough { protocol, buf: Vec::new(), overflow: false, seen: Seen::default() }
    }
}

/// Reads the `usage` object of a non-streaming response of `protocol`.
pub fn usage_from_body(protocol: Protocol, body: &[u8]) -> Option<Usage> {
    let u = UsageFields::from_body(body)?;
    match protocol {
        Protocol::Chat | Protocol::Embeddings => Usage::from_openai_chat(&u),
        Protocol::Responses => Usage::from_responses(&u),
        Protocol::Messages => Usage::from_anthropic(&u),
        Protocol::CountTokens => None,
    }
}

impl Relay for JsonPassthrough {
    fn push(&mut self, chunk: Bytes) -> Bytes {
        self.seen.content |= !chunk.is_empty();
        if !self.overflow {
            if self.buf.len() + chunk.len() > MAX_JSON_BUFFER {
                self.overflow = true;
                self.buf = Vec::new();
            } else {
                self.buf.extend_from_slice(&chunk);
            }
        }
        chunk
    }
    fn finish(&mut self) -> Bytes {
        if !self.overflow {
            self.seen.usage = usage_from_body(self.protocol, &self.buf);
            self.seen.usage_final = self.seen.usage.is_some();
        }
        Bytes::new()
    }
    fn seen(&self) -> &Seen {
        &self.seen
    }
    fn preserves_length(&self) -> bool {
        true
    }
    fn abort(&mut self, _message: &str) -> Bytes {
        Bytes::new()
    }
}

/// What a stream tracker decided about one event.
enum Verdict {
    Forward,
    Drop,
}

/// An SSE response of the client's own protocol.
pub struct SsePassthrough {
    protocol: Protocol,
    splitter: Splitter,
    /// Drop the chat usage-only chunk (`choices: []` + usage) the gateway asked for.
    hide_usage_chunk: bool,
    /// `usage_final`: the chat usage chunk, `message_delta` or
    /// `response.completed` has been seen.
    seen: Seen,
    last_sequence: u64,
}

impl SsePassthrough {
    pub fn new(protocol: Protocol, hide_usage_chunk: bool) -> Self {
        SsePassthrough {
            protocol,
            splitter: Splitter::new(),
            hide_usage_chunk,
            seen: Seen::default(),
            last_sequence: 0,
        }
    }

    fn observe(&mut self, raw: &[u8]) -> Verdict {
        let ev = sse::parse(raw);
        if ev.is_comment {
            return Verdict::Forward;
        }
        match self.protocol {
            Protocol::Chat => self.observe_chat(&ev.data),
            Protocol::Messages => {
                self.observe_anthropic(ev.event.unwrap_or(""), &ev.data);
                Verdict::Forward
            }
            Protocol::Responses => {
                self.observe_responses(ev.event.unwrap_or(""), &ev.data);
                Verdict::Forward
            }
            Protocol::Embeddings | Protocol::CountTokens => Verdict::Forward,
        }
    }

    fn observe_chat(&mut self, data: &str) -> Verdict {
        if data == "[DONE]" {
            return Verdict::Forward;
        }
        // One pass over the keys instead of a search per key.
        let (mut error, mut choices, mut usage, mut chars, mut content) = (false, false, false, 0, false);
        for (key, at) in scan::keys(data) {
            match key {
                "content" | "arguments" | "reasoning_content" | "refusal" => chars += scan::string_len_at(data, at),
                "tool_calls" => content |= data.as_bytes().get(at) == Some(&b'['),
                "finish_reason" => content |= data.as_bytes().get(at) == Some(&b'"'),
                "choices" => choices = true,
                "usage" => usage |= scan::object_at(data, at),
                "error" => error |= scan::object_at(data, at),
                _ => {}
            }
        }
        if error && !choices {
            self.seen.error = Some(parse_error(data));
            return Verdict::Forward;
        }
        self.seen.output_chars += chars;
        if chars > 0 || content {
            self.seen.content = true;
        }
        if usage {
            // Typed, not a `Value`: this is the one full parse of a stream.
            if let Some(chunk) = ChatChunk::from_body(data.as_bytes()) {
                if let Some(u) = chunk.usage.as_ref().and_then(Usage::from_openai_chat) {
                    self.seen.usage = Some(u);
                    self.seen.usage_final = true;
                }
                if self.hide_usage_chunk && chunk.no_choices() {
                    return Verdict::Drop;
                }
            }
        }
        Verdict::Forward
    }

    fn observe_anthropic(&mut self, event: &str, data: &str) {
        match event {
            "message_start" => {
                if let Ok(v) = serde_json::from_str::<Value>(data) {
                    self.seen.usage = v.pointer("/message/usage").and_then(Usage::from_anthropic);
                }
            }
            "message_delta" => {
                if let Ok(v) = serde_json::from_str::<Value>(data) {
                    if let Some(u) = v.get("usage") {
                        self.seen.usage.get_or_insert_with(Usage::default).merge_anthropic_delta(u);
                        self.seen.usage_final = true;
                    }
                }
                self.seen.content = true;
            }
            "content_block_start" | "content_block_delta" => {
                self.seen.content = true;
                self.seen.output_chars += scan::keys(data)
                    .filter(|(k, _)| matches!(*k, "text" | "partial_json" | "thinking"))
                    .map(|(_, at)| scan::string_len_at(data, at))
                    .sum::<u64>();
            }
            "error" => self.seen.error = Some(parse_error(data)),
            _ => {}
        }
    }

    fn observe_responses(&mut self, event: &str, data: &str) {
        if let Some(seq) = sequence_number(data) {
            self.last_sequence = seq;
        }
        match event {
            "response.completed" | "response.incomplete" | "response.failed" => {
                if let Ok(v) = serde_json::from_str::<Value>(data) {
                    if let Some(u) = v.pointer("/response/usage").and_then(Usage::from_responses) {
                        self.seen.usage = Some(u);
                        self.seen.usage_final = true;
                    }
                    if event == "response.failed" {
                        let msg =
                            v.pointer("/response/error/message").and_then(Value::as_str).unwrap_or("response failed");
                        let code = v.pointer("/response/error/code").and_then(Value::as_str).map(str::to_string);
                        self.seen.error = Some(StreamError { message: msg.to_string(), kind: code });
                    }
                }
                self.seen.content = true;
            }
            "error" => self.seen.error = Some(parse_error(data)),
            e if e.ends_with(".delta") => {
                self.seen.content = true;
                self.seen.output_chars += scan::string_values_len(data, "delta");
            }
            "response.output_item.added" | "response.output_item.done" => self.seen.content = true,
            _ => {}
        }
    }
}

fn sequence_number(data: &str) -> Option<u64> {
    let i = data.find("\"sequence_number\":")? + "\"sequence_number\":".len();
    let digits: String = data[i..].chars().skip_while(|c| c.is_whitespace()).take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Reads `{"error":{"message","type"|"code"}}` or Anthropic's
/// `{"type":"error","error":{"type","message"}}` or Responses' flat error event.
pub fn parse_error(data: &str) -> StreamError {
    let v: Value = serde_json::from_str(data).unwrap_or(Value::Null);
    let e = v.get("error").unwrap_or(&v);
    let message = e
        .get("message")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| data.chars().take(200).collect());
    let kind = e.get("type").or_else(|| e.get("code")).and_then(Value::as_str).map(str::to_string);
    StreamError { message, kind }
}

/// The error event that ends a stream of `protocol` after a failure the client
/// must see (protocol-mapping §7.3.3).
pub fn mid_stream_error(protocol: Protocol, message: &str, next_sequence: u64) -> Bytes {
    let mut out = BytesMut::new();
    match protocol {
        Protocol::Messages => {
            let v = serde_json::json!({"type":"error","error":{"type":"api_error","message":message}});
            sse::write_event(&mut out, Some("error"), &v.to_string());
        }
        Protocol::Responses => {
            let v = serde_json::json!({
                "type":"error","code":"server_error","message":message,"param":null,"sequence_number":next_sequence
            });
            sse::write_event(&mut out, Some("error"), &v.to_string());
        }
        _ => {
            let v = serde_json::json!({"error":{"message":message,"type":"server_error","param":null,"code":null}});
            sse::write_event(&mut out, None, &v.to_string());
        }
    }
    out.freeze()
}

impl Relay for SsePassthrough {
    fn push(&mut self, chunk: Bytes) -> Bytes {
        let aligned_before = self.splitter.pending() == 0;
        let events = self.splitter.push(&chunk);
        let aligned_after = self.splitter.pending() == 0;
        let mut dropped = false;
        let mut keep = Vec::with_capacity(events.len());
        for raw in events {
            match self.observe(&raw) {
                Verdict::Forward => keep.push(raw),
                Verdict::Drop => dropped = true,
            }
        }
        // Common case: the chunk was exactly whole events; forward it as is.
        if aligned_before && aligned_after && !dropped {
            return chunk;
        }
        let mut out = BytesMut::with_capacity(keep.iter().map(Bytes::len).sum());
        for raw in keep {
            out.extend_from_slice(&raw);
        }
        out.freeze()
    }
    fn finish(&mut self) -> Bytes {
        match self.splitter.finish() {
            Some(tail) => match self.observe(&tail) {
                Verdict::Forward => tail,
                Verdict::Drop => Bytes::new(),
            },
            None => Bytes::new(),
        }
    }
    fn seen(&self) -> &Seen {
        &self.seen
    }
    fn preserves_length(&self) -> bool {
        !self.hide_usage_chunk
    }
    fn abort(&mut self, message: &str) -> Bytes {
        // Drop a half-received event: the client must see whole events only.
        let _ = self.splitter.finish();
        mid_stream_error(self.protocol, message, self.last_sequence + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHAT_STREAM: &str = concat!(
        "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}],\"usage\":null}\n\n",
        "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"},\"finish_reason\":null}],\"usage\":null}\n\n",
        "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
        "data: {\"id\":\"c1\",\"choices\":[],\"usage\":{\"prompt_tokens\":17,\"completion_tokens\":5,\"total_tokens\":22,\"prompt_tokens_details\":{\"cached_tokens\":3}}}\n\n",
        "data: [DONE]\n\n",
    );

    use crate::convert::relay_in_pieces as run;

    #[test]
    fn chat_stream_is_byte_identical_when_usage_was_asked() {
        for cut in 0..CHAT_STREAM.len() {
            let mut r = SsePassthrough::new(Protocol::Chat, false);
            let out = run(&mut r, CHAT_STREAM.as_bytes(), &[cut]);
            assert_eq!(out, CHAT_STREAM.as_bytes());
            assert_eq!(r.usage(), Some(Usage { input: 14, cache_read: 3, cache_write: 0, output: 5, reasoning: 0 }));
            assert_eq!(r.output_chars(), 5);
        }
    }

    #[test]
    fn chat_usage_chunk_hidden_when_not_asked() {
        let mut r = SsePassthrough::new(Protocol::Chat, true);
        let out = String::from_utf8(run(&mut r, CHAT_STREAM.as_bytes(), &[100, 300])).unwrap();
        assert!(!out.contains("prompt_tokens"));
        assert!(out.ends_with("data: [DONE]\n\n"));
        assert_eq!(out.matches("data: ").count(), 4);
        assert_eq!(r.usage().map(|u| u.output), Some(5));
    }

    #[test]
    fn anthropic_stream_usage() {
        let s = concat!(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"usage\":{\"input_tokens\":25,\"cache_read_input_tokens\":100,\"cache_creation_input_tokens\":7,\"output_tokens\":1}}}\n\n",
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi there\"}}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":12}}\n\n",
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        );
        let mut r = SsePassthrough::new(Protocol::Messages, false);
        assert_eq!(run(&mut r, s.as_bytes(), &[10, 200]), s.as_bytes());
        assert_eq!(r.usage(), Some(Usage { input: 25, cache_read: 100, cache_write: 7, output: 12, reasoning: 0 }));
        assert!(r.content_started());
    }

    #[test]
    fn responses_usage_and_errors() {
        let s = concat!(
            "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"abc\",\"sequence_number\":4}\n\n",
            "event: response.completed\ndata: {\"type\":\"response.completed\",\"sequence_number\":5,\"response\":{\"usage\":{\"input_tokens\":10,\"input_tokens_details\":{\"cached_tokens\":4},\"output_tokens\":3,\"output_tokens_details\":{\"reasoning_tokens\":1}}}}\n\n",
        );
        let mut r = SsePassthrough::new(Protocol::Responses, false);
        run(&mut r, s.as_bytes(), &[]);
        assert_eq!(r.usage(), Some(Usage { input: 6, cache_read: 4, cache_write: 0, output: 3, reasoning: 1 }));
        let end = String::from_utf8(r.abort("upstream went away").to_vec()).unwrap();
        assert!(end.starts_with("event: error\n") && end.contains("\"sequence_number\":6"), "{end}");
        let mut r = SsePassthrough::new(Protocol::Chat, false);
        run(&mut r, b"data: {\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\"}}\n\n", &[]);
        assert_eq!(r.stream_error().map(|e| e.message.as_str()), Some("overloaded"));
        assert!(!r.content_started());
    }

    #[test]
    fn json_usage_per_protocol() {
        let mut r = JsonPassthrough::new(Protocol::Embeddings);
        let body = br#"{"object":"list","data":[],"usage":{"prompt_tokens":8,"total_tokens":8}}"#;
        assert_eq!(run(&mut r, body, &[5]), body.to_vec());
        assert_eq!(r.usage().map(|u| u.input), Some(8));
        let body = br#"{"id":"msg","usage":{"input_tokens":3,"output_tokens":4}}"#;
        assert_eq!(usage_from_body(Protocol::Messages, body).map(|u| (u.input, u.output)), Some((3, 4)));
    }
}
