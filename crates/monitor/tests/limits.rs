//! A Consul agent (or a proxy in front of it) that answers the health read
//! with a huge body must not make the monitor read it all: it stops at its
//! bound and says so for a success body; an error body is cut to an
//! excerpt. The token never shows in either error.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use novaha_consul::ConsulSettings;
use novaha_core::Secret;
use novaha_monitor::{ConsulHealth, MonitorError};
use novaha_testkit::huge_body::HugeBody;

const TOKEN: &str = "consul-acl-secret-token";

/// 256 MiB: four times the bound, far beyond any cluster's checks.
const HUGE: usize = 256 << 20;

/// One health read of `agent`, which must stop early.
async fn checks(agent: &HugeBody) -> MonitorError {
    let settings = ConsulSettings {
        address: agent.url().to_owned(),
        token: Some(Secret::new(TOKEN)),
        request_timeout: Duration::from_secs(20),
        tls: Default::default(),
    };
    let health = ConsulHealth::new(&settings, Duration::from_secs(20)).unwrap();
    agent.bounded(health.checks()).await.unwrap_err()
}

#[tokio::test]
async fn an_oversized_health_answer_is_refused_at_the_bound() {
    let agent = HugeBody::serve(200, HUGE).await;
    let err = checks(&agent).await;
    let text = err.to_string();
    assert!(text.contains("larger than 67108864 bytes"), "{text}");
    assert!(
        !err.is_retryable(),
        "the same read would bring the same answer"
    );
    assert!(!text.contains(TOKEN), "{text}");
}

#[tokio::test]
async fn an_oversized_health_error_is_cut_to_an_excerpt() {
    let agent = HugeBody::serve(500, 64 << 20).await;
    let err = checks(&agent).await;
    let text = err.to_string();
    assert!(text.contains("HTTP 500"), "{text}");
    assert!(err.is_retryable(), "{text}");
    assert!(text.len() < 2_000, "{} bytes of error", text.len());
    assert!(!text.contains(TOKEN), "{text}");
}
