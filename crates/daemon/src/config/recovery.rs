//! `[recovery]`: how the recovery runner behaves (owned by the runner,
//! crates/daemon/src/recovery/): `mode` (`active`, or `dry-run`: detect and
//! print the plan, change nothing), the administrator's reset, and the
//! retry policy of failed steps. Everything else the decisions need comes
//! from `[evacuate]` and the negotiated Nova microversion.

use std::time::Duration;

use novaha_core::recovery::{Policy, ResetPolicy};
use novaha_core::validate::{Problem, Validate};
use serde::{Deserialize, Serialize};

use super::Problems;

/// `[recovery] mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Detect, fence, evacuate, notify.
    #[default]
    Active,
    /// Detect (counting in memory only), then print and log the full plan of
    /// each failed node (fence target, instances in order, targets). Writes
    /// nothing to the state tree except the leader's own bookkeeping
    /// (`novaha/last_cycle`), calls nothing that changes Nova or a BMC.
    DryRun,
}

/// `[recovery]`. Serialize: the example-file test compares every key of
/// deploy/novaha.example.toml's section with the defaults, as written.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RecoveryConfig {
    /// `active` (default) or `dry-run`.
    pub mode: Mode,
    /// On an administrator's reset, clear the Nova force-down of the node
    /// and enable its service again.
    pub reenable_on_reset: bool,
    /// On an administrator's reset, release the HA node the recovery
    /// claimed (`in_use=False`).
    pub release_ha_node_on_reset: bool,
    /// After an administrator's reset, failures of the node are not counted
    /// until Nova reports it up once, for at most this long (`0s` = no
    /// wait): a restarted nova-compute reads down until its first heartbeat.
    #[serde(with = "humantime_serde")]
    pub reset_grace: Duration,
    /// The first retry delay after a failed step (doubles per attempt).
    #[serde(with = "humantime_serde")]
    pub backoff_initial: Duration,
    /// The longest retry delay.
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
    /// A failed step is logged at ERROR from this many consecutive failures
    /// (a fence failure and a refused call at once).
    pub alert_after: u32,
    /// Consecutive refused (non-retryable) failures of a step other than
    /// fencing before the recovery is `stuck`.
    pub max_attempts: u32,
    /// Failed attempts to queue the notifications before they are given up
    /// (the recovery finishes anyway).
    pub notify_attempts: u32,
    /// An evacuation (or start) recorded as sent that Nova still shows
    /// untouched this long after is sent again (the call never took effect:
    /// a commit whose outcome was unknown, a leader that died before its
    /// call), at most 3 times in all.
    #[serde(with = "humantime_serde")]
    pub resend_after: Duration,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        let p = Policy::default();
        Self {
            mode: Mode::Active,
            reenable_on_reset: p.reset.restore_nova_service,
            release_ha_node_on_reset: p.reset.release_ha_node,
            reset_grace: p.reset.grace,
            backoff_initial: p.backoff_initial,
            backoff_max: p.backoff_max,
            alert_after: p.alert_after,
            max_attempts: p.max_attempts,
            notify_attempts: p.notify_attempts,
            resend_after: p.resend_after,
        }
    }
}

impl RecoveryConfig {
    /// Copies the section into the decision policy.
    pub fn apply(&self, policy: &mut Policy) {
        policy.dry_run = self.mode == Mode::DryRun;
        policy.reset = ResetPolicy {
            restore_nova_service: self.reenable_on_reset,
            release_ha_node: self.release_ha_node_on_reset,
            grace: self.reset_grace,
        };
        policy.backoff_initial = self.backoff_initial;
        policy.backoff_max = self.backoff_max;
        policy.alert_after = self.alert_after.max(1);
        policy.max_attempts = self.max_attempts.max(1);
        policy.notify_attempts = self.notify_attempts.max(1);
        policy.resend_after = self.resend_after;
    }
}

impl Validate for RecoveryConfig {
    /// Checks the ranges.
    fn validate(&self) -> Vec<Problem> {
        let mut problems = Problems::default();
        if self.backoff_initial.is_zero() {
            problems.push("backoff_initial", "must be above zero");
        }
        if self.backoff_max < self.backoff_initial {
            problems.push(
                "backoff_max",
                format!(
                    "must be at least backoff_initial ({}), got {}",
                    humantime::format_duration(self.backoff_initial),
                    humantime::format_duration(self.backoff_max)
                ),
            );
        }
        if self.resend_after < Duration::from_secs(5) {
            problems.push(
                "resend_after",
                format!(
                    "must be at least 5s (Nova marks an accepted evacuation at once; a shorter wait risks re-sending one still on its way), got {}",
                    humantime::format_duration(self.resend_after)
                ),
            );
        }
        for (key, v) in [
            ("alert_after", self.alert_after),
            ("max_attempts", self.max_attempts),
            ("notify_attempts", self.notify_attempts),
        ] {
            if v == 0 {
                problems.push(key, "must be at least 1");
            }
        }
        problems.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_policy_defaults_and_modes_parse() {
        let c: RecoveryConfig = toml::from_str("").expect("empty section");
        assert_eq!(c, RecoveryConfig::default());
        let mut p = Policy::default();
        c.apply(&mut p);
        assert_eq!(p, Policy::default());
        let c: RecoveryConfig = toml::from_str(
            "mode = \"dry-run\"\nreenable_on_reset = false\nbackoff_initial = \"1s\"\n",
        )
        .expect("valid");
        assert_eq!(c.mode, Mode::DryRun);
        c.apply(&mut p);
        assert!(p.dry_run);
        assert!(!p.reset.restore_nova_service);
        assert!(p.reset.release_ha_node);
        assert_eq!(p.backoff_initial, Duration::from_secs(1));
        let e = toml::from_str::<RecoveryConfig>("mode = \"yolo\"").expect_err("bad mode");
        assert!(e.to_string().contains("yolo"), "{e}");
        let e = toml::from_str::<RecoveryConfig>("modes = \"active\"").expect_err("typo");
        assert!(e.to_string().contains("modes"), "{e}");
    }

    #[test]
    fn every_range_problem_is_reported() {
        let c = RecoveryConfig {
            backoff_initial: Duration::ZERO,
            backoff_max: Duration::ZERO,
            alert_after: 0,
            max_attempts: 0,
            notify_attempts: 0,
            ..RecoveryConfig::default()
        };
        let p = c.validate();
        assert_eq!(p.len(), 4, "{p:?}");
        let c = RecoveryConfig {
            backoff_initial: Duration::from_secs(10),
            backoff_max: Duration::from_secs(5),
            ..RecoveryConfig::default()
        };
        let p = c.validate();
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].to_string().contains("backoff_max"), "{p:?}");
    }

    #[test]
    fn reset_grace_parses_as_a_duration_into_the_reset_policy() {
        let c: RecoveryConfig = toml::from_str("reset_grace = \"2m\"\n").expect("valid");
        let mut p = Policy::default();
        c.apply(&mut p);
        assert_eq!(p.reset.grace, Duration::from_secs(120));
        assert_eq!(
            RecoveryConfig::default().reset_grace,
            novaha_core::recovery::DEFAULT_RESET_GRACE
        );
        let c: RecoveryConfig = toml::from_str("reset_grace = \"0s\"\n").expect("zero is allowed");
        assert!(c.reset_grace.is_zero());
        let e = toml::from_str::<RecoveryConfig>("reset_grace = \"soon\"").expect_err("bad");
        assert!(e.to_string().contains("reset_grace"), "{e}");
    }
}
