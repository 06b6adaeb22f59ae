//! The recovery record (docs/recovery.md, "The steps and the recovery
//! record"): the JSON document at
//! `compute_nodes/<node>/internal/recovery`, rewritten after every step so
//! that any leader can resume a recovery where the last one stopped.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::capacity::Resources;
use crate::storage::StorageClass;
use crate::types::NodeName;

/// The record format version this build writes.
pub const RECORD_VERSION: u32 = 1;

/// Where a recovery stands. Phases only move forward; `Stuck` is entered
/// when a step cannot progress and an operator must act.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// `recovered=True` latched and (maybe) an HA node claimed.
    Claimed,
    /// The node's power was verified off.
    Fenced,
    /// Its nova-compute service is forced down and disabled.
    ForcedDown,
    /// Evacuate calls are being made and tracked.
    Evacuating,
    /// Every instance ended in done, error or skipped.
    Evacuated,
    /// Owners and admins were notified (or the outbox holds their messages).
    Notified,
    /// Finished; the record was copied to `incidents/<id>`.
    Done,
    /// Cannot progress without an operator.
    Stuck,
}

/// Where one instance stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceState {
    /// Listed on the failed host, not yet asked to move.
    #[default]
    Pending,
    /// The evacuate call was sent (it must never be sent again).
    Requested,
    /// Landed on another host in its prior state.
    Done,
    /// Nova reported an error or it did not land before the deadline.
    Error,
    /// Not evacuated on purpose (opt-out metadata, ...).
    Skipped,
}

impl InstanceState {
    /// True for the states an instance never leaves.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Done | Self::Error | Self::Skipped)
    }
}

/// The proof of fencing that a leader recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FenceRecord {
    /// The driver that fenced the node.
    pub driver: String,
    /// When the power state was read as off.
    pub verified_off_at: DateTime<Utc>,
}

/// One instance of the failed node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceRecord {
    /// Where the instance stands.
    pub state: InstanceState,
    /// Its Nova status when the recovery listed it (ACTIVE, SHUTOFF, ...).
    pub prior_status: String,
    /// The instance name, for people reading notifications.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The host it was sent to, or landed on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Why it ended in error or was skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The owning user id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The owning project id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// When the evacuate call was recorded as requested (the deadline to
    /// land runs from here). Added after format version 1 was fixed; absent
    /// in older records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_at: Option<DateTime<Utc>>,
    /// When a start was asked for an instance that landed SHUTOFF but was
    /// ACTIVE before (Nova microversion >= 2.95). Absent in older records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_requested_at: Option<DateTime<Utc>>,
    /// How many times the instance was recorded `requested` (an evacuate
    /// call that Nova shows never took effect is sent again, a bounded
    /// number of times). Absent in older records (= 0).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub sends: u32,
    /// How many times a start was asked for it. Absent in older records.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub starts: u32,
    /// Where its root disk lives, decided when listed (absent in older
    /// records: unknown). `local` and done means rebuilt from its image,
    /// root disk data lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageClass>,
    /// What its flavor takes in Placement, when Nova said (absent in older
    /// records: sent unchecked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// Its `novaha_priority` metadata: higher is evacuated first (absent =
    /// 0).
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub priority: i64,
    /// Sent to Nova's scheduler rather than the claimed HA node because it
    /// did not fit there (absent = false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub via_scheduler: bool,
}

fn is_zero_i64(n: &i64) -> bool {
    *n == 0
}

/// The recovery record itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryRecord {
    /// Record format version.
    pub version: u32,
    /// The incident id (unique per recovery).
    pub incident: String,
    /// The epoch of the leader that last wrote the record.
    pub epoch: String,
    /// Where the recovery stands.
    pub phase: Phase,
    /// The claimed HA node, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ha_node: Option<NodeName>,
    /// HA nodes this recovery claimed before and gave up because Nova
    /// stopped reporting them up (they stay `in_use` until the
    /// administrator's reset releases them with `ha_node`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub former_ha_nodes: Vec<NodeName>,
    /// The failed node's nova-compute service id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nova_service_id: Option<String>,
    /// When each phase was reached, by phase name (`detected`, `fenced`, ...).
    #[serde(default)]
    pub timeline: BTreeMap<String, DateTime<Utc>>,
    /// The fence proof once fenced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fence: Option<FenceRecord>,
    /// Every instance listed on the node at failure time, by server uuid.
    #[serde(default)]
    pub instances: BTreeMap<String, InstanceRecord>,
    /// The last error that held the recovery back (for `novaha status`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Consecutive failures of the current step (reset when a phase is
    /// reached); drives the backoff. Absent in older records (= 0).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempts: u32,
    /// The current step is not retried before this time (backoff after a
    /// failure). Absent in older records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<DateTime<Utc>>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl RecoveryRecord {
    /// A new record for an incident just claimed.
    pub fn new(incident: String, epoch: String, detected: DateTime<Utc>) -> Self {
        Self {
            version: RECORD_VERSION,
            incident,
            epoch,
            phase: Phase::Claimed,
            ha_node: None,
            former_ha_nodes: Vec::new(),
            nova_service_id: None,
            timeline: BTreeMap::from([("detected".to_owned(), detected)]),
            fence: None,
            instances: BTreeMap::new(),
            last_error: None,
            attempts: 0,
            retry_at: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips_with_design_field_names() {
        let now = DateTime::parse_from_rfc3339("2026-11-21T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut r = RecoveryRecord::new("inc-1".into(), "sess:7".into(), now);
        r.instances.insert(
            "uuid-1".into(),
            InstanceRecord {
                state: InstanceState::Requested,
                prior_status: "ACTIVE".into(),
                name: None,
                target: Some("ha-1".into()),
                error: None,
                owner: Some("u1".into()),
                project: Some("p1".into()),
                requested_at: Some(now),
                start_requested_at: None,
                sends: 0,
                starts: 0,
                storage: Some(StorageClass::Local),
                resources: Some(Resources {
                    vcpus: 1,
                    memory_mb: 512,
                    disk_gb: 1,
                }),
                priority: 3,
                via_scheduler: true,
            },
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["phase"], "claimed");
        assert_eq!(json["instances"]["uuid-1"]["state"], "requested");
        assert_eq!(json["timeline"]["detected"], "2026-11-21T10:00:00Z");
        assert_eq!(json["instances"]["uuid-1"]["storage"], "local");
        assert_eq!(json["instances"]["uuid-1"]["resources"]["memory_mb"], 512);
        let back: RecoveryRecord = serde_json::from_value(json).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn record_without_the_added_fields_still_parses() {
        let json = r#"{"version":1,"incident":"i","epoch":"e","phase":"evacuating",
            "instances":{"u":{"state":"pending","prior_status":"ACTIVE"}}}"#;
        let r: RecoveryRecord = serde_json::from_str(json).unwrap();
        assert_eq!(r.attempts, 0);
        assert_eq!(r.retry_at, None);
        assert_eq!(r.instances["u"].requested_at, None);
        let i = &r.instances["u"];
        assert_eq!((i.storage, i.resources, i.priority), (None, None, 0));
        assert!(!i.via_scheduler);
        // And a record without them is written back without them.
        let back = serde_json::to_value(&r).unwrap();
        let keys: Vec<&String> = back["instances"]["u"].as_object().unwrap().keys().collect();
        assert_eq!(keys, ["prior_status", "state"]);
    }
}
