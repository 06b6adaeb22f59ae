//! The outbox: rendered messages kept in the state store (Consul) under
//! `<prefix>/novaha/outbox/<id>`, delivered by a worker the leader runs.
//!
//! Why a store-backed queue: a leader change must lose no pending message,
//! and a retried or resumed incident must never send the same message
//! twice. Ids are derived from incident + channel + recipient
//! ([`crate::message_id`]), and every write is a CAS under the leader lock, so
//! a second enqueue of the same incident finds its messages already there.
//!
//! Delivery guarantee: **at least once, with at most one duplicate per
//! crash**. A message is claimed before it is sent (status `sending`,
//! `attempts + 1`, `next_attempt = now + claim_ttl`, the leader's epoch), then
//! sent, then marked `sent` / `pending` (retry) / `failed` (permanent). If the
//! process dies (or loses the lock) between the send and the mark, the next
//! leader sees a `sending` entry whose claim expired and sends it again: the
//! one unavoidable duplicate. The other choice, at most once (never resend a
//! `sending` entry), would silently drop a message whenever a leader died
//! mid-send, and a lost message is worse for an operator than a repeated
//! one. The duplicate carries the same `Message-ID` / `Idempotency-Key`, so
//! receivers can tell. A leader that crashes before claiming causes no
//! duplicate at all.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use novaha_core::drivers::notify::{Directory, IncidentReport, NotifyError};
use novaha_core::kv::{Schema, Snapshot};
use novaha_core::store::{KvOp, LeaderLease, StateStore, StoreError};
use serde::{Deserialize, Serialize};

use crate::channel::Channel;
use crate::error::Error;
use crate::message::{Message, Payload, fnv1a64};
use crate::settings::NotifySettings;

/// The outbox entry format this build writes.
pub const ENTRY_VERSION: u32 = 1;

/// Largest stored entry. Consul refuses values over 512 KiB and whole
/// transactions over 512 KiB (values travel base64-encoded), so entries stay
/// well below; an oversized summary loses its HTML part, then the tail of its
/// text.
const MAX_ENTRY_BYTES: usize = 256 * 1024;

/// Most ops per transaction (Consul allows 64; the store adds its lock check).
const MAX_OPS_PER_TXN: usize = 32;

/// The backoff of failed sends: exponential with a cap (novaha's one
/// [`novaha_core::backoff::Backoff`]); the outbox adds a jitter derived
/// from each message's id.
pub use novaha_core::backoff::Backoff;

/// The default backoff of failed sends: 10 s, doubled per failure, at most
/// 15 minutes.
pub(crate) const DEFAULT_BACKOFF: Backoff =
    Backoff::new(Duration::from_secs(10), Duration::from_secs(15 * 60));

/// The delay after message `id`'s `attempt`-th failure (1-based): the
/// backoff's delay with "equal jitter" (between half and all of it). The
/// jitter is derived from the id and the attempt, so messages that failed
/// together spread out, and a test can predict the bounds.
pub(crate) fn retry_delay(backoff: &Backoff, attempt: u32, id: &str) -> Duration {
    let unit = (fnv1a64(&[id, &attempt.to_string()]) % 1_000_000) as f64 / 1_000_000.0;
    backoff.jittered(attempt, unit)
}

/// How the outbox retries and keeps messages.
#[derive(Clone, Debug)]
pub struct OutboxOptions {
    /// Retry delays after temporary failures.
    pub backoff: Backoff,
    /// Attempts before a message that keeps failing temporarily is marked
    /// failed (given up). Default 20 (about four hours with the default
    /// backoff).
    pub max_attempts: u32,
    /// How long a claim (`sending`) holds before another leader may resend
    /// the message. Must exceed every channel's send timeout. Default 5 min.
    pub claim_ttl: Duration,
    /// How long sent and failed entries stay (they make a late re-enqueue of
    /// the same incident a no-op). Default 7 days.
    pub retention: Duration,
    /// Sends in flight at once. Default 4.
    pub concurrency: usize,
    /// Most messages claimed per round. Default 32.
    pub batch: usize,
    /// The worker's longest sleep between rounds. Default 10 s.
    pub poll_interval: Duration,
}

impl Default for OutboxOptions {
    fn default() -> Self {
        Self {
            backoff: DEFAULT_BACKOFF,
            max_attempts: 20,
            claim_ttl: Duration::from_secs(300),
            retention: Duration::from_secs(7 * 24 * 3600),
            concurrency: 4,
            batch: 32,
            poll_interval: Duration::from_secs(10),
        }
    }
}

/// Where one message stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryStatus {
    /// Waiting for `next_attempt`.
    Pending,
    /// Claimed by a leader that is sending it; resent by another leader only
    /// once `next_attempt` (the claim's expiry) passes.
    Sending,
    /// Delivered (accepted by the SMTP server / webhook receiver).
    Sent,
    /// Refused for good, or given up after `max_attempts`; `last_error` says
    /// why. Never retried.
    Failed,
}

/// One stored message with its delivery state (JSON at
/// `<prefix>/novaha/outbox/<id>`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// Format version ([`ENTRY_VERSION`]).
    pub version: u32,
    /// The rendered message.
    pub message: Message,
    /// Where it stands.
    pub status: EntryStatus,
    /// Send attempts so far (claims).
    pub attempts: u32,
    /// When it was queued.
    pub created_at: DateTime<Utc>,
    /// When it may be (re)sent; for `sending`, when the claim expires.
    pub next_attempt: DateTime<Utc>,
    /// When the last attempt started.
    #[serde(default)]
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// When it was delivered.
    #[serde(default)]
    pub sent_at: Option<DateTime<Utc>>,
    /// Why the last attempt failed.
    #[serde(default)]
    pub last_error: Option<String>,
    /// The leader epoch of the last claim.
    #[serde(default)]
    pub epoch: Option<String>,
}

/// What [`Outbox::enqueue`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EnqueueSummary {
    /// Ids newly queued.
    pub queued: Vec<String>,
    /// Messages that were already in the outbox (queued, sent or failed).
    pub existing: usize,
}

/// What happened to one message in a delivery round, for metrics
/// (`novaha_notifications_total{driver,result}`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryOutcome {
    /// Message id.
    pub id: String,
    /// The channel's driver name.
    pub driver: String,
    /// `sent`, `retry`, `failed`, or `unknown` (sent but the mark could not
    /// be stored: it will be resent after the claim expires).
    pub result: &'static str,
}

/// Told of each message's [`DeliveryOutcome`] as soon as a delivery round
/// finished it, so the daemon can count them
/// (`novaha_notifications_total{driver,result}`) without this crate
/// depending on the daemon. It sees every round, [`Outbox::run`]'s and a
/// direct [`Outbox::deliver_due`]'s, including the outcomes of a round that
/// then fails as not-leader (those messages were sent). Called on the
/// delivering task: it must be quick and never block.
pub type OutcomeSink = Arc<dyn Fn(&DeliveryOutcome) + Send + Sync>;

/// What [`Outbox::deliver_due`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeliverySummary {
    /// Per message sent or tried this round.
    pub outcomes: Vec<DeliveryOutcome>,
    /// Entries skipped because they could not be parsed (left untouched).
    pub invalid: usize,
    /// Old sent/failed entries deleted.
    pub collected: usize,
    /// When the next pending message is due, if any.
    pub next_due: Option<DateTime<Utc>>,
    /// True when more messages are due now than one round handles.
    pub more_due: bool,
}

impl DeliverySummary {
    /// How many outcomes have `result`.
    pub fn count(&self, result: &str) -> usize {
        self.outcomes.iter().filter(|o| o.result == result).count()
    }
}

/// The store-backed queue of notifications and its delivery worker.
pub struct Outbox {
    store: Arc<dyn StateStore>,
    /// `<prefix>/novaha/outbox/`.
    folder: String,
    channels: Vec<Arc<Channel>>,
    options: OutboxOptions,
    wake: tokio::sync::Notify,
    warned_invalid: Mutex<HashSet<String>>,
    on_outcome: Option<OutcomeSink>,
}

impl Outbox {
    /// An outbox over `store` for `channels` (names must be unique: they are
    /// part of the message ids).
    pub fn new(
        store: Arc<dyn StateStore>,
        schema: &Schema,
        channels: Vec<Channel>,
        options: OutboxOptions,
    ) -> Result<Self, Error> {
        let mut names = HashSet::new();
        for c in &channels {
            if !names.insert(c.name().to_owned()) {
                return Err(Error::Config(format!(
                    "two [[notify]] entries are named {:?}; give one a distinct `name`",
                    c.name()
                )));
            }
        }
        Ok(Self {
            store,
            folder: format!("{}/", schema.internal("outbox")),
            channels: channels.into_iter().map(Arc::new).collect(),
            options,
            wake: tokio::sync::Notify::new(),
            warned_invalid: Mutex::new(HashSet::new()),
            on_outcome: None,
        })
    }

    /// Reports every message's outcome to `sink` from now on (see
    /// [`OutcomeSink`]); the daemon wires its metrics here.
    pub fn with_outcome_sink(mut self, sink: OutcomeSink) -> Self {
        self.on_outcome = Some(sink);
        self
    }

    /// Builds every `[[notify]]` channel and the outbox over them.
    pub fn from_settings(
        store: Arc<dyn StateStore>,
        schema: &Schema,
        settings: &[NotifySettings],
        directory: Arc<dyn Directory>,
        options: OutboxOptions,
    ) -> Result<Self, Error> {
        let channels = settings
            .iter()
            .map(|s| crate::build_channel(s, directory.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(store, schema, channels, options)
    }

    /// The K/V key of message `id`.
    pub fn key(&self, id: &str) -> String {
        format!("{}{id}", self.folder)
    }

    /// Renders `report` through every channel and stores each message not
    /// already in the outbox (pending, due at `now`). Idempotent: the ids are
    /// stable, so calling it again (a retry, a new leader resuming the
    /// incident) adds only what is missing and never re-queues a message
    /// that was sent. Fast (one read, a few CAS writes): it never sends.
    ///
    /// Errors: `Store` (`NotLeader`: stop; `Unavailable`: re-call later);
    /// `Directory`: owners could not be looked up; every other message was
    /// stored, call again later to add the owners' ones.
    pub async fn enqueue(
        &self,
        lease: &LeaderLease,
        report: &IncidentReport,
        now: DateTime<Utc>,
    ) -> Result<EnqueueSummary, Error> {
        let mut planned: Vec<Message> = Vec::new();
        let mut lookup_error = None;
        for c in &self.channels {
            let plan = c.plan(report).await?;
            planned.extend(plan.messages);
            if lookup_error.is_none() {
                lookup_error = plan.lookup_error;
            }
        }
        let mut summary = EnqueueSummary::default();
        // One retry covers a concurrent writer; a second conflict is real.
        for round in 0..2 {
            let snap = self.store.snapshot().await?;
            let mut ops = Vec::new();
            let mut ids = Vec::new();
            summary.existing = 0;
            for m in &planned {
                let key = self.key(&m.id);
                if snap.entries.contains_key(&key) {
                    summary.existing += 1;
                    continue;
                }
                let entry = OutboxEntry {
                    version: ENTRY_VERSION,
                    message: fit(m.clone()),
                    status: EntryStatus::Pending,
                    attempts: 0,
                    created_at: now,
                    next_attempt: now,
                    last_attempt_at: None,
                    sent_at: None,
                    last_error: None,
                    epoch: None,
                };
                ops.push(KvOp::set(key, encode(&entry), 0));
                ids.push(m.id.clone());
            }
            match self.commit_chunked(lease, &ops).await {
                Ok(()) => {
                    summary.queued.extend(ids);
                    break;
                }
                Err(StoreError::Conflict { key }) if round == 0 => {
                    tracing::debug!(key = %key, "outbox entry appeared concurrently; re-reading");
                }
                Err(e) => return Err(e.into()),
            }
        }
        for id in &summary.queued {
            tracing::info!(incident = %report.incident, message = %id, "notification queued");
        }
        self.wake.notify_one();
        match lookup_error {
            Some(e) => Err(e.into()),
            None => Ok(summary),
        }
    }

    /// Commits `ops` in transactions of bounded count and size. A failure
    /// stops at that chunk (earlier chunks stay committed; every op is a
    /// create-only or CAS write, so a re-call is safe).
    async fn commit_chunked(&self, lease: &LeaderLease, ops: &[KvOp]) -> Result<(), StoreError> {
        let mut chunk: Vec<KvOp> = Vec::new();
        let mut bytes = 0;
        for op in ops {
            let len = match op {
                KvOp::Set { value, .. } => value.len(),
                KvOp::Delete { .. } => 0,
            };
            if !chunk.is_empty()
                && (chunk.len() >= MAX_OPS_PER_TXN || bytes + len > MAX_ENTRY_BYTES)
            {
                self.store.commit(lease, &chunk).await?;
                chunk.clear();
                bytes = 0;
            }
            bytes += len;
            chunk.push(op.clone());
        }
        if !chunk.is_empty() {
            self.store.commit(lease, &chunk).await?;
        }
        Ok(())
    }

    /// Every parsable entry with its ModifyIndex, by key. Unparsable ones
    /// are logged once each and skipped: never overwritten.
    fn parse(&self, snap: &Snapshot) -> (BTreeMap<String, (OutboxEntry, u64)>, usize) {
        let mut out = BTreeMap::new();
        let mut invalid = 0;
        for (key, e) in snap.entries.range(self.folder.clone()..) {
            let Some(id) = key.strip_prefix(&self.folder) else {
                break;
            };
            if id.is_empty() || id.contains('/') {
                continue;
            }
            let parsed = e
                .value
                .as_deref()
                .ok_or_else(|| "no value".to_owned())
                .and_then(|v| serde_json::from_slice::<OutboxEntry>(v).map_err(|e| e.to_string()));
            match parsed {
                Ok(entry) => {
                    out.insert(key.clone(), (entry, e.modify_index));
                }
                Err(reason) => {
                    invalid += 1;
                    let first = self
                        .warned_invalid
                        .lock()
                        .map(|mut w| w.insert(key.clone()))
                        .unwrap_or(true);
                    if first {
                        tracing::warn!(key = %key, reason = %reason, "invalid outbox entry; left untouched");
                    }
                }
            }
        }
        (out, invalid)
    }

    /// Every parsable outbox entry (for `novaha status` and tests).
    pub async fn entries(&self) -> Result<Vec<OutboxEntry>, Error> {
        let snap = self.store.snapshot().await?;
        Ok(self.parse(&snap).0.into_values().map(|(e, _)| e).collect())
    }

    fn channel(&self, name: &str) -> Option<&Arc<Channel>> {
        self.channels.iter().find(|c| c.name() == name)
    }

    /// One delivery round at `now`: deletes sent/failed entries older than
    /// the retention, claims up to `batch` due messages (pending, or
    /// `sending` with an expired claim), sends them with bounded concurrency
    /// and records each result. A permanent failure is recorded on its
    /// message and never stops the others. Checks the lease between messages
    /// and never starts a send once it is lost.
    ///
    /// Errors: `Store(NotLeader)` (stop: another leader owns the outbox),
    /// `Store(Unavailable)` (try the round again later).
    pub async fn deliver_due(
        &self,
        lease: &LeaderLease,
        now: DateTime<Utc>,
    ) -> Result<DeliverySummary, Error> {
        if lease.is_lost() {
            return Ok(DeliverySummary::default());
        }
        let snap = self.store.snapshot().await?;
        let (entries, invalid) = self.parse(&snap);
        let mut summary = DeliverySummary {
            invalid,
            ..DeliverySummary::default()
        };

        // Garbage: finished entries past the retention.
        let retention =
            chrono::Duration::from_std(self.options.retention).unwrap_or(chrono::Duration::days(7));
        let garbage: Vec<KvOp> = entries
            .iter()
            .filter(|(_, (e, _))| matches!(e.status, EntryStatus::Sent | EntryStatus::Failed))
            .filter(|(_, (e, _))| {
                let done = e.sent_at.or(e.last_attempt_at).unwrap_or(e.created_at);
                done + retention < now
            })
            .map(|(k, (_, idx))| KvOp::Delete {
                key: k.clone(),
                cas: *idx,
            })
            .collect();
        if !garbage.is_empty() {
            match self.commit_chunked(lease, &garbage).await {
                Ok(()) => summary.collected = garbage.len(),
                Err(e @ StoreError::NotLeader { .. }) => return Err(e.into()),
                Err(e) => tracing::warn!(error = %e, "outbox clean-up failed; retried next round"),
            }
        }

        // Due: pending, or sending with an expired claim.
        let mut due: Vec<(&String, &OutboxEntry, u64)> = entries
            .iter()
            .filter(|(_, (e, _))| matches!(e.status, EntryStatus::Pending | EntryStatus::Sending))
            .filter(|(_, (e, _))| e.next_attempt <= now)
            .map(|(k, (e, idx))| (k, e, *idx))
            .collect();
        due.sort_by(|a, b| (a.1.next_attempt, a.0).cmp(&(b.1.next_attempt, b.0)));
        summary.more_due = due.len() > self.options.batch;
        due.truncate(self.options.batch);

        let claim_ttl = chrono::Duration::from_std(self.options.claim_ttl)
            .unwrap_or(chrono::Duration::minutes(5));
        let mut claims: Vec<(String, OutboxEntry)> = Vec::new();
        let mut ops = Vec::new();
        for (key, e, idx) in &due {
            if e.status == EntryStatus::Sending {
                tracing::warn!(
                    message = %e.message.id,
                    previous_epoch = e.epoch.as_deref().unwrap_or("-"),
                    "resending a message whose previous attempt never finished (leader crash?)"
                );
            }
            let mut c = (*e).clone();
            c.status = EntryStatus::Sending;
            c.attempts += 1;
            c.last_attempt_at = Some(now);
            c.next_attempt = now + claim_ttl;
            c.epoch = Some(lease.epoch().to_owned());
            ops.push(KvOp::set((*key).clone(), encode(&c), *idx));
            claims.push(((*key).clone(), c));
        }
        if claims.is_empty() {
            summary.next_due = entries
                .values()
                .filter(|(e, _)| matches!(e.status, EntryStatus::Pending | EntryStatus::Sending))
                .map(|(e, _)| e.next_attempt)
                .min();
            return Ok(summary);
        }
        // Claim in chunks; a chunk that conflicts is left for the next round.
        let mut claimed_keys = HashSet::new();
        for chunk in ops.chunks(MAX_OPS_PER_TXN) {
            match self.store.commit(lease, chunk).await {
                Ok(()) => claimed_keys.extend(chunk.iter().map(|op| op.key().to_owned())),
                Err(e @ StoreError::NotLeader { .. }) => return Err(e.into()),
                Err(e) => tracing::warn!(error = %e, "outbox claim failed; retried next round"),
            }
        }
        // The claims' new ModifyIndexes, for the result writes. Only entries
        // still holding exactly our claim are sent.
        let snap = self.store.snapshot().await?;
        let (now_entries, _) = self.parse(&snap);
        let mine: Vec<(String, OutboxEntry, u64)> = claims
            .into_iter()
            .filter(|(k, _)| claimed_keys.contains(k))
            .filter_map(|(k, c)| match now_entries.get(&k) {
                Some((stored, idx)) if *stored == c => Some((k, c, *idx)),
                _ => None,
            })
            .collect();

        let outcomes: Vec<Result<DeliveryOutcome, StoreError>> = futures::stream::iter(mine)
            .map(|(key, claim, idx)| self.send_one(lease, key, claim, idx, now))
            .buffer_unordered(self.options.concurrency.max(1))
            .filter_map(|o| async move { o })
            .collect()
            .await;
        let mut not_leader = None;
        for o in outcomes {
            match o {
                Ok(o) => {
                    if let Some(sink) = &self.on_outcome {
                        sink(&o);
                    }
                    summary.outcomes.push(o);
                }
                Err(e) => not_leader = Some(e),
            }
        }
        if let Some(e) = not_leader {
            return Err(e.into());
        }
        summary.next_due = None;
        if !summary.more_due {
            // Cheap estimate without another read: the earliest untouched
            // pending entry. Retries scheduled this round are picked up by
            // the worker's next poll (at most `poll_interval` late).
            let untouched = entries
                .iter()
                .filter(|(k, _)| !claimed_keys.contains(*k))
                .filter(|(_, (e, _))| {
                    matches!(e.status, EntryStatus::Pending | EntryStatus::Sending)
                })
                .map(|(_, (e, _))| e.next_attempt);
            summary.next_due = untouched.min();
        }
        Ok(summary)
    }

    /// Sends one claimed message and records the result. `None` when the
    /// lease was lost before the send (nothing sent); `Err(NotLeader)` when
    /// the result could not be recorded for that reason.
    async fn send_one(
        &self,
        lease: &LeaderLease,
        key: String,
        mut entry: OutboxEntry,
        idx: u64,
        now: DateTime<Utc>,
    ) -> Option<Result<DeliveryOutcome, StoreError>> {
        if lease.is_lost() {
            return None;
        }
        let m = &entry.message;
        let (driver, result) = match self.channel(&m.channel) {
            Some(c) => (c.driver_name(), c.send(m).await),
            None => (
                payload_driver(&m.payload),
                Err(NotifyError::Temporary {
                    driver: payload_driver(&m.payload),
                    detail: format!("channel {:?} is not configured", m.channel),
                }),
            ),
        };
        let label = match result {
            Ok(()) => {
                entry.status = EntryStatus::Sent;
                entry.sent_at = Some(now);
                entry.last_error = None;
                tracing::info!(message = %m.id, channel = %m.channel, recipient = %m.recipient, attempts = entry.attempts, "notification sent");
                "sent"
            }
            Err(e) if !e.is_retryable() => {
                entry.status = EntryStatus::Failed;
                entry.last_error = Some(e.to_string());
                tracing::error!(message = %m.id, channel = %m.channel, recipient = %m.recipient, error = %e, "notification refused; not retried");
                "failed"
            }
            Err(e) if entry.attempts >= self.options.max_attempts => {
                entry.status = EntryStatus::Failed;
                entry.last_error = Some(format!("gave up after {} attempts: {e}", entry.attempts));
                tracing::error!(message = %m.id, channel = %m.channel, recipient = %m.recipient, error = %e, attempts = entry.attempts, "notification given up");
                "failed"
            }
            Err(e) => {
                let delay = retry_delay(&self.options.backoff, entry.attempts, &m.id);
                entry.status = EntryStatus::Pending;
                entry.next_attempt = now
                    + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::minutes(15));
                entry.last_error = Some(e.to_string());
                tracing::warn!(message = %m.id, channel = %m.channel, recipient = %m.recipient, error = %e, attempts = entry.attempts, retry_in = ?delay, "notification failed; will retry");
                "retry"
            }
        };
        let outcome = DeliveryOutcome {
            id: entry.message.id.clone(),
            driver: driver.to_owned(),
            result: label,
        };
        let op = [KvOp::set(key, encode(&entry), idx)];
        // The send happened: try hard to record it, but only while leader.
        let mut wait = Duration::from_millis(200);
        for attempt in 0..4 {
            match self.store.commit(lease, &op).await {
                Ok(()) => return Some(Ok(outcome)),
                Err(e @ StoreError::NotLeader { .. }) => return Some(Err(e)),
                Err(e) if e.is_retryable() && attempt < 3 => {
                    tracing::warn!(message = %outcome.id, error = %e, "recording a notification result failed; retrying");
                    tokio::select! {
                        _ = lease.lost() => break,
                        _ = tokio::time::sleep(wait) => {}
                    }
                    wait *= 4;
                }
                Err(e) => {
                    tracing::error!(message = %outcome.id, error = %e, "notification result not recorded; it will be resent when its claim expires");
                    break;
                }
            }
        }
        Some(Ok(DeliveryOutcome {
            result: if label == "sent" { "unknown" } else { label },
            ..outcome
        }))
    }

    /// Wakes the worker at once (also done by [`Outbox::enqueue`]).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// The leader's delivery worker: rounds of [`Outbox::deliver_due`] until
    /// `lease` is lost, sleeping until the next message is due (at most
    /// `poll_interval`) or until woken by an enqueue. Every wait races the
    /// lease; a send in flight is allowed to finish. Spawn it through the
    /// leader's task tracker; it returns when leadership ends.
    pub async fn run(&self, lease: &LeaderLease) {
        let poll = self.options.poll_interval;
        loop {
            if lease.is_lost() {
                return;
            }
            let now = Utc::now();
            let wait = match self.deliver_due(lease, now).await {
                Ok(s) if s.more_due => Duration::ZERO,
                Ok(s) => s
                    .next_due
                    .map(|t| (t - now).to_std().unwrap_or(Duration::ZERO))
                    .unwrap_or(poll)
                    .min(poll),
                Err(e) if e.is_not_leader() => {
                    tracing::warn!(error = %e, "outbox worker stops: not the leader");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "outbox delivery round failed; retrying");
                    poll
                }
            };
            tokio::select! {
                _ = lease.lost() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

fn payload_driver(p: &Payload) -> &'static str {
    match p {
        Payload::Email { .. } => "email",
        Payload::Webhook { .. } => "webhook",
        Payload::Log { .. } => "log",
    }
}

fn encode(e: &OutboxEntry) -> Vec<u8> {
    serde_json::to_vec(e).expect("an outbox entry always serializes (plain data, string keys)")
}

/// Shrinks an oversized e-mail so its entry fits in one Consul value: drop
/// the HTML alternative first, then cut the text.
fn fit(mut m: Message) -> Message {
    let size = |m: &Message| serde_json::to_vec(m).map(|v| v.len()).unwrap_or(usize::MAX);
    // Leave room for the entry's own fields.
    let budget = MAX_ENTRY_BYTES - 2048;
    if size(&m) <= budget {
        return m;
    }
    if let Payload::Email { html, text, .. } = &mut m.payload {
        *html = "<p>This summary is too large for HTML; see the plain-text part.</p>".into();
        let over = serde_json::to_vec(&*text)
            .map(|v| v.len())
            .unwrap_or(usize::MAX)
            .saturating_sub(budget / 2);
        if over > 0 {
            let keep = text.len().saturating_sub(over + 200);
            let mut cut = keep.min(text.len());
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push_str("\n[truncated: the full list is in the incident record in Consul]\n");
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered_within_bounds() {
        let b = Backoff {
            base: Duration::from_secs(10),
            cap: Duration::from_secs(300),
        };
        for attempt in 1..=12 {
            let raw =
                Duration::from_secs(10 * (1u64 << (attempt - 1))).min(Duration::from_secs(300));
            let d = retry_delay(&b, attempt, "m1");
            assert!(
                d >= raw / 2 && d <= raw,
                "attempt {attempt}: {d:?} vs {raw:?}"
            );
        }
        assert_eq!(
            retry_delay(&b, 3, "m1"),
            retry_delay(&b, 3, "m1"),
            "deterministic"
        );
        let spread: HashSet<Duration> = (0..20)
            .map(|i| retry_delay(&b, 5, &format!("m{i}")))
            .collect();
        assert!(spread.len() > 10, "jitter spreads messages: {spread:?}");
        assert!(retry_delay(&b, u32::MAX, "x") <= Duration::from_secs(300));
    }

    #[test]
    fn oversized_email_is_shrunk_to_fit() {
        let big = "x".repeat(400 * 1024);
        let m = Message {
            id: "i".into(),
            incident: "inc".into(),
            node: "n".into(),
            channel: "email".into(),
            recipient: "a@b.c".into(),
            audience: crate::message::Audience::Admin,
            payload: Payload::Email {
                from: "f@b.c".into(),
                to: "a@b.c".into(),
                subject: "s".into(),
                text: big.clone(),
                html: big,
            },
        };
        let m = fit(m);
        let len = serde_json::to_vec(&m).expect("json").len();
        assert!(len < MAX_ENTRY_BYTES, "{len}");
        let Payload::Email { text, .. } = &m.payload else {
            panic!("email")
        };
        assert!(text.ends_with("in Consul]\n"));
    }
}
