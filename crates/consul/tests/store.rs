//! ConsulStore against a real Consul agent: guarded commits, snapshots, and
//! the parse table of docs/consul.md ("The K/V schema") end to end.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use common::{client, election, schema};
use novaha_consul::ConsulStore;
use novaha_core::NodeName;
use novaha_core::kv::ClusterState;
use novaha_core::store::{KvOp, StateStore, StoreError};
use novaha_testkit::consul::ConsulAgent;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn commit_is_all_or_nothing_and_snapshot_returns_exact_bytes() {
    let agent = ConsulAgent::start();
    let schema = schema("commit");
    let p = schema.prefix().to_owned();
    let store = ConsulStore::new(client(&agent), schema.clone());
    let shutdown = CancellationToken::new();
    let mut e = election(&agent, &schema, "a");
    let lease = e.acquire(&shutdown).await.expect("acquire").expect("leads");

    let (a, b, c, d) = (
        format!("{p}/a"),
        format!("{p}/b"),
        format!("{p}/c"),
        format!("{p}/d"),
    );
    let binary = vec![0xff, 0x00, 0xfe, b'\n', 0x80];
    store
        .commit(
            &lease,
            &[
                KvOp::set(&a, "one", 0),
                KvOp::set(&b, binary.clone(), 0),
                KvOp::set(&c, Vec::<u8>::new(), 0),
            ],
        )
        .await
        .expect("create three keys");

    let snap = store.snapshot().await.expect("snapshot");
    assert!(snap.index > 0);
    assert_eq!(snap.raw(&a), Some(&b"one"[..]));
    assert_eq!(snap.raw(&b), Some(binary.as_slice()));
    // Consul stores an empty value as null: it reads back as no value.
    assert!(snap.raw(&c).unwrap_or_default().is_empty());
    assert!(snap.entries.contains_key(&c));
    let leader_key = schema.leader();
    let mine: Vec<&String> = snap.entries.keys().filter(|k| **k != leader_key).collect();
    assert_eq!(mine, vec![&a, &b, &c], "exactly what was written");
    let a_idx = snap.cas_index(&a);

    // A stale CAS on `a` fails the whole txn: `d` is not created.
    store
        .commit(&lease, &[KvOp::set(&a, "two", a_idx)])
        .await
        .expect("cas at the read index");
    let err = store
        .commit(
            &lease,
            &[KvOp::set(&d, "new", 0), KvOp::set(&a, "three", a_idx)],
        )
        .await
        .expect_err("stale index");
    match err {
        StoreError::Conflict { key } => assert_eq!(key, a),
        other => panic!("expected a conflict on {a}, got {other}"),
    }
    assert_eq!(agent.kv_get(&d), None, "nothing of the txn was written");
    assert_eq!(agent.kv_get(&a), Some(b"two".to_vec()));

    // Create-only on an existing key conflicts.
    let err = store
        .commit(&lease, &[KvOp::set(&b, "x", 0)])
        .await
        .expect_err("b exists");
    assert!(
        matches!(err, StoreError::Conflict { ref key } if *key == b),
        "{err}"
    );
    assert_eq!(agent.kv_get(&b), Some(binary.clone()));

    // Delete with CAS.
    let snap = store.snapshot().await.expect("snapshot");
    let err = store
        .commit(
            &lease,
            &[KvOp::Delete {
                key: c.clone(),
                cas: snap.cas_index(&c) + 1000,
            }],
        )
        .await
        .expect_err("stale delete");
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
    store
        .commit(
            &lease,
            &[KvOp::Delete {
                key: c.clone(),
                cas: snap.cas_index(&c),
            }],
        )
        .await
        .expect("delete at the read index");
    assert_eq!(agent.kv_get(&c), None);

    // Operator writes: CAS-checked, no lock needed.
    e.resign().await.expect("resign");
    store
        .admin_commit(&[KvOp::set(&d, "admin", 0)])
        .await
        .expect("admin create");
    let err = store
        .admin_commit(&[KvOp::set(&d, "again", 0)])
        .await
        .expect_err("admin create-only on an existing key");
    assert!(
        matches!(err, StoreError::Conflict { ref key } if *key == d),
        "{err}"
    );
    assert_eq!(agent.kv_get(&d), Some(b"admin".to_vec()));
}

#[tokio::test]
async fn snapshot_of_an_empty_prefix_is_empty_and_ignores_neighbours() {
    let agent = ConsulAgent::start();
    let schema = schema("empty");
    let store = ConsulStore::new(client(&agent), schema.clone());
    // A sibling whose name starts with our prefix must not leak in.
    agent.kv_put(&format!("{}x/k", schema.prefix()), b"v");
    let snap = store.snapshot().await.expect("snapshot");
    assert!(
        snap.entries.is_empty(),
        "{:?}",
        snap.entries.keys().collect::<Vec<_>>()
    );
    assert!(snap.index > 0);
}

#[tokio::test]
async fn unreachable_consul_is_unavailable() {
    let agent = ConsulAgent::start();
    let store = ConsulStore::new(client(&agent), schema("gone"));
    drop(agent);
    let err = store.snapshot().await.expect_err("agent is gone");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn parse_table_end_to_end() {
    let agent = ConsulAgent::start();
    let schema = schema("parse");
    let store = ConsulStore::new(client(&agent), schema.clone());
    let n = |s: &str| NodeName::new(s);

    let flags: &[(&str, &[u8], Option<bool>)] = &[
        ("b-True", b"True", Some(true)),
        ("b-true", b"true", Some(true)),
        ("b-t", b"t", Some(true)),
        ("b-1", b"1", Some(true)),
        ("b-yes", b"yes", Some(true)),
        ("b-False", b"False", Some(false)),
        ("b-false", b"false", Some(false)),
        ("b-0", b"0", Some(false)),
        ("b-empty", b"", Some(false)),
        ("b-garbage", b"garbage", None),
        ("b-nonutf8", &[0xff, 0xfe, 0x01], None),
    ];
    for (node, raw, _) in flags {
        agent.kv_put(&schema.failed(&n(node)), raw);
    }
    // A node whose `failed` key is missing altogether.
    agent.kv_put(&schema.recovered(&n("b-missing")), b"False");
    let counts: &[(&str, &[u8], Option<u32>)] = &[
        ("c-3", b"3", Some(3)),
        ("c-neg", b"-1", None),
        ("c-x", b"x", None),
    ];
    for (node, raw, _) in counts {
        agent.kv_put(&schema.number_fails(&n(node)), raw);
    }

    let snap = store.snapshot().await.expect("snapshot");
    let state = ClusterState::parse(&schema, &snap);
    for (node, raw, want) in flags {
        let st = &state.compute_nodes[&n(node)];
        assert_eq!(st.failed.get(), *want, "{node}: {raw:?}");
        assert_eq!(st.has_invalid(), want.is_none(), "{node}");
        assert!(st.failed.modify_index > 0, "{node}: CAS index kept");
        if want.is_none() {
            assert_eq!(st.invalid[0].key, schema.failed(&n(node)));
        }
    }
    let missing = &state.compute_nodes[&n("b-missing")];
    assert_eq!(missing.failed.get(), Some(false));
    assert_eq!(
        missing.failed.modify_index, 0,
        "missing key: create-only index"
    );
    assert!(!missing.has_invalid());
    for (node, raw, want) in counts {
        let st = &state.compute_nodes[&n(node)];
        assert_eq!(st.number_fails.get(), *want, "{node}: {raw:?}");
        assert_eq!(st.has_invalid(), want.is_none(), "{node}");
    }
    // The raw bytes of invalid values are kept as stored (never rewritten).
    assert_eq!(
        snap.raw(&schema.failed(&n("b-nonutf8"))),
        Some(&[0xff, 0xfe, 0x01][..])
    );
    assert_eq!(state.compute_nodes.len(), flags.len() + 1 + counts.len());
}
