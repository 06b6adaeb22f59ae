//! A BMC that answers with an endless body (a broken or hostile firmware)
//! must not make the daemon read it all: the driver stops at a bound and
//! says why, for a success body and for an error body alike.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::time::Duration;

use novaha_core::drivers::fence::{FenceError, FenceTarget};
use novaha_core::kv::BmcConfig;
use novaha_core::{NodeName, Secret};
use novaha_fence::{FenceRegistry, FenceSettings};
use novaha_testkit::huge_body::HugeBody;

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

/// The power reading against `bmc`, which must stop early.
async fn read_power(bmc: &HugeBody) -> FenceError {
    let settings = FenceSettings {
        confirm_timeout: Duration::from_secs(5),
        poll_interval: Duration::from_millis(100),
        ..FenceSettings::default()
    };
    let registry = FenceRegistry::new(&settings).unwrap();
    let t = target(bmc.url());
    let fencer = registry.fencer_for(&t).unwrap();
    bmc.bounded(fencer.power_state(&t)).await.unwrap_err()
}

#[tokio::test]
async fn an_oversized_answer_is_refused_at_a_bound_not_read_whole() {
    // 256 MiB: far beyond any Redfish resource.
    let bmc = HugeBody::serve(200, 256 << 20).await;
    let err = read_power(&bmc).await;
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
    let bmc = HugeBody::serve(500, 64 << 20).await;
    let err = read_power(&bmc).await;
    let text = err.to_string();
    assert!(matches!(err, FenceError::Unreachable { .. }), "{text}");
    assert!(text.contains("HTTP 500"), "{text}");
    assert!(text.len() < 2_000, "{} bytes of error", text.len());
}
