//! The recovery's stages, built from the config: the monitor (`[monitor]`),
//! the fence registry (`[fence]`), the Nova evacuator (`[evacuate]`), the
//! notification outbox (`[[notify]]`) and the decision policy they imply.
//!
//! Built once per process when the leader first needs them
//! ([`Stages::connect`]): connecting negotiates Nova's microversion, which
//! the policy depends on (`restore_power_state` from 2.95). A cloud that
//! cannot be reached yet is retried at the next cycle; the daemon keeps
//! running and holding the lock meanwhile (a blind monitor judges nothing).

use std::sync::Arc;

use anyhow::Context;
use novaha_core::detect::Thresholds;
use novaha_core::drivers::Evacuator;
use novaha_core::kv::Schema;
use novaha_core::recovery::Policy;
use novaha_core::store::StateStore;
use novaha_evacuate::NovaEvacuator;
use novaha_evacuate::capacity::CapacityReader;
use novaha_fence::FenceRegistry;
use novaha_monitor::{Monitor, Observe};
use novaha_notify::{DeliveryOutcome, Outbox, OutboxOptions};
use novaha_openstack::PlacementClient;

use crate::config::Config;
use crate::metrics::Metrics;

/// Everything the leader's cycle and the recovery runner call.
pub struct Stages {
    /// The monitor: one `observe` per cycle.
    pub monitor: Arc<dyn Observe>,
    /// The fence drivers, chosen per node.
    pub fences: FenceRegistry,
    /// The Nova side of a recovery.
    pub evacuator: Arc<dyn Evacuator>,
    /// The notification outbox; `None` when no `[[notify]]` is configured
    /// (a recovery then counts as notified at once, and says so in the log).
    pub outbox: Option<Arc<Outbox>>,
    /// The decision policy (from `[evacuate]`, `[recovery]`, the schema and
    /// the negotiated microversion).
    pub policy: Policy,
    /// The detection thresholds (from `[monitor]`).
    pub thresholds: Thresholds,
    /// The leader's capacity reads for the failures-tolerated figure;
    /// `None` without Placement.
    pub capacity: Option<CapacityReader>,
}

impl std::fmt::Debug for Stages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stages")
            .field("fences", &self.fences)
            .field("outbox", &self.outbox.is_some())
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// The detection thresholds of a config.
pub fn thresholds(cfg: &Config) -> Thresholds {
    Thresholds {
        threshold: cfg.monitor.threshold,
        max_failed_fraction: cfg.monitor.max_failed_fraction,
        max_failed_nodes: cfg.monitor.max_failed_nodes.map(|n| n as usize),
    }
}

/// The decision policy of a config, before the microversion is known.
pub fn policy(cfg: &Config, schema: &Schema) -> Policy {
    let mut p = Policy {
        schema: schema.clone(),
        ..Policy::default()
    };
    cfg.evacuate.apply(&mut p);
    cfg.recovery.apply(&mut p);
    p
}

impl Stages {
    /// Connects to the cloud (Keystone, Nova's microversion) and builds
    /// every stage. The outbox reports each message's outcome to `metrics`
    /// (`novaha_notifications_total{driver,result}`). Fails with the reason
    /// (no secret in it) when the cloud cannot be reached or a stage's
    /// settings are unusable.
    pub async fn connect(
        cfg: &Config,
        store: Arc<dyn StateStore>,
        schema: &Schema,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let (session, nova, keystone) = novaha_openstack::connect(&cfg.openstack)
            .await
            .context("connect to openstack")?;
        let placement = PlacementClient::new(session);
        let placement = if placement
            .available()
            .await
            .context("look up placement in the catalog")?
        {
            Some(placement)
        } else {
            tracing::warn!(
                "no placement endpoint in the catalog: evacuations go unchecked for capacity, no failures-tolerated figure"
            );
            None
        };
        let consul = cfg.consul.settings();
        let monitor = Monitor::new(cfg.monitor.signals(), nova.clone(), Some(&consul))
            .context("build the monitor")?;
        let (consul_client, _) = crate::connect::connect(cfg)?;
        let fences =
            crate::credentials::registry(cfg, &consul_client).context("build the fence drivers")?;
        let mut evacuator = NovaEvacuator::new(nova.clone());
        if let Some(p) = &placement {
            evacuator = evacuator.with_placement(p.clone());
        }
        let mut policy = policy(cfg, schema);
        policy.restore_power_state = evacuator.lands_shutoff();
        let outbox = if cfg.notify.is_empty() {
            None
        } else {
            let outbox = Outbox::from_settings(
                store,
                schema,
                &cfg.notify,
                Arc::new(keystone),
                OutboxOptions::default(),
            )
            .context("build the notification channels")?
            .with_outcome_sink(Arc::new(move |o: &DeliveryOutcome| {
                metrics.notification(&o.driver, o.result);
            }));
            Some(Arc::new(outbox))
        };
        Ok(Self {
            monitor: Arc::new(monitor),
            fences,
            evacuator: Arc::new(evacuator),
            outbox,
            policy,
            thresholds: thresholds(cfg),
            capacity: placement.map(|placement| CapacityReader {
                nova,
                placement,
                interval: cfg.evacuate.capacity_interval,
            }),
        })
    }
}
