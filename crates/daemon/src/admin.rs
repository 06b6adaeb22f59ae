//! Operator writes: `node register`, `ha-node register`, `node reset`,
//! `node maintenance`, `pause`, `resume`.
//!
//! Every write goes through `ConsulStore::admin_commit`, a transaction with
//! a CAS index on every key: a flag is created only where absent (CAS 0),
//! so registering never overwrites `failed`, `recovered`, `number_fails` or
//! `in_use`; a reset writes only the values it read. A conflict means
//! someone wrote meanwhile: re-read and try again, a few times.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use novaha_consul::ConsulStore;
use novaha_core::NodeName;
use novaha_core::kv::{Pause, Schema, Snapshot, format_bool, format_time, parse_pause};
use novaha_core::store::{KvOp, StateStore, StoreError};
use serde_json::json;
use tracing::info;

use crate::cli::{BmcDriver, Switch};
use crate::config::Config;
use crate::connect::{connect, hostname};

/// How many times a write is retried after a CAS conflict.
const ATTEMPTS: usize = 3;

/// The BMC settings given to `node register`.
#[derive(Debug, Default)]
pub struct BmcArgs {
    /// `config/bmc/driver`.
    pub driver: Option<BmcDriver>,
    /// `config/bmc/ip`.
    pub ip: Option<String>,
    /// `config/bmc/port`.
    pub port: Option<u16>,
    /// `config/bmc/user`.
    pub user: Option<String>,
    /// Where to read `config/bmc/password` from.
    pub password_file: Option<PathBuf>,
}

/// The key below a compute node where resets are recorded.
pub fn last_reset_key(schema: &Schema, node: &NodeName) -> String {
    format!("{}/internal/last_reset", schema.compute_node(node))
}

fn check_name(node: &str) -> anyhow::Result<NodeName> {
    if node.is_empty() || node.contains(['/', ' ']) || node.chars().any(char::is_control) {
        bail!("invalid node name {node:?}: must be a host name without '/' or spaces");
    }
    Ok(NodeName::new(node))
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

/// Reads, plans and commits, retrying on a CAS conflict.
async fn commit_planned(
    store: &ConsulStore,
    mut plan: impl FnMut(&Snapshot) -> anyhow::Result<Vec<KvOp>>,
) -> anyhow::Result<Vec<String>> {
    for attempt in 1..=ATTEMPTS {
        let snap = store.snapshot().await.context("read the state tree")?;
        let ops = plan(&snap)?;
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        match store.admin_commit(&ops).await {
            Ok(()) => return Ok(ops.iter().map(|o| o.key().to_owned()).collect()),
            Err(StoreError::Conflict { key }) if attempt < ATTEMPTS => {
                info!(key, attempt, "key changed while writing; re-reading");
            }
            Err(e) => return Err(e).context("write to consul"),
        }
    }
    bail!("gave up after {ATTEMPTS} conflicting writes")
}

fn report(written: &[String]) {
    if written.is_empty() {
        println!("nothing to write: every key already set");
    }
    for key in written {
        println!("wrote {key}");
    }
}

/// `novaha node register NODE ...`.
pub async fn register_node(cfg: &Config, node: &str, bmc: BmcArgs) -> anyhow::Result<ExitCode> {
    let node = check_name(node)?;
    let password = match &bmc.password_file {
        Some(file) => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("read the BMC password file {}", file.display()))?;
            Some(text.lines().next().unwrap_or("").to_owned())
        }
        None => None,
    };
    let (consul, schema) = connect(cfg)?;
    let store = ConsulStore::new(consul, schema.clone());
    let written = commit_planned(&store, |snap| {
        let mut ops: Vec<KvOp> = [
            create(snap, schema.failed(&node), format_bool(false)),
            create(snap, schema.recovered(&node), format_bool(false)),
            create(snap, schema.number_fails(&node), "0"),
        ]
        .into_iter()
        .flatten()
        .collect();
        let fields = [
            ("driver", bmc.driver.map(|d| d.as_str().to_owned())),
            ("ip", bmc.ip.clone()),
            ("port", bmc.port.map(|p| p.to_string())),
            ("user", bmc.user.clone()),
            ("password", password.clone()),
        ];
        for (field, value) in fields {
            if let Some(v) = value {
                ops.extend(put(snap, schema.bmc(&node, field), v.as_bytes()));
            }
        }
        Ok(ops)
    })
    .await?;
    info!(node = %node, keys = written.len(), "compute node registered");
    report(&written);
    Ok(ExitCode::SUCCESS)
}

/// `novaha ha-node register NODE`.
pub async fn register_ha_node(cfg: &Config, node: &str) -> anyhow::Result<ExitCode> {
    let node = check_name(node)?;
    let (consul, schema) = connect(cfg)?;
    let store = ConsulStore::new(consul, schema.clone());
    let general = json!({
        "registered_by": who(None),
        "registered_from": hostname(),
        "registered_at": Utc::now().to_rfc3339(),
    })
    .to_string();
    let written = commit_planned(&store, |snap| {
        Ok([
            create(snap, schema.in_use(&node), format_bool(false)),
            create(snap, schema.ha_general(&node), &general),
        ]
        .into_iter()
        .flatten()
        .collect())
    })
    .await?;
    info!(node = %node, keys = written.len(), "ha node registered");
    report(&written);
    Ok(ExitCode::SUCCESS)
}

/// Who runs an operator command: `--by`, `$SUDO_USER`, `$USER`, `$LOGNAME`,
/// else `uid <n>`.
fn who(by: Option<String>) -> String {
    by.or_else(|| {
        ["SUDO_USER", "USER", "LOGNAME"]
            .iter()
            .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
    })
    .unwrap_or_else(|| {
        std::fs::read_to_string("/proc/self/loginuid")
            .map(|u| format!("uid {}", u.trim()))
            .unwrap_or_else(|_| "unknown".to_owned())
    })
}

/// `novaha node reset NODE`: failed=False, recovered=False, recorded in
/// `internal/last_reset` with who, where from, when and the values replaced.
pub async fn reset_node(cfg: &Config, node: &str, by: Option<String>) -> anyhow::Result<ExitCode> {
    let node = check_name(node)?;
    let (consul, schema) = connect(cfg)?;
    let store = ConsulStore::new(consul, schema.clone());
    let by = who(by);
    let written = commit_planned(&store, |snap| {
        let root = format!("{}/", schema.compute_node(&node));
        if snap
            .entries
            .range(root.clone()..)
            .next()
            .is_none_or(|(k, _)| !k.starts_with(&root))
        {
            bail!(
                "node {node} is not registered under {}",
                schema.compute_node(&node)
            );
        }
        let (failed, recovered) = (schema.failed(&node), schema.recovered(&node));
        let prior = |key: &str| {
            snap.raw(key)
                .map(|r| String::from_utf8_lossy(r).into_owned())
        };
        let record = json!({
            "by": by,
            "from": hostname(),
            "at": Utc::now().to_rfc3339(),
            "previous": { "failed": prior(&failed), "recovered": prior(&recovered) },
        })
        .to_string();
        let reset_key = last_reset_key(&schema, &node);
        let cas = snap.cas_index(&reset_key);
        Ok([
            put(snap, failed.clone(), format_bool(false).as_bytes()),
            put(snap, recovered.clone(), format_bool(false).as_bytes()),
            Some(KvOp::set(reset_key, record, cas)),
        ]
        .into_iter()
        .flatten()
        .collect())
    })
    .await?;
    info!(node = %node, by = %by, "node reset by an administrator: failed=False recovered=False");
    report(&written);
    Ok(ExitCode::SUCCESS)
}

/// A delete at the CAS index it was read at, if the key exists.
fn remove(snap: &Snapshot, key: String) -> Option<KvOp> {
    snap.entries.get(&key).map(|e| KvOp::Delete {
        cas: e.modify_index,
        key,
    })
}

/// `now + for_`, or an error naming a duration too long to add.
fn end_time(now: DateTime<Utc>, for_: Option<Duration>) -> anyhow::Result<Option<DateTime<Utc>>> {
    for_.map(|d| {
        chrono::TimeDelta::from_std(d)
            .ok()
            .and_then(|d| now.checked_add_signed(d))
            .with_context(|| format!("--for {} is too long", humantime::format_duration(d)))
    })
    .transpose()
}

fn check_reason(reason: &str) -> anyhow::Result<String> {
    let reason = reason.trim();
    if reason.is_empty() {
        bail!("--reason must not be empty: say why, it is shown to every operator");
    }
    Ok(reason.to_owned())
}

/// `novaha pause --reason TEXT [--for DURATION]`: writes
/// `<prefix>/config/paused`; a pause already there is replaced (its CAS
/// index is checked, so a concurrent change is re-read, never lost).
pub async fn pause(
    cfg: &Config,
    reason: &str,
    for_: Option<Duration>,
    by: Option<String>,
) -> anyhow::Result<ExitCode> {
    let reason = check_reason(reason)?;
    let (consul, schema) = connect(cfg)?;
    let store = ConsulStore::new(consul, schema.clone());
    let now = Utc::now();
    let pause = Pause {
        by: Some(who(by)),
        at: Some(now),
        reason,
        until: end_time(now, for_)?,
    };
    let value = serde_json::to_vec(&pause).context("encode the pause")?;
    let key = schema.paused();
    let mut previous = None;
    let written = commit_planned(&store, |snap| {
        previous = snap.raw(&key).map(|r| parse_pause(&key, Some(r)));
        Ok(vec![KvOp::set(
            key.clone(),
            value.clone(),
            snap.cas_index(&key),
        )])
    })
    .await?;
    match previous {
        Some(Ok(Some(p))) => println!("replaced the pause {}", p),
        Some(Err(bad)) => println!("replaced an unreadable pause value: {}", bad.reason),
        _ => {}
    }
    info!(by = pause.by.as_deref().unwrap_or(""), reason = %pause.reason, until = ?pause.until.map(format_time), "cluster paused by an operator");
    report(&written);
    println!(
        "cluster paused: {}; no fence, force-down or evacuation starts until then (detection goes on)",
        pause
    );
    Ok(ExitCode::SUCCESS)
}

/// `novaha resume`: deletes `<prefix>/config/paused` (at the index it was
/// read at). Not paused: says so and succeeds.
pub async fn resume(cfg: &Config, by: Option<String>) -> anyhow::Result<ExitCode> {
    let (consul, schema) = connect(cfg)?;
    let store = ConsulStore::new(consul, schema.clone());
    let key = schema.paused();
    let mut previous = None;
    let written = commit_planned(&store, |snap| {
        previous = snap.raw(&key).map(|r| parse_pause(&key, Some(r)));
        Ok(remove(snap, key.clone()).into_iter().collect())
    })
    .await?;
    let by = who(by);
    match previous {
        None => {
            println!("the cluster is not paused ({key} is absent): nothing to do");
            return Ok(ExitCode::SUCCESS);
        }
        Some(Ok(Some(p))) => println!("ended the pause {}", p),
        Some(Ok(None)) => {}
        Some(Err(bad)) => println!("removed an unreadable pause value: {}", bad.reason),
    }
    info!(by = %by, "cluster resumed by an operator");
    for key in &written {
        println!("deleted {key}");
    }
    println!("cluster resumed: recovery acts again");
    Ok(ExitCode::SUCCESS)
}

/// `novaha node maintenance NODE on|off --reason TEXT [--for DURATION]`.
/// On: `config/maintenance=True`, `config/maintenance_reason`, and
/// `config/maintenance_until` (deleted when no `--for`). Off:
/// `config/maintenance=False`, reason and end deleted. Either way the
/// change is recorded in `internal/last_maintenance` with who, where from
/// and when. The node must be registered (a typo must not create a node).
pub async fn maintenance(
    cfg: &Config,
    node: &str,
    state: Switch,
    reason: Option<&str>,
    for_: Option<Duration>,
    by: Option<String>,
) -> anyhow::Result<ExitCode> {
    let node = check_name(node)?;
    let reason = match (state, reason) {
        (Switch::On, None) => bail!("--reason is required to put a node in maintenance"),
        (_, Some(r)) => Some(check_reason(r)?),
        (Switch::Off, None) => None,
    };
    if state == Switch::Off && for_.is_some() {
        bail!("--for only applies to `on`");
    }
    let (consul, schema) = connect(cfg)?;
    let store = ConsulStore::new(consul, schema.clone());
    let by = who(by);
    let now = Utc::now();
    let until = end_time(now, for_)?;
    let written = commit_planned(&store, |snap| {
        let root = format!("{}/", schema.compute_node(&node));
        if snap
            .entries
            .range(root.clone()..)
            .next()
            .is_none_or(|(k, _)| !k.starts_with(&root))
        {
            bail!(
                "node {node} is not registered under {} (novaha node register {node})",
                schema.compute_node(&node)
            );
        }
        let record = json!({
            "by": by,
            "from": hostname(),
            "at": format_time(now),
            "maintenance": state == Switch::On,
            "reason": reason,
            "until": until.map(format_time),
        })
        .to_string();
        let last = schema.last_maintenance(&node);
        let mut ops: Vec<KvOp> = Vec::new();
        match state {
            Switch::On => {
                ops.extend(put(
                    snap,
                    schema.maintenance(&node),
                    format_bool(true).as_bytes(),
                ));
                let r = reason.as_deref().unwrap_or_default();
                ops.extend(put(snap, schema.maintenance_reason(&node), r.as_bytes()));
                match until {
                    Some(u) => ops.extend(put(
                        snap,
                        schema.maintenance_until(&node),
                        format_time(u).as_bytes(),
                    )),
                    None => ops.extend(remove(snap, schema.maintenance_until(&node))),
                }
            }
            Switch::Off => {
                ops.extend(put(
                    snap,
                    schema.maintenance(&node),
                    format_bool(false).as_bytes(),
                ));
                ops.extend(remove(snap, schema.maintenance_reason(&node)));
                ops.extend(remove(snap, schema.maintenance_until(&node)));
            }
        }
        ops.push(KvOp::set(last.clone(), record, snap.cas_index(&last)));
        Ok(ops)
    })
    .await?;
    match state {
        Switch::On => {
            info!(node = %node, by = %by, reason = reason.as_deref().unwrap_or(""), until = ?until.map(format_time), "node put in maintenance by an operator");
        }
        Switch::Off => {
            info!(node = %node, by = %by, "node taken out of maintenance by an operator")
        }
    }
    report(&written);
    match (state, until) {
        (Switch::On, Some(u)) => println!(
            "{node} in maintenance until {}: novaha will not fence, force down or evacuate it",
            format_time(u)
        ),
        (Switch::On, None) => println!(
            "{node} in maintenance until `novaha node maintenance {node} off`: novaha will not fence, force down or evacuate it"
        ),
        (Switch::Off, _) => {
            println!("{node} out of maintenance: novaha watches and recovers it again")
        }
    }
    Ok(ExitCode::SUCCESS)
}
