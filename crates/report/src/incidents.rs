//! `novaha incidents [NODE]` and `novaha incident show ID`: the history of
//! recoveries, read from the K/V tree with one snapshot
//! (`compute_nodes/<node>/incidents/<id>`, plus the live
//! `internal/recovery` of a recovery in progress). Read-only.
//!
//! `--json` documents carry `schema_version` ([`SCHEMA_VERSION`]); every
//! field keeps one JSON type (a missing value is `null`, never a different
//! type), see docs/cli.md.
//!
//! The commands print these documents through [`crate::json_text`], which
//! puts every object's keys in alphabetical order, the order they have
//! always been printed in; so [`IncidentDetail`] flattens the summary
//! instead of repeating its fields.

use chrono::{DateTime, Utc};
use novaha_core::kv::{InvalidValue, StoredIncident, format_time};
use novaha_core::record::{InstanceState, Phase, RecoveryRecord};
use serde::Serialize;
use serde_json::Value;

use crate::table::{Table, name_of, or_dash};

/// The version of the `--json` documents of `incidents` and `incident
/// show`; bumped when a field changes meaning or type.
pub const SCHEMA_VERSION: u32 = 1;

/// The `novaha incidents --json` document: every incident listed, newest
/// detection first.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct IncidentList {
    /// One [`IncidentSummary`] per incident.
    pub incidents: Vec<IncidentSummary>,
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
}

impl IncidentList {
    /// The list document of these rows.
    pub fn new(incidents: Vec<IncidentSummary>) -> Self {
        Self {
            incidents,
            schema_version: SCHEMA_VERSION,
        }
    }
}

/// One incident in the list. Every field but `id`, `key`, `live`, `node`
/// and `invalid` is `null` when the record does not parse (`invalid` then
/// says why); `invalid` is `null` when it does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct IncidentSummary {
    /// When the failure was detected (RFC 3339).
    pub detected: Option<String>,
    /// When the incident ended (done, stuck or reset), if it did.
    pub ended: Option<String>,
    /// The HA node the recovery claimed.
    pub ha_node: Option<String>,
    /// The incident id.
    pub id: String,
    /// Its instances counted by final state.
    pub instances: Option<InstanceCounts>,
    /// Why the record could not be read.
    pub invalid: Option<InvalidValue>,
    /// The key it was read from.
    pub key: String,
    /// The recovery's last error.
    pub last_error: Option<String>,
    /// A live record (`internal/recovery`), not an archived one.
    pub live: bool,
    /// The failed node.
    pub node: String,
    /// Where the recovery stands.
    pub phase: Option<Phase>,
}

/// A recovery's instances by final state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct InstanceCounts {
    /// Evacuated.
    pub done: usize,
    /// Ended in error.
    pub error: usize,
    /// Not ended yet (pending or requested).
    pub open: usize,
    /// Skipped (not evacuated on purpose).
    pub skipped: usize,
    /// All of them.
    pub total: usize,
}

/// The `novaha incident show --json` document: the [`IncidentSummary`]
/// fields, the timeline as time-ordered events, every instance, and the
/// stored record as is.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct IncidentDetail {
    /// What the list shows of it.
    #[serde(flatten)]
    pub summary: IncidentSummary,
    /// Every instance, by server uuid; empty when the record does not parse.
    pub instances_detail: Vec<InstanceDetail>,
    /// The stored record as a JSON value (its keys sorted, as this
    /// document always printed them); `null` when it does not parse.
    pub record: Value,
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The timeline, oldest first; empty when the record does not parse.
    pub timeline: Vec<Event>,
}

/// One entry of an incident's timeline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Event {
    /// When (RFC 3339).
    pub at: String,
    /// What it means, for people.
    pub detail: String,
    /// The timeline key (`detected`, `fenced`, ...).
    pub event: String,
}

/// One instance of an incident.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InstanceDetail {
    /// Why it ended in error or was skipped.
    pub error: Option<String>,
    /// The server uuid.
    pub id: String,
    /// The instance name.
    pub name: Option<String>,
    /// Its Nova status when the recovery listed it.
    pub prior_status: String,
    /// When the evacuate call was recorded as requested (RFC 3339).
    pub requested_at: Option<String>,
    /// Where it stands.
    pub state: InstanceState,
    /// The host it was sent to, or landed on.
    pub target: Option<String>,
}

/// When the incident ended (done, stuck or reset), if it did.
fn ended(r: &RecoveryRecord) -> Option<DateTime<Utc>> {
    ["done", "reset", "stuck"]
        .iter()
        .filter_map(|k| r.timeline.get(*k))
        .max()
        .copied()
}

/// Instances by final state.
fn counts(r: &RecoveryRecord) -> InstanceCounts {
    let mut c = InstanceCounts {
        total: r.instances.len(),
        ..InstanceCounts::default()
    };
    for i in r.instances.values() {
        match i.state {
            InstanceState::Done => c.done += 1,
            InstanceState::Error => c.error += 1,
            InstanceState::Skipped => c.skipped += 1,
            InstanceState::Pending | InstanceState::Requested => c.open += 1,
        }
    }
    c
}

/// One row of the list (stable types: strings or null, integers).
pub fn summary(i: &StoredIncident) -> IncidentSummary {
    let (id, key, live, node) = (
        i.id.clone(),
        i.key.clone(),
        i.live,
        i.node.as_str().to_owned(),
    );
    match &i.record {
        Ok(r) => IncidentSummary {
            detected: r.timeline.get("detected").map(|t| format_time(*t)),
            ended: ended(r).map(format_time),
            ha_node: r.ha_node.as_ref().map(|h| h.as_str().to_owned()),
            id,
            instances: Some(counts(r)),
            invalid: None,
            key,
            last_error: r.last_error.clone(),
            live,
            node,
            phase: Some(r.phase),
        },
        Err(bad) => IncidentSummary {
            detected: None,
            ended: None,
            ha_node: None,
            id,
            instances: None,
            invalid: Some(bad.clone()),
            key,
            last_error: None,
            live,
            node,
            phase: None,
        },
    }
}

/// The list as a table for people.
pub fn list_text(rows: &[IncidentSummary]) -> String {
    if rows.is_empty() {
        return "no incidents\n".to_owned();
    }
    let mut t = Table::new(vec![
        "ID",
        "NODE",
        "PHASE",
        "DETECTED",
        "ENDED",
        "HA_NODE",
        "INSTANCES",
    ]);
    for r in rows {
        let instances = r.instances.map_or_else(
            || "-".to_owned(),
            |c| {
                let open = if c.open == 0 {
                    String::new()
                } else {
                    format!(", {} open", c.open)
                };
                format!(
                    "{} ({} done, {} error, {} skipped{open})",
                    c.total, c.done, c.error, c.skipped
                )
            },
        );
        let phase = match (&r.invalid, r.phase) {
            (Some(bad), _) => format!("INVALID({})", bad.reason),
            (None, Some(p)) if r.live && p != Phase::Done => {
                format!("{} (in progress)", name_of(p))
            }
            (None, p) => p.map_or_else(|| "-".to_owned(), name_of),
        };
        t.plain_row(vec![
            r.id.clone(),
            r.node.clone(),
            phase,
            or_dash(r.detected.as_deref()),
            or_dash(r.ended.as_deref()),
            or_dash(r.ha_node.as_deref()),
            instances,
        ]);
    }
    let mut out = String::new();
    t.render(&mut out, false);
    out
}

/// What each timeline entry means, for the `incident show` table.
fn event_detail(name: &str, r: &RecoveryRecord) -> String {
    match name {
        "detected" => "judged failed".to_owned(),
        "claimed" => match &r.ha_node {
            Some(h) => format!("recovery started; HA node {h} claimed"),
            None => "recovery started; target: the scheduler".to_owned(),
        },
        "fenced" => match &r.fence {
            Some(f) => format!(
                "power verified off by {} at {}",
                f.driver,
                format_time(f.verified_off_at)
            ),
            None => "power verified off".to_owned(),
        },
        "forced_down" => match &r.nova_service_id {
            Some(id) => format!("nova-compute service {id} forced down and disabled"),
            None => "nova-compute service forced down and disabled".to_owned(),
        },
        "evacuating" => format!("evacuating {} instance(s)", r.instances.len()),
        "evacuated" => {
            let c = counts(r);
            format!(
                "every instance ended: {} done, {} error, {} skipped",
                c.done, c.error, c.skipped
            )
        }
        "notified" => "owners and admins notified (queued in the outbox)".to_owned(),
        "done" => "recovery finished".to_owned(),
        "stuck" => match &r.last_error {
            Some(e) => format!("stuck, needs an operator: {e}"),
            None => "stuck, needs an operator".to_owned(),
        },
        "reset" => "reset by an administrator".to_owned(),
        "resumed" => "resumed by a new leader".to_owned(),
        other => other.replace('_', " "),
    }
}

/// The full incident: the list row's fields, the timeline as a
/// time-ordered list of events, every instance, and the stored record
/// under `record`.
pub fn detail(i: &StoredIncident) -> IncidentDetail {
    let (mut timeline, mut instances_detail, mut record) = (Vec::new(), Vec::new(), Value::Null);
    if let Ok(r) = &i.record {
        let mut events: Vec<(&String, &DateTime<Utc>)> = r.timeline.iter().collect();
        events.sort_by_key(|(name, at)| (**at, phase_rank(name)));
        timeline = events
            .iter()
            .map(|(name, at)| Event {
                at: format_time(**at),
                detail: event_detail(name, r),
                event: (*name).clone(),
            })
            .collect();
        instances_detail = r
            .instances
            .iter()
            .map(|(id, inst)| InstanceDetail {
                error: inst.error.clone(),
                id: id.clone(),
                name: inst.name.clone(),
                prior_status: inst.prior_status.clone(),
                requested_at: inst.requested_at.map(format_time),
                state: inst.state,
                target: inst.target.clone(),
            })
            .collect();
        record = serde_json::to_value(r).unwrap_or(Value::Null);
    }
    IncidentDetail {
        summary: summary(i),
        instances_detail,
        record,
        schema_version: SCHEMA_VERSION,
        timeline,
    }
}

/// Orders events that share a second the way a recovery goes.
fn phase_rank(name: &str) -> usize {
    [
        "detected",
        "claimed",
        "fenced",
        "forced_down",
        "evacuating",
        "evacuated",
        "notified",
        "done",
    ]
    .iter()
    .position(|p| *p == name)
    .unwrap_or(usize::MAX)
}

/// The incident as tables for people: a header, the timeline, then one
/// row per instance with its outcome and target.
pub fn detail_text(doc: &IncidentDetail) -> String {
    let mut out = format!(
        "incident {} of {}: {}{}\n",
        doc.summary.id,
        doc.summary.node,
        doc.summary.phase.map_or_else(|| "-".to_owned(), name_of),
        if doc.summary.live {
            " (live record)"
        } else {
            ""
        }
    );
    if let Some(bad) = &doc.summary.invalid {
        out.push_str(&format!("INVALID record at {}: {}\n", bad.key, bad.reason));
        return out;
    }
    if let Some(h) = &doc.summary.ha_node {
        out.push_str(&format!("ha node: {h}\n"));
    }
    if let Some(e) = &doc.summary.last_error {
        out.push_str(&format!("last error: {e}\n"));
    }
    out.push_str("timeline:\n");
    let mut t = Table::new(vec!["TIME", "EVENT", "DETAIL"]);
    for e in &doc.timeline {
        t.plain_row(vec![e.at.clone(), e.event.clone(), e.detail.clone()]);
    }
    t.render(&mut out, false);
    out.push_str(&format!("instances: {}\n", doc.instances_detail.len()));
    if !doc.instances_detail.is_empty() {
        let mut t = Table::new(vec![
            "INSTANCE", "NAME", "PRIOR", "OUTCOME", "TARGET", "ERROR",
        ]);
        for i in &doc.instances_detail {
            t.plain_row(vec![
                i.id.clone(),
                or_dash(i.name.as_deref()),
                i.prior_status.clone(),
                name_of(i.state),
                or_dash(i.target.as_deref()),
                or_dash(i.error.as_deref()),
            ]);
        }
        t.render(&mut out, false);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use novaha_core::kv::incidents;
    use novaha_core::kv::{KvEntry, Schema, Snapshot};

    fn snap(pairs: &[(&str, &str)]) -> Snapshot {
        Snapshot {
            index: 1,
            entries: pairs
                .iter()
                .map(|(k, v)| {
                    (
                        (*k).to_owned(),
                        KvEntry {
                            value: Some(v.as_bytes().to_vec()),
                            modify_index: 4,
                        },
                    )
                })
                .collect(),
        }
    }

    const DONE: &str = r#"{"version":1,"incident":"c1-20261121T030000Z","epoch":"s:1","phase":"done",
        "ha_node":"ha-1","nova_service_id":"svc-7",
        "timeline":{"detected":"2026-11-21T03:00:00Z","claimed":"2026-11-21T03:00:00Z",
                    "fenced":"2026-11-21T03:00:04Z","forced_down":"2026-11-21T03:00:05Z",
                    "evacuating":"2026-11-21T03:00:05Z","evacuated":"2026-11-21T03:00:40Z",
                    "notified":"2026-11-21T03:00:41Z","done":"2026-11-21T03:00:41Z"},
        "fence":{"driver":"ipmi","verified_off_at":"2026-11-21T03:00:04Z"},
        "instances":{"u1":{"state":"done","prior_status":"ACTIVE","name":"web","target":"ha-1"},
                     "u2":{"state":"error","prior_status":"SHUTOFF","error":"nova: 500"},
                     "u3":{"state":"skipped","prior_status":"ACTIVE","error":"opted out"}}}"#;

    #[test]
    fn the_timeline_table_reads_in_order_with_every_instance_outcome() {
        let s = Schema::new("p");
        let all = incidents(
            &s,
            &snap(&[("p/compute_nodes/c1/incidents/c1-20261121T030000Z", DONE)]),
        );
        let doc = detail(&all[0]);
        assert_eq!(doc.schema_version, 1);
        let events: Vec<&str> = doc.timeline.iter().map(|e| e.event.as_str()).collect();
        assert_eq!(
            events,
            [
                "detected",
                "claimed",
                "fenced",
                "forced_down",
                "evacuating",
                "evacuated",
                "notified",
                "done"
            ]
        );
        let text = detail_text(&doc);
        assert!(
            text.starts_with("incident c1-20261121T030000Z of c1: done\n"),
            "{text}"
        );
        assert!(
            text.contains("power verified off by ipmi at 2026-11-21T03:00:04Z"),
            "{text}"
        );
        assert!(text.contains("service svc-7 forced down"), "{text}");
        assert!(text.contains("1 done, 1 error, 1 skipped"), "{text}");
        let row = text.lines().find(|l| l.contains("u2")).unwrap();
        assert!(
            row.contains("SHUTOFF") && row.contains("error") && row.contains("nova: 500"),
            "{row}"
        );
        let row = text.lines().find(|l| l.contains("u1")).unwrap();
        assert!(row.contains("web") && row.contains("ha-1"), "{row}");
        // The list row summarises the same.
        let list = list_text(&[summary(&all[0])]);
        assert!(list.contains("3 (1 done, 1 error, 1 skipped)"), "{list}");
        assert!(list.contains("2026-11-21T03:00:41Z"), "{list}");
    }

    #[test]
    fn an_unreadable_record_is_listed_as_invalid_with_the_same_json_shape() {
        let s = Schema::new("p");
        let all = incidents(
            &s,
            &snap(&[
                ("p/compute_nodes/c1/incidents/c1-20261121T030000Z", DONE),
                ("p/compute_nodes/c2/incidents/x", "garbage"),
            ]),
        );
        let (good, bad) = (summary(&all[0]), summary(&all[1]));
        let keys = |v: &IncidentSummary| {
            let v = serde_json::to_value(v).unwrap();
            v.as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect::<Vec<String>>()
        };
        assert_eq!(keys(&good), keys(&bad));
        assert!(list_text(std::slice::from_ref(&bad)).contains("INVALID(bad recovery record"));
        assert!(
            detail_text(&detail(&all[1]))
                .contains("INVALID record at p/compute_nodes/c2/incidents/x")
        );
    }
}
