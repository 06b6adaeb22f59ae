//! `novaha` operator commands against a real Consul agent: config errors,
//! `check-config`, `status --json` on a seeded tree, `node register`,
//! `ha-node register`, `node reset`, `run --once`. Every test has its own
//! agent, temp dir and K/V prefix.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

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

#[test]
fn check_config_passes_on_a_valid_file_and_live_consul() {
    let agent = ConsulAgent::start();
    let dir = tempfile::tempdir().unwrap();
    let p = config(&agent, dir.path(), "t-check");
    let o = run(&["check-config", "-c", p.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("is valid"), "{}", stdout(&o));
    assert!(stdout(&o).contains(agent.node_name()), "{}", stdout(&o));
    // The shipped example is valid too (Consul unreachable is the only problem).
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/novaha.example.toml");
    let o = run(&["check-config", "-c", example.to_str().unwrap()]);
    assert!(!stderr(&o).contains("invalid ("), "{}", stderr(&o));
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
        ("ha_nodes/ha-1/status/in_use", "True"),
        ("ha_nodes/ha-1/status/serving", "c1"),
        ("ha_nodes/ha-2/status/in_use", "False"),
    ] {
        agent.kv_put(&format!("{p}/{k}"), v.as_bytes());
    }
    let o = run(&["status", "-c", cfg.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let doc: Value = serde_json::from_slice(&o.stdout).unwrap();
    let invalid_failed = json!({
        "key": "t-status/compute_nodes/c2/status/failed",
        "raw": "garbage",
        "reason": "not a boolean"
    });
    assert_eq!(
        doc,
        json!({
            "prefix": "t-status",
            "leader": null,
            "compute_nodes": {
                "c1": {"failed": true, "recovered": true, "number_fails": 4,
                       "maintenance": false, "awaiting_up": false, "phase": "fenced", "ha_node": "ha-1",
                       "last_error": null, "instances": {}, "invalid": []},
                "c2": {"failed": {"invalid": invalid_failed}, "recovered": false,
                       "number_fails": 0, "maintenance": false, "awaiting_up": false, "phase": null,
                       "ha_node": null, "last_error": null, "instances": {},
                       "invalid": [invalid_failed]},
            },
            "ha_nodes": {
                "ha-1": {"in_use": true, "serving": "c1"},
                "ha-2": {"in_use": false, "serving": null},
            },
        })
    );
    // The human table shows the same, the invalid value with its key.
    let o = run(&["status", "-c", cfg.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
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
    let dir = tempfile::tempdir().unwrap();
    let cfg = DaemonConfig::fast(&agent.http_addr(), "t-log", "logger").write(dir.path());
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
    assert!(o.status.success(), "{}", stderr(&o));
    let doc: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["leader"]["invalid"]["key"], "t-badlock/leader");
    assert_eq!(doc["leader"]["invalid"]["raw"], "not json");
    // --once refuses too, and says the lock is held.
    let o = run(&["run", "-c", cfg.to_str().unwrap(), "--once"]);
    assert_fails_with(&o, "t-badlock/leader");
}
