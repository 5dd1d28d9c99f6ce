use super::*;
use quorate_proto::envoy_api::envoy::config::core::v3::{Address, Metadata, SocketAddress};
use quorate_proto::envoy_api::envoy::service::auth::v3::attribute_context::{
    HttpRequest, Request as AttrRequest, TlsSession,
};

fn mesh(principal: &str) -> EnvoyConfig {
    EnvoyConfig {
        default_domain: Some("mesh".into()),
        domains: vec![EnvoyDomainConfig {
            domain: "mesh".into(),
            principal: principal.into(),
            principal_type: "User".into(),
            resource_type: "Route".into(),
            context_headers: vec!["x-tenant".into()],
            jwt_payload_key: "jwt_payload".into(),
        }],
    }
}

/// What Envoy sends for `GET https://api.example.com/payments/42?full=1`
/// from a workload with a SPIFFE identity.
fn attrs() -> AttributeContext {
    let headers = [
        (":method", "GET"),
        ("x-user", "alice"),
        ("x-tenant", "acme"),
        ("authorization", "Bearer secret"),
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
        ("x-quorate-parent", "envoy-parent-1"),
    ];
    AttributeContext {
        source: Some(Peer {
            address: Some(Address {
                address: Some(address::Address::SocketAddress(SocketAddress {
                    address: "10.0.0.7".into(),
                    ..Default::default()
                })),
            }),
            principal: "spiffe://example.org/ns/shop/sa/checkout".into(),
            ..Default::default()
        }),
        request: Some(AttrRequest {
            time: None,
            http: Some(HttpRequest {
                id: "7f3c2b1a-0000-4000-8000-000000000001".into(),
                method: "GET".into(),
                headers: headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                path: "/payments/42?full=1".into(),
                host: "api.example.com".into(),
                scheme: "https".into(),
                protocol: "HTTP/1.1".into(),
                ..Default::default()
            }),
        }),
        tls_session: Some(TlsSession {
            sni: "api.example.com".into(),
        }),
        ..Default::default()
    }
}

#[test]
fn an_http_request_maps_to_one_cedar_request() {
    let cfg = mesh("header:x-user");
    let (r, map) = check_to_request(&attrs(), &cfg).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(map.domain, "mesh");
    assert_eq!(r.domain, "mesh");
    assert_eq!(r.request_id, "envoy-7f3c2b1a-0000-4000-8000-000000000001");
    assert_eq!(r.principal, r#"User::"alice""#);
    assert_eq!(r.action, r#"Action::"GET""#);
    assert_eq!(r.resource, r#"Route::"api.example.com/payments/42""#);
    assert_eq!(r.parent.as_deref(), Some("envoy-parent-1"));
    assert_eq!(
        r.trace_id.as_deref(),
        Some("4bf92f3577b34da6a3ce929d0e0e4736")
    );
    let ctx: Value = serde_json::from_str(&r.context_json).unwrap_or_default();
    assert_eq!(ctx["query"], "full=1");
    assert_eq!(ctx["path"], "/payments/42");
    assert_eq!(ctx["headers"], json!({"x-tenant": "acme"}));
    assert_eq!(ctx["source"]["address"], "10.0.0.7");
    assert_eq!(ctx["sni"], "api.example.com");
    // Credentials never reach the log: only the listed headers do.
    assert!(!r.context_json.contains("secret"), "{}", r.context_json);
    let limits = quorate_core::validate::Limits::default();
    let req = quorate_proto::request_from_wire(r, &limits).unwrap_or_else(|e| panic!("{e}"));
    assert!(quorate_policy::check_request(&req, &limits).is_ok());
}

#[test]
fn the_principal_comes_from_the_peer_a_header_or_a_verified_jwt() {
    let (r, _) = check_to_request(&attrs(), &mesh("peer")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        r.principal,
        r#"User::"spiffe://example.org/ns/shop/sa/checkout""#
    );

    let mut a = attrs();
    let payload = quorate_proto::prost_types::Struct {
        fields: [
            (
                "sub".to_string(),
                quorate_proto::prost_types::Value {
                    kind: Some(quorate_proto::prost_types::value::Kind::StringValue(
                        "bob".into(),
                    )),
                },
            ),
            (
                "org".to_string(),
                quorate_proto::prost_types::Value {
                    kind: Some(quorate_proto::prost_types::value::Kind::StructValue(
                        quorate_proto::prost_types::Struct {
                            fields: [(
                                "id".to_string(),
                                quorate_proto::prost_types::Value {
                                    kind: Some(
                                        quorate_proto::prost_types::value::Kind::StringValue(
                                            "o-9".into(),
                                        ),
                                    ),
                                },
                            )]
                            .into(),
                        },
                    )),
                },
            ),
        ]
        .into(),
    };
    let ns = quorate_proto::prost_types::Struct {
        fields: [(
            "jwt_payload".to_string(),
            quorate_proto::prost_types::Value {
                kind: Some(quorate_proto::prost_types::value::Kind::StructValue(
                    payload,
                )),
            },
        )]
        .into(),
    };
    a.metadata_context = Some(Metadata {
        filter_metadata: [(JWT_AUTHN.to_string(), ns)].into(),
        ..Default::default()
    });
    let (r, _) = check_to_request(&a, &mesh("jwt:sub")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.principal, r#"User::"bob""#);
    let (r, _) = check_to_request(&a, &mesh("jwt:org.id")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.principal, r#"User::"o-9""#);
    // A JWT the filter did not verify is no principal, whatever headers say.
    let e = check_to_request(&attrs(), &mesh("jwt:sub"))
        .err()
        .unwrap_or_default();
    assert!(e.contains("no principal"), "{e}");
}

#[test]
fn what_cannot_be_mapped_is_refused() {
    let cfg = mesh("header:x-user");
    let mut a = attrs();
    if let Some(h) = a.request.as_mut().and_then(|r| r.http.as_mut()) {
        h.headers.remove("x-user");
    }
    assert!(check_to_request(&a, &cfg).is_err(), "no principal");
    let mut a = attrs();
    a.request = None;
    assert!(check_to_request(&a, &cfg).is_err(), "no HTTP request");
    let mut a = attrs();
    if let Some(h) = a.request.as_mut().and_then(|r| r.http.as_mut()) {
        h.id.clear();
    }
    assert!(check_to_request(&a, &cfg).is_err(), "no request id");
    // A route naming an unmapped domain, and no default.
    let mut a = attrs();
    a.context_extensions
        .insert(DOMAIN_EXTENSION.into(), "other".into());
    assert!(check_to_request(&a, &cfg).is_err());
    let mut none = cfg.clone();
    none.default_domain = None;
    assert!(check_to_request(&attrs(), &none).is_err());
}

#[test]
fn quotes_in_a_path_cannot_break_out_of_the_uid() {
    let mut a = attrs();
    if let Some(h) = a.request.as_mut().and_then(|r| r.http.as_mut()) {
        h.path = r#"/x" || resource == Route::"admin"#.into();
    }
    let (r, _) = check_to_request(&a, &mesh("header:x-user")).unwrap_or_else(|e| panic!("{e}"));
    let limits = quorate_core::validate::Limits::default();
    let req = quorate_proto::request_from_wire(r, &limits).unwrap_or_else(|e| panic!("{e}"));
    assert!(quorate_policy::check_request(&req, &limits).is_ok());
}

#[test]
fn the_config_is_checked() {
    assert!(check_config(&mesh("peer")).is_ok());
    assert!(check_config(&EnvoyConfig::default()).is_ok());
    for bad in ["", "header:", "jwt:", "cookie:x", "peers"] {
        assert!(check_config(&mesh(bad)).is_err(), "{bad:?}");
    }
    let mut c = mesh("peer");
    c.domains[0].resource_type = "Route\"".into();
    assert!(check_config(&c).is_err());
    let mut c = mesh("peer");
    c.domains[0].context_headers = vec!["X-Tenant".into()];
    assert!(check_config(&c).is_err());
    let mut c = mesh("peer");
    c.default_domain = Some("elsewhere".into());
    assert!(check_config(&c).is_err());
    let mut c = mesh("peer");
    c.domains.push(c.domains[0].clone());
    assert!(check_config(&c).is_err(), "mapped twice");
}

fn denied_parts(c: &CheckResponse) -> (i32, i32, String, Vec<(String, String)>) {
    let Some(HttpResponse::DeniedResponse(d)) = &c.http_response else {
        panic!("not a denied response: {c:?}");
    };
    let headers = d
        .headers
        .iter()
        .filter_map(|h| h.header.as_ref())
        .map(|h| (h.key.clone(), h.value.clone()))
        .collect();
    (
        c.status.as_ref().map(|s| s.code).unwrap_or(-1),
        d.status.as_ref().map(|s| s.code).unwrap_or(0),
        d.body.clone(),
        headers,
    )
}

#[test]
fn only_an_attested_allow_is_ok() {
    let contained = Answer::deny(DenyReason::NoQuorum, "this node cannot prove a quorum");
    let (rpc, http, body, headers) = denied_parts(&answer_to_check(&contained, "envoy-1"));
    assert_eq!((rpc, http), (RPC_PERMISSION_DENIED, 403));
    assert!(body.contains("NO_QUORUM"), "{body}");
    assert!(headers.contains(&("x-quorate-reason".into(), "NO_QUORUM".into())));

    // An ALLOW without a receipt (committed mode) is refused.
    let mut unattested = Answer::deny(DenyReason::NoQuorum, "");
    unattested.decision = Decision::Allow;
    unattested.reason = None;
    let (_, http, _, headers) = denied_parts(&answer_to_check(&unattested, "envoy-1"));
    assert_eq!(http, 403);
    assert!(headers.contains(&("x-quorate-reason".into(), "UNATTESTED".into())));
}
