//! The state store contract: one consistent read of the whole tree, and
//! writes that land only while the writer still holds the leader lock.

use async_trait::async_trait;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use crate::kv::Snapshot;

/// Proof of leadership handed out by the election, and revoked by it.
///
/// Every leader task holds a clone. When the lock is lost (renewal failed,
/// session invalidated, key taken) the election cancels the token, and every
/// task racing its waits against [`LeaderLease::lost`] stops at once. The
/// store still checks the session server-side on every write, so a task that
/// has not noticed yet cannot land a write either.
#[derive(Clone, Debug)]
pub struct LeaderLease {
    session: String,
    epoch: String,
    cancel: CancellationToken,
}

impl LeaderLease {
    /// Built by the election once the lock is acquired. `epoch` names this
    /// tenure (session id and lock index) for stamping on Nova calls.
    pub fn new(session: String, epoch: String, cancel: CancellationToken) -> Self {
        Self {
            session,
            epoch,
            cancel,
        }
    }

    /// The Consul session that holds the lock.
    pub fn session(&self) -> &str {
        &self.session
    }

    /// The error of a write or read cut short because this lease is lost
    /// (refused before it reaches the store, or raced against
    /// [`LeaderLease::lost`]).
    pub fn not_leader(&self) -> StoreError {
        StoreError::NotLeader {
            session: self.session.clone(),
        }
    }

    /// The tenure's epoch, e.g. `"<session>:<lock index>"`.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// True once leadership is gone.
    pub fn is_lost(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Resolves when leadership is lost; race every wait against it.
    pub fn lost(&self) -> WaitForCancellationFuture<'_> {
        self.cancel.cancelled()
    }

    /// The cancellation token that revokes this lease (child tokens for
    /// leader tasks).
    pub fn token(&self) -> &CancellationToken {
        &self.cancel
    }
}

/// One write in a guarded transaction. Every write carries a CAS index:
/// the ModifyIndex it was read at, or 0 for "only if it does not exist".
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvOp {
    /// Set `key` to `value` if its ModifyIndex is still `cas`.
    Set {
        /// Full key.
        key: String,
        /// New value.
        value: Vec<u8>,
        /// Expected ModifyIndex (0 = must not exist).
        cas: u64,
    },
    /// Delete `key` if its ModifyIndex is still `cas`.
    Delete {
        /// Full key.
        key: String,
        /// Expected ModifyIndex.
        cas: u64,
    },
}

impl KvOp {
    /// A CAS set of a text value.
    pub fn set(key: impl Into<String>, value: impl Into<Vec<u8>>, cas: u64) -> Self {
        Self::Set {
            key: key.into(),
            value: value.into(),
            cas,
        }
    }

    /// The key this op writes.
    pub fn key(&self) -> &str {
        match self {
            Self::Set { key, .. } | Self::Delete { key, .. } => key,
        }
    }
}

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The session no longer holds the lock: the write was refused whole.
    #[error("not the leader: session {session} no longer holds the lock; nothing was written")]
    NotLeader {
        /// The session that tried to write.
        session: String,
    },
    /// A CAS check failed: someone else wrote one of the keys since it was
    /// read. Nothing was written.
    #[error("conflict: {key} changed since it was read; nothing was written")]
    Conflict {
        /// The first key whose CAS failed.
        key: String,
    },
    /// Consul could not be reached or answered 5xx. A write may or may not
    /// have landed (a timeout is an unknown outcome): re-read before retrying.
    #[error("consul unavailable: {0}")]
    Unavailable(String),
    /// Consul refused the request (4xx other than a conflict), e.g. ACLs.
    #[error("consul refused: {0}")]
    Refused(String),
}

impl StoreError {
    /// True when the same call may succeed later (after a re-read).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::Conflict { .. })
    }
}

/// The state tree, stored in Consul in production.
#[async_trait]
pub trait StateStore: Send + Sync {
    /// Reads every key below the schema's prefix in one consistent recursive
    /// read. Read-only, idempotent and cancel-safe. `Unavailable` is
    /// retryable.
    async fn snapshot(&self) -> Result<Snapshot, StoreError>;

    /// Applies `ops` atomically, only if `lease`'s session still holds the
    /// leader lock and every op's CAS index still matches; otherwise nothing
    /// is written (`NotLeader`, `Conflict`). Not idempotent by itself (the CAS
    /// indexes make a replay fail as `Conflict`); after `Unavailable`, re-read
    /// before deciding to retry.
    async fn commit(&self, lease: &LeaderLease, ops: &[KvOp]) -> Result<(), StoreError>;
}
/// `[recovery] mode = "dry-run"`: a [`StateStore`] that shows its user
/// its own writes but never makes them, so that the leader runs the very
/// cycle it would run for real (detection counts, judges and marks nodes
/// failed, round after round) while the tree stays as it is.
///
/// A read is the inner store's tree with the shadowed writes laid over it;
/// a commit goes into the shadow, never to the inner store, except for the
/// keys below `pass_through` (the leader's own bookkeeping, such as the
/// cycle record `status` reads), which are committed for real. A shadowed
/// key that was written for real since it was shadowed (its index moved)
/// leaves the shadow: the real write wins. A delete is shadowed as an empty
/// value, which every deletable key reads as absent.
pub struct DryRunStore {
    inner: std::sync::Arc<dyn StateStore>,
    pass_through: String,
    /// Key -> (shadowed value, the key's real index when first shadowed).
    shadow: std::sync::Mutex<std::collections::BTreeMap<String, (Vec<u8>, u64)>>,
}

impl DryRunStore {
    /// A dry-run view of `inner`; writes below `pass_through` are real.
    pub fn new(inner: std::sync::Arc<dyn StateStore>, pass_through: impl Into<String>) -> Self {
        Self {
            inner,
            pass_through: pass_through.into(),
            shadow: std::sync::Mutex::default(),
        }
    }

    fn shadow(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<String, (Vec<u8>, u64)>> {
        // A panic while holding the lock leaves a map that is still whole.
        self.shadow
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl std::fmt::Debug for DryRunStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DryRunStore")
            .field("pass_through", &self.pass_through)
            .field("shadowed", &self.shadow().len())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl StateStore for DryRunStore {
    async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let mut snap = self.inner.snapshot().await?;
        let mut shadow = self.shadow();
        shadow.retain(|k, (_, base)| snap.cas_index(k) == *base);
        for (k, (v, _)) in shadow.iter() {
            let index = snap.cas_index(k).max(1);
            snap.entries.insert(
                k.clone(),
                crate::kv::KvEntry {
                    value: Some(v.clone()),
                    modify_index: index,
                },
            );
        }
        Ok(snap)
    }

    async fn commit(&self, lease: &LeaderLease, ops: &[KvOp]) -> Result<(), StoreError> {
        let (real, shadowed): (Vec<KvOp>, Vec<KvOp>) = ops
            .iter()
            .cloned()
            .partition(|op| op.key().starts_with(&self.pass_through));
        if !real.is_empty() {
            self.inner.commit(lease, &real).await?;
        }
        let mut shadow = self.shadow();
        for op in shadowed {
            let (key, value, cas) = match op {
                KvOp::Set { key, value, cas } => (key, value, cas),
                KvOp::Delete { key, cas } => (key, Vec::new(), cas),
            };
            // The index the writer read is the real one, unless the key was
            // already shadowed (then the first real index stays).
            let base = shadow.get(&key).map_or(cas, |(_, base)| *base);
            shadow.insert(key, (value, base));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::kv::KvEntry;

    /// An inner store that applies every op (no CAS check) and bumps the
    /// index, as Consul would.
    #[derive(Default)]
    struct Plain(Mutex<Snapshot>);

    #[async_trait]
    impl StateStore for Plain {
        async fn snapshot(&self) -> Result<Snapshot, StoreError> {
            Ok(self.0.lock().unwrap().clone())
        }
        async fn commit(&self, _: &LeaderLease, ops: &[KvOp]) -> Result<(), StoreError> {
            let mut s = self.0.lock().unwrap();
            for op in ops {
                s.index += 1;
                let index = s.index;
                match op {
                    KvOp::Set { key, value, .. } => {
                        let e = KvEntry {
                            value: Some(value.clone()),
                            modify_index: index,
                        };
                        s.entries.insert(key.clone(), e);
                    }
                    KvOp::Delete { key, .. } => {
                        s.entries.remove(key);
                    }
                }
            }
            Ok(())
        }
    }

    fn lease() -> LeaderLease {
        LeaderLease::new("s".into(), "e".into(), CancellationToken::new())
    }

    #[tokio::test]
    async fn a_dry_run_sees_its_writes_makes_only_the_bookkeeping_and_yields_to_real_ones() {
        let inner = Arc::new(Plain::default());
        let dry = DryRunStore::new(inner.clone(), "p/novaha/");
        let l = lease();
        dry.commit(
            &l,
            &[KvOp::set(
                "p/compute_nodes/c1/internal/number_fails",
                "1",
                0,
            )],
        )
        .await
        .unwrap();
        dry.commit(&l, &[KvOp::set("p/novaha/last_cycle", "{}", 0)])
            .await
            .unwrap();
        let seen = dry.snapshot().await.unwrap();
        assert_eq!(
            seen.raw("p/compute_nodes/c1/internal/number_fails"),
            Some(&b"1"[..])
        );
        let real = inner.snapshot().await.unwrap();
        assert_eq!(real.raw("p/compute_nodes/c1/internal/number_fails"), None);
        assert_eq!(real.raw("p/novaha/last_cycle"), Some(&b"{}"[..]));

        // A delete reads as an empty value; a real write to a shadowed key wins.
        dry.commit(
            &l,
            &[KvOp::Delete {
                key: "p/novaha-less".into(),
                cas: 0,
            }],
        )
        .await
        .unwrap();
        assert_eq!(
            dry.snapshot().await.unwrap().raw("p/novaha-less"),
            Some(&b""[..])
        );
        inner
            .commit(
                &l,
                &[KvOp::set(
                    "p/compute_nodes/c1/internal/number_fails",
                    "7",
                    0,
                )],
            )
            .await
            .unwrap();
        let seen = dry.snapshot().await.unwrap();
        assert_eq!(
            seen.raw("p/compute_nodes/c1/internal/number_fails"),
            Some(&b"7"[..])
        );
    }
}
