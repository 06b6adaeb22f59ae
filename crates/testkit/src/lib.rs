//! novaha-testkit: starts the real peers novaha's tests talk to, each on
//! free loopback ports, in its own temp dir, and stops them when the guard
//! is dropped (also when the test panics).
//!
//! The tools themselves are installed by `scripts/test-deps.sh` (the
//! README's test command runs it). A missing tool is a test failure, never a
//! skip: [`process::tool`] panics with the command that installs it.
//!
//! One module per peer; each is owned by the stage that needs it.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

pub mod cloud;
pub mod consul;
pub mod consul_cluster;
pub mod daemon;
pub mod hosts;
pub mod http_receiver;
pub mod huge_body;
pub mod ipmi;
pub mod libvirt;
pub mod openstack;
pub mod process;
pub mod redfish;
pub mod smtp;
