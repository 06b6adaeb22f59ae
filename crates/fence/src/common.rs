//! Plumbing shared by the drivers: running a tool with a hard deadline,
//! keeping secrets out of error text, and the "read power until off before a
//! deadline" loop that is the only way a driver produces [`Fenced`].

use std::future::Future;
use std::process::{Output, Stdio};
use std::time::Duration;

use chrono::Utc;
use novaha_core::drivers::fence::{FenceError, Fenced};
use novaha_core::{NodeName, PowerState, Secret};
use tokio::process::Command;
use tokio::time::Instant;

/// The longest excerpt of a peer's answer kept in an error.
const EXCERPT_CHARS: usize = 300;

/// A configuration error for `node`.
pub(crate) fn config_err(node: &NodeName, detail: impl Into<String>) -> FenceError {
    FenceError::Config {
        node: node.clone(),
        detail: detail.into(),
    }
}

/// `text` with every occurrence of the secret replaced by `***` and cut to a
/// short excerpt ([`novaha_core::text::excerpt`]): peers' answers go into
/// errors only through here.
pub(crate) fn sanitize(text: &str, secret: &Secret) -> String {
    novaha_core::text::excerpt(text, EXCERPT_CHARS, &[secret.expose()])
}

/// Why running a tool failed before it produced an exit status.
#[derive(Debug)]
pub(crate) enum ToolFailure {
    /// It could not be started (missing binary, permissions).
    Spawn(std::io::Error),
    /// It ran past its deadline and was killed.
    Timeout(Duration),
}

/// Runs `cmd` with stdin closed (a tool must never sit at a password
/// prompt), capturing its output, and kills it if it outlives `timeout`.
pub(crate) async fn run_tool(mut cmd: Command, timeout: Duration) -> Result<Output, ToolFailure> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().map_err(ToolFailure::Spawn)?;
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(out)) => Ok(out),
        Ok(Err(e)) => Err(ToolFailure::Spawn(e)),
        // Dropping the future drops the child, which kills it (kill_on_drop).
        Err(_) => Err(ToolFailure::Timeout(timeout)),
    }
}

/// Reads the power with `read` every `interval` until it reads
/// [`PowerState::Off`] before `timeout` has passed since the call. A read
/// error or an `On`/`Unknown` reading keeps polling; an authentication or
/// configuration error ends at once (waiting cannot fix it). At the
/// deadline the fence is [`FenceError::NotConfirmed`] with the last reading.
pub(crate) async fn confirm_off<F, Fut>(
    node: &NodeName,
    driver: &'static str,
    timeout: Duration,
    interval: Duration,
    mut read: F,
) -> Result<Fenced, FenceError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<PowerState, FenceError>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last;
        match read().await {
            Ok(state) => {
                last = state;
                if state == PowerState::Off && Instant::now() <= deadline {
                    return Fenced::from_observation(node.clone(), driver, state, Utc::now())
                        .ok_or_else(|| FenceError::NotConfirmed {
                            node: node.clone(),
                            last: state,
                        });
                }
                tracing::debug!(node = %node, driver, power = %state, "power not off yet");
            }
            Err(e @ (FenceError::Auth { .. } | FenceError::Config { .. })) => return Err(e),
            Err(e) => {
                last = PowerState::Unknown;
                tracing::warn!(node = %node, driver, error = %e, "power read failed while confirming off");
            }
        }
        if Instant::now() + interval > deadline {
            return Err(FenceError::NotConfirmed {
                node: node.clone(),
                last,
            });
        }
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn sanitize_removes_the_secret_and_bounds_the_length() {
        let s = Secret::new("hunter2");
        assert_eq!(sanitize(" bad hunter2 here ", &s), "bad *** here");
        let long = "x".repeat(1000);
        assert!(sanitize(&long, &s).len() < 310);
        assert_eq!(sanitize("abc", &Secret::default()), "abc");
    }

    #[tokio::test]
    async fn off_on_the_third_read_is_fenced() {
        let n = AtomicUsize::new(0);
        let f = confirm_off(
            &NodeName::from("c1"),
            "ipmi",
            Duration::from_millis(500),
            Duration::from_millis(10),
            || async {
                Ok(if n.fetch_add(1, Ordering::SeqCst) < 2 {
                    PowerState::On
                } else {
                    PowerState::Off
                })
            },
        )
        .await
        .unwrap();
        assert_eq!(f.node().as_str(), "c1");
        assert_eq!(f.driver(), "ipmi");
        assert_eq!(n.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn unknown_and_errors_until_the_deadline_are_not_confirmed() {
        let n = AtomicUsize::new(0);
        let err = confirm_off(
            &NodeName::from("c1"),
            "ipmi",
            Duration::from_millis(100),
            Duration::from_millis(10),
            || async {
                if n.fetch_add(1, Ordering::SeqCst) % 2 == 0 {
                    Ok(PowerState::Unknown)
                } else {
                    Err(FenceError::Unreachable {
                        node: NodeName::from("c1"),
                        detail: "timeout".into(),
                    })
                }
            },
        )
        .await
        .unwrap_err();
        assert!(
            matches!(
                err,
                FenceError::NotConfirmed {
                    last: PowerState::Unknown,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.is_retryable());
        assert!(n.load(Ordering::SeqCst) >= 5);
    }

    #[tokio::test]
    async fn an_auth_error_ends_the_wait_at_once() {
        let n = AtomicUsize::new(0);
        let err = confirm_off(
            &NodeName::from("c1"),
            "redfish",
            Duration::from_secs(5),
            Duration::from_millis(10),
            || async {
                n.fetch_add(1, Ordering::SeqCst);
                Err(FenceError::Auth {
                    node: NodeName::from("c1"),
                    detail: "401".into(),
                })
            },
        )
        .await
        .unwrap_err();
        assert!(matches!(err, FenceError::Auth { .. }));
        assert_eq!(n.load(Ordering::SeqCst), 1);
    }
}
