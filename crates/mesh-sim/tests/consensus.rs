//! Simulation checks of the consensus core over many seeds.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::print_stderr,
    missing_docs
)]

use mesh_sim::{Behaviour, Sim, SimConfig, check, sweep_config};

#[test]
fn a_clean_run_commits_every_request() {
    let r = check(SimConfig::new(1, 4));
    assert_eq!(r.committed_everywhere, 40);
    assert_eq!(r.max_view, 0);
    println!("{r:?}");
}

#[test]
fn one_seed_one_trace() {
    let a = Sim::new(sweep_config(7)).run();
    let b = Sim::new(sweep_config(7)).run();
    assert_eq!(a.trace, b.trace);
    let c = Sim::new(sweep_config(17)).run();
    assert_ne!(a.trace, c.trace);
}

#[test]
fn every_byzantine_behaviour_is_survived() {
    for b in Behaviour::ALL {
        for seed in 0..3 {
            let mut cfg = SimConfig::new(100 + seed, 4);
            cfg.byzantine = vec![(
                if b == Behaviour::EquivocatingPrimary {
                    0
                } else {
                    2
                },
                b,
            )];
            cfg.net.loss_per_mille = 10;
            check(cfg);
        }
    }
}

/// Runs one quarter of the sweep (`MESH_SIM_SEEDS`, default 1,000 seeds in all); the four
/// quarters run in parallel. Also checks that the faults really happened: some runs changed
/// views, refused bad messages and lost their primary.
fn sweep_part(part: u64) {
    let seeds: u64 = std::env::var("MESH_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let (mut view_changes, mut refused, mut runs) = (0, 0, 0);
    for seed in (0..seeds).filter(|s| s % 4 == part) {
        let r = check(sweep_config(seed));
        runs += 1;
        view_changes += u64::from(r.max_view > 0);
        refused += u64::from(r.refused > 0);
    }
    println!(
        "part {part}: {runs} runs, {view_changes} with view changes, {refused} refusing messages"
    );
    if runs >= 40 {
        assert!(
            view_changes * 20 >= runs,
            "too few runs changed views: {view_changes}/{runs}"
        );
        assert!(
            refused * 6 >= runs,
            "too few runs saw bad messages: {refused}/{runs}"
        );
    }
}

#[test]
fn sweep_part_0() {
    sweep_part(0);
}

#[test]
fn sweep_part_1() {
    sweep_part(1);
}

#[test]
fn sweep_part_2() {
    sweep_part(2);
}

#[test]
fn sweep_part_3() {
    sweep_part(3);
}

#[test]
fn real_bls_signatures_in_a_faulty_run() {
    for seed in [4, 5, 6] {
        let mut cfg = sweep_config(seed);
        cfg.real_crypto = true;
        cfg.requests = 12;
        check(cfg);
    }
}

/// The shipped scheme (BLS commit votes, Ed25519 prepare votes) against every Byzantine
/// behaviour: forged votes of both phases reach quorums, so the optimistic checks fail and
/// the one-by-one fallback must find the bad signer and count it, without stalling.
#[test]
fn real_signatures_survive_every_byzantine_behaviour() {
    for b in Behaviour::ALL {
        let mut cfg = SimConfig::new(300, 4);
        cfg.real_crypto = true;
        cfg.requests = 12;
        cfg.byzantine = vec![(
            if b == Behaviour::EquivocatingPrimary {
                0
            } else {
                2
            },
            b,
        )];
        let r = check(cfg);
        if b == Behaviour::ForgedVotes {
            assert!(r.refused > 0, "forged votes went unnoticed: {r:?}");
        }
    }
}

/// A view change completes within twice its timeout: from the moment a quorum asked for the
/// new view until the last honest replica entered it, with a silent primary (and, every
/// other seed, a silent next primary too, so two view changes run back to back).
#[test]
fn view_changes_complete_within_twice_their_timeout() {
    let mut longest = std::time::Duration::ZERO;
    for seed in 0..60u64 {
        let mut cfg = SimConfig::new(5_000 + seed, 7);
        cfg.byzantine = vec![(0, Behaviour::Silent)];
        if seed % 2 == 1 {
            cfg.byzantine.push((1, Behaviour::Silent));
        }
        let bound = cfg.consensus.view_change_timeout * 2;
        let r = check(cfg);
        assert!(!r.view_changes.is_empty(), "seed {seed}: no view change");
        for (view, took) in &r.view_changes {
            longest = longest.max(*took);
            assert!(
                *took <= bound,
                "seed {seed}: view {view} took {took:?}, more than {bound:?}"
            );
        }
    }
    println!("longest view change: {longest:?}");
}

/// An outside failure detector's hints (`Replica::handle_suspicion`), true and false,
/// during a faulty period: safety, validity, liveness and the ledgers hold; some hints do
/// start view changes; and a silent primary suspected early is replaced sooner than by the
/// timers alone.
#[test]
fn failure_detector_hints_never_break_safety_and_speed_up_replacing_a_silent_primary() {
    let mut with_changes = 0;
    for seed in 0..120u64 {
        let mut cfg = SimConfig::new(12_000 + seed, if seed % 3 == 0 { 7 } else { 4 });
        cfg.suspicions = 30;
        cfg.net.loss_per_mille = 20;
        cfg.crashes = usize::from(seed % 2 == 0);
        if seed % 4 == 1 {
            cfg.byzantine = vec![(
                cfg.replicas - 1,
                Behaviour::ALL[(seed / 4) as usize % Behaviour::ALL.len()],
            )];
        }
        let r = check(cfg);
        with_changes += u64::from(r.max_view > 0);
    }
    assert!(
        with_changes >= 40,
        "only {with_changes} of 120 runs changed views"
    );

    // A silent primary: timers alone, then with every honest replica hinted early.
    let first_change = |suspicions: usize, seed: u64| {
        let mut cfg = SimConfig::new(13_000 + seed, 4);
        cfg.byzantine = vec![(0, Behaviour::Silent)];
        cfg.suspicions = suspicions;
        let r = check(cfg);
        r.view_changes.first().map(|(_, took)| *took)
    };
    let (mut slower, mut faster) = (0, 0);
    for seed in 0..20 {
        match (first_change(0, seed), first_change(60, seed)) {
            (Some(a), Some(b)) if b < a => faster += 1,
            _ => slower += 1,
        }
    }
    println!("hinted view changes: {faster} faster, {slower} not");
    assert!(faster >= 1, "hints never sped up a view change");
}

/// Storage writes fail at random (lost, or written but reported failed); each failing
/// replica stops without sending that step's outputs and restarts from its storage. Safety,
/// validity, liveness and the ledgers hold over many seeds, with network faults and a
/// Byzantine replica besides.
#[test]
fn replicas_fail_stop_on_storage_errors_and_recover() {
    let mut failures = 0;
    for seed in 0..80u64 {
        let mut cfg = SimConfig::new(9_000 + seed, 4);
        cfg.storage_faults = 30;
        cfg.net.loss_per_mille = 20;
        cfg.net.duplicate_per_mille = 20;
        if seed % 2 == 0 {
            cfg.byzantine = vec![(
                3,
                Behaviour::ALL[(seed / 2) as usize % Behaviour::ALL.len()],
            )];
        }
        let r = check(cfg);
        failures += r.storage_failures;
    }
    assert!(
        failures > 100,
        "only {failures} storage failures were injected"
    );
    println!("{failures} injected storage failures survived");
}

#[test]
fn a_broken_quorum_rule_is_caught() {
    // With "2f" votes as a quorum, an equivocating primary splits the honest replicas.
    let mut caught = 0;
    for seed in 0..20 {
        let mut cfg = SimConfig::new(seed, 4);
        cfg.byzantine = vec![(0, Behaviour::EquivocatingPrimary)];
        cfg.broken_quorum = true;
        let r = Sim::new(cfg).run();
        if r.violations
            .iter()
            .any(|v| v.starts_with("SAFETY") || v.starts_with("LEDGER"))
        {
            caught += 1;
        }
    }
    assert!(caught > 0, "the checks never noticed a broken quorum rule");
}
