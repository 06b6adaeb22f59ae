//! Test support: an in-memory StateStore with Consul's CAS and lock-check
//! semantics, an in-memory Directory, and a sample incident.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use novaha_core::drivers::notify::{
    Directory, DirectoryError, IncidentReport, InstanceOutcome, Person,
};
use novaha_core::kv::{KvEntry, Snapshot};
use novaha_core::record::{FenceRecord, InstanceState};
use novaha_core::store::{KvOp, LeaderLease, StateStore, StoreError};
use tokio_util::sync::CancellationToken;

/// A StateStore in memory: every commit checks that the lease's session is
/// the current holder and every CAS index, then applies all ops or none.
#[derive(Default)]
pub struct MemStore {
    inner: Mutex<(u64, BTreeMap<String, KvEntry>)>,
    holder: Mutex<String>,
    /// When > 0, that many next calls fail as Unavailable.
    pub fail_next: Mutex<usize>,
}

impl MemStore {
    pub fn new(holder: &str) -> Arc<Self> {
        let s = Self::default();
        *s.holder.lock().unwrap() = holder.to_owned();
        Arc::new(s)
    }
    pub fn set_holder(&self, holder: &str) {
        *self.holder.lock().unwrap() = holder.to_owned();
    }
    pub fn put_raw(&self, key: &str, value: &[u8]) {
        let mut g = self.inner.lock().unwrap();
        g.0 += 1;
        let idx = g.0;
        g.1.insert(
            key.to_owned(),
            KvEntry {
                value: Some(value.to_vec()),
                modify_index: idx,
            },
        );
    }
    pub fn raw(&self, key: &str) -> Option<Vec<u8>> {
        self.inner
            .lock()
            .unwrap()
            .1
            .get(key)
            .and_then(|e| e.value.clone())
    }
    pub fn keys(&self) -> Vec<String> {
        self.inner.lock().unwrap().1.keys().cloned().collect()
    }
    fn unavailable(&self) -> bool {
        let mut f = self.fail_next.lock().unwrap();
        if *f > 0 {
            *f -= 1;
            true
        } else {
            false
        }
    }
}

#[async_trait]
impl StateStore for MemStore {
    async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        if self.unavailable() {
            return Err(StoreError::Unavailable("injected".into()));
        }
        let g = self.inner.lock().unwrap();
        Ok(Snapshot {
            index: g.0,
            entries: g.1.clone(),
        })
    }

    async fn commit(&self, lease: &LeaderLease, ops: &[KvOp]) -> Result<(), StoreError> {
        if self.unavailable() {
            return Err(StoreError::Unavailable("injected".into()));
        }
        if *self.holder.lock().unwrap() != lease.session() {
            return Err(lease.not_leader());
        }
        let mut g = self.inner.lock().unwrap();
        for op in ops {
            let (key, cas) = match op {
                KvOp::Set { key, cas, .. } | KvOp::Delete { key, cas } => (key, *cas),
            };
            let cur = g.1.get(key).map_or(0, |e| e.modify_index);
            if cur != cas {
                return Err(StoreError::Conflict { key: key.clone() });
            }
        }
        g.0 += 1;
        let idx = g.0;
        for op in ops {
            match op {
                KvOp::Set { key, value, .. } => {
                    g.1.insert(
                        key.clone(),
                        KvEntry {
                            value: Some(value.clone()),
                            modify_index: idx,
                        },
                    );
                }
                KvOp::Delete { key, .. } => {
                    g.1.remove(key);
                }
            }
        }
        Ok(())
    }
}

pub fn lease(session: &str) -> LeaderLease {
    LeaderLease::new(
        session.into(),
        format!("{session}:1"),
        CancellationToken::new(),
    )
}

/// Users and project members in memory; `down` makes every call fail.
#[derive(Default)]
pub struct MemDirectory {
    pub users: HashMap<String, Person>,
    pub projects: HashMap<String, Vec<Person>>,
    pub down: Mutex<bool>,
    pub calls: Mutex<usize>,
}

impl MemDirectory {
    pub fn person(id: &str, name: &str, email: Option<&str>) -> Person {
        Person {
            user_id: id.into(),
            name: Some(name.into()),
            email: email.map(Into::into),
        }
    }
    pub fn with_users(people: &[Person]) -> Self {
        Self {
            users: people
                .iter()
                .map(|p| (p.user_id.clone(), p.clone()))
                .collect(),
            ..Self::default()
        }
    }
}

#[async_trait]
impl Directory for MemDirectory {
    async fn user(&self, user_id: &str) -> Result<Option<Person>, DirectoryError> {
        *self.calls.lock().unwrap() += 1;
        if *self.down.lock().unwrap() {
            return Err(DirectoryError::Unavailable(
                "keystone down (injected)".into(),
            ));
        }
        Ok(self.users.get(user_id).cloned())
    }
    async fn project_members(&self, project_id: &str) -> Result<Vec<Person>, DirectoryError> {
        *self.calls.lock().unwrap() += 1;
        if *self.down.lock().unwrap() {
            return Err(DirectoryError::Unavailable(
                "keystone down (injected)".into(),
            ));
        }
        Ok(self.projects.get(project_id).cloned().unwrap_or_default())
    }
}

pub fn t(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + secs, 0).single().unwrap()
}

pub fn instance(
    id: &str,
    name: &str,
    state: InstanceState,
    owner: &str,
    project: &str,
) -> InstanceOutcome {
    InstanceOutcome {
        id: id.into(),
        name: Some(name.into()),
        state,
        prior_status: "ACTIVE".into(),
        old_host: "compute-7".into(),
        new_host: (state == InstanceState::Done).then(|| "ha-1".into()),
        error: (state == InstanceState::Error).then(|| "no valid host found".into()),
        owner: Some(owner.into()),
        project: Some(project.into()),
        storage: None,
    }
}

/// compute-7 failed; alice owns vm-a1 and vm-a2, bob owns vm-b1 (in error),
/// carol owns vm-c1 (no e-mail in the directory).
pub fn report(incident: &str) -> IncidentReport {
    IncidentReport {
        incident: incident.into(),
        node: "compute-7".into(),
        ha_node: Some("ha-1".into()),
        timeline: [("detected", t(0)), ("fenced", t(20)), ("evacuated", t(90))]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
        fence: Some(FenceRecord {
            driver: "ipmi".into(),
            verified_off_at: t(20),
        }),
        instances: vec![
            instance(
                "aaaaaaaa-0000-0000-0000-000000000001",
                "vm-a1",
                InstanceState::Done,
                "u-alice",
                "p-web",
            ),
            instance(
                "aaaaaaaa-0000-0000-0000-000000000002",
                "vm-a2",
                InstanceState::Done,
                "u-alice",
                "p-web",
            ),
            instance(
                "bbbbbbbb-0000-0000-0000-000000000001",
                "vm-b1",
                InstanceState::Error,
                "u-bob",
                "p-db",
            ),
            instance(
                "cccccccc-0000-0000-0000-000000000001",
                "vm-c1",
                InstanceState::Done,
                "u-carol",
                "p-db",
            ),
        ],
    }
}

pub fn directory() -> MemDirectory {
    MemDirectory::with_users(&[
        MemDirectory::person("u-alice", "Alice", Some("alice@example.org")),
        MemDirectory::person("u-bob", "Bob", Some("bob@example.org")),
        MemDirectory::person("u-carol", "Carol", None),
    ])
}
