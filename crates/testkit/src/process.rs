//! Shared process plumbing: free ports, child guards, readiness waits, and
//! where the installed tools live.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// The repository root (two levels above this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/testkit sits two levels below the repo root")
        .to_path_buf()
}

/// The ignored download cache (`.cache/` at the repo root, or `NOVAHA_CACHE`).
pub fn cache_dir() -> PathBuf {
    std::env::var_os("NOVAHA_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".cache"))
}

/// Where [`find_tool`] found a tool (for a program that says which binary
/// it uses and why).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ToolSource {
    /// The environment variable named by the caller.
    Env,
    /// One of the caller's candidates (the cache dir, or an absolute path).
    Candidate,
    /// `PATH`.
    Path,
}

/// Looks for an installed tool: the environment variable `env` if set (its
/// value as is, even when it names no file: the caller asked for it), then
/// each of `candidates` (absolute, or relative to the cache dir), then
/// `PATH`. `None` when it is nowhere.
pub fn find_tool(env: &str, candidates: &[&str], name: &str) -> Option<(PathBuf, ToolSource)> {
    if let Some(p) = std::env::var_os(env) {
        return Some((PathBuf::from(p), ToolSource::Env));
    }
    for c in candidates {
        let p = Path::new(c);
        let p = if p.is_absolute() {
            p.to_path_buf()
        } else {
            cache_dir().join(p)
        };
        if p.is_file() {
            return Some((p, ToolSource::Candidate));
        }
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .map(|p| (p, ToolSource::Path))
}

/// Finds an installed tool as [`find_tool`] does. Panics naming the install
/// command when it is missing: a missing tool is a failure, not a skip.
pub fn tool(env: &str, candidates: &[&str], name: &str) -> PathBuf {
    match find_tool(env, candidates, name) {
        Some((p, _)) => p,
        None => panic!(
            "{name} not found (set {env}, or run scripts/test-deps.sh to install the test tools)"
        ),
    }
}

/// The last `lines` lines of the text file at `path` (empty when it cannot
/// be read): the end of a child's log for an error message.
pub fn tail_lines(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A free TCP port on 127.0.0.1 (bound to port 0 and released). A tiny race
/// remains between release and reuse; harnesses retry start-up on a clash.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// A free UDP port on 127.0.0.1 (for IPMI LAN).
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("bind udp 127.0.0.1:0")
}

/// Polls until something accepts TCP connections on `port`, or panics after
/// `timeout` with `what` in the message.
pub fn wait_for_tcp(port: u16, timeout: Duration, what: &str) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("{what} did not listen on 127.0.0.1:{port} within {timeout:?}");
}

/// Polls `check` every 25 ms until it returns true or `timeout` passes.
/// Returns whether it became true.
pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A child process killed (SIGKILL) and reaped when dropped, so a panicking
/// test leaves nothing behind.
#[derive(Debug)]
pub struct ChildGuard {
    name: String,
    child: Option<Child>,
}

impl ChildGuard {
    /// Spawns `cmd`, panicking with `name` if it cannot start.
    pub fn spawn(name: &str, cmd: &mut Command) -> Self {
        Self::try_spawn(name, cmd).unwrap_or_else(|e| panic!("start {name} ({cmd:?}): {e}"))
    }

    /// Spawns `cmd`, or says why it could not start (for a program, such as
    /// the demo, that reports errors instead of panicking).
    pub fn try_spawn(name: &str, cmd: &mut Command) -> std::io::Result<Self> {
        let child = cmd.spawn()?;
        Ok(Self {
            name: name.to_owned(),
            child: Some(child),
        })
    }

    /// The name it was started with.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Sends `signal` (e.g. "TERM", "KILL", "STOP", "CONT") with kill(1).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(
            status.success(),
            "kill -{signal} {} ({})",
            self.pid(),
            self.name
        );
    }

    /// Waits up to `timeout` for the child to exit; returns its exit code
    /// (`None` if killed by a signal), or panics on timeout.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let child = self.child.as_mut().expect("child already reaped");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = child.try_wait().expect("try_wait") {
                self.child = None;
                return st.code();
            }
            if Instant::now() >= deadline {
                panic!(
                    "{} (pid {}) did not exit within {timeout:?}",
                    self.name,
                    child.id()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// True while the child has not exited.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().map(|s| s.is_none()).unwrap_or(false),
            None => false,
        }
    }

    /// Stops the child gracefully: sends `signal` (e.g. "TERM" for a daemon,
    /// which then resigns its lock; "INT" for a Consul agent, which then
    /// leaves), waits up to `grace` for it to exit, then kills it. Never
    /// panics; returns how it ended, for a line of output.
    pub fn stop(&mut self, signal: &str, grace: Duration) -> String {
        let Some(child) = self.child.as_mut() else {
            return format!("{} had already been stopped", self.name);
        };
        if let Ok(Some(st)) = child.try_wait() {
            self.child = None;
            return format!("{} had already exited ({st})", self.name);
        }
        // A failed kill(1) (the child exited meanwhile) is seen below.
        let _ = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        let deadline = Instant::now() + grace;
        loop {
            match child.try_wait() {
                Ok(Some(st)) => {
                    self.child = None;
                    return format!("{} stopped ({st})", self.name);
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Ok(None) => {
                    self.kill();
                    return format!("{} did not stop within {grace:?}: killed", self.name);
                }
                Err(e) => {
                    self.kill();
                    return format!("{} could not be waited for ({e}): killed", self.name);
                }
            }
        }
    }

    /// Kills and reaps the child now.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}
