//! The `ipmi` driver: `ipmitool -I lanplus` (IPMI v2 over LAN).
//!
//! The password reaches ipmitool through its environment (`-E`,
//! `IPMI_PASSWORD`), never on its command line, where every local user could
//! read it in `/proc/<pid>/cmdline`. Each run has ipmitool's own session
//! timeout and retries (`-N`, `-R`) and a hard kill deadline on top. `-v`
//! makes ipmitool say why a session failed, which is how a wrong password
//! ("RAKP 2 HMAC is invalid") is told apart from a BMC that does not answer.

use std::time::Duration;

use async_trait::async_trait;
use novaha_core::drivers::fence::{FenceError, FenceTarget, Fenced, Fencer};
use novaha_core::{NodeName, PowerState};
use tokio::process::Command;

use crate::common::{ToolFailure, config_err, confirm_off, run_tool, sanitize};
use crate::settings::IpmiSettings;

/// What ipmitool is asked to do.
#[derive(Clone, Copy, Debug)]
enum PowerCommand {
    Status,
    Off,
    On,
}

impl PowerCommand {
    fn arg(self) -> &'static str {
        match self {
            Self::Status => "status",
            Self::Off => "off",
            Self::On => "on",
        }
    }
}

/// IPMI v2 (RMCP+) passwords are at most 20 bytes; ipmitool refuses longer.
const MAX_PASSWORD_BYTES: usize = 20;

/// Substrings of ipmitool's `-v` stderr that mean the credentials were
/// rejected (wrong password, unknown user, not enough privilege).
const AUTH_MARKERS: &[&str] = &[
    "rakp 2 hmac is invalid",
    "unauthorized name",
    "invalid user name",
    "insufficient privilege",
    "rakp 2 message indicates an error",
    "invalid role",
];

/// Substrings that mean the BMC could not be reached or did not answer.
const UNREACHABLE_MARKERS: &[&str] = &[
    "unable to establish",
    "get auth capabilities error",
    "no response",
    "timeout",
    "connection refused",
    "no route to host",
    "name or service not known",
];

/// The ipmi fencer. Cheap to share: one per registry.
#[derive(Debug)]
pub struct IpmiFencer {
    settings: IpmiSettings,
    confirm_timeout: Duration,
    poll_interval: Duration,
}

impl IpmiFencer {
    /// A fencer with these ipmitool settings, waiting up to
    /// `confirm_timeout` (reading every `poll_interval`) for off.
    pub fn new(settings: IpmiSettings, confirm_timeout: Duration, poll_interval: Duration) -> Self {
        Self {
            settings,
            confirm_timeout,
            poll_interval,
        }
    }

    fn command(&self, target: &FenceTarget, what: PowerCommand) -> Result<Command, FenceError> {
        let node = &target.node;
        let bmc = &target.bmc;
        let host = bmc
            .ip
            .as_deref()
            .ok_or_else(|| config_err(node, "no BMC address (config/bmc/ip)"))?;
        if bmc.password.expose().len() > MAX_PASSWORD_BYTES {
            return Err(config_err(
                node,
                format!(
                    "config/bmc/password is longer than the {MAX_PASSWORD_BYTES} bytes IPMI v2 allows"
                ),
            ));
        }
        let port = bmc.port.unwrap_or(self.settings.default_port);
        let session_secs = self.settings.session_timeout.as_secs_f64().ceil().max(1.0) as u64;
        let mut cmd = Command::new(&self.settings.ipmitool);
        cmd.args(["-I", "lanplus", "-C"])
            .arg(self.settings.cipher_suite.to_string())
            .arg("-H")
            .arg(host)
            .arg("-p")
            .arg(port.to_string())
            .arg("-N")
            .arg(session_secs.to_string())
            .arg("-R")
            .arg(self.settings.retries.to_string());
        if let Some(user) = bmc.user.as_deref().filter(|u| !u.is_empty()) {
            cmd.arg("-U").arg(user);
        }
        // The password travels in the environment only (`-E`).
        cmd.arg("-E").env("IPMI_PASSWORD", bmc.password.expose());
        cmd.args(["-v", "chassis", "power", what.arg()]);
        Ok(cmd)
    }

    /// Runs one ipmitool power command and returns its stdout.
    async fn run(&self, target: &FenceTarget, what: PowerCommand) -> Result<String, FenceError> {
        let node = &target.node;
        let cmd = self.command(target, what)?;
        let out = run_tool(cmd, self.settings.command_timeout)
            .await
            .map_err(|f| match f {
                ToolFailure::Spawn(e) => config_err(
                    node,
                    format!("cannot run {}: {e}", self.settings.ipmitool.display()),
                ),
                ToolFailure::Timeout(t) => FenceError::Unreachable {
                    node: node.clone(),
                    detail: format!("ipmitool power {} killed after {t:?}", what.arg()),
                },
            })?;
        let secret = &target.bmc.password;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            return Ok(stdout);
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        Err(classify(node, what, &stderr, &stdout, secret))
    }
}

/// Turns a failed ipmitool run into the error it means.
fn classify(
    node: &NodeName,
    what: PowerCommand,
    stderr: &str,
    stdout: &str,
    secret: &novaha_core::Secret,
) -> FenceError {
    let lower = stderr.to_ascii_lowercase();
    // Keep the lines that say something: drop -v's chatter.
    let said: Vec<&str> = stderr
        .lines()
        .chain(stdout.lines())
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("Loading IANA") && !l.starts_with("Running "))
        .collect();
    let detail = sanitize(
        &format!("ipmitool power {}: {}", what.arg(), said.join("; ")),
        secret,
    );
    if AUTH_MARKERS.iter().any(|m| lower.contains(m)) {
        FenceError::Auth {
            node: node.clone(),
            detail,
        }
    } else if UNREACHABLE_MARKERS.iter().any(|m| lower.contains(m)) {
        FenceError::Unreachable {
            node: node.clone(),
            detail,
        }
    } else {
        FenceError::Protocol {
            node: node.clone(),
            detail,
        }
    }
}

/// Reads `Chassis Power is on|off` from ipmitool's stdout.
fn parse_status(stdout: &str) -> Option<PowerState> {
    stdout.lines().find_map(|l| {
        let l = l.trim().to_ascii_lowercase();
        let rest = l.strip_prefix("chassis power is ")?;
        match rest.trim() {
            "on" => Some(PowerState::On),
            "off" => Some(PowerState::Off),
            _ => None,
        }
    })
}

#[async_trait]
impl Fencer for IpmiFencer {
    fn driver(&self) -> &'static str {
        "ipmi"
    }

    async fn fence(&self, target: &FenceTarget) -> Result<Fenced, FenceError> {
        let node = &target.node;
        tracing::info!(node = %node, driver = "ipmi", "sending power off");
        if let Err(e) = self.run(target, PowerCommand::Off).await {
            // Some BMCs refuse "power off" on a chassis that is already off.
            // A fresh reading of Off is the same evidence as after a
            // successful command. Only for an error answer (Protocol): auth,
            // config and unreachable errors would not read any better.
            if !matches!(e, FenceError::Protocol { .. }) {
                return Err(e);
            }
            if let Ok(PowerState::Off) = self.power_state(target).await {
                tracing::info!(node = %node, driver = "ipmi", "power off refused but power reads off");
                return Fenced::from_observation(
                    node.clone(),
                    "ipmi",
                    PowerState::Off,
                    chrono::Utc::now(),
                )
                .ok_or(e);
            }
            return Err(e);
        }
        tracing::info!(node = %node, driver = "ipmi", "power off accepted; confirming");
        let fenced = confirm_off(
            node,
            "ipmi",
            self.confirm_timeout,
            self.poll_interval,
            || self.power_state(target),
        )
        .await?;
        tracing::info!(node = %node, driver = "ipmi", "power verified off");
        Ok(fenced)
    }

    async fn power_state(&self, target: &FenceTarget) -> Result<PowerState, FenceError> {
        let stdout = self.run(target, PowerCommand::Status).await?;
        parse_status(&stdout).ok_or_else(|| FenceError::Protocol {
            node: target.node.clone(),
            detail: sanitize(
                &format!("ipmitool power status: unexpected answer {stdout:?}"),
                &target.bmc.password,
            ),
        })
    }

    async fn unfence(&self, target: &FenceTarget) -> Result<(), FenceError> {
        tracing::info!(node = %target.node, driver = "ipmi", "sending power on");
        self.run(target, PowerCommand::On).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use novaha_core::Secret;

    #[test]
    fn status_lines_parse() {
        assert_eq!(parse_status("Chassis Power is on\n"), Some(PowerState::On));
        assert_eq!(parse_status("Chassis Power is off"), Some(PowerState::Off));
        assert_eq!(parse_status("Chassis Power is weird"), None);
        assert_eq!(parse_status(""), None);
    }

    #[test]
    fn wrong_password_and_dead_bmc_are_told_apart() {
        let n = NodeName::from("c1");
        let s = Secret::new("pw");
        let auth = classify(
            &n,
            PowerCommand::Off,
            "Loading IANA PEN Registry...\n> RAKP 2 HMAC is invalid\nError: Unable to establish IPMI v2 / RMCP+ session\n",
            "",
            &s,
        );
        assert!(matches!(auth, FenceError::Auth { .. }), "{auth}");
        assert!(!auth.to_string().contains("IANA"));
        let dead = classify(
            &n,
            PowerCommand::Status,
            "Get Auth Capabilities error\nError issuing Get Channel Authentication Capabilities request\nError: Unable to establish IPMI v2 / RMCP+ session\n",
            "",
            &s,
        );
        assert!(matches!(dead, FenceError::Unreachable { .. }), "{dead}");
        let other = classify(
            &n,
            PowerCommand::Off,
            "Set Chassis Power Control to Down/Off failed: Unspecified error",
            "",
            &s,
        );
        assert!(matches!(other, FenceError::Protocol { .. }), "{other}");
    }
}
