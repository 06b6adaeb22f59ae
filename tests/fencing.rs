//! Fencing end to end: a real `novaha run` with `[fence] driver = "ipmi"`
//! against a real Consul agent, the Keystone + Nova simulator (in-process)
//! and real BMCs: OpenIPMI's `ipmi_sim` driven by the real `ipmitool`, one
//! per node, and for Redfish a tiny local HTTP server answering malformed
//! JSON. Nodes are registered the operator's way (`novaha node register
//! NODE --bmc-driver ipmi --bmc-ip 127.0.0.1 --bmc-port P --bmc-user U
//! --bmc-password-file F`).
//!
//! What an operator would check, from the outside:
//! - a good BMC: the killed host's simulated chassis really is off, and only
//!   then are its instances evacuated;
//! - a wrong password, a dead BMC, a BMC that still reads "on" after the
//!   off command, a malformed Redfish answer: a clear error in the daemon's
//!   log and in the recovery record / `novaha status`, the node stays
//!   failed, the recovery keeps retrying, and **no evacuate call** (nor a
//!   force-down) reaches the simulator (safety rule 1, docs/safety.md);
//! - the fence-path health check: with a short `health_interval`, a node
//!   whose BMC password is wrong shows unhealthy in `novaha status --json`
//!   and as `novaha_bmc_up 0` on `/metrics` before anything fails.
//!
//! The sim runs in-process (see tests/recovery.rs for why). Timeouts are
//! short (`confirm_timeout`, ipmitool's `-N 1 -R 1`) so each case takes
//! seconds.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use novaha_sim::{SimConfig, SimHandle};
use novaha_testkit::cloud::SimCloud;
use novaha_testkit::consul::ConsulAgent;
use novaha_testkit::daemon::{
    Cli, Daemon, DaemonConfig, http_get, listen_of, novaha, recovery_record,
};
use novaha_testkit::ipmi::{IpmiBmc, ipmitool};
use serde_json::Value;

const USER: &str = "fenceadmin";
/// The BMCs' password; 16 bytes, under IPMI's 20-byte limit.
const PASSWORD: &str = "pw-Fence-Right-1";
/// A wrong password, also distinctive so a leak is found by a search.
const WRONG: &str = "pw-Fence-Wrong-2";

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_novaha"))
}

/// One test's world: a Consul agent, the sim (3 hosts, 2 instances each,
/// 1 spare), one `novaha run` with the ipmi fencer.
struct Cluster {
    dir: tempfile::TempDir,
    prefix: String,
    health_interval: &'static str,
    daemon: Option<Daemon>,
    agent: ConsulAgent,
    cloud: SimCloud,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // The daemon first, then the cloud it talks to.
        self.daemon.take();
    }
}

impl Cluster {
    /// Everything but the daemon (register nodes first, then
    /// [`Cluster::start_daemon`]).
    fn new(prefix: &str, health_interval: &'static str) -> Self {
        let cloud = SimCloud::start_with(SimConfig {
            hosts: 3,
            instances_per_host: 2,
            ha_nodes: 1,
            service_down_time: Duration::from_secs(1),
            evacuate_delay: Duration::from_millis(300),
            ..SimConfig::default()
        });
        let c = Self {
            dir: tempfile::tempdir().unwrap(),
            prefix: prefix.to_owned(),
            health_interval,
            daemon: None,
            agent: ConsulAgent::start(),
            cloud,
        };
        c.config("admin");
        c.cli().run(&["ha-node", "register", "ha-1"]);
        c
    }

    fn sim(&self) -> &SimHandle {
        self.cloud.sim()
    }

    /// Writes `<dir>/<id>.toml`.
    fn config(&self, id: &str) -> PathBuf {
        let stages = format!(
            r#"
[fence]
driver = "ipmi"
confirm_timeout = "3s"
poll_interval = "250ms"
health_interval = "{health}"

[fence.ipmi]
ipmitool = "{ipmitool}"
session_timeout = "1s"
retries = 1
command_timeout = "10s"

[fence.redfish]
scheme = "http"
request_timeout = "2s"

[evacuate]
poll_interval = "300ms"
timeout = "60s"
# The sim's instances are image-backed: declared shared so they move.
shared_storage = true

[recovery]
backoff_initial = "500ms"
backoff_max = "2s"
"#,
            health = self.health_interval,
            ipmitool = ipmitool().display(),
        );
        DaemonConfig {
            interval: "500ms",
            monitor: "threshold = 1\n".to_owned(),
            extra: self.cloud.admin() + &stages,
            ..DaemonConfig::fast(&self.agent.http_addr(), &self.prefix, id)
        }
        .write(self.dir.path())
    }

    /// The CLI with the admin config (no daemon runs with it).
    fn cli(&self) -> Cli {
        Cli::new(bin(), &self.dir.path().join("admin.toml"))
    }

    /// `novaha node register NODE --bmc-driver DRIVER --bmc-ip IP
    /// [--bmc-port P] --bmc-user USER --bmc-password-file F`.
    fn register(&self, node: &str, driver: &str, ip: &str, port: Option<u16>, password: &str) {
        let file = self.dir.path().join(format!("{node}.password"));
        std::fs::write(&file, format!("{password}\n")).unwrap();
        let port = port.map(|p| p.to_string());
        let mut args = vec![
            "node",
            "register",
            node,
            "--bmc-driver",
            driver,
            "--bmc-ip",
            ip,
            "--bmc-user",
            USER,
            "--bmc-password-file",
            file.to_str().unwrap(),
        ];
        if let Some(p) = &port {
            args.extend(["--bmc-port", p.as_str()]);
        }
        self.cli().run(&args);
    }

    /// Registers `node` against an `ipmi_sim` BMC.
    fn register_ipmi(&self, node: &str, bmc: &IpmiBmc, password: &str) {
        self.register(node, "ipmi", "127.0.0.1", Some(bmc.port()), password);
    }

    fn start_daemon(&mut self) {
        let cfg = self.config("a");
        self.daemon = Some(Daemon::spawn(bin(), &cfg, "a", self.dir.path(), &[]));
        self.wait("a leader", Duration::from_secs(30), |s| {
            s["leader"]["id"].is_string()
        });
        assert!(
            self.daemon()
                .wait_log("leader cycle done", 1, Duration::from_secs(20)),
            "{}",
            self.log()
        );
        self.wait("keys created", Duration::from_secs(10), |s| {
            s["compute_nodes"]["compute-3"]["failed"] == false
        });
    }

    fn daemon(&self) -> &Daemon {
        self.daemon.as_ref().expect("daemon started")
    }

    fn log(&self) -> String {
        self.daemon.as_ref().map(Daemon::log).unwrap_or_default()
    }

    /// `novaha status --json`.
    fn status(&self) -> Value {
        self.cli().status()
    }

    fn node(&self, node: &str) -> Value {
        self.status()["compute_nodes"][node].clone()
    }

    /// `novaha status` (text).
    fn status_text(&self) -> String {
        self.cli().status_text()
    }

    /// Polls the status until `check` holds; panics with the log if not.
    fn wait(&self, what: &str, timeout: Duration, check: impl Fn(&Value) -> bool) -> Value {
        self.cli().wait(what, timeout, check, || {
            format!("--- daemon log ---\n{}", self.log())
        })
    }

    /// The node's live recovery record.
    fn record(&self, node: &str) -> Option<Value> {
        recovery_record(&self.agent, &self.prefix, node)
    }

    /// Evacuate calls that reached the sim.
    fn evacuate_calls(&self) -> usize {
        self.sim()
            .calls()
            .iter()
            .filter(|c| c.method == "POST" && c.body.get("evacuate").is_some())
            .count()
    }

    /// Force-down / disable calls on `host`'s nova-compute service.
    fn service_calls(&self, host: &str) -> usize {
        let svc = self.sim().service(host).expect("service").0;
        let id = svc.uuid.to_string();
        self.sim()
            .calls()
            .iter()
            .filter(|c| c.method == "PUT" && c.path.contains(&id))
            .count()
    }

    /// GET /metrics from the daemon.
    fn metrics(&self) -> String {
        http_get(&listen_of(&self.dir.path().join("a.toml")), "/metrics")
    }

    fn kill_host(&self, host: &str) {
        self.sim().kill(host).unwrap();
    }
}

/// After a fence failure: the error is clear in the log, the record and
/// the status; the recovery retries (a second failure is logged); nothing
/// reached Nova's evacuate or force-down; the node stays failed; no secret
/// leaked. Returns the record's `last_error`.
fn assert_fence_refused(c: &Cluster, node: &str, expect: &[&str]) -> String {
    let st = c.wait(
        &format!("{node}: fence failure recorded"),
        Duration::from_secs(60),
        |s| s["compute_nodes"][node]["last_error"].is_string(),
    );
    let last_error = st["compute_nodes"][node]["last_error"]
        .as_str()
        .unwrap()
        .to_owned();
    for e in expect {
        assert!(
            last_error.contains(e),
            "{node}: last_error {last_error:?} lacks {e:?}\n{}",
            c.log()
        );
    }
    assert!(last_error.starts_with("fence"), "{last_error}");
    assert!(
        c.daemon()
            .wait_log("fence failed: no evacuation", 2, Duration::from_secs(60)),
        "the fence is retried\n{}",
        c.log()
    );
    let st = c.node(node);
    assert_eq!(st["failed"], true, "{st}");
    assert_eq!(st["recovered"], true, "the latch is set: {st}");
    assert_ne!(st["phase"], "fenced", "{st}");
    assert_ne!(st["phase"], "done", "{st}");
    let rec = c.record(node).expect("a recovery record");
    assert!(rec["timeline"].get("fenced").is_none(), "{rec:#}");
    assert!(rec["fence"]["verified_off_at"].is_null(), "{rec:#}");
    assert_eq!(
        c.evacuate_calls(),
        0,
        "an evacuate call reached nova\n{}",
        c.log()
    );
    assert_eq!(
        c.service_calls(node),
        0,
        "nova was touched before the fence"
    );
    assert_eq!(c.sim().servers_on(node).len(), 2, "instances left in place");
    let text = c.status_text();
    assert!(text.contains(node), "{text}");
    let log = c.log();
    for secret in [PASSWORD, WRONG] {
        assert!(!log.contains(secret), "a password in the daemon log");
        assert!(!last_error.contains(secret), "a password in the record");
        assert!(!text.contains(secret), "a password in novaha status");
    }
    assert!(
        log.contains("fence failed: no evacuation until the power reads off"),
        "{log}"
    );
    last_error
}

#[test]
fn a_good_bmc_fences_the_killed_host_then_it_is_evacuated() {
    let mut c = Cluster::new("f-good", "1s");
    let bmc = IpmiBmc::start(USER, PASSWORD);
    c.register_ipmi("compute-1", &bmc, PASSWORD);
    c.start_daemon();
    assert!(bmc.power_is_on());
    let ids: Vec<String> = c
        .sim()
        .servers_on("compute-1")
        .iter()
        .map(|s| s.id.to_string())
        .collect();
    assert_eq!(ids.len(), 2);
    c.kill_host("compute-1");
    c.wait("compute-1 recovered", Duration::from_secs(90), |s| {
        s["compute_nodes"]["compute-1"]["phase"] == "done"
    });
    // The chassis really went off, by an IPMI "chassis power off".
    assert!(!bmc.power_is_on(), "the simulated chassis is still on");
    let calls = bmc.calls();
    assert!(
        calls.iter().any(|l| l == "set power 0"),
        "no power-off reached the BMC: {calls:?}"
    );
    assert!(
        !calls.iter().any(|l| l == "set power 1"),
        "something powered it back on: {calls:?}"
    );
    let rec = c.record("compute-1").unwrap();
    assert_eq!(rec["fence"]["driver"], "ipmi", "{rec:#}");
    assert!(rec["fence"]["verified_off_at"].is_string(), "{rec:#}");
    // Fenced before the evacuation started, and every instance evacuated
    // exactly once to the spare.
    let t = &rec["timeline"];
    let fenced = t["fenced"].as_str().unwrap();
    let evacuating = t["evacuating"].as_str().unwrap();
    assert!(fenced <= evacuating, "{t}");
    assert_eq!(c.evacuate_calls(), 2, "{:?}", c.sim().calls());
    assert!(c.sim().servers_on("compute-1").is_empty());
    let on_ha: Vec<String> = c
        .sim()
        .servers_on("ha-1")
        .iter()
        .map(|s| s.id.to_string())
        .collect();
    for id in &ids {
        assert!(on_ha.contains(id), "{id} not on ha-1: {on_ha:?}");
    }
    assert_eq!(c.daemon().count("node fenced: power verified off"), 1);
    assert!(!c.log().contains(PASSWORD), "the password in the log");
}

#[test]
fn a_wrong_password_is_a_clear_error_and_nothing_is_evacuated() {
    let mut c = Cluster::new("f-auth", "1h");
    let bmc = IpmiBmc::start(USER, PASSWORD);
    c.register_ipmi("compute-1", &bmc, WRONG);
    c.start_daemon();
    c.kill_host("compute-1");
    assert_fence_refused(&c, "compute-1", &["authentication failed"]);
    assert!(
        bmc.power_is_on(),
        "a BMC that refused us powered off anyway"
    );
    assert!(
        !bmc.calls().iter().any(|l| l.starts_with("set power")),
        "{:?}",
        bmc.calls()
    );
}

#[test]
fn a_dead_bmc_is_a_clear_error_and_nothing_is_evacuated() {
    let mut c = Cluster::new("f-down", "1h");
    let mut bmc = IpmiBmc::start(USER, PASSWORD);
    c.register_ipmi("compute-1", &bmc, PASSWORD);
    bmc.stop();
    c.start_daemon();
    c.kill_host("compute-1");
    assert_fence_refused(&c, "compute-1", &["BMC unreachable"]);
}

#[test]
fn a_bmc_still_reading_on_after_power_off_is_not_fenced() {
    let mut c = Cluster::new("f-stubborn", "1h");
    let bmc = IpmiBmc::start(USER, PASSWORD);
    bmc.refuse_power_off(true);
    c.register_ipmi("compute-1", &bmc, PASSWORD);
    c.start_daemon();
    c.kill_host("compute-1");
    assert_fence_refused(&c, "compute-1", &["not confirmed off", "last read: on"]);
    // The off command was sent (and accepted), the chassis stayed on.
    assert!(
        bmc.calls().iter().any(|l| l == "set power 0"),
        "{:?}",
        bmc.calls()
    );
    assert!(bmc.power_is_on());
}

/// A Redfish BMC answering malformed JSON: a tiny HTTP server on a free
/// port, counting what it was asked.
struct BadRedfish {
    url: String,
    requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicUsize>,
}

impl BadRedfish {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        listener.set_nonblocking(true).unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicUsize::new(0));
        let (seen, halt) = (requests.clone(), stop.clone());
        std::thread::spawn(move || {
            while halt.load(Ordering::Relaxed) == 0 {
                let Ok((mut sock, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                sock.set_nonblocking(false).unwrap();
                sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).into_owned();
                let line = head.lines().next().unwrap_or("").to_owned();
                seen.lock().unwrap().push(line);
                // Every answer is cut short: never a parseable system.
                let body = r#"{"Members": [{"@odata.id": "/redfish/v1/Systems/a""#;
                let _ = write!(
                    sock,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Self {
            url,
            requests,
            stop,
        }
    }
}

impl Drop for BadRedfish {
    fn drop(&mut self) {
        self.stop.store(1, Ordering::Relaxed);
    }
}

#[test]
fn a_malformed_redfish_answer_is_not_a_fence() {
    let mut c = Cluster::new("f-redfish", "1h");
    let bmc = BadRedfish::start();
    c.register("compute-1", "redfish", &bmc.url, None, PASSWORD);
    c.start_daemon();
    c.kill_host("compute-1");
    assert_fence_refused(&c, "compute-1", &["bad BMC answer", "malformed JSON"]);
    let seen = bmc.requests.lock().unwrap().clone();
    assert!(!seen.is_empty(), "the daemon never asked the BMC");
    assert!(
        seen.iter().all(|l| l.starts_with("GET ")),
        "something was posted to a BMC we cannot read: {seen:?}"
    );
}

#[test]
fn the_health_check_finds_a_wrong_bmc_password_before_any_failure() {
    let mut c = Cluster::new("f-health", "1s");
    let good = IpmiBmc::start(USER, PASSWORD);
    let bad = IpmiBmc::start(USER, PASSWORD);
    c.register_ipmi("compute-1", &good, PASSWORD);
    c.register_ipmi("compute-2", &bad, WRONG);
    c.start_daemon();
    let s = c.wait(
        "a fence-path health report",
        Duration::from_secs(60),
        // Every node, including those whose keys the first cycle created.
        |s| {
            ["compute-1", "compute-2", "compute-3"]
                .iter()
                .all(|n| s["fence_health"]["nodes"][n].is_object())
        },
    );
    let h = &s["fence_health"];
    assert_eq!(h["version"], 1, "{h:#}");
    assert_eq!(h["nodes"]["compute-1"]["healthy"], true, "{h:#}");
    assert_eq!(h["nodes"]["compute-1"]["power"], "on", "{h:#}");
    assert_eq!(h["nodes"]["compute-1"]["driver"], "ipmi", "{h:#}");
    let bad_node = &h["nodes"]["compute-2"];
    assert_eq!(bad_node["healthy"], false, "{h:#}");
    let err = bad_node["error"].as_str().unwrap();
    assert!(err.contains("authentication failed"), "{err}");
    // compute-3 has no BMC settings: it could not be fenced either.
    assert_eq!(h["nodes"]["compute-3"]["healthy"], false, "{h:#}");
    // Nothing failed; nothing was powered.
    for n in ["compute-1", "compute-2", "compute-3"] {
        assert_eq!(s["compute_nodes"][n]["failed"], false, "{s:#}");
    }
    assert!(good.power_is_on() && bad.power_is_on());
    for b in [&good, &bad] {
        assert!(
            !b.calls().iter().any(|l| l.starts_with("set")),
            "the health check changed a power state: {:?}",
            b.calls()
        );
    }
    assert!(good.calls().iter().any(|l| l == "get power"));
    // The gauge, the log and the text status say the same.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = c.metrics();
        if m.contains("novaha_bmc_up{node=\"compute-2\"} 0")
            && m.contains("novaha_bmc_up{node=\"compute-1\"} 1")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "bmc gauges not set:\n{m}\n--- daemon log ---\n{}",
            c.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = c.log();
    assert!(log.contains("fence path unhealthy"), "{log}");
    assert!(
        !log.contains(PASSWORD) && !log.contains(WRONG),
        "a password in the log"
    );
    let text = c.status_text();
    assert!(
        text.contains("compute-2: fence path UNHEALTHY (ipmi)"),
        "{text}"
    );
    assert_eq!(c.evacuate_calls(), 0);
    // Rounds keep coming: the report is rewritten every interval.
    let first = h["checked_at"].as_str().unwrap().to_owned();
    c.wait("a later round", Duration::from_secs(20), |s| {
        s["fence_health"]["checked_at"]
            .as_str()
            .is_some_and(|t| t > first.as_str())
    });
}

/// `check-config --bmc` reads every node's power once through its own BMC
/// (never switching it): a good BMC passes with its power, a wrong password
/// is a problem naming the node, and the password is never printed.
#[test]
fn check_config_bmc_reads_every_power_once_and_names_the_broken_one() {
    let c = Cluster::new("f-check", "1h");
    let good = IpmiBmc::start(USER, PASSWORD);
    let bad = IpmiBmc::start(USER, PASSWORD);
    c.register_ipmi("compute-1", &good, PASSWORD);
    c.register_ipmi("compute-2", &bad, WRONG);
    let cfg = c.dir.path().join("admin.toml");
    let o = novaha(
        bin(),
        &["check-config", "--bmc", "-c", cfg.to_str().unwrap()],
    );
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    );
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert!(
        out.contains("bmc of compute-1: power on read through ipmi"),
        "{out}{err}"
    );
    assert!(err.contains("  - bmc.compute-2: ipmi: "), "{out}{err}");
    assert!(!err.contains("bmc.compute-1"), "{err}");
    assert!(!out.contains(PASSWORD) && !err.contains(PASSWORD) && !err.contains(WRONG));
    // Read only: nothing was switched.
    assert!(good.power_is_on() && bad.power_is_on());
    assert!(
        !good.calls().iter().any(|l| l.starts_with("set ")),
        "{:?}",
        good.calls()
    );
    // Without --bmc no BMC is asked.
    let before = good.calls().len();
    let o = novaha(bin(), &["check-config", "-c", cfg.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(good.calls().len(), before);
}

/// BMC credentials kept outside the operator-writable tree: from a
/// directory readable by the daemon alone (`[fence] credentials_dir`), or
/// from a K/V prefix of their own (`[fence] credentials_prefix`). They
/// replace `config/bmc/user|password` of the nodes they cover; a node they
/// do not cover keeps the tree's (the seed's keys keep working).
#[test]
fn bmc_credentials_from_a_private_directory_or_their_own_prefix_replace_the_tree() {
    use std::os::unix::fs::PermissionsExt;
    let c = Cluster::new("f-creds", "1h");
    let (b1, b2, b3) = (
        IpmiBmc::start(USER, PASSWORD),
        IpmiBmc::start(USER, PASSWORD),
        IpmiBmc::start(USER, PASSWORD),
    );
    // The tree holds a wrong password for compute-1 and compute-2, the
    // right one for compute-3.
    c.register_ipmi("compute-1", &b1, WRONG);
    c.register_ipmi("compute-2", &b2, WRONG);
    c.register_ipmi("compute-3", &b3, PASSWORD);
    let admin = c.dir.path().join("admin.toml");
    let with_fence_key = |name: &str, line: &str| {
        let text = std::fs::read_to_string(&admin).unwrap();
        let path = c.dir.path().join(name);
        std::fs::write(
            &path,
            text.replacen(
                "driver = \"ipmi\"\n",
                &format!("driver = \"ipmi\"\n{line}\n"),
                1,
            ),
        )
        .unwrap();
        path
    };
    let check = |cfg: &Path| {
        let o = novaha(
            bin(),
            &["check-config", "--bmc", "-c", cfg.to_str().unwrap()],
        );
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    // The directory: compute-1's password there (mode 0640), compute-2's
    // world-readable (refused, not used).
    let dir = c.dir.path().join("bmc");
    for (node, mode) in [("compute-1", 0o640), ("compute-2", 0o644)] {
        std::fs::create_dir_all(dir.join(node)).unwrap();
        let f = dir.join(node).join("password");
        std::fs::write(&f, format!("{PASSWORD}\n")).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let cfg = with_fence_key(
        "dir.toml",
        &format!("credentials_dir = \"{}\"", dir.display()),
    );
    let (code, out, err) = check(&cfg);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(out.contains("bmc of compute-1: power on"), "{out}{err}");
    assert!(out.contains("bmc of compute-3: power on"), "{out}{err}");
    assert!(
        err.contains("bmc.compute-2: ipmi: ") && err.contains("readable by every user"),
        "{out}{err}"
    );
    assert!(!err.contains(PASSWORD) && !out.contains(PASSWORD));
    // The prefix: compute-1 and compute-2 there.
    for node in ["compute-1", "compute-2"] {
        c.agent.kv_put(
            &format!("f-creds-secrets/{node}/password"),
            PASSWORD.as_bytes(),
        );
    }
    let cfg = with_fence_key("prefix.toml", "credentials_prefix = \"f-creds-secrets\"");
    let (code, out, err) = check(&cfg);
    assert_eq!(code, Some(0), "{out}{err}");
    for node in ["compute-1", "compute-2", "compute-3"] {
        assert!(
            out.contains(&format!("bmc of {node}: power on")),
            "{out}{err}"
        );
    }
    // Without either, the tree's wrong passwords fail as before.
    let (code, _, err) = check(&admin);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("bmc.compute-1") && err.contains("bmc.compute-2"),
        "{err}"
    );
    // Both at once is a config problem.
    let both = with_fence_key(
        "both.toml",
        &format!(
            "credentials_dir = \"{}\"\ncredentials_prefix = \"x\"",
            dir.display()
        ),
    );
    let (code, _, err) = check(&both);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("fence.credentials_prefix"), "{err}");
}
