//! The fault simulator in the default test run: every seed it ever found
//! stays as a regression test, a schedule replays identically, and a
//! campaign of 1,000 seeds keeps every invariant.

use std::time::Duration;

use novaha_chaos::schedule::{Cloud, Fault, Schedule, Step, Target};
use novaha_chaos::sim;

/// Seeds the campaigns found, each with the defect it exposed (all fixed).
const FOUND: &[(u64, &str)] = &[
    (
        18,
        "a partition of two live hosts counted as a mass failure (checker)",
    ),
    (
        71,
        "the mass-failure guard holding a dead spare's node back (checker)",
    ),
    (
        157,
        "an evacuation sent again for an instance Nova still moves (checker)",
    ),
    (
        173,
        "a node in maintenance hid a mass partition from the guard",
    ),
    (
        183,
        "a node in maintenance hid a mass partition from the guard",
    ),
    (
        203,
        "a reset applied by a new leader before it read Nova left the node forced down",
    ),
    (
        327,
        "a fence decided on the read from before a partition healed (checker grace)",
    ),
    (
        422,
        "a node judged failed during a partition was fenced after it healed",
    ),
    (476, "a fence retried after the node came back"),
    (536, "a fence retried after the node came back"),
    (582, "a failed evacuation counted as a first one (checker)"),
    (719, "a failed evacuation counted as a first one (checker)"),
    (
        963,
        "a node judged failed during a partition was fenced after it healed",
    ),
    (
        1026,
        "a fence decided on a judgement gone stale during a Nova outage",
    ),
    (
        4837,
        "a reset skipped restoring a service whose force-down outcome was unknown",
    ),
    (
        11090,
        "a reset by a new leader trusted a stale read and left the node forced down",
    ),
    (
        16682,
        "a node fenced well after a two-host partition healed",
    ),
    (
        19761,
        "a reset by a new leader trusted a stale read and left the node forced down",
    ),
    (
        59377,
        "done recorded from a read made just before the cell went down (checker grace)",
    ),
];

#[test]
fn every_seed_ever_found_keeps_every_invariant() {
    let mut failed = Vec::new();
    for (seed, what) in FOUND {
        let o = sim::run(&Schedule::generate(*seed));
        if !o.violations.is_empty() {
            failed.push(format!("seed {seed} ({what}): {:?}", o.violations));
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

#[test]
fn a_schedule_replays_identically() {
    for seed in [3, 422, 1026] {
        let s = Schedule::generate(seed);
        assert_eq!(sim::run(&s).digest, sim::run(&s).digest, "seed {seed}");
    }
    assert_ne!(
        sim::run(&Schedule::generate(3)).digest,
        sim::run(&Schedule::generate(4)).digest
    );
}

/// The checker is not blind: writes that break a rule are reported.
#[tokio::test(start_paused = true)]
async fn the_checker_reports_planted_violations() {
    use novaha_chaos::schedule::Rng;
    use novaha_chaos::world::World;
    use novaha_core::kv::Schema;
    use novaha_core::store::KvOp;

    let mut w = World::new(Schema::new("p"), 2, 1, 1, false, Rng::new(1));
    w.consul.holder = Some("s".into());
    w.put("p/compute_nodes/c1/status/failed", "True");
    let cas = w.consul.kv["p/compute_nodes/c1/status/failed"].1;
    w.apply(
        "s",
        &[KvOp::set("p/compute_nodes/c1/status/failed", "False", cas)],
    )
    .expect("applied");
    assert!(
        w.violations.iter().any(|v| v.contains("rule 5")),
        "{:?}",
        w.violations
    );
    w.put("p/compute_nodes/c2/status/failed", "maybe");
    w.invalid.insert("p/compute_nodes/c2/status/failed".into());
    let cas = w.consul.kv["p/compute_nodes/c2/status/failed"].1;
    w.apply(
        "s",
        &[KvOp::set("p/compute_nodes/c2/status/failed", "True", cas)],
    )
    .expect("applied");
    assert!(
        w.violations.iter().any(|v| v.contains("rule 6")),
        "{:?}",
        w.violations
    );
    // A write from a session that does not hold the lock never lands.
    assert!(w.apply("other", &[KvOp::set("p/x", "1", 0)]).is_err());
    assert!(w.get("p/x").is_none());
}

/// Rule 11 for a decision that writes nothing: the leader claimed a node
/// whose BMC times out and waits to retry the fence; the lock is taken
/// from it (a stall: it notices ten minutes later). Its retry must not
/// fence. Without the bare lease check before such an action, each of
/// these moments of the loss gave "controller 0 fenced c1 without holding
/// the lock".
#[test]
fn a_leader_deposed_while_it_waits_to_retry_a_fence_does_not_fence() {
    let s = Duration::from_secs;
    for lost_at in [
        s(51) + Duration::from_millis(500),
        s(57),
        s(59),
        s(61),
        s(73),
    ] {
        let schedule = Schedule {
            seed: 1,
            cloud: Cloud {
                hosts: 3,
                spares: 1,
                per_host: 1,
                target: Target::HaNode,
                lands_shutoff: false,
                skew_secs: 0,
                concurrency: 1,
            },
            steps: vec![
                Step {
                    at: s(1),
                    fault: Fault::BmcTimeout(0, s(300)),
                },
                Step {
                    at: s(1),
                    fault: Fault::KillHost(0),
                },
                Step {
                    at: lost_at,
                    fault: Fault::LeaseLoss {
                        notice_after: s(600),
                    },
                },
            ],
        };
        let o = sim::run(&schedule);
        assert!(
            o.violations.is_empty(),
            "lock lost at {lost_at:?}: {:?}",
            o.violations
        );
    }
}

#[test]
fn a_thousand_seeds_keep_every_invariant() {
    let seeds: u64 = std::env::var("NOVAHA_CHAOS_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let threads = 2;
    let found: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    (0..seeds)
                        .filter(|s| s % threads == t)
                        .filter_map(|seed| {
                            let o = sim::run(&Schedule::generate(seed));
                            (!o.violations.is_empty())
                                .then(|| format!("seed {seed}: {:?}", o.violations))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a campaign thread"))
            .collect()
    });
    assert!(
        found.is_empty(),
        "{} of {seeds} schedules violate (replay with novaha-chaos --first-seed S --seeds 1): {found:#?}",
        found.len()
    );
}
