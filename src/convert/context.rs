//! What one translated request knows: the models on both sides, the prompt
//! estimate, ids, the signer, tool names, and (for Responses clients) the
//! request fields a Response object echoes.

use super::support::{Ids, Signer, ToolNames};
use crate::config::quirks::Quirks;
use serde_json::Value;
use std::sync::Arc;

pub struct Ctx {
    /// The model the client asked for, echoed in responses.
    pub client_model: String,
    /// The model the upstream serves (signatures are bound to it).
    pub upstream_model: String,
    /// Estimated prompt tokens of the request (`message_start`, estimates).
    pub prompt_estimate: u64,
    pub ids: Arc<dyn Ids>,
    pub signer: Arc<Signer>,
    pub tools: ToolNames,
    /// Chat clients: whether to send the usage-only chunk.
    pub include_usage: bool,
    /// Responses clients: request fields the Response object echoes.
    pub echo: Value,
    /// Context window of the upstream model, for overflow messages.
    pub context_window: Option<u64>,
    /// Names of the tools the request declared (a call that arrives without a
    /// name gets the only one, if there is only one).
    pub declared_tools: Vec<String>,
    /// How the OpenAI-compatible upstream wants things said.
    pub quirks: Quirks,
}

impl Ctx {
    pub fn new(client_model: &str, upstream_model: &str, ids: Arc<dyn Ids>, signer: Arc<Signer>) -> Ctx {
        Ctx {
            client_model: client_model.to_string(),
            upstream_model: upstream_model.to_string(),
            prompt_estimate: 1,
            ids,
            signer,
            tools: ToolNames::default(),
            include_usage: false,
            echo: Value::Null,
            context_window: None,
            declared_tools: Vec::new(),
            quirks: Quirks::default(),
        }
    }
}
