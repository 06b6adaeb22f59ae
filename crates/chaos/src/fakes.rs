//! The in-process peers, behind the traits the daemon's real clients
//! implement: Consul ([`StateStore`]), Nova ([`Evacuator`] and the
//! monitor's [`Observe`]), the BMCs ([`Fencer`]). Each call waits a random
//! virtual latency, then acts on the shared [`World`] and checks the
//! invariants that concern it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use novaha_core::detect::{NodeSignals, NovaService};
use novaha_core::drivers::{
    EvacuateError, Evacuator, FenceError, FenceTarget, Fenced, Fencer, Instance, InstanceProgress,
};
use novaha_core::kv::Snapshot;
use novaha_core::store::{KvOp, LeaderLease, StateStore, StoreError};
use novaha_core::{NodeName, PowerState};
use novaha_monitor::{Observation, Observe, Problem};
use tokio::time::Instant;

use crate::schedule::CommitFault;
use crate::world::{Landing, Task, World};

/// The world, shared by every fake and the driver.
pub type Shared = Arc<Mutex<World>>;

/// Locks the world (a poisoned lock means a fake panicked: the run is
/// over anyway).
pub fn lock(w: &Shared) -> MutexGuard<'_, World> {
    w.lock().expect("the world's lock is never poisoned")
}

async fn latency(w: &Shared, lo: u64, hi: u64) {
    let d = lock(w).rng.millis(lo, hi);
    tokio::time::sleep(d).await;
}

/// Consul's K/V store and lock.
pub struct ChaosStore {
    /// The world.
    pub w: Shared,
}

#[async_trait]
impl StateStore for ChaosStore {
    async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        latency(&self.w, 1, 30).await;
        let mut w = lock(&self.w);
        if w.rng.chance(2) {
            return Err(StoreError::Unavailable("consul: injected 500".into()));
        }
        Ok(w.snapshot())
    }

    async fn commit(&self, lease: &LeaderLease, ops: &[KvOp]) -> Result<(), StoreError> {
        if lease.is_lost() {
            return Err(lease.not_leader());
        }
        latency(&self.w, 1, 40).await;
        let fault = {
            let mut w = lock(&self.w);
            w.note("commit");
            w.consul.commit_faults.pop_front()
        };
        let session = lease.session().to_owned();
        match fault {
            None => {
                let mut w = lock(&self.w);
                w.apply(&session, ops).map_err(|e| match e.as_str() {
                    "not-leader" => StoreError::NotLeader { session },
                    _ => StoreError::Conflict { key: e },
                })
            }
            Some(CommitFault::Refused) => Err(StoreError::Unavailable(
                "consul: injected 500, nothing written".into(),
            )),
            Some(CommitFault::AppliedThenTimeout) => {
                let _ = lock(&self.w).apply(&session, ops);
                Err(StoreError::Unavailable(
                    "consul txn timed out: outcome unknown".into(),
                ))
            }
            Some(CommitFault::AppliedLate(d)) => {
                let w = self.w.clone();
                let ops = ops.to_vec();
                tokio::spawn(async move {
                    tokio::time::sleep(d).await;
                    let _ = lock(&w).apply(&session, &ops);
                });
                Err(StoreError::Unavailable(
                    "consul txn timed out: outcome unknown".into(),
                ))
            }
        }
    }
}

/// Nova's failure injection for one call: `Err` when the call fails, with
/// whether it was applied anyway (a mutating call that timed out).
fn nova_fault(w: &mut World) -> Option<bool> {
    let now = Instant::now();
    if w.nova_down_until.is_some_and(|u| now < u) {
        return Some(false);
    }
    if let Some((p, until)) = w.nova_flaky
        && now < until
        && w.rng.chance(p)
    {
        return Some(w.rng.chance(50));
    }
    None
}

fn unavailable(what: &str) -> EvacuateError {
    EvacuateError::Unavailable(format!("nova {what}: injected 503"))
}

/// Nova, as the recovery's evacuator sees it; one per controller so that
/// its calls can be checked against that controller's lease.
pub struct ChaosNova {
    /// The world.
    pub w: Shared,
    /// Which controller calls through it.
    pub ctrl: usize,
}

#[async_trait]
impl Evacuator for ChaosNova {
    async fn instances_on(&self, host: &NodeName) -> Result<Vec<Instance>, EvacuateError> {
        latency(&self.w, 5, 200).await;
        let mut w = lock(&self.w);
        w.settle();
        if nova_fault(&mut w).is_some() {
            return Err(unavailable("list servers"));
        }
        let now = Instant::now();
        Ok(w.servers
            .iter()
            .filter(|(_, s)| !s.deleted && s.host == host.as_str())
            .map(|(id, s)| {
                let hidden = s.hidden_until.is_some_and(|u| now < u);
                Instance {
                    id: id.clone(),
                    name: id.clone(),
                    status: if hidden {
                        "UNKNOWN".into()
                    } else {
                        s.status.clone()
                    },
                    host: if hidden {
                        String::new()
                    } else {
                        s.host.clone()
                    },
                    user_id: "u1".into(),
                    project_id: "p1".into(),
                    metadata: BTreeMap::new(),
                    // Volume-backed: every instance is evacuated (the
                    // storage-class policy is tested in its own suites).
                    boot_from_volume: true,
                    resources: None,
                }
            })
            .collect())
    }

    async fn evacuate(
        &self,
        fenced: &Fenced,
        instance: &Instance,
        target: Option<&NodeName>,
    ) -> Result<(), EvacuateError> {
        latency(&self.w, 5, 300).await;
        let mut w = lock(&self.w);
        w.settle();
        let node = fenced.node().to_string();
        let id = instance.id.clone();
        w.note(&format!("evacuate {id}"));
        w.check_lease(self.ctrl, &format!("evacuated {id}"));
        w.check_not_held(&node, "evacuation");
        // Rule 1: the latest power reading of the node says off.
        let last = w.last_reading(&node);
        if last != Some(PowerState::Off) {
            w.violation(format!(
                "rule 1: evacuate of {id} while the latest power reading of {node} is {last:?}"
            ));
        }
        if let Some(t) = target
            && w.spare_long_down(t.as_str())
        {
            w.violation(format!(
                "rule 10: evacuate of {id} to {t}, which Nova reports down"
            ));
        }
        let fault = nova_fault(&mut w);
        if fault == Some(false) {
            return Err(unavailable("evacuate"));
        }
        let now = Instant::now();
        let Some(s) = w.servers.get(&id).cloned() else {
            return Err(EvacuateError::Refused(format!(
                "nova evacuate of {id}: 404"
            )));
        };
        if s.deleted {
            return Err(EvacuateError::Refused(format!(
                "nova evacuate of {id}: 404"
            )));
        }
        if s.task.is_some() {
            // Nova refuses a second evacuation while one runs (the daemon
            // cannot see the first one from a listing of a new incident).
            return Err(EvacuateError::Refused(format!(
                "nova evacuate of {id}: 409 task_state rebuilding"
            )));
        }
        let source_up = w.hosts.get(&s.host).is_some_and(|h| h.reported_up(now));
        if source_up {
            return Err(EvacuateError::Refused(format!(
                "nova evacuate of {id}: 409 compute service of {} is still in use",
                s.host
            )));
        }
        let chosen = match target {
            Some(t) => Some(t.to_string()),
            None => {
                let candidates: Vec<String> = w
                    .hosts
                    .iter()
                    .filter(|(n, h)| {
                        **n != s.host && h.reported_up(now) && h.enabled && !h.forced_down
                    })
                    .map(|(n, _)| n.clone())
                    .collect();
                if candidates.is_empty() {
                    None
                } else {
                    Some(w.rng.pick(&candidates).clone())
                }
            }
        };
        let target_ok = chosen
            .as_ref()
            .and_then(|t| w.hosts.get(t))
            .is_some_and(|h| h.reported_up(now) && h.enabled && !h.forced_down);
        let landing = if target_ok {
            s.next_landing
        } else {
            Landing::Error
        };
        let done_at = now + w.rng.millis(500, 20_000);
        let source = s.host.clone();
        let srv = w.servers.get_mut(&id).expect("read above");
        *srv.accepted.entry(source.clone()).or_default() += 1;
        let twice = srv.accepted[&source] > 1;
        srv.next_landing = Landing::Lands;
        srv.failed_evacuation = None;
        srv.task = Some(Task {
            source: source.clone(),
            target: chosen.unwrap_or_else(|| "nowhere".into()),
            done_at,
            landing,
        });
        if twice {
            w.violation(format!("rule 3: {id} evacuated twice from {source}"));
        }
        match fault {
            Some(true) => Err(unavailable("evacuate (applied)")),
            _ => Ok(()),
        }
    }

    async fn progress(&self, instance_id: &str) -> Result<InstanceProgress, EvacuateError> {
        latency(&self.w, 5, 150).await;
        let mut w = lock(&self.w);
        w.settle();
        if nova_fault(&mut w).is_some() {
            return Err(unavailable("show server"));
        }
        let now = Instant::now();
        let Some(s) = w.servers.get(instance_id) else {
            return Ok(InstanceProgress::Failed {
                reason: format!("server {instance_id} no longer exists"),
            });
        };
        if s.deleted {
            return Ok(InstanceProgress::Failed {
                reason: format!("server {instance_id} no longer exists"),
            });
        }
        if s.task.is_some() {
            return Ok(InstanceProgress::InFlight);
        }
        if let Some(f) = &s.failed_evacuation {
            return Ok(InstanceProgress::Failed { reason: f.clone() });
        }
        let hidden = s.hidden_until.is_some_and(|u| now < u);
        Ok(InstanceProgress::Landed {
            host: if hidden {
                String::new()
            } else {
                s.host.clone()
            },
            status: if hidden {
                "UNKNOWN".into()
            } else {
                s.status.clone()
            },
        })
    }

    async fn force_down(
        &self,
        node: &NodeName,
        service_id: &str,
        _reason: &str,
    ) -> Result<(), EvacuateError> {
        latency(&self.w, 5, 200).await;
        let mut w = lock(&self.w);
        w.settle();
        w.note(&format!("force-down {node}"));
        w.check_lease(self.ctrl, &format!("forced {node} down"));
        w.check_not_held(node.as_str(), "force-down");
        let fault = nova_fault(&mut w);
        if fault == Some(false) {
            return Err(unavailable("force-down"));
        }
        let h = w.hosts.get_mut(node.as_str()).expect("a known host");
        if h.service_id != service_id {
            return Err(EvacuateError::Refused(format!(
                "nova force-down of service {service_id}: 404"
            )));
        }
        h.forced_down = true;
        h.enabled = false;
        if fault == Some(true) {
            return Err(unavailable("force-down (applied)"));
        }
        Ok(())
    }

    async fn prepare_target(
        &self,
        ha_node: &NodeName,
        service_id: &str,
    ) -> Result<(), EvacuateError> {
        latency(&self.w, 5, 200).await;
        let mut w = lock(&self.w);
        w.settle();
        w.note(&format!("prepare {ha_node}"));
        w.check_lease(self.ctrl, &format!("enabled spare {ha_node}"));
        let fault = nova_fault(&mut w);
        if fault == Some(false) {
            return Err(unavailable("enable"));
        }
        let forced = w.hosts.get(ha_node.as_str()).is_some_and(|h| h.forced_down);
        if forced {
            w.violation(format!(
                "rule 10: the prepare step un-forced spare {ha_node}, which is forced down"
            ));
        }
        if w.spare_long_down(ha_node.as_str()) {
            w.violation(format!(
                "rule 10: enabled spare {ha_node}, which Nova reports down"
            ));
        }
        let h = w.hosts.get_mut(ha_node.as_str()).expect("a known host");
        if h.service_id != service_id {
            return Err(EvacuateError::Refused(format!(
                "nova enable of service {service_id}: 404"
            )));
        }
        h.enabled = true;
        h.forced_down = false;
        if fault == Some(true) {
            return Err(unavailable("enable (applied)"));
        }
        Ok(())
    }

    async fn start(&self, instance_id: &str) -> Result<(), EvacuateError> {
        latency(&self.w, 5, 200).await;
        let mut w = lock(&self.w);
        w.settle();
        w.check_lease(self.ctrl, &format!("started {instance_id}"));
        let fault = nova_fault(&mut w);
        if fault == Some(false) {
            return Err(unavailable("start"));
        }
        let Some(s) = w.servers.get_mut(instance_id) else {
            return Err(EvacuateError::Refused(format!(
                "nova start of {instance_id}: 404"
            )));
        };
        if s.task.is_some() {
            return Err(EvacuateError::Refused(format!(
                "nova start of {instance_id}: 409 task running"
            )));
        }
        if s.status == "SHUTOFF" {
            s.status = "ACTIVE".into();
        }
        if fault == Some(true) {
            return Err(unavailable("start (applied)"));
        }
        Ok(())
    }

    async fn restore_service(
        &self,
        node: &NodeName,
        service_id: &str,
    ) -> Result<(), EvacuateError> {
        latency(&self.w, 5, 200).await;
        let mut w = lock(&self.w);
        w.settle();
        w.check_lease(self.ctrl, &format!("restored {node}'s service"));
        let fault = nova_fault(&mut w);
        if fault == Some(false) {
            return Err(unavailable("restore"));
        }
        let h = w.hosts.get_mut(node.as_str()).expect("a known host");
        if h.service_id != service_id {
            return Err(EvacuateError::Refused(format!(
                "nova enable of service {service_id}: 404"
            )));
        }
        h.forced_down = false;
        h.enabled = true;
        if fault == Some(true) {
            return Err(unavailable("restore (applied)"));
        }
        Ok(())
    }
}

/// The BMCs of every host; one per controller.
pub struct ChaosBmc {
    /// The world.
    pub w: Shared,
    /// Which controller calls through it.
    pub ctrl: usize,
}

impl ChaosBmc {
    fn unreachable(node: &NodeName) -> FenceError {
        FenceError::Unreachable {
            node: node.clone(),
            detail: "BMC timed out (injected)".into(),
        }
    }
}

#[async_trait]
impl Fencer for ChaosBmc {
    fn driver(&self) -> &'static str {
        "chaos"
    }

    async fn fence(&self, target: &FenceTarget) -> Result<Fenced, FenceError> {
        latency(&self.w, 50, 2_000).await;
        let mut w = lock(&self.w);
        w.settle();
        let node = target.node.to_string();
        w.note(&format!("fence {node}"));
        w.check_lease(self.ctrl, &format!("fenced {node}"));
        w.check_not_held(&node, "fence");
        let now = Instant::now();
        let Some(h) = w.hosts.get(&node).cloned() else {
            return Err(Self::unreachable(&target.node));
        };
        if h.alive && h.partitioned {
            if h.mass_partition {
                w.violation(format!(
                    "rule 7: fenced {node}, cut off by a mass partition"
                ));
            }
        } else if h.alive
            && h.healed_at
                .is_none_or(|at| now > at + crate::world::INTERVAL + crate::world::GRACE)
        {
            // Within one monitor read of a heal the daemon cannot know yet.
            w.violation(format!("fenced {node}, which is alive and healthy"));
        }
        if h.bmc_down_until.is_some_and(|u| now < u) {
            w.readings
                .entry(node)
                .or_default()
                .push((now, PowerState::Unknown));
            return Err(Self::unreachable(&target.node));
        }
        let h = w.hosts.get_mut(&node).expect("read above");
        if h.power_on {
            h.power_on = false;
            h.alive = false;
            h.silent_since.get_or_insert(now);
            if let Some(after) = h.restore_after.take() {
                h.restore_at = Some(now + after);
            }
        }
        let read = if h.power_on {
            PowerState::On
        } else {
            PowerState::Off
        };
        w.readings
            .entry(node.clone())
            .or_default()
            .push((now, read));
        match Fenced::from_observation(target.node.clone(), "chaos", read, w.wall()) {
            Some(f) => Ok(f),
            None => Err(FenceError::NotConfirmed {
                node: target.node.clone(),
                last: read,
            }),
        }
    }

    async fn power_state(&self, target: &FenceTarget) -> Result<PowerState, FenceError> {
        latency(&self.w, 20, 800).await;
        let mut w = lock(&self.w);
        w.settle();
        let node = target.node.to_string();
        let now = Instant::now();
        let Some(h) = w.hosts.get(&node).cloned() else {
            return Err(Self::unreachable(&target.node));
        };
        let read = if h.bmc_down_until.is_some_and(|u| now < u) {
            None
        } else if h.power_on {
            Some(PowerState::On)
        } else {
            Some(PowerState::Off)
        };
        w.readings
            .entry(node)
            .or_default()
            .push((now, read.unwrap_or(PowerState::Unknown)));
        read.ok_or_else(|| Self::unreachable(&target.node))
    }

    async fn unfence(&self, target: &FenceTarget) -> Result<(), FenceError> {
        Err(Self::unreachable(&target.node))
    }
}

/// The monitor's signals: Nova's services and the Consul agents' health.
pub struct ChaosMonitor {
    /// The world.
    pub w: Shared,
}

#[async_trait]
impl Observe for ChaosMonitor {
    async fn observe(&self) -> Observation {
        latency(&self.w, 5, 300).await;
        let mut w = lock(&self.w);
        w.settle();
        if nova_fault(&mut w).is_some() {
            return Observation {
                nova: None,
                problems: vec![Problem::NovaUnreachable {
                    error: "injected 503".into(),
                }],
                ..Observation::default()
            };
        }
        let now = Instant::now();
        let nova = w
            .hosts
            .iter()
            .map(|(name, h)| {
                let signals = NodeSignals {
                    nova: NovaService {
                        id: h.service_id.clone(),
                        up: h.reported_up(now),
                        enabled: h.enabled,
                        forced_down: h.forced_down,
                    },
                    consul_failed: Some(h.silent()),
                    tcp_failed: None,
                };
                (NodeName::from(name.as_str()), signals)
            })
            .collect();
        Observation {
            nova: Some(nova),
            problems: Vec::new(),
            ..Observation::default()
        }
    }
}
