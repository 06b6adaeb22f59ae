//! `[evacuate]`: where a failed node's instances go and how many move at once.

use serde::Deserialize;

use super::Problems;

/// Where evacuated instances are sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvacuateTarget {
    /// A claimed HA (spare) node; none free = wait and alert.
    #[default]
    HaNode,
    /// Let Nova's scheduler pick.
    Scheduler,
    /// An HA node when one is free, else the scheduler.
    HaNodeThenScheduler,
}

/// `[evacuate]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvacuateConfig {
    /// `ha_node` | `scheduler` | `ha_node_then_scheduler`.
    pub target: EvacuateTarget,
    /// How many evacuate calls may be in flight per recovery.
    pub concurrency: u32,
}

impl Default for EvacuateConfig {
    fn default() -> Self {
        Self {
            target: EvacuateTarget::HaNode,
            concurrency: 8,
        }
    }
}

impl EvacuateConfig {
    /// Checks the ranges.
    pub fn validate(&self, problems: &mut Problems) {
        if !(1..=256).contains(&self.concurrency) {
            problems.push(
                "evacuate.concurrency",
                format!("must be between 1 and 256, got {}", self.concurrency),
            );
        }
    }
}
