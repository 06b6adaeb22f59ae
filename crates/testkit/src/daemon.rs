//! Real `novaha` processes for the end-to-end tests: a config file per
//! process, its log captured to a file in the test's temp dir, and the
//! process killed when the guard is dropped.
//!
//! The binary's path comes from the test (`env!("CARGO_BIN_EXE_novaha")`),
//! since only tests of the `novaha` package know it.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::process::{ChildGuard, free_port};

/// The settings of one test daemon's config file.
#[derive(Clone, Debug)]
pub struct DaemonConfig {
    /// Consul's HTTP address.
    pub consul: String,
    /// The K/V prefix (unique per test).
    pub prefix: String,
    /// `[election] id`.
    pub id: String,
    /// `[election] lock_delay`.
    pub lock_delay: &'static str,
    /// `[election] check_ttl`.
    pub check_ttl: &'static str,
    /// `[monitor] interval`.
    pub interval: &'static str,
    /// Appended verbatim (more sections).
    pub extra: String,
}

impl DaemonConfig {
    /// Fast-failover settings: session TTL 10s, lock-delay 1s, check TTL
    /// 2s, a 1s cycle.
    pub fn fast(consul: &str, prefix: &str, id: &str) -> Self {
        Self {
            consul: consul.to_owned(),
            prefix: prefix.to_owned(),
            id: id.to_owned(),
            lock_delay: "1s",
            check_ttl: "2s",
            interval: "1s",
            extra: String::new(),
        }
    }

    /// Writes `<dir>/<id>.toml` and returns its path. The HTTP listener
    /// gets a free port so that two daemons never clash.
    pub fn write(&self, dir: &Path) -> PathBuf {
        let path = dir.join(format!("{}.toml", self.id));
        let text = format!(
            "[consul]\naddress = \"{}\"\nprefix = \"{}\"\nrequest_timeout = \"5s\"\n\n\
             [election]\nsession_ttl = \"10s\"\nlock_delay = \"{}\"\ncheck_ttl = \"{}\"\nid = \"{}\"\n\n\
             [monitor]\ninterval = \"{}\"\n\n[http]\nlisten = \"127.0.0.1:{}\"\n\n\
             [log]\nformat = \"text\"\nlevel = \"info\"\n{}",
            self.consul,
            self.prefix,
            self.lock_delay,
            self.check_ttl,
            self.id,
            self.interval,
            free_port(),
            self.extra
        );
        std::fs::write(&path, text).expect("write the daemon config");
        path
    }
}

/// A running `novaha run`, its stdout and stderr in `<dir>/<id>.log`.
#[derive(Debug)]
pub struct Daemon {
    /// The election id it runs with.
    pub id: String,
    guard: ChildGuard,
    log: PathBuf,
}

impl Daemon {
    /// Starts `bin run -c config` (plus `args`) with `RUST_LOG` cleared.
    pub fn spawn(bin: &Path, config: &Path, id: &str, dir: &Path, args: &[&str]) -> Self {
        let log = dir.join(format!("{id}.log"));
        let out = File::create(&log).expect("create the daemon log");
        let err = out.try_clone().expect("clone the log handle");
        let mut cmd = Command::new(bin);
        cmd.arg("run")
            .arg("-c")
            .arg(config)
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let guard = ChildGuard::spawn(&format!("novaha {id}"), &mut cmd);
        Self {
            id: id.to_owned(),
            guard,
            log,
        }
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How many times `needle` occurs in its log.
    pub fn count(&self, needle: &str) -> usize {
        self.log().matches(needle).count()
    }

    /// Waits until its log holds `needle` at least `n` times.
    pub fn wait_log(&self, needle: &str, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.count(needle) >= n {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The process guard (signals, exit status).
    pub fn guard(&mut self) -> &mut ChildGuard {
        &mut self.guard
    }
}

/// Runs `bin args...` to completion with `RUST_LOG` cleared.
pub fn novaha(bin: &Path, args: &[&str]) -> Output {
    Command::new(bin)
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run novaha")
}
