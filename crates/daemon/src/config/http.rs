//! `[http]`: where `/metrics`, `/healthz` and `/readyz` are served.

use std::net::SocketAddr;

use serde::Deserialize;

/// `[http]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Listen address (fixed default `127.0.0.1:9450`).
    pub listen: SocketAddr,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9450)),
        }
    }
}
