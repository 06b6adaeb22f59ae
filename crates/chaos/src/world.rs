//! The simulated world: every peer's truth (hosts, their power and BMCs,
//! Nova's services and servers, Consul's K/V tree and lock) in one place,
//! and the invariant checks made as the daemon acts on it.
//!
//! The fakes in `fakes.rs` are thin: each call sleeps a random virtual
//! latency, then reads or changes this world under one lock.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use novaha_core::kv::{ClusterState, KvEntry, Schema, Snapshot};
use novaha_core::record::{InstanceState, RecoveryRecord};
use novaha_core::store::KvOp;
use novaha_core::{NodeName, PowerState};
use tokio::time::Instant;

use crate::schedule::{CommitFault, Rng};

/// How long after a peer changes the daemon may still act on what it read
/// before (a decision in flight, a monitor read up to one interval old).
pub const GRACE: Duration = Duration::from_secs(5);

/// The monitor's interval in every run.
pub const INTERVAL: Duration = Duration::from_secs(10);

/// How long a dead host's nova-compute still reads `up` (Nova's
/// `service_down_time`, short here).
pub const SERVICE_DOWN_TIME: Duration = Duration::from_secs(20);

/// One physical host (compute or spare).
#[derive(Clone, Debug)]
pub struct Host {
    /// A spare (registered under `ha_nodes/`).
    pub spare: bool,
    /// The OS runs (nova-compute heartbeats, the agent answers).
    pub alive: bool,
    /// When it stopped heartbeating (death or partition).
    pub silent_since: Option<Instant>,
    /// Cut off by a partition (alive, but every signal says dead).
    pub partitioned: bool,
    /// When its last partition healed (the daemon sees it at the monitor's
    /// next read).
    pub healed_at: Option<Instant>,
    /// The partition cut off more live hosts at once than the mass-failure
    /// guard allows (two): none of them may be fenced.
    pub mass_partition: bool,
    /// The chassis power.
    pub power_on: bool,
    /// The BMC does not answer until then.
    pub bmc_down_until: Option<Instant>,
    /// After the next power-off, the power comes back on this much later.
    pub restore_after: Option<Duration>,
    /// When the power will come back on by itself.
    pub restore_at: Option<Instant>,
    /// nova-compute's service id.
    pub service_id: String,
    /// The service is enabled.
    pub enabled: bool,
    /// The service is forced down.
    pub forced_down: bool,
}

impl Host {
    /// Nova's `state`: up while it heartbeats (and a while after), never
    /// while forced down.
    pub fn reported_up(&self, now: Instant) -> bool {
        if self.forced_down {
            return false;
        }
        match self.silent_since {
            None => true,
            Some(at) => now < at + SERVICE_DOWN_TIME,
        }
    }

    /// Since when Nova reports it down (`None` while up).
    pub fn down_since(&self, now: Instant) -> Option<Instant> {
        if self.reported_up(now) {
            return None;
        }
        Some(self.silent_since.map_or(now, |s| s + SERVICE_DOWN_TIME))
    }

    /// Every signal reads it as failed (dead or cut off).
    pub fn silent(&self) -> bool {
        !self.alive || self.partitioned
    }
}

/// What an accepted evacuation does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Landing {
    /// Lands on the target (ACTIVE, or SHUTOFF from 2.95).
    Lands,
    /// Fails on the target: the server goes ERROR, the migration `error`.
    Error,
    /// Never completes.
    Never,
}

/// An evacuation Nova accepted and is carrying out.
#[derive(Clone, Debug)]
pub struct Task {
    /// The host it leaves.
    pub source: String,
    /// Where it goes.
    pub target: String,
    /// When it completes.
    pub done_at: Instant,
    /// How it ends.
    pub landing: Landing,
}

/// One Nova server.
#[derive(Clone, Debug)]
pub struct Server {
    /// Its host.
    pub host: String,
    /// Its status.
    pub status: String,
    /// Its status when the world started (what its owner expects back).
    pub prior: String,
    /// Its cell is down: Nova shows no host.
    pub hidden_until: Option<Instant>,
    /// When its cell went down (a read just before may still show a host).
    pub hidden_since: Option<Instant>,
    /// The evacuation in progress.
    pub task: Option<Task>,
    /// The latest evacuation failed (Nova shows the migration `error`).
    pub failed_evacuation: Option<String>,
    /// The next evacuation lands in ERROR / never lands.
    pub next_landing: Landing,
    /// Evacuations Nova accepted, by source host.
    pub accepted: BTreeMap<String, u32>,
    /// Deleted by its owner.
    pub deleted: bool,
}

/// The Consul side: the K/V tree and the lock.
#[derive(Clone, Debug, Default)]
pub struct Consul {
    /// Key -> (value, ModifyIndex).
    pub kv: BTreeMap<String, (Vec<u8>, u64)>,
    /// The last index.
    pub index: u64,
    /// The session holding the lock.
    pub holder: Option<String>,
    /// The lock may not be acquired before this (lock-delay).
    pub free_at: Option<Instant>,
    /// Faults for the next commits.
    pub commit_faults: VecDeque<CommitFault>,
}

/// The two controllers' view of the lock, for the lease invariants.
#[derive(Clone, Debug, Default)]
pub struct Controller {
    /// Its current session, if it ever led.
    pub session: Option<String>,
    /// When its session stopped holding the lock (Consul's view).
    pub lost_at: Option<Instant>,
}

/// The whole simulated world.
pub struct World {
    /// Virtual wall time at the start.
    pub t0: DateTime<Utc>,
    /// tokio's (paused) clock at the start.
    pub start: Instant,
    /// The key layout.
    pub schema: Schema,
    /// Every host by name.
    pub hosts: BTreeMap<String, Host>,
    /// Every server by id.
    pub servers: BTreeMap<String, Server>,
    /// The randomness of call outcomes and latencies.
    pub rng: Rng,
    /// Nova answers 503 until then.
    pub nova_down_until: Option<Instant>,
    /// Nova calls fail with this percentage until then.
    pub nova_flaky: Option<(u64, Instant)>,
    /// Consul.
    pub consul: Consul,
    /// The two controllers.
    pub controllers: [Controller; 2],
    /// Every power reading the daemon got, per host, latest last.
    pub readings: BTreeMap<String, Vec<(Instant, PowerState)>>,
    /// Hosts in maintenance, since when.
    pub maintenance: BTreeMap<String, Instant>,
    /// The cluster is paused, since when.
    pub paused: Option<Instant>,
    /// Keys holding an operator's invalid value.
    pub invalid: BTreeSet<String>,
    /// Every instance id ever recorded in a recovery record, by incident.
    pub recorded: BTreeMap<(String, String), BTreeSet<String>>,
    /// Every invariant violation seen, with its virtual time.
    pub violations: Vec<String>,
    /// A running digest of everything that happened (replays compare it).
    pub digest: u64,
    /// Evacuated servers land SHUTOFF (Nova microversion >= 2.95).
    pub lands_shutoff: bool,
}

impl World {
    /// The virtual wall clock (the first controller's).
    pub fn wall(&self) -> DateTime<Utc> {
        self.t0 + TimeDelta::from_std(Instant::now() - self.start).expect("a run is short")
    }

    /// Seconds since the start, for messages.
    pub fn secs(&self) -> f64 {
        (Instant::now() - self.start).as_secs_f64()
    }

    /// Records a violation with the virtual time.
    pub fn violation(&mut self, what: String) {
        let at = self.secs();
        self.violations.push(format!("at {at:.1}s: {what}"));
    }

    /// Folds `what` into the run's digest.
    pub fn note(&mut self, what: &str) {
        for b in what.bytes() {
            self.digest = (self.digest ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3);
        }
    }

    /// Applies what time did since the last call: power restored by the
    /// BMC, evacuations that completed.
    pub fn settle(&mut self) {
        let now = Instant::now();
        for h in self.hosts.values_mut() {
            if let Some(at) = h.restore_at
                && now >= at
            {
                h.power_on = true;
                h.restore_at = None;
            }
        }
        let lands_shutoff = self.lands_shutoff;
        for s in self.servers.values_mut() {
            let Some(t) = s.task.clone() else { continue };
            if t.landing == Landing::Never || now < t.done_at {
                continue;
            }
            s.task = None;
            match t.landing {
                Landing::Lands => {
                    s.host = t.target.clone();
                    s.status = if lands_shutoff {
                        "SHUTOFF".to_owned()
                    } else {
                        s.prior.clone()
                    };
                }
                _ => {
                    s.status = "ERROR".to_owned();
                    s.failed_evacuation = Some(format!("No valid host was found on {}", t.target));
                    // It never left: a later evacuation is not a second one.
                    s.accepted.remove(&t.source);
                }
            }
        }
    }

    /// The controller's session holds the lock, or lost it within
    /// [`GRACE`] (a call already on its way). Otherwise a violation of
    /// rule 11 is recorded for `what`.
    pub fn check_lease(&mut self, ctrl: usize, what: &str) {
        let c = &self.controllers[ctrl];
        let holds = c.session.is_some() && c.session == self.consul.holder;
        if holds {
            return;
        }
        let late = c.lost_at.is_none_or(|at| Instant::now() > at + GRACE);
        if late {
            self.violation(format!(
                "rule 11: controller {ctrl} {what} without holding the lock"
            ));
        }
    }

    /// Nothing destructive for a node in maintenance or while paused
    /// (rule 9), allowing for decisions already in flight.
    pub fn check_not_held(&mut self, node: &str, what: &str) {
        let now = Instant::now();
        if let Some(since) = self.maintenance.get(node)
            && now > *since + GRACE
        {
            self.violation(format!("rule 9: {what} of {node} in maintenance"));
        }
        if let Some(since) = self.paused
            && now > since + GRACE
        {
            self.violation(format!("rule 9: {what} of {node} while paused"));
        }
    }

    /// The latest power reading of `node` the daemon got.
    pub fn last_reading(&self, node: &str) -> Option<PowerState> {
        self.readings
            .get(node)
            .and_then(|r| r.last())
            .map(|(_, p)| *p)
    }

    /// A spare Nova has reported down longer than the daemon could miss.
    pub fn spare_long_down(&self, spare: &str) -> bool {
        let now = Instant::now();
        self.hosts
            .get(spare)
            .and_then(|h| h.down_since(now))
            .is_some_and(|since| now > since + INTERVAL + GRACE)
    }

    /// The snapshot of the tree.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            index: self.consul.index,
            entries: self
                .consul
                .kv
                .iter()
                .map(|(k, (v, i))| {
                    (
                        k.clone(),
                        KvEntry {
                            value: Some(v.clone()),
                            modify_index: *i,
                        },
                    )
                })
                .collect(),
        }
    }

    /// An operator's (or the seed's) unconditional write.
    pub fn put(&mut self, key: &str, value: &str) {
        self.consul.index += 1;
        let i = self.consul.index;
        self.consul
            .kv
            .insert(key.to_owned(), (value.as_bytes().to_vec(), i));
    }

    /// A value of the tree as text.
    pub fn get(&self, key: &str) -> Option<String> {
        self.consul
            .kv
            .get(key)
            .map(|(v, _)| String::from_utf8_lossy(v).into_owned())
    }

    /// Applies a guarded transaction as Consul would at this moment:
    /// refused whole unless `session` holds the lock and every CAS
    /// matches. Checks the invariants of what it writes.
    pub fn apply(&mut self, session: &str, ops: &[KvOp]) -> Result<(), String> {
        if self.consul.holder.as_deref() != Some(session) {
            return Err("not-leader".to_owned());
        }
        for op in ops {
            let (key, cas) = match op {
                KvOp::Set { key, cas, .. } | KvOp::Delete { key, cas } => (key, *cas),
            };
            let current = self.consul.kv.get(key).map_or(0, |(_, i)| *i);
            let ok = match op {
                KvOp::Set { .. } => current == cas,
                KvOp::Delete { .. } => current == cas || current == 0,
            };
            if !ok {
                return Err(format!("conflict on {key}"));
            }
        }
        self.check_writes(ops);
        for op in ops {
            self.consul.index += 1;
            let i = self.consul.index;
            match op {
                KvOp::Set { key, value, .. } => {
                    self.consul.kv.insert(key.clone(), (value.clone(), i));
                }
                KvOp::Delete { key, .. } => {
                    self.consul.kv.remove(key);
                }
            }
            self.note(op.key());
        }
        Ok(())
    }

    /// The invariants a landing write must keep (rules 3, 4, 5, 6, 9, 10).
    fn check_writes(&mut self, ops: &[KvOp]) {
        let prefix = format!("{}/", self.schema.prefix());
        let mut problems = Vec::new();
        for op in ops {
            let key = op.key().to_owned();
            if self.invalid.contains(&key) {
                problems.push(format!("rule 6: overwrote the invalid value of {key}"));
            }
            let rel = key.strip_prefix(&prefix).unwrap_or(&key).to_owned();
            let parts: Vec<&str> = rel.split('/').collect();
            match (op, parts.as_slice()) {
                (KvOp::Set { value, cas, .. }, ["compute_nodes", node, "status", flag])
                    if *flag == "failed" || *flag == "recovered" =>
                {
                    let v = String::from_utf8_lossy(value).to_ascii_lowercase();
                    // Creating a node's keys on first sight writes False.
                    if v == "false" && *cas != 0 {
                        problems.push(format!("rule 5: novaha wrote {flag}=False for {node}"));
                    }
                    if *flag == "recovered" && v == "true" {
                        let node = (*node).to_owned();
                        self.check_not_held(&node, "claim");
                    }
                }
                (KvOp::Delete { .. }, ["compute_nodes", node, "status", flag])
                    if *flag == "failed" || *flag == "recovered" =>
                {
                    problems.push(format!("rule 5: novaha deleted {flag} of {node}"));
                }
                (KvOp::Set { value, .. }, ["ha_nodes", spare, "status", "in_use"])
                    if String::from_utf8_lossy(value).eq_ignore_ascii_case("true")
                        && self.spare_long_down(spare) =>
                {
                    problems.push(format!(
                        "rule 10: claimed spare {spare} that Nova reports down"
                    ));
                }
                (KvOp::Set { value, .. }, ["compute_nodes", node, "internal", "recovery"]) => {
                    if let Ok(rec) = serde_json::from_slice::<RecoveryRecord>(value) {
                        self.check_record(node, &rec, &mut problems);
                    }
                }
                _ => {}
            }
        }
        // Rule 4: an HA node serves at most one failed node. Only a write of
        // a record can break it (every record was checked when written).
        let nodes = format!("{prefix}compute_nodes/");
        let record_of = |key: &str| -> Option<String> {
            key.strip_prefix(&nodes)
                .and_then(|r| r.strip_suffix("/internal/recovery"))
                .map(str::to_owned)
        };
        if !ops.iter().any(|op| record_of(op.key()).is_some()) {
            for p in problems {
                self.violation(p);
            }
            return;
        }
        let mut serving: BTreeMap<String, String> = BTreeMap::new();
        let mut records: Vec<(String, RecoveryRecord)> = Vec::new();
        for (k, (v, _)) in &self.consul.kv {
            if let Some(node) = record_of(k)
                && let Ok(r) = serde_json::from_slice::<RecoveryRecord>(v)
            {
                records.push((node, r));
            }
        }
        for op in ops {
            if let (KvOp::Set { value, .. }, Some(node)) = (op, record_of(op.key())) {
                records.retain(|(n, _)| *n != node);
                if let Ok(r) = serde_json::from_slice::<RecoveryRecord>(value) {
                    records.push((node, r));
                }
            }
        }
        for (node, r) in &records {
            if let Some(ha) = &r.ha_node
                && let Some(other) = serving.insert(ha.to_string(), node.clone())
            {
                problems.push(format!("rule 4: spare {ha} serves both {other} and {node}"));
            }
        }
        for p in problems {
            self.violation(p);
        }
    }

    /// Rule 3 on a record being written: `done` only on a known host other
    /// than the failed one.
    fn check_record(&mut self, node: &str, rec: &RecoveryRecord, problems: &mut Vec<String>) {
        let prev = self
            .get(&self.schema.recovery(&NodeName::from(node)))
            .and_then(|v| serde_json::from_str::<RecoveryRecord>(&v).ok())
            .filter(|p| p.incident == rec.incident);
        let now = Instant::now();
        self.recorded
            .entry((node.to_owned(), rec.incident.clone()))
            .or_default()
            .extend(rec.instances.keys().cloned());
        for (id, i) in &rec.instances {
            let was_done = prev
                .as_ref()
                .and_then(|p| p.instances.get(id))
                .is_some_and(|p| p.state == InstanceState::Done);
            if i.state != InstanceState::Done || was_done {
                continue;
            }
            let Some(s) = self.servers.get(id) else {
                continue;
            };
            if s.deleted {
                continue;
            }
            if s.host == node {
                problems.push(format!("rule 3: {id} recorded done but still on {node}"));
            } else if s.hidden_until.is_some_and(|u| now < u)
                && s.hidden_since.is_some_and(|since| now > since + GRACE)
            {
                // Within GRACE of the cell going down the daemon may act on
                // a read that still showed the host.
                problems.push(format!(
                    "rule 3: {id} recorded done while Nova shows no host for it"
                ));
            }
        }
    }

    /// The parsed tree.
    pub fn state(&self) -> ClusterState {
        ClusterState::parse(&self.schema, &self.snapshot())
    }
}

impl World {
    /// A new world for a cloud of `hosts` compute hosts and `spares`
    /// spares with `per_host` servers each, at virtual wall time `t0`.
    pub fn new(
        schema: Schema,
        hosts: usize,
        spares: usize,
        per_host: usize,
        lands_shutoff: bool,
        rng: Rng,
    ) -> Self {
        let start = Instant::now();
        let host = |spare: bool, i: usize| Host {
            spare,
            alive: true,
            silent_since: None,
            partitioned: false,
            mass_partition: false,
            healed_at: None,
            power_on: true,
            bmc_down_until: None,
            restore_after: None,
            restore_at: None,
            service_id: format!("svc-{i}"),
            enabled: !spare,
            forced_down: false,
        };
        let mut w = Self {
            t0: DateTime::parse_from_rfc3339("2026-12-01T03:00:00Z")
                .expect("a valid timestamp")
                .with_timezone(&Utc),
            start,
            schema,
            hosts: BTreeMap::new(),
            servers: BTreeMap::new(),
            rng,
            nova_down_until: None,
            nova_flaky: None,
            consul: Consul::default(),
            controllers: Default::default(),
            readings: BTreeMap::new(),
            maintenance: BTreeMap::new(),
            paused: None,
            invalid: BTreeSet::new(),
            recorded: BTreeMap::new(),
            violations: Vec::new(),
            digest: 0xcbf2_9ce4_8422_2325,
            lands_shutoff,
        };
        for i in 0..hosts {
            w.hosts.insert(host_name(i), host(false, i));
            for k in 0..per_host {
                let status = if k % 3 == 2 { "SHUTOFF" } else { "ACTIVE" };
                w.servers.insert(
                    server_name(i, k),
                    Server {
                        host: host_name(i),
                        status: status.to_owned(),
                        prior: status.to_owned(),
                        hidden_until: None,
                        hidden_since: None,
                        task: None,
                        failed_evacuation: None,
                        next_landing: Landing::Lands,
                        accepted: BTreeMap::new(),
                        deleted: false,
                    },
                );
            }
        }
        for i in 0..spares {
            w.hosts.insert(spare_name(i), host(true, hosts + i));
            let key = w.schema.in_use(&NodeName::from(spare_name(i).as_str()));
            w.put(&key, "False");
        }
        w
    }
}

/// The name of compute host `i`.
pub fn host_name(i: usize) -> String {
    format!("c{}", i + 1)
}

/// The name of spare `i`.
pub fn spare_name(i: usize) -> String {
    format!("ha-{}", i + 1)
}

/// The id of server `k` of compute host `i`.
pub fn server_name(i: usize, k: usize) -> String {
    format!("vm-c{}-{k}", i + 1)
}
