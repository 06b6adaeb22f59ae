//! Day two, end to end: real `novaha run` processes against a real Consul
//! agent and the Keystone + Nova simulator, looked at the way an operator
//! does (`/readyz`, `/metrics`, `novaha status`, the log):
//!
//! - a leader that cannot judge (no cloud configured, Nova down, Keystone
//!   refusing) says so after `[monitor] blind_after`, and says it no more
//!   once it can judge again;
//! - `novaha pause` / `resume` is seen by the running leader
//!   (`novaha_paused`, one log line each way) and detection goes on;
//! - `novaha node maintenance` keeps detection off the node.
//!
//! Every test has its own agent, temp dir, K/V prefix and sim, and stops
//! what it started.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use novaha_sim::{FaultKind, FaultRule, Sim, SimConfig, SimHandle};
use novaha_testkit::consul::ConsulAgent;
use novaha_testkit::daemon::{Cli, Daemon, DaemonConfig, OpenStackAuth, listen_of, novaha};
use novaha_testkit::process::wait_until;
use serde_json::Value;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_novaha"))
}

/// `GET path` on the daemon of `cfg`: (status code, body); (0, error)
/// while it does not listen yet.
fn get(cfg: &Path, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let answer = (|| -> std::io::Result<String> {
        let mut conn = std::net::TcpStream::connect(listen_of(cfg))?;
        conn.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(conn, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
        let mut out = String::new();
        conn.read_to_string(&mut out)?;
        Ok(out)
    })();
    let answer = match answer {
        Ok(a) => a,
        Err(e) => return (0, e.to_string()),
    };
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, body.to_owned())
}

/// The value of one unlabelled (or fully labelled) sample in `/metrics`.
fn sample(cfg: &Path, series: &str) -> Option<f64> {
    let (_, body) = get(cfg, "/metrics");
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// A sim, a Consul agent and the daemons' config dir.
struct Setup {
    dir: tempfile::TempDir,
    agent: ConsulAgent,
    prefix: String,
    sim: Option<SimHandle>,
    rt: tokio::runtime::Runtime,
}

impl Drop for Setup {
    fn drop(&mut self) {
        if let Some(sim) = self.sim.take() {
            self.rt.block_on(sim.shutdown());
        }
    }
}

impl Setup {
    fn start(prefix: &str) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let sim = rt
            .block_on(Sim::start(
                "127.0.0.1:0",
                SimConfig {
                    hosts: 3,
                    instances_per_host: 1,
                    ha_nodes: 1,
                    service_down_time: Duration::from_secs(1),
                    ..SimConfig::default()
                },
            ))
            .expect("start the sim");
        Self {
            dir: tempfile::tempdir().unwrap(),
            agent: ConsulAgent::start(),
            prefix: prefix.to_owned(),
            sim: Some(sim),
            rt,
        }
    }

    fn sim(&self) -> &SimHandle {
        self.sim.as_ref().unwrap()
    }

    /// A daemon config with the sim as its cloud (`cloud`) or none, a
    /// one-second blind grace, the test-only fencer, `extra_monitor` keys.
    fn config(&self, id: &str, cloud: bool, extra_monitor: &str) -> PathBuf {
        let creds = self.sim().credentials();
        let openstack = if cloud {
            OpenStackAuth {
                auth_url: creds.auth_url,
                username: creds.username,
                password: creds.password,
                project_name: creds.project_name,
            }
            .section()
        } else {
            String::new()
        };
        DaemonConfig {
            interval: "500ms",
            monitor: format!("blind_after = \"1s\"\n{extra_monitor}"),
            extra: format!(
                "{openstack}\n[fence]\ndriver = \"noop\"\nallow_noop = true\n\n[recovery]\nbackoff_initial = \"500ms\"\nbackoff_max = \"1s\"\n"
            ),
            ..DaemonConfig::fast(&self.agent.http_addr(), &self.prefix, id)
        }
        .write(self.dir.path())
    }

    fn spawn(&self, id: &str, cfg: &Path) -> Daemon {
        Daemon::spawn(bin(), cfg, id, self.dir.path(), &[])
    }

    fn cli(&self, cfg: &Path) -> Cli {
        Cli::new(bin(), cfg)
    }
}

fn wait_readyz(cfg: &Path, d: &Daemon, want: (u16, &str)) {
    let mut last = (0, String::new());
    let ok = wait_until(Duration::from_secs(30), || {
        last = get(cfg, "/readyz");
        last.0 == want.0 && last.1.starts_with(want.1)
    });
    assert!(
        ok,
        "/readyz never answered {want:?}, last {last:?}\n{}",
        d.log()
    );
}

#[test]
fn a_leader_without_a_cloud_is_blind_on_readyz_metrics_status_and_the_log() {
    let s = Setup::start("t-blind-nocloud");
    let cfg = s.config("a", false, "");
    let d = s.spawn("a", &cfg);
    assert!(
        d.wait_log("acquired the leader lock", 1, Duration::from_secs(30)),
        "{}",
        d.log()
    );
    wait_readyz(&cfg, &d, (503, "leader blind: cannot reach the cloud"));
    assert_eq!(sample(&cfg, "novaha_monitor_blind"), Some(1.0));
    assert!(
        sample(&cfg, "novaha_cycles_total{result=\"blind\"}").unwrap() >= 1.0,
        "a blind cycle is not counted as done"
    );
    assert_eq!(
        sample(&cfg, "novaha_cycles_total{result=\"ok\"}"),
        Some(0.0)
    );
    assert!(sample(&cfg, "novaha_monitor_judgement_age_seconds").unwrap() >= 1.0);
    let o = novaha(bin(), &["status", "-c", cfg.to_str().unwrap()]);
    assert_eq!(
        o.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        out.starts_with("LEADER BLIND: the leader cannot judge any node (cannot reach the cloud"),
        "{out}"
    );
    assert!(out.contains("last full judgement: never"), "{out}");
    // Loud once, not once per cycle.
    assert!(d.wait_log("the leader is blind", 1, Duration::from_secs(5)));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(d.count("the leader is blind"), 1, "{}", d.log());
    assert_eq!(
        d.count("cannot read the cloud: no judgement this cycle"),
        1,
        "{}",
        d.log()
    );
}

#[test]
fn nova_down_or_keystone_refusing_makes_the_leader_blind_until_it_sees_again() {
    let s = Setup::start("t-blind-sim");
    let cfg = s.config("a", true, "");
    let d = s.spawn("a", &cfg);
    wait_readyz(&cfg, &d, (200, "leader"));
    assert!(
        wait_until(Duration::from_secs(20), || sample(
            &cfg,
            "novaha_cycles_total{result=\"ok\"}"
        )
        .is_some_and(|n| n >= 2.0)),
        "{}",
        d.log()
    );
    assert_eq!(sample(&cfg, "novaha_monitor_blind"), Some(0.0));
    let status = s.cli(&cfg).status();
    assert_eq!(status["sight"]["blind"], false, "{status}");
    assert!(status["sight"]["last_judgement"].is_string(), "{status}");

    // Nova's services cannot be read.
    s.sim().add_fault(FaultRule::new(
        "/os-services",
        FaultKind::Status { status: 503 },
    ));
    wait_readyz(&cfg, &d, (503, "leader blind: nova"));
    assert_eq!(sample(&cfg, "novaha_monitor_blind"), Some(1.0));
    let status = s.cli(&cfg).status();
    assert_eq!(status["attention"][0]["what"], "blind", "{status}");
    assert!(
        status["sight"]["reason"].as_str().unwrap().contains("503"),
        "{status}"
    );
    s.sim().clear_faults();
    wait_readyz(&cfg, &d, (200, "leader"));
    assert_eq!(sample(&cfg, "novaha_monitor_blind"), Some(0.0));
    assert!(d.wait_log("the leader can judge again", 1, Duration::from_secs(5)));

    // Keystone refuses the credentials (an expired application credential
    // looks the same): tokens expire and no new one is issued.
    s.sim().add_fault(FaultRule::new(
        "/auth/tokens",
        FaultKind::Status { status: 401 },
    ));
    s.sim().expire_tokens();
    wait_readyz(&cfg, &d, (503, "leader blind: "));
    let (_, body) = get(&cfg, "/readyz");
    assert!(body.contains("401"), "{body}");
    s.sim().clear_faults();
    wait_readyz(&cfg, &d, (200, "leader"));
    assert_eq!(d.count("the leader is blind"), 2, "{}", d.log());
}

#[test]
fn the_running_leader_sees_a_pause_and_its_end_and_keeps_detecting() {
    let s = Setup::start("t-pause-run");
    let cfg = s.config("a", true, "threshold = 1\n");
    let cli = s.cli(&cfg);
    let d = s.spawn("a", &cfg);
    wait_readyz(&cfg, &d, (200, "leader"));
    assert_eq!(sample(&cfg, "novaha_paused"), Some(0.0));
    cli.run(&["pause", "--reason", "switch work", "--for", "1h"]);
    assert!(
        wait_until(Duration::from_secs(10), || sample(&cfg, "novaha_paused")
            == Some(1.0)),
        "{}",
        d.log()
    );
    assert!(
        d.wait_log("cluster paused", 1, Duration::from_secs(5)),
        "{}",
        d.log()
    );
    // Detection goes on while paused: a dead host is still judged failed.
    s.sim().kill("compute-2").unwrap();
    cli.wait(
        "compute-2 judged failed while paused",
        Duration::from_secs(30),
        |st| st["compute_nodes"]["compute-2"]["failed"] == true,
        || d.log(),
    );
    cli.run(&["resume"]);
    assert!(
        wait_until(Duration::from_secs(10), || sample(&cfg, "novaha_paused")
            == Some(0.0)),
        "{}",
        d.log()
    );
    assert!(d.wait_log("cluster no longer paused", 1, Duration::from_secs(5)));
    assert_eq!(
        d.count("cluster paused:"),
        1,
        "logged once, not per cycle\n{}",
        d.log()
    );
}

#[test]
fn a_node_in_maintenance_is_not_counted_and_is_counted_again_after_it_ends() {
    let s = Setup::start("t-maint-run");
    let cfg = s.config("a", true, "threshold = 1\n");
    let cli = s.cli(&cfg);
    let d = s.spawn("a", &cfg);
    wait_readyz(&cfg, &d, (200, "leader"));
    cli.wait(
        "compute-3 discovered",
        Duration::from_secs(20),
        |st| st["compute_nodes"]["compute-3"].is_object(),
        || d.log(),
    );
    cli.run(&[
        "node",
        "maintenance",
        "compute-3",
        "on",
        "--reason",
        "BIOS update",
        "--for",
        "4s",
    ]);
    s.sim().kill("compute-3").unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let st: Value = cli.status();
    let n = &st["compute_nodes"]["compute-3"];
    assert_eq!(n["maintenance"], true, "{st}");
    assert_eq!(n["number_fails"], 0, "counted while in maintenance: {st}");
    assert_eq!(n["failed"], false, "{st}");
    assert!(
        wait_until(Duration::from_secs(5), || sample(
            &cfg,
            "novaha_nodes{state=\"maintenance\"}"
        ) == Some(1.0)),
        "{}",
        d.log()
    );
    // The maintenance ends by itself: the dead node is counted again.
    cli.wait(
        "compute-3 judged failed after its maintenance ended",
        Duration::from_secs(30),
        |st| st["compute_nodes"]["compute-3"]["failed"] == true,
        || d.log(),
    );
}
