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
/// only [`novaha_core::drivers::Fencer::power_state`]. Cancel-safe. Each
/// reading is logged at DEBUG only: the caller owns the policy of what to
/// tell the operator (the daemon logs one WARN per unhealthy node per
/// round, with its scrubbed error).
///
/// The future is `Send`, so a task that owns the registry and the targets
/// can be spawned on it: each read is an owned future (its own registry
/// handle and target), never a closure's future borrowing the closure's
/// argument, which trips rustc's higher-ranked `Send` inference
/// (rust-lang/rust#102211, "implementation of `FnOnce` is not general
/// enough").
pub async fn check_power(
    registry: &FenceRegistry,
    targets: &[FenceTarget],
    concurrency: usize,
) -> Vec<PowerReport> {
    let mut reports: Vec<(usize, PowerReport)> = stream::iter(targets.iter().cloned().enumerate())
        .map(|(i, target)| {
            let registry = registry.clone();
            async move { (i, read_power(registry, target).await) }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    reports.sort_by_key(|(i, _)| *i);
    reports.into_iter().map(|(_, r)| r).collect()
}

/// Reads one node's power with its own driver. Owned arguments so that the
/// future is `Send + 'static` (see [`check_power`]).
async fn read_power(registry: FenceRegistry, target: FenceTarget) -> PowerReport {
    let (driver, result) = match registry.fencer_for(&target) {
        Err(e) => (
            registry
                .driver_of(&target.node, &target.bmc)
                .map_or_else(|_| "unknown".to_owned(), |d| d.to_string()),
            Err(e.to_string()),
        ),
        Ok(fencer) => (
            fencer.driver().to_owned(),
            fencer.power_state(&target).await.map_err(|e| e.to_string()),
        ),
    };
    match &result {
        Ok(PowerState::Unknown) | Err(_) => tracing::debug!(
            node = %target.node,
            driver = %driver,
            result = ?result,
            "fence path unhealthy: power could not be read"
        ),
        Ok(power) => {
            tracing::debug!(node = %target.node, driver = %driver, power = %power, "fence path healthy")
        }
    }
    PowerReport {
        node: target.node,
        driver,
        result,
        checked_at: Utc::now(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{DriverName, FenceSettings};
    use novaha_core::kv::BmcConfig;

    fn target(node: &str, driver: Option<&str>) -> FenceTarget {
        FenceTarget {
            node: NodeName::from(node),
            bmc: BmcConfig {
                driver: driver.map(str::to_owned),
                ..BmcConfig::default()
            },
        }
    }

    /// The daemon spawns a round that owns its registry and targets and
    /// awaits `check_power` on them: that future must be `Send + 'static`.
    #[tokio::test]
    async fn check_power_runs_in_a_spawned_task_and_keeps_the_order() {
        let registry = FenceRegistry::new(&FenceSettings {
            driver: DriverName::Noop,
            allow_noop: true,
            ..FenceSettings::default()
        })
        .expect("noop registry");
        let targets = vec![
            target("n1", None),
            target("n2", Some("ipmi")),
            target("n3", Some("bogus")),
            target("n4", None),
        ];
        let reports = tokio::spawn(async move { check_power(&registry, &targets, 2).await })
            .await
            .expect("the spawned round ends");
        let got: Vec<(&str, &str, bool)> = reports
            .iter()
            .map(|r| (r.node.as_str(), r.driver.as_str(), r.is_healthy()))
            .collect();
        assert_eq!(
            got,
            [
                ("n1", "noop", true),
                ("n2", "ipmi", false),
                ("n3", "unknown", false),
                ("n4", "noop", true),
            ]
        );
        assert_eq!(reports[0].result, Ok(PowerState::Off));
        let err = reports[1].result.as_ref().expect_err("no BMC address");
        assert!(err.contains("n2"), "{err}");
    }
}
