//! `[evacuate]`: where instances go, how many move at once, and how long the
//! recovery waits for each.

use std::time::Duration;

use novaha_core::recovery::{Policy, TargetPolicy};
use novaha_core::storage::{LocalStorage, StoragePolicy};
use novaha_core::validate::{Problem, Validate};
use serde::{Deserialize, Serialize};

/// The largest accepted `concurrency`.
pub const MAX_CONCURRENCY: usize = 256;

fn default_concurrency() -> usize {
    8
}

fn default_opt_out_key() -> String {
    Policy::default().opt_out_key
}

fn default_timeout() -> Duration {
    Policy::default().evacuate_timeout
}

fn default_poll_interval() -> Duration {
    Policy::default().poll_interval
}

/// The `[evacuate]` section. `target` and `concurrency` are **fixed** keys
/// (tools and tests write them; docs/configuration.md, "`[evacuate]`"). Durations are humane strings
/// (`"10m"`, `"5s"`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvacuateSettings {
    /// `ha_node` | `scheduler` | `ha_node_then_scheduler`.
    #[serde(default)]
    pub target: TargetPolicy,
    /// The evacuation window per recovery (1..=256, default 8): at most
    /// this many instances sent and not landed yet; a slot freed by one
    /// that lands or fails is refilled by the next decision.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// An instance whose metadata holds this key (any value but an explicit
    /// false) is not evacuated (default `novaha_opt_out`).
    #[serde(default = "default_opt_out_key")]
    pub opt_out_metadata_key: String,
    /// Opt-in mode: when set, only instances whose metadata holds this key
    /// with a true value are evacuated.
    #[serde(default)]
    pub opt_in_metadata_key: Option<String>,
    /// An instance not landed this long after its evacuate call ends in
    /// error (default 10m).
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// The longest time between two progress reads of in-flight instances
    /// (default 5s); the first read after a call comes a tenth of it later.
    #[serde(default = "default_poll_interval", with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Every compute's ephemeral storage is shared (Ceph RBD ephemeral, NFS
    /// `instances_path`), unless its `config/shared_storage` says
    /// otherwise (default false).
    #[serde(default)]
    pub shared_storage: bool,
    /// What to do with an instance whose root disk is on the failed host's
    /// own storage: `skip` (default: record it skipped, tell its owner and
    /// the admins it needs a human) or `rebuild` (rebuild it from its
    /// image; the root disk's data is lost).
    #[serde(default)]
    pub local_storage: LocalStorage,
    /// Metadata key (true value) by which an owner accepts the rebuild of a
    /// local instance under `local_storage = "skip"` (default
    /// `novaha_rebuild_ok`).
    #[serde(default = "default_rebuild_ok_key")]
    pub rebuild_ok_metadata_key: String,
    /// Metadata key whose value `local` marks an instance's disk as local
    /// even on a shared node (default `novaha_storage`).
    #[serde(default = "default_storage_key")]
    pub storage_metadata_key: String,
    /// Metadata key whose integer value orders evacuations, higher first
    /// (default `novaha_priority`).
    #[serde(default = "default_priority_key")]
    pub priority_metadata_key: String,
    /// How often the leader reads Placement to compute
    /// `novaha_capacity_failures_tolerated` (default 1m; `"0s"` = never).
    #[serde(default = "default_capacity_interval", with = "humantime_serde")]
    pub capacity_interval: Duration,
}

fn default_rebuild_ok_key() -> String {
    StoragePolicy::default().rebuild_ok_key
}

fn default_storage_key() -> String {
    StoragePolicy::default().storage_key
}

fn default_priority_key() -> String {
    Policy::default().priority_key
}

/// The default of [`EvacuateSettings::capacity_interval`].
pub const DEFAULT_CAPACITY_INTERVAL: Duration = Duration::from_secs(60);

fn default_capacity_interval() -> Duration {
    DEFAULT_CAPACITY_INTERVAL
}

impl Default for EvacuateSettings {
    fn default() -> Self {
        Self {
            target: TargetPolicy::default(),
            concurrency: default_concurrency(),
            opt_out_metadata_key: default_opt_out_key(),
            opt_in_metadata_key: None,
            timeout: default_timeout(),
            poll_interval: default_poll_interval(),
            shared_storage: false,
            local_storage: LocalStorage::default(),
            rebuild_ok_metadata_key: default_rebuild_ok_key(),
            storage_metadata_key: default_storage_key(),
            priority_metadata_key: default_priority_key(),
            capacity_interval: default_capacity_interval(),
        }
    }
}

impl EvacuateSettings {
    /// Copies the section into the recovery decision's policy (target,
    /// concurrency, opt-out/opt-in keys, timeout, poll interval, storage
    /// and priority). The rest
    /// of the policy (e.g. `restore_power_state`, from
    /// [`crate::NovaEvacuator::lands_shutoff`]) is set by the caller.
    pub fn apply(&self, policy: &mut Policy) {
        policy.target = self.target;
        policy.concurrency = self.concurrency.max(1);
        policy.opt_out_key = self.opt_out_metadata_key.clone();
        policy.opt_in_key = self.opt_in_metadata_key.clone();
        policy.evacuate_timeout = self.timeout;
        policy.poll_interval = self.poll_interval;
        policy.storage = StoragePolicy {
            shared_storage: self.shared_storage,
            local: self.local_storage,
            rebuild_ok_key: self.rebuild_ok_metadata_key.clone(),
            storage_key: self.storage_metadata_key.clone(),
        };
        policy.priority_key = self.priority_metadata_key.clone();
    }
}

impl Validate for EvacuateSettings {
    /// Every range problem of the section, keys relative to it (the daemon
    /// puts them under `evacuate`).
    fn validate(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        if !(1..=MAX_CONCURRENCY).contains(&self.concurrency) {
            out.push(Problem::new(
                "concurrency",
                format!("must be 1..={MAX_CONCURRENCY}, got {}", self.concurrency),
            ));
        }
        if self.opt_out_metadata_key.trim().is_empty() {
            out.push(Problem::new("opt_out_metadata_key", "must not be empty"));
        }
        if self
            .opt_in_metadata_key
            .as_deref()
            .is_some_and(|k| k.trim().is_empty())
        {
            out.push(Problem::new(
                "opt_in_metadata_key",
                "must not be empty when set",
            ));
        }
        for (key, v) in [
            ("rebuild_ok_metadata_key", &self.rebuild_ok_metadata_key),
            ("storage_metadata_key", &self.storage_metadata_key),
            ("priority_metadata_key", &self.priority_metadata_key),
        ] {
            if v.trim().is_empty() {
                out.push(Problem::new(key, "must not be empty"));
            }
        }
        if self.poll_interval.is_zero() {
            out.push(Problem::new("poll_interval", "must be above zero"));
        }
        if self.timeout <= self.poll_interval {
            out.push(Problem::new(
                "timeout",
                format!(
                    "must be longer than poll_interval ({:?}), got {:?}",
                    self.poll_interval, self.timeout
                ),
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_ones_and_the_policy() {
        let s: EvacuateSettings = toml::from_str("").unwrap();
        assert_eq!(s, EvacuateSettings::default());
        assert_eq!(s.target, TargetPolicy::HaNode);
        assert_eq!(s.concurrency, 8);
        assert_eq!(s.opt_out_metadata_key, Policy::default().opt_out_key);
        assert_eq!(s.timeout, Duration::from_secs(600));
        assert_eq!(s.poll_interval, Duration::from_secs(5));
        assert!(s.validate().is_empty());
        let mut p = Policy::default();
        s.apply(&mut p);
        assert_eq!(
            p,
            Policy::default(),
            "the section's defaults are the policy's"
        );
        assert_eq!(s.capacity_interval, Duration::from_secs(60));
    }

    #[test]
    fn storage_and_priority_keys_parse_and_apply() {
        let s: EvacuateSettings = toml::from_str(
            "shared_storage = true
local_storage = \"rebuild\"
             rebuild_ok_metadata_key = \"ok\"
storage_metadata_key = \"disk\"
             priority_metadata_key = \"prio\"
capacity_interval = \"5m\"
",
        )
        .unwrap();
        let mut p = Policy::default();
        s.apply(&mut p);
        assert!(p.storage.shared_storage);
        assert_eq!(p.storage.local, LocalStorage::Rebuild);
        assert_eq!(p.storage.rebuild_ok_key, "ok");
        assert_eq!(p.storage.storage_key, "disk");
        assert_eq!(p.priority_key, "prio");
        assert_eq!(s.capacity_interval, Duration::from_secs(300));
        let e = toml::from_str::<EvacuateSettings>("local_storage = \"keep\"").unwrap_err();
        assert!(e.to_string().contains("keep"), "{e}");
        let bad = EvacuateSettings {
            priority_metadata_key: " ".into(),
            ..EvacuateSettings::default()
        };
        assert_eq!(
            bad.validate()[0].clone().under("evacuate").to_string(),
            "evacuate.priority_metadata_key: must not be empty"
        );
    }

    #[test]
    fn parses_every_key_and_applies_to_the_policy() {
        let s: EvacuateSettings = toml::from_str(
            "target = \"ha_node_then_scheduler\"\nconcurrency = 3\n\
             opt_out_metadata_key = \"ha:skip\"\nopt_in_metadata_key = \"ha:protect\"\n\
             timeout = \"2m\"\npoll_interval = \"2s\"\n",
        )
        .unwrap();
        assert_eq!(s.target, TargetPolicy::HaNodeThenScheduler);
        let mut p = Policy::default();
        s.apply(&mut p);
        assert_eq!(p.target, TargetPolicy::HaNodeThenScheduler);
        assert_eq!(p.concurrency, 3);
        assert_eq!(p.opt_out_key, "ha:skip");
        assert_eq!(p.opt_in_key.as_deref(), Some("ha:protect"));
        assert_eq!(p.evacuate_timeout, Duration::from_secs(120));
        assert_eq!(p.poll_interval, Duration::from_secs(2));
        let s: EvacuateSettings = toml::from_str("target = \"scheduler\"").unwrap();
        assert_eq!(s.target, TargetPolicy::Scheduler);
    }

    #[test]
    fn rejects_unknown_keys_bad_targets_and_reports_every_problem() {
        let e = toml::from_str::<EvacuateSettings>("concurency = 3").unwrap_err();
        assert!(e.to_string().contains("concurency"), "{e}");
        let e = toml::from_str::<EvacuateSettings>("target = \"anywhere\"").unwrap_err();
        assert!(e.to_string().contains("anywhere"), "{e}");
        let e = toml::from_str::<EvacuateSettings>("timeout = \"soon\"").unwrap_err();
        assert!(e.to_string().contains("timeout"), "{e}");
        let s = EvacuateSettings {
            concurrency: 0,
            opt_out_metadata_key: " ".into(),
            opt_in_metadata_key: Some(String::new()),
            timeout: Duration::from_secs(1),
            poll_interval: Duration::ZERO,
            ..EvacuateSettings::default()
        };
        let problems: Vec<String> = s.validate().iter().map(ToString::to_string).collect();
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems[0].starts_with("concurrency: "), "{problems:?}");
        let s = EvacuateSettings {
            concurrency: 257,
            timeout: Duration::from_secs(5),
            ..EvacuateSettings::default()
        };
        let problems: Vec<String> = s.validate().iter().map(ToString::to_string).collect();
        assert_eq!(problems.len(), 2, "{problems:?}");
    }
}
