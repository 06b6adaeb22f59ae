//! Compute hosts as hosts for the simulator's end-to-end tests: beside its
//! nova-compute (in novaha-sim), each host runs its own Consul client agent
//! (node name = the Nova host, joined to the test's [`ConsulAgent`]) and an
//! sshd stand-in (a TCP listener answering with an SSH banner), both on its
//! own loopback address (`127.0.0.N`). [`Hosts::kill`] stops the agent and
//! the listener together (the test kills the host's nova-compute in the sim
//! at the same moment), so that novaha's three signals (`nova`, `consul`,
//! `tcp`) all see the host die; [`Hosts::kill_agent`] and
//! [`Hosts::kill_sshd`] fail one part alone.
//!
//! Everything stops when dropped, also on panic.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::consul::{ConsulAgent, consul_bin, raw_http};
use crate::process::ChildGuard;

/// One host's agent and sshd stand-in.
#[derive(Debug)]
struct Host {
    ip: Ipv4Addr,
    /// The agent's HTTP and serf ports, kept across restarts: Consul takes
    /// a node back only at the address it knew.
    agent_ports: (u16, u16),
    agent: Option<ChildGuard>,
    sshd: Option<Sshd>,
    _dir: tempfile::TempDir,
}

/// A TCP listener answering each connection with an SSH banner, on its own
/// thread until stopped.
#[derive(Debug)]
struct Sshd {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Sshd {
    fn start(listener: TcpListener) -> Self {
        listener
            .set_nonblocking(true)
            .expect("set the listener non-blocking");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut conn, _)) => {
                        let _ = conn.write_all(b"SSH-2.0-novaha-standin\r\n");
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
            // The listener is dropped here: connections are refused.
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The hosts of one test; see the module docs.
#[derive(Debug)]
pub struct Hosts {
    hosts: BTreeMap<String, Host>,
    ssh_port: u16,
}

/// Binds `port` (0: any) on `ip` for TCP, and the same port for UDP when
/// `udp` (serf gossips on both); returns the TCP listener.
fn bind(ip: Ipv4Addr, port: u16, udp: bool) -> Option<(TcpListener, Option<std::net::UdpSocket>)> {
    let t = TcpListener::bind(SocketAddr::from((ip, port))).ok()?;
    let p = t.local_addr().ok()?.port();
    let u = if udp {
        Some(std::net::UdpSocket::bind(SocketAddr::from((ip, p))).ok()?)
    } else {
        None
    };
    Some((t, u))
}

impl Hosts {
    /// Starts `names` as hosts: the i-th on `127.0.0.(first_octet + i)`,
    /// each with a Consul client agent joined to `consul` and an sshd
    /// stand-in on one port shared by all ([`Hosts::ssh_port`]), and waits
    /// until every agent's `serfHealth` passes. `first_octet` keeps
    /// concurrent tests on separate addresses (any value from 2 up works:
    /// ports are free ones either way).
    pub fn start(consul: &ConsulAgent, names: &[&str], first_octet: u8) -> Self {
        let ips: Vec<Ipv4Addr> = (0..names.len())
            .map(|i| Ipv4Addr::new(127, 0, 0, first_octet.saturating_add(i as u8)))
            .collect();
        // One sshd port free on every address, as port 22 on real hosts.
        let (ssh_port, listeners) = loop {
            let Some((first, _)) = bind(ips[0], 0, false) else {
                continue;
            };
            let port = first.local_addr().expect("bound").port();
            let rest: Option<Vec<TcpListener>> = ips[1..]
                .iter()
                .map(|ip| bind(*ip, port, false).map(|(t, _)| t))
                .collect();
            if let Some(mut rest) = rest {
                rest.insert(0, first);
                break (port, rest);
            }
        };
        let mut hosts = BTreeMap::new();
        for ((name, ip), listener) in names.iter().zip(&ips).zip(listeners) {
            let dir = tempfile::Builder::new()
                .prefix("novaha-host-")
                .tempdir()
                .expect("create host temp dir");
            let mut h = Host {
                ip: *ip,
                agent_ports: agent_ports(*ip),
                agent: None,
                sshd: Some(Sshd::start(listener)),
                _dir: dir,
            };
            h.agent = Some(start_agent(consul, name, *ip, h.agent_ports, h._dir.path()));
            hosts.insert((*name).to_owned(), h);
        }
        let all = Self { hosts, ssh_port };
        all.wait_passing(consul, Duration::from_secs(30));
        all
    }

    /// Waits until every running host's agent is a passing member.
    fn wait_passing(&self, consul: &ConsulAgent, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let passing: Vec<String> =
                match raw_http(consul.http_port(), "GET", "/v1/health/state/passing", b"") {
                    Ok((200, body)) => serde_json::from_slice::<Vec<serde_json::Value>>(&body)
                        .unwrap_or_default()
                        .iter()
                        .filter(|r| r["CheckID"] == "serfHealth")
                        .filter_map(|r| r["Node"].as_str().map(str::to_owned))
                        .collect(),
                    _ => Vec::new(),
                };
            let want = self
                .hosts
                .iter()
                .filter(|(_, h)| h.agent.is_some())
                .map(|(n, _)| n);
            if want.clone().all(|n| passing.contains(n)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "host agents not all passing after {timeout:?}: passing {passing:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The port every host's sshd stand-in listens on.
    pub fn ssh_port(&self) -> u16 {
        self.ssh_port
    }

    /// `host`'s address.
    pub fn ip(&self, host: &str) -> String {
        self.host(host).ip.to_string()
    }

    /// `[monitor]` keys for the three signals over these hosts: `signals`,
    /// then the `[monitor.consul]` and `[monitor.tcp]` tables (port and
    /// addresses): put other plain `[monitor]` keys before it, other
    /// `[monitor.*]` tables after it.
    pub fn monitor_toml(&self) -> String {
        let addresses = self
            .hosts
            .iter()
            .map(|(n, h)| format!("\"{n}\" = \"{}\"", h.ip))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "signals = [\"nova\", \"consul\", \"tcp\"]\n\
             [monitor.consul]\nchecks = [\"serfHealth\"]\ntimeout = \"2s\"\n\
             [monitor.tcp]\nport = {}\ntimeout = \"500ms\"\naddresses = {{ {addresses} }}\n",
            self.ssh_port
        )
    }

    fn host(&self, host: &str) -> &Host {
        self.hosts
            .get(host)
            .unwrap_or_else(|| panic!("no host {host}"))
    }

    fn host_mut(&mut self, host: &str) -> &mut Host {
        self.hosts
            .get_mut(host)
            .unwrap_or_else(|| panic!("no host {host}"))
    }

    /// Kills `host`'s Consul agent and sshd stand-in (SIGKILL, listener
    /// closed); kill its nova-compute in the sim at the same moment.
    pub fn kill(&mut self, host: &str) {
        self.kill_agent(host);
        self.kill_sshd(host);
    }

    /// Kills `host`'s Consul agent alone (SIGKILL).
    pub fn kill_agent(&mut self, host: &str) {
        if let Some(mut a) = self.host_mut(host).agent.take() {
            a.kill();
        }
    }

    /// Closes `host`'s sshd stand-in alone (connections refused).
    pub fn kill_sshd(&mut self, host: &str) {
        drop(self.host_mut(host).sshd.take());
    }

    /// Starts what of `host` is not running (agent, sshd stand-in) and
    /// waits until its agent passes again.
    pub fn revive(&mut self, consul: &ConsulAgent, host: &str) {
        let ssh_port = self.ssh_port;
        let h = self.host_mut(host);
        if h.sshd.is_none() {
            let deadline = Instant::now() + Duration::from_secs(10);
            let listener = loop {
                if let Some((t, _)) = bind(h.ip, ssh_port, false) {
                    break t;
                }
                assert!(
                    Instant::now() < deadline,
                    "sshd port {ssh_port} on {} taken",
                    h.ip
                );
                std::thread::sleep(Duration::from_millis(50));
            };
            h.sshd = Some(Sshd::start(listener));
        }
        if h.agent.is_none() {
            h.agent = Some(start_agent(
                consul,
                host,
                h.ip,
                h.agent_ports,
                h._dir.path(),
            ));
        }
        self.wait_passing(consul, Duration::from_secs(30));
    }
}

/// Free HTTP and serf (TCP and UDP) ports on `ip`.
fn agent_ports(ip: Ipv4Addr) -> (u16, u16) {
    loop {
        let Some((h, _)) = bind(ip, 0, false) else {
            continue;
        };
        let Some((s, _su)) = bind(ip, 0, true) else {
            continue;
        };
        return (
            h.local_addr().expect("bound").port(),
            s.local_addr().expect("bound").port(),
        );
    }
}

/// A Consul client agent named `node` on `ip` (HTTP and serf `ports`),
/// joined to `consul`.
fn start_agent(
    consul: &ConsulAgent,
    node: &str,
    ip: Ipv4Addr,
    (http, serf): (u16, u16),
    dir: &std::path::Path,
) -> ChildGuard {
    // One data dir per host: a restarted agent keeps its node id, so
    // Consul takes it for the same node coming back.
    let data = dir.join("data");
    std::fs::create_dir_all(&data).expect("create agent data dir");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("agent.log"))
        .expect("agent log");
    let log_err = log.try_clone().expect("clone log handle");
    let mut cmd = Command::new(consul_bin());
    cmd.arg("agent")
        .args(["-node", node])
        .args(["-bind", &ip.to_string(), "-client", &ip.to_string()])
        .arg(format!("-data-dir={}", data.display()))
        .arg(format!("-http-port={http}"))
        .arg("-dns-port=-1")
        .arg("-grpc-port=-1")
        .arg(format!("-serf-lan-port={serf}"))
        .arg(format!("-retry-join=127.0.0.1:{}", consul.ports().serf_lan))
        .args(["-retry-interval", "1s", "-disable-host-node-id"])
        .args(["-log-level", "warn"])
        .env_remove("CONSUL_HTTP_ADDR")
        .env_remove("CONSUL_HTTP_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log_err));
    ChildGuard::spawn(&format!("consul agent of {node}"), &mut cmd)
}
