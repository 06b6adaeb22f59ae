//! [`Monitor::observe`]: one cycle's signals for every node, combined into
//! what `novaha_core::detect::judge` takes.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt as _;
use novaha_consul::ConsulSettings;
use novaha_core::NodeName;
use novaha_core::detect::{NodeSignals, NovaService};
use novaha_core::validate::Validate as _;
use novaha_openstack::NovaClient;
use serde::Serialize;

use crate::consul::{ConsulHealth, ConsulVerdict, consul_verdict};
use crate::error::MonitorError;
use crate::nova::{heartbeats, nova_services};
use crate::settings::{MonitorSettings, Signal};
use crate::tcp::{TcpOutcome, probe};

/// Something wrong with this cycle's signals, for the runner to log and
/// count (bounded kinds: see [`Problem::kind`]). Never holds a secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "problem", rename_all = "snake_case")]
pub enum Problem {
    /// Nova (or Keystone) could not be read: no judgement this cycle.
    NovaUnreachable {
        /// The client's error.
        error: String,
    },
    /// The consul signal is configured but Consul's health checks could not
    /// be read: no judgement this cycle.
    ConsulUnreachable {
        /// The error.
        error: String,
    },
    /// Nova listed two nova-compute services for one host; the first is used.
    DuplicateService {
        /// The host.
        node: NodeName,
    },
    /// A node Nova reads down lacks configured Consul checks: the consul
    /// signal counts as healthy for it (unknown never fails a node).
    ConsulUnknown {
        /// The node.
        node: NodeName,
        /// The Consul node name looked up.
        consul_node: String,
        /// The configured checks it does not have.
        missing: Vec<String>,
    },
    /// `[monitor.nova] stale_after` is set but Nova's answer had no valid
    /// `Date` header: no heartbeat is judged stale this cycle (Nova's own
    /// `state` still counts).
    NovaClockUnknown,
    /// `[monitor.nova] stale_after` is set but a node Nova reads up has no
    /// `updated_at` that parses: it is never stale (unknown never fails a
    /// node).
    HeartbeatUnknown {
        /// The node.
        node: NodeName,
    },
    /// A node Nova reads down has an address that does not resolve: the tcp
    /// signal counts as healthy for it (unknown never fails a node).
    TcpUnresolved {
        /// The node.
        node: NodeName,
        /// The address probed.
        address: String,
        /// Why it did not resolve.
        detail: String,
    },
}

impl Problem {
    /// A bounded label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NovaUnreachable { .. } => "nova_unreachable",
            Self::ConsulUnreachable { .. } => "consul_unreachable",
            Self::DuplicateService { .. } => "duplicate_service",
            Self::ConsulUnknown { .. } => "consul_unknown",
            Self::NovaClockUnknown => "nova_clock_unknown",
            Self::HeartbeatUnknown { .. } => "heartbeat_unknown",
            Self::TcpUnresolved { .. } => "tcp_unresolved",
        }
    }
}

/// One cycle's observation.
///
/// How signals combine (core's `NodeSignals::all_failed`: a node fails a
/// cycle when Nova reads it down and no configured extra signal says
/// healthy):
/// - `nova` is `None` when Nova/Keystone could not be read, **or** when a
///   configured extra signal could not be read at all (Consul down): then
///   nothing is judged and every count is held, neither raised nor reset.
/// - A configured signal that is unknown for one node (its Consul checks
///   are missing, its address does not resolve) is reported as healthy
///   (`Some(false)`) for that node, with a [`Problem`]: unknown never makes
///   a node fail; it resets its count, which delays a detection but can
///   never cause one.
/// - With `[monitor.nova] stale_after`, a node Nova reads up whose
///   heartbeat is older than that by Nova's clock (the answer's `Date`) is
///   in [`Observation::stale`]: core's `judge_with` reads its `nova`
///   signal as failed. Without it, `stale` is always empty and nothing
///   else changes.
/// - Extra signals only matter when the nova signal fails: the tcp probe
///   runs only for enabled nodes Nova reads down (or forced down) or
///   stale, and is `None` ("not probed") for the others. The consul verdict
///   comes from one read and is filled in for every node.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Observation {
    /// What `detect::judge` takes: every nova-compute host Nova reports,
    /// with its signals; `None` = no judgement this cycle.
    pub nova: Option<BTreeMap<NodeName, NodeSignals>>,
    /// The nodes Nova reads up whose heartbeat is older than
    /// `[monitor.nova] stale_after`, with that age (always empty when it
    /// is unset). What core's `judge_with` takes as `stale`.
    pub stale: BTreeMap<NodeName, Duration>,
    /// What went wrong, for logs and metrics.
    pub problems: Vec<Problem>,
}

/// The monitor: the configured signals and their clients. Cheap to share
/// (`&self` everywhere); one [`Monitor::observe`] per cycle.
#[derive(Debug)]
pub struct Monitor {
    settings: MonitorSettings,
    nova: NovaClient,
    consul: Option<ConsulHealth>,
}

impl Monitor {
    /// Builds the monitor from `[monitor]`'s signal settings, the Nova
    /// client and, when the consul signal is configured, the Consul agent's
    /// settings (address and token, as `[consul]` resolved them). Fails on
    /// invalid settings (every problem in one message). Does no I/O.
    pub fn new(
        settings: MonitorSettings,
        nova: NovaClient,
        consul: Option<&ConsulSettings>,
    ) -> Result<Self, MonitorError> {
        let problems: Vec<String> = settings
            .validate()
            .into_iter()
            .map(|p| p.under("monitor").to_string())
            .collect();
        if !problems.is_empty() {
            return Err(MonitorError::Settings(problems.join("; ")));
        }
        let consul = if settings.has(Signal::Consul) {
            let c = consul.ok_or_else(|| {
                MonitorError::Settings(
                    "monitor.signals: \"consul\" needs the consul agent's settings".into(),
                )
            })?;
            Some(ConsulHealth::new(c, settings.consul.timeout)?)
        } else {
            None
        };
        Ok(Self {
            settings,
            nova,
            consul,
        })
    }

    /// The settings in use.
    pub fn settings(&self) -> &MonitorSettings {
        &self.settings
    }

    /// Reads every configured signal once: one Nova `os-services` call, one
    /// Consul health read (if configured), one bounded-concurrency round of
    /// TCP probes (if configured, only for nodes Nova reads down). Never
    /// fails: what could not be read is in [`Observation::problems`] and
    /// combines as documented on [`Observation`]. Read-only and cancel-safe:
    /// the runner may drop it (e.g. racing it against cancellation).
    pub async fn observe(&self) -> Observation {
        let mut problems = Vec::new();
        let listing = match self.nova.compute_services_at().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, retryable = e.is_retryable(), "nova unreachable: no judgement this cycle");
                problems.push(Problem::NovaUnreachable {
                    error: e.to_string(),
                });
                return Observation {
                    nova: None,
                    stale: BTreeMap::new(),
                    problems,
                };
            }
        };
        let stale = match (self.settings.nova.stale_after, listing.nova_time) {
            (None, _) => BTreeMap::new(),
            (Some(_), None) => {
                tracing::warn!(
                    "nova's answer has no valid Date header: heartbeat ages not judged this cycle"
                );
                problems.push(Problem::NovaClockUnknown);
                BTreeMap::new()
            }
            (Some(after), Some(nova_time)) => {
                let h = heartbeats(&listing.services, nova_time, after);
                for node in h.unknown {
                    tracing::warn!(node = %node, "nova-compute heartbeat (updated_at) missing or unreadable: never counted stale");
                    problems.push(Problem::HeartbeatUnknown { node });
                }
                for (node, age) in &h.stale {
                    tracing::debug!(node = %node, age_s = age.as_secs_f64(), "nova-compute heartbeat stale");
                }
                h.stale
            }
        };
        let (services, duplicates) = nova_services(&listing.services);
        for node in duplicates {
            tracing::warn!(node = %node, "nova lists two nova-compute services for one host");
            problems.push(Problem::DuplicateService { node });
        }

        let consul_checks = match &self.consul {
            None => None,
            Some(c) => match c.checks().await {
                Ok(checks) => Some(checks),
                Err(e) => {
                    tracing::warn!(error = %e, "consul health unreadable: no judgement this cycle");
                    problems.push(Problem::ConsulUnreachable {
                        error: e.to_string(),
                    });
                    return Observation {
                        nova: None,
                        stale: BTreeMap::new(),
                        problems,
                    };
                }
            },
        };

        let tcp = if self.settings.has(Signal::Tcp) {
            self.probe_down_nodes(&services, &stale).await
        } else {
            BTreeMap::new()
        };

        let empty = Default::default();
        let mut out = BTreeMap::new();
        for (node, nova) in services {
            let matters = can_fail(&nova, stale.contains_key(&node));
            let consul_failed = consul_checks.as_ref().map(|all| {
                let consul_node = self
                    .settings
                    .consul
                    .node_names
                    .get(node.as_str())
                    .cloned()
                    .unwrap_or_else(|| node.to_string());
                let checks = all.get(&consul_node).unwrap_or(&empty);
                match consul_verdict(checks, &self.settings.consul.checks) {
                    ConsulVerdict::Failed => true,
                    ConsulVerdict::Healthy => false,
                    ConsulVerdict::Unknown { missing } => {
                        if matters {
                            tracing::warn!(node = %node, consul_node = %consul_node, missing = ?missing, "consul checks missing: counted healthy");
                            problems.push(Problem::ConsulUnknown {
                                node: node.clone(),
                                consul_node,
                                missing,
                            });
                        }
                        false
                    }
                }
            });
            let tcp_failed = match tcp.get(&node) {
                None => None,
                Some(TcpOutcome::Open) => Some(false),
                Some(TcpOutcome::Closed { detail }) => {
                    tracing::debug!(node = %node, detail = %detail, "tcp probe failed");
                    Some(true)
                }
                Some(TcpOutcome::Unresolved { detail }) => {
                    let address = self.address_of(&node).to_owned();
                    tracing::warn!(node = %node, address = %address, detail = %detail, "tcp address unresolved: counted healthy");
                    problems.push(Problem::TcpUnresolved {
                        node: node.clone(),
                        address,
                        detail: detail.clone(),
                    });
                    Some(false)
                }
            };
            out.insert(
                node,
                NodeSignals {
                    nova,
                    consul_failed,
                    tcp_failed,
                },
            );
        }
        Observation {
            nova: Some(out),
            stale,
            problems,
        }
    }

    fn address_of<'a>(&'a self, node: &'a NodeName) -> &'a str {
        self.settings
            .tcp
            .addresses
            .get(node.as_str())
            .map_or(node.as_str(), String::as_str)
    }

    /// Probes the nodes whose cycle can fail, at most `concurrency` at once.
    async fn probe_down_nodes(
        &self,
        services: &BTreeMap<NodeName, NovaService>,
        stale: &BTreeMap<NodeName, Duration>,
    ) -> BTreeMap<NodeName, TcpOutcome> {
        let tcp = &self.settings.tcp;
        let targets: Vec<(NodeName, String)> = services
            .iter()
            .filter(|(n, s)| can_fail(s, stale.contains_key(*n)))
            .map(|(n, _)| (n.clone(), self.address_of(n).to_owned()))
            .collect();
        futures::stream::iter(targets)
            .map(|(node, address)| async move {
                let outcome = probe(&address, tcp.port, tcp.timeout).await;
                (node, outcome)
            })
            .buffer_unordered(tcp.concurrency.max(1))
            .collect()
            .await
    }
}

/// True when the node's cycle can fail: the nova signal fails (Nova reads
/// it down, or its heartbeat is stale) and it is not skipped for being
/// disabled.
fn can_fail(s: &NovaService, stale: bool) -> bool {
    s.enabled && (!s.up || s.forced_down || stale)
}
