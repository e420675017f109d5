//! Per-channel compatibility switches for OpenAI-compatible upstreams
//! (protocol-mapping §0.3). "OpenAI-compatible" servers disagree on details
//! that decide whether a translated request is accepted at all: which field
//! caps the output, whether a system message may appear mid-conversation,
//! how reasoning is asked for and echoed. The defaults suit OpenAI itself and
//! most compatible servers; a channel overrides what its upstream needs.

use serde::Deserialize;

/// The field that caps the answer's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaxTokensField {
    MaxTokens,
    /// OpenAI's reasoning models reject `max_tokens`.
    MaxCompletionTokens,
}

/// Where system text may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SystemPlacement {
    /// Only a leading system message; later ones become a user
    /// `<system-reminder>` (strict chat templates: Qwen, llama.cpp, vLLM).
    LeadingOnly,
    Anywhere,
}

/// How reasoning is requested.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasoningRequest {
    /// `reasoning_effort: "high"` (OpenAI).
    ReasoningEffort,
    /// `reasoning: {effort: "high"}` (OpenRouter).
    ReasoningObject,
    /// `thinking: {type: "enabled"}` (GLM, Kimi).
    ThinkingObject,
    /// `chat_template_kwargs: {enable_thinking: true}` (vLLM, SGLang).
    ChatTemplateKwargs,
    /// Never ask.
    None,
}

/// Which assistant turns send their reasoning back upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasoningEcho {
    None,
    /// DeepSeek and Kimi refuse a tool-call turn without its reasoning.
    ToolTurns,
    AllAssistant,
}

/// Whether the upstream reports usage in streams when asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamUsage {
    /// Send `stream_options: {include_usage: true}`.
    IncludeUsage,
    /// The upstream rejects `stream_options`: streams are billed on an
    /// estimate.
    Unsupported,
}

/// The efforts an API may name, weakest first.
pub const EFFORTS: [&str; 6] = ["none", "minimal", "low", "medium", "high", "xhigh"];

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Quirks {
    pub max_tokens_field: MaxTokensField,
    pub system_placement: SystemPlacement,
    pub reasoning_request: ReasoningRequest,
    /// Efforts the upstream accepts; others are clamped to the nearest.
    pub reasoning_effort_values: Vec<String>,
    pub reasoning_echo: ReasoningEcho,
    pub stream_usage: StreamUsage,
    /// Longer tool names are shortened (and restored in answers).
    pub tool_name_max_len: usize,
    /// Sent for an empty tool result (some models stop generating after an
    /// empty one); `""` sends it empty.
    pub empty_tool_result: String,
}

impl Default for Quirks {
    fn default() -> Self {
        Quirks {
            max_tokens_field: MaxTokensField::MaxTokens,
            system_placement: SystemPlacement::LeadingOnly,
            reasoning_request: ReasoningRequest::ReasoningEffort,
            reasoning_effort_values: vec!["low".into(), "medium".into(), "high".into()],
            reasoning_echo: ReasoningEcho::ToolTurns,
            stream_usage: StreamUsage::IncludeUsage,
            tool_name_max_len: 64,
            empty_tool_result: "(no output)".into(),
        }
    }
}

impl Quirks {
    /// Problems as (field, message), for the config loader to report.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if self.reasoning_effort_values.is_empty() {
            out.push(("reasoning_effort_values", "must name at least one effort".to_string()));
        }
        for v in &self.reasoning_effort_values {
            if !EFFORTS.contains(&v.as_str()) {
                out.push(("reasoning_effort_values", format!("{v:?} is not one of {}", EFFORTS.join(", "))));
            }
        }
        if !(16..=256).contains(&self.tool_name_max_len) {
            out.push(("tool_name_max_len", format!("must be between 16 and 256, got {}", self.tool_name_max_len)));
        }
        out
    }

    /// The accepted effort nearest to `wanted` (ties go to the stronger one);
    /// `None` when the client asked for no reasoning and the upstream has no
    /// "none" level (then the field is simply not sent).
    pub fn effort(&self, wanted: &str) -> Option<&str> {
        let rank = |e: &str| EFFORTS.iter().position(|x| *x == e);
        let want = rank(wanted).unwrap_or(EFFORTS.len() - 2);
        if want == 0 && !self.reasoning_effort_values.iter().any(|v| v == "none") {
            return None;
        }
        self.reasoning_effort_values
            .iter()
            .filter_map(|v| rank(v).map(|r| (r, v.as_str())))
            .min_by_key(|(r, _)| (r.abs_diff(want), std::cmp::Reverse(*r)))
            .map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn efforts_clamp_to_the_nearest_accepted_level() {
        let q = Quirks::default();
        assert_eq!(q.effort("minimal"), Some("low"));
        assert_eq!(q.effort("xhigh"), Some("high"));
        assert_eq!(q.effort("medium"), Some("medium"));
        assert_eq!(q.effort("none"), None);
        let q = Quirks { reasoning_effort_values: vec!["none".into(), "high".into()], ..Quirks::default() };
        assert_eq!(q.effort("none"), Some("none"));
        assert_eq!(q.effort("minimal"), Some("none"));
        let q = Quirks { reasoning_effort_values: vec!["low".into(), "high".into()], ..Quirks::default() };
        assert_eq!(q.effort("medium"), Some("high"), "a tie goes to the stronger level");
    }

    #[test]
    fn problems_name_the_field() {
        let q = Quirks { reasoning_effort_values: vec!["max".into()], tool_name_max_len: 4, ..Quirks::default() };
        let p = q.problems();
        assert_eq!(p[0].0, "reasoning_effort_values");
        assert!(p[0].1.contains("\"max\" is not one of"));
        assert_eq!(p[1], ("tool_name_max_len", "must be between 16 and 256, got 4".to_string()));
    }

    #[test]
    fn yaml_overrides_only_what_it_names() {
        let q: Quirks = serde_yaml::from_str("max_tokens_field: max_completion_tokens\nreasoning_echo: all_assistant")
            .expect("valid quirks");
        assert_eq!(q.max_tokens_field, MaxTokensField::MaxCompletionTokens);
        assert_eq!(q.reasoning_echo, ReasoningEcho::AllAssistant);
        assert_eq!(q.stream_usage, StreamUsage::IncludeUsage);
        assert!(serde_yaml::from_str::<Quirks>("max_tokens_feild: max_tokens").is_err());
    }
}
