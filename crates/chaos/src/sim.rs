//! One schedule's run: two controllers, each the daemon's real
//! [`LeaderCycle`] (with its real recovery runner), racing for a modelled
//! Consul lock over the in-process peers, under tokio's paused clock; the
//! faults applied at their times; the end-of-run checks (every instance
//! final, and liveness once the faults stop).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::TimeDelta;
use novaha::clock::Clock;
use novaha::config::Config;
use novaha::leader::{LeaderCycle, LeaderExit};
use novaha::metrics::Metrics;
use novaha::stages::{self, Stages};
use novaha_core::NodeName;
use novaha_core::kv::Schema;
use novaha_core::record::{Phase, RecoveryRecord};
use novaha_core::store::LeaderLease;
use novaha_fence::FenceRegistry;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::fakes::{ChaosBmc, ChaosMonitor, ChaosNova, ChaosStore, Shared, lock};
use crate::schedule::{BadKey, FAULT_WINDOW, Fault, QUIET, Rng, Schedule, Target};
use crate::world::{INTERVAL, World, host_name, server_name, spare_name};

/// Consul's lock-delay after an invalidated session.
const LOCK_DELAY: Duration = Duration::from_secs(15);

/// What one run found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Every invariant violation, with its virtual time.
    pub violations: Vec<String>,
    /// A digest of everything that happened: two runs of one schedule
    /// give the same digest (the simulation is deterministic).
    pub digest: u64,
}

/// Runs one schedule to its end and checks it.
pub fn run(schedule: &Schedule) -> Outcome {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime builds");
    rt.block_on(run_async(schedule))
}

/// The run's config; parsed once per (target, concurrency) and process:
/// validating a config builds the fence drivers, which is costly.
fn config(schedule: &Schedule) -> Arc<Config> {
    type Cache = Mutex<HashMap<(Target, usize), Arc<Config>>>;
    static CACHE: std::sync::OnceLock<Cache> = std::sync::OnceLock::new();
    let key = (schedule.cloud.target, schedule.cloud.concurrency);
    let cache = CACHE.get_or_init(Cache::default);
    let mut c = cache.lock().expect("not poisoned");
    c.entry(key)
        .or_insert_with(|| Arc::new(parse_config(schedule)))
        .clone()
}

fn parse_config(schedule: &Schedule) -> Config {
    let c = &schedule.cloud;
    let target = match c.target {
        Target::HaNode => "ha_node",
        Target::HaNodeThenScheduler => "ha_node_then_scheduler",
        Target::Scheduler => "scheduler",
    };
    let text = format!(
        r#"
[monitor]
interval = "10s"
threshold = 2
max_failed_nodes = 2
max_failed_fraction = 1.0
signals = ["nova"]
[fence]
driver = "noop"
allow_noop = true
[evacuate]
target = "{target}"
concurrency = {}
timeout = "5m"
poll_interval = "5s"
[recovery]
reset_grace = "2m"
max_attempts = 1000
"#,
        c.concurrency
    );
    Config::from_toml_str(Path::new("chaos.toml"), &text, &HashMap::new())
        .expect("the chaos config is valid")
}

async fn run_async(schedule: &Schedule) -> Outcome {
    let schema = Schema::new("ha_cluster");
    let c = &schedule.cloud;
    let w: Shared = Arc::new(Mutex::new(World::new(
        schema.clone(),
        c.hosts,
        c.spares,
        c.per_host,
        c.lands_shutoff,
        Rng::new(schedule.seed.wrapping_mul(31).wrapping_add(7)),
    )));
    let cfg = config(schedule);
    let store = Arc::new(ChaosStore { w: w.clone() });
    let stop = CancellationToken::new();
    let leases: Arc<Mutex<[Option<CancellationToken>; 2]>> = Arc::default();
    let mut controllers = Vec::new();
    for ctrl in 0..2 {
        let mut policy = stages::policy(&cfg, &schema);
        policy.restore_power_state = c.lands_shutoff;
        let registry = FenceRegistry::single(Arc::new(ChaosBmc { w: w.clone(), ctrl }))
            .expect("the fence registry builds");
        let st = Stages {
            monitor: Arc::new(ChaosMonitor { w: w.clone() }),
            fences: registry,
            evacuator: Arc::new(ChaosNova { w: w.clone(), ctrl }),
            outbox: None,
            policy,
            thresholds: stages::thresholds(&cfg),
            capacity: None,
        };
        let skew = if ctrl == 1 { c.skew_secs } else { 0 };
        let clock = {
            let w = w.clone();
            Clock::from_fn(move || lock(&w).wall() + TimeDelta::seconds(skew))
        };
        let cycle = LeaderCycle::new(
            store.clone(),
            schema.clone(),
            format!("controller-{ctrl}"),
            INTERVAL,
            Metrics::new(),
        )
        .with_stages(cfg.clone(), Arc::new(st))
        .with_clock(clock);
        controllers.push(tokio::spawn(controller(
            ctrl,
            w.clone(),
            cycle,
            stop.clone(),
            leases.clone(),
        )));
    }
    let faults = tokio::spawn(inject(schedule.clone(), w.clone(), leases.clone()));
    tokio::time::sleep(FAULT_WINDOW + QUIET).await;
    faults.abort();
    let _ = faults.await;
    let liveness = final_checks(&w, schedule);
    stop.cancel();
    for c in controllers {
        let _ = c.await;
    }
    let w = lock(&w);
    let mut violations = w.violations.clone();
    violations.extend(liveness);
    Outcome {
        violations,
        digest: w.digest,
    }
}

/// One controller: stand by until the lock is free, take it, lead with
/// the real leader cycle until the lease is lost, again.
async fn controller(
    ctrl: usize,
    w: Shared,
    mut cycle: LeaderCycle,
    stop: CancellationToken,
    leases: Arc<Mutex<[Option<CancellationToken>; 2]>>,
) {
    let mut tenure = 0u32;
    loop {
        let session = loop {
            if stop.is_cancelled() {
                return;
            }
            {
                let mut w = lock(&w);
                let now = Instant::now();
                if w.consul.holder.is_none() && w.consul.free_at.is_none_or(|f| now >= f) {
                    tenure += 1;
                    let session = format!("s{ctrl}-{tenure}");
                    w.consul.holder = Some(session.clone());
                    w.controllers[ctrl].session = Some(session.clone());
                    w.controllers[ctrl].lost_at = None;
                    w.note(&format!("acquired {session}"));
                    break session;
                }
            }
            let d = lock(&w).rng.millis(100, 2_000);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(d) => {}
            }
        };
        let token = CancellationToken::new();
        leases.lock().expect("not poisoned")[ctrl] = Some(token.clone());
        let lease = LeaderLease::new(session.clone(), format!("{session}:{tenure}"), token);
        let exit = cycle.run(&lease, &stop).await;
        {
            let mut w = lock(&w);
            if w.consul.holder.as_deref() == Some(session.as_str()) {
                // Resigning (shutdown) or a refused write: release the lock.
                w.consul.holder = None;
                w.controllers[ctrl].lost_at = Some(Instant::now());
            }
        }
        if exit == LeaderExit::Shutdown {
            return;
        }
    }
}

/// Applies the schedule's faults at their times.
async fn inject(schedule: Schedule, w: Shared, leases: Arc<Mutex<[Option<CancellationToken>; 2]>>) {
    let start = Instant::now();
    for step in schedule.steps {
        tokio::time::sleep_until(start + step.at).await;
        apply(&step.fault, &w, &leases);
    }
}

fn later(d: Duration, f: impl FnOnce() + Send + 'static) {
    tokio::spawn(async move {
        tokio::time::sleep(d).await;
        f();
    });
}

fn apply(fault: &Fault, w: &Shared, leases: &Arc<Mutex<[Option<CancellationToken>; 2]>>) {
    let now = Instant::now();
    let mut g = lock(w);
    g.settle();
    g.note(&format!("{fault:?}"));
    let schema = g.schema.clone();
    let node = |i: usize| NodeName::from(host_name(i).as_str());
    match fault.clone() {
        Fault::KillHost(i) => {
            if let Some(h) = g.hosts.get_mut(&host_name(i)) {
                h.alive = false;
                h.silent_since.get_or_insert(now);
            }
        }
        Fault::KillSpare(i) => {
            if let Some(h) = g.hosts.get_mut(&spare_name(i)) {
                h.alive = false;
                h.silent_since.get_or_insert(now);
            }
        }
        Fault::Partition(set, d) => {
            let names: Vec<String> = set
                .iter()
                .map(|i| host_name(*i))
                .filter(|n| g.hosts.get(n).is_some_and(|h| h.alive && !h.partitioned))
                .collect();
            let mass = names.len() > 2;
            for n in &names {
                if let Some(h) = g.hosts.get_mut(n) {
                    h.partitioned = true;
                    h.mass_partition = mass;
                    h.silent_since = Some(now);
                }
            }
            let w = w.clone();
            later(d, move || {
                let mut g = lock(&w);
                for n in &names {
                    if let Some(h) = g.hosts.get_mut(n)
                        && h.partitioned
                    {
                        h.partitioned = false;
                        h.mass_partition = false;
                        h.healed_at = Some(Instant::now());
                        if h.alive {
                            h.silent_since = None;
                        }
                    }
                }
            });
        }
        Fault::BmcTimeout(i, d) => {
            if let Some(h) = g.hosts.get_mut(&host_name(i)) {
                h.bmc_down_until = Some(now + d);
            }
        }
        Fault::PowerRestore(i, d) => {
            if let Some(h) = g.hosts.get_mut(&host_name(i)) {
                if h.power_on {
                    h.restore_after = Some(d);
                } else {
                    h.restore_at = Some(now + d);
                }
            }
        }
        Fault::NovaOutage(d) => g.nova_down_until = Some(now + d),
        Fault::NovaFlaky(p, d) => g.nova_flaky = Some((p, now + d)),
        Fault::HideHost(i, k, d) => {
            if let Some(s) = g.servers.get_mut(&server_name(i, k)) {
                s.hidden_until = Some(now + d);
                s.hidden_since = Some(now);
            }
        }
        Fault::LandsError(i, k) => {
            if let Some(s) = g.servers.get_mut(&server_name(i, k)) {
                s.next_landing = crate::world::Landing::Error;
            }
        }
        Fault::NeverLands(i, k) => {
            if let Some(s) = g.servers.get_mut(&server_name(i, k)) {
                s.next_landing = crate::world::Landing::Never;
            }
        }
        Fault::MovedByHand(i, k, to) => {
            let to_host = host_name(to);
            let to_up = g.hosts.get(&to_host).is_some_and(|h| h.reported_up(now));
            if let Some(s) = g.servers.get_mut(&server_name(i, k))
                && s.task.is_none()
                && !s.deleted
                && s.host == host_name(i)
                && to_up
            {
                s.host = to_host;
            }
        }
        Fault::Deleted(i, k) => {
            if let Some(s) = g.servers.get_mut(&server_name(i, k)) {
                s.deleted = true;
            }
        }
        Fault::ServiceIdChange(i) => {
            if let Some(h) = g.hosts.get_mut(&host_name(i)) {
                h.service_id = format!("{}-r", h.service_id);
            }
        }
        Fault::Commits(kind, n) => {
            for _ in 0..n {
                g.consul.commit_faults.push_back(kind);
            }
        }
        Fault::LeaseLoss { notice_after } => {
            let Some(holder) = g.consul.holder.take() else {
                return;
            };
            g.consul.free_at = Some(now + LOCK_DELAY);
            let ctrl =
                (0..2).find(|c| g.controllers[*c].session.as_deref() == Some(holder.as_str()));
            if let Some(c) = ctrl {
                g.controllers[c].lost_at = Some(now);
                let token = leases.lock().expect("not poisoned")[c].clone();
                if let Some(t) = token {
                    later(notice_after, move || t.cancel());
                }
            }
        }
        Fault::Reset(i) => {
            let failed = schema.failed(&node(i));
            let recovered = schema.recovered(&node(i));
            if g.get(&failed).is_some_and(|v| v == "True")
                && !g.invalid.contains(&failed)
                && !g.invalid.contains(&recovered)
            {
                g.put(&failed, "False");
                g.put(&recovered, "False");
            }
        }
        Fault::Maintenance(i, d) => {
            let key = schema.maintenance(&node(i));
            if g.maintenance.contains_key(&host_name(i)) {
                return;
            }
            g.put(&key, "True");
            g.maintenance.insert(host_name(i), now);
            let w = w.clone();
            let host = host_name(i);
            later(d, move || {
                let mut g = lock(&w);
                g.put(&key, "False");
                g.maintenance.remove(&host);
            });
        }
        Fault::Pause(d) => {
            if g.paused.is_some() {
                return;
            }
            let key = format!("{}/config/paused", schema.prefix());
            g.put(
                &key,
                r#"{"by":"chaos","at":"2026-12-01T03:00:00Z","reason":"scheduled pause"}"#,
            );
            g.paused = Some(now);
            let w = w.clone();
            later(d, move || {
                let mut g = lock(&w);
                g.consul.kv.remove(&key);
                g.consul.index += 1;
                g.paused = None;
            });
        }
        Fault::Invalid(i, bad, d) => {
            let key = match bad {
                BadKey::Failed => schema.failed(&node(i)),
                BadKey::Recovered => schema.recovered(&node(i)),
                BadKey::NumberFails => schema.number_fails(&node(i)),
                BadKey::Record => schema.recovery(&node(i)),
                BadKey::InUse => schema.in_use(&NodeName::from(spare_name(0).as_str())),
            };
            if g.invalid.contains(&key) {
                return;
            }
            let Some(old) = g.get(&key) else {
                return;
            };
            let garbage = match bad {
                BadKey::Record => "{\"version\": 1, \"phase\": ",
                BadKey::NumberFails => "three",
                _ => "maybe",
            };
            g.put(&key, garbage);
            g.invalid.insert(key.clone());
            let w = w.clone();
            later(d, move || {
                let mut g = lock(&w);
                g.put(&key, &old);
                g.invalid.remove(&key);
            });
        }
    }
}

/// After the quiet period: every instance a recovery recorded is final, and
/// every failed node that could be recovered was (the liveness bound is
/// [`QUIET`] after the last fault).
fn final_checks(w: &Shared, schedule: &Schedule) -> Vec<String> {
    let mut g = lock(w);
    g.settle();
    let schema = g.schema.clone();
    let state = g.state();
    let now = Instant::now();
    let mut out = Vec::new();
    // Every instance recorded by an incident ends done, error or skipped.
    for ((node, incident), ids) in &g.recorded {
        let n = NodeName::from(node.as_str());
        let archived = g
            .get(&schema.incident(&n, incident))
            .and_then(|v| serde_json::from_str::<RecoveryRecord>(&v).ok());
        let live = g
            .get(&schema.recovery(&n))
            .and_then(|v| serde_json::from_str::<RecoveryRecord>(&v).ok())
            .filter(|r| &r.incident == incident);
        let rec = match (archived, live) {
            (Some(a), _) => a,
            (None, Some(l)) if matches!(l.phase, Phase::Done | Phase::Stuck) => l,
            // Still running: judged by the liveness check below.
            (None, Some(_)) => continue,
            (None, None) => {
                out.push(format!("rule 3: incident {incident} of {node} is lost"));
                continue;
            }
        };
        for id in ids {
            match rec.instances.get(id) {
                Some(i) if i.state.is_final() => {}
                other => out.push(format!(
                    "rule 3: {id} of incident {incident} ended {:?}",
                    other.map(|i| i.state)
                )),
            }
        }
    }
    // Liveness.
    let usable_spare = g.hosts.iter().any(|(n, h)| {
        h.spare
            && h.reported_up(now)
            && state
                .ha_nodes
                .get(&NodeName::from(n.as_str()))
                .is_some_and(|s| s.in_use.value == Ok(false))
    });
    let scheduler_ok = schedule.cloud.target != Target::HaNode;
    let silent_unrecovered = g
        .hosts
        .values()
        .filter(|h| h.silent() && !h.forced_down && h.enabled)
        .count();
    // The mass-failure guard still trips: nothing is claimed or fenced,
    // by design, until an operator acts.
    let guard = silent_unrecovered > 2;
    for i in (0..schedule.cloud.hosts).filter(|_| !guard) {
        let name = host_name(i);
        let n = NodeName::from(name.as_str());
        let Some(cn) = state.compute_nodes.get(&n) else {
            continue;
        };
        let record = cn.recovery.value.clone().ok().flatten();
        let failed = cn.failed.get() == Some(true);
        let dead = g.hosts.get(&name).is_some_and(|h| !h.alive);
        if !dead {
            // Back (a healed partition): it is neither claimed nor fenced
            // while it reads healthy; an operator decides.
            continue;
        }
        match record {
            Some(r) if r.phase == Phase::Done => {}
            Some(r) => {
                let waits_for_spare = r.ha_node.is_some() && !scheduler_ok && !usable_spare;
                if !waits_for_spare {
                    out.push(format!(
                        "liveness: the recovery of {name} is {:?} {} after the faults stopped (last error: {})",
                        r.phase,
                        fmt_secs(QUIET),
                        r.last_error.unwrap_or_default()
                    ));
                }
            }
            None if failed
                && cn.recovered.get() == Some(false)
                && (scheduler_ok || usable_spare) =>
            {
                out.push(format!("liveness: {name} is failed but was never claimed"));
            }
            None if failed && cn.recovered.get() == Some(false) => {}
            None if dead && !failed => {
                out.push(format!("liveness: {name} died and was never judged failed"));
            }
            None => {}
        }
    }
    g.note("end");
    if std::env::var_os("NOVAHA_CHAOS_DUMP").is_some() {
        for (k, (v, _)) in &g.consul.kv {
            eprintln!("{k} = {}", String::from_utf8_lossy(v));
        }
    }
    out
}

fn fmt_secs(d: Duration) -> String {
    format!("{}s", d.as_secs())
}
