//! The internal representation every translation goes through
//! (protocol-mapping §0.2): requests are parsed from the client's API into
//! [`Request`] and emitted in the upstream's; responses are parsed from the
//! upstream's API into a stream of [`Ev`] and emitted in the client's. A
//! non-streaming response is the same events, aggregated.

use crate::usage::Usage;
use serde_json::Value;

/// Where a thinking block's signature came from, which decides where it may be
/// replayed (§2.6, §5.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sig {
    /// Issued by Anthropic: replayable to Anthropic only.
    Anthropic(String),
    /// Issued by this gateway for thinking from an OpenAI-compatible upstream.
    Gateway(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    Text(String),
    /// An image: a URL, or base64 data with its media type.
    Image {
        url: Option<String>,
        media_type: Option<String>,
        data: Option<String>,
    },
    /// A document (PDF) as base64 data.
    File {
        media_type: String,
        data: String,
        filename: Option<String>,
    },
    ToolCall {
        id: String,
        name: String,
        arguments: String,
    },
    ToolResult {
        call_id: String,
        content: Vec<Part>,
        is_error: bool,
    },
    Reasoning {
        text: String,
        sig: Option<Sig>,
    },
    RedactedReasoning(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Assistant,
    /// A system/developer message in the middle of the conversation: Anthropic
    /// upstreams hoist it into `system`, chat upstreams get a user reminder.
    System,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    pub role: Role,
    pub parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    pub name: String,
    pub description: Option<String>,
    pub schema: Value,
    /// A Responses `custom` (freeform) tool: its calls carry `{"input": …}`.
    pub custom: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    Auto,
    None,
    Required,
    Named(String),
}

impl ToolChoice {
    /// The string forms both OpenAI APIs share.
    pub fn keyword(s: &str) -> Option<ToolChoice> {
        match s {
            "auto" => Some(ToolChoice::Auto),
            "none" => Some(ToolChoice::None),
            "required" => Some(ToolChoice::Required),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reasoning {
    /// `none`, `minimal`, `low`, `medium`, `high`, `xhigh`, `max`.
    pub effort: Option<String>,
    pub budget_tokens: Option<u64>,
    pub enabled: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Request {
    /// System text blocks in order (instructions, system/developer messages).
    pub system: Vec<String>,
    pub turns: Vec<Turn>,
    pub tools: Vec<Tool>,
    pub tool_choice: Option<ToolChoice>,
    pub parallel_tool_calls: Option<bool>,
    pub max_output: Option<u64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<u64>,
    pub stop: Vec<String>,
    pub reasoning: Reasoning,
    /// A JSON schema the answer must follow (`{name, schema, strict}`), or
    /// `json_object` mode.
    pub response_format: Option<Value>,
    pub json_object: bool,
    pub user: Option<String>,
    pub stream: bool,
}

/// Canonical stop reasons (§7.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    EndTurn,
    StopSequence(Option<String>),
    MaxTokens,
    ContextWindow,
    ToolUse,
    Refusal,
    PauseTurn,
}

/// Canonical error kinds (§7.3.0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrKind {
    InvalidRequest,
    ContextOverflow,
    Auth,
    Permission,
    NotFound,
    TooLarge,
    RateLimit,
    Quota,
    Overloaded,
    Server,
    Timeout,
    Protocol,
}

/// One step of a response, whatever API it came from.
#[derive(Debug, Clone, PartialEq)]
pub enum Ev {
    /// The response began (`id` from the upstream when it has one).
    Start {
        id: String,
        usage: Option<Usage>,
    },
    TextStart,
    TextDelta(String),
    ThinkingStart,
    ThinkingDelta(String),
    /// The signature of the open thinking block.
    Signature(Sig),
    /// A complete redacted thinking block.
    Redacted(String),
    ToolStart {
        id: String,
        name: String,
    },
    ToolArgs(String),
    /// Closes the open block (blocks never overlap).
    BlockStop,
    /// The end: stop reason and final usage (`estimated` when the upstream
    /// reported none).
    Finish {
        stop: Stop,
        usage: Usage,
        estimated: bool,
    },
    Error {
        kind: ErrKind,
        message: String,
    },
}
