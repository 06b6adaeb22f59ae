//! The Nova calls novaha makes, each at the microversion negotiated once at
//! connect time, with the older form used when the cloud is older (see
//! docs/openstack.md for the table).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, NaiveDateTime, Utc};
use reqwest::Method;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};

use crate::error::OpenStackError;
use crate::microversion::Microversion;
use crate::session::{Call, ServiceType, Session};

/// Servers asked for per page when listing a host.
pub const SERVER_PAGE_SIZE: usize = 1000;

/// A nova-compute (or other) service record.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Service {
    /// Its id: a UUID from 2.53, an integer (as a string) before.
    #[serde(deserialize_with = "string_or_number")]
    pub id: String,
    /// `nova-compute`.
    pub binary: String,
    /// The compute host.
    pub host: String,
    /// `enabled` or `disabled`.
    pub status: String,
    /// `up` or `down`.
    pub state: String,
    /// Set when an operator (or novaha) forced it down (2.11+).
    #[serde(default)]
    pub forced_down: Option<bool>,
    /// Why it was disabled.
    #[serde(default)]
    pub disabled_reason: Option<String>,
    /// Availability zone.
    #[serde(default)]
    pub zone: Option<String>,
    /// Its last heartbeat.
    #[serde(default)]
    pub updated_at: Option<String>,
}

/// Every nova-compute service, with Nova's clock at the time it answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceListing {
    /// The services.
    pub services: Vec<Service>,
    /// The answer's `Date` header: nova-api's clock when it answered (whole
    /// seconds), against which each [`Service::heartbeat`] is aged. `None`
    /// when the answer had no valid `Date` header.
    pub nova_time: Option<DateTime<Utc>>,
}

impl Service {
    /// The last heartbeat (`updated_at`) in UTC, when Nova gave one that
    /// parses. Nova writes it without a zone (`2026-11-21T03:00:00.000000`,
    /// UTC by convention); an explicit offset is honoured.
    pub fn heartbeat(&self) -> Option<DateTime<Utc>> {
        let text = self.updated_at.as_deref()?.trim();
        if let Ok(t) = DateTime::parse_from_rfc3339(text) {
            return Some(t.with_timezone(&Utc));
        }
        ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
            .iter()
            .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())
            .map(|t| t.and_utc())
    }

    /// True when Nova reads the service as down.
    pub fn is_down(&self) -> bool {
        self.state.eq_ignore_ascii_case("down")
    }

    /// True when the service is disabled.
    pub fn is_disabled(&self) -> bool {
        self.status.eq_ignore_ascii_case("disabled")
    }
}

/// A fault recorded on a server.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Fault {
    /// The fault message.
    #[serde(default)]
    pub message: String,
    /// The HTTP-like code.
    #[serde(default)]
    pub code: Option<u16>,
}

/// A Nova server as novaha needs it (admin view).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Server {
    /// The uuid.
    pub id: String,
    /// The name.
    #[serde(default)]
    pub name: String,
    /// ACTIVE, SHUTOFF, ERROR, REBUILD, ...
    pub status: String,
    /// The owning user.
    #[serde(default)]
    pub user_id: String,
    /// The owning project.
    #[serde(default, rename = "tenant_id")]
    pub project_id: String,
    /// The compute host (admin only).
    #[serde(default, rename = "OS-EXT-SRV-ATTR:host")]
    pub host: Option<String>,
    /// The running task, if any.
    #[serde(default, rename = "OS-EXT-STS:task_state")]
    pub task_state: Option<String>,
    /// The VM state.
    #[serde(default, rename = "OS-EXT-STS:vm_state")]
    pub vm_state: Option<String>,
    /// Whether it is locked.
    #[serde(default)]
    pub locked: Option<bool>,
    /// Why it is locked (2.73+).
    #[serde(default)]
    pub locked_reason: Option<String>,
    /// Its metadata.
    #[serde(default, deserialize_with = "string_map")]
    pub metadata: BTreeMap<String, String>,
    /// The last fault, if any.
    #[serde(default)]
    pub fault: Option<Fault>,
    /// The image it was booted from; `None` when Nova shows `""` (booted
    /// from a volume) or nothing.
    #[serde(default, deserialize_with = "image_id")]
    pub image: Option<String>,
    /// The volumes attached (`os-extended-volumes:volumes_attached`).
    #[serde(default, rename = "os-extended-volumes:volumes_attached")]
    pub volumes_attached: Vec<VolumeAttachment>,
    /// The flavor as embedded from microversion 2.47; `None` before (Nova
    /// then shows only a flavor id).
    #[serde(default, deserialize_with = "embedded_flavor")]
    pub flavor: Option<Flavor>,
}

/// One attached volume of a server.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct VolumeAttachment {
    /// The volume id.
    pub id: String,
}

/// A server's flavor as embedded from microversion 2.47.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Flavor {
    /// vCPUs.
    pub vcpus: u64,
    /// RAM in MB.
    pub ram: u64,
    /// Root disk in GB.
    #[serde(default)]
    pub disk: u64,
    /// Ephemeral disk in GB.
    #[serde(default)]
    pub ephemeral: u64,
    /// Swap in MB (Nova shows `""` for none on some versions).
    #[serde(default, deserialize_with = "number_or_empty")]
    pub swap: u64,
    /// The flavor's name when the server was created.
    #[serde(default)]
    pub original_name: Option<String>,
}

impl Server {
    /// True when the server boots from a volume: no image and a volume
    /// attached (its root disk survives an evacuation).
    pub fn boots_from_volume(&self) -> bool {
        self.image.is_none() && !self.volumes_attached.is_empty()
    }

    /// The core crate's view of this server.
    pub fn to_instance(&self) -> novaha_core::drivers::Instance {
        let bfv = self.boots_from_volume();
        novaha_core::drivers::Instance {
            id: self.id.clone(),
            name: self.name.clone(),
            status: self.status.clone(),
            host: self.host.clone().unwrap_or_default(),
            user_id: self.user_id.clone(),
            project_id: self.project_id.clone(),
            metadata: self.metadata.clone(),
            boot_from_volume: bfv,
            resources: self.flavor.as_ref().map(|f| {
                novaha_core::capacity::Resources::of_flavor(
                    f.vcpus,
                    f.ram,
                    f.disk,
                    f.ephemeral,
                    f.swap,
                    bfv,
                )
            }),
        }
    }
}

fn image_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Object(m) => m
            .get("id")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned),
        Value::String(s) if !s.is_empty() => Some(s),
        _ => None,
    })
}

fn embedded_flavor<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Flavor>, D::Error> {
    let v = Value::deserialize(d)?;
    // Before 2.47 the flavor is `{"id": ..., "links": ...}`: no resources.
    if v.get("vcpus").is_none() {
        return Ok(None);
    }
    serde_json::from_value(v)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

fn number_or_empty<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    match Value::deserialize(d)? {
        Value::Number(n) => n
            .as_u64()
            .ok_or_else(|| serde::de::Error::custom(format!("expected a count, got {n}"))),
        Value::String(s) if s.trim().is_empty() => Ok(0),
        Value::String(s) => s
            .trim()
            .parse()
            .map_err(|_| serde::de::Error::custom(format!("expected a count, got {s:?}"))),
        Value::Null => Ok(0),
        other => Err(serde::de::Error::custom(format!(
            "expected a count, got {other}"
        ))),
    }
}

/// A migration record (evacuations are `migration_type = evacuation`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Migration {
    /// Its id.
    #[serde(deserialize_with = "string_or_number")]
    pub id: String,
    /// The server it moves.
    pub instance_uuid: String,
    /// From.
    #[serde(default)]
    pub source_compute: Option<String>,
    /// To (unknown until the scheduler picked it).
    #[serde(default)]
    pub dest_compute: Option<String>,
    /// accepted, pre-migrating, migrating, done, completed, failed, error.
    pub status: String,
    /// evacuation, migration, live-migration, resize (2.23+).
    #[serde(default)]
    pub migration_type: Option<String>,
    /// When it was created.
    #[serde(default)]
    pub created_at: Option<String>,
    /// When it last changed.
    #[serde(default)]
    pub updated_at: Option<String>,
}

/// A hypervisor record.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Hypervisor {
    /// Its id: a UUID from 2.53, an integer before.
    #[serde(deserialize_with = "string_or_number")]
    pub id: String,
    /// The hypervisor's host name.
    pub hypervisor_hostname: String,
    /// up or down.
    #[serde(default)]
    pub state: Option<String>,
    /// enabled or disabled.
    #[serde(default)]
    pub status: Option<String>,
    /// The compute service it belongs to.
    #[serde(default)]
    pub service: Option<HypervisorService>,
    /// Running instances (before 2.88).
    #[serde(default)]
    pub running_vms: Option<u64>,
}

/// The service part of a hypervisor record.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct HypervisorService {
    /// The compute host.
    pub host: String,
    /// The service id.
    #[serde(default, deserialize_with = "opt_string_or_number")]
    pub id: Option<String>,
}

fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match Value::deserialize(d)? {
        Value::String(s) => Ok(s),
        Value::Number(n) => Ok(n.to_string()),
        other => Err(serde::de::Error::custom(format!(
            "expected a string or number id, got {other}"
        ))),
    }
}

fn opt_string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s)),
        Value::Number(n) => Ok(Some(n.to_string())),
        other => Err(serde::de::Error::custom(format!(
            "expected a string or number id, got {other}"
        ))),
    }
}

fn string_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    let m: Option<BTreeMap<String, Value>> = Option::deserialize(d)?;
    Ok(m.unwrap_or_default()
        .into_iter()
        .map(|(k, v)| match v {
            Value::String(s) => (k, s),
            other => (k, other.to_string()),
        })
        .collect())
}

#[derive(Deserialize)]
struct VersionDoc {
    #[serde(default)]
    version: Option<VersionEntry>,
    #[serde(default)]
    versions: Option<Vec<VersionEntry>>,
}

#[derive(Clone, Deserialize)]
struct VersionEntry {
    id: String,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    version: String,
    #[serde(default)]
    min_version: String,
}

#[derive(Deserialize)]
struct ServicesBody {
    services: Vec<Service>,
}

#[derive(Deserialize)]
struct ServersBody {
    servers: Vec<Server>,
    #[serde(default)]
    servers_links: Vec<Link>,
}

#[derive(Deserialize)]
struct Link {
    rel: String,
}

#[derive(Deserialize)]
struct ServerBody {
    server: Server,
}

#[derive(Deserialize)]
struct MigrationsBody {
    migrations: Vec<Migration>,
}

#[derive(Deserialize)]
struct HypervisorsBody {
    hypervisors: Vec<Hypervisor>,
    #[serde(default)]
    hypervisors_links: Vec<Link>,
}

/// Percent-encodes one query value.
fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Nova, at the microversion negotiated with this cloud. Cheap to clone.
#[derive(Clone, Debug)]
pub struct NovaClient {
    session: Arc<Session>,
    version: Microversion,
    cloud_max: Option<Microversion>,
    prefix: &'static str,
}

impl NovaClient {
    /// Discovers the compute endpoint's versions and negotiates the
    /// microversion (the highest the cloud supports up to
    /// [`Microversion::WANTED`]). A read: retried on 5xx and timeouts.
    pub async fn connect(session: Arc<Session>) -> Result<Self, OpenStackError> {
        Self::connect_wanting(session, Microversion::WANTED).await
    }

    /// As [`NovaClient::connect`], with a lower ceiling than novaha's own
    /// (to pin an older behaviour, or to test the older forms).
    pub async fn connect_wanting(
        session: Arc<Session>,
        wanted: Microversion,
    ) -> Result<Self, OpenStackError> {
        let call = Call::get(
            "nova version discovery",
            ServiceType::Compute,
            String::new(),
        );
        let doc: VersionDoc = session.json(&call).await?;
        // An unversioned endpoint answers the list of versions: calls then
        // go under its v2.1.
        let prefix = if doc.version.is_none() && doc.versions.is_some() {
            "/v2.1"
        } else {
            ""
        };
        let entry = match (doc.version, doc.versions) {
            (Some(v), _) => v,
            (None, Some(vs)) => vs
                .iter()
                .find(|v| v.id == "v2.1")
                .or_else(|| vs.iter().find(|v| v.status.as_deref() == Some("CURRENT")))
                .cloned()
                .ok_or_else(|| OpenStackError::Malformed {
                    call: call.name,
                    method: "GET",
                    path: "/".into(),
                    detail: "no v2.1 entry in the versions list".into(),
                    body: String::new(),
                    request_id: None,
                })?,
            (None, None) => {
                return Err(OpenStackError::Malformed {
                    call: call.name,
                    method: "GET",
                    path: "/".into(),
                    detail: "neither `version` nor `versions` in the answer".into(),
                    body: String::new(),
                    request_id: None,
                });
            }
        };
        let max = Microversion::parse_opt(&entry.version)?;
        let min = Microversion::parse_opt(&entry.min_version)?;
        let version = Microversion::negotiate(wanted, min, max)?;
        tracing::info!(
            version = %version,
            cloud_max = %max.unwrap_or(Microversion::BASE),
            "nova microversion negotiated"
        );
        Ok(Self {
            session,
            version,
            cloud_max: max,
            prefix,
        })
    }

    /// The microversion every call is made at.
    pub fn microversion(&self) -> Microversion {
        self.version
    }

    /// The highest microversion the cloud offers (`None`: no microversions).
    pub fn cloud_max(&self) -> Option<Microversion> {
        self.cloud_max
    }

    /// True when an evacuated server lands SHUTOFF (2.95+) and must be
    /// started to restore an ACTIVE prior state.
    pub fn evacuate_lands_shutoff(&self) -> bool {
        self.version >= Microversion::EVACUATE_LANDS_SHUTOFF
    }

    /// The shared session.
    pub fn session(&self) -> &Arc<Session> {
        &self.session
    }

    fn headers(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(&format!("compute {}", self.version)) {
            h.insert(HeaderName::from_static("openstack-api-version"), v);
        }
        if let Ok(v) = HeaderValue::from_str(&self.version.to_string()) {
            h.insert(HeaderName::from_static("x-openstack-nova-api-version"), v);
        }
        h
    }

    fn get(&self, name: &'static str, path: String) -> Call {
        let mut c = Call::get(name, ServiceType::Compute, format!("{}{path}", self.prefix));
        c.headers = self.headers();
        c
    }

    fn mutate(&self, name: &'static str, method: Method, path: String, body: Value) -> Call {
        let path = format!("{}{path}", self.prefix);
        let mut c = Call::mutate(name, method, ServiceType::Compute, path, body);
        c.headers = self.headers();
        c
    }

    fn require(&self, call: &'static str, needs: Microversion) -> Result<(), OpenStackError> {
        if self.version >= needs {
            Ok(())
        } else {
            Err(OpenStackError::Unsupported {
                call,
                needs: needs.to_string(),
                have: self.version.to_string(),
            })
        }
    }

    /// Every service with `binary` (e.g. `nova-compute`), in one call.
    /// Read-only, retried, cancel-safe.
    pub async fn services(&self, binary: &str) -> Result<Vec<Service>, OpenStackError> {
        let call = self.get(
            "nova list services",
            format!("/os-services?binary={}", enc(binary)),
        );
        Ok(self.session.json::<ServicesBody>(&call).await?.services)
    }

    /// Every nova-compute service.
    pub async fn compute_services(&self) -> Result<Vec<Service>, OpenStackError> {
        self.services("nova-compute").await
    }

    /// Every nova-compute service with Nova's clock at the answer (its
    /// `Date` header), so that heartbeat ages are measured on Nova's clock
    /// rather than ours: the monitor's one call per cycle. Read-only,
    /// retried, cancel-safe.
    pub async fn compute_services_at(&self) -> Result<ServiceListing, OpenStackError> {
        let call = self.get(
            "nova list services",
            "/os-services?binary=nova-compute".to_owned(),
        );
        let answer = self.session.send(&call).await?;
        let body: ServicesBody = self.session.parse(&call, &answer)?;
        Ok(ServiceListing {
            services: body.services,
            nova_time: answer.date,
        })
    }

    /// The nova-compute service of `host`, if Nova knows one.
    pub async fn compute_service(&self, host: &str) -> Result<Option<Service>, OpenStackError> {
        let call = self.get(
            "nova get service",
            format!("/os-services?binary=nova-compute&host={}", enc(host)),
        );
        let services = self.session.json::<ServicesBody>(&call).await?.services;
        Ok(services.into_iter().find(|s| s.host == host))
    }

    /// Forces `service` down and disables it with `reason` (which should
    /// carry the leader's epoch), so Nova allows evacuation at once.
    /// From 2.53 one `PUT /os-services/{id}`; from 2.11 the older
    /// `force-down` then `disable-log-reason`; below 2.11 unsupported.
    /// Idempotent in effect but never retried here (a mutating call); not
    /// cancel-safe.
    pub async fn force_down(&self, service: &Service, reason: &str) -> Result<(), OpenStackError> {
        if self.version >= Microversion::SERVICE_BY_ID {
            let call = self.mutate(
                "nova force-down service",
                Method::PUT,
                format!("/os-services/{}", enc(&service.id)),
                json!({ "status": "disabled", "disabled_reason": reason, "forced_down": true }),
            );
            self.session.send(&call).await?;
            return Ok(());
        }
        self.require("nova force-down service", Microversion::FORCE_DOWN_OLD)?;
        let call = self.mutate(
            "nova force-down service",
            Method::PUT,
            "/os-services/force-down".into(),
            json!({ "host": service.host, "binary": service.binary, "forced_down": true }),
        );
        self.session.send(&call).await?;
        let call = self.mutate(
            "nova disable service",
            Method::PUT,
            "/os-services/disable-log-reason".into(),
            json!({ "host": service.host, "binary": service.binary, "disabled_reason": reason }),
        );
        self.session.send(&call).await?;
        Ok(())
    }

    /// Enables `service` and clears `forced_down` (the admin reset, and
    /// enabling an HA node before evacuating to it). Not retried; not
    /// cancel-safe.
    pub async fn enable(&self, service: &Service) -> Result<(), OpenStackError> {
        if self.version >= Microversion::SERVICE_BY_ID {
            let call = self.mutate(
                "nova enable service",
                Method::PUT,
                format!("/os-services/{}", enc(&service.id)),
                json!({ "status": "enabled", "forced_down": false }),
            );
            self.session.send(&call).await?;
            return Ok(());
        }
        if self.version >= Microversion::FORCE_DOWN_OLD && service.forced_down == Some(true) {
            let call = self.mutate(
                "nova clear force-down",
                Method::PUT,
                "/os-services/force-down".into(),
                json!({ "host": service.host, "binary": service.binary, "forced_down": false }),
            );
            self.session.send(&call).await?;
        }
        let call = self.mutate(
            "nova enable service",
            Method::PUT,
            "/os-services/enable".into(),
            json!({ "host": service.host, "binary": service.binary }),
        );
        self.session.send(&call).await?;
        Ok(())
    }

    /// Every server on `host` across all tenants, every page: asks
    /// [`SERVER_PAGE_SIZE`] at a time and follows the marker until a page
    /// comes back short without a `next` link. A server seen twice (the list
    /// shifted while paging) is kept once. Read-only; each page is retried.
    pub async fn servers_on_host(&self, host: &str) -> Result<Vec<Server>, OpenStackError> {
        self.servers_on_host_paged(host, SERVER_PAGE_SIZE).await
    }

    /// As [`NovaClient::servers_on_host`] with a chosen page size.
    pub async fn servers_on_host_paged(
        &self,
        host: &str,
        limit: usize,
    ) -> Result<Vec<Server>, OpenStackError> {
        let limit = limit.max(1);
        let mut out: Vec<Server> = Vec::new();
        let mut seen: HashSet<String> = HashSet::new();
        let mut marker: Option<String> = None;
        loop {
            let mut path = format!(
                "/servers/detail?all_tenants=1&host={}&limit={limit}",
                enc(host)
            );
            if let Some(m) = &marker {
                path.push_str("&marker=");
                path.push_str(&enc(m));
            }
            let call = self.get("nova list servers", path);
            let page: ServersBody = self.session.json(&call).await?;
            let has_next = page.servers_links.iter().any(|l| l.rel == "next");
            let count = page.servers.len();
            let last = page.servers.last().map(|s| s.id.clone());
            for s in page.servers {
                if seen.insert(s.id.clone()) {
                    out.push(s);
                }
            }
            if count == 0 || (count < limit && !has_next) {
                break;
            }
            if last == marker {
                return Err(OpenStackError::Pagination {
                    call: call.name,
                    path: call.path,
                    marker: marker.unwrap_or_default(),
                });
            }
            marker = last;
        }
        tracing::debug!(host, servers = out.len(), "nova servers listed");
        Ok(out)
    }

    /// One server; `Ok(None)` when Nova answers 404. Read-only, retried.
    pub async fn server(&self, id: &str) -> Result<Option<Server>, OpenStackError> {
        let call = self.get("nova get server", format!("/servers/{}", enc(id)));
        match self.session.json::<ServerBody>(&call).await {
            Ok(b) => Ok(Some(b.server)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn action(
        &self,
        name: &'static str,
        id: &str,
        body: Value,
    ) -> Result<(), OpenStackError> {
        let call = self.mutate(
            name,
            Method::POST,
            format!("/servers/{}/action", enc(id)),
            body,
        );
        self.session.send(&call).await?;
        Ok(())
    }

    /// Evacuates server `id` to `target` (or lets the scheduler choose).
    /// From 2.95 the server lands SHUTOFF. Sent once, never retried (a
    /// timeout leaves the outcome unknown: read the server back); not
    /// cancel-safe. Any admin password Nova returns is discarded unread.
    pub async fn evacuate(&self, id: &str, target: Option<&str>) -> Result<(), OpenStackError> {
        let mut body = serde_json::Map::new();
        if let Some(host) = target {
            body.insert("host".into(), Value::String(host.to_owned()));
        }
        if self.version < Microversion::EVACUATE_NO_SHARED_STORAGE {
            body.insert("onSharedStorage".into(), Value::Bool(false));
        }
        self.action("nova evacuate", id, json!({ "evacuate": body }))
            .await
    }

    /// Starts a stopped server (`os-start`). Not retried; not cancel-safe.
    pub async fn start(&self, id: &str) -> Result<(), OpenStackError> {
        self.action("nova start server", id, json!({ "os-start": null }))
            .await
    }

    /// Locks a server; `reason` is sent from 2.73 and dropped before. Not
    /// retried.
    pub async fn lock(&self, id: &str, reason: Option<&str>) -> Result<(), OpenStackError> {
        let body = match reason {
            Some(r) if self.version >= Microversion::LOCKED_REASON => {
                json!({ "lock": { "locked_reason": r } })
            }
            _ => json!({ "lock": null }),
        };
        self.action("nova lock server", id, body).await
    }

    /// Unlocks a server. Not retried.
    pub async fn unlock(&self, id: &str) -> Result<(), OpenStackError> {
        self.action("nova unlock server", id, json!({ "unlock": null }))
            .await
    }

    /// The migration records of server `instance`, optionally only those of
    /// `migration_type` (e.g. `evacuation`; filtered client-side too, since
    /// clouds before 2.23 do not report it). Read-only, retried.
    pub async fn migrations(
        &self,
        instance: &str,
        migration_type: Option<&str>,
    ) -> Result<Vec<Migration>, OpenStackError> {
        let mut path = format!("/os-migrations?instance_uuid={}", enc(instance));
        if let Some(t) = migration_type {
            path.push_str("&migration_type=");
            path.push_str(&enc(t));
        }
        let call = self.get("nova list migrations", path);
        let all = self.session.json::<MigrationsBody>(&call).await?.migrations;
        Ok(all
            .into_iter()
            .filter(|m| m.instance_uuid == instance)
            .filter(|m| match (migration_type, &m.migration_type) {
                (Some(want), Some(have)) => want == have,
                _ => true,
            })
            .collect())
    }

    /// Every hypervisor, every page. Read-only, retried.
    pub async fn hypervisors(&self) -> Result<Vec<Hypervisor>, OpenStackError> {
        let limit = 1000;
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let mut marker: Option<String> = None;
        loop {
            let mut path = "/os-hypervisors/detail".to_owned();
            // limit/marker exist from 2.33; older clouds answer everything.
            let paged = self.version >= Microversion(2, 33);
            if paged {
                path.push_str(&format!("?limit={limit}"));
                if let Some(m) = &marker {
                    path.push_str("&marker=");
                    path.push_str(&enc(m));
                }
            }
            let call = self.get("nova list hypervisors", path);
            let page: HypervisorsBody = self.session.json(&call).await?;
            let has_next = page.hypervisors_links.iter().any(|l| l.rel == "next");
            let count = page.hypervisors.len();
            let last = page.hypervisors.last().map(|h| h.id.clone());
            for h in page.hypervisors {
                if seen.insert(h.id.clone()) {
                    out.push(h);
                }
            }
            if !paged || count == 0 || (count < limit && !has_next) {
                break;
            }
            if last == marker {
                return Err(OpenStackError::Pagination {
                    call: call.name,
                    path: call.path,
                    marker: marker.unwrap_or_default(),
                });
            }
            marker = last;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_ids_accept_numbers_and_uuids() {
        let s: Service = serde_json::from_str(
            r#"{"id": 7, "binary": "nova-compute", "host": "c1", "status": "enabled",
                "state": "down", "zone": "nova", "updated_at": null}"#,
        )
        .unwrap();
        assert_eq!(s.id, "7");
        assert!(s.is_down());
        assert!(!s.is_disabled());
        let s: Service = serde_json::from_str(
            r#"{"id": "e81d66a4-ddd3-4aba-8a84-171d1cb4d339", "binary": "nova-compute",
                "host": "c1", "status": "disabled", "state": "up", "forced_down": true,
                "disabled_reason": "novaha epoch 3"}"#,
        )
        .unwrap();
        assert_eq!(s.forced_down, Some(true));
        assert!(serde_json::from_str::<Service>(r#"{"id": [1]}"#).is_err());
    }

    #[test]
    fn heartbeats_parse_as_nova_writes_them_in_utc() {
        let with = |t: Option<&str>| Service {
            id: "1".into(),
            binary: "nova-compute".into(),
            host: "c1".into(),
            status: "enabled".into(),
            state: "up".into(),
            forced_down: None,
            disabled_reason: None,
            zone: None,
            updated_at: t.map(str::to_owned),
        };
        let want = "2026-11-21T03:00:05+00:00";
        for text in [
            "2026-11-21T03:00:05.000000",
            "2026-11-21T03:00:05",
            "2026-11-21 03:00:05",
            "2026-11-21T03:00:05Z",
            "2026-11-21T04:00:05+01:00",
        ] {
            let t = with(Some(text)).heartbeat();
            assert_eq!(t.map(|t| t.to_rfc3339()).as_deref(), Some(want), "{text}");
        }
        let t = with(Some("2026-11-21T03:00:05.250000"))
            .heartbeat()
            .unwrap();
        assert_eq!(t.timestamp_subsec_millis(), 250);
        assert!(with(None).heartbeat().is_none());
        assert!(with(Some("last tuesday")).heartbeat().is_none());
    }

    #[test]
    fn server_parses_admin_fields() {
        let s: Server = serde_json::from_str(
            r#"{"id": "u1", "name": "vm", "status": "ACTIVE", "user_id": "usr",
                "tenant_id": "prj", "OS-EXT-SRV-ATTR:host": "c1",
                "OS-EXT-STS:task_state": null, "metadata": {"ha": "off", "n": 3}}"#,
        )
        .unwrap();
        assert_eq!(s.host.as_deref(), Some("c1"));
        assert_eq!(s.project_id, "prj");
        assert_eq!(s.metadata["n"], "3");
        let i = s.to_instance();
        assert_eq!(i.host, "c1");
        assert_eq!(i.project_id, "prj");
        assert!(!i.boot_from_volume);
        assert_eq!(i.resources, None, "no flavor: unknown");
    }

    #[test]
    fn boot_from_volume_and_embedded_flavor() {
        let bfv: Server = serde_json::from_str(
            r#"{"id": "u1", "status": "ACTIVE", "image": "",
                "os-extended-volumes:volumes_attached": [{"id": "v1", "delete_on_termination": false}],
                "flavor": {"vcpus": 2, "ram": 2048, "disk": 20, "ephemeral": 1, "swap": "",
                           "original_name": "m1.small", "extra_specs": {}}}"#,
        )
        .unwrap();
        assert!(bfv.boots_from_volume());
        let i = bfv.to_instance();
        assert!(i.boot_from_volume);
        let r = i.resources.expect("embedded flavor");
        assert_eq!(
            (r.vcpus, r.memory_mb, r.disk_gb),
            (2, 2048, 1),
            "no root disk"
        );
        let image: Server = serde_json::from_str(
            r#"{"id": "u2", "status": "ACTIVE",
                "image": {"id": "img", "links": []},
                "os-extended-volumes:volumes_attached": [{"id": "data"}],
                "flavor": {"vcpus": 1, "ram": 512, "disk": 1, "ephemeral": 0, "swap": 1024}}"#,
        )
        .unwrap();
        assert!(!image.boots_from_volume(), "an image with a data volume");
        let r = image.to_instance().resources.expect("flavor");
        assert_eq!(r.disk_gb, 2);
        // Before 2.47: a flavor reference, no resources.
        let old: Server = serde_json::from_str(
            r#"{"id": "u3", "status": "ACTIVE", "image": "",
                "flavor": {"id": "1", "links": []}}"#,
        )
        .unwrap();
        assert_eq!(old.flavor, None);
        assert!(!old.boots_from_volume(), "no image but no volume either");
    }
}
