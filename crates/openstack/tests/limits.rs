//! A Keystone, Nova or Placement that answers with a huge body (a broken
//! proxy, a hostile endpoint) must not make the daemon read it all: the
//! client stops at its bound and says so, naming the call and the limit,
//! for a success body; an error body is cut to an excerpt.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use novaha_core::Secret;
use novaha_openstack::config::AuthSection;
use novaha_openstack::{
    Env, KeystoneClient, OpenStackConfig, OpenStackError, PlacementClient, RetryConfig, Session,
};
use novaha_testkit::huge_body::{HugeBody, Reply};
use serde_json::json;

const PASSWORD: &str = "hunter2-openstack-pw";
const TOKEN: &str = "gAAAA-secret-token-value";

/// 256 MiB: four times the success bound, far beyond any real answer.
const HUGE: usize = 256 << 20;

fn session(auth_url: &str) -> Arc<Session> {
    let cfg = OpenStackConfig {
        auth: Some(AuthSection {
            auth_url: Some(auth_url.to_owned()),
            username: Some("novaha".into()),
            password: Some(Secret::new(PASSWORD)),
            project_name: Some("service".into()),
            user_domain_name: Some("Default".into()),
            project_domain_name: Some("Default".into()),
            ..AuthSection::default()
        }),
        timeout: Duration::from_secs(30),
        // One attempt: each test counts what one call read.
        retry: RetryConfig {
            attempts: 1,
            base: Duration::from_millis(10),
            cap: Duration::from_millis(10),
        },
        ..OpenStackConfig::default()
    };
    Arc::new(Session::new(cfg.resolve(&Env::default()).unwrap()).unwrap())
}

/// A Keystone whose token's catalog puts Placement on the same peer, and
/// every other request answered with `status` and `size` bytes of filler.
async fn cloud(status: u16, size: usize) -> HugeBody {
    let base = Arc::new(std::sync::OnceLock::<String>::new());
    let b = base.clone();
    let peer = HugeBody::start(move |method, path| {
        if method == "POST" && path.ends_with("/auth/tokens") {
            let url = format!("{}/placement", b.get().unwrap());
            let token = json!({"token": {
                "expires_at": "2999-01-01T00:00:00Z",
                "user": {"id": "u1"}, "project": {"id": "p1"},
                "catalog": [{"type": "placement", "name": "placement", "endpoints": [
                    {"interface": "public", "region": "RegionOne", "url": url}
                ]}]
            }});
            Reply::json(201, &token).header("X-Subject-Token", TOKEN)
        } else {
            Reply::filler(status, size)
        }
    })
    .await;
    base.set(peer.url().to_owned()).unwrap();
    peer
}

fn no_secret(text: &str) {
    assert!(!text.contains(PASSWORD), "{text}");
    assert!(!text.contains(TOKEN), "{text}");
}

#[tokio::test]
async fn an_oversized_keystone_token_answer_is_refused_at_the_bound() {
    let peer =
        HugeBody::start(|_, _| Reply::filler(201, HUGE).header("X-Subject-Token", TOKEN)).await;
    let keystone = KeystoneClient::new(session(&format!("{}/v3", peer.url())));
    let err = peer.bounded(keystone.user("u1")).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, OpenStackError::TooLarge { .. }), "{text}");
    assert!(text.contains("keystone authenticate"), "{text}");
    assert!(text.contains("larger than 67108864 bytes"), "{text}");
    assert!(!err.is_retryable(), "the same answer would come again");
    no_secret(&text);
}

#[tokio::test]
async fn an_oversized_keystone_refusal_is_cut_to_an_excerpt() {
    let peer = HugeBody::serve(401, 64 << 20).await;
    let keystone = KeystoneClient::new(session(&format!("{}/v3", peer.url())));
    let err = peer.bounded(keystone.user("u1")).await.unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, OpenStackError::AuthRefused { status: 401, .. }),
        "{text}"
    );
    assert!(text.len() < 2_000, "{} bytes of error", text.len());
    no_secret(&text);
}

#[tokio::test]
async fn an_oversized_api_answer_is_refused_at_the_bound() {
    let peer = cloud(200, HUGE).await;
    let placement = PlacementClient::new(session(&format!("{}/v3", peer.url())));
    let err = peer.bounded(placement.providers()).await.unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(
            err,
            OpenStackError::TooLarge {
                call: "placement list providers",
                limit: 67_108_864,
                mutating: false,
                ..
            }
        ),
        "{text}"
    );
    assert!(text.contains("GET /placement/resource_providers"), "{text}");
    assert!(!err.is_retryable() && !err.outcome_unknown(), "{text}");
    assert!(text.len() < 2_000, "{} bytes of error", text.len());
    no_secret(&text);
}

#[tokio::test]
async fn an_oversized_api_error_is_cut_to_an_excerpt() {
    let peer = cloud(500, 64 << 20).await;
    let placement = PlacementClient::new(session(&format!("{}/v3", peer.url())));
    let err = peer.bounded(placement.providers()).await.unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, OpenStackError::Http { status: 500, .. }),
        "{text}"
    );
    assert!(text.len() < 2_000, "{} bytes of error", text.len());
    no_secret(&text);
}
