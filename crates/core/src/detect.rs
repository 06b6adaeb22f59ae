//! The monitor's judgement (DESIGN.md section 6) as a pure function.
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

use std::collections::BTreeMap;
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

impl NodeSignals {
    /// True when every configured signal says the node failed: Nova reports
    /// it down (or forced down) and no extra signal says it is healthy.
    pub fn all_failed(&self) -> bool {
        let nova_down = !self.nova.up || self.nova.forced_down;
        nova_down && self.consul_failed != Some(false) && self.tcp_failed != Some(false)
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
    st.failed.get() == Some(false)
        && st.recovered.get() == Some(false)
        && matches!(st.recovery.value, Ok(Some(_)))
}

/// Where a node awaiting up after a reset stands this cycle.
fn awaiting(
    st: Option<&ComputeNodeState>,
    signals: &NodeSignals,
    clock: Option<&ResetGrace>,
) -> Await {
    let Some(st) = st.filter(|st| st.awaiting_up.get() == Some(true)) else {
        return Await::Keep;
    };
    if signals.nova.up && !signals.nova.forced_down {
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

/// Judges one cycle. `nova` is `None` when Nova (or Keystone) could not be
/// reached: then nothing is judged and nothing is written. Otherwise it maps
/// each host Nova reports to what was observed about it. `clock` bounds the
/// wait after an administrator's reset (`None` = wait for Nova, unbounded).
///
/// Pure and deterministic: the same inputs give the same plan.
pub fn judge_at(
    schema: &Schema,
    state: &ClusterState,
    nova: Option<&BTreeMap<NodeName, NodeSignals>>,
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
    for (node, signals) in nova {
        let stored = state.compute_nodes.get(node);
        let silent = signals.nova.enabled && signals.all_failed();
        if stored.is_some_and(|st| st.has_invalid() || st.maintenance.get() == Some(true)) && silent
        {
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
        // Without a clock a maintenance's end time is not applied: the
        // switch alone decides (the safe side).
        let in_maintenance = |st: &ComputeNodeState| match clock {
            Some(c) => st.in_maintenance(c.now),
            None => st.maintenance.get() != Some(false),
        };
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
        let wait = awaiting(stored, signals, clock);
        let verdict = if !signals.nova.enabled {
            Verdict::Skipped(SkipReason::Disabled)
        } else if signals.all_failed() {
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

    fn nova(nodes: &[(&str, NodeSignals)]) -> BTreeMap<NodeName, NodeSignals> {
        nodes
            .iter()
            .map(|(n, s)| (NodeName::from(*n), s.clone()))
            .collect()
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

    #[test]
    fn a_new_node_gets_its_keys_created_only_where_absent() {
        let (schema, st) = state(&[]);
        let j = judge(
            &schema,
            &st,
            Some(&nova(&[("c1", sig(true, true))])),
            &Thresholds::default(),
        );
        assert_eq!(
            ops_text(&j),
            [
                "t/compute_nodes/c1/internal/number_fails=0 cas=0",
                "t/compute_nodes/c1/status/failed=False cas=0",
                "t/compute_nodes/c1/status/recovered=False cas=0",
            ]
        );
        assert_eq!(j.events, [DetectEvent::Discovered { node: "c1".into() }]);
    }

    #[test]
    fn counts_up_to_the_threshold_then_marks_failed_true() {
        let (schema, st) = state(&[
            ("compute_nodes/c1/status/failed", "False"),
            ("compute_nodes/c1/status/recovered", "False"),
            ("compute_nodes/c1/internal/number_fails", "3"),
        ]);
        let j = judge(
            &schema,
            &st,
            Some(&nova(&[("c1", sig(false, true))])),
            &Thresholds::default(),
        );
        assert_eq!(
            ops_text(&j),
            [
                "t/compute_nodes/c1/internal/number_fails=4 cas=3",
                "t/compute_nodes/c1/status/failed=True cas=1",
            ]
        );
        assert!(j.events.contains(&DetectEvent::Failed {
            node: "c1".into(),
            number_fails: 4
        }));
        // At the threshold itself: counted, not failed.
        let (schema, st) = state(&[("compute_nodes/c1/internal/number_fails", "2")]);
        let j = judge(
            &schema,
            &st,
            Some(&nova(&[("c1", sig(false, true))])),
            &Thresholds::default(),
        );
        assert!(
            !j.all_ops()
                .any(|op| matches!(op, KvOp::Set { value, .. } if value == b"True"))
        );
    }

    #[test]
    fn any_healthy_signal_resets_the_count_and_never_touches_the_flags() {
        let (schema, st) = state(&[
            ("compute_nodes/c1/status/failed", "True"),
            ("compute_nodes/c1/status/recovered", "True"),
            ("compute_nodes/c1/internal/number_fails", "5"),
        ]);
        let mut s = sig(false, true);
        s.tcp_failed = Some(false);
        let j = judge(
            &schema,
            &st,
            Some(&nova(&[("c1", s)])),
            &Thresholds::default(),
        );
        assert_eq!(
            ops_text(&j),
            ["t/compute_nodes/c1/internal/number_fails=0 cas=3"]
        );
        // Every configured signal agreeing counts.
        let mut s = sig(false, true);
        s.tcp_failed = Some(true);
        s.consul_failed = Some(true);
        assert!(s.all_failed());
        s.consul_failed = Some(false);
        assert!(!s.all_failed());
    }

    #[test]
    fn unreachable_nova_judges_nothing() {
        let (schema, st) = state(&[("compute_nodes/c1/internal/number_fails", "3")]);
        let j = judge(&schema, &st, None, &Thresholds::default());
        assert!(j.writes.is_empty());
        assert_eq!(j.events, [DetectEvent::NovaUnreachable]);
    }

    #[test]
    fn disabled_maintenance_and_invalid_nodes_are_skipped_unknown_ones_reported() {
        let (schema, st) = state(&[
            ("compute_nodes/c1/internal/number_fails", "2"),
            ("compute_nodes/c2/config/maintenance", "True"),
            ("compute_nodes/c2/internal/number_fails", "2"),
            ("compute_nodes/c3/status/failed", "maybe"),
            ("compute_nodes/c3/internal/number_fails", "2"),
            ("compute_nodes/gone/internal/number_fails", "0"),
        ]);
        let n = nova(&[
            ("c1", sig(false, false)),
            ("c2", sig(false, true)),
            ("c3", sig(false, true)),
        ]);
        let j = judge(&schema, &st, Some(&n), &Thresholds::default());
        let ops = ops_text(&j);
        assert!(ops.iter().all(|o| !o.contains("number_fails")), "{ops:?}");
        assert!(ops.iter().all(|o| !o.contains("/c3/")), "{ops:?}");
        assert!(j.events.contains(&DetectEvent::Skipped {
            node: "c1".into(),
            reason: SkipReason::Disabled
        }));
        assert!(j.events.contains(&DetectEvent::Skipped {
            node: "c2".into(),
            reason: SkipReason::Maintenance
        }));
        assert!(
            j.events
                .iter()
                .any(|e| matches!(e, DetectEvent::Invalid { node, .. } if node.as_str() == "c3"))
        );
        assert!(j.events.contains(&DetectEvent::UnknownToNova {
            node: "gone".into()
        }));
    }

    #[test]
    fn the_guard_counts_but_marks_nobody() {
        let (schema, st) = state(&[
            ("compute_nodes/c1/internal/number_fails", "3"),
            ("compute_nodes/c2/internal/number_fails", "3"),
            ("compute_nodes/c3/internal/number_fails", "0"),
        ]);
        let n = nova(&[
            ("c1", sig(false, true)),
            ("c2", sig(false, true)),
            ("c3", sig(true, true)),
        ]);
        let j = judge(&schema, &st, Some(&n), &Thresholds::default());
        assert!(j.mass_failure);
        let ops = ops_text(&j);
        assert!(ops.contains(&"t/compute_nodes/c1/internal/number_fails=4 cas=1".to_owned()));
        assert!(!ops.iter().any(|o| o.contains("failed=True")), "{ops:?}");
        assert!(j.events.iter().any(|e| matches!(e,
            DetectEvent::GuardTripped { held_back, monitored: 3, .. } if held_back.len() == 2)));
        // One failing node of two is not a mass failure; an absolute limit is.
        assert!(!guard_trips(1, 1, &Thresholds::default()));
        let th = Thresholds {
            max_failed_nodes: Some(2),
            max_failed_fraction: 1.0,
            ..Thresholds::default()
        };
        assert!(guard_trips(3, 100, &th));
        assert!(!guard_trips(2, 100, &th));
    }

    #[test]
    fn silent_nodes_in_maintenance_or_with_invalid_values_still_count_for_the_guard() {
        // A partition cuts off c1, c2 and c3; c3 is in maintenance and c4's
        // flag holds a typo: neither is judged, but their silence is
        // evidence of the partition, so c1 and c2 are not failed either.
        let (schema, st) = state(&[
            ("compute_nodes/c1/internal/number_fails", "3"),
            ("compute_nodes/c2/internal/number_fails", "3"),
            ("compute_nodes/c3/config/maintenance", "True"),
            ("compute_nodes/c4/status/failed", "maybe"),
            ("compute_nodes/c5/internal/number_fails", "0"),
        ]);
        let th = Thresholds {
            max_failed_nodes: Some(2),
            max_failed_fraction: 1.0,
            ..Thresholds::default()
        };
        let n = nova(&[
            ("c1", sig(false, true)),
            ("c2", sig(false, true)),
            ("c3", sig(false, true)),
            ("c5", sig(true, true)),
        ]);
        let j = judge(&schema, &st, Some(&n), &th);
        assert!(j.mass_failure, "{:?}", j.events);
        assert!(!ops_text(&j).iter().any(|o| o.contains("failed=True")));
        let n = nova(&[
            ("c1", sig(false, true)),
            ("c2", sig(false, true)),
            ("c4", sig(false, true)),
            ("c5", sig(true, true)),
        ]);
        let j = judge(&schema, &st, Some(&n), &th);
        assert!(j.mass_failure, "{:?}", j.events);
        // A disabled node (recovered, forced down) does not count.
        let n = nova(&[
            ("c1", sig(false, true)),
            ("c2", sig(false, true)),
            ("c5", sig(false, false)),
        ]);
        assert!(!judge(&schema, &st, Some(&n), &th).mass_failure);
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

    /// A node just reset by the runner: flags False, count 0, awaiting up.
    const RESET: [(&str, &str); 4] = [
        ("compute_nodes/c1/status/failed", "False"),
        ("compute_nodes/c1/status/recovered", "False"),
        ("compute_nodes/c1/internal/number_fails", "0"),
        ("compute_nodes/c1/internal/awaiting_up", "True"),
    ];

    #[test]
    fn a_reset_node_reading_down_is_not_counted_and_its_grace_starts() {
        let (schema, st) = state(&RESET);
        let th = Thresholds {
            threshold: 0,
            ..Thresholds::default()
        };
        let c = clock("2026-11-21T03:00:00Z", 600);
        let down = nova(&[("c1", sig(false, true))]);
        let j = judge_at(&schema, &st, Some(&down), &th, Some(&c));
        assert_eq!(
            ops_text(&j),
            ["t/compute_nodes/c1/internal/awaiting_up_since=2026-11-21T03:00:00Z cas=0"]
        );
        assert_eq!(
            j.events,
            [DetectEvent::AwaitingUp {
                node: "c1".into(),
                since: None,
                first: true
            }]
        );
        // Later cycles within the grace write nothing and count nothing.
        let mut pairs = RESET.to_vec();
        pairs.push((
            "compute_nodes/c1/internal/awaiting_up_since",
            "2026-11-21T03:00:00Z",
        ));
        let (schema, st) = state(&pairs);
        let c = clock("2026-11-21T03:09:59Z", 600);
        let j = judge_at(&schema, &st, Some(&down), &th, Some(&c));
        assert!(j.writes.is_empty(), "{:?}", ops_text(&j));
        assert!(!j.mass_failure);
        assert!(matches!(
            &j.events[..],
            [DetectEvent::AwaitingUp {
                first: false,
                since: Some(_),
                ..
            }]
        ));
        // Without a clock the wait has no bound.
        let j = judge(&schema, &st, Some(&down), &th);
        assert!(j.writes.is_empty(), "{:?}", ops_text(&j));
        // Forced down reads down too: still waiting.
        let mut forced = sig(true, true);
        forced.nova.forced_down = true;
        let j = judge(&schema, &st, Some(&nova(&[("c1", forced)])), &th);
        assert!(j.writes.is_empty(), "{:?}", ops_text(&j));
    }

    #[test]
    fn nova_reporting_a_reset_node_up_ends_the_wait_then_counting_resumes() {
        let mut pairs = RESET.to_vec();
        pairs.push((
            "compute_nodes/c1/internal/awaiting_up_since",
            "2026-11-21T03:00:00Z",
        ));
        let (schema, st) = state(&pairs);
        let th = Thresholds {
            threshold: 0,
            ..Thresholds::default()
        };
        let c = clock("2026-11-21T03:01:00Z", 600);
        let j = judge_at(
            &schema,
            &st,
            Some(&nova(&[("c1", sig(true, true))])),
            &th,
            Some(&c),
        );
        assert_eq!(
            ops_text(&j),
            [
                "t/compute_nodes/c1/internal/awaiting_up=False cas=4",
                "delete t/compute_nodes/c1/internal/awaiting_up_since cas=5",
            ]
        );
        assert_eq!(j.events, [DetectEvent::UpAfterReset { node: "c1".into() }]);
        // The next cycle reads it down: counted (and, threshold 0, failed).
        let mut after = RESET.to_vec();
        after[3].1 = "False";
        let (schema, st) = state(&after);
        let j = judge_at(
            &schema,
            &st,
            Some(&nova(&[("c1", sig(false, true))])),
            &th,
            Some(&c),
        );
        assert_eq!(
            ops_text(&j),
            [
                "t/compute_nodes/c1/internal/number_fails=1 cas=3",
                "t/compute_nodes/c1/status/failed=True cas=1",
            ]
        );
        // Up while still disabled (reenable_on_reset = false) ends it too.
        let (schema, st) = state(&RESET);
        let j = judge(&schema, &st, Some(&nova(&[("c1", sig(true, false))])), &th);
        assert_eq!(
            ops_text(&j),
            ["t/compute_nodes/c1/internal/awaiting_up=False cas=4"]
        );
    }

    #[test]
    fn a_reset_node_that_never_comes_up_is_counted_once_the_grace_ran_out() {
        let mut pairs = RESET.to_vec();
        pairs.push((
            "compute_nodes/c1/internal/awaiting_up_since",
            "2026-11-21T03:00:00Z",
        ));
        let (schema, st) = state(&pairs);
        let th = Thresholds {
            threshold: 0,
            ..Thresholds::default()
        };
        let c = clock("2026-11-21T03:10:00Z", 600);
        let j = judge_at(
            &schema,
            &st,
            Some(&nova(&[("c1", sig(false, true))])),
            &th,
            Some(&c),
        );
        assert_eq!(
            ops_text(&j),
            [
                "t/compute_nodes/c1/internal/awaiting_up=False cas=4",
                "delete t/compute_nodes/c1/internal/awaiting_up_since cas=5",
                "t/compute_nodes/c1/internal/number_fails=1 cas=3",
                "t/compute_nodes/c1/status/failed=True cas=1",
            ]
        );
        assert!(j.events.contains(&DetectEvent::ResetGraceExpired {
            node: "c1".into(),
            since: at("2026-11-21T03:00:00Z"),
        }));
        // A disabled node's grace neither starts nor ends.
        let (schema, st) = state(&RESET);
        let j = judge_at(
            &schema,
            &st,
            Some(&nova(&[("c1", sig(false, false))])),
            &th,
            Some(&c),
        );
        assert!(j.writes.is_empty(), "{:?}", ops_text(&j));
    }

    #[test]
    fn flags_reset_before_the_runner_applied_it_are_not_judged() {
        let (schema, st) = state(&[
            ("compute_nodes/c1/status/failed", "False"),
            ("compute_nodes/c1/status/recovered", "False"),
            ("compute_nodes/c1/internal/number_fails", "4"),
            (
                "compute_nodes/c1/internal/recovery",
                "{\"version\":1,\"incident\":\"c1-x\",\"epoch\":\"e\",\"phase\":\"done\"}",
            ),
        ]);
        assert!(!st.compute_nodes[&NodeName::from("c1")].has_invalid());
        let th = Thresholds {
            threshold: 0,
            ..Thresholds::default()
        };
        let j = judge(&schema, &st, Some(&nova(&[("c1", sig(false, true))])), &th);
        assert!(j.writes.is_empty(), "{:?}", ops_text(&j));
        assert_eq!(
            j.events,
            [DetectEvent::Skipped {
                node: "c1".into(),
                reason: SkipReason::ResetPending
            }]
        );
    }

    #[test]
    fn an_invalid_awaiting_value_skips_the_node_and_is_never_overwritten() {
        let (schema, st) = state(&[
            ("compute_nodes/c1/internal/number_fails", "0"),
            ("compute_nodes/c1/internal/awaiting_up", "perhaps"),
        ]);
        let j = judge(
            &schema,
            &st,
            Some(&nova(&[("c1", sig(true, true))])),
            &Thresholds::default(),
        );
        assert!(j.writes.is_empty(), "{:?}", ops_text(&j));
        assert!(matches!(&j.events[..], [DetectEvent::Invalid { .. }]));
    }
    #[test]
    fn a_maintenance_with_an_end_is_skipped_until_it_ends_then_judged() {
        let (schema, st) = state(&[
            ("compute_nodes/c1/config/maintenance", "True"),
            (
                "compute_nodes/c1/config/maintenance_until",
                "2026-11-21T04:00:00Z",
            ),
            ("compute_nodes/c1/internal/number_fails", "0"),
            ("compute_nodes/c1/status/failed", "False"),
            ("compute_nodes/c1/status/recovered", "False"),
        ]);
        let n = nova(&[("c1", sig(false, true))]);
        let th = Thresholds::default();
        let skipped = DetectEvent::Skipped {
            node: "c1".into(),
            reason: SkipReason::Maintenance,
        };
        let before = clock("2026-11-21T03:59:59Z", 600);
        let j = judge_at(&schema, &st, Some(&n), &th, Some(&before));
        assert!(j.events.contains(&skipped), "{:?}", j.events);
        assert!(ops_text(&j).is_empty(), "{:?}", ops_text(&j));
        // No clock: the switch alone decides, the node stays skipped.
        let j = judge(&schema, &st, Some(&n), &th);
        assert!(j.events.contains(&skipped), "{:?}", j.events);
        let after = clock("2026-11-21T04:00:00Z", 600);
        let j = judge_at(&schema, &st, Some(&n), &th, Some(&after));
        assert!(!j.events.contains(&skipped), "{:?}", j.events);
        assert!(
            ops_text(&j)
                .iter()
                .any(|o| o.starts_with("t/compute_nodes/c1/internal/number_fails=1")),
            "{:?}",
            ops_text(&j)
        );
    }
}
