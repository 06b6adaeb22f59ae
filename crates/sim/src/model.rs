//! The simulated cloud: hosts and their nova-compute services, servers,
//! migrations, Keystone users/projects/tokens, the call log and the fault
//! rules. Everything lives in one [`World`] behind one mutex; time-driven
//! changes (a killed host going `down`, an evacuation landing) are computed
//! lazily from the sim clock on every access, so there are no background
//! tasks and a test can jump the clock instead of sleeping.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use uuid::Uuid;

use crate::SimConfig;
use crate::faults::FaultRule;

/// The metadata key whose value `"false"` marks an instance as opted out of
/// evacuation in the seeded data (every tenth instance carries it).
pub const OPT_OUT_KEY: &str = "novaha:evacuate";

/// A Nova API microversion (`2.53`), ordered numerically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Microversion(pub u32, pub u32);

impl Microversion {
    /// The smallest microversion Nova's v2.1 API accepts.
    pub const MIN: Microversion = Microversion(2, 1);

    /// Parses `"2.53"`; `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        let (a, b) = s.trim().split_once('.')?;
        Some(Microversion(a.parse().ok()?, b.parse().ok()?))
    }

    /// True when this version is at least `major.minor`.
    pub fn at_least(self, major: u32, minor: u32) -> bool {
        self >= Microversion(major, minor)
    }
}

impl fmt::Display for Microversion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

/// A small deterministic PRNG (splitmix64): seeded ids and fault rates stay
/// reproducible from run to run without pulling in a crate.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator started from `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform float in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A random (version 4) UUID drawn from this generator.
    pub fn uuid(&mut self) -> Uuid {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.next_u64().to_le_bytes());
        b[8..].copy_from_slice(&self.next_u64().to_le_bytes());
        uuid::Builder::from_random_bytes(b).into_uuid()
    }
}

/// One Nova service record (nova-compute on a host, or a control service).
#[derive(Debug, Clone, Serialize)]
pub struct Service {
    /// The integer id (what Nova shows before microversion 2.53).
    pub id: u32,
    /// The UUID (what Nova shows from microversion 2.53).
    pub uuid: Uuid,
    /// `nova-compute`, `nova-scheduler`, `nova-conductor`.
    pub binary: String,
    /// The host the service runs on.
    pub host: String,
    /// Availability zone (`nova` for computes, `internal` for the others).
    pub zone: String,
    /// Administratively disabled (`status: disabled`).
    pub disabled: bool,
    /// Why it was disabled, if given.
    pub disabled_reason: Option<String>,
    /// Forced down by an operator (microversion 2.11+).
    pub forced_down: bool,
    /// When the service stopped heart-beating (the host was killed); `None`
    /// while it runs.
    #[serde(skip)]
    pub killed_at: Option<Instant>,
    /// When its heartbeats started (creation, or the last revive): each
    /// heartbeat falls a whole number of `report_interval`s after it.
    #[serde(skip)]
    pub beats_from: Instant,
    /// Whether it is a spare HA host (`ha-N`).
    pub ha: bool,
    /// Integer id of the hypervisor (compute services only).
    pub hypervisor_id: u32,
    /// UUID of the hypervisor (compute services only).
    pub hypervisor_uuid: Uuid,
}

/// One Nova server (instance).
#[derive(Debug, Clone, Serialize)]
pub struct Server {
    /// Server UUID.
    pub id: Uuid,
    /// Display name.
    pub name: String,
    /// The compute host it lives on (`OS-EXT-SRV-ATTR:host`).
    pub host: String,
    /// API status: ACTIVE, SHUTOFF, REBUILD, ERROR.
    pub status: String,
    /// `OS-EXT-STS:vm_state`: active, stopped, error.
    pub vm_state: String,
    /// `OS-EXT-STS:task_state`: null, rebuilding, powering-on, ...
    pub task_state: Option<String>,
    /// Owner user id.
    pub user_id: String,
    /// Owner project id.
    pub tenant_id: String,
    /// Server metadata.
    pub metadata: BTreeMap<String, String>,
    /// Locked by an admin or owner.
    pub locked: bool,
    /// Why it was locked (microversion 2.73+).
    pub locked_reason: Option<String>,
    /// Creation time.
    pub created: DateTime<Utc>,
    /// Last update.
    pub updated: DateTime<Utc>,
    /// Its flavor (embedded in the server from microversion 2.47).
    pub flavor: Flavor,
    /// The root volume's id when it boots from a volume (Nova then shows
    /// `"image": ""` and the volume under
    /// `os-extended-volumes:volumes_attached`); `None` = booted from the
    /// image.
    pub root_volume: Option<Uuid>,
}

/// A flavor, as a server embeds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Flavor {
    /// Its name (`original_name`).
    pub name: String,
    /// vCPUs.
    pub vcpus: u64,
    /// RAM in MB.
    pub ram: u64,
    /// Root disk in GB.
    pub disk: u64,
    /// Ephemeral disk in GB.
    pub ephemeral: u64,
    /// Swap in MB.
    pub swap: u64,
}

impl Flavor {
    /// `m1.tiny`: 1 vCPU, 512 MB, 1 GB (every seeded server's).
    pub fn tiny() -> Self {
        Self::new("m1.tiny", 1, 512, 1)
    }

    /// A flavor without ephemeral disk or swap.
    pub fn new(name: &str, vcpus: u64, ram: u64, disk: u64) -> Self {
        Self {
            name: name.to_owned(),
            vcpus,
            ram,
            disk,
            ephemeral: 0,
            swap: 0,
        }
    }

    /// What Placement allocates for it (`VCPU`, `MEMORY_MB`, `DISK_GB`);
    /// no root disk when the server boots from a volume.
    pub fn usage(&self, boot_from_volume: bool) -> [u64; 3] {
        let root = if boot_from_volume { 0 } else { self.disk };
        [
            self.vcpus,
            self.ram,
            root + self.ephemeral + self.swap.div_ceil(1024),
        ]
    }
}

/// One resource class of a host's Placement inventory.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Inventory {
    /// `total`.
    pub total: u64,
    /// `reserved`.
    pub reserved: u64,
    /// `allocation_ratio`.
    pub allocation_ratio: f64,
    /// `max_unit`.
    pub max_unit: u64,
}

/// The resource classes the sim's providers have, in Placement's names.
pub const RESOURCE_CLASSES: [&str; 3] = ["VCPU", "MEMORY_MB", "DISK_GB"];

/// A host's default inventory: the hypervisor's 64 vCPUs, 256 GiB and
/// 2000 GB with Nova's initial allocation ratios (16, 1.5, 1) and 512 MB
/// of memory reserved for the host.
pub fn default_inventory() -> [Inventory; 3] {
    [
        Inventory {
            total: 64,
            reserved: 0,
            allocation_ratio: 16.0,
            max_unit: 64,
        },
        Inventory {
            total: 262_144,
            reserved: 512,
            allocation_ratio: 1.5,
            max_unit: 262_144,
        },
        Inventory {
            total: 2000,
            reserved: 0,
            allocation_ratio: 1.0,
            max_unit: 2000,
        },
    ]
}

/// One Nova migration record (evacuations only, in this sim).
#[derive(Debug, Clone, Serialize)]
pub struct Migration {
    /// Integer id.
    pub id: u32,
    /// UUID (shown from microversion 2.59).
    pub uuid: Uuid,
    /// The server being moved.
    pub instance_uuid: Uuid,
    /// Where it came from.
    pub source_compute: String,
    /// Where it goes (set once chosen).
    pub dest_compute: Option<String>,
    /// accepted, done, error.
    pub status: String,
    /// Always `evacuation` here.
    pub migration_type: String,
    /// Who asked.
    pub user_id: String,
    /// The project of the instance.
    pub project_id: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last update.
    pub updated_at: DateTime<Utc>,
}

/// An evacuation in flight: it lands (or fails) once the clock passes `due`.
#[derive(Debug, Clone)]
struct Pending {
    migration: usize,
    server: Uuid,
    target: String,
    due: Instant,
    land_shutoff: bool,
    fail: Option<String>,
}

/// A Keystone user.
#[derive(Debug, Clone, Serialize)]
pub struct User {
    /// User id (32 hex digits, as Keystone).
    pub id: String,
    /// Login name.
    pub name: String,
    /// E-mail address, if any.
    pub email: Option<String>,
    /// Default project id.
    pub default_project_id: Option<String>,
    /// The password the sim accepts for this user.
    #[serde(skip)]
    pub password: String,
}

/// A Keystone project.
#[derive(Debug, Clone, Serialize)]
pub struct Project {
    /// Project id.
    pub id: String,
    /// Name.
    pub name: String,
}

/// A Keystone role.
#[derive(Debug, Clone, Serialize)]
pub struct Role {
    /// Role id.
    pub id: String,
    /// Name (admin, member, reader).
    pub name: String,
}

/// A role assignment of a user on a project.
#[derive(Debug, Clone, Serialize)]
pub struct Assignment {
    /// The user.
    pub user_id: String,
    /// The project.
    pub project_id: String,
    /// The role.
    pub role_id: String,
}

/// A Keystone application credential.
#[derive(Debug, Clone)]
pub struct AppCredential {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its secret.
    pub secret: String,
    /// The user it acts as.
    pub user_id: String,
    /// The project it is scoped to.
    pub project_id: String,
}

/// An issued Keystone token.
#[derive(Debug, Clone)]
pub struct Token {
    /// The user.
    pub user_id: String,
    /// The project scope, if scoped.
    pub project_id: Option<String>,
    /// Auth methods used.
    pub methods: Vec<String>,
    /// Issued (sim wall clock).
    pub issued_at: DateTime<Utc>,
    /// Expiry (sim wall clock).
    pub expires_at: DateTime<Utc>,
    /// Audit id.
    pub audit_id: String,
}

/// One mutating call the sim received (GET /sim/calls).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Call {
    /// HTTP method.
    pub method: String,
    /// Path with query string.
    pub path: String,
    /// The JSON body (passwords and secrets replaced by `***`), or the raw
    /// text when it was not JSON, or null when empty.
    pub body: serde_json::Value,
    /// When it arrived (sim wall clock, RFC 3339).
    pub time: DateTime<Utc>,
    /// The `X-OpenStack-Request-ID` the client sent (its global request
    /// id), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// One request as it reached the sim (reads too): what a client sent as
/// its `X-OpenStack-Request-ID`, and the id the sim answered with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeenRequest {
    /// HTTP method.
    pub method: String,
    /// Path (no query).
    pub path: String,
    /// The client's `X-OpenStack-Request-ID`, if any.
    pub sent: Option<String>,
    /// The `x-openstack-request-id` the sim answered with.
    pub answered: String,
}

/// Errors of the Rust control methods (the same failures the control API
/// answers with 404/400).
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// No such host in the sim.
    #[error("sim host {0} not found")]
    UnknownHost(String),
    /// No such server in the sim.
    #[error("sim server {0} not found")]
    UnknownServer(String),
    /// A bad argument to a control call.
    #[error("sim control: {0}")]
    BadRequest(String),
    /// The listener could not be bound.
    #[error("sim listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
}

impl SimError {
    /// Whether retrying could help: only a bind clash (port taken) can.
    pub fn is_retryable(&self) -> bool {
        matches!(self, SimError::Bind { .. })
    }
}

/// The settings that can change while the sim runs.
#[derive(Debug, Clone)]
pub struct Runtime {
    /// How long after its last heartbeat a service reads `down`.
    pub service_down_time: Duration,
    /// How often a running service heartbeats (Nova's `report_interval`):
    /// its `updated_at` advances in these steps. Zero: `updated_at` is
    /// always now while it runs.
    pub report_interval: Duration,
    /// How long an evacuation takes to land.
    pub evacuate_delay: Duration,
    /// Token lifetime for newly issued tokens.
    pub token_ttl: Duration,
    /// The highest Nova microversion advertised and accepted.
    pub max_version: Microversion,
    /// Page size cap for list calls (Nova's `osapi_max_limit`).
    pub max_limit: usize,
}

/// The whole simulated cloud.
#[derive(Debug)]
pub struct World {
    /// Changeable settings.
    pub rt: Runtime,
    started: Instant,
    started_wall: DateTime<Utc>,
    offset: Duration,
    /// The RNG (ids, fault rates).
    pub rng: Rng,
    /// All services, computes first in seeding order.
    pub services: Vec<Service>,
    service_by_host: HashMap<String, usize>,
    /// All servers, in creation order (listing shows newest first).
    pub servers: Vec<Server>,
    server_idx: HashMap<Uuid, usize>,
    /// All migrations in creation order.
    pub migrations: Vec<Migration>,
    pending: Vec<Pending>,
    /// Keystone users.
    pub users: Vec<User>,
    /// Keystone projects.
    pub projects: Vec<Project>,
    /// Keystone roles.
    pub roles: Vec<Role>,
    /// Role assignments.
    pub assignments: Vec<Assignment>,
    /// Application credentials.
    pub app_creds: Vec<AppCredential>,
    /// Issued tokens.
    pub tokens: HashMap<String, Token>,
    /// The mutating calls received.
    pub calls: Vec<Call>,
    /// Every request (reads too), with its request ids.
    pub seen: Vec<SeenRequest>,
    /// Active fault rules.
    pub faults: Vec<FaultRule>,
    /// Next fault rule id.
    pub next_fault_id: u64,
    /// Fail the next N evacuations (migration error) regardless of target.
    pub fail_evacuations: u32,
    next_service_id: u32,
    /// Placement inventories changed from [`default_inventory`], by host.
    pub inventories: HashMap<String, [Inventory; 3]>,
    /// Placement provider generations (bumped by each inventory write).
    pub generations: HashMap<String, u64>,
}

/// Keystone's id of the `Default` domain.
pub const DEFAULT_DOMAIN_ID: &str = "default";
/// Keystone's name of the `Default` domain.
pub const DEFAULT_DOMAIN_NAME: &str = "Default";

fn hex_id(rng: &mut Rng) -> String {
    rng.uuid().simple().to_string()
}

impl World {
    /// A world seeded from `cfg`: hosts `compute-1..N` with M servers each,
    /// spare hosts `ha-1..K` (disabled), the admin user and project, owner
    /// users with e-mail addresses in projects with members.
    pub fn new(cfg: &SimConfig) -> Self {
        let now = Instant::now();
        let mut w = World {
            rt: Runtime {
                service_down_time: cfg.service_down_time,
                report_interval: cfg.report_interval,
                evacuate_delay: cfg.evacuate_delay,
                token_ttl: cfg.token_ttl,
                max_version: cfg.max_version,
                max_limit: cfg.max_limit.max(1),
            },
            started: now,
            started_wall: Utc::now(),
            offset: Duration::ZERO,
            rng: Rng::new(cfg.seed),
            services: Vec::new(),
            service_by_host: HashMap::new(),
            servers: Vec::new(),
            server_idx: HashMap::new(),
            migrations: Vec::new(),
            pending: Vec::new(),
            users: Vec::new(),
            projects: Vec::new(),
            roles: Vec::new(),
            assignments: Vec::new(),
            app_creds: Vec::new(),
            tokens: HashMap::new(),
            calls: Vec::new(),
            seen: Vec::new(),
            faults: Vec::new(),
            next_fault_id: 1,
            fail_evacuations: 0,
            next_service_id: 1,
            inventories: HashMap::new(),
            generations: HashMap::new(),
        };
        w.seed_identity(cfg);
        w.add_service("nova-scheduler", "controller", "internal", false);
        w.add_service("nova-conductor", "controller", "internal", false);
        for i in 1..=cfg.hosts {
            w.add_host(&format!("compute-{i}"), false)
                .expect("seeded host names are unique");
        }
        for i in 1..=cfg.ha_nodes {
            w.add_host(&format!("ha-{i}"), true)
                .expect("seeded host names are unique");
        }
        let owners: Vec<(String, String)> = w
            .users
            .iter()
            .filter(|u| u.name.starts_with("user-"))
            .map(|u| {
                (
                    u.id.clone(),
                    u.default_project_id.clone().unwrap_or_default(),
                )
            })
            .collect();
        let mut n = 0usize;
        for h in 1..=cfg.hosts {
            let host = format!("compute-{h}");
            for _ in 0..cfg.instances_per_host {
                let (user, project) = owners[n % owners.len()].clone();
                let mut md = BTreeMap::new();
                md.insert(
                    "role".to_owned(),
                    if n % 2 == 0 { "web" } else { "db" }.to_owned(),
                );
                if n % 10 == 9 {
                    md.insert(OPT_OUT_KEY.to_owned(), "false".to_owned());
                }
                let name = format!("vm-{}", n + 1);
                w.add_server(&name, &host, &user, &project, md);
                n += 1;
            }
        }
        w
    }

    fn seed_identity(&mut self, cfg: &SimConfig) {
        for name in ["admin", "member", "reader"] {
            let id = hex_id(&mut self.rng);
            self.roles.push(Role {
                id,
                name: name.to_owned(),
            });
        }
        let admin_project = hex_id(&mut self.rng);
        self.projects.push(Project {
            id: admin_project.clone(),
            name: cfg.project.clone(),
        });
        let admin_user = hex_id(&mut self.rng);
        self.users.push(User {
            id: admin_user.clone(),
            name: cfg.username.clone(),
            email: Some("admin@example.org".to_owned()),
            default_project_id: Some(admin_project.clone()),
            password: cfg.password.clone(),
        });
        let admin_role = self.role_id("admin");
        let member_role = self.role_id("member");
        self.assignments.push(Assignment {
            user_id: admin_user.clone(),
            project_id: admin_project.clone(),
            role_id: admin_role,
        });
        let app_id = hex_id(&mut self.rng);
        let secret = format!("sim-secret-{}", hex_id(&mut self.rng));
        self.app_creds.push(AppCredential {
            id: app_id,
            name: "novaha".to_owned(),
            secret,
            user_id: admin_user,
            project_id: admin_project,
        });
        let nprojects = cfg.projects.max(1);
        let mut project_ids = Vec::new();
        for p in 1..=nprojects {
            let id = hex_id(&mut self.rng);
            self.projects.push(Project {
                id: id.clone(),
                name: format!("project-{p}"),
            });
            project_ids.push(id);
        }
        for u in 1..=cfg.users.max(1) {
            let id = hex_id(&mut self.rng);
            let project = project_ids[(u - 1) % nprojects].clone();
            self.users.push(User {
                id: id.clone(),
                name: format!("user-{u}"),
                email: Some(format!("user-{u}@example.org")),
                default_project_id: Some(project.clone()),
                password: format!("user-{u}"),
            });
            self.assignments.push(Assignment {
                user_id: id,
                project_id: project,
                role_id: member_role.clone(),
            });
        }
        // A member without an e-mail address, to show it is skipped.
        let id = hex_id(&mut self.rng);
        self.users.push(User {
            id: id.clone(),
            name: "no-email".to_owned(),
            email: None,
            default_project_id: Some(project_ids[0].clone()),
            password: "no-email".to_owned(),
        });
        self.assignments.push(Assignment {
            user_id: id,
            project_id: project_ids[0].clone(),
            role_id: member_role,
        });
    }

    /// The id of the role named `name` (seeded, so always present).
    pub fn role_id(&self, name: &str) -> String {
        self.roles
            .iter()
            .find(|r| r.name == name)
            .map(|r| r.id.clone())
            .unwrap_or_default()
    }

    fn add_service(&mut self, binary: &str, host: &str, zone: &str, ha: bool) -> usize {
        let id = self.next_service_id;
        self.next_service_id += 1;
        let uuid = self.rng.uuid();
        let hypervisor_uuid = self.rng.uuid();
        let beats_from = self.now();
        self.services.push(Service {
            id,
            uuid,
            binary: binary.to_owned(),
            host: host.to_owned(),
            zone: zone.to_owned(),
            disabled: ha,
            disabled_reason: ha.then(|| "novaha spare HA host".to_owned()),
            forced_down: false,
            killed_at: None,
            beats_from,
            ha,
            hypervisor_id: id,
            hypervisor_uuid,
        });
        self.services.len() - 1
    }

    /// Adds a compute host (its nova-compute service and hypervisor); a
    /// spare HA host starts disabled with a reason. Errors if it exists.
    pub fn add_host(&mut self, name: &str, ha: bool) -> Result<(), SimError> {
        if self.service_by_host.contains_key(name) {
            return Err(SimError::BadRequest(format!("host {name} already exists")));
        }
        let i = self.add_service("nova-compute", name, "nova", ha);
        self.service_by_host.insert(name.to_owned(), i);
        Ok(())
    }

    /// Adds a server on `host`, ACTIVE. Returns its UUID.
    pub fn add_server(
        &mut self,
        name: &str,
        host: &str,
        user_id: &str,
        project_id: &str,
        metadata: BTreeMap<String, String>,
    ) -> Uuid {
        let id = self.rng.uuid();
        // Distinct, increasing creation times keep Nova's sort order stable.
        let created = self.started_wall - chrono::Duration::seconds(86_400)
            + chrono::Duration::milliseconds(self.servers.len() as i64);
        self.server_idx.insert(id, self.servers.len());
        self.servers.push(Server {
            id,
            name: name.to_owned(),
            host: host.to_owned(),
            status: "ACTIVE".to_owned(),
            vm_state: "active".to_owned(),
            task_state: None,
            user_id: user_id.to_owned(),
            tenant_id: project_id.to_owned(),
            metadata,
            locked: false,
            locked_reason: None,
            created,
            updated: created,
            flavor: Flavor::tiny(),
            root_volume: None,
        });
        id
    }

    /// The sim's monotonic now (real time plus any clock advance).
    pub fn now(&self) -> Instant {
        Instant::now() + self.offset
    }

    /// The sim's wall-clock now.
    pub fn wall(&self) -> DateTime<Utc> {
        self.wall_at(self.now())
    }

    fn wall_at(&self, t: Instant) -> DateTime<Utc> {
        let d = t.saturating_duration_since(self.started);
        self.started_wall + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::zero())
    }

    /// Jumps the sim clock forward (services go down, evacuations land,
    /// tokens expire as if that much time had passed).
    pub fn advance(&mut self, d: Duration) {
        self.offset += d;
        self.tick();
    }

    /// Applies every time-driven change due by now: lands or fails the
    /// evacuations whose delay has passed. Called on every request.
    pub fn tick(&mut self) {
        let now = self.now();
        if self.pending.is_empty() {
            return;
        }
        let (due, rest): (Vec<Pending>, Vec<Pending>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|p| p.due <= now);
        self.pending = rest;
        let wall = self.wall();
        for p in due {
            let target_ok = self
                .service_by_host
                .get(&p.target)
                .map(|&i| &self.services[i])
                .map(|s| !s.disabled && !s.forced_down && self.is_up_at(s, now));
            let failure = match (&p.fail, target_ok) {
                (Some(f), _) => Some(f.clone()),
                (None, Some(true)) => None,
                (None, _) => Some(format!("target host {} is down or disabled", p.target)),
            };
            let m = &mut self.migrations[p.migration];
            m.updated_at = wall;
            let Some(&si) = self.server_idx.get(&p.server) else {
                m.status = "error".to_owned();
                continue;
            };
            let s = &mut self.servers[si];
            s.updated = wall;
            s.task_state = None;
            match failure {
                None => {
                    m.status = "done".to_owned();
                    s.host = p.target.clone();
                    if p.land_shutoff {
                        s.status = "SHUTOFF".to_owned();
                        s.vm_state = "stopped".to_owned();
                    } else {
                        s.status = "ACTIVE".to_owned();
                        s.vm_state = "active".to_owned();
                    }
                }
                Some(reason) => {
                    tracing::debug!(server = %p.server, reason = %reason, "sim evacuation failed");
                    m.status = "error".to_owned();
                    s.status = "ERROR".to_owned();
                    s.vm_state = "error".to_owned();
                }
            }
        }
    }

    fn is_up_at(&self, s: &Service, now: Instant) -> bool {
        match s.killed_at {
            None => true,
            Some(t) => now.saturating_duration_since(t) <= self.rt.service_down_time,
        }
    }

    /// Whether the service's heartbeat is fresh (`state: up`), ignoring
    /// forced_down (Nova reports forced-down services as `down`).
    pub fn heartbeat_up(&self, s: &Service) -> bool {
        self.is_up_at(s, self.now())
    }

    /// Nova's `state` of a service: `down` when forced down or its last
    /// heartbeat is older than service_down_time.
    pub fn state(&self, s: &Service) -> &'static str {
        if !s.forced_down && self.heartbeat_up(s) {
            "up"
        } else {
            "down"
        }
    }

    /// The service's `updated_at`: its last heartbeat, as Nova reports it:
    /// heartbeats come every `report_interval` from when the service
    /// started, and stop when its host is killed.
    pub fn service_updated_at(&self, s: &Service) -> DateTime<Utc> {
        let until = s.killed_at.unwrap_or_else(|| self.now());
        let ri = self.rt.report_interval;
        let ran = until.saturating_duration_since(s.beats_from);
        let last = if ri.is_zero() {
            until
        } else {
            let beats = ran.as_nanos() / ri.as_nanos();
            let since_start = ri.saturating_mul(u32::try_from(beats).unwrap_or(u32::MAX));
            s.beats_from + since_start.min(ran)
        };
        self.wall_at(last)
    }

    /// The nova-compute service of `host`.
    pub fn compute(&self, host: &str) -> Option<&Service> {
        self.service_by_host.get(host).map(|&i| &self.services[i])
    }

    /// The nova-compute service of `host`, mutable.
    pub fn compute_mut(&mut self, host: &str) -> Option<&mut Service> {
        self.service_by_host
            .get(host)
            .copied()
            .map(move |i| &mut self.services[i])
    }

    /// Stops `host`'s heartbeat: it reads `down` after service_down_time.
    pub fn kill(&mut self, host: &str) -> Result<(), SimError> {
        let now = self.now();
        let s = self
            .compute_mut(host)
            .ok_or_else(|| SimError::UnknownHost(host.to_owned()))?;
        if s.killed_at.is_none() {
            s.killed_at = Some(now);
        }
        Ok(())
    }

    /// Restarts `host`'s heartbeat: it reads `up` at once (unless forced
    /// down).
    pub fn revive(&mut self, host: &str) -> Result<(), SimError> {
        let now = self.now();
        let s = self
            .compute_mut(host)
            .ok_or_else(|| SimError::UnknownHost(host.to_owned()))?;
        if s.killed_at.take().is_some() {
            // A restarted nova-compute heartbeats at once.
            s.beats_from = now;
        }
        Ok(())
    }

    /// The server with this id.
    pub fn server(&self, id: &Uuid) -> Option<&Server> {
        self.server_idx.get(id).map(|&i| &self.servers[i])
    }

    /// The server with this id, mutable.
    pub fn server_mut(&mut self, id: &Uuid) -> Option<&mut Server> {
        self.server_idx
            .get(id)
            .copied()
            .map(move |i| &mut self.servers[i])
    }

    /// Servers in Nova's default list order (newest first), as indexes.
    pub fn servers_newest_first(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.servers.len()).rev()
    }

    /// Position of a server in the creation order (for markers).
    pub fn server_position(&self, id: &Uuid) -> Option<usize> {
        self.server_idx.get(id).copied()
    }

    /// True when `usage` fits in `host`'s Placement room: per class,
    /// `(total - reserved) * ratio - allocated`, and at most `max_unit`.
    pub fn fits(&self, host: &str, usage: [u64; 3]) -> bool {
        let inv = self.inventory(host);
        let mut used = [0u64; 3];
        for (_, r) in self.allocations_on(host) {
            for k in 0..3 {
                used[k] += r[k];
            }
        }
        (0..3).all(|k| {
            let cap = (inv[k].total.saturating_sub(inv[k].reserved) as f64
                * inv[k].allocation_ratio)
                .floor() as u64;
            usage[k] <= inv[k].max_unit && used[k] + usage[k] <= cap
        })
    }

    /// The scheduler's choice of an evacuation target: an enabled, up,
    /// not forced-down compute host other than `source` with room for
    /// `usage` in Placement, with the fewest servers (ties broken by name,
    /// so the choice is deterministic).
    pub fn schedule(&self, source: &str, usage: [u64; 3]) -> Option<String> {
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for s in &self.servers {
            *counts.entry(s.host.as_str()).or_default() += 1;
        }
        self.services
            .iter()
            .filter(|s| s.binary == "nova-compute" && s.host != source)
            .filter(|s| !s.disabled && !s.forced_down && self.heartbeat_up(s))
            .filter(|s| self.fits(&s.host, usage))
            .min_by(|a, b| {
                let ca = counts.get(a.host.as_str()).copied().unwrap_or(0);
                let cb = counts.get(b.host.as_str()).copied().unwrap_or(0);
                ca.cmp(&cb).then_with(|| a.host.cmp(&b.host))
            })
            .map(|s| s.host.clone())
    }

    /// Starts an evacuation of `server` (already validated by the API):
    /// REBUILD/rebuilding now, a migration `accepted`, landing after
    /// evacuate_delay. A named `target` without room for the server in
    /// Placement, or `None` and no schedulable host with room: the
    /// migration errors at once and the server goes ERROR (NoValidHost).
    pub fn start_evacuation(
        &mut self,
        server: Uuid,
        target: Option<String>,
        land_shutoff: bool,
        user_id: &str,
    ) -> Result<(), SimError> {
        let wall = self.wall();
        let due = self.now() + self.rt.evacuate_delay;
        let s = self
            .server(&server)
            .ok_or_else(|| SimError::UnknownServer(server.to_string()))?
            .clone();
        let usage = s.flavor.usage(s.root_volume.is_some());
        // Nova's conductor checks a named host through the scheduler too: a
        // host without room is NoValidHost (the server goes ERROR).
        let chosen = match target {
            Some(t) => Some(t).filter(|t| self.fits(t, usage)),
            None => self.schedule(&s.host, usage),
        };
        let fail = if self.fail_evacuations > 0 {
            self.fail_evacuations -= 1;
            Some("injected evacuation failure".to_owned())
        } else {
            None
        };
        let uuid = self.rng.uuid();
        let id = self.migrations.len() as u32 + 1;
        let no_host = chosen.is_none();
        self.migrations.push(Migration {
            id,
            uuid,
            instance_uuid: server,
            source_compute: s.host.clone(),
            dest_compute: chosen.clone(),
            status: if no_host { "error" } else { "accepted" }.to_owned(),
            migration_type: "evacuation".to_owned(),
            user_id: user_id.to_owned(),
            project_id: s.tenant_id.clone(),
            created_at: wall,
            updated_at: wall,
        });
        let mi = self.migrations.len() - 1;
        // A stopped server stays stopped; from 2.95 every evacuation lands
        // stopped.
        let land_shutoff = land_shutoff || s.vm_state == "stopped";
        let srv = self
            .server_mut(&server)
            .ok_or_else(|| SimError::UnknownServer(server.to_string()))?;
        srv.updated = wall;
        match chosen {
            None => {
                srv.status = "ERROR".to_owned();
                srv.vm_state = "error".to_owned();
                srv.task_state = None;
            }
            Some(target) => {
                srv.status = "REBUILD".to_owned();
                srv.task_state = Some("rebuilding".to_owned());
                self.pending.push(Pending {
                    migration: mi,
                    server,
                    target,
                    due,
                    land_shutoff,
                    fail,
                });
            }
        }
        Ok(())
    }

    /// The Placement inventory of `host` (VCPU, MEMORY_MB, DISK_GB).
    pub fn inventory(&self, host: &str) -> [Inventory; 3] {
        self.inventories
            .get(host)
            .copied()
            .unwrap_or_else(default_inventory)
    }

    /// The Placement allocations on `host`'s provider, by server: every
    /// server on the host, plus each evacuation in flight to it (Nova
    /// claims the destination when it accepts the evacuation).
    pub fn allocations_on(&self, host: &str) -> Vec<(Uuid, [u64; 3])> {
        let mut out: Vec<(Uuid, [u64; 3])> = self
            .servers
            .iter()
            .filter(|s| s.host == host)
            .map(|s| (s.id, s.flavor.usage(s.root_volume.is_some())))
            .collect();
        for p in self.pending.iter().filter(|p| p.target == host) {
            if let Some(s) = self.server(&p.server) {
                out.push((s.id, s.flavor.usage(s.root_volume.is_some())));
            }
        }
        out
    }

    /// The user by id.
    pub fn user(&self, id: &str) -> Option<&User> {
        self.users.iter().find(|u| u.id == id)
    }

    /// The project by id.
    pub fn project(&self, id: &str) -> Option<&Project> {
        self.projects.iter().find(|p| p.id == id)
    }

    /// The role by id.
    pub fn role(&self, id: &str) -> Option<&Role> {
        self.roles.iter().find(|r| r.id == id)
    }

    /// Issues a token for `user_id` scoped to `project_id`; returns its id.
    pub fn issue_token(
        &mut self,
        user_id: &str,
        project_id: Option<String>,
        methods: Vec<String>,
    ) -> (String, Token) {
        let id = format!("gAAAAA{}", self.rng.uuid().simple());
        let issued_at = self.wall();
        let ttl =
            chrono::Duration::from_std(self.rt.token_ttl).unwrap_or(chrono::Duration::hours(1));
        let audit_id = self.rng.uuid().simple().to_string()[..22].to_owned();
        let t = Token {
            user_id: user_id.to_owned(),
            project_id,
            methods,
            issued_at,
            expires_at: issued_at + ttl,
            audit_id,
        };
        // Forget expired tokens so a long benchmark does not grow the map.
        let now = issued_at;
        self.tokens.retain(|_, t| t.expires_at > now);
        self.tokens.insert(id.clone(), t.clone());
        (id, t)
    }

    /// The live token with this id (None when unknown or expired).
    pub fn valid_token(&self, id: &str) -> Option<&Token> {
        let now = self.wall();
        self.tokens.get(id).filter(|t| t.expires_at > now)
    }

    /// Expires every token issued so far (the next call with one gets 401).
    pub fn expire_tokens(&mut self) {
        let now = self.wall() - chrono::Duration::seconds(1);
        for t in self.tokens.values_mut() {
            t.expires_at = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> SimConfig {
        SimConfig {
            hosts: 2,
            instances_per_host: 3,
            ha_nodes: 1,
            ..SimConfig::default()
        }
    }

    // The sim clock (`advance`) stands in for paused tokio time: only the
    // offset moves, so the checks are exact.
    #[tokio::test]
    async fn heartbeats_come_every_report_interval_and_stop_when_killed() {
        let mut w = World::new(&SimConfig {
            report_interval: Duration::from_secs(10),
            ..cfg()
        });
        let beat = |w: &World| w.service_updated_at(w.compute("compute-1").expect("host"));
        let first = beat(&w);
        w.advance(Duration::from_millis(9_900));
        assert_eq!(beat(&w), first, "no heartbeat before report_interval");
        w.advance(Duration::from_millis(200));
        let second = beat(&w);
        assert_eq!((second - first).num_milliseconds(), 10_000);
        let age = |w: &World| (w.wall() - beat(w)).num_milliseconds();
        assert!((0..10_000).contains(&age(&w)), "{}", age(&w));
        // Killed: the heartbeat stops at the last one before the kill...
        w.advance(Duration::from_secs(5));
        w.kill("compute-1").expect("kill");
        w.advance(Duration::from_secs(30));
        assert_eq!(beat(&w), second);
        assert!(age(&w) >= 35_000, "{}", age(&w));
        assert_eq!(w.state(w.compute("compute-1").expect("host")), "down");
        // ...and a revived host heartbeats at once.
        w.revive("compute-1").expect("revive");
        assert_eq!(age(&w), 0);
        // Zero: always now while it runs.
        w.rt.report_interval = Duration::ZERO;
        w.advance(Duration::from_millis(1_234));
        assert_eq!(age(&w), 0);
    }

    #[tokio::test]
    async fn killed_host_goes_down_after_service_down_time() {
        let mut w = World::new(&cfg());
        w.kill("compute-1").expect("kill");
        let st = |w: &World| w.state(w.compute("compute-1").expect("host"));
        assert_eq!(st(&w), "up");
        w.advance(Duration::from_secs(9));
        assert_eq!(st(&w), "up", "within service_down_time it is still up");
        w.advance(Duration::from_secs(2));
        assert_eq!(st(&w), "down");
        w.revive("compute-1").expect("revive");
        assert_eq!(st(&w), "up");
    }

    #[tokio::test]
    async fn evacuation_lands_after_delay_on_scheduled_host() {
        let mut w = World::new(&cfg());
        let id = w.servers[0].id;
        w.start_evacuation(id, None, false, "u").expect("evacuate");
        assert_eq!(w.server(&id).expect("server").status, "REBUILD");
        assert_eq!(w.migrations[0].status, "accepted");
        w.advance(Duration::from_secs(2));
        let s = w.server(&id).expect("server");
        // ha-1 is disabled, so the scheduler picks compute-2.
        assert_eq!(
            (s.status.as_str(), s.host.as_str()),
            ("ACTIVE", "compute-2")
        );
        assert_eq!(w.migrations[0].status, "done");
    }

    #[tokio::test]
    async fn a_named_host_without_room_is_no_valid_host_and_the_scheduler_skips_full_hosts() {
        let mut w = World::new(&cfg());
        let full = Inventory {
            total: 1024,
            reserved: 1024,
            allocation_ratio: 1.0,
            max_unit: 1024,
        };
        let mut inv = w.inventory("compute-2");
        inv[1] = full;
        w.inventories.insert("compute-2".into(), inv);
        w.inventories.insert("ha-1".into(), inv);
        let id = w.servers[0].id;
        w.start_evacuation(id, Some("compute-2".into()), false, "u")
            .expect("evacuate");
        assert_eq!(w.server(&id).expect("server").status, "ERROR");
        assert_eq!(w.migrations[0].status, "error");
        // No host with room at all: the scheduler finds none either.
        let other = w.servers[1].id;
        w.start_evacuation(other, None, false, "u")
            .expect("evacuate");
        assert_eq!(w.server(&other).expect("server").status, "ERROR");
        assert_eq!(w.schedule("compute-1", [1, 512, 1]), None);
        w.inventories.remove("compute-2");
        assert_eq!(
            w.schedule("compute-1", [1, 512, 1]).as_deref(),
            Some("compute-2")
        );
    }

    #[test]
    fn seeding_is_deterministic() {
        let a = World::new(&cfg());
        let b = World::new(&cfg());
        let ids = |w: &World| w.servers.iter().map(|s| s.id).collect::<Vec<_>>();
        assert_eq!(ids(&a), ids(&b));
        assert_eq!(a.servers.len(), 6);
        let big = World::new(&SimConfig {
            hosts: 2,
            instances_per_host: 10,
            ..SimConfig::default()
        });
        assert_eq!(
            big.servers[9].metadata.get(OPT_OUT_KEY).map(String::as_str),
            Some("false")
        );
        assert_eq!(big.servers[8].metadata.get(OPT_OUT_KEY), None);
    }

    #[test]
    fn microversions_order_numerically() {
        assert!(
            Microversion::parse("2.53").expect("parse")
                > Microversion::parse("2.9").expect("parse")
        );
        assert_eq!(Microversion::parse("x"), None);
    }
}
