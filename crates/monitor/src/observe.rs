//! [`Observe`]: the contract between the leader's cycle and its monitor, so
//! that the cycle runs unchanged over the real signals ([`Monitor`]) and,
//! in the deterministic fault simulator, over an in-process model of them.

use async_trait::async_trait;

use crate::monitor::{Monitor, Observation};

/// One cycle's signals for every node.
#[async_trait]
pub trait Observe: Send + Sync {
    /// Reads every configured signal once. Never fails: what could not be
    /// read is in [`Observation::problems`] (and `nova` is `None` when
    /// nothing may be judged). Read-only and cancel-safe.
    async fn observe(&self) -> Observation;
}

#[async_trait]
impl Observe for Monitor {
    async fn observe(&self) -> Observation {
        Monitor::observe(self).await
    }
}
