//! A raw HTTP/1.1 peer that answers with a huge body (a broken BMC, a
//! proxy streaming an error page forever, a hostile endpoint), for the tests
//! that check a client stops reading at its bound instead of holding the
//! whole answer in memory. It counts the body bytes it managed to write, so
//! a test can tell "the client stopped early" from "the client read it all".
//!
//! Plain TCP on a free loopback port, tasks on the test's tokio runtime
//! (aborted when dropped); each connection serves requests one after the
//! other (keep-alive) until the client closes it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The body of a [`Reply`].
#[derive(Clone, Debug)]
pub enum Body {
    /// These bytes, as they are.
    Bytes(Vec<u8>),
    /// This many bytes of `{` (JSON that never parses), written in 64 KiB
    /// pieces and counted (see [`HugeBody::bounded`]).
    Filler(usize),
}

/// What the peer answers to one request.
#[derive(Clone, Debug)]
pub struct Reply {
    /// The HTTP status code.
    pub status: u16,
    /// Extra headers (`Content-Length` is always set from the body).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Body,
}

impl Reply {
    /// `status` with `size` bytes of filler.
    pub fn filler(status: u16, size: usize) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Body::Filler(size),
        }
    }

    /// `status` with a JSON body.
    pub fn json(status: u16, value: &serde_json::Value) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Body::Bytes(value.to_string().into_bytes()),
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
}

#[derive(Default)]
struct Stats {
    served: AtomicU64,
    open: AtomicUsize,
    /// The longest filler answered so far.
    longest: AtomicUsize,
}

type Route = dyn Fn(&str, &str) -> Reply + Send + Sync;

/// The running peer; stopped (its tasks aborted) when dropped.
pub struct HugeBody {
    url: String,
    stats: Arc<Stats>,
    accept: JoinHandle<()>,
}

impl std::fmt::Debug for HugeBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HugeBody").field("url", &self.url).finish()
    }
}

impl HugeBody {
    /// Answers every request with `status` and `size` bytes of filler.
    pub async fn serve(status: u16, size: usize) -> Self {
        Self::start(move |_, _| Reply::filler(status, size)).await
    }

    /// Answers each request with `route(method, path)`.
    pub async fn start(route: impl Fn(&str, &str) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a free loopback port");
        let url = format!(
            "http://{}",
            listener
                .local_addr()
                .expect("a bound listener has an address")
        );
        let stats = Arc::new(Stats::default());
        let route: Arc<Route> = Arc::new(route);
        let s = stats.clone();
        let accept = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                s.open.fetch_add(1, Ordering::SeqCst);
                let (s, route) = (s.clone(), route.clone());
                tokio::spawn(async move {
                    let _ = connection(sock, &s, &*route).await;
                    s.open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Self { url, stats, accept }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Awaits `call` (a client's request to this peer) and checks the client
    /// stopped reading early: bounded to 30 s (a client that reads the whole
    /// body fails here instead of hanging the suite), then, once the client
    /// has closed every connection, the peer must have written less than
    /// half of its longest filler (the rest of what it wrote sits unread in
    /// socket buffers). Gives the call's output.
    pub async fn bounded<T>(&self, call: impl Future<Output = T>) -> T {
        let out = tokio::time::timeout(Duration::from_secs(30), call)
            .await
            .expect("the client answers within 30 s");
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.stats.open.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let served = self.stats.served.load(Ordering::SeqCst);
        let longest = self.stats.longest.load(Ordering::SeqCst);
        assert!(
            served < (longest / 2) as u64,
            "the client read {served} bytes of a {longest}-byte body"
        );
        out
    }
}

impl Drop for HugeBody {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Serves requests on one connection until the client closes it or a write
/// fails (the client stopped reading and went away).
async fn connection(mut sock: TcpStream, stats: &Stats, route: &Route) -> std::io::Result<()> {
    let mut buf = Vec::new();
    loop {
        let Some((method, path, rest)) = read_request(&mut sock, &mut buf).await? else {
            return Ok(());
        };
        buf = rest;
        let reply = route(&method, &path);
        let len = match &reply.body {
            Body::Bytes(b) => b.len(),
            Body::Filler(n) => {
                stats.longest.fetch_max(*n, Ordering::SeqCst);
                *n
            }
        };
        let mut head = format!(
            "HTTP/1.1 {} Status\r\nContent-Length: {len}\r\n",
            reply.status
        );
        if !reply
            .headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("content-type"))
        {
            head.push_str("Content-Type: application/json\r\n");
        }
        for (n, v) in &reply.headers {
            head.push_str(&format!("{n}: {v}\r\n"));
        }
        head.push_str("\r\n");
        sock.write_all(head.as_bytes()).await?;
        match reply.body {
            Body::Bytes(b) => sock.write_all(&b).await?,
            Body::Filler(n) => {
                let piece = vec![b'{'; 64 << 10];
                let mut left = n;
                while left > 0 {
                    let k = left.min(piece.len());
                    sock.write_all(&piece[..k]).await?;
                    stats.served.fetch_add(k as u64, Ordering::SeqCst);
                    left -= k;
                }
            }
        }
    }
}

/// Reads one request (head and `Content-Length` body); `None` when the
/// client closed the connection. `buf` holds bytes already read; what
/// follows this request is given back.
async fn read_request(
    sock: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<(String, String, Vec<u8>)>> {
    let mut chunk = [0u8; 8192];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = sock.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut words = head.split_whitespace();
    let method = words.next().unwrap_or_default().to_owned();
    let path = words.next().unwrap_or_default().to_owned();
    let body_len = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    while buf.len() < end + body_len {
        let n = sock.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(Some((method, path, buf.split_off(end + body_len))))
}
