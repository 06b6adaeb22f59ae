//! The Consul K/V schema of DESIGN.md section 3 (fixed: operators and the
//! original os-nova-ha-monitor scripts read and write the same keys), its
//! parse rules, and a typed view of one recursive read of the whole tree.
//!
//! Parsing never fails as a whole: a value that breaks the rules becomes an
//! [`InvalidValue`] on that one field, the rest of the tree stays usable, and
//! callers skip that node and never overwrite the value.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::record::RecoveryRecord;
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
    /// `config/maintenance`.
    pub maintenance: Field<bool>,
    /// `config/shared_storage`: `None` when absent or empty (the
    /// `[evacuate] shared_storage` default applies).
    pub shared_storage: Field<Option<bool>>,
    /// `internal/awaiting_up`: reset by the administrator, Nova has not
    /// reported it up since.
    pub awaiting_up: Field<bool>,
    /// `internal/awaiting_up_since`: when the reset grace started.
    pub awaiting_up_since: Field<Option<DateTime<Utc>>>,
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
    /// True when any field novaha decides on could not be parsed: such a node
    /// is skipped for the cycle and nothing of it is written.
    pub fn has_invalid(&self) -> bool {
        !self.invalid.is_empty()
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
        Self {
            compute_nodes,
            ha_nodes,
            leader: snap.text(&schema.leader()).map(str::to_owned),
        }
    }
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
        shared_storage,
        awaiting_up,
        awaiting_up_since,
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
}
