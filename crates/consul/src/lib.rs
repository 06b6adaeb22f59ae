//! novaha-consul: everything novaha says to Consul.
//!
//! It owns the leader election ([`Election`]: a session bound to the
//! daemon's own TTL check, the lock on `<prefix>/leader`, the keeper that
//! renews it and revokes the [`LeaderLease`] at the first sign of loss), the
//! state store ([`ConsulStore`], core's `StateStore`: one consistent
//! recursive read, writes as one `/v1/txn` with a `check-session` on the
//! lock plus a `cas` per key), and the small typed client under both
//! ([`Consul`]: one `reqwest` client for every call, TLS and mTLS from
//! [`ConsulTls`], built in one place, [`tls::http_client`], that the
//! monitor's Consul signal uses too).
//!
//! It must never write as leader without the lock check (no blind PUT),
//! never overwrite a key without its CAS index, never log a stored value or
//! the ACL token, and never release or destroy anything in `Drop`
//! (shutdown calls [`Election::resign`]).
//!
//! [`LeaderLease`]: novaha_core::store::LeaderLease

pub mod client;
pub mod config;
pub mod election;
pub mod error;
pub mod store;
pub mod tls;

pub use client::{Consul, ConsulSettings, KvPair, TxnFailure, TxnOp, TxnOutcome};
pub use config::{ConsulConfig, ElectionConfig};
pub use election::{Election, ElectionSettings, LeaderInfo};
pub use error::ConsulError;
pub use store::ConsulStore;
pub use tls::{ConsulTls, http_client};
