//! The monitor's judgement (docs/recovery.md, "Detection: `detect::judge`")
//! as a pure function.
//!
//! Each cycle the monitor reads the whole K/V tree once ([`ClusterState`])
//! and Nova's nova-compute services once (plus the optional extra signals),
//! then calls [`judge`]. The result is a plan: the K/V writes to commit (each
//! node's writes as one guarded transaction, every op carrying the CAS index
//! it was read at) and the events to log and count. No I/O happens here.
//!
//! What the judgement must never do:
//! - judge anything when Nova could not be reached (a blind monitor counts
//!   no failures);
//! - write `failed` or `recovered` as `False` except when creating a key that
//!   does not exist yet (rule 5: only an administrator resets them);
//! - write anything of a node with a value it cannot parse (rule 6);
//! - set `failed=True` for anyone while the mass-failure guard is tripped
//!   (rule 7);
//! - count a failure of a node an administrator has just reset before Nova
//!   reported it up once (`internal/awaiting_up`), within the reset grace:
//!   a restarted nova-compute reads `down` until its first heartbeat, and
//!   counting that would fence and evacuate a repaired, living node.
//!
//! ## After an administrator's reset
//!
//! The recovery's reset writes `internal/awaiting_up=True` in the same
//! transaction that clears `number_fails` and archives the record. While it
//! is True and Nova reports the node down, the node is not counted
//! ([`DetectEvent::AwaitingUp`]); the first cycle that judges it that way
//! writes `internal/awaiting_up_since` (the grace starts). The first cycle
//! Nova reports it up (`state=up`, not forced down) sets the flag False
//! ([`DetectEvent::UpAfterReset`]) and normal counting resumes. A node that
//! never comes up is counted again once the grace ([`ResetGrace`]) has run
//! out ([`DetectEvent::ResetGraceExpired`]): an operator who reset a node
//! that is still dead gets it recovered, late. Between the operator's flags
//! and the runner's reset (flags False, record still present) the node is
//! not judged at all ([`SkipReason::ResetPending`]).
//!
//! ## Heartbeat ages and degraded nodes
//!
//! With `[monitor.nova] stale_after` set, the monitor also names the nodes
//! whose heartbeat is older than that by Nova's clock ([`judge_with`]'s
//! `stale`): their `nova` signal reads [`NovaReading::Stale`], which fails
//! like `down`. Agreement stays the rule: a node fails a cycle only when
//! every configured signal says failed, so a stale node whose Consul agent
//! or sshd answers is never counted.
//!
//! A judged node (not skipped, not invalid) is **degraded** when its
//! configured signals disagree: at least one reads failed and at least one
//! healthy ([`NodeSignals::disagreement`]). Examples: Nova reads it down or
//! stale while its Consul checks pass or its port answers (nova-compute
//! died on a living host); Nova reads it up while every configured Consul
//! check is critical (its agent died). Degraded never counts, fences or
//! resets anything by itself; it is reported: `internal/degraded` holds the
//! readings (`nova=stale consul=healthy tcp=healthy`) while it lasts, and
//! the judgement writes or deletes it, with an event, only when the
//! readings change, so the caller logs each change once.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;

use crate::kv::{ClusterState, ComputeNodeState, InvalidValue, Schema, format_bool, format_time};
use crate::store::KvOp;
use crate::types::NodeName;

/// The detection thresholds from `[monitor]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Thresholds {
    /// A node is failed once `number_fails > threshold`.
    pub threshold: u32,
    /// The mass-failure guard trips when more than this fraction (0..=1) of
    /// the monitored nodes fail in the same cycle.
    pub max_failed_fraction: f64,
    /// The guard also trips when more than this many nodes fail in the same
    /// cycle; `None` = no absolute limit.
    pub max_failed_nodes: Option<usize>,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            threshold: 3,
            max_failed_fraction: 0.5,
            max_failed_nodes: None,
        }
    }
}

/// One nova-compute service as Nova's os-services reported it this cycle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NovaService {
    /// The service id (what force-down and enable are called with).
    pub id: String,
    /// `state == "up"`.
    pub up: bool,
    /// `status == "enabled"`.
    pub enabled: bool,
    /// `forced_down` (Nova then reports the state as down).
    pub forced_down: bool,
}

/// Everything observed about one compute node this cycle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodeSignals {
    /// Its nova-compute service.
    pub nova: NovaService,
    /// The Consul signal: `Some(true)` when every configured health check of
    /// the node is critical, `Some(false)` when any passes, `None` when the
    /// signal is not configured.
    pub consul_failed: Option<bool>,
    /// The TCP/SSH probe: `Some(true)` when the connection failed,
    /// `Some(false)` when it succeeded, `None` when not configured.
    pub tcp_failed: Option<bool>,
}

/// What the `nova` signal reads of one node this cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NovaReading {
    /// `state=up`, not forced down, and (with `[monitor.nova] stale_after`)
    /// a heartbeat younger than that.
    Up,
    /// `state=up`, but the heartbeat (`updated_at`) is older than
    /// `[monitor.nova] stale_after` by Nova's own clock: its nova-compute
    /// stopped reporting before Nova's `service_down_time` ran out.
    Stale,
    /// `state=down`, or forced down.
    Down,
}

impl NovaReading {
    /// The reading of `service`; `stale` is the monitor's heartbeat-age
    /// verdict (always false without `stale_after`).
    pub fn of(service: &NovaService, stale: bool) -> Self {
        if !service.up || service.forced_down {
            Self::Down
        } else if stale {
            Self::Stale
        } else {
            Self::Up
        }
    }

    /// True when the `nova` signal says the node failed.
    pub fn failed(self) -> bool {
        self != Self::Up
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Stale => "stale",
            Self::Down => "down",
        }
    }
}

/// The readings of a node whose configured signals disagree: at least one
/// says failed and at least one says healthy. Such a node is never counted
/// as failing (agreement is the rule), but an operator should look at it:
/// a nova-compute that died on a living host, a Consul agent that died
/// under a working nova-compute. Its `Display` is what
/// `internal/degraded` holds: `nova=stale consul=healthy tcp=healthy`
/// (signals not configured or not probed are left out).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Disagreement {
    /// The `nova` signal.
    pub nova: NovaReading,
    /// The `consul` signal (`None`: not configured).
    pub consul_failed: Option<bool>,
    /// The `tcp` signal (`None`: not configured or not probed).
    pub tcp_failed: Option<bool>,
}

impl fmt::Display for Disagreement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let word = |failed: bool| if failed { "failed" } else { "healthy" };
        write!(f, "nova={}", self.nova.as_str())?;
        if let Some(c) = self.consul_failed {
            write!(f, " consul={}", word(c))?;
        }
        if let Some(t) = self.tcp_failed {
            write!(f, " tcp={}", word(t))?;
        }
        Ok(())
    }
}

impl NodeSignals {
    /// True when every configured signal says the node failed: Nova reports
    /// it down (or forced down) and no extra signal says it is healthy.
    /// Heartbeat ages are not considered: see [`NodeSignals::all_failed_with`].
    pub fn all_failed(&self) -> bool {
        self.all_failed_with(false)
    }

    /// As [`NodeSignals::all_failed`], with the monitor's heartbeat-age
    /// verdict: a `stale` node fails the `nova` signal even while Nova
    /// still reports it up.
    pub fn all_failed_with(&self, stale: bool) -> bool {
        NovaReading::of(&self.nova, stale).failed()
            && self.consul_failed != Some(false)
            && self.tcp_failed != Some(false)
    }

    /// The node's readings when its configured signals disagree (one says
    /// failed, another healthy), else `None`. Pure; `stale` as in
    /// [`NodeSignals::all_failed_with`].
    pub fn disagreement(&self, stale: bool) -> Option<Disagreement> {
        let nova = NovaReading::of(&self.nova, stale);
        let readings = [Some(nova.failed()), self.consul_failed, self.tcp_failed];
        let any_failed = readings.contains(&Some(true));
        let any_healthy = readings.contains(&Some(false));
        (any_failed && any_healthy).then_some(Disagreement {
            nova,
            consul_failed: self.consul_failed,
            tcp_failed: self.tcp_failed,
        })
    }
}

/// Why a node Nova knows was not judged this cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// Its nova-compute service is disabled (a spare HA node, a node an
    /// operator took out, or one novaha already forced down).
    Disabled,
    /// The node is in maintenance
    /// ([`ComputeNodeState::in_maintenance`]: `config/maintenance` True and
    /// its `maintenance_until`, if any, not reached yet).
    Maintenance,
    /// An administrator reset its flags (`failed=False`, `recovered=False`)
    /// and the recovery runner has not applied the reset yet (the record is
    /// still there): nothing is counted until it has.
    ResetPending,
}

/// Something the monitor should log (and count) about this cycle.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum DetectEvent {
    /// Nova (or Keystone) could not be reached: nothing was judged.
    NovaUnreachable,
    /// A node Nova reports that had no keys yet; its keys are created.
    Discovered {
        /// The node.
        node: NodeName,
    },
    /// A node with at least one value that does not parse: skipped, nothing
    /// of it written. An operator must fix the values.
    Invalid {
        /// The node.
        node: NodeName,
        /// Every invalid value of it.
        errors: Vec<InvalidValue>,
    },
    /// A node not judged this cycle.
    Skipped {
        /// The node.
        node: NodeName,
        /// Why.
        reason: SkipReason,
    },
    /// A node that failed this cycle's check.
    Failing {
        /// The node.
        node: NodeName,
        /// Its count after this cycle.
        number_fails: u32,
    },
    /// A node that had failed checks answered again: its count is reset.
    Healthy {
        /// The node.
        node: NodeName,
        /// The count before the reset.
        previous_fails: u32,
    },
    /// A node is judged failed: `failed=True` is written.
    Failed {
        /// The node.
        node: NodeName,
        /// Its count.
        number_fails: u32,
    },
    /// Too many nodes fail at once: the network or the control plane is
    /// suspected, counting goes on but nobody is judged failed.
    GuardTripped {
        /// The nodes failing this cycle.
        failing: Vec<NodeName>,
        /// How many nodes were judged this cycle.
        monitored: usize,
        /// The nodes that crossed the threshold but were not marked failed.
        held_back: Vec<NodeName>,
    },
    /// A node in the K/V tree that Nova does not report: left alone.
    UnknownToNova {
        /// The node.
        node: NodeName,
    },
    /// A node an administrator reset reads down: its failures are not
    /// counted until Nova reports it up once (or the grace runs out).
    AwaitingUp {
        /// The node.
        node: NodeName,
        /// When the grace started (`None` before the first such cycle).
        since: Option<DateTime<Utc>>,
        /// True on the first cycle that judged it so (log it once).
        first: bool,
    },
    /// A node an administrator reset is reported up by Nova: the wait ends,
    /// counting resumes from now.
    UpAfterReset {
        /// The node.
        node: NodeName,
    },
    /// A node an administrator reset never came up within the reset grace:
    /// its failures are counted again from this cycle.
    ResetGraceExpired {
        /// The node.
        node: NodeName,
        /// When the grace started.
        since: DateTime<Utc>,
    },
    /// A judged node's signals disagree, and did not (or differently) at
    /// the last cycle: `internal/degraded` is written. Emitted once per
    /// change, never every cycle. The node is not counted as failing.
    Degraded {
        /// The node.
        node: NodeName,
        /// What each signal reads now.
        readings: Disagreement,
        /// What `internal/degraded` held before (`None`: not degraded).
        previous: Option<String>,
    },
    /// A node that was degraded no longer is (its signals agree again, or
    /// it is no longer judged: disabled, in maintenance): `internal/degraded`
    /// is deleted.
    DegradedCleared {
        /// The node.
        node: NodeName,
        /// What `internal/degraded` held.
        previous: String,
    },
}

/// The bound of the wait after an administrator's reset, and the time of
/// this cycle to measure it with. The caller reads the clock; [`judge_at`]
/// stays pure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResetGrace {
    /// This cycle's time.
    pub now: DateTime<Utc>,
    /// How long a reset node may read down without being counted
    /// (`[recovery] reset_grace`); zero turns the wait off.
    pub grace: Duration,
}

impl ResetGrace {
    /// True when a wait that started at `since` is over.
    fn expired(&self, since: DateTime<Utc>) -> bool {
        let end = TimeDelta::from_std(self.grace)
            .ok()
            .and_then(|g| since.checked_add_signed(g))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        self.now >= end
    }
}

/// The writes for one node: commit them as one guarded transaction, so a
/// CAS conflict on one node never holds back the others.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeWrite {
    /// The node the ops belong to.
    pub node: NodeName,
    /// The ops, each with the CAS index it was read at (0 = create only).
    pub ops: Vec<KvOp>,
}

/// The outcome of one cycle's judgement.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Judgement {
    /// Per-node writes, in node order; nodes with nothing to write are absent.
    pub writes: Vec<NodeWrite>,
    /// What to log and count, in node order.
    pub events: Vec<DetectEvent>,
    /// True when the mass-failure guard tripped: the recovery must not claim
    /// or fence anything this cycle either (pass it on as
    /// [`crate::recovery::Observation::mass_failure`]).
    pub mass_failure: bool,
}

impl Judgement {
    /// Every op of every node, in order (for tests and dry runs).
    pub fn all_ops(&self) -> impl Iterator<Item = &KvOp> {
        self.writes.iter().flat_map(|w| w.ops.iter())
    }
}

enum Verdict {
    Failing,
    Healthy,
    Skipped(SkipReason),
    /// Reads down after an administrator's reset, within the grace: not
    /// counted.
    AwaitingUp,
}

/// What becomes of a node's `awaiting_up` flag this cycle.
enum Await {
    /// Not awaiting (or nothing to change).
    Keep,
    /// Nova reports it up: the flag is cleared.
    Up,
    /// The grace started at `since` ran out: the flag is cleared.
    Expired(DateTime<Utc>),
    /// Down, within the grace (`since`: when it started, if it has).
    Waiting(Option<DateTime<Utc>>),
}

/// True when the administrator reset the flags and the runner has not yet
/// applied the reset (the record is still there).
fn reset_pending(st: &ComputeNodeState) -> bool {
    matches!(
        st.condition(),
        crate::kv::NodeCondition::ResetPending { .. }
    )
}

/// Where a node awaiting up after a reset stands this cycle.
fn awaiting(
    st: Option<&ComputeNodeState>,
    signals: &NodeSignals,
    stale: bool,
    clock: Option<&ResetGrace>,
) -> Await {
    let Some(st) = st.filter(|st| st.awaiting_up.get() == Some(true)) else {
        return Await::Keep;
    };
    // A stale heartbeat is not "up": the wait goes on.
    if NovaReading::of(&signals.nova, stale) == NovaReading::Up {
        return Await::Up;
    }
    let since = st.awaiting_up_since.value.clone().ok().flatten();
    match (since, clock) {
        (Some(since), Some(c)) if c.expired(since) => Await::Expired(since),
        (since, _) => Await::Waiting(since),
    }
}

/// Judges one cycle with no clock: a node awaiting up after a reset waits
/// for Nova without a time bound. See [`judge_at`].
pub fn judge(
    schema: &Schema,
    state: &ClusterState,
    nova: Option<&BTreeMap<NodeName, NodeSignals>>,
    thresholds: &Thresholds,
) -> Judgement {
    judge_at(schema, state, nova, thresholds, None)
}

/// Judges one cycle with no heartbeat ages (`[monitor.nova] stale_after`
/// unset): [`judge_with`] with no stale node.
pub fn judge_at(
    schema: &Schema,
    state: &ClusterState,
    nova: Option<&BTreeMap<NodeName, NodeSignals>>,
    thresholds: &Thresholds,
    clock: Option<&ResetGrace>,
) -> Judgement {
    judge_with(schema, state, nova, &BTreeSet::new(), thresholds, clock)
}

/// Judges one cycle. `nova` is `None` when Nova (or Keystone) could not be
/// reached: then nothing is judged and nothing is written. Otherwise it maps
/// each host Nova reports to what was observed about it. `stale` names the
/// nodes whose heartbeat the monitor found older than `[monitor.nova]
/// stale_after` (empty when unset: then the judgement is exactly
/// [`judge_at`]'s): their `nova` signal reads failed even while Nova still
/// reports them up; like any signal it counts only when every other
/// configured signal agrees, and the mass-failure guard sees them as it sees
/// any failing node. `clock` bounds the wait after an administrator's reset
/// (`None` = wait for Nova, unbounded).
///
/// A judged node whose signals disagree is reported as degraded
/// ([`NodeSignals::disagreement`]): its `internal/degraded` key holds the
/// readings while it lasts, written and deleted only when they change, with
/// a [`DetectEvent::Degraded`] or [`DetectEvent::DegradedCleared`] event.
///
/// Pure and deterministic: the same inputs give the same plan.
pub fn judge_with(
    schema: &Schema,
    state: &ClusterState,
    nova: Option<&BTreeMap<NodeName, NodeSignals>>,
    stale: &BTreeSet<NodeName>,
    thresholds: &Thresholds,
    clock: Option<&ResetGrace>,
) -> Judgement {
    let Some(nova) = nova else {
        return Judgement {
            events: vec![DetectEvent::NovaUnreachable],
            ..Judgement::default()
        };
    };
    let mut out = Judgement::default();

    // First pass: a verdict per node, so the guard can see the whole window.
    let mut verdicts: BTreeMap<&NodeName, (Verdict, Await)> = BTreeMap::new();
    // Nodes not judged (maintenance, an invalid value) whose every signal
    // fails: still evidence of a partition, so they count for the guard. A
    // disabled node (one already recovered and forced down) does not.
    let mut silent_unjudged = 0;
    // Without a clock a maintenance's end time is not applied: the switch
    // alone decides (the safe side). One test for both uses below: a node
    // judged because its maintenance ended must not also count as silent
    // in maintenance.
    let in_maintenance = |st: &ComputeNodeState| match clock {
        Some(c) => st.in_maintenance(c.now),
        None => st.maintenance.get() != Some(false),
    };
    for (node, signals) in nova {
        let stored = state.compute_nodes.get(node);
        let silent = signals.nova.enabled && signals.all_failed_with(stale.contains(node));
        if stored.is_some_and(|st| st.has_invalid() || in_maintenance(st)) && silent {
            silent_unjudged += 1;
        }
        if let Some(st) = stored
            && st.has_invalid()
        {
            out.events.push(DetectEvent::Invalid {
                node: node.clone(),
                errors: st.invalid.clone(),
            });
            continue;
        }
        if stored.is_some_and(in_maintenance) {
            verdicts.insert(
                node,
                (Verdict::Skipped(SkipReason::Maintenance), Await::Keep),
            );
            continue;
        }
        if stored.is_some_and(reset_pending) {
            // The runner's reset will rewrite awaiting_up: leave it alone.
            verdicts.insert(
                node,
                (Verdict::Skipped(SkipReason::ResetPending), Await::Keep),
            );
            continue;
        }
        // Nova reporting the node up ends the wait even while its service
        // is still disabled: its heartbeat is fresh.
        let is_stale = stale.contains(node);
        let wait = awaiting(stored, signals, is_stale, clock);
        let verdict = if !signals.nova.enabled {
            Verdict::Skipped(SkipReason::Disabled)
        } else if signals.all_failed_with(is_stale) {
            if matches!(wait, Await::Waiting(_)) {
                Verdict::AwaitingUp
            } else {
                Verdict::Failing
            }
        } else {
            Verdict::Healthy
        };
        // Only a judged node's grace starts or ends.
        let wait = match (&verdict, wait) {
            (Verdict::Skipped(_), Await::Waiting(_) | Await::Expired(_)) => Await::Keep,
            (Verdict::Healthy, Await::Waiting(_) | Await::Expired(_)) => Await::Keep,
            (_, w) => w,
        };
        verdicts.insert(node, (verdict, wait));
    }
    // A node awaiting up is monitored but not failing: it never trips the
    // guard (nor counts towards a mass failure).
    let monitored = verdicts
        .values()
        .filter(|(v, _)| !matches!(v, Verdict::Skipped(_)))
        .count();
    let failing: Vec<NodeName> = verdicts
        .iter()
        .filter(|(_, (v, _))| matches!(v, Verdict::Failing))
        .map(|(n, _)| (*n).clone())
        .collect();
    let guard = guard_trips(
        failing.len() + silent_unjudged,
        monitored + silent_unjudged,
        thresholds,
    );
    out.mass_failure = guard;

    // Second pass: the writes.
    let mut held_back = Vec::new();
    for (node, (verdict, wait)) in &verdicts {
        let stored = state.compute_nodes.get(*node);
        let mut ops = Vec::new();
        let since_index = stored.map_or(0, |s| s.awaiting_up_since.modify_index);
        let await_index = stored.map_or(0, |s| s.awaiting_up.modify_index);
        match wait {
            Await::Keep => {}
            Await::Up | Await::Expired(_) => {
                ops.push(KvOp::set(
                    schema.awaiting_up(node),
                    format_bool(false),
                    await_index,
                ));
                if since_index != 0 {
                    ops.push(KvOp::Delete {
                        key: schema.awaiting_up_since(node),
                        cas: since_index,
                    });
                }
                out.events.push(match wait {
                    Await::Expired(since) => DetectEvent::ResetGraceExpired {
                        node: (*node).clone(),
                        since: *since,
                    },
                    _ => DetectEvent::UpAfterReset {
                        node: (*node).clone(),
                    },
                });
            }
            Await::Waiting(since) => {
                if since.is_none()
                    && let Some(c) = clock
                {
                    ops.push(KvOp::set(
                        schema.awaiting_up_since(node),
                        format_time(c.now),
                        since_index,
                    ));
                }
                out.events.push(DetectEvent::AwaitingUp {
                    node: (*node).clone(),
                    since: *since,
                    first: since.is_none(),
                });
            }
        }
        if stored.is_none() {
            out.events.push(DetectEvent::Discovered {
                node: (*node).clone(),
            });
        }
        let current = stored.and_then(|s| s.number_fails.get()).unwrap_or(0);
        let nf_index = stored.map_or(0, |s| s.number_fails.modify_index);
        let failed_now = stored.and_then(|s| s.failed.get()).unwrap_or(false);
        let mut set_failed = false;
        let next = match verdict {
            Verdict::Skipped(reason) => {
                out.events.push(DetectEvent::Skipped {
                    node: (*node).clone(),
                    reason: *reason,
                });
                current
            }
            Verdict::AwaitingUp => current,
            Verdict::Healthy => {
                if current > 0 {
                    out.events.push(DetectEvent::Healthy {
                        node: (*node).clone(),
                        previous_fails: current,
                    });
                }
                0
            }
            Verdict::Failing => {
                let next = current.saturating_add(1);
                out.events.push(DetectEvent::Failing {
                    node: (*node).clone(),
                    number_fails: next,
                });
                if next > thresholds.threshold && !failed_now {
                    if guard {
                        held_back.push((*node).clone());
                    } else {
                        set_failed = true;
                        out.events.push(DetectEvent::Failed {
                            node: (*node).clone(),
                            number_fails: next,
                        });
                    }
                }
                next
            }
        };
        if next != current || nf_index == 0 {
            ops.push(KvOp::set(
                schema.number_fails(node),
                next.to_string(),
                nf_index,
            ));
        }
        let failed_index = stored.map_or(0, |s| s.failed.modify_index);
        if set_failed {
            ops.push(KvOp::set(
                schema.failed(node),
                format_bool(true),
                failed_index,
            ));
        } else if failed_index == 0 {
            // Creation only (CAS 0): never a reset of an existing value.
            ops.push(KvOp::set(schema.failed(node), format_bool(false), 0));
        }
        if stored.is_none_or(|s| s.recovered.modify_index == 0) {
            ops.push(KvOp::set(schema.recovered(node), format_bool(false), 0));
        }
        // The degraded report: only a judged node can be degraded.
        let readings = match verdict {
            Verdict::Skipped(_) => None,
            _ => nova
                .get(*node)
                .and_then(|s| s.disagreement(stale.contains(*node))),
        };
        let (previous, degraded_index) = stored.map_or((None, 0), |s| {
            (
                s.degraded.value.clone().ok().flatten(),
                s.degraded.modify_index,
            )
        });
        match (readings, previous) {
            (Some(now), previous) if previous.as_deref() != Some(now.to_string().as_str()) => {
                ops.push(KvOp::set(
                    schema.degraded(node),
                    now.to_string(),
                    degraded_index,
                ));
                out.events.push(DetectEvent::Degraded {
                    node: (*node).clone(),
                    readings: now,
                    previous,
                });
            }
            (Some(_), _) => {}
            (None, previous) => {
                if degraded_index != 0 {
                    ops.push(KvOp::Delete {
                        key: schema.degraded(node),
                        cas: degraded_index,
                    });
                }
                if let Some(previous) = previous {
                    out.events.push(DetectEvent::DegradedCleared {
                        node: (*node).clone(),
                        previous,
                    });
                }
            }
        }
        if !ops.is_empty() {
            out.writes.push(NodeWrite {
                node: (*node).clone(),
                ops,
            });
        }
    }
    if guard {
        out.events.push(DetectEvent::GuardTripped {
            failing,
            monitored,
            held_back,
        });
    }
    for node in state.compute_nodes.keys() {
        if !nova.contains_key(node) {
            out.events
                .push(DetectEvent::UnknownToNova { node: node.clone() });
        }
    }
    out
}

/// True when `failing` nodes out of `monitored` is a mass failure. A single
/// failing node never is: one failure cannot be told apart from a network
/// problem by counting, and the guard exists for correlated failures.
pub fn guard_trips(failing: usize, monitored: usize, thresholds: &Thresholds) -> bool {
    if failing < 2 {
        return false;
    }
    let over_fraction = failing as f64 > thresholds.max_failed_fraction * monitored as f64;
    let over_count = thresholds.max_failed_nodes.is_some_and(|m| failing > m);
    over_fraction || over_count
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::{KvEntry, Snapshot};

    fn sig(up: bool, enabled: bool) -> NodeSignals {
        NodeSignals {
            nova: NovaService {
                id: "s".into(),
                up,
                enabled,
                forced_down: false,
            },
            consul_failed: None,
            tcp_failed: None,
        }
    }

    fn state(pairs: &[(&str, &str)]) -> (Schema, ClusterState) {
        let schema = Schema::new("t");
        let snap = Snapshot {
            index: 99,
            entries: pairs
                .iter()
                .enumerate()
                .map(|(i, (k, v))| {
                    (
                        format!("t/{k}"),
                        KvEntry {
                            value: Some(v.as_bytes().to_vec()),
                            modify_index: i as u64 + 1,
                        },
                    )
                })
                .collect(),
        };
        let st = ClusterState::parse(&schema, &snap);
        (schema, st)
    }

    fn ops_text(j: &Judgement) -> Vec<String> {
        j.all_ops()
            .map(|op| match op {
                KvOp::Set { key, value, cas } => {
                    format!("{key}={} cas={cas}", String::from_utf8_lossy(value))
                }
                KvOp::Delete { key, cas } => format!("delete {key} cas={cas}"),
            })
            .collect()
    }

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("valid timestamp")
            .with_timezone(&Utc)
    }

    fn clock(now: &str, grace_secs: u64) -> ResetGrace {
        ResetGrace {
            now: at(now),
            grace: Duration::from_secs(grace_secs),
        }
    }

    /// Up in Nova, with the given extra signals.
    fn up_with(consul: Option<bool>, tcp: Option<bool>) -> NodeSignals {
        let mut s = sig(true, true);
        s.consul_failed = consul;
        s.tcp_failed = tcp;
        s
    }

    #[test]
    fn degraded_is_disagreement_between_configured_signals() {
        let d = |s: &NodeSignals, stale: bool| s.disagreement(stale).map(|d| d.to_string());
        // Nova alone: nothing to disagree with.
        assert_eq!(d(&sig(false, true), false), None);
        assert_eq!(d(&sig(true, true), true), None);
        // Every signal agrees, either way: not degraded.
        assert_eq!(d(&up_with(Some(false), None), false), None);
        let mut all_down = sig(false, true);
        all_down.consul_failed = Some(true);
        all_down.tcp_failed = Some(true);
        assert_eq!(d(&all_down, false), None);
        // Disagreements, with what each signal read.
        assert_eq!(
            d(&up_with(Some(false), Some(false)), true).as_deref(),
            Some("nova=stale consul=healthy tcp=healthy")
        );
        assert_eq!(
            d(&up_with(Some(true), None), false).as_deref(),
            Some("nova=up consul=failed")
        );
        all_down.tcp_failed = Some(false);
        assert_eq!(
            d(&all_down, false).as_deref(),
            Some("nova=down consul=failed tcp=healthy")
        );
        let mut forced = up_with(None, Some(false));
        forced.nova.forced_down = true;
        assert_eq!(d(&forced, false).as_deref(), Some("nova=down tcp=healthy"));
    }

    /// The judgement with a stale set is the judgement of the same cycle
    /// with those nodes reading `state=down` instead (the degraded report
    /// aside, which says `stale` for `down`): staleness changes nothing but
    /// the nova signal, so with no stale node (`stale_after` unset) the
    /// counts, flags and guard are those of the observation alone.
    mod stale_is_down {
        use super::*;
        use proptest::prelude::*;

        fn signals() -> impl Strategy<Value = (bool, bool, bool, Option<bool>, Option<bool>, bool)>
        {
            (
                any::<bool>(),
                prop::bool::weighted(0.9),
                prop::bool::weighted(0.1),
                prop::option::of(any::<bool>()),
                prop::option::of(any::<bool>()),
                any::<bool>(),
            )
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(300))]
            #[test]
            fn stale_nodes_are_judged_as_down_ones(
                nodes in prop::collection::vec((signals(), 0u32..5, any::<bool>(), any::<bool>(), prop::option::of(0usize..3), prop::bool::weighted(0.2)), 1..6),
                threshold in 0u32..4,
                fraction in prop::sample::select(vec![0.3, 0.5, 1.0]),
            ) {
                let readings = ["nova=stale consul=healthy", "nova=up consul=failed", "nova=down tcp=healthy"];
                let mut pairs: Vec<(String, String)> = Vec::new();
                let mut with_stale = BTreeMap::new();
                let mut as_down = BTreeMap::new();
                let mut stale_nodes = BTreeSet::new();
                for (i, ((up, enabled, forced, consul, tcp, is_stale), fails, failed, awaiting, degraded, maintenance)) in nodes.iter().enumerate() {
                    let name = format!("c{i}");
                    if *maintenance {
                        pairs.push((format!("compute_nodes/{name}/config/maintenance"), "True".into()));
                    }
                    pairs.push((format!("compute_nodes/{name}/internal/number_fails"), fails.to_string()));
                    pairs.push((format!("compute_nodes/{name}/status/failed"), format_bool(*failed).into()));
                    pairs.push((format!("compute_nodes/{name}/internal/awaiting_up"), format_bool(*awaiting).into()));
                    if let Some(d) = degraded {
                        pairs.push((format!("compute_nodes/{name}/internal/degraded"), readings[*d].into()));
                    }
                    let s = NodeSignals {
                        nova: NovaService { id: name.clone(), up: *up, enabled: *enabled, forced_down: *forced },
                        consul_failed: *consul,
                        tcp_failed: *tcp,
                    };
                    let mut d = s.clone();
                    if *is_stale {
                        stale_nodes.insert(NodeName::from(name.as_str()));
                        d.nova.up = false;
                    }
                    with_stale.insert(NodeName::from(name.as_str()), s);
                    as_down.insert(NodeName::from(name.as_str()), d);
                }
                let refs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                let (schema, st) = state(&refs);
                // The down world's earlier reports said down where this one's said stale.
                let down_pairs: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.clone(), v.replace("nova=stale", "nova=down"))).collect();
                let down_refs: Vec<(&str, &str)> = down_pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                let (_, st_down) = state(&down_refs);
                let th = Thresholds { threshold, max_failed_fraction: fraction, max_failed_nodes: None };
                let c = clock("2026-11-21T03:00:00Z", 600);
                let a = judge_with(&schema, &st, Some(&with_stale), &stale_nodes, &th, Some(&c));
                let b = judge_at(&schema, &st_down, Some(&as_down), &th, Some(&c));
                // The degraded report may say stale where the other says
                // down (and so be rewritten where the other is not): leave
                // it out, and compare who is degraded instead.
                let norm = |j: &Judgement| -> (Vec<String>, Vec<String>, bool) {
                    let ops = ops_text(j).into_iter().filter(|o| !o.contains("/internal/degraded")).collect();
                    let events = j.events.iter()
                        .filter(|e| !matches!(e, DetectEvent::Degraded { .. } | DetectEvent::DegradedCleared { .. }))
                        .map(|e| format!("{e:?}"))
                        .collect();
                    (ops, events, j.mass_failure)
                };
                for (n, s) in &with_stale {
                    prop_assert_eq!(
                        s.disagreement(stale_nodes.contains(n)).is_some(),
                        as_down[n].disagreement(false).is_some()
                    );
                }
                prop_assert_eq!(norm(&a), norm(&b));
            }
        }
    }

    /// The pure pieces of the judgement, one function each; the sequences
    /// (observations -> counts, flags, reports) are the golden scripts.
    #[test]
    fn a_node_fails_only_when_every_configured_signal_agrees() {
        let mut s = sig(false, true);
        assert!(s.all_failed());
        s.tcp_failed = Some(true);
        s.consul_failed = Some(true);
        assert!(s.all_failed());
        s.consul_failed = Some(false);
        assert!(!s.all_failed());
        // A stale node Nova already reads down reads down.
        let down = sig(false, true);
        assert_eq!(NovaReading::of(&down.nova, true), NovaReading::Down);
        assert_eq!(NovaReading::of(&down.nova, false), NovaReading::Down);
        assert_eq!(
            NovaReading::of(&sig(true, true).nova, true),
            NovaReading::Stale
        );
        assert!(sig(true, true).all_failed_with(true));
    }

    #[test]
    fn the_guard_needs_two_failing_nodes_and_trips_on_either_limit() {
        // One failing node is never a mass failure, whatever the fraction.
        assert!(!guard_trips(1, 1, &Thresholds::default()));
        assert!(guard_trips(2, 3, &Thresholds::default()));
        assert!(!guard_trips(2, 4, &Thresholds::default()));
        let th = Thresholds {
            max_failed_nodes: Some(2),
            max_failed_fraction: 1.0,
            ..Thresholds::default()
        };
        assert!(guard_trips(3, 100, &th));
        assert!(!guard_trips(2, 100, &th));
    }

    // The detection sequences, as golden scripts of testdata/detect (the
    // language is described in recovery/scenarios.rs).
    crate::recovery::model::run_scripts! {
        "detect":
        a_dead_node_whose_maintenance_ended_is_not_held_back_by_the_guard,
        a_maintenance_with_an_end_is_skipped_until_it_ends_then_judged,
        a_new_node_gets_its_keys_created_only_where_absent,
        a_reset_node_reading_down_is_not_counted_and_its_grace_starts,
        a_reset_node_that_never_comes_up_is_counted_once_the_grace_ran_out,
        a_reset_node_with_a_stale_heartbeat_is_still_awaited,
        a_stale_heartbeat_fails_the_nova_signal_while_nova_still_reads_up,
        agreement_stays_the_rule_a_lone_dead_nova_compute_or_consul_agent_is_never_counted,
        an_invalid_awaiting_value_skips_the_node_and_is_never_overwritten,
        any_healthy_signal_resets_the_count_and_never_touches_the_flags,
        counts_up_to_the_threshold_then_marks_failed_true,
        disabled_maintenance_and_invalid_nodes_are_skipped_unknown_ones_reported,
        flags_reset_before_the_runner_applied_it_are_not_judged,
        nova_reporting_a_reset_node_up_ends_the_wait_then_counting_resumes,
        silent_nodes_in_maintenance_or_with_invalid_values_still_count_for_the_guard,
        the_degraded_report_is_written_once_per_change_and_cleared,
        the_guard_counts_but_marks_nobody,
        the_mass_failure_guard_holds_stale_nodes_back_as_it_does_down_ones,
        unreachable_nova_judges_nothing,
    }
}
