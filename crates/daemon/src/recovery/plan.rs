//! `[recovery] mode = "dry-run"`: the full plan of a failed node's
//! recovery, computed with the same pure decisions the runner follows, with
//! read-only calls only (the node's instance listing). Nothing is written,
//! fenced, forced down or evacuated.

use chrono::Utc;
use novaha_core::kv::{ClusterState, ComputeNodeState, Snapshot};
use novaha_core::record::InstanceState;
use novaha_core::recovery::{Action, HaNodeObs, NodeFlags, Observation, decide, listed};
use novaha_report::{Plan, PlannedInstance};

use super::View;
use crate::stages::Stages;

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
    // The listing as a recovery would record it (opt-out/opt-in, already
    // elsewhere); nothing is claimed, fenced or stored.
    let instances = listed(&stages.policy, &obs, &list);
    let target = ha_node
        .as_ref()
        .map_or("scheduler".to_owned(), |h| h.to_string());
    let mut skipped = Vec::new();
    for (id, i) in &instances {
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
