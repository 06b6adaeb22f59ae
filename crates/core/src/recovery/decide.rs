//! The decision function itself: fold what was observed into the record,
//! then pick the next step from the record's phase.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use super::{
    Action, Decision, EvacuateOrder, Failure, HaNodeObs, MAX_SENDS, Observation, Policy, Step,
    TargetPolicy, WaitReason, usable,
};
use crate::drivers::{IncidentReport, Instance, InstanceOutcome, InstanceProgress};
use crate::kv::format_bool;
use crate::record::{InstanceRecord, InstanceState, Phase, RECORD_VERSION, RecoveryRecord};
use crate::store::KvOp;
use crate::types::{NodeName, PowerState};

/// Decides the next step for one node.
///
/// `record` is the node's parsed recovery record (`None` when absent),
/// `obs` what the runner read plus its last action's results, `now` the
/// runner's clock. Pure and deterministic; see the module doc for how the
/// runner uses the [`Decision`].
pub fn decide(
    policy: &Policy,
    record: Option<&RecoveryRecord>,
    obs: &Observation,
    now: DateTime<Utc>,
) -> Decision {
    let decision = decide_inner(policy, record, obs, now);
    if policy.dry_run && (decision.action.acts() || !decision.ops.is_empty()) {
        return Decision {
            ops: Vec::new(),
            record: record.cloned(),
            action: Action::DryRun(Box::new(decision.action)),
        };
    }
    decision
}

fn decide_inner(
    policy: &Policy,
    record: Option<&RecoveryRecord>,
    obs: &Observation,
    now: DateTime<Utc>,
) -> Decision {
    let flags = &obs.flags;
    let (Some(failed), Some(recovered)) = (flags.failed.get(), flags.recovered.get()) else {
        return unchanged(
            record,
            wait(WaitReason::InvalidState, policy.poll_interval, true),
        );
    };
    if !flags.invalid.is_empty() || flags.number_fails.get().is_none() {
        // Rule 6: a value we cannot parse is never overwritten, and nothing
        // of the node is decided on half-read state.
        return unchanged(
            record,
            wait(WaitReason::InvalidState, policy.poll_interval, true),
        );
    }
    let Some(rec) = record else {
        return if failed && !recovered {
            claim(policy, obs, now)
        } else {
            unchanged(None, Action::Idle)
        };
    };
    if rec.version > RECORD_VERSION {
        return unchanged(
            record,
            Action::Stuck {
                reason: format!(
                    "recovery record version {} is newer than this build ({RECORD_VERSION})",
                    rec.version
                ),
            },
        );
    }
    if !failed && !recovered {
        return reset(policy, rec, obs, now);
    }
    match rec.phase {
        Phase::Done => unchanged(record, Action::Idle),
        Phase::Stuck => unchanged(
            record,
            Action::Stuck {
                reason: rec
                    .last_error
                    .clone()
                    .unwrap_or_else(|| "recovery marked stuck".to_owned()),
            },
        ),
        _ => advance(policy, rec, obs, now),
    }
}

fn wait(reason: WaitReason, retry_after: Duration, alert: bool) -> Action {
    Action::Wait {
        reason,
        retry_after,
        alert,
    }
}

/// Why nothing destructive may start or continue for the node now: its
/// maintenance flag, or the cluster's pause (docs/safety.md, rule 9).
fn hold(obs: &Observation) -> Option<WaitReason> {
    if obs.flags.maintenance {
        Some(WaitReason::Maintenance)
    } else if obs.paused.is_some() {
        Some(WaitReason::Paused)
    } else {
        None
    }
}

/// A spare that `node`'s recovery may claim: registered free (a parsed
/// `False`), not the node itself, not given up before, and up in Nova
/// (rule 10).
fn claimable(h: &HaNodeObs, node: &NodeName, given_up: &[NodeName]) -> bool {
    &h.name != node && h.in_use.value == Ok(false) && h.usable() && !given_up.contains(&h.name)
}

fn unchanged(record: Option<&RecoveryRecord>, action: Action) -> Decision {
    Decision {
        ops: Vec::new(),
        record: record.cloned(),
        action,
    }
}

fn record_op(policy: &Policy, obs: &Observation, rec: &RecoveryRecord) -> KvOp {
    KvOp::set(
        policy.schema.recovery(&obs.node),
        to_json(rec),
        obs.flags.record_index,
    )
}

fn to_json(rec: &RecoveryRecord) -> Vec<u8> {
    serde_json::to_vec(rec).expect("a recovery record serialises: every map key is a string")
}

/// The decision that persists `rec` when it differs from `orig`.
fn emit(
    policy: &Policy,
    obs: &Observation,
    orig: &RecoveryRecord,
    rec: RecoveryRecord,
    action: Action,
) -> Decision {
    let ops = if &rec == orig {
        Vec::new()
    } else {
        vec![record_op(policy, obs, &rec)]
    };
    Decision {
        ops,
        record: Some(rec),
        action,
    }
}

fn add(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    TimeDelta::from_std(d)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

fn backoff(policy: &Policy, attempts: u32) -> Duration {
    crate::backoff::Backoff::new(policy.backoff_initial, policy.backoff_max).delay(attempts)
}

fn claim(policy: &Policy, obs: &Observation, now: DateTime<Utc>) -> Decision {
    if obs.mass_failure {
        return unchanged(
            None,
            wait(WaitReason::MassFailure, policy.poll_interval, true),
        );
    }
    if !obs.judged {
        return unchanged(
            None,
            wait(WaitReason::NotJudged, policy.poll_interval, false),
        );
    }
    if let Some(reason) = hold(obs) {
        return unchanged(None, wait(reason, policy.poll_interval, false));
    }
    if obs.node_healthy {
        return unchanged(
            None,
            wait(WaitReason::NodeHealthy, policy.poll_interval, true),
        );
    }
    let free = obs
        .ha_nodes
        .iter()
        .filter(|h| claimable(h, &obs.node, &[]))
        .min_by(|a, b| a.name.cmp(&b.name));
    let ha = match (policy.target, free) {
        (TargetPolicy::Scheduler, _) => None,
        (_, Some(h)) => Some(h),
        (TargetPolicy::HaNodeThenScheduler, None) => None,
        (TargetPolicy::HaNode, None) => {
            return unchanged(
                None,
                wait(WaitReason::NoFreeHaNode, policy.poll_interval, true),
            );
        }
    };
    let incident = format!("{}-{}", obs.node, now.format("%Y%m%dT%H%M%SZ"));
    let mut rec = RecoveryRecord::new(incident, obs.epoch.clone(), now);
    rec.timeline.insert("claimed".to_owned(), now);
    rec.ha_node = ha.map(|h| h.name.clone());
    rec.nova_service_id = obs.nova_service.as_ref().map(|s| s.id.clone());
    let s = &policy.schema;
    let mut ops = vec![KvOp::set(
        s.recovered(&obs.node),
        format_bool(true),
        obs.flags.recovered.modify_index,
    )];
    if let Some(h) = ha {
        ops.push(KvOp::set(
            s.in_use(&h.name),
            format_bool(true),
            h.in_use.modify_index,
        ));
        ops.push(KvOp::set(
            s.serving(&h.name),
            obs.node.as_str(),
            h.serving_index,
        ));
    }
    ops.push(record_op(policy, obs, &rec));
    Decision {
        ops,
        action: Action::Claim {
            ha_node: rec.ha_node.clone(),
        },
        record: Some(rec),
    }
}

fn reset(
    policy: &Policy,
    orig: &RecoveryRecord,
    obs: &Observation,
    now: DateTime<Utc>,
) -> Decision {
    let s = &policy.schema;
    // An instance in flight is never dropped (rule 3): the evacuations
    // already sent are tracked to their end before anything is undone; the
    // ones never sent are recorded as skipped, for a human.
    let mut folded = orig.clone();
    fold_progress(policy, obs, &mut folded, now);
    for i in folded.instances.values_mut() {
        if i.state == InstanceState::Pending {
            i.state = InstanceState::Skipped;
            i.error = Some("not evacuated: the node was reset by an administrator".to_owned());
        }
    }
    let in_flight = ids_in(&folded, InstanceState::Requested);
    if !in_flight.is_empty() {
        let a = Action::Poll {
            instances: in_flight,
            after: policy.poll_interval,
        };
        return emit(policy, obs, orig, folded, a);
    }
    let rec = &folded;
    if policy.reset.restore_nova_service && obs.nova_service.is_none() {
        // Not read yet (a new leader), or unknown since a call of ours
        // whose outcome is unknown: skipping the restore on a guess could
        // leave the service forced down, and the node never judged again.
        let reason = if obs.judged {
            WaitReason::NovaServiceUnknown
        } else {
            WaitReason::NotJudged
        };
        let a = wait(reason, policy.poll_interval, false);
        return emit(policy, obs, orig, folded.clone(), a);
    }
    if policy.reset.restore_nova_service
        && let Some(svc) = &obs.nova_service
        && (svc.forced_down || !svc.enabled)
    {
        if let Some((Step::RestoreService, f)) = &obs.failure {
            let mut next = rec.clone();
            let (retry, alert) = note_failure(policy, &mut next, Step::RestoreService, f, now);
            return emit(
                policy,
                obs,
                orig,
                next,
                wait(WaitReason::Backoff(Step::RestoreService), retry, alert),
            );
        }
        if let Some(d) = backoff_pending(policy, rec, now) {
            let a = wait(WaitReason::Backoff(Step::RestoreService), d, false);
            return emit(policy, obs, orig, folded.clone(), a);
        }
        return emit(
            policy,
            obs,
            orig,
            folded.clone(),
            Action::RestoreService {
                service_id: svc.id.clone(),
                unforce: svc.forced_down,
                enable: !svc.enabled,
            },
        );
    }
    let mut ops = Vec::new();
    if obs.flags.number_fails.get() != Some(0) || obs.flags.number_fails.modify_index == 0 {
        ops.push(KvOp::set(
            s.number_fails(&obs.node),
            "0",
            obs.flags.number_fails.modify_index,
        ));
    }
    if rec.phase != Phase::Done {
        // Finish wrote the copy of a done record; any other is copied now.
        let mut copy = rec.clone();
        copy.timeline.insert("reset".to_owned(), now);
        ops.push(KvOp::set(
            s.incident(&obs.node, &rec.incident),
            to_json(&copy),
            0,
        ));
    }
    // The restarted nova-compute reads down until its first heartbeat:
    // detection must not count that as a failure of the repaired node.
    ops.push(KvOp::set(
        s.awaiting_up(&obs.node),
        format_bool(true),
        obs.flags.awaiting_up.modify_index,
    ));
    if obs.flags.awaiting_up_since_index != 0 {
        // A grace left from an earlier reset: the new one starts afresh.
        ops.push(KvOp::Delete {
            key: s.awaiting_up_since(&obs.node),
            cas: obs.flags.awaiting_up_since_index,
        });
    }
    ops.push(KvOp::Delete {
        key: s.recovery(&obs.node),
        cas: obs.flags.record_index,
    });
    let mut released = Vec::new();
    let claimed = rec.ha_node.iter().chain(rec.former_ha_nodes.iter());
    for ha in claimed.filter(|_| policy.reset.release_ha_node) {
        if let Some(h) = obs.ha_nodes.iter().find(|h| &h.name == ha)
            && h.in_use.value == Ok(true)
            && h.serving.as_ref() == Some(&obs.node)
            && !released.contains(ha)
        {
            ops.push(KvOp::set(
                s.in_use(ha),
                format_bool(false),
                h.in_use.modify_index,
            ));
            ops.push(KvOp::Delete {
                key: s.serving(ha),
                cas: h.serving_index,
            });
            released.push(ha.clone());
        }
    }
    Decision {
        ops,
        record: None,
        action: Action::Reset {
            incident: rec.incident.clone(),
            released,
        },
    }
}

fn until(now: DateTime<Utc>, at: DateTime<Utc>) -> Duration {
    (at - now).to_std().unwrap_or_default()
}

/// The ids of the record's instances in `state`, in the record's order.
fn ids_in(rec: &RecoveryRecord, state: InstanceState) -> Vec<String> {
    rec.instances
        .iter()
        .filter(|(_, i)| i.state == state)
        .map(|(id, _)| id.clone())
        .collect()
}

/// Records a failed step; returns the retry delay and whether to alert.
fn note_failure(
    policy: &Policy,
    rec: &mut RecoveryRecord,
    step: Step,
    f: &Failure,
    now: DateTime<Utc>,
) -> (Duration, bool) {
    rec.attempts = rec.attempts.saturating_add(1);
    rec.last_error = Some(format!("{step}: {}", f.message));
    let delay = backoff(policy, rec.attempts);
    rec.retry_at = Some(add(now, delay));
    let alert = step == Step::Fence || !f.retryable || rec.attempts >= policy.alert_after;
    (delay, alert)
}

fn enter(rec: &mut RecoveryRecord, phase: Phase, now: DateTime<Utc>) {
    rec.phase = phase;
    let name = serde_json::to_value(phase)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{phase:?}"));
    rec.timeline.insert(name, now);
    rec.attempts = 0;
    rec.retry_at = None;
    rec.last_error = None;
}

/// The outcome of a failed step: back off, or stuck after too many
/// non-retryable failures (never for fencing).
fn failed_step(
    policy: &Policy,
    obs: &Observation,
    orig: &RecoveryRecord,
    mut rec: RecoveryRecord,
    step: Step,
    f: &Failure,
    now: DateTime<Utc>,
) -> Decision {
    let (retry, alert) = note_failure(policy, &mut rec, step, f, now);
    if step != Step::Fence && !f.retryable && rec.attempts >= policy.max_attempts {
        let reason = format!("{step} failed {} times: {}", rec.attempts, f.message);
        rec.phase = Phase::Stuck;
        rec.timeline.insert("stuck".to_owned(), now);
        rec.last_error = Some(reason.clone());
        return emit(policy, obs, orig, rec, Action::Stuck { reason });
    }
    emit(
        policy,
        obs,
        orig,
        rec,
        wait(WaitReason::Backoff(step), retry, alert),
    )
}

/// The step's own failure in this observation, if any.
fn failure_of(obs: &Observation, step: Step) -> Option<&Failure> {
    obs.failure
        .as_ref()
        .filter(|(s, _)| *s == step)
        .map(|(_, f)| f)
}

/// The rest of the current step's backoff, if it is still running. A
/// `retry_at` further away than the longest backoff was written by a
/// controller whose clock ran ahead of ours: it is not waited for.
fn backoff_pending(policy: &Policy, rec: &RecoveryRecord, now: DateTime<Utc>) -> Option<Duration> {
    rec.retry_at
        .filter(|at| *at > now)
        .map(|at| until(now, at))
        .filter(|d| *d <= policy.backoff_max)
}

/// A new leader adopts the record: the deadlines its predecessor wrote
/// (by its own clock) start again from this leader's clock, so clock skew
/// between the controllers can only delay an error, never bring one early.
fn rebase(rec: &mut RecoveryRecord, now: DateTime<Utc>) {
    for i in rec.instances.values_mut().filter(|i| !i.state.is_final()) {
        if i.requested_at.is_some() {
            i.requested_at = Some(now);
        }
        if i.start_requested_at.is_some() {
            i.start_requested_at = Some(now);
        }
    }
}

fn advance(
    policy: &Policy,
    orig: &RecoveryRecord,
    obs: &Observation,
    now: DateTime<Utc>,
) -> Decision {
    let mut rec = orig.clone();
    let resumed = rec.epoch != obs.epoch;
    // A new leader mid-evacuation first re-reads every unfinished instance
    // (one may have landed, or been moved by hand, while no one watched)
    // and adopts the record only then. Other phases are adopted at once.
    let resync = resumed && rec.phase == Phase::Evacuating;
    if resumed {
        rebase(&mut rec, now);
    }
    if resumed && !resync {
        rec.epoch = obs.epoch.clone();
        rec.timeline.insert("resumed".to_owned(), now);
    }
    loop {
        match rec.phase {
            Phase::Claimed => {
                if let Some(f) = &obs.fenced
                    && f.node() == &obs.node
                {
                    rec.fence = Some(f.to_record());
                    enter(&mut rec, Phase::Fenced, now);
                    continue;
                }
                if let Some(f) = failure_of(obs, Step::Fence) {
                    return failed_step(policy, obs, orig, rec, Step::Fence, f, now);
                }
                if obs.mass_failure {
                    let a = wait(WaitReason::MassFailure, policy.poll_interval, true);
                    return emit(policy, obs, orig, rec, a);
                }
                if !obs.judged {
                    let a = wait(WaitReason::NotJudged, policy.poll_interval, false);
                    return emit(policy, obs, orig, rec, a);
                }
                if let Some(reason) = hold(obs) {
                    let a = wait(reason, policy.poll_interval, false);
                    return emit(policy, obs, orig, rec, a);
                }
                if obs.node_healthy {
                    let a = wait(WaitReason::NodeHealthy, policy.poll_interval, true);
                    return emit(policy, obs, orig, rec, a);
                }
                if let Some(d) = backoff_pending(policy, &rec, now) {
                    let a = wait(WaitReason::Backoff(Step::Fence), d, false);
                    return emit(policy, obs, orig, rec, a);
                }
                return emit(policy, obs, orig, rec, Action::Fence);
            }
            Phase::Fenced => {
                if let Some(svc) = &obs.nova_service {
                    if rec.nova_service_id.as_deref() != Some(svc.id.as_str()) {
                        rec.nova_service_id = Some(svc.id.clone());
                    }
                    if svc.forced_down && !svc.enabled {
                        enter(&mut rec, Phase::ForcedDown, now);
                        continue;
                    }
                }
                if let Some(f) = failure_of(obs, Step::ForceDown) {
                    return failed_step(policy, obs, orig, rec, Step::ForceDown, f, now);
                }
                if let Some(reason) = hold(obs) {
                    let a = wait(reason, policy.poll_interval, false);
                    return emit(policy, obs, orig, rec, a);
                }
                if let Some(d) = backoff_pending(policy, &rec, now) {
                    let a = wait(WaitReason::Backoff(Step::ForceDown), d, false);
                    return emit(policy, obs, orig, rec, a);
                }
                let Some(service_id) = rec.nova_service_id.clone() else {
                    let a = wait(WaitReason::NovaServiceUnknown, policy.poll_interval, true);
                    return emit(policy, obs, orig, rec, a);
                };
                let reason = format!(
                    "novaha: fenced, incident {} epoch {}",
                    rec.incident, rec.epoch
                );
                return emit(
                    policy,
                    obs,
                    orig,
                    rec,
                    Action::ForceDown { service_id, reason },
                );
            }
            Phase::ForcedDown => {
                if let Some(list) = &obs.instances {
                    fold_listing(policy, obs, &mut rec.instances, list);
                    enter(&mut rec, Phase::Evacuating, now);
                    continue;
                }
                if let Some(f) = failure_of(obs, Step::ListInstances) {
                    return failed_step(policy, obs, orig, rec, Step::ListInstances, f, now);
                }
                if let Some(d) = backoff_pending(policy, &rec, now) {
                    let a = wait(WaitReason::Backoff(Step::ListInstances), d, false);
                    return emit(policy, obs, orig, rec, a);
                }
                return emit(policy, obs, orig, rec, Action::ListInstances);
            }
            Phase::Evacuating => {
                if rec.fence.is_none() {
                    // A hand-edited or foreign record: never evacuate (rule 1).
                    let reason = "record is evacuating without fence evidence".to_owned();
                    rec.phase = Phase::Stuck;
                    rec.last_error = Some(reason.clone());
                    return emit(policy, obs, orig, rec, Action::Stuck { reason });
                }
                fold_progress(policy, obs, &mut rec, now);
                if resync {
                    let open: Vec<String> = open_ids(&rec);
                    // Adopted once every open instance was read, or tried:
                    // one unreadable instance does not hold the rest back.
                    let tried = |id: &String| {
                        obs.progress.contains_key(id) || obs.progress_errors.contains(id)
                    };
                    if !open.iter().all(tried) {
                        let a = Action::Poll {
                            instances: open,
                            after: Duration::ZERO,
                        };
                        return emit(policy, obs, orig, rec, a);
                    }
                    rec.epoch = obs.epoch.clone();
                    rec.timeline.insert("resumed".to_owned(), now);
                }
                if rec.instances.values().all(|i| i.state.is_final()) {
                    enter(&mut rec, Phase::Evacuated, now);
                    continue;
                }
                return evacuate_step(policy, obs, orig, rec, now);
            }
            Phase::Evacuated => {
                if obs.notified {
                    enter(&mut rec, Phase::Notified, now);
                    continue;
                }
                if let Some(f) = failure_of(obs, Step::Notify) {
                    let (retry, alert) = note_failure(policy, &mut rec, Step::Notify, f, now);
                    if rec.attempts >= policy.notify_attempts {
                        let gave_up = format!(
                            "notification given up after {} attempts: {}",
                            rec.attempts, f.message
                        );
                        enter(&mut rec, Phase::Notified, now);
                        rec.last_error = Some(gave_up);
                        continue;
                    }
                    let a = wait(WaitReason::Backoff(Step::Notify), retry, alert);
                    return emit(policy, obs, orig, rec, a);
                }
                if let Some(d) = backoff_pending(policy, &rec, now) {
                    let a = wait(WaitReason::Backoff(Step::Notify), d, false);
                    return emit(policy, obs, orig, rec, a);
                }
                let report = report(obs, &rec);
                return emit(policy, obs, orig, rec, Action::Notify(report));
            }
            Phase::Notified => {
                let last_error = rec.last_error.take();
                enter(&mut rec, Phase::Done, now);
                rec.last_error = last_error;
                let mut d = emit(
                    policy,
                    obs,
                    orig,
                    rec.clone(),
                    Action::Finish {
                        incident: rec.incident.clone(),
                    },
                );
                d.ops.push(KvOp::set(
                    policy.schema.incident(&obs.node, &rec.incident),
                    to_json(&rec),
                    0,
                ));
                return d;
            }
            Phase::Done | Phase::Stuck => return emit(policy, obs, orig, rec, Action::Idle),
        }
    }
}

/// True when Nova shows an instance on a known host other than the failed
/// node. A server read without a host (a down cell, a policy hiding the
/// attribute) is unknown, never landed (rule 3).
fn landed_elsewhere(host: &str, node: &str) -> bool {
    !host.trim().is_empty() && host != node
}

fn open_ids(rec: &RecoveryRecord) -> Vec<String> {
    rec.instances
        .iter()
        .filter(|(_, i)| !i.state.is_final())
        .map(|(id, _)| id.clone())
        .collect()
}

fn is_false_value(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "false" | "f" | "no" | "0"
    )
}

fn is_true_value(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "true" | "t" | "yes" | "1"
    )
}

/// How a listing of the node's instances enters a recovery: each one
/// pending, already done (it runs elsewhere), or skipped (opted out, or not
/// opted in), with its storage class. The dry-run plan shows exactly this
/// without a record, a claim or a fence.
pub fn listed(
    policy: &Policy,
    obs: &Observation,
    list: &[Instance],
) -> std::collections::BTreeMap<String, InstanceRecord> {
    let mut instances = std::collections::BTreeMap::new();
    fold_listing(policy, obs, &mut instances, list);
    instances
}

fn fold_listing(
    policy: &Policy,
    obs: &Observation,
    instances: &mut std::collections::BTreeMap<String, InstanceRecord>,
    list: &[Instance],
) {
    for inst in list {
        if instances.contains_key(&inst.id) {
            continue;
        }
        let mut entry = InstanceRecord {
            state: InstanceState::Pending,
            prior_status: inst.status.clone(),
            name: Some(inst.name.clone()).filter(|n| !n.is_empty()),
            target: None,
            error: None,
            owner: Some(inst.user_id.clone()).filter(|n| !n.is_empty()),
            project: Some(inst.project_id.clone()).filter(|n| !n.is_empty()),
            requested_at: None,
            start_requested_at: None,
            sends: 0,
            starts: 0,
            ..InstanceRecord::default()
        };
        if landed_elsewhere(&inst.host, obs.node.as_str()) {
            entry.state = InstanceState::Done;
            entry.target = Some(inst.host.clone());
        } else if let Some(v) = inst.metadata.get(&policy.opt_out_key)
            && !is_false_value(v)
        {
            entry.state = InstanceState::Skipped;
            entry.error = Some(format!("opted out (metadata {})", policy.opt_out_key));
        } else if let Some(key) = &policy.opt_in_key
            && !inst.metadata.get(key).is_some_and(|v| is_true_value(v))
        {
            entry.state = InstanceState::Skipped;
            entry.error = Some(format!("not opted in (metadata {key})"));
        }
        crate::recovery::evacuation::annotate(policy, obs.flags.shared_storage, inst, &mut entry);
        instances.insert(inst.id.clone(), entry);
    }
}

fn fold_progress(policy: &Policy, obs: &Observation, rec: &mut RecoveryRecord, now: DateTime<Utc>) {
    let node = obs.node.as_str();
    for (id, inst) in rec.instances.iter_mut() {
        match inst.state {
            InstanceState::Pending => {
                // Moved while no one watched: done, never evacuated.
                if let Some(InstanceProgress::Landed { host, .. }) = obs.progress.get(id)
                    && landed_elsewhere(host, node)
                {
                    inst.state = InstanceState::Done;
                    inst.target = Some(host.clone());
                }
            }
            InstanceState::Requested => {
                fold_requested(policy, obs, id, inst, now);
            }
            InstanceState::Done | InstanceState::Error | InstanceState::Skipped => {}
        }
    }
}

fn fold_requested(
    policy: &Policy,
    obs: &Observation,
    id: &str,
    inst: &mut InstanceRecord,
    now: DateTime<Utc>,
) {
    let node = obs.node.as_str();
    if let Some(f) = obs.evacuate_failures.get(id)
        && !f.retryable
    {
        inst.state = InstanceState::Error;
        inst.error = Some(format!("evacuate refused: {}", f.message));
        return;
    }
    if let Some(f) = obs.start_failures.get(id)
        && !f.retryable
    {
        inst.state = InstanceState::Error;
        inst.error = Some(format!("landed SHUTOFF, start failed: {}", f.message));
        return;
    }
    let due = |at: Option<DateTime<Utc>>| at.is_some_and(|at| now >= add(at, policy.resend_after));
    match obs.progress.get(id) {
        Some(InstanceProgress::Failed { reason }) => {
            inst.state = InstanceState::Error;
            inst.error = Some(reason.clone());
            return;
        }
        Some(InstanceProgress::Landed { host, status }) if landed_elsewhere(host, node) => {
            inst.target = Some(host.clone());
            if status.eq_ignore_ascii_case("ERROR") {
                inst.state = InstanceState::Error;
                inst.error = Some(format!("landed in ERROR on {host}"));
                return;
            }
            let needs_start = policy.restore_power_state
                && inst.prior_status.eq_ignore_ascii_case("ACTIVE")
                && status.eq_ignore_ascii_case("SHUTOFF");
            if !needs_start {
                inst.state = InstanceState::Done;
                return;
            }
            if inst.starts >= MAX_SENDS && due(inst.start_requested_at) {
                inst.state = InstanceState::Error;
                inst.error = Some(format!(
                    "landed SHUTOFF on {host}; {} start calls never took effect",
                    inst.starts
                ));
                return;
            }
        }
        Some(InstanceProgress::Landed { host, .. }) if host == node && due(inst.requested_at) => {
            // Still untouched on the failed node well after it was recorded
            // `requested`: the evacuate call never took effect (a commit
            // whose outcome was unknown, a leader that died before its
            // call). Sent again, a bounded number of times.
            if inst.sends >= MAX_SENDS {
                inst.state = InstanceState::Error;
                inst.error = Some(format!(
                    "{} evacuate calls never took effect: still on {node}",
                    inst.sends
                ));
            } else {
                inst.state = InstanceState::Pending;
                inst.target = None;
                // A start belongs to a landing; this one is sent again.
                inst.start_requested_at = None;
            }
            return;
        }
        _ => {}
    }
    match inst.requested_at {
        // A record from before the field existed: the clock starts now.
        None => inst.requested_at = Some(now),
        // Timed out only on a fresh read that says it has not landed: an
        // instance nobody read this round (a blocked step, an unreadable
        // server) is not judged.
        Some(at) if now >= add(at, policy.evacuate_timeout) && obs.progress.contains_key(id) => {
            inst.state = InstanceState::Error;
            inst.error = Some(format!(
                "did not land within {}s",
                policy.evacuate_timeout.as_secs()
            ));
        }
        Some(_) => {}
    }
}

fn evacuate_step(
    policy: &Policy,
    obs: &Observation,
    orig: &RecoveryRecord,
    mut rec: RecoveryRecord,
    now: DateTime<Utc>,
) -> Decision {
    let node = obs.node.as_str();
    // Landed SHUTOFF but ACTIVE before (microversion >= 2.95): start it,
    // again if a start did not take effect (a start is idempotent).
    let to_start: Vec<String> = rec
        .instances
        .iter()
        .filter(|(id, i)| {
            i.state == InstanceState::Requested
                && policy.restore_power_state
                && i.prior_status.eq_ignore_ascii_case("ACTIVE")
                && i.starts < MAX_SENDS
                && i.start_requested_at
                    .is_none_or(|at| now >= add(at, policy.resend_after))
                && matches!(obs.progress.get(*id), Some(InstanceProgress::Landed { host, status })
                    if landed_elsewhere(host, node) && status.eq_ignore_ascii_case("SHUTOFF"))
        })
        .map(|(id, _)| id.clone())
        .collect();
    if !to_start.is_empty() {
        for id in &to_start {
            if let Some(i) = rec.instances.get_mut(id) {
                i.start_requested_at = Some(now);
                i.starts = i.starts.saturating_add(1);
            }
        }
        return emit(
            policy,
            obs,
            orig,
            rec,
            Action::RestorePowerState {
                instances: to_start,
            },
        );
    }
    let in_flight = ids_in(&rec, InstanceState::Requested);
    // The window holds the evacuations not landed yet: one that landed
    // SHUTOFF and was started (only its start is awaited) frees its slot.
    let evacuating = in_flight
        .iter()
        .filter(|id| {
            rec.instances
                .get(*id)
                .is_some_and(|i| i.start_requested_at.is_none())
        })
        .count();
    let slots = policy.concurrency.max(1).saturating_sub(evacuating);
    // Priority order; the HA node while they fit, else per the policy.
    let batch = crate::recovery::evacuation::choose(policy, obs, &rec, slots);
    let pending = batch.ids;
    // Nothing may be sent now: keep tracking what is in flight, or wait.
    let blocked = |rec: RecoveryRecord, reason: WaitReason, after: Duration, alert: bool| {
        let a = if in_flight.is_empty() {
            wait(reason, after, alert)
        } else {
            Action::Poll {
                instances: in_flight.clone(),
                after: after.min(poll_after(policy, &rec, &in_flight, now)),
            }
        };
        emit(policy, obs, orig, rec, a)
    };
    if pending.is_empty()
        && let Some(why) = batch.waiting
    {
        // Policy `ha_node` and no room on the spare for what is left.
        if in_flight.is_empty() {
            rec.last_error = Some(why);
        }
        return blocked(rec, WaitReason::NoRoom, policy.poll_interval, true);
    }
    if pending.is_empty() {
        // The window is full (or nothing is left to send): track what is in
        // flight, soon after the latest call, so that a slot freed by an
        // evacuation that lands or fails is refilled promptly.
        let a = Action::Poll {
            after: poll_after(policy, &rec, &in_flight, now),
            instances: in_flight,
        };
        return emit(policy, obs, orig, rec, a);
    }
    if let Some(reason) = hold(obs) {
        return blocked(rec, reason, policy.poll_interval, false);
    }
    if !obs.judged {
        return blocked(rec, WaitReason::NotJudged, policy.poll_interval, false);
    }
    if let Some(ha) = rec.ha_node.clone() {
        let Some(svc) = obs.ha_service.as_ref().filter(|s| usable(Some(s))) else {
            // Rule 10: a spare Nova does not report up (dead, forced down,
            // unknown to Nova) takes nothing more.
            return match retarget(policy, obs, &rec, &ha, now) {
                Some(d) => d,
                None => {
                    rec.last_error = Some(format!(
                        "HA node {ha} is not up in Nova and no other spare is free"
                    ));
                    blocked(rec, WaitReason::NoFreeHaNode, policy.poll_interval, true)
                }
            };
        };
        if !svc.enabled {
            if let Some(f) = failure_of(obs, Step::PrepareTarget) {
                let d = failed_step(policy, obs, orig, rec, Step::PrepareTarget, f, now);
                return match (&d.action, in_flight.is_empty()) {
                    (Action::Wait { retry_after, .. }, false) => Decision {
                        action: Action::Poll {
                            instances: in_flight.clone(),
                            after: (*retry_after).min(policy.poll_interval),
                        },
                        ..d
                    },
                    _ => d,
                };
            }
            if let Some(d) = backoff_pending(policy, &rec, now) {
                return blocked(rec, WaitReason::Backoff(Step::PrepareTarget), d, false);
            }
            let a = Action::PrepareTarget {
                ha_node: ha,
                service_id: svc.id.clone(),
            };
            return emit(policy, obs, orig, rec, a);
        }
    }
    // Rule 1: the fence is re-verified before every batch.
    match obs.power {
        Some(PowerState::Off) => {}
        Some(read) => return refence(policy, obs, orig, rec, read, now),
        None => return emit(policy, obs, orig, rec, Action::CheckPower),
    }
    for id in &pending {
        if let Some(i) = rec.instances.get_mut(id) {
            i.state = InstanceState::Requested;
            i.requested_at = Some(now);
            i.sends = i.sends.saturating_add(1);
            i.via_scheduler = rec.ha_node.is_some() && batch.scheduler.contains(id);
            i.target = rec.ha_node.as_ref().map(|h| h.to_string());
            if i.via_scheduler {
                i.target = None;
            }
        }
    }
    let Some(order) = EvacuateOrder::new(&obs.node, &rec, &pending) else {
        let reason = "record is evacuating without fence evidence".to_owned();
        let mut stuck = orig.clone();
        stuck.phase = Phase::Stuck;
        stuck.last_error = Some(reason.clone());
        return emit(policy, obs, orig, stuck, Action::Stuck { reason });
    };
    emit(policy, obs, orig, rec, Action::Evacuate(order))
}

/// How long to wait before reading the instances in flight again: the
/// evacuation window slides, so a slot is refilled as soon as a read shows
/// its instance landed or failed. The wait grows with the age of the
/// latest call among `in_flight` (its evacuate or its start): a tenth of
/// `poll_interval` right after a call, then as old as that call is (so the
/// reads come at 1/10, 2/10, 4/10, 8/10 of the interval after it), and at
/// most `poll_interval`. An evacuation that lands at once frees its slot a
/// tenth of an interval later instead of a whole one; a slow one costs a
/// few more reads of at most `concurrency` instances after each call, never
/// more than ten reads per interval.
fn poll_after(
    policy: &Policy,
    rec: &RecoveryRecord,
    in_flight: &[String],
    now: DateTime<Utc>,
) -> Duration {
    let floor = policy.poll_interval / POLL_RAMP;
    let latest = in_flight
        .iter()
        .filter_map(|id| rec.instances.get(id))
        .flat_map(|i| [i.requested_at, i.start_requested_at])
        .flatten()
        .max();
    let age = latest.map_or(policy.poll_interval, |at| until(at, now));
    age.clamp(floor, policy.poll_interval)
}

/// The first read after a call comes `poll_interval / POLL_RAMP` later.
const POLL_RAMP: u32 = 10;

/// The fenced node's power read anything but off before a batch: the fence
/// is no longer proven. Back to `claimed`, so it is fenced (and verified)
/// again before any further evacuation; the instances already sent keep
/// their state and are tracked once the recovery is evacuating again.
fn refence(
    policy: &Policy,
    obs: &Observation,
    orig: &RecoveryRecord,
    mut rec: RecoveryRecord,
    read: PowerState,
    now: DateTime<Utc>,
) -> Decision {
    rec.fence = None;
    rec.phase = Phase::Claimed;
    rec.timeline.insert("fence_lost".to_owned(), now);
    rec.attempts = 0;
    rec.retry_at = None;
    rec.last_error = Some(format!(
        "power read {read} after the fence: fencing again before any further evacuation"
    ));
    let a = wait(WaitReason::FenceLost, Duration::ZERO, true);
    emit(policy, obs, orig, rec, a)
}

/// The claimed spare `from` cannot take evacuations: claim the next free
/// one (one transaction with the record), or under
/// `ha_node_then_scheduler` hand the rest to the scheduler. `None` when
/// there is nowhere to go (policy `ha_node`, no other spare).
fn retarget(
    policy: &Policy,
    obs: &Observation,
    rec: &RecoveryRecord,
    from: &NodeName,
    now: DateTime<Utc>,
) -> Option<Decision> {
    let mut given_up = rec.former_ha_nodes.clone();
    given_up.push(from.clone());
    let next = obs
        .ha_nodes
        .iter()
        .filter(|h| claimable(h, &obs.node, &given_up))
        .min_by(|a, b| a.name.cmp(&b.name));
    if next.is_none() && policy.target == TargetPolicy::HaNode {
        return None;
    }
    let mut next_rec = rec.clone();
    next_rec.former_ha_nodes = given_up;
    next_rec.ha_node = next.map(|h| h.name.clone());
    next_rec.timeline.insert("retargeted".to_owned(), now);
    next_rec.last_error = Some(format!(
        "HA node {from} is not up in Nova: the instances not sent yet go to {}",
        next.map_or("the scheduler".to_owned(), |h| h.name.to_string())
    ));
    let s = &policy.schema;
    let mut ops = vec![record_op(policy, obs, &next_rec)];
    if let Some(h) = next {
        ops.push(KvOp::set(
            s.in_use(&h.name),
            format_bool(true),
            h.in_use.modify_index,
        ));
        ops.push(KvOp::set(
            s.serving(&h.name),
            obs.node.as_str(),
            h.serving_index,
        ));
    }
    Some(Decision {
        ops,
        action: Action::Retarget {
            from: from.clone(),
            to: next_rec.ha_node.clone(),
        },
        record: Some(next_rec),
    })
}

fn report(obs: &Observation, rec: &RecoveryRecord) -> IncidentReport {
    IncidentReport {
        incident: rec.incident.clone(),
        node: obs.node.clone(),
        ha_node: rec.ha_node.clone(),
        timeline: rec.timeline.clone(),
        fence: rec.fence.clone(),
        instances: rec
            .instances
            .iter()
            .map(|(id, i)| InstanceOutcome {
                id: id.clone(),
                name: i.name.clone(),
                state: i.state,
                prior_status: i.prior_status.clone(),
                old_host: obs.node.to_string(),
                new_host: i.target.clone().filter(|_| i.state == InstanceState::Done),
                error: i.error.clone(),
                owner: i.owner.clone(),
                project: i.project.clone(),
                storage: i.storage,
            })
            .collect(),
    }
}
