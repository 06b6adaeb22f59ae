//! The Consul K/V schema (docs/consul.md, "The K/V schema"; fixed: operators and the
//! original os-nova-ha-monitor scripts read and write the same keys), its
//! parse rules, and a typed view of one recursive read of the whole tree.
//!
//! Parsing never fails as a whole: a value that breaks the rules becomes an
//! [`InvalidValue`] on that one field, the rest of the tree stays usable, and
//! callers skip that node and never overwrite the value.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::record::{Phase, RecoveryRecord};
use crate::secret::Secret;
use crate::types::NodeName;

/// The default root of the state tree.
pub const DEFAULT_PREFIX: &str = "ha_cluster";

/// How a boolean is written: `True` / `False`, as the original monitor does.
pub fn format_bool(value: bool) -> &'static str {
    if value { "True" } else { "False" }
}

/// Why a stored value was rejected. Carries the key and a short, lossy
/// excerpt of the raw bytes so the log line names exactly what to fix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("invalid value at {key}: {reason} (raw {raw:?})")]
pub struct InvalidValue {
    /// The full K/V key.
    pub key: String,
    /// An excerpt of the raw value (at most 64 characters, lossy UTF-8).
    pub raw: String,
    /// What rule it broke.
    pub reason: String,
}

impl InvalidValue {
    fn new(key: &str, raw: &[u8], reason: impl Into<String>) -> Self {
        let text = String::from_utf8_lossy(raw);
        Self {
            key: key.to_owned(),
            raw: text.chars().take(64).collect(),
            reason: reason.into(),
        }
    }
}

/// Parses a boolean flag: `true t yes 1` (any case) are true; `false f no 0`,
/// an empty value and a missing key are false; anything else, including bytes
/// that are not UTF-8, is invalid.
pub fn parse_bool(key: &str, raw: Option<&[u8]>) -> Result<bool, InvalidValue> {
    let Some(raw) = raw else { return Ok(false) };
    let Ok(text) = std::str::from_utf8(raw) else {
        return Err(InvalidValue::new(key, raw, "not UTF-8"));
    };
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "t" | "yes" | "1" => Ok(true),
        "false" | "f" | "no" | "0" | "" => Ok(false),
        _ => Err(InvalidValue::new(key, raw, "not a boolean")),
    }
}

/// Parses an optional boolean override: a missing key or an empty value
/// is `None` (no override), else as [`parse_bool`].
pub fn parse_opt_bool(key: &str, raw: Option<&[u8]>) -> Result<Option<bool>, InvalidValue> {
    match raw {
        None => Ok(None),
        Some(r) if r.iter().all(u8::is_ascii_whitespace) => Ok(None),
        Some(r) => parse_bool(key, Some(r)).map(Some),
    }
}

/// Parses a non-negative decimal count (`number_fails`). A missing key or an
/// empty value is 0; a sign, a fraction or any other text is invalid.
pub fn parse_count(key: &str, raw: Option<&[u8]>) -> Result<u32, InvalidValue> {
    let Some(raw) = raw else { return Ok(0) };
    let Ok(text) = std::str::from_utf8(raw) else {
        return Err(InvalidValue::new(key, raw, "not UTF-8"));
    };
    let text = text.trim();
    if text.is_empty() {
        return Ok(0);
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(InvalidValue::new(
            key,
            raw,
            "not a non-negative decimal integer",
        ));
    }
    text.parse::<u32>()
        .map_err(|_| InvalidValue::new(key, raw, "integer out of range"))
}

/// Parses a UTC timestamp written by novaha (RFC 3339, e.g.
/// `2026-11-21T03:00:00Z`). A missing key or an empty value is `None`; any
/// other text is invalid.
pub fn parse_time(key: &str, raw: Option<&[u8]>) -> Result<Option<DateTime<Utc>>, InvalidValue> {
    let Some(raw) = raw else { return Ok(None) };
    let Ok(text) = std::str::from_utf8(raw) else {
        return Err(InvalidValue::new(key, raw, "not UTF-8"));
    };
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    DateTime::parse_from_rfc3339(text)
        .map(|t| Some(t.with_timezone(&Utc)))
        .map_err(|_| InvalidValue::new(key, raw, "not an RFC 3339 timestamp"))
}

/// How a timestamp is written: RFC 3339 in UTC, whole seconds.
pub fn format_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Typed key paths below one prefix. Tests give each run its own prefix so
/// they can share a Consul agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schema {
    prefix: String,
}

impl Default for Schema {
    fn default() -> Self {
        Self::new(DEFAULT_PREFIX)
    }
}

impl Schema {
    /// A schema rooted at `prefix` (no leading or trailing slash needed).
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.trim_matches('/').to_owned(),
        }
    }

    /// The root, e.g. `ha_cluster`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The leader lock key, `ha_cluster/leader` (fixed).
    pub fn leader(&self) -> String {
        format!("{}/leader", self.prefix)
    }

    /// The folder of one compute node.
    pub fn compute_node(&self, node: &NodeName) -> String {
        format!("{}/compute_nodes/{}", self.prefix, node)
    }

    /// `compute_nodes/<node>/status/failed`.
    pub fn failed(&self, node: &NodeName) -> String {
        format!("{}/status/failed", self.compute_node(node))
    }

    /// `compute_nodes/<node>/status/recovered`.
    pub fn recovered(&self, node: &NodeName) -> String {
        format!("{}/status/recovered", self.compute_node(node))
    }

    /// `compute_nodes/<node>/internal/number_fails`.
    pub fn number_fails(&self, node: &NodeName) -> String {
        format!("{}/internal/number_fails", self.compute_node(node))
    }

    /// `compute_nodes/<node>/internal/awaiting_up`: True from an
    /// administrator's reset until Nova reports the node up once (or the
    /// reset grace runs out); detection counts no failure for it meanwhile.
    pub fn awaiting_up(&self, node: &NodeName) -> String {
        format!("{}/internal/awaiting_up", self.compute_node(node))
    }

    /// `compute_nodes/<node>/internal/awaiting_up_since`: when detection
    /// first judged the reset node while it read down (RFC 3339); the reset
    /// grace is measured from it.
    pub fn awaiting_up_since(&self, node: &NodeName) -> String {
        format!("{}/internal/awaiting_up_since", self.compute_node(node))
    }

    /// `compute_nodes/<node>/internal/degraded`: present while the node's
    /// configured signals disagree (one says failed, another healthy), with
    /// what each read (`nova=stale consul=healthy tcp=healthy`); written and
    /// deleted by detection only, read by `novaha status`.
    pub fn degraded(&self, node: &NodeName) -> String {
        format!("{}/internal/degraded", self.compute_node(node))
    }

    /// `compute_nodes/<node>/internal/runtime_config`.
    pub fn runtime_config(&self, node: &NodeName) -> String {
        format!("{}/internal/runtime_config", self.compute_node(node))
    }

    /// `compute_nodes/<node>/internal/recovery`: the live recovery record.
    pub fn recovery(&self, node: &NodeName) -> String {
        format!("{}/internal/recovery", self.compute_node(node))
    }

    /// `compute_nodes/<node>/incidents/<id>`: a finished recovery record.
    pub fn incident(&self, node: &NodeName, id: &str) -> String {
        format!("{}/incidents/{}", self.compute_node(node), id)
    }

    /// `compute_nodes/<node>/config/bmc/<field>` (user, password, ip, driver, port, ...).
    pub fn bmc(&self, node: &NodeName, field: &str) -> String {
        format!("{}/config/bmc/{}", self.compute_node(node), field)
    }

    /// `compute_nodes/<node>/config/ssh/<field>` (user, password).
    pub fn ssh(&self, node: &NodeName, field: &str) -> String {
        format!("{}/config/ssh/{}", self.compute_node(node), field)
    }

    /// `compute_nodes/<node>/config/maintenance`: True = never act on the node.
    pub fn maintenance(&self, node: &NodeName) -> String {
        format!("{}/config/maintenance", self.compute_node(node))
    }

    /// `compute_nodes/<node>/config/maintenance_reason`: why, free text,
    /// written by `novaha node maintenance`.
    pub fn maintenance_reason(&self, node: &NodeName) -> String {
        format!("{}/config/maintenance_reason", self.compute_node(node))
    }

    /// `compute_nodes/<node>/config/maintenance_until`: RFC 3339; once past,
    /// the node is no longer in maintenance (see
    /// [`ComputeNodeState::in_maintenance`]).
    pub fn maintenance_until(&self, node: &NodeName) -> String {
        format!("{}/config/maintenance_until", self.compute_node(node))
    }

    /// `compute_nodes/<node>/internal/last_maintenance`: the last
    /// `novaha node maintenance` (who, from where, when, on/off, reason,
    /// until) as JSON, for `novaha status`.
    pub fn last_maintenance(&self, node: &NodeName) -> String {
        format!("{}/internal/last_maintenance", self.compute_node(node))
    }

    /// `<prefix>/config/paused`: the cluster-wide pause, JSON
    /// `{"by","at","reason","until"}` (see [`Pause`]); present = paused.
    pub fn paused(&self) -> String {
        format!("{}/config/paused", self.prefix)
    }

    /// `compute_nodes/<node>/config/shared_storage`: True/False overrides
    /// `[evacuate] shared_storage` for this node (docs/recovery.md).
    pub fn shared_storage(&self, node: &NodeName) -> String {
        format!("{}/config/shared_storage", self.compute_node(node))
    }

    /// The folder of one HA (spare) node.
    pub fn ha_node(&self, node: &NodeName) -> String {
        format!("{}/ha_nodes/{}", self.prefix, node)
    }

    /// `ha_nodes/<ha-node>/status/in_use`.
    pub fn in_use(&self, node: &NodeName) -> String {
        format!("{}/status/in_use", self.ha_node(node))
    }

    /// `ha_nodes/<ha-node>/status/serving`: the failed node it took.
    pub fn serving(&self, node: &NodeName) -> String {
        format!("{}/status/serving", self.ha_node(node))
    }

    /// `ha_nodes/<ha-node>/general`: free-form, written once at registration.
    pub fn ha_general(&self, node: &NodeName) -> String {
        format!("{}/general", self.ha_node(node))
    }

    /// The folder of novaha's own bookkeeping that is not per node (the
    /// notification outbox, the fence-path health report, ...):
    /// `ha_cluster/novaha/<name>`.
    pub fn internal(&self, name: &str) -> String {
        format!("{}/novaha/{}", self.prefix, name)
    }
}

/// One stored key as read from Consul.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvEntry {
    /// The raw value; `None` for a key stored with no value (a folder marker).
    pub value: Option<Vec<u8>>,
    /// Consul's ModifyIndex, the CAS token for the next write of this key.
    pub modify_index: u64,
}

/// One consistent recursive read of the whole tree: every key below the
/// prefix, with its ModifyIndex.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Consul's `X-Consul-Index` of the read.
    pub index: u64,
    /// Full key -> entry.
    pub entries: BTreeMap<String, KvEntry>,
}

impl Snapshot {
    /// The raw bytes of `key`, if present.
    pub fn raw(&self, key: &str) -> Option<&[u8]> {
        self.entries.get(key).and_then(|e| e.value.as_deref())
    }

    /// The CAS index to write `key` with: its ModifyIndex, or 0 when the key
    /// does not exist (Consul's "create only").
    pub fn cas_index(&self, key: &str) -> u64 {
        self.entries.get(key).map_or(0, |e| e.modify_index)
    }

    /// The value of `key` as UTF-8 text, if present and valid.
    pub fn text(&self, key: &str) -> Option<&str> {
        self.raw(key).and_then(|r| std::str::from_utf8(r).ok())
    }
}

/// A parsed field with the CAS index it was read at (0 = key absent).
#[derive(Clone, Debug, PartialEq)]
pub struct Field<T> {
    /// The parsed value, or why it could not be parsed.
    pub value: Result<T, InvalidValue>,
    /// The key's ModifyIndex, or 0 when the key does not exist.
    pub modify_index: u64,
}

impl<T: Default> Default for Field<T> {
    /// An absent key: the default value at CAS index 0.
    fn default() -> Self {
        Self {
            value: Ok(T::default()),
            modify_index: 0,
        }
    }
}

impl<T: Copy> Field<T> {
    /// The value when it parsed.
    pub fn get(&self) -> Option<T> {
        self.value.as_ref().ok().copied()
    }
}

impl<T> Field<T> {
    /// A field read from `key` of `snap` with `parse`; an invalid value is
    /// also pushed to `invalid` (the node's list).
    fn read(
        snap: &Snapshot,
        key: &str,
        parse: impl Fn(&str, Option<&[u8]>) -> Result<T, InvalidValue>,
        invalid: &mut Vec<InvalidValue>,
    ) -> Self {
        let value = parse(key, snap.raw(key));
        if let Err(e) = &value {
            invalid.push(e.clone());
        }
        Self {
            value,
            modify_index: snap.cas_index(key),
        }
    }
}

/// A BMC's address and credentials from `config/bmc/*`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BmcConfig {
    /// `config/bmc/driver`: ipmi | redfish | libvirt; `None` = the configured default.
    pub driver: Option<String>,
    /// `config/bmc/ip`: address (or URI/host, by driver).
    pub ip: Option<String>,
    /// `config/bmc/port`, when valid.
    pub port: Option<u16>,
    /// `config/bmc/user`.
    pub user: Option<String>,
    /// `config/bmc/password`; never logged.
    pub password: Secret,
    /// Every other `config/bmc/<field>` (driver-specific: a Redfish system
    /// path, a libvirt domain, `verify_tls`, ...), as text.
    pub extra: BTreeMap<String, String>,
}

/// The value of `<prefix>/config/paused`: who paused the cluster, when,
/// why, and until when. Written by `novaha pause`; an operator may write it
/// from the Consul UI too (only `reason` is required there).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pause {
    /// Who paused (a login name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// When (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<DateTime<Utc>>,
    /// Why (never empty).
    pub reason: String,
    /// When the pause ends by itself (RFC 3339); absent = until `novaha
    /// resume` deletes the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
}

/// How a pause reads in one line (the log, the cycle record, `pause` and
/// `resume`): the reason quoted, who, when, and until when.
impl fmt::Display for Pause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.reason)?;
        if let Some(by) = &self.by {
            write!(f, " by {by}")?;
        }
        if let Some(at) = self.at {
            write!(f, " at {}", format_time(at))?;
        }
        match self.until {
            Some(u) => write!(f, ", until {}", format_time(u)),
            None => write!(f, ", until `novaha resume`"),
        }
    }
}

impl Pause {
    /// True while the pause holds at `now`: no `until`, or `until` later
    /// than `now`.
    pub fn holds_at(&self, now: DateTime<Utc>) -> bool {
        self.until.is_none_or(|u| now < u)
    }
}

/// Parses the pause key: a missing key is `None` (not paused); a JSON
/// [`Pause`] with a non-empty reason is `Some`; anything else (an empty
/// value, `True`, JSON with an unknown field or no reason) is invalid, and
/// an invalid pause counts as paused (see [`ClusterState::paused`]).
pub fn parse_pause(key: &str, raw: Option<&[u8]>) -> Result<Option<Pause>, InvalidValue> {
    let Some(raw) = raw else { return Ok(None) };
    let pause: Pause = serde_json::from_slice(raw).map_err(|e| {
        InvalidValue::new(
            key,
            raw,
            format!("not a pause record (JSON with by, at, reason, until): {e}"),
        )
    })?;
    if pause.reason.trim().is_empty() {
        return Err(InvalidValue::new(key, raw, "a pause needs a reason"));
    }
    Ok(Some(pause))
}

/// Where a compute node stands: the one classification the leader (which
/// nodes get a recovery task) and the metrics (`novaha_nodes{state}`)
/// share. Maintenance is not a condition: it holds actions back whatever
/// the condition, and is read with [`ComputeNodeState::in_maintenance`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeCondition {
    /// A value novaha decides on does not parse: the node is skipped and
    /// nothing of it is written until someone fixes it.
    Invalid,
    /// Judged failed (`failed` True, `recovered` False) with no recovery
    /// record yet: a leader claims it.
    Claimable,
    /// A recovery in this phase (any phase but `done`; `stuck` waits for a
    /// human).
    Recovering(Phase),
    /// The administrator set `failed` and `recovered` back to False while a
    /// record is still there: the leader applies the reset.
    ResetPending {
        /// The record's phase.
        phase: Phase,
        /// `number_fails` as read.
        number_fails: u32,
    },
    /// `failed` True and nothing left to do: recovered and done, or flags
    /// an earlier monitor left.
    Failed,
    /// Some consecutive checks failed, not yet judged failed.
    Failing(u32),
    /// Nothing wrong.
    Healthy,
}

impl NodeCondition {
    /// True when a leader has recovery work for the node: a claim to make,
    /// a recovery to carry on, or a reset to apply. A stuck recovery waits
    /// for a human; an invalid node is never picked (its decision could
    /// only wait).
    pub fn needs_recovery(self) -> bool {
        match self {
            Self::Claimable | Self::ResetPending { .. } => true,
            Self::Recovering(phase) => phase != Phase::Stuck,
            Self::Invalid | Self::Failed | Self::Failing(_) | Self::Healthy => false,
        }
    }

    /// The `state` label of `novaha_nodes`, but `maintenance`, which the
    /// metrics put right after `invalid`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Invalid => "invalid",
            Self::Recovering(_) => "recovering",
            Self::ResetPending { phase, .. } if phase != Phase::Done => "recovering",
            Self::ResetPending { number_fails, .. } | Self::Failing(number_fails)
                if number_fails > 0 =>
            {
                "failing"
            }
            Self::Claimable | Self::Failed => "failed",
            Self::ResetPending { .. } | Self::Failing(_) | Self::Healthy => "healthy",
        }
    }
}

/// Everything stored for one compute node.
#[derive(Clone, Debug, PartialEq)]
pub struct ComputeNodeState {
    /// The node.
    pub name: NodeName,
    /// `status/failed`.
    pub failed: Field<bool>,
    /// `status/recovered`.
    pub recovered: Field<bool>,
    /// `internal/number_fails`.
    pub number_fails: Field<u32>,
    /// `config/maintenance`. Read it through
    /// [`ComputeNodeState::in_maintenance`], which applies the end time.
    pub maintenance: Field<bool>,
    /// `config/maintenance_reason`, when set (free text, never invalid).
    pub maintenance_reason: Option<String>,
    /// `config/maintenance_until`: when the maintenance ends by itself.
    pub maintenance_until: Field<Option<DateTime<Utc>>>,
    /// `config/shared_storage`: `None` when absent or empty (the
    /// `[evacuate] shared_storage` default applies).
    pub shared_storage: Field<Option<bool>>,
    /// `internal/awaiting_up`: reset by the administrator, Nova has not
    /// reported it up since.
    pub awaiting_up: Field<bool>,
    /// `internal/awaiting_up_since`: when the reset grace started.
    pub awaiting_up_since: Field<Option<DateTime<Utc>>>,
    /// `internal/degraded`: the signals' readings while they disagree
    /// (trimmed; missing or empty = not degraded). Novaha's own report,
    /// never a decision input: any text is accepted, so it is never invalid.
    pub degraded: Field<Option<String>>,
    /// `internal/recovery`, when present.
    pub recovery: Field<Option<RecoveryRecord>>,
    /// `config/bmc/*`.
    pub bmc: BmcConfig,
    /// `internal/runtime_config`, passed through to drivers untouched.
    pub runtime_config: Option<serde_json::Value>,
    /// Every invalid value found for this node (flags, counts, record, bmc).
    pub invalid: Vec<InvalidValue>,
}

impl ComputeNodeState {
    /// The node's state as operators see it (`novaha_nodes{state}`, and
    /// `status`): `invalid` first, then `maintenance` (at `now`), then its
    /// [`NodeCondition::label`].
    pub fn state(&self, now: DateTime<Utc>) -> &'static str {
        match self.condition() {
            NodeCondition::Invalid => "invalid",
            _ if self.in_maintenance(now) => "maintenance",
            c => c.label(),
        }
    }

    /// Where the node stands ([`NodeCondition`]).
    pub fn condition(&self) -> NodeCondition {
        let (Ok(failed), Ok(recovered), Ok(number_fails), Ok(record)) = (
            &self.failed.value,
            &self.recovered.value,
            &self.number_fails.value,
            &self.recovery.value,
        ) else {
            return NodeCondition::Invalid;
        };
        if self.has_invalid() {
            return NodeCondition::Invalid;
        }
        match record {
            Some(rec) if !failed && !recovered => NodeCondition::ResetPending {
                phase: rec.phase,
                number_fails: *number_fails,
            },
            Some(rec) if rec.phase != Phase::Done => NodeCondition::Recovering(rec.phase),
            None if *failed && !recovered => NodeCondition::Claimable,
            _ if *failed => NodeCondition::Failed,
            _ if *number_fails > 0 => NodeCondition::Failing(*number_fails),
            _ => NodeCondition::Healthy,
        }
    }

    /// True when any field novaha decides on could not be parsed: such a node
    /// is skipped for the cycle and nothing of it is written.
    pub fn has_invalid(&self) -> bool {
        !self.invalid.is_empty()
    }

    /// True when nothing may be done to this node at `now`: no claim,
    /// fence, force-down or evacuation starts or continues (tracking of
    /// evacuations already in flight goes on), and detection skips it.
    ///
    /// `config/maintenance` True, unless `config/maintenance_until` is set
    /// and `now` is at or past it: an expired maintenance ends by itself,
    /// the keys are left as they are (only an operator writes `config/`).
    /// A value that does not parse, of either key, counts as in maintenance:
    /// an unreadable switch is read on the safe side (and the node is
    /// skipped as invalid anyway).
    pub fn in_maintenance(&self, now: DateTime<Utc>) -> bool {
        match (&self.maintenance.value, &self.maintenance_until.value) {
            (Err(_), _) | (_, Err(_)) => true,
            (Ok(false), Ok(_)) => false,
            (Ok(true), Ok(None)) => true,
            (Ok(true), Ok(Some(until))) => now < *until,
        }
    }
}

/// Everything stored for one HA node.
#[derive(Clone, Debug, PartialEq)]
pub struct HaNodeState {
    /// The spare host.
    pub name: NodeName,
    /// `status/in_use`.
    pub in_use: Field<bool>,
    /// `status/serving`: the failed node it took, if any.
    pub serving: Option<NodeName>,
}

/// The typed view of the whole tree.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClusterState {
    /// Compute nodes by name.
    pub compute_nodes: BTreeMap<NodeName, ComputeNodeState>,
    /// HA nodes by name.
    pub ha_nodes: BTreeMap<NodeName, HaNodeState>,
    /// The raw value of the leader key, if held.
    pub leader: Option<String>,
    /// `<prefix>/config/paused`. Read it through [`ClusterState::paused`],
    /// which applies the end time and the safe side for invalid values.
    pub pause: Field<Option<Pause>>,
}

impl ClusterState {
    /// Parses a snapshot. Never fails: invalid values are attached to their
    /// node (see [`ComputeNodeState::invalid`]).
    pub fn parse(schema: &Schema, snap: &Snapshot) -> Self {
        let mut compute = std::collections::BTreeSet::new();
        let mut ha = std::collections::BTreeSet::new();
        let cn_root = format!("{}/compute_nodes/", schema.prefix());
        let ha_root = format!("{}/ha_nodes/", schema.prefix());
        for key in snap.entries.keys() {
            if let Some(rest) = key.strip_prefix(&cn_root) {
                if let Some(name) = rest.split('/').next().filter(|n| !n.is_empty()) {
                    compute.insert(NodeName::new(name));
                }
            } else if let Some(rest) = key.strip_prefix(&ha_root)
                && let Some(name) = rest.split('/').next().filter(|n| !n.is_empty())
            {
                ha.insert(NodeName::new(name));
            }
        }
        let compute_nodes = compute
            .into_iter()
            .map(|n| (n.clone(), parse_compute(schema, snap, n)))
            .collect();
        let ha_nodes = ha
            .into_iter()
            .map(|n| {
                let key = schema.in_use(&n);
                let state = HaNodeState {
                    in_use: Field {
                        value: parse_bool(&key, snap.raw(&key)),
                        modify_index: snap.cas_index(&key),
                    },
                    serving: snap
                        .text(&schema.serving(&n))
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(NodeName::new),
                    name: n.clone(),
                };
                (n, state)
            })
            .collect();
        let pause_key = schema.paused();
        Self {
            compute_nodes,
            ha_nodes,
            leader: snap.text(&schema.leader()).map(str::to_owned),
            pause: Field {
                value: parse_pause(&pause_key, snap.raw(&pause_key)),
                modify_index: snap.cas_index(&pause_key),
            },
        }
    }

    /// The pause in force at `now`, if any: while it is `Some`, no new
    /// claim, fence, force-down or evacuation starts or continues anywhere
    /// (detection and the tracking of evacuations already in flight go on).
    ///
    /// - no `config/paused` key: `None`;
    /// - a valid pause whose `until` is at or before `now`: `None` (an
    ///   expired pause ends by itself; the key stays until `novaha resume`
    ///   deletes it, and `novaha status` shows it as expired);
    /// - a value that does not parse: `Some`, with no `by`/`at`/`until` and
    ///   the parse error as its reason. An unreadable pause is never read
    ///   as "not paused"; it is also an invalid value, counted in
    ///   `novaha_state_invalid`.
    pub fn paused(&self, now: DateTime<Utc>) -> Option<Pause> {
        match &self.pause.value {
            Ok(None) => None,
            Ok(Some(p)) => p.holds_at(now).then(|| p.clone()),
            Err(bad) => Some(Pause {
                by: None,
                at: None,
                reason: format!("treated as paused: {bad}"),
                until: None,
            }),
        }
    }
}

/// One incident as stored: a finished record under
/// `compute_nodes/<node>/incidents/<id>`, or the live recovery record of a
/// node (`internal/recovery`) while its recovery is in progress.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredIncident {
    /// The failed node.
    pub node: NodeName,
    /// The incident id (the key's last segment, or the live record's
    /// `incident` field).
    pub id: String,
    /// The key it was read from.
    pub key: String,
    /// True for a live record (the recovery is still going on, or done but
    /// not yet archived by a reset).
    pub live: bool,
    /// The record, or why it could not be read.
    pub record: Result<RecoveryRecord, InvalidValue>,
}

impl StoredIncident {
    /// When the failure was detected, if the record says.
    pub fn detected(&self) -> Option<DateTime<Utc>> {
        self.record
            .as_ref()
            .ok()
            .and_then(|r| r.timeline.get("detected").copied())
    }
}

/// Every incident in a snapshot, newest detection first (unreadable records
/// last, by key). A live record whose incident was already archived under
/// `incidents/<id>` is listed once, from the archive. Not part of
/// [`ClusterState::parse`]: the leader's cycle never needs the history.
pub fn incidents(schema: &Schema, snap: &Snapshot) -> Vec<StoredIncident> {
    let root = format!("{}/compute_nodes/", schema.prefix());
    let mut archived = Vec::new();
    let mut live = Vec::new();
    for (key, entry) in snap.entries.range(root.clone()..) {
        let Some(rest) = key.strip_prefix(&root) else {
            break;
        };
        let Some((node, tail)) = rest.split_once('/') else {
            continue;
        };
        let raw = entry.value.as_deref().unwrap_or_default();
        let parse = || {
            serde_json::from_slice::<RecoveryRecord>(raw)
                .map_err(|e| InvalidValue::new(key, raw, format!("bad recovery record: {e}")))
        };
        if let Some(id) = tail
            .strip_prefix("incidents/")
            .filter(|id| !id.is_empty() && !id.contains('/'))
        {
            archived.push(StoredIncident {
                node: NodeName::new(node),
                id: id.to_owned(),
                key: key.clone(),
                live: false,
                record: parse(),
            });
        } else if tail == "internal/recovery" && !raw.iter().all(u8::is_ascii_whitespace) {
            let record = parse();
            let id = record
                .as_ref()
                .map_or_else(|_| format!("{node} (unreadable)"), |r| r.incident.clone());
            live.push(StoredIncident {
                node: NodeName::new(node),
                id,
                key: key.clone(),
                live: true,
                record,
            });
        }
    }
    live.retain(|l| !archived.iter().any(|a| a.node == l.node && a.id == l.id));
    let mut all: Vec<StoredIncident> = archived.into_iter().chain(live).collect();
    all.sort_by(|a, b| {
        b.detected()
            .cmp(&a.detected())
            .then_with(|| a.key.cmp(&b.key))
    });
    all
}

fn flag(snap: &Snapshot, key: &str, invalid: &mut Vec<InvalidValue>) -> Field<bool> {
    let value = parse_bool(key, snap.raw(key));
    if let Err(e) = &value {
        invalid.push(e.clone());
    }
    Field {
        value,
        modify_index: snap.cas_index(key),
    }
}

fn parse_compute(schema: &Schema, snap: &Snapshot, name: NodeName) -> ComputeNodeState {
    let mut invalid = Vec::new();
    let failed = flag(snap, &schema.failed(&name), &mut invalid);
    let recovered = flag(snap, &schema.recovered(&name), &mut invalid);
    let maintenance = flag(snap, &schema.maintenance(&name), &mut invalid);
    let maintenance_until = Field::read(
        snap,
        &schema.maintenance_until(&name),
        parse_time,
        &mut invalid,
    );
    let maintenance_reason = snap
        .raw(&schema.maintenance_reason(&name))
        .map(|r| String::from_utf8_lossy(r).trim().to_owned())
        .filter(|r| !r.is_empty());
    let shared_storage = Field::read(
        snap,
        &schema.shared_storage(&name),
        parse_opt_bool,
        &mut invalid,
    );
    let awaiting_up = flag(snap, &schema.awaiting_up(&name), &mut invalid);
    let awaiting_up_since = Field::read(
        snap,
        &schema.awaiting_up_since(&name),
        parse_time,
        &mut invalid,
    );
    let degraded_key = schema.degraded(&name);
    let degraded = Field {
        value: Ok(snap
            .raw(&degraded_key)
            .map(|r| String::from_utf8_lossy(r).trim().to_owned())
            .filter(|t| !t.is_empty())),
        modify_index: snap.cas_index(&degraded_key),
    };
    let nf_key = schema.number_fails(&name);
    let number_fails = Field {
        value: parse_count(&nf_key, snap.raw(&nf_key)),
        modify_index: snap.cas_index(&nf_key),
    };
    if let Err(e) = &number_fails.value {
        invalid.push(e.clone());
    }
    let rec_key = schema.recovery(&name);
    let recovery = Field {
        value: match snap.raw(&rec_key) {
            None => Ok(None),
            Some(raw) if raw.iter().all(u8::is_ascii_whitespace) => Ok(None),
            Some(raw) => serde_json::from_slice::<RecoveryRecord>(raw)
                .map(Some)
                .map_err(|e| InvalidValue::new(&rec_key, raw, format!("bad recovery record: {e}"))),
        },
        modify_index: snap.cas_index(&rec_key),
    };
    if let Err(e) = &recovery.value {
        invalid.push(e.clone());
    }
    let bmc_root = format!("{}/config/bmc/", schema.compute_node(&name));
    let mut bmc = BmcConfig::default();
    for (key, entry) in snap.entries.range(bmc_root.clone()..) {
        let Some(field) = key.strip_prefix(&bmc_root) else {
            break;
        };
        let Some(raw) = entry.value.as_deref() else {
            continue;
        };
        let Ok(text) = std::str::from_utf8(raw) else {
            // Never echo a secret's bytes: report the key only.
            invalid.push(InvalidValue {
                key: key.clone(),
                raw: String::new(),
                reason: "not UTF-8".into(),
            });
            continue;
        };
        let text = text.trim().to_owned();
        match field {
            "driver" => bmc.driver = Some(text).filter(|t| !t.is_empty()),
            "ip" => bmc.ip = Some(text).filter(|t| !t.is_empty()),
            "user" => bmc.user = Some(text),
            "password" => bmc.password = Secret::new(text),
            "port" if text.is_empty() => {}
            "port" => match text.parse::<u16>() {
                Ok(p) => bmc.port = Some(p),
                Err(_) => invalid.push(InvalidValue::new(key, raw, "not a port number")),
            },
            other => {
                bmc.extra.insert(other.to_owned(), text);
            }
        }
    }
    let runtime_config = snap
        .raw(&schema.runtime_config(&name))
        .and_then(|r| serde_json::from_slice(r).ok());
    ComputeNodeState {
        name,
        failed,
        recovered,
        number_fails,
        maintenance,
        maintenance_reason,
        maintenance_until,
        shared_storage,
        awaiting_up,
        awaiting_up_since,
        degraded,
        recovery,
        bmc,
        runtime_config,
        invalid,
    }
}

impl fmt::Display for Schema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bool_parse_table() {
        for t in ["True", "true", "t", "1", "yes", "YES", " T "] {
            assert_eq!(parse_bool("k", Some(t.as_bytes())), Ok(true), "{t:?}");
        }
        for f in ["False", "false", "0", "", "f", "no"] {
            assert_eq!(parse_bool("k", Some(f.as_bytes())), Ok(false), "{f:?}");
        }
        assert_eq!(parse_bool("k", None), Ok(false));
        let err = parse_bool("a/b", Some(b"garbage")).unwrap_err();
        assert_eq!(err.key, "a/b");
        assert_eq!(err.raw, "garbage");
        assert!(parse_bool("k", Some(&[0xff, 0xfe])).is_err());
    }

    #[test]
    fn count_parse_table() {
        assert_eq!(parse_count("k", Some(b"3")), Ok(3));
        assert_eq!(parse_count("k", None), Ok(0));
        assert_eq!(parse_count("k", Some(b"")), Ok(0));
        assert!(parse_count("k", Some(b"-1")).is_err());
        assert!(parse_count("k", Some(b"x")).is_err());
        assert!(parse_count("k", Some(b"1.5")).is_err());
        assert!(parse_count("k", Some(b"99999999999")).is_err());
    }

    #[test]
    fn shared_storage_override_is_absent_true_false_or_invalid() {
        let s = Schema::new("p");
        let snap = snap(&[
            ("p/compute_nodes/c1/config/shared_storage", b"True"),
            ("p/compute_nodes/c2/config/shared_storage", b"no"),
            ("p/compute_nodes/c3/config/shared_storage", b" "),
            ("p/compute_nodes/c4/config/shared_storage", b"ceph"),
            ("p/compute_nodes/c5/status/failed", b"False"),
        ]);
        let st = ClusterState::parse(&s, &snap);
        let get = |n: &str| st.compute_nodes[&NodeName::from(n)].shared_storage.get();
        assert_eq!(get("c1"), Some(Some(true)));
        assert_eq!(get("c2"), Some(Some(false)));
        assert_eq!(get("c3"), Some(None), "empty = no override");
        assert_eq!(get("c5"), Some(None), "absent = no override");
        let c4 = &st.compute_nodes[&NodeName::from("c4")];
        assert!(
            c4.has_invalid(),
            "an unparsable override holds the node back"
        );
        assert_eq!(
            c4.invalid[0].key,
            "p/compute_nodes/c4/config/shared_storage"
        );
    }

    fn snap(pairs: &[(&str, &[u8])]) -> Snapshot {
        Snapshot {
            index: 1,
            entries: pairs
                .iter()
                .enumerate()
                .map(|(i, (k, v))| {
                    (
                        (*k).to_owned(),
                        KvEntry {
                            value: Some(v.to_vec()),
                            modify_index: i as u64 + 10,
                        },
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn tree_parses_nodes_and_keeps_invalid_values_per_node() {
        let s = Schema::new("p");
        let snap = snap(&[
            ("p/compute_nodes/c1/status/failed", b"True"),
            ("p/compute_nodes/c1/internal/number_fails", b"4"),
            ("p/compute_nodes/c1/config/bmc/ip", b"10.0.0.1"),
            ("p/compute_nodes/c1/config/bmc/password", b"s3cret"),
            ("p/compute_nodes/c1/config/bmc/port", b"623"),
            ("p/compute_nodes/c2/status/failed", b"garbage"),
            ("p/ha_nodes/ha1/status/in_use", b"True"),
            ("p/ha_nodes/ha1/status/serving", b"c1"),
        ]);
        let st = ClusterState::parse(&s, &snap);
        let c1 = &st.compute_nodes[&NodeName::from("c1")];
        assert_eq!(c1.failed.get(), Some(true));
        assert_eq!(c1.failed.modify_index, 10);
        assert_eq!(c1.recovered.get(), Some(false));
        assert_eq!(c1.recovered.modify_index, 0);
        assert_eq!(c1.number_fails.get(), Some(4));
        assert_eq!(c1.bmc.port, Some(623));
        assert_eq!(c1.bmc.password.expose(), "s3cret");
        assert!(!c1.has_invalid());
        let c2 = &st.compute_nodes[&NodeName::from("c2")];
        assert!(c2.has_invalid());
        assert_eq!(c2.invalid[0].key, "p/compute_nodes/c2/status/failed");
        let ha = &st.ha_nodes[&NodeName::from("ha1")];
        assert_eq!(ha.in_use.get(), Some(true));
        assert_eq!(ha.serving, Some(NodeName::from("c1")));
    }

    #[test]
    fn awaiting_up_and_its_start_parse_with_the_usual_rules() {
        let s = Schema::new("p");
        let st = ClusterState::parse(
            &s,
            &snap(&[
                ("p/compute_nodes/c1/internal/awaiting_up", b"True"),
                (
                    "p/compute_nodes/c1/internal/awaiting_up_since",
                    b"2026-11-21T03:00:00Z",
                ),
                ("p/compute_nodes/c2/internal/awaiting_up", b"soon"),
                (
                    "p/compute_nodes/c3/internal/awaiting_up_since",
                    b"yesterday",
                ),
                ("p/compute_nodes/c4/status/failed", b"False"),
            ]),
        );
        let c1 = &st.compute_nodes[&NodeName::from("c1")];
        assert_eq!(c1.awaiting_up.get(), Some(true));
        assert_eq!(c1.awaiting_up.modify_index, 10);
        let since = c1
            .awaiting_up_since
            .value
            .clone()
            .expect("valid")
            .expect("set");
        assert_eq!(format_time(since), "2026-11-21T03:00:00Z");
        assert!(!c1.has_invalid());
        for bad in ["c2", "c3"] {
            let n = &st.compute_nodes[&NodeName::from(bad)];
            assert!(n.has_invalid(), "{bad}: {n:?}");
        }
        let c4 = &st.compute_nodes[&NodeName::from("c4")];
        assert_eq!(c4.awaiting_up.get(), Some(false));
        assert_eq!(c4.awaiting_up.modify_index, 0);
        assert_eq!(c4.awaiting_up_since.value, Ok(None));
        assert_eq!(parse_time("k", Some(b" ")), Ok(None));
    }

    #[test]
    fn the_degraded_report_is_any_text_and_never_invalid() {
        let s = Schema::new("p");
        let st = ClusterState::parse(
            &s,
            &snap(&[
                (
                    "p/compute_nodes/c1/internal/degraded",
                    b" nova=stale consul=healthy \n",
                ),
                ("p/compute_nodes/c2/internal/degraded", b""),
                ("p/compute_nodes/c3/internal/degraded", &[0xff, 0xfe]),
                ("p/compute_nodes/c4/status/failed", b"False"),
            ]),
        );
        let c1 = &st.compute_nodes[&NodeName::from("c1")];
        assert_eq!(
            c1.degraded.value,
            Ok(Some("nova=stale consul=healthy".to_owned()))
        );
        assert_ne!(c1.degraded.modify_index, 0);
        let c2 = &st.compute_nodes[&NodeName::from("c2")];
        assert_eq!(c2.degraded.value, Ok(None));
        assert_ne!(c2.degraded.modify_index, 0, "present but empty");
        let c3 = &st.compute_nodes[&NodeName::from("c3")];
        assert!(matches!(c3.degraded.value, Ok(Some(_))));
        assert!(!c3.has_invalid(), "a report never skips the node");
        let c4 = &st.compute_nodes[&NodeName::from("c4")];
        assert_eq!(c4.degraded.value, Ok(None));
        assert_eq!(c4.degraded.modify_index, 0);
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("a test timestamp")
            .with_timezone(&Utc)
    }

    #[test]
    fn pause_holds_until_its_end_and_an_unreadable_pause_counts_as_paused() {
        let s = Schema::new("p");
        let now = at("2026-11-21T10:00:00Z");
        let none = ClusterState::parse(&s, &snap(&[]));
        assert_eq!(none.paused(now), None);
        assert_eq!(none.pause.modify_index, 0);

        let full = br#"{"by":"alice","at":"2026-11-21T09:00:00Z","reason":"network work","until":"2026-11-21T11:00:00Z"}"#;
        let st = ClusterState::parse(&s, &snap(&[("p/config/paused", full)]));
        let p = st.paused(now).expect("paused before its end");
        assert_eq!(p.by.as_deref(), Some("alice"));
        assert_eq!(p.reason, "network work");
        assert_eq!(st.pause.modify_index, 10);
        assert_eq!(st.paused(at("2026-11-21T10:59:59Z")), Some(p.clone()));
        // At its end and after: not paused; the key is still there.
        assert_eq!(st.paused(at("2026-11-21T11:00:00Z")), None);
        assert_eq!(st.paused(at("2027-01-01T00:00:00Z")), None);
        assert!(matches!(st.pause.value, Ok(Some(_))));

        // Written by hand in the Consul UI: a reason is enough, no end.
        let st = ClusterState::parse(&s, &snap(&[("p/config/paused", br#"{"reason":"x"}"#)]));
        assert!(st.paused(at("2099-01-01T00:00:00Z")).is_some());

        // Unreadable values: paused, with the parse error as the reason.
        for bad in [
            &b""[..],
            b"True",
            b"{}",
            br#"{"reason":"  "}"#,
            br#"{"reason":"x","untill":"2026-11-21T11:00:00Z"}"#,
            br#"{"reason":"x","until":"tomorrow"}"#,
        ] {
            let st = ClusterState::parse(&s, &snap(&[("p/config/paused", bad)]));
            let p = st
                .paused(now)
                .unwrap_or_else(|| panic!("{:?} read as not paused", String::from_utf8_lossy(bad)));
            assert!(
                p.reason
                    .starts_with("treated as paused: invalid value at p/config/paused"),
                "{}",
                p.reason
            );
            assert_eq!(p.until, None);
            assert!(st.pause.value.is_err());
        }
        // The pause key is not a compute node.
        let st = ClusterState::parse(&s, &snap(&[("p/config/paused", b"{}")]));
        assert!(st.compute_nodes.is_empty());
    }

    #[test]
    fn maintenance_ends_at_its_until_and_unreadable_values_count_as_maintenance() {
        let s = Schema::new("p");
        let now = at("2026-11-21T10:00:00Z");
        let st = ClusterState::parse(
            &s,
            &snap(&[
                ("p/compute_nodes/c1/config/maintenance", b"True"),
                (
                    "p/compute_nodes/c1/config/maintenance_reason",
                    b" disk swap ",
                ),
                ("p/compute_nodes/c2/config/maintenance", b"True"),
                (
                    "p/compute_nodes/c2/config/maintenance_until",
                    b"2026-11-21T11:00:00Z",
                ),
                ("p/compute_nodes/c3/config/maintenance", b"False"),
                (
                    "p/compute_nodes/c3/config/maintenance_until",
                    b"2026-11-21T11:00:00Z",
                ),
                ("p/compute_nodes/c4/config/maintenance", b"perhaps"),
                ("p/compute_nodes/c5/config/maintenance", b"True"),
                ("p/compute_nodes/c5/config/maintenance_until", b"soon"),
                ("p/compute_nodes/c6/status/failed", b"False"),
            ]),
        );
        let node = |n: &str| &st.compute_nodes[&NodeName::from(n)];
        assert!(node("c1").in_maintenance(now));
        assert_eq!(node("c1").maintenance_reason.as_deref(), Some("disk swap"));
        assert!(!node("c1").has_invalid());
        assert!(node("c2").in_maintenance(now));
        assert!(node("c2").in_maintenance(at("2026-11-21T10:59:59Z")));
        assert!(!node("c2").in_maintenance(at("2026-11-21T11:00:00Z")));
        assert!(!node("c3").in_maintenance(now));
        for bad in ["c4", "c5"] {
            assert!(node(bad).in_maintenance(now), "{bad}");
            assert!(
                node(bad).in_maintenance(at("2099-01-01T00:00:00Z")),
                "{bad}"
            );
            assert!(node(bad).has_invalid(), "{bad}");
        }
        assert!(!node("c6").in_maintenance(now));
        assert_eq!(node("c6").maintenance_reason, None);
    }
    #[test]
    fn incidents_are_listed_newest_first_once_each_with_unreadable_ones_kept() {
        let s = Schema::new("p");
        let rec = |id: &str, phase: &str, detected: &str| {
            format!(
                r#"{{"version":1,"incident":"{id}","epoch":"e","phase":"{phase}","timeline":{{"detected":"{detected}"}}}}"#
            )
        };
        let old = rec("c1-1", "done", "2026-11-01T00:00:00Z");
        let new = rec("c2-2", "done", "2026-11-02T00:00:00Z");
        let live = rec("c1-3", "evacuating", "2026-11-03T00:00:00Z");
        let archived_live = rec("c2-2", "done", "2026-11-02T00:00:00Z");
        let st = snap(&[
            ("p/compute_nodes/c1/incidents/c1-1", old.as_bytes()),
            ("p/compute_nodes/c1/internal/recovery", live.as_bytes()),
            ("p/compute_nodes/c2/incidents/c2-2", new.as_bytes()),
            (
                "p/compute_nodes/c2/internal/recovery",
                archived_live.as_bytes(),
            ),
            ("p/compute_nodes/c3/incidents/broken", b"{not json"),
            ("p/compute_nodes/c3/internal/recovery", b""),
            ("p/ha_nodes/h1/status/in_use", b"False"),
        ]);
        let all = incidents(&s, &st);
        let ids: Vec<(&str, &str, bool)> = all
            .iter()
            .map(|i| (i.node.as_str(), i.id.as_str(), i.live))
            .collect();
        assert_eq!(
            ids,
            [
                ("c1", "c1-3", true),
                ("c2", "c2-2", false),
                ("c1", "c1-1", false),
                ("c3", "broken", false),
            ]
        );
        assert!(all[3].record.is_err());
        assert_eq!(all[3].key, "p/compute_nodes/c3/incidents/broken");
    }

    fn node(pairs: &[(&str, &str)]) -> ComputeNodeState {
        let s = Schema::new("p");
        let snap = Snapshot {
            index: 1,
            entries: pairs
                .iter()
                .map(|(k, v)| {
                    (
                        format!("p/compute_nodes/c1/{k}"),
                        KvEntry {
                            value: Some(v.as_bytes().to_vec()),
                            modify_index: 3,
                        },
                    )
                })
                .collect(),
        };
        ClusterState::parse(&s, &snap).compute_nodes[&NodeName::from("c1")].clone()
    }

    fn record(phase: &str) -> String {
        format!(r#"{{"version":1,"incident":"i","epoch":"e","phase":"{phase}"}}"#)
    }

    fn needs_work(n: &ComputeNodeState) -> bool {
        n.condition().needs_recovery()
    }

    #[test]
    fn needs_work_picks_claims_live_recoveries_and_resets_only() {
        let f = ("status/failed", "True");
        let nf = ("status/failed", "False");
        let r = ("status/recovered", "True");
        let nr = ("status/recovered", "False");
        let rec = |p: &str| ("internal/recovery", record(p));
        assert!(needs_work(&node(&[f, nr])), "claim");
        assert!(!needs_work(&node(&[nf, nr])), "healthy");
        assert!(!needs_work(&node(&[f, r])), "latched by someone else");
        let live = rec("evacuating");
        assert!(needs_work(&node(&[f, r, (live.0, &live.1)])), "resume");
        let done = rec("done");
        assert!(!needs_work(&node(&[f, r, (done.0, &done.1)])), "done");
        let stuck = rec("stuck");
        assert!(!needs_work(&node(&[f, r, (stuck.0, &stuck.1)])), "stuck");
        assert!(needs_work(&node(&[nf, nr, (done.0, &done.1)])), "reset");
        assert!(needs_work(&node(&[nf, nr, (stuck.0, &stuck.1)])), "reset");
        assert!(
            !needs_work(&node(&[("status/failed", "maybe"), nr])),
            "invalid"
        );
        let bad = ("internal/recovery", "{not json");
        assert!(!needs_work(&node(&[f, r, bad])), "unparsable record");
    }

    #[test]
    fn each_condition_has_its_metric_label() {
        let label = |pairs: &[(&str, &str)]| node(pairs).condition().label();
        let live = record("evacuating");
        let done = record("done");
        assert_eq!(label(&[("status/failed", "maybe")]), "invalid");
        assert_eq!(label(&[("status/failed", "False")]), "healthy");
        assert_eq!(label(&[("internal/number_fails", "2")]), "failing");
        assert_eq!(label(&[("status/failed", "True")]), "failed");
        assert_eq!(
            label(&[
                ("status/failed", "True"),
                ("status/recovered", "True"),
                ("internal/recovery", &live)
            ]),
            "recovering"
        );
        assert_eq!(
            label(&[
                ("status/failed", "True"),
                ("status/recovered", "True"),
                ("internal/recovery", &done)
            ]),
            "failed"
        );
        // A reset of a finished recovery counts by its checks again.
        assert_eq!(label(&[("internal/recovery", &done)]), "healthy");
        assert_eq!(
            label(&[("internal/recovery", &done), ("internal/number_fails", "3")]),
            "failing"
        );
        assert_eq!(label(&[("internal/recovery", &live)]), "recovering");
    }
}
