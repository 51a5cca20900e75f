//! Helpers shared by the node-level tests.

use std::path::Path;

use mesh_driver::node::Config;
use mesh_identity::Protection;

/// A free loopback TCP port (bound and released).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A node configuration in `dir` listening on loopback `port`, without mDNS, sealed by a
/// fixed passphrase.
pub(crate) fn loopback_config(dir: &Path, port: u16) -> Config {
    Config {
        data_dir: dir.to_owned(),
        listen: vec![format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap()],
        mdns: false,
        protection: Some(Protection::passphrase("node test")),
        ..Config::default()
    }
}

/// Where `cargo xtask data` stores the data sets: `$MESH_DATASETS`, else
/// `$CARGO_TARGET_DIR/data`, else the workspace's `target/data`; panics with what to run when
/// the digits are not there.
#[allow(dead_code)] // not every test binary trains
pub(crate) fn datasets_dir() -> std::path::PathBuf {
    let dir = std::env::var_os("MESH_DATASETS")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("CARGO_TARGET_DIR").map(|t| Path::new(&t).join("data")))
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/data"));
    assert!(
        dir.join("digits.csv").is_file(),
        "the digits data set is not in {}: run `cargo xtask data` (`cargo xtask test` does this first)",
        dir.display()
    );
    dir
}

/// Starts a node and waits (at most 60 s) for its first listening address.
#[allow(dead_code)] // not every test binary needs it
pub(crate) async fn start_listening(
    config: Config,
) -> (
    mesh_driver::NodeHandle,
    mesh_driver::node::NodeJoin,
    mesh_driver::node::Multiaddr,
) {
    let (node, join) = mesh_driver::node::start(config).unwrap();
    let addr = tokio::time::timeout(std::time::Duration::from_secs(60), node.listening())
        .await
        .unwrap()
        .unwrap()
        .remove(0);
    (node, join, addr)
}

/// Asks every node to stop, then waits (at most 60 s each) until each has stopped cleanly.
#[allow(dead_code)] // not every test binary needs it
pub(crate) async fn stop_all(nodes: Vec<(mesh_driver::NodeHandle, mesh_driver::node::NodeJoin)>) {
    for (n, _) in &nodes {
        n.shutdown();
    }
    for (_, j) in nodes {
        tokio::time::timeout(std::time::Duration::from_secs(60), j)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}
