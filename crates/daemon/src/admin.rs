//! Operator writes: `node register`, `ha-node register`, `node reset`.
//!
//! Every write goes through `ConsulStore::admin_commit`, a transaction with
//! a CAS index on every key: a flag is created only where absent (CAS 0),
//! so registering never overwrites `failed`, `recovered`, `number_fails` or
//! `in_use`; a reset writes only the values it read. A conflict means
//! someone wrote meanwhile: re-read and try again, a few times.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use chrono::Utc;
use novaha_consul::ConsulStore;
use novaha_core::NodeName;
use novaha_core::kv::{Schema, Snapshot, format_bool};
use novaha_core::store::{KvOp, StateStore, StoreError};
use serde_json::json;
use tracing::info;

use crate::cli::BmcDriver;
use crate::config::Config;
use crate::run::{connect, hostname};

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
