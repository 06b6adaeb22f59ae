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
//! standby's and the CLI's `novaha status` show it too. What a round reads
//! and the report itself are the fence crate's ([`novaha_fence::health`]:
//! [`FenceHealthDoc`], `plan_round`, `status_json`); this module is the
//! leader's worker: the schedule, the write, the gauges and the log.
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

use chrono::Utc;
use novaha_core::kv::{ClusterState, Schema};
use novaha_core::store::{KvOp, LeaderLease, StateStore, StoreError};
use novaha_fence::health::{
    FENCE_HEALTH, FenceHealthDoc, plan_round, scrub_passwords, transitions,
};
use novaha_fence::{FenceError, FenceRegistry, FenceSettings, check_power};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use crate::config::Config;
use crate::config::recovery::Mode;
use crate::metrics::Metrics;

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
        scrub_passwords(&mut reports, &state);
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
    use novaha_core::PowerState;
    use novaha_core::kv::{KvEntry, Snapshot};
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

    fn noop_settings() -> FenceSettings {
        FenceSettings {
            driver: DriverName::Noop,
            allow_noop: true,
            health_interval: Duration::from_secs(60),
            ..FenceSettings::default()
        }
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
