//! Placement under `/placement`: the version document, one resource
//! provider per compute host (named after it, with its hypervisor's uuid,
//! as Nova registers them), inventories (VCPU, MEMORY_MB, DISK_GB with
//! reserved and allocation ratio; writable with the provider generation),
//! usages and allocations computed from the servers on the host and their
//! flavors (an evacuation in flight is allocated on its target), with
//! Placement's error body `{"errors": [{"status", "title", "detail"}]}`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, put};
use serde_json::{Map, Value, json};

use crate::keystone::{authenticate, is_admin};
use crate::model::{Inventory, RESOURCE_CLASSES, Service, World};
use crate::{Shared, json_response, parse_body};

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/placement", get(versions))
        .route("/placement/", get(versions))
        .route("/placement/resource_providers", get(list_providers))
        .route("/placement/resource_providers/{uuid}", get(show_provider))
        .route(
            "/placement/resource_providers/{uuid}/inventories",
            get(inventories),
        )
        .route(
            "/placement/resource_providers/{uuid}/inventories/{class}",
            put(set_inventory),
        )
        .route("/placement/resource_providers/{uuid}/usages", get(usages))
        .route(
            "/placement/resource_providers/{uuid}/allocations",
            get(allocations),
        )
}

/// Placement's error body.
pub(crate) fn error(status: StatusCode, detail: &str) -> Response {
    json_response(
        status,
        &json!({"errors": [{"status": status.as_u16(),
                            "title": status.canonical_reason().unwrap_or("Error"),
                            "detail": detail, "request_id": "req-sim"}]}),
    )
}

async fn versions() -> Response {
    json_response(
        StatusCode::OK,
        &json!({"versions": [{"id": "v1.0", "max_version": "1.39", "min_version": "1.0",
                              "status": "CURRENT", "links": []}]}),
    )
}

/// Locks the world and checks an admin token (Placement is admin-only).
fn enter<'a>(
    sh: &'a Shared,
    headers: &HeaderMap,
) -> Result<std::sync::MutexGuard<'a, World>, Response> {
    let w = sh.lock();
    let admin = match authenticate(&w, headers) {
        Ok(t) => is_admin(&w, t),
        Err(_) => {
            return Err(error(
                StatusCode::UNAUTHORIZED,
                "The request you have made requires authentication.",
            ));
        }
    };
    if !admin {
        return Err(error(
            StatusCode::FORBIDDEN,
            "Policy does not allow placement:resource_providers:list to be performed.",
        ));
    }
    Ok(w)
}

fn provider<'w>(w: &'w World, uuid: &str) -> Result<&'w Service, Response> {
    w.services
        .iter()
        .find(|s| s.binary == "nova-compute" && s.hypervisor_uuid.to_string() == uuid)
        .ok_or_else(|| {
            error(
                StatusCode::NOT_FOUND,
                &format!("No resource provider with uuid {uuid} found"),
            )
        })
}

fn generation(w: &World, host: &str) -> u64 {
    w.generations.get(host).copied().unwrap_or(1)
}

fn provider_value(sh: &Shared, w: &World, s: &Service) -> Value {
    let uuid = s.hypervisor_uuid.to_string();
    json!({
        "uuid": uuid, "name": s.host, "generation": generation(w, &s.host),
        "parent_provider_uuid": null, "root_provider_uuid": uuid,
        "links": [{"rel": "self",
                   "href": format!("{}/placement/resource_providers/{uuid}", sh.base)}],
    })
}

async fn list_providers(
    State(sh): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let w = match enter(&sh, &headers) {
        Ok(w) => w,
        Err(r) => return r,
    };
    let list: Vec<Value> = w
        .services
        .iter()
        .filter(|s| s.binary == "nova-compute")
        .filter(|s| q.get("name").is_none_or(|n| &s.host == n))
        .filter(|s| {
            q.get("uuid")
                .is_none_or(|u| &s.hypervisor_uuid.to_string() == u)
        })
        .map(|s| provider_value(&sh, &w, s))
        .collect();
    json_response(StatusCode::OK, &json!({"resource_providers": list}))
}

async fn show_provider(
    State(sh): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(uuid): Path<String>,
) -> Response {
    let w = match enter(&sh, &headers) {
        Ok(w) => w,
        Err(r) => return r,
    };
    match provider(&w, &uuid) {
        Ok(s) => json_response(StatusCode::OK, &provider_value(&sh, &w, s)),
        Err(r) => r,
    }
}

fn inventory_value(i: &Inventory) -> Value {
    json!({"total": i.total, "reserved": i.reserved, "min_unit": 1, "max_unit": i.max_unit,
           "step_size": 1, "allocation_ratio": i.allocation_ratio})
}

async fn inventories(
    State(sh): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(uuid): Path<String>,
) -> Response {
    let w = match enter(&sh, &headers) {
        Ok(w) => w,
        Err(r) => return r,
    };
    let s = match provider(&w, &uuid) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let inv = w.inventory(&s.host);
    let map: Map<String, Value> = RESOURCE_CLASSES
        .iter()
        .zip(inv.iter())
        .map(|(c, i)| ((*c).to_owned(), inventory_value(i)))
        .collect();
    json_response(
        StatusCode::OK,
        &json!({"resource_provider_generation": generation(&w, &s.host), "inventories": map}),
    )
}

async fn set_inventory(
    State(sh): State<Arc<Shared>>,
    headers: HeaderMap,
    Path((uuid, class)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let mut w = match enter(&sh, &headers) {
        Ok(w) => w,
        Err(r) => return r,
    };
    let host = match provider(&w, &uuid) {
        Ok(s) => s.host.clone(),
        Err(r) => return r,
    };
    let Some(k) = RESOURCE_CLASSES.iter().position(|c| *c == class) else {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("No such resource class {class}."),
        );
    };
    let body = match parse_body(&body) {
        Ok(Some(Value::Object(m))) => m,
        Ok(_) => return error(StatusCode::BAD_REQUEST, "JSON body required"),
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    let num = |k: &str| body.get(k).and_then(Value::as_u64);
    let Some(gen_in) = num("resource_provider_generation") else {
        return error(
            StatusCode::BAD_REQUEST,
            "'resource_provider_generation' is a required property",
        );
    };
    if gen_in != generation(&w, &host) {
        return error(
            StatusCode::CONFLICT,
            "resource provider generation conflict",
        );
    }
    let Some(total) = num("total") else {
        return error(StatusCode::BAD_REQUEST, "'total' is a required property");
    };
    let mut inv = w.inventory(&host);
    let i = &mut inv[k];
    i.total = total;
    i.reserved = num("reserved").unwrap_or(0);
    i.max_unit = num("max_unit").unwrap_or(total);
    i.allocation_ratio = body
        .get("allocation_ratio")
        .and_then(Value::as_f64)
        .unwrap_or(1.0);
    if i.reserved > i.total {
        return error(
            StatusCode::BAD_REQUEST,
            "Unable to update inventory: reserved must not exceed total",
        );
    }
    let out = *i;
    w.inventories.insert(host.clone(), inv);
    let g = generation(&w, &host) + 1;
    w.generations.insert(host, g);
    let mut v = inventory_value(&out);
    v["resource_provider_generation"] = json!(g);
    json_response(StatusCode::OK, &v)
}

fn sum(allocs: &[(uuid::Uuid, [u64; 3])]) -> [u64; 3] {
    allocs.iter().fold([0; 3], |mut acc, (_, r)| {
        for k in 0..3 {
            acc[k] += r[k];
        }
        acc
    })
}

fn classes(r: &[u64; 3]) -> Map<String, Value> {
    RESOURCE_CLASSES
        .iter()
        .zip(r.iter())
        .map(|(c, v)| ((*c).to_owned(), json!(v)))
        .collect()
}

async fn usages(
    State(sh): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(uuid): Path<String>,
) -> Response {
    let w = match enter(&sh, &headers) {
        Ok(w) => w,
        Err(r) => return r,
    };
    let s = match provider(&w, &uuid) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let used = sum(&w.allocations_on(&s.host));
    json_response(
        StatusCode::OK,
        &json!({"resource_provider_generation": generation(&w, &s.host),
                "usages": classes(&used)}),
    )
}

async fn allocations(
    State(sh): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(uuid): Path<String>,
) -> Response {
    let w = match enter(&sh, &headers) {
        Ok(w) => w,
        Err(r) => return r,
    };
    let s = match provider(&w, &uuid) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let map: Map<String, Value> = w
        .allocations_on(&s.host)
        .iter()
        .map(|(id, r)| (id.to_string(), json!({"resources": classes(r)})))
        .collect();
    json_response(
        StatusCode::OK,
        &json!({"resource_provider_generation": generation(&w, &s.host), "allocations": map}),
    )
}
