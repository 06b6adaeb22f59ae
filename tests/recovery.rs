//! Recovery end to end: real `novaha run` processes against a real Consul
//! agent and the Keystone + Nova simulator, with the test-only fencer
//! (`[fence] driver = "noop"`, `allow_noop = true`, docs/configuration.md,
//! "`[fence]`").
//! Each test kills hosts in the sim (or the leader itself) and checks from
//! the outside what an operator would: `novaha status --json`, the K/V tree
//! (recovery record, incidents), the sim's call log (each server evacuated
//! exactly once) and where the instances are now.
//!
//! The sim runs in-process on the test's own tokio runtime rather than as
//! the `novaha-sim` binary: `env!("CARGO_BIN_EXE_novaha-sim")` only exists
//! for tests of the sim's own package, and the in-process handle gives the
//! call log, kills and faults without a control-API client. The daemons
//! reach it over HTTP like any cloud.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use novaha_sim::{FaultKind, FaultRule, Sim, SimConfig, SimHandle};
use novaha_testkit::consul::ConsulAgent;
use novaha_testkit::daemon::{
    Cli, Daemon, DaemonConfig, OpenStackAuth, http_get, listen_of, novaha, recovery_record,
};
use novaha_testkit::hosts::Hosts;
use serde_json::Value;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_novaha"))
}

/// What varies between the tests' daemon configs.
#[derive(Clone)]
struct Settings {
    threshold: u32,
    concurrency: usize,
    /// Extra `[monitor]` keys.
    monitor: String,
    /// Extra `[recovery]` keys.
    recovery: String,
    /// `[[notify]]` sections (none by default).
    notify: String,
    /// Extra `[evacuate]` keys (by default the sim's image-backed instances
    /// are declared on shared storage, so they move).
    evacuate: String,
    /// Run each sim host as a host (its own Consul agent and sshd stand-in,
    /// testkit::hosts) and watch the three signals (nova, consul, tcp);
    /// otherwise Nova alone.
    hosts: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            threshold: 1,
            concurrency: 8,
            monitor: String::new(),
            recovery: String::new(),
            notify: String::new(),
            evacuate: "shared_storage = true\n".to_owned(),
            hosts: false,
        }
    }
}

struct Cluster {
    dir: tempfile::TempDir,
    prefix: String,
    settings: Settings,
    daemons: Vec<Daemon>,
    /// The hosts' agents and sshd stand-ins (with `Settings::hosts`).
    hosts: Option<std::sync::Mutex<Hosts>>,
    agent: ConsulAgent,
    /// Dropped before the runtime it serves on.
    sim: Option<SimHandle>,
    rt: tokio::runtime::Runtime,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(sim) = self.sim.take() {
            self.rt.block_on(sim.shutdown());
        }
    }
}

impl Cluster {
    /// A Consul agent, a sim seeded with `sim`, the HA nodes registered,
    /// and `daemons` novaha processes (ids a, b, ...).
    fn start(prefix: &str, sim: SimConfig, settings: Settings, daemons: usize) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let ha_nodes = sim.ha_nodes;
        let host_names: Vec<String> = (1..=sim.hosts)
            .map(|i| format!("compute-{i}"))
            .chain((1..=ha_nodes).map(|i| format!("ha-{i}")))
            .collect();
        let handle = rt
            .block_on(Sim::start("127.0.0.1:0", sim))
            .expect("start the sim");
        let agent = ConsulAgent::start();
        let dir = tempfile::tempdir().unwrap();
        let mut settings = settings;
        let hosts = settings.hosts.then(|| {
            let names: Vec<&str> = host_names.iter().map(String::as_str).collect();
            // Each test its own addresses, so hosts of concurrent tests differ.
            let octet = 20 + (std::process::id() % 200) as u8;
            let h = Hosts::start(&agent, &names, octet);
            settings.monitor = h.monitor_toml() + &settings.monitor;
            std::sync::Mutex::new(h)
        });
        let mut c = Self {
            dir,
            prefix: prefix.to_owned(),
            settings,
            daemons: Vec::new(),
            hosts,
            agent,
            sim: Some(handle),
            rt,
        };
        c.config("admin");
        for i in 1..=ha_nodes {
            c.cli().run(&["ha-node", "register", &format!("ha-{i}")]);
        }
        for id in ["a", "b", "c"].into_iter().take(daemons) {
            let cfg = c.config(id);
            c.daemons
                .push(Daemon::spawn(bin(), &cfg, id, c.dir.path(), &[]));
        }
        c
    }

    fn sim(&self) -> &SimHandle {
        self.sim.as_ref().expect("sim running")
    }

    /// "The host died": its nova-compute stops heart-beating in the sim
    /// and, with `Settings::hosts`, its Consul agent and sshd stand-in die
    /// at the same moment.
    fn kill_host(&self, host: &str) {
        self.sim().kill(host).unwrap();
        if let Some(h) = &self.hosts {
            h.lock().unwrap().kill(host);
        }
    }

    /// The repaired host boots: nova-compute heartbeats again and its
    /// agent and sshd stand-in run.
    fn revive_host(&self, host: &str) {
        self.sim().revive(host).unwrap();
        if let Some(h) = &self.hosts {
            h.lock().unwrap().revive(&self.agent, host);
        }
    }

    /// Writes `<dir>/<id>.toml`.
    fn config(&self, id: &str) -> PathBuf {
        let creds = self.sim().credentials();
        let auth = OpenStackAuth {
            auth_url: creds.auth_url,
            username: creds.username,
            password: creds.password,
            project_name: creds.project_name,
        };
        let s = &self.settings;
        let stages = format!(
            r#"
[fence]
driver = "noop"
allow_noop = true

[evacuate]
concurrency = {concurrency}
poll_interval = "300ms"
timeout = "60s"
{evacuate}
[recovery]
backoff_initial = "500ms"
backoff_max = "2s"
{recovery}
{notify}"#,
            concurrency = s.concurrency,
            evacuate = s.evacuate,
            recovery = s.recovery,
            notify = s.notify,
        );
        DaemonConfig {
            interval: "500ms",
            monitor: format!("threshold = {}\n{}", s.threshold, s.monitor),
            extra: auth.section() + &stages,
            ..DaemonConfig::fast(&self.agent.http_addr(), &self.prefix, id)
        }
        .write(self.dir.path())
    }

    /// The CLI with the admin config (no daemon runs with it).
    fn cli(&self) -> Cli {
        Cli::new(bin(), &self.dir.path().join("admin.toml"))
    }

    fn logs(&self) -> String {
        self.daemons
            .iter()
            .map(|d| format!("--- {} ---\n{}", d.id, d.log()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn count_in_logs(&self, needle: &str) -> usize {
        self.daemons.iter().map(|d| d.count(needle)).sum()
    }

    /// `novaha status --json`.
    fn status(&self) -> Value {
        self.cli().status()
    }

    fn node(&self, node: &str) -> Value {
        self.status()["compute_nodes"][node].clone()
    }

    /// Polls the status until `check` holds; panics with every log if not.
    fn wait(&self, what: &str, timeout: Duration, check: impl Fn(&Value) -> bool) -> Value {
        self.cli().wait(what, timeout, check, || self.logs())
    }

    fn kv_json(&self, rel: &str) -> Option<Value> {
        self.agent
            .kv_get(&format!("{}/{rel}", self.prefix))
            .map(|raw| serde_json::from_slice(&raw).unwrap())
    }

    /// The node's live recovery record.
    fn record(&self, node: &str) -> Option<Value> {
        recovery_record(&self.agent, &self.prefix, node)
    }

    /// Evacuate calls per server id, from the sim's call log.
    fn evacuate_calls(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for c in self.sim().calls() {
            if c.method == "POST" && c.path.ends_with("/action") && c.body.get("evacuate").is_some()
            {
                let id = c
                    .path
                    .trim_end_matches("/action")
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .to_owned();
                *out.entry(id).or_default() += 1;
            }
        }
        out
    }

    fn server_ids_on(&self, host: &str) -> Vec<String> {
        let mut ids: Vec<String> = self
            .sim()
            .servers_on(host)
            .iter()
            .map(|s| s.id.to_string())
            .collect();
        ids.sort();
        ids
    }

    /// The `/metrics` answer of daemon `id` (its `[http] listen`).
    fn metrics(&self, id: &str) -> String {
        let cfg = self.dir.path().join(format!("{id}.toml"));
        http_get(&listen_of(&cfg), "/metrics")
    }

    /// Waits until some daemon holds the lock and finished a cycle.
    fn wait_leader(&self) -> String {
        let s = self.wait("a leader", Duration::from_secs(30), |s| {
            s["leader"]["id"].is_string()
        });
        let id = s["leader"]["id"].as_str().unwrap().to_owned();
        let d = self.daemons.iter().find(|d| d.id == id).unwrap();
        assert!(
            d.wait_log("leader cycle done", 1, Duration::from_secs(20)),
            "{}",
            self.logs()
        );
        id
    }
}

fn sim_config(hosts: usize, per_host: usize, ha: usize, evacuate_delay: Duration) -> SimConfig {
    SimConfig {
        hosts,
        instances_per_host: per_host,
        ha_nodes: ha,
        service_down_time: Duration::from_secs(1),
        evacuate_delay,
        ..SimConfig::default()
    }
}

fn phase(node: &Value) -> Option<&str> {
    node["phase"].as_str()
}

/// Checks a finished recovery from the outside: the record, its incident
/// copy, the sim's call log and where the instances are.
fn assert_recovered(c: &Cluster, node: &str, ha: &str, ids: &[String]) {
    let st = c.node(node);
    assert_eq!(st["failed"], true, "{st}");
    assert_eq!(st["recovered"], true, "{st}");
    assert_eq!(st["ha_node"], ha, "{st}");
    let rec = c.record(node).expect("the record stays until the reset");
    assert_eq!(rec["phase"], "done", "{rec:#}");
    assert_eq!(rec["fence"]["driver"], "noop", "{rec:#}");
    let mut recorded: Vec<String> = rec["instances"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    recorded.sort();
    assert_eq!(
        recorded, ids,
        "every instance listed at failure is in the record"
    );
    for (id, i) in rec["instances"].as_object().unwrap() {
        assert_eq!(i["state"], "done", "{id}: {i}");
        assert_eq!(i["target"], ha, "{id}: {i}");
    }
    for k in [
        "detected",
        "claimed",
        "fenced",
        "forced_down",
        "evacuating",
        "done",
    ] {
        assert!(
            rec["timeline"][k].is_string(),
            "timeline lacks {k}: {rec:#}"
        );
    }
    let incident = rec["incident"].as_str().unwrap();
    let copy = c
        .kv_json(&format!("compute_nodes/{node}/incidents/{incident}"))
        .expect("incident copy");
    assert_eq!(copy, rec, "the incident copy is the final record");
    // Every instance evacuated exactly once, and now on the HA node.
    let calls = c.evacuate_calls();
    for id in ids {
        assert_eq!(calls.get(id), Some(&1), "evacuate calls of {id}: {calls:?}");
    }
    assert!(c.server_ids_on(node).is_empty(), "left on {node}");
    let on_ha = c.sim().servers_on(ha);
    for id in ids {
        let s = on_ha
            .iter()
            .find(|s| &s.id.to_string() == id)
            .unwrap_or_else(|| panic!("{id} not on {ha}"));
        // 2.96 lands SHUTOFF; the runner starts what was ACTIVE.
        assert_eq!(s.status, "ACTIVE", "{id} on {ha}");
    }
    let ha_status = &c.status()["ha_nodes"][ha];
    assert_eq!(ha_status["in_use"], true, "{ha_status}");
    assert_eq!(ha_status["serving"], node, "{ha_status}");
    // The force-down came before the first evacuation and carries the epoch.
    let calls = c.sim().calls();
    let svc = c.sim().service(node).expect("service").0;
    let force = calls
        .iter()
        .position(|x| x.method == "PUT" && x.path.contains(&svc.uuid.to_string()))
        .expect("a force-down call");
    let first_evac = calls
        .iter()
        .position(|x| x.body.get("evacuate").is_some())
        .expect("an evacuate call");
    assert!(force < first_evac, "force-down after an evacuation");
    let reason = calls[force].body["disabled_reason"].as_str().unwrap_or("");
    assert!(
        reason.contains(rec["incident"].as_str().unwrap()) && reason.contains("epoch "),
        "the disabled reason names the incident and the epoch: {reason}"
    );
    assert!(
        reason.contains(&rec["epoch"].as_str().unwrap()[..8]) || reason.contains("epoch"),
        "{reason}"
    );
    assert!(svc.forced_down && svc.disabled, "{svc:?}");
}

#[test]
fn killed_host_is_fenced_forced_down_and_evacuated_exactly_once() {
    let c = Cluster::start(
        "r-happy",
        sim_config(3, 3, 1, Duration::from_millis(500)),
        Settings {
            notify: "[[notify]]\ndriver = \"log\"\n".to_owned(),
            hosts: true,
            ..Settings::default()
        },
        2,
    );
    let leader = c.wait_leader();
    let ids = c.server_ids_on("compute-1");
    assert_eq!(ids.len(), 3);
    c.wait("keys created", Duration::from_secs(10), |s| {
        s["compute_nodes"]["compute-1"]["failed"] == false
    });
    c.kill_host("compute-1");
    let t0 = Instant::now();
    c.wait("compute-1 recovered", Duration::from_secs(60), |s| {
        phase(&s["compute_nodes"]["compute-1"]) == Some("done")
    });
    eprintln!("kill -> done took {:?}", t0.elapsed());
    assert_recovered(&c, "compute-1", "ha-1", &ids);
    // Only the leader acted; the other nodes were left alone.
    assert_eq!(c.count_in_logs("node fenced"), 1, "{}", c.logs());
    let standby = c.daemons.iter().find(|d| d.id != leader).unwrap();
    assert_eq!(
        standby.count("recovery task started"),
        0,
        "{}",
        standby.log()
    );
    let m = c.metrics(&leader);
    for line in [
        "novaha_recoveries_total{result=\"done\"} 1",
        "novaha_evacuations_total{result=\"done\"} 3",
        "novaha_mass_failure_guard 0",
    ] {
        assert!(m.contains(line), "{line} not in:\n{m}");
    }
    assert!(m.contains("novaha_fence_total{"), "{m}");
    // The incident's one log-channel message, counted as the outbox
    // delivers it (in the background, maybe just after `done`).
    let sent = "novaha_notifications_total{driver=\"log\",result=\"sent\"} 1\n";
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut m = m;
    while !m.contains(sent) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        m = c.metrics(&leader);
    }
    assert!(m.contains(sent), "{sent} not in:\n{m}\n{}", c.logs());
    for n in ["compute-2", "compute-3"] {
        let st = c.node(n);
        assert_eq!(st["failed"], false, "{st}");
        assert!(st["phase"].is_null(), "{st}");
        assert_eq!(c.server_ids_on(n).len(), 3);
    }
    // Nothing more happens on later cycles.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(c.evacuate_calls().values().sum::<usize>(), 3);
    assert_eq!(c.count_in_logs("node fenced"), 1, "{}", c.logs());

    // The operator repairs the host and resets the flags.
    let incident = c.record("compute-1").unwrap()["incident"]
        .as_str()
        .unwrap()
        .to_owned();
    c.revive_host("compute-1");
    c.cli().run(&["node", "reset", "compute-1"]);
    let s = c.wait("reset applied", Duration::from_secs(20), |s| {
        let n = &s["compute_nodes"]["compute-1"];
        n["phase"].is_null() && s["ha_nodes"]["ha-1"]["in_use"] == false
    });
    let n = &s["compute_nodes"]["compute-1"];
    assert_eq!(n["failed"], false, "{n}");
    assert_eq!(n["recovered"], false, "{n}");
    assert_eq!(n["number_fails"], 0, "{n}");
    assert!(s["ha_nodes"]["ha-1"]["serving"].is_null(), "{s:#}");
    assert!(c.record("compute-1").is_none());
    assert!(
        c.kv_json(&format!("compute_nodes/compute-1/incidents/{incident}"))
            .is_some(),
        "the incident stays"
    );
    let (svc, _) = c.sim().service("compute-1").unwrap();
    assert!(!svc.forced_down && !svc.disabled, "{svc:?}");
    assert_eq!(c.count_in_logs("admin reset applied"), 1, "{}", c.logs());
    // Healthy again: no second recovery.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(c.node("compute-1")["failed"], false);
    assert_eq!(c.count_in_logs("node fenced"), 1, "{}", c.logs());
}

#[test]
fn kill_9_leader_mid_evacuation_the_other_finishes_exactly_once() {
    let c = Cluster::start(
        "r-kill9",
        sim_config(3, 4, 1, Duration::from_secs(5)),
        Settings {
            concurrency: 2,
            ..Settings::default()
        },
        2,
    );
    let leader = c.wait_leader();
    let ids = c.server_ids_on("compute-1");
    assert_eq!(ids.len(), 4);
    c.wait("keys created", Duration::from_secs(10), |s| {
        s["compute_nodes"]["compute-1"]["failed"] == false
    });
    c.sim().kill("compute-1").unwrap();
    // Mid-flight: at least one evacuate call sent (requested), none landed.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let requested = c.record("compute-1").is_some_and(|r| {
            r["instances"]
                .as_object()
                .is_some_and(|m| m.values().any(|i| i["state"] == "requested"))
        });
        if requested && !c.evacuate_calls().is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never mid-evacuation\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut c = c;
    let idx = c.daemons.iter().position(|d| d.id == leader).unwrap();
    c.daemons[idx].guard().signal("KILL");
    let killed_at = Instant::now();
    let rec = c.record("compute-1").unwrap();
    assert_eq!(rec["phase"], "evacuating", "{rec:#}");
    let old_epoch = rec["epoch"].as_str().unwrap().to_owned();
    c.wait(
        "compute-1 recovered by the survivor",
        Duration::from_secs(90),
        |s| phase(&s["compute_nodes"]["compute-1"]) == Some("done"),
    );
    eprintln!("kill -9 -> done took {:?}", killed_at.elapsed());
    assert_recovered(&c, "compute-1", "ha-1", &ids);
    let rec = c.record("compute-1").unwrap();
    assert_ne!(
        rec["epoch"],
        old_epoch.as_str(),
        "the survivor adopted the record"
    );
    assert!(rec["timeline"]["resumed"].is_string(), "{rec:#}");
    let survivor = c.daemons.iter().find(|d| d.id != leader).unwrap();
    assert!(
        survivor.count("recovery task started") >= 1,
        "{}",
        survivor.log()
    );
    assert_eq!(c.status()["leader"]["id"], survivor.id.as_str());
}

#[test]
fn two_hosts_fail_with_one_ha_node_exactly_one_claims_it() {
    let c = Cluster::start(
        "r-two",
        sim_config(5, 2, 1, Duration::from_millis(500)),
        Settings::default(),
        1,
    );
    c.wait_leader();
    c.wait("keys created", Duration::from_secs(10), |s| {
        s["compute_nodes"]["compute-2"]["failed"] == false
    });
    let before: BTreeMap<&str, Vec<String>> = ["compute-1", "compute-2"]
        .into_iter()
        .map(|n| (n, c.server_ids_on(n)))
        .collect();
    c.sim().kill("compute-1").unwrap();
    c.sim().kill("compute-2").unwrap();
    let s = c.wait("one recovery done", Duration::from_secs(60), |s| {
        ["compute-1", "compute-2"]
            .iter()
            .any(|n| phase(&s["compute_nodes"][*n]) == Some("done"))
    });
    let (won, lost) = if phase(&s["compute_nodes"]["compute-1"]) == Some("done") {
        ("compute-1", "compute-2")
    } else {
        ("compute-2", "compute-1")
    };
    assert_recovered(&c, won, "ha-1", &before[won]);
    // The policy is ha_node: the other waits (alerting), unclaimed.
    c.wait("the loser is failed", Duration::from_secs(10), |s| {
        s["compute_nodes"][lost]["failed"] == true
    });
    std::thread::sleep(Duration::from_secs(3));
    let st = c.node(lost);
    assert_eq!(st["failed"], true, "{st}");
    assert_eq!(st["recovered"], false, "{st}");
    assert!(st["phase"].is_null(), "{st}");
    assert_eq!(
        c.server_ids_on(lost),
        before[lost],
        "nothing of {lost} moved"
    );
    let calls = c.evacuate_calls();
    for id in &before[lost] {
        assert!(
            !calls.contains_key(id),
            "{id} of {lost} evacuated: {calls:?}"
        );
    }
    assert_eq!(c.count_in_logs("node fenced"), 1, "{}", c.logs());
    assert!(c.count_in_logs("no-free-ha-node") >= 1, "{}", c.logs());
    assert_eq!(c.status()["ha_nodes"]["ha-1"]["serving"], won);
}

#[test]
fn more_than_half_the_hosts_killed_fences_nothing() {
    let c = Cluster::start(
        "r-mass",
        sim_config(3, 2, 1, Duration::from_millis(500)),
        Settings::default(),
        1,
    );
    c.wait_leader();
    c.wait("keys created", Duration::from_secs(10), |s| {
        s["compute_nodes"]["compute-3"]["failed"] == false
    });
    c.sim().kill("compute-1").unwrap();
    c.sim().kill("compute-2").unwrap();
    // Counting goes on past the threshold, but nobody is judged failed.
    c.wait("counts past the threshold", Duration::from_secs(30), |s| {
        ["compute-1", "compute-2"]
            .iter()
            .all(|n| s["compute_nodes"][*n]["number_fails"].as_u64() >= Some(4))
    });
    let s = c.status();
    for n in ["compute-1", "compute-2"] {
        let st = &s["compute_nodes"][n];
        assert_eq!(st["failed"], false, "{st}");
        assert_eq!(st["recovered"], false, "{st}");
        assert!(st["phase"].is_null(), "{st}");
        assert_eq!(c.server_ids_on(n).len(), 2);
    }
    assert!(
        c.count_in_logs("mass-failure guard tripped") >= 1,
        "{}",
        c.logs()
    );
    assert_eq!(c.count_in_logs("node fenced"), 0, "{}", c.logs());
    let mutating: Vec<_> = c
        .sim()
        .calls()
        .into_iter()
        .filter(|x| x.path.contains("/os-services") || x.path.contains("/action"))
        .collect();
    assert!(mutating.is_empty(), "{mutating:?}");
    let cycle = c.kv_json("novaha/last_cycle").unwrap();
    assert_eq!(cycle["mass_failure"], true, "{cycle}");
    let m = c.metrics("a");
    assert!(m.contains("\nnovaha_mass_failure_guard 1\n"), "{m}");
    assert!(
        m.contains("\nnovaha_mass_failure_guard_trips_total 1\n"),
        "{m}"
    );
    assert!(!m.contains("novaha_fence_total{"), "{m}");
}

#[test]
fn nova_down_for_several_cycles_leaves_number_fails_unchanged() {
    let c = Cluster::start(
        "r-blind",
        sim_config(3, 1, 1, Duration::from_millis(500)),
        Settings {
            threshold: 100,
            ..Settings::default()
        },
        1,
    );
    c.wait_leader();
    c.wait("keys created", Duration::from_secs(10), |s| {
        s["compute_nodes"]["compute-1"]["failed"] == false
    });
    c.sim().kill("compute-1").unwrap();
    c.wait("compute-1 counting", Duration::from_secs(20), |s| {
        s["compute_nodes"]["compute-1"]["number_fails"].as_u64() >= Some(2)
    });
    c.sim().add_fault(FaultRule::new(
        "/os-services",
        FaultKind::Status { status: 503 },
    ));
    // Let any cycle that read Nova before the fault finish its write.
    std::thread::sleep(Duration::from_secs(1));
    let held = c.node("compute-1")["number_fails"].as_u64().unwrap();
    let daemon = &c.daemons[0];
    let seen = daemon.count("nova unreachable");
    assert!(
        daemon.wait_log("nova unreachable", seen + 5, Duration::from_secs(20)),
        "{}",
        daemon.log()
    );
    let st = c.node("compute-1");
    assert_eq!(st["number_fails"].as_u64(), Some(held), "{st}");
    assert_eq!(c.node("compute-2")["number_fails"], 0);
    let cycle = c.kv_json("novaha/last_cycle").unwrap();
    assert_eq!(cycle["nova_unreachable"], true, "{cycle}");
    // Nova back: counting resumes.
    c.sim().clear_faults();
    c.wait("counting resumes", Duration::from_secs(20), |s| {
        s["compute_nodes"]["compute-1"]["number_fails"].as_u64() > Some(held)
    });
}

#[test]
fn run_once_reports_no_failed_nodes_then_recovers_a_killed_host() {
    let c = Cluster::start(
        "r-once",
        sim_config(3, 2, 1, Duration::from_millis(300)),
        Settings::default(),
        0,
    );
    let cfg = c.config("once");
    let once = || {
        let o = novaha(bin(), &["run", "--once", "-c", cfg.to_str().unwrap()]);
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(
            o.status.success(),
            "{out}\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        out
    };
    let out = once();
    assert_eq!(out, "No failed nodes\n");
    let ids = c.server_ids_on("compute-1");
    c.sim().kill("compute-1").unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    // Each run is one cycle: the count passes the threshold, then the
    // recovery runs to its end inside one run.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut outputs = Vec::new();
    loop {
        let out = once();
        outputs.push(out.clone());
        if out.contains("compute-1: recovery done") {
            assert!(out.starts_with("Failed nodes: compute-1\n"), "{out}");
            break;
        }
        assert!(Instant::now() < deadline, "{outputs:#?}");
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_recovered(&c, "compute-1", "ha-1", &ids);
    // Done stays done: the next run reports the failed node, acts no more.
    let out = once();
    assert_eq!(out, "Failed nodes: compute-1\n", "{out}");
    assert_eq!(c.evacuate_calls().values().sum::<usize>(), ids.len());
}

#[test]
fn dry_run_prints_the_plan_and_changes_nothing() {
    let c = Cluster::start(
        "r-dry",
        sim_config(3, 3, 1, Duration::from_millis(300)),
        Settings {
            recovery: "mode = \"dry-run\"".to_owned(),
            ..Settings::default()
        },
        1,
    );
    c.wait_leader();
    let ids = c.server_ids_on("compute-1");
    c.sim().kill("compute-1").unwrap();
    let d = &c.daemons[0];
    assert!(
        d.wait_log("Dry-run plan for compute-1:", 1, Duration::from_secs(30)),
        "{}",
        d.log()
    );
    std::thread::sleep(Duration::from_secs(2));
    let log = d.log();
    assert_eq!(
        d.count("Dry-run plan for compute-1:"),
        1,
        "printed once: {log}"
    );
    assert!(log.contains("dry run: recovery plan"), "{log}");
    assert!(log.contains("1. fence: driver noop"), "{log}");
    assert!(log.contains("evacuate to HA node ha-1"), "{log}");
    for id in &ids {
        assert!(
            log.contains(&format!("{id} vm-")),
            "{id} in the plan: {log}"
        );
        assert!(log.contains("-> ha-1"), "{log}");
    }
    // No side effect: nothing written to the tree but the cycle record,
    // no mutating Nova call, nothing moved.
    let s = c.status();
    assert!(
        s["compute_nodes"].as_object().is_none_or(|m| m.is_empty()),
        "{s:#}"
    );
    assert_eq!(s["ha_nodes"]["ha-1"]["in_use"], false);
    let mutating: Vec<_> = c
        .sim()
        .calls()
        .into_iter()
        .filter(|x| !x.path.contains("/auth/tokens"))
        .collect();
    assert!(mutating.is_empty(), "{mutating:?}");
    assert_eq!(c.server_ids_on("compute-1"), ids);
    assert_eq!(d.count("node fenced"), 0);
}

/// The mutating Nova calls made after the first `since` calls of the log
/// (Keystone token requests left out): force-downs, enables, evacuations.
fn nova_calls_after(c: &Cluster, since: usize) -> Vec<novaha_sim::Call> {
    c.sim()
        .calls()
        .into_iter()
        .skip(since)
        .filter(|x| !x.path.contains("/auth/tokens"))
        .collect()
}

/// Kills compute-1, waits for its recovery, then resets it the way an
/// operator does while its nova-compute has not sent a heartbeat yet (the
/// sim keeps it killed: Nova reads it `down`, exactly like a restarted
/// service before its first report). Returns when the reset is applied.
fn recover_then_reset_while_down(c: &Cluster) {
    c.wait("keys created", Duration::from_secs(10), |s| {
        s["compute_nodes"]["compute-1"]["failed"] == false
    });
    c.sim().kill("compute-1").unwrap();
    c.wait("compute-1 recovered", Duration::from_secs(60), |s| {
        phase(&s["compute_nodes"]["compute-1"]) == Some("done")
    });
    assert_eq!(c.count_in_logs("node fenced"), 1, "{}", c.logs());
    c.cli().run(&["node", "reset", "compute-1"]);
    c.wait("reset applied", Duration::from_secs(20), |s| {
        s["compute_nodes"]["compute-1"]["phase"].is_null()
            && s["ha_nodes"]["ha-1"]["in_use"] == false
    });
    // The reset restored the service in Nova; its heartbeat is still dead.
    let (svc, state) = c.sim().service("compute-1").unwrap();
    assert!(!svc.forced_down && !svc.disabled, "{svc:?}");
    assert_eq!(state, "down");
}

/// The safety bug the real-OpenStack tests found: after the operator's
/// reset, the restarted nova-compute reads `down` until its first heartbeat
/// (up to Nova's service_down_time), and with threshold 1 novaha judged the
/// repaired node failed and fenced, forced down and evacuated it again.
/// Now it waits for Nova to report the node up once, then counts normally.
#[test]
fn a_reset_node_still_reading_down_is_not_fenced_again_until_nova_reports_it_up() {
    let c = Cluster::start(
        "r-reset-down",
        sim_config(3, 2, 1, Duration::from_millis(300)),
        Settings::default(),
        1,
    );
    c.wait_leader();
    recover_then_reset_while_down(&c);
    let awaiting_key = format!("{}/compute_nodes/compute-1/internal/awaiting_up", c.prefix);
    assert_eq!(c.agent.kv_get(&awaiting_key).as_deref(), Some(&b"True"[..]));
    let mark = c.sim().calls().len();
    // Eight cycles (500 ms, threshold 1) with the node reading down: before
    // the fix the second fence came within two.
    std::thread::sleep(Duration::from_secs(4));
    let (_, state) = c.sim().service("compute-1").unwrap();
    assert_eq!(state, "down", "the sim still reads it down");
    let st = c.node("compute-1");
    assert_eq!(st["failed"], false, "{st}\n{}", c.logs());
    assert_eq!(st["recovered"], false, "{st}");
    assert_eq!(st["number_fails"], 0, "{st}");
    assert!(st["phase"].is_null(), "{st}");
    let calls = nova_calls_after(&c, mark);
    assert!(
        calls.is_empty(),
        "no force-down, enable or evacuate may reach Nova: {calls:?}"
    );
    assert_eq!(c.count_in_logs("node fenced"), 1, "{}", c.logs());
    assert_eq!(c.count_in_logs("node judged failed"), 1, "{}", c.logs());
    for line in [
        "node reset: waiting for Nova to report it up before counting failures",
        "node reset: reads down, not counted; reset grace started",
    ] {
        assert_eq!(c.count_in_logs(line), 1, "{line}\n{}", c.logs());
    }
    let since_key = format!(
        "{}/compute_nodes/compute-1/internal/awaiting_up_since",
        c.prefix
    );
    assert!(c.agent.kv_get(&since_key).is_some(), "the grace started");

    // The first heartbeat: Nova reads it up, the wait ends.
    c.sim().revive("compute-1").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.agent.kv_get(&awaiting_key).as_deref() != Some(&b"False"[..]) {
        assert!(Instant::now() < deadline, "wait never ended\n{}", c.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(c.agent.kv_get(&since_key).is_none());
    assert_eq!(
        c.count_in_logs("node reset: Nova reports it up; counting failures again"),
        1,
        "{}",
        c.logs()
    );
    // Normal detection resumes: a real failure now is recovered again.
    c.sim().kill("compute-1").unwrap();
    c.wait("compute-1 recovered again", Duration::from_secs(60), |s| {
        let n = &s["compute_nodes"]["compute-1"];
        n["failed"] == true && phase(n) == Some("done")
    });
    assert_eq!(c.count_in_logs("node fenced"), 2, "{}", c.logs());
}

/// An operator who resets a node that is still dead gets it recovered once
/// `[recovery] reset_grace` has run out, not before.
#[test]
fn a_reset_node_that_never_comes_up_is_recovered_after_the_reset_grace() {
    let c = Cluster::start(
        "r-reset-grace",
        sim_config(3, 1, 1, Duration::from_millis(300)),
        Settings {
            recovery: "reset_grace = \"3s\"".to_owned(),
            ..Settings::default()
        },
        1,
    );
    c.wait_leader();
    recover_then_reset_while_down(&c);
    let reset_at = Instant::now();
    c.wait("judged failed again", Duration::from_secs(30), |s| {
        s["compute_nodes"]["compute-1"]["failed"] == true
    });
    let waited = reset_at.elapsed();
    assert!(
        waited >= Duration::from_millis(2500),
        "judged failed {waited:?} after the reset, within the 3 s grace\n{}",
        c.logs()
    );
    assert!(
        c.count_in_logs("never reported it up within the reset grace") >= 1,
        "{}",
        c.logs()
    );
    c.wait("compute-1 recovered again", Duration::from_secs(60), |s| {
        phase(&s["compute_nodes"]["compute-1"]) == Some("done")
    });
    assert_eq!(c.count_in_logs("node fenced"), 2, "{}", c.logs());
}

/// Storage classes end to end (docs/recovery.md, "Storage classes"): a failed
/// host declared shared in the K/V tree, with one boot-from-volume instance,
/// one image-backed (shared) and one whose metadata says its disk is local.
/// Under the default `local_storage = "skip"` the first two are evacuated
/// once each and the local one is `skipped` with its reason, never sent;
/// `novaha status` shows each class, and the owner's mail (a real SMTP
/// server) says which moved and that the local one needs a human.
#[test]
fn a_local_instance_is_skipped_with_its_reason_and_the_owner_is_told() {
    use novaha_sim::Flavor;
    use novaha_testkit::smtp::{SmtpOptions, SmtpServer};

    let smtp = SmtpServer::start(SmtpOptions::default());
    let notify = format!(
        "[[notify]]\ndriver = \"email\"\nsmtp_url = \"{}?tls=none\"\n\
         from = \"novaha@example.org\"\nadmins = [\"ops@example.org\"]\ntimeout = \"5s\"\n",
        smtp.url()
    );
    let c = Cluster::start(
        "r-storage",
        sim_config(2, 0, 1, Duration::from_millis(500)),
        Settings {
            notify,
            // Nothing shared by default: compute-1 declares it in the tree.
            evacuate: "shared_storage = false\n".to_owned(),
            ..Settings::default()
        },
        1,
    );
    c.agent.kv_put(
        &format!("{}/compute_nodes/compute-1/config/shared_storage", c.prefix),
        b"True",
    );
    let owner = c
        .sim()
        .users()
        .into_iter()
        .find(|u| u.name == "user-1")
        .unwrap();
    let project = owner.default_project_id.clone().unwrap();
    let add = |name: &str, bfv: bool, md: &[(&str, &str)]| {
        c.sim()
            .add_server_with(
                name,
                "compute-1",
                (&owner.id, &project),
                md.iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                Flavor::new("m1.small", 1, 1024, 10),
                bfv,
            )
            .unwrap()
            .to_string()
    };
    let vol = add("db-volume", true, &[]);
    let shared = add("web-shared", false, &[]);
    let local = add("cache-local", false, &[("novaha_storage", "local")]);
    c.wait_leader();
    c.wait("keys created", Duration::from_secs(10), |s| {
        s["compute_nodes"]["compute-1"]["failed"] == false
    });
    c.sim().kill("compute-1").unwrap();
    let s = c.wait("compute-1 recovered", Duration::from_secs(60), |s| {
        phase(&s["compute_nodes"]["compute-1"]) == Some("done")
    });

    let rec = c.record("compute-1").unwrap();
    let i = |id: &str| rec["instances"][id].clone();
    assert_eq!(i(&vol)["storage"], "volume", "{rec:#}");
    assert_eq!(i(&vol)["state"], "done", "{rec:#}");
    assert_eq!(i(&vol)["target"], "ha-1", "{rec:#}");
    assert_eq!(i(&shared)["storage"], "shared", "{rec:#}");
    assert_eq!(i(&shared)["state"], "done", "{rec:#}");
    assert_eq!(i(&local)["storage"], "local", "{rec:#}");
    assert_eq!(i(&local)["state"], "skipped", "{rec:#}");
    let why = i(&local)["error"].as_str().unwrap().to_owned();
    assert!(
        why.contains("local storage") && why.contains("needs a human"),
        "{why}"
    );
    // Sent exactly once each; the local one never.
    let calls = c.evacuate_calls();
    assert_eq!(calls.get(&vol), Some(&1), "{calls:?}");
    assert_eq!(calls.get(&shared), Some(&1), "{calls:?}");
    assert_eq!(calls.get(&local), None, "{calls:?}");
    assert_eq!(c.server_ids_on("compute-1"), vec![local.clone()]);
    // `novaha status` shows each instance's class.
    let st = &s["compute_nodes"]["compute-1"]["instances"];
    assert_eq!(st[&local]["storage"], "local", "{st:#}");
    assert_eq!(st[&vol]["storage"], "volume", "{st:#}");
    let text = String::from_utf8(c.cli().run(&["status"]).stdout).unwrap();
    assert!(
        text.contains(&format!(
            "instance cache-local ({local}): skipped, storage local"
        )),
        "{text}"
    );

    // The admin summary and the owner's message.
    let msgs = smtp.wait_for_messages(2, Duration::from_secs(30));
    let mine: Vec<_> = msgs
        .iter()
        .filter(|m| m.rcpt_tos.iter().any(|r| r == "user-1@example.org"))
        .collect();
    assert_eq!(mine.len(), 1, "{msgs:#?}");
    let body = mine[0].text.clone().unwrap_or_default();
    for needle in [
        "db-volume",
        "web-shared",
        "moved to ha-1",
        "Not moved (each needs a human):",
        &format!("cache-local ({local}): root disk on the failed host's local storage"),
        "needs a human",
    ] {
        assert!(
            body.contains(needle),
            "owner mail lacks {needle:?}:\n{body}"
        );
    }
    assert!(!body.contains("rebuilt from its image"), "{body}");
    assert!(
        mine[0].subject.contains("1 not moved"),
        "{}",
        mine[0].subject
    );
    let admin: Vec<_> = msgs
        .iter()
        .filter(|m| m.rcpt_tos.iter().any(|r| r == "ops@example.org"))
        .collect();
    assert_eq!(admin.len(), 1, "{msgs:#?}");
    assert!(
        admin[0].subject.contains("1 skipped"),
        "{}",
        admin[0].subject
    );
}

/// Capacity from Placement (docs/recovery.md, "Capacity"): the spare's
/// inventory fits 2 of the 3 instances (3 GB of its 8 GB memory reserved,
/// 2 GB each). The two of highest `novaha_priority` go to the spare; the
/// third goes through the scheduler under `ha_node_then_scheduler`, or waits
/// with an alert under `ha_node` (never sent, never ERROR) until the
/// operator frees room, then lands on the spare. One evacuation each.
fn capacity_case(prefix: &str, target: &str) -> (Cluster, [String; 3]) {
    use novaha_sim::{Flavor, Inventory};
    let c = Cluster::start(
        prefix,
        sim_config(2, 0, 1, Duration::from_millis(500)),
        Settings {
            evacuate: format!("target = \"{target}\"\n"),
            ..Settings::default()
        },
        1,
    );
    c.sim()
        .set_inventory(
            "ha-1",
            "MEMORY_MB",
            Inventory {
                total: 8192,
                reserved: 3072,
                allocation_ratio: 1.0,
                max_unit: 8192,
            },
        )
        .unwrap();
    let owner = c
        .sim()
        .users()
        .into_iter()
        .find(|u| u.name == "user-1")
        .unwrap();
    let project = owner.default_project_id.clone().unwrap();
    let add = |name: &str, prio: Option<&str>| {
        let md = prio
            .map(|p| ("novaha_priority".to_owned(), p.to_owned()))
            .into_iter()
            .collect();
        c.sim()
            .add_server_with(
                name,
                "compute-1",
                (&owner.id, &project),
                md,
                Flavor::new("m1.medium", 1, 2048, 10),
                true,
            )
            .unwrap()
            .to_string()
    };
    // Created low priority first, so the order is the priority's doing.
    let low = add("low", None);
    let mid = add("mid", Some("5"));
    let high = add("high", Some("10"));
    c.wait_leader();
    c.wait("keys created", Duration::from_secs(10), |s| {
        s["compute_nodes"]["compute-1"]["failed"] == false
    });
    c.sim().kill("compute-1").unwrap();
    (c, [high, mid, low])
}

#[test]
fn a_spare_that_fits_two_of_three_sends_the_third_through_the_scheduler() {
    let (c, [high, mid, low]) = capacity_case("r-cap-sched", "ha_node_then_scheduler");
    c.wait("compute-1 recovered", Duration::from_secs(60), |s| {
        phase(&s["compute_nodes"]["compute-1"]) == Some("done")
    });
    let rec = c.record("compute-1").unwrap();
    for id in [&high, &mid, &low] {
        assert_eq!(rec["instances"][id]["state"], "done", "{rec:#}");
    }
    let on_ha = c.server_ids_on("ha-1");
    assert!(on_ha.contains(&high) && on_ha.contains(&mid), "{on_ha:?}");
    assert_eq!(c.server_ids_on("compute-2"), vec![low.clone()]);
    assert_eq!(rec["instances"][&low]["via_scheduler"], true, "{rec:#}");
    assert_eq!(rec["instances"][&low]["target"], "compute-2", "{rec:#}");
    for s in c.sim().servers() {
        assert_eq!(s.status, "ACTIVE", "{s:?}");
    }
    let calls = c.evacuate_calls();
    for id in [&high, &mid, &low] {
        assert_eq!(calls.get(id), Some(&1), "{calls:?}");
    }
    // The third call named no host: the scheduler chose.
    let sched = c
        .sim()
        .calls()
        .into_iter()
        .find(|x| x.path.contains(&low) && x.body.get("evacuate").is_some())
        .unwrap();
    assert!(sched.body["evacuate"].get("host").is_none(), "{sched:?}");
}

#[test]
fn a_spare_that_fits_two_of_three_makes_the_third_wait_with_an_alert_under_ha_node() {
    let (c, [high, mid, low]) = capacity_case("r-cap-wait", "ha_node");
    let s = c.wait("two landed, one waiting", Duration::from_secs(60), |s| {
        let n = &s["compute_nodes"]["compute-1"];
        n["instances"][&high]["state"] == "done"
            && n["instances"][&mid]["state"] == "done"
            && n["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("no room on ha-1"))
    });
    let n = &s["compute_nodes"]["compute-1"];
    assert_eq!(n["phase"], "evacuating", "{n:#}");
    assert_eq!(n["instances"][&low]["state"], "pending", "{n:#}");
    let why = n["last_error"].as_str().unwrap();
    assert!(why.starts_with(&format!("{low}: no room on ha-1")), "{why}");
    assert!(
        c.daemons[0].wait_log("no-room-on-ha-node", 1, Duration::from_secs(10)),
        "{}",
        c.logs()
    );
    assert!(
        c.logs()
            .contains("recovery waiting: an operator may need to act"),
        "the wait alerts: {}",
        c.logs()
    );
    // Never sent, never ERROR: still on the dead host as it was.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(c.evacuate_calls().get(&low), None);
    let srv = c
        .sim()
        .servers()
        .into_iter()
        .find(|s| s.id.to_string() == low)
        .unwrap();
    assert_eq!(
        (srv.host.as_str(), srv.status.as_str()),
        ("compute-1", "ACTIVE")
    );

    // The operator frees room on the spare: the third lands there.
    c.sim()
        .set_inventory(
            "ha-1",
            "MEMORY_MB",
            novaha_sim::Inventory {
                total: 8192,
                reserved: 0,
                allocation_ratio: 1.0,
                max_unit: 8192,
            },
        )
        .unwrap();
    c.wait("compute-1 recovered", Duration::from_secs(60), |s| {
        phase(&s["compute_nodes"]["compute-1"]) == Some("done")
    });
    assert_eq!(c.server_ids_on("ha-1").len(), 3);
    let calls = c.evacuate_calls();
    for id in [&high, &mid, &low] {
        assert_eq!(calls.get(id), Some(&1), "{calls:?}");
    }
}

/// The failures-tolerated figure on a cloud worked out by hand
/// (docs/recovery.md, "Failures tolerated"), memory being the only tight class:
/// computes with 8 GB each, loaded 4, 2 and 0 GB; one spare with 6 GB.
/// `ha_node`: the largest host (4 GB) fits the spare, the next (2 GB) has no
/// spare left: 1. `ha_node_then_scheduler`: the second overflows 2 GB into
/// the survivors' free 8 GB (compute-3): 2; the third (empty) still carries
/// that overflow with nothing left free: 2.
#[test]
fn failures_tolerated_is_the_figure_worked_out_by_hand() {
    use novaha_sim::{Flavor, Inventory};
    for (target, want) in [("ha_node", 1), ("ha_node_then_scheduler", 2)] {
        let c = Cluster::start(
            &format!("r-tol-{want}"),
            sim_config(3, 0, 1, Duration::from_millis(500)),
            Settings {
                evacuate: format!(
                    "shared_storage = true\ntarget = \"{target}\"\ncapacity_interval = \"1s\"\n"
                ),
                ..Settings::default()
            },
            1,
        );
        let mem = |total| Inventory {
            total,
            reserved: 0,
            allocation_ratio: 1.0,
            max_unit: total,
        };
        for h in ["compute-1", "compute-2", "compute-3"] {
            c.sim().set_inventory(h, "MEMORY_MB", mem(8192)).unwrap();
        }
        c.sim()
            .set_inventory("ha-1", "MEMORY_MB", mem(6144))
            .unwrap();
        let owner = c
            .sim()
            .users()
            .into_iter()
            .find(|u| u.name == "user-1")
            .unwrap();
        let project = owner.default_project_id.clone().unwrap();
        for (i, host) in ["compute-1", "compute-1", "compute-2"].iter().enumerate() {
            c.sim()
                .add_server_with(
                    &format!("vm-{i}"),
                    host,
                    (&owner.id, &project),
                    BTreeMap::new(),
                    Flavor::new("m1.medium", 1, 2048, 10),
                    false,
                )
                .unwrap();
        }
        let leader = c.wait_leader();
        let line = format!("novaha_capacity_failures_tolerated{{zone=\"nova\"}} {want}\n");
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut m = c.metrics(&leader);
        while !m.contains(&line) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
            m = c.metrics(&leader);
        }
        assert!(
            m.contains(&line),
            "{target}: {line} not in:\n{m}\n{}",
            c.logs()
        );
        let s = c.status();
        assert_eq!(s["failures_tolerated"]["nova"], want, "{target}: {s:#}");
        let text = String::from_utf8(c.cli().run(&["status"]).stdout).unwrap();
        assert!(
            text.contains(&format!(
                "failures tolerated (largest hosts failing at once): nova={want}"
            )),
            "{text}"
        );
    }
}

/// Hosts as hosts at a Nova that reads a dead service `down` only after an
/// hour (`service_down_time`), heartbeats every second, with
/// `[monitor.nova] stale_after = "5s"` and the three signals: compute-1
/// dies as a host (nova-compute, Consul agent, sshd stand-in) and is fenced
/// and evacuated, detected by its stale heartbeat alone since Nova never
/// reads it down; compute-2's nova-compute alone dies and compute-3's
/// Consul agent alone: neither is ever counted, both are reported degraded
/// (status, metric) with what each signal reads.
#[test]
fn a_stale_heartbeat_recovers_a_dead_host_and_never_a_living_one() {
    let c = Cluster::start(
        "r-stale",
        SimConfig {
            service_down_time: Duration::from_secs(3600),
            report_interval: Duration::from_secs(1),
            ..sim_config(3, 2, 1, Duration::from_millis(500))
        },
        Settings {
            monitor: "[monitor.nova]\nstale_after = \"5s\"\n".to_owned(),
            hosts: true,
            ..Settings::default()
        },
        1,
    );
    let leader = c.wait_leader();
    let ids = c.server_ids_on("compute-1");
    c.wait("keys created", Duration::from_secs(10), |s| {
        ["compute-1", "compute-2", "compute-3"]
            .iter()
            .all(|n| s["compute_nodes"][*n]["failed"] == false)
    });
    c.sim().kill("compute-2").unwrap();
    c.hosts
        .as_ref()
        .unwrap()
        .lock()
        .unwrap()
        .kill_agent("compute-3");
    c.kill_host("compute-1");
    c.wait("compute-1 recovered", Duration::from_secs(60), |s| {
        phase(&s["compute_nodes"]["compute-1"]) == Some("done")
    });
    assert_recovered(&c, "compute-1", "ha-1", &ids);
    let s = c.wait("both living hosts degraded", Duration::from_secs(20), |s| {
        s["compute_nodes"]["compute-2"]["degraded"] == "nova=stale consul=healthy tcp=healthy"
            && s["compute_nodes"]["compute-3"]["degraded"] == "nova=up consul=failed"
    });
    for n in ["compute-2", "compute-3"] {
        let st = &s["compute_nodes"][n];
        assert_eq!(
            (&st["failed"], &st["number_fails"]),
            (&Value::Bool(false), &Value::from(0)),
            "{st}"
        );
        assert_eq!(c.server_ids_on(n).len(), 2, "{n}'s servers stayed");
    }
    // Nova still reads every killed nova-compute up (service_down_time is
    // an hour): compute-1 was detected by its heartbeat's age alone.
    assert_eq!(c.sim().service("compute-2").unwrap().1, "up");
    let m = c.metrics(&leader);
    for line in [
        "novaha_node_degraded{node=\"compute-2\"} 1",
        "novaha_node_degraded{node=\"compute-3\"} 1",
        "novaha_recoveries_total{result=\"done\"} 1",
    ] {
        assert!(m.contains(line), "{line} not in:\n{m}");
    }
    assert_eq!(c.count_in_logs("node fenced"), 1, "{}", c.logs());
    // Each degradation logged once, not every cycle (a dying host may
    // be degraded for a moment too: its agent goes quiet before its
    // heartbeat is stale).
    std::thread::sleep(Duration::from_secs(2));
    let logs = c.logs();
    for n in ["compute-2", "compute-3"] {
        let lines = logs
            .lines()
            .filter(|l| l.contains("node degraded") && l.contains(&format!("node={n}")))
            .count();
        assert_eq!(lines, 1, "{n}:\n{logs}");
    }
}
