//! A BMC that answers with an endless body (a broken or hostile firmware)
//! must not make the daemon read it all: the driver stops at a bound and
//! says why, for a success body and for an error body alike.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::time::{Duration, Instant};

use novaha_core::drivers::fence::{FenceError, FenceTarget};
use novaha_core::kv::BmcConfig;
use novaha_core::{NodeName, Secret};
use novaha_fence::{FenceRegistry, FenceSettings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Serves every request with `status` and a body of `size` bytes of `{`.
async fn endless_bmc(status: &'static str, size: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {size}\r\n\r\n"
                );
                if sock.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = vec![b'{'; 64 * 1024];
                let mut left = size;
                while left > 0 {
                    let n = left.min(chunk.len());
                    if sock.write_all(&chunk[..n]).await.is_err() {
                        return;
                    }
                    left -= n;
                }
            });
        }
    });
    format!("http://{addr}")
}

fn target(base: &str) -> FenceTarget {
    FenceTarget {
        node: NodeName::from("c1"),
        bmc: BmcConfig {
            driver: Some("redfish".into()),
            ip: Some(base.to_owned()),
            user: Some("admin".into()),
            password: Secret::new("hunter2-secret"),
            ..BmcConfig::default()
        },
    }
}

async fn read_power(base: &str) -> (FenceError, Duration) {
    let settings = FenceSettings {
        confirm_timeout: Duration::from_secs(5),
        poll_interval: Duration::from_millis(100),
        ..FenceSettings::default()
    };
    let registry = FenceRegistry::new(&settings).unwrap();
    let t = target(base);
    let fencer = registry.fencer_for(&t).unwrap();
    let started = Instant::now();
    let err = fencer.power_state(&t).await.unwrap_err();
    (err, started.elapsed())
}

#[tokio::test]
async fn an_oversized_answer_is_refused_at_a_bound_not_read_whole() {
    // 256 MiB: far beyond any Redfish resource.
    let base = endless_bmc("200 OK", 256 << 20).await;
    let (err, _took) = read_power(&base).await;
    let text = err.to_string();
    assert!(text.contains("larger than"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
    assert!(
        text.len() < 2_000,
        "the error carries an excerpt, not the body"
    );
}

#[tokio::test]
async fn an_oversized_error_body_is_cut_to_an_excerpt() {
    let base = endless_bmc("500 Internal Server Error", 64 << 20).await;
    let (err, _took) = read_power(&base).await;
    let text = err.to_string();
    assert!(matches!(err, FenceError::Unreachable { .. }), "{text}");
    assert!(text.contains("HTTP 500"), "{text}");
    assert!(text.len() < 2_000, "{} bytes of error", text.len());
}
