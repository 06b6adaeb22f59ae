//! The `consul` signal: every node's health checks in one read of
//! `/v1/health/state/any`, folded per node as os-nova-ha-monitor's
//! health_aggregate did: the node counts as failed only when ALL the
//! configured checks are critical.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use novaha_consul::{Consul, ConsulSettings};
use serde::Serialize;

use crate::error::MonitorError;

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

/// A reader of Consul's health checks, through the same Consul client as
/// every other call novaha makes. Cheap to clone.
#[derive(Clone)]
pub struct ConsulHealth {
    consul: Consul,
}

impl std::fmt::Debug for ConsulHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("ConsulHealth")
            .field(
                "url",
                &format!(
                    "{}/v1/health/state/any",
                    self.consul.address().trim_end_matches('/')
                ),
            )
            .field("timeout", &self.consul.request_timeout())
            .finish_non_exhaustive()
    }
}

impl ConsulHealth {
    /// A reader for the agent of `settings`, each read bounded by
    /// `timeout`. Does no I/O.
    pub fn new(settings: &ConsulSettings, timeout: Duration) -> Result<Self, MonitorError> {
        let settings = ConsulSettings {
            request_timeout: timeout,
            ..settings.clone()
        };
        let consul = Consul::new(&settings).map_err(|e| MonitorError::Settings(e.to_string()))?;
        Ok(Self { consul })
    }

    /// Every check of every node: `node -> check id -> status`, in one
    /// request. Read-only, cancel-safe, never retried here.
    pub async fn checks(&self) -> Result<BTreeMap<String, HashMap<String, String>>, MonitorError> {
        self.consul
            .health_checks()
            .await
            .map_err(MonitorError::ConsulHealth)
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
