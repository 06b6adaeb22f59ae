//! `novaha status [--json]`: what needs a human first (a blind leader, a
//! stuck recovery, an unhealthy BMC, invalid values), the pause,
//! then the leader (from the lock key), every compute node and every HA
//! node, read with one snapshot. A value that does not parse is shown as
//! invalid with its key, never hidden or guessed.
//!
//! The exit code says whether a human is needed: 0 nothing to do,
//! [`EXIT_ATTENTION`] when `attention` is not empty, 1 when the tree could
//! not be read. The `--json` document ([`StatusDoc`]) carries
//! `schema_version` ([`SCHEMA_VERSION`]) and every field keeps one JSON
//! type: a value that does not parse is `null` there and listed under the
//! node's (or the document's) `invalid`, never an object in its place
//! (docs/cli.md).
//!
//! The command prints the document through [`crate::json_text`], which puts
//! every object's keys in alphabetical order, the order it has always been
//! printed in (the structs declare their fields in that order too).

use std::collections::BTreeMap;
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use novaha_core::kv::{ClusterState, Field, InvalidValue, format_bool, format_time};
use novaha_core::record::{InstanceState, Phase};
use novaha_core::storage::StorageClass;
use serde::Serialize;
use serde_json::Value;

use crate::table::{Table, Tone, name_of, paint};

/// The version of the `--json` document; bumped when a field changes
/// meaning or type.
pub const SCHEMA_VERSION: u32 = 2;

/// `novaha status` exit code when something needs a human.
pub const EXIT_ATTENTION: u8 = 4;

/// The `novaha status --json` document: what needs a human, the leader and
/// its sight, the pause, every node, and every value that does not parse.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StatusDoc {
    /// What needs a human, most urgent kinds first; empty = exit 0.
    pub attention: Vec<Attention>,
    /// Every compute node in the tree, by name.
    pub compute_nodes: BTreeMap<String, ComputeNodeDoc>,
    /// The leader's last failures-tolerated figure per zone, from its cycle
    /// record (`{zone: count}`), added by the daemon (which reads it with
    /// the capacity module's types); `null` (left out of the document)
    /// until the leader wrote one.
    #[serde(skip_serializing_if = "Value::is_null")]
    pub failures_tolerated: Value,
    /// The leader's last fence-path health report as the fence crate
    /// publishes it (or `{"invalid": {..}}`); `null` (left out of the
    /// document) until one is published.
    #[serde(skip_serializing_if = "Value::is_null")]
    pub fence_health: Value,
    /// Every HA (spare) node in the tree, by name.
    pub ha_nodes: BTreeMap<String, HaNodeDoc>,
    /// Every value that does not parse: the nodes', the leader's, the
    /// pause's and the fence health report's.
    pub invalid: Vec<InvalidValue>,
    /// The lock's holder; `null` when none (or its value does not parse:
    /// then it is listed under `invalid`).
    pub leader: Option<Leader>,
    /// The cluster-wide pause, when the key is present.
    pub pause: Option<PauseDoc>,
    /// The tree's K/V prefix.
    pub prefix: String,
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The leader's sight from its last cycle record; `null` when the
    /// record is missing or another daemon's.
    pub sight: Option<Sight>,
}

/// One thing that needs a human, as a kind and a sentence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Attention {
    /// The sentence an operator reads.
    pub detail: String,
    /// Its kind.
    pub what: AttentionKind,
}

/// The kinds of [`Attention`] (`what` in the document).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AttentionKind {
    /// A recovery cannot progress without an operator.
    Stuck,
    /// A node's detection signals disagree: not counted as failing.
    Degraded,
    /// The leader cannot judge any node.
    Blind,
    /// A node's fence path (BMC) is unhealthy.
    Bmc,
    /// Values in the tree do not parse.
    Invalid,
}

impl AttentionKind {
    /// The label the table prints before the sentence.
    fn label(self) -> &'static str {
        match self {
            Self::Blind => "LEADER BLIND",
            Self::Stuck => "RECOVERY STUCK",
            Self::Bmc => "BMC UNHEALTHY",
            Self::Invalid => "INVALID VALUES",
            Self::Degraded => "degraded",
        }
    }
}

/// One compute node: its flags, maintenance, recovery and invalid values.
/// A flag that does not parse is `null` and listed under `invalid`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ComputeNodeDoc {
    /// `internal/awaiting_up`: reset, Nova has not reported it up since.
    pub awaiting_up: Option<bool>,
    /// What each detection signal reads while they disagree, else `null`.
    pub degraded: Option<String>,
    /// `status/failed`.
    pub failed: Option<bool>,
    /// The HA node its recovery claimed.
    pub ha_node: Option<String>,
    /// Each instance of its recovery, by server uuid.
    pub instances: BTreeMap<String, InstanceDoc>,
    /// The node's values that do not parse.
    pub invalid: Vec<InvalidValue>,
    /// Its recovery's last error.
    pub last_error: Option<String>,
    /// In maintenance now: the switch, its end applied, an unreadable value
    /// counting as in maintenance.
    pub maintenance: bool,
    /// `config/maintenance_reason`.
    pub maintenance_reason: Option<String>,
    /// When the maintenance ends by itself (RFC 3339).
    pub maintenance_until: Option<String>,
    /// `internal/number_fails`.
    pub number_fails: Option<u32>,
    /// Where its recovery stands, `null` without one.
    pub phase: Option<Phase>,
    /// `status/recovered`.
    pub recovered: Option<bool>,
    /// The operator-facing state the metrics count it under
    /// ([`novaha_core::kv::ComputeNodeState::state`]): `invalid`,
    /// `maintenance`, `recovering`, `failed`, `failing` or `healthy`.
    pub state: &'static str,
}

/// One instance of a recovery: where it stands, where its disk lives (what
/// evacuating it risks), where it went.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InstanceDoc {
    /// Why it ended in error or was skipped.
    pub error: Option<String>,
    /// The instance name.
    pub name: Option<String>,
    /// Where it stands.
    pub state: InstanceState,
    /// Where its root disk lives; `null` when unknown.
    pub storage: Option<StorageClass>,
    /// The host it was sent to, or landed on.
    pub target: Option<String>,
    /// Sent to Nova's scheduler rather than the claimed HA node.
    pub via_scheduler: bool,
}

/// One HA (spare) node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HaNodeDoc {
    /// `status/in_use`; `null` when it does not parse.
    pub in_use: Option<bool>,
    /// Its values that do not parse.
    pub invalid: Vec<InvalidValue>,
    /// `status/serving`: the failed node it took.
    pub serving: Option<String>,
}

/// The lock's holder, as its value reads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Leader {
    /// The host it runs on.
    pub host: String,
    /// The daemon's id.
    pub id: String,
    /// Its process id.
    pub pid: u32,
    /// Its novaha version.
    pub version: String,
}

impl Leader {
    /// The holder `id` on `host` (process `pid`, novaha `version`).
    pub fn new(id: String, host: String, pid: u32, version: String) -> Self {
        Self {
            host,
            id,
            pid,
            version,
        }
    }
}

/// The cluster-wide pause. An unreadable pause value is shown as an active
/// pause (the safe side) whose reason says so.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PauseDoc {
    /// False once `until` passed.
    pub active: bool,
    /// When it was set (RFC 3339).
    pub at: Option<String>,
    /// Who set it.
    pub by: Option<String>,
    /// Why.
    pub reason: String,
    /// When it ends by itself (RFC 3339); `null` = until `novaha resume`.
    pub until: Option<String>,
}

/// The leader's sight, from its last cycle record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Sight {
    /// The leader cannot judge any node.
    pub blind: bool,
    /// When the cycle record was written.
    pub cycle_at: Option<String>,
    /// The last cycle that judged every node.
    pub last_judgement: Option<String>,
    /// Why it is blind.
    pub reason: Option<String>,
}

/// A field's value, or `None` when it does not parse (the node's `invalid`
/// list says why).
fn field<T: Copy>(f: &Field<T>) -> Option<T> {
    f.value.as_ref().ok().copied()
}

/// What `status` reads besides the tree's nodes: the leader (from the lock)
/// and the leader's last cycle record and fence-path report.
#[derive(Debug, Default)]
pub struct Extras {
    /// The lock's holder, or why its value does not parse.
    pub leader: Option<Result<Leader, InvalidValue>>,
    /// `novaha/last_cycle` as written by the leader.
    pub last_cycle: Option<Value>,
    /// The leader's last fence-path health report (`internal/fence_health`),
    /// as JSON; `null` until one is published.
    pub fence_health: Value,
}

/// One compute node's entry, at `now`.
fn compute_node(n: &novaha_core::kv::ComputeNodeState, now: DateTime<Utc>) -> ComputeNodeDoc {
    let record = n.recovery.value.as_ref().ok().and_then(Option::as_ref);
    ComputeNodeDoc {
        awaiting_up: field(&n.awaiting_up),
        degraded: n.degraded.value.clone().ok().flatten(),
        failed: field(&n.failed),
        ha_node: record.and_then(|r| r.ha_node.as_ref().map(|h| h.as_str().to_owned())),
        instances: record
            .map(|r| {
                r.instances
                    .iter()
                    .map(|(id, i)| {
                        let doc = InstanceDoc {
                            error: i.error.clone(),
                            name: i.name.clone(),
                            state: i.state,
                            storage: i.storage,
                            target: i.target.clone(),
                            via_scheduler: i.via_scheduler,
                        };
                        (id.clone(), doc)
                    })
                    .collect()
            })
            .unwrap_or_default(),
        invalid: n.invalid.clone(),
        last_error: record.and_then(|r| r.last_error.clone()),
        maintenance: n.in_maintenance(now),
        maintenance_reason: n.maintenance_reason.clone(),
        maintenance_until: n
            .maintenance_until
            .value
            .clone()
            .ok()
            .flatten()
            .map(format_time),
        number_fails: field(&n.number_fails),
        phase: record.map(|r| r.phase),
        recovered: field(&n.recovered),
        state: n.state(now),
    }
}

/// The status document (`--json` prints it as is), at `now`.
pub fn document(
    state: &ClusterState,
    extras: Extras,
    prefix: &str,
    now: DateTime<Utc>,
) -> StatusDoc {
    let mut invalid: Vec<InvalidValue> = Vec::new();
    let mut attention: Vec<Attention> = Vec::new();
    let mut attend = |what: AttentionKind, detail: String| {
        attention.push(Attention { detail, what });
    };
    let mut compute = BTreeMap::new();
    for n in state.compute_nodes.values() {
        let doc = compute_node(n, now);
        if doc.phase == Some(Phase::Stuck) {
            attend(
                AttentionKind::Stuck,
                format!(
                    "the recovery of {} is stuck: {}",
                    n.name,
                    doc.last_error.as_deref().unwrap_or("see its last error")
                ),
            );
        }
        if let Some(readings) = &doc.degraded {
            attend(
                AttentionKind::Degraded,
                format!(
                    "{}'s signals disagree ({readings}): not counted as failing, so not recovered",
                    n.name
                ),
            );
        }
        invalid.extend(n.invalid.iter().cloned());
        compute.insert(n.name.to_string(), doc);
    }
    let mut ha = BTreeMap::new();
    for h in state.ha_nodes.values() {
        let bad: Vec<InvalidValue> = h.in_use.value.as_ref().err().cloned().into_iter().collect();
        invalid.extend(bad.iter().cloned());
        let doc = HaNodeDoc {
            in_use: field(&h.in_use),
            invalid: bad,
            serving: h.serving.as_ref().map(|s| s.as_str().to_owned()),
        };
        ha.insert(h.name.to_string(), doc);
    }
    // No leader is shown (`leader: none`) and alerted on (NovahaNoLeader),
    // but not an exit code: a failover passes through it.
    let leader = match extras.leader {
        None => None,
        Some(Ok(l)) => Some(l),
        Some(Err(bad)) => {
            invalid.push(bad);
            None
        }
    };
    let pause = match &state.pause.value {
        Ok(None) => None,
        Ok(Some(p)) => Some(PauseDoc {
            active: p.holds_at(now),
            at: p.at.map(format_time),
            by: p.by.clone(),
            reason: p.reason.clone(),
            until: p.until.map(format_time),
        }),
        Err(bad) => {
            invalid.push(bad.clone());
            Some(PauseDoc {
                active: true,
                at: None,
                by: None,
                reason: format!("unreadable pause value, treated as paused: {}", bad.reason),
                until: None,
            })
        }
    };
    // The leader's sight, from its last cycle record (only the current
    // holder's record counts).
    let text = |c: &Value, key: &str| c[key].as_str().map(str::to_owned);
    let sight = extras
        .last_cycle
        .as_ref()
        .filter(|c| {
            leader
                .as_ref()
                .is_some_and(|l| c.get("id").and_then(Value::as_str) == Some(l.id.as_str()))
        })
        .map(|c| Sight {
            blind: c["blind"].as_bool().unwrap_or(false),
            cycle_at: text(c, "at"),
            last_judgement: text(c, "last_judgement"),
            reason: text(c, "blind_reason"),
        });
    if let Some(s) = sight.as_ref().filter(|s| s.blind) {
        attend(
            AttentionKind::Blind,
            format!(
                "the leader cannot judge any node ({}); last full judgement: {}",
                s.reason.as_deref().unwrap_or("unknown reason"),
                s.last_judgement.as_deref().unwrap_or("never")
            ),
        );
    }
    let health = extras.fence_health;
    if let Some(bad) = health.get("invalid") {
        let part = |key: &str| bad[key].as_str().unwrap_or_default().to_owned();
        invalid.push(InvalidValue {
            key: part("key"),
            raw: part("raw"),
            reason: part("reason"),
        });
    }
    if let Some(nodes) = health.get("nodes").and_then(Value::as_object) {
        for (name, n) in nodes {
            if n["healthy"].as_bool() != Some(true) {
                attend(
                    AttentionKind::Bmc,
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
            AttentionKind::Invalid,
            format!(
                "{} value(s) in the tree do not parse; their nodes are skipped until fixed",
                invalid.len()
            ),
        );
    }
    StatusDoc {
        attention,
        compute_nodes: compute,
        failures_tolerated: Value::Null,
        fence_health: health,
        ha_nodes: ha,
        invalid,
        leader,
        pause,
        prefix: prefix.to_owned(),
        schema_version: SCHEMA_VERSION,
        sight,
    }
}

/// The cell of a field that is `None`: `INVALID(key=raw)` when `invalid`
/// lists a value for the field's key, else `-`.
fn missing(invalid: &[InvalidValue], key_suffix: &str) -> (String, Tone) {
    invalid
        .iter()
        .find(|b| b.key.ends_with(key_suffix))
        .map_or(("-".to_owned(), Tone::Plain), |b| {
            (format!("INVALID({}={:?})", b.key, b.raw), Tone::Bad)
        })
}

/// A JSON value as a cell: `-` for null, a string without its quotes.
fn show(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Whether `status` colours its table: only when stdout is a terminal and
/// `NO_COLOR` is unset or empty (<https://no-color.org>).
pub fn use_colour(stdout_is_tty: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stdout_is_tty && no_color.is_none_or(|v| v.is_empty())
}

/// The failures-tolerated line: per zone, how many of the largest hosts
/// could fail at once with their instances placed (red at 0).
pub fn tolerated_text(t: &Value, colour: bool) -> String {
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
fn instance_note(id: &str, i: &InstanceDoc) -> (String, Tone) {
    let name = i.name.as_deref().unwrap_or(id);
    let state = name_of(i.state);
    let storage = i.storage.map_or("unknown", StorageClass::as_str);
    let mut line = format!("instance {name} ({id}): {state}, storage {storage}");
    let target = i.target.as_deref();
    let tone = match i.state {
        InstanceState::Done => {
            if let Some(t) = target {
                line.push_str(&format!(" -> {t}"));
            }
            if i.storage == Some(StorageClass::Local) {
                line.push_str(" (rebuilt from image: root disk data lost)");
                Tone::Warn
            } else {
                Tone::Good
            }
        }
        InstanceState::Error | InstanceState::Skipped => Tone::Bad,
        InstanceState::Pending | InstanceState::Requested => {
            match target {
                Some(t) => line.push_str(&format!(" -> {t}")),
                None if i.via_scheduler || i.state == InstanceState::Requested => {
                    line.push_str(" -> scheduler")
                }
                None => {}
            }
            Tone::Warn
        }
    };
    if let Some(e) = &i.error {
        line.push_str(&format!(": {e}"));
    }
    (line, tone)
}

/// Renders the document as text for people, without colour.
pub fn text(doc: &StatusDoc) -> String {
    table(doc, false)
}

/// The pause's line, when the key is present.
fn pause_line(pause: &PauseDoc, colour: bool) -> String {
    let until = pause.until.as_deref().map_or_else(
        || "until `novaha resume`".to_owned(),
        |u| format!("until {u}"),
    );
    let by = pause
        .by
        .as_deref()
        .map(|b| format!(" by {b}"))
        .unwrap_or_default();
    let at = pause
        .at
        .as_deref()
        .map(|a| format!(" at {a}"))
        .unwrap_or_default();
    if pause.active {
        format!(
            "{}: {}{by}{at}, {until}: no fence, force-down or evacuation starts\n",
            paint("PAUSED", Tone::Warn, colour),
            pause.reason
        )
    } else {
        format!(
            "pause expired ({until}): {}{by}{at}; `novaha resume` removes the key\n",
            pause.reason
        )
    }
}

/// Cells of a row, or lines under it, each with its tone.
type Cells = Vec<(String, Tone)>;

/// One compute node's table row and the lines under it.
fn compute_row(name: &str, n: &ComputeNodeDoc) -> (Cells, Cells) {
    let flag = |v: Option<bool>, key_suffix: &str, on: Tone| match v {
        Some(b) => (format_bool(b).to_owned(), if b { on } else { Tone::Plain }),
        None => missing(&n.invalid, key_suffix),
    };
    let fails = match n.number_fails {
        Some(f) => (f.to_string(), if f > 0 { Tone::Warn } else { Tone::Plain }),
        None => missing(&n.invalid, "/internal/number_fails"),
    };
    let phase = match n.phase {
        Some(p) => {
            let tone = match p {
                Phase::Done => Tone::Good,
                Phase::Stuck => Tone::Bad,
                _ => Tone::Warn,
            };
            (name_of(p), tone)
        }
        None => missing(&n.invalid, "/internal/recovery"),
    };
    let failed = flag(n.failed, "/status/failed", Tone::Bad);
    let name_tone = if failed.1 == Tone::Bad {
        Tone::Bad
    } else {
        Tone::Plain
    };
    let state_tone = match n.state {
        "healthy" => Tone::Good,
        "invalid" | "failed" => Tone::Bad,
        _ => Tone::Warn,
    };
    let mut notes = Vec::new();
    if n.maintenance {
        let until = n
            .maintenance_until
            .as_deref()
            .map_or_else(|| "until switched off".to_owned(), |u| format!("until {u}"));
        notes.push((
            format!(
                "maintenance {until}: {}",
                n.maintenance_reason.as_deref().unwrap_or("no reason given")
            ),
            Tone::Warn,
        ));
    }
    if n.awaiting_up == Some(true) {
        notes.push((
            "reset: waiting for Nova to report it up before counting failures".to_owned(),
            Tone::Warn,
        ));
    }
    if let Some(readings) = &n.degraded {
        notes.push((
            format!("degraded: signals disagree ({readings}); not counted as failing"),
            Tone::Warn,
        ));
    }
    if let Some(e) = &n.last_error {
        notes.push((format!("last error: {e}"), Tone::Bad));
    }
    for (id, i) in &n.instances {
        notes.push(instance_note(id, i));
    }
    for bad in &n.invalid {
        notes.push((
            format!(
                "invalid: {} = {} ({})",
                bad.key,
                Value::from(bad.raw.as_str()),
                bad.reason
            ),
            Tone::Bad,
        ));
    }
    let cells = vec![
        (name.to_owned(), name_tone),
        failed,
        flag(n.recovered, "/status/recovered", Tone::Warn),
        fails,
        flag(Some(n.maintenance), "", Tone::Warn),
        phase,
        (
            n.ha_node.clone().unwrap_or_else(|| "-".to_owned()),
            Tone::Plain,
        ),
        (n.state.to_owned(), state_tone),
    ];
    (cells, notes)
}

/// Renders the document as aligned tables for people: the leader, then one
/// row per compute node and per HA node. With `colour`, failed, stuck and
/// invalid cells are red, recoveries in progress and taken HA nodes yellow,
/// finished recoveries green.
pub fn table(doc: &StatusDoc, colour: bool) -> String {
    let mut out = String::new();
    // What needs a human comes first, then the pause.
    for a in &doc.attention {
        out.push_str(&format!(
            "{}: {}\n",
            paint(a.what.label(), Tone::Bad, colour),
            a.detail
        ));
    }
    if let Some(pause) = &doc.pause {
        out.push_str(&pause_line(pause, colour));
    }
    match &doc.leader {
        Some(l) => out.push_str(&format!(
            "leader: id={} host={} pid={} version={}\n",
            paint(&l.id, Tone::Good, colour),
            l.host,
            l.pid,
            l.version
        )),
        None => {
            let (cell, _) = missing(&doc.invalid, "/leader");
            let cell = if cell == "-" { "none".to_owned() } else { cell };
            out.push_str(&format!("leader: {}\n", paint(&cell, Tone::Bad, colour)));
        }
    }
    out.push_str(&format!("compute nodes: {}\n", doc.compute_nodes.len()));
    if !doc.compute_nodes.is_empty() {
        let mut t = Table::new(vec![
            "NODE",
            "FAILED",
            "RECOVERED",
            "NUMBER_FAILS",
            "MAINTENANCE",
            "PHASE",
            "HA_NODE",
            "STATE",
        ]);
        for (name, n) in &doc.compute_nodes {
            let (cells, notes) = compute_row(name, n);
            t.row(cells, notes);
        }
        t.render(&mut out, colour);
    }
    out.push_str(&format!("ha nodes: {}\n", doc.ha_nodes.len()));
    if !doc.ha_nodes.is_empty() {
        let mut t = Table::new(vec!["NODE", "IN_USE", "SERVING"]);
        for (name, h) in &doc.ha_nodes {
            let in_use = match h.in_use {
                Some(b) => (
                    format_bool(b).to_owned(),
                    if b { Tone::Warn } else { Tone::Good },
                ),
                None => missing(&h.invalid, "/status/in_use"),
            };
            t.row(
                vec![
                    (name.clone(), Tone::Plain),
                    in_use,
                    (
                        h.serving.clone().unwrap_or_else(|| "-".to_owned()),
                        Tone::Plain,
                    ),
                ],
                Vec::new(),
            );
        }
        t.render(&mut out, colour);
    }
    out
}

/// 0 when nothing needs a human, [`EXIT_ATTENTION`] otherwise.
pub fn exit_code(doc: &StatusDoc) -> ExitCode {
    if doc.attention.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_ATTENTION)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use novaha_core::kv::Snapshot;

    use serde_json::json;

    /// A node with every flag readable and nothing going on.
    fn quiet() -> ComputeNodeDoc {
        ComputeNodeDoc {
            awaiting_up: None,
            degraded: None,
            failed: Some(false),
            ha_node: None,
            instances: BTreeMap::new(),
            invalid: Vec::new(),
            last_error: None,
            maintenance: false,
            maintenance_reason: None,
            maintenance_until: None,
            number_fails: Some(0),
            phase: None,
            recovered: Some(false),
            state: "healthy",
        }
    }

    fn empty() -> StatusDoc {
        StatusDoc {
            attention: Vec::new(),
            compute_nodes: BTreeMap::new(),
            failures_tolerated: Value::Null,
            fence_health: Value::Null,
            ha_nodes: BTreeMap::new(),
            invalid: Vec::new(),
            leader: None,
            pause: None,
            prefix: "p".to_owned(),
            schema_version: SCHEMA_VERSION,
            sight: None,
        }
    }

    fn doc() -> StatusDoc {
        let compute_1 = ComputeNodeDoc {
            failed: Some(true),
            recovered: Some(true),
            number_fails: Some(4),
            phase: Some(Phase::Evacuating),
            ha_node: Some("ha-1".to_owned()),
            state: "recovering",
            ..quiet()
        };
        let c2 = ComputeNodeDoc {
            failed: None,
            last_error: Some("fence timed out".to_owned()),
            invalid: vec![InvalidValue {
                key: "p/compute_nodes/c2/status/failed".to_owned(),
                raw: "garbage".to_owned(),
                reason: "not a boolean".to_owned(),
            }],
            state: "invalid",
            ..quiet()
        };
        let ha_1 = HaNodeDoc {
            in_use: Some(true),
            invalid: Vec::new(),
            serving: Some("compute-1".to_owned()),
        };
        StatusDoc {
            leader: Some(Leader {
                id: "controller-1".to_owned(),
                host: "h1".to_owned(),
                pid: 42,
                version: "0.1.0".to_owned(),
            }),
            compute_nodes: [("compute-1".to_owned(), compute_1), ("c2".to_owned(), c2)].into(),
            ha_nodes: [("ha-1".to_owned(), ha_1)].into(),
            ..empty()
        }
    }

    /// The document as `--json` prints it.
    fn json_of(doc: &StatusDoc) -> Value {
        serde_json::to_value(doc).expect("the document serialises")
    }

    #[test]
    fn each_instance_of_a_recovery_shows_its_storage_class_and_fate() {
        let mut d = doc();
        let instance =
            |name: Option<&str>, state, storage, target: Option<&str>, via, error: Option<&str>| {
                InstanceDoc {
                    error: error.map(str::to_owned),
                    name: name.map(str::to_owned),
                    state,
                    storage: Some(storage),
                    target: target.map(str::to_owned),
                    via_scheduler: via,
                }
            };
        use InstanceState::{Done, Requested, Skipped};
        use StorageClass::{Local, Shared, Volume};
        d.compute_nodes.get_mut("compute-1").unwrap().instances = [
            (
                "u1",
                instance(Some("db"), Done, Volume, Some("ha-1"), false, None),
            ),
            (
                "u2",
                instance(Some("cache"), Done, Local, Some("ha-1"), false, None),
            ),
            (
                "u3",
                instance(
                    None,
                    Skipped,
                    Local,
                    None,
                    false,
                    Some("root disk on local storage"),
                ),
            ),
            (
                "u4",
                instance(Some("web"), Requested, Shared, None, true, None),
            ),
        ]
        .into_iter()
        .map(|(id, i)| (id.to_owned(), i))
        .collect();
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
        d.compute_nodes.get_mut("compute-1").unwrap().awaiting_up = Some(true);
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
        d.compute_nodes.get_mut("compute-1").unwrap().degraded =
            Some("nova=stale consul=healthy tcp=healthy".to_owned());
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
        let doc = json_of(&document(&st, Extras::default(), "p", Utc::now()));
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
        let none = empty();
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

    fn leader() -> Option<Result<Leader, InvalidValue>> {
        Some(Ok(Leader {
            id: "a".to_owned(),
            host: "h".to_owned(),
            pid: 1,
            version: "0".to_owned(),
        }))
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
        let typed = document(&st, extras, "p", now());
        let doc = json_of(&typed);
        assert_eq!(doc["schema_version"], SCHEMA_VERSION);
        assert!(whats(&doc).is_empty(), "{doc}");
        assert_eq!(exit_code(&typed), ExitCode::SUCCESS);
        assert_eq!(doc["sight"]["blind"], false);
        assert_eq!(doc["pause"], Value::Null);
        assert_eq!(doc["compute_nodes"]["c1"]["state"], "healthy");
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
        let typed = document(&st, extras, "p", now());
        let doc = json_of(&typed);
        assert_eq!(whats(&doc), ["stuck", "blind", "bmc", "invalid"], "{doc}");
        assert_eq!(exit_code(&typed), ExitCode::from(EXIT_ATTENTION));
        let text = table(&typed, false);
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
        // The node's state is the one the metrics count it under.
        assert_eq!(doc["compute_nodes"]["c1"]["state"], "recovering");
        assert_eq!(doc["compute_nodes"]["c2"]["state"], "invalid");
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
        let typed = document(&parsed(&[]), extras, "p", now());
        let doc = json_of(&typed);
        assert!(whats(&doc).is_empty(), "{doc}");
        assert_eq!(doc["sight"], Value::Null);
        assert!(
            table(&typed, false).starts_with("leader: none"),
            "{}",
            table(&typed, false)
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
        let typed = document(
            &st,
            Extras {
                leader: leader(),
                ..Extras::default()
            },
            "p",
            now(),
        );
        let doc = json_of(&typed);
        assert!(
            whats(&doc).is_empty(),
            "a pause is a choice, not a problem: {doc}"
        );
        assert_eq!(doc["pause"]["active"], true);
        let text = table(&typed, false);
        assert!(text.starts_with("PAUSED: core switch upgrade by alice at 2026-11-21T09:00:00Z, until 2026-11-21T11:00:00Z"), "{text}");
        assert!(
            text.contains("maintenance until 2026-11-21T12:00:00Z: DIMM swap"),
            "{text}"
        );
        assert_eq!(doc["compute_nodes"]["c1"]["maintenance"], true);
        assert_eq!(doc["compute_nodes"]["c1"]["state"], "maintenance");
        let later = DateTime::parse_from_rfc3339("2026-11-21T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let typed = document(
            &st,
            Extras {
                leader: leader(),
                ..Extras::default()
            },
            "p",
            later,
        );
        let doc = json_of(&typed);
        assert_eq!(doc["pause"]["active"], false);
        assert_eq!(doc["compute_nodes"]["c1"]["maintenance"], false);
        assert!(table(&typed, false).starts_with("pause expired (until 2026-11-21T11:00:00Z)"));
        // An unreadable pause is paused, and invalid.
        let st = parsed(&[("config/paused", "yes")]);
        let typed = document(
            &st,
            Extras {
                leader: leader(),
                ..Extras::default()
            },
            "p",
            now(),
        );
        let doc = json_of(&typed);
        assert_eq!(doc["pause"]["active"], true);
        assert_eq!(whats(&doc), ["invalid"]);
    }

    #[test]
    fn an_unreadable_leader_is_shown_invalid_with_its_key() {
        let bad = InvalidValue {
            key: "p/leader".to_owned(),
            raw: "xx".to_owned(),
            reason: "not a lock value".to_owned(),
        };
        let extras = Extras {
            leader: Some(Err(bad)),
            ..Extras::default()
        };
        let typed = document(&parsed(&[]), extras, "p", now());
        let doc = json_of(&typed);
        assert_eq!(doc["leader"], Value::Null);
        assert_eq!(doc["invalid"][0]["key"], "p/leader");
        let text = table(&typed, false);
        assert!(
            text.contains("leader: INVALID(p/leader=\"xx\")\n"),
            "{text}"
        );
    }

    #[test]
    fn the_table_shows_each_node_state() {
        let out = table(&doc(), false);
        let row = out.lines().find(|l| l.starts_with("  compute-1")).unwrap();
        assert!(row.ends_with("ha-1     recovering"), "{out}");
        assert!(
            out.lines()
                .any(|l| l.starts_with("  c2") && l.ends_with("invalid")),
            "{out}"
        );
        assert!(table(&doc(), true).contains("\x1b[33mrecovering\x1b[0m"));
    }
}
