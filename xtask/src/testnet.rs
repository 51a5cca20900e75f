//! `cargo xtask testnet`: start what exists of the mesh and drive it.
//!
//! The node, coordinator and agent binaries arrive with the node issue; until then the
//! testnet exercises the crates that exist, as real programs writing real data directories
//! under `target/testnet/`, and says exactly what it ran.

use std::fs;

use anyhow::{Context, Result, bail};

use crate::util::{EXAMPLES, cargo, root, step};

/// Runs the testnet.
pub(crate) fn run(args: &[String]) -> Result<()> {
    if let Some(arg) = args.first() {
        if arg == "--help" || arg == "-h" {
            println!("usage: cargo xtask testnet\n\nStarts what exists of the mesh and drives it.");
            return Ok(());
        }
        bail!("unknown option {arg:?}: this testnet has no options yet (see `--help`)");
    }
    let data = root().join("target").join("testnet");
    if data.exists() {
        fs::remove_dir_all(&data).with_context(|| format!("clearing {}", data.display()))?;
    }
    fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;

    let mut ran = Vec::new();
    for example in EXAMPLES {
        let dir = data.join(example);
        let mut cmd = release_run(&["-p", "mesh-examples", "--example", example]);
        cmd.arg(&dir);
        step(&format!("{example} (data in {})", dir.display()), cmd)?;
        ran.push(format!(
            "{example}: passed, data directory {}",
            dir.display()
        ));
    }

    // The consensus validators' ledgers, checked from genesis by the light-client tool.
    for v in 0..4 {
        let dir = data.join("consensus_mesh").join(format!("v{v}"));
        let mut cmd = release_run(&["-p", "mesh-ledger"]);
        cmd.arg("verify").arg(&dir);
        step(&format!("mesh-ledger verify {}", dir.display()), cmd)?;
        ran.push(format!(
            "mesh-ledger verify: validator {v}'s ledger verified"
        ));
    }

    // Federated learning on the real digits: 10 non-IID clients, FedAvg against centralized
    // training on the same model and epochs, accuracy printed per round.
    crate::data::ensure_digits().context("fetching the digits data set (cargo xtask data)")?;
    let mut cmd = release_run(&["-p", "mesh-learning", "--example", "federated_digits"]);
    cmd.args(["mlp64", "80", "1", "0.5", "1", "0.1"]);
    step(
        "federated learning on the digits (10 non-IID clients, FedAvg vs centralized)",
        cmd,
    )?;
    ran.push("federated_digits: FedAvg over 10 non-IID clients, in one process".to_owned());

    println!("\ntestnet summary");
    println!("  ran:");
    for line in &ran {
        println!("    - {line}");
    }
    println!("  not yet driven here: the mesh-node binary (it exists: init, genesis, run);");
    println!("  not yet in the tree: mesh-coordinator and mesh-agent (see README.md, \"Status\").");
    Ok(())
}

/// `cargo run --quiet --release <what> --`: the caller appends the program's arguments.
fn release_run(what: &[&str]) -> std::process::Command {
    let mut cmd = cargo();
    cmd.args(["run", "--quiet", "--release"])
        .args(what)
        .arg("--");
    cmd
}
