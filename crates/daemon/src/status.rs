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
            (
                n.name.to_string(),
                json!({
                    "failed": field(&n.failed),
                    "recovered": field(&n.recovered),
                    "number_fails": field(&n.number_fails),
                    "maintenance": field(&n.maintenance),
                    "phase": phase,
                    "ha_node": ha_node,
                    "last_error": last_error,
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

/// Renders the document as text for people.
pub fn text(doc: &Value) -> String {
    let mut out = String::new();
    let leader = &doc["leader"];
    match leader {
        Value::Null => out.push_str("leader: none\n"),
        Value::Object(o) if o.contains_key("invalid") => {
            out.push_str(&format!("leader: {}\n", show(leader)));
        }
        l => out.push_str(&format!(
            "leader: id={} host={} pid={} version={}\n",
            show(&l["id"]),
            show(&l["host"]),
            show(&l["pid"]),
            show(&l["version"])
        )),
    }
    let empty = serde_json::Map::new();
    let compute = doc["compute_nodes"].as_object().unwrap_or(&empty);
    out.push_str(&format!("compute nodes: {}\n", compute.len()));
    if !compute.is_empty() {
        out.push_str(&format!(
            "  {:<24} {:<8} {:<10} {:<13} {:<12} {}\n",
            "NODE", "FAILED", "RECOVERED", "NUMBER_FAILS", "PHASE", "HA_NODE"
        ));
    }
    for (name, n) in compute {
        out.push_str(&format!(
            "  {:<24} {:<8} {:<10} {:<13} {:<12} {}\n",
            name,
            show(&n["failed"]),
            show(&n["recovered"]),
            show(&n["number_fails"]),
            show(&n["phase"]),
            show(&n["ha_node"])
        ));
        if !n["last_error"].is_null() {
            out.push_str(&format!("    last error: {}\n", show(&n["last_error"])));
        }
        for bad in n["invalid"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "    invalid: {} = {} ({})\n",
                show(&bad["key"]),
                bad["raw"],
                show(&bad["reason"])
            ));
        }
    }
    let ha = doc["ha_nodes"].as_object().unwrap_or(&empty);
    out.push_str(&format!("ha nodes: {}\n", ha.len()));
    if !ha.is_empty() {
        out.push_str(&format!("  {:<24} {:<8} {}\n", "NODE", "IN_USE", "SERVING"));
    }
    for (name, h) in ha {
        out.push_str(&format!(
            "  {:<24} {:<8} {}\n",
            name,
            show(&h["in_use"]),
            show(&h["serving"])
        ));
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
    let doc = document(&state, leader, schema.prefix());
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&doc).context("encode the status as JSON")?
        );
    } else {
        print!("{}", text(&doc));
    }
    Ok(ExitCode::SUCCESS)
}
