//! Evacuation: moving every instance of a fenced node to healthy hosts.

use std::collections::BTreeMap;

use async_trait::async_trait;

use crate::drivers::fence::Fenced;
use crate::types::NodeName;

/// An instance (Nova server) as the recovery sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    /// Server uuid.
    pub id: String,
    /// Server name.
    pub name: String,
    /// Nova status (ACTIVE, SHUTOFF, ERROR, ...).
    pub status: String,
    /// The compute host it is on.
    pub host: String,
    /// The owning user.
    pub user_id: String,
    /// The owning project.
    pub project_id: String,
    /// Server metadata (opt-out keys live here).
    pub metadata: BTreeMap<String, String>,
}

/// Where an evacuated instance stands, as read back from Nova.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InstanceProgress {
    /// Still moving (REBUILD, task state set, migration not done).
    InFlight,
    /// On `host` with `status`, no task running.
    Landed {
        /// Its new host.
        host: String,
        /// Its status there.
        status: String,
    },
    /// Nova reports it failed.
    Failed {
        /// Nova's fault or migration error.
        reason: String,
    },
}

/// Why an evacuation call failed.
#[derive(Debug, thiserror::Error)]
pub enum EvacuateError {
    /// Nova could not be reached or answered 5xx; retryable.
    #[error("evacuate: nova unavailable: {0}")]
    Unavailable(String),
    /// Nova refused the call (4xx): not retryable as is.
    #[error("evacuate: nova refused: {0}")]
    Refused(String),
}

impl EvacuateError {
    /// True when a later attempt may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

/// An evacuate driver (nova).
#[async_trait]
pub trait Evacuator: Send + Sync {
    /// Every instance on `host`, across all tenants and pages. Read-only,
    /// idempotent, cancel-safe.
    async fn instances_on(&self, host: &NodeName) -> Result<Vec<Instance>, EvacuateError>;

    /// Asks Nova to rebuild `instance` elsewhere (`target` = a claimed HA
    /// node, `None` = the scheduler). Requires the proof that its host is
    /// fenced. Not idempotent: the runner records `requested` before and
    /// never sends it twice. Not cancel-safe.
    async fn evacuate(
        &self,
        fenced: &Fenced,
        instance: &Instance,
        target: Option<&NodeName>,
    ) -> Result<(), EvacuateError>;

    /// Reads where an instance stands now. Read-only, cancel-safe.
    async fn progress(&self, instance_id: &str) -> Result<InstanceProgress, EvacuateError>;
}
