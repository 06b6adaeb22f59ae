//! The control API under `/sim/`: kill and revive hosts, read the call
//! log, add hosts and servers, inject faults, expire tokens, move the
//! clock, change timers. Never authenticated, never fault-injected, never
//! recorded in the call log.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::faults::{FaultKind, FaultRule};
use crate::model::{Microversion, SimError, World};
use crate::{Shared, json_response};

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/sim/hosts", get(list_hosts).post(add_host))
        .route("/sim/hosts/{host}/kill", post(kill))
        .route("/sim/hosts/{host}/revive", post(revive))
        .route("/sim/calls", get(calls).delete(clear_calls))
        .route("/sim/servers", get(servers).post(add_server))
        .route("/sim/migrations", get(migrations))
        .route("/sim/identity", get(identity))
        .route(
            "/sim/faults",
            get(list_faults).post(post_fault).delete(clear_faults),
        )
        .route("/sim/faults/{id}", delete(delete_fault))
        .route("/sim/evacuations/fail", post(fail_evacuations))
        .route("/sim/tokens/expire", post(expire_tokens))
        .route("/sim/clock/advance", post(advance))
        .route("/sim/settings", put(settings))
}

fn err(e: &SimError) -> Response {
    let status = match e {
        SimError::UnknownHost(_) | SimError::UnknownServer(_) => StatusCode::NOT_FOUND,
        _ => StatusCode::BAD_REQUEST,
    };
    json_response(status, &json!({"error": e.to_string()}))
}

fn body<T: for<'de> Deserialize<'de>>(b: &Bytes) -> Result<T, Response> {
    let b: &[u8] = if b.is_empty() { b"{}" } else { b };
    serde_json::from_slice(b).map_err(|e| {
        json_response(
            StatusCode::BAD_REQUEST,
            &json!({"error": format!("sim control: bad request body: {e}")}),
        )
    })
}

/// Adds a rule with a fresh id; returns the id.
pub(crate) fn add_fault(w: &mut World, mut rule: FaultRule) -> u64 {
    rule.id = w.next_fault_id;
    w.next_fault_id += 1;
    if let Some(m) = &mut rule.method {
        *m = m.to_uppercase();
    }
    let id = rule.id;
    w.faults.push(rule);
    id
}

/// The fault a request suffers, if any: the first matching rule whose rate
/// draw hits; a counted rule is consumed and removed when exhausted.
pub(crate) fn draw_fault(w: &mut World, method: &str, path: &str) -> Option<FaultKind> {
    let i = w.faults.iter().position(|r| r.matches(method, path))?;
    let rate = w.faults[i].rate;
    if rate < 1.0 && w.rng.next_f64() >= rate {
        return None;
    }
    let kind = w.faults[i].kind.clone();
    if let Some(c) = &mut w.faults[i].count {
        *c = c.saturating_sub(1);
        if *c == 0 {
            w.faults.remove(i);
        }
    }
    Some(kind)
}

async fn list_hosts(State(sh): State<Arc<Shared>>) -> Response {
    let w = sh.lock();
    let hosts: Vec<Value> = w
        .services
        .iter()
        .filter(|s| s.binary == "nova-compute")
        .map(|s| {
            json!({
                "host": s.host, "ha": s.ha, "state": w.state(s),
                "status": if s.disabled { "disabled" } else { "enabled" },
                "disabled_reason": s.disabled_reason, "forced_down": s.forced_down,
                "killed": s.killed_at.is_some(),
                "servers": w.servers.iter().filter(|x| x.host == s.host).count(),
                "service_id": s.uuid.to_string(),
            })
        })
        .collect();
    json_response(StatusCode::OK, &json!({"hosts": hosts}))
}

#[derive(Deserialize)]
struct NewHost {
    name: String,
    #[serde(default)]
    ha: bool,
}

async fn add_host(State(sh): State<Arc<Shared>>, b: Bytes) -> Response {
    let h: NewHost = match body(&b) {
        Ok(h) => h,
        Err(r) => return r,
    };
    match sh.lock().add_host(&h.name, h.ha) {
        Ok(()) => StatusCode::CREATED.into_response(),
        Err(e) => err(&e),
    }
}

async fn kill(State(sh): State<Arc<Shared>>, Path(host): Path<String>) -> Response {
    match sh.lock().kill(&host) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => err(&e),
    }
}

async fn revive(State(sh): State<Arc<Shared>>, Path(host): Path<String>) -> Response {
    match sh.lock().revive(&host) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => err(&e),
    }
}

async fn calls(State(sh): State<Arc<Shared>>) -> Response {
    let w = sh.lock();
    json_response(StatusCode::OK, &json!(w.calls))
}

async fn clear_calls(State(sh): State<Arc<Shared>>) -> Response {
    sh.lock().calls.clear();
    StatusCode::NO_CONTENT.into_response()
}

async fn servers(
    State(sh): State<Arc<Shared>>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let w = sh.lock();
    let list: Vec<&crate::model::Server> = w
        .servers
        .iter()
        .filter(|s| q.get("host").is_none_or(|h| &s.host == h))
        .collect();
    json_response(StatusCode::OK, &json!({"servers": list}))
}

#[derive(Deserialize)]
struct NewServer {
    name: String,
    host: String,
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    project_id: Option<String>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

async fn add_server(State(sh): State<Arc<Shared>>, b: Bytes) -> Response {
    let n: NewServer = match body(&b) {
        Ok(n) => n,
        Err(r) => return r,
    };
    let mut w = sh.lock();
    if w.compute(&n.host).is_none() {
        return err(&SimError::UnknownHost(n.host));
    }
    let owner = w
        .users
        .iter()
        .find(|u| u.name.starts_with("user-"))
        .cloned();
    let user = n
        .user_id
        .or_else(|| owner.as_ref().map(|u| u.id.clone()))
        .unwrap_or_default();
    let project = n
        .project_id
        .or_else(|| w.user(&user).and_then(|u| u.default_project_id.clone()))
        .unwrap_or_default();
    let id = w.add_server(&n.name, &n.host, &user, &project, n.metadata);
    json_response(StatusCode::CREATED, &json!({"id": id.to_string()}))
}

async fn migrations(State(sh): State<Arc<Shared>>) -> Response {
    let w = sh.lock();
    json_response(StatusCode::OK, &json!({"migrations": w.migrations}))
}

async fn identity(State(sh): State<Arc<Shared>>) -> Response {
    let w = sh.lock();
    json_response(
        StatusCode::OK,
        &json!({"users": w.users, "projects": w.projects, "roles": w.roles,
                "role_assignments": w.assignments}),
    )
}

async fn list_faults(State(sh): State<Arc<Shared>>) -> Response {
    let w = sh.lock();
    json_response(StatusCode::OK, &json!({"faults": w.faults}))
}

async fn post_fault(State(sh): State<Arc<Shared>>, b: Bytes) -> Response {
    let rule: FaultRule = match body(&b) {
        Ok(r) => r,
        Err(r) => return r,
    };
    if !(0.0..=1.0).contains(&rule.rate) {
        return err(&SimError::BadRequest(
            "fault rate must be within [0, 1]".to_owned(),
        ));
    }
    let id = add_fault(&mut sh.lock(), rule);
    json_response(StatusCode::CREATED, &json!({"id": id}))
}

async fn clear_faults(State(sh): State<Arc<Shared>>) -> Response {
    sh.lock().faults.clear();
    StatusCode::NO_CONTENT.into_response()
}

async fn delete_fault(State(sh): State<Arc<Shared>>, Path(id): Path<u64>) -> Response {
    let mut w = sh.lock();
    let before = w.faults.len();
    w.faults.retain(|f| f.id != id);
    if w.faults.len() == before {
        return err(&SimError::BadRequest(format!("no fault rule {id}")));
    }
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Deserialize)]
struct Count {
    count: u32,
}

async fn fail_evacuations(State(sh): State<Arc<Shared>>, b: Bytes) -> Response {
    let c: Count = match body(&b) {
        Ok(c) => c,
        Err(r) => return r,
    };
    sh.lock().fail_evacuations = c.count;
    StatusCode::NO_CONTENT.into_response()
}

async fn expire_tokens(State(sh): State<Arc<Shared>>) -> Response {
    sh.lock().expire_tokens();
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Deserialize)]
struct Seconds {
    seconds: f64,
}

fn secs(s: f64) -> Result<Duration, Response> {
    Duration::try_from_secs_f64(s).map_err(|_| {
        err(&SimError::BadRequest(format!(
            "seconds must be a non-negative number, got {s}"
        )))
    })
}

async fn advance(State(sh): State<Arc<Shared>>, b: Bytes) -> Response {
    let s: Seconds = match body(&b) {
        Ok(s) => s,
        Err(r) => return r,
    };
    match secs(s.seconds) {
        Ok(d) => {
            sh.lock().advance(d);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(r) => r,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    service_down_time: Option<f64>,
    report_interval: Option<f64>,
    evacuate_delay: Option<f64>,
    token_ttl: Option<f64>,
    max_version: Option<String>,
    max_limit: Option<usize>,
}

async fn settings(State(sh): State<Arc<Shared>>, b: Bytes) -> Response {
    let s: Settings = match body(&b) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let max_version = match s.max_version.as_deref().map(Microversion::parse) {
        Some(None) => {
            return err(&SimError::BadRequest(
                "max_version must look like 2.53".to_owned(),
            ));
        }
        Some(Some(v)) if v < Microversion::MIN => {
            return err(&SimError::BadRequest(
                "max_version must be at least 2.1".to_owned(),
            ));
        }
        Some(v) => v,
        None => None,
    };
    let sdt = match s.service_down_time.map(secs).transpose() {
        Ok(v) => v,
        Err(r) => return r,
    };
    let report = match s.report_interval.map(secs).transpose() {
        Ok(v) => v,
        Err(r) => return r,
    };
    let delay = match s.evacuate_delay.map(secs).transpose() {
        Ok(v) => v,
        Err(r) => return r,
    };
    let ttl = match s.token_ttl.map(secs).transpose() {
        Ok(v) => v,
        Err(r) => return r,
    };
    let mut w = sh.lock();
    if let Some(v) = max_version {
        w.rt.max_version = v;
    }
    if let Some(d) = sdt {
        w.rt.service_down_time = d;
    }
    if let Some(d) = report {
        w.rt.report_interval = d;
    }
    if let Some(d) = delay {
        w.rt.evacuate_delay = d;
    }
    if let Some(d) = ttl {
        w.rt.token_ttl = d;
    }
    if let Some(l) = s.max_limit {
        w.rt.max_limit = l.max(1);
    }
    StatusCode::NO_CONTENT.into_response()
}
