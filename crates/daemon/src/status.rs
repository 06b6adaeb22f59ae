//! `novaha status [--json]`: the leader (from the lock key), every compute
//! node and every HA node, read with one snapshot. A value that does not
//! parse is shown as invalid with its key, never hidden or guessed.

use std::process::ExitCode;

use anyhow::Context;
use novaha_consul::{ConsulStore, Election};
use novaha_core::kv::{ClusterState, Field, InvalidValue};
use novaha_core::store::StateStore;
use serde_json::{Value, json};

use crate::config::Config;
use crate::run::connect;

fn invalid(bad: &InvalidValue) -> Value {
    json!({ "invalid": { "key": bad.key, "raw": bad.raw, "reason": bad.reason } })
}

fn field<T: Copy + Into<Value>>(f: &Field<T>) -> Value {
    match &f.value {
        Ok(v) => (*v).into(),
        Err(bad) => invalid(bad),
    }
}

/// The status document (`--json` prints it as is).
pub fn document(
    state: &ClusterState,
    leader: Result<Option<Value>, InvalidValue>,
    prefix: &str,
) -> Value {
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
                Ok(None) => (Value::Null, Value::Null, Value::Null),
                Err(bad) => (invalid(bad), Value::Null, Value::Null),
            };
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
                    "maintenance": field(&n.maintenance),
                    "awaiting_up": field(&n.awaiting_up),
                    "phase": phase,
                    "ha_node": ha_node,
                    "last_error": last_error,
                    "instances": instances,
                    "invalid": n.invalid.iter().map(|b| json!({
                        "key": b.key, "raw": b.raw, "reason": b.reason
                    })).collect::<Vec<_>>(),
                }),
            )
        })
        .collect();
    let ha: serde_json::Map<String, Value> = state
        .ha_nodes
        .values()
        .map(|h| {
            (
                h.name.to_string(),
                json!({
                    "in_use": field(&h.in_use),
                    "serving": h.serving.as_ref().map(|s| s.as_str()),
                }),
            )
        })
        .collect();
    json!({
        "prefix": prefix,
        "leader": match leader {
            Ok(l) => l.unwrap_or(Value::Null),
            Err(bad) => invalid(&bad),
        },
        "compute_nodes": compute,
        "ha_nodes": ha,
    })
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
    let leader = &doc["leader"];
    match leader {
        Value::Null => out.push_str(&format!("leader: {}\n", paint("none", Tone::Bad, colour))),
        Value::Object(o) if o.contains_key("invalid") => {
            out.push_str(&format!(
                "leader: {}\n",
                paint(&show(leader), Tone::Bad, colour)
            ));
        }
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
            let fails = &n["number_fails"];
            let fails_tone = if fails.as_u64().is_some_and(|f| f > 0) {
                Tone::Warn
            } else {
                Tone::Plain
            };
            let phase = &n["phase"];
            let phase_tone = match phase.as_str() {
                Some("done") => Tone::Good,
                Some("stuck") => Tone::Bad,
                Some(_) => Tone::Warn,
                None => Tone::Plain,
            };
            let failed = flag(&n["failed"], Tone::Bad);
            let name_tone = if failed.1 == Tone::Bad {
                Tone::Bad
            } else {
                Tone::Plain
            };
            let mut notes = Vec::new();
            if n["awaiting_up"].as_bool() == Some(true) {
                notes.push((
                    "reset: waiting for Nova to report it up before counting failures".to_owned(),
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
                    flag(&n["recovered"], Tone::Warn),
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
            let in_use = &h["in_use"];
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
            Ok(l.map(|l| json!({"id": l.id, "host": l.host, "pid": l.pid, "version": l.version})))
        }
        Err(e) => Err(InvalidValue {
            key: schema.leader(),
            raw: state
                .leader
                .clone()
                .unwrap_or_default()
                .chars()
                .take(64)
                .collect(),
            reason: e.to_string(),
        }),
    };
    let mut doc = document(&state, leader, schema.prefix());
    // The leader's last fence-path health report (crate::fence_health),
    // once a leader has published one.
    let health = crate::fence_health::status_json(&schema, &snap);
    if !health.is_null() {
        doc["fence_health"] = health;
    }
    // The leader's last failures-tolerated figure (crate::capacity), from
    // its cycle report, once it has read one.
    let last_cycle = schema.internal(crate::leader::LAST_CYCLE);
    if let Some(t) = snap
        .raw(&last_cycle)
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
        print!("{}", crate::fence_health::status_text(&doc["fence_health"]));
        print!("{}", tolerated_text(&doc["failures_tolerated"], colour));
    }
    Ok(ExitCode::SUCCESS)
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
                "c2": {"failed": {"invalid": {"key": "p/compute_nodes/c2/status/failed",
                                              "raw": "garbage", "reason": "not a boolean"}},
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
}
