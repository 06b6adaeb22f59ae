//! `[recovery] mode = "dry-run"`: the full plan of a failed node's
//! recovery, computed with the same pure decisions the runner follows, with
//! read-only calls only (the node's instance listing). Nothing is written,
//! fenced, forced down or evacuated.

use std::fmt;

use chrono::Utc;
use novaha_core::NodeName;
use novaha_core::drivers::Fenced;
use novaha_core::kv::{ClusterState, ComputeNodeState, Snapshot};
use novaha_core::record::{InstanceState, Phase, RecoveryRecord};
use novaha_core::recovery::{Action, HaNodeObs, NodeFlags, Observation, decide};
use novaha_core::types::PowerState;
use serde::Serialize;

use super::View;
use crate::stages::Stages;

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

/// Computes the plan of `cn` (a node judged failed, not yet recovered).
pub async fn plan(
    stages: &Stages,
    snap: &Snapshot,
    state: &ClusterState,
    cn: &ComputeNodeState,
    view: &View,
    epoch: &str,
) -> Plan {
    let now = Utc::now();
    let node = cn.name.clone();
    let mut obs = Observation::new(node.clone(), epoch, NodeFlags::from_state(cn, now));
    obs.ha_nodes = HaNodeObs::all(&stages.policy.schema, snap, state);
    for h in &mut obs.ha_nodes {
        h.service = view.services.get(&h.name).cloned();
    }
    obs.judged = view.fresh();
    obs.mass_failure = view.mass_failure;
    obs.node_healthy = view.healthy.contains(&node);
    obs.paused = crate::recovery::paused(state, now);
    obs.nova_service = view.services.get(&node).cloned();
    let claim = decide(&stages.policy, None, &obs, now);
    let (ha_node, blocked) = match claim.action {
        Action::DryRun(a) => match *a {
            Action::Claim { ha_node } => (ha_node, None),
            other => (None, Some(other.to_string())),
        },
        Action::Claim { ha_node } => (ha_node, None),
        other => (None, Some(other.to_string())),
    };
    let fence_driver = match stages.fences.driver_of(&node, &cn.bmc) {
        Ok(d) => d.to_string(),
        Err(e) => format!("none ({e})"),
    };
    let fence_address = cn.bmc.ip.as_ref().map(|ip| match cn.bmc.port {
        Some(p) => format!("{ip}:{p}"),
        None => ip.clone(),
    });
    let mut plan = Plan {
        node: node.clone(),
        blocked,
        fence_driver,
        fence_address,
        nova_service: obs.nova_service.as_ref().map(|s| s.id.clone()),
        ha_node: ha_node.clone(),
        concurrency: stages.policy.concurrency.max(1),
        instances: Vec::new(),
        listing_error: None,
    };
    let list = match stages.evacuator.instances_on(&node).await {
        Ok(l) => l,
        Err(e) => {
            plan.listing_error = Some(e.to_string());
            return plan;
        }
    };
    // Fold the listing through the real decision, on a record that is
    // never stored: it applies the opt-out/opt-in rules and the order.
    let mut rec = RecoveryRecord::new(format!("{node}-plan"), epoch.to_owned(), now);
    rec.phase = Phase::ForcedDown;
    rec.ha_node = ha_node.clone();
    rec.fence =
        Fenced::from_observation(node.clone(), "plan", PowerState::Off, now).map(|f| f.to_record());
    let mut policy = stages.policy.clone();
    policy.dry_run = false;
    obs.instances = Some(list.clone());
    let folded = decide(&policy, Some(&rec), &obs, now).record.unwrap_or(rec);
    let target = ha_node
        .as_ref()
        .map_or("scheduler".to_owned(), |h| h.to_string());
    let mut skipped = Vec::new();
    for (id, i) in &folded.instances {
        let (action, to) = match i.state {
            InstanceState::Done => ("already-moved", i.target.clone()),
            InstanceState::Skipped | InstanceState::Error => ("skip", None),
            InstanceState::Pending | InstanceState::Requested => ("evacuate", Some(target.clone())),
        };
        let p = PlannedInstance {
            id: id.clone(),
            name: i.name.clone(),
            status: i.prior_status.clone(),
            action,
            target: to,
            note: i.error.clone(),
        };
        if action == "evacuate" {
            plan.instances.push(p);
        } else {
            skipped.push(p);
        }
    }
    plan.instances.extend(skipped);
    plan
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
