//! `mesh-ledger verify <data-dir>`: checks a validator's consensus ledger block by block from
//! the genesis validator set recorded in it, as a light client would (every block's commit
//! certificate and its link to the block before), and prints the height and head.
//!
//! Exits 0 when the whole ledger verifies, 1 when it does not (with the reason), 2 on bad
//! usage. The data directory must not be in use by a running node (the store is locked).

#![allow(clippy::print_stdout, clippy::print_stderr)] // a command-line tool reports on stdout

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use mesh_consensus::{Limits, StoreStorage, verify_storage};
use mesh_store::DiskStore;

const USAGE: &str = "usage: mesh-ledger verify <data-dir>";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = match args.as_slice() {
        [cmd, dir] if cmd == "verify" => PathBuf::from(dir),
        [h] if h == "--help" || h == "-h" => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match verify(&dir) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mesh-ledger: {}: {e:#}", dir.display());
            ExitCode::FAILURE
        }
    }
}

fn verify(dir: &std::path::Path) -> anyhow::Result<()> {
    if !dir.join("store.redb").is_file() {
        anyhow::bail!("no agentmesh store here (no store.redb)");
    }
    let store = DiskStore::open(dir).context("opening the store (is a node running on it?)")?;
    let storage = StoreStorage::open(&store, Limits::default())?;
    let verified = verify_storage(&storage, |h| {
        eprintln!("  verified {h} blocks ...");
    })
    .context("verifying the ledger")?;
    let genesis = &verified.genesis;
    println!(
        "ledger verified: {} blocks from genesis {} ({} validators, total weight {}, \
         checkpoint every {} blocks, window {})",
        verified.height,
        genesis.hash(),
        genesis.set.len(),
        genesis.set.total_weight(),
        genesis.checkpoint_interval,
        genesis.window
    );
    let now = &verified.validators;
    println!(
        "validators now: epoch {}, {} voting of {} members, total weight {}",
        now.epoch(),
        (0..now.len()).filter(|&i| now.is_voter(i)).count(),
        now.len(),
        now.total_weight()
    );
    println!("head {}", verified.head);
    Ok(())
}
