//! `[election]`: the Consul session and lock that decide which copy of the
//! daemon acts (docs/consul.md, "Election"; keys in docs/configuration.md,
//! "`[election]`").

use std::time::Duration;

use novaha_core::validate::{Problem, Validate};
use serde::Deserialize;

use super::Problems;

/// `[election]`.
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
        let mut problems = Problems::default();
        let fmt = |d: Duration| humantime::format_duration(d).to_string();
        if self.session_ttl < Duration::from_secs(10)
            || self.session_ttl > Duration::from_secs(86_400)
        {
            problems.push(
                "session_ttl",
                format!(
                    "must be between 10s and 24h (Consul's bounds), got {}",
                    fmt(self.session_ttl)
                ),
            );
        }
        if self.lock_delay > Duration::from_secs(60) {
            problems.push(
                "lock_delay",
                format!(
                    "must be at most 60s (Consul's bound), got {}",
                    fmt(self.lock_delay)
                ),
            );
        }
        if self.check_ttl < Duration::from_secs(2) {
            problems.push(
                "check_ttl",
                format!(
                    "must be at least 2s (it is passed every second), got {}",
                    fmt(self.check_ttl)
                ),
            );
        } else if self.check_ttl >= self.session_ttl {
            problems.push(
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
            problems.push(
                "id",
                format!("must be non-empty without '/' or spaces, got {id:?}"),
            );
        }
        problems.0
    }
}
