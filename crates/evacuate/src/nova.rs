//! The `nova` driver: core's [`Evacuator`] over the Nova client.

use async_trait::async_trait;
use novaha_core::NodeName;
use novaha_core::capacity::HostCapacity;
use novaha_core::drivers::{EvacuateError, Evacuator, Fenced, Instance, InstanceProgress};
use novaha_openstack::{
    Migration, NovaClient, OpenStackError, PlacementClient, ResourceProvider, Server, Service,
};

/// Migration statuses that mean the evacuation failed for good.
const FAILED_MIGRATION: &[&str] = &["failed", "error"];
/// Migration statuses of an evacuation still under way.
const RUNNING_MIGRATION: &[&str] = &[
    "accepted",
    "pre-migrating",
    "migrating",
    "queued",
    "running",
];

/// Core's [`Evacuator`] over a [`NovaClient`] at its negotiated
/// microversion. Cheap to clone; every method may run concurrently with
/// any other.
#[derive(Clone, Debug)]
pub struct NovaEvacuator {
    nova: NovaClient,
    placement: Option<PlacementClient>,
}

impl NovaEvacuator {
    /// The driver over `nova` (already connected: microversion negotiated),
    /// without capacity reads.
    pub fn new(nova: NovaClient) -> Self {
        Self {
            nova,
            placement: None,
        }
    }

    /// Reads the HA node's room from `placement` before sending
    /// evacuations there ([`Evacuator::capacity`]).
    pub fn with_placement(mut self, placement: PlacementClient) -> Self {
        self.placement = Some(placement);
        self
    }

    /// The provider of compute host `host`: the one named after it, else
    /// the one named after its hypervisor (whose host name may differ from
    /// the service's host, e.g. an FQDN).
    async fn provider_of(
        &self,
        placement: &PlacementClient,
        host: &str,
    ) -> Result<Option<ResourceProvider>, OpenStackError> {
        if let Some(p) = placement.provider_named(host).await? {
            return Ok(Some(p));
        }
        let hypervisors = self.nova.hypervisors().await?;
        let Some(h) = hypervisors
            .iter()
            .find(|h| h.service.as_ref().is_some_and(|s| s.host == host))
        else {
            return Ok(None);
        };
        placement.provider_named(&h.hypervisor_hostname).await
    }

    /// True when an evacuated server lands SHUTOFF (microversion >= 2.95):
    /// what the recovery policy's `restore_power_state` must be set to.
    pub fn lands_shutoff(&self) -> bool {
        self.nova.evacuate_lands_shutoff()
    }

    /// The client underneath.
    pub fn client(&self) -> &NovaClient {
        &self.nova
    }

    /// A service record for calls that, on clouds before 2.53, address the
    /// service by host and binary rather than by id.
    fn service(host: &NodeName, service_id: &str, forced_down: bool) -> Service {
        Service {
            id: service_id.to_owned(),
            binary: "nova-compute".to_owned(),
            host: host.to_string(),
            status: String::new(),
            state: String::new(),
            forced_down: Some(forced_down),
            disabled_reason: None,
            zone: None,
            updated_at: None,
        }
    }
}

/// Maps a client error onto the trait's: anything that may succeed later,
/// or whose outcome is unknown (a mutating call that timed out), is
/// `Unavailable` (retryable: the runner reads back before re-sending);
/// everything else (4xx, malformed, unsupported) is `Refused`.
fn map_err(e: OpenStackError) -> EvacuateError {
    if e.is_retryable() || e.outcome_unknown() {
        EvacuateError::Unavailable(e.to_string())
    } else {
        EvacuateError::Refused(e.to_string())
    }
}

/// The evacuation migration created last (by creation time, then id).
fn latest_evacuation(migrations: &[Migration]) -> Option<&Migration> {
    migrations
        .iter()
        .filter(|m| {
            m.migration_type
                .as_deref()
                .is_none_or(|t| t.eq_ignore_ascii_case("evacuation"))
        })
        .max_by(|a, b| {
            let ka = (a.created_at.as_deref(), a.id.parse::<u64>().ok(), &a.id);
            let kb = (b.created_at.as_deref(), b.id.parse::<u64>().ok(), &b.id);
            ka.cmp(&kb)
        })
}

fn is_one_of(status: &str, set: &[&str]) -> bool {
    set.iter().any(|s| status.eq_ignore_ascii_case(s))
}

/// Where an instance stands, from the server as Nova shows it now
/// (`None` = Nova answers 404) and its migration records (only consulted
/// once no task runs on the server). Pure, so that every Nova answer shape
/// is tested without a cloud.
///
/// - gone: `Failed`;
/// - a task running, or status REBUILD: `InFlight`;
/// - the latest evacuation migration `failed`/`error`: `Failed`, with the
///   server's fault message when it has one;
/// - the latest evacuation migration still running: `InFlight`;
/// - otherwise `Landed` on its current host with its status (which may be
///   the failed node itself when nothing moved: the decision tells those
///   apart, since only it knows the source).
pub fn progress_of(
    id: &str,
    server: Option<&Server>,
    migrations: &[Migration],
) -> InstanceProgress {
    let Some(server) = server else {
        return InstanceProgress::Failed {
            reason: format!("server {id} no longer exists"),
        };
    };
    let task_running = server.task_state.as_deref().is_some_and(|t| !t.is_empty());
    if task_running || server.status.eq_ignore_ascii_case("REBUILD") {
        return InstanceProgress::InFlight;
    }
    if let Some(m) = latest_evacuation(migrations) {
        if is_one_of(&m.status, FAILED_MIGRATION) {
            let fault = server
                .fault
                .as_ref()
                .map(|f| f.message.trim())
                .filter(|m| !m.is_empty());
            let reason = match fault {
                Some(f) => format!("evacuation migration {} {}: {f}", m.id, m.status),
                None => format!(
                    "evacuation migration {} {} (server {} on {})",
                    m.id,
                    m.status,
                    server.status,
                    server.host.as_deref().unwrap_or("no host")
                ),
            };
            return InstanceProgress::Failed { reason };
        }
        if is_one_of(&m.status, RUNNING_MIGRATION) {
            return InstanceProgress::InFlight;
        }
    }
    InstanceProgress::Landed {
        host: server.host.clone().unwrap_or_default(),
        status: server.status.clone(),
    }
}

#[async_trait]
impl Evacuator for NovaEvacuator {
    async fn instances_on(&self, host: &NodeName) -> Result<Vec<Instance>, EvacuateError> {
        let servers = self
            .nova
            .servers_on_host(host.as_str())
            .await
            .map_err(map_err)?;
        tracing::debug!(node = %host, instances = servers.len(), "instances listed");
        Ok(servers.iter().map(Server::to_instance).collect())
    }

    async fn evacuate(
        &self,
        fenced: &Fenced,
        instance: &Instance,
        target: Option<&NodeName>,
    ) -> Result<(), EvacuateError> {
        // The evidence must be for the host the instance was listed on.
        if !instance.host.is_empty() && instance.host != fenced.node().as_str() {
            return Err(EvacuateError::Refused(format!(
                "evacuate of {} on {}: fence evidence is for {}, not its host",
                instance.id,
                instance.host,
                fenced.node()
            )));
        }
        let target_name = target.map(NodeName::as_str);
        let sent = self.nova.evacuate(&instance.id, target_name).await;
        match &sent {
            Ok(()) => tracing::info!(
                instance = %instance.id,
                node = %fenced.node(),
                target = target_name.unwrap_or("scheduler"),
                "evacuation requested"
            ),
            Err(e) => tracing::warn!(
                instance = %instance.id,
                node = %fenced.node(),
                target = target_name.unwrap_or("scheduler"),
                error = %e,
                outcome_unknown = e.outcome_unknown(),
                "evacuation request failed"
            ),
        }
        sent.map_err(map_err)
    }

    async fn progress(&self, instance_id: &str) -> Result<InstanceProgress, EvacuateError> {
        let server = self.nova.server(instance_id).await.map_err(map_err)?;
        let settled = server.as_ref().is_some_and(|s| {
            s.task_state.as_deref().is_none_or(str::is_empty)
                && !s.status.eq_ignore_ascii_case("REBUILD")
        });
        let migrations = if settled {
            self.nova
                .migrations(instance_id, Some("evacuation"))
                .await
                .map_err(map_err)?
        } else {
            Vec::new()
        };
        Ok(progress_of(instance_id, server.as_ref(), &migrations))
    }

    async fn force_down(
        &self,
        node: &NodeName,
        service_id: &str,
        reason: &str,
    ) -> Result<(), EvacuateError> {
        let svc = Self::service(node, service_id, false);
        self.nova.force_down(&svc, reason).await.map_err(map_err)?;
        tracing::info!(node = %node, service_id, "nova service forced down");
        Ok(())
    }

    async fn prepare_target(
        &self,
        ha_node: &NodeName,
        service_id: &str,
    ) -> Result<(), EvacuateError> {
        let svc = Self::service(ha_node, service_id, true);
        self.nova.enable(&svc).await.map_err(map_err)?;
        tracing::info!(ha_node = %ha_node, service_id, "ha node service enabled");
        Ok(())
    }

    async fn start(&self, instance_id: &str) -> Result<(), EvacuateError> {
        match self.nova.start(instance_id).await {
            Ok(()) => {
                tracing::info!(instance = %instance_id, "instance started");
                Ok(())
            }
            Err(e) if e.status() == Some(409) => {
                // Already running (a previous leader's start landed): done.
                let now = self.nova.server(instance_id).await.map_err(map_err)?;
                if now
                    .as_ref()
                    .is_some_and(|s| s.status.eq_ignore_ascii_case("ACTIVE"))
                {
                    tracing::info!(instance = %instance_id, "instance already active");
                    Ok(())
                } else {
                    Err(map_err(e))
                }
            }
            Err(e) => Err(map_err(e)),
        }
    }

    async fn capacity(&self, host: &NodeName) -> Result<Option<HostCapacity>, EvacuateError> {
        let Some(placement) = &self.placement else {
            return Ok(None);
        };
        let Some(rp) = self
            .provider_of(placement, host.as_str())
            .await
            .map_err(map_err)?
        else {
            tracing::warn!(host = %host, "no placement resource provider for the host: evacuations to it go unchecked");
            return Ok(None);
        };
        let cap = placement.host_capacity(&rp.uuid).await.map_err(map_err)?;
        tracing::debug!(host = %host, provider = %rp.uuid, allocations = cap.allocations.len(), "placement capacity read");
        Ok(Some(cap))
    }

    async fn restore_service(
        &self,
        node: &NodeName,
        service_id: &str,
    ) -> Result<(), EvacuateError> {
        let svc = Self::service(node, service_id, true);
        self.nova.enable(&svc).await.map_err(map_err)?;
        tracing::info!(node = %node, service_id, "nova service restored");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(status: &str, host: &str, task: Option<&str>) -> Server {
        serde_json_server(status, host, task, None)
    }

    fn serde_json_server(
        status: &str,
        host: &str,
        task: Option<&str>,
        fault: Option<&str>,
    ) -> Server {
        Server {
            id: "u1".into(),
            name: "vm".into(),
            status: status.into(),
            user_id: "usr".into(),
            project_id: "prj".into(),
            host: Some(host.into()),
            task_state: task.map(Into::into),
            vm_state: None,
            locked: None,
            locked_reason: None,
            metadata: Default::default(),
            fault: fault.map(|m| novaha_openstack::nova::Fault {
                message: m.into(),
                code: Some(500),
            }),
            image: None,
            volumes_attached: Vec::new(),
            flavor: None,
        }
    }

    fn migration(id: &str, status: &str, created: &str) -> Migration {
        Migration {
            id: id.into(),
            instance_uuid: "u1".into(),
            source_compute: Some("c1".into()),
            dest_compute: Some("ha-1".into()),
            status: status.into(),
            migration_type: Some("evacuation".into()),
            created_at: Some(created.into()),
            updated_at: None,
        }
    }

    #[test]
    fn gone_is_failed_and_a_running_task_is_in_flight() {
        assert!(matches!(
            progress_of("u1", None, &[]),
            InstanceProgress::Failed { reason } if reason.contains("u1") && reason.contains("no longer exists")
        ));
        let s = server("REBUILD", "c1", Some("rebuilding"));
        assert_eq!(progress_of("u1", Some(&s), &[]), InstanceProgress::InFlight);
        let s = server("ACTIVE", "c1", Some("rebuild_spawning"));
        assert_eq!(progress_of("u1", Some(&s), &[]), InstanceProgress::InFlight);
    }

    #[test]
    fn the_latest_evacuation_migration_decides_failure() {
        let s = serde_json_server("ERROR", "c1", None, Some("No valid host was found."));
        let old_ok = migration("1", "completed", "2026-01-01T00:00:00");
        let new_err = migration("2", "error", "2026-02-01T00:00:00");
        match progress_of("u1", Some(&s), &[new_err.clone(), old_ok.clone()]) {
            InstanceProgress::Failed { reason } => {
                assert!(reason.contains("No valid host"), "{reason}");
                assert!(reason.contains("migration 2 error"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        // Failed migration, server back ACTIVE on its source, no fault.
        let s = server("ACTIVE", "c1", None);
        let failed = migration("3", "failed", "2026-03-01T00:00:00");
        assert!(matches!(
            progress_of("u1", Some(&s), &[failed]),
            InstanceProgress::Failed { reason } if reason.contains("on c1")
        ));
        // A newer successful one wins over an older failure.
        let s = server("ACTIVE", "ha-1", None);
        let done = migration("4", "done", "2026-04-01T00:00:00");
        assert_eq!(
            progress_of("u1", Some(&s), &[new_err, done, old_ok]),
            InstanceProgress::Landed {
                host: "ha-1".into(),
                status: "ACTIVE".into()
            }
        );
    }

    #[test]
    fn settled_servers_land_where_they_are() {
        let s = server("SHUTOFF", "ha-1", None);
        assert_eq!(
            progress_of("u1", Some(&s), &[migration("1", "done", "t")]),
            InstanceProgress::Landed {
                host: "ha-1".into(),
                status: "SHUTOFF".into()
            }
        );
        // Migration accepted but the task already cleared: still moving.
        let s = server("ACTIVE", "c1", None);
        assert_eq!(
            progress_of("u1", Some(&s), &[migration("1", "accepted", "t")]),
            InstanceProgress::InFlight
        );
        // Nothing moved: landed "on its source", the decision waits.
        assert_eq!(
            progress_of("u1", Some(&s), &[]),
            InstanceProgress::Landed {
                host: "c1".into(),
                status: "ACTIVE".into()
            }
        );
        // Other migration types are ignored.
        let mut live = migration("9", "error", "z");
        live.migration_type = Some("live-migration".into());
        assert!(matches!(
            progress_of("u1", Some(&s), &[live]),
            InstanceProgress::Landed { .. }
        ));
    }

    #[test]
    fn errors_map_to_retryable_or_refused() {
        let http = |status| OpenStackError::Http {
            call: "nova evacuate",
            method: "POST",
            path: "/servers/x/action".into(),
            status,
            body: "b".into(),
            request_id: None,
        };
        assert!(map_err(http(503)).is_retryable());
        let e = map_err(http(409));
        assert!(!e.is_retryable());
        assert!(e.to_string().contains("HTTP 409"), "{e}");
        let t = OpenStackError::Timeout {
            call: "nova evacuate",
            method: "POST",
            path: "/servers/x/action".into(),
            after: std::time::Duration::from_secs(1),
            mutating: true,
            request_id: None,
        };
        assert!(map_err(t).is_retryable());
    }
}
