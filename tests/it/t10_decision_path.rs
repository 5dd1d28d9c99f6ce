//! The governed decision path on a healthy 3-node cluster.

use std::time::Duration;

use quorate_e2e::{Cluster, ClusterOpts, POLICY, is_allow, request};
use quorate_proto::v1;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t10_publish_activate_and_authorize_through_every_node() -> anyhow::Result<()> {
    let c = Cluster::start(ClusterOpts::default()).await?;
    // Publish without activating: decisions deny NO_ACTIVE_POLICY.
    let l = c.wait_leader(Duration::from_secs(10)).await?;
    let mut leader = c.client(l).await?;
    let p = leader
        .publish_policy(v1::PublishPolicyRequest {
            domain: "docs".into(),
            policy_text: POLICY.into(),
            schema: None,
            activate: false,
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!((p.version, p.activated), (1, false));
    let r = c.decide(0, request("docs", "pre", "alice", "read")).await?;
    assert!(!is_allow(&r));
    assert_eq!(r.reason, "NO_ACTIVE_POLICY");
    assert!(r.record.is_some(), "a committed DENY carries its record");

    leader
        .activate_policy(v1::ActivatePolicyRequest {
            domain: "docs".into(),
            version: 1,
        })
        .await?;
    let trust: quorate_core::TrustFile = serde_json::from_str(
        &leader
            .get_trust(v1::GetTrustRequest {})
            .await?
            .into_inner()
            .json,
    )?;
    for i in 0..3 {
        let allow = c
            .decide(i, request("docs", &format!("allow-{i}"), "alice", "read"))
            .await?;
        assert!(is_allow(&allow), "node {i}: {allow:?}");
        let rec = allow
            .record
            .as_ref()
            .expect("ALLOW carries its committed record");
        assert_eq!(rec.policy_version, Some(1));
        assert_eq!(allow.served_by, c.nodes[i].id);
        // Attested: the ALLOW is its own receipt, checkable offline, under
        // a checkpoint a majority of the voters cosigned.
        let receipt: quorate_core::Receipt = serde_json::from_str(
            allow
                .receipt_json
                .as_deref()
                .expect("an attested ALLOW carries its receipt"),
        )?;
        assert_eq!(quorate_proto::record_to_wire(&receipt.record), *rec);
        quorate_core::proof::verify_receipt(&trust, &receipt)?;
        assert!(receipt.checkpoint.cosignatures.len() >= 2);
        let deny = c
            .decide(i, request("docs", &format!("deny-{i}"), "bob", "read"))
            .await?;
        assert!(!is_allow(&deny));
        assert_eq!(deny.reason, "POLICY");
        assert!(deny.receipt_json.is_none(), "a DENY needs no attestation");
        let unknown = c
            .decide(i, request("nowhere", &format!("u-{i}"), "alice", "read"))
            .await?;
        assert_eq!(unknown.reason, "UNKNOWN_DOMAIN");
    }
    // 1 + 3 * 3 decisions, and every node exports byte-identical logs.
    c.wait_converged(10, Duration::from_secs(10)).await?;
    let exports = [c.export(0).await?, c.export(1).await?, c.export(2).await?];
    assert_eq!(exports[0].lines().count(), 10);
    assert_eq!(exports[0], exports[1]);
    assert_eq!(exports[0], exports[2]);
    // Linearizable policy read through a follower.
    let f = (l + 1) % 3;
    let got = c
        .client(f)
        .await?
        .get_policy(v1::GetPolicyRequest {
            domain: "docs".into(),
            version: 0,
        })
        .await?
        .into_inner();
    assert_eq!((got.version, got.active, got.hash), (1, true, p.hash));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t11_request_ids_are_idempotent() -> anyhow::Result<()> {
    let c = Cluster::start(ClusterOpts::default()).await?;
    c.publish("docs", POLICY).await?;
    let mut b = c.client(1).await?;
    // `decide` retries with the same id until the answer is committed, so a
    // transient containment answer cannot make this test flaky.
    let first = c
        .decide(0, request("docs", "same", "alice", "read"))
        .await?;
    // The same id and body through another node returns the committed
    // decision again and appends nothing.
    let again = c
        .decide(1, request("docs", "same", "alice", "read"))
        .await?;
    assert!(is_allow(&first) && is_allow(&again), "{first:?} {again:?}");
    assert!(again.replayed, "{again:?}");
    assert_eq!(first.record, again.record);
    // The same id with another body must not borrow that ALLOW: it is a
    // conflict, answered DENY without a record, and appends nothing.
    let other = b
        .authorize(request("docs", "same", "bob", "delete"))
        .await?
        .into_inner();
    assert!(!is_allow(&other), "{other:?}");
    assert_eq!(other.reason, "REQUEST_ID_CONFLICT");
    assert!(other.record.is_none());
    // Concurrent duplicates collapse to one record as well.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let mut ci = c.client(i % 3).await?;
        tasks.push(tokio::spawn(async move {
            ci.authorize(request("docs", "burst", "alice", "read"))
                .await
        }));
    }
    let mut indexes = std::collections::BTreeSet::new();
    for t in tasks {
        // Under load a duplicate may time out (outcome unknown); the
        // committed record is then read back with the same id.
        let r = t.await??.into_inner();
        let r = match r.record {
            Some(_) => r,
            None => {
                c.decide(0, request("docs", "burst", "alice", "read"))
                    .await?
            }
        };
        indexes.insert(r.record.map(|x| x.index).unwrap_or(0));
    }
    assert_eq!(
        indexes.len(),
        1,
        "one record for one request id: {indexes:?}"
    );
    c.wait_converged(2, Duration::from_secs(10)).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t12_bad_input_is_rejected_and_changes_nothing() -> anyhow::Result<()> {
    let c = Cluster::start(ClusterOpts::default()).await?;
    c.publish("docs", POLICY).await?;
    let mut n = c.client(0).await?;
    c.decide(0, request("docs", "ok", "alice", "read")).await?;
    c.wait_converged(1, Duration::from_secs(10)).await?;
    let before: Vec<usize> = (0..3).collect();
    let mut states = Vec::new();
    for i in &before {
        let s = c.status(*i).await?;
        states.push((s.decision_count, s.chain_head_hash));
    }
    let l = c.wait_leader(Duration::from_secs(10)).await?;

    // Invalid Cedar: INVALID_ARGUMENT with Cedar's message, nothing committed.
    let mut leader = c.client(l).await?;
    let err = leader
        .publish_policy(v1::PublishPolicyRequest {
            domain: "docs".into(),
            policy_text: "permit(principal, action, resource) when { context.x ==".into(),
            schema: None,
            activate: true,
            ..Default::default()
        })
        .await
        .expect_err("invalid Cedar must be refused");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("does not parse"),
        "{}",
        err.message()
    );

    // Malformed requests: each INVALID_ARGUMENT.
    let mut bad = Vec::new();
    let mut r = request("docs", "m1", "alice", "read");
    r.principal = "alice".into();
    bad.push(("entity uid", r));
    let mut r = request("docs", "m2", "alice", "read");
    r.context_json = "{not json".into();
    bad.push(("context json", r));
    let mut r = request("docs", "m3", "alice", "read");
    r.context_json = "[1,2]".into();
    bad.push(("context not an object", r));
    let mut r = request("docs", "m4", "alice", "read");
    r.context_json = format!("{{\"big\":\"{}\"}}", "x".repeat(64 * 1024));
    bad.push(("oversized context", r));
    let mut r = request("docs", "m5", "alice", "read");
    r.entities_json = Some("{\"not\":\"an array\"}".into());
    bad.push(("entities not an array", r));
    let mut r = request("docs", "", "alice", "read");
    r.request_id = String::new();
    bad.push(("empty request id", r));
    let mut r = request("Bad Domain", "m6", "alice", "read");
    r.domain = "Bad Domain".into();
    bad.push(("bad domain", r));
    for (what, r) in bad {
        let e = n.authorize(r).await.expect_err(what);
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{what}: {e}");
    }
    // Oversized gRPC message: refused by the transport limit.
    let mut r = request("docs", "huge", "alice", "read");
    r.entities_json = Some(format!("[{}]", "{}".repeat(3 * 1024 * 1024)));
    assert!(n.authorize(r).await.is_err());

    // Nothing changed anywhere: same decisions, same head, no new log entry.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (k, i) in before.iter().enumerate() {
        let s = c.status(*i).await?;
        assert_eq!((s.decision_count, s.chain_head_hash), states[k].clone());
    }
    let v2 = c
        .client(l)
        .await?
        .get_policy(v1::GetPolicyRequest {
            domain: "docs".into(),
            version: 2,
        })
        .await;
    assert_eq!(
        v2.map(|_| ()).map_err(|e| e.code()),
        Err(tonic::Code::NotFound)
    );
    Ok(())
}

/// Commit probes: through every node (followers forward), each commits and
/// is applied, and none makes, records or attests a decision. A contained
/// node refuses them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t13_probes_commit_everywhere_change_nothing_and_fail_closed() -> anyhow::Result<()> {
    let mut c = Cluster::start(ClusterOpts::default()).await?;
    c.publish("docs", POLICY).await?;
    assert!(is_allow(
        &c.decide(0, request("docs", "before", "alice", "read"))
            .await?
    ));
    c.wait_converged(1, Duration::from_secs(10)).await?;
    let l = c.wait_leader(Duration::from_secs(10)).await?;
    let export = c.export(l).await?;
    let state = |s: &v1::StatusResponse| {
        (
            s.decision_count,
            s.chain_head_hash.clone(),
            s.last_final_checkpoint,
        )
    };
    let before = state(&c.status(l).await?);

    let mut last = 0;
    for i in 0..3 {
        let p = c
            .client_as(i, "agent")
            .await?
            .probe(v1::ProbeRequest {})
            .await?;
        let p = p.into_inner();
        assert!(p.log_index > last, "node {i}: {p:?} after index {last}");
        assert_eq!(p.leader_id, c.nodes[l].id, "node {i}: {p:?}");
        assert_eq!(p.served_by, c.nodes[i].id);
        last = p.log_index;
    }
    // The CLI: three in a row, JSON, exit 0.
    let (code, out, err) = quorate_e2e::cli(&[
        "probe",
        "--count",
        "3",
        "--endpoint",
        &c.nodes[(l + 1) % 3].grpc,
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out)?;
    assert_eq!(v["committed"], 3, "{out}");
    let indexes: Vec<u64> = v["probes"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| p["log_index"].as_u64()).collect())
        .unwrap_or_default();
    assert_eq!(indexes.len(), 3, "{out}");
    assert!(
        indexes.windows(2).all(|w| w[0] < w[1]) && indexes[0] > last,
        "{out}"
    );
    last = indexes[2];

    // Applied everywhere, and nothing of the decision log moved: no record,
    // no new head, no checkpoint; the exported log is byte for byte the same.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    for i in 0..3 {
        loop {
            let s = c.status(i).await?;
            if s.last_applied_index >= last {
                assert_eq!(state(&s), before, "node {i}");
                break;
            }
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "node {i} did not apply index {last}: {s:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(c.export(i).await?, export, "node {i}");
    }

    // Fail closed: once the survivor of two crashes contains, its probes
    // are refused with CONTAINED, and nothing is appended.
    let survivor = l;
    for i in 0..3 {
        if i != survivor {
            c.kill9(i);
        }
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while c.status(survivor).await?.containment_reason != "NO_QUORUM" {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the survivor did not contain"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let last_log = c.status(survivor).await?.last_log_index;
    let e = c
        .client_as(survivor, "agent")
        .await?
        .probe(v1::ProbeRequest {})
        .await
        .expect_err("a contained node committed a probe");
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e}");
    let code = e
        .metadata()
        .get(quorate_proto::CODE_METADATA_KEY)
        .and_then(|v| v.to_str().ok());
    assert_eq!(code, Some("CONTAINED"), "{e}");
    assert!(e.message().contains("NO_QUORUM"), "{e}");
    let (code, _, err) = quorate_e2e::cli(&["probe", "--endpoint", &c.nodes[survivor].grpc]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("CONTAINED"), "{err}");
    assert_eq!(c.status(survivor).await?.last_log_index, last_log);
    Ok(())
}
