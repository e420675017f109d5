//! `GatewayError`: every way a request can fail before (or instead of) an upstream
//! answer, with its HTTP status, a stable `kind()` for logs, and a renderer for
//! each client protocol's error shape (OpenAI `{"error":{…}}`, Anthropic
//! `{"type":"error","error":{…}}`).

use crate::api::ErrorShape;
use crate::convert::ir::ErrKind;
use bytes::Bytes;
use serde_json::json;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    #[error("Missing API key: send `Authorization: Bearer codex_...`")]
    MissingKey,
    #[error("Malformed API key: expected `codex_` followed by at least 32 letters and digits")]
    MalformedKey,
    #[error("Invalid API key: no such key")]
    UnknownKey,
    #[error("This API key is disabled")]
    DisabledKey,
    #[error("This API key has expired")]
    ExpiredKey,
    #[error("This account is banned")]
    UserBanned,
    #[error("Model '{model}' is not allowed {reason}")]
    ModelNotAllowed { model: String, reason: &'static str },
    #[error("Concurrency limit reached: at most {limit} requests at a time for this account")]
    ConcurrencyLimit { limit: u32 },
    #[error("Rate limit reached: at most {rpm} requests per minute for this account")]
    RateLimit { rpm: u32, retry_after: u64 },
    #[error("Daily plan quota exhausted; it resets in {retry_after} seconds")]
    DailyQuotaExhausted { retry_after: u64 },
    #[error("Insufficient credits: redeem a plan or buy credits first")]
    InsufficientCredits,
    #[error("Insufficient credits: requests in flight hold all of your balance; try again when they finish")]
    CreditsHeld,
    #[error("Invalid JSON body: {0}")]
    InvalidJson(String),
    #[error("Missing required field '{0}'")]
    MissingField(&'static str),
    #[error("Invalid field '{field}': {message}")]
    InvalidField { field: &'static str, message: String },
    #[error("{message}")]
    Unsupported { param: &'static str, code: &'static str, message: String },
    #[error("Request body too large: the limit is {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("Request headers too large: at most {limit} bytes and {max_count} header fields")]
    HeadersTooLarge { limit: usize, max_count: usize },
    #[error("The model '{0}' does not exist or is not served by this gateway")]
    UnknownModel(String),
    #[error("Unknown endpoint: {0}")]
    RouteNotFound(String),
    #[error("Method {method} is not allowed on {path}")]
    MethodNotAllowed { method: String, path: String },
    #[error("WebSocket transport is not supported; use HTTP with server-sent events")]
    WebSocketUnsupported,
    #[error("{0}")]
    RedeemInvalid(String),
    #[error("{0}")]
    RedeemConflict(String),
    #[error("Too many failed redemption attempts; try again in {retry_after} seconds")]
    RedeemThrottled { retry_after: u64 },
    #[error("No active upstream channel for model '{model}'")]
    NoChannel { model: String },
    #[error("All channels failed for model '{model}': {last}")]
    AllChannelsFailed { model: String, last: String, retry_after: u64 },
    #[error(
        "Account limits are unavailable right now (this node cannot reach the cluster's Redis); try again shortly"
    )]
    LimitsUnavailable,
    #[error("Internal error: {0}")]
    Internal(String),
}

impl GatewayError {
    pub fn status(&self) -> u16 {
        use GatewayError::*;
        match self {
            MissingKey | MalformedKey | UnknownKey | DisabledKey | ExpiredKey => 401,
            InsufficientCredits | CreditsHeld => 402,
            UserBanned | ModelNotAllowed { .. } => 403,
            ConcurrencyLimit { .. } | RateLimit { .. } | DailyQuotaExhausted { .. } | RedeemThrottled { .. } => 429,
            InvalidJson(_) | MissingField(_) | InvalidField { .. } | Unsupported { .. } | RedeemInvalid(_) => 400,
            RedeemConflict(_) => 409,
            BodyTooLarge { .. } => 413,
            HeadersTooLarge { .. } => 431,
            UnknownModel(_) | RouteNotFound(_) => 404,
            MethodNotAllowed { .. } => 405,
            WebSocketUnsupported => 426,
            NoChannel { .. } | AllChannelsFailed { .. } | LimitsUnavailable => 503,
            Internal(_) => 500,
        }
    }

    /// Stable, low-cardinality name for the access log and metrics.
    pub fn kind(&self) -> &'static str {
        use GatewayError::*;
        match self {
            MissingKey => "missing_key",
            MalformedKey => "malformed_key",
            UnknownKey => "unknown_key",
            DisabledKey => "disabled_key",
            ExpiredKey => "expired_key",
            UserBanned => "user_banned",
            ModelNotAllowed { .. } => "model_not_allowed",
            ConcurrencyLimit { .. } => "concurrency_limit",
            RateLimit { .. } => "rate_limit",
            DailyQuotaExhausted { .. } => "daily_quota_exhausted",
            InsufficientCredits => "insufficient_credits",
            CreditsHeld => "credits_held",
            InvalidJson(_) => "invalid_json",
            MissingField(_) => "missing_field",
            InvalidField { .. } => "invalid_field",
            Unsupported { .. } => "unsupported",
            BodyTooLarge { .. } => "body_too_large",
            HeadersTooLarge { .. } => "headers_too_large",
            UnknownModel(_) => "unknown_model",
            RouteNotFound(_) => "route_not_found",
            MethodNotAllowed { .. } => "method_not_allowed",
            WebSocketUnsupported => "websocket_unsupported",
            RedeemInvalid(_) => "redeem_invalid",
            RedeemConflict(_) => "redeem_conflict",
            RedeemThrottled { .. } => "redeem_throttled",
            NoChannel { .. } => "no_channel",
            AllChannelsFailed { .. } => "all_channels_failed",
            LimitsUnavailable => "limits_unavailable",
            Internal(_) => "internal",
        }
    }

    /// Seconds for the `retry-after` header (429 and 503 only).
    pub fn retry_after(&self) -> Option<u64> {
        use GatewayError::*;
        match self {
            ConcurrencyLimit { .. } => Some(1),
            RateLimit { retry_after, .. } | DailyQuotaExhausted { retry_after } | RedeemThrottled { retry_after } => {
                Some((*retry_after).max(1))
            }
            AllChannelsFailed { retry_after, .. } => Some((*retry_after).max(1)),
            NoChannel { .. } => Some(5),
            LimitsUnavailable => Some(1),
            _ => None,
        }
    }

    /// Whether clients must not retry: SDKs and Claude Code honour
    /// `x-should-retry: false` (without it Claude Code retries a 401 for minutes).
    pub fn should_not_retry(&self) -> bool {
        // Held credits come free when the requests holding them end.
        !matches!(self, GatewayError::CreditsHeld)
            && matches!(self.status(), 400 | 401 | 402 | 403 | 404 | 405 | 409 | 413 | 426 | 431)
    }

    /// The canonical kind, which picks the error `type` each client API
    /// shows (the same tables render upstream errors: `convert::chat` and
    /// `convert::anthropic`).
    pub fn err_kind(&self) -> ErrKind {
        use GatewayError::*;
        match self {
            MissingKey | MalformedKey | UnknownKey | DisabledKey | ExpiredKey => ErrKind::Auth,
            UserBanned | ModelNotAllowed { .. } => ErrKind::Permission,
            ConcurrencyLimit { .. } | RateLimit { .. } | DailyQuotaExhausted { .. } | RedeemThrottled { .. } => {
                ErrKind::RateLimit
            }
            InsufficientCredits | CreditsHeld => ErrKind::Quota,
            BodyTooLarge { .. } | HeadersTooLarge { .. } => ErrKind::TooLarge,
            UnknownModel(_) | RouteNotFound(_) => ErrKind::NotFound,
            NoChannel { .. } | AllChannelsFailed { .. } | LimitsUnavailable => ErrKind::Overloaded,
            Internal(_) => ErrKind::Server,
            InvalidJson(_)
            | MissingField(_)
            | InvalidField { .. }
            | Unsupported { .. }
            | MethodNotAllowed { .. }
            | WebSocketUnsupported
            | RedeemInvalid(_)
            | RedeemConflict(_) => ErrKind::InvalidRequest,
        }
    }

    /// OpenAI's `code` and `param`, more precise than the kind's.
    fn openai_code_param(&self) -> (Option<&'static str>, Option<&'static str>) {
        use GatewayError::*;
        match self {
            MissingKey | MalformedKey | UnknownKey | DisabledKey | ExpiredKey => (Some("invalid_api_key"), None),
            UserBanned => (Some("account_banned"), None),
            ModelNotAllowed { .. } => (Some("model_not_allowed"), Some("model")),
            ConcurrencyLimit { .. } | RateLimit { .. } | DailyQuotaExhausted { .. } | RedeemThrottled { .. } => {
                (Some("rate_limit_exceeded"), None)
            }
            InsufficientCredits | CreditsHeld => (Some("insufficient_quota"), None),
            InvalidJson(_) => (Some("invalid_json"), None),
            MissingField(f) => (Some("missing_required_parameter"), Some(f)),
            InvalidField { field, .. } => (Some("invalid_value"), Some(field)),
            Unsupported { param, code, .. } => (Some(code), Some(param)),
            BodyTooLarge { .. } => (Some("request_too_large"), None),
            HeadersTooLarge { .. } => (Some("request_header_fields_too_large"), None),
            UnknownModel(_) => (Some("model_not_found"), Some("model")),
            RouteNotFound(_) => (Some("unknown_url"), None),
            MethodNotAllowed { .. } => (Some("method_not_allowed"), None),
            WebSocketUnsupported => (Some("websocket_not_supported"), None),
            RedeemInvalid(_) => (Some("invalid_code"), Some("code")),
            RedeemConflict(_) => (Some("code_unavailable"), Some("code")),
            NoChannel { .. } | AllChannelsFailed { .. } | LimitsUnavailable | Internal(_) => (None, None),
        }
    }

    /// The JSON error body in the given shape.
    pub fn body(&self, shape: ErrorShape, request_id: &str) -> Bytes {
        let message = self.to_string();
        let v = match shape {
            ErrorShape::OpenAi => {
                let (ty, _) = crate::convert::chat::error_type_code(self.err_kind());
                let (code, param) = self.openai_code_param();
                json!({"error": {"message": message, "type": ty, "param": param, "code": code}})
            }
            ErrorShape::Anthropic => json!({
                "type": "error",
                "error": {"type": crate::convert::anthropic::error_type(self.err_kind()), "message": message},
                "request_id": request_id,
            }),
        };
        Bytes::from(serde_json::to_vec(&v).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(b: Bytes) -> serde_json::Value {
        serde_json::from_slice(&b).unwrap()
    }

    #[test]
    fn openai_shape() {
        let v = parse(GatewayError::UnknownModel("gpt-9".into()).body(ErrorShape::OpenAi, "req_1"));
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["code"], "model_not_found");
        assert_eq!(v["error"]["param"], "model");
        assert_eq!(v["error"]["message"], "The model 'gpt-9' does not exist or is not served by this gateway");
    }

    #[test]
    fn anthropic_shape() {
        let v = parse(GatewayError::DisabledKey.body(ErrorShape::Anthropic, "req_1"));
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "authentication_error");
        assert_eq!(v["request_id"], "req_1");
        let v = parse(GatewayError::InsufficientCredits.body(ErrorShape::Anthropic, "r"));
        assert_eq!(v["error"]["type"], "billing_error");
        assert_eq!(v["error"]["message"], "Insufficient credits: redeem a plan or buy credits first");
    }

    /// The Anthropic type follows the status, as Anthropic's API does.
    #[test]
    fn anthropic_types_match_statuses() {
        let all = [
            GatewayError::MissingKey,
            GatewayError::UserBanned,
            GatewayError::ModelNotAllowed { model: "m".into(), reason: "r" },
            GatewayError::ConcurrencyLimit { limit: 1 },
            GatewayError::InsufficientCredits,
            GatewayError::InvalidJson("x".into()),
            GatewayError::BodyTooLarge { limit: 1 },
            GatewayError::UnknownModel("m".into()),
            GatewayError::MethodNotAllowed { method: "PUT".into(), path: "/v1".into() },
            GatewayError::WebSocketUnsupported,
            GatewayError::RedeemConflict("x".into()),
            GatewayError::NoChannel { model: "m".into() },
            GatewayError::Internal("x".into()),
        ];
        for e in all {
            let want = match e.status() {
                401 => "authentication_error",
                402 => "billing_error",
                403 => "permission_error",
                404 => "not_found_error",
                413 => "request_too_large",
                429 => "rate_limit_error",
                503 => "overloaded_error",
                500 => "api_error",
                _ => "invalid_request_error",
            };
            assert_eq!(parse(e.body(ErrorShape::Anthropic, "r"))["error"]["type"], want, "{e:?}");
        }
    }

    #[test]
    fn statuses_and_retry_headers() {
        assert_eq!(GatewayError::InsufficientCredits.status(), 402);
        assert!(GatewayError::InsufficientCredits.should_not_retry());
        assert_eq!(GatewayError::ConcurrencyLimit { limit: 2 }.retry_after(), Some(1));
        assert!(!GatewayError::ConcurrencyLimit { limit: 2 }.should_not_retry());
        let e = GatewayError::NoChannel { model: "m".into() };
        assert_eq!((e.status(), e.retry_after()), (503, Some(5)));
        assert_eq!(GatewayError::WebSocketUnsupported.status(), 426);
    }
}
