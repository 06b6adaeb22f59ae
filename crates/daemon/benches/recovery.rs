//! The recovery benchmark (not a test; figures in docs/benchmarks.md, "One
//! poll cycle and a 50-instance failover"): on the simulator with 1,000 compute
//! hosts and 20,000 instances, the CPU time and peak memory of one poll
//! cycle of a real `novaha run` leader, and the time from `failed=True` to
//! the last evacuate call sent for a 50-instance host (sim latency 0).
//!
//! Run it in release mode: `cargo bench -p novaha --bench recovery`.
//!
//! Set-up: a real Consul dev agent (testkit), the simulator in this process
//! (1,000 hosts x 20 instances, plus 30 more on `compute-1` so that it holds
//! 50; 1 HA node; `service_down_time` 3s; evacuations land at once), and
//! one `novaha run` process with the demo's config (monitor every 1s,
//! threshold 2, noop fencer, evacuate to the HA node, concurrency 8,
//! progress polled every 500ms, log notifier). The daemon is a separate
//! process so that its figures exclude the simulator: CPU time is its
//! `utime + stime` from `/proc/<pid>/stat`, peak memory its `VmHWM`.
//!
//! - One poll cycle: after the first cycles (node discovery) the leader
//!   rewrites `novaha/last_cycle` once per cycle; the CPU time the process
//!   used over [`CYCLES`] such changes, divided by their number (so it
//!   includes the per-second session renewal and check pass).
//! - Failover: `compute-1` is killed in the sim; `failed=True` is seen by
//!   polling its key every 10 ms; the evacuate calls are the sim's record of
//!   mutating calls (with their arrival times): the first, the last, how
//!   many runs they left in, and how many instances were called twice
//!   (none may be). `BENCH_LOG=<path>` keeps the daemon's log.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use novaha_sim::{Sim, SimConfig};
use novaha_testkit::consul::ConsulAgent;
use novaha_testkit::daemon::{Daemon, novaha};

/// Compute hosts in the simulated cloud (`BENCH_HOSTS`, default 1000).
fn hosts() -> usize {
    env_or("BENCH_HOSTS", 1000)
}
/// Instances per compute host (`BENCH_PER_HOST`, default 20: 20,000 in all).
fn per_host() -> usize {
    env_or("BENCH_PER_HOST", 20)
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
/// Instances on the host that fails.
const VICTIM_INSTANCES: usize = 50;
/// The host that fails.
const VICTIM: &str = "compute-1";
/// Steady-state cycles measured.
const CYCLES: usize = 20;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_novaha"))
}

/// (utime + stime in clock ticks, VmHWM kB, VmRSS kB) of `pid`.
fn usage(pid: u32) -> (u64, u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/pid/stat");
    let rest = stat.rsplit_once(") ").expect("stat format").1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); `rest` starts at field 3.
    let ticks = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (ticks, kb("VmHWM:"), kb("VmRSS:"))
}

fn clock_ticks() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

fn ms(ticks: u64, hz: u64) -> f64 {
    ticks as f64 * 1000.0 / hz as f64
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("recovery benchmark: run it with `cargo bench -p novaha --bench recovery`");
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(bench());
}

#[allow(non_snake_case)]
async fn bench() {
    let (HOSTS, PER_HOST) = (hosts(), per_host());
    let hz = clock_ticks();
    let agent = ConsulAgent::start();
    let http = reqwest::Client::new();
    let kv = |key: String| {
        let http = http.clone();
        let url = format!("{}/v1/kv/{key}?raw", agent.http_addr());
        async move {
            let r = http.get(url).send().await.expect("consul GET");
            if r.status().as_u16() == 404 {
                return None;
            }
            Some(r.text().await.expect("consul body"))
        }
    };

    let setup = Instant::now();
    let sim = Sim::start(
        "127.0.0.1:0",
        SimConfig {
            hosts: HOSTS,
            instances_per_host: PER_HOST,
            ha_nodes: 1,
            service_down_time: Duration::from_secs(3),
            evacuate_delay: Duration::ZERO,
            ..SimConfig::default()
        },
    )
    .await
    .expect("start the sim");
    let owner = sim.servers_on(VICTIM)[0].clone();
    for i in PER_HOST..VICTIM_INSTANCES {
        sim.add_server(
            &format!("big-{i}"),
            VICTIM,
            &owner.user_id,
            &owner.tenant_id,
            BTreeMap::new(),
        )
        .expect("add a server");
    }
    let total = sim.servers().len();
    assert_eq!(sim.servers_on(VICTIM).len(), VICTIM_INSTANCES);

    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bench.toml");
    // The demo's config; `BENCH_CONCURRENCY` and `BENCH_EVACUATE_POLL`
    // override `[evacuate] concurrency` (default 8) and `poll_interval`.
    let mut text = novaha_demo::config_text(&agent.http_addr(), &sim, "bench");
    let poll = std::env::var("BENCH_EVACUATE_POLL").unwrap_or_else(|_| "500ms".to_owned());
    let concurrency = env_or("BENCH_CONCURRENCY", 8);
    text = text.replace(
        "poll_interval = \"500ms\"",
        &format!("poll_interval = \"{poll}\"\nconcurrency = {concurrency}"),
    );
    assert!(text.contains(&format!("concurrency = {concurrency}")));
    if let Ok(level) = std::env::var("BENCH_LOG_LEVEL") {
        text = text.replace("level = \"info\"", &format!("level = \"{level}\""));
    }
    std::fs::write(&cfg, text).unwrap();
    println!("[evacuate] concurrency = {concurrency}, poll_interval = \"{poll}\"");
    let o = novaha(
        bin(),
        &["ha-node", "register", "ha-1", "-c", cfg.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut daemon = Daemon::spawn(bin(), &cfg, "bench", dir.path(), &[]);
    let pid = daemon.guard().pid();
    println!(
        "set-up: {HOSTS} compute hosts + 1 HA node, {total} instances ({VICTIM_INSTANCES} on {VICTIM}); \
         sim seeded in {:.1}s",
        setup.elapsed().as_secs_f64()
    );

    // Wait for discovery: every host has its keys.
    let prefix = "ha_cluster";
    let last_key = format!("{prefix}/novaha/last_cycle");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let last = kv(format!(
            "{prefix}/compute_nodes/compute-{HOSTS}/internal/number_fails"
        ))
        .await;
        if last.is_some() && kv(last_key.clone()).await.is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the daemon did not discover {HOSTS} hosts in 120s:\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "discovery: all hosts in the K/V tree {:.1}s after start; peak memory so far {} kB",
        setup.elapsed().as_secs_f64(),
        usage(pid).1
    );

    // Steady state: count cycles by the changes of novaha/last_cycle.
    let mut seen = kv(last_key.clone()).await;
    let mut changes = 0;
    let mut start = None;
    let warmup = 3;
    while changes < warmup + CYCLES {
        let now = kv(last_key.clone()).await;
        if now != seen {
            seen = now;
            changes += 1;
            if changes == warmup {
                start = Some((usage(pid), Instant::now()));
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let ((t0, _, _), w0) = start.expect("warm-up done");
    let (t1, hwm, rss) = usage(pid);
    let per_cycle = ms(t1 - t0, hz) / CYCLES as f64;
    println!(
        "poll cycle: {CYCLES} cycles in {:.1}s wall; CPU {:.1} ms per cycle ({} ticks at {hz} Hz in all); \
         peak memory (VmHWM) {hwm} kB, RSS now {rss} kB",
        w0.elapsed().as_secs_f64(),
        per_cycle,
        t1 - t0
    );
    println!("last_cycle: {}", seen.unwrap_or_default());

    // Failover of the 50-instance host.
    let ids: Vec<String> = sim
        .servers_on(VICTIM)
        .iter()
        .map(|s| s.id.to_string())
        .collect();
    sim.clear_calls();
    sim.kill(VICTIM).expect("kill");
    let killed = Utc::now();
    let failed_key = format!("{prefix}/compute_nodes/{VICTIM}/status/failed");
    let deadline = Instant::now() + Duration::from_secs(60);
    let failed_at = loop {
        if kv(failed_key.clone())
            .await
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
        {
            break Utc::now();
        }
        assert!(
            Instant::now() < deadline,
            "no failed=True in 60s:\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let (cpu_failed, _, _) = usage(pid);
    let evacuations = |calls: &[novaha_sim::Call]| -> Vec<DateTime<Utc>> {
        calls
            .iter()
            .filter(|c| c.method == "POST" && c.body.get("evacuate").is_some())
            .filter(|c| ids.iter().any(|id| c.path.contains(id.as_str())))
            .map(|c| c.time)
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let times = loop {
        let t = evacuations(&sim.calls());
        if t.len() >= VICTIM_INSTANCES {
            break t;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {VICTIM_INSTANCES} evacuate calls in 120s:\n{}",
            t.len(),
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let first = *times.iter().min().unwrap();
    let last = *times.iter().max().unwrap();
    // How the calls went out: runs of calls less than 20 ms apart, and the
    // longest pause between two calls.
    let mut sorted = times.clone();
    sorted.sort();
    let gaps: Vec<f64> = sorted
        .windows(2)
        .map(|w| (w[1] - w[0]).num_microseconds().unwrap_or(0) as f64 / 1e6)
        .collect();
    let runs = 1 + gaps.iter().filter(|g| **g >= 0.020).count();
    let longest = gaps.iter().copied().fold(0.0, f64::max);
    let record_key = format!("{prefix}/compute_nodes/{VICTIM}/internal/recovery");
    let deadline = Instant::now() + Duration::from_secs(120);
    let (done_at, record) = loop {
        if let Some(r) = kv(record_key.clone()).await {
            let v: serde_json::Value = serde_json::from_str(&r).unwrap_or_default();
            if v["phase"] == "done" {
                break (Utc::now(), v);
            }
        }
        assert!(
            Instant::now() < deadline,
            "recovery not done in 120s:\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let (cpu_done, hwm, _) = usage(pid);
    let secs = |a: DateTime<Utc>, b: DateTime<Utc>| (b - a).num_milliseconds() as f64 / 1000.0;
    println!(
        "failover: failed=True {:.2}s after the kill (service_down_time 3s, 3 cycles over threshold 2)",
        secs(killed, failed_at)
    );
    println!(
        "failover: failed=True -> first evacuate call {:.3}s, -> last ({VICTIM_INSTANCES}th) evacuate call {:.3}s",
        secs(failed_at, first),
        secs(failed_at, last)
    );
    println!(
        "failover: the {VICTIM_INSTANCES} calls left in {runs} runs (calls < 20 ms apart); longest pause between two calls {longest:.3}s"
    );
    let mut per_server: BTreeMap<String, usize> = BTreeMap::new();
    for c in sim
        .calls()
        .iter()
        .filter(|c| c.method == "POST" && c.body.get("evacuate").is_some())
    {
        *per_server.entry(c.path.clone()).or_default() += 1;
    }
    let twice = per_server.values().filter(|n| **n > 1).count();
    println!(
        "failover: evacuate calls per instance: {} instances called, {twice} called more than once",
        per_server.len()
    );
    if let Ok(path) = std::env::var("BENCH_LOG") {
        std::fs::write(&path, daemon.log()).expect("write BENCH_LOG");
        println!("daemon log copied to {path}");
    }
    if let Some(detected) = record["timeline"]["detected"]
        .as_str()
        .and_then(|d| DateTime::parse_from_rfc3339(d).ok())
    {
        println!(
            "failover: record's detected -> last evacuate call {:.3}s",
            secs(detected.with_timezone(&Utc), last)
        );
    }
    println!(
        "failover: failed=True -> phase done {:.2}s; daemon CPU over the recovery {:.0} ms; peak memory (VmHWM) {hwm} kB",
        secs(failed_at, done_at),
        ms(cpu_done - cpu_failed, hz)
    );
    let on_ha = ids
        .iter()
        .filter_map(|id| sim.server(&id.parse().unwrap()))
        .filter(|s| s.host == "ha-1")
        .count();
    println!("failover: {on_ha} of {VICTIM_INSTANCES} instances on ha-1");
    daemon.guard().signal("TERM");
    let _ = daemon.guard().wait_exit(Duration::from_secs(15));
}
