//! systemd's notify protocol (`Type=notify`, `WatchdogSec=`), spoken over
//! `$NOTIFY_SOCKET` with a plain datagram; a no-op when not under systemd.

use std::time::Duration;

/// Sends one notify line (`READY=1`, `STOPPING=1`, `WATCHDOG=1`,
/// `STATUS=...`). Errors are logged at debug and otherwise ignored: systemd
/// notification is a courtesy, never a reason to stop.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let result = (|| -> std::io::Result<()> {
        let sock = std::os::unix::net::UnixDatagram::unbound()?;
        let bytes = path.as_encoded_bytes();
        if let Some(name) = bytes.strip_prefix(b"@") {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(state.as_bytes(), &addr)?;
        } else {
            sock.send_to(state.as_bytes(), &path)?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        tracing::debug!(error = %e, state, "systemd notify failed");
    }
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
