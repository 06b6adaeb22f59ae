//! BMC credentials under a Consul K/V prefix of their own (`[fence]
//! credentials_prefix`), outside the operator-writable state tree: the
//! daemon's token reads it (its own ACL rule), operators' tokens need not
//! see it. Keys: `<credentials_prefix>/<node>/user` and `.../password`; a
//! node with neither keeps the tree's `config/bmc/*` (docs/fencing.md).

use std::sync::Arc;

use async_trait::async_trait;
use novaha_consul::Consul;
use novaha_core::{NodeName, Secret};
use novaha_fence::{BmcCredentials, CredentialStore, FenceError, FenceRegistry};

use crate::config::Config;

/// The store over one K/V prefix.
#[derive(Debug)]
pub struct KvCredentials {
    consul: Consul,
    prefix: String,
}

impl KvCredentials {
    /// A store reading `<prefix>/<node>/user|password` through `consul`.
    pub fn new(consul: Consul, prefix: &str) -> Self {
        Self {
            consul,
            prefix: prefix.trim_matches('/').to_owned(),
        }
    }
}

#[async_trait]
impl CredentialStore for KvCredentials {
    async fn credentials(&self, node: &NodeName) -> Result<Option<BmcCredentials>, FenceError> {
        let folder = format!("{}/{}/", self.prefix, node);
        let (_, pairs) = self.consul.kv_list(&folder).await.map_err(|e| {
            // Unreadable credentials are no reason to use the tree's: the
            // fence (or the power read) fails and is retried.
            FenceError::Config {
                node: node.clone(),
                detail: format!("BMC credentials under {folder}: {e}"),
            }
        })?;
        let mut out = BmcCredentials::default();
        for p in pairs {
            let text = || {
                p.value
                    .as_deref()
                    .map(|v| String::from_utf8_lossy(v).trim().to_owned())
            };
            match p.key.strip_prefix(&folder) {
                Some("user") => out.user = text(),
                Some("password") => out.password = text().map(Secret::new),
                _ => {}
            }
        }
        Ok((out.user.is_some() || out.password.is_some()).then_some(out))
    }
}

/// The K/V credential store of `cfg`, when `[fence] credentials_prefix`
/// is set.
pub fn store(cfg: &Config, consul: &Consul) -> Option<Arc<dyn CredentialStore>> {
    cfg.fence
        .credentials_prefix
        .as_deref()
        .filter(|p| !p.trim_matches('/').is_empty())
        .map(|p| Arc::new(KvCredentials::new(consul.clone(), p)) as Arc<dyn CredentialStore>)
}

/// The fence registry of `cfg`, with the K/V credential store when set
/// (`[fence] credentials_dir` is applied by the registry itself).
pub fn registry(cfg: &Config, consul: &Consul) -> Result<FenceRegistry, FenceError> {
    let r = FenceRegistry::new(&cfg.fence)?;
    Ok(match store(cfg, consul) {
        Some(s) => r.with_credentials(s),
        None => r,
    })
}
