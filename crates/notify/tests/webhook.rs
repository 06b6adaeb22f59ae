//! The webhook and log drivers against a local HTTP receiver.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use novaha_core::kv::Schema;
use novaha_notify::{EntryStatus, NotifySettings, Outbox, OutboxOptions, WEBHOOK_SCHEMA};
use novaha_testkit::http_receiver::HttpReceiver;
use novaha_testkit::huge_body::HugeBody;

fn settings(toml_body: &str) -> Vec<NotifySettings> {
    #[derive(serde::Deserialize)]
    struct Doc {
        notify: Vec<NotifySettings>,
    }
    let doc: Doc = toml::from_str(toml_body).expect("test settings parse");
    doc.notify
}

fn webhook(rx: &HttpReceiver) -> Vec<NotifySettings> {
    settings(&format!(
        "[[notify]]\ndriver = \"webhook\"\nurl = \"{}\"\nheaders = {{ Authorization = \"Bearer tok-123\" }}\ntimeout = \"3s\"\n\
         [[notify]]\ndriver = \"log\"\n",
        rx.url("/hooks/T0/secret-path")
    ))
}

fn outbox(s: &[NotifySettings]) -> (Arc<MemStore>, Outbox) {
    let store = MemStore::new("A");
    let ob = Outbox::from_settings(
        store.clone(),
        &Schema::new("t"),
        s,
        Arc::new(directory()),
        OutboxOptions::default(),
    )
    .expect("outbox builds");
    (store, ob)
}

#[tokio::test]
async fn webhook_500_then_success_is_retried_and_delivered_once() {
    let rx = HttpReceiver::start();
    rx.fail_next(2, 500);
    let (_store, ob) = outbox(&webhook(&rx));
    let lease = lease("A");
    let q = ob.enqueue(&lease, &report("inc-wh"), t(0)).await.unwrap();
    assert_eq!(q.queued.len(), 2, "one webhook, one log line: {q:?}");

    let s = ob.deliver_due(&lease, t(0)).await.unwrap();
    assert_eq!(s.count("retry"), 1, "{s:?}");
    assert_eq!(s.count("sent"), 1, "the log line: {s:?}");
    let e = ob
        .entries()
        .await
        .unwrap()
        .into_iter()
        .find(|e| e.message.channel == "webhook")
        .unwrap();
    assert_eq!(e.status, EntryStatus::Pending);
    let err = e.last_error.unwrap();
    assert!(err.contains("HTTP 500"), "{err}");
    assert!(
        !err.contains("secret-path") && !err.contains("tok-123"),
        "no secret in errors: {err}"
    );

    let s = ob.deliver_due(&lease, t(3600)).await.unwrap();
    assert_eq!(s.count("retry"), 1, "{s:?}");
    let s = ob.deliver_due(&lease, t(7200)).await.unwrap();
    assert_eq!(s.count("sent"), 1, "{s:?}");
    let s = ob.deliver_due(&lease, t(10_800)).await.unwrap();
    assert!(s.outcomes.is_empty(), "{s:?}");

    let reqs = rx.wait_for_requests(3, Duration::from_secs(5));
    assert_eq!(reqs.len(), 3);
    assert_eq!(
        reqs.iter().map(|r| r.answered).collect::<Vec<_>>(),
        [500, 500, 200]
    );
    let key = reqs[0].header("idempotency-key").unwrap().to_owned();
    for r in &reqs {
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/hooks/T0/secret-path");
        assert_eq!(r.header("authorization"), Some("Bearer tok-123"));
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(
            r.header("idempotency-key"),
            Some(key.as_str()),
            "same message each time"
        );
        assert_eq!(r.body, reqs[0].body);
    }
    let body: serde_json::Value = serde_json::from_slice(&reqs[2].body).unwrap();
    assert_eq!(body["schema"], WEBHOOK_SCHEMA);
    assert_eq!(body["id"], key.as_str());
    assert_eq!(body["incident"], "inc-wh");
    assert_eq!(body["node"], "compute-7");
    assert_eq!(body["ha_node"], "ha-1");
    assert_eq!(body["fence"]["driver"], "ipmi");
    assert_eq!(body["timeline"]["fenced"], "2023-11-14T22:13:40Z");
    assert_eq!(
        body["summary"],
        serde_json::json!({"total": 4, "done": 3, "error": 1, "skipped": 0, "pending": 0, "rebuilt": 0})
    );
    assert_eq!(body["instances"].as_array().unwrap().len(), 4);
    assert_eq!(body["instances"][2]["name"], "vm-b1");
    assert_eq!(body["instances"][2]["state"], "error");
    assert_eq!(body["instances"][2]["old_host"], "compute-7");
    assert_eq!(body["instances"][0]["new_host"], "ha-1");
    let text = body["text"].as_str().unwrap();
    assert!(
        text.contains("compute-7") && text.contains("3/4") && text.contains("1 in error"),
        "{text}"
    );
    let e = ob
        .entries()
        .await
        .unwrap()
        .into_iter()
        .find(|e| e.message.channel == "webhook")
        .unwrap();
    assert_eq!((e.status, e.attempts), (EntryStatus::Sent, 3));
}

#[tokio::test]
async fn webhook_4xx_is_permanent_and_not_retried() {
    let rx = HttpReceiver::start();
    rx.fail_next(1, 400);
    let (_store, ob) = outbox(&webhook(&rx)[..1]);
    let lease = lease("A");
    ob.enqueue(&lease, &report("inc-400"), t(0)).await.unwrap();
    let s = ob.deliver_due(&lease, t(0)).await.unwrap();
    assert_eq!(s.count("failed"), 1, "{s:?}");
    let s = ob.deliver_due(&lease, t(86_400)).await.unwrap();
    assert!(s.outcomes.is_empty());
    assert_eq!(rx.requests().len(), 1);
    let e = &ob.entries().await.unwrap()[0];
    assert_eq!(e.status, EntryStatus::Failed);
    assert!(e.last_error.as_deref().unwrap().contains("HTTP 400"));
}

#[tokio::test]
async fn direct_notifier_from_build_posts_once() {
    let rx = HttpReceiver::start();
    let s = webhook(&rx);
    let n = novaha_notify::build(&s[0], Arc::new(directory())).unwrap();
    assert_eq!(n.driver(), "webhook");
    n.notify(&report("inc-direct")).await.expect("delivered");
    assert_eq!(rx.requests().len(), 1);
    let log = novaha_notify::build(&s[1], Arc::new(directory())).unwrap();
    log.notify(&report("inc-direct"))
        .await
        .expect("log never fails");

    rx.fail_next(1, 503);
    let err = n.notify(&report("inc-direct")).await.expect_err("503");
    assert!(err.is_retryable(), "{err}");
}

#[tokio::test]
async fn webhook_receiver_down_is_temporary() {
    let rx = HttpReceiver::start();
    let s = webhook(&rx);
    drop(rx);
    let (_store, ob) = outbox(&s[..1]);
    let lease = lease("A");
    ob.enqueue(&lease, &report("inc-x"), t(0)).await.unwrap();
    let s = ob.deliver_due(&lease, t(0)).await.unwrap();
    assert_eq!(s.count("retry"), 1, "{s:?}");
    let err = ob.entries().await.unwrap()[0].last_error.clone().unwrap();
    assert!(err.contains("POST to http://127.0.0.1:"), "{err}");
    assert!(!err.contains("secret-path"), "{err}");
}

#[tokio::test]
async fn a_huge_error_body_is_read_only_as_far_as_the_excerpt_needs() {
    // A receiver (or a proxy in front of it) answering 500 with 256 MiB:
    // the error keeps an excerpt, the rest is never read.
    let peer = HugeBody::serve(500, 256 << 20).await;
    let s = settings(&format!(
        "[[notify]]\ndriver = \"webhook\"\nurl = \"{}/hooks/T0/secret-path\"\nheaders = {{ Authorization = \"Bearer tok-123\" }}\ntimeout = \"30s\"\n",
        peer.url()
    ));
    let (_store, ob) = outbox(&s);
    let lease = lease("A");
    ob.enqueue(&lease, &report("inc-huge"), t(0)).await.unwrap();
    let s = peer.bounded(ob.deliver_due(&lease, t(0))).await.unwrap();
    assert_eq!(s.count("retry"), 1, "{s:?}");
    let e = ob.entries().await.unwrap().pop().unwrap();
    let err = e.last_error.unwrap();
    assert!(err.contains("HTTP 500") && err.contains("{{{{"), "{err}");
    assert!(err.len() < 2_000, "{} bytes of error", err.len());
    assert!(
        !err.contains("secret-path") && !err.contains("tok-123"),
        "no secret in errors: {err}"
    );
}
