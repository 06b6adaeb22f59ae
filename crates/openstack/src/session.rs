//! The Keystone session: one token reused until it nears expiry, the
//! service catalog, and the one HTTP path every call takes (timeout,
//! re-authentication once on a 401, retries for idempotent reads only).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use novaha_core::Secret;
use novaha_core::backoff::Backoff;
use novaha_core::http::CappedBody;
use novaha_core::text::error_chain;
use rand::Rng;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::config::{CloudConfig, Credentials, DomainRef, ProjectRef, TlsConfig, UserRef};
use crate::error::{OpenStackError, excerpt};

/// A token is renewed this long before Keystone says it expires.
const EXPIRY_MARGIN: Duration = Duration::from_secs(120);

/// The service an API call goes to; its endpoint comes from the catalog.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceType {
    /// Nova (`compute`).
    Compute,
    /// Keystone (`identity`).
    Identity,
    /// Placement (`placement`).
    Placement,
}

impl ServiceType {
    /// The catalog's type name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Compute => "compute",
            Self::Identity => "identity",
            Self::Placement => "placement",
        }
    }
}

/// One HTTP call as the clients describe it.
#[derive(Debug)]
pub(crate) struct Call {
    /// Names the call in errors and logs (`nova list servers`).
    pub name: &'static str,
    /// HTTP method.
    pub method: Method,
    /// The service whose endpoint the path is relative to.
    pub service: ServiceType,
    /// Path (and query) after the endpoint, starting with `/` or empty.
    pub path: String,
    /// JSON body.
    pub body: Option<Value>,
    /// Extra headers (microversion).
    pub headers: HeaderMap,
    /// True for reads that may be retried; mutating calls are sent once
    /// (plus once more after a 401, which Keystone returns before Nova acts).
    pub idempotent: bool,
}

impl Call {
    pub(crate) fn get(name: &'static str, service: ServiceType, path: String) -> Self {
        Self {
            name,
            method: Method::GET,
            service,
            path,
            body: None,
            headers: HeaderMap::new(),
            idempotent: true,
        }
    }

    pub(crate) fn mutate(
        name: &'static str,
        method: Method,
        service: ServiceType,
        path: String,
        body: Value,
    ) -> Self {
        Self {
            name,
            method,
            service,
            path,
            body: Some(body),
            headers: HeaderMap::new(),
            idempotent: false,
        }
    }

    fn method_str(&self) -> &'static str {
        match self.method {
            Method::GET => "GET",
            Method::POST => "POST",
            Method::PUT => "PUT",
            Method::DELETE => "DELETE",
            Method::PATCH => "PATCH",
            _ => "HTTP",
        }
    }
}

/// A successful answer: the whole body, and the server's clock.
#[derive(Debug)]
pub(crate) struct Answer {
    pub body: Vec<u8>,
    /// The response's `Date` header (the answering server's clock, whole
    /// seconds), when present and valid.
    pub date: Option<DateTime<Utc>>,
    /// The request id the peer answered with (`x-openstack-request-id`,
    /// else `x-compute-request-id`), else the one sent.
    pub request_id: String,
}

/// The header novaha sends its own request id in, and reads the peer's from.
const REQUEST_ID: &str = "x-openstack-request-id";

/// A fresh request id in the form oslo.middleware accepts as a global
/// request id (`req-<uuid>`): Nova then logs it beside its own.
fn new_request_id() -> String {
    let mut bytes = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut bytes);
    // A version-4 UUID.
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let h: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "req-{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The id the peer answered with, if it did.
fn answered_id(headers: &reqwest::header::HeaderMap) -> Option<String> {
    ["x-openstack-request-id", "x-compute-request-id"]
        .iter()
        .find_map(|h| headers.get(*h))
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Parses an HTTP `Date` header (`Sat, 21 Nov 2026 03:00:00 GMT`, RFC 9110's
/// IMF-fixdate, which RFC 2822 parsing accepts); anything else is `None`.
pub(crate) fn http_date(value: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc2822(value.trim())
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

#[derive(Debug, Deserialize)]
struct CatalogService {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    endpoints: Vec<CatalogEndpoint>,
}

#[derive(Debug, Deserialize)]
struct CatalogEndpoint {
    interface: String,
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    region_id: Option<String>,
    url: String,
}

#[derive(Debug, Deserialize)]
struct TokenBody {
    token: TokenInfo,
}

#[derive(Debug, Deserialize)]
struct TokenInfo {
    #[serde(default)]
    expires_at: Option<DateTime<Utc>>,
    #[serde(default)]
    catalog: Vec<CatalogService>,
    #[serde(default)]
    project: Option<IdOnly>,
    #[serde(default)]
    user: Option<IdOnly>,
}

#[derive(Debug, Deserialize)]
struct IdOnly {
    id: String,
}

/// An issued token with what came with it.
#[derive(Debug)]
struct Token {
    value: Secret,
    expires_at: Option<DateTime<Utc>>,
    catalog: Vec<CatalogService>,
    generation: u64,
}

/// Who the session is authenticated as (ids from the token).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The user id.
    pub user_id: Option<String>,
    /// The project id the token is scoped to.
    pub project_id: Option<String>,
}

/// An authenticated Keystone session shared by the Nova and Keystone
/// clients. Cheap to share behind an `Arc`; every method is cancel-safe
/// (dropping a call's future drops the request; a token being fetched is
/// simply fetched again).
pub struct Session {
    http: reqwest::Client,
    cloud: CloudConfig,
    token: Mutex<Option<Arc<Token>>>,
    identity: std::sync::Mutex<Option<Identity>>,
    generation: AtomicU64,
    auths: AtomicU64,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("auth_url", &self.cloud.auth_url)
            .field("source", &self.cloud.source)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Builds the HTTP client (timeout, TLS trust) for `cloud`. Does no I/O:
    /// the first call authenticates.
    pub fn new(cloud: CloudConfig) -> Result<Self, OpenStackError> {
        let mut builder = reqwest::Client::builder()
            .timeout(cloud.timeout)
            .connect_timeout(cloud.timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("novaha/", env!("CARGO_PKG_VERSION")));
        match &cloud.tls {
            TlsConfig::System => {}
            TlsConfig::CaFile(path) => {
                let pem = std::fs::read(path).map_err(|e| {
                    OpenStackError::Tls(format!("CA file {}: unreadable: {e}", path.display()))
                })?;
                let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                    OpenStackError::Tls(format!("CA file {}: not PEM: {e}", path.display()))
                })?;
                if certs.is_empty() {
                    return Err(OpenStackError::Tls(format!(
                        "CA file {}: no certificate in it",
                        path.display()
                    )));
                }
                builder = builder.tls_built_in_root_certs(false);
                for c in certs {
                    builder = builder.add_root_certificate(c);
                }
            }
            TlsConfig::Insecure => {
                tracing::warn!(
                    auth_url = %cloud.auth_url,
                    "tls certificate verification is disabled for openstack (insecure)"
                );
                builder = builder.danger_accept_invalid_certs(true);
            }
        }
        let http = builder
            .build()
            .map_err(|e| OpenStackError::Tls(format!("http client: {e}")))?;
        Ok(Self {
            http,
            cloud,
            token: Mutex::new(None),
            identity: std::sync::Mutex::new(None),
            generation: AtomicU64::new(0),
            auths: AtomicU64::new(0),
        })
    }

    /// The resolved cloud this session talks to.
    pub fn cloud(&self) -> &CloudConfig {
        &self.cloud
    }

    /// How many times this session has authenticated (for tests and
    /// metrics: a token is reused until it nears expiry).
    pub fn auth_count(&self) -> u64 {
        self.auths.load(Ordering::Relaxed)
    }

    /// Who the token belongs to, once authenticated.
    pub fn identity(&self) -> Option<Identity> {
        self.identity.lock().ok().and_then(|g| g.clone())
    }

    /// Authenticates now (or reuses a fresh token): the reachability check
    /// of `check-config`.
    pub async fn authenticate(&self) -> Result<(), OpenStackError> {
        self.token().await.map(|_| ())
    }

    /// The endpoint URL of `service` from the catalog, for the configured
    /// interface and region (without a trailing `/`).
    pub async fn endpoint(&self, service: ServiceType) -> Result<String, OpenStackError> {
        let token = self.token().await?;
        self.endpoint_in(&token, service)
    }

    fn endpoint_in(&self, token: &Token, service: ServiceType) -> Result<String, OpenStackError> {
        let iface = self.cloud.interface.as_str();
        let region = self.cloud.region.as_deref();
        let found = token
            .catalog
            .iter()
            .filter(|s| s.kind == service.as_str())
            .flat_map(|s| s.endpoints.iter())
            .find(|e| {
                e.interface == iface
                    && region.is_none_or(|r| {
                        e.region.as_deref() == Some(r) || e.region_id.as_deref() == Some(r)
                    })
            });
        match found {
            // Identity endpoints are often unversioned (`http://h/identity`).
            Some(e) if service == ServiceType::Identity => {
                let url = e.url.trim_end_matches('/');
                if url.ends_with("/v3") {
                    Ok(url.to_owned())
                } else {
                    Ok(format!("{url}/v3"))
                }
            }
            Some(e) => Ok(e.url.trim_end_matches('/').to_owned()),
            // Keystone itself is always reachable at the auth URL.
            None if service == ServiceType::Identity => Ok(self.cloud.auth_url.clone()),
            None => Err(OpenStackError::NoEndpoint {
                service_type: service.as_str().to_owned(),
                interface: iface.to_owned(),
                region: region.unwrap_or("any").to_owned(),
            }),
        }
    }

    /// A valid token: the cached one unless it is missing or near expiry.
    /// Holding the lock while authenticating makes concurrent callers wait
    /// for one token instead of each fetching their own.
    async fn token(&self) -> Result<Arc<Token>, OpenStackError> {
        let mut slot = self.token.lock().await;
        if let Some(t) = slot.as_ref() {
            let fresh = t.expires_at.is_none_or(|exp| {
                let margin = chrono::Duration::from_std(EXPIRY_MARGIN)
                    .unwrap_or_else(|_| chrono::Duration::seconds(120));
                Utc::now() + margin < exp
            });
            if fresh {
                return Ok(t.clone());
            }
            tracing::debug!(auth_url = %self.cloud.auth_url, "keystone token near expiry, renewing");
        }
        let t = Arc::new(self.issue_token().await?);
        *slot = Some(t.clone());
        Ok(t)
    }

    /// Forgets `generation`'s token (after a 401), unless a newer one
    /// already replaced it.
    async fn invalidate(&self, generation: u64) {
        let mut slot = self.token.lock().await;
        if slot.as_ref().is_some_and(|t| t.generation == generation) {
            *slot = None;
        }
    }

    fn secrets(&self) -> Vec<&str> {
        match &self.cloud.credentials {
            Credentials::Password { password, .. } => vec![password.expose()],
            Credentials::ApplicationCredential { secret, .. } => vec![secret.expose()],
        }
    }

    fn auth_body(&self) -> Value {
        fn domain(d: &DomainRef) -> Value {
            match d {
                DomainRef::Id(id) => json!({ "id": id }),
                DomainRef::Name(n) => json!({ "name": n }),
            }
        }
        match &self.cloud.credentials {
            Credentials::Password {
                user,
                password,
                project,
            } => {
                let mut u = match user {
                    UserRef::Id(id) => json!({ "id": id }),
                    UserRef::Name { name, domain: d } => {
                        json!({ "name": name, "domain": domain(d) })
                    }
                };
                u["password"] = Value::String(password.expose().to_owned());
                let p = match project {
                    ProjectRef::Id(id) => json!({ "id": id }),
                    ProjectRef::Name { name, domain: d } => {
                        json!({ "name": name, "domain": domain(d) })
                    }
                };
                json!({ "auth": {
                    "identity": { "methods": ["password"], "password": { "user": u } },
                    "scope": { "project": p }
                }})
            }
            Credentials::ApplicationCredential { id, secret } => json!({ "auth": {
                "identity": {
                    "methods": ["application_credential"],
                    "application_credential": { "id": id, "secret": secret.expose() }
                }
            }}),
        }
    }

    async fn issue_token(&self) -> Result<Token, OpenStackError> {
        const CALL: &str = "keystone authenticate";
        let url = format!("{}/auth/tokens", self.cloud.auth_url);
        let path = url_path(&url);
        let rid = new_request_id();
        let sent = self
            .http
            .post(&url)
            .header(REQUEST_ID, &rid)
            .json(&self.auth_body())
            .send()
            .await
            .map_err(|e| self.transport_error(CALL, "POST", &path, e, false, &rid))?;
        let status = sent.status();
        let rid = answered_id(sent.headers()).unwrap_or(rid);
        let subject = sent
            .headers()
            .get("x-subject-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = read_body(sent)
            .await
            .map_err(|e| self.transport_error(CALL, "POST", &path, e, false, &rid))?
            .ok_or_else(|| too_large(CALL, "POST", &path, false, &rid))?;
        let text = String::from_utf8_lossy(&body);
        if !status.is_success() {
            let body = excerpt(&text, &self.secrets());
            return Err(
                if status.is_client_error() && status != StatusCode::TOO_MANY_REQUESTS {
                    OpenStackError::AuthRefused {
                        path,
                        status: status.as_u16(),
                        body,
                    }
                } else {
                    OpenStackError::Http {
                        call: CALL,
                        method: "POST",
                        path,
                        status: status.as_u16(),
                        body,
                        request_id: Some(rid.as_str().into()),
                    }
                },
            );
        }
        let malformed = |detail: String| OpenStackError::Malformed {
            call: CALL,
            method: "POST",
            path: path.clone(),
            detail,
            body: excerpt(&text, &self.secrets()),
            request_id: Some(rid.as_str().into()),
        };
        let value = subject
            .filter(|s| !s.is_empty())
            .ok_or_else(|| malformed("no X-Subject-Token header".into()))?;
        let parsed: TokenBody = serde_json::from_slice(&body)
            .map_err(|e| malformed(excerpt(&e.to_string(), &[value.as_str()])))?;
        *self
            .identity
            .lock()
            .map_err(|_| OpenStackError::Config("session identity lock poisoned".into()))? =
            Some(Identity {
                user_id: parsed.token.user.map(|u| u.id),
                project_id: parsed.token.project.map(|p| p.id),
            });
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        self.auths.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            auth_url = %self.cloud.auth_url,
            expires_at = ?parsed.token.expires_at,
            services = parsed.token.catalog.len(),
            "keystone token issued"
        );
        Ok(Token {
            value: Secret::new(value),
            expires_at: parsed.token.expires_at,
            catalog: parsed.token.catalog,
            generation,
        })
    }

    fn transport_error(
        &self,
        call: &'static str,
        method: &'static str,
        path: &str,
        e: reqwest::Error,
        mutating: bool,
        request_id: &str,
    ) -> OpenStackError {
        if e.is_timeout() {
            OpenStackError::Timeout {
                call,
                method,
                path: path.to_owned(),
                after: self.cloud.timeout,
                mutating,
                request_id: Some(request_id.into()),
            }
        } else {
            // reqwest's message names the URL (no credentials in it) and the cause.
            OpenStackError::Transport {
                call,
                method,
                path: path.to_owned(),
                detail: excerpt(&error_chain(&e), &self.secrets()),
                mutating,
                request_id: Some(request_id.into()),
            }
        }
    }

    /// Sends `call`: retried with backoff when idempotent and the error is
    /// retryable, re-authenticated once on a 401. Cancel-safe for reads.
    pub(crate) async fn send(&self, call: &Call) -> Result<Answer, OpenStackError> {
        let attempts = if call.idempotent {
            self.cloud.retry.attempts.max(1)
        } else {
            1
        };
        let mut attempt = 1;
        loop {
            match self.send_authenticated(call).await {
                Ok(a) => return Ok(a),
                Err(e) if e.is_retryable() && attempt < attempts => {
                    let delay = backoff(&self.cloud.retry, attempt);
                    tracing::warn!(
                        call = call.name,
                        attempt,
                        delay_ms = delay.as_millis() as u64,
                        error = %e,
                        "openstack read failed, retrying"
                    );
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn send_authenticated(&self, call: &Call) -> Result<Answer, OpenStackError> {
        let token = self.token().await?;
        match self.send_once(call, &token).await? {
            Ok(answer) => Ok(answer),
            Err(unauthorized) => {
                tracing::info!(
                    call = call.name,
                    error = %unauthorized,
                    "openstack answered 401, re-authenticating once"
                );
                self.invalidate(token.generation).await;
                let token = self.token().await?;
                match self.send_once(call, &token).await? {
                    Ok(answer) => Ok(answer),
                    Err(again) => Err(again),
                }
            }
        }
    }

    /// One HTTP exchange. `Ok(Err(e))` is a 401 (the caller may
    /// re-authenticate); `Err` is any other failure.
    async fn send_once(
        &self,
        call: &Call,
        token: &Token,
    ) -> Result<Result<Answer, OpenStackError>, OpenStackError> {
        let method = call.method_str();
        let base = self.endpoint_in(token, call.service)?;
        let url = format!("{base}{}", call.path);
        let path = url_path(&url);
        let mut auth =
            HeaderValue::from_str(token.value.expose()).map_err(|_| OpenStackError::Malformed {
                call: "keystone authenticate",
                method: "POST",
                path: url_path(&self.cloud.auth_url),
                detail: "token is not a valid header value".into(),
                body: String::new(),
                request_id: None,
            })?;
        auth.set_sensitive(true);
        // Every call carries its own id; Nova logs it as the global request
        // id beside its own (which it answers with).
        let rid = new_request_id();
        let mut req = self
            .http
            .request(call.method.clone(), &url)
            .header(HeaderName::from_static("x-auth-token"), auth)
            .header(REQUEST_ID, &rid)
            .headers(call.headers.clone());
        if let Some(body) = &call.body {
            req = req.json(body);
        }
        let mutating = !call.idempotent;
        let resp = req
            .send()
            .await
            .map_err(|e| self.transport_error(call.name, method, &path, e, mutating, &rid))?;
        let status = resp.status();
        let date = resp
            .headers()
            .get(reqwest::header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(http_date);
        let answered = answered_id(resp.headers());
        let body = read_body(resp)
            .await
            .map_err(|e| self.transport_error(call.name, method, &path, e, mutating, &rid))?;
        tracing::debug!(
            call = call.name,
            method,
            path = %path,
            status = status.as_u16(),
            request_id = %rid,
            answered_request_id = answered.as_deref().unwrap_or(""),
            "openstack call"
        );
        let rid = answered.unwrap_or(rid);
        let Some(body) = body else {
            return Err(too_large(call.name, method, &path, mutating, &rid));
        };
        if status.is_success() {
            return Ok(Ok(Answer {
                body,
                date,
                request_id: rid,
            }));
        }
        let mut secrets = self.secrets();
        secrets.push(token.value.expose());
        let err = OpenStackError::Http {
            call: call.name,
            method,
            path,
            status: status.as_u16(),
            body: excerpt(&String::from_utf8_lossy(&body), &secrets),
            request_id: Some(rid.into()),
        };
        if status == StatusCode::UNAUTHORIZED {
            Ok(Err(err))
        } else {
            Err(err)
        }
    }

    /// Parses a successful answer as `T`; a body that is not the expected
    /// JSON is a [`OpenStackError::Malformed`] naming the call.
    pub(crate) fn parse<T: DeserializeOwned>(
        &self,
        call: &Call,
        answer: &Answer,
    ) -> Result<T, OpenStackError> {
        serde_json::from_slice(&answer.body).map_err(|e| OpenStackError::Malformed {
            call: call.name,
            method: call.method_str(),
            path: call.path.clone(),
            detail: excerpt(&e.to_string(), &self.secrets()),
            body: excerpt(&String::from_utf8_lossy(&answer.body), &self.secrets()),
            request_id: Some(answer.request_id.as_str().into()),
        })
    }

    /// Sends `call` and parses its answer.
    pub(crate) async fn json<T: DeserializeOwned>(&self, call: &Call) -> Result<T, OpenStackError> {
        let answer = self.send(call).await?;
        self.parse(call, &answer)
    }
}

/// The longest successful answer read from Keystone, Nova or Placement.
/// The largest novaha asks for are listings: a page of detailed servers
/// (about 5-10 KiB a server, so 5-10 MiB for a 1,000-server page), and the
/// unpaged lists of an old or big cloud (every compute service, every
/// hypervisor before microversion 2.33, every resource provider), a few MiB
/// for thousands of hosts; a token with a large catalog is some hundred
/// KiB. 64 MiB leaves a wide margin over all of these while keeping a broken
/// proxy or a hostile endpoint from making the daemon hold an unbounded
/// answer: a longer one is [`OpenStackError::TooLarge`].
pub(crate) const BODY_LIMIT: usize = 64 << 20;

/// Reads `resp`'s body: up to [`BODY_LIMIT`] of a success, an excerpt's
/// worth of an error status. `None`: a success longer than the limit (not
/// read further).
async fn read_body(mut resp: reqwest::Response) -> Result<Option<Vec<u8>>, reqwest::Error> {
    let success = resp.status().is_success();
    let mut body = CappedBody::for_answer(success, BODY_LIMIT);
    while let Some(chunk) = resp.chunk().await?
        && body.push(&chunk)
    {}
    let (bytes, complete) = body.finish();
    Ok((complete || !success).then_some(bytes))
}

/// The error for a success answer longer than [`BODY_LIMIT`].
fn too_large(
    call: &'static str,
    method: &'static str,
    path: &str,
    mutating: bool,
    request_id: &str,
) -> OpenStackError {
    OpenStackError::TooLarge {
        call,
        method,
        path: path.to_owned(),
        limit: BODY_LIMIT,
        mutating,
        request_id: Some(request_id.into()),
    }
}

/// The delay before retry number `attempt` (1-based): exponential from
/// `base`, capped at `cap`, with equal jitter (half fixed, half random;
/// [`Backoff::jittered`]).
pub(crate) fn backoff(retry: &crate::config::RetryConfig, attempt: u32) -> Duration {
    Backoff::new(retry.base, retry.cap).jittered(attempt, rand::thread_rng().gen_range(0.0..=1.0))
}

/// The path and query of a URL, for error messages.
fn url_path(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_owned(),
        },
        Err(_) => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RetryConfig;

    #[test]
    fn backoff_grows_and_is_capped() {
        let r = RetryConfig {
            attempts: 10,
            base: Duration::from_millis(100),
            cap: Duration::from_secs(1),
        };
        for _ in 0..50 {
            let d1 = backoff(&r, 1);
            assert!(d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(100));
            let d3 = backoff(&r, 3);
            assert!(d3 >= Duration::from_millis(200) && d3 <= Duration::from_millis(400));
            let d9 = backoff(&r, 9);
            assert!(d9 >= Duration::from_millis(500) && d9 <= Duration::from_secs(1));
        }
        assert!(backoff(&r, 200) <= Duration::from_secs(1));
    }

    fn cloud(tls: TlsConfig) -> CloudConfig {
        CloudConfig {
            auth_url: "https://k/v3".into(),
            credentials: Credentials::ApplicationCredential {
                id: "a".into(),
                secret: Secret::new("s"),
            },
            region: None,
            interface: crate::config::Interface::Public,
            tls,
            timeout: Duration::from_secs(1),
            retry: RetryConfig::default(),
            source: "test".into(),
        }
    }

    #[test]
    fn tls_ca_file_problems_are_clear() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let err = Session::new(cloud(TlsConfig::CaFile(missing))).unwrap_err();
        assert!(matches!(err, OpenStackError::Tls(_)), "{err:?}");
        assert!(err.to_string().contains("missing.pem"), "{err}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = Session::new(cloud(TlsConfig::CaFile(empty))).unwrap_err();
        assert!(err.to_string().contains("empty.pem"), "{err}");
        assert!(Session::new(cloud(TlsConfig::Insecure)).is_ok());
        assert!(Session::new(cloud(TlsConfig::System)).is_ok());
    }

    #[test]
    fn http_dates_parse_in_utc_and_garbage_is_none() {
        let t = http_date("Sat, 21 Nov 2026 03:00:07 GMT").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-11-21T03:00:07+00:00");
        assert_eq!(http_date(" Sat, 21 Nov 2026 03:00:07 GMT ").unwrap(), t);
        assert!(http_date("yesterday").is_none());
        assert!(http_date("").is_none());
    }

    #[test]
    fn url_path_keeps_query() {
        assert_eq!(
            url_path("http://h:1/compute/v2.1/servers?x=1"),
            "/compute/v2.1/servers?x=1"
        );
    }
}
