//! The whole-product simulation, over many seeds on every test run, and
//! the checkers' own tests: each fault the checks exist for, switched on
//! deliberately, must be caught.

use quorate_jepsen::sim::{SimConfig, run, soak};

/// Virtual seconds of faults per seed in CI.
const SECONDS: u64 = 6;

fn jobs() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

#[test]
fn quorate_holds_over_many_seeds() {
    let seeds: u64 = std::env::var("QUORATE_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let s = soak::soak(
        0..seeds,
        jobs(),
        |seed| SimConfig::for_seed(seed, SECONDS),
        |_| {},
    );
    eprintln!("{}", s.text());
    let failed: Vec<String> = s
        .failed
        .iter()
        .map(|f| {
            format!(
                "seed {}: {:?}\n  replay: {}",
                f.seed, f.violations, f.replay
            )
        })
        .collect();
    assert!(failed.is_empty(), "{}", failed.join("\n"));
    // The runs did something: every kind of fault happened, answers of
    // both kinds were given, and every invariant was actually examined.
    for kind in [
        "partition",
        "isolate",
        "crash",
        "power loss",
        "message loss",
        "delay, reorder and duplicate",
        "leader power blip",
        "membership change",
        "bit flip",
    ] {
        assert!(
            s.faults.get(kind).copied().unwrap_or(0) > 0,
            "no {kind} in {seeds} seeds: {:?}",
            s.faults
        );
    }
    assert!(s.allowed > seeds * 5, "only {} ALLOWs", s.allowed);
    assert!(s.requests > s.allowed * 2, "DENY is rare: {s:?}");
    for (name, n) in &s.checks {
        assert!(*n > 0, "the check {name:?} examined nothing");
    }
    assert!(s.checks.len() >= 11, "checks missing: {:?}", s.checks);
}

#[test]
fn a_seed_replays_exactly() {
    // Built as CI builds it (`--cfg tokio_unstable`, tokio's RNG seeded), a
    // run is a pure function of its seed: the whole report, its digest
    // included, is equal on every replay. Without that cfg only the fault
    // schedule is (see `sim`'s module docs).
    for seed in [3, 4, 17, 28] {
        let cfg = SimConfig::for_seed(seed, SECONDS);
        let first = run(seed, cfg);
        assert!(!first.schedule.is_empty());
        for _ in 0..2 {
            let again = run(seed, cfg);
            assert_eq!(
                first.schedule, again.schedule,
                "seed {seed}: schedule differs"
            );
            #[cfg(tokio_unstable)]
            assert_eq!(first, again, "seed {seed} did not replay exactly");
        }
    }
}

/// The first seeds whose run breaks an invariant under `cfg`.
fn caught(cfg: impl Fn(u64) -> SimConfig, seeds: u64) -> Vec<(u64, Vec<String>)> {
    (0..seeds)
        .map(|seed| (seed, run(seed, cfg(seed)).violations))
        .filter(|(_, v)| !v.is_empty())
        .collect()
}

#[test]
fn a_disk_that_acknowledges_unsynced_appends_is_caught() {
    let found = caught(
        |seed| SimConfig {
            lossy_disk: true,
            ..SimConfig::for_seed(seed, SECONDS)
        },
        40,
    );
    assert!(
        !found.is_empty(),
        "40 seeds with a disk that lies about fsync, and no violation: the checks cannot fail"
    );
}

#[test]
fn answering_before_attestation_lets_a_wrong_evaluation_through_and_is_caught() {
    // `answer = "committed"` gives up invariant 1: with one replica
    // evaluating wrongly, its ALLOWs go out whenever it leads.
    let found = caught(
        |seed| SimConfig {
            answer_committed: true,
            wrong_evaluator: Some(1),
            ..SimConfig::for_seed(seed, SECONDS)
        },
        20,
    );
    assert!(
        found
            .iter()
            .any(|(_, v)| v.iter().any(|m| m.contains("the history decided DENY"))),
        "committed answers with a wrong evaluator and no bad ALLOW caught: {found:?}"
    );
}
