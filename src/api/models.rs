//! `GET /v1/models`, answered by the gateway itself from configuration: the
//! OpenAI list shape, or the Anthropic one when the request carries
//! `anthropic-version` (the Anthropic SDK and Claude Code send it).

use super::ErrorShape;
use crate::config::ModelConfig;
use serde_json::{json, Value};

/// What `owned_by` says for every model while the demo upstream answers.
pub const DEMO_OWNER: &str = "codex-proxy-demo (built-in fake upstream: no provider API key configured)";

fn rfc3339(unix: u64) -> String {
    chrono::DateTime::from_timestamp(unix as i64, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// Renders the list of models the key may use.
pub fn render(models: &[&ModelConfig], shape: ErrorShape, demo: bool) -> Value {
    match shape {
        ErrorShape::OpenAi => json!({
            "object": "list",
            "data": models.iter().map(|m| json!({
                "id": m.id,
                "object": "model",
                "created": m.created,
                "owned_by": if demo { DEMO_OWNER } else { m.owned_by.as_str() },
            })).collect::<Vec<_>>(),
        }),
        ErrorShape::Anthropic => {
            let data: Vec<Value> = models
                .iter()
                .map(|m| {
                    let mut v = json!({
                        "type": "model",
                        "id": m.id,
                        "display_name": m.display_name,
                        "created_at": rfc3339(m.created),
                    });
                    if demo {
                        v["owned_by"] = json!(DEMO_OWNER);
                    }
                    v
                })
                .collect();
            json!({
                "data": data,
                "has_more": false,
                "first_id": models.first().map(|m| m.id.as_str()),
                "last_id": models.last().map(|m| m.id.as_str()),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Price;

    fn model(id: &str) -> ModelConfig {
        ModelConfig {
            id: id.into(),
            display_name: format!("{id} name"),
            owned_by: "openai".into(),
            created: 1_700_000_000,
            price: Price::default(),
        }
    }

    #[test]
    fn openai_list() {
        let (a, b) = (model("a"), model("b"));
        let v = render(&[&a, &b], ErrorShape::OpenAi, false);
        assert_eq!(v["object"], "list");
        assert_eq!(v["data"][1], json!({"id":"b","object":"model","created":1_700_000_000u64,"owned_by":"openai"}));
        let v = render(&[&a], ErrorShape::OpenAi, true);
        assert_eq!(v["data"][0]["owned_by"], DEMO_OWNER);
    }

    #[test]
    fn anthropic_list() {
        let (a, b) = (model("a"), model("b"));
        let v = render(&[&a, &b], ErrorShape::Anthropic, false);
        assert_eq!(
            v["data"][0],
            json!({"type":"model","id":"a","display_name":"a name","created_at":"2023-11-14T22:13:20Z"})
        );
        assert_eq!(
            (v["has_more"].clone(), v["first_id"].clone(), v["last_id"].clone()),
            (json!(false), json!("a"), json!("b"))
        );
    }
}
