//! Scenario scripts: events -> expected decisions, toydb style.
//!
//! The language (interpreted by `model::run_script`), one command per line:
//! `> PREFIX` decides for the current node, commits the ops and checks that
//! the action's text starts with PREFIX; `>!` expects the commit to
//! conflict. Events feed the next decision: `fenced`, `power-unknown`,
//! `fail STEP [fatal]`, `forced-down`, `ha-enabled`, `instance ID STATUS
//! [on=HOST] [opt-out]` (the model Nova), `list` (a listing result),
//! `landed ID HOST STATUS`, `inflight ID`, `nova-failed ID REASON`,
//! `evacuate-fails ID [fatal]`, `start-fails ID`, `notified`, `carry` (the
//! runner carries out the last decision), `advance SECS` (or `MSms`), `epoch E` (a new
//! leader), `drop-results`, `mass-failure on|off`, `target POLICY`,
//! `concurrency N`, `restore-power`, `dry-run on|off`, `kv KEY VALUE` (an
//! operator's write; KEY relative to the node, or `/`-absolute below the
//! prefix), `node NAME`, `nova up|down` (the node's heartbeat as Nova
//! reports it), `detect` (one detection cycle at the harness clock, its
//! writes committed), `threshold N`, `reset-grace SECS`. Checks: `expect-kv KEY VALUE|absent`,
//! `expect-instance ID STATE [TARGET]`, `expect-phase PHASE|none`,
//! `expect-calls ID N`.

use super::model::{Harness, run_script};
use crate::types::NodeName;

fn run(failed: &[&str], ha: &[&str], script: &str) -> Harness {
    let mut h = Harness::new(failed, ha);
    run_script(&mut h, script);
    h
}

#[test]
fn happy_path_with_opt_out_and_an_instance_already_elsewhere() {
    let h = run(
        &["c1"],
        &["ha-1"],
        "
        instance i1 ACTIVE
        instance i2 SHUTOFF
        instance i3 ACTIVE opt-out
        instance i4 ACTIVE on=c9
        > claim ha-1
        expect-kv status/recovered True
        expect-kv status/failed True
        expect-kv /ha_nodes/ha-1/status/in_use True
        expect-kv /ha_nodes/ha-1/status/serving c1
        expect-phase claimed
        > fence
        fenced
        > force-down svc-c1 (novaha: fenced, incident c1-20261121T030000Z epoch e1)
        expect-phase fenced
        forced-down
        > list-instances
        list
        > prepare-target ha-1 svc-ha-1
        expect-instance i1 pending
        expect-instance i3 skipped
        expect-instance i4 done c9
        ha-enabled
        > check-power
        power off
        > evacuate i1,i2 -> ha-1
        expect-instance i1 requested ha-1
        expect-instance i2 requested ha-1
        carry
        expect-calls i1 1
        > poll i1,i2 after 500ms
        landed i1 ha-1 ACTIVE
        inflight i2
        > poll i2 after 500ms
        expect-instance i1 done ha-1
        landed i2 ha-1 SHUTOFF
        > notify c1-20261121T030000Z
        expect-phase evacuated
        notified
        > finish c1-20261121T030000Z
        expect-phase done
        > idle
        > idle
        expect-kv status/failed True
        expect-kv status/recovered True
        expect-kv /ha_nodes/ha-1/status/in_use True
        expect-calls i1 1
        expect-calls i2 1
        expect-calls i3 0
        expect-calls i4 0
        ",
    );
    let incident =
        h.kv.get("t/compute_nodes/c1/incidents/c1-20261121T030000Z")
            .expect("incident copy written");
    let rec: crate::record::RecoveryRecord = serde_json::from_str(&incident).expect("record");
    assert_eq!(rec.phase, crate::record::Phase::Done);
    assert!(rec.instances.values().all(|i| i.state.is_final()));
    assert!(rec.timeline.contains_key("fenced"));
}

#[test]
fn fence_failure_backs_off_alerts_and_never_evacuates_until_verified() {
    run(
        &["c1"],
        &["ha-1"],
        "
        instance i1 ACTIVE
        > claim ha-1
        > fence
        fail fence
        > wait backoff fence 5s alert
        > wait backoff fence 5s
        advance 5
        > fence
        power-unknown
        > wait backoff fence 10s alert
        advance 10
        > fence
        fail fence fatal
        > wait backoff fence 20s alert
        advance 20
        > fence
        fenced
        > force-down svc-c1
        expect-phase fenced
        ",
    );
}

#[test]
fn resume_mid_evacuation_polls_requested_instances_and_never_resends() {
    run(
        &["c1"],
        &["ha-1"],
        "
        concurrency 2
        instance i1 ACTIVE
        instance i2 ACTIVE
        instance i3 ACTIVE
        > claim ha-1
        fenced
        > force-down
        forced-down
        > list-instances
        list
        ha-enabled
        > check-power
        power off
        > evacuate i1,i2 -> ha-1
        # the leader dies after the record landed; i1 was sent, i2 maybe not
        epoch e2
        drop-results
        > poll i1,i2,i3 after 0ns
        landed i1 ha-1 ACTIVE
        inflight i2
        > poll i2,i3 after 0ns
        expect-instance i1 done ha-1
        expect-instance i2 requested
        # still resyncing: i3 was not read yet
        inflight i2
        landed i3 c1 ACTIVE
        > check-power
        power off
        > evacuate i3 -> ha-1
        expect-instance i1 done ha-1
        expect-instance i2 requested
        expect-instance i3 requested
        landed i2 ha-1 ACTIVE
        landed i3 ha-1 ACTIVE
        > notify
        ",
    );
}

#[test]
fn resume_before_force_down_stamps_the_new_epoch() {
    run(
        &["c1"],
        &["ha-1"],
        "
        > claim ha-1
        fenced
        > force-down svc-c1 (novaha: fenced, incident c1-20261121T030000Z epoch e1)
        epoch e2
        > force-down svc-c1 (novaha: fenced, incident c1-20261121T030000Z epoch e2)
        ",
    );
}

#[test]
fn an_instance_moved_by_hand_during_a_leader_gap_is_done_and_never_evacuated() {
    run(
        &["c1"],
        &["ha-1"],
        "
        concurrency 1
        instance i1 ACTIVE
        instance i2 ACTIVE
        > claim ha-1
        fenced
        > force-down
        forced-down
        > list-instances
        list
        ha-enabled
        > check-power
        power off
        > evacuate i1 -> ha-1
        epoch e2
        > poll i1,i2 after 0ns
        landed i1 ha-1 ACTIVE
        landed i2 c5 ACTIVE
        > notify
        expect-instance i2 done c5
        ",
    );
}

#[test]
fn two_failed_nodes_one_ha_node_wait_under_ha_node_policy() {
    run(
        &["c1", "c2"],
        &["ha-1"],
        "
        node c1
        > claim ha-1
        node c2
        > wait no-free-ha-node 5s alert
        expect-phase none
        expect-kv status/recovered False
        ",
    );
}

#[test]
fn two_failed_nodes_racing_for_one_ha_node_only_one_claim_lands() {
    let mut h = Harness::new(&["c1", "c2"], &["ha-1"]);
    h.policy.target = super::TargetPolicy::HaNodeThenScheduler;
    let (c1, c2) = (NodeName::from("c1"), NodeName::from("c2"));
    // Both decide from the same read, as two tasks of one leader would.
    let (r1, o1) = h.observe(&c1);
    let (r2, o2) = h.observe(&c2);
    let d1 = super::decide(&h.policy, r1.as_ref(), &o1, h.now);
    let d2 = super::decide(&h.policy, r2.as_ref(), &o2, h.now);
    assert_eq!(d1.action.to_string(), "claim ha-1");
    assert_eq!(d2.action.to_string(), "claim ha-1");
    h.kv.commit(&d1.ops).expect("first claim lands");
    assert!(h.kv.commit(&d2.ops).is_err(), "second claim must conflict");
    // Nothing of the losing claim landed, not even its latch.
    assert_eq!(
        h.kv.get("t/compute_nodes/c2/status/recovered").as_deref(),
        Some("False")
    );
    // Re-read: the loser follows the policy (the scheduler).
    let (d, committed) = h.decide(&c2);
    assert_eq!(d.action.to_string(), "claim scheduler");
    committed.expect("scheduler claim lands");
    assert_eq!(
        h.kv.get("t/ha_nodes/ha-1/status/serving").as_deref(),
        Some("c1")
    );
}

#[test]
fn scheduler_policy_claims_no_ha_node_and_evacuates_without_target() {
    run(
        &["c1"],
        &["ha-1"],
        "
        target scheduler
        instance i1 ACTIVE
        > claim scheduler
        expect-kv /ha_nodes/ha-1/status/in_use False
        fenced
        > force-down
        forced-down
        > list-instances
        list
        > check-power
        power off
        > evacuate i1 -> scheduler
        landed i1 c7 ACTIVE
        > notify
        expect-instance i1 done c7
        ",
    );
}

#[test]
fn restore_power_state_after_2_95_starts_active_instances_once() {
    run(
        &["c1"],
        &["ha-1"],
        "
        restore-power
        instance i1 ACTIVE
        instance i2 SHUTOFF
        instance i3 ACTIVE
        > claim ha-1
        fenced
        > force-down
        forced-down
        > list-instances
        list
        ha-enabled
        > check-power
        power off
        > evacuate i1,i2,i3 -> ha-1
        landed i1 ha-1 SHUTOFF
        landed i2 ha-1 SHUTOFF
        landed i3 ha-1 SHUTOFF
        > start i1,i3
        expect-instance i1 requested
        expect-instance i2 done ha-1
        landed i1 ha-1 SHUTOFF
        start-fails i3
        > poll i1 after 500ms
        expect-instance i3 error
        landed i1 ha-1 ACTIVE
        > notify
        expect-instance i1 done ha-1
        ",
    );
}

#[test]
fn error_and_timeout_paths_end_every_instance_final() {
    run(
        &["c1"],
        &["ha-1"],
        "
        instance i1 ACTIVE
        instance i2 ACTIVE
        instance i3 ACTIVE
        instance i4 ACTIVE
        > claim ha-1
        fenced
        > force-down
        fail force-down
        > wait backoff force-down 5s
        advance 5
        > force-down
        forced-down
        > list-instances
        fail list-instances
        > wait backoff list-instances 5s
        advance 5
        > list-instances
        list
        ha-enabled
        > check-power
        power off
        > evacuate i1,i2,i3,i4 -> ha-1
        evacuate-fails i1 fatal
        evacuate-fails i2
        nova-failed i3 No valid host was found
        > poll i2,i4 after 500ms
        expect-instance i1 error
        expect-instance i3 error
        advance 599
        > poll i2,i4
        advance 1
        inflight i2
        inflight i4
        > notify
        expect-instance i2 error
        expect-instance i4 error
        fail notify
        > wait backoff notify 5s
        advance 5
        > notify
        notified
        > finish
        expect-calls i2 0
        ",
    );
}

#[test]
fn a_step_failing_for_good_ends_stuck() {
    run(
        &["c1"],
        &["ha-1"],
        "
        > claim ha-1
        fenced
        > force-down
        fail force-down fatal
        > wait backoff force-down 5s alert
        advance 600
        fail force-down fatal
        > wait
        advance 600
        fail force-down fatal
        > wait
        advance 600
        fail force-down fatal
        > wait
        advance 600
        fail force-down fatal
        > stuck: force-down failed 5 times
        expect-phase stuck
        > stuck
        ",
    );
}

#[test]
fn admin_reset_after_done_restores_the_service_and_releases_the_ha_node() {
    run(
        &["c1"],
        &["ha-1"],
        "
        > claim ha-1
        fenced
        > force-down
        forced-down
        > list-instances
        list
        > notify
        notified
        > finish
        > idle
        # a partial reset changes nothing
        kv status/failed False
        > idle
        kv status/recovered False
        > restore-service svc-c1 unforce=true enable=true
        fail restore-service
        > wait backoff restore-service 5s
        advance 5
        > restore-service svc-c1
        carry
        > reset c1-20261121T030000Z release ha-1
        expect-kv internal/number_fails 0
        expect-kv internal/awaiting_up True
        expect-kv internal/recovery absent
        expect-kv /ha_nodes/ha-1/status/in_use False
        expect-kv /ha_nodes/ha-1/status/serving absent
        expect-kv status/failed False
        expect-kv status/recovered False
        > idle
        ",
    );
}

/// The bug the real-OpenStack tests found: right after the reset, the
/// restarted nova-compute has not sent a heartbeat yet and Nova reads it
/// down. Detection must not count that (threshold 1 here, as in the test
/// that found it), or the repaired node is claimed, fenced and evacuated
/// again seconds after the reset.
#[test]
fn a_reset_node_reading_down_is_not_counted_until_nova_reports_it_up() {
    run(
        &["c1"],
        &["ha-1"],
        "
        > claim ha-1
        fenced
        > force-down
        forced-down
        > list-instances
        list
        > notify
        notified
        > finish
        kv status/failed False
        kv status/recovered False
        # flags reset, the runner has not applied it: not judged
        detect
        expect-kv internal/number_fails 4
        > restore-service svc-c1 unforce=true enable=true
        carry
        # enabled, not forced down, no heartbeat yet: still the pending reset
        detect
        expect-kv internal/number_fails 4
        > reset c1-20261121T030000Z release ha-1
        expect-kv internal/awaiting_up True
        detect
        expect-kv internal/number_fails 0
        expect-kv internal/awaiting_up_since 2026-11-21T03:00:00Z
        advance 60
        detect
        advance 60
        detect
        detect
        expect-kv status/failed False
        expect-kv internal/number_fails 0
        > idle
        # the first heartbeat: the wait ends, counting resumes
        nova up
        detect
        expect-kv internal/awaiting_up False
        expect-kv internal/awaiting_up_since absent
        nova down
        detect
        expect-kv internal/number_fails 1
        expect-kv status/failed False
        detect
        expect-kv internal/number_fails 2
        expect-kv status/failed True
        > claim ha-1
        expect-kv status/recovered True
        ",
    );
}

/// An operator who reset a node that is still dead gets it recovered once
/// the reset grace has run out.
#[test]
fn a_reset_node_that_never_comes_up_is_recovered_after_the_grace() {
    run(
        &["c1"],
        &["ha-1"],
        "
        reset-grace 600
        > claim ha-1
        fenced
        > force-down
        forced-down
        > list-instances
        list
        > notify
        notified
        > finish
        kv status/failed False
        kv status/recovered False
        > restore-service svc-c1
        carry
        > reset c1-20261121T030000Z release ha-1
        detect
        expect-kv internal/awaiting_up_since 2026-11-21T03:00:00Z
        advance 599
        detect
        detect
        expect-kv internal/number_fails 0
        expect-kv status/failed False
        advance 1
        detect
        expect-kv internal/awaiting_up False
        expect-kv internal/number_fails 1
        detect
        expect-kv status/failed True
        > claim ha-1
        ",
    );
}

#[test]
fn admin_reset_mid_recovery_keeps_the_record_as_an_incident() {
    let h = run(
        &["c1"],
        &["ha-1"],
        "
        > claim ha-1
        > fence
        kv status/failed False
        kv status/recovered False
        # never forced down: nothing to restore in Nova
        > reset c1-20261121T030000Z release ha-1
        expect-kv internal/recovery absent
        ",
    );
    let copy =
        h.kv.get("t/compute_nodes/c1/incidents/c1-20261121T030000Z")
            .expect("incident copy");
    assert!(copy.contains("\"reset\""), "{copy}");
}

#[test]
fn mass_failure_claims_nothing_and_holds_back_a_claimed_fence() {
    run(
        &["c1", "c2"],
        &["ha-1", "ha-2"],
        "
        mass-failure on
        node c1
        > wait mass-failure 5s alert
        expect-kv status/recovered False
        mass-failure off
        > claim ha-1
        mass-failure on
        > wait mass-failure
        mass-failure off
        > fence
        ",
    );
}

#[test]
fn dry_run_writes_nothing_and_says_what_it_would_do() {
    run(
        &["c1"],
        &["ha-1"],
        "
        dry-run on
        > dry-run: claim ha-1
        expect-kv status/recovered False
        expect-kv /ha_nodes/ha-1/status/in_use False
        expect-phase none
        ",
    );
}

#[test]
fn an_invalid_flag_stops_every_decision_and_is_never_overwritten() {
    run(
        &["c1"],
        &["ha-1"],
        "
        kv status/recovered maybe
        > wait invalid-state 5s alert
        expect-kv status/recovered maybe
        expect-phase none
        ",
    );
}

#[test]
fn an_invalid_ha_node_is_never_claimed() {
    run(
        &["c1"],
        &["ha-1", "ha-2"],
        "
        kv /ha_nodes/ha-1/status/in_use garbage
        > claim ha-2
        expect-kv /ha_nodes/ha-1/status/in_use garbage
        ",
    );
}

#[test]
fn nothing_to_do_for_a_healthy_node_or_a_latch_set_by_someone_else() {
    run(
        &["c1"],
        &["ha-1"],
        "
        kv status/failed False
        > idle
        kv status/failed True
        kv status/recovered True
        > idle
        expect-phase none
        ",
    );
}

// The safety defects found by reading the code paths end to end (and by
// the fault simulator): each script failed on the code before its fix.

/// The preamble every defect script starts from: c1 claimed with ha-1,
/// fenced, forced down, listed, the spare enabled.
const TO_EVACUATING: &str = "
        > claim ha-1
        fenced
        > force-down
        forced-down
        > list-instances
        list
        ha-enabled
";

fn run_from_evacuating(failed: &[&str], ha: &[&str], setup: &str, script: &str) -> Harness {
    run(failed, ha, &format!("{setup}\n{TO_EVACUATING}\n{script}"))
}

#[test]
fn a_server_without_a_host_is_never_done() {
    // A down cell (microversion 2.69+ minimal record) or a policy hiding
    // OS-EXT-SRV-ATTR:host: the server is unknown, never "landed elsewhere".
    run_from_evacuating(
        &["c1"],
        &["ha-1"],
        "instance i1 ACTIVE
        instance i2 UNKNOWN on=-",
        "
        > check-power
        expect-instance i2 pending
        power off
        > evacuate i1,i2 -> ha-1
        landed i1 - UNKNOWN
        landed i2 - UNKNOWN
        > poll i1,i2 after 500ms
        expect-instance i1 requested
        expect-instance i2 requested
        landed i1 ha-1 ACTIVE
        landed i2 ha-1 ACTIVE
        > notify
        expect-instance i1 done ha-1
        ",
    );
}

#[test]
fn a_fenced_node_powered_back_on_is_fenced_again_before_the_next_batch() {
    run_from_evacuating(
        &["c1"],
        &["ha-1"],
        "concurrency 1
        instance i1 ACTIVE
        instance i2 ACTIVE",
        "
        > check-power
        power off
        > evacuate i1 -> ha-1
        carry
        landed i1 ha-1 ACTIVE
        # the BMC's power-restore policy turns the node back on
        powered on
        > check-power
        carry
        > wait fence-lost 0ns alert
        expect-phase claimed
        expect-instance i1 done ha-1
        expect-instance i2 pending
        expect-calls i2 0
        > fence
        fenced
        > list-instances
        list
        > check-power
        power off
        > evacuate i2 -> ha-1
        expect-calls i1 1
        ",
    );
}

#[test]
fn an_admin_reset_mid_evacuation_tracks_what_is_in_flight_first() {
    let h = run_from_evacuating(
        &["c1"],
        &["ha-1"],
        "concurrency 1
        instance i1 ACTIVE
        instance i2 ACTIVE",
        "
        > check-power
        power off
        > evacuate i1 -> ha-1
        # the operator resets the node while i1 is landing
        kv status/failed False
        kv status/recovered False
        > poll i1 after 5s
        expect-instance i1 requested
        expect-instance i2 skipped
        expect-kv /ha_nodes/ha-1/status/in_use True
        inflight i1
        > poll i1 after 5s
        landed i1 ha-1 ACTIVE
        > restore-service svc-c1 unforce=true enable=true
        carry
        > reset c1-20261121T030000Z release ha-1
        expect-kv /ha_nodes/ha-1/status/in_use False
        expect-phase none
        ",
    );
    let copy =
        h.kv.get("t/compute_nodes/c1/incidents/c1-20261121T030000Z")
            .expect("the incident is archived");
    let rec: crate::record::RecoveryRecord = serde_json::from_str(&copy).expect("record");
    assert_eq!(
        rec.instances["i1"].state,
        crate::record::InstanceState::Done
    );
    assert_eq!(
        rec.instances["i2"].state,
        crate::record::InstanceState::Skipped
    );
}

#[test]
fn maintenance_and_pause_stop_claim_fence_force_down_and_evacuation() {
    run(
        &["c1"],
        &["ha-1"],
        "
        instance i1 ACTIVE
        kv config/maintenance True
        > wait maintenance
        expect-kv status/recovered False
        kv config/maintenance False
        pause on
        > wait paused
        pause off
        > claim ha-1
        kv config/maintenance True
        > wait maintenance
        kv config/maintenance False
        > fence
        fenced
        pause on
        > wait paused
        pause off
        > force-down
        forced-down
        > list-instances
        list
        ha-enabled
        pause on
        > wait paused
        expect-calls i1 0
        ",
    );
}

#[test]
fn only_a_spare_nova_reports_up_is_claimed() {
    run(
        &["c1"],
        &["ha-1", "ha-2"],
        "
        ha ha-1 down
        > claim ha-2
        expect-kv /ha_nodes/ha-1/status/in_use False
        ",
    );
    run(
        &["c1"],
        &["ha-1"],
        "
        ha ha-1 unknown
        > wait no-free-ha-node 5s alert
        ",
    );
}

#[test]
fn a_spare_that_dies_mid_recovery_takes_nothing_more() {
    run_from_evacuating(
        &["c1"],
        &["ha-1", "ha-2"],
        "concurrency 1
        instance i1 ACTIVE
        instance i2 ACTIVE",
        "
        > check-power
        power off
        > evacuate i1 -> ha-1
        landed i1 ha-1 ACTIVE
        ha ha-1 down
        > retarget ha-1 -> ha-2
        expect-kv /ha_nodes/ha-2/status/in_use True
        expect-kv /ha_nodes/ha-2/status/serving c1
        expect-kv /ha_nodes/ha-1/status/in_use True
        > check-power
        power off
        > evacuate i2 -> ha-2
        landed i2 ha-2 ACTIVE
        > notify
        notified
        > finish
        kv status/failed False
        kv status/recovered False
        forced-down
        ha ha-1 up
        > restore-service
        carry
        > reset c1-20261121T030000Z release ha-2 release ha-1
        expect-kv /ha_nodes/ha-1/status/in_use False
        expect-kv /ha_nodes/ha-2/status/in_use False
        ",
    );
    // Forced down by novaha itself (the spare failed and was recovered):
    // never enabled again by the prepare step.
    run_from_evacuating(
        &["c1"],
        &["ha-1"],
        "target ha_node_then_scheduler
        instance i1 ACTIVE",
        "
        ha ha-1 forced-down
        > retarget ha-1 -> scheduler
        > check-power
        power off
        > evacuate i1 -> scheduler
        ",
    );
}

#[test]
fn an_evacuation_whose_call_never_took_effect_is_sent_again_never_errored() {
    // The commit of `requested` timed out but landed: the runner did not
    // act, so no evacuate call was made.
    run_from_evacuating(
        &["c1"],
        &["ha-1"],
        "instance i1 ACTIVE",
        "
        > check-power
        power off
        > evacuate i1 -> ha-1
        drop-results
        > poll i1 after 500ms
        landed i1 c1 ACTIVE
        advance 30
        > check-power
        expect-instance i1 pending
        power off
        > evacuate i1 -> ha-1
        carry
        expect-calls i1 1
        landed i1 ha-1 ACTIVE
        > notify
        ",
    );
    // The same for a start whose call never took effect.
    run_from_evacuating(
        &["c1"],
        &["ha-1"],
        "restore-power
        instance i1 ACTIVE",
        "
        > check-power
        power off
        > evacuate i1 -> ha-1
        landed i1 ha-1 SHUTOFF
        > start i1
        drop-results
        > poll i1 after 500ms
        landed i1 ha-1 SHUTOFF
        advance 30
        > start i1
        landed i1 ha-1 ACTIVE
        > notify
        expect-instance i1 done ha-1
        ",
    );
}

#[test]
fn a_fresh_leader_that_has_not_judged_claims_and_fences_nothing() {
    run(
        &["c1"],
        &["ha-1"],
        "
        not-judged
        > wait not-judged
        judged
        > claim ha-1
        epoch e2
        not-judged
        > wait not-judged
        ",
    );
}

#[test]
fn instances_in_flight_are_tracked_while_the_target_is_blocked() {
    run_from_evacuating(
        &["c1"],
        &["ha-1"],
        "concurrency 1
        instance i1 ACTIVE
        instance i2 ACTIVE",
        "
        > check-power
        power off
        > evacuate i1 -> ha-1
        ha ha-1 unknown
        > poll i1 after 500ms
        advance 601
        landed i1 ha-1 ACTIVE
        > wait no-free-ha-node 5s alert
        expect-instance i1 done ha-1
        ",
    );
}

#[test]
fn an_unreadable_instance_does_not_stall_a_resumed_recovery() {
    run_from_evacuating(
        &["c1"],
        &["ha-1"],
        "instance i1 ACTIVE
        instance i2 ACTIVE",
        "
        > check-power
        power off
        > evacuate i1,i2 -> ha-1
        epoch e2
        > poll i1,i2 after 0ns
        landed i1 ha-1 ACTIVE
        progress-fails i2
        > poll i2 after 500ms
        expect-instance i1 done ha-1
        expect-instance i2 requested
        ",
    );
}

#[test]
fn clock_skew_between_controllers_neither_stalls_nor_errors_early() {
    // A leader whose clock ran an hour ahead wrote the fence backoff.
    run(
        &["c1"],
        &["ha-1"],
        "
        > claim ha-1
        advance 3600
        fail fence
        > wait backoff fence 5s
        advance -3600
        epoch e2
        > fence
        ",
    );
    // A new leader whose clock runs 700 s ahead does not time i1 out.
    run_from_evacuating(
        &["c1"],
        &["ha-1"],
        "instance i1 ACTIVE",
        "
        > check-power
        power off
        > evacuate i1 -> ha-1
        epoch e2
        advance 700
        > poll i1 after 0ns
        inflight i1
        > poll i1 after 500ms
        expect-instance i1 requested
        ",
    );
}

#[test]
fn a_node_that_reads_healthy_again_is_neither_claimed_nor_fenced() {
    // Judged failed during a partition (or while paused), healthy again when
    // the recovery would start: fencing it would kill instances that run.
    run(
        &["c1"],
        &["ha-1"],
        "
        healthy on
        > wait node-healthy 5s alert
        expect-kv status/recovered False
        healthy off
        > claim ha-1
        healthy on
        > wait node-healthy 5s alert
        healthy off
        > fence
        ",
    );
}

#[test]
fn a_reset_waits_until_the_node_service_is_known_before_archiving() {
    // A new leader (no monitor read yet) applies the operator's reset: it
    // must not skip restoring the forced-down service it cannot see yet,
    // or the node stays forced down in Nova and is never judged again.
    run_from_evacuating(
        &["c1"],
        &["ha-1"],
        "instance i1 ACTIVE",
        "
        > check-power
        power off
        > evacuate i1 -> ha-1
        landed i1 ha-1 ACTIVE
        > notify
        notified
        > finish
        kv status/failed False
        kv status/recovered False
        epoch e2
        nova-unknown
        not-judged
        > wait not-judged
        expect-phase done
        judged
        # unknown since a call of ours with an unknown outcome: still waits
        > wait nova-service-unknown
        nova-known
        > restore-service svc-c1 unforce=true enable=true
        ",
    );
}

#[test]
fn the_evacuation_window_slides_a_freed_slot_is_refilled_at_once() {
    // Concurrency 2, five instances. A slot freed by an instance that lands
    // or fails is refilled by the next decision (after the power check), not
    // after the whole window drained; reads of what is in flight come a
    // tenth of `poll_interval` (5s) after the latest call, then doubling up
    // to the interval; every instance is sent exactly once.
    let h = run_from_evacuating(
        &["c1"],
        &["ha-1"],
        "concurrency 2
        instance i1 ACTIVE
        instance i2 ACTIVE
        instance i3 ACTIVE
        instance i4 ACTIVE
        instance i5 ACTIVE",
        "
        > check-power
        power off
        > evacuate i1,i2 -> ha-1
        carry
        > poll i1,i2 after 500ms
        advance 500ms
        landed i1 ha-1 ACTIVE
        inflight i2
        > check-power
        expect-instance i1 done ha-1
        expect-instance i2 requested ha-1
        power off
        > evacuate i3 -> ha-1
        carry
        > poll i2,i3 after 500ms
        advance 500ms
        inflight i2
        inflight i3
        > poll i2,i3 after 500ms
        advance 500ms
        inflight i2
        inflight i3
        > poll i2,i3 after 1s
        advance 1
        inflight i2
        inflight i3
        > poll i2,i3 after 2s
        advance 2
        inflight i2
        inflight i3
        > poll i2,i3 after 4s
        advance 4
        inflight i2
        inflight i3
        > poll i2,i3 after 5s
        advance 5
        nova-failed i2 No valid host was found
        inflight i3
        > check-power
        expect-instance i2 error
        power off
        > evacuate i4 -> ha-1
        carry
        > poll i3,i4 after 500ms
        advance 500ms
        landed i3 ha-1 ACTIVE
        landed i4 ha-1 ACTIVE
        > check-power
        power off
        > evacuate i5 -> ha-1
        carry
        > poll i5 after 500ms
        advance 500ms
        landed i5 ha-1 ACTIVE
        > notify
        expect-phase evacuated
        expect-calls i1 1
        expect-calls i2 1
        expect-calls i3 1
        expect-calls i4 1
        expect-calls i5 1
        ",
    );
    let max_in_flight = h
        .trace
        .iter()
        .filter_map(|(_, d)| match &d.action {
            super::Action::Poll { instances, .. } => Some(instances.len()),
            _ => None,
        })
        .max();
    assert_eq!(
        max_in_flight,
        Some(2),
        "never more than the window in flight"
    );
}

#[test]
fn an_instance_that_landed_and_awaits_its_start_frees_its_slot() {
    // Concurrency 1 at microversion 2.95: i1 lands SHUTOFF and is started;
    // its evacuation is over, so i2 goes out while i1's start is tracked.
    run_from_evacuating(
        &["c1"],
        &["ha-1"],
        "concurrency 1
        restore-power
        instance i1 ACTIVE
        instance i2 ACTIVE",
        "
        > check-power
        power off
        > evacuate i1 -> ha-1
        carry
        > poll i1 after 500ms
        advance 500ms
        landed i1 ha-1 SHUTOFF
        > start i1
        expect-instance i1 requested ha-1
        > check-power
        power off
        > evacuate i2 -> ha-1
        carry
        > poll i1,i2 after 500ms
        advance 500ms
        landed i1 ha-1 ACTIVE
        inflight i2
        > poll i2 after 500ms
        expect-instance i1 done ha-1
        advance 500ms
        landed i2 ha-1 SHUTOFF
        > start i2
        landed i2 ha-1 ACTIVE
        > notify
        expect-calls i1 1
        expect-calls i2 1
        ",
    );
}
