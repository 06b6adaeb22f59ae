//! A real 3-server Consul cluster (1.8.7 from `scripts/deps/consul.sh`) on
//! free loopback ports, for fault tests: kill, freeze (SIGSTOP) and restart
//! single servers and watch what novaha does. Every server has its own data
//! dir in one temp dir; all are killed when the cluster is dropped (also
//! when the test panics, also while frozen: SIGKILL ends a stopped process).
//!
//! ```no_run
//! let mut c = novaha_testkit::consul_cluster::ConsulCluster::start(3);
//! let leader = c.raft_leader();          // index of the raft leader
//! let other = (leader + 1) % 3;
//! let addr = c.http_addr(other);         // "http://127.0.0.1:PORT"
//! c.kill(leader);                        // SIGKILL; c.restart(leader) later
//! ```
//!
//! Timings: `raft_multiplier = 1` (elections in about a second instead of
//! five) and `rpc_hold_timeout = "2s"`: a request that needs the raft leader
//! while there is none gets Consul's "No cluster leader" (HTTP 500) after
//! 2 s instead of 7 s, so a client with a 5 s timeout sees a definite
//! refusal rather than an unknown outcome.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::consul::{ConsulPorts, consul_bin, raw_http, read_tail};
use crate::process::{ChildGuard, wait_until};

/// How many times start-up is retried with fresh ports after a clash.
const START_ATTEMPTS: usize = 3;
/// How long the cluster may take to elect a leader and register its nodes.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

static SEQ: AtomicU32 = AtomicU32::new(0);

/// The servers' shared configuration (fast raft, short RPC hold).
const SERVER_HCL: &str = r#"performance {
  raft_multiplier = 1
  rpc_hold_timeout = "2s"
}
"#;

/// One server: its ports, node name, data dir and (while running) process.
#[derive(Debug)]
struct Node {
    ports: ConsulPorts,
    name: String,
    dir: PathBuf,
    guard: Option<ChildGuard>,
    /// SIGSTOPped: its ports accept connections but nothing answers, so
    /// the helpers do not ask it.
    frozen: bool,
}

/// A running cluster of Consul servers, each killed when dropped.
#[derive(Debug)]
pub struct ConsulCluster {
    nodes: Vec<Node>,
    dir: tempfile::TempDir,
}

impl ConsulCluster {
    /// Starts `n` servers (`-bootstrap-expect n`, each `-retry-join`ing all
    /// of them) and waits until they agree on a raft leader and every node's
    /// `serfHealth` passes in the catalog (so sessions can be created on any
    /// of them at once). Retries with fresh ports on failure; panics with
    /// the servers' logs if the cluster never gets ready.
    pub fn start(n: usize) -> Self {
        assert!(n >= 1, "a cluster needs at least one server");
        let mut last_logs = String::new();
        for attempt in 1..=START_ATTEMPTS {
            let dir = tempfile::Builder::new()
                .prefix("novaha-consul-cluster-")
                .tempdir()
                .expect("create consul cluster temp dir");
            let seq = SEQ.fetch_add(1, Ordering::Relaxed);
            let ports = pick_ports(n);
            let nodes = ports
                .into_iter()
                .enumerate()
                .map(|(i, ports)| {
                    let node_dir = dir.path().join(format!("s{i}"));
                    std::fs::create_dir_all(node_dir.join("data"))
                        .expect("create consul server data dir");
                    std::fs::write(node_dir.join("server.hcl"), SERVER_HCL)
                        .expect("write consul server config");
                    Node {
                        ports,
                        name: format!("novaha-s{i}-{}-{seq}-{}", std::process::id(), ports.http),
                        dir: node_dir,
                        guard: None,
                        frozen: false,
                    }
                })
                .collect();
            let mut cluster = Self { nodes, dir };
            for i in 0..n {
                cluster.spawn(i);
            }
            if cluster.wait_ready(READY_TIMEOUT) {
                return cluster;
            }
            last_logs = cluster.logs();
            eprintln!("consul cluster start attempt {attempt} failed; retrying");
        }
        panic!("consul cluster did not get ready after {START_ATTEMPTS} attempts:\n{last_logs}");
    }

    fn spawn(&mut self, i: usize) {
        let bin = consul_bin();
        let joins: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("-retry-join=127.0.0.1:{}", n.ports.serf_lan))
            .collect();
        let expect = self.nodes.len();
        let node = &mut self.nodes[i];
        assert!(node.guard.is_none(), "consul server {i} is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.dir.join("consul.log"))
            .expect("open consul server log");
        let log_err = log.try_clone().expect("clone consul log file handle");
        let mut cmd = Command::new(bin);
        cmd.arg("agent")
            .arg("-server")
            .arg(format!("-bootstrap-expect={expect}"))
            .args(["-bind", "127.0.0.1", "-client", "127.0.0.1"])
            .args(["-node", &node.name])
            .arg(format!("-data-dir={}", node.dir.join("data").display()))
            .arg(format!(
                "-config-file={}",
                node.dir.join("server.hcl").display()
            ))
            .arg(format!("-http-port={}", node.ports.http))
            .arg("-dns-port=-1")
            .arg("-grpc-port=-1")
            .arg(format!("-serf-lan-port={}", node.ports.serf_lan))
            .arg(format!("-serf-wan-port={}", node.ports.serf_wan))
            .arg(format!("-server-port={}", node.ports.server))
            .args(&joins)
            .args(["-log-level", "info"])
            .env_remove("CONSUL_HTTP_ADDR")
            .env_remove("CONSUL_HTTP_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err));
        node.guard = Some(ChildGuard::spawn(&format!("consul server {i}"), &mut cmd));
    }

    fn wait_ready(&mut self, timeout: Duration) -> bool {
        let n = self.nodes.len();
        wait_until(timeout, || {
            for i in 0..n {
                let Some(g) = self.nodes[i].guard.as_mut() else {
                    return false;
                };
                if !g.is_running() {
                    return false;
                }
            }
            let Some(leader) = self.leader_seen_by(0) else {
                return false;
            };
            (0..n).all(|i| self.leader_seen_by(i) == Some(leader))
                && (0..n).all(|i| self.serf_health_passing(i))
        })
    }

    /// How many servers the cluster has (running or not).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Always false: a cluster has at least one server.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Server `i`'s HTTP API base URL, `http://127.0.0.1:PORT`.
    pub fn http_addr(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.nodes[i].ports.http)
    }

    /// Server `i`'s ports.
    pub fn ports(&self, i: usize) -> ConsulPorts {
        self.nodes[i].ports
    }

    /// Server `i`'s node name (what its sessions are bound to).
    pub fn node_name(&self, i: usize) -> &str {
        &self.nodes[i].name
    }

    /// The cluster's temp dir (one `s<i>/` per server with `consul.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Every server's log tail, for assertion messages.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                format!(
                    "--- consul server {i} ({}) ---\n{}",
                    n.name,
                    read_tail(&n.dir.join("consul.log"))
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The raft leader as server `i` sees it (`/v1/status/leader`): its
    /// index, or `None` when `i` knows no leader, does not answer, is
    /// killed or frozen (a frozen server is not asked: it would hang).
    pub fn leader_seen_by(&self, i: usize) -> Option<usize> {
        if self.nodes[i].guard.is_none() || self.nodes[i].frozen {
            return None;
        }
        let (status, body) =
            raw_http(self.nodes[i].ports.http, "GET", "/v1/status/leader", b"").ok()?;
        if status != 200 {
            return None;
        }
        let addr: String = serde_json::from_slice(&body).ok()?;
        let port: u16 = addr.rsplit(':').next()?.parse().ok()?;
        self.nodes.iter().position(|n| n.ports.server == port)
    }

    /// The current raft leader's index: polls (up to 15 s) until a running,
    /// unfrozen server names one. Panics with the logs otherwise.
    pub fn raft_leader(&self) -> usize {
        self.wait_raft_leader(Duration::from_secs(15), |_| true)
    }

    /// Polls up to `timeout` until some answering server names a raft leader
    /// for which `accept` is true (e.g. "not the one just killed"), and
    /// returns it. Panics with the logs on timeout.
    pub fn wait_raft_leader(&self, timeout: Duration, accept: impl Fn(usize) -> bool) -> usize {
        let mut found = None;
        let ok = wait_until(timeout, || {
            found = (0..self.nodes.len())
                .filter_map(|i| self.leader_seen_by(i))
                .find(|l| accept(*l));
            found.is_some()
        });
        match found {
            Some(l) if ok => l,
            _ => panic!(
                "no acceptable consul raft leader within {timeout:?}\n{}",
                self.logs()
            ),
        }
    }

    /// Whether server `i`'s `serfHealth` check passes, as `i` reports it
    /// from the catalog (needs a raft leader).
    fn serf_health_passing(&self, i: usize) -> bool {
        let path = format!("/v1/health/node/{}", self.nodes[i].name);
        match raw_http(self.nodes[i].ports.http, "GET", &path, b"") {
            Ok((200, body)) => {
                let Ok(checks) = serde_json::from_slice::<Vec<serde_json::Value>>(&body) else {
                    return false;
                };
                checks
                    .iter()
                    .any(|c| c["CheckID"] == "serfHealth" && c["Status"] == "passing")
            }
            _ => false,
        }
    }

    /// SIGKILLs server `i` and reaps it (its data dir stays for
    /// [`ConsulCluster::restart`]).
    pub fn kill(&mut self, i: usize) {
        let mut g = self.nodes[i]
            .guard
            .take()
            .unwrap_or_else(|| panic!("consul server {i} is not running"));
        g.kill();
        self.nodes[i].frozen = false;
    }

    /// Freezes server `i` (SIGSTOP): it holds its ports but answers nothing.
    pub fn stop(&mut self, i: usize) {
        self.guard(i).signal("STOP");
        self.nodes[i].frozen = true;
    }

    /// Resumes a frozen server `i` (SIGCONT).
    pub fn cont(&mut self, i: usize) {
        self.guard(i).signal("CONT");
        self.nodes[i].frozen = false;
    }

    /// Whether server `i` is frozen by [`ConsulCluster::stop`].
    pub fn is_frozen(&self, i: usize) -> bool {
        self.nodes[i].frozen
    }

    /// Whether server `i` has a process (it may be frozen).
    pub fn is_running(&mut self, i: usize) -> bool {
        self.nodes[i].guard.as_mut().is_some_and(|g| g.is_running())
    }

    /// Starts a killed server `i` again with the same ports, node name and
    /// data dir (it rejoins with its raft log), and waits until it answers
    /// HTTP. Does not wait for a raft leader: with quorum lost that depends
    /// on the other servers.
    pub fn restart(&mut self, i: usize) {
        self.spawn(i);
        let port = self.nodes[i].ports.http;
        let ok = wait_until(Duration::from_secs(15), || {
            raw_http(port, "GET", "/v1/agent/self", b"").is_ok_and(|(s, _)| s == 200)
        });
        assert!(
            ok,
            "consul server {i} did not answer after restart\n{}",
            self.logs()
        );
    }

    /// A blocking HTTP request to server `i`: (status, body). For checks
    /// that must bypass novaha's client (e.g. `?stale` reads). Errors when
    /// the server does not answer (killed, frozen).
    pub fn http(
        &self,
        i: usize,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> std::io::Result<(u16, Vec<u8>)> {
        raw_http(self.nodes[i].ports.http, method, path, body)
    }

    /// The raw value of `key` read with `?stale` from server `i` (works
    /// without quorum): `None` when absent. Panics when `i` does not answer.
    pub fn kv_get_stale(&self, i: usize, key: &str) -> Option<Vec<u8>> {
        let (status, body) = self
            .http(i, "GET", &format!("/v1/kv/{key}?raw&stale"), b"")
            .unwrap_or_else(|e| panic!("consul server {i} GET {key}?stale: {e}"));
        match status {
            200 => Some(body),
            404 => None,
            s => panic!(
                "consul server {i} GET {key}?stale: HTTP {s}: {}",
                String::from_utf8_lossy(&body)
            ),
        }
    }

    fn guard(&self, i: usize) -> &ChildGuard {
        self.nodes[i]
            .guard
            .as_ref()
            .unwrap_or_else(|| panic!("consul server {i} is not running"))
    }
}

impl Drop for ConsulCluster {
    /// Kills every server (the guards do, also frozen ones) before the temp
    /// dir goes.
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut g) = n.guard.take() {
                g.kill();
            }
        }
    }
}

/// `n` sets of ports, all 4n of them distinct.
fn pick_ports(n: usize) -> Vec<ConsulPorts> {
    loop {
        let sets: Vec<ConsulPorts> = (0..n).map(|_| ConsulPorts::pick()).collect();
        let mut all: Vec<u16> = sets
            .iter()
            .flat_map(|p| [p.http, p.serf_lan, p.serf_wan, p.server])
            .collect();
        all.sort_unstable();
        if all.windows(2).all(|w| w[0] != w[1]) {
            return sets;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_servers_elect_a_leader_and_survive_its_death() {
        let mut c = ConsulCluster::start(3);
        let leader = c.raft_leader();
        let other = (leader + 1) % 3;
        let (s, _) = c
            .http(other, "PUT", "/v1/kv/t/k", b"v1")
            .expect("put via follower");
        assert_eq!(s, 200);
        c.kill(leader);
        let new = c.wait_raft_leader(Duration::from_secs(15), |l| l != leader);
        assert_ne!(new, leader);
        // A follower applies committed entries a moment later: poll.
        assert!(
            wait_until(Duration::from_secs(10), || c.kv_get_stale(other, "t/k")
                == Some(b"v1".to_vec())),
            "committed value lost with the leader"
        );
        let port = c.ports(leader).http;
        c.restart(leader);
        assert!(c.is_running(leader));
        drop(c);
        assert!(raw_http(port, "GET", "/v1/status/leader", b"").is_err());
    }
}
