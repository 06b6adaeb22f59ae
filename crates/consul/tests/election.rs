//! Leader election against a real Consul agent.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::time::{Duration, Instant};

use common::{client, election, schema};
use novaha_consul::{ConsulStore, Election};
use novaha_core::store::{KvOp, LeaderLease, StateStore, StoreError};
use novaha_testkit::consul::ConsulAgent;
use tokio_util::sync::CancellationToken;

/// Starts `e.acquire` in a task; the task gives the election back with the lease.
fn campaign(
    mut e: Election,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<(Election, Option<LeaderLease>, Instant)> {
    tokio::spawn(async move {
        let lease = e.acquire(&shutdown).await.expect("acquire");
        (e, lease, Instant::now())
    })
}

#[tokio::test]
async fn one_leader_and_handover_on_resign_without_lock_delay() {
    let agent = ConsulAgent::start();
    let schema = schema("handover");
    let consul = client(&agent);
    let shutdown = CancellationToken::new();

    let mut a = election(&agent, &schema, "a");
    let lease_a = a
        .acquire(&shutdown)
        .await
        .expect("acquire a")
        .expect("a leads");
    assert!(lease_a.epoch().starts_with(lease_a.session()));
    assert!(!lease_a.is_lost());
    let leader = Election::current_leader(&consul, &schema)
        .await
        .expect("read leader");
    assert_eq!(leader.expect("held").id, "a");

    let b = campaign(election(&agent, &schema, "b"), shutdown.clone());
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!b.is_finished(), "b acquired while a holds the lock");
    assert!(!lease_a.is_lost(), "a's lease lost while b campaigns");

    let resigned = Instant::now();
    a.resign().await.expect("resign a");
    assert!(lease_a.is_lost(), "resign revokes the lease");
    let (mut b, lease_b, at) = tokio::time::timeout(Duration::from_secs(5), b)
        .await
        .expect("b acquires after a resigns")
        .expect("b task");
    let lease_b = lease_b.expect("b leads");
    let handover = at - resigned;
    eprintln!("handover after voluntary release: {handover:?}");
    assert!(
        handover < Duration::from_secs(2),
        "handover took {handover:?}"
    );
    assert_ne!(lease_b.session(), lease_a.session());
    let leader = Election::current_leader(&consul, &schema)
        .await
        .expect("read leader");
    assert_eq!(leader.expect("held").id, "b");

    // The old lease cannot write; the new one can.
    let store = ConsulStore::new(consul.clone(), schema.clone());
    let key = format!("{}/x", schema.prefix());
    let err = store
        .commit(&lease_a, &[KvOp::set(&key, "1", 0)])
        .await
        .expect_err("deposed leader");
    assert!(matches!(err, StoreError::NotLeader { .. }), "{err}");
    store
        .commit(&lease_b, &[KvOp::set(&key, "2", 0)])
        .await
        .expect("leader write");
    assert_eq!(agent.kv_get(&key), Some(b"2".to_vec()));

    // Acquire again while leading: the same lease. Resign twice: fine.
    let again = b
        .acquire(&shutdown)
        .await
        .expect("acquire")
        .expect("still leads");
    assert_eq!(again.epoch(), lease_b.epoch());
    b.resign().await.expect("resign b");
    b.resign().await.expect("resign is idempotent");
    assert!(
        Election::current_leader(&consul, &schema)
            .await
            .expect("read")
            .is_none()
    );
}

#[tokio::test]
async fn shutdown_ends_a_campaign() {
    let agent = ConsulAgent::start();
    let schema = schema("shutdown");
    let shutdown = CancellationToken::new();
    let mut a = election(&agent, &schema, "a");
    let _lease = a
        .acquire(&shutdown)
        .await
        .expect("acquire")
        .expect("a leads");
    let stop_b = CancellationToken::new();
    let b = campaign(election(&agent, &schema, "b"), stop_b.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop_b.cancel();
    let (mut b, lease, _) = tokio::time::timeout(Duration::from_secs(2), b)
        .await
        .expect("campaign stops on shutdown")
        .expect("task");
    assert!(lease.is_none());
    b.resign().await.expect("resign standby");
    a.resign().await.expect("resign a");
}

#[tokio::test]
async fn session_destroyed_behind_our_back_revokes_the_lease_and_blocks_writes() {
    let agent = ConsulAgent::start();
    let schema = schema("destroyed");
    let consul = client(&agent);
    let store = ConsulStore::new(consul.clone(), schema.clone());
    let shutdown = CancellationToken::new();
    let mut a = election(&agent, &schema, "a");
    let lease = a
        .acquire(&shutdown)
        .await
        .expect("acquire")
        .expect("a leads");

    let key = format!("{}/compute_nodes/n1/status/failed", schema.prefix());
    store
        .commit(&lease, &[KvOp::set(&key, "False", 0)])
        .await
        .expect("write as leader");
    let idx = store.snapshot().await.expect("snapshot").cas_index(&key);

    let destroyed = Instant::now();
    let (status, body) = agent.http(
        "PUT",
        &format!("/v1/session/destroy/{}", lease.session()),
        b"",
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    tokio::time::timeout(Duration::from_secs(5), lease.lost())
        .await
        .expect("lease revoked within 5 s");
    eprintln!(
        "lease revoked {:?} after the session was destroyed",
        destroyed.elapsed()
    );

    let err = store
        .commit(&lease, &[KvOp::set(&key, "True", idx)])
        .await
        .expect_err("lost lease");
    assert!(matches!(err, StoreError::NotLeader { .. }), "{err}");
    // The server-side guard too: the same dead session with a live token.
    let forged = LeaderLease::new(
        lease.session().to_owned(),
        lease.epoch().to_owned(),
        CancellationToken::new(),
    );
    let err = store
        .commit(&forged, &[KvOp::set(&key, "True", idx)])
        .await
        .expect_err("dead session");
    assert!(matches!(err, StoreError::NotLeader { .. }), "{err}");
    assert_eq!(
        agent.kv_get(&key),
        Some(b"False".to_vec()),
        "nothing was written"
    );

    // A new campaign gets a new session (after lock-delay).
    let again = tokio::time::timeout(Duration::from_secs(5), a.acquire(&shutdown))
        .await
        .expect("re-acquire in time")
        .expect("acquire")
        .expect("leads again");
    assert_ne!(again.session(), lease.session());
    store
        .commit(&again, &[KvOp::set(&key, "True", idx)])
        .await
        .expect("write");
    a.resign().await.expect("resign");
}

#[tokio::test]
async fn standby_lease_cannot_write() {
    let agent = ConsulAgent::start();
    let schema = schema("standby");
    let consul = client(&agent);
    let store = ConsulStore::new(consul, schema.clone());
    let shutdown = CancellationToken::new();
    let mut a = election(&agent, &schema, "a");
    let _lease = a
        .acquire(&shutdown)
        .await
        .expect("acquire")
        .expect("a leads");
    let stop_b = CancellationToken::new();
    let b = campaign(election(&agent, &schema, "b"), stop_b.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop_b.cancel();
    let (mut b, _, _) = b.await.expect("task");
    let b_session = b.session().expect("standby has a session").to_owned();
    let fake = LeaderLease::new(b_session, "x".into(), CancellationToken::new());
    let key = format!("{}/k", schema.prefix());
    let err = store
        .commit(&fake, &[KvOp::set(&key, "v", 0)])
        .await
        .expect_err("standby");
    assert!(matches!(err, StoreError::NotLeader { .. }), "{err}");
    assert_eq!(agent.kv_get(&key), None);
    b.resign().await.expect("resign b");
    a.resign().await.expect("resign a");
}

#[tokio::test]
async fn dead_keeper_fails_over_within_check_ttl_plus_lock_delay() {
    let agent = ConsulAgent::start();
    let schema = schema("failover");
    let shutdown = CancellationToken::new();
    let mut a = election(&agent, &schema, "a");
    let lease_a = a
        .acquire(&shutdown)
        .await
        .expect("acquire")
        .expect("a leads");
    let b = campaign(election(&agent, &schema, "b"), shutdown.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!b.is_finished());

    // A crash: the keeper stops without releasing anything.
    let crashed = Instant::now();
    drop(a);
    assert!(
        lease_a.is_lost(),
        "a dropped election revokes its own lease"
    );
    let (mut b, lease_b, at) = tokio::time::timeout(Duration::from_secs(10), b)
        .await
        .expect("b takes over")
        .expect("task");
    let takeover = at - crashed;
    eprintln!("takeover after keeper death (check TTL 2s, lock-delay 1s): {takeover:?}");
    assert!(lease_b.is_some());
    // The check turns critical 2 s after the last pass (passes come every
    // ~0.67 s), then lock-delay 1 s: at least ~2.3 s, plus the agent's reaping.
    assert!(
        takeover >= Duration::from_millis(1500),
        "too fast: {takeover:?}"
    );
    assert!(takeover < Duration::from_secs(7), "too slow: {takeover:?}");
    b.resign().await.expect("resign b");
}

#[tokio::test]
async fn deregistered_check_revokes_the_lease_and_fails_over() {
    let agent = ConsulAgent::start();
    let schema = schema("dereg");
    let shutdown = CancellationToken::new();
    let mut a = election(&agent, &schema, "a");
    let lease_a = a
        .acquire(&shutdown)
        .await
        .expect("acquire")
        .expect("a leads");
    let b = campaign(election(&agent, &schema, "b"), shutdown.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t0 = Instant::now();
    let (status, _) = agent.http("PUT", "/v1/agent/check/deregister/novaha-test-a", b"");
    assert_eq!(status, 200);
    tokio::time::timeout(Duration::from_secs(5), lease_a.lost())
        .await
        .expect("a notices within 5 s");
    eprintln!(
        "lease revoked {:?} after the check was deregistered",
        t0.elapsed()
    );
    let (mut b, lease_b, at) = tokio::time::timeout(Duration::from_secs(8), b)
        .await
        .expect("b takes over")
        .expect("task");
    eprintln!("takeover {:?} after the check was deregistered", at - t0);
    assert!(lease_b.is_some());
    b.resign().await.expect("resign b");
    a.resign().await.expect("resign a");
}

/// A frozen process (SIGSTOP, a stalled runtime) must notice on its first
/// keeper tick after waking, before any write of its lands.
#[tokio::test(flavor = "current_thread")]
async fn a_frozen_leader_revokes_its_lease_on_waking() {
    let agent = ConsulAgent::start();
    let schema = schema("frozen");
    let store = ConsulStore::new(client(&agent), schema.clone());
    let shutdown = CancellationToken::new();
    let mut a = election(&agent, &schema, "a");
    let lease = a
        .acquire(&shutdown)
        .await
        .expect("acquire")
        .expect("a leads");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!lease.is_lost());
    // Freeze the only runtime thread past the check TTL (2 s) + lock-delay.
    std::thread::sleep(Duration::from_secs(4));
    let woke = Instant::now();
    tokio::time::timeout(Duration::from_secs(2), lease.lost())
        .await
        .expect("lease revoked soon after waking");
    eprintln!("frozen leader noticed {:?} after waking", woke.elapsed());
    let key = format!("{}/k", schema.prefix());
    let live = LeaderLease::new(
        lease.session().to_owned(),
        "x".into(),
        CancellationToken::new(),
    );
    let err = store
        .commit(&live, &[KvOp::set(&key, "v", 0)])
        .await
        .expect_err("frozen");
    assert!(matches!(err, StoreError::NotLeader { .. }), "{err}");
    a.resign().await.expect("resign");
}
