//! `novaha demo`: the README's first command. It tells the whole story on
//! one machine with no config file: a real Consul dev agent, the simulator
//! (3 compute hosts, 1 HA node, 10 instances) in this process, two real
//! `novaha run` daemons (children of this executable), one compute host
//! killed, and the recovery narrated phase by phase from what can be read
//! from outside (the K/V tree and the simulator), ending with every
//! instance on the HA node and the `novaha status` table.
//!
//! It owns only what it starts: the agent and the daemons (each in its own
//! process group, so a terminal's Ctrl-C reaches only the demo, which then
//! stops them in order), the simulator and one temp dir. It must never
//! touch a Consul, a cloud or a file it did not create, and never run with
//! a real fencer: the daemons' config says `driver = "noop"` and the
//! narration says plainly that nothing was powered off.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use novaha_consul::{Consul, ConsulStore, Election, LeaderInfo};
use novaha_core::NodeName;
use novaha_core::kv::{ClusterState, Schema};
use novaha_core::record::{InstanceState, Phase};
use novaha_core::store::StateStore;
use novaha_sim::{Sim, SimConfig, SimHandle};
use rustix::process::Signal;
use tokio_util::sync::CancellationToken;

use crate::admin::{self, BmcArgs};
use crate::config::Config;

/// The Consul version `scripts/deps/consul.sh` installs.
pub const CONSUL_VERSION: &str = "1.8.7";
/// The environment variable naming a Consul binary to use.
pub const CONSUL_BIN_ENV: &str = "NOVAHA_CONSUL_BIN";
/// The K/V prefix of the demo (the fixed default).
const PREFIX: &str = "ha_cluster";
/// The compute host the demo kills.
pub const VICTIM: &str = "compute-1";
/// The HA (spare) node of the demo.
pub const HA_NODE: &str = "ha-1";
/// How long a killed host's service takes to read `down` in the sim.
const SERVICE_DOWN_TIME: Duration = Duration::from_secs(3);
/// How long an evacuation takes to land in the sim (visible, not slow).
const EVACUATE_DELAY: Duration = Duration::from_millis(1500);
/// `[monitor] threshold` of the demo: failed after 3 failing cycles.
const THRESHOLD: u32 = 2;
/// How long the whole recovery may take before the demo gives up.
const RECOVERY_DEADLINE: Duration = Duration::from_secs(60);
/// How long the start-up (agent ready, a leader elected) may take.
const START_DEADLINE: Duration = Duration::from_secs(30);
/// How often the demo reads the K/V tree and the sim.
const WATCH_EVERY: Duration = Duration::from_millis(200);
/// How long a stopped child may take to exit after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// What `novaha demo` was asked to do.
#[derive(Clone, Debug, Default)]
pub struct DemoOptions {
    /// Leave everything running at the end (until Ctrl-C) to explore the
    /// Consul UI and try `novaha status`, `novaha node reset`, ...
    pub keep: bool,
}

/// The demo's own log: warnings only (the story says it all).
pub fn init_logging() {
    crate::logging::init(&crate::config::LogConfig {
        format: crate::config::LogFormat::Text,
        level: "warn".to_owned(),
    });
}

/// Prints one line of the story at once (stdout is often a pipe).
fn say(line: impl AsRef<str>) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    // A closed stdout must not stop the demo from cleaning up.
    let _ = writeln!(out, "{}", line.as_ref());
    let _ = out.flush();
}

/// The repository this binary was built from, when it is still there (for
/// the Consul cache and `scripts/deps/consul.sh`).
fn repo_root() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).ancestors().nth(2)?;
    root.join("scripts/deps/consul.sh")
        .is_file()
        .then(|| root.to_path_buf())
}

/// The cache dir `scripts/lib.sh` uses: `$NOVAHA_CACHE`, else `<repo>/.cache`.
fn cache_dir() -> Option<PathBuf> {
    std::env::var_os("NOVAHA_CACHE")
        .map(PathBuf::from)
        .or_else(|| repo_root().map(|r| r.join(".cache")))
}

fn cached_consul() -> Option<PathBuf> {
    let p = cache_dir()?.join(format!("consul-{CONSUL_VERSION}/usr/bin/consul"));
    p.is_file().then_some(p)
}

fn consul_on_path() -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join("consul"))
        .find(|p| p.is_file())
}

/// Finds a Consul binary, fetching it with `scripts/deps/consul.sh` when it
/// is missing; says which one it uses and how it found it.
pub async fn find_consul() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os(CONSUL_BIN_ENV) {
        let p = PathBuf::from(p);
        if !p.is_file() {
            bail!("{CONSUL_BIN_ENV}={} is not a file", p.display());
        }
        say(format!("consul: {} (from {CONSUL_BIN_ENV})", p.display()));
        return Ok(p);
    }
    if let Some(p) = cached_consul() {
        say(format!(
            "consul: {} (cached by scripts/deps/consul.sh)",
            p.display()
        ));
        return Ok(p);
    }
    if let Some(p) = consul_on_path() {
        say(format!("consul: {} (from PATH)", p.display()));
        return Ok(p);
    }
    let Some(root) = repo_root() else {
        bail!(
            "no consul found: set {CONSUL_BIN_ENV}, put consul on PATH, or run \
             scripts/deps/consul.sh from the novaha repository"
        );
    };
    let script = root.join("scripts/deps/consul.sh");
    say(format!(
        "consul: not found; fetching Consul {CONSUL_VERSION} from Debian with {} (about 10 s)",
        script.display()
    ));
    let status = tokio::process::Command::new("bash")
        .arg(&script)
        .stdin(Stdio::null())
        .status()
        .await
        .with_context(|| format!("run {}", script.display()))?;
    if !status.success() {
        bail!("{} failed ({status})", script.display());
    }
    let p = cached_consul().with_context(|| {
        format!(
            "{} ran but no consul binary is in the cache",
            script.display()
        )
    })?;
    say(format!("consul: {} (just fetched)", p.display()));
    Ok(p)
}

/// A child process the demo started: in its own process group, its output
/// in a log file, stopped with SIGTERM then SIGKILL. `kill_on_drop` is the
/// backstop when the demo fails early.
struct Proc {
    name: String,
    child: tokio::process::Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &str, cmd: &mut tokio::process::Command, log: &Path) -> anyhow::Result<Self> {
        let out =
            std::fs::File::create(log).with_context(|| format!("create {}", log.display()))?;
        let err = out.try_clone().context("clone a log file handle")?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {name}"))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            log: log.to_path_buf(),
        })
    }

    fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// True while it runs.
    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The last lines of its log.
    fn tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// `signal` (SIGTERM for a daemon: it resigns; SIGINT for Consul: it
    /// leaves), wait up to `grace`, then SIGKILL. Returns how it ended.
    async fn stop(&mut self, signal: Signal, grace: Duration) -> String {
        if let Ok(Some(st)) = self.child.try_wait() {
            return format!("{} had already exited ({st})", self.name);
        }
        let pid = self
            .pid()
            .and_then(|p| i32::try_from(p).ok())
            .and_then(rustix::process::Pid::from_raw);
        if let Some(pid) = pid {
            let _ = rustix::process::kill_process(pid, signal);
        }
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(Ok(st)) => format!("{} stopped ({st})", self.name),
            Ok(Err(e)) => format!("{} could not be waited for: {e}", self.name),
            Err(_) => {
                let _ = self.child.kill().await;
                format!("{} did not stop within {grace:?}: killed", self.name)
            }
        }
    }
}

/// Free loopback TCP ports, all distinct.
fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    // Hold every listener until all are picked so that none repeats.
    let listeners = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .context("bind 127.0.0.1:0 to find a free port")?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<Vec<_>, _>>()
        .context("read a bound port")
}

/// Starts a Consul dev agent on free loopback ports in `dir` and waits until
/// it leads and its node passes `serfHealth` (sessions need it).
async fn start_consul(
    bin: &Path,
    dir: &Path,
    cancel: &CancellationToken,
) -> anyhow::Result<(Proc, u16)> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .context("build an HTTP client")?;
    let node = "novaha-demo";
    let mut last = String::new();
    for attempt in 1..=3 {
        let ports = free_ports(4)?;
        let data = dir.join(format!("consul-data-{attempt}"));
        std::fs::create_dir_all(&data).with_context(|| format!("create {}", data.display()))?;
        let mut cmd = tokio::process::Command::new(bin);
        cmd.args([
            "agent",
            "-dev",
            "-ui",
            "-bind",
            "127.0.0.1",
            "-client",
            "127.0.0.1",
        ])
        .args(["-node", node])
        .arg(format!("-data-dir={}", data.display()))
        .arg(format!("-http-port={}", ports[0]))
        .args(["-dns-port=-1", "-grpc-port=-1"])
        .arg(format!("-serf-lan-port={}", ports[1]))
        .arg(format!("-serf-wan-port={}", ports[2]))
        .arg(format!("-server-port={}", ports[3]))
        .env_remove("CONSUL_HTTP_ADDR")
        .env_remove("CONSUL_HTTP_TOKEN");
        let mut proc = Proc::spawn("consul agent", &mut cmd, &dir.join("consul.log"))?;
        let base = format!("http://127.0.0.1:{}", ports[0]);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline && proc.running() {
            let leader = http.get(format!("{base}/v1/status/leader")).send().await;
            let leads = match leader {
                Ok(r) if r.status().is_success() => r.text().await.is_ok_and(|t| t.len() > 2),
                _ => false,
            };
            if leads {
                let health = http
                    .get(format!("{base}/v1/health/node/{node}"))
                    .send()
                    .await;
                if let Ok(r) = health
                    && let Ok(t) = r.text().await
                    && t.contains("serfHealth")
                    && t.contains("passing")
                {
                    return Ok((proc, ports[0]));
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => bail!("interrupted while the consul agent started"),
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
        last = proc.tail(20);
        proc.stop(Signal::INT, STOP_GRACE).await;
        say(format!(
            "consul agent start attempt {attempt} failed; retrying with other ports"
        ));
    }
    bail!("the consul agent did not get ready; its log ends with:\n{last}")
}

/// The demo's config for one daemon (`id`): everything inline, short timers,
/// the noop fencer explicitly allowed, a log notifier, HTTP on a free port.
pub fn config_text(consul: &str, sim: &SimHandle, id: &str) -> String {
    let c = sim.credentials();
    format!(
        r#"# written by `novaha demo`: a throw-away config for one demo daemon
[consul]
address = "{consul}"
prefix = "{PREFIX}"
request_timeout = "5s"

[election]
id = "{id}"
session_ttl = "10s"
lock_delay = "1s"
check_ttl = "2s"

[openstack]
region_name = "{region}"
timeout = "10s"

[openstack.auth]
auth_url = "{auth_url}"
username = "{username}"
password = "{password}"
project_name = "{project}"
user_domain_name = "{udomain}"
project_domain_name = "{pdomain}"

[monitor]
interval = "1s"
threshold = {THRESHOLD}

# The demo has no BMC: the noop fencer powers nothing off. Never in production.
[fence]
driver = "noop"
allow_noop = true

[evacuate]
target = "ha_node"
poll_interval = "500ms"
# The demo cloud's instances are image-backed; their disks are declared to be
# on storage every compute shares, so they keep them when evacuated.
shared_storage = true

[[notify]]
driver = "log"

[http]
listen = "127.0.0.1:0"

[log]
format = "text"
level = "info"
"#,
        region = c.region_name,
        auth_url = c.auth_url,
        username = c.username,
        password = c.password,
        project = c.project_name,
        udomain = c.user_domain_name,
        pdomain = c.project_domain_name,
    )
}

/// Writes `text` to `path`, readable by the owner only (it holds the sim's
/// password).
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("create {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("write {}", path.display()))
}

/// What the narration has already told about the recovery, to print only
/// what changed. Fed from the K/V tree ([`Story::kv`]) and the simulator
/// ([`Story::sim`]).
#[derive(Debug)]
pub struct Story {
    node: NodeName,
    threshold: u32,
    /// Instance id -> name, for the instances on the node when it died.
    names: BTreeMap<String, String>,
    fails: BTreeMap<NodeName, u32>,
    failed: bool,
    recovered: bool,
    phase: Option<Phase>,
    in_use: BTreeMap<NodeName, bool>,
    instances: BTreeMap<String, InstanceState>,
    nova_down: bool,
    forced_down: bool,
    ha_enabled: bool,
    evacuate_calls: usize,
    landed: BTreeSet<String>,
}

impl Story {
    /// A story about `node`, whose instances at failure time are `names`
    /// (id -> name); `ha_enabled` is the HA node's Nova state at the start.
    pub fn new(
        node: &str,
        threshold: u32,
        names: BTreeMap<String, String>,
        ha_enabled: bool,
    ) -> Self {
        Self {
            node: NodeName::new(node),
            threshold,
            names,
            fails: BTreeMap::new(),
            failed: false,
            recovered: false,
            phase: None,
            in_use: BTreeMap::new(),
            instances: BTreeMap::new(),
            nova_down: false,
            forced_down: false,
            ha_enabled,
            evacuate_calls: 0,
            landed: BTreeSet::new(),
        }
    }

    fn name(&self, id: &str) -> String {
        self.names.get(id).map_or_else(
            || id.to_owned(),
            |n| format!("{n} ({})", &id[..id.len().min(8)]),
        )
    }

    /// The phase reached so far.
    pub fn phase(&self) -> Option<Phase> {
        self.phase
    }

    /// What changed in the K/V tree since the last call, as story lines.
    pub fn kv(&mut self, state: &ClusterState) -> Vec<String> {
        let mut out = Vec::new();
        for (name, n) in &state.compute_nodes {
            let fails = n.number_fails.get().unwrap_or(0);
            let before = self.fails.insert(name.clone(), fails).unwrap_or(0);
            if fails != before && (fails > 0 || name == &self.node) {
                out.push(format!(
                    "consul: {name} number_fails = {fails} (failed when > threshold {})",
                    self.threshold
                ));
            }
            if let Err(bad) = &n.recovery.value {
                out.push(format!(
                    "consul: {name} has an invalid value at {}: {}",
                    bad.key, bad.reason
                ));
            }
        }
        for (name, h) in &state.ha_nodes {
            let in_use = h.in_use.get().unwrap_or(false);
            if self.in_use.insert(name.clone(), in_use) != Some(in_use) && in_use {
                let serving = h.serving.as_ref().map_or("?", |s| s.as_str());
                out.push(format!(
                    "consul: HA node {name} in_use = True (serving {serving})"
                ));
            }
        }
        let Some(n) = state.compute_nodes.get(&self.node) else {
            return out;
        };
        if !self.failed && n.failed.get() == Some(true) {
            self.failed = true;
            out.push(format!("consul: {} failed = True: judged dead", self.node));
        }
        if !self.recovered && n.recovered.get() == Some(true) {
            self.recovered = true;
            out.push(format!(
                "consul: {} recovered = True: the latch, no second recovery will start",
                self.node
            ));
        }
        let Ok(Some(rec)) = &n.recovery.value else {
            return out;
        };
        let ha = rec
            .ha_node
            .as_ref()
            .map_or("the scheduler's choice", |h| h.as_str());
        let reached = rec.phase;
        let from = self.phase;
        let steps = [
            Phase::Claimed,
            Phase::Fenced,
            Phase::ForcedDown,
            Phase::Evacuating,
            Phase::Evacuated,
            Phase::Notified,
            Phase::Done,
        ];
        // Phase lines up to `evacuating`, then the instances, then the rest.
        let mut later = Vec::new();
        for step in steps {
            if from.is_some_and(|f| f >= step) || (reached != Phase::Stuck && step > reached) {
                continue;
            }
            if reached == Phase::Stuck && rec.timeline.keys().all(|k| k != phase_key(step)) {
                continue;
            }
            let line = match step {
                Phase::Claimed => format!(
                    "phase claimed: HA node {ha} taken for {} (incident {})",
                    self.node, rec.incident
                ),
                Phase::Fenced => match rec.fence.as_ref().map(|f| f.driver.as_str()) {
                    Some("noop") | None => {
                        "phase fenced: by the NOOP driver: nothing was powered off \
                         (demo only, allowed by allow_noop = true; production fences \
                         through IPMI, Redfish or libvirt and verifies power off)"
                            .to_owned()
                    }
                    Some(d) => format!("phase fenced: {d} verified the power is off"),
                },
                Phase::ForcedDown => format!(
                    "phase forced_down: nova-compute on {} forced down and disabled",
                    self.node
                ),
                Phase::Evacuating => format!(
                    "phase evacuating: {} instance(s) to move to {ha}",
                    rec.instances.len()
                ),
                Phase::Evacuated => {
                    let count =
                        |s: InstanceState| rec.instances.values().filter(|i| i.state == s).count();
                    format!(
                        "phase evacuated: {} done, {} error, {} skipped",
                        count(InstanceState::Done),
                        count(InstanceState::Error),
                        count(InstanceState::Skipped)
                    )
                }
                Phase::Notified => {
                    "phase notified: owners and admins told (log notifier)".to_owned()
                }
                Phase::Done => format!(
                    "phase done: the record is kept under {}/incidents/{}",
                    self.node, rec.incident
                ),
                Phase::Stuck => continue,
            };
            if step > Phase::Evacuating {
                later.push(line);
            } else {
                out.push(line);
            }
        }
        for (id, inst) in &rec.instances {
            if self.instances.insert(id.clone(), inst.state) == Some(inst.state) {
                continue;
            }
            let name = self.name(id);
            match inst.state {
                InstanceState::Pending => {}
                InstanceState::Requested => out.push(format!("  evacuate requested: {name}")),
                InstanceState::Done => out.push(format!(
                    "  evacuated: {name} -> {} ({})",
                    inst.target.as_deref().unwrap_or("?"),
                    inst.prior_status
                )),
                InstanceState::Error => out.push(format!(
                    "  evacuation FAILED: {name}: {}",
                    inst.error.as_deref().unwrap_or("no detail")
                )),
                InstanceState::Skipped => out.push(format!("  skipped on purpose: {name}")),
            }
        }
        out.extend(later);
        if reached == Phase::Stuck && from != Some(Phase::Stuck) {
            out.push(format!(
                "phase STUCK: {}",
                rec.last_error.as_deref().unwrap_or("no detail recorded")
            ));
        }
        self.phase = Some(reached);
        out
    }

    /// Whether Nova newly reads the node down (told before the K/V lines:
    /// it is what the monitor reacts to).
    pub fn nova_down(&mut self, sim: &SimHandle) -> Vec<String> {
        match sim.service(self.node.as_str()) {
            Some((_, "down")) if !self.nova_down && !self.forced_down => {
                self.nova_down = true;
                vec![format!(
                    "nova: nova-compute on {} reads down (no heartbeat for {}s)",
                    self.node,
                    SERVICE_DOWN_TIME.as_secs()
                )]
            }
            _ => Vec::new(),
        }
    }

    /// What else changed in the simulated cloud since the last call.
    pub fn sim(&mut self, sim: &SimHandle, ha_node: &str) -> Vec<String> {
        let mut out = Vec::new();
        if let Some((svc, _)) = sim.service(self.node.as_str()) {
            if !self.forced_down && svc.forced_down {
                self.forced_down = true;
                out.push(format!(
                    "nova: {} forced_down = true, disabled ({})",
                    self.node,
                    svc.disabled_reason.as_deref().unwrap_or("no reason")
                ));
            }
        }
        if let Some((svc, _)) = sim.service(ha_node)
            && !self.ha_enabled
            && !svc.disabled
        {
            self.ha_enabled = true;
            out.push(format!("nova: {ha_node} enabled to take the instances"));
        }
        let calls = sim.calls();
        let evacuations: Vec<String> = calls
            .iter()
            .filter(|c| c.method == "POST" && c.body.get("evacuate").is_some())
            .filter_map(|c| c.path.split('/').rev().nth(1).map(str::to_owned))
            .collect();
        for id in evacuations.iter().skip(self.evacuate_calls) {
            out.push(format!(
                "nova: evacuate call received for {}",
                self.name(id)
            ));
        }
        self.evacuate_calls = self.evacuate_calls.max(evacuations.len());
        let ids: Vec<String> = self.names.keys().cloned().collect();
        for id in ids {
            if self.landed.contains(&id) {
                continue;
            }
            let Ok(uuid) = id.parse() else { continue };
            if let Some(s) = sim.server(&uuid)
                && s.host != self.node.as_str()
                && s.task_state.is_none()
            {
                let note = if s.status == "SHUTOFF" {
                    ": evacuated servers arrive SHUTOFF from microversion 2.95; \
                     novaha starts the ones that ran"
                } else {
                    ""
                };
                out.push(format!(
                    "nova: {} now on {} ({}){note}",
                    self.name(&id),
                    s.host,
                    s.status
                ));
                self.landed.insert(id);
            }
        }
        out
    }
}

/// The timeline key of a phase (as the record's `timeline` names it).
fn phase_key(p: Phase) -> &'static str {
    match p {
        Phase::Claimed => "claimed",
        Phase::Fenced => "fenced",
        Phase::ForcedDown => "forced_down",
        Phase::Evacuating => "evacuating",
        Phase::Evacuated => "evacuated",
        Phase::Notified => "notified",
        Phase::Done => "done",
        Phase::Stuck => "stuck",
    }
}

/// Everything the demo started, stopped in order by [`Stage::stop`].
struct Stage {
    dir: Option<tempfile::TempDir>,
    consul: Option<Proc>,
    daemons: Vec<Proc>,
    sim: Option<SimHandle>,
}

impl Stage {
    /// Daemons first (they resign the lock while Consul still answers),
    /// then the agent, then the simulator, then the temp dir.
    async fn stop(&mut self) {
        for d in &mut self.daemons {
            say(format!("  {}", d.stop(Signal::TERM, STOP_GRACE).await));
        }
        if let Some(c) = &mut self.consul {
            say(format!("  {}", c.stop(Signal::INT, STOP_GRACE).await));
        }
        if let Some(sim) = self.sim.take() {
            sim.shutdown().await;
            say("  simulator stopped");
        }
        if let Some(dir) = self.dir.take() {
            let path = dir.path().display().to_string();
            match dir.close() {
                Ok(()) => say(format!("  removed {path}")),
                Err(e) => say(format!("  could not remove {path}: {e}")),
            }
        }
    }
}

/// Cancels `token` on SIGINT or SIGTERM.
async fn watch_signals(token: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    token.cancel();
}

/// Sleeps `d` unless `cancel` fires first; errors when it does.
async fn pause(d: Duration, cancel: &CancellationToken) -> anyhow::Result<()> {
    tokio::select! {
        _ = cancel.cancelled() => bail!("interrupted"),
        _ = tokio::time::sleep(d) => Ok(()),
    }
}

/// `novaha demo [--keep]`.
pub async fn demo(opts: DemoOptions) -> anyhow::Result<ExitCode> {
    let cancel = CancellationToken::new();
    let signals = tokio::spawn(watch_signals(cancel.clone()));
    let mut stage = Stage {
        dir: None,
        consul: None,
        daemons: Vec::new(),
        sim: None,
    };
    let result = story(&opts, &mut stage, &cancel).await;
    if result.is_err() && cancel.is_cancelled() {
        say("\ninterrupted");
    } else if let Err(e) = &result {
        say(format!("\ndemo failed: {e:#}"));
        for d in &stage.daemons {
            say(format!(
                "--- last lines of {} ({}) ---\n{}",
                d.name,
                d.log.display(),
                d.tail(15)
            ));
        }
    }
    say("\nstopping everything the demo started:");
    stage.stop().await;
    signals.abort();
    match result {
        Ok(()) => {
            say("demo finished.");
            Ok(ExitCode::SUCCESS)
        }
        Err(_) if cancel.is_cancelled() => Ok(ExitCode::from(130)),
        Err(_) => Ok(ExitCode::FAILURE),
    }
}

async fn story(
    opts: &DemoOptions,
    stage: &mut Stage,
    cancel: &CancellationToken,
) -> anyhow::Result<()> {
    say("novaha demo: a whole failover on this machine, with no config file.\n");
    let consul_bin = find_consul().await?;
    let dir = tempfile::Builder::new()
        .prefix("novaha-demo-")
        .tempdir()
        .context("create the demo's temp dir")?;
    let root = dir.path().to_path_buf();
    stage.dir = Some(dir);
    say(format!("work dir: {}", root.display()));

    let (agent, http_port) = start_consul(&consul_bin, &root, cancel).await?;
    say(format!(
        "consul: dev agent (pid {}) on 127.0.0.1:{http_port}, in memory only",
        agent.pid().unwrap_or(0)
    ));
    stage.consul = Some(agent);
    let consul_addr = format!("http://127.0.0.1:{http_port}");

    let sim = Sim::start(
        "127.0.0.1:0",
        SimConfig {
            hosts: 3,
            instances_per_host: 3,
            ha_nodes: 1,
            service_down_time: SERVICE_DOWN_TIME,
            evacuate_delay: EVACUATE_DELAY,
            ..SimConfig::default()
        },
    )
    .await
    .context("start the simulator")?;
    // One more instance on the host that will die: 10 in all, 4 to move.
    let owner = sim
        .servers_on(VICTIM)
        .first()
        .map(|s| (s.user_id.clone(), s.tenant_id.clone()))
        .context("the simulator seeded no instance on the victim host")?;
    sim.add_server("db-1", VICTIM, &owner.0, &owner.1, BTreeMap::new())
        .context("add an instance to the simulator")?;
    say(format!(
        "simulator: Keystone {} and Nova {}: compute-1..3, HA node {HA_NODE} (disabled in Nova), {} instances",
        sim.keystone_url(),
        sim.nova_url(),
        sim.servers().len()
    ));
    for host in ["compute-1", "compute-2", "compute-3"] {
        let names: Vec<String> = sim.servers_on(host).into_iter().map(|s| s.name).collect();
        say(format!("  {host}: {}", names.join(", ")));
    }
    let ha_enabled = sim.service(HA_NODE).is_some_and(|(s, _)| !s.disabled);
    stage.sim = Some(sim);
    let sim = stage.sim.as_ref().context("the simulator just started")?;

    let mut configs = Vec::new();
    for id in ["novaha-a", "novaha-b"] {
        let path = root.join(format!("{id}.toml"));
        write_private(&path, &config_text(&consul_addr, sim, id))?;
        configs.push(path);
    }
    let cfg = Config::load(&configs[0]).map_err(|e| anyhow::anyhow!("{e}"))?;
    say(format!(
        "config: {} (monitor every 1s, failed when number_fails > {THRESHOLD}, fence driver noop, evacuate to the HA node, log notifier)",
        configs[0].display()
    ));

    say(
        "\nregistering the nodes in Consul (as `novaha node register` / `novaha ha-node register` do):",
    );
    for host in ["compute-1", "compute-2", "compute-3"] {
        admin::register_node(&cfg, host, BmcArgs::default()).await?;
    }
    admin::register_ha_node(&cfg, HA_NODE).await?;

    let exe = std::env::current_exe().context("find this executable")?;
    say("\nstarting two daemons (`novaha run -c ...`), as two controllers would:");
    for (path, id) in configs.iter().zip(["novaha-a", "novaha-b"]) {
        let mut cmd = tokio::process::Command::new(&exe);
        cmd.arg("run").arg("-c").arg(path).env_remove("RUST_LOG");
        let d = Proc::spawn(id, &mut cmd, &root.join(format!("{id}.log")))?;
        say(format!(
            "  {id}: pid {}, log {}",
            d.pid().unwrap_or(0),
            d.log.display()
        ));
        stage.daemons.push(d);
    }

    let (consul, schema) = crate::connect::connect(&cfg)?;
    let store = ConsulStore::new(consul.clone(), schema.clone());
    let leader = wait_leader(&consul, &schema, &mut stage.daemons, cancel).await?;
    let standby = if leader.id == "novaha-a" {
        "novaha-b"
    } else {
        "novaha-a"
    };
    say(format!(
        "  {} (pid {}) holds the lock {}; {standby} is the standby, watching it",
        leader.id,
        leader.pid,
        schema.leader()
    ));
    wait_first_cycle(&store, &schema, cancel).await?;
    say("  the leader has run its first cycle: every node healthy");

    let names: BTreeMap<String, String> = sim
        .servers_on(VICTIM)
        .into_iter()
        .map(|s| (s.id.to_string(), s.name))
        .collect();
    let mut story = Story::new(VICTIM, THRESHOLD, names.clone(), ha_enabled);
    say(format!(
        "\nkilling {VICTIM} (its nova-compute stops heartbeating; {} instances on it):",
        names.len()
    ));
    sim.kill(VICTIM).context("kill the host in the simulator")?;
    let t0 = Instant::now();
    loop {
        let snap = store.snapshot().await.context("read the K/V tree")?;
        let state = ClusterState::parse(&schema, &snap);
        let mut lines = story.nova_down(sim);
        lines.extend(story.kv(&state));
        lines.extend(story.sim(sim, HA_NODE));
        for l in lines {
            say(format!("[{:>5.1}s] {l}", t0.elapsed().as_secs_f64()));
        }
        match story.phase() {
            Some(Phase::Done) => break,
            Some(Phase::Stuck) => bail!("the recovery of {VICTIM} is stuck (see above)"),
            _ => {}
        }
        if t0.elapsed() > RECOVERY_DEADLINE {
            print_status(&cfg).await;
            bail!("the recovery of {VICTIM} did not finish within {RECOVERY_DEADLINE:?}");
        }
        for d in &mut stage.daemons {
            if !d.running() {
                bail!("{} exited unexpectedly", d.name);
            }
        }
        pause(WATCH_EVERY, cancel).await?;
    }

    say(format!(
        "\nthe instances that were on {VICTIM}, as Nova lists them now:"
    ));
    say(format!(
        "  {:<10} {:<36} {:<10} {}",
        "NAME", "ID", "HOST", "STATUS"
    ));
    let mut on_ha = 0;
    for (id, name) in &names {
        let server = id.parse().ok().and_then(|u| sim.server(&u));
        let (host, status) =
            server.map_or(("?".to_owned(), "?".to_owned()), |s| (s.host, s.status));
        if host == HA_NODE {
            on_ha += 1;
        }
        say(format!("  {name:<10} {id:<36} {host:<10} {status}"));
    }
    say(format!("{on_ha} of {} instances on {HA_NODE}", names.len()));
    say("\n$ novaha status");
    print_status(&cfg).await;
    if on_ha != names.len() {
        bail!(
            "{} instance(s) did not reach {HA_NODE}",
            names.len() - on_ha
        );
    }
    if opts.keep {
        say(format!(
            "\n--keep: everything stays up until Ctrl-C.\n  Consul UI: http://127.0.0.1:{http_port}/ui/ (K/V under {PREFIX}/)\n  try: {} status -c {}",
            exe.display(),
            configs[0].display()
        ));
        cancel.cancelled().await;
    }
    Ok(())
}

/// Prints what `novaha status` prints.
async fn print_status(cfg: &Config) {
    if let Err(e) = crate::status::status(cfg, false).await {
        say(format!("novaha status failed: {e:#}"));
    }
}

/// Waits until some daemon holds the lock; fails if a daemon dies.
async fn wait_leader(
    consul: &Consul,
    schema: &Schema,
    daemons: &mut [Proc],
    cancel: &CancellationToken,
) -> anyhow::Result<LeaderInfo> {
    let deadline = Instant::now() + START_DEADLINE;
    loop {
        if let Ok(Some(l)) = Election::current_leader(consul, schema).await {
            return Ok(l);
        }
        for d in daemons.iter_mut() {
            if !d.running() {
                bail!("{} exited before a leader was elected", d.name);
            }
        }
        if Instant::now() > deadline {
            bail!("no daemon took the lock within {START_DEADLINE:?}");
        }
        pause(Duration::from_millis(100), cancel).await?;
    }
}

/// Waits until a leader cycle has been recorded (`novaha/last_cycle`).
async fn wait_first_cycle(
    store: &ConsulStore,
    schema: &Schema,
    cancel: &CancellationToken,
) -> anyhow::Result<()> {
    let key = schema.internal(crate::leader::LAST_CYCLE);
    let deadline = Instant::now() + START_DEADLINE;
    loop {
        let snap = store.snapshot().await.context("read the K/V tree")?;
        if snap.raw(&key).is_some() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the leader recorded no cycle at {key} within {START_DEADLINE:?}");
        }
        pause(Duration::from_millis(100), cancel).await?;
    }
}

/// Renders story lines for tests and docs.
pub fn render(lines: &[String]) -> String {
    let mut s = String::new();
    for l in lines {
        let _ = writeln!(s, "{l}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use novaha_core::kv::{KvEntry, Snapshot};
    use novaha_core::record::{FenceRecord, InstanceRecord, RecoveryRecord};

    fn snap(pairs: &[(String, String)]) -> ClusterState {
        let schema = Schema::new(PREFIX);
        let entries = pairs
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    KvEntry {
                        value: Some(v.clone().into_bytes()),
                        modify_index: 1,
                    },
                )
            })
            .collect();
        ClusterState::parse(&schema, &Snapshot { index: 1, entries })
    }

    fn node_keys(
        failed: &str,
        fails: u32,
        record: Option<&RecoveryRecord>,
    ) -> Vec<(String, String)> {
        let schema = Schema::new(PREFIX);
        let n = NodeName::new(VICTIM);
        let mut v = vec![
            (schema.failed(&n), failed.to_owned()),
            (schema.recovered(&n), failed.to_owned()),
            (schema.number_fails(&n), fails.to_string()),
        ];
        if let Some(r) = record {
            v.push((
                schema.recovery(&n),
                serde_json::to_string(r).expect("encode"),
            ));
        }
        v
    }

    #[test]
    fn the_story_tells_each_step_once_and_in_order() {
        let id = "11111111-2222-3333-4444-555555555555".to_owned();
        let names = BTreeMap::from([(id.clone(), "web-1".to_owned())]);
        let mut story = Story::new(VICTIM, 2, names, false);
        let lines = story.kv(&snap(&node_keys("False", 1, None)));
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].contains("number_fails = 1"), "{lines:?}");
        assert!(
            story.kv(&snap(&node_keys("False", 1, None))).is_empty(),
            "no change, no line"
        );

        let mut rec = RecoveryRecord::new("inc-1".to_owned(), "e1".to_owned(), Utc::now());
        rec.phase = Phase::ForcedDown;
        rec.ha_node = Some(NodeName::new(HA_NODE));
        rec.fence = Some(FenceRecord {
            driver: "noop".to_owned(),
            verified_off_at: Utc::now(),
        });
        let text = render(&story.kv(&snap(&node_keys("True", 3, Some(&rec)))));
        let order = [
            "number_fails = 3",
            "failed = True",
            "recovered = True",
            "phase claimed",
            "NOOP",
            "phase forced_down",
        ];
        let mut at = 0;
        for needle in order {
            let pos = text[at..]
                .find(needle)
                .unwrap_or_else(|| panic!("{needle:?} after {at} in:\n{text}"));
            at += pos;
        }
        assert!(!text.contains("phase evacuating"), "{text}");

        rec.phase = Phase::Done;
        rec.instances.insert(
            id,
            InstanceRecord {
                state: InstanceState::Done,
                prior_status: "ACTIVE".to_owned(),
                name: None,
                target: Some(HA_NODE.to_owned()),
                error: None,
                owner: None,
                project: None,
                requested_at: None,
                start_requested_at: None,
                sends: 0,
                starts: 0,
                ..InstanceRecord::default()
            },
        );
        let text = render(&story.kv(&snap(&node_keys("True", 3, Some(&rec)))));
        for needle in [
            "phase evacuating",
            "phase evacuated: 1 done",
            "phase notified",
            "phase done",
            "evacuated: web-1 (11111111) -> ha-1",
        ] {
            assert!(text.contains(needle), "{needle:?} in:\n{text}");
        }
        assert!(!text.contains("phase claimed"), "told once:\n{text}");
        assert_eq!(story.phase(), Some(Phase::Done));
    }

    #[test]
    fn the_demo_config_is_valid_and_allows_only_noop_explicitly() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let sim = Sim::start("127.0.0.1:0", SimConfig::default())
                .await
                .expect("sim");
            let text = config_text("http://127.0.0.1:1", &sim, "novaha-a");
            let cfg = Config::from_toml_str(Path::new("demo.toml"), &text, &Default::default())
                .expect("the demo config is valid");
            assert!(cfg.fence.allow_noop);
            assert_eq!(cfg.monitor.threshold, THRESHOLD);
            assert_eq!(cfg.http.listen.port(), 0);
        });
    }
}
