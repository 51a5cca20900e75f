//! Federated training against centralized training on the 8x8 digits, 10 non-IID clients.
//!
//! `cargo xtask data` first, then
//! `cargo run --release -p mesh-learning --example federated_digits -- [mlp|mlpHIDDEN|logistic|cnn] [rounds] [local epochs] [alpha] [seed] [lr]`
//! (defaults: mlp (32 hidden units), 20, 1, 0.5, 1, 0.05; SGD with momentum 0.9). The figures
//! in the crate's README use `mlp64 80 1 0.5 SEED 0.1`.
//!
//! Environment: `AGG=median|trimmed|krum` picks a robust aggregator instead of FedAvg
//! (trimming 3 from each end; Multi-Krum with f = 3, m = 7), `ATTACK=flip|scale|alie` makes
//! the first 3 clients attack (sign flip x3, scaling x10, "a little is enough" with z = 0.52),
//! `BS=N` sets the batch size (16), `COMPRESS=topk:F|randk:F|qsgd:BITS|sign` sends every
//! client's delta through a compressor (top-k and sign with error feedback; random-k
//! unbiased) and prints the traffic.

#![allow(clippy::print_stdout)]

use std::path::PathBuf;

use mesh_learning::simulation::{Attack, Federation, centralized};
use mesh_learning::{
    Aggregator, Architecture, Compressor, Config, Dataset, FedAvg, Median, MultiKrum, Optimizer,
    Qsgd, RandomK, Rng, SignSgd, TopK, TrimmedMean, evaluate,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or_else(|| default.into());
    let arch = match arg(0, "mlp").as_str() {
        "logistic" => Architecture::Logistic {
            inputs: 64,
            classes: 10,
        },
        "cnn" => Architecture::Cnn {
            side: 8,
            channels: 8,
            classes: 10,
        },
        other => Architecture::Mlp {
            inputs: 64,
            hidden: other
                .strip_prefix("mlp")
                .and_then(|h| h.parse().ok())
                .unwrap_or(32),
            classes: 10,
        },
    };
    let rounds: usize = arg(1, "20").parse()?;
    let epochs: usize = arg(2, "1").parse()?;
    let alpha: f64 = arg(3, "0.5").parse()?;
    let seed: u64 = arg(4, "1").parse()?;
    let lr: f32 = arg(5, "0.05").parse()?;

    // Where `cargo xtask data` puts it: $MESH_DATA_DIR, else $CARGO_TARGET_DIR/data, else the
    // workspace's target/data.
    let dir = std::env::var_os("MESH_DATA_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("CARGO_TARGET_DIR").map(|t| PathBuf::from(t).join("data")))
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/data"));
    let path = dir.join("digits.csv");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("{}: {e}; run `cargo xtask data` first", path.display()))?;
    let digits = Dataset::digits_from_csv(&text)?;

    let mut rng = Rng::new(seed);
    let (train, test) = digits.split(0.2, &mut rng)?;
    let shards = train.partition_dirichlet(10, alpha, 20, &mut rng)?;
    let clients: Vec<Dataset> = shards
        .iter()
        .map(|s| train.subset(s))
        .collect::<Result<_, _>>()?;
    for (i, c) in clients.iter().enumerate() {
        println!(
            "client {i}: {:4} rows, per class {:?}",
            c.len(),
            c.class_counts()
        );
    }
    let local = Config {
        epochs,
        batch_size: std::env::var("BS")
            .ok()
            .and_then(|b| b.parse().ok())
            .unwrap_or(16),
        optimizer: Optimizer::sgd(lr),
        proximal_mu: 0.0,
    };
    #[allow(clippy::disallowed_methods)] // timing an example run
    let started = std::time::Instant::now();
    let aggregator: Box<dyn Aggregator> = match std::env::var("AGG").as_deref() {
        Ok("median") => Box::new(Median),
        Ok("trimmed") => Box::new(TrimmedMean { trim: 3 }),
        Ok("krum") => Box::new(MultiKrum {
            byzantine: 3,
            select: 7,
        }),
        _ => Box::new(FedAvg),
    };
    let attack = match std::env::var("ATTACK").as_deref() {
        Ok("flip") => Some(Attack::SignFlip { scale: 3.0 }),
        Ok("scale") => Some(Attack::Scale { factor: 10.0 }),
        Ok("alie") => Some(Attack::LittleIsEnough { z: 0.52 }),
        _ => None,
    };
    let mut federation = Federation::new(arch, &clients, local, rounds);
    if let Some(attack) = attack {
        federation.attackers = 3;
        federation.attack = attack;
    }
    let compressor: Option<Box<dyn Compressor>> = match std::env::var("COMPRESS") {
        Ok(spec) => {
            let (method, arg) = spec.split_once(':').unwrap_or((spec.as_str(), ""));
            let fraction = || arg.parse::<f64>().map_err(|e| anyhow_like(&spec, &e));
            Some(match method {
                "topk" => Box::new(TopK {
                    fraction: fraction()?,
                }),
                "randk" => Box::new(RandomK {
                    fraction: fraction()?,
                    error_feedback: false,
                }),
                "qsgd" => Box::new(Qsgd {
                    bits: arg.parse().map_err(|e| anyhow_like(&spec, &e))?,
                }),
                "sign" => Box::new(SignSgd),
                _ => return Err(anyhow_like(&spec, &"unknown method").into()),
            })
        }
        Err(_) => None,
    };
    let report = |r: usize, m: &mesh_learning::Model| {
        let e = evaluate(m, &test)?;
        println!(
            "round {r:3}: test accuracy {:.4}, loss {:.4}",
            e.accuracy, e.loss
        );
        Ok(())
    };
    let global = match &compressor {
        Some(c) => {
            let (global, traffic) = federation.run_compressed(
                aggregator.as_ref(),
                c.as_ref(),
                &mut rng.clone(),
                report,
            )?;
            println!(
                "{}: sent {} bytes instead of {} ({:.1}x less)",
                c.name(),
                traffic.sent,
                traffic.dense,
                traffic.ratio()
            );
            global
        }
        None => federation.run(aggregator.as_ref(), &mut rng.clone(), report)?,
    };
    let fed_time = started.elapsed();
    let central_config = Config {
        epochs: rounds * epochs,
        ..local
    };
    #[allow(clippy::disallowed_methods)] // timing an example run
    let started = std::time::Instant::now();
    let central = centralized(arch, &train, &central_config, &mut rng.clone())?;
    let central_time = started.elapsed();
    let (f, c) = (evaluate(&global, &test)?, evaluate(&central, &test)?);
    println!(
        "{arch:?}, {rounds} rounds x {epochs} local epochs, Dirichlet({alpha}), seed {seed}\n\
         fedavg:      accuracy {:.4} loss {:.4} ({:.2?})\n\
         centralized: accuracy {:.4} loss {:.4} ({:.2?})",
        f.accuracy, f.loss, fed_time, c.accuracy, c.loss, central_time
    );
    Ok(())
}

fn anyhow_like(spec: &str, e: &dyn std::fmt::Display) -> mesh_learning::Error {
    mesh_learning::Error::Invalid {
        what: "COMPRESS",
        detail: format!("{spec}: {e}"),
    }
}
