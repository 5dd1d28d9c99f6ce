//! Envoy's ext_authz on a real TLS cluster, driven by a gRPC client built
//! from Envoy's own protos (proto/envoy/), as Envoy calls it: the node's
//! gRPC port, an agent certificate. A request goes upstream only on an
//! attested ALLOW, with the decision's index, hash and checkpoint in the
//! headers; a policy's DENY, an unmappable check and a contained node are
//! denied 403 responses (never errors Envoy could let through), and what is
//! refused before a decision commits nothing.

use std::collections::HashMap;
use std::time::Duration;

use quorate_e2e::{Cluster, ClusterOpts, metric_value, tls_channel};
use quorate_proto::envoy_api::envoy::service::auth::v3::{
    AttributeContext, CheckRequest, CheckResponse,
    attribute_context::{HttpRequest, Request as AttrRequest},
    authorization_client::AuthorizationClient,
    check_response::HttpResponse,
};
use quorate_proto::v1;

const MESH: &str = "[envoy]\ndefault_domain = \"mesh\"\n\n[[envoy.domains]]\ndomain = \"mesh\"\n\
                    principal = \"header:x-user\"\ncontext_headers = [\"x-tenant\"]\n";

fn check(id: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(AttrRequest {
                time: None,
                http: Some(HttpRequest {
                    id: id.into(),
                    method: method.into(),
                    headers: headers
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                    path: path.into(),
                    host: "api.example.com".into(),
                    scheme: "https".into(),
                    protocol: "HTTP/1.1".into(),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }),
    }
}

/// (allowed, headers set on the request or the denial, body).
fn parts(r: &CheckResponse) -> (bool, HashMap<String, String>, String) {
    let pairs = |h: &[quorate_proto::envoy_api::envoy::config::core::v3::HeaderValueOption]| {
        h.iter()
            .filter_map(|o| o.header.as_ref())
            .map(|h| (h.key.clone(), h.value.clone()))
            .collect::<HashMap<_, _>>()
    };
    let ok = r.status.as_ref().map(|s| s.code) == Some(0);
    match &r.http_response {
        Some(HttpResponse::OkResponse(o)) => (ok, pairs(&o.headers), String::new()),
        Some(HttpResponse::DeniedResponse(d)) => {
            assert_eq!(d.status.as_ref().map(|s| s.code), Some(403), "{r:?}");
            assert!(!ok, "a denied response with status OK: {r:?}");
            (false, pairs(&d.headers), d.body.clone())
        }
        other => panic!("neither ok nor denied: {other:?}"),
    }
}

fn by_index(index: u64) -> v1::GetDecisionRequest {
    v1::GetDecisionRequest {
        key: Some(v1::get_decision_request::Key::Index(index)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t100_envoy_forwards_only_attested_allows() -> anyhow::Result<()> {
    let mut c = Cluster::start(ClusterOpts {
        tls: true,
        extra_config: MESH.into(),
        ..Default::default()
    })
    .await?;
    let certs = c.certs.clone().ok_or_else(|| anyhow::anyhow!("no certs"))?;
    let policy = std::fs::read_to_string(format!(
        "{}/../config/dev/mesh.cedar",
        env!("CARGO_MANIFEST_DIR")
    ))?;
    c.publish("mesh", &policy).await?;
    let mut envoy = AuthorizationClient::new(tls_channel(&c.nodes[1].grpc, &certs, "agent")?);
    let alice = [
        ("x-user", "alice"),
        ("x-tenant", "acme"),
        ("authorization", "Bearer secret"),
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
    ];

    // Alice reads a payment of her tenant: forwarded, with the decision.
    let r = envoy
        .check(check("r1", "GET", "/payments/42?full=1", &alice))
        .await?
        .into_inner();
    let (ok, h, _) = parts(&r);
    assert!(ok, "{r:?}");
    let index: u64 = h["x-quorate-decision-index"].parse()?;
    assert_eq!(h["x-quorate-request-id"], "envoy-r1");
    assert!(h["x-quorate-checkpoint"].contains(':'), "{h:?}");
    // Counted under the door it came in by.
    let envoy_allows = r#"quorate_authorize_answers_total{answer="ALLOW",door="envoy"}"#;
    assert_eq!(metric_value(&c.nodes[1].http, envoy_allows).await?, 1.0);
    let mut auditor = c.client_as(1, "auditor").await?;
    let rec = auditor.get_decision(by_index(index)).await?.into_inner();
    assert_eq!(rec.hash, h["x-quorate-decision-hash"]);
    let req = &rec;
    assert_eq!(req.domain, "mesh");
    assert_eq!(req.principal, "User::\"alice\"");
    assert_eq!(req.action, "Action::\"GET\"");
    assert_eq!(req.resource, "Route::\"api.example.com/payments/42\"");
    assert_eq!(
        req.trace_id.as_deref(),
        Some("4bf92f3577b34da6a3ce929d0e0e4736")
    );
    assert!(
        req.context_json.contains("\"x-tenant\":\"acme\""),
        "{}",
        req.context_json
    );
    assert!(
        !req.context_json.contains("secret"),
        "credentials reached the log"
    );

    // Envoy's retry of the same request is the same decision.
    let again = envoy
        .check(check("r1", "GET", "/payments/42?full=1", &alice))
        .await?
        .into_inner();
    assert_eq!(
        parts(&again).1["x-quorate-decision-index"],
        index.to_string()
    );

    // A call it makes downstream links to it.
    let mut child = alice.to_vec();
    child.push(("x-quorate-parent", "envoy-r1"));
    let r = envoy
        .check(check("r2", "POST", "/payments/42/capture", &child))
        .await?
        .into_inner();
    let (ok, h, _) = parts(&r);
    assert!(ok, "{r:?}");
    let rec = auditor
        .get_decision(by_index(h["x-quorate-decision-index"].parse()?))
        .await?
        .into_inner();
    assert_eq!(rec.parent.as_deref(), Some("envoy-r1"));

    // The policy's DENY: a 403 naming the reason and the decision.
    let r = envoy
        .check(check("r3", "DELETE", "/payments/42", &alice))
        .await?
        .into_inner();
    let (ok, h, body) = parts(&r);
    assert!(!ok);
    assert_eq!(h["x-quorate-reason"], "POLICY");
    assert!(h.contains_key("x-quorate-decision-index"));
    assert!(body.contains("DENY POLICY"), "{body}");
    // Another tenant's payment: no permit.
    let bob = [("x-user", "alice"), ("x-tenant", "other")];
    let (ok, _, _) = parts(
        &envoy
            .check(check("r4", "GET", "/payments/42", &bob))
            .await?
            .into_inner(),
    );
    assert!(!ok);

    // Refusals before a decision commit nothing.
    let before = c.settled(Duration::from_secs(10)).await?;
    let (ok, h, body) = parts(
        &envoy
            .check(check("r5", "GET", "/payments/42", &[("x-tenant", "acme")]))
            .await?
            .into_inner(),
    );
    assert!(!ok);
    assert_eq!(h["x-quorate-reason"], "INVALID_REQUEST");
    assert!(body.contains("no principal"), "{body}");
    let mut other = check("r6", "GET", "/payments/42", &alice);
    if let Some(a) = other.attributes.as_mut() {
        a.context_extensions
            .insert("quorate_domain".into(), "unmapped".into());
    }
    let (ok, _, body) = parts(&envoy.check(other).await?.into_inner());
    assert!(!ok);
    assert!(body.contains("unmapped"), "{body}");
    // An auditor is not a gate: refused as over the Governance API.
    let mut as_auditor =
        AuthorizationClient::new(tls_channel(&c.nodes[1].grpc, &certs, "auditor")?);
    let e = as_auditor
        .check(check("r7", "GET", "/catalog/1", &alice))
        .await
        .err()
        .map(|s| s.code());
    assert_eq!(e, Some(tonic::Code::PermissionDenied));
    assert_eq!(c.settled(Duration::from_secs(10)).await?, before);

    // Two nodes gone: the survivor denies every request (NO_QUORUM).
    c.kill9(0);
    c.kill9(2);
    let start = std::time::Instant::now();
    for n in 0.. {
        let r = envoy
            .check(check(&format!("late-{n}"), "GET", "/catalog/1", &alice))
            .await?
            .into_inner();
        let (ok, h, _) = parts(&r);
        assert!(!ok, "a minority node let a request through: {r:?}");
        if h.get("x-quorate-reason").map(String::as_str) == Some("NO_QUORUM") {
            break;
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(15),
            "never contained: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}
