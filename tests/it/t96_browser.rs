//! The console as people see it: headless Chromium (Debian's `chromium`,
//! which `cargo xtask test` installs) against a real 3-node TLS cluster.
//! Every view loads real data, filters work, the lineage graph has the
//! expected nodes, the in-browser verifier accepts an honest receipt and
//! rejects a one-byte edit, an agent is refused the log, and the dashboard
//! shows containment within seconds of two nodes being killed. Screenshots
//! of every view go to $QUORATE_ARTIFACTS (default: a temp dir).

use std::path::PathBuf;
use std::time::Duration;

use quorate_e2e::browser::{Browser, Page};
use quorate_e2e::{
    Cluster, ClusterOpts, POLICY, cert_args, cli, console_token, payment_tree, request,
};
use quorate_proto::v1;

const LOAD: Duration = Duration::from_secs(20);

fn artifacts() -> anyhow::Result<PathBuf> {
    let dir = std::env::var_os("QUORATE_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("quorate-artifacts"))
        .join("console");
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Goes to `route` (a hash route) and waits until the view has loaded.
fn open(page: &Page, route: &str, view: &str) -> anyhow::Result<()> {
    page.eval(&format!("location.hash = {}", serde_json::json!(route)))?;
    page.wait_for(
        &format!(
            "document.body.dataset.view === {} && document.body.dataset.loaded === 'true'",
            serde_json::json!(view)
        ),
        LOAD,
    )?;
    Ok(())
}

fn count(page: &Page, selector: &str) -> anyhow::Result<u64> {
    let v = page.eval(&format!(
        "document.querySelectorAll({}).length",
        serde_json::json!(selector)
    ))?;
    Ok(v.as_u64().unwrap_or(0))
}

fn attrs(page: &Page, selector: &str, attr: &str) -> anyhow::Result<Vec<String>> {
    let v = page.eval(&format!(
        "[...document.querySelectorAll({})].map(e => e.getAttribute({}))",
        serde_json::json!(selector),
        serde_json::json!(attr)
    ))?;
    Ok(v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default())
}

fn shot(page: &Page, name: &str) -> anyhow::Result<()> {
    let path = artifacts()?.join(format!("{name}.png"));
    page.screenshot(&path)?;
    eprintln!("screenshot: {}", path.display());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t96_console_in_a_real_browser() -> anyhow::Result<()> {
    let browser = match Browser::find() {
        Ok(_) => Browser::launch(&["--ignore-certificate-errors"])?,
        Err(e) if std::env::var_os("QUORATE_REQUIRE_BROWSER").is_none() => {
            eprintln!("skipping the browser test: {e}");
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let mut c = Cluster::start(ClusterOpts {
        tls: true,
        ..Default::default()
    })
    .await?;
    let certs = c.certs.clone().ok_or_else(|| anyhow::anyhow!("no certs"))?;
    c.publish("pay", POLICY).await?;
    payment_tree(&c).await?;
    let l = c.wait_leader(Duration::from_secs(10)).await?;
    let mut admin = c.client_as(l, "admin").await?;
    admin
        .publish_policy(v1::PublishPolicyRequest {
            domain: "pay".into(),
            policy_text: format!("{POLICY}permit(principal == User::\"bob\", action, resource);\n"),
            schema: None,
            activate: false,
            publisher_key: None,
            signature: None,
        })
        .await?;
    c.wait_converged(5, Duration::from_secs(10)).await?;

    // The browser talks to the node that will survive the kills below.
    let survivor = 0;
    let base = format!("https://{}/", c.nodes[survivor].http);
    let auditor = console_token(&certs, "auditor", "30")?;
    let page = browser.new_page(1280, 860)?;
    page.navigate(&format!("{base}#token={auditor}"))?;
    page.wait_for(
        "document.body.dataset.view === 'health' && document.body.dataset.loaded === 'true'",
        LOAD,
    )?;
    // The token left the address bar.
    let href = page.eval("location.href")?;
    assert!(!href.to_string().contains("qct1."), "{href}");
    page.wait_for(
        "document.querySelectorAll('[data-test=node][data-state=quorate]').length === 3",
        LOAD,
    )?;
    page.wait_for(
        "document.querySelector('[data-test=session]')?.textContent.includes('auditor')",
        LOAD,
    )?;
    assert_eq!(
        attrs(&page, "[data-test=cluster-banner]", "data-state")?,
        vec!["quorate"]
    );
    // Let the throughput chart gather a few samples.
    tokio::time::sleep(Duration::from_secs(3)).await;
    shot(&page, "health")?;

    // The decision log, newest first, then filtered.
    open(&page, "#/decisions", "decisions")?;
    page.wait_for(
        "document.querySelectorAll('[data-test=decision-row]').length >= 5",
        LOAD,
    )?;
    assert_eq!(
        attrs(&page, "[data-test=decision-row]", "data-index")?,
        vec!["5", "4", "3", "2", "1"]
    );
    shot(&page, "decisions")?;
    page.eval(
        "(() => { const f = document.querySelector('[data-test=filters]'); \
         f.querySelector('[name=principal]').value = 'bob'; \
         f.querySelector('[data-test=apply-filters]').click(); })()",
    )?;
    page.wait_for(
        "document.querySelectorAll('[data-test=decision-row]').length === 1 && \
         document.body.dataset.loaded === 'true'",
        LOAD,
    )?;
    assert_eq!(
        attrs(&page, "[data-test=decision-row]", "data-decision")?,
        vec!["DENY"]
    );
    let hash = page.eval("location.hash")?;
    assert!(
        hash.to_string().contains("principal=bob"),
        "filters are in the link: {hash}"
    );

    // The live tail: a decision made now appears without a reload.
    open(&page, "#/decisions", "decisions")?;
    page.wait_for(
        "document.querySelectorAll('[data-test=decision-row]').length >= 5",
        LOAD,
    )?;
    page.eval("document.querySelector('[data-test=tail-toggle]').click()")?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.decide(2, request("pay", "tailed", "alice", "read"))
        .await?; // 6
    page.wait_for(
        "document.querySelector('[data-test=decision-row][data-index=\"6\"]')",
        LOAD,
    )?;
    page.eval("document.querySelector('[data-test=tail-toggle]').click()")?;

    // One decision and its why.
    open(&page, "#/decision/2", "decision")?;
    assert_eq!(
        attrs(&page, "[data-test=decision-detail]", "data-index")?,
        vec!["2"]
    );
    assert_eq!(count(&page, "[data-test=why-policy]")?, 1);
    let why = page.eval("document.querySelector('[data-test=why]').textContent")?;
    assert!(
        why.to_string().contains("User::\\\"alice\\\""),
        "the policy's text: {why}"
    );
    shot(&page, "decision")?;

    // Its lineage, drawn.
    open(&page, "#/lineage/2", "lineage")?;
    page.wait_for(
        "document.querySelectorAll('[data-test=lineage-node]').length === 3",
        LOAD,
    )?;
    let mut nodes = attrs(&page, "[data-test=lineage-node]", "data-index")?;
    nodes.sort();
    assert_eq!(nodes, vec!["1", "2", "4"]);
    assert_eq!(count(&page, "[data-test=lineage-edge]")?, 2);
    open(&page, "#/lineage?trace_id=t-pay", "lineage")?;
    page.wait_for(
        "document.querySelectorAll('[data-test=lineage-node]').length === 4",
        LOAD,
    )?;
    assert_eq!(
        count(&page, "[data-test=lineage-node][data-decision=DENY]")?,
        1
    );
    shot(&page, "lineage")?;

    // The proof viewer: pin the trust file, verify an honest receipt in the
    // browser, then the same receipt with one byte changed.
    open(&page, "#/proofs?index=2", "proofs")?;
    page.wait_for(
        "document.querySelector('[data-test=receipt-input]').value.includes('quorate-receipt/v1')",
        LOAD,
    )?;
    page.eval("document.querySelector('[data-test=pin-trust]').click()")?;
    page.wait_for("document.querySelector('[data-test=pinned-trust]')", LOAD)?;
    let pinned = attrs(&page, "[data-test=pinned-trust]", "data-sha256")?;
    let tls = cert_args(&certs, "auditor");
    let mut args = vec!["keys", "export", "--endpoint", c.nodes[1].grpc.as_str()];
    args.extend(tls.iter().map(String::as_str));
    let (code, _, err) = cli(&args);
    assert_eq!(code, 0, "{err}");
    let fingerprint = err
        .lines()
        .find_map(|l| l.strip_prefix("fingerprint: "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_default()
        .to_string();
    assert_eq!(
        pinned,
        vec![fingerprint],
        "the browser and the CLI print one fingerprint for one trust file"
    );
    page.eval("document.querySelector('[data-test=verify]').click()")?;
    page.wait_for(
        "document.querySelector('[data-test=proof-result]').dataset.ok !== undefined",
        LOAD,
    )?;
    let ok = attrs(&page, "[data-test=proof-result]", "data-ok")?;
    let failed = page.eval(
        "[...document.querySelectorAll('[data-test=proof-step][data-ok=false]')].map(e => e.textContent)",
    )?;
    assert_eq!(ok, vec!["true"], "an honest receipt verifies: {failed}");
    assert!(count(&page, "[data-test=proof-step][data-ok=true]")? >= 4);
    page.eval("document.querySelector('[data-test=proof-result]').scrollIntoView()")?;
    shot(&page, "proof-verified")?;
    page.eval(
        "(() => { const t = document.querySelector('[data-test=receipt-input]'); \
         t.value = t.value.replace('alice', 'alicf'); \
         t.dispatchEvent(new Event('input')); \
         document.querySelector('[data-test=proof-result]').removeAttribute('data-ok'); \
         document.querySelector('[data-test=verify]').click(); })()",
    )?;
    page.wait_for(
        "document.querySelector('[data-test=proof-result]').dataset.ok === 'false'",
        LOAD,
    )?;
    assert!(count(&page, "[data-test=proof-step][data-ok=false]")? >= 1);
    page.eval("document.querySelector('[data-test=proof-result]').scrollIntoView()")?;
    shot(&page, "proof-tampered")?;

    // Policies: versions, a diff, a what-if.
    open(&page, "#/policies", "policies")?;
    assert_eq!(
        attrs(&page, "[data-test=policy-domain]", "data-domain")?,
        vec!["pay"]
    );
    page.wait_for("document.querySelector('[data-test=policy-diff]')", LOAD)?;
    let diff = page.eval("document.querySelector('[data-test=policy-diff]').textContent")?;
    assert!(
        diff.to_string().contains("User::\\\"bob\\\""),
        "v1 → v2 shows the added permit: {diff}"
    );
    shot(&page, "policies")?;

    // An agent's browser is refused the log, and shown why.
    let agent = console_token(&certs, "agent", "30")?;
    let agent_page = browser.new_page(1280, 860)?;
    agent_page.navigate(&format!("{base}#token={agent}"))?;
    agent_page.wait_for("document.body.dataset.loaded === 'true'", LOAD)?;
    open(&agent_page, "#/decisions", "decisions")?;
    assert_eq!(
        attrs(&agent_page, "[data-test=error]", "data-code")?,
        vec!["PERMISSION_DENIED"]
    );
    assert_eq!(count(&agent_page, "[data-test=decision-row]")?, 0);
    let text = agent_page.eval("document.body.textContent")?;
    assert!(
        !text.to_string().contains("approve-a"),
        "no record reaches an agent"
    );
    shot(&agent_page, "agent-refused")?;
    drop(agent_page);

    // An admin on a follower's console is told that actions are taken on
    // the leader, with a link that opens the leader's console signed in.
    let leader = c.wait_leader(Duration::from_secs(10)).await?;
    let follower = (0..3).find(|i| *i != leader).unwrap_or(0);
    let admin = console_token(&certs, "admin", "30")?;
    let admin_page = browser.new_page(1280, 860)?;
    admin_page.navigate(&format!(
        "https://{}/#token={admin}&to=/policies",
        c.nodes[follower].http
    ))?;
    admin_page.wait_for(
        "document.body.dataset.view === 'policies' && document.body.dataset.loaded === 'true'",
        LOAD,
    )?;
    admin_page.wait_for("document.querySelector('[data-test=leader-console]')", LOAD)?;
    let to_leader = attrs(&admin_page, "[data-test=leader-console]", "href")?;
    let want = format!("https://{}/#token=", c.nodes[leader].http);
    assert!(
        to_leader.len() == 1
            && to_leader[0].starts_with(&want)
            && to_leader[0].ends_with("&to=/policies"),
        "{to_leader:?}, not a link to {want}"
    );
    shot(&admin_page, "policies-on-a-follower")?;
    admin_page.navigate(&to_leader[0])?;
    admin_page.wait_for(
        "document.body.dataset.view === 'policies' && document.body.dataset.loaded === 'true' && \
         document.querySelector('[data-test=session]')?.textContent.includes('admin')",
        LOAD,
    )?;
    assert_eq!(count(&admin_page, "[data-test=leader-console]")?, 0);
    drop(admin_page);

    // Two nodes killed: the survivor's dashboard shows it contained.
    open(&page, "#/health", "health")?;
    c.kill9(1);
    c.kill9(2);
    let started = std::time::Instant::now();
    page.wait_for(
        "document.querySelector('[data-test=cluster-banner]')?.dataset.state === 'contained' && \
         document.querySelectorAll('[data-test=node][data-state=unreachable]').length === 2 && \
         document.querySelector('[data-test=node][data-node-id=\"1\"]')?.dataset.state === 'contained'",
        Duration::from_secs(15),
    )?;
    eprintln!("containment shown {:?} after the kills", started.elapsed());
    assert_eq!(
        attrs(&page, "[data-test=node][data-node-id=\"1\"]", "data-reason")?,
        vec!["NO_QUORUM"]
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    shot(&page, "health-contained")?;
    let errors: Vec<String> = page
        .console()
        .into_iter()
        .filter(|l| l.starts_with("[exception]"))
        .collect();
    assert!(errors.is_empty(), "the page threw: {errors:?}");
    Ok(())
}
