//! novaha-fence: the fence drivers. It owns powering a failed compute node
//! off and proving it: `ipmi` (ipmitool lanplus), `redfish` (reqwest),
//! `libvirt` (virsh) and the test-only `noop`; the `[fence]` config section
//! ([`FenceSettings`]); the registry that picks a node's driver
//! ([`FenceRegistry`]); and the read-only fence-path health check
//! ([`check_power`], and in [`health`] the report the daemon publishes from
//! it and `novaha status` shows).
//!
//! It must never report a node fenced without a power reading of Off before
//! the deadline (a timeout, an error or an unknown state is not off), never
//! put a secret on a command line, in a log line or in an error, never
//! retry on its own beyond one bounded attempt (the runner owns retries),
//! and never depend on another driver crate or the daemon.
//!
//! Errors are core's [`FenceError`] (the `Fencer` trait's error type, with
//! `is_retryable()`); this crate adds no error enum of its own.

mod common;
pub mod credentials;
pub mod health;
pub mod ipmi;
pub mod libvirt;
pub mod noop;
pub mod redfish;
pub mod registry;
pub mod settings;

pub use credentials::{BmcCredentials, CredentialStore, CredentialsDir};
pub use health::{PowerReport, check_power};
pub use ipmi::IpmiFencer;
pub use libvirt::LibvirtFencer;
pub use noop::NoopFencer;
pub use novaha_core::drivers::fence::{FenceError, FenceTarget, Fenced, Fencer};
pub use redfish::RedfishFencer;
pub use registry::{FenceRegistry, target_of};
pub use settings::{
    DriverName, FenceSettings, IpmiSettings, LibvirtSettings, RedfishAuth, RedfishSettings,
};
