//! A private libvirt daemon serving libvirt's `test` driver over TCP: an
//! unprivileged-style `libvirtd --listen` with its own config, socket dir and
//! free TCP port, no hypervisor drivers loaded, plus one long-lived
//! `virsh event --loop` connection that keeps the shared test driver (and so
//! its domain states) alive between connections. The test driver's default
//! domain is `test`, running. Installed by `scripts/deps/libvirt.sh`.

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::process::{ChildGuard, free_port, tool, wait_for_tcp, wait_until};

/// The running daemon; everything is killed when dropped (holder first).
#[derive(Debug)]
pub struct Libvirtd {
    holder: ChildGuard,
    daemon: ChildGuard,
    dir: tempfile::TempDir,
    port: u16,
}

/// The `virsh` binary.
pub fn virsh() -> PathBuf {
    tool("NOVAHA_VIRSH", &["/usr/bin/virsh"], "virsh")
}

fn libvirtd() -> PathBuf {
    tool("NOVAHA_LIBVIRTD", &["/usr/sbin/libvirtd"], "libvirtd")
}

impl Libvirtd {
    /// The domain the test driver starts with (running).
    pub const DOMAIN: &'static str = "test";

    /// Starts the daemon and the holder connection, and waits until the
    /// `test` domain can be listed.
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("novaha-lv-")
            .tempdir()
            .expect("temp dir");
        let run = dir.path().join("run");
        let drivers = dir.path().join("no-drivers");
        fs::create_dir(&run).expect("run dir");
        fs::create_dir(&drivers).expect("driver dir");
        for attempt in 0..5 {
            let port = free_port();
            let conf = dir.path().join("libvirtd.conf");
            fs::write(
                &conf,
                format!(
                    "listen_tls = 0\nlisten_tcp = 1\ntcp_port = \"{port}\"\n\
                     listen_addr = \"127.0.0.1\"\nauth_tcp = \"none\"\n\
                     unix_sock_dir = \"{run}\"\n",
                    run = run.display()
                ),
            )
            .expect("write libvirtd.conf");
            let log = fs::File::create(dir.path().join("libvirtd.log")).expect("log");
            let mut daemon = ChildGuard::spawn(
                "libvirtd",
                Command::new(libvirtd())
                    .arg("--listen")
                    .arg("-f")
                    .arg(&conf)
                    .arg("-p")
                    .arg(run.join("libvirtd.pid"))
                    .env("LIBVIRT_DRIVER_DIR", &drivers)
                    .env("XDG_RUNTIME_DIR", &run)
                    .env("XDG_CONFIG_HOME", dir.path().join("config"))
                    .env("XDG_CACHE_HOME", dir.path().join("cache"))
                    .stdin(Stdio::null())
                    .stdout(log.try_clone().expect("dup log"))
                    .stderr(log),
            );
            let listening = wait_until(Duration::from_secs(10), || {
                std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() || !daemon.is_running()
            });
            if !(listening && daemon.is_running()) {
                eprintln!("libvirtd attempt {attempt} on port {port} failed; retrying");
                continue;
            }
            wait_for_tcp(port, Duration::from_secs(5), "libvirtd");
            let uri = format!("test+tcp://127.0.0.1:{port}/default");
            let holder = ChildGuard::spawn(
                "virsh event --loop",
                Command::new(virsh())
                    .args(["-c", &uri, "event", "--loop", "--all"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null()),
            );
            let me = Self {
                holder,
                daemon,
                dir,
                port,
            };
            // The holder is connected once the domain reads running twice in
            // a row from fresh connections (the driver's initial state).
            assert!(
                wait_until(Duration::from_secs(10), || {
                    me.domstate(Self::DOMAIN).as_deref() == Some("running")
                }),
                "libvirt test driver did not come up on port {port}"
            );
            return me;
        }
        panic!("libvirtd did not start");
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `test+tcp://127.0.0.1:PORT/default`.
    pub fn uri(&self) -> String {
        format!("test+tcp://127.0.0.1:{}/default", self.port)
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.daemon.pid()
    }

    /// The temp dir (config, sockets, log).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// `virsh domstate DOMAIN` as text (`running`, `shut off`), `None` on error.
    pub fn domstate(&self, domain: &str) -> Option<String> {
        self.virsh(&["domstate", domain])
    }

    /// Runs `virsh -c URI ARGS...`; stdout trimmed, `None` when it failed.
    pub fn virsh(&self, args: &[&str]) -> Option<String> {
        let out = Command::new(virsh())
            .arg("-c")
            .arg(self.uri())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run virsh");
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Kills the daemon (the hypervisor is unreachable).
    pub fn stop(&mut self) {
        self.holder.kill();
        self.daemon.kill();
    }
}
