//! The Placement reads novaha makes (docs/recovery.md, "Capacity"): resource
//! providers (one per compute host), their inventories (total, reserved,
//! allocation ratio, max unit), usages and allocations by consumer, at one
//! fixed microversion (`OpenStack-API-Version: placement 1.14`, which every
//! Placement since Rocky speaks), through the same session and catalog as
//! Nova. Every call is a read: retried, cancel-safe.
//!
//! The one write, [`PlacementClient::set_inventory`], exists for tests and
//! operators' tooling that lower a spare's room (reserved memory); the
//! daemon never calls it.

use std::collections::BTreeMap;
use std::sync::Arc;

use novaha_core::capacity::{HostCapacity, Inventories, Inventory, Resources};
use reqwest::Method;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::OpenStackError;
use crate::session::{Call, ServiceType, Session};

/// The Placement microversion every call is made at.
pub const PLACEMENT_VERSION: &str = "1.14";

/// A resource provider (a compute node's is named after its hypervisor
/// host name and has the compute node's uuid).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct ResourceProvider {
    /// Its uuid (= the hypervisor's id from compute microversion 2.53).
    pub uuid: String,
    /// Its name.
    pub name: String,
    /// Its generation (for writes).
    #[serde(default)]
    pub generation: u64,
}

#[derive(Deserialize)]
struct ProvidersBody {
    resource_providers: Vec<ResourceProvider>,
}

#[derive(Deserialize)]
struct RawInventory {
    total: u64,
    #[serde(default)]
    reserved: u64,
    #[serde(default = "one")]
    allocation_ratio: f64,
    #[serde(default)]
    max_unit: Option<u64>,
}

fn one() -> f64 {
    1.0
}

#[derive(Deserialize)]
struct InventoriesBody {
    #[serde(default)]
    resource_provider_generation: u64,
    inventories: BTreeMap<String, RawInventory>,
}

#[derive(Deserialize)]
struct UsagesBody {
    usages: BTreeMap<String, u64>,
}

#[derive(Deserialize)]
struct ConsumerAllocation {
    resources: BTreeMap<String, u64>,
}

#[derive(Deserialize)]
struct AllocationsBody {
    allocations: BTreeMap<String, ConsumerAllocation>,
}

/// The three classes novaha counts, from a Placement resource map.
fn resources(map: &BTreeMap<String, u64>) -> Resources {
    let g = |k: &str| map.get(k).copied().unwrap_or(0);
    Resources {
        vcpus: g("VCPU"),
        memory_mb: g("MEMORY_MB"),
        disk_gb: g("DISK_GB"),
    }
}

/// Placement, through the shared session. Cheap to clone.
#[derive(Clone, Debug)]
pub struct PlacementClient {
    session: Arc<Session>,
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

impl PlacementClient {
    /// The client over `session` (no I/O: the first call finds the
    /// `placement` endpoint in the catalog).
    pub fn new(session: Arc<Session>) -> Self {
        Self { session }
    }

    /// True when the catalog has a Placement endpoint (a cloud without one
    /// gets no capacity checks: see docs/recovery.md).
    pub async fn available(&self) -> Result<bool, OpenStackError> {
        match self.session.endpoint(ServiceType::Placement).await {
            Ok(_) => Ok(true),
            Err(OpenStackError::NoEndpoint { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(&format!("placement {PLACEMENT_VERSION}")) {
            h.insert(HeaderName::from_static("openstack-api-version"), v);
        }
        h
    }

    fn get(name: &'static str, path: String) -> Call {
        let mut c = Call::get(name, ServiceType::Placement, path);
        c.headers = Self::headers();
        c
    }

    /// Every resource provider. Read-only, retried.
    pub async fn providers(&self) -> Result<Vec<ResourceProvider>, OpenStackError> {
        let call = Self::get("placement list providers", "/resource_providers".into());
        Ok(self
            .session
            .json::<ProvidersBody>(&call)
            .await?
            .resource_providers)
    }

    /// The provider named `name`, if any. Read-only, retried.
    pub async fn provider_named(
        &self,
        name: &str,
    ) -> Result<Option<ResourceProvider>, OpenStackError> {
        let call = Self::get(
            "placement find provider",
            format!("/resource_providers?name={}", enc(name)),
        );
        let all = self.session.json::<ProvidersBody>(&call).await?;
        Ok(all.resource_providers.into_iter().find(|p| p.name == name))
    }

    /// The provider's VCPU, MEMORY_MB and DISK_GB inventories, and its
    /// generation. Read-only, retried.
    pub async fn inventories(&self, uuid: &str) -> Result<(Inventories, u64), OpenStackError> {
        let call = Self::get(
            "placement get inventories",
            format!("/resource_providers/{}/inventories", enc(uuid)),
        );
        let body = self.session.json::<InventoriesBody>(&call).await?;
        let inv = |k: &str| {
            body.inventories.get(k).map(|i| Inventory {
                total: i.total,
                reserved: i.reserved,
                allocation_ratio: i.allocation_ratio,
                max_unit: i.max_unit.unwrap_or(i.total),
            })
        };
        Ok((
            Inventories {
                vcpu: inv("VCPU"),
                memory_mb: inv("MEMORY_MB"),
                disk_gb: inv("DISK_GB"),
            },
            body.resource_provider_generation,
        ))
    }

    /// What is allocated on the provider in all. Read-only, retried.
    pub async fn usages(&self, uuid: &str) -> Result<Resources, OpenStackError> {
        let call = Self::get(
            "placement get usages",
            format!("/resource_providers/{}/usages", enc(uuid)),
        );
        Ok(resources(
            &self.session.json::<UsagesBody>(&call).await?.usages,
        ))
    }

    /// What is allocated on the provider, by consumer (instance uuid).
    /// Read-only, retried.
    pub async fn allocations(
        &self,
        uuid: &str,
    ) -> Result<BTreeMap<String, Resources>, OpenStackError> {
        let call = Self::get(
            "placement get allocations",
            format!("/resource_providers/{}/allocations", enc(uuid)),
        );
        let body = self.session.json::<AllocationsBody>(&call).await?;
        Ok(body
            .allocations
            .into_iter()
            .map(|(c, a)| (c, resources(&a.resources)))
            .collect())
    }

    /// Inventories and allocations of provider `uuid` (two reads).
    pub async fn host_capacity(&self, uuid: &str) -> Result<HostCapacity, OpenStackError> {
        let (inventories, _) = self.inventories(uuid).await?;
        let allocations = self.allocations(uuid).await?;
        Ok(HostCapacity {
            inventories,
            allocations,
        })
    }

    /// Sets one inventory class of provider `uuid` (`PUT
    /// .../inventories/{class}` with the generation read first). Not
    /// retried; a generation conflict (409) means someone else changed the
    /// provider: read again. For tests and tooling only.
    pub async fn set_inventory(
        &self,
        uuid: &str,
        class: &str,
        inventory: &Inventory,
    ) -> Result<(), OpenStackError> {
        let (_, generation) = self.inventories(uuid).await?;
        let mut call = Call::mutate(
            "placement set inventory",
            Method::PUT,
            ServiceType::Placement,
            format!(
                "/resource_providers/{}/inventories/{}",
                enc(uuid),
                enc(class)
            ),
            json!({
                "resource_provider_generation": generation,
                "total": inventory.total,
                "reserved": inventory.reserved,
                "allocation_ratio": inventory.allocation_ratio,
                "max_unit": inventory.max_unit,
            }),
        );
        call.headers = Self::headers();
        let _: Value = self.session.json(&call).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_parse_as_placement_sends_them() {
        let inv: InventoriesBody = serde_json::from_str(
            r#"{"resource_provider_generation": 7, "inventories": {
                "VCPU": {"total": 8, "reserved": 0, "min_unit": 1, "max_unit": 8,
                         "step_size": 1, "allocation_ratio": 16.0},
                "MEMORY_MB": {"total": 4096, "reserved": 512, "min_unit": 1,
                              "max_unit": 4096, "step_size": 1, "allocation_ratio": 1.5}}}"#,
        )
        .unwrap();
        assert_eq!(inv.resource_provider_generation, 7);
        assert_eq!(inv.inventories["MEMORY_MB"].reserved, 512);
        assert!(!inv.inventories.contains_key("DISK_GB"));
        let a: AllocationsBody = serde_json::from_str(
            r#"{"resource_provider_generation": 3, "allocations": {
                "u1": {"resources": {"VCPU": 1, "MEMORY_MB": 512, "DISK_GB": 1}}}}"#,
        )
        .unwrap();
        assert_eq!(
            resources(&a.allocations["u1"].resources),
            Resources {
                vcpus: 1,
                memory_mb: 512,
                disk_gb: 1
            }
        );
    }
}
