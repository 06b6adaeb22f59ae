//! `novaha incidents [NODE]` and `novaha incident show ID`: the history of
//! recoveries, read from the K/V tree with one snapshot
//! (`compute_nodes/<node>/incidents/<id>`, plus the live
//! `internal/recovery` of a recovery in progress). Read-only.
//!
//! `--json` documents carry `schema_version` ([`SCHEMA_VERSION`]); every
//! field keeps one JSON type (a missing value is `null`, never a different
//! type), see docs/cli.md.

use chrono::{DateTime, Utc};
use novaha_core::kv::{StoredIncident, format_time};
use novaha_core::record::{InstanceState, Phase, RecoveryRecord};
use serde_json::{Value, json};

/// The version of the `--json` documents of `incidents` and `incident
/// show`; bumped when a field changes meaning or type.
pub const SCHEMA_VERSION: u32 = 1;

fn phase_name(p: Phase) -> String {
    serde_json::to_value(p)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{p:?}"))
}

/// When the incident ended (done, stuck or reset), if it did.
fn ended(r: &RecoveryRecord) -> Option<DateTime<Utc>> {
    ["done", "reset", "stuck"]
        .iter()
        .filter_map(|k| r.timeline.get(*k))
        .max()
        .copied()
}

/// Instances by final state: (done, error, skipped, open).
fn counts(r: &RecoveryRecord) -> (usize, usize, usize, usize) {
    let mut c = (0, 0, 0, 0);
    for i in r.instances.values() {
        match i.state {
            InstanceState::Done => c.0 += 1,
            InstanceState::Error => c.1 += 1,
            InstanceState::Skipped => c.2 += 1,
            InstanceState::Pending | InstanceState::Requested => c.3 += 1,
        }
    }
    c
}

/// One row of the list as JSON (stable types: strings or null, integers).
pub fn summary(i: &StoredIncident) -> Value {
    match &i.record {
        Ok(r) => {
            let (done, error, skipped, open) = counts(r);
            json!({
                "id": i.id,
                "node": i.node.as_str(),
                "key": i.key,
                "live": i.live,
                "phase": phase_name(r.phase),
                "detected": r.timeline.get("detected").map(|t| format_time(*t)),
                "ended": ended(r).map(format_time),
                "ha_node": r.ha_node.as_ref().map(|h| h.as_str()),
                "instances": {"total": r.instances.len(), "done": done, "error": error,
                              "skipped": skipped, "open": open},
                "last_error": r.last_error,
                "invalid": Value::Null,
            })
        }
        Err(bad) => json!({
            "id": i.id,
            "node": i.node.as_str(),
            "key": i.key,
            "live": i.live,
            "phase": Value::Null,
            "detected": Value::Null,
            "ended": Value::Null,
            "ha_node": Value::Null,
            "instances": Value::Null,
            "last_error": Value::Null,
            "invalid": {"key": bad.key, "raw": bad.raw, "reason": bad.reason},
        }),
    }
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Columns as wide as their widest cell, two spaces apart.
fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[String]| {
        let last = cells.len().saturating_sub(1);
        out.push_str("  ");
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            out.push_str(c);
            if i < last {
                out.push_str(&" ".repeat(w.saturating_sub(c.chars().count()) + 2));
            }
        }
        out.push('\n');
    };
    line(&header.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>());
    for row in rows {
        line(row);
    }
    out
}

/// The list as a table for people.
pub fn list_text(rows: &[Value]) -> String {
    if rows.is_empty() {
        return "no incidents\n".to_owned();
    }
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let inst = &r["instances"];
            let instances = if inst.is_null() {
                "-".to_owned()
            } else {
                format!(
                    "{} ({} done, {} error, {} skipped{})",
                    inst["total"],
                    inst["done"],
                    inst["error"],
                    inst["skipped"],
                    match inst["open"].as_u64() {
                        Some(0) | None => String::new(),
                        Some(n) => format!(", {n} open"),
                    }
                )
            };
            let phase = if r["invalid"].is_null() {
                let p = cell(&r["phase"]);
                if r["live"].as_bool() == Some(true) && p != "done" {
                    format!("{p} (in progress)")
                } else {
                    p
                }
            } else {
                format!("INVALID({})", cell(&r["invalid"]["reason"]))
            };
            vec![
                cell(&r["id"]),
                cell(&r["node"]),
                phase,
                cell(&r["detected"]),
                cell(&r["ended"]),
                cell(&r["ha_node"]),
                instances,
            ]
        })
        .collect();
    render(
        &[
            "ID",
            "NODE",
            "PHASE",
            "DETECTED",
            "ENDED",
            "HA_NODE",
            "INSTANCES",
        ],
        &body,
    )
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
            let (done, error, skipped, _) = counts(r);
            format!("every instance ended: {done} done, {error} error, {skipped} skipped")
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

/// The full incident as JSON: the stored record under `record`, with the
/// timeline as a time-ordered list of events.
pub fn detail(i: &StoredIncident) -> Value {
    let mut doc = summary(i);
    doc["schema_version"] = json!(SCHEMA_VERSION);
    if let Ok(r) = &i.record {
        let mut events: Vec<(&String, &DateTime<Utc>)> = r.timeline.iter().collect();
        events.sort_by_key(|(name, at)| (**at, phase_rank(name)));
        doc["timeline"] = events
            .iter()
            .map(|(name, at)| json!({"at": format_time(**at), "event": name, "detail": event_detail(name, r)}))
            .collect();
        doc["instances_detail"] = r
            .instances
            .iter()
            .map(|(id, inst)| {
                json!({
                    "id": id,
                    "name": inst.name,
                    "prior_status": inst.prior_status,
                    "state": serde_json::to_value(inst.state).unwrap_or(Value::Null),
                    "target": inst.target,
                    "error": inst.error,
                    "requested_at": inst.requested_at.map(format_time),
                })
            })
            .collect();
        doc["record"] = serde_json::to_value(r).unwrap_or(Value::Null);
    } else {
        doc["timeline"] = json!([]);
        doc["instances_detail"] = json!([]);
        doc["record"] = Value::Null;
    }
    doc
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
pub fn detail_text(doc: &Value) -> String {
    let mut out = format!(
        "incident {} of {}: {}{}\n",
        cell(&doc["id"]),
        cell(&doc["node"]),
        cell(&doc["phase"]),
        if doc["live"].as_bool() == Some(true) {
            " (live record)"
        } else {
            ""
        }
    );
    if !doc["invalid"].is_null() {
        out.push_str(&format!(
            "INVALID record at {}: {}\n",
            cell(&doc["invalid"]["key"]),
            cell(&doc["invalid"]["reason"])
        ));
        return out;
    }
    if !doc["ha_node"].is_null() {
        out.push_str(&format!("ha node: {}\n", cell(&doc["ha_node"])));
    }
    if !doc["last_error"].is_null() {
        out.push_str(&format!("last error: {}\n", cell(&doc["last_error"])));
    }
    out.push_str("timeline:\n");
    let rows: Vec<Vec<String>> = doc["timeline"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| vec![cell(&e["at"]), cell(&e["event"]), cell(&e["detail"])])
        .collect();
    out.push_str(&render(&["TIME", "EVENT", "DETAIL"], &rows));
    let inst: Vec<Vec<String>> = doc["instances_detail"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| {
            vec![
                cell(&i["id"]),
                cell(&i["name"]),
                cell(&i["prior_status"]),
                cell(&i["state"]),
                cell(&i["target"]),
                cell(&i["error"]),
            ]
        })
        .collect();
    out.push_str(&format!("instances: {}\n", inst.len()));
    if !inst.is_empty() {
        out.push_str(&render(
            &["INSTANCE", "NAME", "PRIOR", "OUTCOME", "TARGET", "ERROR"],
            &inst,
        ));
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
        assert_eq!(doc["schema_version"], 1);
        let events: Vec<&str> = doc["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["event"].as_str().unwrap())
            .collect();
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
        let keys = |v: &Value| {
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
