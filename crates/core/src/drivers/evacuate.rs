//! Evacuation: moving every instance of a fenced node to healthy hosts, and
//! the other Nova calls a recovery makes around it (force-down, preparing
//! the HA node, restoring power state, the administrator's reset).
//!
//! One trait carries all of them because they are all "the Nova side of a
//! recovery": the runner carries out every Nova [`Action`] through one
//! `Arc<dyn Evacuator>`, and tests can drive the runner with a model.
//!
//! [`Action`]: crate::recovery::Action

use std::collections::BTreeMap;

use async_trait::async_trait;

use crate::capacity::{HostCapacity, Resources};
use crate::drivers::fence::Fenced;
use crate::types::NodeName;

/// An instance (Nova server) as the recovery sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
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
    /// Boots from a volume (no image, a root volume attached): its root
    /// disk survives an evacuation ([`crate::storage`]).
    pub boot_from_volume: bool,
    /// What its flavor takes in Placement; `None` when Nova did not say
    /// (microversion below 2.47 does not embed the flavor).
    pub resources: Option<Resources>,
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

    /// Forces `node`'s nova-compute service (`service_id`) down and disables
    /// it with `reason` (which carries the leader's epoch), so that Nova
    /// accepts evacuations at once ([`crate::recovery::Action::ForceDown`]).
    /// Idempotent in effect (forcing a forced-down service changes nothing)
    /// but never retried inside; not cancel-safe (a destructive unit: run it
    /// to completion). `Unavailable` is retryable and may have been applied.
    async fn force_down(
        &self,
        node: &NodeName,
        service_id: &str,
        reason: &str,
    ) -> Result<(), EvacuateError>;

    /// Enables the claimed HA node's nova-compute service (and clears any
    /// force-down) so it can receive evacuations
    /// ([`crate::recovery::Action::PrepareTarget`]). Idempotent in effect;
    /// not retried inside; not cancel-safe.
    async fn prepare_target(
        &self,
        ha_node: &NodeName,
        service_id: &str,
    ) -> Result<(), EvacuateError>;

    /// Starts an evacuated instance that landed SHUTOFF but was ACTIVE before
    /// ([`crate::recovery::Action::RestorePowerState`]). Idempotent in effect:
    /// a server that is already ACTIVE counts as started. Not retried
    /// inside; not cancel-safe.
    async fn start(&self, instance_id: &str) -> Result<(), EvacuateError>;

    /// The room on `host` as Placement reports it (inventories and the
    /// allocations on it by consumer), so that only what fits is sent there
    /// ([`crate::recovery::evacuation::choose`]). `Ok(None)` when the cloud has no
    /// Placement or no provider for the host: evacuations then go unchecked.
    /// Read-only, cancel-safe. The default knows nothing.
    async fn capacity(&self, host: &NodeName) -> Result<Option<HostCapacity>, EvacuateError> {
        let _ = host;
        Ok(None)
    }

    /// The administrator's reset, Nova half
    /// ([`crate::recovery::Action::RestoreService`]): clears `node`'s
    /// force-down and enables its service again. Idempotent in effect; not
    /// retried inside; not cancel-safe.
    async fn restore_service(&self, node: &NodeName, service_id: &str)
    -> Result<(), EvacuateError>;
}
