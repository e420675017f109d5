//! Which channels can take a request, decided once per model and client
//! protocol when the channels are built. Usability, the models a channel
//! serves and the APIs it speaks are all configuration, so the request path
//! looks its plan up instead of asking every channel again; only live state
//! (health, cool-downs, what this request already tried) is checked per
//! request, by the `Picker`.

use super::{Channel, Route};
use crate::api::{Endpoint, Protocol};
use crate::error::GatewayError;
use std::collections::HashMap;
use std::sync::Arc;

/// A channel a request may go to, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub index: usize,
    pub route: Route,
}

/// The usable channels serving one model for one client protocol.
#[derive(Debug, Default)]
pub struct Routes {
    /// Channels that speak the client's API.
    pub native: Vec<Candidate>,
    /// Channels reached through a translation.
    pub translated: Vec<Candidate>,
}

/// What the gateway does with one request.
#[derive(Debug)]
pub enum Plan<'a> {
    /// Try these channels: native ones first, then translating ones.
    Forward(&'a Routes),
    /// `count_tokens` with no channel that counts: the gateway's own estimate.
    LocalCount,
}

const PROTOCOLS: [Protocol; 5] =
    [Protocol::Chat, Protocol::Responses, Protocol::Embeddings, Protocol::Messages, Protocol::CountTokens];

fn slot(p: Protocol) -> usize {
    match p {
        Protocol::Chat => 0,
        Protocol::Responses => 1,
        Protocol::Embeddings => 2,
        Protocol::Messages => 3,
        Protocol::CountTokens => 4,
    }
}

/// Every model's routes, per client protocol.
#[derive(Default)]
pub struct RouteTable {
    by_model: HashMap<String, [Routes; 5]>,
}

impl RouteTable {
    pub fn build(channels: &[Arc<Channel>]) -> RouteTable {
        let mut by_model: HashMap<String, [Routes; 5]> = HashMap::new();
        for ch in channels.iter().filter(|c| c.usable()) {
            for model in ch.cfg.models.keys() {
                let routes = by_model.entry(model.clone()).or_default();
                for p in PROTOCOLS {
                    let Some(route) = ch.route_for(p) else { continue };
                    let c = Candidate { index: ch.index, route };
                    let r = &mut routes[slot(p)];
                    if route == Route::Native {
                        r.native.push(c)
                    } else {
                        r.translated.push(c)
                    }
                }
            }
        }
        RouteTable { by_model }
    }

    /// Whether any usable channel serves `model`, whatever it speaks.
    pub fn serves(&self, model: &str) -> bool {
        self.by_model.contains_key(model)
    }

    /// The plan for a request of `model` at `endpoint`, or why there is none.
    pub fn plan(&self, model: &str, endpoint: Endpoint) -> Result<Plan<'_>, GatewayError> {
        let protocol = endpoint.protocol().ok_or_else(|| GatewayError::Internal("endpoint without protocol".into()))?;
        let Some(all) = self.by_model.get(model) else {
            return Err(GatewayError::NoChannel { model: model.to_string() });
        };
        let routes = &all[slot(protocol)];
        if !routes.native.is_empty() {
            return Ok(Plan::Forward(routes));
        }
        match endpoint {
            Endpoint::CountTokens => Ok(Plan::LocalCount),
            Endpoint::Embeddings => Err(GatewayError::Unsupported {
                param: "model",
                code: "model_not_supported",
                message: format!("model '{model}' does not support embeddings"),
            }),
            Endpoint::ResponsesCompact => Err(GatewayError::Unsupported {
                param: "model",
                code: "unsupported_endpoint",
                message: format!("model '{model}' cannot compact: none of its channels speaks the Responses API"),
            }),
            _ if routes.translated.is_empty() => Err(GatewayError::NoChannel { model: model.to_string() }),
            _ => Ok(Plan::Forward(routes)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(yaml: &str) -> RouteTable {
        let text = format!(
            "server: {{listen: [\"127.0.0.1:0\"]}}\nmodels:\n  - {{id: gpt-4o, price: {{input: 1, output: 1}}}}\n  - {{id: emb, price: {{input: 1, output: 0}}}}\n  - {{id: claude, price: {{input: 1, output: 1}}}}\nchannels:\n{yaml}"
        );
        let cfg = crate::config::parse(&text, std::path::Path::new("."), &|_| None).expect("config");
        let list: Vec<_> =
            cfg.channels.into_iter().enumerate().map(|(i, c)| Arc::new(Channel::new(i, c, false))).collect();
        RouteTable::build(&list)
    }

    fn forward(plan: Result<Plan<'_>, GatewayError>) -> (Vec<usize>, Vec<usize>) {
        match plan {
            Ok(Plan::Forward(r)) => {
                (r.native.iter().map(|c| c.index).collect(), r.translated.iter().map(|c| c.index).collect())
            }
            other => panic!("not forwarded: {other:?}"),
        }
    }

    #[test]
    fn native_first_translated_after_and_why_not() {
        let t = table(
            "  - {name: oa, kind: openai, base_url: \"http://127.0.0.1:1/v1\", api_key: k, models: [gpt-4o, emb]}\n\
             \x20 - {name: an, kind: anthropic, base_url: \"http://127.0.0.1:2\", api_key: k, models: [claude, gpt-4o]}\n\
             \x20 - {name: off, kind: openai, base_url: \"http://127.0.0.1:3/v1\", api_key: \"\", models: [gpt-4o]}\n",
        );
        // A key-less channel takes nothing.
        assert_eq!(forward(t.plan("gpt-4o", Endpoint::ChatCompletions)), (vec![0], vec![1]));
        assert_eq!(forward(t.plan("gpt-4o", Endpoint::Messages)), (vec![1], vec![0]));
        assert!(matches!(
            t.plan("gpt-4o", Endpoint::Responses),
            Ok(Plan::Forward(Routes { native, translated })) if native[0].index == 0
                && translated[0].route == Route::Translate(crate::convert::translate::Pair::ResponsesToMessages)
        ));
        // Claude has no OpenAI channel: chat is translated, count_tokens native.
        assert_eq!(forward(t.plan("claude", Endpoint::ChatCompletions)), (vec![], vec![1]));
        assert_eq!(forward(t.plan("claude", Endpoint::CountTokens)), (vec![1], vec![]));
        // No Anthropic channel for emb: count_tokens is estimated here.
        assert!(matches!(t.plan("emb", Endpoint::CountTokens), Ok(Plan::LocalCount)));
        assert!(matches!(t.plan("claude", Endpoint::Embeddings), Err(GatewayError::Unsupported { .. })));
        assert!(matches!(t.plan("claude", Endpoint::ResponsesCompact), Err(GatewayError::Unsupported { .. })));
        assert!(matches!(t.plan("nope", Endpoint::ChatCompletions), Err(GatewayError::NoChannel { .. })));
        assert!(t.serves("emb") && !t.serves("nope"));
    }
}
