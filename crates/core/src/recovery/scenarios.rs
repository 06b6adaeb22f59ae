//! Scenario scripts: events -> expected decisions, as golden files in the
//! style of toydb (the `goldenscript` crate). Each script is a file of
//! `crates/core/testdata/recovery/` (the detection's, of
//! `crates/core/testdata/detect/`, run by `detect`'s tests), one test per
//! file, named after it. Every block of commands ends with `---` and the
//! output the commands gave, written by the runner: a script is run and its
//! output compared with the file; a difference fails the test with a diff.
//! `UPDATE_GOLDENFILES=1 cargo nextest run -p novaha-core` rewrites the
//! files with the new output instead: read the diff before committing it
//! (docs/testing.md, "Scenario scripts").
//!
//! The language (interpreted by `model::ScriptRunner`), one command a line;
//! `#` starts a comment; goldenscript's quoting rules apply (`"..."` for a
//! value with `:`, `,` or spaces; `""` for an empty one).
//!
//! Setup: `cluster [failed=NODE]... [ha=NODE]...` starts a cluster (a new
//! harness: a script may hold several): the failed nodes already judged
//! failed (`failed=True`, `recovered=False`, `number_fails=4`, their Nova
//! service down), the free HA nodes (`in_use=False`, disabled and up in
//! Nova); prints the tree. The first failed node is the current one; `node
//! NAME` selects another. `compute NODE...` adds nodes Nova reports up and
//! enabled, with no keys. Policy: `target ha_node|scheduler|
//! ha_node_then_scheduler`, `concurrency N`, `restore-power`, `dry-run
//! on|off`, `reset-grace SECS`; detection: `threshold N`,
//! `max-failed-fraction F`, `max-failed-nodes N|none`.
//!
//! Decisions: `> PREFIX` decides for the current node, commits the ops and
//! checks that the action's text starts with PREFIX; a commit that
//! conflicts is an error. It prints the action, every op (`kv: KEY = VALUE
//! (cas N)`, `kv: delete KEY (cas N)`; keys below the prefix, a record as
//! `<record phase=P>`) and the record's change: one line per object of it
//! (`record`, `record.fence`, `record.instances.ID`, ...) naming the fields
//! that changed (`f old -> new`), appeared (`+f value`) or went (`-f`).
//! `!> PREFIX` expects the commit to conflict (the action must still match)
//! and prints the conflict. `read` takes the current node's read now: its
//! next decision is taken from it, as a task that read before another
//! wrote.
//!
//! Events feed the next decision (the runner's results, consumed by one
//! decision) or change the world: `fenced`, `power-unknown`, `fail STEP
//! [fatal]`, `forced-down`, `ha-enabled`, `instance ID STATUS [on=HOST]
//! [opt-out]` (the model Nova; `on=""`: no host), `list` (a listing
//! result), `landed ID HOST STATUS`, `inflight ID`, `nova-failed ID
//! REASON...`, `evacuate-fails ID [fatal]`, `start-fails ID`,
//! `progress-fails ID`, `notified`, `power on|off|unknown` (a check-power
//! read), `powered on|off` (the node's real power), `ha NAME
//! up|down|forced-down|unknown`, `carry` (the runner carries out the last
//! decision), `advance SECS|MSms` and `rewind SECS` (print the clock),
//! `epoch E` (a new leader), `drop-results`, `mass-failure on|off`,
//! `healthy on|off`, `judged`, `not-judged`, `pause on|off`,
//! `nova-unknown`, `nova-known`, `kv KEY VALUE` (an operator's write; KEY
//! relative to the current node, or starting with `compute_nodes/` or
//! `ha_nodes/` for the whole tree).
//!
//! Detection: `nova up|down|enabled|disabled|forced-down|not-forced-down...`
//! (the current node's service as Nova reports it), `consul
//! failed|healthy|off` and `tcp failed|healthy|off` (the extra signals;
//! `off`: not configured), `stale on|off` (its heartbeat is older than
//! `stale_after`), `nova-api reachable|unreachable`, and `detect
//! [clock=off]`: one detection cycle over every node at the harness clock
//! (`clock=off`: no clock, a reset node is awaited without bound); prints
//! its events, its writes (committed per node; a conflict drops the node's)
//! and `mass-failure` when the guard tripped.
//!
//! Checks (print nothing, fail the script): `expect-kv KEY VALUE|absent`,
//! `expect-instance ID STATE [TARGET]`, `expect-phase PHASE|none`,
//! `expect-calls ID N` (evacuate calls the model Nova saw),
//! `expect-incident ID PATH VALUE|present|absent` (a field of an archived
//! record, PATH as the record lines name it), `expect-max-in-flight N` (the
//! largest poll of the current node so far tracked N instances). The `>`
//! prefixes and the checks still assert when the files are regenerated.

use super::model::run_scripts;

run_scripts! {
    "recovery":
    a_fenced_node_powered_back_on_is_fenced_again_before_the_next_batch,
    a_fresh_leader_that_has_not_judged_claims_and_fences_nothing,
    a_node_that_reads_healthy_again_is_neither_claimed_nor_fenced,
    a_reset_node_reading_down_is_not_counted_until_nova_reports_it_up,
    a_reset_node_that_never_comes_up_is_recovered_after_the_grace,
    a_reset_waits_until_the_node_service_is_known_before_archiving,
    a_server_without_a_host_is_never_done,
    a_spare_that_dies_mid_recovery_takes_nothing_more,
    a_step_failing_for_good_ends_stuck,
    admin_reset_after_done_restores_the_service_and_releases_the_ha_node,
    admin_reset_mid_recovery_keeps_the_record_as_an_incident,
    an_admin_reset_mid_evacuation_tracks_what_is_in_flight_first,
    an_evacuation_whose_call_never_took_effect_is_sent_again_never_errored,
    an_instance_moved_by_hand_during_a_leader_gap_is_done_and_never_evacuated,
    an_instance_that_landed_and_awaits_its_start_frees_its_slot,
    an_invalid_flag_stops_every_decision_and_is_never_overwritten,
    an_invalid_ha_node_is_never_claimed,
    an_unreadable_instance_does_not_stall_a_resumed_recovery,
    clock_skew_between_controllers_neither_stalls_nor_errors_early,
    dry_run_writes_nothing_and_says_what_it_would_do,
    error_and_timeout_paths_end_every_instance_final,
    fence_failure_backs_off_alerts_and_never_evacuates_until_verified,
    happy_path_with_opt_out_and_an_instance_already_elsewhere,
    instances_in_flight_are_tracked_while_the_target_is_blocked,
    maintenance_and_pause_stop_claim_fence_force_down_and_evacuation,
    mass_failure_claims_nothing_and_holds_back_a_claimed_fence,
    nothing_to_do_for_a_healthy_node_or_a_latch_set_by_someone_else,
    only_a_spare_nova_reports_up_is_claimed,
    restore_power_state_after_2_95_starts_active_instances_once,
    resume_before_force_down_stamps_the_new_epoch,
    resume_mid_evacuation_polls_requested_instances_and_never_resends,
    scheduler_policy_claims_no_ha_node_and_evacuates_without_target,
    the_evacuation_window_slides_a_freed_slot_is_refilled_at_once,
    two_failed_nodes_one_ha_node_wait_under_ha_node_policy,
    two_failed_nodes_racing_for_one_ha_node_only_one_claim_lands,
}
