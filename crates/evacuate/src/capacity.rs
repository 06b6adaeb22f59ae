//! The leader's failures-tolerated figure (docs/recovery.md, "Failures
//! tolerated"): every `[evacuate] capacity_interval` it reads Nova's
//! compute services (zone, up, enabled) and hypervisors (host to provider
//! name), then each compute host's Placement inventories and usages (two
//! reads per host, at most [`CONCURRENCY`] at once), and hands the loads to
//! core's pure `capacity::failures_tolerated`. Spares are the registered HA
//! nodes; one is free while its `in_use` reads False and Nova has it up.
//!
//! Every instance on a host counts as protected (its Placement usage):
//! instances that would be skipped (opt-out, local storage) make the figure
//! pessimistic, never optimistic.

use std::collections::BTreeMap;

use futures::{StreamExt, TryStreamExt};
use novaha_core::capacity::{self, HostLoad, Room, Targets};
use novaha_core::kv::ClusterState;
use novaha_core::recovery::TargetPolicy;
use novaha_openstack::OpenStackError;

use novaha_openstack::{NovaClient, PlacementClient};

/// What the leader reads for `novaha_capacity_failures_tolerated`: Nova's
/// hypervisors (host to provider) and Placement's inventories and usages.
#[derive(Clone, Debug)]
pub struct CapacityReader {
    /// Nova.
    pub nova: NovaClient,
    /// Placement.
    pub placement: PlacementClient,
    /// How often (`[evacuate] capacity_interval`; zero = never).
    pub interval: std::time::Duration,
}

/// Placement reads in flight at once.
pub const CONCURRENCY: usize = 8;

/// What the figure may count on under `[evacuate] target`.
pub fn targets(policy: TargetPolicy) -> Targets {
    match policy {
        TargetPolicy::HaNode => Targets {
            spares: true,
            scheduler: false,
        },
        TargetPolicy::Scheduler => Targets {
            spares: false,
            scheduler: true,
        },
        TargetPolicy::HaNodeThenScheduler => Targets {
            spares: true,
            scheduler: true,
        },
    }
}

/// Reads every compute host's load and room. A host Nova reports down, or
/// whose `failed` flag is set, is left out (it has already failed), as is a
/// host without a provider. Read-only; cancel-safe.
pub async fn read_loads(
    reader: &CapacityReader,
    state: &ClusterState,
) -> Result<Vec<HostLoad>, OpenStackError> {
    let services = reader.nova.compute_services().await?;
    let hypervisors = reader.nova.hypervisors().await?;
    let providers = reader.placement.providers().await?;
    let by_name: BTreeMap<&str, &str> = providers
        .iter()
        .map(|p| (p.name.as_str(), p.uuid.as_str()))
        .collect();
    let hv_name: BTreeMap<&str, &str> = hypervisors
        .iter()
        .filter_map(|h| {
            h.service
                .as_ref()
                .map(|s| (s.host.as_str(), h.hypervisor_hostname.as_str()))
        })
        .collect();
    let mut wanted = Vec::new();
    for s in &services {
        let name = novaha_core::NodeName::from(s.host.as_str());
        let spare = state.ha_nodes.get(&name);
        let failed = state
            .compute_nodes
            .get(&name)
            .is_some_and(|n| n.failed.get() != Some(false));
        let up = !s.is_down() && s.forced_down != Some(true);
        if spare.is_none() && (failed || !up) {
            continue;
        }
        let available = match spare {
            Some(h) => up && h.in_use.get() == Some(false),
            None => !s.is_disabled(),
        };
        let provider = by_name
            .get(s.host.as_str())
            .or_else(|| hv_name.get(s.host.as_str()).and_then(|hv| by_name.get(hv)))
            .map(|u| (*u).to_owned());
        let Some(uuid) = provider else {
            tracing::debug!(host = %s.host, "no placement provider: left out of the capacity figure");
            continue;
        };
        wanted.push((
            s.host.clone(),
            s.zone.clone().unwrap_or_default(),
            spare.is_some(),
            available,
            uuid,
        ));
    }
    let placement = &reader.placement;
    futures::stream::iter(wanted)
        .map(|(name, zone, spare, available, uuid)| async move {
            let (inv, _) = placement.inventories(&uuid).await?;
            let used = placement.usages(&uuid).await?;
            Ok::<_, OpenStackError>(HostLoad {
                name,
                zone,
                spare,
                available,
                room: Room {
                    free: inv.capacity().minus(used),
                    max_unit: inv.max_unit(),
                },
                load: used,
            })
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await
}

/// The figure per zone, from the loads read.
pub fn tolerated(loads: &[HostLoad], policy: TargetPolicy) -> BTreeMap<String, u32> {
    capacity::failures_tolerated(loads, targets(policy))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_follow_the_policy() {
        assert_eq!(
            targets(TargetPolicy::HaNode),
            Targets {
                spares: true,
                scheduler: false
            }
        );
        assert!(!targets(TargetPolicy::Scheduler).spares);
        let both = targets(TargetPolicy::HaNodeThenScheduler);
        assert!(both.spares && both.scheduler);
    }
}
