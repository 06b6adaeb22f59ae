//! `[openstack]`: how to reach Keystone and Nova. The OpenStack stage adds
//! inline auth keys here; this issue only fixes `cloud`.

use std::collections::HashMap;

use serde::Deserialize;

/// `[openstack]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpenStackConfig {
    /// A clouds.yaml entry; else `OS_CLOUD`; else the `OS_*` variables.
    pub cloud: Option<String>,
}

impl OpenStackConfig {
    /// Fills `cloud` from `OS_CLOUD` when the file leaves it out.
    pub fn resolve(mut self, env: &HashMap<String, String>) -> Self {
        if self.cloud.as_deref().is_none_or(|c| c.trim().is_empty()) {
            self.cloud = env
                .get("OS_CLOUD")
                .filter(|c| !c.trim().is_empty())
                .cloned();
        }
        self
    }
}
