//! The client against novaha-sim (in-process, free loopback port): auth,
//! token reuse and re-auth, retries of reads only, timeouts, pagination,
//! malformed answers, old clouds, Keystone reads.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use novaha_core::Secret;
use novaha_core::drivers::Directory;
use novaha_openstack::config::AuthSection;
use novaha_openstack::{
    Env, KeystoneClient, Microversion, NovaClient, OpenStackConfig, OpenStackError, RetryConfig,
    Session,
};
use novaha_sim::{FaultKind, FaultRule, Sim, SimConfig, SimHandle};

async fn start(cfg: SimConfig) -> SimHandle {
    Sim::start("127.0.0.1:0", cfg).await.expect("sim starts")
}

fn fast_retry() -> RetryConfig {
    RetryConfig {
        attempts: 4,
        base: Duration::from_millis(10),
        cap: Duration::from_millis(50),
    }
}

fn password_config(sim: &SimHandle, password: &str) -> OpenStackConfig {
    let c = sim.credentials();
    OpenStackConfig {
        auth: Some(AuthSection {
            auth_url: Some(c.auth_url),
            username: Some(c.username),
            password: Some(Secret::new(password)),
            project_name: Some(c.project_name),
            user_domain_name: Some(c.user_domain_name),
            project_domain_name: Some(c.project_domain_name),
            ..AuthSection::default()
        }),
        region_name: Some(c.region_name),
        timeout: Duration::from_secs(5),
        retry: fast_retry(),
        ..OpenStackConfig::default()
    }
}

fn session_with(cfg: &OpenStackConfig) -> Arc<Session> {
    Arc::new(Session::new(cfg.resolve(&Env::default()).expect("config resolves")).expect("session"))
}

async fn nova(sim: &SimHandle) -> NovaClient {
    let password = sim.credentials().password;
    NovaClient::connect(session_with(&password_config(sim, &password)))
        .await
        .expect("nova connects")
}

#[tokio::test]
async fn services_come_with_novas_clock_and_heartbeats() {
    let sim = start(SimConfig {
        report_interval: Duration::from_secs(10),
        ..SimConfig::default()
    })
    .await;
    let nova = nova(&sim).await;
    // Nova's clock, not ours: half an hour ahead in the sim.
    sim.advance_clock(Duration::from_secs(1800));
    sim.kill("compute-2").unwrap();
    sim.advance_clock(Duration::from_secs(40));
    let listing = nova.compute_services_at().await.unwrap();
    let nova_time = listing.nova_time.expect("a Date header");
    let sim_now = sim.now();
    assert!(
        (sim_now - nova_time).num_seconds().abs() <= 1,
        "{nova_time} vs the sim's {sim_now}"
    );
    assert!((nova_time - chrono::Utc::now()).num_seconds() >= 1800);
    let age = |host: &str| {
        let s = listing.services.iter().find(|s| s.host == host).unwrap();
        (nova_time - s.heartbeat().expect("updated_at parses")).num_seconds()
    };
    assert!(
        (-1..=10).contains(&age("compute-1")),
        "{}",
        age("compute-1")
    );
    assert!(age("compute-2") >= 39, "{}", age("compute-2"));
    assert_eq!(listing.services.len(), 4);
}

#[tokio::test]
async fn password_auth_lists_services_and_reuses_the_token() {
    let sim = start(SimConfig::default()).await;
    let nova = nova(&sim).await;
    assert_eq!(nova.microversion(), Microversion::WANTED);
    assert!(nova.evacuate_lands_shutoff());
    for _ in 0..5 {
        let services = nova.compute_services().await.unwrap();
        let mut hosts: Vec<_> = services.iter().map(|s| s.host.clone()).collect();
        hosts.sort();
        assert_eq!(hosts, ["compute-1", "compute-2", "compute-3", "ha-1"]);
        assert!(services.iter().all(|s| s.binary == "nova-compute"));
    }
    assert_eq!(nova.session().auth_count(), 1, "one token for every call");
    let ha = nova.compute_service("ha-1").await.unwrap().unwrap();
    assert!(ha.is_disabled());
    assert!(nova.compute_service("nope").await.unwrap().is_none());
}

#[tokio::test]
async fn connect_honours_max_microversion() {
    let sim = start(SimConfig::default()).await;
    let password = sim.credentials().password;
    let cfg = OpenStackConfig {
        max_microversion: Some(Microversion(2, 94)),
        ..password_config(&sim, &password)
    };
    let (_session, nova, _keystone) = novaha_openstack::connect(&cfg).await.unwrap();
    assert_eq!(nova.microversion(), Microversion(2, 94));
    assert!(
        !nova.evacuate_lands_shutoff(),
        "2.94 lands in the prior state"
    );
}

#[tokio::test]
async fn application_credential_auth_works() {
    let sim = start(SimConfig::default()).await;
    let c = sim.credentials();
    let cfg = OpenStackConfig {
        auth: Some(AuthSection {
            auth_url: Some(sim.base_url() + "/identity"),
            application_credential_id: Some(c.application_credential_id),
            application_credential_secret: Some(Secret::new(c.application_credential_secret)),
            ..AuthSection::default()
        }),
        retry: fast_retry(),
        ..OpenStackConfig::default()
    };
    let nova = NovaClient::connect(session_with(&cfg)).await.unwrap();
    assert_eq!(nova.compute_services().await.unwrap().len(), 4);
}

#[tokio::test]
async fn wrong_password_is_refused_without_leaking_it() {
    let sim = start(SimConfig::default()).await;
    let cfg = password_config(&sim, "wrong-pass-Zq9");
    let session = session_with(&cfg);
    let err = NovaClient::connect(session.clone()).await.unwrap_err();
    assert!(
        matches!(err, OpenStackError::AuthRefused { status: 401, .. }),
        "{err:?}"
    );
    assert!(!err.is_retryable());
    for text in [
        err.to_string(),
        format!("{err:?}"),
        format!("{session:?}"),
        format!("{cfg:?}"),
    ] {
        assert!(!text.contains("wrong-pass-Zq9"), "{text}");
    }
    assert!(
        err.to_string().contains("/identity/v3/auth/tokens"),
        "{err}"
    );
}

#[tokio::test]
async fn a_read_is_retried_through_500s() {
    let sim = start(SimConfig::default()).await;
    let nova = nova(&sim).await;
    sim.add_fault(
        FaultRule::new("/os-services", FaultKind::Status { status: 500 })
            .method("GET")
            .times(2),
    );
    let services = nova
        .compute_services()
        .await
        .expect("third attempt succeeds");
    assert_eq!(services.len(), 4);

    // More 500s than attempts: the error names the call, path and status.
    sim.add_fault(FaultRule::new("/os-services", FaultKind::Status { status: 503 }).method("GET"));
    let err = nova.compute_services().await.unwrap_err();
    let msg = err.to_string();
    assert!(err.is_retryable());
    assert!(msg.contains("nova list services"), "{msg}");
    assert!(msg.contains("/compute/v2.1/os-services"), "{msg}");
    assert!(msg.contains("HTTP 503"), "{msg}");
}

#[tokio::test]
async fn a_mutating_call_is_never_retried() {
    let sim = start(SimConfig {
        evacuate_delay: Duration::from_millis(10),
        ..SimConfig::default()
    })
    .await;
    let nova = nova(&sim).await;
    sim.kill("compute-1").unwrap();
    sim.advance_clock(Duration::from_secs(60));
    let svc = nova.compute_service("compute-1").await.unwrap().unwrap();
    nova.force_down(&svc, "novaha epoch 1").await.unwrap();
    let server = nova.servers_on_host("compute-1").await.unwrap().remove(0);
    let ha = nova.compute_service("ha-1").await.unwrap().unwrap();
    nova.enable(&ha).await.unwrap();
    sim.clear_calls();

    sim.add_fault(
        FaultRule::new("/action", FaultKind::Status { status: 500 })
            .method("POST")
            .times(1),
    );
    let err = nova.evacuate(&server.id, Some("ha-1")).await.unwrap_err();
    assert_eq!(err.status(), Some(500));
    assert!(err.to_string().contains("nova evacuate"), "{err}");
    let posts: Vec<_> = sim
        .calls()
        .into_iter()
        .filter(|c| c.method == "POST" && c.path.contains("/action"))
        .collect();
    assert_eq!(posts.len(), 1, "sent exactly once: {posts:?}");
    let still = nova.server(&server.id).await.unwrap().unwrap();
    assert_eq!(still.host.as_deref(), Some("compute-1"));

    // The runner decides to try again; this time it lands.
    nova.evacuate(&server.id, Some("ha-1")).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = nova.server(&server.id).await.unwrap().unwrap();
        if s.host.as_deref() == Some("ha-1") && s.task_state.is_none() {
            // 2.95: an evacuated server lands SHUTOFF.
            assert_eq!(s.status, "SHUTOFF");
            break;
        }
        assert!(Instant::now() < deadline, "evacuation never landed: {s:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let migs = nova
        .migrations(&server.id, Some("evacuation"))
        .await
        .unwrap();
    assert!(!migs.is_empty());
    assert!(
        migs.iter()
            .all(|m| m.migration_type.as_deref() == Some("evacuation"))
    );
    assert!(
        migs.iter()
            .any(|m| m.dest_compute.as_deref() == Some("ha-1"))
    );
    nova.start(&server.id).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while nova.server(&server.id).await.unwrap().unwrap().status != "ACTIVE" {
        assert!(Instant::now() < deadline, "never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn timeouts_are_bounded_and_mutations_report_unknown_outcome() {
    let sim = start(SimConfig::default()).await;
    let c = sim.credentials();
    let mut cfg = password_config(&sim, &c.password);
    cfg.timeout = Duration::from_millis(300);
    cfg.retry.attempts = 2;
    let nova = NovaClient::connect(session_with(&cfg)).await.unwrap();
    let server = nova.servers_on_host("compute-1").await.unwrap().remove(0);

    sim.add_fault(FaultRule::new("/servers/detail", FaultKind::Hang).method("GET"));
    let t0 = Instant::now();
    let err = nova.servers_on_host("compute-1").await.unwrap_err();
    let took = t0.elapsed();
    assert!(
        matches!(
            err,
            OpenStackError::Timeout {
                mutating: false,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_retryable());
    assert!(!err.outcome_unknown());
    assert!(err.to_string().contains("nova list servers"), "{err}");
    // Two attempts of 300 ms plus one short backoff.
    assert!(took >= Duration::from_millis(600), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");

    sim.add_fault(FaultRule::new("/action", FaultKind::Hang).method("POST"));
    sim.clear_calls();
    let t0 = Instant::now();
    let err = nova.start(&server.id).await.unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(2));
    assert!(err.outcome_unknown(), "{err:?}");
    let posts = sim
        .calls()
        .into_iter()
        .filter(|c| c.method == "POST")
        .count();
    assert_eq!(posts, 1, "a timed-out mutation is not resent");
}

#[tokio::test]
async fn an_expired_token_is_renewed_once() {
    let sim = start(SimConfig::default()).await;
    let nova = nova(&sim).await;
    nova.compute_services().await.unwrap();
    assert_eq!(nova.session().auth_count(), 1);

    sim.expire_tokens();
    assert_eq!(nova.compute_services().await.unwrap().len(), 4);
    assert_eq!(nova.session().auth_count(), 2);

    // A mutating call after expiry: re-auth, then the call lands once.
    sim.expire_tokens();
    let svc = nova.compute_service("compute-2").await.unwrap().unwrap();
    sim.expire_tokens();
    sim.clear_calls();
    nova.force_down(&svc, "novaha epoch 7").await.unwrap();
    assert_eq!(nova.session().auth_count(), 4);
    let (svc, _) = sim.service("compute-2").unwrap();
    assert!(svc.forced_down && svc.disabled);
    assert_eq!(svc.disabled_reason.as_deref(), Some("novaha epoch 7"));

    // A 401 that persists after re-auth is an error, not a loop.
    sim.add_fault(FaultRule::new("/os-services", FaultKind::Status { status: 401 }).method("GET"));
    let err = nova.compute_services().await.unwrap_err();
    assert_eq!(err.status(), Some(401));
    assert_eq!(nova.session().auth_count(), 5, "exactly one re-auth");
}

#[tokio::test]
async fn a_short_lived_token_is_renewed_before_it_expires() {
    let sim = start(SimConfig {
        token_ttl: Duration::from_secs(60),
        ..SimConfig::default()
    })
    .await;
    let nova = nova(&sim).await;
    // A 60 s token is inside the 120 s renewal margin: every call renews it.
    nova.compute_services().await.unwrap();
    nova.compute_services().await.unwrap();
    assert!(nova.session().auth_count() >= 2);
}

#[tokio::test]
async fn pagination_lists_every_server_exactly_once() {
    let sim = start(SimConfig {
        hosts: 2,
        instances_per_host: 2500,
        ..SimConfig::default()
    })
    .await;
    let nova = nova(&sim).await;
    let listed = nova.servers_on_host("compute-2").await.unwrap();
    let mut ids: Vec<String> = listed.iter().map(|s| s.id.clone()).collect();
    ids.sort();
    let mut expected: Vec<String> = sim
        .servers_on("compute-2")
        .iter()
        .map(|s| s.id.to_string())
        .collect();
    expected.sort();
    assert_eq!(expected.len(), 2500);
    assert_eq!(ids, expected, "every server of the host, each once");
    assert!(
        listed
            .iter()
            .all(|s| s.host.as_deref() == Some("compute-2"))
    );
    assert!(
        listed
            .iter()
            .all(|s| !s.user_id.is_empty() && !s.project_id.is_empty())
    );

    // Nova capping pages below what we ask (osapi_max_limit) still lists all.
    let short = nova.servers_on_host_paged("compute-1", 700).await.unwrap();
    assert_eq!(short.len(), 2500);
}

#[tokio::test]
async fn pagination_with_a_small_server_cap_follows_next_links() {
    let sim = start(SimConfig {
        hosts: 1,
        instances_per_host: 1234,
        max_limit: 100,
        ..SimConfig::default()
    })
    .await;
    let nova = nova(&sim).await;
    let listed = nova.servers_on_host("compute-1").await.unwrap();
    assert_eq!(listed.len(), 1234);
}

#[tokio::test]
async fn malformed_json_is_a_clear_error() {
    let sim = start(SimConfig::default()).await;
    let nova = nova(&sim).await;
    sim.add_fault(
        FaultRule::new("/os-services", FaultKind::Malformed)
            .method("GET")
            .times(1),
    );
    let err = nova.compute_services().await.unwrap_err();
    assert!(matches!(err, OpenStackError::Malformed { .. }), "{err:?}");
    assert!(!err.is_retryable());
    let msg = err.to_string();
    assert!(msg.contains("nova list services"), "{msg}");
    assert!(msg.contains("malformed response"), "{msg}");
    // The next call is fine.
    assert_eq!(nova.compute_services().await.unwrap().len(), 4);

    sim.add_fault(
        FaultRule::new("/auth/tokens", FaultKind::Malformed)
            .method("POST")
            .times(1),
    );
    let fresh = session_with(&password_config(&sim, "admin"));
    let err = NovaClient::connect(fresh).await.unwrap_err();
    assert!(err.to_string().contains("keystone authenticate"), "{err}");
}

#[tokio::test]
async fn an_old_cloud_gets_the_old_force_down_form() {
    let sim = start(SimConfig {
        max_version: novaha_sim::Microversion(2, 52),
        ..SimConfig::default()
    })
    .await;
    let nova = nova(&sim).await;
    assert_eq!(nova.microversion(), Microversion(2, 52));
    assert!(!nova.evacuate_lands_shutoff());
    let svc = nova.compute_service("compute-3").await.unwrap().unwrap();
    assert!(
        svc.id.parse::<u64>().is_ok(),
        "integer ids before 2.53: {}",
        svc.id
    );
    sim.clear_calls();
    nova.force_down(&svc, "novaha epoch 2").await.unwrap();
    let paths: Vec<String> = sim.calls().into_iter().map(|c| c.path).collect();
    assert_eq!(
        paths,
        [
            "/compute/v2.1/os-services/force-down",
            "/compute/v2.1/os-services/disable-log-reason"
        ]
    );
    let (s, _) = sim.service("compute-3").unwrap();
    assert!(s.forced_down && s.disabled);
    assert_eq!(s.disabled_reason.as_deref(), Some("novaha epoch 2"));

    let svc = nova.compute_service("compute-3").await.unwrap().unwrap();
    assert_eq!(svc.forced_down, Some(true));
    nova.enable(&svc).await.unwrap();
    let (s, _) = sim.service("compute-3").unwrap();
    assert!(!s.forced_down && !s.disabled);
}

#[tokio::test]
async fn a_new_cloud_gets_one_put_by_id_and_enable_clears_it() {
    let sim = start(SimConfig::default()).await;
    let nova = nova(&sim).await;
    let svc = nova.compute_service("compute-1").await.unwrap().unwrap();
    sim.clear_calls();
    nova.force_down(&svc, "novaha epoch 9").await.unwrap();
    let calls = sim.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].method, "PUT");
    assert_eq!(
        calls[0].path,
        format!("/compute/v2.1/os-services/{}", svc.id)
    );
    let after = nova.compute_service("compute-1").await.unwrap().unwrap();
    assert_eq!(after.forced_down, Some(true));
    assert!(after.is_disabled());
    nova.enable(&after).await.unwrap();
    let again = nova.compute_service("compute-1").await.unwrap().unwrap();
    assert_eq!(again.forced_down, Some(false));
    assert!(!again.is_disabled());
}

#[tokio::test]
async fn a_cloud_too_old_for_force_down_is_refused_clearly() {
    let sim = start(SimConfig {
        max_version: novaha_sim::Microversion(2, 10),
        ..SimConfig::default()
    })
    .await;
    let nova = nova(&sim).await;
    let svc = nova.compute_service("compute-1").await.unwrap().unwrap();
    sim.clear_calls();
    let err = nova.force_down(&svc, "x").await.unwrap_err();
    assert!(matches!(err, OpenStackError::Unsupported { .. }), "{err:?}");
    assert!(err.to_string().contains("2.11"), "{err}");
    assert!(sim.calls().is_empty(), "nothing sent");
}

#[tokio::test]
async fn lock_with_reason_hypervisors_and_missing_server() {
    let sim = start(SimConfig::default()).await;
    let nova = nova(&sim).await;
    let server = nova.servers_on_host("compute-1").await.unwrap().remove(0);
    nova.lock(&server.id, Some("novaha evacuating"))
        .await
        .unwrap();
    let s = nova.server(&server.id).await.unwrap().unwrap();
    assert_eq!(s.locked, Some(true));
    assert_eq!(s.locked_reason.as_deref(), Some("novaha evacuating"));
    nova.unlock(&server.id).await.unwrap();
    assert_eq!(
        nova.server(&server.id).await.unwrap().unwrap().locked,
        Some(false)
    );

    assert!(
        nova.server("00000000-0000-0000-0000-000000000000")
            .await
            .unwrap()
            .is_none()
    );
    let hv = nova.hypervisors().await.unwrap();
    let mut names: Vec<_> = hv.iter().map(|h| h.hypervisor_hostname.clone()).collect();
    names.sort();
    assert_eq!(names.len(), 4, "{names:?}");
}

#[tokio::test]
async fn keystone_directory_reads_users_and_members() {
    let sim = start(SimConfig::default()).await;
    let nova = nova(&sim).await;
    let ks = KeystoneClient::new(nova.session().clone());
    let server = nova.servers_on_host("compute-1").await.unwrap().remove(0);
    let dir: &dyn Directory = &ks;
    let owner = dir
        .user(&server.user_id)
        .await
        .unwrap()
        .expect("owner exists");
    let expected = sim
        .users()
        .into_iter()
        .find(|u| u.id == server.user_id)
        .unwrap();
    assert_eq!(owner.email, expected.email);
    assert!(owner.email.is_some());
    assert!(dir.user("no-such-user").await.unwrap().is_none());

    let members = dir.project_members(&server.project_id).await.unwrap();
    assert!(!members.is_empty());
    assert!(members.iter().any(|p| p.email.is_some()));
    let mut ids: Vec<_> = members.iter().map(|p| p.user_id.clone()).collect();
    let n = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), n, "each member once");

    sim.add_fault(FaultRule::new(
        "/role_assignments",
        FaultKind::Status { status: 503 },
    ));
    let err = dir.project_members(&server.project_id).await.unwrap_err();
    assert!(
        matches!(err, novaha_core::drivers::DirectoryError::Unavailable(_)),
        "{err:?}"
    );
}

#[tokio::test]
async fn clouds_yaml_with_secure_yaml_authenticates() {
    let sim = start(SimConfig::default()).await;
    let c = sim.credentials();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("clouds.yaml"),
        format!(
            "clouds:\n  other:\n    auth: {{auth_url: http://192.0.2.1/v3}}\n  sim:\n    \
             auth:\n      auth_url: {}\n      username: {}\n      project_name: {}\n      \
             user_domain_name: {}\n      project_domain_name: {}\n    region_name: {}\n    \
             interface: public\n    identity_api_version: 3\n    some_unknown_key: kept\n",
            c.auth_url,
            c.username,
            c.project_name,
            c.user_domain_name,
            c.project_domain_name,
            c.region_name
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("secure.yaml"),
        format!(
            "clouds:\n  sim:\n    auth:\n      password: {}\n",
            c.password
        ),
    )
    .unwrap();
    // Found as ./clouds.yaml in the working directory, chosen by OS_CLOUD.
    let env = Env::from_vars([("OS_CLOUD", "sim")], Some(dir.path().to_path_buf()));
    let cloud = OpenStackConfig::default().resolve(&env).unwrap();
    assert!(cloud.source.contains("clouds.yaml"), "{}", cloud.source);
    let nova = NovaClient::connect(Arc::new(Session::new(cloud).unwrap()))
        .await
        .unwrap();
    assert_eq!(nova.compute_services().await.unwrap().len(), 4);

    // A cloud name that is not there is named in the error with the file.
    let env = Env::from_vars([("OS_CLOUD", "missing")], Some(dir.path().to_path_buf()));
    let err = OpenStackConfig::default()
        .resolve(&env)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("\"missing\"") && err.contains("clouds.yaml"),
        "{err}"
    );
}

#[tokio::test]
async fn os_environment_variables_authenticate() {
    let sim = start(SimConfig::default()).await;
    let c = sim.credentials();
    let env = Env::from_vars(
        [
            ("OS_AUTH_URL", c.auth_url.as_str()),
            ("OS_USERNAME", &c.username),
            ("OS_PASSWORD", &c.password),
            ("OS_PROJECT_NAME", &c.project_name),
            ("OS_USER_DOMAIN_NAME", &c.user_domain_name),
            ("OS_PROJECT_DOMAIN_NAME", &c.project_domain_name),
            ("OS_REGION_NAME", &c.region_name),
            ("OS_INTERFACE", "public"),
        ],
        None,
    );
    let cloud = OpenStackConfig::default().resolve(&env).unwrap();
    assert_eq!(cloud.source, "OS_* environment");
    let nova = NovaClient::connect(Arc::new(Session::new(cloud).unwrap()))
        .await
        .unwrap();
    assert_eq!(nova.compute_services().await.unwrap().len(), 4);

    // A region the catalog does not have: a clear error, no panic.
    let env = Env::from_vars(
        [
            ("OS_AUTH_URL", c.auth_url.as_str()),
            ("OS_APPLICATION_CREDENTIAL_ID", &c.application_credential_id),
            (
                "OS_APPLICATION_CREDENTIAL_SECRET",
                &c.application_credential_secret,
            ),
            ("OS_REGION_NAME", "Mars"),
        ],
        None,
    );
    let cloud = OpenStackConfig::default().resolve(&env).unwrap();
    let err = NovaClient::connect(Arc::new(Session::new(cloud).unwrap()))
        .await
        .unwrap_err();
    assert!(matches!(err, OpenStackError::NoEndpoint { .. }), "{err:?}");
    assert!(err.to_string().contains("Mars"), "{err}");
}

/// Every call carries its own `X-OpenStack-Request-ID` (a `req-<uuid>`
/// oslo.middleware accepts as a global request id), reads and writes,
/// Keystone and Nova; an error names the id the cloud answered with, so an
/// operator can find it in Nova's log.
#[tokio::test]
async fn every_call_sends_a_request_id_and_an_error_names_the_answered_one() {
    let sim = start(SimConfig::default()).await;
    let nova = nova(&sim).await;
    nova.compute_services().await.unwrap();
    let server = nova.servers_on_host("compute-1").await.unwrap().remove(0);
    sim.add_fault(FaultRule::new("/action", FaultKind::Status { status: 409 }).method("POST"));
    let err = nova.evacuate(&server.id, None).await.unwrap_err();
    let seen = sim.seen();
    assert!(seen.len() >= 4, "{seen:?}");
    let mut ids = std::collections::BTreeSet::new();
    for s in &seen {
        let id = s
            .sent
            .as_deref()
            .unwrap_or_else(|| panic!("{} {} sent no request id", s.method, s.path));
        let uuid = id.strip_prefix("req-").expect("req-<uuid>");
        assert_eq!(uuid.len(), 36, "{id}");
        assert_eq!(uuid.as_bytes()[14], b'4', "a version-4 uuid: {id}");
        assert!(ids.insert(id.to_owned()), "{id} sent twice");
    }
    assert!(seen.iter().any(|s| s.path.ends_with("/auth/tokens")));
    let evacuate = seen.last().unwrap();
    assert!(evacuate.path.ends_with("/action"), "{evacuate:?}");
    assert_eq!(err.status(), Some(409));
    assert_eq!(err.request_id(), Some(evacuate.answered.as_str()));
    assert!(
        err.to_string()
            .ends_with(&format!(" (request id {})", evacuate.answered)),
        "{err}"
    );
    // The mutating call's record carries it too.
    let call = sim.calls().into_iter().last().unwrap();
    assert_eq!(call.request_id, evacuate.sent);
}

/// Placement through the same session: one provider per compute host with
/// the hypervisor's uuid, inventories with reserved and ratios, allocations
/// from each server's flavor (none for a volume-booted root disk), a
/// generation-checked inventory write, and the destination claimed when an
/// evacuation is accepted.
#[tokio::test]
async fn placement_reads_providers_inventories_allocations_and_follows_evacuations() {
    use novaha_core::capacity::{Inventory, Resources};
    use novaha_openstack::PlacementClient;
    let sim = start(SimConfig {
        hosts: 2,
        instances_per_host: 0,
        evacuate_delay: Duration::from_millis(100),
        ..SimConfig::default()
    })
    .await;
    let nova = nova(&sim).await;
    let placement = PlacementClient::new(nova.session().clone());
    assert!(placement.available().await.unwrap());
    let providers = placement.providers().await.unwrap();
    let mut names: Vec<&str> = providers.iter().map(|p| p.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["compute-1", "compute-2", "ha-1"]);
    let hypervisors = nova.hypervisors().await.unwrap();
    let ha = placement.provider_named("ha-1").await.unwrap().unwrap();
    assert!(
        hypervisors
            .iter()
            .any(|h| h.id == ha.uuid && h.hypervisor_hostname == "ha-1"),
        "the provider has the hypervisor's uuid"
    );
    assert_eq!(placement.provider_named("nope").await.unwrap(), None);

    let (inv, _) = placement.inventories(&ha.uuid).await.unwrap();
    let mem = inv.memory_mb.unwrap();
    assert_eq!((mem.total, mem.reserved), (262_144, 512));
    assert_eq!(mem.allocation_ratio, 1.5);

    let user = sim
        .users()
        .into_iter()
        .find(|u| u.name == "user-1")
        .unwrap();
    let project = user.default_project_id.clone().unwrap();
    let flavor = novaha_sim::Flavor::new("m1.small", 2, 2048, 20);
    let vol = sim
        .add_server_with(
            "v",
            "compute-1",
            (&user.id, &project),
            Default::default(),
            flavor.clone(),
            true,
        )
        .unwrap();
    let img = sim
        .add_server_with(
            "i",
            "compute-1",
            (&user.id, &project),
            Default::default(),
            flavor,
            false,
        )
        .unwrap();
    let c1 = placement
        .provider_named("compute-1")
        .await
        .unwrap()
        .unwrap();
    let allocs = placement.allocations(&c1.uuid).await.unwrap();
    let r = |disk| Resources {
        vcpus: 2,
        memory_mb: 2048,
        disk_gb: disk,
    };
    assert_eq!(allocs[&vol.to_string()], r(0), "no root disk for a volume");
    assert_eq!(allocs[&img.to_string()], r(20));
    assert_eq!(placement.usages(&c1.uuid).await.unwrap(), r(20).plus(r(0)));
    // The servers say the same through Nova (2.47+: embedded flavor).
    let servers = nova.servers_on_host("compute-1").await.unwrap();
    let by_id = |id: &dyn std::fmt::Display| {
        let id = id.to_string();
        servers.iter().find(|s| s.id == id).unwrap().to_instance()
    };
    assert!(by_id(&vol).boot_from_volume);
    assert_eq!(by_id(&vol).resources, Some(r(0)));
    assert!(!by_id(&img).boot_from_volume);

    // Lower the spare's room: 4 GB of memory, 1 GB reserved.
    let small = Inventory {
        total: 4096,
        reserved: 1024,
        allocation_ratio: 1.0,
        max_unit: 4096,
    };
    placement
        .set_inventory(&ha.uuid, "MEMORY_MB", &small)
        .await
        .unwrap();
    let cap = placement.host_capacity(&ha.uuid).await.unwrap();
    assert_eq!(cap.inventories.memory_mb, Some(small));
    assert!(cap.allocations.is_empty());

    // An accepted evacuation is allocated on its target at once.
    sim.kill("compute-1").unwrap();
    sim.advance_clock(Duration::from_secs(11));
    nova.evacuate(&img.to_string(), Some("ha-1")).await.unwrap();
    let cap = placement.host_capacity(&ha.uuid).await.unwrap();
    assert_eq!(cap.allocations[&img.to_string()], r(20));
}
