//! Many seeds: run them on a few threads (each seed is its own
//! single-threaded runtime, so the result of a seed does not depend on how
//! many run at once), with a progress bar, and sum up what was injected
//! and checked.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde::Serialize;

use super::{SimConfig, SimReport, run};

/// What many seeds found, together.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub seeds: u64,
    pub failed: Vec<Failure>,
    pub wall_seconds: f64,
    pub seeds_per_second: f64,
    pub virtual_seconds: u64,
    pub requests: u64,
    pub allowed: u64,
    pub denied: BTreeMap<String, u64>,
    pub policy_ops: u64,
    pub faults: BTreeMap<String, u64>,
    pub faults_per_seed: f64,
    pub checks: BTreeMap<String, u64>,
    pub messages_delivered: u64,
    pub messages_dropped: u64,
    pub messages_duplicated: u64,
}

/// A seed that broke an invariant, and how to replay it.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub seed: u64,
    pub violations: Vec<String>,
    pub replay: String,
    pub digest: u64,
}

impl Summary {
    fn add(&mut self, r: &SimReport) {
        self.seeds += 1;
        self.virtual_seconds += r.config.seconds;
        self.requests += r.requests as u64;
        self.allowed += r.allowed as u64;
        self.policy_ops += r.policy_ops as u64;
        for (k, n) in &r.denied {
            *self.denied.entry(k.clone()).or_default() += *n as u64;
        }
        for (k, n) in &r.faults {
            *self.faults.entry(k.clone()).or_default() += *n as u64;
        }
        for (k, n) in &r.checks {
            *self.checks.entry(k.clone()).or_default() += n;
        }
        self.messages_delivered += r.messages_delivered;
        self.messages_dropped += r.messages_dropped;
        self.messages_duplicated += r.messages_duplicated;
        if !r.violations.is_empty() {
            self.failed.push(Failure {
                seed: r.seed,
                violations: r.violations.clone(),
                replay: r.config.replay_command(r.seed),
                digest: r.digest,
            });
        }
    }

    /// The summary as an operator reads it.
    pub fn text(&self) -> String {
        let mut s = format!(
            "{} seeds ({} virtual seconds) in {:.1} s: {:.1} seeds/s; {} failed\n",
            self.seeds,
            self.virtual_seconds,
            self.wall_seconds,
            self.seeds_per_second,
            self.failed.len()
        );
        s.push_str(&format!(
            "requests {} (ALLOW {}), policy operations {}\n",
            self.requests, self.allowed, self.policy_ops
        ));
        let denied: Vec<String> = self
            .denied
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        s.push_str(&format!("DENY by reason: {}\n", denied.join(", ")));
        s.push_str(&format!(
            "messages delivered {}, dropped {}, duplicated {}\n",
            self.messages_delivered, self.messages_dropped, self.messages_duplicated
        ));
        s.push_str(&format!(
            "faults injected ({:.1} per seed):\n",
            self.faults_per_seed
        ));
        for (k, n) in &self.faults {
            s.push_str(&format!("  {k:<32} {n}\n"));
        }
        s.push_str("invariants checked:\n");
        for (k, n) in &self.checks {
            s.push_str(&format!("  {k:<66} {n}\n"));
        }
        for f in &self.failed {
            s.push_str(&format!(
                "seed {} FAILED: {:?}\n  replay: {}\n",
                f.seed, f.violations, f.replay
            ));
        }
        s
    }
}

/// Runs `seeds` on `jobs` threads, `config(seed)` each; `progress` is told
/// after every seed.
pub fn soak(
    seeds: impl Iterator<Item = u64> + Send,
    jobs: usize,
    config: impl Fn(u64) -> SimConfig + Sync,
    progress: impl Fn(&SimReport) + Sync,
) -> Summary {
    let started = Instant::now();
    let queue = Mutex::new(seeds);
    let summary = Mutex::new(Summary::default());
    let done = AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1) {
            s.spawn(|| {
                loop {
                    let next = queue.lock().unwrap_or_else(|p| p.into_inner()).next();
                    let Some(seed) = next else { break };
                    let r = run(seed, config(seed));
                    summary.lock().unwrap_or_else(|p| p.into_inner()).add(&r);
                    done.fetch_add(1, Ordering::Relaxed);
                    progress(&r);
                }
            });
        }
    });
    let mut out = summary.into_inner().unwrap_or_else(|p| p.into_inner());
    out.failed.sort_by_key(|f| f.seed);
    out.wall_seconds = started.elapsed().as_secs_f64();
    out.seeds_per_second = out.seeds as f64 / out.wall_seconds.max(1e-9);
    let total: u64 = out.faults.values().sum();
    out.faults_per_seed = total as f64 / out.seeds.max(1) as f64;
    out
}
