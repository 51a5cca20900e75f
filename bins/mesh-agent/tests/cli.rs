//! The binary itself: `init`, and clear one-line errors with a non-zero exit for an agent
//! without a home node, a bad home address, and clients of an agent that is not running.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

fn mesh_agent(data_dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mesh-agent"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("MESH_") {
            c.env_remove(k);
        }
    }
    c.arg("--data-dir").arg(data_dir);
    c
}

fn failed_with(out: &std::process::Output, needle: &str) {
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(needle), "{err}");
    assert!(err.starts_with("mesh-agent: "), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
}

#[test]
fn init_and_errors_that_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("alice");
    let out = mesh_agent(&data)
        .args(["init", "--listen", "/ip4/127.0.0.1/tcp/0"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(data.join("identity.json").is_file());
    assert!(String::from_utf8_lossy(&out.stderr).contains("did:key:z6Mk"));

    // No home node.
    let out = mesh_agent(&data)
        .args(["run", "--api", "off"])
        .output()
        .unwrap();
    failed_with(&out, "--bootstrap");
    // A home node address without its peer id.
    let out = mesh_agent(&data)
        .args(["run", "--api", "off", "--bootstrap", "/ip4/127.0.0.1/tcp/9"])
        .output()
        .unwrap();
    failed_with(&out, "--bootstrap");
    // A bad name.
    let out = mesh_agent(&data)
        .args([
            "run",
            "--name",
            "white space",
            "--bootstrap",
            "/ip4/127.0.0.1/tcp/9/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN",
        ])
        .output()
        .unwrap();
    failed_with(&out, "agent name");
    // Clients of an agent that is not running.
    let out = mesh_agent(&data).arg("inbox").output().unwrap();
    failed_with(&out, "api.addr");
}
