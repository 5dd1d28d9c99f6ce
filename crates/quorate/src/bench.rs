//! `quorate bench`: drives a running cluster with authorization requests
//! from concurrent clients and reports decisions/s and latency percentiles.
//! Figures, not assertions: the method and results live in docs/BENCHMARKS.md.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use hdrhistogram::Histogram;
use quorate_proto::v1;
use tokio::sync::Mutex;

use crate::client::connect;

#[derive(Args, Debug)]
pub(crate) struct BenchArgs {
    /// Comma-separated gRPC addresses; clients are spread across them.
    #[arg(long, default_value = "127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103")]
    endpoints: String,
    /// Concurrent clients, each with one request in flight.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Measured seconds (after warm-up).
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Warm-up seconds, not measured.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Domain to send requests to (must have an active policy, e.g. `demo` from `quorate dev`).
    #[arg(long, default_value = "demo")]
    domain: String,
}

#[derive(Default)]
struct Tally {
    allow: u64,
    deny: u64,
    errors: u64,
    reasons: std::collections::BTreeMap<String, u64>,
}

pub(crate) async fn run(a: BenchArgs) -> anyhow::Result<ExitCode> {
    let endpoints: Vec<String> = a
        .endpoints
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    anyhow::ensure!(!endpoints.is_empty(), "--endpoints is empty");
    anyhow::ensure!(a.clients > 0, "--clients must be at least 1");
    let hist = Arc::new(Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).context("histogram")?,
    ));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let start = Instant::now();
    let measure_from = start + Duration::from_secs(a.warmup);
    let end = measure_from + Duration::from_secs(a.duration);
    let progress = indicatif::ProgressBar::new(a.warmup + a.duration);
    progress.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {elapsed_precise} [{bar:30}] {pos}/{len}s {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut tasks = Vec::new();
    let run_id = format!(
        "bench-{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0)
    );
    for i in 0..a.clients {
        let ep = endpoints[i % endpoints.len()].clone();
        let mut client = connect(&ep).await?;
        let hist = hist.clone();
        let tally = tally.clone();
        let domain = a.domain.clone();
        let run_id = run_id.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < end {
                n += 1;
                let principal = if n % 4 == 0 { "bob" } else { "alice" };
                let req = v1::AuthorizeRequest {
                    domain: domain.clone(),
                    principal: format!("User::\"{principal}\""),
                    action: "Action::\"read\"".into(),
                    resource: format!("Doc::\"{}\"", n % 1000),
                    context_json: String::new(),
                    entities_json: None,
                    request_id: format!("{run_id}-{i}-{n}"),
                    parent: None,
                    trace_id: None,
                };
                let t0 = Instant::now();
                let r = client.authorize(req).await;
                let took = t0.elapsed();
                if t0 < measure_from {
                    continue;
                }
                let mut t = tally.lock().await;
                match r {
                    Ok(resp) => {
                        let resp = resp.into_inner();
                        if resp.decision == v1::Decision::Allow as i32 {
                            t.allow += 1;
                        } else {
                            t.deny += 1;
                            *t.reasons.entry(resp.reason).or_default() += 1;
                        }
                        drop(t);
                        let _ = hist.lock().await.record(took.as_micros().max(1) as u64);
                    }
                    Err(_) => t.errors += 1,
                }
            }
        }));
    }
    let ticker = {
        let progress = progress.clone();
        tokio::spawn(async move {
            while Instant::now() < end {
                tokio::time::sleep(Duration::from_secs(1)).await;
                progress.inc(1);
            }
        })
    };
    for t in tasks {
        let _ = t.await;
    }
    let _ = ticker.await;
    progress.finish_and_clear();
    let h = hist.lock().await;
    let t = tally.lock().await;
    let decided = t.allow + t.deny;
    let secs = a.duration as f64;
    let out = serde_json::json!({
        "clients": a.clients,
        "endpoints": endpoints,
        "duration_s": a.duration,
        "decisions": decided,
        "decisions_per_s": (decided as f64 / secs).round(),
        "allow": t.allow,
        "deny": t.deny,
        "deny_reasons": t.reasons,
        "errors": t.errors,
        "latency_ms": {
            "p50": h.value_at_quantile(0.50) as f64 / 1000.0,
            "p99": h.value_at_quantile(0.99) as f64 / 1000.0,
            "p999": h.value_at_quantile(0.999) as f64 / 1000.0,
            "max": h.max() as f64 / 1000.0,
        },
    });
    crate::client::print_json(&out)?;
    Ok(ExitCode::SUCCESS)
}
