//! Reconfiguration in simulation: validators admit a candidate (which catches up and whose
//! vote the mesh then needs), remove members and change weights, through committed blocks,
//! under network faults and a Byzantine replica, over many seeds.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    missing_docs
)]

use std::time::Duration;

use mesh_consensus::admission::{MIN_MEMORY_KIB, Puzzle};
use mesh_sim::{Behaviour, Report, Sim, SimChange, SimConfig, check};

/// A run with a cheap admission puzzle (one 8 MiB Argon2id evaluation).
fn base(seed: u64, replicas: usize) -> SimConfig {
    let mut cfg = SimConfig::new(seed, replicas);
    cfg.consensus.admission = Puzzle {
        epoch: 0,
        difficulty: 0,
        memory_kib: MIN_MEMORY_KIB,
        passes: 1,
    };
    cfg.submit_over = Duration::from_secs(4);
    cfg
}

fn weights(r: &Report) -> (u64, Vec<u32>) {
    let set = r.validators.as_ref().expect("a live replica");
    (
        set.epoch(),
        set.members().iter().map(|v| v.weight).collect(),
    )
}

#[test]
fn an_admitted_candidate_catches_up_and_its_vote_is_then_needed() {
    let mut cfg = base(1, 4);
    cfg.candidates = 1;
    cfg.changes = vec![(
        Duration::from_millis(500),
        SimChange::Admit { node: 4, weight: 1 },
    )];
    // Once node 4 is in, five members make a quorum of four: with node 0 stopped for good,
    // every block after the stop (requests keep coming until 4 s) carries the newcomer's vote.
    cfg.stops = vec![(Duration::from_secs(3), 0)];
    let r = check(cfg);
    assert_eq!(weights(&r), (1, vec![1, 1, 1, 1, 1]));
    assert_eq!(r.committed_everywhere, 40);
}

#[test]
fn weights_change_only_by_quorum_and_then_decide_quorums() {
    // Node 0 gets weight 4 (total 7, a quorum is 5): then nodes 1 and 2 stop for good, and
    // node 0 with node 3 (4 + 1) still commits every request.
    let mut cfg = base(2, 4);
    cfg.changes = vec![(Duration::from_millis(300), SimChange::SetWeight(0, 4))];
    cfg.stops = vec![(Duration::from_secs(3), 1), (Duration::from_secs(3), 2)];
    let r = check(cfg);
    assert_eq!(weights(&r), (1, vec![4, 1, 1, 1]));
    assert_eq!(r.committed_everywhere, 40);
}

#[test]
fn the_same_stops_without_the_weight_change_stall_the_mesh() {
    // The control: equal weights, two of four stopped, no quorum: requests stay open.
    let mut cfg = base(2, 4);
    cfg.stops = vec![(Duration::from_secs(3), 1), (Duration::from_secs(3), 2)];
    cfg.time_limit = Duration::from_secs(20);
    let r = Sim::new(cfg).run();
    assert!(
        r.violations.iter().any(|v| v.starts_with("LIVENESS")),
        "two of four stopped must stall the mesh: {:?}",
        r.violations
    );
}

#[test]
fn a_removed_validator_stops_voting_and_an_admitted_one_replaces_it() {
    let mut cfg = base(3, 4);
    cfg.candidates = 1;
    cfg.changes = vec![
        (Duration::from_millis(400), SimChange::Remove(3)),
        (
            Duration::from_millis(400),
            SimChange::Admit { node: 4, weight: 1 },
        ),
    ];
    // After the switch 3 no longer counts; stopping it and 0 leaves 1, 2 and 4: 3 of 4.
    cfg.stops = vec![(Duration::from_secs(3), 3), (Duration::from_secs(3), 0)];
    let r = check(cfg);
    assert_eq!(weights(&r), (1, vec![1, 1, 1, 0, 1]));
}

#[test]
fn reconfigurations_under_faults_and_a_byzantine_replica_over_many_seeds() {
    for seed in 0..40u64 {
        let mut cfg = base(1_000 + seed, 4);
        cfg.candidates = 1;
        cfg.net.loss_per_mille = 20;
        cfg.net.duplicate_per_mille = 20;
        cfg.net.max_delay = Duration::from_millis(30);
        cfg.net.partition = seed % 3 == 0;
        cfg.crashes = (seed % 2) as usize;
        let byzantine = Behaviour::ALL[seed as usize % Behaviour::ALL.len()];
        cfg.byzantine = vec![(1, byzantine)];
        cfg.changes = vec![
            (
                Duration::from_millis(300),
                SimChange::Admit { node: 4, weight: 1 },
            ),
            (Duration::from_millis(600), SimChange::SetWeight(2, 2)),
        ];
        let r = check(cfg);
        let (epoch, w) = weights(&r);
        assert!(epoch >= 1, "seed {seed}: no reconfiguration took effect");
        assert_eq!(w.len(), 5, "seed {seed}: the candidate was not admitted");
        assert_eq!(w[4], 1, "seed {seed}");
        assert_eq!(w[2], 2, "seed {seed}: the weight change did not apply");
    }
}
