//! A Consul agent (or a proxy in front of it) that answers with a huge body
//! must not make the daemon read it all: the client stops at its bound and
//! says so, naming the call and the limit, for a success body; an error
//! body is cut to an excerpt. The token never shows in either error.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use novaha_consul::{Consul, ConsulError, ConsulSettings};
use novaha_core::Secret;
use novaha_testkit::huge_body::HugeBody;

const TOKEN: &str = "consul-acl-secret-token";

/// 256 MiB: four times the bound, far beyond any novaha K/V tree.
const HUGE: usize = 256 << 20;

/// A recursive read of `agent`, which must stop early.
async fn kv_list(agent: &HugeBody) -> ConsulError {
    let consul = Consul::new(&ConsulSettings {
        address: agent.url().to_owned(),
        token: Some(Secret::new(TOKEN)),
        request_timeout: Duration::from_secs(20),
        tls: Default::default(),
    })
    .unwrap();
    agent.bounded(consul.kv_list("novaha")).await.unwrap_err()
}

#[tokio::test]
async fn an_oversized_answer_is_refused_at_the_bound() {
    let agent = HugeBody::serve(200, HUGE).await;
    let err = kv_list(&agent).await;
    let text = err.to_string();
    assert!(
        matches!(
            err,
            ConsulError::TooLarge {
                limit: 67_108_864,
                ..
            }
        ),
        "{text}"
    );
    assert!(text.contains("kv recursive read"), "{text}");
    assert!(
        !err.is_retryable(),
        "the same read would bring the same answer"
    );
    assert!(!text.contains(TOKEN), "{text}");
}

#[tokio::test]
async fn an_oversized_error_body_is_cut_to_an_excerpt() {
    let agent = HugeBody::serve(500, 64 << 20).await;
    let err = kv_list(&agent).await;
    let text = err.to_string();
    assert!(
        matches!(err, ConsulError::Status { status: 500, .. }),
        "{text}"
    );
    assert!(text.len() < 2_000, "{} bytes of error", text.len());
    assert!(!text.contains(TOKEN), "{text}");
}
