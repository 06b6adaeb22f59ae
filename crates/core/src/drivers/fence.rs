//! Fencing: powering a failed node off, for certain, before anything of it
//! is started elsewhere (safety rule 1, docs/safety.md).

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::kv::BmcConfig;
use crate::record::FenceRecord;
use crate::types::{NodeName, PowerState};

/// What a fencer needs to reach one node's power control.
#[derive(Clone, Debug)]
pub struct FenceTarget {
    /// The node to fence.
    pub node: NodeName,
    /// Its BMC address and credentials from `config/bmc/*`.
    pub bmc: BmcConfig,
}

/// Evidence that a node's power was read as off. Only a power reading of
/// [`PowerState::Off`] (or a record written from one) creates it, and
/// evacuation takes a `&Fenced`, so an unfenced node cannot be evacuated by
/// construction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fenced {
    node: NodeName,
    driver: String,
    verified_off_at: DateTime<Utc>,
}

impl Fenced {
    /// The evidence for `node` if `observed` is `Off`, else `None`.
    pub fn from_observation(
        node: NodeName,
        driver: &str,
        observed: PowerState,
        at: DateTime<Utc>,
    ) -> Option<Self> {
        (observed == PowerState::Off).then(|| Self {
            node,
            driver: driver.to_owned(),
            verified_off_at: at,
        })
    }

    /// The evidence a previous leader recorded in the recovery record. Only a
    /// verified fence writes `FenceRecord`, so a resuming leader may trust it.
    pub fn from_record(node: NodeName, record: &FenceRecord) -> Self {
        Self {
            node,
            driver: record.driver.clone(),
            verified_off_at: record.verified_off_at,
        }
    }

    /// The fenced node.
    pub fn node(&self) -> &NodeName {
        &self.node
    }

    /// The driver that fenced it.
    pub fn driver(&self) -> &str {
        &self.driver
    }

    /// When its power was read as off.
    pub fn verified_off_at(&self) -> DateTime<Utc> {
        self.verified_off_at
    }

    /// The form stored in the recovery record.
    pub fn to_record(&self) -> FenceRecord {
        FenceRecord {
            driver: self.driver.clone(),
            verified_off_at: self.verified_off_at,
        }
    }
}

/// Why fencing (or reading power) failed. Messages name the node and never
/// carry a password.
#[derive(Debug, thiserror::Error)]
pub enum FenceError {
    /// The BMC rejected the credentials (or could not be told apart from it).
    #[error("fence {node}: authentication failed: {detail}")]
    Auth {
        /// The node.
        node: NodeName,
        /// What the BMC or tool said (sanitised).
        detail: String,
    },
    /// The BMC did not answer in time or could not be reached.
    #[error("fence {node}: BMC unreachable: {detail}")]
    Unreachable {
        /// The node.
        node: NodeName,
        /// What failed.
        detail: String,
    },
    /// The off command was sent but the power never read as off before the
    /// deadline.
    #[error("fence {node}: power not confirmed off before the deadline (last read: {last})")]
    NotConfirmed {
        /// The node.
        node: NodeName,
        /// The last power state read.
        last: PowerState,
    },
    /// The BMC answered something that could not be understood.
    #[error("fence {node}: bad BMC answer: {detail}")]
    Protocol {
        /// The node.
        node: NodeName,
        /// What was wrong with it.
        detail: String,
    },
    /// The node's fence configuration is missing or wrong (no BMC address,
    /// unknown driver, the noop driver without `allow_noop`).
    #[error("fence {node}: bad configuration: {detail}")]
    Config {
        /// The node.
        node: NodeName,
        /// What is missing or wrong.
        detail: String,
    },
}

impl FenceError {
    /// True when a later attempt may succeed without an operator.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Unreachable { .. } | Self::NotConfirmed { .. } | Self::Protocol { .. }
        )
    }
}

/// A fence driver (ipmi, redfish, libvirt, noop).
#[async_trait]
pub trait Fencer: Send + Sync {
    /// The driver's name as written in config (`"ipmi"`).
    fn driver(&self) -> &'static str;

    /// Powers the node off and returns only once its power state has been
    /// read as `Off` before the driver's deadline. Idempotent: fencing a node
    /// that is already off confirms it again. Not cancel-safe: the caller
    /// must not drop the future mid-call (a power-off is a destructive unit).
    /// A timeout, an error or an unknown state is an error, never `Fenced`.
    /// Drivers make one bounded attempt; the runner owns retries.
    async fn fence(&self, target: &FenceTarget) -> Result<Fenced, FenceError>;

    /// Reads the power state, changing nothing. Idempotent and cancel-safe;
    /// used by the fence-path health check.
    async fn power_state(&self, target: &FenceTarget) -> Result<PowerState, FenceError>;

    /// Powers the node back on (after repair). Idempotent.
    async fn unfence(&self, target: &FenceTarget) -> Result<(), FenceError>;
}
