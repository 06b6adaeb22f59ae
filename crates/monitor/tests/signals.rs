//! The monitor's signals against their real peers: Nova and Keystone from
//! novaha-sim (in-process, free port), a real Consul dev agent (testkit,
//! free ports, its own temp dir) with registered checks, and TCP listeners
//! on loopback. The observations are fed to core's `detect::judge`, as the
//! runner does.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use novaha_consul::ConsulSettings;
use novaha_core::NodeName;
use novaha_core::Secret;
use novaha_core::detect::{DetectEvent, Thresholds, judge};
use novaha_core::kv::{ClusterState, Schema, Snapshot};
use novaha_monitor::{Monitor, MonitorSettings, Observation, Problem, Signal};
use novaha_openstack::config::AuthSection;
use novaha_openstack::{Env, NovaClient, OpenStackConfig, RetryConfig, Session};
use novaha_sim::{FaultKind, FaultRule, Sim, SimConfig, SimHandle};
use novaha_testkit::consul::ConsulAgent;

async fn sim(hosts: usize) -> SimHandle {
    Sim::start(
        "127.0.0.1:0",
        SimConfig {
            hosts,
            instances_per_host: 1,
            service_down_time: Duration::from_millis(500),
            ..SimConfig::default()
        },
    )
    .await
    .expect("sim starts")
}

async fn nova(sim: &SimHandle) -> NovaClient {
    let c = sim.credentials();
    let cfg = OpenStackConfig {
        auth: Some(AuthSection {
            auth_url: Some(c.auth_url),
            username: Some(c.username),
            password: Some(Secret::new(c.password)),
            project_name: Some(c.project_name),
            user_domain_name: Some(c.user_domain_name),
            project_domain_name: Some(c.project_domain_name),
            ..AuthSection::default()
        }),
        region_name: Some(c.region_name),
        timeout: Duration::from_secs(5),
        retry: RetryConfig {
            attempts: 2,
            base: Duration::from_millis(10),
            cap: Duration::from_millis(20),
        },
        ..OpenStackConfig::default()
    };
    let cloud = cfg.resolve(&Env::default()).expect("config");
    NovaClient::connect(Arc::new(Session::new(cloud).expect("session")))
        .await
        .expect("nova connects")
}

fn n(s: &str) -> NodeName {
    NodeName::from(s)
}

fn signals(o: &Observation) -> &BTreeMap<NodeName, novaha_core::detect::NodeSignals> {
    o.nova.as_ref().expect("a judgement this cycle")
}

/// Judges `o` against an empty K/V tree with threshold 0, returning the
/// events (what the runner would log).
fn judged(o: &Observation) -> Vec<DetectEvent> {
    let schema = Schema::new("t");
    let state = ClusterState::parse(&schema, &Snapshot::default());
    let th = Thresholds {
        threshold: 0,
        max_failed_fraction: 1.0,
        max_failed_nodes: None,
    };
    judge(&schema, &state, o.nova.as_ref(), &th).events
}

async fn wait_down(monitor: &Monitor, node: &str) -> Observation {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let o = monitor.observe().await;
        if o.nova.as_ref().is_some_and(|m| !m[&n(node)].nova.up) {
            return o;
        }
        assert!(Instant::now() < deadline, "{node} never read down: {o:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn nova_signal_reads_a_killed_host_down_after_service_down_time() {
    let sim = sim(3).await;
    let monitor = Monitor::new(MonitorSettings::default(), nova(&sim).await, None).unwrap();
    let o = monitor.observe().await;
    let m = signals(&o);
    assert_eq!(
        m.keys().map(NodeName::as_str).collect::<Vec<_>>(),
        ["compute-1", "compute-2", "compute-3", "ha-1"]
    );
    assert!(m.values().all(|s| s.nova.up && !s.nova.forced_down));
    assert!(m[&n("compute-1")].nova.enabled);
    assert!(!m[&n("ha-1")].nova.enabled, "the spare is disabled");
    assert!(
        m.values()
            .all(|s| s.consul_failed.is_none() && s.tcp_failed.is_none())
    );
    assert!(o.problems.is_empty());
    let (svc, _) = sim.service("compute-1").unwrap();
    assert_eq!(m[&n("compute-1")].nova.id, svc.uuid.to_string());

    let killed = Instant::now();
    sim.kill("compute-1").unwrap();
    let o = monitor.observe().await;
    assert!(
        signals(&o)[&n("compute-1")].nova.up,
        "still up before service_down_time"
    );
    let o = wait_down(&monitor, "compute-1").await;
    assert!(killed.elapsed() >= Duration::from_millis(450));
    let m = signals(&o);
    assert!(m[&n("compute-1")].all_failed());
    assert!(m[&n("compute-2")].nova.up);
    assert!(judged(&o).contains(&DetectEvent::Failed {
        node: n("compute-1"),
        number_fails: 1
    }));

    sim.revive("compute-1").unwrap();
    let o = monitor.observe().await;
    assert!(signals(&o)[&n("compute-1")].nova.up, "revived");
}

#[tokio::test]
async fn nova_or_keystone_unreachable_means_no_judgement() {
    let sim = sim(2).await;
    let monitor = Monitor::new(MonitorSettings::default(), nova(&sim).await, None).unwrap();
    assert!(monitor.observe().await.nova.is_some());

    sim.add_fault(FaultRule::new("/os-services", FaultKind::Status { status: 500 }).method("GET"));
    let o = monitor.observe().await;
    assert_eq!(o.nova, None);
    assert!(
        matches!(&o.problems[..], [Problem::NovaUnreachable { error }] if error.contains("HTTP 500")),
        "{:?}",
        o.problems
    );
    assert_eq!(o.problems[0].kind(), "nova_unreachable");
    assert_eq!(judged(&o), [DetectEvent::NovaUnreachable]);

    // Keystone down too: the token expires and cannot be renewed.
    sim.clear_faults();
    sim.add_fault(FaultRule::new(
        "/auth/tokens",
        FaultKind::Status { status: 503 },
    ));
    sim.expire_tokens();
    let o = monitor.observe().await;
    assert_eq!(o.nova, None, "{:?}", o.problems);
    assert!(matches!(&o.problems[..], [Problem::NovaUnreachable { .. }]));

    sim.clear_faults();
    assert!(
        monitor.observe().await.nova.is_some(),
        "back once reachable"
    );
}

fn consul_settings(addr: String) -> ConsulSettings {
    ConsulSettings {
        address: addr,
        token: None,
        request_timeout: Duration::from_secs(5),
        tls: Default::default(),
    }
}

/// Registers an external node with checks of the given statuses in the
/// agent's catalog (what a compute node's own agent would publish).
fn register_node(agent: &ConsulAgent, node: &str, checks: &[(&str, &str)]) {
    let checks: Vec<_> = checks
        .iter()
        .map(|(id, status)| serde_json::json!({"CheckID": id, "Name": id, "Status": status}))
        .collect();
    let body = serde_json::json!({"Node": node, "Address": "127.0.0.1", "Checks": checks});
    let (status, out) = agent.http("PUT", "/v1/catalog/register", body.to_string().as_bytes());
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consul_signal_needs_every_configured_check_critical() {
    let agent = tokio::task::spawn_blocking(ConsulAgent::start)
        .await
        .unwrap();
    let sim = sim(4).await;
    let agent = Arc::new(agent);
    let a = agent.clone();
    tokio::task::spawn_blocking(move || {
        let checks = "novaha-compute";
        register_node(
            &a,
            "compute-1",
            &[("serfHealth", "critical"), (checks, "critical")],
        );
        register_node(
            &a,
            "compute-2",
            &[("serfHealth", "critical"), (checks, "passing")],
        );
        register_node(&a, "compute-3", &[("serfHealth", "critical")]);
        register_node(
            &a,
            "consul-name-of-4",
            &[("serfHealth", "critical"), (checks, "critical")],
        );
    })
    .await
    .unwrap();
    let mut settings = MonitorSettings {
        signals: vec![Signal::Nova, Signal::Consul],
        ..MonitorSettings::default()
    };
    settings.consul.checks = vec!["serfHealth".into(), "novaha-compute".into()];
    settings
        .consul
        .node_names
        .insert("compute-4".into(), "consul-name-of-4".into());
    let monitor = Monitor::new(
        settings,
        nova(&sim).await,
        Some(&consul_settings(agent.http_addr())),
    )
    .unwrap();
    for h in ["compute-1", "compute-2", "compute-3", "compute-4"] {
        sim.kill(h).unwrap();
    }
    let o = wait_down(&monitor, "compute-4").await;
    let m = signals(&o);
    assert_eq!(m[&n("compute-1")].consul_failed, Some(true), "all critical");
    assert_eq!(m[&n("compute-2")].consul_failed, Some(false), "one passes");
    assert_eq!(
        m[&n("compute-3")].consul_failed,
        Some(false),
        "a missing check is unknown, which never fails a node"
    );
    assert_eq!(m[&n("compute-4")].consul_failed, Some(true), "mapped name");
    assert_eq!(m[&n("ha-1")].consul_failed, Some(false), "not in consul");
    assert!(m[&n("compute-1")].all_failed());
    assert!(!m[&n("compute-2")].all_failed());
    assert!(!m[&n("compute-3")].all_failed());
    assert_eq!(
        o.problems,
        [Problem::ConsulUnknown {
            node: n("compute-3"),
            consul_node: "compute-3".into(),
            missing: vec!["novaha-compute".into()],
        }],
        "only down nodes are reported; ha-1 is disabled"
    );
    let events = judged(&o);
    assert!(events.contains(&DetectEvent::Failed {
        node: n("compute-1"),
        number_fails: 1
    }));
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, DetectEvent::Failed { node, .. } if node.as_str() == "compute-2" || node.as_str() == "compute-3")),
        "{events:?}"
    );

    // A TTL check on the test agent's own node, flipped through the agent.
    let a = agent.clone();
    tokio::task::spawn_blocking(move || {
        let (s, b) = a.http(
            "PUT",
            "/v1/agent/check/register",
            br#"{"ID": "novaha-compute", "Name": "nova-compute alive", "TTL": "60s"}"#,
        );
        assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    })
    .await
    .unwrap();
    let mut settings = MonitorSettings {
        signals: vec![Signal::Nova, Signal::Consul],
        ..MonitorSettings::default()
    };
    settings.consul.checks = vec!["novaha-compute".into()];
    settings
        .consul
        .node_names
        .insert("compute-2".into(), agent.node_name().to_owned());
    let monitor = Monitor::new(
        settings,
        nova(&sim).await,
        Some(&consul_settings(agent.http_addr())),
    )
    .unwrap();
    let o = monitor.observe().await;
    assert_eq!(
        signals(&o)[&n("compute-2")].consul_failed,
        Some(true),
        "a new TTL check starts critical"
    );
    let a = agent.clone();
    tokio::task::spawn_blocking(move || {
        let (s, _) = a.http("PUT", "/v1/agent/check/pass/novaha-compute", b"");
        assert_eq!(s, 200);
    })
    .await
    .unwrap();
    let o = monitor.observe().await;
    assert_eq!(signals(&o)[&n("compute-2")].consul_failed, Some(false));
}

#[tokio::test]
async fn consul_unreachable_means_no_judgement() {
    let sim = sim(2).await;
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let mut with_token = consul_settings(addr);
    with_token.token = Some(Secret::new("acl-Tok3n-zz9"));
    let monitor = Monitor::new(
        MonitorSettings {
            signals: vec![Signal::Nova, Signal::Consul],
            ..MonitorSettings::default()
        },
        nova(&sim).await,
        Some(&with_token),
    )
    .unwrap();
    let o = monitor.observe().await;
    assert_eq!(o.nova, None);
    assert!(
        matches!(&o.problems[..], [Problem::ConsulUnreachable { error }] if error.contains("health/state/any")),
        "{:?}",
        o.problems
    );
    // The ACL token never shows.
    for text in [
        format!("{o:?}"),
        format!("{monitor:?}"),
        serde_json::to_string(&o).unwrap(),
    ] {
        assert!(!text.contains("acl-Tok3n-zz9"), "{text}");
    }
    // Asked for the consul signal without the agent's settings.
    let err = Monitor::new(
        MonitorSettings {
            signals: vec![Signal::Nova, Signal::Consul],
            ..MonitorSettings::default()
        },
        nova(&sim).await,
        None,
    )
    .unwrap_err();
    assert!(err.to_string().contains("consul"), "{err}");
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn tcp_signal_probes_down_nodes_open_closed_and_unresolved() {
    let sim = sim(4).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut settings = MonitorSettings {
        signals: vec![Signal::Nova, Signal::Tcp],
        ..MonitorSettings::default()
    };
    settings.tcp.port = port;
    settings.tcp.timeout = Duration::from_millis(500);
    settings.tcp.concurrency = 2;
    let addrs = &mut settings.tcp.addresses;
    addrs.insert("compute-1".into(), "127.0.0.1".into()); // listening
    addrs.insert("compute-2".into(), "127.0.0.2".into()); // nothing there
    addrs.insert("compute-3".into(), "no-such-host.invalid".into());
    addrs.insert("compute-4".into(), "127.0.0.1".into()); // alive: not probed
    let monitor = Monitor::new(settings, nova(&sim).await, None).unwrap();
    for h in ["compute-1", "compute-2", "compute-3"] {
        sim.kill(h).unwrap();
    }
    let o = wait_down(&monitor, "compute-3").await;
    let m = signals(&o);
    assert_eq!(m[&n("compute-1")].tcp_failed, Some(false), "port open");
    assert_eq!(m[&n("compute-2")].tcp_failed, Some(true), "port closed");
    assert_eq!(
        m[&n("compute-3")].tcp_failed,
        Some(false),
        "unknown never fails"
    );
    assert_eq!(m[&n("compute-4")].tcp_failed, None, "up: not probed");
    assert_eq!(m[&n("ha-1")].tcp_failed, None, "disabled: not probed");
    assert!(m[&n("compute-2")].all_failed());
    assert!(!m[&n("compute-1")].all_failed());
    assert!(
        matches!(&o.problems[..], [Problem::TcpUnresolved { node, address, .. }]
            if node.as_str() == "compute-3" && address == "no-such-host.invalid"),
        "{:?}",
        o.problems
    );
    let events = judged(&o);
    let failed: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            DetectEvent::Failed { node, .. } => Some(node.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(failed, ["compute-2"]);

    // The listener closes: compute-1's probe now fails too.
    drop(listener);
    let o = monitor.observe().await;
    assert_eq!(signals(&o)[&n("compute-1")].tcp_failed, Some(true));
}

/// A sim whose killed hosts read `down` only after Nova's production
/// `service_down_time` (60 s), heartbeating every second.
async fn slow_down_sim(hosts: usize) -> SimHandle {
    Sim::start(
        "127.0.0.1:0",
        SimConfig {
            hosts,
            instances_per_host: 1,
            service_down_time: Duration::from_secs(60),
            report_interval: Duration::from_secs(1),
            ..SimConfig::default()
        },
    )
    .await
    .expect("sim starts")
}

/// Judges `o` (with its stale nodes) against an empty K/V tree with
/// threshold 0, as the runner does.
fn judged_with_stale(o: &Observation) -> novaha_core::detect::Judgement {
    let schema = Schema::new("t");
    let state = ClusterState::parse(&schema, &Snapshot::default());
    let th = Thresholds {
        threshold: 0,
        max_failed_fraction: 1.0,
        max_failed_nodes: None,
    };
    let stale = o.stale.keys().cloned().collect();
    novaha_core::detect::judge_with(&schema, &state, o.nova.as_ref(), &stale, &th, None)
}

fn failed_nodes(j: &novaha_core::detect::Judgement) -> Vec<String> {
    j.events
        .iter()
        .filter_map(|e| match e {
            DetectEvent::Failed { node, .. } => Some(node.to_string()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_stale_heartbeat_fails_the_nova_signal_long_before_nova_reads_down() {
    let sim = slow_down_sim(3).await;
    let mut settings = MonitorSettings::default();
    settings.nova.stale_after = Some(Duration::from_secs(5));
    let monitor = Monitor::new(settings, nova(&sim).await, None).unwrap();
    // Nova's clock runs an hour ahead of ours: skew fakes nothing, the age
    // is read against the answer's Date.
    sim.advance_clock(Duration::from_secs(1800));
    let o = monitor.observe().await;
    assert!(o.stale.is_empty(), "{:?}", o.stale);
    assert!(o.problems.is_empty(), "{:?}", o.problems);

    sim.kill("compute-1").unwrap();
    sim.advance_clock(Duration::from_secs(4));
    assert!(monitor.observe().await.stale.is_empty(), "4 s: not yet");
    sim.advance_clock(Duration::from_secs(3));
    let o = monitor.observe().await;
    let m = signals(&o);
    assert!(m[&n("compute-1")].nova.up, "Nova still reads it up");
    assert_eq!(
        o.stale.keys().map(NodeName::as_str).collect::<Vec<_>>(),
        ["compute-1"]
    );
    assert!(o.stale[&n("compute-1")] >= Duration::from_secs(6));
    assert_eq!(failed_nodes(&judged_with_stale(&o)), ["compute-1"]);
    // Revived: it heartbeats at once and is fresh again.
    sim.revive("compute-1").unwrap();
    assert!(monitor.observe().await.stale.is_empty());
}

#[tokio::test]
async fn without_stale_after_heartbeat_ages_change_nothing() {
    let sim = slow_down_sim(3).await;
    let unset = Monitor::new(MonitorSettings::default(), nova(&sim).await, None).unwrap();
    let before = unset.observe().await;
    sim.kill("compute-1").unwrap();
    sim.advance_clock(Duration::from_secs(30));
    let after = unset.observe().await;
    assert!(after.stale.is_empty());
    assert!(after.problems.is_empty(), "{:?}", after.problems);
    // Thirty seconds without a heartbeat, yet Nova reads it up: the same
    // signals and the same judgement as before the kill.
    assert_eq!(after.nova, before.nova);
    assert_eq!(judged_with_stale(&after), judged_with_stale(&before));
    assert!(failed_nodes(&judged_with_stale(&after)).is_empty());
    // The same cloud with stale_after set judges it failed.
    let mut settings = MonitorSettings::default();
    settings.nova.stale_after = Some(Duration::from_secs(15));
    let set = Monitor::new(settings, nova(&sim).await, None).unwrap();
    assert_eq!(
        failed_nodes(&judged_with_stale(&set.observe().await)),
        ["compute-1"]
    );
}

#[tokio::test]
async fn a_stale_node_is_probed_and_a_living_host_is_degraded_not_failed() {
    let sim = slow_down_sim(2).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut settings = MonitorSettings {
        signals: vec![Signal::Nova, Signal::Tcp],
        ..MonitorSettings::default()
    };
    settings.nova.stale_after = Some(Duration::from_secs(5));
    settings.tcp.port = port;
    settings.tcp.timeout = Duration::from_millis(500);
    settings
        .tcp
        .addresses
        .insert("compute-1".into(), "127.0.0.1".into()); // sshd answers
    settings
        .tcp
        .addresses
        .insert("compute-2".into(), "127.0.0.2".into()); // nothing there
    let monitor = Monitor::new(settings, nova(&sim).await, None).unwrap();
    sim.kill("compute-1").unwrap();
    sim.kill("compute-2").unwrap();
    sim.advance_clock(Duration::from_secs(10));
    let o = monitor.observe().await;
    let m = signals(&o);
    assert_eq!(o.stale.len(), 2);
    assert_eq!(m[&n("compute-1")].tcp_failed, Some(false), "probed: open");
    assert_eq!(m[&n("compute-2")].tcp_failed, Some(true), "probed: closed");
    assert_eq!(m[&n("ha-1")].tcp_failed, None, "not probed");
    let j = judged_with_stale(&o);
    // nova-compute alone died on compute-1: degraded, never failed.
    assert_eq!(failed_nodes(&j), ["compute-2"]);
    assert!(j.events.iter().any(|e| matches!(e,
        DetectEvent::Degraded { node, readings, .. }
            if node.as_str() == "compute-1" && readings.to_string() == "nova=stale tcp=healthy")));
    drop(listener);
}
