//! `novaha` operator commands against a real Consul agent: config errors,
//! `check-config`, `status --json` on a seeded tree, `node register`,
//! `ha-node register`, `node reset`, `run --once`. Every test has its own
//! agent, temp dir and K/V prefix.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use novaha_testkit::cloud::SimCloud;
use novaha_testkit::consul::ConsulAgent;
use novaha_testkit::daemon::{Daemon, DaemonConfig, novaha};
use novaha_testkit::process::free_port;
use serde_json::{Value, json};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_novaha"))
}

fn run(args: &[&str]) -> Output {
    novaha(bin(), args)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Asserts a clean failure: non-zero, `needle` on stderr, no panic.
fn assert_fails_with(o: &Output, needle: &str) {
    let err = stderr(o);
    assert!(
        !o.status.success(),
        "expected failure, got success; stderr:\n{err}"
    );
    assert!(
        err.contains(needle),
        "stderr does not name {needle:?}:\n{err}"
    );
    assert!(!err.contains("panicked"), "panicked:\n{err}");
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn config(agent: &ConsulAgent, dir: &Path, prefix: &str) -> PathBuf {
    DaemonConfig::fast(&agent.http_addr(), prefix, "cli").write(dir)
}

/// Every key below `prefix`, sorted.
fn keys(agent: &ConsulAgent, prefix: &str) -> Vec<String> {
    let (status, body) = agent.http("GET", &format!("/v1/kv/{prefix}/?keys"), b"");
    if status == 404 {
        return Vec::new();
    }
    assert_eq!(status, 200);
    let mut k: Vec<String> = serde_json::from_slice(&body).unwrap();
    k.sort();
    k
}

fn text(agent: &ConsulAgent, key: &str) -> Option<String> {
    agent.kv_get(key).map(|v| String::from_utf8(v).unwrap())
}

#[test]
fn missing_config_file_is_named() {
    let o = run(&["check-config", "-c", "/nonexistent/novaha.toml"]);
    assert_fails_with(&o, "/nonexistent/novaha.toml");
    assert_fails_with(&o, "cannot read config file");
    let o = run(&["status", "-c", "/nonexistent/novaha.toml"]);
    assert_fails_with(&o, "cannot read config file");
}

#[test]
fn unknown_key_bad_duration_and_every_problem_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "bad.toml",
        "[consul]\nadress = \"http://127.0.0.1:1\"\n\n[election]\nlock_delay = \"soon\"\n\n\
         [monitor]\nthreshold = -1\n\n[fence]\ndriver = \"noop\"\n",
    );
    let o = run(&["check-config", "-c", p.to_str().unwrap()]);
    assert_fails_with(&o, "consul.adress: unknown field `adress`");
    assert_fails_with(&o, "election.lock_delay");
    assert_fails_with(&o, "\"soon\"");
    assert_fails_with(&o, "monitor.threshold");
    assert_fails_with(&o, "allow_noop");
    assert_fails_with(&o, "consul reachability not checked");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    // The daemon refuses the same file the same way (same text, same code).
    let checked = stderr(&o);
    let o = run(&["run", "-c", p.to_str().unwrap()]);
    assert_fails_with(&o, "consul.adress");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        checked.starts_with(&stderr(&o)),
        "{checked}\n---\n{}",
        stderr(&o)
    );
    // Bad TOML syntax.
    let p = write(dir.path(), "syntax.toml", "[consul\naddress = 1\n");
    let o = run(&["check-config", "-c", p.to_str().unwrap()]);
    assert_fails_with(&o, "cannot parse");
}

#[test]
fn unreachable_consul_fails_check_config() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let p = write(
        dir.path(),
        "c.toml",
        &format!("[consul]\naddress = \"http://127.0.0.1:{port}\"\nrequest_timeout = \"2s\"\n"),
    );
    let o = run(&["check-config", "-c", p.to_str().unwrap()]);
    assert_fails_with(
        &o,
        &format!("consul at http://127.0.0.1:{port} is not reachable"),
    );
    let o = run(&["status", "-c", p.to_str().unwrap()]);
    assert_fails_with(&o, &format!("127.0.0.1:{port}"));
}

fn config_with(agent: &ConsulAgent, dir: &Path, prefix: &str, id: &str, extra: String) -> PathBuf {
    DaemonConfig {
        extra,
        ..DaemonConfig::fast(&agent.http_addr(), prefix, id)
    }
    .write(dir)
}

#[test]
fn check_config_passes_on_a_valid_file_live_consul_and_cloud() {
    let agent = ConsulAgent::start();
    let cloud = SimCloud::start();
    let dir = tempfile::tempdir().unwrap();
    let p = config_with(&agent, dir.path(), "t-check", "cli", cloud.admin());
    let o = run(&["check-config", "-c", p.to_str().unwrap()]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("is valid"), "{out}");
    assert!(out.contains(agent.node_name()), "{out}");
    assert!(out.contains("the token may write t-check/"), "{out}");
    assert!(out.contains("openstack: authenticated as user "), "{out}");
    assert!(out.contains("at microversion 2."), "{out}");
    assert!(
        out.contains(
            "the role may read 4 nova-compute service(s) and list every project's servers"
        ),
        "{out}"
    );
    // Nothing was written by the write check.
    assert_eq!(agent.kv_get("t-check/novaha/check_config"), None);
    // The shipped example is valid too (only reachability problems).
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/novaha.example.toml");
    let o = run(&["check-config", "-c", example.to_str().unwrap()]);
    assert!(!stderr(&o).contains("invalid ("), "{}", stderr(&o));
}

#[test]
fn check_config_names_a_missing_cloud_refused_credentials_and_a_weak_role() {
    let agent = ConsulAgent::start();
    let cloud = SimCloud::start();
    let dir = tempfile::tempdir().unwrap();
    // No cloud at all (the packaged config): a problem, not a pass.
    let p = config_with(&agent, dir.path(), "t-check2", "none", String::new());
    let o = std::process::Command::new(bin())
        .args(["check-config", "-c", p.to_str().unwrap()])
        .env_remove("OS_CLOUD")
        .env_remove("OS_AUTH_URL")
        .env_remove("OS_CLIENT_CONFIG_FILE")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_fails_with(&o, "  - openstack: no usable cloud");
    // Consul passed and is said so.
    assert!(
        stdout(&o).contains("the token may write t-check2/"),
        "{}",
        stdout(&o)
    );
    // A wrong password.
    let p = config_with(
        &agent,
        dir.path(),
        "t-check2",
        "wrong",
        cloud.section("admin", "nope", "admin"),
    );
    let o = run(&["check-config", "-c", p.to_str().unwrap()]);
    assert_fails_with(&o, "  - openstack.auth: keystone refused or did not answer");
    assert!(
        !stderr(&o).contains("nope"),
        "the password leaked: {}",
        stderr(&o)
    );
    // A member, not an admin: both rights are missing, each named.
    let p = config_with(
        &agent,
        dir.path(),
        "t-check2",
        "member",
        cloud.section("user-1", "user-1", "project-1"),
    );
    let o = run(&["check-config", "-c", p.to_str().unwrap()]);
    assert_fails_with(&o, "openstack.auth: the role may not read Nova's services");
    assert_fails_with(
        &o,
        "openstack.auth: the role may not list every project's servers",
    );
    assert!(
        stdout(&o).contains("openstack: authenticated"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn status_json_reports_exactly_the_seeded_tree() {
    let agent = ConsulAgent::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&agent, dir.path(), "t-status");
    let p = "t-status";
    let record = json!({
        "version": 1, "incident": "inc-1", "epoch": "s:1", "phase": "fenced",
        "ha_node": "ha-1", "timeline": {}, "instances": {}
    });
    for (k, v) in [
        ("compute_nodes/c1/status/failed", "True"),
        ("compute_nodes/c1/status/recovered", "true"),
        ("compute_nodes/c1/internal/number_fails", "4"),
        (
            "compute_nodes/c1/internal/recovery",
            record.to_string().as_str(),
        ),
        ("compute_nodes/c2/status/failed", "garbage"),
        ("compute_nodes/c2/status/recovered", "False"),
        ("compute_nodes/c2/internal/number_fails", "0"),
        (
            "compute_nodes/c2/internal/degraded",
            "nova=stale consul=healthy tcp=healthy",
        ),
        ("ha_nodes/ha-1/status/in_use", "True"),
        ("ha_nodes/ha-1/status/serving", "c1"),
        ("ha_nodes/ha-2/status/in_use", "False"),
    ] {
        agent.kv_put(&format!("{p}/{k}"), v.as_bytes());
    }
    let o = run(&["status", "-c", cfg.to_str().unwrap(), "--json"]);
    // An invalid value needs a human: exit 4, the document still printed.
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    let doc: Value = serde_json::from_slice(&o.stdout).unwrap();
    let invalid_failed = json!({
        "key": "t-status/compute_nodes/c2/status/failed",
        "raw": "garbage",
        "reason": "not a boolean"
    });
    assert_eq!(
        doc,
        json!({
            "schema_version": 2,
            "prefix": "t-status",
            "attention": [{"what": "degraded",
                           "detail": "c2's signals disagree (nova=stale consul=healthy tcp=healthy): not counted as failing, so not recovered"},
                          {"what": "invalid",
                           "detail": "1 value(s) in the tree do not parse; their nodes are skipped until fixed"}],
            "leader": null,
            "sight": null,
            "pause": null,
            "compute_nodes": {
                "c1": {"failed": true, "recovered": true, "number_fails": 4,
                       "maintenance": false, "maintenance_reason": null, "maintenance_until": null,
                       "awaiting_up": false, "degraded": null, "phase": "fenced", "ha_node": "ha-1",
                       "last_error": null, "instances": {}, "invalid": [],
                       "state": "recovering"},
                "c2": {"failed": null, "recovered": false,
                       "number_fails": 0, "maintenance": false, "maintenance_reason": null,
                       "maintenance_until": null, "awaiting_up": false,
                       "degraded": "nova=stale consul=healthy tcp=healthy", "phase": null,
                       "ha_node": null, "last_error": null, "instances": {},
                       "invalid": [invalid_failed], "state": "invalid"},
            },
            "ha_nodes": {
                "ha-1": {"in_use": true, "serving": "c1", "invalid": []},
                "ha-2": {"in_use": false, "serving": null, "invalid": []},
            },
            "invalid": [invalid_failed],
        })
    );
    // The human table shows the same, the invalid value with its key.
    let o = run(&["status", "-c", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.starts_with("degraded: c2's signals disagree"), "{out}");
    assert!(out.contains("\nINVALID VALUES: 1 value(s)"), "{out}");
    assert!(out.contains("leader: none"), "{out}");
    assert!(
        out.contains("INVALID(t-status/compute_nodes/c2/status/failed=\"garbage\")"),
        "{out}"
    );
    // A leader holding the lock is reported from the lock value.
    let mut d = Daemon::spawn(
        bin(),
        &DaemonConfig::fast(&agent.http_addr(), p, "leader-a").write(dir.path()),
        "leader-a",
        dir.path(),
        &[],
    );
    assert!(
        d.wait_log("acquired the leader lock", 1, Duration::from_secs(20)),
        "{}",
        d.log()
    );
    let o = run(&["status", "-c", cfg.to_str().unwrap(), "--json"]);
    let doc: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["leader"]["id"], "leader-a");
    assert_eq!(doc["leader"]["pid"], d.guard().pid());
    d.guard().kill();
}

#[test]
fn node_register_writes_exactly_the_expected_keys_and_never_overwrites_flags() {
    let agent = ConsulAgent::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&agent, dir.path(), "t-reg");
    let pw = write(dir.path(), "bmc.pw", "s3cr3t-pw\n");
    let args = |ip: &str| {
        vec![
            "node".to_owned(),
            "register".to_owned(),
            "c1".to_owned(),
            "-c".to_owned(),
            cfg.to_str().unwrap().to_owned(),
            "--bmc-driver".to_owned(),
            "ipmi".to_owned(),
            "--bmc-ip".to_owned(),
            ip.to_owned(),
            "--bmc-port".to_owned(),
            "6230".to_owned(),
            "--bmc-user".to_owned(),
            "admin".to_owned(),
            "--bmc-password-file".to_owned(),
            pw.to_str().unwrap().to_owned(),
        ]
    };
    let a = args("10.0.0.5");
    let o = run(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stdout(&o).contains("s3cr3t") && !stderr(&o).contains("s3cr3t"));
    let root = "t-reg/compute_nodes/c1";
    assert_eq!(
        keys(&agent, "t-reg"),
        [
            "config/bmc/driver",
            "config/bmc/ip",
            "config/bmc/password",
            "config/bmc/port",
            "config/bmc/user",
            "internal/number_fails",
            "status/failed",
            "status/recovered",
        ]
        .map(|k| format!("{root}/{k}"))
    );
    assert_eq!(
        text(&agent, &format!("{root}/status/failed")).as_deref(),
        Some("False")
    );
    assert_eq!(
        text(&agent, &format!("{root}/status/recovered")).as_deref(),
        Some("False")
    );
    assert_eq!(
        text(&agent, &format!("{root}/internal/number_fails")).as_deref(),
        Some("0")
    );
    assert_eq!(
        text(&agent, &format!("{root}/config/bmc/driver")).as_deref(),
        Some("ipmi")
    );
    assert_eq!(
        text(&agent, &format!("{root}/config/bmc/ip")).as_deref(),
        Some("10.0.0.5")
    );
    assert_eq!(
        text(&agent, &format!("{root}/config/bmc/port")).as_deref(),
        Some("6230")
    );
    assert_eq!(
        text(&agent, &format!("{root}/config/bmc/user")).as_deref(),
        Some("admin")
    );
    assert_eq!(
        text(&agent, &format!("{root}/config/bmc/password")).as_deref(),
        Some("s3cr3t-pw")
    );

    // Flags set by novaha or an operator survive a second register; the
    // BMC settings are updated.
    agent.kv_put(&format!("{root}/status/failed"), b"True");
    agent.kv_put(&format!("{root}/status/recovered"), b"garbage");
    agent.kv_put(&format!("{root}/internal/number_fails"), b"5");
    let a = args("10.0.0.6");
    let o = run(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        text(&agent, &format!("{root}/status/failed")).as_deref(),
        Some("True")
    );
    assert_eq!(
        text(&agent, &format!("{root}/status/recovered")).as_deref(),
        Some("garbage")
    );
    assert_eq!(
        text(&agent, &format!("{root}/internal/number_fails")).as_deref(),
        Some("5")
    );
    assert_eq!(
        text(&agent, &format!("{root}/config/bmc/ip")).as_deref(),
        Some("10.0.0.6")
    );
    assert_eq!(keys(&agent, "t-reg").len(), 8);

    // A missing password file is a clean error that writes nothing.
    let o = run(&[
        "node",
        "register",
        "c9",
        "-c",
        cfg.to_str().unwrap(),
        "--bmc-password-file",
        "/nonexistent/pw",
    ]);
    assert_fails_with(&o, "/nonexistent/pw");
    assert_eq!(keys(&agent, "t-reg").len(), 8);
}

#[test]
fn ha_node_register_creates_in_use_only_where_absent() {
    let agent = ConsulAgent::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&agent, dir.path(), "t-ha");
    let o = run(&["ha-node", "register", "ha-1", "-c", cfg.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        keys(&agent, "t-ha"),
        [
            "t-ha/ha_nodes/ha-1/general",
            "t-ha/ha_nodes/ha-1/status/in_use"
        ]
    );
    assert_eq!(
        text(&agent, "t-ha/ha_nodes/ha-1/status/in_use").as_deref(),
        Some("False")
    );
    let general: Value =
        serde_json::from_str(&text(&agent, "t-ha/ha_nodes/ha-1/general").unwrap()).unwrap();
    assert!(general["registered_at"].is_string(), "{general}");
    agent.kv_put("t-ha/ha_nodes/ha-1/status/in_use", b"True");
    agent.kv_put("t-ha/ha_nodes/ha-1/general", b"operator notes");
    let o = run(&["ha-node", "register", "ha-1", "-c", cfg.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("nothing to write"), "{}", stdout(&o));
    assert_eq!(
        text(&agent, "t-ha/ha_nodes/ha-1/status/in_use").as_deref(),
        Some("True")
    );
    assert_eq!(
        text(&agent, "t-ha/ha_nodes/ha-1/general").as_deref(),
        Some("operator notes")
    );
    let o = run(&[
        "ha-node",
        "register",
        "bad/name",
        "-c",
        cfg.to_str().unwrap(),
    ]);
    assert_fails_with(&o, "invalid node name");
}

#[test]
fn node_reset_clears_both_flags_and_records_who_and_when() {
    let agent = ConsulAgent::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&agent, dir.path(), "t-reset");
    let root = "t-reset/compute_nodes/c1";
    agent.kv_put(&format!("{root}/status/failed"), b"True");
    agent.kv_put(&format!("{root}/status/recovered"), b"True");
    agent.kv_put(&format!("{root}/internal/number_fails"), b"6");
    agent.kv_put(&format!("{root}/general"), b"left alone");
    let o = run(&[
        "node",
        "reset",
        "c1",
        "-c",
        cfg.to_str().unwrap(),
        "--by",
        "alice",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        text(&agent, &format!("{root}/status/failed")).as_deref(),
        Some("False")
    );
    assert_eq!(
        text(&agent, &format!("{root}/status/recovered")).as_deref(),
        Some("False")
    );
    assert_eq!(
        text(&agent, &format!("{root}/internal/number_fails")).as_deref(),
        Some("6")
    );
    assert_eq!(
        text(&agent, &format!("{root}/general")).as_deref(),
        Some("left alone")
    );
    let rec: Value =
        serde_json::from_str(&text(&agent, &format!("{root}/internal/last_reset")).unwrap())
            .unwrap();
    assert_eq!(rec["by"], "alice");
    assert_eq!(
        rec["previous"],
        json!({"failed": "True", "recovered": "True"})
    );
    assert!(
        chrono_like(rec["at"].as_str().unwrap()),
        "not a timestamp: {rec}"
    );
    assert_eq!(
        keys(&agent, "t-reset"),
        [
            "general",
            "internal/last_reset",
            "internal/number_fails",
            "status/failed",
            "status/recovered"
        ]
        .map(|k| format!("{root}/{k}"))
    );
    // Unknown node: a clear error, nothing written.
    let o = run(&["node", "reset", "nope", "-c", cfg.to_str().unwrap()]);
    assert_fails_with(&o, "node nope is not registered");
    assert_eq!(keys(&agent, "t-reset").len(), 5);
}

fn chrono_like(s: &str) -> bool {
    s.len() >= 20 && s.as_bytes()[4] == b'-' && s.contains('T')
}

#[test]
fn run_once_does_one_cycle_or_names_the_holder() {
    let agent = ConsulAgent::start();
    let dir = tempfile::tempdir().unwrap();
    let p = "t-once";
    agent.kv_put(&format!("{p}/compute_nodes/c1/status/failed"), b"False");
    let cfg = DaemonConfig::fast(&agent.http_addr(), p, "once").write(dir.path());
    let o = run(&["run", "-c", cfg.to_str().unwrap(), "--once"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("No failed nodes"), "{}", stdout(&o));
    let cycle: Value =
        serde_json::from_str(&text(&agent, &format!("{p}/novaha/last_cycle")).unwrap()).unwrap();
    assert_eq!(cycle["id"], "once");
    assert_eq!(cycle["compute_nodes"], 1);
    // The lock was released: a second --once runs at once.
    agent.kv_put(&format!("{p}/compute_nodes/c2/status/failed"), b"True");
    let o = run(&["run", "-c", cfg.to_str().unwrap(), "--once"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("Failed nodes: c2"), "{}", stdout(&o));

    // While a daemon leads, --once refuses and names it.
    let mut d = Daemon::spawn(
        bin(),
        &DaemonConfig::fast(&agent.http_addr(), p, "holder").write(dir.path()),
        "holder",
        dir.path(),
        &[],
    );
    assert!(
        d.wait_log("acquired the leader lock", 1, Duration::from_secs(20)),
        "{}",
        d.log()
    );
    let o = run(&["run", "-c", cfg.to_str().unwrap(), "--once"]);
    assert_fails_with(&o, "held by another process: id=holder");
    d.guard().kill();
}

/// `run --once` with extra environment (RUST_LOG and overrides).
fn run_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = std::process::Command::new(bin());
    cmd.args(args).env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[test]
fn logs_are_json_when_asked_rust_log_wins_and_the_token_never_shows() {
    let agent = ConsulAgent::start();
    let cloud = SimCloud::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_with(&agent, dir.path(), "t-log", "logger", cloud.admin());
    let cfg = cfg.to_str().unwrap();
    let token = "tok-SECRET-4711";
    let o = run_env(
        &["run", "-c", cfg, "--once"],
        &[
            ("NOVAHA_LOG__FORMAT", "json"),
            ("NOVAHA_CONSUL__TOKEN", token),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    let lines: Vec<Value> = err
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect();
    let done = lines
        .iter()
        .find(|l| l["message"] == "leader cycle done")
        .unwrap_or_else(|| panic!("no cycle line in:\n{err}"));
    assert_eq!(done["level"], "INFO");
    assert_eq!(done["role"], "leader");
    assert!(!err.contains(token) && !stdout(&o).contains(token));

    // RUST_LOG wins over [log] level: at warn the INFO lines are gone.
    let o = run_env(&["run", "-c", cfg, "--once"], &[("RUST_LOG", "warn")]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("leader cycle done"), "{}", stderr(&o));
    // ... and at debug, with the token set, it still never shows.
    let o = run_env(
        &["run", "-c", cfg, "--once"],
        &[("RUST_LOG", "debug"), ("NOVAHA_CONSUL__TOKEN", token)],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("leader cycle done"), "{}", stderr(&o));
    assert!(!stderr(&o).contains(token) && !stdout(&o).contains(token));
    let o = run_env(
        &["check-config", "-c", cfg],
        &[("NOVAHA_CONSUL__TOKEN", token)],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains(token) && !stdout(&o).contains(token));
}

#[test]
fn status_shows_an_unreadable_lock_value_as_invalid_with_its_key() {
    let agent = ConsulAgent::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&agent, dir.path(), "t-badlock");
    let (st, body) = agent.http("PUT", "/v1/session/create", br#"{"Name": "someone"}"#);
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
    let session: Value = serde_json::from_slice(&body).unwrap();
    let id = session["ID"].as_str().unwrap();
    let (st, body) = agent.http(
        "PUT",
        &format!("/v1/kv/t-badlock/leader?acquire={id}"),
        b"not json",
    );
    assert_eq!(st, 200);
    assert_eq!(String::from_utf8_lossy(&body).trim(), "true");
    let o = run(&["status", "-c", cfg.to_str().unwrap(), "--json"]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    let doc: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["leader"], Value::Null);
    assert_eq!(doc["invalid"][0]["key"], "t-badlock/leader");
    assert_eq!(doc["invalid"][0]["raw"], "not json");
    // --once refuses too, and says the lock is held.
    let o = run(&["run", "-c", cfg.to_str().unwrap(), "--once"]);
    assert_fails_with(&o, "t-badlock/leader");
}

#[test]
fn pause_and_resume_write_who_when_why_until_and_status_says_it_first() {
    let agent = ConsulAgent::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&agent, dir.path(), "t-pause");
    let c = cfg.to_str().unwrap();
    let key = "t-pause/config/paused";
    // Not paused: resume says so and succeeds.
    let o = run(&["resume", "-c", c]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("not paused"), "{}", stdout(&o));

    let o = run(&[
        "pause",
        "--reason",
        "core switch upgrade",
        "--for",
        "2h",
        "--by",
        "alice",
        "-c",
        c,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let p: Value = serde_json::from_str(&text(&agent, key).unwrap()).unwrap();
    assert_eq!(p["by"], "alice");
    assert_eq!(p["reason"], "core switch upgrade");
    let at = chrono::DateTime::parse_from_rfc3339(p["at"].as_str().unwrap()).unwrap();
    let until = chrono::DateTime::parse_from_rfc3339(p["until"].as_str().unwrap()).unwrap();
    assert_eq!((until - at).num_seconds(), 7200, "{p}");
    assert!(
        (chrono::Utc::now() - at.with_timezone(&chrono::Utc)).num_seconds() < 60,
        "{p}"
    );

    let o = run(&["status", "-c", c]);
    assert!(o.status.success(), "a pause is no problem: {}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.starts_with("PAUSED: core switch upgrade by alice at "),
        "{out}"
    );
    let o = run(&["status", "--json", "-c", c]);
    let doc: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["pause"]["active"], true);
    assert_eq!(doc["pause"]["reason"], "core switch upgrade");

    // A second pause replaces the first (no --for: until resume).
    let o = run(&["pause", "--reason", "longer", "-c", c]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("replaced the pause \"core switch upgrade\" by alice"),
        "{}",
        stdout(&o)
    );
    let p: Value = serde_json::from_str(&text(&agent, key).unwrap()).unwrap();
    assert_eq!(p.get("until"), None, "{p}");

    // An empty reason is refused, nothing written.
    let o = run(&["pause", "--reason", "  ", "-c", c]);
    assert_fails_with(&o, "--reason must not be empty");

    let o = run(&["resume", "-c", c]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("ended the pause \"longer\""),
        "{}",
        stdout(&o)
    );
    assert_eq!(text(&agent, key), None);

    // Written by hand in the Consul UI and unreadable: paused, and invalid.
    agent.kv_put(key, b"yes please");
    let o = run(&["status", "--json", "-c", c]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    let doc: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["pause"]["active"], true, "{doc}");
    assert_eq!(doc["invalid"][0]["key"], key);
    let o = run(&["resume", "-c", c]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("removed an unreadable pause value"));
    assert_eq!(text(&agent, key), None);
}

#[test]
fn node_maintenance_on_and_off_writes_the_keys_and_records_who() {
    let agent = ConsulAgent::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&agent, dir.path(), "t-maint");
    let c = cfg.to_str().unwrap();
    let root = "t-maint/compute_nodes/c1";
    agent.kv_put(&format!("{root}/status/failed"), b"False");
    let o = run(&[
        "node",
        "maintenance",
        "c1",
        "on",
        "--reason",
        "DIMM swap",
        "--for",
        "4h",
        "--by",
        "bob",
        "-c",
        c,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        text(&agent, &format!("{root}/config/maintenance")).as_deref(),
        Some("True")
    );
    assert_eq!(
        text(&agent, &format!("{root}/config/maintenance_reason")).as_deref(),
        Some("DIMM swap")
    );
    let until = text(&agent, &format!("{root}/config/maintenance_until")).unwrap();
    let until = chrono::DateTime::parse_from_rfc3339(&until).unwrap();
    let left = (until.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_seconds();
    assert!((14_000..=14_400).contains(&left), "{left}");
    let last: Value =
        serde_json::from_str(&text(&agent, &format!("{root}/internal/last_maintenance")).unwrap())
            .unwrap();
    assert_eq!(last["by"], "bob");
    assert_eq!(last["maintenance"], true);
    assert_eq!(last["reason"], "DIMM swap");

    let o = run(&["status", "--json", "-c", c]);
    let doc: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["compute_nodes"]["c1"]["maintenance"], true);
    assert_eq!(
        doc["compute_nodes"]["c1"]["maintenance_reason"],
        "DIMM swap"
    );
    let o = run(&["status", "-c", c]);
    assert!(
        stdout(&o).contains("maintenance until ") && stdout(&o).contains(": DIMM swap"),
        "{}",
        stdout(&o)
    );

    // On again without --for: the end time is removed.
    let o = run(&[
        "node",
        "maintenance",
        "c1",
        "on",
        "--reason",
        "longer",
        "-c",
        c,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        text(&agent, &format!("{root}/config/maintenance_until")),
        None
    );

    let o = run(&["node", "maintenance", "c1", "off", "-c", c]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        text(&agent, &format!("{root}/config/maintenance")).as_deref(),
        Some("False")
    );
    assert_eq!(
        text(&agent, &format!("{root}/config/maintenance_reason")),
        None
    );
    let last: Value =
        serde_json::from_str(&text(&agent, &format!("{root}/internal/last_maintenance")).unwrap())
            .unwrap();
    assert_eq!(last["maintenance"], false);
    // The failed flag was never touched.
    assert_eq!(
        text(&agent, &format!("{root}/status/failed")).as_deref(),
        Some("False")
    );

    // A typo never creates a node; on needs a reason.
    let o = run(&["node", "maintenance", "c9", "on", "--reason", "x", "-c", c]);
    assert_fails_with(&o, "node c9 is not registered");
    assert!(keys(&agent, "t-maint/compute_nodes/c9").is_empty());
    let o = run(&["node", "maintenance", "c1", "on", "-c", c]);
    assert_fails_with(&o, "--reason");
}

#[test]
fn incidents_lists_history_and_incident_show_prints_the_timeline() {
    let agent = ConsulAgent::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&agent, dir.path(), "t-inc");
    let c = cfg.to_str().unwrap();
    let done = json!({
        "version": 1, "incident": "c1-20261121T030000Z", "epoch": "s:1", "phase": "done",
        "ha_node": "ha-1", "nova_service_id": "7",
        "timeline": {"detected": "2026-11-21T03:00:00Z", "claimed": "2026-11-21T03:00:00Z",
                     "fenced": "2026-11-21T03:00:04Z", "forced_down": "2026-11-21T03:00:05Z",
                     "evacuating": "2026-11-21T03:00:05Z", "evacuated": "2026-11-21T03:00:30Z",
                     "notified": "2026-11-21T03:00:31Z", "done": "2026-11-21T03:00:31Z"},
        "fence": {"driver": "ipmi", "verified_off_at": "2026-11-21T03:00:04Z"},
        "instances": {
            "9b0c": {"state": "done", "prior_status": "ACTIVE", "name": "web-1", "target": "ha-1"},
            "77aa": {"state": "error", "prior_status": "ACTIVE", "name": "db-1",
                     "error": "did not land within 10m"}
        }
    });
    let live = json!({
        "version": 1, "incident": "c2-20261122T010000Z", "epoch": "s:2", "phase": "evacuating",
        "timeline": {"detected": "2026-11-22T01:00:00Z"}, "instances": {}
    });
    agent.kv_put(
        "t-inc/compute_nodes/c1/incidents/c1-20261121T030000Z",
        done.to_string().as_bytes(),
    );
    agent.kv_put(
        "t-inc/compute_nodes/c2/internal/recovery",
        live.to_string().as_bytes(),
    );
    let o = run(&["incidents", "-c", c]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].contains("ID") && lines[0].contains("DETECTED"),
        "{out}"
    );
    assert!(
        lines[1].contains("c2-20261122T010000Z") && lines[1].contains("evacuating (in progress)"),
        "{out}"
    );
    assert!(
        lines[2].contains("c1-20261121T030000Z")
            && lines[2].contains("2 (1 done, 1 error, 0 skipped)"),
        "{out}"
    );
    let o = run(&["incidents", "c1", "--json", "-c", c]);
    let doc: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["schema_version"], 1);
    assert_eq!(doc["incidents"].as_array().unwrap().len(), 1);
    assert_eq!(doc["incidents"][0]["ended"], "2026-11-21T03:00:31Z");

    let o = run(&["incident", "show", "c1-20261121T030000Z", "-c", c]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let order: Vec<usize> = [
        "judged failed",
        "HA node ha-1 claimed",
        "power verified off by ipmi",
        "service 7 forced down",
        "evacuating 2",
        "1 done, 1 error",
        "notified",
        "recovery finished",
    ]
    .iter()
    .map(|needle| {
        out.find(needle)
            .unwrap_or_else(|| panic!("{needle}: {out}"))
    })
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{out}");
    let db = out.lines().find(|l| l.contains("77aa")).unwrap();
    assert!(
        db.contains("db-1") && db.contains("error") && db.contains("did not land within 10m"),
        "{db}"
    );
    let web = out.lines().find(|l| l.contains("9b0c")).unwrap();
    assert!(web.contains("done") && web.contains("ha-1"), "{web}");
    let o = run(&["incident", "show", "c1-20261121T030000Z", "--json", "-c", c]);
    let doc: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["record"], done);
    assert_eq!(doc["timeline"][2]["event"], "fenced");
    let o = run(&["incident", "show", "nope", "-c", c]);
    assert_fails_with(&o, "no incident \"nope\"");
}

/// Under systemd (stderr is the journal stream `JOURNAL_STREAM` names)
/// every line starts with its syslog priority, so `journalctl -p err`
/// filters; anywhere else lines are left alone.
#[test]
fn under_journald_every_line_carries_its_priority() {
    use std::os::unix::fs::MetadataExt;
    let agent = ConsulAgent::start();
    let dir = tempfile::tempdir().unwrap();
    let p = "t-journal";
    // An invalid value (ERROR) and no cloud (WARN: nothing judged).
    agent.kv_put(&format!("{p}/compute_nodes/c1/status/failed"), b"maybe");
    let cfg = config(&agent, dir.path(), p);
    let run_logged = |name: &str, format: &str, journal: bool| -> String {
        let path = dir.path().join(name);
        let file = std::fs::File::create(&path).unwrap();
        let meta = file.metadata().unwrap();
        let mut cmd = std::process::Command::new(bin());
        cmd.args(["run", "--once", "-c", cfg.to_str().unwrap()])
            .env("NOVAHA_LOG__FORMAT", format)
            .env_remove("RUST_LOG")
            .env_remove("OS_CLOUD")
            .env_remove("OS_AUTH_URL")
            .stdout(std::process::Stdio::null())
            .stderr(file);
        if journal {
            cmd.env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()));
        } else {
            cmd.env_remove("JOURNAL_STREAM");
        }
        let status = cmd.status().unwrap();
        assert!(
            status.success(),
            "{}",
            std::fs::read_to_string(&path).unwrap()
        );
        std::fs::read_to_string(&path).unwrap()
    };
    let text = run_logged("journal.log", "text", true);
    let line = |needle: &str| {
        text.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in:\n{text}"))
            .to_owned()
    };
    assert!(
        line("invalid value in the state tree").starts_with("<3>"),
        "{text}"
    );
    assert!(line("cannot read the cloud").starts_with("<4>"), "{text}");
    assert!(line("leader cycle done").starts_with("<6>"), "{text}");
    assert!(
        text.lines().all(|l| l.starts_with('<')),
        "every line has a priority:\n{text}"
    );
    // JSON lines too: the prefix, then the object.
    let json = run_logged("journal.json", "json", true);
    let first = json.lines().next().unwrap();
    let (prefix, rest) = first.split_at(3);
    assert!(matches!(prefix, "<3>" | "<4>" | "<6>" | "<7>"), "{first}");
    serde_json::from_str::<Value>(rest).unwrap();
    // Not under journald: no prefix at all.
    let plain = run_logged("plain.log", "text", false);
    assert!(!plain.lines().any(|l| l.starts_with('<')), "{plain}");
    assert!(plain.contains("leader cycle done"), "{plain}");
}

/// `run --once` never waits for what only a later run can bring (the
/// monitor's next read, a backoff): with a node already `failed=True` (a
/// previous leader's verdict) and Nova's service list failing, it stops at
/// the first wait, says why, and releases the lock, instead of holding the
/// lock until someone kills it.
#[test]
fn run_once_stops_at_a_wait_and_releases_the_lock() {
    use novaha_sim::{FaultKind, FaultRule};
    let agent = ConsulAgent::start();
    let cloud = SimCloud::start();
    let dir = tempfile::tempdir().unwrap();
    let p = "t-once-wait";
    let cfg = config_with(&agent, dir.path(), p, "once", cloud.admin());
    let cfg = cfg.to_str().unwrap();
    agent.kv_put(
        &format!("{p}/compute_nodes/compute-1/status/failed"),
        b"True",
    );
    cloud.sim().add_fault(FaultRule::new(
        "/os-services",
        FaultKind::Status { status: 500 },
    ));
    let mut child = std::process::Command::new(bin())
        .args(["run", "-c", cfg, "--once"])
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let o = child.wait_with_output().unwrap();
            panic!(
                "run --once still running after 60 s, holding the lock:\n{}",
                stderr(&o)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("Nova could not be read"), "{out}");
    assert!(
        out.contains("compute-1: recovery waiting: not-judged"),
        "{out}\n{}",
        stderr(&o)
    );
    // Nothing destructive was decided without a judgement, and the lock is
    // free: the next run takes it at once.
    assert_eq!(
        text(
            &agent,
            &format!("{p}/compute_nodes/compute-1/status/recovered")
        ),
        None
    );
    let (status, body) = agent.http("GET", &format!("/v1/kv/{p}/leader"), b"");
    if status == 200 {
        let entry: Value = serde_json::from_slice(&body).unwrap();
        assert!(
            entry[0].get("Session").is_none(),
            "lock still held: {entry}"
        );
    }
}
