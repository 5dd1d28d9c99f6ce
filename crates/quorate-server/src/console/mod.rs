//! The governance console (docs/CONSOLE.md): the page and its scripts,
//! compiled into the binary, and the JSON API under `/console/api/` that
//! the page is a client of.
//!
//! Access is the gRPC API's, decided by the same `Node::admit_client`: a
//! browser's identity is its client certificate (verified in the TLS
//! handshake) or a console token (`quorate_raft::token`), and each route
//! needs the `Access` of the RPC it mirrors. On a TLS node the console is
//! served over TLS only; a plaintext connection to the same port gets a
//! pointer to https and no data.

use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use quorate_core::ErrorCode;
use quorate_raft::tls::{PeerIdentity, PeerInfo, Principal, Role};

use crate::error::ApiError;
use crate::http::HttpPeer;
use crate::node::{Access, Node};

mod health;
mod views;

pub(crate) use health::Sample;

/// The console's routes (state: the node).
pub(crate) fn routes() -> Router<Node> {
    Router::new()
        .route("/", get(index))
        .route("/console/{file}", get(asset))
        .route("/console/api/session", get(session))
        .route("/console/api/health", get(health::health))
        .route("/console/api/timeline", get(health::timeline))
        .route("/console/api/decisions", get(views::decisions))
        .route("/console/api/decisions/{index}", get(views::decision))
        .route("/console/api/tail", get(views::tail))
        .route("/console/api/lineage", get(views::trace))
        .route("/console/api/lineage/{index}", get(views::lineage))
        .route("/console/api/receipts/{index}", get(views::receipt))
        .route("/console/api/trust", get(views::trust))
        .route("/console/api/policies", get(views::policies))
        .route("/console/api/whatif", post(views::whatif))
        .route(
            "/console/api/policies/{domain}/{version}/activate",
            post(views::activate),
        )
        .route("/console/api/rollouts/{id}/promote", post(views::promote))
        .route("/console/api/rollouts/{id}/rollback", post(views::rollback))
        .fallback(not_found)
}

/// The page's files: (name under /console/, content type, text).
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../../console/index.html"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("../../console/app.css"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../console/app.js"),
    ),
    (
        "api.js",
        "text/javascript; charset=utf-8",
        include_str!("../../console/api.js"),
    ),
    (
        "model.js",
        "text/javascript; charset=utf-8",
        include_str!("../../console/model.js"),
    ),
    (
        "graph.js",
        "text/javascript; charset=utf-8",
        include_str!("../../console/graph.js"),
    ),
    (
        "diff.js",
        "text/javascript; charset=utf-8",
        include_str!("../../console/diff.js"),
    ),
    (
        "proof.js",
        "text/javascript; charset=utf-8",
        include_str!("../../console/proof.js"),
    ),
];

/// Scripts only from this origin, no framing, nothing sent elsewhere.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; \
                   base-uri 'none'; form-action 'self'";

fn asset_response(content_type: &str, body: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(content_type) {
        h.insert(header::CONTENT_TYPE, v);
    }
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

async fn index(
    State(node): State<Node>,
    ConnectInfo(peer): ConnectInfo<HttpPeer>,
    headers: HeaderMap,
) -> Response {
    if node.inner.tls.is_some() && !peer.0.tls {
        // A TLS node's console is only for TLS connections.
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        let to = format!("https://{host}/");
        return match HeaderValue::from_str(&to) {
            Ok(v) if !host.is_empty() => {
                (StatusCode::PERMANENT_REDIRECT, [(header::LOCATION, v)]).into_response()
            }
            _ => (
                StatusCode::FORBIDDEN,
                "the console is served over TLS on this port: open https://<this address>/\n",
            )
                .into_response(),
        };
    }
    match ASSETS.iter().find(|(n, _, _)| *n == "index.html") {
        Some((_, ct, body)) => asset_response(ct, body),
        None => not_found().await,
    }
}

async fn asset(axum::extract::Path(file): axum::extract::Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == file) {
        Some((_, ct, body)) => asset_response(ct, body),
        None => not_found().await,
    }
}

async fn not_found() -> Response {
    HttpError::new(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "no such page: the console is at /, its API under /console/api/ (docs/CONSOLE.md)",
    )
    .into_response()
}

/// An error as the HTTP APIs (console, REST) answer it: `{"error": CODE,
/// "message": ...}` with the HTTP status for the code.
#[derive(Debug, Clone)]
pub(crate) struct HttpError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl HttpError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> HttpError {
        HttpError {
            status,
            code,
            message: message.into(),
        }
    }

    fn unauthenticated(message: impl Into<String>) -> HttpError {
        HttpError::new(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", message)
    }

    pub(crate) fn invalid(message: impl Into<String>) -> HttpError {
        HttpError::from(ApiError::invalid(message))
    }
}

impl From<ApiError> for HttpError {
    fn from(e: ApiError) -> HttpError {
        let status = match e.code {
            ErrorCode::InvalidArgument | ErrorCode::InvalidPolicy => StatusCode::BAD_REQUEST,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::PermissionDenied => StatusCode::FORBIDDEN,
            ErrorCode::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::FailedPrecondition => StatusCode::CONFLICT,
            ErrorCode::Unavailable | ErrorCode::Contained => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::CommitTimeout => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        HttpError {
            status,
            code: e.code.code(),
            message: e.message,
        }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            Json(serde_json::json!({"error": self.code, "message": self.message})),
        )
            .into_response();
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        r
    }
}

/// How a caller proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    /// The node runs without TLS: everything is open, as over gRPC.
    Insecure,
    Certificate,
    Token,
    Anonymous,
}

impl Via {
    fn as_str(self) -> Option<&'static str> {
        match self {
            Via::Insecure => Some("insecure"),
            Via::Certificate => Some("certificate"),
            Via::Token => Some("token"),
            Via::Anonymous => None,
        }
    }
}

/// A console caller: the identity the role checks see.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    info: PeerInfo,
    via: Via,
    expires_ms: Option<u64>,
}

impl Caller {
    fn identity(&self) -> Option<&PeerIdentity> {
        self.info.identity.as_ref()
    }
}

/// Who is calling: a token (`Authorization: Bearer`) if one is sent, else
/// the connection's client certificate, else nobody. A token that does not
/// verify is refused outright, never treated as anonymous.
pub(crate) fn caller(
    node: &Node,
    peer: &HttpPeer,
    headers: &HeaderMap,
) -> Result<Caller, HttpError> {
    let Some(tls) = node.inner.tls.as_ref() else {
        return Ok(Caller {
            info: peer.0.clone(),
            via: Via::Insecure,
            expires_ms: None,
        });
    };
    if !peer.0.tls {
        return Err(HttpError::unauthenticated(
            "this node serves the console over TLS: use https:// on this port",
        ));
    }
    if let Some(auth) = headers.get(header::AUTHORIZATION) {
        let token = auth
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                HttpError::unauthenticated(
                    "the Authorization header must be `Bearer <console token>`",
                )
            })?;
        let cfg = &node.config().console;
        let accepted = tls
            .token_verifier(
                &node.config().cluster_id,
                cfg.token_max_ttl_s.saturating_mul(1000),
            )
            .verify(token.trim(), crate::node::now_ms())
            .map_err(|e| {
                metrics::counter!("quorate_console_tokens_refused_total").increment(1);
                HttpError::unauthenticated(format!(
                    "{e}; sign in again with `quorate console login --role auditor`"
                ))
            })?;
        return Ok(Caller {
            info: PeerInfo {
                remote: peer.0.remote,
                identity: Some(accepted.identity),
                tls: true,
            },
            via: Via::Token,
            expires_ms: Some(accepted.expires_ms),
        });
    }
    let via = if peer.0.identity.is_some() {
        Via::Certificate
    } else {
        Via::Anonymous
    };
    Ok(Caller {
        info: peer.0.clone(),
        via,
        expires_ms: None,
    })
}

/// Refuses a caller whose identity may not call `rpc` over gRPC
/// (invariant 7: the console grants nothing the API would not).
pub(crate) fn admit(
    node: &Node,
    caller: &Caller,
    rpc: &'static str,
    access: Access,
) -> Result<(), HttpError> {
    if caller.via == Via::Anonymous {
        return Err(HttpError::unauthenticated(format!(
            "sign in first: this needs {}. `quorate console login --role auditor` prints a URL \
             that signs this browser in, or present a client certificate of the cluster",
            needs(access)
        )));
    }
    node.admit_client(Some(&caller.info), rpc, access)
        .map_err(HttpError::from)
}

fn needs(access: Access) -> &'static str {
    match access {
        Access::Administer => "an admin identity",
        Access::Audit | Access::OwnReceipt => "an auditor or admin identity",
        Access::Decide => "an agent identity",
        Access::Probe => "an agent or admin identity",
        Access::Read => "an identity of this cluster",
    }
}

/// What an identity may do, without rate-limiting it (for the page to show
/// or hide views; every route checks again).
fn can(identity: Option<&PeerIdentity>, via: Via, public_health: bool) -> serde_json::Value {
    let (health, audit, administer) = match (via, identity.map(|i| &i.principal)) {
        (Via::Insecure, _) => (true, true, true),
        (_, Some(Principal::Node(_))) => (true, true, false),
        (_, Some(Principal::Client { role, .. })) => match role {
            Role::Admin => (true, true, true),
            Role::Auditor => (true, true, false),
            Role::Agent => (true, false, false),
        },
        (_, None) => (public_health, false, false),
    };
    serde_json::json!({"health": health, "audit": audit, "administer": administer})
}

async fn session(
    State(node): State<Node>,
    ConnectInfo(peer): ConnectInfo<HttpPeer>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, HttpError> {
    let c = caller(&node, &peer, &headers)?;
    let public_health = node.config().console.public_health;
    let role = c.identity().map(|i| match &i.principal {
        Principal::Node(_) => "node",
        Principal::Client { role, .. } => role.as_str(),
    });
    Ok(Json(serde_json::json!({
        "cluster_id": node.config().cluster_id,
        "node_id": node.id(),
        "tls": node.inner.tls.is_some(),
        "public_health": public_health,
        "identity": c.identity().map(|i| i.to_string()),
        "role": role,
        "via": c.via.as_str(),
        "expires_ms": c.expires_ms,
        "can": can(c.identity(), c.via, public_health),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(principal: Principal) -> PeerIdentity {
        PeerIdentity {
            cluster_id: "dev".into(),
            principal,
        }
    }

    #[test]
    fn the_page_is_told_what_each_role_may_see() {
        let role = |r| {
            id(Principal::Client {
                role: r,
                name: "x".into(),
            })
        };
        let flags = |v: serde_json::Value| {
            (
                v["health"] == true,
                v["audit"] == true,
                v["administer"] == true,
            )
        };
        let admin = role(Role::Admin);
        let auditor = role(Role::Auditor);
        let agent = role(Role::Agent);
        let node = id(Principal::Node(2));
        assert_eq!(
            flags(can(Some(&admin), Via::Token, false)),
            (true, true, true)
        );
        assert_eq!(
            flags(can(Some(&auditor), Via::Certificate, false)),
            (true, true, false)
        );
        assert_eq!(
            flags(can(Some(&agent), Via::Token, false)),
            (true, false, false)
        );
        assert_eq!(
            flags(can(Some(&node), Via::Certificate, false)),
            (true, true, false)
        );
        assert_eq!(
            flags(can(None, Via::Anonymous, false)),
            (false, false, false)
        );
        assert_eq!(flags(can(None, Via::Anonymous, true)), (true, false, false));
        assert_eq!(flags(can(None, Via::Insecure, false)), (true, true, true));
    }

    #[test]
    fn every_asset_is_served_with_a_content_type_and_the_csp() {
        for (name, ct, body) in ASSETS {
            assert!(!body.is_empty(), "{name} is empty");
            let r = asset_response(ct, body);
            let h = r.headers();
            assert_eq!(
                h.get(header::CONTENT_TYPE).map(|v| v.as_bytes()),
                Some(ct.as_bytes())
            );
            assert!(h.get(header::CONTENT_SECURITY_POLICY).is_some(), "{name}");
        }
        // The page loads only assets that are served.
        let index = ASSETS
            .iter()
            .find(|(n, _, _)| *n == "index.html")
            .map(|a| a.2)
            .unwrap_or_default();
        for part in index.split("/console/").skip(1) {
            let file: String = part
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '-')
                .collect();
            if file.ends_with(".js") || file.ends_with(".css") {
                assert!(
                    ASSETS.iter().any(|(n, _, _)| *n == file),
                    "index.html loads /console/{file}, which is not embedded"
                );
            }
        }
        // ... and every module a script imports is served too.
        for (name, _, body) in ASSETS.iter().filter(|a| a.0.ends_with(".js")) {
            for part in body.split("from './").skip(1) {
                let file: String = part.chars().take_while(|c| *c != '\'').collect();
                assert!(
                    ASSETS.iter().any(|(n, _, _)| *n == file),
                    "{name} imports ./{file}, which is not embedded"
                );
            }
        }
    }
}
