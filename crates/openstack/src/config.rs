//! Where the cloud and its credentials come from, the way operators already
//! keep them: a `clouds.yaml` entry (plus `secure.yaml`) chosen by `cloud` or
//! `OS_CLOUD`, the `OS_*` environment variables, or an inline `[openstack.auth]`
//! table in novaha's own TOML file.
//!
//! Loading is separated from the process environment ([`Env`]) so that it can
//! be tested without touching global state.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use novaha_core::Secret;
use serde::Deserialize;
use serde_yaml::Value;

use crate::error::OpenStackError;
use crate::microversion::Microversion;

/// The `[openstack]` section of novaha's config file. Every field is
/// optional: with none set, `OS_CLOUD` and then the `OS_*` variables are used.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenStackConfig {
    /// A `clouds.yaml` entry; else `OS_CLOUD`; else the `OS_*` variables.
    #[serde(default)]
    pub cloud: Option<String>,
    /// An explicit `clouds.yaml` path (else `OS_CLIENT_CONFIG_FILE`, then
    /// `./clouds.yaml`, `~/.config/openstack/`, `/etc/openstack/`).
    #[serde(default)]
    pub clouds_file: Option<PathBuf>,
    /// Inline credentials instead of a clouds.yaml entry (same keys as a
    /// clouds.yaml `auth:` block).
    #[serde(default)]
    pub auth: Option<AuthSection>,
    /// Region of the endpoints to use (overrides the cloud's `region_name`).
    #[serde(default)]
    pub region_name: Option<String>,
    /// Endpoint interface (overrides the cloud's `interface`; default public).
    #[serde(default)]
    pub interface: Option<Interface>,
    /// A PEM CA bundle to trust instead of the system roots.
    #[serde(default)]
    pub cacert: Option<PathBuf>,
    /// Skip TLS certificate verification (test clouds only; logged loudly).
    #[serde(default)]
    pub insecure: Option<bool>,
    /// Timeout of every HTTP call.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Retries of idempotent reads.
    #[serde(default)]
    pub retry: RetryConfig,
    /// The highest compute microversion to speak (a `"MAJOR.MINOR"`
    /// string). Unset: [`Microversion::WANTED`], which is also the ceiling.
    /// `"2.94"` keeps Nova's older evacuation, where a server lands in its
    /// prior state instead of SHUTOFF (2.95+), for clouds or tests that
    /// need it.
    #[serde(default)]
    pub max_microversion: Option<Microversion>,
}

impl Default for OpenStackConfig {
    fn default() -> Self {
        Self {
            cloud: None,
            clouds_file: None,
            auth: None,
            region_name: None,
            interface: None,
            cacert: None,
            insecure: None,
            timeout: default_timeout(),
            retry: RetryConfig::default(),
            max_microversion: None,
        }
    }
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

/// Exponential backoff with equal jitter and a cap, for idempotent reads only
/// (never for evacuate, force-down or start).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts in total, the first included (1 = no retry).
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    /// The first backoff.
    #[serde(default = "default_base", with = "humantime_serde")]
    pub base: Duration,
    /// The longest backoff.
    #[serde(default = "default_cap", with = "humantime_serde")]
    pub cap: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            attempts: default_attempts(),
            base: default_base(),
            cap: default_cap(),
        }
    }
}

fn default_attempts() -> u32 {
    4
}
fn default_base() -> Duration {
    Duration::from_millis(250)
}
fn default_cap() -> Duration {
    Duration::from_secs(5)
}

/// The keys of a clouds.yaml `auth:` block, also accepted inline as
/// `[openstack.auth]`. Either a user (name + domain, or id) with a password
/// and a project (name + domain, or id), or an application credential.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// Keystone URL, with or without the trailing `/v3`.
    #[serde(default)]
    pub auth_url: Option<String>,
    /// User name (needs a user domain).
    #[serde(default)]
    pub username: Option<String>,
    /// User id.
    #[serde(default)]
    pub user_id: Option<String>,
    /// Password.
    #[serde(default)]
    pub password: Option<Secret>,
    /// Project name (needs a project domain).
    #[serde(default)]
    pub project_name: Option<String>,
    /// Project id.
    #[serde(default)]
    pub project_id: Option<String>,
    /// The user's domain by name.
    #[serde(default)]
    pub user_domain_name: Option<String>,
    /// The user's domain by id.
    #[serde(default)]
    pub user_domain_id: Option<String>,
    /// The project's domain by name.
    #[serde(default)]
    pub project_domain_name: Option<String>,
    /// The project's domain by id.
    #[serde(default)]
    pub project_domain_id: Option<String>,
    /// Default for both domains by name.
    #[serde(default)]
    pub domain_name: Option<String>,
    /// Default for both domains by id.
    #[serde(default)]
    pub domain_id: Option<String>,
    /// Application credential id.
    #[serde(default)]
    pub application_credential_id: Option<String>,
    /// Application credential secret.
    #[serde(default)]
    pub application_credential_secret: Option<Secret>,
}

/// Which endpoint of a service to use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Interface {
    /// The public endpoint (the default, as for the OpenStack CLI).
    #[default]
    Public,
    /// The internal endpoint (what a controller-side daemon usually wants).
    Internal,
    /// The admin endpoint.
    Admin,
}

impl Interface {
    /// The catalog's spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Internal => "internal",
            Self::Admin => "admin",
        }
    }

    /// Parses `public`, `internal`, `admin` and the old `publicURL` forms.
    pub fn parse(s: &str) -> Result<Self, OpenStackError> {
        match s.trim().to_ascii_lowercase().trim_end_matches("url") {
            "public" => Ok(Self::Public),
            "internal" => Ok(Self::Internal),
            "admin" => Ok(Self::Admin),
            other => Err(OpenStackError::Config(format!(
                "interface {other:?} is not one of public, internal, admin"
            ))),
        }
    }
}

/// A domain, by id or by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DomainRef {
    /// By id (e.g. `default`).
    Id(String),
    /// By name (e.g. `Default`).
    Name(String),
}

/// A Keystone user, by id or by name within a domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserRef {
    /// By id.
    Id(String),
    /// By name within a domain.
    Name {
        /// The user name.
        name: String,
        /// Its domain.
        domain: DomainRef,
    },
}

/// A project to scope the token to, by id or by name within a domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProjectRef {
    /// By id.
    Id(String),
    /// By name within a domain.
    Name {
        /// The project name.
        name: String,
        /// Its domain.
        domain: DomainRef,
    },
}

/// How novaha proves who it is to Keystone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credentials {
    /// Password auth, scoped to a project.
    Password {
        /// The user.
        user: UserRef,
        /// Its password.
        password: Secret,
        /// The project scope.
        project: ProjectRef,
    },
    /// An application credential (its project scope is built in).
    ApplicationCredential {
        /// The credential id.
        id: String,
        /// Its secret.
        secret: Secret,
    },
}

/// Which certificates to trust.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsConfig {
    /// The operating system's roots.
    System,
    /// The roots in this PEM file (plus none of the system's).
    CaFile(PathBuf),
    /// No verification at all.
    Insecure,
}

/// A fully resolved cloud: everything needed to talk to Keystone and Nova.
#[derive(Clone, Debug)]
pub struct CloudConfig {
    /// Keystone v3 base URL, ending in `/v3`.
    pub auth_url: String,
    /// The credentials.
    pub credentials: Credentials,
    /// The region of the endpoints, if the cloud has several.
    pub region: Option<String>,
    /// The endpoint interface.
    pub interface: Interface,
    /// TLS trust.
    pub tls: TlsConfig,
    /// Timeout of every call.
    pub timeout: Duration,
    /// Retries of idempotent reads.
    pub retry: RetryConfig,
    /// Where this came from (`clouds.yaml entry x in FILE`, `OS_* environment`,
    /// `novaha config`), for `check-config` and logs.
    pub source: String,
}

/// A snapshot of the environment the loader reads: variables, the working
/// directory (for `./clouds.yaml`) and the home directory.
#[derive(Clone, Debug, Default)]
pub struct Env {
    vars: BTreeMap<String, String>,
    cwd: Option<PathBuf>,
}

impl Env {
    /// The process's own environment and working directory.
    pub fn from_process() -> Self {
        Self {
            vars: std::env::vars().collect(),
            cwd: std::env::current_dir().ok(),
        }
    }

    /// A given set of variables and working directory (for tests and tools).
    pub fn from_vars<K: Into<String>, V: Into<String>>(
        vars: impl IntoIterator<Item = (K, V)>,
        cwd: Option<PathBuf>,
    ) -> Self {
        Self {
            vars: vars
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            cwd,
        }
    }

    /// One variable; an empty value counts as unset.
    pub fn get(&self, key: &str) -> Option<String> {
        self.vars.get(key).filter(|v| !v.is_empty()).cloned()
    }

    fn search_dirs(&self) -> Vec<PathBuf> {
        let mut dirs = Vec::new();
        if let Some(cwd) = &self.cwd {
            dirs.push(cwd.clone());
        }
        if let Some(home) = self.get("HOME") {
            dirs.push(Path::new(&home).join(".config/openstack"));
        }
        dirs.push(PathBuf::from("/etc/openstack"));
        dirs
    }
}

impl OpenStackConfig {
    /// The microversion to ask Nova for: `max_microversion` when set and
    /// below novaha's own ceiling, else [`Microversion::WANTED`].
    pub fn wanted_microversion(&self) -> Microversion {
        self.max_microversion
            .map_or(Microversion::WANTED, |m| m.min(Microversion::WANTED))
    }

    /// Resolves this section against `env` into a usable cloud: inline
    /// `auth` first, else the clouds.yaml entry named by `cloud` or
    /// `OS_CLOUD`, else the `OS_*` variables. Every problem is a clear
    /// [`OpenStackError::Config`]; secrets never appear in it.
    pub fn resolve(&self, env: &Env) -> Result<CloudConfig, OpenStackError> {
        let (auth, mut opts, source) = if let Some(auth) = &self.auth {
            if self.cloud.is_some() {
                return Err(OpenStackError::Config(
                    "set either openstack.cloud or openstack.auth, not both".into(),
                ));
            }
            (
                auth.clone(),
                CloudOptions::default(),
                "novaha config [openstack.auth]".to_owned(),
            )
        } else if let Some(cloud) = self.cloud.clone().or_else(|| env.get("OS_CLOUD")) {
            load_cloud(&cloud, self.clouds_file.as_deref(), env)?
        } else {
            from_env(env)?
        };
        if let Some(r) = &self.region_name {
            opts.region = Some(r.clone());
        }
        if let Some(i) = self.interface {
            opts.interface = Some(i);
        }
        if let Some(c) = &self.cacert {
            opts.cacert = Some(c.clone());
        }
        if let Some(i) = self.insecure {
            opts.insecure = Some(i);
        }
        let tls = match (opts.insecure.unwrap_or(false), opts.cacert) {
            (true, _) => TlsConfig::Insecure,
            (false, Some(path)) => TlsConfig::CaFile(path),
            (false, None) => TlsConfig::System,
        };
        let auth_url = auth
            .auth_url
            .clone()
            .ok_or_else(|| OpenStackError::Config(format!("{source}: no auth_url")))?;
        Ok(CloudConfig {
            auth_url: normalize_auth_url(&auth_url)
                .map_err(|e| OpenStackError::Config(format!("{source}: {e}")))?,
            credentials: credentials(&auth)
                .map_err(|e| OpenStackError::Config(format!("{source}: {e}")))?,
            region: opts.region,
            interface: opts.interface.unwrap_or_default(),
            tls,
            timeout: self.timeout,
            retry: self.retry.clone(),
            source,
        })
    }
}

/// Options beside `auth` that a cloud entry or the environment may set.
#[derive(Default)]
struct CloudOptions {
    region: Option<String>,
    interface: Option<Interface>,
    cacert: Option<PathBuf>,
    insecure: Option<bool>,
}

/// `http://h/identity` and `http://h/identity/v3/` both become
/// `http://h/identity/v3`.
fn normalize_auth_url(raw: &str) -> Result<String, String> {
    let url = url::Url::parse(raw.trim()).map_err(|e| format!("auth_url {raw:?}: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("auth_url {raw:?}: scheme must be http or https"));
    }
    let s = url.as_str().trim_end_matches('/');
    if s.ends_with("/v3") {
        Ok(s.to_owned())
    } else if s.ends_with("/v2.0") {
        Err(format!(
            "auth_url {raw:?}: keystone v2.0 is not supported, use v3"
        ))
    } else {
        Ok(format!("{s}/v3"))
    }
}

fn domain(name: &Option<String>, id: &Option<String>, a: &AuthSection) -> Option<DomainRef> {
    match (id, name) {
        (Some(id), _) => Some(DomainRef::Id(id.clone())),
        (None, Some(n)) => Some(DomainRef::Name(n.clone())),
        (None, None) => match (&a.domain_id, &a.domain_name) {
            (Some(id), _) => Some(DomainRef::Id(id.clone())),
            (None, Some(n)) => Some(DomainRef::Name(n.clone())),
            (None, None) => None,
        },
    }
}

fn credentials(a: &AuthSection) -> Result<Credentials, String> {
    if let Some(id) = &a.application_credential_id {
        let secret = a
            .application_credential_secret
            .clone()
            .filter(|s| !s.is_empty())
            .ok_or("application_credential_id given without application_credential_secret")?;
        return Ok(Credentials::ApplicationCredential {
            id: id.clone(),
            secret,
        });
    }
    let user = match (&a.user_id, &a.username) {
        (Some(id), _) => UserRef::Id(id.clone()),
        (None, Some(name)) => UserRef::Name {
            name: name.clone(),
            domain: domain(&a.user_domain_name, &a.user_domain_id, a).ok_or_else(|| {
                format!("username {name:?} needs user_domain_name or user_domain_id")
            })?,
        },
        (None, None) => {
            return Err(
                "no credentials: need username or user_id with a password, or an \
                 application_credential_id"
                    .into(),
            );
        }
    };
    let password = a
        .password
        .clone()
        .filter(|p| !p.is_empty())
        .ok_or("password auth without a password")?;
    let project = match (&a.project_id, &a.project_name) {
        (Some(id), _) => ProjectRef::Id(id.clone()),
        (None, Some(name)) => ProjectRef::Name {
            name: name.clone(),
            domain: domain(&a.project_domain_name, &a.project_domain_id, a).ok_or_else(|| {
                format!("project_name {name:?} needs project_domain_name or project_domain_id")
            })?,
        },
        (None, None) => {
            return Err("password auth needs a project (project_name or project_id)".into());
        }
    };
    Ok(Credentials::Password {
        user,
        password,
        project,
    })
}

fn from_env(env: &Env) -> Result<(AuthSection, CloudOptions, String), OpenStackError> {
    if env.get("OS_AUTH_URL").is_none() {
        return Err(OpenStackError::Config(
            "no cloud configured: set openstack.cloud or OS_CLOUD (clouds.yaml), \
             [openstack.auth], or OS_AUTH_URL and the other OS_* variables"
                .into(),
        ));
    }
    let auth = AuthSection {
        auth_url: env.get("OS_AUTH_URL"),
        username: env.get("OS_USERNAME"),
        user_id: env.get("OS_USER_ID"),
        password: env.get("OS_PASSWORD").map(Secret::new),
        project_name: env
            .get("OS_PROJECT_NAME")
            .or_else(|| env.get("OS_TENANT_NAME")),
        project_id: env.get("OS_PROJECT_ID").or_else(|| env.get("OS_TENANT_ID")),
        user_domain_name: env.get("OS_USER_DOMAIN_NAME"),
        user_domain_id: env.get("OS_USER_DOMAIN_ID"),
        project_domain_name: env.get("OS_PROJECT_DOMAIN_NAME"),
        project_domain_id: env.get("OS_PROJECT_DOMAIN_ID"),
        domain_name: env.get("OS_DOMAIN_NAME"),
        domain_id: env.get("OS_DOMAIN_ID"),
        application_credential_id: env.get("OS_APPLICATION_CREDENTIAL_ID"),
        application_credential_secret: env.get("OS_APPLICATION_CREDENTIAL_SECRET").map(Secret::new),
    };
    let opts = CloudOptions {
        region: env.get("OS_REGION_NAME"),
        interface: env
            .get("OS_INTERFACE")
            .or_else(|| env.get("OS_ENDPOINT_TYPE"))
            .map(|s| Interface::parse(&s))
            .transpose()?,
        cacert: env.get("OS_CACERT").map(PathBuf::from),
        insecure: env.get("OS_INSECURE").map(|v| parse_bool(&v)).transpose()?,
    };
    Ok((auth, opts, "OS_* environment".to_owned()))
}

fn parse_bool(v: &str) -> Result<bool, OpenStackError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        other => Err(OpenStackError::Config(format!(
            "OS_INSECURE {other:?} is not a boolean"
        ))),
    }
}

/// The first existing file of `names` in the standard search directories,
/// after `explicit` (which must exist when given).
fn find_file(
    explicit: Option<PathBuf>,
    names: &[&str],
    env: &Env,
    searched: &mut Vec<String>,
) -> Result<Option<PathBuf>, OpenStackError> {
    if let Some(p) = explicit {
        searched.push(p.display().to_string());
        if p.is_file() {
            return Ok(Some(p));
        }
        return Err(OpenStackError::ConfigFile {
            path: p.display().to_string(),
            detail: "no such file".into(),
        });
    }
    for dir in env.search_dirs() {
        for name in names {
            let p = dir.join(name);
            searched.push(p.display().to_string());
            if p.is_file() {
                return Ok(Some(p));
            }
        }
    }
    Ok(None)
}

fn read_yaml(path: &Path) -> Result<Value, OpenStackError> {
    let text = std::fs::read_to_string(path).map_err(|e| OpenStackError::ConfigFile {
        path: path.display().to_string(),
        detail: format!("unreadable: {e}"),
    })?;
    // serde_yaml's messages quote positions, not values, so no secret leaks.
    serde_yaml::from_str(&text).map_err(|e| OpenStackError::ConfigFile {
        path: path.display().to_string(),
        detail: format!("not valid yaml: {e}"),
    })
}

fn cloud_entry(doc: &Value, cloud: &str) -> Option<Value> {
    doc.get("clouds")?.get(cloud).cloned()
}

/// Merges `over` into `base`, recursing into maps (secure.yaml's rule).
fn deep_merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Mapping(b), Value::Mapping(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) => deep_merge(existing, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

fn yaml_str(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn load_cloud(
    cloud: &str,
    explicit: Option<&Path>,
    env: &Env,
) -> Result<(AuthSection, CloudOptions, String), OpenStackError> {
    let mut searched = Vec::new();
    let explicit = explicit
        .map(Path::to_path_buf)
        .or_else(|| env.get("OS_CLIENT_CONFIG_FILE").map(PathBuf::from));
    let Some(path) = find_file(explicit, &["clouds.yaml", "clouds.yml"], env, &mut searched)?
    else {
        return Err(OpenStackError::CloudNotFound {
            cloud: cloud.to_owned(),
            searched: searched.join(", "),
        });
    };
    let doc = read_yaml(&path)?;
    let mut entry = cloud_entry(&doc, cloud).ok_or_else(|| OpenStackError::CloudNotFound {
        cloud: cloud.to_owned(),
        searched: path.display().to_string(),
    })?;
    let mut secure_searched = Vec::new();
    let secure_explicit = env.get("OS_CLIENT_SECURE_FILE").map(PathBuf::from);
    if let Some(secure) = find_file(
        secure_explicit,
        &["secure.yaml", "secure.yml"],
        env,
        &mut secure_searched,
    )? {
        if let Some(over) = cloud_entry(&read_yaml(&secure)?, cloud) {
            deep_merge(&mut entry, over);
        }
    }
    let source = format!("clouds.yaml entry {cloud:?} in {}", path.display());
    let bad = |detail: String| OpenStackError::ConfigFile {
        path: path.display().to_string(),
        detail,
    };
    if !entry.is_mapping() {
        return Err(bad(format!("cloud {cloud:?} is not a mapping")));
    }
    if let Some(t) = entry.get("auth_type").and_then(yaml_str) {
        let known = [
            "password",
            "v3password",
            "v3applicationcredential",
            "applicationcredential",
            "v3_application_credential",
        ];
        if !known.contains(&t.as_str()) {
            return Err(bad(format!(
                "cloud {cloud:?}: auth_type {t:?} is not supported (password or \
                 v3applicationcredential)"
            )));
        }
    }
    let auth_map = entry.get("auth").cloned().unwrap_or(Value::Null);
    let field = |k: &str| auth_map.get(k).and_then(yaml_str);
    let auth = AuthSection {
        auth_url: field("auth_url"),
        username: field("username"),
        user_id: field("user_id"),
        password: field("password").map(Secret::new),
        project_name: field("project_name").or_else(|| field("tenant_name")),
        project_id: field("project_id").or_else(|| field("tenant_id")),
        user_domain_name: field("user_domain_name"),
        user_domain_id: field("user_domain_id"),
        project_domain_name: field("project_domain_name"),
        project_domain_id: field("project_domain_id"),
        domain_name: field("domain_name"),
        domain_id: field("domain_id"),
        application_credential_id: field("application_credential_id"),
        application_credential_secret: field("application_credential_secret").map(Secret::new),
    };
    let top = |k: &str| entry.get(k).and_then(yaml_str);
    let insecure = match entry.get("verify") {
        Some(Value::Bool(v)) => Some(!v),
        Some(Value::Null) | None => top("insecure")
            .map(|v| parse_bool(&v))
            .transpose()
            .map_err(|e| bad(format!("cloud {cloud:?}: insecure: {e}")))?,
        Some(_) => {
            return Err(bad(format!(
                "cloud {cloud:?}: verify must be true or false"
            )));
        }
    };
    let opts = CloudOptions {
        region: top("region_name"),
        interface: top("interface")
            .or_else(|| top("endpoint_type"))
            .map(|s| Interface::parse(&s))
            .transpose()
            .map_err(|e| bad(format!("cloud {cloud:?}: {e}")))?,
        cacert: top("cacert").map(PathBuf::from),
        insecure,
    };
    Ok((auth, opts, source))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_microversion_caps_the_wanted_version() {
        let cfg: OpenStackConfig = toml::from_str("max_microversion = \"2.94\"").unwrap();
        assert_eq!(cfg.max_microversion, Some(Microversion(2, 94)));
        assert_eq!(cfg.wanted_microversion(), Microversion(2, 94));
        let cfg: OpenStackConfig = toml::from_str("max_microversion = \"2.200\"").unwrap();
        assert_eq!(
            cfg.wanted_microversion(),
            Microversion::WANTED,
            "never above ours"
        );
        assert_eq!(
            OpenStackConfig::default().wanted_microversion(),
            Microversion::WANTED
        );
        let e = toml::from_str::<OpenStackConfig>("max_microversion = \"latest\"").unwrap_err();
        assert!(e.to_string().contains("max_microversion"), "{e}");
    }

    #[test]
    fn auth_url_is_normalized() {
        assert_eq!(
            normalize_auth_url("http://h:5000/identity").unwrap(),
            "http://h:5000/identity/v3"
        );
        assert_eq!(normalize_auth_url("https://h/v3/").unwrap(), "https://h/v3");
        assert!(normalize_auth_url("h:5000").is_err());
        assert!(normalize_auth_url("http://h/v2.0").is_err());
    }

    #[test]
    fn interface_parses_old_forms() {
        assert_eq!(
            Interface::parse("internalURL").unwrap(),
            Interface::Internal
        );
        assert_eq!(Interface::parse("public").unwrap(), Interface::Public);
        assert!(Interface::parse("private").is_err());
    }

    #[test]
    fn toml_section_denies_unknown_keys() {
        let ok: OpenStackConfig = toml::from_str(
            "cloud = \"x\"\ninterface = \"internal\"\ntimeout = \"5s\"\n[retry]\nattempts = 2\n",
        )
        .unwrap();
        assert_eq!(ok.timeout, Duration::from_secs(5));
        assert_eq!(ok.retry.attempts, 2);
        assert_eq!(ok.interface, Some(Interface::Internal));
        let err = toml::from_str::<OpenStackConfig>("clod = \"x\"\n").unwrap_err();
        assert!(err.to_string().contains("clod"), "{err}");
        let err = toml::from_str::<OpenStackConfig>("[auth]\npasswd = \"x\"\n").unwrap_err();
        assert!(err.to_string().contains("passwd"), "{err}");
    }

    #[test]
    fn inline_auth_resolves_and_hides_password() {
        let cfg: OpenStackConfig = toml::from_str(
            "[auth]\nauth_url = \"http://k/identity\"\nusername = \"novaha\"\n\
             password = \"s3cr3t-pw\"\nproject_name = \"admin\"\ndomain_name = \"Default\"\n",
        )
        .unwrap();
        let c = cfg.resolve(&Env::default()).unwrap();
        assert_eq!(c.auth_url, "http://k/identity/v3");
        assert_eq!(
            c.credentials,
            Credentials::Password {
                user: UserRef::Name {
                    name: "novaha".into(),
                    domain: DomainRef::Name("Default".into())
                },
                password: Secret::new("s3cr3t-pw"),
                project: ProjectRef::Name {
                    name: "admin".into(),
                    domain: DomainRef::Name("Default".into())
                },
            }
        );
        assert!(!format!("{cfg:?}{c:?}").contains("s3cr3t-pw"));
    }

    #[test]
    fn missing_pieces_are_named() {
        let mk = |t: &str| toml::from_str::<OpenStackConfig>(t).unwrap();
        let e = mk("[auth]\nauth_url = \"http://k/v3\"\nusername = \"u\"\npassword = \"p\"\n")
            .resolve(&Env::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("user_domain_name"), "{e}");
        let e = mk("[auth]\nauth_url = \"http://k/v3\"\napplication_credential_id = \"a\"\n")
            .resolve(&Env::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("application_credential_secret"), "{e}");
        let e = OpenStackConfig::default()
            .resolve(&Env::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("OS_CLOUD"), "{e}");
        let e = mk("cloud = \"c\"\n[auth]\nauth_url = \"http://k/v3\"\n")
            .resolve(&Env::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("not both"), "{e}");
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    const CLOUD: &str = "clouds:\n  c:\n    auth:\n      auth_url: https://k.example:5000\n      \
        username: nova\n      user_domain_id: default\n      project_id: p1\n    \
        verify: false\n    region_name: R2\n    interface: internal\n    \
        cacert: /etc/ca.pem\n";

    #[test]
    fn clouds_yaml_search_path_and_secure_merge() {
        let home = tempfile::tempdir().unwrap();
        let cwd = tempfile::tempdir().unwrap();
        write(home.path(), ".config/openstack/clouds.yaml", CLOUD);
        write(
            home.path(),
            ".config/openstack/secure.yaml",
            "clouds:\n  c:\n    auth:\n      password: from-secure-yaml\n",
        );
        let env = Env::from_vars(
            [("HOME", home.path().to_str().unwrap()), ("OS_CLOUD", "c")],
            Some(cwd.path().to_path_buf()),
        );
        let c = OpenStackConfig::default().resolve(&env).unwrap();
        assert_eq!(c.auth_url, "https://k.example:5000/v3");
        assert_eq!(c.region.as_deref(), Some("R2"));
        assert_eq!(c.interface, Interface::Internal);
        assert_eq!(c.tls, TlsConfig::Insecure, "verify: false wins over cacert");
        match &c.credentials {
            Credentials::Password {
                user,
                password,
                project,
            } => {
                assert_eq!(
                    user,
                    &UserRef::Name {
                        name: "nova".into(),
                        domain: DomainRef::Id("default".into())
                    }
                );
                assert_eq!(password.expose(), "from-secure-yaml");
                assert_eq!(project, &ProjectRef::Id("p1".into()));
            }
            other => panic!("{other:?}"),
        }
        assert!(!format!("{c:?}").contains("from-secure-yaml"));

        // ./clouds.yaml comes before ~/.config/openstack.
        write(
            cwd.path(),
            "clouds.yaml",
            "clouds:\n  c:\n    auth: {auth_url: http://local/v3, \
            application_credential_id: a, application_credential_secret: s}\n",
        );
        let c = OpenStackConfig::default().resolve(&env).unwrap();
        assert_eq!(c.auth_url, "http://local/v3");
        assert!(
            c.source.contains(cwd.path().to_str().unwrap()),
            "{}",
            c.source
        );

        // OS_CLIENT_CONFIG_FILE before both; novaha's own keys override the entry.
        let explicit = write(home.path(), "x/other.yaml", CLOUD);
        let env = Env::from_vars(
            [
                ("HOME", home.path().to_str().unwrap()),
                ("OS_CLOUD", "c"),
                ("OS_CLIENT_CONFIG_FILE", explicit.to_str().unwrap()),
            ],
            Some(cwd.path().to_path_buf()),
        );
        let cfg = OpenStackConfig {
            region_name: Some("R9".into()),
            insecure: Some(false),
            interface: Some(Interface::Admin),
            ..OpenStackConfig::default()
        };
        let c = cfg.resolve(&env).unwrap();
        assert!(c.source.contains("other.yaml"), "{}", c.source);
        assert_eq!(c.region.as_deref(), Some("R9"));
        assert_eq!(c.interface, Interface::Admin);
        assert_eq!(c.tls, TlsConfig::CaFile("/etc/ca.pem".into()));
    }

    #[test]
    fn bad_clouds_yaml_is_named_and_unsupported_auth_type_refused() {
        let dir = tempfile::tempdir().unwrap();
        let env = Env::from_vars([("OS_CLOUD", "c")], Some(dir.path().to_path_buf()));
        let err = OpenStackConfig::default()
            .resolve(&env)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("not found") && err.contains("clouds.yaml"),
            "{err}"
        );
        write(dir.path(), "clouds.yaml", "clouds: [unterminated\n");
        let err = OpenStackConfig::default()
            .resolve(&env)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("not valid yaml") && err.contains("clouds.yaml"),
            "{err}"
        );
        write(
            dir.path(),
            "clouds.yaml",
            "clouds:\n  c:\n    auth_type: token\n    auth: {auth_url: http://k/v3, token: tok-Secret-1}\n",
        );
        let err = OpenStackConfig::default()
            .resolve(&env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("auth_type \"token\""), "{err}");
        assert!(!err.contains("tok-Secret-1"), "{err}");
    }

    #[test]
    fn os_environment_resolves() {
        let env = Env::from_vars(
            [
                ("OS_AUTH_URL", "https://k:5000/v3"),
                ("OS_APPLICATION_CREDENTIAL_ID", "ac1"),
                ("OS_APPLICATION_CREDENTIAL_SECRET", "ac-secret-9"),
                ("OS_INTERFACE", "internalURL"),
                ("OS_CACERT", "/etc/ca.pem"),
                ("OS_REGION_NAME", ""),
            ],
            None,
        );
        let c = OpenStackConfig::default().resolve(&env).unwrap();
        assert_eq!(c.source, "OS_* environment");
        assert_eq!(c.interface, Interface::Internal);
        assert_eq!(c.region, None, "an empty variable counts as unset");
        assert_eq!(c.tls, TlsConfig::CaFile("/etc/ca.pem".into()));
        assert_eq!(
            c.credentials,
            Credentials::ApplicationCredential {
                id: "ac1".into(),
                secret: Secret::new("ac-secret-9")
            }
        );
        assert!(!format!("{c:?}").contains("ac-secret-9"));
        let env = Env::from_vars(
            [("OS_AUTH_URL", "https://k/v3"), ("OS_INSECURE", "maybe")],
            None,
        );
        let err = OpenStackConfig::default()
            .resolve(&env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("OS_INSECURE"), "{err}");
        let env = Env::from_vars(
            [
                ("OS_AUTH_URL", "https://k/v3"),
                ("OS_USERNAME", "u"),
                ("OS_PASSWORD", "pw-Secret-7"),
                ("OS_INSECURE", "true"),
            ],
            None,
        );
        let err = OpenStackConfig::default()
            .resolve(&env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("user_domain"), "{err}");
        assert!(!err.contains("pw-Secret-7"), "{err}");
    }

    #[test]
    fn deep_merge_overrides_leaves() {
        let mut a: Value =
            serde_yaml::from_str("auth: {username: u, auth_url: x}\nregion_name: r").unwrap();
        let b: Value = serde_yaml::from_str("auth: {password: p}").unwrap();
        deep_merge(&mut a, b);
        assert_eq!(a["auth"]["password"].as_str(), Some("p"));
        assert_eq!(a["auth"]["username"].as_str(), Some("u"));
        assert_eq!(a["region_name"].as_str(), Some("r"));
    }
}
