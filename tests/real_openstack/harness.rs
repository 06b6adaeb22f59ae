//! The shared harness of the real-OpenStack end-to-end tests and of the
//! benchmark (crates/daemon/benches/real_openstack.rs): takes the stack's
//! lease (with the Nova timers the test asks for), starts an SMTP server,
//! seeds the K/V tree with the CLI under the test's own prefix in the
//! stack's Consul (the controller's agent, in the same LAN as every host's
//! agent), runs `novaha run` processes watching the three signals (nova,
//! each host's Consul agent, each host's sshd stand-in), and reads what an
//! operator would (Nova, `novaha status --json`, the BMC logs, the mails).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use novaha_testkit::daemon::novaha;
use novaha_testkit::openstack::{Lease, Nova, OpenStack, Timers};
use novaha_testkit::process::{ChildGuard, free_port, tool};
use novaha_testkit::smtp::{CapturedMessage, SmtpOptions, SmtpServer};
use serde_json::{Value, json};

/// The admins' address in `[[notify]]`.
pub const ADMIN_MAIL: &str = "ops@novaha.test";
/// The address given to the stack's admin user (the servers' owner).
pub const OWNER_MAIL: &str = "cloud-admin@novaha.test";
/// The opt-out metadata key (the `[evacuate]` default).
pub const OPT_OUT: &str = "novaha_opt_out";
/// How long a whole recovery may take on a loaded 2-core machine.
pub const RECOVERY: Duration = Duration::from_secs(240);
/// Boots and state changes of the fake driver.
pub const NOVA: Duration = Duration::from_secs(180);

pub fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_novaha"))
}

/// What varies between the tests' daemon configs.
pub struct Settings {
    /// `[openstack] max_microversion`, when set.
    pub max_microversion: Option<&'static str>,
    /// `[evacuate] concurrency`.
    pub concurrency: usize,
    /// `[evacuate] target` (`ha_node`, `ha_node_then_scheduler`, ...).
    pub target: &'static str,
    /// Nova's heartbeat timers during the test, and novaha's `[monitor]`.
    pub detection: Detection,
}

/// Nova's timers and novaha's detection keys. The daemons always watch
/// the three signals: `nova`, `consul` (each host's agent, `serfHealth`)
/// and `tcp` (each host's sshd stand-in).
#[derive(Clone, Copy, Debug)]
pub struct Detection {
    /// Nova's `report_interval` / `service_down_time`.
    pub timers: Timers,
    /// `[monitor] interval`.
    pub interval: &'static str,
    /// `[monitor] threshold`.
    pub threshold: u32,
    /// `[monitor.nova] stale_after`, when set.
    pub stale_after: Option<&'static str>,
}

impl Detection {
    /// The short timers (down after 8-10 s), a 1 s cycle, threshold 1, no
    /// heartbeat age: detection through Nova's own `down`.
    pub const SHORT: Detection = Detection {
        timers: Timers::SHORT,
        interval: "1s",
        threshold: 1,
        stale_after: None,
    };
    /// Nova's production timers (`report_interval = 10`,
    /// `service_down_time = 60`) with fast detection: a 2 s cycle,
    /// threshold 2, `stale_after = "15s"`.
    pub const PRODUCTION_FAST: Detection = Detection {
        timers: Timers::PRODUCTION,
        interval: "2s",
        threshold: 2,
        stale_after: Some("15s"),
    };
}

/// One `novaha run`, killed (SIGKILL) when dropped and also when the test
/// process dies (`setpriv --pdeathsig KILL`): a daemon left behind would
/// act on the shared stack during the next test.
pub struct Daemon {
    pub id: String,
    pub log: PathBuf,
    pub guard: ChildGuard,
}

impl Daemon {
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Everything one test runs besides the shared stack. Field order is drop
/// order: the daemons go first, the lease (the stack) last.
pub struct Harness<'a> {
    pub daemons: Vec<Daemon>,
    pub smtp: SmtpServer,
    pub dir: tempfile::TempDir,
    pub prefix: String,
    pub nova: Nova,
    /// Each host's BMC call log length when the test started: the logs
    /// belong to the shared stack and outlive tests.
    bmc_log_start: BTreeMap<String, usize>,
    pub stack: Lease<'a>,
}

impl<'a> Harness<'a> {
    /// Takes the lease (Nova at the timers of `settings`), starts SMTP,
    /// gives the servers' owner an e-mail address, seeds the K/V tree
    /// (every compute's BMC, the HA node) with the CLI, and writes the
    /// configs. No daemon runs yet.
    pub fn start(prefix: &str, settings: Settings) -> Self {
        let stack = OpenStack::shared().lease_with(settings.detection.timers);
        let nova = stack.nova();
        let smtp = SmtpServer::start(SmtpOptions::default());
        let dir = tempfile::tempdir().unwrap();
        let bmc_log_start = stack
            .all_hosts()
            .into_iter()
            .map(|host| {
                let len =
                    std::fs::read_to_string(stack.bmc(&host).calls_log).map_or(0, |s| s.len());
                (host, len)
            })
            .collect();
        let h = Harness {
            daemons: Vec::new(),
            smtp,
            dir,
            prefix: prefix.to_owned(),
            nova,
            bmc_log_start,
            stack,
        };
        // The stack's Consul outlives tests: start from an empty tree under
        // this test's prefix (a killed earlier run may have left one).
        let (status, body) =
            h.stack
                .consul_http("DELETE", &format!("/v1/kv/{}?recurse", h.prefix), b"");
        assert_eq!(
            status,
            200,
            "clear {}: {}",
            h.prefix,
            String::from_utf8_lossy(&body)
        );
        h.set_owner_email();
        for id in ["admin", "a", "b"] {
            h.write_config(id, &settings);
        }
        let admin = h.config_path("admin");
        let admin = admin.to_str().unwrap();
        for host in &h.stack.computes {
            let bmc = h.stack.bmc(host);
            let port = bmc.port.to_string();
            let pw = bmc.password_file.to_str().unwrap().to_owned();
            let o = novaha(
                bin(),
                &[
                    "node",
                    "register",
                    host,
                    "--bmc-driver",
                    "ipmi",
                    "--bmc-ip",
                    "127.0.0.1",
                    "--bmc-port",
                    &port,
                    "--bmc-user",
                    &bmc.user,
                    "--bmc-password-file",
                    &pw,
                    "-c",
                    admin,
                ],
            );
            assert!(
                o.status.success(),
                "node register {host}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        let o = novaha(
            bin(),
            &["ha-node", "register", &h.stack.ha_host, "-c", admin],
        );
        assert!(
            o.status.success(),
            "ha-node register: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        h
    }

    /// What `host`'s BMC was asked since this test started.
    pub fn bmc_calls(&self, host: &str) -> String {
        let all = std::fs::read_to_string(self.stack.bmc(host).calls_log).unwrap_or_default();
        let from = self.bmc_log_start.get(host).copied().unwrap_or(0);
        all.get(from..).unwrap_or_default().to_owned()
    }

    pub fn failed(&self) -> &str {
        &self.stack.computes[0]
    }

    pub fn ha(&self) -> &str {
        &self.stack.ha_host
    }

    pub fn config_path(&self, id: &str) -> PathBuf {
        self.dir.path().join(format!("{id}.toml"))
    }

    pub fn write_config(&self, id: &str, s: &Settings) {
        let mv = s
            .max_microversion
            .map(|v| format!("max_microversion = \"{v}\"\n"))
            .unwrap_or_default();
        let d = s.detection;
        let stale = d
            .stale_after
            .map(|v| format!("stale_after = \"{v}\"\n"))
            .unwrap_or_default();
        let addresses = self
            .stack
            .all_hosts()
            .iter()
            .map(|h| format!("\"{h}\" = \"{}\"", self.stack.host_ip(h)))
            .collect::<Vec<_>>()
            .join(", ");
        let text = format!(
            r#"[consul]
address = "{consul}"
prefix = "{prefix}"
request_timeout = "5s"

[election]
session_ttl = "10s"
lock_delay = "1s"
check_ttl = "2s"
id = "{id}"

[openstack]
cloud = "{cloud}"
clouds_file = "{clouds}"
timeout = "60s"
{mv}
[monitor]
interval = "{interval}"
threshold = {threshold}
signals = ["nova", "consul", "tcp"]

[monitor.nova]
{stale}
[monitor.consul]
checks = ["serfHealth"]
timeout = "2s"

[monitor.tcp]
port = {ssh_port}
timeout = "1s"
addresses = {{ {addresses} }}

[fence]
driver = "ipmi"
confirm_timeout = "30s"
poll_interval = "500ms"

[fence.ipmi]
session_timeout = "1s"
retries = 2
command_timeout = "20s"

[evacuate]
target = "{target}"
concurrency = {concurrency}
poll_interval = "500ms"
timeout = "3m"
# The fake driver's instances are image-backed: declared shared so they move.
shared_storage = true

[recovery]
backoff_initial = "500ms"
backoff_max = "2s"

[[notify]]
driver = "email"
smtp_url = "smtp://127.0.0.1:{smtp}?tls=none"
from = "novaha@novaha.test"
admins = ["{admin_mail}"]

[http]
listen = "127.0.0.1:{http}"

[log]
format = "text"
level = "info"
"#,
            consul = self.stack.consul_addr,
            interval = d.interval,
            threshold = d.threshold,
            ssh_port = self.stack.ssh_port(&self.stack.computes[0]),
            prefix = self.prefix,
            cloud = OpenStack::CLOUD,
            clouds = self.stack.clouds_yaml.display(),
            concurrency = s.concurrency,
            target = s.target,
            smtp = self.smtp.port(),
            admin_mail = ADMIN_MAIL,
            http = free_port(),
        );
        std::fs::write(self.config_path(id), text).unwrap();
    }

    /// Gives the stack's admin user (who boots the servers, so their
    /// owner) an e-mail address, as an operator would with the CLI.
    pub fn set_owner_email(&self) {
        let venv = self.stack.env.get("VENV").expect("VENV in the stack's env");
        let out = Command::new(Path::new(venv).join("bin").join("openstack"))
            .args(["--os-cloud", OpenStack::CLOUD, "user", "set", "--email"])
            .args([OWNER_MAIL, &self.stack.username])
            .env("OS_CLIENT_CONFIG_FILE", &self.stack.clouds_yaml)
            .stdin(Stdio::null())
            .output()
            .expect("run the openstack CLI");
        assert!(
            out.status.success(),
            "openstack user set --email: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts `novaha run` with config `id`.
    pub fn spawn(&mut self, id: &str) {
        let log = self.dir.path().join(format!("{id}.log"));
        let out = File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let mut cmd = Command::new(tool("NOVAHA_SETPRIV", &["/usr/bin/setpriv"], "setpriv"));
        cmd.args(["--pdeathsig", "KILL", "--"])
            .arg(bin())
            .arg("run")
            .arg("-c")
            .arg(self.config_path(id))
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let guard = ChildGuard::spawn(&format!("novaha {id}"), &mut cmd);
        self.daemons.push(Daemon {
            id: id.to_owned(),
            log,
            guard,
        });
    }

    pub fn logs(&self) -> String {
        self.daemons
            .iter()
            .map(|d| {
                // Every second's "leader cycle done" would bury the rest.
                let log: String = d
                    .log()
                    .lines()
                    .filter(|l| !l.contains("leader cycle done"))
                    .map(|l| format!("{l}\n"))
                    .collect();
                format!("--- novaha {} ---\n{}", d.id, tail(&log, 120))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// `novaha status --json` (exit 0, or 4 when something needs a human:
    /// the document says what).
    pub fn status(&self) -> Value {
        let cfg = self.config_path("admin");
        let o = novaha(bin(), &["status", "--json", "-c", cfg.to_str().unwrap()]);
        assert!(
            matches!(o.status.code(), Some(0 | 4)),
            "novaha status: {:?}: {}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
        serde_json::from_slice(&o.stdout).unwrap()
    }

    /// Polls the status until `check` holds; panics with the daemons' logs.
    pub fn wait_status(
        &self,
        what: &str,
        timeout: Duration,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.status();
            if check(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within {timeout:?}\nstatus: {s:#}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Waits until a daemon holds the lock and the failed node is known
    /// (novaha created its keys from Nova's service list).
    pub fn wait_watching(&self) -> String {
        let failed = self.failed().to_owned();
        let s = self.wait_status(
            "a leader watching the computes",
            Duration::from_secs(60),
            |s| s["leader"]["id"].is_string() && s["compute_nodes"][&failed]["failed"] == false,
        );
        s["leader"]["id"].as_str().unwrap().to_owned()
    }

    /// The raw value of `key` in the stack's Consul.
    pub fn kv_get(&self, key: &str) -> Option<Vec<u8>> {
        let (status, body) = self
            .stack
            .consul_http("GET", &format!("/v1/kv/{key}?raw"), b"");
        match status {
            200 => Some(body),
            404 => None,
            s => panic!(
                "consul GET {key}: HTTP {s}: {}",
                String::from_utf8_lossy(&body)
            ),
        }
    }

    /// PUTs raw bytes at `key` in the stack's Consul (no CAS), as an
    /// operator would in the UI.
    pub fn kv_put(&self, key: &str, value: &[u8]) {
        let (status, body) = self
            .stack
            .consul_http("PUT", &format!("/v1/kv/{key}"), value);
        assert_eq!(
            (status, String::from_utf8_lossy(&body).trim()),
            (200, "true"),
            "consul PUT {key}"
        );
    }

    /// The K/V value at `rel` under the prefix, as JSON.
    pub fn kv_json(&self, rel: &str) -> Option<Value> {
        self.kv_get(&format!("{}/{rel}", self.prefix))
            .map(|raw| serde_json::from_slice(&raw).unwrap())
    }

    /// The failed node's live recovery record.
    pub fn record(&self) -> Option<Value> {
        self.kv_json(&format!(
            "compute_nodes/{}/internal/recovery",
            self.failed()
        ))
    }

    /// Boots `specs` (name, prior status ACTIVE|SHUTOFF, opted out) on the
    /// node to fail and brings each to its status there.
    pub fn boot_all(&self, specs: &[(&str, &str, bool)]) -> Vec<Server> {
        let servers: Vec<Server> = specs
            .iter()
            .map(|&(name, status, opt_out)| Server {
                id: self.nova.boot_on(&self.stack, name, self.failed()),
                name: name.to_owned(),
                status: status.to_owned(),
                opt_out,
            })
            .collect();
        for s in &servers {
            self.nova
                .wait_server_on(&s.id, Some(self.failed()), "ACTIVE", NOVA);
            if s.opt_out {
                // Nova refuses metadata while the server builds.
                self.nova.post(
                    &format!("/servers/{}/metadata", s.id),
                    json!({"metadata": { OPT_OUT: "true" }}),
                );
            }
        }
        for s in servers.iter().filter(|s| s.status == "SHUTOFF") {
            self.nova.post(
                &format!("/servers/{}/action", s.id),
                json!({"os-stop": null}),
            );
            self.nova
                .wait_server_on(&s.id, Some(self.failed()), "SHUTOFF", NOVA);
        }
        servers
    }

    /// Evacuation migration records of `id`.
    pub fn evacuations(&self, id: &str) -> Vec<Value> {
        self.nova
            .migrations(&format!("instance_uuid={id}&migration_type=evacuation"))
    }

    /// The actions Nova recorded on server `id`, oldest first.
    pub fn actions(&self, id: &str) -> Vec<String> {
        let v = self.nova.get(&format!("/servers/{id}/os-instance-actions"));
        let mut acts: Vec<(String, String)> = v["instanceActions"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|a| {
                (
                    a["start_time"].as_str().unwrap_or("").to_owned(),
                    a["action"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect();
        acts.sort();
        acts.into_iter().map(|(_, a)| a).collect()
    }

    /// Polls until the failed node's recovery is `done`.
    pub fn wait_done(&self) -> Value {
        let failed = self.failed().to_owned();
        self.wait_status("the recovery done", RECOVERY, |s| {
            let n = &s["compute_nodes"][&failed];
            assert!(
                n["phase"] != "stuck",
                "recovery stuck: {n:#}\n{}",
                self.logs()
            );
            n["phase"] == "done"
        })
    }

    /// Every check of a finished recovery of the failed node onto the HA
    /// node, from the outside: Nova, the K/V tree, the BMC. `starts`: the
    /// servers novaha had to start after evacuating (2.95+).
    pub fn assert_recovered(&self, servers: &[Server], starts: bool) {
        let failed = self.failed();
        let ha = self.ha();
        let st = self.status();
        let node = &st["compute_nodes"][failed];
        assert_eq!(node["failed"], true, "{node:#}");
        assert_eq!(node["recovered"], true, "{node:#}");
        assert_eq!(node["ha_node"], ha, "{node:#}");
        assert_eq!(st["ha_nodes"][ha]["in_use"], true, "{st:#}");
        for other in &self.stack.computes[1..] {
            assert_eq!(
                st["compute_nodes"][other]["failed"], false,
                "{other} untouched: {st:#}"
            );
        }

        // Fenced: the BMC saw exactly one power-off, of this node only.
        let bmc = self.stack.bmc(failed);
        assert_eq!(
            std::fs::read_to_string(&bmc.power_file).unwrap().trim(),
            "0",
            "{failed}'s chassis is off"
        );
        let calls = self.bmc_calls(failed);
        assert_eq!(
            calls.matches("set power 0").count(),
            1,
            "one power-off of {failed}: {calls}"
        );
        for other in &self.stack.computes[1..] {
            let calls = self.bmc_calls(other);
            assert!(
                !calls.contains("set power 0"),
                "{other} powered off: {calls}"
            );
        }

        // Forced down and disabled in Nova; the HA node enabled.
        let svc = self.nova.service(failed);
        assert_eq!(svc["forced_down"], true, "{svc}");
        assert_eq!(svc["status"], "disabled", "{svc}");
        assert_eq!(self.nova.service(ha)["status"], "enabled");

        // The record: every instance listed, each done or skipped.
        let rec = self.record().expect("the record stays until the reset");
        assert_eq!(rec["phase"], "done", "{rec:#}");
        assert_eq!(rec["fence"]["driver"], "ipmi", "{rec:#}");
        let listed: Vec<&String> = rec["instances"].as_object().unwrap().keys().collect();
        assert_eq!(
            listed.len(),
            servers.len(),
            "every instance recorded: {rec:#}"
        );

        for s in servers {
            let server = self.nova.server(&s.id);
            let host = server["OS-EXT-SRV-ATTR:host"].as_str().unwrap_or("");
            let evacs = self.evacuations(&s.id);
            let r = &rec["instances"][&s.id];
            if s.opt_out {
                assert_eq!(host, failed, "{} opted out, stays: {server}", s.name);
                assert!(evacs.is_empty(), "{} never evacuated: {evacs:?}", s.name);
                assert_eq!(r["state"], "skipped", "{}: {r}", s.name);
                continue;
            }
            assert_eq!(host, ha, "{} on the HA node: {server}", s.name);
            assert_eq!(
                server["status"],
                s.status.as_str(),
                "{} back in its prior state: {server}",
                s.name
            );
            assert!(server["OS-EXT-STS:task_state"].is_null(), "{server}");
            assert_eq!(evacs.len(), 1, "one evacuation of {}: {evacs:?}", s.name);
            assert_eq!(evacs[0]["source_compute"], failed, "{}", evacs[0]);
            assert_eq!(evacs[0]["dest_compute"], ha, "{}", evacs[0]);
            assert!(
                matches!(evacs[0]["status"].as_str(), Some("done" | "completed")),
                "{}",
                evacs[0]
            );
            assert_eq!(r["state"], "done", "{}: {r}", s.name);
            assert_eq!(r["prior_status"], s.status.as_str(), "{}: {r}", s.name);
            let acts = self.actions(&s.id);
            let after = acts
                .iter()
                .skip_while(|a| a.as_str() != "evacuate")
                .skip(1)
                .filter(|a| a.as_str() == "start")
                .count();
            let want = usize::from(starts && s.status == "ACTIVE");
            assert_eq!(
                after, want,
                "{}: {want} start after the evacuation; actions {acts:?}",
                s.name
            );
        }
    }

    /// The admins' summary and the owner's message name every instance
    /// (the owner's: every one that was evacuated).
    pub fn assert_mails(&self, servers: &[Server]) {
        let evacuated: Vec<&Server> = servers.iter().filter(|s| !s.opt_out).collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        let find = |to: &str| -> Option<CapturedMessage> {
            self.smtp
                .messages()
                .into_iter()
                .find(|m| m.rcpt_tos.iter().any(|r| r == to))
        };
        let (admin, owner) = loop {
            if let (Some(a), Some(o)) = (find(ADMIN_MAIL), find(OWNER_MAIL)) {
                break (a, o);
            }
            assert!(
                Instant::now() < deadline,
                "mails to {ADMIN_MAIL} and {OWNER_MAIL}: got {:?}\n{}",
                self.smtp
                    .messages()
                    .iter()
                    .map(|m| (m.rcpt_tos.clone(), m.subject.clone()))
                    .collect::<Vec<_>>(),
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(250));
        };
        let failed = self.failed();
        assert!(admin.subject.contains(failed), "{}", admin.subject);
        let text = admin.text.clone().unwrap_or_default();
        for s in servers {
            assert!(text.contains(&s.id), "admin mail names {}:\n{text}", s.name);
        }
        let text = owner.text.clone().unwrap_or_default();
        for s in evacuated {
            assert!(text.contains(&s.id), "owner mail names {}:\n{text}", s.name);
        }
        let to_admins = self
            .smtp
            .messages()
            .iter()
            .filter(|m| m.rcpt_tos.iter().any(|r| r == ADMIN_MAIL))
            .count();
        assert_eq!(to_admins, 1, "one summary to the admins");
    }
}

/// A server the test booted, and what it expects of it.
#[derive(Clone, Debug)]
pub struct Server {
    pub id: String,
    pub name: String,
    /// Its status before the failure (ACTIVE | SHUTOFF).
    pub status: String,
    pub opt_out: bool,
}

pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
