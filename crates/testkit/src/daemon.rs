//! Real `novaha` processes for the end-to-end tests: a config file per
//! process, its log captured to a file in the test's temp dir, and the
//! process killed when the guard is dropped.
//!
//! The binary's path comes from the test (`env!("CARGO_BIN_EXE_novaha")`),
//! since only tests of the `novaha` package know it.
//!
//! Also what the end-to-end tests share to look at a cluster the way an
//! operator does: the CLI with one config ([`Cli`]: `status --json`, waits
//! on it), `/metrics` ([`http_get`], [`listen_of`]) and a node's recovery
//! record in Consul ([`recovery_record`]).

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::consul::ConsulAgent;
use crate::process::{ChildGuard, free_port, tail_lines};

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
    /// More `[monitor]` keys, verbatim (`"threshold = 1\n"`).
    pub monitor: String,
    /// The `[http] listen` port (a free one by default).
    pub http_port: u16,
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
            monitor: String::new(),
            http_port: free_port(),
            extra: String::new(),
        }
    }

    /// Writes `<dir>/<id>.toml` and returns its path. Each config gets its
    /// own free HTTP port (from [`DaemonConfig::fast`]) so that two daemons
    /// never clash.
    pub fn write(&self, dir: &Path) -> PathBuf {
        let path = dir.join(format!("{}.toml", self.id));
        let text = format!(
            "[consul]\naddress = \"{}\"\nprefix = \"{}\"\nrequest_timeout = \"5s\"\n\n\
             [election]\nsession_ttl = \"10s\"\nlock_delay = \"{}\"\ncheck_ttl = \"{}\"\nid = \"{}\"\n\n\
             [monitor]\ninterval = \"{}\"\n{}\n[http]\nlisten = \"127.0.0.1:{}\"\n\n\
             [log]\nformat = \"text\"\nlevel = \"info\"\n{}",
            self.consul,
            self.prefix,
            self.lock_delay,
            self.check_ttl,
            self.id,
            self.interval,
            self.monitor,
            self.http_port,
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
        Self::try_spawn(bin, config, id, dir, args, false)
            .unwrap_or_else(|e| panic!("start novaha {id}: {e}"))
    }

    /// [`Daemon::spawn`], saying why it could not start instead of
    /// panicking; with `own_process_group` the daemon gets its own process
    /// group, so that a terminal's Ctrl-C reaches only the caller, which
    /// then stops it ([`Daemon::stop`]).
    pub fn try_spawn(
        bin: &Path,
        config: &Path,
        id: &str,
        dir: &Path,
        args: &[&str],
        own_process_group: bool,
    ) -> std::io::Result<Self> {
        let log = dir.join(format!("{id}.log"));
        let out = File::create(&log)?;
        let err = out.try_clone()?;
        let mut cmd = Command::new(bin);
        cmd.arg("run")
            .arg("-c")
            .arg(config)
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        if own_process_group {
            cmd.process_group(0);
        }
        let guard = ChildGuard::try_spawn(&format!("novaha {id}"), &mut cmd)?;
        Ok(Self {
            id: id.to_owned(),
            guard,
            log,
        })
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.guard.pid()
    }

    /// The file its stdout and stderr go to.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last `lines` lines of its log.
    pub fn tail(&self, lines: usize) -> String {
        tail_lines(&self.log, lines)
    }

    /// Stops it gracefully: SIGTERM (it resigns its lock), then SIGKILL
    /// after `grace`; returns how it ended.
    pub fn stop(&mut self, grace: Duration) -> String {
        self.guard.stop("TERM", grace)
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

/// Inline Keystone credentials (the simulator's or any cloud's): the
/// `[openstack]` section of an end-to-end test daemon.
#[derive(Clone, Debug)]
pub struct OpenStackAuth {
    /// Keystone's v3 URL.
    pub auth_url: String,
    /// User name (domain `Default`).
    pub username: String,
    /// Its password.
    pub password: String,
    /// Project name (domain `Default`).
    pub project_name: String,
}

impl OpenStackAuth {
    /// `[openstack]` with a 5 s timeout and no read retries (a test sees
    /// failures at once), and `[openstack.auth]`.
    pub fn section(&self) -> String {
        format!(
            "\n[openstack]\ntimeout = \"5s\"\n\n[openstack.retry]\nattempts = 1\n\n\
             [openstack.auth]\nauth_url = \"{}\"\nusername = \"{}\"\npassword = \"{}\"\n\
             project_name = \"{}\"\nuser_domain_name = \"Default\"\nproject_domain_name = \"Default\"\n",
            self.auth_url, self.username, self.password, self.project_name
        )
    }
}

/// The `novaha` CLI as an operator runs it, with one config file (usually
/// an `admin.toml` no daemon runs with).
#[derive(Clone, Debug)]
pub struct Cli {
    bin: PathBuf,
    config: PathBuf,
}

impl Cli {
    /// `bin ... -c config`.
    pub fn new(bin: &Path, config: &Path) -> Self {
        Self {
            bin: bin.to_owned(),
            config: config.to_owned(),
        }
    }

    /// Runs `novaha args... -c config`; panics with its stderr unless it
    /// succeeds.
    pub fn run(&self, args: &[&str]) -> Output {
        let config = self.config.to_str().expect("a UTF-8 config path");
        let mut all = args.to_vec();
        all.extend(["-c", config]);
        let o = novaha(&self.bin, &all);
        assert!(
            o.status.success(),
            "novaha {}: {:?}\n{}",
            all.join(" "),
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
        o
    }

    /// Runs `novaha status args... -c config`; panics with its stderr
    /// unless it exits 0 or 4 (something needs a human: a stuck recovery,
    /// a blind leader, ... is a state tests look at, not a failure).
    fn run_status(&self, args: &[&str]) -> Output {
        let config = self.config.to_str().expect("a UTF-8 config path");
        let mut all = vec!["status"];
        all.extend(args);
        all.extend(["-c", config]);
        let o = novaha(&self.bin, &all);
        assert!(
            matches!(o.status.code(), Some(0 | 4)),
            "novaha {}: {:?}\n{}",
            all.join(" "),
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
        o
    }

    /// `novaha status --json`.
    pub fn status(&self) -> Value {
        let o = self.run_status(&["--json"]);
        serde_json::from_slice(&o.stdout).expect("status --json prints JSON")
    }

    /// `novaha status` (the text table).
    pub fn status_text(&self) -> String {
        String::from_utf8(self.run_status(&[]).stdout).expect("status prints UTF-8")
    }

    /// Polls `status --json` every 200 ms until `check` holds and returns
    /// that status; panics naming `what` with the last status and `logs()`
    /// (the daemons' logs) if it does not within `timeout`.
    pub fn wait(
        &self,
        what: &str,
        timeout: Duration,
        check: impl Fn(&Value) -> bool,
        logs: impl Fn() -> String,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.status();
            if check(&s) {
                return s;
            }
            if Instant::now() >= deadline {
                panic!("{what}: not within {timeout:?}\nstatus: {s:#}\n{}", logs());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The `[http] listen` address written in a daemon's config file.
pub fn listen_of(config: &Path) -> String {
    let text = std::fs::read_to_string(config).expect("read the daemon config");
    text.lines()
        .find_map(|l| l.strip_prefix("listen = \""))
        .expect("the config has [http] listen")
        .trim_end_matches('"')
        .to_owned()
}

/// `GET path` on `addr` over plain HTTP/1.0: the whole answer (status
/// line, headers and body).
pub fn http_get(addr: &str, path: &str) -> String {
    let mut conn = std::net::TcpStream::connect(addr).expect("connect to the daemon's HTTP");
    conn.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("set a read timeout");
    write!(
        conn,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .expect("send the request");
    let mut out = String::new();
    conn.read_to_string(&mut out).expect("read the answer");
    out
}

/// A compute node's live recovery record
/// (`<prefix>/compute_nodes/<node>/internal/recovery`), if any.
pub fn recovery_record(agent: &ConsulAgent, prefix: &str, node: &str) -> Option<Value> {
    agent
        .kv_get(&format!("{prefix}/compute_nodes/{node}/internal/recovery"))
        .map(|raw| serde_json::from_slice(&raw).expect("the recovery record is JSON"))
}
