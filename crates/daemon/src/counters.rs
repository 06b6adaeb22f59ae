//! Counters the leader loop keeps, ready for the metrics module (issue 7)
//! to expose as `novaha_*` series. Plain atomics: cheap to bump from any
//! task, read by whoever renders them.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// What the daemon has counted since it started.
#[derive(Debug, Default)]
pub struct Counters {
    /// 1 while this process holds the leader lock (`novaha_leader`).
    pub leader: AtomicBool,
    /// Times this process became leader.
    pub leader_acquired_total: AtomicU64,
    /// Times it lost the lock without asking to (`novaha_leader_lost_total`).
    pub leader_lost_total: AtomicU64,
    /// Leader cycles that completed.
    pub cycles_total: AtomicU64,
    /// Leader cycles that failed (Consul unreachable, write refused, ...).
    pub cycle_errors_total: AtomicU64,
    /// Invalid values seen in the K/V tree, each counted once when it
    /// appears (`novaha_state_invalid_total`).
    pub state_invalid_total: AtomicU64,
    /// Invalid values present in the last cycle's snapshot.
    pub state_invalid_current: AtomicU64,
}

impl Counters {
    /// Adds one to `counter`.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads `counter`.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
