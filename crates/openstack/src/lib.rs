//! novaha-openstack: the Keystone v3 and Nova client novaha speaks through.
//!
//! It owns authentication (password and application credentials, from
//! clouds.yaml + secure.yaml, the `OS_*` environment or novaha's own
//! `[openstack]` section), the service catalog, compute microversion
//! negotiation, the Nova calls of a recovery (services, force-down, servers
//! by host, evacuate, start, lock, migrations, hypervisors), the Placement
//! reads of capacity (providers, inventories, usages, allocations), the Keystone
//! reads of notification (users, project members), timeouts, and retries
//! of idempotent reads.
//!
//! It must never retry a mutating call (evacuate, force-down, start, lock)
//! on its own, never put a token or password in a log line or an error, and
//! never panic on what a peer sends. It decides nothing about recoveries:
//! the runner in novaha-core does.
//!
//! Entry points: [`OpenStackConfig::resolve`] -> [`Session::new`] ->
//! [`NovaClient::connect`] and [`KeystoneClient::new`].

pub mod config;
pub mod error;
pub mod keystone;
pub mod microversion;
pub mod nova;
pub mod placement;
pub mod session;

pub use config::{
    CloudConfig, Credentials, Env, Interface, OpenStackConfig, RetryConfig, TlsConfig,
};
pub use error::OpenStackError;
pub use keystone::{KeystoneClient, User};
pub use microversion::Microversion;
pub use nova::{Hypervisor, Migration, NovaClient, Server, Service, ServiceListing};
pub use placement::{PlacementClient, ResourceProvider};
pub use session::{Identity, ServiceType, Session};

use std::sync::Arc;

/// Resolves `config` against the process environment, builds the session
/// and connects to Nova at the highest microversion both sides accept, up
/// to `config.max_microversion`: what the daemon calls once at start-up.
pub async fn connect(
    config: &OpenStackConfig,
) -> Result<(Arc<Session>, NovaClient, KeystoneClient), OpenStackError> {
    let cloud = config.resolve(&Env::from_process())?;
    let session = Arc::new(Session::new(cloud)?);
    let nova = NovaClient::connect_wanting(session.clone(), config.wanted_microversion()).await?;
    let keystone = KeystoneClient::new(session.clone());
    Ok((session, nova, keystone))
}
