//! `quorate-jepsen run`: start a real cluster in network namespaces, run the
//! workload under the chosen nemeses, heal, read every node's final state,
//! check every invariant, and write the report. Exit 0 when every checker
//! is valid, 1 when any is invalid, 2 when the result is unknown (a fault
//! never took effect, or the harness itself failed).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use quorate_core::TrustFile;
use quorate_core::export::ExportLine;
use quorate_jepsen::checkers::{self, RunData, Validity};
use quorate_jepsen::cluster::{Cluster, connect, find_leader};
use quorate_jepsen::history::{self, Recorder};
use quorate_jepsen::{nemesis, net, report, workload};
use quorate_proto::v1;
use tokio::sync::{Mutex, watch};
use tokio_stream::StreamExt;

#[derive(Parser, Debug)]
#[command(
    name = "quorate-jepsen",
    about = "Fault-injection tests of a real quorate cluster: nemeses, recorded histories, checkers.",
    long_about = "Starts real `quorate node` processes, each in its own network namespace on a \
bridge (needs root, iproute2 and iptables; missing packages are installed), runs concurrent \
clients while nemeses partition, kill, pause and drop packets, heals, reads every node's final \
state and checks the invariants of the product brief. Writes history.jsonl, results.json and SVG \
plots to --out.\n\nExample: quorate-jepsen run --nodes 3 --time 60 --nemesis partition,kill --seed 1 --out target/jepsen/run1",
    after_help = "Exit codes: 0 every checker valid, 1 any invalid, 2 unknown (a fault never took effect, or the harness failed)."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run one test.
    Run(RunArgs),
    /// List the nemeses.
    Nemeses,
    /// (Internal) the message shim `run` starts inside each node's
    /// namespace for the delay and duplicate nemeses.
    #[command(hide = true)]
    Shim {
        #[arg(long)]
        listen: std::net::SocketAddr,
        #[arg(long)]
        upstream: std::net::SocketAddr,
        /// Directory of the rules and stats files.
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Deterministic simulation of the whole product: quorate replicas
    /// (openraft, the governance machine, attestation, checkpoints,
    /// containment) on virtual time under seeded network, crash, power-loss,
    /// disk and evaluation faults, every invariant checked per seed. Many
    /// seeds with a progress bar and a summary, or one exactly with --seed.
    /// (Built with `--features sim`; `cargo xtask sim ARGS` builds and runs
    /// it.)
    #[cfg(feature = "sim")]
    #[command(after_help = "Examples:\n  \
cargo xtask sim --seeds 1000              the CI search\n  \
cargo xtask sim --seeds 20000 --time 30   a long soak\n  \
cargo xtask sim --seed 17 --time 6        replay seed 17 exactly and print its report")]
    Sim {
        /// How many seeds, starting at --first.
        #[arg(long, default_value_t = 200)]
        seeds: u64,
        #[arg(long, default_value_t = 0)]
        first: u64,
        /// Replay exactly this seed and print its whole report (JSON).
        #[arg(long)]
        seed: Option<u64>,
        /// Virtual seconds of faults and traffic per seed.
        #[arg(long, alias = "seconds", default_value_t = 6)]
        time: u64,
        /// Replicas per seed (default: 3 on even seeds, 5 on odd ones).
        #[arg(long)]
        nodes: Option<u64>,
        /// Give this replica a wrong evaluation (default: one replica on
        /// every fourth seed).
        #[arg(long)]
        wrong_evaluator: Option<u64>,
        /// Run with openraft's `enable_leader_restore` on (quorate turns
        /// it off; see ARCHITECTURE.md).
        #[arg(long)]
        leader_restore: bool,
        /// Run with openraft's `allow_log_reversion` off (quorate turns it
        /// on, so a leader re-sends what a wiped follower lost).
        #[arg(long)]
        no_log_reversion: bool,
        /// No torn writes or flipped bits.
        #[arg(long)]
        no_storage_faults: bool,
        /// A disk that acknowledges appends before they are durable (the
        /// checkers' own test: violations expected).
        #[arg(long)]
        lossy_disk: bool,
        /// Answer ALLOW at commit, before attestation (the node config's
        /// `answer = "committed"`; violations expected with a wrong
        /// evaluator).
        #[arg(long)]
        answer_committed: bool,
        /// Seeds run at once (each on its own thread).
        #[arg(long, default_value_t = 2)]
        jobs: usize,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Cluster size.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(3..=5))]
    nodes: u8,
    /// Seconds of workload under faults.
    #[arg(long, default_value_t = 60)]
    time: u64,
    /// Comma-separated nemeses or groups: partition, kill, pause, loss,
    /// delay, duplicate, all, none (see `quorate-jepsen nemeses`).
    #[arg(long, default_value = "partition,kill")]
    nemesis: String,
    /// Seconds each fault is on (and off), jittered ±30%.
    #[arg(long, default_value_t = 10)]
    interval: u64,
    /// Seed for the workload's and nemeses' choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Operations per second over all clients.
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 10)]
    clients: u64,
    /// Directory for history.jsonl, results.json, plots and node logs.
    #[arg(long)]
    out: PathBuf,
    /// Run the nodes in plaintext. By default they serve mutual TLS, as
    /// users deploy them; runs with the delay or duplicate nemeses are
    /// always plaintext (the message shim speaks plaintext HTTP/2).
    #[arg(long)]
    insecure: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Nemeses => {
            for n in nemesis::ALL {
                println!("{n}");
            }
            ExitCode::SUCCESS
        }
        Cmd::Shim {
            listen,
            upstream,
            dir,
            seed,
        } => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            let result = rt.and_then(|rt| {
                rt.block_on(quorate_jepsen::shim::serve(listen, upstream, dir, seed))
            });
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("shim on {listen}: {e}");
                    ExitCode::from(2)
                }
            }
        }
        #[cfg(feature = "sim")]
        Cmd::Sim {
            seeds,
            first,
            seed,
            time,
            nodes,
            wrong_evaluator,
            leader_restore,
            no_log_reversion,
            no_storage_faults,
            lossy_disk,
            answer_committed,
            jobs,
            json,
        } => {
            use quorate_jepsen::sim::{SimConfig, soak};
            let config = |s: u64| {
                let mut c = SimConfig::for_seed(s, time);
                if let Some(n) = nodes {
                    c.nodes = n;
                    c.wrong_evaluator = c.wrong_evaluator.filter(|w| *w <= n);
                }
                if wrong_evaluator.is_some() {
                    c.wrong_evaluator = wrong_evaluator;
                }
                c.leader_restore = leader_restore;
                c.log_reversion = !no_log_reversion;
                c.storage_faults = !no_storage_faults;
                c.lossy_disk = lossy_disk;
                c.answer_committed = answer_committed;
                c
            };
            if let Some(s) = seed {
                let r = quorate_jepsen::sim::run(s, config(s));
                println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
                return if r.violations.is_empty() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                };
            }
            let bar = indicatif::ProgressBar::new(seeds);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{elapsed_precise} [{bar:40}] {pos}/{len} seeds, {per_sec}, eta {eta} {msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            let failures = std::sync::atomic::AtomicU64::new(0);
            let summary = soak::soak(first..first + seeds, jobs, config, |r| {
                if !r.violations.is_empty() {
                    let n = failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                    bar.println(format!(
                        "seed {} FAILED: {:?}\n  replay: {}",
                        r.seed,
                        r.violations,
                        r.config.replay_command(r.seed)
                    ));
                    bar.set_message(format!("{n} failed"));
                }
                bar.inc(1);
            });
            bar.finish_and_clear();
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&summary).unwrap_or_default()
                );
            } else {
                print!("{}", summary.text());
            }
            if summary.failed.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Cmd::Run(args) => {
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            match rt.block_on(run(args)) {
                Ok(Validity::Valid) => ExitCode::SUCCESS,
                Ok(Validity::Invalid) => ExitCode::from(1),
                Ok(Validity::Unknown) => ExitCode::from(2),
                Err(e) => {
                    eprintln!("harness failure (result unknown): {e:#}");
                    ExitCode::from(2)
                }
            }
        }
    }
}

async fn run(a: RunArgs) -> anyhow::Result<Validity> {
    let mut names = nemesis::expand(&a.nemesis);
    if a.nodes < 5 {
        // Rings and bridges need five nodes; a group like `partition` then
        // means the kinds that apply (asking for one by name still records
        // it as skipped).
        let explicit: Vec<&str> = a.nemesis.split(',').map(str::trim).collect();
        names.retain(|n| {
            !(n == "partition-ring" || n == "partition-bridge") || explicit.contains(&n.as_str())
        });
    }
    if let Some(bad) = names.iter().find(|n| !nemesis::ALL.contains(&n.as_str())) {
        bail!("unknown nemesis {bad:?}; `quorate-jepsen nemeses` lists them");
    }
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("cannot create {}", a.out.display()))?;
    let rec = Recorder::new(Some(std::fs::File::create(a.out.join("history.jsonl"))?));
    let nodes = usize::from(a.nodes);
    if nodes != 3 && nodes != 5 {
        bail!("--nodes must be 3 or 5");
    }
    let net = net::Net::create(nodes)?;
    let nodes_dir = a.out.join("nodes");
    let _ = std::fs::remove_dir_all(&nodes_dir);
    // Delay and duplication need the message shim in front of every node.
    let shim = names.iter().any(|n| n == "delay" || n == "duplicate");
    let tls = !shim && !a.insecure;
    let network = match (shim, tls) {
        (true, _) => "netns+iptables+h2-shim",
        (false, true) => "netns+iptables+mtls",
        (false, false) => "netns+iptables",
    };
    let cluster = Arc::new(Mutex::new(Cluster::start(
        net, &nodes_dir, shim, a.seed, tls,
    )?));
    let addrs: Vec<String> = cluster
        .lock()
        .await
        .nodes
        .iter()
        .map(|n| n.addr.clone())
        .collect();
    eprintln!(
        "quorate-jepsen: {} nodes in namespaces (network: {network}), {} s, nemeses {:?}",
        a.nodes, a.time, names
    );

    // Ready: a leader, and the first policy active.
    let deadline = Instant::now() + Duration::from_secs(30);
    while find_leader(&addrs).await.is_none() {
        if Instant::now() > deadline {
            bail!(
                "no leader within 30 s; see {}/n*/node.log",
                nodes_dir.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    loop {
        if let Some(l) = find_leader(&addrs).await {
            workload::publish(&rec, 0, l as u64, &addrs[l - 1], workload::POLICIES[0]).await;
            let published = rec
                .events()
                .iter()
                .any(|e| e.f == history::F::Publish && e.kind == history::Kind::Ok);
            if published {
                break;
            }
        }
        if Instant::now() > deadline {
            bail!("could not publish the first policy within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The workload under faults.
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    for p in 1..=a.clients {
        tasks.push(tokio::spawn(workload::client(
            p,
            addrs.clone(),
            rec.clone(),
            a.seed,
            a.rate / a.clients as f64,
            stop_rx.clone(),
        )));
    }
    let nem = {
        let (c, r, names, rx) = (cluster.clone(), rec.clone(), names.clone(), stop_rx.clone());
        let interval = Duration::from_secs(a.interval);
        tokio::spawn(async move { nemesis::run(&c, &names, interval, a.seed, &r, rx).await })
    };
    tokio::time::sleep(Duration::from_secs(a.time)).await;
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    let _ = nem.await;

    // Heal everything; every node must serve again within the bound.
    nemesis::heal_all(&cluster).await?;
    let healed = Instant::now();
    let mut recovery = Vec::new();
    for (k, addr) in addrs.iter().enumerate() {
        let node = k as u64 + 1;
        let mut served = None;
        let mut n = 0;
        while healed.elapsed() < Duration::from_millis(checkers::recovery::BOUND_MS + 5_000) {
            n += 1;
            let req = v1::AuthorizeRequest {
                domain: workload::DOMAIN.into(),
                principal: "User::\"alice\"".into(),
                action: "Action::\"read\"".into(),
                resource: "Doc::\"0\"".into(),
                context_json: "{}".into(),
                request_id: format!("final-{node}-{n}"),
                ..Default::default()
            };
            workload::authorize(&rec, 1000 + node, node, addr, req).await;
            let last = rec.events().last().cloned();
            if last.is_some_and(|e| e.kind == history::Kind::Ok) {
                served = Some(healed.elapsed().as_millis() as u64);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        recovery.push((node, served));
    }

    // Final reads, once every node has applied the same log.
    converge(&addrs, Duration::from_secs(30)).await;
    let trust = fetch_trust(&addrs).await;
    let mut exports = Vec::new();
    for (k, addr) in addrs.iter().enumerate() {
        exports.push((k as u64 + 1, export(addr).await));
    }
    drop(cluster);

    let events = rec.events();
    let data = RunData {
        nodes,
        ops: history::pair(&events),
        events,
        exports,
        trust,
        recovery_ms: recovery,
    };
    let results = checkers::check_all(&data);
    let installed = data
        .events
        .iter()
        .filter(|e| e.process == history::NEMESIS_PROCESS && e.value["action"] == "installed")
        .count();
    let verdict = report::verdict(&results, installed, !names.is_empty());
    let run = serde_json::json!({"nodes": a.nodes, "time_s": a.time, "nemeses": names,
        "interval_s": a.interval, "seed": a.seed, "rate": a.rate, "clients": a.clients,
        "network": network, "faults_installed": installed});
    report::write_results(&a.out, run, &data, &results, verdict)?;
    report::write_plots(&a.out, &data)?;
    report::print_summary(&results, verdict, &data, &a.out);
    Ok(verdict)
}

/// Waits until every node reports the same applied index and final
/// checkpoint for a second, or the timeout passes.
async fn converge(addrs: &[String], timeout: Duration) {
    let start = Instant::now();
    let mut stable_since: Option<Instant> = None;
    let mut last: Vec<(u64, u64)> = Vec::new();
    while start.elapsed() < timeout {
        let mut now = Vec::new();
        for a in addrs {
            let s = match connect(a).await {
                Ok(mut c) => c
                    .status(v1::StatusRequest {})
                    .await
                    .ok()
                    .map(|r| r.into_inner()),
                Err(_) => None,
            };
            now.push(
                s.map(|s| (s.last_applied_index, s.last_final_checkpoint))
                    .unwrap_or((0, 0)),
            );
        }
        let same = now.windows(2).all(|w| w[0] == w[1]) && now.first().is_some_and(|x| x.0 > 0);
        if same && now == last {
            if stable_since.is_some_and(|t| t.elapsed() > Duration::from_secs(1)) {
                return;
            }
            stable_since.get_or_insert_with(Instant::now);
        } else {
            stable_since = None;
        }
        last = now;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn fetch_trust(addrs: &[String]) -> Option<TrustFile> {
    for a in addrs {
        if let Ok(mut c) = connect(a).await
            && let Ok(doc) = c.get_trust(v1::GetTrustRequest {}).await
        {
            return serde_json::from_str(&doc.into_inner().json).ok();
        }
    }
    None
}

async fn export(addr: &str) -> Result<Vec<ExportLine>, String> {
    let mut c = connect(addr).await.map_err(|e| e.to_string())?;
    let mut s = c
        .export_log(v1::ExportLogRequest {})
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    let mut out = Vec::new();
    while let Some(line) = s.next().await {
        let line = line.map_err(|e| e.to_string())?;
        out.push(serde_json::from_str(&line.json).map_err(|e| e.to_string())?);
    }
    Ok(out)
}
