//! `novaha run` (the daemon and `--once`).
//!
//! One root [`CancellationToken`]: the first SIGTERM/SIGINT cancels it (stop
//! deciding, resign: release the lock and destroy the session, exit 0); a
//! second signal exits 1 at once. Between the two the loop is: race for the
//! lock, lead with the lease until it is lost, log that at ERROR, stop all
//! leader work, go back to standby and race again.

use std::ops::ControlFlow;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use novaha_consul::{Consul, ConsulStore, Election, ElectionSettings, LeaderInfo};
use novaha_core::kv::Schema;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::http::{Health, HttpServer};
use crate::leader::{LeaderCycle, LeaderExit};
use crate::metrics::Metrics;
use crate::systemd::{self, Watchdog};

/// Exit code of `run --once` when another process holds the lock.
const EXIT_NOT_LEADER: u8 = 3;

/// Why this daemon must not run: another live daemon on the same Consul
/// agent uses the same `[election] id`.
#[derive(Debug, thiserror::Error)]
#[error(
    "election.id {id:?}: another live novaha daemon on the Consul agent at {agent} uses the \
     same id: its check {check_id} is being passed by someone else. Two daemons sharing one \
     check cannot fail over in seconds (a dead leader costs the whole session TTL). Give each \
     daemon its own [election] id (default: the host name), or point them at different agents"
)]
pub struct DuplicateId {
    /// The `[election] id`.
    pub id: String,
    /// The check id it maps to.
    pub check_id: String,
    /// The agent's address.
    pub agent: String,
}

/// Refuses to run beside another live daemon with the same check on this
/// agent. A check found passing may be a crashed predecessor's, which goes
/// critical once its TTL runs out: it is looked at again after `check_ttl`
/// plus a second, and only a check still passing then (someone keeps
/// passing it) is refused. `Ok(false)`: shutdown came meanwhile.
pub async fn refuse_duplicate_id(
    consul: &Consul,
    check_id: &str,
    id: &str,
    check_ttl: Duration,
    root: &CancellationToken,
) -> anyhow::Result<bool> {
    let passing = |s: Option<String>| s.as_deref() == Some("passing");
    if !passing(
        consul
            .check_status(check_id)
            .await
            .context("read the agent's checks")?,
    ) {
        return Ok(true);
    }
    info!(check_id, check_ttl = ?check_ttl, "this daemon's check is passing already: waiting one check TTL to see whether another daemon passes it");
    tokio::select! {
        _ = root.cancelled() => return Ok(false),
        _ = tokio::time::sleep(check_ttl + Duration::from_secs(1)) => {}
    }
    if passing(
        consul
            .check_status(check_id)
            .await
            .context("read the agent's checks")?,
    ) {
        return Err(DuplicateId {
            id: id.to_owned(),
            check_id: check_id.to_owned(),
            agent: consul.address().to_owned(),
        }
        .into());
    }
    Ok(true)
}

/// The first retry delay after an election error; doubled up to [`BACKOFF_CAP`].
const BACKOFF_START: Duration = Duration::from_millis(500);
/// The longest retry delay after election errors.
const BACKOFF_CAP: Duration = Duration::from_secs(10);

/// What this process writes into the lock key, and its check id.
fn identity(cfg: &Config) -> (LeaderInfo, String) {
    let host = crate::connect::hostname();
    let id = cfg.election.id.clone().unwrap_or_else(|| host.clone());
    let check_id = format!(
        "novaha-{}-{}",
        cfg.consul.prefix.trim_matches('/').replace('/', "-"),
        id
    );
    let info = LeaderInfo {
        id,
        host,
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    (info, check_id)
}

/// Cancels `root` on the first SIGTERM/SIGINT; exits 1 on the second.
async fn watch_signals(root: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        (Err(e), _) | (_, Err(e)) => {
            error!(error = %e, "cannot install signal handlers; stop the daemon with SIGKILL");
            return;
        }
    };
    let first = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    info!(
        signal = first,
        "shutdown requested: stopping, then releasing the lock"
    );
    systemd::notify("STOPPING=1");
    root.cancel();
    let second = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    error!(
        signal = second,
        "second signal: exiting at once without resigning"
    );
    std::process::exit(1);
}

/// How often the readiness check asks Consul whether it answers.
const READINESS_EVERY: Duration = Duration::from_secs(2);

/// Keeps `/readyz` true to Consul: asks it every [`READINESS_EVERY`]
/// (bounded by the request timeout) and records whether it answered.
async fn readiness(consul: Consul, health: Arc<Health>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(READINESS_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let answered = tokio::select! {
            _ = stop.cancelled() => return,
            r = consul.ping() => r,
        };
        // Logged on a change only: an outage is one line, not one per check.
        match (&answered, health.consul_answered()) {
            (Err(e), true) => {
                warn!(error = %e, "readiness check: consul did not answer; /readyz says 503");
            }
            (Ok(()), false) => info!("readiness check: consul answers again"),
            _ => {}
        }
        health.set_consul(answered.is_ok());
    }
}

/// Waits `backoff` after a failed attempt, racing shutdown (`root`), with
/// the watchdog pinged meanwhile, then doubles `backoff` up to `cap`.
/// `Break` when shutdown was requested instead.
async fn back_off(
    watchdog: &mut Watchdog,
    root: &CancellationToken,
    backoff: &mut Duration,
    cap: Duration,
) -> ControlFlow<()> {
    let wait = *backoff;
    let stopped = watchdog
        .drive(async {
            tokio::select! {
                _ = root.cancelled() => true,
                _ = tokio::time::sleep(wait) => false,
            }
        })
        .await;
    if stopped {
        return ControlFlow::Break(());
    }
    *backoff = novaha_core::backoff::Backoff::new(BACKOFF_START, cap).next(wait);
    ControlFlow::Continue(())
}

/// `novaha run [--once]`.
pub async fn run(cfg: Config, once: bool) -> anyhow::Result<ExitCode> {
    let (consul, schema) = crate::connect::connect(&cfg)?;
    let (info, check_id) = identity(&cfg);
    let election_check_id = check_id.clone();
    // `run --once` reports into a registry nobody scrapes.
    let metrics = Metrics::new();
    let store = Arc::new(ConsulStore::new(consul.clone(), schema.clone()));
    let mut cycle = LeaderCycle::new(
        store,
        schema.clone(),
        info.id.clone(),
        cfg.monitor.interval,
        metrics.clone(),
    )
    .with_recovery(Arc::new(cfg.clone()), once);
    let mut election = Election::new(
        consul.clone(),
        schema.clone(),
        ElectionSettings {
            session_ttl: cfg.election.session_ttl,
            lock_delay: cfg.election.lock_delay,
            check_ttl: cfg.election.check_ttl,
            check_id,
            leader_info: info.clone(),
        },
    );
    let root = CancellationToken::new();
    let tracker = TaskTracker::new();
    tracker.spawn(watch_signals(root.clone()));
    if once {
        // A one-shot run with the daemon's own id would take over (and on
        // resign remove) the running daemon's check.
        let code = match refuse_duplicate_id(
            &consul,
            &election_check_id,
            &info.id,
            cfg.election.check_ttl,
            &root,
        )
        .await
        {
            Err(e) if e.downcast_ref::<DuplicateId>().is_some() => {
                eprintln!("novaha: {e:#}");
                Ok(ExitCode::from(crate::EXIT_CONFIG))
            }
            Err(e) => Err(e),
            Ok(_) => run_once(&cfg, &consul, &schema, &mut election, &mut cycle, &root).await,
        };
        root.cancel();
        tracker.close();
        return code;
    }
    let health = Health::new();
    let mut cycle = cycle.with_health(health.clone());
    // Stopped last, after the resign: a standalone token, not a child of
    // the root, so scrapes and probes still answer while the lock is
    // released (the first signal cancels the root).
    let http = HttpServer::start(
        cfg.http.listen,
        metrics.clone(),
        health.clone(),
        CancellationToken::new(),
        &tracker,
    )
    .await?;
    // Pinged by this loop only (see systemd::Watchdog).
    let mut watchdog = Watchdog::from_env();
    info!(
        id = %info.id,
        host = %info.host,
        prefix = %schema,
        consul = %cfg.consul.address,
        role = "standby",
        "novaha started; racing for the leader lock"
    );
    // READY once Consul answers (the unit's promise); until then keep trying.
    let mut backoff = BACKOFF_START;
    loop {
        match watchdog.drive(consul.ping()).await {
            Ok(()) => break,
            Err(e) => {
                warn!(error = %e, consul = %cfg.consul.address, retry_in = ?backoff, "consul not reachable yet");
                if back_off(&mut watchdog, &root, &mut backoff, BACKOFF_CAP)
                    .await
                    .is_break()
                {
                    tracker.close();
                    http.stop().await;
                    return Ok(ExitCode::SUCCESS);
                }
            }
        }
    }
    let duplicate = watchdog
        .drive(refuse_duplicate_id(
            &consul,
            &election_check_id,
            &info.id,
            cfg.election.check_ttl,
            &root,
        ))
        .await;
    match duplicate {
        Ok(true) => {}
        Ok(false) => {
            tracker.close();
            http.stop().await;
            return Ok(ExitCode::SUCCESS);
        }
        Err(e) => {
            error!(error = format!("{e:#}"), "refusing to start");
            eprintln!("novaha: {e:#}");
            root.cancel();
            tracker.close();
            http.stop().await;
            let code = if e.downcast_ref::<DuplicateId>().is_some() {
                crate::EXIT_CONFIG
            } else {
                1
            };
            return Ok(ExitCode::from(code));
        }
    }
    health.set_consul(true);
    tracker.spawn(readiness(
        consul.clone(),
        health.clone(),
        root.child_token(),
    ));
    systemd::notify("READY=1");
    backoff = BACKOFF_START;
    while !root.is_cancelled() {
        systemd::notify("STATUS=standby");
        let lease = match watchdog.drive(election.acquire(&root)).await {
            Ok(Some(lease)) => lease,
            Ok(None) => break,
            Err(e) => {
                warn!(error = %e, retry_in = ?backoff, "leader election failed; retrying");
                if back_off(&mut watchdog, &root, &mut backoff, BACKOFF_CAP)
                    .await
                    .is_break()
                {
                    break;
                }
                continue;
            }
        };
        backoff = BACKOFF_START;
        metrics.set_leader(true);
        health.set_leader(true);
        info!(
            epoch = lease.epoch(),
            role = "leader",
            "acquired the leader lock"
        );
        systemd::notify("STATUS=leader");
        // All leader work races the lease: losing the lock stops it at once.
        let exit = watchdog.drive(cycle.run(&lease, &root)).await;
        metrics.set_leader(false);
        health.set_leader(false);
        match exit {
            LeaderExit::Shutdown => break,
            LeaderExit::LostLock => {
                metrics.leader_lost();
                error!(
                    epoch = lease.epoch(),
                    role = "standby",
                    "lost the leader lock: stopped all leader work, back to standby"
                );
            }
        }
    }
    info!("shutting down: resigning the leader lock");
    match watchdog.drive(election.resign()).await {
        Ok(()) => info!("resigned: lock released and session destroyed"),
        Err(e) => warn!(error = %e, "resign failed; the session expires by itself"),
    }
    tracker.close();
    http.stop().await;
    info!("novaha stopped");
    Ok(ExitCode::SUCCESS)
}

/// `run --once`: one leader cycle under the lock. Does not wait for a lock
/// someone else holds: it names the holder and exits non-zero.
async fn run_once(
    cfg: &Config,
    consul: &Consul,
    schema: &Schema,
    election: &mut Election,
    cycle: &mut LeaderCycle,
    root: &CancellationToken,
) -> anyhow::Result<ExitCode> {
    let held_by = |who: Option<LeaderInfo>| {
        if let Some(h) = who {
            eprintln!(
                "novaha: the leader lock {} is held by another process: id={} host={} pid={} version={}",
                schema.leader(),
                h.id,
                h.host,
                h.pid,
                h.version
            );
        } else {
            eprintln!(
                "novaha: could not acquire the leader lock {} in time",
                schema.leader()
            );
        }
        Ok(ExitCode::from(EXIT_NOT_LEADER))
    };
    let holder = Election::current_leader(consul, schema)
        .await
        .context("read the leader lock")?;
    if holder.is_some() {
        return held_by(holder);
    }
    // The lock is free, or only held back by lock-delay: try for at most
    // lock-delay plus a margin, never block on a live holder.
    let attempt = root.child_token();
    let done = CancellationToken::new();
    let wait = cfg.election.lock_delay + Duration::from_secs(5);
    let acquire = async {
        let r = election.acquire(&attempt).await;
        done.cancel();
        r
    };
    let timer = async {
        tokio::select! {
            _ = tokio::time::sleep(wait) => attempt.cancel(),
            _ = done.cancelled() => {}
        }
    };
    let (acquired, ()) = tokio::join!(acquire, timer);
    let lease = match acquired.context("acquire the leader lock")? {
        Some(lease) => lease,
        None if root.is_cancelled() => return Ok(ExitCode::FAILURE),
        None => {
            let holder = Election::current_leader(consul, schema)
                .await
                .context("read the leader lock")?;
            return held_by(holder);
        }
    };
    let result = cycle.cycle(&lease).await;
    // Recoveries started by the cycle run as far as they can without
    // waiting on something external, then the lock is released.
    let (outcomes, plans) = cycle.drain().await;
    if let Err(e) = election.resign().await {
        warn!(error = %e, "resign failed; the session expires by itself");
    }
    let report = result.context("leader cycle")?;
    print!(
        "{}",
        novaha_report::once_summary(&report, &outcomes, &plans)
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn back_off_waits_doubles_up_to_the_cap_and_yields_to_shutdown() {
        let ms = |v: u64| Duration::from_millis(v);
        let mut watchdog = Watchdog::new(None);
        let root = CancellationToken::new();
        let mut backoff = ms(5);
        let mut next = Vec::new();
        for _ in 0..5 {
            let waited = backoff;
            let before = tokio::time::Instant::now();
            let flow = back_off(&mut watchdog, &root, &mut backoff, ms(30)).await;
            assert!(flow.is_continue());
            assert!(before.elapsed() >= waited, "it waited {waited:?}");
            next.push(backoff);
        }
        assert_eq!(next, [ms(10), ms(20), ms(30), ms(30), ms(30)]);
        root.cancel();
        let mut long = Duration::from_secs(3600);
        let flow = back_off(&mut watchdog, &root, &mut long, BACKOFF_CAP).await;
        assert!(flow.is_break(), "shutdown ends the wait");
        assert_eq!(long, Duration::from_secs(3600), "no doubling on shutdown");
    }
}
