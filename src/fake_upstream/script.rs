//! What the fake upstream can be told to do, and what it remembers.

use serde::{Deserialize, Serialize};

/// One scripted answer. Queued behaviours are consumed in order, one per
/// request (optionally only by requests to `path`); with an empty queue the
/// fake answers normally.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Behavior {
    /// Only requests whose path starts with this consume the behaviour.
    pub path: Option<String>,
    /// Only requests whose body contains this consume the behaviour (a real
    /// client's agent turn declares `"tools"`; its title request does not).
    pub body_contains: Option<String>,
    /// Answer with this status; non-2xx get an error body in the API's shape
    /// unless `body` is given.
    pub status: Option<u16>,
    /// Raw response body (replaces the generated one).
    pub body: Option<String>,
    /// Extra response headers.
    pub headers: Vec<(String, String)>,
    /// Wait before sending response headers.
    pub delay_ms: u64,
    /// Never answer (the connection stays open until the client gives up).
    pub hang: bool,
    /// Pause between SSE events.
    pub chunk_delay_ms: u64,
    /// Pause after the first SSE event (a model thinking before its first
    /// token)…
    pub think_ms: u64,
    /// …sending a keep-alive this often meanwhile (Anthropic's `ping` event,
    /// an SSE comment elsewhere); 0: silence.
    pub ping_ms: u64,
    /// Write every SSE event in this many separate pieces.
    pub split: usize,
    /// Break the connection after this many SSE events.
    pub cut_after: Option<usize>,
    /// Start a 200 SSE stream with an error event instead of content.
    pub error_event: bool,
    /// Exact usage to report.
    pub usage: Option<FakeUsage>,
    /// The assistant's reply text.
    pub text: Option<String>,
    /// Reply with a tool call instead of text.
    pub tool_call: Option<FakeToolCall>,
    /// Reply with reasoning before the text (chat `reasoning_content`,
    /// Anthropic `thinking`, Responses `reasoning` item).
    pub reasoning: Option<String>,
}

/// Token counts in the upstream's own terms are derived from these: `input` is
/// the uncached prompt part, so OpenAI's `prompt_tokens` = input + cached +
/// cache_write and Anthropic's `input_tokens` = input.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct FakeUsage {
    pub input: u64,
    pub cached: u64,
    pub cache_write: u64,
    pub output: u64,
    pub reasoning: u64,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FakeToolCall {
    pub name: String,
    /// JSON text of the arguments.
    pub arguments: String,
}

/// A request as the fake received it.
#[derive(Debug, Clone, Serialize)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    /// The body as text (lossy for binary).
    pub body: String,
    pub received_ms: i64,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}
