//! `[consul]`: where the Consul agent is, how to authenticate, and the root
//! of the K/V tree.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use novaha_core::Secret;
use serde::Deserialize;

use super::Problems;

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
}

impl Default for ConsulConfig {
    fn default() -> Self {
        Self {
            address: String::new(),
            token: None,
            token_file: None,
            prefix: novaha_core::kv::DEFAULT_PREFIX.to_owned(),
            request_timeout: Duration::from_secs(10),
        }
    }
}

impl ConsulConfig {
    /// Fills the address and token from the ecosystem's variables when the
    /// file leaves them out, and reads `token_file`.
    pub fn resolve(mut self, env: &HashMap<String, String>, problems: &mut Problems) -> Self {
        if self.address.trim().is_empty() {
            self.address = env
                .get("CONSUL_HTTP_ADDR")
                .filter(|a| !a.trim().is_empty())
                .cloned()
                .unwrap_or_else(|| DEFAULT_ADDRESS.to_owned());
        }
        let address = self.address.trim().to_owned();
        self.address = if address.contains("://") {
            address
        } else {
            format!("http://{address}")
        };
        if self.token.is_none() {
            if let Some(file) = &self.token_file {
                match std::fs::read_to_string(file) {
                    Ok(text) => {
                        self.token = Some(Secret::new(text.lines().next().unwrap_or("").trim()));
                    }
                    Err(e) => problems.push(
                        "consul.token_file",
                        format!("cannot read token file {}: {e}", file.display()),
                    ),
                }
            } else if let Some(t) = env.get("CONSUL_HTTP_TOKEN").filter(|t| !t.is_empty()) {
                self.token = Some(Secret::new(t.clone()));
            }
        }
        self
    }

    /// Checks the resolved values.
    pub fn validate(&self, problems: &mut Problems) {
        match url::Url::parse(&self.address) {
            Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
            Ok(u) => problems.push(
                "consul.address",
                format!(
                    "unsupported scheme {:?} in {:?} (http or https)",
                    u.scheme(),
                    self.address
                ),
            ),
            Err(e) => problems.push(
                "consul.address",
                format!("not a URL: {:?}: {e}", self.address),
            ),
        }
        let prefix = self.prefix.trim_matches('/');
        if prefix.is_empty() || prefix.contains(char::is_whitespace) {
            problems.push(
                "consul.prefix",
                format!(
                    "must be a non-empty key path without spaces, got {:?}",
                    self.prefix
                ),
            );
        }
        if self.request_timeout < Duration::from_millis(100) {
            problems.push(
                "consul.request_timeout",
                format!(
                    "must be at least 100ms, got {}",
                    humantime::format_duration(self.request_timeout)
                ),
            );
        }
    }
}
