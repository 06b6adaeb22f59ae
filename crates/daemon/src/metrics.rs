//! The daemon's Prometheus series: the only place their names are spelled
//! (docs/metrics.md lists them). One [`Metrics`] is created in `run` and
//! shared; every method is cheap and safe from any task.
//!
//! Exposed in the classic text format (`text/plain; version=0.0.4`) that
//! both the Prometheus server and `promtool check metrics` read.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;
type Counters = Family<Labels, Counter>;
type Gauges = Family<Labels, Gauge>;

/// The node states `novaha_nodes{state}` reports, always all of them.
pub const NODE_STATES: [&str; 6] = [
    "healthy",
    "failing",
    "failed",
    "recovering",
    "maintenance",
    "invalid",
];

/// The HA node states `novaha_ha_nodes{state}` reports, always all of them.
pub const HA_NODE_STATES: [&str; 3] = ["free", "in_use", "invalid"];

/// The results `novaha_cycles_total{result}` counts, always all of them:
/// `ok` (judged, or observed only), `blind` (recorded but nothing judged:
/// the cloud cannot be read), `error` (consul unreachable, write refused).
pub const CYCLE_RESULTS: [&str; 3] = ["ok", "blind", "error"];

/// Declares [`Metrics`] from one line per series (field: type [= initial
/// value, else its default], name, help) and `Metrics::registered`, which
/// registers them in that order: the order of the exposition.
macro_rules! series {
    ($($field:ident: $ty:ty $(= $init:expr)?, $name:literal, $help:literal;)*) => {
        /// Every series novaha exports.
        pub struct Metrics {
            registry: Registry,
            /// The zones of the last failures-tolerated figure (to drop a gone one).
            tolerated_zones: Mutex<Vec<String>>,
            $($field: $ty,)*
        }

        impl Metrics {
            /// Every series registered, after `novaha_build_info`.
            fn registered() -> Self {
                let mut registry = Registry::default();
                let build_info = Gauges::default();
                let version = labels(&[("version", env!("CARGO_PKG_VERSION"))]);
                build_info.get_or_create(&version).set(1);
                let help = "Always 1; the version label names the build";
                registry.register("novaha_build_info", help, build_info);
                $(let $field: $ty = series!(@init $($init)?);
                registry.register($name, $help, $field.clone());)*
                Self { registry, tolerated_zones: Mutex::default(), $($field,)* }
            }
        }
    };
    (@init) => { Default::default() };
    (@init $init:expr) => { $init };
}

series! {
    leader: Gauge, "novaha_leader", "1 while this process holds the leader lock";
    leader_acquisitions: Counter, "novaha_leader_acquisitions", "Times this process became leader";
    leader_losses: Counter, "novaha_leader_lost", "Times this process lost the lock without resigning";
    cycles: Counters, "novaha_cycles", "Leader cycles by result (error: consul unreachable, write refused)";
    nodes: Gauges, "novaha_nodes", "Compute nodes by state, last cycle";
    node_fails: Gauges, "novaha_node_fails", "The node's number_fails";
    node_failed: Gauges, "novaha_node_failed", "1 while the node's failed flag is True";
    node_degraded: Gauges, "novaha_node_degraded", "1 while the node's signals disagree (internal/degraded is set): not failing, but an operator should look";
    poll_duration: Histogram = Histogram::new(exponential_buckets(0.005, 2.0, 14)), "novaha_poll_duration_seconds", "Duration of one detection cycle";
    state_invalid: Gauge, "novaha_state_invalid", "K/V values that do not parse, last cycle";
    state_invalid_total: Counter, "novaha_state_invalid", "Invalid K/V values seen, each key and value once";
    guard: Gauge, "novaha_mass_failure_guard", "1 while the mass-failure guard holds fencing back";
    guard_trips: Counter, "novaha_mass_failure_guard_trips", "Times the mass-failure guard tripped";
    recoveries: Counters, "novaha_recoveries", "Finished recoveries by result";
    recovery_duration: Histogram = Histogram::new(exponential_buckets(5.0, 2.0, 12)), "novaha_recovery_duration_seconds", "From detection to every instance landed";
    recovery_age: Family<Labels, Gauge<f64, AtomicU64>>, "novaha_recovery_age_seconds", "Age of a recovery in progress";
    recovery_stuck: Gauges, "novaha_recovery_stuck", "1 while a recovery needs an operator";
    fence: Counters, "novaha_fence", "Fence attempts by driver and result";
    fence_duration: Family<Labels, Histogram, fn() -> Histogram> = Family::new_with_constructor(seconds_buckets), "novaha_fence_duration_seconds", "One fence attempt, power-off to verified off";
    failures_tolerated: Gauges, "novaha_capacity_failures_tolerated", "How many of the largest compute hosts of a zone could fail at once with their instances fitting on the free spares (and, where the scheduler is allowed, the other hosts' free capacity)";
    bmc_up: Gauges, "novaha_bmc_up", "1 when the fence-path health check read the node's power";
    evacuations: Counters, "novaha_evacuations", "Instances by outcome";
    evacuation_duration: Histogram = seconds_buckets(), "novaha_evacuation_duration_seconds", "One instance, evacuate call to landed";
    notifications: Counters, "novaha_notifications", "Notification messages by driver and result";
    api_errors: Counters, "novaha_api_errors", "Failed calls to peers by service";
    admin_resets: Counter, "novaha_admin_resets", "Administrator resets handled";
    paused: Gauge, "novaha_paused", "1 while the cluster is paused (config/paused): nothing is fenced, forced down or evacuated";
    blind: Gauge, "novaha_monitor_blind", "1 while the leader cannot judge (no cloud configured, auth failing, Nova down) beyond the grace";
    judgement_age: Gauge<f64, AtomicU64>, "novaha_monitor_judgement_age_seconds", "Seconds since the leader last judged every node with Nova's answer (0 on a standby)";
    ha_nodes: Gauges, "novaha_ha_nodes", "HA (spare) nodes by state, last cycle";
}

/// A label set from (name, value) pairs.
fn labels(pairs: &[(&'static str, &str)]) -> Labels {
    pairs.iter().map(|&(k, v)| (k, v.to_owned())).collect()
}

fn node(node: &str) -> Labels {
    labels(&[("node", node)])
}

fn result(result: &str) -> Labels {
    labels(&[("result", result)])
}

fn cycle_result(ok: bool) -> Labels {
    result(if ok { "ok" } else { "error" })
}

fn seconds_buckets() -> Histogram {
    // 0.1 s .. ~1.7 h: a fence or an evacuation of one instance.
    Histogram::new(exponential_buckets(0.1, 2.0, 16))
}

/// Sets `gauge` to `on`, counting in `rises` each change from off to on.
fn set_counting_rises(gauge: &Gauge, rises: &Counter, on: bool) {
    if gauge.set(i64::from(on)) == 0 && on {
        rises.inc();
    }
}

/// Sets a `{state}` family to the counts of `by_state`; `states` not given
/// are set to 0.
fn set_by_state(family: &Gauges, states: &[&str], by_state: &[(&'static str, i64)]) {
    for &state in states {
        let n = by_state
            .iter()
            .filter(|(s, _)| *s == state)
            .map(|(_, n)| n)
            .sum();
        family.get_or_create(&labels(&[("state", state)])).set(n);
    }
}

/// Counts one `{result}` and, when given, observes its duration.
fn finished(counts: &Counters, outcome: &str, duration: &Histogram, seconds: Option<f64>) {
    counts.get_or_create(&result(outcome)).inc();
    if let Some(s) = seconds {
        duration.observe(s);
    }
}

impl Metrics {
    /// Registers every series (all present from the start, at zero).
    pub fn new() -> Arc<Self> {
        let m = Self::registered();
        m.set_ha_nodes(&[]);
        m.set_nodes(&[]);
        for r in CYCLE_RESULTS {
            m.cycles.get_or_create(&result(r)).inc_by(0);
        }
        Arc::new(m)
    }

    /// The exposition in the classic Prometheus text format.
    pub fn encode(&self) -> String {
        let mut open = String::new();
        prometheus_client::encoding::text::encode(&mut open, &self.registry)
            .expect("writing to a String cannot fail");
        to_classic_text(&open)
    }

    /// Records whether this process holds the lock; counts each acquisition.
    pub fn set_leader(&self, leader: bool) {
        set_counting_rises(&self.leader, &self.leader_acquisitions, leader);
    }

    /// The lock was lost without this process asking to (a standby again).
    pub fn leader_lost(&self) {
        self.leader_losses.inc();
    }

    /// One leader cycle ended: recorded (`ok`) or failed (consul
    /// unreachable, a write refused).
    pub fn cycle(&self, ok: bool) {
        self.cycles.get_or_create(&cycle_result(ok)).inc();
    }

    /// One leader cycle was recorded but judged nothing: the cloud could
    /// not be read.
    pub fn cycle_blind(&self) {
        self.cycles.get_or_create(&result("blind")).inc();
    }

    /// Records whether the cluster is paused.
    pub fn set_paused(&self, paused: bool) {
        self.paused.set(i64::from(paused));
    }

    /// Records the leader's sight: blind (beyond the grace) or not, and
    /// the seconds since its last full judgement.
    pub fn set_blind(&self, blind: bool, judgement_age_seconds: f64) {
        self.blind.set(i64::from(blind));
        self.judgement_age.set(judgement_age_seconds);
    }

    /// Sets `novaha_ha_nodes{state}`; states not given are set to 0.
    pub fn set_ha_nodes(&self, by_state: &[(&'static str, i64)]) {
        set_by_state(&self.ha_nodes, &HA_NODE_STATES, by_state);
    }

    /// Leader cycles so far that ended `ok` (or failed): the value of
    /// `novaha_cycles_total{result}` (read by tests).
    pub fn cycles_total(&self, ok: bool) -> u64 {
        self.cycles.get_or_create(&cycle_result(ok)).get()
    }

    /// Invalid values seen so far (`novaha_state_invalid_total`).
    pub fn state_invalid_total(&self) -> u64 {
        self.state_invalid_total.get()
    }

    /// Invalid values in the last cycle (`novaha_state_invalid`).
    pub fn state_invalid_current(&self) -> i64 {
        self.state_invalid.get()
    }

    /// One detection cycle took `seconds`.
    pub fn observe_poll(&self, seconds: f64) {
        self.poll_duration.observe(seconds);
    }

    /// Sets `novaha_nodes{state}`; states not given are set to 0.
    pub fn set_nodes(&self, by_state: &[(&'static str, i64)]) {
        set_by_state(&self.nodes, &NODE_STATES, by_state);
    }

    /// Sets a node's `number_fails` and failed flag.
    pub fn set_node(&self, name: &str, number_fails: u32, failed: bool) {
        let labels = node(name);
        self.node_fails
            .get_or_create(&labels)
            .set(i64::from(number_fails));
        self.node_failed
            .get_or_create(&labels)
            .set(i64::from(failed));
    }

    /// Sets whether a node is degraded (its signals disagree).
    pub fn set_node_degraded(&self, name: &str, degraded: bool) {
        self.node_degraded
            .get_or_create(&node(name))
            .set(i64::from(degraded));
    }

    /// Drops every per-node series of a node that no longer exists.
    pub fn forget_node(&self, name: &str) {
        let labels = node(name);
        self.node_fails.remove(&labels);
        self.node_failed.remove(&labels);
        self.node_degraded.remove(&labels);
        self.recovery_stuck.remove(&labels);
        self.bmc_up.remove(&labels);
        self.recovery_age.remove(&labels);
    }

    /// How many K/V values do not parse right now.
    pub fn set_state_invalid(&self, current: usize) {
        self.state_invalid
            .set(i64::try_from(current).unwrap_or(i64::MAX));
    }

    /// Counts invalid values seen for the first time.
    pub fn state_invalid_seen(&self, newly_seen: u64) {
        self.state_invalid_total.inc_by(newly_seen);
    }

    /// Records the guard's state; counts each trip.
    pub fn set_mass_failure_guard(&self, tripped: bool) {
        set_counting_rises(&self.guard, &self.guard_trips, tripped);
    }

    /// A recovery finished (`done` or `stuck`), with its detected-to-landed
    /// time when every instance landed.
    pub fn recovery_finished(&self, result: &str, detected_to_landed_seconds: Option<f64>) {
        finished(
            &self.recoveries,
            result,
            &self.recovery_duration,
            detected_to_landed_seconds,
        );
    }

    /// A node's recovery in progress (`None` age: none in progress).
    pub fn set_recovery(&self, name: &str, age_seconds: Option<f64>, stuck: bool) {
        let labels = node(name);
        self.recovery_age
            .get_or_create(&labels)
            .set(age_seconds.unwrap_or(0.0));
        self.recovery_stuck
            .get_or_create(&labels)
            .set(i64::from(stuck));
    }

    /// One fence attempt.
    pub fn fence_attempt(&self, driver: &str, ok: bool, seconds: f64) {
        let result = if ok { "ok" } else { "failed" };
        let attempt = labels(&[("driver", driver), ("result", result)]);
        self.fence.get_or_create(&attempt).inc();
        let driver = labels(&[("driver", driver)]);
        self.fence_duration.get_or_create(&driver).observe(seconds);
    }

    /// Sets `novaha_capacity_failures_tolerated{zone}` (zone `""` is shown
    /// as `none`); zones no longer present are dropped.
    pub fn set_failures_tolerated(&self, by_zone: &BTreeMap<String, u32>) {
        let label = |z: &str| labels(&[("zone", if z.is_empty() { "none" } else { z })]);
        let mut known = self
            .tolerated_zones
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for old in known.iter().filter(|z| !by_zone.contains_key(*z)) {
            self.failures_tolerated.remove(&label(old));
        }
        for (zone, n) in by_zone {
            self.failures_tolerated
                .get_or_create(&label(zone))
                .set(i64::from(*n));
        }
        *known = by_zone.keys().cloned().collect();
    }

    /// The fence-path health check's result for a node.
    pub fn set_bmc_up(&self, name: &str, up: bool) {
        self.bmc_up.get_or_create(&node(name)).set(i64::from(up));
    }

    /// One instance reached a final state, with its evacuate-to-landed time.
    pub fn evacuation(&self, result: &str, seconds: Option<f64>) {
        finished(
            &self.evacuations,
            result,
            &self.evacuation_duration,
            seconds,
        );
    }

    /// One notification message's outcome.
    pub fn notification(&self, driver: &str, result: &str) {
        let labels = labels(&[("driver", driver), ("result", result)]);
        self.notifications.get_or_create(&labels).inc();
    }

    /// A failed call to a peer.
    pub fn api_error(&self, service: &str) {
        self.api_errors
            .get_or_create(&labels(&[("service", service)]))
            .inc();
    }

    /// An administrator reset was handled.
    pub fn admin_reset(&self) {
        self.admin_resets.inc();
    }
}

/// Rewrites prometheus-client's OpenMetrics text into the classic text
/// format: counters' HELP/TYPE name the `_total` sample, no `# UNIT`, no
/// `# EOF`.
fn to_classic_text(open: &str) -> String {
    let mut out = String::with_capacity(open.len());
    let lines: Vec<&str> = open.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if line == "# EOF" || line.starts_with("# UNIT ") {
            i += 1;
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or_default();
            let is_counter = lines
                .get(i + 1)
                .is_some_and(|t| *t == format!("# TYPE {name} counter"));
            if is_counter {
                out.push_str(&format!("# HELP {name}_total{}\n", &rest[name.len()..]));
                out.push_str(&format!("# TYPE {name}_total counter\n"));
                i += 2;
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_is_classic_text_with_every_series() {
        let m = Metrics::new();
        m.set_leader(true);
        m.set_node("compute-1", 2, false);
        m.fence_attempt("ipmi", true, 1.5);
        m.evacuation("done", Some(3.0));
        m.api_error("nova");
        let text = m.encode();
        assert!(!text.contains("# EOF"), "{text}");
        assert!(
            text.contains("# TYPE novaha_leader_acquisitions_total counter"),
            "{text}"
        );
        assert!(
            text.contains("novaha_leader_acquisitions_total 1"),
            "{text}"
        );
        assert!(text.contains("novaha_leader 1"), "{text}");
        assert!(
            text.contains("novaha_node_fails{node=\"compute-1\"} 2"),
            "{text}"
        );
        assert!(text.contains("novaha_nodes{state=\"failed\"} 0"), "{text}");
        assert!(
            text.contains("novaha_fence_total{driver=\"ipmi\",result=\"ok\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("novaha_evacuation_duration_seconds_count 1"),
            "{text}"
        );
        assert!(text.contains("novaha_build_info{version="), "{text}");
        assert!(
            text.contains("novaha_cycles_total{result=\"error\"} 0"),
            "{text}"
        );
        assert!(text.contains("novaha_leader_lost_total 0"), "{text}");
    }

    #[test]
    fn a_degraded_node_has_its_gauge_until_it_is_forgotten() {
        let m = Metrics::new();
        m.set_node_degraded("compute-1", true);
        m.set_node_degraded("compute-2", false);
        let text = m.encode();
        assert!(
            text.contains("novaha_node_degraded{node=\"compute-1\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("novaha_node_degraded{node=\"compute-2\"} 0"),
            "{text}"
        );
        m.forget_node("compute-1");
        assert!(!m.encode().contains("node=\"compute-1\""));
    }

    #[test]
    fn leader_and_guard_count_transitions_only() {
        let m = Metrics::new();
        m.set_leader(true);
        m.set_leader(true);
        m.set_leader(false);
        m.set_leader(true);
        m.set_mass_failure_guard(true);
        m.set_mass_failure_guard(true);
        let text = m.encode();
        assert!(
            text.contains("novaha_leader_acquisitions_total 2"),
            "{text}"
        );
        assert!(
            text.contains("novaha_mass_failure_guard_trips_total 1"),
            "{text}"
        );
        assert!(text.contains("novaha_mass_failure_guard 1"), "{text}");
    }

    #[test]
    fn cycles_and_losses_are_counted() {
        let m = Metrics::new();
        m.cycle(true);
        m.cycle(true);
        m.cycle(false);
        m.leader_lost();
        assert_eq!((m.cycles_total(true), m.cycles_total(false)), (2, 1));
        let text = m.encode();
        assert!(
            text.contains("novaha_cycles_total{result=\"ok\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("novaha_cycles_total{result=\"error\"} 1"),
            "{text}"
        );
        assert!(text.contains("novaha_leader_lost_total 1"), "{text}");
        m.state_invalid_seen(3);
        m.set_state_invalid(2);
        assert_eq!((m.state_invalid_total(), m.state_invalid_current()), (3, 2));
    }

    #[test]
    fn failures_tolerated_per_zone_and_gone_zones_drop() {
        let m = Metrics::new();
        let mut z = std::collections::BTreeMap::from([("az1".to_owned(), 2), (String::new(), 0)]);
        m.set_failures_tolerated(&z);
        let out = m.encode();
        assert!(
            out.contains("novaha_capacity_failures_tolerated{zone=\"az1\"} 2"),
            "{out}"
        );
        assert!(
            out.contains("novaha_capacity_failures_tolerated{zone=\"none\"} 0"),
            "{out}"
        );
        z.remove("az1");
        m.set_failures_tolerated(&z);
        let out = m.encode();
        assert!(!out.contains("zone=\"az1\""), "{out}");
    }

    #[test]
    fn forgotten_nodes_disappear() {
        let m = Metrics::new();
        m.set_node("c9", 1, true);
        m.set_bmc_up("c9", false);
        m.forget_node("c9");
        assert!(!m.encode().contains("c9"));
    }
}
