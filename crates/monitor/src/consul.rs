//! The `consul` signal: every node's health checks in one read of
//! `/v1/health/state/any`, folded per node as os-nova-ha-monitor's
//! health_aggregate did: the node counts as failed only when ALL the
//! configured checks are critical.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use novaha_consul::ConsulSettings;
use novaha_consul::client::BODY_LIMIT;
use novaha_core::http::CappedBody;
use novaha_core::text::{error_chain, excerpt};
use reqwest::header::{HeaderMap, HeaderValue};
use serde::{Deserialize, Serialize};

use crate::error::MonitorError;

/// How much of Consul's error body an error keeps.
const BODY_EXCERPT: usize = 200;

/// One health check as Consul lists it.
#[derive(Deserialize)]
struct CheckRow {
    #[serde(rename = "Node")]
    node: String,
    #[serde(rename = "CheckID")]
    check_id: String,
    #[serde(rename = "Status")]
    status: String,
}

/// The consul signal's answer for one node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum ConsulVerdict {
    /// Every configured check is present and critical.
    Failed,
    /// At least one configured check is passing (or warning).
    Healthy,
    /// Some configured checks are not registered for the node (and every
    /// present one is critical): nothing can be said.
    Unknown {
        /// The configured check ids the node does not have.
        missing: Vec<String>,
    },
}

/// Folds one node's checks (`check id -> status`) against the configured
/// ids. Pure. A `warning` counts as alive: only `critical` is failed.
pub fn consul_verdict(
    node_checks: &HashMap<String, String>,
    configured: &[String],
) -> ConsulVerdict {
    let mut missing = Vec::new();
    for id in configured {
        match node_checks.get(id) {
            None => missing.push(id.clone()),
            Some(status) if !status.eq_ignore_ascii_case("critical") => {
                return ConsulVerdict::Healthy;
            }
            Some(_) => {}
        }
    }
    if missing.is_empty() && !configured.is_empty() {
        ConsulVerdict::Failed
    } else {
        ConsulVerdict::Unknown { missing }
    }
}

/// A reader of Consul's health checks (a plain HTTP GET with the ACL token
/// as a header). Cheap to clone.
#[derive(Clone)]
pub struct ConsulHealth {
    http: reqwest::Client,
    url: url::Url,
    headers: HeaderMap,
    timeout: Duration,
}

impl std::fmt::Debug for ConsulHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("ConsulHealth")
            .field("url", &self.url.as_str())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl ConsulHealth {
    /// A reader for the agent of `settings`, each read bounded by
    /// `timeout`. Does no I/O.
    pub fn new(settings: &ConsulSettings, timeout: Duration) -> Result<Self, MonitorError> {
        let address = settings.address.trim();
        let with_scheme = if address.contains("://") {
            address.to_owned()
        } else {
            format!("http://{address}")
        };
        let base = url::Url::parse(&with_scheme)
            .map_err(|e| MonitorError::Settings(format!("consul address {address:?}: {e}")))?;
        if !matches!(base.scheme(), "http" | "https") || base.host_str().is_none() {
            return Err(MonitorError::Settings(format!(
                "consul address {address:?}: must be http(s)://host[:port]"
            )));
        }
        let mut headers = HeaderMap::new();
        if let Some(t) = settings.token.as_ref().filter(|t| !t.is_empty()) {
            let mut v = HeaderValue::from_str(t.expose()).map_err(|_| {
                MonitorError::Settings(
                    "consul token contains characters not allowed in a header".into(),
                )
            })?;
            v.set_sensitive(true);
            headers.insert("X-Consul-Token", v);
        }
        // The same client (TLS, mTLS, server name) as every other call to
        // Consul.
        let (http, mut url) = novaha_consul::http_client(&base, &settings.tls, timeout)
            .map_err(|e| MonitorError::Settings(e.to_string()))?;
        url.set_path("/v1/health/state/any");
        Ok(Self {
            http,
            url,
            headers,
            timeout,
        })
    }

    /// Every check of every node: `node -> check id -> status`, in one
    /// request. Read-only, cancel-safe, never retried here.
    pub async fn checks(&self) -> Result<BTreeMap<String, HashMap<String, String>>, MonitorError> {
        let what = self.url.path().to_owned();
        let err = |detail: String, retryable: bool| MonitorError::ConsulHealth {
            what: what.clone(),
            detail,
            retryable,
        };
        let req = self
            .http
            .get(self.url.clone())
            .headers(self.headers.clone())
            .timeout(self.timeout);
        let mut resp = req.send().await.map_err(|e| {
            let detail = if e.is_timeout() {
                format!("no answer within {:?}", self.timeout)
            } else {
                format!("request failed: {}", error_chain(&e))
            };
            err(detail, true)
        })?;
        let status = resp.status();
        let mut body = CappedBody::for_answer(status.is_success(), BODY_LIMIT);
        let read_err =
            |e: reqwest::Error| err(format!("reading the answer: {}", error_chain(&e)), true);
        while let Some(chunk) = resp.chunk().await.map_err(read_err)?
            && body.push(&chunk)
        {}
        let (body, complete) = body.finish();
        if status.is_success() && !complete {
            // The same read would bring the same answer: not retryable.
            return Err(err(
                format!("answer larger than {BODY_LIMIT} bytes, not read further"),
                false,
            ));
        }
        if !status.is_success() {
            let text = excerpt(&String::from_utf8_lossy(&body), BODY_EXCERPT, &[]);
            let retryable = status.is_server_error() || status.as_u16() == 429;
            return Err(err(format!("HTTP {}: {text}", status.as_u16()), retryable));
        }
        let rows: Vec<CheckRow> = serde_json::from_slice(&body)
            .map_err(|e| err(format!("unexpected answer: {e}"), false))?;
        let mut out: BTreeMap<String, HashMap<String, String>> = BTreeMap::new();
        for r in rows {
            out.entry(r.node).or_default().insert(r.check_id, r.status);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checks(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn all_configured_checks_must_be_critical() {
        let c = checks(&[
            ("serfHealth", "critical"),
            ("svc", "critical"),
            ("other", "passing"),
        ]);
        assert_eq!(
            consul_verdict(&c, &ids(&["serfHealth", "svc"])),
            ConsulVerdict::Failed
        );
        let c = checks(&[("serfHealth", "critical"), ("svc", "passing")]);
        assert_eq!(
            consul_verdict(&c, &ids(&["serfHealth", "svc"])),
            ConsulVerdict::Healthy
        );
        let c = checks(&[("serfHealth", "critical"), ("svc", "warning")]);
        assert_eq!(
            consul_verdict(&c, &ids(&["serfHealth", "svc"])),
            ConsulVerdict::Healthy
        );
    }

    #[test]
    fn a_missing_check_is_unknown_unless_another_passes() {
        let c = checks(&[("serfHealth", "critical")]);
        assert_eq!(
            consul_verdict(&c, &ids(&["serfHealth", "svc"])),
            ConsulVerdict::Unknown {
                missing: ids(&["svc"])
            }
        );
        let c = checks(&[("serfHealth", "passing")]);
        assert_eq!(
            consul_verdict(&c, &ids(&["svc", "serfHealth"])),
            ConsulVerdict::Healthy
        );
        assert!(matches!(
            consul_verdict(&HashMap::new(), &ids(&["serfHealth"])),
            ConsulVerdict::Unknown { .. }
        ));
        assert!(matches!(
            consul_verdict(&c, &[]),
            ConsulVerdict::Unknown { .. }
        ));
    }

    #[test]
    fn bad_addresses_are_settings_errors_and_debug_hides_the_token() {
        let s = |a: &str| ConsulSettings {
            address: a.into(),
            token: Some(novaha_core::Secret::new("tok-Secr3t")),
            request_timeout: Duration::from_secs(1),
            tls: Default::default(),
        };
        assert!(ConsulHealth::new(&s("ftp://x"), Duration::from_secs(1)).is_err());
        assert!(ConsulHealth::new(&s("http://"), Duration::from_secs(1)).is_err());
        let h = ConsulHealth::new(&s("127.0.0.1:8500"), Duration::from_secs(1)).unwrap();
        let dbg = format!("{h:?}");
        assert!(
            dbg.contains("http://127.0.0.1:8500/v1/health/state/any"),
            "{dbg}"
        );
        assert!(!dbg.contains("tok-Secr3t"), "{dbg}");
    }
}
