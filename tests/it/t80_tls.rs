//! Transport security: mutual TLS on every connection, roles from client
//! certificates, foreign CAs and unknown identities refused, certificates
//! rotated without a restart.

use std::time::{Duration, Instant};

use anyhow::bail;
use quorate_e2e::{
    Cluster, ClusterOpts, POLICY, cli, connect, connect_tls, http_get, is_allow, request,
};
use quorate_proto::v1;

fn code<T: std::fmt::Debug>(r: Result<T, tonic::Status>) -> tonic::Code {
    match r {
        Ok(v) => panic!("expected a refusal, got {v:?}"),
        Err(s) => s.code(),
    }
}

fn publish_req() -> v1::PublishPolicyRequest {
    v1::PublishPolicyRequest {
        domain: "tls".into(),
        policy_text: POLICY.into(),
        schema: None,
        activate: true,
        publisher_key: None,
        signature: None,
    }
}

async fn decision_count(c: &Cluster) -> anyhow::Result<u64> {
    Ok(c.status(0).await?.decision_count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t80_mtls_roles_and_refusals() -> anyhow::Result<()> {
    let c = Cluster::start(ClusterOpts {
        tls: true,
        spares: 1,
        ..Default::default()
    })
    .await?;
    let certs = c.certs.clone().ok_or_else(|| anyhow::anyhow!("no certs"))?;
    c.publish("tls", POLICY).await?;
    // An agent decides (through a follower, which forwards over mutual TLS
    // with its node certificate).
    let l = c.wait_leader(Duration::from_secs(10)).await?;
    let f = (l + 1) % 3;
    let r = c.decide(f, request("tls", "a1", "alice", "read")).await?;
    assert!(is_allow(&r), "{r:?}");
    // Every node has applied it (node 0 may be the slowest voter).
    c.wait_converged(1, Duration::from_secs(10)).await?;
    let before = decision_count(&c).await?;

    // Roles: an agent cannot publish, an auditor cannot decide, an admin
    // cannot decide either; each is PERMISSION_DENIED and changes nothing.
    let addr = c.nodes[l].grpc.clone();
    let mut agent = connect_tls(&addr, &certs, "agent")?;
    assert_eq!(
        code(agent.publish_policy(publish_req()).await),
        tonic::Code::PermissionDenied
    );
    let mut auditor = connect_tls(&addr, &certs, "auditor")?;
    assert_eq!(
        code(
            auditor
                .authorize(request("tls", "a2", "alice", "read"))
                .await
        ),
        tonic::Code::PermissionDenied
    );
    let mut admin = connect_tls(&addr, &certs, "admin")?;
    assert_eq!(
        code(admin.authorize(request("tls", "a3", "alice", "read")).await),
        tonic::Code::PermissionDenied
    );
    // The auditor reads the log; the agent may not.
    auditor
        .get_decision(v1::GetDecisionRequest {
            key: Some(v1::get_decision_request::Key::Index(1)),
        })
        .await?;
    assert_eq!(
        code(
            agent
                .get_decision(v1::GetDecisionRequest {
                    key: Some(v1::get_decision_request::Key::Index(1)),
                })
                .await
        ),
        tonic::Code::PermissionDenied
    );
    // Commit probes: agents and admins (through a follower, forwarded over
    // mutual TLS with its node certificate); an auditor is refused.
    let fa = c.nodes[f].grpc.clone();
    assert_eq!(
        code(auditor.probe(v1::ProbeRequest {}).await),
        tonic::Code::PermissionDenied
    );
    for role in ["agent", "admin"] {
        let p = connect_tls(&fa, &certs, role)?
            .probe(v1::ProbeRequest {})
            .await?
            .into_inner();
        assert_eq!(p.leader_id, c.nodes[l].id, "{role}: {p:?}");
    }
    assert_eq!(decision_count(&c).await?, before);
    assert!(
        admin
            .get_policy(v1::GetPolicyRequest {
                domain: "tls".into(),
                version: 2,
            })
            .await
            .is_err(),
        "the agent's publish created nothing"
    );

    // The CLI never falls back to plaintext by itself: with no certificate
    // and no --insecure it refuses and says what to do.
    let out = std::process::Command::new(quorate_e2e::quorate_bin())
        .args(["status", "--endpoint", &addr])
        .env_remove("QUORATE_INSECURE")
        .current_dir(c.dir.path())
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("no client certificate"), "{err}");
    // With --insecure against a TLS node it gets no answer (and a hint).
    let (code_, _, err) = cli(&["--insecure", "status", "--endpoint", &addr]);
    assert_eq!(code_, 2, "{err}");

    // A client without a certificate gets no answer at all.
    let plain = async {
        let mut p = connect(&addr).await?;
        anyhow::Ok(p.status(v1::StatusRequest {}).await?)
    };
    assert!(plain.await.is_err(), "a plaintext client was served");

    // Certificates from another CA (same cluster name) are refused, for
    // clients and for nodes.
    let foreign = c.dir.path().join("foreign");
    let f_s = foreign.to_string_lossy().into_owned();
    let (code_, _, err) = cli(&[
        "certs",
        "init",
        "--out",
        &f_s,
        "--nodes",
        "4",
        "--cluster",
        "test",
    ]);
    assert_eq!(code_, 0, "{err}");
    let mut stranger = connect_tls(&addr, &foreign, "admin")?;
    assert!(stranger.status(v1::StatusRequest {}).await.is_err());
    let foreign_node = quorate_raft::tls::TlsContext::load(quorate_raft::tls::TlsFiles {
        ca: certs.join("ca.pem"),
        cert: foreign.join("node-2.pem"),
        key: foreign.join("node-2.key"),
    })?;
    let ch = quorate_raft::network::Channels::with_tls(Some(foreign_node));
    let leader_id = c.nodes[l].id;
    assert!(
        quorate_raft::network::fetch_identity(&ch, 2, leader_id, &addr, Duration::from_secs(2))
            .await
            .is_err(),
        "a node certificate from a foreign CA was served"
    );
    // A node of the right CA that is not a member may ask who a node is
    // (that is how joining starts) but may not replicate or take snapshots.
    let outsider = quorate_raft::tls::TlsContext::load(quorate_raft::tls::TlsFiles {
        ca: certs.join("ca.pem"),
        cert: certs.join("node-4.pem"),
        key: certs.join("node-4.key"),
    })?;
    let ch = quorate_raft::network::Channels::with_tls(Some(outsider));
    let id =
        quorate_raft::network::fetch_identity(&ch, 4, leader_id, &addr, Duration::from_secs(2))
            .await?;
    assert_eq!(id.node_id, leader_id);
    // Dialled as another node, the same node is refused by the caller: its
    // certificate names whom it really is.
    let wrong = leader_id % 3 + 1;
    let e = quorate_raft::network::fetch_identity(&ch, 4, wrong, &addr, Duration::from_secs(2))
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("dialled"), "a node answered for another: {e}");
    let into = tempfile::tempdir()?;
    let snap = quorate_raft::network::fetch_snapshot(
        &ch,
        4,
        &addr,
        Duration::from_secs(5),
        &into.path().join("fetched.part"),
    )
    .await;
    let e = snap.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("not a member"), "{e}");

    // The CLI with certificates: the agent's ALLOW exits 0, the auditor is
    // refused with the stable code.
    let (ca, agent_pem, agent_key) = (
        certs.join("ca.pem"),
        certs.join("agent.pem"),
        certs.join("agent.key"),
    );
    let s = |p: &std::path::Path| p.to_string_lossy().into_owned();
    let (code_, out, err) = cli(&[
        "authorize",
        "--endpoint",
        &addr,
        "--ca",
        &s(&ca),
        "--cert",
        &s(&agent_pem),
        "--key",
        &s(&agent_key),
        "--domain",
        "tls",
        "--principal",
        "User::\"alice\"",
        "--action",
        "Action::\"read\"",
        "--resource",
        "Doc::\"1\"",
    ]);
    assert_eq!(code_, 0, "{out}{err}");
    let (code_, _, err) = cli(&[
        "authorize",
        "--endpoint",
        &addr,
        "--ca",
        &s(&ca),
        "--cert",
        &s(&certs.join("auditor.pem")),
        "--key",
        &s(&certs.join("auditor.key")),
        "--domain",
        "tls",
        "--principal",
        "User::\"alice\"",
        "--action",
        "Action::\"read\"",
        "--resource",
        "Doc::\"1\"",
    ]);
    assert_eq!(code_, 2, "{err}");
    assert!(err.contains("PERMISSION_DENIED"), "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t81_a_rotated_certificate_is_used_without_restart() -> anyhow::Result<()> {
    let mut c = Cluster::start(ClusterOpts {
        tls: true,
        ..Default::default()
    })
    .await?;
    let certs = c.certs.clone().ok_or_else(|| anyhow::anyhow!("no certs"))?;
    c.publish("tls", POLICY).await?;
    // A fresh certificate for node 2 from the same CA, moved over the old.
    let new_pem = issue_over(&certs, "2", "2")?;
    let metrics_url = c.nodes[1].http.clone();
    wait_metric(&metrics_url, "quorate_tls_reloads_total{result=\"ok\"} 1").await?;
    // Still the same process, and new connections get the new certificate.
    assert!(c.nodes[1].is_running());
    assert_eq!(
        served_certificate(&c.nodes[1].grpc, &certs).await?,
        pem_der(&new_pem)?
    );
    let r = c
        .decide(1, request("tls", "after-rotation", "alice", "read"))
        .await?;
    assert!(is_allow(&r), "{r:?}");
    // A certificate for another identity is refused and the new one kept.
    issue_over(&certs, "3", "2")?;
    wait_metric(&metrics_url, "quorate_tls_reloads_total{result=\"error\"}").await?;
    assert_eq!(
        served_certificate(&c.nodes[1].grpc, &certs).await?,
        pem_der(&new_pem)?,
        "the refused certificate replaced the good one"
    );
    c.kill9(0);
    let r = c
        .decide(1, request("tls", "after-bad-rotation", "alice", "read"))
        .await?;
    assert!(is_allow(&r), "{r:?}");
    Ok(())
}

/// Issues a certificate for node `node` from the cluster CA and moves it
/// over node `over`'s files (a rotation, right or wrong); returns its PEM.
fn issue_over(certs: &std::path::Path, node: &str, over: &str) -> anyhow::Result<String> {
    let d = certs.to_string_lossy().into_owned();
    let stem = format!("issued-{node}-for-{over}");
    let (code, _, err) = cli(&[
        "certs",
        "issue",
        "--dir",
        &d,
        "--cluster",
        "test",
        "--node",
        node,
        "--out-name",
        &stem,
    ]);
    anyhow::ensure!(code == 0, "certs issue: {err}");
    let pem = std::fs::read_to_string(certs.join(format!("{stem}.pem")))?;
    std::fs::rename(
        certs.join(format!("{stem}.pem")),
        certs.join(format!("node-{over}.pem")),
    )?;
    std::fs::rename(
        certs.join(format!("{stem}.key")),
        certs.join(format!("node-{over}.key")),
    )?;
    Ok(pem)
}

/// The DER of the first certificate in `pem`.
fn pem_der(pem: &str) -> anyhow::Result<Vec<u8>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    Ok(CertificateDer::from_pem_slice(pem.as_bytes())?.to_vec())
}

/// The certificate a node presents to a new TLS connection.
async fn served_certificate(addr: &str, certs: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    let tls = quorate_raft::tls::TlsContext::load(quorate_raft::tls::TlsFiles {
        ca: certs.join("ca.pem"),
        cert: certs.join("auditor.pem"),
        key: certs.join("auditor.key"),
    })?;
    let io = quorate_raft::tls::connect_tls(&tls, addr, None).await?;
    let leaf = io
        .inner()
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first().cloned());
    leaf.map(|c| c.to_vec())
        .ok_or_else(|| anyhow::anyhow!("no server certificate"))
}

/// Waits until node `http`'s /metrics contains `needle`.
async fn wait_metric(http: &str, needle: &str) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let text = http_get(http, "/metrics").await.unwrap_or_default();
        if text.contains(needle) {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(15) {
            bail!("no {needle:?} in the metrics of {http}: {text}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t82_a_client_over_its_rate_limit_is_refused_and_changes_nothing() -> anyhow::Result<()> {
    let c = Cluster::start(ClusterOpts {
        tls: true,
        extra_config: "[limits]\nclient_requests_per_second = 20\nclient_burst = 20\n".into(),
        ..Default::default()
    })
    .await?;
    c.publish("tls", POLICY).await?;
    let l = c.wait_leader(Duration::from_secs(10)).await?;
    let before = c.status(l).await?.decision_count;
    let mut agent = c.client_as(l, "agent").await?;
    let (mut ok, mut limited) = (0u64, 0u64);
    for n in 0..100 {
        match agent
            .authorize(request("tls", &format!("burst-{n}"), "alice", "read"))
            .await
        {
            Ok(r) if r.get_ref().record.is_some() => ok += 1,
            Ok(r) => bail!("not committed: {:?}", r.get_ref()),
            Err(s) if s.code() == tonic::Code::ResourceExhausted => limited += 1,
            Err(s) => bail!("unexpected error {s:?}"),
        }
    }
    assert!(limited > 0, "100 requests at once were never limited");
    assert!(ok >= 20, "the burst was not served: {ok}");
    // Only the served requests were decided.
    let after = c.status(l).await?.decision_count;
    assert_eq!(after - before, ok);
    // Another client (another identity) is not limited by the first.
    let mut auditor = c.client_as(l, "auditor").await?;
    auditor.status(v1::StatusRequest {}).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t83_whom_a_caller_reached_is_checked_and_outsiders_are_refused_unread()
-> anyhow::Result<()> {
    let c = Cluster::start(ClusterOpts {
        tls: true,
        ..Default::default()
    })
    .await?;
    let certs = c.certs.clone().ok_or_else(|| anyhow::anyhow!("no certs"))?;
    c.publish("tls", POLICY).await?;
    let l = c.wait_leader(Duration::from_secs(10)).await?;
    let addr = c.nodes[l].grpc.clone();
    let d = certs.to_string_lossy().into_owned();

    // Receipts: by index for auditors only; an agent gets its own request's
    // receipt by (domain, request id).
    let r = c.decide(l, request("tls", "mine", "alice", "read")).await?;
    assert!(is_allow(&r), "{r:?}");
    let index = r.record.as_ref().map_or(0, |r| r.index);
    let by_index = v1::GetDecisionRequest {
        key: Some(v1::get_decision_request::Key::Index(index)),
    };
    let by_id = v1::GetDecisionRequest {
        key: Some(v1::get_decision_request::Key::Request(v1::DecisionKey {
            domain: "tls".into(),
            request_id: "mine".into(),
        })),
    };
    let mut agent = connect_tls(&addr, &certs, "agent")?;
    assert_eq!(
        code(agent.get_receipt(by_index.clone()).await),
        tonic::Code::PermissionDenied
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match agent.get_receipt(by_id.clone()).await {
            Ok(_) => break,
            Err(s) if s.code() == tonic::Code::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(s) => bail!("an agent's own receipt was refused: {s}"),
        }
    }
    let mut auditor = connect_tls(&addr, &certs, "auditor")?;
    auditor.get_receipt(by_index).await?;

    // A node certificate of another cluster under the same CA: a caller
    // of this cluster refuses it, whatever it would answer.
    let (code_, _, err) = cli(&[
        "certs",
        "issue",
        "--dir",
        &d,
        "--cluster",
        "other",
        "--node",
        "2",
        "--out-name",
        "other-node-2",
    ]);
    assert_eq!(code_, 0, "{err}");
    let impostor = quorate_raft::tls::TlsContext::load(quorate_raft::tls::TlsFiles {
        ca: certs.join("ca.pem"),
        cert: certs.join("other-node-2.pem"),
        key: certs.join("other-node-2.key"),
    })?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let fake = listener.local_addr()?.to_string();
    let acceptor = impostor.acceptor();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(tcp).await {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    drop(tls);
                }
            });
        }
    });
    let member = quorate_raft::tls::TlsContext::load(quorate_raft::tls::TlsFiles {
        ca: certs.join("ca.pem"),
        cert: certs.join("node-1.pem"),
        key: certs.join("node-1.key"),
    })?;
    let ch = quorate_raft::network::Channels::with_tls(Some(member));
    let e = quorate_raft::network::fetch_identity(&ch, 1, 2, &fake, Duration::from_secs(3))
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("another cluster"), "{e}");
    // The CLI (a client of cluster "test") refuses it too.
    let s = |p: std::path::PathBuf| p.to_string_lossy().into_owned();
    let (code_, out, err) = cli(&[
        "status",
        "--endpoint",
        &fake,
        "--ca",
        &s(certs.join("ca.pem")),
        "--cert",
        &s(certs.join("admin.pem")),
        "--key",
        &s(certs.join("admin.key")),
    ]);
    assert_ne!(code_, 0, "the CLI trusted a node of another cluster: {out}");
    assert!(err.contains("another cluster"), "{err}");

    // An agent's oversized Raft message is refused from its certificate
    // alone, before the node reads it: the node's peak memory does not
    // grow by the message's size.
    let node = &c.nodes[l];
    let before = node
        .peak_rss_kib()
        .ok_or_else(|| anyhow::anyhow!("no VmHWM"))?;
    let agent_tls = quorate_raft::tls::TlsContext::load(quorate_raft::tls::TlsFiles {
        ca: certs.join("ca.pem"),
        cert: certs.join("agent.pem"),
        key: certs.join("agent.key"),
    })?;
    let ch = quorate_raft::network::channel(&addr, Some(agent_tls), None)?;
    let mut raft = quorate_proto::internal::raft_transport_client::RaftTransportClient::new(ch)
        .max_encoding_message_size(1 << 30);
    const BIG: usize = 384 << 20;
    let r = raft
        .append_entries(quorate_proto::internal::RaftMessage {
            from: 9,
            payload: vec![b' '; BIG],
            data: Vec::new(),
            quorum_age_ms: 0,
        })
        .await;
    match r {
        Ok(_) => bail!("an agent's Raft message was served"),
        Err(s) => assert!(
            s.code() == tonic::Code::PermissionDenied
                || s.code() == tonic::Code::Unknown
                || s.code() == tonic::Code::Unavailable
                || s.code() == tonic::Code::Cancelled,
            "{s}"
        ),
    }
    let after = node
        .peak_rss_kib()
        .ok_or_else(|| anyhow::anyhow!("no VmHWM"))?;
    let grown_mib = after.saturating_sub(before) / 1024;
    assert!(
        grown_mib < 128,
        "the node buffered the refused message: peak RSS grew by {grown_mib} MiB"
    );
    // And it still serves.
    let r = c
        .decide(l, request("tls", "after-big", "alice", "read"))
        .await?;
    assert!(is_allow(&r), "{r:?}");
    Ok(())
}
