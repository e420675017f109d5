//! Token usage: one model for every API (protocol-mapping §7.2) and readers for
//! each API's `usage` object.
//!
//! `input` counts prompt tokens that were neither read from nor written to a
//! cache; `cache_read` and `cache_write` are the cached parts; `output` includes
//! reasoning, of which `reasoning` is the share. OpenAI's prompt count includes
//! cached tokens, Anthropic's `input_tokens` excludes them — the readers below
//! normalise both.

mod fields;

pub use fields::{ChatChunk, UsageFields};
use serde::Serialize;
use serde_json::Value;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub input: u64,
    pub cache_read: u64,
    pub cache_write: u64,
    pub output: u64,
    pub reasoning: u64,
}

/// Where the readers below find token counts: a parsed JSON tree (stream
/// events, translated bodies) or the few fields [`UsageFields`] pulls straight
/// out of a relayed response body without building one.
pub trait UsageSource {
    /// Whether `usage` was a JSON object at all.
    fn is_object(&self) -> bool;
    /// The non-negative integer at `path` (one or two keys deep).
    fn num(&self, path: &[&str]) -> Option<u64>;
}

impl UsageSource for Value {
    fn is_object(&self) -> bool {
        Value::is_object(self)
    }
    fn num(&self, path: &[&str]) -> Option<u64> {
        let mut cur = self;
        for p in path {
            cur = cur.get(p)?;
        }
        cur.as_u64()
    }
}

impl Usage {
    /// All prompt tokens, cached or not.
    pub fn prompt_total(&self) -> u64 {
        self.input + self.cache_read + self.cache_write
    }

    pub fn is_zero(&self) -> bool {
        *self == Usage::default()
    }

    /// Cost in micro-credits at per-1M-token prices, rounded up to a whole
    /// micro-credit (reasoning is part of `output`).
    pub fn cost(&self, price: &crate::config::Price) -> i64 {
        let parts = [
            (self.input, price.input),
            (self.cache_read, price.cached_input),
            (self.cache_write, price.cache_write),
            (self.output, price.output),
        ];
        let micro_millionths: i128 = parts.iter().map(|&(t, p)| t as i128 * p as i128).sum();
        let cost = (micro_millionths + 999_999).div_euclid(1_000_000);
        cost.clamp(0, i64::MAX as i128) as i64
    }

    /// OpenAI Chat Completions / Embeddings `usage`, including the cache-field
    /// variants of OpenAI-compatible servers (DeepSeek, Moonshot, LiteLLM-style).
    pub fn from_openai_chat<U: UsageSource + ?Sized>(u: &U) -> Option<Usage> {
        if !u.is_object() {
            return None;
        }
        let prompt = u.num(&["prompt_tokens"]).or_else(|| u.num(&["input_tokens"])).unwrap_or(0);
        let cache_read = u
            .num(&["prompt_tokens_details", "cached_tokens"])
            .or_else(|| u.num(&["prompt_cache_hit_tokens"]))
            .or_else(|| u.num(&["cached_tokens"]))
            .or_else(|| u.num(&["cache_read_input_tokens"]))
            .unwrap_or(0);
        let cache_write = u
            .num(&["prompt_tokens_details", "cache_write_tokens"])
            .or_else(|| u.num(&["cache_creation_input_tokens"]))
            .unwrap_or(0);
        Some(Usage {
            input: prompt.saturating_sub(cache_read + cache_write),
            cache_read,
            cache_write,
            output: u.num(&["completion_tokens"]).unwrap_or(0),
            reasoning: u.num(&["completion_tokens_details", "reasoning_tokens"]).unwrap_or(0),
        })
    }

    /// OpenAI Responses `usage`.
    pub fn from_responses<U: UsageSource + ?Sized>(u: &U) -> Option<Usage> {
        if !u.is_object() {
            return None;
        }
        let total = u.num(&["input_tokens"]).unwrap_or(0);
        let cache_read = u.num(&["input_tokens_details", "cached_tokens"]).unwrap_or(0);
        let cache_write = u.num(&["input_tokens_details", "cache_write_tokens"]).unwrap_or(0);
        Some(Usage {
            input: total.saturating_sub(cache_read + cache_write),
            cache_read,
            cache_write,
            output: u.num(&["output_tokens"]).unwrap_or(0),
            reasoning: u.num(&["output_tokens_details", "reasoning_tokens"]).unwrap_or(0),
        })
    }

    /// Anthropic `usage` (message, `message_start.message.usage`).
    pub fn from_anthropic<U: UsageSource + ?Sized>(u: &U) -> Option<Usage> {
        if !u.is_object() {
            return None;
        }
        Some(Usage {
            input: u.num(&["input_tokens"]).unwrap_or(0),
            cache_read: u.num(&["cache_read_input_tokens"]).unwrap_or(0),
            cache_write: u.num(&["cache_creation_input_tokens"]).unwrap_or(0),
            output: u.num(&["output_tokens"]).unwrap_or(0),
            reasoning: u.num(&["output_tokens_details", "thinking_tokens"]).unwrap_or(0),
        })
    }

    /// Applies an Anthropic `message_delta.usage`: cumulative, `output_tokens`
    /// always present, input/cache fields only when they changed.
    pub fn merge_anthropic_delta<U: UsageSource + ?Sized>(&mut self, u: &U) {
        if let Some(o) = u.num(&["output_tokens"]) {
            self.output = o;
        }
        if let Some(i) = u.num(&["input_tokens"]) {
            self.input = i;
        }
        if let Some(c) = u.num(&["cache_read_input_tokens"]) {
            self.cache_read = c;
        }
        if let Some(c) = u.num(&["cache_creation_input_tokens"]) {
            self.cache_write = c;
        }
        if let Some(r) = u.num(&["output_tokens_details", "thinking_tokens"]) {
            self.reasoning = r;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn openai_prompt_includes_cached() {
        let u = Usage::from_openai_chat(&json!({
            "prompt_tokens": 1234, "completion_tokens": 567, "total_tokens": 1801,
            "prompt_tokens_details": {"cached_tokens": 1000},
            "completion_tokens_details": {"reasoning_tokens": 300}
        }))
        .unwrap();
        assert_eq!(u, Usage { input: 234, cache_read: 1000, cache_write: 0, output: 567, reasoning: 300 });
        assert_eq!(u.prompt_total(), 1234);
    }

    #[test]
    fn cost_rounds_up_per_request() {
        let price = crate::config::Price { input: 150_000, cached_input: 75_000, cache_write: 0, output: 600_000 };
        // 1,234 prompt (1,000 cached) + 567 output on gpt-4o-mini prices:
        // 234*0.15 + 1000*0.075 + 567*0.6 = 35.1 + 75 + 340.2 = 450.3 -> 451 micro.
        let u = Usage { input: 234, cache_read: 1000, cache_write: 0, output: 567, reasoning: 0 };
        assert_eq!(u.cost(&price), 451);
        assert_eq!(Usage::default().cost(&price), 0);
    }

    #[test]
    fn compat_cache_variants() {
        let u = Usage::from_openai_chat(
            &json!({"prompt_tokens": 100, "completion_tokens": 1, "prompt_cache_hit_tokens": 60}),
        )
        .unwrap();
        assert_eq!((u.input, u.cache_read), (40, 60));
        let u = Usage::from_openai_chat(&json!({"prompt_tokens": 100, "completion_tokens": 1, "cached_tokens": 10}))
            .unwrap();
        assert_eq!((u.input, u.cache_read), (90, 10));
        assert!(Usage::from_openai_chat(&Value::Null).is_none());
    }

    #[test]
    fn responses_and_anthropic() {
        let u = Usage::from_responses(&json!({
            "input_tokens": 500, "input_tokens_details": {"cached_tokens": 128},
            "output_tokens": 77, "output_tokens_details": {"reasoning_tokens": 64}, "total_tokens": 577
        }))
        .unwrap();
        assert_eq!(u, Usage { input: 372, cache_read: 128, cache_write: 0, output: 77, reasoning: 64 });
        let mut a = Usage::from_anthropic(&json!({
            "input_tokens": 21, "cache_read_input_tokens": 188086, "cache_creation_input_tokens": 393, "output_tokens": 1
        }))
        .unwrap();
        assert_eq!(a.prompt_total(), 21 + 188086 + 393);
        a.merge_anthropic_delta(&json!({"output_tokens": 393}));
        assert_eq!((a.input, a.cache_read, a.output), (21, 188086, 393));
    }
}
