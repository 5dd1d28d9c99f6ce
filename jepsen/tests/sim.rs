//! The deterministic simulation, run over many seeds on every test run.

use quorate_jepsen::sim::{SimConfig, run};

/// Even seeds run 3 nodes, odd seeds 5, each for 6 virtual seconds.
fn cfg_for(seed: u64) -> SimConfig {
    SimConfig {
        nodes: if seed % 2 == 0 { 3 } else { 5 },
        seconds: 6,
        lossy_disk: false,
    }
}

#[test]
fn raft_safety_holds_over_many_seeds() {
    let seeds: u64 = std::env::var("QUORATE_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let mut failed = Vec::new();
    let mut faults = 0;
    let mut acknowledged = 0;
    for seed in 0..seeds {
        let r = run(seed, cfg_for(seed));
        faults += r.faults;
        acknowledged += r.acknowledged;
        if !r.violations.is_empty() {
            failed.push(format!(
                "seed {seed}: {:?} (replay: cargo xtask sim --seed {seed} --nodes {} --seconds 6)",
                r.violations,
                cfg_for(seed).nodes
            ));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
    // The runs did something: faults happened and writes were acknowledged.
    assert!(
        faults as u64 > seeds * 3,
        "only {faults} faults over {seeds} seeds"
    );
    assert!(
        acknowledged as u64 > seeds * 20,
        "only {acknowledged} writes acknowledged"
    );
}

#[test]
fn a_seed_replays_exactly() {
    // Built as CI builds it (`--cfg tokio_unstable`, tokio's RNG seeded), a
    // run is a pure function of its seed: the whole report, including a
    // digest of the final log, is equal on every replay. Without that cfg
    // only the fault schedule is (see `sim`'s module docs).
    for seed in [3, 4, 17, 28, 41, 56] {
        let first = run(seed, cfg_for(seed));
        assert!(!first.schedule.is_empty());
        for _ in 0..3 {
            let again = run(seed, cfg_for(seed));
            assert_eq!(
                first.schedule, again.schedule,
                "seed {seed} did not replay its schedule"
            );
            #[cfg(tokio_unstable)]
            assert_eq!(first, again, "seed {seed} did not replay exactly");
        }
    }
}

#[test]
fn a_disk_that_loses_acknowledged_appends_is_caught() {
    let caught = (0..30).any(|seed| {
        let lossy = SimConfig {
            lossy_disk: true,
            ..cfg_for(seed)
        };
        !run(seed, lossy).violations.is_empty()
    });
    assert!(
        caught,
        "30 seeds with a lossy disk and no violation found: the checks cannot fail"
    );
}
