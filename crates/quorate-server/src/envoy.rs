//! Envoy's external authorization (`envoy.service.auth.v3.Authorization/
//! Check`) on the node's gRPC port: Envoy's ext_authz filter asks before it
//! forwards each HTTP request, and the request goes upstream only on an
//! attested ALLOW. Every other outcome (a DENY of any reason, containment
//! included; a committed-mode ALLOW without a quorum's receipt; a check
//! that cannot be mapped; an error) is a `denied_response` 403, never an
//! `error_response`, so even an Envoy misconfigured with
//! `failure_mode_allow: true` cannot pass what quorate refused
//! (docs/INTEGRATIONS.md, "Envoy").
//!
//! The mapping, in `check_to_request` (pure, unit-tested), per domain of
//! `[[envoy.domains]]`:
//! - domain: the route's context extension `quorate_domain`, else
//!   `envoy.default_domain`;
//! - principal `<principal_type>::"<id>"`, the id from the mTLS peer
//!   (`peer`), a header (`header:<name>`) or a verified JWT claim
//!   (`jwt:<claim>`);
//! - action `Action::"<METHOD>"`;
//! - resource `<resource_type>::"<host><path>"` (the path without its query);
//! - context: method, host, path, query, scheme, protocol, the configured
//!   headers, source (address, principal), sni, the route's context
//!   extensions;
//! - request id `envoy-<x-request-id>`, parent from `x-quorate-parent`,
//!   trace id from `traceparent` (W3C) or `x-b3-traceid`.

use std::collections::BTreeMap;

use quorate_core::{Decision, DenyReason};
use quorate_policy::entity_uid;
use quorate_proto::envoy_api::envoy::config::core::v3::{
    HeaderValue, HeaderValueOption, address, header_value_option::HeaderAppendAction,
};
use quorate_proto::envoy_api::envoy::service::auth::v3::{
    AttributeContext, CheckRequest, CheckResponse, DeniedHttpResponse, OkHttpResponse,
    attribute_context::Peer, authorization_server::Authorization, check_response::HttpResponse,
};
use quorate_proto::envoy_api::envoy::r#type::v3::{HttpStatus, StatusCode};
use quorate_proto::envoy_api::google::rpc::Status as RpcStatus;
use quorate_proto::v1;
use serde_json::{Value, json};
use tonic::{Request, Response, Status};

use crate::config::{EnvoyConfig, EnvoyDomainConfig};
use crate::node::{Access, Answer, Node};

/// The context extension a route sets to choose its domain.
pub const DOMAIN_EXTENSION: &str = "quorate_domain";
/// The metadata namespace Envoy's jwt_authn filter writes verified payloads to.
pub const JWT_AUTHN: &str = "envoy.filters.http.jwt_authn";
/// The request header naming the parent decision's request id.
pub const PARENT_HEADER: &str = "x-quorate-parent";

/// google.rpc.Code values.
const RPC_OK: i32 = 0;
const RPC_PERMISSION_DENIED: i32 = 7;

/// Where a domain's principal comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrincipalFrom {
    /// The mTLS peer's identity as Envoy verified it (`source.principal`).
    Peer,
    /// A request header (lowercase).
    Header(String),
    /// A claim of the JWT payload jwt_authn verified; dots walk into
    /// nested objects.
    Jwt(String),
}

impl PrincipalFrom {
    pub fn parse(s: &str) -> Result<PrincipalFrom, String> {
        let bad = || format!("principal {s:?} must be `peer`, `header:<name>` or `jwt:<claim>`");
        match s.split_once(':') {
            None if s == "peer" => Ok(PrincipalFrom::Peer),
            Some(("header", h)) if !h.is_empty() => {
                Ok(PrincipalFrom::Header(h.to_ascii_lowercase()))
            }
            Some(("jwt", c)) if !c.is_empty() => Ok(PrincipalFrom::Jwt(c.to_string())),
            _ => Err(bad()),
        }
    }
}

/// A Cedar entity type name: identifiers joined by `::`.
fn is_type_name(s: &str) -> bool {
    !s.is_empty()
        && s.split("::").all(|part| {
            part.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
}

/// The checks `NodeConfig::check` makes of `[envoy]`.
pub fn check_config(cfg: &EnvoyConfig) -> Result<(), String> {
    let mut seen = std::collections::BTreeSet::new();
    for d in &cfg.domains {
        if d.domain.is_empty() || !seen.insert(d.domain.as_str()) {
            return Err(format!(
                "envoy.domains: domain {:?} is empty or mapped twice",
                d.domain
            ));
        }
        PrincipalFrom::parse(&d.principal)
            .map_err(|e| format!("envoy.domains {:?}: {e}", d.domain))?;
        for (key, t) in [
            ("principal_type", &d.principal_type),
            ("resource_type", &d.resource_type),
        ] {
            if !is_type_name(t) {
                return Err(format!(
                    "envoy.domains {:?}: {key} {t:?} is not a Cedar entity type (e.g. User, Mesh::Route)",
                    d.domain
                ));
            }
        }
        if let Some(h) = d
            .context_headers
            .iter()
            .find(|h| h.is_empty() || h.to_ascii_lowercase() != **h)
        {
            return Err(format!(
                "envoy.domains {:?}: context header {h:?} must be a lowercase header name",
                d.domain
            ));
        }
    }
    if let Some(d) = &cfg.default_domain
        && !seen.contains(d.as_str())
    {
        return Err(format!(
            "envoy.default_domain {d:?} has no [[envoy.domains]] mapping"
        ));
    }
    Ok(())
}

/// A header of the request: from the map, or from the list when Envoy
/// sends raw headers.
fn header<'a>(
    http: &'a quorate_proto::envoy_api::envoy::service::auth::v3::attribute_context::HttpRequest,
    name: &str,
) -> Option<std::borrow::Cow<'a, str>> {
    if let Some(v) = http.headers.get(name) {
        return Some(v.as_str().into());
    }
    let list = http.header_map.as_ref()?;
    let hv = list
        .headers
        .iter()
        .find(|h| h.key.eq_ignore_ascii_case(name))?;
    if hv.value.is_empty() {
        Some(String::from_utf8_lossy(&hv.raw_value))
    } else {
        Some(hv.value.as_str().into())
    }
}

/// A protobuf Struct value as JSON.
fn struct_value(v: &quorate_proto::prost_types::Value) -> Value {
    use quorate_proto::prost_types::value::Kind;
    match &v.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::NumberValue(n)) => json!(n),
        Some(Kind::StringValue(s)) => json!(s),
        Some(Kind::BoolValue(b)) => json!(b),
        Some(Kind::StructValue(s)) => Value::Object(
            s.fields
                .iter()
                .map(|(k, v)| (k.clone(), struct_value(v)))
                .collect(),
        ),
        Some(Kind::ListValue(l)) => Value::Array(l.values.iter().map(struct_value).collect()),
    }
}

/// The claim `path` (dotted) of the payload jwt_authn verified.
fn jwt_claim(attrs: &AttributeContext, payload_key: &str, path: &str) -> Option<String> {
    let ns = attrs
        .metadata_context
        .as_ref()?
        .filter_metadata
        .get(JWT_AUTHN)?;
    let mut v = struct_value(ns.fields.get(payload_key)?);
    for part in path.split('.') {
        v = v.get(part)?.clone();
    }
    match v {
        Value::String(s) => Some(s),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn peer_json(p: Option<&Peer>) -> Value {
    let Some(p) = p else { return json!({}) };
    let address = match p.address.as_ref().and_then(|a| a.address.as_ref()) {
        Some(address::Address::SocketAddress(s)) => json!(s.address),
        Some(address::Address::Pipe(pipe)) => json!(pipe.path),
        _ => json!(""),
    };
    json!({"address": address, "principal": p.principal})
}

/// A W3C traceparent's trace id, or B3's.
fn trace_id(
    http: &quorate_proto::envoy_api::envoy::service::auth::v3::attribute_context::HttpRequest,
) -> Option<String> {
    let hex = |s: &str| {
        s.len() >= 16
            && s.len() <= 32
            && s.bytes().all(|b| b.is_ascii_hexdigit())
            && s.bytes().any(|b| b != b'0')
    };
    if let Some(tp) = header(http, "traceparent")
        && let Some(id) = tp.split('-').nth(1)
        && hex(id)
    {
        return Some(id.to_ascii_lowercase());
    }
    header(http, "x-b3-traceid")
        .filter(|id| hex(id))
        .map(|id| id.to_ascii_lowercase())
}

/// The governed request for one check, and the mapping it was made by.
pub fn check_to_request<'c>(
    attrs: &AttributeContext,
    cfg: &'c EnvoyConfig,
) -> Result<(v1::AuthorizeRequest, &'c EnvoyDomainConfig), String> {
    let http = attrs
        .request
        .as_ref()
        .and_then(|r| r.http.as_ref())
        .ok_or("the check carries no HTTP request (is this the HTTP ext_authz filter?)")?;
    let domain = attrs
        .context_extensions
        .get(DOMAIN_EXTENSION)
        .or(cfg.default_domain.as_ref())
        .ok_or(
            "the route sets no quorate_domain context extension and envoy.default_domain is unset",
        )?;
    let map = cfg
        .domains
        .iter()
        .find(|d| &d.domain == domain)
        .ok_or_else(|| {
            format!("domain {domain:?} has no [[envoy.domains]] mapping on this node")
        })?;
    let from = PrincipalFrom::parse(&map.principal)?;
    let who = match &from {
        PrincipalFrom::Peer => attrs.source.as_ref().map(|p| p.principal.clone()),
        PrincipalFrom::Header(h) => header(http, h).map(|v| v.into_owned()),
        PrincipalFrom::Jwt(c) => jwt_claim(attrs, &map.jwt_payload_key, c),
    }
    .filter(|w| !w.is_empty())
    .ok_or_else(|| format!("no principal: {} is absent from the request", map.principal))?;
    if http.method.is_empty() {
        return Err("the request has no method".into());
    }
    if http.id.is_empty() {
        return Err("the check carries no request id: keep Envoy's generate_request_id on".into());
    }
    let (path, query) = http.path.split_once('?').unwrap_or((&http.path, ""));
    let headers: serde_json::Map<String, Value> = map
        .context_headers
        .iter()
        .filter_map(|h| header(http, h).map(|v| (h.clone(), json!(v))))
        .collect();
    let extensions: BTreeMap<&String, &String> = attrs.context_extensions.iter().collect();
    let context = json!({
        "method": http.method,
        "host": http.host,
        "path": path,
        "query": query,
        "scheme": http.scheme,
        "protocol": http.protocol,
        "headers": headers,
        "source": peer_json(attrs.source.as_ref()),
        "sni": attrs.tls_session.as_ref().map(|t| t.sni.clone()).unwrap_or_default(),
        "extensions": extensions,
    });
    Ok((
        v1::AuthorizeRequest {
            domain: domain.clone(),
            request_id: format!("envoy-{}", http.id),
            principal: entity_uid(&map.principal_type, &who),
            action: entity_uid("Action", &http.method),
            resource: entity_uid(&map.resource_type, &format!("{}{path}", http.host)),
            context_json: context.to_string(),
            entities_json: None,
            parent: header(http, PARENT_HEADER).map(|p| p.into_owned()),
            trace_id: trace_id(http),
        },
        map,
    ))
}

fn header_option(key: &str, value: impl Into<String>) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.into(),
            value: value.into(),
            raw_value: Vec::new(),
        }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..Default::default()
    }
}

/// A refusal: 403 with the reason in a header and the body.
fn denied(reason: &str, message: &str, index: Option<u64>) -> CheckResponse {
    let mut headers = vec![
        header_option("x-quorate-reason", reason),
        header_option("content-type", "text/plain; charset=utf-8"),
    ];
    if let Some(i) = index {
        headers.push(header_option("x-quorate-decision-index", i.to_string()));
    }
    CheckResponse {
        status: Some(RpcStatus {
            code: RPC_PERMISSION_DENIED,
            message: format!("quorate: DENY {reason}"),
            details: Vec::new(),
        }),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus {
                code: StatusCode::Forbidden as i32,
            }),
            headers,
            body: format!("quorate: DENY {reason}: {message}\n"),
        })),
        dynamic_metadata: None,
    }
}

/// The check's answer: OK only on an attested ALLOW (invariant 1 at this
/// door); everything else is `denied`.
pub fn answer_to_check(answer: &Answer, request_id: &str) -> CheckResponse {
    let index = answer.record.as_ref().map(|r| r.index);
    let reason = match (answer.decision, answer.attested_receipt()) {
        (Decision::Allow, Some(receipt)) => {
            let rec = &receipt.record;
            let cp = &receipt.checkpoint;
            return CheckResponse {
                status: Some(RpcStatus {
                    code: RPC_OK,
                    message: String::new(),
                    details: Vec::new(),
                }),
                http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                    headers: vec![
                        header_option("x-quorate-decision-index", rec.index.to_string()),
                        header_option("x-quorate-decision-hash", rec.hash.to_hex()),
                        header_option(
                            "x-quorate-checkpoint",
                            format!("{}:{}", cp.size, cp.root.to_hex()),
                        ),
                        header_option("x-quorate-request-id", request_id),
                    ],
                    response_headers_to_add: vec![header_option(
                        "x-quorate-decision-index",
                        rec.index.to_string(),
                    )],
                    ..Default::default()
                })),
                dynamic_metadata: None,
            };
        }
        (Decision::Allow, None) => {
            return denied(
                DenyReason::Unattested.code(),
                "this ALLOW carries no quorum's receipt (the node answers in committed mode); \
                 Envoy forwards only attested ALLOWs",
                index,
            );
        }
        (Decision::Deny, _) => answer.reason.map(|r| r.code()).unwrap_or("DENY"),
    };
    denied(reason, &answer.message, index)
}

/// The `Authorization` service every node serves.
#[derive(Clone)]
pub struct EnvoyAuthz {
    node: Node,
}

impl EnvoyAuthz {
    pub fn new(node: Node) -> EnvoyAuthz {
        EnvoyAuthz { node }
    }
}

#[tonic::async_trait]
impl Authorization for EnvoyAuthz {
    async fn check(&self, req: Request<CheckRequest>) -> Result<Response<CheckResponse>, Status> {
        // Envoy is a client like any other: an agent certificate of this
        // cluster. A refusal here is a gRPC error, which Envoy denies.
        self.node
            .admit_client(
                req.extensions().get::<quorate_raft::tls::PeerInfo>(),
                "EnvoyCheck",
                Access::Decide,
            )
            .map_err(Status::from)?;
        let cfg = &self.node.config().envoy;
        if cfg.domains.is_empty() {
            return Ok(Response::new(denied(
                DenyReason::InvalidRequest.code(),
                "Envoy ext_authz is off on this node: map a domain in [[envoy.domains]]",
                None,
            )));
        }
        let attrs = req.into_inner().attributes.unwrap_or_default();
        let wire = match check_to_request(&attrs, cfg) {
            Ok((w, _)) => w,
            Err(e) => {
                return Ok(Response::new(denied(
                    DenyReason::InvalidRequest.code(),
                    &e,
                    None,
                )));
            }
        };
        let request_id = wire.request_id.clone();
        let r = match quorate_proto::request_from_wire(wire, self.node.limits()) {
            Ok(r) => r,
            Err(e) => {
                return Ok(Response::new(denied(
                    DenyReason::InvalidRequest.code(),
                    &format!("the request cannot be governed: {e}"),
                    None,
                )));
            }
        };
        let answer = match self.node.authorize(r, crate::node::Door::Envoy).await {
            Ok(a) => a,
            Err(e) => {
                return Ok(Response::new(denied(
                    DenyReason::Unavailable.code(),
                    &e.to_string(),
                    None,
                )));
            }
        };
        Ok(Response::new(answer_to_check(&answer, &request_id)))
    }
}

#[cfg(test)]
mod tests;
