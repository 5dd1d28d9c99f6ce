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

/// The policy index never changes an answer (`index.rs`): on a grid of
/// scopes (every constraint form, hierarchy-dependent ones included),
/// effects and conditions (one that errors), every request gets the same
/// decision, reason, determining policies and errors with the index as with
/// the whole set.
mod index_tests {
    use super::*;

    const PRINCIPALS: [&str; 5] = [
        "principal",
        r#"principal == User::"alice""#,
        "principal is User",
        "principal is Group",
        r#"principal in Group::"g""#,
    ];
    const ACTIONS: [&str; 4] = [
        "action",
        r#"action == Action::"read""#,
        r#"action == Action::"write""#,
        r#"action in [Action::"read", Action::"delete"]"#,
    ];
    const RESOURCES: [&str; 5] = [
        "resource",
        r#"resource == Doc::"1""#,
        "resource is Doc",
        r#"resource is Img in Folder::"f""#,
        r#"resource in Folder::"f""#,
    ];
    const CONDITIONS: [&str; 3] = [
        "",
        "when { context.mfa == true }",
        "when { context.missing == 1 }",
    ];

    fn grid() -> Vec<String> {
        let mut out = vec![];
        let mut n = 0;
        for p in PRINCIPALS {
            for a in ACTIONS {
                for r in RESOURCES {
                    for c in CONDITIONS {
                        let effect = if (n / 3) % 3 == 1 { "forbid" } else { "permit" };
                        out.push(format!("@id(\"p{n}\")\n{effect}({p}, {a}, {r}) {c};\n"));
                        n += 1;
                    }
                }
            }
        }
        out
    }

    fn requests() -> Vec<AuthorizeRequest> {
        let entities = r#"[{"uid":{"type":"User","id":"bob"},"attrs":{},"parents":[{"type":"Group","id":"g"}]},
            {"uid":{"type":"Doc","id":"2"},"attrs":{},"parents":[{"type":"Folder","id":"f"}]},
            {"uid":{"type":"Img","id":"1"},"attrs":{},"parents":[{"type":"Folder","id":"f"}]}]"#;
        let mut out = vec![];
        for p in [r#"User::"alice""#, r#"User::"bob""#, r#"Group::"g""#] {
            for a in [
                r#"Action::"read""#,
                r#"Action::"write""#,
                r#"Action::"delete""#,
            ] {
                for r in [
                    r#"Doc::"1""#,
                    r#"Doc::"2""#,
                    r#"Img::"1""#,
                    r#"Folder::"f""#,
                ] {
                    for ctx in [r#"{"mfa":true}"#, r#"{"mfa":false}"#, "{}"] {
                        let mut q = req(p, a, ctx);
                        q.resource = r.into();
                        q.entities = Some(entities.into());
                        out.push(q);
                    }
                }
            }
        }
        out
    }

    #[test]
    fn the_index_gives_every_request_the_answer_of_the_whole_set() {
        let grid = grid();
        let limits = Limits {
            max_policy_bytes: 1 << 20,
            ..Limits::default()
        };
        let requests = requests();
        let mut sets = vec![grid.concat()];
        // Smaller sets too, so that decisions differ between them.
        for stride in [2usize, 3, 7, 11] {
            sets.push(grid.iter().step_by(stride).cloned().collect());
        }
        let (mut compared, mut allowed, mut with_errors, mut smaller) = (0, 0, 0, 0);
        for text in &sets {
            let compiled = CompiledPolicy::compile(text, None, &limits).expect("grid compiles");
            for q in &requests {
                let full = evaluate_with(q, &compiled, false);
                let indexed = evaluate_with(q, &compiled, true);
                assert_eq!(
                    (full.decision, full.reason, &full.determining, &full.errors),
                    (
                        indexed.decision,
                        indexed.reason,
                        &indexed.determining,
                        &indexed.errors
                    ),
                    "request {q:?} under {} policies",
                    compiled.len()
                );
                compared += 1;
                allowed += usize::from(full.decision == Decision::Allow);
                with_errors += usize::from(!full.errors.is_empty());
                let p = EntityUid::from_str(&q.principal).expect("uid");
                let a = EntityUid::from_str(&q.action).expect("uid");
                let r = EntityUid::from_str(&q.resource).expect("uid");
                let subset = compiled.index.subset(&p, &a, &r).expect("indexed");
                smaller += usize::from(subset.policies().count() < compiled.len());
            }
        }
        // The grid exercises what it claims: both outcomes, erroring
        // conditions, and subsets that really leave policies out.
        assert_eq!(compared, sets.len() * requests.len());
        assert!(
            allowed > 0 && allowed < compared,
            "{allowed} of {compared} allowed"
        );
        assert!(with_errors > 0, "no request met an erroring condition");
        assert_eq!(smaller, compared, "every subset leaves some policy out");
    }

    #[test]
    fn a_set_with_a_template_is_evaluated_whole() {
        let text = "permit(principal == ?principal, action, resource);\n\
                    permit(principal, action == Action::\"read\", resource);";
        let compiled = CompiledPolicy::compile(text, None, &Limits::default()).expect("compiles");
        let p = EntityUid::from_str(r#"User::"alice""#).expect("uid");
        let a = EntityUid::from_str(r#"Action::"read""#).expect("uid");
        assert!(compiled.index.subset(&p, &a, &p).is_none());
        let e = evaluate(
            &req(r#"User::"alice""#, r#"Action::"read""#, "{}"),
            &compiled,
        );
        assert_eq!(e.decision, Decision::Allow);
    }
}

#[test]
fn entity_uid_keeps_an_outside_id_inside_its_string() {
    for id in [
        "alice",
        r#"eve" || principal == User::"x"#,
        r"back\slash\",
        "kube-system/coredns",
        "ünïcode ✓",
    ] {
        let text = entity_uid("User", id);
        let uid = EntityUid::from_str(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(uid.id().unescaped(), id, "{text}");
        assert_eq!(uid.type_name().to_string(), "User");
    }
}
