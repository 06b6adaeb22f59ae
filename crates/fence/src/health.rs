//! Fence-path health: read (never change) every compute node's power with
//! its own driver and credentials, so that a wrong BMC password or a dead
//! BMC is found on a quiet afternoon, not during the outage. The daemon's
//! leader runs a round every `[fence] health_interval`: [`plan_round`] picks
//! the targets from the K/V tree, [`check_power`] reads them,
//! [`scrub_passwords`] and [`FenceHealthDoc::from_reports`] turn the
//! readings into the report it publishes at `<prefix>/novaha/fence_health`,
//! and [`transitions`] names the nodes to log. `novaha status` reads that
//! report back ([`read`], [`status_json`], [`status_text`]).
//!
//! Everything here but [`check_power`] is pure: no clock, no K/V, no log;
//! the daemon's worker owns the schedule, the lease-guarded write and the
//! gauges. No secret may reach a report: the drivers sanitise what they
//! return and [`scrub_passwords`] masks each node's password again.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt};
use novaha_core::drivers::fence::FenceTarget;
use novaha_core::kv::{ClusterState, InvalidValue, Schema, Snapshot};
use novaha_core::text::{cut, scrub};
use novaha_core::{NodeName, PowerState};
use serde::{Deserialize, Serialize};

use crate::registry::{FenceRegistry, target_of};

/// The name of the report's key below the prefix's `novaha/` folder
/// (`Schema::internal(FENCE_HEALTH)`).
pub const FENCE_HEALTH: &str = "fence_health";

/// The version of [`FenceHealthDoc`]'s JSON shape.
pub const DOC_VERSION: u32 = 1;

/// How long an error text may be in the published report (the drivers
/// already cut peer answers to 300 characters; this bounds the rest).
pub const MAX_ERROR_CHARS: usize = 400;

/// One node's power reading.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PowerReport {
    /// The node.
    pub node: NodeName,
    /// The driver used (or that would have been used), e.g. `"ipmi"`.
    pub driver: String,
    /// The power read, or the error (sanitised: never a secret).
    pub result: Result<PowerState, String>,
    /// When the read finished.
    pub checked_at: DateTime<Utc>,
}

impl PowerReport {
    /// True when the fence path works: the power could be read (as on or
    /// off). An unknown state counts as not working.
    pub fn is_healthy(&self) -> bool {
        matches!(self.result, Ok(PowerState::On | PowerState::Off))
    }
}

/// Reads the power of every target, at most `concurrency` at a time, and
/// returns one report per target in the targets' order. Read-only: it calls
/// only [`novaha_core::drivers::Fencer::power_state`]. Cancel-safe. Each
/// reading is logged at DEBUG only: the caller owns the policy of what to
/// tell the operator (the daemon logs one WARN per unhealthy node per
/// round, with its scrubbed error).
///
/// The future is `Send`, so a task that owns the registry and the targets
/// can be spawned on it: each read is an owned future (its own registry
/// handle and target), never a closure's future borrowing the closure's
/// argument, which trips a known limit of rustc's higher-ranked `Send`
/// inference (the error reads "implementation of `FnOnce` is not general
/// enough").
pub async fn check_power(
    registry: &FenceRegistry,
    targets: &[FenceTarget],
    concurrency: usize,
) -> Vec<PowerReport> {
    let mut reports: Vec<(usize, PowerReport)> = stream::iter(targets.iter().cloned().enumerate())
        .map(|(i, target)| {
            let registry = registry.clone();
            async move { (i, read_power(registry, target).await) }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    reports.sort_by_key(|(i, _)| *i);
    reports.into_iter().map(|(_, r)| r).collect()
}

/// Reads one node's power with its own driver. Owned arguments so that the
/// future is `Send + 'static` (see [`check_power`]).
async fn read_power(registry: FenceRegistry, target: FenceTarget) -> PowerReport {
    let (driver, result) = match registry.fencer_for(&target) {
        Err(e) => (
            registry
                .driver_of(&target.node, &target.bmc)
                .map_or_else(|_| "unknown".to_owned(), |d| d.to_string()),
            Err(e.to_string()),
        ),
        Ok(fencer) => (
            fencer.driver().to_owned(),
            fencer.power_state(&target).await.map_err(|e| e.to_string()),
        ),
    };
    match &result {
        Ok(PowerState::Unknown) | Err(_) => tracing::debug!(
            node = %target.node,
            driver = %driver,
            result = ?result,
            "fence path unhealthy: power could not be read"
        ),
        Ok(power) => {
            tracing::debug!(node = %target.node, driver = %driver, power = %power, "fence path healthy")
        }
    }
    PowerReport {
        node: target.node,
        driver,
        result,
        checked_at: Utc::now(),
    }
}

/// One node's fence path, as last checked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeHealth {
    /// The driver used (or that would have been), e.g. `"ipmi"`.
    pub driver: String,
    /// True when the power could be read as on or off.
    pub healthy: bool,
    /// The power read, when one was read (`unknown` is unhealthy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power: Option<PowerState>,
    /// Why it is unhealthy (sanitised: never a secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When this node's read finished.
    pub checked_at: DateTime<Utc>,
}

/// The published report: `<prefix>/novaha/fence_health`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FenceHealthDoc {
    /// [`DOC_VERSION`].
    pub version: u32,
    /// The epoch of the leader that ran the check.
    pub epoch: String,
    /// When the round finished.
    pub checked_at: DateTime<Utc>,
    /// `[fence] health_interval` in seconds (how stale the report may get
    /// before the next round replaces it).
    pub interval_seconds: u64,
    /// How many nodes read healthy.
    pub healthy: usize,
    /// How many nodes did not.
    pub unhealthy: usize,
    /// Every compute node checked, by name.
    pub nodes: BTreeMap<String, NodeHealth>,
}

impl FenceHealthDoc {
    /// Builds the report of one round from its power reports.
    pub fn from_reports(
        epoch: &str,
        interval: Duration,
        checked_at: DateTime<Utc>,
        reports: &[PowerReport],
    ) -> Self {
        let nodes: BTreeMap<String, NodeHealth> = reports
            .iter()
            .map(|r| (r.node.to_string(), node_health(r)))
            .collect();
        let healthy = nodes.values().filter(|n| n.healthy).count();
        Self {
            version: DOC_VERSION,
            epoch: epoch.to_owned(),
            checked_at,
            interval_seconds: interval.as_secs(),
            healthy,
            unhealthy: nodes.len() - healthy,
            nodes,
        }
    }

    /// Whether each node was healthy, by name.
    pub fn up(&self) -> BTreeMap<String, bool> {
        self.nodes
            .iter()
            .map(|(n, h)| (n.clone(), h.healthy))
            .collect()
    }
}

fn node_health(r: &PowerReport) -> NodeHealth {
    let (power, error) = match &r.result {
        Ok(PowerState::Unknown) => (
            Some(PowerState::Unknown),
            Some("power state unknown: the BMC answered but not as on or off".to_owned()),
        ),
        Ok(p) => (Some(*p), None),
        Err(e) => (None, Some(cut(e, MAX_ERROR_CHARS))),
    };
    NodeHealth {
        driver: r.driver.clone(),
        healthy: r.is_healthy(),
        power,
        error,
        checked_at: r.checked_at,
    }
}

/// Masks each node's BMC password (from `state`) in its report's error: a
/// second line of defence, the drivers already sanitise what they return.
pub fn scrub_passwords(reports: &mut [PowerReport], state: &ClusterState) {
    for r in reports {
        if let (Err(e), Some(cn)) = (&r.result, state.compute_nodes.get(&r.node)) {
            r.result = Err(scrub(e, &[cn.bmc.password.expose()]));
        }
    }
}

/// What one round checks, from the parsed tree: the targets to read, and
/// a ready-made unhealthy report for every node whose `config/bmc/*`
/// values do not parse (such a node could not be fenced either; nothing is
/// sent to its BMC).
pub fn plan_round(
    schema: &Schema,
    state: &ClusterState,
    registry: &FenceRegistry,
    now: DateTime<Utc>,
) -> (Vec<FenceTarget>, Vec<PowerReport>) {
    let mut targets = Vec::new();
    let mut refused = Vec::new();
    for cn in state.compute_nodes.values() {
        let bmc_root = format!("{}/config/bmc/", schema.compute_node(&cn.name));
        let bad: Vec<&InvalidValue> = cn
            .invalid
            .iter()
            .filter(|b| b.key.starts_with(&bmc_root))
            .collect();
        if bad.is_empty() {
            targets.push(target_of(cn));
            continue;
        }
        let driver = registry
            .driver_of(&cn.name, &cn.bmc)
            .map_or_else(|_| "unknown".to_owned(), |d| d.to_string());
        let keys: Vec<&str> = bad.iter().map(|b| b.key.as_str()).collect();
        refused.push(PowerReport {
            node: cn.name.clone(),
            driver,
            result: Err(format!(
                "invalid value at {}: fix it before this node can be fenced",
                keys.join(", ")
            )),
            checked_at: now,
        });
    }
    (targets, refused)
}

/// The nodes whose health changed since `before` (by name: true = up):
/// (newly unhealthy, healthy again). A node seen for the first time counts
/// as changed only when it is unhealthy.
pub fn transitions(
    before: &BTreeMap<String, bool>,
    now: &BTreeMap<String, bool>,
) -> (Vec<String>, Vec<String>) {
    let mut down = Vec::new();
    let mut up = Vec::new();
    for (node, &healthy) in now {
        match (before.get(node).copied(), healthy) {
            (Some(true) | None, false) => down.push(node.clone()),
            (Some(false), true) => up.push(node.clone()),
            _ => {}
        }
    }
    (down, up)
}

/// Reads the published report from a snapshot: `Ok(None)` when no leader
/// has published one yet, `Err` (with the key and an excerpt) when it does
/// not parse.
pub fn read(schema: &Schema, snap: &Snapshot) -> Result<Option<FenceHealthDoc>, InvalidValue> {
    let key = schema.internal(FENCE_HEALTH);
    let Some(raw) = snap.raw(&key) else {
        return Ok(None);
    };
    serde_json::from_slice::<FenceHealthDoc>(raw)
        .map(Some)
        .map_err(|e| InvalidValue {
            key,
            raw: String::from_utf8_lossy(raw).chars().take(80).collect(),
            reason: format!("not a fence health report: {e}"),
        })
}

/// The `fence_health` part of `novaha status --json`: the report as
/// published, `null` when there is none yet (status then leaves the key
/// out), or `{"invalid": {key, raw, reason}}` when it does not parse.
pub fn status_json(schema: &Schema, snap: &Snapshot) -> serde_json::Value {
    match read(schema, snap) {
        Ok(Some(doc)) => serde_json::to_value(doc).unwrap_or(serde_json::Value::Null),
        Ok(None) => serde_json::Value::Null,
        Err(bad) => serde_json::json!({
            "invalid": { "key": bad.key, "raw": bad.raw, "reason": bad.reason }
        }),
    }
}

/// The lines `novaha status` prints for the report (empty when there is
/// none): a summary, then one line per unhealthy node with its error.
pub fn status_text(doc: &serde_json::Value) -> String {
    let mut out = String::new();
    if doc.is_null() {
        return out;
    }
    if let Some(bad) = doc.get("invalid") {
        out.push_str(&format!(
            "fence health: INVALID({}={:?}): {}\n",
            bad["key"].as_str().unwrap_or("?"),
            bad["raw"].as_str().unwrap_or(""),
            bad["reason"].as_str().unwrap_or("")
        ));
        return out;
    }
    out.push_str(&format!(
        "fence health: {} healthy, {} unhealthy (checked {})\n",
        doc["healthy"],
        doc["unhealthy"],
        doc["checked_at"].as_str().unwrap_or("?")
    ));
    if let Some(nodes) = doc["nodes"].as_object() {
        for (name, n) in nodes {
            if n["healthy"].as_bool() != Some(true) {
                out.push_str(&format!(
                    "  {name}: fence path UNHEALTHY ({}): {}\n",
                    n["driver"].as_str().unwrap_or("?"),
                    n["error"].as_str().unwrap_or("?")
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{DriverName, FenceSettings};
    use novaha_core::kv::{BmcConfig, KvEntry};

    fn target(node: &str, driver: Option<&str>) -> FenceTarget {
        FenceTarget {
            node: NodeName::from(node),
            bmc: BmcConfig {
                driver: driver.map(str::to_owned),
                ..BmcConfig::default()
            },
        }
    }

    /// The daemon spawns a round that owns its registry and targets and
    /// awaits `check_power` on them: that future must be `Send + 'static`.
    #[tokio::test]
    async fn check_power_runs_in_a_spawned_task_and_keeps_the_order() {
        let registry = FenceRegistry::new(&FenceSettings {
            driver: DriverName::Noop,
            allow_noop: true,
            ..FenceSettings::default()
        })
        .expect("noop registry");
        let targets = vec![
            target("n1", None),
            target("n2", Some("ipmi")),
            target("n3", Some("bogus")),
            target("n4", None),
        ];
        let reports = tokio::spawn(async move { check_power(&registry, &targets, 2).await })
            .await
            .expect("the spawned round ends");
        let got: Vec<(&str, &str, bool)> = reports
            .iter()
            .map(|r| (r.node.as_str(), r.driver.as_str(), r.is_healthy()))
            .collect();
        assert_eq!(
            got,
            [
                ("n1", "noop", true),
                ("n2", "ipmi", false),
                ("n3", "unknown", false),
                ("n4", "noop", true),
            ]
        );
        assert_eq!(reports[0].result, Ok(PowerState::Off));
        let err = reports[1].result.as_ref().expect_err("no BMC address");
        assert!(err.contains("n2"), "{err}");
    }

    fn entry(v: &str, index: u64) -> KvEntry {
        KvEntry {
            value: Some(v.as_bytes().to_vec()),
            modify_index: index,
        }
    }

    fn snap(pairs: &[(&str, &str)]) -> Snapshot {
        Snapshot {
            index: 9,
            entries: pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), entry(v, 5)))
                .collect(),
        }
    }

    fn nodes_of(reports: &[PowerReport]) -> Vec<NodeName> {
        reports.iter().map(|r| r.node.clone()).collect()
    }

    fn report(node: &str, result: Result<PowerState, &str>) -> PowerReport {
        PowerReport {
            node: NodeName::from(node),
            driver: "ipmi".into(),
            result: result.map_err(str::to_owned),
            checked_at: DateTime::<Utc>::UNIX_EPOCH,
        }
    }

    #[test]
    fn the_report_counts_and_explains_each_node() {
        let doc = FenceHealthDoc::from_reports(
            "s:1",
            Duration::from_secs(300),
            DateTime::<Utc>::UNIX_EPOCH,
            &[
                report("c1", Ok(PowerState::On)),
                report("c2", Err("ipmi power status of c2: authentication failed")),
                report("c3", Ok(PowerState::Unknown)),
                report("c4", Ok(PowerState::Off)),
            ],
        );
        assert_eq!((doc.healthy, doc.unhealthy), (2, 2));
        assert_eq!(doc.interval_seconds, 300);
        assert!(doc.nodes["c1"].healthy && doc.nodes["c1"].error.is_none());
        assert_eq!(doc.nodes["c4"].power, Some(PowerState::Off));
        assert!(!doc.nodes["c2"].healthy);
        assert!(
            doc.nodes["c2"]
                .error
                .as_deref()
                .unwrap()
                .contains("authentication")
        );
        assert!(
            doc.nodes["c3"]
                .error
                .as_deref()
                .unwrap()
                .contains("unknown")
        );
        // It round-trips through the K/V tree and status reads it back.
        let raw = serde_json::to_string(&doc).unwrap();
        let s = Schema::new("p");
        let sn = snap(&[("p/novaha/fence_health", &raw)]);
        assert_eq!(read(&s, &sn).unwrap(), Some(doc));
        let v = status_json(&s, &sn);
        assert_eq!(v["nodes"]["c2"]["healthy"], false);
        let text = status_text(&v);
        assert!(text.contains("2 healthy, 2 unhealthy"), "{text}");
        assert!(text.contains("c2: fence path UNHEALTHY (ipmi)"), "{text}");
        assert!(!text.contains("c1:"), "{text}");
    }

    #[test]
    fn a_missing_or_unreadable_report_is_shown_as_such() {
        let s = Schema::new("p");
        assert_eq!(read(&s, &snap(&[])).unwrap(), None);
        assert!(status_json(&s, &snap(&[])).is_null());
        assert_eq!(status_text(&serde_json::Value::Null), "");
        let bad = snap(&[("p/novaha/fence_health", "{not json")]);
        let err = read(&s, &bad).unwrap_err();
        assert_eq!(err.key, "p/novaha/fence_health");
        let v = status_json(&s, &bad);
        assert_eq!(v["invalid"]["key"], "p/novaha/fence_health");
        assert!(status_text(&v).contains("INVALID"));
    }

    #[test]
    fn long_errors_are_cut_and_passwords_scrubbed() {
        let long = "x".repeat(1000);
        let doc = FenceHealthDoc::from_reports(
            "e",
            Duration::from_secs(1),
            Utc::now(),
            &[report("c1", Err(&long))],
        );
        assert!(doc.nodes["c1"].error.as_ref().unwrap().chars().count() <= MAX_ERROR_CHARS + 3);
        assert_eq!(
            scrub("bad pw hunter2 here", &["hunter2"]),
            "bad pw *** here"
        );
        assert_eq!(scrub("nothing", &[""]), "nothing");
        // Each node's own password, from the tree, is masked in its report.
        let state = ClusterState::parse(
            &Schema::new("p"),
            &snap(&[
                ("p/compute_nodes/c1/config/bmc/password", "hunter2"),
                ("p/compute_nodes/c2/config/bmc/password", "s3cret"),
            ]),
        );
        let mut reports = vec![
            report("c1", Err("auth as admin:hunter2 failed")),
            report("c2", Err("hunter2 is c1's, not c2's")),
            report("c3", Err("not in the tree: hunter2")),
        ];
        scrub_passwords(&mut reports, &state);
        let errors: Vec<&str> = reports
            .iter()
            .map(|r| r.result.as_ref().unwrap_err().as_str())
            .collect();
        assert_eq!(
            errors,
            [
                "auth as admin:*** failed",
                "hunter2 is c1's, not c2's",
                "not in the tree: hunter2"
            ]
        );
    }

    #[test]
    fn transitions_log_changes_only() {
        let m = |pairs: &[(&str, bool)]| -> BTreeMap<String, bool> {
            pairs.iter().map(|(n, u)| ((*n).to_owned(), *u)).collect()
        };
        let (down, up) = transitions(&m(&[]), &m(&[("a", true), ("b", false)]));
        assert_eq!((down, up), (vec!["b".to_owned()], vec![]));
        let (down, up) = transitions(
            &m(&[("a", true), ("b", false), ("c", false)]),
            &m(&[("a", false), ("b", false), ("c", true)]),
        );
        assert_eq!((down, up), (vec!["a".to_owned()], vec!["c".to_owned()]));
    }

    #[test]
    fn nodes_with_invalid_bmc_values_are_not_read() {
        let s = Schema::new("p");
        let sn = snap(&[
            ("p/compute_nodes/c1/status/failed", "False"),
            ("p/compute_nodes/c2/status/failed", "False"),
            ("p/compute_nodes/c2/config/bmc/port", "not-a-port"),
            ("p/compute_nodes/c3/status/failed", "maybe"),
        ]);
        let state = ClusterState::parse(&s, &sn);
        let reg = FenceRegistry::new(&FenceSettings {
            driver: DriverName::Noop,
            allow_noop: true,
            health_interval: Duration::from_secs(60),
            ..FenceSettings::default()
        })
        .unwrap();
        let (targets, refused) = plan_round(&s, &state, &reg, Utc::now());
        // c3's invalid flag does not stop a read-only power check.
        let names: Vec<String> = targets.iter().map(|t| t.node.to_string()).collect();
        assert_eq!(names, ["c1", "c3"]);
        assert_eq!(nodes_of(&refused), vec![NodeName::from("c2")]);
        let err = refused[0].result.as_ref().unwrap_err();
        assert!(err.contains("p/compute_nodes/c2/config/bmc/port"), "{err}");
        assert_eq!(refused[0].driver, "noop");
    }
}
