//! Consensus scenarios written as data (`scenarios.txt`), in the manner of raft-rs's
//! `testdata`: each row names a fault mix and an expectation, checked over several seeds.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use mesh_consensus::RequestAuth;
use mesh_sim::{Behaviour, Sim, SimConfig};

const SEEDS: u64 = 6;

fn behaviour(name: &str) -> Behaviour {
    match name {
        "silent" => Behaviour::Silent,
        "equivocate" => Behaviour::EquivocatingPrimary,
        "forge" => Behaviour::ForgedVotes,
        "replay" => Behaviour::ReplayedVotes,
        "stale" => Behaviour::StaleView,
        "amnesia" => Behaviour::Amnesia,
        "censor" => Behaviour::CensoringPrimary,
        other => panic!("unknown behaviour {other:?}"),
    }
}

fn check_views(expect: &str, max_view: u64) -> bool {
    match expect {
        "any" => true,
        e if e.starts_with(">=") => max_view >= e[2..].parse::<u64>().unwrap(),
        e if e.starts_with('=') => max_view == e[1..].parse::<u64>().unwrap(),
        other => panic!("unknown view expectation {other:?}"),
    }
}

#[test]
fn scenarios() {
    let table = include_str!("scenarios.txt");
    let mut rows = 0;
    for line in table
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cols.len(), 9, "bad row: {line}");
        rows += 1;
        for seed in 0..SEEDS {
            let mut cfg = SimConfig::new(1_000 + seed, cols[1].parse().unwrap());
            if cols[2] != "-" {
                for b in cols[2].split(',') {
                    let (i, kind) = b.split_once(':').unwrap();
                    cfg.byzantine.push((i.parse().unwrap(), behaviour(kind)));
                }
            }
            cfg.crashes = cols[3].parse().unwrap();
            cfg.net.loss_per_mille = cols[4].parse().unwrap();
            cfg.net.duplicate_per_mille = cols[5].parse().unwrap();
            cfg.net.partition = cols[6] == "yes";
            cfg.consensus.request_auth = match cols[7] {
                "opaque" => RequestAuth::Connection,
                "signed" => RequestAuth::Signed,
                other => panic!("unknown auth {other:?}"),
            };
            let requests = cfg.requests;
            let r = Sim::new(cfg).run();
            assert!(
                r.violations.is_empty(),
                "{} seed {seed}:\n{}",
                cols[0],
                r.violations.join("\n")
            );
            assert_eq!(r.committed_everywhere, requests, "{} seed {seed}", cols[0]);
            assert!(
                check_views(cols[8], r.max_view),
                "{} seed {seed}: max view {}, expected {}",
                cols[0],
                r.max_view,
                cols[8]
            );
        }
    }
    assert!(rows >= 10);
}
