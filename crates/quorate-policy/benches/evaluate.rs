//! The decision function every replica runs at apply time, and its cost as
//! a policy set grows: 10 policies against 1,000, each scoped to its own
//! resource type as a platform team's policies are, and the request
//! matching one of them. `cargo bench -p quorate-policy`; figures and
//! method in docs/BENCHMARKS.md.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use quorate_core::validate::Limits;
use quorate_core::{AuthorizeRequest, GENESIS_HASH, policy_content_hash};
use quorate_policy::{ActivePolicy, CompiledPolicy, DomainState, Position, decide};
use std::hint::black_box;

/// `n` policies: a permit and a forbid per resource type `R<k>`, so that
/// only two of them concern any one request.
fn policy_text(n: usize) -> String {
    let mut text = String::new();
    for k in 0..n / 2 {
        text.push_str(&format!(
            "@id(\"permit-{k}\")\npermit(principal, action == Action::\"read\", resource is R{k}) \
             when {{ context.mfa == true }};\n\
             @id(\"forbid-{k}\")\nforbid(principal == User::\"mallory\", action, resource is R{k});\n"
        ));
    }
    text
}

fn request(k: usize) -> AuthorizeRequest {
    AuthorizeRequest {
        domain: "bench".into(),
        request_id: "r-1".into(),
        principal: r#"User::"alice""#.into(),
        action: r#"Action::"read""#.into(),
        resource: format!("R{k}::\"doc-1\""),
        context: r#"{"mfa":true}"#.into(),
        entities: None,
        parent: None,
        trace_id: None,
    }
}

fn evaluate(c: &mut Criterion) {
    let at = Position {
        index: 1,
        log_index: 2,
        timestamp_ms: 1_764_000_000_000,
        prev_hash: GENESIS_HASH,
    };
    let limits = Limits {
        max_policy_bytes: 16 << 20,
        ..Limits::default()
    };
    let mut g = c.benchmark_group("decide");
    g.throughput(Throughput::Elements(1));
    for n in [10usize, 1000] {
        let text = policy_text(n);
        let compiled = match CompiledPolicy::compile(&text, None, &limits) {
            Ok(c) => c,
            Err(e) => panic!("bench policy compiles: {e}"),
        };
        let active = ActivePolicy {
            version: 1,
            hash: policy_content_hash(&text, None),
            compiled: &compiled,
        };
        // The request concerns the last resource type: nothing earlier in
        // the set decides it.
        let req = request(n / 2 - 1);
        let record = decide(&req, DomainState::Active(active), at);
        assert!(record.reason.is_none(), "the bench request is allowed");
        g.bench_function(format!("{n}_policies"), |b| {
            b.iter(|| decide(black_box(&req), DomainState::Active(active), at))
        });
    }
    g.finish();
}

criterion_group!(benches, evaluate);
criterion_main!(benches);
