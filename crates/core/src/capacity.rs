//! Where instances fit (docs/recovery.md, "Capacity"): a host's room as
//! Placement computes it, which pending instances go to the claimed HA
//! node now and which to the scheduler or wait, and how many host failures
//! the cloud can absorb (`novaha_capacity_failures_tolerated`).
//!
//! Placement's rule, which this module follows: a resource class of a
//! provider has room for `(total - reserved) * allocation_ratio - used`,
//! and one allocation may not exceed its `max_unit`. A class the provider
//! has no inventory of (e.g. `DISK_GB` on hosts whose disks live in a
//! shared provider) does not limit it here.
//!
//! Pure: no I/O, no clock.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The resources one instance takes (its flavor, as Placement counts it),
/// or a sum of them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Resources {
    /// `VCPU`.
    pub vcpus: u64,
    /// `MEMORY_MB`.
    pub memory_mb: u64,
    /// `DISK_GB`.
    pub disk_gb: u64,
}

impl Resources {
    /// Nothing.
    pub const ZERO: Self = Self {
        vcpus: 0,
        memory_mb: 0,
        disk_gb: 0,
    };

    /// What Placement allocates for a flavor: its vCPUs and RAM, and on
    /// disk its root (none when booted from volume), ephemeral and swap
    /// (rounded up to whole GiB).
    pub fn of_flavor(
        vcpus: u64,
        ram_mb: u64,
        root_gb: u64,
        ephemeral_gb: u64,
        swap_mb: u64,
        boot_from_volume: bool,
    ) -> Self {
        let root = if boot_from_volume { 0 } else { root_gb };
        Self {
            vcpus,
            memory_mb: ram_mb,
            disk_gb: root
                .saturating_add(ephemeral_gb)
                .saturating_add(swap_mb.div_ceil(1024)),
        }
    }

    /// The sum, saturating.
    pub fn plus(self, o: Self) -> Self {
        Self {
            vcpus: self.vcpus.saturating_add(o.vcpus),
            memory_mb: self.memory_mb.saturating_add(o.memory_mb),
            disk_gb: self.disk_gb.saturating_add(o.disk_gb),
        }
    }

    /// The difference per class, floored at zero.
    pub fn minus(self, o: Self) -> Self {
        Self {
            vcpus: self.vcpus.saturating_sub(o.vcpus),
            memory_mb: self.memory_mb.saturating_sub(o.memory_mb),
            disk_gb: self.disk_gb.saturating_sub(o.disk_gb),
        }
    }

    /// True when every class of `self` is at most that of `room`.
    pub fn within(&self, room: &Self) -> bool {
        self.vcpus <= room.vcpus && self.memory_mb <= room.memory_mb && self.disk_gb <= room.disk_gb
    }

    /// True when nothing is asked.
    pub fn is_zero(&self) -> bool {
        *self == Self::ZERO
    }

    /// The order "largest first" uses: memory, then vCPUs, then disk.
    fn size_key(&self) -> (u64, u64, u64) {
        (self.memory_mb, self.vcpus, self.disk_gb)
    }
}

impl fmt::Display for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = |v: u64| {
            if v == u64::MAX {
                "unlimited".to_owned()
            } else {
                v.to_string()
            }
        };
        write!(
            f,
            "{} vCPU, {} MB RAM, {} GB disk",
            n(self.vcpus),
            n(self.memory_mb),
            n(self.disk_gb)
        )
    }
}

/// One resource class of a provider's inventory, as Placement reports it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Inventory {
    /// `total`.
    pub total: u64,
    /// `reserved` (kept back for the host itself).
    pub reserved: u64,
    /// `allocation_ratio` (overcommit).
    pub allocation_ratio: f64,
    /// `max_unit`: the most one allocation may take.
    pub max_unit: u64,
}

impl Inventory {
    /// How much can be allocated in all: `(total - reserved) * ratio`,
    /// rounded down as Placement does.
    pub fn capacity(&self) -> u64 {
        let base = self.total.saturating_sub(self.reserved) as f64;
        let ratio = if self.allocation_ratio.is_finite() && self.allocation_ratio > 0.0 {
            self.allocation_ratio
        } else {
            0.0
        };
        // `as` saturates on overflow and maps NaN to 0.
        (base * ratio).floor() as u64
    }
}

/// The three inventories novaha reads of a compute host's provider; `None`
/// = the provider has no inventory of that class (unlimited here).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Inventories {
    /// `VCPU`.
    pub vcpu: Option<Inventory>,
    /// `MEMORY_MB`.
    pub memory_mb: Option<Inventory>,
    /// `DISK_GB`.
    pub disk_gb: Option<Inventory>,
}

impl Inventories {
    fn per_class(&self, f: impl Fn(&Inventory) -> u64) -> Resources {
        let g = |i: &Option<Inventory>| i.as_ref().map_or(u64::MAX, &f);
        Resources {
            vcpus: g(&self.vcpu),
            memory_mb: g(&self.memory_mb),
            disk_gb: g(&self.disk_gb),
        }
    }

    /// What can be allocated in all, per class.
    pub fn capacity(&self) -> Resources {
        self.per_class(Inventory::capacity)
    }

    /// The largest single allocation, per class.
    pub fn max_unit(&self) -> Resources {
        self.per_class(|i| i.max_unit)
    }
}

/// What is free on a host, and the largest instance it accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Room {
    /// Capacity minus usage, per class.
    pub free: Resources,
    /// The largest single allocation, per class.
    pub max_unit: Resources,
}

impl Room {
    /// True when an instance taking `r` fits now.
    pub fn fits(&self, r: &Resources) -> bool {
        r.within(&self.free) && r.within(&self.max_unit)
    }

    /// Takes `r` out of the room (after [`Room::fits`]).
    pub fn take(&mut self, r: &Resources) {
        self.free = self.free.minus(*r);
    }
}

/// A host's provider as the runner read it from Placement: inventories and
/// the allocations on it by consumer (instance uuid). The allocations, not
/// the usage total, let a recovery count its own instances exactly once,
/// whether or not Nova has moved their allocations yet.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HostCapacity {
    /// The host's inventories.
    pub inventories: Inventories,
    /// Allocations on the host, by consumer uuid.
    pub allocations: BTreeMap<String, Resources>,
}

impl HostCapacity {
    /// The room left once every allocation is counted, except those of the
    /// consumers `ours` accounts for itself (`ours` returns the resources
    /// to count instead, `None` for a consumer it does not know).
    pub fn room(&self, ours: &BTreeMap<String, Option<Resources>>) -> Room {
        let mut used = Resources::ZERO;
        for (consumer, r) in &self.allocations {
            match ours.get(consumer) {
                Some(Some(_)) => {}
                _ => used = used.plus(*r),
            }
        }
        for r in ours.values().flatten() {
            used = used.plus(*r);
        }
        Room {
            free: self.inventories.capacity().minus(used),
            max_unit: self.inventories.max_unit(),
        }
    }
}

/// One pending instance to place, in the order it would be sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// Server uuid.
    pub id: String,
    /// What it takes; `None` = unknown (an old record, a cloud before
    /// microversion 2.47): it is sent to the HA node unchecked, as before
    /// capacity was read.
    pub resources: Option<Resources>,
    /// `novaha_priority` metadata; higher goes first.
    pub priority: i64,
}

/// Where one pending instance goes now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Placement {
    /// To the claimed HA node.
    HaNode,
    /// To Nova's scheduler.
    Scheduler,
    /// Nowhere yet: it does not fit and the policy allows no scheduler.
    Wait {
        /// Why, for the record and the alert.
        reason: String,
    },
}

/// Orders candidates by priority (higher first), keeping the given order
/// among equals (the record's order).
pub fn by_priority(candidates: &mut [Candidate]) {
    candidates.sort_by_key(|c| std::cmp::Reverse(c.priority));
}

/// Places `candidates` (already in sending order, see [`by_priority`]) on
/// a claimed HA node with `room` (`None` = unknown: everything goes to
/// the HA node as before capacity was read). What does not fit goes to the
/// scheduler when `scheduler_fallback`, else waits. First fit in order: a
/// smaller instance after one that did not fit may still take the room.
pub fn place(
    room: Option<Room>,
    ha_node: &str,
    scheduler_fallback: bool,
    candidates: &[Candidate],
) -> Vec<(String, Placement)> {
    let Some(mut room) = room else {
        return candidates
            .iter()
            .map(|c| (c.id.clone(), Placement::HaNode))
            .collect();
    };
    candidates
        .iter()
        .map(|c| {
            let p = match &c.resources {
                None => Placement::HaNode,
                Some(r) if room.fits(r) => {
                    room.take(r);
                    Placement::HaNode
                }
                Some(_) if scheduler_fallback => Placement::Scheduler,
                Some(r) => Placement::Wait {
                    reason: format!("no room on {ha_node}: needs {r}, free {}", room.free),
                },
            };
            (c.id.clone(), p)
        })
        .collect()
}

/// Which targets the failures-tolerated figure may count on (from
/// `[evacuate] target`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Targets {
    /// Free spares (one failed host each).
    pub spares: bool,
    /// The free capacity of the surviving computes, through the scheduler.
    pub scheduler: bool,
}

/// What the failures-tolerated figure knows of one host.
#[derive(Clone, Debug, PartialEq)]
pub struct HostLoad {
    /// The host.
    pub name: String,
    /// Its availability zone (`""` = none).
    pub zone: String,
    /// A spare (HA node) rather than a compute.
    pub spare: bool,
    /// Up in Nova and, for a spare, not in use; for a compute, enabled
    /// (the scheduler may place on it). A compute that is not available
    /// still counts as one that can fail, but lends no free capacity.
    pub available: bool,
    /// Its room now (capacity minus usage).
    pub room: Room,
    /// What would have to move if it failed (its usage).
    pub load: Resources,
}

/// How many of the largest compute hosts of each zone could fail at once
/// with their load fitting on the free spares (one each, best fit) and,
/// where `targets.scheduler`, the overflow on the pooled free capacity of
/// the surviving available computes. Spares serve their own zone. A zone
/// with no compute tolerates 0.
///
/// The pool is a sum per class: it ignores how instances split across
/// hosts, so it is an upper bound when capacity is fragmented; a spare's
/// fit is per class too. Cost: O(n log n + n x spares) per zone.
pub fn failures_tolerated(hosts: &[HostLoad], targets: Targets) -> BTreeMap<String, u32> {
    let mut zones: BTreeMap<&str, (Vec<&HostLoad>, Vec<&HostLoad>)> = BTreeMap::new();
    for h in hosts {
        let e = zones.entry(h.zone.as_str()).or_default();
        if h.spare {
            if h.available {
                e.1.push(h);
            }
        } else {
            e.0.push(h);
        }
    }
    zones
        .into_iter()
        .map(|(zone, (mut computes, spares))| {
            (
                zone.to_owned(),
                zone_tolerance(&mut computes, &spares, targets),
            )
        })
        .collect()
}

fn zone_tolerance(computes: &mut [&HostLoad], spares: &[&HostLoad], targets: Targets) -> u32 {
    computes.sort_by(|a, b| {
        b.load
            .size_key()
            .cmp(&a.load.size_key())
            .then_with(|| a.name.cmp(&b.name))
    });
    let mut pool = computes
        .iter()
        .filter(|h| h.available)
        .fold(Resources::ZERO, |acc, h| acc.plus(h.room.free));
    let mut free_spares: Vec<Resources> = if targets.spares {
        spares.iter().map(|s| s.room.free).collect()
    } else {
        Vec::new()
    };
    let mut overflow = Resources::ZERO;
    let mut tolerated = 0u32;
    for h in computes.iter() {
        if h.available {
            pool = pool.minus(h.room.free);
        }
        // Best fit: the smallest free spare that takes the whole load,
        // else the largest (the rest overflows).
        let fitting = free_spares
            .iter()
            .enumerate()
            .filter(|(_, s)| h.load.within(s))
            .min_by_key(|(_, s)| s.size_key())
            .map(|(i, _)| i);
        let chosen = fitting.or_else(|| {
            free_spares
                .iter()
                .enumerate()
                .max_by_key(|(_, s)| s.size_key())
                .map(|(i, _)| i)
        });
        let rest = match chosen {
            Some(i) => {
                let s = free_spares.swap_remove(i);
                h.load.minus(s)
            }
            None => h.load,
        };
        overflow = overflow.plus(rest);
        let ok = overflow.is_zero() || (targets.scheduler && overflow.within(&pool));
        if !ok {
            break;
        }
        tolerated += 1;
    }
    tolerated
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(vcpus: u64, memory_mb: u64, disk_gb: u64) -> Resources {
        Resources {
            vcpus,
            memory_mb,
            disk_gb,
        }
    }

    fn inv(total: u64, reserved: u64, ratio: f64) -> Option<Inventory> {
        Some(Inventory {
            total,
            reserved,
            allocation_ratio: ratio,
            max_unit: total,
        })
    }

    #[test]
    fn flavor_resources_follow_placement() {
        assert_eq!(
            Resources::of_flavor(2, 2048, 20, 5, 1500, false),
            res(2, 2048, 27)
        );
        assert_eq!(
            Resources::of_flavor(2, 2048, 20, 0, 0, true),
            res(2, 2048, 0)
        );
    }

    #[test]
    fn capacity_applies_reserved_and_ratio_and_absent_classes_are_unlimited() {
        let i = Inventories {
            vcpu: inv(8, 0, 4.0),
            memory_mb: inv(4096, 512, 1.5),
            disk_gb: None,
        };
        assert_eq!(i.capacity(), res(32, 5376, u64::MAX));
        assert_eq!(inv(10, 20, 1.0).unwrap().capacity(), 0);
        assert_eq!(inv(10, 0, f64::NAN).unwrap().capacity(), 0);
    }

    #[test]
    fn room_counts_our_own_instances_once() {
        let cap = HostCapacity {
            inventories: Inventories {
                vcpu: inv(4, 0, 1.0),
                memory_mb: inv(2048, 0, 1.0),
                disk_gb: inv(100, 0, 1.0),
            },
            allocations: BTreeMap::from([
                ("other".to_owned(), res(1, 512, 10)),
                ("ours-moved".to_owned(), res(1, 512, 10)),
            ]),
        };
        // One of ours already allocated there, one requested but not yet
        // allocated: both counted once, from the record.
        let ours = BTreeMap::from([
            ("ours-moved".to_owned(), Some(res(1, 512, 10))),
            ("ours-in-flight".to_owned(), Some(res(1, 512, 10))),
        ]);
        assert_eq!(cap.room(&ours).free, res(1, 512, 70));
        // Without resources in the record, Placement's allocation counts.
        let unknown = BTreeMap::from([("ours-moved".to_owned(), None)]);
        assert_eq!(cap.room(&unknown).free, res(2, 1024, 80));
    }

    fn cand(id: &str, mem: u64, priority: i64) -> Candidate {
        Candidate {
            id: id.into(),
            resources: Some(res(1, mem, 1)),
            priority,
        }
    }

    fn room(mem: u64) -> Room {
        Room {
            free: res(100, mem, 100),
            max_unit: res(100, 4096, 100),
        }
    }

    #[test]
    fn place_sends_what_fits_in_priority_order_and_the_rest_by_policy() {
        let mut c = vec![cand("a", 1024, 0), cand("b", 1024, 5), cand("c", 1024, 0)];
        by_priority(&mut c);
        let ids: Vec<&str> = c.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["b", "a", "c"], "priority first, then given order");
        let p = place(Some(room(2048)), "ha-1", true, &c);
        assert_eq!(
            p,
            vec![
                ("b".into(), Placement::HaNode),
                ("a".into(), Placement::HaNode),
                ("c".into(), Placement::Scheduler),
            ]
        );
        let p = place(Some(room(2048)), "ha-1", false, &c);
        match &p[2].1 {
            Placement::Wait { reason } => {
                assert!(reason.contains("no room on ha-1"), "{reason}");
                assert!(reason.contains("needs 1 vCPU, 1024 MB RAM"), "{reason}");
                assert!(reason.contains("free 98 vCPU, 0 MB RAM"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        // Unknown room or unknown resources: the HA node, as before.
        assert!(
            place(None, "ha-1", false, &c)
                .iter()
                .all(|(_, p)| *p == Placement::HaNode)
        );
        let unknown = [Candidate {
            id: "u".into(),
            resources: None,
            priority: 0,
        }];
        assert_eq!(
            place(Some(room(0)), "ha-1", false, &unknown)[0].1,
            Placement::HaNode
        );
    }

    #[test]
    fn first_fit_lets_a_smaller_one_through_and_max_unit_holds_back_a_giant() {
        let c = vec![cand("big", 3000, 1), cand("small", 1000, 0)];
        let p = place(Some(room(2048)), "ha-1", false, &c);
        assert!(matches!(p[0].1, Placement::Wait { .. }));
        assert_eq!(p[1].1, Placement::HaNode);
        let giant = vec![cand("g", 5000, 0)];
        let p = place(Some(room(100_000)), "ha-1", true, &giant);
        assert_eq!(p[0].1, Placement::Scheduler, "over max_unit");
    }

    fn host(name: &str, zone: &str, spare: bool, free_mem: u64, load_mem: u64) -> HostLoad {
        HostLoad {
            name: name.into(),
            zone: zone.into(),
            spare,
            available: true,
            room: Room {
                free: res(1000, free_mem, 1000),
                max_unit: res(1000, 1_000_000, 1000),
            },
            load: res(0, load_mem, 0),
        }
    }

    const SPARES: Targets = Targets {
        spares: true,
        scheduler: false,
    };
    const BOTH: Targets = Targets {
        spares: true,
        scheduler: true,
    };
    const SCHED: Targets = Targets {
        spares: false,
        scheduler: true,
    };

    #[test]
    fn worked_by_hand_spares_only() {
        // Three computes loaded 8, 6 and 2 GB; spares with 8 and 4 GB free.
        // The largest (8) takes the 8 GB spare, the next (6) does not fit
        // the 4 GB spare: one failure tolerated.
        let hosts = [
            host("c1", "az1", false, 0, 8192),
            host("c2", "az1", false, 0, 6144),
            host("c3", "az1", false, 0, 2048),
            host("ha-1", "az1", true, 8192, 0),
            host("ha-2", "az1", true, 4096, 0),
        ];
        assert_eq!(failures_tolerated(&hosts, SPARES)["az1"], 1);
        // A 6 GB spare instead of the 4 GB one: both largest fit.
        let mut more = hosts.clone();
        more[4] = host("ha-2", "az1", true, 6144, 0);
        assert_eq!(failures_tolerated(&more, SPARES)["az1"], 2);
    }

    #[test]
    fn worked_by_hand_with_the_scheduler() {
        // Computes loaded 8, 6, 2 GB with 1, 3, 4 GB free; one 8 GB spare.
        // k=1: c1 -> spare, no overflow. k=2: c2 (6 GB) overflows 6 GB into
        // the pool of c3 (4 GB): no. With c3 at 7 GB free: yes (pool 7 >= 6),
        // k=3: c3 (2 GB) overflows too; the pool is then empty: no.
        let hosts = [
            host("c1", "az1", false, 1024, 8192),
            host("c2", "az1", false, 3072, 6144),
            host("c3", "az1", false, 4096, 2048),
            host("ha-1", "az1", true, 8192, 0),
        ];
        assert_eq!(failures_tolerated(&hosts, BOTH)["az1"], 1);
        let mut roomy = hosts.clone();
        roomy[2] = host("c3", "az1", false, 7168, 2048);
        assert_eq!(failures_tolerated(&roomy, BOTH)["az1"], 2);
        // Scheduler only: c1 (8 GB) into the pool of c2 + c3 (3 + 7): yes;
        // then c2 (6 GB) more: 14 GB into c3's 7: no.
        assert_eq!(failures_tolerated(&roomy, SCHED)["az1"], 1);
    }

    #[test]
    fn zones_are_separate_and_busy_spares_do_not_count() {
        let mut hosts = vec![
            host("a1", "az-a", false, 0, 1024),
            host("ha-a", "az-a", true, 2048, 0),
            host("b1", "az-b", false, 0, 1024),
            host("ha-b", "az-b", true, 2048, 0),
        ];
        hosts[3].available = false;
        let t = failures_tolerated(&hosts, SPARES);
        assert_eq!(t["az-a"], 1);
        assert_eq!(t["az-b"], 0, "the only spare of az-b is in use");
        // A zone of spares only has no compute to lose.
        let t = failures_tolerated(&[host("ha", "z", true, 10, 0)], SPARES);
        assert_eq!(t["z"], 0);
        // An empty host fits anywhere, even with nothing free.
        let t = failures_tolerated(&[host("e", "z", false, 0, 0)], SPARES);
        assert_eq!(t["z"], 1);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn arb_host(spare: bool) -> impl Strategy<Value = HostLoad> {
            (0u64..16, 0u64..16, any::<bool>()).prop_map(move |(free, load, available)| {
                let mut h = host(
                    "h",
                    "z",
                    spare,
                    free * 1024,
                    if spare { 0 } else { load * 1024 },
                );
                h.available = available;
                h
            })
        }

        proptest! {
            /// More spares or more free room never lowers the figure, and it
            /// never exceeds the number of computes.
            #[test]
            fn monotone_and_bounded(
                computes in proptest::collection::vec(arb_host(false), 0..12),
                spares in proptest::collection::vec(arb_host(true), 0..4),
                extra in arb_host(true),
                sched in any::<bool>(),
            ) {
                let t = Targets { spares: true, scheduler: sched };
                let mut hosts: Vec<HostLoad> = computes.to_vec();
                for (i, h) in hosts.iter_mut().enumerate() {
                    h.name = format!("c{i}");
                }
                let mut with_spares = hosts.clone();
                with_spares.extend(spares.iter().cloned());
                let base = failures_tolerated(&with_spares, t).get("z").copied().unwrap_or(0);
                prop_assert!(base as usize <= computes.len());
                let mut more = with_spares.clone();
                let mut e = extra.clone();
                e.available = true;
                more.push(e);
                let after = failures_tolerated(&more, t).get("z").copied().unwrap_or(0);
                prop_assert!(after >= base, "{after} < {base}");
            }

            /// Whatever fits is placed on the HA node without exceeding its
            /// room, and every candidate gets exactly one placement.
            #[test]
            fn place_never_overfills(
                mems in proptest::collection::vec(0u64..4096, 0..20),
                free in 0u64..16384,
            ) {
                let c: Vec<Candidate> = mems.iter().enumerate()
                    .map(|(i, m)| cand(&format!("i{i}"), *m, (i % 3) as i64))
                    .collect();
                let r = room(free);
                let p = place(Some(r), "ha", false, &c);
                prop_assert_eq!(p.len(), c.len());
                let sent: u64 = p.iter().zip(&c)
                    .filter(|((_, pl), _)| *pl == Placement::HaNode)
                    .map(|(_, c)| c.resources.map_or(0, |r| r.memory_mb))
                    .sum();
                prop_assert!(sent <= free);
            }
        }
    }
}
