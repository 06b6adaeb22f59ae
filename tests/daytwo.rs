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

use novaha_sim::{FaultKind, FaultRule, SimConfig, SimHandle};
use novaha_testkit::cloud::SimCloud;
use novaha_testkit::consul::ConsulAgent;
use novaha_testkit::daemon::{Cli, Daemon, DaemonConfig, listen_of, novaha};
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
    cloud: SimCloud,
}

impl Setup {
    fn start(prefix: &str) -> Self {
        let cloud = SimCloud::start_with(SimConfig {
            hosts: 3,
            instances_per_host: 1,
            ha_nodes: 1,
            service_down_time: Duration::from_secs(1),
            ..SimConfig::default()
        });
        Self {
            dir: tempfile::tempdir().unwrap(),
            agent: ConsulAgent::start(),
            prefix: prefix.to_owned(),
            cloud,
        }
    }

    fn sim(&self) -> &SimHandle {
        self.cloud.sim()
    }

    /// A daemon config with the sim as its cloud (`cloud`) or none, a
    /// one-second blind grace, the test-only fencer, `extra_monitor` keys.
    fn config(&self, id: &str, cloud: bool, extra_monitor: &str) -> PathBuf {
        let openstack = if cloud {
            self.cloud.admin()
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

/// A config with no `[consul] address`: everything about Consul comes from
/// the environment (or from `consul`, verbatim).
fn consul_free_config(s: &Setup, id: &str, consul: &str, monitor: &str) -> PathBuf {
    let openstack = s.cloud.admin();
    let path = s.dir.path().join(format!("{id}.toml"));
    std::fs::write(
        &path,
        format!(
            "[consul]\nprefix = \"{}\"\nrequest_timeout = \"5s\"\n{consul}\n\
             [election]\nsession_ttl = \"10s\"\nlock_delay = \"1s\"\ncheck_ttl = \"2s\"\nid = \"{id}\"\n\n\
             [monitor]\ninterval = \"500ms\"\nblind_after = \"1s\"\n{monitor}\n\
             [http]\nlisten = \"127.0.0.1:{}\"\n\n[log]\nformat = \"text\"\nlevel = \"info\"\n\
             {openstack}\n[fence]\ndriver = \"noop\"\nallow_noop = true\n",
            s.prefix,
            novaha_testkit::process::free_port()
        ),
    )
    .unwrap();
    path
}

#[test]
fn consul_mtls_from_every_consul_variable_or_from_the_file() {
    let s = Setup::start("t-tls");
    let tls_agent = ConsulAgent::start_tls();
    let f = tls_agent.tls().clone();
    let token_file = s.dir.path().join("consul.token");
    std::fs::write(&token_file, "anonymous-is-fine-here\n").unwrap();
    let port = tls_agent
        .https_addr()
        .rsplit(':')
        .next()
        .unwrap()
        .to_owned();
    let env: Vec<(&str, String)> = vec![
        ("CONSUL_HTTP_ADDR", format!("127.0.0.1:{port}")),
        ("CONSUL_HTTP_SSL", "true".into()),
        ("CONSUL_CACERT", f.ca.display().to_string()),
        ("CONSUL_CLIENT_CERT", f.client_cert.display().to_string()),
        ("CONSUL_CLIENT_KEY", f.client_key.display().to_string()),
        ("CONSUL_TLS_SERVER_NAME", f.server_name.clone()),
        ("CONSUL_HTTP_TOKEN_FILE", token_file.display().to_string()),
    ];
    // The consul signal too: the monitor's Consul client speaks mTLS.
    let cfg = consul_free_config(&s, "a", "", "signals = [\"nova\", \"consul\"]\n");
    let run = |args: &[&str], env: &[(&str, String)]| {
        std::process::Command::new(bin())
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    };
    let o = run(&["check-config", "-c", cfg.to_str().unwrap()], &env);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        out.contains(&format!("consul https://127.0.0.1:{port}")),
        "{out}"
    );
    assert!(out.contains(tls_agent.node_name()), "{out}");
    // The daemon leads over mTLS and judges (the consul signal answers).
    let log = s.dir.path().join("a.log");
    let file = std::fs::File::create(&log).unwrap();
    let mut d = novaha_testkit::process::ChildGuard::spawn(
        "novaha a (tls)",
        std::process::Command::new(bin())
            .args(["run", "-c", cfg.to_str().unwrap()])
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env_remove("RUST_LOG")
            .stdin(std::process::Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file),
    );
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        wait_until(Duration::from_secs(30), || get(&cfg, "/readyz")
            == (200, "leader\n".into())
            && sample(&cfg, "novaha_cycles_total{result=\"ok\"}")
                .is_some_and(|n| n >= 2.0)),
        "{:?}\n{}",
        get(&cfg, "/readyz"),
        read_log()
    );
    assert!(tls_agent.kv_get(&format!("{}/leader", s.prefix)).is_some());
    d.signal("TERM");
    assert_eq!(
        d.wait_exit(Duration::from_secs(20)),
        Some(0),
        "{}",
        read_log()
    );

    // The same from the file, with a CA directory.
    let file_cfg = consul_free_config(
        &s,
        "b",
        &format!(
            "address = \"{}\"\nca_path = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"\n\
             tls_server_name = \"{}\"\n",
            tls_agent.https_addr(),
            f.ca_dir.display(),
            f.client_cert.display(),
            f.client_key.display(),
            f.server_name
        ),
        "",
    );
    let o = run(&["check-config", "-c", file_cfg.to_str().unwrap()], &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // Without the client certificate the agent refuses, and check-config
    // says where.
    let no_cert: Vec<(&str, String)> = env
        .iter()
        .filter(|(k, _)| !k.starts_with("CONSUL_CLIENT_"))
        .cloned()
        .collect();
    let o = run(&["check-config", "-c", cfg.to_str().unwrap()], &no_cert);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "  - consul.address: consul at https://127.0.0.1:{port} is not reachable"
        )),
        "{err}"
    );
}
