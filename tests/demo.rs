//! The demo end to end: runs the real `novaha-demo` binary as a process (it
//! starts its own Consul agent, simulator and two `novaha run` daemons) and
//! checks what an operator would read at the end: every instance of the
//! killed host on the HA node, the status table showing the node's recovery
//! done, and nothing left running or on disk afterwards.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use novaha_testkit::consul::consul_bin;

/// The demo promises "well under a minute"; this leaves room for a loaded CI.
const TIMEOUT: Duration = Duration::from_secs(120);

/// Pids the demo said it started; any still alive when the test ends
/// (failed or not) is killed, so a broken demo leaves nothing behind.
struct Leftovers(Vec<u32>);

fn alive(pid: u32) -> bool {
    // A zombie has exited; only a live process counts.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(") ")
                .is_some_and(|(_, rest)| !rest.starts_with('Z'))
        })
        .unwrap_or(false)
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        for pid in &self.0 {
            if alive(*pid) {
                let _ = Command::new("kill")
                    .arg("-KILL")
                    .arg(pid.to_string())
                    .status();
            }
        }
    }
}

/// The number after `marker` in `line` (e.g. `pid 123`).
fn number_after(line: &str, marker: &str) -> Option<u32> {
    let rest = &line[line.find(marker)? + marker.len()..];
    rest.chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .ok()
}

/// Builds the `novaha` binary next to `novaha-demo`, where the demo looks
/// for it: cargo builds only this package's binaries for its tests. Same
/// target dir and profile; a no-op when it is up to date (the workspace
/// test run has built it already).
fn build_novaha() {
    let demo = Path::new(env!("CARGO_BIN_EXE_novaha-demo"));
    let profile_dir = demo.parent().expect("the demo binary is in a profile dir");
    let target_dir = profile_dir
        .parent()
        .expect("the profile dir is in a target dir");
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev",
        Some(p) => p,
        None => panic!("no profile dir name in {}", demo.display()),
    };
    let status = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "-p", "novaha", "--bin", "novaha"])
        .args(["--profile", profile])
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .status()
        .expect("run cargo build -p novaha");
    assert!(status.success(), "cargo build -p novaha: {status}");
    let novaha = profile_dir.join("novaha");
    assert!(novaha.is_file(), "{} was not built", novaha.display());
}

#[test]
fn demo_recovers_every_instance_onto_the_ha_node_and_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("demo.out");
    let out = std::fs::File::create(&out_path).unwrap();
    let err = out.try_clone().unwrap();
    build_novaha();
    let mut child = Command::new(env!("CARGO_BIN_EXE_novaha-demo"))
        .env("NOVAHA_CONSUL_BIN", consul_bin())
        .env_remove("NOVAHA_BIN")
        .env_remove("RUST_LOG")
        .env_remove("CONSUL_HTTP_ADDR")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("start novaha-demo");
    let started = Instant::now();
    let read = || std::fs::read_to_string(&out_path).unwrap_or_default();
    let mut leftovers = Leftovers(Vec::new());
    let status = loop {
        // Learn the pids as they are printed, so a hung demo is cleaned up too.
        leftovers.0 = read()
            .lines()
            .filter(|l| {
                l.starts_with("consul: dev agent (pid ")
                    || (l.trim_start().starts_with("novaha-") && l.contains(": pid "))
            })
            .filter_map(|l| number_after(l, "pid "))
            .collect();
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if started.elapsed() > TIMEOUT {
            // Ask it to clean up as on Ctrl-C, then give up.
            let _ = Command::new("kill")
                .arg("-INT")
                .arg(child.id().to_string())
                .status();
            std::thread::sleep(Duration::from_secs(15));
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "novaha-demo did not finish within {TIMEOUT:?}; output:\n{}",
                read()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let elapsed = started.elapsed();
    let text = read();
    eprintln!("{text}");
    eprintln!("novaha-demo took {elapsed:?}");
    assert!(
        status.success(),
        "novaha-demo exited {status}; output:\n{text}"
    );
    assert_eq!(
        leftovers.0.len(),
        3,
        "the demo names its consul agent and two daemons with their pids:\n{text}"
    );

    // Every instance of the killed host is on the HA node, running.
    let table: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("the instances that were on compute-1"))
        .skip(2)
        .take_while(|l| l.starts_with("  "))
        .collect();
    assert_eq!(table.len(), 4, "four instances were on compute-1:\n{text}");
    for row in &table {
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cols.get(2),
            Some(&"ha-1"),
            "instance not on the HA node: {row}\n{text}"
        );
        assert_eq!(
            cols.get(3),
            Some(&"ACTIVE"),
            "instance not running: {row}\n{text}"
        );
    }
    assert!(text.contains("4 of 4 instances on ha-1"), "{text}");

    // The status table (what `novaha status` prints) shows the node done.
    let status_part = text
        .split("$ novaha status")
        .nth(1)
        .expect("the demo prints `novaha status`");
    // Columns by header name: the table may gain columns.
    let header: Vec<&str> = status_part
        .lines()
        .find(|l| l.contains("NODE") && l.contains("PHASE"))
        .unwrap_or_else(|| panic!("no compute node table header:\n{status_part}"))
        .split_whitespace()
        .collect();
    let row: Vec<&str> = status_part
        .lines()
        .find(|l| l.trim_start().starts_with("compute-1 "))
        .unwrap_or_else(|| panic!("no compute-1 row in the status table:\n{status_part}"))
        .split_whitespace()
        .collect();
    let col = |name: &str| {
        let i = header
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("no {name} column"));
        row.get(i).copied().unwrap_or("")
    };
    assert_eq!(
        (
            col("FAILED"),
            col("RECOVERED"),
            col("PHASE"),
            col("HA_NODE")
        ),
        ("True", "True", "done", "ha-1"),
        "compute-1: failed, recovered, phase done on ha-1:\n{status_part}"
    );
    let ha = status_part
        .split("ha nodes:")
        .nth(1)
        .expect("the status shows the HA nodes")
        .lines()
        .find(|l| l.trim_start().starts_with("ha-1 "))
        .unwrap_or_else(|| panic!("no ha-1 row:\n{status_part}"));
    assert!(
        ha.contains("True") && ha.contains("compute-1"),
        "ha-1 in use for compute-1: {ha}"
    );

    // The story was told phase by phase, in order, and said the fence was a noop.
    let mut at = 0;
    for step in [
        "killing compute-1",
        "reads down",
        "failed = True",
        "phase claimed",
        "phase fenced: by the NOOP driver: nothing was powered off",
        "phase forced_down",
        "phase evacuating",
        "phase evacuated: 4 done",
        "phase notified",
        "phase done",
    ] {
        let pos = text[at..]
            .find(step)
            .unwrap_or_else(|| panic!("{step:?} missing or out of order:\n{text}"));
        at += pos + step.len();
    }

    // Nothing left: the agent and both daemons are gone, the work dir too.
    for pid in &leftovers.0 {
        assert!(
            !alive(*pid),
            "pid {pid} started by the demo still runs:\n{text}"
        );
    }
    let work = text
        .lines()
        .find_map(|l| l.strip_prefix("work dir: "))
        .expect("the demo names its work dir");
    assert!(!Path::new(work).exists(), "{work} was not removed");
    assert!(text.trim_end().ends_with("demo finished."), "{text}");
}
