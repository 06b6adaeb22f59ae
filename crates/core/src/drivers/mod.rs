//! The stage contracts. Each stage crate implements one of these traits;
//! the daemon builds the implementations from config by name and the
//! recovery runner calls them. Each method's doc states its contract:
//! idempotent or not, cancel-safe or not, which errors are retryable.

pub mod evacuate;
pub mod fence;
pub mod notify;

pub use evacuate::{EvacuateError, Evacuator, Instance, InstanceProgress};
pub use fence::{FenceError, FenceTarget, Fenced, Fencer};
pub use notify::{
    Directory, DirectoryError, IncidentReport, InstanceOutcome, Notifier, NotifyError, Person,
};
