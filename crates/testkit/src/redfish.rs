//! A Redfish BMC: sushy-tools' emulator (fake systems driver) on a free TCP
//! port with its own state dir and an htpasswd file (bcrypt, written with
//! the venv's own `bcrypt`) for Basic auth. Installed by
//! `scripts/deps/redfish.sh` into the cache. Note the fake driver applies a
//! power change 1-11 s after the reset request (by design): poll.

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::process::{ChildGuard, cache_dir, free_port, wait_until};

/// The sushy-tools version `scripts/deps/redfish.sh` installs.
pub const SUSHY_VERSION: &str = "2.2.0";

/// One running emulator with one system, killed when dropped.
#[derive(Debug)]
pub struct SushyEmulator {
    child: ChildGuard,
    dir: tempfile::TempDir,
    port: u16,
    uuid: String,
    tls: bool,
}

fn venv_bin(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("NOVAHA_SUSHY_VENV") {
        return PathBuf::from(dir).join("bin").join(name);
    }
    let p = cache_dir()
        .join(format!("sushy-{SUSHY_VERSION}"))
        .join("bin")
        .join(name);
    assert!(
        p.is_file(),
        "{} not found (run scripts/test-deps.sh to install sushy-tools)",
        p.display()
    );
    p
}

fn pseudo_uuid() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos();
    let x = nanos ^ (u128::from(std::process::id()) << 64);
    let h = format!("{x:032x}");
    format!(
        "{}-{}-4{}-8{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// A test CA and a server certificate for 127.0.0.1 signed by it, with the
/// `openssl` CLI (Debian `openssl`, installed by `scripts/deps/redfish.sh`).
fn make_certs(dir: &std::path::Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .output()
            .expect("run openssl (scripts/test-deps.sh installs it)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    fs::write(
        dir.join("ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .expect("write ext");
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=novaha test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "bmc.key",
        "-out",
        "bmc.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "bmc.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "bmc.pem",
        "-days",
        "2",
        "-extfile",
        "ext",
    ]);
}

impl SushyEmulator {
    /// The system's name (Redfish `Name`; `/Systems/<name>` redirects to
    /// the UUID).
    pub const SYSTEM_NAME: &'static str = "node-1";

    /// Starts an emulator with one system powered on, accepting Basic auth
    /// for `user` / `password`.
    pub fn start(user: &str, password: &str) -> Self {
        Self::start_with(user, password, false)
    }

    /// Like [`SushyEmulator::start`], but serving HTTPS with a certificate
    /// for `127.0.0.1` signed by a fresh test CA ([`SushyEmulator::ca_pem`]).
    pub fn start_tls(user: &str, password: &str) -> Self {
        Self::start_with(user, password, true)
    }

    fn start_with(user: &str, password: &str, tls: bool) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("novaha-sushy-")
            .tempdir()
            .expect("temp dir");
        let htpasswd = dir.path().join("htpasswd");
        let hashed = Command::new(venv_bin("python"))
            .args([
                "-c",
                "import bcrypt,sys; p=sys.stdin.read().encode(); \
                 print(bcrypt.hashpw(p, bcrypt.gensalt(4)).decode())",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin
                    .take()
                    .expect("stdin piped")
                    .write_all(password.as_bytes())?;
                c.wait_with_output()
            })
            .expect("run bcrypt");
        assert!(hashed.status.success(), "bcrypt hash failed");
        let hash = String::from_utf8(hashed.stdout).expect("utf8 hash");
        fs::write(&htpasswd, format!("{user}:{}\n", hash.trim())).expect("write htpasswd");
        let state = dir.path().join("state");
        fs::create_dir(&state).expect("state dir");
        let uuid = pseudo_uuid();
        let tls_conf = if tls {
            make_certs(dir.path());
            format!(
                "SUSHY_EMULATOR_SSL_CERT = '{}'\nSUSHY_EMULATOR_SSL_KEY = '{}'\n",
                dir.path().join("bmc.pem").display(),
                dir.path().join("bmc.key").display()
            )
        } else {
            String::new()
        };
        for attempt in 0..5 {
            let port = free_port();
            let conf = dir.path().join("emulator.conf");
            fs::write(
                &conf,
                format!(
                    "SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'\n\
                     SUSHY_EMULATOR_LISTEN_PORT = {port}\n\
                     SUSHY_EMULATOR_FAKE_DRIVER = True\n\
                     SUSHY_EMULATOR_STATE_DIR = '{state}'\n\
                     SUSHY_EMULATOR_AUTH_FILE = '{auth}'\n\
                     SUSHY_EMULATOR_FAKE_SYSTEMS = [{{'uuid': '{uuid}', 'name': '{name}', \
                     'power_state': 'On', 'nics': [{{'mac': '00:5c:52:31:3a:9c', \
                     'ip': '172.22.0.100'}}]}}]\n{tls_conf}",
                    state = state.display(),
                    auth = htpasswd.display(),
                    name = Self::SYSTEM_NAME,
                ),
            )
            .expect("write emulator.conf");
            let log = fs::File::create(dir.path().join("sushy.log")).expect("log");
            let mut child = ChildGuard::spawn(
                "sushy-emulator",
                Command::new(venv_bin("sushy-emulator"))
                    .arg("--config")
                    .arg(&conf)
                    .stdin(Stdio::null())
                    .stdout(log.try_clone().expect("dup log"))
                    .stderr(log),
            );
            let up = wait_until(Duration::from_secs(30), || {
                std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() || !child.is_running()
            });
            if up && child.is_running() {
                return Self {
                    child,
                    dir,
                    port,
                    uuid,
                    tls,
                };
            }
            let log = fs::read_to_string(dir.path().join("sushy.log")).unwrap_or_default();
            eprintln!("sushy-emulator attempt {attempt} on port {port} failed: {log}");
        }
        panic!("sushy-emulator did not start");
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT` (`https://` when started with TLS).
    pub fn base_url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The test CA's certificate (PEM file) when started with TLS.
    pub fn ca_pem(&self) -> PathBuf {
        assert!(self.tls, "started without TLS");
        self.dir.path().join("ca.pem")
    }

    /// The system's UUID (its id under `/redfish/v1/Systems/`).
    pub fn system_id(&self) -> &str {
        &self.uuid
    }

    /// The emulator's pid.
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// The temp dir (config, state, htpasswd, log).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Kills the emulator (BMC down).
    pub fn stop(&mut self) {
        self.child.kill();
    }
}
