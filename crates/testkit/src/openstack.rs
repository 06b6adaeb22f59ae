//! A real OpenStack for end-to-end tests: keystone, placement, glance,
//! nova-api, nova-conductor, nova-scheduler, three fake-driver computes
//! (`compute-1..3`) and one spare compute (`ha-1`, disabled in Nova: novaha's
//! HA node), RabbitMQ, MariaDB, a Neutron stand-in, the controller's Consul
//! agent, and one simulated BMC (ipmi_sim) per compute whose power-off cuts
//! that whole host.
//!
//! Each compute is a host, not just a nova-compute: it also runs its own
//! Consul client agent (node name = the Nova host, joined to the
//! controller's agent at [`OpenStack::consul_addr`]) and an sshd stand-in,
//! both on its own loopback address ([`OpenStack::host_ip`],
//! [`OpenStack::ssh_port`]). [`OpenStack::kill_host`] kills the three at
//! once while the BMC still reads power on (a crash); the partial kills
//! ([`OpenStack::kill_compute`], [`OpenStack::kill_agent`]) leave the rest
//! of the host alive. Nova's heartbeat timers are the short ones
//! ([`Timers::SHORT`]) unless a test asks for others
//! ([`OpenStack::lease_with`]).
//!
//! The stack is brought up by `tests/openstack/up.sh` (see
//! docs/testing.md) **once per test run** and shared by every test process:
//! bringing it up costs about a minute, so no test may start its own.
//! [`OpenStack::shared`] does it on first use, serialised across processes
//! by the script's lock file; the first caller also starts a reaper that
//! stops the whole stack by pid when the test runner (this process's
//! parent: cargo or cargo-nextest) exits. With `NOVAHA_OPENSTACK_STATE` set
//! the stack in that dir is used (and brought up if needed) but never
//! reaped: whoever set it runs `tests/openstack/down.sh`.
//!
//! Tests that change the stack (stop a compute, evacuate, disable a
//! service) take [`OpenStack::lease`] first: it serialises them across
//! processes and puts the stack back to its baseline (every compute running,
//! up and enabled except the disabled spare, no servers).
//!
//! Every helper here is blocking (plain `#[test]`s); from an async test call
//! them in `spawn_blocking`. Failures panic with what failed and where the
//! logs are.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::process::repo_root;

/// The `disabled_reason` up.sh gives the spare compute (and
/// [`OpenStack::lease`] restores).
pub const HA_REASON: &str =
    "novaha HA node: spare compute, enabled by novaha only to take a failed node's instances";

/// The compute API microversion the helpers speak by default: the highest
/// at which an evacuated server still lands ACTIVE (2.95 lands SHUTOFF).
pub const DEFAULT_MICROVERSION: &str = "2.94";

/// A running test stack, described by its `STATE_DIR/env`.
#[derive(Debug, Clone)]
pub struct OpenStack {
    /// The stack's state dir (configs, data, pid files, logs under `log/`).
    pub state_dir: PathBuf,
    /// Every KEY=VALUE of `STATE_DIR/env`.
    pub env: BTreeMap<String, String>,
    /// Keystone v3 (`OS_AUTH_URL`).
    pub auth_url: String,
    /// The admin user (`OS_USERNAME`).
    pub username: String,
    /// Its password (`OS_PASSWORD`): a random per-stack test value.
    pub password: String,
    /// `OS_PROJECT_NAME` (admin).
    pub project_name: String,
    /// `OS_USER_DOMAIN_NAME` (Default).
    pub user_domain_name: String,
    /// `OS_PROJECT_DOMAIN_NAME` (Default).
    pub project_domain_name: String,
    /// `OS_REGION_NAME` (RegionOne).
    pub region: String,
    /// The compute API root (`.../v2.1`).
    pub compute_url: String,
    /// The three ordinary computes, `compute-1..3`.
    pub computes: Vec<String>,
    /// The spare compute (`ha-1`), disabled in Nova at baseline.
    pub ha_host: String,
    /// A tiny active public image.
    pub image_id: String,
    /// The `novaha.tiny` flavor (1 vCPU, 64 MiB, 1 GB).
    pub flavor_id: String,
    /// `STATE_DIR/clouds.yaml`, cloud name [`OpenStack::CLOUD`].
    pub clouds_yaml: PathBuf,
    /// The controller's Consul agent (`http://127.0.0.1:PORT`), in the same
    /// LAN as every host's agent: what novaha's `[consul] address` names.
    pub consul_addr: String,
}

/// Nova's heartbeat timers on the stack (seconds), set by
/// `tests/openstack/timers.sh` (which restarts Nova when they change).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// `report_interval`: how often each nova-compute heartbeats.
    pub report_interval: u32,
    /// `service_down_time`: how long after its last heartbeat Nova reads a
    /// service `down`.
    pub service_down_time: u32,
}

impl Timers {
    /// The stack's default: a dead compute reads `down` after 8-10 s.
    pub const SHORT: Timers = Timers {
        report_interval: 2,
        service_down_time: 10,
    };
    /// Nova's production defaults.
    pub const PRODUCTION: Timers = Timers {
        report_interval: 10,
        service_down_time: 60,
    };
}

/// One compute's simulated BMC (ipmi_sim on UDP loopback, IPMI lanplus).
#[derive(Debug, Clone)]
pub struct Bmc {
    /// The compute it powers.
    pub host: String,
    /// Its UDP port on 127.0.0.1.
    pub port: u16,
    /// The BMC user.
    pub user: String,
    /// A file holding only the password (`ipmitool -f`), never on argv.
    pub password_file: PathBuf,
    /// `1` or `0`: the simulated chassis power.
    pub power_file: PathBuf,
    /// One line per hook call (`<unix time> set power 0`, ...).
    pub calls_log: PathBuf,
}

impl OpenStack {
    /// The cloud's name in [`OpenStack::clouds_yaml`].
    pub const CLOUD: &'static str = "novaha-test";

    /// The stack of this test run, brought up on first use (about a minute
    /// with a cached venv) and reused by every later call, in this process
    /// and in every other test process of the run.
    pub fn shared() -> &'static OpenStack {
        static STACK: OnceLock<OpenStack> = OnceLock::new();
        STACK.get_or_init(|| {
            let (state, owner) = match std::env::var_os("NOVAHA_OPENSTACK_STATE") {
                Some(dir) => (PathBuf::from(dir), None),
                None => {
                    let runner = std::os::unix::process::parent_id();
                    (
                        std::env::temp_dir().join(format!("novaha-openstack-{runner}")),
                        Some(runner),
                    )
                }
            };
            Self::up(&state, owner)
        })
    }

    /// Runs `tests/openstack/up.sh STATE [OWNER]` (returns at once when the
    /// stack is already up) and loads the result.
    pub fn up(state: &Path, owner: Option<u32>) -> OpenStack {
        let mut cmd = Command::new("bash");
        cmd.arg(harness_dir().join("up.sh")).arg(state);
        if let Some(pid) = owner {
            cmd.arg(pid.to_string());
        }
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .expect("run tests/openstack/up.sh");
        assert!(
            out.status.success(),
            "tests/openstack/up.sh {} failed ({}); logs in {}/log:\n{}",
            state.display(),
            out.status,
            state.display(),
            tail(&String::from_utf8_lossy(&out.stderr), 40)
        );
        Self::load(state)
    }

    /// Reads a running stack's `STATE_DIR/env`.
    pub fn load(state: &Path) -> OpenStack {
        let path = state.join("env");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let env = parse_env(&text);
        let get = |k: &str| {
            env.get(k)
                .cloned()
                .unwrap_or_else(|| panic!("{} has no {k}", path.display()))
        };
        OpenStack {
            state_dir: state.to_path_buf(),
            auth_url: get("OS_AUTH_URL"),
            username: get("OS_USERNAME"),
            password: get("OS_PASSWORD"),
            project_name: get("OS_PROJECT_NAME"),
            user_domain_name: get("OS_USER_DOMAIN_NAME"),
            project_domain_name: get("OS_PROJECT_DOMAIN_NAME"),
            region: get("OS_REGION_NAME"),
            compute_url: get("OS_COMPUTE_URL"),
            computes: get("OS_COMPUTE_HOSTS")
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
            ha_host: get("OS_HA_HOST"),
            image_id: get("OS_IMAGE_ID"),
            flavor_id: get("OS_FLAVOR_ID"),
            clouds_yaml: PathBuf::from(get("OS_CLIENT_CONFIG_FILE")),
            consul_addr: get("CONSUL_HTTP_ADDR"),
            env,
        }
    }

    /// The `OS_*` variables a child process (novaha, the openstack CLI)
    /// needs to reach this cloud as admin.
    pub fn os_env(&self) -> Vec<(String, String)> {
        self.env
            .iter()
            .filter(|(k, _)| {
                k.starts_with("OS_")
                    && !matches!(
                        k.as_str(),
                        "OS_COMPUTE_HOSTS" | "OS_HA_HOST" | "OS_IMAGE_ID" | "OS_FLAVOR_ID"
                    )
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Every compute host, the spare last.
    pub fn all_hosts(&self) -> Vec<String> {
        let mut all = self.computes.clone();
        all.push(self.ha_host.clone());
        all
    }

    /// The simulated BMC of `host`.
    pub fn bmc(&self, host: &str) -> Bmc {
        let key = format!("BMC_PORT_{}", host.to_uppercase().replace('-', "_"));
        let port = self
            .env
            .get(&key)
            .unwrap_or_else(|| panic!("no BMC for {host} ({key} not in env)"))
            .parse()
            .expect("BMC port is a number");
        let dir = self.state_dir.join("bmc").join(host);
        Bmc {
            host: host.to_owned(),
            port,
            user: self.env.get("BMC_USER").cloned().unwrap_or_default(),
            password_file: dir.join("password"),
            power_file: dir.join("power"),
            calls_log: dir.join("calls.log"),
        }
    }

    fn host_var(&self, name: &str, host: &str) -> String {
        let key = format!("HOST_{name}_{}", host.to_uppercase().replace('-', "_"));
        self.env
            .get(&key)
            .cloned()
            .unwrap_or_else(|| panic!("no {key} in {}/env", self.state_dir.display()))
    }

    /// `host`'s own loopback address (its sshd stand-in and Consul agent
    /// listen there), e.g. `127.0.0.11`.
    pub fn host_ip(&self, host: &str) -> String {
        self.host_var("IP", host)
    }

    /// The port of `host`'s sshd stand-in on [`OpenStack::host_ip`].
    pub fn ssh_port(&self, host: &str) -> u16 {
        self.host_var("SSH_PORT", host)
            .parse()
            .expect("a port number")
    }

    /// The controller Consul agent's HTTP port.
    pub fn consul_port(&self) -> u16 {
        self.consul_addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("bad CONSUL_HTTP_ADDR {}", self.consul_addr))
    }

    /// A blocking HTTP call to the controller's Consul agent: (status, body).
    pub fn consul_http(&self, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
        crate::consul::raw_http(self.consul_port(), method, path, body)
            .unwrap_or_else(|e| panic!("stack consul {method} {path}: {e}"))
    }

    /// Each Consul node's `serfHealth` status (`passing`, `critical`).
    pub fn consul_members(&self) -> BTreeMap<String, String> {
        let (status, body) = self.consul_http("GET", "/v1/health/state/any", b"");
        assert_eq!(status, 200, "consul health: HTTP {status}");
        let rows: Vec<Value> = serde_json::from_slice(&body).expect("consul health JSON");
        rows.iter()
            .filter(|r| r["CheckID"] == "serfHealth")
            .map(|r| {
                (
                    r["Node"].as_str().unwrap_or_default().to_owned(),
                    r["Status"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }

    /// Runs `tests/openstack/host.sh STATE ACTION HOST`; returns stdout.
    fn host_sh(&self, action: &str, host: &str) -> String {
        let out = Command::new("bash")
            .arg(harness_dir().join("host.sh"))
            .arg(&self.state_dir)
            .args([action, host])
            .stdin(Stdio::null())
            .output()
            .expect("run tests/openstack/host.sh");
        assert!(
            out.status.success(),
            "host.sh {action} {host} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// "The host died": SIGKILL to its nova-compute, its Consul agent and
    /// its sshd stand-in at once. Its BMC still answers and reads power on
    /// (until something fences it).
    pub fn kill_host(&self, host: &str) {
        self.host_sh("kill", host);
    }

    /// Starts whatever of `host` is not running (nova-compute, agent, sshd
    /// stand-in), as a power-on does.
    pub fn start_host(&self, host: &str) {
        self.host_sh("start", host);
    }

    /// Kills `host`'s Consul agent alone (SIGKILL).
    pub fn kill_agent(&self, host: &str) {
        self.host_sh("kill-agent", host);
    }

    /// Which parts of `host` run: `(nova-compute, agent, sshd)`.
    pub fn host_running(&self, host: &str) -> (bool, bool, bool) {
        let text = self.host_sh("status", host);
        let on = |part: &str| text.lines().any(|l| l == format!("{part} running"));
        (on("nova-compute"), on("agent"), on("sshd"))
    }

    /// Nova's heartbeat timers the stack runs with now.
    pub fn timers(&self) -> Timers {
        let path = self.state_dir.join("timers");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|_| "2 10".to_owned());
        let mut it = text.split_whitespace().map(|v| v.parse::<u32>().ok());
        match (it.next().flatten(), it.next().flatten()) {
            (Some(report_interval), Some(service_down_time)) => Timers {
                report_interval,
                service_down_time,
            },
            _ => panic!("{}: not two numbers: {text:?}", path.display()),
        }
    }

    /// Runs `tests/openstack/timers.sh` (restarts Nova when they change).
    fn set_timers(&self, t: Timers) {
        let out = Command::new("bash")
            .arg(harness_dir().join("timers.sh"))
            .arg(&self.state_dir)
            .arg(t.report_interval.to_string())
            .arg(t.service_down_time.to_string())
            .stdin(Stdio::null())
            .output()
            .expect("run tests/openstack/timers.sh");
        assert!(
            out.status.success(),
            "timers.sh {t:?} failed: {}",
            tail(&String::from_utf8_lossy(&out.stderr), 20)
        );
    }

    /// Runs `tests/openstack/compute.sh STATE ACTION HOST`; returns stdout.
    fn compute_sh(&self, action: &str, host: &str) -> String {
        let out = Command::new("bash")
            .arg(harness_dir().join("compute.sh"))
            .arg(&self.state_dir)
            .args([action, host])
            .stdin(Stdio::null())
            .output()
            .expect("run tests/openstack/compute.sh");
        assert!(
            out.status.success(),
            "compute.sh {action} {host} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Stops `host`'s nova-compute (TERM, KILL after a grace), as a dying
    /// node would; Nova reads it `down` 8-10 s later.
    pub fn stop_compute(&self, host: &str) {
        self.compute_sh("stop", host);
    }

    /// Kills `host`'s nova-compute alone, at once (SIGKILL); the rest of
    /// the host (its Consul agent, its sshd stand-in) lives on.
    pub fn kill_compute(&self, host: &str) {
        self.compute_sh("kill", host);
    }

    /// Starts `host`'s nova-compute again if it is not running.
    pub fn start_compute(&self, host: &str) {
        self.compute_sh("start", host);
    }

    /// Whether `host`'s nova-compute process runs.
    pub fn compute_running(&self, host: &str) -> bool {
        self.compute_sh("status", host) == "running"
    }

    /// An admin Nova client at [`DEFAULT_MICROVERSION`].
    pub fn nova(&self) -> Nova {
        let token = self.token();
        Nova {
            url: self.compute_url.clone(),
            token,
            microversion: DEFAULT_MICROVERSION.to_owned(),
        }
    }

    /// A fresh admin token, project-scoped.
    pub fn token(&self) -> String {
        let body = json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": self.username, "password": self.password,
                "domain": {"name": self.user_domain_name}}}},
            "scope": {"project": {"name": self.project_name,
                "domain": {"name": self.project_domain_name}}}}});
        let url = format!("{}/auth/tokens", self.auth_url);
        let resp = http(reqwest::Method::POST, &url, None, None, Some(body));
        assert_eq!(
            resp.status, 201,
            "keystone token at {url}: HTTP {}",
            resp.status
        );
        resp.subject_token
            .expect("keystone answered 201 without X-Subject-Token")
    }

    /// Exclusive use of the stack for one test (released on drop, also on
    /// panic, also if the test process is killed), starting from the
    /// baseline: the short timers ([`Timers::SHORT`]), every host powered
    /// on and running (nova-compute `up`, its Consul agent `passing`, its
    /// sshd stand-in listening), none forced down, all enabled except the
    /// spare (disabled, [`HA_REASON`]), no servers left.
    pub fn lease(&self) -> Lease<'_> {
        self.lease_with(Timers::SHORT)
    }

    /// [`OpenStack::lease`] with Nova's heartbeat timers set to `timers`
    /// (Nova is restarted first when they differ from the current ones,
    /// about half a minute).
    pub fn lease_with(&self, timers: Timers) -> Lease<'_> {
        let lock = PathBuf::from(format!("{}.lease", self.state_dir.display()));
        // flock(1) with --no-fork execs `sh`, which inherits the locked fd:
        // the lock lives exactly as long as that child, which the guard
        // kills on drop and which exits by itself when our end of its stdin
        // closes (this process died).
        let mut cmd = Command::new("flock");
        cmd.args(["--exclusive", "--no-fork"])
            .arg(&lock)
            .args(["sh", "-c", "echo locked; exec cat >/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start flock for {}: {e}", lock.display()));
        let stdout = child.stdout.take().expect("flock's stdout is piped");
        let guard = LeaseLock(child);
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read flock's output");
        assert_eq!(
            line.trim(),
            "locked",
            "lease lock {} not acquired",
            lock.display()
        );
        self.set_timers(timers);
        self.reset();
        Lease {
            stack: self,
            _lock: guard,
        }
    }

    /// Puts the stack back to its baseline (see [`OpenStack::lease`]).
    fn reset(&self) {
        let nova = self.nova();
        for server in nova.servers_all() {
            let id = server["id"].as_str().expect("server id").to_owned();
            nova.delete_server(&id);
        }
        for host in self.all_hosts() {
            // Power on through the BMC hook: chassis power back to 1 and
            // nova-compute started if it is not running.
            let out = Command::new("bash")
                .arg(harness_dir().join("bmc-hook.sh"))
                .arg(&self.state_dir)
                .args([host.as_str(), "set", "power", "1"])
                .stdin(Stdio::null())
                .output()
                .expect("run tests/openstack/bmc-hook.sh");
            assert!(
                out.status.success(),
                "power on {host}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let deadline = Instant::now() + Duration::from_secs(120);
        for host in self.all_hosts() {
            let svc = nova.service(&host);
            let id = svc["id"].as_str().expect("service id").to_owned();
            if svc["forced_down"].as_bool() == Some(true) {
                nova.unforce_down(&host, deadline.saturating_duration_since(Instant::now()));
            }
            let want_disabled = host == self.ha_host;
            let body = if want_disabled {
                json!({"status": "disabled", "disabled_reason": HA_REASON})
            } else {
                json!({"status": "enabled"})
            };
            nova.put(&format!("/os-services/{id}"), body);
        }
        for host in self.all_hosts() {
            nova.wait_service_state(&host, "up", Duration::from_secs(120));
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let members = self.consul_members();
            let passing = self
                .all_hosts()
                .iter()
                .all(|h| members.get(h).is_some_and(|s| s == "passing"));
            if passing {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "hosts' consul agents not all passing after 60 s: {members:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        nova.wait_until("every server deleted", Duration::from_secs(120), || {
            nova.servers_all().is_empty()
        });
    }
}

/// Exclusive use of the shared stack; see [`OpenStack::lease`].
#[derive(Debug)]
pub struct Lease<'a> {
    stack: &'a OpenStack,
    _lock: LeaseLock,
}

/// The `flock` child holding the lease lock; killed (lock released) on drop.
#[derive(Debug)]
struct LeaseLock(std::process::Child);

impl Drop for LeaseLock {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl std::ops::Deref for Lease<'_> {
    type Target = OpenStack;
    fn deref(&self) -> &OpenStack {
        self.stack
    }
}

/// A minimal admin Nova client for tests: JSON in, JSON out, panics with
/// the status and body on an unexpected answer.
#[derive(Debug, Clone)]
pub struct Nova {
    url: String,
    token: String,
    microversion: String,
}

impl Nova {
    /// The same client at another microversion (e.g. "2.95").
    pub fn with_microversion(mut self, mv: &str) -> Self {
        self.microversion = mv.to_owned();
        self
    }

    /// One call; returns the status and the JSON body (`Null` when empty
    /// or not JSON).
    pub fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let url = format!("{}{}", self.url, path);
        let resp = http(
            method,
            &url,
            Some(&self.token),
            Some(&self.microversion),
            body,
        );
        (resp.status, resp.body)
    }

    fn expect_ok(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let m = method.clone();
        let (status, v) = self.request(method, path, body);
        assert!(
            (200..300).contains(&status),
            "nova {m} {path}: HTTP {status}: {v}"
        );
        v
    }

    /// GET, expecting 2xx.
    pub fn get(&self, path: &str) -> Value {
        self.expect_ok(reqwest::Method::GET, path, None)
    }

    /// POST, expecting 2xx.
    pub fn post(&self, path: &str, body: Value) -> Value {
        self.expect_ok(reqwest::Method::POST, path, Some(body))
    }

    /// PUT, expecting 2xx.
    pub fn put(&self, path: &str, body: Value) -> Value {
        self.expect_ok(reqwest::Method::PUT, path, Some(body))
    }

    /// Boots one server of the stack's flavor and image on `host` (admin
    /// `host` field, 2.74+) with no network (`"networks": "none"`, 2.37+);
    /// returns its id without waiting.
    pub fn boot_on(&self, stack: &OpenStack, name: &str, host: &str) -> String {
        let v = self.post(
            "/servers",
            json!({"server": {"name": name, "imageRef": stack.image_id,
                "flavorRef": stack.flavor_id, "networks": "none", "host": host}}),
        );
        v["server"]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("boot {name}: no server id in {v}"))
            .to_owned()
    }

    /// One server's details.
    pub fn server(&self, id: &str) -> Value {
        self.get(&format!("/servers/{id}"))["server"].clone()
    }

    /// Every server of every project (admin), details.
    pub fn servers_all(&self) -> Vec<Value> {
        let v = self.get("/servers/detail?all_tenants=1");
        v["servers"].as_array().cloned().unwrap_or_default()
    }

    /// The servers on `host` (all projects).
    pub fn servers_on(&self, host: &str) -> Vec<Value> {
        let v = self.get(&format!("/servers/detail?all_tenants=1&host={host}"));
        v["servers"].as_array().cloned().unwrap_or_default()
    }

    /// Polls until server `id` has `status` (e.g. "ACTIVE", "SHUTOFF") and
    /// no task in progress; panics on ERROR (unless waited for) or after
    /// `timeout`.
    pub fn wait_server(&self, id: &str, status: &str, timeout: Duration) -> Value {
        self.wait_server_on(id, None, status, timeout)
    }

    /// As [`Nova::wait_server`], and also on `host` when given: after an
    /// evacuate call a server may still read ACTIVE on its old host for a
    /// moment, before the rebuild starts.
    pub fn wait_server_on(
        &self,
        id: &str,
        host: Option<&str>,
        status: &str,
        timeout: Duration,
    ) -> Value {
        let mut last = Value::Null;
        let ok = self.wait_until(&format!("server {id} {status}"), timeout, || {
            last = self.server(id);
            let s = last["status"].as_str().unwrap_or("");
            assert!(
                s != "ERROR" || status == "ERROR",
                "server {id} went ERROR: {}",
                last["fault"]
            );
            s == status
                && last["OS-EXT-STS:task_state"].is_null()
                && host.is_none_or(|h| last["OS-EXT-SRV-ATTR:host"] == h)
        });
        assert!(
            ok,
            "server {id} not {status} on {host:?} within {timeout:?}: {last}"
        );
        last
    }

    /// Deletes server `id` (a 404 counts as done).
    pub fn delete_server(&self, id: &str) {
        let (status, v) = self.request(reqwest::Method::DELETE, &format!("/servers/{id}"), None);
        assert!(
            status == 204 || status == 404,
            "delete server {id}: HTTP {status}: {v}"
        );
    }

    /// The nova-compute service of `host`.
    pub fn service(&self, host: &str) -> Value {
        let v = self.get(&format!("/os-services?binary=nova-compute&host={host}"));
        v["services"]
            .as_array()
            .and_then(|a| a.first())
            .cloned()
            .unwrap_or_else(|| panic!("no nova-compute service on {host}: {v}"))
    }

    /// Polls until `host`'s service `state` is "up" or "down".
    pub fn wait_service_state(&self, host: &str, state: &str, timeout: Duration) {
        let ok = self.wait_until(&format!("{host} {state}"), timeout, || {
            self.service(host)["state"] == state
        });
        assert!(
            ok,
            "nova-compute on {host} not {state} within {timeout:?}: {}",
            self.service(host)
        );
    }

    /// Sets `forced_down` of `host`'s service (2.53 PUT /os-services/{id}).
    pub fn force_down(&self, host: &str, forced: bool) -> Value {
        let id = self.service(host)["id"].as_str().expect("id").to_owned();
        self.put(
            &format!("/os-services/{id}"),
            json!({"forced_down": forced}),
        )
    }

    /// Clears `forced_down` of `host`'s service, retrying while Nova
    /// refuses it: it does as long as evacuations from the host are still
    /// `done` (the restarted compute turns them `completed` within seconds).
    pub fn unforce_down(&self, host: &str, timeout: Duration) {
        let id = self.service(host)["id"].as_str().expect("id").to_owned();
        let deadline = Instant::now() + timeout;
        loop {
            let (status, body) = self.request(
                reqwest::Method::PUT,
                &format!("/os-services/{id}"),
                Some(json!({"forced_down": false})),
            );
            if status == 200 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "un-forcing {host}: HTTP {status}: {body}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Enables `host`'s service.
    pub fn enable_service(&self, host: &str) -> Value {
        let id = self.service(host)["id"].as_str().expect("id").to_owned();
        self.put(&format!("/os-services/{id}"), json!({"status": "enabled"}))
    }

    /// Disables `host`'s service with `reason`.
    pub fn disable_service(&self, host: &str, reason: &str) -> Value {
        let id = self.service(host)["id"].as_str().expect("id").to_owned();
        self.put(
            &format!("/os-services/{id}"),
            json!({"status": "disabled", "disabled_reason": reason}),
        )
    }

    /// Evacuates server `id` to `host` (or lets the scheduler pick).
    pub fn evacuate(&self, id: &str, host: Option<&str>) {
        let body = match host {
            Some(h) => json!({"evacuate": {"host": h}}),
            None => json!({"evacuate": {}}),
        };
        self.post(&format!("/servers/{id}/action"), body);
    }

    /// Migration records (`query` e.g. "instance_uuid=...&migration_type=evacuation").
    pub fn migrations(&self, query: &str) -> Vec<Value> {
        let v = self.get(&format!("/os-migrations?{query}"));
        v["migrations"].as_array().cloned().unwrap_or_default()
    }

    /// Polls `check` every 500 ms until true or `timeout`; returns whether
    /// it became true.
    pub fn wait_until(
        &self,
        _what: &str,
        timeout: Duration,
        mut check: impl FnMut() -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if check() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// `tests/openstack/` of this checkout.
pub fn harness_dir() -> PathBuf {
    repo_root().join("tests").join("openstack")
}

struct HttpResponse {
    status: u16,
    body: Value,
    subject_token: Option<String>,
}

/// One blocking HTTP call with reqwest, run on a private runtime in a
/// helper thread so that it works from sync and async tests alike.
fn http(
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
    microversion: Option<&str>,
    body: Option<Value>,
) -> HttpResponse {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    let rt = RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("tokio runtime for the openstack helpers")
    });
    let mut req = reqwest::Client::new()
        .request(method.clone(), url)
        .timeout(Duration::from_secs(120));
    if let Some(t) = token {
        req = req.header("X-Auth-Token", t);
    }
    if let Some(mv) = microversion {
        req = req.header("OpenStack-API-Version", format!("compute {mv}"));
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    std::thread::scope(|s| {
        s.spawn(|| {
            rt.block_on(async {
                let resp = req
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
                let status = resp.status().as_u16();
                let subject_token = resp
                    .headers()
                    .get("X-Subject-Token")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let bytes = resp
                    .bytes()
                    .await
                    .unwrap_or_else(|e| panic!("{method} {url}: reading body: {e}"));
                HttpResponse {
                    status,
                    body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
                    subject_token,
                }
            })
        })
        .join()
        .expect("http helper thread")
    })
}

/// Parses `KEY=VALUE` lines (shell-quoted values with '...' allowed).
fn parse_env(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            let v = v.trim();
            let v = v
                .strip_prefix('\'')
                .and_then(|v| v.strip_suffix('\''))
                .unwrap_or(v);
            (k.trim().to_owned(), v.to_owned())
        })
        .collect()
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_file_parses_quoted_and_plain_values() {
        let env = parse_env("# c\nOS_USERNAME=admin\nOS_COMPUTE_HOSTS='compute-1 compute-2'\n\n");
        assert_eq!(env["OS_USERNAME"], "admin");
        assert_eq!(env["OS_COMPUTE_HOSTS"], "compute-1 compute-2");
        assert_eq!(env.len(), 2);
    }
}
