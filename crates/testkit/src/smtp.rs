//! A real SMTP server for tests: Python's aiosmtpd (Debian
//! `python3-aiosmtpd`, installed by `scripts/deps/smtp.sh`) on a free
//! loopback port, saving every accepted message as a folder in its temp dir.
//! Optional STARTTLS with a throw-away CA and a server certificate for
//! `IP:127.0.0.1`, optional AUTH, and recipients it refuses with 550 (the
//! "bad address" case). `stop()` and `restart()` on the same port make the
//! "SMTP down, then back" case.
//!
//! Nothing secret reaches a command line: options (including the AUTH
//! password) go to the server through a JSON file in its temp dir.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::process::{ChildGuard, free_port, tool, wait_for_tcp, wait_until};

/// What the server offers.
#[derive(Clone, Debug, Default)]
pub struct SmtpOptions {
    /// Offer STARTTLS (and require it before AUTH).
    pub starttls: bool,
    /// Require AUTH LOGIN/PLAIN with this user and password.
    pub auth: Option<(String, String)>,
    /// Recipient addresses answered with `550 5.1.1` at RCPT TO.
    pub reject: Vec<String>,
}

/// One accepted message, as the server saw it.
#[derive(Clone, Debug)]
pub struct CapturedMessage {
    /// Envelope sender (MAIL FROM).
    pub mail_from: String,
    /// Envelope recipients (RCPT TO) that were accepted.
    pub rcpt_tos: Vec<String>,
    /// The decoded `Subject` header.
    pub subject: String,
    /// The `Message-ID` header.
    pub message_id: String,
    /// The decoded `To` header.
    pub to_header: String,
    /// The decoded text/plain part, if any.
    pub text: Option<String>,
    /// The decoded text/html part, if any.
    pub html: Option<String>,
    /// The raw message as received.
    pub raw: String,
    /// True when the session was upgraded with STARTTLS.
    pub tls: bool,
    /// The authenticated user, if any.
    pub auth_user: Option<String>,
}

const SERVER_PY: &str = r#"
import email, email.policy, json, os, ssl, sys, threading
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

cfg = json.load(open(sys.argv[1]))
outdir = cfg["dir"]
reject = set(a.lower() for a in cfg.get("reject", []))
lock = threading.Lock()
seq = [len([d for d in os.listdir(outdir) if d.startswith("msg-")])]

def write(d, name, text):
    with open(os.path.join(d, name), "w", encoding="utf-8") as f:
        f.write(text)

class Handler:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.lower() in reject:
            return "550 5.1.1 <%s>: recipient address rejected: user unknown" % address
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        with lock:
            seq[0] += 1
            n = seq[0]
        tmp = os.path.join(outdir, ".tmp-%06d" % n)
        os.mkdir(tmp)
        raw = envelope.original_content or envelope.content
        with open(os.path.join(tmp, "raw.eml"), "wb") as f:
            f.write(raw)
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        write(tmp, "from", envelope.mail_from or "")
        write(tmp, "rcpt", "\n".join(envelope.rcpt_tos))
        write(tmp, "subject", str(msg.get("Subject", "")))
        write(tmp, "message_id", str(msg.get("Message-ID", "")))
        write(tmp, "to", str(msg.get("To", "")))
        for kind, name in (("plain", "text"), ("html", "html")):
            part = msg.get_body(preferencelist=(kind,))
            if part is not None:
                write(tmp, name, part.get_content())
        write(tmp, "tls", "yes" if session.ssl is not None else "no")
        user = session.auth_data.login.decode() if session.authenticated and session.auth_data is not None and hasattr(session.auth_data, "login") else ""
        write(tmp, "auth", user)
        os.rename(tmp, os.path.join(outdir, "msg-%06d" % n))
        return "250 Message accepted for delivery"

kwargs = dict(hostname="127.0.0.1", port=cfg["port"], ready_timeout=10)
if cfg.get("tls"):
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cfg["tls"]["cert"], cfg["tls"]["key"])
    kwargs["tls_context"] = ctx
if cfg.get("auth"):
    want_user, want_pass = cfg["auth"]
    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = auth_data.login.decode() == want_user and auth_data.password.decode() == want_pass
        return AuthResult(success=ok, auth_data=auth_data)
    kwargs["authenticator"] = authenticator
    kwargs["auth_required"] = True
    kwargs["auth_require_tls"] = bool(cfg.get("tls"))

controller = Controller(Handler(), **kwargs)
controller.start()
print("READY", flush=True)
threading.Event().wait()
"#;

/// A running aiosmtpd capturing to files. Killed when dropped.
#[derive(Debug)]
pub struct SmtpServer {
    dir: tempfile::TempDir,
    port: u16,
    python: PathBuf,
    child: Option<ChildGuard>,
}

fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new(tool("NOVAHA_OPENSSL", &["/usr/bin/openssl"], "openssl"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run openssl (install: scripts/deps/smtp.sh)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Makes `ca.pem` (a throw-away CA) and `server.pem` / `server.key` (signed by
/// it, SAN IP:127.0.0.1 and DNS:localhost) in `dir`.
fn make_certs(dir: &Path) {
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write server.ext");
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=novaha test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(dir, &ca);
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    openssl(dir, &csr);
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ],
    );
}

impl SmtpServer {
    /// Starts the server on a free port; panics (naming the install script)
    /// if python3-aiosmtpd or openssl is missing.
    pub fn start(opts: SmtpOptions) -> Self {
        let python = tool("NOVAHA_PYTHON3", &["/usr/bin/python3"], "python3");
        let check = Command::new(&python)
            .args(["-c", "import aiosmtpd"])
            .output()
            .expect("run python3");
        assert!(
            check.status.success(),
            "{} cannot import aiosmtpd: run scripts/deps/smtp.sh (Debian python3-aiosmtpd)",
            python.display()
        );
        let dir = tempfile::Builder::new()
            .prefix("novaha-smtp-")
            .tempdir()
            .expect("temp dir");
        let mail = dir.path().join("mail");
        std::fs::create_dir(&mail).expect("mail dir");
        std::fs::write(dir.path().join("server.py"), SERVER_PY).expect("write server.py");
        if opts.starttls {
            make_certs(dir.path());
        }
        let port = free_port();
        let mut cfg = format!(
            "{{\"dir\": {}, \"port\": {port}, \"reject\": [{}]",
            json_str(&mail.to_string_lossy()),
            opts.reject
                .iter()
                .map(|r| json_str(r))
                .collect::<Vec<_>>()
                .join(", ")
        );
        if opts.starttls {
            cfg.push_str(&format!(
                ", \"tls\": {{\"cert\": {}, \"key\": {}}}",
                json_str(&dir.path().join("server.pem").to_string_lossy()),
                json_str(&dir.path().join("server.key").to_string_lossy())
            ));
        }
        if let Some((u, p)) = &opts.auth {
            cfg.push_str(&format!(", \"auth\": [{}, {}]", json_str(u), json_str(p)));
        }
        cfg.push('}');
        std::fs::write(dir.path().join("config.json"), cfg).expect("write config.json");
        let mut s = Self {
            dir,
            port,
            python,
            child: None,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .expect("open server.log");
        let mut cmd = Command::new(&self.python);
        cmd.arg(self.dir.path().join("server.py"))
            .arg(self.dir.path().join("config.json"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log);
        let mut child = ChildGuard::spawn("aiosmtpd", &mut cmd);
        let port = self.port;
        let up = wait_until(Duration::from_secs(15), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() || !child.is_running()
        });
        assert!(
            up && child.is_running(),
            "aiosmtpd did not start on 127.0.0.1:{port}; log:\n{}",
            std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
        );
        wait_for_tcp(port, Duration::from_secs(5), "aiosmtpd");
        self.child = Some(child);
    }

    /// The port it listens on (kept across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `smtp://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// The CA that signed the server certificate (STARTTLS only).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Kills the server (connections are refused until `restart`).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill();
        }
    }

    /// Starts it again on the same port, keeping the captured messages.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Every message accepted so far, in arrival order.
    pub fn messages(&self) -> Vec<CapturedMessage> {
        let mail = self.dir.path().join("mail");
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(&mail)
            .expect("read mail dir")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("msg-"))
            })
            .collect();
        dirs.sort();
        dirs.iter()
            .map(|d| {
                let read = |name: &str| std::fs::read_to_string(d.join(name)).ok();
                let get = |name: &str| read(name).unwrap_or_default();
                CapturedMessage {
                    mail_from: get("from"),
                    rcpt_tos: get("rcpt").lines().map(str::to_owned).collect(),
                    subject: get("subject"),
                    message_id: get("message_id"),
                    to_header: get("to"),
                    text: read("text"),
                    html: read("html"),
                    raw: get("raw.eml"),
                    tls: get("tls") == "yes",
                    auth_user: read("auth").filter(|a| !a.is_empty()),
                }
            })
            .collect()
    }

    /// Waits until at least `n` messages arrived, then returns them all.
    pub fn wait_for_messages(&self, n: usize, timeout: Duration) -> Vec<CapturedMessage> {
        let ok = wait_until(timeout, || self.messages().len() >= n);
        let got = self.messages();
        assert!(
            ok,
            "expected {n} messages within {timeout:?}, got {}",
            got.len()
        );
        got
    }
}
