//! What people see: the console's API on a real TLS cluster. Lineage by
//! parent and trace id (API, CLI, console), access exactly as over gRPC
//! (anonymous, agent, auditor and admin; certificates and console tokens;
//! forged tokens), TLS on the HTTP port with plaintext kept for scrapers,
//! and a what-if that commits nothing.

use std::path::Path;
use std::time::Duration;

use quorate_e2e::{
    Cluster, ClusterOpts, HttpCall, POLICY, cert_args, cli, console_token, http, payment_tree,
};
use quorate_proto::v1;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t95_console_lineage_access_and_what_if() -> anyhow::Result<()> {
    let c = Cluster::start(ClusterOpts {
        tls: true,
        ..Default::default()
    })
    .await?;
    let certs = c.certs.clone().ok_or_else(|| anyhow::anyhow!("no certs"))?;
    c.publish("pay", POLICY).await?;
    payment_tree(&c).await?;
    c.wait_converged(5, Duration::from_secs(10)).await?;
    let node = &c.nodes[1].http;
    let tls = Some(certs.as_path());

    // --- Lineage over gRPC: ancestors and descendants, and a trace.
    let mut auditor = c.client_as(2, "auditor").await?;
    let l = auditor
        .get_lineage(v1::GetLineageRequest {
            of: Some(v1::get_lineage_request::Of::Index(2)),
            limit: 0,
            after: 0,
        })
        .await?
        .into_inner();
    let indexes: Vec<u64> = l.records.iter().map(|r| r.index).collect();
    assert_eq!(indexes, vec![1, 2, 4], "parent, itself, child");
    let edges: Vec<(u64, u64)> = l.edges.iter().map(|e| (e.parent, e.child)).collect();
    assert_eq!(edges, vec![(1, 2), (2, 4)]);
    assert_eq!((l.focus, l.root, l.truncated), (Some(2), Some(1), false));
    let page = auditor
        .get_lineage(v1::GetLineageRequest {
            of: Some(v1::get_lineage_request::Of::TraceId("t-pay".into())),
            limit: 3,
            after: 0,
        })
        .await?
        .into_inner();
    let indexes: Vec<u64> = page.records.iter().map(|r| r.index).collect();
    assert_eq!((indexes, page.next_after), (vec![1, 2, 3], Some(3)));
    // Bounded: a limit of 1 from the root is a truncated answer.
    let one = auditor
        .get_lineage(v1::GetLineageRequest {
            of: Some(v1::get_lineage_request::Of::Index(1)),
            limit: 1,
            after: 0,
        })
        .await?
        .into_inner();
    assert!(one.truncated && one.records.len() == 1, "{one:?}");
    // Agents may not read lineage, as they may not read the log.
    let mut agent = c.client_as(0, "agent").await?;
    let refused = agent
        .get_lineage(v1::GetLineageRequest {
            of: Some(v1::get_lineage_request::Of::Index(1)),
            limit: 0,
            after: 0,
        })
        .await;
    assert_eq!(
        refused.map(|_| ()).map_err(|s| s.code()),
        Err(tonic::Code::PermissionDenied)
    );

    // --- The CLI draws the tree.
    let endpoint = c.nodes[0].grpc.clone();
    let mut args = vec!["log", "lineage", "--endpoint", &endpoint, "--index", "1"];
    let auditor_tls = cert_args(&certs, "auditor");
    args.extend(auditor_tls.iter().map(String::as_str));
    let (code, out, err) = cli(&args);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("#1 ALLOW pay payment"), "{out}");
    assert!(lines[0].ends_with('◀'), "the focus is marked: {out}");
    assert!(lines[1].starts_with("├── #2 ALLOW pay approve-a"), "{out}");
    assert!(lines[2].starts_with("│   └── #4 ALLOW pay notify"), "{out}");
    assert!(
        lines[3].starts_with("└── #3 DENY POLICY pay approve-b"),
        "{out}"
    );

    // --- TLS on the HTTP port; plaintext only for what needs no identity.
    let plain = HttpCall::default();
    let metrics = http(node, "/metrics", plain.clone()).await?;
    assert_eq!(metrics.status, 200, "scrapers keep plaintext");
    let redirect = http(node, "/", plain.clone()).await?;
    assert_eq!(redirect.status, 308, "{redirect:?}");
    assert!(
        redirect.head.contains(&format!("https://{node}/")),
        "{redirect:?}"
    );
    let no = http(node, "/console/api/decisions", plain.clone()).await?;
    assert_eq!(
        (no.status, no.json()["error"].clone()),
        (401, "UNAUTHENTICATED".into())
    );
    let page = http(
        node,
        "/",
        HttpCall {
            certs: tls,
            ..Default::default()
        },
    )
    .await?;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("/console/app.js"), "{}", page.body);
    assert!(
        page.head
            .to_ascii_lowercase()
            .contains("content-security-policy")
    );

    // --- Access: nobody, an agent, an auditor, an admin.
    let anon = HttpCall {
        certs: tls,
        ..Default::default()
    };
    for path in [
        "/console/api/health",
        "/console/api/decisions",
        "/console/api/lineage/1",
    ] {
        let a = http(node, path, anon.clone()).await?;
        assert_eq!(a.status, 401, "{path} without an identity: {a:?}");
    }
    let as_agent = HttpCall {
        certs: tls,
        role: Some("agent"),
        ..Default::default()
    };
    let h = http(node, "/console/api/health", as_agent.clone()).await?;
    assert_eq!(h.status, 200, "any identity sees health: {h:?}");
    let nodes = h.json()["nodes"].as_array().cloned().unwrap_or_default();
    assert_eq!(nodes.len(), 3, "{}", h.body);
    for n in &nodes {
        assert_eq!(n["reachable"], true, "{n}");
        assert_eq!(n["quorate"], true, "{n}");
        assert!(n["tls_cert_expiry_ms"].as_u64().is_some(), "{n}");
        assert!(n["commit_index"].as_u64().is_some_and(|i| i > 0), "{n}");
    }
    for path in [
        "/console/api/decisions",
        "/console/api/decisions/1",
        "/console/api/lineage/1",
        "/console/api/lineage?trace_id=t-pay",
        "/console/api/policies",
    ] {
        let a = http(node, path, as_agent.clone()).await?;
        assert_eq!(
            (a.status, a.json()["error"].clone()),
            (403, "PERMISSION_DENIED".into()),
            "an agent reads no record through the console either: {path}"
        );
        assert!(
            !a.body.contains("alice"),
            "{path} leaked a record: {}",
            a.body
        );
    }
    let as_auditor = HttpCall {
        certs: tls,
        role: Some("auditor"),
        ..Default::default()
    };
    let d = http(
        node,
        "/console/api/decisions?principal=bob",
        as_auditor.clone(),
    )
    .await?;
    assert_eq!(d.status, 200, "{d:?}");
    let recs = d.json()["records"].as_array().cloned().unwrap_or_default();
    assert_eq!(recs.len(), 1, "{}", d.body);
    assert_eq!(recs[0]["request"]["request_id"], "approve-b");

    // --- Tokens: an auditor's token reads what the auditor reads.
    let token = console_token(&certs, "auditor", "10")?;
    fn bearer<'a>(certs: Option<&'a Path>, t: &'a str) -> HttpCall<'a> {
        HttpCall {
            certs,
            token: Some(t),
            ..Default::default()
        }
    }
    let with_token = |t| bearer(tls, t);
    let s = http(node, "/console/api/session", with_token(&token)).await?;
    assert_eq!(s.json()["role"], "auditor", "{}", s.body);
    assert_eq!(s.json()["via"], "token");
    assert_eq!(s.json()["can"]["administer"], false);
    let all = http(node, "/console/api/decisions?limit=2", with_token(&token)).await?;
    let v = all.json();
    let idx: Vec<u64> = v["records"]
        .as_array()
        .map(|a| a.iter().filter_map(|r| r["index"].as_u64()).collect())
        .unwrap_or_default();
    assert_eq!(
        (idx, v["next_before"].as_u64()),
        (vec![5, 4], Some(4)),
        "newest first, paged"
    );
    let older = http(
        node,
        "/console/api/decisions?limit=2&before=4",
        with_token(&token),
    )
    .await?;
    let idx: Vec<u64> = older.json()["records"]
        .as_array()
        .map(|a| a.iter().filter_map(|r| r["index"].as_u64()).collect())
        .unwrap_or_default();
    assert_eq!(idx, vec![3, 2]);
    let filtered = http(
        node,
        "/console/api/decisions?decision=DENY&trace_id=t-pay",
        with_token(&token),
    )
    .await?;
    assert_eq!(filtered.json()["records"].as_array().map(Vec::len), Some(1));
    let bad = http(
        node,
        "/console/api/decisions?decision=MAYBE",
        with_token(&token),
    )
    .await?;
    assert_eq!(bad.status, 400, "{bad:?}");

    // The why: the determining policy and its text.
    let one = http(node, "/console/api/decisions/2", with_token(&token)).await?;
    let v = one.json();
    assert_eq!(v["record"]["index"], 2, "{}", one.body);
    let why = &v["why"]["policies"][0];
    assert_eq!(why["effect"], "permit", "{}", one.body);
    assert!(
        why["text"]
            .as_str()
            .is_some_and(|t| t.contains("User::\"alice\"")),
        "{why}"
    );
    assert_eq!(v["lineage"]["parent_index"], 1);
    assert_eq!(v["lineage"]["children"], 1);
    let deny = http(node, "/console/api/decisions/3", with_token(&token)).await?;
    assert!(
        deny.json()["why"]["summary"]
            .as_str()
            .is_some_and(|s| s.contains("no policy permits")),
        "{}",
        deny.body
    );

    // The lineage the explorer draws.
    let g = http(node, "/console/api/lineage/4", with_token(&token)).await?;
    let v = g.json();
    let idx: Vec<u64> = v["nodes"]
        .as_array()
        .map(|a| a.iter().filter_map(|n| n["index"].as_u64()).collect())
        .unwrap_or_default();
    assert_eq!(idx, vec![1, 2, 4], "{}", g.body);
    assert_eq!(
        v["edges"],
        serde_json::json!([{"from":1,"to":2},{"from":2,"to":4}])
    );
    let t = http(
        node,
        "/console/api/lineage?trace_id=t-pay",
        with_token(&token),
    )
    .await?;
    assert_eq!(
        t.json()["nodes"].as_array().map(Vec::len),
        Some(4),
        "{}",
        t.body
    );

    // A receipt, fetched for the in-browser verifier, is the gRPC one.
    // (Checkpoints are cosigned and persisted within about a second.)
    let mut r = http(node, "/console/api/receipts/2", with_token(&token)).await?;
    for _ in 0..50 {
        if r.status != 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        r = http(node, "/console/api/receipts/2", with_token(&token)).await?;
    }
    assert_eq!(r.json()["format"], "quorate-receipt/v1", "{}", r.body);

    // A token edited to claim admin, or one signed by another key, is
    // refused (401) and changes nothing.
    let before = c.status(0).await?;
    let parts: Vec<&str> = token.splitn(3, '.').collect();
    let forged_body = {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let json = b64.decode(parts[1])?;
        let text = String::from_utf8(json)?.replace("auditor", "admin");
        b64.encode(text)
    };
    let forged = format!("{}.{forged_body}.{}", parts[0], parts[2]);
    let a = http(
        node,
        "/console/api/policies/pay/1/activate",
        HttpCall {
            post: Some("{}"),
            ..with_token(&forged)
        },
    )
    .await?;
    assert_eq!(a.status, 401, "{a:?}");
    let a = http(node, "/console/api/decisions", with_token("qct1.x.y")).await?;
    assert_eq!(a.status, 401, "{a:?}");
    // The auditor's real token may not act either.
    let a = http(
        node,
        "/console/api/policies/pay/1/activate",
        HttpCall {
            post: Some("{}"),
            ..with_token(&token)
        },
    )
    .await?;
    assert_eq!(a.status, 403, "{a:?}");

    // --- What-if under a candidate version: nothing is committed.
    let l = c.wait_leader(Duration::from_secs(10)).await?;
    let mut admin = c.client_as(l, "admin").await?;
    let stricter = r#"permit(principal == User::"nobody", action, resource);"#;
    admin
        .publish_policy(v1::PublishPolicyRequest {
            domain: "pay".into(),
            policy_text: stricter.into(),
            schema: None,
            activate: false,
            publisher_key: None,
            signature: None,
        })
        .await?;
    c.wait_converged(5, Duration::from_secs(10)).await?;
    let before = {
        let s = c.status(0).await?;
        assert_eq!(
            s.decision_count, before.decision_count,
            "a refusal changed the log"
        );
        s
    };
    let replay = http(
        node,
        "/console/api/whatif",
        HttpCall {
            post: Some(r#"{"domain":"pay","version":2,"last":10}"#),
            ..with_token(&token)
        },
    )
    .await?;
    let v = replay.json();
    assert_eq!(replay.status, 200, "{}", replay.body);
    assert_eq!(v["summary"]["evaluated"], 5, "{}", replay.body);
    assert_eq!(v["summary"]["would_deny"], 5);
    assert_eq!(v["summary"]["changed"], 4, "the four ALLOWs would be DENYs");
    let single = http(
        node,
        "/console/api/whatif",
        HttpCall {
            post: Some(
                r#"{"domain":"pay","version":2,"request":{"principal":"User::\"nobody\"","action":"Action::\"read\"","resource":"Doc::\"1\""}}"#,
            ),
            ..with_token(&token)
        },
    )
    .await?;
    let v = single.json();
    assert_eq!(
        v["results"][0]["current"]["decision"], "DENY",
        "{}",
        single.body
    );
    assert_eq!(v["results"][0]["candidate"]["decision"], "ALLOW");
    assert_eq!(v["results"][0]["changed"], true);
    let invalid = http(
        node,
        "/console/api/whatif",
        HttpCall {
            post: Some(r#"{"domain":"pay","version":2,"request":{"principal":"nobody","action":"x","resource":"y"}}"#),
            ..with_token(&token)
        },
    )
    .await?;
    assert_eq!(invalid.status, 400, "{invalid:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = c.status(0).await?;
    assert_eq!(
        (after.decision_count, after.chain_head_hash.clone()),
        (before.decision_count, before.chain_head_hash.clone()),
        "a what-if commits nothing"
    );

    // --- An admin's token acts, as `quorate policy activate` would.
    let admin_token = console_token(&certs, "admin", "10")?;
    let leader = c.wait_leader(Duration::from_secs(10)).await?;
    let a = http(
        &c.nodes[leader].http,
        "/console/api/policies/pay/2/activate",
        HttpCall {
            post: Some("{}"),
            certs: tls,
            token: Some(&admin_token),
            ..Default::default()
        },
    )
    .await?;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.json()["previous"], 1);
    let p = http(node, "/console/api/policies", with_token(&token)).await?;
    assert_eq!(p.json()["domains"][0]["active_version"], 2, "{}", p.body);
    Ok(())
}
