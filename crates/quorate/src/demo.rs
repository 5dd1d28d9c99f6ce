//! `quorate demo`: the runtime governance demo in one command. It starts
//! (or uses) the local dev cluster, opens the console, and plays a
//! narrated story: an AI agent asking before each tool call, a payment
//! whose approvals link to it, a policy rollout in shadow then promoted, two
//! nodes killed (every answer DENY NO_QUORUM), recovery, and an offline
//! verification of the whole log. Each step says what to look at.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use quorate_proto::v1;

use crate::client::{connect, connect_leader, status_error, use_certs};

const NODE1: &str = "127.0.0.1:7101";

pub(crate) const AGENTS_POLICY: &str = r#"// Domain "agents": what an AI agent may do, asked before every tool call.
// Any agent may open a session and search the knowledge base.
permit (principal, action == Action::"start_session", resource);
permit (principal, action == Action::"call", resource == Tool::"search_kb");
// Refunds only below 100, read from the call's arguments.
permit (principal, action == Action::"call", resource == Tool::"refund")
when { context has amount && context.amount < 100 };
// No agent drops a database, whatever else would allow it.
forbid (principal, action == Action::"call", resource == Tool::"drop_database");
"#;

/// The rollout's candidate: refunds only below 50.
pub(crate) const AGENTS_POLICY_V2: &str = r#"// Domain "agents", v2: refunds only below 50.
permit (principal, action == Action::"start_session", resource);
permit (principal, action == Action::"call", resource == Tool::"search_kb");
permit (principal, action == Action::"call", resource == Tool::"refund")
when { context has amount && context.amount < 50 };
forbid (principal, action == Action::"call", resource == Tool::"drop_database");
"#;

/// Domain "payments" (`config/dev/payments.cedar`, also published by
/// `quorate dev` for examples/payment-approval).
pub(crate) const PAYMENTS_POLICY: &str = crate::dev::PAYMENTS_POLICY;

/// The narrated story's state.
struct Demo {
    certs: PathBuf,
    console: String,
    pace: Duration,
    run: String,
    step: usize,
    steps: usize,
}

impl Demo {
    fn header(&mut self, title: &str) {
        self.step += 1;
        let done = self.step * 24 / self.steps;
        let bar = format!("{}{}", "█".repeat(done), "░".repeat(24 - done));
        println!(
            "\n[{}/{}] {bar}  {title}\n{}",
            self.step,
            self.steps,
            "─".repeat(60)
        );
    }

    fn say(&self, text: &str) {
        println!("  {text}");
    }

    fn look(&self, what: &str, route: &str) {
        println!("  ➜ In the console: {what}\n    {}#/{route}", self.console);
    }

    async fn pause(&self) {
        let _ = std::io::stdout().flush();
        tokio::time::sleep(self.pace).await;
    }

    fn id(&self, name: &str) -> String {
        format!("{}-{name}", self.run)
    }

    /// Asks node 1 (which forwards to the leader) and narrates the answer.
    #[allow(clippy::too_many_arguments)]
    async fn ask(
        &self,
        domain: &str,
        rid: &str,
        principal: &str,
        action: &str,
        resource: &str,
        context: serde_json::Value,
        parent: Option<&str>,
        trace: Option<&str>,
    ) -> anyhow::Result<(bool, String, Option<u64>)> {
        use_certs(&self.certs, "agent")?;
        let req = v1::AuthorizeRequest {
            domain: domain.into(),
            request_id: rid.into(),
            principal: principal.into(),
            action: action.into(),
            resource: resource.into(),
            context_json: context.to_string(),
            entities_json: None,
            parent: parent.map(Into::into),
            trace_id: trace.map(Into::into),
        };
        let mut c = connect(NODE1).await?;
        let resp = c
            .authorize(req.clone())
            .await
            .map_err(|s| status_error(&s))?
            .into_inner();
        let (allow, reason, index) = match quorate_client::check_answer(&req, &resp, None, true) {
            quorate_client::Checked::Allow(a) => (true, String::new(), Some(a.record.index)),
            quorate_client::Checked::Deny(d) => (false, d.reason, d.record.map(|r| r.index)),
        };
        let outcome = if allow {
            "ALLOW".to_string()
        } else {
            format!("DENY {reason}")
        };
        let at = index
            .map(|i| format!("#{i}"))
            .unwrap_or_else(|| "(not committed)".into());
        let ctx = if context.as_object().is_some_and(|o| o.is_empty()) {
            String::new()
        } else {
            format!(" {context}")
        };
        println!("    {principal} → {action} {resource}{ctx}\n      {outcome:<20} {at}");
        self.pause().await;
        Ok((allow, reason, index))
    }
}

/// Publishes and activates `text` in `domain` unless a version is active.
async fn ensure_policy(domain: &str, text: &str) -> anyhow::Result<()> {
    let mut c = connect_leader(NODE1).await?;
    crate::dev::ensure_policy(&mut c, domain, text).await?;
    Ok(())
}

/// The pids of the running `quorate node` processes of `data_dir`'s node n.
fn node_pids(data_dir: &Path, n: usize) -> Vec<u32> {
    let config = data_dir.join(format!("node{n}.toml"));
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|raw| {
                let args: Vec<&[u8]> = raw.split(|b| *b == 0).collect();
                args.windows(2).any(|w| {
                    w[0] == b"--config" && Path::new(&*String::from_utf8_lossy(w[1])) == config
                })
            })
        })
        .collect()
}

async fn wait_status(
    what: &str,
    timeout: Duration,
    ok: impl Fn(&v1::StatusResponse) -> bool,
) -> anyhow::Result<v1::StatusResponse> {
    let start = Instant::now();
    loop {
        if let Ok(mut c) = connect(NODE1).await
            && let Ok(s) = c.status(v1::StatusRequest {}).await
        {
            let s = s.into_inner();
            if ok(&s) {
                return Ok(s);
            }
        }
        if start.elapsed() > timeout {
            bail!("{what} did not happen within {} s", timeout.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn open_browser(url: &str) -> bool {
    let graphical = std::env::var_os("DISPLAY").is_some()
        || std::env::var_os("WAYLAND_DISPLAY").is_some()
        || cfg!(target_os = "macos");
    if !graphical {
        return false;
    }
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    std::process::Command::new(opener)
        .arg(url)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .is_ok()
}

pub(crate) async fn run(data_dir: PathBuf, open: bool, pace: Duration) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let data_dir = data_dir.canonicalize()?;
    let certs = data_dir.join("certs");
    let run = format!(
        "d{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    );
    let mut demo = Demo {
        certs: certs.clone(),
        console: String::new(),
        pace,
        run,
        step: 0,
        steps: 7,
    };

    // 1. The cluster: the one already running here, or a new one.
    demo.header("A 3-node governance cluster");
    let running = certs.join("ca.pem").exists() && {
        use_certs(&certs, "admin")?;
        wait_status("quorum", Duration::from_secs(2), |s| s.quorate)
            .await
            .is_ok()
    };
    if running {
        demo.say(&format!(
            "using the dev cluster already running in {}",
            data_dir.display()
        ));
    } else {
        demo.say("starting `quorate dev` (3 nodes, RocksDB, mutual TLS)...");
        let code = crate::dev::run(data_dir.clone(), true).await?;
        if code != ExitCode::SUCCESS {
            bail!("the dev cluster did not start");
        }
    }
    use_certs(&certs, "admin")?;
    ensure_policy("agents", AGENTS_POLICY).await?;
    ensure_policy("payments", PAYMENTS_POLICY).await?;
    let token =
        crate::console::token(&certs.join("admin.pem"), &certs.join("admin.key"), 8 * 3600)?;
    demo.console = crate::console::DEFAULT_CONSOLE_URL.to_string();
    let login = crate::console::login_url(crate::console::DEFAULT_CONSOLE_URL, &token);
    let opened = open && open_browser(&login);
    demo.say(&format!(
        "the console ({}): {login}",
        if opened {
            "opened in your browser"
        } else {
            "open this link; it signs you in as admin"
        }
    ));
    demo.look(
        "every node, its role, term, indexes, quorum and checkpoints",
        "health",
    );
    demo.pause().await;

    // 2. An AI agent asks before each tool call.
    demo.header("An AI agent asks before each tool call");
    let session = demo.id("session");
    let trace = demo.id("agent");
    demo.say("support-bot opens a session; each tool call names it as its parent");
    demo.ask(
        "agents",
        &session,
        "Agent::\"support-bot\"",
        "Action::\"start_session\"",
        &format!("Session::\"{session}\""),
        serde_json::json!({}),
        None,
        Some(&trace),
    )
    .await?;
    let calls = [
        (
            "search_kb",
            serde_json::json!({"query": "refund policy"}),
            true,
        ),
        (
            "refund",
            serde_json::json!({"amount": 40, "order": "A-1001"}),
            true,
        ),
        (
            "refund",
            serde_json::json!({"amount": 250, "order": "A-1002"}),
            false,
        ),
        (
            "drop_database",
            serde_json::json!({"name": "orders"}),
            false,
        ),
    ];
    for (n, (tool, args, expect)) in calls.iter().enumerate() {
        let (allow, _, _) = demo
            .ask(
                "agents",
                &demo.id(&format!("call-{n}")),
                "Agent::\"support-bot\"",
                "Action::\"call\"",
                &format!("Tool::\"{tool}\""),
                args.clone(),
                Some(&session),
                Some(&trace),
            )
            .await?;
        if allow != *expect {
            bail!("the agents policy answered {allow} for {tool}; expected {expect}");
        }
    }
    demo.say("a denied call never reaches the tool: the agent gets the reason instead");
    demo.look(
        "the agent's whole run as one graph",
        &format!("lineage?trace_id={trace}"),
    );

    // 3. A payment whose approvals link to it.
    demo.header("A payment approval: child decisions link to their parent");
    let pay = demo.id("payment");
    let pay_trace = demo.id("pay");
    let (_, _, pay_index) = demo
        .ask(
            "payments",
            &pay,
            "User::\"alice\"",
            "Action::\"initiate\"",
            &format!("Payment::\"{pay}\""),
            serde_json::json!({"amount": 2500, "currency": "EUR"}),
            None,
            Some(&pay_trace),
        )
        .await?;
    for (who, n) in [("carol", 1), ("mallory", 2), ("dave", 3)] {
        demo.ask(
            "payments",
            &demo.id(&format!("approve-{n}")),
            &format!("User::\"{who}\""),
            "Action::\"approve\"",
            &format!("Payment::\"{pay}\""),
            serde_json::json!({}),
            Some(&pay),
            Some(&pay_trace),
        )
        .await?;
    }
    demo.ask(
        "payments",
        &demo.id("execute"),
        "Service::\"payments\"",
        "Action::\"execute\"",
        &format!("Payment::\"{pay}\""),
        serde_json::json!({"approvals": 2}),
        Some(&pay),
        Some(&pay_trace),
    )
    .await?;
    demo.say("mallory is no approver: DENY POLICY, recorded like every other answer");
    match pay_index {
        Some(i) => demo.look("the payment and its four children", &format!("lineage/{i}")),
        None => demo.look(
            "the payment's trace",
            &format!("lineage?trace_id={pay_trace}"),
        ),
    }

    // 4. A rollout in shadow, then promoted at one log index.
    demo.header("A policy rollout: shadow first, then promoted at one log index");
    use_certs(&certs, "admin")?;
    let rollout_id = demo.id("agents-v2");
    let plan = serde_json::json!({
        "id": rollout_id,
        "candidates": [{"domain": "agents", "policy_text": AGENTS_POLICY_V2}],
        "stages": [{"domains": ["agents"], "shadow_decisions": 0, "shadow_ms": 0}],
    });
    let mut c = connect_leader(NODE1).await?;
    c.start_rollout(v1::StartRolloutRequest {
        plan_json: plan.to_string(),
    })
    .await
    .map_err(|s| status_error(&s))?;
    demo.say("v2 (refunds only below 50) is evaluated beside v1 on every replica, never enforced:");
    for (n, amount) in [(0, 40), (1, 70), (2, 80)] {
        demo.ask(
            "agents",
            &demo.id(&format!("shadow-{n}")),
            "Agent::\"support-bot\"",
            "Action::\"call\"",
            "Tool::\"refund\"",
            serde_json::json!({"amount": amount}),
            Some(&session),
            Some(&trace),
        )
        .await?;
    }
    use_certs(&certs, "admin")?;
    let mut c = connect_leader(NODE1).await?;
    let status = c
        .get_rollout(v1::RolloutRequest {
            rollout_id: rollout_id.clone(),
            force: false,
        })
        .await
        .map_err(|s| status_error(&s))?
        .into_inner();
    let doc: serde_json::Value = serde_json::from_str(&status.json)?;
    let counts = &doc["stages"][0]["domains"][0]["counts"];
    demo.say(&format!(
        "shadow so far: {} shadowed, {} would have been denied (allow_to_deny), {} would have been allowed",
        counts["shadowed"], counts["allow_to_deny"], counts["deny_to_allow"]
    ));
    demo.look("the rollout's shadow counts and a v1 → v2 diff", "policies");
    demo.pause().await;
    let promoted = c
        .promote_rollout(v1::RolloutRequest {
            rollout_id: rollout_id.clone(),
            force: false,
        })
        .await
        .map_err(|s| status_error(&s))?
        .into_inner();
    let doc: serde_json::Value = serde_json::from_str(&promoted.json)?;
    demo.say(&format!(
        "promoted: v2 is active from log index {} on every replica at once",
        doc["stages"][0]["promoted_log_index"]
    ));
    demo.ask(
        "agents",
        &demo.id("after-promote"),
        "Agent::\"support-bot\"",
        "Action::\"call\"",
        "Tool::\"refund\"",
        serde_json::json!({"amount": 60}),
        Some(&session),
        Some(&trace),
    )
    .await?;

    // 5. Two nodes killed: the survivor contains.
    demo.header("Two of three nodes killed: the survivor contains");
    for n in [2, 3] {
        for pid in node_pids(&data_dir, n) {
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status();
            demo.say(&format!("kill -9 node{n} (pid {pid})"));
        }
    }
    use_certs(&certs, "admin")?;
    wait_status("containment of node 1", Duration::from_secs(15), |s| {
        !s.quorate
    })
    .await?;
    demo.say("node 1 cannot prove a quorum, so it denies everything:");
    for n in 0..3 {
        let (allow, reason, _) = demo
            .ask(
                "agents",
                &demo.id(&format!("contained-{n}")),
                "Agent::\"support-bot\"",
                "Action::\"call\"",
                "Tool::\"search_kb\"",
                serde_json::json!({"query": "status"}),
                Some(&session),
                Some(&trace),
            )
            .await?;
        // Invariant 2: a node without a quorum answers DENY, always.
        if allow {
            bail!("SAFETY: a contained node answered ALLOW");
        }
        if reason != "NO_QUORUM" {
            demo.say(&format!("(denied with {reason})"));
        }
    }
    demo.look(
        "node 1 CONTAINED (NO_QUORUM, since when), nodes 2 and 3 unreachable",
        "health",
    );
    demo.pause().await;

    // 6. Recovery.
    demo.header("Recovery: the two nodes restart and catch up");
    let exe = std::env::current_exe().context("cannot find the quorate binary")?;
    let mut pids = vec![];
    for n in [2, 3] {
        let child = crate::dev::spawn_node(&exe, &data_dir, n)?;
        let pid = child.id().unwrap_or(0);
        demo.say(&format!("node{n} started again (pid {pid})"));
        pids.push((n, pid));
    }
    let pid_file = data_dir.join("pids");
    if pid_file.exists() {
        let text = std::fs::read_to_string(&pid_file).unwrap_or_default();
        let mut lines: Vec<String> = text
            .lines()
            .filter(|l| {
                !pids
                    .iter()
                    .any(|(n, _)| l.starts_with(&format!("node{n}=")))
            })
            .map(str::to_string)
            .collect();
        lines.extend(pids.iter().map(|(n, p)| format!("node{n}={p}")));
        std::fs::write(&pid_file, lines.join("\n") + "\n")?;
    }
    use_certs(&certs, "admin")?;
    wait_status("quorum again", Duration::from_secs(60), |s| s.quorate).await?;
    let (allow, _, _) = demo
        .ask(
            "agents",
            &demo.id("recovered"),
            "Agent::\"support-bot\"",
            "Action::\"call\"",
            "Tool::\"search_kb\"",
            serde_json::json!({"query": "status"}),
            Some(&session),
            Some(&trace),
        )
        .await?;
    if !allow {
        bail!("the recovered cluster did not allow a permitted call");
    }
    demo.look(
        "all three nodes quorate again; the containment strip ends",
        "health",
    );

    // 7. Offline verification of the whole log.
    demo.header("Offline verification of the whole decision log");
    use_certs(&certs, "auditor")?;
    let export = data_dir.join("demo-export.jsonl");
    let trust = data_dir.join("demo-trust.json");
    let mut c = connect(NODE1).await?;
    let doc = c
        .get_trust(v1::GetTrustRequest {})
        .await
        .map_err(|s| status_error(&s))?
        .into_inner();
    std::fs::write(&trust, &doc.json)?;
    crate::proofs::export(NODE1, Some(&export)).await?;
    demo.say(&format!(
        "exported to {}; verifying every hash, link, signature and Merkle proof, and \
         re-evaluating every decision under the policy active at its position:",
        export.display()
    ));
    let code = crate::proofs::verify(
        &trust,
        crate::proofs::VerifyWhat::Log {
            path: export.clone(),
            reevaluate: true,
            jobs: std::thread::available_parallelism().map_or(1, |n| n.get()),
        },
    )?;
    if code != ExitCode::SUCCESS {
        bail!("the exported log did not verify");
    }
    demo.say(&format!(
        "the same check anyone can run: quorate verify --trust {} --log {}",
        trust.display(),
        export.display()
    ));
    demo.look(
        "paste any receipt and watch your browser verify it",
        "proofs",
    );
    println!(
        "\nThe demo is over; the cluster keeps running ({}).",
        data_dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_policies_compile() {
        let limits = quorate_core::validate::Limits::default();
        for p in [AGENTS_POLICY, AGENTS_POLICY_V2, PAYMENTS_POLICY] {
            assert!(
                quorate_policy::CompiledPolicy::compile(p, None, &limits).is_ok(),
                "{p}"
            );
        }
    }
}
