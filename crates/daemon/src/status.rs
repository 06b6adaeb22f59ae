//! `novaha status [--json]`: reads the tree, the lock and the leader's
//! reports with one snapshot and prints the document novaha-report builds
//! (docs/cli.md). The exit code says whether a human is needed.

use std::process::ExitCode;

use anyhow::Context;
use chrono::Utc;
use novaha_consul::{ConsulStore, Election};
use novaha_core::kv::{ClusterState, InvalidValue, Snapshot};
use novaha_core::store::StateStore;
use novaha_report::status::{self as report, Extras, Leader, document, use_colour};
use serde_json::Value;

use crate::config::Config;
use crate::connect::connect;

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
        Ok(l) => l.map(|l| Ok(Leader::new(l.id, l.host, l.pid, l.version))),
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
    let cycle = last_cycle(&schema, &snap);
    // The leader's last failures-tolerated figure (novaha_evacuate::capacity),
    // from its cycle record, once it has read one.
    let tolerated = cycle
        .as_ref()
        .map_or(Value::Null, |c| c["failures_tolerated"].clone());
    let extras = Extras {
        leader,
        last_cycle: cycle,
        // The leader's last fence-path health report (novaha_fence::health),
        // once a leader has published one.
        fence_health: novaha_fence::health::status_json(&schema, &snap),
    };
    let mut doc = document(&state, extras, schema.prefix(), Utc::now());
    doc.failures_tolerated = tolerated;
    if as_json {
        println!(
            "{}",
            novaha_report::json_text(&doc).context("encode the status as JSON")?
        );
    } else {
        use std::io::IsTerminal;
        let colour = use_colour(
            std::io::stdout().is_terminal(),
            std::env::var_os("NO_COLOR").as_deref(),
        );
        print!("{}", report::table(&doc, colour));
        print!("{}", novaha_fence::health::status_text(&doc.fence_health));
        print!(
            "{}",
            report::tolerated_text(&doc.failures_tolerated, colour)
        );
    }
    Ok(report::exit_code(&doc))
}

/// The leader's last cycle record, if it parses.
fn last_cycle(schema: &novaha_core::kv::Schema, snap: &Snapshot) -> Option<Value> {
    snap.raw(&schema.internal(crate::leader::LAST_CYCLE))
        .and_then(|r| serde_json::from_slice(r).ok())
}
