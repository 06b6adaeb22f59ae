//! The real-peer fault run ("nemesis"): beside the in-process deterministic
//! fault simulator (crates/chaos), the same safety rules checked against
//! real processes: a real 3-server Consul cluster on loopback, the Keystone
//! and Nova simulator, one `ipmi_sim` BMC per compute host (real IPMI
//! fencing through the real `ipmitool`) and two `novaha run` daemons, each
//! talking to a different Consul server.
//!
//! A seeded nemesis (`NOVAHA_NEMESIS_SEED`, default [`DEFAULT_SEED`]; the
//! seed is printed) runs a few rounds; each round does one of: kill -9 the
//! leading daemon (then start it again), SIGSTOP it for a few seconds (then
//! SIGCONT), kill the Consul raft leader (then restart it), make Nova answer
//! 5xx for a while, kill a compute host in the sim (its BMC keeps reading
//! "on" until it is fenced), or power the BMC of a fenced and recovered host
//! back on (a BMC's power-restore policy).
//!
//! Then, after every killed host is recovered, from the outside only:
//! 1. the K/V tree (Consul's HTTP API): every killed host is `failed=True`,
//!    `recovered=True`, its recovery record (or an incident) is `done` with
//!    every instance done/error/skipped; no HA node serves two failed nodes;
//!    no live host is failed;
//! 2. the sim's call log and migrations: no server evacuated twice by an
//!    accepted call, nothing evacuated off a live host;
//! 3. the BMCs' event logs (timestamped by the ipmi_sim hook): every
//!    evacuate call for a host came while that host's BMC had last been
//!    powered off; no live host's BMC was ever powered off.
//!
//! docs/testing.md describes the run and how long it takes.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use novaha_sim::{FaultKind, FaultRule, SimConfig, SimHandle};
use novaha_testkit::cloud::SimCloud;
use novaha_testkit::consul_cluster::ConsulCluster;
use novaha_testkit::daemon::{Cli, Daemon, DaemonConfig};
use novaha_testkit::ipmi::{IpmiBmc, ipmitool};
use serde_json::Value;

/// The seed when `NOVAHA_NEMESIS_SEED` is not set.
const DEFAULT_SEED: u64 = 20_261_206;
/// Nemesis rounds per run.
const ROUNDS: usize = 8;
/// Compute hosts in the sim (`compute-1..N`), each with its own BMC.
const HOSTS: usize = 4;
/// Spare hosts (`ha-1..K`): at most this many hosts are killed, so every
/// failed host can have a spare of its own.
const HA_NODES: usize = 3;
const PREFIX: &str = "nemesis";
const USER: &str = "nemesis";
const PASSWORD: &str = "pw-Nemesis-Bmc-1";
/// The two daemons' `[election] id`s; daemon `i` talks to Consul server `i`.
const IDS: [&str; 2] = ["a", "b"];

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_novaha"))
}

/// splitmix64: a small seeded generator, so a seed replays the same rounds.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Uniform in `[lo_ms, hi_ms]`.
    fn millis(&mut self, lo_ms: u64, hi_ms: u64) -> Duration {
        Duration::from_millis(lo_ms + self.next() % (hi_ms - lo_ms + 1))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    KillLeader,
    PauseLeader,
    KillConsulLeader,
    NovaFault,
    KillHost,
    RestoreBmc,
}

const ACTIONS: [Action; 6] = [
    Action::KillLeader,
    Action::PauseLeader,
    Action::KillConsulLeader,
    Action::NovaFault,
    Action::KillHost,
    Action::RestoreBmc,
];

/// Everything the run started; all of it stopped when dropped (daemons
/// first, the sim before the runtime it serves on; the cluster and BMCs by
/// their own guards).
struct World {
    dir: tempfile::TempDir,
    consul: ConsulCluster,
    bmcs: BTreeMap<String, IpmiBmc>,
    daemons: BTreeMap<&'static str, Daemon>,
    /// How many daemon processes were started (each logs in its own dir).
    spawned: usize,
    cloud: SimCloud,
}

impl Drop for World {
    fn drop(&mut self) {
        // The daemons first, then the cloud they talk to.
        self.daemons.clear();
    }
}

impl World {
    fn start() -> Self {
        let cloud = SimCloud::start_with(SimConfig {
            hosts: HOSTS,
            instances_per_host: 2,
            ha_nodes: HA_NODES,
            service_down_time: Duration::from_secs(1),
            evacuate_delay: Duration::from_millis(300),
            ..SimConfig::default()
        });
        let consul = ConsulCluster::start(3);
        let bmcs = (1..=HOSTS)
            .map(|i| (format!("compute-{i}"), IpmiBmc::start(USER, PASSWORD)))
            .collect();
        let w = Self {
            dir: tempfile::tempdir().unwrap(),
            consul,
            bmcs,
            daemons: BTreeMap::new(),
            spawned: 0,
            cloud,
        };
        for (i, id) in IDS.iter().enumerate() {
            w.config(id, i);
        }
        // The operator's CLI talks to the third server.
        w.config("admin", 2);
        for i in 1..=HA_NODES {
            w.cli().run(&["ha-node", "register", &format!("ha-{i}")]);
        }
        let pwfile = w.dir.path().join("bmc.password");
        std::fs::write(&pwfile, format!("{PASSWORD}\n")).unwrap();
        for (node, bmc) in &w.bmcs {
            let port = bmc.port().to_string();
            w.cli().run(&[
                "node",
                "register",
                node,
                "--bmc-driver",
                "ipmi",
                "--bmc-ip",
                "127.0.0.1",
                "--bmc-port",
                &port,
                "--bmc-user",
                USER,
                "--bmc-password-file",
                pwfile.to_str().unwrap(),
            ]);
        }
        w
    }

    fn sim(&self) -> &SimHandle {
        self.cloud.sim()
    }

    /// Writes `<dir>/<id>.toml` for a daemon talking to Consul server `server`.
    fn config(&self, id: &str, server: usize) -> PathBuf {
        let stages = format!(
            r#"
[fence]
driver = "ipmi"
confirm_timeout = "3s"
poll_interval = "250ms"
health_interval = "5s"

[fence.ipmi]
ipmitool = "{ipmitool}"
session_timeout = "1s"
retries = 1
command_timeout = "10s"

[evacuate]
poll_interval = "300ms"
timeout = "60s"
# The sim's instances are image-backed: declared shared so they move.
shared_storage = true

[recovery]
backoff_initial = "500ms"
backoff_max = "2s"
"#,
            ipmitool = ipmitool().display(),
        );
        DaemonConfig {
            interval: "1s",
            monitor: "threshold = 1\n".to_owned(),
            extra: self.cloud.admin() + &stages,
            ..DaemonConfig::fast(&self.consul.http_addr(server), PREFIX, id)
        }
        .write(self.dir.path())
    }

    fn cli(&self) -> Cli {
        Cli::new(bin(), &self.dir.path().join("admin.toml"))
    }

    /// Starts (or restarts) daemon `id`, logging in a fresh `run-N/` dir so
    /// that an earlier incarnation's log survives for the failure message.
    fn spawn(&mut self, id: &'static str) {
        self.spawned += 1;
        let logs = self.dir.path().join(format!("run-{}", self.spawned));
        std::fs::create_dir(&logs).unwrap();
        let cfg = self.dir.path().join(format!("{id}.toml"));
        let d = Daemon::spawn(bin(), &cfg, id, &logs, &[]);
        self.daemons.insert(id, d);
    }

    /// The tail of every daemon log so far, for failure messages.
    fn logs(&self) -> String {
        let mut out = String::new();
        for n in 1..=self.spawned {
            let run = self.dir.path().join(format!("run-{n}"));
            for entry in std::fs::read_dir(&run).into_iter().flatten().flatten() {
                let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = lines[lines.len().saturating_sub(80)..].join("\n");
                out += &format!(
                    "--- run-{n}/{} ---\n{tail}\n",
                    entry.file_name().to_string_lossy()
                );
            }
        }
        out
    }

    /// GET on the first Consul server that answers with something other
    /// than a 5xx (killed servers refuse the connection), retried for 15 s.
    fn consul_get(&self, path: &str) -> (u16, Vec<u8>) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            for i in 0..self.consul.len() {
                if let Ok((s, body)) = self.consul.http(i, "GET", path, b"")
                    && s < 500
                {
                    return (s, body);
                }
            }
            assert!(
                Instant::now() < deadline,
                "no consul server answers GET {path}\n{}",
                self.consul.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The raw value of `<prefix>/<key>`, if present.
    fn kv(&self, key: &str) -> Option<String> {
        match self.consul_get(&format!("/v1/kv/{PREFIX}/{key}?raw")) {
            (200, body) => Some(String::from_utf8(body).expect("a UTF-8 value")),
            (404, _) => None,
            (s, body) => panic!(
                "consul GET {key}: HTTP {s}: {}",
                String::from_utf8_lossy(&body)
            ),
        }
    }

    fn kv_json(&self, key: &str) -> Option<Value> {
        self.kv(key)
            .map(|v| serde_json::from_str(&v).unwrap_or_else(|e| panic!("{key}: {e}: {v}")))
    }

    /// The keys under `<prefix>/<dir>/`.
    fn kv_keys(&self, dir: &str) -> Vec<String> {
        match self.consul_get(&format!("/v1/kv/{PREFIX}/{dir}/?keys")) {
            (200, body) => serde_json::from_slice(&body).expect("a key list"),
            _ => Vec::new(),
        }
    }

    /// The election id holding the leader lock now, if any: the lock key
    /// has a session and its value names the holder.
    fn leader(&self) -> Option<&'static str> {
        let (status, body) = self.consul_get(&format!("/v1/kv/{PREFIX}/leader"));
        if status != 200 {
            return None;
        }
        let entries: Vec<Value> = serde_json::from_slice(&body).ok()?;
        entries.first()?.get("Session")?.as_str()?;
        let holder = self.kv_json("leader")?;
        let id = holder["id"].as_str()?;
        IDS.into_iter().find(|i| *i == id)
    }

    /// Waits up to `timeout` for a leader.
    fn wait_leader(&self, timeout: Duration) -> Option<&'static str> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.leader() {
                return Some(l);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The node's finished recovery: the live record if `done`, else the
    /// newest `done` incident.
    fn done_record(&self, node: &str) -> Option<Value> {
        if let Some(rec) = self.kv_json(&format!("compute_nodes/{node}/internal/recovery"))
            && rec["phase"] == "done"
        {
            return Some(rec);
        }
        self.kv_keys(&format!("compute_nodes/{node}/incidents"))
            .iter()
            .filter_map(|k| {
                let key = k.strip_prefix(&format!("{PREFIX}/"))?;
                self.kv_json(key)
            })
            .rfind(|r| r["phase"] == "done")
    }
}

/// The id in `/compute/v2.1/servers/<id>/action`.
fn server_of(path: &str) -> Option<String> {
    let mut parts = path.split('/');
    parts.find(|p| *p == "servers")?;
    parts.next().map(str::to_owned)
}

#[test]
fn a_seeded_nemesis_against_real_peers_breaks_no_safety_rule() {
    let seed: u64 = std::env::var("NOVAHA_NEMESIS_SEED")
        .ok()
        .map(|s| s.parse().expect("NOVAHA_NEMESIS_SEED is a u64"))
        .unwrap_or(DEFAULT_SEED);
    println!("nemesis seed: {seed} (replay with NOVAHA_NEMESIS_SEED={seed})");
    let started = Instant::now();
    let mut rng = Rng(seed);
    let mut w = World::start();

    // Where every server starts: an evacuate call is charged to this host.
    let mut origin: BTreeMap<String, String> = BTreeMap::new();
    for node in w.bmcs.keys() {
        for s in w.sim().servers_on(node) {
            origin.insert(s.id.to_string(), node.clone());
        }
    }
    assert_eq!(origin.len(), HOSTS * 2, "the sim's seeded servers");

    for id in IDS {
        w.spawn(id);
    }
    assert!(
        w.wait_leader(Duration::from_secs(30)).is_some(),
        "no leader\n{}",
        w.logs()
    );
    let ready = Instant::now() + Duration::from_secs(30);
    while w.kv("compute_nodes/compute-4/status/failed").as_deref() != Some("False") {
        assert!(Instant::now() < ready, "keys not created\n{}", w.logs());
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("nemesis: world up after {:?}", started.elapsed());

    let mut killed: Vec<String> = Vec::new();
    let mut restored: BTreeSet<String> = BTreeSet::new();
    for round in 0..ROUNDS {
        let mut action = ACTIONS[rng.below(ACTIONS.len())];
        let restorable: Vec<String> = killed
            .iter()
            .filter(|h| !restored.contains(*h) && w.done_record(h).is_some())
            .cloned()
            .collect();
        if action == Action::RestoreBmc && restorable.is_empty() {
            action = Action::KillHost;
        }
        if action == Action::KillHost && killed.len() >= HA_NODES {
            action = Action::KillLeader;
        }
        let t = Instant::now();
        let at = started.elapsed();
        // A fault round may first kill a host (always the first round), so
        // that the fault meets its recovery in flight: detection, fence or
        // evacuation, depending on the head start.
        let mut what = String::new();
        let fault = !matches!(action, Action::KillHost | Action::RestoreBmc);
        if fault && killed.len() < HA_NODES && (round == 0 || rng.below(5) < 2) {
            let alive: Vec<&String> = w.bmcs.keys().filter(|h| !killed.contains(h)).collect();
            let host = alive[rng.below(alive.len())].clone();
            w.sim().kill(&host).unwrap();
            killed.push(host.clone());
            let head = rng.millis(0, 3_000);
            std::thread::sleep(head);
            what = format!("kill host {host}, {head:?} later: ");
        }
        what += &match action {
            Action::KillLeader | Action::PauseLeader => {
                match w.wait_leader(Duration::from_secs(20)) {
                    None => "no leader to hit".to_owned(),
                    Some(id) if action == Action::KillLeader => {
                        let mut d = w.daemons.remove(id).unwrap();
                        d.guard().kill();
                        drop(d);
                        let pause = rng.millis(1_000, 4_000);
                        std::thread::sleep(pause);
                        w.spawn(id);
                        format!("kill -9 leader {id}, restarted after {pause:?}")
                    }
                    Some(id) => {
                        let pause = rng.millis(3_000, 6_000);
                        let d = w.daemons.get_mut(id).unwrap();
                        d.guard().signal("STOP");
                        std::thread::sleep(pause);
                        d.guard().signal("CONT");
                        format!("SIGSTOP leader {id} for {pause:?}")
                    }
                }
            }
            Action::KillConsulLeader => {
                let l = w.consul.raft_leader();
                w.consul.kill(l);
                let pause = rng.millis(2_000, 5_000);
                std::thread::sleep(pause);
                w.consul.restart(l);
                format!("kill consul server {l} (raft leader), restarted after {pause:?}")
            }
            Action::NovaFault => {
                let status = [500, 502, 503][rng.below(3)];
                let rate = [0.5, 1.0][rng.below(2)];
                let pause = rng.millis(2_000, 6_000);
                w.sim().add_fault(
                    FaultRule::new("/compute/", FaultKind::Status { status }).rate(rate),
                );
                std::thread::sleep(pause);
                w.sim().clear_faults();
                format!("nova answers {status} (rate {rate}) for {pause:?}")
            }
            Action::KillHost => {
                let alive: Vec<&String> = w.bmcs.keys().filter(|h| !killed.contains(h)).collect();
                let host = alive[rng.below(alive.len())].clone();
                w.sim().kill(&host).unwrap();
                killed.push(host.clone());
                std::thread::sleep(rng.millis(1_000, 3_000));
                format!("kill host {host}")
            }
            Action::RestoreBmc => {
                let host = restorable[rng.below(restorable.len())].clone();
                w.bmcs[&host].set_power(true);
                restored.insert(host.clone());
                std::thread::sleep(Duration::from_secs(1));
                format!("power {host}'s BMC back on")
            }
        };
        println!(
            "nemesis round {round} at {at:?}: {what} ({:?})",
            t.elapsed()
        );
        std::thread::sleep(rng.millis(500, 1_500));
    }
    println!(
        "nemesis: rounds done after {:?}; killed {killed:?}",
        started.elapsed()
    );

    // Every killed host recovered, within a bound.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut records: BTreeMap<String, Value> = BTreeMap::new();
    for host in &killed {
        loop {
            if let Some(rec) = w.done_record(host) {
                records.insert(host.clone(), rec);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{host} not recovered within 120 s (seed {seed})\nrecord: {:#}\n{}",
                w.kv_json(&format!("compute_nodes/{host}/internal/recovery"))
                    .unwrap_or(Value::Null),
                w.logs()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    println!("nemesis: all recovered after {:?}", started.elapsed());
    for (host, rec) in &records {
        println!("nemesis: {host} timeline {}", rec["timeline"]);
    }
    let ctx = || format!("seed {seed}, killed {killed:?}\n{}", w.logs());

    // (1) The K/V tree.
    let mut served: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for host in w.bmcs.keys() {
        let failed = w.kv(&format!("compute_nodes/{host}/status/failed"));
        let recovered = w.kv(&format!("compute_nodes/{host}/status/recovered"));
        if killed.contains(host) {
            assert_eq!(failed.as_deref(), Some("True"), "{host} failed; {}", ctx());
            assert_eq!(
                recovered.as_deref(),
                Some("True"),
                "{host} recovered; {}",
                ctx()
            );
            let rec = &records[host];
            let ha = rec["ha_node"].as_str().unwrap_or_default().to_owned();
            assert!(ha.starts_with("ha-"), "{host}: spare {ha:?}: {rec:#}");
            served.entry(ha).or_default().insert(host.clone());
            let instances = rec["instances"].as_object().expect("instances");
            let mine: BTreeSet<&String> = origin
                .iter()
                .filter(|(_, h)| *h == host)
                .map(|(id, _)| id)
                .collect();
            let listed: BTreeSet<&String> = instances.keys().collect();
            assert_eq!(listed, mine, "{host}: the record's instances: {rec:#}");
            for (id, inst) in instances {
                let state = inst["state"].as_str().unwrap_or_default();
                assert!(
                    ["done", "error", "skipped"].contains(&state),
                    "{host}: instance {id} is {state:?}: {rec:#}"
                );
                if let Some(target) = inst["target"].as_str() {
                    served
                        .entry(target.to_owned())
                        .or_default()
                        .insert(host.clone());
                }
            }
        } else {
            // Faults on Consul, Nova and the daemons never make a live
            // host failed.
            assert_eq!(failed.as_deref(), Some("False"), "live {host}; {}", ctx());
            assert_ne!(recovered.as_deref(), Some("True"), "live {host}; {}", ctx());
        }
    }
    for (ha, nodes) in &served {
        assert_eq!(nodes.len(), 1, "{ha} serves {nodes:?}; {}", ctx());
        if let Some(serving) = w.kv(&format!("ha_nodes/{ha}/status/serving"))
            && !serving.is_empty()
        {
            assert!(
                nodes.contains(&serving),
                "{ha} serving {serving}: {nodes:?}"
            );
        }
    }

    // (2) The sim: each server evacuated at most once by an accepted call
    // (an accepted call makes a migration record), and only off a killed
    // host; every instance of a done recovery has left its host.
    let mut accepted: BTreeMap<(String, String), usize> = BTreeMap::new();
    for m in w.sim().migrations() {
        *accepted
            .entry((m.instance_uuid.to_string(), m.source_compute.clone()))
            .or_default() += 1;
    }
    for ((server, source), n) in &accepted {
        assert_eq!(
            *n,
            1,
            "{server} evacuated {n} times off {source}; {}",
            ctx()
        );
        assert!(killed.contains(source), "evacuated off live {source}");
    }
    for (host, rec) in &records {
        for (id, inst) in rec["instances"].as_object().unwrap() {
            if inst["state"] == "done" {
                let s = w.sim().server(&id.parse().unwrap()).expect("server");
                assert_ne!(&s.host, host, "{id} is done yet still on {host}");
                assert_eq!(
                    accepted.get(&(id.clone(), host.clone())),
                    Some(&1),
                    "{id} is done without one evacuation"
                );
            }
        }
    }

    // (3) Every evacuate call (accepted or refused) for a host came while
    // that host's BMC had last been set off; no live host's BMC was ever
    // powered off.
    let events: BTreeMap<&String, _> = w.bmcs.iter().map(|(h, b)| (h, b.power_events())).collect();
    let mut evacuate_calls = 0;
    for call in w.sim().calls() {
        if call.method != "POST" || call.body.get("evacuate").is_none() {
            continue;
        }
        evacuate_calls += 1;
        let server = server_of(&call.path).expect("a server action path");
        let host = origin
            .get(&server)
            .unwrap_or_else(|| panic!("evacuate of {server}, not a seeded server"));
        assert!(killed.contains(host), "evacuate off live {host}; {}", ctx());
        let at = SystemTime::from(call.time);
        let last = events[host]
            .iter()
            .filter(|e| e.at < at)
            .filter_map(|e| e.sets_power())
            .next_back();
        assert_eq!(
            last,
            Some(false),
            "evacuate of {server} off {host} at {:?} while its BMC's last power set was {last:?}: {:?}; {}",
            call.time,
            events[host],
            ctx()
        );
    }
    for (host, evs) in &events {
        if !killed.contains(*host) {
            assert!(
                evs.iter().all(|e| e.sets_power() != Some(false)),
                "live {host}'s BMC powered off: {evs:?}"
            );
        }
    }
    assert!(evacuate_calls >= 2, "the killed hosts were evacuated");
    println!(
        "nemesis: seed {seed}, {} hosts killed, {evacuate_calls} evacuate calls, {} accepted, all checks passed after {:?}",
        killed.len(),
        accepted.len(),
        started.elapsed()
    );
}
