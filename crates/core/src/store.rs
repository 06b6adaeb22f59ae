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
