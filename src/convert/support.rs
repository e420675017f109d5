//! What translations need besides the mapping itself: generated ids (a
//! deterministic generator for tests), the gateway's thinking signatures,
//! tool names and ids every API accepts, JSON-schema repairs, and a fast token
//! estimate.

use super::ir::{Part, Request, Sig};
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// Ids and clock of a translation.
pub trait Ids: Send + Sync {
    /// `msg_…` for Anthropic messages the gateway creates.
    fn message(&self) -> String;
    /// `resp_…` for Responses objects the gateway creates.
    fn response(&self) -> String;
    /// `toolu_…` for tool calls that came without an id.
    fn tool(&self) -> String;
    /// Unix seconds.
    fn now(&self) -> u64;
}

pub struct RandomIds;

impl Ids for RandomIds {
    fn message(&self) -> String {
        format!("msg_{}", crate::auth::random_base62(24))
    }
    fn response(&self) -> String {
        format!("resp_{}", crate::auth::random_base62(24))
    }
    fn tool(&self) -> String {
        format!("toolu_{}", crate::auth::random_base62(24))
    }
    fn now(&self) -> u64 {
        (crate::clock::now_ms() / 1000) as u64
    }
}

/// Counting ids and a fixed clock, for golden tests: `msg_gw_1`, `resp_1`.
pub struct FixedIds {
    n: AtomicU64,
    pub now: u64,
}

impl FixedIds {
    pub fn new(now: u64) -> FixedIds {
        FixedIds { n: AtomicU64::new(0), now }
    }
    fn next(&self) -> u64 {
        self.n.fetch_add(1, Ordering::Relaxed) + 1
    }
}

impl Ids for FixedIds {
    fn message(&self) -> String {
        format!("msg_gw_{}", self.next())
    }
    fn response(&self) -> String {
        format!("resp_{}", self.next())
    }
    fn tool(&self) -> String {
        format!("toolu_gw_{}", self.next())
    }
    fn now(&self) -> u64 {
        self.now
    }
}

/// `data:MEDIA;base64,DATA` → (media type, base64 data).
pub fn parse_data_url(url: &str) -> Option<(String, String)> {
    let (meta, data) = url.strip_prefix("data:")?.split_once(',')?;
    Some((meta.strip_suffix(";base64")?.to_string(), data.to_string()))
}

/// An image given by URL: inline when it is a base64 data URL.
pub fn image_part(url: &str) -> Part {
    match parse_data_url(url) {
        Some((media_type, data)) => Part::Image { url: None, media_type: Some(media_type), data: Some(data) },
        None => Part::Image { url: Some(url.to_string()), media_type: None, data: None },
    }
}

/// Signs thinking that came from an OpenAI-compatible upstream (§2.6):
/// `gw1.` + base64url(HMAC-SHA256(key, upstream model NUL thinking text)).
/// Claude Code drops thinking blocks without a signature; Anthropic rejects
/// ours, so the prefix also marks them for stripping on the way there.
pub struct Signer {
    key: [u8; 32],
}

pub const GATEWAY_SIG_PREFIX: &str = "gw1.";

impl Signer {
    pub fn new(key: [u8; 32]) -> Signer {
        Signer { key }
    }

    /// The key in `data_dir/signing.key` (shared through the database in a
    /// cluster), created on first use so signatures stay valid across
    /// restarts and nodes.
    pub(crate) fn load_or_create(cfg: &crate::config::Config) -> std::io::Result<Signer> {
        crate::store::secret::key_for(cfg, "signing.key").map(Signer::new)
    }

    pub fn sign(&self, upstream_model: &str, thinking: &str) -> String {
        let mut msg = Vec::with_capacity(upstream_model.len() + 1 + thinking.len());
        msg.extend_from_slice(upstream_model.as_bytes());
        msg.push(0);
        msg.extend_from_slice(thinking.as_bytes());
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(&msg);
        let mac = mac.finalize().into_bytes();
        format!("{GATEWAY_SIG_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac))
    }
}

/// Classifies a signature a client sent back.
pub fn parse_sig(s: &str) -> Option<Sig> {
    if s.is_empty() {
        None
    } else if s.starts_with(GATEWAY_SIG_PREFIX) {
        Some(Sig::Gateway(s.to_string()))
    } else {
        Some(Sig::Anthropic(s.to_string()))
    }
}

/// Tool names as the upstream knows them, and what to call them for the
/// client: OpenAI caps names at 64 characters (long MCP names are hashed
/// short and restored), Responses namespaces are flattened to `ns__name`, and
/// custom (freeform) tools are remembered so their calls come back as such.
#[derive(Debug, Default, Clone)]
pub struct ToolNames {
    /// Upstream name → client name.
    restore: HashMap<String, String>,
    /// Client-facing names of custom tools.
    custom: std::collections::HashSet<String>,
    /// Flattened name → (namespace, child name).
    namespaced: HashMap<String, (String, String)>,
}

impl ToolNames {
    /// The name to send upstream for a client tool name of more than `max`
    /// bytes: a prefix and a hash of the whole, recorded for `restore`.
    pub fn shorten(&mut self, name: &str, max: usize) -> String {
        if name.len() <= max {
            return name.to_string();
        }
        let hash: String = Sha256::digest(name.as_bytes()).iter().take(4).map(|b| format!("{b:02x}")).collect();
        let mut keep = max.saturating_sub(hash.len() + 1);
        while !name.is_char_boundary(keep) {
            keep -= 1;
        }
        let short = format!("{}_{hash}", &name[..keep]);
        self.restore.insert(short.clone(), name.to_string());
        short
    }

    pub fn restore(&self, upstream: &str) -> String {
        self.restore.get(upstream).cloned().unwrap_or_else(|| upstream.to_string())
    }

    pub fn mark_custom(&mut self, name: &str) {
        self.custom.insert(name.to_string());
    }

    pub fn is_custom(&self, name: &str) -> bool {
        self.custom.contains(name)
    }

    pub fn mark_namespaced(&mut self, flat: &str, namespace: &str, child: &str) {
        self.namespaced.insert(flat.to_string(), (namespace.to_string(), child.to_string()));
    }

    pub fn namespace_of(&self, flat: &str) -> Option<&(String, String)> {
        self.namespaced.get(flat)
    }
}

/// Tool-use ids Anthropic clients accept: `[A-Za-z0-9_-]` only.
pub fn sanitize_tool_id(id: &str, ids: &dyn Ids) -> String {
    let s: String =
        id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' }).collect();
    if s.is_empty() {
        ids.tool()
    } else {
        s
    }
}

/// Basic JSON-schema repairs for OpenAI-compatible upstreams: objects get
/// `properties`, `null` values and `$schema` go (§2.3).
pub fn sanitize_schema(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, val) in m {
                if val.is_null() || k == "$schema" {
                    continue;
                }
                out.insert(k.clone(), sanitize_schema(val));
            }
            if out.get("type").and_then(Value::as_str) == Some("object") && !out.contains_key("properties") {
                out.insert("properties".into(), json!({}));
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(sanitize_schema).collect()),
        other => other.clone(),
    }
}

/// Parses tool-call arguments into a JSON object, repairing what can be
/// repaired (trailing garbage, concatenated objects: the first wins); `{}`
/// otherwise.
pub fn arguments_object(args: &str) -> Value {
    let t = args.trim();
    if t.is_empty() {
        return json!({});
    }
    if let Ok(v @ Value::Object(_)) = serde_json::from_str::<Value>(t) {
        return v;
    }
    let mut de = serde_json::Deserializer::from_str(t).into_iter::<Value>();
    match de.next() {
        Some(Ok(v @ Value::Object(_))) => v,
        _ => json!({}),
    }
}

/// Tokens a text is estimated at: words of ASCII letters and digits at about
/// four characters per token, every other non-space character (punctuation,
/// CJK) one token. Fast enough for every request, never zero for non-empty
/// text; a BPE tokenizer would be exact only for one model family anyway.
pub fn estimate_text(text: &str) -> u64 {
    let mut tokens = 0u64;
    let mut word = 0u64;
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            word += 1;
            continue;
        }
        if word > 0 {
            tokens += word.div_ceil(4);
            word = 0;
        }
        if !c.is_whitespace() {
            tokens += 1;
        }
    }
    tokens + word.div_ceil(4)
}

/// Tokens an image is counted as in estimates.
const IMAGE_TOKENS: u64 = 1000;

/// The estimated prompt size of a request (system, messages, tools),
/// at least 1. `count_tokens` on a non-Anthropic channel answers this, and
/// translated streams report it in `message_start`, so the two agree.
pub fn estimate_request(req: &Request) -> u64 {
    fn parts(ps: &[Part]) -> u64 {
        ps.iter()
            .map(|p| match p {
                Part::Text(t) => estimate_text(t),
                Part::Image { .. } | Part::File { .. } => IMAGE_TOKENS,
                Part::ToolCall { name, arguments, .. } => estimate_text(name) + estimate_text(arguments),
                Part::ToolResult { content, .. } => parts(content) + 3,
                Part::Reasoning { text, .. } => estimate_text(text),
                Part::RedactedReasoning(_) => 0,
            })
            .sum()
    }
    let system: u64 = req.system.iter().map(|s| estimate_text(s)).sum();
    let turns: u64 = req.turns.iter().map(|t| 4 + parts(&t.parts)).sum();
    let tools: u64 = req
        .tools
        .iter()
        .map(|t| {
            estimate_text(&t.name)
                + estimate_text(t.description.as_deref().unwrap_or(""))
                + estimate_text(&t.schema.to_string())
        })
        .sum();
    (system + turns + tools).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_stable_and_tagged() {
        let s = Signer::new([7; 32]);
        // HMAC-SHA256(key, "m\0t") as Python's hmac module computes it.
        assert_eq!(s.sign("m", "t"), "gw1.27cpQ3oWtaHNZd4BbH-qD0dYrkBGqS6RQOknS_VC5Gc");
        assert_ne!(s.sign("m", "t"), s.sign("m", "u"));
        assert!(matches!(parse_sig(&s.sign("m", "t")), Some(Sig::Gateway(_))));
        assert!(matches!(parse_sig("EqQBCgIYAhIM"), Some(Sig::Anthropic(_))));
        assert_eq!(parse_sig(""), None);
    }

    #[test]
    fn long_tool_names_round_trip() {
        let mut n = ToolNames::default();
        let long = format!("mcp__server__{}", "x".repeat(80));
        let short = n.shorten(&long, 64);
        assert_eq!(short.len(), 64);
        assert_eq!(n.restore(&short), long);
        assert_eq!(n.shorten("Bash", 64), "Bash");
        let accented = "é".repeat(40);
        assert!(n.shorten(&accented, 64).len() <= 64, "cut on a character boundary");
        assert_eq!(n.restore("Bash"), "Bash");
    }

    #[test]
    fn ids_and_schemas() {
        let ids = FixedIds::new(0);
        assert_eq!(sanitize_tool_id("call.a:b", &ids), "call_a_b");
        assert_eq!(sanitize_tool_id("", &ids), "toolu_gw_1");
        let s = sanitize_schema(
            &json!({"$schema": "x", "type": "object", "description": null, "items": [{"type": "object"}]}),
        );
        assert_eq!(s, json!({"type": "object", "items": [{"type": "object", "properties": {}}], "properties": {}}));
        assert_eq!(arguments_object("{\"a\":1}{\"b\":2}"), json!({"a": 1}));
        assert_eq!(arguments_object("not json"), json!({}));
    }

    #[test]
    fn estimates() {
        assert_eq!(estimate_text(""), 0);
        assert_eq!(estimate_text("Hello, world!"), 2 + 1 + 2 + 1);
        assert_eq!(estimate_text("你好"), 2);
        assert!(estimate_request(&Request::default()) >= 1);
    }
}
