//! Keystone v3 under `/identity`: version discovery, password and
//! application-credential tokens with a service catalog, users, projects
//! and role assignments, with Keystone's published bodies and errors.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::model::{DEFAULT_DOMAIN_ID, DEFAULT_DOMAIN_NAME, Token, World};
use crate::{Shared, json_response, parse_body};

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/identity", get(versions))
        .route("/identity/", get(versions))
        .route("/identity/v3", get(version))
        .route("/identity/v3/", get(version))
        .route("/identity/v3/auth/tokens", post(issue).get(validate))
        .route("/identity/v3/users", get(list_users))
        .route("/identity/v3/users/{id}", get(get_user))
        .route("/identity/v3/projects", get(list_projects))
        .route("/identity/v3/projects/{id}", get(get_project))
        .route("/identity/v3/roles", get(list_roles))
        .route("/identity/v3/role_assignments", get(role_assignments))
}

/// Keystone's error body: `{"error": {"code", "message", "title"}}`.
pub(crate) fn error(status: StatusCode, message: &str) -> Response {
    let title = status.canonical_reason().unwrap_or("Error");
    let mut r = json_response(
        status,
        &json!({"error": {"code": status.as_u16(), "message": message, "title": title}}),
    );
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            "WWW-Authenticate",
            HeaderValue::from_static("Keystone uri=\"/identity\""),
        );
    }
    r
}

/// 401 with the published message.
pub(crate) fn unauthorized() -> Response {
    error(
        StatusCode::UNAUTHORIZED,
        "The request you have made requires authentication.",
    )
}

/// The live token named by `X-Auth-Token`, or the 401 to answer.
pub(crate) fn authenticate<'w>(w: &'w World, headers: &HeaderMap) -> Result<&'w Token, Response> {
    headers
        .get("x-auth-token")
        .and_then(|v| v.to_str().ok())
        .and_then(|t| w.valid_token(t))
        .ok_or_else(unauthorized)
}

fn version_value(base: &str) -> Value {
    json!({
        "id": "v3.14",
        "status": "stable",
        "updated": "2020-04-07T00:00:00Z",
        "links": [{"rel": "self", "href": format!("{base}/identity/v3/")}],
        "media-types": [{"base": "application/json",
                         "type": "application/vnd.openstack.identity-v3+json"}]
    })
}

async fn versions(State(sh): State<Arc<Shared>>) -> Response {
    json_response(
        StatusCode::MULTIPLE_CHOICES,
        &json!({"versions": {"values": [version_value(&sh.base)]}}),
    )
}

async fn version(State(sh): State<Arc<Shared>>) -> Response {
    json_response(StatusCode::OK, &json!({"version": version_value(&sh.base)}))
}

fn domain() -> Value {
    json!({"id": DEFAULT_DOMAIN_ID, "name": DEFAULT_DOMAIN_NAME})
}

fn domain_matches(d: Option<&Value>) -> bool {
    match d {
        None => false,
        Some(d) => {
            d.get("id").and_then(Value::as_str) == Some(DEFAULT_DOMAIN_ID)
                || d.get("name").and_then(Value::as_str) == Some(DEFAULT_DOMAIN_NAME)
        }
    }
}

/// Finds a user from `{"id"}` or `{"name", "domain"}`.
fn find_user<'w>(w: &'w World, u: &Value) -> Option<&'w crate::model::User> {
    if let Some(id) = u.get("id").and_then(Value::as_str) {
        return w.user(id);
    }
    let name = u.get("name").and_then(Value::as_str)?;
    if !domain_matches(u.get("domain")) {
        return None;
    }
    w.users.iter().find(|x| x.name == name)
}

fn find_project(w: &World, p: &Value) -> Option<String> {
    if let Some(id) = p.get("id").and_then(Value::as_str) {
        return w.project(id).map(|p| p.id.clone());
    }
    let name = p.get("name").and_then(Value::as_str)?;
    if !domain_matches(p.get("domain")) {
        return None;
    }
    w.projects
        .iter()
        .find(|x| x.name == name)
        .map(|p| p.id.clone())
}

fn has_role_on(w: &World, user: &str, project: &str) -> bool {
    w.assignments
        .iter()
        .any(|a| a.user_id == user && a.project_id == project)
}

/// Whether the token's user holds the admin role on its project.
pub(crate) fn is_admin(w: &World, t: &Token) -> bool {
    let admin = w.role_id("admin");
    t.project_id.as_deref().is_some_and(|p| {
        w.assignments
            .iter()
            .any(|a| a.user_id == t.user_id && a.project_id == p && a.role_id == admin)
    })
}

async fn issue(State(sh): State<Arc<Shared>>, body: Bytes) -> Response {
    let body = match parse_body(&body) {
        Ok(Some(b)) => b,
        Ok(None) => {
            return error(
                StatusCode::BAD_REQUEST,
                "Expecting to find auth in request body.",
            );
        }
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    let Some(auth) = body.get("auth") else {
        return error(StatusCode::BAD_REQUEST, "'auth' is a required property");
    };
    let identity = auth.get("identity").cloned().unwrap_or(Value::Null);
    let methods: Vec<String> = identity
        .get("methods")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let mut w = sh.lock();
    let (user_id, mut project_id) = if methods.iter().any(|m| m == "password") {
        let Some(u) = identity.pointer("/password/user") else {
            return error(StatusCode::BAD_REQUEST, "'user' is a required property");
        };
        let password = u.get("password").and_then(Value::as_str).unwrap_or("");
        match find_user(&w, u) {
            Some(user) if user.password == password => (user.id.clone(), None),
            _ => return unauthorized(),
        }
    } else if methods.iter().any(|m| m == "application_credential") {
        let Some(ac) = identity.get("application_credential") else {
            return error(
                StatusCode::BAD_REQUEST,
                "'application_credential' is a required property",
            );
        };
        let secret = ac.get("secret").and_then(Value::as_str).unwrap_or("");
        let found = if let Some(id) = ac.get("id").and_then(Value::as_str) {
            w.app_creds.iter().find(|c| c.id == id)
        } else {
            let name = ac.get("name").and_then(Value::as_str).unwrap_or("");
            let user = ac
                .get("user")
                .and_then(|u| find_user(&w, u))
                .map(|u| u.id.clone());
            w.app_creds
                .iter()
                .find(|c| c.name == name && Some(&c.user_id) == user.as_ref())
        };
        match found {
            Some(c) if c.secret == secret => (c.user_id.clone(), Some(c.project_id.clone())),
            _ => return unauthorized(),
        }
    } else if methods.iter().any(|m| m == "token") {
        let id = identity
            .pointer("/token/id")
            .and_then(Value::as_str)
            .unwrap_or("");
        match w.valid_token(id) {
            Some(t) => (t.user_id.clone(), None),
            None => return unauthorized(),
        }
    } else {
        return error(
            StatusCode::UNAUTHORIZED,
            "Attempted to authenticate with an unsupported method.",
        );
    };
    if let Some(scope) = auth.get("scope") {
        if project_id.is_some() {
            return error(
                StatusCode::UNAUTHORIZED,
                "Application credentials cannot request a scope.",
            );
        }
        let Some(p) = scope.get("project") else {
            return unauthorized();
        };
        match find_project(&w, p) {
            Some(pid) if has_role_on(&w, &user_id, &pid) => project_id = Some(pid),
            _ => return unauthorized(),
        }
    }
    let (id, token) = w.issue_token(&user_id, project_id, methods);
    let body = token_body(&w, &sh, &token);
    let mut r = json_response(StatusCode::CREATED, &body);
    if let Ok(v) = HeaderValue::from_str(&id) {
        r.headers_mut().insert("X-Subject-Token", v);
    }
    r
}

async fn validate(State(sh): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let w = sh.lock();
    if let Err(r) = authenticate(&w, &headers) {
        return r;
    }
    let subject = headers
        .get("x-subject-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match w.valid_token(subject) {
        Some(t) => {
            let mut r = json_response(StatusCode::OK, &token_body(&w, &sh, t));
            if let Ok(v) = HeaderValue::from_str(subject) {
                r.headers_mut().insert("X-Subject-Token", v);
            }
            r
        }
        None => error(StatusCode::NOT_FOUND, "Could not find token."),
    }
}

fn ts(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

fn token_body(w: &World, sh: &Shared, t: &Token) -> Value {
    let user = w.user(&t.user_id);
    let mut token = json!({
        "methods": t.methods,
        "user": {
            "domain": domain(),
            "id": t.user_id,
            "name": user.map(|u| u.name.clone()).unwrap_or_default(),
            "password_expires_at": null
        },
        "audit_ids": [t.audit_id],
        "expires_at": ts(t.expires_at),
        "issued_at": ts(t.issued_at),
    });
    if let Some(pid) = &t.project_id {
        let roles: Vec<Value> = w
            .assignments
            .iter()
            .filter(|a| &a.project_id == pid && a.user_id == t.user_id)
            .filter_map(|a| w.role(&a.role_id))
            .map(|r| json!({"id": r.id, "name": r.name}))
            .collect();
        token["project"] = json!({
            "domain": domain(),
            "id": pid,
            "name": w.project(pid).map(|p| p.name.clone()).unwrap_or_default()
        });
        token["is_domain"] = json!(false);
        token["roles"] = json!(roles);
        token["catalog"] = catalog(&sh.base, &sh.region);
    }
    json!({ "token": token })
}

fn endpoints(url: &str, region: &str, seed: &str) -> Value {
    let eps: Vec<Value> = ["public", "internal", "admin"]
        .iter()
        .map(|i| {
            json!({"id": format!("{seed}-{i}"), "interface": i, "region": region,
                   "region_id": region, "url": url})
        })
        .collect();
    json!(eps)
}

fn catalog(base: &str, region: &str) -> Value {
    json!([
        {"endpoints": endpoints(&format!("{base}/compute/v2.1"), region, "nova"),
         "id": "compute-service", "type": "compute", "name": "nova"},
        {"endpoints": endpoints(&format!("{base}/identity"), region, "keystone"),
         "id": "identity-service", "type": "identity", "name": "keystone"},
        {"endpoints": endpoints(&format!("{base}/placement"), region, "placement"),
         "id": "placement-service", "type": "placement", "name": "placement"}
    ])
}

fn user_value(sh: &Shared, u: &crate::model::User) -> Value {
    let mut v = json!({
        "id": u.id, "name": u.name, "domain_id": DEFAULT_DOMAIN_ID, "enabled": true,
        "default_project_id": u.default_project_id, "password_expires_at": null,
        "options": {}, "links": {"self": format!("{}/identity/v3/users/{}", sh.base, u.id)}
    });
    if let Some(e) = &u.email {
        v["email"] = json!(e);
    }
    v
}

fn project_value(sh: &Shared, p: &crate::model::Project) -> Value {
    json!({
        "id": p.id, "name": p.name, "domain_id": DEFAULT_DOMAIN_ID, "enabled": true,
        "is_domain": false, "parent_id": DEFAULT_DOMAIN_ID, "description": "", "tags": [],
        "options": {}, "links": {"self": format!("{}/identity/v3/projects/{}", sh.base, p.id)}
    })
}

fn list_links(sh: &Shared, what: &str) -> Value {
    json!({"self": format!("{}/identity/v3/{what}", sh.base), "previous": null, "next": null})
}

async fn list_users(
    State(sh): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let w = sh.lock();
    if let Err(r) = authenticate(&w, &headers) {
        return r;
    }
    let users: Vec<Value> = w
        .users
        .iter()
        .filter(|u| q.get("name").is_none_or(|n| &u.name == n))
        .map(|u| user_value(&sh, u))
        .collect();
    json_response(
        StatusCode::OK,
        &json!({"users": users, "links": list_links(&sh, "users")}),
    )
}

async fn get_user(
    State(sh): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let w = sh.lock();
    if let Err(r) = authenticate(&w, &headers) {
        return r;
    }
    match w.user(&id) {
        Some(u) => json_response(StatusCode::OK, &json!({"user": user_value(&sh, u)})),
        None => error(
            StatusCode::NOT_FOUND,
            &format!("Could not find user: {id}."),
        ),
    }
}

async fn list_projects(
    State(sh): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let w = sh.lock();
    if let Err(r) = authenticate(&w, &headers) {
        return r;
    }
    let projects: Vec<Value> = w
        .projects
        .iter()
        .filter(|p| q.get("name").is_none_or(|n| &p.name == n))
        .map(|p| project_value(&sh, p))
        .collect();
    json_response(
        StatusCode::OK,
        &json!({"projects": projects, "links": list_links(&sh, "projects")}),
    )
}

async fn get_project(
    State(sh): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let w = sh.lock();
    if let Err(r) = authenticate(&w, &headers) {
        return r;
    }
    match w.project(&id) {
        Some(p) => json_response(StatusCode::OK, &json!({"project": project_value(&sh, p)})),
        None => error(
            StatusCode::NOT_FOUND,
            &format!("Could not find project: {id}."),
        ),
    }
}

async fn list_roles(State(sh): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let w = sh.lock();
    if let Err(r) = authenticate(&w, &headers) {
        return r;
    }
    let roles: Vec<Value> = w
        .roles
        .iter()
        .map(|r| json!({"id": r.id, "name": r.name, "domain_id": null, "description": null,
                        "options": {}, "links": {"self": format!("{}/identity/v3/roles/{}", sh.base, r.id)}}))
        .collect();
    json_response(
        StatusCode::OK,
        &json!({"roles": roles, "links": list_links(&sh, "roles")}),
    )
}

fn flag(q: &HashMap<String, String>, k: &str) -> bool {
    q.get(k)
        .is_some_and(|v| !matches!(v.to_ascii_lowercase().as_str(), "0" | "false" | "no"))
}

async fn role_assignments(
    State(sh): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let w = sh.lock();
    if let Err(r) = authenticate(&w, &headers) {
        return r;
    }
    let names = flag(&q, "include_names");
    let out: Vec<Value> = w
        .assignments
        .iter()
        .filter(|a| q.get("scope.project.id").is_none_or(|p| &a.project_id == p))
        .filter(|a| q.get("user.id").is_none_or(|u| &a.user_id == u))
        .filter(|a| q.get("role.id").is_none_or(|r| &a.role_id == r))
        .map(|a| {
            let mut role = json!({"id": a.role_id});
            let mut user = json!({"id": a.user_id});
            let mut project = json!({"id": a.project_id});
            if names {
                role["name"] = json!(w.role(&a.role_id).map(|r| r.name.clone()));
                user["name"] = json!(w.user(&a.user_id).map(|u| u.name.clone()));
                user["domain"] = domain();
                project["name"] = json!(w.project(&a.project_id).map(|p| p.name.clone()));
                project["domain"] = domain();
            }
            json!({
                "role": role, "user": user, "scope": {"project": project},
                "links": {"assignment": format!("{}/identity/v3/projects/{}/users/{}/roles/{}",
                                                sh.base, a.project_id, a.user_id, a.role_id)}
            })
        })
        .collect();
    json_response(
        StatusCode::OK,
        &json!({"role_assignments": out, "links": list_links(&sh, "role_assignments")}),
    )
}
