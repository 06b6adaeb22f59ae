//! The `redfish` driver: `ComputerSystem.Reset` with `ForceOff` over HTTP(S),
//! then `PowerState` polled until it reads `Off`.
//!
//! The system is `config/bmc/system_path` when set, else the only member of
//! `/redfish/v1/Systems` (several members without a configured path is a
//! configuration error: fencing the wrong one is worse than fencing none).
//! Auth is HTTP Basic or a Redfish session (token deleted after use); the
//! password goes in a header or a JSON body, never in a URL. Certificate
//! checking is on unless the node or the section turns it off.

use std::time::Duration;

use async_trait::async_trait;
use novaha_core::drivers::fence::{FenceError, FenceTarget, Fenced, Fencer};
use novaha_core::http::{CappedBody, ERROR_BODY_LIMIT};
use novaha_core::kv::parse_bool;
use novaha_core::text::error_chain;
use novaha_core::{NodeName, PowerState, Secret};
use reqwest::{Client, Method, RequestBuilder, StatusCode};
use serde_json::{Value, json};

use crate::common::{config_err, confirm_off, sanitize};
use crate::settings::{RedfishAuth, RedfishSettings};

/// The Redfish fencer: two HTTP clients (certificates checked or not),
/// chosen per node.
#[derive(Debug)]
pub struct RedfishFencer {
    settings: RedfishSettings,
    verifying: Client,
    insecure: Client,
    confirm_timeout: Duration,
    poll_interval: Duration,
}

/// How one connection authenticates.
enum ConnAuth {
    Basic {
        user: String,
        password: Secret,
    },
    Token {
        token: Secret,
        session: Option<String>,
    },
}

/// One node's BMC, for the length of one operation.
struct Conn<'a> {
    client: &'a Client,
    base: String,
    node: &'a NodeName,
    secret: &'a Secret,
    auth: ConnAuth,
}

impl RedfishFencer {
    /// Builds the HTTP clients. Fails only if the TLS stack cannot start.
    pub fn new(
        settings: RedfishSettings,
        confirm_timeout: Duration,
        poll_interval: Duration,
    ) -> Result<Self, FenceError> {
        let section = NodeName::from("[fence.redfish]");
        let extra_roots = match &settings.ca_file {
            None => Vec::new(),
            Some(path) => std::fs::read(path)
                .map_err(|e| e.to_string())
                .and_then(|pem| {
                    reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| e.to_string())
                })
                .map_err(|e| config_err(&section, format!("ca_file {}: {e}", path.display())))?,
        };
        let build = |verify: bool| {
            let mut builder = Client::builder()
                .timeout(settings.request_timeout)
                .connect_timeout(settings.request_timeout)
                .danger_accept_invalid_certs(!verify);
            for cert in &extra_roots {
                builder = builder.add_root_certificate(cert.clone());
            }
            builder
                .build()
                .map_err(|e| config_err(&section, format!("http client: {e}")))
        };
        Ok(Self {
            verifying: build(true)?,
            insecure: build(false)?,
            settings,
            confirm_timeout,
            poll_interval,
        })
    }

    /// Opens a connection to the node's BMC (logs in for session auth).
    async fn connect<'a>(&'a self, target: &'a FenceTarget) -> Result<Conn<'a>, FenceError> {
        let node = &target.node;
        let bmc = &target.bmc;
        let extra = |k: &str| {
            bmc.extra
                .get(k)
                .map(String::as_str)
                .filter(|v| !v.trim().is_empty())
        };
        let host = bmc
            .ip
            .as_deref()
            .ok_or_else(|| config_err(node, "no BMC address (config/bmc/ip)"))?;
        let scheme = extra("scheme").unwrap_or(&self.settings.scheme);
        let base = base_url(host, bmc.port, scheme).map_err(|e| config_err(node, e))?;
        let verify = match extra("verify_tls") {
            None => self.settings.verify_tls,
            Some(v) => parse_bool("config/bmc/verify_tls", Some(v.as_bytes())).map_err(|_| {
                config_err(
                    node,
                    format!("config/bmc/verify_tls {v:?} is not a boolean"),
                )
            })?,
        };
        let mode = match extra("auth") {
            None => self.settings.auth,
            Some(v) => v
                .parse::<RedfishAuth>()
                .map_err(|e| config_err(node, format!("config/bmc/auth: {e}")))?,
        };
        let client = if verify {
            &self.verifying
        } else {
            &self.insecure
        };
        let user = bmc.user.clone().unwrap_or_default();
        let mut conn = Conn {
            client,
            base,
            node,
            secret: &bmc.password,
            auth: ConnAuth::Basic {
                user: user.clone(),
                password: bmc.password.clone(),
            },
        };
        if mode == RedfishAuth::Session {
            conn.login(&user).await?;
        }
        Ok(conn)
    }

    /// The system's path: configured, or the only member of the collection.
    async fn system_path(
        &self,
        conn: &Conn<'_>,
        target: &FenceTarget,
    ) -> Result<String, FenceError> {
        if let Some(p) = target
            .bmc
            .extra
            .get("system_path")
            .filter(|p| !p.trim().is_empty())
        {
            let p = p.trim();
            return Ok(if p.starts_with('/') {
                p.to_owned()
            } else {
                format!("/{p}")
            });
        }
        let body = conn.get_json("/redfish/v1/Systems").await?;
        let members = body
            .get("Members")
            .and_then(Value::as_array)
            .ok_or_else(|| conn.protocol("/redfish/v1/Systems has no Members array"))?;
        let paths: Vec<&str> = members
            .iter()
            .filter_map(|m| m.get("@odata.id").and_then(Value::as_str))
            .collect();
        match paths.as_slice() {
            [one] => Ok((*one).to_owned()),
            [] => Err(conn.protocol("/redfish/v1/Systems lists no system")),
            many => Err(config_err(
                &target.node,
                format!(
                    "/redfish/v1/Systems lists {} systems; set config/bmc/system_path",
                    many.len()
                ),
            )),
        }
    }

    /// Reads the power state and the reset action's target of `system`.
    async fn read_system(
        conn: &Conn<'_>,
        system: &str,
    ) -> Result<(PowerState, String), FenceError> {
        let body = conn.get_json(system).await?;
        if !body.is_object() {
            return Err(conn.protocol(&format!("{system}: not a JSON object")));
        }
        let power = match body.get("PowerState") {
            Some(Value::String(s)) => match s.as_str() {
                "Off" => PowerState::Off,
                "On" | "PoweringOn" | "PoweringOff" | "Paused" => PowerState::On,
                _ => PowerState::Unknown,
            },
            Some(Value::Null) => PowerState::Unknown,
            Some(other) => {
                return Err(
                    conn.protocol(&format!("{system}: PowerState is not a string: {other}"))
                );
            }
            None => return Err(conn.protocol(&format!("{system}: no PowerState"))),
        };
        let reset = body
            .pointer("/Actions/#ComputerSystem.Reset/target")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| {
                format!(
                    "{}/Actions/ComputerSystem.Reset",
                    system.trim_end_matches('/')
                )
            });
        Ok((power, reset))
    }

    /// One operation with the connection closed afterwards (session logout).
    async fn reset<'a>(
        &'a self,
        target: &'a FenceTarget,
        reset_type: &str,
    ) -> Result<(Conn<'a>, String), FenceError> {
        let conn = self.connect(target).await?;
        let result = async {
            let system = self.system_path(&conn, target).await?;
            let (power, action) = Self::read_system(&conn, &system).await?;
            let wanted = if reset_type == "ForceOff" { PowerState::Off } else { PowerState::On };
            if power == wanted {
                tracing::info!(node = %target.node, driver = "redfish", reset_type, "power already in the wanted state");
            } else {
                tracing::info!(node = %target.node, driver = "redfish", reset_type, "sending reset");
                conn.post_json(&action, &json!({ "ResetType": reset_type })).await?;
            }
            Ok::<_, FenceError>(system)
        }
        .await;
        match result {
            Ok(system) => Ok((conn, system)),
            Err(e) => {
                conn.logout().await;
                Err(e)
            }
        }
    }
}

impl Conn<'_> {
    fn protocol(&self, detail: &str) -> FenceError {
        FenceError::Protocol {
            node: self.node.clone(),
            detail: sanitize(detail, self.secret),
        }
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_owned()
        } else {
            format!("{}{}", self.base, path)
        }
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let req = self
            .client
            .request(method, self.url(path))
            .header("Accept", "application/json");
        match &self.auth {
            ConnAuth::Basic { user, password } => req.basic_auth(user, Some(password.expose())),
            ConnAuth::Token { token, .. } => req.header("X-Auth-Token", token.expose()),
        }
    }

    /// Sends `req`; maps transport errors and HTTP statuses to fence errors.
    async fn send(&self, what: &str, req: RequestBuilder) -> Result<reqwest::Response, FenceError> {
        let resp = req.send().await.map_err(|e| {
            let chain = error_chain(&e);
            let detail = sanitize(&format!("redfish {what}: {chain}"), self.secret);
            if chain.to_ascii_lowercase().contains("certificate") {
                // Retrying cannot fix a certificate the client does not trust:
                // set ca_file, or verify_tls = False for this node.
                config_err(
                    self.node,
                    format!("{detail} (TLS: set [fence.redfish] ca_file or config/bmc/verify_tls)"),
                )
            } else {
                FenceError::Unreachable {
                    node: self.node.clone(),
                    detail,
                }
            }
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        // An error body only feeds an excerpt: never read more of it.
        let body = read_capped(resp, ERROR_BODY_LIMIT)
            .await
            .map(|(b, _)| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let detail = sanitize(
            &format!("redfish {what}: HTTP {status}: {body}"),
            self.secret,
        );
        Err(match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => FenceError::Auth {
                node: self.node.clone(),
                detail,
            },
            s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => {
                FenceError::Unreachable {
                    node: self.node.clone(),
                    detail,
                }
            }
            _ => FenceError::Protocol {
                node: self.node.clone(),
                detail,
            },
        })
    }

    async fn get_json(&self, path: &str) -> Result<Value, FenceError> {
        let what = format!("GET {path}");
        let resp = self.send(&what, self.request(Method::GET, path)).await?;
        let (bytes, complete) =
            read_capped(resp, BODY_LIMIT)
                .await
                .map_err(|e| FenceError::Unreachable {
                    node: self.node.clone(),
                    detail: sanitize(
                        &format!("redfish {what}: reading body: {}", error_chain(&e)),
                        self.secret,
                    ),
                })?;
        if !complete {
            return Err(self.protocol(&format!(
                "redfish {what}: answer larger than {BODY_LIMIT} bytes; not read further"
            )));
        }
        serde_json::from_slice(&bytes).map_err(|e| {
            self.protocol(&format!(
                "redfish {what}: malformed JSON ({e}): {}",
                String::from_utf8_lossy(&bytes)
            ))
        })
    }

    async fn post_json(&self, path: &str, body: &Value) -> Result<reqwest::Response, FenceError> {
        self.send(
            &format!("POST {path}"),
            self.request(Method::POST, path).json(body),
        )
        .await
    }

    /// Replaces Basic auth with a session token.
    async fn login(&mut self, user: &str) -> Result<(), FenceError> {
        let path = "/redfish/v1/SessionService/Sessions";
        let body = json!({ "UserName": user, "Password": self.secret.expose() });
        let req = self
            .client
            .post(self.url(path))
            .header("Accept", "application/json")
            .json(&body);
        let resp = self.send(&format!("POST {path} (login)"), req).await?;
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let token = header("X-Auth-Token")
            .ok_or_else(|| self.protocol("redfish login: no X-Auth-Token in the answer"))?;
        let session = header("Location");
        self.auth = ConnAuth::Token {
            token: Secret::new(token),
            session,
        };
        Ok(())
    }

    /// Deletes the session, if any. Best effort: a failure is logged only.
    async fn logout(&self) {
        if let ConnAuth::Token {
            session: Some(location),
            ..
        } = &self.auth
            && let Err(e) = self
                .send("DELETE session", self.request(Method::DELETE, location))
                .await
        {
            tracing::warn!(node = %self.node, driver = "redfish", error = %e, "redfish session logout failed");
        }
    }
}

/// The BMC's base URL: `ip` itself when it is a URL, else
/// `scheme://ip[:port]` (an IPv6 address gets its brackets).
fn base_url(host: &str, port: Option<u16>, scheme: &str) -> Result<String, String> {
    let host = host.trim();
    if host.contains("://") {
        return Ok(host.trim_end_matches('/').to_owned());
    }
    let scheme = scheme.trim();
    if scheme != "https" && scheme != "http" {
        return Err(format!("config/bmc/scheme {scheme:?} is not http or https"));
    }
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    Ok(match port {
        Some(p) => format!("{scheme}://{host}:{p}"),
        None => format!("{scheme}://{host}"),
    })
}

#[async_trait]
impl Fencer for RedfishFencer {
    fn driver(&self) -> &'static str {
        "redfish"
    }

    async fn fence(&self, target: &FenceTarget) -> Result<Fenced, FenceError> {
        let (conn, system) = self.reset(target, "ForceOff").await?;
        let result = confirm_off(
            &target.node,
            "redfish",
            self.confirm_timeout,
            self.poll_interval,
            || async { Self::read_system(&conn, &system).await.map(|(p, _)| p) },
        )
        .await;
        conn.logout().await;
        if result.is_ok() {
            tracing::info!(node = %target.node, driver = "redfish", "power verified off");
        }
        result
    }

    async fn power_state(&self, target: &FenceTarget) -> Result<PowerState, FenceError> {
        let conn = self.connect(target).await?;
        let result = async {
            let system = self.system_path(&conn, target).await?;
            Self::read_system(&conn, &system).await.map(|(p, _)| p)
        }
        .await;
        conn.logout().await;
        result
    }

    async fn unfence(&self, target: &FenceTarget) -> Result<(), FenceError> {
        let (conn, _) = self.reset(target, "On").await?;
        conn.logout().await;
        Ok(())
    }
}

/// The largest Redfish answer read (a `ComputerSystem` is a few KiB).
const BODY_LIMIT: usize = 1 << 20;

/// Reads at most `limit` bytes of `resp`'s body (the bytes, and whether
/// the body ended within the limit): a BMC cannot make the daemon hold an
/// unbounded answer in memory.
async fn read_capped(
    mut resp: reqwest::Response,
    limit: usize,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let mut body = CappedBody::new(limit);
    while let Some(chunk) = resp.chunk().await?
        && body.push(&chunk)
    {}
    Ok(body.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        assert_eq!(
            base_url("10.0.0.5", None, "https").unwrap(),
            "https://10.0.0.5"
        );
        assert_eq!(
            base_url("bmc1", Some(8443), "https").unwrap(),
            "https://bmc1:8443"
        );
        assert_eq!(
            base_url("fd00::5", Some(443), "https").unwrap(),
            "https://[fd00::5]:443"
        );
        assert_eq!(
            base_url("http://127.0.0.1:8000/", Some(1), "https").unwrap(),
            "http://127.0.0.1:8000"
        );
        assert!(
            base_url("bmc1", None, "ftp")
                .unwrap_err()
                .contains("scheme")
        );
    }
}
