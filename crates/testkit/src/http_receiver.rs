//! A local HTTP receiver for webhook tests: listens on a free loopback port
//! (bound to port 0), records every request (method, path, headers, body and
//! the status it answered), and can be told to answer an error status to the
//! next N requests ("500 then success"). Plain HTTP/1.1, one request per
//! connection (`Connection: close`), served from one background thread;
//! stopped when dropped.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::process::wait_until;

/// One request as received.
#[derive(Clone, Debug)]
pub struct ReceivedRequest {
    /// `POST`, `GET`, ...
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Headers, names lowercased, in arrival order.
    pub headers: Vec<(String, String)>,
    /// The body bytes.
    pub body: Vec<u8>,
    /// The status code it was answered with.
    pub answered: u16,
}

impl ReceivedRequest {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as UTF-8 text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

#[derive(Default)]
struct State {
    requests: Vec<ReceivedRequest>,
    /// (status, how many more requests get it)
    fail: Option<(u16, usize)>,
}

/// The running receiver.
pub struct HttpReceiver {
    port: u16,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for HttpReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpReceiver")
            .field("port", &self.port)
            .finish()
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

fn handle(stream: TcpStream, state: &Mutex<State>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    if method.is_empty() {
        return Ok(()); // a bare connect (readiness probe or shutdown poke)
    }
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 {
            break;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((n, v)) = h.split_once(':') {
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let len: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body)?;
    let answered = {
        let mut st = state.lock().expect("receiver state");
        let status = match &mut st.fail {
            Some((status, n)) if *n > 0 => {
                *n -= 1;
                *status
            }
            _ => 200,
        };
        st.requests.push(ReceivedRequest {
            method,
            path,
            headers,
            body,
            answered: status,
        });
        status
    };
    let body = if answered == 200 {
        "ok"
    } else {
        "injected failure"
    };
    let mut w = stream;
    write!(
        w,
        "HTTP/1.1 {answered} {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        reason(answered),
        body.len()
    )?;
    w.flush()
}

impl HttpReceiver {
    /// Starts listening on 127.0.0.1, port 0.
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local addr").port();
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if sp.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(c) = conn {
                    let _ = handle(c, &st);
                }
            }
        });
        Self {
            port,
            state,
            stop,
            thread: Some(thread),
        }
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Answer `status` to the next `n` requests, then 200 again.
    pub fn fail_next(&self, n: usize, status: u16) {
        self.state.lock().expect("receiver state").fail = Some((status, n));
    }

    /// Every request so far (also the ones answered with an error).
    pub fn requests(&self) -> Vec<ReceivedRequest> {
        self.state.lock().expect("receiver state").requests.clone()
    }

    /// Waits until at least `n` requests arrived, then returns them all.
    pub fn wait_for_requests(&self, n: usize, timeout: Duration) -> Vec<ReceivedRequest> {
        let ok = wait_until(timeout, || self.requests().len() >= n);
        let got = self.requests();
        assert!(
            ok,
            "expected {n} requests within {timeout:?}, got {}",
            got.len()
        );
        got
    }
}

impl Drop for HttpReceiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept so the thread sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
