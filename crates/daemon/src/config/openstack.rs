//! `[openstack]`: owned by the OpenStack stage. The section is
//! [`novaha_openstack::config::OpenStackConfig`] embedded as is (`cloud`,
//! else `OS_CLOUD`, else the `OS_*` variables, or an inline
//! `[openstack.auth]`); its keys are documented in docs/openstack.md.
//! Credentials are resolved when the daemon connects, not here.

pub use novaha_openstack::config::OpenStackConfig;
