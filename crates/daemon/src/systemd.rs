//! systemd's notify protocol (`Type=notify`, `WatchdogSec=`), spoken over
//! `$NOTIFY_SOCKET` with a plain datagram; a no-op when not under systemd.
//!
//! The watchdog is pinged by the main loop itself ([`Watchdog::drive`]),
//! never by an independent timer task: a timer task keeps pinging on a
//! spare worker thread while the main loop is blocked, which is exactly the
//! hang the watchdog is there to catch.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// Sends one notify line (`READY=1`, `STOPPING=1`, `WATCHDOG=1`,
/// `STATUS=...`). Errors are logged at debug and otherwise ignored: systemd
/// notification is a courtesy, never a reason to stop.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(e) = notify_to(&path, state) {
        tracing::debug!(error = %e, state, "systemd notify failed");
    }
}

/// Sends one notify line to the socket at `path` (a file path, or an
/// abstract name after `@`).
fn notify_to(path: &std::ffi::OsStr, state: &str) -> std::io::Result<()> {
    let sock = std::os::unix::net::UnixDatagram::unbound()?;
    let bytes = path.as_encoded_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        sock.send_to_addr(state.as_bytes(), &addr)?;
    } else {
        sock.send_to(state.as_bytes(), path)?;
    }
    Ok(())
}

/// Half the watchdog interval systemd asked for (`WATCHDOG_USEC`), when it
/// asked for one for this process.
pub fn watchdog_interval() -> Option<Duration> {
    if let Some(pid) = std::env::var("WATCHDOG_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        && pid != std::process::id()
    {
        return None;
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// The main loop's side of systemd's watchdog: pings `WATCHDOG=1` at half
/// the interval systemd asked for, only from the task that runs the loop.
#[derive(Debug)]
pub struct Watchdog {
    every: Option<Duration>,
    last: Option<Instant>,
    pings: u64,
}

impl Watchdog {
    /// The watchdog systemd asked for through `WATCHDOG_USEC` (a no-op one
    /// when it asked for none).
    pub fn from_env() -> Self {
        Self::new(watchdog_interval())
    }

    /// A watchdog pinging every `every` (`None`: never).
    pub fn new(every: Option<Duration>) -> Self {
        Self {
            every,
            last: None,
            pings: 0,
        }
    }

    /// Whether systemd asked for pings.
    pub fn enabled(&self) -> bool {
        self.every.is_some()
    }

    /// How many pings were sent so far.
    pub fn pings(&self) -> u64 {
        self.pings
    }

    /// Sends `WATCHDOG=1` if the last ping is at least one interval old.
    /// Returns whether it pinged.
    pub fn ping(&mut self) -> bool {
        let Some(every) = self.every else {
            return false;
        };
        let now = Instant::now();
        if self.last.is_some_and(|l| now.duration_since(l) < every) {
            return false;
        }
        self.last = Some(now);
        self.pings += 1;
        notify("WATCHDOG=1");
        true
    }

    /// Runs `work` to completion in the calling task, pinging the watchdog
    /// every interval while it waits. Because `work` and the pings share one
    /// task, a blocked thread or a busy loop inside `work` stops the pings
    /// too and systemd restarts the daemon; `work` is never dropped early.
    pub async fn drive<F: Future>(&mut self, work: F) -> F::Output {
        let Some(every) = self.every else {
            return work.await;
        };
        self.ping();
        tokio::pin!(work);
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                out = &mut work => return out,
                _ = tick.tick() => {
                    self.ping();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_are_rate_limited_to_the_interval() {
        let mut wd = Watchdog::new(Some(Duration::from_millis(200)));
        assert!(wd.ping());
        assert!(!wd.ping());
        std::thread::sleep(Duration::from_millis(210));
        assert!(wd.ping());
        assert_eq!(wd.pings(), 2);
        let mut off = Watchdog::new(None);
        assert!(!off.enabled());
        assert!(!off.ping());
    }

    #[tokio::test]
    async fn drive_pings_while_the_work_waits_and_returns_its_output() {
        let mut wd = Watchdog::new(Some(Duration::from_millis(20)));
        let out = wd
            .drive(async {
                tokio::time::sleep(Duration::from_millis(150)).await;
                7
            })
            .await;
        assert_eq!(out, 7);
        assert!(wd.pings() >= 3, "{} pings in 150 ms at 20 ms", wd.pings());
    }

    /// The point of pinging from the loop: a thread blocked inside the
    /// driven work (a hang) sends no ping at all, so systemd would restart
    /// the daemon. An independent timer task would have kept pinging.
    #[tokio::test(flavor = "current_thread")]
    async fn a_blocked_loop_stops_the_pings() {
        let mut wd = Watchdog::new(Some(Duration::from_millis(20)));
        wd.drive(async {
            std::thread::sleep(Duration::from_millis(200));
        })
        .await;
        assert_eq!(wd.pings(), 1, "only the ping before the work started");
    }

    #[test]
    fn notify_lines_reach_a_path_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify.sock");
        let sock = std::os::unix::net::UnixDatagram::bind(&path).expect("bind");
        notify_to(path.as_os_str(), "WATCHDOG=1").expect("send");
        let mut buf = [0u8; 64];
        let n = sock.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"WATCHDOG=1");
    }
}
