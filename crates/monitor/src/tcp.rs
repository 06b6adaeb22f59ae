//! The `tcp` signal: can a TCP connection to the node's port be opened
//! within the timeout?

use std::time::Duration;

use serde::Serialize;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// What one probe found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum TcpOutcome {
    /// A connection was opened (and closed at once): the node answers.
    Open,
    /// No connection: refused, unreachable or timed out.
    Closed {
        /// Why.
        detail: String,
    },
    /// The address did not resolve (in time): this says nothing about the
    /// node.
    Unresolved {
        /// Why.
        detail: String,
    },
}

/// Connects to `address:port` (a name or an IP; every resolved address is
/// tried in turn) within `timeout` overall, resolution included. Read-only
/// in effect, cancel-safe.
pub async fn probe(address: &str, port: u16, timeout: Duration) -> TcpOutcome {
    let deadline = Instant::now() + timeout;
    let resolved =
        tokio::time::timeout_at(deadline, tokio::net::lookup_host((address, port))).await;
    let addrs: Vec<_> = match resolved {
        Err(_) => {
            return TcpOutcome::Unresolved {
                detail: format!("resolving {address} took longer than {timeout:?}"),
            };
        }
        Ok(Err(e)) => {
            return TcpOutcome::Unresolved {
                detail: format!("resolving {address}: {e}"),
            };
        }
        Ok(Ok(a)) => a.collect(),
    };
    if addrs.is_empty() {
        return TcpOutcome::Unresolved {
            detail: format!("{address} resolved to no address"),
        };
    }
    let mut last = String::new();
    for addr in addrs {
        match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
            Ok(Ok(_stream)) => return TcpOutcome::Open,
            Ok(Err(e)) => last = format!("connect to {addr}: {e}"),
            Err(_) => {
                return TcpOutcome::Closed {
                    detail: format!("connect to {addr}: no answer within {timeout:?}"),
                };
            }
        }
    }
    TcpOutcome::Closed { detail: last }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn open_and_refused_ports() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        assert_eq!(
            probe("127.0.0.1", port, Duration::from_secs(2)).await,
            TcpOutcome::Open
        );
        drop(listener);
        let out = probe("127.0.0.1", port, Duration::from_secs(2)).await;
        assert!(
            matches!(&out, TcpOutcome::Closed { detail } if detail.contains("127.0.0.1")),
            "{out:?}"
        );
    }

    #[tokio::test]
    async fn an_unresolvable_name_is_unresolved() {
        let out = probe("no-such-host.invalid", 22, Duration::from_secs(3)).await;
        assert!(matches!(out, TcpOutcome::Unresolved { .. }), "{out:?}");
    }
}
