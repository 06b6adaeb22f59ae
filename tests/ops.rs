//! Operations, end to end: the HTTP endpoints of a running daemon checked by
//! Debian's `promtool` and scraped by a real Prometheus server; the deploy/
//! files checked by their own tools (`promtool check rules|config`,
//! `promtool test rules`, `systemd-analyze verify`); the Consul ACL policy
//! on an ACL-enabled agent; the .deb built, installed and run; the
//! `novaha status` table on a terminal and off it.
//!
//! Every test has its own temp dir, free ports and Consul agent, and stops
//! what it started (guards kill on drop, also on panic). The tools come from
//! `scripts/deps/ops.sh`; a missing one fails the test.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use novaha_testkit::cloud::SimCloud;
use novaha_testkit::consul::{ConsulAgent, consul_bin};
use novaha_testkit::daemon::{Daemon, DaemonConfig, novaha};
use novaha_testkit::process::{ChildGuard, free_port, repo_root, tool, wait_until};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_novaha"))
}

fn promtool() -> PathBuf {
    tool("NOVAHA_PROMTOOL", &["/usr/bin/promtool"], "promtool")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A blocking HTTP/1.0 GET on 127.0.0.1: (status, lower-cased head, body).
fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String, String)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)?;
    let text = String::from_utf8_lossy(&resp).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no end of headers"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line: {head}")))?;
    Ok((status, head.to_ascii_lowercase(), body.to_owned()))
}

/// The `[http] listen` port written into a test daemon's config file.
fn http_port(config: &Path) -> u16 {
    let text = std::fs::read_to_string(config).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("listen = \"127.0.0.1:"))
        .expect("an [http] listen line");
    line.trim_end_matches('"')
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// Waits until `/readyz` answers `want`; returns the last answer on timeout.
fn wait_ready(port: u16, want: &str, timeout: Duration) -> Result<(), String> {
    let mut last = String::new();
    let ok = wait_until(timeout, || match http_get(port, "/readyz") {
        Ok((code, _, body)) => {
            last = format!("{code} {body:?}");
            code == 200 && body.trim() == want
        }
        Err(e) => {
            last = e.to_string();
            false
        }
    });
    if ok { Ok(()) } else { Err(last) }
}

/// Runs `cmd` with `stdin` piped in; returns its output.
fn run_with_stdin(cmd: &mut Command, stdin: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {cmd:?}: {e}"));
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

// ---------------------------------------------------------------------------
// /metrics, /healthz, /readyz

/// A leader and a standby: probes answer their role, and the leader's
/// /metrics passes `promtool check metrics` without a single lint problem.
#[test]
fn metrics_of_a_running_leader_pass_promtool_and_probes_report_roles() {
    let agent = ConsulAgent::start();
    let dir = tempfile::tempdir().unwrap();
    let prefix = "t-ops-metrics";
    let cfg_a = DaemonConfig::fast(&agent.http_addr(), prefix, "a").write(dir.path());
    let a = Daemon::spawn(bin(), &cfg_a, "a", dir.path(), &[]);
    let port_a = http_port(&cfg_a);
    assert!(
        a.wait_log("acquired the leader lock", 1, Duration::from_secs(30)),
        "{}",
        a.log()
    );
    assert!(
        a.log().contains(&format!("listen=127.0.0.1:{port_a}")),
        "the bound address is logged:\n{}",
        a.log()
    );
    wait_ready(port_a, "leader", Duration::from_secs(10)).unwrap_or_else(|e| panic!("{e}"));
    let cfg_b = DaemonConfig::fast(&agent.http_addr(), prefix, "b").write(dir.path());
    let b = Daemon::spawn(bin(), &cfg_b, "b", dir.path(), &[]);
    let port_b = http_port(&cfg_b);
    wait_ready(port_b, "standby", Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e}\n{}", b.log()));

    let (code, _, body) = http_get(port_a, "/healthz").unwrap();
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    let (code, head, metrics) = http_get(port_a, "/metrics").unwrap();
    assert_eq!(code, 200);
    assert!(
        head.contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    assert!(metrics.contains("\nnovaha_leader 1\n"), "{metrics}");
    assert!(
        metrics.contains("\nnovaha_leader_acquisitions_total 1\n"),
        "{metrics}"
    );
    let o = run_with_stdin(
        Command::new(promtool()).args(["check", "metrics"]),
        metrics.as_bytes(),
    );
    assert!(
        o.status.success() && o.stdout.is_empty() && o.stderr.is_empty(),
        "promtool check metrics: {:?}\nstdout: {}\nstderr: {}\n{metrics}",
        o.status,
        stdout(&o),
        stderr(&o)
    );
    let (_, _, standby) = http_get(port_b, "/metrics").unwrap();
    assert!(standby.contains("\nnovaha_leader 0\n"), "{standby}");
    // The cycle series exist from the start, so an alert on their rate
    // works before the first error.
    for series in [
        "\nnovaha_cycles_total{result=\"ok\"} 0\n",
        "\nnovaha_cycles_total{result=\"error\"} 0\n",
        "\nnovaha_leader_lost_total 0\n",
    ] {
        assert!(standby.contains(series), "{series}: {standby}");
    }
    let o = run_with_stdin(
        Command::new(promtool()).args(["check", "metrics"]),
        standby.as_bytes(),
    );
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    drop(b);
    drop(a);
    drop(agent);
}

/// Consul unreachable: the daemon is alive (/healthz 200) but not ready
/// (/readyz 503), and it says why.
#[test]
fn readyz_is_503_while_consul_does_not_answer() {
    let dir = tempfile::tempdir().unwrap();
    let dead = format!("http://127.0.0.1:{}", free_port());
    let cfg = DaemonConfig::fast(&dead, "t-ops-noconsul", "a").write(dir.path());
    let d = Daemon::spawn(bin(), &cfg, "a", dir.path(), &[]);
    let port = http_port(&cfg);
    assert!(
        wait_until(Duration::from_secs(20), || http_get(port, "/healthz")
            .is_ok_and(|(c, _, _)| c == 200)),
        "{}",
        d.log()
    );
    let (code, _, body) = http_get(port, "/readyz").unwrap();
    assert_eq!(
        (code, body.as_str()),
        (503, "consul not reachable\n"),
        "{}",
        d.log()
    );
    // It waits for Consul instead of exiting (under systemd: no restart,
    // so no start limit to hit).
    std::thread::sleep(Duration::from_secs(3));
    let mut d = d;
    assert!(d.guard().is_running(), "{}", d.log());
}

/// A real Prometheus server scrapes a running leader; its query API
/// reports `up` and `novaha_leader` 1.
#[test]
fn prometheus_server_scrapes_the_leader() {
    let prometheus = tool("NOVAHA_PROMETHEUS", &["/usr/bin/prometheus"], "prometheus");
    let agent = ConsulAgent::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = DaemonConfig::fast(&agent.http_addr(), "t-ops-scrape", "a").write(dir.path());
    let d = Daemon::spawn(bin(), &cfg, "a", dir.path(), &[]);
    let target = http_port(&cfg);
    assert!(
        d.wait_log("acquired the leader lock", 1, Duration::from_secs(30)),
        "{}",
        d.log()
    );
    let prom_cfg = dir.path().join("prometheus.yml");
    std::fs::write(
        &prom_cfg,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: novaha\n    static_configs:\n      \
             - targets: ['127.0.0.1:{target}']\n"
        ),
    )
    .unwrap();
    let web = free_port();
    let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
    let mut server = ChildGuard::spawn(
        "prometheus",
        Command::new(prometheus)
            .arg(format!("--config.file={}", prom_cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{web}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log),
    );
    let query = |q: &str| -> Option<String> {
        let (code, _, body) = http_get(web, &format!("/api/v1/query?query={q}")).ok()?;
        if code != 200 {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        v["data"]["result"][0]["value"][1]
            .as_str()
            .map(str::to_owned)
    };
    let prom_log =
        || std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default();
    // Prometheus scrapes first ~5 s after start, even at 1 s intervals
    // (docs/packaging.md, "How the tests exercise all this"): poll, never sleep.
    assert!(
        wait_until(Duration::from_secs(60), || {
            query("up%7Bjob%3D%22novaha%22%7D").as_deref() == Some("1")
        }),
        "prometheus never scraped the daemon\n{}",
        prom_log()
    );
    assert!(
        wait_until(Duration::from_secs(30), || query("novaha_leader")
            .as_deref()
            == Some("1")),
        "novaha_leader is not 1 in prometheus: {:?}\n{}",
        query("novaha_leader"),
        prom_log()
    );
    assert_eq!(
        query("novaha_nodes%7Bstate%3D%22failed%22%7D").as_deref(),
        Some("0")
    );
    assert!(server.is_running(), "{}", prom_log());
}

// ---------------------------------------------------------------------------
// deploy/: Prometheus rules and config, systemd unit

#[test]
fn deploy_prometheus_rules_and_config_pass_promtool() {
    let dir = repo_root().join("deploy/prometheus");
    for args in [
        vec!["check", "rules", "novaha-alerts.yml"],
        vec!["test", "rules", "novaha-alerts.test.yml"],
        vec!["check", "config", "prometheus.yml"],
    ] {
        let o = Command::new(promtool())
            .args(&args)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "promtool {}: {:?}\n{}{}",
            args.join(" "),
            o.status,
            stdout(&o),
            stderr(&o)
        );
        assert!(stdout(&o).contains("SUCCESS"), "{}", stdout(&o));
    }
    // Every failure an operator must hear about has its alert, each alert
    // has a runbook_url into a section of docs/runbook.md, and each fires
    // in at least one `promtool test rules` case (the test file's cases
    // cannot all expect silence).
    let rules: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(dir.join("novaha-alerts.yml")).unwrap())
            .unwrap();
    let tests: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(dir.join("novaha-alerts.test.yml")).unwrap())
            .unwrap();
    let runbook = std::fs::read_to_string(repo_root().join("docs/runbook.md")).unwrap();
    let anchors: std::collections::BTreeSet<String> = runbook
        .lines()
        .filter_map(|l| l.strip_prefix("### ").or_else(|| l.strip_prefix("## ")))
        .map(|h| h.trim().to_lowercase().replace(' ', "-"))
        .collect();
    let fired: std::collections::BTreeSet<&str> = tests["tests"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_sequence().unwrap())
        .filter(|c| c["exp_alerts"].as_sequence().is_some_and(|a| !a.is_empty()))
        .map(|c| c["alertname"].as_str().unwrap())
        .collect();
    let mut names = Vec::new();
    for rule in rules["groups"][0]["rules"].as_sequence().unwrap() {
        let name = rule["alert"].as_str().unwrap();
        names.push(name);
        let url = rule["annotations"]["runbook_url"]
            .as_str()
            .unwrap_or_else(|| panic!("{name} has no runbook_url"));
        let anchor = url
            .strip_prefix("file:///usr/share/doc/novaha/runbook.md#")
            .unwrap_or_else(|| panic!("{name}: runbook_url {url} is not into the runbook"));
        assert!(
            anchors.contains(anchor),
            "{name}: no section #{anchor} in docs/runbook.md"
        );
        assert!(fired.contains(name), "{name} never fires in the rule tests");
    }
    for alert in [
        "NovahaNoLeader",
        "NovahaTwoLeaders",
        "NovahaNoStandby",
        "NovahaLeaderBlind",
        "NovahaNodeFailed",
        "NovahaRecoveryStuck",
        "NovahaFenceFailing",
        "NovahaEvacuationErrors",
        "NovahaBmcUnreachable",
        "NovahaInvalidState",
        "NovahaNotificationsFailing",
        "NovahaNoFreeSpare",
        "NovahaMassFailureGuard",
        "NovahaPausedLong",
        "NovahaNoHostFailureTolerated",
        "NovahaNodeDegraded",
    ] {
        assert!(names.contains(&alert), "{alert} missing");
    }
}

/// Every series populated (each method of `Metrics` called once), so that
/// labelled families show up: the whole exposition passes `promtool check
/// metrics`, and the alert rules and the dashboard name only series that
/// exist.
#[test]
fn alert_rules_and_dashboard_name_only_exported_series() {
    let m = novaha::metrics::Metrics::new();
    m.set_leader(true);
    m.observe_poll(0.02);
    m.set_nodes(&[("healthy", 3), ("failed", 1)]);
    m.set_node("compute-1", 4, true);
    m.set_node_degraded("compute-2", true);
    m.set_state_invalid(1);
    m.state_invalid_seen(1);
    m.set_mass_failure_guard(true);
    m.recovery_finished("done", Some(95.0));
    m.set_recovery("compute-1", Some(30.0), false);
    m.fence_attempt("ipmi", true, 4.2);
    m.set_bmc_up("compute-1", true);
    m.evacuation("done", Some(12.0));
    m.notification("email", "sent");
    m.api_error("nova");
    m.admin_reset();
    m.set_paused(true);
    m.set_blind(true, 42.0);
    m.cycle_blind();
    m.set_ha_nodes(&[("free", 1), ("in_use", 1)]);
    m.set_failures_tolerated(&std::collections::BTreeMap::from([("nova".to_owned(), 1)]));
    let metrics = m.encode();
    let o = run_with_stdin(
        Command::new(promtool()).args(["check", "metrics"]),
        metrics.as_bytes(),
    );
    assert!(
        o.status.success() && o.stdout.is_empty() && o.stderr.is_empty(),
        "promtool check metrics: {}{}\n{metrics}",
        stdout(&o),
        stderr(&o)
    );
    let exported: std::collections::BTreeSet<&str> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    let names_in = |text: &str| -> std::collections::BTreeSet<String> {
        let mut out = std::collections::BTreeSet::new();
        let mut rest = text;
        while let Some(i) = rest.find("novaha_") {
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            out.insert(tail[..end].to_owned());
            rest = &tail[end..];
        }
        out
    };
    let base = |n: &str| {
        ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| n.strip_suffix(s))
            .unwrap_or(n)
            .to_owned()
    };
    for file in [
        "deploy/prometheus/novaha-alerts.yml",
        "deploy/grafana/novaha.json",
    ] {
        let text = std::fs::read_to_string(repo_root().join(file)).unwrap();
        for name in names_in(&text) {
            assert!(
                exported.contains(name.as_str()) || exported.contains(base(&name).as_str()),
                "{file} uses {name}, which /metrics does not export:\n{metrics}"
            );
        }
    }
}

/// `systemd-analyze verify` checks that ExecStart's binary exists and is
/// executable, so the unit is copied with /usr/bin/novaha rewritten to the
/// binary cargo built; nothing else changes. Any warning fails the test.
#[test]
fn systemd_unit_passes_systemd_analyze_verify() {
    let analyze = tool(
        "NOVAHA_SYSTEMD_ANALYZE",
        &["/usr/bin/systemd-analyze"],
        "systemd-analyze",
    );
    let unit = std::fs::read_to_string(repo_root().join("deploy/systemd/novaha.service")).unwrap();
    for needed in [
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "ExecStart=/usr/bin/novaha run -c /etc/novaha/novaha.toml",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        // A burst of failures (a Consul restart) never leaves the unit in
        // start-limit-hit; an invalid config is not restarted in a loop.
        "StartLimitIntervalSec=0",
        "RestartPreventExitStatus=2",
    ] {
        assert!(unit.contains(needed), "the unit lacks {needed}");
    }
    // Nothing that asks Consul or Keystone may fail the start.
    assert!(
        !unit.lines().any(|l| l.starts_with("ExecStartPre=")),
        "{unit}"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("novaha.service");
    std::fs::write(
        &path,
        unit.replace("/usr/bin/novaha", bin().to_str().unwrap()),
    )
    .unwrap();
    let o = Command::new(analyze)
        .arg("verify")
        .arg(&path)
        .env("SYSTEMD_LOG_COLOR", "0")
        .output()
        .unwrap();
    assert!(
        o.status.success() && o.stderr.is_empty() && o.stdout.is_empty(),
        "systemd-analyze verify: {:?}\n{}{}",
        o.status,
        stdout(&o),
        stderr(&o)
    );
    // And it does fail on a broken unit (the check can fail).
    std::fs::write(&path, unit.replace("Type=notify", "Type=notyfy")).unwrap();
    let o = Command::new(tool(
        "NOVAHA_SYSTEMD_ANALYZE",
        &["/usr/bin/systemd-analyze"],
        "systemd-analyze",
    ))
    .arg("verify")
    .arg(&path)
    .output()
    .unwrap();
    assert!(!o.stderr.is_empty(), "a bad Type= went unnoticed");
}

// ---------------------------------------------------------------------------
// `novaha status` on and off a terminal

#[test]
fn status_table_is_coloured_only_on_a_terminal_without_no_color() {
    let agent = ConsulAgent::start();
    let dir = tempfile::tempdir().unwrap();
    let p = "t-ops-status";
    for (k, v) in [
        ("compute_nodes/compute-1/status/failed", "True"),
        ("compute_nodes/compute-1/status/recovered", "True"),
        ("compute_nodes/compute-1/internal/number_fails", "4"),
        ("compute_nodes/compute-22/status/failed", "False"),
        ("compute_nodes/compute-22/status/recovered", "False"),
        ("compute_nodes/compute-22/internal/number_fails", "0"),
        ("ha_nodes/ha-1/status/in_use", "False"),
    ] {
        agent.kv_put(&format!("{p}/{k}"), v.as_bytes());
    }
    let cfg = DaemonConfig::fast(&agent.http_addr(), p, "a").write(dir.path());
    let cfg = cfg.to_str().unwrap();
    // Off a terminal (a pipe): no escape codes at all.
    let o = novaha(bin(), &["status", "-c", cfg]);
    assert!(o.status.success(), "{}", stderr(&o));
    let plain = stdout(&o);
    assert!(!plain.contains('\x1b'), "{plain:?}");
    let lines: Vec<&str> = plain.lines().collect();
    let head = lines
        .iter()
        .find(|l| l.contains("NODE") && l.contains("FAILED"))
        .unwrap();
    let row = lines.iter().find(|l| l.contains("compute-1 ")).unwrap();
    let row22 = lines.iter().find(|l| l.contains("compute-22")).unwrap();
    for col in ["FAILED", "RECOVERED", "NUMBER_FAILS"] {
        let at = head.find(col).unwrap();
        assert_ne!(row.as_bytes()[at], b' ', "{col} misaligned\n{plain}");
        assert_ne!(row22.as_bytes()[at], b' ', "{col} misaligned\n{plain}");
    }
    // On a terminal (script(1) gives it a pty): coloured.
    let on_tty = |no_color: Option<&str>| {
        let mut cmd = Command::new("script");
        cmd.args(["-q", "-e", "-c"])
            .arg(format!("{} status -c {cfg}", bin().display()))
            .arg("/dev/null")
            .env_remove("RUST_LOG")
            .env_remove("NO_COLOR")
            .stdin(Stdio::null());
        if let Some(v) = no_color {
            cmd.env("NO_COLOR", v);
        }
        let o = cmd.output().expect("run script(1)");
        assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
        stdout(&o)
    };
    let tty = on_tty(None);
    assert!(tty.contains("\x1b[1;31mTrue\x1b[0m"), "{tty:?}");
    assert!(tty.contains("compute-1"), "{tty:?}");
    let tty_no_color = on_tty(Some("1"));
    assert!(tty_no_color.contains("compute-22"), "{tty_no_color:?}");
    assert!(!tty_no_color.contains('\x1b'), "{tty_no_color:?}");
}

// ---------------------------------------------------------------------------
// Consul ACLs: the daemon works with deploy/consul/novaha-policy.hcl alone

/// A dev agent with ACLs on (1.8 syntax: `tokens { master, agent }`),
/// default deny, killed on drop.
struct AclAgent {
    _guard: ChildGuard,
    _dir: tempfile::TempDir,
    port: u16,
    master: String,
    /// The agent's node name (what the policy's @NODE@ becomes).
    node: String,
}

impl AclAgent {
    fn start() -> Self {
        let master = "4b1c0e3e-0000-4000-8000-00000000a11c".to_owned();
        for _ in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let ports: Vec<u16> = (0..4).map(|_| free_port()).collect();
            let mut sorted = ports.clone();
            sorted.sort_unstable();
            sorted.dedup();
            if sorted.len() != 4 {
                continue;
            }
            let hcl = format!(
                "acl {{ enabled = true, default_policy = \"deny\", down_policy = \"deny\", \
                 tokens {{ master = \"{master}\", agent = \"{master}\" }} }}"
            );
            let log = std::fs::File::create(dir.path().join("consul.log")).unwrap();
            let mut guard = ChildGuard::spawn(
                "consul acl agent",
                Command::new(consul_bin())
                    .args([
                        "agent",
                        "-dev",
                        "-bind",
                        "127.0.0.1",
                        "-client",
                        "127.0.0.1",
                    ])
                    .args(["-node", &format!("novaha-acl-{}", ports[0])])
                    .arg(format!("-http-port={}", ports[0]))
                    .arg("-dns-port=-1")
                    .arg("-grpc-port=-1")
                    .arg(format!("-serf-lan-port={}", ports[1]))
                    .arg(format!("-serf-wan-port={}", ports[2]))
                    .arg(format!("-server-port={}", ports[3]))
                    .args(["-hcl", &hcl])
                    .env_remove("CONSUL_HTTP_ADDR")
                    .env_remove("CONSUL_HTTP_TOKEN")
                    .stdin(Stdio::null())
                    .stdout(log.try_clone().unwrap())
                    .stderr(log),
            );
            // Ready once the ACL system answers the master token and the
            // agent's node is in the catalog with serfHealth passing.
            let health = format!("/v1/health/node/novaha-acl-{}", ports[0]);
            let ready = wait_until(Duration::from_secs(30), || {
                guard.is_running()
                    && consul_call(ports[0], "GET", &health, "", &master).is_ok_and(|(c, b)| {
                        c == 200 && b.contains("serfHealth") && b.contains("passing")
                    })
            });
            if ready {
                return Self {
                    _guard: guard,
                    _dir: dir,
                    port: ports[0],
                    master,
                    node: format!("novaha-acl-{}", ports[0]),
                };
            }
            guard.kill();
            eprintln!(
                "acl agent did not start:\n{}",
                std::fs::read_to_string(dir.path().join("consul.log")).unwrap_or_default()
            );
        }
        panic!("the ACL-enabled consul agent never got ready");
    }

    fn addr(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// One request with `token` as X-Consul-Token: (status, body).
    fn call(
        &self,
        method: &str,
        path: &str,
        body: &str,
        token: &str,
    ) -> std::io::Result<(u16, String)> {
        consul_call(self.port, method, path, body, token)
    }

    /// Creates a policy from HCL rules and a token holding only it; returns
    /// the token's secret.
    fn token_with_policy(&self, name: &str, rules: &str) -> String {
        let body = serde_json::json!({"Name": name, "Rules": rules}).to_string();
        let (code, resp) = self
            .call("PUT", "/v1/acl/policy", &body, &self.master)
            .unwrap();
        assert_eq!(code, 200, "create policy {name}: {resp}");
        let body =
            serde_json::json!({"Description": name, "Policies": [{"Name": name}]}).to_string();
        let (code, resp) = self
            .call("PUT", "/v1/acl/token", &body, &self.master)
            .unwrap();
        assert_eq!(code, 200, "create token: {resp}");
        let v: serde_json::Value = serde_json::from_str(&resp).unwrap();
        v["SecretID"].as_str().unwrap().to_owned()
    }
}

/// One HTTP/1.0 request to a Consul agent with `token` as X-Consul-Token
/// (the header, never the URL): (status, body).
fn consul_call(
    port: u16,
    method: &str,
    path: &str,
    body: &str,
    token: &str,
) -> std::io::Result<(u16, String)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nX-Consul-Token: {token}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((code, body.to_owned()))
}

/// A daemon config on the real `ha_cluster` prefix (the policy is written
/// for it) whose token comes from a file, never the command line.
fn acl_config(dir: &Path, consul: &str, id: &str, token: &str, openstack: &str) -> PathBuf {
    let token_file = dir.join(format!("{id}.token"));
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let path = dir.join(format!("{id}.toml"));
    std::fs::write(
        &path,
        format!(
            "[consul]\naddress = \"{consul}\"\ntoken_file = \"{}\"\nrequest_timeout = \"5s\"\n\n\
             [election]\nsession_ttl = \"10s\"\nlock_delay = \"1s\"\ncheck_ttl = \"2s\"\nid = \"{id}\"\n\n\
             [monitor]\ninterval = \"1s\"\n\n[http]\nlisten = \"127.0.0.1:{}\"\n\n\
             [log]\nformat = \"text\"\nlevel = \"info\"\n{openstack}",
            token_file.display(),
            free_port()
        ),
    )
    .unwrap();
    path
}

#[test]
fn daemon_leads_with_only_the_deploy_acl_policy_and_nothing_more() {
    let agent = AclAgent::start();
    let dir = tempfile::tempdir().unwrap();
    let template =
        std::fs::read_to_string(repo_root().join("deploy/consul/novaha-policy.hcl")).unwrap();
    assert!(
        template.contains("@NODE@"),
        "the policy names the daemon's own node"
    );
    // Instantiated for this agent's node, with the credentials rule on.
    let rules = template
        .replace("@NODE@", &agent.node)
        .replace(
            "# key_prefix \"novaha_bmc/\" {",
            "key_prefix \"novaha_bmc/\" {",
        )
        .replace("#   policy = \"read\"\n# }", "  policy = \"read\"\n}");
    assert!(
        rules.contains("key_prefix \"novaha_bmc/\" {\n  policy = \"read\"\n}"),
        "{rules}"
    );
    let token = agent.token_with_policy("novaha", &rules);
    let cloud = SimCloud::start();
    let cfg = acl_config(dir.path(), &agent.addr(), "acl-a", &token, &cloud.admin());
    let c = cfg.to_str().unwrap();

    // check-config reaches the agent with this token alone, and finds it
    // may write the prefix.
    let o = novaha(bin(), &["check-config", "-c", c]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("the token may write ha_cluster/"),
        "{}",
        stdout(&o)
    );

    let d = Daemon::spawn(bin(), &cfg, "acl-a", dir.path(), &[]);
    assert!(
        d.wait_log("acquired the leader lock", 1, Duration::from_secs(30)),
        "{}",
        d.log()
    );
    // It writes its state (the lease-checked transaction succeeds).
    assert!(
        wait_until(Duration::from_secs(15), || agent
            .call(
                "GET",
                "/v1/kv/ha_cluster/novaha/last_cycle?raw",
                "",
                &agent.master
            )
            .is_ok_and(
                |(code, body)| code == 200 && body.contains("\"id\":\"acl-a\"")
            )),
        "no cycle record written\n{}",
        d.log()
    );
    wait_ready(http_port(&cfg), "leader", Duration::from_secs(10)).unwrap();
    // `status` reads the tree and the lock with the same token.
    let o = novaha(bin(), &["status", "--json", "-c", c]);
    assert!(o.status.success(), "{}", stderr(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["leader"]["id"], "acl-a");
    assert!(!d.log().contains("Permission denied"), "{}", d.log());
    assert!(!d.log().contains(&token), "the token leaked into the log");

    // Least privilege: nothing outside what the daemon needs: no other
    // node's sessions or registrations, no key outside its tree, the BMC
    // credentials read but never written.
    agent
        .call("PUT", "/v1/kv/novaha_bmc/c1/password", "pw", &agent.master)
        .unwrap();
    let (code, _) = agent
        .call("GET", "/v1/kv/novaha_bmc/c1/password", "", &token)
        .unwrap();
    assert_eq!(code, 200, "the daemon reads the BMC credentials");
    for (method, path, body) in [
        ("PUT", "/v1/kv/other/key", "x"),
        ("GET", "/v1/kv/other/key", ""),
        ("PUT", "/v1/kv/novaha_bmc/c1/password", "stolen"),
        (
            "PUT",
            "/v1/session/create",
            r#"{"Node": "some-other-node"}"#,
        ),
        (
            "PUT",
            "/v1/catalog/register",
            r#"{"Node": "some-other-node", "Address": "10.0.0.9"}"#,
        ),
        ("GET", "/v1/acl/tokens", ""),
        (
            "PUT",
            "/v1/agent/service/register",
            r#"{"Name":"evil","Port":1}"#,
        ),
        ("DELETE", "/v1/operator/raft/peer?address=127.0.0.1:1", ""),
        ("PUT", "/v1/agent/leave", ""),
    ] {
        let (code, resp) = agent.call(method, path, body, &token).unwrap();
        assert_eq!(
            code, 403,
            "{method} {path} allowed to the novaha token: {resp}"
        );
    }
}

#[test]
fn a_token_without_the_policy_is_refused_with_a_clear_error() {
    let agent = AclAgent::start();
    let dir = tempfile::tempdir().unwrap();
    // An operator's token (the tree, not the BMC credentials) reads no
    // credentials kept under their own prefix.
    let operator = agent.token_with_policy(
        "operator",
        "key_prefix \"ha_cluster/\" { policy = \"write\" }",
    );
    agent
        .call("PUT", "/v1/kv/novaha_bmc/c1/password", "pw", &agent.master)
        .unwrap();
    let (code, _) = agent
        .call("GET", "/v1/kv/novaha_bmc/c1/password", "", &operator)
        .unwrap();
    assert_eq!(code, 403, "an operator reads the BMC credentials");
    let token =
        agent.token_with_policy("unrelated", "key_prefix \"other/\" { policy = \"write\" }");
    let cloud = SimCloud::start();
    let cfg = acl_config(dir.path(), &agent.addr(), "acl-b", &token, &cloud.admin());
    let c = cfg.to_str().unwrap();
    // check-config names the missing right before the daemon meets it.
    let o = novaha(bin(), &["check-config", "-c", c]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o).contains("  - consul.token: the token may not write below ha_cluster/"),
        "{}",
        stderr(&o)
    );
    assert!(!stderr(&o).contains(&token), "the token leaked");
    // A read-only token is refused the same way.
    let reader =
        agent.token_with_policy("reader", "key_prefix \"ha_cluster/\" { policy = \"read\" }");
    let ro = acl_config(dir.path(), &agent.addr(), "acl-ro", &reader, &cloud.admin());
    let o = novaha(bin(), &["check-config", "-c", ro.to_str().unwrap()]);
    assert!(
        stderr(&o).contains("  - consul.token: the token may not write below ha_cluster/"),
        "{}",
        stderr(&o)
    );
    let o = novaha(bin(), &["run", "--once", "-c", c]);
    let err = stderr(&o);
    assert!(!o.status.success(), "{}{err}", stdout(&o));
    assert!(
        err.contains("403") || err.to_lowercase().contains("permission denied"),
        "{err}"
    );
    assert!(!err.contains(&token), "the token leaked: {err}");
    // The daemon keeps running as standby, says why, and never leads.
    let d = Daemon::spawn(bin(), &cfg, "acl-b", dir.path(), &[]);
    assert!(
        wait_until(Duration::from_secs(20), || d
            .log()
            .to_lowercase()
            .contains("permission denied")),
        "{}",
        d.log()
    );
    assert!(!d.log().contains("acquired the leader lock"), "{}", d.log());
    assert!(!d.log().contains(&token), "the token leaked into the log");
    let (code, _) = agent
        .call("GET", "/v1/kv/ha_cluster/leader", "", &agent.master)
        .unwrap();
    assert_eq!(code, 404, "the lock was taken with a refused token");
}

// ---------------------------------------------------------------------------
// The .deb: built with cargo-deb, installed with dpkg, run

/// Holds a machine-wide lock (flock(1) on a file in /tmp) while alive:
/// the .deb test installs into the system, so two runs of it (two cargo
/// invocations on one machine) must not overlap. `-o` keeps the lock in the
/// flock process alone; killing it on drop releases the lock, and its
/// `cat` child ends when the guard drops the stdin pipe.
struct MachineLock {
    _guard: ChildGuard,
}

impl MachineLock {
    fn take(name: &str, dir: &Path) -> Self {
        let marker = dir.join(format!("{name}.locked"));
        let mut guard = ChildGuard::spawn(
            "flock",
            Command::new("flock")
                .args(["-o", "-w", "900"])
                .arg(format!("/tmp/{name}.lock"))
                .arg("-c")
                .arg(format!("echo locked > '{}'; exec cat", marker.display()))
                .stdin(Stdio::piped())
                .stdout(Stdio::null()),
        );
        assert!(
            wait_until(Duration::from_secs(900), || marker.exists()
                || !guard.is_running()),
            "flock never took /tmp/{name}.lock"
        );
        assert!(guard.is_running(), "flock /tmp/{name}.lock failed");
        Self { _guard: guard }
    }
}

/// Purges the package when dropped (also when the test panics), so the
/// machine is left as it was and a second run starts clean.
struct Installed;

impl Installed {
    fn purge() {
        let o = Command::new("dpkg")
            .args(["--purge", "novaha"])
            .output()
            .expect("run dpkg --purge");
        assert!(
            o.status.success(),
            "dpkg --purge novaha: {}{}",
            stdout(&o),
            stderr(&o)
        );
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["--purge", "novaha"]).output();
    }
}

fn is_installed() -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", "novaha"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

/// cargo-deb packages the binary this test run already built (no second
/// compile): it is copied to `<tmp>/target/release/novaha` and cargo-deb
/// runs with `--no-build` and `CARGO_TARGET_DIR=<tmp>/target`, which is
/// where it looks for a release binary. The package is installed into the
/// system with dpkg (this is a test machine; the test needs root), checked,
/// run against a test Consul, and purged.
#[test]
fn deb_builds_installs_runs_and_purges() {
    let cargo_deb = tool(
        "NOVAHA_CARGO_DEB",
        &["cargo-deb-3.8.0/bin/cargo-deb"],
        "cargo-deb",
    );
    let uid = Command::new("id").arg("-u").output().unwrap();
    assert_eq!(
        stdout(&uid).trim(),
        "0",
        "the .deb test installs a package: run the tests as root (CI does)"
    );
    let dir = tempfile::tempdir().unwrap();
    let _lock = MachineLock::take("novaha-deb-test", dir.path());
    let release = dir.path().join("target/release");
    std::fs::create_dir_all(&release).unwrap();
    std::fs::copy(bin(), release.join("novaha")).unwrap();
    let out = dir.path().join("deb");
    let o = Command::new(&cargo_deb)
        .args([
            "-p",
            "novaha",
            "--no-build",
            "--offline",
            "--strip",
            "--fast",
            "-o",
        ])
        .arg(&out)
        .current_dir(repo_root())
        .env("CARGO_TARGET_DIR", dir.path().join("target"))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "cargo deb: {}{}",
        stdout(&o),
        stderr(&o)
    );
    let deb = stdout(&o).lines().last().unwrap().trim().to_owned();
    assert!(deb.ends_with(".deb") && Path::new(&deb).is_file(), "{deb}");

    // Debian's own checker: no error, and none of the warnings the
    // maintainer scripts and the conffile used to earn.
    let o = Command::new(tool("NOVAHA_LINTIAN", &["/usr/bin/lintian"], "lintian"))
        .args(["--no-cfg", "--allow-root"])
        .arg(&deb)
        .output()
        .unwrap();
    let report = format!("{}{}", stdout(&o), stderr(&o));
    for line in report.lines() {
        assert!(!line.starts_with("E: "), "lintian error: {line}\n{report}");
        for tag in [
            "maintainer-script-calls-systemctl",
            "non-standard-file-perm",
            "command-with-path-in-maintainer-script",
            "copyright-without-copyright-notice",
            "no-changelog",
        ] {
            assert!(!line.contains(tag), "lintian: {line}\n{report}");
        }
    }
    assert!(o.status.code().is_some(), "lintian did not run: {report}");

    if is_installed() {
        Installed::purge();
    }
    let installed = Installed;
    let o = Command::new("dpkg").arg("-i").arg(&deb).output().unwrap();
    assert!(o.status.success(), "dpkg -i: {}{}", stdout(&o), stderr(&o));
    assert!(is_installed());

    // The files, where an operator expects them.
    for f in [
        "/usr/bin/novaha",
        "/lib/systemd/system/novaha.service",
        "/etc/novaha/novaha.toml",
        "/usr/share/doc/novaha/README.md",
        "/usr/share/doc/novaha/runbook.md",
        "/usr/share/doc/novaha/configuration.md",
        "/usr/share/doc/novaha/metrics.md",
        "/usr/share/doc/novaha/packaging.md",
        "/usr/share/doc/novaha/copyright",
        "/usr/share/doc/novaha/examples/consul/novaha-policy.hcl",
        "/usr/share/doc/novaha/examples/prometheus/novaha-alerts.yml",
        "/usr/share/doc/novaha/examples/grafana/novaha.json",
    ] {
        assert!(Path::new(f).is_file(), "{f} not installed");
    }
    assert_eq!(
        std::fs::read_to_string("/lib/systemd/system/novaha.service").unwrap(),
        std::fs::read_to_string(repo_root().join("deploy/systemd/novaha.service")).unwrap()
    );
    let q = Command::new("dpkg-query")
        .args(["-W", "-f=${Conffiles}", "novaha"])
        .output()
        .unwrap();
    assert!(
        stdout(&q).contains("/etc/novaha/novaha.toml"),
        "not a conffile: {}",
        stdout(&q)
    );
    // The unit's User=novaha exists, and the config is readable by it only.
    let o = Command::new("getent")
        .args(["passwd", "novaha"])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "postinst did not create the novaha user"
    );
    let o = Command::new("stat")
        .args(["-c", "%U:%G %a", "/etc/novaha/novaha.toml"])
        .output()
        .unwrap();
    assert_eq!(stdout(&o).trim(), "root:novaha 640");
    let o = Command::new("dpkg-statoverride")
        .args(["--list", "/etc/novaha/novaha.toml"])
        .output()
        .unwrap();
    assert_eq!(stdout(&o).trim(), "root novaha 640 /etc/novaha/novaha.toml");
    // The unit's state is tracked by deb-systemd-helper, and a first
    // install enables nothing (the config must name the cloud first).
    let wants = Path::new("/etc/systemd/system/multi-user.target.wants/novaha.service");
    assert!(!wants.exists(), "a first install enabled the unit");
    let state = Path::new("/var/lib/systemd/deb-systemd-helper-enabled/novaha.service.dsh-also");
    assert!(state.is_file(), "no deb-systemd-helper state");
    // The administrator enables it (what `systemctl enable` does); then an
    // upgrade replaces the conffile (they never edited it): it comes back
    // root:novaha 0640, not the package's root:root 0644, and the unit
    // stays enabled.
    std::fs::create_dir_all(wants.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink("/lib/systemd/system/novaha.service", wants).unwrap();
    let upgrade = repackage_with_new_conffile(&deb, dir.path());
    let o = Command::new("dpkg")
        .arg("-i")
        .arg(&upgrade)
        .output()
        .unwrap();
    assert!(o.status.success(), "upgrade: {}{}", stdout(&o), stderr(&o));
    let conf = std::fs::read_to_string("/etc/novaha/novaha.toml").unwrap();
    assert!(conf.contains("# upgraded"), "the conffile was not replaced");
    let o = Command::new("stat")
        .args(["-c", "%U:%G %a", "/etc/novaha/novaha.toml", "/etc/novaha"])
        .output()
        .unwrap();
    assert_eq!(stdout(&o), "root:novaha 640\nroot:novaha 750\n");
    assert!(wants.is_symlink(), "the upgrade disabled the unit");

    // The installed binary with the installed config, pointed at a test
    // Consul through the environment (NOVAHA_<SECTION>__<KEY>).
    let agent = ConsulAgent::start();
    let port = free_port();
    // The packaged config names no cloud: the OS_* variables do, as they
    // would from /etc/default/novaha.
    let cloud = SimCloud::start();
    let mut env = vec![
        ("NOVAHA_CONSUL__ADDRESS", agent.http_addr()),
        ("NOVAHA_HTTP__LISTEN", format!("127.0.0.1:{port}")),
        ("NOVAHA_ELECTION__ID", "deb-test".to_owned()),
    ];
    env.extend(cloud.os_env());
    let o = Command::new("/usr/bin/novaha")
        .args(["check-config", "-c", "/etc/novaha/novaha.toml"])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "check-config: {}{}",
        stdout(&o),
        stderr(&o)
    );
    let log_path = dir.path().join("installed.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut daemon = ChildGuard::spawn(
        "installed novaha",
        Command::new("/usr/bin/novaha")
            .args(["run", "-c", "/etc/novaha/novaha.toml"])
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log),
    );
    let read_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(
        wait_until(Duration::from_secs(30), || read_log()
            .contains("acquired the leader lock")),
        "{}",
        read_log()
    );
    wait_ready(port, "leader", Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}\n{}", read_log()));
    daemon.signal("TERM");
    assert_eq!(
        daemon.wait_exit(Duration::from_secs(30)),
        Some(0),
        "{}",
        read_log()
    );

    drop(installed);
    assert!(!is_installed());
    assert!(!Path::new("/usr/bin/novaha").exists());
    assert!(!Path::new("/etc/novaha").exists(), "purge left /etc/novaha");
    assert!(!wants.exists(), "purge left the unit enabled");
    assert!(!state.exists(), "purge left the deb-systemd-helper state");
    let o = Command::new("dpkg-statoverride")
        .args(["--list", "/etc/novaha/*"])
        .output()
        .unwrap();
    assert!(
        stdout(&o).is_empty(),
        "purge left statoverrides: {}",
        stdout(&o)
    );
}

/// The same package as version `-2` with one line added to its conffile:
/// what an upgrade that ships a new default config looks like to dpkg.
fn repackage_with_new_conffile(deb: &str, dir: &Path) -> PathBuf {
    let tree = dir.join("upgrade-tree");
    let o = Command::new("dpkg-deb")
        .arg("-R")
        .arg(deb)
        .arg(&tree)
        .output()
        .unwrap();
    assert!(o.status.success(), "dpkg-deb -R: {}", stderr(&o));
    let conf = tree.join("etc/novaha/novaha.toml");
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text.push_str("# upgraded\n");
    std::fs::write(&conf, text).unwrap();
    let control = tree.join("DEBIAN/control");
    let c = std::fs::read_to_string(&control).unwrap();
    let version = c
        .lines()
        .find_map(|l| l.strip_prefix("Version: "))
        .unwrap()
        .to_owned();
    std::fs::write(
        &control,
        c.replace(
            &format!("Version: {version}"),
            &format!("Version: {version}.1"),
        ),
    )
    .unwrap();
    // md5sums lists the conffile too; keep it true.
    let sums = tree.join("DEBIAN/md5sums");
    if sums.exists() {
        let o = Command::new("md5sum")
            .arg("etc/novaha/novaha.toml")
            .current_dir(&tree)
            .output()
            .unwrap();
        let line = stdout(&o);
        let text: String = std::fs::read_to_string(&sums)
            .unwrap()
            .lines()
            .map(|l| {
                if l.ends_with(" etc/novaha/novaha.toml") {
                    line.trim_end().to_owned()
                } else {
                    l.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(&sums, text + "\n").unwrap();
    }
    let out = dir.join("novaha-upgrade.deb");
    let o = Command::new("dpkg-deb")
        .args(["--root-owner-group", "-b"])
        .arg(&tree)
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "dpkg-deb -b: {}", stderr(&o));
    out
}

// ---------------------------------------------------------------------------
// systemd's notify protocol, spoken to a real datagram socket

/// Notify lines received so far, with when they came.
type Received = [(Instant, String)];

/// What systemd would see: READY=1 only once Consul answers, then
/// STATUS=standby/leader, WATCHDOG=1 at half of WATCHDOG_USEC from the main
/// loop, and STOPPING=1 on SIGTERM.
#[test]
fn notify_socket_gets_ready_status_watchdog_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    let agent = ConsulAgent::start();
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let cfg = DaemonConfig::fast(&agent.http_addr(), "t-ops-notify", "a").write(dir.path());
    let log_path = dir.path().join("a.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut d = ChildGuard::spawn(
        "novaha a",
        Command::new(bin())
            .args(["run", "-c"])
            .arg(&cfg)
            .env("NOTIFY_SOCKET", &sock_path)
            .env("WATCHDOG_USEC", "400000")
            .env_remove("WATCHDOG_PID")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log),
    );
    let mut got: Vec<(Instant, String)> = Vec::new();
    let recv_until =
        |got: &mut Vec<(Instant, String)>, timeout: Duration, done: &dyn Fn(&Received) -> bool| {
            let deadline = Instant::now() + timeout;
            let mut buf = [0u8; 256];
            while Instant::now() < deadline && !done(got) {
                if let Ok(n) = sock.recv(&mut buf) {
                    got.push((
                        Instant::now(),
                        String::from_utf8_lossy(&buf[..n]).into_owned(),
                    ));
                }
            }
            done(got)
        };
    let has = |m: &'static str| move |g: &Received| g.iter().any(|(_, s)| s == m);
    assert!(
        recv_until(&mut got, Duration::from_secs(30), &has("STATUS=leader")),
        "{got:?}\n{}",
        std::fs::read_to_string(&log_path).unwrap_or_default()
    );
    let order: Vec<&str> = got
        .iter()
        .map(|(_, s)| s.as_str())
        .filter(|s| !s.starts_with("WATCHDOG"))
        .collect();
    assert_eq!(
        order,
        ["READY=1", "STATUS=standby", "STATUS=leader"],
        "{got:?}"
    );
    // Pings keep coming while it leads: at least 5 more within 2 s (one
    // every 200 ms expected).
    let before = got.iter().filter(|(_, s)| s == "WATCHDOG=1").count();
    let pings =
        move |g: &Received| g.iter().filter(|(_, s)| s == "WATCHDOG=1").count() >= before + 5;
    assert!(
        recv_until(&mut got, Duration::from_secs(2), &pings),
        "{got:?}"
    );
    d.signal("TERM");
    assert!(
        recv_until(&mut got, Duration::from_secs(10), &has("STOPPING=1")),
        "{got:?}"
    );
    assert_eq!(d.wait_exit(Duration::from_secs(20)), Some(0));
}
