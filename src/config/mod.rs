//! Configuration: one YAML file (`conf/codex-proxy.yaml`), `${VAR}` interpolation,
//! then validation into the typed [`Config`]. `codex-proxy check -c FILE` prints
//! every error with its field path.

mod env;
pub mod file;
pub mod model;
pub mod quirks;
mod sections;
pub mod units;
mod validate;

pub use model::*;
pub use validate::PASSWORD_ENV;

use std::path::Path;

/// Loads and validates a configuration file, using the process environment for
/// interpolation.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![FieldError { path: path.display().to_string(), message: format!("cannot read: {e}") }])
    })?;
    let dir = path.parent().unwrap_or(Path::new("."));
    parse(&text, dir, &|name| std::env::var(name).ok())
}

/// Parses configuration text. `conf_dir` anchors relative TLS paths; `lookup`
/// resolves `${VAR}`.
pub fn parse(text: &str, conf_dir: &Path, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigErrors> {
    let one = |path: &str, message: String| ConfigErrors(vec![FieldError { path: path.to_string(), message }]);
    let mut tree: serde_yaml::Value = if text.trim().is_empty() {
        serde_yaml::Value::Mapping(Default::default())
    } else {
        serde_yaml::from_str(text).map_err(|e| one("(yaml)", e.to_string()))?
    };
    let mut errors = Vec::new();
    env::interpolate_tree(&mut tree, "", lookup, &mut errors);
    if !errors.is_empty() {
        return Err(ConfigErrors(errors.into_iter().map(|(path, message)| FieldError { path, message }).collect()));
    }
    let file = sections::read(tree).map_err(ConfigErrors)?;
    validate::validate(file, conf_dir)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::time::Duration;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn parse_str(text: &str) -> Result<Config, ConfigErrors> {
        parse(text, Path::new("."), &no_env)
    }

    pub(crate) const MINIMAL: &str = r#"
server:
  listen: ["127.0.0.1:0"]
models:
  - id: m1
    price: {input: 1, output: 2}
channels:
  - name: up
    kind: openai
    base_url: http://127.0.0.1:9/v1
    api_key: sk-test
    models: [m1]
"#;

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse_str(MINIMAL).unwrap();
        assert_eq!(c.threads, 2);
        assert_eq!(c.grace_period, Duration::from_secs(10));
        assert_eq!(c.max_body_bytes, 32 << 20);
        assert_eq!(c.routing.max_attempts, 3);
        assert_eq!(
            c.models[0].price,
            Price { input: 1_000_000, cached_input: 1_000_000, cache_write: 1_000_000, output: 2_000_000 }
        );
        assert_eq!(c.channels[0].models.get("m1").map(String::as_str), Some("m1"));
        assert_eq!(c.access_log.as_deref(), Some(Path::new("./data/access.log")));
        assert_eq!(c.database, Path::new("./data/codex-proxy.db").into());
    }

    /// The shipped file is the documented default: it must load with and
    /// without provider keys, and contain the models the docs promise.
    #[test]
    fn shipped_config_loads() {
        let text = include_str!("../../conf/codex-proxy.yaml");
        let c = parse(text, Path::new("conf"), &no_env).unwrap();
        assert_eq!(c.listeners[0].address.to_string(), "0.0.0.0:8080");
        assert_eq!(c.data_dir, Path::new("./data"));
        for m in ["gpt-4o-mini", "gpt-5.1-codex", "text-embedding-3-small", "claude-sonnet-4-6", "claude-haiku-4-5"] {
            let model = c.model(m).unwrap_or_else(|| panic!("{m} missing"));
            assert!(model.price.input > 0 && (model.price.output > 0 || m.starts_with("text-")), "{m} has prices");
        }
        let openai = c.channels.iter().find(|ch| ch.kind == ChannelKind::OpenAi).unwrap();
        assert_eq!(openai.base_url.to_string(), "https://api.openai.com/v1");
        assert!(openai.api_key.is_empty());
        let env = |n: &str| match n {
            "CODEX_PROXY_LISTEN" => Some("127.0.0.1:9999".to_string()),
            "ANTHROPIC_BASE_URL" => Some("http://10.0.0.1:8000".to_string()),
            "ANTHROPIC_API_KEY" => Some("sk-ant".to_string()),
            _ => None,
        };
        let c = parse(text, Path::new("conf"), &env).unwrap();
        assert_eq!(c.listeners[0].address.to_string(), "127.0.0.1:9999");
        let ant = c.channels.iter().find(|ch| ch.kind == ChannelKind::Anthropic).unwrap();
        assert_eq!(ant.base_url.to_string(), "http://10.0.0.1:8000");
        assert_eq!(ant.api_key.expose(), "sk-ant");
    }

    /// The example node of a cluster loads, as the docs describe it.
    #[test]
    fn cluster_example_loads() {
        let text = include_str!("../../conf/cluster.example.yaml");
        let env = |n: &str| match n {
            "CODEX_PROXY_DB_HOST" => Some("10.0.0.7".to_string()),
            "REDIS_PASSWORD" => Some("pw".to_string()),
            "CODEX_PROXY_ADMIN_TOKEN" => Some("0123456789abcdef0123".to_string()),
            _ => None,
        };
        let c = parse(text, Path::new("conf"), &env).unwrap();
        assert_eq!(c.data_dir, Path::new("/var/lib/codex-proxy"));
        let crate::store::Database::Postgres(pg) = &c.database else { panic!("{:?}", c.database) };
        assert_eq!(pg.url, "postgres://codex@10.0.0.7:5432/codex");
        assert_eq!(pg.password_env, "CODEX_PROXY_DB_PASSWORD");
        let cl = c.cluster.unwrap();
        assert_eq!((cl.nodes, cl.on_redis_down), (3, RedisDown::LocalLimits));
        assert_eq!(cl.redis_url.expose(), "redis://:pw@redis.internal:6379/0");
        assert_eq!(c.max_connections_per_ip, None);
    }

    fn errors_of(text: &str) -> Vec<String> {
        match parse_str(text) {
            Ok(_) => panic!("expected errors"),
            Err(e) => e.0.iter().map(|f| format!("{}: {}", f.path, f.message)).collect(),
        }
    }

    #[test]
    fn cluster_settings_are_checked() {
        assert_eq!(parse_str(MINIMAL).unwrap().cluster, None);
        let c = parse_str(&format!(
            "{MINIMAL}storage:\n  redis_url: redis://:pw@10.0.0.5:6379/2\ncluster:\n  nodes: 3\n  on_redis_down: fail_closed\n"
        ))
        .unwrap();
        let cl = c.cluster.unwrap();
        assert_eq!((cl.nodes, cl.on_redis_down, cl.lease_ttl), (3, RedisDown::FailClosed, Duration::from_secs(10)));
        assert_eq!(cl.redis_url.expose(), "redis://:pw@10.0.0.5:6379/2");
        let errs = errors_of(&format!(
            "{MINIMAL}storage:\n  redis_url: http://x\ncluster:\n  nodes: 0\n  on_redis_down: open\n  lease_ttl: 100ms\n"
        ));
        assert_eq!(errs.len(), 4, "{errs:?}");
        assert!(errs[0].starts_with("cluster.on_redis_down: \"open\" is not"), "{errs:?}");
        assert!(errs[1].starts_with("cluster.nodes: "), "{errs:?}");
        assert!(errs[2].starts_with("cluster.lease_ttl: must be between 1s and 5m"), "{errs:?}");
        assert!(errs[3].starts_with("storage.redis_url: must start with"), "{errs:?}");
    }

    #[test]
    fn storage_backends_are_checked() {
        let c =
            parse_str(&format!("{MINIMAL}storage:\n  backend: postgres\n  url: postgres://codex@db/codex\n")).unwrap();
        let crate::store::Database::Postgres(pg) = &c.database else { panic!("{:?}", c.database) };
        assert_eq!((pg.url.as_str(), pg.password_env.as_str()), ("postgres://codex@db/codex", PASSWORD_ENV));
        let errs = errors_of(&format!("{MINIMAL}storage:\n  backend: mysql\n"));
        assert!(errs[0].starts_with("storage.backend: \"mysql\" is not sqlite or postgres"), "{errs:?}");
        let errs = errors_of(&format!("{MINIMAL}storage:\n  backend: postgres\n  database: x.db\n"));
        assert!(errs[0].starts_with("storage.database: is the SQLite file"), "{errs:?}");
        assert!(errs[1].starts_with("storage.url: is required"), "{errs:?}");
        let errs = errors_of(&format!(
            "{MINIMAL}storage:\n  backend: postgres\n  url: postgres://codex:secret@db/codex\n  password_env: \"a b\"\n"
        ));
        assert!(errs[0].starts_with("storage.url: must not hold the password"), "{errs:?}");
        assert!(errs[1].starts_with("storage.password_env: must be"), "{errs:?}");
        assert_eq!(parse_str(MINIMAL).unwrap().write_failure_grace, Duration::from_secs(30));
        let errs = errors_of(&format!("{MINIMAL}storage:\n  write_failure_grace: 20m\n"));
        assert!(errs[0].starts_with("storage.write_failure_grace: must be between 1s and 10m"), "{errs:?}");
        let errs = errors_of(&format!("{MINIMAL}storage:\n  url: postgres://codex@db/codex\n"));
        assert!(errs[0].starts_with("storage.url: is for backend: postgres"), "{errs:?}");
    }

    #[test]
    fn a_ca_file_is_read_at_load_and_only_where_tls_is_possible() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, rcgen::generate_simple_self_signed(vec!["db".into()]).unwrap().cert.pem()).unwrap();
        let pg = "storage:\n  backend: postgres\n  url: postgres://codex@db/codex?sslmode=require\n";
        let text = format!("{MINIMAL}{pg}  redis_url: rediss://redis:6380\n  ca_file: ca.pem\n");
        let c = parse(&text, dir.path(), &no_env).unwrap();
        let crate::store::Database::Postgres(target) = &c.database else { panic!("{:?}", c.database) };
        assert_eq!(target.ca_file.as_deref(), Some(ca.as_path()), "relative to the config file");
        assert_eq!(c.cluster.unwrap().ca_file.as_deref(), Some(ca.as_path()));
        // Plain Redis beside it: the CA is PostgreSQL's alone.
        let text = format!("{MINIMAL}{pg}  redis_url: redis://redis:6379\n  ca_file: ca.pem\n");
        assert_eq!(parse(&text, dir.path(), &no_env).unwrap().cluster.unwrap().ca_file, None);
        let errs = errors_of(&format!("{MINIMAL}storage:\n  ca_file: {}\n", ca.display()));
        assert!(errs[0].starts_with("storage.ca_file: is for TLS to PostgreSQL"), "{errs:?}");
        let errs = errors_of(&format!("{MINIMAL}{pg}  ca_file: /nonexistent/ca.pem\n"));
        assert!(errs[0].starts_with("storage.ca_file: cannot read /nonexistent/ca.pem"), "{errs:?}");
    }

    #[test]
    fn routing_keys_and_holds_are_checked() {
        let c = parse_str(&format!("{MINIMAL}routing:\n  affinity_keys: [session_id, \"header:X-Trace\"]\n")).unwrap();
        assert_eq!(c.routing.affinity_keys, vec![AffinityKey::SessionId, AffinityKey::Header("x-trace".into())]);
        assert_eq!(parse_str(MINIMAL).unwrap().routing.affinity_keys.len(), 6);
        let errs = errors_of(&format!(
            "{MINIMAL}routing:\n  affinity_keys: [session_id, user]\n  stream_hold: 2m\n  stream_keepalive: 0s\n"
        ));
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(errs[0].starts_with("routing.affinity_keys[1]: \"user\" must be"), "{errs:?}");
        assert!(errs[1].starts_with("routing.stream_hold: must be at most 60s"), "{errs:?}");
        let c = parse_str(&format!("{MINIMAL}routing:\n  stream_keepalive: 0s\n")).unwrap();
        assert_eq!(c.routing.stream_keepalive, None);
    }

    #[test]
    fn unknown_fields_name_their_path() {
        let errs = errors_of(&MINIMAL.replace("kind: openai", "kind: openai\n    wieght: 3"));
        assert_eq!(errs.len(), 1);
        assert!(errs[0].starts_with("channels[0].wieght: unknown field `wieght`, expected one of"), "{errs:?}");
    }

    #[test]
    fn every_type_error_is_reported_not_only_the_first() {
        let text = format!(
            "{}plans:\n  - {{id: p, name: P, daily_quota: lots}}\ncolour: blue\nserver2: {{}}\n",
            MINIMAL
                .replace("kind: openai", "kind: openai\n    wieght: 3")
                .replace("price: {input: 1", "price: {inptu: 1")
        );
        let errs = errors_of(&text);
        assert_eq!(errs.len(), 5, "{errs:?}");
        for start in [
            "colour: unknown section",
            "server2: unknown section",
            "models[0].price.inptu",
            "channels[0].wieght",
            "plans[0].daily_quota",
        ] {
            assert!(errs.iter().any(|e| e.starts_with(start)), "{start}: {errs:?}");
        }
    }

    #[test]
    fn all_semantic_errors_are_reported() {
        let text = MINIMAL
            .replace("kind: openai", "kind: gemini")
            .replace("http://127.0.0.1:9/v1", "ftp://x")
            .replace("\"127.0.0.1:0\"", "\"localhost\"")
            .replace("models: [m1]", "models: [m1, m2]");
        let errs = errors_of(&text);
        assert!(errs.iter().any(|e| e.starts_with("server.listen[0]: \"localhost\" is not an IP:port")), "{errs:?}");
        assert!(errs.iter().any(|e| e.starts_with("channels[0].kind: must be openai")), "{errs:?}");
        assert!(errs.iter().any(|e| e.starts_with("channels[0].base_url:")), "{errs:?}");
    }

    #[test]
    fn undeclared_model_and_bad_values() {
        let text = MINIMAL.replace("models: [m1]", "models: [m1, m2]\n    weight: 0");
        let errs = errors_of(&text);
        assert!(
            errs.contains(&"channels[0].models[1]: model \"m2\" is not declared under models".to_string()),
            "{errs:?}"
        );
        assert!(errs.contains(&"channels[0].weight: must be between 1 and 10000, got 0".to_string()), "{errs:?}");
    }

    #[test]
    fn quirks_are_checked_per_field() {
        let text = MINIMAL.replace(
            "models: [m1]",
            "models: [m1]\n    quirks: {max_tokens_field: max_completion_tokens, tool_name_max_len: 8}",
        );
        assert_eq!(errors_of(&text), vec!["channels[0].quirks.tool_name_max_len: must be between 16 and 256, got 8"]);
        let text = text.replace(", tool_name_max_len: 8", "");
        let c = parse_str(&text).unwrap();
        assert_eq!(c.channels[0].quirks.max_tokens_field, quirks::MaxTokensField::MaxCompletionTokens);
        let errs = errors_of(&text.replace("kind: openai", "kind: anthropic"));
        assert_eq!(errs, vec!["channels[0].quirks: only applies to openai and openai-chat channels"]);
        let errs = errors_of(&MINIMAL.replace("models: [m1]", "models: [m1]\n    quirks: {stream_usage: never}"));
        assert!(errs[0].starts_with("channels[0].quirks.stream_usage: unknown variant `never`"), "{errs:?}");
    }

    #[test]
    fn unset_variable_is_an_error_with_path() {
        let errs = errors_of(&MINIMAL.replace("sk-test", "${NOT_SET_ANYWHERE}"));
        assert_eq!(errs, vec!["channels[0].api_key: environment variable NOT_SET_ANYWHERE is not set (write ${NOT_SET_ANYWHERE:-default} to allow that)".to_string()]);
    }

    #[test]
    fn admin_on_public_address_needs_a_token() {
        let errs = errors_of(&format!("{MINIMAL}admin:\n  listen: 0.0.0.0:8081\n"));
        assert_eq!(
            errs,
            vec!["admin.token: required when admin.listen (0.0.0.0:8081) is not a loopback address".to_string()]
        );
    }

    #[test]
    fn console_defaults_and_errors() {
        let c = parse_str(MINIMAL).unwrap().console;
        assert!(c.enabled);
        assert_eq!((c.signup, c.site_name.as_str(), c.max_keys_per_user), (Signup::Open, "codex-proxy", 20));
        assert_eq!(c.public_url, None);
        assert_eq!(c.session_idle_timeout, Duration::from_secs(8 * 3600));
        let c = parse_str(&format!(
            "{MINIMAL}console: {{signup: invite, public_url: \"https://relay.example.com/\", signup_credits: 0.5}}\n"
        ))
        .unwrap()
        .console;
        assert_eq!(c.signup, Signup::Invite);
        assert_eq!(c.public_url.as_deref(), Some("https://relay.example.com"));
        assert_eq!(c.signup_credits, 500_000);
        let errs = errors_of(&format!(
            "{MINIMAL}console: {{public_url: \"https://x.example/v1\", purchase_url: \"shop\", session_idle_timeout: 30d}}\n"
        ));
        assert_eq!(
            errs,
            vec![
                "console.public_url: \"https://x.example/v1\" must be the site root (https://relay.example.com), without a path",
                "console.purchase_url: \"shop\" must be an http(s) URL",
                "console.session_idle_timeout: must be at least 1s and at most console.session_max_age",
            ]
        );
        let errs = errors_of(&format!("{MINIMAL}console: {{signup: maybe}}\n"));
        assert!(errs[0].starts_with("console.signup: unknown variant `maybe`, expected one of"), "{errs:?}");
    }

    #[test]
    fn payments_errors_name_their_fields() {
        let c = parse_str(MINIMAL).unwrap().payments;
        assert!(!c.enabled() && c.stripe.is_none());
        let text = format!(
            "{MINIMAL}payments:
  stripe: {{secret_key: \"\", webhook_secret: w, currency: usd}}
  packages:
    - {{id: a, credits: 10, prices: {{usd: 10.001}}}}
    - {{id: b, plan: gold, prices: {{eur: 5}}}}
    - {{id: c, credits: 1, plan: gold, prices: {{}}}}
  custom: {{min_credits: 10, max_credits: 5.5, credit_price: {{usd: 1}}}}
  order_ttl: 5m
"
        );
        let errs = errors_of(&text);
        for want in [
            "payments.stripe.secret_key: required (set it from an environment variable)",
            "payments.packages[0].prices.usd: amount \"10.001\" has more than 2 decimal places",
            "payments.packages[1].plan: no plan \"gold\" under plans",
            "payments.packages[1].prices: no price in a currency a provider charges in (usd)",
            "payments.packages[2]: give exactly one of credits (positive) or plan",
            "payments.packages[2].prices: at least one price is required ({usd: 10})",
            "payments.custom.max_credits: must be a positive whole number of credits",
            "payments.order_ttl: must be between 30m and 24h (Stripe's checkout sessions live that long)",
        ] {
            assert!(errs.iter().any(|e| e == want), "missing {want:?} in {errs:#?}");
        }
    }

    #[test]
    fn numbers_may_come_from_variables() {
        let env = |n: &str| (n == "T").then(|| "3".to_string());
        let c = parse(
            &format!("{MINIMAL}  threads: ${{T}}\n").replace("server:\n  listen: [\"127.0.0.1:0\"]\n", ""),
            Path::new("."),
            &env,
        );
        // `threads` landed under the last channel; that is a typo the checker must catch.
        assert!(c.is_err());
        let text = MINIMAL.replace("listen: [\"127.0.0.1:0\"]", "listen: [\"127.0.0.1:0\"]\n  threads: ${T}");
        let c = parse(&text, Path::new("."), &env).unwrap();
        assert_eq!(c.threads, 3);
    }
}
