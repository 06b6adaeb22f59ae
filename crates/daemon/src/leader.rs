//! The leader cycle: what this process does while it holds the lock.
//!
//! Every `[monitor] interval` it reads the whole tree with one snapshot,
//! parses it, logs each invalid value once (node and key), and records the
//! cycle under `<prefix>/novaha/last_cycle` through the lease-checked store,
//! so a deposed leader's write is refused by Consul instead of landing.
//!
//! With the stages wired ([`LeaderCycle::with_recovery`]), each cycle
//! also detects and recovers ([`LeaderCycle::act`]): the monitor observes
//! once, core's `judge` decides the counters and `failed` flags (each
//! node's writes one guarded transaction), and every node with recovery
//! work gets its own task ([`crate::recovery::run_node`]) spawned through
//! the tenure's `TaskTracker` with a child token of the lease. The tasks
//! outlive a cycle; the tenure ends (token cancelled, in-flight units
//! drained within a grace period) when the lease is lost or on shutdown.
//! In `[recovery] mode = "dry-run"` nothing is written but the cycle
//! record: counting happens in memory and each failed node's full plan is
//! printed and logged instead.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use novaha_core::NodeName;
use novaha_core::detect::{DetectEvent, ResetGrace, judge_with};
use novaha_core::kv::{ClusterState, NodeCondition, Schema};
use novaha_core::store::{DryRunStore, KvOp, LeaderLease, StateStore, StoreError};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use crate::clock::Clock;
use crate::config::Config;
use crate::config::recovery::Mode;
use crate::http::Health;
use crate::metrics::Metrics;
use novaha_monitor::Sight;
use novaha_report::{CycleReport, Outcome, Plan};

use novaha_evacuate::capacity;

use crate::recovery::plan::plan;
use crate::recovery::{RunnerContext, View, run_node};
use crate::stages::Stages;

/// How long a tenure's recovery tasks get to finish the unit in flight
/// (a fence call, an evacuate batch) once the tenure ends.
pub const DRAIN_GRACE: Duration = Duration::from_secs(60);

/// The bookkeeping key a leader rewrites every cycle (below the prefix's
/// `novaha/` folder).
pub const LAST_CYCLE: &str = "last_cycle";

/// Why the leader loop returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaderExit {
    /// The lease was lost (or a write was refused as not-leader): go back to
    /// standby and race again.
    LostLock,
    /// Shutdown was requested: resign.
    Shutdown,
}

/// The leader's recovery work of one tenure (one lease).
struct Tenure {
    epoch: String,
    /// The lease with this tenure's token: cancelled when the lock is lost
    /// or when the tenure ends (shutdown).
    lease: LeaderLease,
    tracker: TaskTracker,
    tasks: BTreeMap<NodeName, JoinHandle<Outcome>>,
}

/// What the detection-and-recovery half of a cycle needs.
struct Recovery {
    cfg: Arc<Config>,
    once: bool,
    /// Run the fence-path health check for the tenure (off when the stages
    /// were handed in rather than built from the config).
    health: bool,
    stages: Option<Arc<Stages>>,
    connect_failures: u32,
    view: watch::Sender<Arc<View>>,
    tenure: Option<Tenure>,
    /// Dry run: the nodes whose plan was printed (again when re-failed).
    planned: BTreeSet<NodeName>,
    /// Dry run: the plans of the last cycle (for `run --once`).
    plans: Vec<Plan>,
    /// Recovery tasks that ended, with how (for `run --once`).
    outcomes: Vec<(NodeName, Outcome)>,
    last: Option<(Vec<NodeName>, bool, bool)>,
    /// Why the last cycle judged nothing (`None`: it judged every node).
    blind: Option<String>,
    /// When the failures-tolerated figure was last read, and the figure.
    capacity_at: Option<Instant>,
    tolerated: Option<BTreeMap<String, u32>>,
}

/// The leader's state across cycles of one or more tenures.
pub struct LeaderCycle {
    store: Arc<dyn StateStore>,
    schema: Schema,
    id: String,
    interval: Duration,
    /// Invalid values already logged, as (key, raw excerpt): each is logged
    /// once while it stays, and again if it comes back after being fixed.
    logged_invalid: BTreeSet<(String, String)>,
    /// Detection and recovery; `None` = the leader only observes.
    recovery: Option<Recovery>,
    /// Where the cycle reports (exposed at /metrics when the HTTP
    /// endpoint runs; `run --once` keeps its own, unexposed).
    metrics: Arc<Metrics>,
    /// Nodes with per-node series, to drop the series of a removed node.
    metric_nodes: BTreeSet<NodeName>,
    /// Whether the leader can judge (novaha_monitor::Sight).
    sight: Sight,
    /// Where `/readyz` reads blindness from, when the HTTP endpoint runs.
    health: Option<Arc<Health>>,
    /// The last cycle's summary, to log a cycle at INFO only when it changed.
    last_summary: Option<String>,
    /// The pause last logged, to log a pause once when it starts or ends.
    pause_logged: Option<String>,
    /// The wall clock (virtual in the fault simulator).
    clock: Clock,
}

impl LeaderCycle {
    /// A leader cycle over `store`, run every `interval`, reporting
    /// cycles, detection and recovery through `metrics` (a constructor
    /// argument so that no caller can forget to wire it).
    pub fn new(
        store: Arc<dyn StateStore>,
        schema: Schema,
        id: String,
        interval: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            store,
            schema,
            id,
            interval,
            logged_invalid: BTreeSet::new(),
            recovery: None,
            metrics,
            metric_nodes: BTreeSet::new(),
            sight: Sight::new(crate::config::monitor::DEFAULT_BLIND_AFTER),
            health: None,
            last_summary: None,
            pause_logged: None,
            clock: Clock::system(),
        }
    }

    /// Publishes the leader's blindness on `/readyz` through `health`.
    pub fn with_health(mut self, health: Arc<Health>) -> Self {
        self.health = Some(health);
        self
    }

    /// Reads the wall clock through `clock` instead of the system's.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The per-node and per-state series of one parsed tree.
    fn node_metrics(&mut self, state: &ClusterState) {
        use novaha_core::record::Phase;
        let m = &self.metrics;
        let mut by_state: BTreeMap<&'static str, i64> = BTreeMap::new();
        let now = self.clock.now();
        m.set_paused(state.paused(now).is_some());
        let mut ha: BTreeMap<&'static str, i64> = BTreeMap::new();
        for h in state.ha_nodes.values() {
            let st = match h.in_use.value {
                Ok(false) => "free",
                Ok(true) => "in_use",
                Err(_) => "invalid",
            };
            *ha.entry(st).or_default() += 1;
        }
        m.set_ha_nodes(&ha.into_iter().collect::<Vec<_>>());
        for cn in state.compute_nodes.values() {
            let name = cn.name.as_str();
            let record = cn.recovery.value.as_ref().ok().and_then(|r| r.as_ref());
            let st = cn.state(now);
            *by_state.entry(st).or_default() += 1;
            m.set_node(
                name,
                cn.number_fails.get().unwrap_or(0),
                cn.failed.get() == Some(true),
            );
            m.set_node_degraded(name, matches!(cn.degraded.value, Ok(Some(_))));
            match record {
                Some(r) if r.phase != Phase::Done => {
                    let age = r
                        .timeline
                        .get("detected")
                        .and_then(|d| (now - *d).to_std().ok())
                        .map(|d| d.as_secs_f64());
                    m.set_recovery(name, age, r.phase == Phase::Stuck);
                }
                _ => m.set_recovery(name, None, false),
            }
        }
        let by_state: Vec<(&'static str, i64)> = by_state.into_iter().collect();
        m.set_nodes(&by_state);
        let now_nodes: BTreeSet<NodeName> = state.compute_nodes.keys().cloned().collect();
        for gone in self.metric_nodes.difference(&now_nodes) {
            m.forget_node(gone.as_str());
        }
        self.metric_nodes = now_nodes;
    }

    /// Wires detection and recovery from `cfg` (the stages are built at the
    /// first cycle that needs them). `once`: recovery tasks stop at their
    /// first wait instead of waiting it out (`run --once`).
    pub fn with_recovery(mut self, cfg: Arc<Config>, once: bool) -> Self {
        if cfg.recovery.mode == Mode::DryRun {
            // Every write of the tree stays in memory; only the leader's own
            // bookkeeping (the cycle record `status` reads) is written.
            self.store = Arc::new(DryRunStore::new(
                self.store.clone(),
                self.schema.internal(""),
            ));
        }
        let (view, _) = watch::channel(Arc::new(View::default()));
        self.sight = Sight::new(cfg.monitor.blind_after);
        self.recovery = Some(Recovery {
            cfg,
            once,
            health: true,
            stages: None,
            connect_failures: 0,
            view,
            tenure: None,
            planned: BTreeSet::new(),
            plans: Vec::new(),
            outcomes: Vec::new(),
            last: None,
            blind: None,
            capacity_at: None,
            tolerated: None,
        });
        self
    }

    /// Wires detection and recovery over stages built by the caller (the
    /// deterministic fault simulator's in-process peers) instead of from
    /// `cfg`'s cloud; the fence-path health check does not run.
    pub fn with_stages(mut self, cfg: Arc<Config>, stages: Arc<Stages>) -> Self {
        self = self.with_recovery(cfg, false);
        if let Some(r) = self.recovery.as_mut() {
            r.stages = Some(stages);
            r.health = false;
        }
        self
    }

    /// Ends the current tenure: cancels its recovery tasks (each stops
    /// after its unit in flight) and waits for them at most `grace`.
    pub async fn end_tenure(&mut self, grace: Duration) {
        let Some(t) = self.recovery.as_mut().and_then(|r| r.tenure.take()) else {
            return;
        };
        t.lease.token().cancel();
        t.tracker.close();
        if tokio::time::timeout(grace, t.tracker.wait()).await.is_err() {
            error!(epoch = %t.epoch, grace = ?grace, "recovery tasks did not stop within the grace period");
        }
    }

    /// `run --once`: waits until every recovery task of this tenure ended
    /// (each stops at its first wait), delivers the notifications due,
    /// and returns the nodes' outcomes and the dry-run plans.
    pub async fn drain(&mut self) -> (Vec<(NodeName, Outcome)>, Vec<Plan>) {
        let Some(r) = self.recovery.as_mut() else {
            return (Vec::new(), Vec::new());
        };
        if let Some(t) = r.tenure.take() {
            for (node, handle) in t.tasks {
                match handle.await {
                    Ok(o) => r.outcomes.push((node, o)),
                    Err(e) => error!(node = %node, error = %e, "recovery task failed"),
                }
            }
            if let Some(outbox) = r.stages.as_ref().and_then(|s| s.outbox.clone()) {
                match outbox.deliver_due(&t.lease, self.clock.now()).await {
                    Ok(s) => info!(sent = s.count("sent"), "notifications delivered"),
                    Err(e) => {
                        warn!(error = %e, "notification delivery failed; the next leader retries")
                    }
                }
            }
            t.tracker.close();
            t.lease.token().cancel();
        }
        (
            std::mem::take(&mut r.outcomes),
            std::mem::take(&mut r.plans),
        )
    }

    /// Runs cycles until the lease is lost or `shutdown` fires. The wait
    /// between cycles races both; a cycle in progress runs to its end (its
    /// read gives up when the lease is lost, its writes are refused by
    /// Consul once the lock is gone), so shutdown waits at most one cycle.
    pub async fn run(&mut self, lease: &LeaderLease, shutdown: &CancellationToken) -> LeaderExit {
        info!(id = %self.id, epoch = lease.epoch(), role = "leader", "acting as leader");
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.sight.begin(self.clock.now());
        // The fence-path health check runs for the whole tenure, under a
        // child token of the lease (crate::fence_health).
        let health = self
            .recovery
            .as_ref()
            .filter(|r| !r.once && r.health)
            .and_then(|r| {
                crate::fence_health::start(
                    &r.cfg,
                    self.store.clone(),
                    &self.schema,
                    Some(self.metrics.clone()),
                    lease,
                )
            });
        let exit = self.run_cycles(lease, shutdown, &mut tick).await;
        if let Some(h) = health {
            h.stop().await;
        }
        self.end_tenure(DRAIN_GRACE).await;
        // A standby judges nothing and is not blind.
        self.metrics.set_blind(false, 0.0);
        if let Some(h) = &self.health {
            h.set_blind(None);
        }
        exit
    }

    async fn run_cycles(
        &mut self,
        lease: &LeaderLease,
        shutdown: &CancellationToken,
        tick: &mut tokio::time::Interval,
    ) -> LeaderExit {
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return LeaderExit::Shutdown,
                _ = lease.lost() => return LeaderExit::LostLock,
                _ = tick.tick() => {}
            }
            // The cycle is not dropped mid-way: it races its own waits
            // against the lease, and once recovery units run inside `act`
            // they must finish (or stop between units), never be cut off.
            match self.cycle(lease).await {
                Ok(_) => {}
                Err(StoreError::NotLeader { .. }) if lease.is_lost() => {
                    return LeaderExit::LostLock;
                }
                Err(StoreError::NotLeader { session }) => {
                    // Consul refused the write: the lock is gone even if the
                    // election has not said so yet. Act no more; wait for
                    // the lease to be revoked (or retry after an interval,
                    // still refused if the lock really is gone).
                    self.metrics.cycle(false);
                    error!(
                        session,
                        epoch = lease.epoch(),
                        "leader write refused: this process no longer holds the lock"
                    );
                    tokio::select! {
                        biased;
                        _ = shutdown.cancelled() => return LeaderExit::Shutdown,
                        _ = lease.lost() => return LeaderExit::LostLock,
                        _ = tokio::time::sleep(self.interval) => {}
                    }
                }
                Err(e) => {
                    self.metrics.cycle(false);
                    warn!(error = %e, retryable = e.is_retryable(), "leader cycle failed; retrying next interval");
                }
            }
        }
    }

    /// One cycle: snapshot, parse, log invalid values, act, record.
    pub async fn cycle(&mut self, lease: &LeaderLease) -> Result<CycleReport, StoreError> {
        // A read is cancel-safe: give it up as soon as the lease is lost.
        let snap = tokio::select! {
            biased;
            _ = lease.lost() => {
                return Err(lease.not_leader());
            }
            r = self.store.snapshot() => r?,
        };
        let state = ClusterState::parse(&self.schema, &snap);
        let invalid = self.note_invalid(&state);
        self.node_metrics(&state);
        self.note_pause(&state);
        self.act(&state, lease).await?;
        let (judged_failed, mass_failure, nova_unreachable) = self
            .recovery
            .as_mut()
            .and_then(|r| r.last.take())
            .unwrap_or_default();
        // Only a leader wired to detect can be blind.
        let sight = match self.recovery.as_mut() {
            Some(r) => {
                let reason = r.blind.take();
                let sight = self.sight.observe(reason.as_deref(), self.clock.now());
                self.metrics
                    .set_blind(sight.blind, sight.judgement_age_seconds);
                if let Some(h) = &self.health {
                    h.set_blind(sight.blind.then(|| reason.clone().unwrap_or_default()));
                }
                Some(sight)
            }
            None => None,
        };
        let failures_tolerated = self.recovery.as_ref().and_then(|r| r.tolerated.clone());
        let report = CycleReport {
            id: self.id.clone(),
            epoch: lease.epoch().to_owned(),
            at: self.clock.now().to_rfc3339(),
            compute_nodes: state.compute_nodes.len(),
            ha_nodes: state.ha_nodes.len(),
            failed: state
                .compute_nodes
                .values()
                .filter(|n| n.failed.get() == Some(true))
                .map(|n| n.name.clone())
                .collect(),
            invalid,
            judged_failed,
            mass_failure,
            nova_unreachable,
            failures_tolerated,
        };
        let key = self.schema.internal(LAST_CYCLE);
        let encode = |e: serde_json::Error| {
            StoreError::Refused(format!("cannot encode the cycle report: {e}"))
        };
        let mut doc = serde_json::to_value(&report).map_err(encode)?;
        // The leader's sight, for `novaha status` (novaha_monitor::Sight):
        // `blind_reason` (why this cycle judged nothing), `blind` (beyond
        // the grace), `last_judgement` (RFC 3339).
        let blind_reason = sight.as_ref().and_then(|s| s.reason.clone());
        if let Some(s) = &sight {
            doc["blind"] = s.blind.into();
            doc["blind_reason"] = s.reason.clone().into();
            doc["last_judgement"] = s.last_judgement.map(novaha_core::kv::format_time).into();
        }
        let value = serde_json::to_vec(&doc).map_err(encode)?;
        self.store
            .commit(
                lease,
                &[KvOp::set(key.clone(), value, snap.cas_index(&key))],
            )
            .await?;
        let blind = sight.as_ref().is_some_and(|s| s.blind);
        if blind_reason.is_some() {
            self.metrics.cycle_blind();
        } else {
            self.metrics.cycle(true);
        }
        // At INFO only when what it saw changed; every cycle at DEBUG.
        let summary = format!(
            "{} {} {:?} {} {:?}",
            report.compute_nodes, report.ha_nodes, report.failed, report.invalid, blind
        );
        if self.last_summary.as_ref() != Some(&summary) {
            info!(
                role = "leader",
                epoch = lease.epoch(),
                compute_nodes = report.compute_nodes,
                ha_nodes = report.ha_nodes,
                failed = report.failed.len(),
                invalid = report.invalid,
                blind,
                "leader cycle done"
            );
            self.last_summary = Some(summary);
        } else {
            debug!(
                role = "leader",
                epoch = lease.epoch(),
                compute_nodes = report.compute_nodes,
                failed = report.failed.len(),
                "leader cycle done"
            );
        }
        Ok(report)
    }

    /// Detection and recovery, given the parsed tree and the lease.
    /// Contract: nodes with invalid values are skipped and never written;
    /// every write goes through `self.store.commit(lease, ..)`; waits race
    /// `lease.lost()`; recovery units run in their own tasks, which stop
    /// between units when the tenure ends, never mid-call.
    async fn act(&mut self, state: &ClusterState, lease: &LeaderLease) -> Result<(), StoreError> {
        let Some(stages) = self.stages().await else {
            return Ok(());
        };
        let started = Instant::now();
        let observed = tokio::select! {
            biased;
            _ = lease.lost() => return Err(lease.not_leader()),
            o = stages.monitor.observe() => o,
        };
        debug!(
            seconds = started.elapsed().as_secs_f64(),
            "monitor observed"
        );
        let grace = stages.policy.reset.grace;
        let clock = ResetGrace {
            now: self.clock.now(),
            grace,
        };
        let stale: BTreeSet<NodeName> = observed.stale.keys().cloned().collect();
        let judgement = judge_with(
            &self.schema,
            state,
            observed.nova.as_ref(),
            &stale,
            &stages.thresholds,
            Some(&clock),
        );
        let mut judged_failed = Vec::new();
        for event in &judgement.events {
            log_event(event, grace, &observed);
            if let DetectEvent::Failed { node, .. } = event {
                judged_failed.push(node.clone());
            }
        }
        for w in &judgement.writes {
            match self.store.commit(lease, &w.ops).await {
                Ok(()) => {}
                Err(e @ StoreError::NotLeader { .. }) => return Err(e),
                Err(e) => {
                    warn!(node = %w.node, error = %e, "detection write not applied; the node is judged again next cycle");
                    judged_failed.retain(|n| n != &w.node);
                }
            }
        }
        self.metrics.observe_poll(started.elapsed().as_secs_f64());
        if observed.nova.is_some() {
            self.metrics.set_mass_failure_guard(judgement.mass_failure);
        }
        self.note_observation(&observed, judgement.mass_failure, &stale, started);
        self.read_capacity(&stages, state, lease).await?;
        let nova_unreachable = judgement
            .events
            .iter()
            .any(|e| matches!(e, DetectEvent::NovaUnreachable));
        let rec = self.recovery.as_mut().expect("wired to recover");
        rec.last = Some((
            judged_failed.clone(),
            judgement.mass_failure,
            nova_unreachable,
        ));
        // The nodes with recovery work: as read, plus those judged failed now.
        let mut work: BTreeSet<NodeName> = state
            .compute_nodes
            .values()
            .filter(|cn| cn.condition().needs_recovery())
            .map(|cn| cn.name.clone())
            .collect();
        for n in &judged_failed {
            // As the tree reads once this cycle's `failed=True` is in.
            if let Some(cn) = state.compute_nodes.get(n) {
                let mut judged = cn.clone();
                judged.failed.value = Ok(true);
                if judged.condition() == NodeCondition::Claimable {
                    work.insert(n.clone());
                }
            }
        }
        if stages.policy.dry_run {
            self.plan_dry_runs(&stages, &work, lease).await
        } else {
            self.spawn_recoveries(&stages, work, lease);
            Ok(())
        }
    }

    /// The recovery stages, built from the config at the first cycle that
    /// needs them; `None` while the cloud cannot be reached (a blind cycle:
    /// nothing is judged, no count moves).
    async fn stages(&mut self) -> Option<Arc<Stages>> {
        let rec = self.recovery.as_mut()?;
        if rec.stages.is_none() {
            let built = Stages::connect(
                &rec.cfg,
                self.store.clone(),
                &self.schema,
                self.metrics.clone(),
            )
            .await;
            match built {
                Ok(s) => {
                    info!(policy = ?s.policy.target, concurrency = s.policy.concurrency, restore_power_state = s.policy.restore_power_state, dry_run = s.policy.dry_run, "recovery stages ready");
                    rec.stages = Some(Arc::new(s));
                }
                Err(e) => {
                    rec.connect_failures += 1;
                    // novaha_monitor::Sight logs and reports the blindness.
                    debug!(
                        error = format!("{e:#}"),
                        attempts = rec.connect_failures,
                        "cannot reach the cloud yet: no judgement this cycle"
                    );
                    rec.blind = Some(format!("cannot reach the cloud: {e:#}"));
                    rec.last = Some((Vec::new(), false, true));
                    return None;
                }
            }
        }
        rec.stages.clone()
    }

    /// Counts the monitor's failed reads, records why the cycle judged
    /// nothing (if so), and publishes what it read to the recovery tasks.
    fn note_observation(
        &mut self,
        observed: &novaha_monitor::Observation,
        mass_failure: bool,
        stale: &BTreeSet<NodeName>,
        started: Instant,
    ) {
        let mut why = Vec::new();
        for p in &observed.problems {
            match p {
                novaha_monitor::Problem::NovaUnreachable { error } => {
                    self.metrics.api_error("nova");
                    why.push(format!("nova: {error}"));
                }
                novaha_monitor::Problem::ConsulUnreachable { error } => {
                    self.metrics.api_error("consul");
                    why.push(format!("consul health checks: {error}"));
                }
                _ => {}
            }
        }
        let rec = self.recovery.as_mut().expect("wired to recover");
        rec.blind = observed.nova.is_none().then(|| {
            if why.is_empty() {
                "the monitor could not read the nodes' state".to_owned()
            } else {
                why.join("; ")
            }
        });
        let Some(nova) = &observed.nova else { return };
        let mut view = rec.view.borrow().as_ref().clone();
        view.at = Some(started);
        view.services = nova
            .iter()
            .map(|(n, s)| (n.clone(), s.nova.clone()))
            .collect();
        view.mass_failure = mass_failure;
        view.stale_after = self.interval * 3;
        // Healthy as the judgement sees it: a stale heartbeat fails the
        // nova signal here too.
        view.healthy = nova
            .iter()
            .filter(|(n, s)| !s.all_failed_with(stale.contains(*n)))
            .map(|(n, _)| n.clone())
            .collect();
        rec.view.send_replace(Arc::new(view));
    }

    /// Every `[evacuate] capacity_interval`, the failures-tolerated figure.
    /// Bounded by one interval: the read runs inside the detection cycle,
    /// and a slow Nova (os-hypervisors waits on a dead compute) must not
    /// hold detection back for a minute. A read is cancel-safe; the figure
    /// is tried again next time.
    async fn read_capacity(
        &mut self,
        stages: &Stages,
        state: &ClusterState,
        lease: &LeaderLease,
    ) -> Result<(), StoreError> {
        let rec = self.recovery.as_mut().expect("wired to recover");
        let Some(reader) = &stages.capacity else {
            return Ok(());
        };
        if reader.interval.is_zero()
            || rec
                .capacity_at
                .is_some_and(|at| at.elapsed() < reader.interval)
        {
            return Ok(());
        }
        rec.capacity_at = Some(Instant::now());
        let read = tokio::select! {
            biased;
            _ = lease.lost() => return Err(lease.not_leader()),
            r = tokio::time::timeout(self.interval, capacity::read_loads(reader, state)) => r,
        };
        match read {
            Err(_) => {
                warn!(limit = ?self.interval, "capacity: reading nova and placement took longer than one cycle; given up so that detection goes on, the figure is not updated");
            }
            Ok(Ok(loads)) => {
                let t = capacity::tolerated(&loads, stages.policy.target);
                self.metrics.set_failures_tolerated(&t);
                if t.values().any(|n| *n == 0) {
                    warn!(failures_tolerated = ?t, hosts = loads.len(), "capacity: a zone cannot absorb the failure of its largest host");
                } else {
                    info!(failures_tolerated = ?t, hosts = loads.len(), "capacity read");
                }
                rec.tolerated = Some(t);
            }
            Ok(Err(e)) => {
                if e.is_retryable() {
                    self.metrics.api_error("placement");
                }
                warn!(error = %e, "capacity: reading nova and placement failed; the figure is not updated");
            }
        }
        Ok(())
    }

    /// Dry run: the plan of every node with recovery work, logged and
    /// printed once per failure (every cycle in `run --once`).
    async fn plan_dry_runs(
        &mut self,
        stages: &Stages,
        work: &BTreeSet<NodeName>,
        lease: &LeaderLease,
    ) -> Result<(), StoreError> {
        let rec = self.recovery.as_mut().expect("wired to recover");
        rec.planned.retain(|n| work.contains(n));
        let due: Vec<&NodeName> = work
            .iter()
            .filter(|n| rec.once || !rec.planned.contains(*n))
            .collect();
        if due.is_empty() {
            return Ok(());
        }
        // Read again with this cycle's judgement folded in (the dry-run
        // store keeps it).
        let snap = self.store.snapshot().await?;
        let state = ClusterState::parse(&self.schema, &snap);
        let rec = self.recovery.as_mut().expect("wired to recover");
        let view = rec.view.borrow().clone();
        for n in due {
            let Some(cn) = state.compute_nodes.get(n) else {
                continue;
            };
            if !matches!(cn.recovery.value, Ok(None)) {
                continue;
            }
            let p = plan(stages, &snap, &state, cn, &view, lease.epoch()).await;
            let evacuate: Vec<&str> = p
                .instances
                .iter()
                .filter(|i| i.action == "evacuate")
                .map(|i| i.id.as_str())
                .collect();
            warn!(node = %n, fence_driver = %p.fence_driver, fence_address = ?p.fence_address, ha_node = ?p.ha_node.as_ref().map(ToString::to_string), blocked = ?p.blocked, evacuate = ?evacuate, "dry run: recovery plan (nothing done)");
            if !rec.once {
                println!("{p}");
            }
            rec.planned.insert(n.clone());
            rec.plans.push(p);
        }
        Ok(())
    }

    /// Starts a recovery task for every node in `work` that has none in this
    /// tenure (a new lease starts a new tenure: the old one's tasks stop).
    fn spawn_recoveries(
        &mut self,
        stages: &Arc<Stages>,
        work: BTreeSet<NodeName>,
        lease: &LeaderLease,
    ) {
        if work.is_empty() {
            return;
        }
        let rec = self.recovery.as_mut().expect("wired to recover");
        let tenure = match &mut rec.tenure {
            Some(t) if t.epoch == lease.epoch() && !t.lease.is_lost() => t,
            slot => {
                if let Some(old) = slot.take() {
                    old.lease.token().cancel();
                    old.tracker.close();
                }
                let token = lease.token().child_token();
                let tenure_lease =
                    LeaderLease::new(lease.session().to_owned(), lease.epoch().to_owned(), token);
                let tracker = TaskTracker::new();
                if let Some(outbox) = stages.outbox.clone()
                    && !rec.once
                {
                    let l = tenure_lease.clone();
                    tracker.spawn(async move { outbox.run(&l).await });
                }
                slot.insert(Tenure {
                    epoch: lease.epoch().to_owned(),
                    lease: tenure_lease,
                    tracker,
                    tasks: BTreeMap::new(),
                })
            }
        };
        // Forget the tasks that ended (their outcome is logged by the task).
        let ended: Vec<NodeName> = tenure
            .tasks
            .iter()
            .filter(|(_, h)| h.is_finished())
            .map(|(n, _)| n.clone())
            .collect();
        for n in ended {
            if let Some(h) = tenure.tasks.remove(&n)
                && let Some(Ok(o)) = futures::FutureExt::now_or_never(h)
                && rec.once
            {
                rec.outcomes.push((n, o));
            }
        }
        for node in work {
            if tenure.tasks.contains_key(&node) {
                continue;
            }
            let ctx = RunnerContext {
                store: self.store.clone(),
                schema: self.schema.clone(),
                stages: stages.clone(),
                view: rec.view.subscribe(),
                once: rec.once,
                metrics: Some(self.metrics.clone()),
                clock: self.clock.clone(),
            };
            let cancel = tenure.lease.token().child_token();
            let run = run_node(ctx, node.clone(), tenure.lease.clone(), cancel);
            tenure.tasks.insert(node, tenure.tracker.spawn(run));
        }
    }

    /// Logs a pause once when it starts, changes or ends (an expired one
    /// ends by itself).
    fn note_pause(&mut self, state: &ClusterState) {
        let now = self.clock.now();
        let pause = state.paused(now);
        let text = pause.as_ref().map(ToString::to_string);
        if text == self.pause_logged {
            return;
        }
        match &text {
            Some(t) => {
                warn!(pause = %t, "cluster paused: no claim, fence, force-down or evacuation starts anywhere; detection goes on");
            }
            None => info!("cluster no longer paused: recovery acts again"),
        }
        self.pause_logged = text;
    }

    /// Logs every invalid value not logged yet, counts it, forgets the ones
    /// that were fixed. Returns how many are present now.
    fn note_invalid(&mut self, state: &ClusterState) -> usize {
        let compute = state.compute_nodes.values().flat_map(|n| {
            let effect = "node skipped until it is fixed";
            n.invalid
                .iter()
                .map(move |bad| (n.name.as_str(), bad, effect))
        });
        let ha = state.ha_nodes.values().filter_map(|h| {
            let effect = "HA node not used until it is fixed";
            h.in_use
                .value
                .as_ref()
                .err()
                .map(|bad| (h.name.as_str(), bad, effect))
        });
        let pause = state.pause.value.as_ref().err().map(|bad| {
            (
                "",
                bad,
                "pause value: treated as paused until it is fixed or removed (novaha resume)",
            )
        });
        let mut present = BTreeSet::new();
        for (node, bad, effect) in compute.chain(ha).chain(pause) {
            let id = (bad.key.clone(), bad.raw.clone());
            if !self.logged_invalid.contains(&id) {
                error!(node, key = %bad.key, raw = %bad.raw, reason = %bad.reason, "invalid value in the state tree; {effect}");
            }
            present.insert(id);
        }
        let count = present.len();
        let newly = present.difference(&self.logged_invalid).count();
        self.metrics.state_invalid_seen(newly as u64);
        self.metrics.set_state_invalid(count);
        self.logged_invalid = present;
        count
    }
}

/// Logs one detection event at its level, with its node and details.
fn log_event(event: &DetectEvent, grace: Duration, observed: &novaha_monitor::Observation) {
    let grace = humantime::format_duration(grace);
    match event {
        // Counted in the cycle record, and logged by note_invalid.
        DetectEvent::NovaUnreachable | DetectEvent::Invalid { .. } => {}
        DetectEvent::Discovered { node } => info!(node = %node, "new compute node: keys created"),
        DetectEvent::Skipped { node, reason } => {
            debug!(node = %node, reason = ?reason, "node not judged")
        }
        DetectEvent::Failing { node, number_fails } => {
            info!(node = %node, number_fails, "node failed a check")
        }
        DetectEvent::Healthy {
            node,
            previous_fails,
        } => info!(node = %node, previous_fails, "node healthy again: count reset"),
        DetectEvent::Failed { node, number_fails } => {
            warn!(node = %node, number_fails, "node judged failed")
        }
        DetectEvent::GuardTripped {
            failing,
            monitored,
            held_back,
        } => {
            let failing: Vec<String> = failing.iter().map(ToString::to_string).collect();
            let held: Vec<String> = held_back.iter().map(ToString::to_string).collect();
            error!(failing = ?failing, monitored, held_back = ?held, "mass-failure guard tripped: fencing nothing, suspecting the network or the control plane");
        }
        DetectEvent::UnknownToNova { node } => {
            debug!(node = %node, "node in the tree unknown to nova: left alone")
        }
        DetectEvent::AwaitingUp { node, since, first } => {
            if *first {
                info!(node = %node, reset_grace = %grace, "node reset: reads down, not counted; reset grace started");
            } else {
                debug!(node = %node, since = ?since, reset_grace = %grace, "node reset: still waiting for Nova to report it up");
            }
        }
        DetectEvent::UpAfterReset { node } => {
            info!(node = %node, "node reset: Nova reports it up; counting failures again")
        }
        DetectEvent::ResetGraceExpired { node, since } => {
            warn!(node = %node, since = %since, reset_grace = %grace, "node reset: Nova never reported it up within the reset grace; counting failures again");
        }
        DetectEvent::Degraded {
            node,
            readings,
            previous,
        } => {
            let heartbeat_age_s = observed.stale.get(node).map(|a| a.as_secs());
            warn!(node = %node, signals = %readings, previous = ?previous, heartbeat_age_s = ?heartbeat_age_s, "node degraded: its signals disagree; not counted as failing, an operator should look");
        }
        DetectEvent::DegradedCleared { node, previous } => {
            info!(node = %node, previous = %previous, "node no longer degraded")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use novaha_core::kv::{KvEntry, Snapshot};
    use std::sync::Mutex;

    /// An in-memory store for the cycle's bookkeeping logic only; the
    /// election and the guarded writes are tested against real Consul in
    /// tests/election.rs.
    struct MemStore {
        snap: Mutex<Snapshot>,
        commits: Mutex<Vec<Vec<KvOp>>>,
        refuse: bool,
    }

    #[async_trait]
    impl StateStore for MemStore {
        async fn snapshot(&self) -> Result<Snapshot, StoreError> {
            Ok(self.snap.lock().expect("lock").clone())
        }
        async fn commit(&self, lease: &LeaderLease, ops: &[KvOp]) -> Result<(), StoreError> {
            if self.refuse {
                return Err(lease.not_leader());
            }
            self.commits.lock().expect("lock").push(ops.to_vec());
            Ok(())
        }
    }

    fn store(pairs: &[(&str, &str)], refuse: bool) -> Arc<MemStore> {
        let entries = pairs
            .iter()
            .map(|(k, v)| {
                (
                    (*k).to_owned(),
                    KvEntry {
                        value: Some(v.as_bytes().to_vec()),
                        modify_index: 5,
                    },
                )
            })
            .collect();
        Arc::new(MemStore {
            snap: Mutex::new(Snapshot { index: 9, entries }),
            commits: Mutex::new(Vec::new()),
            refuse,
        })
    }

    fn lease() -> LeaderLease {
        LeaderLease::new("s1".into(), "s1:1".into(), CancellationToken::new())
    }

    #[tokio::test]
    async fn invalid_values_are_counted_once_and_again_after_a_fix() {
        let mem = store(
            &[
                ("p/compute_nodes/c1/status/failed", "True"),
                ("p/compute_nodes/c2/status/failed", "maybe"),
                ("p/ha_nodes/h1/status/in_use", "perhaps"),
            ],
            false,
        );
        let metrics = Metrics::new();
        let mut cycle = LeaderCycle::new(
            mem.clone(),
            Schema::new("p"),
            "me".into(),
            Duration::from_secs(1),
            metrics.clone(),
        );
        let l = lease();
        let r = cycle.cycle(&l).await.expect("cycle");
        assert_eq!(r.invalid, 2);
        assert_eq!(r.failed, vec![NodeName::from("c1")]);
        cycle.cycle(&l).await.expect("cycle");
        assert_eq!(metrics.state_invalid_total(), 2);
        mem.snap
            .lock()
            .expect("lock")
            .entries
            .remove("p/compute_nodes/c2/status/failed");
        cycle.cycle(&l).await.expect("cycle");
        assert_eq!(metrics.state_invalid_current(), 1);
        mem.snap.lock().expect("lock").entries.insert(
            "p/compute_nodes/c2/status/failed".into(),
            KvEntry {
                value: Some(b"maybe".to_vec()),
                modify_index: 7,
            },
        );
        cycle.cycle(&l).await.expect("cycle");
        assert_eq!(metrics.state_invalid_total(), 3);
        let commits = mem.commits.lock().expect("lock");
        assert_eq!(commits.len(), 4);
        assert!(
            commits
                .iter()
                .all(|ops| ops.len() == 1 && ops[0].key() == "p/novaha/last_cycle")
        );
    }

    #[tokio::test]
    async fn the_degraded_gauge_follows_the_tree() {
        let mem = store(
            &[
                (
                    "p/compute_nodes/c1/internal/degraded",
                    "nova=stale consul=healthy",
                ),
                ("p/compute_nodes/c1/internal/number_fails", "0"),
                ("p/compute_nodes/c2/internal/number_fails", "0"),
            ],
            false,
        );
        let metrics = Metrics::new();
        let mut cycle = LeaderCycle::new(
            mem.clone(),
            Schema::new("p"),
            "me".into(),
            Duration::from_secs(1),
            metrics.clone(),
        );
        cycle.cycle(&lease()).await.expect("cycle");
        let text = metrics.encode();
        assert!(
            text.contains("novaha_node_degraded{node=\"c1\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("novaha_node_degraded{node=\"c2\"} 0"),
            "{text}"
        );
        mem.snap
            .lock()
            .expect("lock")
            .entries
            .remove("p/compute_nodes/c1/internal/degraded");
        cycle.cycle(&lease()).await.expect("cycle");
        let text = metrics.encode();
        assert!(
            text.contains("novaha_node_degraded{node=\"c1\"} 0"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_refused_write_acts_no_more_until_the_lease_is_revoked() {
        let mem = store(&[], true);
        let metrics = Metrics::new();
        let mut cycle = LeaderCycle::new(
            mem.clone(),
            Schema::new("p"),
            "me".into(),
            Duration::from_millis(10),
            metrics.clone(),
        );
        let l = lease();
        let token = l.token().clone();
        let revoke = async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            token.cancel();
        };
        let never = CancellationToken::new();
        let (exit, ()) = tokio::join!(cycle.run(&l, &never), revoke);
        assert_eq!(exit, LeaderExit::LostLock);
        assert!(mem.commits.lock().expect("lock").is_empty());
        assert_eq!(metrics.cycles_total(true), 0);
        assert!(metrics.cycles_total(false) >= 1);
    }

    #[tokio::test]
    async fn losing_the_lease_or_shutdown_stops_the_loop() {
        let mem = store(&[], false);
        let mut cycle = LeaderCycle::new(
            mem,
            Schema::new("p"),
            "me".into(),
            Duration::from_millis(10),
            Metrics::new(),
        );
        let l = lease();
        let token = l.token().clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            token.cancel();
        });
        assert_eq!(
            cycle.run(&l, &CancellationToken::new()).await,
            LeaderExit::LostLock
        );
        let stop = CancellationToken::new();
        stop.cancel();
        assert_eq!(cycle.run(&lease(), &stop).await, LeaderExit::Shutdown);
    }
}
