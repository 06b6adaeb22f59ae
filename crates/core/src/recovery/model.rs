//! Test support: a model K/V store with Consul's CAS semantics, a model of
//! Nova and the BMC for the failed nodes, and a runner that carries out
//! decisions against them (with injected faults), the way the daemon's
//! runner does against the real peers.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use super::{Action, Decision, Failure, HaNodeObs, NodeFlags, Observation, Policy, Step, decide};
use crate::detect::{NodeSignals, NovaService, ResetGrace, Thresholds, judge_at};
use crate::drivers::{Fenced, Instance, InstanceProgress};
use crate::kv::{ClusterState, KvEntry, Schema, Snapshot, format_bool};
use crate::record::RecoveryRecord;
use crate::store::KvOp;
use crate::types::{NodeName, PowerState};

/// A K/V store with Consul's transaction semantics: all ops or none, every
/// op checked against its CAS index (0 = must not exist).
#[derive(Clone, Debug, Default)]
pub struct Kv {
    entries: BTreeMap<String, (Vec<u8>, u64)>,
    index: u64,
    /// Every op that landed, in order.
    pub log: Vec<KvOp>,
}

impl Kv {
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            index: self.index,
            entries: self
                .entries
                .iter()
                .map(|(k, (v, i))| {
                    (
                        k.clone(),
                        KvEntry {
                            value: Some(v.clone()),
                            modify_index: *i,
                        },
                    )
                })
                .collect(),
        }
    }

    /// An unconditional write (an administrator, the seed).
    pub fn put(&mut self, key: &str, value: &str) {
        self.index += 1;
        self.entries
            .insert(key.to_owned(), (value.as_bytes().to_vec(), self.index));
    }

    pub fn get(&self, key: &str) -> Option<String> {
        self.entries
            .get(key)
            .map(|(v, _)| String::from_utf8_lossy(v).into_owned())
    }

    /// Applies `ops` atomically, or nothing on the first CAS mismatch.
    pub fn commit(&mut self, ops: &[KvOp]) -> Result<(), String> {
        for op in ops {
            let current = self.entries.get(op.key()).map_or(0, |(_, i)| *i);
            let cas = match op {
                KvOp::Set { cas, .. } | KvOp::Delete { cas, .. } => *cas,
            };
            let ok = match op {
                KvOp::Set { .. } => current == cas,
                KvOp::Delete { .. } => current == cas || current == 0,
            };
            if !ok {
                return Err(format!("conflict on {}", op.key()));
            }
        }
        for op in ops {
            self.index += 1;
            match op {
                KvOp::Set { key, value, .. } => {
                    self.entries
                        .insert(key.clone(), (value.clone(), self.index));
                }
                KvOp::Delete { key, .. } => {
                    self.entries.remove(key);
                }
            }
            self.log.push(op.clone());
        }
        Ok(())
    }
}

/// One instance in the model Nova.
#[derive(Clone, Debug)]
pub struct WorldInstance {
    pub host: String,
    pub status: String,
    pub metadata: BTreeMap<String, String>,
    /// Evacuate calls Nova accepted for it.
    pub evacuations: u32,
    /// Polls left before an accepted evacuation lands.
    pub landing_in: Option<u32>,
    pub landing_on: String,
}

/// Nova and the BMC, as seen by one failed node's recovery.
#[derive(Clone, Debug)]
pub struct World {
    pub service: NovaService,
    pub ha_services: BTreeMap<NodeName, NovaService>,
    pub instances: BTreeMap<String, WorldInstance>,
    pub power_off: bool,
    /// Power reads answer Unknown (a BMC that times out).
    pub power_unreadable: bool,
    /// Evacuate calls made for each instance (accepted or not).
    pub evacuate_calls: BTreeMap<String, u32>,
    /// Evacuate orders seen while the power was not verified off.
    pub unfenced_evacuations: u32,
    pub lands_shutoff: bool,
    pub notified: u32,
}

impl World {
    pub fn new(node: &NodeName) -> Self {
        Self {
            service: NovaService {
                id: format!("svc-{node}"),
                up: false,
                enabled: true,
                forced_down: false,
            },
            ha_services: BTreeMap::new(),
            instances: BTreeMap::new(),
            power_off: false,
            power_unreadable: false,
            evacuate_calls: BTreeMap::new(),
            unfenced_evacuations: 0,
            lands_shutoff: false,
            notified: 0,
        }
    }

    pub fn add_instance(&mut self, id: &str, host: &str, status: &str) {
        self.instances.insert(
            id.to_owned(),
            WorldInstance {
                host: host.to_owned(),
                status: status.to_owned(),
                metadata: BTreeMap::new(),
                evacuations: 0,
                landing_in: None,
                landing_on: String::new(),
            },
        );
    }

    fn progress(&mut self, id: &str) -> InstanceProgress {
        let Some(i) = self.instances.get_mut(id) else {
            return InstanceProgress::Failed {
                reason: "instance not found".into(),
            };
        };
        match i.landing_in {
            Some(0) => {
                i.landing_in = None;
                i.host = i.landing_on.clone();
                if self.lands_shutoff {
                    i.status = "SHUTOFF".into();
                }
                InstanceProgress::Landed {
                    host: i.host.clone(),
                    status: i.status.clone(),
                }
            }
            Some(n) => {
                i.landing_in = Some(n - 1);
                InstanceProgress::InFlight
            }
            None => InstanceProgress::Landed {
                host: i.host.clone(),
                status: i.status.clone(),
            },
        }
    }
}

/// The results of the last action, fed into the next observation.
#[derive(Clone, Debug, Default)]
pub struct Results {
    pub fenced: Option<Fenced>,
    pub instances: Option<Vec<Instance>>,
    pub progress: BTreeMap<String, InstanceProgress>,
    pub progress_errors: std::collections::BTreeSet<String>,
    pub power: Option<PowerState>,
    pub evacuate_failures: BTreeMap<String, Failure>,
    pub start_failures: BTreeMap<String, Failure>,
    pub failure: Option<(Step, Failure)>,
    pub notified: bool,
}

/// A failed node's side of the harness.
#[derive(Clone, Debug)]
pub struct NodeSide {
    pub world: World,
    pub results: Results,
    /// The runner's view of the node's service (None = not read).
    pub nova_known: bool,
}

/// The harness: shared K/V, policy, clock, leader epoch, and one side per
/// failed node.
pub struct Harness {
    pub policy: Policy,
    pub kv: Kv,
    pub now: DateTime<Utc>,
    pub epoch: String,
    pub nodes: BTreeMap<NodeName, NodeSide>,
    pub mass_failure: bool,
    /// Every decision taken, with its node, for properties.
    pub trace: Vec<(NodeName, Decision)>,
    /// The detection's thresholds (`detect` in scripts).
    pub thresholds: Thresholds,
    /// The leader has judged the cluster (`not-judged` in scripts clears it).
    pub judged: bool,
    /// The cluster's pause reason (`pause on|off` in scripts).
    pub paused: Option<String>,
    /// The monitor reads the node healthy (`healthy on|off` in scripts).
    pub healthy: bool,
}

pub fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-21T03:00:00Z")
        .expect("valid timestamp")
        .with_timezone(&Utc)
}

impl Harness {
    /// A cluster with `failed` nodes already judged failed and `ha` free HA
    /// nodes (disabled in Nova).
    pub fn new(failed: &[&str], ha: &[&str]) -> Self {
        let policy = Policy {
            schema: Schema::new("t"),
            ..Policy::default()
        };
        let mut h = Self {
            policy,
            kv: Kv::default(),
            now: t0(),
            epoch: "e1".into(),
            nodes: BTreeMap::new(),
            mass_failure: false,
            trace: Vec::new(),
            thresholds: Thresholds {
                threshold: 1,
                ..Thresholds::default()
            },
            judged: true,
            paused: None,
            healthy: false,
        };
        for n in failed {
            let node = NodeName::from(*n);
            let s = h.policy.schema.clone();
            h.kv.put(&s.failed(&node), "True");
            h.kv.put(&s.recovered(&node), "False");
            h.kv.put(&s.number_fails(&node), "4");
            let mut world = World::new(&node);
            for a in ha {
                world.ha_services.insert(
                    NodeName::from(*a),
                    NovaService {
                        id: format!("svc-{a}"),
                        up: true,
                        enabled: false,
                        forced_down: false,
                    },
                );
            }
            h.nodes.insert(
                node,
                NodeSide {
                    world,
                    results: Results::default(),
                    nova_known: true,
                },
            );
        }
        for a in ha {
            let s = h.policy.schema.clone();
            h.kv.put(&s.in_use(&NodeName::from(*a)), "False");
        }
        h
    }

    pub fn side(&mut self, n: &str) -> &mut NodeSide {
        self.nodes
            .get_mut(&NodeName::from(n))
            .expect("node in harness")
    }

    /// Reads the tree and builds the node's observation (consuming nothing).
    pub fn observe(&self, node: &NodeName) -> (Option<RecoveryRecord>, Observation) {
        let snap = self.kv.snapshot();
        let state = ClusterState::parse(&self.policy.schema, &snap);
        let cn = state.compute_nodes.get(node).expect("failed node has keys");
        let record = cn.recovery.value.clone().ok().flatten();
        let side = &self.nodes[node];
        let mut obs = Observation::new(
            node.clone(),
            self.epoch.clone(),
            NodeFlags::from_state(cn, self.now),
        );
        obs.ha_nodes = HaNodeObs::all(&self.policy.schema, &snap, &state);
        for h in &mut obs.ha_nodes {
            h.service = side.world.ha_services.get(&h.name).cloned();
        }
        obs.mass_failure = self.mass_failure;
        obs.judged = self.judged;
        obs.paused = self.paused.clone();
        obs.node_healthy = self.healthy;
        obs.nova_service = side.nova_known.then(|| side.world.service.clone());
        obs.ha_service = record
            .as_ref()
            .and_then(|r| r.ha_node.as_ref())
            .and_then(|ha| side.world.ha_services.get(ha).cloned());
        let r = side.results.clone();
        obs.fenced = r.fenced;
        obs.instances = r.instances;
        obs.progress = r.progress;
        obs.progress_errors = r.progress_errors;
        obs.power = r.power;
        obs.evacuate_failures = r.evacuate_failures;
        obs.start_failures = r.start_failures;
        obs.failure = r.failure;
        obs.notified = r.notified;
        (record, obs)
    }

    /// Decides for `node` and commits the ops; the results are consumed.
    pub fn decide(&mut self, node: &NodeName) -> (Decision, Result<(), String>) {
        let (record, obs) = self.observe(node);
        let d = decide(&self.policy, record.as_ref(), &obs, self.now);
        self.nodes.get_mut(node).expect("node").results = Results::default();
        let committed = self.kv.commit(&d.ops);
        self.trace.push((node.clone(), d.clone()));
        (d, committed)
    }

    /// One detection cycle over every node's model Nova service, at the
    /// harness clock with the policy's reset grace; commits each node's
    /// writes (a conflict drops that node's, as the leader does).
    pub fn detect(&mut self) -> Vec<crate::detect::DetectEvent> {
        let snap = self.kv.snapshot();
        let state = ClusterState::parse(&self.policy.schema, &snap);
        let nova: BTreeMap<NodeName, NodeSignals> = self
            .nodes
            .iter()
            .map(|(n, side)| {
                let signals = NodeSignals {
                    nova: side.world.service.clone(),
                    consul_failed: None,
                    tcp_failed: None,
                };
                (n.clone(), signals)
            })
            .collect();
        let clock = ResetGrace {
            now: self.now,
            grace: self.policy.reset.grace,
        };
        let j = judge_at(
            &self.policy.schema,
            &state,
            Some(&nova),
            &self.thresholds,
            Some(&clock),
        );
        for w in &j.writes {
            let _ = self.kv.commit(&w.ops);
        }
        j.events
    }

    pub fn advance(&mut self, d: Duration) {
        self.now += TimeDelta::from_std(d).expect("small duration");
    }
}

/// Outcome choices for a runner step; the property tests draw them.
#[derive(Clone, Copy, Debug)]
pub enum Dice {
    Ok,
    Fail,
    FailFatal,
}

/// Carries out a committed decision against the model, the way the daemon's
/// runner would. `dice` picks the outcome of each call.
pub fn carry_out(h: &mut Harness, node: &NodeName, d: &Decision, mut dice: impl FnMut() -> Dice) {
    let now = h.now;
    let side = h.nodes.get_mut(node).expect("node");
    let w = &mut side.world;
    let r = &mut side.results;
    let fail = |step: Step, retryable: bool| {
        Some((
            step,
            Failure {
                message: format!("{step} failed (injected)"),
                retryable,
            },
        ))
    };
    match &d.action {
        Action::Fence => match dice() {
            Dice::Ok => {
                w.power_off = true;
                r.fenced = Fenced::from_observation(node.clone(), "model", PowerState::Off, now);
            }
            Dice::Fail => r.failure = fail(Step::Fence, true),
            Dice::FailFatal => r.failure = fail(Step::Fence, false),
        },
        Action::CheckPower => {
            r.power = Some(if w.power_unreadable {
                PowerState::Unknown
            } else if w.power_off {
                PowerState::Off
            } else {
                PowerState::On
            });
        }
        Action::ForceDown { .. } => match dice() {
            Dice::Ok => {
                w.service.forced_down = true;
                w.service.enabled = false;
            }
            Dice::Fail => r.failure = fail(Step::ForceDown, true),
            Dice::FailFatal => r.failure = fail(Step::ForceDown, false),
        },
        Action::ListInstances => match dice() {
            Dice::Ok => {
                r.instances = Some(
                    w.instances
                        .iter()
                        .filter(|(_, i)| i.host == node.as_str())
                        .map(|(id, i)| Instance {
                            id: id.clone(),
                            name: format!("vm-{id}"),
                            status: i.status.clone(),
                            host: i.host.clone(),
                            user_id: "u1".into(),
                            project_id: "p1".into(),
                            metadata: i.metadata.clone(),
                            // Safe to move: the model is about the safety
                            // rules, not storage (see crate::storage).
                            boot_from_volume: true,
                            resources: None,
                        })
                        .collect(),
                )
            }
            _ => r.failure = fail(Step::ListInstances, true),
        },
        Action::PrepareTarget { ha_node, .. } => match dice() {
            Dice::Ok => {
                if let Some(s) = w.ha_services.get_mut(ha_node) {
                    s.enabled = true;
                }
            }
            _ => r.failure = fail(Step::PrepareTarget, true),
        },
        Action::Evacuate(order) => {
            if !w.power_off || order.fenced().node() != node {
                w.unfenced_evacuations += 1;
            }
            let target = order
                .target
                .as_ref()
                .map_or("sched-host".to_owned(), |t| t.to_string());
            for inst in &order.instances {
                *w.evacuate_calls.entry(inst.id.clone()).or_default() += 1;
                let outcome = dice();
                let accepted = !matches!(outcome, Dice::FailFatal);
                if let Some(i) = w.instances.get_mut(&inst.id)
                    && accepted
                {
                    i.evacuations += 1;
                    i.landing_in = Some(1);
                    i.landing_on = target.clone();
                }
                match outcome {
                    Dice::Ok => {}
                    // Unknown outcome: the call may have landed (it did here).
                    Dice::Fail => {
                        r.evacuate_failures.insert(
                            inst.id.clone(),
                            Failure {
                                message: "timeout".into(),
                                retryable: true,
                            },
                        );
                    }
                    Dice::FailFatal => {
                        r.evacuate_failures.insert(
                            inst.id.clone(),
                            Failure {
                                message: "HTTP 409".into(),
                                retryable: false,
                            },
                        );
                    }
                }
            }
        }
        Action::Poll { instances, after } => {
            let after = *after;
            for id in instances {
                let p = w.progress(id);
                r.progress.insert(id.clone(), p);
            }
            h.advance(after);
        }
        Action::RestorePowerState { instances } => {
            for id in instances {
                match dice() {
                    Dice::Ok => {
                        if let Some(i) = w.instances.get_mut(id) {
                            i.status = "ACTIVE".into();
                        }
                    }
                    _ => {
                        r.start_failures.insert(
                            id.clone(),
                            Failure {
                                message: "HTTP 409".into(),
                                retryable: false,
                            },
                        );
                    }
                }
            }
        }
        Action::Notify(_) => match dice() {
            Dice::Ok => {
                w.notified += 1;
                r.notified = true;
            }
            _ => r.failure = fail(Step::Notify, true),
        },
        Action::RestoreService {
            unforce, enable, ..
        } => {
            if *unforce {
                w.service.forced_down = false;
            }
            if *enable {
                w.service.enabled = true;
            }
        }
        Action::Wait { retry_after, .. } => {
            let d = (*retry_after).max(Duration::from_secs(1));
            h.advance(d);
        }
        Action::Idle
        | Action::Claim { .. }
        | Action::Retarget { .. }
        | Action::Finish { .. }
        | Action::Reset { .. }
        | Action::Stuck { .. }
        | Action::DryRun(_) => {}
    }
}

/// Runs one script of the scenario language against a harness and returns
/// nothing; panics with the line on the first mismatch. See scenarios.rs.
pub fn run_script(h: &mut Harness, script: &str) {
    let mut current = NodeName::from(h.nodes.keys().next().expect("at least one node").as_str());
    for (no, raw) in script.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let ctx = format!("script line {}: {line:?}", no + 1);
        let (cmd, rest) = line.split_once(' ').unwrap_or((line, ""));
        let args: Vec<&str> = rest.split_whitespace().collect();
        let schema = h.policy.schema.clone();
        match cmd {
            "node" => current = NodeName::from(args[0]),
            ">" => {
                let (d, committed) = h.decide(&current);
                let got = d.action.to_string();
                let want = rest.trim();
                assert!(
                    got.starts_with(want),
                    "{ctx}\n  want: {want}\n  got:  {got}"
                );
                assert!(committed.is_ok(), "{ctx}: commit failed: {committed:?}");
            }
            ">!" => {
                let (d, committed) = h.decide(&current);
                assert!(committed.is_err(), "{ctx}: commit should conflict: {d:?}");
            }
            "fenced" => {
                let node = current.clone();
                let now = h.now;
                let side = h.side(current.as_str());
                side.world.power_off = true;
                side.results.fenced = Fenced::from_observation(node, "ipmi", PowerState::Off, now);
            }
            "power-unknown" => {
                // A fencer never produces evidence from Unknown.
                let node = current.clone();
                let now = h.now;
                let side = h.side(current.as_str());
                side.results.fenced =
                    Fenced::from_observation(node, "ipmi", PowerState::Unknown, now);
                side.results.failure = Some((
                    Step::Fence,
                    Failure {
                        message: "power not confirmed off (last read: unknown)".into(),
                        retryable: true,
                    },
                ));
            }
            "fail" => {
                let step = match args[0] {
                    "fence" => Step::Fence,
                    "force-down" => Step::ForceDown,
                    "list-instances" => Step::ListInstances,
                    "prepare-target" => Step::PrepareTarget,
                    "notify" => Step::Notify,
                    "restore-service" => Step::RestoreService,
                    other => panic!("{ctx}: unknown step {other}"),
                };
                let retryable = args.get(1) != Some(&"fatal");
                h.side(current.as_str()).results.failure = Some((
                    step,
                    Failure {
                        message: format!("{step} failed"),
                        retryable,
                    },
                ));
            }
            "forced-down" => {
                let s = &mut h.side(current.as_str()).world.service;
                s.forced_down = true;
                s.enabled = false;
            }
            "nova-unknown" => h.side(current.as_str()).nova_known = false,
            "nova-known" => h.side(current.as_str()).nova_known = true,
            "nova" => {
                // nova up|down: the node's heartbeat as Nova reports it
                h.side(current.as_str()).world.service.up = args[0] == "up";
            }
            "detect" => {
                h.detect();
            }
            "threshold" => h.thresholds.threshold = args[0].parse().expect("number"),
            "reset-grace" => {
                let secs: u64 = args[0].trim_end_matches('s').parse().expect("seconds");
                h.policy.reset.grace = Duration::from_secs(secs);
            }
            "ha-enabled" => {
                for s in h.side(current.as_str()).world.ha_services.values_mut() {
                    s.enabled = true;
                }
            }
            "instance" => {
                // instance <id> <STATUS> [on=<host>] [opt-out]
                let node = current.clone();
                let host = args
                    .iter()
                    .find_map(|a| a.strip_prefix("on="))
                    .unwrap_or(node.as_str())
                    .to_owned();
                // on=-: Nova reports no host for it
                let host = if host == "-" { String::new() } else { host };
                let side = h.side(current.as_str());
                side.world.add_instance(args[0], &host, args[1]);
                if args.contains(&"opt-out") {
                    side.world
                        .instances
                        .get_mut(args[0])
                        .expect("just added")
                        .metadata
                        .insert("novaha_opt_out".into(), "true".into());
                }
            }
            "list" => {
                // the result of a listing: every instance of the world model
                let side = h.side(current.as_str());
                side.results.instances = Some(
                    side.world
                        .instances
                        .iter()
                        .map(|(id, i)| Instance {
                            id: id.clone(),
                            name: format!("vm-{id}"),
                            status: i.status.clone(),
                            host: i.host.clone(),
                            user_id: "u1".into(),
                            project_id: "p1".into(),
                            metadata: i.metadata.clone(),
                            // Safe to move: the model is about the safety
                            // rules, not storage (see crate::storage).
                            boot_from_volume: true,
                            resources: None,
                        })
                        .collect(),
                );
            }
            "landed" => {
                // landed <id> <host> <STATUS>
                h.side(current.as_str()).results.progress.insert(
                    args[0].into(),
                    InstanceProgress::Landed {
                        // `-`: Nova shows no host (a down cell, a policy
                        // hiding the attribute)
                        host: if args[1] == "-" {
                            String::new()
                        } else {
                            args[1].into()
                        },
                        status: args[2].into(),
                    },
                );
            }
            "inflight" => {
                h.side(current.as_str())
                    .results
                    .progress
                    .insert(args[0].into(), InstanceProgress::InFlight);
            }
            "nova-failed" => {
                h.side(current.as_str()).results.progress.insert(
                    args[0].into(),
                    InstanceProgress::Failed {
                        reason: args[1..].join(" "),
                    },
                );
            }
            "evacuate-fails" => {
                h.side(current.as_str()).results.evacuate_failures.insert(
                    args[0].into(),
                    Failure {
                        message: "nova said no".into(),
                        retryable: args.get(1) != Some(&"fatal"),
                    },
                );
            }
            "start-fails" => {
                h.side(current.as_str()).results.start_failures.insert(
                    args[0].into(),
                    Failure {
                        message: "HTTP 409".into(),
                        retryable: false,
                    },
                );
            }
            "notified" => h.side(current.as_str()).results.notified = true,
            "power" => {
                // power on|off|unknown: the result of a check-power read
                let p = match args[0] {
                    "on" => PowerState::On,
                    "off" => PowerState::Off,
                    _ => PowerState::Unknown,
                };
                h.side(current.as_str()).results.power = Some(p);
            }
            "powered" => {
                // powered on|off: the node's real power changes (the BMC's
                // power-restore policy, the datacenter team)
                h.side(current.as_str()).world.power_off = args[0] == "off";
            }
            "progress-fails" => {
                h.side(current.as_str())
                    .results
                    .progress_errors
                    .insert(args[0].into());
            }
            "ha" => {
                // ha NAME up|down|forced-down|unknown: the spare as Nova reports it
                let name = NodeName::from(args[0]);
                let side = h.side(current.as_str());
                match args[1] {
                    "unknown" => {
                        side.world.ha_services.remove(&name);
                    }
                    state => {
                        let s = side
                            .world
                            .ha_services
                            .entry(name.clone())
                            .or_insert_with(|| NovaService {
                                id: format!("svc-{name}"),
                                up: true,
                                enabled: false,
                                forced_down: false,
                            });
                        s.up = state == "up";
                        s.forced_down = state == "forced-down";
                    }
                }
            }
            "healthy" => h.healthy = args[0] == "on",
            "not-judged" => h.judged = false,
            "judged" => h.judged = true,
            "pause" => {
                h.paused = (args[0] == "on").then(|| "scripted pause".to_owned());
            }
            "advance" => {
                // advance SECS, or a negative SECS: a controller whose
                // clock runs behind; `advance MSms` for milliseconds
                if let Some(ms) = args[0].strip_suffix("ms") {
                    h.advance(Duration::from_millis(ms.parse().expect("milliseconds")));
                    continue;
                }
                let secs: i64 = args[0].trim_end_matches('s').parse().expect("seconds");
                if secs >= 0 {
                    h.advance(Duration::from_secs(secs.unsigned_abs()));
                } else {
                    h.now -= TimeDelta::seconds(-secs);
                }
            }
            "epoch" => h.epoch = args[0].into(),
            "drop-results" => h.side(current.as_str()).results = Results::default(),
            "mass-failure" => h.mass_failure = args[0] == "on",
            "target" => {
                h.policy.target = match args[0] {
                    "ha_node" => super::TargetPolicy::HaNode,
                    "scheduler" => super::TargetPolicy::Scheduler,
                    _ => super::TargetPolicy::HaNodeThenScheduler,
                }
            }
            "concurrency" => h.policy.concurrency = args[0].parse().expect("number"),
            "restore-power" => h.policy.restore_power_state = true,
            "dry-run" => h.policy.dry_run = args[0] == "on",
            "kv" => {
                // kv <node-relative key | /absolute> <value>
                let key = kv_key(&schema, &current, args[0]);
                h.kv.put(&key, args[1]);
            }
            "expect-kv" => {
                let key = kv_key(&schema, &current, args[0]);
                let want = args.get(1).copied();
                let got = h.kv.get(&key);
                assert_eq!(got.as_deref(), want.filter(|w| *w != "absent"), "{ctx}");
            }
            "expect-instance" => {
                // expect-instance <id> <state> [target]
                let rec = h.observe(&current).0.expect("a record");
                let i = &rec.instances[args[0]];
                let state = serde_json::to_value(i.state).expect("state");
                assert_eq!(state.as_str(), Some(args[1]), "{ctx}: {i:?}");
                if let Some(t) = args.get(2) {
                    assert_eq!(i.target.as_deref(), Some(*t), "{ctx}");
                }
            }
            "expect-phase" => {
                let rec = h.observe(&current).0;
                let phase = rec
                    .map(|r| serde_json::to_value(r.phase).expect("phase"))
                    .and_then(|v| v.as_str().map(str::to_owned));
                assert_eq!(phase.as_deref().unwrap_or("none"), args[0], "{ctx}");
            }
            "expect-calls" => {
                // expect-calls <id> <n>: evacuate calls the model Nova saw
                let n: u32 = args[1].parse().expect("count");
                let side = h.side(current.as_str());
                let got = side.world.evacuate_calls.get(args[0]).copied().unwrap_or(0);
                assert_eq!(got, n, "{ctx}");
            }
            "carry" => {
                // the runner carries out the last decision, successfully
                let node = current.clone();
                let d = h
                    .trace
                    .iter()
                    .rev()
                    .find(|(n, _)| n == &node)
                    .map(|(_, d)| d.clone());
                let d = d.expect("a decision");
                carry_out(h, &node, &d, || Dice::Ok);
            }
            other => panic!("{ctx}: unknown command {other}"),
        }
    }
}

fn kv_key(schema: &Schema, node: &NodeName, rel: &str) -> String {
    match rel.strip_prefix('/') {
        Some(abs) => format!("{}/{abs}", schema.prefix()),
        None => format!("{}/{rel}", schema.compute_node(node)),
    }
}

/// True when `op` writes `failed` or `recovered` as False.
pub fn writes_false_flag(op: &KvOp) -> bool {
    match op {
        KvOp::Set { key, value, .. } => {
            (key.ends_with("/status/failed") || key.ends_with("/status/recovered"))
                && value.as_slice() == format_bool(false).as_bytes()
        }
        KvOp::Delete { key, .. } => {
            key.ends_with("/status/failed") || key.ends_with("/status/recovered")
        }
    }
}
