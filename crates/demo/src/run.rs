//! The run: what the demo starts and in which order, the narrated watch of
//! the recovery, and the orderly stop of everything it started (also on
//! Ctrl-C and on failure).
//!
//! Processes, the Consul agent and the simulator come from novaha-testkit
//! (the same plumbing as the end-to-end tests), each child in its own
//! process group; the daemons and the operator commands (`node register`,
//! `ha-node register`, `status`) are the real `novaha` binary.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use novaha_consul::{Consul, ConsulSettings, ConsulStore, ConsulTls, Election, LeaderInfo};
use novaha_core::kv::{ClusterState, Schema};
use novaha_core::record::Phase;
use novaha_core::store::StateStore;
use novaha_sim::SimConfig;
use novaha_testkit::cloud::SimCloud;
use novaha_testkit::consul::{
    CONSUL_BIN_ENV, CONSUL_VERSION, ConsulAgent, ConsulOptions, find_consul_bin,
};
use novaha_testkit::daemon::Daemon;
use novaha_testkit::process::{ToolSource, repo_root};

use crate::story::Story;
use crate::{EVACUATE_DELAY, HA_NODE, PREFIX, SERVICE_DOWN_TIME, THRESHOLD, VICTIM, config_text};

/// The environment variable naming the `novaha` binary (as `--novaha`).
pub const NOVAHA_BIN_ENV: &str = "NOVAHA_BIN";
/// The leader's cycle report, `<prefix>/novaha/last_cycle` (docs/consul.md).
const LAST_CYCLE: &str = "last_cycle";
/// How long the whole recovery may take before the demo gives up.
const RECOVERY_DEADLINE: Duration = Duration::from_secs(60);
/// How long the start-up (agent ready, a leader elected) may take.
const START_DEADLINE: Duration = Duration::from_secs(30);
/// How often the demo reads the K/V tree and the sim.
const WATCH_EVERY: Duration = Duration::from_millis(200);
/// How long a stopped child may take to exit after SIGTERM / SIGINT.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// The two daemons, as two controllers would run them.
const DAEMONS: [&str; 2] = ["novaha-a", "novaha-b"];
/// The compute hosts of the demo cloud.
const COMPUTES: [&str; 3] = ["compute-1", "compute-2", "compute-3"];

/// What the demo was asked to do.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Leave everything running at the end (until Ctrl-C) to explore the
    /// Consul UI and try `novaha status`, `novaha node reset`, ...
    pub keep: bool,
    /// The `novaha` binary the daemons and operator commands run
    /// ([`find_novaha`]).
    pub novaha: PathBuf,
}

/// Prints one line of the story at once (stdout is often a pipe).
pub fn say(line: impl AsRef<str>) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    // A closed stdout must not stop the demo from cleaning up.
    let _ = writeln!(out, "{}", line.as_ref());
    let _ = out.flush();
}

/// The `novaha` binary: `explicit` (the `--novaha` flag or `NOVAHA_BIN`)
/// when given, else `novaha` next to this executable (cargo builds both
/// into the same target dir: `cargo build -p novaha -p novaha-demo`).
pub fn find_novaha(explicit: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        if !p.is_file() {
            bail!("the novaha binary {} is not a file", p.display());
        }
        return Ok(p);
    }
    let exe = std::env::current_exe().context("find this executable")?;
    let p = exe.with_file_name("novaha");
    if !p.is_file() {
        bail!(
            "no novaha binary next to {}: build it (cargo build -p novaha, in the same \
             profile) or name it with --novaha / {NOVAHA_BIN_ENV}",
            exe.display()
        );
    }
    Ok(p)
}

/// Finds a Consul binary (testkit's search: `NOVAHA_CONSUL_BIN`, the cache,
/// `PATH`), fetching it with `scripts/deps/consul.sh` when it is missing;
/// says which one it uses and how it found it.
fn find_consul() -> anyhow::Result<PathBuf> {
    match find_consul_bin() {
        Some((p, ToolSource::Env)) => {
            if !p.is_file() {
                bail!("{CONSUL_BIN_ENV}={} is not a file", p.display());
            }
            say(format!("consul: {} (from {CONSUL_BIN_ENV})", p.display()));
            return Ok(p);
        }
        Some((p, ToolSource::Candidate)) => {
            say(format!(
                "consul: {} (cached by scripts/deps/consul.sh)",
                p.display()
            ));
            return Ok(p);
        }
        Some((p, ToolSource::Path)) => {
            say(format!("consul: {} (from PATH)", p.display()));
            return Ok(p);
        }
        None => {}
    }
    let script = repo_root().join("scripts/deps/consul.sh");
    if !script.is_file() {
        bail!(
            "no consul found: set {CONSUL_BIN_ENV}, put consul on PATH, or run \
             scripts/deps/consul.sh from the novaha repository"
        );
    }
    say(format!(
        "consul: not found; fetching Consul {CONSUL_VERSION} from Debian with {} (about 10 s)",
        script.display()
    ));
    let status = Command::new("bash")
        .arg(&script)
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("run {}", script.display()))?;
    if !status.success() {
        bail!("{} failed ({status})", script.display());
    }
    let p = find_consul_bin()
        .map(|(p, _)| p)
        .filter(|p| p.is_file())
        .with_context(|| {
            format!(
                "{} ran but no consul binary is in the cache",
                script.display()
            )
        })?;
    say(format!("consul: {} (just fetched)", p.display()));
    Ok(p)
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

/// Set on SIGINT or SIGTERM: the demo stops what it started and exits 130.
#[derive(Clone, Debug, Default)]
struct Cancel(Arc<AtomicBool>);

impl Cancel {
    fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// Sleeps `d` unless cancelled first; errors when it is.
    fn pause(&self, d: Duration) -> anyhow::Result<()> {
        let end = Instant::now() + d;
        loop {
            if self.is_cancelled() {
                bail!("interrupted");
            }
            let now = Instant::now();
            if now >= end {
                return Ok(());
            }
            std::thread::sleep((end - now).min(Duration::from_millis(50)));
        }
    }
}

/// Sets `cancel` on SIGINT or SIGTERM (handlers installed before this
/// returns, so no signal between here and the first child is lost).
fn watch_signals(rt: &tokio::runtime::Runtime, cancel: &Cancel) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let (mut int, mut term) = rt.block_on(async {
        anyhow::Ok((
            signal(SignalKind::interrupt()).context("handle SIGINT")?,
            signal(SignalKind::terminate()).context("handle SIGTERM")?,
        ))
    })?;
    let flag = cancel.0.clone();
    rt.spawn(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        flag.store(true, Ordering::SeqCst);
    });
    Ok(())
}

/// Everything the demo started, stopped in order by [`Stage::stop`].
#[derive(Default)]
struct Stage {
    dir: Option<tempfile::TempDir>,
    consul: Option<ConsulAgent>,
    daemons: Vec<Daemon>,
    sim: Option<SimCloud>,
}

impl Stage {
    /// Daemons first (they resign the lock while Consul still answers),
    /// then the agent, then the simulator, then the temp dir.
    fn stop(&mut self) {
        for d in &mut self.daemons {
            say(format!("  {}", d.stop(STOP_GRACE)));
        }
        if let Some(mut c) = self.consul.take() {
            say(format!("  {}", c.stop(STOP_GRACE)));
        }
        if let Some(sim) = self.sim.take() {
            drop(sim);
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

/// The whole demo: start, narrate, stop. Exit 0 when every instance
/// reached the HA node, 130 when interrupted, 1 otherwise.
pub fn main(opts: DemoOptions) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("novaha-demo: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let cancel = Cancel::default();
    if let Err(e) = watch_signals(&rt, &cancel) {
        eprintln!("novaha-demo: {e:#}");
        return ExitCode::FAILURE;
    }
    let mut stage = Stage::default();
    let result = story(&rt, &opts, &mut stage, &cancel);
    if result.is_err() && cancel.is_cancelled() {
        say("\ninterrupted");
    } else if let Err(e) = &result {
        say(format!("\ndemo failed: {e:#}"));
        for d in &stage.daemons {
            say(format!(
                "--- last lines of {} ({}) ---\n{}",
                d.id,
                d.log_path().display(),
                d.tail(15)
            ));
        }
    }
    say("\nstopping everything the demo started:");
    stage.stop();
    match result {
        Ok(()) => {
            say("demo finished.");
            ExitCode::SUCCESS
        }
        Err(_) if cancel.is_cancelled() => ExitCode::from(130),
        Err(_) => ExitCode::FAILURE,
    }
}

/// Runs `novaha args...` to completion, its output captured; fails with
/// its stderr unless it succeeds.
fn novaha_cli(novaha: &Path, args: &[&str]) -> anyhow::Result<()> {
    let o = Command::new(novaha)
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run {} {}", novaha.display(), args.join(" ")))?;
    if !o.status.success() {
        bail!(
            "novaha {} failed ({}): {}",
            args.join(" "),
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(())
}

fn story(
    rt: &tokio::runtime::Runtime,
    opts: &DemoOptions,
    stage: &mut Stage,
    cancel: &Cancel,
) -> anyhow::Result<()> {
    say("novaha demo: a whole failover on this machine, with no config file.\n");
    say(format!("novaha: {}", opts.novaha.display()));
    let consul_bin = find_consul()?;
    let dir = tempfile::Builder::new()
        .prefix("novaha-demo-")
        .tempdir()
        .context("create the demo's temp dir")?;
    let root = dir.path().to_path_buf();
    stage.dir = Some(dir);
    say(format!("work dir: {}", root.display()));

    let mut agent = ConsulAgent::try_start(&ConsulOptions {
        bin: Some(consul_bin),
        ui: true,
        node_name: Some("novaha-demo".to_owned()),
        own_process_group: true,
        ..ConsulOptions::default()
    })
    .map_err(anyhow::Error::msg)?;
    let http_port = agent.http_port();
    say(format!(
        "consul: dev agent (pid {}) on 127.0.0.1:{http_port}, in memory only",
        agent.guard().pid()
    ));
    let consul_addr = agent.http_addr();
    stage.consul = Some(agent);
    cancel.pause(Duration::ZERO)?;

    stage.sim = Some(SimCloud::start_with(SimConfig {
        hosts: 3,
        instances_per_host: 3,
        ha_nodes: 1,
        service_down_time: SERVICE_DOWN_TIME,
        evacuate_delay: EVACUATE_DELAY,
        ..SimConfig::default()
    }));
    let sim = stage
        .sim
        .as_ref()
        .context("the simulator just started")?
        .sim();
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
    for host in COMPUTES {
        let names: Vec<String> = sim.servers_on(host).into_iter().map(|s| s.name).collect();
        say(format!("  {host}: {}", names.join(", ")));
    }
    let ha_enabled = sim.service(HA_NODE).is_some_and(|(s, _)| !s.disabled);

    let mut configs = Vec::new();
    for id in DAEMONS {
        let path = root.join(format!("{id}.toml"));
        write_private(&path, &config_text(&consul_addr, sim, id))?;
        configs.push(path);
    }
    let config = configs[0].to_str().context("a UTF-8 temp dir path")?;
    say(format!(
        "config: {config} (monitor every 1s, failed when number_fails > {THRESHOLD}, fence driver noop, evacuate to the HA node, log notifier)"
    ));

    let novaha = opts.novaha.as_path();
    say("\nregistering the nodes in Consul (`novaha node register` / `novaha ha-node register`):");
    for host in COMPUTES {
        novaha_cli(novaha, &["node", "register", host, "-c", config])?;
    }
    novaha_cli(novaha, &["ha-node", "register", HA_NODE, "-c", config])?;

    say("\nstarting two daemons (`novaha run -c ...`), as two controllers would:");
    for (path, id) in configs.iter().zip(DAEMONS) {
        let d = Daemon::try_spawn(novaha, path, id, &root, &[], true)
            .with_context(|| format!("start {} run -c {}", novaha.display(), path.display()))?;
        say(format!(
            "  {id}: pid {}, log {}",
            d.pid(),
            d.log_path().display()
        ));
        stage.daemons.push(d);
    }

    let consul = Consul::new(&ConsulSettings {
        address: consul_addr.clone(),
        token: None,
        request_timeout: Duration::from_secs(5),
        tls: ConsulTls::default(),
    })
    .context("a consul client")?;
    let schema = Schema::new(PREFIX);
    let store = ConsulStore::new(consul.clone(), schema.clone());
    let leader = wait_leader(rt, &consul, &schema, &mut stage.daemons, cancel)?;
    let standby = if leader.id == DAEMONS[0] {
        DAEMONS[1]
    } else {
        DAEMONS[0]
    };
    say(format!(
        "  {} (pid {}) holds the lock {}; {standby} is the standby, watching it",
        leader.id,
        leader.pid,
        schema.leader()
    ));
    wait_first_cycle(rt, &store, &schema, cancel)?;
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
        let snap = rt.block_on(store.snapshot()).context("read the K/V tree")?;
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
            print_status(novaha, config);
            bail!("the recovery of {VICTIM} did not finish within {RECOVERY_DEADLINE:?}");
        }
        for d in &mut stage.daemons {
            if !d.guard().is_running() {
                bail!("{} exited unexpectedly", d.id);
            }
        }
        cancel.pause(WATCH_EVERY)?;
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
    print_status(novaha, config);
    if on_ha != names.len() {
        bail!(
            "{} instance(s) did not reach {HA_NODE}",
            names.len() - on_ha
        );
    }
    if opts.keep {
        say(format!(
            "\n--keep: everything stays up until Ctrl-C.\n  Consul UI: http://127.0.0.1:{http_port}/ui/ (K/V under {PREFIX}/)\n  try: {} status -c {config}",
            novaha.display(),
        ));
        while !cancel.is_cancelled() {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(())
}

/// Runs `novaha status -c config` onto the demo's own stdout (exit 0, or 4
/// when something needs a human, are both a table).
fn print_status(novaha: &Path, config: &str) {
    let status = Command::new(novaha)
        .args(["status", "-c", config])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .status();
    match status {
        Ok(st) if matches!(st.code(), Some(0 | 4)) => {}
        Ok(st) => say(format!("novaha status failed ({st})")),
        Err(e) => say(format!("novaha status could not run: {e}")),
    }
}

/// Waits until some daemon holds the lock; fails if a daemon dies.
fn wait_leader(
    rt: &tokio::runtime::Runtime,
    consul: &Consul,
    schema: &Schema,
    daemons: &mut [Daemon],
    cancel: &Cancel,
) -> anyhow::Result<LeaderInfo> {
    let deadline = Instant::now() + START_DEADLINE;
    loop {
        if let Ok(Some(l)) = rt.block_on(Election::current_leader(consul, schema)) {
            return Ok(l);
        }
        for d in daemons.iter_mut() {
            if !d.guard().is_running() {
                bail!("{} exited before a leader was elected", d.id);
            }
        }
        if Instant::now() > deadline {
            bail!("no daemon took the lock within {START_DEADLINE:?}");
        }
        cancel.pause(Duration::from_millis(100))?;
    }
}

/// Waits until a leader cycle has been recorded (`novaha/last_cycle`).
fn wait_first_cycle(
    rt: &tokio::runtime::Runtime,
    store: &ConsulStore,
    schema: &Schema,
    cancel: &Cancel,
) -> anyhow::Result<()> {
    let key = schema.internal(LAST_CYCLE);
    let deadline = Instant::now() + START_DEADLINE;
    loop {
        let snap = rt.block_on(store.snapshot()).context("read the K/V tree")?;
        if snap.raw(&key).is_some() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the leader recorded no cycle at {key} within {START_DEADLINE:?}");
        }
        cancel.pause(Duration::from_millis(100))?;
    }
}
