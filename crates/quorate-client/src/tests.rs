//! The client-side checks against the published vector of an attested
//! answer (docs/vectors/attested-answer-v1.json): the honest answer is an
//! ALLOW; every way a node could lie or fall short is a DENY.

use super::*;
use quorate_core::AuthorizeRequest;

struct Vector {
    sent: v1::AuthorizeRequest,
    resp: v1::AuthorizeResponse,
    trust: TrustFile,
    tampered: String,
}

fn vector() -> Vector {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/vectors/attested-answer-v1.json"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
    let req: AuthorizeRequest =
        serde_json::from_value(v["request"].clone()).unwrap_or_else(|e| panic!("{e}"));
    let receipt_json = v["answer"]["receipt_json"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let receipt: Receipt = serde_json::from_str(&receipt_json).unwrap_or_else(|e| panic!("{e}"));
    Vector {
        sent: quorate_proto::request_to_wire(&req),
        resp: v1::AuthorizeResponse {
            decision: v1::Decision::Allow as i32,
            reason: String::new(),
            message: "allowed".into(),
            record: Some(quorate_proto::record_to_wire(&receipt.record)),
            replayed: false,
            served_by: 2,
            receipt_json: Some(receipt_json),
        },
        trust: serde_json::from_value(v["trust"].clone()).unwrap_or_else(|e| panic!("{e}")),
        tampered: v["tampered_receipt_json"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    }
}

fn reason(c: &Checked) -> &str {
    match c {
        Checked::Allow(_) => "ALLOW",
        Checked::Deny(d) => &d.reason,
    }
}

#[test]
fn the_honest_answer_is_an_allow_with_its_receipt() {
    let v = vector();
    for trust in [None, Some(&v.trust)] {
        let Checked::Allow(a) = check_answer(&v.sent, &v.resp, trust, false) else {
            panic!("the vector's answer must be believed");
        };
        assert_eq!(a.record.index, 1);
        assert_eq!(a.served_by, 2);
        assert!(a.receipt.is_some());
    }
}

#[test]
fn a_tampered_cosignature_fails_under_the_trust_file() {
    let v = vector();
    let mut resp = v.resp.clone();
    resp.receipt_json = Some(v.tampered.clone());
    assert_eq!(
        reason(&check_answer(&v.sent, &resp, Some(&v.trust), false)),
        "INTEGRITY_FAILURE"
    );
}

#[test]
fn an_answer_for_another_request_is_not_a_permission() {
    let v = vector();
    for edit in [
        |s: &mut v1::AuthorizeRequest| s.principal = r#"User::"mallory""#.into(),
        |s: &mut v1::AuthorizeRequest| s.request_id = "req-2".into(),
        |s: &mut v1::AuthorizeRequest| s.context_json = r#"{"amount":1}"#.into(),
        |s: &mut v1::AuthorizeRequest| s.parent = Some("p".into()),
    ] {
        let mut sent = v.sent.clone();
        edit(&mut sent);
        assert_eq!(
            reason(&check_answer(&sent, &v.resp, None, false)),
            "INTEGRITY_FAILURE"
        );
    }
}

#[test]
fn every_shortfall_of_an_allow_is_a_deny() {
    let v = vector();
    // No record.
    let mut r = v.resp.clone();
    r.record = None;
    assert_eq!(
        reason(&check_answer(&v.sent, &r, None, true)),
        "INTEGRITY_FAILURE"
    );
    // A record whose hash does not verify.
    let mut r = v.resp.clone();
    if let Some(rec) = r.record.as_mut() {
        rec.timestamp_ms += 1;
    }
    assert_eq!(
        reason(&check_answer(&v.sent, &r, None, false)),
        "INTEGRITY_FAILURE"
    );
    // No receipt: unattested, unless the client accepts committed answers.
    let mut r = v.resp.clone();
    r.receipt_json = None;
    assert_eq!(
        reason(&check_answer(&v.sent, &r, None, false)),
        "UNATTESTED"
    );
    assert_eq!(reason(&check_answer(&v.sent, &r, None, true)), "ALLOW");
    // A receipt that is not JSON.
    let mut r = v.resp.clone();
    r.receipt_json = Some("{".into());
    assert_eq!(
        reason(&check_answer(&v.sent, &r, None, true)),
        "INTEGRITY_FAILURE"
    );
}

#[test]
fn a_receipt_whose_proof_does_not_reach_its_root_is_refused() {
    let v = vector();
    let mut rc: Receipt = serde_json::from_str(v.resp.receipt_json.as_deref().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}"));
    rc.checkpoint.root = quorate_core::Digest([1; 32]);
    let mut r = v.resp.clone();
    r.receipt_json = serde_json::to_string(&rc).ok();
    assert_eq!(
        reason(&check_answer(&v.sent, &r, None, false)),
        "INTEGRITY_FAILURE"
    );
}

#[test]
fn a_deny_is_believed_as_it_comes() {
    let v = vector();
    let mut r = v.resp.clone();
    r.decision = v1::Decision::Deny as i32;
    r.reason = "NO_QUORUM".into();
    r.record = None;
    r.receipt_json = None;
    let Checked::Deny(d) = check_answer(&v.sent, &r, None, false) else {
        panic!("a DENY is a DENY");
    };
    assert_eq!(d.reason, "NO_QUORUM");
    assert!(d.record.is_none());
}

#[test]
fn the_builder_refuses_what_cannot_work() {
    assert!(matches!(
        Client::builder(Vec::<String>::new()).insecure().build(),
        Err(Error::Config(_))
    ));
    // Plaintext is never chosen silently.
    assert!(matches!(
        Client::builder(["127.0.0.1:1"]).build(),
        Err(Error::Config(_))
    ));
    assert!(Client::builder(["127.0.0.1:1"]).insecure().build().is_ok());
}

#[tokio::test]
async fn no_node_at_all_is_an_error_never_an_allow() {
    let c = Client::builder(["127.0.0.1:1", "127.0.0.1:2"])
        .insecure()
        .attempts(3)
        .backoff(Duration::from_millis(1))
        .attempt_timeout(Duration::from_millis(500))
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let r = c
        .authorize(Request::new(
            "d",
            r#"User::"a""#,
            r#"Action::"b""#,
            r#"Doc::"c""#,
        ))
        .await;
    assert!(
        matches!(r, Err(Error::Unavailable { attempts: 3, .. })),
        "{r:?}"
    );
    // The deadline bounds the attempts too.
    let c = Client::builder(["127.0.0.1:1"])
        .insecure()
        .retry_for(Duration::from_millis(50))
        .backoff(Duration::from_millis(20))
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let r = c
        .authorize(Request::new(
            "d",
            r#"User::"a""#,
            r#"Action::"b""#,
            r#"Doc::"c""#,
        ))
        .await;
    assert!(
        matches!(r, Err(Error::Unavailable { attempts, .. }) if attempts < 10),
        "{r:?}"
    );
}

#[test]
fn request_ids_are_fresh_and_kept_by_the_builder() {
    let a = Request::new("d", "p", "a", "r");
    let b = Request::new("d", "p", "a", "r");
    assert_ne!(a.request_id, b.request_id);
    let c = a.clone().request_id("op-7").parent("op-1");
    assert_eq!(c.to_wire().request_id, "op-7");
    assert_eq!(c.to_wire().parent.as_deref(), Some("op-1"));
}
