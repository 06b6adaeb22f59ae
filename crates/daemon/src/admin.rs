//! Operator writes: `node register`, `ha-node register`, `node reset`,
//! `node maintenance`, `pause`, `resume`.
//!
//! What each writes is planned by `novaha_core::admin` from one snapshot:
//! CAS ops that create flags only where absent and replace values at the
//! index they were read at. This module reads the inputs (password file,
//! who, this host, the clock), commits the plan through
//! `ConsulStore::admin_commit` and prints what it wrote. A conflict means
//! someone wrote meanwhile: re-read, plan again, a few times.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::Utc;
use novaha_consul::ConsulStore;
use novaha_core::admin::{self as plan, BmcFields, Maintenance, PriorPause, Stamp};
use novaha_core::kv::{Pause, Snapshot, format_time};
use novaha_core::store::{KvOp, StateStore, StoreError};
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

/// Who ran the command, from this host, now.
fn stamp(by: Option<String>) -> Stamp {
    Stamp {
        by: who(by),
        from: hostname(),
        at: Utc::now(),
    }
}

/// `novaha node register NODE ...`.
pub async fn register_node(cfg: &Config, node: &str, bmc: BmcArgs) -> anyhow::Result<ExitCode> {
    let node = plan::check_name(node)?;
    let password = match &bmc.password_file {
        Some(file) => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("read the BMC password file {}", file.display()))?;
            Some(text.lines().next().unwrap_or("").to_owned())
        }
        None => None,
    };
    let fields = BmcFields {
        driver: bmc.driver.map(|d| d.as_str().to_owned()),
        ip: bmc.ip,
        port: bmc.port,
        user: bmc.user,
        password,
    };
    let (consul, schema) = connect(cfg)?;
    let store = ConsulStore::new(consul, schema.clone());
    let written = commit_planned(&store, |snap| {
        Ok(plan::register_node(&schema, snap, &node, &fields))
    })
    .await?;
    info!(node = %node, keys = written.len(), "compute node registered");
    report(&written);
    Ok(ExitCode::SUCCESS)
}

/// `novaha ha-node register NODE`.
pub async fn register_ha_node(cfg: &Config, node: &str) -> anyhow::Result<ExitCode> {
    let node = plan::check_name(node)?;
    let (consul, schema) = connect(cfg)?;
    let store = ConsulStore::new(consul, schema.clone());
    let stamp = stamp(None);
    let written = commit_planned(&store, |snap| {
        Ok(plan::register_ha_node(&schema, snap, &node, &stamp))
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
    let node = plan::check_name(node)?;
    let (consul, schema) = connect(cfg)?;
    let store = ConsulStore::new(consul, schema.clone());
    let by = who(by);
    let written = commit_planned(&store, |snap| {
        let stamp = stamp(Some(by.clone()));
        Ok(plan::reset_node(&schema, snap, &node, &stamp)?)
    })
    .await?;
    info!(node = %node, by = %by, "node reset by an administrator: failed=False recovered=False");
    report(&written);
    Ok(ExitCode::SUCCESS)
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
    let reason = plan::check_reason(reason)?;
    let (consul, schema) = connect(cfg)?;
    let store = ConsulStore::new(consul, schema.clone());
    let now = Utc::now();
    let pause = Pause {
        by: Some(who(by)),
        at: Some(now),
        reason,
        until: plan::end_time(now, for_)?,
    };
    let mut previous = PriorPause::Absent;
    let written = commit_planned(&store, |snap| {
        let ops;
        (ops, previous) = plan::pause(&schema, snap, &pause);
        Ok(ops)
    })
    .await?;
    match previous {
        PriorPause::Paused(p) => println!("replaced the pause {}", p),
        PriorPause::Unreadable(bad) => {
            println!("replaced an unreadable pause value: {}", bad.reason)
        }
        PriorPause::Absent => {}
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
    let mut previous = PriorPause::Absent;
    let written = commit_planned(&store, |snap| {
        let ops;
        (ops, previous) = plan::resume(&schema, snap);
        Ok(ops)
    })
    .await?;
    let by = who(by);
    match previous {
        PriorPause::Absent => {
            let key = schema.paused();
            println!("the cluster is not paused ({key} is absent): nothing to do");
            return Ok(ExitCode::SUCCESS);
        }
        PriorPause::Paused(p) => println!("ended the pause {}", p),
        PriorPause::Unreadable(bad) => {
            println!("removed an unreadable pause value: {}", bad.reason)
        }
    }
    info!(by = %by, "cluster resumed by an operator");
    for key in &written {
        println!("deleted {key}");
    }
    println!("cluster resumed: recovery acts again");
    Ok(ExitCode::SUCCESS)
}

/// `novaha node maintenance NODE on|off --reason TEXT [--for DURATION]`:
/// the change `novaha_core::admin::maintenance` plans, recorded with who,
/// where from and when. The node must be registered.
pub async fn maintenance(
    cfg: &Config,
    node: &str,
    state: Switch,
    reason: Option<&str>,
    for_: Option<Duration>,
    by: Option<String>,
) -> anyhow::Result<ExitCode> {
    let node = plan::check_name(node)?;
    let stamp = stamp(by);
    let change = Maintenance::new(state == Switch::On, reason, for_, stamp.at)?;
    let (consul, schema) = connect(cfg)?;
    let store = ConsulStore::new(consul, schema.clone());
    let written = commit_planned(&store, |snap| {
        Ok(plan::maintenance(&schema, snap, &node, &change, &stamp)?)
    })
    .await?;
    match &change {
        Maintenance::On { reason, until } => {
            info!(node = %node, by = %stamp.by, reason = %reason, until = ?until.map(format_time), "node put in maintenance by an operator");
        }
        Maintenance::Off { .. } => {
            info!(node = %node, by = %stamp.by, "node taken out of maintenance by an operator")
        }
    }
    report(&written);
    println!("{}", change.outcome(&node));
    Ok(ExitCode::SUCCESS)
}
