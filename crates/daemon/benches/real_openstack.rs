//! Benchmark (issue 8): on the real OpenStack test stack
//! (`service_down_time = 10`, `report_interval = 2`), five ACTIVE servers on
//! compute-1, two `novaha run` processes (1 s cycle, threshold 1, IPMI
//! fencing through ipmi_sim): the time from killing compute-1's
//! nova-compute (SIGKILL, a power cut) to every server ACTIVE on the HA
//! node, polled every 100 ms from outside (one Nova list per poll, no
//! sleeps in novaha). Several runs; prints each run with its phases (from
//! the recovery record's timeline) and the median and range.
//!
//! Run: `cargo bench -p novaha --bench real_openstack` (a release build;
//! brings the stack up, about a minute, unless `NOVAHA_OPENSTACK_STATE`
//! names a running one). `NOVAHA_BENCH_RUNS` (default 5) sets the runs,
//! `NOVAHA_BENCH_MICROVERSION` a `[openstack] max_microversion` (default:
//! novaha's own, 2.95, where each evacuated server is started after it
//! lands SHUTOFF). Figures: docs/benchmarks.md.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../../../tests/real_openstack/harness.rs"]
mod harness;

use std::time::{Duration, Instant, SystemTime};

use harness::{Harness, Settings};

/// The servers on the failed node.
const SERVERS: usize = 5;

fn main() {
    let runs: usize = std::env::var("NOVAHA_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let mv: Option<&'static str> = std::env::var("NOVAHA_BENCH_MICROVERSION")
        .ok()
        .map(|v| &*Box::leak(v.into_boxed_str()));
    let mut totals = Vec::new();
    for run in 1..=runs {
        let t = one_run(run, mv);
        totals.push(t);
    }
    totals.sort_by(f64::total_cmp);
    let median = if totals.len() % 2 == 1 {
        totals[totals.len() / 2]
    } else {
        (totals[totals.len() / 2 - 1] + totals[totals.len() / 2]) / 2.0
    };
    println!(
        "kill -> {SERVERS} servers ACTIVE on the HA node, {} runs (microversion {}): \
         median {median:.1} s, range {:.1}-{:.1} s",
        totals.len(),
        mv.unwrap_or("2.95"),
        totals[0],
        totals[totals.len() - 1]
    );
}

/// One measured recovery; returns the seconds from the kill to every
/// server ACTIVE on the HA node.
fn one_run(run: usize, mv: Option<&'static str>) -> f64 {
    let mut h = Harness::start(
        &format!("bench-os-{run}-{}", std::process::id()),
        Settings {
            max_microversion: mv,
            concurrency: 8,
            target: "ha_node",
        },
    );
    let specs: Vec<(String, &str, bool)> = (1..=SERVERS)
        .map(|i| (format!("bench-{i}"), "ACTIVE", false))
        .collect();
    let specs: Vec<(&str, &str, bool)> =
        specs.iter().map(|(n, s, o)| (n.as_str(), *s, *o)).collect();
    let servers = h.boot_all(&specs);
    h.spawn("a");
    h.spawn("b");
    h.wait_watching();

    let failed = h.failed().to_owned();
    let ha = h.ha().to_owned();
    let killed_at = SystemTime::now();
    let start = Instant::now();
    h.stack.kill_compute(&failed);
    let deadline = start + Duration::from_secs(300);
    loop {
        let on_ha = h.nova.servers_on(&ha);
        let active = on_ha
            .iter()
            .filter(|s| s["status"] == "ACTIVE" && s["OS-EXT-STS:task_state"].is_null())
            .count();
        if active == servers.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "run {run}: {active}/{} ACTIVE on {ha} after 300 s\n{}",
            servers.len(),
            h.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let total = start.elapsed().as_secs_f64();
    // Phases, from the record's timeline (the leader's clock = ours), once
    // novaha has seen every server land too.
    h.wait_done();
    let rec = h.record().unwrap_or_default();
    let at = |k: &str| -> Option<f64> {
        let s = rec["timeline"][k].as_str()?;
        let t = chrono::DateTime::parse_from_rfc3339(s).ok()?;
        let t: SystemTime = t.with_timezone(&chrono::Utc).into();
        Some(t.duration_since(killed_at).ok()?.as_secs_f64())
    };
    let show = |k: &str| at(k).map_or_else(|| "-".to_owned(), |s| format!("{s:.1}"));
    println!(
        "run {run}: {total:.1} s (since the kill: detected {}, fenced {}, forced_down {}, \
         evacuating {}, evacuated {}, done {})",
        show("detected"),
        show("fenced"),
        show("forced_down"),
        show("evacuating"),
        show("evacuated"),
        show("done"),
    );
    total
}
