//! The redfish driver against sushy-tools' Redfish emulator (fake systems
//! driver, Basic auth from an htpasswd file), plus a tiny local HTTP server
//! for bodies no real BMC should send (that case is about our parser).

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use novaha_core::kv::BmcConfig;
use novaha_core::{NodeName, PowerState, Secret};
use novaha_fence::{DriverName, FenceError, FenceRegistry, FenceSettings, FenceTarget};
use novaha_testkit::redfish::SushyEmulator;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn settings() -> FenceSettings {
    FenceSettings {
        driver: DriverName::Redfish,
        // The emulator applies a power change 1-11 s after the request.
        confirm_timeout: Duration::from_secs(25),
        poll_interval: Duration::from_millis(250),
        ..FenceSettings::default()
    }
}

fn target(node: &str, base: &str, user: &str, password: &str) -> FenceTarget {
    FenceTarget {
        node: NodeName::from(node),
        bmc: BmcConfig {
            ip: Some(base.to_owned()),
            user: Some(user.to_owned()),
            password: Secret::new(password),
            ..BmcConfig::default()
        },
    }
}

/// PowerState read by the test itself, not through the driver.
async fn power_state(sushy: &SushyEmulator, user: &str, password: &str) -> String {
    let url = format!(
        "{}/redfish/v1/Systems/{}",
        sushy.base_url(),
        sushy.system_id()
    );
    let body: serde_json::Value = reqwest::Client::new()
        .get(url)
        .basic_auth(user, Some(password))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    body["PowerState"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn force_off_is_verified_by_polling_power_state() {
    let sushy = SushyEmulator::start("admin", "pw-redfish-ok");
    let reg = FenceRegistry::new(&settings()).unwrap();
    let t = target("rf-1", &sushy.base_url(), "admin", "pw-redfish-ok");
    let fencer = reg.fencer_for(&t).unwrap();
    assert_eq!(fencer.driver(), "redfish");
    assert_eq!(fencer.power_state(&t).await.unwrap(), PowerState::On);
    assert_eq!(power_state(&sushy, "admin", "pw-redfish-ok").await, "On");

    let fenced = fencer.fence(&t).await.unwrap();
    assert_eq!(fenced.driver(), "redfish");
    assert_eq!(power_state(&sushy, "admin", "pw-redfish-ok").await, "Off");

    // Idempotent: already off is confirmed at once, without a new reset.
    let started = Instant::now();
    fencer.fence(&t).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn configured_system_path_and_unfence() {
    let sushy = SushyEmulator::start("admin", "pw-redfish-path");
    let reg = FenceRegistry::new(&settings()).unwrap();
    let mut t = target("rf-2", &sushy.base_url(), "admin", "pw-redfish-path");
    // By name: the emulator redirects /Systems/<name> to the UUID.
    t.bmc.extra.insert(
        "system_path".into(),
        format!("/redfish/v1/Systems/{}", SushyEmulator::SYSTEM_NAME),
    );
    let fencer = reg.fencer_for(&t).unwrap();
    fencer.fence(&t).await.unwrap();
    assert_eq!(power_state(&sushy, "admin", "pw-redfish-path").await, "Off");
    fencer.unfence(&t).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while fencer.power_state(&t).await.unwrap() != PowerState::On {
        assert!(Instant::now() < deadline, "never powered back on");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn wrong_password_and_bmc_down_are_clear_errors() {
    let mut sushy = SushyEmulator::start("admin", "pw-redfish-right");
    let reg = FenceRegistry::new(&settings()).unwrap();
    let t = target("rf-3", &sushy.base_url(), "admin", "pw-redfish-wrong");
    let err = reg.fencer_for(&t).unwrap().fence(&t).await.unwrap_err();
    assert!(matches!(err, FenceError::Auth { .. }), "{err}");
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("401"), "{err}");
    assert!(!err.to_string().contains("pw-redfish"), "{err}");
    assert_eq!(power_state(&sushy, "admin", "pw-redfish-right").await, "On");

    sushy.stop();
    let t = target("rf-3", &sushy.base_url(), "admin", "pw-redfish-right");
    let started = Instant::now();
    let err = reg.fencer_for(&t).unwrap().fence(&t).await.unwrap_err();
    assert!(matches!(err, FenceError::Unreachable { .. }), "{err}");
    assert!(err.is_retryable());
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// One canned answer: path, status, extra header lines, body.
type Route = (&'static str, u16, &'static str, &'static str);

/// A tiny HTTP server answering fixed bodies by path and recording every
/// request's head; returns its base URL and the record.
async fn canned_server(routes: Vec<Route>) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let routes = routes.clone();
            let record = record.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).into_owned();
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
                record.lock().unwrap().push(head);
                let (status, headers, body) = routes
                    .iter()
                    .find(|(p, ..)| *p == path)
                    .map_or((404, "", "{}"), |(_, s, h, b)| (*s, *h, *b));
                let resp = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n{headers}content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    (base, seen)
}

const ONE_SYSTEM: Route = (
    "/redfish/v1/Systems",
    200,
    "",
    r#"{"Members": [{"@odata.id": "/redfish/v1/Systems/a"}]}"#,
);
const RESET: Route = (
    "/redfish/v1/Systems/a/Actions/ComputerSystem.Reset",
    204,
    "",
    "",
);

#[tokio::test]
async fn malformed_bodies_are_protocol_errors_and_never_fenced() {
    let reg = FenceRegistry::new(&FenceSettings {
        confirm_timeout: Duration::from_millis(500),
        poll_interval: Duration::from_millis(50),
        ..settings()
    })
    .unwrap();

    let (base, _) = canned_server(vec![("/redfish/v1/Systems", 200, "", "{\"Members\": [")]).await;
    let t = target("rf-bad-1", &base, "admin", "pw-canned");
    let err = reg.fencer_for(&t).unwrap().fence(&t).await.unwrap_err();
    assert!(matches!(err, FenceError::Protocol { .. }), "{err}");
    assert!(err.to_string().contains("malformed JSON"), "{err}");

    let (base, _) = canned_server(vec![
        ONE_SYSTEM,
        ("/redfish/v1/Systems/a", 200, "", r#"{"PowerState": 3}"#),
    ])
    .await;
    let t = target("rf-bad-2", &base, "admin", "pw-canned");
    let err = reg.fencer_for(&t).unwrap().fence(&t).await.unwrap_err();
    assert!(
        err.to_string().contains("PowerState is not a string"),
        "{err}"
    );

    // Two systems and no configured path: refuse to guess which to fence.
    let (base, _) = canned_server(vec![(
        "/redfish/v1/Systems",
        200,
        "",
        r#"{"Members": [{"@odata.id": "/redfish/v1/Systems/a"}, {"@odata.id": "/redfish/v1/Systems/b"}]}"#,
    )])
    .await;
    let t = target("rf-bad-3", &base, "admin", "pw-canned");
    let err = reg.fencer_for(&t).unwrap().fence(&t).await.unwrap_err();
    assert!(matches!(err, FenceError::Config { .. }), "{err}");
    assert!(err.to_string().contains("system_path"), "{err}");

    // A BMC that accepts the reset but keeps reading "On".
    let (base, _) = canned_server(vec![
        ONE_SYSTEM,
        ("/redfish/v1/Systems/a", 200, "", r#"{"PowerState": "On"}"#),
        RESET,
    ])
    .await;
    let t = target("rf-bad-4", &base, "admin", "pw-canned");
    let err = reg.fencer_for(&t).unwrap().fence(&t).await.unwrap_err();
    assert!(
        matches!(
            err,
            FenceError::NotConfirmed {
                last: PowerState::On,
                ..
            }
        ),
        "{err}"
    );

    // Unknown power state is not off.
    let (base, _) = canned_server(vec![
        ONE_SYSTEM,
        ("/redfish/v1/Systems/a", 200, "", r#"{"PowerState": null}"#),
        RESET,
    ])
    .await;
    let t = target("rf-bad-5", &base, "admin", "pw-canned");
    let err = reg.fencer_for(&t).unwrap().fence(&t).await.unwrap_err();
    assert!(
        matches!(
            err,
            FenceError::NotConfirmed {
                last: PowerState::Unknown,
                ..
            }
        ),
        "{err}"
    );
}

/// Session auth: sushy-tools has no SessionService, so this checks the
/// protocol shape against the canned server: log in with a JSON body, use
/// the token (never Basic), delete the session afterwards.
#[tokio::test]
async fn session_auth_logs_in_uses_the_token_and_logs_out() {
    let (base, seen) = canned_server(vec![
        (
            "/redfish/v1/SessionService/Sessions",
            201,
            "x-auth-token: tok-123\r\nlocation: /redfish/v1/SessionService/Sessions/9\r\n",
            "{}",
        ),
        ("/redfish/v1/SessionService/Sessions/9", 204, "", ""),
        ONE_SYSTEM,
        ("/redfish/v1/Systems/a", 200, "", r#"{"PowerState": "Off"}"#),
    ])
    .await;
    let reg = FenceRegistry::new(&settings()).unwrap();
    let mut t = target("rf-session", &base, "admin", "pw-session");
    t.bmc.extra.insert("auth".into(), "session".into());
    let fenced = reg.fencer_for(&t).unwrap().fence(&t).await.unwrap();
    assert_eq!(fenced.driver(), "redfish");
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen[0].starts_with("POST /redfish/v1/SessionService/Sessions "),
        "{seen:?}"
    );
    for head in &seen[1..] {
        let lower = head.to_ascii_lowercase();
        assert!(lower.contains("x-auth-token: tok-123"), "{head}");
        assert!(!lower.contains("authorization:"), "{head}");
    }
    assert!(
        seen.last()
            .unwrap()
            .starts_with("DELETE /redfish/v1/SessionService/Sessions/9 "),
        "{seen:?}"
    );
}

/// Certificate checking, per node: a BMC with a certificate from an unknown
/// CA is refused by default, accepted with `config/bmc/verify_tls = False`,
/// and accepted with checking on once the CA is in `[fence.redfish] ca_file`.
#[tokio::test]
async fn certificate_checking_is_configurable_per_node() {
    let sushy = SushyEmulator::start_tls("admin", "pw-tls");
    let t = target("rf-tls", &sushy.base_url(), "admin", "pw-tls");
    let reg = FenceRegistry::new(&settings()).unwrap();
    let err = reg
        .fencer_for(&t)
        .unwrap()
        .power_state(&t)
        .await
        .unwrap_err();
    assert!(matches!(err, FenceError::Config { .. }), "{err}");
    assert!(err.to_string().contains("certificate"), "{err}");

    let mut insecure = t.clone();
    insecure
        .bmc
        .extra
        .insert("verify_tls".into(), "False".into());
    let power = reg
        .fencer_for(&insecure)
        .unwrap()
        .power_state(&insecure)
        .await
        .unwrap();
    assert_eq!(power, PowerState::On);

    let mut with_ca = settings();
    with_ca.redfish.ca_file = Some(sushy.ca_pem());
    let reg = FenceRegistry::new(&with_ca).unwrap();
    let power = reg.fencer_for(&t).unwrap().power_state(&t).await.unwrap();
    assert_eq!(power, PowerState::On);

    let mut bad = t.clone();
    bad.bmc.extra.insert("verify_tls".into(), "maybe".into());
    let err = reg
        .fencer_for(&bad)
        .unwrap()
        .power_state(&bad)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("verify_tls"), "{err}");
}
