//! REST/JSON on the HTTP port, for callers without gRPC (docs/REST.md,
//! described by docs/openapi.yaml). The same operations, roles and errors
//! as the gRPC API: every route calls the node operation its RPC calls,
//! after the same `Node::admit_client` (a client certificate, or a console
//! token as `Authorization: Bearer`). A decision, ALLOW or DENY, is a 200
//! answer; only a request that could not be decided is an error.

use axum::Router;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use quorate_core::Decision;
use quorate_proto::v1;

use crate::console::{HttpError, admit, caller};
use crate::http::HttpPeer;
use crate::node::{Access, Answer, Node};

/// Every route: (method, path in OpenAPI form). docs/openapi.yaml lists
/// exactly these (a test checks it).
pub const ROUTES: &[(&str, &str)] = &[
    ("post", "/v1/authorize"),
    ("get", "/v1/decisions/{index}"),
    ("get", "/v1/receipts/{index}"),
    ("get", "/v1/receipts"),
    ("get", "/v1/openapi.yaml"),
];

/// The OpenAPI document of these routes.
pub const OPENAPI: &str = include_str!("../../../docs/openapi.yaml");

pub(crate) fn routes() -> Router<Node> {
    Router::new()
        .route("/v1/authorize", post(authorize))
        .route("/v1/decisions/{index}", get(decision))
        .route("/v1/receipts/{index}", get(receipt))
        .route("/v1/receipts", get(own_receipt))
        .route("/v1/openapi.yaml", get(openapi))
}

/// `POST /v1/authorize`'s body: the gRPC `AuthorizeRequest`, with context
/// and entities as JSON values.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuthorizeBody {
    domain: String,
    request_id: String,
    principal: String,
    action: String,
    resource: String,
    #[serde(default)]
    context: Option<serde_json::Value>,
    #[serde(default)]
    entities: Option<serde_json::Value>,
    #[serde(default)]
    parent: Option<String>,
    #[serde(default)]
    trace_id: Option<String>,
}

/// An answer as JSON: `decision` is "ALLOW" only with the committed record
/// (and, attested, its receipt), exactly as over gRPC.
fn answer_json(a: &Answer, served_by: u64) -> serde_json::Value {
    serde_json::json!({
        "decision": match a.decision { Decision::Allow => "ALLOW", Decision::Deny => "DENY" },
        "reason": a.reason.map(|r| r.code()),
        "message": a.message,
        "record": a.record,
        "replayed": a.replayed,
        "served_by": served_by,
        // Verbatim text: a verifier hashes what it was given.
        "receipt_json": a.receipt_json.clone().or_else(|| {
            a.receipt.as_ref().and_then(|r| serde_json::to_string(r).ok())
        }),
    })
}

async fn authorize(
    State(node): State<Node>,
    ConnectInfo(peer): ConnectInfo<HttpPeer>,
    headers: HeaderMap,
    body: Result<Json<AuthorizeBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<serde_json::Value>, HttpError> {
    let c = caller(&node, &peer, &headers)?;
    admit(&node, &c, "Authorize", Access::Decide)?;
    let Json(b) = body.map_err(|e| HttpError::invalid(format!("the body: {}", e.body_text())))?;
    let wire = v1::AuthorizeRequest {
        domain: b.domain,
        request_id: b.request_id,
        principal: b.principal,
        action: b.action,
        resource: b.resource,
        context_json: b.context.map(|c| c.to_string()).unwrap_or_default(),
        entities_json: b.entities.map(|e| e.to_string()),
        parent: b.parent,
        trace_id: b.trace_id,
    };
    let req = quorate_proto::request_from_wire(wire, node.limits())
        .map_err(|e| HttpError::invalid(e.to_string()))?;
    let answer = node.authorize(req, crate::node::Door::Rest).await?;
    Ok(Json(answer_json(&answer, node.id())))
}

async fn decision(
    State(node): State<Node>,
    ConnectInfo(peer): ConnectInfo<HttpPeer>,
    headers: HeaderMap,
    Path(index): Path<u64>,
) -> Result<Json<serde_json::Value>, HttpError> {
    let c = caller(&node, &peer, &headers)?;
    admit(&node, &c, "GetDecision", Access::Audit)?;
    let rec = node.get_decision_by_index(index).await?;
    Ok(Json(serde_json::to_value(rec).map_err(|e| {
        HttpError::from(crate::error::ApiError::internal(e.to_string()))
    })?))
}

/// The receipt as the exact JSON text the gRPC API returns.
fn receipt_text(r: &quorate_core::Receipt) -> Result<Response, HttpError> {
    let text = serde_json::to_string(r)
        .map_err(|e| HttpError::from(crate::error::ApiError::internal(e.to_string())))?;
    let mut resp = text.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

async fn receipt(
    State(node): State<Node>,
    ConnectInfo(peer): ConnectInfo<HttpPeer>,
    headers: HeaderMap,
    Path(index): Path<u64>,
) -> Result<Response, HttpError> {
    let c = caller(&node, &peer, &headers)?;
    admit(&node, &c, "GetReceipt", Access::Audit)?;
    receipt_text(&node.receipt(index).await?)
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OwnReceiptQuery {
    domain: String,
    request_id: String,
}

/// By (domain, request id): the agent that chose the id may fetch it, as
/// over gRPC.
async fn own_receipt(
    State(node): State<Node>,
    ConnectInfo(peer): ConnectInfo<HttpPeer>,
    headers: HeaderMap,
    query: Result<Query<OwnReceiptQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, HttpError> {
    let c = caller(&node, &peer, &headers)?;
    admit(&node, &c, "GetReceipt", Access::OwnReceipt)?;
    let Query(q) = query.map_err(|e| {
        HttpError::invalid(format!(
            "{}: give ?domain=D&request_id=R, or ask /v1/receipts/{{index}}",
            e.body_text()
        ))
    })?;
    let rec = node
        .get_decision_by_request(&q.domain, &q.request_id)
        .await?;
    receipt_text(&node.receipt(rec.index).await?)
}

async fn openapi() -> Response {
    let mut r = OPENAPI.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/yaml"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/openapi.yaml describes exactly the routes served, each with its
    /// responses, and names the error shape the handlers answer.
    #[test]
    fn the_openapi_document_lists_exactly_the_routes() {
        let doc: serde_yaml::Value = serde_yaml::from_str(OPENAPI).expect("openapi.yaml parses");
        assert!(
            doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
            "an OpenAPI 3 document"
        );
        let mut documented = Vec::new();
        if let Some(paths) = doc["paths"].as_mapping() {
            for (path, ops) in paths {
                let path = path.as_str().unwrap_or_default().to_string();
                for (method, op) in ops.as_mapping().into_iter().flatten() {
                    let method = method.as_str().unwrap_or_default().to_string();
                    assert!(
                        op["responses"].as_mapping().is_some_and(|r| !r.is_empty()),
                        "{method} {path} documents its responses"
                    );
                    documented.push((method, path.clone()));
                }
            }
        }
        documented.sort();
        let mut served: Vec<(String, String)> = ROUTES
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        served.sort();
        assert_eq!(documented, served);
        assert!(
            doc["components"]["schemas"]["Error"].is_mapping(),
            "the error shape is documented"
        );
    }
}
