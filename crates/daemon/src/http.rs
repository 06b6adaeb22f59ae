//! The daemon's HTTP endpoints on `[http] listen`: `/metrics` (the
//! Prometheus classic text format from [`Metrics::encode`]), `/healthz`
//! (200 while the process serves requests) and `/readyz` (200 with `leader`
//! or `standby` once Consul answered the last readiness check; 503 when it
//! did not, or while this leader is blind: it cannot judge the nodes, see
//! novaha_monitor::Sight).
//!
//! The server only reads shared state: it never talks to Consul, never
//! decides and never blocks the leader loop. It runs on its own
//! cancellation token, stopped last on shutdown so that a scrape or a
//! readiness probe still answers while the lock is being released.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info};

use crate::metrics::Metrics;

/// The content type of the classic Prometheus text exposition.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What failed in the HTTP server.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The listen address could not be bound (in use, not local, no right).
    #[error("http listener on {addr}: cannot bind: {source}")]
    Bind {
        /// The configured `[http] listen`.
        addr: SocketAddr,
        /// Why the bind failed.
        source: std::io::Error,
    },
    /// The bound socket's address could not be read back.
    #[error("http listener on {addr}: cannot read the bound address: {source}")]
    LocalAddr {
        /// The configured `[http] listen`.
        addr: SocketAddr,
        /// Why it failed.
        source: std::io::Error,
    },
}

impl HttpError {
    /// True when trying again later may succeed: an address in use may be
    /// freed by a process that is exiting; any other bind error needs an
    /// operator (wrong address, no permission).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Bind { source, .. } => source.kind() == std::io::ErrorKind::AddrInUse,
            Self::LocalAddr { .. } => false,
        }
    }
}

/// The daemon's state as the probes report it. Written by the main loop
/// (leader or not) and by the readiness check (Consul answered or not);
/// read by `/readyz`.
#[derive(Debug, Default)]
pub struct Health {
    consul_ok: AtomicBool,
    leader: AtomicBool,
    /// Why the leader is blind, while it is (beyond the grace).
    blind: Mutex<Option<String>>,
}

/// What `/readyz` answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// Consul answered the last check and this process holds the lock.
    Leader,
    /// Consul answered the last check; another process holds the lock (or
    /// nobody yet).
    Standby,
    /// Consul did not answer the last check (or none ran yet).
    NotReady,
    /// This process holds the lock but cannot judge the nodes (no cloud,
    /// auth failing, Nova down) beyond the grace: HA is off.
    Blind,
}

impl Health {
    /// Not ready, not leader: the state before Consul first answers.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Records whether Consul answered the last readiness check.
    pub fn set_consul(&self, answered: bool) {
        self.consul_ok.store(answered, Ordering::Relaxed);
    }

    /// Whether Consul answered the last readiness check.
    pub fn consul_answered(&self) -> bool {
        self.consul_ok.load(Ordering::Relaxed)
    }

    /// Records whether this process holds the leader lock.
    pub fn set_leader(&self, leader: bool) {
        self.leader.store(leader, Ordering::Relaxed);
    }

    /// Records the leader's blindness: `Some(reason)` while it cannot
    /// judge beyond the grace, `None` once it can (or is no longer leader).
    pub fn set_blind(&self, reason: Option<String>) {
        *self.blind.lock().expect("the blind lock is never poisoned") = reason;
    }

    /// Why the leader is blind, while it is.
    pub fn blind_reason(&self) -> Option<String> {
        self.blind
            .lock()
            .expect("the blind lock is never poisoned")
            .clone()
    }

    /// What `/readyz` reports now.
    pub fn readiness(&self) -> Readiness {
        match (
            self.consul_ok.load(Ordering::Relaxed),
            self.leader.load(Ordering::Relaxed),
        ) {
            (false, _) => Readiness::NotReady,
            (true, true) if self.blind_reason().is_some() => Readiness::Blind,
            (true, true) => Readiness::Leader,
            (true, false) => Readiness::Standby,
        }
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

/// The routes, for the server and for in-process tests.
pub fn router(metrics: Arc<Metrics>, health: Arc<Health>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(AppState { metrics, health })
}

async fn metrics_handler(State(s): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        s.metrics.encode(),
    )
        .into_response()
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(s): State<AppState>) -> Response {
    match s.health.readiness() {
        Readiness::Leader => (StatusCode::OK, "leader\n").into_response(),
        Readiness::Standby => (StatusCode::OK, "standby\n").into_response(),
        Readiness::NotReady => {
            (StatusCode::SERVICE_UNAVAILABLE, "consul not reachable\n").into_response()
        }
        Readiness::Blind => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "leader blind: {}\n",
                s.health.blind_reason().unwrap_or_default()
            ),
        )
            .into_response(),
    }
}

/// A running HTTP server.
#[derive(Debug)]
pub struct HttpServer {
    local_addr: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl HttpServer {
    /// Binds `listen` (port 0 picks a free port) and serves on `tracker`
    /// until [`HttpServer::stop`] or `stop` is cancelled. Logs the bound
    /// address. A bind failure is returned, not retried: the caller decides.
    pub async fn start(
        listen: SocketAddr,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
        stop: CancellationToken,
        tracker: &TaskTracker,
    ) -> Result<Self, HttpError> {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| HttpError::Bind {
                addr: listen,
                source,
            })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| HttpError::LocalAddr {
                addr: listen,
                source,
            })?;
        info!(
            listen = %local_addr,
            endpoints = "/metrics /healthz /readyz",
            "http server listening"
        );
        let app = router(metrics, health);
        let until = stop.clone();
        let task = tracker.spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move { until.cancelled().await })
                .await;
            if let Err(e) = served {
                error!(listen = %local_addr, error = %e, "http server failed; /metrics and probes are down");
            }
        });
        Ok(Self {
            local_addr,
            stop,
            task,
        })
    }

    /// The address actually bound (the real port when `listen` had port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, lets requests in flight finish, and waits for the
    /// server task to end.
    pub async fn stop(self) {
        self.stop.cancel();
        if let Err(e) = self.task.await {
            error!(error = %e, "http server task ended abnormally");
        }
        info!(listen = %self.local_addr, "http server stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.expect("write");
        let mut resp = String::new();
        s.read_to_string(&mut resp).await.expect("read");
        let (head, body) = resp.split_once("\r\n\r\n").expect("headers end");
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status");
        (status, head.to_ascii_lowercase(), body.to_owned())
    }

    #[tokio::test]
    async fn probes_and_metrics_follow_the_shared_state() {
        let metrics = Metrics::new();
        let health = Health::new();
        let tracker = TaskTracker::new();
        let server = HttpServer::start(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            metrics.clone(),
            health.clone(),
            CancellationToken::new(),
            &tracker,
        )
        .await
        .expect("start");
        let addr = server.local_addr();
        assert_ne!(addr.port(), 0);
        assert_eq!(get(addr, "/healthz").await.0, 200);
        let (status, _, body) = get(addr, "/readyz").await;
        assert_eq!((status, body.as_str()), (503, "consul not reachable\n"));
        health.set_consul(true);
        assert_eq!(get(addr, "/readyz").await.2, "standby\n");
        health.set_leader(true);
        metrics.set_leader(true);
        let (status, _, body) = get(addr, "/readyz").await;
        assert_eq!((status, body.as_str()), (200, "leader\n"));
        let (status, head, body) = get(addr, "/metrics").await;
        assert_eq!(status, 200);
        assert!(
            head.contains("content-type: text/plain; version=0.0.4"),
            "{head}"
        );
        assert!(body.contains("\nnovaha_leader 1\n"), "{body}");
        health.set_blind(Some("nova: connection refused".into()));
        let (status, _, body) = get(addr, "/readyz").await;
        assert_eq!(
            (status, body.as_str()),
            (503, "leader blind: nova: connection refused\n")
        );
        health.set_blind(None);
        assert_eq!(get(addr, "/readyz").await.2, "leader\n");
        health.set_consul(false);
        assert_eq!(get(addr, "/readyz").await.0, 503);
        assert_eq!(get(addr, "/nope").await.0, 404);
        server.stop().await;
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }

    #[tokio::test]
    async fn a_taken_port_is_a_clear_bind_error() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = taken.local_addr().expect("addr");
        let e = HttpServer::start(
            addr,
            Metrics::new(),
            Health::new(),
            CancellationToken::new(),
            &TaskTracker::new(),
        )
        .await
        .expect_err("port in use");
        assert!(e.is_retryable());
        assert!(
            e.to_string()
                .starts_with(&format!("http listener on {addr}: cannot bind")),
            "{e}"
        );
    }
}
