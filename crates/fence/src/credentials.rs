//! BMC credentials kept outside the operator-writable K/V tree.
//!
//! Operators must be able to write `<prefix>/compute_nodes/<node>/` (to
//! reset flags, switch maintenance), so a BMC password stored there in
//! `config/bmc/password` is readable and writable by everyone who can reset
//! a node. A [`CredentialStore`] keeps a node's BMC user and password
//! elsewhere; when it has them they replace `config/bmc/user|password`
//! (every other `config/bmc/*` key still comes from the tree), and when it
//! has none for a node the tree's keys apply, so the seed's
//! `config/bmc/*` keep working. Two stores exist (docs/fencing.md):
//!
//! - [`CredentialsDir`] (`[fence] credentials_dir`): `<dir>/<node>/user`
//!   and `<dir>/<node>/password`, first line each, readable by the daemon's
//!   user only (a file other users may read is refused, not used);
//! - a separate K/V prefix with its own ACL rule (`[fence]
//!   credentials_prefix`), implemented by the daemon, which talks to
//!   Consul.
//!
//! [`FenceRegistry::with_credentials`](crate::FenceRegistry::with_credentials)
//! wraps every driver so that each fence, power read and unfence uses them.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use novaha_core::drivers::fence::{FenceError, FenceTarget, Fenced, Fencer};
use novaha_core::{NodeName, PowerState, Secret};

use crate::common::config_err;

/// A node's BMC user and password as a store keeps them; a field left
/// `None` keeps the tree's value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BmcCredentials {
    /// Replaces `config/bmc/user`.
    pub user: Option<String>,
    /// Replaces `config/bmc/password`; never logged.
    pub password: Option<Secret>,
}

/// Where BMC credentials live when not in the tree.
#[async_trait]
pub trait CredentialStore: Send + Sync + fmt::Debug {
    /// The credentials kept for `node`, or `None` when this store keeps
    /// none for it (the tree's `config/bmc/*` then apply). A store that
    /// has something for the node but cannot read it is an error, never a
    /// silent fall back to the tree.
    async fn credentials(&self, node: &NodeName) -> Result<Option<BmcCredentials>, FenceError>;
}

/// `<dir>/<node>/user` and `<dir>/<node>/password`.
#[derive(Clone, Debug)]
pub struct CredentialsDir {
    dir: PathBuf,
}

impl CredentialsDir {
    /// A store over `dir` (read at each use: a changed file applies to the
    /// next fence without a restart).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    fn read(&self, node: &NodeName, file: &Path) -> Result<Option<String>, FenceError> {
        use std::os::unix::fs::PermissionsExt;
        let meta = match std::fs::metadata(file) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(config_err(node, format!("{}: {e}", file.display())));
            }
        };
        if meta.permissions().mode() & 0o007 != 0 {
            return Err(config_err(
                node,
                format!(
                    "{}: readable by every user (mode {:o}); make it readable by the daemon's user only (chmod o-rwx)",
                    file.display(),
                    meta.permissions().mode() & 0o777
                ),
            ));
        }
        let text = std::fs::read_to_string(file)
            .map_err(|e| config_err(node, format!("{}: {e}", file.display())))?;
        Ok(Some(text.lines().next().unwrap_or("").trim().to_owned()))
    }
}

#[async_trait]
impl CredentialStore for CredentialsDir {
    async fn credentials(&self, node: &NodeName) -> Result<Option<BmcCredentials>, FenceError> {
        let name = node.as_str();
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Ok(None);
        }
        let dir = self.dir.join(name);
        let user = self.read(node, &dir.join("user"))?;
        let password = self.read(node, &dir.join("password"))?.map(Secret::new);
        if user.is_none() && password.is_none() {
            return Ok(None);
        }
        Ok(Some(BmcCredentials { user, password }))
    }
}

/// A driver whose targets get their credentials from a store first.
pub(crate) struct Credentialed {
    pub(crate) inner: Arc<dyn Fencer>,
    pub(crate) store: Arc<dyn CredentialStore>,
}

impl Credentialed {
    async fn target(&self, target: &FenceTarget) -> Result<FenceTarget, FenceError> {
        let mut t = target.clone();
        if let Some(c) = self.store.credentials(&target.node).await? {
            if let Some(user) = c.user {
                t.bmc.user = Some(user);
            }
            if let Some(password) = c.password {
                t.bmc.password = password;
            }
        }
        Ok(t)
    }
}

#[async_trait]
impl Fencer for Credentialed {
    fn driver(&self) -> &'static str {
        self.inner.driver()
    }

    async fn fence(&self, target: &FenceTarget) -> Result<Fenced, FenceError> {
        let t = self.target(target).await?;
        self.inner.fence(&t).await
    }

    async fn power_state(&self, target: &FenceTarget) -> Result<PowerState, FenceError> {
        let t = self.target(target).await?;
        self.inner.power_state(&t).await
    }

    async fn unfence(&self, target: &FenceTarget) -> Result<(), FenceError> {
        let t = self.target(target).await?;
        self.inner.unfence(&t).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn write(path: &Path, text: &str, mode: u32) {
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }

    #[tokio::test]
    async fn a_node_directory_replaces_the_tree_and_a_missing_one_keeps_it() {
        let dir = tempfile::tempdir().expect("tmp");
        write(&dir.path().join("c1/user"), "admin\n", 0o600);
        write(&dir.path().join("c1/password"), "s3cret\nignored\n", 0o640);
        write(&dir.path().join("c2/password"), "only-pw", 0o600);
        write(&dir.path().join("c3/password"), "world", 0o644);
        let store = CredentialsDir::new(dir.path());
        let c1 = store
            .credentials(&"c1".into())
            .await
            .expect("ok")
            .expect("kept");
        assert_eq!(c1.user.as_deref(), Some("admin"));
        assert_eq!(c1.password.as_ref().map(Secret::expose), Some("s3cret"));
        let c2 = store
            .credentials(&"c2".into())
            .await
            .expect("ok")
            .expect("kept");
        assert_eq!(c2.user, None);
        assert_eq!(store.credentials(&"c9".into()).await.expect("ok"), None);
        let e = store
            .credentials(&"c3".into())
            .await
            .expect_err("a world-readable password");
        assert!(e.to_string().contains("readable by every user"), "{e}");
        assert!(!e.to_string().contains("world"), "{e}");
        assert_eq!(store.credentials(&"../c1".into()).await.expect("ok"), None);
    }
}
