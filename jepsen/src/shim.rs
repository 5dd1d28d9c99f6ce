//! The message shim: delay, reordering and duplication of node-to-node
//! RPCs, which this kernel cannot do (it has no `netem` qdisc).
//!
//! One shim process runs inside each node's namespace
//! (`quorate-jepsen shim`). An iptables `REDIRECT` in that namespace sends
//! every TCP connection from a peer node to the node's gRPC port into the
//! shim instead; the shim speaks HTTP/2 on both sides and forwards each
//! request to its own node as a separate request. Because it works on
//! whole gRPC messages rather than TCP segments, its faults are the ones a
//! Raft implementation must survive:
//! - **delay**: each request waits a uniformly random time before it is
//!   forwarded, so concurrent requests on one connection overtake each
//!   other (reordering);
//! - **duplicate**: a request is also forwarded a second time, a little
//!   later, and that second answer is thrown away (a retransmitted
//!   AppendEntries, a vote delivered twice, a forwarded Authorize replayed).
//!
//! Client traffic (from the bridge address) is not redirected, so what a
//! client observes about a node is the node's own answer.
//!
//! The harness controls a shim through its rules file (JSON [`Rules`],
//! replaced atomically) and learns what it did from its stats file (JSON
//! [`Stats`]), so a nemesis can tell a fault that took effect from one that
//! never did.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::client::conn::http2 as client_h2;
use hyper::server::conn::http2 as server_h2;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};

/// The port a shim listens on inside its node's namespace.
pub const SHIM_PORT: u16 = 7111;

/// What the shim does to each request; the default forwards untouched.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Rules {
    /// Each request waits uniformly in `0..=delay_ms` before forwarding.
    #[serde(default)]
    pub delay_ms: u64,
    /// Probability that a request is forwarded a second time.
    #[serde(default)]
    pub duplicate: f64,
}

/// What the shim has done since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub forwarded: u64,
    pub delayed: u64,
    pub duplicated: u64,
    /// Requests the node did not answer (it was down or the connection
    /// broke); the peer sees an error, as it would without the shim.
    pub upstream_errors: u64,
}

#[derive(Debug, Default)]
struct Counters {
    forwarded: AtomicU64,
    delayed: AtomicU64,
    duplicated: AtomicU64,
    upstream_errors: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> Stats {
        Stats {
            forwarded: self.forwarded.load(Ordering::Relaxed),
            delayed: self.delayed.load(Ordering::Relaxed),
            duplicated: self.duplicated.load(Ordering::Relaxed),
            upstream_errors: self.upstream_errors.load(Ordering::Relaxed),
        }
    }
}

#[derive(Debug)]
struct Shared {
    rules: Mutex<Rules>,
    rng: Mutex<rand::rngs::StdRng>,
    counters: Counters,
}

impl Shared {
    /// This request's delay and, if it is duplicated, the duplicate's.
    fn roll(&self) -> (Duration, Option<Duration>) {
        let rules = self.rules.lock().map(|r| *r).unwrap_or_default();
        let Ok(mut rng) = self.rng.lock() else {
            return (Duration::ZERO, None);
        };
        let delay = Duration::from_millis(rng.gen_range(0..=rules.delay_ms));
        let dup = (rules.duplicate > 0.0 && rng.gen_bool(rules.duplicate.min(1.0)))
            .then(|| delay + Duration::from_millis(rng.gen_range(1..=50)));
        (delay, dup)
    }
}

/// Where the harness finds node `dir`'s shim files.
pub fn rules_path(dir: &Path) -> PathBuf {
    dir.join("shim-rules.json")
}
pub fn stats_path(dir: &Path) -> PathBuf {
    dir.join("shim-stats.json")
}

/// Replaces the rules file atomically (the shim polls it).
pub fn write_rules(dir: &Path, rules: Rules) -> std::io::Result<()> {
    let tmp = dir.join("shim-rules.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec(&rules)?)?;
    std::fs::rename(tmp, rules_path(dir))
}

/// The shim's stats as last written (zero if none yet).
pub fn read_stats(dir: &Path) -> Stats {
    std::fs::read(stats_path(dir))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Runs a shim until killed: accepts on `listen`, forwards to `upstream`.
pub async fn serve(
    listen: SocketAddr,
    upstream: SocketAddr,
    dir: PathBuf,
    seed: u64,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    let shared = Arc::new(Shared {
        rules: Mutex::new(Rules::default()),
        rng: Mutex::new(rand::rngs::StdRng::seed_from_u64(seed)),
        counters: Counters::default(),
    });
    tokio::spawn(control_loop(shared.clone(), dir));
    loop {
        let (down, _) = listener.accept().await?;
        let shared = shared.clone();
        tokio::spawn(async move {
            // A node that is down refuses; so does its shim: the peer's
            // connection is dropped and it reconnects later, as it would.
            let Ok(up) = TcpStream::connect(upstream).await else {
                return;
            };
            let _ = up.set_nodelay(true);
            let _ = down.set_nodelay(true);
            let Ok((sender, up_conn)) =
                client_h2::handshake(TokioExecutor::new(), TokioIo::new(up)).await
            else {
                return;
            };
            let svc = service_fn(move |req| forward(req, sender.clone(), shared.clone(), upstream));
            let down_conn = server_h2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(down), svc);
            // When the node's side ends (it was killed), end the peer's side
            // too, so the peer reconnects instead of talking to a dead link.
            tokio::select! {
                _ = down_conn => {}
                _ = up_conn => {}
            }
        });
    }
}

/// Every 100 ms: read the rules file, write the stats file.
async fn control_loop(shared: Arc<Shared>, dir: PathBuf) {
    let mut last_stats = None;
    loop {
        if let Ok(bytes) = std::fs::read(rules_path(&dir))
            && let Ok(rules) = serde_json::from_slice::<Rules>(&bytes)
            && let Ok(mut r) = shared.rules.lock()
        {
            *r = rules;
        }
        let stats = shared.counters.snapshot();
        if last_stats != Some(stats) {
            let tmp = dir.join("shim-stats.json.tmp");
            if let Ok(b) = serde_json::to_vec(&stats)
                && std::fs::write(&tmp, b).is_ok()
                && std::fs::rename(&tmp, stats_path(&dir)).is_ok()
            {
                last_stats = Some(stats);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

type ShimBody =
    StreamBody<futures::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;

fn body(frames: Vec<Frame<Bytes>>) -> ShimBody {
    StreamBody::new(futures::stream::iter(
        frames.into_iter().map(Ok).collect::<Vec<_>>(),
    ))
}

fn bad_gateway() -> Response<ShimBody> {
    let mut r = Response::new(body(Vec::new()));
    *r.status_mut() = StatusCode::BAD_GATEWAY;
    r
}

/// A copy of the request with its (already read) body, addressed to the
/// node.
fn copy(
    parts: &hyper::http::request::Parts,
    bytes: &Bytes,
    upstream: SocketAddr,
) -> Option<Request<Full<Bytes>>> {
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut req = Request::builder()
        .method(parts.method.clone())
        .uri(format!("http://{upstream}{path}"))
        .version(parts.version)
        .body(Full::new(bytes.clone()))
        .ok()?;
    *req.headers_mut() = parts.headers.clone();
    Some(req)
}

async fn forward(
    req: Request<Incoming>,
    sender: client_h2::SendRequest<Full<Bytes>>,
    shared: Arc<Shared>,
    upstream: SocketAddr,
) -> Result<Response<ShimBody>, Infallible> {
    let c = &shared.counters;
    let (parts, incoming) = req.into_parts();
    let Ok(collected) = incoming.collect().await else {
        c.upstream_errors.fetch_add(1, Ordering::Relaxed);
        return Ok(bad_gateway());
    };
    let bytes = collected.to_bytes();
    let (delay, duplicate) = shared.roll();
    if let Some(later) = duplicate
        && let Some(dup) = copy(&parts, &bytes, upstream)
    {
        c.duplicated.fetch_add(1, Ordering::Relaxed);
        let mut s = sender.clone();
        tokio::spawn(async move {
            tokio::time::sleep(later).await;
            // The duplicate's answer goes nowhere, like a retransmission's.
            if let Ok(resp) = s.send_request(dup).await {
                let _ = resp.into_body().collect().await;
            }
        });
    }
    if !delay.is_zero() {
        c.delayed.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(delay).await;
    }
    let Some(req) = copy(&parts, &bytes, upstream) else {
        c.upstream_errors.fetch_add(1, Ordering::Relaxed);
        return Ok(bad_gateway());
    };
    let mut s = sender;
    let resp = match s.send_request(req).await {
        Ok(r) => r,
        Err(_) => {
            c.upstream_errors.fetch_add(1, Ordering::Relaxed);
            return Ok(bad_gateway());
        }
    };
    let (rparts, rbody) = resp.into_parts();
    let Ok(collected) = rbody.collect().await else {
        c.upstream_errors.fetch_add(1, Ordering::Relaxed);
        return Ok(bad_gateway());
    };
    // gRPC puts its status in the trailers: keep them.
    let trailers = collected.trailers().cloned();
    let mut frames = vec![Frame::data(collected.to_bytes())];
    if let Some(t) = trailers {
        frames.push(Frame::trailers(t));
    }
    c.forwarded.fetch_add(1, Ordering::Relaxed);
    Ok(Response::from_parts(rparts, body(frames)))
}
