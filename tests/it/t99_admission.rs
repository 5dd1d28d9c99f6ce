//! Kubernetes admission on a real TLS cluster, driven with recorded
//! AdmissionReview documents the way the API server sends them: over TLS to
//! the admission Service's DNS name, presenting an agent certificate. A
//! change is admitted only on an attested ALLOW with its decision index in
//! the audit annotations; a policy's DENY, a review that cannot be read, a
//! caller without identity and a contained node are all refusals, and what
//! is refused before a decision commits nothing.

use std::time::Duration;

use quorate_e2e::{Cluster, ClusterOpts, HttpAnswer, HttpCall, http, metric_value};
use serde_json::{Value, json};

const SERVICE: &str = "quorate-admission.quorate.svc";

fn recorded(name: &str) -> anyhow::Result<Value> {
    let path = format!("{}/fixtures/k8s/{name}.json", env!("CARGO_MANIFEST_DIR"));
    Ok(serde_json::from_str(&std::fs::read_to_string(path)?)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t99_admission_admits_only_attested_allows() -> anyhow::Result<()> {
    let mut c = Cluster::start(ClusterOpts {
        tls: true,
        dns: vec![SERVICE.into()],
        extra_config: "[admission]\ndomain = \"k8s\"\n".into(),
        ..Default::default()
    })
    .await?;
    let certs = c.certs.clone().ok_or_else(|| anyhow::anyhow!("no certs"))?;
    let policy = std::fs::read_to_string(format!(
        "{}/../config/dev/k8s.cedar",
        env!("CARGO_MANIFEST_DIR")
    ))?;
    c.publish("k8s", &policy).await?;
    let node = c.nodes[1].http.clone();
    // As the API server calls: the Service's name, an agent certificate.
    let review = |body: &Value, role: Option<&'static str>| {
        let node = node.clone();
        let certs = certs.clone();
        let body = body.to_string();
        async move {
            http(
                &node,
                "/k8s/admit",
                HttpCall {
                    certs: Some(&certs),
                    role,
                    post: Some(&body),
                    server_name: Some(SERVICE),
                    ..Default::default()
                },
            )
            .await
        }
    };
    let response = |a: &HttpAnswer| a.json()["response"].clone();

    // A Deployment with an owning team, in default: admitted, and the audit
    // annotations point at the decision, which the log holds as mapped.
    let create = recorded("create-deployment")?;
    let a = review(&create, Some("agent")).await?;
    assert_eq!(a.status, 200, "{a:?}");
    let r = response(&a);
    assert_eq!(r["uid"], create["request"]["uid"], "{}", a.body);
    assert_eq!(r["allowed"], true, "{}", a.body);
    // Counted under the door it came in by.
    let admitted = r#"quorate_authorize_answers_total{answer="ALLOW",door="admission"}"#;
    assert_eq!(metric_value(&node, admitted).await?, 1.0);
    let index = r["auditAnnotations"]["quorate-decision-index"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(index.parse::<u64>().is_ok(), "{}", a.body);
    assert_eq!(
        r["auditAnnotations"]["quorate-decision-hash"]
            .as_str()
            .map(str::len),
        Some(64)
    );
    assert!(
        r["auditAnnotations"]["quorate-checkpoint"]
            .as_str()
            .is_some_and(|c| c.contains(':')),
        "{}",
        a.body
    );
    let d = http(
        &node,
        &format!("/v1/decisions/{index}"),
        HttpCall {
            certs: Some(&certs),
            role: Some("auditor"),
            ..Default::default()
        },
    )
    .await?;
    assert_eq!(d.status, 200, "{d:?}");
    let record = d.json();
    assert_eq!(record["decision"], "ALLOW", "{}", d.body);
    assert_eq!(record["request"]["domain"], "k8s");
    assert_eq!(
        record["request"]["principal"],
        "User::\"alice@example.com\""
    );
    assert_eq!(record["request"]["resource"], "Deployment::\"default/web\"");
    assert_eq!(
        record["request"]["request_id"],
        "k8s-705ab4f5-6393-11e8-b7cc-42010a800002"
    );

    // The API server's retry of the same review is the same decision.
    let again = review(&create, Some("agent")).await?;
    assert_eq!(
        response(&again)["auditAnnotations"]["quorate-decision-index"].as_str(),
        Some(index.as_str()),
        "{}",
        again.body
    );

    // The policy's DENY: deleting in kube-system without system:masters.
    let delete = recorded("delete-configmap-kube-system")?;
    let a = review(&delete, Some("agent")).await?;
    let r = response(&a);
    assert_eq!(r["allowed"], false, "{}", a.body);
    assert_eq!(r["status"]["code"], 403);
    assert!(r["auditAnnotations"]["quorate-decision-index"].is_string());
    assert_eq!(
        r["auditAnnotations"]["quorate-reason"], "POLICY",
        "{}",
        a.body
    );
    // A forbid: a Deployment that names no team.
    let mut unowned = create.clone();
    unowned["request"]["uid"] = json!("2f0c3f4e-0000-4000-8000-00000000000a");
    unowned["request"]["object"]["metadata"]["labels"] = json!({"app": "web"});
    let r = response(&review(&unowned, Some("agent")).await?);
    assert_eq!(r["allowed"], false, "{r}");
    assert!(
        r["status"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("DENY")),
        "{r}"
    );

    // Refusals before a decision commit nothing.
    let before = c.settled(Duration::from_secs(10)).await?;
    let a = review(&recorded("malformed")?, Some("agent")).await?;
    assert_eq!(a.status, 200, "{a:?}");
    let r = response(&a);
    assert_eq!(r["allowed"], false, "{}", a.body);
    assert!(
        r["status"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("operation")),
        "{r}"
    );
    let a = review(&json!({"kind": "AdmissionReview"}), Some("agent")).await?;
    assert_eq!(a.status, 400, "no uid: {a:?}");
    let a = review(&create, None).await?;
    assert_eq!(a.status, 401, "no identity: {a:?}");
    let a = review(&create, Some("auditor")).await?;
    assert_eq!(a.status, 403, "an auditor cannot decide: {a:?}");
    assert_eq!(c.settled(Duration::from_secs(10)).await?, before);

    // Two nodes gone: the survivor refuses every change (DENY NO_QUORUM).
    c.kill9(0);
    c.kill9(2);
    let start = std::time::Instant::now();
    let mut n = 0;
    loop {
        n += 1;
        let mut late = create.clone();
        late["request"]["uid"] = json!(format!("late-{n}"));
        let a = review(&late, Some("agent")).await?;
        let r = response(&a);
        assert_eq!(r["allowed"], false, "a minority node admitted: {}", a.body);
        if r["auditAnnotations"]["quorate-reason"] == "NO_QUORUM" {
            break;
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(15),
            "never contained: {}",
            a.body
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}
