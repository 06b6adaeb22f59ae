//! The `[fence]` section of the daemon's config file: the default driver,
//! the noop guard, the confirmation deadline and each driver's settings.
//! The daemon embeds [`FenceSettings`] as is; every field has a default, and
//! unknown keys are rejected so that a typo is an error, not a silent
//! default.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A fence driver, as written in config (`fence.driver`) and in the K/V
/// tree (`config/bmc/driver`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DriverName {
    /// IPMI v2 over LAN (`ipmitool -I lanplus`).
    #[default]
    Ipmi,
    /// Redfish over HTTPS (`ComputerSystem.Reset`).
    Redfish,
    /// A libvirt domain (`virsh destroy`): labs and nested clouds.
    Libvirt,
    /// Test-only: powers nothing off and reports Off. Refused unless
    /// `allow_noop = true`.
    Noop,
}

impl DriverName {
    /// The name as written in config.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ipmi => "ipmi",
            Self::Redfish => "redfish",
            Self::Libvirt => "libvirt",
            Self::Noop => "noop",
        }
    }
}

impl fmt::Display for DriverName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DriverName {
    type Err = String;

    /// Parses a K/V value: trimmed, any case (`IPMI`, ` redfish `).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "ipmi" => Ok(Self::Ipmi),
            "redfish" => Ok(Self::Redfish),
            "libvirt" => Ok(Self::Libvirt),
            "noop" => Ok(Self::Noop),
            other => Err(format!(
                "unknown fence driver {other:?} (expected ipmi, redfish, libvirt or noop)"
            )),
        }
    }
}

/// The `[fence]` section.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FenceSettings {
    /// The driver of nodes without `config/bmc/driver`.
    pub driver: DriverName,
    /// Must be true for the `noop` driver to be built at all (as the
    /// default or for any node): it fences nothing.
    pub allow_noop: bool,
    /// How long after the off command the power may take to read off before
    /// the fence counts as failed (not confirmed).
    #[serde(with = "humantime_serde")]
    pub confirm_timeout: Duration,
    /// How often the power state is read while waiting for off.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// How often the leader reads every node's power (fence-path health).
    #[serde(with = "humantime_serde")]
    pub health_interval: Duration,
    /// How many power reads the health check runs at once.
    pub health_concurrency: usize,
    /// The `ipmi` driver.
    pub ipmi: IpmiSettings,
    /// The `redfish` driver.
    pub redfish: RedfishSettings,
    /// The `libvirt` driver.
    pub libvirt: LibvirtSettings,
    /// A directory of per-node BMC credentials (`<dir>/<node>/user`,
    /// `<dir>/<node>/password`) that replace `config/bmc/user|password`;
    /// see crate::credentials.
    pub credentials_dir: Option<PathBuf>,
    /// A Consul K/V prefix of per-node BMC credentials
    /// (`<credentials_prefix>/<node>/user|password`), outside the state
    /// tree and under its own ACL rule. Read by the daemon (this crate does
    /// not talk to Consul).
    pub credentials_prefix: Option<String>,
}

impl Default for FenceSettings {
    fn default() -> Self {
        Self {
            driver: DriverName::Ipmi,
            allow_noop: false,
            confirm_timeout: Duration::from_secs(60),
            poll_interval: Duration::from_secs(2),
            health_interval: Duration::from_secs(300),
            health_concurrency: 8,
            ipmi: IpmiSettings::default(),
            redfish: RedfishSettings::default(),
            libvirt: LibvirtSettings::default(),
            credentials_dir: None,
            credentials_prefix: None,
        }
    }
}

/// `[fence.ipmi]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IpmiSettings {
    /// The `ipmitool` binary (a name on PATH or a path).
    pub ipmitool: PathBuf,
    /// The lanplus cipher suite (`-C`). 3 (HMAC-SHA1, AES-128) is what
    /// nearly every BMC accepts; without `-C`, ipmitool 1.8.19 spends ~10 s
    /// per call probing.
    pub cipher_suite: u8,
    /// The UDP port when `config/bmc/port` is not set.
    pub default_port: u16,
    /// ipmitool's session timeout per try (`-N`, whole seconds, at least 1).
    #[serde(with = "humantime_serde")]
    pub session_timeout: Duration,
    /// ipmitool's retries per call (`-R`).
    pub retries: u8,
    /// A hard limit on one ipmitool run; it is killed after this.
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
}

impl Default for IpmiSettings {
    fn default() -> Self {
        Self {
            ipmitool: PathBuf::from("ipmitool"),
            cipher_suite: 3,
            default_port: 623,
            session_timeout: Duration::from_secs(2),
            retries: 3,
            command_timeout: Duration::from_secs(30),
        }
    }
}

/// How the Redfish driver authenticates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RedfishAuth {
    /// HTTP Basic on every request.
    #[default]
    Basic,
    /// A Redfish session (`POST /redfish/v1/SessionService/Sessions`, then
    /// `X-Auth-Token`), deleted after use.
    Session,
}

impl FromStr for RedfishAuth {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "basic" => Ok(Self::Basic),
            "session" => Ok(Self::Session),
            other => Err(format!(
                "unknown redfish auth {other:?} (expected basic or session)"
            )),
        }
    }
}

/// `[fence.redfish]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedfishSettings {
    /// The scheme when `config/bmc/ip` is a bare host (`https` or `http`).
    pub scheme: String,
    /// Whether BMC certificates are checked, unless a node sets
    /// `config/bmc/verify_tls`.
    pub verify_tls: bool,
    /// The auth mode unless a node sets `config/bmc/auth`.
    pub auth: RedfishAuth,
    /// A PEM file of extra CA certificates trusted for BMCs (a private CA),
    /// besides the system's roots.
    pub ca_file: Option<PathBuf>,
    /// The timeout of one HTTP request.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
}

impl Default for RedfishSettings {
    fn default() -> Self {
        Self {
            scheme: "https".to_owned(),
            verify_tls: true,
            auth: RedfishAuth::Basic,
            ca_file: None,
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// `[fence.libvirt]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LibvirtSettings {
    /// The `virsh` binary.
    pub virsh: PathBuf,
    /// The connection URI when a node sets neither `config/bmc/uri` nor
    /// `config/bmc/ip`.
    pub uri: Option<String>,
    /// A hard limit on one virsh run; it is killed after this.
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
}

impl Default for LibvirtSettings {
    fn default() -> Self {
        Self {
            virsh: PathBuf::from("virsh"),
            uri: None,
            command_timeout: Duration::from_secs(30),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_section_is_all_defaults() {
        let s: FenceSettings = toml::from_str("").unwrap();
        assert_eq!(s, FenceSettings::default());
        assert_eq!(s.ipmi.cipher_suite, 3);
        assert!(!s.allow_noop);
    }

    #[test]
    fn full_section_parses_and_unknown_keys_are_rejected() {
        let s: FenceSettings = toml::from_str(
            r#"
            driver = "redfish"
            allow_noop = false
            confirm_timeout = "30s"
            poll_interval = "500ms"
            health_interval = "5m"
            health_concurrency = 4
            [ipmi]
            ipmitool = "/usr/bin/ipmitool"
            cipher_suite = 17
            retries = 1
            session_timeout = "1s"
            [redfish]
            verify_tls = false
            auth = "session"
            [libvirt]
            uri = "qemu+ssh://root@hv/system"
            "#,
        )
        .unwrap();
        assert_eq!(s.driver, DriverName::Redfish);
        assert_eq!(s.poll_interval, Duration::from_millis(500));
        assert_eq!(s.health_interval, Duration::from_secs(300));
        assert_eq!(s.ipmi.cipher_suite, 17);
        assert_eq!(s.redfish.auth, RedfishAuth::Session);
        let err = toml::from_str::<FenceSettings>("drivr = \"ipmi\"").unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
        let err = toml::from_str::<FenceSettings>("driver = \"ilo\"").unwrap_err();
        assert!(err.to_string().contains("unknown variant"), "{err}");
    }

    #[test]
    fn driver_names_parse_from_kv_text() {
        assert_eq!(" IPMI ".parse::<DriverName>(), Ok(DriverName::Ipmi));
        assert_eq!("Redfish".parse::<DriverName>(), Ok(DriverName::Redfish));
        assert!("ilo".parse::<DriverName>().is_err());
    }
}
