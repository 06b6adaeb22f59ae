//! The narration: what changed in the K/V tree and in the simulated cloud
//! since the last look, as lines of the story. It reads only what anyone
//! can read from outside the daemons (the K/V tree, the simulator).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use novaha_core::NodeName;
use novaha_core::kv::ClusterState;
use novaha_core::record::{InstanceState, Phase};
use novaha_sim::SimHandle;

use crate::SERVICE_DOWN_TIME;

/// What the narration has already told about the recovery, to print only
/// what changed. Fed from the K/V tree ([`Story::kv`]) and the simulator
/// ([`Story::sim`]).
#[derive(Debug)]
pub struct Story {
    node: NodeName,
    threshold: u32,
    /// Instance id -> name, for the instances on the node when it died.
    names: BTreeMap<String, String>,
    fails: BTreeMap<NodeName, u32>,
    failed: bool,
    recovered: bool,
    phase: Option<Phase>,
    in_use: BTreeMap<NodeName, bool>,
    instances: BTreeMap<String, InstanceState>,
    nova_down: bool,
    forced_down: bool,
    ha_enabled: bool,
    evacuate_calls: usize,
    landed: BTreeSet<String>,
}

impl Story {
    /// A story about `node`, whose instances at failure time are `names`
    /// (id -> name); `ha_enabled` is the HA node's Nova state at the start.
    pub fn new(
        node: &str,
        threshold: u32,
        names: BTreeMap<String, String>,
        ha_enabled: bool,
    ) -> Self {
        Self {
            node: NodeName::new(node),
            threshold,
            names,
            fails: BTreeMap::new(),
            failed: false,
            recovered: false,
            phase: None,
            in_use: BTreeMap::new(),
            instances: BTreeMap::new(),
            nova_down: false,
            forced_down: false,
            ha_enabled,
            evacuate_calls: 0,
            landed: BTreeSet::new(),
        }
    }

    fn name(&self, id: &str) -> String {
        self.names.get(id).map_or_else(
            || id.to_owned(),
            |n| format!("{n} ({})", &id[..id.len().min(8)]),
        )
    }

    /// The phase reached so far.
    pub fn phase(&self) -> Option<Phase> {
        self.phase
    }

    /// What changed in the K/V tree since the last call, as story lines.
    pub fn kv(&mut self, state: &ClusterState) -> Vec<String> {
        let mut out = Vec::new();
        for (name, n) in &state.compute_nodes {
            let fails = n.number_fails.get().unwrap_or(0);
            let before = self.fails.insert(name.clone(), fails).unwrap_or(0);
            if fails != before && (fails > 0 || name == &self.node) {
                out.push(format!(
                    "consul: {name} number_fails = {fails} (failed when > threshold {})",
                    self.threshold
                ));
            }
            if let Err(bad) = &n.recovery.value {
                out.push(format!(
                    "consul: {name} has an invalid value at {}: {}",
                    bad.key, bad.reason
                ));
            }
        }
        for (name, h) in &state.ha_nodes {
            let in_use = h.in_use.get().unwrap_or(false);
            if self.in_use.insert(name.clone(), in_use) != Some(in_use) && in_use {
                let serving = h.serving.as_ref().map_or("?", |s| s.as_str());
                out.push(format!(
                    "consul: HA node {name} in_use = True (serving {serving})"
                ));
            }
        }
        let Some(n) = state.compute_nodes.get(&self.node) else {
            return out;
        };
        if !self.failed && n.failed.get() == Some(true) {
            self.failed = true;
            out.push(format!("consul: {} failed = True: judged dead", self.node));
        }
        if !self.recovered && n.recovered.get() == Some(true) {
            self.recovered = true;
            out.push(format!(
                "consul: {} recovered = True: the latch, no second recovery will start",
                self.node
            ));
        }
        let Ok(Some(rec)) = &n.recovery.value else {
            return out;
        };
        let ha = rec
            .ha_node
            .as_ref()
            .map_or("the scheduler's choice", |h| h.as_str());
        let reached = rec.phase;
        let from = self.phase;
        let steps = [
            Phase::Claimed,
            Phase::Fenced,
            Phase::ForcedDown,
            Phase::Evacuating,
            Phase::Evacuated,
            Phase::Notified,
            Phase::Done,
        ];
        // Phase lines up to `evacuating`, then the instances, then the rest.
        let mut later = Vec::new();
        for step in steps {
            if from.is_some_and(|f| f >= step) || (reached != Phase::Stuck && step > reached) {
                continue;
            }
            if reached == Phase::Stuck && rec.timeline.keys().all(|k| k != phase_key(step)) {
                continue;
            }
            let line = match step {
                Phase::Claimed => format!(
                    "phase claimed: HA node {ha} taken for {} (incident {})",
                    self.node, rec.incident
                ),
                Phase::Fenced => match rec.fence.as_ref().map(|f| f.driver.as_str()) {
                    Some("noop") | None => {
                        "phase fenced: by the NOOP driver: nothing was powered off \
                         (demo only, allowed by allow_noop = true; production fences \
                         through IPMI, Redfish or libvirt and verifies power off)"
                            .to_owned()
                    }
                    Some(d) => format!("phase fenced: {d} verified the power is off"),
                },
                Phase::ForcedDown => format!(
                    "phase forced_down: nova-compute on {} forced down and disabled",
                    self.node
                ),
                Phase::Evacuating => format!(
                    "phase evacuating: {} instance(s) to move to {ha}",
                    rec.instances.len()
                ),
                Phase::Evacuated => {
                    let count =
                        |s: InstanceState| rec.instances.values().filter(|i| i.state == s).count();
                    format!(
                        "phase evacuated: {} done, {} error, {} skipped",
                        count(InstanceState::Done),
                        count(InstanceState::Error),
                        count(InstanceState::Skipped)
                    )
                }
                Phase::Notified => {
                    "phase notified: owners and admins told (log notifier)".to_owned()
                }
                Phase::Done => format!(
                    "phase done: the record is kept under {}/incidents/{}",
                    self.node, rec.incident
                ),
                Phase::Stuck => continue,
            };
            if step > Phase::Evacuating {
                later.push(line);
            } else {
                out.push(line);
            }
        }
        for (id, inst) in &rec.instances {
            if self.instances.insert(id.clone(), inst.state) == Some(inst.state) {
                continue;
            }
            let name = self.name(id);
            match inst.state {
                InstanceState::Pending => {}
                InstanceState::Requested => out.push(format!("  evacuate requested: {name}")),
                InstanceState::Done => out.push(format!(
                    "  evacuated: {name} -> {} ({})",
                    inst.target.as_deref().unwrap_or("?"),
                    inst.prior_status
                )),
                InstanceState::Error => out.push(format!(
                    "  evacuation FAILED: {name}: {}",
                    inst.error.as_deref().unwrap_or("no detail")
                )),
                InstanceState::Skipped => out.push(format!("  skipped on purpose: {name}")),
            }
        }
        out.extend(later);
        if reached == Phase::Stuck && from != Some(Phase::Stuck) {
            out.push(format!(
                "phase STUCK: {}",
                rec.last_error.as_deref().unwrap_or("no detail recorded")
            ));
        }
        self.phase = Some(reached);
        out
    }

    /// Whether Nova newly reads the node down (told before the K/V lines:
    /// it is what the monitor reacts to).
    pub fn nova_down(&mut self, sim: &SimHandle) -> Vec<String> {
        match sim.service(self.node.as_str()) {
            Some((_, "down")) if !self.nova_down && !self.forced_down => {
                self.nova_down = true;
                vec![format!(
                    "nova: nova-compute on {} reads down (no heartbeat for {}s)",
                    self.node,
                    SERVICE_DOWN_TIME.as_secs()
                )]
            }
            _ => Vec::new(),
        }
    }

    /// What else changed in the simulated cloud since the last call.
    pub fn sim(&mut self, sim: &SimHandle, ha_node: &str) -> Vec<String> {
        let mut out = Vec::new();
        if let Some((svc, _)) = sim.service(self.node.as_str()) {
            if !self.forced_down && svc.forced_down {
                self.forced_down = true;
                out.push(format!(
                    "nova: {} forced_down = true, disabled ({})",
                    self.node,
                    svc.disabled_reason.as_deref().unwrap_or("no reason")
                ));
            }
        }
        if let Some((svc, _)) = sim.service(ha_node)
            && !self.ha_enabled
            && !svc.disabled
        {
            self.ha_enabled = true;
            out.push(format!("nova: {ha_node} enabled to take the instances"));
        }
        let calls = sim.calls();
        let evacuations: Vec<String> = calls
            .iter()
            .filter(|c| c.method == "POST" && c.body.get("evacuate").is_some())
            .filter_map(|c| c.path.split('/').rev().nth(1).map(str::to_owned))
            .collect();
        for id in evacuations.iter().skip(self.evacuate_calls) {
            out.push(format!(
                "nova: evacuate call received for {}",
                self.name(id)
            ));
        }
        self.evacuate_calls = self.evacuate_calls.max(evacuations.len());
        let ids: Vec<String> = self.names.keys().cloned().collect();
        for id in ids {
            if self.landed.contains(&id) {
                continue;
            }
            let Ok(uuid) = id.parse() else { continue };
            if let Some(s) = sim.server(&uuid)
                && s.host != self.node.as_str()
                && s.task_state.is_none()
            {
                let note = if s.status == "SHUTOFF" {
                    ": evacuated servers arrive SHUTOFF from microversion 2.95; \
                     novaha starts the ones that ran"
                } else {
                    ""
                };
                out.push(format!(
                    "nova: {} now on {} ({}){note}",
                    self.name(&id),
                    s.host,
                    s.status
                ));
                self.landed.insert(id);
            }
        }
        out
    }
}

/// The timeline key of a phase (as the record's `timeline` names it).
fn phase_key(p: Phase) -> &'static str {
    match p {
        Phase::Claimed => "claimed",
        Phase::Fenced => "fenced",
        Phase::ForcedDown => "forced_down",
        Phase::Evacuating => "evacuating",
        Phase::Evacuated => "evacuated",
        Phase::Notified => "notified",
        Phase::Done => "done",
        Phase::Stuck => "stuck",
    }
}

/// Renders story lines for tests and docs.
pub fn render(lines: &[String]) -> String {
    let mut s = String::new();
    for l in lines {
        let _ = writeln!(s, "{l}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{HA_NODE, PREFIX, VICTIM};
    use chrono::Utc;
    use novaha_core::kv::{KvEntry, Schema, Snapshot};
    use novaha_core::record::{FenceRecord, InstanceRecord, RecoveryRecord};

    fn snap(pairs: &[(String, String)]) -> ClusterState {
        let schema = Schema::new(PREFIX);
        let entries = pairs
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    KvEntry {
                        value: Some(v.clone().into_bytes()),
                        modify_index: 1,
                    },
                )
            })
            .collect();
        ClusterState::parse(&schema, &Snapshot { index: 1, entries })
    }

    fn node_keys(
        failed: &str,
        fails: u32,
        record: Option<&RecoveryRecord>,
    ) -> Vec<(String, String)> {
        let schema = Schema::new(PREFIX);
        let n = NodeName::new(VICTIM);
        let mut v = vec![
            (schema.failed(&n), failed.to_owned()),
            (schema.recovered(&n), failed.to_owned()),
            (schema.number_fails(&n), fails.to_string()),
        ];
        if let Some(r) = record {
            v.push((
                schema.recovery(&n),
                serde_json::to_string(r).expect("encode"),
            ));
        }
        v
    }

    #[test]
    fn the_story_tells_each_step_once_and_in_order() {
        let id = "11111111-2222-3333-4444-555555555555".to_owned();
        let names = BTreeMap::from([(id.clone(), "web-1".to_owned())]);
        let mut story = Story::new(VICTIM, 2, names, false);
        let lines = story.kv(&snap(&node_keys("False", 1, None)));
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].contains("number_fails = 1"), "{lines:?}");
        assert!(
            story.kv(&snap(&node_keys("False", 1, None))).is_empty(),
            "no change, no line"
        );

        let mut rec = RecoveryRecord::new("inc-1".to_owned(), "e1".to_owned(), Utc::now());
        rec.phase = Phase::ForcedDown;
        rec.ha_node = Some(NodeName::new(HA_NODE));
        rec.fence = Some(FenceRecord {
            driver: "noop".to_owned(),
            verified_off_at: Utc::now(),
        });
        let text = render(&story.kv(&snap(&node_keys("True", 3, Some(&rec)))));
        let order = [
            "number_fails = 3",
            "failed = True",
            "recovered = True",
            "phase claimed",
            "NOOP",
            "phase forced_down",
        ];
        let mut at = 0;
        for needle in order {
            let pos = text[at..]
                .find(needle)
                .unwrap_or_else(|| panic!("{needle:?} after {at} in:\n{text}"));
            at += pos;
        }
        assert!(!text.contains("phase evacuating"), "{text}");

        rec.phase = Phase::Done;
        rec.instances.insert(
            id,
            InstanceRecord {
                state: InstanceState::Done,
                prior_status: "ACTIVE".to_owned(),
                name: None,
                target: Some(HA_NODE.to_owned()),
                error: None,
                owner: None,
                project: None,
                requested_at: None,
                start_requested_at: None,
                sends: 0,
                starts: 0,
                ..InstanceRecord::default()
            },
        );
        let text = render(&story.kv(&snap(&node_keys("True", 3, Some(&rec)))));
        for needle in [
            "phase evacuating",
            "phase evacuated: 1 done",
            "phase notified",
            "phase done",
            "evacuated: web-1 (11111111) -> ha-1",
        ] {
            assert!(text.contains(needle), "{needle:?} in:\n{text}");
        }
        assert!(!text.contains("phase claimed"), "told once:\n{text}");
        assert_eq!(story.phase(), Some(Phase::Done));
    }
}
