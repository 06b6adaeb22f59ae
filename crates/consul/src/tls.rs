//! TLS towards the Consul agent: the one place an HTTP client for Consul is
//! built ([`http_client`]), used by this crate's [`Consul`](crate::Consul)
//! (and config validation), so a CA, a client
//! certificate (mTLS, for agents with `verify_incoming`) and a TLS server
//! name apply to every call novaha makes to Consul.
//!
//! The settings mirror Consul's own CLI variables (`CONSUL_CACERT`,
//! `CONSUL_CAPATH`, `CONSUL_CLIENT_CERT`, `CONSUL_CLIENT_KEY`,
//! `CONSUL_TLS_SERVER_NAME`, `CONSUL_HTTP_SSL_VERIFY`); the daemon's config
//! layer decides precedence between its file and those variables, this
//! crate reads no environment.
//!
//! The server name is applied by naming it in the URL and resolving that
//! name to the configured address: the certificate is then checked against
//! the server name (as Consul's `tls_server_name` does) while the
//! connection goes to the address.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::ConsulError;

/// How novaha checks the agent's certificate and proves its own. All empty
/// (the default) = the system's roots, no client certificate, the
/// address's host as the name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConsulTls {
    /// A PEM file of CA certificates to trust instead of the system's
    /// (`CONSUL_CACERT`).
    pub ca_file: Option<PathBuf>,
    /// A directory of PEM CA certificates to trust instead of the system's
    /// (`CONSUL_CAPATH`); every `*.pem` and `*.crt` in it.
    pub ca_path: Option<PathBuf>,
    /// This client's certificate, PEM (`CONSUL_CLIENT_CERT`); needed when
    /// the agent has `verify_incoming`.
    pub client_cert: Option<PathBuf>,
    /// Its private key, PEM (`CONSUL_CLIENT_KEY`). Never logged.
    pub client_key: Option<PathBuf>,
    /// The name the agent's certificate must carry, when it differs from
    /// the address's host (`CONSUL_TLS_SERVER_NAME`), e.g.
    /// `server.dc1.consul` for an agent reached by IP.
    pub server_name: Option<String>,
    /// Accept any certificate (`CONSUL_HTTP_SSL_VERIFY=false`): test
    /// clusters only.
    pub insecure: bool,
}

impl ConsulTls {
    /// True when any TLS setting is given (they need an `https://` address).
    pub fn is_set(&self) -> bool {
        self.ca_file.is_some()
            || self.ca_path.is_some()
            || self.client_cert.is_some()
            || self.client_key.is_some()
            || self.server_name.is_some()
            || self.insecure
    }
}

fn read(what: &str, path: &Path) -> Result<Vec<u8>, ConsulError> {
    std::fs::read(path)
        .map_err(|e| ConsulError::Settings(format!("consul {what} {}: {e}", path.display())))
}

fn certificates(what: &str, path: &Path) -> Result<Vec<reqwest::Certificate>, ConsulError> {
    let pem = read(what, path)?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
        ConsulError::Settings(format!(
            "consul {what} {}: not PEM certificates: {e}",
            path.display()
        ))
    })?;
    if certs.is_empty() {
        return Err(ConsulError::Settings(format!(
            "consul {what} {}: no certificate in it",
            path.display()
        )));
    }
    Ok(certs)
}

/// An HTTP client for the agent at `base` with `tls` applied, and the base
/// URL to send requests to (its host replaced by the TLS server name when
/// one is set, that name resolving to the address). Reads the certificate
/// files; does no network I/O except resolving a host name given as the
/// address when a server name is set.
pub fn http_client(
    base: &url::Url,
    tls: &ConsulTls,
    connect_timeout: Duration,
) -> Result<(reqwest::Client, url::Url), ConsulError> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .pool_idle_timeout(Duration::from_secs(30));
    let mut url = base.clone();
    if tls.is_set() && base.scheme() != "https" {
        return Err(ConsulError::Settings(format!(
            "consul TLS settings are set but the address {base} is not https:// \
             (use https://, or CONSUL_HTTP_SSL=true)"
        )));
    }
    let mut roots = Vec::new();
    if let Some(file) = &tls.ca_file {
        roots.extend(certificates("CA file", file)?);
    }
    if let Some(dir) = &tls.ca_path {
        let entries = std::fs::read_dir(dir)
            .map_err(|e| ConsulError::Settings(format!("consul CA path {}: {e}", dir.display())))?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "pem" || x == "crt"))
            .collect();
        files.sort();
        for f in &files {
            roots.extend(certificates("CA path file", f)?);
        }
        if files.is_empty() {
            return Err(ConsulError::Settings(format!(
                "consul CA path {}: no *.pem or *.crt file in it",
                dir.display()
            )));
        }
    }
    if !roots.is_empty() {
        // Like Consul's own clients: the given CA only, not the system's.
        builder = builder.tls_built_in_root_certs(false);
        for c in roots {
            builder = builder.add_root_certificate(c);
        }
    }
    match (&tls.client_cert, &tls.client_key) {
        (Some(cert), Some(key)) => {
            let mut pem = read("client certificate", cert)?;
            pem.push(b'\n');
            pem.extend(read("client key", key)?);
            let identity = reqwest::Identity::from_pem(&pem).map_err(|e| {
                ConsulError::Settings(format!(
                    "consul client certificate {} and key {}: {e}",
                    cert.display(),
                    key.display()
                ))
            })?;
            builder = builder.identity(identity);
        }
        (None, None) => {}
        _ => {
            return Err(ConsulError::Settings(
                "consul client certificate and key go together: set both or neither".into(),
            ));
        }
    }
    if tls.insecure {
        builder = builder.danger_accept_invalid_certs(true);
    }
    if let Some(name) = tls.server_name.as_deref().filter(|n| !n.is_empty()) {
        let host = base
            .host_str()
            .ok_or_else(|| ConsulError::Settings(format!("consul address {base}: no host")))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = base.port_or_known_default().unwrap_or(8501);
        let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => (host.as_str(), port)
                .to_socket_addrs()
                .map_err(|e| {
                    ConsulError::Settings(format!(
                        "consul address {base}: cannot resolve {host}: {e}"
                    ))
                })?
                .collect(),
        };
        url.set_host(Some(name))
            .map_err(|e| ConsulError::Settings(format!("consul TLS server name {name:?}: {e}")))?;
        builder = builder.resolve_to_addrs(name, &addrs);
    }
    let client = builder
        .build()
        .map_err(|e| ConsulError::Settings(format!("consul http client: {e}")))?;
    Ok((client, url))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> url::Url {
        url::Url::parse(s).expect("a test URL")
    }

    #[test]
    fn tls_needs_https_and_both_halves_of_the_client_identity() {
        let tls = ConsulTls {
            server_name: Some("server.dc1.consul".into()),
            ..ConsulTls::default()
        };
        let e = http_client(&url("http://127.0.0.1:8500"), &tls, Duration::from_secs(1))
            .expect_err("http with TLS settings");
        assert!(e.to_string().contains("not https://"), "{e}");
        let (_, u) = http_client(
            &url("https://127.0.0.1:8501/"),
            &tls,
            Duration::from_secs(1),
        )
        .expect("valid");
        assert_eq!(u.as_str(), "https://server.dc1.consul:8501/");
        let half = ConsulTls {
            client_cert: Some("/nonexistent/cert.pem".into()),
            ..ConsulTls::default()
        };
        let e = http_client(
            &url("https://127.0.0.1:8501"),
            &half,
            Duration::from_secs(1),
        )
        .expect_err("a cert without its key");
        assert!(e.to_string().contains("go together"), "{e}");
        let missing = ConsulTls {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..ConsulTls::default()
        };
        let e = http_client(
            &url("https://127.0.0.1:8501"),
            &missing,
            Duration::from_secs(1),
        )
        .expect_err("a missing CA file");
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
        // No TLS settings: plain http works, the URL is kept.
        let (_, u) = http_client(
            &url("http://127.0.0.1:8500/"),
            &ConsulTls::default(),
            Duration::from_secs(1),
        )
        .expect("plain");
        assert_eq!(u.as_str(), "http://127.0.0.1:8500/");
    }
}
