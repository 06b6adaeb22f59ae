//! A real Consul dev agent (`consul agent -dev`, 1.8.7 from
//! `scripts/deps/consul.sh`) on free loopback ports, in its own temp dir,
//! killed when dropped.
//!
//! ```no_run
//! let agent = novaha_testkit::consul::ConsulAgent::start();
//! let addr = agent.http_addr(); // "http://127.0.0.1:PORT"
//! ```
//!
//! Each agent is independent (in-memory state), so tests that share nothing
//! may still give every test its own K/V prefix when they share an agent.
//!
//! [`ConsulAgent::start_tls`] also serves HTTPS with `verify_incoming`
//! (clients must present a certificate), with a CA, a server certificate
//! and a client certificate made at start with the `openssl` CLI
//! ([`TlsFiles`]). Its plain HTTP port stays open for the harness's own
//! calls ([`ConsulAgent::http`], `kv_put`, ...).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::process::{ChildGuard, ToolSource, find_tool, free_port, tool};

/// How many times start-up is retried with fresh ports after a port clash.
const START_ATTEMPTS: usize = 5;
/// How long one start-up attempt may take before it counts as failed.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

static SEQ: AtomicU32 = AtomicU32::new(0);

/// The Consul version `scripts/deps/consul.sh` installs (into the cache dir).
pub const CONSUL_VERSION: &str = "1.8.7";
/// The environment variable naming a Consul binary to use.
pub const CONSUL_BIN_ENV: &str = "NOVAHA_CONSUL_BIN";
/// Where `scripts/deps/consul.sh` puts the binary, relative to the cache dir.
const CACHED_CONSUL: &str = "consul-1.8.7/usr/bin/consul";

/// Looks for the Consul binary: `NOVAHA_CONSUL_BIN`, the cached
/// [`CONSUL_VERSION`], or `consul` on `PATH`; says where it was found.
pub fn find_consul_bin() -> Option<(PathBuf, ToolSource)> {
    find_tool(CONSUL_BIN_ENV, &[CACHED_CONSUL], "consul")
}

/// The path of the Consul binary: `NOVAHA_CONSUL_BIN`, the cached 1.8.7, or
/// `consul` on `PATH`. Panics (naming the install command) when missing.
pub fn consul_bin() -> PathBuf {
    tool(CONSUL_BIN_ENV, &[CACHED_CONSUL], "consul")
}

/// How to start an agent. The default is what tests use: the binary from
/// [`consul_bin`], a unique node name, no UI, no TLS, in the caller's
/// process group.
#[derive(Clone, Debug, Default)]
pub struct ConsulOptions {
    /// The Consul binary ([`consul_bin`] when `None`).
    pub bin: Option<PathBuf>,
    /// Also serve HTTPS (see [`ConsulAgent::start_tls`]).
    pub tls: bool,
    /// Serve the web UI under `/ui/` (for a human exploring the K/V tree).
    pub ui: bool,
    /// The agent's node name (a unique test name when `None`).
    pub node_name: Option<String>,
    /// Start the agent in its own process group, so that a terminal's
    /// Ctrl-C reaches only the caller, which then stops the agent itself
    /// ([`ConsulAgent::stop`]).
    pub own_process_group: bool,
}

/// The ports one agent listens on (all distinct, all loopback).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConsulPorts {
    /// HTTP API.
    pub http: u16,
    /// Serf LAN gossip (TCP and UDP).
    pub serf_lan: u16,
    /// Serf WAN gossip (TCP and UDP).
    pub serf_wan: u16,
    /// Server RPC.
    pub server: u16,
}

impl ConsulPorts {
    pub(crate) fn pick() -> Self {
        loop {
            let p = Self {
                http: free_port(),
                serf_lan: free_port(),
                serf_wan: free_port(),
                server: free_port(),
            };
            let mut all = [p.http, p.serf_lan, p.serf_wan, p.server];
            all.sort_unstable();
            if all.windows(2).all(|w| w[0] != w[1]) {
                return p;
            }
        }
    }
}

/// The certificates of a TLS agent (PEM files in its temp dir).
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// The CA that signed the server and client certificates.
    pub ca: PathBuf,
    /// A directory holding only `ca.pem` (for `CONSUL_CAPATH`).
    pub ca_dir: PathBuf,
    /// A client certificate the agent accepts (signed by the CA).
    pub client_cert: PathBuf,
    /// Its key.
    pub client_key: PathBuf,
    /// Another CA, which signed nothing here (a wrong trust anchor).
    pub other_ca: PathBuf,
    /// The only name the server certificate carries ([`SERVER_NAME`]): not
    /// `127.0.0.1`, so a client must be told it.
    pub server_name: String,
}

/// The name in a TLS agent's certificate (it does not resolve: clients
/// reach the agent by IP and check this name).
pub const SERVER_NAME: &str = "consul.novaha.test";

/// A running `consul agent -dev`, killed (SIGKILL) and its temp dir removed
/// when dropped, also when the test panics.
#[derive(Debug)]
pub struct ConsulAgent {
    guard: ChildGuard,
    ports: ConsulPorts,
    node_name: String,
    dir: tempfile::TempDir,
    https: Option<(u16, TlsFiles)>,
}

fn openssl(dir: &Path, args: &[&str]) {
    let bin = tool("NOVAHA_OPENSSL", &["/usr/bin/openssl"], "openssl");
    let o = Command::new(bin)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl");
    assert!(
        o.status.success(),
        "openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A CA (`<name>.pem`, `<name>-key.pem`) in `dir`.
fn make_ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN=novaha test {name}"),
            "-keyout",
            &format!("{name}-key.pem"),
            "-out",
            &format!("{name}.pem"),
        ],
    );
}

/// A leaf `<name>.pem` / `<name>-key.pem` signed by `ca`, with `ext` (an
/// OpenSSL extension section's lines).
fn make_leaf(dir: &Path, ca: &str, name: &str, ext: &str) {
    std::fs::write(dir.join(format!("{name}.ext")), ext).expect("write the extension file");
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &format!("{name}-key.pem"),
            "-out",
            &format!("{name}.csr"),
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}-key.pem"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
            "-out",
            &format!("{name}.pem"),
        ],
    );
}

/// The certificates of a TLS agent, made in `dir`.
fn make_tls(dir: &Path) -> TlsFiles {
    make_ca(dir, "ca");
    make_ca(dir, "other-ca");
    make_leaf(
        dir,
        "ca",
        "server",
        &format!(
            "subjectAltName=DNS:{SERVER_NAME}\nextendedKeyUsage=serverAuth,clientAuth\n\
             basicConstraints=CA:FALSE\n"
        ),
    );
    make_leaf(
        dir,
        "ca",
        "client",
        "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n",
    );
    let ca_dir = dir.join("ca.d");
    std::fs::create_dir_all(&ca_dir).expect("create the CA dir");
    std::fs::copy(dir.join("ca.pem"), ca_dir.join("ca.pem")).expect("copy the CA");
    TlsFiles {
        ca: dir.join("ca.pem"),
        ca_dir,
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client-key.pem"),
        other_ca: dir.join("other-ca.pem"),
        server_name: SERVER_NAME.to_owned(),
    }
}

impl ConsulAgent {
    /// Starts a dev agent on free loopback ports and waits until it has
    /// elected itself leader and registered its own node (so sessions bound
    /// to `serfHealth` can be created at once). Retries with fresh ports on a
    /// port clash; panics with the agent's log if it never gets ready.
    pub fn start() -> Self {
        Self::start_with(&ConsulOptions::default())
    }

    /// [`ConsulAgent::start`], also serving HTTPS on its own free port with
    /// `verify_incoming = true`: the agent's certificate names only
    /// [`SERVER_NAME`], and a client must present a certificate signed by
    /// the test CA ([`ConsulAgent::tls`]).
    pub fn start_tls() -> Self {
        Self::start_with(&ConsulOptions {
            tls: true,
            ..ConsulOptions::default()
        })
    }

    /// [`ConsulAgent::try_start`], panicking with its error.
    pub fn start_with(opts: &ConsulOptions) -> Self {
        Self::try_start(opts).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts an agent as `opts` say and waits until it is ready (as
    /// [`ConsulAgent::start`]), retrying with fresh ports; says why it
    /// failed instead of panicking (for a program such as the demo).
    pub fn try_start(opts: &ConsulOptions) -> Result<Self, String> {
        let bin = opts.bin.clone().unwrap_or_else(consul_bin);
        let mut last_log = String::new();
        for attempt in 1..=START_ATTEMPTS {
            let dir = tempfile::Builder::new()
                .prefix("novaha-consul-")
                .tempdir()
                .map_err(|e| format!("create a temp dir for the consul agent: {e}"))?;
            let ports = ConsulPorts::pick();
            let node_name = opts.node_name.clone().unwrap_or_else(|| {
                format!(
                    "novaha-test-{}-{}-{}",
                    std::process::id(),
                    SEQ.fetch_add(1, Ordering::Relaxed),
                    ports.http
                )
            });
            let log_path = dir.path().join("consul.log");
            let log = std::fs::File::create(&log_path)
                .map_err(|e| format!("create {}: {e}", log_path.display()))?;
            let log_err = log
                .try_clone()
                .map_err(|e| format!("clone the consul log file handle: {e}"))?;
            let data_dir = dir.path().join("data");
            std::fs::create_dir_all(&data_dir)
                .map_err(|e| format!("create {}: {e}", data_dir.display()))?;
            let https = opts.tls.then(|| {
                let files = make_tls(dir.path());
                let mut port = free_port();
                while [ports.http, ports.serf_lan, ports.serf_wan, ports.server].contains(&port) {
                    port = free_port();
                }
                (port, files)
            });
            let mut cmd = Command::new(&bin);
            cmd.arg("agent")
                .arg("-dev")
                .args(opts.ui.then_some("-ui"))
                .args(["-bind", "127.0.0.1", "-client", "127.0.0.1"])
                .args(["-node", &node_name])
                .arg(format!("-data-dir={}", data_dir.display()))
                .arg(format!("-http-port={}", ports.http))
                .arg("-dns-port=-1")
                .arg("-grpc-port=-1")
                .arg(format!("-serf-lan-port={}", ports.serf_lan))
                .arg(format!("-serf-wan-port={}", ports.serf_wan))
                .arg(format!("-server-port={}", ports.server))
                .args(["-log-level", "info"])
                .args(https.iter().flat_map(|(port, _)| {
                    let d = dir.path().display();
                    [
                        "-hcl".to_owned(),
                        format!(
                            "ports {{ https = {port} }} ca_file = \"{d}/ca.pem\" \
                             cert_file = \"{d}/server.pem\" key_file = \"{d}/server-key.pem\" \
                             verify_incoming = true"
                        ),
                    ]
                }))
                .env_remove("CONSUL_HTTP_ADDR")
                .env_remove("CONSUL_HTTP_TOKEN")
                .stdin(Stdio::null())
                .stdout(Stdio::from(log))
                .stderr(Stdio::from(log_err));
            if opts.own_process_group {
                cmd.process_group(0);
            }
            let mut guard = ChildGuard::try_spawn("consul agent", &mut cmd)
                .map_err(|e| format!("start {}: {e}", bin.display()))?;
            if wait_ready(&mut guard, ports.http, &node_name) {
                return Ok(Self {
                    guard,
                    ports,
                    node_name,
                    dir,
                    https,
                });
            }
            guard.kill();
            last_log = read_tail(&log_path);
            eprintln!("consul agent start attempt {attempt} failed (ports {ports:?}); retrying");
        }
        Err(format!(
            "consul agent did not get ready after {START_ATTEMPTS} attempts; last log:\n{last_log}"
        ))
    }

    /// Stops the agent gracefully (SIGINT: it leaves), killing it after
    /// `grace`; returns how it ended. Its temp dir goes when it is dropped.
    pub fn stop(&mut self, grace: Duration) -> String {
        self.guard.stop("INT", grace)
    }

    /// The HTTP API's base URL, `http://127.0.0.1:PORT` (no trailing slash).
    pub fn http_addr(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.http)
    }

    /// The HTTPS API's base URL by IP, `https://127.0.0.1:PORT` (a TLS
    /// agent only; the certificate does not name the IP: give clients the
    /// server name).
    pub fn https_addr(&self) -> String {
        let (port, _) = self.https.as_ref().expect("a TLS agent (start_tls)");
        format!("https://127.0.0.1:{port}")
    }

    /// The certificates of a TLS agent.
    pub fn tls(&self) -> &TlsFiles {
        &self.https.as_ref().expect("a TLS agent (start_tls)").1
    }

    /// The HTTP API's port.
    pub fn http_port(&self) -> u16 {
        self.ports.http
    }

    /// Every port the agent listens on.
    pub fn ports(&self) -> ConsulPorts {
        self.ports
    }

    /// The agent's node name (unique per agent).
    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// The agent's temp dir (holds `consul.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The agent's log so far (for assertion messages).
    pub fn log(&self) -> String {
        read_tail(&self.dir.path().join("consul.log"))
    }

    /// The process guard (pid, signals such as STOP/CONT, kill).
    pub fn guard(&mut self) -> &mut ChildGuard {
        &mut self.guard
    }

    /// A blocking HTTP request to the agent without any client library:
    /// returns (status, body). For test setup and checks (seeding raw K/V
    /// bytes, destroying a session behind a client's back). Panics when the
    /// agent does not answer.
    pub fn http(&self, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
        raw_http(self.ports.http, method, path, body)
            .unwrap_or_else(|e| panic!("consul {method} {path}: {e}"))
    }

    /// PUTs raw bytes at `key` (no CAS); panics unless Consul says `true`.
    pub fn kv_put(&self, key: &str, value: &[u8]) {
        let (status, body) = self.http("PUT", &format!("/v1/kv/{key}"), value);
        assert_eq!(
            (status, String::from_utf8_lossy(&body).trim()),
            (200, "true"),
            "consul PUT {key}: {}",
            String::from_utf8_lossy(&body)
        );
    }

    /// The raw value of `key`, or `None` when it does not exist.
    pub fn kv_get(&self, key: &str) -> Option<Vec<u8>> {
        let (status, body) = self.http("GET", &format!("/v1/kv/{key}?raw"), b"");
        match status {
            200 => Some(body),
            404 => None,
            s => panic!(
                "consul GET {key}: HTTP {s}: {}",
                String::from_utf8_lossy(&body)
            ),
        }
    }
}

fn wait_ready(guard: &mut ChildGuard, port: u16, node: &str) -> bool {
    let deadline = Instant::now() + READY_TIMEOUT;
    while Instant::now() < deadline {
        if !guard.is_running() {
            return false;
        }
        let leader_ok = matches!(
            raw_http(port, "GET", "/v1/status/leader", b""),
            Ok((200, ref b)) if b.len() > 2
        );
        if leader_ok {
            // serfHealth must be in the catalog before a session can use it.
            if let Ok((200, body)) = raw_http(port, "GET", &format!("/v1/health/node/{node}"), b"")
            {
                let text = String::from_utf8_lossy(&body);
                if text.contains("serfHealth") && text.contains("passing") {
                    return true;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

pub(crate) fn read_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let start = text.len().saturating_sub(4000);
    let start = (start..text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(text.len());
    text[start..].to_owned()
}

/// A minimal HTTP/1.0 client over a TCP stream (Connection: close).
pub(crate) fn raw_http(
    port: u16,
    method: &str,
    path: &str,
    body: &[u8],
) -> std::io::Result<(u16, Vec<u8>)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    let head = format!(
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)?;
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no end of HTTP headers"))?;
    let head = String::from_utf8_lossy(&resp[..split]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line: {head}")))?;
    Ok((status, resp[split + 4..].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_agents_start_answer_and_stop() {
        let a = ConsulAgent::start();
        let b = ConsulAgent::start();
        assert_ne!(a.http_port(), b.http_port());
        assert_ne!(a.node_name(), b.node_name());
        a.kv_put("t/k", &[0xff, 0x00, b'x']);
        assert_eq!(a.kv_get("t/k"), Some(vec![0xff, 0x00, b'x']));
        assert_eq!(b.kv_get("t/k"), None);
        let (status, body) = a.http("GET", "/v1/agent/self", b"");
        assert_eq!(status, 200);
        assert!(String::from_utf8_lossy(&body).contains(a.node_name()));
        let port = a.http_port();
        drop(a);
        assert!(
            raw_http(port, "GET", "/v1/status/leader", b"").is_err(),
            "agent still answers after drop"
        );
    }
}
