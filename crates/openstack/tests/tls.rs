//! TLS trust against a real TLS server: `/usr/bin/python3`'s ssl module
//! terminating TLS (a self-signed certificate made by `openssl`) in front of
//! novaha-sim's Keystone. Installed by scripts/deps/openstack-tls.sh.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use novaha_openstack::config::AuthSection;
use novaha_openstack::{Env, OpenStackConfig, OpenStackError, Session, TlsConfig};
use novaha_sim::{Sim, SimConfig, SimHandle};
use novaha_testkit::process::{ChildGuard, tool, wait_until};

const PROXY: &str = r#"
import os, socket, ssl, sys, threading
cert, key, port_file, upstream = sys.argv[1:5]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
ls = socket.socket()
ls.bind(("127.0.0.1", 0))
ls.listen(64)
with open(port_file + ".tmp", "w") as f:
    f.write(str(ls.getsockname()[1]))
os.rename(port_file + ".tmp", port_file)

def pipe(a, b):
    try:
        while True:
            d = a.recv(65536)
            if not d:
                break
            b.sendall(d)
    except OSError:
        pass
    finally:
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

def handle(c):
    try:
        t = ctx.wrap_socket(c, server_side=True)
    except (ssl.SSLError, OSError):
        c.close()
        return
    u = socket.create_connection(("127.0.0.1", int(upstream)))
    threading.Thread(target=pipe, args=(t, u), daemon=True).start()
    pipe(u, t)

while True:
    c, _ = ls.accept()
    threading.Thread(target=handle, args=(c,), daemon=True).start()
"#;

struct TlsFront {
    _guard: ChildGuard,
    port: u16,
    /// The CA that signed the server's certificate.
    ca: PathBuf,
}

fn tls_front(dir: &Path, upstream: u16) -> TlsFront {
    let openssl = tool("NOVAHA_OPENSSL", &["/usr/bin/openssl"], "openssl");
    let python = tool("NOVAHA_PYTHON3", &["/usr/bin/python3"], "python3");
    let ca = dir.join("ca.pem");
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let run = |args: &[&str]| {
        let out = Command::new(&openssl)
            .current_dir(dir)
            .args(args)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    // A throw-away CA, and a server certificate for 127.0.0.1 signed by it
    // (webpki refuses a self-signed CA certificate used as the server's).
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=novaha-test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "key.pem",
        "-out",
        "leaf.csr",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "ext.cnf",
        "-out",
        "cert.pem",
    ]);
    let script = dir.join("proxy.py");
    std::fs::write(&script, PROXY).unwrap();
    let port_file = dir.join("port");
    let guard = ChildGuard::spawn(
        "tls proxy",
        Command::new(python)
            .arg(&script)
            .arg(&cert)
            .arg(&key)
            .arg(&port_file)
            .arg(upstream.to_string()),
    );
    assert!(
        wait_until(Duration::from_secs(10), || port_file.is_file()),
        "tls proxy did not start"
    );
    let port = std::fs::read_to_string(&port_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    TlsFront {
        _guard: guard,
        port,
        ca,
    }
}

fn config(sim: &SimHandle, front: &TlsFront) -> OpenStackConfig {
    let c = sim.credentials();
    OpenStackConfig {
        auth: Some(AuthSection {
            auth_url: Some(format!("https://127.0.0.1:{}/identity/v3", front.port)),
            username: Some(c.username),
            password: Some(novaha_core::Secret::new(c.password)),
            project_name: Some(c.project_name),
            domain_name: Some(c.user_domain_name),
            ..AuthSection::default()
        }),
        timeout: Duration::from_secs(5),
        ..OpenStackConfig::default()
    }
}

#[tokio::test]
async fn tls_trusts_a_ca_file_or_insecure_and_refuses_an_unknown_issuer() {
    let sim = Sim::start("127.0.0.1:0", SimConfig::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let front = tls_front(dir.path(), sim.addr().port());

    // The CA file from the config: the handshake succeeds and Keystone answers.
    let mut cfg = config(&sim, &front);
    cfg.cacert = Some(front.ca.clone());
    let cloud = cfg.resolve(&Env::default()).unwrap();
    assert_eq!(cloud.tls, TlsConfig::CaFile(front.ca.clone()));
    let session = Session::new(cloud).unwrap();
    session
        .authenticate()
        .await
        .expect("trusted via the CA file");
    assert_eq!(session.auth_count(), 1);

    // The system roots do not know this certificate: a transport error.
    let cloud = config(&sim, &front).resolve(&Env::default()).unwrap();
    assert_eq!(cloud.tls, TlsConfig::System);
    let err = Session::new(cloud)
        .unwrap()
        .authenticate()
        .await
        .unwrap_err();
    assert!(matches!(err, OpenStackError::Transport { .. }), "{err:?}");
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );

    // Explicitly insecure: accepted.
    let mut cfg = config(&sim, &front);
    cfg.insecure = Some(true);
    let session = Session::new(cfg.resolve(&Env::default()).unwrap()).unwrap();
    session
        .authenticate()
        .await
        .expect("insecure accepts any certificate");

    // OS_CACERT from the environment.
    let c = sim.credentials();
    let url = format!("https://127.0.0.1:{}/identity", front.port);
    let env = Env::from_vars(
        [
            ("OS_AUTH_URL", url.as_str()),
            ("OS_APPLICATION_CREDENTIAL_ID", &c.application_credential_id),
            (
                "OS_APPLICATION_CREDENTIAL_SECRET",
                &c.application_credential_secret,
            ),
            ("OS_CACERT", front.ca.to_str().unwrap()),
        ],
        None,
    );
    let session = Session::new(OpenStackConfig::default().resolve(&env).unwrap()).unwrap();
    session.authenticate().await.expect("trusted via OS_CACERT");
}
