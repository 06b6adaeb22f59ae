//! The client against a real Consul agent serving HTTPS with
//! `verify_incoming` (mTLS): certificates made at test time with the
//! openssl CLI (novaha-testkit), the agent's certificate naming only a
//! server name that does not resolve, reached by IP.
//!
//! With the CA (file or directory), the client certificate and the server
//! name, everything the daemon does works: ping, the recursive read, a
//! guarded transaction, the election (session, own TTL check, lock). Take
//! away any one of them and the call fails with a transport error naming
//! the handshake, never a panic or a silent plaintext fallback.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::time::Duration;

use novaha_consul::{Consul, ConsulError, ConsulSettings, ConsulStore, ConsulTls, Election};
use novaha_core::store::{KvOp, StateStore};
use novaha_testkit::consul::ConsulAgent;
use tokio_util::sync::CancellationToken;

fn settings(agent: &ConsulAgent, tls: ConsulTls) -> ConsulSettings {
    ConsulSettings {
        address: agent.https_addr(),
        token: None,
        request_timeout: Duration::from_secs(5),
        tls,
    }
}

fn full(agent: &ConsulAgent) -> ConsulTls {
    let f = agent.tls();
    ConsulTls {
        ca_file: Some(f.ca.clone()),
        ca_path: None,
        client_cert: Some(f.client_cert.clone()),
        client_key: Some(f.client_key.clone()),
        server_name: Some(f.server_name.clone()),
        insecure: false,
    }
}

fn transport(e: &ConsulError) -> String {
    match e {
        ConsulError::Transport { detail, .. } => detail.to_lowercase(),
        other => panic!("not a transport error: {other}"),
    }
}

#[tokio::test]
async fn mtls_with_ca_client_certificate_and_server_name_does_everything() {
    let agent = ConsulAgent::start_tls();
    let consul = Consul::new(&settings(&agent, full(&agent))).unwrap();
    consul.ping().await.unwrap();
    assert_eq!(consul.agent_node_name().await.unwrap(), agent.node_name());
    // The state store: a write and the recursive read, over TLS.
    let schema = common::schema("tls");
    let store = ConsulStore::new(consul.clone(), schema.clone());
    let key = format!("{}/config/x", schema.prefix());
    store
        .admin_commit(&[KvOp::set(key.clone(), "v", 0)])
        .await
        .unwrap();
    let snap = store.snapshot().await.unwrap();
    assert_eq!(snap.raw(&key), Some(&b"v"[..]));
    assert_eq!(agent.kv_get(&key), Some(b"v".to_vec()));
    // The election: own check, session, lock, a guarded write, resign.
    let mut election = Election::new(consul.clone(), schema.clone(), common::settings("tls-a"));
    let lease = election
        .acquire(&CancellationToken::new())
        .await
        .unwrap()
        .expect("the lock is free");
    store
        .commit(&lease, &[KvOp::set(key.clone(), "w", snap.cas_index(&key))])
        .await
        .unwrap();
    assert_eq!(agent.kv_get(&key), Some(b"w".to_vec()));
    assert_eq!(
        Election::current_leader(&consul, &schema)
            .await
            .unwrap()
            .map(|l| l.id),
        Some("tls-a".to_owned())
    );
    election.resign().await.unwrap();
    // A directory of CAs (CONSUL_CAPATH) works the same.
    let by_dir = ConsulTls {
        ca_file: None,
        ca_path: Some(agent.tls().ca_dir.clone()),
        ..full(&agent)
    };
    Consul::new(&settings(&agent, by_dir))
        .unwrap()
        .ping()
        .await
        .unwrap();
}

#[tokio::test]
async fn each_missing_piece_is_a_clear_handshake_error() {
    let agent = ConsulAgent::start_tls();
    // No client certificate: the agent (verify_incoming) refuses.
    let no_cert = ConsulTls {
        client_cert: None,
        client_key: None,
        ..full(&agent)
    };
    let e = Consul::new(&settings(&agent, no_cert))
        .unwrap()
        .ping()
        .await
        .expect_err("verify_incoming wants a client certificate");
    let detail = transport(&e);
    assert!(
        detail.contains("certificate") || detail.contains("handshake") || detail.contains("alert"),
        "{e}"
    );
    // The wrong CA: the agent's certificate is not trusted.
    let wrong_ca = ConsulTls {
        ca_file: Some(agent.tls().other_ca.clone()),
        ..full(&agent)
    };
    let e = Consul::new(&settings(&agent, wrong_ca))
        .unwrap()
        .ping()
        .await
        .expect_err("an untrusted agent");
    assert!(transport(&e).contains("certificate"), "{e}");
    // No server name: the certificate does not name 127.0.0.1.
    let by_ip = ConsulTls {
        server_name: None,
        ..full(&agent)
    };
    let e = Consul::new(&settings(&agent, by_ip))
        .unwrap()
        .ping()
        .await
        .expect_err("the certificate does not name the IP");
    assert!(transport(&e).contains("certificate"), "{e}");
    // Plain HTTP to the HTTPS port is no fallback either.
    let plain = ConsulSettings {
        address: agent.https_addr().replace("https://", "http://"),
        tls: ConsulTls::default(),
        ..settings(&agent, ConsulTls::default())
    };
    assert!(Consul::new(&plain).unwrap().ping().await.is_err());
    // Skipping verification (test clusters only) still needs the client
    // certificate, and then works.
    let insecure = ConsulTls {
        ca_file: None,
        server_name: None,
        insecure: true,
        ..full(&agent)
    };
    Consul::new(&settings(&agent, insecure))
        .unwrap()
        .ping()
        .await
        .unwrap();
}
