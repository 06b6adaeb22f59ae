//! The Consul HTTP client: one `reqwest` client, built with the TLS
//! settings by [`crate::tls::http_client`], for every call (transactions,
//! blocking queries, recursive and plain reads, sessions, agent checks,
//! lock acquire/release). Every call carries a timeout and the ACL token
//! (as a header, never in a URL or a log line).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use novaha_core::Secret;
use novaha_core::http::CappedBody;
use novaha_core::text::{error_chain, excerpt};
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use tracing::debug;

use crate::error::ConsulError;
use crate::tls::{ConsulTls, http_client};

/// The longest successful answer read from Consul (by this client and by
/// the monitor's health read). The largest novaha asks for are the
/// recursive read of its whole K/V tree (a few KiB a node, Consul itself
/// caps one value at 512 KiB) and every check of every node (a few hundred
/// bytes each): some MiB for thousands of nodes. 64 MiB leaves a wide margin over that while keeping a broken
/// proxy or a runaway tree from making the daemon hold an unbounded answer.
pub const BODY_LIMIT: usize = 64 << 20;

/// Consul's limit on operations in one `/v1/txn` (1.8.x).
pub const MAX_TXN_OPS: usize = 64;

/// Where Consul is and how to talk to it. The daemon's config layer decides
/// precedence between its file and `CONSUL_HTTP_ADDR` / `CONSUL_HTTP_TOKEN`;
/// this crate reads no environment variable itself.
#[derive(Clone, Debug)]
pub struct ConsulSettings {
    /// Base URL of the local agent, e.g. `http://127.0.0.1:8500`
    /// (`127.0.0.1:8500` is taken as `http://`).
    pub address: String,
    /// ACL token sent as `X-Consul-Token`; never logged.
    pub token: Option<Secret>,
    /// Timeout of every non-blocking call (a blocking query gets its wait
    /// time on top).
    pub request_timeout: Duration,
    /// TLS towards the agent (an `https://` address): CA, client
    /// certificate, server name.
    pub tls: ConsulTls,
}

/// One key as Consul returns it.
#[derive(Clone, PartialEq, Eq)]
pub struct KvPair {
    /// Full key.
    pub key: String,
    /// Decoded value; `None` when stored without a value.
    pub value: Option<Vec<u8>>,
    /// ModifyIndex: the CAS token.
    pub modify_index: u64,
    /// LockIndex: how many times the key was acquired.
    pub lock_index: u64,
    /// The session holding the key's lock, if any.
    pub session: Option<String>,
}

impl fmt::Debug for KvPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Values may hold BMC passwords: print their length only.
        f.debug_struct("KvPair")
            .field("key", &self.key)
            .field("value_len", &self.value.as_ref().map(Vec::len))
            .field("modify_index", &self.modify_index)
            .field("lock_index", &self.lock_index)
            .field("session", &self.session)
            .finish()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawKv {
    key: String,
    value: Option<String>,
    #[serde(default)]
    modify_index: u64,
    #[serde(default)]
    lock_index: u64,
    #[serde(default)]
    session: Option<String>,
}

impl RawKv {
    fn decode(self) -> Result<KvPair, String> {
        let value = match self.value {
            None => None,
            Some(v) => Some(
                B64.decode(v.as_bytes())
                    .map_err(|e| format!("value of {} is not base64: {e}", self.key))?,
            ),
        };
        Ok(KvPair {
            key: self.key,
            value,
            modify_index: self.modify_index,
            lock_index: self.lock_index,
            session: self.session.filter(|s| !s.is_empty()),
        })
    }
}

/// One operation of a `/v1/txn` (KV verbs).
#[derive(Clone, PartialEq, Eq)]
pub enum TxnOp {
    /// `set`: unconditional write (never used as leader).
    Set {
        /// Full key.
        key: String,
        /// New value.
        value: Vec<u8>,
    },
    /// `cas`: write if ModifyIndex is `index` (0 = create only).
    Cas {
        /// Full key.
        key: String,
        /// New value.
        value: Vec<u8>,
        /// Expected ModifyIndex.
        index: u64,
    },
    /// `get`: read the key (fails the txn if it does not exist).
    Get {
        /// Full key.
        key: String,
    },
    /// `delete-cas`: delete if ModifyIndex is `index`.
    DeleteCas {
        /// Full key.
        key: String,
        /// Expected ModifyIndex.
        index: u64,
    },
    /// `check-index`: fail unless ModifyIndex is `index`.
    CheckIndex {
        /// Full key.
        key: String,
        /// Expected ModifyIndex.
        index: u64,
    },
    /// `check-session`: fail unless `session` holds the key's lock.
    CheckSession {
        /// Full key (the leader key).
        key: String,
        /// Session that must hold it.
        session: String,
    },
}

impl TxnOp {
    /// The key the op is about.
    pub fn key(&self) -> &str {
        match self {
            Self::Set { key, .. }
            | Self::Cas { key, .. }
            | Self::Get { key }
            | Self::DeleteCas { key, .. }
            | Self::CheckIndex { key, .. }
            | Self::CheckSession { key, .. } => key,
        }
    }

    fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        let kv = match self {
            Self::Set { key, value } => {
                json!({"Verb": "set", "Key": key, "Value": B64.encode(value)})
            }
            Self::Cas { key, value, index } => {
                json!({"Verb": "cas", "Key": key, "Value": B64.encode(value), "Index": index})
            }
            Self::Get { key } => json!({"Verb": "get", "Key": key}),
            Self::DeleteCas { key, index } => {
                json!({"Verb": "delete-cas", "Key": key, "Index": index})
            }
            Self::CheckIndex { key, index } => {
                json!({"Verb": "check-index", "Key": key, "Index": index})
            }
            Self::CheckSession { key, session } => {
                json!({"Verb": "check-session", "Key": key, "Session": session})
            }
        };
        json!({ "KV": kv })
    }
}

impl fmt::Debug for TxnOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print values (they may be secrets).
        match self {
            Self::Set { key, value } => write!(f, "set {key} ({} bytes)", value.len()),
            Self::Cas { key, value, index } => {
                write!(f, "cas {key}@{index} ({} bytes)", value.len())
            }
            Self::Get { key } => write!(f, "get {key}"),
            Self::DeleteCas { key, index } => write!(f, "delete-cas {key}@{index}"),
            Self::CheckIndex { key, index } => write!(f, "check-index {key}@{index}"),
            Self::CheckSession { key, session } => write!(f, "check-session {key} {session}"),
        }
    }
}

/// One failed op of a rolled-back transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnFailure {
    /// Index of the failed op in the request.
    pub op_index: usize,
    /// Consul's reason.
    pub what: String,
}

/// What a transaction did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnOutcome {
    /// Every op applied; the KV results in order (for `get`, `cas`, ...).
    Committed(Vec<KvPair>),
    /// Nothing applied (HTTP 409); why, per failed op.
    RolledBack(Vec<TxnFailure>),
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TxnResponse {
    #[serde(default)]
    results: Option<Vec<TxnResult>>,
    #[serde(default)]
    errors: Option<Vec<TxnError>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TxnResult {
    #[serde(rename = "KV")]
    kv: Option<RawKv>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TxnError {
    op_index: usize,
    what: String,
}

/// A raw answer: status, `X-Consul-Index`, body.
pub(crate) struct Answer {
    pub status: StatusCode,
    pub index: Option<u64>,
    pub body: Vec<u8>,
}

impl Answer {
    /// An excerpt of the body for an error ([`EXCERPT_CHARS`] at most).
    fn excerpt(&self) -> String {
        excerpt(&String::from_utf8_lossy(&self.body), EXCERPT_CHARS, &[])
    }

    /// The body decoded as JSON; an answer that does not decode is a
    /// [`ConsulError::Decode`] naming `what`.
    fn json<T: serde::de::DeserializeOwned>(&self, what: &str) -> Result<T, ConsulError> {
        serde_json::from_slice(&self.body).map_err(|e| ConsulError::Decode {
            what: what.into(),
            detail: e.to_string(),
        })
    }

    fn into_status_error(self, what: &str) -> ConsulError {
        ConsulError::Status {
            what: what.to_owned(),
            status: self.status.as_u16(),
            body: self.excerpt(),
        }
    }
}

/// The longest excerpt of Consul's answer kept in an error.
const EXCERPT_CHARS: usize = 200;

struct Inner {
    base: url::Url,
    http: reqwest::Client,
    headers: HeaderMap,
    timeout: Duration,
}

/// A handle on one Consul agent's HTTP API. Cheap to clone (one shared
/// connection pool); safe to use from many tasks.
#[derive(Clone)]
pub struct Consul {
    inner: Arc<Inner>,
}

impl fmt::Debug for Consul {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consul")
            .field("address", &self.inner.base.as_str())
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

fn normalise_address(address: &str) -> Result<url::Url, ConsulError> {
    let address = address.trim();
    if address.is_empty() {
        return Err(ConsulError::Settings("consul address is empty".into()));
    }
    let with_scheme = if address.contains("://") {
        address.to_owned()
    } else {
        format!("http://{address}")
    };
    let url = url::Url::parse(&with_scheme)
        .map_err(|e| ConsulError::Settings(format!("consul address {address:?}: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ConsulError::Settings(format!(
            "consul address {address:?}: scheme must be http or https"
        )));
    }
    if url.host_str().is_none() {
        return Err(ConsulError::Settings(format!(
            "consul address {address:?}: no host"
        )));
    }
    Ok(url)
}

impl Consul {
    /// Builds the client. Fails on an unusable address or a token that
    /// cannot be sent as a header; does no I/O.
    pub fn new(settings: &ConsulSettings) -> Result<Self, ConsulError> {
        let base = normalise_address(&settings.address)?;
        if settings.request_timeout.is_zero() {
            return Err(ConsulError::Settings(
                "consul request timeout must be above zero".into(),
            ));
        }
        let token = settings.token.as_ref().filter(|t| !t.is_empty());
        let mut headers = HeaderMap::new();
        if let Some(t) = token.map(|t| t.expose()) {
            let mut v = HeaderValue::from_str(t).map_err(|_| {
                ConsulError::Settings(
                    "consul token contains characters not allowed in a header".into(),
                )
            })?;
            v.set_sensitive(true);
            headers.insert("X-Consul-Token", v);
        }
        let (http, base) = http_client(&base, &settings.tls, settings.request_timeout)?;
        Ok(Self {
            inner: Arc::new(Inner {
                base,
                http,
                headers,
                timeout: settings.request_timeout,
            }),
        })
    }

    /// The agent's base URL.
    pub fn address(&self) -> &str {
        self.inner.base.as_str()
    }

    /// The per-call timeout.
    pub fn request_timeout(&self) -> Duration {
        self.inner.timeout
    }

    fn url(&self, segments: &[&str], trailing_slash: bool, query: &[(&str, &str)]) -> url::Url {
        let mut url = self.inner.base.clone();
        {
            let mut p = url
                .path_segments_mut()
                .expect("http(s) URLs always have path segments");
            p.pop_if_empty();
            p.push("v1");
            for s in segments {
                for part in s.split('/') {
                    p.push(part);
                }
            }
            if trailing_slash {
                p.push("");
            }
        }
        if !query.is_empty() {
            let mut q = url.query_pairs_mut();
            for (k, v) in query {
                q.append_pair(k, v);
            }
        }
        // `?recurse` style flags: Consul accepts `recurse=` as set.
        url
    }

    /// Sends one request and reads its answer, within `timeout`: a success
    /// up to [`BODY_LIMIT`] (longer is [`ConsulError::TooLarge`]), an error
    /// status up to an excerpt's worth.
    pub(crate) async fn send(
        &self,
        what: &str,
        method: Method,
        url: url::Url,
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<Answer, ConsulError> {
        let mut req = self
            .inner
            .http
            .request(method, url)
            .headers(self.inner.headers.clone())
            .timeout(timeout);
        if let Some(b) = body {
            req = req.body(b);
        }
        let fut = async {
            let mut resp = req.send().await?;
            let status = resp.status();
            let index = resp
                .headers()
                .get("X-Consul-Index")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            let mut body = CappedBody::for_answer(status.is_success(), BODY_LIMIT);
            while let Some(chunk) = resp.chunk().await?
                && body.push(&chunk)
            {}
            let (body, complete) = body.finish();
            Ok::<_, reqwest::Error>((
                Answer {
                    status,
                    index,
                    body,
                },
                complete,
            ))
        };
        // The outer timeout also bounds a stalled body read.
        match tokio::time::timeout(timeout + Duration::from_millis(100), fut).await {
            Err(_) => Err(ConsulError::Timeout {
                what: what.to_owned(),
                timeout,
            }),
            Ok(Err(e)) if e.is_timeout() => Err(ConsulError::Timeout {
                what: what.to_owned(),
                timeout,
            }),
            Ok(Err(e)) => Err(ConsulError::Transport {
                what: what.to_owned(),
                detail: error_chain(&e),
            }),
            Ok(Ok((a, complete))) if a.status.is_success() && !complete => {
                Err(ConsulError::TooLarge {
                    what: what.to_owned(),
                    limit: BODY_LIMIT,
                })
            }
            Ok(Ok((a, _))) => {
                debug!(what, status = a.status.as_u16(), "consul answered");
                Ok(a)
            }
        }
    }

    /// A GET of `/v1/<path>` whose success answer is JSON; any other
    /// status is an error naming `path`.
    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &[&str],
    ) -> Result<T, ConsulError> {
        let what = path.join("/");
        let url = self.url(path, false, &[]);
        let a = self
            .send(&what, Method::GET, url, None, self.inner.timeout)
            .await?;
        if !a.status.is_success() {
            return Err(a.into_status_error(&what));
        }
        a.json(&what)
    }

    /// Reachability: the agent answers and its cluster has a leader.
    pub async fn ping(&self) -> Result<(), ConsulError> {
        let leader: String = self.get_json(&["status", "leader"]).await?;
        if leader.is_empty() {
            return Err(ConsulError::NoLeader);
        }
        Ok(())
    }

    /// The node name of the agent we talk to (`/v1/agent/self`).
    pub async fn agent_node_name(&self) -> Result<String, ConsulError> {
        #[derive(Deserialize)]
        struct AgentSelf {
            #[serde(rename = "Config")]
            config: AgentConfig,
        }
        #[derive(Deserialize)]
        struct AgentConfig {
            #[serde(rename = "NodeName")]
            node_name: String,
        }
        let s: AgentSelf = self.get_json(&["agent", "self"]).await?;
        Ok(s.config.node_name)
    }

    /// Runs one transaction over `/v1/txn` (consulrs has none). All or
    /// nothing: a failed op rolls the whole transaction back and comes back
    /// as [`TxnOutcome::RolledBack`]. A timeout or 5xx is an unknown outcome.
    pub async fn txn(&self, ops: &[TxnOp]) -> Result<TxnOutcome, ConsulError> {
        let what = "txn";
        if ops.is_empty() {
            return Ok(TxnOutcome::Committed(Vec::new()));
        }
        if ops.len() > MAX_TXN_OPS {
            return Err(ConsulError::TooManyOps {
                ops: ops.len(),
                max: MAX_TXN_OPS,
            });
        }
        let body = serde_json::Value::Array(ops.iter().map(TxnOp::to_json).collect());
        let body = serde_json::to_vec(&body).expect("a JSON value always serialises");
        let a = self
            .send(
                what,
                Method::PUT,
                self.url(&["txn"], false, &[]),
                Some(body),
                self.inner.timeout,
            )
            .await?;
        let committed = match a.status {
            StatusCode::OK => true,
            StatusCode::CONFLICT => false,
            _ => return Err(a.into_status_error(what)),
        };
        let parsed: TxnResponse =
            serde_json::from_slice(&a.body).map_err(|e| ConsulError::Decode {
                what: what.into(),
                detail: format!("{e}: {}", a.excerpt()),
            })?;
        if committed {
            let mut out = Vec::new();
            for r in parsed.results.unwrap_or_default() {
                if let Some(kv) = r.kv {
                    out.push(kv.decode().map_err(|detail| ConsulError::Decode {
                        what: what.into(),
                        detail,
                    })?);
                }
            }
            Ok(TxnOutcome::Committed(out))
        } else {
            let errors: Vec<TxnFailure> = parsed
                .errors
                .unwrap_or_default()
                .into_iter()
                .map(|e| TxnFailure {
                    op_index: e.op_index,
                    what: e.what,
                })
                .collect();
            if errors.is_empty() {
                return Err(ConsulError::Decode {
                    what: what.into(),
                    detail: "HTTP 409 without errors".into(),
                });
            }
            Ok(TxnOutcome::RolledBack(errors))
        }
    }

    /// Every key below `prefix` (a folder: `prefix/`) in one consistent
    /// recursive read; returns the `X-Consul-Index` and the pairs.
    pub async fn kv_list(&self, prefix: &str) -> Result<(u64, Vec<KvPair>), ConsulError> {
        let what = "kv recursive read";
        let prefix = prefix.trim_matches('/');
        let url = self.url(
            &["kv", prefix],
            true,
            &[("recurse", "true"), ("consistent", "")],
        );
        let a = self
            .send(what, Method::GET, url, None, self.inner.timeout)
            .await?;
        let index = a.index.unwrap_or(0);
        match a.status {
            StatusCode::NOT_FOUND => Ok((index, Vec::new())),
            StatusCode::OK => {
                let raw: Vec<RawKv> = a.json(what)?;
                let pairs = raw
                    .into_iter()
                    .map(RawKv::decode)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|detail| ConsulError::Decode {
                        what: what.into(),
                        detail,
                    })?;
                Ok((index, pairs))
            }
            _ => Err(a.into_status_error(what)),
        }
    }

    /// Reads one key (consistent). `index`: `Some((i, wait))` makes it a
    /// blocking query that returns when the key's index passes `i` or after
    /// `wait`. Returns the pair (None if absent) and `X-Consul-Index`.
    pub async fn kv_get(
        &self,
        key: &str,
        block: Option<(u64, Duration)>,
    ) -> Result<(Option<KvPair>, u64), ConsulError> {
        let what = "kv read";
        let (url, timeout) = match block {
            None => (
                self.url(&["kv", key], false, &[("consistent", "")]),
                self.inner.timeout,
            ),
            Some((index, wait)) => {
                let idx = index.to_string();
                let w = format!("{}ms", wait.as_millis().max(1));
                (
                    self.url(&["kv", key], false, &[("index", &idx), ("wait", &w)]),
                    // Consul adds up to wait/16 of jitter.
                    wait + wait / 16 + self.inner.timeout,
                )
            }
        };
        let a = self.send(what, Method::GET, url, None, timeout).await?;
        let index = a.index.unwrap_or(0);
        match a.status {
            StatusCode::NOT_FOUND => Ok((None, index)),
            StatusCode::OK => {
                let raw: Vec<RawKv> = a.json(what)?;
                let pair = match raw.into_iter().next() {
                    Some(r) => Some(r.decode().map_err(|detail| ConsulError::Decode {
                        what: what.into(),
                        detail,
                    })?),
                    None => None,
                };
                Ok((pair, index))
            }
            _ => Err(a.into_status_error(what)),
        }
    }

    /// `PUT /v1/kv/<key>?acquire=<session>` with `value`. True when the
    /// session now holds the lock (false: held by another, or lock-delay).
    pub async fn kv_acquire(
        &self,
        key: &str,
        session: &str,
        value: Vec<u8>,
    ) -> Result<bool, ConsulError> {
        self.kv_lock_op("kv acquire", key, "acquire", session, Some(value))
            .await
    }

    /// `PUT /v1/kv/<key>?release=<session>`, keeping the value. True when the
    /// session held it and released it.
    pub async fn kv_release(&self, key: &str, session: &str) -> Result<bool, ConsulError> {
        self.kv_lock_op("kv release", key, "release", session, None)
            .await
    }

    async fn kv_lock_op(
        &self,
        what: &str,
        key: &str,
        verb: &str,
        session: &str,
        value: Option<Vec<u8>>,
    ) -> Result<bool, ConsulError> {
        let url = self.url(&["kv", key], false, &[(verb, session)]);
        let a = self
            .send(what, Method::PUT, url, value, self.inner.timeout)
            .await?;
        if !a.status.is_success() {
            return Err(a.into_status_error(what));
        }
        match String::from_utf8_lossy(&a.body).trim() {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(ConsulError::Decode {
                what: what.into(),
                detail: format!("expected true or false, got {:?}", a.excerpt()),
            }),
        }
    }

    /// Registers (or re-registers) a TTL check with the local agent. A new
    /// check starts critical: pass it before binding a session to it.
    pub async fn check_register(
        &self,
        id: &str,
        name: &str,
        ttl: Duration,
    ) -> Result<(), ConsulError> {
        let what = "agent check register";
        let body = serde_json::json!({
            "ID": id,
            "Name": name,
            "TTL": format!("{}ms", ttl.as_millis().max(1)),
            "Notes": "passed every second by novaha while it runs; its sessions are bound to it",
        });
        let body = serde_json::to_vec(&body).expect("a JSON value always serialises");
        let url = self.url(&["agent", "check", "register"], false, &[]);
        let a = self
            .send(what, Method::PUT, url, Some(body), self.inner.timeout)
            .await?;
        if !a.status.is_success() {
            return Err(a.into_status_error(what));
        }
        Ok(())
    }

    /// Every health check of every node in the catalog, as `node -> check
    /// id -> status` (`passing`, `warning`, `critical`), in one request
    /// (`/v1/health/state/any`): the monitor's Consul signal. Read-only,
    /// cancel-safe, never retried here.
    pub async fn health_checks(
        &self,
    ) -> Result<BTreeMap<String, HashMap<String, String>>, ConsulError> {
        #[derive(Deserialize)]
        struct Row {
            #[serde(rename = "Node")]
            node: String,
            #[serde(rename = "CheckID")]
            check_id: String,
            #[serde(rename = "Status")]
            status: String,
        }
        let rows: Vec<Row> = self.get_json(&["health", "state", "any"]).await?;
        let mut out: BTreeMap<String, HashMap<String, String>> = BTreeMap::new();
        for r in rows {
            out.entry(r.node).or_default().insert(r.check_id, r.status);
        }
        Ok(out)
    }

    /// The status of the local agent's check `id` (`passing`, `warning`,
    /// `critical`), or `None` when the agent has no such check.
    pub async fn check_status(&self, id: &str) -> Result<Option<String>, ConsulError> {
        #[derive(Deserialize)]
        struct Check {
            #[serde(rename = "Status")]
            status: String,
        }
        let checks: HashMap<String, Check> = self.get_json(&["agent", "checks"]).await?;
        Ok(checks.get(id).map(|c| c.status.clone()))
    }

    /// Marks the TTL check `id` passing. An error status means the agent
    /// does not know the check (deregistered) or refuses us.
    pub async fn check_pass(&self, id: &str) -> Result<(), ConsulError> {
        let what = "agent check pass";
        let url = self.url(&["agent", "check", "pass", id], false, &[]);
        let a = self
            .send(what, Method::PUT, url, None, self.inner.timeout)
            .await?;
        if !a.status.is_success() {
            return Err(a.into_status_error(what));
        }
        Ok(())
    }

    /// Deregisters the check `id`; a check that does not exist is not an error.
    pub async fn check_deregister(&self, id: &str) -> Result<(), ConsulError> {
        let what = "agent check deregister";
        let url = self.url(&["agent", "check", "deregister", id], false, &[]);
        let a = self
            .send(what, Method::PUT, url, None, self.inner.timeout)
            .await?;
        if a.status.is_success() {
            return Ok(());
        }
        let body = a.excerpt().to_ascii_lowercase();
        if a.status == StatusCode::NOT_FOUND || body.contains("unknown check") {
            return Ok(());
        }
        Err(a.into_status_error(what))
    }

    /// Creates a session: `ttl`, `lock_delay`, behaviour `release`, bound
    /// to `node_checks` of the local agent's node.
    pub async fn session_create(
        &self,
        name: &str,
        ttl: Duration,
        lock_delay: Duration,
        node_checks: &[&str],
    ) -> Result<String, ConsulError> {
        let what = "session create";
        let body = serde_json::json!({
            "Name": name,
            "TTL": format!("{}s", ttl.as_secs().max(1)),
            "LockDelay": format!("{}ms", lock_delay.as_millis()),
            "Behavior": "release",
            "NodeChecks": node_checks,
        });
        let a = self
            .send(
                what,
                Method::PUT,
                self.url(&["session", "create"], false, &[]),
                Some(body.to_string().into_bytes()),
                self.inner.timeout,
            )
            .await?;
        if !a.status.is_success() {
            return Err(a.into_status_error(what));
        }
        #[derive(Deserialize)]
        struct Created {
            #[serde(rename = "ID")]
            id: String,
        }
        let c: Created = a.json(what)?;
        Ok(c.id)
    }

    /// Renews a session. `Ok(false)`: the session no longer exists (HTTP
    /// 404): it was invalidated.
    pub async fn session_renew(&self, id: &str) -> Result<bool, ConsulError> {
        let what = "session renew";
        let a = self
            .send(
                what,
                Method::PUT,
                self.url(&["session", "renew", id], false, &[]),
                None,
                self.inner.timeout,
            )
            .await?;
        match a.status {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(a.into_status_error(what)),
        }
    }

    /// Destroys a session; destroying a gone session is not an error. Keys
    /// it still locks are released (with lock-delay).
    pub async fn session_destroy(&self, id: &str) -> Result<(), ConsulError> {
        let what = "session destroy";
        let a = self
            .send(
                what,
                Method::PUT,
                self.url(&["session", "destroy", id], false, &[]),
                None,
                self.inner.timeout,
            )
            .await?;
        if a.status.is_success() || a.status == StatusCode::NOT_FOUND {
            return Ok(());
        }
        Err(a.into_status_error(what))
    }

    /// A plain key read: the pair, or None when absent.
    pub async fn kv_read_plain(&self, key: &str) -> Result<Option<KvPair>, ConsulError> {
        let what = "kv read";
        let a = self
            .send(
                what,
                Method::GET,
                self.url(&["kv", key], false, &[]),
                None,
                self.inner.timeout,
            )
            .await?;
        if a.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !a.status.is_success() {
            return Err(a.into_status_error(what));
        }
        let raw: Vec<RawKv> = a.json(what)?;
        raw.into_iter()
            .next()
            .map(RawKv::decode)
            .transpose()
            .map_err(|detail| ConsulError::Decode {
                what: what.into(),
                detail,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(addr: &str) -> ConsulSettings {
        ConsulSettings {
            address: addr.into(),
            token: Some(Secret::new("tok-123")),
            request_timeout: Duration::from_secs(1),
            tls: ConsulTls::default(),
        }
    }

    #[test]
    fn address_without_scheme_is_http() {
        let c = Consul::new(&settings("127.0.0.1:8500")).expect("valid");
        assert_eq!(c.address(), "http://127.0.0.1:8500/");
        let u = c.url(&["kv", "a/b c"], true, &[("recurse", "true")]);
        assert_eq!(
            u.as_str(),
            "http://127.0.0.1:8500/v1/kv/a/b%20c/?recurse=true"
        );
    }

    #[test]
    fn bad_settings_are_refused_without_echoing_the_token() {
        for bad in ["", "ftp://x", "http://"] {
            assert!(Consul::new(&settings(bad)).is_err(), "{bad:?}");
        }
        let mut s = settings("http://127.0.0.1:1");
        s.token = Some(Secret::new("bad\ntoken"));
        let e = Consul::new(&s).expect_err("newline in token");
        assert!(!e.to_string().contains("bad"), "{e}");
        let c = Consul::new(&settings("http://127.0.0.1:1")).expect("valid");
        assert!(!format!("{c:?}").contains("tok-123"));
    }

    #[test]
    fn txn_ops_serialise_to_consul_verbs_and_debug_hides_values() {
        let op = TxnOp::Cas {
            key: "k".into(),
            value: b"s3cret".to_vec(),
            index: 7,
        };
        assert_eq!(
            op.to_json(),
            serde_json::json!({"KV": {"Verb": "cas", "Key": "k", "Value": "czNjcmV0", "Index": 7}})
        );
        assert!(!format!("{op:?}").contains("s3cret"));
        let op = TxnOp::CheckSession {
            key: "p/leader".into(),
            session: "abc".into(),
        };
        assert_eq!(op.to_json()["KV"]["Verb"], "check-session");
    }

    #[tokio::test]
    async fn unreachable_agent_is_a_retryable_error() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let c = Consul::new(&settings(&format!("http://127.0.0.1:{port}"))).expect("valid");
        let e = c.ping().await.expect_err("nothing listens");
        assert!(e.is_retryable(), "{e}");
        assert!(!e.to_string().contains("tok-123"));
    }
}
