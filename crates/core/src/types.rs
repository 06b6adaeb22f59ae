//! Small domain types shared by every stage.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The name of a compute node (or HA node) as Nova's `host` field spells it;
/// it is also the node's folder name under `ha_cluster/compute_nodes/`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeName(String);

impl NodeName {
    /// Wraps a host name.
    pub fn new(name: impl Into<String>) -> Self {
        Self(name.into())
    }

    /// The host name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for NodeName {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

/// A node's chassis power as its BMC reports it. Only [`PowerState::Off`]
/// counts as fenced: `Unknown` (a timeout, an unreadable answer) never does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PowerState {
    /// The BMC reads the chassis as powered on.
    On,
    /// The BMC reads the chassis as powered off.
    Off,
    /// The state could not be read or was not understood.
    Unknown,
}

impl fmt::Display for PowerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PowerState::On => "on",
            PowerState::Off => "off",
            PowerState::Unknown => "unknown",
        })
    }
}
