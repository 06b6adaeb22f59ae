//! Leader election on a Consul session lock (docs/consul.md, "Election").
//!
//! A tenure is one session. The session is bound to `serfHealth` and to a
//! TTL check of our own that a keeper task passes every second, so a hung or
//! crashed process loses the lock after the check TTL (plus lock-delay for
//! the next leader) instead of after two session TTLs. The keeper runs from
//! the session's creation (a standby keeps its session alive while it
//! waits); once the lock is held a watcher follows the lock key with a
//! blocking query. Any sign of loss cancels the lease's token at once.

use std::time::{Duration, Instant};

use novaha_core::backoff::Backoff;
use novaha_core::kv::Schema;
use novaha_core::store::LeaderLease;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use crate::client::Consul;
use crate::error::ConsulError;

/// How long one blocking query on the lock key waits at most.
const WATCH_WAIT: Duration = Duration::from_secs(30);
/// How often to retry `?acquire` while the key is free but lock-delay holds.
const LOCK_DELAY_POLL: Duration = Duration::from_millis(250);
/// The pause after a retryable error while campaigning: 500 ms, doubled
/// per failure up to 5 s.
const BACKOFF: Backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(5));

/// The leader lock's value (**fixed** JSON: operators and scripts read it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderInfo {
    /// The daemon's id (config or host name).
    pub id: String,
    /// Host it runs on.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// novaha version.
    pub version: String,
}

/// Election timings and identity.
#[derive(Clone, Debug)]
pub struct ElectionSettings {
    /// Session TTL (Consul: 10s..24h); renewed every TTL/3.
    pub session_ttl: Duration,
    /// Lock-delay after an invalidation (not after a voluntary release).
    pub lock_delay: Duration,
    /// TTL of our own agent check (e.g. 3s), passed every second.
    pub check_ttl: Duration,
    /// The check's id with the local agent; unique per daemon on one agent.
    pub check_id: String,
    /// Written as the lock's value.
    pub leader_info: LeaderInfo,
}

/// One session and the tasks that keep it.
struct Tenure {
    session: String,
    /// Cancelled on any sign of loss (and on resign): the lease's token.
    lost: CancellationToken,
    /// Stops this tenure's tasks.
    stop: CancellationToken,
    lease: Option<LeaderLease>,
}

/// A campaigner for the leader lock. Owns its background tasks (through a
/// `TaskTracker`) and its session; call [`Election::resign`] on shutdown.
pub struct Election {
    consul: Consul,
    schema: Schema,
    settings: ElectionSettings,
    tracker: TaskTracker,
    tenure: Option<Tenure>,
}

impl std::fmt::Debug for Election {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Election")
            .field("check_id", &self.settings.check_id)
            .field("session", &self.tenure.as_ref().map(|t| t.session.as_str()))
            .finish_non_exhaustive()
    }
}

impl Election {
    /// A campaigner; does no I/O until [`Election::acquire`].
    pub fn new(consul: Consul, schema: Schema, settings: ElectionSettings) -> Self {
        Self {
            consul,
            schema,
            settings,
            tracker: TaskTracker::new(),
            tenure: None,
        }
    }

    /// The current session id, if any (standby or leader).
    pub fn session(&self) -> Option<&str> {
        self.tenure.as_ref().map(|t| t.session.as_str())
    }

    /// Blocks (a blocking query on the lock key, racing `shutdown`) until
    /// this process holds the lock, and returns the lease; `None` when
    /// `shutdown` fired first. Keeps retrying retryable Consul errors with
    /// backoff; returns non-retryable ones (e.g. an ACL refusal). While the
    /// returned lease is live, calling it again returns the same lease;
    /// after a loss it campaigns again with a new session. Cancel-safe.
    pub async fn acquire(
        &mut self,
        shutdown: &CancellationToken,
    ) -> Result<Option<LeaderLease>, ConsulError> {
        let mut backoff = BACKOFF.base;
        loop {
            if shutdown.is_cancelled() {
                return Ok(None);
            }
            match self.campaign_step(shutdown).await {
                Ok(Step::Leader(lease)) => return Ok(Some(lease)),
                Ok(Step::Shutdown) => return Ok(None),
                Ok(Step::Again) => backoff = BACKOFF.base,
                Err(e) if e.is_retryable() => {
                    warn!(error = %e, retry_in = ?backoff, "leader campaign failed; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(None),
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = BACKOFF.next(backoff);
                }
                Err(e) => {
                    error!(error = %e, "leader campaign refused");
                    return Err(e);
                }
            }
        }
    }

    async fn campaign_step(&mut self, shutdown: &CancellationToken) -> Result<Step, ConsulError> {
        let (was_lost, lease) = match &self.tenure {
            Some(t) => (t.lost.is_cancelled(), t.lease.clone()),
            None => (false, None),
        };
        if was_lost {
            self.end_tenure().await;
        } else if let Some(lease) = lease {
            return Ok(Step::Leader(lease));
        }
        if self.tenure.is_none() {
            self.start_tenure().await?;
        }
        let t = self.tenure.as_ref().expect("a tenure was just started");
        let key = self.schema.leader();
        let value =
            serde_json::to_vec(&self.settings.leader_info).expect("LeaderInfo always serialises");
        let acquired = match self.consul.kv_acquire(&key, &t.session, value).await {
            Ok(a) => a,
            Err(ConsulError::Status {
                status: 500, body, ..
            }) if body.to_ascii_lowercase().contains("session") => {
                // "invalid session": ours was invalidated; start over.
                warn!(session = %t.session, "session gone while campaigning");
                t.lost.cancel();
                return Ok(Step::Again);
            }
            Err(e) => return Err(e),
        };
        if acquired {
            let (entry, index) = self.consul.kv_get(&key, None).await?;
            let lock_index = match entry {
                Some(e) if e.session.as_deref() == Some(t.session.as_str()) => e.lock_index,
                _ => {
                    warn!(session = %t.session, "lock lost right after acquiring it");
                    return Ok(Step::Again);
                }
            };
            let epoch = format!("{}:{}", t.session, lock_index);
            let lease = LeaderLease::new(t.session.clone(), epoch.clone(), t.lost.clone());
            self.tracker.spawn(watch_lock(
                self.consul.clone(),
                key,
                t.session.clone(),
                index,
                t.lost.clone(),
                t.stop.clone(),
            ));
            info!(session = %t.session, epoch = %epoch, "leader lock acquired");
            let t = self.tenure.as_mut().expect("tenure still present");
            t.lease = Some(lease.clone());
            return Ok(Step::Leader(lease));
        }
        // Not ours: wait for the key to change (or lock-delay to pass).
        let (entry, index) = self.consul.kv_get(&key, None).await?;
        let held_by_other = entry
            .as_ref()
            .and_then(|e| e.session.as_deref())
            .is_some_and(|s| s != t.session);
        let wait = async {
            if held_by_other {
                debug!(index, "lock held by another session; watching it");
                self.consul
                    .kv_get(&key, Some((index, WATCH_WAIT)))
                    .await
                    .map(|_| ())
            } else {
                // Free but refused: lock-delay after an invalidation.
                tokio::time::sleep(LOCK_DELAY_POLL).await;
                Ok(())
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => Ok(Step::Shutdown),
            _ = t.lost.cancelled() => Ok(Step::Again),
            r = wait => r.map(|()| Step::Again),
        }
    }

    /// Registers and passes our check, creates a session bound to it and to
    /// `serfHealth`, and starts the keeper.
    async fn start_tenure(&mut self) -> Result<(), ConsulError> {
        let s = &self.settings;
        self.consul
            .check_register(&s.check_id, "novaha leader election", s.check_ttl)
            .await?;
        // A new check starts critical; a session cannot bind to it until passed.
        self.consul.check_pass(&s.check_id).await?;
        let passed_at = Instant::now();
        let session = self
            .consul
            .session_create(
                "novaha-leader",
                s.session_ttl,
                s.lock_delay,
                &["serfHealth", &s.check_id],
            )
            .await?;
        info!(session = %session, check_id = %s.check_id, "consul session created");
        let lost = CancellationToken::new();
        let stop = CancellationToken::new();
        // Two tasks: a renew waits on Consul's raft leader (up to its RPC
        // hold during an election), a check pass is local to the agent and
        // must never wait behind a renew, or a raft election longer than
        // the check TTL would expire our check and lose the lock for nothing.
        self.tracker.spawn(pass_check(
            self.consul.clone(),
            session.clone(),
            s.check_id.clone(),
            s.check_ttl,
            passed_at,
            lost.clone(),
            stop.clone(),
        ));
        self.tracker.spawn(renew_session(
            self.consul.clone(),
            session.clone(),
            s.session_ttl,
            lost.clone(),
            stop.clone(),
        ));
        self.tenure = Some(Tenure {
            session,
            lost,
            stop,
            lease: None,
        });
        Ok(())
    }

    /// Stops the tenure's tasks and destroys its session (best effort:
    /// Consul invalidates it by itself once the check is critical).
    async fn end_tenure(&mut self) {
        let Some(t) = self.tenure.take() else { return };
        t.lost.cancel();
        t.stop.cancel();
        self.tracker.close();
        self.tracker.wait().await;
        self.tracker.reopen();
        if let Err(e) = self.consul.session_destroy(&t.session).await {
            warn!(session = %t.session, error = %e, "could not destroy old session");
        }
    }

    /// Releases the lock (`?release=`, so the next leader needs no
    /// lock-delay), destroys the session and deregisters the check. Cancels
    /// the lease first: stop leader work before calling this. Idempotent;
    /// reports the first failure after trying every step.
    pub async fn resign(&mut self) -> Result<(), ConsulError> {
        let mut first_err = None;
        if let Some(t) = self.tenure.take() {
            t.lost.cancel();
            t.stop.cancel();
            self.tracker.close();
            self.tracker.wait().await;
            self.tracker.reopen();
            if t.lease.is_some() {
                match self
                    .consul
                    .kv_release(&self.schema.leader(), &t.session)
                    .await
                {
                    Ok(released) => {
                        info!(session = %t.session, released, "leader lock released");
                    }
                    Err(e) => {
                        warn!(session = %t.session, error = %e, "leader lock release failed");
                        first_err.get_or_insert(e);
                    }
                }
            }
            if let Err(e) = self.consul.session_destroy(&t.session).await {
                warn!(session = %t.session, error = %e, "session destroy failed");
                first_err.get_or_insert(e);
            }
        }
        if let Err(e) = self.consul.check_deregister(&self.settings.check_id).await {
            warn!(check_id = %self.settings.check_id, error = %e, "check deregister failed");
            first_err.get_or_insert(e);
        }
        match first_err {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }

    /// Who holds the lock now: the lock value of a key that has a session;
    /// `None` when nobody holds it. A value that is not valid `LeaderInfo`
    /// is a `Decode` error (the lock is held, by something we cannot read).
    pub async fn current_leader(
        consul: &Consul,
        schema: &Schema,
    ) -> Result<Option<LeaderInfo>, ConsulError> {
        let key = schema.leader();
        let Some(pair) = consul.kv_read_plain(&key).await? else {
            return Ok(None);
        };
        if pair.session.is_none() {
            return Ok(None);
        }
        let raw = pair.value.unwrap_or_default();
        serde_json::from_slice(&raw)
            .map(Some)
            .map_err(|e| ConsulError::Decode {
                what: format!("leader value at {key}"),
                detail: e.to_string(),
            })
    }
}

impl Drop for Election {
    /// No I/O here: only stops the background tasks and revokes the lease,
    /// so an election dropped without `resign` neither leaks a keeper nor
    /// keeps a lease alive. Consul then invalidates the session once the
    /// check TTL passes (and applies lock-delay).
    fn drop(&mut self) {
        if let Some(t) = &self.tenure {
            t.lost.cancel();
            t.stop.cancel();
        }
    }
}

enum Step {
    Leader(LeaderLease),
    Shutdown,
    Again,
}

/// Passes the check every second (at most a third of its TTL); cancels
/// `lost` on any sign of loss. Conservative: if no pass succeeded within the
/// check TTL (the agent unreachable, or this process frozen by SIGSTOP or a
/// stalled runtime) the check may have gone critical and the session with
/// it, so the lease is treated as lost before anything else runs.
async fn pass_check(
    consul: Consul,
    session: String,
    check_id: String,
    check_ttl: Duration,
    mut last_pass: Instant,
    lost: CancellationToken,
    stop: CancellationToken,
) {
    let pass_every = (check_ttl / 3).min(Duration::from_secs(1));
    let mut tick = tokio::time::interval(pass_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = lost.cancelled() => return,
            _ = tick.tick() => {}
        }
        let gap = last_pass.elapsed();
        if gap > check_ttl {
            warn!(session = %session, gap_ms = gap.as_millis() as u64, "check not passed within its TTL; lock presumed lost");
            lost.cancel();
            return;
        }
        let sent = Instant::now();
        match consul.check_pass(&check_id).await {
            Ok(()) if last_pass.elapsed() > check_ttl => {
                warn!(session = %session, "check pass landed after its TTL; lock presumed lost");
                lost.cancel();
                return;
            }
            Ok(()) => last_pass = sent,
            Err(e @ ConsulError::Status { .. }) => {
                warn!(session = %session, error = %e, "check pass refused; lock lost");
                lost.cancel();
                return;
            }
            Err(e) => warn!(session = %session, error = %e, "check pass failed; will retry"),
        }
    }
}

/// Renews the session every third of its TTL; cancels `lost` when Consul
/// says the session is gone. A failed renew is retried at the next period
/// (the session survives up to its TTL, and Consul waits longer still).
async fn renew_session(
    consul: Consul,
    session: String,
    session_ttl: Duration,
    lost: CancellationToken,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(session_ttl / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = lost.cancelled() => return,
            _ = tick.tick() => {}
        }
        let renewed = tokio::select! {
            _ = stop.cancelled() => return,
            _ = lost.cancelled() => return,
            r = consul.session_renew(&session) => r,
        };
        match renewed {
            Ok(true) => {}
            Ok(false) => {
                warn!(session = %session, "session renew: session gone; lock lost");
                lost.cancel();
                return;
            }
            Err(e) => warn!(session = %session, error = %e, "session renew failed; will retry"),
        }
    }
}

/// Follows the lock key with blocking queries; cancels `lost` as soon as
/// the key is gone or held by another session.
async fn watch_lock(
    consul: Consul,
    key: String,
    session: String,
    mut index: u64,
    lost: CancellationToken,
    stop: CancellationToken,
) {
    loop {
        let res = tokio::select! {
            _ = stop.cancelled() => return,
            _ = lost.cancelled() => return,
            r = consul.kv_get(&key, Some((index, WATCH_WAIT))) => r,
        };
        match res {
            Ok((entry, new_index)) => {
                let holder = entry.as_ref().and_then(|e| e.session.as_deref());
                if holder != Some(session.as_str()) {
                    warn!(session = %session, holder = ?holder, "leader key no longer ours; lock lost");
                    lost.cancel();
                    return;
                }
                // An index that goes backwards (snapshot restore) resets the wait.
                index = if new_index < index { 0 } else { new_index };
            }
            Err(e) => {
                warn!(session = %session, error = %e, "watching the leader key failed; retrying");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = lost.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
}
