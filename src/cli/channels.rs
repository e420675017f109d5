//! `channels list|enable|disable`: the channel view of a running gateway,
//! through its admin API (health lives in the gateway's memory; an operator's
//! switch is also saved, so a disabled channel stays off across restarts).

use crate::config::Config;
use clap::Subcommand;
use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;
use pingora::upstreams::peer::HttpPeer;
use serde_json::Value;

#[derive(Subcommand, Debug)]
pub enum ChannelsCommand {
    /// Health, cool-downs, requests in flight and recent errors per channel.
    List,
    /// Put a channel back in service (clears auth failures, cool-down, ejection).
    Enable { name: String },
    /// Take a channel out of service.
    Disable { name: String },
}

fn admin_token(cfg: &Config) -> Result<String, String> {
    if !cfg.admin.token.is_empty() {
        return Ok(cfg.admin.token.expose().to_string());
    }
    let path = cfg.data_dir.join("admin.token");
    std::fs::read_to_string(&path)
        .map(|t| t.trim().to_string())
        .map_err(|e| format!("no admin token in the config and cannot read {}: {e}", path.display()))
}

/// Calls the running gateway's admin API; a status other than 200 is an
/// error carrying the API's message.
fn admin_call(cfg: &Config, method: &str, path: &str) -> Result<Value, String> {
    let (status, v) = admin_request(cfg, method, path)?;
    if status != 200 {
        return Err(format!("admin API answered {status}: {}", v["error"]));
    }
    Ok(v)
}

/// Calls the running gateway's admin API: the status and the JSON answer.
pub(super) fn admin_request(cfg: &Config, method: &str, path: &str) -> Result<(u16, Value), String> {
    let mut addr = cfg.admin.listen.ok_or("the admin API is disabled (admin.listen)")?;
    if addr.port() == 0 {
        // An OS-picked port: the running gateway wrote it down.
        let path = cfg.data_dir.join("admin.addr");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("admin.listen has port 0 and {} is unreadable: {e}", path.display()))?;
        addr = text.trim().parse().map_err(|_| format!("{} does not hold an address", path.display()))?;
    }
    let token = admin_token(cfg)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    rt.block_on(async {
        let connector = Connector::new(None);
        let mut peer = HttpPeer::new(addr, false, String::new());
        peer.options.connection_timeout = Some(std::time::Duration::from_secs(5));
        let (mut s, _) = connector
            .get_http_session(&peer)
            .await
            .map_err(|e| format!("cannot reach the admin API on {addr}: {e}"))?;
        let mut req = RequestHeader::build(method, path.as_bytes(), None).map_err(|e| e.to_string())?;
        req.insert_header("host", addr.to_string()).map_err(|e| e.to_string())?;
        req.insert_header("authorization", format!("Bearer {token}")).map_err(|e| e.to_string())?;
        req.insert_header("content-length", "0").map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(std::time::Duration::from_secs(30)));
        s.write_request_header(Box::new(req)).await.map_err(|e| e.to_string())?;
        s.finish_request_body().await.map_err(|e| e.to_string())?;
        s.read_response_header().await.map_err(|e| e.to_string())?;
        let status = s.response_header().map(|r| r.status.as_u16()).unwrap_or(0);
        let mut body = Vec::new();
        while let Some(b) = s.read_response_body().await.map_err(|e| e.to_string())? {
            body.extend_from_slice(&b);
        }
        let v: Value = serde_json::from_slice(&body).map_err(|e| format!("admin API answered {status}: {e}"))?;
        Ok((status, v))
    })
}

pub fn channels(cfg: &Config, cmd: ChannelsCommand) -> Result<(), String> {
    let show = |c: &Value| {
        let errors = c["recent_errors"].as_array().map_or(0, Vec::len);
        println!(
            "{:<16} {:<12} {:<12} {:>4} {:>3} {:>8} {:<25} {:>6}  {}",
            c["name"].as_str().unwrap_or(""),
            c["kind"].as_str().unwrap_or(""),
            c["status"].as_str().unwrap_or(""),
            c["priority"],
            c["weight"],
            c["in_flight"],
            c["cooldown_until"].as_str().or(c["ejected_until"].as_str()).unwrap_or("-"),
            errors,
            c["last_error"].as_str().unwrap_or("-")
        );
    };
    let header = || {
        println!(
            "{:<16} {:<12} {:<12} {:>4} {:>3} {:>8} {:<25} {:>6}  LAST ERROR",
            "NAME", "KIND", "STATUS", "PRIO", "W", "INFLIGHT", "UNTIL", "ERRORS"
        )
    };
    match cmd {
        ChannelsCommand::List => {
            let v = admin_call(cfg, "GET", "/admin/channels")?;
            header();
            for c in v["channels"].as_array().into_iter().flatten() {
                show(c);
            }
        }
        ChannelsCommand::Enable { name } => {
            header();
            show(&admin_call(cfg, "POST", &format!("/admin/channels/{name}/enable"))?);
        }
        ChannelsCommand::Disable { name } => {
            header();
            show(&admin_call(cfg, "POST", &format!("/admin/channels/{name}/disable"))?);
        }
    }
    Ok(())
}
