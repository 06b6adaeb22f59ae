//! The daemon's configuration: one TOML file (docs/configuration.md), with
//! `NOVAHA_<SECTION>__<KEY>` environment overrides and the ecosystem's own
//! variables (`CONSUL_HTTP_ADDR`, `CONSUL_HTTP_TOKEN`, `OS_CLOUD`).
//!
//! Every section is its own struct in its own module, so a later stage adds
//! its keys in one place. Every struct rejects unknown keys, naming them.
//! Loading never stops at the first problem: each section is deserialized on
//! its own and then validated, and [`ConfigError`] carries every problem
//! found, so `novaha check-config` can print them all.

pub mod evacuate;
pub mod fence;
pub mod http;
pub mod log;
pub mod monitor;
pub mod notify;
pub mod openstack;
pub mod recovery;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use novaha_core::validate::Validate;
use serde::de::DeserializeOwned;

pub use self::evacuate::{EvacuateConfig, EvacuateTarget};
pub use self::fence::FenceConfig;
pub use self::http::HttpConfig;
pub use self::log::{LogConfig, LogFormat};
pub use self::monitor::MonitorConfig;
pub use self::notify::NotifyConfig;
pub use self::openstack::OpenStackConfig;
pub use self::recovery::{Mode, RecoveryConfig};
pub use novaha_consul::ConsulConfig;
pub use novaha_consul::config::ElectionConfig;
/// One thing wrong with the configuration: where (`election.session_ttl`,
/// the file), and what.
pub use novaha_core::validate::Problem;

/// The prefix of environment overrides: `NOVAHA_MONITOR__INTERVAL=5s`
/// overrides `[monitor] interval`. The double underscore separates the
/// section from the key (keys themselves contain single underscores).
pub const ENV_PREFIX: &str = "NOVAHA_";

/// The whole, validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where it was read from (for messages).
    pub path: PathBuf,
    /// `[consul]`.
    pub consul: ConsulConfig,
    /// `[election]`.
    pub election: ElectionConfig,
    /// `[openstack]`.
    pub openstack: OpenStackConfig,
    /// `[monitor]`.
    pub monitor: MonitorConfig,
    /// `[fence]` (the fence stage's settings).
    pub fence: FenceConfig,
    /// `[evacuate]`.
    pub evacuate: EvacuateConfig,
    /// `[[notify]]`, in file order.
    pub notify: Vec<NotifyConfig>,
    /// `[http]`.
    pub http: HttpConfig,
    /// `[log]`.
    pub log: LogConfig,
    /// `[recovery]` (the runner's mode, reset and retry policy).
    pub recovery: RecoveryConfig,
}

/// Why the configuration could not be used: every problem found.
#[derive(Debug, thiserror::Error)]
#[error("config {path}: {} problem(s): {}", problems.len(), join(problems))]
pub struct ConfigError {
    /// The file.
    pub path: String,
    /// Every problem, in section order.
    pub problems: Vec<Problem>,
}

impl ConfigError {
    /// Never: a broken file stays broken until an operator edits it.
    pub fn is_retryable(&self) -> bool {
        false
    }
}

fn join(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Collects problems while the sections are validated.
#[derive(Debug, Default)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    /// Records a problem at `at`.
    pub fn push(&mut self, at: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem::new(at, message));
    }

    /// Records a section's problems, each under the section's name.
    pub fn extend_under(&mut self, name: &str, problems: Vec<Problem>) {
        self.0.extend(problems.into_iter().map(|p| p.under(name)));
    }
}

impl Config {
    /// Reads `path`, applies the `NOVAHA_...` overrides from the process
    /// environment and the ecosystem's variables, and validates everything.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let env: HashMap<String, String> = std::env::vars().collect();
        Self::load_with_env(path, &env)
    }

    /// [`Config::load`] with an explicit environment (for tests).
    pub fn load_with_env(path: &Path, env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let fail = |problems| ConfigError {
            path: path.display().to_string(),
            problems,
        };
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                return Err(fail(vec![Problem::new(
                    path.display().to_string(),
                    format!("cannot read config file: {e}"),
                )]));
            }
        };
        Self::from_toml_str(path, &text, env).map_err(fail)
    }

    /// Parses and validates TOML text; `path` is only used for messages.
    pub fn from_toml_str(
        path: &Path,
        text: &str,
        env: &HashMap<String, String>,
    ) -> Result<Self, Vec<Problem>> {
        let file = path.display().to_string();
        let overrides: HashMap<String, String> = env
            .iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX) && k[ENV_PREFIX.len()..].contains("__"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let built = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .add_source(
                config::Environment::with_prefix("NOVAHA")
                    .prefix_separator("_")
                    .separator("__")
                    .try_parsing(true)
                    .source(Some(overrides)),
            )
            .build();
        let merged = match built {
            Ok(c) => c,
            Err(e) => return Err(vec![Problem::new(file, format!("cannot parse: {e}"))]),
        };
        // The one list of sections: each is read (its defaults when absent)
        // and checked on its own, so one bad section hides no other's
        // problems; the names read are the only top-level keys allowed.
        let mut s = Sections {
            merged: &merged,
            names: Vec::new(),
            problems: Problems::default(),
        };
        let config = Self {
            path: path.to_path_buf(),
            consul: s.read_with(
                "consul",
                |c: ConsulConfig, p| c.resolve(env, &mut p.0),
                |c| c.validate(),
            ),
            election: s.read("election"),
            // Credentials are resolved when the daemon connects, not here.
            openstack: s.read_with("openstack", |c, _| c, |_| Vec::new()),
            monitor: s.read("monitor"),
            fence: s.read("fence"),
            evacuate: s.read("evacuate"),
            notify: s.read_with(
                "notify",
                |n, _| n,
                |n: &Vec<NotifyConfig>| {
                    let mut problems = n.validate();
                    problems.extend(notify::unique_names(n));
                    problems
                },
            ),
            // The listen address parses or the section does not.
            http: s.read_with("http", |c, _| c, |_| Vec::new()),
            log: s.read("log"),
            recovery: s.read("recovery"),
        };
        let mut problems = s.unknown_keys();
        problems.extend(s.problems.0);
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(problems)
        }
    }
}

/// Reads the sections of a merged config one by one, collecting every
/// problem and the names read.
struct Sections<'a> {
    merged: &'a config::Config,
    names: Vec<&'static str>,
    problems: Problems,
}

impl Sections<'_> {
    /// Reads and validates section `name`.
    fn read<T: DeserializeOwned + Default + Validate>(&mut self, name: &'static str) -> T {
        self.read_with(name, |t, _| t, T::validate)
    }

    /// Reads section `name` (its defaults when absent), passes it through
    /// `resolve` (environment variables) and records `check`'s problems
    /// under `name`. A section that does not deserialize records why and
    /// comes back as its defaults, unchecked: the config is refused anyway.
    fn read_with<T: DeserializeOwned + Default>(
        &mut self,
        name: &'static str,
        resolve: impl FnOnce(T, &mut Problems) -> T,
        check: impl FnOnce(&T) -> Vec<Problem>,
    ) -> T {
        self.names.push(name);
        let Some(value) = section::<T>(self.merged, name, &mut self.problems) else {
            return T::default();
        };
        let value = resolve(value, &mut self.problems);
        self.problems.extend_under(name, check(&value));
        value
    }

    /// A problem per top-level key that is no section read, sorted.
    fn unknown_keys(&self) -> Vec<Problem> {
        let Ok(table) = self
            .merged
            .clone()
            .try_deserialize::<HashMap<String, config::Value>>()
        else {
            return Vec::new();
        };
        let mut unknown: Vec<_> = table
            .keys()
            .filter(|k| !self.names.contains(&k.as_str()))
            .cloned()
            .collect();
        unknown.sort();
        unknown
            .into_iter()
            .map(|key| {
                Problem::new(
                    key.clone(),
                    format!(
                        "unknown section or key `{key}` (expected one of: {})",
                        self.names.join(", ")
                    ),
                )
            })
            .collect()
    }
}

/// Deserializes one section (its defaults when absent), recording a problem
/// that names the offending key instead of stopping when it does not fit.
fn section<T: DeserializeOwned + Default>(
    merged: &config::Config,
    name: &str,
    problems: &mut Problems,
) -> Option<T> {
    let value = match merged.get::<serde_json::Value>(name) {
        Ok(v) => v,
        Err(config::ConfigError::NotFound(_)) => return Some(T::default()),
        Err(e) => {
            problems.push(name, e.to_string());
            return None;
        }
    };
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(v) => Some(v),
        Err(e) => {
            let path = e.path().to_string();
            let at = match path.as_str() {
                "" | "." => name.to_owned(),
                p if p.starts_with('[') => format!("{name}{p}"),
                p => format!("{name}.{p}"),
            };
            problems.push(at, e.into_inner().to_string());
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, Vec<Problem>> {
        Config::from_toml_str(Path::new("t.toml"), text, &HashMap::new())
    }

    #[test]
    fn empty_file_gives_every_default() {
        let c = parse("").expect("defaults are valid");
        assert_eq!(c.consul.address, "http://127.0.0.1:8500");
        assert_eq!(c.consul.prefix, "ha_cluster");
        assert_eq!(c.election.session_ttl.as_secs(), 15);
        assert_eq!(c.election.lock_delay.as_secs(), 15);
        assert_eq!(c.election.check_ttl.as_secs(), 3);
        assert_eq!(c.monitor.interval.as_secs(), 10);
        assert_eq!(c.monitor.threshold, 3);
        assert_eq!(c.evacuate.concurrency, 8);
        assert_eq!(c.evacuate.target, EvacuateTarget::HaNode);
        assert_eq!(c.http.listen.to_string(), "127.0.0.1:9450");
        assert_eq!(c.log.format, LogFormat::Text);
        assert_eq!(c.fence, FenceConfig::default());
        assert!(c.notify.is_empty());
    }

    #[test]
    fn every_problem_is_reported_not_just_the_first() {
        let err = parse(
            "bogus = 1\n[consul]\nadress = \"x\"\n[election]\nsession_ttl = \"five\"\n\
             [monitor]\nmax_failed_fraction = 1.5\n[fence]\ndriver = \"noop\"\n",
        )
        .expect_err("four problems");
        let text = err
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n");
        eprintln!("{text}");
        assert!(text.contains("bogus"), "{text}");
        assert!(text.contains("adress"), "{text}");
        assert!(text.contains("five"), "{text}");
        assert!(text.contains("max_failed_fraction"), "{text}");
        assert!(text.contains("allow_noop"), "{text}");
        assert_eq!(err.len(), 5, "{text}");
    }

    #[test]
    fn env_overrides_win_and_ecosystem_variables_fill_gaps() {
        let env: HashMap<String, String> = [
            ("NOVAHA_MONITOR__INTERVAL", "2s"),
            ("NOVAHA_MONITOR__THRESHOLD", "7"),
            ("NOVAHA_CACHE", "/somewhere"),
            ("CONSUL_HTTP_ADDR", "127.0.0.1:1234"),
            ("CONSUL_HTTP_TOKEN", "tok"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let c = Config::from_toml_str(Path::new("t"), "[monitor]\ninterval = \"9s\"\n", &env)
            .expect("valid");
        assert_eq!(c.monitor.interval.as_secs(), 2);
        assert_eq!(c.monitor.threshold, 7);
        assert_eq!(c.consul.address, "http://127.0.0.1:1234");
        assert_eq!(c.consul.token.as_ref().map(|t| t.expose()), Some("tok"));
        let c = Config::from_toml_str(
            Path::new("t"),
            "[consul]\naddress = \"http://10.0.0.1:8500\"\n",
            &env,
        )
        .expect("valid");
        assert_eq!(c.consul.address, "http://10.0.0.1:8500");
    }

    #[test]
    fn stale_after_is_unset_by_default_and_must_outlast_the_interval() {
        assert_eq!(parse("").expect("defaults").monitor.nova.stale_after, None);
        let c = parse("[monitor]\ninterval = \"2s\"\n[monitor.nova]\nstale_after = \"15s\"\n")
            .expect("valid");
        assert_eq!(
            c.monitor.signals().nova.stale_after,
            Some(std::time::Duration::from_secs(15))
        );
        let err = parse("[monitor.nova]\nstale_after = \"10s\"\n").expect_err("not above 10s");
        let text = err
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n");
        assert!(text.contains("monitor.nova.stale_after"), "{text}");
        assert!(
            text.contains("longer than monitor.interval (10s)"),
            "{text}"
        );
        let err = parse("[monitor]\ninterval = \"1s\"\n[monitor.nova]\nstale_after = \"3s\"\n")
            .expect_err("below the floor");
        assert!(err[0].to_string().contains("at least 5s"), "{err:?}");
        assert!(parse("[monitor.nova]\nstale = \"15s\"\n").is_err());
    }

    #[test]
    fn every_consul_variable_fills_its_key_and_the_file_wins() {
        let dir = tempfile::tempdir().expect("tmp");
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, "from-file\n").expect("write");
        let env: HashMap<String, String> = [
            ("CONSUL_HTTP_ADDR", "127.0.0.1:8501"),
            ("CONSUL_HTTP_SSL", "true"),
            ("CONSUL_HTTP_TOKEN", "from-env"),
            (
                "CONSUL_HTTP_TOKEN_FILE",
                token_file.to_str().expect("utf-8"),
            ),
            ("CONSUL_CACERT", "/etc/consul/ca.pem"),
            ("CONSUL_CAPATH", "/etc/consul/ca.d"),
            ("CONSUL_CLIENT_CERT", "/etc/consul/client.pem"),
            ("CONSUL_CLIENT_KEY", "/etc/consul/client-key.pem"),
            ("CONSUL_TLS_SERVER_NAME", "server.dc1.consul"),
            ("CONSUL_HTTP_SSL_VERIFY", "false"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let mut problems = Problems::default();
        let c = ConsulConfig::default().resolve(&env, &mut problems.0);
        assert!(problems.0.is_empty(), "{:?}", problems.0);
        assert_eq!(c.address, "https://127.0.0.1:8501");
        // The token file wins over the token variable, as for `consul`.
        assert_eq!(c.token.as_ref().map(|t| t.expose()), Some("from-file"));
        let tls = c.tls();
        assert_eq!(
            tls.ca_file.as_deref(),
            Some(Path::new("/etc/consul/ca.pem"))
        );
        assert_eq!(tls.ca_path.as_deref(), Some(Path::new("/etc/consul/ca.d")));
        assert_eq!(
            tls.client_cert.as_deref(),
            Some(Path::new("/etc/consul/client.pem"))
        );
        assert_eq!(
            tls.client_key.as_deref(),
            Some(Path::new("/etc/consul/client-key.pem"))
        );
        assert_eq!(tls.server_name.as_deref(), Some("server.dc1.consul"));
        assert!(tls.insecure);
        // CONSUL_HTTP_SSL upgrades an http:// address from the environment.
        let mut env2 = env.clone();
        env2.insert("CONSUL_HTTP_ADDR".into(), "http://10.0.0.2:8501".into());
        let c = ConsulConfig::default().resolve(&env2, &mut problems.0);
        assert_eq!(c.address, "https://10.0.0.2:8501");
        // Keys in the file win over every variable.
        let file: ConsulConfig = toml::from_str(
            "address = \"http://10.0.0.1:8500\"\ntoken = \"in-file\"\nca_file = \"/mine.pem\"\n\
             tls_server_name = \"mine\"\ntls_skip_verify = false\n",
        )
        .expect("valid");
        let c = file.resolve(&env, &mut problems.0);
        assert_eq!(c.address, "http://10.0.0.1:8500");
        assert_eq!(c.token.as_ref().map(|t| t.expose()), Some("in-file"));
        let tls = c.tls();
        assert_eq!(tls.ca_file.as_deref(), Some(Path::new("/mine.pem")));
        assert_eq!(tls.server_name.as_deref(), Some("mine"));
        assert!(!tls.insecure);
        assert!(problems.0.is_empty(), "{:?}", problems.0);
        // Nonsense booleans are problems, not guesses.
        let bad: HashMap<String, String> = [("CONSUL_HTTP_SSL", "yes please")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        ConsulConfig::default().resolve(&bad, &mut problems.0);
        assert_eq!(problems.0.len(), 1, "{:?}", problems.0);
        assert!(problems.0[0].message.contains("CONSUL_HTTP_SSL"));
    }

    #[test]
    fn tls_settings_with_an_http_address_or_a_missing_file_are_problems() {
        let err = parse("[consul]\naddress = \"http://127.0.0.1:8500\"\ntls_server_name = \"x\"\n")
            .expect_err("TLS over http");
        assert!(
            err.iter()
                .any(|p| p.at == "consul.address" && p.message.contains("not https://")),
            "{err:?}"
        );
        let err = parse(
            "[consul]\naddress = \"https://127.0.0.1:8501\"\nca_file = \"/nonexistent/ca.pem\"\n",
        )
        .expect_err("missing CA");
        assert!(
            err.iter()
                .any(|p| p.message.contains("/nonexistent/ca.pem")),
            "{err:?}"
        );
    }

    #[test]
    fn tagged_driver_sections_parse() {
        let c = parse(
            "[fence]\ndriver = \"noop\"\nallow_noop = true\n\
             [[notify]]\ndriver = \"email\"\nsmtp_url = \"smtp://127.0.0.1:25\"\n\
             from = \"novaha@example.org\"\nadmins = [\"ops@example.org\"]\n\
             [[notify]]\ndriver = \"log\"\n",
        )
        .expect("valid");
        assert!(c.fence.allow_noop);
        assert_eq!(c.notify.len(), 2);
        let err = parse("[fence]\ndriver = \"telepathy\"\n").expect_err("unknown driver");
        assert!(err[0].to_string().contains("telepathy"), "{err:?}");
    }

    #[test]
    fn example_file_parses_and_matches_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/novaha.example.toml");
        let text = std::fs::read_to_string(&path).expect("read the example");
        let c = Config::from_toml_str(&path, &text, &HashMap::new()).expect("example is valid");
        let d = parse("").expect("defaults");
        assert_eq!(c.consul.address, d.consul.address);
        // The address stays commented out, so CONSUL_HTTP_ADDR works with
        // the shipped file; likewise every TLS key and their variables.
        let env: HashMap<String, String> = [
            ("CONSUL_HTTP_ADDR", "10.9.8.7:8501"),
            ("CONSUL_HTTP_SSL", "true"),
            ("CONSUL_TLS_SERVER_NAME", "server.dc1.consul"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let from_env = Config::from_toml_str(&path, &text, &env).expect("example is valid");
        assert_eq!(from_env.consul.address, "https://10.9.8.7:8501");
        assert_eq!(
            from_env.consul.tls().server_name.as_deref(),
            Some("server.dc1.consul")
        );
        assert_eq!(c.consul.tls(), d.consul.tls());
        assert_eq!(c.consul.prefix, d.consul.prefix);
        assert_eq!(c.election.session_ttl, d.election.session_ttl);
        assert_eq!(c.election.lock_delay, d.election.lock_delay);
        assert_eq!(c.election.check_ttl, d.election.check_ttl);
        assert_eq!(c.monitor.interval, d.monitor.interval);
        assert_eq!(c.monitor.threshold, d.monitor.threshold);
        assert_eq!(c.evacuate.concurrency, d.evacuate.concurrency);
        assert_eq!(c.http.listen, d.http.listen);
        assert_eq!(c.evacuate, d.evacuate);
        assert_eq!(c.monitor.signals(), d.monitor.signals());
        assert_eq!(c.fence, d.fence);
        assert_eq!(c.openstack.timeout, d.openstack.timeout);
        assert_eq!(c.openstack.retry, d.openstack.retry);
        assert_eq!(c.log.format, d.log.format);
        assert_eq!(c.recovery, d.recovery);
        // Every [recovery] key is written out (not commented) with its
        // default as the daemon would spell it: a key added to the struct
        // but not to the example fails here.
        let doc: toml::Table = text.parse().expect("the example is TOML");
        let written = doc
            .get("recovery")
            .and_then(toml::Value::as_table)
            .expect("the example has a [recovery] section");
        let defaults =
            toml::Table::try_from(RecoveryConfig::default()).expect("defaults serialize");
        assert_eq!(written, &defaults);
    }
}
