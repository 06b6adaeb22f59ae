//! Property tests: one per safety rule of docs/safety.md that applies
//! to the pure logic (rules 1, 3, 4, 5, 6, 7). Rule 2 (lock) and rule 8
//! (secrets) belong to the store and the drivers.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::model::{Dice, Harness, carry_out, writes_false_flag};
use super::{Action, HaNodeObs, NodeFlags, Observation, Policy, TargetPolicy, decide};
use crate::detect::{DetectEvent, NodeSignals, NovaService, Thresholds, guard_trips, judge};
use crate::kv::{ClusterState, KvEntry, Schema, Snapshot, format_bool};
use crate::record::{Phase, RecoveryRecord};
use crate::store::KvOp;
use crate::types::NodeName;

fn dice_of(b: u8) -> Dice {
    match b % 8 {
        0..=4 => Dice::Ok,
        5 | 6 => Dice::Fail,
        _ => Dice::FailFatal,
    }
}

#[derive(Clone, Debug)]
struct InstSpec {
    active: bool,
    opt_out: bool,
    elsewhere: bool,
}

fn inst_spec() -> impl Strategy<Value = InstSpec> {
    (
        any::<bool>(),
        prop::bool::weighted(0.15),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(active, opt_out, elsewhere)| InstSpec {
            active,
            opt_out,
            elsewhere,
        })
}

fn target_policy() -> impl Strategy<Value = TargetPolicy> {
    prop_oneof![
        Just(TargetPolicy::HaNode),
        Just(TargetPolicy::Scheduler),
        Just(TargetPolicy::HaNodeThenScheduler),
    ]
}

/// How a leader change interrupts the runner at a step.
#[derive(Clone, Copy, Debug)]
enum Interrupt {
    /// Dies after committing the ops, before the action.
    BeforeAction,
    /// Dies after the action, before feeding its result back.
    AfterAction,
}

fn interrupts() -> impl Strategy<Value = BTreeMap<usize, Interrupt>> {
    prop::collection::btree_map(
        0usize..80,
        prop_oneof![Just(Interrupt::BeforeAction), Just(Interrupt::AfterAction)],
        0..6,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Rules 1 and 3: across any interleaving of call outcomes and leader
    /// changes, no evacuation happens before a verified fence, no instance is
    /// sent twice, and every listed instance ends done, error or skipped.
    #[test]
    fn recovery_fences_first_evacuates_once_and_finishes_every_instance(
        instances in prop::collection::vec(inst_spec(), 0..7),
        concurrency in 1usize..4,
        target in target_policy(),
        restore in any::<bool>(),
        lands_shutoff in any::<bool>(),
        dice in prop::collection::vec(any::<u8>(), 0..120),
        interrupts in interrupts(),
    ) {
        let mut h = Harness::new(&["c1"], &["ha-1"]);
        h.policy.concurrency = concurrency;
        h.policy.target = target;
        h.policy.restore_power_state = restore;
        h.policy.max_attempts = u32::MAX;
        let node = NodeName::from("c1");
        {
            let side = h.side("c1");
            side.world.lands_shutoff = lands_shutoff;
            for (i, spec) in instances.iter().enumerate() {
                let id = format!("i{i}");
                let host = if spec.elsewhere { "c9" } else { "c1" };
                side.world.add_instance(&id, host, if spec.active { "ACTIVE" } else { "SHUTOFF" });
                if spec.opt_out {
                    side.world.instances.get_mut(&id).expect("added").metadata
                        .insert("novaha_opt_out".into(), "yes".into());
                }
            }
        }
        let on_node: BTreeSet<String> = h.side("c1").world.instances.iter()
            .filter(|(_, i)| i.host == "c1").map(|(id, _)| id.clone()).collect();
        let mut dice = dice.into_iter();
        let mut epoch = 1;
        let mut finished = false;
        for step in 0..2000 {
            let (d, committed) = h.decide(&node);
            if let Action::Evacuate(order) = &d.action {
                let rec = d.record.as_ref().expect("a record");
                prop_assert!(rec.fence.is_some(), "evacuate without fence evidence");
                prop_assert!(h.side("c1").world.power_off, "evacuate before a verified fence");
                let fenced = order.fenced();
                prop_assert_eq!(fenced.node(), &node);
            }
            if matches!(d.action, Action::Idle) {
                finished = true;
                break;
            }
            prop_assert!(!matches!(d.action, Action::Stuck { .. }), "stuck: {:?}", d.action);
            if committed.is_err() {
                continue;
            }
            let interrupt = interrupts.get(&step).copied();
            if !matches!(interrupt, Some(Interrupt::BeforeAction)) {
                let roll = &mut || dice.next().map_or(Dice::Ok, dice_of);
                carry_out(&mut h, &node, &d, roll);
            }
            if interrupt.is_some() {
                epoch += 1;
                h.epoch = format!("e{epoch}");
                h.side("c1").results = Default::default();
            }
        }
        prop_assert!(finished, "recovery did not finish");
        let world = &h.side("c1").world;
        prop_assert_eq!(world.unfenced_evacuations, 0);
        // Evacuated (a call Nova accepted) at most once; a call is repeated
        // only after Nova showed the previous one never took effect (it
        // was refused while no leader was there to see the refusal), and
        // a bounded number of times.
        for (id, i) in &world.instances {
            prop_assert!(i.evacuations <= 1, "{} evacuated {} times", id, i.evacuations);
        }
        for (id, n) in &world.evacuate_calls {
            prop_assert!(*n <= super::MAX_SENDS, "{} sent {} times", id, n);
        }
        let (rec, _) = h.observe(&node);
        let rec = rec.expect("a record");
        prop_assert_eq!(rec.phase, Phase::Done);
        for id in &on_node {
            let i = rec.instances.get(id);
            prop_assert!(i.is_some_and(|i| i.state.is_final()), "{} not final: {:?}", id, i);
        }
        prop_assert!(!h.kv.log.iter().any(writes_false_flag));
    }

    /// Rule 4: several failed nodes deciding from stale reads in any order:
    /// an HA node is named by at most one live recovery, and only a claim
    /// that won the CAS holds it.
    #[test]
    fn an_ha_node_is_claimed_by_at_most_one_node(
        failed in 2usize..5,
        ha in 0usize..3,
        target in target_policy(),
        orders in prop::collection::vec(prop::collection::vec(0usize..5, 1..6), 1..12),
    ) {
        let names: Vec<String> = (0..failed).map(|i| format!("c{i}")).collect();
        let has: Vec<String> = (0..ha).map(|i| format!("ha-{i}")).collect();
        let nrefs: Vec<&str> = names.iter().map(String::as_str).collect();
        let hrefs: Vec<&str> = has.iter().map(String::as_str).collect();
        let mut h = Harness::new(&nrefs, &hrefs);
        h.policy.target = target;
        for order in orders {
            // Every node decides from the same (soon stale) read.
            let decided: Vec<_> = order.iter().map(|i| NodeName::from(names[i % failed].as_str()))
                .map(|n| { let (r, o) = h.observe(&n); let d = decide(&h.policy, r.as_ref(), &o, h.now); (n, d) })
                .collect();
            for (n, d) in decided {
                if h.kv.commit(&d.ops).is_ok() {
                    carry_out(&mut h, &n, &d, || Dice::Ok);
                }
                let snap = h.kv.snapshot();
                let state = ClusterState::parse(&h.policy.schema, &snap);
                let mut holders: BTreeMap<NodeName, Vec<NodeName>> = BTreeMap::new();
                for (name, cn) in &state.compute_nodes {
                    if let Ok(Some(rec)) = &cn.recovery.value && let Some(ha) = &rec.ha_node {
                        holders.entry(ha.clone()).or_default().push(name.clone());
                    }
                }
                for (ha, who) in &holders {
                    prop_assert!(who.len() <= 1, "{} claimed by {:?}", ha, who);
                    let hs = &state.ha_nodes[ha];
                    prop_assert_eq!(hs.in_use.get(), Some(true));
                    prop_assert_eq!(hs.serving.as_ref(), Some(&who[0]));
                }
            }
        }
    }
}

/// What happens between two looks at a node an administrator just reset.
#[derive(Clone, Copy, Debug)]
enum AfterReset {
    /// One detection cycle.
    Detect,
    /// The runner decides and carries the decision out.
    Runner,
    /// The clock moves on this many seconds.
    Advance(u64),
    /// Nova reports the node up (its first heartbeat) or down.
    Nova(bool),
}

fn after_reset() -> impl Strategy<Value = AfterReset> {
    prop_oneof![
        4 => Just(AfterReset::Detect),
        2 => Just(AfterReset::Runner),
        2 => (0u64..400).prop_map(AfterReset::Advance),
        1 => any::<bool>().prop_map(AfterReset::Nova),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// The repaired node is never fenced again by mistake: after an
    /// administrator's reset, whatever the interleaving of detection
    /// cycles, runner steps, clock and heartbeats, detection counts no
    /// failure of the node (and never sets `failed=True`) until a cycle
    /// after the runner applied the reset saw Nova report it up, or the
    /// reset grace (from the first cycle that saw it down) ran out. After
    /// that, a node reading down is counted again.
    #[test]
    fn a_reset_node_is_never_judged_failed_before_nova_reports_it_up(
        threshold in 0u32..4,
        grace in prop_oneof![Just(0u64), 1u64..1200],
        restore in any::<bool>(),
        steps in prop::collection::vec(after_reset(), 1..60),
    ) {
        let mut h = Harness::new(&["c1"], &["ha-1"]);
        h.thresholds.threshold = threshold;
        h.policy.reset.grace = std::time::Duration::from_secs(grace);
        h.policy.reset.restore_nova_service = restore;
        let node = NodeName::from("c1");
        // A whole recovery first.
        for _ in 0..50 {
            let (d, committed) = h.decide(&node);
            if matches!(d.action, Action::Idle) {
                break;
            }
            prop_assert!(committed.is_ok());
            carry_out(&mut h, &node, &d, || Dice::Ok);
        }
        prop_assert_eq!(h.observe(&node).0.map(|r| r.phase), Some(Phase::Done));
        // The operator resets the flags; the node's nova-compute has not
        // sent a heartbeat yet.
        let s = h.policy.schema.clone();
        h.kv.put(&s.failed(&node), "False");
        h.kv.put(&s.recovered(&node), "False");
        let mut seen_up = false;
        let mut grace_from = None;
        for step in steps {
            match step {
                AfterReset::Runner => {
                    let (d, committed) = h.decide(&node);
                    if committed.is_ok() {
                        carry_out(&mut h, &node, &d, || Dice::Ok);
                    }
                }
                AfterReset::Advance(secs) => h.advance(std::time::Duration::from_secs(secs)),
                AfterReset::Nova(up) => h.side("c1").world.service.up = up,
                AfterReset::Detect => {
                    let applied = h.observe(&node).0.is_none();
                    let svc = h.side("c1").world.service.clone();
                    let expired = grace_from.is_some_and(|t: chrono::DateTime<chrono::Utc>| {
                        h.now >= t + chrono::TimeDelta::seconds(grace as i64)
                    });
                    let free = seen_up || expired;
                    let events = h.detect();
                    if applied && svc.enabled && !svc.up && grace_from.is_none() && !free {
                        grace_from = Some(h.now);
                    }
                    if applied && svc.up && !svc.forced_down {
                        seen_up = true;
                    }
                    if free {
                        if applied && svc.enabled && !svc.up {
                            prop_assert!(
                                events.iter().any(|e| matches!(e, DetectEvent::Failing { .. })),
                                "not counted again after the wait ended: {:?}", events
                            );
                        }
                        break;
                    }
                    for e in &events {
                        prop_assert!(
                            !matches!(e, DetectEvent::Failing { .. } | DetectEvent::Failed { .. }),
                            "counted before Nova reported it up: {:?} (events {:?})", e, events
                        );
                    }
                    let failed = h.kv.get(&s.failed(&node));
                    prop_assert_eq!(failed.as_deref(), Some("False"));
                }
            }
        }
    }
}

/// A raw value for a flag: valid spellings, garbage, or absent.
fn raw_flag() -> impl Strategy<Value = Option<&'static str>> {
    prop::sample::select(vec![
        None,
        Some("True"),
        Some("False"),
        Some("true"),
        Some("0"),
        Some(""),
        Some("garbage"),
        Some("2"),
    ])
}

fn raw_count() -> impl Strategy<Value = Option<&'static str>> {
    prop::sample::select(vec![
        None,
        Some("0"),
        Some("3"),
        Some("7"),
        Some("-1"),
        Some("x"),
        Some(""),
    ])
}

#[derive(Clone, Debug)]
struct RawNode {
    failed: Option<&'static str>,
    recovered: Option<&'static str>,
    fails: Option<&'static str>,
    maintenance: Option<&'static str>,
    in_tree: bool,
    in_nova: bool,
    up: bool,
    enabled: bool,
    consul: Option<bool>,
    tcp: Option<bool>,
    /// `internal/awaiting_up` (an administrator's reset not yet seen up).
    awaiting: Option<&'static str>,
}

fn raw_node() -> impl Strategy<Value = RawNode> {
    (
        (raw_flag(), raw_flag(), raw_count(), raw_flag()),
        (
            any::<bool>(),
            prop::bool::weighted(0.9),
            any::<bool>(),
            prop::bool::weighted(0.8),
        ),
        (
            prop::option::of(any::<bool>()),
            prop::option::of(any::<bool>()),
            raw_flag(),
        ),
    )
        .prop_map(
            |(
                (failed, recovered, fails, maintenance),
                (in_tree, in_nova, up, enabled),
                (consul, tcp, awaiting),
            )| RawNode {
                failed,
                recovered,
                fails,
                maintenance,
                in_tree,
                in_nova,
                up,
                enabled,
                consul,
                tcp,
                awaiting,
            },
        )
}

fn tree(schema: &Schema, nodes: &[RawNode], ha: &[Option<&'static str>]) -> Snapshot {
    let mut entries = BTreeMap::new();
    let mut index = 0;
    let mut put = |k: String, v: &str| {
        index += 1;
        entries.insert(
            k,
            KvEntry {
                value: Some(v.as_bytes().to_vec()),
                modify_index: index,
            },
        );
    };
    for (i, n) in nodes.iter().enumerate() {
        let name = NodeName::new(format!("c{i}"));
        if !n.in_tree {
            continue;
        }
        put(format!("{}/general", schema.compute_node(&name)), "");
        if let Some(v) = n.failed {
            put(schema.failed(&name), v);
        }
        if let Some(v) = n.recovered {
            put(schema.recovered(&name), v);
        }
        if let Some(v) = n.fails {
            put(schema.number_fails(&name), v);
        }
        if let Some(v) = n.maintenance {
            put(schema.maintenance(&name), v);
        }
        if let Some(v) = n.awaiting {
            put(schema.awaiting_up(&name), v);
        }
    }
    for (i, v) in ha.iter().enumerate() {
        let name = NodeName::new(format!("ha-{i}"));
        put(schema.ha_general(&name), "");
        if let Some(v) = v {
            put(schema.in_use(&name), v);
        }
    }
    Snapshot { index, entries }
}

fn nova_of(nodes: &[RawNode]) -> BTreeMap<NodeName, NodeSignals> {
    nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| n.in_nova)
        .map(|(i, n)| {
            (
                NodeName::new(format!("c{i}")),
                NodeSignals {
                    nova: NovaService {
                        id: format!("s{i}"),
                        up: n.up,
                        enabled: n.enabled,
                        forced_down: false,
                    },
                    consul_failed: n.consul,
                    tcp_failed: n.tcp,
                },
            )
        })
        .collect()
}

/// Rules 5 and 6 for one batch of ops against the tree they were planned on.
fn check_ops(snap: &Snapshot, state: &ClusterState, ops: &[KvOp]) -> Result<(), TestCaseError> {
    for op in ops {
        let key = op.key();
        // Rule 5: False only as the creation of an absent key.
        if writes_false_flag(op) {
            let KvOp::Set { cas, .. } = op else {
                return Err(TestCaseError::fail(format!("flag deleted: {key}")));
            };
            prop_assert_eq!(*cas, 0, "failed/recovered reset to False: {}", key);
            prop_assert!(
                !snap.entries.contains_key(key),
                "existing flag rewritten False: {}",
                key
            );
        }
        // Rule 6: nothing of a node with an invalid value, no invalid key.
        for (name, cn) in &state.compute_nodes {
            if cn.has_invalid() {
                let folder = format!("{}/", Schema::new("t").compute_node(name));
                prop_assert!(
                    !key.starts_with(&folder),
                    "wrote {} of invalid node {}",
                    key,
                    name
                );
            }
        }
        for hs in state.ha_nodes.values() {
            if hs.in_use.value.is_err() {
                prop_assert!(
                    !key.starts_with(&format!("t/ha_nodes/{}/", hs.name)),
                    "wrote {}",
                    key
                );
            }
        }
        // Every write carries the index it was read at.
        if let KvOp::Set { cas, .. } = op {
            prop_assert_eq!(*cas, snap.cas_index(key), "stale CAS on {}", key);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Rules 5 and 6 for the detection judgement and for the recovery's
    /// decisions on arbitrary (partly invalid) trees.
    #[test]
    fn flags_are_never_reset_and_invalid_values_never_overwritten(
        nodes in prop::collection::vec(raw_node(), 1..6),
        ha in prop::collection::vec(raw_flag(), 0..3),
        threshold in 0u32..5,
        reachable in prop::bool::weighted(0.9),
        target in target_policy(),
        mass in any::<bool>(),
        timed in any::<bool>(),
    ) {
        let schema = Schema::new("t");
        let snap = tree(&schema, &nodes, &ha);
        let state = ClusterState::parse(&schema, &snap);
        let nova = nova_of(&nodes);
        let th = Thresholds { threshold, ..Thresholds::default() };
        let clock = crate::detect::ResetGrace {
            now: super::model::t0(),
            grace: std::time::Duration::from_secs(600),
        };
        let j = crate::detect::judge_at(
            &schema, &state, reachable.then_some(&nova), &th, timed.then_some(&clock),
        );
        if !reachable {
            prop_assert!(j.writes.is_empty());
        }
        for w in &j.writes {
            check_ops(&snap, &state, &w.ops)?;
            let folder = format!("{}/", schema.compute_node(&w.node));
            prop_assert!(w.ops.iter().all(|op| op.key().starts_with(&folder)), "op outside {}", folder);
        }
        let policy = Policy { schema: schema.clone(), target, ..Policy::default() };
        for (name, cn) in &state.compute_nodes {
            let mut obs = Observation::new(name.clone(), "e1", NodeFlags::from_state(cn, super::model::t0()));
            obs.ha_nodes = HaNodeObs::all(&schema, &snap, &state);
            obs.mass_failure = mass;
            let record = cn.recovery.value.clone().ok().flatten();
            let d = decide(&policy, record.as_ref(), &obs, super::model::t0());
            check_ops(&snap, &state, &d.ops)?;
            if mass {
                prop_assert!(!matches!(d.action, Action::Claim { .. } | Action::Fence), "{}", d.action);
            }
        }
    }

    /// Rule 7: when the failures of one window exceed the guard, nobody is
    /// marked failed, counting goes on, and the recovery claims nothing.
    #[test]
    fn mass_failure_marks_nobody_failed(
        signals in prop::collection::vec((any::<bool>(), prop::option::of(any::<bool>())), 2..20),
        counts in prop::collection::vec(0u32..10, 20),
        fraction in 0.0f64..1.0,
        max_nodes in prop::option::of(1usize..6),
        threshold in 0u32..4,
    ) {
        let schema = Schema::new("t");
        let mut entries = BTreeMap::new();
        let mut nova = BTreeMap::new();
        for (i, (up, consul)) in signals.iter().enumerate() {
            let name = NodeName::new(format!("c{i}"));
            entries.insert(schema.number_fails(&name), KvEntry { value: Some(counts[i].to_string().into_bytes()), modify_index: i as u64 + 1 });
            entries.insert(schema.failed(&name), KvEntry { value: Some(b"False".to_vec()), modify_index: i as u64 + 100 });
            nova.insert(name, NodeSignals {
                nova: NovaService { id: format!("s{i}"), up: *up, enabled: true, forced_down: false },
                consul_failed: *consul,
                tcp_failed: None,
            });
        }
        let snap = Snapshot { index: 1000, entries };
        let state = ClusterState::parse(&schema, &snap);
        let th = Thresholds { threshold, max_failed_fraction: fraction, max_failed_nodes: max_nodes };
        let j = judge(&schema, &state, Some(&nova), &th);
        let failing: Vec<&NodeName> = nova.iter().filter(|(_, s)| s.all_failed()).map(|(n, _)| n).collect();
        let tripped = guard_trips(failing.len(), nova.len(), &th);
        prop_assert_eq!(j.mass_failure, tripped);
        let sets_true = j.all_ops().any(|op| matches!(op, KvOp::Set { key, value, .. }
            if key.ends_with("/status/failed") && value.as_slice() == format_bool(true).as_bytes()));
        if tripped {
            prop_assert!(!sets_true, "failed=True written under a mass failure");
            // Counting goes on for every failing node.
            for n in failing {
                let key = schema.number_fails(n);
                prop_assert!(j.all_ops().any(|op| op.key() == key), "{} not counted", n);
            }
        }
    }
}

#[test]
fn a_claimed_record_is_never_claimed_again() {
    // The latch: a node with recovered=True and no record is left alone.
    let h = Harness::new(&["c1"], &["ha-1"]);
    let node = NodeName::from("c1");
    let (_, mut obs) = h.observe(&node);
    obs.flags.recovered.value = Ok(true);
    let d = decide(&h.policy, None::<&RecoveryRecord>, &obs, h.now);
    assert_eq!(d.action, Action::Idle);
    assert!(d.ops.is_empty());
}
