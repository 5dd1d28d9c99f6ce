//! The HTTP port: Prometheus metrics, liveness, readiness that reflects
//! quorum, and status as JSON, for operators and orchestrators; and the
//! governance console (`crate::console`). On a TLS node the port speaks
//! both: TLS with the node's certificate (client certificates verified when
//! a browser presents one) and plaintext, which gets only what needs no
//! identity (/metrics, /healthz, /readyz, loopback /status) and a pointer
//! to https for the console.

use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use std::net::SocketAddr;
use std::sync::OnceLock;

use crate::node::Node;
use crate::telemetry;

static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide Prometheus recorder (once), with every metric
/// of `telemetry::METRICS` described and registered. Returns false if
/// another recorder was installed first.
pub fn install_metrics_recorder() -> bool {
    if PROMETHEUS.get().is_some() {
        return true;
    }
    let mut builder = metrics_exporter_prometheus::PrometheusBuilder::new();
    for m in telemetry::METRICS
        .iter()
        .filter(|m| m.kind == telemetry::Kind::Histogram)
    {
        let matcher = metrics_exporter_prometheus::Matcher::Full(m.name.into());
        builder = match builder.set_buckets_for_metric(matcher, telemetry::buckets(m)) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!("metrics recorder not installed: {e}");
                return false;
            }
        };
    }
    match builder.install_recorder() {
        Ok(handle) => {
            let _ = PROMETHEUS.set(handle);
            telemetry::describe_all();
            true
        }
        Err(e) => {
            tracing::warn!("metrics recorder not installed: {e}");
            false
        }
    }
}

/// Who is at the other end of an HTTP connection (axum's connect info).
#[derive(Debug, Clone)]
pub struct HttpPeer(pub quorate_raft::tls::PeerInfo);

impl HttpPeer {
    /// The caller's address (loopback when unknown: it cannot be).
    pub fn addr(&self) -> SocketAddr {
        self.0
            .remote
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)))
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, HttpListener>>
    for HttpPeer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, HttpListener>) -> HttpPeer {
        stream.remote_addr().clone()
    }
}

/// The HTTP port's connections, TLS or plain (`tls::incoming_with`).
pub struct HttpListener {
    incoming: tokio_stream::wrappers::ReceiverStream<std::io::Result<ServerConn>>,
    local: SocketAddr,
}

use quorate_raft::tls::ServerConn;

impl HttpListener {
    pub fn new(
        listener: tokio::net::TcpListener,
        tls: Option<std::sync::Arc<quorate_raft::tls::TlsContext>>,
    ) -> HttpListener {
        let local = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        HttpListener {
            incoming: quorate_raft::tls::incoming_with(
                listener,
                tls,
                quorate_raft::tls::ClientAuth::Optional,
            ),
            local,
        }
    }
}

impl axum::serve::Listener for HttpListener {
    type Io = ServerConn;
    type Addr = HttpPeer;

    async fn accept(&mut self) -> (ServerConn, HttpPeer) {
        use tokio_stream::StreamExt;
        loop {
            match self.incoming.next().await {
                Some(Ok(conn)) => {
                    let peer = HttpPeer(conn.info().clone());
                    return (conn, peer);
                }
                Some(Err(e)) => tracing::debug!("HTTP accept: {e}"),
                // The accept loop ended (shutdown): accept nothing more.
                None => std::future::pending::<()>().await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<HttpPeer> {
        Ok(HttpPeer(quorate_raft::tls::PeerInfo {
            remote: Some(self.local),
            identity: None,
            tls: false,
        }))
    }
}

pub fn router(node: Node) -> Router {
    let ops = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/status", get(status));
    let ops = ops.merge(crate::rest::routes()).route(
        crate::admission::PATH,
        axum::routing::post(crate::admission::admit_review),
    );
    let app = if node.config().console.enabled {
        ops.merge(crate::console::routes())
    } else {
        ops
    };
    app.with_state(node)
}

async fn metrics_text() -> impl IntoResponse {
    match PROMETHEUS.get() {
        Some(h) => (
            StatusCode::OK,
            [("content-type", "text/plain; version=0.0.4")],
            h.render(),
        ),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            [("content-type", "text/plain; version=0.0.4")],
            "# metrics recorder not installed\n".to_string(),
        ),
    }
}

/// 200 only while the node can prove it is part of a quorum; a contained
/// node is not ready, so load balancers route around it.
async fn readyz(State(node): State<Node>) -> impl IntoResponse {
    match node.containment() {
        None => (StatusCode::OK, Json(serde_json::json!({"ready": true}))),
        Some((reason, msg)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"ready": false, "reason": reason.code(), "message": msg})),
        ),
    }
}

/// The cluster's layout (members, addresses, keys, regions, lag) is not
/// for anyone who can reach the port: served to loopback callers only,
/// unless `public_status = true`. Remote operators use `quorate status`,
/// which goes through mutual TLS.
async fn status(
    State(node): State<Node>,
    ConnectInfo(peer): ConnectInfo<HttpPeer>,
) -> axum::response::Response {
    if !status_visible(peer.addr(), node.config().public_status) {
        return (
            StatusCode::FORBIDDEN,
            Json(serde_json::json!({
                "error": "PERMISSION_DENIED",
                "message": "GET /status is served to loopback callers only; use `quorate status` \
                            (mutual TLS), or set public_status = true in the node config",
            })),
        )
            .into_response();
    }
    Json(node.status()).into_response()
}

/// Whether `/status` is served to a caller at `peer`.
fn status_visible(peer: SocketAddr, public: bool) -> bool {
    public || peer.ip().is_loopback()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_is_for_loopback_callers_unless_public() {
        let local: SocketAddr = "127.0.0.1:5000".parse().unwrap_or_else(|e| panic!("{e}"));
        let local6: SocketAddr = "[::1]:5000".parse().unwrap_or_else(|e| panic!("{e}"));
        let remote: SocketAddr = "10.0.0.7:5000".parse().unwrap_or_else(|e| panic!("{e}"));
        assert!(status_visible(local, false));
        assert!(status_visible(local6, false));
        assert!(!status_visible(remote, false));
        assert!(status_visible(remote, true));
    }
}
