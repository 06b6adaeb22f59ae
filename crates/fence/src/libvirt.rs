//! The `libvirt` driver: `virsh -c URI destroy DOMAIN`, verified with
//! `virsh -c URI domstate DOMAIN` reading `shut off`. For labs and nested
//! clouds whose "compute nodes" are libvirt domains.
//!
//! The URI is `config/bmc/uri`, else `[fence.libvirt] uri`; the domain is
//! `config/bmc/domain`, else the node's name. When the node has a
//! `config/bmc/password`, it reaches virsh through a private libvirt auth
//! file (mode 0600, `LIBVIRT_AUTH_FILE`), never on the command line.

use std::io::Write;
use std::time::Duration;

use async_trait::async_trait;
use novaha_core::drivers::fence::{FenceError, FenceTarget, Fenced, Fencer};
use novaha_core::{NodeName, PowerState};
use tokio::process::Command;

use crate::common::{ToolFailure, config_err, confirm_off, run_tool, sanitize};
use crate::settings::LibvirtSettings;

/// The libvirt fencer.
#[derive(Debug)]
pub struct LibvirtFencer {
    settings: LibvirtSettings,
    confirm_timeout: Duration,
    poll_interval: Duration,
}

/// Maps `virsh domstate` output to a power state. Only `shut off` is off;
/// `crashed` (the process may still hold the disks) and anything unknown
/// are not.
fn parse_domstate(stdout: &str) -> PowerState {
    match stdout.lines().next().unwrap_or("").trim() {
        "shut off" => PowerState::Off,
        "running" | "idle" | "blocked" | "paused" | "in shutdown" | "pmsuspended" => PowerState::On,
        _ => PowerState::Unknown,
    }
}

impl LibvirtFencer {
    /// A fencer with these virsh settings.
    pub fn new(
        settings: LibvirtSettings,
        confirm_timeout: Duration,
        poll_interval: Duration,
    ) -> Self {
        Self {
            settings,
            confirm_timeout,
            poll_interval,
        }
    }

    /// Runs `virsh -c URI <verb> DOMAIN`; Ok(stdout) or the error it means.
    /// `tolerate` lists stderr substrings that count as success (e.g.
    /// "domain is not running" for a destroy of a stopped domain).
    async fn virsh(
        &self,
        target: &FenceTarget,
        verb: &str,
        tolerate: &[&str],
    ) -> Result<String, FenceError> {
        let node = &target.node;
        let bmc = &target.bmc;
        let uri = bmc
            .extra
            .get("uri")
            .map(String::as_str)
            .filter(|u| !u.trim().is_empty())
            .or(self.settings.uri.as_deref())
            .ok_or_else(|| {
                config_err(
                    node,
                    "no libvirt URI (config/bmc/uri or [fence.libvirt] uri)",
                )
            })?
            .trim()
            .to_owned();
        let domain = bmc
            .extra
            .get("domain")
            .map(|d| d.trim().to_owned())
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| node.as_str().to_owned());
        let mut cmd = Command::new(&self.settings.virsh);
        cmd.arg("-q").arg("-c").arg(&uri).arg(verb).arg(&domain);
        // Held until the run ends; deleted on drop.
        let _auth_file = if bmc.password.is_empty() {
            None
        } else {
            let mut f = tempfile::Builder::new()
                .prefix("novaha-libvirt-auth-")
                .tempfile()
                .map_err(|e| config_err(node, format!("cannot write libvirt auth file: {e}")))?;
            let user = bmc.user.as_deref().unwrap_or("");
            write!(
                f,
                "[credentials-novaha]\nauthname={user}\npassword={}\n\n[auth-libvirt-default]\ncredentials=novaha\n",
                bmc.password.expose()
            )
            .and_then(|()| f.flush())
            .map_err(|e| config_err(node, format!("cannot write libvirt auth file: {e}")))?;
            cmd.env("LIBVIRT_AUTH_FILE", f.path());
            Some(f)
        };
        let out = run_tool(cmd, self.settings.command_timeout)
            .await
            .map_err(|f| match f {
                ToolFailure::Spawn(e) => config_err(
                    node,
                    format!("cannot run {}: {e}", self.settings.virsh.display()),
                ),
                ToolFailure::Timeout(t) => FenceError::Unreachable {
                    node: node.clone(),
                    detail: format!("virsh {verb} {domain} killed after {t:?}"),
                },
            })?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let lower = stderr.to_ascii_lowercase();
        if out.status.success() || tolerate.iter().any(|t| lower.contains(t)) {
            return Ok(stdout);
        }
        Err(classify(node, verb, &domain, &uri, &stderr, &bmc.password))
    }
}

fn classify(
    node: &NodeName,
    verb: &str,
    domain: &str,
    uri: &str,
    stderr: &str,
    secret: &novaha_core::Secret,
) -> FenceError {
    let lower = stderr.to_ascii_lowercase();
    let detail = sanitize(
        &format!(
            "virsh -c {uri} {verb} {domain}: {}",
            stderr.trim().replace('\n', "; ")
        ),
        secret,
    );
    if lower.contains("authentication failed") || lower.contains("access denied") {
        FenceError::Auth {
            node: node.clone(),
            detail,
        }
    } else if lower.contains("failed to connect")
        || lower.contains("unable to connect")
        || lower.contains("cannot recv data")
        || lower.contains("connection refused")
        || lower.contains("end of file")
    {
        FenceError::Unreachable {
            node: node.clone(),
            detail,
        }
    } else if lower.contains("failed to get domain") || lower.contains("domain not found") {
        config_err(node, detail)
    } else {
        FenceError::Protocol {
            node: node.clone(),
            detail,
        }
    }
}

#[async_trait]
impl Fencer for LibvirtFencer {
    fn driver(&self) -> &'static str {
        "libvirt"
    }

    async fn fence(&self, target: &FenceTarget) -> Result<Fenced, FenceError> {
        tracing::info!(node = %target.node, driver = "libvirt", "destroying domain");
        self.virsh(target, "destroy", &["domain is not running"])
            .await?;
        let fenced = confirm_off(
            &target.node,
            "libvirt",
            self.confirm_timeout,
            self.poll_interval,
            || self.power_state(target),
        )
        .await?;
        tracing::info!(node = %target.node, driver = "libvirt", "domain verified shut off");
        Ok(fenced)
    }

    async fn power_state(&self, target: &FenceTarget) -> Result<PowerState, FenceError> {
        self.virsh(target, "domstate", &[])
            .await
            .map(|out| parse_domstate(&out))
    }

    async fn unfence(&self, target: &FenceTarget) -> Result<(), FenceError> {
        tracing::info!(node = %target.node, driver = "libvirt", "starting domain");
        self.virsh(target, "start", &["domain is already active"])
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domstate_maps_only_shut_off_to_off() {
        assert_eq!(parse_domstate("shut off\n\n"), PowerState::Off);
        assert_eq!(parse_domstate("running\n"), PowerState::On);
        assert_eq!(parse_domstate("paused"), PowerState::On);
        assert_eq!(parse_domstate("crashed"), PowerState::Unknown);
        assert_eq!(parse_domstate(""), PowerState::Unknown);
    }
}
