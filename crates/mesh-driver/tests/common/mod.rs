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
