//! Three of ten non-IID digits clients attack; the robust aggregators against FedAvg. Each
//! scenario is its own test so they run in parallel. Figures for every aggregator and attack
//! are in the crate's README.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

mod common;

use mesh_learning::simulation::{Attack, Federation};
use mesh_learning::{
    Aggregator, Architecture, Config, Dataset, FedAvg, Median, MultiKrum, Optimizer, Rng,
    TrimmedMean, evaluate,
};

const ARCH: Architecture = Architecture::Mlp {
    inputs: 64,
    hidden: 64,
    classes: 10,
};
const ROUNDS: usize = 80;
/// FedAvg's accuracy on this setup (seed 1) without attackers; checked by the first test.
const CLEAN_FEDAVG: f64 = 0.9721;

/// Test accuracy after `ROUNDS` rounds with the first 3 of 10 Dirichlet(0.5) clients attacking,
/// or the training error if the global model diverged.
fn run(aggregator: &dyn Aggregator, attack: Option<Attack>) -> mesh_learning::Result<f64> {
    let digits = common::digits();
    let mut rng = Rng::new(1);
    let (train, test) = digits.split(0.2, &mut rng).unwrap();
    let shards = train.partition_dirichlet(10, 0.5, 20, &mut rng).unwrap();
    let clients: Vec<Dataset> = shards.iter().map(|s| train.subset(s).unwrap()).collect();
    let local = Config {
        epochs: 1,
        batch_size: 16,
        optimizer: Optimizer::sgd(0.1),
        proximal_mu: 0.0,
    };
    let mut federation = Federation::new(ARCH, &clients, local, ROUNDS);
    if let Some(attack) = attack {
        federation.attackers = 3;
        federation.attack = attack;
    }
    let model = federation.run(aggregator, &mut rng, |_, _| Ok(()))?;
    let accuracy = evaluate(&model, &test)?.accuracy;
    println!("{} {attack:?}: {accuracy:.4}", aggregator.name());
    Ok(accuracy)
}

const KRUM: MultiKrum = MultiKrum {
    byzantine: 3,
    select: 7,
};
const SCALE: Attack = Attack::Scale { factor: 10.0 };
const FLIP: Attack = Attack::SignFlip { scale: 3.0 };

#[test]
fn the_clean_reference_is_what_the_constant_says() {
    let clean = run(&FedAvg, None).unwrap();
    assert!((clean - CLEAN_FEDAVG).abs() < 1e-4, "{clean}");
}

#[test]
fn scaled_updates_wreck_fedavg() {
    let accuracy = run(&FedAvg, Some(SCALE)).unwrap();
    assert!(accuracy < 0.5, "{accuracy}");
}

fn holds_against_scaling(rule: &dyn Aggregator) {
    let accuracy = run(rule, Some(SCALE)).unwrap();
    assert!(
        accuracy >= CLEAN_FEDAVG - 0.03,
        "{}: {accuracy}",
        rule.name()
    );
}

#[test]
fn scaled_updates_leave_the_median_within_three_points() {
    holds_against_scaling(&Median);
}

#[test]
fn scaled_updates_leave_the_trimmed_mean_within_three_points() {
    holds_against_scaling(&TrimmedMean { trim: 3 });
}

#[test]
fn scaled_updates_leave_multi_krum_within_three_points() {
    holds_against_scaling(&KRUM);
}

#[test]
fn sign_flipping_makes_fedavg_diverge_and_multi_krum_holds() {
    let err = run(&FedAvg, Some(FLIP)).unwrap_err();
    assert!(err.to_string().contains("loss became"), "{err}");
    let accuracy = run(&KRUM, Some(FLIP)).unwrap();
    assert!(accuracy >= CLEAN_FEDAVG - 0.03, "{accuracy}");
}
