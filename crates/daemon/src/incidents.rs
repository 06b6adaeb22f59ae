//! `novaha incidents [NODE]` and `novaha incident show ID`: read the
//! history of recoveries with one snapshot and print what novaha-report
//! renders (docs/cli.md). Read-only.

use std::process::ExitCode;

use anyhow::{Context, bail};
use novaha_consul::ConsulStore;
use novaha_core::kv::{StoredIncident, incidents};
use novaha_core::store::StateStore;
use novaha_report::incidents::{IncidentList, detail, detail_text, list_text, summary};

use crate::config::Config;
use crate::connect::connect;

async fn read(cfg: &Config) -> anyhow::Result<Vec<StoredIncident>> {
    let (consul, schema) = connect(cfg)?;
    let store = ConsulStore::new(consul, schema.clone());
    let snap = store
        .snapshot()
        .await
        .with_context(|| format!("read the state tree {} from {}", schema, cfg.consul.address))?;
    Ok(incidents(&schema, &snap))
}

/// `novaha incidents [NODE] [--json]`.
pub async fn list(cfg: &Config, node: Option<&str>, as_json: bool) -> anyhow::Result<ExitCode> {
    let all = read(cfg).await?;
    let rows: Vec<_> = all
        .iter()
        .filter(|i| node.is_none_or(|n| i.node.as_str() == n))
        .map(summary)
        .collect();
    if as_json {
        let doc = IncidentList::new(rows);
        println!(
            "{}",
            novaha_report::json_text(&doc).context("encode as JSON")?
        );
    } else {
        print!("{}", list_text(&rows));
    }
    Ok(ExitCode::SUCCESS)
}

/// `novaha incident show ID [--json]`. An unknown id is an error that says
/// how to list them.
pub async fn show(cfg: &Config, id: &str, as_json: bool) -> anyhow::Result<ExitCode> {
    let all = read(cfg).await?;
    let Some(found) = all.iter().find(|i| i.id == id) else {
        bail!(
            "no incident {id:?} under {} (novaha incidents lists them)",
            cfg.consul.prefix
        );
    };
    let doc = detail(found);
    if as_json {
        println!(
            "{}",
            novaha_report::json_text(&doc).context("encode as JSON")?
        );
    } else {
        print!("{}", detail_text(&doc));
    }
    Ok(ExitCode::SUCCESS)
}
