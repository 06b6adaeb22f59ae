//! Choosing a node's fencer: `config/bmc/driver` when the node sets it, else
//! the `[fence] driver` default; one `match` over [`DriverName`], no global
//! registry. The drivers are built once, so per-node lookups are cheap.

use std::sync::Arc;

use novaha_core::NodeName;
use novaha_core::drivers::fence::{FenceError, FenceTarget, Fencer};
use novaha_core::kv::{BmcConfig, ComputeNodeState};
use novaha_core::validate::{Problem, Validate};

use crate::common::config_err;
use crate::credentials::{CredentialStore, Credentialed, CredentialsDir};
use crate::ipmi::IpmiFencer;
use crate::libvirt::LibvirtFencer;
use crate::noop::NoopFencer;
use crate::redfish::RedfishFencer;
use crate::settings::{DriverName, FenceSettings};

/// The node name used in errors about the `[fence]` section itself.
const SECTION: &str = "[fence]";

/// Every fence driver, built from the `[fence]` section.
#[derive(Clone)]
pub struct FenceRegistry {
    default: DriverName,
    ipmi: Arc<IpmiFencer>,
    /// Absent only in a [`FenceRegistry::single`].
    redfish: Option<Arc<RedfishFencer>>,
    libvirt: Arc<LibvirtFencer>,
    /// Present only with `allow_noop = true`.
    noop: Option<Arc<NoopFencer>>,
    /// Set by [`FenceRegistry::single`]: every node goes through it (the
    /// drivers above are then never built or used).
    only: Option<Arc<dyn Fencer>>,
    /// Where BMC credentials come from before the tree's (crate::credentials).
    credentials: Option<Arc<dyn CredentialStore>>,
}

impl std::fmt::Debug for FenceRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FenceRegistry")
            .field("default", &self.default)
            .field("noop_allowed", &self.noop.is_some())
            .finish_non_exhaustive()
    }
}

impl FenceRegistry {
    /// Builds every driver. Fails when the default driver is `noop` without
    /// `allow_noop = true`, or when the HTTP client cannot be built.
    pub fn new(settings: &FenceSettings) -> Result<Self, FenceError> {
        let section = NodeName::from(SECTION);
        if settings.poll_interval.is_zero() {
            return Err(config_err(&section, "poll_interval must be above zero"));
        }
        if settings.driver == DriverName::Noop && !settings.allow_noop {
            return Err(config_err(
                &section,
                "driver = \"noop\" fences nothing; it needs allow_noop = true (tests and dry runs only)",
            ));
        }
        let noop = settings.allow_noop.then(|| {
            tracing::warn!(driver = "noop", "allow_noop is set: the test-only noop fencer may be used, and it powers nothing off");
            Arc::new(NoopFencer::new())
        });
        let (t, p) = (settings.confirm_timeout, settings.poll_interval);
        Ok(Self {
            default: settings.driver,
            ipmi: Arc::new(IpmiFencer::new(settings.ipmi.clone(), t, p)),
            redfish: Some(Arc::new(RedfishFencer::new(
                settings.redfish.clone(),
                t,
                p,
            )?)),
            libvirt: Arc::new(LibvirtFencer::new(settings.libvirt.clone(), t, p)),
            noop,
            only: None,
            credentials: settings
                .credentials_dir
                .as_ref()
                .map(|d| Arc::new(CredentialsDir::new(d)) as Arc<dyn CredentialStore>),
        })
    }

    /// Takes every node's BMC user and password from `store` first (the
    /// tree's `config/bmc/*` when it keeps none for a node). Replaces a
    /// `[fence] credentials_dir` store.
    pub fn with_credentials(mut self, store: Arc<dyn CredentialStore>) -> Self {
        self.credentials = Some(store);
        self
    }

    /// A registry that sends every node through one driver, whatever its
    /// `config/bmc/driver` says: for callers that bring their own
    /// [`Fencer`] (the deterministic fault simulator's modelled BMCs).
    pub fn single(fencer: Arc<dyn Fencer>) -> Result<Self, FenceError> {
        // The configured drivers are built from defaults without the
        // Redfish HTTP client (loading the system's CA roots is the costly
        // part): `only` answers every lookup.
        let s = FenceSettings::default();
        let (t, p) = (s.confirm_timeout, s.poll_interval);
        Ok(Self {
            default: s.driver,
            ipmi: Arc::new(IpmiFencer::new(s.ipmi.clone(), t, p)),
            redfish: None,
            libvirt: Arc::new(LibvirtFencer::new(s.libvirt.clone(), t, p)),
            noop: None,
            only: Some(fencer),
            credentials: None,
        })
    }

    /// The default driver (`[fence] driver`).
    pub fn default_driver(&self) -> DriverName {
        self.default
    }

    /// The driver a node uses: its `config/bmc/driver`, else the default.
    /// An unknown name is a configuration error for that node.
    pub fn driver_of(&self, node: &NodeName, bmc: &BmcConfig) -> Result<DriverName, FenceError> {
        match bmc
            .driver
            .as_deref()
            .map(str::trim)
            .filter(|d| !d.is_empty())
        {
            None => Ok(self.default),
            Some(name) => name
                .parse::<DriverName>()
                .map_err(|e| config_err(node, format!("config/bmc/driver: {e}"))),
        }
    }

    /// The fencer for `target`, by its `config/bmc/driver` or the default.
    /// `noop` is refused unless the section allowed it.
    pub fn fencer_for(&self, target: &FenceTarget) -> Result<Arc<dyn Fencer>, FenceError> {
        if let Some(only) = &self.only {
            return Ok(only.clone());
        }
        let fencer = self.driver_for(target)?;
        Ok(match &self.credentials {
            Some(store) if fencer.driver() != "noop" => Arc::new(Credentialed {
                inner: fencer,
                store: store.clone(),
            }),
            _ => fencer,
        })
    }

    fn driver_for(&self, target: &FenceTarget) -> Result<Arc<dyn Fencer>, FenceError> {
        Ok(match self.driver_of(&target.node, &target.bmc)? {
            DriverName::Ipmi => self.ipmi.clone(),
            DriverName::Redfish => match &self.redfish {
                Some(r) => r.clone(),
                None => {
                    return Err(config_err(
                        &target.node,
                        "no redfish driver in this registry",
                    ));
                }
            },
            DriverName::Libvirt => self.libvirt.clone(),
            DriverName::Noop => match &self.noop {
                Some(noop) => noop.clone(),
                None => {
                    return Err(config_err(
                        &target.node,
                        "config/bmc/driver is noop, which fences nothing; refused without allow_noop = true",
                    ));
                }
            },
        })
    }
}

/// The fence target of a compute node as read from the K/V tree.
pub fn target_of(state: &ComputeNodeState) -> FenceTarget {
    FenceTarget {
        node: state.name.clone(),
        bmc: state.bmc.clone(),
    }
}

/// The `[fence]` section is usable when the registry builds from it,
/// exactly as `run` will build it (`noop` without `allow_noop`, a zero poll
/// interval, an unusable TLS setting...), and its credential and
/// confirmation keys make sense. Here rather than in `settings.rs`, which
/// the registry itself reads.
impl Validate for FenceSettings {
    fn validate(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        if let Err(e) = FenceRegistry::new(self) {
            out.push(Problem::new("", e.to_string()));
        }
        if self.credentials_dir.is_some() && self.credentials_prefix.is_some() {
            out.push(Problem::new(
                "credentials_prefix",
                "set credentials_dir or credentials_prefix, not both",
            ));
        }
        if let Some(dir) = &self.credentials_dir
            && !dir.is_dir()
        {
            out.push(Problem::new(
                "credentials_dir",
                format!("{} is not a readable directory", dir.display()),
            ));
        }
        if self.confirm_timeout.is_zero() {
            out.push(Problem::new("confirm_timeout", "must be above zero"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(driver: Option<&str>) -> FenceTarget {
        FenceTarget {
            node: NodeName::from("c1"),
            bmc: BmcConfig {
                driver: driver.map(str::to_owned),
                ..BmcConfig::default()
            },
        }
    }

    #[test]
    fn per_node_driver_wins_over_the_default() {
        let r = FenceRegistry::new(&FenceSettings::default()).unwrap();
        assert_eq!(r.fencer_for(&target(None)).unwrap().driver(), "ipmi");
        assert_eq!(
            r.fencer_for(&target(Some("Redfish"))).unwrap().driver(),
            "redfish"
        );
        assert_eq!(
            r.fencer_for(&target(Some("libvirt"))).unwrap().driver(),
            "libvirt"
        );
        let err = r.fencer_for(&target(Some("ilo"))).err().unwrap();
        assert!(matches!(err, FenceError::Config { .. }), "{err}");
        assert!(!err.is_retryable());
        assert!(
            err.to_string().contains("unknown fence driver \"ilo\""),
            "{err}"
        );
    }

    #[test]
    fn noop_is_refused_unless_allowed() {
        let settings = FenceSettings {
            driver: DriverName::Noop,
            ..FenceSettings::default()
        };
        let err = FenceRegistry::new(&settings).unwrap_err();
        assert!(err.to_string().contains("allow_noop"), "{err}");
        let r = FenceRegistry::new(&FenceSettings::default()).unwrap();
        let err = r.fencer_for(&target(Some("noop"))).err().unwrap();
        assert!(err.to_string().contains("allow_noop"), "{err}");
        let allowed = FenceRegistry::new(&FenceSettings {
            allow_noop: true,
            ..settings
        })
        .unwrap();
        assert_eq!(allowed.fencer_for(&target(None)).unwrap().driver(), "noop");
    }

    #[tokio::test]
    async fn noop_reports_off() {
        let r = FenceRegistry::new(&FenceSettings {
            driver: DriverName::Noop,
            allow_noop: true,
            ..FenceSettings::default()
        })
        .unwrap();
        let t = target(None);
        let f = r.fencer_for(&t).unwrap();
        let fenced = f.fence(&t).await.unwrap();
        assert_eq!(fenced.driver(), "noop");
        assert_eq!(
            f.power_state(&t).await.unwrap(),
            novaha_core::PowerState::Off
        );
    }
}
