//! The leader cycle: what this process does while it holds the lock.
//!
//! Every `[monitor] interval` it reads the whole tree with one snapshot,
//! parses it, logs each invalid value once (node and key), and records the
//! cycle under `<prefix>/novaha/last_cycle` through the lease-checked store,
//! so a deposed leader's write is refused by Consul instead of landing.
//!
//! The seam for issue 4: [`LeaderCycle::cycle`] hands the parsed
//! [`ClusterState`] and the lease to [`LeaderCycle::act`]; the monitor and
//! the recovery runner plug in there, and nothing else changes.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use novaha_core::NodeName;
use novaha_core::kv::{ClusterState, Schema};
use novaha_core::store::{KvOp, LeaderLease, StateStore, StoreError};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::counters::Counters;

/// The bookkeeping key a leader rewrites every cycle (below the prefix's
/// `novaha/` folder).
pub const LAST_CYCLE: &str = "last_cycle";

/// Why the leader loop returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaderExit {
    /// The lease was lost (or a write was refused as not-leader): go back to
    /// standby and race again.
    LostLock,
    /// Shutdown was requested: resign.
    Shutdown,
}

/// What one cycle saw, written to `novaha/last_cycle` and printed by
/// `run --once`.
#[derive(Clone, Debug, Serialize)]
pub struct CycleReport {
    /// The leader's id.
    pub id: String,
    /// The tenure's epoch.
    pub epoch: String,
    /// When the cycle ran (RFC 3339).
    pub at: String,
    /// Compute nodes in the tree.
    pub compute_nodes: usize,
    /// HA nodes in the tree.
    pub ha_nodes: usize,
    /// Compute nodes whose `failed` flag is True.
    pub failed: Vec<NodeName>,
    /// Invalid values in the tree.
    pub invalid: usize,
}

/// The leader's state across cycles of one or more tenures.
pub struct LeaderCycle {
    store: Arc<dyn StateStore>,
    schema: Schema,
    id: String,
    interval: Duration,
    counters: Arc<Counters>,
    /// Invalid values already logged, as (key, raw excerpt): each is logged
    /// once while it stays, and again if it comes back after being fixed.
    logged_invalid: BTreeSet<(String, String)>,
}

impl LeaderCycle {
    /// A leader cycle over `store`, run every `interval`.
    pub fn new(
        store: Arc<dyn StateStore>,
        schema: Schema,
        id: String,
        interval: Duration,
        counters: Arc<Counters>,
    ) -> Self {
        Self {
            store,
            schema,
            id,
            interval,
            counters,
            logged_invalid: BTreeSet::new(),
        }
    }

    /// Runs cycles until the lease is lost or `shutdown` fires. The wait
    /// between cycles races both; a cycle in progress runs to its end (its
    /// read gives up when the lease is lost, its writes are refused by
    /// Consul once the lock is gone), so shutdown waits at most one cycle.
    pub async fn run(&mut self, lease: &LeaderLease, shutdown: &CancellationToken) -> LeaderExit {
        info!(id = %self.id, epoch = lease.epoch(), role = "leader", "acting as leader");
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return LeaderExit::Shutdown,
                _ = lease.lost() => return LeaderExit::LostLock,
                _ = tick.tick() => {}
            }
            // The cycle is not dropped mid-way: it races its own waits
            // against the lease, and once recovery units run inside `act`
            // they must finish (or stop between units), never be cut off.
            match self.cycle(lease).await {
                Ok(_) => {}
                Err(StoreError::NotLeader { .. }) if lease.is_lost() => {
                    return LeaderExit::LostLock;
                }
                Err(StoreError::NotLeader { session }) => {
                    // Consul refused the write: the lock is gone even if the
                    // election has not said so yet. Act no more; wait for
                    // the lease to be revoked (or retry after an interval,
                    // still refused if the lock really is gone).
                    Counters::inc(&self.counters.cycle_errors_total);
                    error!(
                        session,
                        epoch = lease.epoch(),
                        "leader write refused: this process no longer holds the lock"
                    );
                    tokio::select! {
                        biased;
                        _ = shutdown.cancelled() => return LeaderExit::Shutdown,
                        _ = lease.lost() => return LeaderExit::LostLock,
                        _ = tokio::time::sleep(self.interval) => {}
                    }
                }
                Err(e) => {
                    Counters::inc(&self.counters.cycle_errors_total);
                    warn!(error = %e, retryable = e.is_retryable(), "leader cycle failed; retrying next interval");
                }
            }
        }
    }

    /// One cycle: snapshot, parse, log invalid values, act, record.
    pub async fn cycle(&mut self, lease: &LeaderLease) -> Result<CycleReport, StoreError> {
        // A read is cancel-safe: give it up as soon as the lease is lost.
        let snap = tokio::select! {
            biased;
            _ = lease.lost() => {
                return Err(StoreError::NotLeader { session: lease.session().to_owned() });
            }
            r = self.store.snapshot() => r?,
        };
        let state = ClusterState::parse(&self.schema, &snap);
        let invalid = self.note_invalid(&state);
        self.act(&state, lease).await?;
        let report = CycleReport {
            id: self.id.clone(),
            epoch: lease.epoch().to_owned(),
            at: Utc::now().to_rfc3339(),
            compute_nodes: state.compute_nodes.len(),
            ha_nodes: state.ha_nodes.len(),
            failed: state
                .compute_nodes
                .values()
                .filter(|n| n.failed.get() == Some(true))
                .map(|n| n.name.clone())
                .collect(),
            invalid,
        };
        let key = self.schema.internal(LAST_CYCLE);
        let value = serde_json::to_vec(&report)
            .map_err(|e| StoreError::Refused(format!("cannot encode the cycle report: {e}")))?;
        self.store
            .commit(
                lease,
                &[KvOp::set(key.clone(), value, snap.cas_index(&key))],
            )
            .await?;
        Counters::inc(&self.counters.cycles_total);
        info!(
            role = "leader",
            epoch = lease.epoch(),
            compute_nodes = report.compute_nodes,
            ha_nodes = report.ha_nodes,
            failed = report.failed.len(),
            invalid = report.invalid,
            "leader cycle done"
        );
        Ok(report)
    }

    /// The seam where issue 4's monitor and recovery runner plug in: given
    /// the parsed tree and the lease, decide and act. Contract: nodes with
    /// invalid values are skipped and never written; every write goes
    /// through `self.store.commit(lease, ..)`; waits race `lease.lost()`;
    /// a destructive unit (one power-off, one evacuate call) is never
    /// dropped mid-flight, cancellation is checked between units. Today the
    /// leader only observes.
    async fn act(&mut self, _state: &ClusterState, _lease: &LeaderLease) -> Result<(), StoreError> {
        Ok(())
    }

    /// Logs every invalid value not logged yet, counts it, forgets the ones
    /// that were fixed. Returns how many are present now.
    fn note_invalid(&mut self, state: &ClusterState) -> usize {
        let mut present = BTreeSet::new();
        for node in state.compute_nodes.values() {
            for bad in &node.invalid {
                let id = (bad.key.clone(), bad.raw.clone());
                if !self.logged_invalid.contains(&id) {
                    Counters::inc(&self.counters.state_invalid_total);
                    error!(
                        node = %node.name,
                        key = %bad.key,
                        raw = %bad.raw,
                        reason = %bad.reason,
                        "invalid value in the state tree; node skipped until it is fixed"
                    );
                }
                present.insert(id);
            }
        }
        for ha in state.ha_nodes.values() {
            if let Err(bad) = &ha.in_use.value {
                let id = (bad.key.clone(), bad.raw.clone());
                if !self.logged_invalid.contains(&id) {
                    Counters::inc(&self.counters.state_invalid_total);
                    error!(
                        node = %ha.name,
                        key = %bad.key,
                        raw = %bad.raw,
                        reason = %bad.reason,
                        "invalid value in the state tree; HA node not used until it is fixed"
                    );
                }
                present.insert(id);
            }
        }
        let count = present.len();
        self.logged_invalid = present;
        self.counters
            .state_invalid_current
            .store(count as u64, std::sync::atomic::Ordering::Relaxed);
        count
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use novaha_core::kv::{KvEntry, Snapshot};
    use std::sync::Mutex;

    /// An in-memory store for the cycle's bookkeeping logic only; the
    /// election and the guarded writes are tested against real Consul in
    /// tests/election.rs.
    struct MemStore {
        snap: Mutex<Snapshot>,
        commits: Mutex<Vec<Vec<KvOp>>>,
        refuse: bool,
    }

    #[async_trait]
    impl StateStore for MemStore {
        async fn snapshot(&self) -> Result<Snapshot, StoreError> {
            Ok(self.snap.lock().expect("lock").clone())
        }
        async fn commit(&self, lease: &LeaderLease, ops: &[KvOp]) -> Result<(), StoreError> {
            if self.refuse {
                return Err(StoreError::NotLeader {
                    session: lease.session().to_owned(),
                });
            }
            self.commits.lock().expect("lock").push(ops.to_vec());
            Ok(())
        }
    }

    fn store(pairs: &[(&str, &str)], refuse: bool) -> Arc<MemStore> {
        let entries = pairs
            .iter()
            .map(|(k, v)| {
                (
                    (*k).to_owned(),
                    KvEntry {
                        value: Some(v.as_bytes().to_vec()),
                        modify_index: 5,
                    },
                )
            })
            .collect();
        Arc::new(MemStore {
            snap: Mutex::new(Snapshot { index: 9, entries }),
            commits: Mutex::new(Vec::new()),
            refuse,
        })
    }

    fn lease() -> LeaderLease {
        LeaderLease::new("s1".into(), "s1:1".into(), CancellationToken::new())
    }

    #[tokio::test]
    async fn invalid_values_are_counted_once_and_again_after_a_fix() {
        let mem = store(
            &[
                ("p/compute_nodes/c1/status/failed", "True"),
                ("p/compute_nodes/c2/status/failed", "maybe"),
                ("p/ha_nodes/h1/status/in_use", "perhaps"),
            ],
            false,
        );
        let counters = Arc::new(Counters::default());
        let mut cycle = LeaderCycle::new(
            mem.clone(),
            Schema::new("p"),
            "me".into(),
            Duration::from_secs(1),
            counters.clone(),
        );
        let l = lease();
        let r = cycle.cycle(&l).await.expect("cycle");
        assert_eq!(r.invalid, 2);
        assert_eq!(r.failed, vec![NodeName::from("c1")]);
        cycle.cycle(&l).await.expect("cycle");
        assert_eq!(Counters::get(&counters.state_invalid_total), 2);
        mem.snap
            .lock()
            .expect("lock")
            .entries
            .remove("p/compute_nodes/c2/status/failed");
        cycle.cycle(&l).await.expect("cycle");
        assert_eq!(Counters::get(&counters.state_invalid_current), 1);
        mem.snap.lock().expect("lock").entries.insert(
            "p/compute_nodes/c2/status/failed".into(),
            KvEntry {
                value: Some(b"maybe".to_vec()),
                modify_index: 7,
            },
        );
        cycle.cycle(&l).await.expect("cycle");
        assert_eq!(Counters::get(&counters.state_invalid_total), 3);
        let commits = mem.commits.lock().expect("lock");
        assert_eq!(commits.len(), 4);
        assert!(
            commits
                .iter()
                .all(|ops| ops.len() == 1 && ops[0].key() == "p/novaha/last_cycle")
        );
    }

    #[tokio::test]
    async fn a_refused_write_acts_no_more_until_the_lease_is_revoked() {
        let mem = store(&[], true);
        let counters = Arc::new(Counters::default());
        let mut cycle = LeaderCycle::new(
            mem.clone(),
            Schema::new("p"),
            "me".into(),
            Duration::from_millis(10),
            counters.clone(),
        );
        let l = lease();
        let token = l.token().clone();
        let revoke = async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            token.cancel();
        };
        let never = CancellationToken::new();
        let (exit, ()) = tokio::join!(cycle.run(&l, &never), revoke);
        assert_eq!(exit, LeaderExit::LostLock);
        assert!(mem.commits.lock().expect("lock").is_empty());
        assert_eq!(Counters::get(&counters.cycles_total), 0);
        assert!(Counters::get(&counters.cycle_errors_total) >= 1);
    }

    #[tokio::test]
    async fn losing_the_lease_or_shutdown_stops_the_loop() {
        let mem = store(&[], false);
        let mut cycle = LeaderCycle::new(
            mem,
            Schema::new("p"),
            "me".into(),
            Duration::from_millis(10),
            Arc::new(Counters::default()),
        );
        let l = lease();
        let token = l.token().clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            token.cancel();
        });
        assert_eq!(
            cycle.run(&l, &CancellationToken::new()).await,
            LeaderExit::LostLock
        );
        let stop = CancellationToken::new();
        stop.cancel();
        assert_eq!(cycle.run(&lease(), &stop).await, LeaderExit::Shutdown);
    }
}
