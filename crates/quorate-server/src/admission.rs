//! Kubernetes admission: `POST /k8s/admit` is a ValidatingAdmissionWebhook
//! (`admission.k8s.io/v1` AdmissionReview in and out). Each request the API
//! server sends becomes one governed decision in the configured domain, and
//! the object is admitted only on an attested ALLOW: anything else (a DENY
//! of any reason, a committed-mode ALLOW without a quorum's receipt, a
//! review that cannot be read, an error) is `allowed: false`, so with the
//! webhook's `failurePolicy: Fail` no path admits what quorate did not
//! attest (docs/INTEGRATIONS.md, "Kubernetes admission").
//!
//! The mapping, in `review_to_request` (pure, unit-tested):
//! - principal `User::"<username>"`;
//! - action `Action::"<operation, lowercase>"` (create, update, delete, connect);
//! - resource `<Kind>::"<namespace>/<name>"` (`"<name>"` when cluster-scoped);
//! - context: operation, namespace, name, kind, group, version, resource,
//!   subresource, username, groups, labels (of the object, or of the old
//!   object on delete), dry_run;
//! - request id `k8s-<uid>`: the API server's retries of one review are one
//!   decision.

use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::response::Json;
use quorate_core::Decision;
use quorate_policy::entity_uid as uid;
use quorate_proto::v1;
use serde_json::{Value, json};

use crate::console::{HttpError, admit, caller};

/// Where the webhook is served on the HTTP port (the
/// ValidatingWebhookConfiguration's `clientConfig.service.path`).
pub const PATH: &str = "/k8s/admit";
use crate::http::HttpPeer;
use crate::node::{Access, Node};

/// The governed request for one AdmissionReview, and the review's uid.
pub fn review_to_request(
    review: &Value,
    domain: &str,
) -> Result<(String, v1::AuthorizeRequest), String> {
    if review["apiVersion"] != "admission.k8s.io/v1" || review["kind"] != "AdmissionReview" {
        return Err("not an admission.k8s.io/v1 AdmissionReview".into());
    }
    let r = &review["request"];
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let uid_s = text(&r["uid"]);
    if uid_s.is_empty() {
        return Err("the review has no request.uid".into());
    }
    let operation = text(&r["operation"]);
    if operation.is_empty() {
        return Err("the review has no request.operation".into());
    }
    let kind = text(&r["kind"]["kind"]);
    let valid_kind = kind.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && kind.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid_kind {
        return Err(format!("request.kind.kind {kind:?} is not a resource kind"));
    }
    let username = text(&r["userInfo"]["username"]);
    if username.is_empty() {
        return Err("the review names no user (request.userInfo.username)".into());
    }
    let namespace = text(&r["namespace"]);
    let name = text(&r["name"]);
    let object = if r["object"].is_object() {
        &r["object"]
    } else {
        &r["oldObject"]
    };
    let labels = match &object["metadata"]["labels"] {
        Value::Object(m) => Value::Object(m.clone()),
        _ => json!({}),
    };
    let groups = match &r["userInfo"]["groups"] {
        Value::Array(g) => Value::Array(g.iter().filter(|x| x.is_string()).cloned().collect()),
        _ => json!([]),
    };
    let resource_id = if namespace.is_empty() {
        name.clone()
    } else {
        format!("{namespace}/{name}")
    };
    let context = json!({
        "operation": operation,
        "namespace": namespace,
        "name": name,
        "kind": kind,
        "group": text(&r["kind"]["group"]),
        "version": text(&r["kind"]["version"]),
        "resource": text(&r["resource"]["resource"]),
        "subresource": text(&r["subResource"]),
        "username": username,
        "groups": groups,
        "labels": labels,
        "dry_run": r["dryRun"].as_bool().unwrap_or(false),
    });
    Ok((
        uid_s.clone(),
        v1::AuthorizeRequest {
            domain: domain.into(),
            request_id: format!("k8s-{uid_s}"),
            principal: uid("User", &username),
            action: uid("Action", &operation.to_ascii_lowercase()),
            resource: uid(&kind, &resource_id),
            context_json: context.to_string(),
            entities_json: None,
            parent: None,
            trace_id: None,
        },
    ))
}

/// The AdmissionReview answer.
fn review(uid: &str, allowed: bool, message: &str, annotations: Value) -> Value {
    let mut response = json!({"uid": uid, "allowed": allowed, "auditAnnotations": annotations});
    if !allowed {
        response["status"] = json!({"code": 403, "reason": "Forbidden", "message": message});
    }
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})
}

pub(crate) async fn admit_review(
    State(node): State<Node>,
    ConnectInfo(peer): ConnectInfo<HttpPeer>,
    headers: HeaderMap,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, HttpError> {
    let c = caller(&node, &peer, &headers)?;
    admit(&node, &c, "K8sAdmit", Access::Decide)?;
    let Some(domain) = node.config().admission.domain.clone() else {
        return Err(HttpError::from(crate::error::ApiError::new(
            quorate_core::ErrorCode::NotFound,
            "Kubernetes admission is off on this node: set admission.domain in its config",
        )));
    };
    let Json(body) =
        body.map_err(|e| HttpError::invalid(format!("the body: {}", e.body_text())))?;
    let uid = body["request"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if uid.is_empty() {
        // Without a uid there is no review to answer; the API server reads
        // the error as a failure, which `failurePolicy: Fail` refuses.
        return Err(HttpError::invalid(
            "not an AdmissionReview with a request.uid",
        ));
    }
    let wire = match review_to_request(&body, &domain) {
        Ok((_, w)) => w,
        Err(e) => {
            return Ok(Json(review(
                &uid,
                false,
                &format!("quorate: {e}"),
                json!({}),
            )));
        }
    };
    let req = match quorate_proto::request_from_wire(wire, node.limits()) {
        Ok(r) => r,
        Err(e) => {
            return Ok(Json(review(
                &uid,
                false,
                &format!("quorate: the request cannot be governed: {e}"),
                json!({}),
            )));
        }
    };
    let answer = match node.authorize(req, crate::node::Door::Admission).await {
        Ok(a) => a,
        Err(e) => {
            return Ok(Json(review(
                &uid,
                false,
                &format!("quorate: {e}"),
                json!({}),
            )));
        }
    };
    let mut annotations = serde_json::Map::new();
    if let Some(r) = &answer.record {
        annotations.insert("quorate-decision-index".into(), json!(r.index.to_string()));
        annotations.insert("quorate-decision-hash".into(), json!(r.hash.to_hex()));
    }
    // Admitted only on an attested ALLOW (invariant 1 at this door).
    let (allowed, message) = match (answer.decision, answer.attested_receipt()) {
        (Decision::Allow, Some(receipt)) => {
            let cp = &receipt.checkpoint;
            annotations.insert(
                "quorate-checkpoint".into(),
                json!(format!("{}:{}", cp.size, cp.root.to_hex())),
            );
            (true, "allowed by quorate".to_string())
        }
        (Decision::Allow, None) => (
            false,
            "quorate: this ALLOW carries no quorum's receipt (the node answers in committed \
             mode); the webhook admits only attested ALLOWs"
                .to_string(),
        ),
        (Decision::Deny, _) => {
            let reason = answer.reason.map(|r| r.code()).unwrap_or("DENY");
            annotations.insert("quorate-reason".into(), json!(reason));
            (false, format!("quorate: DENY {reason}: {}", answer.message))
        }
    };
    Ok(Json(review(
        &uid,
        allowed,
        &message,
        Value::Object(annotations),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorded(name: &str) -> Value {
        let path = format!(
            "{}/../../tests/fixtures/k8s/{name}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn a_recorded_review_maps_to_one_cedar_request() {
        let (uid, r) = review_to_request(&recorded("create-deployment"), "k8s")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(uid, "705ab4f5-6393-11e8-b7cc-42010a800002");
        assert_eq!(r.request_id, "k8s-705ab4f5-6393-11e8-b7cc-42010a800002");
        assert_eq!(r.principal, r#"User::"alice@example.com""#);
        assert_eq!(r.action, r#"Action::"create""#);
        assert_eq!(r.resource, r#"Deployment::"default/web""#);
        let ctx: Value = serde_json::from_str(&r.context_json).unwrap_or_default();
        assert_eq!(ctx["labels"]["app"], "web");
        assert_eq!(ctx["groups"], json!(["developers", "system:authenticated"]));
        assert_eq!(ctx["group"], "apps");
        // Delete: the labels come from the old object.
        let (_, d) = review_to_request(&recorded("delete-configmap-kube-system"), "k8s")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(d.action, r#"Action::"delete""#);
        assert_eq!(d.resource, r#"ConfigMap::"kube-system/coredns""#);
        let ctx: Value = serde_json::from_str(&d.context_json).unwrap_or_default();
        assert_eq!(ctx["labels"]["k8s-app"], "kube-dns");
    }

    #[test]
    fn quotes_in_names_cannot_break_out_of_the_uid() {
        let mut v = recorded("create-deployment");
        v["request"]["userInfo"]["username"] = json!(r#"eve" || principal == User::"x"#);
        let (_, r) = review_to_request(&v, "k8s").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.principal, r#"User::"eve\" || principal == User::\"x""#);
        let limits = quorate_core::validate::Limits::default();
        let req = quorate_proto::request_from_wire(r, &limits).unwrap_or_else(|e| panic!("{e}"));
        assert!(quorate_policy::check_request(&req, &limits).is_ok());
    }

    #[test]
    fn what_is_not_a_review_is_refused() {
        assert!(review_to_request(&recorded("malformed"), "k8s").is_err());
        let mut v = recorded("create-deployment");
        v["request"]["kind"]["kind"] = json!("Bad::Kind");
        assert!(review_to_request(&v, "k8s").is_err());
        let mut v = recorded("create-deployment");
        v["apiVersion"] = json!("admission.k8s.io/v1beta1");
        assert!(review_to_request(&v, "k8s").is_err());
        let mut v = recorded("create-deployment");
        v["request"]["userInfo"]["username"] = json!("");
        assert!(review_to_request(&v, "k8s").is_err());
    }

    #[test]
    fn only_an_attested_allow_is_allowed() {
        let denied = review("u", false, "no", json!({}));
        assert_eq!(denied["response"]["allowed"], false);
        assert_eq!(denied["response"]["status"]["code"], 403);
        let allowed = review("u", true, "yes", json!({"quorate-decision-index": "3"}));
        assert_eq!(allowed["response"]["allowed"], true);
        assert!(allowed["response"]["status"].is_null());
        assert_eq!(allowed["response"]["uid"], "u");
    }
}
