//! Nova v2.1 under `/compute`: version documents, microversion
//! negotiation, os-services (list, update by id from 2.53, the older
//! enable/disable/force-down forms), servers (list, detail with paging,
//! show, actions: evacuate, lock, unlock, os-start, os-stop), os-migrations
//! and os-hypervisors, with Nova's field names, codes and fault bodies.

use std::collections::HashMap;
use std::sync::{Arc, MutexGuard};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::{get, post, put};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::keystone::{authenticate, is_admin};
use crate::model::{Microversion, Server, Service, Token, World};
use crate::{Shared, json_response, parse_body};

const V: &str = "/compute/v2.1";

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/compute", get(versions))
        .route("/compute/", get(versions))
        .route(V, get(version))
        .route("/compute/v2.1/", get(version))
        .route("/compute/v2.1/os-services", get(list_services))
        .route("/compute/v2.1/os-services/{id}", put(update_service))
        .route("/compute/v2.1/servers", get(list_servers))
        .route("/compute/v2.1/servers/detail", get(list_servers_detail))
        .route("/compute/v2.1/servers/{id}", get(show_server))
        .route("/compute/v2.1/servers/{id}/action", post(server_action))
        .route("/compute/v2.1/os-migrations", get(list_migrations))
        .route("/compute/v2.1/os-hypervisors", get(list_hypervisors))
        .route(
            "/compute/v2.1/os-hypervisors/detail",
            get(list_hypervisors_detail),
        )
}

fn fault_name(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "badRequest",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "itemNotFound",
        405 => "badMethod",
        409 => "conflictingRequest",
        413 | 429 => "overLimit",
        415 => "badMediaType",
        501 => "notImplemented",
        503 => "serviceUnavailable",
        _ => "computeFault",
    }
}

fn stamp(r: &mut Response, mv: Option<Microversion>) {
    if let Some(mv) = mv {
        let h = r.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&format!("compute {mv}")) {
            h.insert("OpenStack-API-Version", v);
        }
        if let Ok(v) = HeaderValue::from_str(&mv.to_string()) {
            h.insert("X-OpenStack-Nova-API-Version", v);
        }
        h.insert(
            "Vary",
            HeaderValue::from_static("OpenStack-API-Version, X-OpenStack-Nova-API-Version"),
        );
    }
}

/// Nova's fault body: `{"itemNotFound": {"code": 404, "message": ...}}`.
pub(crate) fn fault(mv: Option<Microversion>, status: StatusCode, message: &str) -> Response {
    let mut r = json_response(
        status,
        &json!({ fault_name(status): {"code": status.as_u16(), "message": message} }),
    );
    stamp(&mut r, mv);
    r
}

fn reply(mv: Microversion, status: StatusCode, body: Option<&Value>) -> Response {
    let mut r = match body {
        Some(b) => json_response(status, b),
        None => {
            let mut r = Response::new(Body::empty());
            *r.status_mut() = status;
            r
        }
    };
    stamp(&mut r, Some(mv));
    r
}

/// The microversion a request asks for (2.1 when it names none).
fn negotiate(w: &World, headers: &HeaderMap) -> Result<Microversion, Response> {
    let max = w.rt.max_version;
    let asked = headers
        .get_all("openstack-api-version")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|item| {
            let mut it = item.split_whitespace();
            match (it.next(), it.next()) {
                (Some(svc), Some(ver)) if svc.eq_ignore_ascii_case("compute") => {
                    Some(ver.to_owned())
                }
                _ => None,
            }
        })
        .or_else(|| {
            headers
                .get("x-openstack-nova-api-version")
                .and_then(|v| v.to_str().ok())
                .map(|v| v.trim().to_owned())
        });
    let Some(asked) = asked else {
        return Ok(Microversion::MIN);
    };
    if asked.eq_ignore_ascii_case("latest") {
        return Ok(max);
    }
    let Some(v) = Microversion::parse(&asked) else {
        return Err(fault(
            None,
            StatusCode::BAD_REQUEST,
            &format!(
                "API Version String {asked} is of invalid format. Must be of format MajorNum.MinorNum."
            ),
        ));
    };
    if v < Microversion::MIN || v > max {
        return Err(fault(
            None,
            StatusCode::NOT_ACCEPTABLE,
            &format!(
                "Version {v} is not supported by the API. Minimum is {} and maximum is {max}.",
                Microversion::MIN
            ),
        ));
    }
    Ok(v)
}

/// Locks the world, checks the token (401) and the microversion (400/406).
fn enter<'a>(
    sh: &'a Shared,
    headers: &HeaderMap,
) -> Result<(MutexGuard<'a, World>, Microversion, Token), Response> {
    let w = sh.lock();
    let token = match authenticate(&w, headers) {
        Ok(t) => t.clone(),
        Err(_) => {
            return Err(fault(
                None,
                StatusCode::UNAUTHORIZED,
                "The request you have made requires authentication.",
            ));
        }
    };
    let mv = negotiate(&w, headers)?;
    Ok((w, mv, token))
}

fn admin_only(w: &World, t: &Token, mv: Microversion, what: &str) -> Result<(), Response> {
    if is_admin(w, t) {
        Ok(())
    } else {
        Err(fault(
            Some(mv),
            StatusCode::FORBIDDEN,
            &format!("Policy doesn't allow {what} to be performed."),
        ))
    }
}

fn version_value(base: &str, max: Microversion) -> Value {
    json!({
        "id": "v2.1",
        "status": "CURRENT",
        "version": max.to_string(),
        "min_version": Microversion::MIN.to_string(),
        "updated": "2013-07-23T11:33:21Z",
        "links": [{"rel": "self", "href": format!("{base}{V}/")},
                  {"rel": "describedby", "type": "text/html",
                   "href": "http://docs.openstack.org/"}],
        "media-types": [{"base": "application/json",
                         "type": "application/vnd.openstack.compute+json;version=2.1"}]
    })
}

async fn versions(State(sh): State<Arc<Shared>>) -> Response {
    let max = sh.lock().rt.max_version;
    json_response(
        StatusCode::OK,
        &json!({"versions": [version_value(&sh.base, max)]}),
    )
}

async fn version(State(sh): State<Arc<Shared>>) -> Response {
    let max = sh.lock().rt.max_version;
    json_response(
        StatusCode::OK,
        &json!({"version": version_value(&sh.base, max)}),
    )
}

fn nova_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
}

fn server_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn service_id(s: &Service, mv: Microversion) -> Value {
    if mv.at_least(2, 53) {
        json!(s.uuid.to_string())
    } else {
        json!(s.id)
    }
}

fn service_value(w: &World, s: &Service, mv: Microversion) -> Value {
    let mut v = json!({
        "id": service_id(s, mv),
        "binary": s.binary,
        "host": s.host,
        "zone": s.zone,
        "status": if s.disabled { "disabled" } else { "enabled" },
        "state": w.state(s),
        "updated_at": nova_time(w.service_updated_at(s)),
        "disabled_reason": s.disabled_reason,
    });
    if mv.at_least(2, 11) {
        v["forced_down"] = json!(s.forced_down);
    }
    v
}

async fn list_services(
    State(sh): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let (w, mv, token) = match enter(&sh, &headers) {
        Ok(x) => x,
        Err(r) => return r,
    };
    if let Err(r) = admin_only(&w, &token, mv, "os_compute_api:os-services:list") {
        return r;
    }
    let list: Vec<Value> = w
        .services
        .iter()
        .filter(|s| q.get("binary").is_none_or(|b| &s.binary == b))
        .filter(|s| q.get("host").is_none_or(|h| &s.host == h))
        .map(|s| service_value(&w, s, mv))
        .collect();
    // Dated with the same clock reading as the heartbeats, as nova-api's
    // web server dates the answer it builds from the database.
    let date = crate::http_date(w.wall());
    let mut r = reply(mv, StatusCode::OK, Some(&json!({"services": list})));
    r.headers_mut().insert(axum::http::header::DATE, date);
    r
}

fn bad(mv: Microversion, msg: &str) -> Response {
    fault(Some(mv), StatusCode::BAD_REQUEST, msg)
}

fn check_keys(
    mv: Microversion,
    obj: &Map<String, Value>,
    allowed: &[&str],
) -> Result<(), Response> {
    match obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(bad(
            mv,
            &format!(
                "Invalid input for field/attribute. Additional properties are not allowed ('{k}' was unexpected)"
            ),
        )),
        None => Ok(()),
    }
}

async fn update_service(
    State(sh): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let (mut w, mv, token) = match enter(&sh, &headers) {
        Ok(x) => x,
        Err(r) => return r,
    };
    if let Err(r) = admin_only(&w, &token, mv, "os_compute_api:os-services:update") {
        return r;
    }
    let body = match parse_body(&body) {
        Ok(Some(Value::Object(m))) => m,
        Ok(_) => return bad(mv, "Invalid input: the request body must be a JSON object"),
        Err(e) => return bad(mv, &e),
    };
    if mv.at_least(2, 53) {
        update_service_by_id(&mut w, mv, &id, &body)
    } else {
        update_service_legacy(&mut w, mv, &id, &body)
    }
}

fn update_service_by_id(
    w: &mut World,
    mv: Microversion,
    id: &str,
    body: &Map<String, Value>,
) -> Response {
    let Ok(uuid) = Uuid::parse_str(id) else {
        return bad(mv, &format!("Invalid uuid {id}"));
    };
    if let Err(r) = check_keys(mv, body, &["status", "disabled_reason", "forced_down"]) {
        return r;
    }
    let status = match body.get("status") {
        None => None,
        Some(Value::String(s)) if s == "enabled" || s == "disabled" => Some(s.clone()),
        Some(_) => {
            return bad(
                mv,
                "Invalid input for field/attribute status. Value is not one of 'enabled', 'disabled'",
            );
        }
    };
    let reason = match body.get("disabled_reason") {
        None => None,
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 255 => Some(s.clone()),
        Some(_) => return bad(mv, "Invalid input for field/attribute disabled_reason."),
    };
    let forced = match body.get("forced_down") {
        None => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => {
            return bad(
                mv,
                "Invalid input for field/attribute forced_down. Value is not a boolean",
            );
        }
    };
    if status.is_none() && forced.is_none() {
        return bad(
            mv,
            "At least one of 'status' or 'forced_down' must be specified in the request body.",
        );
    }
    if reason.is_some() && status.as_deref() != Some("disabled") {
        return bad(
            mv,
            "Specifying 'disabled_reason' with status 'enabled' is invalid.",
        );
    }
    let Some(i) = w.services.iter().position(|s| s.uuid == uuid) else {
        return fault(
            Some(mv),
            StatusCode::NOT_FOUND,
            &format!("Service {id} could not be found."),
        );
    };
    if w.services[i].binary != "nova-compute" {
        let b = w.services[i].binary.clone();
        return bad(
            mv,
            &format!(
                "Updating a {b} service is not supported. Only nova-compute services can be updated."
            ),
        );
    }
    let s = &mut w.services[i];
    if let Some(st) = status {
        s.disabled = st == "disabled";
        s.disabled_reason = if s.disabled { reason } else { None };
    }
    if let Some(f) = forced {
        s.forced_down = f;
    }
    let s = w.services[i].clone();
    reply(
        mv,
        StatusCode::OK,
        Some(&json!({"service": service_value(w, &s, mv)})),
    )
}

fn update_service_legacy(
    w: &mut World,
    mv: Microversion,
    action: &str,
    body: &Map<String, Value>,
) -> Response {
    let known = matches!(action, "enable" | "disable" | "disable-log-reason")
        || (action == "force-down" && mv.at_least(2, 11));
    if !known {
        return fault(Some(mv), StatusCode::NOT_FOUND, "Unknown action");
    }
    let host = body
        .get("host")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let binary = body
        .get("binary")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    if host.is_empty() || binary.is_empty() {
        return bad(
            mv,
            "Invalid input for field/attribute. 'host' and 'binary' are required properties",
        );
    }
    let Some(i) = w
        .services
        .iter()
        .position(|s| s.host == host && s.binary == binary)
    else {
        return fault(
            Some(mv),
            StatusCode::NOT_FOUND,
            &format!("Service {binary} on host {host} could not be found."),
        );
    };
    let s = &mut w.services[i];
    let out = match action {
        "enable" => {
            s.disabled = false;
            s.disabled_reason = None;
            json!({"host": host, "binary": binary, "status": "enabled"})
        }
        "disable" => {
            s.disabled = true;
            json!({"host": host, "binary": binary, "status": "disabled"})
        }
        "disable-log-reason" => {
            let Some(reason) = body.get("disabled_reason").and_then(Value::as_str) else {
                return bad(mv, "Missing disabled reason field");
            };
            s.disabled = true;
            s.disabled_reason = Some(reason.to_owned());
            json!({"host": host, "binary": binary, "status": "disabled",
                   "disabled_reason": reason})
        }
        _ => {
            let Some(f) = body.get("forced_down").and_then(Value::as_bool) else {
                return bad(
                    mv,
                    "Invalid input for field/attribute forced_down. Value is not a boolean",
                );
            };
            s.forced_down = f;
            json!({"host": host, "binary": binary, "forced_down": f})
        }
    };
    reply(mv, StatusCode::OK, Some(&json!({"service": out})))
}

fn host_status(w: &World, host: &str) -> &'static str {
    match w.compute(host) {
        None => "UNKNOWN",
        Some(s) if s.forced_down => "DOWN",
        Some(s) if !w.heartbeat_up(s) => "UNKNOWN",
        Some(s) if s.disabled => "MAINTENANCE",
        Some(_) => "UP",
    }
}

fn server_value(w: &World, base: &str, s: &Server, mv: Microversion) -> Value {
    let id = s.id.to_string();
    let power = match s.vm_state.as_str() {
        "active" => 1,
        "stopped" => 4,
        _ => 0,
    };
    let f = &s.flavor;
    let flavor = if mv.at_least(2, 47) {
        json!({"vcpus": f.vcpus, "ram": f.ram, "disk": f.disk, "ephemeral": f.ephemeral,
               "swap": f.swap, "original_name": f.name, "extra_specs": {}})
    } else {
        json!({"id": f.name, "links": [{"rel": "bookmark", "href": format!("{base}/compute/flavors/{}", f.name)}]})
    };
    // Booted from a volume: Nova shows an empty image and the root volume.
    let (image, volumes) = match s.root_volume {
        Some(v) => (
            json!(""),
            json!([{"id": v.to_string(), "delete_on_termination": false}]),
        ),
        None => (
            json!({"id": "70a599e0-31e7-49b7-b260-868f441e862b",
                   "links": [{"rel": "bookmark",
                              "href": format!("{base}/compute/images/70a599e0-31e7-49b7-b260-868f441e862b")}]}),
            json!([]),
        ),
    };
    let mut v = json!({
        "id": id,
        "name": s.name,
        "status": s.status,
        "tenant_id": s.tenant_id,
        "user_id": s.user_id,
        "metadata": s.metadata,
        "hostId": format!("{:x}", fxhash(&s.host, &s.tenant_id)),
        "image": image,
        "flavor": flavor,
        "created": server_time(s.created),
        "updated": server_time(s.updated),
        "addresses": {},
        "accessIPv4": "",
        "accessIPv6": "",
        "links": [{"rel": "self", "href": format!("{base}{V}/servers/{id}")},
                  {"rel": "bookmark", "href": format!("{base}/compute/servers/{id}")}],
        "key_name": null,
        "config_drive": "",
        "progress": 0,
        "OS-DCF:diskConfig": "MANUAL",
        "OS-EXT-AZ:availability_zone": "nova",
        "OS-EXT-SRV-ATTR:host": s.host,
        "OS-EXT-SRV-ATTR:hypervisor_hostname": s.host,
        "OS-EXT-SRV-ATTR:instance_name": format!("instance-{:08x}", w.server_position(&s.id).unwrap_or(0) + 1),
        "OS-EXT-STS:task_state": s.task_state,
        "OS-EXT-STS:vm_state": s.vm_state,
        "OS-EXT-STS:power_state": power,
        "OS-SRV-USG:launched_at": server_time(s.created),
        "OS-SRV-USG:terminated_at": null,
        "os-extended-volumes:volumes_attached": volumes,
        "security_groups": [{"name": "default"}],
    });
    if mv.at_least(2, 9) {
        v["locked"] = json!(s.locked);
    }
    if mv.at_least(2, 16) {
        v["host_status"] = json!(host_status(w, &s.host));
    }
    if mv.at_least(2, 19) {
        v["description"] = Value::Null;
    }
    if mv.at_least(2, 26) {
        v["tags"] = json!([]);
    }
    if mv.at_least(2, 73) {
        v["locked_reason"] = json!(s.locked_reason);
    }
    if mv.at_least(2, 96) {
        v["pinned_availability_zone"] = Value::Null;
    }
    v
}

/// A stable pseudo host id (Nova hashes host + project).
fn fxhash(a: &str, b: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for c in a.bytes().chain([0u8]).chain(b.bytes()) {
        h ^= u64::from(c);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn truthy(v: &str) -> bool {
    !matches!(
        v.to_ascii_lowercase().as_str(),
        "0" | "false" | "f" | "no" | "n" | "off"
    )
}

fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

async fn list_servers(
    State(sh): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(q): Query<Vec<(String, String)>>,
) -> Response {
    servers_common(&sh, &headers, q, false)
}

async fn list_servers_detail(
    State(sh): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(q): Query<Vec<(String, String)>>,
) -> Response {
    servers_common(&sh, &headers, q, true)
}

fn servers_common(
    sh: &Shared,
    headers: &HeaderMap,
    q: Vec<(String, String)>,
    detail: bool,
) -> Response {
    let (w, mv, token) = match enter(sh, headers) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let get = |k: &str| {
        q.iter()
            .rev()
            .find(|(kk, _)| kk == k)
            .map(|(_, v)| v.as_str())
    };
    let admin = is_admin(&w, &token);
    let all = get("all_tenants").is_some_and(truthy);
    if all && !admin {
        return fault(
            Some(mv),
            StatusCode::FORBIDDEN,
            "Policy doesn't allow os_compute_api:servers:index:get_all_tenants to be performed.",
        );
    }
    let limit = match get("limit") {
        None => w.rt.max_limit,
        Some(l) => match l.parse::<i64>() {
            Ok(n) if n >= 0 => (n as usize).min(w.rt.max_limit),
            _ => return bad(mv, "limit param must be an integer"),
        },
    };
    let start = match get("marker") {
        None => w.servers.len(),
        Some(m) => match Uuid::parse_str(m).ok().and_then(|u| w.server_position(&u)) {
            Some(p) => p,
            None => return bad(mv, &format!("marker [{m}] not found")),
        },
    };
    let project = get("project_id").or(get("tenant_id")).map(str::to_owned);
    let own_project = token.project_id.clone().unwrap_or_default();
    let host = if admin { get("host") } else { None };
    let status = get("status").map(str::to_ascii_uppercase);
    let name = get("name");
    let user = get("user_id");
    let mut page: Vec<&Server> = Vec::new();
    for i in (0..start).rev() {
        if page.len() >= limit {
            break;
        }
        let s = &w.servers[i];
        let project_ok = match (&project, all) {
            (Some(p), true) => &s.tenant_id == p,
            (_, true) => true,
            (Some(p), false) if admin => &s.tenant_id == p,
            _ => s.tenant_id == own_project,
        };
        if project_ok
            && host.is_none_or(|h| s.host == h)
            && status.as_deref().is_none_or(|st| s.status == st)
            && name.is_none_or(|n| s.name.contains(n))
            && user.is_none_or(|u| s.user_id == u)
        {
            page.push(s);
        }
    }
    let items: Vec<Value> = page
        .iter()
        .map(|s| {
            if detail {
                server_value(&w, &sh.base, s, mv)
            } else {
                let id = s.id.to_string();
                json!({"id": id, "name": s.name,
                       "links": [{"rel": "self", "href": format!("{}{V}/servers/{id}", sh.base)},
                                 {"rel": "bookmark", "href": format!("{}/compute/servers/{id}", sh.base)}]})
            }
        })
        .collect();
    let mut body = json!({"servers": items});
    // Nova adds a next link whenever a page is full, even if nothing
    // remains (the client then gets one empty page).
    if limit > 0 && page.len() == limit {
        if let Some(last) = page.last() {
            let mut qs: Vec<String> = q
                .iter()
                .filter(|(k, _)| k != "marker")
                .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
                .collect();
            if get("limit").is_none() {
                qs.push(format!("limit={limit}"));
            }
            qs.push(format!("marker={}", last.id));
            let path = if detail { "servers/detail" } else { "servers" };
            body["servers_links"] = json!([{"rel": "next",
                "href": format!("{}{V}/{path}?{}", sh.base, qs.join("&"))}]);
        }
    }
    reply(mv, StatusCode::OK, Some(&body))
}

fn visible<'w>(w: &'w World, token: &Token, id: &str) -> Option<&'w Server> {
    let uuid = Uuid::parse_str(id).ok()?;
    let s = w.server(&uuid)?;
    (is_admin(w, token) || token.project_id.as_deref() == Some(s.tenant_id.as_str())).then_some(s)
}

fn not_found(mv: Microversion, id: &str) -> Response {
    fault(
        Some(mv),
        StatusCode::NOT_FOUND,
        &format!("Instance {id} could not be found."),
    )
}

async fn show_server(
    State(sh): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let (w, mv, token) = match enter(&sh, &headers) {
        Ok(x) => x,
        Err(r) => return r,
    };
    match visible(&w, &token, &id) {
        Some(s) => reply(
            mv,
            StatusCode::OK,
            Some(&json!({"server": server_value(&w, &sh.base, s, mv)})),
        ),
        None => not_found(mv, &id),
    }
}

fn conflict(mv: Microversion, msg: String) -> Response {
    fault(Some(mv), StatusCode::CONFLICT, &msg)
}

async fn server_action(
    State(sh): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let (mut w, mv, token) = match enter(&sh, &headers) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let body = match parse_body(&body) {
        Ok(Some(Value::Object(m))) if m.len() == 1 => m,
        Ok(_) => return bad(mv, "Malformed request body: exactly one action expected"),
        Err(e) => return bad(mv, &e),
    };
    let Some((action, arg)) = body.into_iter().next() else {
        return bad(mv, "Malformed request body");
    };
    let Some(server) = visible(&w, &token, &id).cloned() else {
        return not_found(mv, &id);
    };
    match action.as_str() {
        "evacuate" => evacuate(&mut w, mv, &token, &server, &arg),
        "lock" => {
            let reason = match &arg {
                Value::Null => None,
                Value::Object(m) if m.is_empty() => None,
                Value::Object(m) if mv.at_least(2, 73) => {
                    if let Err(r) = check_keys(mv, m, &["locked_reason"]) {
                        return r;
                    }
                    match m.get("locked_reason") {
                        Some(Value::String(s)) if s.len() <= 255 => Some(s.clone()),
                        _ => return bad(mv, "Invalid input for field/attribute locked_reason."),
                    }
                }
                Value::Object(m) => {
                    return match check_keys(mv, m, &[]) {
                        Err(r) => r,
                        Ok(()) => bad(mv, "Invalid lock body"),
                    };
                }
                _ => return bad(mv, "Invalid input for field/attribute lock."),
            };
            let wall = w.wall();
            if let Some(s) = w.server_mut(&server.id) {
                s.locked = true;
                s.locked_reason = reason;
                s.updated = wall;
            }
            reply(mv, StatusCode::ACCEPTED, None)
        }
        "unlock" => {
            let wall = w.wall();
            if let Some(s) = w.server_mut(&server.id) {
                s.locked = false;
                s.locked_reason = None;
                s.updated = wall;
            }
            reply(mv, StatusCode::ACCEPTED, None)
        }
        "os-start" | "os-stop" => power_action(&mut w, mv, &server, action == "os-start"),
        other => bad(mv, &format!("There is no such action: {other}")),
    }
}

fn power_action(w: &mut World, mv: Microversion, server: &Server, start: bool) -> Response {
    let (verb, ok_states): (&str, &[&str]) = if start {
        ("start", &["stopped"])
    } else {
        ("stop", &["active", "error"])
    };
    if let Some(t) = &server.task_state {
        return conflict(
            mv,
            format!(
                "Cannot '{verb}' instance {} while it is in task_state {t}",
                server.id
            ),
        );
    }
    if !ok_states.contains(&server.vm_state.as_str()) {
        return conflict(
            mv,
            format!(
                "Cannot '{verb}' instance {} while it is in vm_state {}",
                server.id, server.vm_state
            ),
        );
    }
    let host_up = w.compute(&server.host).is_some_and(|s| w.heartbeat_up(s));
    let wall = w.wall();
    if let Some(s) = w.server_mut(&server.id) {
        s.updated = wall;
        if !host_up {
            // The cast to a dead compute is lost: the task never finishes.
            s.task_state = Some(if start { "powering-on" } else { "powering-off" }.to_owned());
        } else if start {
            s.status = "ACTIVE".to_owned();
            s.vm_state = "active".to_owned();
        } else {
            s.status = "SHUTOFF".to_owned();
            s.vm_state = "stopped".to_owned();
        }
    }
    reply(mv, StatusCode::ACCEPTED, None)
}

fn evacuate(
    w: &mut World,
    mv: Microversion,
    token: &Token,
    server: &Server,
    arg: &Value,
) -> Response {
    if let Err(r) = admin_only(w, token, mv, "os_compute_api:os-evacuate") {
        return r;
    }
    let Value::Object(m) = arg else {
        return bad(
            mv,
            "Invalid input for field/attribute evacuate. Value is not an object",
        );
    };
    let mut allowed = vec!["host", "adminPass"];
    if !mv.at_least(2, 14) {
        allowed.push("onSharedStorage");
    }
    if mv.at_least(2, 29) && !mv.at_least(2, 68) {
        allowed.push("force");
    }
    if let Err(r) = check_keys(mv, m, &allowed) {
        return r;
    }
    let shared = if mv.at_least(2, 14) {
        false
    } else {
        match m.get("onSharedStorage") {
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return bad(
                    mv,
                    "Invalid input for field/attribute onSharedStorage. Value is not a boolean",
                );
            }
            None => {
                return bad(
                    mv,
                    "Invalid input for field/attribute evacuate. 'onSharedStorage' is a required property",
                );
            }
        }
    };
    if shared && m.contains_key("adminPass") {
        return bad(mv, "admin password can't be changed on existing disk");
    }
    let target = match m.get("host") {
        None | Some(Value::Null) => None,
        Some(Value::String(h)) => {
            if w.compute(h).is_none() {
                return fault(
                    Some(mv),
                    StatusCode::NOT_FOUND,
                    &format!("Compute host {h} could not be found."),
                );
            }
            if *h == server.host {
                return bad(mv, "The target host can't be the same one.");
            }
            Some(h.clone())
        }
        Some(_) => return bad(mv, "Invalid input for field/attribute host."),
    };
    let source_up = w
        .compute(&server.host)
        .is_some_and(|s| !s.forced_down && w.heartbeat_up(s));
    if source_up {
        return conflict(
            mv,
            format!("Compute service of {} is still in use.", server.host),
        );
    }
    if let Some(t) = &server.task_state {
        return conflict(
            mv,
            format!(
                "Cannot 'evacuate' instance {} while it is in task_state {t}",
                server.id
            ),
        );
    }
    if !matches!(server.vm_state.as_str(), "active" | "stopped" | "error") {
        return conflict(
            mv,
            format!(
                "Cannot 'evacuate' instance {} while it is in vm_state {}",
                server.id, server.vm_state
            ),
        );
    }
    let user = token.user_id.clone();
    if let Err(e) = w.start_evacuation(server.id, target, mv.at_least(2, 95), &user) {
        return fault(Some(mv), StatusCode::INTERNAL_SERVER_ERROR, &e.to_string());
    }
    if mv.at_least(2, 14) {
        reply(mv, StatusCode::OK, None)
    } else {
        let pass = m
            .get("adminPass")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| w.rng.uuid().simple().to_string()[..12].to_owned());
        reply(mv, StatusCode::OK, Some(&json!({"adminPass": pass})))
    }
}

fn migration_value(m: &crate::model::Migration, mv: Microversion) -> Value {
    let mut v = json!({
        "id": m.id,
        "instance_uuid": m.instance_uuid.to_string(),
        "source_compute": m.source_compute,
        "source_node": m.source_compute,
        "dest_compute": m.dest_compute,
        "dest_node": m.dest_compute,
        "dest_host": m.dest_compute.as_ref().map(|_| "127.0.0.1"),
        "status": m.status,
        "created_at": nova_time(m.created_at),
        "updated_at": nova_time(m.updated_at),
        "old_instance_type_id": 1,
        "new_instance_type_id": 1,
        "source_region": "RegionOne",
        "dest_region": "RegionOne",
    });
    if mv.at_least(2, 23) {
        v["migration_type"] = json!(m.migration_type);
    }
    if mv.at_least(2, 59) {
        v["uuid"] = json!(m.uuid.to_string());
    }
    if mv.at_least(2, 80) {
        v["user_id"] = json!(m.user_id);
        v["project_id"] = json!(m.project_id);
    }
    v
}

async fn list_migrations(
    State(sh): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let (w, mv, token) = match enter(&sh, &headers) {
        Ok(x) => x,
        Err(r) => return r,
    };
    if let Err(r) = admin_only(&w, &token, mv, "os_compute_api:os-migrations:index") {
        return r;
    }
    let list: Vec<Value> = w
        .migrations
        .iter()
        .rev()
        .filter(|m| {
            q.get("instance_uuid")
                .is_none_or(|u| &m.instance_uuid.to_string() == u)
        })
        .filter(|m| {
            q.get("migration_type")
                .is_none_or(|t| &m.migration_type == t)
        })
        .filter(|m| {
            q.get("source_compute")
                .is_none_or(|h| &m.source_compute == h)
        })
        .filter(|m| q.get("status").is_none_or(|s| &m.status == s))
        .filter(|m| {
            q.get("host")
                .is_none_or(|h| &m.source_compute == h || m.dest_compute.as_ref() == Some(h))
        })
        .map(|m| migration_value(m, mv))
        .collect();
    reply(mv, StatusCode::OK, Some(&json!({"migrations": list})))
}

fn hypervisor_value(w: &World, s: &Service, mv: Microversion, detail: bool) -> Value {
    let id = if mv.at_least(2, 53) {
        json!(s.hypervisor_uuid.to_string())
    } else {
        json!(s.hypervisor_id)
    };
    let mut v = json!({
        "id": id,
        "hypervisor_hostname": s.host,
        "state": w.state(s),
        "status": if s.disabled { "disabled" } else { "enabled" },
    });
    if detail {
        let running = w.servers.iter().filter(|x| x.host == s.host).count();
        v["host_ip"] = json!("127.0.0.1");
        v["hypervisor_type"] = json!("fake");
        v["hypervisor_version"] = json!(1000);
        v["service"] = json!({"host": s.host, "id": service_id(s, mv),
                              "disabled_reason": s.disabled_reason});
        if mv.at_least(2, 88) {
            v["uptime"] = Value::Null;
        } else {
            v["vcpus"] = json!(64);
            v["vcpus_used"] = json!(running);
            v["memory_mb"] = json!(262_144);
            v["memory_mb_used"] = json!(512 * running);
            v["local_gb"] = json!(2000);
            v["local_gb_used"] = json!(running);
            v["free_ram_mb"] = json!(262_144 - 512 * running as i64);
            v["free_disk_gb"] = json!(2000 - running as i64);
            v["running_vms"] = json!(running);
            v["current_workload"] = json!(0);
            v["disk_available_least"] = json!(2000 - running as i64);
            v["cpu_info"] = json!("{}");
        }
    }
    v
}

async fn list_hypervisors(State(sh): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    hypervisors(&sh, &headers, false)
}

async fn list_hypervisors_detail(State(sh): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    hypervisors(&sh, &headers, true)
}

fn hypervisors(sh: &Shared, headers: &HeaderMap, detail: bool) -> Response {
    let (w, mv, token) = match enter(sh, headers) {
        Ok(x) => x,
        Err(r) => return r,
    };
    if let Err(r) = admin_only(&w, &token, mv, "os_compute_api:os-hypervisors:list") {
        return r;
    }
    let list: Vec<Value> = w
        .services
        .iter()
        .filter(|s| s.binary == "nova-compute")
        .map(|s| hypervisor_value(&w, s, mv, detail))
        .collect();
    reply(mv, StatusCode::OK, Some(&json!({"hypervisors": list})))
}
