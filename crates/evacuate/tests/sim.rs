//! The `nova` evacuate driver against novaha-sim (in-process, free loopback
//! port): listing every page, evacuating to an HA node and via the
//! scheduler, refusals, failed migrations, SHUTOFF landing at >= 2.95,
//! starting, force-down and the administrator's restore.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use novaha_core::drivers::{EvacuateError, Evacuator, Fenced, Instance, InstanceProgress};
use novaha_core::{NodeName, PowerState, Secret};
use novaha_evacuate::NovaEvacuator;
use novaha_openstack::config::AuthSection;
use novaha_openstack::{Env, Microversion, NovaClient, OpenStackConfig, RetryConfig, Session};
use novaha_sim::{FaultKind, FaultRule, Sim, SimConfig, SimHandle};

async fn start(cfg: SimConfig) -> SimHandle {
    Sim::start("127.0.0.1:0", cfg).await.expect("sim starts")
}

fn config(sim: &SimHandle) -> OpenStackConfig {
    let c = sim.credentials();
    OpenStackConfig {
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
        timeout: Duration::from_secs(10),
        retry: RetryConfig {
            attempts: 3,
            base: Duration::from_millis(10),
            cap: Duration::from_millis(50),
        },
        ..OpenStackConfig::default()
    }
}

async fn evacuator_wanting(sim: &SimHandle, wanted: Microversion) -> NovaEvacuator {
    let cloud = config(sim).resolve(&Env::default()).expect("config");
    let session = Arc::new(Session::new(cloud).expect("session"));
    let nova = NovaClient::connect_wanting(session, wanted)
        .await
        .expect("nova connects");
    NovaEvacuator::new(nova)
}

async fn evacuator(sim: &SimHandle) -> NovaEvacuator {
    evacuator_wanting(sim, Microversion::WANTED).await
}

fn fast() -> SimConfig {
    SimConfig {
        service_down_time: Duration::from_millis(300),
        evacuate_delay: Duration::from_millis(100),
        ..SimConfig::default()
    }
}

fn fenced(node: &str) -> Fenced {
    Fenced::from_observation(
        NodeName::from(node),
        "test",
        PowerState::Off,
        chrono::Utc::now(),
    )
    .expect("off is fenced")
}

/// Kills `node` in the sim, waits until Nova reads it down, then forces it
/// down through the driver (what the recovery does after fencing).
async fn kill_and_force_down(sim: &SimHandle, ev: &NovaEvacuator, node: &str) {
    sim.kill(node).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while sim.service(node).unwrap().1 != "down" {
        assert!(Instant::now() < deadline, "{node} never read down");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (svc, _) = sim.service(node).unwrap();
    ev.force_down(
        &NodeName::from(node),
        &svc.uuid.to_string(),
        "novaha: epoch e1",
    )
    .await
    .unwrap();
}

async fn wait_settled(ev: &NovaEvacuator, id: &str) -> InstanceProgress {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let p = ev.progress(id).await.unwrap();
        if p != InstanceProgress::InFlight {
            return p;
        }
        assert!(Instant::now() < deadline, "{id} still in flight");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn lists_2500_instances_of_one_host_across_every_page() {
    let sim = start(SimConfig {
        hosts: 2,
        instances_per_host: 2500,
        ..SimConfig::default()
    })
    .await;
    let ev = evacuator(&sim).await;
    let list = ev.instances_on(&NodeName::from("compute-1")).await.unwrap();
    assert_eq!(list.len(), 2500);
    let ids: HashSet<&str> = list.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids.len(), 2500, "no instance listed twice");
    let expected: HashSet<String> = sim
        .servers_on("compute-1")
        .iter()
        .map(|s| s.id.to_string())
        .collect();
    assert_eq!(
        ids,
        expected.iter().map(String::as_str).collect::<HashSet<_>>()
    );
    assert!(list.iter().all(|i| i.host == "compute-1"));
    assert!(
        list.iter()
            .all(|i| !i.user_id.is_empty() && !i.project_id.is_empty())
    );
    assert!(
        ev.instances_on(&NodeName::from("nope"))
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn evacuates_to_the_ha_node_lands_shutoff_at_2_95_and_starts() {
    let sim = start(fast()).await;
    let ev = evacuator(&sim).await;
    assert!(ev.lands_shutoff(), "sim negotiates 2.95");
    kill_and_force_down(&sim, &ev, "compute-1").await;
    let ha = NodeName::from("ha-1");
    let (ha_svc, _) = sim.service("ha-1").unwrap();
    assert!(ha_svc.disabled);
    ev.prepare_target(&ha, &ha_svc.uuid.to_string())
        .await
        .unwrap();
    assert!(!sim.service("ha-1").unwrap().0.disabled, "ha-1 enabled");

    let node = NodeName::from("compute-1");
    let instances = ev.instances_on(&node).await.unwrap();
    assert_eq!(instances.len(), 4);
    let proof = fenced("compute-1");
    // Safe to run concurrently: all four at once.
    let sent =
        futures::future::join_all(instances.iter().map(|i| ev.evacuate(&proof, i, Some(&ha))))
            .await;
    assert!(sent.iter().all(Result::is_ok), "{sent:?}");
    for i in &instances {
        let p = wait_settled(&ev, &i.id).await;
        assert_eq!(
            p,
            InstanceProgress::Landed {
                host: "ha-1".into(),
                status: "SHUTOFF".into()
            }
        );
    }
    assert!(sim.servers_on("compute-1").is_empty());

    // Restore the prior power state; a second start is idempotent.
    for i in &instances {
        ev.start(&i.id).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for i in &instances {
        loop {
            if let InstanceProgress::Landed { status, .. } = ev.progress(&i.id).await.unwrap()
                && status == "ACTIVE"
            {
                break;
            }
            assert!(Instant::now() < deadline, "{} never started", i.id);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    ev.start(&instances[0].id)
        .await
        .expect("already active is ok");

    // The calls Nova saw: force-down with the epoch reason, then evacuations.
    let calls = sim.calls();
    let force = calls
        .iter()
        .find(|c| c.method == "PUT" && c.body["forced_down"] == true)
        .expect("a force-down call");
    assert_eq!(force.body["disabled_reason"], "novaha: epoch e1");
    let evacuations: Vec<_> = calls
        .iter()
        .filter(|c| c.body.get("evacuate").is_some())
        .collect();
    assert_eq!(evacuations.len(), 4, "one evacuate per instance");
    assert!(
        evacuations
            .iter()
            .all(|c| c.body["evacuate"]["host"] == "ha-1")
    );

    // The administrator's reset, Nova half.
    sim.revive("compute-1").unwrap();
    let (svc, _) = sim.service("compute-1").unwrap();
    assert!(svc.forced_down && svc.disabled);
    ev.restore_service(&node, &svc.uuid.to_string())
        .await
        .unwrap();
    let (svc, state) = sim.service("compute-1").unwrap();
    assert!(!svc.forced_down && !svc.disabled, "{svc:?}");
    assert_eq!(state, "up");
}

#[tokio::test]
async fn before_2_95_an_evacuated_server_lands_active_via_the_scheduler() {
    let sim = start(fast()).await;
    let ev = evacuator_wanting(&sim, Microversion(2, 94)).await;
    assert!(!ev.lands_shutoff());
    kill_and_force_down(&sim, &ev, "compute-2").await;
    let inst = ev
        .instances_on(&NodeName::from("compute-2"))
        .await
        .unwrap()
        .remove(0);
    ev.evacuate(&fenced("compute-2"), &inst, None)
        .await
        .unwrap();
    match wait_settled(&ev, &inst.id).await {
        InstanceProgress::Landed { host, status } => {
            assert_ne!(host, "compute-2");
            assert!(
                host.starts_with("compute-"),
                "scheduler picks an enabled host: {host}"
            );
            assert_eq!(status, "ACTIVE");
        }
        other => panic!("{other:?}"),
    }
    let call = sim
        .calls()
        .into_iter()
        .find(|c| c.body.get("evacuate").is_some())
        .unwrap();
    assert!(call.body["evacuate"].get("host").is_none(), "{call:?}");
}

#[tokio::test]
async fn a_source_that_is_up_gets_409_as_a_refusal() {
    let sim = start(fast()).await;
    let ev = evacuator(&sim).await;
    let inst = ev
        .instances_on(&NodeName::from("compute-1"))
        .await
        .unwrap()
        .remove(0);
    let err = ev
        .evacuate(&fenced("compute-1"), &inst, Some(&NodeName::from("ha-1")))
        .await
        .unwrap_err();
    assert!(matches!(err, EvacuateError::Refused(_)), "{err:?}");
    assert!(!err.is_retryable());
    let msg = err.to_string();
    assert!(msg.contains("HTTP 409"), "{msg}");
    assert!(msg.contains("nova evacuate"), "{msg}");
    assert_eq!(
        sim.server(&inst.id.parse().unwrap()).unwrap().host,
        "compute-1",
        "nothing moved"
    );
}

#[tokio::test]
async fn fence_evidence_of_another_node_is_refused_before_any_call() {
    let sim = start(fast()).await;
    let ev = evacuator(&sim).await;
    let inst = ev
        .instances_on(&NodeName::from("compute-1"))
        .await
        .unwrap()
        .remove(0);
    sim.clear_calls();
    let err = ev
        .evacuate(&fenced("compute-3"), &inst, None)
        .await
        .unwrap_err();
    assert!(matches!(err, EvacuateError::Refused(_)), "{err:?}");
    assert!(err.to_string().contains("compute-3"), "{err}");
    assert!(sim.calls().is_empty(), "no call reached nova");
}

#[tokio::test]
async fn a_failed_migration_and_a_vanished_server_are_failed() {
    let sim = start(fast()).await;
    let ev = evacuator(&sim).await;
    kill_and_force_down(&sim, &ev, "compute-1").await;
    let ha = NodeName::from("ha-1");
    let (ha_svc, _) = sim.service("ha-1").unwrap();
    ev.prepare_target(&ha, &ha_svc.uuid.to_string())
        .await
        .unwrap();
    let inst = ev
        .instances_on(&NodeName::from("compute-1"))
        .await
        .unwrap()
        .remove(0);
    sim.fail_next_evacuations(1);
    ev.evacuate(&fenced("compute-1"), &inst, Some(&ha))
        .await
        .unwrap();
    match wait_settled(&ev, &inst.id).await {
        InstanceProgress::Failed { reason } => {
            assert!(reason.contains("evacuation migration"), "{reason}");
            assert!(reason.contains("error"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    let gone = uuid::Uuid::new_v4().to_string();
    assert!(matches!(
        ev.progress(&gone).await.unwrap(),
        InstanceProgress::Failed { reason } if reason.contains("no longer exists")
    ));
}

#[tokio::test]
async fn a_500_on_evacuate_is_retryable_and_sent_once() {
    let sim = start(fast()).await;
    let ev = evacuator(&sim).await;
    kill_and_force_down(&sim, &ev, "compute-1").await;
    let inst: Instance = ev
        .instances_on(&NodeName::from("compute-1"))
        .await
        .unwrap()
        .remove(0);
    sim.clear_calls();
    sim.add_fault(
        FaultRule::new("/action", FaultKind::Status { status: 500 })
            .method("POST")
            .times(1),
    );
    let err = ev
        .evacuate(&fenced("compute-1"), &inst, None)
        .await
        .unwrap_err();
    assert!(matches!(err, EvacuateError::Unavailable(_)), "{err:?}");
    assert!(err.is_retryable());
    assert_eq!(sim.calls().len(), 1, "never re-sent by the driver");
    // Nova and Keystone are down: reads fail retryably too.
    sim.add_fault(FaultRule::new(
        "/compute/",
        FaultKind::Status { status: 503 },
    ));
    let err = ev.progress(&inst.id).await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    let err = ev
        .instances_on(&NodeName::from("compute-1"))
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
}

#[tokio::test]
async fn an_older_cloud_is_addressed_by_host_and_binary() {
    // Before 2.53 service ids are integers and force-down/enable go by host.
    let sim = start(fast()).await;
    let ev = evacuator_wanting(&sim, Microversion(2, 40)).await;
    let node = NodeName::from("compute-1");
    sim.kill("compute-1").unwrap();
    let (svc, _) = sim.service("compute-1").unwrap();
    let old_id = svc.id.to_string();
    ev.force_down(&node, &old_id, "novaha: epoch e7")
        .await
        .unwrap();
    let (svc, _) = sim.service("compute-1").unwrap();
    assert!(svc.forced_down && svc.disabled, "{svc:?}");
    assert_eq!(svc.disabled_reason.as_deref(), Some("novaha: epoch e7"));
    let paths: Vec<String> = sim.calls().into_iter().map(|c| c.path).collect();
    assert!(
        paths.iter().any(|p| p.ends_with("/os-services/force-down")),
        "{paths:?}"
    );

    let (ha, _) = sim.service("ha-1").unwrap();
    ev.prepare_target(&NodeName::from("ha-1"), &ha.id.to_string())
        .await
        .unwrap();
    assert!(!sim.service("ha-1").unwrap().0.disabled);

    sim.revive("compute-1").unwrap();
    ev.restore_service(&node, &old_id).await.unwrap();
    let (svc, state) = sim.service("compute-1").unwrap();
    assert!(!svc.forced_down && !svc.disabled, "{svc:?}");
    assert_eq!(state, "up");
}
