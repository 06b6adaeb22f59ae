//! `[consul]` and `[election]`: the Consul settings of the config file.
//!
//! `[consul]`: where the Consul agent is, how to authenticate (ACL token,
//! TLS and mTLS), and the root of the K/V tree.
//!
//! Every key may be left out of the file and come from Consul's own
//! variables instead, as for the `consul` CLI: `CONSUL_HTTP_ADDR`,
//! `CONSUL_HTTP_SSL`, `CONSUL_HTTP_TOKEN`, `CONSUL_HTTP_TOKEN_FILE`,
//! `CONSUL_CACERT`, `CONSUL_CAPATH`, `CONSUL_CLIENT_CERT`,
//! `CONSUL_CLIENT_KEY`, `CONSUL_TLS_SERVER_NAME`, `CONSUL_HTTP_SSL_VERIFY`.
//! A key set in the file wins over its variable (docs/configuration.md).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use novaha_core::Secret;
use novaha_core::validate::{Problem, Validate};
use serde::Deserialize;

use crate::client::ConsulSettings;
use crate::tls::ConsulTls;

/// The address used when neither the file nor `CONSUL_HTTP_ADDR` names one.
pub const DEFAULT_ADDRESS: &str = "http://127.0.0.1:8500";

/// `[consul]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsulConfig {
    /// The agent's HTTP API. Empty in the file = `CONSUL_HTTP_ADDR`, else
    /// [`DEFAULT_ADDRESS`]; resolved by [`ConsulConfig::resolve`]. A bare
    /// `host:port` gets `http://`.
    pub address: String,
    /// The ACL token; else `token_file`; else `CONSUL_HTTP_TOKEN`. Never logged.
    pub token: Option<Secret>,
    /// A file holding the ACL token (first line), so it stays out of the config file.
    pub token_file: Option<PathBuf>,
    /// The root of the K/V tree (fixed default `ha_cluster`).
    pub prefix: String,
    /// How long one Consul HTTP request may take (blocking queries add their wait).
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// CA certificates (PEM) to verify the agent with; else `CONSUL_CACERT`.
    pub ca_file: Option<PathBuf>,
    /// A directory of CA certificates (PEM); else `CONSUL_CAPATH`.
    pub ca_path: Option<PathBuf>,
    /// This client's certificate (PEM) for an agent with `verify_incoming`;
    /// else `CONSUL_CLIENT_CERT`.
    pub client_cert: Option<PathBuf>,
    /// Its private key (PEM); else `CONSUL_CLIENT_KEY`.
    pub client_key: Option<PathBuf>,
    /// The name the agent's certificate carries, when the address does not
    /// (e.g. `server.dc1.consul`); else `CONSUL_TLS_SERVER_NAME`.
    pub tls_server_name: Option<String>,
    /// Accept any agent certificate (test clusters only); else
    /// `CONSUL_HTTP_SSL_VERIFY=false`.
    pub tls_skip_verify: Option<bool>,
}

impl Default for ConsulConfig {
    fn default() -> Self {
        Self {
            address: String::new(),
            token: None,
            token_file: None,
            prefix: novaha_core::kv::DEFAULT_PREFIX.to_owned(),
            request_timeout: Duration::from_secs(10),
            ca_file: None,
            ca_path: None,
            client_cert: None,
            client_key: None,
            tls_server_name: None,
            tls_skip_verify: None,
        }
    }
}

/// A boolean environment value as Consul reads it (Go's `ParseBool`).
fn env_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "t" | "true" => Some(true),
        "0" | "f" | "false" => Some(false),
        _ => None,
    }
}

impl ConsulConfig {
    /// Fills the address, token and TLS settings from the ecosystem's
    /// variables where the file leaves them out, and reads the token file.
    /// Precedence, as the `consul` CLI: for the token `token`, then
    /// `token_file`, then `CONSUL_HTTP_TOKEN_FILE`, then `CONSUL_HTTP_TOKEN`;
    /// `CONSUL_HTTP_SSL=true` makes an address without a scheme (or one
    /// from `CONSUL_HTTP_ADDR`) `https://`.
    pub fn resolve(mut self, env: &HashMap<String, String>, problems: &mut Vec<Problem>) -> Self {
        let var = |name: &str| env.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());
        let ssl = match var("CONSUL_HTTP_SSL") {
            None => false,
            Some(v) => env_bool(v).unwrap_or_else(|| {
                problems.push(Problem::new(
                    "consul",
                    format!("CONSUL_HTTP_SSL={v:?} is not a boolean (true or false)"),
                ));
                false
            }),
        };
        let from_file = !self.address.trim().is_empty();
        if !from_file {
            self.address = var("CONSUL_HTTP_ADDR")
                .map(str::to_owned)
                .unwrap_or_else(|| DEFAULT_ADDRESS.to_owned());
        }
        let address = self.address.trim().to_owned();
        self.address = match address.split_once("://") {
            None if ssl => format!("https://{address}"),
            None => format!("http://{address}"),
            Some(("http", rest)) if ssl && !from_file => format!("https://{rest}"),
            Some(_) => address,
        };
        if self.token.is_none() {
            let file = self
                .token_file
                .clone()
                .map(|f| ("consul.token_file", f))
                .or_else(|| var("CONSUL_HTTP_TOKEN_FILE").map(|f| ("consul", PathBuf::from(f))));
            if let Some((at, file)) = file {
                match std::fs::read_to_string(&file) {
                    Ok(text) => {
                        self.token = Some(Secret::new(text.lines().next().unwrap_or("").trim()));
                    }
                    Err(e) => problems.push(Problem::new(
                        at,
                        format!("cannot read token file {}: {e}", file.display()),
                    )),
                }
            } else if let Some(t) = var("CONSUL_HTTP_TOKEN") {
                self.token = Some(Secret::new(t));
            }
        }
        let path = |v: Option<&str>| v.map(PathBuf::from);
        self.ca_file = self.ca_file.or_else(|| path(var("CONSUL_CACERT")));
        self.ca_path = self.ca_path.or_else(|| path(var("CONSUL_CAPATH")));
        self.client_cert = self.client_cert.or_else(|| path(var("CONSUL_CLIENT_CERT")));
        self.client_key = self.client_key.or_else(|| path(var("CONSUL_CLIENT_KEY")));
        self.tls_server_name = self
            .tls_server_name
            .or_else(|| var("CONSUL_TLS_SERVER_NAME").map(str::to_owned));
        if self.tls_skip_verify.is_none()
            && let Some(v) = var("CONSUL_HTTP_SSL_VERIFY")
        {
            match env_bool(v) {
                Some(verify) => self.tls_skip_verify = Some(!verify),
                None => problems.push(Problem::new(
                    "consul",
                    format!("CONSUL_HTTP_SSL_VERIFY={v:?} is not a boolean (true or false)"),
                )),
            }
        }
        self
    }

    /// The client settings of this section.
    pub fn settings(&self) -> ConsulSettings {
        ConsulSettings {
            address: self.address.clone(),
            token: self.token.clone(),
            request_timeout: self.request_timeout,
            tls: self.tls(),
        }
    }

    /// The TLS settings for the Consul clients.
    pub fn tls(&self) -> ConsulTls {
        ConsulTls {
            ca_file: self.ca_file.clone(),
            ca_path: self.ca_path.clone(),
            client_cert: self.client_cert.clone(),
            client_key: self.client_key.clone(),
            server_name: self.tls_server_name.clone(),
            insecure: self.tls_skip_verify.unwrap_or(false),
        }
    }
}

impl Validate for ConsulConfig {
    /// Checks the resolved values.
    fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut push = |at: &str, message: String| problems.push(Problem::new(at, message));
        match url::Url::parse(&self.address) {
            Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {
                // The certificate files, read now: a typo is a config
                // problem, not a daemon that fails at its first call.
                // (Without the server name: resolving the address's host
                // is the daemon's job, retried; a DNS hiccup is no config
                // problem.)
                let files = ConsulTls {
                    server_name: None,
                    ..self.tls()
                };
                let needs_https = self.tls().is_set() && u.scheme() != "https";
                if needs_https {
                    push(
                        "address",
                        format!(
                            "TLS settings are set but the address {} is not https:// \
                             (use https://, or CONSUL_HTTP_SSL=true)",
                            self.address
                        ),
                    );
                } else if let Err(e) = crate::tls::http_client(&u, &files, self.request_timeout) {
                    let msg = e.to_string();
                    push(
                        "",
                        msg.trim_start_matches("invalid consul settings: ")
                            .to_owned(),
                    );
                }
            }
            Ok(u) => push(
                "address",
                format!(
                    "unsupported scheme {:?} in {:?} (http or https)",
                    u.scheme(),
                    self.address
                ),
            ),
            Err(e) => push("address", format!("not a URL: {:?}: {e}", self.address)),
        }
        let prefix = self.prefix.trim_matches('/');
        if prefix.is_empty() || prefix.contains(char::is_whitespace) {
            push(
                "prefix",
                format!(
                    "must be a non-empty key path without spaces, got {:?}",
                    self.prefix
                ),
            );
        }
        if self.request_timeout < Duration::from_millis(100) {
            push(
                "request_timeout",
                format!(
                    "must be at least 100ms, got {}",
                    humantime::format_duration(self.request_timeout)
                ),
            );
        }
        problems
    }
}

/// `[election]`: the Consul session and lock that decide which copy of the
/// daemon acts (docs/consul.md, "Election"; keys in docs/configuration.md).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ElectionConfig {
    /// Session TTL; Consul accepts 10s..24h and may take up to twice this
    /// to expire a session nobody renews.
    #[serde(with = "humantime_serde")]
    pub session_ttl: Duration,
    /// How long Consul keeps the lock unclaimable after the holder's
    /// session is invalidated (0s..60s).
    #[serde(with = "humantime_serde")]
    pub lock_delay: Duration,
    /// TTL of the daemon's own health check, passed every second; a hung or
    /// dead daemon loses its session this long after its last pass.
    #[serde(with = "humantime_serde")]
    pub check_ttl: Duration,
    /// This daemon's name in the lock value and in its check id; default
    /// the host name. Two daemons that share a Consul agent must differ.
    pub id: Option<String>,
}

impl Default for ElectionConfig {
    fn default() -> Self {
        Self {
            session_ttl: Duration::from_secs(15),
            lock_delay: Duration::from_secs(15),
            check_ttl: Duration::from_secs(3),
            id: None,
        }
    }
}

impl Validate for ElectionConfig {
    /// Checks the bounds Consul enforces and the ones failover relies on.
    fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut push = |at: &str, message: String| problems.push(Problem::new(at, message));
        let fmt = |d: Duration| humantime::format_duration(d).to_string();
        if self.session_ttl < Duration::from_secs(10)
            || self.session_ttl > Duration::from_secs(86_400)
        {
            push(
                "session_ttl",
                format!(
                    "must be between 10s and 24h (Consul's bounds), got {}",
                    fmt(self.session_ttl)
                ),
            );
        }
        if self.lock_delay > Duration::from_secs(60) {
            push(
                "lock_delay",
                format!(
                    "must be at most 60s (Consul's bound), got {}",
                    fmt(self.lock_delay)
                ),
            );
        }
        if self.check_ttl < Duration::from_secs(2) {
            push(
                "check_ttl",
                format!(
                    "must be at least 2s (it is passed every second), got {}",
                    fmt(self.check_ttl)
                ),
            );
        } else if self.check_ttl >= self.session_ttl {
            push(
                "check_ttl",
                format!(
                    "must be shorter than session_ttl ({}), got {}",
                    fmt(self.session_ttl),
                    fmt(self.check_ttl)
                ),
            );
        }
        if let Some(id) = &self.id
            && (id.trim().is_empty() || id.contains(['/', ' ']))
        {
            push(
                "id",
                format!("must be non-empty without '/' or spaces, got {id:?}"),
            );
        }
        problems
    }
}
