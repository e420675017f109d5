//! The public API surface: which endpoint a request is for, which protocol (and
//! so which error shape) the client speaks, and how request bodies are read.

pub mod body;
pub mod models;

use crate::error::GatewayError;

/// The endpoints of the product contract plus the account endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Models,
    ChatCompletions,
    Responses,
    /// The Responses API over a WebSocket (`GET /v1/responses` + upgrade).
    ResponsesSocket,
    ResponsesCompact,
    Embeddings,
    Messages,
    CountTokens,
    Account,
    BillingSubscription,
    BillingUsage,
    Redeem,
    Health,
    /// Ready for traffic: the database takes writes and a channel is up.
    Ready,
}

/// The two error body shapes clients understand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorShape {
    OpenAi,
    Anthropic,
}

/// The wire protocol of an LLM request or of an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Chat,
    Responses,
    Embeddings,
    Messages,
    CountTokens,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Chat => "chat",
            Protocol::Responses => "responses",
            Protocol::Embeddings => "embeddings",
            Protocol::Messages => "messages",
            Protocol::CountTokens => "count_tokens",
        }
    }
}

impl Endpoint {
    /// The path below the channel's base URL this endpoint is forwarded to.
    /// OpenAI base URLs end in `/v1`, Anthropic ones do not (the SDKs' convention).
    pub fn upstream_suffix(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "/chat/completions",
            Endpoint::Responses => "/responses",
            Endpoint::ResponsesCompact => "/responses/compact",
            Endpoint::Embeddings => "/embeddings",
            Endpoint::Messages => "/v1/messages",
            Endpoint::CountTokens => "/v1/messages/count_tokens",
            _ => "",
        }
    }

    /// The LLM protocol of the request, for forwarded endpoints.
    pub fn protocol(self) -> Option<Protocol> {
        match self {
            Endpoint::ChatCompletions => Some(Protocol::Chat),
            Endpoint::Responses | Endpoint::ResponsesCompact => Some(Protocol::Responses),
            Endpoint::Embeddings => Some(Protocol::Embeddings),
            Endpoint::Messages => Some(Protocol::Messages),
            Endpoint::CountTokens => Some(Protocol::CountTokens),
            _ => None,
        }
    }

    /// Whether the client may authenticate with `x-api-key` (Anthropic paths).
    pub fn accepts_x_api_key(self, shape: ErrorShape) -> bool {
        matches!(self, Endpoint::Messages | Endpoint::CountTokens) || shape == ErrorShape::Anthropic
    }
}

/// The request line and the headers that decide routing.
pub struct RouteInput<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub anthropic_version: bool,
    pub websocket_upgrade: bool,
}

/// Classifies a request. The query string never affects routing (`?beta=true`).
/// Errors are rendered in the shape the path implies.
pub fn classify(r: &RouteInput) -> (ErrorShape, Result<Endpoint, GatewayError>) {
    let path = r.path.split('?').next().unwrap_or("");
    let path = if path.len() > 1 { path.trim_end_matches('/') } else { path };
    let anthropic_path = path.starts_with("/v1/messages");
    let shape = if anthropic_path || (path == "/v1/models" && r.anthropic_version) {
        ErrorShape::Anthropic
    } else {
        ErrorShape::OpenAi
    };
    let (endpoint, method) = match path {
        "/v1/models" => (Endpoint::Models, "GET"),
        "/v1/chat/completions" => (Endpoint::ChatCompletions, "POST"),
        "/v1/responses" => (Endpoint::Responses, "POST"),
        "/v1/responses/compact" => (Endpoint::ResponsesCompact, "POST"),
        "/v1/embeddings" => (Endpoint::Embeddings, "POST"),
        "/v1/messages" => (Endpoint::Messages, "POST"),
        "/v1/messages/count_tokens" => (Endpoint::CountTokens, "POST"),
        "/v1/account" => (Endpoint::Account, "GET"),
        "/v1/dashboard/billing/subscription" | "/dashboard/billing/subscription" => {
            (Endpoint::BillingSubscription, "GET")
        }
        "/v1/dashboard/billing/usage" | "/dashboard/billing/usage" => (Endpoint::BillingUsage, "GET"),
        "/v1/redeem" => (Endpoint::Redeem, "POST"),
        "/healthz" => (Endpoint::Health, "GET"),
        "/readyz" => (Endpoint::Ready, "GET"),
        _ => return (shape, Err(GatewayError::RouteNotFound(path.to_string()))),
    };
    // Codex CLI first tries a WebSocket upgrade on GET /v1/responses.
    if endpoint == Endpoint::Responses && r.websocket_upgrade && r.method == "GET" {
        return (shape, Ok(Endpoint::ResponsesSocket));
    }
    let method_ok = r.method == method || (method == "GET" && r.method == "HEAD");
    if !method_ok {
        let e = GatewayError::MethodNotAllowed { method: r.method.to_string(), path: path.to_string() };
        return (shape, Err(e));
    }
    (shape, Ok(endpoint))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(method: &str, path: &str) -> (ErrorShape, Result<Endpoint, GatewayError>) {
        classify(&RouteInput { method, path, anthropic_version: false, websocket_upgrade: false })
    }

    #[test]
    fn query_strings_are_ignored() {
        assert_eq!(route("POST", "/v1/messages?beta=true"), (ErrorShape::Anthropic, Ok(Endpoint::Messages)));
        assert_eq!(
            route("POST", "/v1/messages/count_tokens?beta=true"),
            (ErrorShape::Anthropic, Ok(Endpoint::CountTokens))
        );
        assert_eq!(route("POST", "/v1/chat/completions/"), (ErrorShape::OpenAi, Ok(Endpoint::ChatCompletions)));
    }

    #[test]
    fn models_shape_follows_anthropic_version() {
        let r = classify(&RouteInput {
            method: "GET",
            path: "/v1/models",
            anthropic_version: true,
            websocket_upgrade: false,
        });
        assert_eq!(r, (ErrorShape::Anthropic, Ok(Endpoint::Models)));
        assert_eq!(route("GET", "/v1/models"), (ErrorShape::OpenAi, Ok(Endpoint::Models)));
    }

    #[test]
    fn websocket_and_unknown_paths() {
        let r = classify(&RouteInput {
            method: "GET",
            path: "/v1/responses",
            anthropic_version: false,
            websocket_upgrade: true,
        });
        assert_eq!(r.1, Ok(Endpoint::ResponsesSocket));
        assert!(matches!(route("GET", "/v1/responses").1, Err(GatewayError::MethodNotAllowed { .. })));
        assert!(matches!(route("POST", "/v2/chat").1, Err(GatewayError::RouteNotFound(_))));
    }
}
