//! REST/JSON on a real TLS cluster: the gRPC API's operations, roles and
//! errors over HTTP. An agent's ALLOW carries its record and verbatim
//! receipt, a retry replays the same record, bad input is a 400 that
//! commits nothing, roles are refused as over gRPC, and a contained node
//! answers DENY NO_QUORUM.

use std::time::Duration;

use quorate_e2e::{Cluster, ClusterOpts, HttpCall, POLICY, console_token, http};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t98_rest_decides_reads_and_refuses_like_grpc() -> anyhow::Result<()> {
    let mut c = Cluster::start(ClusterOpts {
        tls: true,
        ..Default::default()
    })
    .await?;
    let certs = c.certs.clone().ok_or_else(|| anyhow::anyhow!("no certs"))?;
    c.publish("pay", POLICY).await?;
    let tls = Some(certs.as_path());
    let node = c.nodes[1].http.clone();
    let as_role = |role| HttpCall {
        certs: tls,
        role: Some(role),
        ..Default::default()
    };
    let body = |rid: &str, who: &str| {
        serde_json::json!({
            "domain": "pay", "request_id": rid, "principal": format!("User::\"{who}\""),
            "action": "Action::\"read\"", "resource": "Doc::\"1\"", "context": {"ip": "10.0.0.1"},
        })
        .to_string()
    };

    // An agent decides: ALLOW with its record and receipt, DENY with its reason.
    let allow_body = body("r1", "alice");
    let a = http(
        &node,
        "/v1/authorize",
        HttpCall {
            post: Some(&allow_body),
            ..as_role("agent")
        },
    )
    .await?;
    assert_eq!(a.status, 200, "{a:?}");
    let v = a.json();
    assert_eq!(v["decision"], "ALLOW", "{}", a.body);
    assert_eq!(v["record"]["index"], 1);
    assert_eq!(v["record"]["request"]["context"], "{\"ip\":\"10.0.0.1\"}");
    let receipt = v["receipt_json"].as_str().unwrap_or_default().to_string();
    assert!(receipt.contains("quorate-receipt/v1"), "{}", a.body);
    // The receipt verifies offline, as one from gRPC would.
    let work = tempfile::tempdir()?;
    std::fs::write(work.path().join("receipt.json"), &receipt)?;
    let tls_args = quorate_e2e::cert_args(&certs, "auditor");
    let mut args = vec!["keys", "export", "--endpoint", c.nodes[0].grpc.as_str()];
    args.extend(tls_args.iter().map(String::as_str));
    let (code, trust, err) = quorate_e2e::cli(&args);
    assert_eq!(code, 0, "{err}");
    std::fs::write(work.path().join("trust.json"), trust)?;
    let (code, out, err) = quorate_e2e::cli(&[
        "verify",
        "--trust",
        &work.path().join("trust.json").to_string_lossy(),
        "--receipt",
        &work.path().join("receipt.json").to_string_lossy(),
    ]);
    assert_eq!(code, 0, "{out}{err}");

    // A retry with the same request id replays the record.
    let again = http(
        &node,
        "/v1/authorize",
        HttpCall {
            post: Some(&allow_body),
            ..as_role("agent")
        },
    )
    .await?;
    assert_eq!(again.json()["replayed"], true, "{}", again.body);
    assert_eq!(again.json()["record"]["index"], 1);
    let deny_body = body("r2", "bob");
    let d = http(
        &node,
        "/v1/authorize",
        HttpCall {
            post: Some(&deny_body),
            ..as_role("agent")
        },
    )
    .await?;
    assert_eq!(
        (d.status, d.json()["decision"].clone()),
        (200, "DENY".into())
    );
    assert_eq!(d.json()["reason"], "POLICY");

    // Bad input: 400 with the reason, and nothing committed.
    c.wait_converged(2, Duration::from_secs(10)).await?;
    let before = c.status(0).await?.decision_count;
    for bad in [
        "not json".to_string(),
        serde_json::json!({"domain": "pay"}).to_string(),
        serde_json::json!({"domain": "pay", "request_id": "r3", "principal": "alice",
            "action": "Action::\"read\"", "resource": "Doc::\"1\""})
        .to_string(),
        serde_json::json!({"domain": "pay", "request_id": "r4", "principal": "User::\"a\"",
            "action": "Action::\"read\"", "resource": "Doc::\"1\"", "surprise": 1})
        .to_string(),
    ] {
        let r = http(
            &node,
            "/v1/authorize",
            HttpCall {
                post: Some(&bad),
                ..as_role("agent")
            },
        )
        .await?;
        assert_eq!(r.status, 400, "{bad}: {r:?}");
        assert_eq!(r.json()["error"], "INVALID_ARGUMENT", "{}", r.body);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        c.status(0).await?.decision_count,
        before,
        "a refusal commits nothing"
    );

    // Roles as over gRPC.
    let r = http(
        &node,
        "/v1/authorize",
        HttpCall {
            post: Some(&allow_body),
            ..as_role("auditor")
        },
    )
    .await?;
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (403, "PERMISSION_DENIED".into())
    );
    let r = http(
        &node,
        "/v1/authorize",
        HttpCall {
            post: Some(&allow_body),
            certs: tls,
            ..Default::default()
        },
    )
    .await?;
    assert_eq!(r.status, 401, "no identity: {r:?}");
    let rec = http(&node, "/v1/decisions/1", as_role("auditor")).await?;
    assert_eq!(rec.json()["request"]["request_id"], "r1", "{}", rec.body);
    let r = http(&node, "/v1/decisions/1", as_role("agent")).await?;
    assert_eq!(r.status, 403);
    let r = http(&node, "/v1/decisions/99", as_role("auditor")).await?;
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (404, "NOT_FOUND".into())
    );
    let r = http(&node, "/v1/receipts/1", as_role("auditor")).await?;
    assert_eq!(r.json()["format"], "quorate-receipt/v1", "{}", r.body);
    // The agent fetches the receipt of its own request id, not by index.
    let r = http(
        &node,
        "/v1/receipts?domain=pay&request_id=r1",
        as_role("agent"),
    )
    .await?;
    assert_eq!(r.json()["record"]["index"], 1, "{}", r.body);
    let r = http(&node, "/v1/receipts/1", as_role("agent")).await?;
    assert_eq!(r.status, 403);
    let r = http(&node, "/v1/receipts?domain=pay", as_role("agent")).await?;
    assert_eq!(r.status, 400, "{r:?}");
    // A console token speaks for its certificate here too.
    let token = console_token(&certs, "agent", "5")?;
    let tok_body = body("r5", "alice");
    let r = http(
        &node,
        "/v1/authorize",
        HttpCall {
            post: Some(&tok_body),
            certs: tls,
            token: Some(&token),
            ..Default::default()
        },
    )
    .await?;
    assert_eq!(r.json()["decision"], "ALLOW", "{}", r.body);
    // The document of these routes is served.
    let doc = http(
        &node,
        "/v1/openapi.yaml",
        HttpCall {
            certs: tls,
            ..Default::default()
        },
    )
    .await?;
    assert!(doc.body.starts_with("openapi: 3"), "{}", doc.body);

    // Two nodes gone: the survivor decides DENY NO_QUORUM, never ALLOW.
    c.kill9(0);
    c.kill9(2);
    let start = std::time::Instant::now();
    loop {
        let late = body(&format!("late-{}", start.elapsed().as_millis()), "alice");
        let r = http(
            &node,
            "/v1/authorize",
            HttpCall {
                post: Some(&late),
                ..as_role("agent")
            },
        )
        .await?;
        let v = r.json();
        assert_ne!(
            v["decision"], "ALLOW",
            "a minority node allowed: {}",
            r.body
        );
        if v["reason"] == "NO_QUORUM" {
            assert_eq!(r.status, 200);
            break;
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(15),
            "never contained: {}",
            r.body
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}
