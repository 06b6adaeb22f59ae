//! The operator's writes, planned: `node register`, `ha-node register`,
//! `node reset`, `node maintenance`, `pause`, `resume`.
//!
//! Each planner takes the schema, one snapshot of the tree and the inputs
//! the daemon has already read (who, from which host, when, the BMC
//! settings, the reason) and returns the CAS ops to commit as one
//! transaction. A flag is created only where absent (CAS 0), so
//! registering never overwrites `failed`, `recovered`, `number_fails` or
//! `in_use`; a value is replaced at the index it was read at, so a
//! concurrent write makes the commit fail and the caller re-reads and plans
//! again. The daemon reads files and the environment, commits, retries and
//! prints; nothing here does I/O.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::NodeName;
use crate::kv::{InvalidValue, Pause, Schema, Snapshot, format_bool, format_time, parse_pause};
use crate::store::KvOp;

/// Why an operator's command was refused before anything was written.
/// Each message is the one the operator sees.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    /// The node name is empty or holds `/`, a space or a control character.
    #[error("invalid node name {0:?}: must be a host name without '/' or spaces")]
    InvalidName(String),
    /// `--reason` is blank.
    #[error("--reason must not be empty: say why, it is shown to every operator")]
    EmptyReason,
    /// `node maintenance NODE on` without `--reason`.
    #[error("--reason is required to put a node in maintenance")]
    ReasonRequired,
    /// `node maintenance NODE off --for ...`.
    #[error("--for only applies to `on`")]
    ForWithOff,
    /// `--for` does not fit a date.
    #[error("--for {} is too long", humantime::format_duration(*.0))]
    TooLong(Duration),
    /// `node reset` of a node with no key in the tree.
    #[error("node {node} is not registered under {root}")]
    ResetUnregistered {
        /// The node named.
        node: NodeName,
        /// Its folder.
        root: String,
    },
    /// `node maintenance` of a node with no key in the tree: a typo must
    /// not create a node.
    #[error("node {node} is not registered under {root} (novaha node register {node})")]
    MaintenanceUnregistered {
        /// The node named.
        node: NodeName,
        /// Its folder.
        root: String,
    },
}

/// Checks a node name given on the command line: a host name, without `/`
/// (it is a folder name), spaces or control characters.
pub fn check_name(node: &str) -> Result<NodeName, AdminError> {
    if node.is_empty() || node.contains(['/', ' ']) || node.chars().any(char::is_control) {
        return Err(AdminError::InvalidName(node.to_owned()));
    }
    Ok(NodeName::new(node))
}

/// Checks a `--reason`: trimmed, never empty (every operator is shown it).
pub fn check_reason(reason: &str) -> Result<String, AdminError> {
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(AdminError::EmptyReason);
    }
    Ok(reason.to_owned())
}

/// `now + for_`, or an error naming a duration too long to add.
pub fn end_time(
    now: DateTime<Utc>,
    for_: Option<Duration>,
) -> Result<Option<DateTime<Utc>>, AdminError> {
    for_.map(|d| {
        chrono::TimeDelta::from_std(d)
            .ok()
            .and_then(|delta| now.checked_add_signed(delta))
            .ok_or(AdminError::TooLong(d))
    })
    .transpose()
}

/// The key below a compute node where resets are recorded.
pub fn last_reset_key(schema: &Schema, node: &NodeName) -> String {
    format!("{}/internal/last_reset", schema.compute_node(node))
}

/// Who made a change, from which host and when: recorded next to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// The operator's login name.
    pub by: String,
    /// The host the command ran on.
    pub from: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// The BMC settings given to `node register`, each written only if given.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BmcFields {
    /// `config/bmc/driver`, as stored (`ipmi`, `redfish`, `libvirt`).
    pub driver: Option<String>,
    /// `config/bmc/ip`.
    pub ip: Option<String>,
    /// `config/bmc/port`.
    pub port: Option<u16>,
    /// `config/bmc/user`.
    pub user: Option<String>,
    /// `config/bmc/password`.
    pub password: Option<String>,
}

/// A create-only op unless the key exists.
fn create(snap: &Snapshot, key: String, value: &str) -> Option<KvOp> {
    (!snap.entries.contains_key(&key)).then(|| KvOp::set(key, value, 0))
}

/// A set at the CAS index it was read at, unless it already holds `value`.
fn put(snap: &Snapshot, key: String, value: &[u8]) -> Option<KvOp> {
    if snap.raw(&key) == Some(value) {
        return None;
    }
    let cas = snap.cas_index(&key);
    Some(KvOp::set(key, value.to_vec(), cas))
}

/// A delete at the CAS index it was read at, if the key exists.
fn remove(snap: &Snapshot, key: String) -> Option<KvOp> {
    snap.entries.get(&key).map(|e| KvOp::Delete {
        cas: e.modify_index,
        key,
    })
}

/// True when any key lies below the node's folder.
fn registered(schema: &Schema, snap: &Snapshot, node: &NodeName) -> bool {
    let root = format!("{}/", schema.compute_node(node));
    snap.entries
        .range(root.clone()..)
        .next()
        .is_some_and(|(k, _)| k.starts_with(&root))
}

/// `node register`: the status flags where absent (never overwritten) and
/// each BMC setting given, unless it already holds that value.
pub fn register_node(
    schema: &Schema,
    snap: &Snapshot,
    node: &NodeName,
    bmc: &BmcFields,
) -> Vec<KvOp> {
    let mut ops: Vec<KvOp> = [
        create(snap, schema.failed(node), format_bool(false)),
        create(snap, schema.recovered(node), format_bool(false)),
        create(snap, schema.number_fails(node), "0"),
    ]
    .into_iter()
    .flatten()
    .collect();
    let fields = [
        ("driver", bmc.driver.clone()),
        ("ip", bmc.ip.clone()),
        ("port", bmc.port.map(|p| p.to_string())),
        ("user", bmc.user.clone()),
        ("password", bmc.password.clone()),
    ];
    for (field, value) in fields {
        if let Some(v) = value {
            ops.extend(put(snap, schema.bmc(node, field), v.as_bytes()));
        }
    }
    ops
}

/// `ha-node register`: `in_use=False` and the node's `general` record
/// (who registered it, from where, when), each only where absent.
pub fn register_ha_node(
    schema: &Schema,
    snap: &Snapshot,
    node: &NodeName,
    stamp: &Stamp,
) -> Vec<KvOp> {
    let general = json!({
        "registered_by": stamp.by,
        "registered_from": stamp.from,
        "registered_at": stamp.at.to_rfc3339(),
    })
    .to_string();
    [
        create(snap, schema.in_use(node), format_bool(false)),
        create(snap, schema.ha_general(node), &general),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// `node reset`: `failed=False`, `recovered=False` (each at the index it
/// was read at, only where it differs), and the reset recorded in
/// `internal/last_reset` with the stamp and the values replaced. The node
/// must be registered.
pub fn reset_node(
    schema: &Schema,
    snap: &Snapshot,
    node: &NodeName,
    stamp: &Stamp,
) -> Result<Vec<KvOp>, AdminError> {
    if !registered(schema, snap, node) {
        return Err(AdminError::ResetUnregistered {
            node: node.clone(),
            root: schema.compute_node(node),
        });
    }
    let (failed, recovered) = (schema.failed(node), schema.recovered(node));
    let prior = |key: &str| {
        snap.raw(key)
            .map(|r| String::from_utf8_lossy(r).into_owned())
    };
    let record = json!({
        "by": stamp.by,
        "from": stamp.from,
        "at": stamp.at.to_rfc3339(),
        "previous": { "failed": prior(&failed), "recovered": prior(&recovered) },
    })
    .to_string();
    let reset_key = last_reset_key(schema, node);
    let cas = snap.cas_index(&reset_key);
    Ok([
        put(snap, failed, format_bool(false).as_bytes()),
        put(snap, recovered, format_bool(false).as_bytes()),
        Some(KvOp::set(reset_key, record, cas)),
    ]
    .into_iter()
    .flatten()
    .collect())
}

/// What `node maintenance` sets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Maintenance {
    /// In maintenance, why, and until when (`None`: until switched off).
    On {
        /// Why (checked non-empty).
        reason: String,
        /// When it ends by itself.
        until: Option<DateTime<Utc>>,
    },
    /// Out of maintenance, with an optional reason for the record.
    Off {
        /// Why, if given.
        reason: Option<String>,
    },
}

impl Maintenance {
    /// Checks the arguments of `node maintenance NODE on|off`: `on` needs
    /// a reason, `--for` only applies to `on` and ends at `now + for_`.
    pub fn new(
        on: bool,
        reason: Option<&str>,
        for_: Option<Duration>,
        now: DateTime<Utc>,
    ) -> Result<Self, AdminError> {
        let reason = reason.map(check_reason).transpose()?;
        match (on, reason) {
            (true, None) => Err(AdminError::ReasonRequired),
            (true, Some(reason)) => Ok(Self::On {
                reason,
                until: end_time(now, for_)?,
            }),
            (false, _) if for_.is_some() => Err(AdminError::ForWithOff),
            (false, reason) => Ok(Self::Off { reason }),
        }
    }

    /// The line printed once the change is written.
    pub fn outcome(&self, node: &NodeName) -> String {
        match self {
            Self::On { until: Some(u), .. } => format!(
                "{node} in maintenance until {}: novaha will not fence, force down or evacuate it",
                format_time(*u)
            ),
            Self::On { until: None, .. } => format!(
                "{node} in maintenance until `novaha node maintenance {node} off`: novaha will not fence, force down or evacuate it"
            ),
            Self::Off { .. } => {
                format!("{node} out of maintenance: novaha watches and recovers it again")
            }
        }
    }
}

/// `node maintenance`. On: `config/maintenance=True`,
/// `config/maintenance_reason`, and `config/maintenance_until` (deleted
/// when no end). Off: `config/maintenance=False`, reason and end deleted.
/// Either way the change is recorded in `internal/last_maintenance` with
/// the stamp. The node must be registered (a typo must not create a node).
pub fn maintenance(
    schema: &Schema,
    snap: &Snapshot,
    node: &NodeName,
    change: &Maintenance,
    stamp: &Stamp,
) -> Result<Vec<KvOp>, AdminError> {
    if !registered(schema, snap, node) {
        return Err(AdminError::MaintenanceUnregistered {
            node: node.clone(),
            root: schema.compute_node(node),
        });
    }
    let (on, reason, until) = match change {
        Maintenance::On { reason, until } => (true, Some(reason), *until),
        Maintenance::Off { reason } => (false, reason.as_ref(), None),
    };
    let record = json!({
        "by": stamp.by,
        "from": stamp.from,
        "at": format_time(stamp.at),
        "maintenance": on,
        "reason": reason,
        "until": until.map(format_time),
    })
    .to_string();
    let mut ops: Vec<KvOp> = Vec::new();
    ops.extend(put(
        snap,
        schema.maintenance(node),
        format_bool(on).as_bytes(),
    ));
    match change {
        Maintenance::On { reason, until } => {
            ops.extend(put(
                snap,
                schema.maintenance_reason(node),
                reason.as_bytes(),
            ));
            match until {
                Some(u) => ops.extend(put(
                    snap,
                    schema.maintenance_until(node),
                    format_time(*u).as_bytes(),
                )),
                None => ops.extend(remove(snap, schema.maintenance_until(node))),
            }
        }
        Maintenance::Off { .. } => {
            ops.extend(remove(snap, schema.maintenance_reason(node)));
            ops.extend(remove(snap, schema.maintenance_until(node)));
        }
    }
    let last = schema.last_maintenance(node);
    let cas = snap.cas_index(&last);
    ops.push(KvOp::set(last, record, cas));
    Ok(ops)
}

/// What the pause key held when `pause` or `resume` read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PriorPause {
    /// No value: the cluster was not paused.
    Absent,
    /// A readable pause.
    Paused(Pause),
    /// A value that is not a pause (it counted as paused).
    Unreadable(InvalidValue),
}

impl PriorPause {
    /// Reads the pause key of a snapshot.
    pub fn read(schema: &Schema, snap: &Snapshot) -> Self {
        let key = schema.paused();
        match snap.raw(&key).map(|r| parse_pause(&key, Some(r))) {
            None | Some(Ok(None)) => Self::Absent,
            Some(Ok(Some(p))) => Self::Paused(p),
            Some(Err(bad)) => Self::Unreadable(bad),
        }
    }
}

/// `pause`: writes `pause` to `<prefix>/config/paused`; a pause already
/// there is replaced at the index it was read at, so a concurrent change
/// is re-read, never lost. Returns the op and what it replaces.
pub fn pause(schema: &Schema, snap: &Snapshot, pause: &Pause) -> (Vec<KvOp>, PriorPause) {
    let key = schema.paused();
    let value = serde_json::to_vec(pause).expect("a pause serialises: strings and times only");
    let cas = snap.cas_index(&key);
    (
        vec![KvOp::set(key, value, cas)],
        PriorPause::read(schema, snap),
    )
}

/// `resume`: deletes `<prefix>/config/paused` at the index it was read at
/// (nothing when absent). Returns the ops and what they end.
pub fn resume(schema: &Schema, snap: &Snapshot) -> (Vec<KvOp>, PriorPause) {
    let ops = remove(snap, schema.paused()).into_iter().collect();
    (ops, PriorPause::read(schema, snap))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::KvEntry;
    use chrono::TimeZone;

    fn schema() -> Schema {
        Schema::new("ha")
    }

    fn node() -> NodeName {
        NodeName::new("c1")
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap()
    }

    fn stamp() -> Stamp {
        Stamp {
            by: "alice".into(),
            from: "ctl1".into(),
            at: now(),
        }
    }

    fn snap(entries: &[(&str, &str, u64)]) -> Snapshot {
        Snapshot {
            index: 100,
            entries: entries
                .iter()
                .map(|(k, v, i)| {
                    let entry = KvEntry {
                        value: Some(v.as_bytes().to_vec()),
                        modify_index: *i,
                    };
                    (k.to_string(), entry)
                })
                .collect(),
        }
    }

    fn set_of<'a>(ops: &'a [KvOp], key: &str) -> Option<(&'a str, u64)> {
        ops.iter().find_map(|op| match op {
            KvOp::Set { key: k, value, cas } if k == key => {
                Some((std::str::from_utf8(value).unwrap(), *cas))
            }
            _ => None,
        })
    }

    fn delete_of(ops: &[KvOp], key: &str) -> Option<u64> {
        ops.iter().find_map(|op| match op {
            KvOp::Delete { key: k, cas } if k == key => Some(*cas),
            _ => None,
        })
    }

    fn json_of(ops: &[KvOp], key: &str) -> serde_json::Value {
        serde_json::from_str(set_of(ops, key).unwrap().0).unwrap()
    }

    #[test]
    fn names_and_reasons_are_checked() {
        assert_eq!(check_name("c1"), Ok(node()));
        for bad in ["", "a/b", "a b", "a\nb", "a\tb"] {
            assert_eq!(check_name(bad), Err(AdminError::InvalidName(bad.into())));
        }
        assert_eq!(check_reason("  disk swap \n"), Ok("disk swap".into()));
        assert_eq!(check_reason(" \t"), Err(AdminError::EmptyReason));
        assert_eq!(
            AdminError::InvalidName("a/b".into()).to_string(),
            "invalid node name \"a/b\": must be a host name without '/' or spaces"
        );
    }

    #[test]
    fn the_end_time_is_now_plus_the_duration_or_an_error() {
        assert_eq!(end_time(now(), None), Ok(None));
        let hour = Duration::from_secs(3600);
        assert_eq!(
            end_time(now(), Some(hour)),
            Ok(Some(Utc.with_ymd_and_hms(2024, 5, 1, 13, 0, 0).unwrap()))
        );
        let forever = Duration::from_secs(u64::MAX);
        let err = end_time(now(), Some(forever)).unwrap_err();
        assert_eq!(err, AdminError::TooLong(forever));
        assert!(err.to_string().starts_with("--for "), "{err}");
        assert!(err.to_string().ends_with(" is too long"), "{err}");
    }

    #[test]
    fn register_creates_only_absent_flags_and_never_overwrites() {
        let s = schema();
        let n = node();
        let empty = register_node(&s, &Snapshot::default(), &n, &BmcFields::default());
        assert_eq!(empty.len(), 3);
        assert_eq!(set_of(&empty, &s.failed(&n)), Some(("False", 0)));
        assert_eq!(set_of(&empty, &s.recovered(&n)), Some(("False", 0)));
        assert_eq!(set_of(&empty, &s.number_fails(&n)), Some(("0", 0)));

        let failed_node = snap(&[
            (&s.failed(&n), "True", 5),
            (&s.recovered(&n), "True", 6),
            (&s.number_fails(&n), "3", 7),
        ]);
        let ops = register_node(&s, &failed_node, &n, &BmcFields::default());
        assert!(ops.is_empty(), "{ops:?}");
    }

    #[test]
    fn register_writes_given_bmc_fields_at_their_index_unless_unchanged() {
        let s = schema();
        let n = node();
        let bmc = BmcFields {
            driver: Some("ipmi".into()),
            ip: Some("10.0.0.9".into()),
            port: Some(623),
            user: None,
            password: Some("pw".into()),
        };
        let read = snap(&[
            (&s.bmc(&n, "ip"), "10.0.0.1", 11),
            (&s.bmc(&n, "port"), "623", 12),
            (&s.bmc(&n, "user"), "admin", 13),
        ]);
        let ops = register_node(&s, &read, &n, &bmc);
        assert_eq!(set_of(&ops, &s.bmc(&n, "driver")), Some(("ipmi", 0)));
        assert_eq!(set_of(&ops, &s.bmc(&n, "ip")), Some(("10.0.0.9", 11)));
        assert_eq!(set_of(&ops, &s.bmc(&n, "password")), Some(("pw", 0)));
        assert_eq!(set_of(&ops, &s.bmc(&n, "port")), None, "unchanged");
        assert_eq!(set_of(&ops, &s.bmc(&n, "user")), None, "not given");
    }

    #[test]
    fn an_ha_node_is_registered_only_where_absent() {
        let s = schema();
        let n = NodeName::new("ha1");
        let ops = register_ha_node(&s, &Snapshot::default(), &n, &stamp());
        assert_eq!(set_of(&ops, &s.in_use(&n)), Some(("False", 0)));
        let general = json_of(&ops, &s.ha_general(&n));
        assert_eq!(general["registered_by"], "alice");
        assert_eq!(general["registered_from"], "ctl1");
        assert_eq!(general["registered_at"], now().to_rfc3339());
        assert_eq!(set_of(&ops, &s.ha_general(&n)).unwrap().1, 0);

        let busy = snap(&[(&s.in_use(&n), "True", 3), (&s.ha_general(&n), "{}", 4)]);
        assert!(register_ha_node(&s, &busy, &n, &stamp()).is_empty());
    }

    #[test]
    fn reset_writes_only_the_values_it_read_at_their_index() {
        let s = schema();
        let n = node();
        let read = snap(&[
            (&s.failed(&n), "True", 21),
            (&s.recovered(&n), "True", 22),
            (&last_reset_key(&s, &n), "{}", 23),
        ]);
        let ops = reset_node(&s, &read, &n, &stamp()).unwrap();
        assert_eq!(ops.len(), 3);
        assert_eq!(set_of(&ops, &s.failed(&n)), Some(("False", 21)));
        assert_eq!(set_of(&ops, &s.recovered(&n)), Some(("False", 22)));
        assert_eq!(set_of(&ops, &last_reset_key(&s, &n)).unwrap().1, 23);
        let record = json_of(&ops, &last_reset_key(&s, &n));
        assert_eq!(record["by"], "alice");
        assert_eq!(record["from"], "ctl1");
        assert_eq!(record["previous"]["failed"], "True");
        assert_eq!(record["previous"]["recovered"], "True");

        // Already clear: only the record is written (created at index 0).
        let clear = snap(&[
            (&s.failed(&n), "False", 31),
            (&s.recovered(&n), "False", 32),
        ]);
        let ops = reset_node(&s, &clear, &n, &stamp()).unwrap();
        assert_eq!(ops.len(), 1);
        assert_eq!(set_of(&ops, &last_reset_key(&s, &n)).unwrap().1, 0);
    }

    #[test]
    fn reset_and_maintenance_refuse_an_unregistered_node() {
        let s = schema();
        let n = node();
        // A node whose name is a prefix of another's is not registered.
        let other = snap(&[(&s.failed(&NodeName::new("c10")), "False", 1)]);
        let err = reset_node(&s, &other, &n, &stamp()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "node c1 is not registered under ha/compute_nodes/c1"
        );
        let off = Maintenance::Off { reason: None };
        let err = maintenance(&s, &other, &n, &off, &stamp()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "node c1 is not registered under ha/compute_nodes/c1 (novaha node register c1)"
        );
    }

    #[test]
    fn maintenance_arguments_are_checked() {
        let hour = Some(Duration::from_secs(3600));
        assert_eq!(
            Maintenance::new(true, None, None, now()),
            Err(AdminError::ReasonRequired)
        );
        assert_eq!(
            Maintenance::new(true, Some(" "), None, now()),
            Err(AdminError::EmptyReason)
        );
        assert_eq!(
            Maintenance::new(false, None, hour, now()),
            Err(AdminError::ForWithOff)
        );
        assert_eq!(
            Maintenance::new(true, Some(" disk "), hour, now()),
            Ok(Maintenance::On {
                reason: "disk".into(),
                until: Some(Utc.with_ymd_and_hms(2024, 5, 1, 13, 0, 0).unwrap()),
            })
        );
        assert_eq!(
            Maintenance::new(false, Some("done"), None, now()),
            Ok(Maintenance::Off {
                reason: Some("done".into())
            })
        );
    }

    #[test]
    fn maintenance_on_sets_flag_reason_and_end_and_records_it() {
        let s = schema();
        let n = node();
        let read = snap(&[
            (&s.failed(&n), "False", 1),
            (&s.maintenance(&n), "False", 41),
            (&s.maintenance_until(&n), "2024-01-01T00:00:00Z", 42),
        ]);
        let until = Utc.with_ymd_and_hms(2024, 5, 2, 0, 0, 0).unwrap();
        let on = Maintenance::On {
            reason: "disk".into(),
            until: Some(until),
        };
        let ops = maintenance(&s, &read, &n, &on, &stamp()).unwrap();
        assert_eq!(set_of(&ops, &s.maintenance(&n)), Some(("True", 41)));
        assert_eq!(set_of(&ops, &s.maintenance_reason(&n)), Some(("disk", 0)));
        assert_eq!(
            set_of(&ops, &s.maintenance_until(&n)),
            Some(("2024-05-02T00:00:00Z", 42))
        );
        let record = json_of(&ops, &s.last_maintenance(&n));
        assert_eq!(record["maintenance"], true);
        assert_eq!(record["reason"], "disk");
        assert_eq!(record["until"], "2024-05-02T00:00:00Z");
        assert_eq!(record["at"], "2024-05-01T12:00:00Z");

        // Without an end, an old end is deleted at its index.
        let on = Maintenance::On {
            reason: "disk".into(),
            until: None,
        };
        let ops = maintenance(&s, &read, &n, &on, &stamp()).unwrap();
        assert_eq!(delete_of(&ops, &s.maintenance_until(&n)), Some(42));
        assert!(on.outcome(&n).contains("`novaha node maintenance c1 off`"));
    }

    #[test]
    fn maintenance_off_clears_the_flag_and_deletes_reason_and_end() {
        let s = schema();
        let n = node();
        let read = snap(&[
            (&s.maintenance(&n), "True", 51),
            (&s.maintenance_reason(&n), "disk", 52),
            (&s.maintenance_until(&n), "2024-05-02T00:00:00Z", 53),
            (&s.last_maintenance(&n), "{}", 54),
        ]);
        let off = Maintenance::Off { reason: None };
        let ops = maintenance(&s, &read, &n, &off, &stamp()).unwrap();
        assert_eq!(ops.len(), 4);
        assert_eq!(set_of(&ops, &s.maintenance(&n)), Some(("False", 51)));
        assert_eq!(delete_of(&ops, &s.maintenance_reason(&n)), Some(52));
        assert_eq!(delete_of(&ops, &s.maintenance_until(&n)), Some(53));
        assert_eq!(set_of(&ops, &s.last_maintenance(&n)).unwrap().1, 54);
        let record = json_of(&ops, &s.last_maintenance(&n));
        assert_eq!(record["maintenance"], false);
        assert_eq!(record["reason"], serde_json::Value::Null);
    }

    #[test]
    fn pause_replaces_at_its_index_and_says_what_it_replaced() {
        let s = schema();
        let new = Pause {
            by: Some("alice".into()),
            at: Some(now()),
            reason: "upgrade".into(),
            until: None,
        };
        let (ops, prior) = pause(&s, &Snapshot::default(), &new);
        assert_eq!(prior, PriorPause::Absent);
        assert_eq!(set_of(&ops, &s.paused()).unwrap().1, 0);
        let stored = set_of(&ops, &s.paused()).unwrap().0;
        let back = parse_pause(&s.paused(), Some(stored.as_bytes()));
        assert_eq!(back, Ok(Some(new.clone())));

        let old = r#"{"reason":"earlier"}"#;
        let (ops, prior) = pause(&s, &snap(&[(&s.paused(), old, 61)]), &new);
        assert_eq!(set_of(&ops, &s.paused()).unwrap().1, 61);
        assert!(matches!(prior, PriorPause::Paused(p) if p.reason == "earlier"));

        let (ops, prior) = pause(&s, &snap(&[(&s.paused(), "True", 62)]), &new);
        assert_eq!(set_of(&ops, &s.paused()).unwrap().1, 62);
        assert!(matches!(prior, PriorPause::Unreadable(_)));
    }

    #[test]
    fn resume_deletes_the_pause_at_its_index() {
        let s = schema();
        let (ops, prior) = resume(&s, &Snapshot::default());
        assert!(ops.is_empty());
        assert_eq!(prior, PriorPause::Absent);

        let read = snap(&[(&s.paused(), r#"{"reason":"upgrade"}"#, 71)]);
        let (ops, prior) = resume(&s, &read);
        assert_eq!(
            ops,
            vec![KvOp::Delete {
                key: s.paused(),
                cas: 71
            }]
        );
        assert!(matches!(prior, PriorPause::Paused(p) if p.reason == "upgrade"));
    }
}
