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
//!   (rule 7).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::kv::{ClusterState, InvalidValue, Schema, format_bool};
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
    /// `config/maintenance` is True.
    Maintenance,
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
}

/// Judges one cycle. `nova` is `None` when Nova (or Keystone) could not be
/// reached: then nothing is judged and nothing is written. Otherwise it maps
/// each host Nova reports to what was observed about it.
///
/// Pure and deterministic: the same inputs give the same plan.
pub fn judge(
    schema: &Schema,
    state: &ClusterState,
    nova: Option<&BTreeMap<NodeName, NodeSignals>>,
    thresholds: &Thresholds,
) -> Judgement {
    let Some(nova) = nova else {
        return Judgement {
            events: vec![DetectEvent::NovaUnreachable],
            ..Judgement::default()
        };
    };
    let mut out = Judgement::default();

    // First pass: a verdict per node, so the guard can see the whole window.
    let mut verdicts: BTreeMap<&NodeName, Verdict> = BTreeMap::new();
    for (node, signals) in nova {
        let stored = state.compute_nodes.get(node);
        if let Some(st) = stored
            && st.has_invalid()
        {
            out.events.push(DetectEvent::Invalid {
                node: node.clone(),
                errors: st.invalid.clone(),
            });
            continue;
        }
        let verdict = if stored.is_some_and(|st| st.maintenance.get() == Some(true)) {
            Verdict::Skipped(SkipReason::Maintenance)
        } else if !signals.nova.enabled {
            Verdict::Skipped(SkipReason::Disabled)
        } else if signals.all_failed() {
            Verdict::Failing
        } else {
            Verdict::Healthy
        };
        verdicts.insert(node, verdict);
    }
    let monitored = verdicts
        .values()
        .filter(|v| !matches!(v, Verdict::Skipped(_)))
        .count();
    let failing: Vec<NodeName> = verdicts
        .iter()
        .filter(|(_, v)| matches!(v, Verdict::Failing))
        .map(|(n, _)| (*n).clone())
        .collect();
    let guard = guard_trips(failing.len(), monitored, thresholds);
    out.mass_failure = guard;

    // Second pass: the writes.
    let mut held_back = Vec::new();
    for (node, verdict) in &verdicts {
        let stored = state.compute_nodes.get(*node);
        let mut ops = Vec::new();
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
}
