//! The monitor's keys of `[monitor]` (besides `interval`, `threshold` and
//! the mass-failure guard, which the daemon owns): which signals run and
//! how each reaches the nodes.

use std::collections::BTreeMap;
use std::time::Duration;

use novaha_core::validate::{Problem, Validate};
use serde::{Deserialize, Serialize};

/// One detection signal. `nova` is always on; the others only confirm it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    /// Nova's os-services state.
    Nova,
    /// The node's Consul health checks.
    Consul,
    /// A TCP connect to the node.
    Tcp,
}

fn default_signals() -> Vec<Signal> {
    vec![Signal::Nova]
}

fn default_checks() -> Vec<String> {
    vec!["serfHealth".to_owned()]
}

fn default_consul_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_port() -> u16 {
    22
}

fn default_tcp_timeout() -> Duration {
    Duration::from_secs(2)
}

fn default_tcp_concurrency() -> usize {
    32
}

/// `[monitor.nova]`: the `nova` signal's heartbeat age.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NovaSignalSettings {
    /// A node whose nova-compute heartbeat (`updated_at`) is older than this
    /// by Nova's clock (the answer's `Date`) fails the `nova` signal even
    /// while Nova still reports it `up`. Unset (the default): only Nova's
    /// own `state` counts. Must exceed Nova's `report_interval` with margin
    /// (docs/configuration.md).
    #[serde(default, with = "humantime_serde")]
    pub stale_after: Option<Duration>,
}

/// The shortest `stale_after` accepted: heartbeats and `Date` have whole
/// seconds, and no Nova reports more often than every second or two.
pub const MIN_STALE_AFTER: Duration = Duration::from_secs(5);

/// `[monitor.consul]`: the `consul` signal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsulSignalSettings {
    /// The check IDs that must ALL be critical for the node to count as
    /// failed (default `["serfHealth"]`, the agent's liveness).
    #[serde(default = "default_checks")]
    pub checks: Vec<String>,
    /// Nova host -> Consul node name, where they differ (default: same).
    #[serde(default)]
    pub node_names: BTreeMap<String, String>,
    /// How long the one health read of a cycle may take (default 5s).
    #[serde(default = "default_consul_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for ConsulSignalSettings {
    fn default() -> Self {
        Self {
            checks: default_checks(),
            node_names: BTreeMap::new(),
            timeout: default_consul_timeout(),
        }
    }
}

/// `[monitor.tcp]`: the `tcp` signal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpSignalSettings {
    /// The port to connect to (default 22, sshd).
    #[serde(default = "default_port")]
    pub port: u16,
    /// How long one probe (resolution + connect) may take (default 2s).
    #[serde(default = "default_tcp_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// At most this many probes at once (default 32).
    #[serde(default = "default_tcp_concurrency")]
    pub concurrency: usize,
    /// Nova host -> address (name or IP) to connect to, where the host name
    /// does not resolve to the right interface (default: the host name).
    #[serde(default)]
    pub addresses: BTreeMap<String, String>,
}

impl Default for TcpSignalSettings {
    fn default() -> Self {
        Self {
            port: default_port(),
            timeout: default_tcp_timeout(),
            concurrency: default_tcp_concurrency(),
            addresses: BTreeMap::new(),
        }
    }
}

/// The monitor's settings. The daemon embeds these three keys in its
/// `[monitor]` section (as fields of these types, not `flatten`:
/// `deny_unknown_fields` does not combine with it):
///
/// ```toml
/// [monitor]
/// signals = ["nova", "consul", "tcp"]   # default ["nova"]
/// [monitor.consul]
/// checks = ["serfHealth"]
/// [monitor.tcp]
/// port = 22
/// timeout = "2s"
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorSettings {
    /// The signals that run; `nova` must be one of them.
    #[serde(default = "default_signals")]
    pub signals: Vec<Signal>,
    /// The `nova` signal's settings.
    #[serde(default)]
    pub nova: NovaSignalSettings,
    /// The `consul` signal's settings (used when it is in `signals`).
    #[serde(default)]
    pub consul: ConsulSignalSettings,
    /// The `tcp` signal's settings (used when it is in `signals`).
    #[serde(default)]
    pub tcp: TcpSignalSettings,
}

impl Default for MonitorSettings {
    fn default() -> Self {
        Self {
            signals: default_signals(),
            nova: NovaSignalSettings::default(),
            consul: ConsulSignalSettings::default(),
            tcp: TcpSignalSettings::default(),
        }
    }
}

impl MonitorSettings {
    /// True when `signal` is configured.
    pub fn has(&self, signal: Signal) -> bool {
        self.signals.contains(&signal)
    }
}

impl Validate for MonitorSettings {
    /// Every problem of the settings, each at its key relative to
    /// `[monitor]` (the daemon and [`crate::Monitor::new`] put them under
    /// `monitor`).
    fn validate(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        if !self.has(Signal::Nova) {
            out.push(Problem::new("signals", "must include \"nova\""));
        }
        let mut sorted = self.signals.clone();
        sorted.sort();
        sorted.dedup();
        if sorted.len() != self.signals.len() {
            out.push(Problem::new("signals", "a signal is listed twice"));
        }
        if let Some(d) = self.nova.stale_after
            && d < MIN_STALE_AFTER
        {
            out.push(Problem::new(
                "nova.stale_after",
                format!(
                    "must be at least {}, got {} (it must exceed Nova's \
                 report_interval with margin)",
                    humantime_serde::re::humantime::format_duration(MIN_STALE_AFTER),
                    humantime_serde::re::humantime::format_duration(d)
                ),
            ));
        }
        if self.has(Signal::Consul) {
            if self.consul.checks.is_empty() {
                out.push(Problem::new(
                    "consul.checks",
                    "must name at least one check",
                ));
            }
            if self.consul.checks.iter().any(|c| c.trim().is_empty()) {
                out.push(Problem::new("consul.checks", "a check id is empty"));
            }
            if self.consul.timeout.is_zero() {
                out.push(Problem::new("consul.timeout", "must be above zero"));
            }
        }
        if self.has(Signal::Tcp) {
            if self.tcp.port == 0 {
                out.push(Problem::new("tcp.port", "must be 1..=65535"));
            }
            if self.tcp.timeout.is_zero() {
                out.push(Problem::new("tcp.timeout", "must be above zero"));
            }
            if !(1..=1024).contains(&self.tcp.concurrency) {
                out.push(Problem::new(
                    "tcp.concurrency",
                    format!("must be 1..=1024, got {}", self.tcp.concurrency),
                ));
            }
            if let Some((host, _)) = self.tcp.addresses.iter().find(|(_, a)| a.trim().is_empty()) {
                out.push(Problem::new(
                    "tcp.addresses",
                    format!("empty address for {host}"),
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_nova_only_and_valid() {
        let s: MonitorSettings = toml::from_str("").unwrap();
        assert_eq!(s, MonitorSettings::default());
        assert_eq!(s.signals, [Signal::Nova]);
        assert_eq!(s.consul.checks, ["serfHealth"]);
        assert_eq!(s.tcp.port, 22);
        assert_eq!(s.tcp.timeout, Duration::from_secs(2));
        assert_eq!(s.nova.stale_after, None, "stale_after is unset by default");
        assert!(s.validate().is_empty());
    }

    #[test]
    fn stale_after_is_a_duration_of_at_least_five_seconds() {
        let s: MonitorSettings = toml::from_str("[nova]\nstale_after = \"15s\"\n").unwrap();
        assert_eq!(s.nova.stale_after, Some(Duration::from_secs(15)));
        assert!(s.validate().is_empty());
        let s: MonitorSettings = toml::from_str("[nova]\nstale_after = \"2s\"\n").unwrap();
        let p = s.validate();
        assert!(
            p.len() == 1
                && p[0]
                    .to_string()
                    .starts_with("nova.stale_after: must be at least 5s"),
            "{p:?}"
        );
        assert!(toml::from_str::<MonitorSettings>("[nova]\nstale = \"15s\"\n").is_err());
        assert!(toml::from_str::<MonitorSettings>("[nova]\nstale_after = 15\n").is_err());
    }

    #[test]
    fn parses_every_key() {
        let s: MonitorSettings = toml::from_str(
            "signals = [\"nova\", \"consul\", \"tcp\"]\n\
             [consul]\nchecks = [\"serfHealth\", \"nova-compute\"]\ntimeout = \"3s\"\n\
             node_names = { \"compute-1\" = \"c1.consul\" }\n\
             [tcp]\nport = 2222\ntimeout = \"500ms\"\nconcurrency = 4\n\
             addresses = { \"compute-1\" = \"10.0.0.1\" }\n",
        )
        .unwrap();
        assert!(s.has(Signal::Consul) && s.has(Signal::Tcp));
        assert_eq!(s.consul.checks, ["serfHealth", "nova-compute"]);
        assert_eq!(s.consul.node_names["compute-1"], "c1.consul");
        assert_eq!(s.consul.timeout, Duration::from_secs(3));
        assert_eq!(s.tcp.port, 2222);
        assert_eq!(s.tcp.timeout, Duration::from_millis(500));
        assert_eq!(s.tcp.addresses["compute-1"], "10.0.0.1");
        assert!(s.validate().is_empty(), "{:?}", s.validate());
    }

    #[test]
    fn rejects_unknown_keys_and_reports_every_problem() {
        assert!(toml::from_str::<MonitorSettings>("signal = [\"nova\"]").is_err());
        assert!(toml::from_str::<MonitorSettings>("signals = [\"ssh\"]").is_err());
        assert!(toml::from_str::<MonitorSettings>("[tcp]\nprot = 1").is_err());
        let s: MonitorSettings = toml::from_str(
            "signals = [\"consul\", \"tcp\", \"tcp\"]\n[consul]\nchecks = []\n\
             [tcp]\nport = 0\ntimeout = \"0s\"\nconcurrency = 0\n",
        )
        .unwrap();
        let p = s.validate();
        assert_eq!(p.len(), 6, "{p:?}");
        assert!(p[0].message.contains("must include \"nova\""), "{p:?}");
    }
}
