//! Fence-path health: read (never change) every compute node's power with
//! its own driver and credentials, so that a wrong BMC password or a dead
//! BMC is found on a quiet afternoon, not during the outage. The daemon's
//! leader runs [`check_power`] every `[fence] health_interval` and shows the
//! reports (`novaha status`, a gauge).

use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt};
use novaha_core::drivers::fence::FenceTarget;
use novaha_core::{NodeName, PowerState};
use serde::Serialize;

use crate::registry::FenceRegistry;

/// One node's power reading.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PowerReport {
    /// The node.
    pub node: NodeName,
    /// The driver used (or that would have been used), e.g. `"ipmi"`.
    pub driver: String,
    /// The power read, or the error (sanitised: never a secret).
    pub result: Result<PowerState, String>,
    /// When the read finished.
    pub checked_at: DateTime<Utc>,
}

impl PowerReport {
    /// True when the fence path works: the power could be read (as on or
    /// off). An unknown state counts as not working.
    pub fn is_healthy(&self) -> bool {
        matches!(self.result, Ok(PowerState::On | PowerState::Off))
    }
}

/// Reads the power of every target, at most `concurrency` at a time, and
/// returns one report per target in the targets' order. Read-only: it calls
/// only [`novaha_core::drivers::Fencer::power_state`]. Cancel-safe.
pub async fn check_power(
    registry: &FenceRegistry,
    targets: &[FenceTarget],
    concurrency: usize,
) -> Vec<PowerReport> {
    let mut reports: Vec<(usize, PowerReport)> = stream::iter(targets.iter().enumerate())
        .map(|(i, target)| async move {
            let (driver, result) = match registry.fencer_for(target) {
                Err(e) => (
                    registry
                        .driver_of(&target.node, &target.bmc)
                        .map_or_else(|_| "unknown".to_owned(), |d| d.to_string()),
                    Err(e.to_string()),
                ),
                Ok(fencer) => (
                    fencer.driver().to_owned(),
                    fencer.power_state(target).await.map_err(|e| e.to_string()),
                ),
            };
            match &result {
                Ok(PowerState::Unknown) | Err(_) => tracing::warn!(
                    node = %target.node,
                    driver = %driver,
                    result = ?result,
                    "fence path unhealthy: power could not be read"
                ),
                Ok(power) => tracing::debug!(node = %target.node, driver = %driver, power = %power, "fence path healthy"),
            }
            (
                i,
                PowerReport {
                    node: target.node.clone(),
                    driver,
                    result,
                    checked_at: Utc::now(),
                },
            )
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    reports.sort_by_key(|(i, _)| *i);
    reports.into_iter().map(|(_, r)| r).collect()
}
