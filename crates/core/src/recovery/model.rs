//! Test support: a model K/V store with Consul's CAS semantics, a model of
//! Nova and the BMC for the failed nodes, and a runner that carries out
//! decisions against them (with injected faults), the way the daemon's
//! runner does against the real peers.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use super::{Action, Decision, Failure, HaNodeObs, NodeFlags, Observation, Policy, Step, decide};
use crate::detect::{Judgement, NodeSignals, NovaService, ResetGrace, Thresholds, judge_with};
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
    /// The Consul signal for detection (`None`: not configured).
    pub consul_failed: Option<bool>,
    /// The TCP signal for detection (`None`: not configured).
    pub tcp_failed: Option<bool>,
    /// The monitor finds its heartbeat stale (`[monitor.nova] stale_after`).
    pub stale: bool,
    /// Nova lists its service (else the node is unknown to Nova).
    pub listed: bool,
}

impl NodeSide {
    fn new(world: World) -> Self {
        Self {
            world,
            results: Results::default(),
            nova_known: true,
            consul_failed: None,
            tcp_failed: None,
            stale: false,
            listed: true,
        }
    }
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
    /// The free HA nodes the cluster started with.
    pub spares: Vec<NodeName>,
    /// Nova answers the monitor (`nova-api unreachable` in scripts clears it).
    pub nova_reachable: bool,
    /// Reads taken ahead of a decision (`read` in scripts): the node's next
    /// decision is taken from it, as a task that read before another wrote.
    pub stashed: BTreeMap<NodeName, (Option<RecoveryRecord>, Observation)>,
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
            spares: ha.iter().map(|a| NodeName::from(*a)).collect(),
            nova_reachable: true,
            stashed: BTreeMap::new(),
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
            h.nodes.insert(node, NodeSide::new(world));
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
        let (record, obs) = self
            .stashed
            .remove(node)
            .unwrap_or_else(|| self.observe(node));
        let d = decide(&self.policy, record.as_ref(), &obs, self.now);
        self.nodes.get_mut(node).expect("node").results = Results::default();
        let committed = self.kv.commit(&d.ops);
        self.trace.push((node.clone(), d.clone()));
        (d, committed)
    }

    /// A compute node Nova reports up and enabled, with no keys yet (the
    /// monitor creates them).
    pub fn add_compute(&mut self, name: &str) {
        let node = NodeName::from(name);
        let mut world = World::new(&node);
        world.service.up = true;
        for a in &self.spares {
            world.ha_services.insert(
                a.clone(),
                NovaService {
                    id: format!("svc-{a}"),
                    up: true,
                    enabled: false,
                    forced_down: false,
                },
            );
        }
        self.nodes.insert(node, NodeSide::new(world));
    }

    /// One detection cycle over every node's model Nova service, at the
    /// harness clock with the policy's reset grace; commits each node's
    /// writes (a conflict drops that node's, as the leader does).
    pub fn detect(&mut self) -> Vec<crate::detect::DetectEvent> {
        self.judge(true).0.events
    }

    /// One detection cycle with every signal of every node (`clock`: with
    /// the harness clock and the reset grace, else unbounded): the
    /// judgement, and the commit outcome of each of its writes, in order.
    pub fn judge(&mut self, clock: bool) -> (Judgement, Vec<Result<(), String>>) {
        let snap = self.kv.snapshot();
        let state = ClusterState::parse(&self.policy.schema, &snap);
        let nova: BTreeMap<NodeName, NodeSignals> = self
            .nodes
            .iter()
            .filter(|(_, side)| side.listed)
            .map(|(n, side)| {
                let signals = NodeSignals {
                    nova: side.world.service.clone(),
                    consul_failed: side.consul_failed,
                    tcp_failed: side.tcp_failed,
                };
                (n.clone(), signals)
            })
            .collect();
        let stale: BTreeSet<NodeName> = self
            .nodes
            .iter()
            .filter(|(_, side)| side.stale)
            .map(|(n, _)| n.clone())
            .collect();
        let grace = ResetGrace {
            now: self.now,
            grace: self.policy.reset.grace,
        };
        let j = judge_with(
            &self.policy.schema,
            &state,
            self.nova_reachable.then_some(&nova),
            &stale,
            &self.thresholds,
            clock.then_some(&grace),
        );
        let committed = j.writes.iter().map(|w| self.kv.commit(&w.ops)).collect();
        (j, committed)
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

/// The first words of the actions' texts: a command whose first word is one
/// of them is a decision step (`> PREFIX`; goldenscript's `>` takes the rest
/// of the line as it is, so the action text may hold any character). No
/// event or check of the language has one of these names.
const ACTION_WORDS: &[&str] = &[
    "idle",
    "claim",
    "fence",
    "check-power",
    "retarget",
    "force-down",
    "list-instances",
    "prepare-target",
    "evacuate",
    "poll",
    "start",
    "notify",
    "finish",
    "restore-service",
    "reset",
    "wait",
    "stuck",
    "stuck:",
    "dry-run:",
];

type CmdResult = Result<String, Box<dyn std::error::Error>>;

/// The scenario language's runner for the `goldenscript` crate (the
/// language is described in scenarios.rs): one harness per `cluster`
/// command, the current node, and each command's output.
#[derive(Default)]
pub struct ScriptRunner {
    h: Option<Harness>,
    current: Option<NodeName>,
}

/// A command's arguments: positional ones in order, then `key=value` ones.
struct Args {
    pos: Vec<String>,
    keys: Vec<(String, String)>,
}

impl Args {
    fn of(cmd: &goldenscript::Command) -> Result<Self, String> {
        let mut a = Self {
            pos: Vec::new(),
            keys: Vec::new(),
        };
        for arg in &cmd.args {
            match arg {
                goldenscript::Argument::Positional(v) => a.pos.push(v.clone()),
                goldenscript::Argument::KeyValue(k, v) => a.keys.push((k.clone(), v.clone())),
                other => return Err(format!("unsupported argument {other}")),
            }
        }
        Ok(a)
    }

    fn at(&self, i: usize) -> Result<&str, String> {
        self.pos
            .get(i)
            .map(String::as_str)
            .ok_or_else(|| format!("argument {} missing", i + 1))
    }

    fn opt(&self, i: usize) -> Option<&str> {
        self.pos.get(i).map(String::as_str)
    }

    fn key(&self, k: &str) -> Option<&str> {
        self.keys
            .iter()
            .rev()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }

    fn all(&self, k: &str) -> Vec<&str> {
        self.keys
            .iter()
            .filter(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn num<T: std::str::FromStr>(&self, i: usize) -> Result<T, String> {
        let a = self.at(i)?;
        a.parse().map_err(|_| format!("not a number: {a}"))
    }
}

/// A key of the tree below the prefix: absolute when it starts with one of
/// the tree's top directories, else relative to the current node.
fn kv_key(schema: &Schema, node: Option<&NodeName>, key: &str) -> Result<String, String> {
    if key.starts_with("compute_nodes/") || key.starts_with("ha_nodes/") || key == "paused" {
        return Ok(format!("{}/{key}", schema.prefix()));
    }
    let node = node.ok_or("a node-relative key needs a current node (`node NAME`)")?;
    Ok(format!("{}/{key}", schema.compute_node(node)))
}

/// A key without the tree's prefix, as the output shows it.
fn short<'a>(schema: &Schema, key: &'a str) -> &'a str {
    key.strip_prefix(schema.prefix())
        .and_then(|k| k.strip_prefix('/'))
        .unwrap_or(key)
}

/// A value as the output shows it: text, quoted when it has spaces or is
/// empty; a JSON object (a record) by its phase.
fn show_value(v: &[u8]) -> String {
    let text = String::from_utf8_lossy(v);
    if let Ok(serde_json::Value::Object(o)) = serde_json::from_str(&text) {
        return match o.get("phase").and_then(|p| p.as_str()) {
            Some(p) => format!("<record phase={p}>"),
            None => "<json>".to_owned(),
        };
    }
    quote(&text)
}

fn quote(text: &str) -> String {
    if text.is_empty() || text.contains([' ', ',', '"']) {
        format!("{text:?}")
    } else {
        text.to_owned()
    }
}

/// One committed (or attempted) op, one line.
fn op_line(schema: &Schema, op: &KvOp) -> String {
    match op {
        KvOp::Set { key, value, cas } => {
            format!(
                "kv: {} = {} (cas {cas})",
                short(schema, key),
                show_value(value)
            )
        }
        KvOp::Delete { key, cas } => format!("kv: delete {} (cas {cas})", short(schema, key)),
    }
}

/// A JSON value flattened to `a.b.c -> scalar` (nulls left out).
fn flatten(v: &serde_json::Value, path: &str, out: &mut BTreeMap<String, String>) {
    match v {
        serde_json::Value::Object(o) => {
            for (k, v) in o {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                flatten(v, &p, out);
            }
        }
        serde_json::Value::Null => {}
        serde_json::Value::String(s) => {
            out.insert(path.to_owned(), quote(s));
        }
        other => {
            out.insert(path.to_owned(), other.to_string());
        }
    }
}

/// The change of the recovery record between two values of its key: one
/// line per object of it (`record`, `record.instances.i1`, ...), each
/// naming the fields that changed (`f a -> b`), appeared (`+f v`) or went
/// (`-f`).
fn record_diff(before: Option<&str>, after: Option<&str>) -> Vec<String> {
    let parse = |v: Option<&str>| -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        if let Some(v) = v.and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok()) {
            flatten(&v, "", &mut out);
        }
        out
    };
    let mut lines = Vec::new();
    match (before, after) {
        (None, None) => return lines,
        (Some(_), None) => return vec!["record: deleted".to_owned()],
        (None, Some(_)) => lines.push("record: created".to_owned()),
        _ => {}
    }
    let (a, b) = (parse(before), parse(after));
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let paths: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for path in paths {
        let (group, field) = match path.rsplit_once('.') {
            Some((g, f)) => (format!("record.{g}"), f),
            None => ("record".to_owned(), path.as_str()),
        };
        let entry = match (a.get(path), b.get(path)) {
            (Some(x), Some(y)) if x == y => continue,
            (Some(x), Some(y)) => format!("{field} {x} -> {y}"),
            (None, Some(y)) => format!("+{field} {y}"),
            (Some(_), None) => format!("-{field}"),
            (None, None) => continue,
        };
        groups.entry(group).or_default().push(entry);
    }
    // The record's own fields first, then its objects in order.
    if let Some(top) = groups.remove("record") {
        lines.push(format!("record: {}", top.join(", ")));
    }
    for (g, entries) in groups {
        lines.push(format!("{g}: {}", entries.join(", ")));
    }
    lines
}

/// One detection event, one line: its name, then its fields.
fn event_line(e: &crate::detect::DetectEvent) -> String {
    let v = serde_json::to_value(e).expect("events serialize");
    let mut line = v["event"].as_str().unwrap_or("?").replace('_', "-");
    if let serde_json::Value::Object(o) = &v {
        for (k, v) in o.iter().filter(|(k, _)| *k != "event") {
            let text = match v {
                serde_json::Value::String(s) => quote(s),
                other => other.to_string(),
            };
            line.push_str(&format!(" {k}={text}"));
        }
    }
    line
}

impl goldenscript::Runner for ScriptRunner {
    type Command = goldenscript::Command;

    fn run(&mut self, cmd: &goldenscript::Command, ctx: &goldenscript::Context) -> CmdResult {
        let args = Args::of(cmd)?;
        let name = cmd.name.as_str();
        if name == "cluster" {
            // cluster [failed=NODE]... [ha=NODE]...
            let failed = args.all("failed");
            let ha = args.all("ha");
            let h = Harness::new(&failed, &ha);
            self.current = failed.first().map(|n| NodeName::from(*n));
            let schema = h.policy.schema.clone();
            let mut out = String::new();
            for (k, v) in &h.kv.snapshot().entries {
                let value = v.value.as_deref().unwrap_or_default();
                out.push_str(&format!("{} = {}\n", short(&schema, k), show_value(value)));
            }
            self.h = Some(h);
            return Ok(out);
        }
        let h = self
            .h
            .as_mut()
            .ok_or("no cluster: a script starts with `cluster`")?;
        let schema = h.policy.schema.clone();
        let first_word = name.split_whitespace().next().unwrap_or_default();
        if ACTION_WORDS.contains(&first_word) {
            let node = self.current.clone().ok_or("no current node")?;
            return decision(h, &node, name, ctx.fail);
        }
        let current = self.current.clone();
        // The current node's side, for events about it.
        macro_rules! side {
            () => {{
                let n = current.as_ref().ok_or("no current node")?;
                h.nodes
                    .get_mut(n)
                    .ok_or_else(|| format!("unknown node {n}"))?
            }};
        }
        let out = String::new();
        match name {
            "compute" => {
                // compute NODE...: nodes Nova reports up, with no keys yet
                for n in &args.pos {
                    h.add_compute(n);
                }
            }
            "node" => {
                let n = NodeName::from(args.at(0)?);
                if !h.nodes.contains_key(&n) {
                    return Err(format!("unknown node {n}").into());
                }
                self.current = Some(n);
            }
            "read" => {
                // the current node reads the tree now; its next decision is
                // taken from this read (a task that read before another wrote)
                let n = current.ok_or("no current node")?;
                let read = h.observe(&n);
                h.stashed.insert(n, read);
            }
            "fenced" => {
                let node = current.clone().ok_or("no current node")?;
                let now = h.now;
                let side = side!();
                side.world.power_off = true;
                side.results.fenced = Fenced::from_observation(node, "ipmi", PowerState::Off, now);
            }
            "power-unknown" => {
                // A fencer never produces evidence from Unknown.
                let node = current.clone().ok_or("no current node")?;
                let now = h.now;
                let side = side!();
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
                let step = match args.at(0)? {
                    "fence" => Step::Fence,
                    "force-down" => Step::ForceDown,
                    "list-instances" => Step::ListInstances,
                    "prepare-target" => Step::PrepareTarget,
                    "notify" => Step::Notify,
                    "restore-service" => Step::RestoreService,
                    other => return Err(format!("unknown step {other}").into()),
                };
                let retryable = args.opt(1) != Some("fatal");
                side!().results.failure = Some((
                    step,
                    Failure {
                        message: format!("{step} failed"),
                        retryable,
                    },
                ));
            }
            "forced-down" => {
                let s = &mut side!().world.service;
                s.forced_down = true;
                s.enabled = false;
            }
            "nova-unknown" => side!().nova_known = false,
            "nova-known" => side!().nova_known = true,
            "nova" => {
                // nova up|down|enabled|disabled|forced-down|listed|
                // unlisted...: the node's service as Nova reports it
                let mut listed = None;
                let side = side!();
                let s = &mut side.world.service;
                for a in &args.pos {
                    match a.as_str() {
                        "up" => s.up = true,
                        "down" => s.up = false,
                        "enabled" => s.enabled = true,
                        "disabled" => s.enabled = false,
                        "forced-down" => s.forced_down = true,
                        "not-forced-down" => s.forced_down = false,
                        "unlisted" => listed = Some(false),
                        "listed" => listed = Some(true),
                        other => return Err(format!("unknown service state {other}").into()),
                    }
                }
                if let Some(l) = listed {
                    side.listed = l;
                }
            }
            "consul" | "tcp" => {
                // consul|tcp failed|healthy|off: the extra signals
                let v = match args.at(0)? {
                    "failed" => Some(true),
                    "healthy" => Some(false),
                    "off" => None,
                    other => return Err(format!("unknown reading {other}").into()),
                };
                let side = side!();
                if name == "consul" {
                    side.consul_failed = v;
                } else {
                    side.tcp_failed = v;
                }
            }
            "stale" => side!().stale = args.at(0)? == "on",
            "nova-api" => h.nova_reachable = args.at(0)? == "reachable",
            "detect" => {
                // detect [clock=off]: one detection cycle
                let clock = args.key("clock") != Some("off");
                let (j, committed) = h.judge(clock);
                let mut out = String::new();
                for e in &j.events {
                    out.push_str(&event_line(e));
                    out.push('\n');
                }
                for (w, c) in j.writes.iter().zip(&committed) {
                    match c {
                        Ok(()) => {
                            for op in &w.ops {
                                out.push_str(&op_line(&schema, op));
                                out.push('\n');
                            }
                        }
                        Err(e) => out.push_str(&format!("kv: {} dropped: {e}\n", w.node)),
                    }
                }
                if j.mass_failure {
                    out.push_str("mass-failure\n");
                }
                return Ok(out);
            }
            "threshold" => h.thresholds.threshold = args.num(0)?,
            "max-failed-fraction" => h.thresholds.max_failed_fraction = args.num(0)?,
            "max-failed-nodes" => {
                h.thresholds.max_failed_nodes = match args.at(0)? {
                    "none" => None,
                    _ => Some(args.num(0)?),
                }
            }
            "reset-grace" => {
                let secs: u64 = args.at(0)?.trim_end_matches('s').parse()?;
                h.policy.reset.grace = Duration::from_secs(secs);
            }
            "ha-enabled" => {
                for s in side!().world.ha_services.values_mut() {
                    s.enabled = true;
                }
            }
            "instance" => {
                // instance <id> <STATUS> [on=<host>] [opt-out]; on="": Nova
                // reports no host for it
                let node = current.clone().ok_or("no current node")?;
                let host = args.key("on").unwrap_or(node.as_str()).to_owned();
                let id = args.at(0)?.to_owned();
                let status = args.at(1)?.to_owned();
                let opt_out = args.opt(2) == Some("opt-out");
                let side = side!();
                side.world.add_instance(&id, &host, &status);
                if opt_out {
                    side.world
                        .instances
                        .get_mut(&id)
                        .expect("just added")
                        .metadata
                        .insert("novaha_opt_out".into(), "true".into());
                }
            }
            "list" => {
                // the result of a listing: every instance of the world model
                let side = side!();
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
                // landed <id> <host> <STATUS>; host "": Nova shows no host (a
                // down cell, a policy hiding the attribute)
                let p = InstanceProgress::Landed {
                    host: args.at(1)?.into(),
                    status: args.at(2)?.into(),
                };
                side!().results.progress.insert(args.at(0)?.into(), p);
            }
            "inflight" => {
                side!()
                    .results
                    .progress
                    .insert(args.at(0)?.into(), InstanceProgress::InFlight);
            }
            "nova-failed" => {
                let p = InstanceProgress::Failed {
                    reason: args.pos[1..].join(" "),
                };
                side!().results.progress.insert(args.at(0)?.into(), p);
            }
            "evacuate-fails" => {
                let f = Failure {
                    message: "nova said no".into(),
                    retryable: args.opt(1) != Some("fatal"),
                };
                side!()
                    .results
                    .evacuate_failures
                    .insert(args.at(0)?.into(), f);
            }
            "start-fails" => {
                let f = Failure {
                    message: "HTTP 409".into(),
                    retryable: false,
                };
                side!().results.start_failures.insert(args.at(0)?.into(), f);
            }
            "notified" => side!().results.notified = true,
            "power" => {
                // power on|off|unknown: the result of a check-power read
                let p = match args.at(0)? {
                    "on" => PowerState::On,
                    "off" => PowerState::Off,
                    _ => PowerState::Unknown,
                };
                side!().results.power = Some(p);
            }
            "powered" => {
                // powered on|off: the node's real power changes (the BMC's
                // power-restore policy, the datacenter team)
                side!().world.power_off = args.at(0)? == "off";
            }
            "progress-fails" => {
                side!().results.progress_errors.insert(args.at(0)?.into());
            }
            "ha" => {
                // ha NAME up|down|forced-down|unknown: the spare as Nova reports it
                let name = NodeName::from(args.at(0)?);
                let state = args.at(1)?.to_owned();
                let side = side!();
                if state == "unknown" {
                    side.world.ha_services.remove(&name);
                } else {
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
            "healthy" => h.healthy = args.at(0)? == "on",
            "not-judged" => h.judged = false,
            "judged" => h.judged = true,
            "pause" => {
                h.paused = (args.at(0)? == "on").then(|| "scripted pause".to_owned());
            }
            "advance" | "rewind" => {
                // advance SECS|MSms; rewind SECS: a controller whose clock
                // runs behind
                let a = args.at(0)?;
                let d = match a.strip_suffix("ms") {
                    Some(ms) => Duration::from_millis(ms.parse()?),
                    None => Duration::from_secs(a.trim_end_matches('s').parse()?),
                };
                if name == "advance" {
                    h.advance(d);
                } else {
                    h.now -= TimeDelta::from_std(d)?;
                }
                return Ok(format!("now {}\n", crate::kv::format_time(h.now)));
            }
            "epoch" => h.epoch = args.at(0)?.into(),
            "drop-results" => side!().results = Results::default(),
            "mass-failure" => h.mass_failure = args.at(0)? == "on",
            "target" => {
                h.policy.target = match args.at(0)? {
                    "ha_node" => super::TargetPolicy::HaNode,
                    "scheduler" => super::TargetPolicy::Scheduler,
                    "ha_node_then_scheduler" => super::TargetPolicy::HaNodeThenScheduler,
                    other => return Err(format!("unknown target policy {other}").into()),
                }
            }
            "concurrency" => h.policy.concurrency = args.num(0)?,
            "restore-power" => h.policy.restore_power_state = true,
            "dry-run" => h.policy.dry_run = args.at(0)? == "on",
            "kv" => {
                // kv KEY VALUE: an operator's write
                let key = kv_key(&schema, current.as_ref(), args.at(0)?)?;
                h.kv.put(&key, args.at(1)?);
            }
            "expect-kv" => {
                // expect-kv KEY VALUE|absent
                let key = kv_key(&schema, current.as_ref(), args.at(0)?)?;
                let want = args.opt(1).filter(|w| *w != "absent");
                let got = h.kv.get(&key);
                if got.as_deref() != want {
                    return Err(format!("{key}: want {want:?}, got {got:?}").into());
                }
            }
            "expect-instance" => {
                // expect-instance <id> <state> [target]
                let n = current.ok_or("no current node")?;
                let rec = h.observe(&n).0.ok_or("no record")?;
                let id = args.at(0)?;
                let i = rec
                    .instances
                    .get(id)
                    .ok_or_else(|| format!("no instance {id}"))?;
                let state = serde_json::to_value(i.state)?;
                if state.as_str() != Some(args.at(1)?) {
                    return Err(format!("{id}: want {}, got {i:?}", args.at(1)?).into());
                }
                if let Some(t) = args.opt(2)
                    && i.target.as_deref() != Some(t)
                {
                    return Err(format!("{id}: want target {t}, got {i:?}").into());
                }
            }
            "expect-phase" => {
                let n = current.ok_or("no current node")?;
                let phase = h
                    .observe(&n)
                    .0
                    .map(|r| serde_json::to_value(r.phase).expect("phase"))
                    .and_then(|v| v.as_str().map(str::to_owned));
                let got = phase.as_deref().unwrap_or("none");
                if got != args.at(0)? {
                    return Err(format!("want phase {}, got {got}", args.at(0)?).into());
                }
            }
            "expect-calls" => {
                // expect-calls <id> <n>: evacuate calls the model Nova saw
                let n: u32 = args.num(1)?;
                let id = args.at(0)?;
                let got = side!().world.evacuate_calls.get(id).copied().unwrap_or(0);
                if got != n {
                    return Err(format!("{id}: want {n} evacuate calls, got {got}").into());
                }
            }
            "expect-incident" => {
                // expect-incident ID PATH VALUE|present|absent: a field of
                // the archived record (PATH as the record lines name it)
                let n = current.ok_or("no current node")?;
                let key = schema.incident(&n, args.at(0)?);
                let text = h.kv.get(&key).ok_or_else(|| format!("no incident {key}"))?;
                let mut fields = BTreeMap::new();
                flatten(&serde_json::from_str(&text)?, "", &mut fields);
                let (path, want) = (args.at(1)?, args.at(2)?);
                let got = fields.get(path);
                let ok = match want {
                    "present" => got.is_some(),
                    "absent" => got.is_none(),
                    w => got.map(String::as_str) == Some(w),
                };
                if !ok {
                    return Err(format!("incident {path}: want {want}, got {got:?}").into());
                }
            }
            "expect-max-in-flight" => {
                // expect-max-in-flight N: no poll of the current node so far
                // tracked more than N instances, and one tracked N
                let n = current.ok_or("no current node")?;
                let want: usize = args.num(0)?;
                let got = h
                    .trace
                    .iter()
                    .filter(|(node, _)| node == &n)
                    .filter_map(|(_, d)| match &d.action {
                        Action::Poll { instances, .. } => Some(instances.len()),
                        _ => None,
                    })
                    .max();
                if got != Some(want) {
                    return Err(format!("want at most {want} in flight, got {got:?}").into());
                }
            }
            "carry" => {
                // the runner carries out the last decision, successfully
                let node = current.ok_or("no current node")?;
                let d = h
                    .trace
                    .iter()
                    .rev()
                    .find(|(n, _)| n == &node)
                    .map(|(_, d)| d.clone())
                    .ok_or("no decision to carry out")?;
                carry_out(h, &node, &d, || Dice::Ok);
            }
            other => return Err(format!("unknown command {other}").into()),
        }
        Ok(out)
    }
}

/// A decision step: decide for `node`, commit, and show the action, the
/// ops and the record's change. An action that does not start with `want`
/// or a commit that conflicts is an error; with goldenscript's `!` (a
/// conflict is expected) the conflict is the output, and a wrong action
/// fails the script all the same.
fn decision(h: &mut Harness, node: &NodeName, want: &str, expect_conflict: bool) -> CmdResult {
    let schema = h.policy.schema.clone();
    let rkey = schema.recovery(node);
    let before = h.kv.get(&rkey);
    let (d, committed) = h.decide(node);
    let got = d.action.to_string();
    if !got.starts_with(want) {
        let msg = format!("want: {want}\ngot:  {got}\n");
        // An Ok under `!` fails the script: the wrong action is never the
        // expected failure.
        return if expect_conflict {
            Ok(msg)
        } else {
            Err(msg.into())
        };
    }
    if let Err(e) = committed {
        return Err(format!("{got}: the commit conflicts ({e}), nothing written").into());
    }
    let mut out = format!("{got}\n");
    for op in &d.ops {
        out.push_str(&op_line(&schema, op));
        out.push('\n');
    }
    for line in record_diff(before.as_deref(), h.kv.get(&rkey).as_deref()) {
        out.push_str(&line);
        out.push('\n');
    }
    Ok(out)
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

/// Runs the golden script `testdata/DIR/NAME` of this crate with a fresh
/// [`ScriptRunner`]; panics on a difference (or rewrites the file with
/// `UPDATE_GOLDENFILES=1`) and on a failed command.
pub fn run_golden(dir: &str, name: &str) {
    let path = format!("{}/testdata/{dir}/{name}", env!("CARGO_MANIFEST_DIR"));
    if let Err(e) = goldenscript::run(&mut ScriptRunner::default(), &path) {
        panic!("{path}: {e}");
    }
}

/// Fails unless the files of `testdata/DIR` are exactly `names`: a script
/// without its test would never run.
pub fn assert_listed(dir: &str, names: &[&str]) {
    let path = format!("{}/testdata/{dir}", env!("CARGO_MANIFEST_DIR"));
    let files: BTreeSet<String> = std::fs::read_dir(&path)
        .expect("testdata directory")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    let listed: BTreeSet<String> = names.iter().map(|n| (*n).to_owned()).collect();
    assert_eq!(files, listed, "{path}: every script has its test");
}

/// One `#[test]` per golden script of `testdata/DIR`, named after its
/// file, and a test that every file of the directory is listed.
macro_rules! run_scripts {
    ($dir:literal: $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                $crate::recovery::model::run_golden($dir, stringify!($name));
            }
        )*

        #[test]
        fn every_script_has_its_test() {
            $crate::recovery::model::assert_listed($dir, &[$(stringify!($name)),*]);
        }
    };
}
pub(crate) use run_scripts;
