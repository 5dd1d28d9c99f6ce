//! quorate-client against a real TLS cluster: an endpoint list with a dead
//! node in it, verified typed answers (the receipt checked against the
//! cluster's trust file), retries that keep the request id (a retry is the
//! same decision), errors that are never permissions, leader discovery, and
//! containment answered as a DENY once no node can decide.

use std::time::Duration;

use quorate_client::{Client, Error, Outcome, Request};
use quorate_e2e::{Cluster, ClusterOpts, POLICY};

fn read(principal: &str, id: &str) -> Request {
    Request::new(
        "pay",
        format!("User::\"{principal}\""),
        r#"Action::"read""#,
        r#"Doc::"1""#,
    )
    .request_id(id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t101_the_client_retries_safely_and_believes_only_verified_allows() -> anyhow::Result<()> {
    let mut c = Cluster::start(ClusterOpts {
        tls: true,
        ..Default::default()
    })
    .await?;
    let certs = c.certs.clone().ok_or_else(|| anyhow::anyhow!("no certs"))?;
    c.publish("pay", POLICY).await?;
    let mut trust_api = c.client_as(0, "auditor").await?;
    let trust_json = trust_api
        .get_trust(quorate_proto::v1::GetTrustRequest {})
        .await?
        .into_inner()
        .json;
    let trust = serde_json::from_str(&trust_json)?;
    // A dead endpoint first: the client moves on.
    let dead = format!("127.0.0.1:{}", quorate_e2e::free_port()?);
    let mut endpoints = vec![dead];
    endpoints.extend(c.nodes.iter().map(|n| n.grpc.clone()));
    let client = Client::builder(endpoints.clone())
        .certs_dir(&certs, "agent")?
        .trust(trust)
        .backoff(Duration::from_millis(50))
        .build()?;

    // An ALLOW: its record decides the request, its receipt verified under
    // the trust file.
    let Outcome::Allow(a) = client.authorize(read("alice", "c1")).await? else {
        anyhow::bail!("alice may read");
    };
    assert_eq!(a.record.request.request_id, "c1");
    assert!(a.receipt.is_some() && a.receipt_json.is_some());
    assert!(!a.replayed);
    // The same request id again is the same decision.
    let Outcome::Allow(again) = client.authorize(read("alice", "c1")).await? else {
        anyhow::bail!("a replay is the same ALLOW");
    };
    assert!(again.replayed);
    assert_eq!(again.record, a.record);
    // The policy's DENY comes with its record.
    let Outcome::Deny(d) = client.authorize(read("mallory", "c2")).await? else {
        anyhow::bail!("mallory may not read");
    };
    assert_eq!(d.reason, "POLICY");
    assert!(d.record.is_some());

    // Errors are not permissions, and commit nothing.
    let before = c.settled(Duration::from_secs(10)).await?;
    let bad = Request::new("pay", "not a uid", r#"Action::"read""#, r#"Doc::"1""#);
    assert!(matches!(
        client.authorize(bad).await,
        Err(Error::InvalidArgument(_))
    ));
    let auditor = c.governed("auditor")?;
    assert!(matches!(
        auditor.authorize(read("alice", "c3")).await,
        Err(Error::PermissionDenied(_))
    ));
    assert_eq!(c.settled(Duration::from_secs(10)).await?, before);

    // Leader discovery: the leader's API, and the client prefers it.
    let mut leader = client.leader().await?;
    let s = leader
        .status(quorate_proto::v1::StatusRequest {})
        .await?
        .into_inner();
    assert_eq!(s.role, "leader");

    // The leader dies: the client rides out the election.
    let li = c.wait_leader(Duration::from_secs(10)).await?;
    c.kill9(li);
    let after = match client.authorize(read("alice", "c4")).await? {
        Outcome::Allow(a) => a,
        other => anyhow::bail!("a majority remains: alice may read, not {other:?}"),
    };
    assert!(after.record.index > a.record.index);

    // One node left: no node can decide, and the answer is a DENY, never
    // an ALLOW.
    let other = (0..3)
        .find(|&i| i != li && c.nodes[i].is_running())
        .unwrap_or(0);
    c.kill9(other);
    let start = std::time::Instant::now();
    for n in 0.. {
        match client.authorize(read("alice", &format!("late-{n}"))).await {
            Ok(Outcome::Allow(a)) => anyhow::bail!("a minority allowed: {a:?}"),
            Ok(Outcome::Deny(d)) if d.reason == "NO_QUORUM" => {
                assert!(d.record.is_none());
                break;
            }
            other => {
                anyhow::ensure!(
                    start.elapsed() < Duration::from_secs(30),
                    "never contained: {other:?}"
                );
            }
        }
    }
    Ok(())
}
