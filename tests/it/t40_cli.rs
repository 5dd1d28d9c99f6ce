//! The CLI contract scripts rely on: `quorate authorize` exits 0 on ALLOW,
//! 1 on DENY and 2 on bad input or error; output is JSON.

use std::time::Duration;

use quorate_e2e::{Cluster, ClusterOpts, POLICY};

fn quorate(args: &[&str]) -> (i32, String, String) {
    quorate_e2e::cli(args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t40_authorize_exit_codes_and_json_output() -> anyhow::Result<()> {
    let c = Cluster::start(ClusterOpts::default()).await?;
    let ep = c.nodes[1].grpc.clone();
    let policy = c.dir.path().join("p.cedar");
    std::fs::write(&policy, POLICY)?;
    let publish = |extra: &[&str]| {
        quorate(&quorate_e2e::publish_args(
            &ep,
            "docs",
            policy.to_str().unwrap_or_default(),
            extra,
        ))
    };
    let (code, out, err) = publish(&["--activate"]);
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out)?;
    assert_eq!(v["version"], 1);

    // Warm the path through node 2 (a committed decision), so the exit-code
    // checks below are not racing the cluster's first seconds.
    c.decide(1, quorate_e2e::request("docs", "warm", "alice", "read"))
        .await?;
    let authz = |who: &str, rid: &str| {
        quorate(&[
            "authorize",
            "--endpoint",
            &ep,
            "--domain",
            "docs",
            "--principal",
            &format!("User::\"{who}\""),
            "--action",
            "Action::\"read\"",
            "--resource",
            "Doc::\"1\"",
            "--request-id",
            rid,
        ])
    };
    let (code, out, _) = authz("alice", "cli-1");
    assert_eq!(code, 0, "ALLOW exits 0: {out}");
    let v: serde_json::Value = serde_json::from_str(&out)?;
    assert_eq!(v["decision"], "ALLOW");
    assert_eq!(v["record"]["index"], 2);
    let (code, out, _) = authz("bob", "cli-2");
    assert_eq!(code, 1, "DENY exits 1: {out}");
    let v: serde_json::Value = serde_json::from_str(&out)?;
    assert_eq!(
        (v["decision"].as_str(), v["reason"].as_str()),
        (Some("DENY"), Some("POLICY"))
    );

    // Bad input exits 2 and says what is wrong.
    let (code, _, err) = quorate(&[
        "authorize",
        "--endpoint",
        &ep,
        "--domain",
        "docs",
        "--principal",
        "alice",
        "--action",
        "Action::\"read\"",
        "--resource",
        "Doc::\"1\"",
    ]);
    assert_eq!(code, 2);
    assert!(
        err.contains("INVALID_ARGUMENT") && err.contains("principal"),
        "{err}"
    );
    // An unreachable endpoint is an error, never a decision.
    let (code, _, err) = quorate(&[
        "authorize",
        "--endpoint",
        "127.0.0.1:1",
        "--domain",
        "docs",
        "--principal",
        "User::\"alice\"",
        "--action",
        "Action::\"read\"",
        "--resource",
        "Doc::\"1\"",
    ]);
    assert_eq!(code, 2, "{err}");
    // An invalid policy file exits 2 with Cedar's message.
    std::fs::write(&policy, "permit(")?;
    let (code, _, err) = publish(&[]);
    assert_eq!(code, 2);
    assert!(err.contains("INVALID_POLICY"), "{err}");

    // Status and the log are JSON; the export is one record per line.
    let (code, out, _) = quorate(&["status", "--endpoint", &ep]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out)?;
    assert_eq!(v["quorate"], true);
    c.wait_converged(3, Duration::from_secs(10)).await?;
    let (code, out, _) = quorate(&["log", "export", "--endpoint", &ep]);
    assert_eq!(code, 0);
    // The export is typed JSON lines: a header, then policy events, records
    // and checkpoints. Its records are exactly the node's decision log.
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(lines[0]["type"], "header");
    assert_eq!(lines[0]["format"], "quorate-export/v1");
    let mut records: Vec<serde_json::Value> = lines
        .into_iter()
        .filter(|l| l["type"] == "record")
        .collect();
    for r in &mut records {
        r.as_object_mut().map(|o| o.remove("type"));
    }
    let listed: Vec<serde_json::Value> = c
        .export(1)
        .await?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(records, listed);
    Ok(())
}

/// A node stub that answers every Authorize with ALLOW and a perfectly
/// valid committed record, but of another request (alice's). Every other
/// call is UNIMPLEMENTED.
struct LyingNode {
    record: quorate_proto::v1::DecisionRecord,
}

type Stream<T> = std::pin::Pin<Box<dyn futures::Stream<Item = Result<T, tonic::Status>> + Send>>;

#[tonic::async_trait]
impl quorate_proto::v1::governance_server::Governance for LyingNode {
    async fn authorize(
        &self,
        _: tonic::Request<quorate_proto::v1::AuthorizeRequest>,
    ) -> Result<tonic::Response<quorate_proto::v1::AuthorizeResponse>, tonic::Status> {
        Ok(tonic::Response::new(quorate_proto::v1::AuthorizeResponse {
            decision: quorate_proto::v1::Decision::Allow as i32,
            reason: String::new(),
            message: "allowed".into(),
            record: Some(self.record.clone()),
            replayed: false,
            served_by: 1,
            receipt_json: None,
        }))
    }
    type ListDecisionsStream = Stream<quorate_proto::v1::DecisionRecord>;
    type ExportLogStream = Stream<quorate_proto::v1::ExportLine>;
    type WatchDecisionsStream = Stream<quorate_proto::v1::DecisionRecord>;
    async fn list_decisions(
        &self,
        _: tonic::Request<quorate_proto::v1::ListDecisionsRequest>,
    ) -> Result<tonic::Response<Self::ListDecisionsStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("stub"))
    }
    async fn export_log(
        &self,
        _: tonic::Request<quorate_proto::v1::ExportLogRequest>,
    ) -> Result<tonic::Response<Self::ExportLogStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("stub"))
    }
    async fn watch_decisions(
        &self,
        _: tonic::Request<quorate_proto::v1::WatchDecisionsRequest>,
    ) -> Result<tonic::Response<Self::WatchDecisionsStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("stub"))
    }
    async fn probe(
        &self,
        _: tonic::Request<quorate_proto::v1::ProbeRequest>,
    ) -> Result<tonic::Response<quorate_proto::v1::ProbeResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("stub"))
    }
    async fn publish_policy(
        &self,
        _: tonic::Request<quorate_proto::v1::PublishPolicyRequest>,
    ) -> Result<tonic::Response<quorate_proto::v1::PublishPolicyResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("stub"))
    }
    async fn activate_policy(
        &self,
        _: tonic::Request<quorate_proto::v1::ActivatePolicyRequest>,
    ) -> Result<tonic::Response<quorate_proto::v1::ActivatePolicyResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("stub"))
    }
    async fn get_policy(
        &self,
        _: tonic::Request<quorate_proto::v1::GetPolicyRequest>,
    ) -> Result<tonic::Response<quorate_proto::v1::PolicyVersion>, tonic::Status> {
        Err(tonic::Status::unimplemented("stub"))
    }
    async fn get_decision(
        &self,
        _: tonic::Request<quorate_proto::v1::GetDecisionRequest>,
    ) -> Result<tonic::Response<quorate_proto::v1::DecisionRecord>, tonic::Status> {
        Err(tonic::Status::unimplemented("stub"))
    }
    async fn get_lineage(
        &self,
        _: tonic::Request<quorate_proto::v1::GetLineageRequest>,
    ) -> Result<tonic::Response<quorate_proto::v1::LineageResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("stub"))
    }
    async fn backup(
        &self,
        _: tonic::Request<quorate_proto::v1::BackupRequest>,
    ) -> Result<tonic::Response<quorate_proto::v1::BackupResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("stub"))
    }
    async fn status(
        &self,
        _: tonic::Request<quorate_proto::v1::StatusRequest>,
    ) -> Result<tonic::Response<quorate_proto::v1::StatusResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("stub"))
    }
    async fn get_receipt(
        &self,
        _: tonic::Request<quorate_proto::v1::GetDecisionRequest>,
    ) -> Result<tonic::Response<quorate_proto::v1::ProofDocument>, tonic::Status> {
        Err(tonic::Status::unimplemented("stub"))
    }
    async fn get_checkpoint(
        &self,
        _: tonic::Request<quorate_proto::v1::GetCheckpointRequest>,
    ) -> Result<tonic::Response<quorate_proto::v1::ProofDocument>, tonic::Status> {
        Err(tonic::Status::unimplemented("stub"))
    }
    async fn get_consistency_proof(
        &self,
        _: tonic::Request<quorate_proto::v1::GetConsistencyProofRequest>,
    ) -> Result<tonic::Response<quorate_proto::v1::ProofDocument>, tonic::Status> {
        Err(tonic::Status::unimplemented("stub"))
    }
    async fn get_trust(
        &self,
        _: tonic::Request<quorate_proto::v1::GetTrustRequest>,
    ) -> Result<tonic::Response<quorate_proto::v1::ProofDocument>, tonic::Status> {
        Err(tonic::Status::unimplemented("stub"))
    }
    async fn add_learner(
        &self,
        _: tonic::Request<quorate_proto::v1::AddLearnerRequest>,
    ) -> Result<tonic::Response<quorate_proto::v1::MembershipResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("stub"))
    }
    async fn promote_voter(
        &self,
        _: tonic::Request<quorate_proto::v1::MembershipChangeRequest>,
    ) -> Result<tonic::Response<quorate_proto::v1::MembershipResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("stub"))
    }
    async fn remove_node(
        &self,
        _: tonic::Request<quorate_proto::v1::MembershipChangeRequest>,
    ) -> Result<tonic::Response<quorate_proto::v1::MembershipResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("stub"))
    }
    async fn start_rollout(
        &self,
        _: tonic::Request<quorate_proto::v1::StartRolloutRequest>,
    ) -> Result<tonic::Response<quorate_proto::v1::RolloutDocument>, tonic::Status> {
        Err(tonic::Status::unimplemented("stub"))
    }
    async fn promote_rollout(
        &self,
        _: tonic::Request<quorate_proto::v1::RolloutRequest>,
    ) -> Result<tonic::Response<quorate_proto::v1::RolloutDocument>, tonic::Status> {
        Err(tonic::Status::unimplemented("stub"))
    }
    async fn rollback_rollout(
        &self,
        _: tonic::Request<quorate_proto::v1::RolloutRequest>,
    ) -> Result<tonic::Response<quorate_proto::v1::RolloutDocument>, tonic::Status> {
        Err(tonic::Status::unimplemented("stub"))
    }
    async fn get_rollout(
        &self,
        _: tonic::Request<quorate_proto::v1::RolloutRequest>,
    ) -> Result<tonic::Response<quorate_proto::v1::RolloutDocument>, tonic::Status> {
        Err(tonic::Status::unimplemented("stub"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t41_the_cli_refuses_a_valid_record_of_another_request() -> anyhow::Result<()> {
    // Alice's committed ALLOW: hash valid, decision ALLOW.
    let alice = quorate_core::DecisionRecord {
        index: 7,
        log_index: 9,
        request: quorate_core::AuthorizeRequest {
            domain: "docs".into(),
            request_id: "alice-1".into(),
            principal: r#"User::"alice""#.into(),
            action: r#"Action::"read""#.into(),
            resource: r#"Doc::"1""#.into(),
            context: "{}".into(),
            entities: None,
            parent: None,
            trace_id: None,
        },
        decision: quorate_core::Decision::Allow,
        reason: None,
        determining_policies: vec!["policy0".into()],
        errors: vec![],
        policy_version: Some(1),
        policy_hash: Some(quorate_core::Digest([3; 32])),
        timestamp_ms: 1,
        prev_hash: quorate_core::GENESIS_HASH,
        hash: quorate_core::GENESIS_HASH,
        shadow: None,
    }
    .seal();
    assert!(alice.hash_is_valid());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    let stub = quorate_proto::v1::governance_server::GovernanceServer::new(LyingNode {
        record: quorate_proto::record_to_wire(&alice),
    });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(stub)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let ask = |who: &str, rid: &str| {
        quorate(&[
            "--insecure",
            "authorize",
            "--endpoint",
            &addr,
            "--domain",
            "docs",
            "--principal",
            &format!("User::\"{who}\""),
            "--action",
            "Action::\"read\"",
            "--resource",
            "Doc::\"1\"",
            "--request-id",
            rid,
        ])
    };
    // Bob asks; the stub answers ALLOW with alice's record.
    let (code, out, err) = ask("bob", "bob-1");
    assert_eq!(
        code, 1,
        "the CLI believed another request's record: {out}{err}"
    );
    let v: serde_json::Value = serde_json::from_str(&out)?;
    assert_eq!(v["decision"], "DENY", "{v}");
    assert_eq!(v["reason"], "INTEGRITY_FAILURE", "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap_or("")
            .contains("another request"),
        "{v}"
    );
    // Same principal, another request id: refused too.
    let (code, _, _) = ask("alice", "alice-2");
    assert_eq!(code, 1);
    // The very request the record decides: believed.
    let (code, out, err) = ask("alice", "alice-1");
    assert_eq!(code, 0, "{out}{err}");
    Ok(())
}

/// `quorate bench` against a real cluster: closed and open loop report
/// what they measured (every ALLOW an attested one, nothing lost between
/// the counts), and bad arguments are refused with exit 2 before any load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t42_bench_reports_what_it_measured() -> anyhow::Result<()> {
    let c = Cluster::start(ClusterOpts::default()).await?;
    let policy = c.dir.path().join("p.cedar");
    std::fs::write(&policy, POLICY)?;
    let ep = c.nodes[0].grpc.clone();
    let (code, out, err) = quorate(&quorate_e2e::publish_args(
        &ep,
        "docs",
        policy.to_str().unwrap_or_default(),
        &["--activate"],
    ));
    assert_eq!(code, 0, "{out}{err}");
    c.decide(0, quorate_e2e::request("docs", "warm", "alice", "read"))
        .await?;
    let endpoints = c
        .nodes
        .iter()
        .map(|n| n.grpc.trim_start_matches("http://").to_string())
        .collect::<Vec<_>>()
        .join(",");
    let bench = |extra: &[&str]| {
        let mut args = vec![
            "bench",
            "--endpoints",
            &endpoints,
            "--domain",
            "docs",
            "--clients",
            "3",
            "--duration",
            "2",
            "--warmup",
            "0",
            "--json",
        ];
        args.extend_from_slice(extra);
        quorate(&args)
    };
    for extra in [&[][..], &["--rate", "30"][..]] {
        let (code, out, err) = bench(extra);
        assert_eq!(code, 0, "{extra:?}: {out}{err}");
        let v: serde_json::Value = serde_json::from_str(&out)?;
        let q = &v["quorate"];
        let (ops, allow, deny) = (q["ops"].as_u64(), q["allow"].as_u64(), q["deny"].as_u64());
        let (Some(ops), Some(allow), Some(deny)) = (ops, allow, deny) else {
            panic!("{extra:?}: counts missing in {out}");
        };
        assert!(ops > 0, "{extra:?}: nothing measured: {out}");
        assert_eq!(allow + deny, ops, "{out}");
        assert!(allow > 0 && deny > 0, "alice is allowed, bob denied: {out}");
        assert_eq!(
            q["receipts"].as_u64(),
            Some(allow),
            "every ALLOW attested: {out}"
        );
        assert_eq!(q["errors"].as_u64(), Some(0), "{out}");
        assert_eq!(q["deny_reasons"]["POLICY"].as_u64(), Some(deny), "{out}");
        assert!(v["etcd"].is_null(), "no etcd was asked for: {out}");
        if extra.is_empty() {
            assert_eq!(v["mode"], "closed");
            assert!(q.get("service_ms").is_none(), "{out}");
        } else {
            // 30/s for 2 s on a fixed schedule: about 60 requests, each
            // either answered or counted as missed.
            assert_eq!(v["mode"], "open");
            let missed = q["missed"].as_u64().unwrap_or(u64::MAX);
            assert!((55..=62).contains(&(ops + missed)), "{out}");
            assert!(q["service_ms"]["p50"].as_f64().is_some(), "{out}");
        }
    }
    for (bad, says) in [
        (&["--clients", "0"][..], "--clients must be at least 1"),
        (&["--rate", "0"][..], "--rate must be at least 1"),
        (&["--rounds", "0"][..], "--rounds must be at least 1"),
    ] {
        let mut args = vec!["bench", "--endpoints", &endpoints, "--domain", "docs"];
        args.extend_from_slice(bad);
        let (code, out, err) = quorate(&args);
        assert_eq!(code, 2, "{bad:?}: {out}{err}");
        assert!(err.contains(says), "{bad:?}: {err}");
    }
    Ok(())
}
