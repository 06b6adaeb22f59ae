//! The fence-path health check, scheduled by the leader: every `[fence]
//! health_interval` it reads (never changes) the power of every compute
//! node in the K/V tree with the node's own driver and credentials (what
//! [`novaha_fence::check_power`] does), so that a wrong BMC password, a
//! dead BMC or a missing `config/bmc/ip` is found on a quiet afternoon, not
//! during the outage.
//!
//! Each round it sets `novaha_bmc_up{node}` ([`Metrics::set_bmc_up`]), logs
//! a WARN per unhealthy node with its error (and an INFO when one is
//! healthy again), and publishes the whole report as JSON at
//! `<prefix>/novaha/fence_health` through the lease-guarded commit, so the
//! standby's and the CLI's `novaha status` show it too
//! ([`FenceHealthDoc`], [`status_json`]).
//!
//! It must never power anything on or off (only `Fencer::power_state` is
//! called), never write without the lease, never put a secret in a log line,
//! an error or the published report, and never outlive the lease: the task
//! runs under a child token of the lease and stops at the next wait once the
//! lock is lost or the tenure ends. A power read is not destructive, so a
//! round in flight is dropped at once when the token fires.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use novaha_core::PowerState;
use novaha_core::drivers::fence::FenceTarget;
use novaha_core::kv::{ClusterState, InvalidValue, Schema, Snapshot};
use novaha_core::store::{KvOp, LeaderLease, StateStore, StoreError};
use novaha_fence::{FenceError, FenceRegistry, FenceSettings, PowerReport, check_power, target_of};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use crate::config::Config;
use crate::config::recovery::Mode;
use crate::metrics::Metrics;

/// The name of the report's key below the prefix's `novaha/` folder
/// (`Schema::internal(FENCE_HEALTH)`).
pub const FENCE_HEALTH: &str = "fence_health";

/// The version of [`FenceHealthDoc`]'s JSON shape.
pub const DOC_VERSION: u32 = 1;

/// How long an error text may be in the published report (the fence crate
/// already cuts peer answers to 300 characters; this bounds the rest).
const MAX_ERROR_CHARS: usize = 400;

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
        Err(e) => (None, Some(cut(e))),
    };
    NodeHealth {
        driver: r.driver.clone(),
        healthy: r.is_healthy(),
        power,
        error,
        checked_at: r.checked_at,
    }
}

fn cut(text: &str) -> String {
    if text.chars().count() <= MAX_ERROR_CHARS {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(MAX_ERROR_CHARS).collect();
    out.push_str("...");
    out
}

/// Replaces `secret` in `text` with `***` (a second line of defence: the
/// fence drivers already sanitise what they return).
fn scrub(text: &str, secret: &str) -> String {
    if secret.is_empty() {
        text.to_owned()
    } else {
        text.replace(secret, "***")
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

/// Starts the fence-path health check of a leader tenure from the daemon's
/// config (the leader calls this when it takes the lock and stops the
/// returned task when its tenure ends). In `[recovery] mode = "dry-run"` it
/// reads and logs but publishes nothing. `None` (logged at ERROR) when the
/// `[fence]` section cannot build its drivers, which `check-config` and
/// start-up already refuse.
pub fn start(
    cfg: &Config,
    store: Arc<dyn StateStore>,
    schema: &Schema,
    metrics: Option<Arc<Metrics>>,
    lease: &LeaderLease,
) -> Option<HealthTask> {
    match FenceHealth::new(store, schema.clone(), &cfg.fence, metrics) {
        Ok(h) => {
            let creds = crate::connect::connect(cfg)
                .ok()
                .and_then(|(consul, _)| crate::credentials::store(cfg, &consul));
            let h = h.with_credentials(creds);
            let h = if cfg.recovery.mode == Mode::DryRun {
                h.without_publishing()
            } else {
                h
            };
            Some(Arc::new(h).spawn(lease))
        }
        Err(e) => {
            error!(error = %e, "fence-path health check not started: the fence drivers cannot be built");
            None
        }
    }
}

/// The leader's fence-path health check: what a round needs.
pub struct FenceHealth {
    store: Arc<dyn StateStore>,
    schema: Schema,
    registry: FenceRegistry,
    metrics: Option<Arc<Metrics>>,
    interval: Duration,
    concurrency: usize,
    /// False in a dry run: read and log, publish nothing.
    publish: bool,
}

impl std::fmt::Debug for FenceHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FenceHealth")
            .field("schema", &self.schema)
            .field("interval", &self.interval)
            .field("concurrency", &self.concurrency)
            .field("publish", &self.publish)
            .finish_non_exhaustive()
    }
}

/// Why a round did not publish its report.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    /// The state tree could not be read or the report not written.
    #[error("fence health: state store: {0}")]
    Store(#[from] StoreError),
    /// The report could not be encoded.
    #[error("fence health: cannot encode the report: {0}")]
    Encode(#[from] serde_json::Error),
    /// The lease was lost during the round.
    #[error("fence health: the leader lease was lost")]
    Cancelled,
}

impl HealthError {
    /// True when the next round may succeed (everything but a lost lease
    /// is tried again at the next interval).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Store(e) => e.is_retryable(),
            Self::Encode(_) | Self::Cancelled => false,
        }
    }
}

/// The running check of one tenure; [`HealthTask::stop`] ends it.
#[derive(Debug)]
pub struct HealthTask {
    token: CancellationToken,
    tracker: TaskTracker,
}

impl HealthTask {
    /// Cancels the check (a round in flight is dropped: reads only) and
    /// waits for the task to end.
    pub async fn stop(self) {
        self.token.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

impl FenceHealth {
    /// The check over `store`, with its own fence drivers built from
    /// `settings` (so it runs even while the cloud cannot be reached).
    /// `metrics`: where `novaha_bmc_up` is set, if exported.
    pub fn new(
        store: Arc<dyn StateStore>,
        schema: Schema,
        settings: &FenceSettings,
        metrics: Option<Arc<Metrics>>,
    ) -> Result<Self, FenceError> {
        Ok(Self {
            store,
            schema,
            registry: FenceRegistry::new(settings)?,
            metrics,
            interval: settings.health_interval,
            concurrency: settings.health_concurrency.max(1),
            publish: true,
        })
    }

    /// Takes BMC credentials from `store` first (crate::credentials).
    pub fn with_credentials(
        mut self,
        store: Option<Arc<dyn novaha_fence::CredentialStore>>,
    ) -> Self {
        if let Some(s) = store {
            self.registry = self.registry.with_credentials(s);
        }
        self
    }

    /// Read and log only, never publish (`[recovery] mode = "dry-run"`).
    pub fn without_publishing(mut self) -> Self {
        self.publish = false;
        self
    }

    /// The period between rounds.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Starts the check under `lease`: a child token of the lease, spawned
    /// through the returned task's own `TaskTracker`. The first round runs
    /// at once; [`HealthTask::stop`] ends it (so does losing the lease).
    pub fn spawn(self: &Arc<Self>, lease: &LeaderLease) -> HealthTask {
        let token = lease.token().child_token();
        let tracker = TaskTracker::new();
        let lease = LeaderLease::new(
            lease.session().to_owned(),
            lease.epoch().to_owned(),
            token.clone(),
        );
        tracker.spawn(self.clone().run(lease));
        HealthTask { token, tracker }
    }

    /// Runs rounds every interval until `lease` is lost (or its token
    /// cancelled). A failed round is logged and retried at the next
    /// interval.
    pub async fn run(self: Arc<Self>, lease: LeaderLease) {
        info!(
            epoch = lease.epoch(),
            interval = ?self.interval,
            concurrency = self.concurrency,
            "fence-path health check started"
        );
        let mut up: BTreeMap<String, bool> = BTreeMap::new();
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = lease.lost() => break,
                _ = tick.tick() => {}
            }
            match self.round(&lease, &up).await {
                Ok(doc) => up = doc.up(),
                Err(HealthError::Cancelled) => break,
                Err(e) => {
                    warn!(error = %e, retryable = e.is_retryable(), "fence-path health round failed; retrying next interval")
                }
            }
        }
        info!(epoch = lease.epoch(), "fence-path health check stopped");
    }

    /// One round: read the tree, read every node's power, set the gauges,
    /// log the changes, publish the report (unless a dry run). Returns the
    /// report; `before` is the previous round's health by node (for the
    /// change log).
    pub async fn round(
        &self,
        lease: &LeaderLease,
        before: &BTreeMap<String, bool>,
    ) -> Result<FenceHealthDoc, HealthError> {
        let snap = tokio::select! {
            biased;
            _ = lease.lost() => return Err(HealthError::Cancelled),
            s = self.store.snapshot() => s?,
        };
        let state = ClusterState::parse(&self.schema, &snap);
        let (targets, mut reports) = plan_round(&self.schema, &state, &self.registry, Utc::now());
        let read = tokio::select! {
            biased;
            _ = lease.lost() => return Err(HealthError::Cancelled),
            r = check_power(&self.registry, &targets, self.concurrency) => r,
        };
        reports.extend(read);
        // Second line of defence: no node's password in its report.
        for r in &mut reports {
            if let (Err(e), Some(cn)) = (&r.result, state.compute_nodes.get(&r.node)) {
                r.result = Err(scrub(e, cn.bmc.password.expose()));
            }
        }
        let doc = FenceHealthDoc::from_reports(lease.epoch(), self.interval, Utc::now(), &reports);
        self.note(&doc, before, &state);
        if self.publish {
            let key = self.schema.internal(FENCE_HEALTH);
            let value = serde_json::to_vec(&doc)?;
            if lease.is_lost() {
                return Err(HealthError::Cancelled);
            }
            self.store
                .commit(
                    lease,
                    &[KvOp::set(key.clone(), value, snap.cas_index(&key))],
                )
                .await?;
        }
        // Every round at DEBUG: the changes are logged by `note` (WARN per
        // newly unhealthy node, INFO when one is healthy again).
        debug!(
            epoch = lease.epoch(),
            nodes = doc.nodes.len(),
            healthy = doc.healthy,
            unhealthy = doc.unhealthy,
            published = self.publish,
            "fence-path health round done"
        );
        Ok(doc)
    }

    /// Gauges and the change log of one round.
    fn note(&self, doc: &FenceHealthDoc, before: &BTreeMap<String, bool>, state: &ClusterState) {
        let now = doc.up();
        if let Some(m) = &self.metrics {
            for (node, up) in &now {
                m.set_bmc_up(node, *up);
            }
            // Nodes gone from the tree: their gauge goes with them.
            let known: BTreeSet<String> = state
                .compute_nodes
                .keys()
                .map(ToString::to_string)
                .collect();
            for gone in before.keys().filter(|n| !known.contains(*n)) {
                m.forget_node(gone);
            }
        }
        let (down, up) = transitions(before, &now);
        for (node, h) in doc.nodes.iter().filter(|(_, h)| !h.healthy) {
            warn!(
                node = %node,
                driver = %h.driver,
                error = h.error.as_deref().unwrap_or(""),
                newly = down.contains(node),
                "fence path unhealthy: this node could not be fenced now"
            );
        }
        for node in up {
            info!(node = %node, driver = %doc.nodes[&node].driver, "fence path healthy again");
        }
        debug!(nodes = now.len(), "fence-path gauges set");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use novaha_core::NodeName;
    use novaha_core::kv::KvEntry;
    use novaha_fence::DriverName;
    use std::sync::Mutex;

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

    fn noop_settings() -> FenceSettings {
        FenceSettings {
            driver: DriverName::Noop,
            allow_noop: true,
            health_interval: Duration::from_secs(60),
            ..FenceSettings::default()
        }
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
        assert_eq!(scrub("bad pw hunter2 here", "hunter2"), "bad pw *** here");
        assert_eq!(scrub("nothing", ""), "nothing");
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
        let reg = FenceRegistry::new(&noop_settings()).unwrap();
        let (targets, refused) = plan_round(&s, &state, &reg, Utc::now());
        // c3's invalid flag does not stop a read-only power check.
        let names: Vec<String> = targets.iter().map(|t| t.node.to_string()).collect();
        assert_eq!(names, ["c1", "c3"]);
        assert_eq!(nodes_of(&refused), vec![NodeName::from("c2")]);
        let err = refused[0].result.as_ref().unwrap_err();
        assert!(err.contains("p/compute_nodes/c2/config/bmc/port"), "{err}");
        assert_eq!(refused[0].driver, "noop");
    }

    /// An in-memory store (the guarded write itself is tested against real
    /// Consul by tests/fencing.rs).
    struct MemStore {
        snap: Snapshot,
        commits: Mutex<Vec<Vec<KvOp>>>,
    }

    #[async_trait]
    impl StateStore for MemStore {
        async fn snapshot(&self) -> Result<Snapshot, StoreError> {
            Ok(self.snap.clone())
        }
        async fn commit(&self, _lease: &LeaderLease, ops: &[KvOp]) -> Result<(), StoreError> {
            self.commits.lock().expect("lock").push(ops.to_vec());
            Ok(())
        }
    }

    /// Real time with a short interval: the workspace's tokio has no
    /// `test-util` (paused time), and a round's waits are only the ticks.
    #[tokio::test]
    async fn rounds_run_every_interval_publish_and_stop_with_the_lease() {
        let mem = Arc::new(MemStore {
            snap: snap(&[
                ("p/compute_nodes/c1/status/failed", "False"),
                ("p/compute_nodes/c2/config/bmc/driver", "ilo"),
                ("p/novaha/fence_health", "{}"),
            ]),
            commits: Mutex::new(Vec::new()),
        });
        let metrics = Metrics::new();
        let settings = FenceSettings {
            health_interval: Duration::from_millis(100),
            ..noop_settings()
        };
        let health = Arc::new(
            FenceHealth::new(
                mem.clone(),
                Schema::new("p"),
                &settings,
                Some(metrics.clone()),
            )
            .unwrap(),
        );
        let token = CancellationToken::new();
        let lease = LeaderLease::new("s1".into(), "s1:1".into(), token.clone());
        let task = health.spawn(&lease);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while mem.commits.lock().expect("lock").len() < 3 {
            assert!(std::time::Instant::now() < deadline, "fewer than 3 rounds");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        {
            let commits = mem.commits.lock().expect("lock");
            let KvOp::Set { key, value, cas } = &commits[0][0] else {
                panic!("not a set: {:?}", commits[0]);
            };
            assert_eq!(key, "p/novaha/fence_health");
            assert_eq!(*cas, 5, "written at the index it was read at");
            let doc: FenceHealthDoc = serde_json::from_slice(value).unwrap();
            assert_eq!(doc.epoch, "s1:1");
            assert!(doc.nodes["c1"].healthy, "{doc:?}");
            assert_eq!(doc.nodes["c1"].power, Some(PowerState::Off));
            assert!(!doc.nodes["c2"].healthy);
            assert!(doc.nodes["c2"].error.as_deref().unwrap().contains("ilo"));
        }
        let text = metrics.encode();
        assert!(text.contains("novaha_bmc_up{node=\"c1\"} 1"), "{text}");
        assert!(text.contains("novaha_bmc_up{node=\"c2\"} 0"), "{text}");
        // Losing the lease stops it; nothing more is written.
        token.cancel();
        task.stop().await;
        let n = mem.commits.lock().expect("lock").len();
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(mem.commits.lock().expect("lock").len(), n);
    }

    #[tokio::test]
    async fn a_dry_run_publishes_nothing() {
        let mem = Arc::new(MemStore {
            snap: snap(&[("p/compute_nodes/c1/status/failed", "False")]),
            commits: Mutex::new(Vec::new()),
        });
        let health = FenceHealth::new(mem.clone(), Schema::new("p"), &noop_settings(), None)
            .unwrap()
            .without_publishing();
        let lease = LeaderLease::new("s1".into(), "s1:1".into(), CancellationToken::new());
        let doc = health.round(&lease, &BTreeMap::new()).await.unwrap();
        assert_eq!(doc.healthy, 1);
        assert!(mem.commits.lock().expect("lock").is_empty());
        let lost = CancellationToken::new();
        lost.cancel();
        let lease = LeaderLease::new("s1".into(), "s1:1".into(), lost);
        assert!(matches!(
            health.round(&lease, &BTreeMap::new()).await,
            Err(HealthError::Cancelled)
        ));
    }
}
