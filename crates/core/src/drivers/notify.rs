//! Notification: telling owners and operators what happened to a node and
//! to each of its instances.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::record::{FenceRecord, InstanceState};
use crate::storage::StorageClass;
use crate::types::NodeName;

/// One instance's outcome in an incident.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceOutcome {
    /// Server uuid.
    pub id: String,
    /// Server name, when known.
    pub name: Option<String>,
    /// How it ended.
    pub state: InstanceState,
    /// Its status before the failure.
    pub prior_status: String,
    /// The failed host it was on.
    pub old_host: String,
    /// Where it went, if it moved.
    pub new_host: Option<String>,
    /// Why it failed or was skipped.
    pub error: Option<String>,
    /// Owning user id.
    pub owner: Option<String>,
    /// Owning project id.
    pub project: Option<String>,
    /// Where its root disk lived (`None` in reports from before storage
    /// classes): `local` and done means rebuilt from its image, root disk
    /// data lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageClass>,
}

impl InstanceOutcome {
    /// True when it was evacuated by rebuilding it from its image: its root
    /// disk's data is lost.
    pub fn rebuilt(&self) -> bool {
        self.state == InstanceState::Done && self.storage == Some(StorageClass::Local)
    }

    /// What happened to it, in one sentence for people: moved (and where),
    /// rebuilt from its image (root disk data lost), not moved (why),
    /// failed (why) or still under way.
    pub fn summary(&self) -> String {
        let host = self.new_host.as_deref().unwrap_or("another host");
        let why = self.error.as_deref().unwrap_or("no reason recorded");
        match self.state {
            InstanceState::Done if self.rebuilt() => {
                format!("rebuilt from its image on {host}: the root disk's data is lost")
            }
            InstanceState::Done => format!("moved to {host}"),
            InstanceState::Skipped => format!("not moved: {why}"),
            InstanceState::Error => format!("failed: {why}"),
            InstanceState::Pending | InstanceState::Requested => "still under way".to_owned(),
        }
    }
}

/// Everything a notifier needs to tell about one incident.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncidentReport {
    /// The incident id (stable across leaders; used to de-duplicate).
    pub incident: String,
    /// The failed node.
    pub node: NodeName,
    /// The HA node used, if any.
    pub ha_node: Option<NodeName>,
    /// Phase name -> when it was reached.
    pub timeline: BTreeMap<String, DateTime<Utc>>,
    /// How the node was fenced.
    pub fence: Option<FenceRecord>,
    /// Every instance of the node and its outcome.
    pub instances: Vec<InstanceOutcome>,
}

/// A person who may be told about an instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    /// Keystone user id.
    pub user_id: String,
    /// Display name, when known.
    pub name: Option<String>,
    /// E-mail address, when Keystone has one.
    pub email: Option<String>,
}

/// Why a directory lookup failed.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    /// Keystone could not be reached or answered 5xx; retryable.
    #[error("directory unavailable: {0}")]
    Unavailable(String),
    /// Keystone refused the call.
    #[error("directory refused: {0}")]
    Refused(String),
}

/// Who owns what: users and project members with their e-mail addresses
/// (Keystone in production).
#[async_trait]
pub trait Directory: Send + Sync {
    /// One user; `Ok(None)` when it does not exist. Read-only, cancel-safe.
    async fn user(&self, user_id: &str) -> Result<Option<Person>, DirectoryError>;

    /// The project's members through effective role assignments.
    /// Read-only, cancel-safe.
    async fn project_members(&self, project_id: &str) -> Result<Vec<Person>, DirectoryError>;
}

/// Why a notification failed.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The peer (SMTP server, webhook receiver) could not be reached or
    /// failed temporarily; retryable.
    #[error("notify via {driver}: temporarily failed: {detail}")]
    Temporary {
        /// The driver.
        driver: &'static str,
        /// What failed.
        detail: String,
    },
    /// The message was refused for good (bad address, 4xx).
    #[error("notify via {driver}: rejected: {detail}")]
    Permanent {
        /// The driver.
        driver: &'static str,
        /// What was refused.
        detail: String,
    },
}

impl NotifyError {
    /// True when a later attempt may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Temporary { .. })
    }
}

/// A notify driver (email, webhook, log).
#[async_trait]
pub trait Notifier: Send + Sync {
    /// The driver's name as written in config.
    fn driver(&self) -> &'static str;

    /// Tells everyone this driver tells about `report`. Must not block
    /// fencing or evacuation (the runner calls it after them, through the
    /// outbox). Cancel-safe between messages.
    async fn notify(&self, report: &IncidentReport) -> Result<(), NotifyError>;
}
