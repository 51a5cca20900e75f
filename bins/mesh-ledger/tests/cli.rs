//! The command line's errors. (Verifying real ledgers is `cargo xtask testnet`'s last step:
//! it runs `mesh-ledger verify` on the ledgers the `consensus_mesh` example leaves.)
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

fn ledger() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mesh-ledger"))
}

#[test]
fn bad_usage_and_missing_stores_are_clear_errors() {
    let out = ledger().output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage: mesh-ledger verify"));
    let dir = tempfile::tempdir().unwrap();
    let out = ledger().arg("verify").arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no agentmesh store here"));
    // Nothing was created in the directory that was checked.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
