//! `[fence]`: how a failed node is powered off, one variant per driver
//! (the driver registry of STYLE.md: the fence stage adds a driver's keys to
//! its variant and one match arm that builds it). Per-node BMC addresses and
//! credentials come from the K/V tree (`config/bmc/*`), not from here.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::Problems;

fn default_timeout() -> Duration {
    Duration::from_secs(60)
}

/// `[fence]`, tagged by `driver`.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "driver", rename_all = "lowercase")]
pub enum FenceConfig {
    /// `driver = "ipmi"`: ipmitool over IPMI LAN (lanplus).
    Ipmi(IpmiFence),
    /// `driver = "redfish"`: the BMC's Redfish API.
    Redfish(RedfishFence),
    /// `driver = "libvirt"`: virsh destroy of the node's domain.
    Libvirt(LibvirtFence),
    /// `driver = "noop"`: pretends to fence; tests and dry runs only, and
    /// only with `allow_noop = true` beside it.
    Noop(NoopFence),
}

impl Default for FenceConfig {
    fn default() -> Self {
        Self::Ipmi(IpmiFence::default())
    }
}

impl FenceConfig {
    /// The driver's name as written in the file.
    pub fn driver(&self) -> &'static str {
        match self {
            Self::Ipmi(_) => "ipmi",
            Self::Redfish(_) => "redfish",
            Self::Libvirt(_) => "libvirt",
            Self::Noop(_) => "noop",
        }
    }

    /// Checks the chosen driver's keys.
    pub fn validate(&self, problems: &mut Problems) {
        let timeout = match self {
            Self::Ipmi(c) => c.timeout,
            Self::Redfish(c) => c.timeout,
            Self::Libvirt(c) => c.timeout,
            Self::Noop(c) => {
                if !c.allow_noop {
                    problems.push(
                        "fence.driver",
                        "driver \"noop\" never really fences a node: it runs only with \
                         `allow_noop = true` beside it (tests and dry runs only)",
                    );
                }
                return;
            }
        };
        if timeout < Duration::from_secs(1) {
            problems.push(
                "fence.timeout",
                format!(
                    "must be at least 1s, got {}",
                    humantime::format_duration(timeout)
                ),
            );
        }
    }
}

/// `driver = "ipmi"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IpmiFence {
    /// The ipmitool binary.
    pub ipmitool: PathBuf,
    /// How long to wait for the power to read off after the power-off.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for IpmiFence {
    fn default() -> Self {
        Self {
            ipmitool: PathBuf::from("ipmitool"),
            timeout: default_timeout(),
        }
    }
}

/// `driver = "redfish"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedfishFence {
    /// Verify the BMC's TLS certificate.
    pub verify_tls: bool,
    /// How long to wait for the power to read off after the power-off.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for RedfishFence {
    fn default() -> Self {
        Self {
            verify_tls: true,
            timeout: default_timeout(),
        }
    }
}

/// `driver = "libvirt"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LibvirtFence {
    /// The virsh binary.
    pub virsh: PathBuf,
    /// How long to wait for the domain to read shut off.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for LibvirtFence {
    fn default() -> Self {
        Self {
            virsh: PathBuf::from("virsh"),
            timeout: default_timeout(),
        }
    }
}

/// `driver = "noop"`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NoopFence {
    /// Must be true for the noop fencer to run at all.
    pub allow_noop: bool,
}
