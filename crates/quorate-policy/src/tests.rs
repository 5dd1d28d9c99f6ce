//! Data-driven decision tests: each case is (policy, schema, request) → expected outcome.

use super::*;
use quorate_core::policy_content_hash;

const DEMO: &str = r#"
permit(principal == User::"alice", action == Action::"read", resource);
forbid(principal, action, resource) when { context.mfa == false };
"#;

fn req(principal: &str, action: &str, context: &str) -> AuthorizeRequest {
    AuthorizeRequest {
        domain: "demo".into(),
        request_id: "r".into(),
        principal: principal.into(),
        action: action.into(),
        resource: r#"Doc::"1""#.into(),
        context: context.into(),
        entities: None,
        parent: None,
        trace_id: None,
    }
}

fn at() -> Position {
    Position {
        index: 1,
        log_index: 2,
        timestamp_ms: 5,
        prev_hash: GENESIS_HASH,
    }
}

#[test]
fn table_of_decisions() {
    let limits = Limits::default();
    let compiled = CompiledPolicy::compile(DEMO, None, &limits).expect("demo compiles");
    let active = DomainState::Active(ActivePolicy {
        version: 1,
        hash: policy_content_hash(DEMO, None),
        compiled: &compiled,
    });
    let cases = [
        (
            r#"User::"alice""#,
            r#"Action::"read""#,
            "{}",
            Decision::Allow,
            None,
        ),
        (
            r#"User::"bob""#,
            r#"Action::"read""#,
            "{}",
            Decision::Deny,
            Some(DenyReason::Policy),
        ),
        (
            r#"User::"alice""#,
            r#"Action::"write""#,
            "{}",
            Decision::Deny,
            Some(DenyReason::Policy),
        ),
        (
            r#"User::"alice""#,
            r#"Action::"read""#,
            r#"{"mfa":false}"#,
            Decision::Deny,
            Some(DenyReason::Policy),
        ),
        (
            r#"User::"alice""#,
            r#"Action::"read""#,
            r#"{"mfa":true}"#,
            Decision::Allow,
            None,
        ),
    ];
    for (p, a, c, want, reason) in cases {
        let rec = decide(&req(p, a, c), active, at());
        assert_eq!(rec.decision, want, "{p} {a} {c}");
        assert_eq!(rec.reason, reason, "{p} {a} {c}");
        assert!(rec.hash_is_valid());
    }
}

#[test]
fn unknown_domain_and_no_active_version_deny() {
    let r = req(r#"User::"alice""#, r#"Action::"read""#, "{}");
    let rec = decide(&r, DomainState::Unknown, at());
    assert_eq!(rec.reason, Some(DenyReason::UnknownDomain));
    let rec = decide(&r, DomainState::NoActiveVersion, at());
    assert_eq!(rec.reason, Some(DenyReason::NoActivePolicy));
    assert_eq!(rec.policy_version, None);
}

#[test]
fn determining_policies_are_reported_and_sorted() {
    let text = r#"
        permit(principal, action, resource);
        permit(principal == User::"alice", action, resource);
    "#;
    let compiled = CompiledPolicy::compile(text, None, &Limits::default()).expect("compiles");
    let active = DomainState::Active(ActivePolicy {
        version: 1,
        hash: policy_content_hash(text, None),
        compiled: &compiled,
    });
    let rec = decide(
        &req(r#"User::"alice""#, r#"Action::"x""#, "{}"),
        active,
        at(),
    );
    assert_eq!(rec.determining_policies, vec!["policy0", "policy1"]);
}

#[test]
fn bad_policies_are_refused_with_cedars_message() {
    let l = Limits::default();
    match CompiledPolicy::compile("permit(principal, action);", None, &l) {
        Err(PolicyError::Parse(msg)) => assert!(!msg.is_empty()),
        other => panic!("expected a parse error, got {other:?}"),
    }
    assert_eq!(
        CompiledPolicy::compile("   ", None, &l).err(),
        Some(PolicyError::Empty)
    );
    let schema =
        r#"entity User; entity Doc; action read appliesTo { principal: User, resource: Doc };"#;
    let ok = r#"permit(principal, action == Action::"read", resource);"#;
    assert!(CompiledPolicy::compile(ok, Some(schema), &l).is_ok());
    let bad = r#"permit(principal, action == Action::"fly", resource);"#;
    assert!(matches!(
        CompiledPolicy::compile(bad, Some(schema), &l),
        Err(PolicyError::Validation(_))
    ));
    assert!(matches!(
        CompiledPolicy::compile(ok, Some("entity ???"), &l),
        Err(PolicyError::Schema(_))
    ));
}

#[test]
fn schema_violations_at_apply_are_recorded_denials() {
    let l = Limits::default();
    let schema = r#"entity User; entity Doc; action read appliesTo { principal: User, resource: Doc, context: { mfa: Bool } };"#;
    let text = r#"permit(principal, action == Action::"read", resource) when { context.mfa };"#;
    let compiled = CompiledPolicy::compile(text, Some(schema), &l).expect("compiles");
    let active = DomainState::Active(ActivePolicy {
        version: 1,
        hash: policy_content_hash(text, Some(schema)),
        compiled: &compiled,
    });
    let rec = decide(
        &req(r#"User::"a""#, r#"Action::"read""#, r#"{"mfa":"yes"}"#),
        active,
        at(),
    );
    assert_eq!(rec.reason, Some(DenyReason::InvalidRequest));
    assert_eq!(rec.errors.len(), 1);
    let rec = decide(
        &req(r#"User::"a""#, r#"Action::"read""#, r#"{"mfa":true}"#),
        active,
        at(),
    );
    assert_eq!(rec.decision, Decision::Allow);
}

#[test]
fn edge_checks_reject_malformed_requests() {
    let l = Limits::default();
    let good = req(r#"User::"alice""#, r#"Action::"read""#, "{}");
    assert!(check_request(&good, &l).is_ok());
    let mut bad = good.clone();
    bad.principal = "alice".into();
    assert!(matches!(
        check_request(&bad, &l),
        Err(InputError::Cedar {
            field: "principal",
            ..
        })
    ));
    let mut bad = good.clone();
    bad.entities = Some(r#"[{"uid": 3}]"#.into());
    assert!(matches!(
        check_request(&bad, &l),
        Err(InputError::Cedar {
            field: "entities",
            ..
        })
    ));
    let mut bad = good.clone();
    bad.request_id = String::new();
    assert!(check_request(&bad, &l).is_err());
    let mut bad = good;
    bad.domain = "Bad Domain".into();
    assert!(check_request(&bad, &l).is_err());
}
