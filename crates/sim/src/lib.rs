//! novaha-sim: a Keystone v3 + Nova HTTP simulator with fault injection,
//! for novaha's tests, the demo and the client benchmarks.
//!
//! It owns a small simulated cloud (compute hosts with nova-compute
//! services, spare HA hosts, servers with owners, evacuation migrations,
//! Keystone users/projects/tokens) and serves the subset of the published
//! Keystone v3 and Nova v2.1 APIs that novaha uses, with the published
//! field names, status codes, microversion rules and error bodies, checked
//! against the real Python clients by `tests/fidelity.rs`. A control API
//! under `/sim/` (and the matching Rust methods on [`SimHandle`]) kills and
//! revives hosts, injects faults, expires tokens, moves the clock and lists
//! every mutating call the sim received.
//!
//! It must never be used as a stand-in for the peer a test is about when a
//! real one exists, and never touches anything outside its own listener:
//! no files, no other processes.
//!
//! Layout: `/identity` (Keystone: `/identity/v3`), `/compute` (Nova:
//! `/compute/v2.1`), `/placement` (Placement), `/sim` (control). See
//! docs/simulator.md.

// Handlers return `Result<_, Response>` to answer early with the exact
// error the real service sends; boxing every early answer adds only noise.
#![allow(clippy::result_large_err)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

mod control;
pub mod faults;
mod keystone;
pub mod model;
mod nova;
mod placement;

pub use faults::{FaultKind, FaultRule};
pub use model::{
    Call, Flavor, Inventory, Microversion, Migration, OPT_OUT_KEY, Server, Service, SimError, User,
};

use model::World;

/// What the sim seeds and how it behaves. `Default` gives a small cloud
/// (3 computes x 4 servers, 1 HA host) with short timers.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Compute hosts `compute-1..N`.
    pub hosts: usize,
    /// Servers seeded on each compute host.
    pub instances_per_host: usize,
    /// Spare hosts `ha-1..K`, disabled in Nova with a reason.
    pub ha_nodes: usize,
    /// How long after its last heartbeat a killed host's service reads
    /// `down` (Nova's `service_down_time`).
    pub service_down_time: Duration,
    /// How often a running nova-compute heartbeats (Nova's
    /// `report_interval`): its `updated_at` advances in these steps and
    /// stops when the host is killed. Zero: always now while it runs.
    pub report_interval: Duration,
    /// How long an accepted evacuation takes to land.
    pub evacuate_delay: Duration,
    /// Lifetime of issued Keystone tokens.
    pub token_ttl: Duration,
    /// Highest Nova microversion advertised and accepted.
    pub max_version: Microversion,
    /// Nova's `osapi_max_limit`: the largest page a list returns.
    pub max_limit: usize,
    /// Owner users `user-1..U` (each with an e-mail address).
    pub users: usize,
    /// Projects `project-1..P` the owners are members of.
    pub projects: usize,
    /// Seed of the deterministic RNG (ids, fault rates).
    pub seed: u64,
    /// Admin user name.
    pub username: String,
    /// Admin password.
    pub password: String,
    /// Admin project name.
    pub project: String,
    /// Region of every catalog endpoint.
    pub region: String,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            hosts: 3,
            instances_per_host: 4,
            ha_nodes: 1,
            service_down_time: Duration::from_secs(10),
            report_interval: Duration::from_secs(2),
            evacuate_delay: Duration::from_secs(1),
            token_ttl: Duration::from_secs(3600),
            max_version: Microversion(2, 96),
            max_limit: 1000,
            users: 6,
            projects: 3,
            seed: 42,
            username: "admin".to_owned(),
            password: "admin".to_owned(),
            project: "admin".to_owned(),
            region: "RegionOne".to_owned(),
        }
    }
}

/// The credentials the sim accepts (as in a clouds.yaml entry).
#[derive(Debug, Clone)]
pub struct Credentials {
    /// Keystone URL, `http://ADDR/identity/v3`.
    pub auth_url: String,
    /// User name (`admin`).
    pub username: String,
    /// Password (`admin`).
    pub password: String,
    /// Project name (`admin`).
    pub project_name: String,
    /// User domain name (`Default`).
    pub user_domain_name: String,
    /// Project domain name (`Default`).
    pub project_domain_name: String,
    /// Region (`RegionOne`).
    pub region_name: String,
    /// An application credential of the admin user: id.
    pub application_credential_id: String,
    /// An application credential of the admin user: secret.
    pub application_credential_secret: String,
}

/// State shared by the HTTP handlers and the handle.
#[derive(Debug)]
pub(crate) struct Shared {
    world: Mutex<World>,
    cancel: CancellationToken,
    base: String,
    region: String,
}

impl Shared {
    /// Locks the world and applies the changes due by now.
    pub(crate) fn lock(&self) -> MutexGuard<'_, World> {
        // A panic while holding the lock is a sim bug; the data stays usable.
        let mut w = self
            .world
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        w.tick();
        w
    }
}

/// Entry point: starts simulators.
#[derive(Debug)]
pub struct Sim;

impl Sim {
    /// Starts a sim listening on `addr` (`"127.0.0.1:0"` for a free port),
    /// seeded from `cfg`. It serves until the handle is dropped or
    /// [`SimHandle::shutdown`] is called.
    pub async fn start(addr: &str, cfg: SimConfig) -> Result<SimHandle, SimError> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| SimError::Bind {
                addr: addr.to_owned(),
                source,
            })?;
        let local = listener.local_addr().map_err(|source| SimError::Bind {
            addr: addr.to_owned(),
            source,
        })?;
        let cancel = CancellationToken::new();
        let shared = Arc::new(Shared {
            world: Mutex::new(World::new(&cfg)),
            cancel: cancel.clone(),
            base: format!("http://{local}"),
            region: cfg.region.clone(),
        });
        let app = router(shared.clone());
        let stop = cancel.clone();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "sim server stopped");
            }
        });
        tracing::info!(addr = %local, "sim listening");
        Ok(SimHandle {
            addr: local,
            shared,
            cfg,
            task: Some(task),
        })
    }
}

/// A running sim. Dropping it stops the server.
#[derive(Debug)]
pub struct SimHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    cfg: SimConfig,
    task: Option<JoinHandle<()>>,
}

impl SimHandle {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR` (no trailing slash).
    pub fn base_url(&self) -> String {
        self.shared.base.clone()
    }

    /// Keystone: `http://ADDR/identity/v3`.
    pub fn keystone_url(&self) -> String {
        format!("{}/identity/v3", self.shared.base)
    }

    /// Nova's endpoint as in the catalog: `http://ADDR/compute/v2.1`.
    pub fn nova_url(&self) -> String {
        format!("{}/compute/v2.1", self.shared.base)
    }

    /// The credentials it accepts.
    pub fn credentials(&self) -> Credentials {
        let w = self.shared.lock();
        let app = &w.app_creds[0];
        Credentials {
            auth_url: self.keystone_url(),
            username: self.cfg.username.clone(),
            password: self.cfg.password.clone(),
            project_name: self.cfg.project.clone(),
            user_domain_name: model::DEFAULT_DOMAIN_NAME.to_owned(),
            project_domain_name: model::DEFAULT_DOMAIN_NAME.to_owned(),
            region_name: self.cfg.region.clone(),
            application_credential_id: app.id.clone(),
            application_credential_secret: app.secret.clone(),
        }
    }

    /// Stops `host`'s heartbeat (POST /sim/hosts/{host}/kill): its service
    /// reads `down` once service_down_time has passed.
    pub fn kill(&self, host: &str) -> Result<(), SimError> {
        self.shared.lock().kill(host)
    }

    /// Restarts `host`'s heartbeat (POST /sim/hosts/{host}/revive).
    pub fn revive(&self, host: &str) -> Result<(), SimError> {
        self.shared.lock().revive(host)
    }

    /// Adds a compute host (`ha`: a spare, disabled with a reason).
    pub fn add_host(&self, name: &str, ha: bool) -> Result<(), SimError> {
        self.shared.lock().add_host(name, ha)
    }

    /// Adds an ACTIVE server on `host` owned by `user_id` in `project_id`.
    pub fn add_server(
        &self,
        name: &str,
        host: &str,
        user_id: &str,
        project_id: &str,
        metadata: std::collections::BTreeMap<String, String>,
    ) -> Result<uuid::Uuid, SimError> {
        let mut w = self.shared.lock();
        if w.compute(host).is_none() {
            return Err(SimError::UnknownHost(host.to_owned()));
        }
        Ok(w.add_server(name, host, user_id, project_id, metadata))
    }

    /// Adds an ACTIVE server on `host` with `flavor`, booted from a new
    /// root volume when `boot_from_volume` (Nova then shows `"image": ""`
    /// and the volume attached), else from the image.
    pub fn add_server_with(
        &self,
        name: &str,
        host: &str,
        owner: (&str, &str),
        metadata: std::collections::BTreeMap<String, String>,
        flavor: Flavor,
        boot_from_volume: bool,
    ) -> Result<uuid::Uuid, SimError> {
        let mut w = self.shared.lock();
        if w.compute(host).is_none() {
            return Err(SimError::UnknownHost(host.to_owned()));
        }
        let id = w.add_server(name, host, owner.0, owner.1, metadata);
        let volume = boot_from_volume.then(|| w.rng.uuid());
        if let Some(s) = w.server_mut(&id) {
            s.flavor = flavor;
            s.root_volume = volume;
        }
        Ok(id)
    }

    /// Sets one class (`VCPU`, `MEMORY_MB`, `DISK_GB`) of `host`'s
    /// Placement inventory, as `PUT .../inventories/{class}` would.
    pub fn set_inventory(
        &self,
        host: &str,
        class: &str,
        inventory: model::Inventory,
    ) -> Result<(), SimError> {
        let mut w = self.shared.lock();
        if w.compute(host).is_none() {
            return Err(SimError::UnknownHost(host.to_owned()));
        }
        let k = model::RESOURCE_CLASSES
            .iter()
            .position(|c| *c == class)
            .ok_or_else(|| SimError::BadRequest(format!("no resource class {class}")))?;
        let mut inv = w.inventory(host);
        inv[k] = inventory;
        w.inventories.insert(host.to_owned(), inv);
        let g = w.generations.get(host).copied().unwrap_or(1) + 1;
        w.generations.insert(host.to_owned(), g);
        Ok(())
    }

    /// Placement's allocations on `host`, by server (the servers there plus
    /// evacuations in flight to it): `[VCPU, MEMORY_MB, DISK_GB]` each.
    pub fn allocations_on(&self, host: &str) -> Vec<(uuid::Uuid, [u64; 3])> {
        self.shared.lock().allocations_on(host)
    }

    /// Every mutating call received so far (GET /sim/calls).
    pub fn calls(&self) -> Vec<Call> {
        self.shared.lock().calls.clone()
    }

    /// Forgets the recorded calls.
    pub fn clear_calls(&self) {
        let mut w = self.shared.lock();
        w.calls.clear();
        w.seen.clear();
    }

    /// Every Keystone and Nova request so far (reads too), with the
    /// `X-OpenStack-Request-ID` the client sent and the one answered.
    pub fn seen(&self) -> Vec<model::SeenRequest> {
        self.shared.lock().seen.clone()
    }

    /// Adds a fault rule; returns its id.
    pub fn add_fault(&self, rule: FaultRule) -> u64 {
        control::add_fault(&mut self.shared.lock(), rule)
    }

    /// Removes every fault rule.
    pub fn clear_faults(&self) {
        self.shared.lock().faults.clear();
    }

    /// Makes the next `n` evacuations end in a migration `error` (the
    /// server goes ERROR) even when the target is fine.
    pub fn fail_next_evacuations(&self, n: u32) {
        self.shared.lock().fail_evacuations = n;
    }

    /// Expires every token issued so far: the next call with one gets 401.
    pub fn expire_tokens(&self) {
        self.shared.lock().expire_tokens();
    }

    /// Sets the lifetime of tokens issued from now on.
    pub fn set_token_ttl(&self, ttl: Duration) {
        self.shared.lock().rt.token_ttl = ttl;
    }

    /// Sets service_down_time.
    pub fn set_service_down_time(&self, d: Duration) {
        self.shared.lock().rt.service_down_time = d;
    }

    /// Sets report_interval (how often running services heartbeat).
    pub fn set_report_interval(&self, d: Duration) {
        self.shared.lock().rt.report_interval = d;
    }

    /// The sim's wall clock (what its `Date` headers and `updated_at`
    /// values are read from; moved by [`SimHandle::advance_clock`]).
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.shared.lock().wall()
    }

    /// Sets the evacuation delay for evacuations accepted from now on.
    pub fn set_evacuate_delay(&self, d: Duration) {
        self.shared.lock().rt.evacuate_delay = d;
    }

    /// Sets the highest Nova microversion (to model an older cloud).
    pub fn set_max_version(&self, v: Microversion) {
        self.shared.lock().rt.max_version = v;
    }

    /// Jumps the sim clock forward by `d`.
    pub fn advance_clock(&self, d: Duration) {
        self.shared.lock().advance(d);
    }

    /// The nova-compute service of `host`, with its current `state`.
    pub fn service(&self, host: &str) -> Option<(Service, &'static str)> {
        let w = self.shared.lock();
        w.compute(host).map(|s| (s.clone(), w.state(s)))
    }

    /// The servers currently on `host`.
    pub fn servers_on(&self, host: &str) -> Vec<Server> {
        let w = self.shared.lock();
        w.servers
            .iter()
            .filter(|s| s.host == host)
            .cloned()
            .collect()
    }

    /// Every server.
    pub fn servers(&self) -> Vec<Server> {
        self.shared.lock().servers.clone()
    }

    /// One server.
    pub fn server(&self, id: &uuid::Uuid) -> Option<Server> {
        self.shared.lock().server(id).cloned()
    }

    /// Every migration record.
    pub fn migrations(&self) -> Vec<Migration> {
        self.shared.lock().migrations.clone()
    }

    /// Every Keystone user (with e-mail addresses).
    pub fn users(&self) -> Vec<User> {
        self.shared.lock().users.clone()
    }

    /// Stops the server and waits for it to finish.
    pub async fn shutdown(mut self) {
        self.shared.cancel.cancel();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.shared.cancel.cancel();
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .merge(keystone::routes())
        .merge(nova::routes())
        .merge(placement::routes())
        .merge(control::routes())
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            record_and_inject,
        ))
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            date_header,
        ))
        .with_state(shared)
}

/// An HTTP `Date` header value (IMF-fixdate) for `t`.
pub(crate) fn http_date(t: chrono::DateTime<chrono::Utc>) -> HeaderValue {
    HeaderValue::from_str(&t.format("%a, %d %b %Y %H:%M:%S GMT").to_string())
        .expect("a formatted date is a valid header value")
}

/// Dates every answer with the sim's clock (as a real server dates its
/// answers with its own), unless the handler already did (os-services
/// dates its answer at the instant it reads the heartbeats).
async fn date_header(State(sh): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let mut r = next.run(req).await;
    if !r.headers().contains_key(header::DATE) {
        let now = sh.lock().wall();
        r.headers_mut().insert(header::DATE, http_date(now));
    }
    r
}

async fn not_found(req: Request) -> Response {
    let path = req.uri().path().to_owned();
    if path.starts_with("/identity") {
        keystone::error(StatusCode::NOT_FOUND, "The resource could not be found.")
    } else if path.starts_with("/placement") {
        placement::error(StatusCode::NOT_FOUND, "The resource could not be found.")
    } else {
        nova::fault(
            None,
            StatusCode::NOT_FOUND,
            "The resource could not be found.",
        )
    }
}

/// Replaces secrets in a recorded body.
fn redact(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, val) in m.iter_mut() {
                if matches!(k.as_str(), "password" | "secret" | "adminPass") && val.is_string() {
                    *val = Value::String("***".to_owned());
                } else {
                    redact(val);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(redact),
        _ => {}
    }
}

/// The middleware in front of Keystone and Nova: records mutating calls,
/// then applies the first matching fault rule. Every answer carries an
/// `x-openstack-request-id` (as Nova's and Keystone's do), and the
/// client's own `X-OpenStack-Request-ID` is recorded with it.
async fn record_and_inject(State(sh): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    if path.starts_with("/sim/") || path == "/sim" {
        return next.run(req).await;
    }
    let sent = req
        .headers()
        .get("x-openstack-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let answered = format!("req-{}", uuid::Uuid::new_v4());
    sh.lock().seen.push(model::SeenRequest {
        method: req.method().as_str().to_owned(),
        path: path.clone(),
        sent: sent.clone(),
        answered: answered.clone(),
    });
    let mut resp = record_and_inject_inner(sh, req, next, sent).await;
    if let Ok(v) = HeaderValue::from_str(&answered) {
        resp.headers_mut().insert("x-openstack-request-id", v);
    }
    resp
}

async fn record_and_inject_inner(
    sh: Arc<Shared>,
    req: Request,
    next: Next,
    request_id: Option<String>,
) -> Response {
    let path = req.uri().path().to_owned();
    let method = req.method().as_str().to_owned();
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, 64 * 1024 * 1024).await {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, path = %path, "sim could not read a request body");
            return nova::fault(
                None,
                StatusCode::BAD_REQUEST,
                "could not read the request body",
            );
        }
    };
    let fault = {
        let mut w = sh.lock();
        if method != "GET" && method != "HEAD" {
            let mut body = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes)
                    .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
            };
            redact(&mut body);
            let path_q = parts
                .uri
                .path_and_query()
                .map_or(path.clone(), |p| p.as_str().to_owned());
            let time = w.wall();
            w.calls.push(Call {
                method: method.clone(),
                path: path_q,
                body,
                time,
                request_id,
            });
        }
        control::draw_fault(&mut w, &method, &path)
    };
    if let Some(kind) = fault {
        tracing::debug!(path = %path, method = %method, fault = ?kind, "sim injecting a fault");
        match kind {
            FaultKind::Status { status } => {
                let code =
                    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                return if path.starts_with("/identity") {
                    keystone::error(code, "Injected fault.")
                } else {
                    nova::fault(None, code, "Unexpected API Error (injected fault).")
                };
            }
            FaultKind::Latency { ms } => {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(ms)) => {}
                    _ = sh.cancel.cancelled() => {
                        return StatusCode::SERVICE_UNAVAILABLE.into_response();
                    }
                }
            }
            FaultKind::Hang => {
                sh.cancel.cancelled().await;
                return StatusCode::SERVICE_UNAVAILABLE.into_response();
            }
            FaultKind::Malformed => {
                let mut r = Response::new(Body::from("{\"truncated\": [{\"id\": "));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                return r;
            }
        }
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// Parses a JSON request body, or None for an empty one.
pub(crate) fn parse_body(b: &Bytes) -> Result<Option<Value>, String> {
    if b.iter().all(|c| c.is_ascii_whitespace()) {
        return Ok(None);
    }
    serde_json::from_slice(b)
        .map(Some)
        .map_err(|e| format!("Malformed request body: {e}"))
}

/// A JSON response with a status.
pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut r = (status, axum::Json(body)).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}
