//! Staged cross-domain rollouts: shadow, promote, rollback, with shadow
//! counts checked against an independent re-evaluation, and plans that
//! must change nothing when refused.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::bail;
use quorate_core::Decision;
use quorate_e2e::{Cluster, ClusterOpts, cli, is_allow, list, request};
use quorate_policy::{ActivePolicy, CompiledPolicy, DomainState, Position, decide};
use quorate_proto::v1;

const V1: &str = r#"
permit(principal == User::"alice", action == Action::"read", resource);
permit(principal == User::"bob", action == Action::"read", resource);
"#;

/// The candidate: bob loses read (ALLOW -> DENY), carol gains it.
const V2: &str = r#"
permit(principal == User::"alice", action == Action::"read", resource);
permit(principal == User::"carol", action == Action::"read", resource);
"#;

const DOMAINS: [&str; 3] = ["pay", "ship", "auth"];
const PEOPLE: [&str; 4] = ["alice", "bob", "carol", "dave"];

fn run_cli(args: &[&str]) -> (i32, serde_json::Value, String) {
    let (code, out, err) = cli(args);
    (code, serde_json::from_str(&out).unwrap_or_default(), err)
}

/// 4 decisions per person in every domain, through node `via`.
async fn traffic(c: &Cluster, via: usize, round: &str) -> anyhow::Result<()> {
    for d in DOMAINS {
        for p in PEOPLE {
            for k in 0..4 {
                c.decide(via, request(d, &format!("{round}-{p}-{k}"), p, "read"))
                    .await?;
            }
        }
    }
    Ok(())
}

async fn active_versions(c: &Cluster, node: usize) -> anyhow::Result<Vec<u64>> {
    let mut out = Vec::new();
    for d in DOMAINS {
        let p = c
            .client(node)
            .await?
            .get_policy(v1::GetPolicyRequest {
                domain: d.into(),
                version: 0,
            })
            .await?
            .into_inner();
        out.push(p.version);
    }
    Ok(out)
}

/// Every node reports `want` as the active versions of DOMAINS.
async fn assert_versions_everywhere(c: &Cluster, want: [u64; 3]) -> anyhow::Result<()> {
    for node in 0..3 {
        assert_eq!(active_versions(c, node).await?, want, "node {node}");
    }
    Ok(())
}

async fn wait_decision(
    c: &Cluster,
    node: usize,
    d: &str,
    p: &str,
    allow: bool,
) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut n = 0;
    loop {
        n += 1;
        let r = c
            .decide(
                node,
                request(d, &format!("probe-{d}-{p}-{n}-{allow}"), p, "read"),
            )
            .await?;
        if is_allow(&r) == allow {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(10) {
            bail!("{p} in {d}: expected allow={allow}, got {r:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rollout_shadows_promotes_and_rolls_back_with_exact_counts() -> anyhow::Result<()> {
    let c = Cluster::start(ClusterOpts::default()).await?;
    for d in DOMAINS {
        c.publish(d, V1).await?;
    }
    let ep = c.nodes[0].grpc.clone();
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("v2.cedar"), V2)?;
    std::fs::write(dir.path().join("broken.cedar"), "permit(principal, action")?;
    let plan = |id: &str, file: &str| {
        format!(
            "id = \"{id}\"\n\
             [[candidates]]\ndomain = \"pay\"\nfile = \"{file}\"\n\
             [[candidates]]\ndomain = \"ship\"\nfile = \"v2.cedar\"\n\
             [[candidates]]\ndomain = \"auth\"\nfile = \"v2.cedar\"\n\
             [[stages]]\ndomains = [\"pay\"]\nshadow_decisions = 12\n\
             [[stages]]\ndomains = [\"ship\", \"auth\"]\n"
        )
    };

    // A candidate that does not parse refuses the plan; nothing changes.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, plan("broken", "broken.cedar"))?;
    let before = c.settled(Duration::from_secs(10)).await?;
    let (code, _, err) = run_cli(&[
        "rollout",
        "start",
        "--endpoint",
        &ep,
        "--plan",
        bad.to_str().unwrap_or_default(),
    ]);
    assert_eq!(code, 2);
    assert!(
        err.contains("INVALID_POLICY") && err.contains("\"pay\""),
        "{err}"
    );
    let (code, _, err) = run_cli(&["rollout", "status", "--endpoint", &ep]);
    assert_eq!(code, 2, "no rollout exists: {err}");
    assert!(err.contains("NOT_FOUND"), "{err}");
    assert_versions_everywhere(&c, [1, 1, 1]).await?;
    for node in 0..3 {
        let mut cl = c.client(node).await?;
        for d in DOMAINS {
            let v2 = cl
                .get_policy(v1::GetPolicyRequest {
                    domain: d.into(),
                    version: 2,
                })
                .await;
            assert_eq!(
                v2.map(|_| ()).map_err(|e| e.code()),
                Err(tonic::Code::NotFound)
            );
        }
    }
    assert_eq!(c.settled(Duration::from_secs(10)).await?, before);

    // Start: candidates published inactive, stage 1 (pay) in shadow.
    let good = dir.path().join("plan.toml");
    std::fs::write(&good, plan("tighten-read", "v2.cedar"))?;
    let (code, r, err) = run_cli(&[
        "rollout",
        "start",
        "--endpoint",
        &ep,
        "--plan",
        good.to_str().unwrap_or_default(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(r["phase"], "shadow");
    assert_eq!(r["stages"][0]["domains"][0]["candidate_version"], 2);
    assert_eq!(r["stages"][0]["domains"][0]["previous_version"], 1);
    // The same id cannot start twice, and nothing is enforced yet.
    let (code, _, _) = run_cli(&[
        "rollout",
        "start",
        "--endpoint",
        &ep,
        "--plan",
        good.to_str().unwrap_or_default(),
    ]);
    assert_eq!(code, 2);
    assert_eq!(active_versions(&c, 1).await?, vec![1, 1, 1]);

    // The shadow minimum holds promote back.
    let (code, _, err) = run_cli(&["rollout", "promote", "--endpoint", &ep]);
    assert_eq!(code, 2);
    assert!(
        err.contains("FAILED_PRECONDITION") && err.contains("0 of the 12"),
        "{err}"
    );

    traffic(&c, 1, "a").await?;
    // A hand activation of a domain in the rollout is refused.
    let (code, _, err) = run_cli(&[
        "policy",
        "activate",
        "--endpoint",
        &ep,
        "--domain",
        "pay",
        "--version",
        "2",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("FAILED_PRECONDITION"), "{err}");

    // Promote stage 1: pay switches to v2 at one log index on every node.
    let (code, r, err) = run_cli(&["rollout", "promote", "--endpoint", &ep]);
    assert_eq!(code, 0, "{err}");
    assert!(r["stages"][0]["promoted_log_index"].as_u64().is_some());
    assert_eq!(r["stage"], 1);
    assert_versions_everywhere(&c, [2, 1, 1]).await?;
    wait_decision(&c, 2, "pay", "bob", false).await?;

    traffic(&c, 2, "b").await?;
    let (code, r, err) = run_cli(&["rollout", "promote", "--endpoint", &ep]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(r["phase"], "complete");
    assert_versions_everywhere(&c, [2, 2, 2]).await?;

    // The counts, from the status on another node, against an independent
    // re-evaluation of every shadowed record under the candidate.
    let (code, status, err) = run_cli(&["rollout", "status", "--endpoint", &c.nodes[2].grpc]);
    assert_eq!(code, 0, "{err}");
    let candidate = CompiledPolicy::compile(V2, None, &Default::default())?;
    let hash = quorate_core::policy_content_hash(V2, None);
    let mut expected: BTreeMap<String, [u64; 4]> = BTreeMap::new();
    for rec in list(&mut c.client(0).await?, 1).await? {
        let Some(s) = &rec.shadow else { continue };
        assert_eq!(s.rollout_id, "tighten-read");
        let offline = decide(
            &rec.request,
            DomainState::Active(ActivePolicy {
                version: 2,
                hash,
                compiled: &candidate,
            }),
            Position {
                index: rec.index,
                log_index: rec.log_index,
                timestamp_ms: rec.timestamp_ms,
                prev_hash: rec.prev_hash,
            },
        );
        assert_eq!(offline.decision, s.decision, "record {}", rec.index);
        let e = expected.entry(rec.request.domain.clone()).or_default();
        e[0] += 1;
        match (rec.decision, offline.decision) {
            (Decision::Allow, Decision::Deny) => e[2] += 1,
            (Decision::Deny, Decision::Allow) => e[3] += 1,
            _ => e[1] += 1,
        }
    }
    let mut reported: BTreeMap<String, [u64; 4]> = BTreeMap::new();
    let mut samples = 0;
    for stage in status["stages"].as_array().into_iter().flatten() {
        for d in stage["domains"].as_array().into_iter().flatten() {
            let n = &d["counts"];
            let get = |k: &str| n[k].as_u64().unwrap_or(u64::MAX);
            reported.insert(
                d["domain"].as_str().unwrap_or_default().to_string(),
                [
                    get("shadowed"),
                    get("same"),
                    get("allow_to_deny"),
                    get("deny_to_allow"),
                ],
            );
            samples += d["samples"].as_array().map_or(0, Vec::len);
        }
    }
    assert_eq!(reported, expected);
    // Every domain was shadowed: bob's 4 reads flip to DENY, carol's to ALLOW.
    for d in DOMAINS {
        assert_eq!(expected[d], [16, 8, 4, 4], "{d}");
    }
    assert_eq!(samples, 3 * 8);

    // Rollback: every domain back to v1 at one log index.
    let (code, r, err) = run_cli(&["rollout", "rollback", "--endpoint", &ep]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(r["phase"], "rolled_back");
    assert_versions_everywhere(&c, [1, 1, 1]).await?;
    wait_decision(&c, 0, "pay", "bob", true).await?;
    let (code, _, _) = run_cli(&["rollout", "rollback", "--endpoint", &ep]);
    assert_eq!(code, 2, "a rolled-back rollout cannot roll back again");

    // The export, shadows included, verifies offline with Cedar.
    let trust = dir.path().join("trust.json");
    let export = dir.path().join("export.jsonl");
    let (code, t, err) = cli(&["keys", "export", "--endpoint", &ep]);
    assert_eq!(code, 0, "{err}");
    std::fs::write(&trust, t)?;
    let (code, _, err) = cli(&[
        "log",
        "export",
        "--endpoint",
        &ep,
        "--out",
        export.to_str().unwrap_or_default(),
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = cli(&[
        "verify",
        "--trust",
        trust.to_str().unwrap_or_default(),
        "--log",
        export.to_str().unwrap_or_default(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    Ok(())
}
