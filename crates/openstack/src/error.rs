//! The crate's one error type. Every message names the call that failed, the
//! URL path, the HTTP status and an excerpt of the body; none carries a
//! token or a password (bodies are scrubbed of both before they are kept).

use std::time::Duration;

/// How much of a peer's body an error keeps.
pub(crate) const BODY_EXCERPT_CHARS: usize = 200;

/// Why an OpenStack call (or loading its configuration) failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenStackError {
    /// The configuration is incomplete or contradictory.
    #[error("openstack config: {0}")]
    Config(String),

    /// A clouds.yaml / secure.yaml file could not be read or parsed.
    #[error("openstack config file {path}: {detail}")]
    ConfigFile {
        /// The file.
        path: String,
        /// What was wrong with it.
        detail: String,
    },

    /// The named cloud is in none of the clouds.yaml files searched.
    #[error("openstack cloud {cloud:?} not found in {searched}")]
    CloudNotFound {
        /// The cloud name (OS_CLOUD or `cloud`).
        cloud: String,
        /// The files that were searched, comma separated.
        searched: String,
    },

    /// The TLS setup (CA file) is unusable.
    #[error("openstack tls: {0}")]
    Tls(String),

    /// Keystone refused the credentials (401/403 on `POST /v3/auth/tokens`).
    #[error("keystone authentication at {path}: HTTP {status}: {body}")]
    AuthRefused {
        /// The URL path of the token request.
        path: String,
        /// The HTTP status.
        status: u16,
        /// A scrubbed excerpt of Keystone's answer.
        body: String,
    },

    /// The catalog has no endpoint for a service.
    #[error(
        "no {service_type} endpoint in the catalog for interface {interface} and region {region}"
    )]
    NoEndpoint {
        /// The service type (compute, identity).
        service_type: String,
        /// The interface asked for.
        interface: String,
        /// The region asked for (`any` when none was configured).
        region: String,
    },

    /// The peer answered with an HTTP error status.
    #[error("{call} {method} {path}: HTTP {status}: {body}{}", request(request_id))]
    Http {
        /// The call (e.g. `nova list servers`).
        call: &'static str,
        /// The HTTP method.
        method: &'static str,
        /// The URL path (and query).
        path: String,
        /// The HTTP status.
        status: u16,
        /// A scrubbed excerpt of the body.
        body: String,
        /// The request id the peer answered with (`x-openstack-request-id`),
        /// else the one novaha sent: what to look for in Nova's logs.
        request_id: Option<Box<str>>,
    },

    /// The request did not complete in time. For a mutating call the outcome
    /// is unknown: it may still have been applied (see
    /// [`OpenStackError::outcome_unknown`]).
    #[error(
        "{call} {method} {path}: timed out after {after:?}{}",
        request(request_id)
    )]
    Timeout {
        /// The call.
        call: &'static str,
        /// The HTTP method.
        method: &'static str,
        /// The URL path.
        path: String,
        /// The configured timeout.
        after: Duration,
        /// True when the call changes state in the cloud.
        mutating: bool,
        /// The `X-OpenStack-Request-ID` novaha sent (Nova logs it as the
        /// global request id if the request reached it).
        request_id: Option<Box<str>>,
    },

    /// The request could not be sent or its answer not read (connection
    /// refused, reset, DNS).
    #[error(
        "{call} {method} {path}: transport error: {detail}{}",
        request(request_id)
    )]
    Transport {
        /// The call.
        call: &'static str,
        /// The HTTP method.
        method: &'static str,
        /// The URL path.
        path: String,
        /// What went wrong.
        detail: String,
        /// True when the call changes state in the cloud.
        mutating: bool,
        /// The `X-OpenStack-Request-ID` novaha sent.
        request_id: Option<Box<str>>,
    },

    /// The answer was not the JSON the call expects.
    #[error(
        "{call} {method} {path}: malformed response: {detail}; body: {body}{}",
        request(request_id)
    )]
    Malformed {
        /// The call.
        call: &'static str,
        /// The HTTP method.
        method: &'static str,
        /// The URL path.
        path: String,
        /// The parse error.
        detail: String,
        /// A scrubbed excerpt of the body.
        body: String,
        /// The request id the peer answered with, when known.
        request_id: Option<Box<str>>,
    },

    /// A successful answer was longer than the client reads (64 MiB): a
    /// broken proxy or a hostile endpoint, or a
    /// listing grown far past any real cloud. Not retryable: the same call
    /// would bring the same answer. For a mutating call the peer accepted
    /// the request (2xx), so its effect must be read back
    /// ([`OpenStackError::outcome_unknown`]).
    #[error(
        "{call} {method} {path}: answer larger than {limit} bytes, not read further{}",
        request(request_id)
    )]
    TooLarge {
        /// The call.
        call: &'static str,
        /// The HTTP method.
        method: &'static str,
        /// The URL path.
        path: String,
        /// The bound, in bytes.
        limit: usize,
        /// True when the call changes state in the cloud.
        mutating: bool,
        /// The request id the peer answered with, else the one novaha sent.
        request_id: Option<Box<str>>,
    },

    /// The cloud's Nova is too old for the call.
    #[error("{call}: needs compute microversion {needs}, the cloud offers at most {have}")]
    Unsupported {
        /// The call.
        call: &'static str,
        /// The microversion it needs.
        needs: String,
        /// The highest the cloud offers.
        have: String,
    },

    /// Paging through a list did not advance (the same marker came back).
    #[error("{call} {path}: pagination did not advance past marker {marker}")]
    Pagination {
        /// The call.
        call: &'static str,
        /// The URL path.
        path: String,
        /// The marker that repeated.
        marker: String,
    },
}

impl OpenStackError {
    /// True when a later attempt of the same call may succeed: transport
    /// failures, timeouts, HTTP 5xx and 429. Config errors, refusals (4xx),
    /// malformed or oversized answers and unsupported calls are not
    /// retryable.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Http { status, .. } => *status >= 500 || *status == 429,
            Self::AuthRefused { status, .. } => *status >= 500,
            Self::Timeout { .. } | Self::Transport { .. } => true,
            Self::Config(_)
            | Self::ConfigFile { .. }
            | Self::CloudNotFound { .. }
            | Self::Tls(_)
            | Self::NoEndpoint { .. }
            | Self::Malformed { .. }
            | Self::TooLarge { .. }
            | Self::Unsupported { .. }
            | Self::Pagination { .. } => false,
        }
    }

    /// True when a mutating call may have been applied even though it
    /// failed (it timed out, the connection broke after sending, or its
    /// accepted answer was too large to read): the
    /// caller must read the state back before deciding to send it again.
    pub fn outcome_unknown(&self) -> bool {
        match self {
            Self::Timeout { mutating, .. }
            | Self::Transport { mutating, .. }
            | Self::TooLarge { mutating, .. } => *mutating,
            _ => false,
        }
    }

    /// The HTTP status, when the peer answered with one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Http { status, .. } | Self::AuthRefused { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// True for an HTTP 404 (the thing asked for does not exist).
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }
}

/// How a request id reads at the end of an error message.
fn request(id: &Option<Box<str>>) -> String {
    id.as_ref()
        .map_or_else(String::new, |id| format!(" (request id {id})"))
}

impl OpenStackError {
    /// The request id of the failed call, when it has one: the id Nova or
    /// Keystone answered with, else the one novaha sent.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            Self::Http { request_id, .. }
            | Self::Timeout { request_id, .. }
            | Self::Transport { request_id, .. }
            | Self::Malformed { request_id, .. }
            | Self::TooLarge { request_id, .. } => request_id.as_deref(),
            _ => None,
        }
    }
}

/// Cuts a body to an excerpt and removes every given secret from it
/// ([`novaha_core::text::excerpt`]); secrets shorter than 4 bytes are left
/// alone (they would mask ordinary words), and an empty body says so.
pub(crate) fn excerpt(body: &str, secrets: &[&str]) -> String {
    let secrets: Vec<&str> = secrets.iter().copied().filter(|s| s.len() >= 4).collect();
    let s = novaha_core::text::excerpt(body, BODY_EXCERPT_CHARS, &secrets);
    if s.is_empty() {
        "(empty body)".to_owned()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpt_scrubs_secrets_and_cuts() {
        let body = format!("token gAAAAtok3n and pw hunter22 {}", "x".repeat(500));
        let e = excerpt(&body, &["gAAAAtok3n", "hunter22"]);
        assert!(!e.contains("gAAAAtok3n"));
        assert!(!e.contains("hunter22"));
        assert!(e.ends_with("..."));
        assert!(e.chars().count() <= BODY_EXCERPT_CHARS + 3);
        assert_eq!(excerpt("  ", &[]), "(empty body)");
    }

    #[test]
    fn retryable_classification() {
        let http = |status| OpenStackError::Http {
            call: "nova get server",
            method: "GET",
            path: "/servers/x".into(),
            status,
            body: String::new(),
            request_id: Some("req-1".into()),
        };
        assert!(http(500).to_string().ends_with(" (request id req-1)"));
        assert_eq!(http(500).request_id(), Some("req-1"));
        assert!(http(500).is_retryable());
        assert!(http(503).is_retryable());
        assert!(http(429).is_retryable());
        assert!(!http(409).is_retryable());
        assert!(!http(404).is_retryable());
        assert!(http(404).is_not_found());
        let t = OpenStackError::Timeout {
            call: "nova evacuate",
            method: "POST",
            path: "/servers/x/action".into(),
            after: Duration::from_secs(1),
            mutating: true,
            request_id: None,
        };
        assert!(t.is_retryable());
        assert!(t.outcome_unknown());
        assert!(!OpenStackError::Config("x".into()).is_retryable());
    }
}
