//! `quorate bench`: drives a running cluster with governed decisions from
//! concurrent clients and reports decisions/s and latency percentiles; with
//! `--peer-etcd`, puts the same shape of load on an etcd cluster in the same
//! run, in interleaved rounds, and reports the ratio; with `--peer-noop`,
//! does the same with commit probes (entries that change nothing, on the
//! same batcher and replication path) on the same cluster: the governed
//! rate as a fraction of the cluster's own ceiling.
//!
//! Two ways to load:
//! - closed loop (default): each client keeps one request in flight and
//!   sends the next as soon as the last is answered; latency is service time.
//! - open loop (`--rate R`): requests are due on a fixed schedule of R per
//!   second in total, whether or not earlier ones were answered. Latency is
//!   measured from when a request was *due*, not from when a busy client got
//!   round to sending it, so a stall is charged to every request it delayed
//!   (the coordinated-omission correction); the service time is kept beside.
//!
//! Figures, not assertions: the method and results live in docs/BENCHMARKS.md.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use hdrhistogram::Histogram;
use quorate_proto::etcd::PutRequest;
use quorate_proto::etcd::kv_client::KvClient;
use quorate_proto::v1;
use quorate_proto::v1::governance_client::GovernanceClient;
use serde::Serialize;
use tokio::sync::Mutex;
use tonic::transport::Channel;

use crate::client::connect;

#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
quorate bench                                    # 64 clients, closed loop, 10 s against `quorate dev`\n  \
quorate bench --clients 1 --duration 20\n  \
quorate bench --rate 2000                        # open loop: 2000 decisions/s on a fixed schedule\n  \
deploy/bench/etcd3.sh start                      # a 3-member etcd on loopback (installs etcd-server)\n  \
quorate bench --peer-etcd 127.0.0.1:2379,127.0.0.1:22379,127.0.0.1:32379 --rounds 3 --json\n  \
quorate bench --peer-noop --rounds 3              # governed decisions vs no-op entries, same cluster\n\n\
Measure release builds (`cargo build --release -p quorate`); docs/BENCHMARKS.md has the method.")]
pub(crate) struct BenchArgs {
    /// Comma-separated gRPC addresses; clients are spread across them round-robin.
    #[arg(long, default_value = "127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103")]
    endpoints: String,
    /// Concurrent clients, each with one request in flight.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Measured seconds per run (after warm-up).
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Warm-up seconds per run, not measured.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Domain to send requests to (must have an active policy, e.g. `demo` from `quorate dev`).
    #[arg(long, default_value = "demo")]
    domain: String,
    /// Open loop: this many requests per second in total, on a fixed schedule
    /// shared by the clients; latencies are corrected for coordinated omission.
    /// Without it, each client sends as fast as it is answered (closed loop).
    #[arg(long)]
    rate: Option<u64>,
    /// Also load this etcd cluster (comma-separated client addresses, plaintext
    /// gRPC) with puts of the same client count, duration and schedule, and
    /// report quorate's figures as ratios of etcd's.
    #[arg(long, value_name = "ENDPOINTS")]
    peer_etcd: Option<String>,
    /// Also load the same cluster with commit probes (`quorate probe`: entries
    /// that change nothing, through the same batcher, forwarding and
    /// replication), in interleaved rounds, and report governed decisions as
    /// ratios of it: what governance costs over the write path itself.
    #[arg(long)]
    peer_noop: bool,
    /// Bytes per etcd value (the size of a small decision record's payload).
    #[arg(long, default_value_t = 256)]
    etcd_value_size: usize,
    /// Interleaved rounds (quorate, etcd, quorate, etcd, ...); the median
    /// round of each target is reported, with every round in the JSON.
    #[arg(long, default_value_t = 1)]
    rounds: u32,
    /// Also measure the CPU (user + system, all threads) these local processes
    /// use during each measured quorate window, and report it per decision: the
    /// per-core cost of a decision. For `quorate dev`: `--cpu-pids $(cut -d= -f2
    /// DIR/pids | paste -sd,)`.
    #[arg(long, value_name = "PIDS")]
    cpu_pids: Option<String>,
    /// The same for the etcd members' processes during each etcd window (with
    /// --peer-etcd; `deploy/bench/etcd3.sh pids` prints them).
    #[arg(long, value_name = "PIDS")]
    etcd_cpu_pids: Option<String>,
    /// Print one JSON object (for scripts) instead of the text table.
    #[arg(long)]
    json: bool,
}

/// CPU used during a measured window.
#[derive(Debug, Clone, Serialize)]
struct CpuUse {
    /// The measured processes together: CPU microseconds per operation.
    us_per_op: f64,
    /// ... and the cores they kept busy on average.
    cores: f64,
    /// CPU seconds of each measured process, by pid.
    seconds_by_pid: std::collections::BTreeMap<u32, f64>,
    /// The load generator's own CPU microseconds per operation.
    client_us_per_op: f64,
}

/// What one run against one target measured.
#[derive(Debug, Clone, Serialize)]
struct RunResult {
    target: &'static str,
    round: u32,
    ops: u64,
    ops_per_s: f64,
    /// quorate only: ALLOW answers (each carried an attested receipt when
    /// `receipts` equals it) and DENY answers by reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    allow: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    receipts: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    deny: Option<u64>,
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    deny_reasons: std::collections::BTreeMap<String, u64>,
    errors: u64,
    /// Open loop: requests that were due but never sent before the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    missed: Option<u64>,
    /// From when each request was due (open loop) or sent (closed loop).
    latency_ms: Percentiles,
    /// Open loop only: from when each request was sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    service_ms: Option<Percentiles>,
    /// With --cpu-pids / --etcd-cpu-pids.
    #[serde(skip_serializing_if = "Option::is_none")]
    cpu: Option<CpuUse>,
}

#[derive(Debug, Clone, Copy, Serialize)]
struct Percentiles {
    p50: f64,
    p90: f64,
    p99: f64,
    p999: f64,
    max: f64,
}

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Percentiles {
        let ms = |us: u64| us as f64 / 1000.0;
        Percentiles {
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}

/// One client's connection to the target under test.
enum Conn {
    Quorate(GovernanceClient<Channel>),
    Probe(GovernanceClient<Channel>),
    Etcd(KvClient<Channel>),
}

/// How one operation ended.
enum Outcome {
    Allow { receipt: bool },
    Deny(String),
    Put,
    Probed,
}

#[derive(Default)]
struct Tally {
    allow: u64,
    receipts: u64,
    deny: u64,
    puts: u64,
    probes: u64,
    errors: u64,
    missed: u64,
    reasons: std::collections::BTreeMap<String, u64>,
}

struct Shared {
    latency: Histogram<u64>,
    service: Histogram<u64>,
    tally: Tally,
}

#[derive(Clone)]
struct Plan {
    clients: usize,
    warmup: Duration,
    duration: Duration,
    rate: Option<u64>,
    domain: String,
    value: Arc<Vec<u8>>,
    run_id: String,
}

pub(crate) async fn run(a: BenchArgs) -> anyhow::Result<ExitCode> {
    let endpoints = split(&a.endpoints);
    anyhow::ensure!(!endpoints.is_empty(), "--endpoints is empty");
    anyhow::ensure!(a.clients > 0, "--clients must be at least 1");
    anyhow::ensure!(a.rounds > 0, "--rounds must be at least 1");
    anyhow::ensure!(a.duration > 0, "--duration must be at least 1 second");
    if let Some(r) = a.rate {
        anyhow::ensure!(r > 0, "--rate must be at least 1 request per second");
    }
    let etcd = a.peer_etcd.as_deref().map(split);
    if let Some(e) = &etcd {
        anyhow::ensure!(!e.is_empty(), "--peer-etcd is empty");
    }
    let cpu_pids = pids(a.cpu_pids.as_deref(), "--cpu-pids")?;
    let etcd_cpu_pids = pids(a.etcd_cpu_pids.as_deref(), "--etcd-cpu-pids")?;
    anyhow::ensure!(
        etcd_cpu_pids.is_empty() || etcd.is_some(),
        "--etcd-cpu-pids needs --peer-etcd"
    );
    let run_id = format!(
        "bench-{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0)
    );
    let plan = Plan {
        clients: a.clients,
        warmup: Duration::from_secs(a.warmup),
        duration: Duration::from_secs(a.duration),
        rate: a.rate,
        domain: a.domain.clone(),
        value: Arc::new(vec![b'x'; a.etcd_value_size]),
        run_id,
    };
    let mut quorate_runs = Vec::new();
    let mut noop_runs = Vec::new();
    let mut etcd_runs = Vec::new();
    for round in 0..a.rounds {
        let conns = quorate_conns(&endpoints, a.clients, Conn::Quorate).await?;
        quorate_runs.push(run_one("quorate", round, conns, &plan, &cpu_pids).await?);
        if a.peer_noop {
            let conns = quorate_conns(&endpoints, a.clients, Conn::Probe).await?;
            noop_runs.push(run_one("noop", round, conns, &plan, &cpu_pids).await?);
        }
        if let Some(e) = &etcd {
            let conns = etcd_conns(e, a.clients).await?;
            etcd_runs.push(run_one("etcd", round, conns, &plan, &etcd_cpu_pids).await?);
        }
    }
    let quorate = median_round(&quorate_runs);
    let noop_median = (!noop_runs.is_empty()).then(|| median_round(&noop_runs));
    let etcd_median = (!etcd_runs.is_empty()).then(|| median_round(&etcd_runs));
    let ratio = etcd_median.as_ref().map(|e| ratios(&quorate, e));
    let noop_ratio = noop_median.as_ref().map(|n| ratios(&quorate, n));
    if a.json {
        let out = serde_json::json!({
            "mode": if a.rate.is_some() { "open" } else { "closed" },
            "rate": a.rate,
            "clients": a.clients,
            "endpoints": endpoints,
            "peer_etcd": etcd,
            "etcd_value_size": a.etcd_value_size,
            "duration_s": a.duration,
            "warmup_s": a.warmup,
            "rounds": a.rounds,
            "quorate": quorate,
            "noop": noop_median,
            "quorate_over_noop": noop_ratio,
            "etcd": etcd_median,
            "quorate_over_etcd": ratio,
            "all_rounds": quorate_runs
                .iter()
                .chain(noop_runs.iter())
                .chain(etcd_runs.iter())
                .collect::<Vec<_>>(),
        });
        crate::client::print_json(&out)?;
    } else {
        let peers: Vec<(&RunResult, serde_json::Value)> = noop_median
            .iter()
            .zip(noop_ratio)
            .chain(etcd_median.iter().zip(ratio))
            .collect();
        print_text(&a, &quorate, &peers);
    }
    Ok(ExitCode::SUCCESS)
}

/// quorate's median round as ratios of a peer's (etcd, or no-op entries).
fn ratios(q: &RunResult, peer: &RunResult) -> serde_json::Value {
    let over = |a: f64, b: f64| round2(a / b.max(f64::MIN_POSITIVE));
    let mut r = serde_json::json!({
        "ops_per_s": over(q.ops_per_s, peer.ops_per_s),
        "p50": over(q.latency_ms.p50, peer.latency_ms.p50),
        "p99": over(q.latency_ms.p99, peer.latency_ms.p99),
    });
    if let (Some(q), Some(p)) = (&q.cpu, &peer.cpu) {
        r["cpu_per_op"] = serde_json::json!(over(q.us_per_op, p.us_per_op));
    }
    r
}

/// The pids of `--cpu-pids`-style lists, each checked to be readable here.
fn pids(list: Option<&str>, flag: &str) -> anyhow::Result<Vec<u32>> {
    let Some(list) = list else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for p in split(list) {
        let pid: u32 = p
            .parse()
            .with_context(|| format!("{flag}: {p:?} is not a process id"))?;
        anyhow::ensure!(
            cpu_seconds(&pid.to_string()).is_some(),
            "{flag}: no process {pid} on this machine (give the local node or etcd processes' ids)"
        );
        out.push(pid);
    }
    Ok(out)
}

/// CPU seconds (user + system, all threads) a local process has used, from
/// `/proc/PID/stat` (fields 14 and 15, in clock ticks).
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(stat_ticks(&stat)? / clock_ticks())
}

/// utime + stime, in clock ticks, from one `/proc/PID/stat` line.
fn stat_ticks(stat: &str) -> Option<f64> {
    // The command name (field 2) is in parentheses and may hold spaces and
    // parentheses itself: the fields resume after the last ')'.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (the state).
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// `sysconf(_SC_CLK_TCK)`, asked of `getconf`; Linux reports 100 on every
/// common architecture.
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|t: &f64| *t > 0.0)
            .unwrap_or(100.0)
    })
}

/// CPU seconds of each of `pids` and of this process, now.
fn cpu_now(pids: &[u32]) -> (Vec<Option<f64>>, Option<f64>) {
    let each = pids.iter().map(|p| cpu_seconds(&p.to_string())).collect();
    (each, cpu_seconds("self"))
}

fn split(s: &str) -> Vec<String> {
    s.split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

async fn quorate_conns(
    endpoints: &[String],
    clients: usize,
    kind: fn(GovernanceClient<Channel>) -> Conn,
) -> anyhow::Result<Vec<Conn>> {
    let mut out = Vec::with_capacity(clients);
    for i in 0..clients {
        out.push(kind(connect(&endpoints[i % endpoints.len()]).await?));
    }
    Ok(out)
}

async fn etcd_conns(endpoints: &[String], clients: usize) -> anyhow::Result<Vec<Conn>> {
    let mut out = Vec::with_capacity(clients);
    for i in 0..clients {
        let ep = &endpoints[i % endpoints.len()];
        let uri = if ep.contains("://") {
            ep.clone()
        } else {
            format!("http://{ep}")
        };
        let ch = tonic::transport::Endpoint::from_shared(uri)
            .with_context(|| format!("{ep:?} is not a valid etcd endpoint (expected host:port)"))?
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(30))
            .connect()
            .await
            .with_context(|| {
                format!("cannot connect to etcd at {ep}; `deploy/bench/etcd3.sh start` starts one")
            })?;
        out.push(Conn::Etcd(KvClient::new(ch)));
    }
    Ok(out)
}

/// Runs one target for warm-up + duration and returns what it measured.
async fn run_one(
    target: &'static str,
    round: u32,
    conns: Vec<Conn>,
    plan: &Plan,
    cpu_pids: &[u32],
) -> anyhow::Result<RunResult> {
    let shared = Arc::new(Mutex::new(Shared {
        latency: Histogram::new_with_bounds(1, 120_000_000, 3).context("histogram")?,
        service: Histogram::new_with_bounds(1, 120_000_000, 3).context("histogram")?,
        tally: Tally::default(),
    }));
    let start = Instant::now();
    let measure_from = start + plan.warmup;
    let end = measure_from + plan.duration;
    let progress = indicatif::ProgressBar::new((plan.warmup + plan.duration).as_secs());
    progress.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {prefix:>8} {elapsed_precise} [{bar:30}] {pos}/{len}s {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    progress.set_prefix(target);
    progress.set_message(format!("round {}", round + 1));
    let mut tasks = Vec::new();
    for (i, mut conn) in conns.into_iter().enumerate() {
        let shared = shared.clone();
        let plan = plan.clone();
        tasks.push(tokio::spawn(async move {
            let mut k = 0u64;
            loop {
                // When this request is due: now (closed loop), or its slot in
                // the shared schedule (open loop: slot k·clients + i).
                let due = match plan.rate {
                    None => Instant::now(),
                    Some(rate) => {
                        let slot = k * plan.clients as u64 + i as u64;
                        start + Duration::from_secs_f64(slot as f64 / rate as f64)
                    }
                };
                if due >= end {
                    break;
                }
                if Instant::now() >= end {
                    // Due before the end but never sent: counted, not hidden.
                    if due >= measure_from {
                        shared.lock().await.tally.missed += 1;
                    }
                    k += 1;
                    continue;
                }
                // Only a request not yet due waits: tokio's timer has
                // millisecond ticks, so even an elapsed deadline would cost
                // up to a tick (closed-loop latencies were about 1 ms high
                // and 1-client rates a third low until this check).
                if due > Instant::now() {
                    tokio::time::sleep_until(due.into()).await;
                }
                let sent = Instant::now();
                let r = conn.op(&plan, i, k).await;
                let done = Instant::now();
                k += 1;
                if due < measure_from {
                    continue;
                }
                let mut s = shared.lock().await;
                match r {
                    Ok(outcome) => {
                        match outcome {
                            Outcome::Allow { receipt } => {
                                s.tally.allow += 1;
                                s.tally.receipts += u64::from(receipt);
                            }
                            Outcome::Deny(reason) => {
                                s.tally.deny += 1;
                                *s.tally.reasons.entry(reason).or_default() += 1;
                            }
                            Outcome::Put => s.tally.puts += 1,
                            Outcome::Probed => s.tally.probes += 1,
                        }
                        let micros = |d: Duration| (d.as_micros() as u64).max(1);
                        let _ = s.latency.record(micros(done - due));
                        let _ = s.service.record(micros(done - sent));
                    }
                    Err(_) => s.tally.errors += 1,
                }
            }
        }));
    }
    // CPU over exactly the measured window.
    let cpu = (!cpu_pids.is_empty()).then(|| {
        let pids = cpu_pids.to_vec();
        tokio::spawn(async move {
            tokio::time::sleep_until(measure_from.into()).await;
            let before = cpu_now(&pids);
            tokio::time::sleep_until(end.into()).await;
            (pids.clone(), before, cpu_now(&pids))
        })
    });
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
    let s = shared.lock().await;
    let t = &s.tally;
    let ops = t.allow + t.deny + t.puts + t.probes;
    let cpu = match cpu {
        None => None,
        Some(task) => {
            let (pids, (b, bs), (a, as_)) = task.await.context("CPU sampler")?;
            let mut seconds_by_pid = std::collections::BTreeMap::new();
            for ((pid, b), a) in pids.iter().zip(b).zip(a) {
                let (Some(b), Some(a)) = (b, a) else {
                    anyhow::bail!("process {pid} ended during the run: its CPU cannot be measured");
                };
                seconds_by_pid.insert(*pid, round2(a - b));
            }
            let total: f64 = seconds_by_pid.values().sum();
            let per_op = |s: f64| round2(s * 1e6 / ops.max(1) as f64);
            Some(CpuUse {
                us_per_op: per_op(total),
                cores: round2(total / plan.duration.as_secs_f64()),
                seconds_by_pid,
                client_us_per_op: per_op(as_.zip(bs).map_or(0.0, |(a, b)| a - b)),
            })
        }
    };
    let quorate = target == "quorate";
    Ok(RunResult {
        target,
        round,
        ops,
        ops_per_s: (ops as f64 / plan.duration.as_secs_f64()).round(),
        allow: quorate.then_some(t.allow),
        receipts: quorate.then_some(t.receipts),
        deny: quorate.then_some(t.deny),
        deny_reasons: t.reasons.clone(),
        errors: t.errors,
        missed: plan.rate.map(|_| t.missed),
        latency_ms: Percentiles::of(&s.latency),
        service_ms: plan.rate.map(|_| Percentiles::of(&s.service)),
        cpu,
    })
}

impl Conn {
    /// Operation `k` of client `i`: a governed decision with a fresh request
    /// id (3 in 4 ALLOW, 1 in 4 DENY under the demo policy), a commit probe,
    /// or a put of a fresh key.
    async fn op(&mut self, plan: &Plan, i: usize, k: u64) -> Result<Outcome, tonic::Status> {
        match self {
            Conn::Quorate(c) => {
                let principal = if k % 4 == 3 { "bob" } else { "alice" };
                let req = v1::AuthorizeRequest {
                    domain: plan.domain.clone(),
                    principal: format!("User::\"{principal}\""),
                    action: "Action::\"read\"".into(),
                    resource: format!("Doc::\"{}\"", k % 1000),
                    context_json: String::new(),
                    entities_json: None,
                    request_id: format!("{}-{i}-{k}", plan.run_id),
                    parent: None,
                    trace_id: None,
                };
                let resp = c.authorize(req).await?.into_inner();
                Ok(if resp.decision == v1::Decision::Allow as i32 {
                    Outcome::Allow {
                        receipt: resp.receipt_json.is_some(),
                    }
                } else {
                    Outcome::Deny(resp.reason)
                })
            }
            Conn::Probe(c) => {
                c.probe(v1::ProbeRequest {}).await?;
                Ok(Outcome::Probed)
            }
            Conn::Etcd(c) => {
                let req = PutRequest {
                    key: format!("{}/{i}/{k}", plan.run_id).into_bytes(),
                    value: plan.value.as_ref().clone(),
                    ..PutRequest::default()
                };
                c.put(req).await?;
                Ok(Outcome::Put)
            }
        }
    }
}

/// The median round, by throughput and then by p99 latency (an open loop
/// holds every round to the same rate, so there the p99 decides). Its
/// latencies come with it: the figures reported belong to one real run.
fn median_round(runs: &[RunResult]) -> RunResult {
    let mut sorted: Vec<&RunResult> = runs.iter().collect();
    sorted.sort_by(|a, b| {
        a.ops_per_s
            .total_cmp(&b.ops_per_s)
            .then(b.latency_ms.p99.total_cmp(&a.latency_ms.p99))
    });
    sorted[sorted.len() / 2].clone()
}

/// The table, then quorate's ratios to each peer run (no-op entries, etcd).
fn print_text(a: &BenchArgs, q: &RunResult, peers: &[(&RunResult, serde_json::Value)]) {
    let mode = match a.rate {
        None => format!("closed loop, {} clients", a.clients),
        Some(r) => format!("open loop at {r}/s, {} clients", a.clients),
    };
    println!(
        "{mode}, {} s measured after {} s warm-up, median of {} round(s)",
        a.duration, a.warmup, a.rounds
    );
    println!(
        "{:<8} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7}",
        "target", "ops/s", "p50 ms", "p90 ms", "p99 ms", "p999 ms", "max ms", "errors"
    );
    let all = || std::iter::once(q).chain(peers.iter().map(|(r, _)| *r));
    for r in all() {
        let l = r.latency_ms;
        println!(
            "{:<8} {:>10} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>7}",
            r.target, r.ops_per_s, l.p50, l.p90, l.p99, l.p999, l.max, r.errors
        );
    }
    if let (Some(allow), Some(receipts), Some(deny)) = (q.allow, q.receipts, q.deny) {
        println!("quorate: {allow} ALLOW ({receipts} with attested receipts), {deny} DENY");
        for (reason, n) in &q.deny_reasons {
            println!("  DENY {reason}: {n}");
        }
    }
    for r in all() {
        if let Some(c) = &r.cpu {
            println!(
                "{}: {} µs of CPU per operation on the measured processes ({} cores busy), {} µs in this client",
                r.target, c.us_per_op, c.cores, c.client_us_per_op
            );
        }
    }
    if let Some(missed) = q.missed.filter(|m| *m > 0) {
        println!("quorate: {missed} requests due but never sent: the rate is above capacity");
    }
    for (peer, r) in peers {
        println!(
            "quorate / {}: throughput x{}, p50 x{}, p99 x{}",
            peer.target, r["ops_per_s"], r["p50"], r["p99"]
        );
        if let Some(c) = r.get("cpu_per_op") {
            println!("quorate / {}: CPU per operation x{c}", peer.target);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_ticks_reads_utime_and_stime_after_any_command_name() {
        // Fields 14 and 15 are 700 and 45; the name holds ") S 1 2".
        let line = "4242 (we) S 1 2 (x) R 1 4242 4242 0 -1 4194560 900 0 0 0 700 45 0 0 20 0 9 0 100 1000 50";
        assert_eq!(stat_ticks(line), Some(745.0));
        assert_eq!(stat_ticks("4242 (short) S 1 2"), None);
        assert_eq!(stat_ticks("no parenthesis at all"), None);
        // This process's own line parses.
        assert!(cpu_seconds("self").is_some_and(|s| s >= 0.0));
    }
}
