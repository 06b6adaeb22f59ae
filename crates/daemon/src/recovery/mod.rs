//! The recovery runner: carries out core's pure recovery decisions
//! (`novaha_core::recovery::decide`) for one failed node, against the real
//! peers (Consul, the BMC, Nova, the outbox), as docs/recovery.md's runner
//! contract says:
//!
//! 1. read the tree (one snapshot), build the [`Observation`] and fold in
//!    the results of the last action;
//! 2. decide;
//! 3. commit the decision's ops as **one** lock-guarded transaction; on a
//!    failed commit do not act: re-read and decide again;
//! 4. carry out the action; its result goes into the next observation.
//!
//! Each failed node's recovery is one task ([`run_node`]) spawned by the
//! leader through its tenure's `TaskTracker`, with a child token of the
//! lease. Waits (backoff, polls) race that token. A destructive unit (one
//! fence call, one evacuate call, one force-down) is never dropped
//! mid-flight: the token is checked between units only. A batch of
//! evacuate calls (at most `[evacuate] concurrency`, the decision's batch)
//! is sent concurrently and always awaited in full.
//!
//! What this module must never do: decide anything itself (the decision
//! does), write anything except through `StateStore::commit` with the lease,
//! act on a decision whose commit failed, or send an evacuate call that the
//! record does not already hold as `requested`.

pub mod plan;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use novaha_core::NodeName;
use novaha_core::PowerState;
use novaha_core::detect::NovaService;
use novaha_core::drivers::{Fenced, Instance, InstanceProgress};
use novaha_core::kv::{ClusterState, Schema};
use novaha_core::record::{InstanceState, Phase, RecoveryRecord};
use novaha_core::recovery::{
    Action, Failure, HaNodeObs, NodeFlags, Observation, Step, WaitReason, decide,
};
use novaha_core::store::{LeaderLease, StateStore, StoreError};
use novaha_fence::target_of;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use novaha_report::Outcome;

use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::stages::Stages;

/// The shortest wait between two decisions, so that a zero retry never
/// spins.
const MIN_WAIT: Duration = Duration::from_millis(50);

/// What the leader's latest monitor cycle saw, shared with every recovery
/// task through a `watch` channel.
#[derive(Clone, Debug, Default)]
pub struct View {
    /// When the monitor's read started; `None` = nothing read yet.
    pub at: Option<Instant>,
    /// Every nova-compute service Nova reported (HA nodes included).
    pub services: BTreeMap<NodeName, NovaService>,
    /// The mass-failure guard tripped in the latest judgement.
    pub mass_failure: bool,
    /// The nodes with a healthy signal in the latest read (not every
    /// configured signal failed).
    pub healthy: std::collections::BTreeSet<NodeName>,
    /// A read older than this is stale: nothing is claimed, fenced or sent
    /// on it (three monitor intervals; zero = never stale).
    pub stale_after: Duration,
}

impl View {
    /// True when the monitor read Nova recently enough to act on it.
    pub fn fresh(&self) -> bool {
        self.at
            .is_some_and(|at| self.stale_after.is_zero() || at.elapsed() <= self.stale_after)
    }
}

/// What a recovery task needs besides its node.
#[derive(Clone)]
pub struct RunnerContext {
    /// The state store (Consul).
    pub store: Arc<dyn StateStore>,
    /// The key paths.
    pub schema: Schema,
    /// The stages and the policy.
    pub stages: Arc<Stages>,
    /// The latest monitor view.
    pub view: watch::Receiver<Arc<View>>,
    /// `run --once`: stop at the first wait instead of waiting it out
    /// (polls of evacuations in flight are still waited for).
    pub once: bool,
    /// Where the outcomes are counted (`None` in `run --once`).
    pub metrics: Option<Arc<Metrics>>,
    /// The wall clock decisions and records are stamped with.
    pub clock: Clock,
}

/// The results of the last action, folded into the next observation.
#[derive(Default)]
struct Results {
    fenced: Option<Fenced>,
    instances: Option<Vec<Instance>>,
    progress: BTreeMap<String, InstanceProgress>,
    progress_errors: std::collections::BTreeSet<String>,
    power: Option<PowerState>,
    evacuate_failures: BTreeMap<String, Failure>,
    start_failures: BTreeMap<String, Failure>,
    failure: Option<(Step, Failure)>,
    notified: bool,
}

impl Results {
    fn fold_into(&self, obs: &mut Observation) {
        obs.fenced = self.fenced.clone();
        obs.instances = self.instances.clone();
        obs.progress = self.progress.clone();
        obs.progress_errors = self.progress_errors.clone();
        obs.power = self.power;
        obs.evacuate_failures = self.evacuate_failures.clone();
        obs.start_failures = self.start_failures.clone();
        obs.failure = self.failure.clone();
        obs.notified = self.notified;
    }
}

/// A service as a successful Nova call left it, used until the monitor
/// reads the service again after the call.
struct Patched {
    at: Instant,
    service: NovaService,
}

/// One node's recovery task state.
struct NodeRunner {
    ctx: RunnerContext,
    node: NodeName,
    lease: LeaderLease,
    cancel: CancellationToken,
    results: Results,
    patched: BTreeMap<NodeName, Patched>,
    /// Services a call of ours may have changed with an unknown outcome
    /// (a retryable failure), since when: unknown until the monitor's next
    /// read.
    unsure: BTreeMap<NodeName, Instant>,
    last_wait: Option<String>,
    /// The node's BMC settings as the latest snapshot holds them.
    bmc: Option<novaha_core::drivers::FenceTarget>,
}

/// Runs the recovery of `node` until there is nothing more to do, it is
/// stuck, or `cancel` fires (a child of the lease's token: losing the lock
/// or shutting down). Spawn it through the leader's tracker.
pub async fn run_node(
    ctx: RunnerContext,
    node: NodeName,
    lease: LeaderLease,
    cancel: CancellationToken,
) -> Outcome {
    let mut r = NodeRunner {
        ctx,
        node,
        lease,
        cancel,
        results: Results::default(),
        patched: BTreeMap::new(),
        unsure: BTreeMap::new(),
        last_wait: None,
        bmc: None,
    };
    info!(node = %r.node, epoch = r.lease.epoch(), "recovery task started");
    let outcome = r.run().await;
    info!(node = %r.node, outcome = ?outcome, "recovery task ended");
    outcome
}

fn failure(message: String, retryable: bool) -> Failure {
    Failure { message, retryable }
}

/// Counts what a landed commit changed: instances that reached a final
/// state, a recovery that finished or got stuck.
fn count_transitions(
    m: &Metrics,
    now: chrono::DateTime<chrono::Utc>,
    before: Option<&RecoveryRecord>,
    after: Option<&RecoveryRecord>,
) {
    let Some(after) = after else { return };
    for (id, i) in &after.instances {
        let was_final = before
            .and_then(|b| b.instances.get(id))
            .is_some_and(|b| b.state.is_final());
        if i.state.is_final() && !was_final {
            let result = match i.state {
                InstanceState::Done => "done",
                InstanceState::Error => "error",
                _ => "skipped",
            };
            let seconds = i
                .requested_at
                .and_then(|at| (now - at).to_std().ok())
                .map(|d| d.as_secs_f64());
            m.evacuation(result, seconds);
        }
    }
    let was = before.map(|b| b.phase);
    if after.phase == Phase::Done && was != Some(Phase::Done) {
        let landed = after
            .timeline
            .get("detected")
            .zip(after.timeline.get("evacuated"))
            .and_then(|(d, e)| (*e - *d).to_std().ok())
            .map(|d| d.as_secs_f64());
        m.recovery_finished("done", landed);
    }
    if after.phase == Phase::Stuck && was != Some(Phase::Stuck) {
        m.recovery_finished("stuck", None);
    }
}

impl NodeRunner {
    async fn run(&mut self) -> Outcome {
        loop {
            if self.cancel.is_cancelled() {
                return Outcome::Cancelled;
            }
            let snap = tokio::select! {
                biased;
                _ = self.cancel.cancelled() => return Outcome::Cancelled,
                s = self.ctx.store.snapshot() => s,
            };
            let snap = match snap {
                Ok(s) => s,
                Err(e) => {
                    warn!(node = %self.node, error = %e, "recovery: state read failed; retrying");
                    if !self.sleep(self.ctx.stages.policy.poll_interval).await {
                        return Outcome::Cancelled;
                    }
                    continue;
                }
            };
            let state = ClusterState::parse(&self.ctx.schema, &snap);
            let Some(cn) = state.compute_nodes.get(&self.node) else {
                warn!(node = %self.node, "recovery: the node's keys are gone; nothing to do");
                return Outcome::Idle;
            };
            let record = cn.recovery.value.clone().ok().flatten();
            self.bmc = Some(target_of(cn));
            let mut obs = Observation::new(
                self.node.clone(),
                self.lease.epoch(),
                NodeFlags::from_state(cn, self.ctx.clock.now()),
            );
            obs.ha_nodes = HaNodeObs::all(&self.ctx.schema, &snap, &state);
            let view = self.ctx.view.borrow().clone();
            for h in &mut obs.ha_nodes {
                h.service = self.service(&view, &h.name);
            }
            // Until this tenure's monitor has read Nova once, and again
            // when its last read is stale (Nova unreachable for a while),
            // neither the mass-failure guard nor the node's or any spare's
            // state is known: nothing is claimed, fenced or sent.
            obs.judged = view.fresh();
            obs.paused = paused(&state, self.ctx.clock.now());
            obs.node_healthy = view.healthy.contains(&self.node);
            obs.mass_failure = view.mass_failure;
            obs.nova_service = self.service(&view, &self.node);
            obs.ha_service = record
                .as_ref()
                .and_then(|r| r.ha_node.as_ref())
                .and_then(|ha| self.service(&view, ha));
            self.results.fold_into(&mut obs);
            if let Some(rec) = &record
                && let Some(ha) = &rec.ha_node
                && self.sends_next(rec)
            {
                obs.ha_capacity = tokio::select! {
                    biased;
                    _ = self.cancel.cancelled() => return Outcome::Cancelled,
                    c = self.ctx.stages.evacuator.capacity(ha) => match c {
                        Ok(c) => c,
                        Err(e) => {
                            self.nova_error(&e);
                            warn!(node = %self.node, ha_node = %ha, error = %e, "reading the HA node's capacity failed: sending unchecked");
                            None
                        }
                    },
                };
            }
            let policy = &self.ctx.stages.policy;
            let now = self.ctx.clock.now();
            let d = decide(policy, record.as_ref(), &obs, now);
            // A decision that writes nothing but acts is preceded by a bare
            // lease check (a transaction of the session check alone): a
            // stalled or deposed leader never carries it out (rule 11).
            if !d.ops.is_empty() || d.action.destructive() {
                match self.ctx.store.commit(&self.lease, &d.ops).await {
                    Ok(()) => {
                        if let Some(m) = &self.ctx.metrics {
                            count_transitions(m, now, record.as_ref(), d.record.as_ref());
                        }
                    }
                    Err(e @ StoreError::NotLeader { .. }) => {
                        error!(node = %self.node, error = %e, "recovery: write refused, not the leader; stopping");
                        return Outcome::Cancelled;
                    }
                    Err(e) => {
                        if matches!(e, StoreError::Unavailable(_)) {
                            self.api_error("consul");
                        }
                        // Do not act on an uncommitted decision: re-read and
                        // decide again, keeping the results (they are facts
                        // about the world, folding them twice is harmless).
                        warn!(node = %self.node, error = %e, action = %d.action, "recovery: commit failed; re-reading before acting");
                        if !self.sleep(MIN_WAIT * 4).await {
                            return Outcome::Cancelled;
                        }
                        continue;
                    }
                }
            }
            self.results = Results::default();
            let phase = d.record.as_ref().map(|r| r.phase);
            match self.act(d.action, phase).await {
                Flow::Continue => {}
                Flow::End(o) => return o,
            }
        }
    }

    /// True when the next decision may send evacuations, so the claimed HA
    /// node's room is read first: instances still pending, or the listing
    /// just made (it is folded and sent in the same decision).
    fn sends_next(&self, rec: &RecoveryRecord) -> bool {
        match rec.phase {
            Phase::Evacuating => rec
                .instances
                .values()
                .any(|i| i.state == InstanceState::Pending),
            Phase::ForcedDown => self.results.instances.is_some(),
            _ => false,
        }
    }

    /// The node's service: the monitor's view, unless a later call of ours
    /// changed it since the view was read.
    fn service(&self, view: &View, node: &NodeName) -> Option<NovaService> {
        // A stale read (Nova unreachable for a while, or the previous
        // tenure's) is not knowledge: the service is unknown.
        if !view.fresh() {
            return None;
        }
        if let Some(at) = self.unsure.get(node)
            && view.at.is_none_or(|v| v <= *at)
            && self.patched.get(node).is_none_or(|p| p.at <= *at)
        {
            return None;
        }
        match (self.patched.get(node), view.at) {
            (Some(p), Some(at)) if at < p.at => Some(p.service.clone()),
            (Some(p), None) => Some(p.service.clone()),
            _ => view.services.get(node).cloned(),
        }
    }

    fn api_error(&self, service: &str) {
        if let Some(m) = &self.ctx.metrics {
            m.api_error(service);
        }
    }

    /// Counts a failed Nova call (a refusal is not an API error).
    fn nova_error(&self, e: &novaha_core::drivers::EvacuateError) {
        if e.is_retryable() {
            self.api_error("nova");
        }
    }

    /// Sleeps `d` unless cancelled first; false when cancelled.
    async fn sleep(&self, d: Duration) -> bool {
        tokio::select! {
            biased;
            _ = self.cancel.cancelled() => false,
            _ = tokio::time::sleep(d.max(MIN_WAIT)) => true,
        }
    }

    /// Carries out one decision's action; what it learns lands in
    /// `self.results`, folded into the next observation.
    async fn act(&mut self, action: Action, phase: Option<Phase>) -> Flow {
        let node = &self.node;
        let flow = match action {
            Action::Idle => return Flow::End(Outcome::Idle),
            Action::Wait {
                reason,
                retry_after,
                alert,
            } => return self.wait(reason, retry_after, alert, phase).await,
            Action::Stuck { reason } => {
                error!(node = %node, reason, "recovery stuck: an operator must act (fix, then reset the node)");
                return Flow::End(Outcome::Stuck(reason));
            }
            Action::DryRun(a) => {
                // The leader plans dry runs itself; a task never gets here.
                info!(node = %node, action = %a, "dry run: would act");
                return Flow::End(Outcome::Idle);
            }
            Action::Claim { ha_node } => {
                let target = ha_node.as_ref().map_or("scheduler", |h| h.as_str());
                warn!(node = %node, stage = "claim", target, epoch = self.lease.epoch(), "recovery claimed: recovered latched");
                Flow::Continue
            }
            Action::Retarget { from, to } => {
                let to = to.as_ref().map_or("scheduler", |h| h.as_str());
                error!(node = %node, from = %from, to, "HA node not up in Nova: the instances not sent yet go elsewhere");
                Flow::Continue
            }
            Action::Finish { incident } => {
                warn!(node = %node, incident, stage = "done", "recovery done: record copied to incidents");
                Flow::Continue
            }
            Action::Reset { incident, released } => {
                let released: Vec<String> = released.iter().map(ToString::to_string).collect();
                if let Some(m) = &self.ctx.metrics {
                    m.admin_reset();
                }
                warn!(node = %node, incident, released = ?released, "admin reset applied: number_fails cleared, record archived");
                info!(node = %node, reset_grace = %humantime::format_duration(self.ctx.stages.policy.reset.grace), "node reset: waiting for Nova to report it up before counting failures");
                Flow::Continue
            }
            Action::CheckPower => self.check_power().await,
            Action::Fence => self.fence().await,
            Action::ForceDown { service_id, reason } => self.force_down(&service_id, &reason).await,
            Action::ListInstances => self.list_instances().await,
            Action::PrepareTarget {
                ha_node,
                service_id,
            } => self.prepare_target(&ha_node, &service_id).await,
            Action::Evacuate(order) => self.evacuate(&order).await,
            Action::Poll { instances, after } => self.poll(instances, after).await,
            Action::RestorePowerState { instances } => self.start(instances).await,
            Action::Notify(report) => self.notify(&report).await,
            Action::RestoreService {
                service_id,
                unforce,
                enable,
            } => self.restore_service(&service_id, unforce, enable).await,
        };
        if matches!(flow, Flow::Continue) {
            self.last_wait = None;
        }
        flow
    }

    /// Logs a wait once per reason, then waits it out (or, in `run --once`,
    /// stops there).
    async fn wait(
        &mut self,
        reason: WaitReason,
        retry_after: Duration,
        alert: bool,
        phase: Option<Phase>,
    ) -> Flow {
        let node = &self.node;
        let text = reason.to_string();
        if self.last_wait.as_deref() != Some(text.as_str()) {
            if alert {
                error!(node = %node, reason = %text, phase = ?phase, retry_in = ?retry_after, "recovery waiting: an operator may need to act");
            } else {
                info!(node = %node, reason = %text, phase = ?phase, retry_in = ?retry_after, "recovery waiting");
            }
        }
        self.last_wait = Some(text.clone());
        // `run --once` stops at every wait: nothing it waits for (a
        // backoff, the monitor's next read) comes within one run.
        if self.ctx.once && !matches!(reason, WaitReason::FenceLost) {
            return Flow::End(Outcome::Waiting(text));
        }
        self.wait_step(retry_after).await
    }

    /// Reads the fenced node's power before an evacuate batch.
    async fn check_power(&mut self) -> Flow {
        // The BMC settings of the snapshot this decision was made on (read
        // just now): one read of the tree less per batch.
        let Some(target) = self.bmc.take() else {
            // The node's keys were not in it: nothing was read.
            return self.wait_step(Duration::ZERO).await;
        };
        let read = match self.ctx.stages.fences.fencer_for(&target) {
            Ok(fencer) => fencer.power_state(&target).await,
            Err(e) => Err(e),
        };
        let node = &self.node;
        let power = read.unwrap_or_else(|e| {
            if e.is_retryable() {
                self.api_error("bmc");
            }
            warn!(node = %node, stage = "check-power", error = %e, "reading the fenced node's power failed: no evacuation until it reads off");
            PowerState::Unknown
        });
        if power == PowerState::Off {
            debug!(node = %node, stage = "check-power", "fenced node still reads off");
        } else {
            error!(node = %node, stage = "check-power", power = %power, "fenced node no longer reads off: fencing it again before any further evacuation");
        }
        self.results.power = Some(power);
        Flow::Continue
    }

    /// Powers the node off and reads it back as off.
    async fn fence(&mut self) -> Flow {
        let Some(target) = self.fence_target().await else {
            // Could not read the BMC settings: nothing was done.
            return self.wait_step(Duration::ZERO).await;
        };
        let node = &self.node;
        let started = Instant::now();
        let mut driver = "none";
        let result = match self.ctx.stages.fences.fencer_for(&target) {
            Ok(fencer) => {
                driver = fencer.driver();
                info!(node = %node, stage = "fence", driver, "fencing: powering off");
                // A destructive unit: never raced against cancellation.
                fencer.fence(&target).await
            }
            Err(e) => Err(e),
        };
        let seconds = started.elapsed().as_secs_f64();
        if let Some(m) = &self.ctx.metrics {
            m.fence_attempt(driver, result.is_ok(), seconds);
            if result.as_ref().is_err_and(|e| e.is_retryable()) {
                m.api_error("bmc");
            }
        }
        match result {
            Ok(fenced) => {
                warn!(node = %node, stage = "fence", driver, seconds, "node fenced: power verified off");
                self.results.fenced = Some(fenced);
            }
            Err(e) => {
                error!(node = %node, stage = "fence", error = %e, retryable = e.is_retryable(), seconds, "fence failed: no evacuation until the power reads off");
                self.results.failure =
                    Some((Step::Fence, failure(e.to_string(), e.is_retryable())));
            }
        }
        Flow::Continue
    }

    /// Forces the node's nova-compute service down and disables it.
    async fn force_down(&mut self, service_id: &str, reason: &str) -> Flow {
        let node = self.node.clone();
        let r = self
            .ctx
            .stages
            .evacuator
            .force_down(&node, service_id, reason)
            .await;
        match &r {
            Ok(()) => {
                info!(node = %node, stage = "force-down", service_id, reason, "nova service forced down and disabled")
            }
            Err(e) => warn!(node = %node, stage = "force-down", error = %e, "force-down failed"),
        }
        self.service_call(Step::ForceDown, &node, r, true, |s| {
            s.forced_down = true;
            s.enabled = false;
        });
        Flow::Continue
    }

    /// Enables the claimed HA node's nova-compute service.
    async fn prepare_target(&mut self, ha_node: &NodeName, service_id: &str) -> Flow {
        let node = &self.node;
        let r = self
            .ctx
            .stages
            .evacuator
            .prepare_target(ha_node, service_id)
            .await;
        match &r {
            Ok(()) => {
                info!(node = %node, stage = "prepare-target", ha_node = %ha_node, "HA node's nova service enabled")
            }
            Err(e) => {
                warn!(node = %node, stage = "prepare-target", ha_node = %ha_node, error = %e, "enabling the HA node failed")
            }
        }
        self.service_call(Step::PrepareTarget, ha_node, r, false, |s| {
            s.enabled = true;
            s.forced_down = false;
        });
        Flow::Continue
    }

    /// The administrator's reset, Nova half: the node's service restored.
    async fn restore_service(&mut self, service_id: &str, unforce: bool, enable: bool) -> Flow {
        let node = self.node.clone();
        let r = self
            .ctx
            .stages
            .evacuator
            .restore_service(&node, service_id)
            .await;
        match &r {
            Ok(()) => {
                info!(node = %node, service_id, unforce, enable, "admin reset: nova service restored")
            }
            Err(e) => {
                warn!(node = %node, error = %e, "admin reset: restoring the nova service failed")
            }
        }
        self.service_call(Step::RestoreService, &node, r, true, |s| {
            s.forced_down = false;
            s.enabled = true;
        });
        Flow::Continue
    }

    /// What a Nova service call of `step` on `host`'s service leaves: on
    /// success the service as the call set it (`set`) stands until the
    /// monitor reads it again; on failure the step failed and, when
    /// `unsure_on_retry` and the failure is retryable (it may have been
    /// applied), the service is unknown until then.
    fn service_call(
        &mut self,
        step: Step,
        host: &NodeName,
        result: Result<(), novaha_core::drivers::EvacuateError>,
        unsure_on_retry: bool,
        set: impl Fn(&mut NovaService),
    ) {
        match result {
            Ok(()) => {
                let view = self.ctx.view.borrow().clone();
                if let Some(mut s) = self.service(&view, host) {
                    set(&mut s);
                    let at = Instant::now();
                    self.patched
                        .insert(host.clone(), Patched { at, service: s });
                }
            }
            Err(e) => {
                self.nova_error(&e);
                if unsure_on_retry && e.is_retryable() {
                    self.unsure.insert(host.clone(), Instant::now());
                }
                self.results.failure = Some((step, failure(e.to_string(), e.is_retryable())));
            }
        }
    }

    /// Lists the failed node's instances.
    async fn list_instances(&mut self) -> Flow {
        let node = &self.node;
        let listed = tokio::select! {
            biased;
            _ = self.cancel.cancelled() => return Flow::End(Outcome::Cancelled),
            l = self.ctx.stages.evacuator.instances_on(node) => l,
        };
        match listed {
            Ok(list) => {
                info!(node = %node, stage = "list", instances = list.len(), "instances of the failed node listed");
                self.results.instances = Some(list);
            }
            Err(e) => {
                self.nova_error(&e);
                warn!(node = %node, stage = "list", error = %e, "listing the node's instances failed");
                self.results.failure = Some((
                    Step::ListInstances,
                    failure(e.to_string(), e.is_retryable()),
                ));
            }
        }
        Flow::Continue
    }

    /// Sends one batch of evacuate calls, all at once; every call runs to
    /// its end (destructive units).
    async fn evacuate(&mut self, order: &novaha_core::recovery::EvacuateOrder) -> Flow {
        let node = &self.node;
        let fenced = order.fenced();
        let mut calls = tokio::task::JoinSet::new();
        for inst in order.instances.clone() {
            let ev = self.ctx.stages.evacuator.clone();
            let fenced = fenced.clone();
            let target = order.target_for(&inst.id).cloned();
            calls.spawn(async move {
                let r = ev.evacuate(&fenced, &inst, target.as_ref()).await;
                let target_name = target.map_or("scheduler".to_owned(), |t| t.to_string());
                (inst.id, r.map(|()| target_name))
            });
        }
        while let Some(joined) = calls.join_next().await {
            match joined {
                Ok((id, Ok(target))) => {
                    info!(node = %node, stage = "evacuate", instance = %id, target, "evacuate call accepted");
                }
                Ok((id, Err(e))) => {
                    self.nova_error(&e);
                    warn!(node = %node, stage = "evacuate", instance = %id, error = %e, retryable = e.is_retryable(), "evacuate call failed");
                    let f = failure(e.to_string(), e.is_retryable());
                    self.results.evacuate_failures.insert(id, f);
                }
                Err(e) => {
                    // A panicked call task: its outcome is unknown, so the
                    // instance is polled, never re-sent.
                    error!(node = %node, stage = "evacuate", error = %e, "evacuate call task failed");
                }
            }
        }
        Flow::Continue
    }

    /// Reads the progress of the instances in flight, after `after`.
    async fn poll(&mut self, instances: Vec<String>, after: Duration) -> Flow {
        if !after.is_zero() && !self.sleep(after).await {
            return Flow::End(Outcome::Cancelled);
        }
        // One batch: every instance read at once, at most `concurrency`
        // reads in flight (a resumed recovery reads every open instance,
        // possibly many more than the window).
        let ev = self.ctx.stages.evacuator.clone();
        let reads = futures::stream::iter(instances)
            .map(|id| {
                let ev = ev.clone();
                async move {
                    let p = ev.progress(&id).await;
                    (id, p)
                }
            })
            .buffer_unordered(self.ctx.stages.policy.concurrency.max(1))
            .collect::<Vec<_>>();
        let read = tokio::select! {
            biased;
            _ = self.cancel.cancelled() => return Flow::End(Outcome::Cancelled),
            r = reads => r,
        };
        let node = &self.node;
        for (id, p) in read {
            match p {
                Ok(p) => {
                    debug!(node = %node, instance = %id, progress = ?p, "instance progress read");
                    self.results.progress.insert(id, p);
                }
                Err(e) => {
                    self.nova_error(&e);
                    warn!(node = %node, instance = %id, error = %e, "reading an instance's progress failed");
                    self.results.progress_errors.insert(id);
                }
            }
        }
        Flow::Continue
    }

    /// Starts evacuated instances that landed stopped but were active.
    async fn start(&mut self, instances: Vec<String>) -> Flow {
        for id in instances {
            if self.cancel.is_cancelled() {
                return Flow::End(Outcome::Cancelled);
            }
            let node = &self.node;
            match self.ctx.stages.evacuator.start(&id).await {
                Ok(()) => {
                    info!(node = %node, instance = %id, "evacuated instance started (was active)")
                }
                Err(e) => {
                    self.nova_error(&e);
                    warn!(node = %node, instance = %id, error = %e, "starting an evacuated instance failed");
                    let f = failure(e.to_string(), e.is_retryable());
                    self.results.start_failures.insert(id, f);
                }
            }
        }
        Flow::Continue
    }

    /// Queues the incident's notifications in the outbox.
    async fn notify(&mut self, report: &novaha_core::drivers::IncidentReport) -> Flow {
        let node = &self.node;
        let Some(outbox) = &self.ctx.stages.outbox else {
            info!(node = %node, incident = %report.incident, "no [[notify]] configured: nobody to tell");
            self.results.notified = true;
            return Flow::Continue;
        };
        match outbox
            .enqueue(&self.lease, report, self.ctx.clock.now())
            .await
        {
            Ok(s) => {
                info!(node = %node, incident = %report.incident, queued = s.queued.len(), existing = s.existing, "notifications queued");
                outbox.wake();
                self.results.notified = true;
            }
            Err(e) if e.is_not_leader() => {
                error!(node = %node, error = %e, "recovery: write refused, not the leader; stopping");
                return Flow::End(Outcome::Cancelled);
            }
            Err(e) => {
                warn!(node = %node, incident = %report.incident, error = %e, "queueing the notifications failed");
                self.results.failure =
                    Some((Step::Notify, failure(e.to_string(), e.is_retryable())));
            }
        }
        Flow::Continue
    }

    /// The node's BMC settings, read fresh from the tree; `None` when the
    /// tree cannot be read or the node is gone.
    async fn fence_target(&self) -> Option<novaha_core::drivers::FenceTarget> {
        let snap = self.ctx.store.snapshot().await.ok()?;
        ClusterState::parse(&self.ctx.schema, &snap)
            .compute_nodes
            .get(&self.node)
            .map(target_of)
    }

    async fn wait_step(&self, d: Duration) -> Flow {
        if self.sleep(d).await {
            Flow::Continue
        } else {
            Flow::End(Outcome::Cancelled)
        }
    }
}

/// Whether the loop goes on.
enum Flow {
    Continue,
    End(Outcome),
}

/// Why the cluster is paused at `now` (`<prefix>/config/paused` present and
/// not past its end; a value that does not parse still pauses: the safe
/// side), as one line for the log and the record.
pub fn paused(state: &ClusterState, now: chrono::DateTime<chrono::Utc>) -> Option<String> {
    state.paused(now).map(|p| p.to_string())
}
