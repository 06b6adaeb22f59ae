//! The `nova` signal: Nova's nova-compute services, one call per cycle,
//! and (with `[monitor.nova] stale_after`) their heartbeats' ages.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use novaha_core::NodeName;
use novaha_core::detect::NovaService;
use novaha_openstack::Service;

/// What the heartbeat ages of one listing say.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Heartbeats {
    /// The hosts Nova reads `up` whose last heartbeat is older than
    /// `stale_after` at Nova's time, with that age.
    pub stale: BTreeMap<NodeName, Duration>,
    /// The hosts Nova reads `up` whose `updated_at` is missing or does not
    /// parse: their age is unknown, so they are never stale.
    pub unknown: Vec<NodeName>,
}

/// The heartbeat ages of the nova-compute services Nova reads `up` (the
/// only ones a stale heartbeat changes anything for), judged at
/// `nova_time`, Nova's own clock (the listing's `Date`), so that skew
/// between this controller and Nova cannot fake a stale heartbeat. A
/// heartbeat "from the future" (skew between nova-api's and the database
/// writer's clocks) is age zero. Pure.
pub fn heartbeats(
    services: &[Service],
    nova_time: DateTime<Utc>,
    stale_after: Duration,
) -> Heartbeats {
    let mut out = Heartbeats::default();
    for s in services
        .iter()
        .filter(|s| s.binary == "nova-compute" && !s.host.is_empty())
        .filter(|s| s.state.eq_ignore_ascii_case("up"))
    {
        let node = NodeName::from(s.host.as_str());
        if out.stale.contains_key(&node) || out.unknown.contains(&node) {
            continue; // a duplicate: the first record is the one judged
        }
        match s.heartbeat() {
            None => out.unknown.push(node),
            Some(beat) => {
                let age = (nova_time - beat).to_std().unwrap_or(Duration::ZERO);
                if age > stale_after {
                    out.stale.insert(node, age);
                }
            }
        }
    }
    out
}

/// Every nova-compute service of the list as core's [`NovaService`], by
/// host, plus the hosts that appeared more than once (the first record is
/// kept: Nova should never report two). Pure.
pub fn nova_services(services: &[Service]) -> (BTreeMap<NodeName, NovaService>, Vec<NodeName>) {
    let mut out = BTreeMap::new();
    let mut duplicates = Vec::new();
    for s in services
        .iter()
        .filter(|s| s.binary == "nova-compute" && !s.host.is_empty())
    {
        let node = NodeName::from(s.host.as_str());
        if out.contains_key(&node) {
            duplicates.push(node);
            continue;
        }
        out.insert(
            node,
            NovaService {
                id: s.id.clone(),
                up: s.state.eq_ignore_ascii_case("up"),
                enabled: s.status.eq_ignore_ascii_case("enabled"),
                forced_down: s.forced_down.unwrap_or(false),
            },
        );
    }
    (out, duplicates)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(id: &str, host: &str, binary: &str, status: &str, state: &str) -> Service {
        Service {
            id: id.into(),
            binary: binary.into(),
            host: host.into(),
            status: status.into(),
            state: state.into(),
            forced_down: None,
            disabled_reason: None,
            zone: None,
            updated_at: None,
        }
    }

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn heartbeats_older_than_stale_after_by_novas_clock_are_stale() {
        let beat = |host: &str, state: &str, updated: Option<&str>| {
            let mut s = svc(host, host, "nova-compute", "enabled", state);
            s.updated_at = updated.map(str::to_owned);
            s
        };
        let services = [
            beat("fresh", "up", Some("2026-11-21T03:00:09.000000")),
            beat("edge", "up", Some("2026-11-21T02:59:55.000000")),
            beat("stale", "up", Some("2026-11-21T02:59:54.000000")),
            beat("down", "down", Some("2026-11-21T02:50:00.000000")),
            beat("future", "up", Some("2026-11-21T03:00:12.000000")),
            beat("none", "up", None),
            beat("garbage", "up", Some("yesterday")),
            svc("9", "ctl", "nova-scheduler", "enabled", "up"),
        ];
        // Nova's clock says 03:00:10: stale_after 15s.
        let h = heartbeats(
            &services,
            at("2026-11-21T03:00:10Z"),
            Duration::from_secs(15),
        );
        assert_eq!(
            h.stale.into_iter().collect::<Vec<_>>(),
            [(NodeName::from("stale"), Duration::from_secs(16))],
            "exactly 15 s is not stale; a down node is Nova's to judge"
        );
        assert_eq!(
            h.unknown,
            [NodeName::from("none"), NodeName::from("garbage")]
        );
        // Nova's clock behind the heartbeats: never stale.
        let h = heartbeats(
            &services,
            at("2026-11-21T02:00:00Z"),
            Duration::from_secs(15),
        );
        assert!(h.stale.is_empty());
    }

    #[test]
    fn maps_state_status_and_force_down() {
        let mut forced = svc("3", "c3", "nova-compute", "disabled", "down");
        forced.forced_down = Some(true);
        let (m, dup) = nova_services(&[
            svc("1", "c1", "nova-compute", "enabled", "up"),
            svc("2", "c2", "nova-compute", "ENABLED", "DOWN"),
            forced,
            svc("9", "ctl", "nova-scheduler", "enabled", "up"),
            svc("4", "c1", "nova-compute", "enabled", "down"),
        ]);
        assert_eq!(m.len(), 3);
        let c1 = &m[&NodeName::from("c1")];
        assert_eq!((c1.id.as_str(), c1.up, c1.enabled), ("1", true, true));
        let c2 = &m[&NodeName::from("c2")];
        assert!(!c2.up && c2.enabled && !c2.forced_down);
        let c3 = &m[&NodeName::from("c3")];
        assert!(!c3.up && !c3.enabled && c3.forced_down);
        assert_eq!(dup, [NodeName::from("c1")]);
    }
}
