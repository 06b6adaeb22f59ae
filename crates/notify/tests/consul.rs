//! The outbox on a real Consul (ConsulStore, real leader election): leader A
//! queues an incident's messages and goes away before delivering; leader B
//! on the same Consul delivers each exactly once, and A's stale lease can
//! neither claim nor send.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{directory, report, t};
use novaha_consul::{Consul, ConsulSettings, ConsulStore, Election, ElectionSettings, LeaderInfo};
use novaha_core::kv::Schema;
use novaha_notify::{EntryStatus, NotifySettings, Outbox, OutboxOptions};
use novaha_testkit::consul::ConsulAgent;
use novaha_testkit::smtp::{SmtpOptions, SmtpServer};
use tokio_util::sync::CancellationToken;

fn client(agent: &ConsulAgent) -> Consul {
    Consul::new(&ConsulSettings {
        address: agent.http_addr(),
        token: None,
        request_timeout: Duration::from_secs(5),
        tls: Default::default(),
    })
    .expect("client settings")
}

fn election(agent: &ConsulAgent, schema: &Schema, id: &str) -> Election {
    Election::new(
        client(agent),
        schema.clone(),
        ElectionSettings {
            session_ttl: Duration::from_secs(10),
            lock_delay: Duration::from_secs(1),
            check_ttl: Duration::from_secs(2),
            check_id: format!("novaha-notify-test-{id}"),
            leader_info: LeaderInfo {
                id: id.to_owned(),
                host: "localhost".into(),
                pid: std::process::id(),
                version: "test".into(),
            },
        },
    )
}

fn email(server: &SmtpServer) -> NotifySettings {
    #[derive(serde::Deserialize)]
    struct Doc {
        notify: Vec<NotifySettings>,
    }
    let doc: Doc = toml::from_str(&format!(
        "[[notify]]\ndriver = \"email\"\nsmtp_url = \"{}?tls=none\"\nfrom = \"novaha@example.org\"\n\
         admins = [\"ops@example.org\"]\ntimeout = \"5s\"\n",
        server.url()
    ))
    .unwrap();
    doc.notify.into_iter().next().unwrap()
}

fn outbox(agent: &ConsulAgent, schema: &Schema, server: &SmtpServer) -> Outbox {
    Outbox::from_settings(
        Arc::new(ConsulStore::new(client(agent), schema.clone())),
        schema,
        &[email(server)],
        Arc::new(directory()),
        OutboxOptions::default(),
    )
    .unwrap()
}

#[tokio::test]
async fn leader_a_queues_and_dies_leader_b_delivers_exactly_once() {
    let agent = ConsulAgent::start();
    let server = SmtpServer::start(SmtpOptions::default());
    let schema = Schema::new(&format!("t-notify-{}", std::process::id()));
    let shutdown = CancellationToken::new();

    let mut a = election(&agent, &schema, "a");
    let lease_a = a.acquire(&shutdown).await.unwrap().expect("a leads");
    let outbox_a = outbox(&agent, &schema, &server);
    let q = outbox_a
        .enqueue(&lease_a, &report("inc-consul"), t(0))
        .await
        .unwrap();
    assert_eq!(q.queued.len(), 3, "ops, alice, bob: {q:?}");
    // Stored as JSON under the fixed folder.
    let key = outbox_a.key(&q.queued[0]);
    assert!(
        key.starts_with(&format!("{}/novaha/outbox/", schema.prefix())),
        "{key}"
    );
    let raw = agent.kv_get(&key).expect("entry stored in consul");
    let v: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(v["status"], "pending");

    // A goes away before delivering anything.
    a.resign().await.unwrap();
    assert!(lease_a.is_lost());
    drop(outbox_a);

    let mut b = election(&agent, &schema, "b");
    let lease_b = tokio::time::timeout(Duration::from_secs(20), b.acquire(&shutdown))
        .await
        .expect("b acquires")
        .unwrap()
        .expect("b leads");
    let outbox_b = outbox(&agent, &schema, &server);

    // A's stale lease cannot claim (the store's session check refuses it).
    let stale = novaha_core::store::LeaderLease::new(
        lease_a.session().to_owned(),
        lease_a.epoch().to_owned(),
        CancellationToken::new(),
    );
    let err = outbox_b
        .deliver_due(&stale, t(0))
        .await
        .expect_err("deposed");
    assert!(err.is_not_leader(), "{err}");
    assert!(server.messages().is_empty());

    // B resumes the incident: nothing new is queued, everything is sent once.
    let q = outbox_b
        .enqueue(&lease_b, &report("inc-consul"), t(10))
        .await
        .unwrap();
    assert!(q.queued.is_empty());
    assert_eq!(q.existing, 3);
    let s = outbox_b.deliver_due(&lease_b, t(10)).await.unwrap();
    assert_eq!(s.count("sent"), 3, "{s:?}");
    let s = outbox_b.deliver_due(&lease_b, t(99_999)).await.unwrap();
    assert!(s.outcomes.is_empty(), "{s:?}");

    let msgs = server.wait_for_messages(3, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(server.messages().len(), 3, "exactly once");
    let mut rcpts: Vec<String> = msgs.iter().flat_map(|m| m.rcpt_tos.clone()).collect();
    rcpts.sort();
    assert_eq!(
        rcpts,
        ["alice@example.org", "bob@example.org", "ops@example.org"]
    );
    for e in outbox_b.entries().await.unwrap() {
        assert_eq!(e.status, EntryStatus::Sent);
        assert_eq!(e.attempts, 1);
        assert_eq!(e.epoch.as_deref(), Some(lease_b.epoch()));
    }
    b.resign().await.unwrap();
}
