//! Proofs anyone can check: receipts, the verifiable export, consistency
//! proofs and signed policies, driven through the CLI a user would run.
//! Invariants 3, 4, 6 and 7 of the brief.

use std::path::{Path, PathBuf};
use std::time::Duration;

use quorate_e2e::{Cluster, ClusterOpts, POLICY, cli, is_allow, request};

/// One way to damage a receipt.
type Tamper = Box<dyn Fn(&mut serde_json::Value)>;

fn write(dir: &Path, name: &str, text: &str) -> anyhow::Result<PathBuf> {
    let p = dir.join(name);
    std::fs::write(&p, text)?;
    Ok(p)
}

/// `quorate verify --trust TRUST --WHAT FILES...`; returns (exit code,
/// parsed stdout).
fn verify_with(
    trust: &Path,
    what: &str,
    files: &[&str],
) -> anyhow::Result<(i32, serde_json::Value)> {
    let flag = format!("--{what}");
    let mut args = vec!["--trust", trust.to_str().unwrap_or(""), flag.as_str()];
    args.extend_from_slice(files);
    verify(&args)
}

/// `quorate verify` on `args`; returns (exit code, parsed stdout).
fn verify(args: &[&str]) -> anyhow::Result<(i32, serde_json::Value)> {
    let mut all = vec!["verify"];
    all.extend_from_slice(args);
    let (code, out, err) = cli(&all);
    let v = serde_json::from_str(&out)
        .map_err(|e| anyhow::anyhow!("verify printed no JSON ({e}): {out} {err}"))?;
    Ok((code, v))
}

/// `quorate log export` to `out`, then `quorate verify --log`; the export
/// must verify. Returns the verifier's summary.
fn export_and_verify(ep: &str, trust: &Path, out: &Path) -> anyhow::Result<serde_json::Value> {
    let (code, _, err) = cli(&[
        "log",
        "export",
        "--endpoint",
        ep,
        "--out",
        out.to_str().unwrap_or(""),
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, v) = verify_with(trust, "log", &[out.to_str().unwrap_or("")])?;
    assert_eq!(code, 0, "{v}");
    Ok(v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t50_receipts_exports_and_consistency_verify_offline() -> anyhow::Result<()> {
    let c = Cluster::start(ClusterOpts::default()).await?;
    let dir = c.dir.path().to_path_buf();
    let ep = c.nodes[1].grpc.clone();
    c.publish("docs", POLICY).await?;
    for k in 0..30 {
        let who = if k % 3 == 0 { "bob" } else { "alice" };
        c.decide(k % 3, request("docs", &format!("r{k}"), who, "read"))
            .await?;
    }

    // The trust file, exported once from a running node.
    let (code, trust_json, err) = cli(&["keys", "export", "--endpoint", &ep]);
    assert_eq!(code, 0, "{err}");
    let trust = write(&dir, "trust.json", &trust_json)?;
    let t: serde_json::Value = serde_json::from_str(&trust_json)?;
    assert_eq!(t["nodes"].as_array().map(Vec::len), Some(3));

    // authorize --receipt waits for a final checkpoint and prints a receipt
    // that verifies offline.
    let (code, out, err) = cli(&[
        "authorize",
        "--endpoint",
        &ep,
        "--domain",
        "docs",
        "--principal",
        "User::\"alice\"",
        "--action",
        "Action::\"read\"",
        "--resource",
        "Doc::\"1\"",
        "--receipt",
    ]);
    assert_eq!(code, 0, "{err}");
    let answer: serde_json::Value = serde_json::from_str(&out)?;
    assert_eq!(answer["decision"], "ALLOW");
    let receipt = write(&dir, "receipt.json", &answer["receipt"].to_string())?;
    let (code, v) = verify_with(&trust, "receipt", &[receipt.to_str().unwrap_or("")])?;
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["index"], 31);
    assert!(v["cosigners"].as_array().map(Vec::len).unwrap_or(0) >= 2);

    // Every single-field tamper of the receipt fails.
    let honest = answer["receipt"].clone();
    let tampers: Vec<(&str, Tamper)> = vec![
        (
            "decision",
            Box::new(|r| r["record"]["decision"] = "DENY".into()),
        ),
        (
            "principal",
            Box::new(|r| r["record"]["request"]["principal"] = "User::\"mallory\"".into()),
        ),
        (
            "proof element",
            Box::new(|r| flip_hex(&mut r["inclusion_proof"][0])),
        ),
        ("root", Box::new(|r| flip_hex(&mut r["checkpoint"]["root"]))),
        (
            "cosignature",
            Box::new(|r| flip_hex(&mut r["checkpoint"]["cosignatures"][0]["signature"])),
        ),
        (
            "size",
            Box::new(|r| {
                let s = r["checkpoint"]["size"].as_u64().unwrap_or(0);
                r["checkpoint"]["size"] = (s + 1).into();
            }),
        ),
        (
            "one cosigner",
            Box::new(|r| {
                if let Some(a) = r["checkpoint"]["cosignatures"].as_array_mut() {
                    a.truncate(1);
                }
            }),
        ),
    ];
    for (what, f) in tampers {
        let mut r = honest.clone();
        f(&mut r);
        let p = write(&dir, "bad-receipt.json", &r.to_string())?;
        let (code, v) = verify_with(&trust, "receipt", &[p.to_str().unwrap_or("")])?;
        assert_eq!(code, 1, "tampered {what} must not verify: {v}");
        assert_eq!(v["valid"], false);
    }

    // The export verifies completely, decisions re-evaluated under Cedar.
    c.wait_converged(31, Duration::from_secs(10)).await?;
    let export = dir.join("export.jsonl");
    let v = export_and_verify(&ep, &trust, &export)?;
    assert_eq!(v["records"], 31);
    assert_eq!(v["reevaluated"], 31);
    assert!(v["checkpoints"].as_u64().unwrap_or(0) >= 1);

    // Tampers of the export fail and name the line.
    let text = std::fs::read_to_string(&export)?;
    let lines: Vec<&str> = text.lines().collect();
    let record_line = lines
        .iter()
        .position(|l| l.contains("\"request_id\":\"r7\""))
        .ok_or_else(|| anyhow::anyhow!("record r7 not in export"))?;
    let policy_line = lines
        .iter()
        .position(|l| l.starts_with("{\"type\":\"policy\""))
        .ok_or_else(|| anyhow::anyhow!("no policy line"))?;
    let edits: Vec<(usize, &str, &str)> = vec![
        (
            record_line,
            "\"decision\":\"ALLOW\"",
            "\"decision\":\"DENY\"",
        ),
        (record_line, "User::\\\"alice\\\"", "User::\\\"alicf\\\""),
        (
            policy_line,
            "permit(principal == User",
            "permit(principal == Usfr",
        ),
    ];
    for (line, from, to) in edits {
        assert!(lines[line].contains(from), "line {line} lacks {from}");
        let mut copy: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        copy[line] = copy[line].replacen(from, to, 1);
        let p = write(&dir, "bad.jsonl", &(copy.join("\n") + "\n"))?;
        let (code, v) = verify_with(&trust, "log", &[p.to_str().unwrap_or("")])?;
        assert_eq!(code, 1, "tamper {from} -> {to} must fail: {v}");
        let e = v["error"].as_str().unwrap_or("");
        assert!(
            e.contains(&format!("line {}", line + 1)),
            "error names line {}: {e}",
            line + 1
        );
    }

    // Consistency: an old checkpoint kept by an auditor, then a proof that
    // the latest one extends it.
    let (code, old, err) = cli(&["log", "checkpoint", "--endpoint", &ep]);
    assert_eq!(code, 0, "{err}");
    let old_cp: serde_json::Value = serde_json::from_str(&old)?;
    let old_size = old_cp["size"].as_u64().unwrap_or(0);
    let old_path = write(&dir, "old.json", &old)?;
    for k in 0..10 {
        c.decide(0, request("docs", &format!("later{k}"), "alice", "read"))
            .await?;
    }
    // Wait until a newer final checkpoint exists.
    let mut bundle = String::new();
    for _ in 0..50 {
        let (code, out, _) = cli(&[
            "log",
            "consistency",
            "--endpoint",
            &ep,
            "--old",
            old_path.to_str().unwrap_or(""),
        ]);
        let b: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
        if code == 0 && b["checkpoint"]["size"].as_u64().unwrap_or(0) > old_size {
            bundle = out;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!bundle.is_empty(), "no newer final checkpoint appeared");
    let new_path = write(&dir, "new.json", &bundle)?;
    let (code, v) = verify_with(
        &trust,
        "consistency",
        &[
            old_path.to_str().unwrap_or(""),
            new_path.to_str().unwrap_or(""),
        ],
    )?;
    assert_eq!(code, 0, "{v}");
    // A forked "old" view (another root at that size) does not verify.
    let mut forked = old_cp.clone();
    flip_hex(&mut forked["root"]);
    let p = write(&dir, "forked.json", &forked.to_string())?;
    let (code, _) = verify_with(
        &trust,
        "consistency",
        &[p.to_str().unwrap_or(""), new_path.to_str().unwrap_or("")],
    )?;
    assert_eq!(code, 1);
    // A proof between two different sizes is never empty; a damaged one
    // does not verify.
    let mut b: serde_json::Value = serde_json::from_str(&bundle)?;
    assert!(b["proof"][0].is_string(), "empty consistency proof: {b}");
    flip_hex(&mut b["proof"][0]);
    {
        let p = write(&dir, "badproof.json", &b.to_string())?;
        let (code, _) = verify_with(
            &trust,
            "consistency",
            &[old_path.to_str().unwrap_or(""), p.to_str().unwrap_or("")],
        )?;
        assert_eq!(code, 1);
    }
    // Every node reports the same final checkpoint progress eventually.
    for i in 0..3 {
        assert!(c.status(i).await?.last_final_checkpoint >= old_size);
    }
    Ok(())
}

fn flip_hex(v: &mut serde_json::Value) {
    if let Some(s) = v.as_str() {
        let mut chars: Vec<char> = s.chars().collect();
        if let Some(ch) = chars.first_mut() {
            *ch = if *ch == '0' { '1' } else { '0' };
        }
        *v = chars.into_iter().collect::<String>().into();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t51_unsigned_or_wrongly_signed_policies_are_refused_when_required() -> anyhow::Result<()> {
    // Keys first: the trusted publisher and an impostor.
    let keys = tempfile::tempdir()?;
    let trusted = keys.path().join("trusted.key");
    let impostor = keys.path().join("impostor.key");
    let (code, out, err) = cli(&["keys", "gen", "--out", trusted.to_str().unwrap_or("")]);
    assert_eq!(code, 0, "{err}");
    let pubkey = serde_json::from_str::<serde_json::Value>(&out)?["public_key"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let (code, _, err) = cli(&["keys", "gen", "--out", impostor.to_str().unwrap_or("")]);
    assert_eq!(code, 0, "{err}");
    let c = Cluster::start(ClusterOpts {
        extra_config: format!(
            "[security]\nrequire_signed_policies = true\n\n[[security.trusted_publishers]]\n\
             name = \"policy-team\"\npublic_key = \"{pubkey}\"\n"
        ),
        ..ClusterOpts::default()
    })
    .await?;
    let ep = c.nodes[0].grpc.clone();
    let policy = write(keys.path(), "p.cedar", POLICY)?;
    let p = policy.to_str().unwrap_or("");
    // Let the leader's first (blank) entry settle, then take the log's length.
    c.wait_converged(0, Duration::from_secs(10)).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = c.status(0).await?.last_log_index;

    let publish = |extra: &[&str]| {
        let mut args = quorate_e2e::publish_args(&ep, "docs", p, &["--activate"]);
        args.extend_from_slice(extra);
        cli(&args)
    };
    // Unsigned: refused before anything is committed.
    let (code, _, err) = publish(&[]);
    assert_eq!(code, 2);
    assert!(err.contains("requires signed policies"), "{err}");
    // Signed by a key that is not trusted.
    let (code, _, err) = publish(&["--sign-with", impostor.to_str().unwrap_or("")]);
    assert_eq!(code, 2);
    assert!(err.contains("not in security.trusted_publishers"), "{err}");
    // A trusted signature over other bytes.
    let (code, sig, err) = cli(&[
        "policy",
        "sign",
        "--key",
        trusted.to_str().unwrap_or(""),
        "--file",
        p,
    ]);
    assert_eq!(code, 0, "{err}");
    let other = write(
        keys.path(),
        "other.cedar",
        "permit(principal, action, resource);",
    )?;
    let sig_path = write(keys.path(), "p.sig", &sig)?;
    let (code, _, err) = cli(&[
        "policy",
        "publish",
        "--endpoint",
        &ep,
        "--domain",
        "docs",
        "--file",
        other.to_str().unwrap_or(""),
        "--signature",
        sig_path.to_str().unwrap_or(""),
    ]);
    assert_eq!(code, 2, "{err}");
    // Nothing was committed by any of the refusals.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = c.status(0).await?;
    assert_eq!(
        after.last_log_index, before,
        "a refused publish changed the log"
    );
    let mut cl = c.client(0).await?;
    assert!(
        cl.get_policy(quorate_proto::v1::GetPolicyRequest {
            domain: "docs".into(),
            version: 0
        })
        .await
        .is_err()
    );

    // The trusted signature over the exact bytes is accepted, and the export
    // carries it for the verifier.
    let (code, _, err) = publish(&["--signature", sig_path.to_str().unwrap_or("")]);
    assert_eq!(code, 0, "{err}");
    let r = c.decide(1, request("docs", "s1", "alice", "read")).await?;
    assert!(is_allow(&r));
    let (code, trust_json, _) = cli(&["keys", "export", "--endpoint", &ep]);
    assert_eq!(code, 0);
    assert!(trust_json.contains(&pubkey));
    let trust = write(keys.path(), "trust.json", &trust_json)?;
    let v = export_and_verify(&ep, &trust, &keys.path().join("e.jsonl"))?;
    assert_eq!(v["signed_policies"], 1);
    Ok(())
}
