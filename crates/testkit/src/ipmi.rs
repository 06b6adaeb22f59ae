//! A simulated BMC: OpenIPMI's `ipmi_sim` on a free UDP port, its own state
//! dir, one user, and a chassis power hook (a small shell script) that keeps
//! the power in a file and logs every call, so a test can see that the
//! chassis really went off, make the BMC refuse to power off, or stop it
//! (BMC down). Each call is also logged with its wall-clock time
//! (`events.log`), so a test can order power changes against other peers'
//! records. Installed by `scripts/deps/ipmi.sh`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::process::{ChildGuard, free_udp_port, tool, wait_until};

const HOOK: &str = r#"#!/bin/sh
# ipmi_sim chassis_control hook: `hook.sh get power` | `hook.sh set power 0|1`.
dir="$(dirname "$0")"
echo "$*" >> "$dir/calls.log"
echo "$(date +%s.%N) $*" >> "$dir/events.log"
case "$1 $2" in
  "get power") printf 'power:%s\n' "$(cat "$dir/power")" ;;
  "set power")
    if [ -e "$dir/fail_set" ]; then exit 1; fi
    if [ "$3" = 0 ] && [ -e "$dir/refuse_off" ]; then exit 0; fi
    echo "$3" > "$dir/power" ;;
  *) ;;
esac
"#;

/// One logged power call or change, with its wall-clock time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PowerEvent {
    /// When the hook ran (or [`IpmiBmc::set_power`] wrote the power file).
    pub at: SystemTime,
    /// The hook's arguments (`get power`, `set power 0`, ...), or
    /// `set power 0|1 (direct)` for [`IpmiBmc::set_power`].
    pub call: String,
}

impl PowerEvent {
    /// The power state this event set: `Some(true)` for on, `Some(false)`
    /// for off, `None` for a read.
    pub fn sets_power(&self) -> Option<bool> {
        let call = self.call.strip_suffix(" (direct)").unwrap_or(&self.call);
        match call {
            "set power 1" => Some(true),
            "set power 0" => Some(false),
            _ => None,
        }
    }
}

/// One running simulated BMC, killed when dropped.
#[derive(Debug)]
pub struct IpmiBmc {
    child: ChildGuard,
    dir: tempfile::TempDir,
    port: u16,
}

/// The `ipmitool` binary the tests (and the fence driver under test) use.
pub fn ipmitool() -> PathBuf {
    tool("NOVAHA_IPMITOOL", &["/usr/bin/ipmitool"], "ipmitool")
}

fn ipmi_sim() -> PathBuf {
    tool("NOVAHA_IPMI_SIM", &["/usr/bin/ipmi_sim"], "ipmi_sim")
}

/// True when something is bound to UDP `port` on this host (per /proc).
fn udp_bound(port: u16) -> bool {
    let needle = format!(":{port:04X} ");
    ["/proc/net/udp", "/proc/net/udp6"].iter().any(|f| {
        fs::read_to_string(f)
            .map(|t| {
                t.lines().skip(1).any(|l| {
                    l.split_whitespace()
                        .nth(1)
                        .is_some_and(|local| format!("{local} ").ends_with(&needle))
                })
            })
            .unwrap_or(false)
    })
}

impl IpmiBmc {
    /// Starts a BMC whose chassis is powered on, accepting `user` /
    /// `password` (admin privilege) over IPMI v2 lanplus on 127.0.0.1.
    pub fn start(user: &str, password: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("novaha-ipmi-")
            .tempdir()
            .expect("temp dir");
        let hook = dir.path().join("hook.sh");
        fs::write(&hook, HOOK).expect("write hook");
        fs::set_permissions(&hook, fs::Permissions::from_mode(0o755)).expect("chmod hook");
        fs::write(dir.path().join("power"), "1\n").expect("write power");
        fs::write(dir.path().join("calls.log"), "").expect("write calls.log");
        fs::create_dir(dir.path().join("state")).expect("state dir");
        fs::write(
            dir.path().join("bmc.emu"),
            "mc_setbmc 0x20\n\
             mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\n\
             sel_enable 0x20 1000 0x0a\n\
             mc_enable 0x20\n",
        )
        .expect("write bmc.emu");
        for attempt in 0..5 {
            let port = free_udp_port();
            let auths = "none md2 md5 straight";
            let lan = format!(
                "name \"novaha-test-bmc\"\n\
                 set_working_mc 0x20\n\
                 startlan 1\n\
                 \x20 addr 127.0.0.1 {port}\n\
                 \x20 priv_limit admin\n\
                 \x20 allowed_auths_callback {auths}\n\
                 \x20 allowed_auths_user {auths}\n\
                 \x20 allowed_auths_operator {auths}\n\
                 \x20 allowed_auths_admin {auths}\n\
                 \x20 guid a123456789abcdefa123456789abcdef\n\
                 endlan\n\
                 chassis_control \"{hook}\"\n\
                 user 2 true \"{user}\" \"{password}\" admin 10 {auths}\n",
                hook = hook.display()
            );
            fs::write(dir.path().join("lan.conf"), lan).expect("write lan.conf");
            let state = dir.path().join("state");
            let _ = fs::remove_dir_all(&state);
            fs::create_dir(&state).expect("state dir");
            let log = fs::File::create(dir.path().join("ipmi_sim.log")).expect("log file");
            let mut child = ChildGuard::spawn(
                "ipmi_sim",
                Command::new(ipmi_sim())
                    .arg("-n")
                    .arg("-c")
                    .arg(dir.path().join("lan.conf"))
                    .arg("-f")
                    .arg(dir.path().join("bmc.emu"))
                    .arg("-s")
                    .arg(&state)
                    .stdin(Stdio::null())
                    .stdout(log.try_clone().expect("dup log"))
                    .stderr(log),
            );
            let up = wait_until(Duration::from_secs(5), || {
                udp_bound(port) || !child.is_running()
            });
            if up && child.is_running() {
                return Self { child, dir, port };
            }
            eprintln!("ipmi_sim attempt {attempt} on udp port {port} failed; retrying");
        }
        panic!("ipmi_sim did not start (log in a removed temp dir)");
    }

    /// The UDP port the BMC listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The temp dir holding the hook, its power file and its call log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// True when the simulated chassis is powered on (the hook's file).
    pub fn power_is_on(&self) -> bool {
        fs::read_to_string(self.dir.path().join("power"))
            .expect("read power file")
            .trim()
            == "1"
    }

    /// Sets the simulated chassis power directly (as a BMC's power-restore
    /// policy would), logged in the events as `set power N (direct)`.
    pub fn set_power(&self, on: bool) {
        let bit = if on { "1" } else { "0" };
        fs::write(self.dir.path().join("power"), format!("{bit}\n")).expect("write power file");
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("the clock is after 1970");
        let line = format!(
            "{}.{:09} set power {bit} (direct)\n",
            now.as_secs(),
            now.subsec_nanos()
        );
        fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(self.dir.path().join("events.log"))
            .and_then(|mut f| std::io::Write::write_all(&mut f, line.as_bytes()))
            .expect("append to events.log");
    }

    /// Every hook call and direct power change so far, in order, with its
    /// wall-clock time (the hook's `date +%s.%N`).
    pub fn power_events(&self) -> Vec<PowerEvent> {
        let text = fs::read_to_string(self.dir.path().join("events.log")).unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                let (ts, call) = l.split_once(' ')?;
                let (secs, nanos) = ts.split_once('.')?;
                let at = UNIX_EPOCH + Duration::new(secs.parse().ok()?, nanos.parse().ok()?);
                Some(PowerEvent {
                    at,
                    call: call.to_owned(),
                })
            })
            .collect()
    }

    /// Makes the BMC accept "power off" but leave the chassis on (a BMC that
    /// still reads "on" after the off command), or undoes it.
    pub fn refuse_power_off(&self, refuse: bool) {
        let flag = self.dir.path().join("refuse_off");
        if refuse {
            fs::write(flag, "").expect("write refuse_off");
        } else {
            let _ = fs::remove_file(flag);
        }
    }

    /// Makes every power command fail (the BMC answers an error), or undoes it.
    pub fn fail_power_commands(&self, fail: bool) {
        let flag = self.dir.path().join("fail_set");
        if fail {
            fs::write(flag, "").expect("write fail_set");
        } else {
            let _ = fs::remove_file(flag);
        }
    }

    /// Every hook call so far, one per line (`get power`, `set power 0`, ...).
    pub fn calls(&self) -> Vec<String> {
        fs::read_to_string(self.dir.path().join("calls.log"))
            .expect("read calls.log")
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The pid of the `ipmi_sim` process.
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// Kills the simulator: the BMC is down (no answer at all).
    pub fn stop(&mut self) {
        self.child.kill();
    }
}
