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
                "seed {seed}: {:?} (replay: quorate-jepsen sim --seed {seed} --nodes {} --seconds 6)",
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
fn a_seed_replays_its_schedule() {
    // The client and fault schedules are functions of the seed and virtual
    // time only; openraft's internal message order is not, so only the
    // schedule is compared.
    for seed in [3, 17] {
        let (a, b) = (run(seed, cfg_for(seed)), run(seed, cfg_for(seed)));
        assert!(!a.schedule.is_empty());
        assert_eq!(
            a.schedule, b.schedule,
            "seed {seed} did not replay its schedule"
        );
        assert_eq!(a.trace, b.trace);
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
