//! The email driver through the outbox against a real SMTP server (aiosmtpd).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use novaha_core::kv::Schema;
use novaha_notify::{EntryStatus, NotifySettings, Outbox, OutboxEntry, OutboxOptions};
use novaha_testkit::smtp::{CapturedMessage, SmtpOptions, SmtpServer};

fn settings(toml_body: &str) -> NotifySettings {
    #[derive(serde::Deserialize)]
    struct Doc {
        notify: Vec<NotifySettings>,
    }
    let doc: Doc = toml::from_str(&format!("[[notify]]\ndriver = \"email\"\n{toml_body}"))
        .expect("test settings parse");
    doc.notify.into_iter().next().unwrap()
}

fn plain(server: &SmtpServer, extra: &str) -> NotifySettings {
    settings(&format!(
        "smtp_url = \"{}?tls=none\"\nfrom = \"novaha@example.org\"\nadmins = [\"ops@example.org\", \"oncall@example.org\"]\ntimeout = \"5s\"\n{extra}",
        server.url()
    ))
}

fn outbox(s: &NotifySettings, dir: MemDirectory) -> (Arc<MemStore>, Outbox) {
    let store = MemStore::new("A");
    let ob = Outbox::from_settings(
        store.clone(),
        &Schema::new("t"),
        std::slice::from_ref(s),
        Arc::new(dir),
        OutboxOptions::default(),
    )
    .expect("outbox builds");
    (store, ob)
}

fn by_rcpt<'a>(msgs: &'a [CapturedMessage], rcpt: &str) -> Vec<&'a CapturedMessage> {
    msgs.iter()
        .filter(|m| m.rcpt_tos == [rcpt.to_owned()])
        .collect()
}

fn entry<'a>(entries: &'a [OutboxEntry], recipient: &str) -> &'a OutboxEntry {
    entries
        .iter()
        .find(|e| e.message.recipient == recipient)
        .unwrap_or_else(|| panic!("no entry for {recipient}"))
}

#[tokio::test]
async fn admin_summary_and_each_owners_message_arrive_with_the_right_content() {
    let server = SmtpServer::start(SmtpOptions::default());
    let (_store, ob) = outbox(&plain(&server, ""), directory());
    let lease = lease("A");
    let q = ob
        .enqueue(&lease, &report("inc-1"), t(100))
        .await
        .expect("enqueue");
    // 2 admins + alice + bob; carol has no address.
    assert_eq!(q.queued.len(), 4, "{q:?}");
    let s = ob.deliver_due(&lease, t(100)).await.expect("deliver");
    assert_eq!(s.count("sent"), 4, "{s:?}");
    let msgs = server.wait_for_messages(4, Duration::from_secs(10));
    assert_eq!(msgs.len(), 4);

    for admin in ["ops@example.org", "oncall@example.org"] {
        let m = by_rcpt(&msgs, admin);
        assert_eq!(m.len(), 1, "one summary for {admin}");
        let m = m[0];
        assert_eq!(m.mail_from, "novaha@example.org");
        assert_eq!(
            m.subject,
            "[novaha] compute-7 failed: 3/4 instances recovered, 1 in error"
        );
        let text = m.text.as_deref().expect("plain text part");
        let html = m.html.as_deref().expect("html alternative");
        for needle in [
            "vm-a1",
            "vm-a2",
            "vm-b1",
            "vm-c1",
            "ha-1",
            "ipmi",
            "no valid host found",
            "inc-1",
        ] {
            assert!(
                text.contains(needle),
                "{admin} text lacks {needle}:\n{text}"
            );
            assert!(html.contains(needle), "{admin} html lacks {needle}");
        }
        assert!(
            text.contains("compute-7") && text.contains("fenced") && text.contains("evacuated")
        );
        assert!(html.contains("<table"));
    }

    let alice = by_rcpt(&msgs, "alice@example.org");
    assert_eq!(alice.len(), 1);
    let text = alice[0].text.as_deref().unwrap();
    assert!(text.contains("Hello Alice"), "{text}");
    assert!(text.contains("vm-a1") && text.contains("vm-a2"), "{text}");
    assert!(
        !text.contains("vm-b1") && !text.contains("vm-c1"),
        "alice sees only hers:\n{text}"
    );
    assert_eq!(
        alice[0].subject,
        "[novaha] 2 of your instances were moved off failed host compute-7"
    );

    let bob = by_rcpt(&msgs, "bob@example.org");
    assert_eq!(bob.len(), 1);
    let text = bob[0].text.as_deref().unwrap();
    assert!(
        text.contains("vm-b1") && text.contains("no valid host found"),
        "{text}"
    );
    assert!(!text.contains("vm-a1"), "{text}");

    // Message-IDs carry the outbox ids; every entry is recorded as sent.
    let entries = ob.entries().await.unwrap();
    for e in &entries {
        assert_eq!(e.status, EntryStatus::Sent, "{e:?}");
        assert_eq!(e.attempts, 1);
        assert!(
            msgs.iter()
                .any(|m| m.message_id == format!("<{}@novaha>", e.message.id))
        );
    }

    // A retried / resumed incident sends nothing twice.
    let again = ob
        .enqueue(&lease, &report("inc-1"), t(200))
        .await
        .expect("re-enqueue");
    assert!(again.queued.is_empty());
    assert_eq!(again.existing, 4);
    let s = ob.deliver_due(&lease, t(300)).await.unwrap();
    assert!(s.outcomes.is_empty(), "{s:?}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(server.messages().len(), 4);
}

#[tokio::test]
async fn starttls_with_a_self_signed_ca_and_auth() {
    let server = SmtpServer::start(SmtpOptions {
        starttls: true,
        auth: Some(("novaha".into(), "s3cret-pass".into())),
        reject: vec![],
    });
    let tmp = tempfile::tempdir().unwrap();
    let pw = tmp.path().join("smtp.pw");
    std::fs::write(&pw, "s3cret-pass\n").unwrap();
    let s = settings(&format!(
        "smtp_url = \"{}?tls=required\"\nfrom = \"novaha@example.org\"\nadmins = [\"ops@example.org\"]\n\
         user = \"novaha\"\npassword_file = \"{}\"\nca_file = \"{}\"\nnotify_owners = false\ntimeout = \"5s\"\n",
        server.url(),
        pw.display(),
        server.ca_file().display()
    ));
    let (_store, ob) = outbox(&s, directory());
    let lease = lease("A");
    ob.enqueue(&lease, &report("inc-tls"), t(0)).await.unwrap();
    let sum = ob.deliver_due(&lease, t(0)).await.unwrap();
    assert_eq!(
        sum.count("sent"),
        1,
        "{sum:?} {:?}",
        ob.entries().await.unwrap()
    );
    let msgs = server.wait_for_messages(1, Duration::from_secs(10));
    assert_eq!(msgs.len(), 1, "notify_owners = false: only the admin");
    assert!(msgs[0].tls, "session was upgraded with STARTTLS");
    assert_eq!(msgs[0].auth_user.as_deref(), Some("novaha"));
    assert_eq!(msgs[0].rcpt_tos, ["ops@example.org"]);

    // Without the CA the certificate is not trusted: a temporary failure,
    // recorded, nothing delivered, and the password appears nowhere.
    let s = settings(&format!(
        "smtp_url = \"{}?tls=required\"\nfrom = \"novaha@example.org\"\nadmins = [\"ops@example.org\"]\n\
         user = \"novaha\"\npassword_file = \"{}\"\nnotify_owners = false\ntimeout = \"5s\"\n",
        server.url(),
        pw.display()
    ));
    let (_store, ob) = outbox(&s, directory());
    ob.enqueue(&lease, &report("inc-untrusted"), t(0))
        .await
        .unwrap();
    let sum = ob.deliver_due(&lease, t(0)).await.unwrap();
    assert_eq!(sum.count("retry"), 1, "{sum:?}");
    let e = &ob.entries().await.unwrap()[0];
    assert_eq!(e.status, EntryStatus::Pending);
    let err = e.last_error.as_deref().unwrap();
    assert!(err.contains("smtp 127.0.0.1"), "{err}");
    assert!(!err.contains("s3cret"), "{err}");
    assert_eq!(server.messages().len(), 1);
}

#[tokio::test]
async fn smtp_down_during_the_incident_is_delivered_exactly_once_after_it_comes_back() {
    let mut server = SmtpServer::start(SmtpOptions::default());
    let (_store, ob) = outbox(&plain(&server, ""), directory());
    let lease = lease("A");
    server.stop();
    ob.enqueue(&lease, &report("inc-down"), t(0)).await.unwrap();
    let s = ob.deliver_due(&lease, t(0)).await.unwrap();
    assert_eq!(s.count("retry"), 4, "{s:?}");
    for e in ob.entries().await.unwrap() {
        assert_eq!(e.status, EntryStatus::Pending);
        assert_eq!(e.attempts, 1);
        assert!(
            e.next_attempt >= t(5) && e.next_attempt <= t(10),
            "backoff: {:?}",
            e.next_attempt
        );
        assert!(
            e.last_error.as_deref().unwrap().contains("smtp 127.0.0.1"),
            "{e:?}"
        );
    }
    // Still down at the second attempt.
    let s = ob.deliver_due(&lease, t(10)).await.unwrap();
    assert_eq!(s.count("retry"), 4, "{s:?}");

    server.restart();
    // Not due yet: backoff holds.
    let s = ob.deliver_due(&lease, t(11)).await.unwrap();
    assert!(s.outcomes.is_empty(), "{s:?}");
    let s = ob.deliver_due(&lease, t(3600)).await.unwrap();
    assert_eq!(s.count("sent"), 4, "{s:?}");
    let s = ob.deliver_due(&lease, t(7200)).await.unwrap();
    assert!(s.outcomes.is_empty());
    let msgs = server.wait_for_messages(4, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(server.messages().len(), 4, "exactly once each");
    let mut rcpts: Vec<String> = msgs.iter().flat_map(|m| m.rcpt_tos.clone()).collect();
    rcpts.sort();
    assert_eq!(
        rcpts,
        [
            "alice@example.org",
            "bob@example.org",
            "oncall@example.org",
            "ops@example.org"
        ]
    );
    for e in ob.entries().await.unwrap() {
        assert_eq!(e.status, EntryStatus::Sent);
        assert_eq!(e.attempts, 3);
    }
}

#[tokio::test]
async fn a_bad_address_is_recorded_and_the_other_recipients_still_get_theirs() {
    let server = SmtpServer::start(SmtpOptions {
        reject: vec!["bob@example.org".into()],
        ..SmtpOptions::default()
    });
    let dir = MemDirectory::with_users(&[
        MemDirectory::person("u-alice", "Alice", Some("alice@example.org")),
        MemDirectory::person("u-bob", "Bob", Some("bob@example.org")),
        MemDirectory::person("u-carol", "Carol", Some("carol at example dot org")),
    ]);
    let (_store, ob) = outbox(&plain(&server, ""), dir);
    let lease = lease("A");
    ob.enqueue(&lease, &report("inc-bad"), t(0)).await.unwrap();
    let s = ob.deliver_due(&lease, t(0)).await.unwrap();
    assert_eq!(s.count("sent"), 3, "{s:?}");
    assert_eq!(s.count("failed"), 2, "{s:?}");
    let entries = ob.entries().await.unwrap();
    let bob = entry(&entries, "bob@example.org");
    assert_eq!(bob.status, EntryStatus::Failed);
    assert!(
        bob.last_error.as_deref().unwrap().contains("550"),
        "{bob:?}"
    );
    let carol = entry(&entries, "carol at example dot org");
    assert_eq!(carol.status, EntryStatus::Failed);
    assert!(
        carol
            .last_error
            .as_deref()
            .unwrap()
            .contains("invalid recipient address"),
        "{carol:?}"
    );
    let msgs = server.wait_for_messages(3, Duration::from_secs(10));
    let mut rcpts: Vec<String> = msgs.iter().flat_map(|m| m.rcpt_tos.clone()).collect();
    rcpts.sort();
    assert_eq!(
        rcpts,
        ["alice@example.org", "oncall@example.org", "ops@example.org"]
    );
    // Permanent: never retried.
    let s = ob.deliver_due(&lease, t(86_400)).await.unwrap();
    assert!(s.outcomes.is_empty(), "{s:?}");
    assert_eq!(
        entry(&ob.entries().await.unwrap(), "bob@example.org").attempts,
        1
    );
}

#[tokio::test]
async fn keystone_down_queues_the_admin_summary_now_and_owners_on_retry_and_members_are_deduplicated()
 {
    let server = SmtpServer::start(SmtpOptions::default());
    let mut dir = directory();
    // Project p-db's members: dan, and bob again (with a differently cased
    // address) and an admin: nobody is mailed twice.
    dir.projects.insert(
        "p-db".into(),
        vec![
            MemDirectory::person("u-dan", "Dan", Some("dan@example.org")),
            MemDirectory::person("u-bob", "Bob", Some("Bob@Example.org")),
            MemDirectory::person("u-ops", "Ops", Some("ops@example.org")),
        ],
    );
    *dir.down.lock().unwrap() = true;
    let dir = Arc::new(dir);
    let s = plain(&server, "notify_project_members = true\n");
    let store = MemStore::new("A");
    let channel = novaha_notify::build_channel(&s, dir.clone()).unwrap();
    let ob = Outbox::new(
        store,
        &Schema::new("t"),
        vec![channel],
        OutboxOptions::default(),
    )
    .unwrap();
    let lease = lease("A");
    let err = ob
        .enqueue(&lease, &report("inc-ks"), t(0))
        .await
        .expect_err("owners unresolved");
    assert!(err.is_retryable(), "{err}");
    assert_eq!(
        ob.entries().await.unwrap().len(),
        2,
        "admin summaries queued anyway"
    );

    *dir.down.lock().unwrap() = false;
    let q = ob.enqueue(&lease, &report("inc-ks"), t(5)).await.unwrap();
    assert_eq!(q.existing, 2);
    assert_eq!(q.queued.len(), 3, "alice, bob, dan: {q:?}");
    ob.deliver_due(&lease, t(10)).await.unwrap();
    let msgs = server.wait_for_messages(5, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(server.messages().len(), 5);
    let mut rcpts: Vec<String> = msgs.iter().flat_map(|m| m.rcpt_tos.clone()).collect();
    rcpts.sort();
    assert_eq!(
        rcpts,
        [
            "alice@example.org",
            "bob@example.org",
            "dan@example.org",
            "oncall@example.org",
            "ops@example.org"
        ]
    );
    let dan = by_rcpt(&msgs, "dan@example.org")[0].text.clone().unwrap();
    assert!(
        dan.contains("vm-b1") && dan.contains("vm-c1") && !dan.contains("vm-a1"),
        "{dan}"
    );
}
