//! A fault schedule: the cloud one run starts from and the faults injected
//! into it, all drawn from one `u64` seed, printable and shrinkable.

use std::fmt;
use std::time::Duration;

/// A small, fast, reproducible generator (SplitMix64): the same seed gives
/// the same schedule on every machine and build.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator started from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// A duration in `lo..hi` milliseconds.
    pub fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi.saturating_sub(lo).max(1)))
    }

    /// One element of `items` (panics on an empty slice: callers never pass one).
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// Where evacuated instances go in this run (`[evacuate] target`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// `ha_node`.
    HaNode,
    /// `ha_node_then_scheduler`.
    HaNodeThenScheduler,
    /// `scheduler`.
    Scheduler,
}

/// The cloud a schedule runs against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cloud {
    /// Compute hosts (`c1..`).
    pub hosts: usize,
    /// Spare hosts (`ha-1..`).
    pub spares: usize,
    /// Instances per compute host.
    pub per_host: usize,
    /// The evacuation target policy.
    pub target: Target,
    /// Evacuated servers land SHUTOFF and ACTIVE ones are started again
    /// (Nova microversion >= 2.95).
    pub lands_shutoff: bool,
    /// The second controller's clock skew, in seconds (may be negative).
    pub skew_secs: i64,
    /// At most this many evacuations in flight per node.
    pub concurrency: usize,
}

/// A key an operator may write garbage into from the Consul UI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadKey {
    /// `status/failed`.
    Failed,
    /// `status/recovered`.
    Recovered,
    /// `internal/number_fails`.
    NumberFails,
    /// `internal/recovery`.
    Record,
    /// An HA node's `status/in_use`.
    InUse,
}

/// How a commit misbehaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitFault {
    /// Consul answers 5xx and writes nothing.
    Refused,
    /// Written, but the caller sees a timeout (unknown outcome).
    AppliedThenTimeout,
    /// The caller sees a timeout; the write is applied this much later
    /// (checked against the lock and the CAS indexes then).
    AppliedLate(Duration),
}

/// One fault. Hosts are named by index: `c{n+1}` for compute hosts,
/// `ha-{n+1}` for spares; servers as `vm-{host}-{k}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The host dies: nova-compute and its agent stop, the power stays on
    /// (a hung or crashed OS) until it is fenced.
    KillHost(usize),
    /// A spare dies.
    KillSpare(usize),
    /// A network partition: these hosts look dead to every signal but are
    /// alive and powered (a mass failure: none may be fenced).
    Partition(Vec<usize>, Duration),
    /// The host's BMC times out for a while.
    BmcTimeout(usize, Duration),
    /// The host's power comes back on this long after it went off (a
    /// power-restore policy, the datacenter team).
    PowerRestore(usize, Duration),
    /// Nova (and so the monitor) cannot be reached for a while.
    NovaOutage(Duration),
    /// For a while each Nova call fails with this percentage; half of the
    /// failed mutating calls were applied anyway (unknown outcome).
    NovaFlaky(u64, Duration),
    /// A server's host is hidden (a down cell) for a while.
    HideHost(usize, usize, Duration),
    /// The next evacuation of a server lands in ERROR.
    LandsError(usize, usize),
    /// The next evacuation of a server never lands.
    NeverLands(usize, usize),
    /// An operator moves a server to another compute host by hand.
    MovedByHand(usize, usize, usize),
    /// A server is deleted.
    Deleted(usize, usize),
    /// The host's nova-compute service is re-registered under a new id.
    ServiceIdChange(usize),
    /// The next `n` commits (of anyone) misbehave.
    Commits(CommitFault, u32),
    /// The leader loses its lease; `stalled`: it notices only this much
    /// later (a SIGSTOP, a long GC), meanwhile Consul has released the lock.
    LeaseLoss {
        /// How late the old leader notices (zero = at once).
        notice_after: Duration,
    },
    /// The operator's reset of a node (`failed=False`, `recovered=False`).
    Reset(usize),
    /// Maintenance on a node for a while.
    Maintenance(usize, Duration),
    /// The whole cluster paused for a while.
    Pause(Duration),
    /// An invalid value in a key for a while, then the operator fixes it.
    Invalid(usize, BadKey, Duration),
}

/// A fault at a moment of the run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// Virtual time since the start.
    pub at: Duration,
    /// What happens.
    pub fault: Fault,
}

/// One run's cloud and faults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// The seed it was drawn from.
    pub seed: u64,
    /// The cloud.
    pub cloud: Cloud,
    /// The faults, in time order.
    pub steps: Vec<Step>,
}

/// Faults are injected during this window; then the run goes on quietly
/// for [`QUIET`] so that every recovery can finish (the liveness bound).
pub const FAULT_WINDOW: Duration = Duration::from_secs(10 * 60);

/// After the last fault every failed node with a live spare (or the
/// scheduler) and a working BMC must reach `done` within this.
pub const QUIET: Duration = Duration::from_secs(20 * 60);

impl Schedule {
    /// The schedule of `seed`.
    pub fn generate(seed: u64) -> Self {
        let mut r = Rng::new(seed);
        let cloud = Cloud {
            hosts: 3 + r.below(4) as usize,
            spares: r.below(3) as usize,
            per_host: 1 + r.below(3) as usize,
            target: *r.pick(&[
                Target::HaNode,
                Target::HaNodeThenScheduler,
                Target::Scheduler,
            ]),
            lands_shutoff: r.chance(30),
            skew_secs: r.below(601) as i64 - 300,
            concurrency: 1 + r.below(3) as usize,
        };
        let n = 3 + r.below(10);
        let mut steps: Vec<Step> = (0..n).map(|_| random_step(&mut r, &cloud)).collect();
        // Every run kills at least one compute host.
        steps.push(Step {
            at: r.millis(1_000, 120_000),
            fault: Fault::KillHost(r.below(cloud.hosts as u64) as usize),
        });
        steps.sort_by_key(|s| s.at);
        Self { seed, cloud, steps }
    }

    /// The same schedule with step `i` left out (for shrinking).
    pub fn without(&self, i: usize) -> Self {
        let mut s = self.clone();
        s.steps.remove(i);
        s
    }
}

fn random_step(r: &mut Rng, c: &Cloud) -> Step {
    let at = r.millis(0, FAULT_WINDOW.as_millis() as u64);
    let host = r.below(c.hosts as u64) as usize;
    let server = r.below(c.per_host as u64) as usize;
    let secs = |r: &mut Rng, lo: u64, hi: u64| Duration::from_secs(lo + r.below(hi - lo));
    let fault = match r.below(22) {
        0..=2 => Fault::KillHost(host),
        3 if c.spares > 0 => Fault::KillSpare(r.below(c.spares as u64) as usize),
        4 => {
            // More than the guard's limit of two at once.
            let mut set: Vec<usize> = (0..c.hosts).collect();
            while set.len() > 3 && r.chance(50) {
                let i = r.below(set.len() as u64) as usize;
                set.remove(i);
            }
            Fault::Partition(set, secs(r, 20, 300))
        }
        5 => Fault::BmcTimeout(host, secs(r, 5, 400)),
        6 => Fault::PowerRestore(host, secs(r, 1, 120)),
        7 => Fault::NovaOutage(secs(r, 5, 300)),
        8 => Fault::NovaFlaky(10 + r.below(50), secs(r, 10, 600)),
        9 => Fault::HideHost(host, server, secs(r, 5, 600)),
        10 => Fault::LandsError(host, server),
        11 => Fault::NeverLands(host, server),
        12 => {
            let to = (host + 1 + r.below(c.hosts as u64 - 1) as usize) % c.hosts;
            Fault::MovedByHand(host, server, to)
        }
        13 => Fault::Deleted(host, server),
        14 => Fault::ServiceIdChange(host),
        15 => {
            let kind = match r.below(3) {
                0 => CommitFault::Refused,
                1 => CommitFault::AppliedThenTimeout,
                _ => CommitFault::AppliedLate(r.millis(100, 20_000)),
            };
            Fault::Commits(kind, 1 + r.below(4) as u32)
        }
        16 | 17 => Fault::LeaseLoss {
            notice_after: if r.chance(50) {
                Duration::ZERO
            } else {
                r.millis(100, 30_000)
            },
        },
        18 => Fault::Reset(host),
        19 => Fault::Maintenance(host, secs(r, 5, 400)),
        20 => Fault::Pause(secs(r, 5, 300)),
        _ => {
            let key = *r.pick(&[
                BadKey::Failed,
                BadKey::Recovered,
                BadKey::NumberFails,
                BadKey::Record,
                BadKey::InUse,
            ]);
            let key = if key == BadKey::InUse && c.spares == 0 {
                BadKey::Failed
            } else {
                key
            };
            Fault::Invalid(host, key, secs(r, 5, 400))
        }
    };
    Step { at, fault }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.cloud;
        writeln!(
            f,
            "seed {}: {} hosts x {} instances, {} spares, target {:?}, concurrency {}, lands_shutoff {}, controller B skew {}s",
            self.seed,
            c.hosts,
            c.per_host,
            c.spares,
            c.target,
            c.concurrency,
            c.lands_shutoff,
            c.skew_secs
        )?;
        for s in &self.steps {
            writeln!(f, "  at {:>7.1}s  {:?}", s.at.as_secs_f64(), s.fault)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_always_gives_the_same_schedule_and_seeds_differ() {
        assert_eq!(Schedule::generate(7), Schedule::generate(7));
        assert_ne!(Schedule::generate(7), Schedule::generate(8));
        let s = Schedule::generate(7);
        assert!(s.steps.windows(2).all(|w| w[0].at <= w[1].at));
        assert!(
            s.steps
                .iter()
                .any(|s| matches!(s.fault, Fault::KillHost(_)))
        );
        assert_eq!(s.without(0).steps.len(), s.steps.len() - 1);
    }
}
