//! Outbox logic over an in-memory StateStore (Consul's CAS and lock-check
//! semantics), with a real HTTP receiver as the observable peer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use novaha_core::kv::Schema;
use novaha_notify::{
    Backoff, DeliveryOutcome, EntryStatus, NotifySettings, Outbox, OutboxEntry, OutboxOptions,
};
use novaha_testkit::http_receiver::HttpReceiver;

fn hook(rx: &HttpReceiver, name: &str) -> NotifySettings {
    #[derive(serde::Deserialize)]
    struct Doc {
        notify: Vec<NotifySettings>,
    }
    let doc: Doc = toml::from_str(&format!(
        "[[notify]]\ndriver = \"webhook\"\nname = \"{name}\"\nurl = \"{}\"\ntimeout = \"3s\"\n",
        rx.url("/hook")
    ))
    .unwrap();
    doc.notify.into_iter().next().unwrap()
}

fn outbox_with(store: &Arc<MemStore>, rx: &HttpReceiver, options: OutboxOptions) -> Outbox {
    Outbox::from_settings(
        store.clone(),
        &Schema::new("t"),
        &[hook(rx, "ops-hook")],
        Arc::new(directory()),
        options,
    )
    .unwrap()
}

#[tokio::test]
async fn leader_crash_before_delivery_then_new_leader_delivers_exactly_once() {
    let rx = HttpReceiver::start();
    let store = MemStore::new("A");
    let a = outbox_with(&store, &rx, OutboxOptions::default());
    a.enqueue(&lease("A"), &report("inc-1"), t(0))
        .await
        .unwrap();
    drop(a); // leader A "crashes" before delivering

    store.set_holder("B");
    let b = outbox_with(&store, &rx, OutboxOptions::default());
    // B resumes the incident: enqueue again is a no-op.
    let q = b
        .enqueue(&lease("B"), &report("inc-1"), t(30))
        .await
        .unwrap();
    assert!(q.queued.is_empty());
    assert_eq!(q.existing, 1);
    let s = b.deliver_due(&lease("B"), t(30)).await.unwrap();
    assert_eq!(s.count("sent"), 1);
    assert!(
        b.deliver_due(&lease("B"), t(99_999))
            .await
            .unwrap()
            .outcomes
            .is_empty()
    );
    assert_eq!(rx.wait_for_requests(1, Duration::from_secs(5)).len(), 1);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(rx.requests().len(), 1, "exactly once");
    let e = &b.entries().await.unwrap()[0];
    assert_eq!(e.epoch.as_deref(), Some("B:1"));
}

/// The worker ([`Outbox::run`]) reports every message's outcome to its
/// sink as it goes (the daemon counts them in
/// `novaha_notifications_total{driver,result}`): a refused first send,
/// then the retry that goes through.
#[tokio::test]
async fn the_worker_reports_every_outcome_to_its_sink() {
    let rx = HttpReceiver::start();
    rx.fail_next(1, 503);
    let store = MemStore::new("A");
    let seen: Arc<std::sync::Mutex<Vec<(String, &'static str)>>> = Arc::default();
    let sink_seen = seen.clone();
    let options = OutboxOptions {
        backoff: Backoff {
            base: Duration::from_millis(50),
            cap: Duration::from_millis(100),
        },
        poll_interval: Duration::from_millis(50),
        ..OutboxOptions::default()
    };
    let ob = outbox_with(&store, &rx, options).with_outcome_sink(Arc::new(
        move |o: &DeliveryOutcome| sink_seen.lock().unwrap().push((o.driver.clone(), o.result)),
    ));
    let lease = lease("A");
    ob.enqueue(&lease, &report("inc-9"), t(0)).await.unwrap();
    let token = lease.token().clone();
    let stop = async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while seen.lock().unwrap().len() < 2 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        token.cancel();
    };
    tokio::join!(ob.run(&lease), stop);
    assert_eq!(
        *seen.lock().unwrap(),
        [
            ("webhook".to_owned(), "retry"),
            ("webhook".to_owned(), "sent")
        ]
    );
    assert_eq!(rx.requests().len(), 2);
    assert_eq!(ob.entries().await.unwrap()[0].status, EntryStatus::Sent);
}

#[tokio::test]
async fn a_crash_between_claim_and_result_resends_only_after_the_claim_expires() {
    let rx = HttpReceiver::start();
    let store = MemStore::new("A");
    let ob = outbox_with(&store, &rx, OutboxOptions::default());
    ob.enqueue(&lease("A"), &report("inc-2"), t(0))
        .await
        .unwrap();
    // A claimed the message (status sending) and died before recording the
    // result: write exactly what its claim looks like.
    let key = store
        .keys()
        .into_iter()
        .find(|k| k.contains("/novaha/outbox/"))
        .unwrap();
    let mut e: OutboxEntry = serde_json::from_slice(&store.raw(&key).unwrap()).unwrap();
    e.status = EntryStatus::Sending;
    e.attempts = 1;
    e.last_attempt_at = Some(t(1));
    e.next_attempt = t(301);
    e.epoch = Some("A:1".into());
    store.put_raw(&key, &serde_json::to_vec(&e).unwrap());

    store.set_holder("B");
    let b = outbox_with(&store, &rx, OutboxOptions::default());
    let s = b.deliver_due(&lease("B"), t(60)).await.unwrap();
    assert!(s.outcomes.is_empty(), "claim still holds: {s:?}");
    assert_eq!(s.next_due, Some(t(301)));
    let s = b.deliver_due(&lease("B"), t(302)).await.unwrap();
    assert_eq!(s.count("sent"), 1);
    let e = &b.entries().await.unwrap()[0];
    assert_eq!((e.status, e.attempts), (EntryStatus::Sent, 2));
    assert_eq!(rx.requests().len(), 1);
}

#[tokio::test]
async fn a_deposed_leader_sends_nothing() {
    let rx = HttpReceiver::start();
    let store = MemStore::new("A");
    let ob = outbox_with(&store, &rx, OutboxOptions::default());
    ob.enqueue(&lease("A"), &report("inc-3"), t(0))
        .await
        .unwrap();
    store.set_holder("B");
    let err = ob
        .deliver_due(&lease("A"), t(0))
        .await
        .expect_err("not leader");
    assert!(err.is_not_leader(), "{err}");
    assert!(rx.requests().is_empty(), "claim refused before any send");
    assert_eq!(ob.entries().await.unwrap()[0].status, EntryStatus::Pending);

    // A lease already lost never starts a send either.
    let lost = lease("B");
    lost.token().cancel();
    let s = ob.deliver_due(&lost, t(0)).await.unwrap();
    assert!(s.outcomes.is_empty());
    assert!(rx.requests().is_empty());
}

#[tokio::test]
async fn an_unparsable_entry_is_left_untouched_and_others_still_go() {
    let rx = HttpReceiver::start();
    let store = MemStore::new("A");
    let ob = outbox_with(&store, &rx, OutboxOptions::default());
    let bad = ob.key("garbage-entry");
    store.put_raw(&bad, b"{not json");
    ob.enqueue(&lease("A"), &report("inc-4"), t(0))
        .await
        .unwrap();
    let s = ob.deliver_due(&lease("A"), t(0)).await.unwrap();
    assert_eq!(s.invalid, 1);
    assert_eq!(s.count("sent"), 1);
    assert_eq!(store.raw(&bad).unwrap(), b"{not json");
    let s = ob.deliver_due(&lease("A"), t(30 * 86_400)).await.unwrap();
    assert_eq!(store.raw(&bad).unwrap(), b"{not json", "not even collected");
    assert_eq!(
        s.collected, 1,
        "the sent entry is collected after the retention"
    );
}

#[tokio::test]
async fn gives_up_after_max_attempts_and_keeps_sent_entries_for_the_retention() {
    let rx = HttpReceiver::start();
    rx.fail_next(100, 503);
    let store = MemStore::new("A");
    let options = OutboxOptions {
        max_attempts: 3,
        backoff: Backoff {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(4),
        },
        ..OutboxOptions::default()
    };
    let ob = outbox_with(&store, &rx, options);
    let lease = lease("A");
    ob.enqueue(&lease, &report("inc-5"), t(0)).await.unwrap();
    for (i, now) in [0, 100, 200, 300].into_iter().enumerate() {
        let s = ob.deliver_due(&lease, t(now)).await.unwrap();
        let want = ["retry", "retry", "failed"].get(i).copied();
        assert_eq!(
            s.outcomes.first().map(|o| o.result),
            want,
            "round {i}: {s:?}"
        );
    }
    assert_eq!(rx.requests().len(), 3);
    let e = &ob.entries().await.unwrap()[0];
    assert_eq!(e.status, EntryStatus::Failed);
    assert!(
        e.last_error
            .as_deref()
            .unwrap()
            .starts_with("gave up after 3 attempts"),
        "{e:?}"
    );
}

#[tokio::test]
async fn store_outage_during_enqueue_is_retryable_and_leaves_nothing_half_done() {
    let rx = HttpReceiver::start();
    let store = MemStore::new("A");
    let ob = outbox_with(&store, &rx, OutboxOptions::default());
    *store.fail_next.lock().unwrap() = 1;
    let err = ob
        .enqueue(&lease("A"), &report("inc-6"), t(0))
        .await
        .expect_err("store down");
    assert!(err.is_retryable(), "{err}");
    assert!(ob.entries().await.unwrap().is_empty());
    ob.enqueue(&lease("A"), &report("inc-6"), t(1))
        .await
        .unwrap();
    assert_eq!(ob.entries().await.unwrap().len(), 1);
}

#[tokio::test]
async fn duplicate_channel_names_are_refused() {
    let rx = HttpReceiver::start();
    let err = Outbox::from_settings(
        MemStore::new("A"),
        &Schema::new("t"),
        &[hook(&rx, "same"), hook(&rx, "same")],
        Arc::new(directory()),
        OutboxOptions::default(),
    )
    .err()
    .expect("duplicate names refused");
    assert!(err.to_string().contains("\"same\""), "{err}");
}

#[tokio::test]
async fn run_delivers_in_the_background_and_stops_when_the_lease_is_lost() {
    let rx = HttpReceiver::start();
    let store = MemStore::new("A");
    let ob = Arc::new(outbox_with(&store, &rx, OutboxOptions::default()));
    let lease = lease("A");
    let worker = {
        let (ob, lease) = (ob.clone(), lease.clone());
        tokio::spawn(async move { ob.run(&lease).await })
    };
    ob.enqueue(&lease, &report("inc-7"), chrono::Utc::now())
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), async {
        while rx.requests().is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(got.is_ok(), "worker delivered after the enqueue woke it");
    lease.token().cancel();
    tokio::time::timeout(Duration::from_secs(5), worker)
        .await
        .expect("worker stops when the lease is lost")
        .unwrap();
}
