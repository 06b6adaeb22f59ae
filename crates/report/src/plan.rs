//! `[recovery] mode = "dry-run"`: what a recovery of one failed node would
//! do, as the leader logs and prints it.

use std::fmt;

use novaha_core::NodeName;
use serde::Serialize;

/// One instance in the plan.
#[derive(Clone, Debug, Serialize)]
pub struct PlannedInstance {
    /// Server uuid.
    pub id: String,
    /// Server name.
    pub name: Option<String>,
    /// Its status now.
    pub status: String,
    /// `evacuate`, `skip` or `already-moved`.
    pub action: &'static str,
    /// Where it would go (`scheduler` when Nova picks), or where it is.
    pub target: Option<String>,
    /// Why it is skipped.
    pub note: Option<String>,
}

/// What a recovery of one failed node would do.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    /// The failed node.
    pub node: NodeName,
    /// Why it would not start now (mass-failure guard, no free HA node,
    /// invalid values), if so.
    pub blocked: Option<String>,
    /// The fence driver the node would be fenced with (or why none).
    pub fence_driver: String,
    /// The BMC address (`ip[:port]`; never a credential).
    pub fence_address: Option<String>,
    /// The nova-compute service that would be forced down.
    pub nova_service: Option<String>,
    /// The HA node that would be claimed, `None` = the scheduler.
    pub ha_node: Option<NodeName>,
    /// Evacuate calls in flight at once.
    pub concurrency: usize,
    /// Every instance, in the order the evacuations would be sent.
    pub instances: Vec<PlannedInstance>,
    /// Why the instances could not be listed, if so.
    pub listing_error: Option<String>,
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Dry-run plan for {}:", self.node)?;
        if let Some(b) = &self.blocked {
            writeln!(f, "  blocked now: {b}")?;
        }
        writeln!(
            f,
            "  1. fence: driver {}, BMC {}",
            self.fence_driver,
            self.fence_address.as_deref().unwrap_or("(no address)")
        )?;
        writeln!(
            f,
            "  2. force down and disable nova-compute service {}",
            self.nova_service.as_deref().unwrap_or("(unknown)")
        )?;
        let target = self
            .ha_node
            .as_ref()
            .map_or("the scheduler".to_owned(), |h| format!("HA node {h}"));
        writeln!(
            f,
            "  3. evacuate to {target}, {} at a time:",
            self.concurrency
        )?;
        if let Some(e) = &self.listing_error {
            writeln!(f, "     (instances could not be listed: {e})")?;
        }
        for (n, i) in self.instances.iter().enumerate() {
            let name = i.name.as_deref().unwrap_or("-");
            match i.action {
                "evacuate" => writeln!(
                    f,
                    "     {:>3}. {} {name} {} -> {}",
                    n + 1,
                    i.id,
                    i.status,
                    i.target.as_deref().unwrap_or("scheduler")
                )?,
                "already-moved" => writeln!(
                    f,
                    "          {} {name} already on {}",
                    i.id,
                    i.target.as_deref().unwrap_or("?")
                )?,
                _ => writeln!(
                    f,
                    "          {} {name} skipped: {}",
                    i.id,
                    i.note.as_deref().unwrap_or("")
                )?,
            }
        }
        write!(f, "  4. notify owners and admins")
    }
}
