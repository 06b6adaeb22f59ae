//! novaha-core: the vocabulary every other novaha crate speaks.
//!
//! It owns the domain types (node names, secrets, power states, instances),
//! the Consul K/V schema (docs/consul.md, "The K/V schema") as typed paths
//! and parse rules, the recovery record, and the driver traits (`StateStore`,
//! `Fencer`, `Evacuator`, `Notifier`, `Directory`) that the driver crates
//! implement.
//!
//! It must never do I/O itself: no network, no clock reads outside the
//! callers' `now`, no Consul or OpenStack types. Drivers depend on this crate
//! and never on each other.

pub mod admin;
pub mod backoff;
pub mod capacity;
pub mod detect;
pub mod drivers;
pub mod http;
pub mod kv;
pub mod record;
pub mod recovery;
pub mod secret;
pub mod storage;
pub mod store;
pub mod text;
pub mod types;
pub mod validate;

pub use secret::Secret;
pub use types::{NodeName, PowerState};
