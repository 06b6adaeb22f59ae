//! The `nova` signal: Nova's nova-compute services, one call per cycle.

use std::collections::BTreeMap;

use novaha_core::NodeName;
use novaha_core::detect::NovaService;
use novaha_openstack::Service;

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
