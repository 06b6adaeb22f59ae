//! [`ConsulStore`]: core's `StateStore` on Consul K/V. Reads are one
//! consistent recursive GET; leader writes are one `/v1/txn` that checks the
//! lock's session and every key's CAS index, so a deposed leader's write is
//! refused whole by Consul itself.

use std::collections::BTreeMap;

use async_trait::async_trait;
use novaha_core::kv::{KvEntry, Schema, Snapshot};
use novaha_core::store::{KvOp, LeaderLease, StateStore, StoreError};
use tracing::{info, warn};

use crate::client::{Consul, TxnFailure, TxnOp, TxnOutcome};
use crate::error::ConsulError;

/// The state tree in Consul below one schema prefix.
#[derive(Clone, Debug)]
pub struct ConsulStore {
    consul: Consul,
    schema: Schema,
}

impl ConsulStore {
    /// A store for `schema`'s prefix on `consul`.
    pub fn new(consul: Consul, schema: Schema) -> Self {
        Self { consul, schema }
    }

    /// The schema this store serves.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// Operator writes (CLI `node register`, `node reset`): CAS-checked and
    /// atomic, but not guarded by the leader lock (an operator is not the
    /// leader). Same errors as [`StateStore::commit`] minus `NotLeader`.
    pub async fn admin_commit(&self, ops: &[KvOp]) -> Result<(), StoreError> {
        let txn: Vec<TxnOp> = ops.iter().map(to_txn).collect();
        match self.run(&txn).await? {
            TxnOutcome::Committed(_) => {
                info!(ops = ops.len(), "admin transaction committed");
                Ok(())
            }
            TxnOutcome::RolledBack(errors) => Err(rolled_back(&txn, &errors, None)),
        }
    }

    async fn run(&self, txn: &[TxnOp]) -> Result<TxnOutcome, StoreError> {
        self.consul.txn(txn).await.map_err(store_error)
    }
}

fn to_txn(op: &KvOp) -> TxnOp {
    match op {
        KvOp::Set { key, value, cas } => TxnOp::Cas {
            key: key.clone(),
            value: value.clone(),
            index: *cas,
        },
        KvOp::Delete { key, cas } => TxnOp::DeleteCas {
            key: key.clone(),
            index: *cas,
        },
    }
}

/// Maps a rolled-back transaction to the store's error. With `leader` set,
/// op 0 is the session check: its failure wins over any CAS failure.
fn rolled_back(txn: &[TxnOp], errors: &[TxnFailure], leader: Option<&str>) -> StoreError {
    if let Some(session) = leader
        && errors.iter().any(|e| e.op_index == 0)
    {
        return StoreError::NotLeader {
            session: session.to_owned(),
        };
    }
    let first = errors
        .iter()
        .min_by_key(|e| e.op_index)
        .expect("a rolled-back txn carries at least one error");
    match txn.get(first.op_index) {
        Some(op) => {
            warn!(key = op.key(), reason = %first.what, "consul transaction rolled back");
            StoreError::Conflict {
                key: op.key().to_owned(),
            }
        }
        None => StoreError::Refused(format!(
            "consul txn failed at unknown op {}: {}",
            first.op_index, first.what
        )),
    }
}

fn store_error(e: ConsulError) -> StoreError {
    match &e {
        ConsulError::Status { status, .. } if *status == 403 || *status == 401 => {
            StoreError::Refused(e.to_string())
        }
        ConsulError::Status { status, .. } if *status < 500 && *status != 429 => {
            StoreError::Refused(e.to_string())
        }
        ConsulError::Settings(_) | ConsulError::TooManyOps { .. } => {
            StoreError::Refused(e.to_string())
        }
        ConsulError::Timeout { .. } => {
            StoreError::Unavailable(format!("{e} (outcome unknown: re-read before retrying)"))
        }
        _ => StoreError::Unavailable(e.to_string()),
    }
}

#[async_trait]
impl StateStore for ConsulStore {
    async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let (index, pairs) = self
            .consul
            .kv_list(self.schema.prefix())
            .await
            .map_err(store_error)?;
        let entries: BTreeMap<String, KvEntry> = pairs
            .into_iter()
            .map(|p| {
                (
                    p.key,
                    KvEntry {
                        value: p.value,
                        modify_index: p.modify_index,
                    },
                )
            })
            .collect();
        Ok(Snapshot { index, entries })
    }

    async fn commit(&self, lease: &LeaderLease, ops: &[KvOp]) -> Result<(), StoreError> {
        if lease.is_lost() {
            // The server would refuse it too; do not even ask.
            return Err(lease.not_leader());
        }
        let mut txn = Vec::with_capacity(ops.len() + 1);
        txn.push(TxnOp::CheckSession {
            key: self.schema.leader(),
            session: lease.session().to_owned(),
        });
        txn.extend(ops.iter().map(to_txn));
        match self.run(&txn).await? {
            TxnOutcome::Committed(_) => Ok(()),
            TxnOutcome::RolledBack(errors) => {
                let e = rolled_back(&txn, &errors, Some(lease.session()));
                if matches!(e, StoreError::NotLeader { .. }) {
                    warn!(
                        session = lease.session(),
                        "leader write refused: lock not held"
                    );
                }
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(i: usize) -> TxnFailure {
        TxnFailure {
            op_index: i,
            what: "failed".into(),
        }
    }

    #[test]
    fn session_failure_wins_and_cas_failure_names_its_key() {
        let txn = vec![
            TxnOp::CheckSession {
                key: "p/leader".into(),
                session: "s".into(),
            },
            TxnOp::Cas {
                key: "p/a".into(),
                value: vec![],
                index: 3,
            },
            TxnOp::DeleteCas {
                key: "p/b".into(),
                index: 4,
            },
        ];
        assert!(matches!(
            rolled_back(&txn, &[f(2), f(0)], Some("s")),
            StoreError::NotLeader { session } if session == "s"
        ));
        assert!(matches!(
            rolled_back(&txn, &[f(2), f(1)], Some("s")),
            StoreError::Conflict { key } if key == "p/a"
        ));
        assert!(matches!(
            rolled_back(&txn, &[f(9)], Some("s")),
            StoreError::Refused(_)
        ));
    }

    #[test]
    fn status_codes_map_to_store_errors() {
        let st = |status| ConsulError::Status {
            what: "txn".into(),
            status,
            body: String::new(),
        };
        assert!(matches!(store_error(st(403)), StoreError::Refused(_)));
        assert!(matches!(store_error(st(500)), StoreError::Unavailable(_)));
        let t = store_error(ConsulError::Timeout {
            what: "txn".into(),
            timeout: std::time::Duration::from_secs(1),
        });
        assert!(matches!(&t, StoreError::Unavailable(m) if m.contains("unknown")));
    }
}
