//! novaha fence drivers: ipmi, redfish, libvirt, noop.
//!
//! Not built yet: see its issue.
