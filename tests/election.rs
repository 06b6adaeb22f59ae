//! Leader election end to end: two real `novaha run` processes against a
//! real Consul agent (lock-delay 1s, check TTL 2s), then kill, stop and
//! signal the leader and watch the standby take over. Each test has its own
//! agent, temp dir and K/V prefix.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::Path;
use std::time::{Duration, Instant};

use novaha_testkit::consul::ConsulAgent;
use novaha_testkit::daemon::{Daemon, DaemonConfig, novaha};
use serde_json::Value;

/// check TTL (2s) + lock-delay (1s) + 3s, the failover bound of the issue.
const FAILOVER_BOUND: Duration = Duration::from_secs(6);

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_novaha"))
}

struct Pair {
    agent: ConsulAgent,
    dir: tempfile::TempDir,
    prefix: String,
    a: Daemon,
    b: Daemon,
}

impl Pair {
    fn start(prefix: &str) -> Self {
        let agent = ConsulAgent::start();
        let dir = tempfile::tempdir().unwrap();
        let spawn = |id: &str| {
            let cfg = DaemonConfig::fast(&agent.http_addr(), prefix, id).write(dir.path());
            Daemon::spawn(bin(), &cfg, id, dir.path(), &[])
        };
        let a = spawn("a");
        let b = spawn("b");
        Self {
            agent,
            dir,
            prefix: prefix.to_owned(),
            a,
            b,
        }
    }

    /// The lock holder's id, from `novaha status --json`.
    fn leader(&self) -> Option<String> {
        let cfg = self.dir.path().join("a.toml");
        let o = novaha(bin(), &["status", "--json", "-c", cfg.to_str().unwrap()]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let doc: Value = serde_json::from_slice(&o.stdout).unwrap();
        doc["leader"]["id"].as_str().map(str::to_owned)
    }

    fn wait_leader(&self, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.leader() {
                return Some(l);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until `id` holds the lock; returns how long it took.
    fn wait_for(&self, id: &str, timeout: Duration) -> Duration {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.leader().as_deref() == Some(id) {
                return start.elapsed();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "{id} did not lead within {timeout:?}; leader now {:?}\n--- a ---\n{}\n--- b ---\n{}",
            self.leader(),
            self.a.log(),
            self.b.log()
        );
    }

    /// The id in the last leader cycle record.
    fn last_cycle_id(&self) -> Option<String> {
        self.last_cycle()?["id"].as_str().map(str::to_owned)
    }

    /// The leader's last cycle record.
    fn last_cycle(&self) -> Option<Value> {
        let raw = self
            .agent
            .kv_get(&format!("{}/novaha/last_cycle", self.prefix))?;
        Some(serde_json::from_slice(&raw).unwrap())
    }

    /// (leader, standby), once one leads and has finished a cycle.
    fn roles(&mut self) -> (&mut Daemon, &mut Daemon) {
        let l = self
            .wait_leader(Duration::from_secs(20))
            .expect("a leader within 20s");
        let (leader, standby) = if l == "a" {
            (&mut self.a, &mut self.b)
        } else {
            (&mut self.b, &mut self.a)
        };
        assert!(
            leader.wait_log("leader cycle done", 1, Duration::from_secs(10)),
            "{}",
            leader.log()
        );
        (leader, standby)
    }
}

#[test]
fn exactly_one_leader() {
    let mut p = Pair::start("e-one");
    let leader = p.wait_leader(Duration::from_secs(20)).expect("a leader");
    let (l, s) = p.roles();
    let (lid, sid) = (l.id.clone(), s.id.clone());
    assert_eq!(leader, lid);
    // Over several cycles the leader never changes and only it acts (a
    // cycle is logged at INFO only when what it saw changed: count the
    // cycle records instead).
    let until = Instant::now() + Duration::from_secs(4);
    let mut cycles = std::collections::BTreeSet::new();
    while Instant::now() < until {
        assert_eq!(p.leader().as_deref(), Some(lid.as_str()));
        if let Some(c) = p.last_cycle() {
            assert_eq!(c["id"], lid.as_str());
            cycles.insert(c["at"].as_str().unwrap_or_default().to_owned());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(cycles.len() >= 3, "{cycles:?}");
    let (l, s) = if lid == "a" {
        (&p.a, &p.b)
    } else {
        (&p.b, &p.a)
    };
    assert_eq!(l.count("acquired the leader lock"), 1, "{}", l.log());
    assert!(l.count("leader cycle done") >= 1, "{}", l.log());
    assert_eq!(s.count("acquired the leader lock"), 0, "{}", s.log());
    assert_eq!(s.count("leader cycle done"), 0, "{}", s.log());
    assert_eq!(p.last_cycle_id().as_deref(), Some(lid.as_str()));
    assert_ne!(lid, sid);
}

#[test]
fn kill_9_leader_standby_takes_over_within_bound() {
    let mut p = Pair::start("e-kill");
    let (l, s) = p.roles();
    let sid = s.id.clone();
    l.guard().signal("KILL");
    let t0 = Instant::now();
    let took = p.wait_for(&sid, FAILOVER_BOUND + Duration::from_secs(5));
    let elapsed = t0.elapsed();
    eprintln!("kill -9 failover took {took:?}");
    assert!(
        elapsed <= FAILOVER_BOUND,
        "failover took {elapsed:?} > {FAILOVER_BOUND:?}"
    );
    let standby = if sid == "a" { &p.a } else { &p.b };
    assert!(standby.wait_log("leader cycle done", 1, Duration::from_secs(5)));
    assert!(novaha_testkit::process::wait_until(
        Duration::from_secs(5),
        || p.last_cycle_id().as_deref() == Some(sid.as_str())
    ));
}

#[test]
fn stopped_leader_is_replaced_and_on_cont_steps_down_without_writing() {
    let mut p = Pair::start("e-stop");
    let (l, s) = p.roles();
    let (lid, sid) = (l.id.clone(), s.id.clone());
    l.guard().signal("STOP");
    let t0 = Instant::now();
    p.wait_for(&sid, FAILOVER_BOUND + Duration::from_secs(5));
    let elapsed = t0.elapsed();
    eprintln!("kill -STOP failover took {elapsed:?}");
    assert!(
        elapsed <= FAILOVER_BOUND,
        "failover took {elapsed:?} > {FAILOVER_BOUND:?}"
    );
    let (old, new) = if lid == "a" {
        (&mut p.a, &p.b)
    } else {
        (&mut p.b, &p.a)
    };
    assert!(
        new.wait_log("leader cycle done", 1, Duration::from_secs(5)),
        "{}",
        new.log()
    );
    // Let the old leader's tick come due while it is stopped.
    std::thread::sleep(Duration::from_secs(2));
    let cycles_before = old.count("leader cycle done");
    old.guard().signal("CONT");
    assert!(
        old.wait_log("lost the leader lock", 1, Duration::from_secs(10)),
        "the old leader never noticed:\n{}",
        old.log()
    );
    // It acts no more: no cycle completes, and every cycle record is the
    // new leader's while we watch.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        assert_eq!(p.last_cycle_id().as_deref(), Some(sid.as_str()));
        assert_eq!(p.leader().as_deref(), Some(sid.as_str()));
        std::thread::sleep(Duration::from_millis(100));
    }
    let (old, new) = if lid == "a" {
        (&mut p.a, &mut p.b)
    } else {
        (&mut p.b, &mut p.a)
    };
    assert_eq!(
        old.count("leader cycle done"),
        cycles_before,
        "{}",
        old.log()
    );
    // Back in standby it races again: stop the new leader gracefully and the
    // old one takes over.
    new.guard().signal("TERM");
    assert_eq!(new.guard().wait_exit(Duration::from_secs(15)), Some(0));
    p.wait_for(&lid, Duration::from_secs(5));
}

#[test]
fn sigterm_leader_exits_0_and_standby_leads_within_3s() {
    let mut p = Pair::start("e-term");
    let (l, s) = p.roles();
    let sid = s.id.clone();
    l.guard().signal("TERM");
    let t0 = Instant::now();
    assert_eq!(
        l.guard().wait_exit(Duration::from_secs(15)),
        Some(0),
        "{}",
        l.log()
    );
    assert!(
        l.log()
            .contains("resigned: lock released and session destroyed"),
        "{}",
        l.log()
    );
    let exited = t0.elapsed();
    p.wait_for(&sid, Duration::from_secs(10));
    let took = t0.elapsed();
    eprintln!("SIGTERM: exit after {exited:?}, standby led after {took:?}");
    assert!(took <= Duration::from_secs(3), "standby led after {took:?}");
}

#[test]
fn second_signal_exits_1() {
    let mut p = Pair::start("e-twice");
    let (l, _) = p.roles();
    // Two different signals back to back: the first starts the graceful
    // path (which needs Consul round trips), the second ends it with 1.
    // Stopped first so that both are pending when it resumes.
    l.guard().signal("STOP");
    l.guard().signal("TERM");
    l.guard().signal("INT");
    l.guard().signal("CONT");
    let code = l.guard().wait_exit(Duration::from_secs(15));
    assert_eq!(code, Some(1), "{}", l.log());
    assert!(l.log().contains("second signal"), "{}", l.log());
}

#[test]
fn sigterm_standby_exits_0_and_removes_its_check() {
    let mut p = Pair::start("e-sb");
    let lid = p.roles().0.id.clone();
    let checks = |agent: &ConsulAgent| -> Value {
        let (st, body) = agent.http("GET", "/v1/agent/checks", b"");
        assert_eq!(st, 200);
        serde_json::from_slice(&body).unwrap()
    };
    let sid = if lid == "a" { "b" } else { "a" };
    let check_id = format!("novaha-e-sb-{sid}");
    assert!(
        novaha_testkit::process::wait_until(Duration::from_secs(5), || checks(&p.agent)
            .get(&check_id)
            .is_some()),
        "standby check {check_id} never registered: {}",
        checks(&p.agent)
    );
    let standby = if sid == "a" { &mut p.a } else { &mut p.b };
    standby.guard().signal("TERM");
    assert_eq!(
        standby.guard().wait_exit(Duration::from_secs(10)),
        Some(0),
        "{}",
        standby.log()
    );
    assert!(
        checks(&p.agent).get(&check_id).is_none(),
        "{}",
        checks(&p.agent)
    );
    assert_eq!(p.leader().as_deref(), Some(lid.as_str()));
}

/// Two daemons with the same `[election] id` on one Consul agent would
/// share one TTL check (each passing it for the other), so a dead leader
/// would cost the whole session TTL instead of seconds. The second one
/// refuses to start, naming `election.id`, and the first leads on; a
/// daemon restarted at once after a crash (its old check still passing
/// until the TTL) starts normally.
#[test]
fn a_second_daemon_with_the_same_id_on_the_same_agent_refuses_to_start() {
    let agent = ConsulAgent::start();
    let dir = tempfile::tempdir().unwrap();
    let prefix = "t-dupid";
    let first = DaemonConfig::fast(&agent.http_addr(), prefix, "twin").write(dir.path());
    let mut a = Daemon::spawn(bin(), &first, "twin", dir.path(), &[]);
    assert!(
        a.wait_log("acquired the leader lock", 1, Duration::from_secs(30)),
        "{}",
        a.log()
    );
    // Same id, own config file and HTTP port.
    let dir2 = tempfile::tempdir().unwrap();
    let second = DaemonConfig::fast(&agent.http_addr(), prefix, "twin").write(dir2.path());
    let mut b = Daemon::spawn(bin(), &second, "twin", dir2.path(), &[]);
    let code = b.guard().wait_exit(Duration::from_secs(20));
    assert_eq!(code, Some(2), "{}", b.log());
    assert!(
        b.log()
            .contains("election.id \"twin\": another live novaha daemon on the Consul agent"),
        "{}",
        b.log()
    );
    assert!(!b.log().contains("acquired the leader lock"), "{}", b.log());
    // `run --once` with the same id refuses too (it would take the check over).
    let o = novaha(bin(), &["run", "--once", "-c", second.to_str().unwrap()]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("election.id"));
    // The first still leads, and was never disturbed.
    assert!(a.guard().is_running());
    assert_eq!(a.count("lost the leader lock"), 0, "{}", a.log());
    // Crash the first and restart it at once: its old check still passes
    // for up to a TTL, then goes critical; the restart waits it out and
    // leads, it is not taken for a twin.
    a.guard().kill();
    let mut again = Daemon::spawn(bin(), &first, "twin-again", dir.path(), &[]);
    assert!(
        again.wait_log("acquired the leader lock", 1, Duration::from_secs(30)),
        "{}",
        again.log()
    );
    assert!(
        !again.log().contains("another live novaha daemon"),
        "{}",
        again.log()
    );
    again.guard().kill();
}
