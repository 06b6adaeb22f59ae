//! Benchmark: on the real OpenStack test stack, ACTIVE servers on
//! compute-1, two `novaha run` processes (IPMI fencing through ipmi_sim)
//! watching the three signals (nova, each host's Consul agent, each host's
//! sshd stand-in): the time from killing compute-1 as a host (SIGKILL to its
//! nova-compute, its Consul agent and its sshd stand-in at once; its BMC
//! still reads power on) to every server ACTIVE on the HA node, polled every
//! 100 ms from outside (one Nova list per poll, no sleeps in novaha).
//! Several runs; prints each run with its phases (from the recovery
//! record's timeline) and the median and range.
//!
//! Two detection set-ups (`NOVAHA_BENCH_DETECTION`):
//! - `short` (default): the stack's short timers (`report_interval = 2`,
//!   `service_down_time = 10`), 1 s cycle, threshold 1: detection through
//!   Nova's own `down`.
//! - `production-fast`: Nova's production timers (`report_interval = 10`,
//!   `service_down_time = 60`), 2 s cycle, threshold 2,
//!   `[monitor.nova] stale_after = "15s"`: detection through the heartbeat
//!   age, long before Nova reads the service down.
//!
//! Run: `cargo bench -p novaha --bench real_openstack` (a release build;
//! brings the stack up, about a minute, unless `NOVAHA_OPENSTACK_STATE`
//! names a running one). `NOVAHA_BENCH_RUNS` (default 5) sets the runs,
//! `NOVAHA_BENCH_SERVERS` (default 5) the servers, `NOVAHA_BENCH_MICROVERSION`
//! a `[openstack] max_microversion` (default: novaha's own, 2.95, where each
//! evacuated server is started after it lands SHUTOFF). Figures:
//! docs/benchmarks.md.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../../../tests/real_openstack/harness.rs"]
mod harness;

use std::time::{Duration, Instant, SystemTime};

use harness::{Detection, Harness, Settings};

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let runs: usize = env_or("NOVAHA_BENCH_RUNS", 5);
    let servers: usize = env_or("NOVAHA_BENCH_SERVERS", 5);
    let name: String = env_or("NOVAHA_BENCH_DETECTION", "short".to_owned());
    let detection = match name.as_str() {
        "short" => Detection::SHORT,
        "production-fast" => Detection::PRODUCTION_FAST,
        other => panic!("NOVAHA_BENCH_DETECTION={other}: want short or production-fast"),
    };
    let mv: Option<&'static str> = std::env::var("NOVAHA_BENCH_MICROVERSION")
        .ok()
        .map(|v| &*Box::leak(v.into_boxed_str()));
    let mut totals = Vec::new();
    for run in 1..=runs {
        let t = one_run(run, mv, servers, detection);
        totals.push(t);
    }
    totals.sort_by(f64::total_cmp);
    let median = if totals.len() % 2 == 1 {
        totals[totals.len() / 2]
    } else {
        (totals[totals.len() / 2 - 1] + totals[totals.len() / 2]) / 2.0
    };
    println!(
        "kill -> {servers} servers ACTIVE on the HA node, {} runs (detection {name}: {detection:?}; \
         microversion {}): median {median:.1} s, range {:.1}-{:.1} s",
        totals.len(),
        mv.unwrap_or("2.95"),
        totals[0],
        totals[totals.len() - 1]
    );
}

/// One measured recovery; returns the seconds from the kill to every
/// server ACTIVE on the HA node.
fn one_run(run: usize, mv: Option<&'static str>, servers: usize, detection: Detection) -> f64 {
    let mut h = Harness::start(
        &format!("bench-os-{run}-{}", std::process::id()),
        Settings {
            max_microversion: mv,
            concurrency: 8,
            target: "ha_node",
            detection,
        },
    );
    let specs: Vec<(String, &str, bool)> = (1..=servers)
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
    // A host dies at any moment of its nova-compute's heartbeat period,
    // not at the one the harness's sequence of steps happens to reach:
    // wait a pseudo-random part of report_interval first.
    let period_ms = u64::from(detection.timers.report_interval) * 1000;
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()));
    let pause = Duration::from_millis((nanos / 1000 + run as u64 * 7919) % period_ms);
    std::thread::sleep(pause);
    let killed_at = SystemTime::now();
    let start = Instant::now();
    h.stack.kill_host(&failed);
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
        "run {run}: {total:.1} s (kill after a random pause of {:.1} s; since the \
         kill: detected {}, fenced {}, forced_down {}, evacuating {}, evacuated {}, done {})",
        pause.as_secs_f64(),
        show("detected"),
        show("fenced"),
        show("forced_down"),
        show("evacuating"),
        show("evacuated"),
        show("done"),
    );
    total
}
