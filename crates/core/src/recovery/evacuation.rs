//! The two questions the recovery decision asks about instances beyond its
//! state machine (docs/recovery.md, "Storage classes" and "Capacity"):
//!
//! - [`annotate`]: when an instance is listed, what its evacuation risks
//!   (its storage class, and whether a `local` one is held back), what it
//!   takes (its flavor's resources) and its priority, all recorded so any
//!   later leader decides the same;
//! - [`choose`]: which pending instances go now, in priority order, and
//!   where: the claimed HA node while they fit in the room Placement
//!   reports, else the scheduler (`ha_node_then_scheduler`) or nowhere yet.
//!
//! Pure: no I/O, no clock. `decide` calls both.

use std::collections::{BTreeMap, BTreeSet};

use crate::capacity::{self, Candidate, Placement};
use crate::drivers::{Instance, InstanceProgress};
use crate::record::{InstanceRecord, InstanceState, RecoveryRecord};
use crate::recovery::{Observation, Policy, TargetPolicy};

/// Records `inst`'s storage class, resources and priority in `entry`, and
/// marks a still-pending `local` instance `skipped` with the reason when
/// the policy holds such instances back. `node_shared` is the node's own
/// `config/shared_storage` (`None` = the policy's default).
pub fn annotate(
    policy: &Policy,
    node_shared: Option<bool>,
    inst: &Instance,
    entry: &mut InstanceRecord,
) {
    let class = policy.storage.classify(
        inst.boot_from_volume,
        &inst.metadata,
        policy.storage.node_shared(node_shared),
    );
    entry.storage = Some(class);
    entry.resources = inst.resources;
    entry.priority = inst
        .metadata
        .get(&policy.priority_key)
        .and_then(|v| v.trim().parse::<i64>().ok())
        .unwrap_or(0);
    if entry.state == InstanceState::Pending
        && let Some(reason) = policy.storage.skip_reason(class, &inst.metadata)
    {
        entry.state = InstanceState::Skipped;
        entry.error = Some(reason);
    }
}

/// What goes now, from [`choose`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    /// The instances to send now, in sending order (priority first).
    pub ids: Vec<String>,
    /// Those of `ids` that go to the scheduler instead of the HA node.
    pub scheduler: BTreeSet<String>,
    /// Why pending instances were held back (none fits on the HA node and
    /// the policy allows no scheduler); `None` when nothing waits.
    pub waiting: Option<String>,
}

/// Picks at most `slots` pending instances of `rec` to send now. Without a
/// claimed HA node every one goes to the scheduler. With one, the room is
/// Placement's report of the HA node (`obs.ha_capacity`), counting this
/// recovery's own instances from the record (those sent there and not
/// failed) rather than from Placement, so an allocation Nova has not moved
/// yet is counted once.
pub fn choose(policy: &Policy, obs: &Observation, rec: &RecoveryRecord, slots: usize) -> Batch {
    let mut candidates: Vec<Candidate> = rec
        .instances
        .iter()
        .filter(|(_, i)| i.state == InstanceState::Pending)
        .map(|(id, i)| Candidate {
            id: id.clone(),
            resources: i.resources,
            priority: i.priority,
        })
        .collect();
    capacity::by_priority(&mut candidates);
    let Some(ha) = rec.ha_node.as_ref() else {
        let ids: Vec<String> = candidates.into_iter().take(slots).map(|c| c.id).collect();
        return Batch {
            scheduler: ids.iter().cloned().collect(),
            ids,
            waiting: None,
        };
    };
    let room = obs.ha_capacity.as_ref().map(|cap| {
        let ours: BTreeMap<String, Option<capacity::Resources>> = rec
            .instances
            .iter()
            .filter(|(id, i)| on_ha_node(obs, ha.as_str(), id, i))
            .map(|(id, i)| (id.clone(), i.resources))
            .collect();
        cap.room(&ours)
    });
    let fallback = policy.target == TargetPolicy::HaNodeThenScheduler;
    // Evacuations to the HA node and through the scheduler are never in
    // flight at once. Nova claims an evacuation's room in Placement in its
    // conductor, after the API has accepted the call; meanwhile the HA node
    // (enabled, and usually the emptiest host, which the scheduler's
    // weighers prefer) still shows that room, so an evacuation sent to the
    // scheduler can take it and one sent to the HA node then fails
    // NoValidHost (the server goes ERROR). Whichever kind the first
    // candidate (highest priority) is goes now; the other waits until
    // nothing of the first kind is still being placed.
    let ha_busy = rec.instances.iter().any(|(id, i)| {
        !i.via_scheduler && i.target.as_deref() == Some(ha.as_str()) && being_placed(obs, id, i)
    });
    let scheduler_busy = rec
        .instances
        .iter()
        .any(|(id, i)| i.via_scheduler && being_placed(obs, id, i));
    let mut kind: Option<bool> = None;
    let mut batch = Batch::default();
    for (id, p) in capacity::place(room, ha.as_str(), fallback, &candidates) {
        let to_scheduler = match p {
            Placement::Wait { reason } => {
                batch.waiting.get_or_insert(format!("{id}: {reason}"));
                continue;
            }
            Placement::HaNode => false,
            Placement::Scheduler => true,
        };
        let other_busy = if to_scheduler {
            ha_busy
        } else {
            scheduler_busy
        };
        if batch.ids.len() >= slots || other_busy || kind.is_some_and(|k| k != to_scheduler) {
            continue;
        }
        kind = Some(to_scheduler);
        if to_scheduler {
            batch.scheduler.insert(id.clone());
        }
        batch.ids.push(id);
    }
    batch
}

/// True when instance `id` was sent and Nova may not have placed it yet
/// (and so not claimed its room in Placement): requested, and not read
/// back landed or failed.
fn being_placed(obs: &Observation, id: &str, i: &InstanceRecord) -> bool {
    i.state == InstanceState::Requested
        && !matches!(
            obs.progress.get(id),
            Some(InstanceProgress::Landed { .. } | InstanceProgress::Failed { .. })
        )
}

/// True when instance `id` of this recovery takes room on the HA node now:
/// sent there (requested or landed there) and not known to have failed.
fn on_ha_node(obs: &Observation, ha: &str, id: &str, i: &InstanceRecord) -> bool {
    let sent_there = !i.via_scheduler && i.target.as_deref() == Some(ha);
    match i.state {
        InstanceState::Requested => {
            sent_there && !matches!(obs.progress.get(id), Some(InstanceProgress::Failed { .. }))
        }
        InstanceState::Done => i.target.as_deref() == Some(ha),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capacity::{HostCapacity, Inventories, Inventory, Resources};
    use crate::recovery::NodeFlags;
    use crate::storage::{LocalStorage, StorageClass};

    fn policy() -> Policy {
        Policy::default()
    }

    fn inst(id: &str, bfv: bool, md: &[(&str, &str)]) -> Instance {
        Instance {
            id: id.into(),
            host: "c1".into(),
            boot_from_volume: bfv,
            resources: Some(Resources {
                vcpus: 1,
                memory_mb: 1024,
                disk_gb: 0,
            }),
            metadata: md
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..Instance::default()
        }
    }

    #[test]
    fn annotate_records_class_resources_priority_and_skips_local() {
        let p = policy();
        let mut e = InstanceRecord::default();
        annotate(
            &p,
            None,
            &inst("a", true, &[("novaha_priority", "7")]),
            &mut e,
        );
        assert_eq!(e.storage, Some(StorageClass::Volume));
        assert_eq!(e.state, InstanceState::Pending);
        assert_eq!(e.priority, 7);
        assert_eq!(e.resources.map(|r| r.memory_mb), Some(1024));

        let mut e = InstanceRecord::default();
        annotate(&p, Some(true), &inst("b", false, &[]), &mut e);
        assert_eq!(e.storage, Some(StorageClass::Shared));
        assert_eq!(e.state, InstanceState::Pending);

        let mut e = InstanceRecord::default();
        annotate(
            &p,
            None,
            &inst("c", false, &[("novaha_priority", "x")]),
            &mut e,
        );
        assert_eq!(e.storage, Some(StorageClass::Local));
        assert_eq!(e.state, InstanceState::Skipped);
        assert!(e.error.as_deref().unwrap_or("").contains("local storage"));
        assert_eq!(e.priority, 0, "an unparsable priority is 0");

        // Opted in, or rebuild policy: evacuated, still recorded local.
        let mut e = InstanceRecord::default();
        annotate(
            &p,
            None,
            &inst("d", false, &[("novaha_rebuild_ok", "true")]),
            &mut e,
        );
        assert_eq!(
            (e.storage, e.state),
            (Some(StorageClass::Local), InstanceState::Pending)
        );
        let mut rebuild = policy();
        rebuild.storage.local = LocalStorage::Rebuild;
        let mut e = InstanceRecord::default();
        annotate(&rebuild, Some(false), &inst("e", false, &[]), &mut e);
        assert_eq!(e.state, InstanceState::Pending);

        // An instance already final (opted out, elsewhere) keeps its state.
        let mut e = InstanceRecord {
            state: InstanceState::Done,
            ..InstanceRecord::default()
        };
        annotate(&p, None, &inst("f", false, &[]), &mut e);
        assert_eq!(e.state, InstanceState::Done);
    }

    fn obs(mem_total: u64) -> Observation {
        let schema = crate::kv::Schema::new("p");
        let snap = crate::kv::Snapshot {
            index: 1,
            entries: BTreeMap::from([(
                "p/compute_nodes/c1/status/failed".to_owned(),
                crate::kv::KvEntry {
                    value: Some(b"True".to_vec()),
                    modify_index: 1,
                },
            )]),
        };
        let state = crate::kv::ClusterState::parse(&schema, &snap);
        let flags = NodeFlags::from_state(
            &state.compute_nodes[&crate::NodeName::from("c1")],
            chrono::Utc::now(),
        );
        let mut o = Observation::new("c1".into(), "e", flags);
        o.ha_capacity = Some(HostCapacity {
            inventories: Inventories {
                vcpu: None,
                memory_mb: Some(Inventory {
                    total: mem_total,
                    reserved: 0,
                    allocation_ratio: 1.0,
                    max_unit: mem_total,
                }),
                disk_gb: None,
            },
            allocations: BTreeMap::new(),
        });
        o
    }

    fn record(n: usize) -> RecoveryRecord {
        let mut r = RecoveryRecord::new("i".into(), "e".into(), chrono::DateTime::UNIX_EPOCH);
        r.ha_node = Some("ha-1".into());
        for k in 0..n {
            let mut e = InstanceRecord::default();
            annotate(&policy(), None, &inst(&format!("i{k}"), true, &[]), &mut e);
            r.instances.insert(format!("i{k}"), e);
        }
        r
    }

    #[test]
    fn choose_fills_the_ha_node_then_the_scheduler_or_waits() {
        let rec = record(3);
        let mut p = policy();
        p.target = TargetPolicy::HaNodeThenScheduler;
        // The HA node's two first; the third waits for them (below).
        let b = choose(&p, &obs(2048), &rec, 8);
        assert_eq!(b.ids, ["i0", "i1"]);
        assert!(b.scheduler.is_empty());
        assert_eq!(b.waiting, None);

        p.target = TargetPolicy::HaNode;
        let b = choose(&p, &obs(2048), &rec, 8);
        assert_eq!(b.ids, ["i0", "i1"]);
        assert!(b.scheduler.is_empty());
        let why = b.waiting.expect("one waits");
        assert!(why.starts_with("i2: no room on ha-1"), "{why}");

        // Slots bound the batch; the rest stays pending.
        let b = choose(&p, &obs(4096), &rec, 1);
        assert_eq!(b.ids, ["i0"]);
        assert_eq!(b.waiting, None);
    }

    #[test]
    fn choose_counts_what_this_recovery_already_sent_there() {
        let mut rec = record(3);
        let i0 = rec.instances.get_mut("i0").expect("i0");
        i0.state = InstanceState::Requested;
        i0.target = Some("ha-1".into());
        let b = choose(&policy(), &obs(2048), &rec, 8);
        assert_eq!(b.ids, ["i1"], "i0 takes 1 GB of the 2 GB");
        // Sent to the scheduler (and placed elsewhere), or failed: takes
        // no room there.
        let i0 = rec.instances.get_mut("i0").expect("i0");
        i0.via_scheduler = true;
        let mut o = obs(2048);
        o.progress.insert(
            "i0".into(),
            InstanceProgress::Landed {
                host: "c7".into(),
                status: "ACTIVE".into(),
            },
        );
        let b = choose(&policy(), &o, &rec, 8);
        assert_eq!(b.ids, ["i1", "i2"]);
        let i0 = rec.instances.get_mut("i0").expect("i0");
        i0.via_scheduler = false;
        let mut o = obs(2048);
        o.progress
            .insert("i0".into(), InstanceProgress::Failed { reason: "x".into() });
        assert_eq!(choose(&policy(), &o, &rec, 8).ids, ["i1", "i2"]);
    }

    /// Sends `ids` of `rec` the way `decide` records a batch.
    fn send(rec: &mut RecoveryRecord, b: &Batch) {
        for id in &b.ids {
            let i = rec.instances.get_mut(id).expect("instance");
            i.state = InstanceState::Requested;
            i.via_scheduler = b.scheduler.contains(id);
            i.target = (!i.via_scheduler).then(|| "ha-1".to_owned());
        }
    }

    #[test]
    fn choose_never_has_ha_node_and_scheduler_evacuations_in_flight_at_once() {
        // Nova's scheduler may pick the HA node (enabled, emptiest) for an
        // evacuation without a target before the ones sent there have
        // claimed their room: one of those would fail NoValidHost.
        let mut rec = record(3);
        let mut p = policy();
        p.target = TargetPolicy::HaNodeThenScheduler;
        let o = obs(2048);
        let b = choose(&p, &o, &rec, 8);
        assert_eq!(b.ids, ["i0", "i1"]);
        send(&mut rec, &b);
        // In flight to the HA node (not read yet, then read moving): the
        // third is held, not sent.
        assert_eq!(choose(&p, &o, &rec, 8), Batch::default());
        let mut o = obs(2048);
        o.progress.insert("i0".into(), InstanceProgress::InFlight);
        o.progress.insert(
            "i1".into(),
            InstanceProgress::Landed {
                host: "ha-1".into(),
                status: "ACTIVE".into(),
            },
        );
        assert_eq!(choose(&p, &o, &rec, 8), Batch::default());
        // Both landed: the scheduler's turn.
        o.progress.insert(
            "i0".into(),
            InstanceProgress::Landed {
                host: "ha-1".into(),
                status: "ACTIVE".into(),
            },
        );
        let b = choose(&p, &o, &rec, 8);
        assert_eq!(b.ids, ["i2"]);
        assert_eq!(b.scheduler, BTreeSet::from(["i2".to_owned()]));

        // The other way round: while one goes through the scheduler,
        // nothing is sent to the HA node, even with room there.
        let mut rec = record(3);
        let b = Batch {
            ids: vec!["i0".into()],
            scheduler: BTreeSet::from(["i0".to_owned()]),
            waiting: None,
        };
        send(&mut rec, &b);
        assert_eq!(choose(&p, &obs(4096), &rec, 8), Batch::default());
        let mut o = obs(4096);
        o.progress.insert(
            "i0".into(),
            InstanceProgress::Landed {
                host: "c7".into(),
                status: "ACTIVE".into(),
            },
        );
        assert_eq!(choose(&p, &o, &rec, 8).ids, ["i1", "i2"]);

        // The highest priority decides which kind goes first.
        let mut rec = record(3);
        let big = rec.instances.get_mut("i0").expect("i0");
        big.priority = 5;
        big.resources = Some(Resources {
            vcpus: 1,
            memory_mb: 4096,
            disk_gb: 0,
        });
        let b = choose(&p, &obs(2048), &rec, 8);
        assert_eq!(b.ids, ["i0"]);
        assert_eq!(b.scheduler, BTreeSet::from(["i0".to_owned()]));
    }

    #[test]
    fn choose_without_ha_node_or_capacity() {
        let mut rec = record(2);
        let mut o = obs(0);
        o.ha_capacity = None;
        let b = choose(&policy(), &o, &rec, 8);
        assert_eq!(b.ids, ["i0", "i1"], "unknown room: as before");
        assert!(b.scheduler.is_empty());
        rec.ha_node = None;
        let b = choose(&policy(), &o, &rec, 8);
        assert_eq!(b.scheduler.len(), 2, "no HA node: the scheduler");
    }
}
