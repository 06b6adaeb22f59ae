//! `novaha status [--json]`: what needs a human first (a blind leader, a
//! stuck recovery, an unhealthy BMC, invalid values), the pause,
//! then the leader (from the lock key), every compute node and every HA
//! node, read with one snapshot. A value that does not parse is shown as
//! invalid with its key, never hidden or guessed.
//!
//! The exit code says whether a human is needed: 0 nothing to do,
//! [`EXIT_ATTENTION`] when `attention` is not empty, 1 when the tree could
//! not be read. The `--json` document carries `schema_version`
//! ([`SCHEMA_VERSION`]) and every field keeps one JSON type: a value that
//! does not parse is `null` there and listed under the node's (or the
//! document's) `invalid`, never an object in its place (docs/cli.md).

use std::process::ExitCode;

use anyhow::Context;
use chrono::{DateTime, Utc};
use novaha_consul::{ConsulStore, Election};
use novaha_core::kv::{ClusterState, Field, InvalidValue, Snapshot, format_time};
use novaha_core::store::StateStore;
use serde_json::{Value, json};

use crate::config::Config;
use crate::run::connect;

/// The version of the `--json` document; bumped when a field changes
/// meaning or type.
pub const SCHEMA_VERSION: u32 = 2;

/// `novaha status` exit code when something needs a human.
pub const EXIT_ATTENTION: u8 = 4;

fn invalid_json(bad: &InvalidValue) -> Value {
    json!({ "key": bad.key, "raw": bad.raw, "reason": bad.reason })
}

/// A field's value, or `null` when it does not parse (the node's `invalid`
/// list says why).
fn field<T: Copy + Into<Value>>(f: &Field<T>) -> Value {
    match &f.value {
        Ok(v) => (*v).into(),
        Err(_) => Value::Null,
    }
}

/// What `status` reads besides the tree's nodes: the leader (from the lock)
/// and the leader's last cycle record and fence-path report.
#[derive(Debug, Default)]
pub struct Extras {
    /// The lock's holder, or why its value does not parse.
    pub leader: Option<Result<Value, InvalidValue>>,
    /// `novaha/last_cycle` as written by the leader.
    pub last_cycle: Option<Value>,
    /// `novaha/fence_health` (novaha_fence::health::status_json).
    pub fence_health: Value,
}

/// The status document (`--json` prints it as is), at `now`.
pub fn document(state: &ClusterState, extras: Extras, prefix: &str, now: DateTime<Utc>) -> Value {
    let mut invalid: Vec<Value> = Vec::new();
    let mut attention: Vec<Value> = Vec::new();
    let mut attend = |what: &str, detail: String| {
        attention.push(json!({"what": what, "detail": detail}));
    };
    let compute: serde_json::Map<String, Value> = state
        .compute_nodes
        .values()
        .map(|n| {
            let (phase, ha_node, last_error) = match &n.recovery.value {
                Ok(Some(r)) => (
                    serde_json::to_value(r.phase).unwrap_or(Value::Null),
                    r.ha_node
                        .as_ref()
                        .map_or(Value::Null, |h| json!(h.as_str())),
                    r.last_error.as_ref().map_or(Value::Null, |e| json!(e)),
                ),
                Ok(None) | Err(_) => (Value::Null, Value::Null, Value::Null),
            };
            if phase.as_str() == Some("stuck") {
                attend(
                    "stuck",
                    format!(
                        "the recovery of {} is stuck: {}",
                        n.name,
                        last_error.as_str().unwrap_or("see its last error")
                    ),
                );
            }
            if let Ok(Some(readings)) = &n.degraded.value {
                attend(
                    "degraded",
                    format!(
                        "{}'s signals disagree ({readings}): not counted as failing, so not recovered",
                        n.name
                    ),
                );
            }
            invalid.extend(n.invalid.iter().map(invalid_json));
            // Each instance of a recovery: where it stands, where its disk
            // lives (what evacuating it risks), where it went.
            let instances: serde_json::Map<String, Value> = match &n.recovery.value {
                Ok(Some(r)) => r
                    .instances
                    .iter()
                    .map(|(id, i)| {
                        (
                            id.clone(),
                            json!({
                                "name": i.name,
                                "state": i.state,
                                "storage": i.storage,
                                "target": i.target,
                                "via_scheduler": i.via_scheduler,
                                "error": i.error,
                            }),
                        )
                    })
                    .collect(),
                _ => serde_json::Map::new(),
            };
            (
                n.name.to_string(),
                json!({
                    "failed": field(&n.failed),
                    "recovered": field(&n.recovered),
                    "number_fails": field(&n.number_fails),
                    "maintenance": n.in_maintenance(now),
                    "maintenance_reason": n.maintenance_reason,
                    "maintenance_until": n.maintenance_until.value.clone().ok().flatten().map(format_time),
                    "awaiting_up": field(&n.awaiting_up),
                    "degraded": match &n.degraded.value {
                        Ok(Some(readings)) => json!(readings),
                        _ => Value::Null,
                    },
                    "phase": phase,
                    "ha_node": ha_node,
                    "last_error": last_error,
                    "instances": instances,
                    "invalid": n.invalid.iter().map(invalid_json).collect::<Vec<_>>(),
                }),
            )
        })
        .collect();
    let ha: serde_json::Map<String, Value> = state
        .ha_nodes
        .values()
        .map(|h| {
            let mut bad = Vec::new();
            if let Err(b) = &h.in_use.value {
                bad.push(invalid_json(b));
                invalid.push(invalid_json(b));
            }
            (
                h.name.to_string(),
                json!({
                    "in_use": field(&h.in_use),
                    "serving": h.serving.as_ref().map(|s| s.as_str()),
                    "invalid": bad,
                }),
            )
        })
        .collect();
    // No leader is shown (`leader: none`) and alerted on (NovahaNoLeader),
    // but not an exit code: a failover passes through it.
    let leader = match extras.leader {
        None => Value::Null,
        Some(Ok(l)) => l,
        Some(Err(bad)) => {
            invalid.push(invalid_json(&bad));
            Value::Null
        }
    };
    let pause = match &state.pause.value {
        Ok(None) => Value::Null,
        Ok(Some(p)) => json!({
            "by": p.by,
            "at": p.at.map(format_time),
            "reason": p.reason,
            "until": p.until.map(format_time),
            "active": p.holds_at(now),
        }),
        Err(bad) => {
            invalid.push(invalid_json(bad));
            json!({
                "by": null, "at": null, "until": null, "active": true,
                "reason": format!("unreadable pause value, treated as paused: {}", bad.reason),
            })
        }
    };
    // The leader's sight, from its last cycle record (only the current
    // holder's record counts).
    let sight = extras
        .last_cycle
        .as_ref()
        .filter(|c| leader.get("id").is_some() && c.get("id") == leader.get("id"))
        .map(|c| {
            json!({
                "blind": c["blind"].as_bool().unwrap_or(false),
                "reason": c["blind_reason"].as_str(),
                "last_judgement": c["last_judgement"].as_str(),
                "cycle_at": c["at"].as_str(),
            })
        })
        .unwrap_or(Value::Null);
    if sight["blind"].as_bool() == Some(true) {
        attend(
            "blind",
            format!(
                "the leader cannot judge any node ({}); last full judgement: {}",
                sight["reason"].as_str().unwrap_or("unknown reason"),
                sight["last_judgement"].as_str().unwrap_or("never")
            ),
        );
    }
    let health = extras.fence_health;
    if let Some(bad) = health.get("invalid") {
        invalid.push(bad.clone());
    }
    if let Some(nodes) = health.get("nodes").and_then(Value::as_object) {
        for (name, n) in nodes {
            if n["healthy"].as_bool() != Some(true) {
                attend(
                    "bmc",
                    format!(
                        "the fence path of {name} is unhealthy: {}",
                        n["error"].as_str().unwrap_or("power unreadable")
                    ),
                );
            }
        }
    }
    if !invalid.is_empty() {
        attend(
            "invalid",
            format!(
                "{} value(s) in the tree do not parse; their nodes are skipped until fixed",
                invalid.len()
            ),
        );
    }
    let mut doc = json!({
        "schema_version": SCHEMA_VERSION,
        "prefix": prefix,
        "attention": attention,
        "leader": leader,
        "sight": sight,
        "pause": pause,
        "compute_nodes": compute,
        "ha_nodes": ha,
        "invalid": invalid,
    });
    if !health.is_null() {
        doc["fence_health"] = health;
    }
    doc
}

/// The cell of a field: its value, or `INVALID(key=raw)` when it is `null`
/// and the node lists an invalid value for the field's key.
fn cell(node: &Value, name: &str, key_suffix: &str) -> Value {
    let v = &node[name];
    if !v.is_null() {
        return v.clone();
    }
    node["invalid"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|b| b["key"].as_str().is_some_and(|k| k.ends_with(key_suffix)))
        .map_or(Value::Null, |b| json!({"invalid": b}))
}

fn show(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::Bool(b) => novaha_core::kv::format_bool(*b).to_owned(),
        Value::String(s) => s.clone(),
        Value::Object(o) if o.contains_key("invalid") => {
            let key = o["invalid"]["key"].as_str().unwrap_or("?");
            let raw = o["invalid"]["raw"].as_str().unwrap_or("");
            format!("INVALID({key}={raw:?})")
        }
        other => other.to_string(),
    }
}

/// A terminal colour for one cell (SGR code), or none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tone {
    Plain,
    Good,
    Warn,
    Bad,
}

impl Tone {
    fn sgr(self) -> Option<&'static str> {
        match self {
            Tone::Plain => None,
            Tone::Good => Some("32"),
            Tone::Warn => Some("33"),
            Tone::Bad => Some("1;31"),
        }
    }
}

/// Whether `status` colours its table: only when stdout is a terminal and
/// `NO_COLOR` is unset or empty (<https://no-color.org>).
pub fn use_colour(stdout_is_tty: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stdout_is_tty && no_color.is_none_or(|v| v.is_empty())
}

/// `text` in `tone`, with the escape codes only when `colour` is on.
fn paint(text: &str, tone: Tone, colour: bool) -> String {
    match tone.sgr() {
        Some(code) if colour => format!("\x1b[{code}m{text}\x1b[0m"),
        _ => text.to_owned(),
    }
}

/// The tone of a value that is invalid, else `otherwise`.
fn tone_of(v: &Value, otherwise: Tone) -> Tone {
    if v.get("invalid").is_some() {
        Tone::Bad
    } else {
        otherwise
    }
}

/// A table whose columns are as wide as their widest cell (two spaces
/// between columns); widths count characters, never escape codes.
struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<(String, Tone)>>,
    /// Lines printed under a row (last error, invalid values).
    notes: Vec<Vec<(String, Tone)>>,
}

impl Table {
    fn new(header: Vec<&'static str>) -> Self {
        Self {
            header,
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    fn row(&mut self, cells: Vec<(String, Tone)>, notes: Vec<(String, Tone)>) {
        self.rows.push(cells);
        self.notes.push(notes);
    }

    fn render(&self, out: &mut String, colour: bool) {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, (cell, _)) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: Vec<(String, Tone)>, out: &mut String| {
            let last = cells.len().saturating_sub(1);
            out.push_str("  ");
            for (i, ((cell, tone), w)) in cells.into_iter().zip(&widths).enumerate() {
                out.push_str(&paint(&cell, tone, colour));
                if i < last {
                    let pad = w.saturating_sub(cell.chars().count()) + 2;
                    out.push_str(&" ".repeat(pad));
                }
            }
            out.push('\n');
        };
        let header = self
            .header
            .iter()
            .map(|h| ((*h).to_owned(), Tone::Plain))
            .collect();
        line(header, out);
        for (row, notes) in self.rows.iter().zip(&self.notes) {
            line(row.clone(), out);
            for (note, tone) in notes {
                out.push_str("    ");
                out.push_str(&paint(note, *tone, colour));
                out.push('\n');
            }
        }
    }
}

/// The failures-tolerated line: per zone, how many of the largest hosts
/// could fail at once with their instances placed (red at 0).
fn tolerated_text(t: &Value, colour: bool) -> String {
    let Some(zones) = t.as_object() else {
        return String::new();
    };
    let parts: Vec<String> = zones
        .iter()
        .map(|(z, n)| {
            let z = if z.is_empty() { "all" } else { z.as_str() };
            let tone = if n.as_u64() == Some(0) {
                Tone::Bad
            } else {
                Tone::Good
            };
            format!("{z}={}", paint(&show(n), tone, colour))
        })
        .collect();
    format!(
        "failures tolerated (largest hosts failing at once): {}\n",
        parts.join(", ")
    )
}

/// One instance of a recovery as a note line: name, state, storage class
/// and what happened (`local` and done = rebuilt, its disk lost).
fn instance_note(id: &str, i: &Value) -> (String, Tone) {
    let name = i["name"].as_str().unwrap_or(id);
    let state = i["state"].as_str().unwrap_or("?");
    let storage = i["storage"].as_str().unwrap_or("unknown");
    let mut line = format!("instance {name} ({id}): {state}, storage {storage}");
    let target = i["target"].as_str();
    let tone = match state {
        "done" => {
            if let Some(t) = target {
                line.push_str(&format!(" -> {t}"));
            }
            if storage == "local" {
                line.push_str(" (rebuilt from image: root disk data lost)");
                Tone::Warn
            } else {
                Tone::Good
            }
        }
        "error" | "skipped" => Tone::Bad,
        _ => {
            match target {
                Some(t) => line.push_str(&format!(" -> {t}")),
                None if i["via_scheduler"].as_bool() == Some(true) || state == "requested" => {
                    line.push_str(" -> scheduler")
                }
                None => {}
            }
            Tone::Warn
        }
    };
    if let Some(e) = i["error"].as_str() {
        line.push_str(&format!(": {e}"));
    }
    (line, tone)
}

/// Renders the document as text for people, without colour.
pub fn text(doc: &Value) -> String {
    table(doc, false)
}

/// Renders the document as aligned tables for people: the leader, then one
/// row per compute node and per HA node. With `colour`, failed, stuck and
/// invalid cells are red, recoveries in progress and taken HA nodes yellow,
/// finished recoveries green.
pub fn table(doc: &Value, colour: bool) -> String {
    let mut out = String::new();
    // What needs a human comes first, then the pause.
    for a in doc["attention"].as_array().into_iter().flatten() {
        let what = a["what"].as_str().unwrap_or("?");
        let label = match what {
            "blind" => "LEADER BLIND",
            "stuck" => "RECOVERY STUCK",
            "bmc" => "BMC UNHEALTHY",
            "invalid" => "INVALID VALUES",
            other => other,
        };
        out.push_str(&format!(
            "{}: {}\n",
            paint(label, Tone::Bad, colour),
            show(&a["detail"])
        ));
    }
    let pause = &doc["pause"];
    if pause.is_object() {
        let until = pause["until"].as_str().map_or_else(
            || "until `novaha resume`".to_owned(),
            |u| format!("until {u}"),
        );
        let by = pause["by"]
            .as_str()
            .map(|b| format!(" by {b}"))
            .unwrap_or_default();
        let at = pause["at"]
            .as_str()
            .map(|a| format!(" at {a}"))
            .unwrap_or_default();
        if pause["active"].as_bool() == Some(true) {
            out.push_str(&format!(
                "{}: {}{by}{at}, {until}: no fence, force-down or evacuation starts\n",
                paint("PAUSED", Tone::Warn, colour),
                show(&pause["reason"])
            ));
        } else {
            out.push_str(&format!(
                "pause expired ({until}): {}{by}{at}; `novaha resume` removes the key\n",
                show(&pause["reason"])
            ));
        }
    }
    let leader = &cell(doc, "leader", "/leader");
    match leader {
        Value::Null => out.push_str(&format!("leader: {}\n", paint("none", Tone::Bad, colour))),
        l => out.push_str(&format!(
            "leader: id={} host={} pid={} version={}\n",
            paint(&show(&l["id"]), Tone::Good, colour),
            show(&l["host"]),
            show(&l["pid"]),
            show(&l["version"])
        )),
    }
    let empty = serde_json::Map::new();
    let compute = doc["compute_nodes"].as_object().unwrap_or(&empty);
    out.push_str(&format!("compute nodes: {}\n", compute.len()));
    if !compute.is_empty() {
        let mut t = Table::new(vec![
            "NODE",
            "FAILED",
            "RECOVERED",
            "NUMBER_FAILS",
            "MAINTENANCE",
            "PHASE",
            "HA_NODE",
        ]);
        for (name, n) in compute {
            let flag = |v: &Value, on: Tone| {
                let tone = if v.as_bool() == Some(true) {
                    on
                } else {
                    Tone::Plain
                };
                (show(v), tone_of(v, tone))
            };
            let fails = &cell(n, "number_fails", "/internal/number_fails");
            let fails_tone = if fails.as_u64().is_some_and(|f| f > 0) {
                Tone::Warn
            } else {
                Tone::Plain
            };
            let phase = &cell(n, "phase", "/internal/recovery");
            let phase_tone = match phase.as_str() {
                Some("done") => Tone::Good,
                Some("stuck") => Tone::Bad,
                Some(_) => Tone::Warn,
                None => Tone::Plain,
            };
            let failed = flag(&cell(n, "failed", "/status/failed"), Tone::Bad);
            let name_tone = if failed.1 == Tone::Bad {
                Tone::Bad
            } else {
                Tone::Plain
            };
            let mut notes = Vec::new();
            if n["maintenance"].as_bool() == Some(true) {
                let until = n["maintenance_until"]
                    .as_str()
                    .map_or_else(|| "until switched off".to_owned(), |u| format!("until {u}"));
                notes.push((
                    format!(
                        "maintenance {until}: {}",
                        n["maintenance_reason"]
                            .as_str()
                            .unwrap_or("no reason given")
                    ),
                    Tone::Warn,
                ));
            }
            if n["awaiting_up"].as_bool() == Some(true) {
                notes.push((
                    "reset: waiting for Nova to report it up before counting failures".to_owned(),
                    Tone::Warn,
                ));
            }
            if let Some(readings) = n["degraded"].as_str() {
                notes.push((
                    format!("degraded: signals disagree ({readings}); not counted as failing"),
                    Tone::Warn,
                ));
            }
            if !n["last_error"].is_null() {
                notes.push((format!("last error: {}", show(&n["last_error"])), Tone::Bad));
            }
            for (id, i) in n["instances"].as_object().into_iter().flatten() {
                notes.push(instance_note(id, i));
            }
            for bad in n["invalid"].as_array().into_iter().flatten() {
                notes.push((
                    format!(
                        "invalid: {} = {} ({})",
                        show(&bad["key"]),
                        bad["raw"],
                        show(&bad["reason"])
                    ),
                    Tone::Bad,
                ));
            }
            t.row(
                vec![
                    (name.clone(), name_tone),
                    failed,
                    flag(&cell(n, "recovered", "/status/recovered"), Tone::Warn),
                    (show(fails), tone_of(fails, fails_tone)),
                    flag(&n["maintenance"], Tone::Warn),
                    (show(phase), tone_of(phase, phase_tone)),
                    (show(&n["ha_node"]), Tone::Plain),
                ],
                notes,
            );
        }
        t.render(&mut out, colour);
    }
    let ha = doc["ha_nodes"].as_object().unwrap_or(&empty);
    out.push_str(&format!("ha nodes: {}\n", ha.len()));
    if !ha.is_empty() {
        let mut t = Table::new(vec!["NODE", "IN_USE", "SERVING"]);
        for (name, h) in ha {
            let in_use = &cell(h, "in_use", "/status/in_use");
            let tone = if in_use.as_bool() == Some(true) {
                Tone::Warn
            } else {
                Tone::Good
            };
            t.row(
                vec![
                    (name.clone(), Tone::Plain),
                    (show(in_use), tone_of(in_use, tone)),
                    (show(&h["serving"]), Tone::Plain),
                ],
                Vec::new(),
            );
        }
        t.render(&mut out, colour);
    }
    out
}

/// `novaha status`.
pub async fn status(cfg: &Config, as_json: bool) -> anyhow::Result<ExitCode> {
    let (consul, schema) = connect(cfg)?;
    let store = ConsulStore::new(consul.clone(), schema.clone());
    let snap = store
        .snapshot()
        .await
        .with_context(|| format!("read the state tree {} from {}", schema, cfg.consul.address))?;
    let state = ClusterState::parse(&schema, &snap);
    let leader = match Election::current_leader(&consul, &schema).await {
        Ok(l) => {
            l.map(|l| Ok(json!({"id": l.id, "host": l.host, "pid": l.pid, "version": l.version})))
        }
        Err(e) => Some(Err(InvalidValue {
            key: schema.leader(),
            raw: state
                .leader
                .clone()
                .unwrap_or_default()
                .chars()
                .take(64)
                .collect(),
            reason: e.to_string(),
        })),
    };
    let extras = Extras {
        leader,
        last_cycle: last_cycle(&schema, &snap),
        // The leader's last fence-path health report (crate::fence_health),
        // once a leader has published one.
        fence_health: novaha_fence::health::status_json(&schema, &snap),
    };
    let mut doc = document(&state, extras, schema.prefix(), Utc::now());
    // The leader's last failures-tolerated figure (crate::capacity), from
    // its cycle report, once it has read one.
    let cycle_key = schema.internal(crate::leader::LAST_CYCLE);
    if let Some(t) = snap
        .raw(&cycle_key)
        .and_then(|raw| serde_json::from_slice::<Value>(raw).ok())
        .map(|v| v["failures_tolerated"].clone())
        .filter(|t| !t.is_null())
    {
        doc["failures_tolerated"] = t;
    }
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&doc).context("encode the status as JSON")?
        );
    } else {
        use std::io::IsTerminal;
        let colour = use_colour(
            std::io::stdout().is_terminal(),
            std::env::var_os("NO_COLOR").as_deref(),
        );
        print!("{}", table(&doc, colour));
        print!(
            "{}",
            novaha_fence::health::status_text(&doc["fence_health"])
        );
        print!("{}", tolerated_text(&doc["failures_tolerated"], colour));
    }
    Ok(exit_code(&doc))
}

/// 0 when nothing needs a human, [`EXIT_ATTENTION`] otherwise.
pub fn exit_code(doc: &Value) -> ExitCode {
    if doc["attention"].as_array().is_some_and(|a| !a.is_empty()) {
        ExitCode::from(EXIT_ATTENTION)
    } else {
        ExitCode::SUCCESS
    }
}

/// The leader's last cycle record, if it parses.
fn last_cycle(schema: &novaha_core::kv::Schema, snap: &Snapshot) -> Option<Value> {
    snap.raw(&schema.internal(crate::leader::LAST_CYCLE))
        .and_then(|r| serde_json::from_slice(r).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> Value {
        json!({
            "prefix": "p",
            "leader": {"id": "controller-1", "host": "h1", "pid": 42, "version": "0.1.0"},
            "compute_nodes": {
                "compute-1": {"failed": true, "recovered": true, "number_fails": 4,
                              "maintenance": false, "phase": "evacuating", "ha_node": "ha-1",
                              "last_error": null, "invalid": []},
                "c2": {"failed": null,
                       "recovered": false, "number_fails": 0, "maintenance": false,
                       "phase": null, "ha_node": null, "last_error": "fence timed out",
                       "invalid": [{"key": "p/compute_nodes/c2/status/failed",
                                    "raw": "garbage", "reason": "not a boolean"}]},
            },
            "ha_nodes": {"ha-1": {"in_use": true, "serving": "compute-1"}},
        })
    }

    #[test]
    fn each_instance_of_a_recovery_shows_its_storage_class_and_fate() {
        let mut d = doc();
        d["compute_nodes"]["compute-1"]["instances"] = json!({
            "u1": {"name": "db", "state": "done", "storage": "volume", "target": "ha-1",
                   "via_scheduler": false, "error": null},
            "u2": {"name": "cache", "state": "done", "storage": "local", "target": "ha-1",
                   "via_scheduler": false, "error": null},
            "u3": {"name": null, "state": "skipped", "storage": "local", "target": null,
                   "via_scheduler": false, "error": "root disk on local storage"},
            "u4": {"name": "web", "state": "requested", "storage": "shared", "target": null,
                   "via_scheduler": true, "error": null},
        });
        let out = table(&d, false);
        for needle in [
            "instance db (u1): done, storage volume -> ha-1\n",
            "instance cache (u2): done, storage local -> ha-1 (rebuilt from image: root disk data lost)",
            "instance u3 (u3): skipped, storage local: root disk on local storage",
            "instance web (u4): requested, storage shared -> scheduler",
        ] {
            assert!(out.contains(needle), "lacks {needle:?}:\n{out}");
        }
    }

    #[test]
    fn failures_tolerated_line_per_zone() {
        let t = json!({"az1": 2, "": 0});
        assert_eq!(
            tolerated_text(&t, false),
            "failures tolerated (largest hosts failing at once): all=0, az1=2\n"
        );
        assert!(tolerated_text(&t, true).contains("\x1b[1;31m0"));
        assert_eq!(tolerated_text(&Value::Null, false), "");
    }

    #[test]
    fn a_reset_node_awaiting_nova_says_so() {
        let mut d = doc();
        d["compute_nodes"]["compute-1"]["awaiting_up"] = json!(true);
        let out = table(&d, false);
        assert!(
            out.contains("reset: waiting for Nova to report it up before counting failures"),
            "{out}"
        );
        assert!(!table(&doc(), false).contains("waiting for Nova"));
    }

    #[test]
    fn a_degraded_node_says_which_signals_disagree() {
        let mut d = doc();
        d["compute_nodes"]["compute-1"]["degraded"] =
            json!("nova=stale consul=healthy tcp=healthy");
        let out = table(&d, false);
        assert!(
            out.contains(
                "    degraded: signals disagree (nova=stale consul=healthy tcp=healthy); not counted as failing"
            ),
            "{out}"
        );
        assert!(table(&d, true).contains("\x1b[33mdegraded: "));
        assert!(!table(&doc(), false).contains("degraded"));
    }

    #[test]
    fn the_document_carries_the_degraded_report() {
        use novaha_core::kv::{KvEntry, Schema, Snapshot};
        let schema = Schema::new("p");
        let entry = |v: &str| KvEntry {
            value: Some(v.as_bytes().to_vec()),
            modify_index: 3,
        };
        let snap = Snapshot {
            index: 9,
            entries: [
                (
                    "p/compute_nodes/c1/internal/degraded".to_owned(),
                    entry("nova=up consul=failed"),
                ),
                (
                    "p/compute_nodes/c2/status/failed".to_owned(),
                    entry("False"),
                ),
            ]
            .into_iter()
            .collect(),
        };
        let st = ClusterState::parse(&schema, &snap);
        let doc = document(&st, Extras::default(), "p", Utc::now());
        assert_eq!(
            doc["compute_nodes"]["c1"]["degraded"],
            "nova=up consul=failed"
        );
        assert_eq!(doc["compute_nodes"]["c2"]["degraded"], Value::Null);
        // A degraded node needs a human: it is an attention item (exit 4).
        let attention: Vec<&Value> = doc["attention"]
            .as_array()
            .expect("attention")
            .iter()
            .filter(|a| a["what"] == "degraded")
            .collect();
        assert_eq!(attention.len(), 1, "{doc:#}");
        assert!(
            attention[0]["detail"]
                .as_str()
                .unwrap()
                .starts_with("c1's signals disagree")
        );
    }

    #[test]
    fn columns_line_up_whatever_the_cell_widths() {
        let out = table(&doc(), false);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0],
            "leader: id=controller-1 host=h1 pid=42 version=0.1.0"
        );
        let header = lines.iter().position(|l| l.contains("NODE")).unwrap();
        let head = lines[header];
        let row = lines[header + 1];
        assert!(row.starts_with("  c2"), "{out}");
        // Every column starts at the same offset in the header and the rows.
        for col in ["FAILED", "RECOVERED", "NUMBER_FAILS", "PHASE", "HA_NODE"] {
            let at = head.find(col).unwrap();
            for r in [lines[header + 1], lines[header + 4]] {
                assert_ne!(&r[at..=at], " ", "{col} misaligned in {r:?}\n{out}");
                assert_eq!(&r[at - 1..at], " ", "{col} misaligned in {r:?}\n{out}");
            }
        }
        assert!(out.contains("INVALID(p/compute_nodes/c2/status/failed=\"garbage\")"));
        assert!(out.contains("    last error: fence timed out"), "{out}");
        assert!(out.contains("  compute-1  True"), "{out}");
        assert!(!out.contains('\x1b'), "{out}");
    }

    #[test]
    fn colour_marks_failed_invalid_and_busy_cells_only_when_asked() {
        let plain = table(&doc(), false);
        let coloured = table(&doc(), true);
        assert!(coloured.contains("\x1b[1;31mTrue\x1b[0m"), "{coloured}");
        assert!(coloured.contains("\x1b[33mevacuating\x1b[0m"), "{coloured}");
        assert!(coloured.contains("\x1b[1;31mINVALID("), "{coloured}");
        // Stripping the escapes gives the plain table back: padding is
        // computed on the visible text.
        let mut stripped = String::new();
        let mut chars = coloured.chars();
        while let Some(c) = chars.next() {
            if c == '\x1b' {
                for c in chars.by_ref() {
                    if c == 'm' {
                        break;
                    }
                }
            } else {
                stripped.push(c);
            }
        }
        assert_eq!(stripped, plain);
        let none = json!({"leader": null, "compute_nodes": {}, "ha_nodes": {}});
        assert_eq!(
            table(&none, false),
            "leader: none\ncompute nodes: 0\nha nodes: 0\n"
        );
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        use std::ffi::OsStr;
        assert!(use_colour(true, None));
        assert!(use_colour(true, Some(OsStr::new(""))));
        assert!(!use_colour(true, Some(OsStr::new("1"))));
        assert!(!use_colour(false, None));
    }
    fn parsed(pairs: &[(&str, &str)]) -> ClusterState {
        let snap = Snapshot {
            index: 1,
            entries: pairs
                .iter()
                .map(|(k, v)| {
                    (
                        format!("p/{k}"),
                        novaha_core::kv::KvEntry {
                            value: Some(v.as_bytes().to_vec()),
                            modify_index: 3,
                        },
                    )
                })
                .collect(),
        };
        ClusterState::parse(&novaha_core::kv::Schema::new("p"), &snap)
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-21T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn leader() -> Option<Result<Value, InvalidValue>> {
        Some(Ok(
            json!({"id": "a", "host": "h", "pid": 1, "version": "0"}),
        ))
    }

    fn whats(doc: &Value) -> Vec<&str> {
        doc["attention"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["what"].as_str().unwrap())
            .collect()
    }

    #[test]
    fn a_healthy_cluster_needs_nobody_and_exits_zero() {
        let st = parsed(&[
            ("compute_nodes/c1/status/failed", "False"),
            ("ha_nodes/h1/status/in_use", "False"),
        ]);
        let extras = Extras {
            leader: leader(),
            last_cycle: Some(
                json!({"id": "a", "at": "x", "last_judgement": "2026-11-21T09:59:59Z"}),
            ),
            fence_health: Value::Null,
        };
        let doc = document(&st, extras, "p", now());
        assert_eq!(doc["schema_version"], SCHEMA_VERSION);
        assert!(whats(&doc).is_empty(), "{doc}");
        assert_eq!(exit_code(&doc), ExitCode::SUCCESS);
        assert_eq!(doc["sight"]["blind"], false);
        assert_eq!(doc["pause"], Value::Null);
    }

    #[test]
    fn blind_stuck_bmc_and_invalid_need_a_human_an_old_record_does_not() {
        let stuck = r#"{"version":1,"incident":"i","epoch":"e","phase":"stuck","last_error":"fence: bmc said no"}"#;
        let st = parsed(&[
            ("compute_nodes/c1/internal/recovery", stuck),
            ("compute_nodes/c2/status/failed", "garbage"),
        ]);
        let extras = Extras {
            leader: leader(),
            last_cycle: Some(
                json!({"id": "a", "blind": true, "blind_reason": "keystone: HTTP 401"}),
            ),
            fence_health: json!({"nodes": {"c1": {"healthy": false, "error": "ipmi: timeout"}}}),
        };
        let doc = document(&st, extras, "p", now());
        assert_eq!(whats(&doc), ["stuck", "blind", "bmc", "invalid"], "{doc}");
        assert_eq!(exit_code(&doc), ExitCode::from(EXIT_ATTENTION));
        let text = table(&doc, false);
        let first: Vec<&str> = text.lines().take(4).collect();
        assert!(
            first[1]
                .starts_with("LEADER BLIND: the leader cannot judge any node (keystone: HTTP 401)"),
            "{text}"
        );
        assert!(
            first[0].starts_with("RECOVERY STUCK: the recovery of c1 is stuck: fence: bmc said no"),
            "{text}"
        );
        assert!(first[2].contains("ipmi: timeout"), "{text}");
        // Stable types: an invalid flag is null, listed with its key.
        assert_eq!(doc["compute_nodes"]["c2"]["failed"], Value::Null);
        assert_eq!(doc["invalid"][0]["key"], "p/compute_nodes/c2/status/failed");
        assert!(
            text.contains("INVALID(p/compute_nodes/c2/status/failed=\"garbage\")"),
            "{text}"
        );
        let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        assert_eq!(
            keys(&doc["compute_nodes"]["c1"]),
            keys(&doc["compute_nodes"]["c2"])
        );
        // Another daemon's old record says nothing about this leader.
        let extras = Extras {
            leader: None,
            last_cycle: Some(json!({"id": "b", "blind": true})),
            fence_health: Value::Null,
        };
        let doc = document(&parsed(&[]), extras, "p", now());
        assert!(whats(&doc).is_empty(), "{doc}");
        assert_eq!(doc["sight"], Value::Null);
        assert!(
            table(&doc, false).starts_with("leader: none"),
            "{}",
            table(&doc, false)
        );
    }

    #[test]
    fn the_pause_and_a_maintenance_are_shown_first_and_expire() {
        let pause = r#"{"by":"alice","at":"2026-11-21T09:00:00Z","reason":"core switch upgrade","until":"2026-11-21T11:00:00Z"}"#;
        let st = parsed(&[
            ("config/paused", pause),
            ("compute_nodes/c1/config/maintenance", "True"),
            ("compute_nodes/c1/config/maintenance_reason", "DIMM swap"),
            (
                "compute_nodes/c1/config/maintenance_until",
                "2026-11-21T12:00:00Z",
            ),
        ]);
        let doc = document(
            &st,
            Extras {
                leader: leader(),
                ..Extras::default()
            },
            "p",
            now(),
        );
        assert!(
            whats(&doc).is_empty(),
            "a pause is a choice, not a problem: {doc}"
        );
        assert_eq!(doc["pause"]["active"], true);
        let text = table(&doc, false);
        assert!(text.starts_with("PAUSED: core switch upgrade by alice at 2026-11-21T09:00:00Z, until 2026-11-21T11:00:00Z"), "{text}");
        assert!(
            text.contains("maintenance until 2026-11-21T12:00:00Z: DIMM swap"),
            "{text}"
        );
        assert_eq!(doc["compute_nodes"]["c1"]["maintenance"], true);
        let later = DateTime::parse_from_rfc3339("2026-11-21T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let doc = document(
            &st,
            Extras {
                leader: leader(),
                ..Extras::default()
            },
            "p",
            later,
        );
        assert_eq!(doc["pause"]["active"], false);
        assert_eq!(doc["compute_nodes"]["c1"]["maintenance"], false);
        assert!(table(&doc, false).starts_with("pause expired (until 2026-11-21T11:00:00Z)"));
        // An unreadable pause is paused, and invalid.
        let st = parsed(&[("config/paused", "yes")]);
        let doc = document(
            &st,
            Extras {
                leader: leader(),
                ..Extras::default()
            },
            "p",
            now(),
        );
        assert_eq!(doc["pause"]["active"], true);
        assert_eq!(whats(&doc), ["invalid"]);
    }
}
