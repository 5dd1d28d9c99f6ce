//! What operators scrape: every metric of docs/METRICS.md is exported by a
//! running node from its start, with its HELP and TYPE, nothing is exported
//! that the document does not list, and `promtool check metrics` (when the
//! test command provides it) finds nothing to complain about.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use quorate_e2e::{Cluster, ClusterOpts, http_get};

/// (name → (type, every label of it has a known set of values)) from the
/// table of docs/METRICS.md.
fn documented() -> BTreeMap<String, (String, bool)> {
    let doc = include_str!("../../docs/METRICS.md");
    let mut out = BTreeMap::new();
    for line in doc.lines().filter(|l| l.starts_with("| `quorate_")) {
        let cells: Vec<&str> = line.split(" | ").collect();
        let name = cells[0].trim_start_matches("| ").trim_matches('`');
        let labels = cells.get(3).copied().unwrap_or("");
        // A label listed without values ("`node`") takes values known only
        // at run time (members of the cluster).
        let known = !labels
            .split(", ")
            .any(|l| l.starts_with("`node`") || l.starts_with("`region`"));
        out.insert(name.to_string(), (cells[1].to_string(), known));
    }
    out
}

/// The metric families a scrape declares: name → TYPE, and the HELP set.
fn families(text: &str) -> (BTreeMap<String, String>, BTreeSet<String>) {
    let mut types = BTreeMap::new();
    let mut helps = BTreeSet::new();
    for l in text.lines() {
        if let Some(rest) = l.strip_prefix("# TYPE ") {
            let mut it = rest.split(' ');
            if let (Some(n), Some(t)) = (it.next(), it.next()) {
                types.insert(n.to_string(), t.to_string());
            }
        } else if let Some(rest) = l.strip_prefix("# HELP ")
            && let Some((n, help)) = rest.split_once(' ')
            && help.len() > 10
        {
            helps.insert(n.to_string());
        }
    }
    (types, helps)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t90_every_documented_metric_is_exported_from_the_start() -> anyhow::Result<()> {
    let doc = documented();
    assert!(doc.len() > 30, "read docs/METRICS.md: {doc:?}");
    let c = Cluster::start(ClusterOpts::default()).await?;
    let l = c.wait_leader(Duration::from_secs(10)).await?;
    // Let the leader publish its per-member gauges once.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (i, n) in c.nodes.iter().enumerate() {
        let raw = http_get(&n.http, "/metrics").await?;
        let text = raw.split_once("\r\n\r\n").map_or(raw.as_str(), |(_, b)| b);
        let (types, helps) = families(text);
        for (name, (kind, known)) in &doc {
            // Nothing has been decided yet: series of known labels are
            // there at zero all the same.
            if *known || i == l {
                assert_eq!(types.get(name), Some(kind), "node {i}: {name}\n{text}");
                assert!(helps.contains(name), "node {i}: {name} has no HELP");
            }
        }
        for name in types.keys() {
            assert!(
                doc.contains_key(name),
                "node {i} exports {name}, which docs/METRICS.md does not list"
            );
        }
        assert!(
            text.contains("quorate_unattested_total 0"),
            "node {i}: a counter of known labels starts at zero"
        );
        if let Some(promtool) = std::env::var_os("QUORATE_PROMTOOL") {
            use std::io::Write;
            let mut child = std::process::Command::new(&promtool)
                .args(["check", "metrics"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()?;
            child
                .stdin
                .take()
                .ok_or_else(|| anyhow::anyhow!("promtool stdin"))?
                .write_all(text.as_bytes())?;
            let out = child.wait_with_output()?;
            let said = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                out.status.success() && said.trim().is_empty(),
                "node {i}: promtool check metrics: {said}"
            );
        } else {
            eprintln!("QUORATE_PROMTOOL is not set: `cargo xtask test` provides promtool");
        }
    }
    Ok(())
}
