//! The recovery state machine (docs/recovery.md, "Recovery:
//! `recovery::decide`") as one pure function,
//! [`decide`]: from the recovery record, what the runner observed and the
//! time, to the next idempotent action and the K/V writes to commit first.
//!
//! The runner (in the daemon) loops, per failed node:
//! 1. read the tree and build an [`Observation`], folding in the results of
//!    the action it carried out last (fence evidence, instance list,
//!    progress, failures);
//! 2. call [`decide`];
//! 3. commit [`Decision::ops`] as one guarded transaction (lock check + CAS).
//!    If the commit fails, do **not** act: re-read and decide again;
//! 4. carry out [`Decision::action`] and feed its result into the next
//!    observation (the results are consumed by one decide call).
//!
//! The record written in step 3 always lands before the action of step 4:
//! an instance is recorded `requested` before its evacuate call is made, so
//! a leader that dies mid-call leaves a record that says "never send this
//! again, poll it".
//!
//! What this module must never do: I/O, reading a clock, producing an
//! [`Action::Evacuate`] for a record without fence evidence, claiming an HA
//! node whose `in_use` is not a parsed `False`, writing `failed` or
//! `recovered` as `False`, or writing anything of a node with an invalid
//! value.

mod decide;
pub mod evacuation;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::capacity::HostCapacity;
use crate::detect::NovaService;
use crate::drivers::{Fenced, IncidentReport, Instance, InstanceProgress};
use crate::kv::{
    ClusterState, ComputeNodeState, Field, HaNodeState, InvalidValue, Schema, Snapshot,
};
use crate::record::{FenceRecord, RecoveryRecord};
use crate::storage::StoragePolicy;
use crate::store::KvOp;
use crate::types::{NodeName, PowerState};

pub use decide::{decide, listed};

/// Where evacuated instances go (`[evacuate] target`, **fixed** names).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetPolicy {
    /// To a claimed HA node only; no free HA node = wait (and alert).
    #[default]
    HaNode,
    /// Let Nova's scheduler pick; no HA node is claimed.
    Scheduler,
    /// A claimed HA node when one is free, else the scheduler.
    HaNodeThenScheduler,
}

/// What the administrator's reset does besides clearing `number_fails`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResetPolicy {
    /// Clear the Nova force-down and enable the node's service again.
    pub restore_nova_service: bool,
    /// Release the HA node the recovery claimed (`in_use=False`).
    pub release_ha_node: bool,
    /// After the reset, detection counts no failure of the node until Nova
    /// reports it up once, for at most this long from the first cycle it
    /// reads down ([`crate::detect::ResetGrace`]); zero turns the wait off.
    pub grace: Duration,
}

/// The default of [`ResetPolicy::grace`]: ten minutes, enough for a
/// repaired host to boot and nova-compute to send its first heartbeat
/// (Nova's own `service_down_time` is 60 s by default), short enough that a
/// node reset while still dead is recovered the same night.
pub const DEFAULT_RESET_GRACE: Duration = Duration::from_secs(600);

impl Default for ResetPolicy {
    fn default() -> Self {
        Self {
            restore_nova_service: true,
            release_ha_node: true,
            grace: DEFAULT_RESET_GRACE,
        }
    }
}

/// The default of [`Policy::priority_key`].
pub const PRIORITY_KEY: &str = "novaha_priority";

/// The configuration the decisions depend on (from `[evacuate]`, `[fence]`,
/// the negotiated Nova microversion, ...). Fixed for a run.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    /// Where the keys live.
    pub schema: Schema,
    /// Where instances go.
    pub target: TargetPolicy,
    /// At most this many evacuations in flight per node (at least 1).
    pub concurrency: usize,
    /// An instance whose metadata holds this key (with any value but an
    /// explicit false: `false f no 0`) is skipped.
    pub opt_out_key: String,
    /// Opt-in mode: when set, only instances whose metadata holds this key
    /// with a true value are evacuated; the rest are skipped.
    pub opt_in_key: Option<String>,
    /// True when the negotiated microversion is >= 2.95: an evacuated server
    /// lands SHUTOFF, so one that was ACTIVE is started again.
    pub restore_power_state: bool,
    /// An instance that has not landed this long after its evacuate call
    /// ends in `error`.
    pub evacuate_timeout: Duration,
    /// How long to wait between two progress polls.
    pub poll_interval: Duration,
    /// A `requested` instance that Nova still shows untouched on the failed
    /// node this long after it was recorded (the evacuate call never took
    /// effect: a commit whose outcome was unknown, a leader that died before
    /// its call) is sent again; likewise a start that never took effect.
    /// At most [`MAX_SENDS`] times each.
    pub resend_after: Duration,
    /// The first retry delay after a failed step; doubles per attempt.
    pub backoff_initial: Duration,
    /// The longest retry delay.
    pub backoff_max: Duration,
    /// A failed step alerts (ERROR) from this many consecutive failures on;
    /// a fence failure and a non-retryable failure alert at once.
    pub alert_after: u32,
    /// After this many consecutive non-retryable failures of a step other
    /// than fencing, the recovery is `stuck` (an operator must act). Fencing
    /// is retried forever: an operator fixing the BMC is picked up.
    pub max_attempts: u32,
    /// Notification is given up after this many failed attempts (it never
    /// blocks anything; the record says it failed).
    pub notify_attempts: u32,
    /// The administrator's reset.
    pub reset: ResetPolicy,
    /// Decide and report, write and do nothing.
    pub dry_run: bool,
    /// What evacuating each instance risks, by where its disk lives
    /// (`[evacuate] shared_storage`, `local_storage`; crate::storage).
    pub storage: StoragePolicy,
    /// The metadata key whose integer value orders evacuations (higher
    /// first; absent or unparsable = 0).
    pub priority_key: String,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            schema: Schema::default(),
            target: TargetPolicy::HaNode,
            concurrency: 8,
            opt_out_key: "novaha_opt_out".to_owned(),
            opt_in_key: None,
            restore_power_state: false,
            evacuate_timeout: Duration::from_secs(600),
            poll_interval: Duration::from_secs(5),
            resend_after: Duration::from_secs(30),
            backoff_initial: Duration::from_secs(5),
            backoff_max: Duration::from_secs(300),
            alert_after: 3,
            max_attempts: 5,
            notify_attempts: 10,
            reset: ResetPolicy::default(),
            dry_run: false,
            storage: StoragePolicy::default(),
            priority_key: PRIORITY_KEY.to_owned(),
        }
    }
}

/// How many times one instance is sent (evacuate) or started at most, when
/// Nova shows that the previous call never took effect.
pub const MAX_SENDS: u32 = 3;

/// The failed node's keys as read, with their CAS indexes.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeFlags {
    /// `status/failed`.
    pub failed: Field<bool>,
    /// `status/recovered`.
    pub recovered: Field<bool>,
    /// `internal/number_fails`.
    pub number_fails: Field<u32>,
    /// `internal/awaiting_up` (the reset writes it True).
    pub awaiting_up: Field<bool>,
    /// The ModifyIndex of `internal/awaiting_up_since` (0 = absent): the
    /// reset deletes a stale one so that a new grace starts.
    pub awaiting_up_since_index: u64,
    /// The ModifyIndex of `internal/recovery` (0 = absent).
    pub record_index: u64,
    /// `config/maintenance` is True: nothing destructive starts or
    /// continues for the node (docs/safety.md).
    pub maintenance: bool,
    /// Every invalid value of the node: while any is present nothing is
    /// decided and nothing of the node is written.
    pub invalid: Vec<InvalidValue>,
    /// `config/shared_storage`: the node's own declaration of shared
    /// ephemeral storage (`None` = the policy's default).
    pub shared_storage: Option<bool>,
}

impl NodeFlags {
    /// The flags of a node as parsed from the tree, at `now` (a
    /// maintenance with an end that has passed is over).
    pub fn from_state(state: &ComputeNodeState, now: chrono::DateTime<chrono::Utc>) -> Self {
        Self {
            failed: state.failed.clone(),
            recovered: state.recovered.clone(),
            number_fails: state.number_fails.clone(),
            awaiting_up: state.awaiting_up.clone(),
            awaiting_up_since_index: state.awaiting_up_since.modify_index,
            record_index: state.recovery.modify_index,
            maintenance: state.in_maintenance(now),
            invalid: state.invalid.clone(),
            shared_storage: state.shared_storage.get().flatten(),
        }
    }
}

/// One registered HA node as read, with the CAS indexes a claim needs.
#[derive(Clone, Debug, PartialEq)]
pub struct HaNodeObs {
    /// The spare host.
    pub name: NodeName,
    /// `status/in_use`; only a parsed `False` is free.
    pub in_use: Field<bool>,
    /// `status/serving`, if set.
    pub serving: Option<NodeName>,
    /// The ModifyIndex of `status/serving` (0 = absent).
    pub serving_index: u64,
    /// Its nova-compute service as the monitor last read it (`None` =
    /// unknown to Nova, or not read yet). Only a spare Nova reports up and
    /// not forced down is claimed or used.
    pub service: Option<NovaService>,
}

impl HaNodeObs {
    /// True when this spare can take evacuations now: Nova reports its
    /// service up and not forced down (a disabled one is enabled first).
    pub fn usable(&self) -> bool {
        usable(self.service.as_ref())
    }
}

/// True when a spare's service, as read, can take evacuations.
pub fn usable(service: Option<&NovaService>) -> bool {
    service.is_some_and(|s| s.up && !s.forced_down)
}

impl HaNodeObs {
    /// Every registered HA node of `state`, with the serving key's index
    /// read from the snapshot `state` was parsed from.
    pub fn all(schema: &Schema, snap: &Snapshot, state: &ClusterState) -> Vec<Self> {
        state
            .ha_nodes
            .values()
            .map(|h: &HaNodeState| Self {
                name: h.name.clone(),
                in_use: h.in_use.clone(),
                serving: h.serving.clone(),
                serving_index: snap.cas_index(&schema.serving(&h.name)),
                service: None,
            })
            .collect()
    }
}

/// A step of the recovery that the runner carries out and that can fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// [`Action::Fence`].
    Fence,
    /// [`Action::ForceDown`].
    ForceDown,
    /// [`Action::ListInstances`].
    ListInstances,
    /// [`Action::PrepareTarget`].
    PrepareTarget,
    /// [`Action::Notify`].
    Notify,
    /// [`Action::RestoreService`].
    RestoreService,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::Fence => "fence",
            Step::ForceDown => "force-down",
            Step::ListInstances => "list-instances",
            Step::PrepareTarget => "prepare-target",
            Step::Notify => "notify",
            Step::RestoreService => "restore-service",
        })
    }
}

/// Why a call failed, as the driver's error said (never a secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Failure {
    /// The error's text.
    pub message: String,
    /// The error's `is_retryable()`.
    pub retryable: bool,
}

/// What the runner read this round, plus the result of the action it carried
/// out last. Results are consumed by one [`decide`] call: clear them after.
#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    /// The failed node.
    pub node: NodeName,
    /// This leader's epoch (stamped on the record and on Nova calls).
    pub epoch: String,
    /// The node's flags and CAS indexes.
    pub flags: NodeFlags,
    /// Every registered HA node.
    pub ha_nodes: Vec<HaNodeObs>,
    /// The detection's mass-failure guard tripped this cycle: nothing is
    /// claimed or fenced (rule 7).
    pub mass_failure: bool,
    /// This leader has judged the cluster at least once (a monitor read
    /// succeeded this tenure). Before that the mass-failure guard is
    /// unknown and the services are not read: nothing is claimed, fenced
    /// or sent.
    pub judged: bool,
    /// The monitor's latest read found a healthy signal for the node: it
    /// came back (a partition healed, a flapping heartbeat) after it was
    /// judged failed. A node that reads healthy is neither claimed nor
    /// fenced: an operator decides (`failed` stays True).
    pub node_healthy: bool,
    /// The cluster is paused (`<prefix>/config/paused`), with the reason:
    /// nothing destructive starts or continues for any node.
    pub paused: Option<String>,
    /// The node's power as read by the last [`Action::CheckPower`]
    /// (`Unknown` when the read failed).
    pub power: Option<PowerState>,
    /// The node's nova-compute service as last read (or as the last
    /// successful force-down left it); `None` = unknown.
    pub nova_service: Option<NovaService>,
    /// The claimed HA node's nova-compute service as last read (or as the
    /// last successful prepare left it); `None` = unknown.
    pub ha_service: Option<NovaService>,
    /// The evidence of a successful [`Action::Fence`].
    pub fenced: Option<Fenced>,
    /// The result of a successful [`Action::ListInstances`].
    pub instances: Option<Vec<Instance>>,
    /// Where instances stand, from [`Action::Poll`] (or any fresh read).
    pub progress: BTreeMap<String, InstanceProgress>,
    /// Instances whose progress read of the last [`Action::Poll`] failed.
    pub progress_errors: BTreeSet<String>,
    /// Evacuate calls of the last [`Action::Evacuate`] that failed, by
    /// instance id. A retryable failure is an unknown outcome: the instance
    /// is polled, never re-sent.
    pub evacuate_failures: BTreeMap<String, Failure>,
    /// Start calls of the last [`Action::RestorePowerState`] that failed.
    pub start_failures: BTreeMap<String, Failure>,
    /// The last whole-step action that failed.
    pub failure: Option<(Step, Failure)>,
    /// True when the last [`Action::Notify`] was accepted (sent or queued).
    pub notified: bool,
    /// The claimed HA node's capacity as Placement reported it (read by the
    /// runner before an evacuate batch); `None` = unknown: pending
    /// instances go to the HA node unchecked.
    pub ha_capacity: Option<HostCapacity>,
}

impl Observation {
    /// An observation with no action results yet.
    pub fn new(node: NodeName, epoch: impl Into<String>, flags: NodeFlags) -> Self {
        Self {
            node,
            epoch: epoch.into(),
            flags,
            ha_nodes: Vec::new(),
            mass_failure: false,
            judged: false,
            node_healthy: false,
            paused: None,
            power: None,
            nova_service: None,
            ha_service: None,
            fenced: None,
            instances: None,
            progress: BTreeMap::new(),
            progress_errors: BTreeSet::new(),
            evacuate_failures: BTreeMap::new(),
            start_failures: BTreeMap::new(),
            failure: None,
            notified: false,
            ha_capacity: None,
        }
    }
}

/// A batch of evacuations the runner may send. It can only be built from a
/// record that holds fence evidence, and it hands that evidence back as the
/// [`Fenced`] value the evacuator requires: an unfenced node cannot be
/// evacuated by construction (rule 1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EvacuateOrder {
    node: NodeName,
    fence: FenceRecord,
    /// The claimed HA node, or `None` for the scheduler.
    pub target: Option<NodeName>,
    /// Instances of the batch that go to the scheduler even though an HA
    /// node is claimed (they did not fit there); see [`Self::target_for`].
    pub scheduler: std::collections::BTreeSet<String>,
    /// The instances to evacuate, rebuilt from the record (host = the failed
    /// node, status = the status when listed). Each is already recorded
    /// `requested`: send each exactly once, never again.
    pub instances: Vec<Instance>,
}

impl EvacuateOrder {
    /// The order for `ids` of `record`, or `None` when the record holds no
    /// fence evidence. Private: only [`decide`] builds orders.
    fn new(node: &NodeName, record: &RecoveryRecord, ids: &[String]) -> Option<Self> {
        let fence = record.fence.clone()?;
        let instances = ids
            .iter()
            .filter_map(|id| {
                record.instances.get(id).map(|i| Instance {
                    id: id.clone(),
                    name: i.name.clone().unwrap_or_default(),
                    status: i.prior_status.clone(),
                    host: node.to_string(),
                    user_id: i.owner.clone().unwrap_or_default(),
                    project_id: i.project.clone().unwrap_or_default(),
                    metadata: BTreeMap::new(),
                    ..Instance::default()
                })
            })
            .collect();
        let scheduler = ids
            .iter()
            .filter(|id| record.instances.get(*id).is_some_and(|i| i.via_scheduler))
            .cloned()
            .collect();
        Some(Self {
            node: node.clone(),
            fence,
            target: record.ha_node.clone(),
            scheduler,
            instances,
        })
    }

    /// Where instance `id` of the batch goes: the claimed HA node, or
    /// `None` for the scheduler.
    pub fn target_for(&self, id: &str) -> Option<&NodeName> {
        self.target
            .as_ref()
            .filter(|_| !self.scheduler.contains(id))
    }

    /// The fence evidence to pass to `Evacuator::evacuate`.
    pub fn fenced(&self) -> Fenced {
        Fenced::from_record(self.node.clone(), &self.fence)
    }

    /// The failed node.
    pub fn node(&self) -> &NodeName {
        &self.node
    }

    /// The instance ids of the batch.
    pub fn ids(&self) -> Vec<&str> {
        self.instances.iter().map(|i| i.id.as_str()).collect()
    }
}

/// Why nothing is done now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WaitReason {
    /// A value of the node does not parse: an operator must fix it.
    InvalidState,
    /// The mass-failure guard tripped: nothing is claimed or fenced.
    MassFailure,
    /// Policy `ha_node` and every HA node is in use (or invalid).
    NoFreeHaNode,
    /// A step failed and its retry is not due yet.
    Backoff(Step),
    /// The node's nova-compute service is not known (not read or not in Nova).
    NovaServiceUnknown,
    /// The claimed HA node's nova-compute service is not known.
    HaServiceUnknown,
    /// The node is in maintenance (`config/maintenance`).
    Maintenance,
    /// The cluster is paused (`<prefix>/config/paused`).
    Paused,
    /// This leader has not judged the cluster yet (no monitor read yet).
    NotJudged,
    /// The fenced node's power read anything but off before an evacuate
    /// batch: it is fenced again first.
    FenceLost,
    /// The node reads healthy again before it was fenced: an operator
    /// decides (reset it, or stop it so that the recovery goes on).
    NodeHealthy,
    /// Policy `ha_node`: pending instances do not fit in the room Placement
    /// reports on the claimed HA node (the record's `last_error` says which).
    NoRoom,
}

impl fmt::Display for WaitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaitReason::InvalidState => f.write_str("invalid-state"),
            WaitReason::MassFailure => f.write_str("mass-failure"),
            WaitReason::NoFreeHaNode => f.write_str("no-free-ha-node"),
            WaitReason::Backoff(step) => write!(f, "backoff {step}"),
            WaitReason::NovaServiceUnknown => f.write_str("nova-service-unknown"),
            WaitReason::HaServiceUnknown => f.write_str("ha-service-unknown"),
            WaitReason::Maintenance => f.write_str("maintenance"),
            WaitReason::Paused => f.write_str("paused"),
            WaitReason::NotJudged => f.write_str("not-judged"),
            WaitReason::FenceLost => f.write_str("fence-lost"),
            WaitReason::NodeHealthy => f.write_str("node-healthy"),
            WaitReason::NoRoom => f.write_str("no-room-on-ha-node"),
        }
    }
}

/// The next thing the runner does for one node. Every action is safe to
/// repeat after a crash except [`Action::Evacuate`], which the record makes
/// safe: its instances are `requested` before the call and never re-sent.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Nothing to do for this node (not failed, done, or latched by someone
    /// else).
    Idle,
    /// Commit the ops (the `recovered=True` latch, the HA node's `in_use` and
    /// `serving`, the new record) as one transaction; that is the whole step.
    /// A CAS conflict means another claim won: re-read and decide again.
    Claim {
        /// The claimed HA node, `None` = the scheduler.
        ha_node: Option<NodeName>,
    },
    /// Fence the node (power off, verified off), then feed the evidence or
    /// the error back.
    Fence,
    /// Read the fenced node's power once, changing nothing, and feed the
    /// reading back ([`Observation::power`]; a failed read is `Unknown`).
    /// Comes before every evacuate batch: anything but `Off` means the node
    /// is fenced again before any further evacuation.
    CheckPower,
    /// Force the node's nova-compute service down and disable it with
    /// `reason` (it carries the epoch).
    ForceDown {
        /// The service id.
        service_id: String,
        /// The disabled reason.
        reason: String,
    },
    /// List every instance on the node (all tenants, every page).
    ListInstances,
    /// Enable the claimed HA node's nova-compute service.
    PrepareTarget {
        /// The HA node.
        ha_node: NodeName,
        /// Its service id.
        service_id: String,
    },
    /// Commit the ops (the claimed HA node given up, another claimed or the
    /// scheduler taken instead); that is the whole step.
    Retarget {
        /// The spare given up.
        from: NodeName,
        /// The spare claimed instead, `None` = the scheduler.
        to: Option<NodeName>,
    },
    /// Send one evacuate per instance of the order, bounded by concurrency,
    /// each exactly once; feed failures back.
    Evacuate(EvacuateOrder),
    /// Wait `after`, then read where these instances stand and feed it back.
    Poll {
        /// The instance ids.
        instances: Vec<String>,
        /// How long to wait first.
        after: Duration,
    },
    /// Start these instances: they were ACTIVE and landed SHUTOFF.
    RestorePowerState {
        /// The instance ids.
        instances: Vec<String>,
    },
    /// Tell owners and admins (through the outbox); feed back acceptance.
    Notify(IncidentReport),
    /// Commit the ops (record `done` + its copy under `incidents/<id>`).
    /// The HA node stays `in_use` until the administrator's reset.
    Finish {
        /// The incident id.
        incident: String,
    },
    /// Administrator's reset, Nova half: clear the force-down and/or enable
    /// the node's service.
    RestoreService {
        /// The service id.
        service_id: String,
        /// Clear `forced_down`.
        unforce: bool,
        /// Enable the service.
        enable: bool,
    },
    /// Administrator's reset, K/V half: commit the ops (`number_fails=0`,
    /// `awaiting_up=True` so that detection counts nothing until Nova
    /// reports the node up once, record removed after its copy to
    /// `incidents/<id>`, the HA node released if configured); log and count
    /// it. `failed`/`recovered` are never touched.
    Reset {
        /// The incident id.
        incident: String,
        /// The HA nodes released (the claimed one and any given up before).
        released: Vec<NodeName>,
    },
    /// Do nothing now; decide again after `retry_after`.
    Wait {
        /// Why.
        reason: WaitReason,
        /// When to decide again.
        retry_after: Duration,
        /// An operator should be alerted (log at ERROR, count it).
        alert: bool,
    },
    /// The recovery cannot progress without an operator (alert).
    Stuck {
        /// Why.
        reason: String,
    },
    /// Dry-run mode: what would have been done; nothing is written or done.
    DryRun(Box<Action>),
}

impl Action {
    /// True for the actions that change the world (or write): the ones a
    /// dry run suppresses.
    pub fn acts(&self) -> bool {
        !matches!(
            self,
            Action::Idle
                | Action::Wait { .. }
                | Action::Stuck { .. }
                | Action::Poll { .. }
                | Action::CheckPower
                | Action::DryRun(_)
        )
    }
}

impl Action {
    /// True for the actions that change the world through a peer (the BMC
    /// or Nova): the runner proves it still holds the lease right before
    /// carrying one out (rule 11).
    pub fn destructive(&self) -> bool {
        matches!(
            self,
            Action::Fence
                | Action::ForceDown { .. }
                | Action::PrepareTarget { .. }
                | Action::Evacuate(_)
                | Action::RestorePowerState { .. }
                | Action::RestoreService { .. }
        )
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let target =
            |t: &Option<NodeName>| t.as_ref().map_or("scheduler".to_owned(), |n| n.to_string());
        match self {
            Action::Idle => f.write_str("idle"),
            Action::Claim { ha_node } => write!(f, "claim {}", target(ha_node)),
            Action::Fence => f.write_str("fence"),
            Action::CheckPower => f.write_str("check-power"),
            Action::Retarget { from, to } => write!(f, "retarget {from} -> {}", target(to)),
            Action::ForceDown { service_id, reason } => {
                write!(f, "force-down {service_id} ({reason})")
            }
            Action::ListInstances => f.write_str("list-instances"),
            Action::PrepareTarget {
                ha_node,
                service_id,
            } => {
                write!(f, "prepare-target {ha_node} {service_id}")
            }
            Action::Evacuate(o) => {
                write!(f, "evacuate {} -> {}", o.ids().join(","), target(&o.target))?;
                if !o.scheduler.is_empty() && o.target.is_some() {
                    let ids: Vec<&str> = o.scheduler.iter().map(String::as_str).collect();
                    write!(f, " (scheduler: {})", ids.join(","))?;
                }
                Ok(())
            }
            Action::Poll { instances, after } => {
                write!(f, "poll {} after {after:?}", instances.join(","))
            }
            Action::RestorePowerState { instances } => write!(f, "start {}", instances.join(",")),
            Action::Notify(r) => write!(f, "notify {}", r.incident),
            Action::Finish { incident } => write!(f, "finish {incident}"),
            Action::RestoreService {
                service_id,
                unforce,
                enable,
            } => write!(
                f,
                "restore-service {service_id} unforce={unforce} enable={enable}"
            ),
            Action::Reset { incident, released } => {
                write!(f, "reset {incident}")?;
                for h in released {
                    write!(f, " release {h}")?;
                }
                Ok(())
            }
            Action::Wait {
                reason,
                retry_after,
                alert,
            } => {
                write!(f, "wait {reason} {retry_after:?}")?;
                if *alert {
                    f.write_str(" alert")?;
                }
                Ok(())
            }
            Action::Stuck { reason } => write!(f, "stuck: {reason}"),
            Action::DryRun(a) => write!(f, "dry-run: {a}"),
        }
    }
}

/// What [`decide`] returns: the K/V writes to commit first (one guarded
/// transaction, every op with its CAS index), then the action.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// Commit these first, as one transaction. Empty = nothing to write. If
    /// the commit fails, skip the action, re-read and decide again.
    pub ops: Vec<KvOp>,
    /// The record once `ops` landed (`None` when there is none, e.g. after a
    /// reset); the runner may keep it for the next round instead of
    /// re-reading.
    pub record: Option<RecoveryRecord>,
    /// What to do next.
    pub action: Action,
}

#[cfg(test)]
pub(crate) mod model;
#[cfg(test)]
mod props;
#[cfg(test)]
mod scenarios;
